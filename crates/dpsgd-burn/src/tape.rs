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

use crate::layers::{ConvStrategy, Geometry};
use burn::module::ParamId;
use burn::tensor::{Int, Tensor};
use std::cell::RefCell;

/// What a DP-aware layer recorded during one forward call.
/// (One per layer call and step: the size difference between variants does
/// not matter.)
#[allow(clippy::large_enum_variant)]
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
        /// With weight standardisation, the standardised kernel
        /// `ŵ = (w − μ)/s` per output channel (`[C_out, F]`) and `1/s`
        /// (`[C_out]`): the per-example gradients of `ŵ` are mapped back to
        /// `w` through the standardisation's Jacobian.
        standardized: Option<(Tensor<2>, Tensor<1>)>,
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

/// The state of a forward pass on this thread: the convolution strategy in
/// force and, while the engine records, the records.
struct Tape {
    conv: ConvStrategy,
    records: Option<Vec<Record>>,
}

thread_local! {
    static TAPE: RefCell<Option<Tape>> = const { RefCell::new(None) };
}

/// Whether a DP forward pass is being recorded on this thread.
pub(crate) fn is_recording() -> bool {
    TAPE.with(|t| t.borrow().as_ref().is_some_and(|t| t.records.is_some()))
}

/// The convolution strategy of the forward pass running on this thread
/// ([`ConvStrategy::Auto`] outside [`record`] and [`with_conv_strategy`]).
pub(crate) fn conv_strategy() -> ConvStrategy {
    TAPE.with(|t| t.borrow().as_ref().map_or(ConvStrategy::Auto, |t| t.conv))
}

/// Appends a record (no-op when not recording).
pub(crate) fn push(record: Record) {
    TAPE.with(|t| {
        if let Some(records) = t.borrow_mut().as_mut().and_then(|t| t.records.as_mut()) {
            records.push(record);
        }
    });
}

/// Runs `f` with `tape` in force, then restores the previous state (also
/// if `f` panics); returns `f`'s result and the records taken.
fn scoped<T>(tape: Tape, f: impl FnOnce() -> T) -> (T, Vec<Record>) {
    struct Restore(Option<Tape>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            TAPE.with(|t| *t.borrow_mut() = previous);
        }
    }
    let restore = Restore(TAPE.with(|t| t.borrow_mut().replace(tape)));
    let out = f();
    let records = TAPE
        .with(|t| t.borrow_mut().as_mut().and_then(|t| t.records.take()))
        .unwrap_or_default();
    drop(restore);
    (out, records)
}

/// Runs `f` with recording on and convolutions computed under `conv`;
/// returns its result with the records.
pub(crate) fn record<T>(conv: ConvStrategy, f: impl FnOnce() -> T) -> (T, Vec<Record>) {
    scoped(
        Tape {
            conv,
            records: Some(Vec::new()),
        },
        f,
    )
}

/// Runs `f` without recording, with convolutions computed under `conv`.
pub(crate) fn with_conv_strategy<T>(conv: ConvStrategy, f: impl FnOnce() -> T) -> T {
    scoped(
        Tape {
            conv,
            records: None,
        },
        f,
    )
    .0
}

/// A zero leaf of shape `[B, S, F]` that requires grad, on `device`.
pub(crate) fn probe(shape: [usize; 3], device: &burn::tensor::Device) -> Tensor<3> {
    Tensor::<3>::zeros(shape, device).require_grad()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_scope_the_conv_strategy_and_restore_it() {
        assert_eq!(conv_strategy(), ConvStrategy::Auto);
        with_conv_strategy(ConvStrategy::Unfold, || {
            assert_eq!(conv_strategy(), ConvStrategy::Unfold);
            assert!(!is_recording());
            let ((), records) = record(ConvStrategy::Materialize, || {
                assert_eq!(conv_strategy(), ConvStrategy::Materialize);
                assert!(is_recording());
            });
            assert!(records.is_empty());
            assert_eq!(conv_strategy(), ConvStrategy::Unfold);
            assert!(!is_recording());
        });
        assert_eq!(conv_strategy(), ConvStrategy::Auto);
        assert!(!is_recording());
    }

    #[test]
    fn should_restore_the_strategy_after_a_panic() {
        let caught = std::panic::catch_unwind(|| {
            record(ConvStrategy::Unfold, || panic!("loss function failed"))
        });
        assert!(caught.is_err());
        assert_eq!(conv_strategy(), ConvStrategy::Auto);
        assert!(!is_recording());
    }
}
