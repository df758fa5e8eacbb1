//! Segmentation Storage (DICOM SEG, PS3.3 A.51): the FM mask as a BINARY segmentation of the
//! series it was computed from, one frame on each source image plane.
//!
//! Frame `k` is slice `k` of the loaded volume: it lies on the source slice `k`'s own plane
//! (PlanePosition = that slice's ImagePositionPatient, shared PlaneOrientation = the source's),
//! references it (DerivationImage / SourceImage with the source's SOP class and instance, and
//! the frame number for a multi-frame source), and holds the mask's row `j`, column `i` at
//! pixel (`j`, `i`): no reorientation, so a viewer overlays it on the source as is. Every
//! slice gets a frame, with FM or not, so a series without FM still gets a valid, empty SEG.
//!
//! The patient and study modules are copied from the first source file (the standard requires
//! the SEG to belong to the source's patient and study); the frame of reference is the
//! source's. Series and instance UIDs are new and deterministic: derived from the source
//! series UID and the caller's `uid_seed` (weights and settings), so re-running the same job
//! gives the same object.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};

use super::elements::{deterministic_uid, Builder};
use super::{plane_geometry, with_file_meta};
use crate::error::dicom::{DResult, DicomError};
use crate::io::dicom::load::SliceSource;
use crate::volume::Volume;

pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// The one segment's label (there is no coded concept for fat metaplasia itself).
pub const SEGMENT_LABEL: &str = "fat metaplasia";

/// How the segmentation was made and how to file it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegDescription {
    pub series_number: i64,
    pub series_description: String,
    /// AlgorithmName and AlgorithmVersion.
    pub algorithm_name: String,
    pub algorithm_version: String,
    /// AlgorithmParameters: weights checksum and inference settings, as text.
    pub algorithm_parameters: String,
    /// ContentDate (YYYYMMDD) and ContentTime (HHMMSS), UTC.
    pub content_date: String,
    pub content_time: String,
    /// Seed of the new series and instance UIDs (with the source series UID).
    pub uid_seed: String,
}

impl SegDescription {
    /// fmseg's description, dated now, with `parameters` as the algorithm parameters.
    pub fn fmseg(parameters: &str) -> SegDescription {
        let (content_date, content_time) = utc_now();
        SegDescription {
            series_number: 9901,
            series_description: "FM segmentation (fmseg)".into(),
            algorithm_name: "fmseg 2.5D-AttentionUNet".into(),
            algorithm_version: env!("CARGO_PKG_VERSION").into(),
            algorithm_parameters: parameters.into(),
            content_date,
            content_time,
            uid_seed: parameters.into(),
        }
    }
}

/// Today's date and time in UTC as DICOM DA and TM strings.
pub fn utc_now() -> (String, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    (format!("{y:04}{m:02}{d:02}"), format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60))
}

/// Attributes copied from the source as they are, when present: the Patient, Clinical Trial
/// Subject, General Study, Patient Study and Clinical Trial Study modules.
const COPIED: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    // Patient
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_BIRTH_TIME,
    tags::PATIENT_SEX,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::PATIENT_COMMENTS,
    tags::PATIENT_IDENTITY_REMOVED,
    tags::DEIDENTIFICATION_METHOD,
    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
    // Clinical Trial Subject
    tags::CLINICAL_TRIAL_SPONSOR_NAME,
    tags::CLINICAL_TRIAL_PROTOCOL_ID,
    tags::CLINICAL_TRIAL_PROTOCOL_NAME,
    tags::CLINICAL_TRIAL_SITE_ID,
    tags::CLINICAL_TRIAL_SITE_NAME,
    tags::CLINICAL_TRIAL_SUBJECT_ID,
    tags::CLINICAL_TRIAL_SUBJECT_READING_ID,
    // General Study
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
    tags::STUDY_DESCRIPTION,
    tags::PHYSICIANS_OF_RECORD,
    tags::REFERENCED_STUDY_SEQUENCE,
    tags::PROCEDURE_CODE_SEQUENCE,
    // Patient Study
    tags::ADMITTING_DIAGNOSES_DESCRIPTION,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    // Clinical Trial Study
    tags::CLINICAL_TRIAL_TIME_POINT_ID,
    // Frame of Reference
    tags::FRAME_OF_REFERENCE_UID,
    tags::POSITION_REFERENCE_INDICATOR,
];

/// Type 2 attributes of the copied modules: present (empty) when the source lacks them.
const REQUIRED_EMPTY: &[(Tag, VR)] = &[
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
    (tags::POSITION_REFERENCE_INDICATOR, VR::LO),
];

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut b = Builder::new();
    b.str(tags::CODE_VALUE, VR::SH, value).str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme).str(
        tags::CODE_MEANING,
        VR::LO,
        meaning,
    );
    b.build()
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let s = obj.element(tag).ok()?.to_str().ok()?.trim_end_matches(['\0', ' ']).to_string();
    (!s.is_empty()).then_some(s)
}

/// The SEG of `mask` (0/1 per voxel, on the grid of the series loaded from `sources`:
/// `sources[k]` is slice `k`) as a Part 10 object.
pub fn seg_object(
    mask: &Volume,
    sources: &[SliceSource],
    d: &SegDescription,
) -> DResult<FileDicomObject<InMemDicomObject>> {
    let [cols, rows, n] = mask.dims;
    let bad = |m: String| DicomError::InvalidWrite(format!("DICOM SEG: {m}"));
    if sources.is_empty() || sources.len() != n {
        return Err(bad(format!("the mask has {n} slices but {} source images are given", sources.len())));
    }
    if cols == 0 || rows == 0 || cols > u16::MAX as usize || rows > u16::MAX as usize {
        return Err(bad(format!("a {cols} x {rows} frame cannot be stored")));
    }
    let g = plane_geometry(&mask.affine).map_err(bad)?;
    let first = &sources[0].path;
    let src = OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(first).map_err(|e| {
        DicomError::Unreadable { path: first.clone(), reason: format!("reading its header again: {e}") }
    })?;
    let source_series = text(&src, tags::SERIES_INSTANCE_UID)
        .unwrap_or_else(|| deterministic_uid(&["series-of", &sources[0].sop_instance_uid]));
    let uid = |what: &str| deterministic_uid(&["seg", &source_series, &d.uid_seed, what]);

    let mut b = Builder::new();
    for &t in COPIED {
        if let Ok(e) = src.element(t) {
            b.put(e.clone());
        }
    }
    for &(t, vr) in REQUIRED_EMPTY {
        if src.element(t).is_err() {
            b.empty(t, vr);
        }
    }
    if src.element(tags::STUDY_INSTANCE_UID).is_err() {
        b.str(tags::STUDY_INSTANCE_UID, VR::UI, &deterministic_uid(&["study-of", &source_series]));
    }
    if src.element(tags::FRAME_OF_REFERENCE_UID).is_err() {
        b.str(tags::FRAME_OF_REFERENCE_UID, VR::UI, &deterministic_uid(&["frame-of-reference-of", &source_series]));
    }
    b.str(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE)
        .str(tags::SOP_INSTANCE_UID, VR::UI, &uid("instance"))
        .str(tags::INSTANCE_CREATION_DATE, VR::DA, &d.content_date)
        .str(tags::INSTANCE_CREATION_TIME, VR::TM, &d.content_time)
        // General Series + Segmentation Series
        .str(tags::MODALITY, VR::CS, "SEG")
        .str(tags::SERIES_INSTANCE_UID, VR::UI, &uid("series"))
        .is(tags::SERIES_NUMBER, d.series_number)
        .str(tags::SERIES_DATE, VR::DA, &d.content_date)
        .str(tags::SERIES_TIME, VR::TM, &d.content_time)
        .str(tags::SERIES_DESCRIPTION, VR::LO, &d.series_description)
        // General Equipment + Enhanced General Equipment
        .str(tags::MANUFACTURER, VR::LO, "fmseg")
        .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, &d.algorithm_name)
        .str(tags::DEVICE_SERIAL_NUMBER, VR::LO, "1")
        .str(tags::SOFTWARE_VERSIONS, VR::LO, &d.algorithm_version)
        // General Image + Segmentation Image (Content Identification)
        .is(tags::INSTANCE_NUMBER, 1)
        .str(tags::CONTENT_DATE, VR::DA, &d.content_date)
        .str(tags::CONTENT_TIME, VR::TM, &d.content_time)
        .str(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY")
        .str(tags::CONTENT_LABEL, VR::CS, "FAT_METAPLASIA")
        .str(tags::CONTENT_DESCRIPTION, VR::LO, "Fat metaplasia of the sacroiliac joints")
        .empty(tags::CONTENT_CREATOR_NAME, VR::PN)
        .str(tags::SEGMENTATION_TYPE, VR::CS, "BINARY")
        .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00")
        .str(tags::BURNED_IN_ANNOTATION, VR::CS, "NO")
        // Image Pixel: 1-bit, one sample
        .us(tags::SAMPLES_PER_PIXEL, 1)
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
        .us(tags::ROWS, rows as u16)
        .us(tags::COLUMNS, cols as u16)
        .us(tags::BITS_ALLOCATED, 1)
        .us(tags::BITS_STORED, 1)
        .us(tags::HIGH_BIT, 0)
        .us(tags::PIXEL_REPRESENTATION, 0)
        .is(tags::NUMBER_OF_FRAMES, n as i64);

    // The one segment.
    b.item(tags::SEGMENT_SEQUENCE, |s| {
        s.us(tags::SEGMENT_NUMBER, 1)
            .str(tags::SEGMENT_LABEL, VR::LO, SEGMENT_LABEL)
            .str(
                tags::SEGMENT_DESCRIPTION,
                VR::ST,
                "Fat metaplasia in the subchondral bone marrow of the sacroiliac joints (T1-hyperintense)",
            )
            .str(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC")
            .str(tags::SEGMENT_ALGORITHM_NAME, VR::LO, &d.algorithm_name)
            .seq(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![code("85756007", "SCT", "Tissue")])
            .seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![code("55603005", "SCT", "Fat")])
            .seq(tags::ANATOMIC_REGION_SEQUENCE, vec![code("39723000", "SCT", "Sacroiliac joint")])
            .item(tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE, |a| {
                a.seq(tags::ALGORITHM_FAMILY_CODE_SEQUENCE, vec![code("123110", "DCM", "Artificial Intelligence")])
                    .str(tags::ALGORITHM_NAME, VR::LO, &d.algorithm_name)
                    .str(tags::ALGORITHM_VERSION, VR::LO, &d.algorithm_version)
                    .str(tags::ALGORITHM_PARAMETERS, VR::LT, &d.algorithm_parameters);
            });
    });

    // Multi-frame Dimension: segment, then position along the slice normal.
    let dim_uid = uid("dimension-organization");
    b.item(tags::DIMENSION_ORGANIZATION_SEQUENCE, |o| {
        o.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
    })
    .str(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    let index = |pointer: Tag, group: Tag, label: &str| {
        let mut i = Builder::new();
        i.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid)
            .at(tags::DIMENSION_INDEX_POINTER, pointer)
            .at(tags::FUNCTIONAL_GROUP_POINTER, group)
            .str(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        i.build()
    };
    b.seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            index(tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "ReferencedSegmentNumber"),
            index(tags::IMAGE_POSITION_PATIENT, tags::PLANE_POSITION_SEQUENCE, "ImagePositionPatient"),
        ],
    );

    // Functional groups: spacing and orientation shared, position and source per frame.
    let thickness = text(&src, tags::SLICE_THICKNESS).and_then(|s| s.parse::<f64>().ok()).filter(|t| *t > 0.0);
    b.item(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, |s| {
        s.item(tags::PIXEL_MEASURES_SEQUENCE, |m| {
            m.ds(tags::PIXEL_SPACING, &g.pixel_spacing)
                .ds(tags::SLICE_THICKNESS, &[thickness.unwrap_or(g.slice_spacing)])
                .ds(tags::SPACING_BETWEEN_SLICES, &[g.slice_spacing]);
        })
        .item(tags::PLANE_ORIENTATION_SEQUENCE, |o| {
            o.ds(tags::IMAGE_ORIENTATION_PATIENT, &g.iop);
        });
    });
    let per_frame = sources
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let a = &mask.affine;
            let ipp = [0, 1, 2].map(|r| a[r][2] * k as f64 + a[r][3]);
            let mut f = Builder::new();
            f.item(tags::DERIVATION_IMAGE_SEQUENCE, |dv| {
                dv.seq(tags::DERIVATION_CODE_SEQUENCE, vec![code("113076", "DCM", "Segmentation")]).item(
                    tags::SOURCE_IMAGE_SEQUENCE,
                    |si| {
                        source_reference(si, s);
                        si.seq(
                            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                            vec![code("121322", "DCM", "Source image for image processing operation")],
                        );
                    },
                );
            })
            .item(tags::FRAME_CONTENT_SEQUENCE, |c| {
                c.ul(tags::DIMENSION_INDEX_VALUES, &[1, k as u32 + 1]);
            })
            .item(tags::PLANE_POSITION_SEQUENCE, |p| {
                p.ds(tags::IMAGE_POSITION_PATIENT, &ipp);
            })
            .item(tags::SEGMENT_IDENTIFICATION_SEQUENCE, |si| {
                si.us(tags::REFERENCED_SEGMENT_NUMBER, 1);
            });
            f.build()
        })
        .collect();
    b.seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);

    // Common Instance Reference: the source series and each instance once.
    let mut seen = std::collections::BTreeSet::new();
    let instances = sources
        .iter()
        .filter(|s| seen.insert(s.sop_instance_uid.clone()))
        .map(|s| {
            let mut r = Builder::new();
            r.str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &s.sop_class_uid).str(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &s.sop_instance_uid,
            );
            r.build()
        })
        .collect();
    b.item(tags::REFERENCED_SERIES_SEQUENCE, |r| {
        r.str(tags::SERIES_INSTANCE_UID, VR::UI, &source_series).seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances);
    });

    b.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pack_frames(mask).into())));
    with_file_meta(b.build())
}

/// ReferencedSOPClassUID, ReferencedSOPInstanceUID and (for a frame of a multi-frame image)
/// ReferencedFrameNumber.
fn source_reference(b: &mut Builder, s: &SliceSource) {
    b.str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &s.sop_class_uid).str(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        &s.sop_instance_uid,
    );
    if s.multiframe {
        b.is(tags::REFERENCED_FRAME_NUMBER, s.frame as i64 + 1);
    }
}

/// The frames' bits, frame after frame with no padding between them, each frame row-major,
/// least significant bit first (PS3.5 8.1.1), padded to an even length.
fn pack_frames(mask: &Volume) -> Vec<u8> {
    let [cols, rows, n] = mask.dims;
    let mut out = vec![0u8; (cols * rows * n).div_ceil(8).next_multiple_of(2)];
    let mut bit = 0usize;
    for k in 0..n {
        for j in 0..rows {
            for i in 0..cols {
                if mask.data[(i * rows + j) * n + k] > 0.5 {
                    out[bit / 8] |= 1 << (bit % 8);
                }
                bit += 1;
            }
        }
    }
    out
}

/// [`seg_object`] encoded as a Part 10 file.
pub fn encode_seg(mask: &Volume, sources: &[SliceSource], d: &SegDescription) -> DResult<Vec<u8>> {
    let obj = seg_object(mask, sources, d)?;
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).map_err(|e| DicomError::InvalidWrite(format!("DICOM SEG: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dicom::{
        load_series, write_mr_series, MrSeriesMeta, Rescale, Selection, StoredSamples, StoredVolume,
    };

    fn series(dir: &std::path::Path) -> crate::io::dicom::LoadedSeries {
        let a = [[0.8, 0.0, 0.0, -10.0], [0.0, 0.7, 0.0, 5.0], [0.0, 0.0, 3.0, 20.0], [0.0, 0.0, 0.0, 1.0]];
        let samples = StoredSamples::I16((0..5 * 3 * 2).map(|v| v as i16).collect());
        let v = StoredVolume::new([5, 3, 2], samples, a, vec![Rescale::IDENTITY]).unwrap();
        let meta = MrSeriesMeta { patient_name: "DOE^JANE".into(), ..MrSeriesMeta::default() };
        write_mr_series(&v, &meta, dir).unwrap();
        load_series(dir, &Selection::only()).unwrap()
    }

    #[test]
    fn bits_run_on_across_frames_least_significant_first() {
        // 5 x 3 frames: 15 bits each, so frame 1 starts inside byte 1
        let mut mask = Volume { dims: [5, 3, 2], data: vec![0.0; 30], affine: [[0.0; 4]; 4] };
        mask.data[0] = 1.0; // (0, 0, 0): bit 0
        mask.data[(4 * 3 + 2) * 2 + 1] = 1.0; // (4, 2, 1): bit 15 + 2 * 5 + 4 = 29
        let b = pack_frames(&mask);
        assert_eq!(b.len(), 4); // 30 bits -> 4 bytes (even)
        assert_eq!(b, [0b1, 0, 0, 0b0010_0000]);
    }

    #[test]
    fn copies_patient_and_study_and_references_every_slice() {
        let dir = tempfile::tempdir().unwrap();
        let l = series(dir.path());
        let mask = Volume { data: vec![1.0; 30], ..l.volume.clone() };
        let d = SegDescription {
            content_date: "20261204".into(),
            content_time: "101500".into(),
            ..SegDescription::fmseg("w1")
        };
        let obj = seg_object(&mask, &l.slices, &d).unwrap();
        let s = |t| obj.element(t).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
        assert_eq!(s(tags::PATIENT_NAME), "DOE^JANE");
        assert_eq!(s(tags::STUDY_INSTANCE_UID), l.info.study_uid.clone().unwrap());
        assert_eq!(s(tags::FRAME_OF_REFERENCE_UID), l.info.frame_of_reference_uid.clone().unwrap());
        assert_eq!(s(tags::MODALITY), "SEG");
        assert_eq!(s(tags::NUMBER_OF_FRAMES), "2");
        assert_ne!(s(tags::SERIES_INSTANCE_UID), l.info.uid);
        let refs = obj.element(tags::REFERENCED_SERIES_SEQUENCE).unwrap().items().unwrap();
        assert_eq!(refs[0].element(tags::REFERENCED_INSTANCE_SEQUENCE).unwrap().items().unwrap().len(), 2);
        // the same job gives the same UIDs; other settings give others
        let again = seg_object(&mask, &l.slices, &d).unwrap();
        assert_eq!(again.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap(), s(tags::SOP_INSTANCE_UID));
        let other = seg_object(&mask, &l.slices, &SegDescription::fmseg("w2")).unwrap();
        assert_ne!(other.element(tags::SERIES_INSTANCE_UID).unwrap().to_str().unwrap(), s(tags::SERIES_INSTANCE_UID));
        // a mask that is not on the sources' grid is refused
        let e = seg_object(&mask, &l.slices[..1], &d).unwrap_err().to_string();
        assert!(e.contains("2 slices but 1 source"), "{e}");
    }

    #[test]
    fn utc_dates_are_dicom_strings() {
        let (d, t) = utc_now();
        assert!(d.len() == 8 && d.starts_with("20") && d.chars().all(|c| c.is_ascii_digit()), "{d}");
        assert!(t.len() == 6 && t.chars().all(|c| c.is_ascii_digit()) && &t[..2] < "24", "{t}");
    }
}
