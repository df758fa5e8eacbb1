//! Direct, obviously-correct implementations of every op on PyTorch-layout host tensors
//! `(N, C, H, W, D)`, accumulated in f64. They are the oracle the fast CPU kernels (and through
//! them the CUDA kernels) are tested against; nothing on a hot path calls them.

use crate::tensor::{numel, Dims, HostTensor};

fn idx(d: Dims, h: usize, w: usize, z: usize) -> usize {
    (h * d[1] + w) * d[2] + z
}

fn ncd(x: &HostTensor) -> (usize, usize, Dims) {
    x.ncdims().expect("reference ops take 5-D tensors")
}

/// Conv3d, stride 1, "same" zero padding (`k / 2`), weight `(cout, cin, kH, kW, kD)`.
pub fn conv3d(x: &HostTensor, w: &HostTensor, b: Option<&[f32]>) -> HostTensor {
    let (n, cin, d) = ncd(x);
    let (cout, k) = (w.shape[0], [w.shape[2], w.shape[3], w.shape[4]]);
    assert_eq!(w.shape[1], cin);
    let p = [k[0] / 2, k[1] / 2, k[2] / 2];
    let vox = numel(d);
    let mut out = vec![0f32; n * cout * vox];
    for s in 0..n {
        for co in 0..cout {
            for h in 0..d[0] {
                for ww in 0..d[1] {
                    for z in 0..d[2] {
                        let mut acc = b.map_or(0.0, |b| b[co] as f64);
                        for ci in 0..cin {
                            for a in 0..k[0] {
                                let hh = h as isize + a as isize - p[0] as isize;
                                if hh < 0 || hh >= d[0] as isize {
                                    continue;
                                }
                                for bb in 0..k[1] {
                                    let w2 = ww as isize + bb as isize - p[1] as isize;
                                    if w2 < 0 || w2 >= d[1] as isize {
                                        continue;
                                    }
                                    for c in 0..k[2] {
                                        let z2 = z as isize + c as isize - p[2] as isize;
                                        if z2 < 0 || z2 >= d[2] as isize {
                                            continue;
                                        }
                                        let xv = x.data
                                            [(s * cin + ci) * vox + idx(d, hh as usize, w2 as usize, z2 as usize)];
                                        let wv = w.data[(((co * cin + ci) * k[0] + a) * k[1] + bb) * k[2] + c];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        out[(s * cout + co) * vox + idx(d, h, ww, z)] = acc as f32;
                    }
                }
            }
        }
    }
    HostTensor { shape: vec![n, cout, d[0], d[1], d[2]], data: out }
}

/// `relu?(instance_norm(x) + residual)`, eps 1e-5, biased variance.
pub fn instance_norm(x: &HostTensor, residual: Option<&HostTensor>, relu: bool) -> HostTensor {
    let (n, c, d) = ncd(x);
    let vox = numel(d);
    let mut out = x.clone();
    for s in 0..n {
        for ch in 0..c {
            let o = (s * c + ch) * vox;
            let v = &x.data[o..o + vox];
            let mean = v.iter().map(|&a| a as f64).sum::<f64>() / vox as f64;
            let var = v.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / vox as f64;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            for i in 0..vox {
                let mut y = (v[i] as f64 - mean) * rstd;
                if let Some(r) = residual {
                    y += r.data[o + i] as f64;
                }
                if relu {
                    y = y.max(0.0);
                }
                out.data[o + i] = y as f32;
            }
        }
    }
    out
}

/// Max pool, kernel = stride, floor.
pub fn max_pool(x: &HostTensor, k: Dims) -> HostTensor {
    let (n, c, d) = ncd(x);
    let od = [d[0] / k[0], d[1] / k[1], d[2] / k[2]];
    let mut out = Vec::with_capacity(n * c * numel(od));
    for s in 0..n {
        for ch in 0..c {
            let base = (s * c + ch) * numel(d);
            for h in 0..od[0] {
                for w in 0..od[1] {
                    for z in 0..od[2] {
                        let mut m = f32::NEG_INFINITY;
                        for a in 0..k[0] {
                            for b in 0..k[1] {
                                for cc in 0..k[2] {
                                    m = m.max(x.data[base + idx(d, h * k[0] + a, w * k[1] + b, z * k[2] + cc)]);
                                }
                            }
                        }
                        out.push(m);
                    }
                }
            }
        }
    }
    HostTensor { shape: vec![n, c, od[0], od[1], od[2]], data: out }
}

/// PyTorch's adaptive pooling window `[start, end)` of output cell `i`.
pub fn adaptive_window(i: usize, inp: usize, out: usize) -> (usize, usize) {
    ((i * inp) / out, ((i + 1) * inp).div_ceil(out))
}

pub fn adaptive_avg_pool(x: &HostTensor, od: Dims) -> HostTensor {
    let (n, c, d) = ncd(x);
    let mut out = Vec::with_capacity(n * c * numel(od));
    for s in 0..n {
        for ch in 0..c {
            let base = (s * c + ch) * numel(d);
            for h in 0..od[0] {
                let (h0, h1) = adaptive_window(h, d[0], od[0]);
                for w in 0..od[1] {
                    let (w0, w1) = adaptive_window(w, d[1], od[1]);
                    for z in 0..od[2] {
                        let (z0, z1) = adaptive_window(z, d[2], od[2]);
                        let mut acc = 0f64;
                        for a in h0..h1 {
                            for b in w0..w1 {
                                for cc in z0..z1 {
                                    acc += x.data[base + idx(d, a, b, cc)] as f64;
                                }
                            }
                        }
                        out.push((acc / ((h1 - h0) * (w1 - w0) * (z1 - z0)) as f64) as f32);
                    }
                }
            }
        }
    }
    HostTensor { shape: vec![n, c, od[0], od[1], od[2]], data: out }
}

/// Source coordinate of output index `i` for align_corners=True.
pub fn align_corners_src(i: usize, inp: usize, out: usize) -> f64 {
    if out <= 1 {
        0.0
    } else {
        i as f64 * (inp - 1) as f64 / (out - 1) as f64
    }
}

pub fn resize_trilinear(x: &HostTensor, od: Dims) -> HostTensor {
    let (n, c, d) = ncd(x);
    let mut out = Vec::with_capacity(n * c * numel(od));
    let lerp_axis = |i: usize, ax: usize| {
        let s = align_corners_src(i, d[ax], od[ax]);
        let i0 = (s.floor() as usize).min(d[ax] - 1);
        let i1 = (i0 + 1).min(d[ax] - 1);
        (i0, i1, s - i0 as f64)
    };
    for s in 0..n {
        for ch in 0..c {
            let base = (s * c + ch) * numel(d);
            for h in 0..od[0] {
                let (h0, h1, fh) = lerp_axis(h, 0);
                for w in 0..od[1] {
                    let (w0, w1, fw) = lerp_axis(w, 1);
                    for z in 0..od[2] {
                        let (z0, z1, fz) = lerp_axis(z, 2);
                        let g = |a, b, cc| x.data[base + idx(d, a, b, cc)] as f64;
                        let c00 = g(h0, w0, z0) * (1.0 - fz) + g(h0, w0, z1) * fz;
                        let c01 = g(h0, w1, z0) * (1.0 - fz) + g(h0, w1, z1) * fz;
                        let c10 = g(h1, w0, z0) * (1.0 - fz) + g(h1, w0, z1) * fz;
                        let c11 = g(h1, w1, z0) * (1.0 - fz) + g(h1, w1, z1) * fz;
                        let c0 = c00 * (1.0 - fw) + c01 * fw;
                        let c1 = c10 * (1.0 - fw) + c11 * fw;
                        out.push((c0 * (1.0 - fh) + c1 * fh) as f32);
                    }
                }
            }
        }
    }
    HostTensor { shape: vec![n, c, od[0], od[1], od[2]], data: out }
}

/// ConvTranspose3d with kernel = stride, weight `(cin, cout, kH, kW, kD)`.
pub fn conv_transpose(x: &HostTensor, w: &HostTensor, b: &[f32]) -> HostTensor {
    let (n, cin, d) = ncd(x);
    let (cout, k) = (w.shape[1], [w.shape[2], w.shape[3], w.shape[4]]);
    let od = [d[0] * k[0], d[1] * k[1], d[2] * k[2]];
    let mut out = vec![0f32; n * cout * numel(od)];
    for s in 0..n {
        for co in 0..cout {
            for h in 0..od[0] {
                for ww in 0..od[1] {
                    for z in 0..od[2] {
                        let (ih, iw, iz) = (h / k[0], ww / k[1], z / k[2]);
                        let (a, bb, c) = (h % k[0], ww % k[1], z % k[2]);
                        let mut acc = b[co] as f64;
                        for ci in 0..cin {
                            let xv = x.data[(s * cin + ci) * numel(d) + idx(d, ih, iw, iz)];
                            let wv = w.data[(((ci * cout + co) * k[0] + a) * k[1] + bb) * k[2] + c];
                            acc += xv as f64 * wv as f64;
                        }
                        out[(s * cout + co) * numel(od) + idx(od, h, ww, z)] = acc as f32;
                    }
                }
            }
        }
    }
    HostTensor { shape: vec![n, cout, od[0], od[1], od[2]], data: out }
}

/// Replicate padding at the high end of each axis up to `to`.
pub fn pad_replicate_end(x: &HostTensor, to: Dims) -> HostTensor {
    let (n, c, d) = ncd(x);
    let mut out = Vec::with_capacity(n * c * numel(to));
    for s in 0..n {
        for ch in 0..c {
            let base = (s * c + ch) * numel(d);
            for h in 0..to[0] {
                for w in 0..to[1] {
                    for z in 0..to[2] {
                        out.push(x.data[base + idx(d, h.min(d[0] - 1), w.min(d[1] - 1), z.min(d[2] - 1))]);
                    }
                }
            }
        }
    }
    HostTensor { shape: vec![n, c, to[0], to[1], to[2]], data: out }
}

/// `x * w + x`, `w` with one channel (broadcast) or x's channels.
pub fn attend(x: &HostTensor, w: &HostTensor) -> HostTensor {
    let (n, c, d) = ncd(x);
    let wc = w.shape[1];
    let vox = numel(d);
    let mut out = x.clone();
    for s in 0..n {
        for ch in 0..c {
            let wo = (s * wc + if wc == 1 { 0 } else { ch }) * vox;
            let xo = (s * c + ch) * vox;
            for i in 0..vox {
                out.data[xo + i] = x.data[xo + i] * w.data[wo + i] + x.data[xo + i];
            }
        }
    }
    out
}

pub fn sigmoid(v: f32) -> f32 {
    (1.0 / (1.0 + (-(v as f64)).exp())) as f32
}
