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

use crate::backend::{is_flex, plain_f32_products};
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
    if !is_flex(&flat.device()) {
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
    if is_flex(&t.device()) {
        return c.reshape([1, n]).matmul(t).reshape([m]);
    }
    (t * c.reshape([n, 1])).sum_dim(0).reshape([m])
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

/// Records whose per-example gradients are materialised become
/// per-example items, so that each example's norm is the norm of exactly
/// what its clip factor multiplies in the sum:
///
/// * dense records whose kept gradients cost less than Gram ghost norms and
///   a second product (see [`dense::keeps_per_example`]), and shared ones
///   for which Gram ghost norms are not cheaper (they were materialised for
///   the norm anyway);
/// * the per-feature affine maps of normalisation layers (`Σ_s g_s ⊙ x̂_s`
///   and `Σ_s g_s`, `C` values per example);
/// * a Gram-path dense record's bias (`Σ_s g_s`), split from its weight.
///
/// They are computed from the scaled tensors (the scales carry over), then
/// scaled again row by row, the new scales appended to each parameter's
/// (one read-back for all): their entries may be tiny next to the scaled
/// tensors' largest (a huge input at a position the loss does not read
/// sets the row's scale), and their squares would fall below f32's range,
/// leaving a norm of zero and an unclipped contribution. Scaled, every row
/// is zero or has its largest magnitude in [2⁻¹⁴, 2¹⁶], as
/// [`SumOfSquares`] needs. The inputs and output gradients of a converted
/// record are dropped as it is replaced.
pub(crate) fn keep_per_example(work: Vec<Scaled>, n: usize) -> Vec<Scaled> {
    let sharers = SharedGrams::new(work.iter().map(|s| &s.item));
    // (item, scales, whether it is converted here)
    let mut out: Vec<(Item, Vec<Vec<Tensor<1>>>, bool)> = Vec::with_capacity(work.len());
    for scaled in work {
        let mut scales = scaled.scales;
        match scaled.item {
            Item::Recorded(
                Record::Dense {
                    weight,
                    bias,
                    input,
                    transposed,
                    shared,
                    ..
                },
                g,
            ) if keeps_dense(&input, &g, &shared, &sharers) => {
                let item = Item::PerExample(dense::per_example(weight, bias, input, transposed, g));
                out.push((item, scales, true));
            }
            Item::Recorded(mut record @ Record::Dense { .. }, g) => {
                // Over several positions, the bias's per-example gradient
                // is kept apart from the weight's Gram ghost norm.
                if let Record::Dense { bias, input, .. } = &mut record
                    && input.dims()[1] > 1
                    && let Some(b) = bias.take()
                {
                    let bias_scales = scales.pop().unwrap_or_default();
                    out.push((
                        Item::PerExample(vec![(b, position_sums(g.clone()))]),
                        vec![bias_scales],
                        true,
                    ));
                }
                out.push((Item::Recorded(record, g), scales, false));
            }
            Item::Recorded(
                Record::Affine {
                    gamma,
                    beta,
                    normalized,
                    ..
                },
                g,
            ) => {
                let item = Item::PerExample(affine::per_example(gamma, beta, normalized, g));
                out.push((item, scales, true));
            }
            item => out.push((item, scales, false)),
        }
    }
    // Scale the converted items again, with one read-back for all.
    let converted: Vec<Item> = out
        .iter_mut()
        .filter(|(_, _, c)| *c)
        .map(|(item, _, _)| std::mem::replace(item, Item::PerExample(Vec::new())))
        .collect();
    let mut rescaled = scale(converted, n).into_iter();
    out.into_iter()
        .map(|(item, mut scales, converted)| {
            if !converted {
                return Scaled { item, scales };
            }
            let again = rescaled
                .next()
                .expect("one rescaled item per converted item");
            debug_assert_eq!(scales.len(), again.scales.len());
            for (mine, more) in scales.iter_mut().zip(again.scales) {
                mine.extend(more);
            }
            Scaled {
                item: again.item,
                scales,
            }
        })
        .collect()
}

/// Whether a dense record over several positions keeps its per-example
/// gradients (see [`keep_per_example`]): where that is cheaper and fits,
/// or, for a shared record, where Gram ghost norms are not cheaper.
fn keeps_dense(input: &Tensor<3>, g: &Tensor<3>, shared: &Shared, sharers: &SharedGrams) -> bool {
    let [_, s, d_in] = input.dims();
    let d_out = g.dims()[2];
    s > 1
        && (dense::keeps_per_example(s, d_in, d_out, shared)
            || !dense::ghost_norm_is_cheaper_shared(s, d_in, d_out, sharers.count(shared)))
}

/// `Σ_s t_is`: `[n, S, F]` → `[n, F]`, an example's positions summed (a
/// bias's or a shift's per-example gradient).
fn position_sums(t: Tensor<3>) -> Tensor<2> {
    let [n, _, f] = t.dims();
    t.sum_dim(1).reshape([n, f])
}

/// The Gram matrices `[B, S, S]` of tensors that several dense records
/// share (see [`Shared`]), each computed for the first record that needs it
/// and dropped after the last.
pub(crate) struct SharedGrams {
    /// Per key, the number of dense records holding its tensor.
    sharers: HashMap<(Side, u64), usize>,
    /// Per key, the Gram matrix and how many sharers have yet to take it.
    grams: HashMap<(Side, u64), (Tensor<3>, usize)>,
    /// Per key, the positions' squared norms (`[n·S]`, small: kept).
    position_sq: HashMap<(Side, u64), Tensor<1>>,
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
            position_sq: HashMap::new(),
        }
    }

    /// How many records share the input and the output gradient of a
    /// record (1 for a tensor of its own).
    fn count(&self, shared: &Shared) -> [usize; 2] {
        keys(shared).map(|k| k.and_then(|k| self.sharers.get(&k).copied()).unwrap_or(1))
    }

    /// [`position_sq`] of `t`, computed once per key.
    fn position_sq(&mut self, t: &Tensor<3>, key: Option<(Side, u64)>) -> Tensor<1> {
        match key {
            None => position_sq(t),
            Some(key) => self
                .position_sq
                .entry(key)
                .or_insert_with(|| position_sq(t))
                .clone(),
        }
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
pub(crate) fn squared_norms(item: &Item, n: usize, grams: &mut SharedGrams) -> Vec<SquaredNorm> {
    let (r, g) = match item {
        Item::Recorded(r, g) => (r, g),
        Item::PerExample(v) => {
            return v
                .iter()
                .map(|(_, t)| {
                    let terms = t.dims()[1];
                    SquaredNorm::squares(sq_sum(t.clone(), n), terms)
                })
                .collect();
        }
    };
    match r {
        Record::Conv { .. }
        | Record::Recurrent { .. }
        | Record::Replicated { .. }
        | Record::Affine { .. } => {
            unreachable!(
                "convolution, recurrent, replicated and affine records are converted first"
            )
        }
        Record::Dense {
            input,
            bias,
            shared,
            ..
        } => dense::squared_norms(input, bias.is_some(), g, n, shared, grams),
        Record::Embedding { ids, .. } => embedding::squared_norms(ids, g, n),
    }
}

/// A squared per-example norm `[n]` as computed in f32, and what bounds
/// how far below the exact value it may be.
pub(crate) struct SquaredNorm {
    /// The computed value.
    pub(crate) estimate: Tensor<1>,
    /// How it was computed.
    pub(crate) form: NormForm,
}

/// How a [`SquaredNorm`] was computed. (One per parameter and step: the
/// size difference between variants does not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum NormForm {
    /// A sum of squares (or a product of two) of the very values that are
    /// summed.
    Squares(SumOfSquares),
    /// A Gram form `Σ_{s,t} (a_s·a_t)(g_s·g_t)`: the squared norms of each
    /// position's input (`None`: one-hot rows) and output gradient,
    /// `[n·S]` each, and the shape of the computation.
    Gram(Option<Tensor<1>>, Tensor<1>, GramError),
}

impl SquaredNorm {
    /// A sum of `terms` squares of the per-example gradient that is summed
    /// (see [`SumOfSquares`]).
    pub(crate) fn squares(estimate: Tensor<1>, terms: usize) -> Self {
        Self {
            estimate,
            form: NormForm::Squares(SumOfSquares { terms }),
        }
    }

    /// A Gram form (see [`GramError`]).
    pub(crate) fn gram(
        estimate: Tensor<1>,
        input_sq: Option<Tensor<1>>,
        grad_sq: Tensor<1>,
        error: GramError,
    ) -> Self {
        Self {
            estimate,
            form: NormForm::Gram(input_sq, grad_sq, error),
        }
    }
}

/// A squared norm computed in f32 as a sum of `terms` squares, in any
/// order, of a per-example tensor whose row is zero or has its largest
/// magnitude in [2⁻¹⁴, 2¹⁶] (rows are scaled so, [`scale`]); or a product
/// of two such sums (the one-position ghost norm `‖a‖²‖g‖²`). It errs by
/// rounding relative to its own value (at most `γ_m`, Higham 2002, §3.1:
/// like the rounding of the clipped sum itself, this is left to f32, see
/// docs/limitations.md) and by f32's flushes below its normal range, at
/// most 2⁻¹²⁶ for each square and addition: at most `2m·2⁻⁹⁸` relative to a
/// non-zero sum, which is at least 2⁻²⁸; the bound adds that. A zero sum is
/// then an exactly zero row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SumOfSquares {
    /// The number of squares `m` (for a product of two sums, the sum of
    /// their lengths and one for the product).
    pub(crate) terms: usize,
}

impl SumOfSquares {
    /// An upper bound of the exact squared norm from the computed one.
    /// Not finite when the estimate is not.
    pub(crate) fn upper(&self, estimate: f64) -> f64 {
        if !estimate.is_finite() {
            return estimate;
        }
        let flushes = 2.0 * self.terms as f64 * 2f64.powi(-98);
        estimate.max(0.0) * (1.0 + flushes)
    }
}

/// The rounding of a squared norm computed in f32 as a Gram form
/// `N̂² = Σ_s Σ_t (a_s·a_t)(g_s·g_t)` (Gram matrices by matrix products,
/// their element-wise product, then sums over `t` and over `s`), and an
/// upper bound of the exact value from it.
///
/// The Gram form's error is not relative to `N²`: when the positions'
/// contributions `a_s g_sᵀ` cancel, `N²` is far below the products it
/// sums, and in f32 it can come out near zero or negative while the
/// per-example gradient — which book-keeping sums exactly — is large. With
/// `γ_k = k·u/(1 − k·u)` (Higham 2002, "Accuracy and Stability of Numerical
/// Algorithms", §3.1: a dot product or sum of `k` terms in any order errs
/// by at most `γ_k` times the sum of the terms' magnitudes), and `A_s ≥
/// ‖a_s‖`, `G_s ≥ ‖g_s‖`, `T = Σ_s A_s G_s`:
///
/// `|N̂² − N²| ≤ κ T² + λ`, `κ = ρ + (2γ_S + γ_S²)(1 + ρ)`,
/// `ρ = e_{d_in} + e_{d_out} + e_{d_in}e_{d_out} + u(1 + e_{d_in})(1 + e_{d_out})`,
///
/// with `u = 2⁻²⁴`, `e_d` a Gram entry's error relative to `‖x‖‖y‖`:
/// `γ_d` for plain f32 products (flex, ndarray, and wgpu without
/// matrix-multiply hardware: [`crate::backend::plain_f32_products`]), and
/// `(1 + 2⁻¹¹)²(1 + γ_d(2⁻²³)) − 1` elsewhere (CUDA may round both inputs
/// of each product to TF32 and accumulate with truncation),
/// and `λ` for results below f32's normal range, each flushed by at most
/// 2⁻¹²⁶. And by the triangle inequality `N ≤ T` always. The bound clips
/// with `min(max(N̂², 0) + κT² + λ, T²)`: a cancelling example is clipped
/// by an upper bound of its norm (so more than needed, never less). Where
/// positions do not cancel, `T² ≈ S·N²` and the bound exceeds `N²` by a
/// relative `≈ S·κ`, about `2S(d + S)·u` with plain f32 products (measured
/// on flex: norms 1.00014× exact at `S = 16`, `d = 128`; 1.004× at `S = 64`,
/// `d = 1024`; 1.026× at `S = 200`, `d = 2048`) and `≈ 4S·2⁻¹¹` with TF32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GramError {
    /// Positions `S`.
    positions: usize,
    /// Length of the input's dot products (0: one-hot rows, exact).
    d_in: usize,
    /// Length of the output gradient's dot products.
    d_out: usize,
    /// Whether the matrix products are plain f32 (else TF32 may be used).
    plain_f32: bool,
}

/// f32's unit roundoff.
const F32_UNIT: f64 = 1.0 / 16_777_216.0; // 2⁻²⁴
/// TF32's (10 stored mantissa bits).
const TF32_UNIT: f64 = 1.0 / 2_048.0; // 2⁻¹¹

/// `γ_k = k·u/(1 − k·u)`, infinite once `k·u ≥ ½`.
fn gamma(k: usize, u: f64) -> f64 {
    let ku = k as f64 * u;
    if ku < 0.5 {
        ku / (1.0 - ku)
    } else {
        f64::INFINITY
    }
}
/// The largest error of an f32 result flushed to zero or subnormal.
const F32_TINY: f64 = 1.175_494_350_822_287_5e-38; // 2⁻¹²⁶

impl GramError {
    /// A Gram form over `positions` with dot products of `d_in` (0: exact)
    /// and `d_out`, computed on `device`.
    pub(crate) fn new(
        positions: usize,
        d_in: usize,
        d_out: usize,
        device: &burn::tensor::Device,
    ) -> Self {
        Self {
            positions,
            d_in,
            d_out,
            plain_f32: plain_f32_products(device),
        }
    }

    /// `e_d`: a Gram entry's error relative to `‖x‖‖y‖` (0 for `d = 0`,
    /// exact one-hot rows).
    fn entry_error(&self, d: usize) -> f64 {
        if d == 0 {
            0.0
        } else if self.plain_f32 {
            gamma(d, F32_UNIT)
        } else {
            (1.0 + TF32_UNIT).powi(2) * (1.0 + gamma(d, 2.0 * F32_UNIT)) - 1.0
        }
    }

    /// An upper bound of one example's exact squared norm from its
    /// computed value and its positions' computed squared norms (`input_sq`
    /// `None`: one-hot rows of norm 1). Not finite when an input is not.
    pub(crate) fn upper(&self, estimate: f64, input_sq: Option<&[f32]>, grad_sq: &[f32]) -> f64 {
        if !estimate.is_finite() {
            return estimate;
        }
        // Upper bounds of each position's norms from their f32 sums of
        // squares (relative error γ_d, plus a flush per operation).
        let norm = |sq: f32, d: usize| {
            (f64::from(sq) * (1.0 + gamma(d, F32_UNIT)) + 2.0 * d as f64 * F32_TINY).sqrt()
        };
        let (mut t, mut sum_a, mut sum_g) = (0.0f64, 0.0f64, 0.0f64);
        for (p, &g_sq) in grad_sq.iter().enumerate() {
            let a = input_sq.map_or(1.0, |q| norm(q[p], self.d_in));
            let g = norm(g_sq, self.d_out);
            t += a * g;
            sum_a += a;
            sum_g += g;
        }
        if !t.is_finite() {
            return t;
        }
        let (ga, gg) = (self.entry_error(self.d_in), self.entry_error(self.d_out));
        let rho = ga + gg + ga * gg + F32_UNIT * (1.0 + ga) * (1.0 + gg);
        let gs = gamma(self.positions, F32_UNIT);
        let kappa = rho + (2.0 * gs + gs * gs) * (1.0 + rho);
        let (d_in, d_out) = (self.d_in as f64, self.d_out as f64);
        let s2 = (self.positions * self.positions) as f64;
        // Flushes: of the Gram entries (at most 2d of them each, times the
        // other Gram's entries), of their products and of the sums; twice
        // over, for the cross terms.
        let lambda = 2.0
            * (2.0 * F32_TINY * (d_out * sum_a * sum_a + d_in * sum_g * sum_g)
                + s2 * (4.0 * d_in.max(d_out).powi(2) * F32_TINY * F32_TINY + 5.0 * F32_TINY));
        // f64's own rounding of these sums: far below this margin.
        let margin = 1.0 + 1e-12;
        let bound = (estimate.max(0.0) + kappa * t * t + lambda) * margin;
        // The triangle inequality, valid whatever the Gram form's error.
        bound.min(t * t * margin)
    }
}

/// `Σ_s Σ_t m_ist` of `[n, S, S]` → `[n]`: over `t`, then over `s` (two
/// sums of `S` terms, whose rounding [`GramError`] bounds).
fn gram_sum(m: Tensor<3>, n: usize) -> Tensor<1> {
    let [_, s, _] = m.dims();
    let inner: Tensor<2> = m.sum_dim(2).reshape([n, s]);
    inner.sum_dim(1).reshape([n])
}

/// Each position's squared norm, `[n, S, d]` → `[n·S]`.
fn position_sq(t: &Tensor<3>) -> Tensor<1> {
    let [n, s, d] = t.dims();
    sq_sum(t.clone().reshape([n * s, d]), n * s)
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
        Record::Affine { .. } => unreachable!("affine records are converted first"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Gram form in f32 as the engine orders it (dot products, their
    /// products, sums over `t` then `s`), the positions' squared norms in
    /// f32, and the exact squared norm `‖Σ_s a_s g_sᵀ‖²` in f64.
    fn computed(a: &[Vec<f32>], g: &[Vec<f32>]) -> (f64, Vec<f32>, Vec<f32>, f64) {
        let dot = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .fold(0.0f32, |acc, (p, q)| p.mul_add(*q, acc))
        };
        let s = a.len();
        let mut outer = 0.0f32;
        for i in 0..s {
            let mut inner = 0.0f32;
            for j in 0..s {
                inner += dot(&a[i], &a[j]) * dot(&g[i], &g[j]);
            }
            outer += inner;
        }
        let a_sq = a.iter().map(|x| dot(x, x)).collect();
        let g_sq = g.iter().map(|x| dot(x, x)).collect();
        let (d_in, d_out) = (a[0].len(), g[0].len());
        let exact: f64 = (0..d_in)
            .flat_map(|p| (0..d_out).map(move |q| (p, q)))
            .map(|(p, q)| {
                let w: f64 = a
                    .iter()
                    .zip(g)
                    .map(|(x, y)| f64::from(x[p]) * f64::from(y[q]))
                    .sum();
                w * w
            })
            .sum();
        (f64::from(outer), a_sq, g_sq, exact)
    }

    fn error(s: usize, d_in: usize, d_out: usize) -> GramError {
        GramError {
            positions: s,
            d_in,
            d_out,
            plain_f32: true,
        }
    }

    /// Same input at two positions, output gradients `u` and `−(u − δ)`:
    /// the exact norm is `‖a‖‖δ‖`, lost in f32's Gram form; the bound
    /// stays above it, and below the triangle inequality's `T`.
    #[test]
    fn should_bound_a_cancelling_gram_form_from_above() {
        for (amp, delta) in [(3e3f32, 1.0f32), (6e4, 1.0), (1.0, 1e-6)] {
            let a: Vec<f32> = (0..6).map(|j| amp * (1.0 + 0.3 * j as f32)).collect();
            let u: Vec<f32> = (0..5).map(|k| amp * (1.0 + 0.2 * k as f32)).collect();
            let v: Vec<f32> = u.iter().map(|x| -(x - delta)).collect();
            let (estimate, a_sq, g_sq, exact) = computed(&[a.clone(), a], &[u, v]);
            let bound = error(2, 6, 5).upper(estimate, Some(&a_sq), &g_sq);
            assert!(
                bound >= exact,
                "{amp} {delta}: {bound} < {exact} (f32 gave {estimate})"
            );
            let t: f64 = a_sq
                .iter()
                .zip(&g_sq)
                .map(|(p, q)| (f64::from(*p) * f64::from(*q)).sqrt())
                .sum();
            assert!(
                bound <= t * t * 1.001,
                "{amp} {delta}: {bound} > T² = {}",
                t * t
            );
        }
    }

    /// Rows as scaled (largest magnitude 1, or in [2⁻¹⁴, 2¹⁶]) whose
    /// other entries' squares fall below f32's range: the bound is within
    /// f32's relative rounding of the exact value (here, where the few
    /// large squares are exact, not below it); a zero row stays zero.
    #[test]
    fn should_bound_a_sum_of_squares_whose_small_entries_underflow() {
        for (largest, tiny, m) in [
            (1.0f32, 1e-28f32, 12usize),
            (1.0 / 16_384.0, 1e-20, 3),
            (65_536.0, 3e-19, 1000),
        ] {
            let mut row = vec![tiny; m];
            row[m / 2] = largest;
            let computed = row.iter().fold(0.0f32, |acc, v| v.mul_add(*v, acc));
            let exact: f64 = row.iter().map(|&v| f64::from(v).powi(2)).sum();
            let bound = SumOfSquares { terms: m }.upper(f64::from(computed));
            assert!(bound >= exact, "{largest} {tiny} × {m}: {bound} < {exact}");
            assert!(bound <= exact * (1.0 + 1e-6), "{bound} vs {exact}");
        }
        let squares = SumOfSquares { terms: 100 };
        assert_eq!(squares.upper(0.0), 0.0);
        assert!(squares.upper(f64::NAN).is_nan());
    }

    /// Not finite in, not finite out (the example is then set aside).
    #[test]
    fn should_keep_a_non_finite_estimate() {
        let e = error(2, 3, 3);
        assert!(e.upper(f64::NAN, Some(&[1.0, 1.0]), &[1.0, 1.0]).is_nan());
        assert!(
            e.upper(1.0, Some(&[f32::INFINITY, 1.0]), &[1.0, 1.0])
                .is_infinite()
        );
        assert!(e.upper(1.0, None, &[f32::NAN, 1.0]).is_nan());
    }

    proptest! {
        /// Random rows of mixed magnitudes (tiny, ordinary, huge within
        /// f32's scaled range), some positions cancelling: the bound is
        /// never below the exact squared norm, and where the positions do
        /// not cancel it is within 0.1% of it.
        #[test]
        fn should_never_fall_below_the_exact_norm(
            s in 1usize..6,
            d_in in 1usize..7,
            d_out in 1usize..7,
            seed in any::<u64>(),
            cancel in any::<bool>(),
            exponent in -40i32..17,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let scale = 2f32.powi(exponent);
            let mut row = |d: usize| -> Vec<f32> {
                (0..d).map(|_| scale * rng.random_range(-1.0f32..1.0)).collect()
            };
            let mut a: Vec<Vec<f32>> = (0..s).map(|_| row(d_in)).collect();
            let mut g: Vec<Vec<f32>> = (0..s).map(|_| row(d_out)).collect();
            if cancel && s >= 2 {
                a[1] = a[0].clone();
                g[1] = g[0].iter().map(|x| -x * (1.0 - 1e-6)).collect();
            }
            let (estimate, a_sq, g_sq, exact) = computed(&a, &g);
            let bound = error(s, d_in, d_out).upper(estimate, Some(&a_sq), &g_sq);
            prop_assert!(bound >= exact, "{bound} < {exact} (f32 gave {estimate})");
            // Where the positions do not cancel much (N² ≥ T²/10), the
            // bound is tight.
            let t: f64 = a_sq
                .iter()
                .zip(&g_sq)
                .map(|(p, q)| (f64::from(*p) * f64::from(*q)).sqrt())
                .sum();
            if exponent > -20 && exact >= 0.1 * t * t {
                prop_assert!(bound <= exact * 1.001, "{bound} vs {exact}");
            }
        }
    }
}
