//! Per-example losses (the engine needs one loss per example, not a mean).
//!
//! # One loss per example, and why it matters for DP-SGD
//!
//! Every loss the engine trains on returns a `[B]` tensor, one loss per
//! example, and the loss of example `i` (and so its gradient, which DP-SGD
//! clips) depends on example `i` and the parameters alone. That is what
//! DP-SGD's guarantee needs: clipping bounds each example's contribution
//! only if no other example can change it.
//!
//! The training-time defences against membership inference that act
//! through the loss (label smoothing, the confidence penalty, RelaxLoss,
//! MIST's cross-difference loss) live with the rest of each defence in
//! `dpsgd_train::defences`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Cross-entropy of each example: `−ln softmax(logits_i)[y_i]`, `[B]`.
///
/// `logits: [B, classes]`, `targets: [B]` class indices.
pub fn cross_entropy_per_example(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([batch, 1]))
        .reshape([batch])
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn should_match_hand_computed_cross_entropy() {
        let device = Device::default();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3]),
            &device,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &device);
        let got: Vec<f32> = cross_entropy_per_example(logits, y)
            .into_data()
            .iter::<f32>()
            .collect();
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        assert!((got[0] - (lse - 3.0)).abs() < 1e-5);
        assert!((got[1] - 3f32.ln()).abs() < 1e-5);
    }
}
