//! The reference's training losses, their values and their gradients.
//!
//! Segmentation: MONAI `DiceCELoss(to_onehot_y=True, softmax=True)`: Dice over the softmax of
//! the 2-class logits against the one-hot label (smooth 1e-5 in numerator and denominator,
//! per sample and channel, then the mean) plus the mean cross-entropy. Attention: for each
//! spatial attention map `w_k`, `0.2 * Dice(w_k, t_k)` without softmax, where `t_k` is the label
//! average-pooled to the map's grid (`AdaptiveAvgPool3d`, as the reference's `attention_loss`).
//! Binary cross-entropy on logits is here for the classifier.
//!
//! Sums run in float64. Tensors are channels-last `(N, voxels, C)`, labels `(N, voxels)`.

use crate::backend::cpu::pool::adaptive_avg_pool;
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims};

/// MONAI's default `smooth_nr` and `smooth_dr`.
pub const SMOOTH: f64 = 1e-5;
/// The weight of each attention map's Dice loss.
pub const ATTENTION_WEIGHT: f64 = 0.2;

/// Dice + cross-entropy of 2-class logits (channels-last `(n, vox, 2)`) against a 0/1 label
/// `(n, vox)`. Returns `(dice, ce, d(dice + ce)/d logits)`.
pub fn dice_ce(logits: &[f32], label: &[u8], n: usize) -> Result<(f64, f64, Vec<f32>)> {
    let z: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let (d, c, g) = dice_ce_f64(&z, label, n)?;
    Ok((d, c, g.into_iter().map(|v| v as f32).collect()))
}

/// [`dice_ce`] in float64 throughout (the finite-difference tests differentiate this).
pub fn dice_ce_f64(z: &[f64], label: &[u8], n: usize) -> Result<(f64, f64, Vec<f64>)> {
    if n == 0 || z.len() != 2 * label.len() || !label.len().is_multiple_of(n) {
        return Err(Error::Shape(format!(
            "loss: {} logits for {} label voxels in {n} samples (need 2 per voxel)",
            z.len(),
            label.len()
        )));
    }
    if let Some(v) = label.iter().find(|&&v| v > 1) {
        return Err(Error::Shape(format!("loss: label value {v}, expected 0 or 1")));
    }
    let vox = label.len() / n;
    // Softmax of two logits.
    let p1: Vec<f64> = z.chunks_exact(2).map(|l| 1.0 / (1.0 + (l[0] - l[1]).exp())).collect();
    let mut grad = vec![0f64; z.len()];
    let mut dice = 0.0;
    let mut ce = 0.0;
    let ce_scale = 1.0 / (n * vox) as f64;
    let dice_scale = 1.0 / (2 * n) as f64;
    for s in 0..n {
        let (lab, p1s) = (&label[s * vox..][..vox], &p1[s * vox..][..vox]);
        // Per channel: intersection, prediction sum, label sum.
        let mut i = [0f64; 2];
        let mut ps = [0f64; 2];
        let mut gs = [0f64; 2];
        for (&t, &q) in lab.iter().zip(p1s) {
            let p = [1.0 - q, q];
            let g = [(t == 0) as u8 as f64, t as f64];
            for c in 0..2 {
                i[c] += p[c] * g[c];
                ps[c] += p[c];
                gs[c] += g[c];
            }
        }
        let den: [f64; 2] = [ps[0] + gs[0] + SMOOTH, ps[1] + gs[1] + SMOOTH];
        for c in 0..2 {
            dice += 1.0 - (2.0 * i[c] + SMOOTH) / den[c];
        }
        for (v, (&t, &q)) in lab.iter().zip(p1s).enumerate() {
            let p = [1.0 - q, q];
            let g = [(t == 0) as u8 as f64, t as f64];
            // d dice / d p_c, then through the softmax: dz_c = p_c (dp_c - sum_j p_j dp_j).
            let mut dp = [0f64; 2];
            for c in 0..2 {
                dp[c] = -dice_scale * (2.0 * g[c] / den[c] - (2.0 * i[c] + SMOOTH) / (den[c] * den[c]));
            }
            let dot = p[0] * dp[0] + p[1] * dp[1];
            let o = (s * vox + v) * 2;
            // -ln p_t = softplus(z_other - z_t), from the logits: ln(p) would lose it once p
            // rounds to 0 (a confident wrong voxel).
            let d = z[o + 1 - t as usize] - z[o + t as usize];
            ce += d.max(0.0) + (-d.abs()).exp().ln_1p();
            for c in 0..2 {
                grad[o + c] = p[c] * (dp[c] - dot) + ce_scale * (p[c] - g[c]);
            }
        }
    }
    Ok((dice * dice_scale, ce * ce_scale, grad))
}

/// `ATTENTION_WEIGHT * Dice(w, target)` for one attention map `w` `(n, vox)` (no softmax):
/// the loss and its gradient.
pub fn attention_dice(w: &[f32], target: &[f32], n: usize) -> Result<(f64, Vec<f32>)> {
    let wf: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let tf: Vec<f64> = target.iter().map(|&v| v as f64).collect();
    let (l, g) = attention_dice_f64(&wf, &tf, n)?;
    Ok((l, g.into_iter().map(|v| v as f32).collect()))
}

pub fn attention_dice_f64(w: &[f64], t: &[f64], n: usize) -> Result<(f64, Vec<f64>)> {
    if n == 0 || w.len() != t.len() || !w.len().is_multiple_of(n) {
        return Err(Error::Shape(format!("attention loss: map of {} values, target of {}", w.len(), t.len())));
    }
    let vox = w.len() / n;
    let scale = ATTENTION_WEIGHT / n as f64;
    let mut loss = 0.0;
    let mut grad = vec![0f64; w.len()];
    for s in 0..n {
        let (ws, ts) = (&w[s * vox..][..vox], &t[s * vox..][..vox]);
        let i: f64 = ws.iter().zip(ts).map(|(a, b)| a * b).sum();
        let den = ws.iter().sum::<f64>() + ts.iter().sum::<f64>() + SMOOTH;
        loss += 1.0 - (2.0 * i + SMOOTH) / den;
        for (g, &tv) in grad[s * vox..][..vox].iter_mut().zip(ts) {
            *g = -scale * (2.0 * tv / den - (2.0 * i + SMOOTH) / (den * den));
        }
    }
    Ok((loss * scale, grad))
}

/// The attention loss's target for a map of size `od`: the 0/1 label `(n, dims)` average-pooled
/// to `od` (the label itself where the sizes agree).
pub fn attention_target(label: &[u8], n: usize, dims: Dims, od: Dims) -> Vec<f32> {
    let vox = numel(dims);
    let mut out = vec![0f32; n * numel(od)];
    for s in 0..n {
        let l: Vec<f32> = label[s * vox..][..vox].iter().map(|&v| v as f32).collect();
        adaptive_avg_pool(&l, dims, 1, od, &mut out[s * numel(od)..][..numel(od)]);
    }
    out
}

/// Mean binary cross-entropy of logits `z` against targets in [0, 1], computed stably
/// (`max(z, 0) - z t + log(1 + exp(-|z|))`), and its gradient `(sigmoid(z) - t) / len`.
pub fn bce_with_logits(z: &[f32], t: &[f32]) -> Result<(f64, Vec<f32>)> {
    if z.len() != t.len() || z.is_empty() {
        return Err(Error::Shape(format!("binary cross-entropy: {} logits for {} targets", z.len(), t.len())));
    }
    let n = z.len() as f64;
    let mut loss = 0.0;
    let grad = z
        .iter()
        .zip(t)
        .map(|(&zv, &tv)| {
            let (zv, tv) = (zv as f64, tv as f64);
            loss += zv.max(0.0) - zv * tv + (-zv.abs()).exp().ln_1p();
            ((1.0 / (1.0 + (-zv).exp()) - tv) / n) as f32
        })
        .collect();
    Ok((loss / n, grad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Central differences in float64 against the analytic gradient.
    fn check_fd(f: &dyn Fn(&[f64]) -> f64, x: &[f64], g: &[f64]) {
        let h = 1e-6;
        let mut worst = 0f64;
        for i in 0..x.len() {
            let mut a = x.to_vec();
            let mut b = x.to_vec();
            a[i] += h;
            b[i] -= h;
            let fd = (f(&a) - f(&b)) / (2.0 * h);
            worst = worst.max((fd - g[i]).abs() / (g[i].abs() + 1e-6));
        }
        assert!(worst < 1e-5, "finite differences disagree: worst relative error {worst:e}");
    }

    #[test]
    fn dice_ce_gradient_matches_finite_differences() {
        let mut seed = 7;
        let n = 2;
        let vox = 37;
        let z: Vec<f64> = (0..n * vox * 2).map(|_| lcg(&mut seed) * 4.0 - 2.0).collect();
        let label: Vec<u8> = (0..n * vox).map(|_| (lcg(&mut seed) < 0.3) as u8).collect();
        let (_, _, g) = dice_ce_f64(&z, &label, n).unwrap();
        check_fd(
            &|z| {
                let (d, c, _) = dice_ce_f64(z, &label, n).unwrap();
                d + c
            },
            &z,
            &g,
        );
    }

    #[test]
    fn attention_dice_gradient_matches_finite_differences() {
        let mut seed = 3;
        let w: Vec<f64> = (0..2 * 29).map(|_| lcg(&mut seed)).collect();
        let t: Vec<f64> = (0..2 * 29).map(|_| lcg(&mut seed).round()).collect();
        let (_, g) = attention_dice_f64(&w, &t, 2).unwrap();
        check_fd(&|w| attention_dice_f64(w, &t, 2).unwrap().0, &w, &g);
    }

    #[test]
    fn known_values() {
        // Perfect confident prediction: Dice ~ 0, CE ~ 0.
        let label = [0u8, 1, 1, 0];
        let z: Vec<f32> = label.iter().flat_map(|&t| if t == 1 { [-20.0, 20.0] } else { [20.0, -20.0] }).collect();
        let (d, c, _) = dice_ce(&z, &label, 1).unwrap();
        assert!(d < 1e-8 && c < 1e-8, "dice {d} ce {c}");
        // Uniform logits: CE = ln 2, each channel's Dice = 1 - (2*0.5*2 + s)/(2 + 2 + s).
        let (d, c, _) = dice_ce(&[0.0; 8], &label, 1).unwrap();
        assert!((c - std::f64::consts::LN_2).abs() < 1e-12);
        assert!((d - (1.0 - (2.0 + SMOOTH) / (4.0 + SMOOTH))).abs() < 1e-12);
        // BCE of logit 0 is ln 2 whatever the target.
        let (b, g) = bce_with_logits(&[0.0, 0.0], &[1.0, 0.0]).unwrap();
        assert!((b - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(g, vec![-0.25, 0.25]);
    }

    #[test]
    fn cross_entropy_stays_exact_for_confident_wrong_logits() {
        // Label 0 with the logit of class 1 ahead by 800: -ln p_0 = 800 (+ ln(1 + e^-800)).
        let (_, c, _) = dice_ce(&[0.0, 800.0], &[0], 1).unwrap();
        assert!((c - 800.0).abs() < 1e-9, "{c}");
    }

    #[test]
    fn bad_shapes_and_labels_are_errors() {
        assert!(dice_ce(&[0.0; 6], &[0, 1], 1).is_err());
        assert!(dice_ce(&[0.0; 4], &[0, 2], 1).is_err());
        assert!(attention_dice(&[0.0; 3], &[0.0; 4], 1).is_err());
        assert!(bce_with_logits(&[], &[]).is_err());
    }
}
