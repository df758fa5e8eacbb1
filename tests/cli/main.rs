//! The `fmseg` binary end to end: segment, batch and serve (`batch`, `batch/node.rs`), the DICOM
//! commands, evaluate, forward, phantom, bench, and the C ABI through a C program and Python (`embed_c`).
//!
//! One test binary per layer of the project (each links the whole crate at opt-level 3, so
//! fewer binaries build faster); each file below was its own binary once.

#[path = "../common/mod.rs"]
mod common;
#[path = "../dicom_support/mod.rs"]
mod dicom_support;

mod batch;
mod bench_cli;
mod classify;
mod cli_forward;
mod dicom_cli;
mod embed_c;
mod evaluate;
mod phantom_cli;
mod segment;
