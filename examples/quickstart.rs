//! DP-SGD on burn in one loop: an MLP on the embedded UCI digits at ε = 3.
//! Run: `cargo run --release --example quickstart`
use burn::optim::AdamConfig;
use burn::tensor::Device;
use dpsgd::accountant::{AccountantKind, calibrate_noise};
use dpsgd::burn::loss::cross_entropy_per_example;
use dpsgd::burn::models::{Classifier, Mlp};
use dpsgd::burn::{GradientEngine, PoissonSampler};
use dpsgd::core::{Clipping, DpOptimizer, DpSettings};
use dpsgd::data::Scaling;
use rand::SeedableRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    let (mut train, mut test) = dpsgd::data::digits().split(0.2, 0)?;
    train.apply(&Scaling::Divide(16.0));
    test.apply(&Scaling::Divide(16.0));

    // Poisson sampling with an expected batch of 64; σ for ε = 3 over 30 epochs.
    let sampler = PoissonSampler::new(train.len(), 64)?;
    let steps = 30 * sampler.steps_per_epoch();
    let (q, delta) = (sampler.sample_rate(), 1e-4);
    let sigma = calibrate_noise(AccountantKind::Rdp, q, steps, delta, 3.0)?.noise_multiplier;
    let clipping = Clipping::flat(1.0)?;
    let settings = DpSettings {
        noise_multiplier: sigma,
        clipping: clipping.clone(),
        sample_rate: q,
        dataset_size: train.len(),
        accountant: AccountantKind::Rdp,
        budget: Some((3.0, delta)), // enforced: a step past it is refused
    };
    let mut dp = DpOptimizer::new(AdamConfig::new().init(), settings)?;
    let mut engine = GradientEngine::new(clipping);
    let mut model = Mlp::new(&[64, 128, 10], &device);
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng(); // secret sampling
    let loss = |m: &Mlp,
                b: &(
        burn::tensor::Tensor<4>,
        burn::tensor::Tensor<1, burn::tensor::Int>,
    )| { cross_entropy_per_example(m.logits(b.0.clone()), b.1.clone()) };

    for _ in 0..steps {
        let batch = dpsgd::batch(&train, &sampler.sample(&mut rng), &device);
        let clipped = engine.clipped_gradients(&model, &batch, loss)?; // Σ clip(∇ℓ_i)
        model = dp.step(2e-3, model, clipped)?; // + N(0, σ²C²), Adam, accounting
    }
    let accuracy = dpsgd::accuracy(&model, &test, &device);
    println!(
        "σ = {sigma:.3}, {steps} steps: test accuracy {:.1}%, ε = {:.2} at δ = {delta}",
        100.0 * accuracy,
        dp.epsilon(delta)?
    );
    Ok(())
}
