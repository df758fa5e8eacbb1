//! Fuzz targets: every reader of untrusted bytes, as one function per format that takes the
//! bytes, runs the reader on them and must return (an `Ok` or an `Err` with a message), never
//! panic, hang or reserve memory the input does not justify.
//!
//! The targets are plain functions so that any driver can call them: the bounded mutation run
//! in `tests/io_formats.rs` (seeds from files the project writes, every crash saved as a
//! regression case), and a coverage-guided fuzzer (`cargo afl`) later. The readers take paths,
//! so each call writes the bytes to a file in `dir` under the name the format expects.

use std::path::Path;

/// The formats fmseg reads from users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One DICOM file as a series (header, pixel data, every codec dicom-pixeldata has).
    Dicom,
    /// A NIfTI-1 image, plain or gzip.
    Nifti,
    /// A NumPy `.npy` array.
    Npy,
    /// Weights: PyTorch zip + pickle, safetensors or fmseg's frozen `.fmw` (detected from content).
    Weights,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Dicom, Target::Nifti, Target::Npy, Target::Weights];

    fn file_name(self) -> &'static str {
        match self {
            Target::Dicom => "input.dcm",
            Target::Nifti => "input.nii",
            Target::Npy => "input.npy",
            Target::Weights => "input.weights",
        }
    }
}

/// Run `target`'s reader on `data` (written to a file in `dir`). The result's message, or
/// `None` when the input was accepted; a panic propagates (the driver reports it).
pub fn run(target: Target, data: &[u8], dir: &Path) -> Option<String> {
    let path = dir.join(target.file_name());
    if std::fs::write(&path, data).is_err() {
        return None;
    }
    let r: crate::error::Result<()> = match target {
        Target::Dicom => crate::io::dicom::load_series(&path, &crate::io::dicom::Selection::default()).map(|_| ()),
        Target::Nifti => crate::io::nifti::read(&path).map(|_| ()),
        Target::Npy => crate::io::npy::read(&path).map(|_| ()),
        Target::Weights => crate::weights::load(&path).map(|_| ()),
    };
    r.err().map(|e| e.to_string())
}

/// A small deterministic mutator (xorshift): bit flips, bytes set to 0 / 0xff / random,
/// little-endian integers set to boundary values (where lengths and dims live), truncation,
/// and a chunk duplicated or removed.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Mutator { state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A mutant of `seed`: one to four edits.
    pub fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut b = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            if b.is_empty() {
                b.push(self.next() as u8);
                continue;
            }
            let at = self.below(b.len());
            match self.below(7) {
                0 => b[at] ^= 1 << self.below(8),
                1 => b[at] = [0, 0xff, 0x7f, 0x80][self.below(4)],
                2 => b[at] = self.next() as u8,
                3 => {
                    const EDGES: [u32; 8] = [0, 1, 0x7fff, 0x8000, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
                    let v = EDGES[self.below(EDGES.len())].to_le_bytes();
                    let n = [2usize, 4][self.below(2)].min(b.len() - at);
                    b[at..at + n].copy_from_slice(&v[..n]);
                }
                4 => b.truncate(at),
                5 => {
                    let len = self.below(64.min(b.len() - at)) + 1;
                    let chunk = b[at..at + len].to_vec();
                    let to = self.below(b.len());
                    b.splice(to..to, chunk);
                }
                _ => {
                    let len = self.below(64.min(b.len() - at)) + 1;
                    b.drain(at..at + len);
                }
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_are_deterministic_and_differ() {
        let seed: Vec<u8> = (0..200u8).collect();
        let a: Vec<Vec<u8>> = (0..20).scan(Mutator::new(7), |m, _| Some(m.mutate(&seed))).collect();
        let b: Vec<Vec<u8>> = (0..20).scan(Mutator::new(7), |m, _| Some(m.mutate(&seed))).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|m| **m != seed).count() >= 18);
    }
}
