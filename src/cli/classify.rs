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
pub const GRADCAM_FILE: &str = "gradcam.nii.gz";
pub const GRADCAM_PNG: &str = "gradcam.png";
const OUTPUTS: [&str; 4] = [CLASSIFICATION_FILE, GRADCAM_FILE, GRADCAM_PNG, "fm_mask.nii.gz"];

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
pub struct ModelRef {
    pub path: String,
    pub sha256: String,
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

/// The classifier, its weights and the clinical variables, checked and loaded before any
/// image is read (shared by `classify` and `segment --classify`).
pub struct ClassifierSetup {
    path: PathBuf,
    weights: ClassifierWeights,
    engine: AnyClassifier,
    clinical: Option<(PathBuf, Clinical)>,
    threshold: f64,
}

impl ClassifierSetup {
    /// `classifier` (default: the bundled variant that fits whether `clinical` is given), the
    /// clinical JSON, the threshold (default: the model card's).
    pub fn load(
        classifier: Option<&Path>,
        clinical: Option<&Path>,
        threshold: Option<f64>,
        device: Device,
        threads: usize,
    ) -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let clinical = match clinical {
            Some(p) => Some((p.to_path_buf(), Clinical::from_json_file(p).map_err(flat)?)),
            None => None,
        };
        let path = classifier.map(Path::to_path_buf).unwrap_or_else(|| {
            root.join(if clinical.is_some() { BUNDLED_CLINICAL_CLASSIFIER } else { BUNDLED_IMAGE_CLASSIFIER })
        });
        if !path.is_file() {
            bail!("classifier weights {}: not a file (pass --classifier FILE)", path.display());
        }
        let weights = ClassifierWeights::load(&path).map_err(flat)?;
        match (weights.spec.clinical > 0, &clinical) {
            (true, None) => bail!(
                "{} is the image+clinical classifier: give the clinical variables with --clinical FILE.json, or \
                 use an image-only classifier",
                path.display()
            ),
            (false, Some(_)) => bail!(
                "{} is the image-only classifier: it cannot use --clinical; give an image+clinical classifier",
                path.display()
            ),
            _ => {}
        }
        let threshold = match threshold {
            Some(t) if (0.0..=1.0).contains(&t) => t,
            Some(t) => bail!("--threshold {t} must be a probability in [0, 1]"),
            None => weights.threshold(&path).map_err(flat)?,
        };
        let engine = AnyClassifier::new(device, threads, &weights).map_err(flat)?;
        Ok(ClassifierSetup { path, weights, engine, clinical, threshold })
    }

    /// Classifies `image` (read from `image_path`) with its FM mask; `segmenter` names the
    /// segmentation weights when the mask is predicted.
    pub fn classify(
        &self,
        image: &Volume,
        image_path: &Path,
        mask: &FmMask,
        segmenter: Option<Vec<ModelRef>>,
        notices: Vec<String>,
    ) -> anyhow::Result<Classified> {
        let t0 = Instant::now();
        let c = crop(image, image_path, mask.volume, mask.path, &SegmentConfig::default().preprocess).map_err(flat)?;
        let features = self.clinical.as_ref().map(|(_, c)| c.features());
        let clin = features.map(|f| HostTensor { shape: vec![1, CLINICAL_FEATURES, 1, 1, 1], data: f.to_vec() });
        let pass = self.engine.run(&c.tensor(), clin.as_ref()).map_err(flat)?;
        let logit = pass.logits[0] as f64;
        let p = 1.0 / (1.0 + (-logit).exp());
        let cam =
            gradcam::gradcam(&pass.features, 0, &self.weights.image_head().map_err(flat)?, PATCH).map_err(flat)?;
        let gradcam = Volume { dims: PATCH, data: cam, affine: c.affine };
        let png = heat_png(&c, &gradcam).map_err(flat)?;
        let label = if p >= self.threshold { "axSpA" } else { "non-axSpA" };
        let result = Classification {
            probability_axspa: p,
            logit,
            label,
            threshold: self.threshold,
            variant: self.weights.spec.name(),
            inputs: Inputs {
                image: image_path.display().to_string(),
                mask: mask.name.clone(),
                clinical: self.clinical.as_ref().map(|(p, _)| p.display().to_string()),
                clinical_features: features.map(|f| FEATURE_NAMES.iter().copied().zip(f).collect()),
            },
            classifier: ModelRef { path: self.path.display().to_string(), sha256: self.weights.sha256.clone() },
            segmenter,
            crop: CropInfo { centre: c.centre, fm_voxels_in_crop: c.fm_voxels, dims: c.dims },
            device: self.engine.device_name(),
            seconds: t0.elapsed().as_secs_f64(),
            notices,
        };
        let summary =
            format!("{label} (probability {p:.3}, threshold {}), {} classifier", self.threshold, result.variant);
        Ok(Classified {
            json: serde_json::to_string_pretty(&result)?.into_bytes(),
            gradcam,
            png,
            summary,
            probability: p,
        })
    }
}

/// The FM mask a classification uses: its voxels, the file that names it in errors, and how
/// the result names it (a path, or "predicted").
pub struct FmMask<'a> {
    pub volume: &'a Volume,
    pub path: &'a Path,
    pub name: String,
}

/// What a classification writes: `classification.json`, `gradcam.nii.gz`, `gradcam.png`.
pub struct Classified {
    pub json: Vec<u8>,
    pub gradcam: Volume,
    pub png: Vec<u8>,
    pub summary: String,
    pub probability: f64,
}

pub fn run(a: ClassifyArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    // Everything cheap is checked before anything expensive runs.
    let setup =
        ClassifierSetup::load(a.classifier.as_deref(), a.clinical.as_deref(), a.threshold, a.device, a.threads)?;
    let mut out = OutputDir::open(&a.out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    eprintln!("fmseg classify: reading {}", a.input.display());
    let loaded = segment::load_input(&a.input, a.series.as_deref()).map_err(flat)?;
    let mut notices = Vec::new();
    let (mask, mask_name, segmenter) = match &a.mask {
        Some(p) => {
            let m = nifti::read(p).map_err(flat).with_context(|| format!("--mask {}", p.display()))?;
            (m, p.display().to_string(), None)
        }
        None => {
            let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_WEIGHTS);
            let choices = resolve_weights(&a.weights, std::env::var_os(WEIGHTS_ENV), &bundled)?;
            let models = Models::load(&choices, a.device, a.threads)?;
            notices.extend(models.info.notices.iter().cloned());
            eprintln!("fmseg classify: segmenting FM on {}", models.info.device);
            let refs: Vec<ModelRef> = models
                .info
                .weights
                .iter()
                .map(|w| ModelRef { path: w.path.display().to_string(), sha256: w.sha256.clone() })
                .collect();
            let cfg = SegmentConfig { series: a.series.clone(), ..SegmentConfig::default() };
            let r = models.segment(loaded.clone(), &cfg, &mut |_| {}).map_err(flat)?;
            (r.mask, "predicted".to_string(), Some(refs))
        }
    };
    let segmented = segmenter.is_some();
    for n in &notices {
        eprintln!("fmseg classify: NOTICE: {n}");
    }
    let mask_path = a.mask.clone().unwrap_or_else(|| a.input.clone());
    let fm = FmMask { volume: &mask, path: &mask_path, name: mask_name };
    let c = setup.classify(&loaded.image, &a.input, &fm, segmenter, notices)?;
    // All outputs under temporary names, then committed together.
    let stage = |out: &mut OutputDir, name: &str| (out.stage(name), out.dest(name));
    let (tmp, dest) = stage(&mut out, GRADCAM_FILE);
    nifti::write(&tmp, &c.gradcam, WriteType::F32).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    let (tmp, dest) = stage(&mut out, GRADCAM_PNG);
    std::fs::write(&tmp, &c.png).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    if segmented {
        let (tmp, dest) = stage(&mut out, "fm_mask.nii.gz");
        nifti::write(&tmp, &mask, WriteType::U8).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    }
    let (tmp, dest) = stage(&mut out, CLASSIFICATION_FILE);
    std::fs::write(&tmp, &c.json).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    out.commit(&OUTPUTS).map_err(flat)?;
    eprintln!("fmseg classify: {}; wrote {} in {:.1} s", c.summary, a.out.display(), t0.elapsed().as_secs_f64());
    crate::outln!("{:.4}\t{}", c.probability, a.input.display());
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
