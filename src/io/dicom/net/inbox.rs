//! Where received objects go: `ROOT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`,
//! written and synced before the sender is told they are stored.
//!
//! An object is streamed into a hidden temporary file in ROOT as its P-DATA fragments arrive
//! (memory stays at one PDU whatever the object's size), behind a file meta group made from
//! the C-STORE request and the presentation context's transfer syntax. When the last fragment
//! is in, the file is synced, its header read by the same guarded reader `fmseg segment` uses
//! (a malformed object is refused here, not at segmentation), and it is renamed into its
//! series' directory, which is synced too. Only then does the caller answer "success": an
//! acknowledged object survives a kill -9 or a power cut. File names are made from UIDs with
//! everything but `[0-9A-Za-z._-]` replaced, so a crafted UID cannot leave ROOT. Non-image
//! objects (when the node stores other SOP classes) go to `ROOT/_other/`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::dimse::status;
use crate::io::safe_component;

/// A refusal: the status to answer and why, in words (for the log and the error comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

/// An object on disk, acknowledged.
#[derive(Debug, Clone)]
pub struct Stored {
    pub path: PathBuf,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub modality: String,
    /// Not an image: stored under `_other/`, never part of a series to segment.
    pub other: bool,
    pub bytes: u64,
}

/// The receiving directory and its limits.
pub struct Inbox {
    root: PathBuf,
    /// Refuse objects (status A700) when the file system has less than this free.
    pub min_free_bytes: u64,
    /// The node's AE title, recorded in each file's meta group as the receiver.
    pub aet: String,
    counter: AtomicU64,
}

/// The directory that holds objects that are not images.
pub const OTHER_DIR: &str = "_other";

impl Inbox {
    pub fn new(root: &Path, aet: &str, min_free_bytes: u64) -> std::io::Result<Inbox> {
        std::fs::create_dir_all(root)?;
        // what a killed node was receiving: never acknowledged, so the sender will resend it
        for e in std::fs::read_dir(root)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(".recv-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Inbox { root: root.to_path_buf(), min_free_bytes, aet: aet.into(), counter: AtomicU64::new(0) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a series' objects.
    pub fn series_dir(&self, study_uid: &str, series_uid: &str) -> PathBuf {
        self.root.join(safe_component(study_uid)).join(safe_component(series_uid))
    }

    /// Start receiving one object: checks the free space and opens the temporary file.
    pub fn begin(&self, sop_class: &str, sop_instance: &str, ts: &str, calling_aet: &str) -> Result<Incoming, Refusal> {
        let io_refusal = |what: &str, e: std::io::Error| Refusal {
            status: status::OUT_OF_RESOURCES,
            reason: format!("{what}: {e}"),
        };
        if !valid_uid(sop_instance) || !valid_uid(sop_class) {
            return Err(Refusal {
                status: status::CANNOT_UNDERSTAND,
                reason: format!(
                    "the request's SOP class or instance UID is not a UID ({sop_class:?}, {sop_instance:?})"
                ),
            });
        }
        let free = free_bytes(&self.root).map_err(|e| io_refusal("free space", e))?;
        if free < self.min_free_bytes {
            return Err(Refusal {
                status: status::OUT_OF_RESOURCES,
                reason: format!(
                    "{}: {} MB free, below the {} MB the node keeps free",
                    self.root.display(),
                    free >> 20,
                    self.min_free_bytes >> 20
                ),
            });
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(format!(".recv-{}-{n}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(|e| io_refusal(&tmp.display().to_string(), e))?;
        let mut incoming = Incoming {
            tmp,
            out: Some(BufWriter::with_capacity(1 << 16, file)),
            bytes: 0,
            sop_class: sop_class.into(),
            sop_instance: sop_instance.into(),
        };
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid(sop_instance)
            .transfer_syntax(ts)
            .implementation_class_uid(crate::io::dicom::write::implementation_class_uid())
            .implementation_version_name(crate::io::dicom::write::IMPLEMENTATION_VERSION_NAME)
            .source_application_entity_title(calling_aet)
            .receiving_application_entity_title(self.aet.as_str())
            .build()
            .map_err(|e| Refusal { status: status::CANNOT_UNDERSTAND, reason: format!("file meta group: {e}") })?;
        let w = incoming.out.as_mut().expect("just opened");
        w.write_all(&[0u8; 128]).and_then(|_| w.write_all(b"DICM")).map_err(|e| io_refusal("writing", e))?;
        meta.write(&mut *w)
            .map_err(|e| Refusal { status: status::OUT_OF_RESOURCES, reason: format!("writing: {e}") })?;
        Ok(incoming)
    }

    /// The object is complete: sync it, read its header, move it into its series' directory.
    pub fn finish(&self, mut incoming: Incoming) -> Result<Stored, Refusal> {
        let out = incoming.out.take().expect("finished once");
        let file = out
            .into_inner()
            .map_err(|e| Refusal { status: status::OUT_OF_RESOURCES, reason: format!("writing: {}", e.error()) })?;
        file.sync_all().map_err(|e| Refusal { status: status::OUT_OF_RESOURCES, reason: format!("sync: {e}") })?;
        drop(file);
        let cannot = |reason: String| Refusal { status: status::CANNOT_UNDERSTAND, reason };
        let scan =
            crate::io::dicom::scan::scan(&incoming.tmp).map_err(|e| cannot(hide(&e.to_string(), &incoming.tmp)))?;
        if let Some(e) = scan.unreadable.first() {
            return Err(cannot(hide(&e.to_string(), &incoming.tmp)));
        }
        let (dir, name, stored) = match scan.series.values().next().and_then(|v| v.first()) {
            Some(h) => {
                if h.sop_instance_uid != incoming.sop_instance {
                    return Err(Refusal {
                        status: status::DATA_SET_MISMATCH,
                        reason: format!(
                            "the data set's SOPInstanceUID {} is not the request's {}",
                            h.sop_instance_uid, incoming.sop_instance
                        ),
                    });
                }
                let study = h.study_uid.clone().unwrap_or_default();
                if h.series_uid_missing || !valid_uid(&h.series_uid) || !valid_uid(&study) {
                    return Err(cannot(format!(
                        "an image without a valid StudyInstanceUID and SeriesInstanceUID ({study:?}, {:?})",
                        h.series_uid
                    )));
                }
                let dir = self.series_dir(&study, &h.series_uid);
                let stored = Stored {
                    path: PathBuf::new(),
                    study_uid: study,
                    series_uid: h.series_uid.clone(),
                    sop_instance_uid: h.sop_instance_uid.clone(),
                    sop_class_uid: incoming.sop_class.clone(),
                    modality: h.modality.clone(),
                    other: false,
                    bytes: incoming.bytes,
                };
                (dir, safe_component(&h.sop_instance_uid), stored)
            }
            None => {
                let stored = Stored {
                    path: PathBuf::new(),
                    study_uid: String::new(),
                    series_uid: String::new(),
                    sop_instance_uid: incoming.sop_instance.clone(),
                    sop_class_uid: incoming.sop_class.clone(),
                    modality: String::new(),
                    other: true,
                    bytes: incoming.bytes,
                };
                (self.root.join(OTHER_DIR), safe_component(&incoming.sop_instance), stored)
            }
        };
        let path = dir.join(format!("{name}.dcm"));
        let moved = create_dir_synced(&dir)
            .and_then(|_| std::fs::rename(&incoming.tmp, &path))
            .and_then(|_| File::open(&dir)?.sync_all());
        moved.map_err(|e| Refusal { status: status::OUT_OF_RESOURCES, reason: format!("{}: {e}", path.display()) })?;
        Ok(Stored { path, ..stored })
    }
}

/// One object being received.
pub struct Incoming {
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    pub bytes: u64,
    sop_class: String,
    sop_instance: String,
}

impl Incoming {
    pub fn write(&mut self, data: &[u8]) -> Result<(), Refusal> {
        self.bytes += data.len() as u64;
        match self.out.as_mut() {
            Some(w) => w
                .write_all(data)
                .map_err(|e| Refusal { status: status::OUT_OF_RESOURCES, reason: format!("writing: {e}") }),
            None => Ok(()),
        }
    }
}

impl Drop for Incoming {
    /// Not finished (refused, aborted, too large): nothing of it stays.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A UID as PS3.5 9.1 allows it: 1-64 characters of digits and dots.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// An error message without the temporary file's name (the object has no file name yet).
fn hide(msg: &str, tmp: &Path) -> String {
    msg.replace(&format!("{}: ", tmp.display()), "").replace(&tmp.display().to_string(), "the object")
}

/// `mkdir -p`, syncing each new directory's parent so that the new entries survive a crash.
fn create_dir_synced(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_synced(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(p) => File::open(p)?.sync_all(),
        None => Ok(()),
    }
}

/// Bytes available to this user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_checked_and_free_space_is_read() {
        assert!(valid_uid("1.2.840.10008.5.1.4.1.1.4"));
        assert!(!valid_uid("../../etc/passwd") && !valid_uid("") && !valid_uid(&"1".repeat(65)));
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
    }

    #[test]
    fn a_refused_or_dropped_object_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("fmseg-inbox-test-{}", std::process::id()));
        let inbox = Inbox::new(&dir, "FMSEG", 0).unwrap();
        let mut inc = inbox.begin("1.2.3", "1.2.3.4", super::super::EXPLICIT_VR_LITTLE_ENDIAN, "SCU").unwrap();
        inc.write(b"not a data set").unwrap();
        let r = inbox.finish(inc).unwrap_err();
        assert_eq!(r.status, status::CANNOT_UNDERSTAND, "{r:?}");
        assert!(!r.reason.contains(".recv-"), "{}", r.reason);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let r = inbox.begin("1.2.3", "../x", super::super::EXPLICIT_VR_LITTLE_ENDIAN, "SCU").err().unwrap();
        assert_eq!(r.status, status::CANNOT_UNDERSTAND);
        let full = Inbox::new(&dir, "FMSEG", u64::MAX).unwrap();
        assert_eq!(full.begin("1.2", "1.2", "1.2.840.10008.1.2", "S").err().unwrap().status, status::OUT_OF_RESOURCES);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
