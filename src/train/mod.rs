//! Training: a gradient tape over the CPU engine's ops, the backward kernels, the losses.

pub mod grad_ops;
pub mod loss;
pub mod step;
pub mod tape;
