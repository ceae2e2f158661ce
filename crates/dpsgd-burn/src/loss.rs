//! Per-example losses (the engine needs one loss per example, not a mean).

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

/// Cross-entropy against smoothed labels: the target puts `1 − ε` on the
/// true class and `ε/(C−1)` elsewhere (a cheap empirical defence against
/// membership inference).
pub fn label_smoothed_cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    smoothing: f32,
) -> Tensor<1> {
    let [batch, classes] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let one_hot: Tensor<2> = targets.one_hot(classes).float();
    let off = smoothing / (classes.max(2) - 1) as f32;
    let target = one_hot.mul_scalar(1.0 - smoothing - off).add_scalar(off);
    (log_p * target).sum_dim(1).reshape([batch]).neg()
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
        let got: Vec<f32> = cross_entropy_per_example(logits.clone(), y.clone())
            .into_data()
            .iter::<f32>()
            .collect();
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        assert!((got[0] - (lse - 3.0)).abs() < 1e-5);
        assert!((got[1] - 3f32.ln()).abs() < 1e-5);
        let smooth: Vec<f32> = label_smoothed_cross_entropy(logits, y, 0.0)
            .into_data()
            .iter::<f32>()
            .collect();
        assert!((smooth[0] - got[0]).abs() < 1e-5);
    }
}
