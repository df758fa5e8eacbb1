//! Trilinear interpolation with `align_corners=True`, channels-last.

use rayon::prelude::*;

use crate::tensor::Dims;

/// `(i0, i1, frac)` per output index along one axis. The source coordinate is computed like
/// PyTorch's (`scale * i` with `scale = (in - 1) / (out - 1)` in float32).
pub(crate) fn axis_weights(inp: usize, out: usize) -> Vec<(usize, usize, f32)> {
    (0..out).map(|i| axis_weight(inp, out, i)).collect()
}

/// [`axis_weights`]' entry `i`, computed where it is used (no table per call).
#[inline(always)]
pub(crate) fn axis_weight(inp: usize, out: usize, i: usize) -> (usize, usize, f32) {
    let scale = if out > 1 { (inp as f32 - 1.0) / (out as f32 - 1.0) } else { 0.0 };
    let s = scale * i as f32;
    let i0 = (s.floor() as usize).min(inp - 1);
    let i1 = (i0 + 1).min(inp - 1);
    (i0, i1, s - i0 as f32)
}

/// The 8 source offsets (`at(h, w, z)`) and weights of one output voxel, from its per-axis
/// `(i0, i1, frac)`.
#[inline(always)]
pub(crate) fn corners(
    (h0, h1, fh): (usize, usize, f32),
    (w0, w1, fw): (usize, usize, f32),
    (z0, z1, fz): (usize, usize, f32),
    at: impl Fn(usize, usize, usize) -> usize,
) -> [(usize, f32); 8] {
    [
        (at(h0, w0, z0), (1.0 - fh) * (1.0 - fw) * (1.0 - fz)),
        (at(h0, w0, z1), (1.0 - fh) * (1.0 - fw) * fz),
        (at(h0, w1, z0), (1.0 - fh) * fw * (1.0 - fz)),
        (at(h0, w1, z1), (1.0 - fh) * fw * fz),
        (at(h1, w0, z0), fh * (1.0 - fw) * (1.0 - fz)),
        (at(h1, w0, z1), fh * (1.0 - fw) * fz),
        (at(h1, w1, z0), fh * fw * (1.0 - fz)),
        (at(h1, w1, z1), fh * fw * fz),
    ]
}

pub fn resize_trilinear(x: &[f32], dims: Dims, c: usize, od: Dims, out: &mut [f32]) {
    let at = |h: usize, w: usize, z: usize| ((h * dims[1] + w) * dims[2] + z) * c;
    out.par_chunks_mut(od[1] * od[2] * c).enumerate().for_each(|(oh, plane)| {
        let (h0, h1, fh) = axis_weight(dims[0], od[0], oh);
        for ow in 0..od[1] {
            let (w0, w1, fw) = axis_weight(dims[1], od[1], ow);
            for oz in 0..od[2] {
                let (z0, z1, fz) = axis_weight(dims[2], od[2], oz);
                let dst = &mut plane[(ow * od[2] + oz) * c..][..c];
                dst.fill(0.0);
                for (base, wgt) in corners((h0, h1, fh), (w0, w1, fw), (z0, z1, fz), at) {
                    let src = &x[base..][..c];
                    for ch in 0..c {
                        dst[ch] += wgt * src[ch];
                    }
                }
            }
        }
    });
}
