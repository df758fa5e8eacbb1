//! `fmseg evaluate`: segmentation masks against the truth and classification scores against
//! labels, as the paper's Tables 2 and 4 (Markdown and CSV), `roc.png` and `evaluation.json`
//! (every number). The work is in [`crate::pipeline::evaluation`]; this file reads the command
//! line and writes the outputs.
//!
//! Everything is computed before `--out` is opened, and the outputs are committed as a group
//! ([`OutputDir`]): a failed run leaves no output directory (or the previous results), and
//! nothing on stdout. A rerun removes the previous run's outputs that this one does not make
//! (a segmentation-only run after a full one leaves no stale `classification.md`).

use std::path::PathBuf;

use anyhow::bail;
use clap::{ArgGroup, Args};

use crate::io::output_dir::OutputDir;
use crate::outln;
use crate::pipeline::evaluation::{self, inputs, plot, Evaluation, Options};

pub const SEGMENTATION_MD: &str = "segmentation.md";
pub const SEGMENTATION_CASES_CSV: &str = "segmentation_cases.csv";
pub const SEGMENTATION_SUMMARY_CSV: &str = "segmentation_summary.csv";
pub const CLASSIFICATION_MD: &str = "classification.md";
pub const CLASSIFICATION_CSV: &str = "classification.csv";
pub const ROC_PNG: &str = "roc.png";
pub const EVALUATION_JSON: &str = "evaluation.json";
const ALL_OUTPUTS: [&str; 7] = [
    SEGMENTATION_MD,
    SEGMENTATION_CASES_CSV,
    SEGMENTATION_SUMMARY_CSV,
    CLASSIFICATION_MD,
    CLASSIFICATION_CSV,
    ROC_PNG,
    EVALUATION_JSON,
];

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("part").required(true).multiple(true).args(["truth", "labels"])))]
pub struct EvaluateArgs {
    /// Segmentation truth: a set directory of <id>/fm_mask.nii.gz (as `fmseg phantom` writes).
    #[arg(long, value_name = "SET_DIR", requires = "pred")]
    pub truth: Option<PathBuf>,
    /// Predictions of model A: <id>/fm_mask.nii.gz per truth case (as `fmseg segment --out PRED_DIR/<id>`).
    #[arg(long, value_name = "PRED_DIR", requires = "truth")]
    pub pred: Option<PathBuf>,
    /// Predictions of model B, compared with A (paired t-test and Wilcoxon on per-case Dice).
    #[arg(long, value_name = "PRED_DIR", requires = "pred")]
    pub pred_b: Option<PathBuf>,
    /// Classification labels: a CSV with columns id and label (axSpA / non-axSpA or 1 / 0).
    #[arg(long, value_name = "CASES_CSV", requires = "scores")]
    pub labels: Option<PathBuf>,
    /// Scores of model A: a CSV with id,probability_axspa, or a directory of <id>/classification.json.
    #[arg(long, value_name = "CSV_OR_DIR", requires = "labels")]
    pub scores: Option<PathBuf>,
    /// Scores of model B, compared with A (DeLong's test).
    #[arg(long, value_name = "CSV_OR_DIR", requires = "scores")]
    pub scores_b: Option<PathBuf>,
    /// Name of model A in the tables.
    #[arg(long, default_value = "A")]
    pub name_a: String,
    /// Name of model B in the tables.
    #[arg(long, default_value = "B")]
    pub name_b: String,
    /// axSpA is predicted when probability_axspa >= this.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Bootstrap resamples per confidence interval.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub resamples: u64,
    /// Seed of the bootstrap (the same seed gives the same intervals).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: EvaluateArgs) -> anyhow::Result<()> {
    if !a.threshold.is_finite() {
        bail!("--threshold {} must be a finite number", a.threshold);
    }
    if (a.pred_b.is_some() || a.scores_b.is_some()) && a.name_a == a.name_b {
        bail!("--name-a and --name-b are both {:?}: the tables need two names", a.name_a);
    }
    let o = Options { resamples: a.resamples as usize, seed: a.seed, threshold: a.threshold };
    let names = [a.name_a.clone(), a.name_b.clone()];

    let segmentation = match (&a.truth, &a.pred) {
        (Some(truth), Some(pred)) => {
            let dirs: Vec<&std::path::Path> = std::iter::once(pred.as_path()).chain(a.pred_b.as_deref()).collect();
            let cases = inputs::seg_cases(truth, &dirs).map_err(flat)?;
            Some(evaluation::segmentation(names.iter().cloned().zip(cases).collect(), &o).map_err(flat)?)
        }
        _ => None,
    };
    let classification = match (&a.labels, &a.scores) {
        (Some(labels), Some(scores)) => {
            let cases = inputs::read_labels(labels).map_err(flat)?;
            let ids: Vec<String> = cases.iter().map(|(id, _)| id.clone()).collect();
            let truth: Vec<bool> = cases.iter().map(|(_, l)| *l).collect();
            let mut models = Vec::new();
            for (name, source) in names.iter().zip(std::iter::once(scores).chain(a.scores_b.as_ref())) {
                models.push((name.clone(), inputs::read_scores(source, &ids).map_err(flat)?));
            }
            Some(evaluation::classification(&truth, models, &o).map_err(flat)?)
        }
        _ => None,
    };

    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut summary = String::new();
    if let Some(s) = &segmentation {
        files.push((SEGMENTATION_MD, s.markdown().into_bytes()));
        files.push((SEGMENTATION_CASES_CSV, s.cases_csv().into_bytes()));
        files.push((SEGMENTATION_SUMMARY_CSV, s.summary_csv().into_bytes()));
        summary.push_str(&s.summary_markdown());
    }
    if let Some(c) = &classification {
        files.push((CLASSIFICATION_MD, c.markdown().into_bytes()));
        files.push((CLASSIFICATION_CSV, c.csv().into_bytes()));
        files.push((ROC_PNG, plot::roc_png(c).map_err(flat)?));
        if !summary.is_empty() {
            summary.push('\n');
        }
        summary.push_str(&c.summary_markdown());
    }
    let json = Evaluation { segmentation, classification }.to_json().map_err(flat)?;
    files.push((EVALUATION_JSON, json.into_bytes()));

    let mut out = OutputDir::open(&a.out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    for (name, bytes) in &files {
        let dest = out.dest(name);
        std::fs::write(out.stage(name), bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", dest.display()))?;
    }
    out.commit(&ALL_OUTPUTS).map_err(flat)?;
    outln!("{summary}");
    outln!("Written to {}: {}", a.out.display(), files.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "));
    Ok(())
}

/// The crate's errors already name the file and the problem.
fn flat(e: crate::error::Error) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}
