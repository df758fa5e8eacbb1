//! `fmseg classify INPUT --out DIR`: axSpA or not, from a T1 SIJ study (DICOM series or
//! NIfTI), its FM mask (segmented here unless `--mask` gives one) and, with `--clinical`, the
//! patient's clinical variables. Writes `classification.json` (the probability, the label at
//! the model's threshold, which inputs were used, the models' checksums), `gradcam.nii.gz`
//! (Grad-CAM on the classifier's 192x192x16 input grid, with its world position),
//! `gradcam.png` (a montage of it over the crop with the FM outlined) and, when it segmented,
//! `fm_mask.nii.gz`. All outputs or none.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::cli::segment::{resolve_weights, Models, BUNDLED_WEIGHTS, WEIGHTS_ENV};
use crate::engine::classifier::{AnyClassifier, ClassifierWeights};
use crate::engine::Device;
use crate::io::nifti::{self, WriteType};
use crate::io::output_dir::OutputDir;
use crate::model::catalog::{CLINICAL_FEATURES, PATCH};
use crate::pipeline::classifier_input::{crop, ClassifierCrop, CropCentre};
use crate::pipeline::clinical::{Clinical, FEATURE_NAMES};
use crate::pipeline::segment::{self, SegmentConfig};
use crate::pipeline::{gradcam, overlay};
use crate::tensor::HostTensor;
use crate::volume::Volume;

/// The bundled classifiers, chosen by whether clinical variables are given.
pub const BUNDLED_IMAGE_CLASSIFIER: &str = "weights/fmseg-classifier-image.fmw";
pub const BUNDLED_CLINICAL_CLASSIFIER: &str = "weights/fmseg-classifier-clinical.fmw";
pub const CLASSIFICATION_FILE: &str = "classification.json";
const OUTPUTS: [&str; 4] = [CLASSIFICATION_FILE, "gradcam.nii.gz", "gradcam.png", "fm_mask.nii.gz"];

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// A DICOM series directory (or a directory of series) or a NIfTI image.
    pub input: PathBuf,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// The FM mask (NIfTI on the input's grid, 0/1) instead of segmenting.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Clinical variables (JSON: age_years, sex, hla_b27, crp_mg_per_l, esr_mm_per_h; any may be
    /// missing): uses the image+clinical classifier.
    #[arg(long)]
    pub clinical: Option<PathBuf>,
    /// Classifier weights (default: the bundled image or image+clinical one).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Segmentation weights (default: $FMSEG_WEIGHTS, else the bundled ones).
    #[arg(long)]
    pub weights: Vec<PathBuf>,
    /// Probability at or above which the label is axSpA (default: the classifier's model-card threshold).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// DICOM: the SeriesInstanceUID to use when the input holds several series.
    #[arg(long)]
    pub series: Option<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// CPU threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Serialize)]
struct ModelRef {
    path: String,
    sha256: String,
}

#[derive(Serialize)]
struct Classification {
    probability_axspa: f64,
    logit: f64,
    label: &'static str,
    threshold: f64,
    variant: &'static str,
    inputs: Inputs,
    classifier: ModelRef,
    segmenter: Option<Vec<ModelRef>>,
    crop: CropInfo,
    device: String,
    seconds: f64,
    notices: Vec<String>,
}

#[derive(Serialize)]
struct Inputs {
    image: String,
    mask: String,
    clinical: Option<String>,
    /// The clinical features as the network saw them (missing values imputed, indicators set).
    clinical_features: Option<std::collections::BTreeMap<&'static str, f32>>,
}

#[derive(Serialize)]
struct CropInfo {
    centre: CropCentre,
    fm_voxels_in_crop: usize,
    dims: [usize; 3],
}

pub fn run(a: ClassifyArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Everything cheap is checked before anything expensive runs.
    let clinical = match &a.clinical {
        Some(p) => Some(Clinical::from_json_file(p).map_err(flat)?),
        None => None,
    };
    let cls_path = a.classifier.clone().unwrap_or_else(|| {
        root.join(if clinical.is_some() { BUNDLED_CLINICAL_CLASSIFIER } else { BUNDLED_IMAGE_CLASSIFIER })
    });
    if !cls_path.is_file() {
        bail!("classifier weights {}: not a file (pass --classifier FILE)", cls_path.display());
    }
    let cls = ClassifierWeights::load(&cls_path).map_err(flat)?;
    match (cls.spec.clinical > 0, &clinical) {
        (true, None) => bail!(
            "{} is the image+clinical classifier: give the clinical variables with --clinical FILE.json, or use an \
             image-only classifier",
            cls_path.display()
        ),
        (false, Some(_)) => bail!(
            "{} is the image-only classifier: it cannot use --clinical; give an image+clinical classifier",
            cls_path.display()
        ),
        _ => {}
    }
    let threshold = match a.threshold {
        Some(t) if (0.0..=1.0).contains(&t) => t,
        Some(t) => bail!("--threshold {t} must be a probability in [0, 1]"),
        None => cls.threshold(&cls_path).map_err(flat)?,
    };
    let mut out = OutputDir::open(&a.out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;

    eprintln!("fmseg classify: reading {}", a.input.display());
    let loaded = segment::load_input(&a.input, a.series.as_deref()).map_err(flat)?;
    let mut notices = Vec::new();
    let (mask, mask_name, segmenter, segmented) = match &a.mask {
        Some(p) => {
            let m = nifti::read(p).map_err(flat).with_context(|| format!("--mask {}", p.display()))?;
            (m, p.display().to_string(), None, false)
        }
        None => {
            let bundled = root.join(BUNDLED_WEIGHTS);
            let choices = resolve_weights(&a.weights, std::env::var_os(WEIGHTS_ENV), &bundled)?;
            let models = Models::load(&choices, a.device, a.threads)?;
            notices.extend(models.info.notices.iter().cloned());
            eprintln!("fmseg classify: segmenting FM on {}", models.info.device);
            let refs = models
                .info
                .weights
                .iter()
                .map(|w| ModelRef { path: w.path.display().to_string(), sha256: w.sha256.clone() });
            let refs: Vec<ModelRef> = refs.collect();
            let r = models
                .segment(
                    loaded.clone(),
                    &SegmentConfig { series: a.series.clone(), ..SegmentConfig::default() },
                    &mut |_| {},
                )
                .map_err(flat)?;
            (r.mask, "predicted".to_string(), Some(refs), true)
        }
    };
    let mask_path = a.mask.clone().unwrap_or_else(|| a.input.clone());
    let c = crop(&loaded.image, &a.input, &mask, &mask_path, &SegmentConfig::default().preprocess).map_err(flat)?;

    let engine = AnyClassifier::new(a.device, a.threads, &cls).map_err(flat)?;
    let features = clinical.as_ref().map(|c| c.features());
    let clin_tensor = features.map(|f| HostTensor { shape: vec![1, CLINICAL_FEATURES, 1, 1, 1], data: f.to_vec() });
    let pass = engine.run(&c.tensor(), clin_tensor.as_ref()).map_err(flat)?;
    let logit = pass.logits[0] as f64;
    let p = 1.0 / (1.0 + (-logit).exp());
    let cam = gradcam::gradcam(&pass.features, 0, &cls.image_head().map_err(flat)?, PATCH).map_err(flat)?;
    let cam_vol = Volume { dims: PATCH, data: cam, affine: c.affine };
    let png = heat_png(&c, &cam_vol).map_err(flat)?;

    let result = Classification {
        probability_axspa: p,
        logit,
        label: if p >= threshold { "axSpA" } else { "non-axSpA" },
        threshold,
        variant: cls.spec.name(),
        inputs: Inputs {
            image: a.input.display().to_string(),
            mask: mask_name,
            clinical: a.clinical.as_ref().map(|p| p.display().to_string()),
            clinical_features: features.map(|f| FEATURE_NAMES.iter().copied().zip(f).collect()),
        },
        classifier: ModelRef { path: cls_path.display().to_string(), sha256: cls.sha256.clone() },
        segmenter,
        crop: CropInfo { centre: c.centre, fm_voxels_in_crop: c.fm_voxels, dims: c.dims },
        device: engine.device_name(),
        seconds: t0.elapsed().as_secs_f64(),
        notices: notices.clone(),
    };
    for n in &notices {
        eprintln!("fmseg classify: NOTICE: {n}");
    }
    // All outputs under temporary names, then committed together.
    let stage = |out: &mut OutputDir, name: &str| (out.stage(name), out.dest(name));
    let (tmp, dest) = stage(&mut out, "gradcam.nii.gz");
    nifti::write(&tmp, &cam_vol, WriteType::F32).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    let (tmp, dest) = stage(&mut out, "gradcam.png");
    std::fs::write(&tmp, png).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    if segmented {
        let (tmp, dest) = stage(&mut out, "fm_mask.nii.gz");
        nifti::write(&tmp, &mask, WriteType::U8).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    }
    let (tmp, dest) = stage(&mut out, CLASSIFICATION_FILE);
    std::fs::write(&tmp, serde_json::to_string_pretty(&result)?)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    out.commit(&OUTPUTS).map_err(flat)?;
    eprintln!(
        "fmseg classify: {} (probability {p:.3}, threshold {threshold}), {} classifier; wrote {} in {:.1} s",
        result.label,
        result.variant,
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    crate::outln!("{}\t{p:.4}\t{}", result.label, a.input.display());
    Ok(())
}

/// The Grad-CAM montage over the crop, FM outlined.
fn heat_png(c: &ClassifierCrop, cam: &Volume) -> crate::error::Result<Vec<u8>> {
    let image = Volume { dims: c.dims, data: c.image.clone(), affine: c.affine };
    let mask = Volume { dims: c.dims, data: c.mask.iter().map(|&m| m as f32).collect(), affine: c.affine };
    overlay::encode_png(&overlay::render_heat(&image, &mask, &cam.data)?)
}

fn flat(e: crate::error::Error) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}
