//! DP-aware multi-head attention: burn's `MultiHeadAttention` with its four
//! projections as [`DpLinear`] layers.
//!
//! Attention mixes the *positions* of one example (its softmax runs over the
//! keys of the same sequence) but never two examples, and its only
//! parameters are the query, key, value and output projections. Each
//! projection is a dense layer over `S` positions, so the engine's dense
//! records give their per-example gradients in the one backward pass (Gram
//! ghost norms when `S²·2d ≤ d²`, per-example products otherwise). Padding
//! and attention masks act on the scores, not on the parameters: a masked
//! key's gradient is exactly zero in both the fast path and the naive loop.

use super::linear::{DpLinear, DpLinearConfig};
use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::activation::Gelu;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::activation::{quiet_softmax, softmax};
use burn::tensor::{Bool, Device, Tensor};

/// Configuration of a [`DpMultiHeadAttention`]: the fields and defaults of
/// burn's `MultiHeadAttentionConfig`.
#[derive(Config, Debug)]
pub struct DpMultiHeadAttentionConfig {
    /// Model width `d_model` (a multiple of `n_heads`).
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Dropout on the attention weights (training only).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The score given to masked positions before the softmax.
    #[config(default = -1.0e4)]
    pub min_float: f64,
    /// `exp(x)/(1 + Σ exp(x))` instead of the softmax (lets a head attend to
    /// nothing).
    #[config(default = false)]
    pub quiet_softmax: bool,
    /// Initialisation of the projections (burn's default).
    #[config(
        default = "Initializer::KaimingUniform{gain:0.577_350_269_189_625_8, fan_out_only:false}"
    )]
    pub initializer: Initializer,
    /// Bias in the key projection.
    #[config(default = true)]
    pub key_bias: bool,
    /// Bias in the value projection.
    #[config(default = true)]
    pub value_bias: bool,
    /// Bias in the query projection.
    #[config(default = true)]
    pub query_bias: bool,
    /// Bias in the output projection.
    #[config(default = true)]
    pub output_bias: bool,
}

/// Multi-head attention (Vaswani et al. 2017) whose projections are on the
/// DP engine's fast path. Same parameter paths as burn's
/// `MultiHeadAttention` (`query`, `key`, `value`, `output`, each with
/// `weight: [d_model, d_model]` and `bias`), so its records load into
/// either.
#[derive(Module, Debug)]
pub struct DpMultiHeadAttention {
    /// Query projection.
    pub query: DpLinear,
    /// Key projection.
    pub key: DpLinear,
    /// Value projection.
    pub value: DpLinear,
    /// Output projection.
    pub output: DpLinear,
    /// Dropout on the attention weights.
    pub dropout: Dropout,
    /// Kept for burn's layout (unused by the forward pass, as in burn).
    pub activation: Gelu,
    /// Model width.
    pub d_model: usize,
    /// Heads.
    pub n_heads: usize,
    /// Width of one head, `d_model / n_heads`.
    pub d_k: usize,
    /// Score of masked positions.
    pub min_float: f64,
    /// Whether the quiet softmax is used.
    pub quiet_softmax: bool,
}

/// The inputs of [`DpMultiHeadAttention::forward`]: query, key and value
/// `[B, S, d_model]` and optional masks (`true` = masked).
#[derive(Debug, Clone)]
pub struct DpMhaInput {
    /// `[B, S_q, d_model]`.
    pub query: Tensor<3>,
    /// `[B, S_k, d_model]`.
    pub key: Tensor<3>,
    /// `[B, S_k, d_model]`.
    pub value: Tensor<3>,
    /// Padding mask `[B, S_k]`: `true` marks a padded key position.
    pub mask_pad: Option<Tensor<2, Bool>>,
    /// Attention mask `[B, S_q, S_k]`: `true` forbids attending.
    pub mask_attn: Option<Tensor<3, Bool>>,
}

impl DpMhaInput {
    /// Self-attention: query, key and value are `x`.
    pub fn self_attn(x: Tensor<3>) -> Self {
        Self::new(x.clone(), x.clone(), x)
    }

    /// Attention of `query` over `key`/`value`.
    pub fn new(query: Tensor<3>, key: Tensor<3>, value: Tensor<3>) -> Self {
        Self {
            query,
            key,
            value,
            mask_pad: None,
            mask_attn: None,
        }
    }

    /// With a padding mask `[B, S_k]` (`true` = padded).
    pub fn mask_pad(mut self, mask: Tensor<2, Bool>) -> Self {
        self.mask_pad = Some(mask);
        self
    }

    /// With an attention mask `[B, S_q, S_k]` (`true` = forbidden), e.g. a
    /// causal mask.
    pub fn mask_attn(mut self, mask: Tensor<3, Bool>) -> Self {
        self.mask_attn = Some(mask);
        self
    }
}

/// What [`DpMultiHeadAttention::forward`] returns.
#[derive(Debug, Clone)]
pub struct DpMhaOutput {
    /// Attention weights `[B, heads, S_q, S_k]`.
    pub weights: Tensor<4>,
    /// The attended values after the output projection, `[B, S_q, d_model]`.
    pub context: Tensor<3>,
}

impl DpMultiHeadAttentionConfig {
    /// Creates the layer on `device`.
    ///
    /// # Panics
    ///
    /// When `d_model` is not a positive multiple of `n_heads`.
    pub fn init(&self, device: &Device) -> DpMultiHeadAttention {
        assert!(
            self.n_heads > 0 && self.d_model > 0 && self.d_model.is_multiple_of(self.n_heads),
            "d_model ({}) must be a positive multiple of n_heads ({})",
            self.d_model,
            self.n_heads
        );
        let linear = |bias: bool| {
            DpLinearConfig::new(self.d_model, self.d_model)
                .with_initializer(self.initializer.clone())
                .with_bias(bias)
                .init(device)
        };
        DpMultiHeadAttention {
            query: linear(self.query_bias),
            key: linear(self.key_bias),
            value: linear(self.value_bias),
            output: linear(self.output_bias),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Gelu::new(),
            d_model: self.d_model,
            n_heads: self.n_heads,
            d_k: self.d_model / self.n_heads,
            min_float: self.min_float,
            quiet_softmax: self.quiet_softmax,
        }
    }
}

impl DpMultiHeadAttention {
    /// Attends `input.query` over `input.key`/`input.value` (burn's
    /// computation, scores scaled by `1/√d_k`).
    ///
    /// # Panics
    ///
    /// When a width is not `d_model`, or the batch sizes or key/value
    /// lengths differ.
    pub fn forward(&self, input: DpMhaInput) -> DpMhaOutput {
        let [batch, s_q, d_model] = input.query.dims();
        let [kb, s_k, kd] = input.key.dims();
        assert!(
            d_model == self.d_model && kd == self.d_model,
            "DpMultiHeadAttention: width {d_model}/{kd}, expected {}",
            self.d_model
        );
        assert_eq!(kb, batch, "DpMultiHeadAttention: key batch size");
        assert_eq!(
            input.value.dims(),
            [batch, s_k, self.d_model],
            "DpMultiHeadAttention: value shape"
        );
        let query = self.heads(self.query.forward(input.query));
        let key = self.heads(self.key.forward(input.key));
        let value = self.heads(self.value.forward(input.value));
        let mut scores = query
            .matmul(key.swap_dims(2, 3))
            .div_scalar((self.d_k as f32).sqrt());
        if let Some(mask) = input.mask_pad {
            scores = scores.mask_fill(mask.reshape([batch, 1, 1, s_k]), self.min_float);
        }
        if let Some(mask) = input.mask_attn {
            scores = scores.mask_fill(mask.reshape([batch, 1, s_q, s_k]), self.min_float);
        }
        let weights = if self.quiet_softmax {
            quiet_softmax(scores, 3)
        } else {
            softmax(scores, 3)
        };
        let weights = self.dropout.forward(weights);
        let context =
            weights
                .clone()
                .matmul(value)
                .swap_dims(1, 2)
                .reshape([batch, s_q, self.d_model]);
        DpMhaOutput {
            weights,
            context: self.output.forward(context),
        }
    }

    /// `[B, S, d_model]` → `[B, heads, S, d_k]`.
    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, seq, _] = x.dims();
        x.reshape([batch, seq, self.n_heads, self.d_k])
            .swap_dims(1, 2)
    }
}
