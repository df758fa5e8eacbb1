//! NIfTI-1 images (`.nii`, `.nii.gz`): read any common scalar type into a [`Volume`], write
//! `f32`, `u8` or `i16` with both the sform and the qform set.
//!
//! Geometry follows nibabel (what the reference pipeline loads through MONAI): the sform when
//! `sform_code > 0`, else the qform (quaternion, computed in single precision as nibabel does)
//! when `qform_code > 0`, else nibabel's Analyze-style fallback from `pixdim` (x flipped,
//! origin at the volume centre). NIfTI affines are RAS; the [`Volume`] affine is LPS
//! ([`volume::flip_xy`] at this boundary). NIfTI voxel data is Fortran-ordered (i fastest);
//! the volume is row-major with k fastest, so both directions transpose.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::linalg::{self, Mat3};
use crate::volume::{self, Affine, Volume};

const HEADER_SIZE: usize = 348;
/// Header plus the 4-byte extension flag: where voxel data starts in files we write.
const DATA_OFFSET: usize = 352;
/// Where voxel data may start at the latest: header extensions beyond 1 GiB are not images.
const MAX_VOX_OFFSET: usize = 1 << 30;

/// Voxel types of NIfTI-1 that this reader accepts (code in the `datatype` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Datatype {
    pub fn code(self) -> i16 {
        match self {
            Datatype::U8 => 2,
            Datatype::I16 => 4,
            Datatype::I32 => 8,
            Datatype::F32 => 16,
            Datatype::F64 => 64,
            Datatype::I8 => 256,
            Datatype::U16 => 512,
            Datatype::U32 => 768,
            Datatype::I64 => 1024,
            Datatype::U64 => 1280,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => Datatype::U8,
            4 => Datatype::I16,
            8 => Datatype::I32,
            16 => Datatype::F32,
            64 => Datatype::F64,
            256 => Datatype::I8,
            512 => Datatype::U16,
            768 => Datatype::U32,
            1024 => Datatype::I64,
            1280 => Datatype::U64,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Datatype::U8 | Datatype::I8 => 1,
            Datatype::I16 | Datatype::U16 => 2,
            Datatype::I32 | Datatype::U32 | Datatype::F32 => 4,
            Datatype::I64 | Datatype::U64 | Datatype::F64 => 8,
        }
    }
}

/// Name of a NIfTI datatype code, for error messages.
fn datatype_name(code: i16) -> &'static str {
    match code {
        0 => "unknown (0)",
        1 => "binary (1)",
        32 => "complex64 (32)",
        128 => "RGB24 (128)",
        1536 => "float128 (1536)",
        1792 => "complex128 (1792)",
        2048 => "complex256 (2048)",
        2304 => "RGBA32 (2304)",
        _ => "unrecognised",
    }
}

/// Which transform of the header gave the volume's affine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffineSource {
    Sform,
    Qform,
    /// Neither code set: nibabel's fallback from `pixdim`.
    Pixdim,
}

/// Header fields worth keeping next to the volume.
#[derive(Clone, Debug, PartialEq)]
pub struct NiftiHeader {
    pub datatype: Datatype,
    pub pixdim: [f32; 8],
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub qform_code: i16,
    pub sform_code: i16,
    pub xyzt_units: u8,
    pub descrip: String,
    pub affine_source: AffineSource,
    /// The RAS affine exactly as read (the volume holds its LPS equivalent).
    pub affine_ras: Affine,
}

/// Read a `.nii` or `.nii.gz` file (gzip is recognised by its magic bytes, not the name).
pub fn read(path: impl AsRef<Path>) -> Result<Volume> {
    read_with_header(path).map(|(v, _)| v)
}

/// Read a NIfTI-1 image and the header fields that describe it. The header is read and checked
/// first (dims against [`volume::MAX_INPUT_VOXELS`]); only then is the voxel data read, and no
/// more of it than the header declares, so a small compressed file cannot ask for gigabytes.
pub fn read_with_header(path: impl AsRef<Path>) -> Result<(Volume, NiftiHeader)> {
    let path = path.as_ref();
    let io = |e| Error::io(path, e);
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gz { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let corrupt = |e: std::io::Error| {
        if gz {
            Error::format(path, format!("corrupt or truncated gzip stream: {e}"))
        } else {
            Error::io(path, e)
        }
    };
    let mut bytes = Vec::with_capacity(HEADER_SIZE);
    (&mut reader).take(HEADER_SIZE as u64).read_to_end(&mut bytes).map_err(corrupt)?;
    let layout = parse_header(path, &bytes)?;
    let total = layout.offset + layout.nbytes;
    bytes.reserve_exact(total.saturating_sub(bytes.len()));
    reader.take((total - bytes.len()) as u64).read_to_end(&mut bytes).map_err(corrupt)?;
    parse_voxels(path, layout, &bytes)
}

/// Little- or big-endian field access on the header bytes.
struct Fields<'a> {
    b: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn i16(&self, off: usize) -> i16 {
        let a = [self.b[off], self.b[off + 1]];
        if self.big {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    }
    fn i32(&self, off: usize) -> i32 {
        let a = [self.b[off], self.b[off + 1], self.b[off + 2], self.b[off + 3]];
        if self.big {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    }
    fn f32(&self, off: usize) -> f32 {
        f32::from_bits(self.i32(off) as u32)
    }
}

/// What the header says: the geometry, the voxel type and where the voxel data lies.
struct Layout {
    header: NiftiHeader,
    big: bool,
    dims: [usize; 3],
    /// Voxel count and bytes of voxel data, from `offset`.
    n: usize,
    nbytes: usize,
    offset: usize,
}

/// Parse and check the 348-byte header (`b` may hold more).
fn parse_header(path: &Path, b: &[u8]) -> Result<Layout> {
    if b.len() < HEADER_SIZE {
        return Err(Error::format(
            path,
            format!("truncated: {} bytes, a NIfTI-1 header alone is {HEADER_SIZE}", b.len()),
        ));
    }
    let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let big = match (le, be) {
        (348, _) => false,
        (_, 348) => true,
        (540, _) | (_, 540) => {
            return Err(Error::format(path, "NIfTI-2 files are not supported (sizeof_hdr 540); convert to NIfTI-1"))
        }
        _ => return Err(Error::format(path, format!("not a NIfTI-1 file: sizeof_hdr is {le}, expected 348"))),
    };
    let f = Fields { b, big };
    let magic = &b[344..348];
    match magic {
        b"n+1\0" => {}
        b"ni1\0" => {
            return Err(Error::format(
                path,
                "a two-file NIfTI header (.hdr/.img pair) is not supported; convert it to a single .nii",
            ))
        }
        _ => {
            return Err(Error::format(
                path,
                format!("bad magic {:?}: expected \"n+1\\0\" (single-file NIfTI-1)", magic),
            ))
        }
    }

    let dim: Vec<i16> = (0..8).map(|i| f.i16(40 + 2 * i)).collect();
    let ndim = dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(Error::format(path, format!("bad dims: dim[0] = {ndim}, must be 1..7")));
    }
    let ndim = ndim as usize;
    for (i, &d) in dim.iter().enumerate().take(ndim + 1).skip(1) {
        if d < 1 {
            return Err(Error::format(path, format!("bad dims: dim[{i}] = {d} (dim = {:?})", &dim[..=ndim])));
        }
    }
    let extra: usize = dim[4..=ndim.max(3)].iter().map(|&d| d.max(1) as usize).product();
    if ndim > 3 && extra > 1 {
        return Err(Error::format(
            path,
            format!("{}-D image (dim = {:?}): only single 3-D volumes are supported", ndim, &dim[..=ndim]),
        ));
    }
    let dims = [0, 1, 2].map(|a| if a < ndim { dim[a + 1] as usize } else { 1 });

    let code = f.i16(70);
    let datatype = Datatype::from_code(code)
        .ok_or_else(|| Error::format(path, format!("unsupported datatype {code} ({})", datatype_name(code))))?;
    let bitpix = f.i16(72);
    if bitpix as usize != datatype.size() * 8 {
        return Err(Error::format(
            path,
            format!("bitpix {bitpix} does not match datatype {datatype:?} ({} bits)", datatype.size() * 8),
        ));
    }

    let pixdim: [f32; 8] = std::array::from_fn(|i| f.f32(76 + 4 * i));
    let vox_offset = f.f32(108);
    let offset = if vox_offset == 0.0 {
        DATA_OFFSET
    } else if vox_offset.is_finite()
        && vox_offset >= DATA_OFFSET as f32
        && vox_offset <= MAX_VOX_OFFSET as f32
        && vox_offset.fract() == 0.0
    {
        vox_offset as usize
    } else {
        return Err(Error::format(
            path,
            format!("bad vox_offset {vox_offset}: must be a whole number from 352 to {MAX_VOX_OFFSET}"),
        ));
    };
    let slope = f.f32(112);
    let inter = f.f32(116);
    let xyzt_units = b[123];
    let descrip = String::from_utf8_lossy(&b[148..228]).trim_end_matches('\0').to_string();
    let qform_code = f.i16(252);
    let sform_code = f.i16(254);

    let (affine_ras, affine_source) = if sform_code > 0 {
        let s: [f32; 12] = std::array::from_fn(|i| f.f32(280 + 4 * i));
        let mut a = volume::IDENTITY;
        for r in 0..3 {
            for c in 0..4 {
                a[r][c] = s[4 * r + c] as f64;
            }
        }
        (a, AffineSource::Sform)
    } else if qform_code > 0 {
        (qform_affine(path, &f, &pixdim)?, AffineSource::Qform)
    } else {
        (pixdim_affine(path, dims, &pixdim)?, AffineSource::Pixdim)
    };
    if affine_ras.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::format(path, format!("non-finite affine ({affine_source:?}): {affine_ras:?}")));
    }
    if linalg::det3(&linalg::linear_part(&affine_ras)) == 0.0 {
        return Err(Error::format(path, format!("singular voxel-to-world affine ({affine_source:?}): {affine_ras:?}")));
    }

    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]))
        .ok_or_else(|| Error::format(path, format!("bad dims {dims:?}: too many voxels")))?;
    let nbytes = n
        .checked_mul(datatype.size())
        .ok_or_else(|| Error::format(path, format!("bad dims {dims:?}: too many voxels")))?;
    if n > volume::MAX_INPUT_VOXELS {
        return Err(Error::format(
            path,
            format!(
                "{}x{}x{} = {n} voxels is more than fmseg reads ({} voxels, {} GiB as float32); \
                 crop or resample the image first",
                dims[0],
                dims[1],
                dims[2],
                volume::MAX_INPUT_VOXELS,
                volume::MAX_INPUT_VOXELS * 4 >> 30
            ),
        ));
    }
    let header = NiftiHeader {
        datatype,
        pixdim,
        scl_slope: slope,
        scl_inter: inter,
        qform_code,
        sform_code,
        xyzt_units,
        descrip,
        affine_source,
        affine_ras,
    };
    Ok(Layout { header, big, dims, n, nbytes, offset })
}

/// The volume from the whole file's bytes (header included) and its parsed header.
fn parse_voxels(path: &Path, layout: Layout, b: &[u8]) -> Result<(Volume, NiftiHeader)> {
    let Layout { header, big, dims, n, nbytes, offset } = layout;
    let datatype = header.datatype;
    if b.len() < offset + nbytes {
        return Err(Error::format(
            path,
            format!(
                "truncated: {:?} {datatype:?} needs {nbytes} bytes of voxel data from offset {offset}, \
                 the file has {} bytes after it",
                dims,
                b.len().saturating_sub(offset)
            ),
        ));
    }
    // scl_slope 0 or non-finite means "no scaling" (NIfTI-1, nibabel).
    let (slope, inter) = (header.scl_slope, header.scl_inter);
    let scaled = slope != 0.0 && slope.is_finite() && !(slope == 1.0 && (inter == 0.0 || !inter.is_finite()));
    let (sl, it) = if scaled { (slope as f64, if inter.is_finite() { inter as f64 } else { 0.0 }) } else { (1.0, 0.0) };

    let data_bytes = &b[offset..offset + nbytes];
    let [nx, ny, nz] = dims;
    let mut data = vec![0f32; n];
    // file order: i fastest, then j, then k
    let size = datatype.size();
    let mut src = 0usize;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = decode_one(&data_bytes[src..src + size], datatype, big);
                src += size;
                data[(i * ny + j) * nz + k] = if scaled { (v * sl + it) as f32 } else { v as f32 };
            }
        }
    }
    let vol = Volume::new(dims, data, volume::flip_xy(&header.affine_ras))?;
    Ok((vol, header))
}

/// One voxel value, widened to f64 (exact for every supported type up to 2^53).
fn decode_one(c: &[u8], dt: Datatype, big: bool) -> f64 {
    let sz = c.len();
    let mut a = [0u8; 8];
    a[..sz].copy_from_slice(c);
    if big {
        a[..sz].reverse();
    }
    match dt {
        Datatype::U8 => a[0] as f64,
        Datatype::I8 => a[0] as i8 as f64,
        Datatype::I16 => i16::from_le_bytes([a[0], a[1]]) as f64,
        Datatype::U16 => u16::from_le_bytes([a[0], a[1]]) as f64,
        Datatype::I32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
        Datatype::U32 => u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
        Datatype::F32 => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
        Datatype::I64 => i64::from_le_bytes(a) as f64,
        Datatype::U64 => u64::from_le_bytes(a) as f64,
        Datatype::F64 => f64::from_le_bytes(a),
    }
}

/// The qform affine, computed as nibabel does (in single precision: quaternion completion,
/// rotation matrix, times the voxel sizes with `qfac` on the third), then widened.
fn qform_affine(path: &Path, f: &Fields, pixdim: &[f32; 8]) -> Result<Affine> {
    let (b, c, d) = (f.f32(256), f.f32(260), f.f32(264));
    let w2 = 1.0f32 - (b * b + c * c + d * d);
    let a = if w2 < 0.0 {
        // nibabel's threshold for float32 headers: 3 eps
        if w2 < -3.0 * f32::EPSILON {
            return Err(Error::format(path, format!("invalid qform quaternion (b, c, d) = ({b}, {c}, {d}): norm > 1")));
        }
        0.0
    } else {
        w2.sqrt()
    };
    let r = quat_to_mat_f32(a, b, c, d);
    let vox = [pixdim[1], pixdim[2], pixdim[3]];
    if vox.iter().any(|v| v.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !v.is_finite()) {
        return Err(Error::format(path, format!("qform needs positive voxel sizes, pixdim[1..4] = {vox:?}")));
    }
    let qfac = if pixdim[0] < 0.0 { -1.0f32 } else { 1.0 };
    let s = [vox[0], vox[1], vox[2] * qfac];
    let off = [f.f32(268), f.f32(272), f.f32(276)];
    let mut m = volume::IDENTITY;
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = (r[i][j] * s[j]) as f64;
        }
        m[i][3] = off[i] as f64;
    }
    Ok(m)
}

/// nibabel's `quat2mat` in float32.
fn quat_to_mat_f32(w: f32, x: f32, y: f32, z: f32) -> [[f32; 3]; 3] {
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON as f32 {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [[1.0 - (yy + zz), xy - wz, xz + wy], [xy + wz, 1.0 - (xx + zz), yz - wx], [xz - wy, yz + wx, 1.0 - (xx + yy)]]
}

/// nibabel's fallback when neither transform is coded: `diag(-dx, dy, dz)`, centred.
fn pixdim_affine(path: &Path, dims: [usize; 3], pixdim: &[f32; 8]) -> Result<Affine> {
    let z = [pixdim[1], pixdim[2], pixdim[3]];
    if z.iter().any(|v| *v == 0.0 || !v.is_finite()) {
        return Err(Error::format(
            path,
            format!("no sform/qform and pixdim[1..4] = {z:?}: cannot build a voxel-to-world transform"),
        ));
    }
    let zooms = [-(z[0] as f64), z[1] as f64, z[2] as f64];
    let mut a = volume::IDENTITY;
    for i in 0..3 {
        a[i][i] = zooms[i];
        a[i][3] = -((dims[i] as f64 - 1.0) / 2.0) * zooms[i];
    }
    Ok(a)
}

/// Voxel type of a written file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteType {
    F32,
    /// Masks and labels: every value must be a whole number in 0..=255.
    U8,
    /// Every value must be a whole number in i16's range.
    I16,
}

/// Write `vol` as a NIfTI-1 file (gzip-compressed when the name ends in `.gz`), atomically.
/// Both transforms are written with code 1 (scanner): the sform holds the affine exactly (to
/// float32), the qform its rotation as a quaternion with `qfac`, when the affine's direction
/// part is a rotation (up to the sign of the third axis); for a sheared affine the qform is
/// left uncoded and only the sform carries the geometry.
pub fn write(path: impl AsRef<Path>, vol: &Volume, ty: WriteType) -> Result<()> {
    write_coded(path, vol, ty, true)
}

/// [`write`], with both transform codes 0 when `coded` is false: the output of an input that
/// had none (its affine is nibabel's pixdim fallback, which a reader then rebuilds the same).
pub fn write_coded(path: impl AsRef<Path>, vol: &Volume, ty: WriteType, coded: bool) -> Result<()> {
    let path = path.as_ref();
    let n = vol.data.len();
    let (code, size) = match ty {
        WriteType::F32 => (Datatype::F32.code(), 4),
        WriteType::U8 => (Datatype::U8.code(), 1),
        WriteType::I16 => (Datatype::I16.code(), 2),
    };
    if vol.dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(Error::Shape(format!(
            "{}: cannot write dims {:?} to NIfTI-1 (each must be 1..=32767)",
            path.display(),
            vol.dims
        )));
    }
    let mut header = build_header(path, vol, code, (size * 8) as i16)?;
    if !coded {
        header[252..256].fill(0);
    }
    let [nx, ny, nz] = vol.dims;
    let mut body = Vec::with_capacity(n * size);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = vol.data[(i * ny + j) * nz + k];
                match ty {
                    WriteType::F32 => body.extend_from_slice(&v.to_le_bytes()),
                    WriteType::U8 => body.push(whole(path, v, i, j, k, 0.0, 255.0)? as u8),
                    WriteType::I16 => body.extend_from_slice(
                        &(whole(path, v, i, j, k, i16::MIN as f32, i16::MAX as f32)? as i16).to_le_bytes(),
                    ),
                }
            }
        }
    }
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    super::write_atomic(path, |w| {
        let io = |e| Error::io(path, e);
        if gz {
            let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
            enc.write_all(&header).map_err(io)?;
            enc.write_all(&body).map_err(io)?;
            enc.finish().map_err(io)?;
        } else {
            w.write_all(&header).map_err(io)?;
            w.write_all(&body).map_err(io)?;
        }
        Ok(())
    })
}

fn whole(path: &Path, v: f32, i: usize, j: usize, k: usize, lo: f32, hi: f32) -> Result<f32> {
    if v.is_finite() && v.fract() == 0.0 && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(Error::Value(format!(
            "{}: voxel ({i}, {j}, {k}) = {v} cannot be stored as a whole number in {lo}..={hi}",
            path.display()
        )))
    }
}

/// The 352 bytes before the voxel data (header + empty extension flag), little endian.
fn build_header(path: &Path, vol: &Volume, datatype: i16, bitpix: i16) -> Result<Vec<u8>> {
    let ras = volume::flip_xy(&vol.affine);
    if ras.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::Value(format!("{}: non-finite affine {:?}", path.display(), vol.affine)));
    }
    let m = linalg::linear_part(&ras);
    let zooms = [0, 1, 2].map(|c| (m[0][c] * m[0][c] + m[1][c] * m[1][c] + m[2][c] * m[2][c]).sqrt());
    if zooms.contains(&0.0) {
        return Err(Error::Value(format!("{}: degenerate affine {:?} (a zero column)", path.display(), vol.affine)));
    }
    let q = quaternion(&m, &zooms);

    let mut h = vec![0u8; DATA_OFFSET];
    let put_i16 = |h: &mut Vec<u8>, off: usize, v: i16| h[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let put_i32 = |h: &mut Vec<u8>, off: usize, v: i32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, off: usize, v: f32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, HEADER_SIZE as i32);
    h[38] = b'r'; // "regular", as every NIfTI writer sets it
    let dim = [3i16, vol.dims[0] as i16, vol.dims[1] as i16, vol.dims[2] as i16, 1, 1, 1, 1];
    for (i, d) in dim.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * i, *d);
    }
    put_i16(&mut h, 70, datatype);
    put_i16(&mut h, 72, bitpix);
    let qfac = q.as_ref().map(|q| q.qfac).unwrap_or(1.0);
    let pixdim = [qfac, zooms[0] as f32, zooms[1] as f32, zooms[2] as f32, 1.0, 1.0, 1.0, 1.0];
    for (i, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p);
    }
    put_f32(&mut h, 108, DATA_OFFSET as f32);
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2; // NIFTI_UNITS_MM
    let descrip = b"fmseg";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    if let Some(q) = q {
        put_i16(&mut h, 252, 1);
        for (i, v) in [q.b, q.c, q.d, ras[0][3], ras[1][3], ras[2][3]].iter().enumerate() {
            put_f32(&mut h, 256 + 4 * i, *v as f32);
        }
    }
    put_i16(&mut h, 254, 1);
    for r in 0..3 {
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, ras[r][c] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    Ok(h)
}

struct Quatern {
    b: f64,
    c: f64,
    d: f64,
    qfac: f32,
}

/// Quaternion of the rotation part of a RAS direction matrix `m` (columns scaled by `zooms`),
/// with `qfac = -1` when the matrix is a reflection; `None` when the normalised columns are not
/// orthonormal to 1e-4 (a sheared affine has no qform).
fn quaternion(m: &Mat3, zooms: &[f64; 3]) -> Option<Quatern> {
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = m[i][j] / zooms[j];
        }
    }
    let mut qfac = 1.0f32;
    if linalg::det3(&r) < 0.0 {
        qfac = -1.0;
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let rtr = linalg::matmul3(&linalg::transpose3(&r), &r);
    for i in 0..3 {
        for j in 0..3 {
            let e = if i == j { 1.0 } else { 0.0 };
            if (rtr[i][j] - e).abs() > 1e-4 {
                return None;
            }
        }
    }
    // float32 headers are orthonormal only to ~1e-7: take the nearest rotation first
    let r = linalg::polar3(&r)?;
    // Shepperd's method as in nifti1_io's nifti_mat44_to_quatern (a >= 0)
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let t = r11 + r22 + r33 + 1.0;
    let (b, c, d) = if t > 0.5 {
        let a = 0.5 * t.sqrt();
        (0.25 * (r32 - r23) / a, 0.25 * (r13 - r31) / a, 0.25 * (r21 - r12) / a)
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        let (a, b, c, d) = if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            (0.25 * (r32 - r23) / b, b, 0.25 * (r12 + r21) / b, 0.25 * (r13 + r31) / b)
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            (0.25 * (r13 - r31) / c, 0.25 * (r12 + r21) / c, c, 0.25 * (r23 + r32) / c)
        } else {
            let d = 0.5 * zd.sqrt();
            (0.25 * (r21 - r12) / d, 0.25 * (r13 + r31) / d, 0.25 * (r23 + r32) / d, d)
        };
        if a < 0.0 {
            (-b, -c, -d)
        } else {
            (b, c, d)
        }
    };
    Some(Quatern { b, c, d, qfac })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_lps() -> Affine {
        // 0.8 x 0.7 x 3.5 mm, rotated 20 degrees about x and 5 about z, LPS
        let (a, b) = (20f64.to_radians(), 5f64.to_radians());
        let rx: Mat3 = [[1.0, 0.0, 0.0], [0.0, a.cos(), -a.sin()], [0.0, a.sin(), a.cos()]];
        let rz: Mat3 = [[b.cos(), -b.sin(), 0.0], [b.sin(), b.cos(), 0.0], [0.0, 0.0, 1.0]];
        let r = linalg::matmul3(&rz, &rx);
        let z = [0.8, 0.7, 3.5];
        let mut m = volume::IDENTITY;
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = r[i][j] * z[j];
            }
        }
        m[0][3] = -101.5;
        m[1][3] = 37.25;
        m[2][3] = 12.0;
        m
    }

    fn vol(dims: [usize; 3], f: impl Fn(usize) -> f32, affine: Affine) -> Volume {
        let n = dims.iter().product();
        Volume::new(dims, (0..n).map(f).collect(), affine).unwrap()
    }

    #[test]
    fn round_trip_every_write_type_plain_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        let a = oblique_lps();
        for (ty, name) in [(WriteType::F32, "a.nii"), (WriteType::U8, "b.nii.gz"), (WriteType::I16, "c.nii.gz")] {
            let v = vol(
                [5, 4, 3],
                |i| match ty {
                    WriteType::F32 => i as f32 * 0.37 - 3.0,
                    WriteType::U8 => (i % 2) as f32,
                    WriteType::I16 => i as f32 * 311.0 - 9000.0,
                },
                a,
            );
            let p = dir.path().join(name);
            write(&p, &v, ty).unwrap();
            let (r, h) = read_with_header(&p).unwrap();
            assert_eq!(r.dims, v.dims);
            assert_eq!(r.data, v.data, "{name}");
            assert_eq!(h.affine_source, AffineSource::Sform);
            for i in 0..4 {
                for j in 0..4 {
                    assert!((r.affine[i][j] - a[i][j]).abs() < 1e-5 * (1.0 + a[i][j].abs()), "{name} {i} {j}");
                }
            }
            assert!(h.qform_code == 1 && h.sform_code == 1);
        }
    }

    /// The qform we write decodes (through the reader's nibabel-style path) to the same
    /// affine, including for a reflection (qfac = -1).
    #[test]
    fn written_qform_matches_sform() {
        let dir = tempfile::tempdir().unwrap();
        for flip in [false, true] {
            let mut a = oblique_lps();
            if flip {
                for row in a.iter_mut().take(3) {
                    row[2] = -row[2];
                }
            }
            let v = vol([3, 3, 2], |i| i as f32, a);
            let p = dir.path().join("q.nii");
            write(&p, &v, WriteType::F32).unwrap();
            // zero the sform code: the reader then falls back to the qform
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[254..256].copy_from_slice(&0i16.to_le_bytes());
            std::fs::write(&p, &bytes).unwrap();
            let (r, h) = read_with_header(&p).unwrap();
            assert_eq!(h.affine_source, AffineSource::Qform);
            assert_eq!(h.pixdim[0], if flip { -1.0 } else { 1.0 });
            for i in 0..3 {
                for j in 0..4 {
                    assert!((r.affine[i][j] - a[i][j]).abs() < 2e-5 * (1.0 + a[i][j].abs()), "flip {flip}: {r:?}");
                }
            }
        }
    }

    /// Every readable voxel type, little endian, with values at the edges of its range.
    #[test]
    fn reads_every_datatype() {
        let dir = tempfile::tempdir().unwrap();
        let dims = [3, 2, 2];
        let base = vol(dims, |_| 0.0, oblique_lps());
        type Enc = fn(f64) -> Vec<u8>;
        let cases: [(Datatype, [f64; 3], Enc); 10] = [
            (Datatype::U8, [0.0, 7.0, 255.0], |v| vec![v as u8]),
            (Datatype::I8, [-128.0, 5.0, 127.0], |v| (v as i8).to_le_bytes().to_vec()),
            (Datatype::I16, [-32768.0, 12.0, 32767.0], |v| (v as i16).to_le_bytes().to_vec()),
            (Datatype::U16, [0.0, 40000.0, 65535.0], |v| (v as u16).to_le_bytes().to_vec()),
            (Datatype::I32, [-2e9, 3.0, 2e9], |v| (v as i32).to_le_bytes().to_vec()),
            (Datatype::U32, [0.0, 9.0, 4e9], |v| (v as u32).to_le_bytes().to_vec()),
            (Datatype::I64, [-1e12, -1.0, 1e12], |v| (v as i64).to_le_bytes().to_vec()),
            (Datatype::U64, [0.0, 1.0, 1e12], |v| (v as u64).to_le_bytes().to_vec()),
            (Datatype::F32, [-1.5, 0.25, 3e38], |v| (v as f32).to_le_bytes().to_vec()),
            (Datatype::F64, [-2.5, 1e-3, 1e30], |v| v.to_le_bytes().to_vec()),
        ];
        for (dt, vals, enc) in cases {
            let p = dir.path().join(format!("{dt:?}.nii"));
            let mut bytes = build_header(&p, &base, dt.code(), (dt.size() * 8) as i16).unwrap();
            // file order (i fastest): value f -> vals[f % 3]
            for f in 0..12 {
                bytes.extend(enc(vals[f % 3]));
            }
            std::fs::write(&p, &bytes).unwrap();
            let (v, h) = read_with_header(&p).unwrap();
            assert_eq!(h.datatype, dt);
            for k in 0..2 {
                for j in 0..2 {
                    for i in 0..3 {
                        let f = i + 3 * (j + 2 * k);
                        assert_eq!(v.get(i, j, k), vals[f % 3] as f32, "{dt:?} ({i}, {j}, {k})");
                    }
                }
            }
        }
    }

    #[test]
    fn sheared_affine_has_no_qform() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = volume::IDENTITY;
        a[0][1] = 0.5;
        let p = dir.path().join("s.nii");
        write(&p, &vol([2, 2, 2], |i| i as f32, a), WriteType::F32).unwrap();
        let (_, h) = read_with_header(&p).unwrap();
        assert_eq!((h.qform_code, h.sform_code), (0, 1));
    }

    #[test]
    fn write_rejects_values_outside_the_type_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.nii.gz");
        let e = write(&p, &vol([2, 2, 2], |i| if i == 5 { 2.5 } else { 0.0 }, volume::IDENTITY), WriteType::U8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.nii.gz") && e.contains("2.5"), "{e}");
        let e = write(&p, &vol([2, 2, 2], |_| 40000.0, volume::IDENTITY), WriteType::I16).unwrap_err().to_string();
        assert!(e.contains("40000"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no partial or temporary file");
    }

    /// A hand-built header: big endian, int16 with scl_slope/inter, qform only, a vox_offset
    /// past an extension.
    #[test]
    fn big_endian_scaled_qform_file() {
        let mut h = vec![0u8; 400];
        let be16 = |h: &mut Vec<u8>, o: usize, v: i16| h[o..o + 2].copy_from_slice(&v.to_be_bytes());
        let bef = |h: &mut Vec<u8>, o: usize, v: f32| h[o..o + 4].copy_from_slice(&v.to_be_bytes());
        h[0..4].copy_from_slice(&348i32.to_be_bytes());
        for (i, d) in [3i16, 2, 3, 1, 1, 1, 1, 1].iter().enumerate() {
            be16(&mut h, 40 + 2 * i, *d);
        }
        be16(&mut h, 70, 4);
        be16(&mut h, 72, 16);
        for (i, p) in [1.0f32, 2.0, 3.0, 4.0].iter().enumerate() {
            bef(&mut h, 76 + 4 * i, *p);
        }
        bef(&mut h, 108, 368.0);
        bef(&mut h, 112, 0.5);
        bef(&mut h, 116, 10.0);
        be16(&mut h, 252, 2);
        // 180 degrees about z: quaternion (0, 0, 0, 1)
        bef(&mut h, 264, 1.0);
        bef(&mut h, 268, 7.0);
        h[344..348].copy_from_slice(b"n+1\0");
        h.truncate(368);
        for v in 0..6i16 {
            h.extend_from_slice(&(v * 100 - 200).to_be_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("be.nii");
        std::fs::write(&p, &h).unwrap();
        let (v, hd) = read_with_header(&p).unwrap();
        assert_eq!(hd.affine_source, AffineSource::Qform);
        assert_eq!(v.dims, [2, 3, 1]);
        // file order i fastest: value index f = i + 2 j
        for i in 0..2 {
            for j in 0..3 {
                let f = (i + 2 * j) as f32;
                assert_eq!(v.get(i, j, 0), (f * 100.0 - 200.0) * 0.5 + 10.0);
            }
        }
        // RAS diag(-2, -3, 4), offset (7, 0, 0) -> LPS diag(2, 3, 4), offset (-7, 0, 0)
        assert_eq!(v.affine[0], [2.0, 0.0, 0.0, -7.0]);
        assert_eq!(v.affine[1], [0.0, 3.0, 0.0, 0.0]);
        assert_eq!(v.affine[2], [0.0, 0.0, 4.0, 0.0]);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("g.nii");
        write(&good, &vol([4, 4, 4], |i| i as f32, volume::IDENTITY), WriteType::F32).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let check = |name: &str, b: &[u8], want: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, b).unwrap();
            let e = read(&p).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        };
        check("short.nii", &bytes[..100], "truncated");
        check("cut.nii", &bytes[..bytes.len() - 1], "truncated");
        let mut m = bytes.clone();
        m[344..348].copy_from_slice(b"xyz\0");
        check("magic.nii", &m, "bad magic");
        let mut m = bytes.clone();
        m[40..42].copy_from_slice(&9i16.to_le_bytes());
        check("dims.nii", &m, "bad dims");
        let mut m = bytes.clone();
        m[42..44].copy_from_slice(&0i16.to_le_bytes());
        check("dims0.nii", &m, "bad dims");
        let mut m = bytes.clone();
        m[70..72].copy_from_slice(&128i16.to_le_bytes());
        m[72..74].copy_from_slice(&24i16.to_le_bytes());
        check("rgb.nii", &m, "unsupported datatype 128");
        let mut m = bytes.clone();
        m[40..42].copy_from_slice(&4i16.to_le_bytes());
        m[48..50].copy_from_slice(&3i16.to_le_bytes());
        check("fourd.nii", &m, "only single 3-D volumes");
        let mut gz = Vec::new();
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
        check("cut.nii.gz", &gz[..gz.len() / 2], "gzip");
        check("zeros.nii", &vec![0u8; 400], "not a NIfTI-1 file");
        let e = read(dir.path().join("absent.nii")).unwrap_err().to_string();
        assert!(e.contains("absent.nii"), "{e}");
    }
}
