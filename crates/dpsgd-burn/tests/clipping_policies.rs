//! Per-layer and adaptive clipping through the engine, on every enabled
//! backend (issue 25, items 3 and 4):
//!
//! * per-layer: the grouping of parameters into layers (one group per
//!   owning module), each example's per-layer contribution ≤ C_l on the
//!   fast path and the fallback, the clipped sum against a naive
//!   per-example loop, and the noise std `σ·√(Σ_l C_l²)/(qN)`;
//! * adaptive: the gradient noise std `σ_Δ·C/(qN)`, the released count's
//!   noise std σ_b (recovered exactly from each step's update of C), and a
//!   dropped (non-finite) example counting as `b = 0`;
//! * both policies' noise once more through `PrivacyEngine::step`, read off
//!   the parameters' move under plain SGD at lr = 1.
//!
//! Statistical checks use fixed seeds and a two-sided band of z = 5
//! standard deviations: a false-alarm rate of about 5.7·10⁻⁷ per check for
//! a correct implementation.

mod common;

use burn::module::{Module, ParamId};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use dpsgd_burn::layers::DpLinear;
use dpsgd_burn::{EngineMode, ExampleBatch, GradientEngine};
use dpsgd_core::{
    ClippedGradients, Clipping, DpOptimizer, DpSettings, GradientMethod, NoiseSource, layer_groups,
    trainable_params,
};
use std::collections::HashMap;

/// z for every statistical band: two-sided false alarm ≈ 5.7·10⁻⁷.
const Z: f64 = 5.0;

#[derive(Module, Debug)]
struct Block {
    fc: DpLinear,
}

/// Three layers, one of them nested: groups `fc1`, `block.fc`, `fc3`.
#[derive(Module, Debug)]
struct Net {
    fc1: DpLinear,
    block: Block,
    fc3: DpLinear,
}

impl Net {
    fn new(dims: [usize; 4], device: &Device) -> Self {
        Self {
            fc1: fixed_linear(dims[0], dims[1], 0.1, 0.1, device),
            block: Block {
                fc: fixed_linear(dims[1], dims[2], 0.7, 0.1, device),
            },
            fc3: fixed_linear(dims[2], dims[3], 1.9, 0.1, device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc3
            .forward(relu(self.block.fc.forward(relu(self.fc1.forward(x)))))
    }

    /// The layers' parameter ids, read off the fields (the reference
    /// grouping: one group per module that owns parameters).
    fn layers(&self) -> Vec<Vec<ParamId>> {
        [&self.fc1, &self.block.fc, &self.fc3]
            .iter()
            .map(|l| vec![l.weight.id, l.bias.as_ref().unwrap().id])
            .collect()
    }
}

/// Squared output, one loss per example.
fn sq_loss(m: &Net, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    m.forward(x.clone()).powi_scalar(2).sum_dim(1).reshape([n])
}

/// A loss whose gradient is exactly zero (every per-example norm is 0).
fn zero_loss(m: &Net, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    m.forward(x.clone()).mul_scalar(0.0).sum_dim(1).reshape([n])
}

fn input(shape: [usize; 2], device: &Device, scale: f32) -> Tensor<2> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.7548 + 0.3) * 1.618).sin() * scale * (1.0 + (i % 7) as f32))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn settings(sigma: f64, clipping: Clipping, q: f64, n: usize) -> DpSettings {
    DpSettings {
        noise_multiplier: sigma,
        clipping,
        sample_rate: q,
        dataset_size: n,
        accountant: Default::default(),
        budget: None,
    }
}

/// The engine's clipped sums as a per-parameter map.
fn sums(model: &Net, got: &ClippedGradients) -> HashMap<ParamId, Vec<f64>> {
    clipped_sums_by_param(model, got)
}

/// Every noisy coordinate of `grads`, by layer.
fn noisy_by_layer(model: &Net, grads: &GradientsParams) -> Vec<Vec<f64>> {
    [&model.fc1, &model.block.fc, &model.fc3]
        .iter()
        .map(|l| {
            let w = grads.get::<2>(l.weight.id).expect("weight noised");
            let b = grads
                .get::<1>(l.bias.as_ref().unwrap().id)
                .expect("bias noised");
            let mut v: Vec<f64> = w.into_data().iter::<f32>().map(f64::from).collect();
            v.extend(b.into_data().iter::<f32>().map(f64::from));
            v
        })
        .collect()
}

/// Sample mean and (n−1) standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Bounds on `s/σ` for the sample std `s` of `n` normal draws: the χ²_{n−1}
/// quantiles at ±z standard normal deviates (the Wilson–Hilferty
/// approximation, close for the hundreds to thousands of draws used here),
/// so a correct σ falls outside with probability ≈ 2Φ(−z).
fn std_ratio_band(n: usize, z: f64) -> (f64, f64) {
    let k = (n - 1) as f64;
    let h = 2.0 / (9.0 * k);
    let quantile = |z: f64| k * (1.0 - h + z * h.sqrt()).powi(3);
    ((quantile(-z) / k).sqrt(), (quantile(z) / k).sqrt())
}

/// Asserts that `v` looks like N(0, expected²): sample std within the χ²
/// band and mean within z standard errors.
fn assert_noise(v: &[f64], expected: f64, what: &str) -> f64 {
    let (mean, std) = mean_std(v);
    let (lo, hi) = std_ratio_band(v.len(), Z);
    let ratio = std / expected;
    assert!(
        (lo..=hi).contains(&ratio),
        "{what}: std {std} = {ratio}× the expected {expected} (band [{lo}, {hi}], n = {})",
        v.len()
    );
    let bound = Z * expected / (v.len() as f64).sqrt();
    assert!(mean.abs() < bound, "{what}: mean {mean}, bound ±{bound}");
    ratio
}

#[test]
fn should_group_parameters_by_owning_module() {
    for (backend, device) in devices() {
        let model = Net::new([5, 7, 4, 3], &device);
        let params = trainable_params(&model);
        let groups = layer_groups(&params);
        // The documented grouping: by the module that owns the parameter,
        // in declaration order, a nested module being its own layer.
        let ids: Vec<Vec<ParamId>> = groups
            .iter()
            .map(|g| g.iter().map(|&i| params[i].id).collect())
            .collect();
        assert_eq!(ids, model.layers(), "{backend}");
        let names: Vec<String> = groups.iter().map(|g| params[g[0]].layer()).collect();
        assert_eq!(names, ["fc1", "block.fc", "fc3"], "{backend}");
        // The engine takes budgets in that order and refuses a list that
        // does not have one budget per group, on both paths.
        let x = input([3, 5], &device, 1.0);
        for mode in [EngineMode::Auto, EngineMode::FallbackOnly] {
            for wrong in [vec![1.0, 1.0], vec![1.0; 4], vec![1.0; 6]] {
                let mut engine = GradientEngine::new(Clipping::per_layer(wrong.clone()).unwrap())
                    .with_mode(mode);
                assert!(
                    engine.clipped_gradients(&model, &x, sq_loss).is_err(),
                    "{backend} {mode:?}: {} budgets for 3 layers accepted",
                    wrong.len()
                );
            }
        }
        // Only the first layer's budget bites: the other two layers' sums
        // are the unclipped ones, so the budgets reach the layers by module.
        let per_example = naive_per_example(&model, &x, sq_loss);
        let mut engine = GradientEngine::new(Clipping::per_layer(vec![1e-3, 1e9, 1e9]).unwrap());
        let got = sums(
            &model,
            &engine.clipped_gradients(&model, &x, sq_loss).unwrap(),
        );
        let unclipped = naive_clipped_sum(&per_example, f64::INFINITY);
        let layers = model.layers();
        assert!(l2(&layer_part(&got, &layers[0])) <= 3.0 * 1e-3 * (1.0 + 1e-5));
        for layer in &layers[1..] {
            let err = rel_err(&layer_part(&got, layer), &layer_part(&unclipped, layer));
            assert!(err < 1e-4, "{backend}: unclipped layer off by {err}");
        }
    }
}

#[test]
fn should_clip_each_layer_to_its_budget_on_both_paths() {
    for (backend, device) in devices() {
        let model = Net::new([5, 8, 6, 3], &device);
        let n = 7;
        let x = input([n, 5], &device, 0.8);
        let layers = model.layers();
        // Reference: each example's gradient alone, by burn autodiff.
        let per_example = naive_per_example(&model, &x, sq_loss);
        let norms: Vec<Vec<f64>> = layers
            .iter()
            .map(|l| per_example.iter().map(|g| l2(&layer_part(g, l))).collect())
            .collect();
        // C_l just above the median layer norm: about half the examples
        // are clipped in each layer, half are not.
        let budgets: Vec<f64> = norms
            .iter()
            .map(|l| {
                let mut s = l.clone();
                s.sort_by(f64::total_cmp);
                s[n / 2] * 1.0001
            })
            .collect();
        for (l, c) in budgets.iter().enumerate() {
            assert!(
                norms[l].iter().any(|&v| v > c * 1.01),
                "{backend}: layer {l}: the test needs clipping to bite"
            );
            assert!(norms[l].iter().any(|&v| v <= *c), "{backend}: layer {l}");
        }
        // Σ_i Σ_l min(1, C_l/‖g_il‖) g_il.
        let reference = naive_per_layer_clipped_sum(&per_example, &layers, &budgets);
        let clipping = Clipping::per_layer(budgets.clone()).unwrap();
        for mode in [EngineMode::Auto, EngineMode::FallbackOnly] {
            let what = format!("{backend} {mode:?}");
            let mut engine = GradientEngine::new(clipping.clone()).with_mode(mode);
            let got = engine.clipped_gradients(&model, &x, sq_loss).unwrap();
            match (mode, got.method()) {
                (EngineMode::Auto, GradientMethod::FastPath { layers: 3 })
                | (EngineMode::FallbackOnly, GradientMethod::Fallback { .. }) => {}
                (_, m) => panic!("{what}: path {m:?}"),
            }
            let got = sums(&model, &got);
            for (l, layer) in layers.iter().enumerate() {
                let err = rel_err(&layer_part(&got, layer), &layer_part(&reference, layer));
                assert!(err < 1e-4, "{what}: layer {l} sum off by {err}");
            }
            // Each example's contribution, layer by layer: ≤ C_l, and
            // exactly C_l where the layer was clipped.
            for (i, alone) in per_example.iter().enumerate() {
                let one = engine
                    .clipped_gradients(&model, &x.slice_examples(i, i + 1), sq_loss)
                    .unwrap();
                let one = sums(&model, &one);
                for (l, layer) in layers.iter().enumerate() {
                    let c = budgets[l];
                    let norm = l2(&layer_part(&one, layer));
                    assert!(
                        norm <= c * (1.0 + 1e-5),
                        "{what}: example {i} layer {l}: {norm} > C_l = {c}"
                    );
                    if l2(&layer_part(alone, layer)) > c {
                        assert!(
                            norm >= c * (1.0 - 1e-4),
                            "{what}: example {i} layer {l} clipped to {norm}, not C_l = {c}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn should_noise_per_layer_clipping_by_the_root_sum_of_squares() {
    for (backend, device) in devices() {
        // 3 120 + 1 568 + 330 = 5 018 noisy coordinates.
        let model = Net::new([64, 48, 32, 10], &device);
        let budgets = vec![0.5, 1.5, 2.0];
        let (sigma, q, n) = (1.3, 0.01, 5000);
        let clipping = Clipping::per_layer(budgets.clone()).unwrap();
        let mut dp = DpOptimizer::with_noise(
            SgdConfig::new().init(),
            settings(sigma, clipping.clone(), q, n),
            NoiseSource::seeded(25),
        )
        .unwrap();
        // A zero-gradient step through the engine: only noise is released.
        let x = input([4, 64], &device, 1.0);
        let mut engine = GradientEngine::new(clipping);
        let clipped = engine.clipped_gradients(&model, &x, zero_loss).unwrap();
        assert!(clipped.per_example_norms().iter().all(|&v| v == 0.0));
        let grads = dp.privatize(&model, clipped).unwrap();
        // σ·√(Σ C_l²)/(qN): one σ for the whole vector, by the sensitivity
        // of the concatenated per-layer-clipped gradient.
        let sensitivity = budgets.iter().map(|c| c * c).sum::<f64>().sqrt();
        let expected = sigma * sensitivity / (q * n as f64);
        let by_layer = noisy_by_layer(&model, &grads);
        let all: Vec<f64> = by_layer.iter().flatten().copied().collect();
        assert_eq!(all.len(), 5018);
        assert_noise(&all, expected, &format!("{backend} all layers"));
        // The same std in every layer (not σ·C_l/(qN) per layer).
        for (l, v) in by_layer.iter().enumerate() {
            assert_noise(v, expected, &format!("{backend} layer {l}"));
        }
        // The band excludes the largest single budget's σ·C_l/(qN).
        let (lo, hi) = std_ratio_band(all.len(), Z);
        assert!(!(lo..=hi).contains(&(2.0 / sensitivity)));
    }
}

/// Adaptive clipping with an explicit η (the constructor's is 0.2).
fn adaptive(c: f64, quantile: f64, eta: f64, count_noise_std: f64) -> Clipping {
    let a = Clipping::Adaptive {
        max_grad_norm: c,
        target_quantile: quantile,
        learning_rate: eta,
        count_noise_std,
    };
    a.validate().unwrap();
    a
}

fn current_c(dp: &DpOptimizer) -> f64 {
    match dp.clipping() {
        Clipping::Adaptive { max_grad_norm, .. } => *max_grad_norm,
        other => panic!("not adaptive: {other:?}"),
    }
}

#[test]
fn should_noise_the_adaptive_gradient_by_sigma_delta() {
    for (backend, device) in devices() {
        let model = Net::new([64, 48, 32, 10], &device);
        // σ = 1, σ_b = 0.6: σ_Δ = (1 − 1.2⁻²)^{−1/2} ≈ 1.809, far from σ.
        let (sigma, sigma_b, c, q, n): (f64, f64, f64, f64, usize) = (1.0, 0.6, 1.5, 0.01, 5000);
        let sigma_delta = (sigma.powi(-2) - (2.0 * sigma_b).powi(-2)).powf(-0.5);
        let mut dp = DpOptimizer::with_noise(
            SgdConfig::new().init(),
            settings(sigma, adaptive(c, 0.5, 0.2, sigma_b), q, n),
            NoiseSource::seeded(26),
        )
        .unwrap();
        let x = input([4, 64], &device, 1.0);
        let mut engine = GradientEngine::new(dp.clipping().clone());
        let clipped = engine.clipped_gradients(&model, &x, zero_loss).unwrap();
        let grads = dp.privatize(&model, clipped).unwrap();
        assert_ne!(current_c(&dp), c, "{backend}: C moves after the step");
        // The noise is scaled by the C the step was clipped at.
        let expected = sigma_delta * c / (q * n as f64);
        let all: Vec<f64> = noisy_by_layer(&model, &grads).concat();
        let ratio = assert_noise(&all, expected, &format!("{backend} adaptive"));
        // The band excludes σ·C/(qN) (the count's cost not paid).
        let (lo, hi) = std_ratio_band(all.len(), Z);
        assert!(!(lo..=hi).contains(&(sigma / sigma_delta)), "{ratio}");
    }
}

/// A bias-free layer: a zero input has gradient exactly 0 (always
/// unclipped), a large one a norm far above any C (always clipped), a NaN
/// one a non-finite loss (dropped).
fn count_batch(device: &Device, with_nan: bool) -> Tensor<2> {
    let mut rows: Vec<[f32; 3]> = vec![[0.0; 3], [0.0; 3], [0.0; 3], [300.0, -200.0, 100.0]];
    if with_nan {
        rows.push([f32::NAN, 1.0, 1.0]);
    }
    rows.push([-250.0, 400.0, 50.0]);
    let n = rows.len();
    Tensor::from_data(TensorData::new(rows.concat(), [n, 3]), device)
}

fn linear_sq_loss(m: &DpLinear, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    m.forward(x.clone()).powi_scalar(2).sum_dim(1).reshape([n])
}

const COUNT_Q: f64 = 0.004;
const COUNT_N: usize = 1000; // qN = 4
const ETA: f64 = 0.05;

/// Runs `steps` adaptive steps on `batch` and returns each step's released
/// centred count `Σ_i (b_i − ½) + N(0, σ_b²)`, recovered exactly from the
/// update `C' = C·exp(−η(b̃ − γ))` with `b̃ = released/(qN) + ½`, after
/// checking each step's true count (`unclipped` of `kept + dropped`).
fn released_counts(
    device: &Device,
    batch: &Tensor<2>,
    quantile: f64,
    sigma_b: f64,
    seed: u64,
    steps: usize,
    (unclipped, kept, dropped): (usize, usize, usize),
) -> Vec<f64> {
    let model = DpLinear {
        bias: None,
        ..fixed_linear(3, 2, 0.4, 0.1, device)
    };
    let mut dp = DpOptimizer::with_noise(
        SgdConfig::new().init(),
        settings(1.0, adaptive(1.0, quantile, ETA, sigma_b), COUNT_Q, COUNT_N),
        NoiseSource::seeded(seed),
    )
    .unwrap();
    let mut engine = GradientEngine::new(dp.clipping().clone());
    let expected_batch = COUNT_Q * COUNT_N as f64;
    (0..steps)
        .map(|_| {
            let before = current_c(&dp);
            engine.set_clipping(dp.clipping().clone());
            let clipped = engine
                .clipped_gradients(&model, batch, linear_sq_loss)
                .unwrap();
            let norms = clipped.per_example_norms();
            assert_eq!((norms.len(), clipped.dropped()), (kept, dropped));
            let below = norms.iter().filter(|&&v| f64::from(v) <= before).count();
            assert_eq!(below, unclipped, "C = {before}, norms {norms:?}");
            dp.privatize(&model, clipped).unwrap();
            let fraction = quantile - (current_c(&dp) / before).ln() / ETA;
            (fraction - 0.5) * expected_batch
        })
        .collect()
}

#[test]
fn should_release_the_count_with_std_sigma_b() {
    for (backend, device) in devices() {
        // 3 unclipped of 5: the centred count is 3 − 5/2 = ½; γ = ½/(qN) + ½
        // keeps C where it starts on average.
        let sigma_b = 1.0;
        let steps = 2000;
        let batch = count_batch(&device, false);
        let released = released_counts(&device, &batch, 0.625, sigma_b, 27, steps, (3, 5, 0));
        let noise: Vec<f64> = released.iter().map(|r| r - 0.5).collect();
        // 2 000 draws: the χ² band is about ±8% of σ_b.
        assert_noise(&noise, sigma_b, &format!("{backend} count noise"));
    }
}

#[test]
fn should_count_a_dropped_example_as_unclipped_zero() {
    for (backend, device) in devices() {
        let sigma_b = 1.0;
        let with_nan = count_batch(&device, true);
        let without = count_batch(&device, false);
        // Paired, same seed and so the same noise: adding the non-finite
        // example moves the released centred count by exactly −½ (b = 0);
        // b = 1 would move it by +½, leaving it out of the count by 0.
        let a = released_counts(&device, &with_nan, 0.5, sigma_b, 28, 1, (3, 5, 1));
        let b = released_counts(&device, &without, 0.5, sigma_b, 28, 1, (3, 5, 0));
        let moved = a[0] - b[0];
        assert!(
            (moved + 0.5).abs() < 1e-9,
            "{backend}: the dropped example moved the count by {moved}"
        );
        // Its expectation over independent steps: 3 − 6/2 = 0, with
        // standard error σ_b/√1000 ≈ 0.032 (the alternatives, ½ and 1, are
        // 16 and 32 standard errors away).
        let steps = 1000;
        let released = released_counts(&device, &with_nan, 0.5, sigma_b, 29, steps, (3, 5, 1));
        assert_noise(
            &released,
            sigma_b,
            &format!("{backend} count with a dropped example"),
        );
    }
}

/// Every parameter value, layer after layer.
fn values(model: &Net) -> Vec<f64> {
    [&model.fc1, &model.block.fc, &model.fc3]
        .iter()
        .flat_map(|l| {
            let mut v: Vec<f64> = l
                .weight
                .val()
                .into_data()
                .iter::<f32>()
                .map(f64::from)
                .collect();
            v.extend(
                l.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .iter::<f32>()
                    .map(f64::from),
            );
            v
        })
        .collect()
}

#[test]
fn should_noise_both_policies_through_the_privacy_engine() {
    for (backend, device) in devices() {
        // q = 50/5000: qN = 50. Plain SGD at lr = 1 on a zero-gradient
        // batch: the parameters move by exactly −noise/(qN).
        let (sigma, sigma_b, c): (f64, f64, f64) = (1.0, 0.6, 1.5);
        let budgets = vec![0.5, 1.5, 2.0];
        let sigma_delta = (sigma.powi(-2) - (2.0 * sigma_b).powi(-2)).powf(-0.5);
        let cases = [
            (
                Clipping::per_layer(budgets.clone()).unwrap(),
                sigma * budgets.iter().map(|c| c * c).sum::<f64>().sqrt() / 50.0,
            ),
            (adaptive(c, 0.5, 0.2, sigma_b), sigma_delta * c / 50.0),
        ];
        for (k, (clipping, expected)) in cases.into_iter().enumerate() {
            let what = format!("{backend} {clipping:?}");
            let mut engine = dpsgd_burn::DpSgdConfig::new(1.0)
                .with_clipping(clipping.clone())
                .with_noise_multiplier(sigma)
                .with_seed(30 + k as u64)
                .init(
                    SgdConfig::new().init(),
                    dpsgd_burn::PoissonSampler::new(5000, 50).unwrap(),
                )
                .unwrap();
            let model = Net::new([64, 48, 32, 10], &device);
            let before = values(&model);
            // A non-finite example (0·NaN = NaN) is dropped, not fatal.
            let mut x: Vec<f32> = vec![0.5; 4 * 64];
            x[3 * 64] = f32::NAN;
            let x = Tensor::<2>::from_data(TensorData::new(x, [4, 64]), &device);
            let model = engine
                .step(1.0, model, &x, zero_loss)
                .map_err(|r| r.error)
                .unwrap();
            let stats = engine.last_step().unwrap();
            assert_eq!((stats.batch_size, stats.dropped), (4, 1), "{what}");
            assert_eq!(engine.dropped_examples(), 1, "{what}");
            assert_eq!(stats.max_grad_norm, clipping.sensitivity(), "{what}");
            let noise: Vec<f64> = values(&model)
                .iter()
                .zip(&before)
                .map(|(a, b)| (b - a) * 50.0)
                .collect();
            assert_noise(&noise, expected * 50.0, &what);
        }
    }
}
