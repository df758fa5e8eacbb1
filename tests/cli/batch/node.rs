//! `fmseg serve` with real DICOM peers (DCMTK's echoscu, storescu, storescp; dciodvfy) on
//! loopback: a series in, its SEG out at the destination exactly once, equal to `fmseg segment
//! --seg`'s; three senders at once and one that aborts mid-series; kill -9 after the last
//! C-STORE response, and with a SEG done but not sent; garbage on the port, unknown callers,
//! a crafted UID.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{weights, write_series};
use crate::common::cli::{Fmseg, Run};
use crate::dicom_support;

/// The patient in every series sent: never in the node's log.
const PATIENT_NAME: &str = "NODETEST^JANE";
const PATIENT_ID: &str = "PID-4711-NODE";

fn tools() -> bool {
    ["storescu", "storescp", "echoscu", "dciodvfy"].iter().all(|t| dicom_support::tool(t).is_some())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A small series (one network window) for the node, with the test patient.
fn series(dir: &Path, seed: &str) -> String {
    let m = write_series(dir, seed, 1, "T1 TSE tra", 10.0);
    for f in dicom_support::files(dir) {
        dicom_support::rewrite(&f, |o| {
            use dicom_core::{value::PrimitiveValue, DataElement, VR};
            use dicom_dictionary_std::tags;
            o.put(DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from(PATIENT_NAME)));
            o.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(PATIENT_ID)));
        });
    }
    m.series_uid()
}

/// `fmseg serve` on a free port, its log in a file; killed with -9 when dropped.
struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, extra: &[&str]) -> Node {
        // a new log per start (a restarted node's lines are its own)
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let log = dir.with_file_name(format!("{}-{nanos}.log", dir.file_name().unwrap().to_string_lossy()));
        let child = Fmseg::new()
            .args(["serve", "--listen", "127.0.0.1:0", "--aet", "FMSEG", "--out", dir.to_str().unwrap()])
            .args(["--weights", weights(), "--threads", "1"])
            .args(if extra.contains(&"--min-free-mb") { &[][..] } else { &["--min-free-mb", "1"][..] })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn();
        let mut child = child;
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("serve exited ({st}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            let text = std::fs::read_to_string(dir.join(".fmseg-serve.lock")).unwrap_or_default();
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            if log_text.contains("listening on") {
                if let Some(port) = text.split("127.0.0.1:").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()) {
                    return Node { child, port, log };
                }
            }
            assert!(t.elapsed() < Duration::from_secs(60), "serve did not start:\n{log_text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until the log shows `n` lines containing `what`.
    fn wait_for(&self, what: &str, n: usize, secs: u64) -> String {
        let t = Instant::now();
        loop {
            let log = self.log();
            if log.matches(what).count() >= n {
                return log;
            }
            assert!(t.elapsed() < Duration::from_secs(secs), "waited {secs} s for {n} x {what:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// DCMTK's storescp, every object under its own name (`+uf`: a SEG received twice is two files).
struct Destination {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Destination {
    fn start(dir: &Path, port: u16) -> Destination {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("storescp")
            .args(["-aet", "DEST", "-od", dir.to_str().unwrap(), "+uf", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "storescp did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Destination { child, port, dir: dir.to_path_buf() }
    }

    fn peer(&self) -> String {
        format!("DEST@127.0.0.1:{}", self.port)
    }

    /// The SEGs received: (file, SOP Instance UID, referenced series UID).
    fn segs(&self) -> Vec<(PathBuf, String, String)> {
        let mut v = Vec::new();
        for f in dicom_support::files(&self.dir) {
            let Ok(o) = dicom_object::open_file(&f) else { continue };
            let s = |t| o.element(t).ok().and_then(|e| e.to_str().ok()).map(|s| s.to_string()).unwrap_or_default();
            let referenced = o
                .element(dicom_dictionary_std::tags::REFERENCED_SERIES_SEQUENCE)
                .ok()
                .and_then(|e| e.items().and_then(|i| i.first().cloned()))
                .and_then(|i| {
                    i.element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
                        .ok()?
                        .to_str()
                        .ok()
                        .map(|s| s.to_string())
                })
                .unwrap_or_default();
            v.push((f.clone(), s(dicom_dictionary_std::tags::SOP_INSTANCE_UID), referenced));
        }
        v
    }

    /// Wait for `n` SEGs; the node's log in the failure message.
    fn wait_for_segs(&self, n: usize, secs: u64, node: &Node) -> Vec<(PathBuf, String, String)> {
        let t = Instant::now();
        loop {
            let s = self.segs();
            if s.len() >= n {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "waited {secs} s for {n} SEG(s), have {}; the node's log:\n{}",
                s.len(),
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn storescu(port: u16, calling: &str, files: &[PathBuf], extra: &[&str]) -> Run {
    Run::of(
        Command::new("storescu")
            .args(["-aet", calling, "-aec", "FMSEG"])
            .args(extra)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .args(files),
    )
}

fn journal(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A series pushed by storescu comes back as one SEG at the destination: valid for dciodvfy,
/// the same object `fmseg segment --seg` writes for that series (pixels and SOP Instance UID);
/// every acknowledged instance is on disk; `--status` says so; sending the same objects again
/// makes no second SEG; the log names no patient.
#[test]
fn a_series_comes_back_as_its_seg() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let uid = series(&src, "node-one");
    let dest = Destination::start(&tmp.path().join("dest"), free_port());
    let dir = tmp.path().join("node");
    let node = Node::start(&dir, &["--send-to", &dest.peer(), "--series-timeout", "1"]);

    Run::of(Command::new("echoscu").args(["-aet", "SCANNER", "-aec", "FMSEG", "127.0.0.1", &node.port.to_string()]))
        .success();
    let files = dicom_support::files(&src);
    storescu(node.port, "SCANNER", &files, &[]).success();
    // acknowledged = on disk, before anything else happens
    let series_dir = std::fs::read_dir(dir.join("incoming")).unwrap().next().unwrap().unwrap().path().join(&uid);
    assert_eq!(dicom_support::files(&series_dir).len(), files.len());

    let segs = dest.wait_for_segs(1, 120, &node);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].2, uid, "the SEG references the series sent");
    let v = Command::new("dciodvfy").arg(&segs[0].0).output().unwrap();
    let report = String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
    assert!(!report.lines().any(|l| l.starts_with("Error")), "dciodvfy:\n{report}");

    let seg_dir = tmp.path().join("segment");
    Fmseg::new()
        .args(["segment", src.to_str().unwrap(), "--seg", "--weights", weights(), "--out", seg_dir.to_str().unwrap()])
        .run()
        .success();
    let pixels = |p: &Path| {
        let o = dicom_object::open_file(p).unwrap();
        let px = o.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec();
        (px, o.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap().to_string())
    };
    assert_eq!(pixels(&segs[0].0), pixels(&seg_dir.join("fm_seg.dcm")), "the node's SEG is segment --seg's");

    let log = node.wait_for("seg series=", 1, 30);
    let text = Fmseg::new().args(["serve", "--status", dir.to_str().unwrap()]).run().success().stdout();
    assert!(text.contains("node: running"), "{text}");
    assert!(text.contains(&format!("{uid}: done, 10 instances")) && text.contains("SEG sent to DEST@"), "{text}");

    // the same objects again: not segmented twice
    storescu(node.port, "SCANNER", &files, &[]).success();
    let log2 = node.wait_for("status=unchanged", 1, 30);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dest.segs().len(), 1);
    for l in [&log, &log2] {
        assert!(
            !l.contains(PATIENT_NAME) && !l.contains("NODETEST") && !l.contains(PATIENT_ID),
            "patient in the log:\n{l}"
        );
    }
    assert!(log.contains("calling=SCANNER stored=10 refused=0"), "{log}");
    let j = journal(&dir);
    assert_eq!(j.iter().filter(|e| e["event"] == "done").count(), 1);
    assert_eq!(j.iter().filter(|e| e["event"] == "sent").count(), 1);
    assert!(j.iter().find(|e| e["event"] == "sent").unwrap()["latency_s"].as_f64().unwrap() >= 1.0);

    // the same series again, losslessly compressed by DCMTK (JPEG-LS, RLE and deflate slices):
    // stored as sent, decoded at segmentation, the same SEG again
    let packed = tmp.path().join("packed");
    std::fs::create_dir_all(&packed).unwrap();
    // (tool, its option, storescu's option proposing that transfer syntax)
    let codecs = [("dcmcjpls", None, "-xt"), ("dcmcrle", None, "-xr"), ("dcmconv", Some("+td"), "-xd")];
    for (n, (tool, flag, propose)) in codecs.iter().enumerate() {
        let group: Vec<PathBuf> = files
            .iter()
            .skip(n)
            .step_by(codecs.len())
            .map(|f| {
                let to = packed.join(f.file_name().unwrap());
                Run::of(Command::new(tool).args(flag).arg(f).arg(&to)).success();
                to
            })
            .collect();
        storescu(node.port, "SCANNER", &group, &[propose]).success();
    }
    let stored_ts: std::collections::BTreeSet<String> = dicom_support::files(&series_dir)
        .iter()
        .map(|f| dicom_object::open_file(f).unwrap().meta().transfer_syntax().trim_end_matches('\0').to_string())
        .collect();
    assert_eq!(
        stored_ts,
        ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"].map(String::from).into(),
        "stored in the transfer syntax it was sent in"
    );
    let segs = dest.wait_for_segs(2, 120, &node);
    assert_eq!(pixels(&segs[0].0), pixels(&segs[1].0), "lossless input, the same SEG");

    // other SOP classes (here a SEG sent back): refused by default, stored (and skipped by
    // the rules) with --accept-other (storescu -R: propose only the files' own SOP classes)
    let o = storescu(node.port, "SCANNER", std::slice::from_ref(&segs[0].0), &["-R"]);
    let text = o.to_string();
    assert!(text.contains("No presentation context") || o.code() != Some(0), "a SEG is not an MR image: {text}");
    drop(node);
    let other_dir = tmp.path().join("node-other");
    let other = Node::start(&other_dir, &["--accept-other", "--series-timeout", "0.5"]);
    storescu(other.port, "PACS", std::slice::from_ref(&segs[0].0), &["-R"]).success();
    other.wait_for("status=skipped", 1, 30);
}

/// Three scanners send at once, and a fourth aborts its association half-way and sends the
/// rest later: four SEGs, one per series; nothing half-received is kept.
#[test]
fn three_senders_at_once_and_one_that_aborts() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let uids: Vec<(PathBuf, String)> = (0..4)
        .map(|i| {
            let d = tmp.path().join(format!("src{i}"));
            let u = series(&d, &format!("node-multi-{i}"));
            (d, u)
        })
        .collect();
    let dest = Destination::start(&tmp.path().join("dest"), free_port());
    let dir = tmp.path().join("node");
    // long enough that the aborted sender's second association always comes within it
    let node = Node::start(&dir, &["--send-to", &dest.peer(), "--series-timeout", "4"]);
    let port = node.port;
    std::thread::scope(|s| {
        for (i, (d, _)) in uids.iter().take(3).enumerate() {
            s.spawn(move || {
                storescu(port, &format!("SCANNER{i}"), &dicom_support::files(d), &[]).success();
            });
        }
        let files = dicom_support::files(&uids[3].0);
        // the first half, then an A-ABORT instead of a release
        storescu(port, "SCANNER3", &files[..5], &["--abort"]).success();
        storescu(port, "SCANNER3", &files[5..], &[]).success();
    });
    let segs = dest.wait_for_segs(4, 240, &node);
    node.wait_for("seg series=", 4, 30);
    std::thread::sleep(Duration::from_secs(3));
    let segs_after = dest.segs();
    assert_eq!(segs_after.len(), 4, "{segs:?}");
    let mut referenced: Vec<String> = segs_after.iter().map(|s| s.2.clone()).collect();
    referenced.sort();
    let mut want: Vec<String> = uids.iter().map(|u| u.1.clone()).collect();
    want.sort();
    assert_eq!(referenced, want, "one SEG per series");
    let log = node.log();
    assert!(log.contains("end=aborted by the peer"), "{log}");
    assert_eq!(log.matches("status=done").count(), 4, "{log}");
    let j = journal(&dir);
    for (_, u) in &uids {
        let done: Vec<_> = j.iter().filter(|e| e["event"] == "done" && e["series_uid"] == u.as_str()).collect();
        assert_eq!(done.len(), 1, "{u}");
        assert_eq!(done[0]["instances"], 10, "{u}: the whole series, both halves");
    }
    assert!(!std::fs::read_dir(dir.join("incoming"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".recv")));
}

/// kill -9 right after the last C-STORE response (before the series is complete): the restart
/// segments it and the SEG arrives once. Then a SEG done while the destination is down, the
/// node killed, the destination up, the node restarted: that SEG arrives once too.
#[test]
fn a_killed_node_delivers_each_seg_exactly_once() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src_a, uid_a) = (tmp.path().join("a"), series(&tmp.path().join("a"), "node-kill-a"));
    let (src_b, uid_b) = (tmp.path().join("b"), series(&tmp.path().join("b"), "node-kill-b"));
    let dest_port = free_port();
    let dir = tmp.path().join("node");
    let peer = format!("DEST@127.0.0.1:{dest_port}");

    // 1. killed before the series is complete
    let dest = Destination::start(&tmp.path().join("dest"), dest_port);
    let mut node = Node::start(&dir, &["--send-to", &peer, "--series-timeout", "60"]);
    storescu(node.port, "SCANNER", &dicom_support::files(&src_a), &[]).success();
    node.kill();
    let received: Vec<PathBuf> = walkdir::WalkDir::new(dir.join("incoming"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    assert_eq!(received.len(), 10, "every acknowledged instance is on disk: {received:?}");
    let node = Node::start(&dir, &["--send-to", &peer, "--series-timeout", "1"]);
    assert!(node.wait_for("resuming: 1 series to segment, 0 SEG(s) to send", 1, 10).len() > 0);
    dest.wait_for_segs(1, 120, &node);
    node.wait_for("seg series=", 1, 30);
    drop(node);
    let node = Node::start(&dir, &["--send-to", &peer, "--series-timeout", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!node.log().contains("resuming"), "nothing left to do:\n{}", node.log());
    assert_eq!(dest.segs().len(), 1, "series A: one SEG after the restarts");
    drop(node);
    drop(dest);

    // 2. done while the destination is down, killed, then delivered once
    let mut node = Node::start(&dir, &["--send-to", &peer, "--series-timeout", "1", "--send-attempts", "1"]);
    storescu(node.port, "SCANNER", &dicom_support::files(&src_b), &[]).success();
    node.wait_for("status=send-failed", 1, 120);
    node.kill();
    let text = Fmseg::new().args(["serve", "--status", dir.to_str().unwrap()]).run().success().stdout();
    assert!(text.contains("node: not running") && text.contains("(1 SEG unsent)"), "{text}");
    assert!(
        text.contains(&format!("{uid_b}: done, 10 instances")) && text.contains("SEG not sent (1 attempts"),
        "{text}"
    );
    let dest = Destination::start(&tmp.path().join("dest"), dest_port);
    let node = Node::start(&dir, &["--send-to", &peer, "--series-timeout", "1"]);
    node.wait_for("resuming: 0 series to segment, 1 SEG(s) to send", 1, 10);
    let segs = dest.wait_for_segs(2, 60, &node);
    std::thread::sleep(Duration::from_secs(2));
    let segs_after = dest.segs();
    assert_eq!(segs_after.len(), 2, "{segs:?}");
    let refs: Vec<&str> = segs_after.iter().map(|s| s.2.as_str()).collect();
    assert!(refs.contains(&uid_a.as_str()) && refs.contains(&uid_b.as_str()), "{refs:?}");
    let j = journal(&dir);
    assert_eq!(j.iter().filter(|e| e["event"] == "done").count(), 2, "each series segmented once");
}

/// Bytes that are no DICOM, a caller not on the allow list, a called title that is not the
/// node's, and an object whose SOP Instance UID tries to climb out of the directory: each is
/// refused, the node goes on answering.
#[test]
fn garbage_and_strangers_do_not_stop_the_node() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let node = Node::start(&dir, &["--allow-aet", "SCANNER,OTHER"]);
    let echo = |calling: &str, called: &str| {
        Command::new("echoscu")
            .args(["-aet", calling, "-aec", called, "127.0.0.1", &node.port.to_string()])
            .output()
            .unwrap()
            .status
            .success()
    };
    for junk in
        [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00][..], &[7u8; 4096][..]]
    {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        drop(s);
        assert!(echo("SCANNER", "FMSEG"), "the node answers after junk:\n{}", node.log());
    }
    assert!(!echo("INTRUDER", "FMSEG"));
    assert!(!echo("SCANNER", "NOTFMSEG"));
    assert!(echo("OTHER", "FMSEG"));

    // a crafted UID: refused, nothing written outside (or inside) the node's directory
    let src = tmp.path().join("src");
    series(&src, "node-crafted");
    let f = &dicom_support::files(&src)[0];
    dicom_support::rewrite(f, |o| {
        use dicom_core::{value::PrimitiveValue, DataElement, VR};
        o.put(DataElement::new(
            dicom_dictionary_std::tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("../../../../tmp/evil"),
        ));
        o.meta_mut().media_storage_sop_instance_uid = "../../../../tmp/evil".into();
    });
    let o = storescu(node.port, "SCANNER", std::slice::from_ref(f), &[]);
    let text = o.to_string();
    assert!(text.contains("0xc000") || text.contains("Error") || o.code() != Some(0), "{text}");
    assert!(!Path::new("/tmp/evil.dcm").exists());
    let log = node.log();
    assert!(log.contains("refused ../../../../tmp/evil"), "{log}");
    assert!(log.contains("calling=INTRUDER") || log.contains("not established"), "{log}");
    assert!(echo("SCANNER", "FMSEG"));
    let stored: usize =
        walkdir::WalkDir::new(dir.join("incoming")).into_iter().flatten().filter(|e| e.file_type().is_file()).count();
    assert_eq!(stored, 0);
    drop(node);

    // limits: a nearly full disk refuses objects (A700), one association at most rejects a second
    let dir = tmp.path().join("node-limits");
    let node = Node::start(&dir, &["--min-free-mb", "999999999", "--max-associations", "1"]);
    let good = &dicom_support::files(&src)[1];
    let o = storescu(node.port, "SCANNER", std::slice::from_ref(good), &[]);
    let text = o.to_string();
    assert!(text.to_lowercase().contains("a700") || text.contains("Out of Resources") || o.code() != Some(0), "{text}");
    assert!(node.log().contains("MB free, below the"), "{}", node.log());
    let idle = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let busy = Run::of(Command::new("echoscu").args([
        "-aet",
        "SCANNER",
        "-aec",
        "FMSEG",
        "127.0.0.1",
        &node.port.to_string(),
    ]));
    assert_ne!(busy.code(), Some(0), "{busy}");
    busy.stderr_has(&["Local Limit Exceeded"]);
    drop(idle);
    let t = Instant::now();
    while !Command::new("echoscu")
        .args(["-aet", "SCANNER", "-aec", "FMSEG", "127.0.0.1", &node.port.to_string()])
        .status()
        .unwrap()
        .success()
    {
        assert!(t.elapsed() < Duration::from_secs(10), "the slot is freed when the idle connection closes");
        std::thread::sleep(Duration::from_millis(100));
    }
}
