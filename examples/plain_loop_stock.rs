//! A plain burn training loop, no privacy: an MLP on the UCI digits with
//! burn's `Linear`, `Relu`, `CrossEntropyLoss` and Adam, shuffled batches.
//! `examples/plain_loop.rs` is the same loop made private; `diff` the two
//! files to see what it takes.
//!
//! ```sh
//! cargo run --release --example plain_loop_stock
//! ```

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use dpsgd::data::{Dataset, Scaling};
use dpsgd::rand::{SeedableRng, seq::SliceRandom};
use dpsgd::rand_chacha::ChaCha20Rng;

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
    let mut optimizer = AdamConfig::new().init();
    let mut rng = ChaCha20Rng::from_os_rng();
    for _ in 0..epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        for indices in order.chunks(64) {
            let (x, y) = dpsgd::batch(&train, indices, &device);
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(1e-2, model, grads);
        }
    }
    let accuracy = accuracy(&model, &test, &device);
    println!("test accuracy {:.2}%", 100.0 * accuracy);
    Ok(accuracy)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(30).map(|_| ())
}
