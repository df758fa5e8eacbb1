//! The synthetic-study generator: determinism, geometry ranges, where the lesions are, what
//! the mask and the manifest say, intensity order, and how long a case takes.

use fmseg::phantom::acquisition::{MATRIX_RANGE, PIXEL_RANGE_MM, SLICES_RANGE, THICKNESS_RANGE_MM, TILT_RANGE_DEG};
use fmseg::phantom::anatomy::Bone;
use fmseg::phantom::lesions::MAX_DEPTH_MM;
use fmseg::phantom::patient::Diagnosis;
use fmseg::phantom::rng::{stream, Rng};
use fmseg::phantom::scanner::{sample_effects, Storage};
use fmseg::phantom::{generate_case, plan, Case, PhantomConfig};
use std::sync::OnceLock;
use std::time::Instant;

fn cfg(d: Diagnosis) -> PhantomConfig {
    PhantomConfig { diagnosis: Some(d), ..PhantomConfig::default() }
}

/// A small shared set: four axSpA and three non-axSpA cases, with their generation times.
fn cases() -> &'static Vec<(Case, f64)> {
    static CASES: OnceLock<Vec<(Case, f64)>> = OnceLock::new();
    CASES.get_or_init(|| {
        let mut v = Vec::new();
        for (seed, d) in [
            (101, Diagnosis::AxSpA),
            (102, Diagnosis::AxSpA),
            (103, Diagnosis::AxSpA),
            (104, Diagnosis::AxSpA),
            (201, Diagnosis::NonAxSpA),
            (202, Diagnosis::NonAxSpA),
            (203, Diagnosis::NonAxSpA),
        ] {
            let t = Instant::now();
            let c = generate_case(seed, &cfg(d));
            v.push((c, t.elapsed().as_secs_f64() * 1e3));
        }
        v
    })
}

fn voxel_ml(c: &Case) -> f64 {
    let a = &c.manifest.acquisition;
    a.pixel_spacing_mm[0] * a.pixel_spacing_mm[1] * a.slice_spacing_mm / 1000.0
}

/// Equal slices, or a message naming the first difference (not the whole arrays).
fn assert_same<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
        let n = (0..a.len()).filter(|&i| a[i] != b[i]).count();
        panic!("{what} differ at {n} of {} positions, first at {i}: {:?} vs {:?}", a.len(), a[i], b[i]);
    }
}

#[test]
fn same_seed_gives_identical_bytes_on_any_thread_count_and_seeds_differ() {
    let c = PhantomConfig::default();
    let a = generate_case(7, &c);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let b = pool.install(|| generate_case(7, &c));
    assert_eq!(a.stored, b.stored, "stored values");
    assert_same(&a.mask, &b.mask, "masks");
    assert_eq!(a.image.affine, b.image.affine);
    assert!(a.image.data.iter().zip(&b.image.data).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(serde_json::to_string(&a.manifest).unwrap(), serde_json::to_string(&b.manifest).unwrap());
    let d = generate_case(8, &c);
    assert!(a.image.dims != d.image.dims || a.stored != d.stored, "seeds 7 and 8 gave the same image");
    assert_ne!(serde_json::to_string(&a.manifest).unwrap(), serde_json::to_string(&d.manifest).unwrap());
}

#[test]
fn geometry_ranges_hold_over_many_seeds() {
    let mut descending = 0;
    let mut rectangular = 0;
    let mut tilts = Vec::new();
    for seed in 0..300u64 {
        let a = plan(seed, &PhantomConfig::default()).acquisition;
        let ctx = format!("seed {seed}: {a:?}");
        for n in [a.dims[0], a.dims[1]] {
            assert!((MATRIX_RANGE.0..=MATRIX_RANGE.1).contains(&n), "{ctx}");
        }
        assert!((SLICES_RANGE.0..=SLICES_RANGE.1).contains(&a.dims[2]), "{ctx}");
        for p in a.pixel_spacing_mm {
            assert!((PIXEL_RANGE_MM.0..=PIXEL_RANGE_MM.1).contains(&p), "{ctx}");
        }
        assert!((THICKNESS_RANGE_MM.0..=THICKNESS_RANGE_MM.1).contains(&a.slice_thickness_mm), "{ctx}");
        assert!(
            a.slice_spacing_mm >= a.slice_thickness_mm && a.slice_spacing_mm <= 1.3 * a.slice_thickness_mm,
            "{ctx}"
        );
        assert!((TILT_RANGE_DEG.0..=TILT_RANGE_DEG.1).contains(&a.tilt_deg), "{ctx}");
        // The affine: column lengths are the spacings, the axes orthogonal.
        let col = |c: usize| [a.affine[0][c], a.affine[1][c], a.affine[2][c]];
        let len = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        let dot = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
        assert!((len(col(0)) - a.pixel_spacing_mm[0]).abs() < 1e-9, "{ctx}");
        assert!((len(col(1)) - a.pixel_spacing_mm[1]).abs() < 1e-9, "{ctx}");
        assert!((len(col(2)) - a.slice_spacing_mm).abs() < 1e-9, "{ctx}");
        for (u, v) in [(0, 1), (0, 2), (1, 2)] {
            assert!(dot(col(u), col(v)).abs() < 1e-9, "{ctx}");
        }
        // Axial-oblique: rows run to the patient's left, columns posterior; the slice axis is
        // tilted from the head-foot axis by about the prescribed tilt (plus small rotations).
        let (e0, e1) = (col(0), col(1));
        assert!(e0[0] / len(e0) > 0.98, "{ctx}");
        assert!(e1[1] / len(e1) > 0.85, "{ctx}");
        let e2 = col(2);
        let sgn = if a.slices_descending { -1.0 } else { 1.0 };
        let cos_s = sgn * e2[2] / len(e2);
        let tilt = cos_s.clamp(-1.0, 1.0).acos().to_degrees();
        assert!((tilt - a.tilt_deg).abs() < 6.0, "{ctx}: slice axis {tilt:.1} deg from S");
        // The top of the slab leans forward (anterior is -y in LPS), unless it was left nearly
        // axial.
        if a.tilt_deg > 2.0 {
            assert!(sgn * e2[1] < 0.0, "{ctx}");
        }
        descending += a.slices_descending as usize;
        rectangular += (a.dims[0] != a.dims[1]) as usize;
        tilts.push(a.tilt_deg);
    }
    // The variations actually occur.
    assert!(descending > 30 && descending < 150, "{descending} descending of 300");
    assert!(rectangular > 30, "{rectangular} rectangular matrices of 300");
    let spread = tilts.iter().cloned().fold(f64::MIN, f64::max) - tilts.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 15.0, "tilts span only {spread:.1} deg");
}

/// The acquisition and scanner variety the training data is meant to have: over 50 seeds the
/// matrix, pixel size, slice thickness and slab tilt stay in their ranges and spread over
/// them, and both storage kinds, motion blur, wrap and a range of noise levels occur.
#[test]
fn acquisition_variety_covers_the_requested_ranges() {
    let (mut px, mut th, mut tilt, mut mat) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut u16s, mut blur, mut noise) = (0, 0, Vec::new());
    let mut field = [0, 0];
    for seed in 0..50u64 {
        let a = plan(seed, &PhantomConfig::default()).acquisition;
        let fx = sample_effects(&mut Rng::new(seed, stream::SCANNER), &a);
        assert!((256..=512).contains(&a.dims[0]) && (256..=512).contains(&a.dims[1]), "seed {seed}: {:?}", a.dims);
        assert!((0.5..=1.0).contains(&a.pixel_spacing_mm[0]), "seed {seed}");
        assert!((3.0..=6.0).contains(&a.slice_thickness_mm), "seed {seed}");
        assert!((0.0..=30.0).contains(&a.tilt_deg), "seed {seed}");
        assert!((0.005..=0.15).contains(&fx.noise_sigma), "seed {seed}: noise {}", fx.noise_sigma);
        px.push(a.pixel_spacing_mm[0]);
        th.push(a.slice_thickness_mm);
        tilt.push(a.tilt_deg);
        mat.push(a.dims[0].min(a.dims[1]));
        u16s += (fx.storage == Storage::Uint16) as usize;
        blur += fx.motion_blur_px.is_some() as usize;
        noise.push(fx.noise_sigma);
        field[(a.field_strength_t > 2.0) as usize] += 1;
    }
    let span = |v: &[f64]| (v.iter().cloned().fold(f64::MAX, f64::min), v.iter().cloned().fold(f64::MIN, f64::max));
    let (p0, p1) = span(&px);
    assert!(p0 < 0.62 && p1 > 0.88, "pixel sizes {p0}-{p1}");
    let (t0, t1) = span(&th);
    assert!(t0 < 3.5 && t1 > 5.5, "slice thickness {t0}-{t1}");
    let (a0, a1) = span(&tilt);
    assert!(a0 < 8.0 && a1 > 24.0, "tilts {a0}-{a1}");
    assert!(*mat.iter().min().unwrap() < 320 && *mat.iter().max().unwrap() >= 448, "matrices {mat:?}");
    assert!((10..=40).contains(&u16s), "{u16s} of 50 stored as uint16");
    let (n0, n1) = span(&noise);
    assert!(n1 > 2.0 * n0, "noise levels {n0}-{n1}");
    assert!(field[0] > 10 && field[1] > 10, "field strengths {field:?}");
    // Motion blur is rare: check over more seeds (cheap: nothing is rendered).
    let more = (0..300u64)
        .filter(|&s| {
            let a = plan(s, &PhantomConfig::default()).acquisition;
            sample_effects(&mut Rng::new(s, stream::SCANNER), &a).motion_blur_px.is_some()
        })
        .count();
    assert!(blur + more > 5 && more < 60, "motion blur in {more} of 300");
}

/// Older patients (longer disease) have more extensive fat metaplasia; young ones focal.
#[test]
fn lesion_extent_grows_with_age() {
    let (mut young, mut old) = (Vec::new(), Vec::new());
    for seed in 0..400u64 {
        let p = plan(seed, &cfg(Diagnosis::AxSpA));
        let ml: f64 = p.lesions.iter().map(|l| l.planned_ml as f64).sum();
        let depth = p.lesions.iter().map(|l| l.depth as f64).fold(0.0, f64::max);
        match p.patient.age_years {
            ..=27 => young.push((ml, depth)),
            38.. => old.push((ml, depth)),
            _ => {}
        }
    }
    let mean = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (my, mo) = (mean(&young, |x| x.0), mean(&old, |x| x.0));
    let (dy, d_o) = (mean(&young, |x| x.1), mean(&old, |x| x.1));
    eprintln!(
        "{} young: {my:.2} ml, depth {dy:.1} mm; {} older: {mo:.2} ml, depth {d_o:.1} mm",
        young.len(),
        old.len()
    );
    assert!(young.len() > 40 && old.len() > 40, "{} young, {} old", young.len(), old.len());
    assert!(mo > 1.5 * my, "planned FM volume {my:.2} ml (young) vs {mo:.2} ml (older)");
    assert!(d_o > dy, "depth {dy:.1} vs {d_o:.1}");
}

/// The look-alikes the paper's failure cases name occur, with no label: fat in the joint
/// space (a confounder layer), and yellow marrow and intermuscular fat (normal anatomy).
#[test]
fn confounders_occur_and_stay_unlabelled() {
    let joint_fat = (0..100u64)
        .filter(|&s| plan(s, &PhantomConfig::default()).confounders.iter().any(|c| c.kind == "fat in joint space"))
        .count();
    assert!((15..=80).contains(&joint_fat), "joint-space fat in {joint_fat} of 100");
    let mut fat_seen = 0;
    for (c, _) in cases() {
        let [n0, n1, n2] = c.image.dims;
        for k in (0..n2).step_by(3) {
            for i in (0..n0).step_by(4) {
                for j in (0..n1).step_by(4) {
                    if let Some((name, band)) = c.tissue_at(i, j, k, 1.0) {
                        let fatty = matches!(name, "joint fat" | "fat plane" | "midline septum")
                            || (matches!(name, "sacrum" | "ilium") && band == 1);
                        if fatty {
                            fat_seen += 1;
                            let idx = (i * n1 + j) * n2 + k;
                            assert_eq!(c.mask[idx], 0, "seed {}: {name} labelled at ({i},{j},{k})", c.seed);
                        }
                    }
                }
            }
        }
    }
    assert!(fat_seen > 1000, "only {fat_seen} confounder voxels looked at");
}

#[test]
fn lesions_are_subchondral_and_inside_bone() {
    let mut checked = 0;
    for (c, _) in cases() {
        let [n0, n1, n2] = c.image.dims;
        let mut strictly_inside = 0;
        let mut n = 0;
        for i in 0..n0 {
            for j in 0..n1 {
                for k in 0..n2 {
                    if c.mask[(i * n1 + j) * n2 + k] == 0 {
                        continue;
                    }
                    n += 1;
                    let p = c.probe(i, j, k);
                    let ctx = format!("seed {} voxel ({i},{j},{k}): {p:?}", c.seed);
                    // Near a joint surface, on the bone side of it.
                    assert!(p.joint_distance_mm <= MAX_DEPTH_MM + 3.0, "{ctx}");
                    assert!(p.depth_mm[0].max(p.depth_mm[1]) >= -0.75, "{ctx}: in the joint space");
                    // In bone (the centre may sit just outside where the voxel is mostly inside).
                    let bd = p.bone_distance_mm[0].min(p.bone_distance_mm[1]);
                    assert!(bd <= 0.75, "{ctx}: outside bone");
                    strictly_inside += p.bone.is_some() as usize;
                }
            }
        }
        assert!(strictly_inside as f64 >= 0.95 * n as f64, "seed {}: {strictly_inside} of {n} inside bone", c.seed);
        checked += n;
    }
    assert!(checked > 500, "only {checked} lesion voxels in the test set");
}

#[test]
fn mask_matches_the_lesion_list() {
    for (c, _) in cases() {
        let m = &c.manifest;
        let total: u64 = c.mask.iter().map(|&v| v as u64).sum();
        assert!(c.mask.iter().all(|&v| v <= 1));
        assert_eq!(total, m.fm_voxels, "seed {}", c.seed);
        assert_eq!(m.lesions.iter().map(|l| l.voxels).sum::<u64>(), total, "seed {}", c.seed);
        let vml = voxel_ml(c);
        assert!((m.fm_volume_ml - total as f64 * vml).abs() < 1e-5);
        for (n, l) in m.lesions.iter().enumerate() {
            assert_eq!(l.id as usize, n + 1);
            assert!(l.voxels > 0);
            assert!((l.volume_ml - l.voxels as f64 * vml).abs() < 1e-5, "seed {} lesion {}", c.seed, l.id);
        }
        // Lesion centroids: inside the image's world box and on the side the list says.
        for l in &m.lesions {
            let v = &c.image;
            let inv = invert(&v.affine);
            let ijk: Vec<f64> =
                (0..3).map(|r| (0..3).map(|cc| inv[r][cc] * (l.centroid_lps_mm[cc] - v.affine[cc][3])).sum()).collect();
            for a in 0..3 {
                assert!(ijk[a] > -1.0 && ijk[a] < v.dims[a] as f64, "seed {} lesion {} centroid {ijk:?}", c.seed, l.id);
            }
            let (i, j, k) = (ijk[0].round() as usize, ijk[1].round() as usize, ijk[2].round() as usize);
            let side = c.probe(i.min(v.dims[0] - 1), j.min(v.dims[1] - 1), k.min(v.dims[2] - 1)).side;
            assert_eq!(side, l.side, "seed {} lesion {}", c.seed, l.id);
        }
        // Mask and image share the grid.
        assert_eq!(c.mask.len(), c.image.data.len());
        assert_eq!(c.mask_volume().affine, c.image.affine);
    }
}

fn invert(a: &[[f64; 4]; 4]) -> [[f64; 3]; 3] {
    let m = [[a[0][0], a[0][1], a[0][2]], [a[1][0], a[1][1], a[1][2]], [a[2][0], a[2][1], a[2][2]]];
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c = |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [c(1, 1, 2, 2) / det, -c(0, 1, 2, 2) / det, c(0, 1, 1, 2) / det],
        [-c(1, 0, 2, 2) / det, c(0, 0, 2, 2) / det, -c(0, 0, 1, 2) / det],
        [c(1, 0, 2, 1) / det, -c(0, 0, 2, 1) / det, c(0, 0, 1, 1) / det],
    ]
}

#[test]
fn axspa_cases_have_more_and_larger_lesions() {
    // Planned lesions over many seeds (cheap: nothing is rendered).
    let stats = |d: Diagnosis| {
        let (mut n, mut ml, mut bilateral, mut none) = (0usize, 0f64, 0usize, 0usize);
        for seed in 0..150u64 {
            let p = plan(seed, &cfg(d));
            n += p.lesions.len();
            ml += p.lesions.iter().map(|l| l.planned_ml as f64).sum::<f64>();
            let sides: std::collections::HashSet<_> = p.lesions.iter().map(|l| l.side).collect();
            bilateral += (sides.len() == 2) as usize;
            none += p.lesions.is_empty() as usize;
        }
        (n as f64 / 150.0, ml / 150.0, bilateral, none)
    };
    let (na, mla, ba, za) = stats(Diagnosis::AxSpA);
    let (nn, mln, bn, zn) = stats(Diagnosis::NonAxSpA);
    eprintln!("planned per case: axSpA {na:.2} lesions {mla:.2} ml, {ba} bilateral, {za} without; non-axSpA {nn:.2} lesions {mln:.2} ml, {bn} bilateral, {zn} without");
    assert!(na > 2.0 * nn, "lesion counts {na} vs {nn}");
    assert!(mla > 5.0 * mln, "volumes {mla} vs {mln}");
    assert!(ba > 3 * bn.max(1), "bilateral {ba} vs {bn}");
    assert_eq!(za, 0, "axSpA cases without lesions");
    assert!(zn > 20, "non-axSpA cases without lesions: {zn}");
    // And in the rendered cases.
    let mean = |d: Diagnosis| {
        let v: Vec<&Case> = cases().iter().map(|(c, _)| c).filter(|c| c.manifest.patient.diagnosis == d).collect();
        let n = v.iter().map(|c| c.manifest.lesions.len()).sum::<usize>() as f64 / v.len() as f64;
        let ml = v.iter().map(|c| c.manifest.fm_volume_ml).sum::<f64>() / v.len() as f64;
        (n, ml)
    };
    let (ra, rma) = mean(Diagnosis::AxSpA);
    let (rn, rmn) = mean(Diagnosis::NonAxSpA);
    eprintln!("rendered per case: axSpA {ra:.2} lesions {rma:.3} ml; non-axSpA {rn:.2} lesions {rmn:.3} ml");
    assert!(ra > rn && rma > rmn);
}

/// Mean intensity per tissue over voxels that lie well inside one tissue.
fn tissue_means(c: &Case) -> std::collections::HashMap<&'static str, (f64, usize)> {
    let [n0, n1, n2] = c.image.dims;
    let mut acc: std::collections::HashMap<&'static str, (f64, usize)> = Default::default();
    for k in (0..n2).step_by(2) {
        for i in (0..n0).step_by(3) {
            for j in (0..n1).step_by(3) {
                let Some((name, band)) = c.tissue_at(i, j, k, 1.5) else { continue };
                let key = match (name, band) {
                    ("subcutaneous fat", 0) => "subcutaneous fat",
                    ("muscle", 0) => "muscle",
                    ("sacrum" | "ilium", 1) => "marrow",
                    ("fm", _) => "fm",
                    _ => continue,
                };
                let e = acc.entry(key).or_default();
                e.0 += c.image.get(i, j, k) as f64;
                e.1 += 1;
            }
        }
    }
    for v in acc.values_mut() {
        v.0 /= v.1.max(1) as f64;
    }
    acc
}

#[test]
fn intensities_follow_t1_contrast() {
    // The ideal image (no bias, noise or artefacts): the contrast model itself, on the first
    // two seeds planned with sizeable lesions.
    let seeds: Vec<u64> = (300u64..)
        .filter(|&s| plan(s, &cfg(Diagnosis::AxSpA)).lesions.iter().map(|l| l.planned_ml).sum::<f32>() > 2.0)
        .take(2)
        .collect();
    for seed in seeds {
        let c = generate_case(seed, &PhantomConfig { ideal: true, ..cfg(Diagnosis::AxSpA) });
        let mut m = tissue_means(&c);
        // Lesion voxels: all of them, not a subsample.
        let [n0, n1, n2] = c.image.dims;
        let (mut s, mut n) = (0.0, 0usize);
        for i in 0..n0 {
            for j in 0..n1 {
                for k in 0..n2 {
                    if c.mask[(i * n1 + j) * n2 + k] == 1 && c.tissue_at(i, j, k, 0.5) == Some(("fm", 0)) {
                        s += c.image.get(i, j, k) as f64;
                        n += 1;
                    }
                }
            }
        }
        assert!(n > 20, "seed {seed}: only {n} lesion voxels");
        m.insert("fm", (s / n as f64, n));
        eprintln!("seed {seed} ideal: {m:?}");
        let g = |k: &str| m.get(k).map(|v| v.0).unwrap_or_else(|| panic!("seed {seed}: no {k} voxels: {m:?}"));
        assert!(g("subcutaneous fat") > g("marrow") * 1.15, "{m:?}");
        assert!(g("marrow") > g("muscle") * 1.15, "{m:?}");
        assert!(g("fm") > g("marrow") * 1.2, "{m:?}");
        let red = c.manifest.contrast.red_marrow as f64 * g("subcutaneous fat") / c.manifest.contrast.fat as f64;
        assert!(g("fm") > red * 1.3, "FM {} vs red marrow {red}", g("fm"));
    }
    // The acquired images: bias varies slowly, so compare each lesion with the marrow around it.
    let mut compared = 0;
    for (c, _) in cases() {
        let [n0, n1, n2] = c.image.dims;
        for l in &c.manifest.lesions {
            if l.voxels < 30 {
                continue;
            }
            let (mut fm, mut nf, mut mar, mut nm) = (0.0, 0usize, 0.0, 0usize);
            // Mask voxels near the lesion's centroid, and well-inside marrow of its bone.
            let inv = invert(&c.image.affine);
            let ijk: Vec<f64> = (0..3)
                .map(|r| (0..3).map(|cc| inv[r][cc] * (l.centroid_lps_mm[cc] - c.image.affine[cc][3])).sum())
                .collect();
            let px = c.manifest.acquisition.pixel_spacing_mm[0];
            let r = (15.0 / px) as isize;
            let (ci, cj, ck) = (ijk[0].round() as isize, ijk[1].round() as isize, ijk[2].round() as isize);
            for k in (ck - 2).max(0)..(ck + 3).min(n2 as isize) {
                for i in (ci - r).max(0)..(ci + r).min(n0 as isize) {
                    for j in (cj - r).max(0)..(cj + r).min(n1 as isize) {
                        let (i, j, k) = (i as usize, j as usize, k as usize);
                        let v = c.image.get(i, j, k) as f64;
                        if c.mask[(i * n1 + j) * n2 + k] == 1 {
                            fm += v;
                            nf += 1;
                        } else if let Some((name, 1)) = c.tissue_at(i, j, k, 1.5) {
                            if (name == "sacrum" && l.bone == Bone::Sacrum)
                                || (name == "ilium" && l.bone == Bone::Ilium)
                            {
                                mar += v;
                                nm += 1;
                            }
                        }
                    }
                }
            }
            if nf < 10 || nm < 50 {
                continue;
            }
            let (fm, mar) = (fm / nf as f64, mar / nm as f64);
            assert!(fm > 1.1 * mar, "seed {} lesion {}: FM {fm:.1} vs marrow around it {mar:.1}", c.seed, l.id);
            compared += 1;
        }
    }
    assert!(compared >= 3, "only {compared} lesions compared");
}

#[test]
fn timing_is_reported() {
    let t: Vec<f64> = cases().iter().map(|(_, ms)| *ms).collect();
    let vox: Vec<usize> = cases().iter().map(|(c, _)| c.image.data.len()).collect();
    let mean = t.iter().sum::<f64>() / t.len() as f64;
    eprintln!(
        "phantom: {mean:.0} ms/case on {} threads (cases of {:.1}-{:.1} Mvoxel; {t:.0?} ms)",
        rayon::current_num_threads(),
        *vox.iter().min().unwrap() as f64 / 1e6,
        *vox.iter().max().unwrap() as f64 / 1e6
    );
    // Generous: this only catches pathological slow-downs (a case is well under a second of
    // CPU on an idle core).
    assert!(t.iter().all(|&ms| ms < 120_000.0), "{t:?}");
}

/// ESR over many planned patients (cheap: nothing is rendered) follows the paper's Table 1:
/// axSpA median about 20 mm/h (IQR about 10..40), non-axSpA lower; whole mm/h; missing in about
/// one case in ten; higher where CRP is higher.
#[test]
fn phantom_esr_follows_table_1() {
    let quantile = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let (mut missing, mut total) = (0usize, 0usize);
    let mut medians = Vec::new();
    let mut pairs = Vec::new();
    for d in [Diagnosis::AxSpA, Diagnosis::NonAxSpA] {
        let mut esr = Vec::new();
        for seed in 0..300u64 {
            let p = plan(seed, &cfg(d)).patient;
            total += 1;
            match p.esr_mm_per_h {
                None => missing += 1,
                Some(e) => {
                    assert!(e == e.round() && (1.0..=150.0).contains(&e), "seed {seed}: ESR {e}");
                    esr.push(e);
                    pairs.push((p.crp_mg_per_l.ln(), e.ln()));
                }
            }
        }
        esr.sort_by(f64::total_cmp);
        let (q1, med, q3) = (quantile(&esr, 0.25), quantile(&esr, 0.5), quantile(&esr, 0.75));
        eprintln!("{d:?}: ESR median {med} (IQR {q1}..{q3}) mm/h over {} patients", esr.len());
        medians.push(med);
        if d == Diagnosis::AxSpA {
            assert!((16.0..=25.0).contains(&med), "axSpA ESR median {med}");
            assert!((7.0..=14.0).contains(&q1) && (30.0..=55.0).contains(&q3), "axSpA ESR IQR {q1}..{q3}");
        } else {
            assert!((9.0..=15.0).contains(&med), "non-axSpA ESR median {med}");
        }
    }
    assert!(medians[1] < medians[0], "ESR medians {medians:?}");
    let rate = missing as f64 / total as f64;
    assert!((0.06..=0.14).contains(&rate), "ESR missing in {missing} of {total}");
    // Pearson correlation of log CRP and log ESR: the ESR draw shares part of CRP's deviate.
    let n = pairs.len() as f64;
    let (mx, my) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = pairs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let (vx, vy): (f64, f64) =
        (pairs.iter().map(|p| (p.0 - mx).powi(2)).sum(), pairs.iter().map(|p| (p.1 - my).powi(2)).sum());
    let r = cov / (vx * vy).sqrt();
    eprintln!("log CRP / log ESR correlation {r:.2}");
    assert!(r > 0.4 && r < 0.9, "log CRP / log ESR correlation {r}");
}

/// ESR has its own random stream: the patients of set seed 5's first cases (as `fmseg phantom
/// --seed 5 --cases 12` wrote them at c439c70, before ESR existed) keep every other field, and a manifest
/// without the key reads back with ESR missing.
#[test]
fn phantom_esr_left_other_patient_fields_alone() {
    use fmseg::phantom::Patient;
    let before = [
        (
            7289073745999610579u64,
            r#"{"diagnosis": "non-axSpA", "age_years": 16, "sex": "M", "hla_b27_positive": false, "crp_mg_per_l": 2.1, "habitus": 0.256}"#,
        ),
        (
            2559222825626967056,
            r#"{"diagnosis": "axSpA", "age_years": 50, "sex": "M", "hla_b27_positive": true, "crp_mg_per_l": 4.2, "habitus": 0.133}"#,
        ),
        (
            2553702792721869233,
            r#"{"diagnosis": "axSpA", "age_years": 30, "sex": "M", "hla_b27_positive": true, "crp_mg_per_l": 37.8, "habitus": 0.946}"#,
        ),
        (
            12657112707909699487,
            r#"{"diagnosis": "non-axSpA", "age_years": 53, "sex": "F", "hla_b27_positive": true, "crp_mg_per_l": 1.6, "habitus": 0.801}"#,
        ),
        (
            7325885082597903497,
            r#"{"diagnosis": "axSpA", "age_years": 25, "sex": "M", "hla_b27_positive": null, "crp_mg_per_l": 57.8, "habitus": 0.742}"#,
        ),
        (
            539861450896178973,
            r#"{"diagnosis": "non-axSpA", "age_years": 23, "sex": "F", "hla_b27_positive": null, "crp_mg_per_l": 1.4, "habitus": 0.866}"#,
        ),
    ];
    for (seed, old) in before {
        let old: Patient = serde_json::from_str(old).unwrap();
        // `fmseg phantom` fixes each case's diagnosis (to hit the fraction exactly).
        let now = plan(seed, &cfg(old.diagnosis)).patient;
        assert_eq!(old.esr_mm_per_h, None);
        assert_eq!(Patient { esr_mm_per_h: None, ..now.clone() }, old, "seed {seed}");
        eprintln!("seed {seed}: ESR {:?}", now.esr_mm_per_h);
    }
}

/// The clinical branch's view of a synthetic patient carries every recorded variable.
#[test]
fn phantom_patient_to_clinical() {
    use fmseg::pipeline::clinical::{self, Clinical};
    let p = (0..50u64).map(|s| plan(s, &cfg(Diagnosis::AxSpA)).patient).find(|p| p.esr_mm_per_h.is_some()).unwrap();
    let c = Clinical::from(&p);
    assert_eq!(c.age_years, Some(p.age_years as f64));
    let sex = if p.sex == fmseg::phantom::Sex::Male { clinical::Sex::Male } else { clinical::Sex::Female };
    assert_eq!(c.sex, Some(sex));
    assert_eq!(c.hla_b27, p.hla_b27_positive);
    assert_eq!((c.crp_mg_per_l, c.esr_mm_per_h), (Some(p.crp_mg_per_l), p.esr_mm_per_h));
}
