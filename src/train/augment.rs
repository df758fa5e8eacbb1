//! The reference's training augmentation, per volume, seeded and reproducible.
//!
//! The reference (`process.py`, MONAI 0.9) applies to each cached, preprocessed volume:
//! 1. `RandAffined(prob=0.15, rotate_range=(0.05, 0.05, None), scale_range=(0.1, 0.1, None),
//!    mode=("bilinear", "nearest"))`, default `padding_mode="reflection"`, output the input's
//!    size. In MONAI a `None` range is skipped, so the matrix is `Rx(a0) @ Ry(a1) @ diag(s0, s1, 1)`
//!    with `a0, a1 ~ U(-0.05, 0.05)` and `s0, s1 ~ 1 + U(-0.1, 0.1)`, where `Rx` rotates in
//!    the plane of axes 1 and 2 and `Ry` in the plane of axes 0 and 2 (MONAI's `create_rotate`:
//!    parameter `i` rotates *about* axis `i`). Note that this is not an in-plane rotation: the
//!    reference tilts the volume about its two in-plane axes, in voxel units, which is what
//!    [`AugmentConfig::default`] reproduces; set `rotate_range` to `[0, 0, 0.05]` for a rotation
//!    in the axial plane instead. The matrix maps centred output voxel coordinates to centred
//!    input coordinates (`src = M (o - (d-1)/2) + (d-1)/2`); sampling is PyTorch's
//!    `grid_sample(align_corners=True, padding_mode="reflection")`, trilinear for the image and
//!    nearest (round half to even) for the label ([`warp_linear`], [`warp_nearest`]).
//! 2. `RandCropByPosNegLabeld(spatial_size=(192, 192, 16), num_samples=3)` (pos = neg = 1): for
//!    each crop, foreground with probability `pos / (pos + neg)` (always background when the
//!    label is empty, always foreground when it is full), a centre drawn uniformly among those
//!    voxels of the (transformed) label, moved into the range where the crop fits
//!    ([`crop_start`], MONAI's `correct_crop_centers`).
//! 3. `SpatialPadd(reflect)`: a no-op after the crop (volumes are padded to at least the patch
//!    before step 1, as preprocessing does; [`augment`] pads smaller samples the same way).
//! 4. Per crop, `RandGaussianNoised(prob=0.15, std=0.01)`: the noise's standard deviation is
//!    itself drawn from `U(0, 0.01)` (MONAI 0.9), then `N(0, std)` is added to every voxel.
//! 5. Per crop, `RandFlipd` along axis 0, 1, 2, each with probability 0.5.
//!
//! Beyond the reference ([`IntensityAug`], off in [`AugmentConfig::default`]): per crop, before
//! the noise, a random intensity scale and shift (MONAI's `RandScaleIntensity` and
//! `RandShiftIntensity`), a contrast gamma on the crop's own range (`RandAdjustContrast`) and a
//! smooth multiplicative bias field (`RandBiasField`, degree 2), so that a network trained on
//! one generator's contrasts holds on another's. Their draws are made only when enabled, so the
//! reference's stream is unchanged.
//!
//! Randomness: one ChaCha20 stream per volume, keyed by `(seed, epoch, sample index)`
//! ([`volume_rng`]), drawn in a fixed order (affine; crop centres; per crop noise then flips),
//! so a patch depends on nothing else: not on threads, batch order or other volumes.

use std::borrow::Cow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::pipeline::preprocess::pad_reflect;
use crate::tensor::{numel, Dims};
use crate::train::data::Sample;

/// A 3x3 matrix acting on centred voxel coordinates.
pub type Mat3 = [[f64; 3]; 3];

/// `RandAffine`'s knobs (MONAI semantics, see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineAug {
    pub prob: f64,
    /// Rotation about axis `i` drawn from `U(-r[i], r[i])` radians (0: none).
    pub rotate_range: [f64; 3],
    /// Scale along axis `i` drawn from `1 + U(-s[i], s[i])` (0: none). Must be below 1.
    pub scale_range: [f64; 3],
}

/// Intensity augmentations the reference does not use (all off by default): per crop, each
/// applied with its own probability, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct IntensityAug {
    /// `v * (1 + U(-scale, scale)) + U(-shift, shift)` with probability `scale_shift_prob`.
    pub scale_shift_prob: f64,
    pub scale: f64,
    pub shift: f64,
    /// Contrast: `((v - min) / (max - min))^g * (max - min) + min`, `g ~ U(gamma[0], gamma[1])`.
    pub gamma_prob: f64,
    pub gamma: [f64; 2],
    /// Bias field: `(v - min) * exp(p(x)) + min`, `p` a degree-2 polynomial over the crop's
    /// coordinates in `[-1, 1]` with coefficients `U(-bias, bias)`.
    pub bias_prob: f64,
    pub bias: f64,
}

impl IntensityAug {
    fn validate(&self) -> std::result::Result<(), String> {
        for (name, p) in
            [("scale/shift", self.scale_shift_prob), ("gamma", self.gamma_prob), ("bias field", self.bias_prob)]
        {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} probability {p} is not in [0, 1]"));
            }
        }
        for (name, v) in [("scale", self.scale), ("shift", self.shift), ("bias", self.bias)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("{name} range {v} must be a non-negative number"));
            }
        }
        if self.scale >= 1.0 {
            return Err(format!("scale range {} must be below 1", self.scale));
        }
        let [lo, hi] = self.gamma;
        if self.gamma_prob > 0.0 && !(lo > 0.0 && hi >= lo && hi.is_finite()) {
            return Err(format!("gamma range [{lo}, {hi}] must be positive and ordered"));
        }
        Ok(())
    }

    /// Apply to one crop of `dims`, drawing from `rng` only for the enabled parts.
    fn apply<R: Rng>(&self, img: &mut [f32], dims: Dims, rng: &mut R) -> IntensityInfo {
        let mut info = IntensityInfo::default();
        if self.scale_shift_prob > 0.0 && rng.random::<f64>() < self.scale_shift_prob {
            let a = 1.0 + self.scale * (2.0 * rng.random::<f64>() - 1.0);
            let b = self.shift * (2.0 * rng.random::<f64>() - 1.0);
            for v in img.iter_mut() {
                *v = (*v as f64 * a + b) as f32;
            }
            info.scale_shift = Some((a, b));
        }
        if self.gamma_prob > 0.0 && rng.random::<f64>() < self.gamma_prob {
            let g = self.gamma[0] + (self.gamma[1] - self.gamma[0]) * rng.random::<f64>();
            let (lo, hi) = min_max(img);
            let range = hi - lo;
            if range > 0.0 {
                for v in img.iter_mut() {
                    *v = (((*v as f64 - lo) / range).powf(g) * range + lo) as f32;
                }
            }
            info.gamma = Some(g);
        }
        if self.bias_prob > 0.0 && rng.random::<f64>() < self.bias_prob {
            // degree-2 terms over (x, y, z): 1, x, y, z, x2, y2, z2, xy, xz, yz (constant
            // term dropped: it would only scale the crop)
            let c: [f64; 9] = std::array::from_fn(|_| self.bias * (2.0 * rng.random::<f64>() - 1.0));
            let (lo, _) = min_max(img);
            let coord = |i: usize, n: usize| if n > 1 { 2.0 * i as f64 / (n - 1) as f64 - 1.0 } else { 0.0 };
            for i in 0..dims[0] {
                let x = coord(i, dims[0]);
                for j in 0..dims[1] {
                    let y = coord(j, dims[1]);
                    let row = (i * dims[1] + j) * dims[2];
                    for k in 0..dims[2] {
                        let z = coord(k, dims[2]);
                        let p = c[0] * x
                            + c[1] * y
                            + c[2] * z
                            + c[3] * x * x
                            + c[4] * y * y
                            + c[5] * z * z
                            + c[6] * x * y
                            + c[7] * x * z
                            + c[8] * y * z;
                        let v = &mut img[row + k];
                        *v = ((*v as f64 - lo) * p.exp() + lo) as f32;
                    }
                }
            }
            info.bias = Some(c);
        }
        info
    }
}

fn min_max(v: &[f32]) -> (f64, f64) {
    let (lo, hi) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    (lo as f64, hi as f64)
}

/// What [`IntensityAug`] did to a crop.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct IntensityInfo {
    pub scale_shift: Option<(f64, f64)>,
    pub gamma: Option<f64>,
    pub bias: Option<[f64; 9]>,
}

/// The whole augmentation recipe. [`Default`] is the reference's.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Crop size (the network's patch).
    pub patch: Dims,
    /// Crops per volume (`num_samples`).
    pub crops: usize,
    /// Relative weights of foreground- and background-centred crops.
    pub pos: f64,
    pub neg: f64,
    pub affine: AffineAug,
    /// Probability of adding Gaussian noise to a crop, and the upper bound of its std.
    pub noise_prob: f64,
    pub noise_std: f64,
    /// Probability of flipping a crop along each axis.
    pub flip_prob: [f64; 3],
    /// Beyond the reference (off by default).
    pub intensity: IntensityAug,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            patch: [192, 192, 16],
            crops: 3,
            pos: 1.0,
            neg: 1.0,
            affine: AffineAug { prob: 0.15, rotate_range: [0.05, 0.05, 0.0], scale_range: [0.1, 0.1, 0.0] },
            noise_prob: 0.15,
            noise_std: 0.01,
            flip_prob: [0.5; 3],
            intensity: IntensityAug::default(),
        }
    }
}

impl AugmentConfig {
    /// Positive/negative crops only: no affine, noise or flips.
    pub fn crops_only(patch: Dims, crops: usize) -> Self {
        AugmentConfig {
            patch,
            crops,
            affine: AffineAug { prob: 0.0, ..AugmentConfig::default().affine },
            noise_prob: 0.0,
            flip_prob: [0.0; 3],
            ..AugmentConfig::default()
        }
    }

    /// Refuse settings that cannot be run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Value(format!("augmentation: {m}")));
        if self.patch.contains(&0) {
            return bad(format!("patch {:?} has an empty axis", self.patch));
        }
        if self.crops == 0 {
            return bad("crops per volume must be at least 1".into());
        }
        let prob_ok = |p: f64| (0.0..=1.0).contains(&p);
        for (name, p) in [
            ("affine probability", self.affine.prob),
            ("noise probability", self.noise_prob),
            ("flip probability (axis 0)", self.flip_prob[0]),
            ("flip probability (axis 1)", self.flip_prob[1]),
            ("flip probability (axis 2)", self.flip_prob[2]),
        ] {
            if !prob_ok(p) {
                return bad(format!("{name} {p} is not in [0, 1]"));
            }
        }
        if !(self.pos >= 0.0 && self.neg >= 0.0 && self.pos + self.neg > 0.0 && (self.pos + self.neg).is_finite()) {
            return bad(format!("pos {} / neg {} must be non-negative and not both 0", self.pos, self.neg));
        }
        if let Err(m) = self.intensity.validate() {
            return bad(m);
        }
        if !(self.noise_std >= 0.0 && self.noise_std.is_finite()) {
            return bad(format!("noise std {} must be a non-negative number", self.noise_std));
        }
        for a in 0..3 {
            let r = self.affine.rotate_range[a];
            let s = self.affine.scale_range[a];
            if !(r >= 0.0 && r.is_finite()) {
                return bad(format!("rotate range {r} (axis {a}) must be a non-negative number"));
            }
            if !((0.0..1.0).contains(&s)) {
                return bad(format!("scale range {s} (axis {a}) must be in [0, 1)"));
            }
        }
        Ok(())
    }
}

/// What was done to make a patch (for logs and tests).
#[derive(Clone, Debug, PartialEq)]
pub struct PatchInfo {
    /// Whether the crop centre was drawn among foreground voxels.
    pub positive: bool,
    /// The drawn centre voxel (on the volume the crop was taken from), before correction.
    pub centre: [usize; 3],
    /// First voxel of the crop on that volume.
    pub start: [usize; 3],
    /// The affine matrix applied to the whole volume first, if any.
    pub affine: Option<Mat3>,
    /// The std of the noise added, if any.
    pub noise_std: Option<f64>,
    /// Axes the patch was flipped along (after cropping and noise).
    pub flipped: [bool; 3],
    /// The intensity augmentation applied before the noise.
    pub intensity: IntensityInfo,
}

/// One augmented training patch.
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    /// Row-major over `dims` (= the configured patch), last axis fastest.
    pub image: Vec<f32>,
    pub label: Vec<u8>,
    pub dims: Dims,
    pub info: PatchInfo,
}

/// The random stream of one volume in one epoch: ChaCha20 keyed by the three numbers.
pub fn volume_rng(seed: u64, epoch: u64, index: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(b"fmsegaug");
    ChaCha20Rng::from_seed(key)
}

/// MONAI's `create_rotate(3, r) @ create_scale(3, s)`: `Rx(r0) @ Ry(r1) @ Rz(r2) @ diag(s)`.
pub fn affine_matrix(rot: [f64; 3], scale: [f64; 3]) -> Mat3 {
    let (s0, c0) = rot[0].sin_cos();
    let (s1, c1) = rot[1].sin_cos();
    let (s2, c2) = rot[2].sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, c0, -s0], [0.0, s0, c0]];
    let ry = [[c1, 0.0, s1], [0.0, 1.0, 0.0], [-s1, 0.0, c1]];
    let rz = [[c2, -s2, 0.0], [s2, c2, 0.0], [0.0, 0.0, 1.0]];
    let mul = |a: &Mat3, b: &Mat3| -> Mat3 {
        let mut o = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                o[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
            }
        }
        o
    };
    let mut m = mul(&mul(&rx, &ry), &rz);
    for row in m.iter_mut() {
        for (j, v) in row.iter_mut().enumerate() {
            *v *= scale[j];
        }
    }
    m
}

/// PyTorch's reflection of a sampling coordinate with `align_corners=True` (mirror about the
/// first and last voxel centres), then clipped to `[0, n - 1]`.
pub fn reflect_coord(x: f64, n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let span = (n - 1) as f64;
    if (0.0..=span).contains(&x) {
        return x;
    }
    let a = x.abs();
    let extra = a % span;
    let flips = (a / span).floor();
    let r = if flips % 2.0 == 0.0 { extra } else { span - extra };
    r.clamp(0.0, span)
}

/// Source coordinate of output voxel `o` under `m` (centred on the volume).
#[inline]
fn source_coord(m: &Mat3, o: [usize; 3], dims: Dims) -> [f64; 3] {
    let h = dims.map(|d| (d as f64 - 1.0) / 2.0);
    let c = [o[0] as f64 - h[0], o[1] as f64 - h[1], o[2] as f64 - h[2]];
    [0, 1, 2].map(|r| reflect_coord(m[r][0] * c[0] + m[r][1] * c[1] + m[r][2] * c[2] + h[r], dims[r]))
}

/// Resample a volume under `m` (see the module docs), trilinear, reflection at the borders;
/// output on the same grid.
pub fn warp_linear(src: &[f32], dims: Dims, m: &Mat3) -> Vec<f32> {
    let mut out = Vec::with_capacity(numel(dims));
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = source_coord(m, [i, j, k], dims);
                let mut lo = [0usize; 3];
                let mut hi = [0usize; 3];
                let mut w = [0f64; 3];
                for a in 0..3 {
                    let f = p[a].floor();
                    lo[a] = f as usize;
                    w[a] = p[a] - f;
                    // at the last voxel the upper neighbour is out of bounds with weight 0
                    hi[a] = (lo[a] + 1).min(dims[a] - 1);
                }
                let at = |x: usize, y: usize, z: usize| src[(x * dims[1] + y) * dims[2] + z] as f64;
                let mut acc = 0.0;
                for (x, wx) in [(lo[0], 1.0 - w[0]), (hi[0], w[0])] {
                    for (y, wy) in [(lo[1], 1.0 - w[1]), (hi[1], w[1])] {
                        for (z, wz) in [(lo[2], 1.0 - w[2]), (hi[2], w[2])] {
                            acc += wx * wy * wz * at(x, y, z);
                        }
                    }
                }
                out.push(acc as f32);
            }
        }
    }
    out
}

/// [`warp_linear`] with nearest-neighbour sampling (round half to even), for labels.
pub fn warp_nearest<T: Copy>(src: &[T], dims: Dims, m: &Mat3) -> Vec<T> {
    let mut out = Vec::with_capacity(numel(dims));
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let p = source_coord(m, [i, j, k], dims).map(|v| v.round_ties_even() as usize);
                out.push(src[(p[0] * dims[1] + p[1]) * dims[2] + p[2]]);
            }
        }
    }
    out
}

/// First voxel of a `patch` crop around `centre` on a volume of `dims` (each at least the
/// patch): MONAI's `correct_crop_centers` (centre clamped to
/// `[p / 2, floor(L + 1 - p / 2) - 1]`) then `start = centre - p / 2`.
pub fn crop_start(centre: [usize; 3], dims: Dims, patch: Dims) -> [usize; 3] {
    [0, 1, 2].map(|a| {
        let (l, p) = (dims[a], patch[a]);
        let lo = p / 2;
        let mut end = (l + 1).saturating_sub(p.div_ceil(2)); // floor(l + 1 - p / 2)
        if end == lo {
            end += 1;
        }
        centre[a].max(lo).min(end - 1) - lo
    })
}

/// Copy the `patch` block starting at `start` out of row-major `src` of `dims`.
pub fn crop<T: Copy>(src: &[T], dims: Dims, start: [usize; 3], patch: Dims) -> Vec<T> {
    let mut out = Vec::with_capacity(numel(patch));
    for i in 0..patch[0] {
        for j in 0..patch[1] {
            let row = ((start[0] + i) * dims[1] + start[1] + j) * dims[2] + start[2];
            out.extend_from_slice(&src[row..row + patch[2]]);
        }
    }
    out
}

/// Reverse row-major `data` of `dims` along `axis` in place.
pub fn flip<T>(data: &mut [T], dims: Dims, axis: usize) {
    let [d0, d1, d2] = dims;
    match axis {
        0 => {
            for i in 0..d0 / 2 {
                for r in 0..d1 * d2 {
                    data.swap(i * d1 * d2 + r, (d0 - 1 - i) * d1 * d2 + r);
                }
            }
        }
        1 => {
            for i in 0..d0 {
                for j in 0..d1 / 2 {
                    for k in 0..d2 {
                        data.swap((i * d1 + j) * d2 + k, (i * d1 + d1 - 1 - j) * d2 + k);
                    }
                }
            }
        }
        _ => {
            for row in data.chunks_mut(d2.max(1)) {
                row.reverse();
            }
        }
    }
}

/// Reflect-pad image and label to at least `patch` (split evenly, extra voxel at the end), as
/// MONAI's `SpatialPad(mode="reflect")`.
fn pad_to_patch<'a>(s: &'a Sample, patch: Dims) -> (Cow<'a, [f32]>, Cow<'a, [u8]>, Dims) {
    if (0..3).all(|a| s.dims[a] >= patch[a]) {
        return (Cow::Borrowed(&s.image), Cow::Borrowed(&s.label), s.dims);
    }
    let pad = [0, 1, 2].map(|a| {
        let w = patch[a].saturating_sub(s.dims[a]);
        [w / 2, w - w / 2]
    });
    let dims = [0, 1, 2].map(|a| s.dims[a] + pad[a][0] + pad[a][1]);
    (Cow::Owned(pad_reflect(&s.image, s.dims, pad)), Cow::Owned(pad_reflect(&s.label, s.dims, pad)), dims)
}

/// Index of the `n`-th voxel (0-based) whose label is `want` (foreground when `want`).
fn nth_voxel(label: &[u8], want: bool, n: usize) -> Option<usize> {
    label.iter().enumerate().filter(|(_, &v)| (v != 0) == want).nth(n).map(|(i, _)| i)
}

/// Augment one volume into `cfg.crops` patches with the stream of `(seed, epoch, index)`.
pub fn augment(sample: &Sample, cfg: &AugmentConfig, seed: u64, epoch: u64, index: u64) -> Result<Vec<Patch>> {
    augment_with(sample, cfg, &mut volume_rng(seed, epoch, index))
}

/// [`augment`] with a caller's random stream.
pub fn augment_with<R: Rng>(sample: &Sample, cfg: &AugmentConfig, rng: &mut R) -> Result<Vec<Patch>> {
    cfg.validate()?;
    let n = numel(sample.dims);
    if n == 0 || sample.image.len() != n || sample.label.len() != n {
        return Err(Error::Shape(format!(
            "sample {}: dims {:?} need {n} voxels, image has {} and label {}",
            sample.id,
            sample.dims,
            sample.image.len(),
            sample.label.len()
        )));
    }
    let (mut image, mut label, dims) = pad_to_patch(sample, cfg.patch);

    // 1. RandAffine on the whole volume (parameters drawn whether or not it applies)
    let apply = rng.random::<f64>() < cfg.affine.prob;
    let mut rot = [0.0; 3];
    let mut scale = [1.0; 3];
    for a in 0..3 {
        let r = cfg.affine.rotate_range[a];
        rot[a] = -r + 2.0 * r * rng.random::<f64>();
    }
    for a in 0..3 {
        let s = cfg.affine.scale_range[a];
        scale[a] = 1.0 + (-s + 2.0 * s * rng.random::<f64>());
    }
    let affine = apply.then(|| affine_matrix(rot, scale));
    if let Some(m) = &affine {
        image = Cow::Owned(warp_linear(&image, dims, m));
        label = Cow::Owned(warp_nearest(&label, dims, m));
    }

    // 2. crop centres
    let fg = label.iter().filter(|&&v| v != 0).count();
    let bg = label.len() - fg;
    let pos_ratio = if fg == 0 {
        0.0
    } else if bg == 0 {
        1.0
    } else {
        cfg.pos / (cfg.pos + cfg.neg)
    };
    let mut crops = Vec::with_capacity(cfg.crops);
    for _ in 0..cfg.crops {
        let positive = rng.random::<f64>() < pos_ratio;
        let count = if positive { fg } else { bg };
        let r = rng.random_range(0..count);
        let idx = nth_voxel(&label, positive, r)
            .ok_or_else(|| Error::Other("internal: crop centre beyond the voxel count".into()))?;
        let centre = [idx / (dims[1] * dims[2]), (idx / dims[2]) % dims[1], idx % dims[2]];
        crops.push((positive, centre, crop_start(centre, dims, cfg.patch)));
    }

    // 3-5. per crop: (pad: no-op), noise, flips
    let mut out = Vec::with_capacity(cfg.crops);
    for (positive, centre, start) in crops {
        let mut img = crop(&image, dims, start, cfg.patch);
        let mut lab = crop(&label, dims, start, cfg.patch);
        let intensity = cfg.intensity.apply(&mut img, cfg.patch, rng);
        let mut noise_std = None;
        if rng.random::<f64>() < cfg.noise_prob {
            let std = cfg.noise_std * rng.random::<f64>();
            for v in img.iter_mut() {
                let z: f64 = rng.sample(StandardNormal);
                *v += (std * z) as f32;
            }
            noise_std = Some(std);
        }
        let mut flipped = [false; 3];
        for a in 0..3 {
            if rng.random::<f64>() < cfg.flip_prob[a] {
                flip(&mut img, cfg.patch, a);
                flip(&mut lab, cfg.patch, a);
                flipped[a] = true;
            }
        }
        out.push(Patch {
            image: img,
            label: lab,
            dims: cfg.patch,
            info: PatchInfo { positive, centre, start, affine, noise_std, flipped, intensity },
        });
    }
    Ok(out)
}
