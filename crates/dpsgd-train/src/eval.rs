//! Evaluation: batches as tensors, accuracy, per-example losses and
//! logits, all computed outside the autodiff graph; and the leakage every
//! report measures: the loss-threshold membership-inference attack on the
//! training set (members) vs the test set (non-members).

use crate::models::Classifier;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dpsgd_audit::metrics::Roc;
use dpsgd_audit::scores::{ScoreKind, score_logits};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_data::Dataset;

/// Examples evaluated at once.
const CHUNK: usize = 1024;

/// The examples at `indices` as tensors on `device`: inputs
/// `[B, C, H, W]` (tabular data as `[B, 1, 1, features]`) and labels `[B]`.
pub fn batch(data: &Dataset, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let (x, y) = data.gather(indices);
    let [c, h, w] = data.image_shape().unwrap_or([1, 1, data.n_features()]);
    let y: Vec<i64> = y.into_iter().map(i64::from).collect();
    (
        Tensor::from_data(TensorData::new(x, [indices.len(), c, h, w]), device),
        Tensor::from_data(TensorData::new(y, [indices.len()]), device),
    )
}

/// Calls `f` with the logits and labels of every chunk of `data`, the
/// model detached from autodiff.
fn for_each_chunk<M: Classifier>(
    model: &M,
    data: &Dataset,
    device: &Device,
    mut f: impl FnMut(Tensor<2>, Tensor<1, Int>),
) {
    let device = device.clone().without_autodiff();
    // `valid()` detaches the parameters from autodiff; `to_device` alone
    // would keep them tracked, and every evaluation batch's activations
    // would stay in the never-consumed graph (≈ 60 MB per 1024 MNIST
    // images with the CNN, 9 GB after a training run's final evaluation).
    let model = model.valid();
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(CHUNK) {
        let (x, y) = batch(data, chunk, &device);
        f(model.logits(x), y);
    }
}

/// Fraction of `data` that `model` classifies correctly (evaluated in
/// chunks of 1 024 examples, without autodiff).
pub fn accuracy<M: Classifier>(model: &M, data: &Dataset, device: &Device) -> f64 {
    let mut correct = 0usize;
    for_each_chunk(model, data, device, |logits, y| {
        let n = y.dims()[0];
        let predicted = logits.argmax(1).reshape([n]);
        correct += predicted.equal(y).int().sum().into_scalar::<i64>() as usize;
    });
    correct as f64 / data.len().max(1) as f64
}

/// Per-example losses of `model` on `data` (no autodiff), in chunks.
pub fn per_example_losses<M: Classifier>(model: &M, data: &Dataset, device: &Device) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    for_each_chunk(model, data, device, |logits, y| {
        out.extend(
            cross_entropy_per_example(logits, y)
                .into_data()
                .iter::<f32>(),
        );
    });
    out
}

/// Logits of every example of `data` under `model` (detached), in chunks.
pub(crate) fn logits_of<M: Classifier>(model: &M, data: &Dataset, device: &Device) -> Vec<f64> {
    let mut out = Vec::with_capacity(data.len() * data.n_classes());
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(CHUNK) {
        let (x, _) = batch(data, chunk, device);
        out.extend(model.logits(x).into_data().iter::<f32>().map(f64::from));
    }
    out
}

/// Loss scores (`ln p_y`, higher = more likely a member) of every example
/// of `data`, computed in f64 from the logits: a confident model's f32
/// losses are exactly 0 for members and non-members alike, and would hide
/// the leakage in ties.
pub(crate) fn loss_scores(logits: &[f64], data: &Dataset) -> Vec<f64> {
    let classes = logits.len() / data.len().max(1);
    logits
        .chunks(classes.max(1))
        .zip(data.labels())
        .map(|(row, &y)| score_logits(ScoreKind::Loss, row, y as usize).unwrap_or(f64::NAN))
        .collect()
}

/// ROC AUC of the loss-threshold attack (Yeom et al. 2018): members are
/// `train`, non-members `test`; 0.5 means no measurable leakage, NaN when
/// a split is empty or a logit is not finite.
pub(crate) fn loss_threshold_auc<M: Classifier>(
    model: &M,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> f64 {
    let model = model.valid();
    let device = device.clone().without_autodiff();
    let members = loss_scores(&logits_of(&model, train, &device), train);
    let others = loss_scores(&logits_of(&model, test, &device), test);
    Roc::new(&members, &others).map_or(f64::NAN, |roc| roc.auc)
}
