//! DP fine-tuning: a pretrained record loaded, part of the model frozen
//! (burn's `freeze`), the rest trained under DP-SGD. Frozen parameters stay
//! bit-identical (no gradient, no noise), are not part of the clipped norm,
//! and do not push the engine off its fast path even when they sit in plain
//! burn layers; on every enabled backend.

mod common;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::AdamConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use dpsgd_burn::layers::{DpLinear, DpLinearConfig, DpLstm, DpLstmConfig};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::{DatasetFingerprint, DpSgdConfig, GradientEngine, PoissonSampler};
use dpsgd_core::{Clipping, GradientMethod, trainable_params};
use std::collections::HashMap;

/// A pretrained front (a plain burn `Linear` and a DP-aware LSTM) and a
/// head to fine-tune.
#[derive(Module, Debug)]
struct TextClassifier {
    embed: Linear,
    encoder: DpLstm,
    head: DpLinear,
}

impl TextClassifier {
    fn new(device: &Device) -> Self {
        Self {
            embed: LinearConfig::new(3, 4).init(device),
            encoder: DpLstmConfig::new(4, 5, true).init(device),
            head: DpLinearConfig::new(5, 2).init(device),
        }
    }

    fn losses(&self, batch: &(Tensor<3>, Tensor<1, Int>)) -> Tensor<1> {
        let (_, (_, h)) = self
            .encoder
            .forward(self.embed.forward(batch.0.clone()), None);
        cross_entropy_per_example(self.head.forward(h), batch.1.clone())
    }
}

/// Every float parameter's values, by id.
fn snapshot<M: Module>(m: &M) -> HashMap<ParamId, Vec<f32>> {
    struct All(HashMap<ParamId, Vec<f32>>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .insert(p.id, p.val().into_data().iter::<f32>().collect());
        }
    }
    let mut all = All(HashMap::new());
    m.visit(&mut all);
    all.0
}

fn ids<M: Module>(m: &M) -> Vec<ParamId> {
    snapshot(m).into_keys().collect()
}

fn batch(n: usize, device: &Device) -> (Tensor<3>, Tensor<1, Int>) {
    let x: Vec<f32> = (0..n * 6 * 3).map(|i| ((i as f32) * 0.61).sin()).collect();
    let y: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, 6, 3]), device),
        Tensor::from_data(TensorData::new(y, [n]), device),
    )
}

#[test]
fn should_fine_tune_the_head_and_leave_frozen_parameters_bit_identical() {
    for (backend, device) in devices() {
        // "Pretrained": a model whose record is loaded into a fresh one.
        let pretrained = TextClassifier::new(&device);
        let mut model = TextClassifier::new(&device)
            .try_load_record(pretrained.clone().into_record())
            .expect("the pretrained record loads");
        model.embed = model.embed.freeze();
        model.encoder = model.encoder.freeze();
        let before = snapshot(&model);
        let frozen: Vec<ParamId> = ids(&model.embed)
            .into_iter()
            .chain(ids(&model.encoder))
            .collect();
        let head = ids(&model.head);
        assert_eq!(
            trainable_params(&model).len(),
            head.len(),
            "{backend}: only the head trains"
        );
        let n = 16;
        let mut engine = DpSgdConfig::new(1.0)
            .with_noise_multiplier(1.0)
            .with_seed(7)
            .with_dataset(DatasetFingerprint { size: n, hash: 1 })
            .init(AdamConfig::new().init(), PoissonSampler::new(n, 8).unwrap())
            .unwrap();
        let data = batch(n, &device);
        for _ in 0..3 {
            let indices = engine.sample_batch();
            let rows: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
            let picked =
                Tensor::<1, Int>::from_data(TensorData::new(rows, [indices.len()]), &device);
            let b = (
                data.0.clone().select(0, picked.clone()),
                data.1.clone().select(0, picked),
            );
            model = engine
                .step(0.05, model, &b, |m: &TextClassifier, b| m.losses(b))
                .map_err(|r| r.error)
                .unwrap();
            if let Some(stats) = engine.last_step() {
                assert!(
                    matches!(stats.method, GradientMethod::FastPath { .. }),
                    "{backend}: a frozen plain layer does not force the fallback: {:?}",
                    stats.method
                );
            }
        }
        let after = snapshot(&model);
        for id in &frozen {
            assert_eq!(before[id], after[id], "{backend}: a frozen parameter moved");
        }
        for id in &head {
            assert_ne!(before[id], after[id], "{backend}: the head did not train");
        }
    }
}

/// The clipped norm is the trainable parameters' only: frozen ones are not
/// released, so they neither count towards C nor receive noise.
#[test]
fn should_clip_only_the_trainable_parameters() {
    for (backend, device) in devices() {
        let mut model = TextClassifier::new(&device);
        model.encoder = model.encoder.freeze();
        let b = batch(5, &device);
        let loss = |m: &TextClassifier, b: &(Tensor<3>, Tensor<1, Int>)| m.losses(b);
        let mut engine = GradientEngine::new(Clipping::flat(0.1).unwrap());
        let got = engine.clipped_gradients(&model, &b, loss).unwrap();
        let naive = naive_per_example(&model, &b, loss);
        let trainable: Vec<ParamId> = trainable_params(&model).iter().map(|p| p.id).collect();
        for (i, g) in naive.iter().enumerate() {
            let expected: f64 = trainable
                .iter()
                .flat_map(|id| &g[id])
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            let actual = f64::from(got.per_example_norms()[i]);
            assert!(
                (actual - expected).abs() <= 1e-4 * expected,
                "{backend}: example {i}: {actual} vs {expected}"
            );
        }
        for id in ids(&model.encoder) {
            assert!(
                got.sum(&id).is_none(),
                "{backend}: a frozen sum was released"
            );
        }
    }
}

/// A trainable parameter outside DP-aware layers: the step still runs (by
/// the slow fallback), and the engine's warnings say so, naming it.
#[test]
fn should_warn_by_name_when_the_fallback_is_taken() {
    let device = devices()[0].1.clone();
    let model = TextClassifier::new(&device);
    let n = 8;
    let mut engine = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_seed(3)
        .with_dataset(DatasetFingerprint { size: n, hash: 1 })
        .init(AdamConfig::new().init(), PoissonSampler::new(n, 4).unwrap())
        .unwrap();
    let b = batch(3, &device);
    let _ = engine
        .step(0.05, model, &b, |m: &TextClassifier, b| m.losses(b))
        .map_err(|r| r.error)
        .unwrap();
    let warnings = engine.warnings().join("\n");
    assert!(
        warnings.contains("slow fallback") && warnings.contains("embed.weight"),
        "{warnings}"
    );
}

/// burn's own layers leave the fast path: the warning names each layer and
/// the DP twin to swap in.
#[test]
fn should_name_the_dp_twin_of_each_burn_layer_off_the_fast_path() {
    #[derive(burn::module::Module, Debug)]
    struct Mixed {
        head: dpsgd_burn::layers::DpLinear,
        body: burn::nn::Linear,
        norm: burn::nn::LayerNorm,
    }
    let device = devices()[0].1.clone();
    let model = Mixed {
        head: dpsgd_burn::layers::DpLinearConfig::new(4, 2).init(&device),
        body: burn::nn::LinearConfig::new(4, 4).init(&device),
        norm: burn::nn::LayerNormConfig::new(4).init(&device),
    };
    let n = 8;
    let mut engine = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_seed(3)
        .with_announce_fallback(false)
        .init(AdamConfig::new().init(), PoissonSampler::new(n, 4).unwrap())
        .unwrap();
    assert!(DpSgdConfig::new(1.0).announce_fallback, "loud by default");
    let x = burn::tensor::Tensor::<2>::from_data(
        burn::tensor::TensorData::new((0..12).map(|i| i as f32 * 0.1).collect::<Vec<_>>(), [3, 4]),
        &device,
    );
    let loss = |m: &Mixed, x: &burn::tensor::Tensor<2>| {
        let h = m.norm.forward(m.body.forward(x.clone()));
        let n = x.dims()[0];
        m.head.forward(h).powi_scalar(2).sum_dim(1).reshape([n])
    };
    let _ = engine
        .step(0.05, model, &x, loss)
        .map_err(|r| r.error)
        .unwrap();
    let warnings = engine.warnings().join("\n");
    for expected in [
        "body.weight",
        "`body` is burn's Linear: swap in dpsgd_burn::layers::DpLinear",
        "`norm` is burn's LayerNorm: swap in dpsgd_burn::layers::DpLayerNorm",
    ] {
        assert!(
            warnings.contains(expected),
            "`{expected}` not in {warnings}"
        );
    }
    assert!(!warnings.contains("`head`"), "{warnings}");
}

/// A normalisation with γ frozen and β trained (a common fine-tuning
/// choice): β's clipped sum is its own, not γ's zero.
#[derive(Module, Debug)]
struct Normed {
    fc: DpLinear,
    norm: dpsgd_burn::layers::DpLayerNorm,
}

#[test]
fn should_release_a_trainable_bias_beside_a_frozen_scale() {
    for (backend, device) in devices() {
        let mut model = Normed {
            fc: DpLinearConfig::new(3, 4).init(&device),
            norm: dpsgd_burn::layers::DpLayerNormConfig::new(4).init(&device),
        };
        model.norm.gamma = model.norm.gamma.set_require_grad(false);
        let x: Vec<f32> = (0..5 * 3).map(|i| ((i as f32) * 0.61).sin()).collect();
        let y: Vec<i64> = (0..5).map(|i| (i % 4) as i64).collect();
        let b = (
            Tensor::<2>::from_data(TensorData::new(x, [5, 3]), &device),
            Tensor::<1, Int>::from_data(TensorData::new(y, [5]), &device),
        );
        let loss = |m: &Normed, b: &(Tensor<2>, Tensor<1, Int>)| {
            cross_entropy_per_example(m.norm.forward(m.fc.forward(b.0.clone())), b.1.clone())
        };
        let c = 0.1;
        let mut engine = GradientEngine::new(Clipping::flat(c).unwrap());
        let got = engine.clipped_gradients(&model, &b, loss).unwrap();
        assert!(
            matches!(got.method(), GradientMethod::FastPath { .. }),
            "{backend}"
        );
        let naive = naive_per_example(&model, &b, loss);
        let trainable: Vec<ParamId> = trainable_params(&model).iter().map(|p| p.id).collect();
        let beta = model.norm.beta.id;
        assert!(trainable.contains(&beta) && !trainable.contains(&model.norm.gamma.id));
        let mut expected = vec![0.0f64; 4];
        for g in &naive {
            let norm = trainable
                .iter()
                .flat_map(|id| &g[id])
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            let f = (c / norm).min(1.0);
            for (e, v) in expected.iter_mut().zip(&g[&beta]) {
                *e += f * v;
            }
        }
        let actual: Vec<f64> = got
            .sum(&beta)
            .expect("β is released")
            .clone()
            .into_data()
            .iter::<f32>()
            .map(f64::from)
            .collect();
        let scale = expected.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert!(scale > 0.0);
        for (a, e) in actual.iter().zip(&expected) {
            assert!(
                (a - e).abs() <= 1e-4 * scale,
                "{backend}: β {actual:?} vs {expected:?}"
            );
        }
        assert!(
            got.sum(&model.norm.gamma.id).is_none(),
            "{backend}: γ is frozen"
        );
    }
}
