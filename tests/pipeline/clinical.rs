//! `fmseg::pipeline::clinical`: the JSON and CSV readers on real files (round trips, and each
//! error naming the file, the field and, in a CSV, the line) and the feature encoding, missing
//! values included, with its constants pinned.

use fmseg::pipeline::clinical::*;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The error of reading `text` as a clinical JSON file, which must name the file and each of
/// `needles`.
fn json_err(text: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "clin.json", text);
    let e = Clinical::from_json_file(&p).expect_err(text).to_string();
    assert!(e.contains(&p.display().to_string()), "{text}: {e}");
    for n in needles {
        assert!(e.contains(n), "{text}: {e:?} lacks {n:?}");
    }
}

fn csv_err(text: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "cases.csv", text);
    let e = read_cases_csv(&p).expect_err(text).to_string();
    assert!(e.contains(&p.display().to_string()), "{text}: {e}");
    for n in needles {
        assert!(e.contains(n), "{text}: {e:?} lacks {n:?}");
    }
}

#[test]
fn clinical_json_reads_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let full = write(
        dir.path(),
        "a.json",
        r#"{"age_years": 27, "sex": "male", "hla_b27": "Positive", "crp_mg_per_l": 7.5, "esr_mm_per_h": 20}"#,
    );
    let c = Clinical::from_json_file(&full).unwrap();
    assert_eq!(
        c,
        Clinical {
            age_years: Some(27.0),
            sex: Some(Sex::Male),
            hla_b27: Some(true),
            crp_mg_per_l: Some(7.5),
            esr_mm_per_h: Some(20.0)
        }
    );
    for (sex, want) in [("M", Sex::Male), ("f", Sex::Female), ("FEMALE", Sex::Female), ("Male", Sex::Male)] {
        let p = write(dir.path(), "s.json", &format!(r#"{{"sex": "{sex}"}}"#));
        assert_eq!(Clinical::from_json_file(&p).unwrap().sex, Some(want), "{sex}");
    }
    for (hla, want) in [("\"negative\"", Some(false)), ("true", Some(true)), ("false", Some(false)), ("null", None)] {
        let p = write(dir.path(), "h.json", &format!(r#"{{"hla_b27": {hla}}}"#));
        assert_eq!(Clinical::from_json_file(&p).unwrap().hla_b27, want, "{hla}");
    }
    // Absent and null are both missing.
    let p = write(dir.path(), "e.json", "{}");
    assert_eq!(Clinical::from_json_file(&p).unwrap(), Clinical::default());
    let p =
        write(dir.path(), "n.json", r#"{"age_years": null, "sex": null, "crp_mg_per_l": null, "esr_mm_per_h": null}"#);
    assert_eq!(Clinical::from_json_file(&p).unwrap(), Clinical::default());
}

#[test]
fn clinical_json_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for c in [
        Clinical {
            age_years: Some(41.5),
            sex: Some(Sex::Female),
            hla_b27: Some(false),
            crp_mg_per_l: Some(0.0),
            esr_mm_per_h: Some(200.0),
        },
        Clinical { age_years: Some(120.0), sex: None, hla_b27: None, crp_mg_per_l: Some(1000.0), esr_mm_per_h: None },
        Clinical::default(),
    ] {
        let p = write(dir.path(), "r.json", &serde_json::to_string_pretty(&c).unwrap());
        assert_eq!(Clinical::from_json_file(&p).unwrap(), c);
    }
}

#[test]
fn clinical_json_errors_name_file_and_field() {
    json_err(r#"{"age": 30}"#, &["\"age\"", "age_years, sex, hla_b27, crp_mg_per_l, esr_mm_per_h"]);
    json_err(r#"{"age_years": 121}"#, &["age_years", "121"]);
    json_err(r#"{"age_years": -1}"#, &["age_years", "-1"]);
    json_err(r#"{"age_years": "thirty"}"#, &["age_years", "thirty", "a string"]);
    json_err(r#"{"age_years": [30]}"#, &["age_years", "an array"]);
    json_err(r#"{"sex": "x"}"#, &["sex", "\"x\""]);
    json_err(r#"{"sex": 1}"#, &["sex", "a number"]);
    json_err(r#"{"hla_b27": "maybe"}"#, &["hla_b27", "maybe"]);
    json_err(r#"{"hla_b27": 1}"#, &["hla_b27", "a number"]);
    json_err(r#"{"crp_mg_per_l": -0.5}"#, &["crp_mg_per_l", "-0.5"]);
    json_err(r#"{"crp_mg_per_l": 1000.1}"#, &["crp_mg_per_l", "1000.1"]);
    json_err(r#"{"crp_mg_per_l": "7"}"#, &["crp_mg_per_l", "a string"]);
    json_err(r#"{"esr_mm_per_h": -3}"#, &["esr_mm_per_h", "-3"]);
    json_err(r#"{"esr_mm_per_h": 201}"#, &["esr_mm_per_h", "201"]);
    json_err(r#"{"esr_mm_per_h": true}"#, &["esr_mm_per_h", "a boolean"]);
    json_err(r#"[1, 2]"#, &["object", "an array"]);
    json_err(r#"{"age_years": 30"#, &["not JSON"]);
    let e = Clinical::from_json_file(Path::new("/nonexistent/clin.json")).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/clin.json"), "{e}");
}

#[test]
fn clinical_feature_constants() {
    assert_eq!(CLINICAL_FEATURES, 9);
    assert_eq!(
        FEATURE_NAMES,
        [
            "age_z",
            "male",
            "hla_b27_positive",
            "hla_b27_negative",
            "hla_b27_missing",
            "log_crp_z",
            "crp_missing",
            "log_esr_z",
            "esr_missing"
        ]
    );
    assert_eq!((AGE_CENTRE_YEARS, AGE_SCALE_YEARS), (30.0, 10.0));
    assert_eq!((LOG_CRP_CENTRE, LOG_CRP_SCALE), (2.0, 1.0));
    assert_eq!((LOG_ESR_CENTRE, LOG_ESR_SCALE), (3.0, 1.0));
    assert_eq!(SEX_MISSING, 0.5);
}

#[test]
fn clinical_features_encode_values_and_missing() {
    let c = Clinical {
        age_years: Some(45.0),
        sex: Some(Sex::Male),
        hla_b27: Some(true),
        crp_mg_per_l: Some(19.0),
        esr_mm_per_h: Some(9.0),
    };
    let f = c.features();
    let want = [1.5, 1.0, 1.0, 0.0, 0.0, (20f64.ln() - 2.0) as f32, 0.0, (10f64.ln() - 3.0) as f32, 0.0];
    assert_eq!(f, want);

    let f = Clinical { sex: Some(Sex::Female), hla_b27: Some(false), ..Clinical::default() }.features();
    assert_eq!(f, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    // Everything missing: only the indicators (and the neutral sex) are non-zero.
    assert_eq!(Clinical::default().features(), [0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    // A CRP of 0 is finite on the log scale.
    let f = Clinical { crp_mg_per_l: Some(0.0), ..Clinical::default() }.features();
    assert_eq!((f[5], f[6]), (-2.0, 0.0));
}

#[test]
fn clinical_csv_reads_cases() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "cases.csv",
        "\u{feff}label,id,age_years,sex,hla_b27,crp_mg_per_l,esr_mm_per_h\r\n\
         axSpA,p001,27,M,positive,7.5,20\r\n\
         non-axSpA,\"p,002\",45.5,female,Negative,,\r\n\
         ,p003,,,,0,0\r\n\
         1,p004,30,f,true,1000,200\r\n\
         0, p005 ,,m,false,2,3\r\n\r\n",
    );
    let cases = read_cases_csv(&p).unwrap();
    let ids: Vec<_> = cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["p001", "p,002", "p003", "p004", "p005"]);
    let labels: Vec<_> = cases.iter().map(|c| c.label).collect();
    assert_eq!(labels, [Some(true), Some(false), None, Some(true), Some(false)]);
    assert_eq!(
        cases[0].clinical,
        Clinical {
            age_years: Some(27.0),
            sex: Some(Sex::Male),
            hla_b27: Some(true),
            crp_mg_per_l: Some(7.5),
            esr_mm_per_h: Some(20.0)
        }
    );
    assert_eq!(
        cases[1].clinical,
        Clinical { age_years: Some(45.5), sex: Some(Sex::Female), hla_b27: Some(false), ..Clinical::default() }
    );
    assert_eq!(cases[2].clinical, Clinical { crp_mg_per_l: Some(0.0), esr_mm_per_h: Some(0.0), ..Clinical::default() });
    assert_eq!(cases[3].clinical.hla_b27, Some(true));
    assert_eq!(cases[4].clinical.sex, Some(Sex::Male));

    // Only `id` is required; a header alone is an empty cohort.
    let p = write(dir.path(), "ids.csv", "id\na\nb\n");
    let cases = read_cases_csv(&p).unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!((cases[1].id.as_str(), cases[1].label, &cases[1].clinical), ("b", None, &Clinical::default()));
    let p = write(dir.path(), "header.csv", "id,label\n");
    assert!(read_cases_csv(&p).unwrap().is_empty());
}

#[test]
fn clinical_csv_errors_name_file_line_and_field() {
    csv_err("id,age,sex\na,1,M\n", &["line 1", "\"age\"", "id, label, age_years"]);
    csv_err("label,sex\naxSpA,M\n", &["line 1", "`id`"]);
    csv_err("id,sex,sex\na,M,M\n", &["line 1", "\"sex\"", "twice"]);
    csv_err("", &["empty"]);
    csv_err("id,sex\na,M\nb\n", &["line 3", "1 fields", "has 2"]);
    csv_err("id,sex\na,M\nb,F,x\n", &["line 3", "3 fields"]);
    csv_err("id,sex\na,M\na,F\n", &["line 3", "\"a\"", "line 2"]);
    csv_err("id,sex\n,M\n", &["line 2", "id"]);
    csv_err("id,label\na,axspa\nb,maybe\n", &["line 3", "label", "maybe"]);
    csv_err("id,age_years\na,30\nb,130\n", &["line 3", "age_years", "130"]);
    csv_err("id,age_years\na,thirty\n", &["line 2", "age_years", "thirty", "not a number"]);
    csv_err("id,age_years\na,NaN\n", &["line 2", "age_years", "NaN"]);
    csv_err("id,sex\na,X\n", &["line 2", "sex", "\"X\""]);
    csv_err("id,hla_b27\na,pos\n", &["line 2", "hla_b27", "pos"]);
    csv_err("id,crp_mg_per_l\na,-1\n", &["line 2", "crp_mg_per_l", "-1"]);
    csv_err("id,crp_mg_per_l\na,inf\n", &["line 2", "crp_mg_per_l", "inf"]);
    csv_err("id,crp_mg_per_l\na,1500\n", &["line 2", "crp_mg_per_l", "1500"]);
    csv_err("id,esr_mm_per_h\na,250\n", &["line 2", "esr_mm_per_h", "250"]);
    // A quoted field with a line break: the line numbers after it still count physical lines.
    csv_err("id,sex\n\"a\nb\",M\nc,Q\n", &["line 4", "sex", "\"Q\""]);
    csv_err("id,sex\n\"a,M\n", &["line 2", "not closed"]);
}
