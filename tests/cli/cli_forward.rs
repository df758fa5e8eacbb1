//! `fmseg forward` through the real binary: exact logits on the reference case, and clear
//! errors with no output for bad inputs.

use crate::common;

use std::path::Path;
use std::process::Command;

use fmseg::io::npy;
use fmseg::tensor::{rel_l2, HostTensor};

fn fmseg(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fmseg")).args(args).output().expect("run fmseg");
    eprintln!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn forward(weights: &Path, input: &Path, output: &Path) -> std::process::Output {
    fmseg(&[
        "forward".as_ref(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        output.as_os_str(),
    ])
}

#[test]
fn forward_reproduces_reference_logits_from_hwd_npy() {
    let (Some(case), Some(weights)) =
        (common::fixture("case_seed0_192x192x16.safetensors"), common::fixture("weights_seed0.pth"))
    else {
        return;
    };
    let case = common::Case::open(&case);
    let dir = tempfile::tempdir().unwrap();
    let input = case.f32("input");
    // (H, W, D) form: the CLI adds the batch and channel axes.
    let hwd = HostTensor::new(input.shape[2..].to_vec(), input.data.clone()).unwrap();
    let in_path = dir.path().join("x.npy");
    npy::write_tensor(&in_path, &hwd).unwrap();
    let out_path = dir.path().join("logits.npy");
    let maps = dir.path().join("maps");
    let out = fmseg(&[
        "forward".as_ref(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--input".as_ref(),
        in_path.as_os_str(),
        "--output".as_ref(),
        out_path.as_os_str(),
        "--maps".as_ref(),
        maps.as_os_str(),
        "--threads".as_ref(),
        "2".as_ref(),
    ]);
    assert!(out.status.success());
    let logits = npy::read_tensor(&out_path).unwrap();
    assert_eq!(logits.shape, vec![1, 2, 192, 192, 16]);
    let e = rel_l2(&logits.data, &case.f32("logits").data);
    assert!(e < 1e-4, "logits relative L2 {e:.3e}");
    let w1 = npy::read_tensor(maps.join("w1.npy")).unwrap();
    assert!(rel_l2(&w1.data, &case.f32("w1").data) < 1e-4);
    assert!(maps.join("w0.npy").is_file() && maps.join("w2.npy").is_file());
}

fn assert_fails_cleanly(out: &std::process::Output, output: &Path, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "stderr should mention {needle:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!output.exists(), "no output on failure");
    let leftovers: Vec<_> =
        std::fs::read_dir(output.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().contains("partial")), "{leftovers:?}");
}

#[test]
fn bad_inputs_fail_with_clear_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("y.npy");
    let weights = d.join("w.safetensors");
    fmseg::weights::save(
        &fmseg::model::init::random_state_dict(3),
        &weights,
        fmseg::weights::Format::Safetensors,
        fmseg::weights::DType::F32,
    )
    .unwrap();

    // Wrong rank.
    let p = d.join("rank.npy");
    npy::write_tensor(&p, &HostTensor::zeros(vec![4, 192, 192, 16])).unwrap();
    assert_fails_cleanly(&forward(&weights, &p, &out), &out, "rank.npy");

    // Too small for the network.
    let p = d.join("small.npy");
    npy::write_tensor(&p, &HostTensor::zeros(vec![100, 192, 16])).unwrap();
    assert_fails_cleanly(&forward(&weights, &p, &out), &out, "smaller than the network's minimum");

    // NaN in the input.
    let p = d.join("nan.npy");
    let mut t = HostTensor::zeros(vec![192, 192, 16]);
    t.data[1234] = f32::NAN;
    npy::write_tensor(&p, &t).unwrap();
    assert_fails_cleanly(&forward(&weights, &p, &out), &out, "NaN");

    // Not an npy file.
    let p = d.join("text.npy");
    std::fs::write(&p, "hello").unwrap();
    assert_fails_cleanly(&forward(&weights, &p, &out), &out, "text.npy");

    // Missing input.
    assert_fails_cleanly(&forward(&weights, &d.join("missing.npy"), &out), &out, "missing.npy");

    // Unreadable weights.
    let good = d.join("good.npy");
    npy::write_tensor(&good, &HostTensor::zeros(vec![192, 192, 16])).unwrap();
    let bad_w = d.join("bad.pth");
    std::fs::write(&bad_w, vec![7u8; 1000]).unwrap();
    assert_fails_cleanly(&forward(&bad_w, &good, &out), &out, "bad.pth");

    // --maps naming a file, and an output under a file: refused before the pass runs.
    let file = d.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = fmseg(&[
        "forward".as_ref(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--input".as_ref(),
        good.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--maps".as_ref(),
        file.as_os_str(),
    ]);
    assert_fails_cleanly(&o, &out, "--maps");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("fmseg forward:"), "no pass ran");
    let under = file.join("y.npy");
    let o = forward(&weights, &good, &under);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cannot write") && err.contains("a-file/y.npy"), "{err}");
    assert!(!err.contains("fmseg forward:") && !err.contains(".fmseg-partial"), "{err}");
}
