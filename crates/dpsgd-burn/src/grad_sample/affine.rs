//! Per-feature affine map of a normalised input, `y = x̂ ⊙ γ + β` on
//! `[B, S, C]`: LayerNorm and GroupNorm.

use super::{column_sums, sq_sum};
use burn::module::ParamId;
use burn::tensor::Tensor;

/// Squared per-example norms of γ (`Σ_t g_t ⊙ x̂_t`) and β (`Σ_t g_t`),
/// for those present.
pub(super) fn squared_norms(
    has_gamma: bool,
    has_beta: bool,
    normalized: &Tensor<3>,
    g: &Tensor<3>,
    n: usize,
) -> Vec<Tensor<1>> {
    let mut out = Vec::new();
    if has_gamma {
        out.push(sq_sum((g.clone() * normalized.clone()).sum_dim(1), n));
    }
    if has_beta {
        out.push(sq_sum(g.clone().sum_dim(1), n));
    }
    out
}

/// Clipped sums of γ and β from the clipped output gradients: `gc` under
/// the first parameter's factors, `gc_beta` under β's when they differ from
/// γ's (a frozen γ, whose factors are zero).
pub(super) fn clipped_sums(
    gamma: Option<ParamId>,
    beta: Option<ParamId>,
    normalized: Tensor<3>,
    gc: Tensor<3>,
    gc_beta: Option<Tensor<3>>,
) -> Vec<(ParamId, Tensor<1>)> {
    let mut out = Vec::new();
    if let Some(id) = gamma {
        out.push((id, column_sums(gc.clone() * normalized)));
    }
    if let Some(id) = beta {
        let gc = gc_beta.unwrap_or(gc);
        out.push((id, column_sums(gc)));
    }
    out
}
