//! DICOM input and output.
//!
//! Input: [`list_series`] / [`scan_series`] find every image series under a path (a directory
//! tree, one file, or an Enhanced multi-frame object); [`load_volume`] / [`load_series`] choose
//! one ([`Selection`]: by UID, or the rules in [`select`]) and load it into a
//! [`crate::volume::Volume`] with an LPS affine ([`geometry`] documents the axis convention:
//! `i` = column, `j` = row, `k` = slice along the normal). Output: [`write_mr_series`] (MR Image
//! Storage, one file per slice), [`write_enhanced_mr`] (Enhanced MR, one multi-frame file) and
//! [`seg_object`] (the FM mask as a DICOM SEG of its source series).
//!
//! Nothing in a file's content can make this module panic: every problem is a
//! [`DicomError`] naming the series and/or file.
//!
//! Layout: `scan` (finding files; `lengths` checks declared lengths before dicom-rs reads) -> `header` (attributes) -> `info` + `weighting` (summaries)
//! -> `select` (choosing) -> `geometry` (stacking) + `pixels` (decoding) -> `load`; `write/`.

pub mod geometry;
mod guard;
pub mod header;
pub mod info;
mod lengths;
pub mod load;
pub mod net;
pub mod pixels;
pub mod scan;
pub mod select;
pub mod weighting;
pub mod write;

/// Lives with the crate's error type (layer 0), which boxes it.
pub use crate::error::dicom::DicomError;
pub use header::Rescale;
pub use info::SeriesInfo;
pub use load::{list_series, load_series, load_volume, scan_series, Index, LoadedSeries, SeriesList, SliceSource};
pub use select::{choose, Choice, Selection, SeriesChoice};
pub use write::{
    deterministic_uid, encode_seg, seg_object, write_enhanced_mr, write_mr_series, MrSeriesMeta, SegDescription,
    StoredSamples, StoredVolume,
};
