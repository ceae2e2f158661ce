//! Black-box membership scores from a model's output probabilities on one
//! record (higher = more likely a member): the threshold attacks.
//!
//! Each takes the probability vector `p` the model returns and the record's
//! true label `y`; they differ in what of `p` they read:
//!
//! * **loss** (Yeom et al. 2018): `−ℓ = ln p_y`;
//! * **confidence**: `p_y`;
//! * **entropy**: `−H(p) = Σ p_j ln p_j` (members get confident outputs,
//!   whatever the label);
//! * **modified entropy** (Song & Mittal 2021):
//!   `−Mentr = (1 − p_y) ln p_y + Σ_{j≠y} p_j ln(1 − p_j)`, monotone in the
//!   correct-class confidence and label-aware;
//! * **logit-scaled confidence** (LiRA's statistic, Carlini et al. 2022):
//!   `φ = ln p_y − ln Σ_{j≠y} p_j`, close to Gaussian across shadow models.

use crate::error::{Result, invalid};

/// The threshold attacks of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreKind {
    /// `ln p_y` (the negated cross-entropy loss).
    Loss,
    /// `p_y`.
    Confidence,
    /// `−H(p)`.
    Entropy,
    /// `−Mentr(p, y)`.
    ModifiedEntropy,
    /// `ln p_y − ln Σ_{j≠y} p_j`.
    LogitScaled,
}

impl ScoreKind {
    /// The attack's short name (`loss`, `confidence`, `entropy`,
    /// `modified-entropy`, `logit`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Confidence => "confidence",
            Self::Entropy => "entropy",
            Self::ModifiedEntropy => "modified-entropy",
            Self::LogitScaled => "logit",
        }
    }
}

/// `x ln x` with `0 ln 0 = 0`.
fn x_ln_x(x: f64) -> f64 {
    if x > 0.0 { x * x.ln() } else { 0.0 }
}

/// The membership score of one record.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when `y` is
/// out of range, a probability is NaN or outside [0, 1], or they do not sum
/// to 1 (within 1e-4, as f32 softmax outputs do).
///
/// # Examples
///
/// ```
/// use dpsgd_audit::scores::{score, ScoreKind};
/// let p = [0.7, 0.2, 0.1];
/// assert!((score(ScoreKind::Loss, &p, 0)? - 0.7f64.ln()).abs() < 1e-12);
/// assert!((score(ScoreKind::LogitScaled, &p, 0)? - (0.7f64 / 0.3).ln()).abs() < 1e-12);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn score(kind: ScoreKind, probs: &[f64], label: usize) -> Result<f64> {
    if label >= probs.len() {
        return Err(invalid(
            "label",
            label,
            format!("must be < {}", probs.len()),
        ));
    }
    if let Some(p) = probs.iter().find(|p| !(**p >= 0.0 && **p <= 1.0)) {
        return Err(invalid("probability", p, "must be in [0, 1]"));
    }
    let total: f64 = probs.iter().sum();
    if (total - 1.0).abs() > 1e-4 {
        return Err(invalid("probabilities", total, "must sum to 1"));
    }
    let py = probs[label];
    let rest: f64 = probs
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != label)
        .map(|(_, p)| p)
        .sum();
    Ok(match kind {
        ScoreKind::Loss => py.ln(),
        ScoreKind::Confidence => py,
        ScoreKind::Entropy => probs.iter().map(|&p| x_ln_x(p)).sum(),
        ScoreKind::ModifiedEntropy => {
            let own = if py > 0.0 {
                (1.0 - py) * py.ln()
            } else {
                f64::NEG_INFINITY
            };
            let others: f64 = probs
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != label)
                .map(|(_, &p)| {
                    if p < 1.0 {
                        p * (-p).ln_1p()
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .sum();
            own + others
        }
        ScoreKind::LogitScaled => py.ln() - rest.ln(),
    })
}

/// `ln(1 + eˣ)` without overflow or loss of tiny values.
fn softplus(x: f64) -> f64 {
    if x > 36.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `ln Σ eˣ` of `values`, stable (−∞ for no values).
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// The membership score of one record from the model's **logits**
/// (pre-softmax outputs), in f64 throughout.
///
/// Prefer this to [`score`] whenever the logits are at hand: a confident
/// model's probabilities saturate (p_y = 1 exactly in f32 once the logit gap
/// passes ≈ 17, in f64 past ≈ 37), and every member and most non-members
/// then tie at loss 0 — the loss attack reads AUC ≈ 0.5 on a model that
/// has memorised its training set. From the logits, with
/// `r = ln Σ_{j≠y} e^{z_j} − z_y`, the loss is `softplus(r)` and LiRA's
/// `φ = −r`, both exact for any gap.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when `y` is
/// out of range, there are fewer than two classes, or a logit is not finite.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::scores::{score_logits, ScoreKind};
/// // A gap of 60: p_y rounds to 1, yet the loss e^{-60} is kept.
/// let loss = -score_logits(ScoreKind::Loss, &[60.0, 0.0], 0)?;
/// assert!((loss / (-60f64).exp() - 1.0).abs() < 1e-12);
/// assert_eq!(score_logits(ScoreKind::LogitScaled, &[60.0, 0.0], 0)?, 60.0);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn score_logits(kind: ScoreKind, logits: &[f64], label: usize) -> Result<f64> {
    if logits.len() < 2 {
        return Err(invalid("logits", logits.len(), "need at least two classes"));
    }
    if label >= logits.len() {
        return Err(invalid(
            "label",
            label,
            format!("must be < {}", logits.len()),
        ));
    }
    if let Some(z) = logits.iter().find(|z| !z.is_finite()) {
        return Err(invalid("logit", z, "must be finite"));
    }
    let zy = logits[label];
    let others = logits
        .iter()
        .enumerate()
        .filter(move |&(j, _)| j != label)
        .map(|(_, &z)| z);
    // r = ln Σ_{j≠y} p_j − ln p_y.
    let r = log_sum_exp(others) - zy;
    let log_py = -softplus(r);
    let lse = log_sum_exp(logits.iter().copied());
    let log_p = |z: f64| z - lse;
    Ok(match kind {
        ScoreKind::Loss => log_py,
        ScoreKind::Confidence => log_py.exp(),
        ScoreKind::Entropy => logits
            .iter()
            .enumerate()
            .map(|(j, &z)| {
                let lp = if j == label { log_py } else { log_p(z) };
                lp.exp() * lp
            })
            .sum(),
        ScoreKind::ModifiedEntropy => {
            // 1 − p_y = −expm1(ln p_y): exact for p_y near 1.
            let own = -log_py.exp_m1() * log_py;
            // ln(1 − p_j) = ln Σ_{k≠j} e^{z_k} − lse, exact even where p_j
            // rounds to 1.
            let rest: f64 = (0..logits.len())
                .filter(|&j| j != label)
                .map(|j| {
                    let p = log_p(logits[j]).exp();
                    let others = logits
                        .iter()
                        .enumerate()
                        .filter(move |&(k, _)| k != j)
                        .map(|(_, &z)| z);
                    p * (log_sum_exp(others) - lse)
                })
                .sum();
            own + rest
        }
        ScoreKind::LogitScaled => -r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_agree_with_probability_scores_when_nothing_saturates() {
        let logits = [1.5, -0.3, 0.2, 2.0];
        let lse = logits.iter().map(|z: &f64| z.exp()).sum::<f64>().ln();
        let probs: Vec<f64> = logits.iter().map(|z| (z - lse).exp()).collect();
        for kind in [
            ScoreKind::Loss,
            ScoreKind::Confidence,
            ScoreKind::Entropy,
            ScoreKind::ModifiedEntropy,
            ScoreKind::LogitScaled,
        ] {
            for y in 0..4 {
                let a = score_logits(kind, &logits, y).unwrap();
                let b = score(kind, &probs, y).unwrap();
                assert!((a - b).abs() < 1e-12, "{kind:?} y={y}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn should_keep_tiny_losses_apart_where_probabilities_tie() {
        // Gaps of 40 and 50: both p_y round to 1.0 in f64, the losses
        // e^{-40} and e^{-50} stay distinct and ordered.
        let near = score_logits(ScoreKind::Loss, &[40.0, 0.0, 0.0], 0).unwrap();
        let far = score_logits(ScoreKind::Loss, &[50.0, 0.0, 0.0], 0).unwrap();
        assert!((near / (-2.0 * (-40f64).exp()) - 1.0).abs() < 1e-12);
        assert!(far > near);
        // A wrong, confident prediction: loss = 50 + ln(1 + 2e^{-50}).
        let wrong = score_logits(ScoreKind::Loss, &[50.0, 0.0, 0.0], 1).unwrap();
        assert!((wrong + 50.0).abs() < 1e-12);
        assert_eq!(
            score_logits(ScoreKind::LogitScaled, &[0.0, 50.0, 0.0], 1).unwrap(),
            50.0 - 2f64.ln()
        );
        // Huge logits stay finite.
        let huge = score_logits(ScoreKind::ModifiedEntropy, &[1e300, -1e300], 0).unwrap();
        assert!(huge.is_finite());
        // A wrong class at p ≈ 1: (1 − p_y) ln p_y + p_1 ln(1 − p_1) with
        // ln(1 − p_1) = −50 exactly, not −∞.
        let wrong = score_logits(ScoreKind::ModifiedEntropy, &[0.0, 50.0], 0).unwrap();
        assert!((wrong - (-50.0 + -50.0)).abs() < 1e-9, "{wrong}");
    }

    #[test]
    fn should_refuse_bad_logits() {
        assert!(score_logits(ScoreKind::Loss, &[1.0], 0).is_err());
        assert!(score_logits(ScoreKind::Loss, &[1.0, 2.0], 2).is_err());
        assert!(score_logits(ScoreKind::Loss, &[f64::NAN, 2.0], 0).is_err());
        assert!(score_logits(ScoreKind::Loss, &[f64::INFINITY, 2.0], 0).is_err());
    }

    #[test]
    fn should_compute_each_score_by_hand() {
        let p = [0.5, 0.25, 0.25];
        let ln = f64::ln;
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(score(ScoreKind::Loss, &p, 1).unwrap(), ln(0.25));
        close(score(ScoreKind::Confidence, &p, 1).unwrap(), 0.25);
        close(
            score(ScoreKind::Entropy, &p, 1).unwrap(),
            0.5 * ln(0.5) + 2.0 * 0.25 * ln(0.25),
        );
        // Song & Mittal: −[(1 − p_y) ln p_y ... ] negated, for y = 0:
        // (1 − 0.5) ln 0.5 + 0.25 ln 0.75 + 0.25 ln 0.75.
        close(
            score(ScoreKind::ModifiedEntropy, &p, 0).unwrap(),
            0.5 * ln(0.5) + 0.5 * ln(0.75),
        );
        close(score(ScoreKind::LogitScaled, &p, 0).unwrap(), 0.0);
        // A certain, correct output is the most member-like; a certain wrong
        // one the least (−∞ loss score).
        assert_eq!(score(ScoreKind::Loss, &[1.0, 0.0], 0).unwrap(), 0.0);
        assert_eq!(
            score(ScoreKind::Loss, &[1.0, 0.0], 1).unwrap(),
            f64::NEG_INFINITY
        );
        assert_eq!(
            score(ScoreKind::LogitScaled, &[1.0, 0.0], 0).unwrap(),
            f64::INFINITY
        );
    }

    #[test]
    fn should_reject_malformed_outputs() {
        assert!(score(ScoreKind::Loss, &[0.5, 0.5], 2).is_err());
        assert!(score(ScoreKind::Loss, &[0.5, 0.6], 0).is_err());
        assert!(score(ScoreKind::Loss, &[f64::NAN, 1.0], 0).is_err());
        assert!(score(ScoreKind::Loss, &[-0.1, 1.1], 0).is_err());
    }
}
