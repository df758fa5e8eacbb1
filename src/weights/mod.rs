//! Network weights: the reference's PyTorch checkpoints, safetensors, and the engine's own
//! memory-mapped frozen format, all loading into one [`StateDict`].
//!
//! [`load`] tells the format from the file's content, never its name; [`canonicalize`] checks
//! a loaded state dict against the network's catalog and fills the shared-module aliases;
//! [`save`] writes any of the three formats atomically (a temporary file renamed into place).

mod canonical;
pub mod convert;
pub mod frozen;
pub mod pickle;
pub mod pickle_write;
pub mod pth;
pub mod safetensors_io;
mod state_dict;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use canonical::{canonicalize, canonicalize_for};
pub use convert::Elem;
pub use state_dict::StateDict;

use crate::error::{Error, Result};
use crate::model::catalog;

/// A weights file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` zip archive (`.pth`, `.pt`).
    Pth,
    /// Hugging Face safetensors.
    Safetensors,
    /// fmseg's memory-mapped frozen format (`.fmw`).
    Frozen,
}

impl Format {
    /// The format a file name's extension conventionally stands for.
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "pth" | "pt" => Some(Format::Pth),
            "safetensors" => Some(Format::Safetensors),
            "fmw" => Some(Format::Frozen),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Pth => "pth",
            Format::Safetensors => "safetensors",
            Format::Frozen => "frozen",
        }
    }
}

/// The element type weights are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }
}

/// The format of the file at `path`, from its first bytes.
pub fn detect(path: &Path) -> Result<Format> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(512);
    (&mut f).take(512).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    detect_bytes(path, &head, len)
}

fn detect_bytes(path: &Path, head: &[u8], file_len: u64) -> Result<Format> {
    if head.is_empty() {
        return Err(Error::format(path, "empty file: not a weights file"));
    }
    if head.starts_with(frozen::MAGIC) {
        return Ok(Format::Frozen);
    }
    // An empty zip (end-of-central-directory record first) is a zip too: the reader says why it
    // is not a checkpoint.
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Format::Pth);
    }
    pth::check_not_legacy(path, head)?;
    // safetensors: u64 little-endian header length, then a JSON object that fits in the file.
    if head.len() >= 9 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&head[..8]);
        let n = u64::from_le_bytes(n);
        if head[8] == b'{' && n >= 2 && n.saturating_add(8) <= file_len {
            return Ok(Format::Safetensors);
        }
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(Error::format(
        path,
        format!(
            "not a weights file: neither a PyTorch zip checkpoint, safetensors, nor an fmseg frozen file \
             (first bytes: {})",
            shown.join(" ")
        ),
    ))
}

/// Loads any supported weights file (format detected from content) as f32 tensors, in file
/// order, keys as stored. Use [`canonicalize`] to check it against the network.
pub fn load(path: &Path) -> Result<StateDict> {
    match detect(path)? {
        Format::Pth => pth::load(path),
        Format::Safetensors => safetensors_io::load(path),
        Format::Frozen => frozen::load(path),
    }
}

/// Loads and canonicalizes: the one call that turns a user's file into the network's weights.
pub fn load_canonical(path: &Path) -> Result<StateDict> {
    let sd = load(path)?;
    canonicalize(&sd, path)
}

/// The metadata a weights file carries (frozen and safetensors files; none in `.pth`), given
/// its `bytes`: `trained`, `caveat`, a classifier's `threshold`...
pub fn metadata(path: &Path, bytes: &[u8]) -> Result<std::collections::BTreeMap<String, String>> {
    Ok(match detect(path)? {
        Format::Frozen => frozen::FrozenFile::open(path)?.metadata().clone(),
        Format::Safetensors => safetensors::SafeTensors::read_metadata(bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default(),
        Format::Pth => Default::default(),
    })
}

/// Writes `sd` to `path` in `format`, atomically: into a temporary file in the same folder,
/// renamed over `path` only once complete, so a failure leaves no partial output.
pub fn save(sd: &StateDict, path: &Path, format: Format, dtype: DType) -> Result<()> {
    save_with_metadata(sd, path, format, dtype, &[])
}

/// [`save`] with extra `(key, value)` metadata where the format has room for it (safetensors'
/// header metadata, the frozen index); `torch.save` files have none.
pub fn save_with_metadata(
    sd: &StateDict,
    path: &Path,
    format: Format,
    dtype: DType,
    meta: &[(&str, &str)],
) -> Result<()> {
    let tmp = temp_path(path);
    let r = match format {
        Format::Pth => {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("archive");
            pth::write(sd, &tmp, dtype, &archive_name(stem))
        }
        Format::Safetensors => safetensors_io::write(sd, &tmp, dtype, meta),
        Format::Frozen => frozen::write(sd, &tmp, dtype, meta),
    };
    let r = r
        .map_err(|e| retarget(e, &tmp, path))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// `.<name>.tmp-<pid>` next to `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "weights".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Errors about the temporary file name the destination the user asked for.
fn retarget(e: Error, tmp: &Path, path: &Path) -> Error {
    match e {
        Error::Io { path: p, err } if p == tmp => Error::Io { path: path.to_path_buf(), err },
        Error::Format { path: p, msg } if p == tmp => Error::Format { path: path.to_path_buf(), msg },
        Error::Weights { path: p, msg } if p == tmp => Error::Weights { path: path.to_path_buf(), msg },
        e => e,
    }
}

/// A zip folder name PyTorch's reader accepts: the stem with anything unusual replaced.
fn archive_name(stem: &str) -> String {
    let s: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if s.is_empty() {
        "archive".into()
    } else {
        s
    }
}

/// For each entry of `sd`, the index of the earlier entry it is an alias of: a catalog alias
/// (`up_4.attention.*` of `attention_3.*`, ...) whose original is present with the same shape
/// and bit-identical values. Writers store such entries once.
pub fn aliases_in(sd: &StateDict) -> Vec<Option<usize>> {
    let mut original_of = std::collections::HashMap::new();
    for l in catalog::layers() {
        if let Some(orig) = &l.alias_of {
            for (k, _) in l.tensors() {
                let suffix = &k[l.prefix.len()..];
                original_of.insert(k.clone(), format!("{orig}{suffix}"));
            }
        }
    }
    let pos: std::collections::HashMap<&str, usize> = sd.names().enumerate().map(|(i, k)| (k, i)).collect();
    sd.iter()
        .enumerate()
        .map(|(i, (k, t))| {
            let j = *pos.get(original_of.get(k)?.as_str())?;
            let o = sd.get(original_of.get(k)?)?;
            (j < i && o.shape == t.shape && bit_equal(&o.data, &t.data)).then_some(j)
        })
        .collect()
}

fn bit_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Total number of values, counting each alias group once.
pub fn distinct_parameters(sd: &StateDict) -> usize {
    let a = aliases_in(sd);
    sd.iter().zip(a).filter(|(_, a)| a.is_none()).map(|((_, t), _)| t.numel()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_by_content() {
        let p = Path::new("x.bin");
        assert_eq!(detect_bytes(p, b"PK\x03\x04rest", 100).unwrap(), Format::Pth);
        assert_eq!(detect_bytes(p, b"FMSEGW1\0....", 100).unwrap(), Format::Frozen);
        let mut st = 10u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\":1}   ");
        assert_eq!(detect_bytes(p, &st, 18).unwrap(), Format::Safetensors);
        // a header longer than the file is not safetensors
        assert!(detect_bytes(p, &st, 12).is_err());
        let e = detect_bytes(p, &pth::LEGACY_MAGIC, 100).unwrap_err().to_string();
        assert!(e.contains("legacy (pre-1.6)"), "{e}");
        let e = detect_bytes(p, b"hello world, this is text", 100).unwrap_err().to_string();
        assert!(e.contains("x.bin") && e.contains("not a weights file") && e.contains("68 65 6c"), "{e}");
        assert!(detect_bytes(p, b"", 0).unwrap_err().to_string().contains("empty file"));
    }

    #[test]
    fn archive_names_are_safe() {
        assert_eq!(archive_name("weights_seed0"), "weights_seed0");
        assert_eq!(archive_name("my model.v2"), "my_model_v2");
        assert_eq!(archive_name(""), "archive");
    }

    #[test]
    fn extension_formats() {
        assert_eq!(Format::from_extension(Path::new("a/b.PTH")), Some(Format::Pth));
        assert_eq!(Format::from_extension(Path::new("b.pt")), Some(Format::Pth));
        assert_eq!(Format::from_extension(Path::new("b.safetensors")), Some(Format::Safetensors));
        assert_eq!(Format::from_extension(Path::new("b.fmw")), Some(Format::Frozen));
        assert_eq!(Format::from_extension(Path::new("b.bin")), None);
        assert_eq!(Format::from_extension(Path::new("b")), None);
    }
}
