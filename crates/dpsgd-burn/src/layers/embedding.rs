//! DP-aware embedding table.

use crate::tape::{self, Record};
use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor};

/// Configuration of a [`DpEmbedding`] (as burn's `EmbeddingConfig`).
#[derive(Config, Debug)]
pub struct DpEmbeddingConfig {
    /// Vocabulary size.
    pub n_embedding: usize,
    /// Embedding dimension.
    pub d_model: usize,
    /// Initialisation (burn's default: N(0, 1)).
    #[config(default = "Initializer::Normal{mean:0.0, std:1.0}")]
    pub initializer: Initializer,
}

/// Looks up rows of `weight: [n_embedding, d_model]` for `[B, S]` token ids;
/// per-example gradients in the DP engine's fast path (the norm of a
/// scattered gradient is a Gram sum over equal token ids).
#[derive(Module, Debug)]
pub struct DpEmbedding {
    /// `[n_embedding, d_model]`.
    pub weight: Param<Tensor<2>>,
}

impl DpEmbeddingConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> DpEmbedding {
        DpEmbedding {
            weight: self.initializer.init_with(
                [self.n_embedding, self.d_model],
                None,
                None,
                device,
            ),
        }
    }
}

impl DpEmbedding {
    /// `[B, S]` ids → `[B, S, d_model]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        if !tape::is_recording() {
            return embedding(self.weight.val(), ids);
        }
        let [vocab, d] = self.weight.val().dims();
        let [batch, seq] = ids.dims();
        let out = embedding(self.weight.val().inner(), ids.clone());
        let probe = tape::probe([batch, seq, d], &out.device());
        tape::push(Record::Embedding {
            weight: self.weight.id,
            ids,
            vocab,
            probe: probe.clone(),
        });
        out.autodiff() + probe
    }
}
