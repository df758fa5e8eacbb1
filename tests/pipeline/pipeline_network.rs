//! The whole clinical pipeline with the real network on the CPU engine: NIfTI -> MONAI
//! preprocessing -> sliding window (roi 192x192x16, overlap 0.5, Gaussian) with
//! `weights_seed0.pth` -> logits against the reference's, and the mask back on the original
//! grid against the reference's. Four 192x192x16 windows: the slowest test of this file set.

use crate::common;

use fmseg::backend::cpu::CpuBackend;
use fmseg::engine::Engine;
use fmseg::io::{nifti, npy};
use fmseg::pipeline::postprocess::{self, Interp};
use fmseg::pipeline::preprocess::{preprocess, PreprocessConfig};
use fmseg::pipeline::window::{sliding_window, WindowConfig};
use fmseg::tensor::{rel_l2, HostTensor};

#[test]
fn end_to_end_logits_and_mask_match_the_reference() {
    let Some(dir) = common::fixtures_dir() else { return };
    let weights = fmseg::weights::load_canonical(&dir.join("weights_seed0.pth")).unwrap();
    let engine = Engine::new(CpuBackend::new(0).unwrap(), &weights).unwrap();
    let img = nifti::read(dir.join("pipeline_case1.nii.gz")).unwrap();
    let p = preprocess(&img, &PreprocessConfig::default()).unwrap();

    let mut model = |x: &HostTensor| engine.logits(x);
    let mut windows = 0;
    let t0 = std::time::Instant::now();
    let logits = sliding_window(&p.volume.data, p.volume.dims, &mut model, &WindowConfig::default(), &mut |pr| {
        windows = pr.total
    })
    .unwrap();
    let secs = t0.elapsed().as_secs_f64();

    let want = npy::read_tensor(dir.join("pipeline_case1_logits.npy")).unwrap();
    assert_eq!(logits.shape, want.shape);
    assert_eq!(windows, 4);
    let err = rel_l2(&logits.data, &want.data);
    eprintln!("sliding window: {windows} windows in {secs:.1} s, logits rel L2 vs reference {err:.3e}");
    assert!(err < 1e-4, "logits rel L2 {err}");

    // argmax back on the original grid: identical except where the reference's logits tie
    let seg = postprocess::postprocess(&logits, &p.chain).unwrap();
    let ref_mask = match npy::read(dir.join("pipeline_case1_mask_original_grid.npy")).unwrap().data {
        npy::NpyData::U8(v) => v,
        d => panic!("expected uint8, got {}", d.dtype_name()),
    };
    let n = want.data.len() / 2;
    let tie: Vec<f32> = (0..n).map(|i| ((want.data[i] - want.data[n + i]).abs() < 1e-3) as u8 as f32).collect();
    let tie = postprocess::to_original(&tie, &p.chain, Interp::Nearest).unwrap();
    let differ: Vec<usize> = (0..ref_mask.len()).filter(|&i| seg.mask.data[i] != ref_mask[i] as f32).collect();
    let outside = differ.iter().filter(|&&i| tie[i] == 0.0).count();
    eprintln!("mask: {} of {} voxels differ, {outside} away from near-ties", differ.len(), ref_mask.len());
    assert_eq!(outside, 0);
}
