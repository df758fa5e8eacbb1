//! Training the axSpA classifier on the gradient tape: binary cross-entropy with the positive
//! class weighted by `negatives / positives` of the training split, AdamW (lr 1e-3 by
//! default), dropout before the head, left-right flips and intensity jitter, a stratified
//! train/validation split, and after every epoch a validation AUC, a line in `metrics.csv`,
//! the state (`state.safetensors` + `state.json`: parameters, AdamW moments, epoch) and, when
//! the validation AUC is the best so far, `best.safetensors`. A run directory that holds a
//! state continues from it (the same examples and configuration required).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::catalog::{ClassifierSpec, CLINICAL_FEATURES};
use crate::model::classifier::Classifier;
use crate::model::init::{random_state_dict_for, SplitMix};
use crate::pipeline::classifier_input::ClassifierCrop;
use crate::pipeline::stats;
use crate::tensor::{numel, HostTensor};
use crate::train::optim::{AdamW, AdamWConfig, ParamSet};
use crate::train::tape::{Dropout, TapeBackend};
use crate::weights::{self, DType, Format, StateDict};

/// One labelled case, ready for the network.
#[derive(Clone, Debug)]
pub struct Example {
    pub id: String,
    pub crop: ClassifierCrop,
    /// `true`: axSpA.
    pub label: bool,
    pub clinical: [f32; CLINICAL_FEATURES],
}

/// The recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierTrainConfig {
    /// Train the image+clinical variant (else image only).
    pub clinical: bool,
    /// The paper's 300 by default.
    pub epochs: u64,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Dropout on the pooled features before the head.
    pub dropout: f32,
    /// Share of each class held out for validation.
    pub val_fraction: f64,
    /// Initial weights, split, shuffling, augmentation and dropout follow from it.
    pub seed: u64,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        ClassifierTrainConfig {
            clinical: false,
            epochs: 300,
            batch: 8,
            lr: 1e-3,
            weight_decay: 1e-2,
            dropout: 0.3,
            val_fraction: 0.2,
            seed: 0,
        }
    }
}

/// One epoch's line of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    /// `None` when the validation split lacks a class.
    pub val_auc: Option<f64>,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RunState {
    config: ClassifierTrainConfig,
    /// Ids of the examples, in order (a resumed run must see the same set).
    ids: Vec<String>,
    epochs_done: u64,
    adam_steps: u64,
    best: Option<EpochMetrics>,
}

/// The training and validation indices: each class shuffled by the seed, its first
/// `round(val_fraction * n)` held out (at least one of each class when the class has two).
pub fn split(labels: &[bool], val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in [true, false] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        shuffle(&mut idx, seed ^ class as u64);
        let mut k = (val_fraction * idx.len() as f64).round() as usize;
        if val_fraction > 0.0 && idx.len() >= 2 {
            k = k.max(1);
        }
        val.extend_from_slice(&idx[..k.min(idx.len())]);
        train.extend_from_slice(&idx[k.min(idx.len())..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

fn shuffle(v: &mut [usize], seed: u64) {
    let mut rng = SplitMix(seed ^ 0x5EED_C1A5);
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Class-weighted binary cross-entropy on logits, mean over the batch, and its gradient:
/// `l = -(w y log s(z) + (1 - y) log(1 - s(z)))`, `dl/dz = w y (s - 1) + (1 - y) s`.
pub fn weighted_bce(logits: &[f32], labels: &[bool], pos_weight: f64) -> (f64, Vec<f32>) {
    let n = logits.len().max(1) as f64;
    let (mut loss, mut grad) = (0f64, Vec::with_capacity(logits.len()));
    for (&z, &y) in logits.iter().zip(labels) {
        let z = z as f64;
        // log s(z) = -softplus(-z), log(1 - s(z)) = -softplus(z), stable for any z.
        let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
        let s = 1.0 / (1.0 + (-z).exp());
        if y {
            loss += pos_weight * softplus(-z);
            grad.push((pos_weight * (s - 1.0) / n) as f32);
        } else {
            loss += softplus(z);
            grad.push((s / n) as f32);
        }
    }
    (loss / n, grad)
}

/// The network input of a batch: `(N, 2, 192, 192, 16)` and `(N, 9, 1, 1, 1)`.
pub fn batch_tensors(crops: &[&ClassifierCrop], clinical: &[[f32; CLINICAL_FEATURES]]) -> (HostTensor, HostTensor) {
    let n = crops.len();
    let d = crops.first().map_or([0; 3], |c| c.dims);
    let mut data = Vec::with_capacity(n * 2 * numel(d));
    for c in crops {
        data.extend(c.tensor().data);
    }
    let x = HostTensor { shape: vec![n, 2, d[0], d[1], d[2]], data };
    let c = HostTensor {
        shape: vec![n, CLINICAL_FEATURES, 1, 1, 1],
        data: clinical.iter().flat_map(|c| c.iter().copied()).collect(),
    };
    (x, c)
}

/// Left-right flip with probability 1/2, intensity `a x + b` with `a` in [0.9, 1.1] and `b` in
/// [-0.1, 0.1] (the ROI map follows the image; outside the mask it stays 0).
fn augment(c: &ClassifierCrop, rng: &mut SplitMix) -> ClassifierCrop {
    let mut out = if rng.unit() < 0.5 { c.flipped_left_right() } else { c.clone() };
    let (a, b) = (0.9 + 0.2 * rng.unit() as f32, rng.symmetric(0.1));
    out.image.iter_mut().for_each(|v| *v = a * *v + b);
    out
}

fn layout(spec: &ClassifierSpec) -> Vec<(String, Vec<usize>)> {
    spec.tensor_keys()
}

fn param_set(spec: &ClassifierSpec, sd: &StateDict, path: &Path) -> Result<ParamSet> {
    ParamSet::from_state_dict(sd, &layout(spec), path)
}

/// Logits of `idx` on the CPU engine (no tape, no dropout), `batch` at a time.
fn predict(
    cpu: &CpuBackend,
    spec: &ClassifierSpec,
    sd: &StateDict,
    examples: &[Example],
    idx: &[usize],
    batch: usize,
) -> Result<Vec<f32>> {
    let model = Classifier::new(cpu, spec.clone(), sd)?;
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(batch.max(1)) {
        let crops: Vec<&ClassifierCrop> = chunk.iter().map(|&i| &examples[i].crop).collect();
        let clin: Vec<_> = chunk.iter().map(|&i| examples[i].clinical).collect();
        let (x, c) = batch_tensors(&crops, &clin);
        let xd = cpu.upload(&x)?;
        let cd = if spec.clinical > 0 { Some(cpu.upload(&c)?) } else { None };
        let y = model.forward(cpu, &xd, cd.as_ref())?;
        out.extend(cpu.download(&y.logit)?.data);
    }
    Ok(out)
}

/// What a finished (or resumed and finished) run reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainSummary {
    pub run: PathBuf,
    pub epochs_done: u64,
    pub best: Option<EpochMetrics>,
    pub train_cases: usize,
    pub val_cases: usize,
}

/// Trains (or continues) the run in `run_dir` on `examples`. `progress(epoch, metrics)` after
/// each epoch.
pub fn train(
    examples: &[Example],
    cfg: &ClassifierTrainConfig,
    run_dir: &Path,
    threads: usize,
    progress: &mut dyn FnMut(&EpochMetrics),
) -> Result<TrainSummary> {
    if examples.is_empty() {
        return Err(Error::Value("classifier training: no examples".into()));
    }
    if cfg.batch == 0 || cfg.epochs == 0 {
        return Err(Error::Value("classifier training: batch and epochs must be at least 1".into()));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let spec = ClassifierSpec::new(cfg.clinical);
    let labels: Vec<bool> = examples.iter().map(|e| e.label).collect();
    let (train_idx, val_idx) = split(&labels, cfg.val_fraction, cfg.seed);
    let pos = train_idx.iter().filter(|&&i| labels[i]).count();
    let neg = train_idx.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(Error::Value(format!(
            "classifier training: the training split needs both classes ({pos} axSpA, {neg} non-axSpA)"
        )));
    }
    let pos_weight = neg as f64 / pos as f64;
    let ids: Vec<String> = examples.iter().map(|e| e.id.clone()).collect();
    let adam_cfg = AdamWConfig { lr: cfg.lr, weight_decay: cfg.weight_decay, ..AdamWConfig::default() };

    let state_json = run_dir.join("state.json");
    let state_st = run_dir.join("state.safetensors");
    let (mut state, mut params, mut adam) = if state_json.exists() {
        let text = std::fs::read_to_string(&state_json).map_err(|e| Error::io(&state_json, e))?;
        let st: RunState = serde_json::from_str(&text).map_err(|e| Error::format(&state_json, e.to_string()))?;
        // More epochs may be asked for than the run was started with; nothing else may change.
        if (ClassifierTrainConfig { epochs: cfg.epochs, ..st.config.clone() }) != *cfg || st.ids != ids {
            return Err(Error::format(
                &state_json,
                "this run was started with another configuration or other cases: continue it with the same ones, or \
                 give a new --out",
            ));
        }
        let sd = weights::load(&state_st)?;
        let pick = |prefix: &str| {
            let mut out = StateDict::new();
            for (k, t) in sd.iter() {
                if let Some(rest) = k.strip_prefix(prefix) {
                    out.insert(rest.to_string(), t.clone());
                }
            }
            param_set(&spec, &out, &state_st)
        };
        let params = pick("param.")?;
        let adam = AdamW::from_state(adam_cfg, st.adam_steps, pick("exp_avg.")?, pick("exp_avg_sq.")?)?;
        let st = RunState { config: cfg.clone(), ..st };
        (st, params, adam)
    } else {
        let sd = random_state_dict_for(&spec.layers(), cfg.seed);
        let params = param_set(&spec, &sd, run_dir)?;
        let adam = AdamW::new(adam_cfg, &params)?;
        let st = RunState { config: cfg.clone(), ids, epochs_done: 0, adam_steps: 0, best: None };
        (st, params, adam)
    };

    let cpu = CpuBackend::new(threads)?;
    let tape = TapeBackend::new(CpuBackend::new(threads)?);
    while state.epochs_done < cfg.epochs {
        let epoch = state.epochs_done + 1;
        let t0 = std::time::Instant::now();
        let mut order = train_idx.clone();
        shuffle(&mut order, cfg.seed.wrapping_mul(31).wrapping_add(epoch));
        let mut rng = SplitMix(cfg.seed ^ epoch.wrapping_mul(0x9E37_79B9));
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        for chunk in order.chunks(cfg.batch) {
            let crops: Vec<ClassifierCrop> = chunk.iter().map(|&i| augment(&examples[i].crop, &mut rng)).collect();
            let refs: Vec<&ClassifierCrop> = crops.iter().collect();
            let clin: Vec<_> = chunk.iter().map(|&i| examples[i].clinical).collect();
            let y: Vec<bool> = chunk.iter().map(|&i| labels[i]).collect();
            let (x, c) = batch_tensors(&refs, &clin);
            tape.set_dropout(Some(Dropout { p: cfg.dropout, fixed: 0.0, seed: rng.next_u64() }));
            let model = Classifier::new(&tape, spec.clone(), &params.to_state_dict())?;
            let xv = tape.upload(&x)?;
            let cv = if spec.clinical > 0 { Some(tape.upload(&c)?) } else { None };
            let out = model.forward(&tape, &xv, cv.as_ref())?;
            drop(out.features);
            let logits = tape.download(&out.logit)?.data;
            let (loss, dz) = weighted_bce(&logits, &y, pos_weight);
            let seed = HostTensor { shape: vec![chunk.len(), 1, 1, 1, 1], data: dz };
            let g = tape.backward(vec![(&out.logit, tape.cpu().upload(&seed)?)])?;
            let grads = ParamSet::new(
                layout(&spec)
                    .into_iter()
                    .map(|(k, shape)| {
                        let data = g.params.get(&k).cloned().unwrap_or_else(|| vec![0.0; shape.iter().product()]);
                        (k, HostTensor { shape, data })
                    })
                    .collect(),
            )?;
            adam.step(&mut params, &grads, cfg.lr)?;
            loss_sum += loss * chunk.len() as f64;
            seen += chunk.len();
        }
        tape.set_dropout(None);
        let sd = params.to_state_dict();
        let (val_loss, val_auc) = if val_idx.is_empty() {
            (f64::NAN, None)
        } else {
            let z = predict(&cpu, &spec, &sd, examples, &val_idx, cfg.batch)?;
            let y: Vec<bool> = val_idx.iter().map(|&i| labels[i]).collect();
            let (l, _) = weighted_bce(&z, &y, pos_weight);
            let p: Vec<f64> = z.iter().map(|&v| 1.0 / (1.0 + (-v as f64).exp())).collect();
            (l, stats::roc_auc(&p, &y)?)
        };
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            val_loss,
            val_auc,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let better = match (&state.best, m.val_auc) {
            (None, _) => true,
            (Some(b), Some(a)) => b.val_auc.is_none_or(|ba| a > ba || (a == ba && m.val_loss < b.val_loss)),
            (Some(b), None) => b.val_auc.is_none() && m.val_loss < b.val_loss,
        };
        if better {
            weights::save(&sd, &run_dir.join("best.safetensors"), Format::Safetensors, DType::F32)?;
            state.best = Some(m.clone());
        }
        let mut all = StateDict::new();
        for (prefix, set) in [("param.", &params), ("exp_avg.", adam.exp_avg()), ("exp_avg_sq.", adam.exp_avg_sq())] {
            for (k, t) in set.iter() {
                all.insert(format!("{prefix}{k}"), t.clone());
            }
        }
        weights::save(&all, &state_st, Format::Safetensors, DType::F32)?;
        append_metrics(&run_dir.join("metrics.csv"), &m)?;
        state.epochs_done = epoch;
        state.adam_steps = adam.steps();
        let text = serde_json::to_string_pretty(&state).map_err(|e| Error::Other(e.to_string()))?;
        crate::io::write_atomic(&state_json, |w| w.write_all(text.as_bytes()).map_err(|e| Error::io(&state_json, e)))?;
        progress(&m);
    }
    Ok(TrainSummary {
        run: run_dir.to_path_buf(),
        epochs_done: state.epochs_done,
        best: state.best,
        train_cases: train_idx.len(),
        val_cases: val_idx.len(),
    })
}

fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    let auc = m.val_auc.map_or(String::new(), |a| format!("{a:.6}"));
    let mut line = String::new();
    if new {
        line.push_str("epoch,train_loss,val_loss,val_auc,seconds\n");
    }
    line.push_str(&format!("{},{:.6},{:.6},{auc},{:.2}\n", m.epoch, m.train_loss, m.val_loss, m.seconds));
    f.write_all(line.as_bytes()).map_err(|e| Error::io(path, e))
}
