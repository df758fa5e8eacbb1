//! Fuzz targets: every reader of untrusted bytes, as one function per format that takes the
//! bytes, runs the reader on them and must return (an `Ok` or an `Err` with a message), never
//! panic, hang or reserve memory the input does not justify.
//!
//! The targets are plain functions so that any driver can call them: the coverage-guided AFL++
//! harness in `fuzz/` (`scripts/fuzz-afl.sh`, one binary per target, seeded by [`seeds`]) and the
//! bounded mutation run in `tests/io/io_formats.rs`, which also replays every regression case in
//! `tests/data/fuzz/<target>/`. The readers take paths, so each call writes the bytes to a file
//! in `dir` under the name the format expects.

use std::path::Path;

use crate::error::Result;

/// The formats fmseg reads from users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// One DICOM file as a series (header, pixel data, every codec dicom-pixeldata has).
    Dicom,
    /// Several DICOM files as one series directory (the slices of the input, split at
    /// [`SLICE_SEPARATOR`]): ordering, spacing, geometry and header agreement across files.
    DicomSeries,
    /// A NIfTI-1 image, plain or gzip (recognised by content).
    Nifti,
    /// A NumPy `.npy` array.
    Npy,
    /// Weights: PyTorch zip + pickle, safetensors or fmseg's frozen `.fmw` (detected from content).
    Weights,
    /// `fmseg batch --rules` JSON, then applied to sample series.
    Rules,
    /// What a peer sends `fmseg serve`: PDUs (dicom-ul's reader) and the DIMSE command sets
    /// in them (fmseg's decoder).
    DicomNet,
}

/// Where a [`Target::DicomSeries`] input is cut into files.
pub const SLICE_SEPARATOR: &[u8] = b"\0FMSEG-NEXT-SLICE\0";
/// At most this many files per series input (more pieces are joined into the last).
const MAX_SERIES_FILES: usize = 8;

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Dicom,
        Target::DicomSeries,
        Target::Nifti,
        Target::Npy,
        Target::Weights,
        Target::Rules,
        Target::DicomNet,
    ];

    /// The lower-case name used for the harness binaries and the regression folders.
    pub fn name(self) -> &'static str {
        match self {
            Target::Dicom => "dicom",
            Target::DicomSeries => "dicom_series",
            Target::Nifti => "nifti",
            Target::Npy => "npy",
            Target::Weights => "weights",
            Target::Rules => "rules",
            Target::DicomNet => "dicom_net",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    fn file_name(self) -> &'static str {
        match self {
            Target::Dicom => "input.dcm",
            Target::DicomSeries => "series",
            Target::Nifti => "input.nii",
            Target::Npy => "input.npy",
            Target::Weights => "input.weights",
            Target::Rules => "rules.json",
            Target::DicomNet => "stream.bin",
        }
    }
}

/// Run `target`'s reader on `data` (written to a file in `dir`). The result's message, or
/// `None` when the input was accepted; a panic propagates (the driver reports it).
pub fn run(target: Target, data: &[u8], dir: &Path) -> Option<String> {
    let path = dir.join(target.file_name());
    let written = match target {
        Target::DicomSeries => write_series(&path, data),
        _ => std::fs::write(&path, data),
    };
    if written.is_err() {
        return None;
    }
    let r: Result<()> = match target {
        Target::Dicom | Target::DicomSeries => {
            crate::io::dicom::load_series(&path, &crate::io::dicom::Selection::default()).map(|_| ())
        }
        Target::Nifti => crate::io::nifti::read(&path).map(|_| ()),
        Target::Npy => crate::io::npy::read(&path).map(|_| ()),
        Target::Weights => crate::weights::load(&path).map(|_| ()),
        Target::Rules => crate::pipeline::rules::Rules::read(&path).map(|r| {
            r.decide(&crate::pipeline::rules::sample_series());
        }),
        Target::DicomNet => crate::io::dicom::net::dimse::read_stream(data, 65536)
            .map(|_| ())
            .map_err(|m| crate::error::Error::format(&path, m)),
    };
    r.err().map(|e| e.to_string())
}

/// Writes the pieces of `data` (split at [`SLICE_SEPARATOR`]) as `dir/IM0000.dcm`, ... after
/// emptying `dir`, so that no file of an earlier input stays.
fn write_series(dir: &Path, data: &[u8]) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir(dir)?;
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while pieces.len() + 1 < MAX_SERIES_FILES {
        match rest.windows(SLICE_SEPARATOR.len()).position(|w| w == SLICE_SEPARATOR) {
            Some(at) => {
                pieces.push(&rest[..at]);
                rest = &rest[at + SLICE_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    pieces.push(rest);
    for (i, p) in pieces.iter().enumerate() {
        std::fs::write(dir.join(format!("IM{i:04}.dcm")), p)?;
    }
    Ok(())
}

/// The inputs every target starts from, written by fmseg's own writers into `dir` (which must
/// exist): small valid files of each format and variant (NIfTI f32 / i16 / gzip u8, `.npy`,
/// a classic and an enhanced MR DICOM, a three-slice series, weights as `.pth`, safetensors
/// and `.fmw`). Each is `(target, file name, bytes)`; every seed is accepted by its reader.
/// Compressed transfer syntaxes come from DCMTK in `scripts/fuzz-afl.sh`.
pub fn seeds(dir: &Path) -> Result<Vec<(Target, String, Vec<u8>)>> {
    use crate::io::dicom::{write_enhanced_mr, write_mr_series, MrSeriesMeta, Rescale, StoredSamples, StoredVolume};
    use crate::io::{nifti, npy};
    use crate::tensor::HostTensor;
    use crate::weights::{DType, Format, StateDict};
    let read = |p: &Path| std::fs::read(p).map_err(|e| crate::error::Error::io(p, e));
    let mut out = Vec::new();
    let mut affine = crate::volume::IDENTITY;
    affine[2][2] = 3.0;
    let dims = [12, 10, 3];
    let values: Vec<f32> = (0..12 * 10 * 3).map(|i| (i % 97) as f32).collect();
    let v = crate::volume::Volume::new(dims, values.clone(), affine)?;
    for (name, ty) in
        [("a.nii", nifti::WriteType::F32), ("b.nii", nifti::WriteType::I16), ("c.nii.gz", nifti::WriteType::U8)]
    {
        let p = dir.join(name);
        nifti::write(&p, &v, ty)?;
        out.push((Target::Nifti, name.to_string(), read(&p)?));
    }
    let p = dir.join("a.npy");
    npy::write_tensor(&p, &HostTensor::new(vec![1, 1, 12, 10, 3], values.clone())?)?;
    out.push((Target::Npy, "a.npy".into(), read(&p)?));
    let samples = StoredSamples::I16(values.iter().map(|&x| x as i16).collect());
    let sv = StoredVolume::new(dims, samples, affine, vec![Rescale::IDENTITY])?;
    let meta = MrSeriesMeta::default();
    let files = write_mr_series(&sv, &meta, &dir.join("series"))?;
    out.push((Target::Dicom, "classic.dcm".into(), read(&files[0])?));
    let mut series = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            series.extend_from_slice(SLICE_SEPARATOR);
        }
        series.extend_from_slice(&read(f)?);
    }
    out.push((Target::DicomSeries, "classic-3-slices".into(), series));
    let enhanced = dir.join("enhanced.dcm");
    write_enhanced_mr(&sv, &meta, &enhanced)?;
    out.push((Target::Dicom, "enhanced.dcm".into(), read(&enhanced)?));
    let mut sd = StateDict::new();
    sd.insert("conv.weight", HostTensor::new(vec![2, 1, 3], vec![0.5, -1.0, 2.0, 0.25, 8.0, -3.0])?);
    sd.insert("conv.bias", HostTensor::new(vec![2], vec![0.1, 0.2])?);
    for (name, format, dtype) in [
        ("w.pth", Format::Pth, DType::F32),
        ("w.safetensors", Format::Safetensors, DType::F16),
        ("w.fmw", Format::Frozen, DType::F16),
    ] {
        let p = dir.join(name);
        crate::weights::save(&sd, &p, format, dtype)?;
        out.push((Target::Weights, name.to_string(), read(&p)?));
    }
    for (name, json) in [
        (
            "t1.json",
            r#"{"selections": [{"name": "T1", "conditions": {"Modality": "(?i)MR", "SeriesDescription": "t1.*tra",
                "SliceThickness": [2.5, 5], "ImageType": ["ORIGINAL", "PRIMARY"], "min_slices": 12, "axial": true,
                "t1_weighted": true}}]}"#,
        ),
        (
            "two.json",
            r#"{"selections": [{"name": "a", "conditions": {"Rows": 256, "EchoTime": [5, 20], "max_tilt_deg": 30}},
                {"name": "b", "conditions": {"SeriesNumber": 2, "single_orientation": true, "StudyInstanceUID": "^1\\.2"}}]}"#,
        ),
    ] {
        out.push((Target::Rules, name.to_string(), json.as_bytes().to_vec()));
    }
    out.push((Target::DicomNet, "association.bin".into(), crate::io::dicom::net::dimse::sample_stream()));
    Ok(out)
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
