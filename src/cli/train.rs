//! `fmseg train --data ... --out RUN`: k-fold training of the network with the reference's
//! recipe, resumable (`--resume`), with a progress bar and a per-epoch summary on stderr.
//!
//! `RUN/fold-k/` holds `last.safetensors` and `optimizer.safetensors` (committed together each
//! epoch), `best.safetensors` (best validation Dice), `metrics.csv`; `RUN/run.json` the settings.
//! Checkpoints use the reference's key names: PyTorch loads them with `load_state_dict`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use crate::engine::Device;
use crate::pipeline::preprocess::PreprocessConfig;
use crate::train::data::{Dataset, Source};
use crate::train::run_dir::{RunDir, RunSpec};
use crate::train::trainer::{self, Event, Init, TrainConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    Reference,
    CpuBudget,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training data: a directory of `<id>_MRI.nii.gz` + `<id>_seg.nii.gz` pairs, a directory of
    /// case folders (a DICOM series and `<id>_seg.nii.gz` or `mask.nii.gz` each), or synthetic
    /// studies generated on the fly: `phantom:N` (seeds 0..N) or `phantom:A..B`.
    #[arg(long)]
    pub data: String,
    /// Run directory (created; an existing run needs --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// The recipe every setting below defaults to: `reference` (the paper's: 4 folds, 400
    /// epochs, lr 5e-4, 2 volumes x 3 crops, dropout 0.2) or `cpu-budget` (the bundled weights'
    /// recipe for 2-core machines: fold 0 of 10, lr 1e-3 after a 100-step warm-up, 1 volume x 2
    /// crops, no dropout, intensity augmentation, 25-step epochs; weights/README.md).
    #[arg(long, value_enum, default_value_t = Preset::Reference)]
    pub preset: Preset,
    /// Cross-validation folds (reference 4, cpu-budget 10).
    #[arg(long)]
    pub folds: Option<usize>,
    /// Train this fold only (0-based); all folds in the reference recipe, fold 0 in cpu-budget.
    #[arg(long)]
    pub fold: Option<usize>,
    /// Epochs per fold (both recipes: 400).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Continue the run in --out from its last finished epoch.
    #[arg(long)]
    pub resume: bool,
    /// cpu (auto also means the CPU: training on the GPU is not implemented yet).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Starting weights (.pth, .safetensors, .fmw); freshly initialised from --seed otherwise.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Seed of the initial weights, the epoch order and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// AdamW learning rate, halved every --lr-step steps (reference 5e-4, cpu-budget 1e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Steps between halvings of the rate (reference 3800, cpu-budget 6000).
    #[arg(long)]
    pub lr_step: Option<u64>,
    /// Linear warm-up of the rate over the first this many steps (reference 0, cpu-budget 100).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Volumes per batch (reference 2 volumes x 3 crops = 6 patches per step; cpu-budget 1 x 2).
    #[arg(long)]
    pub batch_volumes: Option<usize>,
    /// Dropout3d rate of the encoder and decoder blocks (reference 0.2; its context block and
    /// channel attention always drop at 0.2; cpu-budget: 0 everywhere).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Clip the global gradient norm (off by default, as in the reference).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Validate every this many epochs, and after the last (reference 2, cpu-budget 4).
    #[arg(long)]
    pub val_interval: Option<u64>,
    /// Cap the steps of each epoch (reference: whole epochs; cpu-budget 25).
    #[arg(long)]
    pub max_steps_per_epoch: Option<usize>,
    /// CPU threads (0 = all cores; more than the cores are capped to them).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    // the tape differentiates the CPU ops only: auto means the CPU here
    if a.device == Device::Cuda {
        bail!("training on the GPU is not implemented yet: use --device cpu");
    }
    let source = Source::parse(&a.data).with_context(|| format!("--data {}", a.data))?;
    let dataset = Arc::new(Dataset::from_source(&source, PreprocessConfig::default())?);
    let mut cfg = match a.preset {
        Preset::Reference => TrainConfig::reference(400),
        Preset::CpuBudget => TrainConfig::cpu_budget(400),
    };
    if let Some(v) = a.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = a.folds {
        cfg.folds = v;
        // a fold chosen by the preset may not exist with the user's fold count
        if cfg.fold.is_some_and(|k| k >= v) {
            cfg.fold = None;
        }
    }
    if a.fold.is_some() {
        cfg.fold = a.fold;
    }
    if let Some(v) = a.lr {
        cfg.adamw.lr = v;
    }
    if let Some(v) = a.lr_step {
        cfg.lr_step = v;
    }
    if let Some(v) = a.warmup {
        cfg.warmup_steps = v;
    }
    if a.clip.is_some() {
        cfg.clip = a.clip;
    }
    if let Some(v) = a.dropout {
        cfg.dropout = v;
    }
    if let Some(v) = a.val_interval {
        cfg.val_interval = v;
    }
    if a.max_steps_per_epoch.is_some() {
        cfg.max_steps_per_epoch = a.max_steps_per_epoch;
    }
    if let Some(v) = a.batch_volumes {
        cfg.loader.volumes_per_batch = v;
    }
    if dataset.len() < cfg.folds {
        bail!("--data {}: {} cases cannot be split into {} folds", a.data, dataset.len(), cfg.folds);
    }
    cfg.threads = a.threads;
    cfg.loader.seed = a.seed;
    let init = match &a.weights {
        Some(p) => Init::Weights(crate::weights::load_canonical(p)?),
        None => Init::Seed(a.seed),
    };
    let mut config = cfg.to_json();
    config["data"] = serde_json::json!(a.data);
    config["preset"] = serde_json::json!(format!("{:?}", a.preset));
    config["init"] =
        serde_json::json!(a.weights.as_ref().map_or(format!("seed {}", a.seed), |p| p.display().to_string()));
    let spec = RunSpec { command: std::env::args().collect(), config };
    let run = RunDir::open(&a.out, &spec, a.resume)?;
    eprintln!(
        "fmseg train: {} cases from {}, {} folds, {} epochs, CPU ({} threads), run {}{}",
        dataset.len(),
        a.data,
        cfg.folds,
        cfg.epochs,
        if a.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { a.threads },
        a.out.display(),
        if run.resumed() { " (resumed)" } else { "" }
    );
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut on = |e: Event<'_>| match e {
        Event::FoldStart { fold, train, val, resumed_epoch } => {
            eprintln!("fold {fold}: {train} training and {val} validation cases, starting after epoch {resumed_epoch}")
        }
        Event::EpochStart { fold, epoch, steps } => {
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed} elapsed, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let b = indicatif::ProgressBar::new(steps as u64).with_style(style.progress_chars("=> "));
            b.set_prefix(format!("fold {fold} epoch {epoch}"));
            bar = Some(b);
        }
        Event::Step { step, steps, loss, seconds } => {
            if let Some(b) = &bar {
                let msg = format!(
                    "loss {:.4} (dice+ce {:.4}, attention {:.4}), {seconds:.1} s/step",
                    loss.total(),
                    loss.dice_ce,
                    loss.attention
                );
                b.set_position(step as u64);
                if b.is_hidden() {
                    // not a terminal (a log file): a plain line every few steps instead
                    if step % 5 == 0 || step == steps {
                        eprintln!("{} step {step}/{steps}: {msg}", b.prefix());
                    }
                } else {
                    b.set_message(msg);
                }
            }
        }
        Event::Validating { done, total } => {
            if let Some(b) = &bar {
                b.set_message(format!("validating {done}/{total}"));
            }
        }
        Event::EpochEnd { fold, row, best } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let val = row.val_dice.map_or("not validated".to_string(), |d| {
                format!(
                    "val Dice {d:.4}, precision {}, recall {}",
                    row.val_precision.map_or("-".into(), |v| format!("{v:.4}")),
                    row.val_recall.map_or("-".into(), |v| format!("{v:.4}"))
                )
            });
            let losses: Vec<String> = row.losses.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            eprintln!(
                "fold {fold} epoch {}: {} steps total, lr {:.3e}, {}, {val}{}, {:.0} s",
                row.epoch,
                row.iteration,
                row.lr,
                losses.join(", "),
                if best { " (best)" } else { "" },
                row.seconds
            );
        }
    };
    trainer::train(dataset, &run, &cfg, &init, &mut on)?;
    eprintln!("fmseg train: done; best weights in {}/fold-*/best.safetensors", a.out.display());
    Ok(())
}
