//! Per-feature affine map of a normalised input, `y = x̂ ⊙ γ + β` on
//! `[B, S, C]`: LayerNorm and GroupNorm.

use super::position_sums;
use burn::module::ParamId;
use burn::tensor::Tensor;

/// The per-example gradients of γ (`Σ_s g_s ⊙ x̂_s`) and β (`Σ_s g_s`),
/// `[n, C]` each, for those present: `C` values per example, so they are
/// always kept (their norms and their clipped sum read the same tensors).
pub(super) fn per_example(
    gamma: Option<ParamId>,
    beta: Option<ParamId>,
    normalized: Tensor<3>,
    g: Tensor<3>,
) -> Vec<(ParamId, Tensor<2>)> {
    let mut out = Vec::new();
    if let Some(id) = gamma {
        out.push((id, position_sums(g.clone() * normalized)));
    }
    if let Some(id) = beta {
        out.push((id, position_sums(g)));
    }
    out
}
