//! The files of one training checkpoint, both safetensors:
//!
//! - weights (`last.safetensors`, `best.safetensors`): the reference's `state_dict()` keys,
//!   shared modules written under both names, F32, so
//!   `model.load_state_dict(safetensors.torch.load_file(path))` works in PyTorch;
//! - optimiser state (`optimizer.safetensors`): `exp_avg.<name>` and `exp_avg_sq.<name>` for
//!   each distinct parameter, and in the header metadata the AdamW hyper-parameters, its step
//!   count and the training [`Progress`] (epoch, iteration, best Dice, the loop's own resume
//!   state).
//!
//! Both carry the same `commit` id in their metadata: a pair from different commits is refused
//! when loading. These writers write straight to the path they are given; the run directory
//! stages and commits them together (`run_dir`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use super::optim::{AdamW, AdamWConfig, ParamSet};
use crate::error::{Error, Result};
use crate::weights::{safetensors_io, DType, StateDict};

/// Metadata value of `fmseg` in a weights checkpoint.
pub const WEIGHTS_KIND: &str = "training-weights";
/// Metadata value of `fmseg` in an optimiser-state file.
pub const OPTIMIZER_KIND: &str = "adamw-state";
/// Version of the optimiser-state layout written here.
pub const OPTIMIZER_VERSION: &str = "1";

const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";

/// Where training stands after a committed epoch: what a resumed run continues from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Epochs completed (1-based number of the last finished epoch; 0 before the first).
    pub epoch: u64,
    /// Optimiser steps taken: the [`StepLR`](super::optim::StepLR) position.
    pub iteration: u64,
    /// Best validation mean Dice so far, and the epoch it was reached in.
    pub best_dice: Option<f64>,
    pub best_epoch: Option<u64>,
    /// The training loop's own state needed to continue exactly (RNG state, loader position,
    /// ...), stored verbatim.
    pub extra: BTreeMap<String, String>,
}

/// A checkpoint loaded back: everything needed to continue training.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub params: ParamSet,
    pub optimizer: AdamW,
    pub progress: Progress,
}

/// Writes `params` as the reference's state dict (aliases as copies) with `meta` plus
/// `fmseg=training-weights` and `commit` in the header.
pub fn write_weights(params: &ParamSet, path: &Path, commit: &str, meta: &[(&str, &str)]) -> Result<()> {
    let mut m: Vec<(&str, &str)> = vec![("fmseg", WEIGHTS_KIND), ("commit", commit)];
    m.extend_from_slice(meta);
    safetensors_io::write(&params.to_state_dict(), path, DType::F32, &m)
}

/// Reads weights written by [`write_weights`] (or any safetensors state dict with the keys of
/// `layout`, aliases allowed): the parameters and the header metadata.
pub fn read_weights(path: &Path, layout: &[(String, Vec<usize>)]) -> Result<(ParamSet, HashMap<String, String>)> {
    let meta = read_metadata(path)?;
    let sd = safetensors_io::load(path)?;
    Ok((ParamSet::from_state_dict(&sd, layout, path)?, meta))
}

/// Writes the AdamW state and `progress` to `path`.
pub fn write_optimizer(opt: &AdamW, progress: &Progress, path: &Path, commit: &str) -> Result<()> {
    let mut sd = StateDict::new();
    for (prefix, set) in [(EXP_AVG, opt.exp_avg()), (EXP_AVG_SQ, opt.exp_avg_sq())] {
        for (k, t) in set.iter() {
            sd.insert(format!("{prefix}{k}"), t.clone());
        }
    }
    let c = opt.config();
    let extra = serde_json::to_string(&progress.extra).map_err(|e| Error::Other(format!("progress: {e}")))?;
    let opt_num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let fields: Vec<(&str, String)> = vec![
        ("fmseg", OPTIMIZER_KIND.into()),
        ("version", OPTIMIZER_VERSION.into()),
        ("commit", commit.into()),
        ("step", opt.steps().to_string()),
        ("lr", c.lr.to_string()),
        ("beta1", c.beta1.to_string()),
        ("beta2", c.beta2.to_string()),
        ("eps", c.eps.to_string()),
        ("weight_decay", c.weight_decay.to_string()),
        ("epoch", progress.epoch.to_string()),
        ("iteration", progress.iteration.to_string()),
        ("best_dice", opt_num(progress.best_dice)),
        ("best_epoch", progress.best_epoch.map(|e| e.to_string()).unwrap_or_default()),
        ("extra", extra),
    ];
    let meta: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    safetensors_io::write(&sd, path, DType::F32, &meta)
}

/// Reads an optimiser-state file for parameters of `layout`: the optimiser, the progress and
/// the commit id. Errors name the file and the missing, unexpected or malformed entry.
pub fn read_optimizer(path: &Path, layout: &[(String, Vec<usize>)]) -> Result<(AdamW, Progress, String)> {
    let meta = read_metadata(path)?;
    let get = |k: &str| -> Result<&str> {
        meta.get(k)
            .map(|s| s.as_str())
            .ok_or_else(|| Error::format(path, format!("optimizer state: metadata has no '{k}'")))
    };
    if get("fmseg")? != OPTIMIZER_KIND {
        return Err(Error::format(path, format!("not an fmseg optimizer state (fmseg = '{}')", get("fmseg")?)));
    }
    if get("version")? != OPTIMIZER_VERSION {
        return Err(Error::format(
            path,
            format!("optimizer state version '{}', this fmseg reads '{OPTIMIZER_VERSION}'", get("version")?),
        ));
    }
    fn parse<T: std::str::FromStr>(path: &Path, k: &str, v: &str) -> Result<T> {
        v.parse().map_err(|_| Error::format(path, format!("optimizer state: metadata '{k}' = '{v}' is not a number")))
    }
    let num = |k: &str| -> Result<f64> { parse(path, k, get(k)?) };
    let int = |k: &str| -> Result<u64> { parse(path, k, get(k)?) };
    let config = AdamWConfig {
        lr: num("lr")?,
        beta1: num("beta1")?,
        beta2: num("beta2")?,
        eps: num("eps")?,
        weight_decay: num("weight_decay")?,
    };
    let best_dice = match get("best_dice")? {
        "" => None,
        v => Some(parse(path, "best_dice", v)?),
    };
    let best_epoch = match get("best_epoch")? {
        "" => None,
        v => Some(parse(path, "best_epoch", v)?),
    };
    let extra: BTreeMap<String, String> = serde_json::from_str(get("extra")?).map_err(|e| {
        Error::format(path, format!("optimizer state: metadata 'extra' is not a JSON object of strings: {e}"))
    })?;
    let progress = Progress { epoch: int("epoch")?, iteration: int("iteration")?, best_dice, best_epoch, extra };

    let sd = safetensors_io::load(path)?;
    let mut problems = Vec::new();
    let mut sets = Vec::new();
    for prefix in [EXP_AVG, EXP_AVG_SQ] {
        let mut entries = Vec::with_capacity(layout.len());
        for (k, shape) in layout {
            let key = format!("{prefix}{k}");
            match sd.get(&key) {
                None => problems.push(format!("missing '{key}'")),
                Some(t) if &t.shape != shape => {
                    problems.push(format!("'{key}' has shape {:?}, the parameter has {:?}", t.shape, shape))
                }
                Some(t) => entries.push((k.clone(), t.clone())),
            }
        }
        sets.push(entries);
    }
    if sd.len() > 2 * layout.len() {
        let known: std::collections::HashSet<String> =
            layout.iter().flat_map(|(k, _)| [format!("{EXP_AVG}{k}"), format!("{EXP_AVG_SQ}{k}")]).collect();
        problems.extend(sd.names().filter(|k| !known.contains(*k)).map(|k| format!("unexpected '{k}'")));
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(8);
        let more = if n > 8 { format!(" (and {} more)", n - 8) } else { String::new() };
        return Err(Error::format(path, format!("optimizer state: {}{more}", problems.join("; "))));
    }
    let exp_avg_sq = ParamSet::new(sets.pop().unwrap_or_default())?;
    let exp_avg = ParamSet::new(sets.pop().unwrap_or_default())?;
    let opt = AdamW::from_state(config, int("step")?, exp_avg, exp_avg_sq)
        .map_err(|e| Error::format(path, format!("optimizer state: {e}")))?;
    Ok((opt, progress, get("commit")?.to_string()))
}

/// The `__metadata__` of a safetensors file's header (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| Error::format(path, "safetensors: file too short for a header"))?;
    let n = u64::from_le_bytes(n);
    // safetensors itself refuses headers over 100 MB.
    if n > 100_000_000 || n.saturating_add(8) > len {
        return Err(Error::format(path, format!("safetensors: header length {n} does not fit the file ({len} bytes)")));
    }
    let mut head = vec![0u8; n as usize];
    f.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&head)
        .map_err(|e| Error::format(path, format!("safetensors: header is not JSON: {e}")))?;
    let mut out = HashMap::new();
    if let Some(m) = v.get("__metadata__") {
        let obj = m.as_object().ok_or_else(|| Error::format(path, "safetensors: __metadata__ is not an object"))?;
        for (k, v) in obj {
            let s = v
                .as_str()
                .ok_or_else(|| Error::format(path, format!("safetensors: metadata '{k}' is not a string")))?;
            out.insert(k.clone(), s.to_string());
        }
    }
    Ok(out)
}
