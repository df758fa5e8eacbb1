//! Writing MR series: classic MR Image Storage (one file per slice) and Enhanced MR Image
//! Storage (one multi-frame file), explicit VR little endian, with deterministic UIDs; and the
//! FM mask as a DICOM SEG of the series it came from ([`seg_object`]).
//!
//! The input is a [`StoredVolume`]: integer samples in fmseg's voxel order plus the rescale
//! that turns them into real values, and the same LPS affine a loaded [`Volume`] has (columns:
//! along a row, down a column, between slices). Loading what was written gives back exactly
//! [`StoredVolume::real_volume`] and the same affine, up to the 16-character decimal strings of
//! the geometry attributes (about 1e-13 relative), when the affine's slice column points along
//! `row x column` (a right-handed in-plane frame); otherwise the loader's `k` runs the other way
//! (same world positions).

mod classic;
mod elements;
mod enhanced;
mod modules;
mod seg;

use std::path::{Path, PathBuf};

use dicom_object::{FileDicomObject, FileMetaTableBuilder, InMemDicomObject};

pub use classic::write_mr_series;
pub use elements::{deterministic_uid, ds};
pub use enhanced::write_enhanced_mr;
pub use seg::{encode_seg, seg_object, utc_now, SegDescription, SEGMENTATION_STORAGE, SEGMENT_LABEL};

use super::header::Rescale;
use crate::error::dicom::{DResult, DicomError};
use crate::tensor::{numel, Dims};
use crate::volume::{Affine, Volume};

pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
/// The version-5 UUID of "fmseg" under the 2.25 root, identifying this implementation.
pub fn implementation_class_uid() -> String {
    deterministic_uid(&["implementation"])
}
pub const IMPLEMENTATION_VERSION_NAME: &str = "FMSEG_0_1";

/// Stored integer samples, in fmseg voxel order (`(i, j, k)`, `k` fastest).
#[derive(Clone, Debug, PartialEq)]
pub enum StoredSamples {
    /// Signed 16-bit (BitsAllocated 16, PixelRepresentation 1): the MR Image IOD's format.
    I16(Vec<i16>),
    /// Unsigned 16-bit (BitsAllocated 16, PixelRepresentation 0): also valid MR Image IOD
    /// pixels, as many scanners store them.
    U16(Vec<u16>),
    /// Unsigned 8-bit (BitsAllocated 8): only for exercising 8-bit codecs (JPEG baseline);
    /// not a valid MR Image IOD (which requires 16 bits).
    U8(Vec<u8>),
}

impl StoredSamples {
    fn len(&self) -> usize {
        match self {
            StoredSamples::I16(v) => v.len(),
            StoredSamples::U16(v) => v.len(),
            StoredSamples::U8(v) => v.len(),
        }
    }
    fn get(&self, idx: usize) -> i64 {
        match self {
            StoredSamples::I16(v) => v[idx] as i64,
            StoredSamples::U16(v) => v[idx] as i64,
            StoredSamples::U8(v) => v[idx] as i64,
        }
    }
}

/// Integer samples with their rescale and geometry: what a DICOM MR series stores.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredVolume {
    /// `[columns, rows, slices]` (fmseg's `i, j, k`).
    pub dims: Dims,
    pub samples: StoredSamples,
    pub affine: Affine,
    /// One rescale for all slices, or one per slice (`dims[2]` entries).
    pub rescale: Vec<Rescale>,
}

impl StoredVolume {
    /// The rescale values are rounded to what a 16-character decimal string holds, so that
    /// [`StoredVolume::real_volume`] is exactly what a reader computes from the written files.
    pub fn new(dims: Dims, samples: StoredSamples, affine: Affine, rescale: Vec<Rescale>) -> DResult<Self> {
        let rescale = rescale.into_iter().map(as_written).collect();
        let v = StoredVolume { dims, samples, affine, rescale };
        v.validate()?;
        Ok(v)
    }

    /// Quantise a real volume to int16 with the given rescale (`stored = round((v - b) / m)`);
    /// an error if a value does not fit.
    pub fn from_volume(vol: &Volume, rescale: Rescale) -> DResult<Self> {
        let rescale = as_written(rescale);
        if rescale.slope == 0.0 || !rescale.slope.is_finite() || !rescale.intercept.is_finite() {
            return Err(DicomError::InvalidWrite(format!("rescale {rescale:?} is not usable")));
        }
        let mut out = Vec::with_capacity(vol.data.len());
        for (idx, &v) in vol.data.iter().enumerate() {
            let s = ((v as f64 - rescale.intercept) / rescale.slope).round();
            if !(i16::MIN as f64..=i16::MAX as f64).contains(&s) {
                return Err(DicomError::InvalidWrite(format!(
                    "voxel {idx} value {v} does not fit int16 with slope {} and intercept {}",
                    rescale.slope, rescale.intercept
                )));
            }
            out.push(s as i16);
        }
        StoredVolume::new(vol.dims, StoredSamples::I16(out), vol.affine, vec![rescale])
    }

    /// Quantise a real volume to int16 with a rescale chosen to use the int16 range
    /// (intercept at the midpoint of the value range; slope 1 when the values are integers
    /// that fit as they are).
    pub fn quantize(vol: &Volume) -> DResult<Self> {
        let (lo, hi) =
            vol.data.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v as f64), h.max(v as f64)));
        if !lo.is_finite() || !hi.is_finite() {
            return Err(DicomError::InvalidWrite("volume is empty or holds non-finite values".into()));
        }
        let integral = vol.data.iter().all(|v| v.fract() == 0.0);
        let rescale = if integral && lo >= i16::MIN as f64 && hi <= i16::MAX as f64 {
            Rescale::IDENTITY
        } else {
            let mid = (lo + hi) / 2.0;
            let slope = ((hi - lo) / 65000.0).max(f64::MIN_POSITIVE);
            Rescale { slope, intercept: mid }
        };
        StoredVolume::from_volume(vol, rescale)
    }

    fn validate(&self) -> DResult<()> {
        let bad = |m: String| Err(DicomError::InvalidWrite(m));
        if self.dims.contains(&0) || self.dims[0] > u16::MAX as usize || self.dims[1] > u16::MAX as usize {
            return bad(format!("dims {:?}: each in-plane size must be 1..65535 and there must be a slice", self.dims));
        }
        if numel(self.dims) != self.samples.len() {
            return bad(format!("dims {:?} need {} samples, got {}", self.dims, numel(self.dims), self.samples.len()));
        }
        if self.rescale.len() != 1 && self.rescale.len() != self.dims[2] {
            return bad(format!(
                "{} rescales for {} slices (give 1 or one per slice)",
                self.rescale.len(),
                self.dims[2]
            ));
        }
        if self.rescale.iter().any(|r| r.slope == 0.0 || !r.slope.is_finite() || !r.intercept.is_finite()) {
            return bad("a rescale slope is 0 or a rescale value is not finite".into());
        }
        plane_geometry(&self.affine).map(|_| ()).map_err(DicomError::InvalidWrite)
    }

    pub fn slice_rescale(&self, k: usize) -> Rescale {
        if self.rescale.len() == 1 {
            self.rescale[0]
        } else {
            self.rescale[k]
        }
    }

    /// The real values a reader must get back: `stored * slope + intercept`, in f32.
    pub fn real_volume(&self) -> Volume {
        let n = self.dims[2];
        let data = (0..self.samples.len())
            .map(|idx| {
                let r = self.slice_rescale(idx % n);
                (self.samples.get(idx) as f64 * r.slope + r.intercept) as f32
            })
            .collect();
        Volume { dims: self.dims, data, affine: self.affine }
    }

    /// Slice `k` as DICOM stores it: row-major (`row * columns + column`).
    fn frame(&self, k: usize) -> StoredSamples {
        let [cols, rows, n] = self.dims;
        let idx = |r: usize, c: usize| (c * rows + r) * n + k;
        match &self.samples {
            StoredSamples::I16(v) => {
                StoredSamples::I16((0..rows).flat_map(|r| (0..cols).map(move |c| v[idx(r, c)])).collect())
            }
            StoredSamples::U16(v) => {
                StoredSamples::U16((0..rows).flat_map(|r| (0..cols).map(move |c| v[idx(r, c)])).collect())
            }
            StoredSamples::U8(v) => {
                StoredSamples::U8((0..rows).flat_map(|r| (0..cols).map(move |c| v[idx(r, c)])).collect())
            }
        }
    }

    fn signed(&self) -> bool {
        matches!(self.samples, StoredSamples::I16(_))
    }

    fn bits(&self) -> u16 {
        match self.samples {
            StoredSamples::I16(_) | StoredSamples::U16(_) => 16,
            StoredSamples::U8(_) => 8,
        }
    }

    /// The range of real values (for the default window).
    fn real_range(&self) -> (f64, f64) {
        let n = self.dims[2];
        (0..self.samples.len()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), idx| {
            let r = self.slice_rescale(idx % n);
            let v = self.samples.get(idx) as f64 * r.slope + r.intercept;
            (lo.min(v), hi.max(v))
        })
    }
}

/// A rescale as it reads back from its decimal strings.
fn as_written(r: Rescale) -> Rescale {
    let back = |v: f64| ds(v).parse::<f64>().unwrap_or(v);
    Rescale { slope: back(r.slope), intercept: back(r.intercept) }
}

/// The image-plane attributes implied by an affine.
#[derive(Clone, Copy, Debug)]
struct PlaneGeometry {
    /// ImageOrientationPatient.
    iop: [f64; 6],
    /// PixelSpacing `[between rows, between columns]`.
    pixel_spacing: [f64; 2],
    slice_spacing: f64,
    /// Unit slice normal `row x column`.
    normal: [f64; 3],
}

fn plane_geometry(a: &Affine) -> Result<PlaneGeometry, String> {
    use super::geometry::{cross, dot};
    let col = |c: usize| [a[0][c], a[1][c], a[2][c]];
    let (x, y, z) = (col(0), col(1), col(2));
    let len = |v: [f64; 3]| dot(v, v).sqrt();
    let (lx, ly, lz) = (len(x), len(y), len(z));
    if !(lx > 0.0 && ly > 0.0 && lz > 0.0) || a.iter().flatten().any(|v| !v.is_finite()) {
        return Err(format!("affine {a:?} has a zero or non-finite column"));
    }
    let (ux, uy, uz) = (x.map(|v| v / lx), y.map(|v| v / ly), z.map(|v| v / lz));
    if dot(ux, uy).abs() > 1e-6 {
        return Err(format!("affine {a:?}: the in-plane axes are not orthogonal"));
    }
    let normal = cross(ux, uy);
    if dot(normal, uz).abs() < 1.0 - 1e-9 {
        return Err(format!("affine {a:?}: the slice axis is not perpendicular to the slices (sheared grid)"));
    }
    Ok(PlaneGeometry {
        iop: [ux[0], ux[1], ux[2], uy[0], uy[1], uy[2]],
        pixel_spacing: [ly, lx],
        slice_spacing: lz,
        normal,
    })
}

/// Patient, study, series and acquisition descriptions for a written series. `Default` gives
/// a plausible sacroiliac-joint T1 TSE; UIDs not given are derived from `uid_seed`.
#[derive(Clone, Debug)]
pub struct MrSeriesMeta {
    /// Seed of every UID not set explicitly: the same seed gives the same study.
    pub uid_seed: String,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub patient_name: String,
    pub patient_id: String,
    /// YYYYMMDD or empty.
    pub patient_birth_date: String,
    /// M, F, O or empty.
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub study_id: String,
    pub accession_number: String,
    pub study_description: String,
    pub series_number: i64,
    pub series_description: String,
    pub protocol_name: String,
    pub manufacturer: String,
    pub model_name: String,
    /// e.g. `ORIGINAL\PRIMARY\M\ND` (classic); the Enhanced writer always writes DERIVED.
    pub image_type: Vec<String>,
    pub scanning_sequence: String,
    pub sequence_variant: String,
    pub scan_options: String,
    /// 2D or 3D.
    pub mr_acquisition_type: String,
    pub sequence_name: String,
    /// ms.
    pub echo_time: f64,
    /// ms.
    pub repetition_time: f64,
    /// ms; written when the scanning sequence includes IR.
    pub inversion_time: Option<f64>,
    pub echo_train_length: i64,
    /// Degrees.
    pub flip_angle: f64,
    /// Tesla.
    pub magnetic_field_strength: f64,
    /// Slice thickness in mm; `None`: the slice spacing.
    pub slice_thickness: Option<f64>,
    pub patient_position: String,
    pub body_part_examined: String,
    /// Window centre and width in real units; `None`: the value range.
    pub window: Option<(f64, f64)>,
}

impl Default for MrSeriesMeta {
    fn default() -> Self {
        MrSeriesMeta {
            uid_seed: "fmseg".into(),
            study_uid: None,
            series_uid: None,
            frame_of_reference_uid: None,
            patient_name: "PHANTOM^SIJ".into(),
            patient_id: "FMSEG0001".into(),
            patient_birth_date: String::new(),
            patient_sex: "O".into(),
            study_date: "20240101".into(),
            study_time: "120000".into(),
            study_id: "1".into(),
            accession_number: String::new(),
            study_description: "SIJ MRI".into(),
            series_number: 1,
            series_description: "T1 TSE tra".into(),
            protocol_name: "t1_tse_tra".into(),
            manufacturer: "fmseg".into(),
            model_name: "synthetic".into(),
            image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "M".into(), "ND".into()],
            scanning_sequence: "SE".into(),
            sequence_variant: "SK".into(),
            scan_options: String::new(),
            mr_acquisition_type: "2D".into(),
            sequence_name: "*tse2d1_3".into(),
            echo_time: 12.0,
            repetition_time: 600.0,
            inversion_time: None,
            echo_train_length: 3,
            flip_angle: 150.0,
            magnetic_field_strength: 1.5,
            slice_thickness: None,
            patient_position: "HFS".into(),
            body_part_examined: "PELVIS".into(),
            window: None,
        }
    }
}

impl MrSeriesMeta {
    pub fn study_uid(&self) -> String {
        self.study_uid.clone().unwrap_or_else(|| deterministic_uid(&[&self.uid_seed, "study"]))
    }
    pub fn series_uid(&self) -> String {
        self.series_uid
            .clone()
            .unwrap_or_else(|| deterministic_uid(&[&self.uid_seed, "series", &self.series_number.to_string()]))
    }
    pub fn frame_of_reference_uid(&self) -> String {
        self.frame_of_reference_uid
            .clone()
            .unwrap_or_else(|| deterministic_uid(&[&self.uid_seed, "frame-of-reference"]))
    }
    fn instance_uid(&self, what: &str, k: usize) -> String {
        deterministic_uid(&[&self.uid_seed, "series", &self.series_number.to_string(), what, &k.to_string()])
    }
}

/// Wrap a dataset with a Part 10 file meta group (explicit VR little endian).
fn with_file_meta(obj: InMemDicomObject) -> DResult<FileDicomObject<InMemDicomObject>> {
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN)
            .implementation_class_uid(implementation_class_uid())
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
    )
    .map_err(|e| DicomError::InvalidWrite(format!("file meta: {e}")))
}

/// Write files all-or-nothing: each goes to a hidden temporary name in the target directory
/// and is renamed when written; on any failure every file of the batch is removed.
fn write_all(files: Vec<(PathBuf, FileDicomObject<InMemDicomObject>)>) -> DResult<Vec<PathBuf>> {
    let mut done: Vec<PathBuf> = Vec::new();
    let cleanup = |done: &[PathBuf]| {
        for p in done {
            let _ = std::fs::remove_file(p);
        }
    };
    for (path, obj) in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let res = obj
            .write_to_file(&tmp)
            .map_err(|e| DicomError::InvalidWrite(format!("{}: {e}", tmp.display())))
            .and_then(|_| std::fs::rename(&tmp, &path).map_err(|e| DicomError::io(&path, e)));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            cleanup(&done);
            return Err(e);
        }
        done.push(path);
    }
    Ok(done)
}

fn ensure_dir(dir: &Path) -> DResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| DicomError::io(dir, e))
}
