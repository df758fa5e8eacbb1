//! What the scanner does to the ideal image: coil-sensitivity bias, motion ghosts, limited
//! resolution (Gaussian blur or k-space truncation with its ringing), gain, Rician noise, and
//! storage as int16 with a rescale slope/intercept in the vendor's habit.

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
    /// The body outside the field of view along the phase axis folds back in.
    pub wrap: bool,
    /// Phase oversampling (fraction of the field of view): only tissue beyond it folds in.
    pub phase_oversampling: f64,
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
        if self.wrap {
            a.push("wrap-around".to_string());
        }
        a
    }
}

pub fn sample_effects(rng: &mut Rng, acq: &Acquisition) -> ScannerEffects {
    let three_t = acq.field_strength_t > 2.0;
    let b: f64 = if three_t { 0.22 } else { 0.12 };
    let bias = [
        rng.uniform(-b, b),
        rng.uniform(-b, b),
        rng.uniform(-b * 0.8, b * 0.8),
        rng.uniform(-b * 0.8, b * 0.8),
        rng.uniform(-b * 0.5, b * 0.5),
        rng.uniform(-b * 0.4, b * 0.4),
        rng.uniform(0.0, if three_t { 0.35 } else { 0.25 }),
        if three_t { rng.uniform(-0.1, 0.3) } else { rng.uniform(-0.05, 0.1) },
    ];
    let noise_sigma = if three_t { rng.uniform(0.012, 0.035) } else { rng.uniform(0.018, 0.05) };
    let ghost = rng.chance(0.15).then(|| (rng.uniform(0.02, 0.07), rng.int(8, 40) as usize));
    let resolution = match rng.weighted(&[0.55, 0.25, 0.2]) {
        0 => None,
        1 => Some(Resolution::Gaussian { sigma_px: rng.uniform(0.3, 0.8) }),
        _ => Some(Resolution::Truncated { ratio: rng.uniform(0.55, 0.85) }),
    };
    // Only with the phase along anterior-posterior (the short axis): with left-right phase on a
    // small field the fold-over would make the study unreadable, and is prevented in practice.
    let wrap = rng.chance(0.15) && acq.phase_axis == 1;
    let phase_oversampling = (rng.uniform(0.1, 0.6) * 100.0).round() / 100.0;
    let (gain, slope, intercept) = match acq.vendor.as_str() {
        "GE-like" => (rng.uniform(1500.0, 6000.0), 1.0, 0.0),
        "Philips-like" => {
            let slope = (rng.uniform(0.4, 4.0) * 1e5).round() / 1e5;
            let intercept = if rng.chance(0.2) { rng.int(-50, 50) as f64 } else { 0.0 };
            (rng.uniform(800.0, 3000.0) * slope, slope, intercept)
        }
        "Canon-like" => (rng.uniform(300.0, 1000.0), 1.0, 0.0),
        _ => (rng.uniform(500.0, 1600.0), 1.0, 0.0),
    };
    let offset = gain * rng.uniform(-0.01, 0.03);
    ScannerEffects {
        gain,
        offset,
        noise_sigma,
        bias,
        ghost,
        resolution,
        wrap,
        phase_oversampling,
        rescale_slope: slope,
        rescale_intercept: intercept,
    }
}

/// 1-D convolution of a plane along axis 0 or 1 with a symmetric kernel (borders clamped).
fn convolve(plane: &mut [f32], n0: usize, n1: usize, axis: usize, kernel: &[f32]) {
    let h = kernel.len() / 2;
    let src = plane.to_vec();
    for i in 0..n0 {
        for j in 0..n1 {
            let mut acc = 0.0f32;
            for (t, w) in kernel.iter().enumerate() {
                let o = t as isize - h as isize;
                let (ii, jj) = if axis == 0 {
                    ((i as isize + o).clamp(0, n0 as isize - 1) as usize, j)
                } else {
                    (i, (j as isize + o).clamp(0, n1 as isize - 1) as usize)
                };
                acc += w * src[ii * n1 + jj];
            }
            plane[i * n1 + j] = acc;
        }
    }
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
/// them: returns the int16 values, slice-major.
pub fn acquire(planes: &[f32], acq: &Acquisition, fx: &ScannerEffects, seed: u64) -> Vec<i16> {
    let [n0, n1, n2] = acq.dims;
    let plane = n0 * n1;
    let out: Vec<Vec<i16>> = (0..n2)
        .into_par_iter()
        .map(|k| {
            let mut p = planes[k * plane..(k + 1) * plane].to_vec();
            let pa = acq.phase_axis;
            if let Some((amp, shift)) = fx.ghost {
                let src = p.clone();
                let n = if pa == 0 { n0 } else { n1 };
                let amp = amp as f32 * 0.5;
                for i in 0..n0 {
                    for j in 0..n1 {
                        let (a, b) = if pa == 0 {
                            (((i + shift) % n) * n1 + j, ((i + n - shift % n) % n) * n1 + j)
                        } else {
                            (i * n1 + (j + shift) % n, i * n1 + (j + n - shift % n) % n)
                        };
                        p[i * n1 + j] += amp * (src[a] + src[b]);
                    }
                }
            }
            match fx.resolution {
                Some(Resolution::Gaussian { sigma_px }) => {
                    let kern = gaussian_kernel(sigma_px);
                    convolve(&mut p, n0, n1, 0, &kern);
                    convolve(&mut p, n0, n1, 1, &kern);
                }
                Some(Resolution::Truncated { ratio }) => convolve(&mut p, n0, n1, pa, &truncation_kernel(ratio)),
                None => {}
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
            // The field is smooth: evaluate it every `STEP` pixels (the lattice runs one step
            // past the edge) and interpolate bilinearly.
            const STEP: usize = 8;
            let (ci, cj) = ((n0 - 1) / STEP + 2, (n1 - 1) / STEP + 2);
            let coarse: Vec<f32> = (0..ci * cj).map(|x| bias((x / cj) * STEP, (x % cj) * STEP)).collect();
            let mut rng = Rng::new(seed, stream::NOISE_BASE + k as u64);
            let sigma = (fx.noise_sigma * fx.gain) as f32;
            let gain = fx.gain as f32;
            let mut raw = vec![0i16; plane];
            for i in 0..n0 {
                let (a, fa) = (i / STEP, (i % STEP) as f32 / STEP as f32);
                for j in 0..n1 {
                    let (c, fc) = (j / STEP, (j % STEP) as f32 / STEP as f32);
                    let q = |a: usize, c: usize| coarse[a * cj + c];
                    let top = q(a, c) + (q(a, c + 1) - q(a, c)) * fc;
                    let bot = q(a + 1, c) + (q(a + 1, c + 1) - q(a + 1, c)) * fc;
                    let s = p[i * n1 + j] * (top + (bot - top) * fa) * gain;
                    let (g1, g2) = rng.normal_pair_f32();
                    let re = s + sigma * g1;
                    let im = sigma * g2;
                    let m = (re * re + im * im).sqrt() as f64 + fx.offset;
                    let r = ((m - fx.rescale_intercept) / fx.rescale_slope).round();
                    raw[i * n1 + j] = r.clamp(i16::MIN as f64, i16::MAX as f64) as i16;
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
