//! What can go wrong reading or writing DICOM, one variant per case a caller may want to tell
//! apart (the segment command refuses non-MR input; a batch job may skip a broken series and go
//! on). Every message names the series and/or file and says what is wrong.

use std::path::{Path, PathBuf};

fn show(p: &Path) -> std::path::Display<'_> {
    p.display()
}

#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// The path holds no DICOM image at all.
    #[error(
        "{}: no DICOM image found ({skipped} non-DICOM file(s), {non_image} non-image DICOM object(s) skipped)",
        show(path)
    )]
    NoImages { path: PathBuf, skipped: usize, non_image: usize },

    /// A file with the DICOM preamble (`DICM` at byte 128) that cannot be parsed.
    #[error("{}: has a DICOM preamble but cannot be read: {reason}", show(path))]
    Unreadable { path: PathBuf, reason: String },

    /// A file without the preamble that is named like the series' images: a damaged slice.
    #[error("{}: not a DICOM file: {reason}", show(path))]
    DamagedSlice { path: PathBuf, reason: String },

    /// A required attribute is missing or holds an unusable value.
    #[error("{}: {msg}", show(path))]
    Malformed { path: PathBuf, msg: String },

    /// `--series UID` names no series under the path.
    #[error("{}: no series with SeriesInstanceUID {uid}; available: {}", show(path), available.join(", "))]
    SeriesNotFound { path: PathBuf, uid: String, available: Vec<String> },

    /// Several series where the caller expected exactly one.
    #[error("{}: {} series found where one was expected ({}); choose one with --series UID", show(path), series.len(), series.join("; "))]
    MixedSeries { path: PathBuf, series: Vec<String> },

    /// The series (chosen or the only one) is not MR and the caller requires MR.
    #[error("series {uid}{}: modality is {modality:?}, but an MR series is required", describe(description))]
    NotMr { uid: String, description: String, modality: String },

    /// Two slices (or frames) at the same position along the slice normal.
    #[error("series {series}: duplicate slice position {position:.3} mm along the slice normal: {first} and {second}")]
    DuplicateSlice { series: String, position: f64, first: String, second: String },

    /// A gap of about twice (or more) the median spacing: at least one slice is missing.
    #[error("series {series}: slice missing between {before} and {after}: gap {gap:.3} mm, median spacing {median:.3} mm (about {missing} slice(s) missing)")]
    MissingSlice { series: String, before: String, after: String, gap: f64, median: f64, missing: usize },

    /// Spacing that varies more than the tolerance without a whole slice missing.
    #[error("series {series}: non-uniform slice spacing: {gap:.4} mm between {before} and {after}, median {median:.4} mm (tolerance {tolerance:.4} mm)")]
    NonUniformSpacing { series: String, before: String, after: String, gap: f64, median: f64, tolerance: f64 },

    /// Orientation, matrix size, pixel spacing or stacking differs between the slices of a series.
    #[error("series {series}: {msg}")]
    InconsistentGeometry { series: String, msg: String },

    /// An image file without a Pixel Data element.
    #[error("{}: no pixel data (7FE0,0010) (missing, or the file is truncated before it)", show(path))]
    NoPixelData { path: PathBuf },

    /// Pixel data shorter than rows x columns x frames x bytes per sample.
    #[error("{}: truncated pixel data: {detail}", show(path))]
    TruncatedPixelData { path: PathBuf, detail: String },

    /// Colour, palette, MONOCHROME1 or an unsupported sample layout.
    #[error("{}: unsupported pixel format: {msg}", show(path))]
    UnsupportedPixels { path: PathBuf, msg: String },

    /// The codec failed (corrupt compressed stream, unknown transfer syntax).
    #[error("{}: cannot decode pixel data (transfer syntax {transfer_syntax}): {reason}", show(path))]
    Decode { path: PathBuf, transfer_syntax: String, reason: String },

    /// The writer was given something it cannot represent.
    #[error("cannot write DICOM: {0}")]
    InvalidWrite(String),

    // The OS error is part of the message, not a `source`, so an error chain prints it once.
    #[error("{}: {err}", show(path))]
    Io { path: PathBuf, err: std::io::Error },
}

fn describe(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

impl From<DicomError> for crate::error::Error {
    fn from(e: DicomError) -> Self {
        crate::error::Error::Dicom(Box::new(e))
    }
}

impl DicomError {
    /// The file the error is about, when it is about one file.
    pub fn file(&self) -> Option<&Path> {
        match self {
            DicomError::Unreadable { path, .. }
            | DicomError::DamagedSlice { path, .. }
            | DicomError::Malformed { path, .. }
            | DicomError::NoPixelData { path }
            | DicomError::TruncatedPixelData { path, .. }
            | DicomError::UnsupportedPixels { path, .. }
            | DicomError::Decode { path, .. }
            | DicomError::Io { path, .. } => Some(path),
            _ => None,
        }
    }
    pub(crate) fn malformed(path: &Path, msg: impl Into<String>) -> Self {
        DicomError::Malformed { path: path.to_path_buf(), msg: msg.into() }
    }
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DicomError::Io { path: path.to_path_buf(), err: source }
    }
}

/// The library's `Result` with this module's error type inside (`?` converts into the crate error).
pub(crate) type DResult<T> = std::result::Result<T, DicomError>;
