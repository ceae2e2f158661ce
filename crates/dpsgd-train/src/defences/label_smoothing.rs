//! Label smoothing (Szegedy et al. 2016): cross-entropy against a target
//! that puts `1 − ε` on the true class and `ε/(C − 1)` on each other one.
//! Its loss, its check; its setting is [`super::Defences::label_smoothing`].

use crate::config_error::ConfigError;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

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

/// Refuses a smoothing ε outside [0, 1).
pub(crate) fn check(smoothing: Option<f32>) -> Result<(), ConfigError> {
    if let Some(e) = smoothing
        && !(0.0..1.0).contains(&e)
    {
        return Err(ConfigError::new("label_smoothing", "must be in [0, 1)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use dpsgd_burn::loss::cross_entropy_per_example;

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
