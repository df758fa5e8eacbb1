//! Grad-CAM (Selvaraju et al., 2017) of the classifier's axSpA logit on its last encoder stage.
//!
//! Grad-CAM weighs each channel `c` of the last stage's output `A` by the mean of the logit's
//! gradient over the voxels, `alpha_c = mean_v d logit / d A_c(v)`, and keeps the positive part
//! of `sum_c alpha_c A_c`. The classifier's head is linear after global average pooling, so
//! `d logit / d A_c(v) = w_c / V` at every voxel (`w` the head's image weights, `V` the voxel
//! count): `alpha_c = w_c / V` exactly, from the forward pass alone (`tests/pipeline/
//! classifier.rs` checks it against the tape's gradient). The map is scaled to a maximum of 1
//! (all zeros when nothing speaks for axSpA) and resampled trilinearly (align_corners) to the
//! classifier's input grid.

use crate::backend::cpu::reference::{resize_trilinear, Tensor64};
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};

/// The map on the last stage's grid for sample `s` of `features` `(N, C, h, w, d)`, unscaled:
/// `relu(sum_c alpha_c A_c)` with `alpha_c = head[c] / V`.
pub fn raw(features: &HostTensor, s: usize, head: &[f32]) -> Result<Vec<f64>> {
    let [n, c, h, w, d] = features.shape[..] else {
        return Err(Error::Shape(format!("Grad-CAM: features {:?} are not (N, C, H, W, D)", features.shape)));
    };
    if c != head.len() || s >= n {
        return Err(Error::Shape(format!(
            "Grad-CAM: features {:?} (sample {s}) and {} head weights do not fit",
            features.shape,
            head.len()
        )));
    }
    let v = h * w * d;
    let sample = &features.data[s * c * v..][..c * v];
    let mut cam = vec![0f64; v];
    for (ch, &wc) in head.iter().enumerate() {
        let alpha = wc as f64 / v as f64;
        for (m, &a) in cam.iter_mut().zip(&sample[ch * v..][..v]) {
            *m += alpha * a as f64;
        }
    }
    cam.iter_mut().for_each(|m| *m = m.max(0.0));
    Ok(cam)
}

/// Grad-CAM of sample `s`, scaled to `[0, 1]` and resampled to `out` (the input grid).
pub fn gradcam(features: &HostTensor, s: usize, head: &[f32], out: Dims) -> Result<Vec<f32>> {
    let cam = raw(features, s, head)?;
    let top = cam.iter().fold(0f64, |m, &v| m.max(v));
    let scaled: Vec<f64> = cam.iter().map(|&v| if top > 0.0 { v / top } else { 0.0 }).collect();
    let d = &features.shape[2..5];
    let t = Tensor64 { shape: vec![1, 1, d[0], d[1], d[2]], data: scaled };
    let r = resize_trilinear(&t, out);
    debug_assert_eq!(r.data.len(), numel(out));
    Ok(r.data.iter().map(|&v| v as f32).collect())
}
