//! `fmseg classify`, `fmseg segment --classify` and `fmseg train-classifier` on a synthetic
//! study written by `fmseg phantom` (DICOM series, ground-truth mask, clinical.json,
//! cases.csv), with freshly initialised classifier weights written through the library: the
//! outputs' formats and contents, and the refusals (each names the file and the field, exits
//! 1 and leaves no output).

use crate::common::cli::Fmseg;
use fmseg::model::catalog::ClassifierSpec;
use fmseg::weights::{self, DType, Format};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A one-case phantom set (case 0 of set seed 11) and both classifier variants, random.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let set = dir.join("set");
    Fmseg::new().arg("phantom").arg("--out").arg(&set).args(["--seed", "11", "--cases", "1"]).run().success();
    let mut paths = Vec::new();
    for clinical in [false, true] {
        let spec = ClassifierSpec::new(clinical);
        let sd = fmseg::model::init::random_state_dict_for(&spec.layers(), 5);
        let p = dir.join(format!("cls-{}.fmw", spec.name().replace('+', "-")));
        weights::save_with_metadata(&sd, &p, Format::Frozen, DType::F16, &[("threshold", "0.4")]).unwrap();
        paths.push(p);
    }
    (set, paths[0].clone(), paths[1].clone())
}

/// `fmseg classify` of the case's DICOM series with `mask` and classifier `cls` on the CPU into
/// `out`; callers add the rest.
fn classify(case: &Path, mask: &Path, cls: &Path, out: &Path) -> Fmseg {
    Fmseg::new()
        .arg("classify")
        .arg(case.join("dicom"))
        .arg("--mask")
        .arg(mask)
        .arg("--classifier")
        .arg(cls)
        .args(["--device", "cpu", "--out"])
        .arg(out)
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn classify_with_a_mask_writes_the_probability_and_gradcam() {
    let dir = tempfile::tempdir().unwrap();
    let (set, image_cls, clinical_cls) = setup(dir.path());
    let case = set.join("case_000");
    let out = dir.path().join("out");
    let run = classify(&case, &case.join("fm_mask.nii.gz"), &clinical_cls, &out)
        .arg("--clinical")
        .arg(case.join("clinical.json"))
        .args(["--threads", "2"])
        .run()
        .success();
    let c = json(&out.join("classification.json"));
    let p = c["probability_axspa"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{c}");
    assert_eq!(c["threshold"], 0.4, "the weights' model-card threshold");
    assert_eq!(c["label"], if p >= 0.4 { "axSpA" } else { "non-axSpA" });
    assert_eq!(c["variant"], "image+clinical");
    assert_eq!(c["inputs"]["clinical_features"].as_object().unwrap().len(), 9);
    assert!(c["classifier"]["sha256"].as_str().unwrap().starts_with("sha256:"));
    assert!(run.stdout().starts_with(&format!("{p:.4}")), "{}", run.stdout());
    // Grad-CAM on the classifier's input grid, in [0, 1]; the montage is a PNG.
    let cam = fmseg::io::nifti::read(out.join("gradcam.nii.gz")).unwrap();
    assert_eq!(cam.dims, [192, 192, 16]);
    assert!(cam.data.iter().all(|v| (0.0..=1.0).contains(v)));
    let png = std::fs::read(out.join("gradcam.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert!(!out.join("fm_mask.nii.gz").exists(), "a given mask is not written back");

    // The same crop through the image-only model gives the logit the library computes.
    let out2 = dir.path().join("out2");
    classify(&case, &case.join("fm_mask.nii.gz"), &image_cls, &out2).run().success();
    let c2 = json(&out2.join("classification.json"));
    let loaded = fmseg::pipeline::segment::load_input(&case.join("dicom"), None).unwrap();
    let mask = fmseg::io::nifti::read(case.join("fm_mask.nii.gz")).unwrap();
    let crop = fmseg::pipeline::classifier_input::crop(
        &loaded.image,
        &case,
        &mask,
        &case,
        &fmseg::pipeline::preprocess::PreprocessConfig::default(),
    )
    .unwrap();
    let w = fmseg::engine::classifier::ClassifierWeights::load(&image_cls).unwrap();
    let e = fmseg::engine::classifier::AnyClassifier::new(fmseg::engine::Device::Cpu, 2, &w).unwrap();
    let z = e.run(&crop.tensor(), None).unwrap().logits[0] as f64;
    let got = c2["logit"].as_f64().unwrap();
    assert!((got - z).abs() < 1e-5 * z.abs().max(1.0), "{got} vs {z}");
}

#[test]
fn classify_refuses_bad_inputs_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (set, image_cls, clinical_cls) = setup(dir.path());
    let case = set.join("case_000");
    let out = dir.path().join("out");
    let base = |cls: &Path| classify(&case, &case.join("fm_mask.nii.gz"), cls, &out);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let unknown = write("unknown.json", r#"{"age_years": 30, "blood_type": "A"}"#);
    base(&clinical_cls).arg("--clinical").arg(&unknown).run().fails_naming(&["unknown.json", "blood_type"]);
    let impossible = write("impossible.json", r#"{"age_years": 30, "crp_mg_per_l": -4}"#);
    base(&clinical_cls).arg("--clinical").arg(&impossible).run().fails_naming(&["impossible.json", "crp_mg_per_l"]);
    base(&clinical_cls).run().fails_naming(&["image+clinical", "--clinical"]);
    base(&image_cls).arg("--clinical").arg(case.join("clinical.json")).run().fails_naming(&["image-only"]);
    base(&dir.path().join("gone.fmw")).run().fails_naming(&["gone.fmw"]);
    // A mask on another grid: the image's first slice only.
    let mask = fmseg::io::nifti::read(case.join("fm_mask.nii.gz")).unwrap();
    let d = mask.dims;
    let slab = fmseg::volume::Volume::new(
        [d[0], d[1], 1],
        (0..d[0] * d[1]).map(|i| mask.data[i * d[2]]).collect(),
        mask.affine,
    )
    .unwrap();
    let other = dir.path().join("other.nii.gz");
    fmseg::io::nifti::write(&other, &slab, fmseg::io::nifti::WriteType::U8).unwrap();
    classify(&case, &other, &image_cls, &out).run().fails_naming(&["other.nii.gz", "grid"]);
    // The segmentation network's weights are no classifier.
    let unet = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/fmseg-unet25d.fmw");
    base(&unet).run().fails_naming(&["fmseg-unet25d.fmw", "classifier"]);
    assert!(!out.join("classification.json").exists(), "no output after a refusal");
}

/// `segment --classify` writes the segmentation's outputs and the classification together;
/// `train-classifier` on the set's cases.csv (two epochs) exports frozen weights that
/// `classify` reads.
#[test]
fn segment_classify_and_train_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    Fmseg::new().arg("phantom").arg("--out").arg(&set).args(["--seed", "12", "--cases", "4"]).run().success();
    let csv = std::fs::read_to_string(set.join("cases.csv")).unwrap();
    assert!(csv.starts_with("id,label,age_years,sex,hla_b27,crp_mg_per_l,esr_mm_per_h\n"), "{csv}");
    assert_eq!(csv.lines().count(), 5);
    let run_dir = dir.path().join("run");
    Fmseg::new()
        .args(["train-classifier", "--data"])
        .arg(&set)
        .args(["--masks", "given", "--clinical", "--epochs", "2", "--batch", "2", "--val-fraction", "0.25", "--out"])
        .arg(&run_dir)
        .run()
        .success()
        .stderr_has(&["epoch 2/2"]);
    assert_eq!(std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap().lines().count(), 3);
    // A cases.csv row without its folder, or a folder without an image: refused by name, no run.
    for (name, folder, needles) in
        [("missing", None, ["cases.csv", "ghost"]), ("empty", Some("ghost"), ["ghost", "DICOM"])]
    {
        let data = dir.path().join(name);
        std::fs::create_dir_all(folder.map_or(data.clone(), |f| data.join(f))).unwrap();
        std::fs::write(data.join("cases.csv"), "id,label\nghost,axSpA\n").unwrap();
        let bad_run = dir.path().join(format!("run-{name}"));
        Fmseg::new()
            .args(["train-classifier", "--data"])
            .arg(&data)
            .args(["--masks", "given", "--epochs", "1", "--out"])
            .arg(&bad_run)
            .run()
            .fails_naming(&needles);
        assert!(!bad_run.join("classifier.fmw").exists(), "{name}: no weights after a refusal");
    }
    let fmw = run_dir.join("classifier.fmw");
    let w = fmseg::engine::classifier::ClassifierWeights::load(&fmw).unwrap();
    assert_eq!((w.spec.clinical, w.metadata["variant"].as_str()), (9, "image+clinical"));
    // convert-weights knows the classifier: the run's best checkpoint to the frozen format.
    let converted = dir.path().join("converted.fmw");
    Fmseg::new()
        .arg("convert-weights")
        .arg(run_dir.join("best.safetensors"))
        .arg(&converted)
        .args(["--dtype", "f16", "--meta", "variant=image+clinical"])
        .run()
        .success();
    let c = fmseg::engine::classifier::ClassifierWeights::load(&converted).unwrap();
    assert_eq!((c.spec.clinical, c.state.len()), (9, w.state.len()));

    let case = set.join("case_000");
    let out = dir.path().join("seg");
    Fmseg::new()
        .arg("segment")
        .arg(case.join("dicom"))
        .arg("--classify")
        .arg("--clinical")
        .arg(case.join("clinical.json"))
        .arg("--classifier")
        .arg(&fmw)
        .args(["--device", "cpu", "--out"])
        .arg(&out)
        .run()
        .success()
        .stderr_has(&["image+clinical classifier"]);
    for f in ["fm_mask.nii.gz", "report.json", "overlay.png", "classification.json", "gradcam.nii.gz", "gradcam.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(json(&out.join("classification.json"))["inputs"]["mask"], "predicted");
}
