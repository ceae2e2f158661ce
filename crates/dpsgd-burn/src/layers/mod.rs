//! DP-aware layers: drop-in replacements for burn's layers (same config and
//! init shape, same parameter layout) whose per-example gradients the engine
//! computes in one backward pass.

mod activation;
mod attention;
mod conv;
mod embedding;
mod from_burn;
mod linear;
mod norm;
mod replicated;
mod rnn;

pub use activation::gelu;
pub use attention::{DpMhaInput, DpMhaOutput, DpMultiHeadAttention, DpMultiHeadAttentionConfig};
pub use conv::{
    ConvStrategy, DpConv1d, DpConv1dConfig, DpConv2d, DpConv2dConfig, WEIGHT_STANDARDIZATION_EPS,
    standardized_kernel, with_conv_strategy,
};
pub(crate) use conv::{Geometry, im2col};
pub use embedding::{DpEmbedding, DpEmbeddingConfig};
pub use linear::{DpLinear, DpLinearConfig};
pub use norm::{
    DpGroupNorm, DpGroupNormConfig, DpInstanceNorm, DpInstanceNormConfig, DpLayerNorm,
    DpLayerNormConfig, DpRmsNorm, DpRmsNormConfig,
};
pub use replicated::{DpConv3d, DpConv3dConfig, DpConvTranspose2d, DpConvTranspose2dConfig};
pub use rnn::{DpGateController, DpGru, DpGruConfig, DpLstm, DpLstmConfig, DpRnn, DpRnnConfig};
