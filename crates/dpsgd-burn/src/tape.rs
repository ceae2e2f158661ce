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
        /// Which of its tensors other records hold too.
        shared: Shared,
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
    /// A dense layer applied step by step with shared weights (a recurrent
    /// hidden transform): `y_t = a_t W (+ b)` for each step `t`, whose
    /// output gradient is the gate's input transform's (see [`StepGrads`]).
    /// After the backward pass it becomes a [`Record::Dense`] over `T`
    /// positions.
    Recurrent {
        weight: ParamId,
        bias: Option<ParamId>,
        /// `a_t` by step: `[B, T, d_in]`.
        input: Tensor<3>,
        /// The key under which other records hold the same `input`.
        input_key: Option<u64>,
        /// Where the output gradient comes from.
        grad: StepGrads,
    },
    /// Parameters replicated once per row for the forward pass (grouped,
    /// 3-D and transposed convolutions run as one convolution with
    /// `groups × B` groups): each leaf `[rows, numel]` holds one copy of a
    /// parameter per row, so its gradient after the backward pass is every
    /// row's gradient of that parameter.
    Replicated { params: Vec<(ParamId, Tensor<2>)> },
    /// Per-feature affine map of a normalised input: `y = x̂ ⊙ γ + β`
    /// on `[B, S, C]`.
    Affine {
        gamma: Option<ParamId>,
        beta: Option<ParamId>,
        normalized: Tensor<3>,
        probe: Tensor<3>,
    },
}

/// Which tensors of a [`Record::Dense`] other records hold too: records
/// with the same key hold the same tensor, so what is computed from it
/// alone (a Gram matrix, a row scale) is computed once for all of them.
/// The gates of a recurrent layer read the same input and the same states,
/// and a gate's input and hidden transforms have the same output gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shared {
    /// The key of the input `[B, S, d_in]`.
    pub(crate) input: Option<u64>,
    /// The key of the output gradient `[B, S, d_out]`; its probe's
    /// gradient is read, not removed, so that every sharer finds it.
    pub(crate) grad: Option<u64>,
}

/// A key for [`Shared`], new on every call (in the process).
pub(crate) fn fresh_key() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The output gradient of a [`Record::Recurrent`].
/// (One per recurrent record: the size difference does not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum StepGrads {
    /// One `[B, d_out]` probe per step, for a transform whose output is
    /// gated before it joins the input transform's (a GRU's reset gate):
    /// its gradient is its own. (One leaf per step: slicing one
    /// `[B, T, F]` leaf would make the backward pass write a `[B, T, F]`
    /// tensor per step.)
    Probes(Vec<Tensor<2>>),
    /// The transform's output is added to the input transform's as it is,
    /// so `δ_t = ∂L/∂z_t` is the gradient of the input transform's probe
    /// `[B, T, d_out]`, shared under `key` (no probe of its own). This
    /// holds only while step `t` of the input transform's output feeds
    /// `z_t` and nothing else (`layers::rnn::GateRun::at`).
    Input { probe: Tensor<3>, key: u64 },
}

impl Record {
    pub(crate) fn params(&self) -> Vec<ParamId> {
        match self {
            Record::Dense { weight, bias, .. }
            | Record::Conv { weight, bias, .. }
            | Record::Recurrent { weight, bias, .. } => {
                std::iter::once(*weight).chain(*bias).collect()
            }
            Record::Embedding { weight, .. } => vec![*weight],
            Record::Replicated { params } => params.iter().map(|(id, _)| *id).collect(),
            Record::Affine { gamma, beta, .. } => {
                gamma.iter().chain(beta.iter()).copied().collect()
            }
        }
    }

    /// The number of values this record holds for the engine (inputs and
    /// output-gradient probes, kept per-example gradients, or replicated
    /// parameters) when it records one example: what one pass's memory
    /// grows with, per example.
    pub(crate) fn held_values(&self) -> usize {
        match self {
            Record::Dense {
                input,
                probe,
                bias,
                shared,
                ..
            } => {
                let held = input.shape().num_elements() + probe.shape().num_elements();
                let [rows, positions, d_in] = input.dims();
                let d_out = probe.dims()[2];
                // Kept per-example gradients replace the input and output
                // gradient (grad_sample::keep_per_example). Counted for
                // the one example the planner runs, whose rows (several
                // with augmentation multiplicity) make one sequence.
                if crate::grad_sample::keeps_per_example(rows * positions, d_in, d_out, shared) {
                    let bias = if bias.is_some() { d_out } else { 0 };
                    held.max(d_in * d_out + bias)
                } else {
                    held
                }
            }
            Record::Conv { input, probe, .. } => {
                input.shape().num_elements() + probe.shape().num_elements()
            }
            Record::Embedding { ids, probe, .. } => {
                ids.shape().num_elements() + probe.shape().num_elements()
            }
            Record::Recurrent { input, grad, .. } => {
                input.shape().num_elements()
                    + match grad {
                        StepGrads::Probes(probes) => probes
                            .iter()
                            .map(|p| p.shape().num_elements())
                            .sum::<usize>(),
                        // Counted with the input transform's record.
                        StepGrads::Input { .. } => 0,
                    }
            }
            Record::Replicated { params } => {
                params.iter().map(|(_, t)| t.shape().num_elements()).sum()
            }
            Record::Affine {
                normalized, probe, ..
            } => normalized.shape().num_elements() + probe.shape().num_elements(),
        }
    }

    /// The record with its per-example output gradient `[B, S, F]` taken
    /// from `grads` (`None` when the layer's output did not reach the
    /// loss); a recurrent record becomes a dense one over its steps.
    pub(crate) fn with_output_grad(
        self,
        grads: &mut burn::tensor::Gradients,
    ) -> Option<(Record, Tensor<3>)> {
        match self {
            Record::Recurrent {
                weight,
                bias,
                input,
                input_key,
                grad: StepGrads::Input { probe, key },
            } => {
                let g = probe.grad(grads)?;
                let record = Record::Dense {
                    weight,
                    bias,
                    input,
                    probe,
                    transposed: false,
                    shared: Shared {
                        input: input_key,
                        grad: Some(key),
                    },
                };
                Some((record, g))
            }
            Record::Recurrent {
                weight,
                bias,
                input,
                input_key,
                grad: StepGrads::Probes(probes),
            } => {
                let steps: Vec<Option<Tensor<2>>> =
                    probes.iter().map(|p| p.grad_remove(grads)).collect();
                if steps.iter().all(Option::is_none) {
                    return None;
                }
                let [batch, d_out] = probes[0].dims();
                // Zeros for the steps whose output did not reach the loss,
                // on the device of the gradients that did (not the probes'
                // autodiff device).
                let device = steps.iter().flatten().next().map(Tensor::device)?;
                let g = Tensor::stack(
                    steps
                        .into_iter()
                        .map(|g| g.unwrap_or_else(|| Tensor::zeros([batch, d_out], &device)))
                        .collect(),
                    1,
                );
                let record = Record::Dense {
                    weight,
                    bias,
                    input,
                    probe: g.clone(),
                    transposed: false,
                    shared: Shared {
                        input: input_key,
                        grad: None,
                    },
                };
                Some((record, g))
            }
            Record::Replicated { .. } => None,
            Record::Dense {
                ref probe,
                shared: Shared { grad: Some(_), .. },
                ..
            } => {
                let g = probe.grad(grads)?;
                Some((self, g))
            }
            Record::Dense { ref probe, .. }
            | Record::Conv { ref probe, .. }
            | Record::Embedding { ref probe, .. }
            | Record::Affine { ref probe, .. } => {
                let g = probe.grad_remove(grads)?;
                Some((self, g))
            }
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

/// Per-row copies of a parameter's value, `[rows, numel]`, as a leaf that
/// requires grad (see [`Record::Replicated`]); the caller reshapes it to the
/// shape its replicated operation needs.
pub(crate) fn replicate<const D: usize>(value: Tensor<D>, rows: usize) -> Tensor<2> {
    let numel: usize = value.dims().iter().product();
    // Copied off autodiff: `detach` keeps a parameter leaf's
    // `require_grad`, so the reshape and repeat would be recorded (and left
    // for burn's graph cleaner) every step.
    let strategy = value.gradient_checkpointing_strategy();
    let copies = value.inner().reshape([1, numel]).repeat_dim(0, rows);
    match strategy {
        Some(strategy) => Tensor::from_inner(copies).with_gradient_checkpointing_strategy(strategy),
        None => copies,
    }
    .require_grad()
}

/// The per-row gradients of a replicated record's leaves (`None` when none
/// reached the loss; a leaf that did not is zero).
pub(crate) fn replicated_grads(
    params: Vec<(ParamId, Tensor<2>)>,
    grads: &mut burn::tensor::Gradients,
) -> Option<Vec<(ParamId, Tensor<2>)>> {
    let got: Vec<(ParamId, Option<Tensor<2>>, Tensor<2>)> = params
        .into_iter()
        .map(|(id, leaf)| (id, leaf.grad_remove(grads), leaf))
        .collect();
    if got.iter().all(|(_, g, _)| g.is_none()) {
        return None;
    }
    // Zeros for leaves that did not reach the loss, on the gradients'
    // device (not the leaves' autodiff device).
    let device = got
        .iter()
        .find_map(|(_, g, _)| g.as_ref().map(Tensor::device))?;
    Some(
        got.into_iter()
            .map(|(id, g, leaf)| (id, g.unwrap_or_else(|| Tensor::zeros(leaf.dims(), &device))))
            .collect(),
    )
}

/// A zero leaf of shape `shape` (`[B, S, F]`, or `[B, F]` for a recurrent
/// step) that requires grad, on `device`.
///
/// The probe is one zero broadcast to `shape` (a stride-0 view on burn-flex
/// and the CubeCL backends): it holds no `[B, S, F]` buffer and costs no
/// pass to fill (issue 31: a shared zero buffer sized to the largest probe
/// held 9.4 MB at the benchmark MLP's batch 4096). A probe is only ever
/// added to a layer's output *in the probe's own shape* — reshaping a
/// broadcast view copies it on burn-flex — so a layer reshapes its output
/// to `shape`, adds the probe, and reshapes the sum back. Each probe is a
/// new leaf (its own node), so the probes' gradients stay apart.
pub(crate) fn probe<const D: usize>(shape: [usize; D], device: &burn::tensor::Device) -> Tensor<D> {
    Tensor::<1>::zeros([1], device)
        .reshape([1; D])
        .expand(shape)
        .detach()
        .require_grad()
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

    /// Probes are broadcast zeros: each must still be its own leaf, get its
    /// own gradient (of its full shape) and stay zero when the tensors built
    /// on it are written in place.
    #[test]
    fn should_keep_probes_apart_and_zero() {
        let device = burn::tensor::Device::default().autodiff();
        let x = Tensor::<3>::from_data(
            burn::tensor::TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 1, 3]),
            &device,
        );
        fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
            t.into_data().iter::<f32>().collect()
        }
        for step in 0..3 {
            let (p1, p2) = (probe([2, 1, 3], &device), probe([2, 1, 3], &device));
            assert_eq!(p1.dims(), [2, 1, 3]);
            // In-place candidates: `x + p1` and the products own their
            // buffers, the probes do not.
            let y = ((x.clone() + p1.clone()) * 2.0 + p2.clone()) * x.clone();
            let mut grads = y.sum().backward();
            let g1 = values(p1.grad_remove(&mut grads).expect("p1"));
            let g2 = values(p2.grad_remove(&mut grads).expect("p2"));
            let xs = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
            assert_eq!(
                g1,
                xs.iter().map(|v| 2.0 * v).collect::<Vec<_>>(),
                "step {step}"
            );
            assert_eq!(g2, xs.to_vec(), "step {step}");
            assert_eq!(values(p1), vec![0.0; 6], "step {step}");
            assert_eq!(
                values(probe([3, 2, 5], &device)),
                vec![0.0; 30],
                "step {step}"
            );
            assert_eq!(values(probe([2, 3], &device)), vec![0.0; 6], "step {step}");
        }
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
