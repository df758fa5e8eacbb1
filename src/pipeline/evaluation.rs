//! `fmseg evaluate`: the paper's Tables 2 (segmentation) and 4 (classification) from masks and
//! scores. Every number is one of [`super::stats`]' functions composed here; nothing
//! statistical is computed in this module itself.
//!
//! - Segmentation: per case Dice, precision, recall ([`Confusion`]), HD95 and volumes
//!   ([`stats::hd95`], [`stats::volumes`]); per model mean ± SD and a percentile-bootstrap CI of
//!   the mean of each, over the cases where the metric exists (an empty truth has no Dice or
//!   recall, an empty prediction no precision, either empty no HD95: as `stats` and `metrics`
//!   decide); between two models a paired t-test and a Wilcoxon signed-rank test on the Dice
//!   of the cases both have.
//! - Classification: AUC with a bootstrap and a DeLong CI, DeLong's paired test between two
//!   models, and accuracy, sensitivity, specificity, PPV, NPV and Cohen's kappa at a threshold,
//!   each with a bootstrap CI (the same seeded resamples for every statistic).
//!
//! A test that is undefined for valid input (identical predictions: zero variance, all
//! differences zero) is not an error: its result is `None` with the reason in `notes`.
//! [`inputs`] reads the files, [`tables`] writes Markdown and CSV, [`plot`] draws the ROC curve.

pub mod inputs;
pub mod plot;
pub mod tables;

use serde::Serialize;

use super::metrics::Confusion;
use super::stats::{self, Ci, RocPoint};
use crate::error::{Error, Result};

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// How the intervals are drawn and where the classification threshold is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// Seed of the bootstrap (the same resampled indices for every statistic of a table).
    pub seed: u64,
    /// Predicted axSpA when `probability >= threshold` ([`stats::at_threshold`]).
    pub threshold: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { resamples: 2000, seed: 0, threshold: 0.5 }
    }
}

/// A confidence interval (serialisable twin of [`Ci`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl From<Ci> for Interval {
    fn from(c: Ci) -> Self {
        Interval { lo: c.lo, hi: c.hi }
    }
}

/// Mean ± SD and the bootstrap CI of the mean over the cases where a metric exists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Cases with a value.
    pub n: usize,
    pub mean: Option<f64>,
    /// `None` with fewer than two values.
    pub sd: Option<f64>,
    pub ci: Option<Interval>,
}

impl Summary {
    pub fn of(values: &[Option<f64>], o: &Options) -> Result<Summary> {
        let xs: Vec<f64> = values.iter().flatten().copied().collect();
        if xs.is_empty() {
            return Ok(Summary { n: 0, mean: None, sd: None, ci: None });
        }
        Ok(Summary {
            n: xs.len(),
            mean: Some(stats::mean(&xs)?),
            sd: stats::sd(&xs)?,
            ci: stats::bootstrap_mean_ci(&xs, o.resamples, o.seed, LEVEL)?.map(Interval::from),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Segmentation

/// One case of one model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegCase {
    pub id: String,
    pub dice: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub hd95_mm: Option<f64>,
    pub truth_ml: f64,
    pub pred_ml: f64,
    /// predicted - truth.
    pub volume_difference_ml: f64,
}

impl SegCase {
    /// The metrics of `pred` against `truth` (same grid `dims`, row-major; non-zero is
    /// foreground) with voxel `spacing` (mm) and volume `voxel_mm3`.
    pub fn of(
        id: &str,
        truth: &[u8],
        pred: &[u8],
        dims: [usize; 3],
        spacing: [f64; 3],
        voxel_mm3: f64,
    ) -> Result<Self> {
        let c = Confusion::from_masks(pred, truth)?;
        let v = stats::volumes(&c, voxel_mm3)?;
        Ok(SegCase {
            id: id.to_string(),
            dice: c.dice(),
            precision: c.precision(),
            recall: c.recall(),
            hd95_mm: stats::hd95(pred, truth, dims, spacing)?,
            truth_ml: v.label_ml,
            pred_ml: v.pred_ml,
            volume_difference_ml: v.difference_ml,
        })
    }
}

/// One model's cases and their summaries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegModel {
    pub name: String,
    pub cases: Vec<SegCase>,
    pub dice: Summary,
    pub precision: Summary,
    pub recall: Summary,
    pub hd95_mm: Summary,
    pub truth_ml: Summary,
    pub pred_ml: Summary,
    pub volume_difference_ml: Summary,
}

impl SegModel {
    pub fn of(name: &str, cases: Vec<SegCase>, o: &Options) -> Result<Self> {
        let s = |f: fn(&SegCase) -> Option<f64>| Summary::of(&cases.iter().map(f).collect::<Vec<_>>(), o);
        Ok(SegModel {
            name: name.to_string(),
            dice: s(|c| c.dice)?,
            precision: s(|c| c.precision)?,
            recall: s(|c| c.recall)?,
            hd95_mm: s(|c| c.hd95_mm)?,
            truth_ml: s(|c| Some(c.truth_ml))?,
            pred_ml: s(|c| Some(c.pred_ml))?,
            volume_difference_ml: s(|c| Some(c.volume_difference_ml))?,
            cases,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TTestResult {
    pub t: f64,
    pub df: f64,
    pub p: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WilcoxonResult {
    pub statistic: f64,
    pub p: f64,
    /// "exact", "permutation" or "asymptotic" (SciPy's choice).
    pub method: String,
}

/// Paired tests of per-case Dice, model `a` against model `b`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedDice {
    pub a: String,
    pub b: String,
    /// Cases where both models have a Dice (the truth is not empty).
    pub n: usize,
    pub ttest: Option<TTestResult>,
    pub wilcoxon: Option<WilcoxonResult>,
    /// Why a test has no result.
    pub notes: Vec<String>,
}

impl PairedDice {
    pub fn of(a: &SegModel, b: &SegModel) -> Result<Self> {
        let (mut da, mut db) = (Vec::new(), Vec::new());
        for ca in &a.cases {
            let cb = b.cases.iter().find(|c| c.id == ca.id).ok_or_else(|| {
                Error::Value(format!("evaluation: case {} of {} is not among {}'s cases", ca.id, a.name, b.name))
            })?;
            if let (Some(x), Some(y)) = (ca.dice, cb.dice) {
                da.push(x);
                db.push(y);
            }
        }
        let mut notes = Vec::new();
        let mut undefined = |what: &str, e: Error| {
            notes.push(format!("{what}: {}", e.to_string().trim_start_matches("stats: ")));
        };
        let ttest = match stats::ttest_rel(&da, &db) {
            Ok(t) => Some(TTestResult { t: t.t, df: t.df, p: t.p }),
            Err(e) => {
                undefined("paired t-test", e);
                None
            }
        };
        let wilcoxon = match (da.is_empty(), stats::wilcoxon(&da, &db)) {
            (false, Ok(w)) => Some(WilcoxonResult {
                statistic: w.statistic,
                p: w.p,
                method: format!("{:?}", w.method).to_lowercase(),
            }),
            (_, Err(e)) => {
                undefined("Wilcoxon signed-rank test", e);
                None
            }
            (true, Ok(_)) => None,
        };
        Ok(PairedDice { a: a.name.clone(), b: b.name.clone(), n: da.len(), ttest, wilcoxon, notes })
    }
}

/// The segmentation part of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Segmentation {
    pub level: f64,
    pub resamples: usize,
    pub seed: u64,
    pub models: Vec<SegModel>,
    /// The second model against the first, when there are two.
    pub comparison: Option<PairedDice>,
}

/// Summaries of one or two models' cases (the same cases, matched by id).
pub fn segmentation(models: Vec<(String, Vec<SegCase>)>, o: &Options) -> Result<Segmentation> {
    let models: Vec<SegModel> = models.into_iter().map(|(n, c)| SegModel::of(&n, c, o)).collect::<Result<_>>()?;
    let comparison = match models.as_slice() {
        [a, b] => Some(PairedDice::of(a, b)?),
        _ => None,
    };
    Ok(Segmentation { level: LEVEL, resamples: o.resamples, seed: o.seed, models, comparison })
}

// ---------------------------------------------------------------------------------------------
// Classification

/// A value and its bootstrap CI.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub value: Option<f64>,
    pub ci: Option<Interval>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DeLongResult {
    pub auc: f64,
    pub variance: f64,
    pub ci: Interval,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    /// `None` (JSON null) for the first point, threshold +inf.
    pub threshold: Option<f64>,
    pub fpr: f64,
    pub tpr: f64,
}

/// One model's classification metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClsModel {
    pub name: String,
    /// AUC with its percentile-bootstrap CI.
    pub auc: Estimate,
    /// DeLong's variance and Wald CI; `None` with fewer than two cases of a class.
    pub delong: Option<DeLongResult>,
    pub counts: Counts,
    pub accuracy: Estimate,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
    pub ppv: Estimate,
    pub npv: Estimate,
    pub kappa: Estimate,
    /// [`stats::roc_curve`]; empty when one class is absent.
    pub roc: Vec<Point>,
}

/// A statistic of (resampled) scores and labels.
type Stat<'a> = &'a dyn Fn(&[f64], &[bool]) -> Option<f64>;

impl ClsModel {
    pub fn of(name: &str, scores: &[f64], labels: &[bool], o: &Options) -> Result<Self> {
        let boot = |stat: Stat| -> Result<Option<Interval>> {
            let ci = stats::bootstrap_ci(labels.len(), o.resamples, o.seed, LEVEL, |idx| {
                let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
                let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
                stat(&s, &l)
            })?;
            Ok(ci.map(Interval::from))
        };
        let at = |f: fn(&stats::Classification) -> Option<f64>| -> Result<Estimate> {
            let value = f(&stats::at_threshold(scores, labels, o.threshold)?);
            let ci = boot(&|s, l| stats::at_threshold(s, l, o.threshold).ok().as_ref().and_then(f))?;
            Ok(Estimate { value, ci })
        };
        let auc =
            Estimate { value: stats::roc_auc(scores, labels)?, ci: boot(&|s, l| stats::roc_auc(s, l).ok().flatten())? };
        let delong = stats::delong(scores, labels, LEVEL)?.map(|d| DeLongResult {
            auc: d.auc,
            variance: d.variance,
            ci: d.ci.into(),
        });
        let c = stats::at_threshold(scores, labels, o.threshold)?.counts;
        let roc = stats::roc_curve(scores, labels)?.unwrap_or_default();
        Ok(ClsModel {
            name: name.to_string(),
            auc,
            delong,
            counts: Counts { tp: c.tp, fp: c.fp, fn_: c.fn_, tn: c.tn },
            accuracy: at(|c| c.accuracy)?,
            sensitivity: at(|c| c.sensitivity)?,
            specificity: at(|c| c.specificity)?,
            ppv: at(|c| c.ppv)?,
            npv: at(|c| c.npv)?,
            kappa: at(|c| c.kappa)?,
            roc: roc.iter().map(point).collect(),
        })
    }
}

fn point(p: &RocPoint) -> Point {
    Point { threshold: p.threshold.is_finite().then_some(p.threshold), fpr: p.fpr, tpr: p.tpr }
}

/// DeLong's test of the two models' AUCs on the same cases.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeLongTest {
    pub a: String,
    pub b: String,
    pub auc_a: f64,
    pub auc_b: f64,
    pub variance: f64,
    pub z: f64,
    pub p: f64,
}

/// The classification part of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    pub level: f64,
    pub resamples: usize,
    pub seed: u64,
    pub threshold: f64,
    pub cases: usize,
    pub positives: usize,
    pub negatives: usize,
    pub models: Vec<ClsModel>,
    /// The first model against the second; `None` with one model, or where DeLong's test is
    /// undefined (see `notes`).
    pub delong_test: Option<DeLongTest>,
    pub notes: Vec<String>,
}

/// Metrics of one or two models' scores (`probability_axspa`, same case order as `labels`).
pub fn classification(labels: &[bool], models: Vec<(String, Vec<f64>)>, o: &Options) -> Result<Classification> {
    if !o.threshold.is_finite() {
        return Err(Error::Value(format!("evaluation: threshold {} is not finite", o.threshold)));
    }
    let ms: Vec<ClsModel> = models.iter().map(|(n, s)| ClsModel::of(n, s, labels, o)).collect::<Result<_>>()?;
    let positives = labels.iter().filter(|&&l| l).count();
    let mut notes = Vec::new();
    if positives == 0 || positives == labels.len() {
        notes.push("only one class among the cases: no AUC, ROC curve or DeLong CI".to_string());
    }
    let delong_test = match models.as_slice() {
        [(a, sa), (b, sb)] => {
            let t = stats::delong_paired(sa, sb, labels)?;
            if t.is_none() {
                notes.push(format!(
                    "DeLong's test of {a} against {b} is undefined (fewer than two cases of a class, or the AUC \
                     difference has zero variance)"
                ));
            }
            t.map(|t| DeLongTest {
                a: a.clone(),
                b: b.clone(),
                auc_a: t.auc_a,
                auc_b: t.auc_b,
                variance: t.variance,
                z: t.z,
                p: t.p,
            })
        }
        _ => None,
    };
    Ok(Classification {
        level: LEVEL,
        resamples: o.resamples,
        seed: o.seed,
        threshold: o.threshold,
        cases: labels.len(),
        positives,
        negatives: labels.len() - positives,
        models: ms,
        delong_test,
        notes,
    })
}

/// Everything `evaluation.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub segmentation: Option<Segmentation>,
    pub classification: Option<Classification>,
}

impl Evaluation {
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Other(format!("evaluation: JSON: {e}")))
    }
}
