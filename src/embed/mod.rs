//! fmseg inside another program: a scanner's or a PACS node's software builds a [`Segmenter`]
//! once at start-up and turns each finished series into a mask, from Rust or, through the C
//! ABI ([`capi`], `include/fmseg.h`), from C, C++, C# or Python.
//!
//! ```
//! use fmseg::embed::{synthetic_series, Segmenter, SegmenterOptions, SeriesPlan};
//!
//! // Once, at start-up: weights read and prepared, one warm-up series of the planned size.
//! let mut options = SegmenterOptions::new(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/fmseg-unet25d.fmw"));
//! options.plan = SeriesPlan { dims: [160, 144, 10], spacing_mm: [1.2, 1.2, 6.0] };
//! let segmenter = Segmenter::new(&options)?;
//!
//! // Then per series: a volume in, its mask on the same grid out.
//! let series = synthetic_series(&options.plan, 1)?;
//! let result = segmenter.segment(&series)?;
//! assert_eq!(result.mask.dims, series.dims);
//! println!(
//!     "{:.2} ml of fat metaplasia in {:.2} s ({:.2} s in the network)",
//!     result.findings.fm_volume_ml, result.timings.total, result.timings.network
//! );
//! // A DICOM directory or NIfTI file: segmenter.segment_path(Path::new("study/series-3"))
//! # Ok::<(), fmseg::Error>(())
//! ```
//!
//! Slices that arrive one by one go through a [`SeriesBuilder`]; its volume goes to
//! [`Segmenter::segment`].

pub mod capi;
pub mod latency;
mod segmenter;
mod series_builder;

pub use segmenter::{synthetic_series, Segmentation, Segmenter, SegmenterOptions, SeriesPlan, Timings};
pub use series_builder::{slice_of, SeriesBuilder, SliceGeometry};
