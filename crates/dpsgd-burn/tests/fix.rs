//! The fixer: burn layers converted into their DP-aware twins (same
//! parameters, same outputs), BatchNorm replaced by GroupNorm by the stated
//! rule, and the fast-path check that names every parameter the slow
//! fallback would take; on every enabled backend.

mod common;

use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{BatchNormConfig, Linear, LinearConfig, Lstm, LstmConfig};
use burn::tensor::{Device, Tensor, TensorData};
use common::{clipped_sums_by_param, devices, rel_err};
use dpsgd_burn::fix::{FixReport, check_fast_path, group_count};
use dpsgd_burn::layers::*;
use dpsgd_burn::{EngineMode, GradientEngine};
use dpsgd_core::{Clipping, Error, GradientMethod};

fn input<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.29 + 0.3).cos()).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// A pretrained model of burn layers.
#[derive(Module, Debug)]
struct BurnModel {
    attention: MultiHeadAttention,
    lstm: Lstm,
    head: Linear,
}

impl BurnModel {
    fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let h = self.attention.forward(MhaInput::self_attn(x)).context;
        let (_, state) = self.lstm.forward(h, None);
        self.head.forward(state.hidden)
    }
}

/// Its DP twin.
#[derive(Module, Debug)]
struct DpModel {
    attention: DpMultiHeadAttention,
    lstm: DpLstm,
    head: DpLinear,
}

impl DpModel {
    fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let h = self.attention.forward(DpMhaInput::self_attn(x)).context;
        let (_, (_, hidden)) = self.lstm.forward(h, None);
        self.head.forward(hidden)
    }
}

fn sq(out: Tensor<2>) -> Tensor<1> {
    let n = out.dims()[0];
    out.powi_scalar(2).sum_dim(1).reshape([n])
}

#[test]
fn should_convert_burn_layers_and_report_every_parameter_on_the_fast_path() {
    for (backend, device) in devices() {
        let model = BurnModel {
            attention: MultiHeadAttentionConfig::new(4, 2)
                .with_dropout(0.0)
                .init(&device),
            lstm: LstmConfig::new(4, 3, true).init(&device),
            head: LinearConfig::new(3, 2).init(&device),
        };
        let x = input([2, 5, 4], &device);
        let want = values(model.forward(x.clone()));
        let mut report = FixReport::default();
        let dp = DpModel {
            attention: report.convert("attention", model.attention),
            lstm: report.convert("lstm", model.lstm),
            head: report.convert("head", model.head),
        };
        assert_eq!(
            report.changes,
            [
                "attention: MultiHeadAttention → DpMultiHeadAttention",
                "lstm: Lstm → DpLstm",
                "head: Linear → DpLinear"
            ]
        );
        let got = values(dp.forward(x.clone()));
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() < 1e-5, "{backend}: {a} vs {b}");
        }
        let check = check_fast_path(&dp, &x, |m: &DpModel, x| sq(m.forward(x.clone()))).unwrap();
        assert!(check.is_fast(), "{backend}: {check:?}");
        assert!(check.warning().is_none());
        // 4 projections × 2 + 4 gates × 2 transforms × 2 + head × 2.
        assert_eq!(check.fast.len(), 8 + 16 + 2, "{:?}", check.fast);
    }
}

#[derive(Module, Debug)]
struct Mixed {
    plain: Linear,
    shared: DpLinear,
}

#[test]
fn should_name_every_parameter_that_takes_the_fallback() {
    for (backend, device) in devices() {
        let model = Mixed {
            plain: LinearConfig::new(3, 3).init(&device),
            shared: DpLinearConfig::new(3, 3).init(&device),
        };
        let x = input([4, 3], &device);
        // `plain` is not DP-aware; `shared` is applied twice.
        let loss = |m: &Mixed, x: &Tensor<2>| {
            sq(m.shared
                .forward(m.shared.forward(m.plain.forward(x.clone()))))
        };
        let check = check_fast_path(&model, &x, loss).unwrap();
        assert!(!check.is_fast());
        // The step takes the fallback: the independence check does not run.
        assert_eq!(check.independence, None);
        assert_eq!(
            check.fallback,
            ["plain.weight", "plain.bias", "shared.weight", "shared.bias"],
            "{backend}"
        );
        let warning = check.warning().unwrap();
        assert!(
            warning.contains("plain.weight") && warning.contains("4 parameters"),
            "{warning}"
        );
        // Frozen, the plain layer is no longer a problem; the shared one is.
        let frozen = Mixed {
            plain: model.plain.clone().freeze(),
            shared: model.shared.clone(),
        };
        let check = check_fast_path(&frozen, &x, loss).unwrap();
        assert_eq!(check.fallback, ["shared.weight", "shared.bias"]);
        // Everything frozen: nothing to train.
        let all = Mixed {
            plain: model.plain.freeze(),
            shared: model.shared.freeze(),
        };
        assert!(check_fast_path(&all, &x, loss).is_err());
    }
}

#[test]
fn should_replace_batch_norm_by_group_norm_by_the_stated_rule() {
    assert_eq!(group_count(64), 32);
    assert_eq!(group_count(48), 24);
    assert_eq!(group_count(6), 6);
    assert_eq!(group_count(37), 1);
    assert_eq!(group_count(1), 1);
    for (backend, device) in devices() {
        let bn = BatchNormConfig::new(6).init(&device);
        // The engine refuses batch normalisation outright.
        let x = input([2, 6, 3, 3], &device);
        let flat = |out: Tensor<4>| {
            let n = out.dims()[0];
            out.reshape([n, 54]).sum_dim(1).reshape([n])
        };
        assert!(check_fast_path(&bn, &x, |m, x| flat(m.forward(x.clone()))).is_err());
        let gamma = values(bn.gamma.val());
        let mut report = FixReport::default();
        let gn = report.batch_norm("norm", bn);
        assert_eq!(values(gn.gamma.val()), gamma, "{backend}");
        assert_eq!(
            report.changes,
            [
                "norm: BatchNorm(6) → GroupNorm(6 groups, 6 channels); γ and β kept, running statistics dropped"
            ]
        );
        let check = check_fast_path(&gn, &x, |m, x| flat(m.forward(x.clone()))).unwrap();
        assert!(check.is_fast());
    }
}

#[test]
fn should_convert_convolutions_when_their_padding_allows() {
    use burn::nn::conv::{Conv2dConfig, Conv3dConfig, ConvTranspose2dConfig};
    use burn::nn::{PaddingConfig2d, PaddingConfig3d};
    let device = devices()[0].1.clone().without_autodiff();
    let mut report = FixReport::default();
    let conv = Conv2dConfig::new([4, 6], [3, 3])
        .with_groups(2)
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    let x = input([2, 4, 5, 5], &device);
    let want = values(conv.forward(x.clone()));
    let dp: DpConv2d = report.try_convert("conv", conv).unwrap();
    let got = values(dp.forward(x));
    for (a, b) in want.iter().zip(&got) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let same = Conv2dConfig::new([4, 6], [3, 3])
        .with_padding(PaddingConfig2d::Same)
        .init(&device);
    let refused: Result<DpConv2d, _> = report.try_convert("same", same);
    assert!(refused.unwrap_err().to_string().contains("padding"));
    let conv3d = Conv3dConfig::new([2, 2], [1, 3, 3])
        .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
        .init(&device);
    let _: DpConv3d = report.try_convert("conv3d", conv3d).unwrap();
    let up = ConvTranspose2dConfig::new([4, 2], [3, 3]).init(&device);
    let _: DpConvTranspose2d = report.convert("up", up);
    assert_eq!(
        report.changes,
        [
            "conv: Conv2d → DpConv2d",
            "conv3d: Conv3d → DpConv3d",
            "up: ConvTranspose2d → DpConvTranspose2d"
        ]
    );
}

// ---------------------------------------------------------------------
// The check runs the engine's per-example independence check: a model the
// engine refuses is refused here, with the same error, before training.

/// Two DP-aware layers with batch centring between them:
/// `z = h − mean_j h_j`, `ℓ_i = fc2(z_i)²`.
#[derive(Module, Debug)]
struct Centring {
    fc1: DpLinear,
    fc2: DpLinear,
}

fn centring_loss(m: &Centring, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    let h = m.fc1.forward(x.clone());
    let z = h.clone() - h.mean_dim(0);
    m.fc2.forward(z).powi_scalar(2).reshape([n])
}

/// The same layers without the centring: the examples stay apart.
fn apart_loss(m: &Centring, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    m.fc2
        .forward(m.fc1.forward(x.clone()))
        .powi_scalar(2)
        .reshape([n])
}

fn centring(device: &Device) -> Centring {
    Centring {
        fc1: DpLinearConfig::new(3, 4).init(device),
        fc2: DpLinearConfig::new(4, 1).init(device),
    }
}

fn engine_error<M, B, F>(model: &M, batch: &B, loss: F) -> dpsgd_core::Error
where
    M: Module,
    B: dpsgd_burn::ExampleBatch,
    F: Fn(&M, &B) -> Tensor<1>,
{
    let mut engine = GradientEngine::new(Clipping::flat(1.0).expect("C"));
    match engine.clipped_gradients(model, batch, loss) {
        Err(e) => e,
        Ok(c) => panic!("the engine released a sum by {:?}", c.method()),
    }
}

#[test]
fn should_refuse_a_batch_centring_model_as_the_engine_does() {
    for (backend, device) in devices() {
        let model = centring(&device);
        let x = input([6, 3], &device);
        let refused = check_fast_path(&model, &x, centring_loss).unwrap_err();
        let Error::UnsupportedLayer {
            path, suggestion, ..
        } = &refused
        else {
            panic!("{backend}: refused with the wrong error: {refused}");
        };
        assert_eq!(path, "fc1", "{backend}: the first layer mixed after");
        assert!(suggestion.contains("mixes the examples"), "{suggestion}");
        // Training refuses it with the same error.
        let engine = engine_error(&model, &x, centring_loss);
        assert_eq!(engine.to_string(), refused.to_string(), "{backend}");
        // Without the centring the same layers are verified.
        let check = check_fast_path(&model, &x, apart_loss).unwrap();
        assert_eq!(check.independence, None, "{backend}");
        assert!(check.is_fast() && check.warning().is_none(), "{check:?}");
        assert_eq!(check.fast.len(), 4);
    }
}

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

/// The same, batch-first.
fn batch_first_loss(m: &Head, x: &Tensor<3>) -> Tensor<1> {
    let [b, _, _] = x.dims();
    m.lin.forward(x.clone()).sum_dim(1).reshape([b])
}

#[test]
fn should_refuse_a_time_major_model_as_the_engine_does() {
    for (backend, device) in devices() {
        let model = Head {
            lin: DpLinearConfig::new(2, 1).init(&device),
        };
        // Two examples too (the rows counted again on one example).
        for (b, t) in [(3usize, 3usize), (2, 4), (4, 8)] {
            let x = input([b, t, 2], &device);
            let what = format!("{backend}, B = {b}, T = {t}");
            let refused = check_fast_path(&model, &x, time_major_loss).unwrap_err();
            let Error::UnsupportedLayer {
                path, suggestion, ..
            } = &refused
            else {
                panic!("{what}: refused with the wrong error: {refused}");
            };
            assert_eq!(path, "lin", "{what}");
            assert!(suggestion.contains("example axis"), "{what}: {suggestion}");
            let engine = engine_error(&model, &x, time_major_loss);
            assert_eq!(engine.to_string(), refused.to_string(), "{what}");
            let check = check_fast_path(&model, &x, batch_first_loss).unwrap();
            assert!(check.is_fast(), "{what}: {check:?}");
        }
    }
}

#[test]
fn should_report_an_inconclusive_independence_check() {
    for (backend, device) in devices() {
        let model = centring(&device);
        // One example cannot show whether the examples mix: every
        // parameter is on the fast path, but the model is not verified.
        let one = input([1, 3], &device);
        for loss in [centring_loss, apart_loss] {
            let check = check_fast_path(&model, &one, loss).unwrap();
            assert_eq!(check.fast.len(), 4, "{backend}");
            assert!(check.fallback.is_empty());
            assert_eq!(check.independence.as_deref(), Some("a pass of one example"));
            assert!(!check.is_fast(), "{backend}: {check:?}");
            let warning = check.warning().expect("a warning");
            assert!(
                warning.contains("independence check could not verify")
                    && warning.contains("a pass of one example"),
                "{warning}"
            );
        }
        // No finite loss: nothing to check either.
        let x = input([4, 3], &device);
        let nan = |m: &Centring, x: &Tensor<2>| apart_loss(m, x) * f32::NAN;
        let check = check_fast_path(&model, &x, nan).unwrap();
        assert_eq!(check.independence.as_deref(), Some("no finite loss"));
        assert!(!check.is_fast() && check.warning().is_some());
    }
}

#[derive(Module, Debug)]
struct Two {
    a: DpLinear,
    b: DpLinear,
}

/// `x: [B, T, F]`: `a` on batch-first rows, then `b` time-major.
fn mixed_major_loss(m: &Two, x: &Tensor<3>) -> Tensor<1> {
    let [b, _, _] = x.dims();
    let h = m.a.forward(x.clone());
    m.b.forward(h.swap_dims(0, 1)).sum_dim(0).reshape([b])
}

/// Both layers time-major.
fn both_time_major_loss(m: &Two, x: &Tensor<3>) -> Tensor<1> {
    let [b, _, _] = x.dims();
    let y = m.b.forward(m.a.forward(x.clone().swap_dims(0, 1)));
    y.sum_dim(0).reshape([b])
}

#[test]
fn should_refuse_rows_that_are_not_a_multiple_of_the_examples_as_the_engine_does() {
    for (backend, device) in devices() {
        let model = Two {
            a: DpLinearConfig::new(2, 3).init(&device),
            b: DpLinearConfig::new(3, 1).init(&device),
        };
        for loss in [mixed_major_loss, both_time_major_loss] {
            for (b, t) in [(4usize, 5usize), (3, 4), (3, 5), (5, 3)] {
                let x = input([b, t, 2], &device);
                let what = format!("{backend}, B = {b}, T = {t}");
                let refused = check_fast_path(&model, &x, loss).unwrap_err();
                assert!(
                    matches!(refused, Error::Shape(_)),
                    "{what}: refused with the wrong error: {refused}"
                );
                let engine = engine_error(&model, &x, loss);
                assert_eq!(engine.to_string(), refused.to_string(), "{what}");
            }
        }
    }
}

#[derive(Module, Debug)]
struct Shared {
    first: DpLinear,
    frozen: DpLinear,
    head: DpLinear,
}

/// `frozen` is called twice, between two trainable layers.
fn frozen_twice_loss(m: &Shared, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    let h = m
        .frozen
        .forward(m.frozen.forward(m.first.forward(x.clone())).tanh());
    m.head.forward(h).powi_scalar(2).reshape([n])
}

#[test]
fn should_keep_a_frozen_layer_called_twice_on_the_fast_path() {
    for (backend, device) in devices() {
        let model = Shared {
            first: DpLinearConfig::new(3, 4).init(&device),
            frozen: DpLinearConfig::new(4, 4).init(&device).no_grad(),
            head: DpLinearConfig::new(4, 1).init(&device),
        };
        let x = input([6, 3], &device);
        let check = check_fast_path(&model, &x, frozen_twice_loss).unwrap();
        assert!(check.is_fast(), "{backend}: {check:?}");
        assert_eq!(check.fast.len(), 4, "{backend}: {check:?}");
        // Training takes the fast path too, and its clipped per-example
        // gradients are the fallback's (each example alone).
        let clipping = Clipping::flat(0.05).unwrap();
        let mut fast = GradientEngine::new(clipping.clone());
        let got = fast
            .clipped_gradients(&model, &x, frozen_twice_loss)
            .unwrap();
        assert!(
            matches!(got.method(), GradientMethod::FastPath { .. }),
            "{backend}: {:?} ({:?})",
            got.method(),
            fast.fallback_reason()
        );
        let mut slow = GradientEngine::new(clipping).with_mode(EngineMode::FallbackOnly);
        let want = slow
            .clipped_gradients(&model, &x, frozen_twice_loss)
            .unwrap();
        let norms = |c: &dpsgd_core::ClippedGradients| -> Vec<f64> {
            c.per_example_norms()
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        };
        let (got_norms, want_norms) = (norms(&got), norms(&want));
        assert!(
            want_norms.iter().any(|&v| v > 0.05),
            "{backend}: clipping must bind: {want_norms:?}"
        );
        assert!(
            rel_err(&got_norms, &want_norms) < 1e-4,
            "{backend}: {got_norms:?} vs {want_norms:?}"
        );
        let (got, want) = (
            clipped_sums_by_param(&model, &got),
            clipped_sums_by_param(&model, &want),
        );
        assert_eq!(got.len(), 4);
        for (id, w) in &want {
            let e = rel_err(&got[id], w);
            assert!(e < 1e-4, "{backend}: parameter {id}: {e}");
        }
    }
}
