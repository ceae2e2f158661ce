//! Ghost norms and clipped sums stay finite and exact for activations and
//! output gradients near f32's range, large or tiny (issue 12): rows of
//! per-example tensors outside [2⁻¹⁴, 2¹⁶] are scaled to [−1, 1] before any
//! square, the scales multiply in f64.
//! Compared with an f64 reference on every enabled backend.

mod common;

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use dpsgd_burn::layers::*;
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::{EngineMode, GradientEngine};
use dpsgd_core::{Clipping, GradientMethod, trainable_params};

const D_IN: usize = 4;
const D_OUT: usize = 3;

/// A linear layer with known weights `w[i][j] = w_scale·(0.3 + 0.1·i − 0.2·j)`
/// and bias `0.05·j`.
fn linear(w_scale: f32, device: &Device) -> DpLinear {
    // Zeros, overwritten below: no draw from the device's RNG, which the
    // other test of this file seeds.
    let mut layer: DpLinear = DpLinearConfig::new(D_IN, D_OUT)
        .with_initializer(burn::module::Initializer::Zeros)
        .init(device);
    let w: Vec<f32> = (0..D_IN * D_OUT)
        .map(|k| w_scale * (0.3 + 0.1 * (k / D_OUT) as f32 - 0.2 * (k % D_OUT) as f32))
        .collect();
    layer.weight = layer.weight.map(|p| {
        Tensor::from_data(TensorData::new(w.clone(), [D_IN, D_OUT]), &p.device()).require_grad()
    });
    layer.bias = layer.bias.map(|b| {
        b.map(|p| {
            let v: Vec<f32> = (0..D_OUT).map(|j| 0.05 * j as f32).collect();
            Tensor::from_data(TensorData::new(v, [D_OUT]), &p.device()).require_grad()
        })
    });
    layer
}

/// The f64 reference of one linear layer under `loss_scale`·cross-entropy:
/// per example, the weight gradient `a gᵀ` and bias gradient `g` with
/// `g = loss_scale·(softmax(z) − onehot(y))`, `z = aW + b` in f64.
fn reference(x: &[[f32; D_IN]], labels: &[usize], w_scale: f32, loss_scale: f64) -> Vec<Vec<f64>> {
    x.iter()
        .zip(labels)
        .map(|(a, &y)| {
            let z: Vec<f64> = (0..D_OUT)
                .map(|j| {
                    let w = |i: usize| f64::from(w_scale * (0.3 + 0.1 * i as f32 - 0.2 * j as f32));
                    (0..D_IN).map(|i| f64::from(a[i]) * w(i)).sum::<f64>()
                        + f64::from(0.05 * j as f32)
                })
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
            let total: f64 = e.iter().sum();
            let g: Vec<f64> = (0..D_OUT)
                .map(|j| loss_scale * (e[j] / total - f64::from(u8::from(j == y))))
                .collect();
            let mut grad: Vec<f64> = (0..D_IN * D_OUT)
                .map(|k| f64::from(a[k / D_OUT]) * g[k % D_OUT])
                .collect();
            grad.extend(&g);
            grad
        })
        .collect()
}

type Batch = (Tensor<2>, Tensor<1, Int>);

fn batch(x: &[[f32; D_IN]], labels: &[usize], device: &Device) -> Batch {
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let y: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    (
        Tensor::from_data(TensorData::new(flat, [x.len(), D_IN]), device),
        Tensor::from_data(TensorData::new(y, [x.len()]), device),
    )
}

#[test]
fn linear_norms_and_clipped_sums_match_f64_near_f32_range() {
    let base = [
        [1.0f32, -2.0, 0.5, 3.0],
        [0.2, 0.1, -1.0, 2.0],
        [-0.7, 0.4, 0.9, -0.3],
    ];
    let labels = [1usize, 0, 2];
    let c = 0.5;
    // (activation scale, weight scale, loss scale): squares of activations,
    // of output gradients, or of both overflow f32; in the last case the
    // norm itself (≈ 1e40) is beyond f32 while the clipped sum is not.
    // Tiny values too: squares below f32's normal range unless scaled; and
    // small ones that stay unscaled (scale 1 for rows within [2⁻¹⁴, 2¹⁶]).
    let cases: [(f32, f32, f64); 11] = [
        (1.0, 1.0, 1.0),
        (1e19, 1.0, 1.0),
        (1e30, 1.0, 1.0),
        (1e37, 1.0, 1.0),
        (1.0, 1.0, 1e35),
        (1e20, 1e-20, 1e20),
        (1e-30, 1.0, 1.0),
        (1.0, 1.0, 1e-35),
        (1e-30, 1.0, 1e-30),
        (1e-3, 1.0, 1e-3),
        (1e-5, 1.0, 1e-5),
    ];
    // `sequence`: each example is two positions, its row and a row of
    // zeros, and the loss reads the first position's output: the same
    // per-example gradients, through a sequence record (whose per-example
    // gradients are materialised from the scaled tensors and kept).
    for (backend, device) in devices() {
        for ((a_scale, w_scale, loss_scale), sequence) in cases
            .into_iter()
            .flat_map(|case| [(case, false), (case, true)])
        {
            let what = format!(
                "{backend}: a×{a_scale:e}, w×{w_scale:e}, loss×{loss_scale:e}, sequence {sequence}"
            );
            let x: Vec<[f32; D_IN]> = base.iter().map(|r| r.map(|v| v * a_scale)).collect();
            let model = linear(w_scale, &device);
            let b = batch(&x, &labels, &device);
            let loss = move |m: &DpLinear, b: &Batch| {
                let logits = if sequence {
                    let rows = b.0.clone();
                    let [n, _] = rows.dims();
                    let padded: Tensor<3> = Tensor::stack(vec![rows.clone(), rows.zeros_like()], 1);
                    m.forward(padded).narrow(1, 0, 1).reshape([n, D_OUT])
                } else {
                    m.forward(b.0.clone())
                };
                cross_entropy_per_example(logits, b.1.clone()).mul_scalar(loss_scale as f32)
            };
            let mut engine = GradientEngine::new(Clipping::flat(c).unwrap());
            let got = engine.clipped_gradients(&model, &b, loss).unwrap();
            assert!(
                matches!(got.method(), GradientMethod::FastPath { .. }),
                "{what}"
            );
            assert_eq!(got.dropped(), 0, "{what}: no example may be dropped");
            let per_example = reference(&x, &labels, w_scale, loss_scale);
            let mut expected = vec![0.0f64; D_IN * D_OUT + D_OUT];
            for (i, g) in per_example.iter().enumerate() {
                let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                let reported = f64::from(got.per_example_norms()[i]);
                if norm < f64::from(f32::MAX) {
                    assert!(
                        (reported - norm).abs() <= 1e-4 * norm,
                        "{what}: norm {i}: {reported} vs {norm}"
                    );
                } else {
                    assert_eq!(reported, f64::from(f32::MAX), "{what}: saturated norm");
                }
                let f = (c / norm).min(1.0);
                for (e, v) in expected.iter_mut().zip(g) {
                    *e += f * v;
                }
            }
            let params = trainable_params(&model);
            let mut actual = to_vec(got.sum(&params[0].id).unwrap());
            actual.extend(to_vec(got.sum(&params[1].id).unwrap()));
            let err = rel_err(&actual, &expected);
            assert!(
                err <= 1e-4,
                "{what}: clipped sum off by {err}: {actual:?} vs {expected:?}"
            );
            // Each clipped contribution is within C, so the sum is too.
            let total = actual.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(total <= 3.0 * c * (1.0 + 1e-6), "{what}: {total}");
        }
    }
}

#[derive(Module, Debug)]
struct Cnn {
    conv: DpConv2d,
    fc: DpLinear,
}

/// Convolutions (Gram ghost norms, materialised per-example gradients, and
/// the fallback) with inputs of 1e30: per-example gradients are finite in
/// f32, their squares are not.
#[test]
fn conv_norms_and_clipped_sums_match_f64_for_huge_inputs() {
    for (backend, device) in devices() {
        // A fixed initialisation: with an unlucky random one, ReLU can
        // silence an example's every activation, and its gradient is then
        // small, not huge (the assertion below expects huge ones).
        device.seed(7);
        let conv = DpConv2dConfig::new([1, 2], [3, 3]).init(&device);
        let model = Cnn {
            conv,
            fc: DpLinearConfig::new(2 * 3 * 3, 3).init(&device),
        };
        let n = 4;
        let v: Vec<f32> = (0..n * 25)
            .map(|i| 1e30 * ((i as f32 * 0.7548 + 0.3) * 1.618).sin())
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(v, [n, 1, 5, 5]), &device);
        let logits = |m: &Cnn, x: Tensor<4>| {
            let h = relu(m.conv.forward(x));
            let n = h.dims()[0];
            m.fc.forward(h.reshape([n as i32, -1]))
        };
        // Labels the model gets wrong: the saturated softmax then leaves an
        // output gradient of norm √2 (a right one would leave zero).
        let y = logits(&model, x.clone())
            .argmax(1)
            .reshape([n])
            .add_scalar(1)
            .remainder_scalar(3);
        let b = (x, y);
        let loss = move |m: &Cnn, b: &(Tensor<4>, Tensor<1, Int>)| {
            cross_entropy_per_example(logits(m, b.0.clone()), b.1.clone())
        };
        let naive = naive_per_example(&model, &b, loss);
        let c = 2.0;
        let expected = naive_clipped_sum(&naive, c);
        for strategy in [ConvStrategy::Unfold, ConvStrategy::Materialize] {
            for mode in [EngineMode::Auto, EngineMode::FallbackOnly] {
                let what = format!("{backend} {strategy:?} {mode:?}");
                let mut engine = GradientEngine::new(Clipping::flat(c).unwrap())
                    .with_conv_strategy(strategy)
                    .with_mode(mode);
                let got = engine.clipped_gradients(&model, &b, loss).unwrap();
                assert_eq!(got.dropped(), 0, "{what}");
                for (i, g) in naive.iter().enumerate() {
                    let norm = norm(g);
                    // Finite in f32, but its square is not.
                    assert!(
                        norm > 1e20 && norm.is_finite(),
                        "{what}: example {i}: {norm}"
                    );
                    let reported = f64::from(got.per_example_norms()[i]);
                    assert!(
                        (reported - norm).abs() <= 1e-4 * norm,
                        "{what}: norm {i}: {reported} vs {norm}"
                    );
                }
                for p in trainable_params(&model) {
                    let actual = got
                        .sum(&p.id)
                        .map(to_vec)
                        .unwrap_or_else(|| vec![0.0; p.numel()]);
                    let err = rel_err(&actual, &expected[&p.id]);
                    assert!(err <= 1e-4, "{what}: {}: relative error {err}", p.name());
                }
            }
        }
    }
}
