//! Per-example gradient math, one file per layer kind (as Opacus keeps one
//! grad-sample file per layer): from a layer's [`Record`] and its
//! per-example output gradient `g`, the squared per-example norms of its
//! parameters (ghost norms where cheaper) and their clipped sum
//! `Σ_i c_i ∇_i` (book-keeping). The engine only orchestrates: coverage,
//! path choice, grouping, fallback.

mod affine;
mod conv;
mod dense;
mod embedding;

pub(crate) use conv::materialize;

use crate::tape::Record;
use burn::module::ParamId;
use burn::tensor::Tensor;

/// A unit of per-example gradient information after the backward pass.
/// (Few per step: the size difference between variants does not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    /// A record and its per-example output gradient `[B, S, F]`.
    Recorded(Record, Tensor<3>),
    /// Materialised per-example gradients: `(parameter, [B, numel])`.
    PerExample(Vec<(ParamId, Tensor<2>)>),
}

impl Item {
    /// The parameters, in the order [`squared_norms`] and [`clipped_sums`]
    /// return theirs.
    pub(crate) fn params(&self) -> Vec<ParamId> {
        match self {
            Item::Recorded(r, _) => r.params(),
            Item::PerExample(v) => v.iter().map(|(id, _)| *id).collect(),
        }
    }
}

/// `Σ` of squares over the last two dimensions: `[n, S, F]` → `[n]`.
fn sq_sum(t: Tensor<3>, n: usize) -> Tensor<1> {
    t.powi_scalar(2).sum_dims(&[1, 2]).reshape([n])
}

/// Per-example largest magnitude of `t` (`[n, …]` → `[n]`), 1 for an
/// all-zero example. Dividing by it puts every entry in `[−1, 1]`, so that
/// squares and products of two such tensors cannot overflow f32 (a
/// non-finite entry gives a non-finite scale or NaN: the example is caught
/// as non-finite).
fn row_scale<const D: usize>(t: &Tensor<D>, n: usize) -> Tensor<1> {
    let flat: Tensor<2> = t.clone().reshape([n as i32, -1]);
    let s: Tensor<1> = flat.abs().max_dim(1).reshape([n]);
    s.clone().mask_fill(s.equal_elem(0.0), 1.0)
}

/// `t / s` per example, `s: [n]`.
fn divide_rows<const D: usize>(t: Tensor<D>, s: &Tensor<1>) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[0] = s.dims()[0];
    t / s.clone().reshape(shape)
}

/// An item whose per-example tensors are scaled to `[−1, 1]`, with the
/// scales that undo it: parameter `k`'s per-example gradient is
/// `∇_ik = (Π_j scales[k][j]_i) · ∇̃_ik`, where `∇̃` is what the item's
/// tensors now give. Norms are then `‖∇_ik‖² = ‖∇̃_ik‖² · Π_j s²` with the
/// product taken in f64, and the clipped sum is `Σ_i (c_i Π_j s_ij) ∇̃_ik`:
/// neither squares nor clip factors leave f32's range however large the
/// activations or output gradients are (up to f32's largest finite value).
pub(crate) struct Scaled {
    /// The item, its tensors divided by their per-example scales.
    pub(crate) item: Item,
    /// Per parameter (in [`Item::params`] order), the `[n]` scales whose
    /// product multiplies its per-example gradient.
    pub(crate) scales: Vec<Vec<Tensor<1>>>,
}

/// Scales an item's per-example tensors (see [`Scaled`]).
pub(crate) fn scale(item: Item, n: usize) -> Scaled {
    match item {
        Item::PerExample(v) => {
            let mut scales = Vec::with_capacity(v.len());
            let entries = v
                .into_iter()
                .map(|(id, t)| {
                    let s = row_scale(&t, n);
                    let t = divide_rows(t, &s);
                    scales.push(vec![s]);
                    (id, t)
                })
                .collect();
            Scaled {
                item: Item::PerExample(entries),
                scales,
            }
        }
        Item::Recorded(record, g) => {
            let sg = row_scale(&g, n);
            let g = divide_rows(g, &sg);
            let (record, scales) = match record {
                Record::Dense {
                    weight,
                    bias,
                    input,
                    probe,
                    transposed,
                } => {
                    let sa = row_scale(&input, n);
                    let input = divide_rows(input, &sa);
                    let mut scales = vec![vec![sa, sg.clone()]];
                    if bias.is_some() {
                        scales.push(vec![sg]);
                    }
                    let record = Record::Dense {
                        weight,
                        bias,
                        input,
                        probe,
                        transposed,
                    };
                    (record, scales)
                }
                other => {
                    let scales = vec![vec![sg]; other.params().len()];
                    (other, scales)
                }
            };
            Scaled {
                item: Item::Recorded(record, g),
                scales,
            }
        }
    }
}

/// Squared per-example norms `[n]` of each parameter of an item, in
/// [`Item::params`] order (of the scaled tensors, for a [`Scaled`] item).
pub(crate) fn squared_norms(item: &Item, n: usize) -> Vec<Tensor<1>> {
    let (r, g) = match item {
        Item::Recorded(r, g) => (r, g),
        Item::PerExample(v) => {
            return v
                .iter()
                .map(|(_, t)| t.clone().powi_scalar(2).sum_dim(1).reshape([n]))
                .collect();
        }
    };
    match r {
        Record::Conv { .. } | Record::Recurrent { .. } | Record::Replicated { .. } => {
            unreachable!("convolution, recurrent and replicated records are converted first")
        }
        Record::Dense { input, bias, .. } => dense::squared_norms(input, bias.is_some(), g, n),
        Record::Embedding { ids, .. } => embedding::squared_norms(ids, g, n),
        Record::Affine {
            gamma,
            beta,
            normalized,
            ..
        } => affine::squared_norms(gamma.is_some(), beta.is_some(), normalized, g, n),
    }
}

/// `Σ_i c_ik ∇_ik` of each parameter `k` of an item (flattened), by
/// book-keeping; `factors[k]` is parameter `k`'s per-example factor `[n]`
/// (in [`Item::params`] order).
pub(crate) fn clipped_sums(item: Item, factors: Vec<Tensor<1>>) -> Vec<(ParamId, Tensor<1>)> {
    let (r, g) = match item {
        Item::Recorded(r, g) => (r, g),
        Item::PerExample(v) => {
            return v
                .into_iter()
                .zip(factors)
                .map(|((id, t), c)| {
                    let [n, numel] = t.dims();
                    (id, (t * c.reshape([n, 1])).sum_dim(0).reshape([numel]))
                })
                .collect();
        }
    };
    let n = g.dims()[0];
    // The clip factors applied to the output gradient: book-keeping.
    let scaled = |c: &Tensor<1>| g.clone() * c.clone().reshape([n, 1, 1]);
    match r {
        Record::Conv { .. } | Record::Recurrent { .. } | Record::Replicated { .. } => {
            unreachable!("convolution, recurrent and replicated records are converted first")
        }
        Record::Dense {
            weight,
            bias,
            input,
            transposed,
            ..
        } => {
            // The weight's factor carries the input's scale, the bias's not.
            let gw = scaled(&factors[0]);
            let gb = bias.map(|_| scaled(&factors[factors.len() - 1]));
            dense::clipped_sums(weight, bias, input, transposed, gw, gb)
        }
        Record::Embedding {
            weight, ids, vocab, ..
        } => embedding::clipped_sums(weight, ids, vocab, scaled(&factors[0])),
        Record::Affine {
            gamma,
            beta,
            normalized,
            ..
        } => affine::clipped_sums(gamma, beta, normalized, scaled(&factors[0])),
    }
}
