//! The JSON written next to each case (`case_XXX/manifest.json`) and for a whole set
//! (`manifest.json`): who the patient is, how the scan was made, what the scanner did, and the
//! ground truth (each lesion's side, bone, shape, voxel count, volume and centroid).

use super::acquisition::Acquisition;
use super::anatomy::{Bone, Side};
use super::confounders::Confounder;
use super::lesions::LesionShape;
use super::patient::{Diagnosis, Patient};
use super::scanner::ScannerEffects;
use super::tissue::Contrast;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bumped whenever the same seed would give a different case. Not for a new manifest field that
/// leaves every case as it was: `patient.esr_mm_per_h` appeared in version 2 without changing
/// any image, mask or other field (it has its own random stream), and manifests written before
/// it read back with ESR missing.
pub const GENERATOR_VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LesionRecord {
    /// 1-based, in the order of this list.
    pub id: u32,
    pub side: Side,
    pub bone: Bone,
    pub shape: LesionShape,
    /// Mask voxels attributed to this lesion (each mask voxel belongs to exactly one lesion).
    pub voxels: u64,
    pub volume_ml: f64,
    pub centroid_lps_mm: [f64; 3],
    pub blurred_margin: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseManifest {
    pub generator: String,
    pub generator_version: u32,
    pub seed: u64,
    pub patient: Patient,
    pub acquisition: Acquisition,
    pub scanner: ScannerEffects,
    pub artefacts: Vec<String>,
    pub contrast: Contrast,
    /// Lesions that cover at least one mask voxel.
    pub lesions: Vec<LesionRecord>,
    pub fm_voxels: u64,
    pub fm_volume_ml: f64,
    /// Look-alikes and other findings present, with no mask label.
    pub confounders: Vec<Confounder>,
}

/// One line of the set manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetEntry {
    pub id: String,
    pub seed: u64,
    pub diagnosis: Diagnosis,
    pub lesions: usize,
    pub fm_volume_ml: f64,
    pub dims: [usize; 3],
    /// Paths relative to the set directory.
    pub files: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetManifest {
    pub generator: String,
    pub generator_version: u32,
    pub set_seed: u64,
    pub axspa_fraction: f64,
    pub cases: Vec<SetEntry>,
}

/// Writes pretty JSON to `path` via a temporary file in the same directory and a rename, so a
/// failure never leaves a partial file.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::io::write_atomic(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}
