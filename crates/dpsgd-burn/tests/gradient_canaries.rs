//! Gradient canaries through the engine (issue 28, item 3): a canary
//! slot's gradient is its canary's, clipped by the run's own policy, on
//! the fast path, the fallback and data-parallel shards; its placeholder
//! input contributes nothing. Checked against a naive reference: the
//! per-example gradients of the ordinary examples, one backward each,
//! clipped by hand, plus each canary clipped by hand.

mod common;

use burn::module::{Module, ParamId};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use dpsgd_burn::canary::{CanaryRows, GradientCanary, WithCanaries};
use dpsgd_burn::layers::DpLinear;
use dpsgd_burn::parallel::DataParallel;
use dpsgd_burn::{EngineMode, GradientEngine, PassSize};
use dpsgd_core::{ClippedGradients, Clipping, trainable_params};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Module, Debug)]
struct Net {
    fc1: DpLinear,
    fc2: DpLinear,
}

impl Net {
    fn new(device: &Device) -> Self {
        Self {
            fc1: fixed_linear(5, 6, 0.1, 1.0, device),
            fc2: fixed_linear(6, 3, 0.7, 1.0, device),
        }
    }
}

fn sq_loss(m: &Net, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    m.fc2
        .forward(relu(m.fc1.forward(x.clone())))
        .powi_scalar(2)
        .sum_dim(1)
        .reshape([n])
}

fn input(n: usize, device: &Device) -> Tensor<2> {
    let v: Vec<f32> = (0..n * 5)
        .map(|i| ((i as f32 * 0.7548 + 0.3) * 1.618).sin() * (1.0 + (i % 7) as f32))
        .collect();
    Tensor::from_data(TensorData::new(v, [n, 5]), device)
}

/// 8 examples; 2 is a Dirac canary of value 40 on fc2.weight[4], 5 a
/// canary on two coordinates of two layers (3 on fc1.weight[0], 4 on
/// fc2.bias[2]: norm 5), 6 a left-out canary's zero slot.
fn with_canaries(net: &Net, x: Tensor<2>) -> WithCanaries<Tensor<2>> {
    let canaries: Arc<[GradientCanary]> = Arc::from(vec![
        GradientCanary::dirac(net.fc2.weight.id, 4, 40.0),
        GradientCanary::from_entries(vec![
            (net.fc1.weight.id, 0, 3.0),
            (net.fc2.bias.as_ref().unwrap().id, 2, 4.0),
        ]),
        GradientCanary::zero(),
    ]);
    let mut rows = vec![None; 8];
    rows[2] = Some(0);
    rows[5] = Some(1);
    rows[6] = Some(2);
    WithCanaries::new(x, CanaryRows::new(canaries, rows)).unwrap()
}

/// The reference: ordinary examples by one backward each, every example
/// (canaries as their vectors) clipped by `factor(group norms²)`.
fn reference(
    net: &Net,
    x: &Tensor<2>,
    factor: impl Fn(&[f64]) -> Vec<f64>,
) -> (HashMap<ParamId, Vec<f64>>, Vec<f64>) {
    let layers = [
        vec![net.fc1.weight.id, net.fc1.bias.as_ref().unwrap().id],
        vec![net.fc2.weight.id, net.fc2.bias.as_ref().unwrap().id],
    ];
    let group = |id: &ParamId| layers.iter().position(|l| l.contains(id)).unwrap();
    let mut per_example = naive_per_example(net, x, sq_loss);
    let sizes: HashMap<ParamId, usize> = trainable_params(net)
        .iter()
        .map(|p| (p.id, p.numel()))
        .collect();
    let dense = |entries: &[(ParamId, usize, f64)]| {
        let mut g: HashMap<ParamId, Vec<f64>> =
            sizes.iter().map(|(id, n)| (*id, vec![0.0; *n])).collect();
        for (id, i, v) in entries {
            g.get_mut(id).unwrap()[*i] += v;
        }
        g
    };
    per_example[2] = dense(&[(net.fc2.weight.id, 4, 40.0)]);
    per_example[5] = dense(&[
        (net.fc1.weight.id, 0, 3.0),
        (net.fc2.bias.as_ref().unwrap().id, 2, 4.0),
    ]);
    // Row 6, a left-out canary's slot, stands for a removed record: no
    // norm (adaptive clipping's count must not see it), nothing summed.
    per_example[6] = dense(&[]);
    let mut sum: HashMap<ParamId, Vec<f64>> =
        sizes.iter().map(|(id, n)| (*id, vec![0.0; *n])).collect();
    let mut norms = Vec::new();
    for (i, g) in per_example.iter().enumerate() {
        if i == 6 {
            continue;
        }
        let mut sq = vec![0.0; 2];
        for (id, v) in g {
            sq[group(id)] += v.iter().map(|x| x * x).sum::<f64>();
        }
        norms.push(sq.iter().sum::<f64>().sqrt());
        let f = factor(&sq);
        for (id, v) in g {
            for (a, x) in sum.get_mut(id).unwrap().iter_mut().zip(v) {
                *a += f[group(id)] * x;
            }
        }
    }
    (sum, norms)
}

fn assert_matches(
    net: &Net,
    got: &ClippedGradients,
    want: &(HashMap<ParamId, Vec<f64>>, Vec<f64>),
    what: &str,
) {
    for p in trainable_params(net) {
        let g = got.sum(&p.id).map_or_else(|| vec![0.0; p.numel()], to_vec);
        for (k, (a, b)) in g.iter().zip(&want.0[&p.id]).enumerate() {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{what}: {}[{k}] = {a}, reference {b}",
                p.name()
            );
        }
    }
    let norms: Vec<f64> = got
        .per_example_norms()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let mut sorted_got = norms.clone();
    let mut sorted_want = want.1.clone();
    sorted_got.sort_by(f64::total_cmp);
    sorted_want.sort_by(f64::total_cmp);
    for (a, b) in sorted_got.iter().zip(&sorted_want) {
        assert!(
            (a - b).abs() < 1e-3 * (1.0 + b),
            "{what}: norms {norms:?} vs {:?}",
            want.1
        );
    }
    assert_eq!(got.batch_size(), 8, "{what}");
    assert_eq!(got.absent(), 1, "{what}: the left-out canary's slot");
    assert_eq!(got.per_example_norms().len(), 7, "{what}");
}

#[test]
fn should_clip_each_canary_by_the_runs_policy_on_every_path() {
    for (backend, device) in devices() {
        let net = Net::new(&device);
        let x = input(8, &device);
        let batch = with_canaries(&net, x.clone());
        let flat = |sq: &[f64]| {
            let f = (1.0 / sq.iter().sum::<f64>().sqrt()).min(1.0);
            vec![f, f]
        };
        let per_layer =
            |sq: &[f64]| vec![(0.5 / sq[0].sqrt()).min(1.0), (2.0 / sq[1].sqrt()).min(1.0)];
        let policies = [
            (
                "flat",
                Clipping::flat(1.0).unwrap(),
                reference(&net, &x, flat),
            ),
            (
                "per-layer",
                Clipping::per_layer(vec![0.5, 2.0]).unwrap(),
                reference(&net, &x, per_layer),
            ),
        ];
        for (name, clipping, want) in &policies {
            // Passes of 3 examples: the canaries travel with their passes.
            let threes = PassSize::Examples(3.try_into().unwrap());
            for (mode, pass) in [
                (EngineMode::Auto, PassSize::Whole),
                (EngineMode::Auto, threes),
                (EngineMode::FallbackOnly, PassSize::Whole),
            ] {
                let mut engine = GradientEngine::new(clipping.clone())
                    .with_mode(mode)
                    .with_pass_size(pass);
                let got = engine
                    .clipped_gradients(&net, &batch, |m, b| sq_loss(m, &b.batch))
                    .unwrap();
                let what = format!("{backend:?} {name} {mode:?} {pass:?}");
                assert_matches(&net, &got, want, &what);
            }
            // Data-parallel shards of 3, 3 and 2 examples on two workers:
            // the canaries travel with their shards.
            let parallel = DataParallel::new(vec![device.clone(); 2], 3).unwrap();
            let engine = GradientEngine::new(clipping.clone());
            let got = parallel
                .clipped_gradients(
                    &engine,
                    &net,
                    &batch,
                    &std::sync::Arc::new(|m: &Net, b: &WithCanaries<Tensor<2>>| {
                        sq_loss(m, &b.batch)
                    }),
                )
                .unwrap();
            assert_matches(
                &net,
                &got,
                want,
                &format!("{backend:?} {name} data-parallel"),
            );
        }
    }
}

/// A placeholder whose own loss is not finite would be dropped as an
/// ordinary example; as a canary slot it is never used: the canary
/// counts, nothing is dropped.
#[test]
fn should_ignore_the_placeholder_input_of_a_canary_slot() {
    for (backend, device) in devices() {
        let net = Net::new(&device);
        let x = input(8, &device);
        let want = {
            let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
            engine
                .clipped_gradients(&net, &with_canaries(&net, x.clone()), |m, b| {
                    sq_loss(m, &b.batch)
                })
                .unwrap()
        };
        // Rows 2, 5 and 6 (the slots) replaced by other finite inputs.
        let mut v: Vec<f32> = x.clone().into_data().iter::<f32>().collect();
        for slot in [2, 5, 6] {
            for k in 0..5 {
                v[slot * 5 + k] = 1e3 * (k as f32 + 1.0);
            }
        }
        let other = Tensor::from_data(TensorData::new(v, [8, 5]), &device);
        let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
        let got = engine
            .clipped_gradients(&net, &with_canaries(&net, other), |m, b| {
                sq_loss(m, &b.batch)
            })
            .unwrap();
        assert_eq!(got.dropped(), 0);
        for p in trainable_params(&net) {
            let (a, b) = (
                to_vec(got.sum(&p.id).unwrap()),
                to_vec(want.sum(&p.id).unwrap()),
            );
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() < 1e-5 * (1.0 + y.abs()),
                    "{backend:?}: {x} vs {y}"
                );
            }
        }
        // The real examples' loss only.
        assert!(got.loss_sum() < 1e5, "{backend:?}: {}", got.loss_sum());
    }
}

#[test]
fn should_refuse_a_canary_outside_the_model() {
    for (_, device) in devices() {
        let net = Net::new(&device);
        let other = Net::new(&device);
        let x = input(2, &device);
        for canary in [
            GradientCanary::dirac(other.fc1.weight.id, 0, 1.0),
            GradientCanary::dirac(net.fc1.weight.id, 30, 1.0),
            GradientCanary::dirac(net.fc1.weight.id, 0, f32::NAN),
        ] {
            let batch = WithCanaries::new(
                x.clone(),
                CanaryRows::new(Arc::from(vec![canary.clone()]), vec![None, Some(0)]),
            )
            .unwrap();
            let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
            let err = engine
                .clipped_gradients(&net, &batch, |m, b| sq_loss(m, &b.batch))
                .unwrap_err();
            assert!(err.to_string().contains("canary"), "{canary:?}: {err}");
        }
        assert!(WithCanaries::new(x, CanaryRows::none(3)).is_err());
    }
}

/// The released noisy mean at a canary's coordinate has mean `q·C/(qN)`
/// and noise std `σC/(qN)` (reported); at a coordinate no example touches,
/// mean 0. 400 steps, σ = 1, C = 1, N = 100, q = ½: the means are checked
/// within 5 standard errors (false alarm ≈ 6·10⁻⁷ each).
#[test]
fn should_observe_the_released_gradient_at_the_canary() {
    use burn::optim::SgdConfig;
    use dpsgd_burn::{DpSgdConfig, PoissonSampler};
    for (backend, device) in devices() {
        let net = Net::new(&device);
        let sampler = PoissonSampler::new(100, 50).unwrap();
        let mut engine = DpSgdConfig::new(1.0)
            .with_noise_multiplier(1.0)
            .with_seed(7)
            .init(SgdConfig::new().init(), sampler)
            .unwrap();
        let w = net.fc2.weight.id;
        engine.observe_releases(vec![(w, 4), (w, 5)]);
        let canaries: Arc<[GradientCanary]> = Arc::from(vec![GradientCanary::dirac(w, 4, 1e4)]);
        let zero_loss = |m: &Net, b: &WithCanaries<Tensor<2>>| sq_loss(m, &b.batch).mul_scalar(0.0);
        let mut model = net;
        let (mut at_canary, mut elsewhere) = (Vec::new(), Vec::new());
        for _ in 0..400 {
            let indices = engine.sample_batch();
            let rows = indices.iter().map(|&i| (i == 99).then_some(0)).collect();
            let batch = WithCanaries::new(
                input(indices.len().max(1), &device).narrow(0, 0, indices.len()),
                CanaryRows::new(Arc::clone(&canaries), rows),
            )
            .unwrap();
            model = engine.step(1e-9, model, &batch, zero_loss).unwrap();
            let release = engine.last_release().unwrap();
            assert!(
                (release.noise_std - 1.0 / 50.0).abs() < 1e-12,
                "{backend:?}"
            );
            at_canary.push(f64::from(release.values[0]));
            elsewhere.push(f64::from(release.values[1]));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // Per step: 1/50 w.p. ½ plus N(0, 0.02²): std ≈ 0.0212.
        let se = (0.02f64.powi(2) + 0.25 * 0.02f64.powi(2)).sqrt() / 20.0;
        assert!(
            (mean(&at_canary) - 0.01).abs() < 5.0 * se,
            "{backend:?}: {}",
            mean(&at_canary)
        );
        assert!(
            mean(&elsewhere).abs() < 5.0 * 0.02 / 20.0,
            "{backend:?}: {}",
            mean(&elsewhere)
        );
    }
}

/// Under adaptive clipping a left-out canary's slot is a removed record to
/// the released count too: a step on a batch with such a slot moves C
/// exactly as the same step without it (same seed, same noise), and an
/// included canary (norm above C: counted as clipped) moves it otherwise.
#[test]
fn should_leave_a_left_out_canary_out_of_adaptive_clippings_count() {
    use burn::optim::SgdConfig;
    use dpsgd_burn::{DpSgdConfig, PoissonSampler};
    for (backend, device) in devices() {
        let model = Net::new(&device);
        let c_after = |rows: Vec<Option<usize>>, canary: GradientCanary| -> f64 {
            let net = model.clone();
            let mut engine = DpSgdConfig::new(1.0)
                .with_clipping(Clipping::adaptive(1.0, 0.5, 2.0).unwrap())
                .with_noise_multiplier(1.0)
                .with_seed(11)
                .init(
                    SgdConfig::new().init(),
                    PoissonSampler::new(100, 10).unwrap(),
                )
                .unwrap();
            let n = rows.len();
            let batch = WithCanaries::new(
                input(n, &device),
                CanaryRows::new(Arc::from(vec![canary]), rows),
            )
            .unwrap();
            let _ = engine
                .step(0.1, net, &batch, |m, b| sq_loss(m, &b.batch))
                .unwrap();
            engine.optimizer().clipping().sensitivity()
        };
        let w = model.fc2.weight.id;
        let without = c_after(vec![None; 4], GradientCanary::zero());
        // Four examples and a fifth that is a left-out canary's slot: its
        // placeholder input is example 4 of `input(5)`, never used.
        let left_out = c_after(
            vec![None, None, None, None, Some(0)],
            GradientCanary::zero(),
        );
        let included = c_after(
            vec![None, None, None, None, Some(0)],
            GradientCanary::dirac(w, 0, 1e3),
        );
        assert_eq!(left_out, without, "{backend:?}");
        assert_ne!(included, without, "{backend:?}");
    }
}
