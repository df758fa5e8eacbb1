//! `fmseg::pipeline::stats` against its peers and against hand-worked cases.
//!
//! The peers: SciPy (`ttest_rel`, `wilcoxon`, `mannwhitneyu`, `chi2_contingency`), scikit-learn (`roc_auc_score`, `roc_curve`,
//! `cohen_kappa_score`, `confusion_matrix`), Sun & Xu's fast DeLong (2014, written below in
//! NumPy from the paper's algorithm) and MONAI's HD95 (`get_mask_edges` +
//! `get_surface_distance`, written below with `scipy.ndimage` as MONAI does it), on generated
//! data (several seeds, sizes 5..200, with ties and zeros). Tolerances: 1e-9 relative (or 1e-14
//! absolute, for p-values near 0) on statistics, exact on counts and thresholds.
//!
//! Needs a Python with numpy, scipy and scikit-learn, named by `FMSEG_STATS_PYTHON`
//! (`scripts/install-stats-peers.sh` makes one). Without one the peer test prints SKIPPED and
//! passes, unless `FMSEG_REQUIRE_STATS_PEERS=1` (`.ci/run` sets both): then it fails. The
//! hand-worked cases need no Python.

use fmseg::model::init::SplitMix;
use fmseg::pipeline::metrics::Confusion;
use fmseg::pipeline::stats::*;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn close(got: f64, want: f64, what: &str) -> f64 {
    if got.is_infinite() || want.is_infinite() {
        assert_eq!(got, want, "{what}");
        return 0.0;
    }
    let err = (got - want).abs();
    let rel = err / want.abs().max(1e-300);
    assert!(err <= 1e-14 || rel <= 1e-9, "{what}: got {got:e}, want {want:e} (rel {rel:e})");
    // The deviation reported: relative, where the value is not tiny.
    if want.abs() >= 1e-10 {
        rel
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-worked cases

#[test]
fn stats_hand_worked_auc_roc_and_threshold() {
    // scikit-learn's documentation example.
    let s = [0.1, 0.4, 0.35, 0.8];
    let l = [false, false, true, true];
    assert_eq!(roc_auc(&s, &l).unwrap(), Some(0.75));
    let roc = roc_curve(&s, &l).unwrap().unwrap();
    let th: Vec<f64> = roc.iter().map(|p| p.threshold).collect();
    let fpr: Vec<f64> = roc.iter().map(|p| p.fpr).collect();
    let tpr: Vec<f64> = roc.iter().map(|p| p.tpr).collect();
    assert_eq!(th, [f64::INFINITY, 0.8, 0.4, 0.35, 0.1]);
    assert_eq!(fpr, [0.0, 0.0, 0.5, 0.5, 1.0]);
    assert_eq!(tpr, [0.0, 0.5, 0.5, 1.0, 1.0]);
    // Ties count one half: one positive and one negative at the same score.
    assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]).unwrap(), Some(0.5));

    let c = at_threshold(&s, &l, 0.35).unwrap();
    assert_eq!(c.counts, Confusion { tp: 2, fp: 1, fn_: 0, tn: 1 });
    assert_eq!((c.sensitivity, c.specificity, c.ppv, c.npv), (Some(1.0), Some(0.5), Some(2.0 / 3.0), Some(1.0)));
    assert_eq!(c.accuracy, Some(0.75));
    // Nothing predicted positive: no PPV; kappa of a constant prediction is 0.
    let c = at_threshold(&s, &l, 2.0).unwrap();
    assert_eq!((c.ppv, c.sensitivity, c.kappa), (None, Some(0.0), Some(0.0)));
    // One class only and a constant prediction: pe = 1, no kappa, no specificity.
    let c = Classification::of(Confusion { tp: 3, fp: 0, fn_: 0, tn: 0 });
    assert_eq!((c.kappa, c.specificity, c.npv), (None, None, None));
}

#[test]
fn stats_hand_worked_kappa() {
    // po = 35/50, pe = (25·30 + 25·20)/50² = 0.5: kappa = (0.7 - 0.5)/0.5.
    let c = Classification::of(Confusion { tp: 20, fp: 5, fn_: 10, tn: 15 });
    assert!((c.kappa.unwrap() - 0.4).abs() < 1e-15);
    assert!((c.accuracy.unwrap() - 0.7).abs() < 1e-15);
}

#[test]
fn stats_hand_worked_delong() {
    // Positives 0.9, 0.8; negatives 0.7, 0.85. V10 = [1, 1/2], V01 = [1, 1/2]:
    // AUC 3/4, variance 0.125/2 + 0.125/2.
    let l = [true, true, false, false];
    let a = [0.9, 0.8, 0.7, 0.85];
    let d = delong(&a, &l, 0.95).unwrap().unwrap();
    assert_eq!((d.auc, d.variance), (0.75, 0.125));
    let half = 1.959_963_984_540_054 * 0.125f64.sqrt();
    assert!((d.ci.lo - (0.75 - half)).abs() < 1e-12 && d.ci.hi == 1.0);
    // Second score: positives 0.9, 0.6. V10 = [1, 0], V01 = [1/2, 1/2]; AUC 1/2.
    // var_a 0.125, var_b 0.25, cov 0.125: var of the difference 0.125, z = 0.25/√0.125 = 1/√2,
    // p = erfc(1/2).
    let b = [0.9, 0.6, 0.7, 0.85];
    let t = delong_paired(&a, &b, &l).unwrap().unwrap();
    assert_eq!((t.auc_a, t.auc_b, t.variance), (0.75, 0.5, 0.125));
    assert!((t.z - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-14);
    assert!((t.p - 0.479_500_122_186_953_5).abs() < 1e-14, "{}", t.p);
    assert_eq!(delong(&a, &[true, false, false, false], 0.95).unwrap(), None);
}

#[test]
fn stats_hand_worked_tests() {
    // d = 1, 2, 3: t = 2/(1/√3) = 2√3 with 2 df, whose two-sided p is 1 - t/√(2 + t²).
    let t = ttest_rel(&[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
    let want_t = 2.0 * 3f64.sqrt();
    assert!((t.t - want_t).abs() < 1e-14 && t.df == 2.0);
    assert!((t.p - (1.0 - want_t / (2.0 + want_t * want_t).sqrt())).abs() < 1e-14, "{}", t.p);
    assert!(ttest_rel(&[1.0, 2.0], &[0.0, 1.0]).is_err(), "zero variance");

    // All five differences positive: W+ = 15, exact p = 2/2⁵.
    let w = wilcoxon(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0.0; 5]).unwrap();
    assert_eq!((w.statistic, w.p, w.method), (0.0, 0.0625, WilcoxonMethod::Exact));
    assert!(w.statistic.is_sign_positive(), "W- is an empty sum: +0, not -0 (which prints as \"-0\")");
    // A zero among six: the sign-flip distribution over 2⁶ patterns of 5 non-zero ranks,
    // P(T >= 15) = 2/64 (the zero's flip doubles every count).
    let w = wilcoxon(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[0.0, 0.0, 0.0, 0.0, 0.0, 6.0]).unwrap();
    assert_eq!((w.statistic, w.p, w.method), (0.0, 0.0625, WilcoxonMethod::Permutation));

    // Mann-Whitney, complete separation of 3 and 3: U1 = 0, U = 9, exact p = 2/C(6, 3).
    let u = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
    assert_eq!((u.u1, u.exact), (0.0, true));
    assert!((u.p - 0.1).abs() < 1e-15, "{}", u.p);
    assert!(mann_whitney(&[1.0, 1.0], &[1.0]).is_err());
    // 8 against a million: the exact counts would overflow; the normal approximation answers.
    let big: Vec<f64> = (0..1_000_000).map(|i| i as f64 + 0.5).collect();
    let u = mann_whitney(&[-1.0, 1e7, 5e4, 3.0, 7.0, 9e5, 1e3, 2e3], &big).unwrap();
    assert!(!u.exact && u.p > 0.0 && u.p <= 1.0);
    // Chi-square of [[10, 20], [20, 10]]: E = 15, Yates |O - E| = 4.5, statistic 4·4.5²/15 = 5.4
    // with 1 dof, whose p is 2 Φ(-√5.4).
    let c = chi2_contingency(&[&[10, 20], &[20, 10]]).unwrap();
    assert!((c.statistic - 5.4).abs() < 1e-13 && c.dof == 1);
    assert!((c.p - 2.0 * norm_sf(5.4f64.sqrt())).abs() < 1e-15, "{}", c.p);
    assert!(chi2_contingency(&[&[1, 2], &[0, 0]]).is_err());
    assert!(chi2_contingency(&[&[1, 2], &[3]]).is_err());

    let (m, s) = (mean(&[1.0, 2.0, 3.0, 4.0]).unwrap(), sd(&[1.0, 2.0, 3.0, 4.0]).unwrap());
    assert_eq!((m, s), (2.5, Some((5.0f64 / 3.0).sqrt())));
    // numpy.percentile([1, 2, 3, 4], 95) (linear), bit for bit.
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 95.0).unwrap(), 3.849_999_999_999_999_6);
}

#[test]
fn stats_hand_worked_hd95_and_volumes() {
    // Two full planes i = 2 and i = 5 of a 8x5x6 grid: every surface voxel is 3 voxels of 2 mm
    // from the other plane.
    let dims = [8, 5, 6];
    let plane = |i0: usize| (0..240).map(|v| u8::from(v / 30 == i0)).collect::<Vec<u8>>();
    let h = hd95(&plane(2), &plane(5), dims, [2.0, 0.7, 0.9]).unwrap().unwrap();
    assert!((h - 6.0).abs() < 1e-12, "{h}");
    // Two single voxels (1,1,1) and (2,3,4): √(1² + (2·0.5)² + (3·2)²).
    let mut a = vec![0u8; 240];
    let mut b = vec![0u8; 240];
    a[30 + 6 + 1] = 1;
    b[60 + 18 + 4] = 1;
    let h = hd95(&a, &b, dims, [1.0, 0.5, 2.0]).unwrap().unwrap();
    assert!((h - 38f64.sqrt()).abs() < 1e-12, "{h}");
    // A mask against itself: 0.
    assert_eq!(hd95(&plane(3), &plane(3), dims, [1.0; 3]).unwrap(), Some(0.0));

    let v = volumes(&Confusion { tp: 100, fp: 20, fn_: 30, tn: 0 }, 2.5).unwrap();
    assert_eq!((v.pred_ml, v.label_ml), (0.3, 0.325));
    assert!((v.difference_ml + 0.025).abs() < 1e-15 && (v.relative.unwrap() - 1.0 / 13.0).abs() < 1e-15);
    assert_eq!(volumes(&Confusion::default(), 1.0).unwrap().relative, None);
}

#[test]
fn stats_bootstrap_is_seeded_and_sane() {
    let mut rng = SplitMix(7);
    let xs: Vec<f64> = (0..400).map(|_| (0..12).map(|_| rng.unit()).sum::<f64>() - 6.0).collect();
    let a = bootstrap_mean_ci(&xs, 2000, 42, 0.95).unwrap().unwrap();
    assert_eq!(a, bootstrap_mean_ci(&xs, 2000, 42, 0.95).unwrap().unwrap(), "same seed, same CI");
    assert_ne!(a, bootstrap_mean_ci(&xs, 2000, 43, 0.95).unwrap().unwrap());
    // Close to the normal-theory interval mean ± 1.96 SD/√n.
    let (m, s) = (mean(&xs).unwrap(), sd(&xs).unwrap().unwrap());
    let half = 1.96 * s / (xs.len() as f64).sqrt();
    assert!(a.lo < m && m < a.hi);
    assert!(((a.hi - a.lo) / (2.0 * half) - 1.0).abs() < 0.1, "{a:?} vs ±{half}");
    // AUC through the generic form; resamples with one class are skipped.
    let scores: Vec<f64> = (0..40).map(|i| i as f64 + if i % 3 == 0 { 20.0 } else { 0.0 }).collect();
    let labels: Vec<bool> = (0..40).map(|i| i >= 20).collect();
    let auc = roc_auc(&scores, &labels).unwrap().unwrap();
    let ci = bootstrap_ci(40, 500, 1, 0.95, |idx| {
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
        roc_auc(&s, &l).ok().flatten()
    })
    .unwrap()
    .unwrap();
    assert!(ci.lo < auc && auc < ci.hi, "{ci:?} {auc}");
    assert!(bootstrap_ci(0, 10, 1, 0.95, |_| Some(0.0)).is_err());
    assert_eq!(bootstrap_ci(5, 10, 1, 0.95, |_| None).unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Against the peers

fn python() -> Option<PathBuf> {
    let required = std::env::var("FMSEG_REQUIRE_STATS_PEERS").is_ok_and(|v| v == "1");
    let Some(py) = std::env::var_os("FMSEG_STATS_PYTHON") else {
        assert!(!required, "FMSEG_REQUIRE_STATS_PEERS=1 but FMSEG_STATS_PYTHON is not set");
        eprintln!("SKIPPED: the statistics peers need FMSEG_STATS_PYTHON (scripts/install-stats-peers.sh)");
        return None;
    };
    let probe = Command::new(&py).args(["-c", "import numpy, scipy.stats, scipy.ndimage, sklearn.metrics"]).output();
    match probe {
        Ok(o) if o.status.success() => Some(PathBuf::from(py)),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            let msg = format!("FMSEG_STATS_PYTHON={py:?} cannot import numpy, scipy, sklearn: {why}");
            assert!(!required, "FMSEG_REQUIRE_STATS_PEERS=1 but {msg}");
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// Reads one case per line (`kind` then `|`-separated comma lists), prints the peer's numbers.
const PEER: &str = r#"
import sys, warnings
import numpy as np
from scipy import stats, ndimage
from sklearn import metrics
warnings.simplefilter("ignore")

def midrank(x):
    # Sun & Xu (2014), Algorithm: midranks by one sort.
    J = np.argsort(x, kind="mergesort"); Z = x[J]; N = len(x); T = np.zeros(N)
    i = 0
    while i < N:
        j = i
        while j < N and Z[j] == Z[i]:
            j += 1
        T[i:j] = 0.5 * (i + j - 1)
        i = j
    T2 = np.empty(N); T2[J] = T + 1
    return T2

def fast_delong(preds, labels):
    order = np.argsort(-labels.astype(int), kind="mergesort")
    preds = preds[:, order]; m = int(labels.sum()); n = preds.shape[1] - m
    k = preds.shape[0]
    tx = np.array([midrank(preds[r, :m]) for r in range(k)])
    ty = np.array([midrank(preds[r, m:]) for r in range(k)])
    tz = np.array([midrank(preds[r]) for r in range(k)])
    aucs = tz[:, :m].sum(axis=1) / m / n - (m + 1.0) / 2.0 / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov

def edges(m):
    m = m.astype(bool)
    return m ^ ndimage.binary_erosion(m)

def hd(pred, gt, spacing, q):
    ep, eg = edges(pred), edges(gt)
    d1 = ndimage.distance_transform_edt(~eg, sampling=spacing)[ep]
    d2 = ndimage.distance_transform_edt(~ep, sampling=spacing)[eg]
    return max(np.percentile(d1, q), np.percentile(d2, q))

for line in sys.stdin:
    kind, *parts = line.split()
    a = [np.array([float(v) for v in p.split(",")]) for p in parts]
    if kind == "ttest":
        r = stats.ttest_rel(a[0], a[1]); out = [r.statistic, r.df, r.pvalue]
    elif kind == "wilcoxon":
        r = stats.wilcoxon(a[0], a[1]); out = [r.statistic, r.pvalue]
    elif kind == "mwu":
        r = stats.mannwhitneyu(a[0], a[1]); out = [r.statistic, r.pvalue]
    elif kind == "chi2":
        r, c = int(a[0][0]), int(a[0][1])
        res = stats.chi2_contingency(a[1].reshape(r, c))
        out = [res.statistic, res.dof, res.pvalue]
    elif kind == "auc":
        y = a[1].astype(int)
        out = [metrics.roc_auc_score(y, a[0])]
        fpr, tpr, th = metrics.roc_curve(y, a[0], drop_intermediate=False)
        out += [v for t in zip(th, fpr, tpr) for v in t]
    elif kind == "delong":
        y = a[2].astype(bool)
        aucs, cov = fast_delong(np.vstack([a[0], a[1]]), y)
        l = np.array([1.0, -1.0]); var = l @ cov @ l
        z = (aucs[0] - aucs[1]) / np.sqrt(var)
        out = [aucs[0], cov[0, 0], aucs[1], cov[1, 1], var, z, 2 * stats.norm.sf(abs(z))]
    elif kind == "threshold":
        y = a[1].astype(int); p = (a[0] >= a[2][0]).astype(int)
        tn, fp, fn, tp = metrics.confusion_matrix(y, p, labels=[0, 1]).ravel()
        out = [tp, fp, fn, tn, metrics.cohen_kappa_score(y, p)]
    elif kind == "hd":
        dims = tuple(int(v) for v in a[0]); sp = a[1]
        pred = a[2].reshape(dims); gt = a[3].reshape(dims)
        out = [hd(pred, gt, sp, 95), hd(pred, gt, sp, 100)]
    print(" ".join(repr(float(v)) for v in out), flush=True)
"#;

fn csv(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(",")
}

fn bools(xs: &[bool]) -> String {
    xs.iter().map(|&x| if x { "1" } else { "0" }).collect::<Vec<_>>().join(",")
}

fn normalish(rng: &mut SplitMix) -> f64 {
    (0..12).map(|_| rng.unit()).sum::<f64>() - 6.0
}

/// Generated cases: (peer input line, a closure that checks our result against the peer's
/// numbers and returns the largest relative deviation under its name).
type Check = Box<dyn Fn(&[f64]) -> (&'static str, f64)>;

fn cases() -> Vec<(String, Check)> {
    let mut out: Vec<(String, Check)> = Vec::new();
    let sizes = [5usize, 6, 8, 11, 13, 14, 20, 30, 50, 51, 80, 200];
    for seed in 1..=4u64 {
        for &n in &sizes {
            let mut rng = SplitMix(seed * 1000 + n as u64);
            for discrete in [false, true] {
                // Paired samples: continuous (no ties), or on a 0.5 grid (ties and zeros).
                let q = |x: f64| if discrete { (x * 2.0).round() / 2.0 } else { x };
                let a: Vec<f64> = (0..n).map(|_| q(3.0 * normalish(&mut rng))).collect();
                let shift = 0.3 * (seed as f64 - 2.0);
                let b: Vec<f64> = a.iter().map(|x| x - q(shift + normalish(&mut rng))).collect();
                let (a2, b2) = (a.clone(), b.clone());
                if let Ok(t) = ttest_rel(&a, &b) {
                    out.push((
                        format!("ttest {} {}", csv(&a), csv(&b)),
                        Box::new(move |w| {
                            assert_eq!(t.df, w[1]);
                            ("ttest_rel", close(t.t, w[0], "t").max(close(t.p, w[2], "t-test p")))
                        }),
                    ));
                }
                if let Ok(r) = wilcoxon(&a2, &b2) {
                    out.push((
                        format!("wilcoxon {} {}", csv(&a2), csv(&b2)),
                        Box::new(move |w| {
                            let what = format!("wilcoxon n={} {:?}", a2.len(), r.method);
                            assert_eq!(r.statistic, w[0], "{what}");
                            let name = match r.method {
                                WilcoxonMethod::Exact => "wilcoxon (exact)",
                                WilcoxonMethod::Permutation => "wilcoxon (sign-flip permutation)",
                                WilcoxonMethod::Asymptotic => "wilcoxon (asymptotic)",
                            };
                            (name, close(r.p, w[1], &what))
                        }),
                    ));
                }

                // Independent samples of unequal sizes (one small: the exact branch).
                let m = if n % 2 == 0 { 3 + n % 7 } else { n / 2 + 1 };
                let ys: Vec<f64> = (0..m).map(|_| q(3.0 * normalish(&mut rng) + 1.0)).collect();
                let xs = a.clone();
                if let Ok(r) = mann_whitney(&xs, &ys) {
                    out.push((
                        format!("mwu {} {}", csv(&xs), csv(&ys)),
                        Box::new(move |w| {
                            assert_eq!(r.u1, w[0], "U1");
                            let name = if r.exact { "mannwhitneyu (exact)" } else { "mannwhitneyu (asymptotic)" };
                            (name, close(r.p, w[1], name))
                        }),
                    ));
                }
                // A contingency table of small counts.
                let (rr, cc) = (2 + (rng.unit() * 2.0) as usize, 2 + (rng.unit() * 2.0) as usize);
                let cells: Vec<u64> = (0..rr * cc).map(|_| 1 + (rng.unit() * n as f64) as u64).collect();
                let rows: Vec<&[u64]> = cells.chunks(cc).collect();
                let chi = chi2_contingency(&rows).unwrap();
                let cellsf: Vec<f64> = cells.iter().map(|&x| x as f64).collect();
                out.push((
                    format!("chi2 {rr},{cc} {}", csv(&cellsf)),
                    Box::new(move |w| {
                        assert_eq!(chi.dof as f64, w[1]);
                        ("chi2_contingency", close(chi.statistic, w[0], "chi2").max(close(chi.p, w[2], "chi2 p")))
                    }),
                ));

                // Scores and labels: positives shifted up; discrete scores tie.
                let labels: Vec<bool> = (0..n).map(|_| rng.unit() < 0.4).collect();
                let mut labels = labels;
                labels[0] = true;
                labels[1] = false;
                labels[2] = true;
                labels[3] = false;
                let score = |rng: &mut SplitMix, l: bool, gain: f64| q(normalish(rng) + if l { gain } else { 0.0 });
                let sa: Vec<f64> = labels.iter().map(|&l| score(&mut rng, l, 1.0)).collect();
                let sb: Vec<f64> = labels.iter().map(|&l| score(&mut rng, l, 0.5)).collect();
                let (auc, roc) = (roc_auc(&sa, &labels).unwrap().unwrap(), roc_curve(&sa, &labels).unwrap().unwrap());
                out.push((
                    format!("auc {} {}", csv(&sa), bools(&labels)),
                    Box::new(move |w| {
                        let dev = close(auc, w[0], "roc_auc");
                        assert_eq!(roc.len() * 3, w.len() - 1, "roc_curve points");
                        for (p, t) in roc.iter().zip(w[1..].chunks(3)) {
                            assert_eq!([p.threshold, p.fpr, p.tpr], t, "roc_curve point");
                        }
                        ("roc_auc + roc_curve", dev)
                    }),
                ));
                let d = delong(&sa, &labels, 0.95).unwrap().unwrap();
                let db = delong(&sb, &labels, 0.95).unwrap().unwrap();
                if let Some(t) = delong_paired(&sa, &sb, &labels).unwrap() {
                    out.push((
                        format!("delong {} {} {}", csv(&sa), csv(&sb), bools(&labels)),
                        Box::new(move |w| {
                            let mut dev = close(d.auc, w[0], "auc a").max(close(d.variance, w[1], "var a"));
                            dev = dev.max(close(db.auc, w[2], "auc b")).max(close(db.variance, w[3], "var b"));
                            dev = dev.max(close(t.variance, w[4], "var diff")).max(close(t.z, w[5], "z"));
                            ("DeLong", dev.max(close(t.p, w[6], "DeLong p")))
                        }),
                    ));
                }
                let th = sa[n / 2];
                let c = at_threshold(&sa, &labels, th).unwrap();
                out.push((
                    format!("threshold {} {} {th:?}", csv(&sa), bools(&labels)),
                    Box::new(move |w| {
                        let k = &c.counts;
                        assert_eq!([k.tp, k.fp, k.fn_, k.tn].map(|x| x as f64), w[..4], "confusion counts");
                        let dev = match c.kappa {
                            Some(kappa) => close(kappa, w[4], "kappa"),
                            None => {
                                assert!(w[4].is_nan(), "kappa None vs {}", w[4]);
                                0.0
                            }
                        };
                        ("cohen_kappa + counts", dev)
                    }),
                ));
            }
        }
        // Masks: two noisy ellipsoids on an anisotropic grid.
        for k in 0..3u64 {
            let mut rng = SplitMix(seed * 77 + k);
            let dims =
                [4 + (rng.unit() * 10.0) as usize, 5 + (rng.unit() * 12.0) as usize, 3 + (rng.unit() * 14.0) as usize];
            let spacing = [0.5 + 2.5 * rng.unit(), 0.5 + 2.5 * rng.unit(), 0.5 + 2.5 * rng.unit()];
            let blob = |rng: &mut SplitMix| {
                let c: Vec<f64> = dims.iter().map(|&d| d as f64 * (0.3 + 0.4 * rng.unit())).collect();
                let r: Vec<f64> = dims.iter().map(|&d| d as f64 * (0.15 + 0.3 * rng.unit())).collect();
                let mut m = vec![0u8; dims.iter().product()];
                for (v, x) in m.iter_mut().enumerate() {
                    let p = [v / (dims[1] * dims[2]), (v / dims[2]) % dims[1], v % dims[2]];
                    let e: f64 = (0..3).map(|a| ((p[a] as f64 - c[a]) / r[a]).powi(2)).sum();
                    *x = u8::from(e < 1.0 + 0.4 * (rng.unit() - 0.5));
                }
                m
            };
            let (p, l) = (blob(&mut rng), blob(&mut rng));
            if let (Some(h), Some(h100)) =
                (hd95(&p, &l, dims, spacing).unwrap(), hausdorff_percentile(&p, &l, dims, spacing, 100.0).unwrap())
            {
                let to_f = |m: &[u8]| m.iter().map(|&x| x as f64).collect::<Vec<f64>>();
                let dimsf = dims.map(|d| d as f64);
                out.push((
                    format!("hd {} {} {} {}", csv(&dimsf), csv(&spacing), csv(&to_f(&p)), csv(&to_f(&l))),
                    Box::new(move |w| {
                        ("HD95 (MONAI via scipy.ndimage)", close(h, w[0], "hd95").max(close(h100, w[1], "hd100")))
                    }),
                ));
            }
        }
    }
    out
}

#[test]
fn stats_match_scipy_sklearn_and_monai() {
    let Some(py) = python() else { return };
    let cases = cases();
    let input: String = cases.iter().map(|(l, _)| format!("{l}\n")).collect();
    let mut child = Command::new(&py)
        .args(["-c", PEER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the peer Python");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).expect("write the cases"));
    let output = child.wait_with_output().expect("peer Python");
    writer.join().expect("writer");
    assert!(output.status.success(), "peer Python failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "one answer per case");
    let mut worst: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for ((_, check), line) in cases.iter().zip(lines) {
        let want: Vec<f64> = line.split_whitespace().map(|v| v.parse().expect("a float")).collect();
        let (name, dev) = check(&want);
        let e = worst.entry(name).or_insert((0.0, 0));
        e.0 = e.0.max(dev);
        e.1 += 1;
    }
    for (name, (dev, n)) in &worst {
        eprintln!("stats peer {name}: {n} cases, largest relative deviation {dev:.2e}");
    }
    for must in [
        "ttest_rel",
        "wilcoxon (exact)",
        "wilcoxon (sign-flip permutation)",
        "wilcoxon (asymptotic)",
        "mannwhitneyu (exact)",
        "mannwhitneyu (asymptotic)",
        "chi2_contingency",
        "roc_auc + roc_curve",
        "DeLong",
        "cohen_kappa + counts",
        "HD95 (MONAI via scipy.ndimage)",
    ] {
        assert!(worst.contains_key(must), "no case of {must}");
    }
}
