//! The IOD modules both writers share: SOP Common, Patient, General Study, General Series,
//! Frame of Reference, General Equipment, and the greyscale Image Pixel description.

use dicom_core::VR;
use dicom_dictionary_std::tags;

use super::elements::Builder;
use super::{MrSeriesMeta, StoredVolume};

/// SOP Common, Patient, General Study, General/MR Series, Frame of Reference, General Equipment.
pub fn common(b: &mut Builder, meta: &MrSeriesMeta, sop_class: &str, sop_instance: &str) {
    let ascii = [&meta.patient_name, &meta.study_description, &meta.series_description, &meta.protocol_name]
        .iter()
        .all(|s| s.is_ascii());
    if !ascii {
        b.str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }
    b.str(tags::SOP_CLASS_UID, VR::UI, sop_class)
        .str(tags::SOP_INSTANCE_UID, VR::UI, sop_instance)
        // Patient
        .str(tags::PATIENT_NAME, VR::PN, &meta.patient_name)
        .str(tags::PATIENT_ID, VR::LO, &meta.patient_id)
        .str(tags::PATIENT_BIRTH_DATE, VR::DA, &meta.patient_birth_date)
        .str(tags::PATIENT_SEX, VR::CS, &meta.patient_sex)
        // General Study
        .str(tags::STUDY_INSTANCE_UID, VR::UI, &meta.study_uid())
        .str(tags::STUDY_DATE, VR::DA, &meta.study_date)
        .str(tags::STUDY_TIME, VR::TM, &meta.study_time)
        .empty(tags::REFERRING_PHYSICIAN_NAME, VR::PN)
        .str(tags::STUDY_ID, VR::SH, &meta.study_id)
        .str(tags::ACCESSION_NUMBER, VR::SH, &meta.accession_number)
        .str(tags::STUDY_DESCRIPTION, VR::LO, &meta.study_description)
        // General Series / MR Series
        .str(tags::MODALITY, VR::CS, "MR")
        .str(tags::SERIES_INSTANCE_UID, VR::UI, &meta.series_uid())
        .is(tags::SERIES_NUMBER, meta.series_number)
        .str(tags::SERIES_DATE, VR::DA, &meta.study_date)
        .str(tags::SERIES_TIME, VR::TM, &meta.study_time)
        .str(tags::SERIES_DESCRIPTION, VR::LO, &meta.series_description)
        .str(tags::PROTOCOL_NAME, VR::LO, &meta.protocol_name)
        .str(tags::BODY_PART_EXAMINED, VR::CS, &meta.body_part_examined)
        .str(tags::PATIENT_POSITION, VR::CS, &meta.patient_position)
        // Frame of Reference
        .str(tags::FRAME_OF_REFERENCE_UID, VR::UI, &meta.frame_of_reference_uid())
        .empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO)
        // General Equipment
        .str(tags::MANUFACTURER, VR::LO, &meta.manufacturer)
        .str(tags::MANUFACTURER_MODEL_NAME, VR::LO, &meta.model_name);
}

/// Image Pixel description of a greyscale image (without Pixel Data and frame count).
pub fn image_pixel(b: &mut Builder, vol: &StoredVolume) {
    let bits = vol.bits();
    b.us(tags::SAMPLES_PER_PIXEL, 1)
        .str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")
        .us(tags::ROWS, vol.dims[1] as u16)
        .us(tags::COLUMNS, vol.dims[0] as u16)
        .us(tags::BITS_ALLOCATED, bits)
        .us(tags::BITS_STORED, bits)
        .us(tags::HIGH_BIT, bits - 1)
        .us(tags::PIXEL_REPRESENTATION, if vol.signed() { 1 } else { 0 });
}

/// Window centre/width (real units): the meta's, or the value range.
pub fn window(meta: &MrSeriesMeta, vol: &StoredVolume) -> (f64, f64) {
    meta.window.unwrap_or_else(|| {
        let (lo, hi) = vol.real_range();
        ((lo + hi) / 2.0, (hi - lo).max(1.0))
    })
}
