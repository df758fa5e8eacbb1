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
//! The passes run as one stream of network batches in [`crate::pipeline::study`], which
//! adds the passes up by frame (plain, flipped H, flipped W) before the final division: the
//! same sum, in a different order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use rayon::prelude::*;

use crate::error::{Error, Result};

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
    /// Refuses settings the noise cannot be drawn with.
    pub fn validate(&self) -> Result<()> {
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return Err(Error::Value(format!("TTA noise std {} must be finite and >= 0", self.noise_std)));
        }
        if self.rounds >= 1 << 16 {
            return Err(Error::Value(format!("TTA rounds {} must be below 65536", self.rounds)));
        }
        Ok(())
    }

    /// Sliding-window passes per checkpoint.
    pub fn passes(&self) -> usize {
        1 + 3 * self.rounds
    }
}

/// Voxels per independently seeded noise stream: the noise is drawn in parallel and is the
/// same for any number of threads.
const NOISE_CHUNK: usize = 1 << 16;

/// `image` plus the Gaussian noise of TTA round `round` of model `model`: the round's standard
/// deviation, then one float64 normal per voxel, scaled and added in float32 (MONAI's
/// `RandGaussianNoise`). Every (seed, model, round) and every chunk of voxels has its own
/// ChaCha8 stream, so the rounds are independent and the result does not depend on threads.
pub fn add_noise(image: &[f32], cfg: &TtaConfig, model: usize, round: usize) -> Result<Vec<f32>> {
    cfg.validate()?;
    if model >= 1 << 24 || image.len() / NOISE_CHUNK >= (1 << 24) - 1 {
        return Err(Error::Value(format!("TTA noise: model {model} or image of {} voxels out of range", image.len())));
    }
    let stream = |chunk: usize| ((model as u64) << 40) | ((round as u64) << 24) | chunk as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(stream(0));
    let std = if cfg.sample_std { rng.random::<f64>() * cfg.noise_std } else { cfg.noise_std };
    let mut out = image.to_vec();
    out.par_chunks_mut(NOISE_CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(stream(i + 1));
        for v in chunk.iter_mut() {
            let z: f64 = rng.sample(StandardNormal);
            *v += (z * std) as f32;
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::study::infer;
    use crate::pipeline::window::{Predictor, WindowConfig};
    use crate::tensor::{Dims, HostTensor};

    /// Flip row-major `(H, W, D)` data along `axis` (0 = H, 1 = W): the reference's
    /// `torch.flip`, written out as the oracle for the study's index maps.
    fn flip(data: &[f32], dims: Dims, axis: usize) -> Vec<f32> {
        let mut out = vec![0f32; data.len()];
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                let (si, sj) = if axis == 0 { (dims[0] - 1 - i, j) } else { (i, dims[1] - 1 - j) };
                let d = (i * dims[1] + j) * dims[2];
                let s = (si * dims[1] + sj) * dims[2];
                out[d..d + dims[2]].copy_from_slice(&data[s..s + dims[2]]);
            }
        }
        out
    }

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
            let mut d = Vec::new();
            for s in x.data.chunks(n) {
                seen.push(s.to_vec());
                d.extend_from_slice(s);
                d.extend(std::iter::repeat_n(3.0, n));
            }
            HostTensor::new(vec![x.shape[0], 2, dims[0], dims[1], dims[2]], d)
        };
        let cfg = TtaConfig { rounds: 2, noise_std: 0.5, sample_std: false, seed: 7 };
        let mut progress = Vec::new();
        let out = {
            let mut models: [&mut dyn Predictor; 1] = [&mut m];
            infer(&img, dims, &mut models, &wcfg, Some(&cfg), &mut |p| progress.push((p.done, p.total))).unwrap()
        };
        // 7 passes of one window, batched 2 at a time across passes
        assert_eq!(progress, vec![(2, 7), (4, 7), (6, 7), (7, 7)]);
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[0], img);
        for r in 0..2 {
            let noised = &seen[1 + 3 * r];
            assert_eq!(noised, &add_noise(&img, &cfg, 0, r).unwrap());
            let d: f64 = noised.iter().zip(&img).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / n as f64;
            assert!(d.sqrt() > 0.2 && d.sqrt() < 1.0, "noise rms {}", d.sqrt());
            assert_eq!(seen[2 + 3 * r], flip(noised, dims, 0));
            assert_eq!(seen[3 + 3 * r], flip(noised, dims, 1));
        }
        assert_ne!(seen[1], seen[4], "rounds draw fresh noise");
        // the mean of channel 0: (img + sum over rounds of 3 x noised) / 7, flips undone
        for p in 0..n {
            let want = (img[p] + (0..2).map(|r| 3.0 * seen[1 + 3 * r][p]).sum::<f32>()) / 7.0;
            assert!((out.data[p] - want).abs() < 1e-4, "{p}");
            assert!((out.data[n + p] - 3.0).abs() < 1e-6);
        }
    }

    /// The noise law (standard deviation drawn in [0, std), normal per voxel), its
    /// independence of the thread count, and of (model, round).
    #[test]
    fn noise_is_seeded_per_model_and_round_and_thread_independent() {
        let img = vec![1f32; 300_000];
        let cfg = TtaConfig { rounds: 4, noise_std: 0.5, sample_std: false, seed: 3 };
        let a = add_noise(&img, &cfg, 1, 2).unwrap();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(a, one.install(|| add_noise(&img, &cfg, 1, 2).unwrap()));
        assert_ne!(a, add_noise(&img, &cfg, 1, 3).unwrap());
        assert_ne!(a, add_noise(&img, &cfg, 0, 2).unwrap());
        let z: Vec<f64> = a.iter().map(|&v| (v as f64 - 1.0) / 0.5).collect();
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "mean {mean} var {var}");
        // chunks are not copies of each other
        assert_ne!(a[..100], a[1 << 16..(1 << 16) + 100]);
        // sampled std: uniform in [0, 0.5) per round
        let s = TtaConfig { sample_std: true, ..cfg };
        let stds: Vec<f64> = (0..20)
            .map(|r| {
                let v = add_noise(&img[..20_000], &s, 0, r).unwrap();
                (v.iter().map(|&x| (x as f64 - 1.0).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
            })
            .collect();
        assert!(stds.iter().all(|&x| x < 0.5) && stds.iter().any(|&x| x < 0.2) && stds.iter().any(|&x| x > 0.3));
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
        let out = infer(&img, dims, &mut models, &wcfg, None, &mut |_| {}).unwrap();
        assert!(out.data.iter().all(|&v| (v - 2.5).abs() < 1e-6));

        let mut id = |x: &HostTensor| -> Result<HostTensor> {
            let mut d = Vec::new();
            for s in x.data.chunks(32) {
                d.extend_from_slice(s);
                d.extend_from_slice(s);
            }
            HostTensor::new(vec![x.shape[0], 2, 4, 4, 2], d)
        };
        let cfg = TtaConfig::default();
        let mut models: [&mut dyn Predictor; 1] = [&mut id];
        let r1 = infer(&img, dims, &mut models, &wcfg, Some(&cfg), &mut |_| {}).unwrap();
        let r2 = infer(&img, dims, &mut models, &wcfg, Some(&cfg), &mut |_| {}).unwrap();
        assert_eq!(r1, r2, "seeded");
        let other = TtaConfig { seed: 1, ..cfg };
        let r3 = infer(&img, dims, &mut models, &wcfg, Some(&other), &mut |_| {}).unwrap();
        assert_ne!(r1, r3);
        assert!(infer(&img, dims, &mut [], &wcfg, None, &mut |_| {}).is_err());
    }
}
