//! The statistics behind `fmseg evaluate` (the layout of the paper's Tables 2 and 4): pure
//! functions, each matching a named peer (tests/pipeline/stats.rs checks them against it).
//!
//! - Descriptives: [`mean`], [`sd`] (n - 1), [`percentile`] (NumPy's linear), seeded
//!   percentile bootstrap CIs ([`bootstrap_ci`] of any statistic of resampled indices,
//!   [`bootstrap_mean_ci`]).
//! - Tests: [`ttest_rel`] (`scipy.stats.ttest_rel`), [`wilcoxon`] (`scipy.stats.wilcoxon`
//!   defaults as of SciPy 1.17), [`mann_whitney`] (`scipy.stats.mannwhitneyu`),
//!   [`chi2_contingency`] (`scipy.stats.chi2_contingency`): the paper's methods section.
//! - ROC: [`roc_auc`] (`sklearn.metrics.roc_auc_score`), [`roc_curve`]
//!   (`sklearn.metrics.roc_curve(drop_intermediate=False)`), [`delong`] (DeLong variance and
//!   Wald CI of one AUC), [`delong_paired`] (DeLong's test of two correlated AUCs).
//! - At a threshold: [`at_threshold`] / [`Classification`] (accuracy, sensitivity,
//!   specificity, PPV, NPV, Cohen's kappa = `sklearn.metrics.cohen_kappa_score`), on the
//!   [`Confusion`] counts of [`super::metrics`].
//! - Segmentation: [`hd95`] (MONAI's `compute_hausdorff_distance(percentile=95)`),
//!   [`volumes`] (volume difference).
//!
//! Invalid input (empty, length mismatch, NaN or infinite values) is an [`Error`]; a value that
//! does not exist for valid input (a zero denominator, an empty mask) is `None`. Nothing
//! panics. The special functions (log-gamma, regularized incomplete beta and gamma) are
//! written here (Lanczos, Numerical Recipes continued fractions), accurate to ~1e-14.

use super::metrics::Confusion;
use crate::error::{Error, Result};
use crate::model::init::SplitMix;

// ---------------------------------------------------------------------------------------------
// Input checks

fn finite(what: &str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() {
        return Err(Error::Value(format!("stats: {what} is empty")));
    }
    if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
        return Err(Error::Value(format!("stats: {what}[{i}] is {} (not finite)", xs[i])));
    }
    Ok(())
}

fn same_len(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::Shape(format!("stats: {what}: lengths {a} and {b} differ")));
    }
    Ok(())
}

fn paired_diffs(a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    same_len("paired samples", a.len(), b.len())?;
    finite("first sample", a)?;
    finite("second sample", b)?;
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
}

// ---------------------------------------------------------------------------------------------
// Descriptives

/// Arithmetic mean (`numpy.mean`).
pub fn mean(xs: &[f64]) -> Result<f64> {
    finite("sample", xs)?;
    Ok(xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample standard deviation with n - 1 in the denominator (`numpy.std(ddof=1)`); `None` for a
/// single value.
pub fn sd(xs: &[f64]) -> Result<Option<f64>> {
    let m = mean(xs)?;
    if xs.len() < 2 {
        return Ok(None);
    }
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Ok(Some((ss / (xs.len() - 1) as f64).sqrt()))
}

/// The `q`-th percentile (0..=100) with linear interpolation between order statistics
/// (`numpy.percentile(method='linear')`, the default).
pub fn percentile(xs: &[f64], q: f64) -> Result<f64> {
    finite("sample", xs)?;
    if !(0.0..=100.0).contains(&q) {
        return Err(Error::Value(format!("stats: percentile {q} outside 0..=100")));
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    Ok(sorted_percentile(&s, q))
}

fn sorted_percentile(s: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    let t = pos - lo as f64;
    // NumPy's lerp: a + (b - a) t, computed from the nearer end.
    if t >= 0.5 {
        s[hi] - (s[hi] - s[lo]) * (1.0 - t)
    } else {
        s[lo] + (s[hi] - s[lo]) * t
    }
}

/// A confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ci {
    pub lo: f64,
    pub hi: f64,
}

/// Percentile bootstrap CI at `level` (e.g. 0.95) of a statistic of `n` paired observations:
/// `resamples` times, draw `n` indices with replacement (SplitMix seeded with `seed`, so the
/// result is a function of the arguments), evaluate `stat` on them; the CI is the
/// `(1-level)/2` and `(1+level)/2` percentiles (NumPy linear) of the values. Resamples where
/// `stat` is `None` (e.g. an AUC of a resample with one class only) are skipped; `None` when
/// fewer than half of them have a value.
pub fn bootstrap_ci<F>(n: usize, resamples: usize, seed: u64, level: f64, mut stat: F) -> Result<Option<Ci>>
where
    F: FnMut(&[usize]) -> Option<f64>,
{
    if n == 0 || resamples == 0 {
        return Err(Error::Value("stats: bootstrap of an empty sample or with no resamples".into()));
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(Error::Value(format!("stats: confidence level {level} outside (0, 1)")));
    }
    let mut rng = SplitMix(seed);
    let mut idx = vec![0usize; n];
    let mut vals = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for i in idx.iter_mut() {
            *i = ((rng.unit() * n as f64) as usize).min(n - 1);
        }
        if let Some(v) = stat(&idx).filter(|v| v.is_finite()) {
            vals.push(v);
        }
    }
    if vals.len() * 2 < resamples {
        return Ok(None);
    }
    vals.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0 * 100.0;
    Ok(Some(Ci { lo: sorted_percentile(&vals, a), hi: sorted_percentile(&vals, 100.0 - a) }))
}

/// [`bootstrap_ci`] of the mean of `xs`.
pub fn bootstrap_mean_ci(xs: &[f64], resamples: usize, seed: u64, level: f64) -> Result<Option<Ci>> {
    finite("sample", xs)?;
    bootstrap_ci(xs.len(), resamples, seed, level, |idx| {
        Some(idx.iter().map(|&i| xs[i]).sum::<f64>() / idx.len() as f64)
    })
}

// ---------------------------------------------------------------------------------------------
// Special functions

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 coefficients; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized incomplete beta I_x(a, b) (Numerical Recipes' `betai` with a modified-Lentz
/// continued fraction).
fn betainc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * betacf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * betacf(b, a, 1.0 - x) / b
    }
}

fn betacf(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / away_from_zero(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        // The even and the odd term of the fraction, one modified-Lentz step each.
        h *= lentz_step(m * (b - m) * x / ((qam + m2) * (a + m2)), 1.0, &mut c, &mut d);
        let del = lentz_step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)), 1.0, &mut c, &mut d);
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// One modified-Lentz step of a continued fraction with partial numerator `an` and partial
/// denominator `bn`: updates `c` and `d` and returns the factor `d * c` the convergent is
/// multiplied by.
fn lentz_step(an: f64, bn: f64, c: &mut f64, d: &mut f64) -> f64 {
    *d = 1.0 / away_from_zero(bn + an * *d);
    *c = away_from_zero(bn + an / *c);
    *d * *c
}

/// `v`, or a tiny positive number where `v` is (nearly) zero, so that Lentz's method never divides by zero.
fn away_from_zero(v: f64) -> f64 {
    if v.abs() < 1e-300 {
        1e-300
    } else {
        v
    }
}

/// Regularized upper incomplete gamma Q(a, x) (series for x < a + 1, continued fraction above).
fn gammaincc(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_front = -x + a * x.ln() - ln_gamma(a);
    if x < a + 1.0 {
        let (mut ap, mut del) = (a, 1.0 / a);
        let mut sum = del;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        1.0 - sum * ln_front.exp()
    } else {
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / away_from_zero(0.0);
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            b += 2.0;
            let del = lentz_step(-(i as f64) * (i as f64 - a), b, &mut c, &mut d);
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        ln_front.exp() * h
    }
}

/// Standard normal survival function P(Z > z) (`scipy.stats.norm.sf`), via erfc = Q(1/2, z²/2).
pub fn norm_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let upper = 0.5 * gammaincc(0.5, z * z / 2.0);
    if z >= 0.0 {
        upper
    } else {
        1.0 - upper
    }
}

/// Standard normal quantile (`scipy.stats.norm.ppf`) by bisection on [`norm_sf`]; p in (0, 1).
pub fn norm_ppf(p: f64) -> Option<f64> {
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if 1.0 - norm_sf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(0.5 * (lo + hi))
}

/// Two-sided p of Student's t with `df` degrees of freedom: `2 * scipy.stats.t.sf(|t|, df)`.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return 0.0;
    }
    betainc(df / 2.0, 0.5, df / (df + t * t))
}

// ---------------------------------------------------------------------------------------------
// Paired tests

/// The result of a test: statistic and two-sided p-value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TTest {
    pub t: f64,
    pub df: f64,
    pub p: f64,
}

/// Paired two-sided t-test of `a - b`, as `scipy.stats.ttest_rel(a, b)`: t = mean(d) /
/// (sd(d) / √n), df = n - 1. An error for fewer than two pairs or differences with zero
/// variance (SciPy: NaN or ±inf).
pub fn ttest_rel(a: &[f64], b: &[f64]) -> Result<TTest> {
    let d = paired_diffs(a, b)?;
    if d.len() < 2 {
        return Err(Error::Value("stats: a paired t-test needs at least two pairs".into()));
    }
    let n = d.len() as f64;
    let m = d.iter().sum::<f64>() / n;
    let s = (d.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt();
    if s == 0.0 {
        return Err(Error::Value("stats: paired differences have zero variance".into()));
    }
    let t = m / (s / n.sqrt());
    let df = n - 1.0;
    Ok(TTest { t, df, p: t_two_sided_p(t, df) })
}

/// How [`wilcoxon`] computed its p-value (SciPy's choice under `method='auto'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WilcoxonMethod {
    /// The exact null distribution of W+ (n ≤ 50 pairs, no zero difference, no ties).
    Exact,
    /// All 2^n sign flips enumerated (n ≤ 13 pairs with zeros or ties; SciPy's
    /// `PermutationMethod()`, deterministic at that size).
    Permutation,
    /// Normal approximation with the tie correction, no continuity correction.
    Asymptotic,
}

/// Wilcoxon signed-rank result: `statistic` = min(W+, W-), two-sided `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wilcoxon {
    pub statistic: f64,
    pub p: f64,
    pub method: WilcoxonMethod,
}

/// Two-sided Wilcoxon signed-rank test of `a - b`, as `scipy.stats.wilcoxon(a, b)` with its
/// defaults in SciPy 1.17 (`zero_method='wilcox'`, `correction=False`, `method='auto'`):
/// zero differences are dropped, |d| ranked with midranks. n (pairs, zeros included) > 50:
/// asymptotic; n ≤ 50 with no zeros and no ties: exact, p = 2 min(P(W+ ≥ ⌊w⌋), P(W+ ≤ ⌈w⌉))
/// clipped to 1; n ≤ 13 with zeros or ties: the exact sign-flip permutation distribution
/// (p = 2 min(P(T ≤ w), P(T ≥ w)) with SciPy's relative tolerance 1e-14, clipped to 1);
/// otherwise asymptotic: z = (W+ - m(m+1)/4) / √((m(m+1)(2m+1) - Σ(t³-t)/2) / 24) over the m
/// non-zero differences, p = 2 Φ(-|z|). An error when every difference is zero.
pub fn wilcoxon(a: &[f64], b: &[f64]) -> Result<Wilcoxon> {
    let d = paired_diffs(a, b)?;
    let n_all = d.len();
    let nz: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0).collect();
    let m = nz.len();
    if m == 0 {
        return Err(Error::Value("stats: Wilcoxon test of differences that are all zero".into()));
    }
    let abs: Vec<f64> = nz.iter().map(|x| x.abs()).collect();
    let (ranks, ties) = midranks(&abs);
    // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0".
    let w_plus = nz.iter().zip(&ranks).filter(|(x, _)| **x > 0.0).map(|(_, r)| r).sum::<f64>() + 0.0;
    let w_minus = nz.iter().zip(&ranks).filter(|(x, _)| **x < 0.0).map(|(_, r)| r).sum::<f64>() + 0.0;
    let statistic = w_plus.min(w_minus);
    let has_ties = ties.iter().any(|&t| t > 1);
    let zeros = n_all > m;
    let method = if n_all > 50 {
        WilcoxonMethod::Asymptotic
    } else if !(has_ties || zeros) {
        WilcoxonMethod::Exact
    } else if n_all <= 13 {
        WilcoxonMethod::Permutation
    } else {
        WilcoxonMethod::Asymptotic
    };
    let p = match method {
        WilcoxonMethod::Exact => {
            // Counts of each W+ = 0..=m(m+1)/2 over the 2^m sign patterns (≤ 2^50: exact in u64).
            let max = m * (m + 1) / 2;
            let mut counts = vec![0u64; max + 1];
            counts[0] = 1;
            for k in 1..=m {
                for s in (k..=max).rev() {
                    counts[s] += counts[s - k];
                }
            }
            let total = 2f64.powi(m as i32);
            let k_sf = w_plus.floor() as usize;
            let k_cdf = (w_plus.ceil() as usize).min(max);
            let sf = counts[k_sf.min(max)..].iter().sum::<u64>() as f64 / total;
            let cdf = counts[..=k_cdf].iter().sum::<u64>() as f64 / total;
            (2.0 * sf.min(cdf)).clamp(0.0, 1.0)
        }
        WilcoxonMethod::Permutation => {
            // Every sign flip of the n differences (zeros stay zero and add nothing).
            let mut null = Vec::with_capacity(1 << n_all);
            let signed: Vec<(f64, f64)> = d
                .iter()
                .map(|&x| {
                    if x == 0.0 {
                        (0.0, 0.0)
                    } else {
                        let i = nz.iter().position(|&y| y == x).unwrap_or(0);
                        (x, ranks[i])
                    }
                })
                .collect();
            for mask in 0u32..(1u32 << n_all) {
                let mut t = 0.0;
                for (j, &(x, r)) in signed.iter().enumerate() {
                    let s = if mask >> j & 1 == 1 { -x } else { x };
                    if s > 0.0 {
                        t += r;
                    }
                }
                null.push(t);
            }
            let gamma = (1e-14 * w_plus).abs();
            let total = null.len() as f64;
            let less = null.iter().filter(|&&t| t <= w_plus + gamma).count() as f64 / total;
            let greater = null.iter().filter(|&&t| t >= w_plus - gamma).count() as f64 / total;
            (2.0 * less.min(greater)).clamp(0.0, 1.0)
        }
        WilcoxonMethod::Asymptotic => {
            let mf = m as f64;
            let tie: f64 = ties.iter().map(|&t| (t as f64).powi(3) - t as f64).sum();
            let se = ((mf * (mf + 1.0) * (2.0 * mf + 1.0) - tie / 2.0) / 24.0).sqrt();
            let z = (w_plus - mf * (mf + 1.0) / 4.0) / se;
            (2.0 * norm_sf(z.abs())).min(1.0)
        }
    };
    Ok(Wilcoxon { statistic, p, method })
}

/// Midranks (1-based, ties averaged: `scipy.stats.rankdata(method='average')`) and the size of
/// every tie group.
fn midranks(xs: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&i, &j| xs[i].total_cmp(&xs[j]));
    let mut ranks = vec![0.0; xs.len()];
    let mut groups = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && xs[order[j]] == xs[order[i]] {
            j += 1;
        }
        let r = (i + j + 1) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = r;
        }
        groups.push(j - i);
        i = j;
    }
    (ranks, groups)
}

/// Mann-Whitney U result: `u1` (of the first sample, as SciPy returns it), two-sided `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    pub u1: f64,
    pub p: f64,
    /// Whether the exact null distribution gave `p` (else the normal approximation).
    pub exact: bool,
}

/// Two-sided Mann-Whitney U test of independent samples `x` and `y`, as
/// `scipy.stats.mannwhitneyu(x, y)` (SciPy 1.17 defaults: `use_continuity=True`,
/// `method='auto'`): U1 = R1 - n1(n1+1)/2 with midranks, U = max(U1, U2). Exact when either
/// sample has at most 8 values and nothing ties (and the counts fit, see below): p = 2 P(U' >= U) from the exact null
/// distribution (Gaussian binomial coefficients), clipped to 1; otherwise
/// z = (U - n1 n2/2 - 1/2) / √(n1 n2/12 ((n+1) - Σ(t³-t)/(n(n-1)))), p = 2 Φ(-z) clipped to 1.
/// An error when every value ties (zero variance).
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Result<MannWhitney> {
    finite("first sample", x)?;
    finite("second sample", y)?;
    let (n1, n2) = (x.len(), y.len());
    let xy: Vec<f64> = x.iter().chain(y).copied().collect();
    let (ranks, ties) = midranks(&xy);
    let r1: f64 = ranks[..n1].iter().sum();
    let u1 = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let u = u1.max((n1 * n2) as f64 - u1);
    // The exact counts are i128: beyond C(n1 + n2, min) ~ e^85 (e.g. 8 against a million) the
    // normal approximation is used instead (SciPy stays exact there, in floating point).
    let (nf, kf) = ((n1 + n2) as f64, n1.min(n2) as f64);
    let fits = ln_gamma(nf + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(nf - kf + 1.0) < 85.0;
    let exact = !(n1 > 8 && n2 > 8) && ties.iter().all(|&t| t == 1) && fits;
    let p = if exact {
        // Coefficients of the Gaussian binomial [n1 + n2 choose k]_q, k = min(n1, n2): the
        // number of arrangements with each U.
        let (k, other) = (n1.min(n2), n1.max(n2));
        let mut c = vec![0i128; k * other + 1];
        c[0] = 1;
        for i in 1..=k {
            // times (1 - q^(other + i)), then divided by (1 - q^i).
            let m = other + i;
            for e in (m..c.len()).rev() {
                c[e] -= c[e - m];
            }
            for e in i..c.len() {
                c[e] += c[e - i];
            }
        }
        let total: i128 = c.iter().sum();
        let ku = (u.round() as usize).min(c.len());
        let tail: i128 = c[ku..].iter().sum();
        (2.0 * tail as f64 / total as f64).clamp(0.0, 1.0)
    } else {
        let n = (n1 + n2) as f64;
        let tie: f64 = ties.iter().map(|&t| (t as f64).powi(3) - t as f64).sum();
        let var = (n1 * n2) as f64 / 12.0 * ((n + 1.0) - tie / (n * (n - 1.0)));
        if var.is_nan() || var <= 0.0 {
            return Err(Error::Value("stats: Mann-Whitney test of samples where every value ties".into()));
        }
        let z = (u - (n1 * n2) as f64 / 2.0 - 0.5) / var.sqrt();
        (2.0 * norm_sf(z)).clamp(0.0, 1.0)
    };
    Ok(MannWhitney { u1, p, exact })
}

/// Pearson's chi-square test of independence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChiSquare {
    pub statistic: f64,
    pub dof: usize,
    pub p: f64,
}

/// Chi-square test of independence of an r x c table of counts (rows of equal length), as
/// `scipy.stats.chi2_contingency(table)` (`correction=True`: Yates' correction when dof = 1,
/// each |O - E| reduced by min(1/2, |O - E|)). An error for a ragged or empty table or an
/// expected count of 0 (SciPy raises); dof = 0 gives statistic 0, p = 1.
pub fn chi2_contingency(table: &[&[u64]]) -> Result<ChiSquare> {
    let r = table.len();
    let c = table.first().map_or(0, |row| row.len());
    if r == 0 || c == 0 || table.iter().any(|row| row.len() != c) {
        return Err(Error::Shape("stats: a contingency table needs rows of one non-zero length".into()));
    }
    let rows: Vec<f64> = table.iter().map(|row| row.iter().sum::<u64>() as f64).collect();
    let cols: Vec<f64> = (0..c).map(|j| table.iter().map(|row| row[j]).sum::<u64>() as f64).collect();
    let n: f64 = rows.iter().sum();
    if rows.iter().chain(&cols).any(|&s| s == 0.0) {
        return Err(Error::Value(
            "stats: contingency table with an expected count of 0 (an empty row or column)".into(),
        ));
    }
    let dof = (r - 1) * (c - 1);
    if dof == 0 {
        return Ok(ChiSquare { statistic: 0.0, dof, p: 1.0 });
    }
    let mut stat = 0.0;
    for (i, row) in table.iter().enumerate() {
        for (j, &o) in row.iter().enumerate() {
            let e = rows[i] * cols[j] / n;
            let mut o = o as f64;
            if dof == 1 {
                let diff = e - o;
                o += diff.signum() * diff.abs().min(0.5);
            }
            stat += (o - e) * (o - e) / e;
        }
    }
    Ok(ChiSquare { statistic: stat, dof, p: gammaincc(dof as f64 / 2.0, stat / 2.0) })
}

// ---------------------------------------------------------------------------------------------
// ROC

fn check_scores(scores: &[f64], labels: &[bool]) -> Result<(usize, usize)> {
    same_len("scores and labels", scores.len(), labels.len())?;
    finite("scores", scores)?;
    let pos = labels.iter().filter(|&&l| l).count();
    Ok((pos, labels.len() - pos))
}

/// Area under the ROC curve: the Mann-Whitney probability that a positive scores above a
/// negative, ties counting one half (= `sklearn.metrics.roc_auc_score(labels, scores)`).
/// `None` when one class is absent (scikit-learn raises).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>> {
    let (pos, neg) = check_scores(scores, labels)?;
    if pos == 0 || neg == 0 {
        return Ok(None);
    }
    let (ranks, _) = midranks(scores);
    let r: f64 = ranks.iter().zip(labels).filter(|(_, &l)| l).map(|(r, _)| r).sum();
    let (p, n) = (pos as f64, neg as f64);
    Ok(Some((r - p * (p + 1.0) / 2.0) / (p * n)))
}

/// One point of a ROC curve: predicted positive when `score >= threshold`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RocPoint {
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
}

/// The ROC curve as `sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)`
/// (scikit-learn ≥ 1.3): a first point (threshold +inf, 0, 0), then one point per distinct
/// score, descending. `None` when one class is absent (scikit-learn: NaN rates with a warning).
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<Option<Vec<RocPoint>>> {
    let (pos, neg) = check_scores(scores, labels)?;
    if pos == 0 || neg == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
    let mut pts = vec![RocPoint { threshold: f64::INFINITY, fpr: 0.0, tpr: 0.0 }];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last = k + 1 == order.len() || scores[order[k + 1]] != scores[i];
        if last {
            pts.push(RocPoint { threshold: scores[i], fpr: fp as f64 / neg as f64, tpr: tp as f64 / pos as f64 });
        }
    }
    Ok(Some(pts))
}

/// DeLong's estimate for one AUC.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeLong {
    pub auc: f64,
    /// DeLong et al. (1988) variance: S10 / m + S01 / n (sample covariances with n - 1).
    pub variance: f64,
    /// Wald interval on the AUC scale, `auc ± z sqrt(variance)`, clipped to [0, 1] (as pROC's
    /// `ci.auc(method="delong")`); not logit-transformed.
    pub ci: Ci,
}

/// Structural components (DeLong 1988): for each positive, the fraction of negatives it
/// out-scores (ties 1/2); for each negative, the fraction of positives that out-score it.
fn structural(scores: &[f64], labels: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let pos: Vec<f64> = scores.iter().zip(labels).filter(|(_, &l)| l).map(|(s, _)| *s).collect();
    let neg: Vec<f64> = scores.iter().zip(labels).filter(|(_, &l)| !l).map(|(s, _)| *s).collect();
    let psi = |x: f64, y: f64| {
        if x > y {
            1.0
        } else if x == y {
            0.5
        } else {
            0.0
        }
    };
    let v10 = pos.iter().map(|&x| neg.iter().map(|&y| psi(x, y)).sum::<f64>() / neg.len() as f64).collect();
    let v01 = neg.iter().map(|&y| pos.iter().map(|&x| psi(x, y)).sum::<f64>() / pos.len() as f64).collect();
    (v10, v01)
}

fn cov(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / (n - 1.0)
}

fn delong_classes(labels: &[bool]) -> Option<(usize, usize)> {
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    (pos >= 2 && neg >= 2).then_some((pos, neg))
}

/// AUC with DeLong's variance and a Wald CI at `level` (see [`DeLong::ci`]); computed directly
/// from the pairwise kernel (O(m n)). `None` with fewer than two positives or negatives (no
/// variance).
pub fn delong(scores: &[f64], labels: &[bool], level: f64) -> Result<Option<DeLong>> {
    check_scores(scores, labels)?;
    let Some(z) = norm_ppf(0.5 + level / 2.0).filter(|_| level > 0.0 && level < 1.0) else {
        return Err(Error::Value(format!("stats: confidence level {level} outside (0, 1)")));
    };
    let Some((m, n)) = delong_classes(labels) else { return Ok(None) };
    let (v10, v01) = structural(scores, labels);
    let auc = v10.iter().sum::<f64>() / m as f64;
    let variance = cov(&v10, &v10) / m as f64 + cov(&v01, &v01) / n as f64;
    let half = z * variance.sqrt();
    Ok(Some(DeLong { auc, variance, ci: Ci { lo: (auc - half).max(0.0), hi: (auc + half).min(1.0) } }))
}

/// DeLong's test of two correlated AUCs (two scores of the same cases).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeLongPaired {
    pub auc_a: f64,
    pub auc_b: f64,
    /// Var(AUC_a - AUC_b) from the 2x2 DeLong covariance.
    pub variance: f64,
    /// (AUC_a - AUC_b) / sqrt(variance).
    pub z: f64,
    /// Two-sided, 2 Φ(-|z|).
    pub p: f64,
}

/// DeLong, DeLong & Clarke-Pearson (1988) test of AUC_a = AUC_b for two scores of the same
/// cases (as pROC's `roc.test(method="delong", paired=TRUE)` and Sun & Xu's fast DeLong).
/// `None` with fewer than two positives or negatives, or when the difference has zero variance.
pub fn delong_paired(scores_a: &[f64], scores_b: &[f64], labels: &[bool]) -> Result<Option<DeLongPaired>> {
    check_scores(scores_a, labels)?;
    check_scores(scores_b, labels)?;
    let Some((m, n)) = delong_classes(labels) else { return Ok(None) };
    let (a10, a01) = structural(scores_a, labels);
    let (b10, b01) = structural(scores_b, labels);
    let auc_a = a10.iter().sum::<f64>() / m as f64;
    let auc_b = b10.iter().sum::<f64>() / m as f64;
    let (m, n) = (m as f64, n as f64);
    let var_a = cov(&a10, &a10) / m + cov(&a01, &a01) / n;
    let var_b = cov(&b10, &b10) / m + cov(&b01, &b01) / n;
    let cov_ab = cov(&a10, &b10) / m + cov(&a01, &b01) / n;
    let variance = var_a + var_b - 2.0 * cov_ab;
    if variance <= 0.0 {
        return Ok(None);
    }
    let z = (auc_a - auc_b) / variance.sqrt();
    Ok(Some(DeLongPaired { auc_a, auc_b, variance, z, p: (2.0 * norm_sf(z.abs())).min(1.0) }))
}

// ---------------------------------------------------------------------------------------------
// At a threshold

/// Classification metrics of a confusion table; `None` where the denominator is zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classification {
    pub counts: Confusion,
    pub accuracy: Option<f64>,
    /// TP / (TP + FN) ([`Confusion::recall`]).
    pub sensitivity: Option<f64>,
    /// TN / (TN + FP).
    pub specificity: Option<f64>,
    /// TP / (TP + FP) ([`Confusion::precision`]).
    pub ppv: Option<f64>,
    /// TN / (TN + FN).
    pub npv: Option<f64>,
    /// Cohen's kappa (po - pe) / (1 - pe) (= `sklearn.metrics.cohen_kappa_score`); `None` when
    /// pe = 1 (scikit-learn: NaN).
    pub kappa: Option<f64>,
}

impl Classification {
    pub fn of(c: Confusion) -> Self {
        let r = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let total = c.tp + c.fp + c.fn_ + c.tn;
        let kappa = (total > 0).then_some(()).and_then(|_| {
            let t = total as f64;
            let po = (c.tp + c.tn) as f64 / t;
            let pe =
                ((c.tp + c.fp) as f64 * (c.tp + c.fn_) as f64 + (c.fn_ + c.tn) as f64 * (c.fp + c.tn) as f64) / (t * t);
            (pe < 1.0).then(|| (po - pe) / (1.0 - pe))
        });
        Classification {
            counts: c,
            accuracy: r(c.tp + c.tn, total),
            sensitivity: c.recall(),
            specificity: r(c.tn, c.tn + c.fp),
            ppv: c.precision(),
            npv: r(c.tn, c.tn + c.fn_),
            kappa,
        }
    }
}

/// Confusion counts and metrics when `score >= threshold` is called positive (the
/// [`roc_curve`] convention).
pub fn at_threshold(scores: &[f64], labels: &[bool], threshold: f64) -> Result<Classification> {
    check_scores(scores, labels)?;
    if threshold.is_nan() {
        return Err(Error::Value("stats: threshold is NaN".into()));
    }
    let pred: Vec<u8> = scores.iter().map(|&s| u8::from(s >= threshold)).collect();
    let label: Vec<u8> = labels.iter().map(|&l| u8::from(l)).collect();
    Ok(Classification::of(Confusion::from_masks(&pred, &label)?))
}

// ---------------------------------------------------------------------------------------------
// Segmentation distances

fn check_grid(what: &str, mask: &[u8], dims: [usize; 3], spacing: [f64; 3]) -> Result<()> {
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(mask.len()) {
        return Err(Error::Shape(format!("stats: {what} has {} voxels, grid {dims:?}", mask.len())));
    }
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::Value(format!("stats: voxel spacing {spacing:?} is not positive and finite")));
    }
    Ok(())
}

/// Surface voxels: foreground with a 6-connected background neighbour, outside the grid
/// counting as background (MONAI's `get_mask_edges`: `mask ^ binary_erosion(mask)` with SciPy's
/// default cross structure and `border_value=0`). Row-major `[d0, d1, d2]`, last index fastest.
fn surface(mask: &[u8], dims: [usize; 3]) -> Vec<bool> {
    let [a, b, c] = dims;
    let at = |i: usize, j: usize, k: usize| mask[(i * b + j) * c + k] != 0;
    let mut out = vec![false; mask.len()];
    for i in 0..a {
        for j in 0..b {
            for k in 0..c {
                if !at(i, j, k) {
                    continue;
                }
                let interior = i > 0
                    && i + 1 < a
                    && j > 0
                    && j + 1 < b
                    && k > 0
                    && k + 1 < c
                    && at(i - 1, j, k)
                    && at(i + 1, j, k)
                    && at(i, j - 1, k)
                    && at(i, j + 1, k)
                    && at(i, j, k - 1)
                    && at(i, j, k + 1);
                out[(i * b + j) * c + k] = !interior;
            }
        }
    }
    out
}

/// Squared 1-D distance transform along a line (Felzenszwalb & Huttenlocher's lower envelope of
/// parabolas, sites at `q * step`); infinite entries are no sites.
fn edt_line(f: &mut [f64], step: f64, v: &mut Vec<usize>, z: &mut Vec<f64>, out: &mut Vec<f64>) {
    v.clear();
    z.clear();
    let pos = |q: usize| q as f64 * step;
    for q in 0..f.len() {
        if f[q].is_infinite() {
            continue;
        }
        loop {
            match v.last() {
                None => {
                    v.push(q);
                    z.push(f64::NEG_INFINITY);
                    break;
                }
                Some(&p) => {
                    let s = ((f[q] + pos(q) * pos(q)) - (f[p] + pos(p) * pos(p))) / (2.0 * (pos(q) - pos(p)));
                    if s <= *z.last().unwrap_or(&f64::NEG_INFINITY) {
                        v.pop();
                        z.pop();
                    } else {
                        v.push(q);
                        z.push(s);
                        break;
                    }
                }
            }
        }
    }
    if v.is_empty() {
        return;
    }
    out.clear();
    let mut k = 0;
    for q in 0..f.len() {
        let x = pos(q);
        while k + 1 < v.len() && z[k + 1] < x {
            k += 1;
        }
        let d = x - pos(v[k]);
        out.push(d * d + f[v[k]]);
    }
    f.copy_from_slice(out);
}

/// Exact squared Euclidean distance (mm²) of every voxel to the nearest `site` voxel.
fn sq_edt(sites: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let mut f: Vec<f64> = sites.iter().map(|&s| if s { 0.0 } else { f64::INFINITY }).collect();
    let strides = [dims[1] * dims[2], dims[2], 1];
    let (mut v, mut z, mut out, mut line) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for axis in 0..3 {
        let len = dims[axis];
        let stride = strides[axis];
        for start in 0..f.len() {
            // A line starts at every voxel whose coordinate on `axis` is 0.
            if !(start / stride).is_multiple_of(len) {
                continue;
            }
            line.clear();
            line.extend((0..len).map(|q| f[start + q * stride]));
            edt_line(&mut line, spacing[axis], &mut v, &mut z, &mut out);
            for (q, &x) in line.iter().enumerate() {
                f[start + q * stride] = x;
            }
        }
    }
    f
}

/// Symmetric 95th-percentile Hausdorff distance (mm) between two binary masks (non-zero =
/// foreground) on the same grid `dims` (row-major, last index fastest) with voxel `spacing`
/// (mm, per axis): as MONAI's `compute_hausdorff_distance(percentile=95, directed=False)`, the
/// larger of the two directed 95th percentiles (NumPy linear) of the distances from each
/// surface voxel of one mask to the nearest surface voxel of the other (surfaces as in MONAI's
/// `get_mask_edges`; exact Euclidean distance transform). `None` when either mask is empty
/// (MONAI: NaN or inf).
pub fn hd95(pred: &[u8], label: &[u8], dims: [usize; 3], spacing: [f64; 3]) -> Result<Option<f64>> {
    hausdorff_percentile(pred, label, dims, spacing, 95.0)
}

/// [`hd95`] at any percentile `q` (100 = the Hausdorff distance).
pub fn hausdorff_percentile(
    pred: &[u8],
    label: &[u8],
    dims: [usize; 3],
    spacing: [f64; 3],
    q: f64,
) -> Result<Option<f64>> {
    check_grid("prediction", pred, dims, spacing)?;
    check_grid("label", label, dims, spacing)?;
    if !(0.0..=100.0).contains(&q) {
        return Err(Error::Value(format!("stats: percentile {q} outside 0..=100")));
    }
    if !pred.iter().any(|&x| x != 0) || !label.iter().any(|&x| x != 0) {
        return Ok(None);
    }
    let (sp, sl) = (surface(pred, dims), surface(label, dims));
    let directed = |from: &[bool], to: &[bool]| {
        let d2 = sq_edt(to, dims, spacing);
        let mut d: Vec<f64> = from.iter().zip(&d2).filter(|(f, _)| **f).map(|(_, x)| x.sqrt()).collect();
        d.sort_by(f64::total_cmp);
        sorted_percentile(&d, q)
    };
    Ok(Some(directed(&sp, &sl).max(directed(&sl, &sp))))
}

/// Segmented volumes (mL) of a prediction and its label, from their [`Confusion`] counts and
/// the voxel volume (mm³).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Volumes {
    pub pred_ml: f64,
    pub label_ml: f64,
    /// pred - label (mL).
    pub difference_ml: f64,
    /// |pred - label| / label; `None` for an empty label.
    pub relative: Option<f64>,
}

/// Volumes of `c`'s prediction (TP + FP) and label (TP + FN) voxels at `voxel_mm3` each.
pub fn volumes(c: &Confusion, voxel_mm3: f64) -> Result<Volumes> {
    if !(voxel_mm3.is_finite() && voxel_mm3 > 0.0) {
        return Err(Error::Value(format!("stats: voxel volume {voxel_mm3} mm³ is not positive")));
    }
    let pred_ml = (c.tp + c.fp) as f64 * voxel_mm3 / 1000.0;
    let label_ml = (c.tp + c.fn_) as f64 * voxel_mm3 / 1000.0;
    let difference_ml = pred_ml - label_ml;
    let relative = (c.tp + c.fn_ > 0).then(|| difference_ml.abs() / label_ml);
    Ok(Volumes { pred_ml, label_ml, difference_ml, relative })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_functions() {
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
        assert!((norm_sf(1.959_963_984_540_054) - 0.025).abs() < 1e-15);
        assert!((norm_ppf(0.975).unwrap() - 1.959_963_984_540_054).abs() < 1e-12);
        // t with 1 df is Cauchy: P(|T| > 1) = 1/2.
        assert!((t_two_sided_p(1.0, 1.0) - 0.5).abs() < 1e-14);
    }

    #[test]
    fn invalid_input_is_an_error() {
        assert!(mean(&[]).is_err());
        assert!(mean(&[1.0, f64::NAN]).is_err());
        assert!(ttest_rel(&[1.0, 2.0], &[1.0]).is_err());
        assert!(wilcoxon(&[1.0, 2.0], &[1.0, 2.0]).is_err());
        assert!(roc_auc(&[0.1], &[true, false]).is_err());
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]).unwrap(), None);
        assert!(hd95(&[1, 0], &[1, 0, 0], [1, 1, 2], [1.0; 3]).is_err());
        assert_eq!(hd95(&[1, 0], &[0, 0], [1, 1, 2], [1.0; 3]).unwrap(), None);
    }

    #[test]
    fn edt_of_a_point() {
        let dims = [3, 4, 5];
        let mut s = vec![false; 60];
        s[(4 + 1) * 5 + 2] = true; // (1, 1, 2)
        let d = sq_edt(&s, dims, [2.0, 1.0, 0.5]);
        for i in 0..3 {
            for j in 0..4 {
                for k in 0..5 {
                    let e =
                        (2.0 * (i as f64 - 1.0)).powi(2) + (j as f64 - 1.0).powi(2) + (0.5 * (k as f64 - 2.0)).powi(2);
                    assert!((d[(i * 4 + j) * 5 + k] - e).abs() < 1e-12);
                }
            }
        }
    }
}
