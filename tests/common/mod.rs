//! Shared test helpers: where the reference fixtures live, and a skip notice when they don't;
//! the op-test matrix every backend runs ([`op_cases`]); running the `fmseg` binary ([`cli`]).
#![allow(dead_code)]

pub mod cli;
pub mod op_cases;

use std::path::PathBuf;

/// The reference fixtures: `FMSEG_REFERENCE_FIXTURES`, else `../shared/fixtures/reference`.
/// Where neither exists (a user's fresh clone) the calling test prints a notice and passes as
/// skipped; `.ci/run` sets the variable, and then a missing directory is a failure.
pub fn fixtures_dir() -> Option<PathBuf> {
    if let Ok(v) = std::env::var("FMSEG_REFERENCE_FIXTURES") {
        let p = PathBuf::from(v);
        assert!(p.is_dir(), "FMSEG_REFERENCE_FIXTURES={} is not a directory", p.display());
        return Some(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/reference");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: reference fixtures not found (set FMSEG_REFERENCE_FIXTURES)");
        None
    }
}

/// A fixture file; panics (a test failure) if the fixture directory exists but the file does not.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let p = fixtures_dir()?.join(name);
    assert!(p.is_file(), "missing reference fixture {}", p.display());
    Some(p)
}

/// A small deterministic generator (SplitMix64) so tests need no extra crates.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock unless `FMSEG_TEST_SEED` is set; the seed is printed so a failure
    /// can be replayed.
    pub fn fresh(label: &str) -> Self {
        let seed = std::env::var("FMSEG_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{label}: FMSEG_TEST_SEED={seed}");
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn tensor(&mut self, shape: &[usize]) -> fmseg::tensor::HostTensor {
        let n = shape.iter().product();
        fmseg::tensor::HostTensor { shape: shape.to_vec(), data: (0..n).map(|_| self.uniform()).collect() }
    }
}

/// A reference case fixture (`case_seed0_*.safetensors`): float tensors, probe indices and
/// float64 probe values, read with their own dtypes (indices exceed float32's exact integers).
pub struct Case {
    bytes: Vec<u8>,
}

impl Case {
    pub fn open(path: &std::path::Path) -> Case {
        Case { bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }
    fn view(&self, key: &str) -> (Vec<usize>, Vec<u8>, safetensors::Dtype) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("fixture is safetensors");
        let v = st.tensor(key).unwrap_or_else(|_| panic!("fixture has no tensor {key}"));
        (v.shape().to_vec(), v.data().to_vec(), v.dtype())
    }
    pub fn f32(&self, key: &str) -> fmseg::tensor::HostTensor {
        let (shape, data, dt) = self.view(key);
        assert_eq!(dt, safetensors::Dtype::F32, "{key}");
        let data = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        fmseg::tensor::HostTensor::new(shape, data).unwrap()
    }
    pub fn f64(&self, key: &str) -> Vec<f64> {
        let (_, data, dt) = self.view(key);
        assert_eq!(dt, safetensors::Dtype::F64, "{key}");
        data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    }
    pub fn i64(&self, key: &str) -> Vec<i64> {
        let (_, data, dt) = self.view(key);
        assert_eq!(dt, safetensors::Dtype::I64, "{key}");
        data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

/// Relative L2 error of f32 values against float64 references.
pub fn rel_l2_f64(got: &[f32], want: &[f64]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}
