//! Sequence classifiers built from the DP-aware attention and recurrent
//! layers: a small transformer encoder and an LSTM, over token ids with a
//! padding mask. Every trainable parameter is in a DP-aware layer, so
//! DP-SGD takes the engine's fast path; they are what `dpsgd bench step
//! --model transformer|lstm` measures.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};
use dpsgd_burn::layers::{
    DpEmbedding, DpEmbeddingConfig, DpLayerNorm, DpLayerNormConfig, DpLinear, DpLinearConfig,
    DpLstm, DpLstmConfig, DpMhaInput, DpMultiHeadAttention, DpMultiHeadAttentionConfig,
};

/// Shape of a [`TextTransformer`] or [`TextLstm`].
#[derive(Config, Debug)]
pub struct TextModelConfig {
    /// Vocabulary size (token ids `0..vocab`).
    pub vocab: usize,
    /// Longest sequence (positions `0..max_len`).
    pub max_len: usize,
    /// Classes.
    pub classes: usize,
    /// Model width (embedding and hidden size).
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads (transformer).
    #[config(default = 4)]
    pub heads: usize,
    /// Encoder layers (transformer).
    #[config(default = 2)]
    pub layers: usize,
    /// Feed-forward width (transformer).
    #[config(default = 256)]
    pub d_ff: usize,
}

/// One post-norm encoder block: self-attention and a GELU feed-forward,
/// each with a residual connection and layer normalisation.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    attention: DpMultiHeadAttention,
    norm1: DpLayerNorm,
    ff1: DpLinear,
    ff2: DpLinear,
    norm2: DpLayerNorm,
}

impl EncoderBlock {
    fn new(c: &TextModelConfig, device: &Device) -> Self {
        Self {
            attention: DpMultiHeadAttentionConfig::new(c.d_model, c.heads)
                .with_dropout(0.0)
                .init(device),
            norm1: DpLayerNormConfig::new(c.d_model).init(device),
            ff1: DpLinearConfig::new(c.d_model, c.d_ff).init(device),
            ff2: DpLinearConfig::new(c.d_ff, c.d_model).init(device),
            norm2: DpLayerNormConfig::new(c.d_model).init(device),
        }
    }

    fn forward(&self, x: Tensor<3>, pad: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let input = DpMhaInput::self_attn(x.clone());
        let input = match pad {
            Some(p) => input.mask_pad(p),
            None => input,
        };
        let h = self
            .norm1
            .forward(x + self.attention.forward(input).context);
        let ff = self
            .ff2
            .forward(dpsgd_burn::layers::gelu(self.ff1.forward(h.clone())));
        self.norm2.forward(h + ff)
    }
}

/// A transformer encoder classifier: token and learned position
/// embeddings, [`TextModelConfig::layers`] encoder blocks, the mean over
/// the real (unpadded) positions, a linear head.
#[derive(Module, Debug)]
pub struct TextTransformer {
    tokens: DpEmbedding,
    positions: DpEmbedding,
    blocks: Vec<EncoderBlock>,
    head: DpLinear,
}

impl TextTransformer {
    /// A randomly initialised model.
    ///
    /// # Panics
    ///
    /// When `d_model` is not a multiple of `heads`.
    pub fn new(c: &TextModelConfig, device: &Device) -> Self {
        Self {
            tokens: DpEmbeddingConfig::new(c.vocab, c.d_model).init(device),
            positions: DpEmbeddingConfig::new(c.max_len, c.d_model).init(device),
            blocks: (0..c.layers)
                .map(|_| EncoderBlock::new(c, device))
                .collect(),
            head: DpLinearConfig::new(c.d_model, c.classes).init(device),
        }
    }

    /// Logits `[B, classes]` of token ids `[B, S]` (`S ≤ max_len`), with an
    /// optional padding mask `[B, S]` (`true` = padding).
    pub fn logits(&self, ids: Tensor<2, Int>, pad: Option<Tensor<2, Bool>>) -> Tensor<2> {
        let [batch, seq] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([batch, seq]);
        let mut h = self.tokens.forward(ids) + self.positions.forward(positions);
        for block in &self.blocks {
            h = block.forward(h, pad.clone());
        }
        self.head.forward(masked_mean(h, pad))
    }
}

/// The mean over the unpadded positions, `[B, S, D]` → `[B, D]`.
fn masked_mean(h: Tensor<3>, pad: Option<Tensor<2, Bool>>) -> Tensor<2> {
    let [batch, seq, d] = h.dims();
    match pad {
        None => h.mean_dim(1).reshape([batch, d]),
        Some(pad) => {
            let keep = pad.bool_not().float().reshape([batch, seq, 1]);
            let count = keep.clone().sum_dim(1).clamp_min(1.0);
            ((h * keep).sum_dim(1) / count).reshape([batch, d])
        }
    }
}

/// An LSTM classifier: token embeddings, one LSTM layer, a linear head on
/// the last real step's hidden state.
#[derive(Module, Debug)]
pub struct TextLstm {
    tokens: DpEmbedding,
    lstm: DpLstm,
    head: DpLinear,
}

impl TextLstm {
    /// A randomly initialised model.
    pub fn new(c: &TextModelConfig, device: &Device) -> Self {
        Self {
            tokens: DpEmbeddingConfig::new(c.vocab, c.d_model).init(device),
            lstm: DpLstmConfig::new(c.d_model, c.d_model, true).init(device),
            head: DpLinearConfig::new(c.d_model, c.classes).init(device),
        }
    }

    /// Logits `[B, classes]` of token ids `[B, S]`, with an optional
    /// padding mask `[B, S]` (`true` = padding, after the real tokens).
    pub fn logits(&self, ids: Tensor<2, Int>, pad: Option<Tensor<2, Bool>>) -> Tensor<2> {
        let (_, (_, hidden)) = self
            .lstm
            .forward_masked(self.tokens.forward(ids), None, pad);
        self.head.forward(hidden)
    }
}
