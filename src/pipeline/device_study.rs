//! A study's whole inference on the device ([`crate::pipeline::study`] with the volume
//! resident): the image is uploaded once (each TTA round's noised copy once per round), every
//! network batch is cut out of it by a kernel, flipped windows by mirrored origins and
//! in-window index flips, and the logits are blended on the device, one accumulator per frame
//! kind as the host pipeline does. Only the three blended volumes come back.

use crate::backend::cuda::{Blend, CudaBackend, DeviceVolume};
use crate::error::{Error, Result};
use crate::model::Unet25d;
use crate::pipeline::study::{Flip, StudyPlan};
use crate::pipeline::tta;
use crate::pipeline::window::Progress;
use crate::tensor::{numel, Dims, HostTensor};

impl CudaBackend {
    /// The averaged logits `(1, C, H, W, D)` of `models` on a preprocessed image by `plan`, as
    /// [`crate::pipeline::study::run`] computes them (to FP16 rounding). The image must be at
    /// least the roi along every axis (the pipeline's preprocessing pads it to that).
    pub fn infer_study(
        &self,
        plan: &StudyPlan,
        models: &[&Unet25d<CudaBackend>],
        image: &[f32],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<HostTensor> {
        let dims = plan.dims;
        if image.len() != numel(dims) {
            return Err(Error::Shape(format!("study: image of {} values for dims {dims:?}", image.len())));
        }
        if models.len() != plan.models {
            return Err(Error::Value(format!("study planned for {} models, given {}", plan.models, models.len())));
        }
        if plan.pads() {
            return Err(Error::Shape(format!(
                "study on the device: the image {dims:?} is smaller than the window {:?} (preprocess it first)",
                plan.roi
            )));
        }
        let (roi, nw, total) = (plan.roi, plan.windows.len(), plan.total_windows());
        let volume = |data: Vec<f32>, d: Dims| HostTensor::new(vec![1, d[0], d[1], d[2]], data);
        let base = self.upload_volume(&volume(image.to_vec(), dims)?)?;
        let importance = self.upload_volume(&volume(plan.importance().to_vec(), roi)?)?;
        let mut noised: Option<((usize, usize), DeviceVolume)> = None;
        let mut blends: [Option<Blend>; 3] = [None, None, None];
        let mut kind_passes = [0usize; 3];
        for p in &plan.passes {
            kind_passes[p.flip as usize] += 1;
        }
        for batch in plan.batches() {
            let x = self.new_tensor(batch.len(), 1, roi)?;
            // Cut the windows, one run per source volume.
            let mut item = batch.start;
            while item < batch.end {
                let pass = plan.passes[item / nw];
                let key = match (pass.noise_round, plan.tta.as_ref()) {
                    (Some(round), Some(t)) => {
                        let key = (pass.model, round);
                        if noised.as_ref().map(|n| n.0) != Some(key) {
                            let data = tta::add_noise(image, t, pass.model, round)?;
                            match noised.as_mut() {
                                Some((k, v)) => {
                                    self.overwrite_volume(v, &data)?;
                                    *k = key;
                                }
                                None => noised = Some((key, self.upload_volume(&volume(data, dims)?)?)),
                            }
                        }
                        Some(key)
                    }
                    _ => None,
                };
                let mut origins = Vec::new();
                let first = item - batch.start;
                while item < batch.end {
                    let p = plan.passes[item / nw];
                    let same_source = match key {
                        Some(k) => p.noise_round.map(|r| (p.model, r)) == Some(k),
                        None => p.noise_round.is_none(),
                    };
                    if !same_source {
                        break;
                    }
                    origins.push(source_window(dims, roi, plan.windows[item % nw], p.flip));
                    item += 1;
                }
                let src = match &noised {
                    Some((k, v)) if key == Some(*k) => v,
                    _ => &base,
                };
                self.extract_windows_into(src, &origins, &x, first)?;
            }
            let model = plan.passes[batch.start / nw].model;
            let logits = models[model].forward(self, &x)?.logits;
            let (_, c, _) = logits.shape();
            for (bi, item) in batch.clone().enumerate() {
                let kind = plan.passes[item / nw].flip as usize;
                if blends[kind].is_none() {
                    blends[kind] = Some(self.new_blend(c, dims)?);
                }
                if let Some(b) = blends[kind].as_mut() {
                    // Blended in the pass's own frame: origin as planned, no flip.
                    self.accumulate_window(b, &logits, bi, &importance, plan.windows[item % nw], [false; 3])?;
                }
            }
            progress(Progress { done: batch.end, total });
        }
        // Each kind's blend is the mean of its passes (its weights summed over them): times
        // its pass count, flipped back, summed, divided by all passes.
        let n = numel(dims);
        let mut out: Vec<f32> = Vec::new();
        let mut channels = 0;
        for (kind, flip) in [Flip::None, Flip::H, Flip::W].into_iter().enumerate() {
            let Some(b) = blends[kind].take() else { continue };
            let v = self.download_volume(&self.finish_blend(b)?)?;
            let c = v.shape[0];
            if out.is_empty() {
                channels = c;
                out = vec![0f32; c * n];
            }
            let scale = kind_passes[kind] as f32;
            let ax = flip.axes();
            for ch in 0..c {
                for i in 0..dims[0] {
                    let fi = if ax[0] { dims[0] - 1 - i } else { i };
                    for j in 0..dims[1] {
                        let fj = if ax[1] { dims[1] - 1 - j } else { j };
                        let dst = (ch * dims[0] + i) * dims[1] * dims[2] + j * dims[2];
                        let src = (ch * dims[0] + fi) * dims[1] * dims[2] + fj * dims[2];
                        for k in 0..dims[2] {
                            out[dst + k] += scale * v.data[src + k];
                        }
                    }
                }
            }
        }
        let passes = plan.passes.len() as f32;
        out.iter_mut().for_each(|v| *v /= passes);
        HostTensor::new(vec![1, channels, dims[0], dims[1], dims[2]], out)
    }
}

/// The device window (origin in the image, in-window flips) that holds window `start` of a
/// pass in frame `flip`: a window of the mirrored image is the mirrored window of the image.
fn source_window(dims: Dims, roi: Dims, start: Dims, flip: Flip) -> (Dims, [bool; 3]) {
    let ax = flip.axes();
    ([0, 1, 2].map(|a| if ax[a] { dims[a] - roi[a] - start[a] } else { start[a] }), ax)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirrored-origin rule against the definition: voxel r of window `start` of the
    /// H-flipped image is image voxel dims-1-(start+r), and the device reads voxel
    /// origin + (roi-1-r) of the image.
    #[test]
    fn flipped_windows_read_the_mirrored_voxels() {
        let (dims, roi) = ([288, 300, 16], [192, 192, 16]);
        for start in [[0, 0, 0], [96, 108, 0], [17, 3, 0]] {
            for flip in [Flip::None, Flip::H, Flip::W] {
                let (o, ax) = source_window(dims, roi, start, flip);
                for a in 0..3 {
                    for r in [0, 1, roi[a] / 2, roi[a] - 1] {
                        let want = if ax[a] { dims[a] - 1 - (start[a] + r) } else { start[a] + r };
                        let device = o[a] + if ax[a] { roi[a] - 1 - r } else { r };
                        assert_eq!(device, want, "{flip:?} axis {a} start {start:?} r {r}");
                    }
                }
            }
        }
    }
}
