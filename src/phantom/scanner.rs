//! What the scanner does to the ideal image: coil-sensitivity bias, motion ghosts, limited
//! resolution (Gaussian blur or k-space truncation with its ringing), motion-like smearing
//! along the phase axis, gain, Rician noise, and storage as int16 or uint16 with a rescale
//! slope/intercept in the vendor's habit.

use super::acquisition::Acquisition;
use super::rng::{stream, Rng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resolution {
    /// In-plane Gaussian blur (sigma in pixels).
    Gaussian { sigma_px: f64 },
    /// Acquired with `ratio` of the reconstructed matrix along the phase axis and zero-filled:
    /// blur plus Gibbs ringing along that axis.
    Truncated { ratio: f64 },
}

/// How the pixel values are stored (DICOM PixelRepresentation 1 or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Int16,
    Uint16,
}

impl Storage {
    /// The stored value range.
    pub fn range(self) -> (i32, i32) {
        match self {
            Storage::Int16 => (i16::MIN as i32, i16::MAX as i32),
            Storage::Uint16 => (0, u16::MAX as i32),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScannerEffects {
    /// Real units per unit of relative intensity (fat is about 1).
    pub gain: f64,
    /// Added to real values (a global offset).
    pub offset: f64,
    /// Noise standard deviation per channel, relative to fat.
    pub noise_sigma: f64,
    /// Log bias field: `u, v, u^2, v^2, uv, w` coefficients over the grid normalised to
    /// [-1, 1], a posterior (spine coil) boost and a central (dielectric) term.
    pub bias: [f64; 8],
    /// Motion ghosts along the phase axis: amplitude and spacing in pixels.
    pub ghost: Option<(f64, usize)>,
    pub resolution: Option<Resolution>,
    /// Motion-like smearing along the phase axis: a triangular kernel of this half-width
    /// (pixels).
    pub motion_blur_px: Option<f64>,
    /// The body outside the field of view along the phase axis folds back in.
    pub wrap: bool,
    /// Phase oversampling (fraction of the field of view): only tissue beyond it folds in.
    pub phase_oversampling: f64,
    pub storage: Storage,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
}

impl ScannerEffects {
    pub fn artefacts(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.ghost.is_some() {
            a.push("motion ghosts".to_string());
        }
        match self.resolution {
            Some(Resolution::Gaussian { .. }) => a.push("blur".to_string()),
            Some(Resolution::Truncated { .. }) => a.push("truncation ringing".to_string()),
            None => {}
        }
        if self.motion_blur_px.is_some() {
            a.push("motion blur".to_string());
        }
        if self.wrap {
            a.push("wrap-around".to_string());
        }
        a
    }
}

pub fn sample_effects(rng: &mut Rng, acq: &Acquisition) -> ScannerEffects {
    let three_t = acq.field_strength_t > 2.0;
    let b: f64 = if three_t { 0.28 } else { 0.15 };
    let bias = [
        rng.uniform(-b, b),
        rng.uniform(-b, b),
        rng.uniform(-b * 0.8, b * 0.8),
        rng.uniform(-b * 0.8, b * 0.8),
        rng.uniform(-b * 0.5, b * 0.5),
        rng.uniform(-b * 0.4, b * 0.4),
        rng.uniform(0.0, if three_t { 0.4 } else { 0.3 }),
        if three_t { rng.uniform(-0.1, 0.35) } else { rng.uniform(-0.05, 0.12) },
    ];
    // Noise relative to fat: higher at 1.5 T, thinner slices and smaller pixels; now and then
    // a noisy study (a fast protocol, a coil element off).
    let voxel = acq.pixel_spacing_mm[0] * acq.pixel_spacing_mm[1] * acq.slice_thickness_mm;
    let snr = (voxel / (0.75 * 0.75 * 4.0)).powf(0.5);
    let base = if three_t { rng.uniform(0.01, 0.03) } else { rng.uniform(0.015, 0.045) };
    let noisy = if rng.chance(0.06) { rng.uniform(1.5, 2.5) } else { 1.0 };
    let noise_sigma = (base * noisy / snr).clamp(0.006, 0.12);
    let ghost = rng.chance(0.15).then(|| (rng.uniform(0.02, 0.07), rng.int(8, 40) as usize));
    let resolution = match rng.weighted(&[0.55, 0.25, 0.2]) {
        0 => None,
        1 => Some(Resolution::Gaussian { sigma_px: rng.uniform(0.3, 0.9) }),
        _ => Some(Resolution::Truncated { ratio: rng.uniform(0.5, 0.85) }),
    };
    let motion_blur_px = rng.chance(0.06).then(|| (rng.uniform(1.0, 3.5) * 100.0).round() / 100.0);
    // Only with the phase along anterior-posterior (the short axis): with left-right phase on a
    // small field the fold-over would make the study unreadable, and is prevented in practice.
    let wrap = rng.chance(0.15) && acq.phase_axis == 1;
    let phase_oversampling = (rng.uniform(0.1, 0.6) * 100.0).round() / 100.0;
    // Vendor habits: signed or unsigned storage, slope 1 or a real-valued rescale.
    let (gain, storage, slope, intercept) = match acq.vendor.as_str() {
        "GE-like" => (rng.uniform(1500.0, 6000.0), Storage::Int16, 1.0, 0.0),
        "Philips-like" => {
            let slope = (rng.uniform(0.4, 4.0) * 1e5).round() / 1e5;
            let intercept = if rng.chance(0.2) { rng.int(-50, 0) as f64 } else { 0.0 };
            let storage = if rng.chance(0.8) { Storage::Uint16 } else { Storage::Int16 };
            (rng.uniform(800.0, 3000.0) * slope, storage, slope, intercept)
        }
        "Canon-like" => {
            let storage = if rng.chance(0.5) { Storage::Uint16 } else { Storage::Int16 };
            (rng.uniform(300.0, 1500.0), storage, 1.0, 0.0)
        }
        _ => {
            let storage = if rng.chance(0.7) { Storage::Uint16 } else { Storage::Int16 };
            (rng.uniform(300.0, 2500.0), storage, 1.0, 0.0)
        }
    };
    let offset = gain * rng.uniform(-0.01, 0.04);
    ScannerEffects {
        gain,
        offset,
        noise_sigma,
        bias,
        ghost,
        resolution,
        motion_blur_px,
        wrap,
        phase_oversampling,
        storage,
        rescale_slope: slope,
        rescale_intercept: intercept,
    }
}

/// 1-D convolution of a plane along axis 0 or 1 with a kernel centred on its middle tap
/// (borders clamped). `tmp` is scratch space.
fn convolve(plane: &mut [f32], n0: usize, n1: usize, axis: usize, kernel: &[f32], tmp: &mut Vec<f32>) {
    let h = kernel.len() / 2;
    if axis == 1 {
        // Along each row, through a padded copy of the row.
        tmp.clear();
        tmp.resize(n1 + 2 * h, 0.0);
        for i in 0..n0 {
            let row = &mut plane[i * n1..(i + 1) * n1];
            tmp[h..h + n1].copy_from_slice(row);
            let (first, last) = (row[0], row[n1 - 1]);
            tmp[..h].fill(first);
            tmp[h + n1..].fill(last);
            for (j, o) in row.iter_mut().enumerate() {
                *o = kernel.iter().zip(&tmp[j..j + 2 * h + 1]).map(|(w, v)| w * v).sum();
            }
        }
    } else {
        // Whole rows at a time (contiguous, vectorises).
        tmp.clear();
        tmp.extend_from_slice(plane);
        for i in 0..n0 {
            let out = &mut plane[i * n1..(i + 1) * n1];
            out.fill(0.0);
            for (t, &w) in kernel.iter().enumerate() {
                let ii = (i as isize + t as isize - h as isize).clamp(0, n0 as isize - 1) as usize;
                for (o, &v) in out.iter_mut().zip(&tmp[ii * n1..(ii + 1) * n1]) {
                    *o += w * v;
                }
            }
        }
    }
}

/// A triangular smear of half-width `w` pixels (motion during the acquisition).
fn motion_kernel(w: f64) -> Vec<f32> {
    let h = w.ceil() as isize;
    let k: Vec<f64> = (-h..=h).map(|x| (1.0 - x.abs() as f64 / (w + 1.0)).max(0.0)).collect();
    let s: f64 = k.iter().sum();
    k.iter().map(|v| (v / s) as f32).collect()
}

fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let h = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f64> = (-h..=h).map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let s: f64 = k.iter().sum();
    k.iter().map(|v| (v / s) as f32).collect()
}

/// Zero-filled truncation to `ratio` of k-space: a sinc of width 1/ratio, Hann-tapered far out.
fn truncation_kernel(ratio: f64) -> Vec<f32> {
    let h = 12isize;
    let k: Vec<f64> = (-h..=h)
        .map(|x| {
            let x = x as f64;
            let s = if x == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * x * ratio).sin() / (std::f64::consts::PI * x * ratio)
            };
            let taper = 0.5 + 0.5 * (std::f64::consts::PI * x / (h as f64 + 1.0)).cos();
            s * taper
        })
        .collect();
    let s: f64 = k.iter().sum();
    k.iter().map(|v| (v / s) as f32).collect()
}

/// Applies the effects to the ideal slices (slice-major planes, relative units) and stores
/// them: returns the stored values (in `fx.storage`'s range), slice-major.
pub fn acquire(planes: &[f32], acq: &Acquisition, fx: &ScannerEffects, seed: u64) -> Vec<i32> {
    let [n0, n1, n2] = acq.dims;
    let plane = n0 * n1;
    let pa = acq.phase_axis;
    let kernels: Vec<(usize, Vec<f32>)> = {
        let mut v = Vec::new();
        match fx.resolution {
            Some(Resolution::Gaussian { sigma_px }) => {
                let g = gaussian_kernel(sigma_px);
                v.push((0, g.clone()));
                v.push((1, g));
            }
            Some(Resolution::Truncated { ratio }) => v.push((pa, truncation_kernel(ratio))),
            None => {}
        }
        if let Some(w) = fx.motion_blur_px {
            v.push((pa, motion_kernel(w)));
        }
        v
    };
    // Ghost partners along the phase axis: index + shift and index - shift, cyclic.
    let ghost = fx.ghost.map(|(amp, shift)| {
        let n = if pa == 0 { n0 } else { n1 };
        let s = shift % n;
        let fwd: Vec<usize> = (0..n).map(|x| (x + s) % n).collect();
        let back: Vec<usize> = (0..n).map(|x| (x + n - s) % n).collect();
        (amp as f32 * 0.5, fwd, back)
    });
    // The bias field is smooth: evaluate it every `STEP` pixels (the lattice runs one step
    // past the edge) and interpolate bilinearly.
    const STEP: usize = 8;
    let (ci, cj) = ((n0 - 1) / STEP + 2, (n1 - 1) / STEP + 2);
    let (lo, hi) = fx.storage.range();
    let (lo, hi) = (lo as f32, hi as f32);
    let out: Vec<Vec<i32>> = (0..n2)
        .into_par_iter()
        .map(|k| {
            let mut p = planes[k * plane..(k + 1) * plane].to_vec();
            let mut tmp = Vec::new();
            if let Some((amp, fwd, back)) = &ghost {
                tmp.clear();
                tmp.extend_from_slice(&p);
                let src = &tmp;
                for i in 0..n0 {
                    let row = &mut p[i * n1..(i + 1) * n1];
                    if pa == 0 {
                        let (a, b) = (&src[fwd[i] * n1..][..n1], &src[back[i] * n1..][..n1]);
                        for j in 0..n1 {
                            row[j] += amp * (a[j] + b[j]);
                        }
                    } else {
                        let s = &src[i * n1..(i + 1) * n1];
                        for j in 0..n1 {
                            row[j] += amp * (s[fwd[j]] + s[back[j]]);
                        }
                    }
                }
            }
            for (axis, kern) in &kernels {
                convolve(&mut p, n0, n1, *axis, kern, &mut tmp);
            }
            let b = &fx.bias;
            let w = if n2 > 1 { 2.0 * k as f64 / (n2 - 1) as f64 - 1.0 } else { 0.0 };
            let bias = |i: usize, j: usize| -> f32 {
                let u = 2.0 * i as f64 / (n0 - 1) as f64 - 1.0;
                let v = 2.0 * j as f64 / (n1 - 1) as f64 - 1.0;
                let lb = b[0] * u
                    + b[1] * v
                    + b[2] * u * u
                    + b[3] * v * v
                    + b[4] * u * v
                    + b[5] * w
                    + b[6] * (-(v - 1.0) * (v - 1.0) / 0.6).exp()
                    + b[7] * (-(u * u + v * v) / 0.5).exp();
                lb.exp() as f32
            };
            let gain = fx.gain as f32;
            // Gain folded into the coarse field.
            let coarse: Vec<f32> = (0..ci * cj).map(|x| bias((x / cj) * STEP, (x % cj) * STEP) * gain).collect();
            let mut rng = Rng::new(seed, stream::NOISE_BASE + k as u64);
            let sigma = (fx.noise_sigma * fx.gain) as f32;
            let (offset, icpt, inv_slope) =
                (fx.offset as f32, fx.rescale_intercept as f32, (1.0 / fx.rescale_slope) as f32);
            let mut raw = vec![0i32; plane];
            let mut field = vec![0f32; n1];
            for i in 0..n0 {
                let (a, fa) = (i / STEP, (i % STEP) as f32 / STEP as f32);
                for (j, f) in field.iter_mut().enumerate() {
                    let (c, fc) = (j / STEP, (j % STEP) as f32 / STEP as f32);
                    let q = |a: usize, c: usize| coarse[a * cj + c];
                    let top = q(a, c) + (q(a, c + 1) - q(a, c)) * fc;
                    let bot = q(a + 1, c) + (q(a + 1, c + 1) - q(a + 1, c)) * fc;
                    *f = top + (bot - top) * fa;
                }
                let src = &p[i * n1..(i + 1) * n1];
                let dst = &mut raw[i * n1..(i + 1) * n1];
                for j in 0..n1 {
                    let s = src[j] * field[j];
                    let (g1, g2) = rng.normal_pair_f32();
                    let re = s + sigma * g1;
                    let im = sigma * g2;
                    let m = (re * re + im * im).sqrt() + offset;
                    // Round half up, clamped to the stored range (truncation of a non-negative
                    // value is its floor).
                    let r = ((m - icpt) * inv_slope + 0.5 - lo).clamp(0.0, hi - lo);
                    dst[j] = r as i32 + lo as i32;
                }
            }
            raw
        })
        .collect();
    out.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_are_normalised_and_ring() {
        let g = gaussian_kernel(0.6);
        assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let t = truncation_kernel(0.6);
        assert!((t.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // Ringing: negative side lobes.
        assert!(t.iter().any(|&v| v < -0.01));
    }
}
