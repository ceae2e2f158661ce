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
use std::collections::HashMap;

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

    /// The layer group of its (trainable) parameters.
    pub(crate) fn group(&self, group_of: &HashMap<ParamId, usize>) -> Option<usize> {
        self.params().iter().find_map(|p| group_of.get(p)).copied()
    }
}

/// `Σ` of squares over the last two dimensions: `[n, S, F]` → `[n]`.
fn sq_sum(t: Tensor<3>, n: usize) -> Tensor<1> {
    t.powi_scalar(2).sum_dims(&[1, 2]).reshape([n])
}

/// Squared per-example norms `[n]` of each parameter of an item.
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
        Record::Conv { .. } => unreachable!("convolution records are materialised first"),
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

/// `Σ_i c_i ∇_i` of each parameter of an item (flattened), by book-keeping.
pub(crate) fn clipped_sums(item: Item, c: Tensor<1>) -> Vec<(ParamId, Tensor<1>)> {
    let (r, g) = match item {
        Item::Recorded(r, g) => (r, g),
        Item::PerExample(v) => {
            return v
                .into_iter()
                .map(|(id, t)| {
                    let [n, numel] = t.dims();
                    (
                        id,
                        (t * c.clone().reshape([n, 1])).sum_dim(0).reshape([numel]),
                    )
                })
                .collect();
        }
    };
    let n = g.dims()[0];
    // The clip factors applied to the output gradient: book-keeping.
    let gc = g * c.reshape([n, 1, 1]);
    match r {
        Record::Conv { .. } => unreachable!("convolution records are materialised first"),
        Record::Dense {
            weight,
            bias,
            input,
            transposed,
            ..
        } => dense::clipped_sums(weight, bias, input, transposed, gc),
        Record::Embedding {
            weight, ids, vocab, ..
        } => embedding::clipped_sums(weight, ids, vocab, gc),
        Record::Affine {
            gamma,
            beta,
            normalized,
            ..
        } => affine::clipped_sums(gamma, beta, normalized, gc),
    }
}
