//! PyTorch checkpoints as `torch.save` (1.6 and later) writes them: a zip archive holding
//! `<name>/data.pkl` (the pickled object, tensors as persistent ids naming storages),
//! `<name>/data/<key>` (each storage's raw bytes), `<name>/byteorder`, `<name>/version`.
//!
//! Reading runs [`pickle`](super::pickle) over `data.pkl` without executing anything, finds the
//! state dict (directly, or under `state_dict` / `model` / ... in a training checkpoint), and
//! materialises each tensor's strided view of its storage as contiguous f32. The storage
//! location (`cpu`, `cuda:0`) is ignored: everything loads on the host. Writing produces what
//! `torch.save(model.state_dict())` does: f32 (or f16) storages, 64-byte aligned records, and
//! shared-module aliases as one storage referenced twice.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::Path;
use std::rc::Rc;

use super::convert::{self, Elem};
use super::pickle::{self, HeapObj, TensorRef, Unpickled, Value};
use super::{aliases_in, DType, StateDict};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// The first bytes of a pre-1.6 `torch.save` file: protocol 2, then the pickled magic number
/// 0x1950a86a20f9469cfc6c as LONG1.
pub const LEGACY_MAGIC: [u8; 14] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

pub const LEGACY_MSG: &str = "legacy (pre-1.6) torch.save format; re-save with a newer PyTorch \
     (torch.save(torch.load(f), f) with PyTorch >= 1.6 writes the zip format)";

/// Keys under which training checkpoints commonly keep the model's state dict, most specific first.
const WRAPPER_KEYS: [&str; 6] = ["state_dict", "model_state_dict", "model", "net", "network", "module"];

/// Largest tensor materialised (elements): far above any layer of this network, and a bound on
/// what a hostile pickle can make us allocate through zero strides (1 GiB of f32, the
/// largest a reader may reserve under the 4 GB address-space limit the tests run with).
const MAX_TENSOR_ELEMENTS: usize = 1 << 28;
/// Largest `data.pkl` read (a state dict's pickle is tens of kilobytes; a checkpoint with an
/// optimiser's state and a training log stays far below this).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Loads the state dict of a zip-format PyTorch checkpoint as f32 tensors, in file order.
pub fn load(path: &Path) -> Result<StateDict> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut head = [0u8; 512];
    let n = read_up_to(&mut reader, &mut head).map_err(|e| Error::io(path, e))?;
    check_not_legacy(path, &head[..n])?;
    reader.rewind().map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(reader)
        .map_err(|e| Error::format(path, format!("not a readable zip archive (truncated or damaged?): {e}")))?;

    let prefix = archive_prefix(path, &zip)?;
    let pkl_name = format!("{prefix}data.pkl");
    let pkl = read_record(path, &mut zip, &pkl_name, MAX_PICKLE_BYTES)?;
    let big_endian = match zip.index_for_name(&format!("{prefix}byteorder")) {
        None => false,
        Some(_) => match read_record(path, &mut zip, &format!("{prefix}byteorder"), 16)?.as_slice() {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(Error::format(
                    path,
                    format!("byteorder record says '{}' (expected little or big)", String::from_utf8_lossy(other)),
                ))
            }
        },
    };

    let u = pickle::unpickle(&pkl).map_err(|e| Error::format(path, format!("{pkl_name}: {e}")))?;
    let entries = find_state_dict(&u).map_err(|m| Error::format(path, m))?;

    let mut storages: HashMap<String, (Elem, Rc<Vec<f32>>)> = HashMap::new();
    let mut sd = StateDict::new();
    for (name, t) in entries {
        let s = &t.storage;
        let data = match storages.get(&s.key) {
            Some((elem, d)) => {
                if *elem != s.dtype {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor '{name}': storage '{}' is read as {} here and as {} elsewhere",
                            s.key,
                            s.dtype.torch_name(),
                            elem.torch_name()
                        ),
                    ));
                }
                d.clone()
            }
            None => {
                let rec = format!("{prefix}data/{}", s.key);
                let want = s.numel.checked_mul(s.dtype.size()).ok_or_else(|| {
                    Error::format(path, format!("tensor '{name}': storage '{}' size {} overflows", s.key, s.numel))
                })?;
                let bytes = read_record(path, &mut zip, &rec, want as u64)?;
                if bytes.len() != want {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor '{name}': storage record {rec} holds {} bytes, but {} {} values ({want} bytes) were declared",
                            bytes.len(),
                            s.numel,
                            s.dtype.torch_name()
                        ),
                    ));
                }
                let d = Rc::new(convert::decode(&bytes, s.dtype, big_endian));
                storages.insert(s.key.clone(), (s.dtype, d.clone()));
                d
            }
        };
        let values = gather(&data, &t).map_err(|m| Error::format(path, format!("tensor '{name}': {m}")))?;
        let ht = HostTensor::new(t.size.clone(), values)
            .map_err(|e| Error::format(path, format!("tensor '{name}': {e}")))?;
        if sd.contains(&name) {
            return Err(Error::format(path, format!("key '{name}' appears twice")));
        }
        sd.insert(name, ht);
    }
    Ok(sd)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Legacy (pre-1.6) checkpoints, and tar archives of even older ones, get a message that says
/// how to convert them; other non-zip content is left to the zip reader's error.
pub fn check_not_legacy(path: &Path, head: &[u8]) -> Result<()> {
    if head.starts_with(&LEGACY_MAGIC) || (head.len() >= 262 && &head[257..262] == b"ustar") {
        return Err(Error::format(path, LEGACY_MSG));
    }
    if head.first() == Some(&0x80) {
        return Err(Error::format(
            path,
            format!("a bare pickle stream, not torch.save's zip container; if it came from torch.save it is the {LEGACY_MSG}"),
        ));
    }
    Ok(())
}

/// `"<name>/"` of the archive: the folder holding `data.pkl`, as PyTorch's reader finds it.
fn archive_prefix<R: Read + Seek>(path: &Path, zip: &zip::ZipArchive<R>) -> Result<String> {
    let mut best: Option<&str> = None;
    let mut torchscript = false;
    for name in zip.file_names() {
        if let Some(p) = name.strip_suffix("data.pkl") {
            let top_level = p.is_empty() || (p.ends_with('/') && !p[..p.len() - 1].contains('/'));
            if top_level && best.is_none_or(|b| p.len() < b.len()) {
                best = Some(p);
            }
        }
        torchscript |= name.ends_with("constants.pkl");
    }
    match best {
        Some(p) => Ok(p.to_string()),
        None if torchscript => Err(Error::format(
            path,
            "a TorchScript archive (torch.jit.save), not a state dict; save model.state_dict() with torch.save",
        )),
        None => Err(Error::format(path, "a zip archive without data.pkl: not a PyTorch checkpoint")),
    }
}

fn read_record<R: Read + Seek>(path: &Path, zip: &mut zip::ZipArchive<R>, name: &str, max: u64) -> Result<Vec<u8>> {
    let mut f = zip.by_name(name).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => {
            Error::format(path, format!("record {name} is missing from the archive"))
        }
        e => Error::format(path, format!("record {name}: {e}")),
    })?;
    let size = f.size();
    if size > max {
        return Err(Error::format(path, format!("record {name} holds {size} bytes, expected at most {max}")));
    }
    // The declared size is the compressor's word: reserve no more than the compressed bytes
    // could plausibly expand to (deflate's limit is about 1032:1), and read one byte past the
    // declared size so that a stream longer than declared is caught, not trusted.
    let plausible = f.compressed_size().saturating_mul(1032).max(1 << 16);
    let mut buf = Vec::new();
    buf.try_reserve_exact(size.min(plausible) as usize)
        .map_err(|_| Error::format(path, format!("record {name}: cannot allocate {size} bytes")))?;
    (&mut f)
        .take(size + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::format(path, format!("record {name} cannot be read (truncated or damaged?): {e}")))?;
    if buf.len() as u64 != size {
        return Err(Error::format(
            path,
            format!("record {name} decompresses to {} bytes where the archive declares {size}", buf.len()),
        ));
    }
    Ok(buf)
}

/// The `(key, tensor)` pairs of the state dict inside the unpickled object.
fn find_state_dict(u: &Unpickled) -> std::result::Result<Vec<(String, Rc<TensorRef>)>, String> {
    let mut v = &u.value;
    let mut trail = String::new();
    for _ in 0..3 {
        let d = match v {
            Value::Heap(i) => match &u.heap[*i] {
                HeapObj::Dict(d) => d,
                HeapObj::Object { class, .. } => {
                    return Err(format!(
                        "the checkpoint{trail} holds a pickled {class} object, not a state dict; \
                         save model.state_dict() instead of the model"
                    ))
                }
                HeapObj::List(_) => return Err(format!("the checkpoint{trail} holds a list, not a state dict")),
            },
            other => return Err(format!("the checkpoint{trail} holds a {}, not a state dict", other.kind(&u.heap))),
        };
        let tensors = d.items.iter().filter(|(_, v)| matches!(v, Value::Tensor(_))).count();
        if tensors > 0 || d.items.is_empty() {
            let mut out = Vec::with_capacity(d.items.len());
            for (k, val) in &d.items {
                let Value::Str(k) = k else {
                    return Err(format!("state dict{trail} has a {} key, not a string", k.kind(&u.heap)));
                };
                match val {
                    Value::Tensor(t) => out.push((k.to_string(), t.clone())),
                    other => {
                        return Err(format!("state dict{trail} entry '{k}' is a {}, not a tensor", other.kind(&u.heap)))
                    }
                }
            }
            if out.is_empty() {
                return Err(format!("the checkpoint{trail} is an empty dict: no weights"));
            }
            return Ok(out);
        }
        match WRAPPER_KEYS.iter().find_map(|k| d.get_str(k).map(|x| (k, x))) {
            Some((k, inner)) => {
                trail.push_str(&format!("['{k}']"));
                v = inner;
            }
            None => {
                let keys: Vec<String> = d
                    .items
                    .iter()
                    .take(12)
                    .map(|(k, _)| match k {
                        Value::Str(s) => format!("'{s}'"),
                        other => other.kind(&u.heap),
                    })
                    .collect();
                return Err(format!(
                    "no state dict found: the checkpoint{trail} is a dict with keys [{}{}] and no tensors \
                     (expected tensors, or one of {WRAPPER_KEYS:?} holding them)",
                    keys.join(", "),
                    if d.items.len() > 12 { ", ..." } else { "" }
                ));
            }
        }
    }
    Err(format!("no state dict found within three levels of nesting (at checkpoint{trail})"))
}

/// The strided view `t` of `storage`, as a contiguous row-major vector.
fn gather(storage: &[f32], t: &TensorRef) -> std::result::Result<Vec<f32>, String> {
    let numel = t.size.iter().try_fold(1usize, |a, &s| a.checked_mul(s)).ok_or("size overflows")?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    if numel > MAX_TENSOR_ELEMENTS {
        return Err(format!("size {:?} has {numel} elements, more than this reader accepts", t.size));
    }
    let mut last = t.offset;
    for (&s, &st) in t.size.iter().zip(&t.stride) {
        last = (s - 1).checked_mul(st).and_then(|x| x.checked_add(last)).ok_or("stride overflows")?;
    }
    if last >= storage.len() {
        return Err(format!(
            "view (offset {}, size {:?}, stride {:?}) reaches element {last} of storage '{}', which holds {}",
            t.offset,
            t.size,
            t.stride,
            t.storage.key,
            storage.len()
        ));
    }
    // Contiguous (the usual case): one copy.
    let mut expect = 1;
    let mut contiguous = true;
    for (&s, &st) in t.size.iter().zip(&t.stride).rev() {
        if s != 1 && st != expect {
            contiguous = false;
            break;
        }
        expect *= s;
    }
    if contiguous {
        return Ok(storage[t.offset..t.offset + numel].to_vec());
    }
    let mut out = Vec::new();
    out.try_reserve_exact(numel).map_err(|_| format!("cannot allocate {numel} elements"))?;
    let rank = t.size.len();
    let mut idx = vec![0usize; rank];
    let mut pos = t.offset;
    for _ in 0..numel {
        out.push(storage[pos]);
        // Odometer increment, last axis fastest.
        for d in (0..rank).rev() {
            idx[d] += 1;
            pos += t.stride[d];
            if idx[d] < t.size[d] {
                break;
            }
            pos -= t.stride[d] * t.size[d];
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// One storage of an archive to write.
#[derive(Clone, Debug)]
pub struct StorageSpec {
    pub key: String,
    pub elem: Elem,
    /// `cpu`, `cuda:0`, ...: recorded, ignored when loading here.
    pub location: String,
    /// Raw little-endian values.
    pub bytes: Vec<u8>,
}

/// One tensor of an archive to write: a strided view into `storages[storage]`.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub storage: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A checkpoint as `torch.save` lays it out, before writing. [`Archive::from_state_dict`] is
/// what [`save`] writes; tests build others (views, half storages, GPU locations, wrappers).
#[derive(Clone, Debug)]
pub struct Archive {
    /// The folder inside the zip (`torch.save` uses the file's stem).
    pub name: String,
    pub storages: Vec<StorageSpec>,
    pub tensors: Vec<TensorSpec>,
    /// Pickle the state dict as `{wrapper: state_dict}`, like a training checkpoint.
    pub wrapper: Option<String>,
}

impl Archive {
    /// Contiguous tensors, one storage each, except aliases of the catalog (`up_4.attention.*`
    /// and `attention_3.*`, ...), which share their original's storage as in the reference.
    pub fn from_state_dict(sd: &StateDict, dtype: DType, name: &str) -> std::result::Result<Self, String> {
        let alias = aliases_in(sd);
        let mut storages = Vec::new();
        let mut storage_of: Vec<usize> = Vec::with_capacity(sd.len());
        let mut tensors = Vec::with_capacity(sd.len());
        for (i, (k, t)) in sd.iter().enumerate() {
            let s = match alias[i] {
                Some(j) => storage_of[j],
                None => {
                    let (elem, bytes) = match dtype {
                        DType::F32 => (Elem::F32, convert::encode_f32(&t.data)),
                        DType::F16 => (
                            Elem::F16,
                            convert::encode_f16(&t.data)
                                .map_err(|v| format!("tensor '{k}': value {v} does not fit in float16"))?,
                        ),
                    };
                    storages.push(StorageSpec { key: storages.len().to_string(), elem, location: "cpu".into(), bytes });
                    storages.len() - 1
                }
            };
            storage_of.push(s);
            tensors.push(TensorSpec {
                name: k.to_string(),
                storage: s,
                offset: 0,
                shape: t.shape.clone(),
                stride: contiguous_strides(&t.shape),
            });
        }
        Ok(Archive { name: name.to_string(), storages, tensors, wrapper: None })
    }

    /// The `data.pkl` pickle: an `OrderedDict` of `_rebuild_tensor_v2` calls (protocol 2).
    pub fn pickle(&self) -> Vec<u8> {
        let mut w = super::pickle_write::Pickler::new();
        if let Some(k) = &self.wrapper {
            w.empty_dict();
            w.str(k);
        }
        w.global("collections", "OrderedDict");
        w.empty_tuple();
        w.reduce();
        w.mark();
        for t in &self.tensors {
            let s = &self.storages[t.storage];
            w.str(&t.name);
            w.global("torch._utils", "_rebuild_tensor_v2");
            w.mark();
            w.mark();
            w.str("storage");
            w.global("torch", s.elem.storage_class());
            w.str(&s.key);
            w.str(&s.location);
            w.int(s.bytes.len() / s.elem.size());
            w.tuple();
            w.binpersid();
            w.int(t.offset);
            w.ints_tuple(&t.shape);
            w.ints_tuple(&t.stride);
            w.bool(false);
            w.global("collections", "OrderedDict");
            w.empty_tuple();
            w.reduce();
            w.tuple();
            w.reduce();
        }
        w.setitems();
        if self.wrapper.is_some() {
            w.setitem();
        }
        w.finish()
    }

    /// Writes the zip to `out`: records stored uncompressed, storages 64-byte aligned (what
    /// PyTorch writes, and what `torch.load(mmap=True)` needs).
    pub fn write_to<W: Write + Seek>(&self, out: W) -> zip::result::ZipResult<W> {
        let mut z = zip::ZipWriter::new(out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .with_alignment(64);
        let n = &self.name;
        let rec = |z: &mut zip::ZipWriter<W>, name: String, bytes: &[u8]| -> zip::result::ZipResult<()> {
            z.start_file(name, opts)?;
            z.write_all(bytes)?;
            Ok(())
        };
        rec(&mut z, format!("{n}/data.pkl"), &self.pickle())?;
        rec(&mut z, format!("{n}/.format_version"), b"1")?;
        rec(&mut z, format!("{n}/.storage_alignment"), b"64")?;
        rec(&mut z, format!("{n}/byteorder"), b"little")?;
        for s in &self.storages {
            rec(&mut z, format!("{n}/data/{}", s.key), &s.bytes)?;
        }
        rec(&mut z, format!("{n}/version"), b"3\n")?;
        z.finish()
    }
}

pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1];
    }
    st
}

/// Writes `sd` as `torch.save(state_dict)` would, straight to `path` (see
/// [`weights::save`](super::save) for the atomic version). `archive_name` is the folder inside
/// the zip (PyTorch uses the file's stem).
pub fn write(sd: &StateDict, path: &Path, dtype: DType, archive_name: &str) -> Result<()> {
    let a = Archive::from_state_dict(sd, dtype, archive_name).map_err(|m| Error::weights(path, m))?;
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    let f = a.write_to(std::io::BufWriter::new(f)).map_err(|e| Error::format(path, format!("writing zip: {e}")))?;
    let f = f.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tref(size: &[usize], stride: &[usize], offset: usize, numel: usize) -> TensorRef {
        TensorRef {
            storage: Rc::new(pickle::StorageRef { key: "0".into(), dtype: Elem::F32, location: "cpu".into(), numel }),
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
        }
    }

    #[test]
    fn gather_transposed_and_offset_views() {
        let s: Vec<f32> = (0..12).map(|x| x as f32).collect();
        // (3,4) row-major viewed transposed: (4,3) with stride (1,4)
        assert_eq!(
            gather(&s, &tref(&[4, 3], &[1, 4], 0, 12)).unwrap(),
            [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
        );
        // x[:, 1:3] of a (3,4): offset 1, size (3,2), stride (4,1)
        assert_eq!(gather(&s, &tref(&[3, 2], &[4, 1], 1, 12)).unwrap(), [1., 2., 5., 6., 9., 10.]);
        // contiguous with offset
        assert_eq!(gather(&s, &tref(&[2, 2], &[2, 1], 8, 12)).unwrap(), [8., 9., 10., 11.]);
        // expanded (stride 0)
        assert_eq!(gather(&s, &tref(&[2, 3], &[0, 1], 0, 12)).unwrap(), [0., 1., 2., 0., 1., 2.]);
        // a 0-d tensor and an empty one
        assert_eq!(gather(&s, &tref(&[], &[], 5, 12)).unwrap(), [5.]);
        assert!(gather(&s, &tref(&[0, 3], &[3, 1], 0, 12)).unwrap().is_empty());
    }

    #[test]
    fn gather_out_of_bounds_is_an_error() {
        let s = vec![0f32; 12];
        let e = gather(&s, &tref(&[4, 3], &[3, 1], 1, 12)).unwrap_err();
        assert!(e.contains("reaches element 12"), "{e}");
        assert!(gather(&s, &tref(&[usize::MAX, 2], &[1, 1], 0, 12)).is_err());
        assert!(gather(&s, &tref(&[2, 2], &[usize::MAX, 1], 0, 12)).is_err());
    }

    #[test]
    fn strides() {
        assert_eq!(contiguous_strides(&[32, 1, 3, 3, 1]), [9, 9, 3, 1, 1]);
        assert_eq!(contiguous_strides(&[32]), [1]);
        assert!(contiguous_strides(&[]).is_empty());
    }
}
