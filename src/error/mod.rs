//! The crate's error type. Every message names the thing the user can act on:
//! the file, the tensor key, the shape that was expected.

use std::path::PathBuf;

pub mod dicom;

pub use dicom::DicomError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS error is part of the message (not a `source`), so an error chain prints it once.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A file that exists but is not what it claims to be (corrupt, truncated, wrong format).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// Weights that do not fit the network.
    #[error("weights {path}: {msg}")]
    Weights { path: PathBuf, msg: String },
    /// A tensor or volume of the wrong shape for the operation asked of it.
    #[error("shape: {0}")]
    Shape(String),
    /// Invalid values (NaN, Inf) in an input.
    #[error("{0}")]
    Value(String),
    /// A backend cannot run (no GPU, too little memory, unsupported device).
    #[error("device: {0}")]
    Device(String),
    /// A DICOM input/output problem; typed so callers can tell cases apart ([`DicomError`]).
    #[error(transparent)]
    Dicom(Box<DicomError>),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), err: source }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }
    pub fn weights(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Weights { path: path.into(), msg: msg.into() }
    }
}
