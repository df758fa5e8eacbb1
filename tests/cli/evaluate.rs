//! `fmseg evaluate` on masks written with the project's NIfTI writer and hand-made CSVs: the
//! tables hold what `pipeline::stats` computes for the same inputs (and hand-checkable values:
//! a Dice of 2/3, a separable AUC of 1), the ROC PNG decodes, bad inputs are refused naming
//! the file with no output written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fmseg::io::nifti::{self, WriteType};
use fmseg::pipeline::metrics::Confusion;
use fmseg::pipeline::stats;
use fmseg::volume::{Volume, IDENTITY};
use serde_json::Value;

use crate::common::cli::Fmseg;

const DIMS: [usize; 3] = [6, 5, 4];
const SPACING: [f64; 3] = [0.5, 1.0, 2.0];

/// A mask on the test grid with the voxels `f(i, j, k)`.
fn write_mask(path: &Path, f: impl Fn(usize, usize, usize) -> bool) {
    let mut a = IDENTITY;
    for (c, s) in SPACING.iter().enumerate() {
        a[c][c] = *s;
    }
    let data: Vec<f32> = (0..DIMS.iter().product::<usize>())
        .map(|p| f32::from(u8::from(f(p / (DIMS[1] * DIMS[2]), p / DIMS[2] % DIMS[1], p % DIMS[2]))))
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nifti::write(path, &Volume::new(DIMS, data, a).unwrap(), WriteType::U8).unwrap();
}

fn mask(set: &Path, id: &str) -> PathBuf {
    set.join(id).join("fm_mask.nii.gz")
}

fn boxed(lo: [usize; 3], hi: [usize; 3]) -> impl Fn(usize, usize, usize) -> bool {
    move |i, j, k| (lo[0]..hi[0]).contains(&i) && (lo[1]..hi[1]).contains(&j) && (lo[2]..hi[2]).contains(&k)
}

/// truth, model A and model B for cases c1 (A: Dice 2/3), c2, c3 (empty truth).
fn seg_sets(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (t, a, b) = (root.join("truth"), root.join("pred_a"), root.join("pred_b"));
    // c1: truth 2x2x2 = 8 voxels; A predicts them and the 8 beside them (tp 8, fp 8: Dice 2/3)
    write_mask(&mask(&t, "c1"), boxed([1, 1, 1], [3, 3, 3]));
    write_mask(&mask(&a, "c1"), boxed([1, 1, 1], [5, 3, 3]));
    write_mask(&mask(&b, "c1"), boxed([1, 1, 1], [3, 3, 2]));
    write_mask(&mask(&t, "c2"), boxed([0, 0, 0], [4, 3, 2]));
    write_mask(&mask(&a, "c2"), boxed([1, 0, 0], [4, 4, 2]));
    write_mask(&mask(&b, "c2"), boxed([0, 0, 1], [5, 3, 3]));
    write_mask(&mask(&t, "c3"), |_, _, _| false);
    write_mask(&mask(&a, "c3"), boxed([2, 2, 2], [3, 3, 3]));
    write_mask(&mask(&b, "c3"), |_, _, _| false);
    // a prediction of a case the truth does not have is ignored
    write_mask(&mask(&a, "extra"), |_, _, _| true);
    (t, a, b)
}

fn read_csv(p: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(String::from)).collect()).collect()
}

/// A CSV field as the tables write it: empty for a missing value.
fn field(row: &HashMap<String, String>, key: &str) -> Option<f64> {
    let s = row.get(key).unwrap_or_else(|| panic!("no column {key} in {row:?}"));
    (!s.is_empty()).then(|| s.parse().unwrap())
}

fn read_masks(p: &Path) -> Vec<u8> {
    nifti::read(p).unwrap().data.iter().map(|&x| u8::from(x != 0.0)).collect()
}

#[test]
fn segmentation_tables_hold_what_stats_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, a, b) = seg_sets(tmp.path());
    let out = tmp.path().join("out");
    let run = Fmseg::new()
        .arg("evaluate")
        .args(["--truth".as_ref(), t.as_os_str(), "--pred".as_ref(), a.as_os_str(), "--pred-b".as_ref(), b.as_os_str()])
        .args(["--name-a", "Ours", "--name-b", "2D-UNet", "--seed", "7", "--resamples", "500", "--out"])
        .arg(&out)
        .run()
        .success()
        .stdout_has(&["## Segmentation", "| Ours | 70.83 ± 5.89 |", "| 2D-UNet |", "paired t-test", "Wilcoxon"]);
    assert!(!run.stdout().contains("Classification"));
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [".fmseg.lock", "evaluation.json", "segmentation.md", "segmentation_cases.csv", "segmentation_summary.csv"]
    );

    // per case: the numbers of Confusion, hd95 and volumes on the same masks
    let cases = read_csv(&out.join("segmentation_cases.csv"));
    assert_eq!(cases.len(), 6, "3 cases x 2 models, the extra prediction ignored");
    let voxel_mm3 = SPACING.iter().product::<f64>();
    let mut dice: HashMap<String, Vec<Option<f64>>> = HashMap::new();
    for row in &cases {
        let (model, id) = (&row["model"], &row["id"]);
        let pred_dir = if model == "Ours" { &a } else { &b };
        let (truth, pred) = (read_masks(&mask(&t, id)), read_masks(&mask(pred_dir, id)));
        let c = Confusion::from_masks(&pred, &truth).unwrap();
        let v = stats::volumes(&c, voxel_mm3).unwrap();
        assert_eq!(field(row, "dice"), c.dice(), "{row:?}");
        assert_eq!(field(row, "precision"), c.precision());
        assert_eq!(field(row, "recall"), c.recall());
        assert_eq!(field(row, "hd95_mm"), stats::hd95(&pred, &truth, DIMS, SPACING).unwrap());
        assert_eq!(field(row, "truth_ml"), Some(v.label_ml));
        assert_eq!(field(row, "pred_ml"), Some(v.pred_ml));
        assert_eq!(field(row, "volume_difference_ml"), Some(v.difference_ml));
        dice.entry(model.clone()).or_default().push(c.dice());
    }
    // hand-checked: Ours has Dice 2/3 on c1 and 18 of 24 voxels each way on c2 (3/4): mean
    // 70.83 %, SD 5.89 % on stdout; no Dice on the empty truth c3
    let ours_c1 = cases.iter().find(|r| r["model"] == "Ours" && r["id"] == "c1").unwrap();
    assert_eq!(field(ours_c1, "dice"), Some(2.0 / 3.0));
    assert_eq!(field(ours_c1, "truth_ml"), Some(8.0 * 0.001));
    let ours_c3 = cases.iter().find(|r| r["model"] == "Ours" && r["id"] == "c3").unwrap();
    assert_eq!((field(ours_c3, "dice"), field(ours_c3, "recall"), field(ours_c3, "hd95_mm")), (None, None, None));

    // summaries: mean, SD and the seeded bootstrap CI of the cases that have the metric
    let summary = read_csv(&out.join("segmentation_summary.csv"));
    for row in &summary {
        let d: Vec<f64> = dice[&row["model"]].iter().flatten().copied().collect();
        let ci = stats::bootstrap_mean_ci(&d, 500, 7, 0.95).unwrap().unwrap();
        assert_eq!(field(row, "dice_n"), Some(2.0));
        assert_eq!(field(row, "dice_mean"), Some(stats::mean(&d).unwrap()));
        assert_eq!(field(row, "dice_sd"), stats::sd(&d).unwrap());
        assert_eq!((field(row, "dice_ci_lo"), field(row, "dice_ci_hi")), (Some(ci.lo), Some(ci.hi)));
    }

    // the paired tests on per-case Dice, A against B
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap()).unwrap();
    let cmp = &json["segmentation"]["comparison"];
    let (da, db): (Vec<f64>, Vec<f64>) =
        (dice["Ours"].iter().flatten().copied().collect(), dice["2D-UNet"].iter().flatten().copied().collect());
    let tt = stats::ttest_rel(&da, &db).unwrap();
    let w = stats::wilcoxon(&da, &db).unwrap();
    assert_eq!(cmp["n"], 2);
    assert_eq!(cmp["ttest"]["t"].as_f64(), Some(tt.t));
    assert_eq!(cmp["ttest"]["p"].as_f64(), Some(tt.p));
    assert_eq!(cmp["wilcoxon"]["statistic"].as_f64(), Some(w.statistic));
    assert_eq!(cmp["wilcoxon"]["p"].as_f64(), Some(w.p));
    assert!(json["classification"].is_null());

    let md = std::fs::read_to_string(out.join("segmentation.md")).unwrap();
    assert!(md.contains("| c3 | Ours | - | 0.00 | - | - |"), "{md}");
    assert!(md.contains("DSC (%) | Precision (%) | Recall (%)"), "{md}");
}

fn write(p: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
    p.to_path_buf()
}

const LABELS: &str = "id,label,site\nc1,axSpA,x\nc2,non-axSpA,x\nc3,1,y\nc4,0,y\nc5,AXSPA,y\nc6,non-axSpA,x\n";
const TRUTH: [bool; 6] = [true, false, true, false, true, false];
/// Model A separates the classes (AUC 1); model B does not.
const SCORES_A: [f64; 6] = [0.9, 0.2, 0.6, 0.4, 0.55, 0.1];
const SCORES_B: [f64; 6] = [0.7, 0.8, 0.45, 0.1, 0.6, 0.3];

fn cls_inputs(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let labels = write(&root.join("labels.csv"), LABELS);
    let mut csv = "id,probability_axspa\n".to_string();
    for (i, s) in SCORES_A.iter().enumerate().rev() {
        csv.push_str(&format!("c{},{s}\n", i + 1));
    }
    let a = write(&root.join("a.csv"), &csv);
    let b = root.join("b");
    for (i, s) in SCORES_B.iter().enumerate() {
        write(&b.join(format!("c{}", i + 1)).join("classification.json"), &format!("{{\"probability_axspa\": {s}}}"));
    }
    (labels, a, b)
}

fn boot(scores: &[f64], stat: impl Fn(&[f64], &[bool]) -> Option<f64>) -> (Option<f64>, Option<f64>) {
    let ci = stats::bootstrap_ci(6, 300, 3, 0.95, |idx| {
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let l: Vec<bool> = idx.iter().map(|&i| TRUTH[i]).collect();
        stat(&s, &l)
    })
    .unwrap();
    (ci.map(|c| c.lo), ci.map(|c| c.hi))
}

fn decode_png(p: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(std::fs::read(p).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    (info.width, info.height, buf)
}

#[test]
fn classification_tables_hold_what_stats_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let (labels, a, b) = cls_inputs(tmp.path());
    let out = tmp.path().join("out");
    // an earlier segmentation run's results in the same directory are replaced by this run's
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("segmentation.md"), "old").unwrap();
    Fmseg::new()
        .arg("evaluate")
        .args(["--labels".as_ref(), labels.as_os_str(), "--scores".as_ref(), a.as_os_str()])
        .args(["--scores-b".as_ref(), b.as_os_str()])
        .args(["--threshold", "0.5", "--seed", "3", "--resamples", "300", "--out"])
        .arg(&out)
        .run()
        .success()
        .stdout_has(&["## Classification", "| A | 1.000 (1.000–1.000) |", "DeLong's test"]);
    assert!(!out.join("segmentation.md").exists(), "a stale result of an earlier run is removed");

    let rows = read_csv(&out.join("classification.csv"));
    for (row, scores) in rows.iter().zip([SCORES_A, SCORES_B]) {
        let at = stats::at_threshold(&scores, &TRUTH, 0.5).unwrap();
        assert_eq!(field(row, "auc"), stats::roc_auc(&scores, &TRUTH).unwrap());
        assert_eq!(
            (field(row, "auc_ci_lo"), field(row, "auc_ci_hi")),
            boot(&scores, |s, l| stats::roc_auc(s, l).ok().flatten())
        );
        let d = stats::delong(&scores, &TRUTH, 0.95).unwrap().unwrap();
        assert_eq!((field(row, "auc_delong_ci_lo"), field(row, "auc_delong_ci_hi")), (Some(d.ci.lo), Some(d.ci.hi)));
        type Pick = fn(&stats::Classification) -> Option<f64>;
        let metrics: [(&str, Pick); 6] = [
            ("accuracy", |c| c.accuracy),
            ("sensitivity", |c| c.sensitivity),
            ("specificity", |c| c.specificity),
            ("ppv", |c| c.ppv),
            ("npv", |c| c.npv),
            ("kappa", |c| c.kappa),
        ];
        for (name, pick) in metrics {
            assert_eq!(field(row, name), pick(&at), "{name}");
            let ci = boot(&scores, |s, l| stats::at_threshold(s, l, 0.5).ok().as_ref().and_then(pick));
            assert_eq!((field(row, &format!("{name}_ci_lo")), field(row, &format!("{name}_ci_hi"))), ci, "{name}");
        }
        assert_eq!(field(row, "tp"), Some(at.counts.tp as f64));
        assert_eq!(field(row, "tn"), Some(at.counts.tn as f64));
    }
    // hand-checked: A separates the classes
    assert_eq!(field(&rows[0], "auc"), Some(1.0));
    assert_eq!(field(&rows[0], "accuracy"), Some(1.0));

    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap()).unwrap();
    let t = stats::delong_paired(&SCORES_A, &SCORES_B, &TRUTH).unwrap().unwrap();
    let dt = &json["classification"]["delong_test"];
    assert_eq!((dt["z"].as_f64(), dt["p"].as_f64()), (Some(t.z), Some(t.p)));
    let roc = stats::roc_curve(&SCORES_B, &TRUTH).unwrap().unwrap();
    let jroc = json["classification"]["models"][1]["roc"].as_array().unwrap();
    assert_eq!(jroc.len(), roc.len());
    assert_eq!(jroc.last().unwrap()["fpr"].as_f64(), Some(roc.last().unwrap().fpr));

    let (w, h, rgb) = decode_png(&out.join("roc.png"));
    assert_eq!((w, h), (520, 520));
    let count = |c: [u8; 3]| rgb.chunks(3).filter(|p| *p == c).count();
    assert!(count([31, 119, 180]) > 500 && count([255, 127, 14]) > 500, "both curves drawn");
    let md = std::fs::read_to_string(out.join("classification.md")).unwrap();
    assert!(md.contains("A in blue, B in orange"), "{md}");
}

/// Each bad input: exit 1, the file (and line or case) named, nothing on stdout, no output
/// directory; an existing one keeps its results.
#[test]
fn bad_inputs_fail_naming_the_file_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (labels, a, b) = cls_inputs(root);
    let (t, pa, _) = seg_sets(root);
    let out = root.join("out");
    let cls = |labels: &Path, scores: &Path| {
        Fmseg::new()
            .arg("evaluate")
            .args(["--labels".as_ref(), labels.as_os_str(), "--scores".as_ref(), scores.as_os_str(), "--out".as_ref()])
            .arg(&out)
            .run()
    };
    let bad = |name: &str, text: &str| write(&root.join(name), text);
    let cases: Vec<(PathBuf, PathBuf, Vec<String>)> = vec![
        (bad("nolabel.csv", "id,diagnosis\nc1,axSpA\n"), a.clone(), vec!["nolabel.csv".into(), "\"label\"".into()]),
        (
            bad("unknown.csv", "id,label\nc1,axSpA\nc2,maybe\n"),
            a.clone(),
            vec!["unknown.csv".into(), "line 3".into(), "maybe".into()],
        ),
        (
            bad("dup.csv", "id,label\nc1,axSpA\nc1,0\n"),
            a.clone(),
            vec!["dup.csv".into(), "line 3".into(), "duplicate id".into()],
        ),
        (labels.clone(), bad("nan.csv", "id,probability_axspa\nc1,NaN\n"), vec!["nan.csv".into(), "line 2".into()]),
        (
            labels.clone(),
            bad("big.csv", "id,probability_axspa\nc1,1.5\n"),
            vec!["big.csv".into(), "1.5".into(), "[0, 1]".into()],
        ),
        (labels.clone(), bad("word.csv", "id,probability_axspa\nc1,high\n"), vec!["word.csv".into(), "high".into()]),
        (labels.clone(), bad("short.csv", "id,probability_axspa\nc1,0.3\n"), vec!["short.csv".into(), "c2".into()]),
        (labels.clone(), bad("noprob.csv", "id,p\nc1,0.3\n"), vec!["noprob.csv".into(), "probability_axspa".into()]),
        (labels.clone(), root.join("absent.csv"), vec!["absent.csv".into()]),
    ];
    for (l, s, needles) in &cases {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        cls(l, s).fails_naming(&needles);
        assert!(!out.exists(), "no output directory after a failure");
    }
    // a directory of classifications missing one, or with a non-number
    std::fs::remove_file(b.join("c4/classification.json")).unwrap();
    cls(&labels, &b).fails_naming(&["c4/classification.json", "missing"]);
    write(&b.join("c4/classification.json"), "{\"probability_axspa\": \"0.3\"}");
    cls(&labels, &b).fails_naming(&["c4/classification.json", "not a number"]);

    let seg = |pred: &Path| {
        Fmseg::new()
            .arg("evaluate")
            .args(["--truth".as_ref(), t.as_os_str(), "--pred".as_ref(), pred.as_os_str(), "--out".as_ref()])
            .arg(&out)
            .run()
    };
    // a finished run's results stay when a later run into the same directory fails
    seg(&pa).success();
    let before = std::fs::read(out.join("segmentation_cases.csv")).unwrap();
    let missing = root.join("pred_missing");
    write_mask(&mask(&missing, "c1"), |_, _, _| false);
    write_mask(&mask(&missing, "c3"), |_, _, _| false);
    seg(&missing).fails_naming(&["pred_missing/c2/fm_mask.nii.gz", "case c2"]);
    // another grid: both files named
    let other = root.join("pred_other");
    for id in ["c1", "c2", "c3"] {
        std::fs::create_dir_all(other.join(id)).unwrap();
        std::fs::copy(mask(&pa, id), mask(&other, id)).unwrap();
    }
    let mut v = nifti::read(mask(&pa, "c2")).unwrap();
    v.affine[0][3] = 5.0;
    nifti::write(mask(&other, "c2"), &v, WriteType::U8).unwrap();
    seg(&other).fails_naming(&["pred_other/c2/fm_mask.nii.gz", "truth/c2/fm_mask.nii.gz", "same voxel grid"]);
    assert_eq!(std::fs::read(out.join("segmentation_cases.csv")).unwrap(), before);
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 5, "no partial files: {names:?}");
}

#[test]
fn usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    Fmseg::new().args(["evaluate", "--out", o]).run().usage_error(&["--truth", "--labels"]);
    Fmseg::new().args(["evaluate", "--truth", "t", "--out", o]).run().usage_error(&["--pred"]);
    Fmseg::new().args(["evaluate", "--labels", "l.csv", "--out", o]).run().usage_error(&["--scores"]);
    assert!(!out.exists());
}
