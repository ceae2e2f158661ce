//! `examples/plain_loop_stock.rs` made private: the same burn loop (an MLP
//! on the UCI digits, Adam) trained with DP-SGD at ε = 3 — Poisson batches,
//! per-example clipping, noise, accounting. `diff` the two files to see what
//! it takes.
//!
//! ```sh
//! cargo run --release --example plain_loop
//! ```

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::{Device, Int, Tensor};
use dpsgd::data::{Dataset, Scaling};
use dpsgd::nn::{Linear, LinearConfig, Relu};
use dpsgd::{DpSgdConfig, PoissonSampler, loss::cross_entropy_per_example};

#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    relu: Relu,
}

impl Mlp {
    pub fn new(device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(64, 128).init(device),
            fc2: LinearConfig::new(128, 10).init(device),
            relu: Relu::new(),
        }
    }

    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = images.flatten(1, 3);
        self.fc2.forward(self.relu.forward(self.fc1.forward(x)))
    }
}

/// Share of `data` the model labels right.
pub fn accuracy(model: &Mlp, data: &Dataset, device: &Device) -> f64 {
    let all: Vec<usize> = (0..data.len()).collect();
    let (x, y) = dpsgd::batch(data, &all, device);
    let predicted = model.forward(x).argmax(1).reshape([-1]);
    let correct = predicted.equal(y).int().sum().into_scalar::<i64>();
    correct as f64 / data.len() as f64
}

/// Trains for `epochs` epochs; returns the test accuracy.
pub fn run(epochs: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    let (mut train, mut test) = dpsgd::data::digits().split(0.2, 0)?;
    train.apply(&Scaling::Divide(16.0));
    test.apply(&Scaling::Divide(16.0));
    let mut model = Mlp::new(&device);
    let sampler = PoissonSampler::new(train.len(), 64)?;
    let config = DpSgdConfig::new(1.0).with_target_epsilon(3.0, 1e-5, epochs);
    let mut privacy = config.init(AdamConfig::new().init(), sampler)?;
    let loss = |m: &Mlp, b: &(Tensor<4>, Tensor<1, Int>)| {
        cross_entropy_per_example(m.forward(b.0.clone()), b.1.clone())
    };
    for _ in 0..privacy.planned_steps().unwrap_or(0) {
        let batch = dpsgd::batch(&train, &privacy.sample_batch(), &device);
        model = privacy.step(1e-2, model, &batch, loss)?;
    }
    let accuracy = accuracy(&model, &test, &device);
    println!("test accuracy {:.2}%", 100.0 * accuracy);
    println!("ε = {:.2} at δ = {:e}", privacy.epsilon()?, privacy.delta());
    Ok(accuracy)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(30).map(|_| ())
}
