//! An output directory that one run at a time writes into, and whose files change together.
//!
//! [`OutputDir::open`] creates the directory if needed, takes an exclusive lock on
//! `DIR/.fmseg.lock` (a second run into the same directory is refused at once, before it does
//! any work, instead of interleaving its files with the first one's), finishes or cleans up
//! what an interrupted run left, and so also proves the directory writable before anything
//! expensive runs.
//!
//! [`OutputDir::commit`] replaces the directory's results as a group: every new file is
//! written first under a temporary `.fmseg-partial-*` name; then a journal
//! (`DIR/.fmseg-commit`) listing the renames, and the removal of results this run does not
//! make (an older run's `fm_probability.nii.gz`), is written and synced; then the renames and
//! removals run and the journal is deleted. A run killed before the journal exists leaves the
//! previous results untouched; one killed after it is rolled forward by the next `open`. The
//! lock is released by the OS when the process ends, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::{Staging, PARTIAL_PREFIX};
use crate::error::{Error, Result};

pub const LOCK_FILE: &str = ".fmseg.lock";
pub const JOURNAL_FILE: &str = ".fmseg-commit";

/// A locked output directory (see the module docs).
pub struct OutputDir {
    dir: PathBuf,
    /// Whether `open` created the directory (it is removed again when nothing is committed).
    created: bool,
    committed: bool,
    staged: Staging,
    lock: Option<File>,
}

impl OutputDir {
    /// Create (if needed), lock and recover `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::format(dir, "the output path exists and is not a directory"));
        }
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = match OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path) {
            Ok(f) => f,
            Err(e) => {
                if created {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(Error::format(dir, format!("cannot write into the output directory: {e}")));
            }
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::format(
                    dir,
                    format!(
                        "another fmseg run is writing into this output directory (it holds {LOCK_FILE}); wait \
                         for it to finish or choose another output directory"
                    ),
                ))
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let mut out =
            OutputDir { dir: dir.to_path_buf(), created, committed: false, staged: Staging::new(), lock: Some(lock) };
        out.recover()?;
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the result `name` goes once committed.
    pub fn dest(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The temporary path to write the result `name` to ([`Staging::stage`]).
    pub fn stage(&mut self, name: &str) -> PathBuf {
        self.staged.stage(&self.dir.join(name))
    }

    /// Put every staged file in place and remove the results in `stale` that this run did not
    /// stage, as one group (see the module docs).
    pub fn commit(mut self, stale: &[&str]) -> Result<()> {
        let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let staged: Vec<(String, String)> =
            self.staged.take().iter().map(|(tmp, dest)| (file_name(tmp), file_name(dest))).collect();
        let mut journal = String::new();
        for (tmp, name) in &staged {
            journal.push_str(&format!("rename\t{tmp}\t{name}\n"));
        }
        for name in stale {
            if !staged.iter().any(|(_, n)| n == name) && self.dir.join(name).exists() {
                journal.push_str(&format!("remove\t{name}\n"));
            }
        }
        let journal_path = self.dir.join(JOURNAL_FILE);
        let tmp = self.staged.stage(&journal_path);
        write_synced(&tmp, journal.as_bytes())?;
        std::fs::rename(&tmp, &journal_path).map_err(|e| Error::io(&journal_path, e))?;
        sync_dir(&self.dir)?;
        // From here on the new results are decided: a failure below is finished by the next open.
        self.committed = true;
        roll_forward(&self.dir, &journal)?;
        sync_dir(&self.dir)?;
        std::fs::remove_file(&journal_path).map_err(|e| Error::io(&journal_path, e))?;
        Ok(())
    }

    /// Finish an interrupted commit, then remove every partial file (the lock says no other
    /// fmseg is writing them).
    fn recover(&mut self) -> Result<()> {
        let journal_path = self.dir.join(JOURNAL_FILE);
        match std::fs::read_to_string(&journal_path) {
            Ok(journal) => {
                log::info!("{}: finishing an interrupted commit", self.dir.display());
                roll_forward(&self.dir, &journal)?;
                sync_dir(&self.dir)?;
                std::fs::remove_file(&journal_path).map_err(|e| Error::io(&journal_path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&journal_path, e)),
        }
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries.flatten() {
            // A staged file, or the temporary sibling a writer makes of one while it writes
            // (`io::write_atomic`: `..fmseg-partial-<pid>-<n>-name.tmp-<pid>-<m>`).
            if entry.file_name().to_string_lossy().contains(PARTIAL_PREFIX) {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        Ok(())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        // uncommitted staged files: removed by `staged`'s own drop
        drop(std::mem::take(&mut self.staged));
        if self.created && !self.committed {
            let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = std::fs::remove_dir(&self.dir);
        }
        drop(self.lock.take());
    }
}

/// Apply a journal's lines; a rename whose temporary file is gone was already done.
fn roll_forward(dir: &Path, journal: &str) -> Result<()> {
    for line in journal.lines() {
        let parts: Vec<&str> = line.split('\t').collect();
        match parts.as_slice() {
            ["rename", tmp, name] if !tmp.contains('/') && !name.contains('/') => {
                let (tmp, dest) = (dir.join(tmp), dir.join(name));
                if tmp.exists() {
                    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
                }
            }
            ["remove", name] if !name.contains('/') => {
                let p = dir.join(name);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&p, e)),
                }
            }
            _ => {
                return Err(Error::format(
                    &dir.join(JOURNAL_FILE),
                    format!("unreadable commit journal line {line:?}: remove the file and run again"),
                ))
            }
        }
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Make the directory's entries (the renames) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn commit_replaces_the_group_and_removes_stale_results() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("out");
        let mut o = OutputDir::open(&dir).unwrap();
        for name in ["a.txt", "b.txt"] {
            std::fs::write(o.stage(name), name).unwrap();
        }
        o.commit(&[]).unwrap();
        assert_eq!(names(&dir), [LOCK_FILE, "a.txt", "b.txt"]);
        let mut o = OutputDir::open(&dir).unwrap();
        std::fs::write(o.stage("a.txt"), "new").unwrap();
        o.commit(&["b.txt", "never-there.txt"]).unwrap();
        assert_eq!(names(&dir), [LOCK_FILE, "a.txt"]);
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "new");
    }

    #[test]
    fn a_second_run_is_refused_while_the_first_holds_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let first = OutputDir::open(t.path()).unwrap();
        let e = OutputDir::open(t.path()).err().unwrap().to_string();
        assert!(e.contains("another fmseg run") && e.contains(&t.path().display().to_string()), "{e}");
        drop(first);
        OutputDir::open(t.path()).unwrap();
    }

    #[test]
    fn nothing_committed_leaves_nothing_and_removes_a_created_directory() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("new");
        let mut o = OutputDir::open(&dir).unwrap();
        std::fs::write(o.stage("a.txt"), "x").unwrap();
        drop(o);
        assert!(!dir.exists());
    }

    /// A run killed after its journal was written is finished by the next open; one killed
    /// before leaves the old results, and its partial files are cleaned up.
    #[test]
    fn an_interrupted_commit_is_rolled_forward_and_partials_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::write(dir.join("a.txt"), "old a").unwrap();
        std::fs::write(dir.join("b.txt"), "old b").unwrap();
        std::fs::write(dir.join("p.txt"), "old p").unwrap();
        // killed mid-commit: a.txt renamed already, b.txt not yet, p.txt to be removed
        std::fs::write(dir.join(".fmseg-partial-1-b.txt"), "new b").unwrap();
        std::fs::write(dir.join("a.txt"), "new a").unwrap();
        std::fs::write(
            dir.join(JOURNAL_FILE),
            "rename\t.fmseg-partial-0-a.txt\ta.txt\nrename\t.fmseg-partial-1-b.txt\tb.txt\nremove\tp.txt\n",
        )
        .unwrap();
        // and an older run killed before its journal, one of them inside a writer's own
        // temporary file of a staged one (kill -9 while fm_mask.nii.gz was being written)
        std::fs::write(dir.join(".fmseg-partial-0-c.txt"), "orphan").unwrap();
        std::fs::write(dir.join("..fmseg-partial-7-0-fm_mask.nii.gz.tmp-7-3"), "orphan").unwrap();
        drop(OutputDir::open(dir).unwrap());
        assert_eq!(names(dir), [LOCK_FILE, "a.txt", "b.txt"]);
        assert_eq!(std::fs::read_to_string(dir.join("b.txt")).unwrap(), "new b");
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "new a");
    }

    #[test]
    fn unwritable_or_wrong_paths_are_refused_with_the_path() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = OutputDir::open(&file).err().unwrap().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = OutputDir::open(&file.join("sub")).err().unwrap().to_string();
        assert!(e.contains("f/sub") || e.contains("f"), "{e}");
        let e = OutputDir::open(Path::new("/proc/fmseg-out")).err().unwrap().to_string();
        assert!(e.contains("/proc/fmseg-out"), "{e}");
    }
}
