//! fmseg inside another program: a scanner's or a PACS node's software builds a [`Segmenter`]
//! once at start-up and turns each finished series into a mask, from Rust or, through the C
//! ABI ([`capi`], `include/fmseg.h`), from C, C++, C# or Python.
//!
//! ```no_run
//! use fmseg::embed::{Segmenter, SegmenterOptions};
//!
//! let segmenter = Segmenter::new(&SegmenterOptions::new("weights/fmseg-unet25d.fmw"))?;
//! let result = segmenter.segment_path(std::path::Path::new("study/series-3"))?;
//! println!("{:.2} ml of fat metaplasia in {:.2} s", result.findings.fm_volume_ml, result.timings.total);
//! # Ok::<(), fmseg::Error>(())
//! ```
//!
//! Slices that arrive one by one go through a [`SeriesBuilder`]; its volume goes to
//! [`Segmenter::segment`].

pub mod capi;
mod segmenter;
mod series_builder;

pub use segmenter::{Segmentation, Segmenter, SegmenterOptions, SeriesPlan, Timings};
pub use series_builder::{SeriesBuilder, SliceGeometry};
