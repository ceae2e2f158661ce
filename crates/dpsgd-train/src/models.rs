//! Ready-made models built from DP-aware layers: the ones DP-SGD papers and
//! peers benchmark on, and the CLI trains.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};
use dpsgd_burn::layers::{DpConv2d, DpConv2dConfig, DpLinear, DpLinearConfig};

/// The non-linearity between layers.
///
/// Bounded activations suit DP-SGD: Papernot et al. (2021, "Tempered
/// sigmoid activations for deep learning with differential privacy") show
/// that `tanh` keeps activations, and so per-example gradient norms, from
/// exploding, which loses less signal to clipping than ReLU does (98.1% vs
/// 96.6% on MNIST at ε ≈ 2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(x, 0)`.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
}

impl Activation {
    /// Applies the activation element-wise.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Relu => relu(x),
            Self::Tanh => tanh(x),
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "relu" => Ok(Self::Relu),
            "tanh" => Ok(Self::Tanh),
            _ => Err(format!(
                "`{s}` is not an activation (expected relu or tanh)"
            )),
        }
    }
}

/// A multi-layer perceptron with an activation (ReLU by default) between
/// layers and none after the last; `sizes = [784, 512, 256, 10]` is the
/// benchmark MLP, two sizes is logistic regression.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<DpLinear>,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    dropout: f64,
}

impl Mlp {
    /// Layers `sizes[0] → sizes[1] → …`.
    ///
    /// # Panics
    ///
    /// With fewer than two sizes.
    pub fn new(sizes: &[usize], device: &Device) -> Self {
        assert!(sizes.len() >= 2, "an MLP needs input and output sizes");
        Self {
            layers: sizes
                .windows(2)
                .map(|w| DpLinearConfig::new(w[0], w[1]).init(device))
                .collect(),
            activation: Activation::Relu,
            dropout: 0.0,
        }
    }

    /// The same network with dropout of probability `p` after each hidden
    /// layer's activation, in training only (on an autodiff device; the
    /// evaluation copies from `valid()` are deterministic).
    ///
    /// # Panics
    ///
    /// For `p ∉ [0, 1)`.
    #[must_use]
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = dropout_probability(p);
        self
    }

    /// The same network with `activation` between layers.
    #[must_use]
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// `[B, features]` (or any shape with B first, flattened) → logits `[B, classes]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<2> {
        let batch = x.dims()[0];
        let mut h: Tensor<2> = x.reshape([batch as i32, -1]);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = dropout(self.activation.apply(h), self.dropout);
            }
        }
        h
    }
}

/// A small convolutional network for `[B, 1, H, W]` images.
///
/// For 28×28 inputs it is the classic DP MNIST CNN (Papernot et al. 2021,
/// Opacus's example): Conv2d 1→16 k8 s2 p3, ReLU, MaxPool 2 s1, Conv2d
/// 16→32 k4 s2, ReLU, MaxPool 2 s1, Linear 512→32, ReLU, Linear 32→classes.
/// For small images (such as the 8×8 UCI digits) it uses 3×3 kernels with
/// padding 1 and stride-2 pooling instead. [`Cnn::with_activation`] swaps
/// ReLU for `tanh`, the published best choice under DP.
#[derive(Module, Debug)]
pub struct Cnn {
    conv1: DpConv2d,
    conv2: DpConv2d,
    fc1: DpLinear,
    fc2: DpLinear,
    pool_stride: usize,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    dropout: f64,
}

impl Cnn {
    /// The smallest image side the network takes: two stride-2 poolings
    /// leave nothing of smaller images.
    pub const MIN_SIZE: usize = 4;

    /// The same network with its two convolutions frozen (burn's
    /// `freeze`): fine-tuning trains the fully connected head only, and
    /// the DP engine neither clips, noises nor releases the frozen
    /// parameters.
    #[must_use]
    pub fn freeze_convolutions(mut self) -> Self {
        self.conv1 = self.conv1.freeze();
        self.conv2 = self.conv2.freeze();
        self
    }

    /// A CNN for `[channels, height, width]` inputs: [`Cnn::new`] for one
    /// channel; for several (feature maps such as ScatterNet's 81 × 7 × 7)
    /// the CNN Tramèr & Boneh (2021) put on ScatterNet features: Conv2d
    /// C→16 k3 s2 p1, Conv2d 16→32 k3 p1, no pooling, Linear →32,
    /// Linear 32→classes.
    ///
    /// # Panics
    ///
    /// As [`Cnn::new`] for one channel; for several, a side below 2.
    pub fn for_input(
        [channels, height, width]: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Self {
        if channels <= 1 {
            return Self::new(height, width, classes, device);
        }
        assert!(
            height >= 2 && width >= 2,
            "Cnn needs feature maps of at least 2×2, got {height}×{width}"
        );
        let conv1 = DpConv2dConfig::new([channels, 16], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        let conv2 = DpConv2dConfig::new([16, 32], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        let (h, w) = ((height - 1) / 2 + 1, (width - 1) / 2 + 1);
        Self {
            conv1,
            conv2,
            fc1: DpLinearConfig::new(32 * h * w, 32).init(device),
            fc2: DpLinearConfig::new(32, classes).init(device),
            pool_stride: 0,
            activation: Activation::Relu,
            dropout: 0.0,
        }
    }

    /// A CNN for `[1, height, width]` images and `classes` outputs.
    ///
    /// # Panics
    ///
    /// When `height` or `width` is below [`Cnn::MIN_SIZE`]; check first.
    pub fn new(height: usize, width: usize, classes: usize, device: &Device) -> Self {
        assert!(
            height >= Self::MIN_SIZE && width >= Self::MIN_SIZE,
            "Cnn needs images of at least {0}×{0}, got {height}×{width}",
            Self::MIN_SIZE
        );
        if height >= 28 && width >= 28 {
            let conv1 = DpConv2dConfig::new([1, 16], [8, 8])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                .init(device);
            let conv2 = DpConv2dConfig::new([16, 32], [4, 4])
                .with_stride([2, 2])
                .init(device);
            // Spatial size: conv1 (k8 s2 p3), pool (2, s1), conv2 (k4 s2), pool:
            // 28 → 14 → 13 → 5 → 4, so fc1 sees 32·4·4 = 512 features.
            let size = |n: usize| {
                let n = (n + 2 * 3 - 8) / 2 + 1 - 1;
                (n - 4) / 2 + 1 - 1
            };
            let (h, w) = (size(height), size(width));
            Self {
                conv1,
                conv2,
                fc1: DpLinearConfig::new(32 * h * w, 32).init(device),
                fc2: DpLinearConfig::new(32, classes).init(device),
                pool_stride: 1,
                activation: Activation::Relu,
                dropout: 0.0,
            }
        } else {
            let conv1 = DpConv2dConfig::new([1, 16], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device);
            let conv2 = DpConv2dConfig::new([16, 32], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device);
            let (h, w) = (height / 4, width / 4);
            Self {
                conv1,
                conv2,
                fc1: DpLinearConfig::new(32 * h * w, 32).init(device),
                fc2: DpLinearConfig::new(32, classes).init(device),
                pool_stride: 2,
                activation: Activation::Relu,
                dropout: 0.0,
            }
        }
    }

    /// The same network with `activation` after each hidden layer.
    #[must_use]
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// The same network with dropout of probability `p` before the last
    /// layer, in training only (as [`Mlp::with_dropout`]).
    ///
    /// # Panics
    ///
    /// For `p ∉ [0, 1)`.
    #[must_use]
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = dropout_probability(p);
        self
    }

    /// The same network with weight standardisation in both convolutions
    /// (or without).
    #[must_use]
    pub fn with_weight_standardization(mut self, on: bool) -> Self {
        self.conv1 = self.conv1.with_weight_standardization(on);
        self.conv2 = self.conv2.with_weight_standardization(on);
        self
    }

    /// `[B, C, H, W]` → logits `[B, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let act = self.activation;
        let pool = |h: Tensor<4>| {
            if self.pool_stride == 0 {
                h // no pooling (feature-map inputs)
            } else {
                let options = MaxPoolOptions::new([2, 2]).with_stride([self.pool_stride; 2]);
                max_pool2d(h, options)
            }
        };
        let h = pool(act.apply(self.conv1.forward(x)));
        let h = pool(act.apply(self.conv2.forward(h)));
        let batch = h.dims()[0];
        let h: Tensor<2> = h.reshape([batch as i32, -1]);
        self.fc2
            .forward(dropout(act.apply(self.fc1.forward(h)), self.dropout))
    }
}

/// `p`, checked to be a dropout probability.
///
/// # Panics
///
/// For `p ∉ [0, 1)`.
fn dropout_probability(p: f64) -> f64 {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout must be in [0, 1), not {p}"
    );
    p
}

/// Inverted dropout: zero each activation with probability `p` and scale
/// the rest by `1/(1 − p)`, on an autodiff device only (training); masks
/// come from burn's device RNG (they are not privacy noise).
fn dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    if p == 0.0 || !x.device().is_autodiff() {
        return x;
    }
    let keep = 1.0 - p;
    let mask = x.random_like(burn::tensor::Distribution::Bernoulli(keep));
    (x * mask).mul_scalar(1.0 / keep)
}

/// A model that maps a batch of `[B, C, H, W]` inputs (tabular data uses
/// `[B, 1, 1, features]`) to class logits.
pub trait Classifier: Module {
    /// Logits `[B, classes]`.
    fn logits(&self, x: Tensor<4>) -> Tensor<2>;
}

impl Classifier for Mlp {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}

impl Classifier for Cnn {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x)
    }
}
