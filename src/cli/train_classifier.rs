//! `fmseg train-classifier --data phantom:A..B|DIR --out RUN`: trains the axSpA classifier
//! (image only, or image + clinical with `--clinical`) on the gradient tape, resumable (run it
//! again with the same arguments, or more `--epochs`). Cases are prepared once into `--cache`
//! (default `RUN/cases`): each study segmented by the FM network (the bundled weights unless
//! `--segmenter`), cropped and stored.
//!
//! `RUN/` then holds `metrics.csv` (per epoch: training loss, validation loss and AUC),
//! `best.safetensors` (the best validation AUC), `state.*` (to continue) and `run.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use crate::cli::segment::{resolve_weights, Models, BUNDLED_WEIGHTS, WEIGHTS_ENV};
use crate::engine::Device;
use crate::pipeline::segment::{segment_image, SegmentConfig};
use crate::pipeline::window::Predictor;
use crate::tensor::HostTensor;
use crate::train::classifier::{train, ClassifierTrainConfig};
use crate::train::classifier_data::{cases_of, prepare, MaskSource};

#[derive(Args, Debug)]
pub struct TrainClassifierArgs {
    /// Training cases: `phantom:A..B` (synthetic studies, seeds A..B) or a directory with
    /// `cases.csv` (id, label, clinical variables) and a folder per case (DICOM series or image.nii.gz).
    #[arg(long)]
    pub data: String,
    /// Run directory (created; a run already there is continued).
    #[arg(long)]
    pub out: PathBuf,
    /// Train the image+clinical variant (age, sex, HLA-B27, CRP, ESR joined to the image features).
    #[arg(long)]
    pub clinical: bool,
    /// Epochs (the paper's 300).
    #[arg(long, default_value_t = 300)]
    pub epochs: u64,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Share of each class held out for validation (the best epoch is chosen on it).
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Seed of the initial weights, the split, the order, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Which FM mask makes the ROI map: the segmentation network's (as `classify` sees), the
    /// synthetic study's ground truth, or each case's fm_mask.nii.gz.
    #[arg(long, value_enum, default_value = "predicted")]
    pub masks: MaskSource,
    /// Prepared cases (default RUN/cases): share it between runs on the same cases.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Segmentation weights for predicted masks (default: $FMSEG_WEIGHTS, else the bundled ones).
    #[arg(long)]
    pub segmenter: Vec<PathBuf>,
    /// CPU threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub fn run(a: TrainClassifierArgs) -> anyhow::Result<()> {
    let cfg = ClassifierTrainConfig {
        clinical: a.clinical,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        val_fraction: a.val_fraction,
        seed: a.seed,
        ..ClassifierTrainConfig::default()
    };
    if !(0.0..1.0).contains(&a.val_fraction) {
        anyhow::bail!("--val-fraction {} must be in [0, 1)", a.val_fraction);
    }
    let cases = cases_of(&a.data).map_err(flat).with_context(|| format!("--data {}", a.data))?;
    let cache = a.cache.clone().unwrap_or_else(|| a.out.join("cases"));
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;

    // The segmentation network, loaded only when a case still needs it.
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_WEIGHTS);
    let choices = resolve_weights(&a.segmenter, std::env::var_os(WEIGHTS_ENV), &bundled)?;
    let sha = crate::pipeline::report::WeightsInfo::of(&choices[0].path, choices[0].bundled).map_err(flat)?.sha256;
    let mut models: Option<Models> = None;
    let seg_cfg = SegmentConfig::default();
    let mut segment_mask =
        |image: &crate::volume::Volume, name: &Path| -> crate::error::Result<crate::volume::Volume> {
            if models.is_none() {
                models = Some(
                    Models::load(&choices, Device::Cpu, a.threads)
                        .map_err(|e| crate::error::Error::Other(format!("segmentation weights: {e}")))?,
                );
            }
            let m = models.as_ref().expect("loaded");
            let mut closures: Vec<_> = m.engines.iter().map(|e| move |x: &HostTensor| e.logits(x)).collect();
            let mut preds: Vec<&mut dyn Predictor> = closures.iter_mut().map(|c| c as &mut dyn Predictor).collect();
            Ok(segment_image(image, name, false, &seg_cfg, &mut preds, &mut |_| {})?.mask)
        };
    let t0 = Instant::now();
    let examples = prepare(&cases, &cache, a.masks, &sha, &mut segment_mask, &mut |done, total, id| {
        if done < total {
            eprintln!(
                "fmseg train-classifier: preparing {}/{total} {id} ({:.0} s)",
                done + 1,
                t0.elapsed().as_secs_f64()
            );
        }
    })
    .map_err(flat)?;
    // The segmentation network is not needed for training: free it.
    drop(models);
    let pos = examples.iter().filter(|e| e.label).count();
    eprintln!(
        "fmseg train-classifier: {} cases ({pos} axSpA, {} non-axSpA), {} variant, {} epochs",
        examples.len(),
        examples.len() - pos,
        if a.clinical { "image+clinical" } else { "image" },
        a.epochs
    );
    let run_json = serde_json::json!({ "data": a.data, "masks": a.masks, "segmenter_sha256": sha, "config": cfg });
    std::fs::write(a.out.join("run.json"), serde_json::to_string_pretty(&run_json)?)
        .with_context(|| format!("writing {}", a.out.join("run.json").display()))?;
    let summary = train(&examples, &cfg, &a.out, a.threads, &mut |m| {
        let auc = m.val_auc.map_or("-".into(), |v| format!("{v:.3}"));
        eprintln!(
            "fmseg train-classifier: epoch {}/{}: train loss {:.4}, val loss {:.4}, val AUC {auc} ({:.1} s)",
            m.epoch, a.epochs, m.train_loss, m.val_loss, m.seconds
        );
    })
    .map_err(flat)?;
    export(&a, &summary).map_err(flat)?;
    crate::outln!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// `RUN/classifier.fmw`: the best epoch in the frozen format (FP16, checksummed) with what a
/// user must know in its metadata; `fmseg classify --classifier` reads it.
fn export(a: &TrainClassifierArgs, s: &crate::train::classifier::TrainSummary) -> crate::error::Result<()> {
    use crate::weights::{self, DType, Format};
    let best = weights::load(&a.out.join("best.safetensors"))?;
    let b = s.best.as_ref();
    let variant = if a.clinical { "image+clinical" } else { "image" };
    let epochs = s.epochs_done.to_string();
    let best_epoch = b.map_or(String::new(), |b| b.epoch.to_string());
    let auc = b.and_then(|b| b.val_auc).map_or(String::new(), |v| format!("{v:.4}"));
    let caveat = format!(
        "trained by fmseg train-classifier on {} ({} masks), {epochs} epochs, best validation AUC {auc} at epoch \
         {best_epoch}: a demonstration, not for clinical use",
        a.data,
        serde_json::to_value(a.masks).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    );
    let meta = [
        ("model", "fmseg axSpA classifier"),
        ("variant", variant),
        ("trained", "true"),
        ("threshold", "0.5"),
        ("epochs", epochs.as_str()),
        ("best_epoch", best_epoch.as_str()),
        ("val_auc", auc.as_str()),
        ("caveat", caveat.as_str()),
    ];
    weights::save_with_metadata(&best, &a.out.join("classifier.fmw"), Format::Frozen, DType::F16, &meta)
}

fn flat(e: crate::error::Error) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}
