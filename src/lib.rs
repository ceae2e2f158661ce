#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use dpsgd_accountant as accountant;
pub use dpsgd_burn as burn;
pub use dpsgd_core as core;
pub use dpsgd_data as data;

pub mod train;

use ::burn::tensor::{Device, Int, Tensor, TensorData};
use dpsgd_burn::models::Classifier;
use dpsgd_data::Dataset;

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

/// Fraction of `data` that `model` classifies correctly (evaluated in
/// chunks of 1 024 examples, without autodiff).
pub fn accuracy<M: Classifier>(model: &M, data: &Dataset, device: &Device) -> f64 {
    let device = device.clone().without_autodiff();
    // `valid()` detaches the parameters from autodiff; `to_device` alone
    // would keep them tracked, and every evaluation batch's activations
    // would stay in the never-consumed graph (≈ 60 MB per 1024 MNIST
    // images with the CNN, 9 GB after a training run's final evaluation).
    let model = model.valid();
    let mut correct = 0usize;
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(1024) {
        let (x, y) = batch(data, chunk, &device);
        let predicted = model.logits(x).argmax(1).reshape([chunk.len()]);
        correct += predicted.equal(y).int().sum().into_scalar::<i64>() as usize;
    }
    correct as f64 / data.len().max(1) as f64
}
