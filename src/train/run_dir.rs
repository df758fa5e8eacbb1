//! A training run's directory, resumable after a kill at any instant with nothing lost:
//!
//! ```text
//! RUN/
//!   run.json                  the command and configuration (written once; --resume must match)
//!   .lock                     flock'ed while a process trains in RUN
//!   fold-k/
//!     last.safetensors        weights after the last committed epoch (reference key names)
//!     optimizer.safetensors   AdamW state + progress (epoch, iteration, best Dice, loop state)
//!     best.safetensors        weights of the epoch with the best validation Dice
//!     metrics.csv             one row per committed epoch
//!     pending-commit.json     only between the two halves of a commit (see below)
//! ```
//!
//! An epoch is committed as one group ([`FoldDir::commit_epoch`]): every file of the group is
//! written and synced under a temporary name (`.partial-<commit>-<name>`), then a journal
//! (`pending-commit.json`, itself written atomically) records the renames, then the renames
//! happen and the journal is removed. Opening the fold ([`RunDir::fold`]) finishes a journal
//! it finds (the commit point was reached: roll forward) and deletes temporary files without
//! one (the commit point was not reached: the previous epoch stands). So the weights, the
//! optimiser state, the best checkpoint and the CSV always belong to the same epoch.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, Checkpoint, Progress};
use super::optim::{AdamW, ParamSet};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::weights;

/// `run.json`'s format marker.
const RUN_FORMAT: &str = "fmseg-train-run/1";
const RUN_JSON: &str = "run.json";
const LOCK: &str = ".lock";
const JOURNAL: &str = "pending-commit.json";
const PARTIAL: &str = ".partial-";
/// Weights after the last committed epoch.
pub const LAST: &str = "last.safetensors";
/// AdamW state and progress of the last committed epoch.
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// Weights of the best validation Dice.
pub const BEST: &str = "best.safetensors";
/// Per-epoch metrics.
pub const METRICS: &str = "metrics.csv";

/// What a run is: the command line (recorded for people) and the configuration (compared on
/// `--resume`: any difference is refused). The configuration is whatever JSON the caller
/// builds from its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub command: Vec<String>,
    pub config: serde_json::Value,
}

/// An open run directory, locked for this process while the value lives.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    resumed: bool,
    _lock: File,
}

impl RunDir {
    /// Opens `path` for training with `spec`.
    ///
    /// - A missing or empty directory starts a new run (`run.json` written), with or without
    ///   `resume` ([`RunDir::resumed`] tells which happened).
    /// - A directory holding a run (`run.json`) is continued when `resume` is set and its
    ///   configuration equals `spec.config` (otherwise an error listing the differences), and
    ///   refused without `resume`.
    /// - A non-empty directory without `run.json` is refused.
    /// - A run another process is training in is refused.
    pub fn open(path: &Path, spec: &RunSpec, resume: bool) -> Result<RunDir> {
        if path.exists() && !path.is_dir() {
            return Err(Error::format(path, "exists and is not a directory; --out must name a run directory"));
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let lock = lock(path)?;
        remove_run_json_temporaries(path)?;
        let run_json = path.join(RUN_JSON);
        let normalized = normalize(&spec.config, &run_json)?;
        let resumed = if run_json.exists() {
            let text = std::fs::read_to_string(&run_json).map_err(|e| Error::io(&run_json, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::format(&run_json, format!("not valid JSON ({e}); the run cannot be resumed")))?;
            if v.get("format").and_then(|f| f.as_str()) != Some(RUN_FORMAT) {
                return Err(Error::format(
                    &run_json,
                    format!("not an fmseg training run (no \"format\": \"{RUN_FORMAT}\")"),
                ));
            }
            if !resume {
                return Err(Error::format(
                    path,
                    "already holds a training run (run.json); pass --resume to continue it, or choose a new --out directory",
                ));
            }
            let old = v.get("config").cloned().unwrap_or(serde_json::Value::Null);
            let mut diffs = Vec::new();
            diff("", &old, &normalized, &mut diffs);
            if !diffs.is_empty() {
                let n = diffs.len();
                diffs.truncate(8);
                let more = if n > 8 { format!(" (and {} more)", n - 8) } else { String::new() };
                return Err(Error::format(
                    &run_json,
                    format!(
                        "--resume with a different configuration: {}{more}; resume with the run's settings or start a new --out directory",
                        diffs.join("; ")
                    ),
                ));
            }
            true
        } else {
            let stray: Vec<String> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != LOCK)
                .collect();
            if !stray.is_empty() {
                return Err(Error::format(
                    path,
                    format!(
                        "is not empty ({}) and holds no training run (no run.json); refusing to write into it",
                        stray.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let doc = serde_json::json!({
                "format": RUN_FORMAT,
                "fmseg_version": env!("CARGO_PKG_VERSION"),
                "created_unix": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                "command": spec.command,
                "config": normalized,
            });
            let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Other(format!("run.json: {e}")))?;
            write_atomic(&run_json, |w| {
                w.write_all(format!("{text}\n").as_bytes()).map_err(|e| Error::io(&run_json, e))
            })?;
            sync_dir(path)?;
            false
        };
        Ok(RunDir { root: path.to_path_buf(), resumed, _lock: lock })
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether an existing run was opened (rather than a new one started).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Fold `k`'s directory (`RUN/fold-k`), created if missing, with any interrupted commit
    /// finished or discarded (see the module docs).
    pub fn fold(&self, k: usize) -> Result<FoldDir> {
        let dir = self.root.join(format!("fold-{k}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        recover(&dir)?;
        Ok(FoldDir { dir })
    }
}

/// One fold's checkpoints and metrics.
#[derive(Debug)]
pub struct FoldDir {
    dir: PathBuf,
}

/// One row of `metrics.csv`: an epoch's training losses and validation metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsRow {
    /// The epoch just completed (1-based; equals [`Progress::epoch`] when committed).
    pub epoch: u64,
    /// Optimiser steps taken by the end of the epoch.
    pub iteration: u64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss terms, by name (`[A-Za-z0-9_]`), e.g. `("dice", ..), ("ce", ..)`;
    /// columns `loss_<name>`. Every row of a fold must have the same names.
    pub losses: Vec<(String, f64)>,
    /// Validation mean Dice, pooled precision and recall (empty cells when not validated).
    pub val_dice: Option<f64>,
    pub val_precision: Option<f64>,
    pub val_recall: Option<f64>,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

impl MetricsRow {
    fn header(&self) -> Result<String> {
        let mut cols = vec!["epoch".to_string(), "iteration".into(), "lr".into()];
        for (name, _) in &self.losses {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::Value(format!("metrics: loss name '{name}' must be letters, digits or '_'")));
            }
            cols.push(format!("loss_{name}"));
        }
        cols.extend(["val_dice", "val_precision", "val_recall", "seconds"].map(String::from));
        Ok(cols.join(","))
    }

    fn line(&self) -> String {
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let mut cells = vec![self.epoch.to_string(), self.iteration.to_string(), self.lr.to_string()];
        cells.extend(self.losses.iter().map(|(_, v)| v.to_string()));
        cells.extend([opt(self.val_dice), opt(self.val_precision), opt(self.val_recall), self.seconds.to_string()]);
        cells.join(",")
    }
}

impl FoldDir {
    /// The fold's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `fold-k/last.safetensors`.
    pub fn last_path(&self) -> PathBuf {
        self.dir.join(LAST)
    }

    /// `fold-k/best.safetensors`.
    pub fn best_path(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// `fold-k/optimizer.safetensors`.
    pub fn optimizer_path(&self) -> PathBuf {
        self.dir.join(OPTIMIZER)
    }

    /// `fold-k/metrics.csv`.
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join(METRICS)
    }

    /// The last committed state for parameters of `layout` (use
    /// [`ParamSet::network_layout`]), or `None` when the fold has not committed an epoch yet.
    /// Errors when only one of the weights/optimiser pair exists or when they come from
    /// different commits.
    pub fn load(&self, layout: &[(String, Vec<usize>)]) -> Result<Option<Checkpoint>> {
        let (wp, op) = (self.last_path(), self.optimizer_path());
        match (wp.exists(), op.exists()) {
            (false, false) => return Ok(None),
            (true, false) => {
                return Err(Error::format(
                    &wp,
                    format!("has no {OPTIMIZER} beside it: the fold cannot be resumed exactly"),
                ))
            }
            (false, true) => {
                return Err(Error::format(&op, format!("has no {LAST} beside it: the fold cannot be resumed")))
            }
            (true, true) => {}
        }
        let (params, meta) = checkpoint::read_weights(&wp, layout)?;
        let (optimizer, progress, commit) = checkpoint::read_optimizer(&op, layout)?;
        let wcommit = meta.get("commit").map(|s| s.as_str()).unwrap_or("");
        if wcommit != commit {
            let we = meta.get("epoch").map(|s| s.as_str()).unwrap_or("?");
            return Err(Error::format(
                &self.dir,
                format!(
                    "{LAST} (epoch {we}, commit '{wcommit}') and {OPTIMIZER} (epoch {}, commit '{commit}') come from \
                     different checkpoints; they were not written by one fmseg commit and cannot be resumed together",
                    progress.epoch
                ),
            ));
        }
        params.check_same_layout(optimizer.exp_avg(), &format!("{}", op.display()))?;
        Ok(Some(Checkpoint { params, optimizer, progress }))
    }

    /// Commits one finished epoch as a group: `last.safetensors` (weights),
    /// `optimizer.safetensors` (`opt` and `progress`), the `metrics.csv` with `row` appended,
    /// and `best.safetensors` when `row.val_dice` beats `progress.best_dice` (then
    /// `progress.best_*` is updated). `row.epoch` / `row.iteration` must equal
    /// `progress.epoch` / `.iteration` and follow the fold's last row. Returns whether the
    /// epoch is the new best; `progress` is changed only when the commit succeeded.
    pub fn commit_epoch(
        &self,
        params: &ParamSet,
        opt: &AdamW,
        progress: &mut Progress,
        row: &MetricsRow,
    ) -> Result<bool> {
        if row.epoch != progress.epoch || row.iteration != progress.iteration {
            return Err(Error::Value(format!(
                "metrics row is for epoch {} / iteration {}, the progress is at epoch {} / iteration {}",
                row.epoch, row.iteration, progress.epoch, progress.iteration
            )));
        }
        params.check_same_layout(opt.exp_avg(), "optimizer state")?;
        let csv = self.metrics_with(row)?;
        let mut next = progress.clone();
        let is_best = match row.val_dice {
            Some(d) if d.is_finite() && progress.best_dice.is_none_or(|b| d > b) => {
                next.best_dice = Some(d);
                next.best_epoch = Some(row.epoch);
                true
            }
            _ => false,
        };
        let id = format!(
            "e{}-i{}-{:x}-{}",
            row.epoch,
            row.iteration,
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
            std::process::id()
        );
        let epoch = row.epoch.to_string();
        let iteration = row.iteration.to_string();
        let mut g = Group::new(&self.dir, &id);
        let meta = [("epoch", epoch.as_str()), ("iteration", iteration.as_str())];
        checkpoint::write_weights(params, &g.stage(LAST), &id, &meta)?;
        checkpoint::write_optimizer(opt, &next, &g.stage(OPTIMIZER), &id)?;
        if is_best {
            let dice = row.val_dice.map(|d| d.to_string()).unwrap_or_default();
            let meta = [("epoch", epoch.as_str()), ("iteration", iteration.as_str()), ("val_dice", dice.as_str())];
            checkpoint::write_weights(params, &g.stage(BEST), &id, &meta)?;
        }
        let p = g.stage(METRICS);
        write_synced(&p, csv.as_bytes())?;
        g.commit()?;
        *progress = next;
        Ok(is_best)
    }

    /// The current `metrics.csv` with `row` appended, after checking columns and epoch order.
    fn metrics_with(&self, row: &MetricsRow) -> Result<String> {
        let header = row.header()?;
        let path = self.metrics_path();
        let mut text = if path.exists() {
            std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?
        } else {
            format!("{header}\n")
        };
        let first = text.lines().next().unwrap_or("");
        if first != header {
            return Err(Error::format(&path, format!("has columns '{first}', this epoch's row has '{header}'")));
        }
        if let Some(last) = parse_metrics(&path, &text)?.last() {
            if row.epoch <= last.epoch {
                return Err(Error::format(
                    &path,
                    format!("already has epoch {}; cannot append epoch {}", last.epoch, row.epoch),
                ));
            }
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&row.line());
        text.push('\n');
        Ok(text)
    }

    /// The rows of `metrics.csv` (empty when the fold has none yet).
    pub fn metrics(&self) -> Result<Vec<MetricsRow>> {
        let path = self.metrics_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        parse_metrics(&path, &text)
    }
}

/// Parses a `metrics.csv` written by [`FoldDir::commit_epoch`].
fn parse_metrics(path: &Path, text: &str) -> Result<Vec<MetricsRow>> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return Ok(Vec::new()) };
    let cols: Vec<&str> = header.split(',').collect();
    let n = cols.len();
    if n < 7
        || cols[..3] != ["epoch", "iteration", "lr"]
        || cols[n - 4..] != ["val_dice", "val_precision", "val_recall", "seconds"]
    {
        return Err(Error::format(path, format!("not an fmseg metrics file (header '{header}')")));
    }
    let mut loss_names = Vec::new();
    for c in &cols[3..n - 4] {
        let name = c
            .strip_prefix("loss_")
            .ok_or_else(|| Error::format(path, format!("unexpected column '{c}' (loss columns are loss_<name>)")))?;
        loss_names.push(name.to_string());
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let lineno = i + 2;
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != n {
            return Err(Error::format(path, format!("line {lineno} has {} cells, the header {n}", cells.len())));
        }
        let bad = |c: &str| Error::format(path, format!("line {lineno}: '{c}' is not a number"));
        let f = |c: &str| c.parse::<f64>().map_err(|_| bad(c));
        let opt = |c: &str| if c.is_empty() { Ok(None) } else { f(c).map(Some) };
        rows.push(MetricsRow {
            epoch: cells[0].parse().map_err(|_| bad(cells[0]))?,
            iteration: cells[1].parse().map_err(|_| bad(cells[1]))?,
            lr: f(cells[2])?,
            losses: loss_names
                .iter()
                .zip(&cells[3..n - 4])
                .map(|(k, c)| Ok((k.clone(), f(c)?)))
                .collect::<Result<_>>()?,
            val_dice: opt(cells[n - 4])?,
            val_precision: opt(cells[n - 3])?,
            val_recall: opt(cells[n - 2])?,
            seconds: f(cells[n - 1])?,
        });
    }
    Ok(rows)
}

/// Writes `.pth` (`torch.save(state_dict)` layout, shared modules sharing storage as in the
/// reference) from a checkpoint of the network (`last.safetensors`, `best.safetensors`, or any
/// weights file fmseg reads), atomically.
pub fn export_pth(src: &Path, dst: &Path) -> Result<()> {
    let sd = weights::load_canonical(src)?;
    weights::save(&sd, dst, weights::Format::Pth, weights::DType::F32)
}

/// Files staged for one group commit.
struct Group {
    dir: PathBuf,
    id: String,
    files: Vec<(String, String)>,
    journaled: bool,
}

impl Group {
    fn new(dir: &Path, id: &str) -> Self {
        Group { dir: dir.to_path_buf(), id: id.to_string(), files: Vec::new(), journaled: false }
    }

    /// The temporary path to write `name` to.
    fn stage(&mut self, name: &str) -> PathBuf {
        let tmp = format!("{PARTIAL}{}-{name}", self.id);
        self.files.push((tmp.clone(), name.to_string()));
        self.dir.join(tmp)
    }

    /// The commit point: the journal naming every rename, written atomically and synced.
    fn write_journal(&mut self) -> Result<()> {
        let j = self.dir.join(JOURNAL);
        let doc = serde_json::json!({ "commit": self.id, "renames": self.files });
        write_atomic(&j, |w| w.write_all(doc.to_string().as_bytes()).map_err(|e| Error::io(&j, e)))?;
        sync_dir(&self.dir)?;
        self.journaled = true;
        Ok(())
    }

    fn commit(mut self) -> Result<()> {
        self.write_journal()?;
        apply_journal(&self.dir)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Before the commit point nothing staged may survive; after it, the journal owns them.
        if !self.journaled {
            for (tmp, _) in &self.files {
                let _ = std::fs::remove_file(self.dir.join(tmp));
            }
        }
    }
}

/// Completes the journal in `dir`: renames each staged file still present over its
/// destination, syncs, removes the journal.
fn apply_journal(dir: &Path) -> Result<()> {
    let j = dir.join(JOURNAL);
    let text = std::fs::read_to_string(&j).map_err(|e| Error::io(&j, e))?;
    let bad = |m: &str| {
        Error::format(&j, format!("interrupted commit record unreadable ({m}); remove it to discard that commit"))
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let renames: Vec<(String, String)> =
        serde_json::from_value(v.get("renames").cloned().unwrap_or_default()).map_err(|e| bad(&e.to_string()))?;
    for (tmp, dest) in &renames {
        let plain = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains('\\') && s != "." && s != "..";
        if !plain(tmp) || !plain(dest) || !tmp.starts_with(PARTIAL) {
            return Err(bad(&format!("rename '{tmp}' -> '{dest}' is not within the fold")));
        }
    }
    for (tmp, dest) in &renames {
        let t = dir.join(tmp);
        if t.exists() {
            std::fs::rename(&t, dir.join(dest)).map_err(|e| Error::io(dir.join(dest), e))?;
        }
    }
    sync_dir(dir)?;
    std::fs::remove_file(&j).map_err(|e| Error::io(&j, e))?;
    sync_dir(dir)
}

/// Makes `dir` consistent after a kill: finishes a journaled commit, then removes staged files
/// of a commit that never reached its journal and temporaries of atomic writes.
fn recover(dir: &Path) -> Result<()> {
    if dir.join(JOURNAL).exists() {
        apply_journal(dir)?;
    }
    clean_temporaries(dir)
}

/// Removes `.partial-*` files and `write_atomic`'s `.<name>.tmp-<pid>-<n>` files in `dir`.
fn clean_temporaries(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(PARTIAL) || (name.starts_with('.') && name.contains(".tmp-"));
        if ours && e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

/// Removes `.run.json.tmp-*` left by a kill while run.json was written (nothing else: the
/// directory may not be a run at all).
fn remove_run_json_temporaries(root: &Path) -> Result<()> {
    for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let e = e.map_err(|e| Error::io(root, e))?;
        if e.file_name().to_string_lossy().starts_with(&format!(".{RUN_JSON}.tmp-")) {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))
}

/// An exclusive advisory lock on `RUN/.lock`, released by the OS when the process ends.
fn lock(root: &Path) -> Result<File> {
    let p = root.join(LOCK);
    let f =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&p).map_err(|e| Error::io(&p, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::format(root, "another fmseg process is training in this run directory"));
            }
            return Err(Error::io(&p, err));
        }
    }
    Ok(f)
}

/// `config` as it will read back from run.json: serialised and parsed once, so a float that
/// serde_json parses one ulp off compares equal to itself on resume.
fn normalize(config: &serde_json::Value, run_json: &Path) -> Result<serde_json::Value> {
    let text = serde_json::to_string(config).map_err(|e| Error::format(run_json, format!("configuration: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::format(run_json, format!("configuration: {e}")))
}

/// Differences between the recorded and the requested configuration, as `key: was X, now Y`.
fn diff(at: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let name = if at.is_empty() { "configuration".to_string() } else { at.to_string() };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeMap<&String, ()> = a.keys().chain(b.keys()).map(|k| (k, ())).collect();
            for k in keys.keys() {
                let sub = if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
                match (a.get(*k), b.get(*k)) {
                    (Some(x), Some(y)) => diff(&sub, x, y, out),
                    (Some(x), None) => out.push(format!("{sub}: was {x}, now absent")),
                    (None, Some(y)) => out.push(format!("{sub}: absent in the run, now {y}")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("{name}: was {a}, now {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::HostTensor;
    use crate::train::optim::AdamWConfig;

    fn spec(epochs: u64) -> RunSpec {
        RunSpec {
            command: vec!["fmseg".into(), "train".into()],
            config: serde_json::json!({ "epochs": epochs, "lr": 5e-4, "folds": 4, "data": { "dir": "/d" } }),
        }
    }

    /// A small set with awkward values, one of them a shared module of the catalog (its alias
    /// key appears in the weights file).
    fn params(seed: u32) -> ParamSet {
        let v = |n: usize, s: u32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ s.wrapping_mul(97)) as f32 / u32::MAX as f32) - 0.5)
                .collect()
        };
        let mut a = v(6, seed);
        a[0] = -0.0;
        a[1] = f32::from_bits(1); // subnormal
        a[2] = 1e-30;
        ParamSet::new(vec![
            ("enc.weight".into(), HostTensor::new(vec![2, 3], a).unwrap()),
            ("attention_3.conv.0.block.0.bias".into(), HostTensor::new(vec![32], v(32, seed + 1)).unwrap()),
            ("final.bias".into(), HostTensor::new(vec![1], v(1, seed + 2)).unwrap()),
        ])
        .unwrap()
    }

    fn trained(steps: u32) -> (ParamSet, AdamW) {
        let mut p = params(1);
        let mut opt = AdamW::new(AdamWConfig::default(), &p).unwrap();
        for s in 0..steps {
            let mut g = params(10 + s);
            for t in g.tensors_mut() {
                t.data.iter_mut().for_each(|x| *x *= 3.0);
            }
            opt.step(&mut p, &g, 5e-4).unwrap();
        }
        (p, opt)
    }

    fn row(epoch: u64, iteration: u64, dice: Option<f64>) -> MetricsRow {
        MetricsRow {
            epoch,
            iteration,
            lr: 5e-4,
            losses: vec![("dice".into(), 0.25 + epoch as f64), ("ce".into(), 0.1)],
            val_dice: dice,
            val_precision: dice.map(|d| d / 2.0),
            val_recall: None,
            seconds: 12.5,
        }
    }

    fn bits(s: &ParamSet) -> Vec<Vec<u32>> {
        s.tensors().iter().map(|t| t.data.iter().map(|x| x.to_bits()).collect()).collect()
    }

    fn assert_same(a: &Checkpoint, p: &ParamSet, opt: &AdamW, progress: &Progress) {
        assert_eq!(a.params.layout(), p.layout());
        assert_eq!(bits(&a.params), bits(p));
        assert_eq!(bits(a.optimizer.exp_avg()), bits(opt.exp_avg()));
        assert_eq!(bits(a.optimizer.exp_avg_sq()), bits(opt.exp_avg_sq()));
        assert_eq!(a.optimizer.steps(), opt.steps());
        assert_eq!(a.optimizer.config(), opt.config());
        assert_eq!(&a.progress, progress);
    }

    /// Commits epoch `e` after `e` optimiser steps with validation Dice `dice`.
    fn commit(fold: &FoldDir, e: u64, dice: Option<f64>, progress: &mut Progress) -> (ParamSet, AdamW) {
        let (p, opt) = trained(e as u32);
        progress.epoch = e;
        progress.iteration = e;
        progress.extra.insert("rng".into(), format!("state-{e}"));
        fold.commit_epoch(&p, &opt, progress, &row(e, e, dice)).unwrap();
        (p, opt)
    }

    #[test]
    fn new_run_refuses_overwrite_and_checks_config_on_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let r = RunDir::open(&root, &spec(400), false).unwrap();
        assert!(!r.resumed());
        let text = std::fs::read_to_string(root.join("run.json")).unwrap();
        assert!(text.contains("\"epochs\": 400") && text.contains("\"train\""), "{text}");
        drop(r);
        let e = RunDir::open(&root, &spec(400), false).unwrap_err().to_string();
        assert!(e.contains("already holds a training run") && e.contains("--resume"), "{e}");
        let r = RunDir::open(&root, &spec(400), true).unwrap();
        assert!(r.resumed());
        drop(r);
        let mut other = spec(300);
        other.config["data"]["dir"] = "/e".into();
        let e = RunDir::open(&root, &other, true).unwrap_err().to_string();
        assert!(e.contains("run.json") && e.contains("epochs: was 400, now 300"), "{e}");
        assert!(e.contains("data.dir: was \"/d\", now \"/e\""), "{e}");
        // --resume on a fresh directory starts a run
        let r = RunDir::open(&tmp.path().join("fresh"), &spec(1), true).unwrap();
        assert!(!r.resumed());
    }

    #[test]
    fn foreign_directories_and_concurrent_runs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let e = RunDir::open(tmp.path(), &spec(1), true).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("no run.json"), "{e}");
        assert_eq!(std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(), "mine");
        let file = tmp.path().join("notes.txt");
        assert!(RunDir::open(&file, &spec(1), false).unwrap_err().to_string().contains("not a directory"));

        let root = tmp.path().join("run");
        let _held = RunDir::open(&root, &spec(1), false).unwrap();
        let e = RunDir::open(&root, &spec(1), true).unwrap_err().to_string();
        assert!(e.contains("another fmseg process"), "{e}");
    }

    #[test]
    fn checkpoint_round_trip_is_bit_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::open(&tmp.path().join("run"), &spec(1), false).unwrap();
        let fold = run.fold(2).unwrap();
        assert!(fold.path().ends_with("fold-2"));
        let layout = params(0).layout();
        assert!(fold.load(&layout).unwrap().is_none());
        let mut progress = Progress::default();
        let (p, opt) = commit(&fold, 3, Some(0.75), &mut progress);
        assert_eq!((progress.best_dice, progress.best_epoch), (Some(0.75), Some(3)));
        let back = fold.load(&layout).unwrap().unwrap();
        assert_same(&back, &p, &opt, &progress);
        assert_eq!(back.progress.extra["rng"], "state-3");
        // the weights file has the reference's keys, the shared module under both names
        let sd = weights::load(&fold.last_path()).unwrap();
        assert_eq!(sd.get("up_4.attention.conv.0.block.0.bias"), p.get("attention_3.conv.0.block.0.bias"));
        assert_eq!(sd.len(), 4);
        let best = checkpoint::read_metadata(&fold.best_path()).unwrap();
        assert_eq!((best["epoch"].as_str(), best["val_dice"].as_str()), ("3", "0.75"));
        // a resumed optimiser continues exactly like the one that never stopped
        let (mut p1, mut o1) = (p.clone(), opt.clone());
        let (mut p2, mut o2) = (back.params, back.optimizer);
        let g = params(99);
        o1.step(&mut p1, &g, 2.5e-4).unwrap();
        o2.step(&mut p2, &g, 2.5e-4).unwrap();
        assert_eq!(bits(&p1), bits(&p2));
        // nothing temporary is left
        let names: Vec<String> = std::fs::read_dir(fold.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, [BEST, LAST, METRICS, OPTIMIZER], "{names:?}");
    }

    #[test]
    fn metrics_csv_rows_and_best_selection() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::open(&tmp.path().join("run"), &spec(1), false).unwrap();
        let fold = run.fold(0).unwrap();
        let mut progress = Progress::default();
        let (p1, _) = commit(&fold, 1, Some(0.5), &mut progress);
        commit(&fold, 2, None, &mut progress);
        commit(&fold, 3, Some(0.25), &mut progress);
        assert_eq!((progress.best_dice, progress.best_epoch), (Some(0.5), Some(1)));
        let text = std::fs::read_to_string(fold.metrics_path()).unwrap();
        assert_eq!(
            text,
            "epoch,iteration,lr,loss_dice,loss_ce,val_dice,val_precision,val_recall,seconds\n\
             1,1,0.0005,1.25,0.1,0.5,0.25,,12.5\n\
             2,2,0.0005,2.25,0.1,,,,12.5\n\
             3,3,0.0005,3.25,0.1,0.25,0.125,,12.5\n"
        );
        assert_eq!(fold.metrics().unwrap(), vec![row(1, 1, Some(0.5)), row(2, 2, None), row(3, 3, Some(0.25))]);
        // best.safetensors still holds epoch 1's weights
        let (best, meta) = checkpoint::read_weights(&fold.best_path(), &p1.layout()).unwrap();
        assert_eq!(bits(&best), bits(&p1));
        assert_eq!(meta["epoch"], "1");
        commit(&fold, 4, Some(0.9), &mut progress);
        assert_eq!((progress.best_dice, progress.best_epoch), (Some(0.9), Some(4)));

        // refused rows: an epoch already recorded, other columns, a row that is not the progress
        let (p, opt) = trained(1);
        let mut pr = progress.clone();
        pr.epoch = 4;
        let e = fold.commit_epoch(&p, &opt, &mut pr, &row(4, 4, None)).unwrap_err().to_string();
        assert!(e.contains("already has epoch 4"), "{e}");
        pr.epoch = 5;
        pr.iteration = 5;
        let mut r = row(5, 5, None);
        r.losses.pop();
        let e = fold.commit_epoch(&p, &opt, &mut pr, &r).unwrap_err().to_string();
        assert!(e.contains("metrics.csv") && e.contains("columns"), "{e}");
        let e = fold.commit_epoch(&p, &opt, &mut pr, &row(6, 5, None)).unwrap_err().to_string();
        assert!(e.contains("epoch 6") && e.contains("epoch 5"), "{e}");
        let mut r = row(5, 5, None);
        r.losses[0].0 = "a,b".into();
        assert!(fold.commit_epoch(&p, &opt, &mut pr, &r).is_err());
        assert_eq!(pr.epoch, 5, "progress untouched by failed commits");
        assert_eq!(fold.metrics().unwrap().len(), 4);
    }

    /// A kill while the files of epoch 2 were being written (before the journal): the fold
    /// reopens at epoch 1 and the partial files are gone.
    #[test]
    fn kill_before_the_commit_point_keeps_the_previous_epoch() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let run = RunDir::open(&root, &spec(1), false).unwrap();
        let fold = run.fold(0).unwrap();
        let mut progress = Progress::default();
        let (p1, o1) = commit(&fold, 1, Some(0.5), &mut progress);
        let saved = progress.clone();
        let (p2, o2) = trained(2);
        let mut g = Group::new(fold.path(), "e2-killed");
        checkpoint::write_weights(&p2, &g.stage(LAST), "e2-killed", &[]).unwrap();
        let half = g.stage(OPTIMIZER);
        checkpoint::write_optimizer(&o2, &progress, &half, "e2-killed").unwrap();
        // torn file: the kill came mid-write
        let len = std::fs::metadata(&half).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&half).unwrap().set_len(len / 2).unwrap();
        std::mem::forget(g); // a killed process runs no destructor
        std::fs::write(fold.path().join(".metrics.csv.tmp-999-0"), "torn").unwrap();
        drop(run);

        let run = RunDir::open(&root, &spec(1), true).unwrap();
        let fold = run.fold(0).unwrap();
        let back = fold.load(&p1.layout()).unwrap().unwrap();
        assert_same(&back, &p1, &o1, &saved);
        let left: Vec<String> = std::fs::read_dir(fold.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(fold.metrics().unwrap().len(), 1);
    }

    /// A kill after the journal of epoch 2 was written, between its renames: the weights are
    /// already epoch 2's, the optimiser state still epoch 1's. Reopening finishes the commit.
    #[test]
    fn kill_between_renames_rolls_forward() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let run = RunDir::open(&root, &spec(1), false).unwrap();
        let fold = run.fold(1).unwrap();
        let mut progress = Progress::default();
        commit(&fold, 1, Some(0.5), &mut progress);
        let (p2, o2) = trained(2);
        let mut next = progress.clone();
        next.epoch = 2;
        next.iteration = 2;
        next.best_dice = Some(0.6);
        next.best_epoch = Some(2);
        let id = "e2-i2-killed";
        let mut g = Group::new(fold.path(), id);
        checkpoint::write_weights(&p2, &g.stage(LAST), id, &[]).unwrap();
        checkpoint::write_optimizer(&o2, &next, &g.stage(OPTIMIZER), id).unwrap();
        checkpoint::write_weights(&p2, &g.stage(BEST), id, &[]).unwrap();
        let csv = fold.metrics_with(&row(2, 2, Some(0.6))).unwrap();
        write_synced(&g.stage(METRICS), csv.as_bytes()).unwrap();
        g.write_journal().unwrap();
        let (tmp0, dest0) = g.files[0].clone();
        std::fs::rename(fold.path().join(tmp0), fold.path().join(dest0)).unwrap();
        std::mem::forget(g);
        // the mixed state is detected rather than loaded
        let e = fold.load(&p2.layout()).unwrap_err().to_string();
        assert!(e.contains("different checkpoints") && e.contains("epoch 1"), "{e}");
        drop(run);

        let run = RunDir::open(&root, &spec(1), true).unwrap();
        let fold = run.fold(1).unwrap();
        assert!(!fold.path().join(JOURNAL).exists());
        let back = fold.load(&p2.layout()).unwrap().unwrap();
        assert_same(&back, &p2, &o2, &next);
        assert_eq!(fold.metrics().unwrap().iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2]);
        let (best, _) = checkpoint::read_weights(&fold.best_path(), &p2.layout()).unwrap();
        assert_eq!(bits(&best), bits(&p2));
    }

    /// An optimiser file older than the weights beside it (copied back by hand, say) is
    /// refused with both epochs named; a lone file is refused too.
    #[test]
    fn mismatched_or_lone_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::open(&tmp.path().join("run"), &spec(1), false).unwrap();
        let fold = run.fold(0).unwrap();
        let mut progress = Progress::default();
        commit(&fold, 1, None, &mut progress);
        let old = tmp.path().join("old-optimizer.safetensors");
        std::fs::copy(fold.optimizer_path(), &old).unwrap();
        let (p, _) = commit(&fold, 2, None, &mut progress);
        std::fs::copy(&old, fold.optimizer_path()).unwrap();
        let e = fold.load(&p.layout()).unwrap_err().to_string();
        assert!(e.contains("epoch 2") && e.contains("epoch 1") && e.contains("different checkpoints"), "{e}");
        std::fs::remove_file(fold.optimizer_path()).unwrap();
        let e = fold.load(&p.layout()).unwrap_err().to_string();
        assert!(e.contains("last.safetensors") && e.contains("optimizer.safetensors"), "{e}");
        // a layout that does not match the files names the key
        let mut other = p.layout();
        other[0].1 = vec![6];
        std::fs::copy(&old, fold.optimizer_path()).unwrap();
        let e = fold.load(&other).unwrap_err().to_string();
        assert!(e.contains("'enc.weight'") && e.contains("[2, 3]"), "{e}");
    }
}
