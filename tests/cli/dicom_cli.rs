//! `fmseg series` through the real binary: the table, `--json`, `--series`, `--check`, and
//! every bad input as a non-zero exit with nothing on stdout and the file named on stderr.

use crate::common::cli::Fmseg;
use crate::dicom_support;

use fmseg::io::dicom::{write_mr_series, Rescale};

use dicom_support::*;

fn two_series(dir: &std::path::Path) -> (String, String) {
    let ax = oblique_affine(0.75, 0.75, 4.0, 12.0, [0.0; 3]);
    let t1 = meta("cli", 1, "T1 TSE tra");
    let t2 = meta("cli", 2, "T2 TSE tra");
    write_mr_series(&unique_i16([20, 16, 8], ax, Rescale::IDENTITY), &t1, &dir.join("t1")).unwrap();
    write_mr_series(&unique_i16([20, 16, 10], ax, Rescale::IDENTITY), &t2, &dir.join("t2")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not dicom").unwrap();
    (t1.series_uid(), t2.series_uid())
}

#[test]
fn table_marks_the_chosen_series() {
    let dir = tempfile::tempdir().unwrap();
    let (t1, t2) = two_series(dir.path());
    let out = Fmseg::new().args(["series", dir.path().to_str().unwrap()]).run().success();
    let text = out.stdout();
    let line = |uid: &str| {
        text.lines().find(|l| l.contains(uid)).unwrap_or_else(|| panic!("{uid} not listed:\n{text}")).to_string()
    };
    let (l1, l2) = (line(&t1), line(&t2));
    assert!(l1.starts_with('*') && !l2.starts_with('*'), "{text}");
    for want in ["T1 TSE tra", "MR", "16x20", "0.750x0.750x4.000", "oblique axial (12 deg)", "yes"] {
        assert!(l1.contains(want), "{want:?} missing in {l1:?}");
    }
    assert!(l2.contains(" 10 ") && l2.contains(" no"), "{l2}");
    assert!(text.contains(&format!("chosen: {t1}")), "{text}");
    out.stderr_has(&["skipped 1 non-DICOM file"]);
}

#[test]
fn json_with_series_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let (t1, t2) = two_series(dir.path());
    let out = Fmseg::new()
        .args(["series", dir.path().to_str().unwrap(), "--json", "--series", &t2, "--check"])
        .run()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.output().stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["chosen"], t2.as_str());
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let s2 = series.iter().find(|s| s["uid"] == t2.as_str()).unwrap();
    let s1 = series.iter().find(|s| s["uid"] == t1.as_str()).unwrap();
    assert_eq!((s2["chosen"].as_bool(), s1["chosen"].as_bool()), (Some(true), Some(false)));
    assert_eq!(s2["slices"], 10);
    assert_eq!(s2["t1_weighted"], false);
    assert_eq!(s1["t1_weighted"], true);
    assert_eq!(v["skipped_non_dicom"], 1);
    assert_eq!(v["loaded"]["dims"], serde_json::json!([20, 16, 10]));
    let sp = v["loaded"]["spacing"].as_array().unwrap();
    assert!((sp[2].as_f64().unwrap() - 4.0).abs() < 1e-9);
}

/// The failure contract: exit status 1, empty stdout, the problem (and file) on stderr.
fn fails(args: &[&str], needles: &[&str]) {
    Fmseg::new().args(args).run().fails_naming(needles);
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ax = oblique_affine(1.0, 1.0, 5.0, 0.0, [0.0; 3]);
    let v = unique_i16([12, 10, 6], ax, Rescale::IDENTITY);
    let mk = |name: &str| {
        let d = dir.path().join(name);
        let p = write_mr_series(&v, &meta(name, 1, "T1"), &d).unwrap();
        (d, p)
    };
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let fname = |p: &std::path::Path| p.file_name().unwrap().to_str().unwrap().to_string();

    let (d, p) = mk("missing");
    std::fs::remove_file(&p[2]).unwrap();
    fails(&["series", &s(&d), "--check"], &["slice missing between", &fname(&p[1]), &fname(&p[3])]);
    // Without --check the listing still works and shows the problem.
    Fmseg::new().args(["series", &s(&d)]).run().success().stdout_has(&["problem: "]);

    let (d, p) = mk("duplicate");
    std::fs::copy(&p[2], d.join("zz.dcm")).unwrap();
    fails(&["series", &s(&d), "--check", "--json"], &["duplicate slice position", "zz.dcm"]);

    let (d, p) = mk("truncated");
    let b = std::fs::read(&p[4]).unwrap();
    std::fs::write(&p[4], &b[..b.len() - 64]).unwrap();
    fails(&["series", &s(&d), "--check"], &["truncated pixel data", &fname(&p[4])]);

    let (d, p) = mk("nopixels");
    rewrite(&p[0], |o| {
        o.remove_element(dicom_dictionary_std::tags::PIXEL_DATA);
    });
    fails(&["series", &s(&d), "--check"], &["no pixel data", &fname(&p[0])]);

    let empty = dir.path().join("text");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("a.txt"), "x").unwrap();
    fails(&["series", &s(&empty)], &["no DICOM image found", "1 non-DICOM file"]);

    let (d, _) = mk("unknown");
    fails(&["series", &s(&d), "--series", "1.2.3.4"], &["no series with SeriesInstanceUID 1.2.3.4"]);

    fails(&["series", &s(&dir.path().join("does-not-exist"))], &["does-not-exist"]);
}

/// A reader that stops reading (`fmseg series DIR | head`) is not a failure: with stdout a
/// pipe whose read end is already closed, every write fails with EPIPE, and fmseg must exit 0
/// without a panic or a message (before, `println!` panicked: exit 101).
#[test]
fn closed_stdout_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    two_series(dir.path());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [vec!["series"], vec!["series", "--json"]] {
        let out = Fmseg::new().args(&args).arg(dir.path()).stdout(writer.try_clone().unwrap()).run().success();
        let stderr = out.stderr();
        assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{out}");
    }
    // usage errors are 2, failures 1 (documented in --help)
    Fmseg::new().args(["series", "--bogus"]).run().usage_error(&["--bogus"]);
    Fmseg::new().args(["series", dir.path().join("missing").to_str().unwrap()]).run().fails_naming(&["missing"]);
    Fmseg::new().args(["segment", "--help"]).run().success().stdout_has(&["Exit status: 0 success"]);
}

/// `fmseg convert` takes what dcm2niix takes: a single-slice file (a one-slice volume, with a
/// note), a constant image, and files without SeriesInstanceUID (grouped by study, series
/// number and directory, with a warning); `segment` still refuses the first two and segments
/// nothing it cannot.
#[test]
fn convert_accepts_single_slices_constant_images_and_missing_series_uids() {
    let dir = tempfile::tempdir().unwrap();
    let ax = oblique_affine(1.0, 1.0, 5.0, 0.0, [0.0; 3]);
    let v = unique_i16([12, 10, 6], ax, Rescale::IDENTITY);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();

    let files = write_mr_series(&v, &meta("single", 1, "T1"), &dir.path().join("single")).unwrap();
    let out = dir.path().join("one.nii.gz");
    Fmseg::new().args(["convert", &s(&files[2]), &s(&out)]).run().success().stderr_has(&["single slice"]);
    let one = fmseg::io::nifti::read(&out).unwrap();
    assert_eq!(one.dims, [12, 10, 1]);
    Fmseg::new()
        .args(["segment", &s(&files[2]), "--out", &s(&dir.path().join("o1"))])
        .run()
        .fails_naming(&["a single DICOM slice"]);

    let mut flat = v.clone();
    flat.samples = fmseg::io::dicom::StoredSamples::I16(vec![7; 12 * 10 * 6]);
    write_mr_series(&flat, &meta("flat", 1, "T1"), &dir.path().join("flat")).unwrap();
    let out = dir.path().join("flat.nii.gz");
    Fmseg::new().args(["convert", &s(&dir.path().join("flat")), &s(&out)]).run().success();
    assert!(fmseg::io::nifti::read(&out).unwrap().data.iter().all(|&x| x == 7.0));

    let d = dir.path().join("nouid");
    let files = write_mr_series(&v, &meta("nouid", 4, "T1"), &d).unwrap();
    for f in &files {
        rewrite(f, |o| {
            o.remove_element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID);
        });
    }
    let out = dir.path().join("nouid.nii.gz");
    Fmseg::new().args(["convert", &s(&d), &s(&out)]).run().success().stderr_has(&["no SeriesInstanceUID"]);
    assert_eq!(fmseg::io::nifti::read(&out).unwrap().data, v.real_volume().data);
    // the grouping is deterministic: the same key every time
    let a = fmseg::io::dicom::list_series(&d).unwrap();
    let b = fmseg::io::dicom::list_series(&d).unwrap();
    assert_eq!((a.len(), &a[0].uid), (1, &b[0].uid));
    assert!(a[0].uid.starts_with("2.25."));
}
