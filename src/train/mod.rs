//! Training: optimiser and schedule, validation metrics, run directories (checkpoints,
//! metrics CSV, resume).

pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod run_dir;
