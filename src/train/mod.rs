//! Training.

pub mod augment;
pub mod data;
pub mod folds;
pub mod loader;
