//! The PyTorch baseline that the GPU benchmarks compare against, checked on the CPU:
//! `scripts/torch_parity.py` (the network of `scripts/torch_unet25d.py` against every reference
//! case's logits, attention maps and stage probes, and the sliding window of
//! `scripts/torch_study.py` against MONAI's logits of pipeline_case1) and the study timing
//! `scripts/gpu_bench_torch.py --study` in a minimal CPU configuration.
//!
//! Needs a Python with torch, numpy and safetensors, named by `FMSEG_PYTHON`. Without one the
//! tests print SKIPPED and pass, unless `FMSEG_REQUIRE_TORCH=1` (`.ci/run` installs torch and
//! sets both): then a missing interpreter or torch is a failure.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// PyTorch takes every core: the two tests run one after the other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The interpreter, probed once (importing torch takes seconds).
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON.get_or_init(find_python).clone()
}

fn find_python() -> Option<PathBuf> {
    let required = std::env::var("FMSEG_REQUIRE_TORCH").is_ok_and(|v| v == "1");
    let Some(py) = std::env::var_os("FMSEG_PYTHON") else {
        assert!(!required, "FMSEG_REQUIRE_TORCH=1 but FMSEG_PYTHON is not set");
        eprintln!("SKIPPED: the PyTorch baseline needs FMSEG_PYTHON (a Python with torch, numpy, safetensors)");
        return None;
    };
    let probe = Command::new(&py).args(["-c", "import torch, numpy, safetensors"]).output();
    let why = match &probe {
        Ok(o) if o.status.success() => return Some(PathBuf::from(py)),
        // The exception's last line ("ModuleNotFoundError: No module named 'torch'").
        Ok(o) => {
            String::from_utf8_lossy(&o.stderr).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string()
        }
        Err(e) => e.to_string(),
    };
    let msg = format!("FMSEG_PYTHON={} cannot import torch, numpy, safetensors: {why}", Path::new(&py).display());
    assert!(!required, "FMSEG_REQUIRE_TORCH=1 but {msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn run(py: &Path, args: &[&str]) -> (Output, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(py)
        .args(args)
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", py.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    (out, text)
}

#[test]
fn torch_baseline_matches_the_reference_fixtures() {
    let Some(dir) = common::fixtures_dir() else { return };
    let Some(py) = python() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());

    // A missing fixture directory is exit status 2, not a pass.
    let (out, _) = run(&py, &["scripts/torch_parity.py", "--fixtures", "/nonexistent/fmseg-fixtures"]);
    assert_eq!(out.status.code(), Some(2), "missing fixtures must fail with status 2");

    let t0 = std::time::Instant::now();
    let (out, text) = run(&py, &["scripts/torch_parity.py", "--fixtures", &dir.to_string_lossy()]);
    eprintln!("torch_parity.py: {:.1} s", t0.elapsed().as_secs_f64());
    assert!(out.status.success(), "torch_parity.py failed ({}):\n{text}", out.status);
    let checks: Vec<&str> = text.lines().filter(|l| l.starts_with("PARITY ")).collect();
    let n: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("TORCH PARITY ok: ")?.strip_suffix(" checks")?.parse().ok())
        .unwrap_or_else(|| panic!("no 'TORCH PARITY ok: N checks' line:\n{text}"));
    assert_eq!(n, checks.len(), "every check prints one line");
    assert!(checks.iter().all(|l| l.ends_with(" ok")), "{checks:#?}");
    // Every reference case and the pipeline case were compared, not just the mocks.
    for want in [
        "case_seed0_192x192x16 logits",
        "case_seed0_192x192x16 w2",
        "case_seed0_192x192x16 12 stage probes",
        "case_seed0_200x232x18 logits",
        "case_seed0_200x232x18 w0",
        "pipeline_case1 sliding-window logits",
        "sliding window vs MONAI",
        "TTA + fold ensemble",
    ] {
        assert!(checks.iter().any(|l| l.contains(want)), "no check of {want}:\n{text}");
    }
}

#[test]
fn torch_study_times_a_fold_ensemble_on_the_cpu() {
    let Some(py) = python() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The network needs windows of at least 192x192x16 (the context block pools by 12 and 8 at
    // 1/16 and 1/2 scale): one window per pass, two folds, no TTA rounds keeps this to two
    // forward passes. The TTA itself is checked by torch_parity.py on mock predictors.
    let args = [
        "scripts/gpu_bench_torch.py",
        "--study",
        "--device",
        "cpu",
        "--study-dims",
        "192,192,16",
        "--folds",
        "2",
        "--tta-rounds",
        "0",
        "--variants",
        "full",
        "--iters",
        "1",
        "--warmup",
        "0",
    ];
    let (out, text) = run(&py, &args);
    assert!(out.status.success(), "gpu_bench_torch.py --study failed ({}):\n{text}", out.status);
    let line = text
        .lines()
        .find(|l| l.starts_with("TORCH STUDY mode="))
        .unwrap_or_else(|| panic!("no 'TORCH STUDY mode=...' line:\n{text}"));
    let field = |k: &str| -> &str {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {k}= in {line}"))
    };
    assert_eq!(field("mode"), "fp32-eager-contiguous");
    assert_eq!(field("dims"), "192x192x16");
    assert_eq!((field("folds"), field("passes"), field("windows")), ("2", "2", "2"));
    let ms: f64 = field("ms").parse().unwrap();
    assert!(ms > 0.0 && ms.is_finite(), "{line}");
    assert!(text.contains("cpu, "), "the header names the device:\n{text}");

    // A window the network cannot take is an error with a message, not a traceback.
    let (out, text) = run(&py, &["scripts/gpu_bench_torch.py", "--study", "--device", "cpu", "--roi", "96,96,16"]);
    assert!(!out.status.success() && text.contains("at least 192x192x16") && !text.contains("Traceback"), "{text}");
}
