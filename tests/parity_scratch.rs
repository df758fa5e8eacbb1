//! TEMPORARY development test: reference parity with weights converted by PyTorch into
//! /work/scratch (replaced by tests/parity.rs once the .pth loader lands).

mod common;

use fmseg::backend::cpu::CpuBackend;
use fmseg::engine::Engine;
use fmseg::tensor::{rel_l2, HostTensor};
use fmseg::weights::StateDict;
use safetensors::SafeTensors;

fn load(path: &str) -> Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(k, v)| (k, v.shape().to_vec(), v.data().to_vec(), v.dtype())).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}
fn f64s(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}
fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn run_case(name: &str) {
    let Some(case) = common::fixture(name) else { return };
    let mut sd = StateDict::new();
    for (k, shape, data, _) in load("/work/scratch/weights_seed0.safetensors") {
        sd.insert(k, HostTensor::new(shape, f32s(&data)).unwrap());
    }
    let case = load(case.to_str().unwrap());
    let get = |k: &str| case.iter().find(|t| t.0 == k).unwrap_or_else(|| panic!("no {k}"));
    let input = {
        let t = get("input");
        HostTensor::new(t.1.clone(), f32s(&t.2)).unwrap()
    };
    let engine = Engine::new(CpuBackend::new(0).unwrap(), &sd).unwrap();
    let mut probes = Vec::new();
    let t0 = std::time::Instant::now();
    let out = engine
        .forward_probed(&input, &mut |n, t| {
            probes.push((n.to_string(), t));
            Ok(())
        })
        .unwrap();
    eprintln!("{name}: forward {:.2} s", t0.elapsed().as_secs_f64());
    for (stage, t) in &probes {
        let idx = i64s(&get(&format!("probe.{stage}.idx")).2);
        let val = f64s(&get(&format!("probe.{stage}.val")).2);
        let c = t.shape[1];
        let vox: usize = t.shape[2..].iter().product();
        let got: Vec<f32> = idx.iter().map(|&i| t.data[i as usize]).collect();
        let want: Vec<f32> = val.iter().map(|&v| v as f32).collect();
        let mean_want: Vec<f32> =
            f64s(&get(&format!("probe.{stage}.channel_mean")).2).iter().map(|&v| v as f32).collect();
        let std_want: Vec<f32> =
            f64s(&get(&format!("probe.{stage}.channel_std")).2).iter().map(|&v| v as f32).collect();
        let mut mean = vec![0f32; c];
        let mut stdp = vec![0f32; c];
        let mut stds = vec![0f32; c];
        for ch in 0..c {
            let v = &t.data[ch * vox..][..vox];
            let m = v.iter().map(|&x| x as f64).sum::<f64>() / vox as f64;
            let ss = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>();
            mean[ch] = m as f32;
            stdp[ch] = (ss / vox as f64).sqrt() as f32;
            stds[ch] = (ss / (vox as f64 - 1.0)).sqrt() as f32;
        }
        eprintln!(
            "  {stage:16} samples {:.2e}  mean {:.2e}  std(pop) {:.2e} std(sample) {:.2e}",
            rel_l2(&got, &want),
            rel_l2(&mean, &mean_want),
            rel_l2(&stdp, &std_want),
            rel_l2(&stds, &std_want)
        );
    }
    for (k, t) in [("logits", &out.logits), ("w0", &out.w0), ("w1", &out.w1), ("w2", &out.w2)] {
        let r = get(k);
        let e = rel_l2(&t.data, &f32s(&r.2));
        eprintln!("  {k}: rel L2 {e:.3e}");
    }
}

#[test]
fn scratch_parity_192() {
    run_case("case_seed0_192x192x16.safetensors");
}

#[test]
fn scratch_parity_odd() {
    run_case("case_seed0_200x232x18.safetensors");
}
