//! Training: data and augmentation, runs that resume, checkpoints PyTorch loads.
//!
//! One test binary per layer of the project (each links the whole crate at opt-level 3, so
//! fewer binaries build faster); each file below was its own binary once.

#[path = "../common/mod.rs"]
mod common;

mod train_checkpoint;
mod train_data;
mod train_run;
