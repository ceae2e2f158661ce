//! The fast path's per-example independence check.
//!
//! The fast path takes example `i`'s gradient at a layer as `a_iᵀ g_i`,
//! where `g_i` is the example's rows of `∂(Σ_j ℓ_j)/∂probe`: its `k`
//! consecutive rows of the layer's dimension 0, `k` measured as the
//! layer's rows over the pass's examples. That is `∇ℓ_i` only if no other
//! example's loss reaches those rows:
//!
//! * nothing after the layer mixes the examples of the batch (a batch
//!   statistic such as `y − y.mean_dim(0)`, attention or pooling across the
//!   batch, a loss that is not each example's own);
//! * the layer's dimension 0 is the example axis (not, say, the time axis
//!   of a time-major `[T, B, F]` input, whose rows would pool the same step
//!   of every example).
//!
//! Otherwise every clipped term can depend on every example, and one
//! example can move the released sum by up to `n·C`. Neither is visible in
//! the model's structure (`validate_model` refuses BatchNorm by name and
//! forward-pass state, nothing else), so the engine measures it: the first
//! time a pass's layers (each layer call with a trainable parameter, and
//! its rows per example) are met under a loss function, it runs the loss
//! on a small window of the pass's examples, with recording on, and
//! propagates back ONE example's loss alone. Every recorded layer's output
//! gradient must then be exactly zero in the rows of every other example
//! of the window (they are, bit for bit, for a model that keeps its
//! examples apart: their gradient is a product with zero), and every layer
//! must see `k` rows per example there too. One forward pass, so dropout's
//! draws cannot make the rows differ.
//!
//! **Cost**: one forward and one backward pass of at most
//! [`CHECK_EXAMPLES`] examples, recorded, and one read-back of two values
//! per example and layer — once per engine (and its clones), model and
//! loss function, and again whenever a layer's rows per example change.
//! The clipped sum is computed first and released only once the check
//! passes. Not counted in [`GradientEngine::last_passes`].
//!
//! A check that cannot tell (a non-finite value in another example's rows,
//! or a loss whose gradient is zero at every layer) verifies nothing: that
//! pass goes to the fallback, which runs each example alone, and the check
//! runs again on the next.
//!
//! **Limits**: the check sees a gradient at one point. A model that mixes
//! examples only through a path whose gradient happens to vanish there (a
//! loss at its minimum, a dead ReLU, zero weights) passes it; the window
//! is taken around the example with the largest loss to make that
//! unlikely. Mixing *before* the first trainable DP-aware layer (the raw
//! inputs normalised by batch statistics, or the output of a frozen
//! encoder centred over the batch) leaves no trace in any trainable
//! layer's output gradient and is not seen at all — frozen layers, even
//! one called twice, run on the fast path and are not checked; a model
//! whose mixing depends on the
//! data or the batch size may pass on the batch checked. Those remain the
//! user's to avoid.

use super::{GradientEngine, Parts, loss_values};
use crate::batch::ExampleBatch;
use crate::tape::{self, Record};
use burn::module::{Module, ParamId};
use burn::tensor::Tensor;
use dpsgd_core::{Error, ParamInfo, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The examples of the check's window, at most.
pub(super) const CHECK_EXAMPLES: usize = 4;

/// A pass's layer calls that hold a trainable parameter: the call's first
/// trainable parameter (the key of the call: the fast path runs only when
/// no parameter is used by two calls) and its rows per example.
pub(super) type Layout = Vec<(ParamId, usize)>;

/// What the check has verified: the layouts it passed, under the loss
/// function of that name.
#[derive(Debug, Default)]
struct Facts {
    loss: Option<&'static str>,
    rows: HashMap<ParamId, usize>,
}

/// The layer calls verified independent, shared by an engine and its
/// clones (a data-parallel worker's copy verifies for the original).
#[derive(Debug, Clone, Default)]
pub(super) struct Verified(Arc<Mutex<Facts>>);

impl Verified {
    /// Whether every call of `layout` was verified, with these rows per
    /// example, under the loss function `loss`.
    pub(super) fn covers(&self, loss: &'static str, layout: &Layout) -> bool {
        let facts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        facts.loss == Some(loss)
            && layout
                .iter()
                .all(|(id, k)| facts.rows.get(id).is_some_and(|v| v == k))
    }

    /// Records that `layout` passed under `loss` (what was verified under
    /// another loss function is forgotten).
    pub(super) fn insert(&self, loss: &'static str, layout: &Layout) {
        let mut facts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if facts.loss != Some(loss) {
            facts.loss = Some(loss);
            facts.rows.clear();
        }
        facts.rows.extend(layout.iter().copied());
    }
}

/// What the check found, when it refused nothing.
pub(super) enum Outcome {
    /// Every layer keeps the examples apart.
    Independent,
    /// The gradients could not tell (a non-finite value in another
    /// example's rows, no finite loss, too few examples): why, for a test
    /// or a debugger; the engine reports a fixed reason
    /// ([`super::INCONCLUSIVE`]), since why can depend on the data.
    Inconclusive(#[allow(dead_code)] String),
}

/// The rows (dimension 0) a record saw; `None` for a record without
/// parameters.
fn rows(r: &Record) -> Option<usize> {
    match r {
        Record::Dense { probe, .. }
        | Record::Conv { probe, .. }
        | Record::Embedding { probe, .. }
        | Record::Affine { probe, .. } => Some(probe.dims()[0]),
        Record::Recurrent { input, .. } => Some(input.dims()[0]),
        Record::Replicated { params } => params.first().map(|(_, t)| t.dims()[0]),
    }
}

/// The layout of a pass of `n` examples: each record with a parameter for
/// which `trainable` holds, keyed by the first such parameter. A record
/// whose rows are not a multiple of `n` is left out (the fast path refuses
/// it if its output reaches the loss).
pub(super) fn layout(records: &[Record], n: usize, trainable: impl Fn(&ParamId) -> bool) -> Layout {
    records
        .iter()
        .filter_map(|r| {
            let key = r.params().into_iter().find(|id| trainable(id))?;
            let rows = rows(r)?;
            (n > 0 && rows % n == 0).then_some((key, rows / n))
        })
        .collect()
}

/// The window's size for a pass of `n ≥ 2` examples: fewer than `n` when
/// `n > 2`, so that a layer whose rows do not grow with the examples (a
/// time-major input) shows as a different number of rows per example.
fn window(n: usize) -> usize {
    if n <= 2 { n } else { CHECK_EXAMPLES.min(n - 1) }
}

impl GradientEngine {
    /// Runs the independence check on a window of `batch`, a pass of the
    /// fast path whose losses were `losses` and whose layout was `layout`
    /// (see the module's documentation); `params` names the layers.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedLayer`] naming the first layer whose output
    /// gradient of one example's loss is not zero in another example's
    /// rows, or whose rows do not grow with the examples;
    /// [`Error::Shape`] when the loss function does not return one loss per
    /// example of the window.
    pub(super) fn check_independence<M, B, F>(
        &self,
        model: &M,
        batch: &B,
        loss_fn: &F,
        losses: &[f32],
        layout: &Layout,
        params: &[ParamInfo],
    ) -> Result<Outcome>
    where
        M: Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        let n = batch.num_examples();
        if n < 2 {
            return Ok(Outcome::Inconclusive("a pass of one example".into()));
        }
        let m = window(n);
        // The example with the largest finite loss: the least likely to sit
        // where its loss's gradient vanishes.
        let Some(e) = losses
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
        else {
            return Ok(Outcome::Inconclusive("no finite loss".into()));
        };
        let start = e.min(n - m);
        let target = e - start;
        let expected: HashMap<ParamId, usize> = layout.iter().copied().collect();
        if m == n {
            // Two examples leave no window smaller than the pass, and a
            // layer whose rows do not grow with the examples (a time-major
            // input of two steps) would show two rows per example in both:
            // its rows are counted again on one example alone (one more
            // forward pass, no backward).
            let one = batch.slice_examples(e, e + 1);
            let (_, records) = tape::record(self.conv_strategy, || loss_fn(model, &one));
            for r in records {
                let Some(key) = r.params().into_iter().find(|id| expected.contains_key(id)) else {
                    continue;
                };
                if let (Some(rows), Some(&k)) = (rows(&r), expected.get(&key))
                    && rows != k
                {
                    return Err(not_the_example_axis(key, params, n, k, rows, 1));
                }
            }
        }
        let sub = batch.slice_examples(start, start + m);
        let (sub_losses, records) = tape::record(self.conv_strategy, || loss_fn(model, &sub));
        if !loss_values(&sub_losses, m)?[target].is_finite() {
            return Ok(Outcome::Inconclusive(
                "the checked example's loss is not finite".into(),
            ));
        }
        let mut grads = sub_losses.narrow(0, target, 1).sum().backward();
        let mut parts = Parts::default();
        // Per checked tensor: its layer's key, and the parts holding, per
        // example of the window, the largest finite |value| of its rows and
        // the number of non-finite values there.
        let mut checked: Vec<(ParamId, usize, usize)> = Vec::new();
        for r in records {
            let Some(key) = r.params().into_iter().find(|id| expected.contains_key(id)) else {
                continue; // frozen, or not met in the pass
            };
            let (Some(rows), Some(&k)) = (rows(&r), expected.get(&key)) else {
                continue;
            };
            if rows != m * k {
                return Err(not_the_example_axis(key, params, n, k, rows, m));
            }
            let per_row: Vec<Tensor<2>> = match r {
                Record::Replicated { params } => tape::replicated_grads(params, &mut grads)
                    .into_iter()
                    .flatten()
                    .map(|(_, g)| g)
                    .collect(),
                r => r
                    .with_output_grad(&mut grads)
                    .map(|(_, g)| {
                        let [rows, a, b] = g.dims();
                        g.reshape([rows, a * b])
                    })
                    .into_iter()
                    .collect(),
            };
            for g in per_row {
                let [rows, width] = g.dims();
                if rows == 0 || width == 0 {
                    continue;
                }
                let g = g.reshape([m, rows / m * width]);
                let finite = g.clone().is_finite();
                let largest = g
                    .abs()
                    .mask_fill(finite.clone().bool_not(), 0.0)
                    .max_dim(1)
                    .reshape([m]);
                let non_finite = finite.bool_not().float().sum_dim(1).reshape([m]);
                checked.push((key, parts.push(largest), parts.push(non_finite)));
            }
        }
        drop(grads);
        let values = parts.read();
        let mut unclear = None;
        for &(key, largest, non_finite) in &checked {
            for j in (0..m).filter(|&j| j != target) {
                // A finite non-zero value is a real dependence: a zero
                // gradient times anything finite is zero.
                if values.at(largest, j) > 0.0 {
                    return Err(refusal(
                        key,
                        params,
                        "the loss of one example has a gradient in another example's rows of this layer's output: either the model mixes the examples of a batch after this layer (a batch statistic such as y - y.mean_dim(0), attention or pooling across the batch, a loss that is not each example's own), or the layer's first dimension is not the example axis (a time-major [T, B, F] input). Per-example clipping would then bound nothing: keep each example in its own rows of dimension 0 (make a time-major input batch-first) and mix none.".to_owned(),
                    ));
                }
                if values.at(non_finite, j) > 0.0 && unclear.is_none() {
                    unclear = Some(key);
                }
            }
        }
        if let Some(key) = unclear {
            return Ok(Outcome::Inconclusive(format!(
                "a non-finite gradient in another example's rows of `{}`",
                name(key, params).0
            )));
        }
        // A loss whose gradient is zero in every layer (at a minimum, or
        // examples so alike that a batch statistic's gradient vanishes)
        // shows nothing either way.
        if !checked
            .iter()
            .any(|&(_, largest, _)| values.at(largest, target) > 0.0)
        {
            return Ok(Outcome::Inconclusive(
                "the checked example's loss has no gradient at any layer".into(),
            ));
        }
        Ok(Outcome::Independent)
    }
}

/// A layer's path and type, from its parameter `key`.
fn name(key: ParamId, params: &[ParamInfo]) -> (String, String) {
    match params.iter().find(|p| p.id == key) {
        Some(p) => {
            let layer = p.layer();
            let ty = p
                .containers
                .last()
                .map(|c| c.rsplit(':').next().unwrap_or(c).to_owned())
                .unwrap_or_default();
            (
                if layer.is_empty() {
                    "<root>".into()
                } else {
                    layer
                },
                ty,
            )
        }
        None => (key.to_string(), String::new()),
    }
}

/// The check's refusal of the layer of `key`.
fn refusal(key: ParamId, params: &[ParamInfo], suggestion: String) -> Error {
    let (path, layer) = name(key, params);
    Error::UnsupportedLayer {
        path,
        layer,
        suggestion,
    }
}

/// The refusal of a layer that saw `n · k` rows for `n` examples but
/// `rows` for `m`: its first dimension is not the example axis.
fn not_the_example_axis(
    key: ParamId,
    params: &[ParamInfo],
    n: usize,
    k: usize,
    rows: usize,
    m: usize,
) -> Error {
    refusal(
        key,
        params,
        format!(
            "its first dimension is not the example axis: it saw {} rows for {n} examples but {rows} for {m}, where each example must be the same number of consecutive rows; a time-major input ([T, B, F]) must be made batch-first ([B, T, F]) before it",
            n * k
        ),
    )
}
