//! Hospital file formats at the crate boundary: every reader produces a [`crate::volume::Volume`]
//! (LPS affine), every writer consumes one.

pub mod dicom;
