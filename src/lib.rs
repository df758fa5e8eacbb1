//! fmseg: fat-metaplasia segmentation on sacroiliac-joint MRI.
//!
//! The published 2.5D-AttentionUNet (Li et al., Insights into Imaging 2024), bit-for-bit the
//! reference's function, on a multi-threaded CPU engine that is also the oracle for the CUDA
//! engine. Layers, each using only those below it:
//! `tensor` -> `backend` / `io` / `weights` -> `model` -> `engine` -> `pipeline` -> `embed` -> `cli`.
//! An application embeds fmseg through [`embed`] ([`Segmenter`], [`SeriesBuilder`], the C ABI).

// Numeric kernels index several arrays with one loop variable, and reference constants keep
// the digits they were published with.
#![allow(clippy::needless_range_loop, clippy::excessive_precision)]

pub mod backend;
pub mod cli;
pub mod embed;
pub mod engine;
pub mod error;
pub mod fuzz;
pub mod io;
pub mod linalg;
pub mod model;
pub mod phantom;
pub mod pipeline;
pub mod tensor;
pub mod train;
pub mod volume;
pub mod weights;

pub use embed::{Segmentation, Segmenter, SegmenterOptions, SeriesBuilder};
pub use error::{Error, Result};
