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
pub(crate) use dense::keeps_per_example;

use crate::tape::{Record, Shared};
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
}

/// `Σ` over everything but the first dimension: `[n, …]` → `[n]`. One
/// reduction over the last axis of an `[n, m]` view: burn-flex's
/// `sum_dims` reduces axis by axis and copies the whole tensor for an axis
/// of size 1 (issue 31: it was half the dense path's extra time).
fn row_sums<const D: usize>(t: Tensor<D>, n: usize) -> Tensor<1> {
    let flat: Tensor<2> = t.reshape([n as i32, -1]);
    flat.sum_dim(1).reshape([n])
}

/// `Σ` over the first two dimensions: `[n, S, F]` → `[F]`, one reduction
/// over the first axis of an `[n·S, F]` view.
fn column_sums(t: Tensor<3>) -> Tensor<1> {
    let [n, s, f] = t.dims();
    t.reshape([n * s, f]).sum_dim(0).reshape([f])
}

/// `Σ` of squares over everything but the first dimension: `[n, …]` → `[n]`.
///
/// On burn-flex, `n` dot products of a row with itself (one batched matmul
/// `[n, 1, m]·[n, m, 1]`): no `[n, m]` temporary for the squares, and 2.6–3.9×
/// faster than squaring and summing at `n` = 1024–4096, `m` = 784. Its GEMM
/// multiplies in f32 with f32 accumulation. Elsewhere the squares are summed
/// element by element: a GPU backend may pick a tensor-core matmul that
/// rounds its inputs to TF32 (10-bit mantissa), and an underestimated norm
/// would let a clipped example exceed C.
fn sq_sum<const D: usize>(t: Tensor<D>, n: usize) -> Tensor<1> {
    let flat: Tensor<2> = t.reshape([n as i32, -1]);
    if !exact_f32_matmul(&flat.device()) {
        return row_sums(flat.clone() * flat, n);
    }
    let m = flat.dims()[1];
    flat.clone()
        .reshape([n, 1, m])
        .matmul(flat.reshape([n, m, 1]))
        .reshape([n])
}

/// `Σ_i c_i t_i` over the rows of `t: [n, m]` → `[m]`. On burn-flex one
/// product `[1, n]·[n, m]` (f32 multiply-adds, on every core, no `[n, m]`
/// temporary); elsewhere element-wise products and a column sum (for the
/// reason given at [`sq_sum`]: a rounded clip factor could let an example
/// weigh more than `C`).
fn weighted_rows(t: Tensor<2>, c: Tensor<1>) -> Tensor<1> {
    let [n, m] = t.dims();
    if exact_f32_matmul(&t.device()) {
        return c.reshape([1, n]).matmul(t).reshape([m]);
    }
    (t * c.reshape([n, 1])).sum_dim(0).reshape([m])
}

/// Whether `device`'s matmul is plain f32 (burn-flex's GEMM).
fn exact_f32_matmul(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "flex")]
    if matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::Flex(_)
    ) {
        return true;
    }
    let _ = device;
    false
}

/// Row magnitudes kept as they are (scale 1). Above: squares, Gram
/// products and norm products of values up to 2¹⁶ stay finite in f32 for
/// layers up to 2³¹ weights and `S²·W < 2⁶⁴` (S positions). Below: with
/// rows of largest magnitude at least 2⁻¹⁴, a norm is lost to underflow
/// (even where subnormals flush to zero) only when it is below
/// `2⁻³⁵·max|a|·max|g|` — where several positions cancel, the order of f32's
/// own cancellation error. Rows outside the range are divided by their
/// largest magnitude, which puts every entry in `[−1, 1]`; the scales come
/// back to the host and multiply in f64.
const KEEP_LOW: f32 = 1.0 / 16_384.0; // 2⁻¹⁴
const KEEP_HIGH: f32 = 65_536.0; // 2¹⁶

/// Each row's scale (`[n, …]` → `[n]`): 1 when its largest magnitude is
/// within [`KEEP_LOW`, `KEEP_HIGH`] (or zero), else that magnitude; a
/// non-finite entry gives a non-finite scale or stays in the row, and the
/// example is caught as non-finite either way. Two reductions, no copy of
/// the tensor.
fn row_scale<const D: usize>(t: &Tensor<D>, n: usize) -> Tensor<1> {
    let flat: Tensor<2> = t.clone().reshape([n as i32, -1]);
    let hi: Tensor<1> = flat.clone().max_dim(1).reshape([n]);
    let lo: Tensor<1> = flat.min_dim(1).reshape([n]);
    let s = hi.max_pair(lo.neg());
    let keep = s
        .clone()
        .greater_equal_elem(KEEP_LOW)
        .bool_and(s.clone().lower_equal_elem(KEEP_HIGH))
        .bool_or(s.clone().equal_elem(0.0));
    s.mask_fill(keep, 1.0)
}

/// `t / s` per example, `s: [n]`.
fn divide_rows<const D: usize>(t: Tensor<D>, s: &Tensor<1>) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[0] = s.dims()[0];
    t / s.clone().reshape(shape)
}

/// `t` divided row by row by `s`, unless every scale is 1 (`unit`): the
/// division would be exact, so skipping it changes no bit.
fn rescaled<const D: usize>(t: Tensor<D>, s: &Tensor<1>, unit: bool) -> Tensor<D> {
    if unit { t } else { divide_rows(t, s) }
}

/// An item whose per-example tensors are scaled (see [`scale`]), with the
/// scales that undo it: parameter `k`'s per-example gradient is
/// `∇_ik = (Π_j scales[k][j]_i) · ∇̃_ik`, where `∇̃` is what the item's
/// tensors now give. Norms are then `‖∇_ik‖² = ‖∇̃_ik‖² · Π_j s²` with the
/// product taken in f64, and the clipped sum is `Σ_i (c_i Π_j s_ij) ∇̃_ik`:
/// neither squares nor clip factors leave f32's range however large or
/// small the activations or output gradients are.
pub(crate) struct Scaled {
    /// The item, its tensors divided by their per-example scales.
    pub(crate) item: Item,
    /// Per parameter (in [`Item::params`] order), the `[n]` scales whose
    /// product multiplies its per-example gradient.
    pub(crate) scales: Vec<Vec<Tensor<1>>>,
}

/// Which tensor of a dense record a [`Shared`] key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Input,
    Grad,
}

/// The memo keys of a dense record's input and output gradient (`None`
/// for a tensor of its own).
fn keys(shared: &Shared) -> [Option<(Side, u64)>; 2] {
    [
        shared.input.map(|k| (Side::Input, k)),
        shared.grad.map(|k| (Side::Grad, k)),
    ]
}

/// Every per-example tensor scaled row by row so that no square or product
/// overflows or underflows f32 (rows of ordinary magnitude keep scale 1,
/// and then nothing is divided: the common case costs two reductions per
/// tensor and one read-back for all of them; a tensor several records
/// share is reduced once).
pub(crate) fn scale(items: Vec<Item>, n: usize) -> Vec<Scaled> {
    let mut known: HashMap<(Side, u64), Tensor<1>> = HashMap::new();
    let mut shared_scale = |t: &Tensor<3>, key: Option<(Side, u64)>| match key {
        None => row_scale(t, n),
        Some(key) => known.entry(key).or_insert_with(|| row_scale(t, n)).clone(),
    };
    // The scales of each item's tensors, in a fixed order: a per-example
    // item's entries; a dense record's input then output gradient; any
    // other record's output gradient.
    let scales: Vec<Vec<Tensor<1>>> = items
        .iter()
        .map(|item| match item {
            Item::PerExample(v) => v.iter().map(|(_, t)| row_scale(t, n)).collect(),
            Item::Recorded(Record::Dense { input, shared, .. }, g) => {
                let [input_key, grad_key] = keys(shared);
                vec![shared_scale(input, input_key), shared_scale(g, grad_key)]
            }
            Item::Recorded(_, g) => vec![row_scale(g, n)],
        })
        .collect();
    let all: Vec<Tensor<1>> = scales.iter().flatten().cloned().collect();
    let values: Vec<f32> = if all.is_empty() {
        Vec::new()
    } else {
        Tensor::cat(all, 0).into_data().iter::<f32>().collect()
    };
    debug_assert_eq!(values.len(), n * scales.iter().map(Vec::len).sum::<usize>());
    let mut unit = values.chunks(n.max(1)).map(|c| c.iter().all(|&v| v == 1.0));
    let mut unit = move || unit.next().unwrap_or(false);
    items
        .into_iter()
        .zip(scales)
        .map(|(item, item_scales)| match item {
            Item::PerExample(v) => {
                let entries = v
                    .into_iter()
                    .zip(&item_scales)
                    .map(|((id, t), s)| (id, rescaled(t, s, unit())))
                    .collect();
                Scaled {
                    item: Item::PerExample(entries),
                    scales: item_scales.into_iter().map(|s| vec![s]).collect(),
                }
            }
            Item::Recorded(
                Record::Dense {
                    weight,
                    bias,
                    input,
                    probe,
                    transposed,
                    shared,
                },
                g,
            ) => {
                let (sa, sg) = (item_scales[0].clone(), item_scales[1].clone());
                let input = rescaled(input, &sa, unit());
                let g = rescaled(g, &sg, unit());
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
                    shared,
                };
                Scaled {
                    item: Item::Recorded(record, g),
                    scales,
                }
            }
            Item::Recorded(other, g) => {
                let sg = item_scales[0].clone();
                let g = rescaled(g, &sg, unit());
                let scales = vec![vec![sg]; other.params().len()];
                Scaled {
                    item: Item::Recorded(other, g),
                    scales,
                }
            }
        })
        .collect()
}

/// Dense records whose per-example gradients cost less kept than their
/// Gram ghost norms and a second product for the clipped sum (see
/// [`dense::keeps_per_example`]) become per-example items, computed from
/// the scaled tensors (so the scales carry over unchanged); their inputs
/// and output gradients are dropped as each one is replaced.
pub(crate) fn keep_per_example(work: Vec<Scaled>) -> Vec<Scaled> {
    work.into_iter()
        .map(|scaled| match scaled.item {
            Item::Recorded(
                Record::Dense {
                    weight,
                    bias,
                    input,
                    transposed,
                    shared,
                    probe,
                },
                g,
            ) => {
                let [_, s, d_in] = input.dims();
                let d_out = g.dims()[2];
                let item = if dense::keeps_per_example(s, d_in, d_out, &shared) {
                    Item::PerExample(dense::per_example(weight, bias, input, transposed, g))
                } else {
                    let record = Record::Dense {
                        weight,
                        bias,
                        input,
                        probe,
                        transposed,
                        shared,
                    };
                    Item::Recorded(record, g)
                };
                Scaled {
                    item,
                    scales: scaled.scales,
                }
            }
            item => Scaled {
                item,
                scales: scaled.scales,
            },
        })
        .collect()
}

/// The Gram matrices `[B, S, S]` of tensors that several dense records
/// share (see [`Shared`]), each computed for the first record that needs it
/// and dropped after the last.
pub(crate) struct SharedGrams {
    /// Per key, the number of dense records holding its tensor.
    sharers: HashMap<(Side, u64), usize>,
    /// Per key, the Gram matrix and how many sharers have yet to take it.
    grams: HashMap<(Side, u64), (Tensor<3>, usize)>,
}

impl SharedGrams {
    /// Counts the sharers of every key among `items`.
    pub(crate) fn new<'a>(items: impl IntoIterator<Item = &'a Item>) -> Self {
        let mut sharers = HashMap::new();
        for item in items {
            if let Item::Recorded(Record::Dense { shared, .. }, _) = item {
                for key in keys(shared).into_iter().flatten() {
                    *sharers.entry(key).or_insert(0) += 1;
                }
            }
        }
        Self {
            sharers,
            grams: HashMap::new(),
        }
    }

    /// How many records share the input and the output gradient of a
    /// record (1 for a tensor of its own).
    fn count(&self, shared: &Shared) -> [usize; 2] {
        keys(shared).map(|k| k.and_then(|k| self.sharers.get(&k).copied()).unwrap_or(1))
    }

    /// `t tᵀ` (`[B, S, S]`), computed once per key.
    fn gram(&mut self, t: &Tensor<3>, key: Option<(Side, u64)>) -> Tensor<3> {
        let compute = || t.clone().matmul(t.clone().swap_dims(1, 2));
        let Some(key) = key else {
            return compute();
        };
        if let Some((gram, left)) = self.grams.get_mut(&key) {
            let gram = gram.clone();
            *left -= 1;
            if *left == 0 {
                self.grams.remove(&key);
            }
            return gram;
        }
        let gram = compute();
        let left = self
            .sharers
            .get(&key)
            .copied()
            .unwrap_or(1)
            .saturating_sub(1);
        if left > 0 {
            self.grams.insert(key, (gram.clone(), left));
        }
        gram
    }
}

/// Squared per-example norms `[n]` of each parameter of an item, in
/// [`Item::params`] order (of the scaled tensors, for a [`Scaled`] item);
/// Gram matrices of shared tensors come from and go to `grams`.
pub(crate) fn squared_norms(item: &Item, n: usize, grams: &mut SharedGrams) -> Vec<Tensor<1>> {
    let (r, g) = match item {
        Item::Recorded(r, g) => (r, g),
        Item::PerExample(v) => {
            return v.iter().map(|(_, t)| sq_sum(t.clone(), n)).collect();
        }
    };
    match r {
        Record::Conv { .. } | Record::Recurrent { .. } | Record::Replicated { .. } => {
            unreachable!("convolution, recurrent and replicated records are converted first")
        }
        Record::Dense {
            input,
            bias,
            shared,
            ..
        } => dense::squared_norms(input, bias.is_some(), g, n, shared, grams),
        Record::Embedding { ids, .. } => embedding::squared_norms(ids, g, n),
        Record::Affine {
            gamma,
            beta,
            normalized,
            ..
        } => affine::squared_norms(gamma.is_some(), beta.is_some(), normalized, g, n),
    }
}

/// A parameter's per-example clip factors, and whether they equal the
/// item's first parameter's (then its book-kept gradient is reused).
pub(crate) struct Factor {
    /// `[n]`: `c_i` times the parameter's scales.
    pub(crate) tensor: Tensor<1>,
    /// Equal to the item's first parameter's factors, element by element.
    pub(crate) same_as_first: bool,
}

/// `Σ_i c_ik ∇_ik` of each parameter `k` of an item (flattened), by
/// book-keeping; `factors[k]` is parameter `k`'s per-example factor (in
/// [`Item::params`] order).
pub(crate) fn clipped_sums(item: Item, factors: Vec<Factor>) -> Vec<(ParamId, Tensor<1>)> {
    let (r, g) = match item {
        Item::Recorded(r, g) => (r, g),
        Item::PerExample(v) => {
            return v
                .into_iter()
                .zip(factors)
                .map(|((id, t), c)| (id, weighted_rows(t, c.tensor)))
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
            // The weight's factor carries the input's scale, the bias's not:
            // they differ only where an input row was rescaled.
            let gw = scaled(&factors[0].tensor);
            let last = &factors[factors.len() - 1];
            let gb = bias.map(|_| {
                if last.same_as_first {
                    gw.clone()
                } else {
                    scaled(&last.tensor)
                }
            });
            dense::clipped_sums(weight, bias, input, transposed, gw, gb)
        }
        Record::Embedding {
            weight, ids, vocab, ..
        } => embedding::clipped_sums(weight, ids, vocab, scaled(&factors[0].tensor)),
        Record::Affine {
            gamma,
            beta,
            normalized,
            ..
        } => {
            // γ and β have their own factors (one may be frozen: zero).
            let first = scaled(&factors[0].tensor);
            let last = &factors[factors.len() - 1];
            let gb = match (gamma.is_some(), beta.is_some()) {
                (true, true) if !last.same_as_first => Some(scaled(&last.tensor)),
                _ => None,
            };
            affine::clipped_sums(gamma, beta, normalized, first, gb)
        }
    }
}
