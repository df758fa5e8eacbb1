//! The training loop end to end on NIfTI pairs the test writes (one 192x192x16 window each, so
//! a step and a validation are as cheap as the network allows): a run killed after an epoch
//! and resumed ends bit-identical to one that never stopped; the CLI writes checkpoints
//! PyTorch-named and loadable, refuses to overwrite a run, and fails clearly on bad input.

use std::path::Path;
use std::sync::Arc;

use crate::common::cli::Fmseg;

use fmseg::io::nifti::{self, WriteType};
use fmseg::pipeline::preprocess::PreprocessConfig;
use fmseg::tensor::Dims;
use fmseg::train::data::{Dataset, Source};
use fmseg::train::optim::ParamSet;
use fmseg::train::run_dir::{RunDir, RunSpec};
use fmseg::train::trainer::{self, Init, TrainConfig};
use fmseg::volume::{Volume, IDENTITY};

const DIMS: Dims = [192, 192, 16];

/// Four cases on the network's own grid (1 x 1 x 7 mm): a bright ellipsoid lesion, labelled,
/// on a textured background.
fn write_dataset(dir: &Path) {
    let mut a = IDENTITY;
    a[2][2] = 7.0;
    let n: usize = DIMS.iter().product();
    for case in 0..4usize {
        let c = [60 + 20 * case, 100 - 10 * case, 8];
        let mut label = vec![0f32; n];
        let mut image = vec![0f32; n];
        for p in 0..n {
            let (i, j, k) = (p / (DIMS[1] * DIMS[2]), (p / DIMS[2]) % DIMS[1], p % DIMS[2]);
            let d = |x: usize, m: usize| (x as f64 - m as f64).powi(2);
            let inside = d(i, c[0]) + d(j, c[1]) + 16.0 * d(k, c[2]) < 100.0;
            label[p] = inside as u8 as f32;
            image[p] = 100.0 + 300.0 * label[p] + ((i * 7 + j * 13 + k * 3 + case) % 17) as f32;
        }
        let id = format!("case{case}");
        nifti::write(dir.join(format!("{id}_MRI.nii.gz")), &Volume::new(DIMS, image, a).unwrap(), WriteType::F32)
            .unwrap();
        nifti::write(dir.join(format!("{id}_seg.nii.gz")), &Volume::new(DIMS, label, a).unwrap(), WriteType::U8)
            .unwrap();
    }
}

/// A temporary folder holding `data/` with the four cases of [`write_dataset`].
fn dataset() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_dataset(&data);
    (tmp, data)
}

/// The CLI's options for the smallest run: fold 1 of 2, one volume per batch, one step per epoch.
const SMALL_RUN: [&str; 10] =
    ["--folds", "2", "--fold", "1", "--batch-volumes", "1", "--max-steps-per-epoch", "1", "--threads", "2"];

fn config(epochs: u64) -> TrainConfig {
    let mut cfg = TrainConfig::reference(epochs);
    cfg.folds = 2;
    cfg.fold = Some(0);
    cfg.max_steps_per_epoch = Some(1);
    cfg.val_interval = 1;
    cfg.threads = 2;
    cfg.loader.volumes_per_batch = 1;
    cfg.loader.workers = 1;
    cfg.loader.augment.crops = 1;
    cfg.loader.seed = 11;
    cfg
}

fn train(data: &Path, out: &Path, epochs: u64, resume: bool) {
    let cfg = config(epochs);
    let ds = Arc::new(Dataset::from_source(&Source::Nifti(data.to_path_buf()), PreprocessConfig::default()).unwrap());
    let spec = RunSpec { command: vec!["test".into()], config: cfg.to_json() };
    let run = RunDir::open(out, &spec, resume).unwrap();
    trainer::train(ds, &run, &cfg, &Init::Seed(3), &mut |_| {}).unwrap();
}

#[test]
fn killed_and_resumed_run_equals_an_uninterrupted_one() {
    let (tmp, data) = dataset();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&data, &a, 2, false);
    // "Killed" after epoch 1: the same run stopped there, then resumed for epoch 2.
    train(&data, &b, 1, false);
    train(&data, &b, 2, true);
    let layout = ParamSet::network_layout();
    let load =
        |d: &Path| fmseg::train::checkpoint::read_weights(&d.join("fold-0/last.safetensors"), &layout).unwrap().0;
    let (pa, pb) = (load(&a), load(&b));
    let init = ParamSet::from_network_state_dict(&fmseg::model::init::random_state_dict(3), Path::new("init")).unwrap();
    let mut moved = 0;
    for ((name, ta), ((_, tb), (_, t0))) in pa.iter().zip(pb.iter().zip(init.iter())) {
        assert!(ta.data.iter().zip(&tb.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs after resume");
        moved += (ta.data != t0.data) as usize;
    }
    assert_eq!(moved, 143, "two AdamW steps move every parameter (weight decay included)");
    let rows = |d: &Path| -> Vec<String> {
        let csv = std::fs::read_to_string(d.join("fold-0/metrics.csv")).unwrap();
        // Everything but the wall time (last column) must agree.
        csv.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect()
    };
    let (ra, rb) = (rows(&a), rows(&b));
    assert_eq!(ra.len(), 3, "header and two epochs: {ra:?}");
    assert_eq!(ra, rb);
    // Validation ran on the held-out cases every epoch.
    assert!(ra[1].split(',').rev().nth(2).is_some_and(|dice| !dice.is_empty()), "{}", ra[1]);
}

#[test]
fn cli_trains_refuses_overwrite_and_reports_bad_input() {
    let (tmp, data) = dataset();
    let out = tmp.path().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let common = SMALL_RUN;
    let mut args = vec!["train", "--data", d, "--out", o, "--epochs", "1"];
    args.extend(common);
    Fmseg::new().args(&args).run().success().stderr_has(&["fold 1 epoch 1", "val Dice"]);
    // Checkpoints carry the reference's key names, aliases included, and load as weights.
    let best = out.join("fold-1/best.safetensors");
    let sd = fmseg::weights::load(&best).unwrap();
    assert_eq!(sd.len(), fmseg::model::catalog::tensor_keys().len());
    assert!(sd.contains("up_4.attention.conv.0.block.0.weight") && sd.contains("attention_3.conv.0.block.0.weight"));
    fmseg::weights::load_canonical(&best).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("fold-1/metrics.csv")).unwrap().lines().count(), 2);
    // For the reference's code: a .pth with the same tensors.
    let pth = tmp.path().join("best.pth");
    Fmseg::new()
        .args(["convert-weights", best.to_str().unwrap(), pth.to_str().unwrap(), "--dtype", "f32"])
        .run()
        .success();
    let back = fmseg::weights::load(&pth).unwrap();
    for (k, t) in sd.iter() {
        assert_eq!(back.get(k).map(|b| &b.data), Some(&t.data), "{k} survives the .pth export");
    }

    // The same directory again without --resume: refused, nothing changed.
    let before = std::fs::read(out.join("fold-1/last.safetensors")).unwrap();
    Fmseg::new().args(&args).run().fails_naming(&["--resume"]);
    assert_eq!(std::fs::read(out.join("fold-1/last.safetensors")).unwrap(), before);
    // A resume of a finished run with no more epochs does nothing.
    let mut resume = args.clone();
    resume.push("--resume");
    Fmseg::new().args(&resume).run().success();
    assert_eq!(std::fs::read(out.join("fold-1/last.safetensors")).unwrap(), before);

    // Bad input: a clear message, exit status 1, no run directory.
    let missing = tmp.path().join("nope");
    let fresh = tmp.path().join("fresh");
    let (m, f) = (missing.to_str().unwrap(), fresh.to_str().unwrap());
    for (extra, want) in [
        (vec!["--data", m, "--out", f], "nope"),
        (vec!["--data", "phantom:3..1", "--out", f], "phantom"),
        (vec!["--data", d, "--out", f, "--device", "cuda"], "GPU"),
        (vec!["--data", d, "--out", f, "--folds", "9"], "folds"),
    ] {
        let mut a = vec!["train"];
        a.extend(extra);
        Fmseg::new().args(&a).run().fails_naming(&[want]);
        assert!(!fresh.exists(), "{a:?} left a run directory behind");
    }
}

/// kill -9 at ten moments of `fmseg train --resume` on one run directory: every interrupted
/// state is resumable (each next run continues, or is killed, never refuses), and once a last
/// run completes the directory holds exactly what an uninterrupted run writes: the same
/// weights and optimiser state bit for bit, the same metrics rows, and no temporary file.
/// (A round that finishes the run before its kill moment starts the next round afresh, so
/// that every kill lands in unfinished work.)
#[test]
fn train_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    use std::process::Stdio;
    let (tmp, data) = dataset();
    let train = |out: &Path| {
        Fmseg::new()
            .args(["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(SMALL_RUN)
            .args(["--epochs", "2", "--resume"])
    };
    let reference = tmp.path().join("reference");
    let t0 = std::time::Instant::now();
    train(&reference).run().success();
    let full = t0.elapsed().as_secs_f64();

    let run = tmp.path().join("killed");
    let mut state = 0x2545f4914f6cdd1du64;
    let mut killed = 0;
    for round in 0..10 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % 1000) as f64 / 1000.0 * full;
        let mut child = train(&run).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
        std::thread::sleep(std::time::Duration::from_secs_f64(at));
        let _ = child.kill(); // SIGKILL; a run that already finished is not affected
        let out = child.wait_with_output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        if out.status.signal() == Some(9) {
            killed += 1;
        } else {
            assert!(
                out.status.success(),
                "round {round} (kill at {at:.2} s of {full:.2}) did not resume: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::remove_dir_all(&run).unwrap();
        }
    }
    assert!(killed >= 5, "only {killed} of 10 runs were killed before they finished");
    train(&run).run().success(); // the final resume

    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            walk(d).into_iter().map(|p| p.strip_prefix(d).unwrap().display().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(listing(&run), listing(&reference), "the same files as an uninterrupted run");
    for f in ["fold-1/last.safetensors", "fold-1/best.safetensors", "fold-1/optimizer.safetensors"] {
        let (a, b) = (fmseg::weights::load(&reference.join(f)).unwrap(), fmseg::weights::load(&run.join(f)).unwrap());
        assert_eq!(a.len(), b.len(), "{f}");
        for (k, t) in a.iter() {
            let u = b.get(k).unwrap_or_else(|| panic!("{f}: {k} missing"));
            assert!(t.data.iter().zip(&u.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{f}: {k} differs");
        }
    }
    let rows = |d: &Path| -> Vec<String> {
        let csv = std::fs::read_to_string(d.join("fold-1/metrics.csv")).unwrap();
        csv.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect()
    };
    assert_eq!(rows(&run), rows(&reference));
}

/// Every file below `d`, recursively.
fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
