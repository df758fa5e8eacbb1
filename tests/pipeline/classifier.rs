//! The classifier's pieces around the network (the graph itself is in the op matrix,
//! `op_classifier` / `grad_classifier`): Grad-CAM against the tape's gradient, the input crop
//! and ROI map, the loss, the split, and training with a resume.

use fmseg::backend::cpu::CpuBackend;
use fmseg::backend::Backend;
use fmseg::model::catalog::{ClassifierSpec, CLINICAL_FEATURES, PATCH};
use fmseg::model::classifier::Classifier;
use fmseg::model::init::{random_state_dict_for, SplitMix};
use fmseg::pipeline::classifier_input::{crop, ClassifierCrop, CropCentre};
use fmseg::pipeline::gradcam;
use fmseg::pipeline::preprocess::PreprocessConfig;
use fmseg::tensor::HostTensor;
use fmseg::train::classifier::{split, train, weighted_bce, ClassifierTrainConfig, Example};
use fmseg::train::tape::TapeBackend;
use fmseg::volume::Volume;
use std::path::Path;

fn random(seed: u64, shape: &[usize]) -> HostTensor {
    let mut r = SplitMix(seed);
    HostTensor { shape: shape.to_vec(), data: (0..shape.iter().product()).map(|_| r.symmetric(1.5)).collect() }
}

/// Grad-CAM's channel weights are the mean over voxels of d logit / d features: taken here
/// from the tape (features uploaded as a leaf, the head's ops recorded), against the closed
/// form `head / V` the pipeline uses. 1e-6 relative.
#[test]
fn gradcam_weights_are_the_mean_gradient() {
    let spec = ClassifierSpec::new(true);
    let sd = random_state_dict_for(&spec.layers(), 3);
    let cpu = CpuBackend::new(2).unwrap();
    let model = Classifier::new(&cpu, spec.clone(), &sd).unwrap();
    let x = cpu.upload(&random(1, &[1, 2, 48, 40, 8])).unwrap();
    let clin = random(2, &[1, CLINICAL_FEATURES, 1, 1, 1]);
    let out = model.forward(&cpu, &x, Some(&cpu.upload(&clin).unwrap())).unwrap();
    let features = cpu.download(&out.features).unwrap();
    let logit = cpu.download(&out.logit).unwrap().data[0];

    // The head alone on the tape, from the features as a leaf.
    let tape = TapeBackend::new(CpuBackend::new(2).unwrap());
    let f = tape.upload(&features).unwrap();
    let pooled = tape.adaptive_avg_pool(&f, [1, 1, 1]).unwrap();
    let joined = tape.concat(&pooled, &tape.upload(&clin).unwrap()).unwrap();
    let head = &spec.head;
    let fmseg::model::catalog::LayerKind::Conv(hs) = head.kind else { panic!("conv head") };
    let hw = sd.get("head.weight").unwrap();
    let conv = tape.prepare_conv("head", hs, hw, sd.get("head.bias")).unwrap();
    let y = tape.conv(&joined, &conv).unwrap();
    let z = tape.download(&y).unwrap().data[0];
    assert!((z - logit).abs() <= 1e-5 * logit.abs().max(1.0), "head replayed: {z} vs {logit}");
    let g = tape
        .backward(vec![(&y, tape.cpu().upload(&HostTensor { shape: vec![1, 1, 1, 1, 1], data: vec![1.0] }).unwrap())])
        .unwrap();
    let grad = tape.cpu().download(g.of(&f).unwrap()).unwrap();

    let c = spec.features();
    let v: usize = features.shape[2..].iter().product();
    let head_w = &hw.data[..c];
    let alpha_tape: Vec<f64> =
        (0..c).map(|ch| grad.data[ch * v..][..v].iter().map(|&g| g as f64).sum::<f64>() / v as f64).collect();
    for ch in 0..c {
        let want = head_w[ch] as f64 / v as f64;
        assert!(
            (alpha_tape[ch] - want).abs() <= 1e-6 * want.abs().max(1e-9),
            "channel {ch}: {} vs {want}",
            alpha_tape[ch]
        );
    }
    // The map itself: relu(sum alpha A), then scaled and resampled.
    let raw = gradcam::raw(&features, 0, head_w).unwrap();
    let manual: Vec<f64> = (0..v)
        .map(|i| (0..c).map(|ch| alpha_tape[ch] * features.data[ch * v + i] as f64).sum::<f64>().max(0.0))
        .collect();
    let err = raw.iter().zip(&manual).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
    let top = manual.iter().fold(0f64, |m, &b| m.max(b));
    assert!(err <= 1e-6 * top.max(1e-12), "Grad-CAM map: max error {err:e} of {top:e}");
    let full = gradcam::gradcam(&features, 0, head_w, [48, 40, 8]).unwrap();
    assert_eq!(full.len(), 48 * 40 * 8);
    let hi = full.iter().fold(0f32, |m, &b| m.max(b));
    assert!(full.iter().all(|&h| (0.0..=1.0).contains(&h)) && (top == 0.0 || (hi - 1.0).abs() < 1e-6));
}

fn volume(dims: [usize; 3], spacing: [f64; 3], f: impl Fn(usize, usize, usize) -> f32) -> Volume {
    let mut data = Vec::new();
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                data.push(f(i, j, k));
            }
        }
    }
    let mut affine = [[0.0; 4]; 4];
    for a in 0..3 {
        affine[a][a] = spacing[a];
    }
    affine[3][3] = 1.0;
    Volume::new(dims, data, affine).unwrap()
}

/// The crop lies on the preprocessed grid (1 x 1 x 7 mm), centred on the FM's centre of mass;
/// the ROI map is the image inside the mask and 0 outside; an empty mask centres on the grid;
/// a mask on another grid is refused, naming the mask's file.
#[test]
fn crop_centres_on_the_fm_and_masks_the_roi() {
    let dims = [300, 260, 16];
    let image = volume(dims, [1.0, 1.0, 7.0], |i, j, k| ((i * 7 + j * 3 + k * 11) % 97) as f32);
    let in_blob =
        |i: usize, j: usize, k: usize| (140..160).contains(&i) && (60..70).contains(&j) && (5..9).contains(&k);
    let mask = volume(dims, [1.0, 1.0, 7.0], |i, j, k| in_blob(i, j, k) as u8 as f32);
    let cfg = PreprocessConfig::default();
    let c = crop(&image, Path::new("image.nii.gz"), &mask, Path::new("mask.nii.gz"), &cfg).unwrap();
    assert_eq!(c.dims, PATCH);
    assert_eq!(c.centre, CropCentre::FmCentreOfMass);
    assert_eq!(c.fm_voxels, 20 * 10 * 4);
    // The blob's centre of mass lands mid-crop along the first axis (the second is clamped to
    // the grid's edge: the blob sits near it).
    let com_x = c
        .mask
        .iter()
        .enumerate()
        .filter(|(_, &m)| m != 0)
        .map(|(n, _)| (n / (PATCH[1] * PATCH[2])) as f64)
        .sum::<f64>()
        / c.fm_voxels as f64;
    assert!((com_x - 95.5).abs() <= 0.5, "centre of mass at {com_x} in the crop");
    let t = c.tensor();
    let n = c.image.len();
    for i in 0..n {
        let roi = t.data[n + i];
        assert_eq!(roi, if c.mask[i] != 0 { c.image[i] } else { 0.0 });
    }
    let empty = volume(dims, [1.0, 1.0, 7.0], |_, _, _| 0.0);
    let e = crop(&image, Path::new("image.nii.gz"), &empty, Path::new("empty.nii.gz"), &cfg).unwrap();
    assert_eq!(e.centre, CropCentre::GridCentre);
    assert_eq!(e.fm_voxels, 0);
    let other = volume([300, 260, 15], [1.0, 1.0, 7.0], |_, _, _| 0.0);
    let err = crop(&image, Path::new("image.nii.gz"), &other, Path::new("other.nii.gz"), &cfg).unwrap_err().to_string();
    assert!(err.contains("other.nii.gz") && err.contains("grid"), "{err}");
}

/// The loss and its gradient against central differences; the positive weight scales only
/// the axSpA terms.
#[test]
fn weighted_bce_and_its_gradient() {
    let z = [-3.0f32, -0.2, 0.0, 0.7, 12.0, -40.0];
    let y = [true, false, true, false, true, false];
    let (l, g) = weighted_bce(&z, &y, 2.5);
    let by_hand: f64 = z
        .iter()
        .zip(&y)
        .map(|(&z, &y)| {
            let s = 1.0 / (1.0 + (-(z as f64)).exp());
            if y {
                -2.5 * s.ln()
            } else {
                -(1.0 - s).ln()
            }
        })
        .sum::<f64>()
        / 6.0;
    assert!((l - by_hand).abs() < 1e-9 * by_hand, "{l} vs {by_hand}");
    for i in 0..z.len() {
        let h = 1e-3f32;
        let mut zp = z;
        zp[i] += h;
        let mut zm = z;
        zm[i] -= h;
        let fd = (weighted_bce(&zp, &y, 2.5).0 - weighted_bce(&zm, &y, 2.5).0) / (2.0 * h as f64);
        // h = 1e-3 on a float32 logit: the difference quotient is good to about 1e-4.
        assert!((fd - g[i] as f64).abs() < 1e-4, "dz[{i}]: {} vs {fd}", g[i]);
    }
}

#[test]
fn split_is_stratified_and_seeded() {
    let labels: Vec<bool> = (0..50).map(|i| i % 10 < 7).collect();
    let (t, v) = split(&labels, 0.2, 4);
    assert_eq!((t.len(), v.len()), (40, 10));
    assert_eq!(v.iter().filter(|&&i| labels[i]).count(), 7);
    assert_eq!(split(&labels, 0.2, 4), (t.clone(), v.clone()));
    assert_ne!(split(&labels, 0.2, 5).1, v);
}

/// Crops whose ROI map holds FM exactly when the case is axSpA: a few epochs learn it, and a
/// run stopped after one epoch and continued gives the parameters of an uninterrupted run.
#[test]
fn training_learns_and_resumes_exactly() {
    let mut rng = SplitMix(11);
    let examples: Vec<Example> = (0..12)
        .map(|i| {
            let label = i % 2 == 0;
            let image: Vec<f32> = (0..fmseg::tensor::numel(PATCH)).map(|_| rng.symmetric(1.0)).collect();
            let mut mask = vec![0u8; image.len()];
            if label {
                for (n, m) in mask.iter_mut().enumerate() {
                    let (x, y) = (n / (PATCH[1] * PATCH[2]), (n / PATCH[2]) % PATCH[1]);
                    *m = ((80..110).contains(&x) && (90..120).contains(&y)) as u8;
                }
            }
            let fm_voxels = mask.iter().filter(|&&m| m != 0).count();
            let crop = ClassifierCrop {
                image: image.iter().zip(&mask).map(|(v, &m)| v + 2.0 * m as f32).collect(),
                mask,
                dims: PATCH,
                affine: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 7.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
                centre: CropCentre::GridCentre,
                fm_voxels,
            };
            Example { id: format!("case_{i:02}"), crop, label, clinical: [0.0; CLINICAL_FEATURES] }
        })
        .collect();
    let cfg = ClassifierTrainConfig { epochs: 3, batch: 4, val_fraction: 0.34, ..Default::default() };
    let root = std::env::temp_dir().join(format!("fmseg-cls-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let straight = root.join("straight");
    let s = train(&examples, &cfg, &straight, 2, &mut |m| eprintln!("{m:?}")).unwrap();
    assert_eq!((s.epochs_done, s.train_cases, s.val_cases), (3, 8, 4));
    let best = s.best.unwrap();
    assert_eq!(best.val_auc, Some(1.0), "a mask-present signal this strong is learnt: {best:?}");
    let csv = std::fs::read_to_string(straight.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");

    let resumed = root.join("resumed");
    train(&examples, &ClassifierTrainConfig { epochs: 1, ..cfg.clone() }, &resumed, 2, &mut |_| {}).unwrap();
    train(&examples, &cfg, &resumed, 2, &mut |_| {}).unwrap();
    let a = std::fs::read(straight.join("state.safetensors")).unwrap();
    let b = std::fs::read(resumed.join("state.safetensors")).unwrap();
    assert!(a == b, "resumed run's state differs from the uninterrupted run's");
    // Another configuration on the same run is refused, naming the state file.
    let err = train(&examples, &ClassifierTrainConfig { lr: 5e-4, ..cfg }, &resumed, 2, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("state.json"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// The description's sizes, as `docs/classifier.md` states them.
#[test]
fn classifier_description() {
    let (image, clinical) = (ClassifierSpec::new(false), ClassifierSpec::new(true));
    assert_eq!((image.parameter_count(), clinical.parameter_count()), (40_721, 40_730));
    assert_eq!(image.feature_dims(PATCH), [12, 12, 4]);
    assert_eq!(image.tensor_keys().len(), 4 * 2 + 2);
    assert_eq!(ClassifierSpec::of_head_width(73), Some(clinical));
    assert_eq!(ClassifierSpec::of_head_width(64), Some(image));
    assert_eq!(ClassifierSpec::of_head_width(65), None);
}
