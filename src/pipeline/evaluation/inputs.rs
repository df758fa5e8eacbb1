//! The files `fmseg evaluate` reads: mask sets (`SET/<id>/fm_mask.nii.gz`, as `fmseg phantom`
//! and `fmseg segment --out SET/<id>` write them), a labels CSV and scores (a CSV or
//! `DIR/<id>/classification.json`). Every error names the file, and the line or field.
//!
//! The truth (or the labels) decide the cases: each must be in every prediction set, and a
//! prediction for a case the truth does not have is ignored (a prediction directory may hold
//! more cases than the evaluated set).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::SegCase;
use crate::error::{Error, Result};
use crate::io::csv::Csv;
use crate::io::nifti;
use crate::pipeline::report::voxel_volume_ml;
use crate::volume::Affine;

/// The mask file of a case directory.
pub const MASK_FILE: &str = "fm_mask.nii.gz";
/// The classification result of a case directory.
pub const CLASSIFICATION_FILE: &str = "classification.json";
/// The probability column (CSV) or field (JSON) of a score.
pub const PROBABILITY: &str = "probability_axspa";

/// The case ids of a mask set: every directory under `dir` not starting with `.` (an
/// interrupted writer's temporary), sorted; each must hold [`MASK_FILE`].
pub fn mask_set(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let mask = entry.path().join(MASK_FILE);
        if !mask.is_file() {
            return Err(Error::format(&mask, format!("missing: case {name} of the set {} has no mask", dir.display())));
        }
        ids.push(name);
    }
    if ids.is_empty() {
        return Err(Error::format(dir, format!("no cases: no <id>/{MASK_FILE} under it")));
    }
    ids.sort();
    Ok(ids)
}

/// A binary mask (non-zero = foreground) with its grid.
pub struct Mask {
    pub path: PathBuf,
    pub dims: [usize; 3],
    pub affine: Affine,
    /// mm per axis (the affine's column lengths).
    pub spacing: [f64; 3],
    /// `|det|` of the affine (mm³), as `report.json` measures volumes.
    pub voxel_mm3: f64,
    pub data: Vec<u8>,
}

pub fn read_mask(path: &Path) -> Result<Mask> {
    if !path.is_file() {
        return Err(Error::format(path, "missing: no such mask file"));
    }
    let v = nifti::read(path)?;
    Ok(Mask {
        path: path.to_path_buf(),
        dims: v.dims,
        affine: v.affine,
        spacing: v.spacing(),
        voxel_mm3: voxel_volume_ml(&v) * 1000.0,
        data: v.data.iter().map(|&x| u8::from(x != 0.0)).collect(),
    })
}

/// The truth's 0/1 values in the prediction's voxel order: the same grid up to voxel order
/// (`truth::align_to`: both oriented to LPS, affines within its tolerance), as `segment
/// --truth` compares them. Anything else is an error naming both files.
fn truth_on(pred: &Mask, truth: &Mask) -> Result<Vec<u8>> {
    let vol = |m: &Mask| crate::volume::Volume {
        dims: m.dims,
        data: m.data.iter().map(|&v| v as f32).collect(),
        affine: m.affine,
    };
    crate::pipeline::truth::align_to(&truth.path, &vol(truth), &vol(pred)).map_err(|e| {
        Error::Shape(format!(
            "{} (dims {:?}) and {} (dims {:?}) are not on the same voxel grid: {e}",
            pred.path.display(),
            pred.dims,
            truth.path.display(),
            truth.dims
        ))
    })
}

/// The per-case metrics of each prediction set against the truth set, in the truth's case
/// order (one `Vec` per prediction set). A case missing from a prediction set, or on another
/// grid, is an error naming both.
pub fn seg_cases(truth_dir: &Path, pred_dirs: &[&Path]) -> Result<Vec<Vec<SegCase>>> {
    let ids = mask_set(truth_dir)?;
    for p in pred_dirs {
        if !p.is_dir() {
            return Err(Error::format(p, "missing: not a directory of predictions (<id>/fm_mask.nii.gz)"));
        }
        // Every case's presence first: a missing one fails before any mask is read.
        for id in &ids {
            let m = p.join(id).join(MASK_FILE);
            if !m.is_file() {
                return Err(Error::format(
                    &m,
                    format!("missing: case {id} of the truth set {} has no prediction", truth_dir.display()),
                ));
            }
        }
    }
    let mut out: Vec<Vec<SegCase>> = pred_dirs.iter().map(|_| Vec::new()).collect();
    for id in &ids {
        let truth = read_mask(&truth_dir.join(id).join(MASK_FILE))?;
        for (k, p) in pred_dirs.iter().enumerate() {
            let pred = read_mask(&p.join(id).join(MASK_FILE))?;
            let t = truth_on(&pred, &truth)?;
            let case = SegCase::of(id, &t, &pred.data, pred.dims, pred.spacing, pred.voxel_mm3)
                .map_err(|e| Error::format(&pred.path, e.to_string()))?;
            out[k].push(case);
        }
    }
    Ok(out)
}

/// `(id, is axSpA)` per case of a labels CSV (columns `id` and `label`; `axSpA` / `non-axSpA`,
/// any case, or `1` / `0`; other columns ignored), in file order.
pub fn read_labels(path: &Path) -> Result<Vec<(String, bool)>> {
    let csv = Csv::read(path)?;
    let (ci, cl) = (csv.column("id")?, csv.column("label")?);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (line, row) in &csv.rows {
        let id = csv.field(*line, row, ci)?;
        let label = csv.field(*line, row, cl)?;
        if id.is_empty() {
            return Err(Error::format(path, format!("line {line}: empty id")));
        }
        if let Some(first) = seen.insert(id.to_string(), *line) {
            return Err(Error::format(path, format!("line {line}: duplicate id {id:?} (first on line {first})")));
        }
        let positive = match label.to_ascii_lowercase().as_str() {
            "axspa" | "1" => true,
            "non-axspa" | "0" => false,
            _ => {
                return Err(Error::format(
                    path,
                    format!("line {line}: unknown label {label:?} (expected axSpA, non-axSpA, 1 or 0)"),
                ))
            }
        };
        out.push((id.to_string(), positive));
    }
    if out.is_empty() {
        return Err(Error::format(path, "no cases: a header and no rows"));
    }
    Ok(out)
}

fn probability(path: &Path, place: &str, text: &str) -> Result<f64> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        Ok(p) => Err(Error::format(path, format!("{place}: {PROBABILITY} {p} is not a probability in [0, 1]"))),
        Err(_) => Err(Error::format(path, format!("{place}: {PROBABILITY} {text:?} is not a number"))),
    }
}

/// The scores of the cases `ids`, in their order, from `source`: a CSV with columns `id` and
/// [`PROBABILITY`], or a directory of `<id>/classification.json` each with a number field
/// [`PROBABILITY`].
pub fn read_scores(source: &Path, ids: &[String]) -> Result<Vec<f64>> {
    if source.is_dir() {
        return ids.iter().map(|id| json_score(&source.join(id).join(CLASSIFICATION_FILE), id)).collect();
    }
    let csv = Csv::read(source)?;
    let (ci, cp) = (csv.column("id")?, csv.column(PROBABILITY)?);
    let mut scores: HashMap<&str, (usize, f64)> = HashMap::new();
    for (line, row) in &csv.rows {
        let id = csv.field(*line, row, ci)?;
        let p = probability(source, &format!("line {line}"), csv.field(*line, row, cp)?)?;
        if let Some((first, _)) = scores.insert(id, (*line, p)) {
            return Err(Error::format(source, format!("line {line}: duplicate id {id:?} (first on line {first})")));
        }
    }
    ids.iter()
        .map(|id| {
            scores
                .get(id.as_str())
                .map(|&(_, p)| p)
                .ok_or_else(|| Error::format(source, format!("missing: no score for case {id}")))
        })
        .collect()
}

fn json_score(path: &Path, id: &str) -> Result<f64> {
    if !path.is_file() {
        return Err(Error::format(path, format!("missing: no classification of case {id}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not JSON: {e}")))?;
    match v.get(PROBABILITY) {
        Some(serde_json::Value::Number(n)) => probability(path, &format!("field {PROBABILITY}"), &n.to_string()),
        Some(other) => Err(Error::format(path, format!("field {PROBABILITY} is {other}, not a number"))),
        None => Err(Error::format(path, format!("missing field {PROBABILITY}"))),
    }
}
