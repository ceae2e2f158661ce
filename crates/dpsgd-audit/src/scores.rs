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

#[cfg(test)]
mod tests {
    use super::*;

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
