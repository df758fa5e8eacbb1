//! Seeded randomness. Every random choice of a case comes from ChaCha8 streams keyed by the case
//! seed and a fixed stream number per concern (anatomy, lesions, scanner, the noise of slice `k`),
//! so a case is a pure function of its seed, independent of thread count and scheduling, and a
//! change to one concern's draws does not shift the others. ChaCha8 is value-stable across
//! `rand_chacha` releases.

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Stream numbers: one per concern.
pub mod stream {
    pub const PATIENT: u64 = 1;
    pub const ACQUISITION: u64 = 2;
    pub const ANATOMY: u64 = 3;
    pub const LESIONS: u64 = 4;
    pub const CONFOUNDERS: u64 = 5;
    pub const SCANNER: u64 = 6;
    pub const TEXTURE: u64 = 7;
    /// The patient's ESR, added after the others: its own stream, so no earlier draw moved.
    pub const ESR: u64 = 8;
    /// Slice `k`'s noise uses stream `NOISE_BASE + k`.
    pub const NOISE_BASE: u64 = 1 << 32;
}

pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(stream);
        Rng(r)
    }

    /// Uniform in `[a, b)`.
    pub fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.0.random::<f64>()
    }

    pub fn uniform_f32(&mut self, a: f32, b: f32) -> f32 {
        self.uniform(a as f64, b as f64) as f32
    }

    /// Symmetric uniform jitter in `[-a, a)`.
    pub fn jitter(&mut self, a: f32) -> f32 {
        self.uniform_f32(-a, a)
    }

    /// Log-uniform in `[a, b)`, `0 < a < b`.
    pub fn log_uniform(&mut self, a: f64, b: f64) -> f64 {
        (a.ln() + (b.ln() - a.ln()) * self.0.random::<f64>()).exp()
    }

    pub fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let z: f64 = StandardNormal.sample(&mut self.0);
        mean + sd * z
    }

    /// Normal, clamped to `[lo, hi]`.
    pub fn normal_clamped(&mut self, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
        self.normal(mean, sd).clamp(lo, hi)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.0.random::<f64>() < p
    }

    /// Integer in `[a, b]` inclusive.
    pub fn int(&mut self, a: i64, b: i64) -> i64 {
        self.0.random_range(a..=b)
    }

    /// Index drawn with the given (unnormalised, non-negative) weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.0.random::<f64>() * total;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        weights.len() - 1
    }

    /// Poisson-distributed count (Knuth's method; fine for the small means used here).
    pub fn poisson(&mut self, mean: f64) -> u32 {
        let l = (-mean).exp();
        let mut k = 0u32;
        let mut p = 1.0;
        loop {
            p *= self.0.random::<f64>();
            if p <= l || k > 1000 {
                return k;
            }
            k += 1;
        }
    }

    /// A standard normal pair (ziggurat), in `f32`, for per-voxel noise.
    #[inline]
    pub fn normal_pair_f32(&mut self) -> (f32, f32) {
        let a: f64 = StandardNormal.sample(&mut self.0);
        let b: f64 = StandardNormal.sample(&mut self.0);
        (a as f32, b as f32)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.random::<u64>()
    }
}

/// The seed of case `index` in a set made from `set_seed` (SplitMix64 finaliser over both), so
/// `fmseg phantom --seed S` case `i` can be regenerated alone.
pub fn case_seed(set_seed: u64, index: u64) -> u64 {
    let mut z = set_seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| 0).scan(Rng::new(7, 1), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).map(|_| 0).scan(Rng::new(7, 1), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..4).map(|_| 0).scan(Rng::new(7, 2), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(case_seed(1, 0), case_seed(1, 1));
        assert_ne!(case_seed(1, 0), case_seed(2, 0));
    }

    #[test]
    fn poisson_mean_is_close() {
        let mut r = Rng::new(3, 9);
        let n = 20000;
        let m: f64 = (0..n).map(|_| r.poisson(3.5) as f64).sum::<f64>() / n as f64;
        assert!((m - 3.5).abs() < 0.1, "poisson mean {m}");
    }
}
