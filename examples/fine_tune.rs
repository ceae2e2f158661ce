//! DP fine-tuning of a pretrained model: a CNN pretrained without privacy
//! on the MNIST digits 0–4 (the "public" data) is fine-tuned on the digits
//! 5–9 (the "private" data) three ways, from the same pretrained record:
//!
//! 1. DP-SGD at ε (default 3), the convolutions frozen: only the head
//!    trains, is clipped and noised;
//! 2. DP-SGD at ε, every layer trained;
//! 3. without privacy, every layer trained (the utility ceiling).
//!
//! Run: `cargo run --release --example fine_tune -- [EPSILON] [EPOCHS]`
//! (data from `$DPSGD_DATA_DIR/mnist`, default `../shared/data/mnist`).
//! The measured figures are in docs/fine-tuning.md.
use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor};
use dpsgd::accountant::AccountantKind;
use dpsgd::data::{Dataset, Scaling};
use dpsgd::loss::cross_entropy_per_example;
use dpsgd::models::{Activation, Classifier, Cnn};
use dpsgd::{DpSgdConfig, PoissonSampler};
use rand::SeedableRng;
use std::time::Instant;

type Batch = (Tensor<4>, Tensor<1, Int>);

fn loss(m: &Cnn, b: &Batch) -> Tensor<1> {
    cross_entropy_per_example(m.logits(b.0.clone()), b.1.clone())
}

/// The examples whose label is in `labels`.
fn digits(data: &Dataset, labels: std::ops::Range<u32>) -> Dataset {
    let keep: Vec<usize> = (0..data.len())
        .filter(|&i| labels.contains(&data.labels()[i]))
        .collect();
    data.subset(&keep)
}

fn sgd() -> burn::optim::ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .init()
}

/// Ordinary (non-private) training: Poisson batches of 256, SGD.
fn train_plain(mut model: Cnn, data: &Dataset, epochs: usize, lr: f64, device: &Device) -> Cnn {
    let sampler = PoissonSampler::new(data.len(), 256).expect("data larger than a batch");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut optim = sgd();
    for _ in 0..epochs as u64 * sampler.steps_per_epoch() {
        let batch = dpsgd::batch(data, &sampler.sample(&mut rng), device);
        let grads = loss(&model, &batch).mean().backward();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(lr, model, grads);
    }
    model
}

/// DP-SGD at `(epsilon, 1e-5)` over `epochs`: expected batch 512, C = 0.1,
/// SGD with momentum at lr 0.5 (the MNIST recipe). Returns the model and ε.
fn train_dp(
    mut model: Cnn,
    data: &Dataset,
    epsilon: f64,
    epochs: usize,
    device: &Device,
) -> Result<(Cnn, f64), Box<dyn std::error::Error>> {
    let mut privacy = DpSgdConfig::new(0.1)
        .with_accountant(AccountantKind::Pld)
        .with_target_epsilon(epsilon, 1e-5, epochs)
        .with_seed(1)
        .init(sgd(), PoissonSampler::new(data.len(), 512)?)?;
    for _ in 0..privacy.planned_steps().unwrap_or(0) {
        let batch = dpsgd::batch(data, &privacy.sample_batch(), device);
        model = privacy.step(0.5, model, &batch, loss)?;
    }
    Ok((model, privacy.epsilon()?))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let epsilon: f64 = args.next().map_or(Ok(3.0), |a| a.parse())?;
    let epochs: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let (mut train, mut test) = dpsgd::data::read_mnist(&dpsgd::data::data_dir().join("mnist"))?;
    train.apply(&Scaling::Divide(255.0));
    test.apply(&Scaling::Divide(255.0));
    let (public, private, private_test) = (
        digits(&train, 0..5),
        digits(&train, 5..10),
        digits(&test, 5..10),
    );
    let device = Device::flex().autodiff();
    device.seed(1);
    let start = Instant::now();
    let pretrained = train_plain(
        Cnn::new(28, 28, 10, &device).with_activation(Activation::Tanh),
        &public,
        3,
        0.05,
        &device,
    );
    let before = dpsgd::accuracy(&pretrained, &private_test, &device);
    println!(
        "pretrained on {} public images (digits 0–4) in {:.0} s; on the private test set (digits 5–9): {:.2}%",
        public.len(),
        start.elapsed().as_secs_f64(),
        100.0 * before
    );
    let record = pretrained.into_record();
    let fresh = || {
        Cnn::new(28, 28, 10, &device)
            .with_activation(Activation::Tanh)
            .load_record(record.clone())
    };
    let report = |what: &str, model: &Cnn, eps: Option<f64>, t: Instant| {
        println!(
            "{what:<44} test accuracy {:.2}%  {}  ({:.0} s)",
            100.0 * dpsgd::accuracy(model, &private_test, &device),
            eps.map_or_else(|| "no guarantee".to_owned(), |e| format!("ε = {e:.2}")),
            t.elapsed().as_secs_f64()
        );
    };
    println!(
        "fine-tuning on {} private images (digits 5–9), {epochs} epochs:",
        private.len()
    );
    let t = Instant::now();
    let (head, eps) = train_dp(
        fresh().freeze_convolutions(),
        &private,
        epsilon,
        epochs,
        &device,
    )?;
    report(
        "DP-SGD, convolutions frozen (head only)",
        &head,
        Some(eps),
        t,
    );
    let t = Instant::now();
    let (full, eps) = train_dp(fresh(), &private, epsilon, epochs, &device)?;
    report("DP-SGD, every layer", &full, Some(eps), t);
    let t = Instant::now();
    let plain = train_plain(fresh(), &private, epochs, 0.05, &device);
    report("non-private, every layer", &plain, None, t);
    Ok(())
}
