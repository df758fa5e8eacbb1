//! The classifier's training cases: where they come from (synthetic studies by seed, or a
//! directory with `cases.csv`), and their preparation into [`Example`]s, each kept in a cache
//! directory (`<id>.safetensors`) so that the segmentation a case needs runs once, whatever
//! happens to the run (a killed run prepares only what is missing).
//!
//! - `phantom:A..B`: case `case_<seed>` is the synthetic study of that seed; its label and
//!   clinical variables come from its patient (the manifest's), its image is the rendered study.
//! - `DIR`: `DIR/cases.csv` (`id,label,age_years,sex,hla_b27,crp_mg_per_l,esr_mm_per_h`; see
//!   [`crate::pipeline::clinical`]) and, per id, `DIR/<id>/` holding `image.nii.gz`, a DICOM
//!   series in `dicom/` (as `fmseg phantom` writes a set) or a DICOM series itself, and `DIR/<id>/fm_mask.nii.gz` if `--masks given`.
//!
//! The FM mask of the ROI map is the segmentation network's (`--masks predicted`, the default:
//! what `fmseg classify` will see), the study's ground truth (`truth`, synthetic studies only)
//! or the case's own `fm_mask.nii.gz` (`given`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::nifti;
use crate::model::catalog::PATCH;
use crate::phantom::{self, Diagnosis, PhantomConfig};
use crate::pipeline::classifier_input::{crop, ClassifierCrop, CropCentre};
use crate::pipeline::clinical::{read_cases_csv, Clinical};
use crate::pipeline::preprocess::PreprocessConfig;
use crate::pipeline::segment;
use crate::tensor::HostTensor;
use crate::train::classifier::Example;
use crate::train::data::Source;
use crate::volume::Volume;
use crate::weights::{self, DType, Format, StateDict};

/// Which FM mask makes the ROI map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MaskSource {
    Predicted,
    Truth,
    Given,
}

/// One case before preparation.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseSpec {
    pub id: String,
    pub input: CaseInput,
    pub label: Option<bool>,
    pub clinical: Clinical,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CaseInput {
    Phantom {
        seed: u64,
        config: PhantomConfig,
    },
    /// A DICOM series directory or a NIfTI file, and the case directory (for `fm_mask.nii.gz`).
    Study {
        image: PathBuf,
        dir: PathBuf,
    },
}

/// The cases of `phantom:...` or a directory with `cases.csv`.
pub fn cases_of(spec: &str) -> Result<Vec<CaseSpec>> {
    if spec.starts_with("phantom:") {
        let Source::Phantom { seeds, config } = Source::parse(spec)? else {
            return Err(Error::Other("internal: phantom source".into()));
        };
        return Ok(seeds
            .into_iter()
            .map(|seed| {
                let p = phantom::plan(seed, &config).patient;
                CaseSpec {
                    id: format!("case_{seed}"),
                    input: CaseInput::Phantom { seed, config: config.clone() },
                    label: Some(p.diagnosis == Diagnosis::AxSpA),
                    clinical: Clinical::from(&p),
                }
            })
            .collect());
    }
    let dir = PathBuf::from(spec);
    let csv = dir.join("cases.csv");
    let records = read_cases_csv(&csv)?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let case_dir = dir.join(&r.id);
        // `image.nii.gz`, else a `dicom/` folder (as `fmseg phantom` writes), else the folder.
        let (nii, dcm) = (case_dir.join("image.nii.gz"), case_dir.join("dicom"));
        let image = if nii.is_file() {
            nii
        } else if dcm.is_dir() {
            dcm
        } else {
            case_dir.clone()
        };
        if !case_dir.is_dir() {
            return Err(Error::format(&csv, format!("case '{}': no directory {}", r.id, case_dir.display())));
        }
        out.push(CaseSpec {
            id: r.id,
            input: CaseInput::Study { image, dir: case_dir },
            label: r.label,
            clinical: r.clinical,
        });
    }
    Ok(out)
}

/// What a cache directory was made with: a cache made otherwise is refused, not mixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CacheInfo {
    masks: MaskSource,
    /// SHA-256 of the segmentation weights (predicted masks), else empty.
    segmenter: String,
    generator_version: u32,
}

/// Prepares every case into `cache` (reusing what is there). `segment_mask(image, name)` is
/// the segmentation network on an image (predicted masks); `progress(done, total, id)`.
pub fn prepare(
    cases: &[CaseSpec],
    cache: &Path,
    masks: MaskSource,
    segmenter_sha256: &str,
    segment_mask: &mut dyn FnMut(&Volume, &Path) -> Result<Volume>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<Example>> {
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let info = CacheInfo {
        masks,
        segmenter: if masks == MaskSource::Predicted { segmenter_sha256.to_string() } else { String::new() },
        generator_version: phantom::GENERATOR_VERSION,
    };
    let info_path = cache.join("cache.json");
    if info_path.exists() {
        let text = std::fs::read_to_string(&info_path).map_err(|e| Error::io(&info_path, e))?;
        let have: CacheInfo = serde_json::from_str(&text).map_err(|e| Error::format(&info_path, e.to_string()))?;
        if have != info {
            return Err(Error::format(
                &info_path,
                format!("this cache holds cases prepared with {have:?}, not {info:?}: give another --cache"),
            ));
        }
    } else {
        let text = serde_json::to_string_pretty(&info).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(&info_path, text).map_err(|e| Error::io(&info_path, e))?;
    }
    let mut out = Vec::with_capacity(cases.len());
    for (n, case) in cases.iter().enumerate() {
        progress(n, cases.len(), &case.id);
        let label = case
            .label
            .ok_or_else(|| Error::Value(format!("case '{}' has no label: training needs every case's", case.id)))?;
        let file = cache.join(format!("{}.safetensors", case.id));
        let crop = if file.exists() {
            load_crop(&file)?
        } else {
            let c = make_crop(case, masks, segment_mask)?;
            save_crop(&c, &file)?;
            c
        };
        out.push(Example { id: case.id.clone(), crop, label, clinical: case.clinical.features() });
    }
    progress(cases.len(), cases.len(), "");
    Ok(out)
}

fn make_crop(
    case: &CaseSpec,
    masks: MaskSource,
    segment_mask: &mut dyn FnMut(&Volume, &Path) -> Result<Volume>,
) -> Result<ClassifierCrop> {
    let cfg = PreprocessConfig::default();
    let (image, name, truth, given) = match &case.input {
        CaseInput::Phantom { seed, config } => {
            let c = phantom::generate_case(*seed, config);
            let m = c.mask_volume();
            (c.image, PathBuf::from(&case.id), Some(m), None)
        }
        CaseInput::Study { image, dir } => {
            let v = segment::load_input(image, None)?.image;
            (v, image.clone(), None, Some(dir.join("fm_mask.nii.gz")))
        }
    };
    let (mask, mask_name) = match masks {
        MaskSource::Predicted => (segment_mask(&image, &name)?, name.clone()),
        MaskSource::Truth => {
            let m = truth.ok_or_else(|| {
                Error::Value(format!("case '{}': --masks truth is for synthetic studies (phantom:...)", case.id))
            })?;
            (m, name.clone())
        }
        MaskSource::Given => {
            let p = given.ok_or_else(|| {
                Error::Value(format!("case '{}': synthetic studies have no fm_mask.nii.gz; use --masks truth", case.id))
            })?;
            (nifti::read(&p)?, p)
        }
    };
    crop(&image, &name, &mask, &mask_name, &cfg)
}

fn save_crop(c: &ClassifierCrop, path: &Path) -> Result<()> {
    let mut sd = StateDict::new();
    let dims = vec![c.dims[0], c.dims[1], c.dims[2]];
    sd.insert("image".to_string(), HostTensor { shape: dims.clone(), data: c.image.clone() });
    sd.insert("mask".to_string(), HostTensor { shape: dims, data: c.mask.iter().map(|&m| m as f32).collect() });
    sd.insert(
        "affine".to_string(),
        HostTensor { shape: vec![4, 4], data: c.affine.iter().flatten().map(|&v| v as f32).collect() },
    );
    let centre = if c.centre == CropCentre::FmCentreOfMass { 1.0 } else { 0.0 };
    sd.insert("centred_on_fm".to_string(), HostTensor { shape: vec![1], data: vec![centre] });
    weights::save(&sd, path, Format::Safetensors, DType::F32)
}

fn load_crop(path: &Path) -> Result<ClassifierCrop> {
    let sd = weights::load(path)?;
    let get = |k: &str| sd.get(k).ok_or_else(|| Error::format(path, format!("cached case without '{k}': delete it")));
    let (image, mask, affine, centre) = (get("image")?, get("mask")?, get("affine")?, get("centred_on_fm")?);
    if image.shape != PATCH.to_vec() || mask.shape != image.shape || affine.data.len() != 16 {
        return Err(Error::format(path, "cached case of another shape: delete it"));
    }
    let mut a = [[0f64; 4]; 4];
    for (i, v) in affine.data.iter().enumerate() {
        a[i / 4][i % 4] = *v as f64;
    }
    let mask: Vec<u8> = mask.data.iter().map(|&m| (m != 0.0) as u8).collect();
    let fm_voxels = mask.iter().filter(|&&m| m != 0).count();
    Ok(ClassifierCrop {
        image: image.data.clone(),
        mask,
        dims: PATCH,
        affine: a,
        centre: if centre.data[0] != 0.0 { CropCentre::FmCentreOfMass } else { CropCentre::GridCentre },
        fm_voxels,
    })
}
