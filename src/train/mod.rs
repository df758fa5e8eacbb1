//! Training: a gradient tape over the CPU engine's ops and their backward kernels, the
//! reference's losses, data sources with its augmentation, optimiser and schedule, validation
//! metrics, and run directories with atomic checkpoints.

pub mod augment;
pub mod checkpoint;
pub mod classifier;
pub mod classifier_data;
pub mod data;
pub mod folds;
pub mod grad_ops;
pub mod loader;
pub mod loss;
pub mod optim;
pub mod run_dir;
pub mod step;
pub mod tape;
pub mod trainer;
pub mod winograd_grad;
