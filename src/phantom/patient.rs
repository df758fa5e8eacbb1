//! The synthetic patient: diagnosis and the clinical variables the paper's cohort records
//! (age, sex, HLA-B27, CRP), drawn with cohort-like distributions (young adults with a tail of
//! older patients, male
//! predominance in axSpA, HLA-B27 mostly positive in axSpA, sometimes missing).

use super::rng::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Diagnosis {
    #[serde(rename = "axSpA")]
    AxSpA,
    #[serde(rename = "non-axSpA")]
    NonAxSpA,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "F")]
    Female,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    pub diagnosis: Diagnosis,
    pub age_years: u32,
    pub sex: Sex,
    /// `None`: not recorded (as for about one patient in eight in the paper's cohort).
    pub hla_b27_positive: Option<bool>,
    pub crp_mg_per_l: f64,
    /// Body habitus: 0 lean .. 1 obese (subcutaneous fat thickness).
    pub habitus: f64,
}

pub fn sample_patient(rng: &mut Rng, diagnosis: Diagnosis) -> Patient {
    let ax = diagnosis == Diagnosis::AxSpA;
    let sex = if rng.chance(if ax { 0.74 } else { 0.55 }) { Sex::Male } else { Sex::Female };
    // Young adults mostly (axSpA starts before 45), a tail of older patients.
    let age = if ax { rng.normal_clamped(31.0, 9.0, 16.0, 62.0) } else { rng.normal_clamped(35.0, 11.0, 16.0, 68.0) }
        .round() as u32;
    let hla = if rng.chance(0.12) { None } else { Some(rng.chance(if ax { 0.8 } else { 0.15 })) };
    // Log-normal CRP: median about 9 mg/l in axSpA, 3 mg/l otherwise.
    let crp = rng.normal(if ax { 9f64.ln() } else { 3f64.ln() }, 1.0).exp().clamp(0.1, 150.0);
    let habitus = rng.uniform(0.0, 1.0).powf(if sex == Sex::Female { 0.8 } else { 1.2 });
    Patient {
        diagnosis,
        age_years: age,
        sex,
        hla_b27_positive: hla,
        crp_mg_per_l: (crp * 10.0).round() / 10.0,
        habitus: (habitus * 1000.0).round() / 1000.0,
    }
}

/// The patient's clinical variables as the classifier's clinical branch reads them.
impl From<&Patient> for crate::pipeline::clinical::Clinical {
    fn from(p: &Patient) -> Self {
        use crate::pipeline::clinical::{Clinical, Sex as S};
        Clinical {
            age_years: Some(p.age_years as f64),
            sex: Some(match p.sex {
                Sex::Male => S::Male,
                Sex::Female => S::Female,
            }),
            hla_b27: p.hla_b27_positive,
            crp_mg_per_l: Some(p.crp_mg_per_l),
            esr_mm_per_h: None,
        }
    }
}
