//! NumPy `.npy` arrays: read and write `float32`, `float64`, `uint8` and `int64`, C order,
//! little endian (format versions 1.0, 2.0 and 3.0 are read; 1.0 is written when the header
//! fits, as NumPy does).

use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The element data of an array.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
    I64(Vec<i64>),
}

impl NpyData {
    fn descr(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::F64(_) => "<f8",
            NpyData::U8(_) => "|u1",
            NpyData::I64(_) => "<i8",
        }
    }
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F64(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The NumPy dtype name (`float32`, ...), for messages.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
            NpyData::U8(_) => "uint8",
            NpyData::I64(_) => "int64",
        }
    }
}

/// A C-ordered n-dimensional array.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

impl NpyArray {
    pub fn new(shape: Vec<usize>, data: NpyData) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Shape(format!("npy shape {shape:?} holds {n} values, {} given", data.len())));
        }
        Ok(NpyArray { shape, data })
    }
}

pub fn read(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// Read a float32 array as a [`HostTensor`]. float64 arrays are rounded to float32; any other
/// type is an error naming it.
pub fn read_tensor(path: impl AsRef<Path>) -> Result<HostTensor> {
    let path = path.as_ref();
    let a = read(path)?;
    let data = match a.data {
        NpyData::F32(v) => v,
        NpyData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        other => {
            return Err(Error::format(
                path,
                format!("expected a float32 or float64 array, found {}", other.dtype_name()),
            ))
        }
    };
    HostTensor::new(a.shape, data)
}

/// Write a [`HostTensor`] as a float32 array of its shape.
pub fn write_tensor(path: impl AsRef<Path>, t: &HostTensor) -> Result<()> {
    write(path, &NpyArray::new(t.shape.clone(), NpyData::F32(t.data.clone()))?)
}

/// Write an array atomically (a temporary file renamed into place).
pub fn write(path: impl AsRef<Path>, a: &NpyArray) -> Result<()> {
    let path = path.as_ref();
    let n: usize = a.shape.iter().product();
    if n != a.data.len() {
        return Err(Error::Shape(format!(
            "{}: shape {:?} holds {n} values, the data has {}",
            path.display(),
            a.shape,
            a.data.len()
        )));
    }
    let shape = match a.shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", a.shape[0]),
        _ => format!("({})", a.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", a.data.descr());
    // NumPy pads the header with spaces so that the data starts on a 64-byte boundary.
    let (version, prefix) = if dict.len() + 1 + 10 <= 65535 { (1u8, 10) } else { (2u8, 12) };
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    while prefix + dict.len() + 1 < total {
        dict.push(' ');
    }
    dict.push('\n');
    let mut head = Vec::with_capacity(total);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&[version, 0]);
    if version == 1 {
        head.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        head.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    head.extend_from_slice(dict.as_bytes());
    super::write_atomic(path, |w| {
        let io = |e| Error::io(path, e);
        w.write_all(&head).map_err(io)?;
        match &a.data {
            NpyData::F32(v) => w.write_all(&le_f32(v)).map_err(io),
            NpyData::F64(v) => {
                let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_all(&le).map_err(io)
            }
            NpyData::U8(v) => w.write_all(v).map_err(io),
            NpyData::I64(v) => {
                let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_all(&le).map_err(io)
            }
        }
    })
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn parse(path: &Path, b: &[u8]) -> Result<NpyArray> {
    if b.len() < 10 || &b[..6] != MAGIC {
        return Err(Error::format(path, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                return Err(Error::format(path, "truncated .npy header"));
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(Error::format(path, format!("unsupported .npy format version {v}.{}", b[7]))),
    };
    if b.len() < start + hlen {
        return Err(Error::format(path, format!("truncated .npy header: {hlen} bytes announced")));
    }
    let header =
        std::str::from_utf8(&b[start..start + hlen]).map_err(|_| Error::format(path, "the .npy header is not text"))?;
    let descr = dict_value(header, "descr")
        .and_then(|v| v.strip_prefix('\'').and_then(|v| v.split('\'').next()))
        .ok_or_else(|| Error::format(path, format!("no 'descr' in .npy header {header:?}")))?;
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| Error::format(path, format!("no 'fortran_order' in .npy header {header:?}")))?;
    if fortran.starts_with("True") {
        return Err(Error::format(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let shape_s = dict_value(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| Error::format(path, format!("no 'shape' in .npy header {header:?}")))?;
    let shape = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::format(path, format!("bad shape ({shape_s}) in .npy header")))?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("shape {shape:?} is too large")))?;
    let body = &b[start + hlen..];
    let size = match descr {
        "<f4" => 4,
        "<f8" | "<i8" => 8,
        "|u1" | "<u1" => 1,
        d if d.starts_with('>') => {
            return Err(Error::format(path, format!("big-endian dtype {d:?} is not supported; use little endian")))
        }
        d => {
            return Err(Error::format(
                path,
                format!("unsupported dtype {d:?}: expected float32, float64, uint8 or int64"),
            ))
        }
    };
    let need = n.checked_mul(size).ok_or_else(|| Error::format(path, format!("shape {shape:?} is too large")))?;
    if body.len() < need {
        return Err(Error::format(
            path,
            format!("truncated: shape {shape:?} of {descr} needs {need} bytes of data, the file has {}", body.len()),
        ));
    }
    let body = &body[..need];
    let data = match descr {
        "<f4" => NpyData::F32(body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        "<f8" => {
            NpyData::F64(body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
        }
        "<i8" => {
            NpyData::I64(body.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
        }
        _ => NpyData::U8(body.to_vec()),
    };
    Ok(NpyArray { shape, data })
}

/// The raw text after `'key':` in a Python dict literal, leading spaces removed.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}'");
    let at = header.find(&pat)? + pat.len();
    let rest = header[at..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            NpyArray::new(vec![2, 3], NpyData::F32(vec![1.5, -2.0, 3.25, 0.0, f32::MAX, -1e-30])).unwrap(),
            NpyArray::new(vec![3], NpyData::F64(vec![1.0 / 3.0, -7.0, 1e300])).unwrap(),
            NpyArray::new(vec![1, 2, 2], NpyData::U8(vec![0, 1, 255, 7])).unwrap(),
            NpyArray::new(vec![2], NpyData::I64(vec![-5, i64::MAX])).unwrap(),
            NpyArray::new(vec![], NpyData::F32(vec![4.0])).unwrap(),
            NpyArray::new(vec![0, 4], NpyData::F32(vec![])).unwrap(),
        ];
        for (i, a) in cases.iter().enumerate() {
            let p = dir.path().join(format!("{i}.npy"));
            write(&p, a).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + hl) % 64, 0, "data aligned to 64 bytes");
            assert_eq!(&read(&p).unwrap(), a);
        }
    }

    /// Bytes exactly as NumPy 2.x writes `np.arange(6, dtype=np.float32).reshape(2, 3)`.
    #[test]
    fn reads_numpy_bytes() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut h = dict.to_string();
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for v in 0..6 {
            b.extend_from_slice(&(v as f32).to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("np.npy");
        std::fs::write(&p, &b).unwrap();
        let t = read_tensor(&p).unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // our writer produces the same bytes
        let q = dir.path().join("ours.npy");
        write_tensor(&q, &t).unwrap();
        assert_eq!(std::fs::read(&q).unwrap(), b);
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("g.npy");
        write(&good, &NpyArray::new(vec![4], NpyData::F32(vec![1.0; 4])).unwrap()).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let check = |name: &str, b: &[u8], want: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, b).unwrap();
            let e = read(&p).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        };
        check("cut.npy", &bytes[..bytes.len() - 3], "truncated");
        check("magic.npy", b"PK\x03\x04 not an array", "magic");
        let edit = |from: &str, to: &str| {
            let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
            let mut b = bytes.clone();
            b[at..at + to.len()].copy_from_slice(to.as_bytes());
            b
        };
        check("fortran.npy", &edit("False", "True "), "Fortran");
        check("i4.npy", &edit("<f4", "<i4"), "unsupported dtype \"<i4\"");
        check("be.npy", &edit("<f4", ">f4"), "big-endian");
        let p = dir.path().join("u8.npy");
        write(&p, &NpyArray::new(vec![1], NpyData::U8(vec![1])).unwrap()).unwrap();
        let e = read_tensor(&p).unwrap_err().to_string();
        assert!(e.contains("u8.npy") && e.contains("uint8"), "{e}");
        assert!(NpyArray::new(vec![2, 2], NpyData::U8(vec![1])).is_err());
    }
}
