//! Instance normalisation (no affine, eps 1e-5, biased variance) fused with the residual add
//! and ReLU that follow it everywhere in the network.

use rayon::prelude::*;

use super::scratch::refill;

pub const EPS: f64 = 1e-5;

/// A channel's statistics: the mean as an unevaluated sum `hi + lo` of two floats (so that
/// `(x - hi) - lo` keeps float64 accuracy where the mean is large against the spread) and
/// `1/sqrt(var + eps)`.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub mean_hi: f32,
    pub mean_lo: f32,
    pub rstd: f32,
}

/// Per-channel statistics of one channels-last sample.
///
/// Sums run in f64 around a per-channel shift (the mean of the first voxels), so the variance
/// keeps full precision even where a channel's mean is large against its spread.
pub fn channel_stats(x: &[f32], c: usize) -> Vec<Stats> {
    let vox = x.len() / c;
    let probe = vox.clamp(1, 1024);
    let mut shift = vec![0f64; c];
    for v in x.chunks_exact(c).take(probe) {
        for ch in 0..c {
            shift[ch] += v[ch] as f64;
        }
    }
    shift.iter_mut().for_each(|s| *s /= probe as f64);
    // Each chunk sums into a slot of its own; the slots are added in chunk order, so the
    // statistics are the same to the bit whichever thread ran which chunk, and the number of
    // allocations does not depend on how the work was split.
    const CHUNK_VOX: usize = 4096;
    let mut slots = vec![0f64; x.len().div_ceil(CHUNK_VOX * c) * 2 * c];
    x.par_chunks(CHUNK_VOX * c).zip(slots.par_chunks_mut(2 * c)).for_each(|(chunk, slot)| {
        let (s, q) = slot.split_at_mut(c);
        for v in chunk.chunks_exact(c) {
            for ch in 0..c {
                let d = v[ch] as f64 - shift[ch];
                s[ch] += d;
                q[ch] += d * d;
            }
        }
    });
    let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
    for slot in slots.chunks_exact(2 * c) {
        for ch in 0..c {
            sum[ch] += slot[ch];
            sq[ch] += slot[c + ch];
        }
    }
    (0..c)
        .map(|ch| {
            let m = sum[ch] / vox as f64;
            let var = (sq[ch] / vox as f64 - m * m).max(0.0);
            let mean = m + shift[ch];
            let mean_hi = mean as f32;
            Stats { mean_hi, mean_lo: (mean - mean_hi as f64) as f32, rstd: (1.0 / (var + EPS).sqrt()) as f32 }
        })
        .collect()
}

/// The normalisation's parameters `mean_hi | mean_lo | rstd` (`3 x channels`, into `params`)
/// from per-channel `(sum, sum of squares)` over `count` voxels (see `conv::conv_sample`).
pub fn params_from_sums(sums: &[(f64, f64)], count: usize, params: &mut Vec<f32>) {
    let c = sums.len();
    let p = refill(params, 3 * c, 0.0);
    for (ch, &(s, q)) in sums.iter().enumerate() {
        let mean = s / count as f64;
        let var = (q / count as f64 - mean * mean).max(0.0);
        let mean_hi = mean as f32;
        p[ch] = mean_hi;
        p[c + ch] = (mean - mean_hi as f64) as f32;
        p[2 * c + ch] = (1.0 / (var + EPS).sqrt()) as f32;
    }
}

/// [`params_from_sums`]'s layout back as one [`Stats`] per channel.
pub fn stats_from_params(params: &[f32]) -> Vec<Stats> {
    let c = params.len() / 3;
    (0..c).map(|ch| Stats { mean_hi: params[ch], mean_lo: params[c + ch], rstd: params[2 * c + ch] }).collect()
}

/// In place: `x = relu?((x - mean) * rstd + residual)`.
pub fn apply(x: &mut [f32], c: usize, stats: &[Stats], residual: Option<&[f32]>, relu: bool) {
    let mut p = vec![0f32; 3 * c];
    for (ch, st) in stats.iter().enumerate().take(c) {
        (p[ch], p[c + ch], p[2 * c + ch]) = (st.mean_hi, st.mean_lo, st.rstd);
    }
    apply_params(x, c, &p, residual, relu);
}

/// [`apply`] with the parameters as [`params_from_sums`] lays them out.
pub fn apply_params(x: &mut [f32], c: usize, params: &[f32], residual: Option<&[f32]>, relu: bool) {
    let (hi, rest) = params.split_at(c);
    let (lo, rstd) = rest.split_at(c);
    const CHUNK_VOX: usize = 4096;
    x.par_chunks_mut(CHUNK_VOX * c).enumerate().for_each(|(i, chunk)| {
        let res = residual.map(|r| &r[i * CHUNK_VOX * c..][..chunk.len()]);
        for (v, k) in chunk.chunks_exact_mut(c).enumerate() {
            let r = res.map(|r| &r[v * c..][..c]);
            normalise_voxel(k, hi, lo, rstd, r, relu);
        }
    });
}

#[inline(always)]
fn normalise_voxel(v: &mut [f32], hi: &[f32], lo: &[f32], rstd: &[f32], res: Option<&[f32]>, relu: bool) {
    let n = v.len();
    let (hi, lo, rstd) = (&hi[..n], &lo[..n], &rstd[..n]);
    match (res, relu) {
        (Some(r), true) => {
            let r = &r[..n];
            for j in 0..n {
                let y = (v[j] - hi[j] - lo[j]) * rstd[j] + r[j];
                v[j] = if y > 0.0 { y } else { 0.0 };
            }
        }
        (Some(r), false) => {
            let r = &r[..n];
            for j in 0..n {
                v[j] = (v[j] - hi[j] - lo[j]) * rstd[j] + r[j];
            }
        }
        (None, true) => {
            for j in 0..n {
                let y = (v[j] - hi[j] - lo[j]) * rstd[j];
                v[j] = if y > 0.0 { y } else { 0.0 };
            }
        }
        (None, false) => {
            for j in 0..n {
                v[j] = (v[j] - hi[j] - lo[j]) * rstd[j];
            }
        }
    }
}
