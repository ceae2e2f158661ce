//! The per-example gradient engine: clipped gradient sums without
//! materialising per-example gradients where it can avoid it.
//!
//! **Fast path** (every trainable parameter belongs to a DP-aware layer):
//! one forward pass records each layer's input `a` and a zero probe on its
//! output (see [`crate::tape`]); one ordinary backward pass gives the
//! per-example output gradients `g = ∂L/∂probe` (with `L = Σ_i ℓ_i`). Then,
//! per layer:
//!
//! * squared per-example norms by the *ghost norm* identity
//!   `‖∇W_i‖² = ‖a_i‖²‖g_i‖²` for one position, or the Gram form
//!   `Σ_{t,s}(a_it·a_is)(g_it·g_is)` for sequences and unfolded convolutions —
//!   or by materialising `a_iᵀg_i` when that is cheaper (chosen per layer by
//!   size, as "mixed ghost clipping", Bu et al. 2022);
//! * the clipped sum by *book-keeping* `Σ_i c_i a_iᵀ g_i = aᵀ(c ⊙ g)`: one
//!   matmul per layer, no second backward pass (Bu et al. 2023) — or, for a
//!   sequence layer whose per-example gradients take no more than twice
//!   the memory of its input and output gradient, those gradients
//!   materialised once and kept, so that norms and sum are two cheap
//!   reductions of them (a per-layer hybrid in the spirit of Bu et al.
//!   2023's mixed book-keeping; `grad_sample::dense`).
//!
//! The per-layer math lives in [`crate::grad_sample`], one file per layer
//! kind; this module keeps the coverage check, the path choice and the
//! grouping of parameters into clipping groups.
//!
//! The fast path's `g_i` is example `i`'s rows of the *summed* loss's
//! gradient: it is `∂ℓ_i/∂probe_i` only when no other example's loss
//! reaches those rows — nothing after the layer mixes examples, and the
//! layer's dimension 0 is the example axis. The **independence check**
//! (`independence.rs`) measures that on a window of a few examples the
//! first time a pass's layers are met, and refuses the model otherwise;
//! afterwards every layer must see the same number of rows per example,
//! or the check runs again.
//!
//! **Fallback** (any other module, in `fallback.rs`): micro-batches of one
//! example, one backward each. Correct and slow; chosen automatically and
//! reported in [`ClippedGradients::method`].

use crate::batch::ExampleBatch;
use crate::canary::CanaryContext;
use crate::grad_sample::{
    Factor, GramError, Item, NormForm, Scaled, SharedGrams, SumOfSquares, clipped_sums,
    keep_per_example, materialize, scale, squared_norms,
};
use crate::layers::ConvStrategy;
use crate::tape::{self, Record};
use burn::module::{Module, ParamId};
use burn::tensor::{Bool, Gradients, Tensor, TensorData};
use dpsgd_core::gradients::add_to_sum;
use dpsgd_core::{
    ClippedGradients, Clipping, Error, GradientMethod, Result, layer_groups, round_factor,
    trainable_params,
};
use std::collections::{HashMap, HashSet};

/// The fallback's reason for a pass whose independence check was
/// inconclusive: fixed, and never remembered as the model's (the next pass
/// is checked again).
pub(crate) const INCONCLUSIVE: &str = "the per-example independence check was inconclusive for this pass (too few examples, or no loss to check): it ran by the fallback and is checked again on the next";

mod fallback;
mod independence;
mod passes;

pub use passes::PassSize;

/// How the engine chooses between its two paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineMode {
    /// The fast path when the model allows it, else the fallback.
    #[default]
    Auto,
    /// Always the fallback (for testing and comparison).
    FallbackOnly,
}

/// Computes `Σ_i clip(∇ℓ_i)` for a batch.
#[derive(Debug, Clone)]
pub struct GradientEngine {
    clipping: Clipping,
    mode: EngineMode,
    conv_strategy: ConvStrategy,
    pass_size: PassSize,
    /// The passes of the last call.
    last_passes: usize,
    /// Set once the fast path was found not to cover the model.
    fallback_reason: Option<String>,
    /// The layer calls the independence check verified (shared with
    /// clones: see `independence.rs`).
    verified: independence::Verified,
    /// Test-only planted bug ([`dpsgd_core::fault::MechanismFault::UnclippedExample`]):
    /// the first example of every chunk is not clipped.
    pub(crate) unclipped_first: bool,
}

impl GradientEngine {
    /// An engine with the given clipping policy.
    pub fn new(clipping: Clipping) -> Self {
        Self {
            clipping,
            mode: EngineMode::Auto,
            conv_strategy: ConvStrategy::Auto,
            pass_size: PassSize::Auto,
            last_passes: 0,
            fallback_reason: None,
            verified: independence::Verified::default(),
            unclipped_first: false,
        }
    }

    /// Chooses the path.
    pub fn with_mode(mut self, mode: EngineMode) -> Self {
        self.mode = mode;
        self
    }

    /// How the DP-aware convolutions compute their output and per-example
    /// gradients while this engine records ([`ConvStrategy::Auto`] by
    /// default). The result is the same up to rounding; only time and
    /// memory differ.
    pub fn with_conv_strategy(mut self, strategy: ConvStrategy) -> Self {
        self.conv_strategy = strategy;
        self
    }

    /// The convolution strategy.
    pub fn conv_strategy(&self) -> ConvStrategy {
        self.conv_strategy
    }

    /// How a batch is split into forward and backward passes
    /// ([`PassSize::Auto`] by default: on a CPU, passes whose records stay
    /// under [`PassSize::DEFAULT_BUDGET`] values). The clipped sum is the
    /// same up to the order of f32 additions; only time and memory differ
    /// — but for a model that draws randomness in its forward pass
    /// (dropout): under a budget, a batch of more than
    /// [`PassSize::MIN_EXAMPLES`] examples is first measured by a forward
    /// pass of its first example, which draws from burn's generator too.
    pub fn with_pass_size(mut self, size: PassSize) -> Self {
        self.pass_size = size;
        self
    }

    /// The pass size policy.
    pub fn pass_size(&self) -> PassSize {
        self.pass_size
    }

    /// How many forward and backward passes the last
    /// [`clipped_gradients`](Self::clipped_gradients) call took (not
    /// counting the one-example forward pass that measures a batch for a
    /// budget, the independence check's pass over a few examples, nor the
    /// recomputation around a non-finite example).
    pub fn last_passes(&self) -> usize {
        self.last_passes
    }

    /// The clipping policy.
    pub fn clipping(&self) -> &Clipping {
        &self.clipping
    }

    /// Replaces the clipping policy (adaptive clipping changes C every step).
    pub fn set_clipping(&mut self, clipping: Clipping) {
        self.clipping = clipping;
    }

    /// Why the fast path is not used, once that is known.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Remembers why the fast path failed on a copy of this engine (a
    /// data-parallel worker's), so that later steps go straight to the
    /// fallback instead of trying again. Does nothing in
    /// [`EngineMode::FallbackOnly`] or when a reason is already known.
    pub(crate) fn remember_fallback(&mut self, reason: &str) {
        if self.mode == EngineMode::Auto && self.fallback_reason.is_none() {
            self.fallback_reason = Some(reason.to_owned());
        }
    }

    /// The clipped gradient sum of `batch` under `loss_fn`, which must
    /// return one loss per example (`[batch]`, not reduced). The result
    /// carries this engine's clipping policy.
    ///
    /// `model` must live on an autodiff device; it is checked with
    /// [`validate_model`](crate::validate_model) first. `loss_fn` must
    /// accept any run of consecutive examples of the batch, down to one:
    /// the engine splits a batch into passes ([`PassSize`]), measures it on
    /// its first example, recomputes it around a non-finite example, and
    /// runs it on a window of at most four examples of a pass for the
    /// independence check (see Errors) — one more call, on the first call
    /// and whenever a layer's rows per example change, which a model with
    /// dropout also draws randomness for.
    ///
    /// # Privacy
    ///
    /// An example whose loss or gradient norm is NaN or infinite (a crafted
    /// record can overflow f32) contributes zero and is counted in
    /// [`ClippedGradients::dropped`]: the step goes on either way, so
    /// whether such a record is present does not decide whether the run
    /// fails. The batch is then recomputed without it.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedLayer`] for a model with a BatchNorm or with
    /// non-parameter state that its forward pass updates
    /// ([`validate_model`](crate::validate_model)), and, on the fast path,
    /// for a model the per-example independence check catches: one
    /// example's loss has a gradient in another example's rows of a DP-aware
    /// layer's output (examples mixed after that layer, or a layer whose
    /// dimension 0 is not the example axis), or a layer's rows do not grow
    /// with the examples. The check runs on a window of at most four
    /// examples of the first pass, by one extra forward and backward pass
    /// of those examples, whenever the layers' rows per example (or the
    /// loss function's type) are new to this engine and its clones; it
    /// cannot see examples mixed before the first DP-aware layer, nor a
    /// dependence whose gradient vanishes on the examples it checks —
    /// keeping the examples of a batch apart stays the caller's duty. The
    /// fallback runs each example alone, so it never mixes them (but trains
    /// a model that mixes them on batches of one). Also [`Error::Shape`]
    /// when the loss is not one value per example, or a layer's rows are
    /// not a multiple of the examples, and an invalid clipping policy
    /// (including per-layer budgets that do not fit the model).
    /// Nothing is changed in either case (but for what the engine learnt
    /// of the model: [`fallback_reason`](Self::fallback_reason), and the
    /// passes counted in [`last_passes`](Self::last_passes)).
    pub fn clipped_gradients<M, B, F>(
        &mut self,
        model: &M,
        batch: &B,
        loss_fn: F,
    ) -> Result<ClippedGradients>
    where
        M: Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        crate::validate::validate_model(model)?;
        self.clipping.validate()?;
        let n = batch.num_examples();
        let size = self
            .pass_size
            .resolve(model.devices().iter().any(crate::backend::is_host));
        // The records' values per example, from a forward pass of the first
        // example alone (sizes only: the shapes of the model and of the
        // batch). Measured afresh by every call, so that a call's passes
        // depend on its own batch only: a resumed run, or a data-parallel
        // worker's fresh copy of the engine, splits a batch exactly as an
        // uninterrupted run does (and sums it bit for bit alike).
        let per_example = match size {
            PassSize::Budget(_) if n > PassSize::MIN_EXAMPLES && self.fast_path_open() => {
                let one = batch.slice_examples(0, 1);
                let (_, records) = tape::record(self.conv_strategy, || loss_fn(model, &one));
                // A model the fast path does not cover goes to the fallback
                // now, in one pass, as it would on any later call.
                if let Some(reason) = coverage_gap(&trainable_params(model), &records) {
                    self.fallback_reason = Some(reason);
                    None
                } else {
                    Some(records.iter().map(Record::held_values).sum::<usize>()).filter(|&v| v > 0)
                }
            }
            _ => None,
        };
        let first = size.next_pass(n.max(1), per_example);
        if first >= n {
            self.last_passes = 1;
            return self.clipped(model, batch, &loss_fn);
        }
        self.last_passes = 0;
        // Passes over consecutive examples; clipping is per example, so
        // their clipped sums add up to the batch's.
        let mut total = ClippedGradients::empty(self.clipping.clone());
        let mut start = 0;
        while start < n {
            let end = start + size.next_pass(n - start, per_example);
            total.accumulate(self.clipped(
                model,
                &batch.slice_examples(start, end),
                &loss_fn,
            )?)?;
            self.last_passes += 1;
            start = end;
        }
        Ok(total)
    }

    /// Whether the fast path may be tried (it records the layers).
    fn fast_path_open(&self) -> bool {
        self.mode == EngineMode::Auto && self.fallback_reason.is_none()
    }

    fn clipped<M, B, F>(&mut self, model: &M, batch: &B, loss_fn: &F) -> Result<ClippedGradients>
    where
        M: Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        let n = batch.num_examples();
        if n == 0 {
            return Ok(ClippedGradients::empty(self.clipping.clone()));
        }
        let params = trainable_params(model);
        let groups = layer_groups(&params);
        let mut group_of = HashMap::new();
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                group_of.insert(params[i].id, g);
            }
        }
        let known = match self.mode {
            EngineMode::FallbackOnly => Some("fallback forced".to_owned()),
            EngineMode::Auto => self.fallback_reason.clone(),
        };
        let canaries = match batch.gradient_canaries() {
            Some(rows) => Some(CanaryContext::new(rows, &params, &group_of, groups.len())?),
            None => None,
        };
        if let Some(reason) = known {
            return self.fallback(model, batch, loss_fn, &group_of, canaries.as_ref(), &reason);
        }
        let (losses, records) = tape::record(self.conv_strategy, || loss_fn(model, batch));
        let mut loss_values = loss_values(&losses, n)?;
        if let Some(reason) = coverage_gap(&params, &records) {
            drop((losses, records));
            let result =
                self.fallback(model, batch, loss_fn, &group_of, canaries.as_ref(), &reason);
            self.fallback_reason = Some(reason);
            return result;
        }
        // A canary slot's own loss (of its placeholder input) is masked out
        // of the backward pass: its gradient is the canary's, added below.
        let losses = match &canaries {
            Some(c) => {
                let mask: Vec<bool> = (0..n).map(|i| c.is_canary(i)).collect();
                for (i, &masked) in mask.iter().enumerate() {
                    if masked {
                        loss_values[i] = 0.0;
                    }
                }
                let device = losses.device();
                losses.mask_fill(
                    Tensor::<1, Bool>::from_data(TensorData::new(mask, [n]), &device),
                    0.0,
                )
            }
            None => losses,
        };
        // Each layer call's rows per example; the independence check runs
        // unless this loss function's calls were verified with them.
        let layout = independence::layout(&records, n, |id| group_of.contains_key(id));
        let loss_name = std::any::type_name::<F>();
        let check = n >= 2 && !layout.is_empty() && !self.verified.covers(loss_name, &layout);
        let mut grads = losses.sum().backward();
        let found = self.fast_path(
            records,
            &mut grads,
            &loss_values,
            &group_of,
            groups.len(),
            canaries.as_ref(),
        )?;
        drop(grads);
        match found {
            FastPath::Clipped(mut clipped) => {
                if check {
                    match self.check_independence(
                        model,
                        batch,
                        loss_fn,
                        &loss_values,
                        &layout,
                        &params,
                    )? {
                        independence::Outcome::Independent => {
                            self.verified.insert(loss_name, &layout);
                        }
                        // This pass by the fallback, which runs each
                        // example alone; the check runs again next time.
                        independence::Outcome::Inconclusive(_) => {
                            drop(clipped);
                            return self.fallback(
                                model,
                                batch,
                                loss_fn,
                                &group_of,
                                canaries.as_ref(),
                                // A fixed reason (the report shows the
                                // last step's method): why it was
                                // inconclusive can depend on the data.
                                INCONCLUSIVE,
                            );
                        }
                    }
                }
                clipped.set_loss_sum(loss_values.iter().map(|&v| f64::from(v)).sum());
                Ok(clipped)
            }
            FastPath::NonFinite(bad) => self.without(model, batch, loss_fn, &bad),
        }
    }

    /// The clipped sum of `batch` without the examples in `bad` (sorted):
    /// the runs between them are computed on their own and added up, and
    /// each bad example is counted as dropped.
    fn without<M, B, F>(
        &mut self,
        model: &M,
        batch: &B,
        loss_fn: &F,
        bad: &[usize],
    ) -> Result<ClippedGradients>
    where
        M: Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        let mut total = ClippedGradients::empty(self.clipping.clone());
        let mut start = 0;
        for end in bad
            .iter()
            .copied()
            .chain(std::iter::once(batch.num_examples()))
        {
            if end > start {
                total.accumulate(self.clipped(
                    model,
                    &batch.slice_examples(start, end),
                    loss_fn,
                )?)?;
            }
            if end < batch.num_examples() {
                total.push_dropped();
            }
            start = end + 1;
        }
        Ok(total)
    }

    fn fast_path(
        &self,
        records: Vec<Record>,
        grads: &mut Gradients,
        loss_values: &[f32],
        group_of: &HashMap<ParamId, usize>,
        n_groups: usize,
        canaries: Option<&CanaryContext<'_>>,
    ) -> Result<FastPath> {
        let n = loss_values.len();
        let layers = records.len();
        // Per-example output gradients; a layer whose output did not reach
        // the loss has zero gradient and is skipped.
        let mut work: Vec<Item> = Vec::with_capacity(records.len());
        for r in records {
            // A layer whose parameters are all frozen releases nothing: its
            // per-example work (a convolution's patches) is skipped.
            if r.params().iter().all(|id| !group_of.contains_key(id)) {
                continue;
            }
            if let Record::Replicated { params } = r {
                if let Some(per_row) = crate::tape::replicated_grads(params, grads) {
                    work.push(per_example_sums(per_row, n)?);
                }
                continue;
            }
            if let Some((r, g)) = r.with_output_grad(grads) {
                // Several rows per example (augmentation multiplicity): an
                // example's rows become one longer sequence.
                let k = rows_per_example(g.dims()[0], n)?;
                work.push(materialize(r, g, k));
            }
        }
        // Rows of a per-example tensor outside ordinary magnitudes are
        // scaled to [−1, 1] first, so that no square or product overflows
        // or underflows f32; the scales come back to the host and multiply
        // in f64. Materialised per-example gradients (sequence layers
        // where keeping them is cheaper, normalisation layers' affine maps,
        // a sequence layer's bias) are computed then, from the scaled
        // tensors.
        let work: Vec<Scaled> = keep_per_example(scale(work, n), n);
        // Squared norms, scales ([n] each) and the positions' squared norms
        // of Gram forms ([n·S]), read back at once.
        let mut parts = Parts::default();
        // Per trainable parameter: (item, parameter, group, part of its
        // scaled squared norm, parts of its scales).
        let mut slots: Vec<Slot> = Vec::new();
        // Gram matrices of tensors several records hold (a recurrent
        // layer's gates), computed once.
        let mut grams = SharedGrams::new(work.iter().map(|s| &s.item));
        for (item_index, scaled) in work.iter().enumerate() {
            let params = scaled.item.params();
            let norms = squared_norms(&scaled.item, n, &mut grams);
            for (k, (id, sq)) in params.into_iter().zip(norms).enumerate() {
                // Frozen parameters are not released: they do not count.
                let Some(&group) = group_of.get(&id) else {
                    continue;
                };
                let norm_part = parts.push(sq.estimate);
                let bound = match sq.form {
                    NormForm::Squares(squares) => Bound::Squares(squares),
                    NormForm::Gram(input_sq, grad_sq, error) => Bound::Gram {
                        input_sq: input_sq.map(|t| parts.push(t)),
                        grad_sq: parts.push(grad_sq),
                        error,
                    },
                };
                let scale_parts: Vec<usize> = scaled.scales[k]
                    .iter()
                    .map(|t| parts.push(t.clone()))
                    .collect();
                slots.push(Slot {
                    item: item_index,
                    param: k,
                    group,
                    norm_part,
                    bound,
                    scale_parts,
                });
            }
        }
        drop(grams);
        let values = parts.read();
        let part = |p: usize, i: usize| f64::from(values.at(p, i));
        // Per slot and example: the product of the scales (f64).
        let slot_scales: Vec<Vec<f64>> = slots
            .iter()
            .map(|slot| {
                (0..n)
                    .map(|i| slot.scale_parts.iter().map(|&p| part(p, i)).product())
                    .collect()
            })
            .collect();
        let mut group_sq = vec![vec![0.0f64; n]; n_groups];
        for (slot, scales) in slots.iter().zip(&slot_scales) {
            for i in 0..n {
                // Every computed squared norm gives way to an upper bound
                // of the exact value (grad_sample::{SumOfSquares, GramError}).
                let estimate = part(slot.norm_part, i);
                let sq = match &slot.bound {
                    Bound::Squares(squares) => squares.upper(estimate),
                    Bound::Gram {
                        input_sq,
                        grad_sq,
                        error,
                    } => {
                        let positions = |p: usize| values.row(p, i, n);
                        error.upper(estimate, input_sq.map(positions), positions(*grad_sq))
                    }
                };
                group_sq[slot.group][i] += sq * scales[i] * scales[i];
            }
        }
        // A canary slot's gradient is its canary's (its own is masked to
        // zero): its norms enter the clipping like any example's.
        if let Some(c) = canaries {
            let canary_sq: Vec<Option<Vec<f64>>> = (0..n).map(|i| c.group_sq(i)).collect();
            for (g, column) in group_sq.iter_mut().enumerate() {
                for (cell, sq) in column.iter_mut().zip(&canary_sq) {
                    if let Some(sq) = sq {
                        *cell = sq[g];
                    }
                }
            }
        }
        let total: Vec<f64> = (0..n)
            .map(|i| group_sq.iter().map(|g| g[i]).sum::<f64>().sqrt())
            .collect();
        // A NaN/inf loss or norm would poison the book-keeping products of
        // the whole batch (0·∞ = NaN): such examples are taken out first.
        let bad: Vec<usize> = (0..n)
            .filter(|&i| !(loss_values[i].is_finite() && total[i].is_finite()))
            .collect();
        if !bad.is_empty() {
            return Ok(FastPath::NonFinite(bad));
        }
        // Norms beyond f32's range are reported as its largest value.
        // A left-out canary's slot stands for a removed record: in no norm
        // (adaptive clipping's count must not see it), only counted.
        let absent: Vec<bool> = (0..n)
            .map(|i| canaries.is_some_and(|c| c.is_absent(i)))
            .collect();
        let norms: Vec<f32> = total
            .iter()
            .zip(&absent)
            .filter(|(_, a)| !**a)
            .map(|(&v, _)| (v as f32).min(f32::MAX))
            .collect();
        let absent = absent.iter().filter(|a| **a).count();
        let with_absent = |mut c: ClippedGradients| {
            (0..absent).for_each(|_| c.push_absent());
            c
        };
        let mut factors = self.clipping.exact_factors(&group_sq, n)?;
        if self.unclipped_first {
            factors.iter_mut().for_each(|g| g[0] = 1.0);
        }
        let method = GradientMethod::FastPath { layers };
        let device = match work.first() {
            Some(Scaled {
                item: Item::Recorded(_, g),
                ..
            }) => g.device(),
            Some(Scaled {
                item: Item::PerExample(v),
                ..
            }) => v[0].1.device(),
            None => {
                return ClippedGradients::new(HashMap::new(), norms, method, self.clipping.clone())
                    .map(|c| FastPath::Clipped(with_absent(c)));
            }
        };
        let mut sums = HashMap::new();
        if let Some(c) = canaries {
            for (id, t) in c.clipped_sums(|i, g| factors[g][i], &device) {
                add_to_sum(&mut sums, id, t);
            }
        }
        // Per item, the factor of each parameter: c_i · (its scale)_i, rounded
        // toward zero (zero for a frozen parameter, whose sum is dropped).
        let mut item_factors: Vec<Vec<Option<Vec<f32>>>> =
            work.iter().map(|s| vec![None; s.scales.len()]).collect();
        for (slot, scales) in slots.iter().zip(&slot_scales) {
            let c: Vec<f32> = (0..n)
                .map(|i| round_factor(factors[slot.group][i], scales[i]))
                .collect();
            item_factors[slot.item][slot.param] = Some(c);
        }
        for (scaled, factors) in work.into_iter().zip(item_factors) {
            if factors.iter().all(Option::is_none) {
                continue; // only frozen parameters
            }
            // A parameter whose factors equal the first one's (a bias under
            // the weight's clipping, inputs of scale 1) shares its tensor:
            // the scaled output gradient is then computed once.
            let factors: Vec<Factor> = factors
                .iter()
                .map(|f| {
                    let same_as_first = f.is_some() && f == &factors[0];
                    let tensor = match f {
                        Some(c) => Tensor::from_data(TensorData::new(c.clone(), [n]), &device),
                        None => Tensor::zeros([n], &device),
                    };
                    Factor {
                        tensor,
                        same_as_first,
                    }
                })
                .collect();
            for (id, t) in clipped_sums(scaled.item, factors) {
                if group_of.contains_key(&id) {
                    add_to_sum(&mut sums, id, t);
                }
            }
        }
        ClippedGradients::new(sums, norms, method, self.clipping.clone())
            .map(|c| FastPath::Clipped(with_absent(c)))
    }
}

/// A replicated record's per-row gradients `[B·k, numel]` as per-example
/// ones `[B, numel]` (an example's `k` rows summed).
fn per_example_sums(per_row: Vec<(ParamId, Tensor<2>)>, n: usize) -> Result<Item> {
    let mut out = Vec::with_capacity(per_row.len());
    for (id, g) in per_row {
        let [rows, numel] = g.dims();
        let k = rows_per_example(rows, n)?;
        let g = if k == 1 {
            g
        } else {
            g.reshape([n, k, numel]).sum_dim(1).reshape([n, numel])
        };
        out.push((id, g));
    }
    Ok(Item::PerExample(out))
}

/// The rows per example of a layer whose output gradient has `rows` rows
/// in a pass of `n` examples.
///
/// # Errors
///
/// [`Error::Shape`] when `rows` is not a multiple of `n`.
fn rows_per_example(rows: usize, n: usize) -> Result<usize> {
    if n == 0 || !rows.is_multiple_of(n) {
        return Err(Error::Shape(format!(
            "a layer saw {rows} rows for {n} examples: each example must be the same number of consecutive rows"
        )));
    }
    Ok(rows / n)
}

/// Where the fast path would refuse a pass of `n` examples: a layer call
/// with a trainable parameter (`trainable`) whose output reaches the loss
/// (`grads`, the losses' backward pass) with rows that are not a multiple
/// of `n` — the refusal of [`GradientEngine::fast_path`], which `records`
/// reach in the same order.
///
/// # Errors
///
/// That refusal, an [`Error::Shape`].
fn check_rows(
    records: Vec<Record>,
    grads: &mut Gradients,
    n: usize,
    trainable: impl Fn(&ParamId) -> bool,
) -> Result<()> {
    for r in records {
        if !r.params().iter().any(&trainable) {
            continue;
        }
        if let Record::Replicated { params } = r {
            if let Some(per_row) = crate::tape::replicated_grads(params, grads) {
                for (_, g) in per_row {
                    rows_per_example(g.dims()[0], n)?;
                }
            }
        } else if let Some((_, g)) = r.with_output_grad(grads) {
            rows_per_example(g.dims()[0], n)?;
        }
    }
    Ok(())
}

/// Where one trainable parameter's norm and scales are in the read-back
/// values.
struct Slot {
    /// Index of its item.
    item: usize,
    /// Its position among the item's parameters.
    param: usize,
    /// Its clipping group.
    group: usize,
    /// The part holding its scaled squared norm.
    norm_part: usize,
    /// What bounds its error.
    bound: Bound,
    /// The parts holding its scales.
    scale_parts: Vec<usize>,
}

/// What bounds a slot's squared norm from above: for a Gram form, the
/// parts holding its positions' squared norms.
enum Bound {
    Squares(SumOfSquares),
    Gram {
        input_sq: Option<usize>,
        grad_sq: usize,
        error: GramError,
    },
}

/// Tensors `[len]` to read back to the host in one transfer.
#[derive(Default)]
struct Parts {
    tensors: Vec<Tensor<1>>,
    offsets: Vec<usize>,
    len: usize,
}

impl Parts {
    /// Adds a tensor; its index.
    fn push(&mut self, t: Tensor<1>) -> usize {
        self.offsets.push(self.len);
        self.len += t.dims()[0];
        self.tensors.push(t);
        self.tensors.len() - 1
    }

    /// Every part's values.
    fn read(self) -> PartValues {
        let values = if self.tensors.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(self.tensors, 0)
                .into_data()
                .iter::<f32>()
                .collect()
        };
        PartValues {
            values,
            offsets: self.offsets,
        }
    }
}

/// The values of [`Parts`].
struct PartValues {
    values: Vec<f32>,
    offsets: Vec<usize>,
}

impl PartValues {
    /// Entry `i` of part `p`.
    fn at(&self, p: usize, i: usize) -> f32 {
        self.values[self.offsets[p] + i]
    }

    /// Row `i` of part `p` seen as `n` equal rows.
    fn row(&self, p: usize, i: usize, n: usize) -> &[f32] {
        let start = self.offsets[p];
        let end = self
            .offsets
            .get(p + 1)
            .copied()
            .unwrap_or(self.values.len());
        let width = (end - start) / n.max(1);
        &self.values[start + i * width..start + (i + 1) * width]
    }
}

/// The per-example losses, which must be `[n]` (finite or not: a
/// non-finite one drops its example).
fn loss_values(losses: &Tensor<1>, n: usize) -> Result<Vec<f32>> {
    let dims = losses.dims();
    if dims[0] != n {
        return Err(Error::Shape(format!(
            "the loss function returned {} values for a batch of {n}: it must return one loss per example (no reduction)",
            dims[0]
        )));
    }
    Ok(losses.clone().inner().into_data().iter::<f32>().collect())
}

/// What the fast path found.
enum FastPath {
    /// The clipped sum.
    Clipped(ClippedGradients),
    /// These examples have a non-finite loss or gradient norm.
    NonFinite(Vec<usize>),
}

/// The parameters the records cover, and those that more than one record
/// uses (shared weights), in the order they are met.
pub(crate) fn record_coverage(records: &[Record]) -> (HashSet<ParamId>, Vec<ParamId>) {
    let mut seen = HashSet::new();
    let mut shared = Vec::new();
    for r in records {
        for id in r.params() {
            if !seen.insert(id) && !shared.contains(&id) {
                shared.push(id);
            }
        }
    }
    (seen, shared)
}

/// The fast path's per-example independence check (`independence.rs`),
/// exactly as [`GradientEngine::clipped_gradients`] runs it, on a pass of
/// `batch` already recorded under `conv` (its `losses` and `records`, no
/// backward pass), for [`crate::fix::check_fast_path`], after the fast
/// path's own refusal of a layer whose rows are not a multiple of the
/// examples (one backward pass of `losses`, only when some layer call's
/// rows are not): `Ok(None)` when
/// every layer call with a trainable parameter keeps the examples apart,
/// `Ok(Some(why))` when the check could not tell (the engine would run
/// such a pass by the fallback; a pass of one example verifies nothing
/// about larger ones).
///
/// # Errors
///
/// The engine's: [`Error::UnsupportedLayer`] for a model that mixes the
/// examples after a DP-aware layer or whose layer's dimension 0 is not the
/// example axis; [`Error::Shape`] when the loss function does not return
/// one loss per example, or a layer's rows that reach the loss are not a
/// multiple of the examples.
pub(crate) fn check_pass_independence<M, B, F>(
    conv: ConvStrategy,
    model: &M,
    batch: &B,
    loss_fn: &F,
    losses: &Tensor<1>,
    records: Vec<Record>,
) -> Result<Option<String>>
where
    M: Module,
    B: ExampleBatch,
    F: Fn(&M, &B) -> Tensor<1>,
{
    let n = batch.num_examples();
    if n == 0 {
        return Ok(Some("an empty batch".into()));
    }
    let loss_sum = losses.clone().sum();
    let losses = loss_values(losses, n)?;
    let params = trainable_params(model);
    let trainable: HashSet<ParamId> = params.iter().map(|p| p.id).collect();
    let layout = independence::layout(&records, n, |id| trainable.contains(id));
    // The layout leaves out exactly the calls whose rows are not a multiple
    // of the examples; the fast path refuses those that reach the loss.
    let calls = records
        .iter()
        .filter(|r| r.params().iter().any(|id| trainable.contains(id)))
        .count();
    if layout.len() < calls {
        let mut grads = loss_sum.backward();
        check_rows(records, &mut grads, n, |id| trainable.contains(id))?;
    } else {
        drop((loss_sum, records));
    }
    if layout.is_empty() {
        return Ok(Some(
            "no layer call with a trainable parameter whose rows are a multiple of the examples"
                .into(),
        ));
    }
    // The clipping policy plays no part in the check.
    let engine =
        GradientEngine::new(Clipping::Flat { max_grad_norm: 1.0 }).with_conv_strategy(conv);
    Ok(
        match engine.check_independence(model, batch, loss_fn, &losses, &layout, &params)? {
            independence::Outcome::Independent => None,
            independence::Outcome::Inconclusive(why) => Some(why),
        },
    )
}

/// Why the fast path cannot compute this model's per-example gradients, if
/// it cannot: a trainable parameter outside every DP-aware layer, or a
/// trainable one used by several layer calls (shared weights: their
/// per-example gradients add before the norm, which the per-call records
/// cannot see). A frozen parameter shared by several calls is no gap: it is
/// neither clipped nor released, and the trainable layers' output
/// gradients flow through both of its calls.
fn coverage_gap(params: &[dpsgd_core::ParamInfo], records: &[Record]) -> Option<String> {
    if records.is_empty() {
        let mut layers: Vec<String> = Vec::new();
        for p in params {
            let advice = swap_advice(p);
            if !layers.contains(&advice) {
                layers.push(advice);
            }
        }
        return Some(format!(
            "the model has no DP-aware layer ({})",
            layers.join("; ")
        ));
    }
    let (seen, shared) = record_coverage(records);
    // A frozen parameter may be shared: it is neither clipped nor
    // released, and each trainable parameter's per-example gradient is
    // still its one call's (the output gradients are the whole graph's).
    if let Some(p) = shared
        .iter()
        .find_map(|id| params.iter().find(|p| p.id == *id))
    {
        let name = p.name();
        return Some(format!(
            "parameter `{name}` is used by more than one layer call"
        ));
    }
    let missing: Vec<&dpsgd_core::ParamInfo> =
        params.iter().filter(|p| !seen.contains(&p.id)).collect();
    if missing.is_empty() {
        return None;
    }
    // Each layer once, with the twin to swap in.
    let mut layers: Vec<String> = Vec::new();
    for p in &missing {
        let advice = swap_advice(p);
        if !layers.contains(&advice) {
            layers.push(advice);
        }
    }
    Some(format!(
        "parameters outside DP-aware layers: {} ({})",
        missing
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        layers.join("; ")
    ))
}

/// What to swap in for the layer that owns `p`: its DP twin in
/// [`crate::layers`], named after the burn module the parameter sits in.
fn swap_advice(p: &dpsgd_core::ParamInfo) -> String {
    let layer = p.layer();
    let layer = if layer.is_empty() {
        "the model"
    } else {
        &layer
    };
    let module = p
        .containers
        .last()
        .map(|c| c.rsplit(':').next().unwrap_or(c).to_owned())
        .unwrap_or_default();
    let twin = match module.as_str() {
        "Linear" => Some("DpLinear"),
        "Conv1d" => Some("DpConv1d"),
        "Conv2d" => Some("DpConv2d"),
        "Conv3d" => Some("DpConv3d"),
        "ConvTranspose2d" => Some("DpConvTranspose2d"),
        "Embedding" => Some("DpEmbedding"),
        "LayerNorm" => Some("DpLayerNorm"),
        "GroupNorm" => Some("DpGroupNorm"),
        "InstanceNorm" => Some("DpInstanceNorm"),
        "RmsNorm" => Some("DpRmsNorm"),
        "Lstm" => Some("DpLstm"),
        "Gru" => Some("DpGru"),
        "MultiHeadAttention" => Some("DpMultiHeadAttention"),
        _ => None,
    };
    match (twin, module.as_str()) {
        (Some(twin), _) => {
            format!("`{layer}` is burn's {module}: swap in dpsgd_burn::layers::{twin}")
        }
        (None, "BatchNorm") => format!(
            "`{layer}` is a BatchNorm, which mixes the examples of a batch: swap in dpsgd_burn::layers::DpGroupNorm"
        ),
        (None, "") => format!("`{layer}`: use a layer of dpsgd_burn::layers"),
        (None, _) => {
            format!("`{layer}` ({module}) has no DP-aware twin: build it from dpsgd_burn::layers")
        }
    }
}
