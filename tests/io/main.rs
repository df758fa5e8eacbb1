//! Readers and writers on real formats: DICOM series and peers (`dicom_io`, `dicom_tools`), the
//! fuzz targets' regression cases and mutations (`io_formats`), weights (`weights`).
//!
//! One test binary per layer of the project (each links the whole crate at opt-level 3, so
//! fewer binaries build faster); each file below was its own binary once.

#[path = "../common/mod.rs"]
mod common;
#[path = "../dicom_support/mod.rs"]
mod dicom_support;

mod dicom_io;
mod dicom_tools;
mod io_formats;
mod weights;
