//! The full DP step: clipping bound, noise scale, empty batches, budget
//! exhaustion, bad input, automatic fallback; on every enabled backend.

mod common;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::SgdConfig;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
use dpsgd_burn::{GradientEngine, PoissonSampler};
use dpsgd_core::{
    ClippedGradients, Clipping, DpOptimizer, DpSettings, Error, GradientMethod, NoiseSource,
    trainable_params,
};

fn input(shape: [usize; 2], device: &Device, scale: f32) -> Tensor<2> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).cos() * scale).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn sq_loss(m: &DpLinear, x: &Tensor<2>) -> Tensor<1> {
    let n = x.dims()[0];
    m.forward(x.clone()).powi_scalar(2).sum_dim(1).reshape([n])
}

fn settings(sigma: f64, c: f64, q: f64, n: usize, budget: Option<(f64, f64)>) -> DpSettings {
    DpSettings {
        noise_multiplier: sigma,
        clipping: Clipping::flat(c).unwrap(),
        sample_rate: q,
        dataset_size: n,
        accountant: Default::default(),
        budget,
    }
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

#[test]
fn should_bound_every_clipped_gradient_by_c() {
    for (backend, device) in devices() {
        let model = DpLinearConfig::new(8, 4).init(&device);
        let c = 0.25;
        let mut engine = GradientEngine::new(Clipping::flat(c).unwrap());
        for i in 0..6 {
            // One example at a time: the clipped sum is that example's clipped gradient.
            let x = input([1, 8], &device, 1.0 + i as f32 * 3.0);
            let got = engine.clipped_gradients(&model, &x, sq_loss).unwrap();
            assert!(
                got.per_example_norms()[0] > c as f32,
                "{backend}: the test needs clipping to bite"
            );
            let norm: f64 = trainable_params(&model)
                .iter()
                .flat_map(|p| to_vec(got.sum(&p.id).unwrap()))
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt();
            assert!(
                norm <= c * (1.0 + 1e-5),
                "{backend}: clipped norm {norm} > C = {c}"
            );
            assert!(
                norm >= c * (1.0 - 1e-4),
                "{backend}: clipped to exactly C: {norm}"
            );
        }
    }
}

#[test]
fn should_add_noise_of_std_sigma_c_over_expected_batch() {
    for (backend, device) in devices() {
        // An empty Poisson batch is a valid step: only noise, accounted.
        let model = DpLinearConfig::new(100, 100).init(&device);
        let (sigma, c, q, n) = (1.3, 2.0, 0.01, 5000);
        let mut dp = DpOptimizer::with_noise(
            SgdConfig::new().init(),
            settings(sigma, c, q, n, None),
            NoiseSource::seeded(42),
        )
        .unwrap();
        let empty = ClippedGradients::empty(dp.clipping().clone());
        let grads = dp.privatize(&model, empty).unwrap();
        assert_eq!(dp.steps(), 1, "{backend}: the empty step is accounted");
        let w = values(grads.get::<2>(model.weight.id).unwrap());
        let expected = sigma * c / (q * n as f64);
        let count = w.len() as f64;
        let mean = w.iter().map(|&x| f64::from(x)).sum::<f64>() / count;
        let std = (w
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (count - 1.0))
            .sqrt();
        // 10 000 draws: the sample std's standard error is std/√(2n) ≈ 0.71%;
        // a 5-sigma band (false alarm ≈ 6e-7, fixed seed) is ±3.5%.
        assert!(
            (std / expected - 1.0).abs() < 0.035,
            "{backend}: std {std} vs {expected}"
        );
        assert!(
            mean.abs() < 5.0 * expected / count.sqrt(),
            "{backend}: mean {mean}"
        );
        // The bias gets noise too.
        assert!(grads.get::<1>(model.bias.as_ref().unwrap().id).is_some());
    }
}

#[test]
fn should_refuse_steps_past_the_budget_and_leave_the_model_untouched() {
    for (backend, device) in devices() {
        let mut model = DpLinearConfig::new(4, 2).init(&device);
        let sampler = PoissonSampler::new(100, 10).unwrap();
        // σ = 2, q = 0.1: a few dozen steps exhaust ε = 1.5.
        let mut dp = DpOptimizer::with_noise(
            SgdConfig::new().init(),
            settings(2.0, 1.0, sampler.sample_rate(), 100, Some((1.5, 1e-5))),
            NoiseSource::seeded(1),
        )
        .unwrap();
        let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
        let x = input([3, 4], &device, 1.0);
        let mut taken = 0;
        loop {
            let clipped = engine.clipped_gradients(&model, &x, sq_loss).unwrap();
            let before = values(model.weight.val());
            match dp.step(0.1, model, clipped) {
                Ok(m) => {
                    model = m;
                    taken += 1;
                    assert!(dp.epsilon(1e-5).unwrap() <= 1.5);
                }
                Err(rejected) => {
                    assert!(
                        matches!(rejected.error, Error::BudgetExhausted { budget, .. } if budget == 1.5),
                        "{backend}: {}",
                        rejected.error
                    );
                    assert_eq!(
                        values(rejected.model.weight.val()),
                        before,
                        "{backend}: model changed"
                    );
                    assert_eq!(
                        dp.steps(),
                        taken,
                        "{backend}: the refused step was recorded"
                    );
                    break;
                }
            }
            assert!(taken < 1000, "{backend}: the budget never ran out");
        }
        let allowed = dpsgd_core::accountant::max_steps(
            dpsgd_core::accountant::AccountantKind::Rdp,
            0.1,
            2.0,
            1e-5,
            1.5,
        )
        .unwrap();
        assert!(allowed > 0);
        assert_eq!(
            taken, allowed,
            "{backend}: every step that fits is taken, no more"
        );
    }
}

#[test]
fn should_drop_nan_losses_and_reject_unreduced_shapes() {
    for (backend, device) in devices() {
        let model = DpLinearConfig::new(4, 2).init(&device);
        let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
        let x = input([3, 4], &device, 1.0);
        // A NaN loss is no reason to fail the step (whether a record makes
        // its loss NaN must not decide the run): its example adds zero.
        let nan = |m: &DpLinear, x: &Tensor<2>| sq_loss(m, x).div_scalar(0.0).mul_scalar(0.0);
        let got = engine.clipped_gradients(&model, &x, nan).unwrap();
        assert_eq!((got.dropped(), got.batch_size()), (3, 3), "{backend}");
        assert!(
            got.sum(&model.weight.id).is_none(),
            "{backend}: nothing summed"
        );
        let mean = |m: &DpLinear, x: &Tensor<2>| sq_loss(m, x).mean();
        assert!(
            matches!(
                engine.clipped_gradients(&model, &x, mean),
                Err(Error::Shape(_))
            ),
            "{backend}"
        );
        let inf_input = input([3, 4], &device, 1.0).div_scalar(0.0);
        let got = engine
            .clipped_gradients(&model, &inf_input, sq_loss)
            .unwrap();
        assert_eq!(got.dropped(), 3, "{backend}");
    }
}

#[derive(Module, Debug)]
struct Mixed {
    dp: DpLinear,
    plain: Linear,
}

impl Mixed {
    /// A DP-aware layer, then a plain burn one (not covered by the fast path).
    fn new(device: &Device) -> Self {
        Self {
            dp: DpLinearConfig::new(5, 4).init(device),
            plain: LinearConfig::new(4, 2).init(device),
        }
    }

    /// The squared outputs' sum per example.
    fn loss(&self, x: &Tensor<2>) -> Tensor<1> {
        let n = x.dims()[0];
        self.plain
            .forward(self.dp.forward(x.clone()))
            .powi_scalar(2)
            .sum_dim(1)
            .reshape([n])
    }
}

/// A model the fast path covers only in part, in a batch a budget would
/// split: the measuring forward pass finds the gap, so a fresh engine (a
/// resumed run, a data-parallel worker's copy) takes the fallback in one
/// pass, as a warm one does, bit for bit alike.
#[test]
fn should_split_a_partly_covered_model_as_a_warm_engine_does() {
    for (backend, device) in devices() {
        let model = Mixed::new(&device);
        let x = input([100, 5], &device, 1.0);
        let loss = Mixed::loss;
        let tiny = dpsgd_burn::PassSize::Budget(1.try_into().unwrap());
        let sums = |engine: &mut GradientEngine| {
            let got = engine.clipped_gradients(&model, &x, loss).unwrap();
            assert!(
                matches!(got.method(), GradientMethod::Fallback { .. }),
                "{backend}"
            );
            assert_eq!(engine.last_passes(), 1, "{backend}");
            let mut all: Vec<f64> = got
                .per_example_norms()
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            for p in trainable_params(&model) {
                all.extend(to_vec(got.sum(&p.id).unwrap()));
            }
            all
        };
        let mut warm = GradientEngine::new(Clipping::flat(0.5).unwrap()).with_pass_size(tiny);
        let first = sums(&mut warm);
        assert_eq!(first, sums(&mut warm), "{backend}: warm");
    }
}

#[test]
fn should_fall_back_automatically_for_other_modules_and_agree_with_the_naive_loop() {
    for (backend, device) in devices() {
        let model = Mixed::new(&device);
        let x = input([4, 5], &device, 1.0);
        let loss = Mixed::loss;
        let mut engine = GradientEngine::new(Clipping::flat(0.5).unwrap());
        let got = engine.clipped_gradients(&model, &x, loss).unwrap();
        match got.method() {
            GradientMethod::Fallback { reason } => {
                assert!(reason.contains("plain.weight"), "{reason}")
            }
            other => panic!("{backend}: expected the fallback, got {other:?}"),
        }
        assert!(engine.fallback_reason().is_some());
        let naive = naive_clipped_sum(&naive_per_example(&model, &x, loss), 0.5);
        for p in trainable_params(&model) {
            assert!(
                rel_err(&to_vec(got.sum(&p.id).unwrap()), &naive[&p.id]) < 1e-4,
                "{backend}: {}",
                p.name()
            );
        }
    }
}

#[test]
fn should_reproduce_a_seeded_run_exactly() {
    for (backend, device) in devices() {
        let run = || {
            let mut model = DpLinearConfig::new(4, 2).init(&device);
            // Same initial weights for both runs.
            model.weight = model
                .weight
                .map(|w| w.zeros_like().add_scalar(0.1).require_grad());
            model.bias = model.bias.map(|b| b.map(|t| t.zeros_like().require_grad()));
            let mut dp = DpOptimizer::with_noise(
                SgdConfig::new().init(),
                settings(1.0, 1.0, 0.1, 100, None),
                NoiseSource::seeded(9),
            )
            .unwrap();
            let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
            for step in 0..3 {
                let x = input([2 + step, 4], &device, 1.0);
                let clipped = engine.clipped_gradients(&model, &x, sq_loss).unwrap();
                model = dp.step(0.5, model, clipped).unwrap();
            }
            assert!(!dp.is_secure());
            let w = values(model.weight.val());
            assert!(w.iter().any(|&x| x != 0.1), "the steps changed the weights");
            w
        };
        assert_eq!(run(), run(), "{backend}");
    }
}
