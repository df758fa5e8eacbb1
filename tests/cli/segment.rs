//! `fmseg segment`: the report's arithmetic on hand-made masks, the overlay picture, the
//! pipeline's wiring with mock models, the real command end to end on a NIfTI image, and bad
//! inputs refused with a clear message and no output.

use crate::common;
use crate::common::cli::{self, Fmseg, Run};
use crate::dicom_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use fmseg::io::nifti::{self, Datatype, WriteType};
use fmseg::pipeline::overlay::{self, GAP, OUTLINE_RGB};
use fmseg::pipeline::report::{analyse, Midline, Side};
use fmseg::pipeline::segment::{segment_volume, validate, LoadedInput, SegmentConfig, Stage};
use fmseg::pipeline::tta::TtaConfig;
use fmseg::pipeline::window::Predictor;
use fmseg::tensor::HostTensor;
use fmseg::volume::{Affine, Volume, IDENTITY};
use serde_json::Value;

fn affine(cols: [[f64; 3]; 3], origin: [f64; 3]) -> Affine {
    let mut a = IDENTITY;
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] = cols[c][r];
        }
        a[r][3] = origin[r];
    }
    a
}

fn volume(dims: [usize; 3], a: Affine, f: impl Fn(usize, usize, usize) -> f32) -> Volume {
    let mut data = Vec::with_capacity(dims.iter().product());
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                data.push(f(i, j, k));
            }
        }
    }
    Volume::new(dims, data, a).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn close3(a: [f64; 3], b: [f64; 3]) -> bool {
    (0..3).all(|c| close(a[c], b[c]))
}

// ------------------------------------------------------------------ report arithmetic

/// Three lesions on a flipped, sheared grid (x = 40 - 0.8 i; slices tilted: k moves 0.5 mm
/// along y and 3 mm along z): a 2x2x2 cube, a chain of three voxels touching only at corners
/// (one lesion under 26-connectivity, three under 6), and a single voxel on the midline.
#[test]
fn report_volumes_components_sides_and_slices() {
    let a = affine([[-0.8, 0.0, 0.0], [0.0, 0.9, 0.0], [0.0, 0.5, 3.0]], [40.0, -20.0, 5.0]);
    let cube = |i, j, k| (2..=3).contains(&i) && (2..=3).contains(&j) && (1..=2).contains(&k);
    let chain = |i, j, k| [(6, 6, 0), (7, 7, 1), (8, 8, 2)].contains(&(i, j, k));
    let single = |i, j, k| (i, j, k) == (5, 1, 5);
    let mask = volume([10, 12, 6], a, |i, j, k| (cube(i, j, k) || chain(i, j, k) || single(i, j, k)) as u8 as f32);
    // the midline through the single voxel's centre: x = 40 - 0.8 * 5 = 36
    let midline = Midline::at(mask.world([5.0, 1.0, 5.0])[0]);
    assert!(close(midline.x_lps_mm, 36.0));
    let f = analyse(&mask, &midline).unwrap();

    // |det| = 0.8 * 0.9 * 3 = 2.16 mm^3 (the product of the column lengths would be 2.19)
    let v = 2.16e-3;
    assert!(close(f.voxel_volume_ml, v), "{}", f.voxel_volume_ml);
    assert_eq!(f.fm_voxels, 12);
    assert!(close(f.fm_volume_ml, 12.0 * v));
    assert_eq!(f.lesion_count, 3);
    assert!(f.connectivity.contains("26"));
    let sizes: Vec<usize> = f.lesions.iter().map(|l| l.voxels).collect();
    assert_eq!(sizes, vec![8, 3, 1]);
    assert_eq!(f.lesions.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1, 2, 3]);

    let c = &f.lesions[0];
    assert!(close(c.volume_ml, 8.0 * v));
    // centre (2.5, 2.5, 1.5): x = 40 - 2, y = -20 + 2.25 + 0.75, z = 5 + 4.5
    assert!(close3(c.centroid_lps_mm, [38.0, -17.0, 9.5]), "{:?}", c.centroid_lps_mm);
    assert_eq!((c.bbox_voxels.min, c.bbox_voxels.max), ([2, 2, 1], [3, 3, 2]));
    assert!(close3(c.bbox_lps_mm.min, [37.6, -17.7, 8.0]), "{:?}", c.bbox_lps_mm);
    assert!(close3(c.bbox_lps_mm.max, [38.4, -16.3, 11.0]), "{:?}", c.bbox_lps_mm);
    assert_eq!(c.side, Side::Left);
    assert!(close(c.left_ml, 8.0 * v) && c.right_ml == 0.0);
    assert_eq!(c.slices, vec![1, 2]);

    let ch = &f.lesions[1];
    assert!(close3(ch.centroid_lps_mm, [34.4, -13.2, 8.0]), "{:?}", ch.centroid_lps_mm);
    assert_eq!(ch.side, Side::Right);
    assert_eq!(ch.slices, vec![0, 1, 2]);

    let s = &f.lesions[2];
    assert_eq!(s.side, Side::Both);
    assert!(close(s.left_ml, 0.5 * v) && close(s.right_ml, 0.5 * v));
    assert_eq!(s.slices, vec![5]);

    assert!(close(f.left_ml, 8.5 * v) && close(f.right_ml, 3.5 * v));
    assert!(close(f.left_ml + f.right_ml, f.fm_volume_ml));
    assert_eq!(f.slices_with_fm, vec![0, 1, 2, 5]);

    // an empty mask: nothing, and no division by zero
    let empty = volume([4, 4, 3], a, |_, _, _| 0.0);
    let f = analyse(&empty, &midline).unwrap();
    assert_eq!((f.fm_voxels, f.lesion_count, f.fm_volume_ml), (0, 0, 0.0));
    assert!(f.slices_with_fm.is_empty());
    // a noisy mask: single voxels 3 apart along every axis, 10 x 10 x 2 = 200 lesions
    let noisy = volume([30, 30, 6], a, |i, j, k| (i % 3 == 0 && j % 3 == 0 && k % 3 == 0) as u8 as f32);
    let f = analyse(&noisy, &midline).unwrap();
    assert_eq!(f.lesion_count, 200);
    assert_eq!(f.lesions.len(), fmseg::pipeline::report::MAX_LISTED_LESIONS);
    assert_eq!(f.lesions_not_listed, 200 - fmseg::pipeline::report::MAX_LISTED_LESIONS);
    assert!(close(f.lesions_not_listed_ml, f.lesions_not_listed as f64 * v));
    assert!(close(f.left_ml + f.right_ml, f.fm_volume_ml));
    // a mask that is not 0/1
    let bad = volume([2, 2, 2], a, |i, _, _| i as f32 * 2.0);
    assert!(analyse(&bad, &midline).unwrap_err().to_string().contains("expected only 0 and 1"));
}

/// The midline is the body's centroid, not the image centre: a bright disc centred 12 voxels
/// right of the image centre (LPS x = 2 i - 30) puts the midline at its centre's x.
#[test]
fn midline_is_the_body_centroid() {
    let a = affine([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]], [-30.0, 0.0, 0.0]);
    let img = volume([60, 40, 5], a, |i, j, _| {
        let (x, y) = (i as f64 - 41.5, j as f64 - 19.5);
        let noise = ((i * 7 + j * 13) % 5) as f32;
        if x * x + y * y < 12.0 * 12.0 {
            300.0 + noise
        } else {
            noise
        }
    });
    let m = Midline::from_image(&img);
    // symmetric about i = 41.5: x = 2 * 41.5 - 30 = 53
    assert!(close(m.x_lps_mm, 53.0), "{m:?}");
    assert!(m.method.contains("Otsu"));
}

// ------------------------------------------------------------------ overlay

fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

/// A 10x8 rectangle of FM on one slice of a 30x20x4 image: one tile, the outline exactly on
/// the rectangle's border (32 pixels), grey elsewhere; mirrored when the voxel axes run
/// right-to-left and anterior-to-posterior (RAS order).
#[test]
fn overlay_png_outline_where_the_mask_boundary_is() {
    for flipped in [false, true] {
        let s = if flipped { -1.0 } else { 1.0 };
        let a = affine([[s, 0.0, 0.0], [0.0, s, 0.0], [0.0, 0.0, 4.0]], [0.0; 3]);
        let img = volume([30, 20, 4], a, |i, j, k| (i * 3 + j * 5 + k) as f32);
        let mask =
            volume([30, 20, 4], a, |i, j, k| ((5..15).contains(&i) && (4..12).contains(&j) && k == 2) as u8 as f32);
        let o = overlay::render(&img, &mask).unwrap();
        assert_eq!(o.slices, vec![2]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlay.png");
        overlay::write_png(&path, &o).unwrap();
        let (w, h, rgb) = decode_png(&std::fs::read(&path).unwrap());
        assert_eq!((w, h), (GAP + 30 + GAP, GAP + 20 + GAP));
        let px = |x: usize, y: usize| -> [u8; 3] {
            let o = (y * w + x) * 3;
            [rgb[o], rgb[o + 1], rgb[o + 2]]
        };
        // screen position of voxel (i, j)
        let at = |i: usize, j: usize| {
            if flipped {
                px(GAP + 29 - i, GAP + 19 - j)
            } else {
                px(GAP + i, GAP + j)
            }
        };
        let mut outline = 0;
        for i in 0..30 {
            for j in 0..20 {
                let inside = (5..15).contains(&i) && (4..12).contains(&j);
                let border = inside && (i == 5 || i == 14 || j == 4 || j == 11);
                let c = at(i, j);
                if border {
                    assert_eq!(c, OUTLINE_RGB, "voxel ({i}, {j}) flipped={flipped}");
                    outline += 1;
                } else {
                    assert!(c[0] == c[1] && c[1] == c[2], "voxel ({i}, {j}) should be grey: {c:?}");
                }
            }
        }
        assert_eq!(outline, 32);
        assert_eq!(rgb.chunks(3).filter(|c| *c == OUTLINE_RGB).count(), 32, "no outline outside the tile");
        // windowing: brighter voxels are brighter pixels, the 99th percentile and above white
        assert!(at(1, 1)[0] < at(3, 1)[0]);
        assert_eq!(at(29, 19), [255; 3]);
        assert_eq!(at(0, 0), [0; 3]);
    }
}

// ------------------------------------------------------------------ pipeline wiring (mock models)

/// What the loader would say of a NIfTI input `img` named `path`.
fn nifti_info(path: &str, img: &Volume) -> fmseg::pipeline::segment::InputInfo {
    fmseg::pipeline::segment::InputInfo {
        path: path.into(),
        format: "nifti".into(),
        series_uid: None,
        series_description: None,
        modality: None,
        series_number: None,
        series_choice: None,
        dims: img.dims,
        spacing_mm: img.spacing(),
        affine_lps: img.affine,
        uncoded_nifti: false,
        note: None,
        sources: Vec::new(),
    }
}

/// An image already on the network's grid (LPS, 1 x 1 x 7 mm, 200x196x16: no reorientation,
/// resampling or padding), valued 0 or 100, and mock models whose class-1 logit is the input
/// itself: the mask must be exactly the bright voxels, through a two-model ensemble with the
/// reference's TTA (26 passes), with progress counting every window.
#[test]
fn segment_volume_with_mock_models_maps_back_exactly() {
    let dims = [200, 196, 16];
    let a = affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 7.0]], [-100.0, -90.0, 0.0]);
    let bright = |i: usize, j: usize, k: usize| (i * 31 + j * 17 + k * 7) % 11 < 4;
    let img = volume(dims, a, |i, j, k| if bright(i, j, k) { 100.0 } else { 0.0 });
    let info = nifti_info("mock.nii", &img);
    let mut calls = 0usize;
    let mut model = |x: &HostTensor| -> fmseg::Result<HostTensor> {
        calls += x.shape[0];
        // (B, 1, ...) -> (B, 2, ...): per batch item, channel 0 zeros then channel 1 the input
        let (b, n) = (x.shape[0], x.data.len() / x.shape[0]);
        let mut out = Vec::with_capacity(2 * x.data.len());
        for bi in 0..b {
            out.extend(std::iter::repeat_n(0.0, n));
            out.extend_from_slice(&x.data[bi * n..(bi + 1) * n]);
        }
        HostTensor::new(vec![b, 2, x.shape[2], x.shape[3], x.shape[4]], out)
    };
    let mut model2 = |x: &HostTensor| model(x);
    let mut copy = |x: &HostTensor| -> fmseg::Result<HostTensor> {
        let (b, n) = (x.shape[0], x.data.len() / x.shape[0]);
        let mut out = Vec::with_capacity(2 * x.data.len());
        for bi in 0..b {
            out.extend(std::iter::repeat_n(0.0, n));
            out.extend(x.data[bi * n..(bi + 1) * n].iter().map(|v| v * 3.0));
        }
        HostTensor::new(vec![b, 2, x.shape[2], x.shape[3], x.shape[4]], out)
    };
    let cfg = SegmentConfig { tta: Some(TtaConfig { seed: 3, ..TtaConfig::default() }), ..SegmentConfig::default() };
    let mut last = None;
    let mut stages = Vec::new();
    let r = {
        let mut models: Vec<&mut dyn Predictor> = vec![&mut model2, &mut copy];
        segment_volume(LoadedInput { image: img.clone(), info }, &cfg, &mut models, &mut |p| {
            if stages.last() != Some(&p.stage) {
                stages.push(p.stage);
            }
            if p.stage == Stage::Inference {
                last = Some((p.done, p.total));
            }
        })
        .unwrap()
    };
    assert_eq!(stages, vec![Stage::Preprocess, Stage::Inference, Stage::Postprocess]);
    // windows: axis 0 starts 0, 8; axis 1 starts 0, 4; axis 2 one: 4 per pass
    assert_eq!((r.windows_per_pass, r.passes, r.preprocessed_dims), (4, 26, dims));
    assert_eq!(last, Some((104, 104)));
    assert_eq!(calls, 4 * 13);
    assert_eq!(r.mask.dims, dims);
    assert_eq!(r.mask.affine, a);
    assert!(r.probability.is_none());
    let wrong = r.mask.data.iter().zip(&img.data).filter(|(m, v)| (**m == 1.0) != (**v == 100.0)).count();
    assert_eq!(wrong, 0);
    assert_eq!(
        r.timings.iter().map(|t| t.stage.as_str()).collect::<Vec<_>>(),
        ["preprocess", "inference", "postprocess"]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn validation_refuses_degenerate_volumes() {
    let p = Path::new("x.nii");
    let ok = volume([3, 3, 2], IDENTITY, |i, j, k| (i + j + k) as f32);
    assert!(validate(p, &ok).is_ok());
    for (v, want) in [
        (volume([3, 3, 1], IDENTITY, |i, j, _| (i + j) as f32), "2-D"),
        (volume([3, 3, 2], IDENTITY, |_, _, _| 7.0), "constant"),
        (volume([3, 3, 2], IDENTITY, |i, _, _| if i == 2 { f32::INFINITY } else { 0.0 }), "non-finite"),
    ] {
        let e = validate(p, &v).unwrap_err().to_string();
        assert!(e.contains("x.nii") && e.contains(want), "{e}");
    }
}

// ------------------------------------------------------------------ the command

/// Randomly initialised weights (PyTorch's default init, seed 1) in the frozen format, marked
/// untrained; written once per test process (atomically, so parallel test binaries agree).
fn weights_file() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segment-test-weights-seed1.fmw");
        let sd = fmseg::model::init::random_state_dict(1);
        fmseg::weights::save_with_metadata(
            &sd,
            &p,
            fmseg::weights::Format::Frozen,
            fmseg::weights::DType::F32,
            &[("trained", "false")],
        )
        .unwrap();
        p
    })
}

/// `fmseg segment INPUT --out OUT` with the test weights on 2 threads, then `extra`.
fn segment_cmd(input: &Path, out: &Path, extra: &[&str]) -> Fmseg {
    Fmseg::new()
        .arg("segment")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--weights")
        .arg(weights_file())
        .args(["--threads", "2"])
        .args(extra)
}

/// A pelvis-like test image: an oblique, x-flipped int16 NIfTI with a bright body and two
/// darker "bones", 64x56x10 voxels of 1.6 x 1.6 x 3.5 mm (one 192x192x16 window).
fn test_image(path: &Path) -> Volume {
    let (c, s) = (0.15f64.cos(), 0.15f64.sin());
    let a = affine([[-1.6, 0.0, 0.0], [0.0, 1.6 * c, 1.6 * s], [0.0, -3.5 * s, 3.5 * c]], [50.0, -40.0, 10.0]);
    let img = pelvis(a);
    nifti::write(path, &img, WriteType::I16).unwrap();
    img
}

/// The pelvis-like values on a 64x56x10 grid with affine `a` (whole numbers, int16 range).
fn pelvis(a: Affine) -> Volume {
    volume([64, 56, 10], a, |i, j, k| {
        let (x, y) = (i as f64 - 31.5, j as f64 - 27.5);
        let body = (x / 28.0).powi(2) + (y / 22.0).powi(2) < 1.0;
        let bone = ((x.abs() - 12.0) / 5.0).powi(2) + (y / 8.0).powi(2) < 1.0;
        let v = if bone {
            250.0
        } else if body {
            600.0
        } else {
            20.0
        };
        (v + ((i * 7 + j * 11 + k * 3) % 17) as f64 * 3.0).round() as f32
    })
}

/// The pelvis as a classic MR series (one file per slice) in `dir`, or with `modality` other
/// than MR rewritten into every file.
fn write_dicom(dir: &Path, modality: &str) -> fmseg::io::dicom::MrSeriesMeta {
    use fmseg::io::dicom::{write_mr_series, Rescale, StoredSamples, StoredVolume};
    let a = dicom_support::oblique_affine(1.6, 1.6, 3.5, 8.0, [-50.0, -40.0, 10.0]);
    let img = pelvis(a);
    let samples = StoredSamples::I16(img.data.iter().map(|&v| v as i16).collect());
    let v = StoredVolume::new(img.dims, samples, a, vec![Rescale::IDENTITY]).unwrap();
    let meta = dicom_support::meta("segment-test", 3, "T1 TSE AX SIJ");
    for p in write_mr_series(&v, &meta, dir).unwrap() {
        if modality != "MR" {
            dicom_support::rewrite(&p, |o| {
                o.put(dicom_core::DataElement::new(
                    dicom_dictionary_std::tags::MODALITY,
                    dicom_core::VR::CS,
                    dicom_core::value::PrimitiveValue::from(modality),
                ));
            });
        }
    }
    meta
}

/// The files in `dir`, but for the output lock that stays once a run has used the directory.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| n != fmseg::io::output_dir::LOCK_FILE);
    v.sort();
    v
}

#[test]
fn segment_command_end_to_end_on_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t1.nii.gz");
    let img = test_image(&input);
    let input_read = nifti::read(&input).unwrap();
    let out = dir.path().join("result");
    let t0 = std::time::Instant::now();
    let o = segment_cmd(&input, &out, &["--probability"]).run();
    eprintln!("segment took {:.1} s", t0.elapsed().as_secs_f64());
    // untrained weights are announced; progress lines
    o.success().stderr_has(&["NOTICE", "untrained", "inference"]);
    assert_eq!(listing(&out), ["fm_mask.nii.gz", "fm_probability.nii.gz", "overlay.png", "report.json"]);

    // the mask: u8, on the input's own grid and affine
    let (mask, h) = nifti::read_with_header(out.join("fm_mask.nii.gz")).unwrap();
    assert_eq!(h.datatype, Datatype::U8);
    assert_eq!(mask.dims, img.dims);
    for r in 0..3 {
        for c in 0..4 {
            assert!((mask.affine[r][c] - input_read.affine[r][c]).abs() < 1e-5, "affine [{r}][{c}]");
        }
    }
    assert!(mask.data.iter().all(|&v| v == 0.0 || v == 1.0));
    let fm = mask.data.iter().filter(|&&v| v == 1.0).count();
    let (prob, ph) = nifti::read_with_header(out.join("fm_probability.nii.gz")).unwrap();
    assert_eq!((ph.datatype, prob.dims), (Datatype::F32, img.dims));
    assert!(prob.data.iter().all(|&p| (0.0..=1.0).contains(&p)));

    // the report agrees with the mask
    let r: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let f = &r["findings"];
    let det = fmseg::linalg::det3(&fmseg::linalg::linear_part(&input_read.affine)).abs();
    assert!((det - 1.6 * 1.6 * 3.5).abs() < 1e-4);
    assert_eq!(f["fm_voxels"].as_u64(), Some(fm as u64));
    let vol = f["fm_volume_ml"].as_f64().unwrap();
    assert!((vol - fm as f64 * det / 1000.0).abs() < 1e-9 * (1.0 + vol), "{vol} vs {fm} voxels");
    // the listed lesions (the largest) and the counted rest
    let lesions = f["lesions"].as_array().unwrap();
    let rest = f["lesions_not_listed"].as_u64().unwrap();
    assert!(lesions.len() <= fmseg::pipeline::report::MAX_LISTED_LESIONS);
    assert_eq!(f["lesion_count"].as_u64(), Some(lesions.len() as u64 + rest));
    let sum: f64 = lesions.iter().map(|l| l["volume_ml"].as_f64().unwrap()).sum::<f64>()
        + f["lesions_not_listed_ml"].as_f64().unwrap();
    assert!((sum - vol).abs() < 1e-9 * (1.0 + vol));
    let lr = f["left_ml"].as_f64().unwrap() + f["right_ml"].as_f64().unwrap();
    assert!((lr - vol).abs() < 1e-9 * (1.0 + vol));
    let slices: Vec<u64> =
        (0..10u64).filter(|&k| (0..64 * 56).any(|p| mask.data[p * 10 + k as usize] == 1.0)).collect();
    assert_eq!(f["slices_with_fm"], serde_json::json!(slices));
    assert!(f["connectivity"].as_str().unwrap().contains("26"));
    assert!(f["midline"]["method"].as_str().unwrap().contains("Otsu"));
    assert_eq!(r["input"]["format"], "nifti");
    assert_eq!(r["input"]["dims"], serde_json::json!([64, 56, 10]));
    assert_eq!(r["fmseg_version"], env!("CARGO_PKG_VERSION"));
    // `--device auto` (the default): the CPU here, the GPU on a machine with one
    assert!(!r["device"].as_str().unwrap().is_empty());
    let w = &r["weights"][0];
    assert_eq!(w["file"], "segment-test-weights-seed1.fmw");
    assert_eq!(w["trained"], false);
    use sha2::Digest;
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(std::fs::read(weights_file()).unwrap()));
    assert_eq!(w["sha256"], digest.as_str());
    assert_eq!(r["settings"]["windows_per_pass"], 1);
    assert_eq!(r["settings"]["passes"], 1);
    assert_eq!(r["settings"]["tta"], false);
    let stages: Vec<&str> = r["timings"].as_array().unwrap().iter().map(|t| t["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        ["load", "weights", "preprocess", "inference", "postprocess", "report", "overlay", "write", "total"]
    );
    let warnings: Vec<&str> = r["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(warnings.iter().any(|w| w.contains("untrained")), "{warnings:?}");
    // 10 slices of 3.5 mm (tilted) are 6 slabs of 7 mm: padded to 16, flagged
    assert!(warnings.iter().any(|w| w.contains("inferior-superior") && w.contains("padded")), "{warnings:?}");
    assert_eq!(
        r["outputs"],
        serde_json::json!(["fm_mask.nii.gz", "fm_probability.nii.gz", "overlay.png", "report.json"])
    );

    // the overlay: one tile per listed slice
    let (pw, ph, _) = decode_png(&std::fs::read(out.join("overlay.png")).unwrap());
    let shown = r["overlay"]["slices"].as_array().unwrap().len();
    assert!((1..=10).contains(&shown));
    assert!(pw > 64 && ph > 56, "{pw}x{ph}");
}

/// Every bad input: exit status 1, nothing on stdout, a message naming the input and the
/// problem, and no output directory.
#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0]], [0.0; 3]);

    let text = d.join("notes.txt");
    std::fs::write(&text, "not an image\n").unwrap();
    let nan = d.join("nan.nii.gz");
    nifti::write(
        &nan,
        &volume([20, 20, 6], a, |i, j, k| if (i, j, k) == (3, 4, 5) { f32::NAN } else { 1.0 + i as f32 }),
        WriteType::F32,
    )
    .unwrap();
    // a true 2-D NIfTI: dim[0] = 2
    let flat = d.join("flat.nii");
    nifti::write(&flat, &volume([20, 20, 1], a, |i, j, _| (i + j) as f32), WriteType::F32).unwrap();
    let mut bytes = std::fs::read(&flat).unwrap();
    bytes[40..42].copy_from_slice(&2i16.to_le_bytes());
    std::fs::write(&flat, bytes).unwrap();
    let constant = d.join("blank.nii");
    nifti::write(&constant, &volume([20, 20, 6], a, |_, _, _| 0.0), WriteType::I16).unwrap();
    let truncated = d.join("cut.nii");
    nifti::write(&truncated, &volume([20, 20, 6], a, |i, _, _| i as f32), WriteType::F32).unwrap();
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty_dir = d.join("empty_dir");
    std::fs::create_dir(&empty_dir).unwrap();
    let ct_dir = d.join("ct_series");
    write_dicom(&ct_dir, "CT");
    let mr_dir = d.join("mr_series");
    write_dicom(&mr_dir, "MR");
    let one_slice = listing(&mr_dir).into_iter().next().map(|n| mr_dir.join(n)).unwrap();

    let cases: Vec<(PathBuf, &[&str])> = vec![
        (d.join("missing.nii.gz"), &["No such file"]),
        (text.clone(), &["neither a NIfTI-1 image (.nii, .nii.gz) nor a DICOM image"]),
        (nan, &["non-finite", "(3, 4, 5)"]),
        (flat, &["2-D"]),
        (constant, &["constant"]),
        (truncated, &["truncated", "short", "expected"]),
        (empty_dir.clone(), &["no DICOM image found"]),
        (ct_dir, &["modality is \"CT\", but an MR series is required"]),
        (one_slice, &["a single DICOM slice (64x56 pixels)", "pass the directory"]),
    ];
    for (input, wants) in cases {
        let out = d.join(format!("out-{}", input.file_name().unwrap().to_string_lossy()));
        let o = segment_cmd(&input, &out, &[]).run().fails_naming(&[&input.display().to_string()]);
        let msg = o.stderr();
        assert!(wants.iter().any(|w| msg.contains(w)), "{}: expected one of {wants:?} in: {o}", input.display());
        assert!(!out.exists(), "{} must not be created", out.display());
    }

    // an existing output directory keeps its other files and gets nothing
    let keep = d.join("keep");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("mine.txt"), "x").unwrap();
    segment_cmd(&text, &keep, &[]).run().fails_naming(&["notes.txt"]);
    assert_eq!(listing(&keep), ["mine.txt"]);

    // --out naming a file, --series on a NIfTI, bad knobs
    let good = d.join("good.nii");
    nifti::write(&good, &volume([20, 20, 6], a, |i, j, k| (i * j + k) as f32), WriteType::F32).unwrap();
    segment_cmd(&good, &text, &[]).run().fails_naming(&["not a directory"]);
    segment_cmd(&good, &d.join("o1"), &["--series", "1.2.3"]).run().fails_naming(&["NIfTI"]);
    segment_cmd(&good, &d.join("o2"), &["--overlap", "1.5"]).run().fails_naming(&["--overlap"]);
    // a DICOM SEG references source images: a NIfTI input has none (refused before inference)
    let o =
        segment_cmd(&good, &d.join("o3"), &["--seg"]).run().fails_naming(&["--seg needs a DICOM input", "good.nii"]);
    assert!(!o.stderr().contains("inference"), "{o}");
    assert!(!d.join("o1").exists() && !d.join("o2").exists() && !d.join("o3").exists());
}

#[test]
fn weights_from_the_environment_and_missing_weights() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.nii");
    test_image(&input);
    let out = dir.path().join("out");
    let gone = dir.path().join("gone.fmw");
    let segment = || Fmseg::new().arg("segment").arg(&input).arg("--out").arg(&out);
    segment().env("FMSEG_WEIGHTS", &gone).run().fails_naming(&["FMSEG_WEIGHTS", "gone.fmw"]);
    segment_cmd(&input, &out, &["--weights", dir.path().join("nope.pth").to_str().unwrap()])
        .run()
        .fails_naming(&["nope.pth"]);
    // weights that do not fit the network: named, no output
    let bad = dir.path().join("bad.safetensors");
    let mut sd = fmseg::weights::StateDict::new();
    sd.insert("conv.weight", HostTensor::zeros(vec![2, 2]));
    fmseg::weights::save(&sd, &bad, fmseg::weights::Format::Safetensors, fmseg::weights::DType::F32).unwrap();
    segment().env("FMSEG_WEIGHTS", &bad).run().fails_naming(&["bad.safetensors"]);
    assert!(!out.exists());
}

/// A DICOM series directory through the command, into an output directory that already holds
/// another file: the mask is on the series' grid (the affine the DICOM loader gives), the
/// report names the series, the other file is left alone.
#[test]
fn segment_command_on_a_dicom_series() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("study");
    let meta = write_dicom(&series, "MR");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    // a two-model ensemble: the test weights again, as f16 safetensors
    let second = dir.path().join("fold2.safetensors");
    let sd = fmseg::weights::load_canonical(weights_file()).unwrap();
    fmseg::weights::save(&sd, &second, fmseg::weights::Format::Safetensors, fmseg::weights::DType::F16).unwrap();
    segment_cmd(&series, &out, &["--weights", second.to_str().unwrap(), "--sw-batch", "1"]).run().success();
    assert_eq!(listing(&out), ["fm_mask.nii.gz", "notes.txt", "overlay.png", "report.json"]);
    let (loaded, _) = fmseg::io::dicom::load_volume(&series, &fmseg::io::dicom::Selection::auto()).unwrap();
    let mask = nifti::read(out.join("fm_mask.nii.gz")).unwrap();
    assert_eq!(mask.dims, loaded.dims);
    assert!(
        dicom_support::affine_diff(&mask.affine, &loaded.affine) < 1e-4,
        "{:?} vs {:?}",
        mask.affine,
        loaded.affine
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["input"]["format"], "dicom");
    assert_eq!(r["input"]["series_uid"], meta.series_uid().as_str());
    assert_eq!(r["input"]["series_description"], "T1 TSE AX SIJ");
    assert_eq!(r["input"]["modality"], "MR");
    assert!(r["input"]["series_choice"].as_str().unwrap().contains("the only series"));
    let files: Vec<&str> = r["weights"].as_array().unwrap().iter().map(|w| w["file"].as_str().unwrap()).collect();
    assert_eq!(files, ["segment-test-weights-seed1.fmw", "fold2.safetensors"]);
    assert_eq!(r["weights"][1]["format"], "safetensors");
    assert_eq!((r["settings"]["models"].as_u64(), r["settings"]["passes"].as_u64()), (Some(2), Some(2)));
    assert_eq!(r["settings"]["sw_batch"], 1);
    let fm = mask.data.iter().filter(|&&v| v == 1.0).count() as f64;
    let det = fmseg::linalg::det3(&fmseg::linalg::linear_part(&loaded.affine)).abs();
    let vol = r["findings"]["fm_volume_ml"].as_f64().unwrap();
    assert!((vol - fm * det / 1000.0).abs() < 1e-6 * (1.0 + vol), "{vol}");
    // --series with a UID that is not there: the available series are listed
    segment_cmd(&series, &dir.path().join("o2"), &["--series", "1.2.3.4"])
        .run()
        .fails_naming(&["1.2.3.4", &meta.series_uid()]);
    assert!(!dir.path().join("o2").exists());
}

/// `--truth`: a NIfTI mask on the series' grid (stored in another voxel order) gives the report's
/// truth section, equal to counts taken here from the written mask, and a tinted overlay; a
/// truth that does not fit is refused before inference, naming the file, with no output.
#[test]
fn segment_command_against_a_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("study");
    write_dicom(&series, "MR");
    let (loaded, _) = fmseg::io::dicom::load_volume(&series, &fmseg::io::dicom::Selection::auto()).unwrap();
    // truth: the two "bones" of the pelvis image, written with axis 0 reversed
    let d = loaded.dims;
    let bone = |i: usize, j: usize| {
        let (x, y) = (i as f64 - 31.5, j as f64 - 27.5);
        ((x.abs() - 12.0) / 5.0).powi(2) + (y / 8.0).powi(2) < 1.0
    };
    let truth_on_grid = volume(d, loaded.affine, |i, j, _| bone(i, j) as u8 as f32);
    let mut flipped_affine = loaded.affine;
    for r in 0..3 {
        flipped_affine[r][3] += loaded.affine[r][0] * (d[0] - 1) as f64;
        flipped_affine[r][0] = -loaded.affine[r][0];
    }
    let flipped = volume(d, flipped_affine, |i, j, k| truth_on_grid.get(d[0] - 1 - i, j, k));
    let truth_path = dir.path().join("truth.nii.gz");
    nifti::write(&truth_path, &flipped, WriteType::U8).unwrap();

    let out = dir.path().join("out");
    segment_cmd(&series, &out, &["--truth", truth_path.to_str().unwrap()]).run().success().stderr_has(&["Dice"]);
    let mask = nifti::read(out.join("fm_mask.nii.gz")).unwrap();
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (p, &t) in mask.data.iter().zip(&truth_on_grid.data) {
        match (*p == 1.0, t == 1.0) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let t = &r["truth"];
    assert_eq!(t["true_positive_voxels"].as_u64(), Some(tp));
    assert_eq!(t["false_positive_voxels"].as_u64(), Some(fp));
    assert_eq!(t["false_negative_voxels"].as_u64(), Some(fn_));
    let dice = 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
    assert!(close(t["dice"].as_f64().unwrap(), dice), "{t}");
    assert_eq!(t["truth_lesions"].as_u64(), Some(2), "two bones: {t}");
    // the overlay shows the truth: some pixel is a missed or found tint (the untrained network
    // cannot find both bones exactly)
    let (w, h, rgb) = decode_png(&std::fs::read(out.join("overlay.png")).unwrap());
    assert_eq!(rgb.len(), w * h * 3);
    let tinted = rgb.chunks(3).filter(|p| p[0] > p[2] + 60 && p[1] > p[2] + 60).count();
    assert!(tinted > 0, "no yellow/green tint in the overlay");
    // without --truth the report has no truth section
    let plain = dir.path().join("plain");
    segment_cmd(&series, &plain, &[]).run().success();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(plain.join("report.json")).unwrap()).unwrap();
    assert!(r.get("truth").is_none());

    // a truth that does not fit: another grid, values other than 0/1, not a NIfTI
    let small = dir.path().join("small.nii.gz");
    nifti::write(&small, &volume([8, 8, 4], IDENTITY, |_, _, _| 0.0), WriteType::U8).unwrap();
    let labels = dir.path().join("labels.nii.gz");
    nifti::write(&labels, &volume(d, loaded.affine, |i, j, _| 2.0 * bone(i, j) as u8 as f32), WriteType::U8).unwrap();
    let junk = dir.path().join("junk.nii.gz");
    std::fs::write(&junk, b"not a nifti").unwrap();
    for (bad, want) in [(&small, "grid"), (&labels, "0 and 1"), (&junk, "junk.nii.gz")] {
        let out = dir.path().join("refused");
        let o = segment_cmd(&series, &out, &["--truth", bad.to_str().unwrap()])
            .run()
            .fails_naming(&[bad.file_name().unwrap().to_str().unwrap(), want]);
        assert!(!o.stderr().contains("inference"), "refused before inference: {o}");
        assert!(!out.exists());
    }
}

/// An Enhanced MR object (one multi-frame file) loads as the same volume as the classic series.
#[test]
fn enhanced_mr_file_loads_as_input() {
    use fmseg::io::dicom::{write_enhanced_mr, Rescale, StoredSamples, StoredVolume};
    let dir = tempfile::tempdir().unwrap();
    let a = dicom_support::oblique_affine(1.6, 1.6, 3.5, 8.0, [-50.0, -40.0, 10.0]);
    let img = pelvis(a);
    let samples = StoredSamples::I16(img.data.iter().map(|&v| v as i16).collect());
    let v = StoredVolume::new(img.dims, samples, a, vec![Rescale::IDENTITY]).unwrap();
    let file = dir.path().join("enhanced.dcm");
    write_enhanced_mr(&v, &dicom_support::meta("enh", 5, "T1 enhanced"), &file).unwrap();
    let l = fmseg::pipeline::segment::load_input(&file, None).unwrap();
    assert_eq!(l.info.format, "dicom");
    assert_eq!(l.info.series_description.as_deref(), Some("T1 enhanced"));
    assert_eq!(l.image.dims, img.dims);
    assert_eq!(l.image.data, img.data);
    assert!(dicom_support::affine_diff(&l.image.affine, &a) < 1e-6);
}

/// The command on the reference's own pipeline case with the reference checkpoint: the mask
/// it writes is the reference's (MONAI preprocessing, sliding window, inverse transforms)
/// voxel for voxel, except where the reference's two logits nearly tie. Four windows.
#[test]
fn segment_command_reproduces_the_reference_mask() {
    let (Some(case), Some(weights)) = (common::fixture("pipeline_case1.nii.gz"), common::fixture("weights_seed0.pth"))
    else {
        return;
    };
    let dir = common::fixtures_dir().unwrap();
    let out = tempfile::tempdir().unwrap();
    Fmseg::new().arg("segment").arg(&case).arg("--out").arg(out.path()).arg("--weights").arg(&weights).run().success();
    let mask = nifti::read(out.path().join("fm_mask.nii.gz")).unwrap();
    let want = match fmseg::io::npy::read(dir.join("pipeline_case1_mask_original_grid.npy")).unwrap().data {
        fmseg::io::npy::NpyData::U8(v) => v,
        d => panic!("expected uint8, got {}", d.dtype_name()),
    };
    assert_eq!(mask.data.len(), want.len());
    // near-ties of the reference's logits, mapped back to the original grid
    let logits = fmseg::io::npy::read_tensor(dir.join("pipeline_case1_logits.npy")).unwrap();
    let n = logits.data.len() / 2;
    let tie: Vec<f32> = (0..n).map(|i| ((logits.data[i] - logits.data[n + i]).abs() < 1e-3) as u8 as f32).collect();
    let img = nifti::read(&case).unwrap();
    let p = fmseg::pipeline::preprocess::preprocess(&img, &Default::default()).unwrap();
    let tie = fmseg::pipeline::postprocess::to_original(&tie, &p.chain, fmseg::pipeline::postprocess::Interp::Nearest)
        .unwrap();
    let differ: Vec<usize> = (0..want.len()).filter(|&i| mask.data[i] != want[i] as f32).collect();
    let outside = differ.iter().filter(|&&i| tie[i] == 0.0).count();
    eprintln!(
        "mask: {} of {} voxels differ from the reference, {outside} away from near-ties",
        differ.len(),
        want.len()
    );
    assert_eq!(outside, 0);
    let r: Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    let fm = want.iter().filter(|&&v| v == 1).count() as i64;
    let got = r["findings"]["fm_voxels"].as_i64().unwrap();
    assert!(got.abs_diff(fm) as usize <= differ.len(), "{got} vs reference {fm}");
    assert_eq!(r["settings"]["windows_per_pass"], 4);
}

/// phantom -> segment -> report: a synthetic axSpA study written as a DICOM series by
/// `fmseg phantom`, segmented through the library's one call ([`segment`]) with the test
/// weights. The report's volume is the mask's voxel count times the voxel volume; and the
/// report's arithmetic on the phantom's ground-truth mask agrees with the generator's own
/// manifest: the same FM volume and, with the midline found from the image (body centroid),
/// every ground-truth lesion on the side the generator put it.
#[test]
fn phantom_segment_report_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    // case 5 of set seed 7 (generator version 2): 228 x 174 mm field of view, 17 slices of
    // 5.9 mm stored foot to head (so the loaded grid is the mask's), lesions on both sides
    Fmseg::new()
        .arg("phantom")
        .arg("--out")
        .arg(&set)
        .args(["--seed", "7", "--first", "5", "--axspa-fraction", "1"])
        .run()
        .success();
    let case = set.join("case_005");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(case.join("manifest.json")).unwrap()).unwrap();

    let sd = fmseg::weights::load_canonical(weights_file()).unwrap();
    let engine = fmseg::engine::AnyEngine::new(fmseg::engine::Device::Auto, 2, &sd).unwrap();
    let cfg = SegmentConfig::default();
    let mut last = (0, 0);
    let t0 = std::time::Instant::now();
    let r = fmseg::pipeline::segment::segment(&case.join("dicom"), &cfg, std::slice::from_ref(&engine), &mut |p| {
        if p.stage == Stage::Inference {
            last = (p.done, p.total);
        }
    })
    .unwrap();
    eprintln!(
        "phantom {:?} at {:.3?} mm: {} windows on {} in {:.1} s",
        r.image.dims,
        r.image.spacing(),
        r.windows_per_pass,
        engine.device_name(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(last.0, last.1);
    assert_eq!(r.input.format, "dicom");
    assert_eq!(r.input.modality.as_deref(), Some("MR"));
    assert_eq!(r.mask.dims, r.image.dims);
    assert_eq!(r.mask.affine, r.image.affine);
    let stages: Vec<&str> = r.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(stages, ["load", "preprocess", "inference", "postprocess"]);

    let midline = Midline::from_image(&r.image);
    let report = fmseg::pipeline::report::Report::new(&r, &cfg, engine.device_name(), vec![], &midline).unwrap();
    let det = fmseg::linalg::det3(&fmseg::linalg::linear_part(&r.image.affine)).abs();
    let fm = r.mask.data.iter().filter(|&&v| v == 1.0).count();
    assert_eq!(report.findings.fm_voxels, fm);
    assert!(close(report.findings.fm_volume_ml, fm as f64 * det / 1000.0));
    let json: Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["findings"]["fm_voxels"].as_u64(), Some(fm as u64));

    // the ground truth, on the same grid as the loaded series
    let gt = nifti::read(case.join("fm_mask.nii.gz")).unwrap();
    assert_eq!(gt.dims, r.image.dims);
    assert!(dicom_support::affine_diff(&gt.affine, &r.image.affine) < 1e-3);
    let truth = analyse(&gt, &midline).unwrap();
    assert_eq!(truth.fm_voxels as u64, manifest["fm_voxels"].as_u64().unwrap());
    let vol = manifest["fm_volume_ml"].as_f64().unwrap();
    assert!((truth.fm_volume_ml - vol).abs() < 1e-6 * (1.0 + vol), "{} vs {vol}", truth.fm_volume_ml);
    let lesions = manifest["lesions"].as_array().unwrap();
    let sides: Vec<&str> = lesions.iter().map(|l| l["side"].as_str().unwrap()).collect();
    assert!(sides.contains(&"left") && sides.contains(&"right"), "lesions on both sides: {sides:?}");
    let by_side = |side: &str| -> f64 {
        lesions.iter().filter(|l| l["side"] == side).map(|l| l["voxels"].as_u64().unwrap() as f64).sum()
    };
    let v = truth.voxel_volume_ml;
    eprintln!(
        "ground truth: {} lesion(s) in the manifest, {} 26-connected; left {:.2} ml, right {:.2} ml; midline x {:.1} mm",
        lesions.len(),
        truth.lesion_count,
        truth.left_ml,
        truth.right_ml,
        midline.x_lps_mm
    );
    assert!(close(truth.left_ml / v, by_side("left")), "left: {} vs {}", truth.left_ml / v, by_side("left"));
    assert!(close(truth.right_ml / v, by_side("right")), "right: {} vs {}", truth.right_ml / v, by_side("right"));
}

/// The bundled weights find FM on a fresh synthetic study (set seed 2, never trained on: the
/// training run used case seeds 1000..1200), through the whole command on the DICOM series,
/// with a Dice the untrained network (Dice 0 on every study tried, predicting FM everywhere)
/// cannot reach. Measured with the weights of 2026-12-03 (400 steps): Dice 0.735 (precision
/// 0.796, recall 0.682, 3 of 3 lesions found, 1 false); of 2026-12-06 (600 steps): Dice 0.766
/// (0.743, 0.791, 3 of 3, 11 false); the floor leaves room for a later leg that trades this
/// study for others.
#[test]
fn bundled_weights_find_fm_on_a_fresh_study() {
    const DICE_FLOOR: f64 = 0.4;
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    Fmseg::new().arg("phantom").arg("--out").arg(&set).args(["--seed", "2", "--axspa-fraction", "1"]).run().success();
    let case = set.join("case_000");
    let out = dir.path().join("out");
    let truth = case.join("fm_mask.nii.gz");
    let o = Fmseg::new()
        .arg("segment")
        .arg(case.join("dicom"))
        .arg("--out")
        .arg(&out)
        .arg("--truth")
        .arg(&truth)
        .args(["--threads", "2", "--seg"])
        .run()
        .success();
    let stderr = o.stderr();
    assert!(!stderr.contains("untrained") && !stderr.contains("not marked as trained"), "trained: {o}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["weights"][0]["bundled"], true);
    let dice = r["truth"]["dice"].as_f64().unwrap();
    assert!(dice >= DICE_FLOOR, "Dice {dice} below the floor {DICE_FLOOR}: {}", r["truth"]);
    // --seg: the DICOM SEG holds the mask's voxels on the source planes (tests/io/dicom_tools.rs
    // checks the writer against dciodvfy, highdicom and dcmqi)
    assert!(r["outputs"].as_array().unwrap().iter().any(|o| o == "fm_seg.dcm"), "{}", r["outputs"]);
    let mask = nifti::read(out.join("fm_mask.nii.gz")).unwrap();
    assert_seg_equals_mask(&out.join("fm_seg.dcm"), &mask, &case.join("dicom"));
}

/// A SEG's frames, unpacked (frame `k` row `j` column `i` = bit `(k * rows + j) * cols + i`),
/// equal the mask at voxel `(i, j, k)`, each frame at its source slice's position.
fn assert_seg_equals_mask(seg: &Path, mask: &Volume, source: &Path) {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(seg).unwrap();
    let num = |t| obj.element(t).unwrap().to_int::<usize>().unwrap();
    assert_eq!(obj.element(tags::MODALITY).unwrap().to_str().unwrap(), "SEG");
    let (rows, cols, frames) = (num(tags::ROWS), num(tags::COLUMNS), num(tags::NUMBER_OF_FRAMES));
    assert_eq!([cols, rows, frames], mask.dims);
    let bits = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let [ni, nj, nk] = mask.dims;
    let mut fm = 0;
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let b = (k * rows + j) * cols + i;
                let set = bits[b / 8] >> (b % 8) & 1 == 1;
                assert_eq!(set, mask.data[(i * nj + j) * nk + k] > 0.5, "voxel ({i}, {j}, {k})");
                fm += set as usize;
            }
        }
    }
    assert!(fm > 0, "the SEG holds no FM");
    let l = fmseg::io::dicom::load_series(source, &fmseg::io::dicom::Selection::auto()).unwrap();
    let per_frame = obj.element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).unwrap().items().unwrap();
    for (k, f) in per_frame.iter().enumerate() {
        let src = f.element(tags::DERIVATION_IMAGE_SEQUENCE).unwrap().items().unwrap()[0]
            .element(tags::SOURCE_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0]
            .element(tags::REFERENCED_SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        assert_eq!(src, l.slices[k].sop_instance_uid, "frame {k}");
    }
}

// ------------------------------------------------------------------ hostile input and faults

/// A second run into the same --out replaces the first one's results as a group (an earlier
/// fm_probability.nii.gz goes, an orphaned partial file of a killed run is cleaned up), is
/// refused while another run holds the directory, may not overwrite its own input, and an
/// unwritable --out is found before any inference. --threads beyond the cores is capped.
#[test]
fn outputs_are_locked_replaced_as_a_group_and_checked_first() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t1.nii.gz");
    test_image(&input);
    let out = dir.path().join("result");
    segment_cmd(&input, &out, &["--probability"]).run().success();
    assert_eq!(listing(&out), ["fm_mask.nii.gz", "fm_probability.nii.gz", "overlay.png", "report.json"]);
    std::fs::write(out.join(".fmseg-partial-3-fm_mask.nii.gz"), "left by a run killed with -9").unwrap();
    Fmseg::new()
        .arg("segment")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--weights")
        .arg(weights_file())
        .args(["--threads", "100000"])
        .run()
        .success();
    assert_eq!(listing(&out), ["fm_mask.nii.gz", "overlay.png", "report.json"]);
    let r: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(r["device"], format!("cpu ({cores} threads)"), "{}", r["device"]);

    // another run holds the directory: refused at once, nothing touched
    let before = std::fs::read(out.join("report.json")).unwrap();
    let lock = std::fs::File::open(out.join(fmseg::io::output_dir::LOCK_FILE)).unwrap();
    lock.try_lock().unwrap();
    let o = segment_cmd(&input, &out, &[]).run().fails_naming(&["another fmseg run", &out.display().to_string()]);
    assert!(!o.stderr().contains("inference"), "refused before any work: {o}");
    drop(lock);
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), before);

    // the input is one of the outputs
    let own = out.join("fm_mask.nii.gz");
    segment_cmd(&own, &out, &[]).run().fails_naming(&["would be overwritten", "fm_mask.nii.gz"]);
    assert!(nifti::read(&own).is_ok());

    // unwritable outputs are found before the inference
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for bad in [file.join("sub"), PathBuf::from("/proc/fmseg-out"), file.clone()] {
        let o = segment_cmd(&input, &bad, &[]).run().fails_naming(&[]);
        let msg = o.stderr();
        assert!(msg.contains(&bad.display().to_string()) || msg.contains(&file.display().to_string()), "{o}");
        assert!(!msg.contains("inference"), "{o}");
    }
}

/// A NIfTI with qform_code = sform_code = 0 has no orientation: segmented with a warning (the
/// left/right split is a guess), and the mask is written uncoded, like its input.
#[test]
fn nifti_without_transform_codes_is_warned_and_written_uncoded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("uncoded.nii");
    test_image(&input);
    let mut bytes = std::fs::read(&input).unwrap();
    bytes[252..256].fill(0);
    std::fs::write(&input, bytes).unwrap();
    let in_affine = nifti::read(&input).unwrap().affine;
    let out = dir.path().join("o");
    segment_cmd(&input, &out, &[]).run().success().stderr_has(&["WARNING", "qform_code and sform_code are both 0"]);
    let r: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(r["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("left and right")), "{r}");
    let (mask, h) = nifti::read_with_header(out.join("fm_mask.nii.gz")).unwrap();
    assert_eq!((h.qform_code, h.sform_code), (0, 0));
    assert_eq!(mask.affine, in_affine, "read back the same way as the input");
}

/// Declared sizes are checked before memory is reserved: a small gzip file whose header
/// declares 1024x1024x700 float32 (2.9 GB) is refused with the numbers, before decompression.
#[test]
fn a_nifti_larger_than_the_cap_is_refused_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.nii");
    let a = affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0; 3]);
    nifti::write(&small, &volume([4, 4, 4], a, |i, _, _| i as f32), WriteType::F32).unwrap();
    let mut header = std::fs::read(&small).unwrap()[..352].to_vec();
    for (i, d) in [1024i16, 1024, 700].iter().enumerate() {
        header[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    header.extend(vec![0u8; 1 << 20]);
    let big = dir.path().join("big.nii.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &header).unwrap();
    std::fs::write(&big, gz.finish().unwrap()).unwrap();
    let t = std::time::Instant::now();
    let e = nifti::read(&big).unwrap_err().to_string();
    assert!(e.contains("big.nii.gz") && e.contains("734003200 voxels") && e.contains("more than fmseg reads"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 5.0);
    let out = dir.path().join("o");
    segment_cmd(&big, &out, &[]).run().fails_naming(&["big.nii.gz", "more than fmseg reads"]);
    assert!(!out.exists());
}

/// A damaged slice is never dropped quietly: a zero-filled or cut file named like the others
/// is an error naming it; pixel data longer than the header declares (BitsAllocated 8 on
/// 16-bit samples) is refused instead of segmented as garbage. A README beside the series is
/// still skipped.
#[test]
fn damaged_slices_and_misdescribed_pixels_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fresh = |name: &str| {
        let series = d.join(name);
        write_dicom(&series, "MR");
        std::fs::write(series.join("README.txt"), "exported by a test\n").unwrap();
        let files: Vec<PathBuf> =
            listing(&series).into_iter().filter(|n| n != "README.txt").map(|n| series.join(n)).collect();
        (series, files)
    };
    let (zeroed, files) = fresh("zeroed");
    let last = files.last().unwrap().clone();
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::write(&last, vec![0u8; len as usize]).unwrap();
    let (cut, files) = fresh("cut");
    let first = files[0].clone();
    let head = std::fs::read(&first).unwrap()[..100].to_vec();
    std::fs::write(&first, head).unwrap();
    let (eight_bit, files) = fresh("eight_bit");
    for f in &files {
        dicom_support::rewrite(f, |o| {
            use dicom_core::{value::PrimitiveValue, DataElement, VR};
            use dicom_dictionary_std::tags;
            for (tag, v) in [(tags::BITS_ALLOCATED, 8u16), (tags::BITS_STORED, 8), (tags::HIGH_BIT, 7)] {
                o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
            }
            o.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)));
        });
    }
    let cases: [(&Path, &Path, &[&str]); 3] = [
        (&zeroed, &last, &["not a DICOM file", &format!("holds {len} zero bytes"), "named like"]),
        (&cut, &first, &["not a DICOM file", "cut short (100 bytes"]),
        (&eight_bit, &files[0], &["BitsAllocated 8", "does not describe the pixel data"]),
    ];
    for (series, file, wants) in cases {
        let out = d.join(format!("out-{}", series.file_name().unwrap().to_string_lossy()));
        let o = segment_cmd(series, &out, &[]).run().fails_naming(wants);
        let msg = o.stderr();
        let named = msg.contains(&file.display().to_string())
            || (series == eight_bit.as_path() && files.iter().any(|f| msg.contains(&f.display().to_string())));
        assert!(named, "names the file: {o}");
        assert!(!out.exists());
    }
    // convert says the same, naming the file once
    let nii = d.join("x.nii.gz");
    let o = Fmseg::new().arg("convert").arg(&zeroed).arg(&nii).run().fails_naming(&[]);
    assert_eq!(o.stderr().matches(&last.display().to_string()).count(), 1, "{o}");
    assert!(!nii.exists());
    // the intact series with its README loads
    let (ok, _) = fresh("ok");
    let (_, info) = fmseg::io::dicom::load_volume(&ok, &fmseg::io::dicom::Selection::default()).unwrap();
    assert_eq!(info.slices, 10);
}

/// An overlap far above the default multiplies the windows: the run warns with the numbers.
#[test]
fn a_very_high_overlap_is_warned_with_its_cost() {
    let dims = [250, 250, 10];
    let a = affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 7.0]], [0.0; 3]);
    let img = volume(dims, a, |i, j, k| ((i * 31 + j * 17 + k * 7) % 11) as f32);
    let info = nifti_info("wide.nii", &img);
    let mut zeros = |x: &HostTensor| {
        HostTensor::new(vec![x.shape[0], 2, x.shape[2], x.shape[3], x.shape[4]], vec![0.0; 2 * x.data.len()])
    };
    let run = |overlap: f64, model: &mut dyn Predictor| {
        let cfg = SegmentConfig {
            window: fmseg::pipeline::window::WindowConfig { overlap, ..Default::default() },
            ..SegmentConfig::default()
        };
        let mut models: Vec<&mut dyn Predictor> = vec![model];
        segment_volume(LoadedInput { image: img.clone(), info: info.clone() }, &cfg, &mut models, &mut |_| {}).unwrap()
    };
    let usual = run(0.5, &mut zeros);
    assert!(usual.warnings.is_empty(), "{:?}", usual.warnings);
    let high = run(0.9, &mut zeros);
    assert!(high.windows_per_pass >= 4 * usual.windows_per_pass);
    let w = high.warnings.join("\n");
    assert!(
        w.contains("overlap 0.9")
            && w.contains(&format!("{} windows", high.windows_per_pass))
            && w.contains(&format!("{} at the default", usual.windows_per_pass)),
        "{w}"
    );
}

/// kill -9 at ten moments of `segment` (alternating runs with and without --probability, so
/// the two results differ in their file sets): once the next run has opened the directory,
/// it holds exactly one run's complete results (the files its report lists) or none, and no
/// temporary file.
#[test]
fn segment_killed_at_random_moments_leaves_one_whole_result() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t1.nii.gz");
    test_image(&input);
    let out = dir.path().join("result");
    let t0 = std::time::Instant::now();
    segment_cmd(&input, &out, &[]).run().success();
    let full = t0.elapsed().as_secs_f64();
    let mut state = 0x9e3779b97f4a7c15u64;
    for round in 0..10 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % 1000) as f64 / 1000.0 * full * 1.1;
        let probability: &[&str] = if round % 2 == 0 { &["--probability"] } else { &[] };
        let mut child = segment_cmd(&input, &out, probability)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        std::thread::sleep(std::time::Duration::from_secs_f64(at));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        drop(fmseg::io::output_dir::OutputDir::open(&out).unwrap());
        let files = listing(&out);
        assert!(files.iter().all(|n| !n.starts_with('.')), "round {round} at {at:.2} s: {files:?}");
        let r: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        let mut listed: Vec<String> =
            r["outputs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
        listed.sort();
        assert_eq!(files, listed, "round {round}, killed at {at:.2} s of {full:.2}");
    }
}

/// Nothing private leaks: the patient's name, ID and birth date in the series never reach the
/// report, the progress lines or the listing.
#[test]
fn patient_identity_stays_out_of_reports_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("series");
    write_dicom(&series, "MR");
    let phi = [("Doe^Jane^Q", "PatientName"), ("MRN-98765432", "PatientID"), ("19610704", "PatientBirthDate")];
    for name in listing(&series) {
        dicom_support::rewrite(&series.join(name), |o| {
            use dicom_core::{value::PrimitiveValue, DataElement, VR};
            use dicom_dictionary_std::tags;
            o.put(DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from(phi[0].0)));
            o.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(phi[1].0)));
            o.put(DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from(phi[2].0)));
        });
    }
    let out = dir.path().join("o");
    let o = segment_cmd(&series, &out, &[]).run().success();
    let listed = Fmseg::new().arg("series").arg(&series).arg("--json").run().success();
    let report = std::fs::read_to_string(out.join("report.json")).unwrap();
    for text in [report, o.stderr(), listed.stdout()] {
        for (value, what) in phi {
            assert!(!text.contains(value) && !text.contains("Doe"), "{what} leaked: {text}");
        }
    }
    // asked for, the listing has the ID
    Fmseg::new()
        .arg("series")
        .arg(&series)
        .args(["--json", "--include-phi"])
        .run()
        .success()
        .stdout_has(&["MRN-98765432"]);
}

/// The corpus of broken inputs, generated here: each through `fmseg segment` under a 4 GiB
/// address-space limit must exit 1 with the file named and the problem stated, never panic or
/// abort for memory, and write nothing.
#[test]
fn broken_input_corpus_fails_cleanly_under_a_memory_limit() {
    use dicom_core::{value::PrimitiveValue, DataElement, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0]], [0.0; 3]);
    // a fresh copy of the pelvis series, with `edit` applied to its files (sorted by name)
    let series = |name: &str, edit: &dyn Fn(&[PathBuf])| -> (PathBuf, Vec<PathBuf>) {
        let s = d.join(name);
        write_dicom(&s, "MR");
        let files: Vec<PathBuf> = listing(&s).into_iter().map(|n| s.join(n)).collect();
        edit(&files);
        (s, files)
    };
    let put_us = |f: &Path, tag, v: u16| {
        dicom_support::rewrite(f, |o| {
            o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        })
    };
    let put_ds = |f: &Path, tag, v: &str| {
        dicom_support::rewrite(f, |o| {
            o.put(DataElement::new(tag, VR::DS, PrimitiveValue::from(v)));
        })
    };
    let cut = |f: &Path, keep: usize| {
        let b = std::fs::read(f).unwrap();
        std::fs::write(f, &b[..keep.min(b.len())]).unwrap();
    };
    let nii = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| -> PathBuf {
        let p = d.join(name);
        nifti::write(&p, &volume([20, 20, 6], a, |i, j, k| (i * j + k) as f32 + 1.0), WriteType::F32).unwrap();
        let mut b = std::fs::read(&p).unwrap();
        edit(&mut b);
        std::fs::write(&p, b).unwrap();
        p
    };
    let set_i16 = |b: &mut Vec<u8>, off: usize, v: i16| b[off..off + 2].copy_from_slice(&v.to_le_bytes());

    // (input, the file the message must name, what it must say: any of)
    let mut cases: Vec<(String, PathBuf, PathBuf, Vec<&str>)> = Vec::new();
    let mut add = |label: &str, input: PathBuf, named: PathBuf, wants: &[&'static str]| {
        cases.push((label.to_string(), input, named, wants.to_vec()))
    };
    for keep in [60usize, 400, 1500] {
        let (s, f) = series(&format!("cut{keep}"), &|f| cut(&f[3], keep));
        add(&format!("slice cut at {keep} bytes"), s, f[3].clone(), &["cut short", "cannot be read", "truncated"]);
    }
    let (s, f) = series("zeros", &|f| std::fs::write(&f[2], vec![0u8; 4096]).unwrap());
    add("a slice of zeros", s, f[2].clone(), &["zero bytes"]);
    let (s, f) = series("missing", &|f| std::fs::remove_file(&f[4]).unwrap());
    add("a missing slice", s.clone(), s, &["slice missing"]);
    let _ = f;
    let (s, f) = series("duplicate", &|f| {
        let dup = f[4].with_file_name("dup.dcm");
        std::fs::copy(&f[4], &dup).unwrap();
        dicom_support::rewrite(&dup, |o| {
            o.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.1234567")));
        });
    });
    add("a duplicate position", s.clone(), s, &["duplicate slice position"]);
    let _ = f;
    let (s, f) = series("orientation", &|f| {
        dicom_support::rewrite(&f[5], |o| {
            o.put(DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, PrimitiveValue::from("0\\1\\0\\0\\0\\-1")));
        })
    });
    add("mixed orientations", s.clone(), s, &["orientation differs"]);
    let _ = f;
    let (s, f) = series("bits32", &|f| f.iter().for_each(|f| put_us(f, tags::BITS_ALLOCATED, 32)));
    add("32-bit pixels", s, f[0].clone(), &["BitsAllocated 32"]);
    let (s, f) = series("bits1", &|f| f.iter().for_each(|f| put_us(f, tags::BITS_ALLOCATED, 1)));
    add("1-bit pixels", s, f[0].clone(), &["BitsAllocated 1"]);
    let (s, f) = series("rgb", &|f| f.iter().for_each(|f| put_us(f, tags::SAMPLES_PER_PIXEL, 3)));
    add("RGB", s, f[0].clone(), &["SamplesPerPixel 3"]);
    let (s, f) = series("slope0", &|f| put_ds(&f[1], tags::RESCALE_SLOPE, "0"));
    add("a zero rescale slope", s, f[1].clone(), &["RescaleSlope"]);
    let (s, f) = series("slopeabc", &|f| put_ds(&f[1], tags::RESCALE_SLOPE, "abc"));
    add("a non-numeric rescale slope", s, f[1].clone(), &["RescaleSlope"]);
    let (s, f) = series("noposition", &|f| {
        dicom_support::rewrite(&f[2], |o| {
            o.remove_element(tags::IMAGE_POSITION_PATIENT);
        })
    });
    add("no ImagePositionPatient", s, f[2].clone(), &["ImagePositionPatient"]);
    let (s, f) = series("huge_element", &|f| {
        // PatientName re-declared as a UT of 2 GiB: dicom-rs would reserve that much
        let mut b = std::fs::read(&f[3]).unwrap();
        let at = b.windows(6).position(|w| w == [0x10, 0x00, 0x10, 0x00, b'P', b'N']).expect("PatientName");
        b.splice(at + 4..at + 8, [b'U', b'T', 0, 0, 0xff, 0xff, 0xff, 0x7f]);
        std::fs::write(&f[3], b).unwrap();
    });
    add("an element declaring 2 GiB", s, f[3].clone(), &["declares 2147483647 value bytes"]);
    let looped = d.join("loop");
    std::fs::create_dir(&looped).unwrap();
    std::os::unix::fs::symlink(&looped, looped.join("again")).unwrap();
    add("a symlink loop", looped.clone(), looped, &["loop"]);
    let p = nii("four_d.nii", &|b| {
        set_i16(b, 40, 4);
        set_i16(b, 48, 2);
    });
    add("a 4-D NIfTI", p.clone(), p, &["4-D"]);
    let p = nii("zero_dim.nii", &|b| set_i16(b, 44, 0));
    add("a zero dim", p.clone(), p, &["bad dims"]);
    let p = nii("absurd.nii", &|b| (0..3).for_each(|i| set_i16(b, 42 + 2 * i, 30000)));
    add("absurd dims", p.clone(), p, &["more than fmseg reads"]);
    let p = nii("uncoded_pixdim0.nii", &|b| {
        b[252..256].fill(0);
        b[80..84].copy_from_slice(&0f32.to_le_bytes());
    });
    add("no transform and a zero voxel size", p.clone(), p, &["pixdim"]);

    let image = nii("good.nii", &|_| {});
    let weights = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| -> PathBuf {
        let p = d.join(name);
        let mut b = std::fs::read(weights_file()).unwrap();
        edit(&mut b);
        std::fs::write(&p, b).unwrap();
        p
    };
    let w_cut = weights("cut.fmw", &|b| b.truncate(b.len() / 2));
    let w_flip = weights("flipped.fmw", &|b| {
        let n = b.len();
        b[n - 100] ^= 0x40;
    });
    let w_nan = d.join("nan.safetensors");
    let mut sd = fmseg::model::init::random_state_dict(2);
    let key = sd.names().next().unwrap().to_string();
    let mut t = sd.get(&key).unwrap().clone();
    t.data[0] = f32::NAN;
    sd.insert(&key, t);
    fmseg::weights::save(&sd, &w_nan, fmseg::weights::Format::Safetensors, fmseg::weights::DType::F32).unwrap();

    // under a 4 GiB address-space limit (the shell's ulimit, then exec fmseg)
    let run_limited = |input: &Path, weights: &Path, out: &Path| -> Run {
        Fmseg::wrapped("sh", ["-c", "ulimit -v 4194304; exec \"$@\"", "sh"])
            .arg("segment")
            .arg(input)
            .arg("--out")
            .arg(out)
            .arg("--weights")
            .arg(weights)
            .args(["--threads", "2"])
            .run()
    };
    let mut all: Vec<(String, PathBuf, PathBuf, PathBuf, Vec<&str>)> =
        cases.into_iter().map(|(l, i, n, w)| (l, i, weights_file().to_path_buf(), n, w)).collect();
    all.push(("truncated weights".into(), image.clone(), w_cut.clone(), w_cut, vec!["truncated"]));
    all.push(("a flipped byte in the weights".into(), image.clone(), w_flip.clone(), w_flip, vec!["checksum"]));
    all.push(("NaN in a tensor".into(), image.clone(), w_nan.clone(), w_nan, vec!["NaN", "non-finite"]));
    for (i, (label, input, weights, named, wants)) in all.iter().enumerate() {
        let out = d.join(format!("out{i}"));
        eprintln!("{label}:");
        let o = run_limited(input, weights, &out).fails_naming(&[&named.display().to_string()]);
        let msg = o.stderr();
        assert!(wants.iter().any(|w| msg.contains(w)), "{label}: one of {wants:?} in {o}");
        assert!(!msg.contains("memory allocation"), "{label}: {o}");
        assert!(!out.exists(), "{label}: wrote {}", out.display());
    }
}

/// A full disk: `segment --out` on a small tmpfs (a private mount namespace from `unshare`,
/// no root needed) at sizes from one page up to what the results need. Every run either
/// succeeds with its whole result, or fails with the disk named as the cause and the output
/// folder holding nothing (no result file, no temporary). Skipped, saying so, where user and
/// mount namespaces are not available, unless FMSEG_REQUIRE_UNSHARE is set (CI sets it).
#[test]
fn full_disk_fails_clearly_and_leaves_nothing() {
    let probe = Command::new("unshare").args(["-rm", "sh", "-c", "mount -t tmpfs -o size=8k none /tmp"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("FMSEG_REQUIRE_UNSHARE").is_none(),
            "unshare -rm with a tmpfs mount failed: {probe:?}"
        );
        eprintln!("skipped: no user/mount namespaces here (unshare -rm)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t1.nii.gz");
    test_image(&input);
    let reference = dir.path().join("reference");
    segment_cmd(&input, &reference, &["--probability"]).run().success();
    let needed: u64 = listing(&reference).iter().map(|n| std::fs::metadata(reference.join(n)).unwrap().len()).sum();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (mut failed, mut succeeded) = (0, 0);
    for size in [4096, 8192, 16384, needed / 4, needed / 2, needed * 3 / 4, needed + (64 << 10), needed * 4] {
        // Inside the namespace: mount, run fmseg (stderr kept), then list what it left.
        let script = r#"mount -t tmpfs -o size=$1 none "$2" || exit 99; shift 2; "$@"; rc=$?
            echo "LEFT:$(ls -A "$MNT_OUT" 2>/dev/null | tr '\n' ' ')"; exit $rc"#;
        let out_dir = mnt.join("out");
        let o = Fmseg::wrapped("unshare", ["-rm", "sh", "-c", script, "sh", &size.to_string(), mnt.to_str().unwrap()])
            .arg("segment")
            .arg(&input)
            .arg("--out")
            .arg(&out_dir)
            .arg("--weights")
            .arg(weights_file())
            .args(["--threads", "2", "--probability"])
            .env("MNT_OUT", &out_dir)
            .run();
        let (stdout, stderr) = (o.stdout(), o.stderr());
        assert_ne!(o.code(), Some(99), "the tmpfs mount failed: {o}");
        let left: Vec<String> = stdout
            .lines()
            .find_map(|l| l.strip_prefix("LEFT:"))
            .unwrap_or_else(|| panic!("no listing at {size} bytes: {stdout}"))
            .split_whitespace()
            .filter(|n| *n != fmseg::io::output_dir::LOCK_FILE)
            .map(String::from)
            .collect();
        assert!(!stderr.contains("panicked"), "{stderr}");
        if o.code() == Some(0) {
            succeeded += 1;
            assert_eq!(left, listing(&reference), "a run that succeeds at {size} bytes writes the whole result");
        } else {
            failed += 1;
            assert_eq!(o.code(), Some(cli::FAILURE), "at {size} bytes: {o}");
            assert!(stderr.contains("No space left on device"), "at {size} bytes: {stderr}");
            assert!(
                stderr.contains("out/") || stderr.contains("out:"),
                "the output is named at {size} bytes: {stderr}"
            );
            assert!(!stderr.contains(".fmseg-partial"), "no temporary names at {size} bytes: {stderr}");
            assert!(left.is_empty(), "a failed run at {size} bytes left {left:?}: {stderr}");
        }
    }
    assert!(failed >= 3 && succeeded >= 1, "{failed} runs failed for the disk, {succeeded} succeeded");
}
