//! MIST, membership-invariant subspace training (Li, Li & Ribeiro 2024):
//! its settings, its checks and its cross-difference loss. The training
//! algorithm (sub-models, rounds, averaging) is a training loop of its
//! own: [`crate::mist`].

use crate::config_error::ConfigError;
use burn::tensor::{Int, Tensor};
use dpsgd_burn::loss::cross_entropy_per_example;
use serde::Serialize;

/// MIST's parameters (see `dpsgd_train::mist` for the algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MistSettings {
    /// M ≥ 2: sub-models, each training on its own part of the data.
    pub submodels: usize,
    /// T₁ ≥ 1: epochs of ordinary training (the run's loss) per round.
    pub local_epochs: usize,
    /// T₂ ≥ 1: epochs of the cross-difference loss per round.
    pub cross_epochs: usize,
    /// λ > 0: the cross-difference loss's weight.
    pub weight: f32,
}

impl Default for MistSettings {
    /// M = 4 sub-models, T₁ = T₂ = 1, λ = 1.
    fn default() -> Self {
        Self {
            submodels: 4,
            local_epochs: 1,
            cross_epochs: 1,
            weight: 1.0,
        }
    }
}

/// MIST's cross-difference loss (Li, Li & Ribeiro, "MIST: Defending
/// Against Membership Inference Attacks Through Membership-Invariant
/// Subspace Training", USENIX Security 2024), per example, `[B]`:
///
/// `ℓ_i = λ · |CE(logits_i, y_i) − r_i|`
///
/// where `r_i` is the cross-entropy of example `i` under the *other*
/// sub-models, which did not train on it (its counterfactual non-member
/// loss), given as `reference: [B]` and treated as a constant. Minimising
/// it pulls a sub-model's loss on its own members towards their
/// non-member loss: an example that every sub-model fits anyway (`r_i`
/// small) is left alone; one that only its own sub-model fits (a
/// vulnerable, memorised one: `CE ≪ r_i`) has its loss raised. The
/// gradient is `λ·sign(CE − r)·∇CE` (0 at equality, burn's `abs`).
///
/// Each example's loss depends on that example, the parameters and a
/// constant computed from models that never saw it, so it is usable under
/// DP-SGD as is.
///
/// `logits: [B, classes]`, `targets: [B]` class indices.
///
/// # Panics
///
/// If `targets` or `reference` does not hold exactly `B` elements.
pub fn cross_difference(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    reference: Tensor<1>,
    weight: f32,
) -> Tensor<1> {
    (cross_entropy_per_example(logits, targets) - reference.detach())
        .abs()
        .mul_scalar(weight)
}

/// Refuses fewer than 2 sub-models, an empty phase and λ ≤ 0 (what MIST
/// does not support yet with the rest of the run: [`super::check`]).
pub(crate) fn check(settings: Option<MistSettings>) -> Result<(), ConfigError> {
    let Some(m) = settings else {
        return Ok(());
    };
    if m.submodels < 2 {
        return Err(ConfigError::new(
            "mist",
            "needs at least 2 sub-models (each trains on 1/M of the data)",
        ));
    }
    if m.local_epochs == 0 || m.cross_epochs == 0 {
        return Err(ConfigError::new(
            "mist",
            "needs at least 1 local and 1 cross-difference epoch per round",
        ));
    }
    if !(m.weight > 0.0 && m.weight.is_finite()) {
        return Err(ConfigError::new(
            "mist",
            "the cross-difference weight λ must be > 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defences::test_support::*;

    #[test]
    fn cross_difference_matches_hand_computed_values() {
        let device = Device::default();
        // A: ℓ ≈ 0.408 against a non-member loss of 2 (memorised: raised);
        // B: ℓ ≈ 3.170 against 1 (above); U: ℓ = ln 3 against ln 3 (equal).
        let reference =
            Tensor::<1>::from_data(TensorData::new(vec![2.0f32, 1.0, 3f32.ln()], [3]), &device);
        let got = values(cross_difference(
            logits(&[A, B, U]),
            labels(&[2, 2, 0]),
            reference,
            0.5,
        ));
        let want = [
            0.5 * (ce64(&A, 2) - 2.0).abs(),
            0.5 * (ce64(&B, 2) - 1.0).abs(),
            0.0,
        ];
        assert_close(&got, &want, 1e-5);
    }

    #[test]
    fn cross_difference_gradient_raises_a_memorised_loss_and_ignores_the_reference() {
        let device = Device::default().autodiff();
        let x = logits_on(&[A, B], &device).require_grad();
        let reference =
            Tensor::<1>::from_data(TensorData::new(vec![2.0f32, 1.0], [2]), &device).require_grad();
        let loss = cross_difference(
            x.clone(),
            labels_on(&[2, 2], &device),
            reference.clone(),
            2.0,
        );
        let grads = loss.sum().backward();
        let got = values(x.grad(&grads).expect("logits gradient"));
        // A below its reference: −λ(p − e_y) (ascent); B above: +λ(p − e_y).
        let hot = [one_hot64(2), one_hot64(2)];
        assert_close(&got, &analytic_grad(&[A, B], &hot, &[-2.0, 2.0]), 1e-5);
        // The reference is a constant: no gradient reaches it.
        assert!(reference.grad(&grads).is_none());
    }
}
