//! The DP-aware layers under **burn's names**: going private is one `use`
//! line for the model. Replace `use burn::nn::{Linear, LinearConfig, Relu}`
//! by `use dpsgd::nn::{Linear, LinearConfig, Relu}` and the model's layers
//! are the [`layers`](crate::layers) twins, whose per-example gradients the
//! engine computes in one backward pass (the fast path). Parameter layouts
//! are burn's, so records load into either.
//!
//! Parameter-free modules (activations, dropout, pooling) are burn's own,
//! re-exported unchanged. The configs take burn's own settings and types —
//! `with_padding(PaddingConfig2d::Same)`, `with_layout(LinearLayout::Row)`
//! — with two limits: the DP convolutions pad symmetrically (asymmetric
//! `Explicit` sizes, and `Same` with an even kernel or a stride above 1,
//! are refused by `init`, naming the setting), and linear layers take
//! burn's default `Row` layout only. A config of burn's own also converts
//! without loss, or is refused naming the setting:
//! `Conv2dConfig::try_from(&burn_config)`.
//!
//! ```
//! use burn::module::Module;
//! use burn::tensor::{Device, Tensor};
//! use dpsgd::nn::{Linear, LinearConfig, Relu};
//!
//! #[derive(Module, Debug)]
//! struct Mlp {
//!     fc1: Linear,
//!     fc2: Linear,
//!     relu: Relu,
//! }
//!
//! let device = Device::flex();
//! let mlp = Mlp {
//!     fc1: LinearConfig::new(4, 8).init(&device),
//!     fc2: LinearConfig::new(8, 2).init(&device),
//!     relu: Relu::new(),
//! };
//! let y = mlp.fc2.forward(mlp.relu.forward(mlp.fc1.forward(Tensor::<2>::ones([3, 4], &device))));
//! assert_eq!(y.dims(), [3, 2]);
//! // burn's own options on the twins' configs, Same padding included…
//! use dpsgd::nn::PaddingConfig2d;
//! let conv = dpsgd::nn::conv::Conv2dConfig::new([1, 8], [3, 3])
//!     .with_padding(PaddingConfig2d::Same)
//!     .init(&device);
//! assert_eq!(conv.forward(Tensor::ones([2, 1, 5, 5], &device)).dims(), [2, 8, 5, 5]);
//! // …and burn's own configs convert.
//! let burn_conv = burn::nn::conv::Conv2dConfig::new([1, 8], [3, 3])
//!     .with_padding(PaddingConfig2d::Same);
//! let conv = dpsgd::nn::conv::Conv2dConfig::try_from(&burn_conv)?;
//! assert_eq!(conv.padding, PaddingConfig2d::Same);
//! # Ok::<(), dpsgd::optim::Error>(())
//! ```

pub use burn::nn::{
    Dropout, DropoutConfig, Gelu, Initializer, LeakyRelu, LeakyReluConfig, LinearLayout,
    PaddingConfig1d, PaddingConfig2d, Relu, Sigmoid, Tanh,
};
pub use dpsgd_burn::layers::{
    DpEmbedding as Embedding, DpEmbeddingConfig as EmbeddingConfig, DpGroupNorm as GroupNorm,
    DpGroupNormConfig as GroupNormConfig, DpGru as Gru, DpGruConfig as GruConfig,
    DpInstanceNorm as InstanceNorm, DpInstanceNormConfig as InstanceNormConfig,
    DpLayerNorm as LayerNorm, DpLayerNormConfig as LayerNormConfig, DpLinear as Linear,
    DpLinearConfig as LinearConfig, DpLstm as Lstm, DpLstmConfig as LstmConfig,
    DpRmsNorm as RmsNorm, DpRmsNormConfig as RmsNormConfig, DpRnn as Rnn, DpRnnConfig as RnnConfig,
};

/// Convolutions (burn's `nn::conv`).
pub mod conv {
    pub use dpsgd_burn::layers::{
        DpConv1d as Conv1d, DpConv1dConfig as Conv1dConfig, DpConv2d as Conv2d,
        DpConv2dConfig as Conv2dConfig, DpConv3d as Conv3d, DpConv3dConfig as Conv3dConfig,
        DpConvTranspose2d as ConvTranspose2d, DpConvTranspose2dConfig as ConvTranspose2dConfig,
    };
}

/// Attention (burn's `nn::attention`).
pub mod attention {
    pub use dpsgd_burn::layers::{
        DpMhaInput as MhaInput, DpMhaOutput as MhaOutput,
        DpMultiHeadAttention as MultiHeadAttention,
        DpMultiHeadAttentionConfig as MultiHeadAttentionConfig,
    };
}

/// burn's pooling modules (no parameters: nothing to make private).
pub mod pool {
    pub use burn::nn::pool::*;
}
