//! Empirical ε lower bounds: what a training run *provably leaked*, at a
//! stated confidence, as opposed to the upper bound the accountant claims.
//! A lower bound above the claimed ε is a privacy bug.
//!
//! * **Canaries** (Jagielski, Ullman & Oprea 2020): train with and without
//!   planted canaries; an attack guesses membership; with TP of `n_in`
//!   member guesses right and FP of `n_out` non-member guesses wrong, any
//!   (ε, δ)-DP training satisfies `TPR ≤ e^ε FPR + δ`, so
//!   `ε ≥ ln((TPR_low − δ)/FPR_high)` with one-sided Clopper–Pearson bounds,
//!   α split between the two.
//! * **One run** (Steinke, Nasr & Jagielski 2023): `m` canaries, each
//!   included with probability ½; the auditor makes `r` guesses (fixed
//!   before looking at the scores), `v` of them right. Under ε-DP, with
//!   `q(ε) = 1/(1 + e^{−ε})`, `P[V ≥ v] ≤ β = P[Binomial(r, q) ≥ v]`, plus
//!   `2mδ · max_{i=1..v} (1/i) Σ_{j=1..i} P[Binomial(r, q) = v − j]` for
//!   δ > 0; ε̂ is the largest ε whose p-value stays ≤ the significance.

use crate::error::{Result, invalid};
use statrs::distribution::{Beta, Binomial, ContinuousCDF, Discrete, DiscreteCDF};

/// One-sided Clopper–Pearson lower bound on a proportion `k/n` at level
/// `alpha` (the true proportion is below it with probability ≤ α).
fn clopper_pearson_lower(k: u64, n: u64, alpha: f64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    Beta::new(k as f64, (n - k + 1) as f64)
        .map(|b| b.inverse_cdf(alpha))
        .unwrap_or(0.0)
}

/// One-sided Clopper–Pearson upper bound on `k/n` at level `alpha`.
fn clopper_pearson_upper(k: u64, n: u64, alpha: f64) -> f64 {
    if k == n {
        return 1.0;
    }
    Beta::new((k + 1) as f64, (n - k) as f64)
        .map(|b| b.inverse_cdf(1.0 - alpha))
        .unwrap_or(1.0)
}

/// `ε` lower bound from canary guesses: `true_positives` of `members`
/// canaries guessed IN, `false_positives` of `non_members` guessed IN, at
/// confidence `1 − alpha` and the claimed δ.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for counts
/// above their totals, empty groups, `α ∉ (0, 1)` or `δ ∉ [0, 1)`.
///
/// # Examples
///
/// ```
/// // Jagielski et al. (2020): 990/1000 canaries found, 10/1000 false alarms.
/// let eps = dpsgd_audit::lower_bound::canary_epsilon(990, 1000, 10, 1000, 0.05, 0.0)?;
/// assert!((eps - 3.9816).abs() < 1e-3);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn canary_epsilon(
    true_positives: u64,
    members: u64,
    false_positives: u64,
    non_members: u64,
    alpha: f64,
    delta: f64,
) -> Result<f64> {
    if members == 0 || non_members == 0 {
        return Err(invalid(
            "members",
            members.min(non_members),
            "both groups need canaries",
        ));
    }
    if true_positives > members || false_positives > non_members {
        return Err(invalid(
            "true_positives",
            true_positives,
            "counts exceed their totals",
        ));
    }
    check_alpha(alpha)?;
    if !(0.0..1.0).contains(&delta) {
        return Err(invalid("delta", delta, "must be in [0, 1)"));
    }
    let tpr = clopper_pearson_lower(true_positives, members, alpha / 2.0);
    let fpr = clopper_pearson_upper(false_positives, non_members, alpha / 2.0);
    if tpr - delta <= 0.0 || fpr <= 0.0 {
        return Ok(0.0);
    }
    Ok(((tpr - delta) / fpr).ln().max(0.0))
}

fn check_alpha(alpha: f64) -> Result<()> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(invalid("alpha", alpha, "must be in (0, 1)"))
    }
}

/// The p-value of `correct` right guesses out of `guesses` under ε-DP
/// (Steinke et al. 2023, Theorem 3.1 and its δ > 0 extension).
pub(crate) fn one_run_p_value(
    canaries: u64,
    guesses: u64,
    correct: u64,
    delta: f64,
    eps: f64,
) -> f64 {
    let q = 1.0 / (1.0 + (-eps).exp());
    let Ok(bin) = Binomial::new(q, guesses) else {
        return 1.0;
    };
    let beta = if correct == 0 {
        1.0
    } else {
        bin.sf(correct - 1)
    };
    if delta == 0.0 {
        return beta;
    }
    let mut best = 0.0_f64;
    let mut sum = 0.0;
    for i in 1..=correct {
        sum += bin.pmf(correct - i);
        best = best.max(sum / i as f64);
    }
    beta + 2.0 * canaries as f64 * delta * best
}

/// ε lower bound from one training run: `canaries` planted (each included
/// with probability ½), `guesses` made, `correct` right, at significance
/// `alpha` (e.g. 0.05) and the claimed δ. Bisection to 1e-6.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when
/// `correct > guesses`, `guesses > canaries`, `α ∉ (0, 1)` or `δ ∉ [0, 1)`.
///
/// # Examples
///
/// ```
/// // Steinke et al.: 1000 canaries, 100 guesses, all right → ε̂ ≈ 3.493.
/// let eps = dpsgd_audit::lower_bound::one_run_epsilon(1000, 100, 100, 0.0, 0.05)?;
/// assert!((eps - 3.4930).abs() < 1e-3);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn one_run_epsilon(
    canaries: u64,
    guesses: u64,
    correct: u64,
    delta: f64,
    alpha: f64,
) -> Result<f64> {
    if correct > guesses || guesses > canaries {
        return Err(invalid(
            "correct",
            correct,
            "need correct ≤ guesses ≤ canaries",
        ));
    }
    check_alpha(alpha)?;
    if !(0.0..1.0).contains(&delta) {
        return Err(invalid("delta", delta, "must be in [0, 1)"));
    }
    let p = |eps: f64| one_run_p_value(canaries, guesses, correct, delta, eps);
    if p(0.0) > alpha {
        return Ok(0.0); // not even ε = 0 can be rejected
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while p(hi) <= alpha {
        lo = hi;
        hi *= 2.0;
        if hi > 1e3 {
            return Ok(lo);
        }
    }
    while hi - lo > 1e-6 {
        let mid = 0.5 * (lo + hi);
        if p(mid) <= alpha { lo = mid } else { hi = mid }
    }
    Ok(lo)
}

/// The outcome of a one-run audit: the guesses, how many were right and
/// the ε lower bound they prove.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OneRunAudit {
    /// Canaries `m` (each included with probability ½).
    pub canaries: u64,
    /// Canaries actually included in training.
    pub included: u64,
    /// Guesses `r`, fixed before the scores were seen.
    pub guesses: u64,
    /// Right guesses `v`.
    pub correct: u64,
    /// δ the bound is computed at (the run's claimed δ).
    pub delta: f64,
    /// Significance α of the bound.
    pub alpha: f64,
    /// ε̂: the training was not ε-DP for any ε below this, at confidence
    /// `1 − α`.
    pub epsilon: f64,
}

/// Auditing in one run (Steinke, Nasr & Jagielski 2023, Algorithm 1's
/// guesser): with the canaries' membership scores (higher = more likely
/// IN), guess IN for the `⌈guesses/2⌉` highest, OUT for the `⌊guesses/2⌋`
/// lowest, abstain on the rest, and bound ε from the number of right
/// guesses with [`one_run_epsilon`].
///
/// `guesses` must be chosen before looking at the scores (a function of
/// `m` only): picking it after seeing which choice gives the largest bound
/// makes the bound optimistic.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when the
/// lengths differ, there are no canaries, a score is NaN, `guesses` is 0 or
/// above the number of canaries, or α, δ are out of range.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::lower_bound::one_run_audit;
/// // A perfect attack on 1000 canaries, 100 guesses: ε̂ ≈ 3.49.
/// let included: Vec<bool> = (0..1000).map(|i| i % 2 == 0).collect();
/// let scores: Vec<f64> = included.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
/// let audit = one_run_audit(&scores, &included, 100, 0.0, 0.05)?;
/// assert_eq!(audit.correct, 100);
/// assert!((audit.epsilon - 3.4930).abs() < 1e-3);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn one_run_audit(
    scores: &[f64],
    included: &[bool],
    guesses: usize,
    delta: f64,
    alpha: f64,
) -> Result<OneRunAudit> {
    if scores.len() != included.len() {
        return Err(invalid(
            "included",
            included.len(),
            format!("need one membership per canary score ({})", scores.len()),
        ));
    }
    if scores.is_empty() {
        return Err(invalid("canaries", 0, "need at least one canary"));
    }
    if guesses == 0 || guesses > scores.len() {
        return Err(invalid(
            "guesses",
            guesses,
            format!("must be in 1..={}", scores.len()),
        ));
    }
    if let Some(s) = scores.iter().find(|s| s.is_nan()) {
        return Err(invalid("score", s, "canary scores must not be NaN"));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let guess_in = guesses.div_ceil(2);
    let guess_out = guesses - guess_in;
    let right_in = order[..guess_in].iter().filter(|&&i| included[i]).count();
    let right_out = order[order.len() - guess_out..]
        .iter()
        .filter(|&&i| !included[i])
        .count();
    let correct = (right_in + right_out) as u64;
    let epsilon = one_run_epsilon(scores.len() as u64, guesses as u64, correct, delta, alpha)?;
    Ok(OneRunAudit {
        canaries: scores.len() as u64,
        included: included.iter().filter(|&&b| b).count() as u64,
        guesses: guesses as u64,
        correct,
        delta,
        alpha,
        epsilon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_guess_the_extremes_and_abstain_in_the_middle() {
        // Scores 0..10, canaries 0, 2, 4, 6, 8 included; 4 guesses: IN for
        // 9 and 8 (one right), OUT for 0 and 1 (one right).
        let scores: Vec<f64> = (0..10).map(f64::from).collect();
        let included: Vec<bool> = (0..10).map(|i| i % 2 == 0).collect();
        let audit = one_run_audit(&scores, &included, 4, 0.0, 0.05).unwrap();
        assert_eq!((audit.guesses, audit.correct, audit.included), (4, 2, 5));
        assert_eq!(audit.epsilon, 0.0);
        // Odd guesses: IN for 9 and 8 (one right), OUT for 0 (wrong).
        let audit = one_run_audit(&scores, &included, 3, 0.0, 0.05).unwrap();
        assert_eq!(audit.correct, 1);
        assert!(one_run_audit(&scores, &included, 0, 0.0, 0.05).is_err());
        assert!(one_run_audit(&scores, &included, 11, 0.0, 0.05).is_err());
        assert!(one_run_audit(&scores, &included[..9], 4, 0.0, 0.05).is_err());
        assert!(one_run_audit(&[f64::NAN], &[true], 1, 0.0, 0.05).is_err());
    }

    /// docs/references.md: Jagielski et al. 2020 vectors at α = 0.05.
    #[test]
    fn should_reproduce_the_clopper_pearson_vectors() {
        for (tp, n_in, fp, n_out, expected) in [
            (400, 500, 100, 500, 1.1648),
            (990, 1000, 10, 1000, 3.9816),
            (50, 1000, 1, 1000, 1.9045),
        ] {
            let eps = canary_epsilon(tp, n_in, fp, n_out, 0.05, 0.0).unwrap();
            assert!(
                (eps - expected).abs() < 5e-4,
                "{tp}/{n_in}, {fp}/{n_out}: {eps} vs {expected}"
            );
        }
        // Chance-level guesses give nothing; δ only lowers the bound.
        assert_eq!(canary_epsilon(250, 500, 250, 500, 0.05, 0.0).unwrap(), 0.0);
        let with_delta = canary_epsilon(990, 1000, 10, 1000, 0.05, 1e-3).unwrap();
        assert!(with_delta < 3.9816);
    }

    /// docs/references.md: Steinke, Nasr & Jagielski 2023 vectors at 0.05.
    #[test]
    fn should_reproduce_the_one_run_vectors() {
        for (m, r, v, delta, expected) in [
            (1000, 100, 100, 0.0, 3.4930),
            (1000, 1000, 1000, 0.0, 5.8091),
            (1000, 100, 90, 0.0, 1.6308),
            (1000, 100, 75, 0.0, 0.7022),
            (1000, 1000, 600, 0.0, 0.2975),
            (1000, 100, 100, 1e-5, 3.4654),
            (1000, 1000, 1000, 1e-5, 5.7823),
            (10000, 1000, 900, 1e-5, 2.0152),
        ] {
            let eps = one_run_epsilon(m, r, v, delta, 0.05).unwrap();
            assert!(
                (eps - expected).abs() < 1e-3,
                "(m={m}, r={r}, v={v}, δ={delta}): {eps} vs {expected}"
            );
        }
        // Half right is chance: no bound.
        assert_eq!(one_run_epsilon(1000, 100, 50, 0.0, 0.05).unwrap(), 0.0);
    }

    #[test]
    fn should_reject_impossible_counts() {
        assert!(canary_epsilon(11, 10, 0, 10, 0.05, 0.0).is_err());
        assert!(canary_epsilon(1, 0, 0, 10, 0.05, 0.0).is_err());
        assert!(canary_epsilon(1, 10, 0, 10, 1.0, 0.0).is_err());
        assert!(one_run_epsilon(10, 100, 5, 0.0, 0.05).is_err());
        assert!(one_run_epsilon(1000, 10, 11, 0.0, 0.05).is_err());
        assert!(one_run_epsilon(1000, 10, 5, 1.0, 0.05).is_err());
    }
}
