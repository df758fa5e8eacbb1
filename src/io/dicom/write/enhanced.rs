//! Enhanced MR Image Storage: one multi-frame file, geometry and rescale in functional groups.
//!
//! Written as a DERIVED image (ImageType `DERIVED\PRIMARY\VOLUME\NONE`), which keeps the
//! MR Pulse Sequence module and the acquisition-only functional group macros optional; the
//! shared group carries pixel measures, orientation, frame type, anatomy, echo and timing,
//! each frame its position, its stack position and its own rescale (Pixel Value
//! Transformation), so per-frame rescale is exercised.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;

use super::classic::pixel_data;
use super::elements::{deterministic_uid, Builder};
use super::{
    ensure_dir, modules, plane_geometry, with_file_meta, write_all, MrSeriesMeta, StoredSamples, StoredVolume,
};
use crate::error::dicom::DicomError;
use crate::error::Result;
use crate::io::dicom::header::ENHANCED_MR_IMAGE_STORAGE;

fn code(b: &mut Builder, value: &str, scheme: &str, meaning: &str) {
    b.str(tags::CODE_VALUE, VR::SH, value).str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme).str(
        tags::CODE_MEANING,
        VR::LO,
        meaning,
    );
}

/// Write `vol` as one Enhanced MR Image Storage file at `path` (all or nothing). Frame `k+1`
/// is slice `k` of the volume.
pub fn write_enhanced_mr(vol: &StoredVolume, meta: &MrSeriesMeta, path: &Path) -> Result<()> {
    vol.validate()?;
    if !matches!(vol.samples, StoredSamples::I16(_)) {
        return Err(DicomError::InvalidWrite("the Enhanced MR writer stores int16 samples only".into()).into());
    }
    let g = plane_geometry(&vol.affine).map_err(DicomError::InvalidWrite)?;
    let n = vol.dims[2];
    let (center, width) = modules::window(meta, vol);
    let dim_uid = deterministic_uid(&[&meta.uid_seed, "dimension-organization", &meta.series_number.to_string()]);
    let contrast = match meta.protocol_name.to_ascii_lowercase() {
        p if p.contains("t1") => "T1",
        p if p.contains("t2") => "T2",
        p if p.contains("pd") => "PROTON_DENSITY",
        _ => "UNKNOWN",
    };
    let datetime = format!("{}{}", meta.study_date, meta.study_time);

    let mut b = Builder::new();
    modules::common(&mut b, meta, ENHANCED_MR_IMAGE_STORAGE, &meta.instance_uid("enhanced", 0));
    b.str(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0")
        .str(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"))
        // Enhanced MR Image
        .str(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY\\VOLUME\\NONE")
        .str(tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME")
        .str(tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME")
        .str(tags::VOLUME_BASED_CALCULATION_TECHNIQUE, VR::CS, "NONE")
        .str(tags::COMPLEX_IMAGE_COMPONENT, VR::CS, "MAGNITUDE")
        .str(tags::ACQUISITION_CONTRAST, VR::CS, contrast)
        .str(tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH")
        .str(tags::RESONANT_NUCLEUS, VR::CS, "1H")
        .str(tags::K_SPACE_FILTERING, VR::CS, "NONE")
        .ds(tags::MAGNETIC_FIELD_STRENGTH, &[meta.magnetic_field_strength])
        .str(tags::APPLICABLE_SAFETY_STANDARD_AGENCY, VR::CS, "IEC")
        .str(tags::BURNED_IN_ANNOTATION, VR::CS, "NO")
        .str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00")
        .str(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY")
        .str(tags::ACQUISITION_DATE_TIME, VR::DT, &datetime)
        .fd(tags::ACQUISITION_DURATION, &[0.0])
        // Multi-frame Functional Groups
        .is(tags::INSTANCE_NUMBER, 1)
        .str(tags::CONTENT_DATE, VR::DA, &meta.study_date)
        .str(tags::CONTENT_TIME, VR::TM, &meta.study_time)
        .is(tags::NUMBER_OF_FRAMES, n as i64)
        // Acquisition Context: nothing to say (type 2).
        .seq(tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]);
    modules::image_pixel(&mut b, vol);

    // Multi-frame Dimension: stack, then position in stack.
    b.item(tags::DIMENSION_ORGANIZATION_SEQUENCE, |d| {
        d.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
    });
    let dims: Vec<_> = [tags::STACK_ID, tags::IN_STACK_POSITION_NUMBER]
        .iter()
        .map(|&t| {
            let mut d = Builder::new();
            d.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid)
                .at(tags::DIMENSION_INDEX_POINTER, t)
                .at(tags::FUNCTIONAL_GROUP_POINTER, tags::FRAME_CONTENT_SEQUENCE);
            d.build()
        })
        .collect();
    b.seq(tags::DIMENSION_INDEX_SEQUENCE, dims);

    b.item(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, |s| {
        s.item(tags::PIXEL_MEASURES_SEQUENCE, |m| {
            m.ds(tags::PIXEL_SPACING, &g.pixel_spacing)
                .ds(tags::SLICE_THICKNESS, &[meta.slice_thickness.unwrap_or(g.slice_spacing)])
                .ds(tags::SPACING_BETWEEN_SLICES, &[g.slice_spacing]);
        })
        .item(tags::PLANE_ORIENTATION_SEQUENCE, |o| {
            o.ds(tags::IMAGE_ORIENTATION_PATIENT, &g.iop);
        })
        .item(tags::MR_IMAGE_FRAME_TYPE_SEQUENCE, |f| {
            f.str(tags::FRAME_TYPE, VR::CS, "DERIVED\\PRIMARY\\VOLUME\\NONE")
                .str(tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME")
                .str(tags::VOLUMETRIC_PROPERTIES, VR::CS, "VOLUME")
                .str(tags::VOLUME_BASED_CALCULATION_TECHNIQUE, VR::CS, "NONE")
                .str(tags::COMPLEX_IMAGE_COMPONENT, VR::CS, "MAGNITUDE")
                .str(tags::ACQUISITION_CONTRAST, VR::CS, contrast);
        })
        .item(tags::FRAME_ANATOMY_SEQUENCE, |a| {
            a.item(tags::ANATOMIC_REGION_SEQUENCE, |c| code(c, "39723000", "SCT", "Sacroiliac joint")).str(
                tags::FRAME_LATERALITY,
                VR::CS,
                "B",
            );
        })
        .item(tags::MR_ECHO_SEQUENCE, |e| {
            e.fd(tags::EFFECTIVE_ECHO_TIME, &[meta.echo_time]);
        })
        .item(tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE, |t| {
            t.ds(tags::REPETITION_TIME, &[meta.repetition_time])
                .ds(tags::FLIP_ANGLE, &[meta.flip_angle])
                .is(tags::ECHO_TRAIN_LENGTH, meta.echo_train_length)
                .us(tags::RF_ECHO_TRAIN_LENGTH, meta.echo_train_length.clamp(0, u16::MAX as i64) as u16)
                .us(tags::GRADIENT_ECHO_TRAIN_LENGTH, 0)
                .item(tags::SPECIFIC_ABSORPTION_RATE_SEQUENCE, |r| {
                    r.str(tags::SPECIFIC_ABSORPTION_RATE_DEFINITION, VR::CS, "IEC_WHOLE_BODY")
                        .fd(tags::SPECIFIC_ABSORPTION_RATE_VALUE, &[0.0]);
                });
            let modes = ["STATIC FIELD", "RF", "GRADIENT"]
                .iter()
                .map(|m| {
                    let mut o = Builder::new();
                    o.str(tags::OPERATING_MODE_TYPE, VR::CS, m).str(tags::OPERATING_MODE, VR::CS, "IEC_NORMAL");
                    o.build()
                })
                .collect();
            t.seq(tags::OPERATING_MODE_SEQUENCE, modes);
        })
        .item(tags::FRAME_VOILUT_SEQUENCE, |w| {
            w.ds(tags::WINDOW_CENTER, &[center]).ds(tags::WINDOW_WIDTH, &[width]);
        });
    });

    let per_frame: Vec<_> = (0..n)
        .map(|k| {
            let a = &vol.affine;
            let ipp = [0, 1, 2].map(|r| a[r][2] * k as f64 + a[r][3]);
            let r = vol.slice_rescale(k);
            let mut f = Builder::new();
            f.item(tags::FRAME_CONTENT_SEQUENCE, |c| {
                c.str(tags::FRAME_ACQUISITION_DATE_TIME, VR::DT, &datetime)
                    .str(tags::FRAME_REFERENCE_DATE_TIME, VR::DT, &datetime)
                    .fd(tags::FRAME_ACQUISITION_DURATION, &[0.0])
                    .str(tags::STACK_ID, VR::SH, "1")
                    .ul(tags::IN_STACK_POSITION_NUMBER, &[k as u32 + 1])
                    .ul(tags::DIMENSION_INDEX_VALUES, &[1, k as u32 + 1]);
            })
            .item(tags::PLANE_POSITION_SEQUENCE, |p| {
                p.ds(tags::IMAGE_POSITION_PATIENT, &ipp);
            })
            .item(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |t| {
                t.ds(tags::RESCALE_INTERCEPT, &[r.intercept]).ds(tags::RESCALE_SLOPE, &[r.slope]).str(
                    tags::RESCALE_TYPE,
                    VR::LO,
                    "US",
                );
            });
            f.build()
        })
        .collect();
    b.seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);

    // All frames, one after the other.
    let mut all: Vec<i16> = Vec::with_capacity(vol.samples.len());
    for k in 0..n {
        if let StoredSamples::I16(v) = vol.frame(k) {
            all.extend(v);
        }
    }
    b.put(pixel_data(StoredSamples::I16(all)));

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ensure_dir(dir)?;
    }
    write_all(vec![(path.to_path_buf(), with_file_meta(b.build())?)])?;
    Ok(())
}
