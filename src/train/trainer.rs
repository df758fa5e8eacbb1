//! The training loop: k-fold cross-validation as the reference runs it, one fold after another;
//! per step the tape's forward and backward, optional gradient clipping, AdamW and StepLR; per
//! epoch (every `val_interval`, and the last) sliding-window validation on the fold's held-out
//! cases; each epoch committed atomically to the run directory, so a killed run resumes at its
//! last finished epoch and, the batches being a function of (seed, epoch), continues exactly.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::cpu::CpuBackend;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::init::SplitMix;
use crate::pipeline::metrics::{Confusion, Summary};
use crate::pipeline::window::{sliding_window, WindowConfig};
use crate::tensor::{numel, HostTensor};
use crate::train::checkpoint::Progress;
use crate::train::data::Dataset;
use crate::train::folds;
use crate::train::loader::{Loader, LoaderConfig};
use crate::train::optim::{clip_grad_norm, AdamW, AdamWConfig, ParamSet, StepLR};
use crate::train::run_dir::{MetricsRow, RunDir};
use crate::train::step::{self, LossTerms};
use crate::train::tape::{Dropout, TapeBackend};

/// The reference's hard-coded Dropout3d rate in the context block and the channel attention.
pub const FIXED_DROPOUT: f32 = 0.2;
use crate::weights::StateDict;

/// Everything that defines a run (stored in `run.json`; a resume must match it).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub folds: usize,
    /// Train only this fold (else all, in order).
    pub fold: Option<usize>,
    pub epochs: u64,
    pub adamw: AdamWConfig,
    /// StepLR: halve (`lr_gamma`) every `lr_step` optimiser steps.
    pub lr_step: u64,
    pub lr_gamma: f64,
    /// Linear learning-rate warm-up over the first this many steps (0 in the reference).
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (off when `None`, as in the reference).
    pub clip: Option<f64>,
    /// Validate every this many epochs (and after the last).
    pub val_interval: u64,
    /// Stop an epoch after this many steps (for smoke runs; `None` = the whole epoch).
    pub max_steps_per_epoch: Option<usize>,
    pub loader: LoaderConfig,
    /// Dropout3d rate of the encoder and decoder blocks (the context block and channel
    /// attention use `fixed_dropout`).
    pub dropout: f32,
    /// Dropout3d rate of the context block and the channel attention (the reference
    /// hard-codes [`FIXED_DROPOUT`]).
    pub fixed_dropout: f32,
    /// CPU threads of the engine (0 = all).
    pub threads: usize,
}

impl TrainConfig {
    /// The reference's recipe.
    pub fn reference(epochs: u64) -> Self {
        TrainConfig {
            folds: 4,
            fold: None,
            epochs,
            adamw: AdamWConfig::default(),
            lr_step: 3800,
            lr_gamma: 0.5,
            warmup_steps: 0,
            clip: None,
            val_interval: 2,
            max_steps_per_epoch: None,
            loader: LoaderConfig::default(),
            dropout: 0.2,
            fixed_dropout: FIXED_DROPOUT,
            threads: 0,
        }
    }

    /// The recipe the bundled weights were trained with on this project's 2-core machines
    /// (`fmseg train --preset cpu-budget`; weights/README.md): the reference's network, loss and
    /// optimiser, with what a budget of a few thousand patches needs: a higher rate after a
    /// warm-up, one volume and two crops per step (three of four centred on FM), no dropout,
    /// in-plane rotation and scaling, stronger noise, and intensity augmentation for contrasts
    /// this project's generator does not make. Short epochs (a checkpoint every 25 steps) so an
    /// interrupted run loses little.
    pub fn cpu_budget(epochs: u64) -> Self {
        use crate::train::augment::{AffineAug, IntensityAug};
        let mut c = TrainConfig::reference(epochs);
        c.folds = 10;
        c.fold = Some(0);
        c.adamw.lr = 1e-3;
        c.warmup_steps = 100;
        c.lr_step = 6000;
        c.val_interval = 4;
        c.max_steps_per_epoch = Some(25);
        c.dropout = 0.0;
        c.fixed_dropout = 0.0;
        c.loader.volumes_per_batch = 1;
        let a = &mut c.loader.augment;
        a.crops = 2;
        a.pos = 3.0;
        a.neg = 1.0;
        a.affine = AffineAug { prob: 0.3, rotate_range: [0.0, 0.0, 0.26], scale_range: [0.15, 0.15, 0.0] };
        a.noise_prob = 0.3;
        a.noise_std = 0.1;
        a.intensity = IntensityAug {
            scale_shift_prob: 0.5,
            scale: 0.2,
            shift: 0.2,
            gamma_prob: 0.3,
            gamma: [0.7, 1.5],
            bias_prob: 0.3,
            bias: 0.3,
        };
        c
    }

    /// The settings that must not change across a resume, as JSON. (`epochs` is not one of
    /// them: a finished run can be resumed with more epochs.)
    pub fn to_json(&self) -> serde_json::Value {
        let a = &self.loader.augment;
        serde_json::json!({
            "folds": self.folds,
            "fold": self.fold,
            "lr": self.adamw.lr,
            "betas": [self.adamw.beta1, self.adamw.beta2],
            "eps": self.adamw.eps,
            "weight_decay": self.adamw.weight_decay,
            "lr_step": self.lr_step,
            "lr_gamma": self.lr_gamma,
            "warmup_steps": self.warmup_steps,
            "fixed_dropout": self.fixed_dropout,
            "clip": self.clip,
            "val_interval": self.val_interval,
            "max_steps_per_epoch": self.max_steps_per_epoch,
            "volumes_per_batch": self.loader.volumes_per_batch,
            "dropout": self.dropout,
            "seed": self.loader.seed,
            "augment": format!("{a:?}"),
        })
    }
}

/// What the loop reports as it goes.
pub enum Event<'a> {
    FoldStart { fold: usize, train: usize, val: usize, resumed_epoch: u64 },
    EpochStart { fold: usize, epoch: u64, steps: usize },
    Step { step: usize, steps: usize, loss: LossTerms, seconds: f64 },
    Validating { done: usize, total: usize },
    EpochEnd { fold: usize, row: &'a MetricsRow, best: bool },
}

/// The starting weights of a fold that has no checkpoint yet.
pub enum Init {
    Weights(StateDict),
    Seed(u64),
}

/// Trains the folds of `dataset` into `run`.
pub fn train(
    dataset: Arc<Dataset>,
    run: &RunDir,
    cfg: &TrainConfig,
    init: &Init,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    cfg.adamw.validate()?;
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(Error::Value(format!("--dropout {}: must be in [0, 1)", cfg.dropout)));
    }
    if cfg.epochs == 0 || cfg.val_interval == 0 {
        return Err(Error::Value("--epochs and --val-interval must be at least 1".into()));
    }
    let folds: Vec<usize> = match cfg.fold {
        Some(k) => vec![k],
        None => (0..cfg.folds).collect(),
    };
    let cpu = CpuBackend::new(cfg.threads)?;
    let tape = TapeBackend::new(cpu);
    if !(0.0..1.0).contains(&cfg.fixed_dropout) {
        return Err(Error::Value(format!("fixed dropout {}: must be in [0, 1)", cfg.fixed_dropout)));
    }
    let sched = StepLR::new(cfg.adamw.lr, cfg.lr_step, cfg.lr_gamma)?.with_warmup(cfg.warmup_steps);
    let layout = ParamSet::network_layout();
    for k in folds {
        let (train_idx, val_idx) = folds::folds(dataset.len(), cfg.folds, k)?;
        let fold_dir = run.fold(k)?;
        let (mut params, mut opt, mut progress) = match fold_dir.load(&layout)? {
            Some(c) => (c.params, c.optimizer, c.progress),
            None => {
                let sd = match init {
                    Init::Weights(sd) => sd.clone(),
                    Init::Seed(s) => crate::model::init::random_state_dict(*s),
                };
                let params = ParamSet::from_network_state_dict(&sd, std::path::Path::new("initial weights"))?;
                let opt = AdamW::new(cfg.adamw, &params)?;
                (params, opt, Progress::default())
            }
        };
        on(Event::FoldStart { fold: k, train: train_idx.len(), val: val_idx.len(), resumed_epoch: progress.epoch });
        let loader = Loader::new(dataset.clone(), train_idx, cfg.loader.clone())?;
        while progress.epoch < cfg.epochs {
            let epoch = progress.epoch + 1;
            let t_epoch = Instant::now();
            let planned = loader.batches_per_epoch();
            let steps = cfg.max_steps_per_epoch.map_or(planned, |m| m.min(planned));
            on(Event::EpochStart { fold: k, epoch, steps });
            let mut sums = [0f64; 2];
            let mut lr = sched.lr(progress.iteration);
            for (i, batch) in loader.epoch(epoch).take(steps).enumerate() {
                let batch = batch?;
                let t = Instant::now();
                // Masks from (seed, step): a resumed run draws the same ones.
                let mut mix = SplitMix(cfg.loader.seed ^ progress.iteration.wrapping_mul(0xD1B5_4A32_D192_ED03));
                tape.set_dropout(Some(Dropout { p: cfg.dropout, fixed: cfg.fixed_dropout, seed: mix.next_u64() }));
                let r = step::forward_backward(
                    &tape,
                    &params.to_state_dict(),
                    &batch.image,
                    &batch.label,
                    step::InputGrad::Skipped,
                )?;
                let total = r.loss.total();
                if !total.is_finite() {
                    return Err(Error::Value(format!(
                        "fold {k} epoch {epoch} step {}: the loss is {total} (diverged; try a lower --lr or --clip)",
                        i + 1
                    )));
                }
                let mut grads = gradients_as(&params, r.grads)?;
                if let Some(max) = cfg.clip {
                    clip_grad_norm(&mut grads, max);
                }
                lr = sched.lr(progress.iteration);
                opt.step(&mut params, &grads, lr)?;
                progress.iteration += 1;
                sums[0] += r.loss.dice_ce;
                sums[1] += r.loss.attention;
                on(Event::Step { step: i + 1, steps, loss: r.loss, seconds: t.elapsed().as_secs_f64() });
            }
            progress.epoch = epoch;
            let validate = epoch % cfg.val_interval == 0 || epoch == cfg.epochs;
            let summary = if validate && !val_idx.is_empty() {
                Some(validate_fold(&dataset, &val_idx, &params.to_state_dict(), cfg.threads, on)?)
            } else {
                None
            };
            let row = MetricsRow {
                epoch,
                iteration: progress.iteration,
                lr,
                losses: vec![
                    ("dice_ce".into(), sums[0] / steps.max(1) as f64),
                    ("attention".into(), sums[1] / steps.max(1) as f64),
                ],
                val_dice: summary.as_ref().map(|s| s.mean_dice),
                val_precision: summary.as_ref().and_then(|s| s.precision),
                val_recall: summary.as_ref().and_then(|s| s.recall),
                seconds: t_epoch.elapsed().as_secs_f64(),
            };
            let best = fold_dir.commit_epoch(&params, &opt, &mut progress, &row)?;
            on(Event::EpochEnd { fold: k, row: &row, best });
        }
    }
    Ok(())
}

/// The tape's gradients in the parameter set's layout (every distinct parameter must have one).
fn gradients_as(params: &ParamSet, mut grads: std::collections::BTreeMap<String, Vec<f32>>) -> Result<ParamSet> {
    let entries = params
        .iter()
        .map(|(name, t)| {
            let g = grads
                .remove(name)
                .ok_or_else(|| Error::Other(format!("internal: the tape produced no gradient for {name}")))?;
            Ok((name.to_string(), HostTensor::new(t.shape.clone(), g)?))
        })
        .collect::<Result<Vec<_>>>()?;
    ParamSet::new(entries)
}

/// Mean Dice, pooled precision and recall of the argmax of sliding-window inference (the
/// reference's settings) on each held-out case, on the preprocessed grid.
pub fn validate_fold(
    dataset: &Dataset,
    cases: &[usize],
    weights: &StateDict,
    threads: usize,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Summary> {
    let engine = Engine::new(CpuBackend::new(threads)?, weights)?;
    let mut predict = |batch: &HostTensor| engine.logits(batch);
    let mut confusions = Vec::with_capacity(cases.len());
    for (done, &i) in cases.iter().enumerate() {
        on(Event::Validating { done, total: cases.len() });
        let s = dataset.sample(i)?;
        let logits = sliding_window(&s.image, s.dims, &mut predict, &WindowConfig::default(), &mut |_| {})?;
        let vox = numel(s.dims);
        let pred: Vec<u8> = (0..vox).map(|v| (logits.data[vox + v] > logits.data[v]) as u8).collect();
        confusions.push(Confusion::from_masks(&pred, &s.label)?);
    }
    on(Event::Validating { done: cases.len(), total: cases.len() });
    Ok(Summary::of(&confusions))
}
