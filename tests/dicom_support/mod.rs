//! Shared helpers of the DICOM suites: synthetic series, tool lookup (runs of the binary and of
//! peer tools: `crate::common::cli`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fmseg::io::dicom::{MrSeriesMeta, Rescale, StoredSamples, StoredVolume};
use fmseg::volume::Affine;

/// An affine with the given in-plane spacings `[column step, row step]`, slice spacing, a
/// rotation of `tilt_deg` about the L-R axis (oblique axial) and an origin.
pub fn oblique_affine(col_step: f64, row_step: f64, slice_step: f64, tilt_deg: f64, origin: [f64; 3]) -> Affine {
    let t = tilt_deg.to_radians();
    let x = [1.0, 0.0, 0.0];
    let y = [0.0, t.cos(), -t.sin()];
    let z = [0.0, t.sin(), t.cos()]; // x cross y
    let mut a = fmseg::volume::IDENTITY;
    for r in 0..3 {
        a[r][0] = x[r] * col_step;
        a[r][1] = y[r] * row_step;
        a[r][2] = z[r] * slice_step;
        a[r][3] = origin[r];
    }
    a
}

/// A 16-bit volume whose stored values are all distinct (`idx - offset`), so any voxel can be
/// found by value in a converted file.
pub fn unique_i16(dims: [usize; 3], affine: Affine, rescale: Rescale) -> StoredVolume {
    let n = dims.iter().product::<usize>();
    assert!(n < 60000);
    let samples = (0..n).map(|i| (i as i64 - (n as i64) / 2) as i16).collect();
    StoredVolume::new(dims, StoredSamples::I16(samples), affine, vec![rescale]).unwrap()
}

/// A smooth 16-bit (signed, with negative values) volume: realistic for lossy codecs.
pub fn smooth_i16(dims: [usize; 3], affine: Affine, rescale: Rescale) -> StoredVolume {
    let [ni, nj, nk] = dims;
    let mut samples = Vec::with_capacity(ni * nj * nk);
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                let v = 900.0 * ((i as f64) * 0.21).sin() * ((j as f64) * 0.13 + k as f64 * 0.5).cos() + 300.0;
                samples.push(v.round() as i16);
            }
        }
    }
    StoredVolume::new(dims, StoredSamples::I16(samples), affine, vec![rescale]).unwrap()
}

/// A smooth 8-bit volume (for JPEG baseline).
pub fn smooth_u8(dims: [usize; 3], affine: Affine) -> StoredVolume {
    let [ni, nj, nk] = dims;
    let mut samples = Vec::with_capacity(ni * nj * nk);
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                let v = 128.0 + 90.0 * ((i as f64) * 0.15).sin() * ((j as f64) * 0.11 + k as f64 * 0.4).cos();
                samples.push(v.round() as u8);
            }
        }
    }
    StoredVolume::new(dims, StoredSamples::U8(samples), affine, vec![Rescale::IDENTITY]).unwrap()
}

pub fn meta(seed: &str, series_number: i64, description: &str) -> MrSeriesMeta {
    MrSeriesMeta {
        uid_seed: seed.into(),
        series_number,
        series_description: description.into(),
        protocol_name: description.to_ascii_lowercase().replace(' ', "_"),
        ..MrSeriesMeta::default()
    }
}

/// A program on PATH, or `None` with a visible skip notice. With `FMSEG_REQUIRE_DICOM_TOOLS`
/// set (CI, after scripts/install-debian-deps.sh) a missing tool is a failure, not a skip.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    assert!(
        std::env::var_os("FMSEG_REQUIRE_DICOM_TOOLS").is_none(),
        "`{name}` not found on PATH but FMSEG_REQUIRE_DICOM_TOOLS is set (run scripts/install-debian-deps.sh)"
    );
    eprintln!("SKIPPED: `{name}` not found on PATH (run scripts/install-debian-deps.sh)");
    None
}

/// The files of a directory, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

/// Largest absolute difference between two affines.
pub fn affine_diff(a: &Affine, b: &Affine) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Rewrite one DICOM file in place through dicom-object.
pub fn rewrite(path: &Path, f: impl FnOnce(&mut dicom_object::DefaultDicomObject)) {
    let mut obj = dicom_object::open_file(path).unwrap();
    f(&mut obj);
    obj.write_to_file(path).unwrap();
}
