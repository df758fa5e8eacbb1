//! The small per-op vectors of the CPU engine (per-channel partial sums, their totals, the
//! normalisation's parameters, tap offsets), kept by the backend between ops. A forward pass
//! runs hundreds of ops; with these reused, an op allocates nothing once every layer size has
//! run (the embedding API's promise: no allocation on the hot path after warm-up).

#[derive(Default)]
pub struct Scratch {
    /// Per-chunk partial `(sum, sum of squares)` of a parallel pass, `chunks x channels`.
    pub slots: Vec<(f64, f64)>,
    /// Their totals, one per channel.
    pub totals: Vec<(f64, f64)>,
    /// Instance-norm parameters, `mean_hi | mean_lo | rstd`, `3 x channels`.
    pub params: Vec<f32>,
    /// Tap offsets of a convolution, in floats.
    pub offsets: Vec<usize>,
}

/// `v` cleared and refilled with `n` copies of `x`, within its capacity once it has grown.
pub fn refill<T: Clone>(v: &mut Vec<T>, n: usize, x: T) -> &mut [T] {
    v.clear();
    v.resize(n, x);
    v
}
