//! Max pooling (kernel = stride, floor) and PyTorch's adaptive average pooling, channels-last.

use rayon::prelude::*;

use crate::backend::cpu::reference::adaptive_window;
use crate::tensor::Dims;

/// For each output `(oh, ow)` the sources are `k0 * k1` runs of `D * C` contiguous floats;
/// reducing whole runs elementwise keeps the inner loop a straight vector max.
pub fn max_pool(x: &[f32], dims: Dims, c: usize, k: Dims, out: &mut [f32]) {
    let od = [dims[0] / k[0], dims[1] / k[1], dims[2] / k[2]];
    let run = od[2] * c;
    out.par_chunks_mut(od[1] * run).enumerate().for_each(|(oh, plane)| {
        for (ow, dst) in plane.chunks_exact_mut(run).enumerate() {
            let mut first = true;
            for a in 0..k[0] {
                for b in 0..k[1] {
                    let (h, w) = (oh * k[0] + a, ow * k[1] + b);
                    let src = &x[(h * dims[1] + w) * dims[2] * c..][..dims[2] * c];
                    for cc in 0..k[2] {
                        // Output z takes source z*kd + cc: a strided view when kd > 1.
                        for (oz, d) in dst.chunks_exact_mut(c).enumerate() {
                            let s = &src[(oz * k[2] + cc) * c..][..c];
                            if first {
                                d.copy_from_slice(s);
                            } else {
                                for (dv, &sv) in d.iter_mut().zip(s) {
                                    *dv = max_nan(*dv, sv);
                                }
                            }
                        }
                        first = false;
                    }
                }
            }
        }
    });
}

/// Max that propagates NaN, like PyTorch's pooling.
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// Channels summed together in [`adaptive_avg_pool`]'s stack accumulator.
const POOL_BLOCK: usize = 16;

pub fn adaptive_avg_pool(x: &[f32], dims: Dims, c: usize, od: Dims, out: &mut [f32]) {
    out.par_chunks_mut(od[1] * od[2] * c).enumerate().for_each(|(oh, plane)| {
        let (h0, h1) = adaptive_window(oh, dims[0], od[0]);
        for ow in 0..od[1] {
            let (w0, w1) = adaptive_window(ow, dims[1], od[1]);
            for oz in 0..od[2] {
                let (z0, z1) = adaptive_window(oz, dims[2], od[2]);
                let inv = 1.0 / ((h1 - h0) * (w1 - w0) * (z1 - z0)) as f64;
                let dst = &mut plane[(ow * od[2] + oz) * c..][..c];
                // Float64 sums (a global pool, the classifier's, adds thousands of values), in
                // blocks of channels on the stack: no allocation on the inference path.
                for c0 in (0..c).step_by(POOL_BLOCK) {
                    let n = POOL_BLOCK.min(c - c0);
                    let mut acc = [0f64; POOL_BLOCK];
                    for h in h0..h1 {
                        for w in w0..w1 {
                            for z in z0..z1 {
                                let src = &x[((h * dims[1] + w) * dims[2] + z) * c + c0..][..n];
                                for (a, &v) in acc.iter_mut().zip(src) {
                                    *a += v as f64;
                                }
                            }
                        }
                    }
                    dst[c0..c0 + n].iter_mut().zip(&acc).for_each(|(d, a)| *d = (a * inv) as f32);
                }
            }
        }
    });
}
