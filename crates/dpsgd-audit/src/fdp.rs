//! The f-DP one-run audit (Mahloujifar, Melis & Chaudhuri, "Auditing
//! f-Differential Privacy in One Run", arXiv 2410.22235), and the search
//! over thresholds that JAX Privacy's `CanaryScoreAuditor` runs for it and
//! for the one-run bound of Steinke, Nasr & Jagielski (2023).
//!
//! # The bound
//!
//! `m` canaries, each included with probability ½; the auditor makes
//! `r` guesses, `v` of them right. A mechanism with trade-off function `f`
//! (here the Gaussian `G_μ(x) = Φ(Φ⁻¹(1 − x) − μ)`) can only produce `v`
//! right guesses out of `r` with small probability when `v` is large. The
//! paper's `audit_rh_with_cap` procedure, as JAX Privacy implements it
//! (`jax_privacy/auditing.py`, `_epsilon_one_run_fdp`, lines 194–245 at
//! google-deepmind/jax_privacy commit `8967688`), decides whether the
//! observation refutes the claim at significance `α`:
//!
//! ```text
//! r ← α·v/m,  h ← α·(r_guesses − v)/m
//! for i = v − 1, v − 2, …, 0:
//!     h' ← max(h, f̄(r))              f̄(x) = f(1 − x) = Φ(Φ⁻¹(x) − μ)
//!     if h' = h: stop
//!     r ← min(r + i/(r_guesses − i) · (h' − h), 1);  h ← h'
//! refuted ⟺ r + h − r_guesses/m > 0
//! ```
//!
//! The bound is the largest μ ([`fdp_one_run_mu`]) — or, for an
//! (ε, δ) claim, the largest ε ([`fdp_one_run_epsilon`]) — that the
//! observation refutes, found by doubling then bisection (to 1e-9; JAX uses
//! Brent's method to 1e-6). An (ε, δ) claim is read, as in JAX Privacy
//! (`_gaussian_dp_blow_up_inverse`, lines 183–191), as the Gaussian
//! mechanism calibrated to (ε, δ) (`μ = 1/σ` with σ from the analytic
//! Gaussian mechanism of Balle & Wang 2018, `dp_accounting.
//! get_sigma_gaussian`): the claim DP-SGD's accountant makes is close to a
//! Gaussian trade-off, which is what makes the bound much larger than
//! Steinke et al.'s for the same guesses. [`TradeOff::EpsilonDelta`] is the
//! weaker, assumption-free (ε, δ) curve `f(x) = max(0, 1 − δ − e^ε x,
//! e^{−ε}(1 − δ − x))`, through the same `f̄(x) = f(1 − x)`; JAX Privacy does
//! not implement it.
//!
//! # The threshold search
//!
//! [`canary_threshold_audit`] is JAX Privacy's `epsilon_one_run` and
//! `epsilon_one_run_fdp` with its default `Bonferroni()` strategy
//! (lines 945–1045 and 1091–1151): every threshold on the Pareto frontier of
//! the (false negatives, true negatives) counts (`_pareto_frontier`,
//! `_get_tn_fn_counts`, lines 339–429) is a candidate "guess IN above `t`"
//! rule (one-sided, `k₋ = 0`); each is audited at `α / #thresholds`, the
//! best bound kept. Unlike a guess count fixed in advance
//! ([`crate::lower_bound::one_run_audit`]), a strong leak can use many
//! guesses and show as a large bound.

use crate::error::{Result, invalid};
use crate::lower_bound::one_run_p_value;
use statrs::distribution::{Beta, ContinuousCDF, Normal};
use statrs::function::erf::erfc;

/// Standard normal CDF Φ, accurate in both tails.
pub(crate) fn phi(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// `ln Φ(x)`, with the asymptotic series where Φ underflows.
pub(crate) fn ln_phi(x: f64) -> f64 {
    if x > -30.0 {
        phi(x).ln()
    } else {
        let x2 = x * x;
        -0.5 * x2 - (-x).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            + (1.0 - 1.0 / x2 + 3.0 / (x2 * x2)).ln()
    }
}

/// Φ⁻¹.
pub(crate) fn phi_inv(p: f64) -> f64 {
    Normal::new(0.0, 1.0).map_or(f64::NAN, |n| n.inverse_cdf(p))
}

/// δ(ε) of μ-GDP (Dong, Roth & Su 2022, Corollary 2.13; Balle & Wang 2018
/// for the Gaussian mechanism with σ = 1/μ):
/// `Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)`.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::fdp::gdp_delta;
/// // μ = 1 at ε = 0: Φ(½) − Φ(−½) = 0.3829.
/// assert!((gdp_delta(1.0, 0.0) - 0.382925).abs() < 1e-6);
/// ```
pub fn gdp_delta(mu: f64, epsilon: f64) -> f64 {
    if mu <= 0.0 {
        return 0.0;
    }
    if mu.is_infinite() {
        return 1.0;
    }
    let a = phi(-epsilon / mu + mu / 2.0);
    let b = (epsilon + ln_phi(-epsilon / mu - mu / 2.0)).exp();
    (a - b).max(0.0)
}

/// The μ of the Gaussian mechanism calibrated to (ε, δ): the smallest μ
/// whose [`gdp_delta`] at ε reaches δ (`1/σ` for `dp_accounting`'s
/// `get_sigma_gaussian`), by bisection to relative 1e-14. `δ = 0` gives
/// μ = 0, `δ ≥ 1` gives +∞.
pub fn gdp_mu(epsilon: f64, delta: f64) -> f64 {
    if delta <= 0.0 {
        return 0.0;
    }
    if delta >= 1.0 || epsilon.is_infinite() {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while gdp_delta(hi, epsilon) < delta {
        lo = hi;
        hi *= 2.0;
        if hi > 1e6 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if gdp_delta(mid, epsilon) < delta {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-14 * hi {
            break;
        }
    }
    hi
}

/// ε at δ of μ-GDP: the smallest ε ≥ 0 with `gdp_delta(μ, ε) ≤ δ`, by
/// bisection to 1e-10 (`dp_accounting.get_epsilon_gaussian(1/μ, δ)`).
///
/// # Examples
///
/// ```
/// use dpsgd_audit::fdp::{gdp_delta, gdp_epsilon};
/// let eps = gdp_epsilon(1.0, 1e-5);
/// assert!((gdp_delta(1.0, eps) - 1e-5).abs() < 1e-12);
/// assert!((eps - 4.37718).abs() < 1e-5); // independently: bisection in Python
/// ```
pub fn gdp_epsilon(mu: f64, delta: f64) -> f64 {
    if mu <= 0.0 || delta >= 1.0 || gdp_delta(mu, 0.0) <= delta {
        return 0.0;
    }
    if delta <= 0.0 || mu.is_infinite() {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while gdp_delta(mu, hi) > delta {
        lo = hi;
        hi *= 2.0;
        if hi > 1e4 {
            return f64::INFINITY;
        }
    }
    while hi - lo > 1e-10 {
        let mid = 0.5 * (lo + hi);
        if gdp_delta(mu, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// A privacy claim as a trade-off function `f` (type I error ↦ smallest
/// type II error).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TradeOff {
    /// μ-GDP: `G_μ(x) = Φ(Φ⁻¹(1 − x) − μ)`.
    Gaussian {
        /// μ ≥ 0.
        mu: f64,
    },
    /// (ε, δ)-DP: `f(x) = max(0, 1 − δ − e^ε x, e^{−ε}(1 − δ − x))`.
    EpsilonDelta {
        /// ε ≥ 0.
        epsilon: f64,
        /// δ ∈ [0, 1].
        delta: f64,
    },
}

impl TradeOff {
    /// `f(x)`.
    pub fn f(&self, x: f64) -> f64 {
        let x = x.clamp(0.0, 1.0);
        match *self {
            Self::Gaussian { mu } => phi(phi_inv(1.0 - x) - mu),
            Self::EpsilonDelta { epsilon, delta } => (1.0 - delta - epsilon.exp() * x)
                .max((-epsilon).exp() * (1.0 - delta - x))
                .max(0.0),
        }
    }

    /// `f̄(x) = f(1 − x)`, the "blow-up inverse" of the audit loop (JAX
    /// Privacy's `_gaussian_dp_blow_up_inverse`: `Φ(Φ⁻¹(x) − μ)`).
    fn blow_up_inverse(&self, x: f64) -> f64 {
        match *self {
            Self::Gaussian { mu } => {
                if x >= 1.0 {
                    1.0
                } else if x <= 0.0 {
                    0.0
                } else {
                    phi(phi_inv(x) - mu)
                }
            }
            Self::EpsilonDelta { .. } => self.f(1.0 - x),
        }
    }
}

/// The audit loop's statistic (`audit_objective` in JAX Privacy's
/// `_epsilon_one_run_fdp`): positive iff `correct` right guesses out of
/// `guesses` among `canaries` refute the claim `f` at significance `alpha`.
pub(crate) fn fdp_objective(
    f: TradeOff,
    canaries: u64,
    guesses: u64,
    correct: u64,
    alpha: f64,
) -> f64 {
    objective_with(|x| f.blow_up_inverse(x), canaries, guesses, correct, alpha)
}

/// [`fdp_objective`] for any blow-up inverse `f̄(x) = f(1 − x)`.
fn objective_with(
    blow_up_inverse: impl Fn(f64) -> f64,
    canaries: u64,
    guesses: u64,
    correct: u64,
    alpha: f64,
) -> f64 {
    let m = canaries as f64;
    let mut r = alpha * correct as f64 / m;
    let mut h = alpha * (guesses - correct) as f64 / m;
    for i in (0..correct).rev() {
        let h_new = h.max(blow_up_inverse(r));
        if h_new == h {
            break;
        }
        let i = i as f64;
        r = (r + i / (guesses as f64 - i) * (h_new - h)).min(1.0);
        h = h_new;
    }
    r + h - guesses as f64 / m
}

fn check_counts(canaries: u64, guesses: u64, correct: u64, alpha: f64) -> Result<()> {
    if correct > guesses || guesses > canaries || canaries == 0 {
        return Err(invalid(
            "correct",
            correct,
            format!(
                "need correct ≤ guesses ≤ canaries and canaries > 0 ({correct}, {guesses}, {canaries})"
            ),
        ));
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(invalid("alpha", alpha, "must be in (0, 1)"));
    }
    Ok(())
}

/// The largest parameter `x ≥ lo` with `refuted(x)` (refuted at `lo`
/// assumed), by doubling then bisection to `tol`; `cap` if still refuted
/// there.
fn largest_refuted(refuted: impl Fn(f64) -> bool, lo: f64, cap: f64, tol: f64) -> f64 {
    let mut lo = lo;
    let mut hi = (2.0 * lo).max(1.0);
    while refuted(hi) {
        lo = hi;
        hi *= 2.0;
        if hi > cap {
            return cap;
        }
    }
    while hi - lo > tol {
        let mid = 0.5 * (lo + hi);
        if refuted(mid) { lo = mid } else { hi = mid }
    }
    lo
}

/// The largest μ such that `correct` right guesses out of `guesses` on
/// `canaries` canaries refute μ-GDP at confidence `1 − alpha` (0 when even
/// μ = 0 is not refuted): the f-DP one-run bound in GDP terms.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when
/// `correct > guesses`, `guesses > canaries`, no canaries, or `α ∉ (0, 1)`.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::fdp::fdp_one_run_mu;
/// // 1000 canaries, 100 guesses, all right.
/// let mu = fdp_one_run_mu(1000, 100, 100, 0.05)?;
/// assert!(mu > 1.0);
/// // Half right is chance: nothing refuted.
/// assert_eq!(fdp_one_run_mu(1000, 100, 50, 0.05)?, 0.0);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn fdp_one_run_mu(canaries: u64, guesses: u64, correct: u64, alpha: f64) -> Result<f64> {
    check_counts(canaries, guesses, correct, alpha)?;
    let refuted =
        |mu: f64| fdp_objective(TradeOff::Gaussian { mu }, canaries, guesses, correct, alpha) > 0.0;
    if !refuted(0.0) {
        return Ok(0.0);
    }
    Ok(largest_refuted(refuted, 0.0, 1e3, 1e-9))
}

/// The trade-off function a **privacy profile** guarantees: a mechanism
/// that is (ε_i, δ_i)-DP for every point of `profile` is f-DP with
/// `f(x) = max_i max(0, 1 − δ_i − e^{ε_i} x, e^{−ε_i}(1 − δ_i − x))`
/// (Dong, Roth & Su 2022, Prop. 2.12: the (ε, δ) curves' upper envelope).
/// For a finite set of points this is at most the mechanism's true curve,
/// so a claim read this way is never stronger than the profile it comes
/// from. No point: `1 − x`, perfect privacy.
pub fn profile_trade_off(profile: &[(f64, f64)], x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    if profile.is_empty() {
        return 1.0 - x;
    }
    profile
        .iter()
        .map(|&(epsilon, delta)| TradeOff::EpsilonDelta { epsilon, delta }.f(x))
        .fold(0.0, f64::max)
}

/// Whether `correct` right guesses out of `guesses` on `canaries` canaries
/// refute, at significance `alpha`, the claim that the mechanism is f-DP
/// for the trade-off function `f` (the audit of
/// [`fdp_one_run_epsilon`], for any curve: e.g. [`profile_trade_off`] of
/// an accountant's privacy profile).
///
/// # Errors
///
/// As [`fdp_one_run_mu`].
pub fn fdp_refutes(
    f: impl Fn(f64) -> f64,
    canaries: u64,
    guesses: u64,
    correct: u64,
    alpha: f64,
) -> Result<bool> {
    check_counts(canaries, guesses, correct, alpha)?;
    Ok(objective_with(|x| f(1.0 - x), canaries, guesses, correct, alpha) > 0.0)
}

/// Which trade-off curve an (ε, δ) claim is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsilonCurve {
    /// The Gaussian mechanism calibrated to (ε, δ), `G_{μ(ε, δ)}`, as JAX
    /// Privacy's `epsilon_one_run_fdp`. Right for DP-SGD's claims (its
    /// privacy curve is close to Gaussian); a bound above the claim refutes
    /// "the run is as private as a Gaussian mechanism with this (ε, δ)".
    Gaussian,
    /// The (ε, δ)-DP curve itself: refutes (ε, δ)-DP with no assumption on
    /// the curve's shape, a smaller bound.
    EpsilonDelta,
}

/// The largest ε such that the guesses refute the (ε, δ) claim read as
/// `curve`, at confidence `1 − alpha` (0 when ε = 0 is not refuted). With
/// [`EpsilonCurve::Gaussian`] this is JAX Privacy's `_epsilon_one_run_fdp`
/// from ε = 0.
///
/// # Errors
///
/// As [`fdp_one_run_mu`], and `δ ∉ (0, 1)` for the Gaussian reading (δ = 0
/// makes every Gaussian claim μ = 0: nothing to test), `δ ∉ [0, 1)` for the
/// (ε, δ) curve.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::fdp::{fdp_one_run_epsilon, EpsilonCurve};
/// use dpsgd_audit::lower_bound::one_run_epsilon;
/// // 1000 canaries, 100 guesses, all right, δ = 1e-5: the Gaussian reading
/// // proves far more than Steinke et al.'s 3.47.
/// let g = fdp_one_run_epsilon(1000, 100, 100, 1e-5, 0.05, EpsilonCurve::Gaussian)?;
/// let s = one_run_epsilon(1000, 100, 100, 1e-5, 0.05)?;
/// assert!(g > s + 1.0, "{g} vs {s}");
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn fdp_one_run_epsilon(
    canaries: u64,
    guesses: u64,
    correct: u64,
    delta: f64,
    alpha: f64,
    curve: EpsilonCurve,
) -> Result<f64> {
    check_counts(canaries, guesses, correct, alpha)?;
    let eps_from = fdp_epsilon_from(curve, delta)?;
    Ok(eps_from(0.0, canaries, guesses, correct, alpha))
}

type EpsilonFrom = Box<dyn Fn(f64, u64, u64, u64, f64) -> f64>;

/// The f-DP audit from `eps_lo` (JAX's `_epsilon_one_run_fdp(eps_lo, …)`).
fn fdp_epsilon_from(curve: EpsilonCurve, delta: f64) -> Result<EpsilonFrom> {
    match curve {
        EpsilonCurve::Gaussian if !(delta > 0.0 && delta < 1.0) => Err(invalid(
            "delta",
            delta,
            "must be in (0, 1) for a Gaussian-curve claim",
        )),
        EpsilonCurve::EpsilonDelta if !(0.0..1.0).contains(&delta) => {
            Err(invalid("delta", delta, "must be in [0, 1)"))
        }
        _ => Ok(Box::new(move |lo, m, r, v, alpha| {
            let claim = |eps: f64| match curve {
                EpsilonCurve::Gaussian => TradeOff::Gaussian {
                    mu: gdp_mu(eps, delta),
                },
                EpsilonCurve::EpsilonDelta => TradeOff::EpsilonDelta {
                    epsilon: eps,
                    delta,
                },
            };
            let refuted = |eps: f64| fdp_objective(claim(eps), m, r, v, alpha) > 0.0;
            if !refuted(lo) {
                return lo;
            }
            largest_refuted(refuted, lo, 1e3, 1e-9)
        })),
    }
}

/// Steinke et al.'s one-run audit from `eps_lo` (JAX's
/// `_epsilon_one_run`, lines 139–180).
fn steinke_epsilon_from(lo: f64, m: u64, r: u64, v: u64, alpha: f64, delta: f64) -> f64 {
    if one_run_p_value(m, r, v, 0.0, lo) > alpha {
        return lo;
    }
    let refuted = |eps: f64| one_run_p_value(m, r, v, delta, eps).min(1.0) < alpha;
    if !refuted(lo) {
        return lo;
    }
    largest_refuted(refuted, lo, 1e3, 1e-9)
}

/// Which one-run bound [`canary_threshold_audit`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneRunMethod {
    /// Steinke, Nasr & Jagielski 2023 ([`crate::lower_bound`]).
    Steinke,
    /// Mahloujifar, Melis & Chaudhuri 2024, the (ε, δ) claim read as
    /// `curve`.
    Fdp(EpsilonCurve),
}

/// The best one-run bound over thresholds, and the rule that gave it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThresholdAudit {
    /// ε̂: the claim is refuted for every ε below this, at confidence
    /// `1 − α` (Bonferroni over the thresholds).
    pub epsilon: f64,
    /// The threshold: guess IN for scores `≥ threshold` (+∞: no guess).
    pub threshold: f64,
    /// Guesses (scores at or above the threshold).
    pub guesses: u64,
    /// Right guesses (included canaries among them).
    pub correct: u64,
    /// Canaries `m` (included and excluded).
    pub canaries: u64,
    /// Number of thresholds audited; each at `α / thresholds`.
    pub thresholds: u64,
}

/// Indices of the points not weakly dominated by a pair of outer points
/// (JAX Privacy's `_pareto_frontier`, lines 339–386, iteration for
/// iteration: every interior point whose turn is not strictly convex is
/// dropped at once, until none is).
fn pareto_frontier(points: &[(i64, i64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len()).collect();
    loop {
        if idx.len() <= 2 {
            return idx;
        }
        let d: Vec<(i64, i64)> = idx
            .windows(2)
            .map(|w| {
                (
                    points[w[1]].0 - points[w[0]].0,
                    points[w[1]].1 - points[w[0]].1,
                )
            })
            .collect();
        let dominated: Vec<bool> = d
            .windows(2)
            .map(|w| w[0].1 * w[1].0 - w[1].1 * w[0].0 <= 0)
            .collect();
        if !dominated.iter().any(|&b| b) {
            return idx;
        }
        let mut kept = vec![idx[0]];
        kept.extend(
            idx[1..idx.len() - 1]
                .iter()
                .zip(&dominated)
                .filter(|&(_, &dom)| !dom)
                .map(|(&i, _)| i),
        );
        kept.push(idx[idx.len() - 1]);
        idx = kept;
    }
}

/// JAX Privacy's `_get_tn_fn_counts` (lines 389–429): thresholds = the
/// sorted distinct scores and +∞; at each, the included (false negatives)
/// and excluded (true negatives) canaries scoring strictly below; only the
/// Pareto frontier of those `(fn, tn)` points kept.
pub(crate) fn tn_fn_counts(inside: &[f64], outside: &[f64]) -> (Vec<f64>, Vec<(i64, i64)>) {
    let mut in_sorted = inside.to_vec();
    let mut out_sorted = outside.to_vec();
    in_sorted.sort_by(f64::total_cmp);
    out_sorted.sort_by(f64::total_cmp);
    let mut thresholds: Vec<f64> = in_sorted.iter().chain(&out_sorted).copied().collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    thresholds.push(f64::INFINITY);
    let below = |v: &[f64], t: f64| v.partition_point(|&s| s < t) as i64;
    let counts: Vec<(i64, i64)> = thresholds
        .iter()
        .map(|&t| (below(&in_sorted, t), below(&out_sorted, t)))
        .collect();
    let frontier = pareto_frontier(&counts);
    (
        frontier.iter().map(|&i| thresholds[i]).collect(),
        frontier.iter().map(|&i| counts[i]).collect(),
    )
}

pub(crate) fn clopper_pearson_upper(k: u64, n: u64, alpha: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    Beta::new((k + 1) as f64, (n - k) as f64).map_or(1.0, |b| b.inverse_cdf(1.0 - alpha))
}

/// JAX Privacy's `CanaryScoreAuditor(in_scores, out_scores)
/// .epsilon_one_run{,_fdp}(alpha, delta)` with the default Bonferroni
/// strategy: the one-run ε bound of `method` maximised over every
/// "guess IN at or above `t`" rule on the Pareto frontier of the ROC
/// counts, each audited at `alpha / #thresholds`. `m` is the number of
/// canaries, included plus excluded.
///
/// The thresholds are searched in decreasing order of a Clopper–Pearson
/// lower bound on their precision, skipping those whose raw precision is at
/// most `1/(1 + e^{−ε̂})` of the best so far (JAX's heuristic, lines
/// 980–1003; such a rule cannot refute ε̂).
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for an empty
/// group, a NaN score, `α ∉ (0, 1)` or `δ ∉ (0, 1)` (JAX's domain, `(0, 1]`
/// less the trivial δ = 1).
///
/// # Examples
///
/// ```
/// use dpsgd_audit::fdp::{canary_threshold_audit, EpsilonCurve, OneRunMethod};
/// // Perfectly separated: 500 included canaries above 500 excluded ones.
/// let inside: Vec<f64> = (500..1000).map(f64::from).collect();
/// let outside: Vec<f64> = (0..500).map(f64::from).collect();
/// let f = canary_threshold_audit(&inside, &outside, 1e-5, 0.05, OneRunMethod::Fdp(EpsilonCurve::Gaussian))?;
/// let s = canary_threshold_audit(&inside, &outside, 1e-5, 0.05, OneRunMethod::Steinke)?;
/// assert!(f.epsilon > s.epsilon && s.epsilon > 2.0);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn canary_threshold_audit(
    inside: &[f64],
    outside: &[f64],
    delta: f64,
    alpha: f64,
    method: OneRunMethod,
) -> Result<ThresholdAudit> {
    for (name, v) in [("inside", inside), ("outside", outside)] {
        if v.is_empty() {
            return Err(invalid(name, "[]", "need at least one canary score"));
        }
        if let Some(s) = v.iter().find(|s| s.is_nan()) {
            return Err(invalid(name, s, "canary scores must not be NaN"));
        }
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(invalid("alpha", alpha, "must be in (0, 1)"));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(invalid("delta", delta, "must be in (0, 1)"));
    }
    let fdp_from = match method {
        OneRunMethod::Fdp(curve) => Some(fdp_epsilon_from(curve, delta)?),
        OneRunMethod::Steinke => None,
    };
    let audit = |lo: f64, m: u64, r: u64, v: u64, a: f64| match &fdp_from {
        Some(f) => f(lo, m, r, v, a),
        None => steinke_epsilon_from(lo, m, r, v, a, delta),
    };
    let (thresholds, counts) = tn_fn_counts(inside, outside);
    let (n_pos, n_neg) = (inside.len() as u64, outside.len() as u64);
    let m = n_pos + n_neg;
    let alpha_b = alpha / thresholds.len() as f64;
    let rules: Vec<(f64, u64, u64)> = (0..thresholds.len())
        .map(|i| {
            let tp = n_pos - counts[i].0 as u64;
            let fp = n_neg - counts[i].1 as u64;
            (thresholds[i], tp + fp, tp)
        })
        .collect();
    let mut order: Vec<(f64, usize)> = rules
        .iter()
        .enumerate()
        .map(|(k, &(_, r, v))| (1.0 - clopper_pearson_upper(r - v, r, alpha_b), k))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut best_eps, mut best, mut best_q) = (0.0_f64, None, 0.5);
    for &(_, k) in &order {
        let (_, r, v) = rules[k];
        if r == 0 || v as f64 / r as f64 <= best_q {
            continue;
        }
        let eps = audit(best_eps, m, r, v, alpha_b);
        if eps > best_eps {
            best_eps = eps;
            best = Some(k);
            best_q = 1.0 / (1.0 + (-best_eps).exp());
        }
    }
    // JAX reports thresholds[-1] (+∞, no guess) when nothing is refuted.
    let (threshold, guesses, correct) = best.map_or((f64::INFINITY, 0, 0), |k| rules[k]);
    Ok(ThresholdAudit {
        epsilon: best_eps,
        threshold,
        guesses,
        correct,
        canaries: m,
        thresholds: thresholds.len() as u64,
    })
}

#[cfg(test)]
mod tests {

    /// A privacy profile's curve: one point is that point's (ε, δ)
    /// curve; none is perfect privacy; the exact profile of μ-GDP on a
    /// fine grid comes within 0.01 of G_μ and never above it (the
    /// envelope of true guarantees cannot claim more than the mechanism).
    #[test]
    fn should_read_a_privacy_profile_as_its_envelope() {
        for x in [0.0, 0.01, 0.2, 0.5, 0.9, 1.0] {
            let one = TradeOff::EpsilonDelta {
                epsilon: 1.3,
                delta: 1e-3,
            };
            assert_eq!(profile_trade_off(&[(1.3, 1e-3)], x), one.f(x));
            assert_eq!(profile_trade_off(&[], x), 1.0 - x);
        }
        let mu = 1.0;
        let profile: Vec<(f64, f64)> = (0..=600)
            .map(|i| {
                let e = f64::from(i) * 0.01;
                (e, gdp_delta(mu, e))
            })
            .collect();
        let g = TradeOff::Gaussian { mu };
        for k in 0..=100 {
            let x = f64::from(k) / 100.0;
            let (p, exact) = (profile_trade_off(&profile, x), g.f(x));
            assert!(p <= exact + 1e-9, "x = {x}: {p} above G_μ = {exact}");
            assert!(exact - p < 0.01, "x = {x}: {p} vs G_μ = {exact}");
        }
    }

    /// `fdp_refutes` is the audit of `fdp_one_run_epsilon` for any curve:
    /// on the (ε, δ) curve it agrees with the built-in reading.
    #[test]
    fn should_refute_any_curve_as_the_built_in_readings() {
        for (m, r, v) in [
            (1000, 100, 100),
            (1000, 100, 80),
            (1000, 100, 60),
            (500, 100, 95),
        ] {
            for eps in [0.5, 1.0, 2.0, 3.0] {
                let curve = TradeOff::EpsilonDelta {
                    epsilon: eps,
                    delta: 1e-5,
                };
                let built_in = fdp_objective(curve, m, r, v, 0.05) > 0.0;
                let any = fdp_refutes(|x| curve.f(x), m, r, v, 0.05).unwrap();
                assert_eq!(any, built_in, "{m} {r} {v} ε = {eps}");
            }
        }
        assert!(fdp_refutes(|x| 1.0 - x, 10, 11, 1, 0.05).is_err());
    }

    use super::*;
    use crate::lower_bound::one_run_epsilon;
    use proptest::prelude::*;

    /// JAX Privacy's `_deterministic_normal`: `Φ⁻¹((i + ½)/n)·σ + μ`.
    fn deterministic_normal(mu: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| phi_inv((i as f64 + 0.5) / n as f64) + mu)
            .collect()
    }

    /// JAX Privacy's `test_epsilon_one_run_close` (tests/auditing_test.py
    /// lines 727–746): 10 000 included canaries N(shift, 1), 10 000 excluded
    /// N(0, 1) (deterministic quantiles), α = 0.05, δ = 1e-6, Bonferroni,
    /// `rtol = 1e-5` as there.
    #[test]
    fn should_reproduce_jax_privacy_one_run_vectors() {
        let out = deterministic_normal(0.0, 10_000);
        for (shift, steinke, fdp) in [
            (0.0, 0.0, 0.0),
            (1.0, 1.13346, 2.164749),
            (2.0, 2.311945, 4.7218075),
            (4.0, 4.395568, 9.133752),
        ] {
            let inside = deterministic_normal(shift, 10_000);
            let s =
                canary_threshold_audit(&inside, &out, 1e-6, 0.05, OneRunMethod::Steinke).unwrap();
            let f = canary_threshold_audit(
                &inside,
                &out,
                1e-6,
                0.05,
                OneRunMethod::Fdp(EpsilonCurve::Gaussian),
            )
            .unwrap();
            eprintln!("shift {shift}: Steinke {s:?}\n  f-DP {f:?}");
            for (got, want) in [(s.epsilon, steinke), (f.epsilon, fdp)] {
                assert!(
                    (got - want).abs() <= 1e-5 * want + 1e-9,
                    "shift {shift}: {got} vs {want}"
                );
            }
        }
    }

    /// Raw counts through JAX Privacy's own `_epsilon_one_run_fdp(0, m, r,
    /// v, 0.05, 1e-5)` and `_epsilon_one_run(…)` (auditing.py at `8967688`,
    /// run with `dp_accounting.get_sigma_gaussian` replaced by the same
    /// bracket-and-Brent search at 1e-12); its Brent tolerance is 1e-6, so
    /// matched to 1e-5.
    #[test]
    fn should_match_jax_privacy_on_raw_counts() {
        for (m, r, v, fdp, steinke) in [
            (1000, 100, 100, 5.549027999942934, 3.465376229385333),
            (1000, 100, 90, 2.456405067209416, 1.6261436787042223),
            (1000, 1000, 1000, 12.334570155595598, 5.782283131572193),
            (1000, 1000, 900, 3.7793385785758593, 2.020645594168416),
            (10_000, 1000, 900, 2.802598207968059, 2.015194451629058),
            (10_000, 500, 500, 7.393633112583978, 4.833513212620221),
            (1000, 100, 75, 1.0059159106249838, 0.6994669106155617),
        ] {
            let got = fdp_one_run_epsilon(m, r, v, 1e-5, 0.05, EpsilonCurve::Gaussian).unwrap();
            assert!(
                (got - fdp).abs() < 1e-5,
                "f-DP (m={m}, r={r}, v={v}): {got} vs {fdp}"
            );
            let got = steinke_epsilon_from(0.0, m, r, v, 0.05, 1e-5);
            assert!(
                (got - steinke).abs() < 1e-5,
                "Steinke (m={m}, r={r}, v={v}): {got} vs {steinke}"
            );
        }
    }

    #[test]
    fn should_match_the_gaussian_mechanism_calibration() {
        // gdp_mu inverts gdp_delta at ε.
        for (eps, delta) in [(1.0, 1e-5), (4.0, 1e-6), (0.5, 0.1), (8.0, 1e-5)] {
            let mu = gdp_mu(eps, delta);
            assert!(
                (gdp_delta(mu, eps) / delta - 1.0).abs() < 1e-9,
                "{eps} {delta}"
            );
            assert!((gdp_epsilon(mu, delta) - eps).abs() < 1e-8);
        }
        // Known values: μ = 1 has δ(ε = 1) = Φ(−½) − e·Φ(−3/2) = 0.126936.
        assert!((gdp_delta(1.0, 1.0) - 0.126936).abs() < 1e-6);
        assert_eq!(gdp_mu(1.0, 0.0), 0.0);
        assert_eq!(gdp_epsilon(0.0, 1e-5), 0.0);
        // The trade-off curves.
        let g = TradeOff::Gaussian { mu: 1.0 };
        assert!((g.f(0.05) - phi(phi_inv(0.95) - 1.0)).abs() < 1e-15);
        assert!((g.blow_up_inverse(0.3) - g.f(0.7)).abs() < 1e-12);
        let e = TradeOff::EpsilonDelta {
            epsilon: 1.0,
            delta: 0.0,
        };
        assert!((e.f(0.1) - (1.0 - std::f64::consts::E * 0.1)).abs() < 1e-15);
        assert_eq!(e.f(1.0), 0.0);
    }

    /// What the f-DP bound proves against Steinke et al.'s for the same
    /// counts (the regimes of Mahloujifar et al.'s Figures 1–3: many right
    /// guesses): read as a Gaussian claim it is larger everywhere checked;
    /// read as the plain (ε, δ) curve it is within 0.1 of Steinke's or
    /// above (the f-DP analysis of an (ε, δ) curve is at least as tight).
    #[test]
    fn should_prove_at_least_what_steinke_proves() {
        for (m, r, v) in [
            (1000, 100, 100),
            (1000, 100, 90),
            (1000, 1000, 1000),
            (1000, 1000, 900),
            (10_000, 1000, 900),
            (10_000, 500, 500),
        ] {
            let s = one_run_epsilon(m, r, v, 1e-5, 0.05).unwrap();
            let g = fdp_one_run_epsilon(m, r, v, 1e-5, 0.05, EpsilonCurve::Gaussian).unwrap();
            let e = fdp_one_run_epsilon(m, r, v, 1e-5, 0.05, EpsilonCurve::EpsilonDelta).unwrap();
            eprintln!("m={m} r={r} v={v}: Steinke {s:.4}, f-DP Gaussian {g:.4}, f-DP (ε,δ) {e:.4}");
            assert!(g > s, "(m={m}, r={r}, v={v}): {g} vs {s}");
            assert!(e > s - 0.1, "(m={m}, r={r}, v={v}): {e} vs {s}");
        }
        assert!(fdp_one_run_epsilon(10, 11, 5, 1e-5, 0.05, EpsilonCurve::Gaussian).is_err());
        assert!(fdp_one_run_epsilon(10, 5, 6, 1e-5, 0.05, EpsilonCurve::Gaussian).is_err());
        assert!(fdp_one_run_epsilon(10, 5, 5, 0.0, 0.05, EpsilonCurve::Gaussian).is_err());
        assert!(fdp_one_run_epsilon(10, 5, 5, 1e-5, 1.0, EpsilonCurve::Gaussian).is_err());
        assert!(canary_threshold_audit(&[], &[1.0], 1e-5, 0.05, OneRunMethod::Steinke).is_err());
        assert!(
            canary_threshold_audit(&[f64::NAN], &[1.0], 1e-5, 0.05, OneRunMethod::Steinke).is_err()
        );
    }

    /// tests/auditing_test.py lines 147–181 and 226–264.
    #[test]
    fn should_keep_the_pareto_frontier_of_jax_privacy() {
        assert_eq!(pareto_frontier(&[(0, 0), (1, 1)]), vec![0, 1]);
        let line: Vec<(i64, i64)> = (0..100).map(|i| (i, i)).collect();
        assert_eq!(pareto_frontier(&line), vec![0, 99]);
        for (points, expected) in [
            (
                vec![(0, 0), (0, 2), (3, 2), (3, 5), (5, 5)],
                vec![0, 1, 3, 4],
            ),
            (
                vec![(0, 0), (0, 2), (2, 2), (2, 3), (3, 3), (3, 5), (5, 5)],
                vec![0, 1, 5, 6],
            ),
            (
                vec![(0, 0), (0, 2), (1, 2), (1, 4), (3, 4), (3, 5), (5, 5)],
                vec![0, 1, 3, 5, 6],
            ),
            (
                vec![(0, 0), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (4, 4)],
                vec![0, 1, 5, 6],
            ),
        ] {
            assert_eq!(pareto_frontier(&points), expected, "{points:?}");
        }
        let inf = f64::INFINITY;
        for (inside, outside, thresholds, tn, fn_) in [
            (
                vec![1.5, 2.5, 0.5, 3.5],
                vec![0.0, 3.0, 2.0, 1.0],
                vec![0.0, 0.5, 3.5, inf],
                vec![0, 1, 4, 4],
                vec![0, 0, 3, 4],
            ),
            (
                vec![0.0, 1.0, 1.0, 2.0],
                vec![0.0, 0.0, 1.0, 1.0],
                vec![0.0, 1.0, 2.0, inf],
                vec![0, 2, 4, 4],
                vec![0, 1, 3, 4],
            ),
            (
                vec![0.0, 0.0, 1.0, 2.0],
                vec![0.0, 1.0, 1.0, 1.0],
                vec![0.0, 2.0, inf],
                vec![0, 4, 4],
                vec![0, 3, 4],
            ),
            (
                vec![0.0; 4],
                vec![0.0; 4],
                vec![0.0, inf],
                vec![0, 4],
                vec![0, 4],
            ),
        ] {
            let (t, counts) = tn_fn_counts(&inside, &outside);
            assert_eq!(t, thresholds);
            assert_eq!(counts.iter().map(|c| c.1).collect::<Vec<_>>(), tn);
            assert_eq!(counts.iter().map(|c| c.0).collect::<Vec<_>>(), fn_);
        }
    }

    proptest! {
        /// More right guesses never prove less; a larger α (less
        /// confidence) never proves less; the μ bound and the ε bound agree
        /// through the Gaussian calibration.
        #[test]
        fn should_be_monotone(m in 50u64..400, r_frac in 0.1f64..1.0, v_frac in 0.5f64..1.0) {
            let r = ((m as f64 * r_frac) as u64).max(1);
            let v = ((r as f64 * v_frac) as u64).min(r);
            let mu = fdp_one_run_mu(m, r, v, 0.05).unwrap();
            if v < r {
                prop_assert!(fdp_one_run_mu(m, r, v + 1, 0.05).unwrap() >= mu - 1e-8);
            }
            prop_assert!(fdp_one_run_mu(m, r, v, 0.1).unwrap() >= mu - 1e-8);
            let eps = fdp_one_run_epsilon(m, r, v, 1e-5, 0.05, EpsilonCurve::Gaussian).unwrap();
            if eps > 0.0 {
                // ε̂'s Gaussian μ is the largest refuted μ, up to the
                // bisections' tolerances.
                prop_assert!((gdp_mu(eps, 1e-5) - mu).abs() < 1e-5, "{} vs {mu}", gdp_mu(eps, 1e-5));
            }
            let e = fdp_one_run_epsilon(m, r, v, 1e-5, 0.05, EpsilonCurve::EpsilonDelta).unwrap();
            prop_assert!(e <= eps + 1e-8);
        }
    }
}
