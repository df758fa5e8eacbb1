//! The full network through a run directory: the weights file loads as the reference's state
//! dict (aliases included), the `.pth` export round-trips, and resume is bit-exact.

use fmseg::model::init::random_state_dict;
use fmseg::train::checkpoint::Progress;
use fmseg::train::optim::{AdamW, AdamWConfig, ParamSet};
use fmseg::train::run_dir::{export_pth, MetricsRow, RunDir, RunSpec};
use fmseg::weights;
use std::path::Path;

#[test]
fn network_checkpoint_loads_as_reference_state_dict_and_exports_pth() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = random_state_dict(7);
    let mut params = ParamSet::from_network_state_dict(&sd, Path::new("init")).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), &params).unwrap();
    let mut grads = params.zeros_like();
    for (i, t) in grads.tensors_mut().iter_mut().enumerate() {
        t.data.iter_mut().enumerate().for_each(|(j, x)| *x = ((i * 31 + j) % 13) as f32 - 6.0);
    }
    opt.step(&mut params, &grads, 5e-4).unwrap();

    let spec = RunSpec { command: vec!["fmseg".into(), "train".into()], config: serde_json::json!({"epochs": 1}) };
    let run = RunDir::open(&tmp.path().join("run"), &spec, false).unwrap();
    let fold = run.fold(0).unwrap();
    let mut progress = Progress { epoch: 1, iteration: 1, ..Default::default() };
    let row = MetricsRow {
        epoch: 1,
        iteration: 1,
        lr: 5e-4,
        losses: vec![("total".into(), 1.5)],
        val_dice: Some(0.8),
        val_precision: Some(0.7),
        val_recall: Some(0.9),
        seconds: 1.0,
    };
    assert!(fold.commit_epoch(&params, &opt, &mut progress, &row).unwrap());

    // what a PyTorch user loads: every reference key, shared modules equal
    let canon = weights::load_canonical(&fold.best_path()).unwrap();
    let expected = params.to_state_dict();
    assert_eq!(canon.len(), fmseg::model::catalog::tensor_keys().len());
    for (k, t) in expected.iter() {
        assert_eq!(canon.get(k), Some(t), "{k}");
    }
    let pth = tmp.path().join("best.pth");
    export_pth(&fold.best_path(), &pth).unwrap();
    assert_eq!(weights::detect(&pth).unwrap(), weights::Format::Pth);
    let back = weights::load_canonical(&pth).unwrap();
    for (k, t) in expected.iter() {
        assert_eq!(back.get(k), Some(t), "{k}");
    }

    drop(run);
    let run = RunDir::open(&tmp.path().join("run"), &spec, true).unwrap();
    let ck = run.fold(0).unwrap().load(&ParamSet::network_layout()).unwrap().unwrap();
    let bits =
        |s: &ParamSet| -> Vec<u32> { s.tensors().iter().flat_map(|t| t.data.iter().map(|x| x.to_bits())).collect() };
    assert_eq!(bits(&ck.params), bits(&params));
    assert_eq!(bits(ck.optimizer.exp_avg_sq()), bits(opt.exp_avg_sq()));
    assert_eq!(ck.optimizer.steps(), 1);
    assert_eq!(ck.progress.best_dice, Some(0.8));
}
