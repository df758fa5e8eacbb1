//! Conversions between PyTorch's channels-first layout and the engine's channels-last one.

use rayon::prelude::*;

/// `(C, V)` -> `(V, C)` for one sample of `vox` voxels.
pub fn to_channels_last(x: &[f32], c: usize, vox: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * vox];
    to_channels_last_into(x, c, vox, &mut out);
    out
}

/// [`to_channels_last`] into `out` (`c * vox` floats).
pub fn to_channels_last_into(x: &[f32], c: usize, vox: usize, out: &mut [f32]) {
    if c == 1 {
        out.copy_from_slice(&x[..vox]);
        return;
    }
    // Blocks of voxels keep both sides' accesses within a few cache lines; within a block the
    // channels are gathered per voxel so each destination run is written contiguously.
    const B: usize = 64;
    out.par_chunks_mut(B * c).enumerate().for_each(|(blk, dst)| {
        let v0 = blk * B;
        let nv = dst.len() / c;
        let srcs: Vec<&[f32]> = (0..c).map(|ch| &x[ch * vox + v0..][..nv]).collect();
        for (i, d) in dst.chunks_exact_mut(c).enumerate() {
            for (dv, s) in d.iter_mut().zip(&srcs) {
                *dv = s[i];
            }
        }
    });
}

/// `(V, C)` -> `(C, V)` for one sample.
pub fn to_channels_first(x: &[f32], c: usize, vox: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * vox];
    to_channels_first_into(x, c, vox, &mut out);
    out
}

/// [`to_channels_first`] into `out` (`c * vox` floats).
pub fn to_channels_first_into(x: &[f32], c: usize, vox: usize, out: &mut [f32]) {
    if c == 1 {
        out.copy_from_slice(&x[..vox]);
        return;
    }
    out.par_chunks_mut(vox).enumerate().for_each(|(ch, dst)| {
        for (v, d) in dst.iter_mut().enumerate() {
            *d = x[v * c + ch];
        }
    });
}
