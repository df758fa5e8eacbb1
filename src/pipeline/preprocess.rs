//! The reference's inference preprocessing, exactly as its MONAI transform chain
//! (`LoadImage -> AddChannel -> Orientation("LPS") -> Spacing((1, 1, 7), bilinear, border)
//! -> SpatialPad((192, 192, 16), reflect) -> NormalizeIntensity(channel_wise)`), keeping
//! every grid it passes through so that predictions can be mapped back
//! ([`crate::pipeline::postprocess`]).

use crate::error::{Error, Result};
use crate::pipeline::geometry::{self, Reorientation, SourceGrid, SpacingPlan};
use crate::tensor::Dims;
use crate::volume::{Affine, Volume};

/// Knobs of the preprocessing; the defaults are the reference's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// Target voxel spacing in mm (MONAI `Spacing(pixdim)`).
    pub pixdim: [f64; 3],
    /// Minimum size after padding (MONAI `SpatialPad(spatial_size)`): the network's patch.
    pub min_size: Dims,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig { pixdim: [1.0, 1.0, 7.0], min_size: [192, 192, 16] }
    }
}

/// Everything needed to map data on the preprocessed grid back to the original image.
#[derive(Clone, Debug, PartialEq)]
pub struct GridChain {
    /// The input image's grid (its own voxel order, e.g. as stored in the NIfTI file).
    pub original_dims: Dims,
    pub original_affine: Affine,
    /// Step 2: reorientation to LPS.
    pub orientation: Reorientation,
    /// Step 3: resampling to `pixdim` (from the reoriented grid).
    pub spacing: SpacingPlan,
    /// Step 4: padding `[before, after]` per axis, and the padded grid.
    pub pad: [[usize; 2]; 3],
    pub padded_dims: Dims,
    pub padded_affine: Affine,
}

/// The network's input grid and the chain that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessed {
    /// Z-scored image on the padded grid (affine LPS).
    pub volume: Volume,
    pub chain: GridChain,
    /// Mean and (population) standard deviation subtracted and divided by in step 5.
    pub mean: f64,
    pub std: f64,
}

/// Run the reference's preprocessing on an image (any orientation and spacing).
pub fn preprocess(image: &Volume, cfg: &PreprocessConfig) -> Result<Preprocessed> {
    if let Some(i) = image.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Value(format!("input image has a non-finite value at voxel index {i}")));
    }
    if cfg.pixdim.iter().any(|p| !(p.is_finite() && *p > 0.0)) {
        return Err(Error::Value(format!("target spacing {:?} must be positive", cfg.pixdim)));
    }
    // 2. orientation
    let orientation = geometry::orient_to_lps(image.dims, &image.affine)?;
    let oriented_affine = orientation.out_affine(&image.affine);
    let oriented_dims = orientation.out_dims();
    let oriented = orientation.apply(&image.data);

    // 3. spacing
    let spacing = geometry::plan_spacing(oriented_dims, &oriented_affine, cfg.pixdim)?;
    let resampled = if spacing.resampled {
        let xform = geometry::resample_xform(&oriented_affine, oriented_dims, &spacing.out_affine, spacing.out_dims)?
            .ok_or_else(|| Error::Other("internal: resampling plan and transform disagree".into()))?;
        let grid = SourceGrid::new(&xform, oriented_dims, spacing.out_dims)?;
        geometry::sample_linear(&oriented, &grid)
    } else {
        oriented
    };

    // 4. symmetric reflect padding to at least min_size
    let dims = spacing.out_dims;
    let pad = [0, 1, 2].map(|a| {
        let w = cfg.min_size[a].saturating_sub(dims[a]);
        [w / 2, w - w / 2]
    });
    let padded_dims = [0, 1, 2].map(|a| dims[a] + pad[a][0] + pad[a][1]);
    let padded = pad_reflect(&resampled, dims, pad);
    let padded_affine = geometry::translate(&spacing.out_affine, pad.map(|p| -(p[0] as f64)));

    // 5. z-score over all voxels, population std (std 0 -> 1, as MONAI)
    let n = padded.len() as f64;
    let mean = padded.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = padded.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let std = if var > 0.0 { var.sqrt() } else { 1.0 };
    let (m32, s32) = (mean as f32, std as f32);
    let normalised: Vec<f32> = padded.iter().map(|&v| (v - m32) / s32).collect();

    let chain = GridChain {
        original_dims: image.dims,
        original_affine: image.affine,
        orientation,
        spacing,
        pad,
        padded_dims,
        padded_affine,
    };
    Ok(Preprocessed { volume: Volume::new(padded_dims, normalised, padded_affine)?, chain, mean, std })
}

/// Carry a label volume through the grid chain of the image it annotates, with
/// nearest-neighbour resampling (the reference's `Spacingd(mode=("bilinear", "nearest"))` and
/// `SpatialPadd(mode="reflect")` on its label key): orientation to LPS by the label's own
/// affine, then the image's spacing plan and padding. The label may be stored in another voxel
/// order than the image, but once both are oriented to LPS they must be the same grid: same
/// dims, and affines within `tol_mm` entry by entry (direction-times-spacing columns and origin,
/// millimetres); otherwise an [`Error::Shape`] says how they differ. Output: row-major on
/// `chain.padded_dims`.
pub fn preprocess_label(
    label: &[u8],
    label_dims: Dims,
    label_affine: &Affine,
    chain: &GridChain,
    tol_mm: f64,
) -> Result<Vec<u8>> {
    if label.len() != label_dims.iter().product::<usize>() {
        return Err(Error::Shape(format!(
            "label {:?} needs {} voxels, got {}",
            label_dims,
            label_dims.iter().product::<usize>(),
            label.len()
        )));
    }
    let orientation = geometry::orient_to_lps(label_dims, label_affine)?;
    let oriented_dims = orientation.out_dims();
    let oriented_affine = orientation.out_affine(label_affine);
    let sp = &chain.spacing;
    if oriented_dims != sp.in_dims {
        return Err(Error::Shape(format!(
            "label grid {:?} (LPS {:?}) is not the image grid {:?} (LPS {:?})",
            label_dims, oriented_dims, chain.original_dims, sp.in_dims
        )));
    }
    let mut worst = (0.0f64, 0, 0);
    for r in 0..3 {
        for c in 0..4 {
            let d = (oriented_affine[r][c] - sp.in_affine[r][c]).abs();
            if d.is_nan() || d > worst.0 {
                worst = (d, r, c);
            }
        }
    }
    if worst.0.is_nan() || worst.0 > tol_mm {
        let row = |a: &Affine, r: usize| format!("[{:.4}, {:.4}, {:.4}, {:.4}]", a[r][0], a[r][1], a[r][2], a[r][3]);
        return Err(Error::Shape(format!(
            "label affine differs from the image affine by {:.4} mm at entry ({}, {}) (tolerance {tol_mm} mm); \
             LPS row {}: label {} vs image {}",
            worst.0,
            worst.1,
            worst.2,
            worst.1,
            row(&oriented_affine, worst.1),
            row(&sp.in_affine, worst.1)
        )));
    }
    let oriented = orientation.apply(label);
    let resampled = if sp.resampled {
        let xform = geometry::resample_xform(&sp.in_affine, sp.in_dims, &sp.out_affine, sp.out_dims)?
            .ok_or_else(|| Error::Other("internal: resampling plan and transform disagree".into()))?;
        let grid = SourceGrid::new(&xform, sp.in_dims, sp.out_dims)?;
        geometry::sample_nearest(&oriented, &grid)
    } else {
        oriented
    };
    Ok(pad_reflect(&resampled, sp.out_dims, chain.pad))
}

/// NumPy's `reflect` index (mirror about the edge voxels, which are not repeated), for any
/// distance; PyTorch's `reflect` is the same where it is defined (pad < size).
pub fn reflect_index(i: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as i64 - 1);
    let m = i.rem_euclid(period);
    (if m < n as i64 { m } else { period - m }) as usize
}

/// Pad row-major `data` of `dims` by `pad[a] = [before, after]` with reflection.
pub fn pad_reflect<T: Copy>(data: &[T], dims: Dims, pad: [[usize; 2]; 3]) -> Vec<T> {
    let out = [0, 1, 2].map(|a| dims[a] + pad[a][0] + pad[a][1]);
    let maps: [Vec<usize>; 3] =
        [0, 1, 2].map(|a| (0..out[a]).map(|o| reflect_index(o as i64 - pad[a][0] as i64, dims[a])).collect());
    let mut v = Vec::with_capacity(out.iter().product());
    for &i in &maps[0] {
        for &j in &maps[1] {
            for &k in &maps[2] {
                v.push(data[(i * dims[1] + j) * dims[2] + k]);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_like_numpy() {
        // np.pad(np.arange(4), 6, mode="reflect")
        let got: Vec<usize> = (-6..10).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3]);
        assert_eq!(reflect_index(-3, 1), 0);
    }

    #[test]
    fn small_axis_aligned_volume() {
        // 0.5 mm in-plane, 3.5 mm slices, already LPS: resampled to 1 x 1 x 7 and padded
        let dims = [9, 7, 5];
        let a: Affine = [[0.5, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 3.5, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let data: Vec<f32> = (0..9 * 7 * 5).map(|v| (v % 13) as f32).collect();
        let img = Volume::new(dims, data, a).unwrap();
        let cfg = PreprocessConfig { pixdim: [1.0, 1.0, 7.0], min_size: [8, 8, 4] };
        let p = preprocess(&img, &cfg).unwrap();
        // extents 4, 3, 14 mm -> 5, 4, 3 voxels; corner-aligned; padded to 8, 8, 4
        assert_eq!(p.chain.spacing.out_dims, [5, 4, 3]);
        assert_eq!(p.chain.pad, [[1, 2], [2, 2], [0, 1]]);
        assert_eq!(p.volume.dims, [8, 8, 4]);
        assert_eq!(p.volume.affine[0][3], -1.0);
        assert_eq!(p.volume.affine[1][3], -2.0);
        let m = p.volume.data.iter().map(|&v| v as f64).sum::<f64>() / p.volume.data.len() as f64;
        let s =
            (p.volume.data.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / p.volume.data.len() as f64).sqrt();
        assert!(m.abs() < 1e-6 && (s - 1.0).abs() < 1e-6);
        // output voxel (i, j, k) of the resampled grid is input voxel (2i, 2j, 2k): no interpolation
        let z = |v: f32| (v as f64 - p.mean) / p.std;
        let src = |i: usize, j: usize, k: usize| img.get(2 * i, 2 * j, 2 * k);
        assert!((p.volume.get(1, 2, 0) as f64 - z(src(0, 0, 0))).abs() < 1e-5);
        assert!((p.volume.get(3, 4, 2) as f64 - z(src(2, 2, 2))).abs() < 1e-5);
        // reflect padding: padded index 0 along axis 0 mirrors resampled index 1
        assert_eq!(p.volume.get(0, 2, 0), p.volume.get(2, 2, 0));
    }

    #[test]
    fn rejects_non_finite_input() {
        let mut d = vec![0f32; 8];
        d[3] = f32::NAN;
        let img = Volume::new([2, 2, 2], d, crate::volume::IDENTITY).unwrap();
        let e = preprocess(&img, &PreprocessConfig::default()).unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains('3'), "{e}");
    }
}
