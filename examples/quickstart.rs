//! DP-SGD on burn in one loop: an MLP on the embedded UCI digits at ε = 3.
//! Run: `cargo run --release --example quickstart`
use burn::optim::AdamConfig;
use burn::tensor::{Device, Int, Tensor};
use dpsgd::data::Scaling;
use dpsgd::loss::cross_entropy_per_example;
use dpsgd::models::{Classifier, Mlp};
use dpsgd::{DpSgdConfig, PoissonSampler, validate_model};

type Batch = (Tensor<4>, Tensor<1, Int>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    let (mut train, mut test) = dpsgd::data::digits().split(0.2, 0)?;
    train.apply(&Scaling::Divide(16.0));
    test.apply(&Scaling::Divide(16.0));

    // Your burn model, built from DP-aware layers (same API as burn's).
    let mut model = Mlp::new(&[64, 128, 10], &device);
    validate_model(&model)?; // rejects batch norm & co.

    // Poisson batches of 128 on average; σ calibrated for ε = 3 over 50 epochs,
    // and the budget enforced: a step past it is refused.
    let epochs = 50;
    let sampler = PoissonSampler::new(train.len(), 128)?;
    let mut privacy = DpSgdConfig::new(1.0) // clip each example's gradient to norm 1
        .with_target_epsilon(3.0, 1e-5, epochs)
        .init(AdamConfig::new().init(), sampler)?;

    // One loss per example: the engine clips each example's gradient.
    let loss = |m: &Mlp, b: &Batch| cross_entropy_per_example(m.logits(b.0.clone()), b.1.clone());
    for _ in 0..privacy.planned_steps().unwrap_or(0) {
        let batch = dpsgd::batch(&train, &privacy.sample_batch(), &device);
        model = privacy.step(1e-2, model, &batch, loss)?; // clip, noise, Adam, account
    }

    let accuracy = dpsgd::accuracy(&model, &test, &device);
    println!(
        "test accuracy {:.1}% at ε = {:.2}, δ = {:e} (σ = {:.2}, {} steps)",
        100.0 * accuracy,
        privacy.epsilon()?,
        privacy.delta(),
        privacy.noise_multiplier(),
        privacy.steps()
    );
    Ok(())
}
