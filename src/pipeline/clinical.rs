//! The clinical variables of the classifier's clinical branch, as the paper's Table 1 records
//! them (age, sex, HLA-B27, CRP, ESR), read from a JSON file (`fmseg classify --clinical`) or a
//! `cases.csv` row, checked, and encoded as the network's 9 features.
//!
//! Encoding ([`Clinical::features`]): a missing value is imputed with the cohort's typical
//! value (a z-score of 0) and flagged by its own indicator, so it contributes nothing but the
//! indicator's learnt weight; CRP and ESR are log-normal, so they enter as `ln(1 + x)`,
//! centred and scaled by constants that put the paper's cohort near 0 with unit spread.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::catalog::CLINICAL_FEATURES;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "F")]
    Female,
}

/// One patient's variables; `None` is missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Clinical {
    pub age_years: Option<f64>,
    pub sex: Option<Sex>,
    /// `true` positive, `false` negative.
    pub hla_b27: Option<bool>,
    pub crp_mg_per_l: Option<f64>,
    pub esr_mm_per_h: Option<f64>,
}

/// The accepted fields, in the order of `cases.csv`'s optional columns.
pub const FIELDS: [&str; 5] = ["age_years", "sex", "hla_b27", "crp_mg_per_l", "esr_mm_per_h"];

/// The network's features, in order.
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

/// `age_z = (age - AGE_CENTRE) / AGE_SCALE` (the paper's cohort: median 28, IQR 23-34).
const AGE_CENTRE: f64 = 30.0;
const AGE_SCALE: f64 = 10.0;
/// `ln(1 + CRP mg/l)`: the cohort's median 7 gives about 2.
const LOG_CRP_CENTRE: f64 = 2.0;
/// `ln(1 + ESR mm/h)`: the cohort's median 20 gives about 3.
const LOG_ESR_CENTRE: f64 = 3.0;

/// Largest plausible values; anything above is a unit or typing error.
const MAX_AGE: f64 = 120.0;
const MAX_CRP: f64 = 1000.0;
const MAX_ESR: f64 = 200.0;

impl Clinical {
    /// The 9 features ([`FEATURE_NAMES`]; module docs).
    pub fn features(&self) -> [f32; CLINICAL_FEATURES] {
        let age = self.age_years.map_or(0.0, |a| (a - AGE_CENTRE) / AGE_SCALE);
        let male = match self.sex {
            Some(Sex::Male) => 1.0,
            Some(Sex::Female) => 0.0,
            None => 0.5,
        };
        let hla = |v: Option<bool>| {
            [(v == Some(true)) as u8 as f64, (v == Some(false)) as u8 as f64, v.is_none() as u8 as f64]
        };
        let log = |v: Option<f64>, centre: f64| v.map_or((0.0, 1.0), |x| ((1.0 + x).ln() - centre, 0.0));
        let (crp, crp_missing) = log(self.crp_mg_per_l, LOG_CRP_CENTRE);
        let (esr, esr_missing) = log(self.esr_mm_per_h, LOG_ESR_CENTRE);
        let [p, n, m] = hla(self.hla_b27);
        [age, male, p, n, m, crp, crp_missing, esr, esr_missing].map(|v| v as f32)
    }

    /// Reads a JSON object of [`FIELDS`] (each may be absent or null). Unknown keys, wrong
    /// types and impossible values are errors naming the file and the field.
    pub fn from_json_file(path: &Path) -> Result<Clinical> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not JSON: {e}")))?;
        let Value::Object(map) = v else {
            return Err(Error::format(path, "expected a JSON object of clinical variables"));
        };
        let mut c = Clinical::default();
        for (k, v) in &map {
            let bad = |why: String| Error::format(path, format!("field '{k}': {why}"));
            if v.is_null() {
                if !FIELDS.contains(&k.as_str()) {
                    return Err(unknown(path, k));
                }
                continue;
            }
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => return Err(bad(format!("{other} is not a value"))),
            };
            c.set(k, &text).map_err(|e| match e {
                SetError::Unknown => unknown(path, k),
                SetError::Bad(why) => bad(why),
            })?;
        }
        Ok(c)
    }

    /// Sets field `name` from its text form (a CSV cell, a JSON value); empty is missing.
    fn set(&mut self, name: &str, text: &str) -> std::result::Result<(), SetError> {
        let t = text.trim();
        let number = |max: f64, unit: &str| -> std::result::Result<Option<f64>, SetError> {
            if t.is_empty() {
                return Ok(None);
            }
            let v: f64 = t.parse().map_err(|_| SetError::Bad(format!("'{t}' is not a number")))?;
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                return Err(SetError::Bad(format!("{v} {unit} is impossible (expected 0 to {max})")));
            }
            Ok(Some(v))
        };
        match name {
            "age_years" => self.age_years = number(MAX_AGE, "years")?,
            "crp_mg_per_l" => self.crp_mg_per_l = number(MAX_CRP, "mg/l")?,
            "esr_mm_per_h" => self.esr_mm_per_h = number(MAX_ESR, "mm/h")?,
            "sex" => {
                self.sex = match t.to_ascii_lowercase().as_str() {
                    "" => None,
                    "m" | "male" => Some(Sex::Male),
                    "f" | "female" => Some(Sex::Female),
                    _ => return Err(SetError::Bad(format!("'{t}' is not M, F, male or female"))),
                }
            }
            "hla_b27" => {
                self.hla_b27 = match t.to_ascii_lowercase().as_str() {
                    "" | "missing" => None,
                    "positive" | "pos" | "+" | "true" | "1" => Some(true),
                    "negative" | "neg" | "-" | "false" | "0" => Some(false),
                    _ => return Err(SetError::Bad(format!("'{t}' is not positive or negative"))),
                }
            }
            _ => return Err(SetError::Unknown),
        }
        Ok(())
    }
}

enum SetError {
    Unknown,
    Bad(String),
}

fn unknown(path: &Path, k: &str) -> Error {
    Error::format(path, format!("unknown field '{k}' (the accepted ones: {})", FIELDS.join(", ")))
}

/// One row of `cases.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseRecord {
    pub id: String,
    /// `true`: axSpA; `None`: not given.
    pub label: Option<bool>,
    pub clinical: Clinical,
}

/// Reads `cases.csv`: a header with `id` (required), `label` (`axSpA`/`non-axSpA`/1/0, empty
/// unknown) and any of [`FIELDS`]; plain comma-separated cells (no quoting). Unknown columns,
/// duplicate ids, wrong cell counts and bad values are errors naming the file, line and field.
pub fn read_cases_csv(path: &Path) -> Result<Vec<CaseRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(Error::format(path, "empty: expected a header line with at least 'id'"));
    };
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    for c in &cols {
        if c != "id" && c != "label" && !FIELDS.contains(&c.as_str()) {
            return Err(Error::format(
                path,
                format!("unknown column '{c}' (the accepted ones: id, label, {})", FIELDS.join(", ")),
            ));
        }
    }
    let id_col = cols.iter().position(|c| c == "id").ok_or_else(|| Error::format(path, "no 'id' column"))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (n, line) in lines {
        let at = |why: String| Error::format(path, format!("line {}: {why}", n + 1));
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != cols.len() {
            return Err(at(format!("{} cells, the header has {}", cells.len(), cols.len())));
        }
        let id = cells[id_col].to_string();
        if id.is_empty() || id.contains(['/', '\\']) || id == "." || id == ".." {
            return Err(at(format!("id '{id}' must be a plain, non-empty name")));
        }
        if !seen.insert(id.clone()) {
            return Err(at(format!("duplicate id '{id}'")));
        }
        let mut rec = CaseRecord { id, label: None, clinical: Clinical::default() };
        for (c, cell) in cols.iter().zip(&cells) {
            match c.as_str() {
                "id" => {}
                "label" => {
                    rec.label = match cell.to_ascii_lowercase().as_str() {
                        "" => None,
                        "axspa" | "1" => Some(true),
                        "non-axspa" | "0" => Some(false),
                        _ => return Err(at(format!("label '{cell}' is not axSpA, non-axSpA, 1 or 0"))),
                    }
                }
                f => rec.clinical.set(f, cell).map_err(|e| match e {
                    SetError::Unknown => at(format!("unknown field '{f}'")),
                    SetError::Bad(why) => at(format!("field '{f}': {why}")),
                })?,
            }
        }
        out.push(rec);
    }
    if out.is_empty() {
        return Err(Error::format(path, "no cases below the header"));
    }
    Ok(out)
}
