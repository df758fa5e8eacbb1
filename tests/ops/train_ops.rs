//! Every backward op of the gradient tape against central finite differences in float64.
//!
//! Each op runs forward on the tape (the CPU engine's float32 kernels) on small odd-sized
//! random inputs, the loss is `L = sum(y * r)` for a fixed random `r`, and the analytic
//! gradients of every input and parameter are compared with `(L(x+h) - L(x-h)) / 2h` computed
//! by a naive float64 implementation of the op written here from its definition. Tolerance:
//! relative L2 1e-4 per tensor (the analytic side is float32).

use crate::common;

use common::Rng;
use fmseg::backend::cpu::reference::adaptive_window;
use fmseg::backend::cpu::CpuBackend;
use fmseg::backend::{Backend, ConvSpec, ConvTSpec};
use fmseg::tensor::{Dims, HostTensor};
use fmseg::train::tape::{TapeBackend, Var};

fn tape() -> TapeBackend {
    TapeBackend::new(CpuBackend::new(2).unwrap())
}

fn f64s(t: &HostTensor) -> Vec<f64> {
    t.data.iter().map(|&v| v as f64).collect()
}

/// Central differences of `f` at `x`, compared with `analytic`.
fn fd_check(what: &str, x: &[f64], analytic: &[f32], f: &dyn Fn(&[f64]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let h = 1e-6;
    let (mut num, mut den) = (0f64, 0f64);
    let mut xp = x.to_vec();
    // Large tensors: an evenly spread subset of about 300 entries keeps the test fast.
    let step = x.len().div_ceil(300);
    for i in (0..x.len()).step_by(step) {
        xp[i] = x[i] + h;
        let a = f(&xp);
        xp[i] = x[i] - h;
        let b = f(&xp);
        xp[i] = x[i];
        let fd = (a - b) / (2.0 * h);
        num += (fd - analytic[i] as f64).powi(2);
        den += fd * fd;
    }
    let e = (num / den.max(1e-300)).sqrt();
    eprintln!("{what}: rel L2 {e:.2e} over {} of {} entries", x.len().div_ceil(step), x.len());
    assert!(den > 0.0, "{what}: the gradient is identically zero, the check proves nothing");
    assert!(e < 1e-4, "{what}: analytic gradient vs finite differences, rel L2 {e:.3e}");
}

/// Runs `y = op(inputs)` on the tape, seeds `dL/dy = r`, returns the gradients of the leaves
/// (PyTorch layout) and the parameters.
fn run_tape(
    t: &TapeBackend,
    leaves: &[Var],
    y: &Var,
    r: &HostTensor,
) -> (Vec<HostTensor>, std::collections::BTreeMap<String, Vec<f32>>) {
    let seed = t.cpu().upload(r).unwrap();
    let g = t.backward(vec![(y, seed)]).unwrap();
    let xs = leaves.iter().map(|v| t.cpu().download(g.of(v).expect("leaf has a gradient")).unwrap()).collect();
    (xs, g.params)
}

fn dot(a: &[f64], r: &HostTensor) -> f64 {
    a.iter().zip(&r.data).map(|(x, y)| x * *y as f64).sum()
}

// ---- naive float64 ops, PyTorch layout (N, C, H, W, D) ----

fn at(c: usize, d: Dims, n: usize, ch: usize, h: usize, w: usize, z: usize) -> usize {
    (((n * c + ch) * d[0] + h) * d[1] + w) * d[2] + z
}

#[allow(clippy::too_many_arguments)]
fn conv64(x: &[f64], n: usize, cin: usize, d: Dims, w: &[f64], b: &[f64], cout: usize, k: Dims) -> Vec<f64> {
    let p = [k[0] / 2, k[1] / 2, k[2] / 2];
    let mut y = vec![0f64; n * cout * d[0] * d[1] * d[2]];
    for s in 0..n {
        for co in 0..cout {
            for h in 0..d[0] {
                for ww in 0..d[1] {
                    for z in 0..d[2] {
                        let mut acc = b.get(co).copied().unwrap_or(0.0);
                        for ci in 0..cin {
                            for a in 0..k[0] {
                                for bb in 0..k[1] {
                                    for c in 0..k[2] {
                                        let (hh, wi, zz) = (h + a, ww + bb, z + c);
                                        if hh < p[0] || wi < p[1] || zz < p[2] {
                                            continue;
                                        }
                                        let (hh, wi, zz) = (hh - p[0], wi - p[1], zz - p[2]);
                                        if hh >= d[0] || wi >= d[1] || zz >= d[2] {
                                            continue;
                                        }
                                        acc += x[at(cin, d, s, ci, hh, wi, zz)]
                                            * w[(((co * cin + ci) * k[0] + a) * k[1] + bb) * k[2] + c];
                                    }
                                }
                            }
                        }
                        y[at(cout, d, s, co, h, ww, z)] = acc;
                    }
                }
            }
        }
    }
    y
}

fn norm64(x: &[f64], n: usize, c: usize, vox: usize, r: Option<&[f64]>, relu: bool) -> Vec<f64> {
    let mut y = x.to_vec();
    for s in 0..n * c {
        let v = &x[s * vox..][..vox];
        let m = v.iter().sum::<f64>() / vox as f64;
        let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / vox as f64;
        for i in 0..vox {
            let mut o = (v[i] - m) / (var + 1e-5).sqrt() + r.map_or(0.0, |r| r[s * vox + i]);
            if relu {
                o = o.max(0.0);
            }
            y[s * vox + i] = o;
        }
    }
    y
}

fn maxpool64(x: &[f64], nc: usize, d: Dims, k: Dims) -> Vec<f64> {
    let od = [d[0] / k[0], d[1] / k[1], d[2] / k[2]];
    let mut y = Vec::new();
    for s in 0..nc {
        for h in 0..od[0] {
            for w in 0..od[1] {
                for z in 0..od[2] {
                    let mut m = f64::NEG_INFINITY;
                    for a in 0..k[0] {
                        for b in 0..k[1] {
                            for c in 0..k[2] {
                                m = m.max(x[at(1, d, s, 0, h * k[0] + a, w * k[1] + b, z * k[2] + c)]);
                            }
                        }
                    }
                    y.push(m);
                }
            }
        }
    }
    y
}

fn adaptive64(x: &[f64], nc: usize, d: Dims, od: Dims) -> Vec<f64> {
    let mut y = Vec::new();
    for s in 0..nc {
        for h in 0..od[0] {
            let (h0, h1) = adaptive_window(h, d[0], od[0]);
            for w in 0..od[1] {
                let (w0, w1) = adaptive_window(w, d[1], od[1]);
                for z in 0..od[2] {
                    let (z0, z1) = adaptive_window(z, d[2], od[2]);
                    let mut acc = 0.0;
                    for a in h0..h1 {
                        for b in w0..w1 {
                            for c in z0..z1 {
                                acc += x[at(1, d, s, 0, a, b, c)];
                            }
                        }
                    }
                    y.push(acc / ((h1 - h0) * (w1 - w0) * (z1 - z0)) as f64);
                }
            }
        }
    }
    y
}

fn resize64(x: &[f64], nc: usize, d: Dims, od: Dims) -> Vec<f64> {
    let src = |i: usize, inp: usize, out: usize| -> (usize, usize, f64) {
        let s = if out > 1 { i as f64 * (inp as f64 - 1.0) / (out as f64 - 1.0) } else { 0.0 };
        let i0 = (s.floor() as usize).min(inp - 1);
        (i0, (i0 + 1).min(inp - 1), s - i0 as f64)
    };
    let mut y = Vec::new();
    for s in 0..nc {
        for h in 0..od[0] {
            let (h0, h1, fh) = src(h, d[0], od[0]);
            for w in 0..od[1] {
                let (w0, w1, fw) = src(w, d[1], od[1]);
                for z in 0..od[2] {
                    let (z0, z1, fz) = src(z, d[2], od[2]);
                    let g = |a, b, c| x[at(1, d, s, 0, a, b, c)];
                    let v = (1.0 - fh)
                        * ((1.0 - fw) * ((1.0 - fz) * g(h0, w0, z0) + fz * g(h0, w0, z1))
                            + fw * ((1.0 - fz) * g(h0, w1, z0) + fz * g(h0, w1, z1)))
                        + fh * ((1.0 - fw) * ((1.0 - fz) * g(h1, w0, z0) + fz * g(h1, w0, z1))
                            + fw * ((1.0 - fz) * g(h1, w1, z0) + fz * g(h1, w1, z1)));
                    y.push(v);
                }
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
fn up_add64(
    x: &[f64],
    n: usize,
    cin: usize,
    d: Dims,
    w: &[f64],
    b: &[f64],
    cout: usize,
    k: Dims,
    skip: &[f64],
    sd: Dims,
) -> Vec<f64> {
    let up = [d[0] * k[0], d[1] * k[1], d[2] * k[2]];
    let mut y = skip.to_vec();
    for s in 0..n {
        for co in 0..cout {
            for h in 0..sd[0] {
                for ww in 0..sd[1] {
                    for z in 0..sd[2] {
                        let (hu, wu, zu) = (h.min(up[0] - 1), ww.min(up[1] - 1), z.min(up[2] - 1));
                        let mut v = b[co];
                        for ci in 0..cin {
                            let wi = (((ci * cout + co) * k[0] + hu % k[0]) * k[1] + wu % k[1]) * k[2] + zu % k[2];
                            v += x[at(cin, d, s, ci, hu / k[0], wu / k[1], zu / k[2])] * w[wi];
                        }
                        y[at(cout, sd, s, co, h, ww, z)] += v;
                    }
                }
            }
        }
    }
    y
}

// ---- the checks ----

fn check_conv(rng: &mut Rng, cin: usize, cout: usize, k: Dims, bias: bool) {
    let (n, d) = (2, [5, 4, 3]);
    let t = tape();
    let spec = ConvSpec { cin, cout, k, bias };
    let x = rng.tensor(&[n, cin, d[0], d[1], d[2]]);
    let w = rng.tensor(&spec.weight_shape());
    let b = rng.tensor(&[cout]);
    let conv = t.prepare_conv("c", spec, &w, bias.then_some(&b)).unwrap();
    let xv = t.upload(&x).unwrap();
    let y = t.conv(&xv, &conv).unwrap();
    let r = rng.tensor(&[n, cout, d[0], d[1], d[2]]);
    let (gx, gp) = run_tape(&t, &[xv], &y, &r);
    let (x64, w64) = (f64s(&x), f64s(&w));
    let b64 = if bias { f64s(&b) } else { Vec::new() };
    let what = format!("conv {cin}->{cout} {k:?}");
    fd_check(&format!("{what} input"), &x64, &gx[0].data, &|x| dot(&conv64(x, n, cin, d, &w64, &b64, cout, k), &r));
    fd_check(&format!("{what} weight"), &w64, &gp["c.weight"], &|w| {
        dot(&conv64(&x64, n, cin, d, w, &b64, cout, k), &r)
    });
    if bias {
        fd_check(&format!("{what} bias"), &b64, &gp["c.bias"], &|b| {
            dot(&conv64(&x64, n, cin, d, &w64, b, cout, k), &r)
        });
    } else {
        assert!(!gp.contains_key("c.bias"));
    }
}

#[test]
fn conv_every_kernel_shape() {
    let mut rng = Rng::fresh("conv_every_kernel_shape");
    for k in [[3, 3, 1], [1, 1, 3], [3, 3, 3], [3, 1, 1], [1, 3, 1], [1, 3, 3], [3, 1, 3], [1, 1, 1]] {
        check_conv(&mut rng, 3, 4, k, true);
    }
    // The 1-channel input layer, a bias-free conv, and widths past one 16-channel panel.
    check_conv(&mut rng, 1, 5, [3, 3, 1], true);
    check_conv(&mut rng, 4, 3, [1, 1, 1], false);
    check_conv(&mut rng, 17, 18, [3, 3, 1], true);
}

#[test]
fn instance_norm_with_residual_and_relu() {
    let mut rng = Rng::fresh("instance_norm_with_residual_and_relu");
    let (n, c, d) = (2, 3, [5, 4, 3]);
    let vox = 60;
    for (res, relu) in [(false, false), (false, true), (true, false), (true, true)] {
        let t = tape();
        let x = rng.tensor(&[n, c, d[0], d[1], d[2]]);
        let rs = rng.tensor(&[n, c, d[0], d[1], d[2]]);
        let xv = t.upload(&x).unwrap();
        let rv = t.upload(&rs).unwrap();
        let y = t.instance_norm(xv.clone(), res.then_some(&rv), relu).unwrap();
        let r = rng.tensor(&[n, c, d[0], d[1], d[2]]);
        let leaves = if res { vec![xv, rv] } else { vec![xv] };
        let (g, _) = run_tape(&t, &leaves, &y, &r);
        let (x64, r64) = (f64s(&x), f64s(&rs));
        let rr = res.then_some(&r64[..]);
        let what = format!("instance norm (residual {res}, relu {relu})");
        fd_check(&format!("{what} input"), &x64, &g[0].data, &|x| dot(&norm64(x, n, c, vox, rr, relu), &r));
        if res {
            fd_check(&format!("{what} residual"), &r64, &g[1].data, &|q| {
                dot(&norm64(&x64, n, c, vox, Some(q), relu), &r)
            });
        }
    }
}

#[test]
fn pools_and_resize() {
    let mut rng = Rng::fresh("pools_and_resize");
    let (n, c) = (2, 3);
    for (d, k) in [([5, 4, 3], [2, 2, 1]), ([5, 4, 3], [2, 2, 2]), ([7, 4, 3], [3, 1, 1]), ([4, 5, 7], [1, 1, 3])] {
        let t = tape();
        let x = rng.tensor(&[n, c, d[0], d[1], d[2]]);
        let xv = t.upload(&x).unwrap();
        let y = t.max_pool(&xv, k).unwrap();
        let (_, _, od) = t.shape(&y);
        let r = rng.tensor(&[n, c, od[0], od[1], od[2]]);
        let (g, _) = run_tape(&t, &[xv], &y, &r);
        fd_check(&format!("max pool {k:?} of {d:?}"), &f64s(&x), &g[0].data, &|x| dot(&maxpool64(x, n * c, d, k), &r));
    }
    for (d, od) in [([5, 4, 3], [2, 2, 1]), ([6, 4, 2], [3, 2, 1])] {
        let t = tape();
        let x = rng.tensor(&[n, c, d[0], d[1], d[2]]);
        let xv = t.upload(&x).unwrap();
        let y = t.adaptive_avg_pool(&xv, od).unwrap();
        let r = rng.tensor(&[n, c, od[0], od[1], od[2]]);
        let (g, _) = run_tape(&t, &[xv], &y, &r);
        fd_check(&format!("adaptive avg pool {d:?}->{od:?}"), &f64s(&x), &g[0].data, &|x| {
            dot(&adaptive64(x, n * c, d, od), &r)
        });
    }
    for (d, od) in [([3, 2, 2], [5, 4, 3]), ([2, 3, 1], [4, 5, 2])] {
        let t = tape();
        let x = rng.tensor(&[n, c, d[0], d[1], d[2]]);
        let xv = t.upload(&x).unwrap();
        let y = t.resize_trilinear(&xv, od).unwrap();
        let r = rng.tensor(&[n, c, od[0], od[1], od[2]]);
        let (g, _) = run_tape(&t, &[xv], &y, &r);
        fd_check(&format!("trilinear {d:?}->{od:?}"), &f64s(&x), &g[0].data, &|x| dot(&resize64(x, n * c, d, od), &r));
    }
}

#[test]
fn transposed_conv_with_replicate_pad_and_skip() {
    let mut rng = Rng::fresh("transposed_conv_with_replicate_pad_and_skip");
    let n = 2;
    for (cin, cout, d, k, sd) in [
        (4, 3, [2, 2, 2], [2, 2, 1], [5, 4, 2]),
        (3, 2, [2, 2, 2], [2, 2, 2], [4, 5, 5]),
        (2, 2, [3, 2, 2], [2, 2, 1], [6, 4, 2]),
    ] {
        let t = tape();
        let spec = ConvTSpec { cin, cout, k };
        let x = rng.tensor(&[n, cin, d[0], d[1], d[2]]);
        let w = rng.tensor(&spec.weight_shape());
        let b = rng.tensor(&[cout]);
        let skip = rng.tensor(&[n, cout, sd[0], sd[1], sd[2]]);
        let ct = t.prepare_conv_t("u", spec, &w, &b).unwrap();
        let xv = t.upload(&x).unwrap();
        let sv = t.upload(&skip).unwrap();
        let y = t.up_add(&xv, &ct, &sv).unwrap();
        let r = rng.tensor(&[n, cout, sd[0], sd[1], sd[2]]);
        let (g, gp) = run_tape(&t, &[xv, sv], &y, &r);
        let (x64, w64, b64, s64) = (f64s(&x), f64s(&w), f64s(&b), f64s(&skip));
        let what = format!("up_add {cin}->{cout} {k:?} {d:?}->{sd:?}");
        let f = |x: &[f64], w: &[f64], b: &[f64], s: &[f64]| dot(&up_add64(x, n, cin, d, w, b, cout, k, s, sd), &r);
        fd_check(&format!("{what} input"), &x64, &g[0].data, &|x| f(x, &w64, &b64, &s64));
        fd_check(&format!("{what} skip"), &s64, &g[1].data, &|s| f(&x64, &w64, &b64, s));
        fd_check(&format!("{what} weight"), &w64, &gp["u.weight"], &|w| f(&x64, w, &b64, &s64));
        fd_check(&format!("{what} bias"), &b64, &gp["u.bias"], &|b| f(&x64, &w64, b, &s64));
    }
}

#[test]
fn elementwise_ops() {
    let mut rng = Rng::fresh("elementwise_ops");
    let (n, c, d) = (2, 3, [5, 4, 3]);
    let shape = [n, c, d[0], d[1], d[2]];
    let vox = 60;
    // sum of three with ReLU, and without.
    for relu in [false, true] {
        let t = tape();
        let xs: Vec<HostTensor> = (0..3).map(|_| rng.tensor(&shape)).collect();
        let vs: Vec<Var> = xs.iter().map(|x| t.upload(x).unwrap()).collect();
        let y = t.sum(&[&vs[0], &vs[1], &vs[2]], relu).unwrap();
        let r = rng.tensor(&shape);
        let (g, _) = run_tape(&t, &vs, &y, &r);
        let x64: Vec<Vec<f64>> = xs.iter().map(f64s).collect();
        for i in 0..3 {
            fd_check(&format!("sum (relu {relu}) term {i}"), &x64[i], &g[i].data, &|x| {
                let s: Vec<f64> = (0..x.len())
                    .map(|j| {
                        let v = (0..3).map(|m| if m == i { x[j] } else { x64[m][j] }).sum::<f64>();
                        if relu {
                            v.max(0.0)
                        } else {
                            v
                        }
                    })
                    .collect();
                dot(&s, &r)
            });
        }
    }
    // sigmoid of a sum.
    {
        let t = tape();
        let (a, b) = (rng.tensor(&[n, 1, d[0], d[1], d[2]]), rng.tensor(&[n, 1, d[0], d[1], d[2]]));
        let (av, bv) = (t.upload(&a).unwrap(), t.upload(&b).unwrap());
        let y = t.sigmoid_sum(&av, &bv).unwrap();
        let r = rng.tensor(&[n, 1, d[0], d[1], d[2]]);
        let (g, _) = run_tape(&t, &[av, bv], &y, &r);
        let (a64, b64) = (f64s(&a), f64s(&b));
        let f = |a: &[f64], b: &[f64]| {
            dot(&a.iter().zip(b).map(|(x, y)| 1.0 / (1.0 + (-(x + y)).exp())).collect::<Vec<_>>(), &r)
        };
        fd_check("sigmoid_sum a", &a64, &g[0].data, &|a| f(a, &b64));
        fd_check("sigmoid_sum b", &b64, &g[1].data, &|b| f(&a64, b));
    }
    // attention multiply-add, with a 1-channel map and a full map.
    for wc in [1, c] {
        let t = tape();
        let x = rng.tensor(&shape);
        let w = rng.tensor(&[n, wc, d[0], d[1], d[2]]);
        let (xv, wv) = (t.upload(&x).unwrap(), t.upload(&w).unwrap());
        let y = t.attend(xv.clone(), &wv).unwrap();
        let r = rng.tensor(&shape);
        let (g, _) = run_tape(&t, &[xv, wv], &y, &r);
        let (x64, w64) = (f64s(&x), f64s(&w));
        let f = |x: &[f64], w: &[f64]| {
            let mut y = vec![0f64; x.len()];
            for s in 0..n {
                for ch in 0..c {
                    for v in 0..vox {
                        let xi = (s * c + ch) * vox + v;
                        let wi = if wc == 1 { s * vox + v } else { xi };
                        y[xi] = x[xi] * w[wi] + x[xi];
                    }
                }
            }
            dot(&y, &r)
        };
        fd_check(&format!("attend ({wc}-channel map) x"), &x64, &g[0].data, &|x| f(x, &w64));
        fd_check(&format!("attend ({wc}-channel map) w"), &w64, &g[1].data, &|w| f(&x64, w));
    }
    // channel concatenation.
    {
        let t = tape();
        let (a, b) = (rng.tensor(&shape), rng.tensor(&[n, 2, d[0], d[1], d[2]]));
        let (av, bv) = (t.upload(&a).unwrap(), t.upload(&b).unwrap());
        let y = t.concat(&av, &bv).unwrap();
        let r = rng.tensor(&[n, c + 2, d[0], d[1], d[2]]);
        let (g, _) = run_tape(&t, &[av, bv], &y, &r);
        let (a64, b64) = (f64s(&a), f64s(&b));
        let f = |a: &[f64], b: &[f64]| {
            let mut y = Vec::new();
            for s in 0..n {
                y.extend_from_slice(&a[s * c * vox..][..c * vox]);
                y.extend_from_slice(&b[s * 2 * vox..][..2 * vox]);
            }
            dot(&y, &r)
        };
        fd_check("concat a", &a64, &g[0].data, &|a| f(a, &b64));
        fd_check("concat b", &b64, &g[1].data, &|b| f(&a64, b));
    }
}

/// Training-mode Dropout3d in a conv -> instance norm -> ReLU block: whole channels dropped at
/// about the site's rate, the rest scaled by 1/(1-p), and a
/// backward that matches finite differences with the same masks.
#[test]
fn dropout_in_conv_norm_relu_blocks() {
    use fmseg::backend::DropoutSite;
    use fmseg::train::tape::Dropout;
    let mut rng = Rng::fresh("dropout_in_conv_norm_relu_blocks");
    let (n, cin, c, d) = (2, 3, 64, [5, 4, 3]);
    let vox = 60;
    let spec = ConvSpec { cin, cout: c, k: [1, 1, 1], bias: true };
    let x = rng.tensor(&[n, cin, d[0], d[1], d[2]]);
    let w = rng.tensor(&spec.weight_shape());
    let b = rng.tensor(&[c]);
    // conv -> IN -> ReLU -> dropout, as the model's blocks call it.
    let forward = |site: DropoutSite, dropout: Option<Dropout>| {
        let t = tape();
        t.set_dropout(dropout);
        let conv = t.prepare_conv("down_1.down.1.conv1.0.block.0", spec, &w, Some(&b)).unwrap();
        let xv = t.upload(&x).unwrap();
        let y = t.dropout(t.conv_norm(&xv, &conv, None, true).unwrap(), site).unwrap();
        (t, xv, y)
    };
    let drop = Some(Dropout { p: 0.5, fixed: 0.2, seed: 7 });
    let (t0, _, y0) = forward(DropoutSite::Network, None);
    let plain = t0.download(&y0).unwrap();
    let (t, xv, y) = forward(DropoutSite::Network, drop);
    let dropped = t.download(&y).unwrap();
    let mut masks = vec![0f64; n * c];
    for s in 0..n * c {
        let (p, q) = (&plain.data[s * vox..][..vox], &dropped.data[s * vox..][..vox]);
        if q.iter().all(|&v| v == 0.0) {
            continue;
        }
        assert!(
            p.iter().zip(q).all(|(a, b)| (2.0 * a - b).abs() <= 1e-5 * a.abs().max(1.0)),
            "kept channel scaled by 2"
        );
        masks[s] = 2.0;
    }
    let zeroed = masks.iter().filter(|&&m| m == 0.0).count();
    // 128 channels at p = 0.5: 64 +- 4 sigma (sigma = 5.7).
    assert!((41..=87).contains(&zeroed), "{zeroed} of 128 channels dropped at p = 0.5");
    // The same masks in a naive float64 forward: finite differences of the input.
    let r = rng.tensor(&[n, c, d[0], d[1], d[2]]);
    let (g, _) = run_tape(&t, &[xv], &y, &r);
    let (w64, b64) = (f64s(&w), f64s(&b));
    fd_check("conv-norm-dropout-relu input", &f64s(&x), &g[0].data, &|x| {
        let z = norm64(&conv64(x, n, cin, d, &w64, &b64, c, [1, 1, 1]), n, c, vox, None, false);
        let y: Vec<f64> = z.iter().enumerate().map(|(i, v)| (v * masks[i / vox]).max(0.0)).collect();
        dot(&y, &r)
    });
    // Each site draws at its own rate (where the model calls it: model::cost's test).
    let count = |site: DropoutSite| {
        let (t, _, y) = forward(site, Some(Dropout { p: 0.0, fixed: 0.5, seed: 3 }));
        let v = t.download(&y).unwrap();
        (0..n * c).filter(|s| v.data[s * vox..][..vox].iter().all(|&q| q == 0.0)).count()
    };
    assert!(count(DropoutSite::Fixed) > 30);
    assert_eq!(count(DropoutSite::Network), 0, "p = 0 at the network's rate here");
}
