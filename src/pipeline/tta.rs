//! Test-time augmentation and fold ensembles as the reference's test script
//! (`test_seg.py` of hust-linyi/2.5D-AttentionUNet) runs them.
//!
//! Matched from that script: for each checkpoint, in this order, the sliding-window logits
//! of the preprocessed image, then 4 rounds of: noise the image
//! (`RandGaussianNoised(prob=1, std=0.01)`), the logits of the noised image, of the noised
//! image flipped along H (`torch.flip(dims=[2])` of `(N, C, H, W, D)`, flipped back), and
//! flipped along W (`dims=[3]`). Every pass's **raw logits** (no softmax) are added to one
//! float32 running sum in that order, over all checkpoints, and the sum divided by the number
//! of passes (13 per checkpoint) at the end; the argmax of that mean is the mask.
//! MONAI's `RandGaussianNoise` draws the noise's standard deviation uniformly from
//! `[0, std)` for each call (`sample_std=True`, its default) and then float64 normal noise,
//! cast to float32 and added; we do the same with a seeded ChaCha8 generator (the reference
//! used NumPy's unseeded global generator, so its noise cannot be reproduced, only its law).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::pipeline::window::{sliding_window, Predictor, Progress, WindowConfig};
use crate::tensor::{Dims, HostTensor};

/// Test-time augmentation knobs; the defaults are the reference's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TtaConfig {
    /// Noise rounds per checkpoint (each gives 3 passes: noised, flipped H, flipped W).
    pub rounds: usize,
    /// `RandGaussianNoise(std)`.
    pub noise_std: f64,
    /// Draw each round's standard deviation uniformly from `[0, noise_std)` (MONAI's default).
    pub sample_std: bool,
    pub seed: u64,
}

impl Default for TtaConfig {
    fn default() -> Self {
        TtaConfig { rounds: 4, noise_std: 0.01, sample_std: true, seed: 0 }
    }
}

impl TtaConfig {
    /// Sliding-window passes per checkpoint.
    pub fn passes(&self) -> usize {
        1 + 3 * self.rounds
    }
}

/// Where an ensemble run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnsembleProgress {
    /// 0-based pass being run, and the number of passes in all (models x TTA passes).
    pub pass: usize,
    pub passes: usize,
    pub window: Progress,
}

/// Flip row-major `(.., H, W, D)` data with `lead` leading planes along spatial `axis`
/// (0 = H, 1 = W).
fn flip(data: &[f32], lead: usize, dims: Dims, axis: usize) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let mut out = vec![0f32; data.len()];
    for l in 0..lead {
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                let (si, sj) = if axis == 0 { (dims[0] - 1 - i, j) } else { (i, dims[1] - 1 - j) };
                let d = l * n + (i * dims[1] + j) * dims[2];
                let s = l * n + (si * dims[1] + sj) * dims[2];
                out[d..d + dims[2]].copy_from_slice(&data[s..s + dims[2]]);
            }
        }
    }
    out
}

/// Averaged logits `(1, C, H, W, D)` of a fold ensemble on one preprocessed image, with the
/// reference's test-time augmentation when `tta` is given (else one plain pass per model).
pub fn ensemble(
    image: &[f32],
    dims: Dims,
    models: &mut [&mut dyn Predictor],
    window: &WindowConfig,
    tta: Option<&TtaConfig>,
    progress: &mut dyn FnMut(EnsembleProgress),
) -> Result<HostTensor> {
    if models.is_empty() {
        return Err(Error::Value("ensemble: no models given".into()));
    }
    if let Some(t) = tta {
        if !(t.noise_std >= 0.0 && t.noise_std.is_finite()) {
            return Err(Error::Value(format!("TTA noise std {} must be finite and >= 0", t.noise_std)));
        }
    }
    let per_model = tta.map_or(1, TtaConfig::passes);
    let passes = per_model * models.len();
    let mut rng = ChaCha8Rng::seed_from_u64(tta.map_or(0, |t| t.seed));
    let mut sum: Option<HostTensor> = None;
    let mut pass = 0;
    let add = |y: HostTensor, sum: &mut Option<HostTensor>| -> Result<()> {
        match sum {
            None => *sum = Some(y),
            Some(s) => {
                if s.shape != y.shape {
                    return Err(Error::Shape(format!("ensemble: logits {:?} then {:?}", s.shape, y.shape)));
                }
                for (a, b) in s.data.iter_mut().zip(&y.data) {
                    *a += b;
                }
            }
        }
        Ok(())
    };
    for model in models.iter_mut() {
        let mut run = |img: &[f32], pass: usize| {
            sliding_window(img, dims, &mut **model, window, &mut |w| {
                progress(EnsembleProgress { pass, passes, window: w })
            })
        };
        add(run(image, pass)?, &mut sum)?;
        pass += 1;
        let Some(t) = tta else { continue };
        for _ in 0..t.rounds {
            let std = if t.sample_std { rng.random::<f64>() * t.noise_std } else { t.noise_std };
            let noised: Vec<f32> = image
                .iter()
                .map(|&v| {
                    let z: f64 = rng.sample(StandardNormal);
                    v + (z * std) as f32
                })
                .collect();
            add(run(&noised, pass)?, &mut sum)?;
            pass += 1;
            for axis in [0, 1] {
                let y = run(&flip(&noised, 1, dims, axis), pass)?;
                let (_, c, _) = y.ncdims()?;
                add(HostTensor::new(y.shape.clone(), flip(&y.data, c, dims, axis))?, &mut sum)?;
                pass += 1;
            }
        }
    }
    let mut mean = sum.ok_or_else(|| Error::Other("ensemble: no passes ran".into()))?;
    let n = passes as f32;
    for v in mean.data.iter_mut() {
        *v /= n;
    }
    Ok(mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mock model that records what it sees and answers with position-dependent logits:
    /// checks pass count, order (plain, noised, flip H, flip W), un-flipping and the mean.
    #[test]
    fn tta_order_flips_and_average() {
        let dims = [4, 6, 2];
        let roi = dims; // one window per pass
        let wcfg = WindowConfig { roi, overlap: 0.5, sigma_scale: 0.125, sw_batch: 2 };
        let n: usize = dims.iter().product();
        let img: Vec<f32> = (0..n).map(|v| v as f32).collect();
        let mut seen: Vec<Vec<f32>> = Vec::new();
        // logits: channel 0 = input, channel 1 = constant 3 (flip invariant)
        let mut m = |x: &HostTensor| -> Result<HostTensor> {
            seen.push(x.data.clone());
            let mut d = x.data.clone();
            d.extend(std::iter::repeat_n(3.0, n));
            HostTensor::new(vec![1, 2, dims[0], dims[1], dims[2]], d)
        };
        let cfg = TtaConfig { rounds: 2, noise_std: 0.5, sample_std: false, seed: 7 };
        let mut passes = Vec::new();
        let out = {
            let mut models: [&mut dyn Predictor; 1] = [&mut m];
            ensemble(&img, dims, &mut models, &wcfg, Some(&cfg), &mut |p| passes.push((p.pass, p.passes))).unwrap()
        };
        assert_eq!(passes, (0..7).map(|p| (p, 7)).collect::<Vec<_>>());
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[0], img);
        for r in 0..2 {
            let noised = &seen[1 + 3 * r];
            let d: f64 = noised.iter().zip(&img).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / n as f64;
            assert!(d.sqrt() > 0.2 && d.sqrt() < 1.0, "noise rms {}", d.sqrt());
            assert_eq!(seen[2 + 3 * r], flip(noised, 1, dims, 0));
            assert_eq!(seen[3 + 3 * r], flip(noised, 1, dims, 1));
        }
        assert_ne!(seen[1], seen[4], "rounds draw fresh noise");
        // the mean of channel 0: (img + sum over rounds of 3 x noised) / 7, flips undone
        for p in 0..n {
            let want = (img[p] + (0..2).map(|r| 3.0 * seen[1 + 3 * r][p]).sum::<f32>()) / 7.0;
            assert!((out.data[p] - want).abs() < 1e-4, "{p}");
            assert!((out.data[n + p] - 3.0).abs() < 1e-6);
        }
    }

    #[test]
    fn fold_ensemble_averages_models_and_is_deterministic() {
        let dims = [4, 4, 2];
        let wcfg = WindowConfig { roi: dims, ..WindowConfig::default() };
        let img: Vec<f32> = (0..32).map(|v| v as f32 * 0.1).collect();
        let constant = |c: f32| {
            move |x: &HostTensor| -> Result<HostTensor> {
                let mut t = HostTensor::zeros(vec![x.shape[0], 2, 4, 4, 2]);
                t.data.iter_mut().for_each(|v| *v = c);
                Ok(t)
            }
        };
        let (mut a, mut b) = (constant(1.0), constant(4.0));
        let mut models: [&mut dyn Predictor; 2] = [&mut a, &mut b];
        let out = ensemble(&img, dims, &mut models, &wcfg, None, &mut |_| {}).unwrap();
        assert!(out.data.iter().all(|&v| (v - 2.5).abs() < 1e-6));

        let mut id = |x: &HostTensor| -> Result<HostTensor> {
            let mut d = x.data.clone();
            d.extend_from_slice(&x.data);
            HostTensor::new(vec![x.shape[0], 2, 4, 4, 2], d)
        };
        let cfg = TtaConfig::default();
        let mut models: [&mut dyn Predictor; 1] = [&mut id];
        let r1 = ensemble(&img, dims, &mut models, &wcfg, Some(&cfg), &mut |_| {}).unwrap();
        let r2 = ensemble(&img, dims, &mut models, &wcfg, Some(&cfg), &mut |_| {}).unwrap();
        assert_eq!(r1, r2, "seeded");
        let other = TtaConfig { seed: 1, ..cfg };
        let r3 = ensemble(&img, dims, &mut models, &wcfg, Some(&other), &mut |_| {}).unwrap();
        assert_ne!(r1, r3);
        assert!(ensemble(&img, dims, &mut [], &wcfg, None, &mut |_| {}).is_err());
    }
}
