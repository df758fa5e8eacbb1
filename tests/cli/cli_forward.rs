//! `fmseg forward` through the real binary: exact logits on the reference case, and clear
//! errors with no output for bad inputs.

use crate::common;
use crate::common::cli::{Fmseg, Run};

use std::path::Path;

use fmseg::io::npy;
use fmseg::tensor::{rel_l2, HostTensor};

/// `fmseg forward` on these files (more arguments can follow).
fn forward(weights: &Path, input: &Path, output: &Path) -> Fmseg {
    Fmseg::new().arg("forward").arg("--weights").arg(weights).arg("--input").arg(input).arg("--output").arg(output)
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
    forward(&weights, &in_path, &out_path).arg("--maps").arg(&maps).args(["--threads", "2"]).run().success();
    let logits = npy::read_tensor(&out_path).unwrap();
    assert_eq!(logits.shape, vec![1, 2, 192, 192, 16]);
    let e = rel_l2(&logits.data, &case.f32("logits").data);
    assert!(e < 1e-4, "logits relative L2 {e:.3e}");
    let w1 = npy::read_tensor(maps.join("w1.npy")).unwrap();
    assert!(rel_l2(&w1.data, &case.f32("w1").data) < 1e-4);
    assert!(maps.join("w0.npy").is_file() && maps.join("w2.npy").is_file());
}

/// The failure contract ([`Run::fails_naming`]), and no output or partial file left.
fn assert_fails_cleanly(out: Run, output: &Path, needle: &str) -> Run {
    let out = out.fails_naming(&[needle]);
    assert!(!output.exists(), "no output on failure");
    let leftovers: Vec<_> =
        std::fs::read_dir(output.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().contains("partial")), "{leftovers:?}");
    out
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
    assert_fails_cleanly(forward(&weights, &p, &out).run(), &out, "rank.npy");

    // Too small for the network.
    let p = d.join("small.npy");
    npy::write_tensor(&p, &HostTensor::zeros(vec![100, 192, 16])).unwrap();
    assert_fails_cleanly(forward(&weights, &p, &out).run(), &out, "smaller than the network's minimum");

    // NaN in the input.
    let p = d.join("nan.npy");
    let mut t = HostTensor::zeros(vec![192, 192, 16]);
    t.data[1234] = f32::NAN;
    npy::write_tensor(&p, &t).unwrap();
    assert_fails_cleanly(forward(&weights, &p, &out).run(), &out, "NaN");

    // Not an npy file.
    let p = d.join("text.npy");
    std::fs::write(&p, "hello").unwrap();
    assert_fails_cleanly(forward(&weights, &p, &out).run(), &out, "text.npy");

    // Missing input.
    assert_fails_cleanly(forward(&weights, &d.join("missing.npy"), &out).run(), &out, "missing.npy");

    // Unreadable weights.
    let good = d.join("good.npy");
    npy::write_tensor(&good, &HostTensor::zeros(vec![192, 192, 16])).unwrap();
    let bad_w = d.join("bad.pth");
    std::fs::write(&bad_w, vec![7u8; 1000]).unwrap();
    assert_fails_cleanly(forward(&bad_w, &good, &out).run(), &out, "bad.pth");

    // --maps naming a file, and an output under a file: refused before the pass runs.
    let file = d.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = assert_fails_cleanly(forward(&weights, &good, &out).arg("--maps").arg(&file).run(), &out, "--maps");
    assert!(!o.stderr().contains("fmseg forward:"), "no pass ran: {o}");
    let under = file.join("y.npy");
    let o = forward(&weights, &good, &under).run().fails_naming(&["cannot write", "a-file/y.npy"]);
    let err = o.stderr();
    assert!(!err.contains("fmseg forward:") && !err.contains(".fmseg-partial"), "{o}");
}
