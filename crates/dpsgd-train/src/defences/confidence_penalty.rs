//! The confidence penalty (Pereyra et al. 2017): cross-entropy − β·H(p).
//! Its loss, its check; its setting is
//! [`super::Defences::confidence_penalty`].

use crate::config_error::ConfigError;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Shannon entropy (in nats) of each example's predicted distribution,
/// `[B]`: `H(p_i) = −Σ_c p_ic · ln p_ic` with `p_i = softmax(logits_i)`.
///
/// `logits: [B, classes]`. Computed from `log_softmax`, so a probability
/// that underflows to 0 contributes 0 (not NaN).
pub fn prediction_entropy(logits: Tensor<2>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let log_p = log_softmax(logits, 1);
    (log_p.clone().exp() * log_p)
        .sum_dim(1)
        .reshape([batch])
        .neg()
}

/// Confidence penalty (Pereyra, Tucker, Chorowski, Kaiser & Hinton,
/// "Regularizing neural networks by penalizing confident output
/// distributions", ICLR workshop 2017), per example, `[B]`:
///
/// `ℓ_i = −ln p_i[y_i] − β · H(p_i)`, `p_i = softmax(logits_i)`,
/// `H(p) = −Σ_c p_c ln p_c` (see [`prediction_entropy`]).
///
/// Subtracting the entropy rewards less confident predictions; Pereyra et
/// al. use β between 0.1 and 4, the RelaxLoss authors' baseline 0.1 on
/// Purchase/Texas. β = 0 is [`dpsgd_burn::loss::cross_entropy_per_example`]; a negative β
/// rewards confidence instead (not a defence, but not refused). Each
/// example's loss depends on that example alone, so it is usable under
/// DP-SGD as is.
///
/// `logits: [B, classes]`, `targets: [B]` class indices.
///
/// # Panics
///
/// If `targets` does not hold exactly `B` elements (burn's shape check).
pub fn confidence_penalty(logits: Tensor<2>, targets: Tensor<1, Int>, beta: f32) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let ce = log_p
        .clone()
        .gather(1, targets.reshape([batch, 1]))
        .reshape([batch])
        .neg();
    // Σ p ln p = −H.
    let neg_entropy = (log_p.clone().exp() * log_p).sum_dim(1).reshape([batch]);
    ce + neg_entropy.mul_scalar(beta)
}

/// Refuses a negative or non-finite β.
pub(crate) fn check(beta: Option<f32>) -> Result<(), ConfigError> {
    if let Some(b) = beta
        && !(b >= 0.0 && b.is_finite())
    {
        return Err(ConfigError::new("confidence_penalty", "must be ≥ 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defences::test_support::*;
    use dpsgd_burn::loss::cross_entropy_per_example;

    #[test]
    fn confidence_penalty_matches_hand_computed_values() {
        let beta = 0.5;
        let got = values(confidence_penalty(logits(&[A, U]), labels(&[2, 0]), beta));
        let want = [
            ce64(&A, 2) - f64::from(beta) * entropy64(&A),
            // Uniform prediction: ℓ = H = ln 3.
            (1.0 - f64::from(beta)) * 3f64.ln(),
        ];
        assert_close(&got, &want, 1e-5);
        // By hand for [1, 2, 3]: p = e^{z}/Σ, H = ln Σ − Σ p z.
        let s = 1f64.exp() + 2f64.exp() + 3f64.exp();
        let mean_z = (1f64.exp() + 2.0 * 2f64.exp() + 3.0 * 3f64.exp()) / s;
        let h = s.ln() - mean_z;
        assert!((entropy64(&A) - h).abs() < 1e-12);
        assert_close(
            &values(prediction_entropy(logits(&[A, U]))),
            &[h, 3f64.ln()],
            1e-5,
        );
    }

    #[test]
    fn confidence_penalty_with_beta_zero_is_cross_entropy() {
        let x = logits(&[A, U, B]);
        let y = labels(&[2, 0, 2]);
        let penalised = values(confidence_penalty(x.clone(), y.clone(), 0.0));
        let ce = values(cross_entropy_per_example(x, y));
        let ce_wide: Vec<f64> = ce.iter().map(|&v| f64::from(v)).collect();
        assert_close(&penalised, &ce_wide, 1e-6);
        assert_close(&ce, &[ce64(&A, 2), 3f64.ln(), ce64(&B, 2)], 1e-5);
    }
}
