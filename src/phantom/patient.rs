//! The synthetic patient: diagnosis and the clinical variables the paper's cohort records
//! (age, sex, HLA-B27, CRP, ESR), drawn with cohort-like distributions (young adults with a tail
//! of older patients, male predominance in axSpA, HLA-B27 mostly positive in axSpA, sometimes
//! missing; CRP and ESR log-normal, higher in axSpA and correlated with each other).
//!
//! ESR came after the others: it is drawn from its own stream ([`stream::ESR`]) so that every
//! case made before it kept all of its draws, images and other manifest fields bit for bit.

use super::rng::{stream, Rng};
use crate::pipeline::clinical::Clinical;
/// The one sex type of the project: the clinical variables' (same JSON spelling, "M" / "F").
pub use crate::pipeline::clinical::Sex;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Diagnosis {
    #[serde(rename = "axSpA")]
    AxSpA,
    #[serde(rename = "non-axSpA")]
    NonAxSpA,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    pub diagnosis: Diagnosis,
    pub age_years: u32,
    pub sex: Sex,
    /// `None`: not recorded (as for about one patient in eight in the paper's cohort).
    pub hla_b27_positive: Option<bool>,
    pub crp_mg_per_l: f64,
    /// Whole mm/h; `None`: not recorded (about one case in ten). Manifests written before ESR
    /// existed have no such key and read back as `None`.
    #[serde(default)]
    pub esr_mm_per_h: Option<f64>,
    /// Body habitus: 0 lean .. 1 obese (subcutaneous fat thickness).
    pub habitus: f64,
}

/// Draws the patient of case `seed`: everything but ESR from `rng` (the case's
/// [`stream::PATIENT`], after the diagnosis), ESR from the case's own [`stream::ESR`].
pub fn sample_patient(rng: &mut Rng, seed: u64, diagnosis: Diagnosis) -> Patient {
    let ax = diagnosis == Diagnosis::AxSpA;
    let sex = if rng.chance(if ax { 0.74 } else { 0.55 }) { Sex::Male } else { Sex::Female };
    // Young adults mostly (axSpA starts before 45), a tail of older patients.
    let age = if ax { rng.normal_clamped(31.0, 9.0, 16.0, 62.0) } else { rng.normal_clamped(35.0, 11.0, 16.0, 68.0) }
        .round() as u32;
    let hla = if rng.chance(0.12) { None } else { Some(rng.chance(if ax { 0.8 } else { 0.15 })) };
    // Log-normal CRP: median about 9 mg/l in axSpA, 3 mg/l otherwise.
    let crp_log_mean = if ax { 9f64.ln() } else { 3f64.ln() };
    let crp_log = rng.normal(crp_log_mean, 1.0);
    let crp = crp_log.exp().clamp(0.1, 150.0);
    let habitus = rng.uniform(0.0, 1.0).powf(if sex == Sex::Female { 0.8 } else { 1.2 });
    let esr = sample_esr(&mut Rng::new(seed, stream::ESR), ax, crp_log - crp_log_mean);
    Patient {
        diagnosis,
        age_years: age,
        sex,
        hla_b27_positive: hla,
        crp_mg_per_l: (crp * 10.0).round() / 10.0,
        esr_mm_per_h: esr,
        habitus: (habitus * 1000.0).round() / 1000.0,
    }
}

/// Log-normal ESR as in the paper's Table 1: median 20 mm/h, interquartile range 10..40 in a
/// cohort that is mostly axSpA (a log-scale SD of ln(40 / 10) / 1.349 = 1.03); non-axSpA lower
/// and narrower (median 12). Inflammation raises both CRP and ESR, so the log-ESR deviate shares
/// `ESR_CRP_CORRELATION` of the CRP deviate `crp_z`. Missing for about one case in ten.
fn sample_esr(rng: &mut Rng, ax: bool, crp_z: f64) -> Option<f64> {
    const ESR_MISSING: f64 = 0.10;
    const ESR_CRP_CORRELATION: f64 = 0.6;
    if rng.chance(ESR_MISSING) {
        return None;
    }
    let (median, sd) = if ax { (20.0f64, 1.0) } else { (12.0, 0.8) };
    let rho = ESR_CRP_CORRELATION;
    let z = rho * crp_z + (1.0 - rho * rho).sqrt() * rng.normal(0.0, 1.0);
    Some((median.ln() + sd * z).exp().clamp(1.0, 150.0).round())
}

/// The clinical branch's view of a synthetic patient (all recorded except, sometimes, HLA-B27
/// and ESR).
impl From<&Patient> for Clinical {
    fn from(p: &Patient) -> Clinical {
        Clinical {
            age_years: Some(p.age_years as f64),
            sex: Some(p.sex),
            hla_b27: p.hla_b27_positive,
            crp_mg_per_l: Some(p.crp_mg_per_l),
            esr_mm_per_h: p.esr_mm_per_h,
        }
    }
}
