//! `y = a W (+ b)` on `[B, S, d_in]`: Linear, and convolutions after
//! unfolding (`a` = patches, the weight stored transposed).

use super::{
    GramError, SharedGrams, SquaredNorm, column_sums, gram_sum, keys, position_sums, sq_sum,
};
use crate::tape::Shared;
use burn::module::ParamId;
use burn::tensor::Tensor;

/// Whether a dense layer's per-example weight norms cost less by Gram ghost
/// norms (`S²·(d_in + d_out)` per example) than by materialising the
/// gradients (`S·d_in·d_out`), for `S` positions ("mixed ghost clipping").
pub(super) fn ghost_norm_is_cheaper(positions: usize, d_in: usize, d_out: usize) -> bool {
    ghost_norm_is_cheaper_shared(positions, d_in, d_out, [1, 1])
}

/// [`ghost_norm_is_cheaper`] when the input's Gram matrix is shared by
/// `sharers[0]` records and the output gradient's by `sharers[1]` (each
/// record pays its share): `S²·(d_in/k_a + d_out/k_g) ≤ S·d_in·d_out`.
pub(super) fn ghost_norm_is_cheaper_shared(
    positions: usize,
    d_in: usize,
    d_out: usize,
    [k_a, k_g]: [usize; 2],
) -> bool {
    let (k_a, k_g) = (k_a.max(1) as u128, k_g.max(1) as u128);
    let (s, d_in, d_out) = (positions as u128, d_in as u128, d_out as u128);
    s * (d_in * k_g + d_out * k_a) <= d_in * d_out * k_a * k_g
}

/// How many times the values a dense record holds (its input and output
/// gradient, `S·(d_in + d_out)` per example) its per-example gradients
/// (`d_in·d_out`) may take when they replace them (see
/// [`keeps_per_example`]).
const KEEP_GROWTH: usize = 2;

/// Whether a dense record over `positions` positions should materialise
/// its per-example gradients `a_iᵀ g_i` once and keep them for both the
/// norms and the clipped sum (`Σ_i c_i a_iᵀ g_i` is then a weighted sum of
/// `B·d_in·d_out` values instead of a second product over all positions).
///
/// Per example, that costs `S·d_in·d_out + 2·d_in·d_out` multiply-adds
/// against `S²·(d_in + d_out) + S·d_in·d_out` for Gram ghost norms and
/// book-keeping (Bu et al. 2023, "Differentially Private Optimization on
/// Large Model at Small Cost", §3), and `2·S·d_in·d_out` for
/// materialising twice; it holds `d_in·d_out` values instead of
/// `S·(d_in + d_out)`, so it is chosen only where that is at most
/// [`KEEP_GROWTH`] times as much, and where one position (no sequence)
/// does not make the ghost norm `‖a_i‖²‖g_i‖²` far cheaper. A record that
/// shares a tensor with others (a recurrent layer's gates) keeps its Gram
/// path: its shared tensors stay alive for the others anyway.
pub(crate) fn keeps_per_example(
    positions: usize,
    d_in: usize,
    d_out: usize,
    shared: &Shared,
) -> bool {
    let (s, d_in, d_out) = (positions as u128, d_in as u128, d_out as u128);
    let per_example = d_in * d_out;
    positions > 1
        && *shared == Shared::default()
        && per_example <= KEEP_GROWTH as u128 * s * (d_in + d_out)
        && 2 * per_example <= s * s * (d_in + d_out)
}

/// The per-example gradients of a dense layer, `[B, d_in·d_out]` in the
/// weight's layout (`[d_out, d_in]` when `transposed`), and the bias's
/// `Σ_s g_is` (`[B, d_out]`).
pub(super) fn per_example(
    weight: ParamId,
    bias: Option<ParamId>,
    input: Tensor<3>,
    transposed: bool,
    g: Tensor<3>,
) -> Vec<(ParamId, Tensor<2>)> {
    let [n, _, d_out] = g.dims();
    let d_in = input.dims()[2];
    let w = if transposed {
        g.clone().swap_dims(1, 2).matmul(input)
    } else {
        input.swap_dims(1, 2).matmul(g.clone())
    };
    let mut out = vec![(weight, w.reshape([n, d_in * d_out]))];
    if let Some(b) = bias {
        out.push((b, position_sums(g)));
    }
    out
}

/// Squared per-example norms of the weight (and the bias, if any): the
/// ghost norm `‖a_i‖²‖g_i‖²` for one position; over several positions,
/// the Gram form (Li et al. 2022, "Large Language Models Can Be Strong
/// Differentially Private Learners", §4:
/// `‖a_iᵀ g_i‖²_F = Σ_{s,t} (a_{is}·a_{it}) (g_{is}·g_{it})`, with the Gram
/// matrices of `shared` tensors taken from `grams`) with what bounds its
/// f32 error ([`GramError`]). Records whose per-example gradients are
/// cheaper materialised, and the bias of a record over several positions,
/// were made per-example items first ([`super::keep_per_example`]).
pub(super) fn squared_norms(
    input: &Tensor<3>,
    has_bias: bool,
    g: &Tensor<3>,
    n: usize,
    shared: &Shared,
    grams: &mut SharedGrams,
) -> Vec<SquaredNorm> {
    let [_, s, d_in] = input.dims();
    let d_out = g.dims()[2];
    if s == 1 {
        // One position: ‖a_i‖²‖g_i‖², and the bias's ‖g_i‖² is the same
        // reduction.
        let g_sq = sq_sum(g.clone(), n);
        let weight = sq_sum(input.clone(), n) * g_sq.clone();
        let mut out = vec![SquaredNorm::squares(weight, d_in + d_out + 1)];
        if has_bias {
            out.push(SquaredNorm::squares(g_sq, d_out));
        }
        return out;
    }
    debug_assert!(!has_bias, "a sequence record's bias is kept per example");
    let [input_key, grad_key] = keys(shared);
    let aa = grams.gram(input, input_key);
    let gg = grams.gram(g, grad_key);
    vec![SquaredNorm::gram(
        gram_sum(aa * gg, n),
        Some(grams.position_sq(input, input_key)),
        grams.position_sq(g, grad_key),
        GramError::new(s, d_in, d_out, &input.device()),
    )]
}

/// `aᵀ(c ⊙ g)` for the weight (`[d_out, d_in]` when `transposed`), and the
/// bias's `Σ (c ⊙ g)`; `gw` and `gb` are the output gradient already scaled
/// by the weight's and the bias's per-example factors.
pub(super) fn clipped_sums(
    weight: ParamId,
    bias: Option<ParamId>,
    input: Tensor<3>,
    transposed: bool,
    gw: Tensor<3>,
    gb: Option<Tensor<3>>,
) -> Vec<(ParamId, Tensor<1>)> {
    let [n, s, d_out] = gw.dims();
    let d_in = input.dims()[2];
    let a = input.reshape([n * s, d_in]);
    let flat_g = gw.reshape([n * s, d_out]);
    let w = if transposed {
        flat_g.transpose().matmul(a) // [d_out, d_in]
    } else {
        a.transpose().matmul(flat_g) // [d_in, d_out]
    };
    let mut out = vec![(weight, w.reshape([d_in * d_out]))];
    if let (Some(b), Some(gb)) = (bias, gb) {
        out.push((b, column_sums(gb)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_keep_per_example_gradients_only_where_they_cost_less_and_fit() {
        let own = Shared::default();
        // The benchmark transformer (64 tokens, width 128, feed-forward
        // 256): every projection keeps its per-example gradients.
        assert!(keeps_per_example(64, 128, 128, &own));
        assert!(keeps_per_example(64, 128, 256, &own));
        assert!(keeps_per_example(64, 256, 128, &own));
        // One position: the ghost norm ‖a‖²‖g‖² is far cheaper.
        assert!(!keeps_per_example(1, 784, 512, &own));
        assert!(!keeps_per_example(1, 2, 2, &own));
        // Memory: d_in·d_out at most twice S·(d_in + d_out).
        assert!(keeps_per_example(8, 32, 32, &own)); // 1024 ≤ 1024
        assert!(!keeps_per_example(8, 33, 32, &own)); // 1056 > 1040
        // Time: 2·d_in·d_out at most S²·(d_in + d_out).
        assert!(!keeps_per_example(2, 6, 5, &own)); // 60 > 44
        assert!(keeps_per_example(3, 6, 5, &own)); // 60 ≤ 99
        // A record sharing a tensor keeps its Gram path.
        for shared in [
            Shared {
                input: Some(1),
                grad: None,
            },
            Shared {
                input: None,
                grad: Some(2),
            },
        ] {
            assert!(!keeps_per_example(64, 128, 128, &shared));
        }
    }
}
