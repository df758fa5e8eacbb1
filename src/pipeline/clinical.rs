//! The clinical variables the classifier's clinical branch takes, as the paper's Table 1 records
//! them: age, sex, HLA-B27, CRP and ESR, each of which may be missing. [`Clinical`] holds one
//! patient's values, read from a JSON file ([`Clinical::from_json_file`]) or, for a cohort, from
//! a CSV with one row per case ([`read_cases_csv`]); [`Clinical::features`] is the fixed-length
//! vector the network sees.
//!
//! Readers are strict: an unknown key or column, a value of the wrong type or one no patient can
//! have is an error naming the file, the field (and the line, in a CSV) and the value, because a
//! silently dropped `crp` column or a CRP typed in mg/dl would feed the classifier a plausible but
//! wrong patient.

use crate::error::{Error, Result};
use crate::io::csv::Csv;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "F")]
    Female,
}

impl Sex {
    /// The DICOM Patient's Sex code (and the spelling of JSON and CSV files): "M" or "F".
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "M",
            Sex::Female => "F",
        }
    }
}

/// One patient's clinical variables; `None` is "not recorded".
///
/// Serialises (serde) to the JSON that [`Clinical::from_json_file`] reads back.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Clinical {
    pub age_years: Option<f64>,
    pub sex: Option<Sex>,
    /// `Some(true)`: HLA-B27 positive.
    pub hla_b27: Option<bool>,
    pub crp_mg_per_l: Option<f64>,
    pub esr_mm_per_h: Option<f64>,
}

/// The keys of the JSON object and the clinical columns of the CSV.
pub const CLINICAL_KEYS: [&str; 5] = ["age_years", "sex", "hla_b27", "crp_mg_per_l", "esr_mm_per_h"];

// Plausibility limits: beyond them the value is a typing or unit error (CRP in mg/dl would be
// ten times too small, so it cannot be caught; one in nmol/l, about 95 times too large, is).
pub const AGE_MAX_YEARS: f64 = 120.0;
pub const CRP_MAX_MG_PER_L: f64 = 1000.0;
pub const ESR_MAX_MM_PER_H: f64 = 200.0;

// Feature scaling. Centres are round values near Table 1's cohort (median age 26, CRP 7 mg/l
// so ln(1 + 7) = 2.08, ESR 20 mm/h so ln(1 + 20) = 3.04) and scales keep the features of order
// one; they are part of the network's input contract, so they never change for a trained model.
pub const AGE_CENTRE_YEARS: f64 = 30.0;
pub const AGE_SCALE_YEARS: f64 = 10.0;
pub const LOG_CRP_CENTRE: f64 = 2.0;
pub const LOG_CRP_SCALE: f64 = 1.0;
pub const LOG_ESR_CENTRE: f64 = 3.0;
pub const LOG_ESR_SCALE: f64 = 1.0;
/// The `male` feature when sex is not recorded: halfway, so it leans neither way.
pub const SEX_MISSING: f32 = 0.5;

/// The classifier's clinical inputs (its catalog's width).
pub use crate::model::catalog::CLINICAL_FEATURES;
pub const FEATURE_NAMES: [&str; CLINICAL_FEATURES] = [
    "age_z",
    "male",
    "hla_b27_positive",
    "hla_b27_negative",
    "hla_b27_missing",
    "log_crp_z",
    "crp_missing",
    "log_esr_z",
    "esr_missing",
];

impl Clinical {
    /// The clinical branch's input, in the order of [`FEATURE_NAMES`].
    ///
    /// Missing values are imputed with the centre (a z-score of 0) and flagged by their own
    /// indicator, so a missing value contributes nothing but its indicator's weight, and the
    /// network can learn whether "not measured" itself means something (HLA-B27 is often not
    /// tested when axSpA is not suspected; hence a one-hot of three rather than one 0/1 feature).
    /// CRP and ESR are roughly log-normal across patients: on a log scale one very high value
    /// does not dominate and `ln(1 + x)` keeps a 0 finite.
    pub fn features(&self) -> [f32; CLINICAL_FEATURES] {
        let z = |v: Option<f64>, f: fn(f64) -> f64, centre: f64, scale: f64| {
            v.map_or(0.0, |x| ((f(x) - centre) / scale) as f32)
        };
        let missing = |present: bool| if present { 0.0 } else { 1.0 };
        [
            z(self.age_years, |a| a, AGE_CENTRE_YEARS, AGE_SCALE_YEARS),
            match self.sex {
                Some(Sex::Male) => 1.0,
                Some(Sex::Female) => 0.0,
                None => SEX_MISSING,
            },
            (self.hla_b27 == Some(true)) as u8 as f32,
            (self.hla_b27 == Some(false)) as u8 as f32,
            missing(self.hla_b27.is_some()),
            z(self.crp_mg_per_l, f64::ln_1p, LOG_CRP_CENTRE, LOG_CRP_SCALE),
            missing(self.crp_mg_per_l.is_some()),
            z(self.esr_mm_per_h, f64::ln_1p, LOG_ESR_CENTRE, LOG_ESR_SCALE),
            missing(self.esr_mm_per_h.is_some()),
        ]
    }

    /// Reads a JSON object with any of [`CLINICAL_KEYS`]; an absent key or `null` is missing.
    pub fn from_json_file(path: &Path) -> Result<Clinical> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Clinical::from_json_str(&text, path)
    }

    /// As [`Clinical::from_json_file`], from text; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Clinical> {
        let bad = |msg: String| Error::format(origin, msg);
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(bad(format!("expected a JSON object of clinical variables, found {}", kind(&value))));
        };
        if let Some(key) = map.keys().find(|k| !CLINICAL_KEYS.contains(&k.as_str())) {
            return Err(bad(format!("unknown key \"{key}\" (accepted: {})", CLINICAL_KEYS.join(", "))));
        }
        let get = |key: &str| map.get(key).filter(|v| !v.is_null());
        let field = |key: &str, msg: String| bad(format!("{key} = {}: {msg}", map.get(key).unwrap_or(&Value::Null)));
        let number = |key: &str| -> Result<Option<f64>> {
            match get(key) {
                None => Ok(None),
                Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| field(key, "not a number".into())),
                Some(v) => Err(field(key, format!("expected a number, found {}", kind(v)))),
            }
        };
        let word = |key: &str, what: &str| -> Result<Option<&str>> {
            match get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(v) => Err(field(key, format!("expected {what}, found {}", kind(v)))),
            }
        };
        let hla_b27 = match get("hla_b27") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => Some(parse_hla_b27(s).map_err(|m| field("hla_b27", m))?),
            Some(v) => {
                let msg = format!("expected \"positive\", \"negative\" or a boolean, found {}", kind(v));
                return Err(field("hla_b27", msg));
            }
        };
        let opt = |key: &str, v: Option<f64>, check: fn(f64) -> std::result::Result<f64, String>| {
            v.map(check).transpose().map_err(|m| field(key, m))
        };
        Ok(Clinical {
            age_years: opt("age_years", number("age_years")?, check_age)?,
            sex: word("sex", "\"M\" or \"F\"")?.map(parse_sex).transpose().map_err(|m| field("sex", m))?,
            hla_b27,
            crp_mg_per_l: opt("crp_mg_per_l", number("crp_mg_per_l")?, check_crp)?,
            esr_mm_per_h: opt("esr_mm_per_h", number("esr_mm_per_h")?, check_esr)?,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// Value checks shared by the JSON and CSV readers; the message says what was wrong, the caller
// adds the file, line and field.

fn check_age(a: f64) -> std::result::Result<f64, String> {
    if a.is_finite() && (0.0..=AGE_MAX_YEARS).contains(&a) {
        Ok(a)
    } else {
        Err(format!("age must be between 0 and {AGE_MAX_YEARS} years"))
    }
}

fn check_lab(x: f64, max: f64, unit: &str) -> std::result::Result<f64, String> {
    if !x.is_finite() || x < 0.0 {
        Err(format!("must be a finite number >= 0 {unit}"))
    } else if x > max {
        Err(format!("above {max} {unit}: not a plausible value (wrong unit?)"))
    } else {
        Ok(x)
    }
}

fn check_crp(x: f64) -> std::result::Result<f64, String> {
    check_lab(x, CRP_MAX_MG_PER_L, "mg/l")
}

fn check_esr(x: f64) -> std::result::Result<f64, String> {
    check_lab(x, ESR_MAX_MM_PER_H, "mm/h")
}

fn parse_sex(s: &str) -> std::result::Result<Sex, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "m" | "male" => Ok(Sex::Male),
        "f" | "female" => Ok(Sex::Female),
        _ => Err("expected \"M\", \"F\", \"male\" or \"female\"".into()),
    }
}

fn parse_hla_b27(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "positive" | "true" => Ok(true),
        "negative" | "false" => Ok(false),
        _ => Err("expected \"positive\" or \"negative\"".into()),
    }
}

fn parse_label(s: &str) -> std::result::Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "axspa" | "1" => Ok(true),
        "non-axspa" | "0" => Ok(false),
        _ => Err("expected \"axSpA\", \"non-axSpA\", 1 or 0".into()),
    }
}

fn parse_number(s: &str) -> std::result::Result<f64, String> {
    s.parse::<f64>().map_err(|_| "not a number".to_string())
}

/// One row of a cohort CSV.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseRecord {
    pub id: String,
    /// `Some(true)`: axSpA; `None`: not known (a case to classify).
    pub label: Option<bool>,
    pub clinical: Clinical,
}

/// The columns of a cohort CSV besides [`CLINICAL_KEYS`].
pub const CASE_COLUMNS: [&str; 2] = ["id", "label"];

/// Reads a cohort CSV: a header row naming `id` (required), and any of `label` (`axSpA`,
/// `non-axSpA`, 1, 0) and [`CLINICAL_KEYS`], in any order; then one row per case. An empty
/// cell is missing. Fields may be double-quoted (RFC 4180: `""` is a quote inside one).
pub fn read_cases_csv(path: &Path) -> Result<Vec<CaseRecord>> {
    let bad = |msg: String| Error::format(path, msg);
    let csv = Csv::read(path)?;
    let header = &csv.header;
    let accepted = || CASE_COLUMNS.iter().chain(CLINICAL_KEYS.iter()).copied().collect::<Vec<_>>().join(", ");
    let mut col: HashMap<&str, usize> = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.as_str();
        if !CASE_COLUMNS.contains(&name) && !CLINICAL_KEYS.contains(&name) {
            return Err(bad(format!("line 1: unknown column \"{name}\" (accepted: {})", accepted())));
        }
        if col.insert(name, i).is_some() {
            return Err(bad(format!("line 1: column \"{name}\" appears twice")));
        }
    }
    if !col.contains_key("id") {
        return Err(bad(format!("line 1: no `id` column (columns: {})", header.join(", "))));
    }
    csv.check_widths()?;

    let mut cases = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, row) in &csv.rows {
        let line = *line;
        let cell = |name: &str| col.get(name).map(|&i| row[i].as_str()).filter(|s| !s.is_empty());
        // Parses column `name` with `parse`; an error names the line, column and cell.
        let get = |name: &str, parse: &dyn Fn(&str) -> std::result::Result<f64, String>| {
            cell(name).map(|s| parse(s).map_err(|m| bad(format!("line {line}: {name} = \"{s}\": {m}")))).transpose()
        };
        let flag = |name: &str, parse: fn(&str) -> std::result::Result<bool, String>| {
            cell(name).map(|s| parse(s).map_err(|m| bad(format!("line {line}: {name} = \"{s}\": {m}")))).transpose()
        };
        let Some(id) = cell("id") else {
            return Err(bad(format!("line {line}: id is empty")));
        };
        if let Some(first) = seen.insert(id.to_string(), line) {
            return Err(bad(format!("line {line}: id \"{id}\" already on line {first}")));
        }
        let sex = cell("sex")
            .map(|s| parse_sex(s).map_err(|m| bad(format!("line {line}: sex = \"{s}\": {m}"))))
            .transpose()?;
        cases.push(CaseRecord {
            id: id.to_string(),
            label: flag("label", parse_label)?,
            clinical: Clinical {
                age_years: get("age_years", &|s| parse_number(s).and_then(check_age))?,
                sex,
                hla_b27: flag("hla_b27", parse_hla_b27)?,
                crp_mg_per_l: get("crp_mg_per_l", &|s| parse_number(s).and_then(check_crp))?,
                esr_mm_per_h: get("esr_mm_per_h", &|s| parse_number(s).and_then(check_esr))?,
            },
        });
    }
    Ok(cases)
}
