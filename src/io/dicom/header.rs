//! Reading the attributes fmseg needs from one DICOM object into plain Rust values: the file's
//! identity (series, study), its image pixel description, and one [`FrameHeader`] per frame
//! (a classic image has one frame; an Enhanced MR object takes its per-frame geometry and
//! rescale from the functional group sequences, per-frame item first, then the shared item).

use std::path::{Path, PathBuf};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::Tag;
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;

use crate::error::dicom::{DResult, DicomError};

/// SOP Class UID of Enhanced MR Image Storage.
pub const ENHANCED_MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4.1";
/// SOP Class UID of (classic) MR Image Storage.
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// Linear modality transform: `value = stored * slope + intercept`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Rescale {
    pub slope: f64,
    pub intercept: f64,
}

impl Rescale {
    pub const IDENTITY: Rescale = Rescale { slope: 1.0, intercept: 0.0 };
}

/// Geometry and value transform of one frame (one slice of a classic series).
#[derive(Clone, Debug)]
pub struct FrameHeader {
    /// Frame index inside its file (0 for a classic single-frame image).
    pub frame: u32,
    /// ImageOrientationPatient: direction of increasing column index, then of increasing row index.
    pub orientation: Option<[f64; 6]>,
    /// ImagePositionPatient: centre of the first transmitted pixel, LPS mm.
    pub position: Option<[f64; 3]>,
    /// PixelSpacing: [spacing between rows, spacing between columns] in mm.
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    pub spacing_between_slices: Option<f64>,
    pub rescale: Rescale,
    pub echo_time: Option<f64>,
    pub repetition_time: Option<f64>,
}

/// Everything fmseg reads from one file's header (the pixel data itself is read at load time).
#[derive(Clone, Debug)]
pub struct FileHeader {
    pub path: PathBuf,
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_uid: String,
    /// The file has no SeriesInstanceUID: `series_uid` is fmseg's fallback key.
    pub series_uid_missing: bool,
    pub study_uid: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub modality: String,
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
    pub series_description: String,
    pub protocol_name: String,
    pub sequence_name: String,
    pub scanning_sequence: String,
    pub patient_id: String,
    pub patient_name: String,
    pub image_type: Vec<String>,
    pub inversion_time: Option<f64>,
    pub rows: u16,
    pub cols: u16,
    pub samples_per_pixel: u16,
    pub photometric: String,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub high_bit: u16,
    pub pixel_representation: u16,
    pub number_of_frames: u32,
    pub frames: Vec<FrameHeader>,
}

impl FileHeader {
    pub fn is_enhanced(&self) -> bool {
        self.sop_class_uid == ENHANCED_MR_IMAGE_STORAGE
    }
}

/// The dictionary name of a tag, for messages: `ImagePositionPatient (0020,0032)`.
pub fn tag_name(tag: Tag) -> String {
    match StandardDataDictionary.by_tag(tag) {
        Some(e) => format!("{} ({:04X},{:04X})", e.alias(), tag.0, tag.1),
        None => format!("({:04X},{:04X})", tag.0, tag.1),
    }
}

/// Typed, path-aware attribute access on one dataset (or sequence item).
pub struct Attrs<'a> {
    pub obj: &'a InMemDicomObject,
    pub path: &'a Path,
}

impl<'a> Attrs<'a> {
    pub fn new(obj: &'a InMemDicomObject, path: &'a Path) -> Self {
        Attrs { obj, path }
    }

    fn bad(&self, tag: Tag, what: impl std::fmt::Display) -> DicomError {
        DicomError::malformed(self.path, format!("{}: {what}", tag_name(tag)))
    }

    pub fn has(&self, tag: Tag) -> bool {
        self.obj.get(tag).is_some()
    }

    /// A string attribute, trimmed; `None` when absent or empty.
    pub fn str_opt(&self, tag: Tag) -> Option<String> {
        let e = self.obj.get(tag)?;
        let s = e.value().to_str().ok()?;
        let t = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        (!t.is_empty()).then(|| t.to_string())
    }

    pub fn str_or_empty(&self, tag: Tag) -> String {
        self.str_opt(tag).unwrap_or_default()
    }

    pub fn str_req(&self, tag: Tag) -> DResult<String> {
        self.str_opt(tag).ok_or_else(|| self.bad(tag, "required attribute missing or empty"))
    }

    pub fn multi_str(&self, tag: Tag) -> Vec<String> {
        match self.obj.get(tag).and_then(|e| e.value().to_multi_str().ok()) {
            Some(v) => v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None => Vec::new(),
        }
    }

    /// Numbers (DS, IS, FD, FL, US, ...); `None` when absent or empty; an error when present but
    /// not `n` finite numbers.
    pub fn f64s_opt(&self, tag: Tag, n: usize) -> DResult<Option<Vec<f64>>> {
        let Some(e) = self.obj.get(tag) else { return Ok(None) };
        if e.value().primitive().is_some_and(|p| p.multiplicity() == 0) || self.str_opt(tag).is_none() {
            return Ok(None);
        }
        let v = e.value().to_multi_float64().map_err(|err| self.bad(tag, format!("not a number: {err}")))?;
        if v.len() != n {
            return Err(self.bad(tag, format!("expected {n} value(s), found {}", v.len())));
        }
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(self.bad(tag, format!("non-finite value {x}")));
        }
        Ok(Some(v))
    }

    pub fn f64_opt(&self, tag: Tag) -> DResult<Option<f64>> {
        Ok(self.f64s_opt(tag, 1)?.map(|v| v[0]))
    }

    pub fn int_opt(&self, tag: Tag) -> DResult<Option<i64>> {
        match self.f64_opt(tag)? {
            None => Ok(None),
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => Ok(Some(x as i64)),
            Some(x) => Err(self.bad(tag, format!("expected an integer, found {x}"))),
        }
    }

    pub fn u16_req(&self, tag: Tag) -> DResult<u16> {
        match self.int_opt(tag)? {
            Some(x) if (0..=u16::MAX as i64).contains(&x) => Ok(x as u16),
            Some(x) => Err(self.bad(tag, format!("value {x} out of range 0..65535"))),
            None => Err(self.bad(tag, "required attribute missing or empty")),
        }
    }

    pub fn u16_or(&self, tag: Tag, default: u16) -> DResult<u16> {
        if self.int_opt(tag)?.is_none() {
            Ok(default)
        } else {
            self.u16_req(tag)
        }
    }

    /// Items of a sequence attribute (empty when absent or not a sequence).
    pub fn items(&self, tag: Tag) -> &'a [InMemDicomObject] {
        self.obj.get(tag).and_then(|e| e.value().items()).unwrap_or(&[])
    }

    /// The first item of a sequence, as `Attrs`.
    pub fn item(&self, tag: Tag) -> Option<Attrs<'a>> {
        self.items(tag).first().map(|o| Attrs { obj: o, path: self.path })
    }
}

/// Functional group lookup for one frame of an Enhanced object: the per-frame item's macro
/// sequence first, then the shared item's.
struct FrameGroups<'a> {
    per_frame: Option<Attrs<'a>>,
    shared: Option<Attrs<'a>>,
}

impl<'a> FrameGroups<'a> {
    fn macro_item(&self, seq: Tag) -> Option<Attrs<'a>> {
        self.per_frame.as_ref().and_then(|a| a.item(seq)).or_else(|| self.shared.as_ref().and_then(|a| a.item(seq)))
    }

    fn f64s(&self, seq: Tag, tag: Tag, n: usize) -> DResult<Option<Vec<f64>>> {
        match self.macro_item(seq) {
            Some(a) => a.f64s_opt(tag, n),
            None => Ok(None),
        }
    }
}

fn arr<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    v.and_then(|v| <[f64; N]>::try_from(v).ok())
}

fn rescale_from(a: &Attrs, path: &Path) -> DResult<Rescale> {
    let slope = a.f64_opt(tags::RESCALE_SLOPE)?;
    let intercept = a.f64_opt(tags::RESCALE_INTERCEPT)?;
    let r = Rescale { slope: slope.unwrap_or(1.0), intercept: intercept.unwrap_or(0.0) };
    if r.slope == 0.0 {
        return Err(DicomError::malformed(path, "RescaleSlope (0028,1053) is 0"));
    }
    Ok(r)
}

/// Whether an object is an image fmseg can consider: it has Rows and Columns.
pub fn is_image(obj: &InMemDicomObject) -> bool {
    obj.get(tags::ROWS).is_some() && obj.get(tags::COLUMNS).is_some()
}

/// Read the header of an image object (the dataset may stop before Pixel Data).
pub fn read_header(
    obj: &InMemDicomObject,
    path: &Path,
    transfer_syntax: &str,
    sop_class_meta: &str,
) -> DResult<FileHeader> {
    let a = Attrs::new(obj, path);
    // Without a SeriesInstanceUID (type 1, but absent from some exported and test files) the
    // file joins the series of its study, SeriesNumber and directory, under a UID derived from
    // them (dcm2niix groups such files too); the series says so.
    let series_uid_missing = a.str_opt(tags::SERIES_INSTANCE_UID).is_none();
    let series_uid = match a.str_opt(tags::SERIES_INSTANCE_UID) {
        Some(u) => u,
        None => super::write::deterministic_uid(&[
            "no-series-uid",
            &a.str_or_empty(tags::STUDY_INSTANCE_UID),
            &a.str_or_empty(tags::SERIES_NUMBER),
            &path.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default(),
        ]),
    };
    let sop_class_uid =
        a.str_opt(tags::SOP_CLASS_UID).unwrap_or_else(|| sop_class_meta.trim_end_matches('\0').to_string());
    let number_of_frames = match a.int_opt(tags::NUMBER_OF_FRAMES)? {
        None => 1,
        Some(n) if (1..=u32::MAX as i64).contains(&n) => n as u32,
        Some(n) => return Err(DicomError::malformed(path, format!("NumberOfFrames (0028,0008) is {n}"))),
    };

    let mut h = FileHeader {
        path: path.to_path_buf(),
        transfer_syntax: transfer_syntax.trim_end_matches(|c: char| c.is_whitespace() || c == '\0').to_string(),
        sop_instance_uid: a.str_or_empty(tags::SOP_INSTANCE_UID),
        sop_class_uid,
        series_uid,
        series_uid_missing,
        study_uid: a.str_opt(tags::STUDY_INSTANCE_UID),
        frame_of_reference_uid: a.str_opt(tags::FRAME_OF_REFERENCE_UID),
        modality: a.str_or_empty(tags::MODALITY),
        series_number: a.int_opt(tags::SERIES_NUMBER).unwrap_or(None),
        instance_number: a.int_opt(tags::INSTANCE_NUMBER).unwrap_or(None),
        series_description: a.str_or_empty(tags::SERIES_DESCRIPTION),
        protocol_name: a.str_or_empty(tags::PROTOCOL_NAME),
        sequence_name: a
            .str_opt(tags::SEQUENCE_NAME)
            .or_else(|| a.str_opt(tags::PULSE_SEQUENCE_NAME))
            .unwrap_or_default(),
        scanning_sequence: a.str_or_empty(tags::SCANNING_SEQUENCE),
        patient_id: a.str_or_empty(tags::PATIENT_ID),
        patient_name: a.str_or_empty(tags::PATIENT_NAME),
        image_type: a.multi_str(tags::IMAGE_TYPE),
        inversion_time: a.f64_opt(tags::INVERSION_TIME).unwrap_or(None),
        rows: a.u16_req(tags::ROWS)?,
        cols: a.u16_req(tags::COLUMNS)?,
        samples_per_pixel: a.u16_or(tags::SAMPLES_PER_PIXEL, 1)?,
        photometric: a.str_or_empty(tags::PHOTOMETRIC_INTERPRETATION),
        bits_allocated: a.u16_req(tags::BITS_ALLOCATED)?,
        bits_stored: 0,
        high_bit: 0,
        pixel_representation: a.u16_or(tags::PIXEL_REPRESENTATION, 0)?,
        number_of_frames,
        frames: Vec::new(),
    };
    h.bits_stored = a.u16_or(tags::BITS_STORED, h.bits_allocated)?;
    h.high_bit = a.u16_or(tags::HIGH_BIT, h.bits_stored.saturating_sub(1))?;
    if h.rows == 0 || h.cols == 0 {
        return Err(DicomError::malformed(path, format!("image size {} x {} (Rows x Columns)", h.rows, h.cols)));
    }

    let per_frame = a.items(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let shared = a.item(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    if !per_frame.is_empty() || shared.is_some() {
        if per_frame.len() != number_of_frames as usize {
            return Err(DicomError::malformed(
                path,
                format!(
                    "PerFrameFunctionalGroupsSequence (5200,9230) has {} item(s) for NumberOfFrames {number_of_frames}",
                    per_frame.len()
                ),
            ));
        }
        for (f, item) in per_frame.iter().enumerate() {
            let g = FrameGroups {
                per_frame: Some(Attrs::new(item, path)),
                shared: shared.as_ref().map(|s| Attrs::new(s.obj, path)),
            };
            let measures = g.macro_item(tags::PIXEL_MEASURES_SEQUENCE);
            let rescale = match g.macro_item(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
                Some(t) => rescale_from(&t, path)?,
                None => rescale_from(&a, path)?,
            };
            h.frames.push(FrameHeader {
                frame: f as u32,
                orientation: arr(g.f64s(tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT, 6)?),
                position: arr(g.f64s(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT, 3)?),
                pixel_spacing: match &measures {
                    Some(m) => arr(m.f64s_opt(tags::PIXEL_SPACING, 2)?),
                    None => None,
                },
                slice_thickness: match &measures {
                    Some(m) => m.f64_opt(tags::SLICE_THICKNESS)?,
                    None => None,
                },
                spacing_between_slices: match &measures {
                    Some(m) => m.f64_opt(tags::SPACING_BETWEEN_SLICES)?,
                    None => None,
                },
                rescale,
                echo_time: g.f64s(tags::MR_ECHO_SEQUENCE, tags::EFFECTIVE_ECHO_TIME, 1)?.map(|v| v[0]),
                repetition_time: g
                    .f64s(tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE, tags::REPETITION_TIME, 1)?
                    .map(|v| v[0]),
            });
        }
    } else {
        // A classic image: one geometry for all its frames (a classic multi-frame object with
        // NumberOfFrames > 1 and no functional groups has no per-frame positions: rejected at
        // stacking time, where every frame needs its own position).
        let frame = FrameHeader {
            frame: 0,
            orientation: arr(a.f64s_opt(tags::IMAGE_ORIENTATION_PATIENT, 6)?),
            position: arr(a.f64s_opt(tags::IMAGE_POSITION_PATIENT, 3)?),
            pixel_spacing: arr(a.f64s_opt(tags::PIXEL_SPACING, 2)?),
            slice_thickness: a.f64_opt(tags::SLICE_THICKNESS)?,
            spacing_between_slices: a.f64_opt(tags::SPACING_BETWEEN_SLICES)?,
            rescale: rescale_from(&a, path)?,
            echo_time: a.f64_opt(tags::ECHO_TIME).unwrap_or(None),
            repetition_time: a.f64_opt(tags::REPETITION_TIME).unwrap_or(None),
        };
        if number_of_frames > 1 {
            return Err(DicomError::malformed(
                path,
                format!("{number_of_frames} frames without per-frame functional groups: the frames have no positions"),
            ));
        }
        h.frames.push(frame);
    }
    Ok(h)
}
