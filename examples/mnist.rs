//! DP-SGD on full MNIST with the classic DP CNN (tanh activations, as in
//! Papernot et al. 2021), at a target ε: the recipe that reaches 98.1% at
//! ε = 3 (mean of four runs, see docs/benchmarks.md) — expected batch 512, C = 0.1, SGD with
//! momentum 0.9 at lr 0.5, 40 epochs.
//!
//! Run: `cargo run --release --example mnist -- [EPSILON] [EPOCHS]`
//! (data from `$DPSGD_DATA_DIR/mnist`, default `../shared/data/mnist`;
//! the standard file names, `.gz` or not).
use burn::optim::SgdConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{Device, Int, Tensor};
use dpsgd::accountant::AccountantKind;
use dpsgd::data::Scaling;
use dpsgd::loss::cross_entropy_per_example;
use dpsgd::models::{Activation, Classifier, Cnn};
use dpsgd::{DpSgdConfig, PoissonSampler};
use std::time::Instant;

type Batch = (Tensor<4>, Tensor<1, Int>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let epsilon: f64 = args.next().map_or(Ok(3.0), |a| a.parse())?;
    let epochs: usize = args.next().map_or(Ok(40), |a| a.parse())?;
    let (mut train, mut test) = dpsgd::data::read_mnist(&dpsgd::data::data_dir().join("mnist"))?;
    train.apply(&Scaling::Divide(255.0));
    test.apply(&Scaling::Divide(255.0));

    let device = Device::flex().autodiff();
    let mut model = Cnn::new(28, 28, 10, &device).with_activation(Activation::Tanh);
    let sampler = PoissonSampler::new(train.len(), 512)?;
    let momentum = MomentumConfig::new().with_momentum(0.9);
    let mut privacy = DpSgdConfig::new(0.1)
        .with_accountant(AccountantKind::Pld)
        .with_target_epsilon(epsilon, 1e-5, epochs)
        .init(
            SgdConfig::new().with_momentum(Some(momentum)).init(),
            sampler,
        )?;
    println!(
        "σ = {:.3} for ε = {epsilon} over {epochs} epochs ({} steps)",
        privacy.noise_multiplier(),
        privacy.planned_steps().unwrap_or(0)
    );
    let loss = |m: &Cnn, b: &Batch| cross_entropy_per_example(m.logits(b.0.clone()), b.1.clone());
    let start = Instant::now();
    let steps_per_epoch = privacy.sampler().steps_per_epoch();
    for step in 1..=privacy.planned_steps().unwrap_or(0) {
        let batch = dpsgd::batch(&train, &privacy.sample_batch(), &device);
        model = privacy.step(0.5, model, &batch, loss)?;
        if step % steps_per_epoch == 0 {
            println!(
                "epoch {:>3}: test accuracy {:.2}%, ε = {:.3}, {:.0} s",
                step / steps_per_epoch,
                100.0 * dpsgd::accuracy(&model, &test, &device),
                privacy.epsilon()?,
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!("{}", serde_json::to_string_pretty(&privacy.report()?)?);
    Ok(())
}
