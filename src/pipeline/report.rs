//! What the mask says, in numbers a reader of the scan can check: the fat-metaplasia volume,
//! its lesions (3-D connected components), their positions in patient coordinates and their
//! side, and the slices they are on; plus how it was made (input, weights, device, settings,
//! timings). Serialised as `report.json` by `fmseg segment`.
//!
//! Definitions (also stated in the report itself):
//! - volume: voxel count x voxel volume, the voxel volume being `|det|` of the affine's 3x3
//!   part (mm^3; 1 ml = 1000 mm^3), so oblique and sheared grids are measured correctly;
//! - lesions: connected components of the mask with **26-connectivity** (voxels sharing a
//!   face, an edge or a corner are one lesion), numbered from 1 by decreasing size (ties: the
//!   one whose first voxel comes first in the file's voxel order);
//! - positions: voxel centres mapped by the affine, in **LPS** millimetres (+x patient left,
//!   +y posterior, +z superior, DICOM's patient coordinates);
//! - side: each voxel is on the patient's left when its centre's LPS x is greater than the
//!   midline's x, on the right when smaller, and counts half to each side when exactly on it.
//!   The midline is the sagittal plane through the centroid of the body ([`Midline`]):
//!   the mean LPS x of the voxels brighter than Otsu's threshold of the image. A pelvic scan is
//!   close to left-right symmetric about the sacrum, and unlike the image centre or the scanner's
//!   x = 0 this does not depend on where the field of view was placed;
//! - slices: indices along the input's third voxel axis (the slice axis of a DICOM series and,
//!   by convention, of a NIfTI image), 0-based, in the file's own order.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::pipeline::segment::{InputInfo, SegmentConfig, SegmentResult, StageTime};
use crate::tensor::Dims;
use crate::volume::Volume;

/// Connectivity used for lesions, as stated in the report.
pub const CONNECTIVITY: &str =
    "26-connectivity: voxels sharing a face, an edge or a corner belong to the same lesion (3-D connected components)";

/// The slice axis reported on (the input's third voxel axis).
pub const SLICE_AXIS: usize = 2;

/// The plane separating the patient's left from the right: `x = x_lps_mm` in LPS.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Midline {
    pub x_lps_mm: f64,
    pub method: String,
}

impl Midline {
    /// A fixed midline (for callers who know better, and tests).
    pub fn at(x_lps_mm: f64) -> Self {
        Midline { x_lps_mm, method: "given".into() }
    }

    /// The body's centroid: mean LPS x of the voxels above Otsu's threshold of the image's
    /// intensities; the image centre's x if no voxel is above it (a constant image).
    pub fn from_image(image: &Volume) -> Self {
        let t = otsu_threshold(&image.data);
        let d = image.dims;
        let (mut sum, mut n) = (0f64, 0usize);
        if let Some(t) = t {
            for i in 0..d[0] {
                for j in 0..d[1] {
                    for k in 0..d[2] {
                        if image.get(i, j, k) > t {
                            sum += image.world([i as f64, j as f64, k as f64])[0];
                            n += 1;
                        }
                    }
                }
            }
        }
        match t {
            Some(t) if n > 0 => Midline {
                x_lps_mm: sum / n as f64,
                method: format!(
                    "body centroid: mean LPS x of the {n} voxels brighter than Otsu's threshold {t} of the image"
                ),
            },
            _ => {
                let c = d.map(|n| (n as f64 - 1.0) / 2.0);
                Midline {
                    x_lps_mm: image.world(c)[0],
                    method: "image centre (the image has no body above an intensity threshold)".into(),
                }
            }
        }
    }
}

/// The `q`-quantile (0..=1) of finite values, nearest rank on `(n - 1) q`.
pub fn percentile(data: &[f32], q: f64) -> Option<f32> {
    let mut v = finite_values(data);
    (!v.is_empty()).then(|| nth(&mut v, q))
}

/// The finite values of `data`, in one allocation.
fn finite_values(data: &[f32]) -> Vec<f32> {
    let mut v = Vec::with_capacity(data.len());
    v.extend(data.iter().copied().filter(|x| x.is_finite()));
    v
}

/// The `q`-quantile of non-empty `v` (reordered; its values stay the same, so several
/// quantiles can be read off one copy).
fn nth(v: &mut [f32], q: f64) -> f32 {
    let r = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    *v.select_nth_unstable_by(r, f32::total_cmp).1
}

/// Otsu's threshold over a 256-bin histogram between the 0.5th and 99.5th percentiles (values
/// outside go to the end bins, so a few hot voxels cannot squeeze the tissue into one bin; the
/// minimum and maximum when those percentiles coincide): the bin edge that maximises the
/// between-class variance. `None` for empty, constant or non-finite data.
pub fn otsu_threshold(data: &[f32]) -> Option<f32> {
    let mut v = finite_values(data);
    if v.is_empty() {
        return None;
    }
    let (mut lo, mut hi) = (nth(&mut v, 0.005), nth(&mut v, 0.995));
    if hi <= lo {
        (lo, hi) = (nth(&mut v, 0.0), nth(&mut v, 1.0));
    }
    drop(v);
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return None;
    }
    const BINS: usize = 256;
    let scale = BINS as f64 / (hi as f64 - lo as f64);
    let mut hist = [0u64; BINS];
    for &v in data {
        hist[(((v as f64 - lo as f64) * scale).max(0.0) as usize).min(BINS - 1)] += 1;
    }
    let total = data.len() as f64;
    let sum_all: f64 = hist.iter().enumerate().map(|(b, &c)| b as f64 * c as f64).sum();
    let (mut w0, mut sum0) = (0f64, 0f64);
    let (mut best, mut best_var) = (0usize, -1f64);
    // class 0 = bins 0..=b, class 1 = the rest
    for (b, &c) in hist.iter().enumerate().take(BINS - 1) {
        w0 += c as f64;
        sum0 += b as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let var = w0 * w1 * (m0 - m1) * (m0 - m1);
        if var > best_var {
            best_var = var;
            best = b;
        }
    }
    // upper edge of the last bin of class 0
    Some((lo as f64 + (best + 1) as f64 / scale) as f32)
}

/// 3-D connected components of `mask` (row-major, k fastest) with 26-connectivity: a label
/// per voxel (0 background, 1..=count in order of each component's first voxel) and the count.
pub fn connected_components(mask: &[bool], dims: Dims) -> (Vec<u32>, usize) {
    let [n0, n1, n2] = dims;
    let mut labels = vec![0u32; mask.len()];
    let mut count = 0u32;
    let mut queue = VecDeque::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        count += 1;
        labels[start] = count;
        queue.push_back(start);
        while let Some(p) = queue.pop_front() {
            let (i, j, k) = (p / (n1 * n2), (p / n2) % n1, p % n2);
            for di in -1i64..=1 {
                let ii = i as i64 + di;
                if ii < 0 || ii >= n0 as i64 {
                    continue;
                }
                for dj in -1i64..=1 {
                    let jj = j as i64 + dj;
                    if jj < 0 || jj >= n1 as i64 {
                        continue;
                    }
                    for dk in -1i64..=1 {
                        let kk = k as i64 + dk;
                        if kk < 0 || kk >= n2 as i64 {
                            continue;
                        }
                        let q = (ii as usize * n1 + jj as usize) * n2 + kk as usize;
                        if mask[q] && labels[q] == 0 {
                            labels[q] = count;
                            queue.push_back(q);
                        }
                    }
                }
            }
        }
    }
    (labels, count as usize)
}

/// Where a lesion (or the whole mask) lies relative to the midline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Left,
    Right,
    /// Voxels on both sides of the midline (or on it).
    Both,
}

/// An inclusive box, in voxel indices or LPS mm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BBox<T> {
    pub min: [T; 3],
    pub max: [T; 3],
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lesion {
    pub id: usize,
    pub voxels: usize,
    pub volume_ml: f64,
    /// Mean of its voxel centres, LPS mm.
    pub centroid_lps_mm: [f64; 3],
    /// Voxel index range on the input grid, inclusive.
    pub bbox_voxels: BBox<usize>,
    /// Range of its voxel centres' LPS coordinates, mm.
    pub bbox_lps_mm: BBox<f64>,
    pub side: Side,
    pub left_ml: f64,
    pub right_ml: f64,
    /// Slice indices (along [`SLICE_AXIS`]) it appears on.
    pub slices: Vec<usize>,
}

/// The numbers read off a mask.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Findings {
    pub voxel_volume_ml: f64,
    pub fm_voxels: usize,
    pub fm_volume_ml: f64,
    pub left_ml: f64,
    pub right_ml: f64,
    pub midline: Midline,
    pub connectivity: String,
    pub lesion_count: usize,
    /// The largest lesions, at most [`MAX_LISTED_LESIONS`] (a noisy mask can have thousands:
    /// the report stays small), largest first.
    pub lesions: Vec<Lesion>,
    /// Lesions beyond the listed ones: how many, and their volume in ml.
    pub lesions_not_listed: usize,
    pub lesions_not_listed_ml: f64,
    pub slice_axis: usize,
    /// Slices (along `slice_axis`) holding any FM, ascending.
    pub slices_with_fm: Vec<usize>,
}

/// Most lesions a report lists (the rest are counted).
pub const MAX_LISTED_LESIONS: usize = 50;

/// Voxel volume in ml: `|det|` of the affine's 3x3 part, mm^3 / 1000.
pub fn voxel_volume_ml(v: &Volume) -> f64 {
    crate::linalg::det3(&crate::linalg::linear_part(&v.affine)).abs() / 1000.0
}

#[derive(Default)]
struct Acc {
    voxels: usize,
    sum: [f64; 3],
    min_v: [usize; 3],
    max_v: [usize; 3],
    min_w: [f64; 3],
    max_w: [f64; 3],
    left: f64,
    right: f64,
    slices: Vec<bool>,
    first: usize,
}

/// Volumes, lesions, sides and slices of `mask` (voxels `> 0.5` are FM) on its own grid.
pub fn analyse(mask: &Volume, midline: &Midline) -> Result<Findings> {
    let d = mask.dims;
    if let Some(v) = mask.data.iter().find(|v| !(**v == 0.0 || **v == 1.0)) {
        return Err(Error::Value(format!("report: the mask holds {v}; expected only 0 and 1")));
    }
    let fm: Vec<bool> = mask.data.iter().map(|&v| v > 0.5).collect();
    let (labels, count) = connected_components(&fm, d);
    let vml = voxel_volume_ml(mask);
    let mut acc: Vec<Acc> = (0..count)
        .map(|_| Acc {
            min_v: [usize::MAX; 3],
            min_w: [f64::INFINITY; 3],
            max_w: [f64::NEG_INFINITY; 3],
            slices: vec![false; d[SLICE_AXIS]],
            first: usize::MAX,
            ..Acc::default()
        })
        .collect();
    for (p, &l) in labels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let a = &mut acc[l as usize - 1];
        let ijk = [p / (d[1] * d[2]), (p / d[2]) % d[1], p % d[2]];
        let w = mask.world(ijk.map(|v| v as f64));
        a.voxels += 1;
        a.first = a.first.min(p);
        for c in 0..3 {
            a.sum[c] += w[c];
            a.min_v[c] = a.min_v[c].min(ijk[c]);
            a.max_v[c] = a.max_v[c].max(ijk[c]);
            a.min_w[c] = a.min_w[c].min(w[c]);
            a.max_w[c] = a.max_w[c].max(w[c]);
        }
        if w[0] > midline.x_lps_mm {
            a.left += 1.0;
        } else if w[0] < midline.x_lps_mm {
            a.right += 1.0;
        } else {
            a.left += 0.5;
            a.right += 0.5;
        }
        a.slices[ijk[SLICE_AXIS]] = true;
    }
    acc.sort_by(|a, b| b.voxels.cmp(&a.voxels).then(a.first.cmp(&b.first)));
    let mut all_slices = vec![false; d[SLICE_AXIS]];
    let mut lesions: Vec<Lesion> = acc
        .into_iter()
        .enumerate()
        .map(|(n, a)| {
            for (s, &on) in a.slices.iter().enumerate() {
                all_slices[s] |= on;
            }
            Lesion {
                id: n + 1,
                voxels: a.voxels,
                volume_ml: a.voxels as f64 * vml,
                centroid_lps_mm: a.sum.map(|s| s / a.voxels as f64),
                bbox_voxels: BBox { min: a.min_v, max: a.max_v },
                bbox_lps_mm: BBox { min: a.min_w, max: a.max_w },
                side: if a.right == 0.0 {
                    Side::Left
                } else if a.left == 0.0 {
                    Side::Right
                } else {
                    Side::Both
                },
                left_ml: a.left * vml,
                right_ml: a.right * vml,
                slices: a.slices.iter().enumerate().filter(|(_, &on)| on).map(|(s, _)| s).collect(),
            }
        })
        .collect();
    let fm_voxels = fm.iter().filter(|&&v| v).count();
    let (left_ml, right_ml) = (lesions.iter().map(|l| l.left_ml).sum(), lesions.iter().map(|l| l.right_ml).sum());
    let lesion_count = lesions.len();
    let rest = lesions.split_off(lesion_count.min(MAX_LISTED_LESIONS));
    Ok(Findings {
        voxel_volume_ml: vml,
        fm_voxels,
        fm_volume_ml: fm_voxels as f64 * vml,
        left_ml,
        right_ml,
        midline: midline.clone(),
        connectivity: CONNECTIVITY.into(),
        lesion_count,
        lesions,
        lesions_not_listed: rest.len(),
        lesions_not_listed_ml: rest.iter().map(|l| l.volume_ml).sum(),
        slice_axis: SLICE_AXIS,
        slices_with_fm: all_slices.iter().enumerate().filter(|(_, &on)| on).map(|(s, _)| s).collect(),
    })
}

/// A weights file as the report names it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightsInfo {
    pub file: String,
    pub path: PathBuf,
    /// `sha256:<hex>` of the whole file.
    pub sha256: String,
    /// `pth`, `safetensors` or `frozen`.
    pub format: String,
    /// The file's own `trained` metadata (frozen and safetensors files), when it has one.
    pub trained: Option<bool>,
    /// The file's own `caveat` metadata: what a user must know about these weights (e.g. "partly
    /// trained, validation Dice 0.1"), shown as a notice with every run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
    /// Whether these are the weights bundled with fmseg (used when no `--weights` was given).
    pub bundled: bool,
}

impl WeightsInfo {
    /// Name, checksum, format and `trained` metadata of a weights file.
    pub fn of(path: &Path, bundled: bool) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let format = crate::weights::detect(path)?;
        let meta = crate::weights::metadata(path, &bytes)?;
        let caveat = meta.get("caveat").filter(|c| !c.trim().is_empty()).cloned();
        let trained = meta.get("trained").cloned().and_then(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        });
        Ok(WeightsInfo {
            file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            path: path.to_path_buf(),
            sha256: format!("sha256:{:x}", Sha256::digest(&bytes)),
            format: format.name().into(),
            trained,
            caveat,
            bundled,
        })
    }
}

/// The run's knobs, as used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub pixdim_mm: [f64; 3],
    pub roi: Dims,
    pub overlap: f64,
    pub sw_batch: usize,
    pub tta: bool,
    /// The TTA noise seed (only meaningful with `tta`).
    pub seed: Option<u64>,
    pub models: usize,
    pub passes: usize,
    pub windows_per_pass: usize,
    pub preprocessed_dims: Dims,
    pub probability: bool,
}

/// The overlay picture, when one was drawn.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverlayInfo {
    pub file: String,
    /// Slices shown, left to right then top to bottom.
    pub slices: Vec<usize>,
}

/// `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub fmseg_version: String,
    pub input: InputInfo,
    pub device: String,
    pub weights: Vec<WeightsInfo>,
    pub settings: Settings,
    pub findings: Findings,
    /// The mask against a ground truth (`segment --truth`); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<crate::pipeline::truth::TruthComparison>,
    pub overlay: Option<OverlayInfo>,
    /// Files written next to the report.
    pub outputs: Vec<String>,
    pub timings: Vec<StageTime>,
    pub warnings: Vec<String>,
}

impl Report {
    /// The report of a segmentation (overlay and outputs left for the writer to fill in).
    pub fn new(
        result: &SegmentResult,
        cfg: &SegmentConfig,
        device: String,
        weights: Vec<WeightsInfo>,
        midline: &Midline,
    ) -> Result<Self> {
        let findings = analyse(&result.mask, midline)?;
        Ok(Report {
            fmseg_version: env!("CARGO_PKG_VERSION").into(),
            input: result.input.clone(),
            device,
            settings: Settings {
                pixdim_mm: cfg.preprocess.pixdim,
                roi: cfg.window.roi,
                overlap: cfg.window.overlap,
                sw_batch: cfg.window.sw_batch,
                tta: cfg.tta.is_some(),
                seed: cfg.tta.map(|t| t.seed),
                models: weights.len(),
                passes: result.passes,
                windows_per_pass: result.windows_per_pass,
                preprocessed_dims: result.preprocessed_dims,
                probability: result.probability.is_some(),
            },
            weights,
            findings,
            truth: None,
            overlay: None,
            outputs: Vec::new(),
            timings: result.timings.clone(),
            warnings: result.warnings.clone(),
        })
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Other(format!("report: cannot serialise: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_populations() {
        let mut d = vec![10.0f32; 600];
        d.extend(vec![200.0f32; 400]);
        let t = otsu_threshold(&d).unwrap();
        assert!(t > 10.0 && t < 200.0, "{t}");
        assert_eq!(otsu_threshold(&[3.0, 3.0]), None);
        // a few hot voxels do not move it off the gap between the two populations
        d.extend(vec![1e6f32; 3]);
        let t = otsu_threshold(&d).unwrap();
        assert!(t > 10.0 && t < 200.0, "{t}");
        assert_eq!(otsu_threshold(&[]), None);
    }

    #[test]
    fn components_26_vs_diagonals() {
        // two voxels touching only at a corner are one 26-connected component
        let dims = [3, 3, 3];
        let mut m = vec![false; 27];
        m[0] = true; // (0,0,0)
        m[13] = true; // (1,1,1)
        m[26] = true; // (2,2,2)
        m[2] = true; // (0,0,2): touches (1,1,1) at a corner
        let (labels, n) = connected_components(&m, dims);
        assert_eq!(n, 1);
        assert!(labels.iter().zip(&m).all(|(&l, &v)| (l == 1) == v));
        // a gap of one voxel separates
        let dims = [1, 1, 5];
        let m = [true, false, true, true, false];
        let (labels, n) = connected_components(&m, dims);
        assert_eq!((n, labels), (2, vec![1, 0, 2, 2, 0]));
    }
}
