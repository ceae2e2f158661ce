//! A stock burn-train program: a small CNN on the UCI digits (8×8 images,
//! 10 classes) trained with burn-train's `SupervisedTraining` — metrics,
//! checkpoints, summary — and NO privacy. `examples/burn_train.rs` is the
//! same program made private; `diff` the two files to see what it takes.
//!
//! ```sh
//! cargo run --release --example burn_train_stock
//! ```

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, InMemDataset};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu, conv::Conv2d, conv::Conv2dConfig};
use burn::optim::AdamConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_train::metric::{AccuracyMetric, LossMetric};
use burn_train::{
    ClassificationOutput, InferenceStep, Learner, LearningResult, SupervisedTraining, TrainOutput,
    TrainStep,
};

#[derive(Module, Debug)]
pub struct Model {
    conv: Conv2d,
    fc: Linear,
    relu: Relu,
}

impl Model {
    pub fn new(device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([1, 16], [3, 3]).init(device),
            fc: LinearConfig::new(16 * 6 * 6, 10).init(device),
            relu: Relu::new(),
        }
    }

    pub fn forward(&self, images: Tensor<3>) -> Tensor<2> {
        let [n, h, w] = images.dims();
        let x = self
            .relu
            .forward(self.conv.forward(images.reshape([n, 1, h, w])));
        self.fc.forward(x.flatten(1, 3))
    }

    pub fn forward_classification(
        &self,
        images: Tensor<3>,
        targets: Tensor<1, Int>,
    ) -> ClassificationOutput {
        let output = self.forward(images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), targets.clone());
        ClassificationOutput::new(loss, output, targets)
    }
}

impl TrainStep for Model {
    type Input = DigitBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: DigitBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_classification(batch.images, batch.targets);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Model {
    type Input = DigitBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: DigitBatch) -> ClassificationOutput {
        self.forward_classification(batch.images, batch.targets)
    }
}

#[derive(Clone, Debug)]
pub struct DigitItem {
    pub pixels: Vec<f32>,
    pub label: u32,
}

#[derive(Clone, Debug)]
pub struct DigitBatch {
    pub images: Tensor<3>,
    pub targets: Tensor<1, Int>,
}

#[derive(Clone, Default)]
pub struct DigitBatcher;

impl Batcher<DigitItem, DigitBatch> for DigitBatcher {
    fn batch(&self, items: Vec<DigitItem>, device: &Device) -> DigitBatch {
        let n = items.len();
        let pixels: Vec<f32> = items.iter().flat_map(|i| i.pixels.clone()).collect();
        let labels: Vec<i64> = items.iter().map(|i| i64::from(i.label)).collect();
        DigitBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 8, 8]), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// The UCI digits (pixels scaled to [0, 1]), split 80/20.
pub fn digits() -> (InMemDataset<DigitItem>, InMemDataset<DigitItem>) {
    let data = dpsgd::data::digits();
    let items = |d: &dpsgd::data::Dataset| {
        let items = (d.features().chunks(64).zip(d.labels()))
            .map(|(p, &label)| DigitItem {
                pixels: p.iter().map(|x| x / 16.0).collect(),
                label,
            })
            .collect();
        InMemDataset::new(items)
    };
    let (train, test) = data.split(0.2, 7).expect("a valid split");
    (items(&train), items(&test))
}

pub fn run(
    artifact_dir: &str,
    epochs: usize,
) -> Result<LearningResult<Model>, Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    let (train, test) = digits();
    let batcher = DigitBatcher;
    let dataloader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(64)
        .shuffle(42)
        .build(train);
    let dataloader_test = DataLoaderBuilder::new(batcher).batch_size(256).build(test);
    let training = SupervisedTraining::new(artifact_dir, dataloader_train, dataloader_test)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_default_checkpointers()
        .num_epochs(epochs)
        .summary();
    let learner = Learner::new(Model::new(&device), AdamConfig::new().init(), 1e-2);
    Ok(training.launch(learner))
}

/// Accuracy of a trained model on the test split.
pub fn test_accuracy(model: &Model) -> f64 {
    let (_, test) = digits();
    let items: Vec<DigitItem> = (0..test.len()).filter_map(|i| test.get(i).ok()).collect();
    let batch = DigitBatcher.batch(items, &model.devices()[0]);
    let predicted = model.forward(batch.images).argmax(1).reshape([-1]);
    let correct = predicted
        .equal(batch.targets)
        .int()
        .sum()
        .into_scalar::<i64>();
    correct as f64 / test.len() as f64
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let result = run("target/burn-train", 10)?;
    println!("test accuracy {:.2}%", 100.0 * test_accuracy(&result.model));
    Ok(())
}
