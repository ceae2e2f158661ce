//! Every example's clipped contribution stays within C when f32 rounding
//! or underflow would hide its norm: positions whose contributions cancel
//! (the Gram ghost norm `Σ_{s,t} (a_s·a_t)(g_s·g_t)` then loses the norm in
//! f32 while book-keeping sums the gradient exactly), and a huge input at a
//! position the loss does not read (the row scaling then leaves the other
//! positions' products below f32's range). Each case runs one example per
//! call, so the released sum is that example's contribution `c_i ∇_i`.
//! Before the bounds of `grad_sample::GramError` and the re-scaling of kept
//! gradients, the cancelling cases released up to 5·10⁵ C and the
//! underflow cases up to 4·10³ C.

mod common;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use dpsgd_burn::GradientEngine;
use dpsgd_burn::layers::*;
use dpsgd_core::{Clipping, GradientMethod, trainable_params};

const C: f64 = 0.5;

/// The norm of what the engine releases for `batch` (one example), and
/// that example's exact norm (the naive loop, f64).
fn released_and_exact<M: Module, B: dpsgd_burn::ExampleBatch>(
    model: &M,
    batch: &B,
    loss: impl Fn(&M, &B) -> Tensor<1> + Copy,
) -> (f64, f64) {
    let mut engine = GradientEngine::new(Clipping::flat(C).unwrap());
    let got = engine.clipped_gradients(model, batch, loss).unwrap();
    assert!(
        matches!(got.method(), GradientMethod::FastPath { .. }),
        "{:?}",
        got.method()
    );
    assert_eq!(got.dropped(), 0);
    let released = trainable_params(model)
        .iter()
        .filter_map(|p| got.sum(&p.id).map(to_vec))
        .flatten()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    let exact = norm(&naive_per_example(model, batch, loss)[0]);
    (released, exact)
}

fn within_c(released: f64, exact: f64, what: &str) {
    assert!(
        released <= C * (1.0 + 1e-5),
        "{what}: released {released} (exact norm {exact}) > C = {C}"
    );
    // Not vacuous: the example's gradient exceeds C, so an unclipped or
    // under-clipped contribution would show.
    assert!(exact > 10.0 * C, "{what}: exact norm {exact}");
}

/// `[1, 2, d]`: the same row `a` at both positions.
fn twice(a: &[f32], device: &Device) -> Tensor<3> {
    let d = a.len();
    let v: Vec<f32> = a.iter().chain(a).copied().collect();
    Tensor::from_data(TensorData::new(v, [1, 2, d]), device)
}

/// The weights of the loss `o_0·u − o_1·(u − δ)` over `d` outputs, `u` of
/// magnitude `amp`: the output gradients at the two positions nearly
/// cancel, leaving `δ`.
fn cancelling(amp: f32, d: usize, delta: f32, device: &Device) -> (Tensor<1>, Tensor<1>) {
    let u: Vec<f32> = (0..d)
        .map(|k| amp * (1.0 + 0.41 * (k as f32 * 1.3).cos()))
        .collect();
    let v: Vec<f32> = u
        .iter()
        .enumerate()
        .map(|(k, x)| x - delta * (1.0 + 0.1 * k as f32))
        .collect();
    (
        Tensor::from_data(TensorData::new(u, [d]), device),
        Tensor::from_data(TensorData::new(v, [d]), device),
    )
}

/// An input row of `d` values of magnitude `amp` (`phase` varies it).
fn input_row(amp: f32, d: usize, phase: f32) -> Vec<f32> {
    (0..d)
        .map(|j| amp * (1.0 + 0.37 * (j as f32 * 2.26 + phase).sin()))
        .collect()
}

fn weighted_positions(out: Tensor<3>, u: &Tensor<1>, v: &Tensor<1>) -> Tensor<1> {
    let [n, _, d] = out.dims();
    let o0 = out.clone().narrow(1, 0, 1).reshape([n, d]);
    let o1 = out.narrow(1, 1, 1).reshape([n, d]);
    (o0 * u.clone().reshape([1, d]) - o1 * v.clone().reshape([1, d]))
        .sum_dim(1)
        .reshape([n])
}

/// Dense layers over two positions whose contributions cancel: kept
/// per-example gradients (4 → 3) and Gram ghost norms (6 → 5).
#[test]
fn should_clip_cancelling_positions_of_dense_layers() {
    for (backend, device) in devices() {
        for (d_in, d_out) in [(4, 3), (6, 5)] {
            for (amp, delta) in [(3e3f32, 1.0f32), (3e4, 10.0), (6e4, 1.0)] {
                let what = format!("{backend} {d_in}->{d_out} amp {amp:e} delta {delta:e}");
                let model: DpLinear = DpLinearConfig::new(d_in, d_out)
                    .with_bias(false)
                    .init(&device);
                let (u, v) = cancelling(amp, d_out, delta, &device);
                let x = twice(&input_row(amp, d_in, 0.0), &device);
                let loss =
                    |m: &DpLinear, x: &Tensor<3>| weighted_positions(m.forward(x.clone()), &u, &v);
                let (released, exact) = released_and_exact(&model, &x, loss);
                within_c(released, exact, &what);
            }
        }
    }
}

/// A huge input at a position the loss does not read: its row scale
/// (≈ 10³⁰) would push the read position's products below f32's range.
#[test]
fn should_clip_a_gradient_hidden_by_a_huge_unread_input() {
    for (backend, device) in devices() {
        for (d_in, d_out) in [(4, 3), (6, 5)] {
            let what = format!("{backend} {d_in}->{d_out}");
            let model: DpLinear = DpLinearConfig::new(d_in, d_out).init(&device);
            let mut v = vec![0.0f32; 2 * d_in];
            v[0] = 1e30;
            for j in 0..d_in {
                v[d_in + j] = 1e3 * (1.0 + 0.1 * j as f32);
            }
            let x = Tensor::<3>::from_data(TensorData::new(v, [1, 2, d_in]), &device);
            let loss = |m: &DpLinear, x: &Tensor<3>| {
                let out = m.forward(x.clone()).narrow(1, 1, 1).reshape([1, d_out]);
                out.sum_dim(1).reshape([1])
            };
            let (released, exact) = released_and_exact(&model, &x, loss);
            within_c(released, exact, &what);
        }
    }
}

/// One token at two positions whose output gradients cancel: the table's
/// per-example gradient (one row, `δ`) is small against the Gram products.
#[test]
fn should_clip_cancelling_repeats_of_an_embedding_row() {
    for (backend, device) in devices() {
        for (amp, delta) in [(3e4f32, 10.0f32), (6e4, 10.0)] {
            let what = format!("{backend} amp {amp:e} delta {delta:e}");
            let d = 5;
            let model: DpEmbedding = DpEmbeddingConfig::new(7, d).init(&device);
            let (u, v) = cancelling(amp, d, delta, &device);
            let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 3], [1, 2]), &device);
            let loss = |m: &DpEmbedding, ids: &Tensor<2, Int>| {
                weighted_positions(m.forward(ids.clone()), &u, &v)
            };
            let (released, exact) = released_and_exact(&model, &ids, loss);
            within_c(released, exact, &what);
        }
    }
}

/// Layer normalisation's β (`Σ_s g_s`) and γ (`Σ_s g_s ⊙ x̂_s`) over two
/// positions whose output gradients cancel.
#[test]
fn should_clip_cancelling_positions_of_a_layer_norm() {
    for (backend, device) in devices() {
        let what = format!("{backend} layer norm");
        let d = 6;
        let model: DpLayerNorm = DpLayerNormConfig::new(d).init(&device);
        let a: Vec<f32> = (0..d).map(|j| (j as f32 * 1.7).sin()).collect();
        let (u, v) = cancelling(3e4, d, 10.0, &device);
        let x = twice(&a, &device);
        let loss =
            |m: &DpLayerNorm, x: &Tensor<3>| weighted_positions(m.forward(x.clone()), &u, &v);
        let (released, exact) = released_and_exact(&model, &x, loss);
        within_c(released, exact, &what);
    }
}

/// In a batch, each example is bounded by its own positions: the
/// cancelling example between two ordinary ones reports (and is clipped
/// by) at least its exact norm, on both the kept and the Gram path.
#[test]
fn should_bound_each_example_of_a_batch_by_its_own_positions() {
    for (backend, device) in devices() {
        for (d_in, d_out) in [(4, 3), (6, 5)] {
            let what = format!("{backend} {d_in}->{d_out}");
            let model: DpLinear = DpLinearConfig::new(d_in, d_out)
                .with_bias(false)
                .init(&device);
            let amp = 6e4f32;
            let row = |phase: f32| input_row(amp, d_in, phase);
            // Example 1 repeats its row; 0 and 2 have two different rows.
            let rows = [row(0.0), row(1.0), row(2.0), row(2.0), row(3.0), row(4.0)];
            let v: Vec<f32> = rows.iter().flatten().copied().collect();
            let x = Tensor::<3>::from_data(TensorData::new(v, [3, 2, d_in]), &device);
            let (u, v) = cancelling(amp, d_out, 1.0, &device);
            let loss =
                |m: &DpLinear, x: &Tensor<3>| weighted_positions(m.forward(x.clone()), &u, &v);
            let mut engine = GradientEngine::new(Clipping::flat(C).unwrap());
            let got = engine.clipped_gradients(&model, &x, loss).unwrap();
            let exact: Vec<f64> = naive_per_example(&model, &x, loss)
                .iter()
                .map(norm)
                .collect();
            for (i, (&reported, &exact)) in got.per_example_norms().iter().zip(&exact).enumerate() {
                assert!(
                    f64::from(reported) >= exact * (1.0 - 1e-6),
                    "{what}: example {i} reported {reported} < exact {exact}"
                );
            }
        }
    }
}
