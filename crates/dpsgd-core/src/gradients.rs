//! The clipped gradient sum of one batch, before noise.

use crate::clipping::Clipping;
use crate::error::{Error, Result};
use burn::module::ParamId;
use burn::tensor::Tensor;
use std::collections::HashMap;

/// Adds `t` to the running sum of parameter `id` (or starts it).
pub fn add_to_sum(sums: &mut HashMap<ParamId, Tensor<1>>, id: ParamId, t: Tensor<1>) {
    let merged = match sums.remove(&id) {
        Some(prev) => prev + t,
        None => t,
    };
    sums.insert(id, merged);
}

/// How the per-example gradients of a step were computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GradientMethod {
    /// One backward pass through DP-aware layers (ghost norms and
    /// book-keeping).
    FastPath {
        /// Number of DP-aware layer calls recorded.
        layers: usize,
    },
    /// Micro-batches of one example (correct for any module, slow).
    Fallback {
        /// Why the fast path could not be used.
        reason: String,
    },
    /// The batch was empty: the sum is zero (noise is still added).
    EmptyBatch,
}

/// `Σ_i clip(∇_i)` for every trainable parameter, with the per-example
/// norms measured before clipping and the clipping policy the sum was
/// clipped under.
///
/// # Privacy
///
/// The sum carries its [`Clipping`]: its sensitivity is that policy's, and
/// [`DpOptimizer`](crate::DpOptimizer) refuses a sum clipped under any other
/// policy than its own, so the noise can never be calibrated to a norm the
/// engine did not clip to. An example whose loss or gradient norm is not
/// finite contributes nothing (it is *dropped*, and counted): refusing the
/// step instead would make the run's outcome depend on whether such a
/// record is present.
#[derive(Debug, Clone)]
pub struct ClippedGradients {
    sums: HashMap<ParamId, Tensor<1>>,
    norms: Vec<f32>,
    dropped: usize,
    /// Examples of the batch that stand for a removed record (a left-out
    /// gradient canary's slot): counted in the batch, in no norm and no
    /// sum.
    absent: usize,
    clipping: Clipping,
    method: GradientMethod,
    loss_sum: f64,
}

impl ClippedGradients {
    /// Builds the result of a gradient engine: flattened clipped sums by
    /// parameter id (a missing parameter counts as zero), the finite
    /// per-example norms of the examples in the sum, and the policy they
    /// were clipped under.
    ///
    /// # Errors
    ///
    /// [`Error::NonFinite`] when a norm is NaN or infinite: such an example
    /// must be dropped (see [`ClippedGradients::push_dropped`]), not summed.
    pub fn new(
        sums: HashMap<ParamId, Tensor<1>>,
        norms: Vec<f32>,
        method: GradientMethod,
        clipping: Clipping,
    ) -> Result<Self> {
        if let Some(i) = norms.iter().position(|n| !n.is_finite()) {
            return Err(Error::NonFinite {
                what: "gradient",
                detail: format!(
                    "example {i} of the batch has gradient norm {}: drop it instead",
                    norms[i]
                ),
            });
        }
        Ok(Self {
            sums,
            norms,
            dropped: 0,
            absent: 0,
            clipping,
            method,
            loss_sum: 0.0,
        })
    }

    /// The sum for an empty batch: zero everywhere (noise is still added).
    pub fn empty(clipping: Clipping) -> Self {
        Self {
            sums: HashMap::new(),
            norms: Vec::new(),
            dropped: 0,
            absent: 0,
            clipping,
            method: GradientMethod::EmptyBatch,
            loss_sum: 0.0,
        }
    }

    /// The clipping policy the sum was clipped under (its sensitivity).
    pub fn clipping(&self) -> &Clipping {
        &self.clipping
    }

    /// Records an example whose loss or gradient norm was not finite: it
    /// is part of the batch but contributes zero to the sum.
    pub fn push_dropped(&mut self) {
        self.dropped += 1;
    }

    /// Examples of the batch that contributed zero because their loss or
    /// gradient norm was not finite (data-dependent: not covered by ε).
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Number of examples in the batch, dropped and absent ones included.
    pub fn batch_size(&self) -> usize {
        self.norms.len() + self.dropped + self.absent
    }

    /// Records an example that stands for a removed record (a left-out
    /// gradient canary's slot: white-box auditing, `dpsgd_burn::canary`):
    /// part of the batch, but in no norm, no sum and no count adaptive
    /// clipping releases — exactly as if it were not in the data set.
    pub fn push_absent(&mut self) {
        self.absent += 1;
    }

    /// Examples that stand for removed records (see
    /// [`ClippedGradients::push_absent`]).
    pub fn absent(&self) -> usize {
        self.absent
    }

    /// Per-example gradient norms before clipping of the examples in the
    /// sum (dropped ones excluded; users plot them to choose C): on the
    /// fast path, the upper bounds each example was clipped by — f32's
    /// value where it is the norm of exactly what is summed, and for Gram
    /// ghost norms a bound of their rounding whose square exceeds the exact
    /// one by a relative `≈ S(d + S)·2⁻²³` over `S` positions of width `d`
    /// (more where positions cancel).
    pub fn per_example_norms(&self) -> &[f32] {
        &self.norms
    }

    /// Sum of the per-example losses of the batch (for progress reports;
    /// not private).
    pub fn loss_sum(&self) -> f64 {
        self.loss_sum
    }

    /// Records the sum of the per-example losses.
    pub fn set_loss_sum(&mut self, loss_sum: f64) {
        self.loss_sum = loss_sum;
    }

    /// How the gradients were computed.
    pub fn method(&self) -> &GradientMethod {
        &self.method
    }

    /// The flattened clipped sum of one parameter, if any example touched it.
    pub fn sum(&self, id: &ParamId) -> Option<&Tensor<1>> {
        self.sums.get(id)
    }

    /// Adds the clipped sums of another part of the same logical batch
    /// (virtual batches: physical chunks accumulate, noise is added once).
    ///
    /// # Errors
    ///
    /// [`Error::ClippingMismatch`] when the parts were clipped under
    /// different policies (the sum's sensitivity would be neither's);
    /// nothing is added then.
    pub fn accumulate(&mut self, other: Self) -> Result<()> {
        if other.clipping != self.clipping {
            return Err(Error::ClippingMismatch {
                expected: format!("{:?}", self.clipping),
                found: format!("{:?}", other.clipping),
            });
        }
        for (id, t) in other.sums {
            add_to_sum(&mut self.sums, id, t);
        }
        self.norms.extend(other.norms);
        self.dropped += other.dropped;
        self.absent += other.absent;
        self.loss_sum += other.loss_sum;
        // The slowest path taken by any part describes the whole.
        if self.method == GradientMethod::EmptyBatch
            || matches!(other.method, GradientMethod::Fallback { .. })
        {
            self.method = other.method;
        }
        Ok(())
    }

    /// The same sums on `device` (data-parallel workers reduce onto one
    /// device).
    #[must_use]
    pub fn to_device(mut self, device: &burn::tensor::Device) -> Self {
        self.sums = self
            .sums
            .into_iter()
            .map(|(id, t)| (id, t.to_device(device)))
            .collect();
        self
    }

    /// The parameters this sum holds, with their numbers of elements,
    /// ordered by id: the layout a collective reduction flattens the sums
    /// in (every worker must use the same one).
    pub fn layout(&self) -> Vec<(ParamId, usize)> {
        let mut layout: Vec<(ParamId, usize)> =
            self.sums.iter().map(|(id, t)| (*id, t.dims()[0])).collect();
        layout.sort_by_key(|(id, _)| id.val());
        layout
    }

    /// This worker's sums flattened in `layout`'s order for a collective
    /// reduction (a parameter it did not touch counts as zero): the part
    /// without its sums, and the flat tensor (`None` for an empty layout).
    ///
    /// A protocol step of data-parallel training
    /// (`dpsgd_burn::parallel`): the reduced tensor goes back in with
    /// [`ClippedGradients::unflatten`], and is then noised at this part's
    /// clipping policy — the collective must return exactly the sum of the
    /// workers' flat tensors, each clipped under that policy for parts of
    /// one logical batch.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when this part holds a parameter missing from
    /// `layout` or of another size (the workers disagree on the layout).
    pub fn flatten(
        mut self,
        layout: &[(ParamId, usize)],
        device: &burn::tensor::Device,
    ) -> Result<(Self, Option<Tensor<1>>)> {
        let mut parts = Vec::with_capacity(layout.len());
        for (id, numel) in layout {
            let part = match self.sums.remove(id) {
                Some(t) if t.dims()[0] == *numel => t,
                Some(t) => {
                    return Err(Error::Shape(format!(
                        "parameter {id} has {} elements here, {numel} in the layout",
                        t.dims()[0]
                    )));
                }
                None => Tensor::zeros([*numel], device),
            };
            parts.push(part);
        }
        if let Some(id) = self.sums.keys().next() {
            return Err(Error::Shape(format!(
                "parameter {id} is missing from the all-reduce layout"
            )));
        }
        let flat = (!parts.is_empty()).then(|| Tensor::cat(parts, 0));
        Ok((self, flat))
    }

    /// The inverse of [`ClippedGradients::flatten`]: this part (without
    /// sums) with `flat`, cut in `layout`'s order, as its sums.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] when this part already holds sums, or `flat` does
    /// not have the layout's length.
    pub fn unflatten(mut self, layout: &[(ParamId, usize)], flat: Tensor<1>) -> Result<Self> {
        let total: usize = layout.iter().map(|(_, n)| n).sum();
        if !self.sums.is_empty() || flat.dims()[0] != total {
            return Err(Error::Shape(format!(
                "cannot unflatten {} elements into a layout of {total} (and {} sums already here)",
                flat.dims()[0],
                self.sums.len()
            )));
        }
        let mut start = 0;
        for (id, numel) in layout {
            self.sums.insert(*id, flat.clone().narrow(0, start, *numel));
            start += numel;
        }
        Ok(self)
    }

    /// This part without its sums (norms, dropped count, loss sum and
    /// method only), to be accumulated into a sum that already holds them.
    #[must_use]
    pub fn without_sums(mut self) -> Self {
        self.sums.clear();
        self
    }

    pub(crate) fn take(&mut self, id: &ParamId) -> Option<Tensor<1>> {
        self.sums.remove(id)
    }
}
