//! Synthetic axial-oblique T1-weighted sacroiliac-joint MRI studies with ground-truth
//! fat-metaplasia masks: the built-in example, the end-to-end test data and the training data.
//!
//! A case is a pure function of its seed: patient (diagnosis, age, sex, HLA-B27, CRP, ESR), anatomy
//! (sacrum with canal and foramina, both ilia, the auricular joints, muscles, pelvic contents,
//! body outline; all sizes, curvatures and asymmetries drawn per case), lesions and
//! confounders, the acquisition (tilted slab, matrix, pixel size, slices, field strength,
//! vendor habits) and the scanner's effects (bias, noise, ghosts, blur or ringing, wrap). The
//! anatomy lives in a pelvis frame as implicit shapes ([`sdf`], [`anatomy`], [`pelvis`]); the
//! renderer ([`mod@render`]) samples them on the oblique grid with partial-volume anti-aliasing,
//! and the mask is the lesions' coverage thresholded at one half.
//!
//! Layout: [`rng`], [`noise`] and [`sdf`] underneath; [`patient`] and [`acquisition`] (who and
//! how); [`anatomy`] (joints, sacrum, ilia), [`shapes`] and [`pelvis`] (soft tissue, the whole
//! pelvis drawn per case); [`tissue`] (intensities, marrow), [`lesions`], [`confounders`];
//! [`layers`] and [`scene`] (what gets painted, in order); [`mod@render`] (partial-volume
//! rasterisation) and [`scanner`] (bias, noise, artefacts, int16 storage); [`manifest`] is what
//! gets written next to the images and [`preview`] draws PNG montages.
//!
//! Development aids (ignored tests, run by hand): `PHANTOM_SEEDS=1,2 PHANTOM_OUT=/tmp/p cargo
//! test --release --lib phantom::dev_preview -- --ignored` writes montages (`PHANTOM_IDEAL=1`
//! without scanner effects, `PHANTOM_K=0,5` chosen slices); `phantom::dev::layer_timing` times
//! each layer.

pub mod acquisition;
pub mod anatomy;
pub mod confounders;
pub mod layers;
pub mod lesions;
pub mod manifest;
pub mod noise;
pub mod patient;
pub mod pelvis;
pub mod preview;
pub mod render;
pub mod rng;
pub mod scanner;
pub mod scene;
pub mod sdf;
pub mod shapes;
pub mod tissue;

use crate::io::dicom::write::StoredSamples;
use crate::volume::Volume;
pub use acquisition::Acquisition;
use acquisition::{grid_of, sample_acquisition, Pose};
use anatomy::{Bone, Side};
use layers::{anatomy_layers, Painter};
use manifest::{CaseManifest, LesionRecord};
use patient::sample_patient;
pub use patient::{Diagnosis, Patient, Sex};
use pelvis::{sample_pelvis, Pelvis};
use render::{render, Grid};
use rng::{stream, Rng};
use scene::{FmSet, Scene};
use sdf::Field;
use std::sync::Arc;

pub use manifest::GENERATOR_VERSION;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct PhantomConfig {
    /// Probability that a case is axSpA when `diagnosis` is not fixed.
    pub axspa_fraction: f64,
    /// Fix the diagnosis (the `phantom` command does, to hit the requested fraction exactly).
    pub diagnosis: Option<Diagnosis>,
    /// Ghosts, blur/ringing and wrap-around (bias and noise are always on unless `ideal`).
    pub artefacts: bool,
    /// No bias, noise or artefacts: the ideal image (for tests of the anatomy itself).
    pub ideal: bool,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig { axspa_fraction: 0.7, diagnosis: None, artefacts: true, ideal: false }
    }
}

/// One synthetic study.
pub struct Case {
    pub seed: u64,
    /// The image in real units (`stored * slope + intercept`), LPS affine.
    pub image: Volume,
    /// The stored values, int16 or uint16 as the manifest's `scanner.storage` says (same
    /// layout as `image.data`).
    pub stored: StoredSamples,
    /// Ground-truth fat-metaplasia mask (0/1, same grid and layout as `image`).
    pub mask: Vec<u8>,
    pub manifest: CaseManifest,
    model: Arc<Model>,
}

/// The anatomy behind a case, for probing voxels in tests and evaluations.
struct Model {
    pelvis: Pelvis,
    pose: Pose,
    grid: Grid,
    scene: Scene,
}

/// What lies at a voxel centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    /// The nearer joint and the distance (mm, about normal) from its mid-surface.
    pub side: Side,
    pub joint_distance_mm: f32,
    /// Depth below the subchondral surface of that joint's sacral and iliac side (negative
    /// outside that bone's side of the joint).
    pub depth_mm: [f32; 2],
    /// The bone whose outline (cortex included) holds the point, if any.
    pub bone: Option<Bone>,
    /// Signed distance to the sacrum's and to that side's ilium's outline.
    pub bone_distance_mm: [f32; 2],
}

impl Case {
    /// The mask as a float volume (0/1) on the image grid.
    pub fn mask_volume(&self) -> Volume {
        Volume { dims: self.image.dims, data: self.mask.iter().map(|&m| m as f32).collect(), affine: self.image.affine }
    }

    /// Anatomy at voxel `(i, j, k)`.
    pub fn probe(&self, i: usize, j: usize, k: usize) -> Probe {
        let m = &self.model;
        let p = m.grid.pos(i as f32, j as f32, k as f32);
        let side = Side::of_x(p[0]);
        let n = if side == Side::Left { 0 } else { 1 };
        let jn = &m.pelvis.joints[n];
        let q = jn.q(p[0].abs(), p[1], p[2]);
        let ds = m.pelvis.sacrum.dist(p);
        let di = m.pelvis.ilia[n].dist(p);
        let bone = if ds <= 0.0 {
            Some(Bone::Sacrum)
        } else if di <= 0.0 {
            Some(Bone::Ilium)
        } else {
            None
        };
        Probe { side, joint_distance_mm: q.abs(), depth_mm: [-q - jn.h, q - jn.h], bone, bone_distance_mm: [ds, di] }
    }

    /// The tissue that fills voxel `(i, j, k)`'s centre with at least `margin` mm to spare:
    /// the frontmost layer (and its band: 0 the outer band, e.g. cortex or skin, 1 the inner,
    /// e.g. marrow or subcutaneous fat) whose band holds the centre that deep, `"fm"` for a
    /// lesion, `"air"` outside the body; `None` where the centre is within `margin` of a
    /// boundary that matters. For checking intensities per tissue.
    pub fn tissue_at(&self, i: usize, j: usize, k: usize, margin: f32) -> Option<(&'static str, usize)> {
        let sc = &self.model.scene;
        let p = self.model.grid.pos(i as f32, j as f32, k as f32);
        let (d, _) = sc.fm.dist_id(p);
        if d < -margin {
            return Some(("fm", 0));
        }
        if d < margin {
            return None;
        }
        for l in sc.layers.iter().rev() {
            if !l.field.bounds().contains(p) {
                continue;
            }
            let d = l.field.dist(p);
            if d > margin {
                continue;
            }
            if d > -margin {
                return None;
            }
            // Deepest band that holds the point with the margin; none if it sits on a band edge.
            let mut band = None;
            for (n, b) in l.bands.iter().enumerate() {
                let e = d + b.offset;
                if e < -margin {
                    band = Some(n);
                } else if e < margin {
                    return None;
                }
            }
            return band.map(|n| (l.name, n));
        }
        Some(("air", 0))
    }

    /// World (LPS mm) position of the pelvis-frame point `p` (for tests).
    pub fn pelvis_to_world(&self, p: [f32; 3]) -> [f64; 3] {
        self.model.pose.to_world(p)
    }
}

/// Range of pelvis-frame levels the slab covers at both joints (half a slice inside its ends).
fn slab_levels(grid: &Grid, pv: &Pelvis) -> (f32, f32) {
    let n2 = grid.dims[2] as f64;
    let mut lo = f32::MIN;
    let mut hi = f32::MAX;
    for jn in pv.joints.iter() {
        let sg = jn.side.sigma();
        let at = |z: f32| {
            let y = jn.ya.at(z) + 10.0;
            let x = sg * jn.j(y, z).0;
            grid.to_index([x, y, z])[2]
        };
        let (k0, k1) = (at(-50.0), at(50.0));
        if (k1 - k0).abs() < 1e-6 {
            continue;
        }
        let z_of = |k: f64| (-50.0 + 100.0 * (k - k0) / (k1 - k0)) as f32;
        let (za, zb) = (z_of(0.5), z_of(n2 - 1.5));
        lo = lo.max(za.min(zb));
        hi = hi.min(za.max(zb));
    }
    (lo, hi)
}

/// Everything drawn for a case before rendering.
struct Built {
    patient: patient::Patient,
    acq: acquisition::Acquisition,
    pose: Pose,
    grid: Grid,
    pelvis: Pelvis,
    contrast: tissue::Contrast,
    scene: Scene,
    specs: Vec<lesions::LesionSpec>,
    confounders: Vec<confounders::Confounder>,
}

fn build(seed: u64, cfg: &PhantomConfig) -> Built {
    let mut prng = Rng::new(seed, stream::PATIENT);
    let diagnosis = cfg.diagnosis.unwrap_or_else(|| {
        if prng.chance(cfg.axspa_fraction.clamp(0.0, 1.0)) {
            Diagnosis::AxSpA
        } else {
            Diagnosis::NonAxSpA
        }
    });
    let patient = sample_patient(&mut prng, seed, diagnosis);
    let (acq, pose) = sample_acquisition(&mut Rng::new(seed, stream::ACQUISITION));
    let grid = grid_of(&acq, &pose);
    let pelvis = sample_pelvis(&mut Rng::new(seed, stream::ANATOMY), &patient);
    let mut trng = Rng::new(seed, stream::TEXTURE);
    let lattice = Arc::new(noise::Lattice::new(&mut trng));
    let contrast = tissue::sample_contrast(&mut trng, acq.field_strength_t, patient.age_years as f64);
    let z_window = slab_levels(&grid, &pelvis);

    let mut painter = Painter { c: &contrast, lattice: lattice.clone(), rng: &mut trng };
    let layers = anatomy_layers(&pelvis, &mut painter, patient.age_years as f64);
    let (conf_layers, confounders) = confounders::sample_confounders(
        &mut Rng::new(seed, stream::CONFOUNDERS),
        &patient,
        &pelvis,
        &contrast,
        &lattice,
        z_window,
    );
    let mut lrng = Rng::new(seed, stream::LESIONS);
    let specs = lesions::sample_lesions(&mut lrng, diagnosis, patient.age_years, &pelvis.joints, &contrast, z_window);
    let sacrum: Arc<dyn Field> = pelvis.sacrum.clone();
    let ilia: [Arc<dyn Field>; 2] = [pelvis.ilia[0].clone(), pelvis.ilia[1].clone()];
    let fm = FmSet { lesions: lesions::lesion_shapes(&specs, &pelvis.joints, sacrum, ilia, &mut lrng, &lattice) };
    let mut all = layers.soft;
    all.extend(layers.bone);
    all.extend(conf_layers);
    all.extend(layers.after);
    let scene = Scene { layers: all, fm };
    Built { patient, acq, pose, grid, pelvis, contrast, scene, specs, confounders }
}

/// What a case will hold, without rendering it (cheap): for statistics over many seeds.
pub struct Plan {
    pub patient: patient::Patient,
    pub acquisition: acquisition::Acquisition,
    pub lesions: Vec<lesions::LesionSpec>,
    pub confounders: Vec<confounders::Confounder>,
}

pub fn plan(seed: u64, cfg: &PhantomConfig) -> Plan {
    let b = build(seed, cfg);
    Plan { patient: b.patient, acquisition: b.acq, lesions: b.specs, confounders: b.confounders }
}

/// Generates case `seed`.
pub fn generate_case(seed: u64, cfg: &PhantomConfig) -> Case {
    let Built { patient, acq, pose, grid, pelvis, contrast, scene, specs, confounders } = build(seed, cfg);
    let mut rendered = render(&scene, &grid);
    let fx = scanner::sample_effects(&mut Rng::new(seed, stream::SCANNER), &acq);
    let mut fx_used = fx.clone();
    if cfg.ideal || !cfg.artefacts {
        fx_used.ghost = None;
        fx_used.resolution = None;
        fx_used.wrap = false;
    }
    if cfg.ideal {
        fx_used.noise_sigma = 0.0;
        fx_used.bias = [0.0; 8];
        fx_used.offset = 0.0;
    }
    if fx_used.wrap {
        fold_wrap(&scene, &grid, acq.phase_axis, fx_used.phase_oversampling, &mut rendered.image);
    }
    let stored_sm = scanner::acquire(&rendered.image, &acq, &fx_used, seed);

    // Slice-major -> (i, j, k) with k fastest (written in order, read in `n2` streams).
    let [n0, n1, n2] = acq.dims;
    let plane = n0 * n1;
    let total = plane * n2;
    let (slope, icpt) = (fx_used.rescale_slope, fx_used.rescale_intercept);
    let mut stored = vec![0i32; total];
    let mut data = vec![0f32; total];
    let mut mask = vec![0u8; total];
    let mut counts = vec![0u64; specs.len()];
    let mut sums = vec![[0f64; 3]; specs.len()];
    for ij in 0..plane {
        for k in 0..n2 {
            let (dst, src) = (ij * n2 + k, k * plane + ij);
            let v = stored_sm[src];
            stored[dst] = v;
            data[dst] = (v as f64 * slope + icpt) as f32;
            let l = rendered.label[src];
            if l > 0 {
                mask[dst] = 1;
                let id = (l - 1) as usize;
                counts[id] += 1;
                let (i, j) = (ij / n1, ij % n1);
                let a = &acq.affine;
                for r in 0..3 {
                    sums[id][r] += a[r][0] * i as f64 + a[r][1] * j as f64 + a[r][2] * k as f64 + a[r][3];
                }
            }
        }
    }
    let stored = match fx_used.storage {
        scanner::Storage::Int16 => StoredSamples::I16(stored.iter().map(|&v| v as i16).collect()),
        scanner::Storage::Uint16 => StoredSamples::U16(stored.iter().map(|&v| v as u16).collect()),
    };
    let voxel_ml = acq.pixel_spacing_mm[0] * acq.pixel_spacing_mm[1] * acq.slice_spacing_mm / 1000.0;
    let mut lesions_out = Vec::new();
    for (n, sp) in specs.iter().enumerate() {
        if counts[n] == 0 {
            continue;
        }
        let c = counts[n] as f64;
        lesions_out.push(LesionRecord {
            id: lesions_out.len() as u32 + 1,
            side: sp.side,
            bone: sp.bone,
            shape: sp.shape,
            voxels: counts[n],
            volume_ml: round6(c * voxel_ml),
            centroid_lps_mm: sums[n].map(|s| (s / c * 100.0).round() / 100.0),
            blurred_margin: sp.blur > 0.5,
        });
    }
    let fm_voxels: u64 = counts.iter().sum();
    let manifest = CaseManifest {
        generator: "fmseg-phantom".into(),
        generator_version: GENERATOR_VERSION,
        seed,
        patient,
        acquisition: acq.clone(),
        scanner: fx_used.clone(),
        artefacts: fx_used.artefacts(),
        contrast,
        lesions: lesions_out,
        fm_voxels,
        fm_volume_ml: round6(fm_voxels as f64 * voxel_ml),
        confounders,
    };
    let image = Volume { dims: acq.dims, data, affine: acq.affine };
    Case { seed, image, stored, mask, manifest, model: Arc::new(Model { pelvis, pose, grid, scene }) }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Wrap-around along the phase axis with phase oversampling `os` (a fraction of the field of
/// view): the scanner acquires `n (1 + os)` pixels and shows the central `n`, so tissue that
/// lies more than `n os / 2` pixels beyond an edge of the image (up to `n / 4` more) folds in
/// at the opposite edge.
fn fold_wrap(scene: &Scene, grid: &Grid, pa: usize, os: f64, image: &mut [f32]) {
    let [n0, n1, n2] = grid.dims;
    let n = grid.dims[pa];
    let e = n / 4;
    let margin = (n as f64 * os / 2.0).round() as usize;
    let mut sd = grid.dims;
    sd[pa] = e;
    let plane = n0 * n1;
    let splane = sd[0] * sd[1];
    // Beyond the low edge (indices -margin-e .. -margin) lands on the last e rows; beyond the
    // high edge (n+margin .. n+margin+e) on the first e.
    for (shift, base) in [(-((margin + e) as f32), n - e), ((n + margin) as f32, 0)] {
        let mut s = [0.0f32; 3];
        s[pa] = shift;
        let strip = render(scene, &grid.shifted(s, sd));
        for k in 0..n2 {
            for a in 0..sd[0] {
                for b in 0..sd[1] {
                    let v = strip.image[k * splane + a * sd[1] + b];
                    let (i, j) = if pa == 0 { (a + base, b) } else { (a, b + base) };
                    image[k * plane + i * n1 + j] += v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The renderer's shortcuts (interpolating distances in blocks far from any surface, and
    /// from every second voxel where the distance is flat) give the image of evaluating
    /// everything exactly up to small partial-volume differences at creases, and the same
    /// mask (the lesions are always evaluated exactly), around a joint where every kind of
    /// structure meets.
    #[test]
    fn block_interpolation_matches_exact_evaluation() {
        for seed in [5u64, 17] {
            let b = build(seed, &PhantomConfig::default());
            let jn = &b.pelvis.joints[0];
            let y = jn.ya.at(0.0) + 10.0;
            let c = b.grid.to_index([jn.j(y, 0.0).0, y, 0.0]);
            let (n, nk) = (96usize, 6usize);
            let shift =
                [(c[0] - 48.0).round() as f32, (c[1] - 48.0).round() as f32, (c[2] - 3.0).round().max(0.0) as f32];
            let g = b.grid.shifted(shift, [n, n, nk]);
            let fast = render::render_with(&b.scene, &g, true);
            let exact = render::render_with(&b.scene, &g, false);
            let diff: Vec<f32> = fast.image.iter().zip(&exact.image).map(|(a, e)| (a - e).abs()).collect();
            let worst = diff.iter().cloned().fold(0.0f32, f32::max);
            let mean = diff.iter().sum::<f32>() / diff.len() as f32;
            let big = diff.iter().filter(|&&d| d > 0.01).count();
            eprintln!("seed {seed}: largest difference {worst}, mean {mean:.2e}, {big} above 0.01");
            // Intensities are relative to fat (1); noise alone is 0.01-0.06.
            assert!(worst <= 0.1, "seed {seed}: largest difference {worst}");
            assert!(mean <= 1e-3, "seed {seed}: mean difference {mean}");
            assert!(big * 200 <= diff.len(), "seed {seed}: {big} voxels differ by more than 0.01");
            assert_eq!(fast.label, exact.label, "seed {seed}: masks differ");
        }
    }
}

/// Development aids, run by hand (ignored by default; they check nothing): per-layer timing,
/// montages of chosen slices, and the layers' distances at one voxel.
#[cfg(test)]
mod dev {
    use super::*;

    /// `cargo test --release phantom::dev::layer_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn layer_timing() {
        let seed: u64 = std::env::var("PHANTOM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        let b = build(seed, &PhantomConfig::default());
        let mut total = 0.0;
        let (mut tb, mut te) = (0usize, 0usize);
        for (name, vox, evals, ms) in render::profile_layers(&b.scene, &b.grid) {
            total += ms;
            tb += vox;
            te += evals;
            eprintln!(
                "{name:28} {vox:>9} in box {evals:>9} exact {ms:8.1} ms {:6.1} ns/eval",
                ms * 1e6 / evals.max(1) as f64
            );
        }
        eprintln!("total {total:.0} ms, {tb} in boxes, {te} exact, grid {:?}", b.grid.dims);
    }
}

/// See [`dev`]: time per phase and per layer of the real render, single-threaded, for
/// `PHANTOM_SEEDS` (`cargo test --release --lib phantom::dev_phases -- --ignored --nocapture`).
#[cfg(test)]
mod dev_phases {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn phases() {
        let seeds: Vec<u64> = std::env::var("PHANTOM_SEEDS")
            .unwrap_or_else(|_| "1".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut all = Vec::new();
        for s in seeds {
            pool.install(|| {
                let cfg = PhantomConfig::default();
                let t = Instant::now();
                let b = build(s, &cfg);
                let t_build = t.elapsed().as_secs_f64() * 1e3;
                render::prof::start();
                let t = Instant::now();
                let r = render(&b.scene, &b.grid);
                let t_render = t.elapsed().as_secs_f64() * 1e3;
                let mut layers = render::prof::take();
                let mut ev = render::prof::take_evals();
                ev.sort_by(|a, b| b.1.total_cmp(&a.1));
                eprintln!("kevals {:?}", &ev[..12.min(ev.len())]);
                let fx = scanner::sample_effects(&mut Rng::new(s, stream::SCANNER), &b.acq);
                let t = Instant::now();
                let _ = scanner::acquire(&r.image, &b.acq, &fx, s);
                let t_acq = t.elapsed().as_secs_f64() * 1e3;
                let t = Instant::now();
                let c = generate_case(s, &cfg);
                let t_all = t.elapsed().as_secs_f64() * 1e3;
                layers.sort_by(|a, b| b.1.total_cmp(&a.1));
                let top: Vec<String> = layers.iter().take(6).map(|(n, ms)| format!("{n} {ms:.0}")).collect();
                eprintln!(
                    "seed {s:3} {:?} case {t_all:5.0} ms: build {t_build:4.0} render {t_render:4.0} acquire {t_acq:4.0} ({}) | {}",
                    b.grid.dims,
                    c.manifest.artefacts.join(","),
                    top.join(", ")
                );
                all.push(t_all);
            });
        }
        let mx = all.iter().cloned().fold(0.0, f64::max);
        eprintln!("mean {:.0} ms, max {mx:.0} ms", all.iter().sum::<f64>() / all.len() as f64);
    }
}

/// See [`dev`].
#[cfg(test)]
mod dev_preview {
    use super::*;

    /// `PHANTOM_SEEDS=1,2 PHANTOM_OUT=/tmp/x cargo test --release phantom::dev_preview -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn preview() {
        let seeds: Vec<u64> = std::env::var("PHANTOM_SEEDS")
            .unwrap_or_else(|_| "1".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let out =
            std::path::PathBuf::from(std::env::var("PHANTOM_OUT").unwrap_or_else(|_| "/tmp/phantom_preview".into()));
        std::fs::create_dir_all(&out).unwrap();
        let ideal = std::env::var("PHANTOM_IDEAL").is_ok();
        let nsl: usize = std::env::var("PHANTOM_SLICES").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
        let down: usize = std::env::var("PHANTOM_DOWN").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        let reps: usize = std::env::var("PHANTOM_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        for s in seeds {
            for _ in 1..reps {
                let _ = generate_case(s, &PhantomConfig { ideal, ..Default::default() });
            }
            let t = std::time::Instant::now();
            let case = generate_case(s, &PhantomConfig { ideal, ..Default::default() });
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let sl = match std::env::var("PHANTOM_K") {
                Ok(v) => {
                    v.split(',').filter_map(|s| s.trim().parse().ok()).filter(|&k| k < case.image.dims[2]).collect()
                }
                Err(_) => preview::even_slices(case.image.dims[2], nsl),
            };
            if std::env::var("PHANTOM_NOPNG").is_err() {
                let img = preview::montage(&case.image, Some(&case.mask), &sl, 2, down);
                preview::write_png(&out.join(format!("case_{s}.png")), &img).unwrap();
            }
            eprintln!(
                "seed {s}: {:?} {:?} tilt {:.1} lesions {} fm {:.2} ml, {ms:.0} ms",
                case.image.dims,
                case.manifest.patient.diagnosis,
                case.manifest.acquisition.tilt_deg,
                case.manifest.lesions.len(),
                case.manifest.fm_volume_ml
            );
        }
    }
}

/// See [`dev`].
#[cfg(test)]
mod dev_layers_at {
    use super::*;

    /// `PHANTOM_SEED=7 PHANTOM_IJK=60,150,0 ... dev_layers_at -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn layers_at() {
        let seed: u64 = std::env::var("PHANTOM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        let ijk: Vec<f32> = std::env::var("PHANTOM_IJK").unwrap().split(',').map(|s| s.parse().unwrap()).collect();
        let b = build(seed, &PhantomConfig::default());
        let g = &b.grid;
        let p = g.pos(ijk[0], ijk[1], ijk[2]);
        let pm = g.pos(ijk[0], ijk[1], ijk[2] - 1.0);
        let pp = g.pos(ijk[0], ijk[1], ijk[2] + 1.0);
        eprintln!("local {p:?}");
        for l in &b.scene.layers {
            if !l.field.bounds().grow(8.0).contains(p) {
                continue;
            }
            let d = l.field.dist(p);
            if d.abs() < 15.0 {
                eprintln!("{:24} d {d:7.2} (k-1 {:7.2}, k+1 {:7.2})", l.name, l.field.dist(pm), l.field.dist(pp));
            }
        }
    }
}
