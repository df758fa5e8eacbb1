#![allow(clippy::excessive_precision)]
//! The clinical pipeline against the reference's MONAI outputs for `pipeline_case1`
//! (an oblique int16 volume, 320x320x20 at 0.75x0.75x4 mm, stored with a flipped axis).

use crate::common;

use fmseg::io::{nifti, npy};
use fmseg::pipeline::postprocess::{self, Interp};
use fmseg::pipeline::preprocess::{preprocess, PreprocessConfig};
use fmseg::volume;

fn f32s(a: npy::NpyArray) -> Vec<f32> {
    match a.data {
        npy::NpyData::F32(v) => v,
        d => panic!("expected float32, got {}", d.dtype_name()),
    }
}

/// Shape, affine and values of MONAI's preprocessing (Orientation LPS, Spacing 1x1x7
/// bilinear, SpatialPad reflect, NormalizeIntensity).
#[test]
fn preprocessing_matches_monai() {
    let Some(dir) = common::fixtures_dir() else { return };
    let img = nifti::read(dir.join("pipeline_case1.nii.gz")).unwrap();
    let p = preprocess(&img, &PreprocessConfig::default()).unwrap();
    assert_eq!(p.volume.dims, [240, 240, 16]);
    // the centre-aligned origin (the corner test fails by ~1e-6 on this float32 oblique header)
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("pipeline_case1_meta.json")).unwrap()).unwrap();
    let ras = volume::flip_xy(&p.volume.affine);
    let mut worst = 0f64;
    for r in 0..4 {
        for c in 0..4 {
            let want = meta["preprocessed_affine_ras"][r][c].as_f64().unwrap();
            worst = worst.max((ras[r][c] - want).abs());
        }
    }
    assert!(worst < 1e-9, "affine differs from MONAI's by {worst}: {ras:?}");
    let want = f32s(npy::read(dir.join("pipeline_case1_preprocessed.npy")).unwrap());
    let d = fmseg::tensor::max_abs_diff(&p.volume.data, &want);
    eprintln!("preprocessed: max |ours - MONAI| = {d:e}, affine max diff {worst:e}");
    assert!(d < 1e-3, "max abs difference {d}");
}

/// argmax of the reference logits, resampled back (nearest) to the file's own voxel grid:
/// identical to MONAI's `Invertd` output except possibly where the two logits nearly tie.
#[test]
fn mask_back_on_the_original_grid_matches_monai() {
    let Some(dir) = common::fixtures_dir() else { return };
    let img = nifti::read(dir.join("pipeline_case1.nii.gz")).unwrap();
    let p = preprocess(&img, &PreprocessConfig::default()).unwrap();
    let logits = npy::read_tensor(dir.join("pipeline_case1_logits.npy")).unwrap();
    assert_eq!(logits.shape, vec![1, 2, 240, 240, 16]);
    let seg = postprocess::postprocess(&logits, &p.chain).unwrap();
    let want = match npy::read(dir.join("pipeline_case1_mask_original_grid.npy")).unwrap().data {
        npy::NpyData::U8(v) => v,
        d => panic!("expected uint8, got {}", d.dtype_name()),
    };
    assert_eq!(seg.mask.dims, [320, 320, 20]);
    assert_eq!(seg.mask.affine, img.affine);
    // near ties on the preprocessed grid, carried to the original grid the same way
    let n = 240 * 240 * 16;
    let tie: Vec<f32> = (0..n).map(|i| ((logits.data[i] - logits.data[n + i]).abs() < 1e-3) as u8 as f32).collect();
    let tie = postprocess::to_original(&tie, &p.chain, Interp::Nearest).unwrap();
    let (mut differ, mut at_ties) = (0, 0);
    for i in 0..want.len() {
        if seg.mask.data[i] != want[i] as f32 {
            differ += 1;
            if tie[i] == 1.0 {
                at_ties += 1;
            }
        }
    }
    eprintln!("mask: {differ} of {} voxels differ from MONAI, {at_ties} of them at near-ties", want.len());
    assert_eq!(differ - at_ties, 0, "{differ} voxels differ, only {at_ties} at near-ties");
    // the class-1 probability map, resampled back linearly: MONAI's Invertd (bilinear) of
    // softmax(logits)[1] gives these values (computed once with MONAI 1.6 / PyTorch 2.9)
    let samples: [(usize, usize, usize, f32); 20] = [
        (151, 87, 16, 0.569424569606781),
        (163, 264, 6, 0.5923892855644226),
        (241, 82, 9, 0.8477618098258972),
        (304, 130, 15, 0.5974381566047668),
        (11, 206, 2, 0.6012575626373291),
        (46, 175, 6, 0.5767566561698914),
        (263, 27, 2, 0.590438723564148),
        (303, 8, 9, 0.5779042840003967),
        (79, 276, 19, 0.6031619310379028),
        (99, 241, 2, 0.5831015706062317),
        (278, 268, 7, 0.6149277687072754),
        (135, 172, 8, 0.610783576965332),
        (63, 36, 0, 0.5745165944099426),
        (242, 167, 3, 0.5744535326957703),
        (19, 76, 10, 0.5746763944625854),
        (163, 87, 19, 0.5448073148727417),
        (6, 47, 13, 0.5945188403129578),
        (290, 57, 9, 0.5888710618019104),
        (87, 250, 8, 0.6152770519256592),
        (81, 265, 1, 0.5720105767250061),
    ];
    for (i, j, k, want) in samples {
        let got = seg.probability.get(i, j, k);
        assert!((got - want).abs() < 1e-6, "probability at ({i}, {j}, {k}): {got} vs MONAI {want}");
    }
    let sum: f64 = seg.probability.data.iter().map(|&v| v as f64).sum();
    assert!((sum - 1235081.045768628).abs() < 1e-6 * sum, "probability sum {sum}");
    // and the mask written as NIfTI reads back identical, on the image's geometry
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mask.nii.gz");
    nifti::write(&out, &seg.mask, nifti::WriteType::U8).unwrap();
    let back = nifti::read(&out).unwrap();
    assert_eq!(back.data, seg.mask.data);
    for r in 0..3 {
        for c in 0..4 {
            assert!((back.affine[r][c] - img.affine[r][c]).abs() < 1e-5);
        }
    }
}
