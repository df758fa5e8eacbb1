//! fmseg's frozen weights format: one file, memory-mapped, each tensor ready to use in place.
//!
//! ```text
//! 0    8 bytes  magic "FMSEGW1\0"
//! 8    u32 LE   format version (1)
//! 12   u32 LE   reserved, 0
//! 16   u64 LE   length L of the JSON index
//! 24   L bytes  JSON index (UTF-8), then zero padding to a multiple of 64 = data start
//! ...  data     each tensor at data start + offset, offset a multiple of 64, little-endian
//! ```
//! The index: `{"metadata": {...}, "checksum": "sha256:<hex>", "data_bytes": N, "tensors": [...]}`,
//! each tensor `{"name", "shape", "dtype": "F16"|"F32", "offset", "nbytes"}` or, for a shared
//! module stored once, `{"name", "shape", "alias_of": "<name of the stored tensor>"}`. The
//! checksum covers the whole data region (padding included) and is verified on every open.
//! The 64-byte alignment (inside a page-aligned map) lets a backend use `&[f16]`/`&[f32]`
//! views of the map directly, e.g. to upload FP16 weights to a GPU without a copy.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::convert::{self, Elem};
use super::{aliases_in, DType, StateDict};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

pub const MAGIC: &[u8; 8] = b"FMSEGW1\0";
pub const VERSION: u32 = 1;
const ALIGN: usize = 64;
const HEADER: usize = 24;
/// An index this large would describe millions of tensors: refuse before parsing.
const MAX_INDEX_BYTES: u64 = 64 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    metadata: BTreeMap<String, String>,
    checksum: String,
    data_bytes: u64,
    tensors: Vec<Entry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alias_of: Option<String>,
}

/// Where a stored tensor's bytes are, after validation.
#[derive(Clone, Debug)]
struct Placed {
    elem: Elem,
    start: usize,
    len: usize,
}

/// An open frozen weights file: the map, and the validated index.
pub struct FrozenFile {
    path: PathBuf,
    map: memmap2::Mmap,
    index: Index,
    /// Per entry: where its bytes are (an alias points at its original's).
    placed: Vec<Placed>,
    by_name: HashMap<String, usize>,
}

/// One tensor of a [`FrozenFile`], borrowed from the map.
#[derive(Clone, Copy, Debug)]
pub struct FrozenTensor<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    /// [`Elem::F16`] or [`Elem::F32`].
    pub elem: Elem,
    /// The stored tensor this one shares its bytes with.
    pub alias_of: Option<&'a str>,
    /// Little-endian values, row-major.
    pub bytes: &'a [u8],
}

impl FrozenTensor<'_> {
    pub fn to_f32(&self) -> Vec<f32> {
        convert::decode(self.bytes, self.elem, false)
    }

    /// The values in place, when stored as f16 (on little-endian hosts; the data is aligned).
    #[cfg(target_endian = "little")]
    pub fn as_f16(&self) -> Option<&[half::f16]> {
        (self.elem == Elem::F16).then(|| bytemuck::try_cast_slice(self.bytes).ok()).flatten()
    }

    /// The values in place, when stored as f32 (on little-endian hosts; the data is aligned).
    #[cfg(target_endian = "little")]
    pub fn as_f32(&self) -> Option<&[f32]> {
        (self.elem == Elem::F32).then(|| bytemuck::try_cast_slice(self.bytes).ok()).flatten()
    }
}

fn elem_name(e: Elem) -> &'static str {
    match e {
        Elem::F16 => "F16",
        _ => "F32",
    }
}

impl FrozenFile {
    /// Maps `path` and validates header, index, bounds and checksum.
    pub fn open(path: &Path) -> Result<FrozenFile> {
        let bad = |m: String| Error::format(path, m);
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: a read-only map; the file is not expected to change while open (as with any
        // memory-mapped weights). The checksum below catches content damaged at rest.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(bad(if map.starts_with(&MAGIC[..map.len().min(8)]) && map.len() < HEADER {
                format!("frozen weights header truncated ({} bytes)", map.len())
            } else {
                "not an fmseg frozen weights file (magic FMSEGW1 missing)".into()
            }));
        }
        let u32_at = |i: usize| u32::from_le_bytes([map[i], map[i + 1], map[i + 2], map[i + 3]]);
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!("frozen weights format version {version}; this build reads version {VERSION}")));
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&map[16..24]);
        let index_len = u64::from_le_bytes(l);
        let file_len = map.len() as u64;
        if index_len > MAX_INDEX_BYTES || HEADER as u64 + index_len > file_len {
            return Err(bad(format!(
                "index length {index_len} runs past the end of the {file_len}-byte file (truncated?)"
            )));
        }
        let index_end = HEADER + index_len as usize;
        let index: Index = serde_json::from_slice(&map[HEADER..index_end])
            .map_err(|e| bad(format!("frozen weights index is not valid: {e}")))?;
        let data_start = index_end.div_ceil(ALIGN) * ALIGN;
        let data_len = map.len().saturating_sub(data_start);
        if data_start > map.len() || index.data_bytes != data_len as u64 {
            let what = if (data_len as u64) < index.data_bytes {
                "the file is truncated"
            } else {
                "the file has bytes after its data (appended to, or not an fmseg frozen file)"
            };
            return Err(bad(format!(
                "data region holds {data_len} bytes but the index declares {}: {what}",
                index.data_bytes
            )));
        }

        let mut by_name = HashMap::new();
        for (i, e) in index.tensors.iter().enumerate() {
            if by_name.insert(e.name.clone(), i).is_some() {
                return Err(bad(format!("tensor '{}' listed twice", e.name)));
            }
        }
        let mut placed = Vec::with_capacity(index.tensors.len());
        for e in &index.tensors {
            let name = &e.name;
            let numel = e.shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
            let Some(numel) = numel else { return Err(bad(format!("tensor '{name}': shape {:?} overflows", e.shape))) };
            let p = match &e.alias_of {
                Some(orig) => {
                    let Some(&j) = by_name.get(orig) else {
                        return Err(bad(format!("tensor '{name}' is an alias of '{orig}', which is not in the file")));
                    };
                    let o = &index.tensors[j];
                    if o.alias_of.is_some() || o.shape != e.shape || e.dtype.is_some() || e.offset.is_some() {
                        return Err(bad(format!(
                            "tensor '{name}': alias of '{orig}' must have its shape {:?} and no data of its own",
                            o.shape
                        )));
                    }
                    None
                }
                None => {
                    let elem = match e.dtype.as_deref() {
                        Some("F32") => Elem::F32,
                        Some("F16") => Elem::F16,
                        other => {
                            return Err(bad(format!("tensor '{name}': dtype {other:?} (expected \"F16\" or \"F32\")")))
                        }
                    };
                    let (Some(off), Some(nb)) = (e.offset, e.nbytes) else {
                        return Err(bad(format!("tensor '{name}': offset or nbytes missing")));
                    };
                    let want = numel.checked_mul(elem.size());
                    if want != Some(nb as usize)
                        || off % ALIGN as u64 != 0
                        || off.checked_add(nb).is_none_or(|end| end > data_len as u64)
                    {
                        return Err(bad(format!(
                            "tensor '{name}': {nb} bytes at offset {off} do not fit shape {:?} {} in the {data_len}-byte data region",
                            e.shape,
                            elem_name(elem)
                        )));
                    }
                    Some(Placed { elem, start: data_start + off as usize, len: nb as usize })
                }
            };
            placed.push(p);
        }
        let mut resolved = Vec::with_capacity(placed.len());
        for (e, p) in index.tensors.iter().zip(&placed) {
            let target = match &e.alias_of {
                Some(orig) => &placed[by_name[orig]],
                None => p,
            };
            match target {
                Some(p) => resolved.push(p.clone()),
                None => return Err(bad(format!("tensor '{}' has no data", e.name))),
            }
        }
        let placed = resolved;

        let got = format!("sha256:{}", hex(&Sha256::digest(&map[data_start..])));
        if got != index.checksum {
            return Err(bad(format!(
                "checksum mismatch: the data region hashes to {got}, the index says {} (file damaged?)",
                index.checksum
            )));
        }
        Ok(FrozenFile { path: path.to_path_buf(), map, index, placed, by_name })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.index.metadata
    }

    /// `sha256:<hex>` of the data region: an identity for the weights it holds.
    pub fn checksum(&self) -> &str {
        &self.index.checksum
    }

    pub fn len(&self) -> usize {
        self.index.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.tensors.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.tensors.iter().map(|e| e.name.as_str())
    }

    pub fn tensor(&self, name: &str) -> Option<FrozenTensor<'_>> {
        let &i = self.by_name.get(name)?;
        Some(self.at(i))
    }

    fn at(&self, i: usize) -> FrozenTensor<'_> {
        let e = &self.index.tensors[i];
        let p = &self.placed[i];
        FrozenTensor {
            name: &e.name,
            shape: &e.shape,
            elem: p.elem,
            alias_of: e.alias_of.as_deref(),
            bytes: &self.map[p.start..p.start + p.len],
        }
    }

    /// Every tensor as f32, aliases included, in file order.
    pub fn to_state_dict(&self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for i in 0..self.index.tensors.len() {
            let t = self.at(i);
            let ht = HostTensor::new(t.shape.to_vec(), t.to_f32())
                .map_err(|e| Error::format(&self.path, format!("tensor '{}': {e}", t.name)))?;
            sd.insert(t.name, ht);
        }
        Ok(sd)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Loads a frozen file into a state dict (aliases included).
pub fn load(path: &Path) -> Result<StateDict> {
    FrozenFile::open(path)?.to_state_dict()
}

/// Writes `sd` in `dtype`, catalog aliases stored once, with `meta` added to the metadata
/// (which always has `model` and `fmseg_version`).
pub fn write(sd: &StateDict, path: &Path, dtype: DType, meta: &[(&str, &str)]) -> Result<()> {
    let alias = aliases_in(sd);
    let mut data: Vec<u8> = Vec::new();
    let mut entries = Vec::with_capacity(sd.len());
    let names: Vec<&str> = sd.names().collect();
    for (i, (k, t)) in sd.iter().enumerate() {
        let e = match alias[i] {
            Some(j) => Entry {
                name: k.to_string(),
                shape: t.shape.clone(),
                dtype: None,
                offset: None,
                nbytes: None,
                alias_of: Some(names[j].to_string()),
            },
            None => {
                let bytes = match dtype {
                    DType::F32 => convert::encode_f32(&t.data),
                    DType::F16 => convert::encode_f16(&t.data).map_err(|v| {
                        Error::weights(path, format!("tensor '{k}': value {v} does not fit in float16"))
                    })?,
                };
                data.resize(data.len().div_ceil(ALIGN) * ALIGN, 0);
                let offset = data.len() as u64;
                data.extend_from_slice(&bytes);
                Entry {
                    name: k.to_string(),
                    shape: t.shape.clone(),
                    dtype: Some(elem_name(if dtype == DType::F16 { Elem::F16 } else { Elem::F32 }).into()),
                    offset: Some(offset),
                    nbytes: Some(bytes.len() as u64),
                    alias_of: None,
                }
            }
        };
        entries.push(e);
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("model".to_string(), "2.5D-AttentionUNet".to_string());
    metadata.insert("fmseg_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    metadata.insert("dtype".to_string(), dtype.name().to_string());
    for (k, v) in meta {
        metadata.insert(k.to_string(), v.to_string());
    }
    let index = Index { metadata, checksum: String::new(), data_bytes: data.len() as u64, tensors: entries };
    // The checksum depends on the data only, so it is computed before the index is serialised.
    let index = Index { checksum: format!("sha256:{}", hex(&Sha256::digest(&data))), ..index };
    let json = serde_json::to_vec(&index).map_err(|e| Error::format(path, format!("frozen index: {e}")))?;
    let mut head = Vec::with_capacity(HEADER + json.len() + ALIGN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&(json.len() as u64).to_le_bytes());
    head.extend_from_slice(&json);
    head.resize(head.len().div_ceil(ALIGN) * ALIGN, 0);
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&head).and_then(|()| f.write_all(&data)).and_then(|()| f.sync_all()).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> StateDict {
        let mut sd = StateDict::new();
        sd.insert("a", HostTensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, -4.0, 0.5, 1e-3]).unwrap());
        sd.insert("b", HostTensor::new(vec![1], vec![7.0]).unwrap());
        sd
    }

    #[test]
    fn layout_is_aligned_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.fmw");
        write(&small(), &p, DType::F32, &[("source", "unit")]).unwrap();
        let f = FrozenFile::open(&p).unwrap();
        assert_eq!(f.metadata()["source"], "unit");
        assert_eq!(f.metadata()["model"], "2.5D-AttentionUNet");
        for n in ["a", "b"] {
            let t = f.tensor(n).unwrap();
            assert_eq!(t.bytes.as_ptr() as usize % 64, 0, "{n} not 64-byte aligned");
        }
        assert_eq!(f.tensor("a").unwrap().as_f32().unwrap(), &[1.0, 2.0, 3.0, -4.0, 0.5, 1e-3]);
        assert!(f.tensor("a").unwrap().as_f16().is_none());
        let sd = f.to_state_dict().unwrap();
        assert_eq!(sd.get("b").unwrap().data, [7.0]);
    }

    #[test]
    fn every_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.fmw");
        write(&small(), &p, DType::F16, &[]).unwrap();
        let good = std::fs::read(&p).unwrap();
        assert!(FrozenFile::open(&p).is_ok());
        let q = dir.path().join("bad.fmw");
        // every truncation
        for n in (0..good.len()).step_by(7) {
            std::fs::write(&q, &good[..n]).unwrap();
            let e = FrozenFile::open(&q).err().unwrap_or_else(|| panic!("truncated to {n} accepted")).to_string();
            assert!(e.contains("bad.fmw"), "{e}");
        }
        // a flipped bit in the data is caught by the checksum
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&q, &b).unwrap();
        let e = FrozenFile::open(&q).err().unwrap().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        // garbage anywhere: an error or (inside padding/JSON whitespace) a valid file, never a panic
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] = b[i].wrapping_add(0x5a);
            std::fs::write(&q, &b).unwrap();
            let _ = FrozenFile::open(&q);
        }
        // cut at the end, or with bytes appended: each called what it is
        std::fs::write(&q, &good[..good.len() - 2]).unwrap();
        let e = FrozenFile::open(&q).err().unwrap().to_string();
        assert!(e.contains("truncated") && !e.contains('?'), "{e}");
        std::fs::write(&q, [&good[..], b"extra"].concat()).unwrap();
        let e = FrozenFile::open(&q).err().unwrap().to_string();
        assert!(e.contains("bytes after its data") && !e.contains("truncated"), "{e}");
        // a newer version
        let mut b = good.clone();
        b[8] = 2;
        std::fs::write(&q, &b).unwrap();
        let e = FrozenFile::open(&q).err().unwrap().to_string();
        assert!(e.contains("version 2"), "{e}");
    }
}
