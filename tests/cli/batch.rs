//! `fmseg batch` over synthetic archives: the plan on a tree of 32 studies (51 series) with junk, non-MR,
//! duplicated, truncated and incomplete series; a run over 30 such studies, killed with -9 at
//! random moments and resumed, against an uninterrupted one; shards merged. `node`: `fmseg serve`,
//! the DICOM node that reuses this machinery, with DCMTK peers.

use crate::common::cli::{Fmseg, SOME_FAILED};
use crate::dicom_support;
mod node;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fmseg::io::dicom::{write_mr_series, MrSeriesMeta, Rescale, StoredSamples, StoredVolume};
use serde_json::Value;

/// Randomly initialised weights, marked untrained (the masks mean nothing; the mechanics do).
fn weights() -> &'static str {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch-test-weights-seed1.fmw");
        let sd = fmseg::model::init::random_state_dict(1);
        fmseg::weights::save_with_metadata(
            &sd,
            &p,
            fmseg::weights::Format::Frozen,
            fmseg::weights::DType::F16,
            &[("trained", "false")],
        )
        .unwrap();
        p
    })
    .to_str()
    .unwrap()
}

/// A small pelvis-like MR series (64 x 56 x 10 at 1.6 x 1.6 x 3.5 mm: one network window).
fn write_series(dir: &Path, seed: &str, number: i64, description: &str, tilt: f64) -> MrSeriesMeta {
    let a = dicom_support::oblique_affine(1.6, 1.6, 3.5, tilt, [-50.0, -40.0, 10.0]);
    let (ni, nj, nk) = (64, 56, 10);
    let mut samples = Vec::with_capacity(ni * nj * nk);
    for i in 0..ni {
        for j in 0..nj {
            for k in 0..nk {
                let (x, y) = (i as f64 - 31.5, j as f64 - 27.5);
                let body = (x / 28.0).powi(2) + (y / 22.0).powi(2) < 1.0;
                let bone = ((x.abs() - 12.0) / 5.0).powi(2) + (y / 8.0).powi(2) < 1.0;
                let v = if bone {
                    250
                } else if body {
                    600
                } else {
                    20
                };
                samples.push((v + (i * 7 + j * 11 + k * 3 + seed.len()) % 17 * 3) as i16);
            }
        }
    }
    let v = StoredVolume::new([ni, nj, nk], StoredSamples::I16(samples), a, vec![Rescale::IDENTITY]).unwrap();
    let meta = MrSeriesMeta {
        series_number: number,
        series_description: description.into(),
        protocol_name: description.to_ascii_lowercase().replace(' ', "_"),
        ..dicom_support::meta(seed, number, description)
    };
    write_mr_series(&v, &meta, dir).unwrap();
    meta
}

/// What an archive holds and what a batch must make of it.
struct Archive {
    root: PathBuf,
    /// Series UIDs the automatic rules select and that segment.
    good: BTreeSet<String>,
    /// Selected series that must fail, with a word of the reason.
    bad: BTreeMap<String, &'static str>,
}

/// `studies` studies under `root`, each with a T1 series (`study_N/t1`); every third also a T2
/// STIR, every fifth a CT; study 1's T1 sent twice (a copy with a higher SeriesNumber); and,
/// when `broken`, one study whose T1 has a truncated slice and one whose T1 misses a slice.
/// Junk files beside them.
fn archive(root: &Path, studies: usize, broken: bool) -> Archive {
    let mut a = Archive { root: root.to_path_buf(), good: BTreeSet::new(), bad: BTreeMap::new() };
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("README.txt"), "exported by a PACS\n").unwrap();
    std::fs::write(root.join("index.html"), "<html></html>").unwrap();
    for s in 0..studies {
        let seed = format!("archive-study-{s}");
        let d = root.join(format!("study_{s:02}"));
        let t1 = write_series(&d.join("t1"), &seed, 1, "T1 TSE tra", 10.0);
        if s % 3 == 0 {
            write_series(&d.join("t2"), &seed, 2, "T2 STIR tra", 10.0);
        }
        if s % 5 == 0 {
            let m = write_series(&d.join("ct"), &seed, 3, "Pelvis CT", 0.0);
            let _ = m;
            for f in dicom_support::files(&d.join("ct")) {
                dicom_support::rewrite(&f, |o| {
                    o.put(dicom_core::DataElement::new(
                        dicom_dictionary_std::tags::MODALITY,
                        dicom_core::VR::CS,
                        dicom_core::value::PrimitiveValue::from("CT"),
                    ));
                });
            }
        }
        if s == 1 {
            write_series(&d.join("t1_resent"), &seed, 7, "T1 TSE tra", 10.0);
        }
        std::fs::write(d.join("Thumbs.db"), [0u8, 1, 2, 3]).unwrap();
        let uid = t1.series_uid();
        match (broken, s) {
            (true, 2) => {
                let f = &dicom_support::files(&d.join("t1"))[4];
                let b = std::fs::read(f).unwrap();
                // cut inside the header: the index cannot read it
                std::fs::write(f, &b[..300]).unwrap();
                a.bad.insert(uid, "IM1_0005.dcm");
            }
            (true, 3) => {
                std::fs::remove_file(&dicom_support::files(&d.join("t1"))[5]).unwrap();
                a.bad.insert(uid, "missing");
            }
            _ => {
                a.good.insert(uid);
            }
        }
    }
    a
}

fn latest(out: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("manifest line {l:?}: {e}"));
        m.insert(v["series_uid"].as_str().unwrap().to_string(), v);
    }
    m
}

/// 32 studies, 51 series: the plan selects the 32 T1 series (the resent copy, T2 and CT are
/// skipped with their reasons; the broken ones are marked), counts the junk, runs nothing;
/// a rules file selects the T2 series instead; bad rules are refused before anything.
#[test]
fn plan_lists_every_series_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let a = archive(&dir.path().join("archive"), 32, true);
    let o = Fmseg::new().args(["batch", a.root.to_str().unwrap(), "--plan"]).run().success();
    let (plan, stderr) = (o.stdout(), o.stderr());
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 32 + 11 + 7 + 1, "{plan}");
    let selected: Vec<&&str> = lines.iter().filter(|l| l.starts_with("SELECT")).collect();
    assert_eq!(selected.len(), 32);
    for uid in a.good.iter().chain(a.bad.keys()) {
        assert!(selected.iter().any(|l| l.contains(uid.as_str())), "{uid} selected");
    }
    assert!(plan.contains("(MR T2 STIR tra, 10 slices): not the series segment would choose"));
    assert!(plan.contains("(CT Pelvis CT, 10 slices): not the series segment would choose"));
    assert_eq!(plan.matches("[will fail").count(), 1, "the truncated slice: {plan}");
    assert!(stderr.contains("51 series") && stderr.contains("32 of 51 series selected"), "{stderr}");
    assert!(stderr.contains("1 unreadable"), "{stderr}");
    assert!(stderr.contains("34 non-DICOM"), "README, index.html and 32 Thumbs.db: {stderr}");

    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"selections": [{"name": "STIR", "conditions": {"Modality": "MR", "SeriesDescription": "stir", "min_slices": 10}}]}"#,
    )
    .unwrap();
    let o = Fmseg::new().args(["batch", a.root.to_str().unwrap(), "--plan", "--rules", rules.to_str().unwrap()]).run();
    let plan = o.success().stdout();
    assert_eq!(plan.lines().filter(|l| l.starts_with("SELECT")).count(), 11, "{plan}");
    assert!(plan.contains("selection \"STIR\""));
    assert!(plan.contains("\"STIR\": SeriesDescription is not /stir/"));

    // an archive with no image, an output inside the archive: refused before anything
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "x").unwrap();
    Fmseg::new()
        .args(["batch", empty.to_str().unwrap(), "--out", dir.path().join("o-empty").to_str().unwrap()])
        .run()
        .fails_naming(&["no DICOM image found", "1 non-DICOM"]);
    assert!(!dir.path().join("o-empty").exists());
    let inside = a.root.join("results");
    Fmseg::new()
        .args(["batch", a.root.to_str().unwrap(), "--out", inside.to_str().unwrap()])
        .run()
        .fails_naming(&["inside the archive"]);
    assert!(!inside.exists());

    std::fs::write(&rules, r#"{"selections": [{"conditions": {"PatientsName": "x"}}]}"#).unwrap();
    let out = dir.path().join("out");
    Fmseg::new()
        .args(["batch", a.root.to_str().unwrap(), "--out", out.to_str().unwrap(), "--rules", rules.to_str().unwrap()])
        .run()
        .fails_naming(&["rules.json", "PatientsName", "supported"]);
    assert!(!out.exists());
}

/// Outputs of a series that must be equal between two runs: the mask file, and the SEG's
/// pixels and UIDs (its content date and time differ).
fn result_of(out: &Path, entry: &Value) -> (Vec<u8>, Vec<u8>, String) {
    let dir = out.join(entry["output"].as_str().unwrap());
    let mask = std::fs::read(dir.join("fm_mask.nii.gz")).unwrap();
    let seg = dicom_object::open_file(dir.join("fm_seg.dcm")).unwrap();
    let px = seg.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec();
    let uid = seg.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap().to_string();
    (mask, px, uid)
}

/// Every file under `dir` (relative), for checking that nothing temporary is left.
fn tree(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A batch killed with -9 at ten random moments and resumed ends with the same results as an
/// uninterrupted one: every selectable series done exactly once (one `done` line each), the
/// same masks and SEGs, the broken series failed with their reasons, no temporary file left;
/// a rerun does nothing; exit status 3 while some series fail.
#[test]
fn killed_batch_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let a = archive(&dir.path().join("archive"), 30, true);
    let root = a.root.to_str().unwrap();
    let batch = |out: &Path| {
        Fmseg::new().args(["batch", root, "--out", out.to_str().unwrap(), "--weights", weights(), "--threads", "2"])
    };
    let whole = dir.path().join("whole");
    let t = std::time::Instant::now();
    let o = batch(&whole).run();
    let full_run = t.elapsed().as_secs_f64();
    o.exit_code(SOME_FAILED); // some series failed
    let want = latest(&whole);
    for uid in &a.good {
        assert_eq!(want[uid]["status"], "done", "{uid}");
    }
    for (uid, why) in &a.bad {
        assert_eq!(want[uid]["status"], "failed", "{uid}");
        assert!(want[uid]["reason"].as_str().unwrap().contains(why), "{uid}: {}", want[uid]["reason"]);
    }
    let summary = std::fs::read_to_string(whole.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 1 + want.len(), "{summary}");

    // killed at random moments, then run to the end
    let killed = dir.path().join("killed");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for n in 0..10 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let after = 0.2 + (rng % 1000) as f64 / 1000.0 * full_run * 0.9;
        let mut child = batch(&killed).stderr(std::process::Stdio::null()).spawn();
        std::thread::sleep(std::time::Duration::from_secs_f64(after));
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("kill {n}: after {after:.2} s");
    }
    batch(&killed).run().exit_code(SOME_FAILED);
    let got = latest(&killed);
    let text = std::fs::read_to_string(killed.join("manifest.jsonl")).unwrap();
    for uid in &a.good {
        let done_lines = text.lines().filter(|l| l.contains(uid.as_str()) && l.contains("\"status\":\"done\"")).count();
        assert_eq!(done_lines, 1, "{uid} done exactly once:\n{text}");
        assert_eq!(result_of(&killed, &got[uid]), result_of(&whole, &want[uid]), "{uid}");
    }
    for uid in a.bad.keys() {
        assert_eq!(got[uid]["status"], "failed");
    }
    let names = tree(&killed);
    let allowed = [
        "manifest.jsonl",
        "summary.csv",
        ".fmseg-batch.lock",
        ".fmseg.lock",
        "fm_mask.nii.gz",
        "fm_seg.dcm",
        "overlay.png",
        "report.json",
        "batch.json",
    ];
    for n in &names {
        let base = Path::new(n).file_name().unwrap().to_string_lossy();
        assert!(allowed.contains(&base.as_ref()), "left behind: {n}");
    }
    // a rerun has nothing left to do but the failed ones
    batch(&killed).run().exit_code(SOME_FAILED).stderr_has(&[&format!("{} done earlier", a.good.len())]);
}

/// Three shards, one after the other into one output directory (as three cluster jobs with a
/// shared file system would), then `--merge`: every selected series done exactly once. Two
/// shards into separate directories merge the same way; a missing shard is reported.
#[test]
fn shards_split_the_archive_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let a = archive(&dir.path().join("archive"), 6, false);
    let root = a.root.to_str().unwrap();
    let shared = dir.path().join("shared");
    let mut per_shard = Vec::new();
    for k in 0..3 {
        let shard = format!("{k}/3");
        let o = Fmseg::new()
            .args(["batch", root, "--out", shared.to_str().unwrap(), "--shard", &shard])
            .args(["--weights", weights(), "--threads", "2"])
            .run()
            .success();
        per_shard.push(o.stderr().lines().filter(|l| l.contains("] ")).count());
    }
    assert_eq!(per_shard.iter().sum::<usize>(), a.good.len(), "{per_shard:?}");
    Fmseg::new()
        .args(["batch", root, "--merge", shared.to_str().unwrap()])
        .run()
        .success()
        .stdout_has(&[&format!("{n} of {n} selected series done exactly once", n = a.good.len())]);
    let done = latest(&shared).values().filter(|e| e["status"] == "done").count();
    assert_eq!(done, a.good.len());

    // separate directories: 0/2 and 1/2; one alone is incomplete
    let (d0, d1) = (dir.path().join("s0"), dir.path().join("s1"));
    for (k, d) in [(0, &d0), (1, &d1)] {
        Fmseg::new()
            .args(["batch", root, "--out", d.to_str().unwrap(), "--shard", &format!("{k}/2")])
            .args(["--weights", weights(), "--threads", "2"])
            .run()
            .success();
    }
    Fmseg::new().args(["batch", root, "--merge", d0.to_str().unwrap(), d1.to_str().unwrap()]).run().success();
    Fmseg::new()
        .args(["batch", root, "--merge", d0.to_str().unwrap()])
        .run()
        .exit_code(SOME_FAILED)
        .stdout_has(&["not done"]);
    // both again: the shared directory and the split ones hold every series: done twice
    Fmseg::new()
        .args(["batch", root, "--merge", d0.to_str().unwrap(), d1.to_str().unwrap(), shared.to_str().unwrap()])
        .run()
        .exit_code(SOME_FAILED)
        .stdout_has(&["done 2 times"]);
}
