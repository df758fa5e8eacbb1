//! MONAI's `SlidingWindowInferer` as the reference configures it (roi 192x192x16, overlap
//! 0.5, Gaussian blending with sigma 0.125 roi, replicate padding, `sw_batch_size` 2): the
//! window plan, the importance map and [`sliding_window`], one pass of one model. The test-time
//! augmentation and the fold ensemble are planned and run in [`crate::pipeline::study`], which
//! `sliding_window` calls with a one-pass plan.
//!
//! What is matched (MONAI 1.x `monai/inferers/utils.py`, `monai/data/utils.py`):
//! - scan interval per axis: `roi` when the roi equals the image size, else
//!   `int(roi * (1 - overlap))` (truncation), at least 1 (`_get_scan_interval`);
//! - windows per axis: the smallest count `d + 1` with `d * interval + roi >= size`; starts
//!   `d * interval`, the last clamped to `size - roi`; windows enumerated row-major over
//!   (axis 0, axis 1, axis 2) (`dense_patch_slices`), batched `sw_batch` at a time in that
//!   order;
//! - importance map (`compute_importance_map`, float32): per axis
//!   `exp(x^2 / (-2 sigma^2))` on `x = -(n-1)/2 ..= (n-1)/2`, `sigma = 0.125 n`, outer
//!   product in axis order, **not** normalised by its maximum (the centre is ~1), then
//!   clamped below at `max(min(map), 1e-3)`;
//! - blending in float32: every window's output multiplied by the map and added in window
//!   order, the count map the sum of the map over all windows, then divided;
//! - an image smaller than the roi along an axis is padded to the roi with the inferer's
//!   padding mode (replicate here), `diff / 2` before and the rest after, and the output
//!   cropped back.

use crate::error::Result;
use crate::tensor::{Dims, HostTensor};

/// A network on `(B, 1, H, W, D)` patches returning `(B, C, H, W, D)` logits.
pub trait Predictor {
    fn predict(&mut self, batch: &HostTensor) -> Result<HostTensor>;
}

impl<F: FnMut(&HostTensor) -> Result<HostTensor>> Predictor for F {
    fn predict(&mut self, batch: &HostTensor) -> Result<HostTensor> {
        self(batch)
    }
}

/// Sliding-window knobs; the defaults are the reference's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowConfig {
    pub roi: Dims,
    pub overlap: f64,
    pub sigma_scale: f64,
    /// Windows per network call (throughput only; results do not depend on it).
    pub sw_batch: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { roi: [192, 192, 16], overlap: 0.5, sigma_scale: 0.125, sw_batch: 2 }
    }
}

/// Progress of a sliding-window inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Windows evaluated so far, and in all (every pass of every model).
    pub done: usize,
    pub total: usize,
}

/// MONAI's `_get_scan_interval`.
pub fn scan_interval(image: Dims, roi: Dims, overlap: f64) -> Dims {
    [0, 1, 2].map(|a| if roi[a] == image[a] { roi[a] } else { ((roi[a] as f64 * (1.0 - overlap)) as usize).max(1) })
}

/// Window start positions per axis (MONAI's `dense_patch_slices`); `image >= roi`.
pub fn window_starts(image: Dims, roi: Dims, interval: Dims) -> [Vec<usize>; 3] {
    [0, 1, 2].map(|a| {
        let (size, r, step) = (image[a], roi[a], interval[a]);
        let num = size.div_ceil(step);
        let count = (0..num).find(|d| d * step + r >= size).map(|d| d + 1).unwrap_or(1);
        (0..count).map(|d| (d * step).min(size - r)).collect()
    })
}

/// All windows in MONAI's order (row-major over the per-axis starts).
pub fn windows(image: Dims, cfg: &WindowConfig) -> Vec<Dims> {
    let roi = cfg.roi.map(|r| r.max(1));
    let image = [0, 1, 2].map(|a| image[a].max(roi[a]));
    let s = window_starts(image, roi, scan_interval(image, roi, cfg.overlap));
    let mut out = Vec::with_capacity(s[0].len() * s[1].len() * s[2].len());
    for &a in &s[0] {
        for &b in &s[1] {
            for &c in &s[2] {
                out.push([a, b, c]);
            }
        }
    }
    out
}

/// MONAI's Gaussian importance map for a patch, float32, row-major.
pub fn importance_map(roi: Dims, sigma_scale: f64) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f32> {
        let sigma = n as f64 * sigma_scale;
        let denom = (-2.0 * sigma * sigma) as f32;
        (0..n)
            .map(|i| {
                let x = -((n - 1) as f32) / 2.0 + i as f32;
                (x * x / denom).exp()
            })
            .collect()
    };
    let (g0, g1, g2) = (axis(roi[0]), axis(roi[1]), axis(roi[2]));
    let mut m = Vec::with_capacity(roi.iter().product());
    for &a in &g0 {
        for &b in &g1 {
            let ab = a * b;
            for &c in &g2 {
                m.push(ab * c);
            }
        }
    }
    let min = m.iter().copied().fold(f32::INFINITY, f32::min);
    let floor = (min as f64).max(1e-3) as f32;
    for v in m.iter_mut() {
        *v = v.max(floor);
    }
    m
}

/// One sliding-window pass over a single-channel image (`(H, W, D)` row-major) with one
/// model: the blended logits `(1, C, H, W, D)`. (A one-pass study: see
/// [`crate::pipeline::study`], which cuts, pads and blends the windows.)
pub fn sliding_window(
    image: &[f32],
    dims: Dims,
    model: &mut dyn Predictor,
    cfg: &WindowConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<HostTensor> {
    crate::pipeline::study::infer(image, dims, &mut [model], cfg, None, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monai_window_positions() {
        let cfg = WindowConfig::default();
        assert_eq!(scan_interval([240, 240, 16], cfg.roi, 0.5), [96, 96, 16]);
        assert_eq!(window_starts([240, 240, 16], cfg.roi, [96, 96, 16]), [vec![0, 48], vec![0, 48], vec![0]]);
        // 400: 0, 96, 192, then 288 clamped to 208
        assert_eq!(window_starts([400, 192, 40], cfg.roi, [96, 192, 8])[0], vec![0, 96, 192, 208]);
        assert_eq!(window_starts([400, 192, 40], cfg.roi, [96, 192, 8])[1], vec![0]);
        assert_eq!(window_starts([400, 192, 40], cfg.roi, [96, 192, 8])[2], vec![0, 8, 16, 24]);
        // odd roi: int(15 * 0.5) = 7
        assert_eq!(scan_interval([20, 20, 20], [15, 15, 20], 0.5), [7, 7, 20]);
        let w = windows([240, 288, 16], &cfg);
        assert_eq!(w, vec![[0, 0, 0], [0, 96, 0], [48, 0, 0], [48, 96, 0]]);
    }

    /// The map against the formula evaluated independently in double precision.
    #[test]
    fn importance_map_values() {
        let roi = [192, 192, 16];
        let m = importance_map(roi, 0.125);
        let g = |x: f64, n: f64| (-(x - (n - 1.0) / 2.0).powi(2) / (2.0 * (0.125 * n).powi(2))).exp();
        let at = |i: usize, j: usize, k: usize| m[(i * 192 + j) * 16 + k] as f64;
        // centre: not normalised to 1 (the half-integer grid misses the peak)
        let c = g(95.0, 192.0) * g(95.0, 192.0) * g(7.0, 16.0);
        assert!((at(95, 95, 7) - c).abs() < 1e-6 * c, "{} vs {c}", at(95, 95, 7));
        assert!(at(95, 95, 7) < 1.0);
        let v = g(40.0, 192.0) * g(120.0, 192.0) * g(3.0, 16.0);
        assert!((at(40, 120, 3) - v).abs() < 1e-6 * v);
        // corners fall far below 1e-3 and are clamped to it
        assert_eq!(at(0, 0, 0), 1e-3f64 as f32 as f64);
        assert_eq!(m.iter().copied().fold(f32::INFINITY, f32::min), 1e-3);
        // symmetric
        assert_eq!(at(0, 50, 2), at(191, 50, 13));
        // MONAI 1.6 compute_importance_map((192, 192, 16), "gaussian", 0.125), float32
        let monai = [
            ((95, 95, 7), 0.9688127040863037),
            ((60, 130, 5), 0.05456186458468437),
            ((100, 90, 9), 0.7224646210670471),
            ((40, 120, 3), 0.0032596727833151817),
            ((95, 20, 8), 0.006876809522509575),
            ((60, 130, 0), 0.0010000000474974513),
        ];
        for ((i, j, k), want) in monai {
            assert!((at(i, j, k) - want).abs() <= 2.0 * f32::EPSILON as f64 * want, "({i}, {j}, {k})");
        }
        let sum: f64 = m.iter().map(|&v| v as f64).sum();
        assert!((sum - 18428.265457901172).abs() < 1e-6 * sum, "sum {sum}");
    }

    /// A mock model whose output is an affine function of its input and of the position in
    /// the window: the blended result must equal a direct weighted average computed here
    /// window by window in double precision.
    #[test]
    fn blending_matches_a_direct_weighted_average() {
        let roi = [8, 6, 4];
        let cfg = WindowConfig { roi, overlap: 0.5, sigma_scale: 0.125, sw_batch: 3 };
        let dims = [13, 9, 7];
        let n: usize = dims.iter().product();
        let img: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let rn: usize = roi.iter().product();
        let mut calls = Vec::new();
        let mut model = |x: &HostTensor| -> Result<HostTensor> {
            let b = x.shape[0];
            calls.push(b);
            let mut y = vec![0f32; b * 2 * rn];
            for bi in 0..b {
                for r in 0..rn {
                    let v = x.data[bi * rn + r];
                    y[(bi * 2) * rn + r] = 2.0 * v + 1.0;
                    y[(bi * 2 + 1) * rn + r] = -v + (r % 5) as f32;
                }
            }
            HostTensor::new(vec![b, 2, roi[0], roi[1], roi[2]], y)
        };
        let mut seen = Vec::new();
        let out = sliding_window(&img, dims, &mut model, &cfg, &mut |p| seen.push(p)).unwrap();
        assert_eq!(out.shape, vec![1, 2, 13, 9, 7]);

        // independent: windows from the documented rule, weights from the formula
        let starts = |size: usize, r: usize| {
            let step = (r / 2).max(1);
            let mut s = vec![0];
            while s.last().unwrap() + r < size {
                s.push((s.last().unwrap() + step).min(size - r));
            }
            s
        };
        let g = |x: usize, n: usize| {
            let c = x as f64 - (n as f64 - 1.0) / 2.0;
            (-c * c / (2.0 * (0.125 * n as f64).powi(2))).exp()
        };
        let mut wmin = f64::INFINITY;
        for i in 0..roi[0] {
            for j in 0..roi[1] {
                for k in 0..roi[2] {
                    wmin = wmin.min(g(i, roi[0]) * g(j, roi[1]) * g(k, roi[2]));
                }
            }
        }
        let floor = wmin.max(1e-3);
        let mut num = vec![0f64; 2 * n];
        let mut den = vec![0f64; n];
        let (s0, s1, s2) = (starts(13, 8), starts(9, 6), starts(7, 4));
        assert_eq!((s0.len(), s1.len(), s2.len()), (3, 2, 3));
        for &a in &s0 {
            for &b in &s1 {
                for &c in &s2 {
                    for i in 0..roi[0] {
                        for j in 0..roi[1] {
                            for k in 0..roi[2] {
                                let w = (g(i, roi[0]) * g(j, roi[1]) * g(k, roi[2])).max(floor);
                                let p = ((a + i) * dims[1] + b + j) * dims[2] + c + k;
                                let r = (i * roi[1] + j) * roi[2] + k;
                                let v = img[p] as f64;
                                num[p] += w * (2.0 * v + 1.0);
                                num[n + p] += w * (-v + (r % 5) as f64);
                                den[p] += w;
                            }
                        }
                    }
                }
            }
        }
        for p in 0..n {
            for ch in 0..2 {
                let want = num[ch * n + p] / den[p];
                let got = out.data[ch * n + p] as f64;
                assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "voxel {p} ch {ch}: {got} vs {want}");
            }
        }
        // 18 windows in batches of 3, progress after each
        assert_eq!(calls, vec![3; 6]);
        assert_eq!(seen.last(), Some(&Progress { done: 18, total: 18 }));
        assert_eq!(seen.len(), 6);
    }

    /// An image smaller than the roi: replicate-padded (diff/2 before), one window, cropped
    /// back. An identity model then returns the image itself.
    #[test]
    fn small_image_is_replicate_padded_and_cropped() {
        let roi = [6, 6, 4];
        let cfg = WindowConfig { roi, overlap: 0.5, sigma_scale: 0.125, sw_batch: 2 };
        let dims = [3, 6, 1];
        let img: Vec<f32> = (0..18).map(|v| v as f32).collect();
        let mut inputs = Vec::new();
        let mut model = |x: &HostTensor| -> Result<HostTensor> {
            inputs.push(x.data.clone());
            Ok(x.clone())
        };
        let out = sliding_window(&img, dims, &mut model, &cfg, &mut |_| {}).unwrap();
        assert_eq!(out.shape, vec![1, 1, 3, 6, 1]);
        for (a, b) in out.data.iter().zip(&img) {
            assert!((a - b).abs() < 1e-6);
        }
        // pads: axis 0 [1, 2], axis 2 [1, 2]; padded voxel (0, j, 0) = image (0, j, 0)
        let x = &inputs[0];
        assert_eq!(inputs.len(), 1);
        assert_eq!(x[4 * 4], img[4]);
        assert_eq!(x[(5 * 6 + 4) * 4 + 3], img[2 * 6 + 4]);
    }

    /// MONAI 1.6's own `sliding_window_inference(img, (8, 6, 4), 3, pred, overlap=0.5,
    /// mode="gaussian", padding_mode="replicate")` on a 13x5x7 image (axis 1 smaller than
    /// the roi) with `pred(x) = cat(2x + 1, -x + arange(192).reshape(roi) % 5)`.
    #[test]
    fn matches_monai_on_a_mock_predictor() {
        let roi = [8, 6, 4];
        let dims = [13, 5, 7];
        let cfg = WindowConfig { roi, overlap: 0.5, sigma_scale: 0.125, sw_batch: 3 };
        let n: usize = dims.iter().product();
        let img: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let rn: usize = roi.iter().product();
        let mut model = |x: &HostTensor| -> Result<HostTensor> {
            let b = x.shape[0];
            let mut y = Vec::with_capacity(b * 2 * rn);
            for bi in 0..b {
                let w = &x.data[bi * rn..(bi + 1) * rn];
                y.extend(w.iter().map(|v| 2.0 * v + 1.0));
                y.extend(w.iter().enumerate().map(|(r, v)| -v + (r % 5) as f32));
            }
            HostTensor::new(vec![b, 2, roi[0], roi[1], roi[2]], y)
        };
        let out = sliding_window(&img, dims, &mut model, &cfg, &mut |_| {}).unwrap();
        let at = |c: usize, i: usize, j: usize, k: usize| out.data[((c * 13 + i) * 5 + j) * 7 + k] as f64;
        let monai = [
            ((0, 0, 0, 0), 1.0),
            ((1, 0, 0, 0), 0.0),
            ((0, 12, 4, 6), 7.400000095367432),
            ((1, 12, 4, 6), -1.2000000476837158),
            ((1, 6, 2, 3), 0.5978115200996399),
            ((1, 3, 4, 1), 3.0999999046325684),
            ((0, 7, 1, 5), 4.0),
            ((1, 9, 3, 2), -7.194462299346924),
        ];
        for ((c, i, j, k), want) in monai {
            assert!((at(c, i, j, k) - want).abs() < 1e-6 * (1.0 + want.abs()), "({c}, {i}, {j}, {k})");
        }
        let sum: f64 = out.data.iter().map(|&v| v as f64).sum();
        assert!((sum - 3640.592197023332).abs() < 1e-6 * sum, "sum {sum}");
    }

    #[test]
    fn bad_model_output_is_an_error() {
        let cfg = WindowConfig { roi: [4, 4, 2], ..WindowConfig::default() };
        let img = vec![0f32; 32];
        let mut wrong = |x: &HostTensor| -> Result<HostTensor> { Ok(HostTensor::zeros(vec![x.shape[0], 2, 4, 4, 1])) };
        let e = sliding_window(&img, [4, 4, 2], &mut wrong, &cfg, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("model returned"), "{e}");
        let mut nan = |x: &HostTensor| -> Result<HostTensor> {
            let mut t = HostTensor::zeros(vec![x.shape[0], 2, 4, 4, 2]);
            t.data[5] = f32::NAN;
            Ok(t)
        };
        let e = sliding_window(&img, [4, 4, 2], &mut nan, &cfg, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
    }
}
