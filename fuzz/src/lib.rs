//! The shared body of the harness binaries: AFL++'s persistent loop around one target of
//! `fmseg::fuzz`, with the files the reader opens kept in one private folder in memory
//! (`/dev/shm` where it exists) for the life of the process.

use fmseg::fuzz::Target;

pub fn main(target: Target) {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = tempfile_dir(base, target);
    afl::fuzz!(|data: &[u8]| {
        let _ = fmseg::fuzz::run(target, data, &dir);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(base: &str, target: Target) -> std::path::PathBuf {
    let dir = std::path::Path::new(base).join(format!("fmseg-fuzz-{}-{}", target.name(), std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder for the reader's files");
    dir
}
