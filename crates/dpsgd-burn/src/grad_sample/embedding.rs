//! Row lookup `y_t = E[id_t]`: only the looked-up rows get a gradient.

use super::{GramError, SquaredNorm, gram_sum, position_sq};
use burn::module::ParamId;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

/// Squared per-example norms of the table: `Σ_{t,s} [id_t = id_s] g_t·g_s`
/// (repeated ids within an example add before the norm).
///
/// A Gram form: it comes with what bounds its f32 error ([`GramError`],
/// the rows `e_{id}` having norm 1 and exact products).
pub(super) fn squared_norms(ids: &Tensor<2, Int>, g: &Tensor<3>, n: usize) -> Vec<SquaredNorm> {
    let [_, s] = ids.dims();
    let gg = g.clone().matmul(g.clone().swap_dims(1, 2));
    let same = ids
        .clone()
        .reshape([n, s, 1])
        .expand([n, s, s])
        .equal(ids.clone().reshape([n, 1, s]).expand([n, s, s]))
        .float();
    let d_out = g.dims()[2];
    vec![SquaredNorm::gram(
        gram_sum(gg * same, n),
        None,
        position_sq(g),
        GramError::new(s, 0, d_out, &g.device()),
    )]
}

/// The clipped output gradients `gc`, scattered into the table's rows.
pub(super) fn clipped_sums(
    weight: ParamId,
    ids: Tensor<2, Int>,
    vocab: usize,
    gc: Tensor<3>,
) -> Vec<(ParamId, Tensor<1>)> {
    let [n, s, d_out] = gc.dims();
    let table = Tensor::<2>::zeros([vocab, d_out], &gc.device()).select_assign(
        0,
        ids.reshape([n * s]),
        gc.reshape([n * s, d_out]),
        IndexingUpdateOp::Add,
    );
    vec![(weight, table.reshape([vocab * d_out]))]
}
