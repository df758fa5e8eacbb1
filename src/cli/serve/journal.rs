//! The node's journal, `DIR/journal.jsonl`: one JSON line per outcome (a series done, failed
//! or skipped; a SEG sent or given up on), appended and synced before the outcome is acted on.
//!
//! Together with what is on disk it is the node's whole state: at start, a series whose files
//! differ from its last outcome's (or that has none) is segmented again, and a series done
//! whose SEG has no `sent` line after it is sent again. Nothing is kept only in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub const JOURNAL_FILE: &str = "journal.jsonl";

/// One journal line.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// `done`, `failed`, `skipped`, `sent`, `send-failed`.
    pub event: String,
    pub series_uid: String,
    pub study_uid: String,
    /// The series' files when it was segmented (or judged): their count and a checksum of
    /// their names and sizes.
    #[serde(default)]
    pub instances: usize,
    #[serde(default)]
    pub files_checksum: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// done: the results directory (relative to DIR) and the SEG's SOP Instance UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seg_sop_instance_uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fm_volume_ml: Option<f64>,
    /// sent / send-failed: the destination, the attempts it took and the peer's status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    #[serde(default)]
    pub attempts: u32,
    /// done: segmentation and writing; sent: last object received -> SEG acknowledged by the
    /// destination (when both happened in this process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_s: Option<f64>,
    /// UTC, `YYYYMMDDTHHMMSS`.
    pub at: String,
}

/// The journal file, appended by several threads.
pub struct Journal {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Journal {
    pub fn open(dir: &Path) -> Journal {
        Journal { path: dir.join(JOURNAL_FILE), lock: Mutex::new(()) }
    }

    /// Append one line in one write and sync it; a line a kill cut short is ended first.
    pub fn append(&self, mut e: Event) -> anyhow::Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if e.at.is_empty() {
            let (d, t) = crate::io::dicom::write::utc_now();
            e.at = format!("{d}T{t}");
        }
        crate::io::append_line(&self.path, &serde_json::to_string(&e)?).with_context(|| self.path.display().to_string())
    }

    /// Every whole line (one a kill cut short is ignored).
    pub fn read(&self) -> Vec<Event> {
        read(&self.path)
    }
}

pub fn read(path: &Path) -> Vec<Event> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// What the journal says about one series.
#[derive(Clone, Debug, Default)]
pub struct SeriesRecord {
    /// The last done / failed / skipped line.
    pub outcome: Option<Event>,
    /// The last sent / send-failed line after that outcome.
    pub delivery: Option<Event>,
}

impl SeriesRecord {
    /// Done, a SEG to send, and not sent yet.
    pub fn unsent(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.event == "done")
            && self.delivery.as_ref().is_none_or(|d| d.event != "sent")
    }
}

/// The journal folded per series.
pub fn fold(events: &[Event]) -> BTreeMap<String, SeriesRecord> {
    let mut m: BTreeMap<String, SeriesRecord> = BTreeMap::new();
    for e in events {
        let r = m.entry(e.series_uid.clone()).or_default();
        match e.event.as_str() {
            "done" | "failed" | "skipped" => {
                r.outcome = Some(e.clone());
                r.delivery = None;
            }
            // a delivery is of the SEG of the outcome before it
            "sent" | "send-failed"
                if r.outcome.as_ref().is_some_and(|o| o.seg_sop_instance_uid == e.seg_sop_instance_uid) =>
            {
                r.delivery = Some(e.clone());
            }
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fold_keeps_the_last_outcome_and_its_delivery() {
        let ev = |event: &str, series: &str, uid: &str| Event {
            event: event.into(),
            series_uid: series.into(),
            seg_sop_instance_uid: uid.into(),
            ..Event::default()
        };
        let events = vec![
            ev("done", "1.1", "9.1"),
            ev("send-failed", "1.1", "9.1"),
            ev("done", "1.2", "9.2"),
            ev("sent", "1.2", "9.2"),
            ev("failed", "1.3", ""),
            ev("sent", "1.1", "9.1"),
            ev("done", "1.2", "9.3"), // segmented again after more instances: unsent
        ];
        let m = fold(&events);
        assert!(!m["1.1"].unsent());
        assert!(m["1.2"].unsent());
        assert!(!m["1.3"].unsent());
    }

    #[test]
    fn a_cut_line_is_ended_and_ignored() {
        let dir = std::env::temp_dir().join(format!("fmseg-journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = Journal::open(&dir);
        j.append(Event { event: "done".into(), series_uid: "1".into(), ..Event::default() }).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.join(JOURNAL_FILE)).unwrap();
        f.write_all(b"{\"event\":\"se").unwrap();
        j.append(Event { event: "failed".into(), series_uid: "2".into(), ..Event::default() }).unwrap();
        let back = j.read();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].event, "failed");
        assert!(!back[0].at.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
