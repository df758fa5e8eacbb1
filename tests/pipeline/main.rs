//! The clinical pipeline: the MONAI case fixture, the network inside the pipeline, the statistics
//! of `fmseg evaluate` against SciPy, scikit-learn and MONAI, the clinical variables' readers and
//! features, the phantom generator.
//!
//! One test binary per layer of the project (each links the whole crate at opt-level 3, so
//! fewer binaries build faster); each file below was its own binary once.

#[path = "../common/mod.rs"]
mod common;

mod classifier;
mod clinical;
mod phantom;
mod pipeline_fixture;
mod pipeline_network;
mod stats;
