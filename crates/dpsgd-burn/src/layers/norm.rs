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
        out + probe.reshape(dims)
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
