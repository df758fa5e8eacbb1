//! The 2.5D-AttentionUNet: its parameter catalog, blocks and graph.

pub mod blocks;
pub mod catalog;
pub mod init;
pub mod unet25d;

pub use unet25d::{Output, Unet25d, PROBE_STAGES};
