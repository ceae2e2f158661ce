//! Making a burn model DP-ready, in the spirit of Opacus's
//! `ModuleValidator`: which parameters take the fast path and which the
//! slow per-example fallback ([`check_fast_path`]), and conversions of
//! burn's layers into their DP-aware twins.
//!
//! Rust's types fix a model's layers at compile time, so the fixer cannot
//! rewrite a model in place as Opacus does: a DP model names the twin types
//! in its struct, and each pretrained burn layer converts into its twin
//! with `From` (the same parameters, ids included, so optimizer state and
//! records carry over), or the whole model loads a burn record unchanged
//! (the twins keep burn's parameter paths). [`FixReport`] lists what was
//! converted and what was changed on the way.
//!
//! # BatchNorm → GroupNorm
//!
//! Batch normalisation mixes the examples of a batch (each example's output
//! depends on the others), which per-example clipping cannot bound; the
//! engine refuses it. [`group_norm_for_batch_norm`] replaces it by a
//! GroupNorm over the same `C` channels with **the largest divisor of `C`
//! that is at most 32** groups (Opacus's rule is `min(32, C)` groups, which
//! fails when 32 does not divide `C`; ours is the same whenever it divides,
//! e.g. 32 groups for 64 channels, 24 for 48, 1 for a prime `C` > 32), γ
//! and β carried over, the running mean and variance dropped (a GroupNorm
//! normalises with each example's own statistics). The model's behaviour
//! changes: fine-tune after the conversion.

use crate::batch::ExampleBatch;
use crate::layers::{
    DpEmbedding, DpGateController, DpGroupNorm, DpGroupNormConfig, DpGru, DpInstanceNorm, DpLinear,
    DpLstm, DpMultiHeadAttention, DpRmsNorm, DpRnn,
};
use crate::tape;
use burn::module::Module;
use burn::nn::attention::MultiHeadAttention;
use burn::nn::{
    BatchNorm, Embedding, GateController, Gru, InstanceNorm, Linear, Lstm, RmsNorm, Rnn,
};
use burn::tensor::Tensor;
use dpsgd_core::{Error, Result, trainable_params};

impl From<Linear> for DpLinear {
    fn from(l: Linear) -> Self {
        Self {
            weight: l.weight,
            bias: l.bias,
        }
    }
}

impl From<Embedding> for DpEmbedding {
    fn from(e: Embedding) -> Self {
        Self { weight: e.weight }
    }
}

impl From<GateController> for DpGateController {
    fn from(g: GateController) -> Self {
        Self {
            input_transform: g.input_transform.into(),
            hidden_transform: g.hidden_transform.into(),
        }
    }
}

impl From<MultiHeadAttention> for DpMultiHeadAttention {
    fn from(m: MultiHeadAttention) -> Self {
        Self {
            query: m.query.into(),
            key: m.key.into(),
            value: m.value.into(),
            output: m.output.into(),
            dropout: m.dropout,
            activation: m.activation,
            d_model: m.d_model,
            n_heads: m.n_heads,
            d_k: m.d_k,
            min_float: m.min_float,
            quiet_softmax: m.quiet_softmax,
        }
    }
}

impl From<Lstm> for DpLstm {
    fn from(l: Lstm) -> Self {
        Self {
            input_gate: l.input_gate.into(),
            forget_gate: l.forget_gate.map(Into::into),
            output_gate: l.output_gate.into(),
            cell_gate: l.cell_gate.into(),
            d_hidden: l.d_hidden,
            batch_first: l.batch_first,
            reverse: l.reverse,
            clip: l.clip,
            input_forget: l.input_forget,
            gate_activation: l.gate_activation,
            cell_activation: l.cell_activation,
            hidden_activation: l.hidden_activation,
        }
    }
}

impl From<Gru> for DpGru {
    fn from(g: Gru) -> Self {
        Self {
            update_gate: g.update_gate.into(),
            reset_gate: g.reset_gate.into(),
            new_gate: g.new_gate.into(),
            d_hidden: g.d_hidden,
            reset_after: g.reset_after,
            gate_activation: g.gate_activation,
            hidden_activation: g.hidden_activation,
            clip: g.clip,
        }
    }
}

impl From<Rnn> for DpRnn {
    fn from(r: Rnn) -> Self {
        Self {
            gate: r.gate.into(),
            d_hidden: r.d_hidden,
            batch_first: r.batch_first,
            reverse: r.reverse,
            clip: r.clip,
            hidden_activation: r.hidden_activation,
        }
    }
}

impl From<InstanceNorm> for DpInstanceNorm {
    fn from(n: InstanceNorm) -> Self {
        Self {
            gamma: n.gamma,
            beta: n.beta,
            num_channels: n.num_channels,
            epsilon: n.epsilon,
            affine: n.affine,
        }
    }
}

impl From<RmsNorm> for DpRmsNorm {
    fn from(n: RmsNorm) -> Self {
        Self {
            gamma: n.gamma,
            epsilon: n.epsilon,
        }
    }
}

/// The number of groups that replaces a BatchNorm over `channels`: the
/// largest divisor of `channels` that is at most 32 (see the module
/// documentation).
pub fn group_count(channels: usize) -> usize {
    (1..=channels.min(32))
        .rev()
        .find(|g| channels.is_multiple_of(*g))
        .unwrap_or(1)
}

/// A GroupNorm twin of `bn` (see the module documentation for the rule) and
/// one line saying what changed.
pub fn group_norm_for_batch_norm(bn: BatchNorm, name: &str) -> (DpGroupNorm, String) {
    let [channels] = bn.gamma.val().dims();
    let device = bn.gamma.val().device();
    let groups = group_count(channels);
    let mut gn = DpGroupNormConfig::new(groups, channels)
        .with_epsilon(bn.epsilon)
        .init(&device);
    gn.gamma = bn.gamma;
    gn.beta = bn.beta;
    let note = format!(
        "{name}: BatchNorm({channels}) → GroupNorm({groups} groups, {channels} channels); γ and β kept, running statistics dropped"
    );
    (gn, note)
}

/// What a conversion changed, one line per layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixReport {
    /// One line per converted or replaced layer.
    pub changes: Vec<String>,
}

impl FixReport {
    /// Converts `layer` into its DP-aware twin, recording the change under
    /// `name`.
    pub fn convert<A, B: From<A>>(&mut self, name: &str, layer: A) -> B {
        self.changes.push(format!(
            "{name}: {} → {}",
            short_type::<A>(),
            short_type::<B>()
        ));
        B::from(layer)
    }

    /// Converts `layer` into its DP-aware twin when that can be done exactly
    /// (a convolution with `Same` padding cannot), recording the change.
    ///
    /// # Errors
    ///
    /// The conversion's error, naming what does not convert.
    pub fn try_convert<A, B: TryFrom<A>>(&mut self, name: &str, layer: A) -> Result<B, B::Error> {
        let out = B::try_from(layer)?;
        self.changes.push(format!(
            "{name}: {} → {}",
            short_type::<A>(),
            short_type::<B>()
        ));
        Ok(out)
    }

    /// [`group_norm_for_batch_norm`], recording the change.
    pub fn batch_norm(&mut self, name: &str, bn: BatchNorm) -> DpGroupNorm {
        let (gn, note) = group_norm_for_batch_norm(bn, name);
        self.changes.push(note);
        gn
    }
}

fn short_type<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Which trainable parameters of `model` the engine's fast path covers on
/// `batch`, which would take the slow per-example fallback, and whether the
/// fast path's per-example independence check could verify the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPathReport {
    /// Parameters inside DP-aware layers (fast path).
    pub fast: Vec<String>,
    /// Parameters outside DP-aware layers, or shared by several layer
    /// calls: with any of them, the whole step takes the fallback.
    pub fallback: Vec<String>,
    /// `Some(why)` when the engine's per-example independence check (see
    /// [`GradientEngine`](crate::GradientEngine)) could not verify, on this
    /// batch, that the model keeps its examples apart: a batch of one
    /// example, no finite loss, a loss without gradient at any layer, a
    /// non-finite gradient. Training checks again and runs each pass it
    /// cannot verify by the fallback (or refuses the model if it finds the
    /// examples mixed): run the check on a batch of several distinct
    /// examples. `None` when the check passed, or did not run because the
    /// step takes the fallback anyway ([`fallback`](Self::fallback) not
    /// empty).
    pub independence: Option<String>,
}

impl FastPathReport {
    /// Whether the fast path is confirmed: every trainable parameter on it,
    /// and the independence check passed.
    pub fn is_fast(&self) -> bool {
        self.fallback.is_empty() && self.independence.is_none()
    }

    /// The warning to show when the fallback will be taken, or the
    /// independence check could not verify the model (`None` otherwise),
    /// naming the parameters or the reason.
    pub fn warning(&self) -> Option<String> {
        if !self.fallback.is_empty() {
            return Some(format!(
                "DP-SGD will compute per-example gradients by the slow fallback (one backward pass per example, tens of times slower): {} {} outside DP-aware layers or shared by several layer calls: {}; use dpsgd_burn::layers (or dpsgd_burn::fix) to get the fast path",
                self.fallback.len(),
                if self.fallback.len() == 1 {
                    "parameter is"
                } else {
                    "parameters are"
                },
                self.fallback.join(", ")
            ));
        }
        self.independence.as_ref().map(|why| {
            format!(
                "the fast path's per-example independence check could not verify on this batch that the model keeps its examples apart ({why}): training checks again, runs each pass it cannot verify by the slow fallback (one backward pass per example, tens of times slower) and refuses the model if it mixes examples; check again with a batch of several distinct examples"
            )
        })
    }
}

/// Runs `loss_fn` on `batch` once, recording, and reports which trainable
/// parameters the fast path covers; when it covers them all, runs the
/// engine's per-example independence check as training would (one more
/// recorded forward pass of at most 4 examples and one backward pass; no
/// parameter change): the check to run before training a model, with the
/// loud warning of [`FastPathReport::warning`]. A check that cannot tell
/// (a batch of one example, say) is reported in
/// [`FastPathReport::independence`], not as the fast path.
///
/// # Errors
///
/// [`Error::UnsupportedLayer`] for a model the engine refuses: batch
/// normalisation, or other state updated in the forward pass; a model that
/// mixes the examples of a batch after a DP-aware layer (a batch statistic
/// such as `y - y.mean_dim(0)`, attention across the batch), or whose
/// DP-aware layer's dimension 0 is not the example axis (a time-major
/// input): the same error as
/// [`GradientEngine::clipped_gradients`](crate::GradientEngine::clipped_gradients).
/// [`Error::Shape`] when the loss function does not return one loss per
/// example, or (on the fast path) a DP-aware layer's rows that reach the
/// loss are not a multiple of the examples (a time-major input whose steps
/// are not a multiple of the batch); [`Error::InvalidParameter`] when every
/// parameter is frozen.
pub fn check_fast_path<M, B, F>(model: &M, batch: &B, loss_fn: F) -> Result<FastPathReport>
where
    M: Module,
    B: ExampleBatch,
    F: Fn(&M, &B) -> Tensor<1>,
{
    crate::validate::validate_model(model)?;
    let params = trainable_params(model);
    let conv = tape::conv_strategy();
    let (losses, records) = tape::record(conv, || loss_fn(model, batch));
    let (seen, shared) = crate::engine::record_coverage(&records);
    let (mut fast, mut fallback) = (Vec::new(), Vec::new());
    for p in &params {
        if seen.contains(&p.id) && !shared.contains(&p.id) {
            fast.push(p.name());
        } else {
            fallback.push(p.name());
        }
    }
    if params.is_empty() {
        return Err(Error::invalid(
            "model",
            "no trainable parameter",
            "nothing to train: every parameter is frozen",
        ));
    }
    // The engine checks independence only on the fast path.
    let independence = if fallback.is_empty() {
        crate::engine::check_pass_independence(conv, model, batch, &loss_fn, &losses, records)?
    } else {
        None
    };
    Ok(FastPathReport {
        fast,
        fallback,
        independence,
    })
}
