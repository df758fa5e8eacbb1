//! The float64 oracle: direct, obviously-correct implementations of every forward op of the
//! [`Backend`](crate::backend::Backend) trait on PyTorch-layout tensors `(N, C, H, W, D)`,
//! computed and returned in f64. The CPU and CUDA kernels are tested against them
//! (`tests/common/op_cases.rs`, one case table per op), and the gradient tape's backward ops
//! against their central finite differences (`tests/ops/train_ops.rs`), which is why the values
//! stay f64 from end to end. Nothing on a hot path calls them.

use crate::tensor::{numel, Dims, HostTensor};

/// A float64 tensor in PyTorch layout: the oracle's inputs and outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor64 {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor64 {
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?} for {} values", data.len());
        Tensor64 { shape, data }
    }

    /// `(N, C, dims)` of a 5-D tensor.
    pub fn ncdims(&self) -> (usize, usize, Dims) {
        assert_eq!(self.shape.len(), 5, "the oracle takes 5-D tensors, not {:?}", self.shape);
        (self.shape[0], self.shape[1], [self.shape[2], self.shape[3], self.shape[4]])
    }

    /// Rounded to f32.
    pub fn to_f32(&self) -> HostTensor {
        HostTensor { shape: self.shape.clone(), data: self.data.iter().map(|&v| v as f32).collect() }
    }
}

impl From<&HostTensor> for Tensor64 {
    fn from(t: &HostTensor) -> Self {
        Tensor64 { shape: t.shape.clone(), data: t.data.iter().map(|&v| v as f64).collect() }
    }
}

fn idx(d: Dims, h: usize, w: usize, z: usize) -> usize {
    (h * d[1] + w) * d[2] + z
}

fn nc(n: usize, c: usize, d: Dims, data: Vec<f64>) -> Tensor64 {
    Tensor64::new(vec![n, c, d[0], d[1], d[2]], data)
}

/// Conv3d, stride 1, "same" zero padding (`k / 2`), weight `(cout, cin, kH, kW, kD)`: each
/// tap's weight times the input shifted by the tap's offset, added over the output voxels whose
/// shifted input lies inside the volume (the padding contributes zeros).
pub fn conv3d(x: &Tensor64, w: &Tensor64, b: Option<&[f64]>) -> Tensor64 {
    let (n, cin, d) = x.ncdims();
    let (cout, k) = (w.shape[0], [w.shape[2], w.shape[3], w.shape[4]]);
    assert_eq!(w.shape[1], cin);
    let p = [k[0] / 2, k[1] / 2, k[2] / 2];
    let vox = numel(d);
    // Output indices `o` along an axis whose input `o + t - p` exists, for tap `t`.
    let valid = |ax: usize, t: usize| (p[ax].saturating_sub(t), (d[ax] + p[ax]).saturating_sub(t).min(d[ax]));
    let mut out = vec![0f64; n * cout * vox];
    for s in 0..n {
        for co in 0..cout {
            let y = &mut out[(s * cout + co) * vox..][..vox];
            y.fill(b.map_or(0.0, |b| b[co]));
            for ci in 0..cin {
                let xs = &x.data[(s * cin + ci) * vox..][..vox];
                for a in 0..k[0] {
                    for bb in 0..k[1] {
                        for c in 0..k[2] {
                            let wv = w.data[(((co * cin + ci) * k[0] + a) * k[1] + bb) * k[2] + c];
                            let ((h0, h1), (w0, w1), (z0, z1)) = (valid(0, a), valid(1, bb), valid(2, c));
                            if z0 >= z1 {
                                continue;
                            }
                            for h in h0..h1 {
                                for ww in w0..w1 {
                                    let src = idx(d, h + a - p[0], ww + bb - p[1], z0 + c - p[2]);
                                    let dst = idx(d, h, ww, z0);
                                    for (o, i) in y[dst..dst + (z1 - z0)].iter_mut().zip(&xs[src..]) {
                                        *o += wv * i;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    nc(n, cout, d, out)
}

/// `relu?(instance_norm(x) + residual)`, eps 1e-5, biased variance.
pub fn instance_norm(x: &Tensor64, residual: Option<&Tensor64>, relu: bool) -> Tensor64 {
    let (n, c, d) = x.ncdims();
    if let Some(r) = residual {
        assert_eq!(r.shape, x.shape, "residual shape");
    }
    let vox = numel(d);
    let mut out = x.clone();
    for s in 0..n * c {
        let o = s * vox;
        let v = &x.data[o..o + vox];
        let mean = v.iter().sum::<f64>() / vox as f64;
        let var = v.iter().map(|&a| (a - mean).powi(2)).sum::<f64>() / vox as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        for i in 0..vox {
            let mut y = (v[i] - mean) * rstd;
            if let Some(r) = residual {
                y += r.data[o + i];
            }
            if relu {
                y = y.max(0.0);
            }
            out.data[o + i] = y;
        }
    }
    out
}

/// `relu?(instance_norm(conv3d(x)) + residual)`.
pub fn conv_norm(x: &Tensor64, w: &Tensor64, b: Option<&[f64]>, residual: Option<&Tensor64>, relu: bool) -> Tensor64 {
    instance_norm(&conv3d(x, w, b), residual, relu)
}

/// Max pool, kernel = stride, floor.
pub fn max_pool(x: &Tensor64, k: Dims) -> Tensor64 {
    let (n, c, d) = x.ncdims();
    let od = [d[0] / k[0], d[1] / k[1], d[2] / k[2]];
    let mut out = Vec::with_capacity(n * c * numel(od));
    for s in 0..n * c {
        let base = s * numel(d);
        for h in 0..od[0] {
            for w in 0..od[1] {
                for z in 0..od[2] {
                    let mut m = f64::NEG_INFINITY;
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
    nc(n, c, od, out)
}

/// PyTorch's adaptive pooling window `[start, end)` of output cell `i`.
pub fn adaptive_window(i: usize, inp: usize, out: usize) -> (usize, usize) {
    ((i * inp) / out, ((i + 1) * inp).div_ceil(out))
}

/// `adaptive_avg_pool3d` to `od`.
pub fn adaptive_avg_pool(x: &Tensor64, od: Dims) -> Tensor64 {
    let (n, c, d) = x.ncdims();
    let mut out = Vec::with_capacity(n * c * numel(od));
    for s in 0..n * c {
        let base = s * numel(d);
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
                                acc += x.data[base + idx(d, a, b, cc)];
                            }
                        }
                    }
                    out.push(acc / ((h1 - h0) * (w1 - w0) * (z1 - z0)) as f64);
                }
            }
        }
    }
    nc(n, c, od, out)
}

/// Source coordinate of output index `i` for align_corners=True.
pub fn align_corners_src(i: usize, inp: usize, out: usize) -> f64 {
    if out <= 1 {
        0.0
    } else {
        i as f64 * (inp - 1) as f64 / (out - 1) as f64
    }
}

/// Trilinear interpolation to `od`, align_corners=True.
pub fn resize_trilinear(x: &Tensor64, od: Dims) -> Tensor64 {
    let (n, c, d) = x.ncdims();
    let mut out = Vec::with_capacity(n * c * numel(od));
    let lerp_axis = |i: usize, ax: usize| {
        let s = align_corners_src(i, d[ax], od[ax]);
        let i0 = (s.floor() as usize).min(d[ax] - 1);
        let i1 = (i0 + 1).min(d[ax] - 1);
        (i0, i1, s - i0 as f64)
    };
    for s in 0..n * c {
        let base = s * numel(d);
        for h in 0..od[0] {
            let (h0, h1, fh) = lerp_axis(h, 0);
            for w in 0..od[1] {
                let (w0, w1, fw) = lerp_axis(w, 1);
                for z in 0..od[2] {
                    let (z0, z1, fz) = lerp_axis(z, 2);
                    let g = |a, b, cc| x.data[base + idx(d, a, b, cc)];
                    let c00 = g(h0, w0, z0) * (1.0 - fz) + g(h0, w0, z1) * fz;
                    let c01 = g(h0, w1, z0) * (1.0 - fz) + g(h0, w1, z1) * fz;
                    let c10 = g(h1, w0, z0) * (1.0 - fz) + g(h1, w0, z1) * fz;
                    let c11 = g(h1, w1, z0) * (1.0 - fz) + g(h1, w1, z1) * fz;
                    let c0 = c00 * (1.0 - fw) + c01 * fw;
                    let c1 = c10 * (1.0 - fw) + c11 * fw;
                    out.push(c0 * (1.0 - fh) + c1 * fh);
                }
            }
        }
    }
    nc(n, c, od, out)
}

/// ConvTranspose3d with kernel = stride, weight `(cin, cout, kH, kW, kD)`.
pub fn conv_transpose(x: &Tensor64, w: &Tensor64, b: &[f64]) -> Tensor64 {
    let (n, cin, d) = x.ncdims();
    assert_eq!(w.shape[0], cin);
    let (cout, k) = (w.shape[1], [w.shape[2], w.shape[3], w.shape[4]]);
    let od = [d[0] * k[0], d[1] * k[1], d[2] * k[2]];
    let mut out = vec![0f64; n * cout * numel(od)];
    for s in 0..n {
        for co in 0..cout {
            for h in 0..od[0] {
                for ww in 0..od[1] {
                    for z in 0..od[2] {
                        let (ih, iw, iz) = (h / k[0], ww / k[1], z / k[2]);
                        let (a, bb, c) = (h % k[0], ww % k[1], z % k[2]);
                        let mut acc = b[co];
                        for ci in 0..cin {
                            let xv = x.data[(s * cin + ci) * numel(d) + idx(d, ih, iw, iz)];
                            let wv = w.data[(((ci * cout + co) * k[0] + a) * k[1] + bb) * k[2] + c];
                            acc += xv * wv;
                        }
                        out[(s * cout + co) * numel(od) + idx(od, h, ww, z)] = acc;
                    }
                }
            }
        }
    }
    nc(n, cout, od, out)
}

/// Replicate padding at the high end of each axis up to `to`.
pub fn pad_replicate_end(x: &Tensor64, to: Dims) -> Tensor64 {
    let (n, c, d) = x.ncdims();
    let mut out = Vec::with_capacity(n * c * numel(to));
    for s in 0..n * c {
        let base = s * numel(d);
        for h in 0..to[0] {
            for w in 0..to[1] {
                for z in 0..to[2] {
                    out.push(x.data[base + idx(d, h.min(d[0] - 1), w.min(d[1] - 1), z.min(d[2] - 1))]);
                }
            }
        }
    }
    nc(n, c, to, out)
}

/// `skip + replicate_pad_end(conv_transpose(x, w, b), skip's size)`: the decoder's upsampling.
pub fn up_add(x: &Tensor64, w: &Tensor64, b: &[f64], skip: &Tensor64) -> Tensor64 {
    let (_, _, sd) = skip.ncdims();
    sum(&[&pad_replicate_end(&conv_transpose(x, w, b), sd), skip], false)
}

/// `relu?(sum of xs)`, all the same shape.
pub fn sum(xs: &[&Tensor64], relu: bool) -> Tensor64 {
    let mut out = xs[0].clone();
    for x in &xs[1..] {
        assert_eq!(x.shape, out.shape, "sum of different shapes");
        out.data.iter_mut().zip(&x.data).for_each(|(o, v)| *o += v);
    }
    if relu {
        out.data.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    out
}

pub fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// `sigmoid(a + b)`.
pub fn sigmoid_sum(a: &Tensor64, b: &Tensor64) -> Tensor64 {
    let mut out = sum(&[a, b], false);
    out.data.iter_mut().for_each(|v| *v = sigmoid(*v));
    out
}

/// `x * w + x`, `w` with one channel (broadcast) or x's channels.
pub fn attend(x: &Tensor64, w: &Tensor64) -> Tensor64 {
    let (n, c, d) = x.ncdims();
    let (wn, wc, wd) = w.ncdims();
    assert!(wn == n && wd == d && (wc == 1 || wc == c), "attend: map {:?} for {:?}", w.shape, x.shape);
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

/// Channel concatenation `[a, b]`.
pub fn concat(a: &Tensor64, b: &Tensor64) -> Tensor64 {
    let (n, ca, d) = a.ncdims();
    let (bn, cb, bd) = b.ncdims();
    assert!(bn == n && bd == d, "concat of {:?} and {:?}", a.shape, b.shape);
    let vox = numel(d);
    let mut out = Vec::with_capacity(n * (ca + cb) * vox);
    for s in 0..n {
        out.extend_from_slice(&a.data[s * ca * vox..][..ca * vox]);
        out.extend_from_slice(&b.data[s * cb * vox..][..cb * vox]);
    }
    nc(n, ca + cb, d, out)
}
