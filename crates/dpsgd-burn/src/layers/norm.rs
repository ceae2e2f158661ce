//! DP-aware LayerNorm and GroupNorm (per-example gradients of the affine
//! parameters). Both normalise within one example, so they never mix
//! examples, unlike batch normalisation.

use crate::tape::{self, Record};
use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::{Device, Tensor};

/// Configuration of a [`DpLayerNorm`].
#[derive(Config, Debug)]
pub struct DpLayerNormConfig {
    /// Size of the normalised (last) dimension.
    pub d_model: usize,
    /// Added to the variance for stability.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// `y = (x − μ)/√(σ² + ε) ⊙ γ + β` over the last dimension.
#[derive(Module, Debug)]
pub struct DpLayerNorm {
    /// γ, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// β, `[d_model]`.
    pub beta: Param<Tensor<1>>,
    epsilon: f64,
}

impl DpLayerNormConfig {
    /// Creates the layer on `device` (γ = 1, β = 0).
    pub fn init(&self, device: &Device) -> DpLayerNorm {
        DpLayerNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: Initializer::Zeros.init([self.d_model], device),
            epsilon: self.epsilon,
        }
    }
}

fn normalize<const D: usize>(x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean).div(var.add_scalar(epsilon).sqrt())
}

impl DpLayerNorm {
    /// Normalises `[..., d_model]`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let dims = input.dims();
        let x_hat = normalize(input, self.epsilon);
        let shape = |t: Tensor<1>| -> Tensor<D> {
            let mut s = [1usize; D];
            s[D - 1] = dims[D - 1];
            t.reshape(s)
        };
        if !tape::is_recording() {
            return x_hat * shape(self.gamma.val()) + shape(self.beta.val());
        }
        let (batch, c) = (dims[0], dims[D - 1]);
        let positions: usize = dims[1..D - 1].iter().product();
        let out = x_hat.clone() * shape(self.gamma.val().inner()) + shape(self.beta.val().inner());
        let probe = tape::probe([batch, positions, c], &out.device());
        tape::push(Record::Affine {
            gamma: Some(self.gamma.id),
            beta: Some(self.beta.id),
            normalized: x_hat.inner().reshape([batch, positions, c]),
            probe: probe.clone(),
        });
        (out.reshape([batch, positions, c]) + probe).reshape(dims)
    }
}

/// Configuration of a [`DpGroupNorm`].
#[derive(Config, Debug)]
pub struct DpGroupNormConfig {
    /// Number of groups the channels are split into.
    pub num_groups: usize,
    /// Number of channels (dimension 1 of the input).
    pub num_channels: usize,
    /// Added to the variance for stability.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// Normalises `[B, C, ...]` over each group of `C / num_groups` channels
/// (and all positions), then a per-channel affine map.
#[derive(Module, Debug)]
pub struct DpGroupNorm {
    /// γ, `[C]`.
    pub gamma: Param<Tensor<1>>,
    /// β, `[C]`.
    pub beta: Param<Tensor<1>>,
    num_groups: usize,
    epsilon: f64,
}

impl DpGroupNormConfig {
    /// Creates the layer on `device` (γ = 1, β = 0).
    ///
    /// # Panics
    ///
    /// When `num_channels` is not a multiple of `num_groups`.
    pub fn init(&self, device: &Device) -> DpGroupNorm {
        assert!(
            self.num_groups > 0 && self.num_channels.is_multiple_of(self.num_groups),
            "num_channels ({}) must be a multiple of num_groups ({})",
            self.num_channels,
            self.num_groups
        );
        DpGroupNorm {
            gamma: Initializer::Ones.init([self.num_channels], device),
            beta: Initializer::Zeros.init([self.num_channels], device),
            num_groups: self.num_groups,
            epsilon: self.epsilon,
        }
    }
}

impl DpGroupNorm {
    /// Normalises `[B, C, ...]`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let dims = input.dims();
        let (batch, c) = (dims[0], dims[1]);
        let positions: usize = dims[2..].iter().product();
        let grouped = input.reshape([batch, self.num_groups, (c / self.num_groups) * positions]);
        // [B, C, S]
        let x_hat = normalize(grouped, self.epsilon).reshape([batch, c, positions]);
        let channel = |t: Tensor<1>| t.reshape([1, c, 1]);
        if !tape::is_recording() {
            let out = x_hat * channel(self.gamma.val()) + channel(self.beta.val());
            return out.reshape(dims);
        }
        let out =
            x_hat.clone() * channel(self.gamma.val().inner()) + channel(self.beta.val().inner());
        let probe = tape::probe([batch, positions, c], &out.device());
        tape::push(Record::Affine {
            gamma: Some(self.gamma.id),
            beta: Some(self.beta.id),
            normalized: x_hat.inner().swap_dims(1, 2),
            probe: probe.clone(),
        });
        (out + probe.swap_dims(1, 2)).reshape(dims)
    }
}

/// Configuration of a [`DpInstanceNorm`]: burn's `InstanceNormConfig`.
#[derive(Config, Debug)]
pub struct DpInstanceNormConfig {
    /// Number of channels (dimension 1 of the input).
    pub num_channels: usize,
    /// Added to the variance for stability.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Learnable per-channel γ (ones) and β (zeros).
    #[config(default = true)]
    pub affine: bool,
}

/// Instance normalisation (Ulyanov et al. 2016): each channel of each
/// example normalised over its positions, then an optional per-channel
/// affine map; burn's `InstanceNorm` layout (`gamma`, `beta`, both absent
/// without `affine`).
#[derive(Module, Debug)]
pub struct DpInstanceNorm {
    /// γ, `[C]`.
    pub gamma: Option<Param<Tensor<1>>>,
    /// β, `[C]`.
    pub beta: Option<Param<Tensor<1>>>,
    /// Channels.
    pub num_channels: usize,
    /// Added to the variance.
    pub epsilon: f64,
    /// Whether γ and β exist.
    pub affine: bool,
}

impl DpInstanceNormConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> DpInstanceNorm {
        let param = |init: Initializer| self.affine.then(|| init.init([self.num_channels], device));
        DpInstanceNorm {
            gamma: param(Initializer::Ones),
            beta: param(Initializer::Zeros),
            num_channels: self.num_channels,
            epsilon: self.epsilon,
            affine: self.affine,
        }
    }
}

impl DpInstanceNorm {
    /// Normalises `[B, C, ...]`.
    ///
    /// # Panics
    ///
    /// When dimension 1 is not `num_channels`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let dims = input.dims();
        let (batch, c) = (dims[0], dims[1]);
        assert_eq!(c, self.num_channels, "DpInstanceNorm: channels");
        let positions: usize = dims[2..].iter().product();
        let x_hat = normalize(input.reshape([batch, c, positions]), self.epsilon);
        let channel = |t: Tensor<1>| t.reshape([1, c, 1]);
        let recording = tape::is_recording() && (self.gamma.is_some() || self.beta.is_some());
        let value = |p: &Param<Tensor<1>>| {
            if recording { p.val().inner() } else { p.val() }
        };
        let mut out = x_hat.clone();
        if let Some(g) = &self.gamma {
            out = out * channel(value(g));
        }
        if let Some(b) = &self.beta {
            out = out + channel(value(b));
        }
        if !recording {
            return out.reshape(dims);
        }
        let probe = tape::probe([batch, positions, c], &out.device());
        tape::push(Record::Affine {
            gamma: self.gamma.as_ref().map(|g| g.id),
            beta: self.beta.as_ref().map(|b| b.id),
            normalized: x_hat.inner().swap_dims(1, 2),
            probe: probe.clone(),
        });
        (out + probe.swap_dims(1, 2)).reshape(dims)
    }
}

/// Configuration of a [`DpRmsNorm`]: burn's `RmsNormConfig`.
#[derive(Config, Debug)]
pub struct DpRmsNormConfig {
    /// Size of the normalised (last) dimension.
    pub d_model: usize,
    /// Added to the mean square for stability.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// Root-mean-square normalisation (Zhang & Sennrich 2019),
/// `y = x / √(mean(x²) + ε) ⊙ γ` over the last dimension; burn's `RmsNorm`
/// layout (`gamma`).
#[derive(Module, Debug)]
pub struct DpRmsNorm {
    /// γ, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// Added to the mean square.
    pub epsilon: f64,
}

impl DpRmsNormConfig {
    /// Creates the layer on `device` (γ = 1).
    pub fn init(&self, device: &Device) -> DpRmsNorm {
        DpRmsNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            epsilon: self.epsilon,
        }
    }
}

impl DpRmsNorm {
    /// Normalises `[..., d_model]`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let dims = input.dims();
        let rms = input
            .clone()
            .powi_scalar(2)
            .mean_dim(D - 1)
            .add_scalar(self.epsilon)
            .sqrt();
        let x_hat = input / rms;
        let shape = |t: Tensor<1>| -> Tensor<D> {
            let mut s = [1usize; D];
            s[D - 1] = dims[D - 1];
            t.reshape(s)
        };
        if !tape::is_recording() {
            return x_hat * shape(self.gamma.val());
        }
        let (batch, c) = (dims[0], dims[D - 1]);
        let positions: usize = dims[1..D - 1].iter().product();
        let out = x_hat.clone() * shape(self.gamma.val().inner());
        let probe = tape::probe([batch, positions, c], &out.device());
        tape::push(Record::Affine {
            gamma: Some(self.gamma.id),
            beta: None,
            normalized: x_hat.inner().reshape([batch, positions, c]),
            probe: probe.clone(),
        });
        (out.reshape([batch, positions, c]) + probe).reshape(dims)
    }
}
