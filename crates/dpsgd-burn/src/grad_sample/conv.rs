//! Convolutions (1-D as height 1). Per-example information comes from
//! the input's patches, gathered again after the backward pass (one gather,
//! then per-example products, or Gram ghost norms through the dense
//! record), or from one grouped weight-gradient convolution (groups =
//! batch).

use super::Item;
use super::dense::ghost_norm_is_cheaper;
use crate::layers::im2col;
use crate::tape::Record;
use burn::tensor::Tensor;
use burn::tensor::module::conv2d_weight_backward;

/// Turns a record and its output gradient into a work item. A convolution
/// gathers its input's patches again (one layer at a time, so they are
/// never all alive) and either keeps them for Gram ghost norms, or — when
/// per-example gradients are smaller than the Gram matrices — materialises
/// them as `gᵢᵀ Aᵢ`; with [`ConvStrategy::Materialize`](crate::layers::ConvStrategy)
/// they come from ONE grouped weight-gradient convolution (groups = batch).
pub(crate) fn materialize(r: Record, g: Tensor<3>) -> Item {
    let Record::Conv {
        weight,
        bias,
        input,
        probe,
        out_hw,
        kernel,
        geometry,
        unfolded,
    } = r
    else {
        return Item::Recorded(r, g);
    };
    let [batch, c_in, h, w] = input.dims();
    let [c_out, _, kh, kw] = kernel;
    let bias_grads = |g: &Tensor<3>, axis: usize| {
        bias.map(|b| (b, g.clone().sum_dim(axis).reshape([batch, c_out])))
    };
    if unfolded {
        // g: [B, L, C_out]; patches: [B, L, F] with F = C_in·k_h·k_w.
        let patches = im2col(input, [kh, kw], geometry, out_hw);
        let [_, positions, features] = patches.dims();
        if ghost_norm_is_cheaper(positions, features, c_out) {
            // Gram ghost norms are cheaper: keep the patches as a dense record.
            return Item::Recorded(
                Record::Dense {
                    weight,
                    bias,
                    input: patches,
                    probe,
                    transposed: true,
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
        let mut out = vec![(weight, per_example)];
        out.extend(bias_grads(&g, 1));
        return Item::PerExample(out);
    }
    // g: [B, C_out, L]: one grouped weight-gradient convolution.
    let g4 = g.clone().reshape([1, batch * c_out, out_hw[0], out_hw[1]]);
    let per_example = conv2d_weight_backward(
        input.reshape([1, batch * c_in, h, w]),
        Tensor::<4>::zeros([batch * c_out, c_in, kh, kw], &g.device()),
        g4,
        geometry.options(batch),
    )
    .reshape([batch, c_out * c_in * kh * kw]);
    let mut out = vec![(weight, per_example)];
    out.extend(bias_grads(&g, 2));
    Item::PerExample(out)
}
