//! What a DP step needs from burn-train's step outputs: the loss of each
//! example (the engine clips each example's gradient of it), and the item
//! without its graph, joined across the physical chunks of one logical
//! batch, for burn-train's metrics.

use burn::tensor::{Tensor, activation::log_softmax};
use burn_train::{ClassificationOutput, MultiLabelClassificationOutput, RegressionOutput};

/// A training step's output that burn-train's metrics read, as the DP
/// strategy hands it over: detached from the autodiff graph, and joined
/// when the engine ran a logical batch in several physical chunks
/// (`DpSgdConfig::with_max_physical_batch_size`).
///
/// Implemented for burn-train's [`ClassificationOutput`],
/// [`MultiLabelClassificationOutput`] and [`RegressionOutput`]; implement
/// it for an output of your own.
pub trait StepOutput: Sized {
    /// The output without its autodiff graph (burn-train's metrics only
    /// read values).
    fn detach(self) -> Self;
    /// The outputs of consecutive chunks of one batch, in order, as the
    /// output of the whole batch (`parts` is never empty).
    fn concat(parts: Vec<Self>) -> Self;
}

/// A step output from which the per-example loss the model trains on can
/// be read, so that a stock burn-train forward (`forward_classification`,
/// `forward_regression`) is all the DP strategy needs.
///
/// * [`ClassificationOutput`]: cross-entropy of the logits,
///   `ℓ_i = −log softmax(z_i)_{y_i}` — burn's `CrossEntropyLoss` with its
///   defaults (logits, no smoothing, no class weights), whose mean is the
///   output's `loss`;
/// * [`RegressionOutput`]: the mean squared error of each row,
///   `ℓ_i = (1/d)·Σ_j (ŷ_ij − y_ij)²` — burn's `MseLoss` with
///   `Reduction::Mean` averages exactly these.
///
/// The DP strategy checks, on its first step, that these average to the
/// `loss` the output reports, and refuses to train on a mismatch (a
/// smoothed or weighted loss, probabilities instead of logits): give such
/// a loss per example with `DpTraining::strategy_with_loss`.
pub trait PerExampleLoss: StepOutput {
    /// The loss of each example, shape `[n]`, still on the autodiff graph.
    fn per_example_loss(&self) -> Tensor<1>;
    /// The loss the output itself reports (a mean), shape `[1]`.
    fn reported_loss(&self) -> Tensor<1>;
}

/// Joins the `(mean loss, output rows, targets)` of consecutive chunks of
/// one batch into the batch's: outputs and targets concatenated, the loss
/// the mean of the chunks' means weighted by their sizes.
fn join<T>(
    parts: Vec<(Tensor<1>, Tensor<2>, T)>,
    cat: impl FnOnce(Vec<T>) -> T,
) -> (Tensor<1>, Tensor<2>, T) {
    if parts.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let total: usize = parts.iter().map(|(_, o, _)| o.dims()[0]).sum();
    let mut losses = Vec::with_capacity(parts.len());
    let mut outputs = Vec::with_capacity(parts.len());
    let mut targets = Vec::with_capacity(parts.len());
    for (loss, output, target) in parts {
        let weight = output.dims()[0] as f32 / total.max(1) as f32;
        losses.push(loss.mul_scalar(weight));
        outputs.push(output);
        targets.push(target);
    }
    let loss = Tensor::stack::<2>(losses, 0).sum_dim(0).reshape([1]);
    (loss, Tensor::cat(outputs, 0), cat(targets))
}

impl StepOutput for ClassificationOutput {
    fn detach(self) -> Self {
        ClassificationOutput::new(self.loss.detach(), self.output.detach(), self.targets)
    }

    fn concat(parts: Vec<Self>) -> Self {
        let parts = parts.into_iter().map(|p| (p.loss, p.output, p.targets));
        let (loss, output, targets) = join(parts.collect(), |t| Tensor::cat(t, 0));
        Self::new(loss, output, targets)
    }
}

impl PerExampleLoss for ClassificationOutput {
    fn per_example_loss(&self) -> Tensor<1> {
        let [n, _] = self.output.dims();
        let log_probs = log_softmax(self.output.clone(), 1);
        log_probs
            .gather(1, self.targets.clone().reshape([n, 1]))
            .reshape([n])
            .neg()
    }

    fn reported_loss(&self) -> Tensor<1> {
        self.loss.clone()
    }
}

impl StepOutput for MultiLabelClassificationOutput {
    fn detach(self) -> Self {
        MultiLabelClassificationOutput::new(self.loss.detach(), self.output.detach(), self.targets)
    }

    fn concat(parts: Vec<Self>) -> Self {
        let parts = parts.into_iter().map(|p| (p.loss, p.output, p.targets));
        let (loss, output, targets) = join(parts.collect(), |t| Tensor::cat(t, 0));
        Self::new(loss, output, targets)
    }
}

impl StepOutput for RegressionOutput {
    fn detach(self) -> Self {
        RegressionOutput::new(
            self.loss.detach(),
            self.output.detach(),
            self.targets.detach(),
        )
    }

    fn concat(parts: Vec<Self>) -> Self {
        let parts = parts.into_iter().map(|p| (p.loss, p.output, p.targets));
        let (loss, output, targets) = join(parts.collect(), |t| Tensor::cat(t, 0));
        Self::new(loss, output, targets)
    }
}

impl PerExampleLoss for RegressionOutput {
    fn per_example_loss(&self) -> Tensor<1> {
        let [n, _] = self.output.dims();
        (self.output.clone() - self.targets.clone())
            .powi_scalar(2)
            .mean_dim(1)
            .reshape([n])
    }

    fn reported_loss(&self) -> Tensor<1> {
        self.loss.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
    use burn::tensor::{Device, Int, TensorData};

    fn logits(device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
        let z: Vec<f32> = (0..5 * 4)
            .map(|i| ((i as f32) * 0.73).sin() * 3.0)
            .collect();
        (
            Tensor::from_data(TensorData::new(z, [5, 4]), device),
            Tensor::from_data(TensorData::new(vec![0i64, 3, 1, 1, 2], [5]), device),
        )
    }

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    #[test]
    fn classification_losses_average_to_burns_cross_entropy() {
        let device = Device::default();
        let (z, y) = logits(&device);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(z.clone(), y.clone());
        let out = ClassificationOutput::new(loss.clone(), z.clone(), y.clone());
        let per = values(out.per_example_loss());
        // Naive reference: −z_y + log Σ_k exp z_k, row by row.
        let zs: Vec<f32> = z.into_data().iter::<f32>().collect();
        let ys: Vec<i64> = y.into_data().iter::<i64>().collect();
        for (i, &l) in per.iter().enumerate() {
            let row = &zs[i * 4..i * 4 + 4];
            let lse = row.iter().map(|v| v.exp()).sum::<f32>().ln();
            assert!((l - (lse - row[ys[i] as usize])).abs() < 1e-5);
        }
        let mean = per.iter().sum::<f32>() / 5.0;
        assert!((mean - values(loss)[0]).abs() < 1e-5);
    }

    #[test]
    fn regression_losses_average_to_burns_mse() {
        let device = Device::default();
        let p = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.0, -1.0], [2, 2]),
            &device,
        );
        let t = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 2.0, 1.0, 1.0], [2, 2]),
            &device,
        );
        let loss = MseLoss::new().forward(p.clone(), t.clone(), Reduction::Mean);
        let out = RegressionOutput::new(loss.clone(), p, t);
        assert_eq!(values(out.per_example_loss()), vec![0.5, 2.5]);
        assert!((values(loss)[0] - 1.5).abs() < 1e-6);
    }

    #[test]
    fn chunks_join_into_the_batch_and_its_mean_loss() {
        let device = Device::default();
        let (z, y) = logits(&device);
        let part = |a: usize, b: usize| {
            let (zz, yy) = (z.clone().narrow(0, a, b - a), y.clone().narrow(0, a, b - a));
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(zz.clone(), yy.clone());
            ClassificationOutput::new(loss, zz, yy)
        };
        let whole = part(0, 5);
        let joined = ClassificationOutput::concat(vec![part(0, 2), part(2, 5)]);
        assert_eq!(joined.output.dims(), [5, 4]);
        assert_eq!(
            joined.targets.into_data().iter::<i64>().collect::<Vec<_>>(),
            vec![0, 3, 1, 1, 2]
        );
        assert!((values(joined.loss)[0] - values(whole.loss)[0]).abs() < 1e-5);
    }
}
