//! `fmseg batch ROOT --out OUT`: every matching series of a DICOM archive, segmented.
//!
//! 1. **Index**: ROOT's files are read header-only, in parallel ([`crate::io::dicom::Index`]),
//!    grouped by series; non-DICOM files are counted and skipped, symlinks are not followed
//!    into loops. A file that cannot be read fails the series in its directory (it may be
//!    one of its slices) and no other.
//! 2. **Select**: `--rules FILE` (MONAI Deploy's selection format, extended:
//!    [`crate::pipeline::rules`]), else the series `fmseg segment` would choose in each study.
//!    `--shard K/N` keeps the selected series whose UID hashes to K (a stable SHA-256, so N
//!    machines split an archive without talking to each other). `--plan` prints every series
//!    with the rule that selected it or why it was skipped, and runs nothing.
//! 3. **Run**: the models are loaded once; a loader thread decodes the next series while the
//!    engine segments the current one and a writer thread writes the previous one (queues of
//!    one: at most three series in memory). Each series goes to
//!    `OUT/<StudyInstanceUID>/<SeriesInstanceUID>/` (`fm_mask.nii.gz`, `fm_seg.dcm`,
//!    `report.json`, `overlay.png`), committed as a group like `fmseg segment`'s outputs.
//! 4. **Record**: `OUT/manifest.jsonl` gets one JSON line per attempt (done, failed with the
//!    reason, or skipped by the rules; input file count and checksum, weights checksums,
//!    settings, timings, fmseg version), appended after the series' outputs are committed;
//!    `OUT/summary.csv` (one row per series, the report's numbers) is rewritten from it at the
//!    end. A rerun skips every series done with the same input, weights and settings, so a
//!    batch killed at any moment resumes where it was; what a killed run left half-written is
//!    cleaned when its directory is next opened.
//!
//! `--merge OUT...` checks, for ROOT's selection, that every selected series is done exactly
//! once across the given output directories (the shards' or one shared one), and writes each
//! its summary.csv. Exit status: 0 every selected series done, 3 some failed (or, with
//! `--merge`, missing or done twice), 1 the batch could not start.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::segment::{resolve_weights, seg_parameters, write_result, Extras, Models, WriteError};
use crate::engine::Device;
use crate::io::dicom::{Index, SeriesInfo};
use crate::io::output_dir::OutputDir;
use crate::pipeline::rules::{Decision, Rules};
use crate::pipeline::segment::{self as seg, SegmentConfig, StageTime};
use crate::pipeline::tta::TtaConfig;
use crate::pipeline::window::WindowConfig;

pub const MANIFEST_FILE: &str = "manifest.jsonl";
pub const SUMMARY_FILE: &str = "summary.csv";
/// In each series' output directory, committed with its outputs: its manifest entry.
pub const RECORD_FILE: &str = "batch.json";

#[derive(Args, Debug)]
pub struct BatchArgs {
    /// The archive: a directory tree of DICOM files (any layout; other files are skipped).
    pub root: PathBuf,
    /// Output directory: OUT/<StudyUID>/<SeriesUID>/ per series, manifest.jsonl, summary.csv.
    #[arg(long, required_unless_present_any = ["plan", "merge"])]
    pub out: Option<PathBuf>,
    /// Series selection rules (JSON, MONAI Deploy's format); default: segment's choice per study.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Only the selected series whose UID hashes to shard K of N (0 <= K < N).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// List every series with the rule that selected it or why it is skipped; run nothing.
    #[arg(long)]
    pub plan: bool,
    /// Check that every selected series is done exactly once across these output directories.
    #[arg(long, value_name = "OUT", num_args = 1.., conflicts_with_all = ["out", "plan"])]
    pub merge: Vec<PathBuf>,
    /// Weights (.pth, safetensors or .fmw); repeat for a fold ensemble. Default as for segment.
    #[arg(long = "weights", value_name = "FILE")]
    pub weights: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// The reference's test-time augmentation (13 passes per model).
    #[arg(long)]
    pub tta: bool,
    /// Seed of the test-time augmentation noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sliding-window overlap, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    /// Windows per network call.
    #[arg(long = "sw-batch", default_value_t = 2)]
    pub sw_batch: usize,
    /// CPU worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Some series failed (exit status 3): the batch itself ran.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SomeFailed(pub String);

/// `K/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub k: u64,
    pub n: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s}: expected K/N with 0 <= K < N (e.g. 0/3 for the first of three)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n) = (k.trim().parse::<u64>().map_err(|_| bad())?, n.trim().parse::<u64>().map_err(|_| bad())?);
        if n == 0 || k >= n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl Shard {
    /// Whether series `uid` is this shard's: the first 8 bytes of SHA-256(uid), modulo N.
    pub fn owns(&self, uid: &str) -> bool {
        let h = Sha256::digest(uid.as_bytes());
        u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) % self.n == self.k
    }
}

/// One manifest line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub series_uid: String,
    pub study_uid: String,
    /// `done`, `failed` or `skipped`.
    pub status: String,
    pub reason: String,
    pub description: String,
    pub files: usize,
    /// SHA-256 of the series' files' names (relative to ROOT), sizes and modification times.
    pub input_checksum: String,
    pub weights_sha256: Vec<String>,
    pub settings: String,
    /// The series' output directory relative to OUT (done only).
    pub output: Option<String>,
    pub fm_volume_ml: Option<f64>,
    pub fm_voxels: Option<usize>,
    pub lesion_count: Option<usize>,
    pub left_ml: Option<f64>,
    pub right_ml: Option<f64>,
    pub slices_with_fm: Option<usize>,
    pub seconds: f64,
    pub timings: Vec<StageTime>,
    pub fmseg_version: String,
    pub shard: Option<String>,
    /// UTC, `YYYYMMDDTHHMMSS`.
    pub finished: String,
}

impl Entry {
    /// Same input, weights and settings as `other`.
    fn same_job(&self, other: &Entry) -> bool {
        self.input_checksum == other.input_checksum
            && self.weights_sha256 == other.weights_sha256
            && self.settings == other.settings
    }
}

pub use crate::io::safe_component;

/// The checksum of a series' file list (see [`Entry::input_checksum`]).
fn input_checksum(root: &Path, files: &[&Path]) -> String {
    let mut h = Sha256::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        if let Ok(m) = std::fs::metadata(f) {
            h.update(m.len().to_le_bytes());
            let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            h.update(mtime.map_or(0, |d| d.as_nanos()).to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every manifest line of `out` (a line that does not parse, e.g. cut by a kill, is ignored).
pub fn read_manifest(out: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(out.join(MANIFEST_FILE)) else { return Vec::new() };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Append one manifest line, synced ([`crate::io::append_line`]).
fn append(out: &Path, e: &Entry) -> anyhow::Result<()> {
    let path = out.join(MANIFEST_FILE);
    crate::io::append_line(&path, &serde_json::to_string(e)?).with_context(|| path.display().to_string())
}

/// The record committed with a series' outputs, if it is there and whole.
fn read_record(dir: &Path) -> Option<Entry> {
    serde_json::from_slice(&std::fs::read(dir.join(RECORD_FILE)).ok()?).ok()
}

/// The last entry per series, in series order.
fn latest(entries: &[Entry]) -> BTreeMap<&str, &Entry> {
    let mut m = BTreeMap::new();
    for e in entries {
        m.insert(e.series_uid.as_str(), e);
    }
    m
}

/// `summary.csv` from the manifest: one row per series (its latest entry).
fn write_summary(out: &Path, entries: &[Entry]) -> anyhow::Result<()> {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    let u = |v: Option<usize>| v.map_or(String::new(), |v| v.to_string());
    let mut csv = String::from(
        "study_uid,series_uid,description,status,reason,files,fm_volume_ml,fm_voxels,lesion_count,left_ml,right_ml,\
         slices_with_fm,seconds,output\n",
    );
    for e in latest(entries).values() {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.1},{}\n",
            q(&e.study_uid),
            q(&e.series_uid),
            q(&e.description),
            e.status,
            q(&e.reason),
            e.files,
            o(e.fm_volume_ml),
            u(e.fm_voxels),
            u(e.lesion_count),
            o(e.left_ml),
            o(e.right_ml),
            u(e.slices_with_fm),
            e.seconds,
            q(e.output.as_deref().unwrap_or(""))
        ));
    }
    let tmp = out.join(format!(".{SUMMARY_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, csv).and_then(|_| std::fs::rename(&tmp, out.join(SUMMARY_FILE))).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        out.join(SUMMARY_FILE).display().to_string()
    })
}

/// What the index and the rules say about one series.
struct Planned {
    index: usize,
    decision: Decision,
    /// A file in the series' directory that cannot be read: the series fails with it.
    broken: Option<String>,
}

fn plan(index: &Index, rules: &Rules, shard: Option<Shard>) -> Vec<Planned> {
    let series = &index.list.series;
    let decisions = rules.decide(series);
    // unreadable files, by directory
    let mut bad_dirs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for e in &index.list.unreadable {
        if let Some(dir) = e.file().and_then(Path::parent) {
            bad_dirs.entry(dir.to_path_buf()).or_insert_with(|| e.to_string());
        }
    }
    decisions
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let d = match (d, shard) {
                (Decision::Selected(_), Some(s)) if !s.owns(&series[i].uid) => {
                    Decision::Skipped(format!("another shard's (this is shard {}/{})", s.k, s.n))
                }
                (d, _) => d,
            };
            let broken = index.files(i).iter().find_map(|f| f.parent().and_then(|p| bad_dirs.get(p))).cloned();
            Planned { index: i, decision: d, broken }
        })
        .collect()
}

fn print_plan(index: &Index, planned: &[Planned]) {
    for p in planned {
        let s = &index.list.series[p.index];
        let (what, why) = match &p.decision {
            Decision::Selected(r) => ("SELECT", r.clone()),
            Decision::Skipped(r) => ("skip  ", r.clone()),
        };
        let broken = p.broken.as_ref().map(|b| format!(" [will fail: {b}]")).unwrap_or_default();
        crate::outln!(
            "{what} {} {} ({} {}, {} slices): {why}{broken}",
            s.study_uid.as_deref().unwrap_or("-"),
            s.uid,
            s.modality,
            if s.description.is_empty() { "-" } else { &s.description },
            s.slices
        );
    }
}

pub fn run(a: BatchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let shard = a.shard.as_deref().map(str::parse::<Shard>).transpose().map_err(anyhow::Error::msg)?;
    if !(0.0..1.0).contains(&a.overlap) {
        bail!("--overlap {} must be in [0, 1)", a.overlap);
    }
    if a.sw_batch == 0 {
        bail!("--sw-batch must be at least 1");
    }
    let rules = match &a.rules {
        Some(p) => Rules::read(p).map_err(|e| anyhow::anyhow!("--rules: {e}"))?,
        None => Rules::automatic(),
    };
    if !a.root.is_dir() {
        bail!("{}: not a directory (fmseg batch indexes a tree of DICOM files)", a.root.display());
    }
    if let Some(out) = &a.out {
        // fm_seg.dcm files are DICOM: inside the archive a rerun would index them as series
        let (root, out_abs) = (a.root.canonicalize()?, std::path::absolute(out)?);
        let out_real = out_abs
            .ancestors()
            .find_map(|p| p.canonicalize().ok().map(|c| c.join(out_abs.strip_prefix(p).unwrap_or(Path::new("")))));
        if out_real.is_some_and(|o| o.starts_with(&root)) {
            bail!(
                "--out {} is inside the archive {}: its DICOM SEG files would be indexed as series by the next run; \
                 choose an output directory outside it",
                out.display(),
                a.root.display()
            );
        }
    }
    eprintln!("fmseg batch: indexing {}", a.root.display());
    let index = Index::build(&a.root).map_err(|e| anyhow::anyhow!("{e}"))?;
    let l = &index.list;
    eprintln!(
        "fmseg batch: {} series in {:.1} s; {} non-DICOM and {} non-image file(s) skipped, {} unreadable",
        l.series.len(),
        started.elapsed().as_secs_f64(),
        l.skipped_non_dicom,
        l.skipped_non_image,
        l.unreadable.len()
    );
    if l.series.is_empty() {
        bail!(
            "{}: no DICOM image found ({} non-DICOM and {} non-image file(s), {} unreadable{})",
            a.root.display(),
            l.skipped_non_dicom,
            l.skipped_non_image,
            l.unreadable.len(),
            l.unreadable.first().map(|e| format!(", e.g. {e}")).unwrap_or_default()
        );
    }
    let planned = plan(&index, &rules, shard);
    let selected: Vec<&Planned> = planned.iter().filter(|p| matches!(p.decision, Decision::Selected(_))).collect();
    eprintln!("fmseg batch: {} of {} series selected", selected.len(), l.series.len());
    if a.plan {
        print_plan(&index, &planned);
        return Ok(());
    }
    if !a.merge.is_empty() {
        return merge(&index, &selected, &a.merge);
    }
    let Some(out) = &a.out else { bail!("--out is required") };

    // The output directory: one batch (per shard) at a time.
    std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    let lock_name = match shard {
        Some(s) => format!(".fmseg-batch-{}-of-{}.lock", s.k, s.n),
        None => ".fmseg-batch.lock".to_string(),
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(&lock_name))
        .with_context(|| format!("--out {}: cannot write into it", out.display()))?;
    if lock.try_lock().is_err() {
        bail!("--out {}: another fmseg batch is running into it (it holds {lock_name})", out.display());
    }
    // a summary a killed run was writing
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(&format!(".{SUMMARY_FILE}.")).and_then(|r| r.strip_suffix(".tmp"));
        // another shard's, while it runs, is left alone
        if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
            let _ = std::fs::remove_file(e.path());
        }
    }

    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join(super::segment::BUNDLED_WEIGHTS);
    let choices = resolve_weights(&a.weights, std::env::var_os(super::segment::WEIGHTS_ENV), &bundled)?;
    let models = Models::load(&choices, a.device, a.threads)?;
    for n in &models.info.notices {
        eprintln!("fmseg batch: NOTICE: {n}");
    }
    let cfg = SegmentConfig {
        window: WindowConfig { overlap: a.overlap, sw_batch: a.sw_batch, ..WindowConfig::default() },
        tta: a.tta.then_some(TtaConfig { seed: a.seed, ..TtaConfig::default() }),
        ..SegmentConfig::default()
    };
    let parameters = seg_parameters(&models.info.weights, &a.tta, a.seed, a.overlap);
    let settings = format!("tta {}; seed {}; overlap {}; seg", a.tta, a.seed, a.overlap);
    let weights_sha: Vec<String> = models.info.weights.iter().map(|w| w.sha256.clone()).collect();
    let shard_text = shard.map(|s| format!("{}/{}", s.k, s.n));

    // What is left to do; series the rules skip are recorded once.
    let earlier = read_manifest(out);
    let last = latest(&earlier);
    let blank = |p: &Planned| -> Entry {
        let s = &index.list.series[p.index];
        let files = index.files(p.index);
        Entry {
            series_uid: s.uid.clone(),
            study_uid: s.study_uid.clone().unwrap_or_default(),
            status: String::new(),
            reason: String::new(),
            description: s.description.clone(),
            files: files.len(),
            input_checksum: input_checksum(&a.root, &files),
            weights_sha256: weights_sha.clone(),
            settings: settings.clone(),
            output: None,
            fm_volume_ml: None,
            fm_voxels: None,
            lesion_count: None,
            left_ml: None,
            right_ml: None,
            slices_with_fm: None,
            seconds: 0.0,
            timings: Vec::new(),
            fmseg_version: env!("CARGO_PKG_VERSION").into(),
            shard: shard_text.clone(),
            finished: String::new(),
        }
    };
    let stamp = || {
        let (d, t) = crate::io::dicom::write::utc_now();
        format!("{d}T{t}")
    };
    for p in &planned {
        if let Decision::Skipped(reason) = &p.decision {
            if shard.is_some() && reason.starts_with("another shard") {
                continue;
            }
            let s = &index.list.series[p.index];
            if last.get(s.uid.as_str()).is_none_or(|e| e.status != "skipped" || &e.reason != reason) {
                let e = Entry { status: "skipped".into(), reason: reason.clone(), finished: stamp(), ..blank(p) };
                append(out, &e)?;
            }
        }
    }
    let mut todo = Vec::new();
    let mut already = 0usize;
    for p in &selected {
        let e = blank(p);
        let done = last.get(e.series_uid.as_str()).is_some_and(|d| {
            d.status == "done"
                && d.same_job(&e)
                && d.output.as_ref().is_some_and(|o| out.join(o).join("report.json").is_file())
        });
        // a series committed by a run killed before it appended the manifest line
        let dir = out.join(safe_component(&e.study_uid)).join(safe_component(&e.series_uid));
        let committed =
            read_record(&dir).filter(|r| r.status == "done" && r.same_job(&e) && dir.join("report.json").is_file());
        if done {
            already += 1;
        } else if let Some(r) = committed {
            append(out, &r)?;
            already += 1;
        } else {
            todo.push((*p, e));
        }
    }
    eprintln!("fmseg batch: {} to do, {already} done earlier with the same input, weights and settings", todo.len());

    // Load -> segment -> write, overlapped.
    let progress = Progress::new(todo.len());
    let total = todo.len();
    let (mut n_done, mut n_failed) = (0usize, 0usize);
    std::thread::scope(|sc| -> anyhow::Result<()> {
        let (load_tx, load_rx) = sync_channel(1);
        let (write_tx, write_rx) = sync_channel::<(Entry, Job)>(1);
        let index = &index;
        let root = &a.root;
        let items: Vec<(&Planned, Entry)> = todo;
        sc.spawn(move || {
            for (p, e) in items {
                let t = Instant::now();
                let reason = match &p.decision {
                    Decision::Selected(r) => r.clone(),
                    Decision::Skipped(r) => r.clone(),
                };
                let loaded = match &p.broken {
                    Some(b) => Err(b.clone()),
                    None => index
                        .load(p.index, &reason)
                        .map(|l| seg::from_series(root, l))
                        .and_then(|l| seg::validate(root, &l.image).map(|_| l))
                        .map_err(|e| e.to_string()),
                };
                let seconds = t.elapsed().as_secs_f64();
                if load_tx.send((e, loaded, seconds, t)).is_err() {
                    break;
                }
            }
        });
        let info = &models.info;
        let cfg_ref = &cfg;
        let parameters = &parameters;
        let progress = &progress;
        let writer = sc.spawn(move || -> anyhow::Result<(usize, usize)> {
            let (mut done, mut failed) = (0, 0);
            for (mut e, job) in write_rx {
                let t0 = job.started;
                let written_at = Instant::now();
                match job.result {
                    Ok(result) => {
                        let dir = out.join(safe_component(&e.study_uid)).join(safe_component(&e.series_uid));
                        let mut record = e.clone();
                        record.status = "done".into();
                        record.reason = result.input.series_choice.clone().unwrap_or_default();
                        record.output = Some(dir.strip_prefix(out).unwrap_or(&dir).to_string_lossy().into_owned());
                        record.timings = job.timings.clone();
                        record.seconds = record.timings.iter().map(|t| t.seconds).sum();
                        record.finished = stamp();
                        let make = |r: &crate::pipeline::report::Report| {
                            let f = &r.findings;
                            let mut d = record.clone();
                            d.fm_volume_ml = Some(f.fm_volume_ml);
                            d.fm_voxels = Some(f.fm_voxels);
                            d.lesion_count = Some(f.lesion_count);
                            d.left_ml = Some(f.left_ml);
                            d.right_ml = Some(f.right_ml);
                            d.slices_with_fm = Some(f.slices_with_fm.len());
                            serde_json::to_vec_pretty(&d).unwrap_or_default()
                        };
                        let extras = Extras {
                            truth: None,
                            seg: Some(parameters.clone()),
                            timings: job.timings.clone(),
                            started: t0,
                            sidecar: Some((RECORD_FILE, &make)),
                            classified: None,
                        };
                        let written = OutputDir::open(&dir)
                            .map_err(|e| WriteError::Write(anyhow::anyhow!("{e}")))
                            .and_then(|o| write_result(o, &result, cfg_ref, info, extras));
                        match written {
                            Ok(w) => {
                                // the manifest line is the record committed with the outputs
                                e = read_record(&dir).unwrap_or(record);
                                done += 1;
                                progress.series(&e, &w.summary);
                                append(out, &e)?;
                                continue;
                            }
                            Err(WriteError::Make(err)) => {
                                e.status = "failed".into();
                                e.reason = err.to_string();
                            }
                            Err(WriteError::Write(err)) => {
                                // a disk problem stops the batch: every later series would fail the same way
                                return Err(err.context(format!("writing {}", dir.display())));
                            }
                        }
                    }
                    Err(reason) => {
                        e.status = "failed".into();
                        e.reason = reason;
                    }
                }
                failed += 1;
                progress.series(&e, "");
                e.timings = job.timings;
                e.timings.push(StageTime { stage: "write".into(), seconds: written_at.elapsed().as_secs_f64() });
                e.seconds = e.timings.iter().map(|t| t.seconds).sum();
                e.finished = stamp();
                append(out, &e)?;
            }
            Ok((done, failed))
        });
        for (e, loaded, load_seconds, t) in load_rx {
            let mut timings = vec![StageTime { stage: "load".into(), seconds: load_seconds }];
            let result = loaded.and_then(|l| models.segment(l, cfg_ref, &mut |_| {}).map_err(|e| e.to_string()));
            if let Ok(r) = &result {
                timings.extend(r.timings.iter().cloned());
            }
            if write_tx.send((e, Job { result, timings, started: t })).is_err() {
                break;
            }
        }
        drop(write_tx);
        let (d, f) = writer.join().map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
        n_done = d;
        n_failed = f;
        Ok(())
    })?;
    progress.finish();
    let entries = read_manifest(out);
    write_summary(out, &entries)?;
    eprintln!(
        "fmseg batch: {n_done} done, {n_failed} failed, {already} done earlier, of {total} to do, in {:.1} s; {} and {} in {}",
        started.elapsed().as_secs_f64(),
        MANIFEST_FILE,
        SUMMARY_FILE,
        out.display()
    );
    if n_failed > 0 {
        return Err(SomeFailed(format!(
            "{n_failed} series failed (their reasons are in {}); the others are done",
            out.join(MANIFEST_FILE).display()
        ))
        .into());
    }
    Ok(())
}

/// One series between the engine and the writer.
struct Job {
    result: Result<seg::SegmentResult, String>,
    timings: Vec<StageTime>,
    started: Instant,
}

/// Progress on stderr: a bar with counts and ETA on a terminal, one line per series otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    count: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template(
                "fmseg batch: [{bar:40}] {pos}/{len} series, {elapsed} elapsed, about {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            indicatif::ProgressBar::new(total as u64).with_style(style)
        });
        Progress { bar, total, count: Default::default() }
    }

    fn series(&self, e: &Entry, summary: &str) {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let what = if e.status == "done" { summary.to_string() } else { format!("FAILED: {}", e.reason) };
        let line = format!("fmseg batch: [{n}/{}] {} {}: {what}", self.total, e.study_uid, e.series_uid);
        match &self.bar {
            Some(b) => {
                b.println(line);
                b.set_position(n as u64);
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `--merge`: every selected series done exactly once across `outs`; summary.csv in each.
fn merge(index: &Index, selected: &[&Planned], outs: &[PathBuf]) -> anyhow::Result<()> {
    let mut done: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for out in outs {
        if !out.join(MANIFEST_FILE).is_file() {
            bail!("{}: no {MANIFEST_FILE} (not a batch output directory)", out.display());
        }
        let entries = read_manifest(out);
        for (uid, e) in latest(&entries) {
            match e.status.as_str() {
                "done" if e.output.as_ref().is_some_and(|o| out.join(o).join("report.json").is_file()) => {
                    done.entry(uid.to_string()).or_default().push(out.display().to_string())
                }
                "failed" => {
                    failed.insert(uid.to_string(), e.reason.clone());
                }
                _ => {}
            }
        }
        write_summary(out, &entries)?;
    }
    let (mut ok, mut problems) = (0usize, Vec::new());
    for p in selected {
        let s: &SeriesInfo = &index.list.series[p.index];
        match done.get(&s.uid).map(Vec::len) {
            Some(1) => ok += 1,
            Some(n) => problems.push(format!("{} done {n} times ({})", s.uid, done[&s.uid].join(", "))),
            None => match failed.get(&s.uid) {
                Some(r) => problems.push(format!("{} failed: {r}", s.uid)),
                None => problems.push(format!("{} not done", s.uid)),
            },
        }
    }
    crate::outln!("{ok} of {} selected series done exactly once", selected.len());
    for p in &problems {
        crate::outln!("{p}");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SomeFailed(format!("{} of {} selected series are not done exactly once", problems.len(), selected.len()))
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_every_uid_once() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { k: 1, n: 3 }));
        for bad in ["3/3", "1", "a/b", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..3).map(|k| Shard { k, n: 3 }).collect();
        let mut counts = [0usize; 3];
        for i in 0..300 {
            let uid = format!("1.2.826.0.1.{i}");
            let owners: Vec<usize> = (0..3).filter(|&k| shards[k].owns(&uid)).collect();
            assert_eq!(owners.len(), 1);
            counts[owners[0]] += 1;
        }
        assert!(counts.iter().all(|&c| c > 70), "{counts:?}");
    }

    #[test]
    fn uids_become_safe_path_components() {
        assert_eq!(safe_component("1.2.840.5"), "1.2.840.5");
        assert_eq!(safe_component("../../etc"), ".._.._etc");
        assert_eq!(safe_component(".."), "_..");
        assert_eq!(safe_component(""), "_");
        assert_eq!(safe_component("a/b\\c d"), "a_b_c_d");
    }
}
