//! The 2.5D-AttentionUNet and the axSpA classifier: their descriptions (`catalog`), blocks and
//! graphs, and what a pass costs.

pub mod blocks;
pub mod catalog;
pub mod classifier;
pub mod cost;
pub mod init;
pub mod unet25d;

pub use unet25d::{Output, Unet25d, PROBE_STAGES};
