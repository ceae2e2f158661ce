//! The recording of one DP forward pass.
//!
//! burn has no forward/backward hooks, so the DP-aware layers cooperate with
//! the engine through this thread-local tape: while the engine runs the
//! user's loss function with recording on, each layer
//!
//! * takes its parameters as constants (`.inner()`), so autodiff never
//!   computes the unclipped weight gradients;
//! * keeps its input activation `a` (or, for normalisation layers, the
//!   normalised input), as `[batch, positions, features]`;
//! * adds a zero *probe* leaf that requires grad to its output, so that after
//!   ONE ordinary backward pass `grad(probe)` is the per-example output
//!   gradient `g`, also as `[batch, positions, features]`.
//!
//! With recording off (ordinary training, evaluation, the fallback engine)
//! the layers are ordinary burn layers.

use crate::layers::Geometry;
use burn::module::ParamId;
use burn::tensor::{Int, Tensor};
use std::cell::RefCell;

/// What a DP-aware layer recorded during one forward call.
pub(crate) enum Record {
    /// `y = a W (+ b)` on `[B, S, din]` → `[B, S, dout]`: Linear, and
    /// convolutions after unfolding (`a` = patches).
    Dense {
        weight: ParamId,
        bias: Option<ParamId>,
        input: Tensor<3>,
        probe: Tensor<3>,
        /// The weight is stored as `[dout, din]` (convolutions) instead of
        /// `[din, dout]` (Linear).
        transposed: bool,
    },
    /// A convolution. Its per-example gradients come either from the
    /// input's patches (`unfolded`: one gather, then per-example products or
    /// Gram ghost norms) or from one grouped weight-gradient convolution
    /// (groups = batch).
    Conv {
        weight: ParamId,
        bias: Option<ParamId>,
        /// The (inner) input, `[B, C_in, H, W]`.
        input: Tensor<4>,
        /// `[B, L, C_out]` when `unfolded`, `[B, C_out, L]` otherwise.
        probe: Tensor<3>,
        out_hw: [usize; 2],
        /// `[C_out, C_in, k_h, k_w]` (a 1-D convolution as height 1).
        kernel: [usize; 4],
        geometry: Geometry,
        unfolded: bool,
    },
    /// Row lookup: `y_t = E[id_t]`.
    Embedding {
        weight: ParamId,
        ids: Tensor<2, Int>,
        vocab: usize,
        probe: Tensor<3>,
    },
    /// Per-feature affine map of a normalised input: `y = x̂ ⊙ γ + β`
    /// on `[B, S, C]`.
    Affine {
        gamma: Option<ParamId>,
        beta: Option<ParamId>,
        normalized: Tensor<3>,
        probe: Tensor<3>,
    },
}

impl Record {
    pub(crate) fn params(&self) -> Vec<ParamId> {
        match self {
            Record::Dense { weight, bias, .. } | Record::Conv { weight, bias, .. } => {
                std::iter::once(*weight).chain(*bias).collect()
            }
            Record::Embedding { weight, .. } => vec![*weight],
            Record::Affine { gamma, beta, .. } => {
                gamma.iter().chain(beta.iter()).copied().collect()
            }
        }
    }

    pub(crate) fn probe(&self) -> &Tensor<3> {
        match self {
            Record::Dense { probe, .. }
            | Record::Conv { probe, .. }
            | Record::Embedding { probe, .. }
            | Record::Affine { probe, .. } => probe,
        }
    }
}

thread_local! {
    static TAPE: RefCell<Option<Vec<Record>>> = const { RefCell::new(None) };
}

/// Whether a DP forward pass is being recorded on this thread.
pub(crate) fn is_recording() -> bool {
    TAPE.with(|t| t.borrow().is_some())
}

/// Appends a record (no-op when not recording).
pub(crate) fn push(record: Record) {
    TAPE.with(|t| {
        if let Some(records) = t.borrow_mut().as_mut() {
            records.push(record);
        }
    });
}

/// Runs `f` with recording on and returns its result with the records.
/// Recording is switched off again even if `f` panics.
pub(crate) fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<Record>) {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            TAPE.with(|t| *t.borrow_mut() = None);
        }
    }
    TAPE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let guard = Guard;
    let out = f();
    let records = TAPE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    drop(guard);
    (out, records)
}

/// A zero leaf of shape `[B, S, F]` that requires grad, on `device`.
pub(crate) fn probe(shape: [usize; 3], device: &burn::tensor::Device) -> Tensor<3> {
    Tensor::<3>::zeros(shape, device).require_grad()
}
