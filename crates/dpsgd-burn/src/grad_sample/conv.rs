//! Convolutions (1-D as height 1). Per-example information comes from
//! the input's patches, gathered again after the backward pass (one gather,
//! then per-example products, or Gram ghost norms through the dense
//! record), or from one grouped weight-gradient convolution (groups =
//! batch).

use super::dense::ghost_norm_is_cheaper;
use super::{Item, position_sums};
use crate::layers::im2col;
use crate::tape::{Record, Shared};
use burn::tensor::Tensor;
use burn::tensor::module::conv2d_weight_backward;

/// Turns a record and its output gradient into a work item. A convolution
/// gathers its input's patches again (one layer at a time, so they are
/// never all alive) and either keeps them for Gram ghost norms, or — when
/// per-example gradients are smaller than the Gram matrices — materialises
/// them as `gᵢᵀ Aᵢ`; with [`ConvStrategy::Materialize`](crate::layers::ConvStrategy)
/// they come from ONE grouped weight-gradient convolution (groups = batch).
///
/// `k` rows make one example (augmentation multiplicity): their positions
/// are concatenated (Gram ghost norms over all of them) or their
/// materialised gradients summed.
pub(crate) fn materialize(r: Record, g: Tensor<3>, k: usize) -> Item {
    let Record::Conv {
        weight,
        bias,
        input,
        probe,
        out_hw,
        kernel,
        geometry,
        unfolded,
        standardized,
    } = r
    else {
        let (r, g) = regroup(r, g, k);
        return Item::Recorded(r, g);
    };
    let [rows, c_in, h, w] = input.dims();
    let batch = rows / k;
    let [c_out, _, kh, kw] = kernel;
    let bias_grads = |g: &Tensor<3>, axis: usize| {
        bias.map(|b| {
            let per_row: Tensor<2> = g.clone().sum_dim(axis).reshape([rows, c_out]);
            (b, sum_views(per_row, batch, k))
        })
    };
    if unfolded {
        // g: [B·k, L, C_out]; patches: [B·k, L, F] with F = C_in·k_h·k_w;
        // an example's k views make one sequence of k·L positions.
        let patches = im2col(input, [kh, kw], geometry, out_hw);
        let [_, positions, features] = patches.dims();
        let positions = positions * k;
        let patches = patches.reshape([batch, positions, features]);
        let g = g.reshape([batch, positions, c_out]);
        // A standardised kernel's gradients go through its Jacobian:
        // materialised, never ghost.
        if standardized.is_none() && ghost_norm_is_cheaper(positions, features, c_out) {
            // Gram ghost norms are cheaper: keep the patches as a dense record.
            return Item::Recorded(
                Record::Dense {
                    weight,
                    bias,
                    input: patches,
                    probe,
                    transposed: true,
                    shared: Shared::default(),
                },
                g,
            );
        }
        // Per-example gradients gᵢᵀ Aᵢ: [B, C_out, F], the weight's layout.
        let per_example = g
            .clone()
            .swap_dims(1, 2)
            .matmul(patches)
            .reshape([batch, c_out * features]);
        let per_example = through_standardization(per_example, standardized.as_ref());
        let mut out = vec![(weight, per_example)];
        // g is already per example here: [B, k·L, C_out].
        out.extend(bias.map(|b| (b, position_sums(g))));
        return Item::PerExample(out);
    }
    // g: [B·k, C_out, L]: one grouped weight-gradient convolution.
    let g4 = g.clone().reshape([1, rows * c_out, out_hw[0], out_hw[1]]);
    let per_row = conv2d_weight_backward(
        input.reshape([1, rows * c_in, h, w]),
        Tensor::<4>::zeros([rows * c_out, c_in, kh, kw], &g.device()),
        g4,
        geometry.options(rows),
    )
    .reshape([rows, c_out * c_in * kh * kw]);
    let per_example = sum_views(per_row, batch, k);
    let per_example = through_standardization(per_example, standardized.as_ref());
    let mut out = vec![(weight, per_example)];
    out.extend(bias_grads(&g, 2));
    Item::PerExample(out)
}

/// Per-example gradients `G` of a standardised kernel `ŵ = (w − μ)/s` mapped
/// to the raw kernel `w`, per output channel over its `F` values:
/// `∇w = (G − mean(G) − ŵ·mean(G ⊙ ŵ))/s`.
fn through_standardization(
    per_example: Tensor<2>,
    standardized: Option<&(Tensor<2>, Tensor<1>)>,
) -> Tensor<2> {
    let Some((hat, inv_std)) = standardized else {
        return per_example;
    };
    let [batch, numel] = per_example.dims();
    let [c_out, features] = hat.dims();
    let g: Tensor<3> = per_example.reshape([batch, c_out, features]);
    let hat: Tensor<3> = hat.clone().reshape([1, c_out, features]);
    let mean_g = g.clone().mean_dim(2);
    let mean_gh = (g.clone() * hat.clone()).mean_dim(2);
    let grad = (g - mean_g - hat * mean_gh) * inv_std.clone().reshape([1, c_out, 1]);
    grad.reshape([batch, numel])
}

/// `[B·k, m]` per-row gradients → `[B, m]` per-example sums.
fn sum_views(per_row: Tensor<2>, batch: usize, k: usize) -> Tensor<2> {
    if k == 1 {
        return per_row;
    }
    let m = per_row.dims()[1];
    per_row
        .reshape([batch, k, m])
        .sum_dim(1)
        .reshape([batch, m])
}

/// A record of `B·k` rows as one of `B` examples whose `k` rows are
/// concatenated along the sequence: `[B·k, S, F] → [B, k·S, F]`.
fn regroup(r: Record, g: Tensor<3>, k: usize) -> (Record, Tensor<3>) {
    if k == 1 {
        return (r, g);
    }
    let merge = |t: Tensor<3>| {
        let [rows, s, f] = t.dims();
        t.reshape([rows / k, k * s, f])
    };
    let r = match r {
        Record::Dense {
            weight,
            bias,
            input,
            probe,
            transposed,
            shared,
        } => Record::Dense {
            weight,
            bias,
            input: merge(input),
            probe,
            transposed,
            shared,
        },
        Record::Embedding {
            weight,
            ids,
            vocab,
            probe,
        } => {
            let [rows, s] = ids.dims();
            Record::Embedding {
                weight,
                ids: ids.reshape([rows / k, k * s]),
                vocab,
                probe,
            }
        }
        Record::Affine {
            gamma,
            beta,
            normalized,
            probe,
        } => Record::Affine {
            gamma,
            beta,
            normalized: merge(normalized),
            probe,
        },
        other @ (Record::Conv { .. } | Record::Recurrent { .. } | Record::Replicated { .. }) => {
            other
        }
    };
    (r, merge(g))
}
