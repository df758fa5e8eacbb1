//! `fmseg phantom`: writes a set of synthetic SIJ studies with their ground truth.
//!
//! Per case `DIR/case_XXX/`: `dicom/*.dcm` (the study as a classic MR Image Storage series:
//! int16 samples with the vendor-like rescale, the oblique geometry, the patient's sex, age,
//! field strength and timing), `fm_mask.nii.gz` (the ground-truth mask on the image grid,
//! uint8), `manifest.json` (patient, acquisition, scanner effects, lesions), `clinical.json`
//! (the patient's variables as `fmseg classify --clinical` reads them), optionally
//! `preview.png`; and `DIR/manifest.json` listing the set, `DIR/cases.csv` (id, diagnosis,
//! clinical variables: what `train-classifier --data DIR` and `evaluate --labels` read) (extended by later runs of the same
//! set with `--first`; existing case directories are only replaced with `--force`). Each case
//! is written under a temporary name and renamed when complete. Case `i` has seed
//! `phantom::rng::case_seed(S, i)` and its diagnosis is axSpA exactly when
//! `floor((i + 1) F) > floor(i F)`, so any prefix of the set holds the requested fraction.

use crate::io::dicom::{write_mr_series, MrSeriesMeta, Rescale, StoredVolume};
use crate::io::nifti::{self, WriteType};
use crate::phantom::manifest::{write_json, SetEntry, SetManifest, GENERATOR_VERSION};
use crate::phantom::patient::Diagnosis;
use crate::phantom::preview::{even_slices, montage, write_png};
use crate::phantom::rng::case_seed;
use crate::phantom::{generate_case, Case, PhantomConfig};
use crate::pipeline::clinical::Clinical;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct PhantomArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the set.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of cases.
    #[arg(long, default_value_t = 1)]
    pub cases: usize,
    /// Fraction of axSpA cases (the rest are non-axSpA).
    #[arg(long, default_value_t = 0.7)]
    pub axspa_fraction: f64,
    /// Index of the first case (to extend a set or make it in parts).
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// No motion ghosts, blur/ringing or wrap-around.
    #[arg(long)]
    pub no_artefacts: bool,
    /// Also write `preview.png` (a montage of slices with the mask outlined) per case.
    #[arg(long)]
    pub preview: bool,
    /// Replace case directories that already exist (otherwise that is an error).
    #[arg(long)]
    pub force: bool,
}

/// The diagnosis of case `i` for an axSpA fraction `f`.
pub fn diagnosis_of(i: usize, f: f64) -> Diagnosis {
    if ((i + 1) as f64 * f).floor() > (i as f64 * f).floor() {
        Diagnosis::AxSpA
    } else {
        Diagnosis::NonAxSpA
    }
}

pub fn run(args: PhantomArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.axspa_fraction) || args.axspa_fraction.is_nan() {
        bail!("--axspa-fraction must be between 0 and 1, got {}", args.axspa_fraction);
    }
    if args.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let ids: Vec<String> = (args.first..args.first + args.cases).map(|i| format!("case_{i:03}")).collect();
    if !args.force {
        if let Some(id) = ids.iter().find(|id| args.out.join(id).exists()) {
            bail!("{} already exists (use --force to replace it)", args.out.join(id).display());
        }
    }
    // An existing set manifest: extended when it is the same set, else only replaced on --force.
    let set_path = args.out.join("manifest.json");
    let previous = match std::fs::read_to_string(&set_path) {
        Ok(text) => {
            let p: SetManifest = serde_json::from_str(&text)
                .with_context(|| format!("{} exists but is not a phantom set manifest", set_path.display()))?;
            let same = p.set_seed == args.seed
                && p.generator_version == GENERATOR_VERSION
                && p.axspa_fraction == args.axspa_fraction;
            match (same, args.force) {
                (true, _) => Some(p),
                (false, true) => None,
                (false, false) => bail!(
                    "{} lists a different set (seed {}, axSpA fraction {}, generator {}): use another --out, \
                     or --force to start a new set there",
                    set_path.display(),
                    p.set_seed,
                    p.axspa_fraction,
                    p.generator_version
                ),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", set_path.display())),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let mut entries = Vec::new();
    for i in args.first..args.first + args.cases {
        let seed = case_seed(args.seed, i as u64);
        let cfg = PhantomConfig {
            axspa_fraction: args.axspa_fraction,
            diagnosis: Some(diagnosis_of(i, args.axspa_fraction)),
            artefacts: !args.no_artefacts,
            ideal: false,
        };
        let t = Instant::now();
        let case = generate_case(seed, &cfg);
        let id = ids[i - args.first].clone();
        // Written under a temporary name and renamed when complete: a failure leaves no
        // half-written case behind.
        let tmp = args.out.join(format!(".{id}.tmp-{}", std::process::id()));
        let dest = args.out.join(&id);
        let written = write_case(&tmp, &case, args.preview).and_then(|files| {
            if dest.exists() {
                std::fs::remove_dir_all(&dest).with_context(|| format!("cannot replace {}", dest.display()))?;
            }
            std::fs::rename(&tmp, &dest).with_context(|| format!("cannot move {} into place", dest.display()))?;
            Ok(files)
        });
        let files = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e.context(format!("writing {}", dest.display())));
            }
        };
        eprintln!(
            "{id}: seed {seed}, {:?}, {} lesion(s), {:.2} ml FM, {:?} voxels, {:.0} ms",
            case.manifest.patient.diagnosis,
            case.manifest.lesions.len(),
            case.manifest.fm_volume_ml,
            case.image.dims,
            t.elapsed().as_secs_f64() * 1e3
        );
        entries.push(SetEntry {
            id: id.clone(),
            seed,
            diagnosis: case.manifest.patient.diagnosis,
            lesions: case.manifest.lesions.len(),
            fm_volume_ml: case.manifest.fm_volume_ml,
            dims: case.image.dims,
            files: files.iter().map(|f| format!("{id}/{f}")).collect(),
        });
    }
    // Cases made earlier into the same set (with `--first`) stay listed.
    let mut cases = previous.map(|p| p.cases).unwrap_or_default();
    cases.retain(|c| !entries.iter().any(|e| e.id == c.id));
    cases.extend(entries);
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    let set = SetManifest {
        generator: "fmseg-phantom".into(),
        generator_version: GENERATOR_VERSION,
        set_seed: args.seed,
        axspa_fraction: args.axspa_fraction,
        cases,
    };
    write_json(&set_path, &set)?;
    write_cases_csv(&args.out, &set)?;
    Ok(())
}

/// Each case's `clinical.json` in a case directory.
pub const CLINICAL_FILE: &str = "clinical.json";

/// `cases.csv` of the set (id, label, clinical variables): what `fmseg train-classifier --data
/// DIR` and `fmseg evaluate --labels` read.
fn write_cases_csv(dir: &Path, set: &SetManifest) -> anyhow::Result<()> {
    let mut text = String::from("id,label,age_years,sex,hla_b27,crp_mg_per_l,esr_mm_per_h\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for c in &set.cases {
        let path = dir.join(&c.id).join(CLINICAL_FILE);
        let k = Clinical::from_json_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let label = if c.diagnosis == Diagnosis::AxSpA { "axSpA" } else { "non-axSpA" };
        let sex = k.sex.map_or("", |s| s.code());
        let hla = match k.hla_b27 {
            Some(true) => "positive",
            Some(false) => "negative",
            None => "",
        };
        text.push_str(&format!(
            "{},{label},{},{sex},{hla},{},{}\n",
            c.id,
            opt(k.age_years),
            opt(k.crp_mg_per_l),
            opt(k.esr_mm_per_h)
        ));
    }
    let path = dir.join("cases.csv");
    crate::phantom::manifest::write_atomic(&path, text.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Writes one case's files into `dir` (created); returns their names relative to `dir`.
pub fn write_case(dir: &Path, case: &Case, preview: bool) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::new();
    let m = &case.manifest;
    let a = &m.acquisition;
    let rescale = Rescale { slope: m.scanner.rescale_slope, intercept: m.scanner.rescale_intercept };
    let stored = StoredVolume::new(case.image.dims, case.stored.clone(), case.image.affine, vec![rescale])
        .context("the generated image cannot be stored as a DICOM series")?;
    let id = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let (series, protocol) = match a.vendor.as_str() {
        "GE-like" => ("AX T1 FSE OBL", "SIJ AX T1"),
        "Philips-like" => ("T1W_TSE_TRA", "T1W_TSE_TRA"),
        "Canon-like" => ("T1 FSE AX OBL", "T1_FSE_AX"),
        _ => ("t1_tse_tra_obl", "t1_tse_tra"),
    };
    let meta = MrSeriesMeta {
        uid_seed: format!("fmseg-phantom-v{GENERATOR_VERSION}-{}", case.seed),
        patient_name: format!("PHANTOM^{}", id.to_uppercase()),
        patient_id: format!("PH{:016X}", case.seed),
        patient_birth_date: format!("{}0101", 2024 - m.patient.age_years as i64),
        patient_sex: m.patient.sex.code().into(),
        study_description: "SIJ MRI (synthetic)".into(),
        series_description: series.into(),
        protocol_name: protocol.into(),
        manufacturer: "fmseg phantom".into(),
        model_name: a.vendor.clone(),
        echo_time: a.echo_time_ms,
        repetition_time: a.repetition_time_ms,
        echo_train_length: a.echo_train_length as i64,
        magnetic_field_strength: a.field_strength_t,
        slice_thickness: Some(a.slice_thickness_mm),
        ..MrSeriesMeta::default()
    };
    let dcm = write_mr_series(&stored, &meta, &dir.join("dicom"))?;
    files.extend(dcm.iter().filter_map(|p| p.file_name()).map(|f| format!("dicom/{}", f.to_string_lossy())));
    nifti::write(dir.join("fm_mask.nii.gz"), &case.mask_volume(), WriteType::U8)?;
    files.push("fm_mask.nii.gz".to_string());
    write_json(&dir.join("manifest.json"), &case.manifest)?;
    files.push("manifest.json".to_string());
    // The patient's variables as `fmseg classify --clinical` reads them.
    write_json(&dir.join(CLINICAL_FILE), &Clinical::from(&m.patient))?;
    files.push(CLINICAL_FILE.to_string());
    if preview {
        let slices = even_slices(case.image.dims[2], 8);
        let img = montage(&case.image, Some(&case.mask), &slices, 4, 2);
        write_png(&dir.join("preview.png"), &img)?;
        files.push("preview.png".to_string());
    }
    Ok(files)
}
