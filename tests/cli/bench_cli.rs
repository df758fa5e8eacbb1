//! `fmseg bench` on the CPU: the study benchmark's plan and report, and its input checks.

use crate::common::cli::Fmseg;

/// A one-window study (192x192x16 voxels of 1x1x7 mm is exactly the network's patch):
/// 1 window without TTA, then 1 fold x (1 + 3 x 1) passes = 4 windows in batches of 3.
#[test]
fn study_bench_reports_the_plan_it_timed() {
    let out = Fmseg::new()
        .args([
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
        ])
        .run()
        .success();
    let line = out.stdout().lines().last().unwrap_or_default().to_string();
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
        Fmseg::new().args(["bench", "--study", bad[0], bad[1]]).run().fails_naming(&["--study-"]);
    }
}

/// `bench --latency` on two small series: both routes timed on every series, quantiles in
/// order, the breakdown and the control present; bad arguments refused.
#[test]
fn latency_bench_times_both_routes_and_the_control() {
    let out = Fmseg::new()
        .args([
            "bench",
            "--latency",
            "--json",
            "--threads",
            "2",
            "--series",
            "2",
            "--series-dims",
            "96,80,6",
            "--series-spacing",
            "2,2,7",
        ])
        .run()
        .success();
    let line = out.stdout().lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let routes = v["routes"].as_array().unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(names, ["Rust API", "C ABI"]);
    for r in routes {
        assert_eq!(r["latencies_ms"].as_array().unwrap().len(), 2);
        let q = |k: &str| r[k].as_f64().unwrap();
        assert!(
            0.0 < q("p50_ms") && q("p50_ms") <= q("p95_ms") && q("p95_ms") <= q("p99_ms") && q("p99_ms") <= q("max_ms")
        );
        assert!(q("network_ms") > 0.0 && q("network_ms") < q("max_ms"), "{r}");
        assert!((0.0..1.0).contains(&q("overhead_share")), "{r}");
    }
    assert_eq!(v["control"]["each_ms"].as_array().unwrap().len(), 2);
    Fmseg::new()
        .args(["bench", "--latency", "--series-dims", "96,80", "--threads", "2"])
        .run()
        .fails_naming(&["--series-dims"]);
}
