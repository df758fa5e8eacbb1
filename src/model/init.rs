//! Randomly initialised weights with PyTorch's default Conv3d / ConvTranspose3d initialisation
//! (kaiming-uniform with a = sqrt(5): weights and biases uniform in +-1/sqrt(fan_in)), seeded.
//! For benchmarks and tests that need a network but no trained weights.

use crate::model::catalog::{layers, Layer, LayerKind};
use crate::tensor::HostTensor;
use crate::weights::StateDict;

/// SplitMix64: small, fast, and good enough for weights and noise.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-b, b).
    pub fn symmetric(&mut self, b: f64) -> f32 {
        ((self.unit() * 2.0 - 1.0) * b) as f32
    }
}

/// A full state dict (aliases included) of randomly initialised weights.
pub fn random_state_dict(seed: u64) -> StateDict {
    random_state_dict_for(&layers(), seed)
}

/// Any network's layers (the classifier's: `ClassifierSpec::layers`) initialised as
/// PyTorch's defaults do: uniform in `+-1/sqrt(fan_in)`.
pub fn random_state_dict_for(layers: &[Layer], seed: u64) -> StateDict {
    let mut rng = SplitMix(seed);
    let mut sd = StateDict::new();
    let tensors_of = |prefix: &str| layers.iter().find(|l| l.prefix == prefix).map(|l| l.tensors()).unwrap_or_default();
    for layer in layers {
        if let Some(orig) = &layer.alias_of {
            for ((key, _), (okey, _)) in layer.tensors().into_iter().zip(tensors_of(orig)) {
                let t = sd.get(&okey).cloned().expect("alias after original");
                sd.insert(key, t);
            }
            continue;
        }
        let fan_in = match layer.kind {
            LayerKind::Conv(s) => s.cin * s.taps(),
            // PyTorch computes a transposed conv's fan_in from weight dim 1 (cout).
            LayerKind::ConvT(s) => s.cout * s.k.iter().product::<usize>(),
        };
        let bound = 1.0 / (fan_in as f64).sqrt();
        for (key, shape) in layer.tensors() {
            let n = shape.iter().product();
            let data = (0..n).map(|_| rng.symmetric(bound)).collect();
            sd.insert(key, HostTensor { shape, data });
        }
    }
    sd
}

/// A random input `(n, 1, dims)` with unit-ish spread (what a z-scored image looks like).
pub fn random_input(seed: u64, n: usize, dims: crate::tensor::Dims) -> HostTensor {
    let mut rng = SplitMix(seed);
    let len = n * dims[0] * dims[1] * dims[2];
    HostTensor { shape: vec![n, 1, dims[0], dims[1], dims[2]], data: (0..len).map(|_| rng.symmetric(1.7)).collect() }
}
