//! Conversions between PyTorch's channels-first layout and the engine's channels-last one.

use rayon::prelude::*;

/// `(C, V)` -> `(V, C)` for one sample of `vox` voxels.
pub fn to_channels_last(x: &[f32], c: usize, vox: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * vox];
    if c == 1 {
        out.copy_from_slice(&x[..vox]);
        return out;
    }
    // Blocks of voxels keep both sides' accesses within a few cache lines.
    const B: usize = 64;
    out.par_chunks_mut(B * c).enumerate().for_each(|(blk, dst)| {
        let v0 = blk * B;
        let nv = dst.len() / c;
        for ch in 0..c {
            let src = &x[ch * vox + v0..][..nv];
            for (i, &s) in src.iter().enumerate() {
                dst[i * c + ch] = s;
            }
        }
    });
    out
}

/// `(V, C)` -> `(C, V)` for one sample.
pub fn to_channels_first(x: &[f32], c: usize, vox: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * vox];
    if c == 1 {
        out.copy_from_slice(&x[..vox]);
        return out;
    }
    out.par_chunks_mut(vox).enumerate().for_each(|(ch, dst)| {
        for (v, d) in dst.iter_mut().enumerate() {
            *d = x[v * c + ch];
        }
    });
    out
}
