//! The classifier's input: the preprocessed (MONAI-exact, as for segmentation) image cropped
//! to the network's 192x192x16 patch around the fat metaplasia, and the ROI map (the crop
//! inside the FM mask, zero elsewhere), stacked as two channels.
//!
//! The crop is centred on the FM mask's centre of mass when the mask has any FM, else on the
//! centre of the preprocessed grid (the joints sit mid-field on an SIJ study); it is shifted
//! to stay inside the grid, which preprocessing pads to at least the patch.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::catalog::PATCH;
use crate::pipeline::preprocess::{preprocess, preprocess_label, PreprocessConfig};
use crate::pipeline::truth::{align_to, GRID_TOL_MM};
use crate::tensor::{numel, Dims, HostTensor};
use crate::volume::{Affine, Volume};

/// Where the crop was centred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CropCentre {
    FmCentreOfMass,
    GridCentre,
}

/// One case's classifier input on the patch grid.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierCrop {
    /// Z-scored image, `PATCH` voxels (LPS, preprocessed spacing).
    pub image: Vec<f32>,
    /// 0/1 FM mask on the same voxels.
    pub mask: Vec<u8>,
    pub dims: Dims,
    /// Voxel to LPS world of the crop (for `gradcam.nii.gz`).
    pub affine: Affine,
    pub centre: CropCentre,
    /// FM voxels inside the crop.
    pub fm_voxels: usize,
}

impl ClassifierCrop {
    /// `(1, 2, H, W, D)`: the image, then the ROI map.
    pub fn tensor(&self) -> HostTensor {
        let mut data = Vec::with_capacity(2 * self.image.len());
        data.extend_from_slice(&self.image);
        data.extend(self.image.iter().zip(&self.mask).map(|(&v, &m)| if m != 0 { v } else { 0.0 }));
        HostTensor { shape: vec![1, 2, self.dims[0], self.dims[1], self.dims[2]], data }
    }

    /// Mirrored left-right (LPS axis 0): the augmentation that keeps an SIJ study an SIJ study.
    pub fn flipped_left_right(&self) -> ClassifierCrop {
        let d = self.dims;
        let flip = |i: usize| {
            let (x, rest) = (i / (d[1] * d[2]), i % (d[1] * d[2]));
            (d[0] - 1 - x) * d[1] * d[2] + rest
        };
        let n = numel(d);
        let mut out = self.clone();
        for i in 0..n {
            out.image[flip(i)] = self.image[i];
            out.mask[flip(i)] = self.mask[i];
        }
        out
    }
}

/// Builds the input from an image and its FM mask on the image's own grid (up to voxel
/// order; `mask_path` names the mask in errors, `image_path` the image).
pub fn crop(
    image: &Volume,
    image_path: &Path,
    mask: &Volume,
    mask_path: &Path,
    cfg: &PreprocessConfig,
) -> Result<ClassifierCrop> {
    let values = align_to(mask_path, mask, image)?;
    let pre = preprocess(image, cfg).map_err(|e| Error::format(image_path, e.to_string()))?;
    let m = preprocess_label(&values, image.dims, &image.affine, &pre.chain, GRID_TOL_MM)
        .map_err(|e| Error::format(mask_path, e.to_string()))?;
    let dims = pre.volume.dims;
    if (0..3).any(|a| dims[a] < PATCH[a]) {
        return Err(Error::Other(format!("internal: preprocessed grid {dims:?} smaller than the patch {PATCH:?}")));
    }
    let fm: usize = m.iter().filter(|&&v| v != 0).count();
    let (centre, at) = if fm > 0 {
        let mut sum = [0f64; 3];
        for (i, _) in m.iter().enumerate().filter(|(_, &v)| v != 0) {
            let (x, y, z) = (i / (dims[1] * dims[2]), (i / dims[2]) % dims[1], i % dims[2]);
            sum[0] += x as f64;
            sum[1] += y as f64;
            sum[2] += z as f64;
        }
        (CropCentre::FmCentreOfMass, sum.map(|s| s / fm as f64))
    } else {
        (CropCentre::GridCentre, [0, 1, 2].map(|a| (dims[a] as f64 - 1.0) / 2.0))
    };
    let origin: Dims = [0, 1, 2].map(|a| {
        let start = (at[a] - (PATCH[a] as f64 - 1.0) / 2.0).round().max(0.0) as usize;
        start.min(dims[a] - PATCH[a])
    });
    let mut img = Vec::with_capacity(numel(PATCH));
    let mut msk = Vec::with_capacity(numel(PATCH));
    for x in 0..PATCH[0] {
        for y in 0..PATCH[1] {
            let row = ((origin[0] + x) * dims[1] + origin[1] + y) * dims[2] + origin[2];
            img.extend_from_slice(&pre.volume.data[row..row + PATCH[2]]);
            msk.extend_from_slice(&m[row..row + PATCH[2]]);
        }
    }
    let mut affine = pre.volume.affine;
    for r in 0..3 {
        affine[r][3] += (0..3).map(|c| pre.volume.affine[r][c] * origin[c] as f64).sum::<f64>();
    }
    let fm_voxels = msk.iter().filter(|&&v| v != 0).count();
    Ok(ClassifierCrop { image: img, mask: msk, dims: PATCH, affine, centre, fm_voxels })
}
