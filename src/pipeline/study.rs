//! A study's whole inference as one pipeline: every (model, test-time-augmentation pass,
//! window) of the reference's test script, in its order, cut into network batches of
//! `sw_batch` windows that run across pass boundaries. A 4-fold ensemble with the reference's
//! TTA is 52 passes; here it is one stream of batches, not 52 sliding-window calls.
//!
//! Flips and padding are index maps, never copies of the volume: a pass computed on the image
//! flipped along H reads window voxel `p` of its frame from image voxel `flip(p)` (after the
//! inferer's replicate padding, also a clamp in that map). The windows' logits are blended in
//! their own pass's frame, one accumulator per frame kind (unflipped, flipped H, flipped W):
//! all passes of a kind share the window grid, hence the count map, so dividing the kind's sum
//! by it equals the sum of the per-pass normalised outputs the reference adds up. At the end
//! each kind is divided by the count map, cropped, flipped back once, and the kinds summed and
//! divided by the number of passes. One pass without TTA is therefore exactly MONAI's
//! sliding-window inference (see [`crate::pipeline::window`]), bit for bit the same arithmetic.

use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pipeline::tta::{self, TtaConfig};
use crate::pipeline::window::{importance_map, windows, Predictor, Progress, WindowConfig};
use crate::tensor::{numel, Dims, HostTensor};

/// The frame a pass sees: the image as is, or flipped along H or W (axes 0, 1 of `(H, W, D)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flip {
    None,
    H,
    W,
}

impl Flip {
    const ALL: [Flip; 3] = [Flip::None, Flip::H, Flip::W];

    fn index(self) -> usize {
        self as usize
    }

    fn flips(self, axis: usize) -> bool {
        matches!((self, axis), (Flip::H, 0) | (Flip::W, 1))
    }

    /// Which of the axes (H, W, D) this frame mirrors.
    pub fn axes(self) -> [bool; 3] {
        [0, 1, 2].map(|a| self.flips(a))
    }
}

/// One sliding-window pass: which model, which input (the image, or the image plus the noise
/// of TTA round `noise_round`), in which frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    pub model: usize,
    pub noise_round: Option<usize>,
    pub flip: Flip,
}

/// Everything about a study's inference that does not depend on the voxel values.
#[derive(Clone, Debug)]
pub struct StudyPlan {
    /// The image `(H, W, D)`.
    pub dims: Dims,
    /// The image after the inferer's padding to at least the roi (the windows' frame).
    pub frame: Dims,
    pad_before: Dims,
    pub roi: Dims,
    /// Window starts in the frame, in MONAI's order.
    pub windows: Vec<Dims>,
    /// The passes in the reference's order.
    pub passes: Vec<Pass>,
    pub sw_batch: usize,
    /// The test-time augmentation the passes were planned with (their noise comes from it).
    pub tta: Option<TtaConfig>,
    /// Checkpoints of the ensemble.
    pub models: usize,
    importance: Vec<f32>,
    /// Sum of the importance map over the windows (the same for every frame kind).
    count: Vec<f32>,
}

impl StudyPlan {
    /// The plan for `models` checkpoints on an image of size `dims`, with the reference's
    /// test-time augmentation when `tta` is given (else one plain pass per model).
    pub fn new(dims: Dims, models: usize, window: &WindowConfig, tta: Option<&TtaConfig>) -> Result<Self> {
        if dims.contains(&0) {
            return Err(Error::Shape(format!("sliding window: image of size {dims:?}")));
        }
        if window.roi.contains(&0) || window.sw_batch == 0 || !(0.0..1.0).contains(&window.overlap) {
            return Err(Error::Value(format!(
                "sliding window: roi {:?} must be positive, sw_batch {} >= 1, overlap {} in [0, 1)",
                window.roi, window.sw_batch, window.overlap
            )));
        }
        if models == 0 {
            return Err(Error::Value("inference: no models given".into()));
        }
        if let Some(t) = tta {
            t.validate()?;
        }
        let roi = window.roi;
        let pad_before = [0, 1, 2].map(|a| roi[a].saturating_sub(dims[a]) / 2);
        let frame = [0, 1, 2].map(|a| dims[a].max(roi[a]));
        let windows = windows(frame, window);
        let importance = importance_map(roi, window.sigma_scale);
        let mut count = vec![0f32; numel(frame)];
        for w in &windows {
            for i in 0..roi[0] {
                for j in 0..roi[1] {
                    let row = ((w[0] + i) * frame[1] + w[1] + j) * frame[2] + w[2];
                    let imp = &importance[(i * roi[1] + j) * roi[2]..][..roi[2]];
                    for (c, m) in count[row..row + roi[2]].iter_mut().zip(imp) {
                        *c += m;
                    }
                }
            }
        }
        let mut passes = Vec::new();
        for model in 0..models {
            passes.push(Pass { model, noise_round: None, flip: Flip::None });
            for round in 0..tta.map_or(0, |t| t.rounds) {
                for flip in Flip::ALL {
                    passes.push(Pass { model, noise_round: Some(round), flip });
                }
            }
        }
        Ok(StudyPlan {
            dims,
            frame,
            pad_before,
            roi,
            windows,
            passes,
            sw_batch: window.sw_batch,
            tta: tta.copied(),
            models,
            importance,
            count,
        })
    }

    /// MONAI's Gaussian importance map of one window.
    pub fn importance(&self) -> &[f32] {
        &self.importance
    }

    /// Whether the inferer pads the image (it is smaller than the roi along some axis).
    pub fn pads(&self) -> bool {
        self.frame != self.dims
    }

    /// Windows over all passes (network patches of the whole study).
    pub fn total_windows(&self) -> usize {
        self.passes.len() * self.windows.len()
    }

    /// The network batches: ranges of work items (item `i` is window `i % windows` of pass
    /// `i / windows`), `sw_batch` at a time, cut where the model changes.
    pub fn batches(&self) -> Vec<Range<usize>> {
        let nw = self.windows.len();
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.total_windows() {
            let model = self.passes[start / nw].model;
            let mut end = start + 1;
            while end < self.total_windows() && end - start < self.sw_batch && self.passes[end / nw].model == model {
                end += 1;
            }
            out.push(start..end);
            start = end;
        }
        out
    }

    /// Per axis, the image index each frame coordinate of a pass in frame `flip` reads: the
    /// inferer's replicate padding (a clamp), then the flip.
    fn source_maps(&self, flip: Flip) -> [Vec<usize>; 3] {
        [0, 1, 2].map(|a| {
            (0..self.frame[a])
                .map(|p| {
                    let u = p.saturating_sub(self.pad_before[a]).min(self.dims[a] - 1);
                    if flip.flips(a) {
                        self.dims[a] - 1 - u
                    } else {
                        u
                    }
                })
                .collect()
        })
    }

    /// Copies window `start` of the frame whose axes read `maps` out of `image` into `patch`.
    fn gather(&self, image: &[f32], maps: &[Vec<usize>; 3], start: Dims, patch: &mut [f32]) {
        let (roi, d) = (self.roi, self.dims);
        patch.par_chunks_mut(roi[1] * roi[2]).enumerate().for_each(|(i, plane)| {
            let base0 = maps[0][start[0] + i] * d[1];
            for (j, row) in plane.chunks_mut(roi[2]).enumerate() {
                let base = (base0 + maps[1][start[1] + j]) * d[2];
                for (k, v) in row.iter_mut().enumerate() {
                    *v = image[base + maps[2][start[2] + k]];
                }
            }
        });
    }

    /// Adds `logits` `(C, roi)` times the importance map into the frame accumulator
    /// `acc` `(C, frame)` at window `start` (the order of additions is MONAI's: window by window).
    fn accumulate(&self, acc: &mut [f32], logits: &[f32], c: usize, start: Dims) {
        let (roi, f) = (self.roi, self.frame);
        let (plane, rn) = (f[1] * f[2], numel(roi));
        acc.par_chunks_mut(plane).enumerate().for_each(|(slab, dst)| {
            let (ch, p0) = (slab / f[0], slab % f[0]);
            if ch >= c || p0 < start[0] || p0 >= start[0] + roi[0] {
                return;
            }
            let i = p0 - start[0];
            for j in 0..roi[1] {
                let row = (start[1] + j) * f[2] + start[2];
                let r = (i * roi[1] + j) * roi[2];
                let src = &logits[ch * rn + r..][..roi[2]];
                let imp = &self.importance[r..r + roi[2]];
                for ((a, y), m) in dst[row..row + roi[2]].iter_mut().zip(src).zip(imp) {
                    *a += y * m;
                }
            }
        });
    }
}

/// The averaged logits `(1, C, H, W, D)` of all of `models` on a preprocessed single-channel
/// image `(H, W, D)` (row-major), with the reference's test-time augmentation when `tta` is
/// given: the reference's fold ensemble. `progress` hears the windows done of the whole study.
pub fn infer(
    image: &[f32],
    dims: Dims,
    models: &mut [&mut dyn Predictor],
    window: &WindowConfig,
    tta: Option<&TtaConfig>,
    progress: &mut dyn FnMut(Progress),
) -> Result<HostTensor> {
    run(&StudyPlan::new(dims, models.len(), window, tta)?, image, models, progress)
}

/// [`infer`] by a plan already made (its image size, checkpoint count and TTA).
pub fn run(
    plan: &StudyPlan,
    image: &[f32],
    models: &mut [&mut dyn Predictor],
    progress: &mut dyn FnMut(Progress),
) -> Result<HostTensor> {
    if image.len() != numel(plan.dims) {
        return Err(Error::Shape(format!("sliding window: image of {} values for dims {:?}", image.len(), plan.dims)));
    }
    if models.len() != plan.models {
        return Err(Error::Value(format!("study planned for {} models, given {}", plan.models, models.len())));
    }
    let tta = plan.tta.as_ref();
    let maps = Flip::ALL.map(|f| plan.source_maps(f));
    let (roi, rn, nw) = (plan.roi, numel(plan.roi), plan.windows.len());
    let total = plan.total_windows();
    // The noised image of the (model, round) being read, made when its first window is cut.
    let mut noised: Option<((usize, usize), Vec<f32>)> = None;
    let mut acc: [Vec<f32>; 3] = Default::default();
    let mut channels = 0;
    for batch in plan.batches() {
        let mut input = vec![0f32; batch.len() * rn];
        for (item, patch) in batch.clone().zip(input.chunks_mut(rn)) {
            let pass = plan.passes[item / nw];
            let source: &[f32] = match (pass.noise_round, tta) {
                (Some(round), Some(t)) => {
                    let key = (pass.model, round);
                    if noised.as_ref().map(|n| n.0) != Some(key) {
                        noised = Some((key, tta::add_noise(image, t, pass.model, round)?));
                    }
                    noised.as_ref().map_or(image, |n| &n.1[..])
                }
                _ => image,
            };
            plan.gather(source, &maps[pass.flip.index()], plan.windows[item % nw], patch);
        }
        let model = plan.passes[batch.start / nw].model;
        let x = HostTensor::new(vec![batch.len(), 1, roi[0], roi[1], roi[2]], input)?;
        let y = models[model].predict(&x)?;
        let (b, c, sp) = y.ncdims()?;
        if b != batch.len() || sp != roi || c == 0 || (channels != 0 && c != channels) {
            return Err(Error::Shape(format!(
                "model returned {:?} for a batch of {} windows of {roi:?} (expected ({}, C, {}, {}, {}))",
                y.shape,
                batch.len(),
                batch.len(),
                roi[0],
                roi[1],
                roi[2]
            )));
        }
        if let Some(i) = y.first_non_finite() {
            return Err(Error::Value(format!(
                "model returned a non-finite logit (flat index {i}) for window {}",
                batch.start
            )));
        }
        channels = c;
        for (bi, item) in batch.clone().enumerate() {
            let kind = plan.passes[item / nw].flip.index();
            if acc[kind].is_empty() {
                acc[kind] = vec![0f32; c * numel(plan.frame)];
            }
            plan.accumulate(&mut acc[kind], &y.data[bi * c * rn..(bi + 1) * c * rn], c, plan.windows[item % nw]);
        }
        progress(Progress { done: batch.end, total });
    }
    Ok(finish(plan, &acc, channels))
}

/// `sum over frame kinds of unflip(crop(acc / count))`, divided by the number of passes.
fn finish(plan: &StudyPlan, acc: &[Vec<f32>; 3], c: usize) -> HostTensor {
    let (d, f) = (plan.dims, plan.frame);
    let (n, fnum) = (numel(d), numel(f));
    let mut out = vec![0f32; c * n];
    for kind in Flip::ALL {
        let a = &acc[kind.index()];
        if a.is_empty() {
            continue;
        }
        // image voxel (i, j, k) reads frame voxel pad + unflip(i, j, k)
        let frame_of =
            |axis: usize, u: usize| plan.pad_before[axis] + if kind.flips(axis) { d[axis] - 1 - u } else { u };
        out.par_chunks_mut(d[1] * d[2]).enumerate().for_each(|(slab, dst)| {
            let (ch, i) = (slab / d[0], slab % d[0]);
            let p0 = frame_of(0, i);
            for j in 0..d[1] {
                let row = (p0 * f[1] + frame_of(1, j)) * f[2] + plan.pad_before[2];
                let src = &a[ch * fnum + row..][..d[2]];
                let cnt = &plan.count[row..row + d[2]];
                for ((o, s), w) in dst[j * d[2]..(j + 1) * d[2]].iter_mut().zip(src).zip(cnt) {
                    *o += s / w;
                }
            }
        });
    }
    let passes = plan.passes.len() as f32;
    if passes != 1.0 {
        out.par_iter_mut().for_each(|v| *v /= passes);
    }
    HostTensor { shape: vec![1, c, d[0], d[1], d[2]], data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(roi: Dims, sw_batch: usize) -> WindowConfig {
        WindowConfig { roi, overlap: 0.5, sigma_scale: 0.125, sw_batch }
    }

    #[test]
    fn passes_in_the_reference_order_and_batches_never_mix_models() {
        let tta = TtaConfig { rounds: 2, ..TtaConfig::default() };
        let plan = StudyPlan::new([9, 9, 4], 2, &cfg([6, 6, 4], 3), Some(&tta)).unwrap();
        assert_eq!(plan.windows.len(), 4);
        assert_eq!(plan.passes.len(), 14);
        let p = |model, noise_round, flip| Pass { model, noise_round, flip };
        assert_eq!(
            plan.passes[..7],
            [
                p(0, None, Flip::None),
                p(0, Some(0), Flip::None),
                p(0, Some(0), Flip::H),
                p(0, Some(0), Flip::W),
                p(0, Some(1), Flip::None),
                p(0, Some(1), Flip::H),
                p(0, Some(1), Flip::W)
            ]
        );
        assert_eq!(plan.passes[7], p(1, None, Flip::None));
        let b = plan.batches();
        // 28 windows per model: 9 batches of 3 and one of 1, twice
        assert_eq!(b.len(), 20);
        assert_eq!(b[9], 27..28);
        assert_eq!(b[10], 28..31);
        assert_eq!(b.iter().map(|r| r.len()).sum::<usize>(), plan.total_windows());
        assert!(b.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn source_maps_pad_then_flip() {
        // axis 0: 3 -> 6 (pad 1 before, 2 after); axis 1: 7 >= 6; axis 2: 1 -> 4 (pad 1, 2)
        let plan = StudyPlan::new([3, 7, 1], 1, &cfg([6, 6, 4], 1), None).unwrap();
        assert_eq!(plan.frame, [6, 7, 4]);
        let m = plan.source_maps(Flip::None);
        assert_eq!(m[0], vec![0, 0, 1, 2, 2, 2]);
        assert_eq!(m[2], vec![0, 0, 0, 0]);
        let h = plan.source_maps(Flip::H);
        assert_eq!(h[0], vec![2, 2, 1, 0, 0, 0]);
        assert_eq!(h[1], (0..7).collect::<Vec<_>>());
        let w = plan.source_maps(Flip::W);
        assert_eq!(w[1], (0..7).rev().collect::<Vec<_>>());
    }

    /// Flip row-major `(H, W, D)` data along `axis` (the reference's `torch.flip`).
    fn flip(data: &[f32], lead: usize, dims: Dims, axis: usize) -> Vec<f32> {
        let n = numel(dims);
        let mut out = vec![0f32; data.len()];
        for l in 0..lead {
            for i in 0..dims[0] {
                for j in 0..dims[1] {
                    let (si, sj) = if axis == 0 { (dims[0] - 1 - i, j) } else { (i, dims[1] - 1 - j) };
                    let d = l * n + (i * dims[1] + j) * dims[2];
                    let s = l * n + (si * dims[1] + sj) * dims[2];
                    out[d..d + dims[2]].copy_from_slice(&data[s..s + dims[2]]);
                }
            }
        }
        out
    }

    /// The study against the reference's loop written out pass by pass: flip the (noised)
    /// image, one sliding-window inference, flip the logits back, add; divide at the end. On a
    /// grid whose windows are not mirror-symmetric, with inferer padding along D, two models
    /// and a nonlinear, position-dependent mock network, for several batch sizes.
    #[test]
    fn equals_the_pass_by_pass_ensemble() {
        use crate::pipeline::window::sliding_window;
        let dims = [13, 11, 3];
        let roi = [8, 6, 4];
        let n = numel(dims);
        let img: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0).collect();
        let rn = numel(roi);
        let net = |scale: f32| {
            move |x: &HostTensor| -> Result<HostTensor> {
                let b = x.shape[0];
                let mut y = Vec::with_capacity(b * 2 * rn);
                for w in x.data.chunks(rn) {
                    y.extend(w.iter().enumerate().map(|(r, v)| scale * (v * v).tanh() + (r % 7) as f32 * 0.1));
                    y.extend(w.iter().enumerate().map(|(r, v)| -v * scale + ((r / 4) % 3) as f32));
                }
                HostTensor::new(vec![b, 2, roi[0], roi[1], roi[2]], y)
            }
        };
        let tta = TtaConfig { rounds: 2, noise_std: 0.3, sample_std: true, seed: 5 };
        let (mut a, mut b) = (net(1.0), net(-0.5));

        // oracle
        let mut sum = vec![0f32; 2 * n];
        let mut passes = 0;
        for (m, model) in [&mut a as &mut dyn Predictor, &mut b].into_iter().enumerate() {
            let wcfg = cfg(roi, 1);
            let mut add = |y: Vec<f32>| {
                sum.iter_mut().zip(&y).for_each(|(s, v)| *s += v);
                passes += 1;
            };
            add(sliding_window(&img, dims, model, &wcfg, &mut |_| {}).unwrap().data);
            for round in 0..tta.rounds {
                let noised = tta::add_noise(&img, &tta, m, round).unwrap();
                add(sliding_window(&noised, dims, model, &wcfg, &mut |_| {}).unwrap().data);
                for axis in [0, 1] {
                    let y = sliding_window(&flip(&noised, 1, dims, axis), dims, model, &wcfg, &mut |_| {}).unwrap();
                    add(flip(&y.data, 2, dims, axis));
                }
            }
        }
        assert_eq!(passes, 14);
        let want: Vec<f32> = sum.iter().map(|v| v / 14.0).collect();

        let plan = StudyPlan::new(dims, 2, &cfg(roi, 1), Some(&tta)).unwrap();
        assert_eq!(plan.frame, [13, 11, 4]);
        let mut first: Option<HostTensor> = None;
        for sw in [1, 3, 7] {
            let mut models: [&mut dyn Predictor; 2] = [&mut a, &mut b];
            let got = infer(&img, dims, &mut models, &cfg(roi, sw), Some(&tta), &mut |_| {}).unwrap();
            assert_eq!(got.shape, vec![1, 2, 13, 11, 3]);
            let err = got.data.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0f32, f32::max);
            assert!(err < 2e-6, "sw_batch {sw}: max rel error {err}");
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(f, &got, "sw_batch {sw} changes the result"),
            }
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let e = |r: Result<StudyPlan>| r.unwrap_err().to_string();
        assert!(e(StudyPlan::new([4, 4, 2], 1, &cfg([4, 4, 2], 0), None)).contains("sw_batch"));
        assert!(e(StudyPlan::new([4, 4, 2], 0, &cfg([4, 4, 2], 1), None)).contains("no models"));
        assert!(e(StudyPlan::new([4, 0, 2], 1, &cfg([4, 4, 2], 1), None)).contains("size"));
        let plan = StudyPlan::new([4, 4, 2], 2, &cfg([4, 4, 2], 1), None).unwrap();
        let mut one = |x: &HostTensor| -> Result<HostTensor> { Ok(x.clone()) };
        let mut models: [&mut dyn Predictor; 1] = [&mut one];
        let m = run(&plan, &[0.0; 32], &mut models, &mut |_| {}).unwrap_err().to_string();
        assert!(m.contains("planned for 2 models"), "{m}");
        assert!(run(&plan, &[0.0; 31], &mut models, &mut |_| {}).unwrap_err().to_string().contains("31 values"));
        let bad = TtaConfig { noise_std: f64::NAN, ..TtaConfig::default() };
        assert!(e(StudyPlan::new([4, 4, 2], 1, &cfg([4, 4, 2], 1), Some(&bad))).contains("noise"));
    }
}
