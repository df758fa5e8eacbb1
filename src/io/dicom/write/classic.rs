//! MR Image Storage: one file per slice.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use super::elements::Builder;
use super::{
    ensure_dir, modules, plane_geometry, with_file_meta, write_all, MrSeriesMeta, StoredSamples, StoredVolume,
};
use crate::error::dicom::DicomError;
use crate::error::Result;
use crate::io::dicom::header::MR_IMAGE_STORAGE;

/// Pixel Data of one frame: OW (16-bit bit patterns) or OB (8-bit, padded to even length).
pub(super) fn pixel_data(frame: StoredSamples) -> DataElement<dicom_object::InMemDicomObject> {
    match frame {
        StoredSamples::I16(v) => {
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(v.iter().map(|&x| x as u16).collect()))
        }
        StoredSamples::U16(v) => DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(v.into())),
        StoredSamples::U8(mut v) => {
            if v.len() % 2 == 1 {
                v.push(0);
            }
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(v.into()))
        }
    }
}

/// MR Image module attributes (acquisition description) shared by every slice.
fn mr_image(b: &mut Builder, meta: &MrSeriesMeta) {
    b.str(tags::SCANNING_SEQUENCE, VR::CS, &meta.scanning_sequence)
        .str(tags::SEQUENCE_VARIANT, VR::CS, &meta.sequence_variant)
        .str(tags::SCAN_OPTIONS, VR::CS, &meta.scan_options)
        .str(tags::MR_ACQUISITION_TYPE, VR::CS, &meta.mr_acquisition_type)
        .str(tags::SEQUENCE_NAME, VR::SH, &meta.sequence_name)
        .ds(tags::REPETITION_TIME, &[meta.repetition_time])
        .ds(tags::ECHO_TIME, &[meta.echo_time])
        .is(tags::ECHO_TRAIN_LENGTH, meta.echo_train_length)
        .ds(tags::NUMBER_OF_AVERAGES, &[1.0])
        .ds(tags::IMAGING_FREQUENCY, &[42.577478518 * meta.magnetic_field_strength])
        .str(tags::IMAGED_NUCLEUS, VR::SH, "1H")
        .is(tags::ECHO_NUMBERS, 1)
        .ds(tags::MAGNETIC_FIELD_STRENGTH, &[meta.magnetic_field_strength])
        .ds(tags::FLIP_ANGLE, &[meta.flip_angle]);
    if meta.scanning_sequence.split('\\').any(|s| s == "IR") {
        b.ds(tags::INVERSION_TIME, &[meta.inversion_time.unwrap_or(0.0)]);
    }
}

/// Write `vol` as a classic MR Image Storage series into `dir` (created if needed), one file
/// per slice named `IM<series>_<slice>.dcm`, slice `k` of the volume as InstanceNumber `k+1`.
/// All or nothing: on failure no file of the series is left behind. Returns the paths in
/// slice order.
pub fn write_mr_series(vol: &StoredVolume, meta: &MrSeriesMeta, dir: &Path) -> Result<Vec<PathBuf>> {
    vol.validate()?;
    let g = plane_geometry(&vol.affine).map_err(DicomError::InvalidWrite)?;
    let (center, width) = modules::window(meta, vol);
    let n = vol.dims[2];
    let mut files = Vec::with_capacity(n);
    for k in 0..n {
        let a = &vol.affine;
        let ipp = [0, 1, 2].map(|r| a[r][2] * k as f64 + a[r][3]);
        let location = ipp[0] * g.normal[0] + ipp[1] * g.normal[1] + ipp[2] * g.normal[2];
        let r = vol.slice_rescale(k);
        let mut b = Builder::new();
        modules::common(&mut b, meta, MR_IMAGE_STORAGE, &meta.instance_uid("image", k));
        b.str(tags::IMAGE_TYPE, VR::CS, &meta.image_type.join("\\"))
            .is(tags::INSTANCE_NUMBER, k as i64 + 1)
            .is(tags::ACQUISITION_NUMBER, 1)
            .str(tags::CONTENT_DATE, VR::DA, &meta.study_date)
            .str(tags::CONTENT_TIME, VR::TM, &meta.study_time)
            .str(tags::BURNED_IN_ANNOTATION, VR::CS, "NO")
            .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00")
            // Image Plane
            .ds(tags::PIXEL_SPACING, &g.pixel_spacing)
            .ds(tags::IMAGE_ORIENTATION_PATIENT, &g.iop)
            .ds(tags::IMAGE_POSITION_PATIENT, &ipp)
            .ds(tags::SLICE_THICKNESS, &[meta.slice_thickness.unwrap_or(g.slice_spacing)])
            .ds(tags::SPACING_BETWEEN_SLICES, &[g.slice_spacing])
            .ds(tags::SLICE_LOCATION, &[location]);
        mr_image(&mut b, meta);
        modules::image_pixel(&mut b, vol);
        b.ds(tags::RESCALE_INTERCEPT, &[r.intercept])
            .ds(tags::RESCALE_SLOPE, &[r.slope])
            .str(tags::RESCALE_TYPE, VR::LO, "US")
            .ds(tags::WINDOW_CENTER, &[center])
            .ds(tags::WINDOW_WIDTH, &[width])
            .put(pixel_data(vol.frame(k)));
        let name = format!("IM{}_{:04}.dcm", meta.series_number, k + 1);
        files.push((dir.join(name), with_file_meta(b.build())?));
    }
    ensure_dir(dir)?;
    Ok(write_all(files)?)
}
