//! One summary per series: what `fmseg series` lists and the selection rules look at.

use serde::Serialize;

use super::geometry::{self, SliceRef};
use super::header::FileHeader;
use super::weighting::t1_evidence;

/// A summary of one series found under a path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesInfo {
    /// SeriesInstanceUID.
    pub uid: String,
    pub study_uid: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub modality: String,
    pub description: String,
    pub series_number: Option<i64>,
    pub protocol_name: String,
    pub sequence_name: String,
    /// PatientID: kept for grouping, never serialized (reports and listings carry no patient
    /// identity unless a command is asked to: `fmseg series --include-phi`).
    #[serde(skip_serializing)]
    pub patient_id: String,
    /// Files in the series.
    pub files: usize,
    /// Slices (frames) in the series.
    pub slices: usize,
    pub rows: u16,
    pub cols: u16,
    /// `[spacing between rows, spacing between columns]` in mm, as in DICOM PixelSpacing.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Step between slices from their positions (`None` when the stack is inconsistent).
    pub slice_spacing: Option<f64>,
    pub slice_thickness: Option<f64>,
    /// "axial", "oblique axial (12 deg)", "sagittal", ... of the first slice.
    pub orientation: String,
    /// Angle in degrees between the slice normal and the S-I axis (first slice).
    pub tilt_from_axial_deg: Option<f64>,
    /// Whether every slice has the same orientation (a 3-plane localizer does not).
    pub single_orientation: bool,
    pub image_type: Vec<String>,
    pub echo_time: Option<f64>,
    pub repetition_time: Option<f64>,
    pub t1_weighted: Option<bool>,
    /// What the T1 verdict rests on.
    pub t1_evidence: String,
    /// An Enhanced (multi-frame) object.
    pub multiframe: bool,
    pub transfer_syntaxes: Vec<String>,
    /// Why the series cannot be loaded as one grid (missing slice, duplicates, ...), if so.
    pub problem: Option<String>,
    /// Something a user should know about how the series was put together, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SeriesInfo {
    /// A short name for messages: `UID (description)`.
    pub fn label(&self) -> String {
        if self.description.is_empty() {
            self.uid.clone()
        } else {
            format!("{} ({})", self.uid, self.description)
        }
    }

    pub fn is_mr(&self) -> bool {
        self.modality.eq_ignore_ascii_case("MR")
    }
}

/// Slice references of a series' files, in file order then frame order.
pub fn slice_refs(files: &[FileHeader]) -> Vec<SliceRef<'_>> {
    files
        .iter()
        .flat_map(|h| {
            h.frames.iter().map(move |f| SliceRef {
                path: h.path.clone(),
                frame: f,
                multiframe: h.number_of_frames > 1 || h.is_enhanced(),
                rows: h.rows,
                cols: h.cols,
            })
        })
        .collect()
}

/// Summarise one series (its files share a SeriesInstanceUID; there is at least one).
pub fn summarize(uid: &str, files: &[FileHeader]) -> SeriesInfo {
    let refs = slice_refs(files);
    let h0 = &files[0];
    let f0 = refs.first().map(|r| r.frame);
    let first_dirs = f0.and_then(|f| f.orientation).and_then(|o| geometry::directions(&o).ok());
    let (orientation, tilt) = match first_dirs {
        Some((r, c)) => {
            let (l, t) = geometry::orientation_label(geometry::cross(r, c));
            (l, Some(t))
        }
        None => ("unknown".to_string(), None),
    };
    let single_orientation = match f0.and_then(|f| f.orientation) {
        Some(o0) => refs.iter().all(|r| {
            r.frame
                .orientation
                .is_some_and(|o| o.iter().zip(&o0).all(|(a, b)| (a - b).abs() <= geometry::ORIENTATION_TOLERANCE))
        }),
        None => false,
    };
    let (slice_spacing, problem) = match geometry::stack(uid, &refs) {
        Ok(s) => (Some(s.slice_spacing), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let echo_time = f0.and_then(|f| f.echo_time);
    let repetition_time = f0.and_then(|f| f.repetition_time);
    let t1 = t1_evidence(
        &h0.series_description,
        &h0.protocol_name,
        &h0.sequence_name,
        echo_time,
        repetition_time,
        h0.inversion_time,
    );
    let mut transfer_syntaxes: Vec<String> = files.iter().map(|h| h.transfer_syntax.clone()).collect();
    transfer_syntaxes.sort();
    transfer_syntaxes.dedup();
    SeriesInfo {
        uid: uid.to_string(),
        study_uid: h0.study_uid.clone(),
        frame_of_reference_uid: h0.frame_of_reference_uid.clone(),
        modality: h0.modality.clone(),
        description: h0.series_description.clone(),
        series_number: h0.series_number,
        protocol_name: h0.protocol_name.clone(),
        sequence_name: h0.sequence_name.clone(),
        patient_id: h0.patient_id.clone(),
        files: files.len(),
        slices: refs.len(),
        rows: h0.rows,
        cols: h0.cols,
        pixel_spacing: f0.and_then(|f| f.pixel_spacing),
        slice_spacing,
        slice_thickness: f0.and_then(|f| f.slice_thickness),
        orientation,
        tilt_from_axial_deg: tilt,
        single_orientation,
        image_type: h0.image_type.clone(),
        echo_time,
        repetition_time,
        t1_weighted: t1.t1_weighted,
        t1_evidence: t1.evidence,
        multiframe: files.iter().any(|h| h.is_enhanced() || h.number_of_frames > 1),
        transfer_syntaxes,
        problem,
        note: files.iter().any(|h| h.series_uid_missing).then(|| {
            "its files have no SeriesInstanceUID: grouped by StudyInstanceUID, SeriesNumber and directory \
             (fmseg's fallback)"
                .to_string()
        }),
    }
}
