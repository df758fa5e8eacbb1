//! Ops against their oracles: the CPU kernels against float64 (`op_matrix`, the case tables of
//! `common::op_cases`), the backward ops against finite differences (`train_ops`, `train_grad`),
//! the parameter catalog, the network against the reference fixtures (`parity`) and the PyTorch
//! baseline (`torch_baseline`).
//!
//! One test binary per layer of the project (each links the whole crate at opt-level 3, so
//! fewer binaries build faster); each file below was its own binary once.

#[path = "../common/mod.rs"]
mod common;

mod catalog;
mod op_matrix;
mod parity;
mod torch_baseline;
mod train_grad;
mod train_ops;
