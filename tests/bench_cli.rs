//! `fmseg bench` on the CPU: the study benchmark's plan and report, and its input checks.

use std::process::Command;

fn fmseg(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fmseg")).args(args).output().expect("run fmseg")
}

/// A one-window study (192x192x16 voxels of 1x1x7 mm is exactly the network's patch):
/// 1 window without TTA, then 1 fold x (1 + 3 x 1) passes = 4 windows in batches of 3.
#[test]
fn study_bench_reports_the_plan_it_timed() {
    let out = fmseg(&[
        "bench",
        "--study",
        "--json",
        "--threads",
        "2",
        "--study-dims",
        "192,192,16",
        "--study-spacing",
        "1,1,7",
        "--folds",
        "1",
        "--tta-rounds",
        "1",
        "--sw-batch",
        "3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let s = &v["study"];
    assert_eq!(s["preprocessed_dims"], serde_json::json!([192, 192, 16]));
    assert_eq!(s["sw_batch"], 3);
    let inf = s["inference"].as_array().unwrap();
    assert_eq!((inf[0]["passes"].as_u64(), inf[0]["windows"].as_u64()), (Some(1), Some(1)));
    assert_eq!((inf[1]["passes"].as_u64(), inf[1]["windows"].as_u64()), (Some(4), Some(4)));
    assert!(inf.iter().all(|r| r["seconds"].as_f64().unwrap() > 0.0));
    assert!(v["device"].as_str().unwrap().starts_with("cpu"));
}

#[test]
fn study_bench_refuses_bad_grids() {
    for bad in [["--study-dims", "0,10,10"], ["--study-dims", "10,10"], ["--study-spacing", "1,nan,1"]] {
        let out = fmseg(&["bench", "--study", bad[0], bad[1]]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--study-"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
