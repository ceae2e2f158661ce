//! Shared test helpers: the enabled devices and a naive per-example loop.

#![allow(dead_code)]

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use dpsgd_burn::backend::Backend;

/// Every enabled backend's autodiff device: each test body runs on all.
pub fn devices() -> Vec<(Backend, Device)> {
    assert!(!Backend::enabled().is_empty(), "no backend enabled");
    Backend::enabled()
        .into_iter()
        .map(|b| (b, b.autodiff_device().expect("enabled backend")))
        .collect()
}

/// Per-example gradients by the definition (one backward per example),
/// their norm, and `Σ_i min(1, C/‖g_i‖) g_i`: the library's reference,
/// which shares no code with the engine.
#[allow(unused_imports)]
pub use dpsgd_burn::reference::{clipped_sum as naive_clipped_sum, naive_per_example, norm};

pub fn to_vec(t: &Tensor<1>) -> Vec<f64> {
    t.clone().into_data().iter::<f32>().map(f64::from).collect()
}

/// ‖a − b‖ / ‖b‖ (or ‖a‖ when b is zero).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff = dpsgd_burn::reference::distance(a, b);
    let scale = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if scale > 0.0 { diff / scale } else { diff }
}

/// A parameter of `shape` with fixed, deterministic values
/// `scale`·sin((i·0.618 + salt)·2.399): for layers whose unseeded
/// initialisation would make a test's numbers change from run to run.
pub fn fixed_param<const D: usize>(
    shape: [usize; D],
    salt: f32,
    scale: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    use burn::tensor::TensorData;
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.618 + salt) * 2.399).sin() * scale)
        .collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device))
}

/// A `DpLinear` with fixed, deterministic weights (≈ ±1.5/√d_in) and
/// biases (`bias_scale`·cos): tests do not depend on the backend's unseeded
/// initialiser.
pub fn fixed_linear(
    d_in: usize,
    d_out: usize,
    salt: f32,
    bias_scale: f32,
    device: &Device,
) -> dpsgd_burn::layers::DpLinear {
    use burn::tensor::TensorData;
    let b: Vec<f32> = (0..d_out)
        .map(|i| ((i as f32 + salt) * 1.3).cos() * bias_scale)
        .collect();
    dpsgd_burn::layers::DpLinear {
        weight: fixed_param([d_in, d_out], salt, 1.5 / (d_in as f32).sqrt(), device),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [d_out]),
            device,
        ))),
    }
}

/// A two-layer tanh classifier of 6 features and 3 classes (the model of
/// the data-parallel and release tests).
#[derive(Module, Debug)]
pub struct Net {
    pub fc1: dpsgd_burn::layers::DpLinear,
    pub fc2: dpsgd_burn::layers::DpLinear,
}

impl Net {
    /// One cross-entropy per example.
    pub fn losses(&self, b: &(Tensor<2>, Tensor<1, burn::tensor::Int>)) -> Tensor<1> {
        let h = burn::tensor::activation::tanh(self.fc1.forward(b.0.clone()));
        dpsgd_burn::loss::cross_entropy_per_example(self.fc2.forward(h), b.1.clone())
    }
}

/// `n` examples for [`Net`], from a fixed sine (no RNG).
pub fn net_data(n: usize, device: &Device) -> (Tensor<2>, Tensor<1, burn::tensor::Int>) {
    use burn::tensor::TensorData;
    let x: Vec<f32> = (0..n * 6).map(|i| ((i as f32) * 0.47).sin()).collect();
    let y: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, 6]), device),
        Tensor::from_data(TensorData::new(y, [n]), device),
    )
}

/// The examples `idx` of a batch, in that order.
pub fn pick(
    all: &(Tensor<2>, Tensor<1, burn::tensor::Int>),
    idx: &[usize],
) -> (Tensor<2>, Tensor<1, burn::tensor::Int>) {
    use burn::tensor::TensorData;
    let device = all.0.device();
    let rows: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    let rows =
        Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(rows, [idx.len()]), &device);
    (
        all.0.clone().select(0, rows.clone()),
        all.1.clone().select(0, rows),
    )
}

/// The layer's part of a per-parameter map, concatenated.
pub fn layer_part(
    g: &std::collections::HashMap<burn::module::ParamId, Vec<f64>>,
    layer: &[burn::module::ParamId],
) -> Vec<f64> {
    layer.iter().flat_map(|id| g[id].iter().copied()).collect()
}

/// The Euclidean norm.
pub fn l2(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `Σ_i Σ_l min(1, C_l/‖g_il‖) g_il`, in f64: per-layer clipping of the
/// naive per-example gradients (`layers[l]` the parameters of layer `l`).
pub fn naive_per_layer_clipped_sum(
    per_example: &[std::collections::HashMap<burn::module::ParamId, Vec<f64>>],
    layers: &[Vec<burn::module::ParamId>],
    budgets: &[f64],
) -> std::collections::HashMap<burn::module::ParamId, Vec<f64>> {
    let mut sum = std::collections::HashMap::new();
    for g in per_example {
        for (layer, c) in layers.iter().zip(budgets) {
            let f = (c / l2(&layer_part(g, layer))).min(1.0);
            for id in layer {
                let acc = sum.entry(*id).or_insert_with(|| vec![0.0; g[id].len()]);
                for (a, v) in acc.iter_mut().zip(&g[id]) {
                    *a += f * v;
                }
            }
        }
    }
    sum
}

/// The engine's clipped sums as a per-parameter map (zeros for a parameter
/// it gave nothing for).
pub fn clipped_sums_by_param<M: Module>(
    model: &M,
    got: &dpsgd_core::ClippedGradients,
) -> std::collections::HashMap<burn::module::ParamId, Vec<f64>> {
    dpsgd_core::trainable_params(model)
        .iter()
        .map(|p| {
            let v = got.sum(&p.id).map_or_else(|| vec![0.0; p.numel()], to_vec);
            (p.id, v)
        })
        .collect()
}
