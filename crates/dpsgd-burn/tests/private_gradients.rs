//! `PrivacyEngine::private_gradients` (the release without the update, for
//! training loops whose own optimizer applies it, such as burn-train's
//! `Learner`) is the same mechanism as `PrivacyEngine::step`: the same
//! seeded run gives the same parameters bit for bit and the same ε, empty
//! Poisson batches included, and its batches count as Poisson-sampled.

mod common;

use burn::optim::SgdConfig;
use burn::tensor::{Device, Tensor};
use common::{Net, fixed_linear, net_data as data, pick};
use dpsgd_burn::{DpSgdConfig, PoissonSampler, PrivacyEngine};
use dpsgd_core::parameter_values as values;

/// The model, initialised from explicit values (no shared RNG).
fn net(device: &Device) -> Net {
    Net {
        fc1: fixed_linear(6, 8, 0.0, 0.0, device),
        fc2: fixed_linear(8, 3, 3.0, 0.0, device),
    }
}

fn engine(n: usize, batch: usize, physical: Option<usize>) -> PrivacyEngine {
    let config = DpSgdConfig::new(0.5)
        .with_noise_multiplier(1.0)
        .with_seed(11);
    let config = match physical {
        Some(m) => config.with_max_physical_batch_size(m),
        None => config,
    };
    config
        .init(
            SgdConfig::new().init(),
            PoissonSampler::new(n, batch).unwrap(),
        )
        .unwrap()
}

const LR: f64 = 0.1;

/// `steps` steps through `PrivacyEngine::step`.
fn by_step(
    n: usize,
    batch: usize,
    steps: usize,
    physical: Option<usize>,
) -> (Vec<f32>, PrivacyEngine) {
    let device = Device::default().autodiff();
    let all = data(n, &device);
    let mut model = net(&device);
    let mut pe = engine(n, batch, physical);
    for _ in 0..steps {
        let b = pick(&all, &pe.sample_batch());
        model = pe
            .step(LR, model, &b, |m: &Net, b| m.losses(b))
            .map_err(|r| r.error)
            .unwrap();
    }
    (values(&model), pe)
}

/// The same steps through `private_gradients` and an optimizer of the
/// caller's; returns how many batches were empty.
fn by_release(
    n: usize,
    batch: usize,
    steps: usize,
    physical: Option<usize>,
) -> (Vec<f32>, PrivacyEngine, usize) {
    let device = Device::default().autodiff();
    let all = data(n, &device);
    let mut model = net(&device);
    let mut pe = engine(n, batch, physical);
    let mut optimizer = SgdConfig::new().init();
    let mut empty = 0;
    for _ in 0..steps {
        let indices = pe.sample_batch();
        assert_eq!(pe.pending_batch(), Some(indices.len()));
        let grads = if indices.is_empty() {
            empty += 1;
            pe.private_gradients_of_empty_batch(&model).unwrap()
        } else {
            let b = pick(&all, &indices);
            pe.private_gradients(&model, &b, |m: &Net, b| m.losses(b))
                .unwrap()
        };
        assert_eq!(pe.pending_batch(), None);
        model = optimizer.step(LR, model, grads);
    }
    (values(&model), pe, empty)
}

#[test]
fn the_release_is_the_step_bit_for_bit() {
    let (stepped, a) = by_step(64, 16, 6, None);
    let (released, b, _) = by_release(64, 16, 6, None);
    assert_eq!(stepped, released);
    assert_eq!(a.epsilon().unwrap(), b.epsilon().unwrap());
    assert_eq!(b.steps(), 6);
    assert_eq!(b.report().unwrap().sampler, "poisson");
}

#[test]
fn empty_poisson_batches_are_released_and_accounted() {
    // q = 1/64: most batches are empty.
    let (stepped, a) = by_step(64, 1, 12, None);
    let (released, b, empty) = by_release(64, 1, 12, None);
    assert!(
        empty > 0,
        "the seeded draw has no empty batch; pick another"
    );
    assert_eq!(stepped, released);
    assert_eq!(b.steps(), 12);
    assert_eq!(a.epsilon().unwrap(), b.epsilon().unwrap());
    assert_eq!(b.report().unwrap().sampler, "poisson");
    assert_eq!(
        b.last_step().map(|s| s.batch_size),
        a.last_step().map(|s| s.batch_size)
    );
}

#[test]
fn physical_chunks_release_the_same_sum() {
    let (stepped, _) = by_step(64, 24, 4, Some(5));
    let (released, b, _) = by_release(64, 24, 4, Some(5));
    assert_eq!(stepped, released);
    assert!(b.last_step().unwrap().chunks > 1);
}

#[test]
fn a_batch_the_sampler_did_not_draw_is_reported() {
    let device = Device::default().autodiff();
    let all = data(32, &device);
    let model = net(&device);
    let mut pe = engine(32, 8, None);
    let b = pick(&all, &[0, 1, 2]);
    pe.private_gradients(&model, &b, |m: &Net, b| m.losses(b))
        .unwrap();
    assert_ne!(pe.report().unwrap().sampler, "poisson");
}

#[test]
fn past_the_budget_nothing_is_released_or_accounted() {
    let device = Device::default().autodiff();
    let all = data(64, &device);
    let model = net(&device);
    let mut pe = DpSgdConfig::new(0.5)
        .with_target_epsilon(2.0, 1e-5, 1)
        .with_seed(3)
        .init(
            SgdConfig::new().init(),
            PoissonSampler::new(64, 16).unwrap(),
        )
        .unwrap();
    let planned = pe.planned_steps().unwrap();
    assert_eq!(planned, 4);
    for _ in 0..planned {
        let b = pick(&all, &pe.sample_batch());
        pe.private_gradients(&model, &b, |m: &Net, b| m.losses(b))
            .unwrap();
    }
    let spent = pe.epsilon().unwrap();
    assert!(spent <= 2.0);
    let b = pick(&all, &pe.sample_batch());
    let refused = pe.private_gradients(&model, &b, |m: &Net, b| m.losses(b));
    assert!(matches!(
        refused,
        Err(dpsgd_burn::Error::BudgetExhausted { .. })
    ));
    assert!(matches!(
        pe.private_gradients_of_empty_batch(&model),
        Err(dpsgd_burn::Error::BudgetExhausted { .. })
    ));
    assert_eq!(pe.steps(), planned);
    assert_eq!(pe.epsilon().unwrap(), spent);
    assert_eq!(pe.pending_batch(), None, "the refused draw is used up");
}

/// A batch struct with an optional field, through `impl_example_batch!`.
#[derive(Clone, Debug)]
struct Weighted {
    weights: Option<Tensor<1>>,
    x: Tensor<2>,
}
dpsgd_burn::impl_example_batch!(Weighted { weights, x });

#[test]
fn a_batch_struct_counts_its_examples_whatever_field_is_none() {
    use dpsgd_burn::ExampleBatch;
    let device = Device::default();
    let none = Weighted {
        weights: None,
        x: Tensor::zeros([5, 3], &device),
    };
    assert_eq!(none.num_examples(), 5);
    assert_eq!(none.slice_examples(1, 4).x.dims(), [3, 3]);
    let some = Weighted {
        weights: Some(Tensor::ones([5], &device)),
        ..none.clone()
    };
    assert_eq!(some.slice_examples(2, 5).weights.unwrap().dims(), [3]);
    let bad = Weighted {
        weights: Some(Tensor::ones([4], &device)),
        ..none
    };
    assert!(std::panic::catch_unwind(|| bad.num_examples()).is_err());
}
