//! Element types of stored weights and their conversion to and from the f32 of a
//! [`HostTensor`](crate::tensor::HostTensor).

use half::{bf16, f16};

/// Element types of stored tensors: PyTorch's storage classes (`torch.<Name>Storage`),
/// safetensors' dtypes and the frozen format's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Elem {
    pub fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" | "UntypedStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    pub fn storage_class(self) -> &'static str {
        match self {
            Self::F64 => "DoubleStorage",
            Self::F32 => "FloatStorage",
            Self::F16 => "HalfStorage",
            Self::BF16 => "BFloat16Storage",
            Self::I64 => "LongStorage",
            Self::I32 => "IntStorage",
            Self::I16 => "ShortStorage",
            Self::I8 => "CharStorage",
            Self::U8 => "ByteStorage",
            Self::Bool => "BoolStorage",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// PyTorch's name for the element type, for messages.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F64 => "float64",
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::I16 => "int16",
            Self::I8 => "int8",
            Self::U8 => "uint8",
            Self::Bool => "bool",
        }
    }
}

/// `bytes` (a whole number of `elem` values) as f32. Floats convert exactly (f64 rounds to
/// nearest); integers convert as `as f32` would, exact up to 2^24.
pub fn decode(bytes: &[u8], elem: Elem, big_endian: bool) -> Vec<f32> {
    fn arr<const N: usize>(c: &[u8], big_endian: bool) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        if big_endian {
            a.reverse();
        }
        a
    }
    // The common FP16 case in bulk: `half` converts slices with F16C where the CPU has it.
    #[cfg(target_endian = "little")]
    if elem == Elem::F16 && !big_endian {
        if let Ok(h) = bytemuck::try_cast_slice::<u8, f16>(bytes) {
            use half::slice::HalfFloatSliceExt;
            let mut out = vec![0f32; h.len()];
            h.convert_to_f32_slice(&mut out);
            return out;
        }
    }
    let n = elem.size();
    let it = bytes.chunks_exact(n);
    match elem {
        Elem::F32 => it.map(|c| f32::from_le_bytes(arr(c, big_endian))).collect(),
        Elem::F64 => it.map(|c| f64::from_le_bytes(arr(c, big_endian)) as f32).collect(),
        Elem::F16 => it.map(|c| f16::from_le_bytes(arr(c, big_endian)).to_f32()).collect(),
        Elem::BF16 => it.map(|c| bf16::from_le_bytes(arr(c, big_endian)).to_f32()).collect(),
        Elem::I64 => it.map(|c| i64::from_le_bytes(arr(c, big_endian)) as f32).collect(),
        Elem::I32 => it.map(|c| i32::from_le_bytes(arr(c, big_endian)) as f32).collect(),
        Elem::I16 => it.map(|c| i16::from_le_bytes(arr(c, big_endian)) as f32).collect(),
        Elem::I8 => it.map(|c| c[0] as i8 as f32).collect(),
        Elem::U8 => it.map(|c| c[0] as f32).collect(),
        Elem::Bool => it.map(|c| (c[0] != 0) as u8 as f32).collect(),
    }
}

/// Little-endian f32 bytes.
pub fn encode_f32(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 4);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Little-endian f16 bytes, rounded to nearest even as PyTorch's `.half()` does. A finite value
/// beyond f16's range would silently become infinite: that is an error (`Err` holds the value).
pub fn encode_f16(data: &[f32]) -> Result<Vec<u8>, f32> {
    let mut out = Vec::with_capacity(data.len() * 2);
    for &v in data {
        let h = f16::from_f32(v);
        if h.is_infinite() && v.is_finite() {
            return Err(v);
        }
        out.extend_from_slice(&h.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_every_float_type() {
        let x = [1.5f32, -0.25, 65504.0];
        let f32b: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode(&f32b, Elem::F32, false), x);
        let f32be: Vec<u8> = x.iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(decode(&f32be, Elem::F32, true), x);
        let f64b: Vec<u8> = x.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
        assert_eq!(decode(&f64b, Elem::F64, false), x);
        assert_eq!(decode(&encode_f16(&x).unwrap(), Elem::F16, false), x);
        // unaligned f16 bytes take the element-wise path
        let mut odd = vec![0u8];
        odd.extend(encode_f16(&x).unwrap());
        assert_eq!(decode(&odd[1..], Elem::F16, false), x);
        // every f16 bit pattern converts as half::f16::to_f32 does (NaN payloads aside)
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        let got = decode(&all, Elem::F16, false);
        for (b, g) in (0..=u16::MAX).zip(got) {
            let w = f16::from_bits(b).to_f32();
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{b:#06x}");
        }
        let bf: Vec<u8> = [1.5f32, -0.25, 3.0].iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
        assert_eq!(decode(&bf, Elem::BF16, false), [1.5, -0.25, 3.0]);
        assert_eq!(decode(&[0, 1, 2], Elem::Bool, false), [0.0, 1.0, 1.0]);
        assert_eq!(decode(&(-3i64).to_le_bytes(), Elem::I64, false), [-3.0]);
    }

    #[test]
    fn f16_rounds_to_nearest_even_and_refuses_overflow() {
        // 1 + 2^-11 is halfway between 1 and the next f16 (1 + 2^-10): ties to even gives 1.
        let b = encode_f16(&[1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)]).unwrap();
        assert_eq!(decode(&b, Elem::F16, false), [1.0, 1.0 + 2.0 * 2f32.powi(-10)]);
        assert_eq!(encode_f16(&[1.0, 70000.0]), Err(70000.0));
        // Infinities and NaN are values, not overflow (validation reports them elsewhere).
        assert!(encode_f16(&[f32::INFINITY]).is_ok());
    }
}
