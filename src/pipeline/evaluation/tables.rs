//! Markdown and CSV of an evaluation, in the layout of the paper's Tables 2 and 4: one row per
//! model. Markdown shows ratios in percent with two decimals (AUC and kappa with three, as the
//! paper), a missing value as `-`; CSV holds the full-precision fractions (Rust's shortest
//! round-trip form), a missing value as an empty field.

use super::{Classification, ClsModel, Estimate, Interval, SegCase, SegModel, Segmentation, Summary};

/// Display scale of a metric: percent or as is, with a number of decimals.
#[derive(Clone, Copy)]
struct Fmt {
    scale: f64,
    decimals: usize,
}

const PCT: Fmt = Fmt { scale: 100.0, decimals: 2 };
const MM: Fmt = Fmt { scale: 1.0, decimals: 2 };
const ML: Fmt = Fmt { scale: 1.0, decimals: 3 };
const UNIT: Fmt = Fmt { scale: 1.0, decimals: 3 };

impl Fmt {
    fn v(self, x: Option<f64>) -> String {
        x.map_or("-".into(), |x| format!("{:.*}", self.decimals, x * self.scale))
    }

    /// `mean ± SD` (the paper's DSC).
    fn mean_sd(self, s: &Summary) -> String {
        match (s.mean, s.sd) {
            (Some(_), Some(sd)) => format!("{} ± {}", self.v(s.mean), self.v(Some(sd))),
            _ => self.v(s.mean),
        }
    }

    /// `value (lo–hi)` (the paper's precision, recall and Table 4).
    fn with_ci(self, value: Option<f64>, ci: Option<Interval>) -> String {
        match (value, ci) {
            (Some(_), Some(c)) => format!("{} ({}–{})", self.v(value), self.v(Some(c.lo)), self.v(Some(c.hi))),
            _ => self.v(value),
        }
    }

    fn ci(self, ci: Option<Interval>) -> String {
        ci.map_or("-".into(), |c| format!("{}–{}", self.v(Some(c.lo)), self.v(Some(c.hi))))
    }
}

/// A p-value as the paper prints it.
pub fn p_value(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// The paper's significance marks: `*` p < 0.05, `**` p < 0.001.
fn stars(p: f64) -> &'static str {
    if p < 0.001 {
        "**"
    } else if p < 0.05 {
        "*"
    } else {
        ""
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")));
    }
    s
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |r: &[String]| r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\n";
    std::iter::once(line(header)).chain(rows.iter().map(|r| line(r))).collect()
}

fn num(x: Option<f64>) -> String {
    x.map_or(String::new(), |x| x.to_string())
}

// ---------------------------------------------------------------------------------------------
// Segmentation (Table 2)

const SEG_METRICS: [&str; 7] =
    ["dice", "precision", "recall", "hd95_mm", "truth_ml", "pred_ml", "volume_difference_ml"];

fn seg_summaries(m: &SegModel) -> [&Summary; 7] {
    [&m.dice, &m.precision, &m.recall, &m.hd95_mm, &m.truth_ml, &m.pred_ml, &m.volume_difference_ml]
}

fn seg_values(c: &SegCase) -> [Option<f64>; 7] {
    [c.dice, c.precision, c.recall, c.hd95_mm, Some(c.truth_ml), Some(c.pred_ml), Some(c.volume_difference_ml)]
}

const SEG_FMT: [Fmt; 7] = [PCT, PCT, PCT, MM, ML, ML, ML];

/// The Markdown column titles of [`SEG_METRICS`], in the same order.
const SEG_TITLES: [&str; 7] =
    ["DSC (%)", "Precision (%)", "Recall (%)", "HD95 (mm)", "Truth (ml)", "Predicted (ml)", "Difference (ml)"];

impl Segmentation {
    /// The model table (Table 2's layout) and the paired tests: `fmseg evaluate`'s stdout.
    pub fn summary_markdown(&self) -> String {
        let cases = self.models.first().map_or(0, |m| m.cases.len());
        let mut s = format!(
            "## Segmentation\n\n{cases} cases. DSC, HD95 and volume difference: mean ± SD; precision and recall: mean \
             ({:.0}% CI, percentile bootstrap, {} resamples, seed {}). Per-case means; a case whose mask makes a \
             metric undefined (empty truth: no DSC or recall; empty prediction: no precision; either empty: no \
             HD95) is left out of it.\n\n",
            self.level * 100.0,
            self.resamples,
            self.seed
        );
        let p = self.comparison.as_ref().and_then(|c| c.ttest.map(|t| t.p));
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mark = if i == 1 { p.map_or("", stars) } else { "" };
                vec![
                    m.name.clone(),
                    format!("{}{mark}", PCT.mean_sd(&m.dice)),
                    PCT.with_ci(m.precision.mean, m.precision.ci),
                    PCT.with_ci(m.recall.mean, m.recall.ci),
                    MM.mean_sd(&m.hd95_mm),
                    ML.mean_sd(&m.volume_difference_ml),
                ]
            })
            .collect();
        s.push_str(&md_table(
            &["Model", "DSC (%)", "Precision (%)", "Recall (%)", "HD95 (mm)", "Volume difference (ml)"],
            &rows,
        ));
        if let Some(c) = &self.comparison {
            s.push_str(&format!("\nPer-case DSC, {} against {} ({} paired cases): ", c.b, c.a, c.n));
            let mut parts = Vec::new();
            if let Some(t) = c.ttest {
                parts.push(format!("paired t-test t = {:.3}, df = {}, p = {}", t.t, t.df, p_value(t.p)));
            }
            if let Some(w) = &c.wilcoxon {
                parts.push(format!("Wilcoxon signed-rank W = {}, p = {} ({})", w.statistic, p_value(w.p), w.method));
            }
            parts.extend(c.notes.iter().cloned());
            s.push_str(&parts.join("; "));
            s.push_str(". `*` p < 0.05, `**` p < 0.001 (paired t-test).\n");
        }
        s
    }

    /// `segmentation.md`: the summary, every mean's CI, and the per-case table.
    pub fn markdown(&self) -> String {
        let mut s = self.summary_markdown();
        s.push_str(&format!("\n### Means with {:.0}% bootstrap CIs\n\n", self.level * 100.0));
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .map(|m| {
                let mut r = vec![m.name.clone()];
                r.extend(seg_summaries(m).iter().zip(SEG_FMT).map(|(s, f)| f.with_ci(s.mean, s.ci)));
                r
            })
            .collect();
        let header: Vec<&str> = std::iter::once("Model").chain(SEG_TITLES).collect();
        s.push_str(&md_table(&header, &rows));
        s.push_str("\n### Cases\n\n");
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .flat_map(|m| {
                m.cases.iter().map(|c| {
                    let mut r = vec![c.id.clone(), m.name.clone()];
                    r.extend(seg_values(c).iter().zip(SEG_FMT).map(|(v, f)| f.v(*v)));
                    r
                })
            })
            .collect();
        let header: Vec<&str> = ["Case", "Model"].into_iter().chain(SEG_TITLES).collect();
        s.push_str(&md_table(&header, &rows));
        s
    }

    /// `segmentation_cases.csv`: one row per model and case, fractions and mm / ml.
    pub fn cases_csv(&self) -> String {
        let header: Vec<String> = ["model", "id"].iter().chain(&SEG_METRICS).map(|s| s.to_string()).collect();
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .flat_map(|m| {
                m.cases.iter().map(|c| {
                    let mut r = vec![m.name.clone(), c.id.clone()];
                    r.extend(seg_values(c).iter().map(|v| num(*v)));
                    r
                })
            })
            .collect();
        csv(&header, &rows)
    }

    /// `segmentation_summary.csv`: one row per model; per metric n, mean, sd, ci_lo, ci_hi.
    pub fn summary_csv(&self) -> String {
        let mut header = vec!["model".to_string()];
        for m in SEG_METRICS {
            header.extend(["n", "mean", "sd", "ci_lo", "ci_hi"].map(|s| format!("{m}_{s}")));
        }
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .map(|m| {
                let mut r = vec![m.name.clone()];
                for s in seg_summaries(m) {
                    r.extend([
                        s.n.to_string(),
                        num(s.mean),
                        num(s.sd),
                        num(s.ci.map(|c| c.lo)),
                        num(s.ci.map(|c| c.hi)),
                    ]);
                }
                r
            })
            .collect();
        csv(&header, &rows)
    }
}

// ---------------------------------------------------------------------------------------------
// Classification (Table 4)

const CLS_METRICS: [&str; 7] = ["auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "kappa"];

fn cls_estimates(m: &ClsModel) -> [&Estimate; 7] {
    [&m.auc, &m.accuracy, &m.sensitivity, &m.specificity, &m.ppv, &m.npv, &m.kappa]
}

const CLS_FMT: [Fmt; 7] = [UNIT, PCT, PCT, PCT, PCT, PCT, UNIT];

impl Classification {
    /// The model table (Table 4's layout) and DeLong's test: `fmseg evaluate`'s stdout.
    pub fn summary_markdown(&self) -> String {
        let mut s = format!(
            "## Classification\n\n{} cases ({} axSpA, {} non-axSpA); axSpA predicted when probability_axspa >= {}. \
             In parentheses: {:.0}% CIs, percentile bootstrap ({} resamples, seed {}); DeLong: the Wald CI of the AUC \
             from DeLong's variance.\n\n",
            self.cases,
            self.positives,
            self.negatives,
            self.threshold,
            self.level * 100.0,
            self.resamples,
            self.seed
        );
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .map(|m| {
                let mut r = vec![m.name.clone()];
                r.extend(cls_estimates(m).iter().zip(CLS_FMT).map(|(e, f)| f.with_ci(e.value, e.ci)));
                r.insert(2, UNIT.ci(m.delong.map(|d| d.ci)));
                r
            })
            .collect();
        s.push_str(&md_table(
            &[
                "Model",
                "AUC",
                "AUC DeLong CI",
                "Accuracy (%)",
                "Sensitivity (%)",
                "Specificity (%)",
                "PPV (%)",
                "NPV (%)",
                "Cohen's κ",
            ],
            &rows,
        ));
        if let Some(t) = &self.delong_test {
            s.push_str(&format!(
                "\nDeLong's test, {} (AUC {:.3}) against {} (AUC {:.3}): z = {:.3}, p = {}.\n",
                t.a,
                t.auc_a,
                t.b,
                t.auc_b,
                t.z,
                p_value(t.p)
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("\nNote: {n}.\n"));
        }
        s
    }

    /// `classification.md`: the summary, the confusion counts and the ROC figure's key.
    pub fn markdown(&self) -> String {
        let mut s = self.summary_markdown();
        s.push_str(&format!("\n### Counts at threshold {}\n\n", self.threshold));
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .map(|m| {
                let c = m.counts;
                vec![m.name.clone(), c.tp.to_string(), c.fp.to_string(), c.fn_.to_string(), c.tn.to_string()]
            })
            .collect();
        s.push_str(&md_table(&["Model", "TP", "FP", "FN", "TN"], &rows));
        s.push_str(
            "\n### ROC curve\n\n`roc.png`: false-positive rate (x) against true-positive rate (y), grid every 0.1, \
             chance diagonal in grey, the legend a swatch and the AUC per model; ",
        );
        let key: Vec<String> =
            self.models.iter().zip(super::plot::COLOUR_NAMES).map(|(m, c)| format!("{} in {c}", m.name)).collect();
        s.push_str(&key.join(", "));
        s.push_str(".\n");
        s
    }

    /// `classification.csv`: one row per model; the threshold, counts, and per metric value,
    /// ci_lo, ci_hi (AUC also its DeLong CI and variance).
    pub fn csv(&self) -> String {
        let mut header: Vec<String> = ["model", "cases", "positives", "negatives", "threshold", "tp", "fp", "fn", "tn"]
            .map(String::from)
            .to_vec();
        for m in CLS_METRICS {
            header.extend(["", "_ci_lo", "_ci_hi"].map(|s| format!("{m}{s}")));
        }
        header.extend(["auc_delong_ci_lo", "auc_delong_ci_hi", "auc_delong_variance"].map(String::from));
        let rows: Vec<Vec<String>> = self
            .models
            .iter()
            .map(|m| {
                let c = m.counts;
                let mut r = vec![
                    m.name.clone(),
                    self.cases.to_string(),
                    self.positives.to_string(),
                    self.negatives.to_string(),
                    self.threshold.to_string(),
                    c.tp.to_string(),
                    c.fp.to_string(),
                    c.fn_.to_string(),
                    c.tn.to_string(),
                ];
                for e in cls_estimates(m) {
                    r.extend([num(e.value), num(e.ci.map(|c| c.lo)), num(e.ci.map(|c| c.hi))]);
                }
                r.extend([
                    num(m.delong.map(|d| d.ci.lo)),
                    num(m.delong.map(|d| d.ci.hi)),
                    num(m.delong.map(|d| d.variance)),
                ]);
                r
            })
            .collect();
        csv(&header, &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(mean: f64, sd: Option<f64>, ci: Option<(f64, f64)>) -> Summary {
        Summary { n: 3, mean: Some(mean), sd, ci: ci.map(|(lo, hi)| Interval { lo, hi }) }
    }

    #[test]
    fn cells_as_the_paper_prints_them() {
        assert_eq!(PCT.mean_sd(&summary(0.81864, Some(0.01553), None)), "81.86 ± 1.55");
        assert_eq!(PCT.mean_sd(&summary(0.5, None, None)), "50.00");
        assert_eq!(PCT.with_ci(Some(0.8049), Some(Interval { lo: 0.8016, hi: 0.8082 })), "80.49 (80.16–80.82)");
        assert_eq!(UNIT.with_ci(Some(0.876), Some(Interval { lo: 0.811, hi: 0.942 })), "0.876 (0.811–0.942)");
        assert_eq!(UNIT.with_ci(None, None), "-");
        assert_eq!(PCT.with_ci(Some(1.0), None), "100.00");
        assert_eq!(p_value(0.0004), "< 0.001");
        assert_eq!(p_value(0.0312), "0.031");
        assert_eq!((stars(0.0004), stars(0.03), stars(0.2)), ("**", "*", ""));
    }

    #[test]
    fn csv_and_markdown_escape_what_would_break_them() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(md_table(&["a"], &[vec!["x|y".into()]]), "| a |\n|---|\n| x\\|y |\n");
        assert_eq!(num(None), "");
        assert_eq!(num(Some(0.1)), "0.1");
    }
}
