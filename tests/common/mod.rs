//! Shared test helpers: where the reference fixtures live, and a skip notice when they don't.
#![allow(dead_code)]

use std::path::PathBuf;

/// The reference fixtures: `FMSEG_REFERENCE_FIXTURES`, else `../shared/fixtures/reference`.
/// Where neither exists (a user's fresh clone) the calling test prints a notice and passes as
/// skipped; `.ci/run` sets the variable, and then a missing directory is a failure.
pub fn fixtures_dir() -> Option<PathBuf> {
    if let Ok(v) = std::env::var("FMSEG_REFERENCE_FIXTURES") {
        let p = PathBuf::from(v);
        assert!(p.is_dir(), "FMSEG_REFERENCE_FIXTURES={} is not a directory", p.display());
        return Some(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/reference");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: reference fixtures not found (set FMSEG_REFERENCE_FIXTURES)");
        None
    }
}

/// A fixture file; panics (a test failure) if the fixture directory exists but the file does not.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let p = fixtures_dir()?.join(name);
    assert!(p.is_file(), "missing reference fixture {}", p.display());
    Some(p)
}
