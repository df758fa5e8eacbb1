//! Telling whether a series looks T1-weighted, from what scanners actually write. Text first
//! (SeriesDescription, then ProtocolName, then SequenceName: "T1 TSE", "t1_tse_tra",
//! "sT1W_SE"), then timing (short TR and short TE). The answer is `None` when nothing decides.

use serde::Serialize;

/// The verdict and the evidence it rests on (for the selection reason).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct T1Evidence {
    pub t1_weighted: Option<bool>,
    pub evidence: String,
}

/// What a name says about contrast: `Some(true)` T1, `Some(false)` another contrast.
fn from_text(text: &str) -> Option<bool> {
    let lower = text.to_ascii_lowercase();
    let mut t1 = false;
    let mut other = false;
    for tok in lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|t| !t.is_empty()) {
        // A token may carry a prefix letter ("st1w", "wt1") or a suffix ("t1w", "t1tse", "t1fs").
        let core = tok.strip_prefix('s').filter(|r| r.starts_with("t1") || r.starts_with("t2")).unwrap_or(tok);
        if core.starts_with("t1") && !core[2..].starts_with(|c: char| c.is_ascii_digit()) {
            t1 = true;
        } else if (core.starts_with("t2") && !core[2..].starts_with(|c: char| c.is_ascii_digit()))
            || ["pd", "pdw", "pdfs", "stir", "tirm", "dwi", "dti", "adc", "trace", "swi"].contains(&core)
            || core.starts_with("stir")
            || core.starts_with("tirm")
        {
            other = true;
        }
    }
    match (t1, other) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

/// Decide from the series' texts and timing (ms).
pub fn t1_evidence(
    description: &str,
    protocol: &str,
    sequence: &str,
    echo_time: Option<f64>,
    repetition_time: Option<f64>,
    inversion_time: Option<f64>,
) -> T1Evidence {
    for (field, text) in [("SeriesDescription", description), ("ProtocolName", protocol), ("SequenceName", sequence)] {
        if let Some(v) = from_text(text) {
            return T1Evidence { t1_weighted: Some(v), evidence: format!("{field} {text:?}") };
        }
    }
    if let (Some(te), Some(tr)) = (echo_time, repetition_time) {
        let timing = format!("TR {tr} ms, TE {te} ms");
        // A short-tau inversion (STIR) nulls fat: not the T1 contrast the model was trained on.
        if inversion_time.is_some_and(|ti| ti > 0.0 && ti < 250.0) && tr > 1000.0 {
            return T1Evidence {
                t1_weighted: Some(false),
                evidence: format!("{timing}, TI {} ms (STIR)", inversion_time.unwrap_or(0.0)),
            };
        }
        if tr < 1000.0 && te < 30.0 {
            return T1Evidence { t1_weighted: Some(true), evidence: timing };
        }
        if tr >= 1500.0 {
            return T1Evidence { t1_weighted: Some(false), evidence: timing };
        }
    }
    T1Evidence { t1_weighted: None, evidence: "no contrast in names or timing".to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for t in ["T1 TSE", "t1_tse_tra", "sT1W_SE", "AX T1 FS", "T1W", "cor_t1-weighted", "T1FLAIR"] {
            assert_eq!(from_text(t), Some(true), "{t}");
        }
        for t in ["T2 TSE", "t2_stir", "STIR cor", "PD fs", "tirm_tra", "sT2W", "DWI b800"] {
            assert_eq!(from_text(t), Some(false), "{t}");
        }
        for t in ["", "SIJ routine", "T1 vs T2", "t10", "*tse2d1_3", "localizer"] {
            assert_eq!(from_text(t), None, "{t}");
        }
    }

    #[test]
    fn timing() {
        assert_eq!(t1_evidence("", "", "", Some(12.0), Some(550.0), None).t1_weighted, Some(true));
        assert_eq!(t1_evidence("", "", "", Some(90.0), Some(4000.0), None).t1_weighted, Some(false));
        assert_eq!(t1_evidence("", "", "", Some(30.0), Some(5000.0), Some(150.0)).t1_weighted, Some(false));
        assert_eq!(t1_evidence("", "", "", Some(12.0), None, None).t1_weighted, None);
        // Text wins over timing.
        let e = t1_evidence("T2 TSE", "", "", Some(12.0), Some(550.0), None);
        assert_eq!((e.t1_weighted, e.evidence.as_str()), (Some(false), "SeriesDescription \"T2 TSE\""));
    }
}
