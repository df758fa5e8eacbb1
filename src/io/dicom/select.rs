//! Choosing the series to load when a path holds several.
//!
//! By UID when the caller names one. Otherwise these rules, in order, each keeping only the
//! candidates that pass it when at least one does:
//! 1. one orientation across the series (a 3-plane localizer is not a volume);
//! 2. modality MR;
//! 3. axial-ish: slice normal within 45 degrees of the S-I axis;
//! 4. T1-weighted if that can be told (T1, then unknown, then other contrasts);
//! 5. most slices;
//! 6. ties: lowest SeriesNumber (missing numbers last), then the smallest UID (string order),
//!    so the choice never depends on file order.
//!
//! The reason names the rules that decided, so the user can see why and override it.

use std::path::Path;

use super::info::SeriesInfo;
use crate::error::dicom::{DResult, DicomError};

/// Largest angle (degrees) between slice normal and S-I for a series to count as axial-ish.
pub const AXIAL_MAX_TILT_DEG: f64 = 45.0;

/// How to pick a series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SeriesChoice {
    /// The rules in the module docs.
    #[default]
    Auto,
    /// The series with this SeriesInstanceUID.
    Uid(String),
    /// The path must hold exactly one series (several: [`DicomError::MixedSeries`]).
    Only,
}

/// Which series to load and what it must be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub choice: SeriesChoice,
    /// Refuse a non-MR series with [`DicomError::NotMr`] (the segment command sets this).
    pub require_mr: bool,
}

impl Selection {
    pub fn auto() -> Self {
        Selection::default()
    }
    pub fn uid(uid: impl Into<String>) -> Self {
        Selection { choice: SeriesChoice::Uid(uid.into()), require_mr: false }
    }
    pub fn only() -> Self {
        Selection { choice: SeriesChoice::Only, require_mr: false }
    }
    /// `--series UID` when given, else the rules.
    pub fn from_option(uid: Option<&str>) -> Self {
        uid.map_or_else(Selection::auto, Selection::uid)
    }
    pub fn require_mr(mut self) -> Self {
        self.require_mr = true;
        self
    }
}

/// The chosen series (index into the list given to [`choose`]) and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub index: usize,
    pub reason: String,
}

fn t1_rank(s: &SeriesInfo) -> u8 {
    match s.t1_weighted {
        Some(true) => 0,
        None => 1,
        Some(false) => 2,
    }
}

fn auto(series: &[SeriesInfo]) -> Choice {
    let mut cands: Vec<usize> = (0..series.len()).collect();
    let mut why: Vec<String> = Vec::new();
    let mut keep = |cands: &mut Vec<usize>, pass: &dyn Fn(&SeriesInfo) -> bool, what: &str| {
        let kept: Vec<usize> = cands.iter().copied().filter(|&i| pass(&series[i])).collect();
        if !kept.is_empty() && kept.len() < cands.len() {
            why.push(format!("{what} ({} of {} excluded)", cands.len() - kept.len(), cands.len()));
            *cands = kept;
        }
    };
    keep(&mut cands, &|s| s.single_orientation, "a single orientation");
    keep(&mut cands, &|s| s.is_mr(), "modality MR");
    keep(&mut cands, &|s| s.tilt_from_axial_deg.is_some_and(|t| t <= AXIAL_MAX_TILT_DEG), "axial-ish");
    let best_t1 = cands.iter().map(|&i| t1_rank(&series[i])).min().unwrap_or(1);
    let t1_what = match best_t1 {
        0 => "T1-weighted",
        1 => "contrast unknown, other contrasts excluded",
        _ => "no T1-weighted series",
    };
    keep(&mut cands, &|s| t1_rank(s) == best_t1, t1_what);
    let most = cands.iter().map(|&i| series[i].slices).max().unwrap_or(0);
    keep(&mut cands, &|s| s.slices == most, &format!("most slices ({most})"));
    cands.sort_by(|&a, &b| {
        let (sa, sb) = (&series[a], &series[b]);
        (sa.series_number.is_none(), sa.series_number, &sa.uid).cmp(&(
            sb.series_number.is_none(),
            sb.series_number,
            &sb.uid,
        ))
    });
    if cands.len() > 1 {
        why.push(format!("tie between {} series broken by lowest SeriesNumber, then UID", cands.len()));
    }
    let index = cands[0];
    let s = &series[index];
    let mut reason = if series.len() == 1 {
        "the only series".to_string()
    } else {
        format!("chosen among {} series: {}", series.len(), why.join("; "))
    };
    reason.push_str(&format!(
        " [{} {}, {}, {} slices, T1: {}]",
        s.modality,
        s.orientation,
        match s.t1_weighted {
            Some(true) => "T1-weighted",
            Some(false) => "not T1-weighted",
            None => "contrast unknown",
        },
        s.slices,
        s.t1_evidence
    ));
    Choice { index, reason }
}

/// Pick one of `series` (found under `path`, which names the error).
pub fn choose(path: &Path, series: &[SeriesInfo], sel: &Selection) -> DResult<Choice> {
    if series.is_empty() {
        return Err(DicomError::NoImages { path: path.to_path_buf(), skipped: 0, non_image: 0 });
    }
    let choice = match &sel.choice {
        SeriesChoice::Uid(uid) => {
            let uid = uid.trim();
            let index = series.iter().position(|s| s.uid == uid).ok_or_else(|| DicomError::SeriesNotFound {
                path: path.to_path_buf(),
                uid: uid.to_string(),
                available: series.iter().map(SeriesInfo::label).collect(),
            })?;
            Choice { index, reason: "named by --series".to_string() }
        }
        SeriesChoice::Only => {
            if series.len() > 1 {
                return Err(DicomError::MixedSeries {
                    path: path.to_path_buf(),
                    series: series.iter().map(SeriesInfo::label).collect(),
                });
            }
            Choice { index: 0, reason: "the only series".to_string() }
        }
        SeriesChoice::Auto => auto(series),
    };
    let s = &series[choice.index];
    if sel.require_mr && !s.is_mr() {
        return Err(DicomError::NotMr {
            uid: s.uid.clone(),
            description: s.description.clone(),
            modality: s.modality.clone(),
        });
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uid: &str, modality: &str, tilt: f64, t1: Option<bool>, slices: usize, number: Option<i64>) -> SeriesInfo {
        SeriesInfo {
            uid: uid.into(),
            study_uid: None,
            frame_of_reference_uid: None,
            modality: modality.into(),
            description: String::new(),
            series_number: number,
            protocol_name: String::new(),
            sequence_name: String::new(),
            patient_id: String::new(),
            files: slices,
            slices,
            rows: 8,
            cols: 8,
            pixel_spacing: Some([1.0, 1.0]),
            slice_spacing: Some(4.0),
            slice_thickness: None,
            orientation: String::new(),
            tilt_from_axial_deg: Some(tilt),
            single_orientation: true,
            image_type: vec![],
            echo_time: None,
            repetition_time: None,
            t1_weighted: t1,
            t1_evidence: String::new(),
            multiframe: false,
            transfer_syntaxes: vec![],
            problem: None,
            note: None,
        }
    }

    fn pick(series: &[SeriesInfo]) -> String {
        series[choose(Path::new("p"), series, &Selection::auto()).unwrap().index].uid.clone()
    }

    #[test]
    fn rules_in_order() {
        let mut loc = info("loc", "MR", 0.0, Some(true), 30, Some(1));
        loc.single_orientation = false;
        let ct = info("ct", "CT", 0.0, None, 50, Some(2));
        let sag = info("sag", "MR", 90.0, Some(true), 40, Some(3));
        let t2 = info("t2", "MR", 10.0, Some(false), 35, Some(4));
        let unknown = info("unk", "MR", 44.0, None, 12, Some(5));
        let t1 = info("t1", "MR", 5.0, Some(true), 20, Some(6));
        let t1b = info("t1b", "MR", 5.0, Some(true), 22, None);
        assert_eq!(pick(&[loc.clone(), ct.clone(), sag.clone(), t2.clone(), unknown.clone(), t1.clone()]), "t1");
        assert_eq!(pick(&[t1.clone(), t1b.clone()]), "t1b"); // most slices
        assert_eq!(pick(&[t2.clone(), unknown.clone()]), "unk"); // unknown contrast beats T2
        assert_eq!(pick(&[sag.clone(), ct.clone()]), "sag"); // MR beats CT
        assert_eq!(pick(std::slice::from_ref(&ct)), "ct");
        let e = choose(Path::new("p"), std::slice::from_ref(&ct), &Selection::auto().require_mr()).unwrap_err();
        assert!(matches!(e, DicomError::NotMr { .. }), "{e}");
        // Ties: lowest series number, missing numbers last, then UID.
        let a = info("1.9", "MR", 0.0, Some(true), 20, None);
        let b = info("1.10", "MR", 0.0, Some(true), 20, Some(7));
        let c = info("1.2", "MR", 0.0, Some(true), 20, Some(7));
        assert_eq!(pick(&[a.clone(), b.clone(), c.clone()]), "1.10");
        assert_eq!(pick(&[c, b, a]), "1.10");
        let only = [info("1.9", "MR", 0.0, None, 1, None), info("2.9", "MR", 0.0, None, 1, None)];
        assert!(matches!(choose(Path::new("p"), &only, &Selection::only()), Err(DicomError::MixedSeries { .. })));
    }
}
