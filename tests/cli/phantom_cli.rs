//! `fmseg phantom` through the real binary: the files it writes, that they agree with the
//! library, and its errors.

use fmseg::cli::phantom::diagnosis_of;
use fmseg::io::dicom::{load_volume, Selection};
use fmseg::io::nifti;
use fmseg::phantom::manifest::{CaseManifest, SetManifest};
use fmseg::phantom::patient::Diagnosis;
use fmseg::phantom::rng::case_seed;
use fmseg::phantom::{generate_case, plan, PhantomConfig};
use std::path::Path;

use crate::common::cli::Fmseg;

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> T {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn writes_a_set_that_matches_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("set");
    let d = dir.to_str().unwrap();
    // A set whose two cases store their slices in opposite orders.
    let descending = |s: u64, i: usize| {
        let cfg = PhantomConfig { diagnosis: Some(diagnosis_of(i, 0.5)), ..PhantomConfig::default() };
        plan(case_seed(s, i as u64), &cfg).acquisition.slices_descending
    };
    let seed = (1u64..).find(|&s| descending(s, 0) != descending(s, 1)).unwrap();
    let seed_arg = seed.to_string();
    Fmseg::new()
        .args(["phantom", "--out", d, "--seed", &seed_arg, "--cases", "2", "--axspa-fraction", "0.5", "--preview"])
        .run()
        .success();
    let set: SetManifest = read_json(&dir.join("manifest.json"));
    assert_eq!(set.set_seed, seed);
    assert_eq!(set.cases.len(), 2);
    for (i, e) in set.cases.iter().enumerate() {
        assert_eq!(e.id, format!("case_{i:03}"));
        assert_eq!(e.seed, case_seed(seed, i as u64));
        assert_eq!(e.diagnosis, diagnosis_of(i, 0.5));
        for f in &e.files {
            assert!(dir.join(f).is_file(), "{f} listed but missing");
        }
        let cdir = dir.join(&e.id);
        for f in ["manifest.json", "fm_mask.nii.gz", "preview.png"] {
            assert!(cdir.join(f).is_file(), "{}/{f} missing", e.id);
        }
        let ndcm = std::fs::read_dir(cdir.join("dicom")).unwrap().count();
        let m: CaseManifest = read_json(&cdir.join("manifest.json"));
        assert_eq!(m.seed, e.seed);
        assert_eq!(m.patient.diagnosis, e.diagnosis);
        // The mask file: the image grid, the lesion voxels.
        let mask = nifti::read(cdir.join("fm_mask.nii.gz")).unwrap();
        assert_eq!(mask.dims, m.acquisition.dims);
        for r in 0..3 {
            for c in 0..4 {
                let (a, b) = (mask.affine[r][c], m.acquisition.affine[r][c]);
                assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "affine [{r}][{c}] {a} vs {b}");
            }
        }
        assert!(mask.data.iter().all(|&v| v == 0.0 || v == 1.0));
        assert_eq!(mask.data.iter().filter(|&&v| v == 1.0).count() as u64, m.fm_voxels);
        // The library regenerates the same case from the listed seed.
        let cfg = PhantomConfig { diagnosis: Some(e.diagnosis), ..PhantomConfig::default() };
        let c = generate_case(e.seed, &cfg);
        // (Compared as text: serde_json's float parsing may be off by one ulp.)
        let text = std::fs::read_to_string(cdir.join("manifest.json")).unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&c.manifest).unwrap(),
            text,
            "{}: manifest differs from the library's",
            e.id
        );
        assert!(c.mask.iter().zip(&mask.data).all(|(&a, &b)| a as f32 == b));
        // The DICOM series reads back as the library's image (the loader orders slices along
        // row x column, so a series stored head-to-foot comes back with k reversed).
        assert_eq!(ndcm, m.acquisition.dims[2], "one file per slice");
        let (img, _) = load_volume(&cdir.join("dicom"), &Selection::auto()).unwrap();
        assert_eq!(img.dims, c.image.dims);
        let flipped = (0..3).map(|r| img.affine[r][2] * c.image.affine[r][2]).sum::<f64>() < 0.0;
        assert_eq!(flipped, m.acquisition.slices_descending, "{}", e.id);
        let [n0, n1, n2] = img.dims;
        for i in (0..n0).step_by(7) {
            for j in (0..n1).step_by(5) {
                for k in 0..n2 {
                    let kk = if flipped { n2 - 1 - k } else { k };
                    assert_eq!(img.get(i, j, k), c.image.get(i, j, kk), "{} voxel ({i},{j},{k})", e.id);
                }
            }
        }
        let kk = if flipped { n2 - 1 } else { 0 };
        let (w0, w1) = (img.world([0.0, 0.0, 0.0]), c.image.world([0.0, 0.0, kk as f64]));
        for r in 0..3 {
            assert!((w0[r] - w1[r]).abs() < 1e-3, "{}: first voxel at {w0:?} vs {w1:?}", e.id);
        }
    }
    // The preview is a real PNG.
    let png = std::fs::read(dir.join("case_000/preview.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Extending the set with --first keeps the listing whole.
    Fmseg::new()
        .args(["phantom", "--out", d, "--seed", &seed_arg, "--first", "2", "--axspa-fraction", "0.5"])
        .run()
        .success();
    let set: SetManifest = read_json(&dir.join("manifest.json"));
    assert_eq!(set.cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["case_000", "case_001", "case_002"]);
    assert_eq!(set.cases[2].seed, case_seed(seed, 2));
    // Another set into the same directory is refused.
    Fmseg::new().args(["phantom", "--out", d, "--seed", "77", "--first", "5"]).run().fails_naming(&["different set"]);
    // A second run into the same directory refuses to overwrite, unless forced.
    Fmseg::new()
        .args(["phantom", "--out", d, "--seed", &seed_arg, "--cases", "1", "--axspa-fraction", "0.5"])
        .run()
        .fails_naming(&["already exists"]);
    let before = std::fs::read(dir.join("case_000/manifest.json")).unwrap();
    Fmseg::new().args(["phantom", "--out", d, "--seed", "99", "--cases", "1", "--force"]).run().success();
    assert_ne!(std::fs::read(dir.join("case_000/manifest.json")).unwrap(), before, "not replaced");
    assert!(!dir.join("case_000/preview.png").exists(), "files of the replaced case left behind");
    // No temporary files left behind.
    for entry in walk(&dir) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with('.'), "leftover {name}");
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            v.extend(walk(&e));
        } else {
            v.push(e);
        }
    }
    v
}

/// A case stored as uint16 (PixelRepresentation 0) round-trips through the DICOM writer and
/// loader, and writing the same seed twice gives the same bytes in every file.
#[test]
fn uint16_case_round_trips_and_the_same_seed_writes_the_same_bytes() {
    use fmseg::cli::phantom::write_case;
    use fmseg::io::dicom::StoredSamples;
    use fmseg::phantom::rng::{stream, Rng};
    use fmseg::phantom::scanner::{sample_effects, Storage};
    let cfg = PhantomConfig::default();
    // A small uint16 case (cheap to render).
    let seed = (0u64..)
        .find(|&s| {
            let a = plan(s, &cfg).acquisition;
            a.dims.iter().product::<usize>() < 2_600_000
                && sample_effects(&mut Rng::new(s, stream::SCANNER), &a).storage == Storage::Uint16
        })
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = generate_case(seed, &cfg);
    assert!(matches!(c.stored, StoredSamples::U16(_)), "seed {seed}");
    let (a, b) = (tmp.path().join("a/case_000"), tmp.path().join("b/case_000"));
    let fa = write_case(&a, &c, false).unwrap();
    let fb = write_case(&b, &generate_case(seed, &cfg), false).unwrap();
    assert_eq!(fa, fb);
    for f in &fa {
        assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    // PixelRepresentation (0028,0103) = 0 in the first slice.
    let first = a.join(fa.iter().find(|f| f.starts_with("dicom/")).unwrap());
    let bytes = std::fs::read(first).unwrap();
    let tag = [0x28u8, 0x00, 0x03, 0x01, b'U', b'S', 2, 0];
    let at = bytes.windows(8).position(|w| w == tag).expect("PixelRepresentation written");
    assert_eq!(&bytes[at + 8..at + 10], &[0, 0], "unsigned");
    let (img, _) = load_volume(&a.join("dicom"), &Selection::auto()).unwrap();
    assert_eq!(img.dims, c.image.dims);
    let flipped = c.manifest.acquisition.slices_descending;
    let [n0, n1, n2] = img.dims;
    for i in (0..n0).step_by(3) {
        for j in (0..n1).step_by(3) {
            for k in 0..n2 {
                let kk = if flipped { n2 - 1 - k } else { k };
                assert_eq!(img.get(i, j, k), c.image.get(i, j, kk), "voxel ({i},{j},{k})");
            }
        }
    }
}

#[test]
fn diagnosis_pattern_hits_the_fraction_on_every_prefix() {
    for f in [0.0, 0.3, 0.5, 0.7, 1.0] {
        let mut ax = 0;
        for i in 0..50 {
            ax += (diagnosis_of(i, f) == Diagnosis::AxSpA) as usize;
            let want = ((i + 1) as f64 * f).floor() as usize;
            assert_eq!(ax, want, "fraction {f}, first {} cases", i + 1);
        }
    }
}

#[test]
fn bad_arguments_fail_clearly_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("never");
    let d = dir.to_str().unwrap();
    Fmseg::new().args(["phantom", "--out", d, "--axspa-fraction", "1.5"]).run().fails_naming(&["--axspa-fraction"]);
    assert!(!dir.exists(), "output created despite the error");
    Fmseg::new().args(["phantom", "--out", d, "--cases", "0"]).run().fails_naming(&["--cases"]);
    assert!(!dir.exists());
    // The output path is a file.
    let file = tmp.path().join("a_file");
    std::fs::write(&file, b"x").unwrap();
    Fmseg::new().args(["phantom", "--out", file.to_str().unwrap()]).run().fails_naming(&["a_file"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}
