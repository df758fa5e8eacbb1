//! A segmentation against a ground-truth mask (`fmseg segment --truth MASK`): the mask read,
//! checked to be binary and brought onto the prediction's grid, then voxel Dice, precision and
//! recall ([`metrics::Confusion`], MONAI's conventions) and the lesions found, missed and
//! false (26-connected components of truth and prediction that do or do not overlap the other).
//!
//! The truth may be stored in another voxel order than the image (a NIfTI written by another
//! tool, say): both grids are oriented to LPS and must then agree in size and, within
//! [`GRID_TOL_MM`], in their affines; anything else is an error naming the file, never a
//! resampling (a metric on a resampled truth would not be the truth's).

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::geometry;
use crate::pipeline::metrics::Confusion;
use crate::pipeline::report::{connected_components, voxel_volume_ml};
use crate::volume::{Affine, Volume};

/// Largest difference (mm, per affine entry) allowed between an image's and its mask's
/// voxel-to-world affines once both are oriented to LPS: far below a voxel, far above the
/// rounding of float32 headers and of DICOM's 6-decimal direction cosines.
pub const GRID_TOL_MM: f64 = 1e-3;

/// The values of a fat-metaplasia mask, which must be exactly 0 or 1; the error names the file,
/// the offending values (up to five, with counts) and the first offending voxel.
pub fn binary_values(path: &Path, mask: &Volume) -> Result<Vec<u8>> {
    let mut bad: Vec<(f32, usize)> = Vec::new();
    let mut first = None;
    let mut out = Vec::with_capacity(mask.data.len());
    for (n, &v) in mask.data.iter().enumerate() {
        if v == 0.0 || v == 1.0 {
            out.push(v as u8);
            continue;
        }
        first.get_or_insert(n);
        match bad.iter_mut().find(|(b, _)| b.to_bits() == v.to_bits()) {
            Some(e) => e.1 += 1,
            None => bad.push((v, 1)),
        }
    }
    if let Some(f) = first {
        let d = mask.dims;
        let (i, j, k) = (f / (d[1] * d[2]), (f / d[2]) % d[1], f % d[2]);
        bad.sort_by_key(|b| std::cmp::Reverse(b.1));
        let list: Vec<String> = bad.iter().take(5).map(|(v, c)| format!("{v} ({c} voxels)")).collect();
        return Err(Error::format(
            path,
            format!(
                "label values other than 0 and 1: {}{}; the first at voxel ({i}, {j}, {k}). A fat-metaplasia mask \
                 must be binary (0 background, 1 FM)",
                list.join(", "),
                if bad.len() > 5 { format!(" and {} more", bad.len() - 5) } else { String::new() }
            ),
        ));
    }
    Ok(out)
}

/// The 0/1 values of `truth` (read from `path`) in the voxel order of `grid`, which it must
/// cover exactly up to voxel order (module docs).
pub fn align_to(path: &Path, truth: &Volume, grid: &Volume) -> Result<Vec<u8>> {
    let values = binary_values(path, truth)?;
    let to = geometry::orient_to_lps(truth.dims, &truth.affine).map_err(|e| Error::format(path, e.to_string()))?;
    let go = geometry::orient_to_lps(grid.dims, &grid.affine)?;
    let (td, gd) = (to.out_dims(), go.out_dims());
    if td != gd {
        return Err(Error::format(
            path,
            format!(
                "the mask's grid {:?} (LPS {td:?}) is not the image's {:?} (LPS {gd:?}): a ground truth must be on the \
                 image's own grid",
                truth.dims, grid.dims
            ),
        ));
    }
    let (ta, ga) = (to.out_affine(&truth.affine), go.out_affine(&grid.affine));
    let (worst, r, c) = worst_entry(&ta, &ga);
    if worst.is_nan() || worst > GRID_TOL_MM {
        return Err(Error::format(
            path,
            format!(
                "the mask's affine differs from the image's by {worst:.4} mm at entry ({r}, {c}) after orientation to LPS \
                 (tolerance {GRID_TOL_MM} mm): a ground truth must be on the image's own grid"
            ),
        ));
    }
    Ok(go.invert(&to.apply(&values)))
}

fn worst_entry(a: &Affine, b: &Affine) -> (f64, usize, usize) {
    let mut worst = (0.0f64, 0, 0);
    for r in 0..3 {
        for c in 0..4 {
            let d = (a[r][c] - b[r][c]).abs();
            if d.is_nan() || d > worst.0 {
                worst = (d, r, c);
            }
        }
    }
    worst
}

/// The report's `truth` section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TruthComparison {
    /// The ground-truth file as given.
    pub file: String,
    /// Voxel Dice `2 TP / (2 TP + FP + FN)`; `None` when the truth has no FM.
    pub dice: Option<f64>,
    /// `TP / (TP + FP)`; `None` when nothing was predicted.
    pub precision: Option<f64>,
    /// `TP / (TP + FN)`; `None` when the truth has no FM.
    pub recall: Option<f64>,
    pub true_positive_voxels: u64,
    pub false_positive_voxels: u64,
    pub false_negative_voxels: u64,
    pub truth_ml: f64,
    pub predicted_ml: f64,
    /// Truth lesions (26-connected) and how many of them any predicted voxel touches.
    pub truth_lesions: usize,
    pub lesions_found: usize,
    pub lesions_missed: usize,
    /// Predicted lesions that touch no truth voxel.
    pub false_lesions: usize,
}

/// Compare a 0/1 prediction with a 0/1 truth on the same grid (`grid` gives dims and voxel size).
pub fn compare(file: &Path, pred: &[u8], truth: &[u8], grid: &Volume) -> Result<TruthComparison> {
    let c = Confusion::from_masks(pred, truth)?;
    let ml = voxel_volume_ml(grid);
    let (found, missed) = overlapping(truth, pred, grid);
    let (_, false_lesions) = overlapping(pred, truth, grid);
    Ok(TruthComparison {
        file: file.display().to_string(),
        dice: c.dice(),
        precision: c.precision(),
        recall: c.recall(),
        true_positive_voxels: c.tp,
        false_positive_voxels: c.fp,
        false_negative_voxels: c.fn_,
        truth_ml: (c.tp + c.fn_) as f64 * ml,
        predicted_ml: (c.tp + c.fp) as f64 * ml,
        truth_lesions: found + missed,
        lesions_found: found,
        lesions_missed: missed,
        false_lesions,
    })
}

/// Components of `a` that share a voxel with `b`, and those that do not.
fn overlapping(a: &[u8], b: &[u8], grid: &Volume) -> (usize, usize) {
    let fg: Vec<bool> = a.iter().map(|&v| v != 0).collect();
    let (labels, n) = connected_components(&fg, grid.dims);
    let mut hit = vec![false; n + 1];
    for (&l, &v) in labels.iter().zip(b) {
        if l > 0 && v != 0 {
            hit[l as usize] = true;
        }
    }
    let found = hit[1..].iter().filter(|&&h| h).count();
    (found, n - found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::IDENTITY;

    fn vol(dims: [usize; 3], data: Vec<f32>, affine: Affine) -> Volume {
        Volume::new(dims, data, affine).unwrap()
    }

    #[test]
    fn truth_in_another_voxel_order_is_aligned_exactly() {
        // image: LPS identity grid; truth: the same voxels stored with axis 0 reversed
        let dims = [3, 2, 2];
        let img = vol(dims, vec![0.0; 12], IDENTITY);
        let mut t = vec![0f32; 12];
        t[img.index(0, 1, 1)] = 1.0; // voxel (0,1,1) of the image grid
        let mut flipped = vec![0f32; 12];
        for i in 0..3 {
            for j in 0..2 {
                for k in 0..2 {
                    flipped[((2 - i) * 2 + j) * 2 + k] = t[img.index(i, j, k)];
                }
            }
        }
        let mut a = IDENTITY;
        a[0][0] = -1.0;
        a[0][3] = 2.0; // voxel 0 of the flipped grid is at x = 2, the image's voxel 2
        let truth = vol(dims, flipped, a);
        let aligned = align_to(Path::new("t.nii.gz"), &truth, &img).unwrap();
        let want: Vec<u8> = t.iter().map(|&v| v as u8).collect();
        assert_eq!(aligned, want);
    }

    #[test]
    fn misfit_grids_and_values_are_errors_naming_the_file() {
        let img = vol([2, 2, 2], vec![0.0; 8], IDENTITY);
        let e = align_to(Path::new("small.nii.gz"), &vol([2, 2, 1], vec![0.0; 4], IDENTITY), &img).unwrap_err();
        assert!(e.to_string().contains("small.nii.gz") && e.to_string().contains("grid"), "{e}");
        let mut shifted = IDENTITY;
        shifted[2][3] = 0.5;
        let e = align_to(Path::new("moved.nii.gz"), &vol([2, 2, 2], vec![0.0; 8], shifted), &img).unwrap_err();
        assert!(e.to_string().contains("moved.nii.gz") && e.to_string().contains("0.5000 mm"), "{e}");
        let e = align_to(
            Path::new("lab.nii.gz"),
            &vol([2, 2, 2], vec![0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], IDENTITY),
            &img,
        )
        .unwrap_err();
        assert!(e.to_string().contains("lab.nii.gz") && e.to_string().contains("2 (1 voxels)"), "{e}");
    }

    #[test]
    fn voxel_and_lesion_counts() {
        // 1 x 1 x 9 line: truth lesions at 0-1 and 5; prediction at 1-2 (found the first) and 8 (false)
        let mut a = IDENTITY;
        a[2][2] = 2.0; // 2 mm^3 voxels
        let grid = vol([1, 1, 9], vec![0.0; 9], a);
        let truth = [1, 1, 0, 0, 0, 1, 0, 0, 0];
        let pred = [0, 1, 1, 0, 0, 0, 0, 0, 1];
        let c = compare(Path::new("t"), &pred, &truth, &grid).unwrap();
        assert_eq!((c.true_positive_voxels, c.false_positive_voxels, c.false_negative_voxels), (1, 2, 2));
        assert!((c.dice.unwrap() - 2.0 / 6.0).abs() < 1e-12);
        assert!((c.precision.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.recall.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((c.truth_lesions, c.lesions_found, c.lesions_missed, c.false_lesions), (2, 1, 1, 1));
        assert!((c.truth_ml - 0.006).abs() < 1e-12 && (c.predicted_ml - 0.006).abs() < 1e-12);
        // no truth FM: no Dice or recall, every predicted lesion false
        let c = compare(Path::new("t"), &pred, &[0; 9], &grid).unwrap();
        assert_eq!((c.dice, c.recall, c.truth_lesions, c.false_lesions), (None, None, 0, 2));
    }
}
