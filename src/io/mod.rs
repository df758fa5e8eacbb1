//! File formats at the crate's boundary: DICOM (series in, MR series out), NIfTI-1 images,
//! NumPy `.npy` arrays, CSV tables.
//!
//! Every reader names the file in its errors; every writer is atomic (a temporary file in the
//! destination's directory, renamed into place only once it is complete), so a failed write
//! never leaves a partial output behind.

pub mod csv;
pub mod dicom;
pub mod nifti;
pub mod npy;
pub mod output_dir;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Write `path` atomically: `fill` writes the whole content into a temporary file next to it,
/// which is flushed, synced and renamed over `path`. On any error the temporary file is removed
/// and `path` is untouched.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A path component from a UID: only `[0-9A-Za-z._-]` kept, never `.` or `..`.
pub fn safe_component(uid: &str) -> String {
    let s: String = uid.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Append one line (a newline is added) to a journal-like file in one write (O_APPEND: lines
/// from several processes never interleave) and sync it. A line a kill cut short is ended
/// first, so that this one stays whole; readers skip the cut one.
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let cut = File::open(path).is_ok_and(|mut f| {
        let mut last = [b'\n'];
        f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] != b'\n'
    });
    let text = format!("{}{line}\n", if cut { "\n" } else { "" });
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// `dir/.name.tmp-<pid>-<n>`: hidden, in the same directory (so the rename stays on one file
/// system), unique per process and call.
fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// The prefix of every file [`Staging`] writes before its commit (cleaned up by
/// [`output_dir::OutputDir::open`] when a killed run left one).
pub(crate) const PARTIAL_PREFIX: &str = ".fmseg-partial-";

/// A writer's error message without the temporary file names in it (`dir/.fmseg-partial-0-x:`,
/// `dir/.x.tmp-12-0:`): the caller names the real output, and the internal name only confuses.
pub fn hide_temporary(msg: &str) -> String {
    msg.split(": ")
        .filter(|part| !part.contains(PARTIAL_PREFIX) && !part.contains(".tmp-"))
        .collect::<Vec<_>>()
        .join(": ")
}

/// Several output files that appear together or not at all: each is written to a temporary
/// name in its destination's directory ([`Staging::stage`]), and [`Staging::commit`] renames
/// them all into place. Dropped without a commit (an error on the way), it removes what was
/// staged.
#[derive(Default)]
pub struct Staging {
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staging {
    pub fn new() -> Self {
        Self::default()
    }

    /// The temporary path to write `dest` to: `.fmseg-partial-<pid>-<n>-<name>` beside it, the
    /// name kept at the end so writers that choose an encoding by extension (`.nii.gz`) still do.
    pub fn stage(&mut self, dest: &Path) -> PathBuf {
        let name = dest.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let tmp = dest.with_file_name(format!("{PARTIAL_PREFIX}{}-{}-{name}", std::process::id(), self.files.len()));
        self.files.push((tmp.clone(), dest.to_path_buf()));
        tmp
    }

    /// The staged `(temporary, destination)` pairs, handed over: this staging no longer removes
    /// them (the caller commits them its own way, as [`output_dir::OutputDir`] does).
    pub(crate) fn take(&mut self) -> Vec<(PathBuf, PathBuf)> {
        std::mem::take(&mut self.files)
    }

    /// Renames every staged file over its destination.
    pub fn commit(mut self) -> Result<()> {
        let files = std::mem::take(&mut self.files);
        for (i, (tmp, dest)) in files.iter().enumerate() {
            if let Err(e) = std::fs::rename(tmp, dest) {
                for (t, _) in &files[i..] {
                    let _ = std::fs::remove_file(t);
                }
                return Err(Error::io(dest, e));
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
