//! The dense path of a DP step against the non-private step, at batch
//! sizes 64, 256, 1024 and 4096: the MLP 784-512-256-10 (ReLU) of
//! `dpsgd bench step --model mlp`, one step each (per-example clipping by
//! ghost norms and book-keeping, one noise draw, SGD; against burn's
//! backward of the mean loss and SGD). The DP / non-private ratio should not
//! grow with the batch (issue 31); this bench shows it if it does.
//!
//! Run: `cargo bench -p dpsgd-benches --bench dense_step`

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dpsgd_burn::GradientEngine;
use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_core::{Clipping, DpOptimizer, DpSettings};
use std::time::Duration;

#[derive(Module, Debug)]
struct Mlp {
    fc1: DpLinear,
    fc2: DpLinear,
    fc3: DpLinear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self {
            fc1: DpLinearConfig::new(784, 512).init(device),
            fc2: DpLinearConfig::new(512, 256).init(device),
            fc3: DpLinearConfig::new(256, 10).init(device),
        }
    }

    fn losses(&self, (x, y): &(Tensor<2>, Tensor<1, Int>)) -> Tensor<1> {
        let h = relu(self.fc2.forward(relu(self.fc1.forward(x.clone()))));
        cross_entropy_per_example(self.fc3.forward(h), y.clone())
    }
}

/// A seeded MNIST-shaped batch (values from a fixed sine, no RNG).
fn batch(n: usize, device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let x: Vec<f32> = (0..n * 784)
        .map(|i| ((i as f32) * 0.37).sin() * 0.5 + 0.5)
        .collect();
    let y: Vec<i64> = (0..n).map(|i| (i % 10) as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, 784]), device),
        Tensor::from_data(TensorData::new(y, [n]), device),
    )
}

fn dense_step(c: &mut Criterion) {
    let device = Device::default().autodiff();
    let mut group = c.benchmark_group("dense_step");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for n in [64usize, 256, 1024, 4096] {
        let data = batch(n, &device);
        let mut model = Some(Mlp::new(&device));
        let mut sgd = SgdConfig::new().init();
        group.bench_with_input(BenchmarkId::new("non_private", n), &n, |b, _| {
            b.iter(|| {
                let m = model.take().expect("model");
                let grads = GradientsParams::from_grads(m.losses(&data).mean().backward(), &m);
                let m = sgd.step(0.01, m, grads);
                device.sync().expect("sync");
                model = Some(m);
            })
        });
        let clipping = Clipping::flat(1.0).expect("valid");
        let settings = DpSettings {
            noise_multiplier: 1.0,
            clipping: clipping.clone(),
            sample_rate: n as f64 / 60_000.0,
            dataset_size: 60_000,
            accountant: Default::default(),
            budget: None,
        };
        let mut engine = GradientEngine::new(clipping);
        let mut dp = DpOptimizer::new(SgdConfig::new().init(), settings).expect("valid");
        let mut model = Some(Mlp::new(&device));
        group.bench_with_input(BenchmarkId::new("dp", n), &n, |b, _| {
            b.iter(|| {
                let m = model.take().expect("model");
                let clipped = engine
                    .clipped_gradients(&m, &data, |m: &Mlp, b| m.losses(b))
                    .expect("fast path");
                let m = dp
                    .step(0.01, m, clipped)
                    .map_err(|r| r.error)
                    .expect("step");
                device.sync().expect("sync");
                model = Some(m);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dense_step);
criterion_main!(benches);
