//! Max pooling (kernel = stride, floor) and PyTorch's adaptive average pooling, channels-last.

use rayon::prelude::*;

use crate::backend::cpu::reference::adaptive_window;
use crate::tensor::Dims;

pub fn max_pool(x: &[f32], dims: Dims, c: usize, k: Dims, out: &mut [f32]) {
    let od = [dims[0] / k[0], dims[1] / k[1], dims[2] / k[2]];
    out.par_chunks_mut(od[1] * od[2] * c).enumerate().for_each(|(oh, plane)| {
        for ow in 0..od[1] {
            for oz in 0..od[2] {
                let dst = &mut plane[(ow * od[2] + oz) * c..][..c];
                dst.fill(f32::NEG_INFINITY);
                for a in 0..k[0] {
                    for b in 0..k[1] {
                        for cc in 0..k[2] {
                            let (h, w, z) = (oh * k[0] + a, ow * k[1] + b, oz * k[2] + cc);
                            let src = &x[((h * dims[1] + w) * dims[2] + z) * c..][..c];
                            for ch in 0..c {
                                // NaN propagates like PyTorch's max pool.
                                let v = src[ch];
                                if v > dst[ch] || v.is_nan() {
                                    dst[ch] = v;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

pub fn adaptive_avg_pool(x: &[f32], dims: Dims, c: usize, od: Dims, out: &mut [f32]) {
    out.par_chunks_mut(od[1] * od[2] * c).enumerate().for_each(|(oh, plane)| {
        let (h0, h1) = adaptive_window(oh, dims[0], od[0]);
        for ow in 0..od[1] {
            let (w0, w1) = adaptive_window(ow, dims[1], od[1]);
            for oz in 0..od[2] {
                let (z0, z1) = adaptive_window(oz, dims[2], od[2]);
                let dst = &mut plane[(ow * od[2] + oz) * c..][..c];
                dst.fill(0.0);
                for h in h0..h1 {
                    for w in w0..w1 {
                        for z in z0..z1 {
                            let src = &x[((h * dims[1] + w) * dims[2] + z) * c..][..c];
                            for ch in 0..c {
                                dst[ch] += src[ch];
                            }
                        }
                    }
                }
                let inv = 1.0 / ((h1 - h0) * (w1 - w0) * (z1 - z0)) as f32;
                dst.iter_mut().for_each(|v| *v *= inv);
            }
        }
    });
}
