//! The clipped gradient sum of one batch, before noise.

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
/// norms measured before clipping.
#[derive(Debug, Clone)]
pub struct ClippedGradients {
    sums: HashMap<ParamId, Tensor<1>>,
    norms: Vec<f32>,
    method: GradientMethod,
    loss_sum: f64,
}

impl ClippedGradients {
    /// Builds the result of a gradient engine: flattened clipped sums by
    /// parameter id (a missing parameter counts as zero) and the norms.
    ///
    /// # Errors
    ///
    /// [`Error::NonFinite`] when a per-example norm is NaN or infinite (a
    /// NaN/inf gradient): such a batch must not reach the parameters.
    pub fn new(
        sums: HashMap<ParamId, Tensor<1>>,
        norms: Vec<f32>,
        method: GradientMethod,
    ) -> Result<Self> {
        if let Some(i) = norms.iter().position(|n| !n.is_finite()) {
            return Err(Error::NonFinite {
                what: "gradient",
                detail: format!("example {i} of the batch has gradient norm {}", norms[i]),
            });
        }
        Ok(Self {
            sums,
            norms,
            method,
            loss_sum: 0.0,
        })
    }

    /// The sum for an empty batch: zero everywhere.
    pub fn empty() -> Self {
        Self {
            sums: HashMap::new(),
            norms: Vec::new(),
            method: GradientMethod::EmptyBatch,
            loss_sum: 0.0,
        }
    }

    /// Number of examples in the batch.
    pub fn batch_size(&self) -> usize {
        self.norms.len()
    }

    /// Per-example gradient norms before clipping (users plot them to
    /// choose C).
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
    pub fn accumulate(&mut self, other: Self) {
        for (id, t) in other.sums {
            add_to_sum(&mut self.sums, id, t);
        }
        self.norms.extend(other.norms);
        self.loss_sum += other.loss_sum;
        // The slowest path taken by any part describes the whole.
        if self.method == GradientMethod::EmptyBatch
            || matches!(other.method, GradientMethod::Fallback { .. })
        {
            self.method = other.method;
        }
    }

    pub(crate) fn take(&mut self, id: &ParamId) -> Option<Tensor<1>> {
        self.sums.remove(id)
    }
}
