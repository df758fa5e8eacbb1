//! The 2.5D-AttentionUNet: its description (`catalog`), blocks and graph, and what a pass costs.

pub mod blocks;
pub mod catalog;
pub mod cost;
pub mod init;
pub mod unet25d;

pub use unet25d::{Output, Unet25d, PROBE_STAGES};
