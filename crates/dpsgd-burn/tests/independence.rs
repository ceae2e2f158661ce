//! The fast path's per-example independence check (examples mixed after a
//! DP-aware layer; a layer whose dimension 0 is not the example axis) and
//! tied weights (one parameter in two fields), on every enabled backend.

mod common;

use burn::module::{Module, Param};
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use dpsgd_accountant::AccountantKind;
use dpsgd_burn::layers::{DpLinear, DpRnn, DpRnnConfig};
use dpsgd_burn::{Augmented, EngineMode, GradientEngine};
use dpsgd_core::{
    ClippedGradients, Clipping, DpOptimizer, DpSettings, Error, GradientMethod, NoiseSource,
    trainable_params,
};
use std::cell::Cell;

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn linear(values: Vec<f32>, shape: [usize; 2], device: &Device) -> DpLinear {
    DpLinear {
        weight: Param::from_tensor(tensor(values, shape, device)),
        bias: None,
    }
}

fn norm_of(t: &Tensor<1>) -> f64 {
    l2(&to_vec(t))
}

/// The engine's refusal, which must name the problem.
fn assert_refused(result: dpsgd_core::Result<ClippedGradients>, what: &str, expect: &str) {
    match result {
        Err(Error::UnsupportedLayer { suggestion, .. }) => assert!(
            suggestion.contains(expect),
            "{what}: refused, but without `{expect}`: {suggestion}"
        ),
        Err(e) => panic!("{what}: refused with the wrong error: {e}"),
        Ok(c) => panic!(
            "{what}: the fast path released a sum ({:?}) for a model whose examples are not independent",
            c.method()
        ),
    }
}

// ---------------------------------------------------------------------
// 1. Examples mixed after a DP-aware layer (no BatchNorm).

/// `DpLinear(1 → 1)` then batch centring: `z = y − mean_j y_j`, `ℓ_i = z_i²`.
#[derive(Module, Debug)]
struct Centred {
    lin: DpLinear,
}

fn centred_loss(m: &Centred, x: &Tensor<2>) -> Tensor<1> {
    let [n, _] = x.dims();
    let y = m.lin.forward(x.clone());
    let z = y.clone() - y.mean_dim(0);
    z.powi_scalar(2).reshape([n])
}

/// The reviewer's repro: seven examples at 1 and one at 100, w = 1, C = 1.
/// Before the check the fast path released −6 (0 without the big
/// example): one example moved the sum by 6C. The fast path must now
/// refuse; the fallback (each example alone) stays private.
#[test]
fn should_refuse_examples_mixed_after_a_dp_layer() {
    for (backend, device) in devices() {
        let m = Centred {
            lin: linear(vec![1.0], [1, 1], &device),
        };
        let clipping = Clipping::flat(1.0).expect("C");
        let mut values = vec![1.0f32; 7];
        values.push(100.0);
        // The big example last (the reviewer's order), first, and a batch
        // without it.
        let mut first = values.clone();
        first.rotate_right(1);
        for xs in [values.clone(), first, values[..7].to_vec()] {
            let x = tensor(xs.clone(), [xs.len(), 1], &device);
            let mut engine = GradientEngine::new(clipping.clone());
            let what = format!("{backend:?}, {xs:?}");
            if xs.len() == 7 {
                // All examples equal: z = 0, every gradient is zero, so
                // the check cannot see the mixing — and the fast path's
                // sum is the true one (zero). What it must not do is
                // remember the model as checked.
                let c = engine
                    .clipped_gradients(&m, &x, centred_loss)
                    .expect("degenerate batch");
                assert!(norm_of(c.sum(&m.lin.weight.id).expect("sum")) == 0.0);
                let big = tensor(values.clone(), [8, 1], &device);
                assert_refused(
                    engine.clipped_gradients(&m, &big, centred_loss),
                    &format!("{what}, then the batch with the big example"),
                    "mixes the examples",
                );
                continue;
            }
            assert_refused(
                engine.clipped_gradients(&m, &x, centred_loss),
                &what,
                "mixes the examples",
            );
            // The fallback runs each example alone: every contribution
            // has norm at most C.
            let mut fallback =
                GradientEngine::new(clipping.clone()).with_mode(EngineMode::FallbackOnly);
            let c = fallback
                .clipped_gradients(&m, &x, centred_loss)
                .expect("fallback");
            assert!(
                norm_of(c.sum(&m.lin.weight.id).expect("sum")) <= 1e-6,
                "{what}"
            );
        }
    }
}

/// A two-layer model with mixing between its layers (a softmax over the
/// batch), random-looking weights and inputs: refused, naming the layer.
#[derive(Module, Debug)]
struct BatchAttention {
    fc1: DpLinear,
    fc2: DpLinear,
}

fn batch_attention_loss(m: &BatchAttention, x: &Tensor<2>) -> Tensor<1> {
    let [n, _] = x.dims();
    let h = tanh(m.fc1.forward(x.clone())); // [n, 4]
    // Every example attends to every other one.
    let scores = burn::tensor::activation::softmax(h.clone().matmul(h.clone().transpose()), 1);
    let mixed = scores.matmul(h);
    m.fc2.forward(mixed).powi_scalar(2).reshape([n])
}

#[test]
fn should_refuse_examples_mixed_between_dp_layers() {
    for (backend, device) in devices() {
        let m = BatchAttention {
            fc1: fixed_linear(3, 4, 0.3, 0.1, &device),
            fc2: fixed_linear(4, 1, 1.7, 0.1, &device),
        };
        let xs: Vec<f32> = (0..18).map(|i| ((i as f32) * 0.83).sin()).collect();
        let x = tensor(xs, [6, 3], &device);
        let mut engine = GradientEngine::new(Clipping::flat(1.0).expect("C"));
        let result = engine.clipped_gradients(&m, &x, batch_attention_loss);
        match &result {
            Err(Error::UnsupportedLayer { path, .. }) => {
                assert_eq!(path, "fc1", "{backend:?}: the first layer mixed after")
            }
            _ => assert_refused(result, &format!("{backend:?}"), "mixes the examples"),
        }
    }
}

// ---------------------------------------------------------------------
// 2. A layer whose dimension 0 is not the example axis.

#[derive(Module, Debug)]
struct Head {
    lin: DpLinear,
}

/// `x: [B, T, F]` made time-major `[T, B, F]` before the DP layer;
/// `ℓ_b = Σ_t y[t, b]`.
fn time_major_loss(m: &Head, x: &Tensor<3>) -> Tensor<1> {
    let [b, _, _] = x.dims();
    let y = m.lin.forward(x.clone().swap_dims(0, 1));
    y.sum_dim(0).reshape([b])
}

/// The reviewer's repro: example 0 zeros, the last example (100, 0) at
/// every step, C = 1. Before the check the fast path clipped groups of
/// time steps pooled across the examples (‖sum‖ = 8 at T = B = 8 where the
/// fallback gives 1).
#[test]
fn should_refuse_a_layer_fed_a_time_major_input() {
    for (backend, device) in devices() {
        let m = Head {
            lin: linear(vec![0.1, 0.2], [2, 1], &device),
        };
        for (b, t) in [(2usize, 2usize), (2, 8), (8, 8), (4, 16), (3, 3)] {
            let mut v = vec![0.0f32; b * t * 2];
            for s in 0..t {
                v[((b - 1) * t + s) * 2] = 100.0;
            }
            let x = tensor(v, [b, t, 2], &device);
            let what = format!("{backend:?}, T = {t}, B = {b}");
            let mut engine = GradientEngine::new(Clipping::flat(1.0).expect("C"));
            let result = engine.clipped_gradients(&m, &x, time_major_loss);
            // Two examples too (the rows counted again on one example).
            assert!(
                matches!(result, Err(Error::UnsupportedLayer { .. })),
                "{what}: {:?}",
                result.map(|c| c.sum(&m.lin.weight.id).map(norm_of))
            );
            // Correct, each example alone: one example contributes C.
            let mut fallback = GradientEngine::new(Clipping::flat(1.0).expect("C"))
                .with_mode(EngineMode::FallbackOnly);
            let c = fallback
                .clipped_gradients(&m, &x, time_major_loss)
                .expect("fallback");
            let s = norm_of(c.sum(&m.lin.weight.id).expect("sum"));
            assert!((s - 1.0).abs() < 1e-5, "{what}: fallback ‖sum‖ = {s}");
        }
    }
}

/// The library's recurrent layer with `batch_first: false` feeding a DP
/// head: refused as it is, accepted (and right) once its output is made
/// batch-first again.
#[derive(Module, Debug)]
struct Recurrent {
    rnn: DpRnn,
    head: DpLinear,
}

impl Recurrent {
    /// `x: [T, B, F]`, the loss per example of the last step's head.
    fn time_major(&self, x: &Tensor<3>) -> Tensor<1> {
        let [_, b, _] = x.dims();
        let (out, _) = self.rnn.forward(x.clone(), None); // [T, B, H]
        self.head
            .forward(out) // [T, B, 2]
            .powi_scalar(2)
            .sum_dim(0)
            .sum_dim(2)
            .reshape([b])
    }

    fn batch_first(&self, x: &Tensor<3>) -> Tensor<1> {
        let [_, b, _] = x.dims();
        let (out, _) = self.rnn.forward(x.clone(), None);
        let out = out.swap_dims(0, 1); // [B, T, H]
        self.head
            .forward(out) // [B, T, 2]
            .powi_scalar(2)
            .sum_dim(1)
            .sum_dim(2)
            .reshape([b])
    }
}

/// A time-major batch `[T, B, F]` whose examples are along dimension 1.
#[derive(Clone, Debug)]
struct TimeMajor(Tensor<3>);

impl dpsgd_burn::ExampleBatch for TimeMajor {
    fn num_examples(&self) -> usize {
        self.0.dims()[1]
    }
    fn slice_examples(&self, start: usize, end: usize) -> Self {
        Self(self.0.clone().narrow(1, start, end - start))
    }
    fn to_device(&self, device: &Device) -> Self {
        Self(self.0.clone().to_device(device))
    }
}

#[test]
fn should_refuse_a_time_major_recurrent_output_and_accept_it_batch_first() {
    for (backend, device) in devices() {
        let mut rnn = DpRnnConfig::new(3, 4, true)
            .with_batch_first(false)
            .init(&device);
        rnn.gate.input_transform = fixed_linear(3, 4, 0.2, 0.1, &device);
        rnn.gate.hidden_transform = fixed_linear(4, 4, 0.9, 0.1, &device);
        let m = Recurrent {
            rnn,
            head: fixed_linear(4, 2, 1.3, 0.1, &device),
        };
        // T = 6 steps, B = 6 examples: the head's rows are the steps.
        let (t, b) = (6, 6);
        let xs: Vec<f32> = (0..t * b * 3).map(|i| ((i as f32) * 0.57).sin()).collect();
        let x = TimeMajor(tensor(xs, [t, b, 3], &device));
        let clipping = Clipping::flat(0.05).expect("C");
        let mut engine = GradientEngine::new(clipping.clone());
        let result =
            engine.clipped_gradients(&m, &x, |m: &Recurrent, x: &TimeMajor| m.time_major(&x.0));
        assert!(
            matches!(&result, Err(Error::UnsupportedLayer { path, .. }) if path == "head"),
            "{backend:?}: {:?}",
            result.map(|c| c.method().clone())
        );
        let loss = |m: &Recurrent, x: &TimeMajor| m.batch_first(&x.0);
        let mut engine = GradientEngine::new(clipping.clone());
        let c = engine.clipped_gradients(&m, &x, loss).expect("batch-first");
        assert!(
            matches!(c.method(), GradientMethod::FastPath { .. }),
            "{backend:?}: {:?}",
            c.method()
        );
        let naive = naive_per_example(&m, &x, loss);
        let expected = naive_clipped_sum(&naive, 0.05);
        for p in trainable_params(&m) {
            let got = to_vec(c.sum(&p.id).expect("sum"));
            let err = rel_err(&got, &expected[&p.id]);
            assert!(err < 1e-4, "{backend:?}: {} off by {err}", p.name());
        }
    }
}

// ---------------------------------------------------------------------
// What the check accepts, and what it costs.

/// A model that keeps its examples apart passes the check once: the loss
/// function runs once more on the first call (the check's window), then
/// never again for batches of any size — also with augmentation
/// multiplicity (`k` rows per example) and with dropout.
#[test]
fn should_check_once_and_accept_independent_models() {
    #[derive(Module, Debug)]
    struct WithDropout {
        fc1: DpLinear,
        dropout: burn::nn::Dropout,
        fc2: DpLinear,
    }
    for (backend, device) in devices() {
        let m = WithDropout {
            fc1: fixed_linear(6, 5, 0.4, 0.1, &device),
            dropout: burn::nn::DropoutConfig::new(0.5).init(),
            fc2: fixed_linear(5, 3, 2.1, 0.1, &device),
        };
        let calls = Cell::new(0usize);
        let loss = |m: &WithDropout, b: &Augmented<(Tensor<2>, Tensor<1, burn::tensor::Int>)>| {
            calls.set(calls.get() + 1);
            let h = m.dropout.forward(tanh(m.fc1.forward(b.rows.0.clone())));
            let per_row =
                dpsgd_burn::loss::cross_entropy_per_example(m.fc2.forward(h), b.rows.1.clone());
            let n = per_row.dims()[0] / b.k;
            per_row.reshape([n, b.k]).mean_dim(1).reshape([n])
        };
        for k in [1usize, 3] {
            let mut engine = GradientEngine::new(Clipping::flat(0.5).expect("C"));
            for (step, n) in [12usize, 12, 5, 9, 2].into_iter().enumerate() {
                calls.set(0);
                let batch = Augmented {
                    rows: net_data(n * k, &device),
                    k,
                };
                let c = engine
                    .clipped_gradients(&m, &batch, loss)
                    .expect("independent");
                assert!(matches!(c.method(), GradientMethod::FastPath { .. }));
                let expected = if step == 0 { 2 } else { 1 };
                assert_eq!(
                    calls.get(),
                    expected,
                    "{backend:?}, k = {k}, step {step}: loss calls"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------
// 3. Tied weights: one parameter held by two fields.

#[derive(Module, Debug)]
struct Tied {
    a: DpLinear,
    b: DpLinear,
}

fn tied_loss(m: &Tied, x: &Tensor<2>) -> Tensor<1> {
    let [n, _] = x.dims();
    (m.a.forward(x.clone()) + m.b.forward(x.clone())).reshape([n])
}

/// Before the fix the tied parameter was listed twice: its gradient
/// entered the norm twice and the sum twice (‖sum‖ = √2·C), and the
/// release overwrote the clipped sum with pure noise at its second field.
#[test]
fn should_clip_and_release_a_tied_parameter_once() {
    for (backend, device) in devices() {
        let w = Param::from_tensor(tensor(vec![0.1, 0.2], [2, 1], &device));
        let m = Tied {
            a: DpLinear {
                weight: w.clone(),
                bias: None,
            },
            b: DpLinear {
                weight: w,
                bias: None,
            },
        };
        let clipping = Clipping::flat(1.0).expect("C");
        // One example: ∇w = 2x = (200, 0), clipped to (1, 0).
        let x = tensor(vec![100.0, 0.0], [1, 2], &device);
        for mode in [EngineMode::Auto, EngineMode::FallbackOnly] {
            let mut engine = GradientEngine::new(clipping.clone()).with_mode(mode);
            let c = engine.clipped_gradients(&m, &x, tied_loss).expect("clip");
            let sum = to_vec(c.sum(&m.a.weight.id).expect("sum"));
            assert!(
                (l2(&sum) - 1.0).abs() < 1e-5 && (sum[0] - 1.0).abs() < 1e-5,
                "{backend:?}, {mode:?}: clipped sum {sum:?}"
            );
            let norms = c.per_example_norms().to_vec();
            assert!(
                (norms[0] - 200.0).abs() < 1e-2,
                "{backend:?}: norm {norms:?}"
            );
            let settings = DpSettings {
                noise_multiplier: 1e-6,
                clipping: clipping.clone(),
                sample_rate: 1.0,
                dataset_size: 1,
                accountant: AccountantKind::Rdp,
                budget: None,
            };
            let mut dp = DpOptimizer::with_noise(
                burn::optim::SgdConfig::new().init(),
                settings,
                NoiseSource::seeded(1),
            )
            .expect("optimizer");
            let grads = dp.privatize(&m, c).expect("release");
            let released: Vec<f64> = grads
                .get::<2>(m.a.weight.id)
                .expect("released")
                .into_data()
                .iter::<f32>()
                .map(f64::from)
                .collect();
            assert!(
                (released[0] - 1.0).abs() < 1e-3 && released[1].abs() < 1e-3,
                "{backend:?}, {mode:?}: released {released:?}, not the clipped sum"
            );
        }
        assert_eq!(
            trainable_params(&m).len(),
            1,
            "{backend:?}: {:?}",
            trainable_params(&m)
        );
        // A batch against the reference.
        let x = tensor(vec![1.0, -2.0, 0.5, 3.0, -1.0, 0.25], [3, 2], &device);
        let mut engine = GradientEngine::new(Clipping::flat(1.5).expect("C"));
        let c = engine.clipped_gradients(&m, &x, tied_loss).expect("clip");
        let expected = naive_clipped_sum(&naive_per_example(&m, &x, tied_loss), 1.5);
        let got = to_vec(c.sum(&m.a.weight.id).expect("sum"));
        assert!(
            rel_err(&got, &expected[&m.a.weight.id]) < 1e-5,
            "{backend:?}: {got:?}"
        );
    }
}
