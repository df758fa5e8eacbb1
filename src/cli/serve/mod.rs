//! `fmseg serve`: a DICOM node. Scanners and PACS push series to it by C-STORE; each complete
//! series is segmented by an engine kept resident and its DICOM SEG sent on by C-STORE.
//!
//! - **Receive** ([`crate::io::dicom::net`]): one thread per association (at most
//!   `--max-associations`, more are rejected as transiently busy). Every object is written
//!   and synced under `DIR/incoming/<StudyUID>/<SeriesUID>/` before its C-STORE success is
//!   answered.
//! - **Complete**: a series is complete `--series-timeout` seconds after its last instance.
//! - **Segment**: one series at a time (the engine uses every core, or the whole GPU). The
//!   queue is the complete series on disk, oldest first, so it is bounded by the disk, never
//!   by memory. The series rules are `fmseg batch`'s (`--rules`, else segment's automatic
//!   choice among the series of its study received so far); the outputs are batch's, under
//!   `DIR/results/<StudyUID>/<SeriesUID>/`, committed as a group.
//! - **Send** (`--send-to AET@HOST:PORT`): the SEG by C-STORE, retried with doubling back-off.
//! - **Journal** (`DIR/journal.jsonl`, [`journal`]): every outcome is appended and synced
//!   before it is acted on. After a kill -9 the next start segments every series received but
//!   not done (or whose files changed since) and sends every SEG done but not sent, each once.
//!   The one window left: a kill between the destination's acknowledgement of a SEG and the
//!   journal line after it sends that SEG again on restart, with the same SOP Instance UID
//!   (the SEG's UIDs are derived from the source series and the settings), which a PACS
//!   treats as the same object.
//! - **Logs**: one line per association and per series on stderr, with timings; UIDs and AE
//!   titles only, never a patient's name or ID.
//!
//! `fmseg serve --status DIR` prints the state of every series from the journal and the disk.

pub mod journal;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};

use super::segment::{resolve_weights, seg_parameters, write_result, Extras, Models, WriteError, SEG_FILE};
use crate::engine::Device;
use crate::io::dicom::net::inbox::{Inbox, Stored};
use crate::io::dicom::net::scp::{reject_busy, Scp, ScpConfig};
use crate::io::dicom::net::{check_ae_title, scu, Peer};
use crate::io::dicom::Index;
use crate::io::output_dir::OutputDir;
use crate::io::safe_component;
use crate::pipeline::rules::{Decision, Rules};
use crate::pipeline::segment::{self as seg, SegmentConfig, StageTime};
use crate::pipeline::tta::TtaConfig;
use crate::pipeline::window::WindowConfig;
use journal::{Event, Journal};

pub const INCOMING_DIR: &str = "incoming";
pub const RESULTS_DIR: &str = "results";
/// Held (flock) while a node runs on DIR; holds its pid and address.
pub const LOCK_FILE: &str = ".fmseg-serve.lock";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the lock file and the log say which).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:11112")]
    pub listen: String,
    /// This node's AE title (associations calling another title are rejected).
    #[arg(long, default_value = "FMSEG")]
    pub aet: String,
    /// The node's directory: received objects, results, journal.
    #[arg(long, value_name = "DIR", required_unless_present = "status")]
    pub out: Option<PathBuf>,
    /// Send each SEG by C-STORE to this node.
    #[arg(long, value_name = "AET@HOST:PORT")]
    pub send_to: Option<Peer>,
    /// Series selection rules (JSON, as for `fmseg batch`); default: segment's choice per study.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// A series is complete this many seconds after its last instance.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub series_timeout: f64,
    /// Calling AE titles allowed to associate (comma-separated); default: any.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub allow_aet: Vec<String>,
    /// Print the state of every series of DIR (journal and disk) and exit.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub status: Option<PathBuf>,
    /// Weights (.pth, safetensors or .fmw); repeat for a fold ensemble. Default as for segment.
    #[arg(long = "weights", value_name = "FILE")]
    pub weights: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// CPU worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// The reference's test-time augmentation (13 passes per model).
    #[arg(long)]
    pub tta: bool,
    /// Sliding-window overlap, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    /// Associations served at once; more are rejected as transiently busy.
    #[arg(long, default_value_t = 16)]
    pub max_associations: usize,
    /// The largest PDU received, in bytes.
    #[arg(long, default_value_t = 65536)]
    pub max_pdu: u32,
    /// The largest object accepted, in MB; a larger one aborts its association.
    #[arg(long, value_name = "MB", default_value_t = 1024)]
    pub max_object_mb: u64,
    /// Objects are refused (status A700) while the disk has less than this free, in MB.
    #[arg(long, value_name = "MB", default_value_t = 1024)]
    pub min_free_mb: u64,
    /// An association silent this long is aborted; also the send timeout, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub association_timeout: f64,
    /// Store objects of every SOP class (non-images under incoming/_other/), not only MR.
    #[arg(long)]
    pub accept_other: bool,
    /// Attempts to send each SEG before it is journaled as send-failed (retried at the next start).
    #[arg(long, default_value_t = 8)]
    pub send_attempts: u32,
    /// The first wait between attempts, in seconds; it doubles, up to 60 s.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub retry_delay: f64,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.status {
        return print_status(dir);
    }
    let Some(dir) = a.out.clone() else { bail!("--out DIR is required") };
    check_ae_title(&a.aet).map_err(|e| anyhow::anyhow!("--aet: {e}"))?;
    for t in &a.allow_aet {
        check_ae_title(t).map_err(|e| anyhow::anyhow!("--allow-aet: {e}"))?;
    }
    if !(a.series_timeout.is_finite() && a.series_timeout >= 0.0) {
        bail!("--series-timeout {} must be a number of seconds >= 0", a.series_timeout);
    }
    if !(a.association_timeout.is_finite() && a.association_timeout > 0.0) {
        bail!("--association-timeout {} must be a number of seconds > 0", a.association_timeout);
    }
    if !(a.retry_delay.is_finite() && a.retry_delay >= 0.0) || a.send_attempts == 0 {
        bail!("--retry-delay must be >= 0 and --send-attempts at least 1");
    }
    if !(0.0..1.0).contains(&a.overlap) {
        bail!("--overlap {} must be in [0, 1)", a.overlap);
    }
    if a.max_associations == 0 || a.max_pdu < 4096 || a.max_object_mb == 0 {
        bail!("--max-associations and --max-object-mb must be at least 1, --max-pdu at least 4096");
    }
    let rules = match &a.rules {
        Some(p) => Rules::read(p).map_err(|e| anyhow::anyhow!("--rules: {e}"))?,
        None => Rules::automatic(),
    };

    // One node per directory.
    std::fs::create_dir_all(&dir).with_context(|| format!("--out {}", dir.display()))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("--out {}: cannot write into it", dir.display()))?;
    if lock.try_lock().is_err() {
        let who = std::fs::read_to_string(&lock_path).unwrap_or_default();
        bail!("--out {}: another fmseg serve runs on it ({})", dir.display(), who.trim());
    }

    // The engine first: bad weights stop the node before it accepts anything.
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join(super::segment::BUNDLED_WEIGHTS);
    let choices = resolve_weights(&a.weights, std::env::var_os(super::segment::WEIGHTS_ENV), &bundled)?;
    let models = Models::load(&choices, a.device, a.threads)?;
    for n in &models.info.notices {
        eprintln!("fmseg serve: NOTICE: {n}");
    }
    let listener = TcpListener::bind(&a.listen).with_context(|| format!("--listen {}", a.listen))?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut l = &lock;
        l.set_len(0)?;
        writeln!(l, "pid {} listening on {addr} as {}", std::process::id(), a.aet)?;
        l.sync_all()?;
    }

    let inbox = Inbox::new(&dir.join(INCOMING_DIR), &a.aet, a.min_free_mb << 20)
        .with_context(|| dir.join(INCOMING_DIR).display().to_string())?;
    let node = Node {
        dir: dir.clone(),
        journal: Journal::open(&dir),
        timeout: Duration::from_secs_f64(a.series_timeout),
        series: Mutex::new(BTreeMap::new()),
        wake: Condvar::new(),
    };
    let (send_tx, send_rx) = channel::<Delivery>();
    node.recover(&inbox, a.send_to.is_some(), &send_tx)?;
    let scp = Scp::new(ScpConfig {
        aet: a.aet.clone(),
        allow_aet: a.allow_aet.clone(),
        max_pdu: a.max_pdu,
        max_object_bytes: a.max_object_mb << 20,
        timeout: Duration::from_secs_f64(a.association_timeout),
        accept_other: a.accept_other,
    });
    let cfg = SegmentConfig {
        window: WindowConfig { overlap: a.overlap, ..WindowConfig::default() },
        tta: a.tta.then_some(TtaConfig::default()),
        ..SegmentConfig::default()
    };
    let parameters = seg_parameters(&models.info.weights, &a.tta, 0, a.overlap);
    eprintln!(
        "fmseg serve: listening on {addr} as {} ({}; series complete after {} s; results in {}{})",
        a.aet,
        models.info.device,
        a.series_timeout,
        dir.join(RESULTS_DIR).display(),
        a.send_to.as_ref().map(|p| format!("; SEG to {p}")).unwrap_or_default()
    );
    if let Some(p) = &a.send_to {
        if let Err(e) = scu::echo(p, &a.aet, Duration::from_secs(5)) {
            eprintln!("fmseg serve: warning: the destination does not answer C-ECHO now ({e}); SEGs will be retried");
        }
    }

    std::thread::scope(|sc| -> anyhow::Result<()> {
        let node = &node;
        // segmentation: one series at a time
        let worker = Worker { node, models: &models, rules: &rules, cfg: &cfg, parameters: &parameters };
        let send_to = a.send_to.clone();
        let tx = send_tx.clone();
        sc.spawn(move || worker.run(send_to.is_some().then_some(tx)));
        // delivery
        if let Some(peer) = a.send_to.clone() {
            let (aet, attempts) = (a.aet.clone(), a.send_attempts);
            let delay = Duration::from_secs_f64(a.retry_delay);
            let timeout = Duration::from_secs_f64(a.association_timeout);
            sc.spawn(move || deliver(node, send_rx, &peer, &aet, attempts, delay, timeout));
        }
        drop(send_tx);
        // associations
        let active = Arc::new(AtomicUsize::new(0));
        let (scp, inbox) = (&scp, &inbox);
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("fmseg serve: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let peer_addr = stream.peer_addr().map(|p| p.to_string()).unwrap_or_else(|_| "?".into());
            if active.fetch_add(1, Ordering::SeqCst) >= a.max_associations {
                active.fetch_sub(1, Ordering::SeqCst);
                eprintln!(
                    "fmseg serve: association from {peer_addr} rejected: {} associations already (--max-associations)",
                    a.max_associations
                );
                sc.spawn(move || reject_busy(stream));
                continue;
            }
            let active = active.clone();
            sc.spawn(move || {
                // a panic in one association drops it, never the node (nor its slot)
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    associate(stream, &peer_addr, scp, inbox, node)
                }));
                if let Err(p) = run {
                    eprintln!(
                        "fmseg serve: association peer={peer_addr} end=dropped: internal error: {}",
                        panic_text(&p)
                    );
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        Ok(())
    })
}

/// One association, and its log line.
fn associate(stream: TcpStream, peer_addr: &str, scp: &Scp, inbox: &Inbox, node: &Node) {
    let on_stored = |s: &Stored| node.received(s);
    let log = scp.serve(stream, inbox, &on_stored);
    eprintln!(
        "fmseg serve: association peer={peer_addr} calling={} stored={} refused={} echoes={} bytes={} seconds={:.2} end={}",
        if log.calling_aet.is_empty() { "-" } else { &log.calling_aet },
        log.stored,
        log.refused,
        log.echoes,
        log.bytes,
        log.seconds,
        log.end
    );
}

/// A series being received.
struct Receiving {
    study_uid: String,
    /// When its last instance was stored.
    last: Instant,
}

/// The shared state: the series being received, and what wakes the worker.
struct Node {
    dir: PathBuf,
    journal: Journal,
    timeout: Duration,
    series: Mutex<BTreeMap<String, Receiving>>,
    wake: Condvar,
}

/// A SEG to send.
struct Delivery {
    series_uid: String,
    study_uid: String,
    seg: PathBuf,
    seg_uid: String,
    /// When the series' last instance was stored, if in this process (for the latency).
    received: Option<Instant>,
}

impl Node {
    fn received(&self, s: &Stored) {
        if s.other {
            return;
        }
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(s.series_uid.clone(), Receiving { study_uid: s.study_uid.clone(), last: Instant::now() });
        self.wake.notify_all();
    }

    /// After a restart: series received but not done (or changed since) are complete again
    /// after the series timeout; SEGs done but not sent are sent.
    fn recover(&self, inbox: &Inbox, sending: bool, send: &Sender<Delivery>) -> anyhow::Result<()> {
        let records = journal::fold(&self.journal.read());
        let (mut pending, mut unsent) = (0, 0);
        for (study_uid, series_uid, dir) in series_dirs(inbox.root()) {
            let (n, sum) = files_checksum(&dir);
            let rec = records.get(&series_uid);
            let judged = rec.and_then(|r| r.outcome.as_ref()).is_some_and(|o| o.files_checksum == sum);
            if n > 0 && !judged {
                pending += 1;
                self.series
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(series_uid.clone(), Receiving { study_uid: study_uid.clone(), last: Instant::now() });
            }
        }
        if sending {
            for (uid, r) in &records {
                let Some(o) = r.outcome.as_ref().filter(|_| r.unsent()) else { continue };
                let Some(results) = &o.results else { continue };
                if self.series.lock().unwrap_or_else(|p| p.into_inner()).contains_key(uid) {
                    continue; // segmented again first: its new SEG is sent then
                }
                unsent += 1;
                let _ = send.send(Delivery {
                    series_uid: uid.clone(),
                    study_uid: o.study_uid.clone(),
                    seg: self.dir.join(results).join(SEG_FILE),
                    seg_uid: o.seg_sop_instance_uid.clone(),
                    received: None,
                });
            }
        }
        if pending + unsent > 0 {
            eprintln!("fmseg serve: resuming: {pending} series to segment, {unsent} SEG(s) to send");
        }
        Ok(())
    }

    /// The next complete series (the oldest), waiting for one.
    fn next_complete(&self) -> (String, String, Instant) {
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            let due = m.iter().filter(|(_, r)| now.duration_since(r.last) >= self.timeout).min_by_key(|(_, r)| r.last);
            if let Some((uid, _)) = due {
                let uid = uid.clone();
                let r = m.remove(&uid).expect("just found");
                return (uid, r.study_uid, r.last);
            }
            let wait = m.values().map(|r| (r.last + self.timeout).saturating_duration_since(now)).min();
            m = match wait {
                Some(w) => {
                    self.wake.wait_timeout(m, w.max(Duration::from_millis(5))).unwrap_or_else(|p| p.into_inner()).0
                }
                None => self.wake.wait(m).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// `incoming/<study>/<series>/` directories: (study UID, series UID, path). The UIDs are read
/// back from the directory names, which are the UIDs themselves (valid UIDs need no escaping).
fn series_dirs(root: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let mut studies: Vec<_> = std::fs::read_dir(root).into_iter().flatten().flatten().collect();
    studies.sort_by_key(|e| e.file_name());
    for st in studies {
        let name = st.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == crate::io::dicom::net::inbox::OTHER_DIR || !st.path().is_dir() {
            continue;
        }
        let mut series: Vec<_> = std::fs::read_dir(st.path()).into_iter().flatten().flatten().collect();
        series.sort_by_key(|e| e.file_name());
        for se in series.into_iter().filter(|e| e.path().is_dir()) {
            out.push((name.clone(), se.file_name().to_string_lossy().into_owned(), se.path()));
        }
    }
    out
}

/// The `.dcm` files of a series directory: their count and a checksum of names and sizes (the
/// same objects sent again leave it unchanged, so the series is not segmented twice).
fn files_checksum(dir: &Path) -> (usize, String) {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n.ends_with(".dcm") && !n.starts_with('.')).then(|| (n, e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for (n, len) in &files {
        h.update(n.as_bytes());
        h.update([0]);
        h.update(len.to_le_bytes());
    }
    (files.len(), h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

struct Worker<'a> {
    node: &'a Node,
    models: &'a Models,
    rules: &'a Rules,
    cfg: &'a SegmentConfig,
    parameters: &'a str,
}

impl Worker<'_> {
    fn run(&self, send: Option<Sender<Delivery>>) {
        loop {
            let (series_uid, study_uid, last) = self.node.next_complete();
            let t = Instant::now();
            // a panic in one series' segmentation fails that series, never the node
            let run =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(&series_uid, &study_uid, last)));
            let (event, delivery) = run.unwrap_or_else(|p| {
                let e = Event {
                    event: "failed".into(),
                    series_uid: series_uid.clone(),
                    study_uid: study_uid.clone(),
                    reason: format!("internal error: {}", panic_text(&p)),
                    ..Event::default()
                };
                (e, None)
            });
            let line = format!(
                "fmseg serve: series study={study_uid} series={series_uid} instances={} status={}{}{} seconds={:.2}",
                event.instances,
                event.event,
                event.fm_volume_ml.map(|v| format!(" fm_ml={v:.3}")).unwrap_or_default(),
                if event.reason.is_empty() { String::new() } else { format!(" reason={:?}", event.reason) },
                t.elapsed().as_secs_f64()
            );
            if event.event == "unchanged" {
                eprintln!("{line}");
                continue;
            }
            if let Err(e) = self.node.journal.append(event) {
                // without the journal the node would repeat or lose work: stop
                eprintln!("fmseg serve: error: {e:#}; stopping");
                std::process::exit(crate::cli::exit::FAILURE);
            }
            eprintln!("{line}");
            if let (Some(tx), Some(d)) = (&send, delivery) {
                let _ = tx.send(d);
            }
        }
    }

    /// Judge, segment and write one complete series.
    fn process(&self, series_uid: &str, study_uid: &str, last: Instant) -> (Event, Option<Delivery>) {
        let inbox_dir = self.node.dir.join(INCOMING_DIR);
        let study_dir = inbox_dir.join(safe_component(study_uid));
        let series_dir = study_dir.join(safe_component(series_uid));
        let (instances, sum) = files_checksum(&series_dir);
        let mut e = Event {
            series_uid: series_uid.into(),
            study_uid: study_uid.into(),
            instances,
            files_checksum: sum.clone(),
            ..Event::default()
        };
        let records = journal::fold(&self.node.journal.read());
        if records.get(series_uid).and_then(|r| r.outcome.as_ref()).is_some_and(|o| o.files_checksum == sum) {
            e.event = "unchanged".into();
            e.reason = "the same objects again: not segmented twice".into();
            return (e, None);
        }
        let fail = |mut e: Event, why: String| {
            e.event = "failed".into();
            e.reason = why;
            (e, None)
        };
        let t0 = Instant::now();
        // the series among those of its study received so far, as the rules see an archive
        let index = match Index::build(&study_dir) {
            Ok(i) => i,
            Err(err) => return fail(e, err.to_string()),
        };
        if let Some(bad) = index.list.unreadable.iter().find(|u| u.file().is_some_and(|f| f.starts_with(&series_dir))) {
            return fail(e, bad.to_string());
        }
        let Some(i) = index.list.series.iter().position(|s| s.uid == series_uid) else {
            return fail(e, "no image of the series could be read".into());
        };
        let reason = match self.rules.decide(&index.list.series).swap_remove(i) {
            Decision::Selected(r) => r,
            Decision::Skipped(r) => {
                e.event = "skipped".into();
                e.reason = r;
                return (e, None);
            }
        };
        let loaded = index
            .load(i, &reason)
            .map(|l| seg::from_series(&series_dir, l))
            .and_then(|l| seg::validate(&series_dir, &l.image).map(|_| l));
        let load_s = t0.elapsed().as_secs_f64();
        let result = match loaded.and_then(|l| self.models.segment(l, self.cfg, &mut |_| {})) {
            Ok(r) => r,
            Err(err) => return fail(e, err.to_string()),
        };
        let mut timings = vec![StageTime { stage: "load".into(), seconds: load_s }];
        timings.extend(result.timings.iter().cloned());
        let rel = Path::new(RESULTS_DIR).join(safe_component(study_uid)).join(safe_component(series_uid));
        let out = self.node.dir.join(&rel);
        let extras = Extras {
            truth: None,
            seg: Some(self.parameters.to_string()),
            timings,
            started: t0,
            sidecar: None,
            classified: None,
        };
        let written = OutputDir::open(&out)
            .map_err(|err| WriteError::Write(anyhow::anyhow!("{err}")))
            .and_then(|o| write_result(o, &result, self.cfg, &self.models.info, extras));
        let w = match written {
            Ok(w) => w,
            Err(WriteError::Make(err)) => return fail(e, err.to_string()),
            Err(WriteError::Write(err)) => return fail(e, format!("writing {}: {err:#}", out.display())),
        };
        let seg = out.join(SEG_FILE);
        let seg_uid = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .open_file(&seg)
            .map(|o| o.meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_string())
            .unwrap_or_default();
        e.event = "done".into();
        e.reason = reason;
        e.results = Some(rel.to_string_lossy().into_owned());
        e.seg_sop_instance_uid = seg_uid.clone();
        e.fm_volume_ml = Some(w.report.findings.fm_volume_ml);
        e.seconds = Some(t0.elapsed().as_secs_f64());
        let d =
            Delivery { series_uid: series_uid.into(), study_uid: study_uid.into(), seg, seg_uid, received: Some(last) };
        (e, Some(d))
    }
}

/// Send each SEG, retrying with doubling back-off; journal the outcome.
fn deliver(
    node: &Node,
    rx: Receiver<Delivery>,
    peer: &Peer,
    aet: &str,
    attempts: u32,
    first_delay: Duration,
    timeout: Duration,
) {
    for d in rx {
        let t = Instant::now();
        let mut delay = first_delay;
        let mut outcome = Err(String::new());
        let mut tries = 0;
        while tries < attempts {
            tries += 1;
            let sent = std::panic::catch_unwind(|| scu::store_file(&d.seg, peer, aet, timeout))
                .unwrap_or_else(|p| Err(scu::SendError::Transient(format!("internal error: {}", panic_text(&p)))));
            match sent {
                Ok(status) => {
                    outcome = Ok(status);
                    break;
                }
                Err(e) => {
                    eprintln!(
                        "fmseg serve: sending the SEG of series {} to {peer}: attempt {tries}: {e}",
                        d.series_uid
                    );
                    outcome = Err(e.to_string());
                    if tries < attempts {
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
        let latency = d.received.map(|r| r.elapsed().as_secs_f64());
        let event = Event {
            event: if outcome.is_ok() { "sent" } else { "send-failed" }.into(),
            series_uid: d.series_uid.clone(),
            study_uid: d.study_uid.clone(),
            seg_sop_instance_uid: d.seg_uid.clone(),
            destination: peer.to_string(),
            attempts: tries,
            reason: outcome.clone().err().unwrap_or_default(),
            seconds: Some(t.elapsed().as_secs_f64()),
            latency_s: latency,
            ..Event::default()
        };
        if let Err(e) = node.journal.append(event) {
            eprintln!("fmseg serve: error: {e:#}; stopping");
            std::process::exit(crate::cli::exit::FAILURE);
        }
        eprintln!(
            "fmseg serve: seg series={} to={peer} status={} attempts={tries}{} seconds={:.2}",
            d.series_uid,
            match &outcome {
                Ok(s) => format!("sent({s:#06x})"),
                Err(_) => "send-failed".into(),
            },
            latency.map(|l| format!(" latency_s={l:.2}")).unwrap_or_default(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// A panic's message.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// `--status DIR`.
fn print_status(dir: &Path) -> anyhow::Result<()> {
    if !dir.join(journal::JOURNAL_FILE).is_file() && !dir.join(INCOMING_DIR).is_dir() {
        bail!("{}: not an fmseg serve directory (no {} and no {INCOMING_DIR}/)", dir.display(), journal::JOURNAL_FILE);
    }
    let lock_path = dir.join(LOCK_FILE);
    let running = std::fs::File::open(&lock_path).is_ok_and(|f| f.try_lock_shared().is_err());
    let who = std::fs::read_to_string(&lock_path).unwrap_or_default();
    if running {
        crate::outln!("node: running, {}", who.trim());
    } else {
        crate::outln!("node: not running");
    }
    let records = journal::fold(&journal::read(&dir.join(journal::JOURNAL_FILE)));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (study, series, sdir) in series_dirs(&dir.join(INCOMING_DIR)) {
        seen.insert(series.clone());
        let (n, sum) = files_checksum(&sdir);
        let r = records.get(&series);
        let state = match r.and_then(|r| r.outcome.as_ref()) {
            Some(o) if o.files_checksum != sum => {
                format!("pending ({} instances, more arrived since it was {})", n, o.event)
            }
            Some(o) => describe(o, r.and_then(|r| r.delivery.as_ref())),
            None => format!("pending ({n} instances received)"),
        };
        let key = state.split([' ', ':']).next().unwrap_or("");
        *counts
            .entry(match key {
                "pending" => "pending",
                "done," => "done",
                "failed" => "failed",
                "skipped" => "skipped",
                _ => "other",
            })
            .or_default() += 1;
        crate::outln!("{study} {series}: {state}");
    }
    for (uid, r) in &records {
        if !seen.contains(uid) {
            if let Some(o) = &r.outcome {
                crate::outln!(
                    "{} {uid}: {} (its objects are no longer in {INCOMING_DIR}/)",
                    o.study_uid,
                    describe(o, r.delivery.as_ref())
                );
            }
        }
    }
    let unsent = records.values().filter(|r| r.unsent()).count();
    crate::outln!(
        "total: {} series; {} pending, {} done ({unsent} SEG unsent), {} failed, {} skipped",
        seen.len(),
        counts.get("pending").unwrap_or(&0),
        counts.get("done").unwrap_or(&0),
        counts.get("failed").unwrap_or(&0),
        counts.get("skipped").unwrap_or(&0)
    );
    Ok(())
}

fn describe(o: &Event, delivery: Option<&Event>) -> String {
    match o.event.as_str() {
        "done" => format!(
            "done, {} instances, FM {:.3} ml, {}",
            o.instances,
            o.fm_volume_ml.unwrap_or(0.0),
            match delivery {
                Some(d) if d.event == "sent" => format!("SEG sent to {} at {}", d.destination, d.at),
                Some(d) => format!("SEG not sent ({} attempts: {})", d.attempts, d.reason),
                None => "SEG not sent yet".into(),
            }
        ),
        other => format!("{other}: {}", o.reason),
    }
}
