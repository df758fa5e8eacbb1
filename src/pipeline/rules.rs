//! Which series of an archive to segment: selection rules in MONAI Deploy's format, extended.
//!
//! A rules file is JSON:
//!
//! ```json
//! {"selections": [
//!   {"name": "T1 axial SIJ",
//!    "conditions": {"Modality": "MR", "SeriesDescription": "t1.*(tra|ax)",
//!                   "SliceThickness": [2.5, 5], "ImageType": ["ORIGINAL"],
//!                   "min_slices": 12, "axial": true, "t1_weighted": true}}
//! ]}
//! ```
//!
//! As in MONAI Deploy's `DICOMSeriesSelectorOperator`: a string is a regular expression searched
//! in the attribute's value, case-insensitive; a number must equal the value; a list of strings
//! must all be among a multi-valued attribute's values (case-insensitive). Extended: a list of
//! two numbers is an inclusive range; `min_slices`, `max_tilt_deg` (slice normal to the S-I
//! axis), `axial` (tilt at most 45 degrees), `t1_weighted` and `single_orientation` test what
//! fmseg works out about the series (as `fmseg series` shows it). A series is selected by the
//! first selection whose conditions all hold; an attribute the series lacks fails its
//! condition. Unknown attributes are an error when the file is read, naming the supported ones.
//!
//! Without a rules file ([`Rules::automatic`]) each study gets the one series `fmseg segment`
//! would choose in it ([`crate::io::dicom::select`]), and only when it is MR.

use std::path::Path;

use regex::RegexBuilder;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::dicom::{choose, Selection, SeriesInfo};

/// DICOM attributes the rules can test (keywords), and fmseg's own series properties.
pub const ATTRIBUTES: &[&str] = &[
    "Modality",
    "SeriesDescription",
    "ProtocolName",
    "SequenceName",
    "SeriesNumber",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "ImageType",
    "EchoTime",
    "RepetitionTime",
    "SliceThickness",
    "Rows",
    "Columns",
];
pub const PROPERTIES: &[&str] = &["min_slices", "max_tilt_deg", "axial", "t1_weighted", "single_orientation"];

/// One condition on one attribute.
#[derive(Clone, Debug)]
enum Test {
    Regex(regex::Regex),
    Number(f64),
    Range(f64, f64),
    AllOf(Vec<String>),
    Flag(bool),
}

#[derive(Clone, Debug)]
struct SelectionRule {
    name: String,
    conditions: Vec<(String, Test)>,
}

/// Parsed selection rules.
#[derive(Clone, Debug)]
pub struct Rules {
    selections: Vec<SelectionRule>,
    automatic: bool,
}

/// What the rules decided for one series.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Selected, by the named selection (or the automatic choice, with its reason).
    Selected(String),
    /// Not selected, and why.
    Skipped(String),
}

/// An attribute's value, as the rules see it.
enum Attr {
    Text(String),
    Number(f64),
    Many(Vec<String>),
    Missing,
}

fn attribute(s: &SeriesInfo, name: &str) -> Attr {
    let text = |v: &str| if v.is_empty() { Attr::Missing } else { Attr::Text(v.to_string()) };
    let num = |v: Option<f64>| v.map_or(Attr::Missing, Attr::Number);
    match name {
        "Modality" => text(&s.modality),
        "SeriesDescription" => text(&s.description),
        "ProtocolName" => text(&s.protocol_name),
        "SequenceName" => text(&s.sequence_name),
        "SeriesNumber" => num(s.series_number.map(|n| n as f64)),
        "SeriesInstanceUID" => text(&s.uid),
        "StudyInstanceUID" => s.study_uid.as_deref().map_or(Attr::Missing, text),
        "FrameOfReferenceUID" => s.frame_of_reference_uid.as_deref().map_or(Attr::Missing, text),
        "ImageType" => Attr::Many(s.image_type.clone()),
        "EchoTime" => num(s.echo_time),
        "RepetitionTime" => num(s.repetition_time),
        "SliceThickness" => num(s.slice_thickness),
        "Rows" => Attr::Number(s.rows as f64),
        "Columns" => Attr::Number(s.cols as f64),
        _ => Attr::Missing,
    }
}

fn holds(s: &SeriesInfo, name: &str, t: &Test) -> bool {
    const EPS: f64 = 1e-6;
    match (name, t) {
        ("min_slices", Test::Number(n)) => s.slices as f64 >= *n,
        ("max_tilt_deg", Test::Number(d)) => s.tilt_from_axial_deg.is_some_and(|t| t <= *d),
        ("axial", Test::Flag(want)) => {
            s.tilt_from_axial_deg.is_some_and(|t| t <= crate::io::dicom::select::AXIAL_MAX_TILT_DEG) == *want
        }
        ("t1_weighted", Test::Flag(want)) => s.t1_weighted == Some(*want),
        ("single_orientation", Test::Flag(want)) => s.single_orientation == *want,
        _ => match (attribute(s, name), t) {
            (Attr::Text(v), Test::Regex(r)) => r.is_match(&v),
            (Attr::Many(v), Test::Regex(r)) => r.is_match(&v.join("\\")),
            (Attr::Number(v), Test::Regex(r)) => r.is_match(&v.to_string()),
            (Attr::Number(v), Test::Number(n)) => (v - n).abs() <= EPS * n.abs().max(1.0),
            (Attr::Text(v), Test::Number(n)) => v.trim().parse::<f64>().is_ok_and(|v| (v - n).abs() <= EPS),
            (Attr::Number(v), Test::Range(lo, hi)) => (*lo - EPS..=*hi + EPS).contains(&v),
            (Attr::Many(v), Test::AllOf(want)) => want.iter().all(|w| v.iter().any(|x| x.eq_ignore_ascii_case(w))),
            (Attr::Text(v), Test::AllOf(want)) => want.iter().all(|w| v.eq_ignore_ascii_case(w)),
            _ => false,
        },
    }
}

fn describe(t: &Test) -> String {
    match t {
        Test::Regex(r) => format!("/{}/", r.as_str()),
        Test::Number(n) => n.to_string(),
        Test::Range(a, b) => format!("[{a}, {b}]"),
        Test::AllOf(v) => format!("{v:?}"),
        Test::Flag(b) => b.to_string(),
    }
}

impl Rules {
    /// `fmseg segment`'s automatic choice, one series per study.
    pub fn automatic() -> Rules {
        Rules { selections: Vec::new(), automatic: true }
    }

    /// Read a rules file (see the module docs); every problem names the file and the place.
    pub fn read(path: &Path) -> Result<Rules> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        Rules::from_json(&v).map_err(|m| Error::format(path, m))
    }

    pub fn from_json(v: &Value) -> std::result::Result<Rules, String> {
        let sels = v
            .get("selections")
            .and_then(Value::as_array)
            .ok_or("expected an object with a \"selections\" list (MONAI Deploy's series selection rules)")?;
        if sels.is_empty() {
            return Err("\"selections\" is empty: no series would be selected".into());
        }
        let mut selections = Vec::new();
        for (n, s) in sels.iter().enumerate() {
            let name =
                s.get("name").and_then(Value::as_str).map_or_else(|| format!("selection {}", n + 1), String::from);
            let conds = s
                .get("conditions")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("selection \"{name}\": expected a \"conditions\" object"))?;
            let mut conditions = Vec::new();
            for (key, val) in conds {
                let at = |m: String| format!("selection \"{name}\", condition \"{key}\": {m}");
                let test = if PROPERTIES.contains(&key.as_str()) {
                    match (key.as_str(), val) {
                        ("min_slices" | "max_tilt_deg", Value::Number(x)) => Test::Number(x.as_f64().unwrap_or(0.0)),
                        ("axial" | "t1_weighted" | "single_orientation", Value::Bool(b)) => Test::Flag(*b),
                        _ => {
                            return Err(at(format!(
                                "expected a {}",
                                if key.starts_with("m") { "number" } else { "true or false" }
                            )))
                        }
                    }
                } else if ATTRIBUTES.contains(&key.as_str()) {
                    parse_test(val).map_err(at)?
                } else {
                    return Err(at(format!(
                        "not an attribute the rules can test; supported: {}, and fmseg's {}",
                        ATTRIBUTES.join(", "),
                        PROPERTIES.join(", ")
                    )));
                };
                conditions.push((key.clone(), test));
            }
            selections.push(SelectionRule { name, conditions });
        }
        Ok(Rules { selections, automatic: false })
    }

    /// A decision for every series of `series` (all of one archive).
    pub fn decide(&self, series: &[SeriesInfo]) -> Vec<Decision> {
        if self.automatic {
            return automatic(series);
        }
        series
            .iter()
            .map(|s| {
                for sel in &self.selections {
                    if sel.conditions.iter().all(|(k, t)| holds(s, k, t)) {
                        return Decision::Selected(format!("selection \"{}\"", sel.name));
                    }
                }
                // the first condition each selection failed
                let why: Vec<String> = self
                    .selections
                    .iter()
                    .filter_map(|sel| {
                        sel.conditions
                            .iter()
                            .find(|(k, t)| !holds(s, k, t))
                            .map(|(k, t)| format!("\"{}\": {k} is not {}", sel.name, describe(t)))
                    })
                    .collect();
                Decision::Skipped(format!("no selection matches ({})", why.join("; ")))
            })
            .collect()
    }
}

fn parse_test(v: &Value) -> std::result::Result<Test, String> {
    match v {
        Value::String(s) => RegexBuilder::new(s)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map(Test::Regex)
            .map_err(|e| format!("not a regular expression: {e}")),
        Value::Number(n) => Ok(Test::Number(n.as_f64().unwrap_or(f64::NAN))),
        Value::Array(a) if a.len() == 2 && a.iter().all(Value::is_number) => {
            let (lo, hi) = (a[0].as_f64().unwrap_or(f64::NAN), a[1].as_f64().unwrap_or(f64::NAN));
            if lo <= hi {
                Ok(Test::Range(lo, hi))
            } else {
                Err(format!("the range [{lo}, {hi}] is empty"))
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => {
            Ok(Test::AllOf(a.iter().filter_map(Value::as_str).map(String::from).collect()))
        }
        _ => Err("expected a string (regular expression), a number, [min, max] or a list of strings".into()),
    }
}

/// Per study (StudyInstanceUID; series without one each form their own), the series
/// `fmseg segment` would choose, if it is MR.
fn automatic(series: &[SeriesInfo]) -> Vec<Decision> {
    let mut out = vec![Decision::Skipped(String::new()); series.len()];
    let mut studies: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, s) in series.iter().enumerate() {
        studies.entry(s.study_uid.clone().unwrap_or_else(|| format!("(no study) {}", s.uid))).or_default().push(i);
    }
    for (study, members) in studies {
        let infos: Vec<SeriesInfo> = members.iter().map(|&i| series[i].clone()).collect();
        let chosen = choose(Path::new(&study), &infos, &Selection::auto()).ok();
        for (n, &i) in members.iter().enumerate() {
            out[i] = match &chosen {
                Some(c) if c.index == n && series[i].is_mr() => Decision::Selected(format!("automatic: {}", c.reason)),
                Some(c) if c.index == n => {
                    Decision::Skipped(format!("modality {} (the study has no MR series)", series[i].modality))
                }
                Some(c) => Decision::Skipped(format!(
                    "not the series segment would choose in study {study} (it chooses {})",
                    infos[c.index].label()
                )),
                None => Decision::Skipped("no series could be chosen in its study".into()),
            };
        }
    }
    out
}

/// A series summary with the given identity and plausible SIJ T1 acquisition values (tests
/// and the rules fuzz target).
pub fn series_info(uid: &str, study: &str, modality: &str, desc: &str, slices: usize, tilt: f64) -> SeriesInfo {
    SeriesInfo {
        uid: uid.into(),
        study_uid: Some(study.into()),
        frame_of_reference_uid: None,
        modality: modality.into(),
        description: desc.into(),
        series_number: Some(1),
        protocol_name: String::new(),
        sequence_name: String::new(),
        patient_id: String::new(),
        files: slices,
        slices,
        rows: 256,
        cols: 256,
        pixel_spacing: Some([0.8, 0.8]),
        slice_spacing: Some(4.0),
        slice_thickness: Some(4.0),
        orientation: "axial".into(),
        tilt_from_axial_deg: Some(tilt),
        single_orientation: true,
        image_type: vec!["ORIGINAL".into(), "PRIMARY".into()],
        echo_time: Some(12.0),
        repetition_time: Some(600.0),
        t1_weighted: Some(desc.to_ascii_lowercase().contains("t1")),
        t1_evidence: String::new(),
        multiframe: false,
        transfer_syntaxes: vec![],
        problem: None,
        note: None,
    }
}

/// Sample series to apply rules to (the rules fuzz target): MR T1 and T2 of one study, a CT
/// and a coronal MR of another.
pub fn sample_series() -> Vec<SeriesInfo> {
    vec![
        series_info("1.2.3.1", "1.2.3", "MR", "T1 TSE tra", 20, 10.0),
        series_info("1.2.3.2", "1.2.3", "MR", "T2 STIR tra", 20, 10.0),
        series_info("1.2.4.1", "1.2.4", "CT", "Pelvis", 200, 0.0),
        series_info("1.2.4.2", "1.2.4", "MR", "t1_tse_cor", 20, 80.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monai_style_conditions() {
        let series = [
            series_info("1", "a", "MR", "T1 TSE tra", 20, 10.0),
            series_info("2", "a", "MR", "T2 STIR tra", 20, 10.0),
            series_info("3", "b", "CT", "Pelvis", 200, 0.0),
            series_info("4", "b", "MR", "t1_tse_cor", 20, 80.0),
        ];
        let r = Rules::from_json(&serde_json::json!({"selections": [
            {"name": "t1", "conditions": {"Modality": "mr", "SeriesDescription": "T1", "SliceThickness": [3, 5],
                                          "ImageType": ["original"], "axial": true, "min_slices": 12}}
        ]}))
        .unwrap();
        let d = r.decide(&series);
        assert_eq!(d[0], Decision::Selected("selection \"t1\"".into()));
        for (i, why) in [(1, "SeriesDescription"), (2, "Modality"), (3, "axial")] {
            match &d[i] {
                Decision::Skipped(m) => assert!(m.contains(why), "{i}: {m}"),
                x => panic!("{i}: {x:?}"),
            }
        }
        // a number equals; t1_weighted is fmseg's verdict
        let r =
            Rules::from_json(&serde_json::json!({"selections": [{"conditions": {"Rows": 256, "t1_weighted": true}}]}))
                .unwrap();
        let picked: Vec<bool> = r.decide(&series).iter().map(|d| matches!(d, Decision::Selected(_))).collect();
        assert_eq!(picked, [true, false, false, true]);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (v, want) in [
            (serde_json::json!({}), "\"selections\""),
            (serde_json::json!({"selections": []}), "empty"),
            (serde_json::json!({"selections": [{"conditions": {"PatientNam": "x"}}]}), "supported: Modality"),
            (serde_json::json!({"selections": [{"conditions": {"Modality": "("}}]}), "regular expression"),
            (serde_json::json!({"selections": [{"conditions": {"SliceThickness": [5, 3]}}]}), "empty"),
            (serde_json::json!({"selections": [{"conditions": {"axial": 1}}]}), "true or false"),
        ] {
            let e = Rules::from_json(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn automatic_takes_one_mr_series_per_study() {
        let series = [
            series_info("1", "a", "MR", "T1 TSE tra", 20, 10.0),
            series_info("2", "a", "MR", "T2 STIR tra", 20, 10.0),
            series_info("3", "b", "CT", "Pelvis", 200, 0.0),
        ];
        let d = Rules::automatic().decide(&series);
        assert!(matches!(&d[0], Decision::Selected(r) if r.contains("automatic")));
        assert!(matches!(&d[1], Decision::Skipped(r) if r.contains("chooses 1")));
        assert!(matches!(&d[2], Decision::Skipped(r) if r.contains("no MR")));
    }
}
