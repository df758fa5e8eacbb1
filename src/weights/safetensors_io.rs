//! safetensors files with the reference's key names. Loads F32, F16, BF16 and F64 (and
//! integer/bool tensors, converted like any other so that a stray buffer is reported as an
//! unexpected key rather than a type error); writes F32 or F16, aliases as separate copies
//! under every key, so `load_state_dict(strict=True)` accepts the result of
//! `safetensors.torch.load_file` (which cannot express shared storage).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, View};
use safetensors::SafeTensors;

use super::convert::{self, Elem};
use super::{DType, StateDict};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "file too short for a safetensors header".into(),
        SafeTensorError::InvalidHeaderLength => "header length runs past the end of the file (truncated?)".into(),
        SafeTensorError::HeaderTooLarge => "header larger than safetensors allows".into(),
        SafeTensorError::InvalidHeader | SafeTensorError::InvalidHeaderStart => "header is not UTF-8 JSON".into(),
        SafeTensorError::InvalidHeaderDeserialization => "header is not a valid safetensors JSON index".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data does not end where the file ends (truncated or padded file)".into()
        }
        SafeTensorError::TensorInvalidInfo | SafeTensorError::InvalidOffset(_) => {
            format!("inconsistent tensor offsets, shape or dtype in the header ({e:?})")
        }
        other => format!("{other:?}"),
    }
}

/// Floating-point types only: weights, optimizer state and network inputs are real numbers,
/// and an integer tensor read as one (I32 bits become values near 1e9) is a wrong file.
fn elem_of(d: Dtype) -> Option<Elem> {
    Some(match d {
        Dtype::F32 => Elem::F32,
        Dtype::F16 => Elem::F16,
        Dtype::BF16 => Elem::BF16,
        Dtype::F64 => Elem::F64,
        _ => return None,
    })
}

/// Loads every tensor as f32, in the order of their data in the file.
pub fn load(path: &Path) -> Result<StateDict> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before returning; a file truncated by another
    // process while we read it is outside what any reader can defend against.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st =
        SafeTensors::deserialize(&map).map_err(|e| Error::format(path, format!("safetensors: {}", describe(&e))))?;
    let mut views = st.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    let mut sd = StateDict::new();
    for (name, v) in views {
        let Some(elem) = elem_of(v.dtype()) else {
            return Err(Error::format(
                path,
                format!("tensor '{name}' has dtype {:?}; weights must be F32, F16, BF16 or F64", v.dtype()),
            ));
        };
        let data = convert::decode(v.data(), elem, false);
        let t = HostTensor::new(v.shape().to_vec(), data)
            .map_err(|e| Error::format(path, format!("tensor '{name}': {e}")))?;
        sd.insert(name, t);
    }
    Ok(sd)
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes every entry of `sd` (aliases as copies) in `dtype`, with `{"format": "pt"}` and
/// `meta` as the header's metadata.
pub fn write(sd: &StateDict, path: &Path, dtype: DType, meta: &[(&str, &str)]) -> Result<()> {
    let mut tensors = Vec::with_capacity(sd.len());
    for (k, t) in sd.iter() {
        let (dt, data) = match dtype {
            DType::F32 => (Dtype::F32, convert::encode_f32(&t.data)),
            DType::F16 => (
                Dtype::F16,
                convert::encode_f16(&t.data)
                    .map_err(|v| Error::weights(path, format!("tensor '{k}': value {v} does not fit in float16")))?,
            ),
        };
        tensors.push((k.to_string(), Bytes { dtype: dt, shape: t.shape.clone(), data }));
    }
    let mut info: HashMap<String, String> = HashMap::new();
    info.insert("format".into(), "pt".into());
    for (k, v) in meta {
        info.insert(k.to_string(), v.to_string());
    }
    let bytes = safetensors::serialize(tensors.iter().map(|(k, b)| (k.as_str(), b)), &Some(info))
        .map_err(|e| Error::format(path, format!("safetensors: {}", describe(&e))))?;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        let mut sd = StateDict::new();
        sd.insert("b", HostTensor::new(vec![2, 1], vec![1.5, -2.0]).unwrap());
        sd.insert("a", HostTensor::new(vec![3], vec![0.1, 1e-8, 3e38]).unwrap());
        write(&sd, &p, DType::F32, &[("model", "test")]).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.get("a"), sd.get("a"));
        assert_eq!(back.get("b"), sd.get("b"));
        // f16: 3e38 does not fit
        let e = write(&sd, &p, DType::F16, &[]).unwrap_err().to_string();
        assert!(e.contains("'a'") && e.contains("float16"), "{e}");
    }

    #[test]
    fn integer_tensors_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("int.safetensors");
        let data: Vec<u8> = [7i32, 1 << 30].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b = Bytes { dtype: Dtype::I32, shape: vec![2], data };
        let bytes = safetensors::serialize([("conv.weight", &b)], &None).unwrap();
        std::fs::write(&p, bytes).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("int.safetensors") && e.contains("'conv.weight'") && e.contains("I32"), "{e}");
    }
}
