//! The CPU engine is the reference network: both forward fixtures (192x192x16 and the odd-sized
//! 200x232x18, which exercises floor pooling and replicate padding), loaded from the real
//! PyTorch checkpoint. Tolerance from the fixtures' README: relative L2 1e-4 for the logits,
//! the attention maps and every probe (sampled values, channel means and population stds).

use crate::common;

use fmseg::backend::cpu::CpuBackend;
use fmseg::engine::Engine;
use fmseg::model::PROBE_STAGES;
use fmseg::tensor::{rel_l2, HostTensor};

const TOL: f64 = 1e-4;

fn run_case(name: &str) {
    let (Some(case_path), Some(weights)) = (common::fixture(name), common::fixture("weights_seed0.pth")) else {
        return;
    };
    let case = common::Case::open(&case_path);
    let sd = fmseg::weights::load_canonical(&weights).expect("reference checkpoint loads");
    let engine = Engine::new(CpuBackend::new(0).unwrap(), &sd).unwrap();
    let input = case.f32("input");
    let mut probes: Vec<(String, HostTensor)> = Vec::new();
    let out = engine
        .forward_probed(&input, &mut |n, t| {
            probes.push((n.to_string(), t));
            Ok(())
        })
        .unwrap();
    let names: Vec<&str> = probes.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, PROBE_STAGES, "every probe stage reported, in order");
    let mut failures = Vec::new();
    for (stage, t) in &probes {
        let shape: Vec<usize> = case.i64(&format!("probe.{stage}.shape")).iter().map(|&v| v as usize).collect();
        assert_eq!(&t.shape[1..], &shape[..], "{stage}: shape");
        let idx = case.i64(&format!("probe.{stage}.idx"));
        let got: Vec<f32> = idx.iter().map(|&i| t.data[i as usize]).collect();
        let e_val = common::rel_l2_f64(&got, &case.f64(&format!("probe.{stage}.val")));
        let (c, vox) = (t.shape[1], t.shape[2..].iter().product::<usize>());
        let (mut mean, mut std) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for ch in 0..c {
            let v = &t.data[ch * vox..][..vox];
            let m = v.iter().map(|&x| x as f64).sum::<f64>() / vox as f64;
            mean.push(m as f32);
            std.push((v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / vox as f64).sqrt() as f32);
        }
        let e_mean = common::rel_l2_f64(&mean, &case.f64(&format!("probe.{stage}.channel_mean")));
        let e_std = common::rel_l2_f64(&std, &case.f64(&format!("probe.{stage}.channel_std")));
        eprintln!("{name} {stage:16} values {e_val:.2e} means {e_mean:.2e} stds {e_std:.2e}");
        for (what, e) in [("values", e_val), ("channel means", e_mean), ("channel stds", e_std)] {
            if !(e < TOL) {
                failures.push(format!("probe {stage} {what}: {e:.3e}"));
            }
        }
    }
    for (key, t) in [("logits", &out.logits), ("w0", &out.w0), ("w1", &out.w1), ("w2", &out.w2)] {
        let want = case.f32(key);
        assert_eq!(t.shape, want.shape, "{key}: shape");
        let e = rel_l2(&t.data, &want.data);
        eprintln!("{name} {key}: relative L2 {e:.3e}");
        if !(e < TOL) {
            failures.push(format!("{key}: {e:.3e}"));
        }
    }
    assert!(failures.is_empty(), "{name}: beyond {TOL:.0e}: {failures:?}");
}

#[test]
fn reference_case_192x192x16() {
    run_case("case_seed0_192x192x16.safetensors");
}

#[test]
fn reference_case_200x232x18_odd_sizes() {
    run_case("case_seed0_200x232x18.safetensors");
}
