//! DP-aware recurrent layers: burn's `Rnn`, `Lstm` and `Gru` with the same
//! parameter paths, on the engine's fast path.
//!
//! # Per-example gradients through time
//!
//! A recurrent gate computes `z_t = x_t W_x + b_x + h_{t−1} W_h + b_h` at
//! every step with the *same* weights. Back-propagation through time gives
//! the per-example gradient `∇W_h = Σ_t h_{t−1}ᵀ δ_t` with `δ_t = ∂L/∂z_t`
//! the total derivative at step `t` (it already contains every later step's
//! dependence on `z_t`), and likewise `∇W_x = Σ_t x_tᵀ δ_t`: one dense layer
//! over `T` positions each. So
//!
//! * the input transform runs once on the whole `[B, T, d_in]` sequence (a
//!   [`DpLinear`] call: one dense record over `T` positions);
//! * the hidden transform runs step by step with its weights as constants.
//!   Its output joins the input transform's as it is, so its output
//!   gradient is the same `δ_t`: the gradient of the input transform's
//!   probe at step `t`. After the loop the states `h_{t−1}` (`[B, T, H]`)
//!   and that gradient make one dense record. (A GRU's candidate with the
//!   reset gate after its hidden transform multiplies that output by `r`
//!   first; it adds a zero probe of its own at each step, whose gradient
//!   is `r ⊙ δ_t`.)
//!
//! One backward pass then gives every gate's per-example norms (Gram ghost
//! norms over `T` positions when cheaper) and clipped sums, as for any
//! dense layer. The gates of a layer read the same input and the same
//! states, and a gate's two transforms have the same `δ`: each of these
//! tensors is stacked once and its Gram matrix computed once (an LSTM's
//! norms take 6 Gram products instead of 16).
//!
//! # Variable-length sequences
//!
//! `forward_masked` takes a padding mask `[B, T]` (`true` = padded): at a
//! padded step an example keeps its previous state and outputs zeros, so
//! its final state is its last real step's. Padded steps contribute exactly
//! zero gradient.

use super::linear::{DpLinear, DpLinearConfig};
use crate::tape::{self, Record, Shared, StepGrads};
use burn::config::Config;
use burn::module::{Initializer, Module, ParamId};
use burn::nn::activation::{Activation, ActivationConfig};
use burn::tensor::module::linear;
use burn::tensor::{Bool, Device, Tensor};

/// A gate's two transforms, burn's `GateController` layout:
/// `input_transform` (`[d_input, d_hidden]`) and `hidden_transform`
/// (`[d_hidden, d_hidden]`), each with an optional bias.
#[derive(Module, Debug)]
pub struct DpGateController {
    /// `x_t W_x + b_x`.
    pub input_transform: DpLinear,
    /// `h_{t−1} W_h + b_h`.
    pub hidden_transform: DpLinear,
}

impl DpGateController {
    /// A gate from `d_input` to `d_output` features.
    pub fn new(
        d_input: usize,
        d_output: usize,
        bias: bool,
        initializer: Initializer,
        device: &Device,
    ) -> Self {
        let config = |d_in| {
            DpLinearConfig::new(d_in, d_output)
                .with_bias(bias)
                .with_initializer(initializer.clone())
        };
        Self {
            input_transform: config(d_input).init(device),
            hidden_transform: config(d_output).init(device),
        }
    }
}

/// The hidden transform of one gate over a sequence: step outputs while
/// recording, then one recurrent record (see the module documentation).
struct Recurrence {
    weight: ParamId,
    bias: Option<ParamId>,
    recording: bool,
    /// `[B, d_out]` probes by step, when the transform's output is gated
    /// before it joins the input transform's (see [`StepGrads::Probes`]).
    probes: Option<Vec<Option<Tensor<2>>>>,
}

impl Recurrence {
    fn new(gate: &DpGateController, steps: usize, gated: bool) -> Self {
        let recording = tape::is_recording();
        Self {
            weight: gate.hidden_transform.weight.id,
            bias: gate.hidden_transform.bias.as_ref().map(|b| b.id),
            recording,
            probes: (recording && gated).then(|| vec![None; steps]),
        }
    }

    /// `hidden W_h + b_h` at step `t`.
    fn step(&mut self, gate: &DpGateController, hidden: Tensor<2>, t: usize) -> Tensor<2> {
        let layer = &gate.hidden_transform;
        if !self.recording {
            return linear(
                hidden,
                layer.weight.val(),
                layer.bias.as_ref().map(|b| b.val()),
            );
        }
        let out = linear(
            hidden,
            layer.weight.val().inner(),
            layer.bias.as_ref().map(|b| b.val().inner()),
        );
        match &mut self.probes {
            None => out,
            Some(probes) => {
                let probe = tape::probe(out.dims(), &out.device());
                probes[t] = Some(probe.clone());
                out + probe
            }
        }
    }

    /// Pushes the record (when recording) over the states the transform
    /// read; an ungated transform's output gradient is the input
    /// transform's (`input_probe`, with its key).
    fn finish(self, states: Option<&StackedStates>, input_probe: Option<(Tensor<3>, u64)>) {
        let Some(states) = states.filter(|_| self.recording) else {
            return;
        };
        let grad = match self.probes {
            Some(probes) => {
                let Some(first) = probes.iter().flatten().next() else {
                    return;
                };
                let (shape, device) = (first.dims(), first.device());
                StepGrads::Probes(
                    probes
                        .into_iter()
                        .map(|p| p.unwrap_or_else(|| tape::probe(shape, &device)))
                        .collect(),
                )
            }
            None => {
                let Some((probe, key)) = input_probe else {
                    return;
                };
                StepGrads::Input { probe, key }
            }
        };
        tape::push(Record::Recurrent {
            weight: self.weight,
            bias: self.bias,
            input: states.input.clone(),
            input_key: Some(states.key),
            grad,
        });
    }
}

/// The states `h_{t−1}` that hidden transforms read, by step (while
/// recording): logged once for all the gates that read them and stacked
/// into one record input they share (an LSTM's four gates would otherwise
/// keep four copies, and compute four equal Gram matrices).
struct States {
    steps: Vec<Option<Tensor<2>>>,
}

/// [`States`] stacked: `[B, T, H]` and its [`Shared`] key.
struct StackedStates {
    input: Tensor<3>,
    key: u64,
}

impl States {
    fn new(steps: usize) -> Self {
        Self {
            steps: vec![None; if tape::is_recording() { steps } else { 0 }],
        }
    }

    /// `state` is read at step `t`.
    fn log(&mut self, t: usize, state: &Tensor<2>) {
        if let Some(slot) = self.steps.get_mut(t) {
            *slot = Some(state.clone().inner());
        }
    }

    /// The logged states (zeros at a step never logged), or `None` when
    /// not recording or no step was.
    fn stack(self) -> Option<StackedStates> {
        let first = self.steps.iter().flatten().next()?;
        let (shape, device) = (first.dims(), first.device());
        let states = self
            .steps
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Tensor::zeros(shape, &device)))
            .collect();
        Some(StackedStates {
            input: Tensor::stack(states, 1),
            key: tape::fresh_key(),
        })
    }
}

/// The steps `[B, F]` of a sequence `[B, T, F]` on the autodiff graph,
/// taken through blocks of about √T steps.
///
/// The backward pass of a slice writes its gradient into zeros of the
/// sliced tensor's whole shape (burn's `narrow`, `split` and `chunk`
/// alike), so slicing each of `T` steps straight out of the sequence
/// writes and adds `T` tensors of `[B, T, F]` to give back one: time and
/// traffic quadratic in `T` (at `T` = 64 on the benchmark LSTM, 16–25% of
/// a step in `memset`, `memmove` and fresh pages). A step sliced out of
/// its block of `k` steps costs `[B, k, F]`, and the `T/k` blocks one
/// `[B, T, F]` each: `O(T^1.5)` in all at `k ≈ √T`. Every gradient value
/// is the same sum as before (the rest are exact zeros), so the result is
/// bit for bit the same.
struct StepSlices {
    sequence: Tensor<3>,
    block: usize,
    /// The block last used, by index.
    cached: Option<(usize, Tensor<3>)>,
}

impl StepSlices {
    fn new(sequence: Tensor<3>) -> Self {
        let steps = sequence.dims()[1];
        Self {
            sequence,
            block: steps.isqrt().max(1),
            cached: None,
        }
    }

    /// Step `t`, `[B, F]`.
    fn at(&mut self, t: usize) -> Tensor<2> {
        let [batch, steps, features] = self.sequence.dims();
        let index = t / self.block;
        let start = index * self.block;
        let chunk = match &self.cached {
            Some((i, chunk)) if *i == index => chunk.clone(),
            _ => {
                let chunk = self
                    .sequence
                    .clone()
                    .narrow(1, start, self.block.min(steps - start));
                self.cached = Some((index, chunk.clone()));
                chunk
            }
        };
        chunk.narrow(1, t - start, 1).reshape([batch, features])
    }
}

/// `[B, T, F]` with `batch_first`, `[T, B, F]` otherwise → `[B, T, F]`.
fn batch_major(x: Tensor<3>, batch_first: bool) -> Tensor<3> {
    if batch_first { x } else { x.swap_dims(0, 1) }
}

/// The steps in processing order.
fn order(steps: usize, reverse: bool) -> Vec<usize> {
    if reverse {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    }
}

/// `new` where the example is not padded at step `t`, `old` where it is.
fn keep_padded(
    new: Tensor<2>,
    old: Tensor<2>,
    mask: Option<&Tensor<2, Bool>>,
    t: usize,
) -> Tensor<2> {
    match mask {
        None => new,
        Some(mask) => {
            let [batch, _] = mask.dims();
            let h = new.dims()[1];
            let padded = mask
                .clone()
                .narrow(1, t, 1)
                .reshape([batch, 1])
                .expand([batch, h]);
            new.mask_where(padded, old)
        }
    }
}

/// Zeros the outputs of padded steps.
fn zero_padded(out: Tensor<3>, mask: Option<&Tensor<2, Bool>>) -> Tensor<3> {
    match mask {
        None => out,
        Some(mask) => {
            let [batch, steps, h] = out.dims();
            out.mask_fill(
                mask.clone()
                    .reshape([batch, steps, 1])
                    .expand([batch, steps, h]),
                0.0,
            )
        }
    }
}

/// Configuration of a [`DpRnn`]: burn's `RnnConfig`.
#[derive(Config, Debug)]
pub struct DpRnnConfig {
    /// Input features.
    pub d_input: usize,
    /// Hidden state size.
    pub d_hidden: usize,
    /// Whether the transforms have biases.
    pub bias: bool,
    /// Initialisation (burn's default).
    #[config(default = "Initializer::XavierNormal{gain:1.0}")]
    pub initializer: Initializer,
    /// Inputs `[B, T, F]` (`true`) or `[T, B, F]`.
    #[config(default = true)]
    pub batch_first: bool,
    /// Process the sequence from its end.
    #[config(default = false)]
    pub reverse: bool,
    /// Clamp the hidden state to `[−clip, clip]`.
    pub clip: Option<f64>,
    /// The state's non-linearity (burn's default: tanh).
    #[config(default = "ActivationConfig::Tanh")]
    pub hidden_activation: ActivationConfig,
}

/// An Elman RNN, `h_t = act(x_t W_x + b_x + h_{t−1} W_h + b_h)`, with
/// burn's `Rnn` layout (`gate.input_transform`, `gate.hidden_transform`).
#[derive(Module, Debug)]
pub struct DpRnn {
    /// The one gate.
    pub gate: DpGateController,
    /// Hidden state size.
    pub d_hidden: usize,
    /// Inputs batch first.
    pub batch_first: bool,
    /// Processed from the end.
    pub reverse: bool,
    /// State clamp.
    pub clip: Option<f64>,
    /// The state's non-linearity.
    pub hidden_activation: Activation,
}

impl DpRnnConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> DpRnn {
        DpRnn {
            gate: DpGateController::new(
                self.d_input,
                self.d_hidden,
                self.bias,
                self.initializer.clone(),
                device,
            ),
            d_hidden: self.d_hidden,
            batch_first: self.batch_first,
            reverse: self.reverse,
            clip: self.clip,
            hidden_activation: self.hidden_activation.init(device),
        }
    }
}

impl DpRnn {
    /// The hidden states of every step (`[B, T, H]`, or `[T, B, H]` when not
    /// batch first) and the final state `[B, H]`, from `state` (zeros by
    /// default).
    pub fn forward(&self, input: Tensor<3>, state: Option<Tensor<2>>) -> (Tensor<3>, Tensor<2>) {
        self.forward_masked(input, state, None)
    }

    /// [`forward`](Self::forward) with a padding mask `[B, T]` (`true` =
    /// padded step: the state is carried over and the output is zero).
    pub fn forward_masked(
        &self,
        input: Tensor<3>,
        state: Option<Tensor<2>>,
        mask_pad: Option<Tensor<2, Bool>>,
    ) -> (Tensor<3>, Tensor<2>) {
        let x = batch_major(input, self.batch_first);
        let device = x.device();
        let [batch, steps, _] = x.dims();
        let mut gate = GateRun::new(&self.gate, &x, tape::fresh_key(), false);
        let mut states = States::new(steps);
        let mut h = state.unwrap_or_else(|| Tensor::zeros([batch, self.d_hidden], &device));
        let mut outputs = vec![None; steps];
        for t in order(steps, self.reverse) {
            states.log(t, &h);
            let z = gate.at(t, h.clone(), None);
            let mut new = self.hidden_activation.forward(z);
            if let Some(c) = self.clip {
                new = new.clamp(-c, c);
            }
            h = keep_padded(new, h, mask_pad.as_ref(), t);
            outputs[t] = Some(h.clone().reshape([batch, 1, self.d_hidden]));
        }
        gate.finish(states.stack().as_ref());
        let out = zero_padded(stack(outputs), mask_pad.as_ref());
        (batch_major(out, self.batch_first), h)
    }
}

/// The steps' outputs `[B, 1, H]` in position order → `[B, T, H]`.
fn stack(outputs: Vec<Option<Tensor<3>>>) -> Tensor<3> {
    Tensor::cat(outputs.into_iter().flatten().collect(), 1)
}

/// Configuration of a [`DpLstm`]: burn's `LstmConfig`.
#[derive(Config, Debug)]
pub struct DpLstmConfig {
    /// Input features.
    pub d_input: usize,
    /// Hidden (and cell) state size.
    pub d_hidden: usize,
    /// Whether the transforms have biases.
    pub bias: bool,
    /// Initialisation (burn's default).
    #[config(default = "Initializer::XavierNormal{gain:1.0}")]
    pub initializer: Initializer,
    /// Inputs `[B, T, F]` (`true`) or `[T, B, F]`.
    #[config(default = true)]
    pub batch_first: bool,
    /// Process the sequence from its end.
    #[config(default = false)]
    pub reverse: bool,
    /// Clamp the cell state to `[−clip, clip]`.
    pub clip: Option<f64>,
    /// Coupled input and forget gates (`f = 1 − i`; no forget gate).
    #[config(default = false)]
    pub input_forget: bool,
    /// The gates' non-linearity (sigmoid).
    #[config(default = "ActivationConfig::Sigmoid")]
    pub gate_activation: ActivationConfig,
    /// The candidate cell's non-linearity (tanh).
    #[config(default = "ActivationConfig::Tanh")]
    pub cell_activation: ActivationConfig,
    /// The output's non-linearity on the cell (tanh).
    #[config(default = "ActivationConfig::Tanh")]
    pub hidden_activation: ActivationConfig,
}

/// A long short-term memory layer (Hochreiter & Schmidhuber 1997) with
/// burn's `Lstm` layout: `input_gate`, `forget_gate` (absent with coupled
/// gates), `output_gate` and `cell_gate`, each a [`DpGateController`].
#[derive(Module, Debug)]
pub struct DpLstm {
    /// Input gate `i`.
    pub input_gate: DpGateController,
    /// Forget gate `f` (`None`: `f = 1 − i`).
    pub forget_gate: Option<DpGateController>,
    /// Output gate `o`.
    pub output_gate: DpGateController,
    /// Candidate cell `g`.
    pub cell_gate: DpGateController,
    /// State size.
    pub d_hidden: usize,
    /// Inputs batch first.
    pub batch_first: bool,
    /// Processed from the end.
    pub reverse: bool,
    /// Cell clamp.
    pub clip: Option<f64>,
    /// Coupled input and forget gates.
    pub input_forget: bool,
    /// Gate non-linearity.
    pub gate_activation: Activation,
    /// Candidate non-linearity.
    pub cell_activation: Activation,
    /// Output non-linearity.
    pub hidden_activation: Activation,
}

impl DpLstmConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> DpLstm {
        let gate = || {
            DpGateController::new(
                self.d_input,
                self.d_hidden,
                self.bias,
                self.initializer.clone(),
                device,
            )
        };
        DpLstm {
            input_gate: gate(),
            forget_gate: (!self.input_forget).then(gate),
            output_gate: gate(),
            cell_gate: gate(),
            d_hidden: self.d_hidden,
            batch_first: self.batch_first,
            reverse: self.reverse,
            clip: self.clip,
            input_forget: self.input_forget,
            gate_activation: self.gate_activation.init(device),
            cell_activation: self.cell_activation.init(device),
            hidden_activation: self.hidden_activation.init(device),
        }
    }
}

/// One gate over a sequence: its input transform on every step at once and
/// its recurrence.
struct GateRun<'a> {
    gate: &'a DpGateController,
    projected: StepSlices,
    recurrence: Recurrence,
    /// While recording an ungated gate: the input transform's probe and
    /// the key of its gradient, which the hidden transform shares.
    input_probe: Option<(Tensor<3>, u64)>,
}

impl<'a> GateRun<'a> {
    /// The gate on `x` (whose [`Shared`] key is `x_key`); `gated`: its
    /// hidden transform's output is multiplied by a reset gate.
    fn new(gate: &'a DpGateController, x: &Tensor<3>, x_key: u64, gated: bool) -> Self {
        let [_, steps, _] = x.dims();
        let grad_key = (!gated).then(tape::fresh_key);
        let (projection, probe) = gate.input_transform.forward_shared(
            x.clone(),
            Shared {
                input: Some(x_key),
                grad: grad_key,
            },
        );
        Self {
            gate,
            projected: StepSlices::new(projection),
            recurrence: Recurrence::new(gate, steps, gated),
            input_probe: probe.zip(grad_key),
        }
    }

    /// `x_t W_x + b_x + r ⊙ (h W_h + b_h)` (`r = 1` without `reset`, which
    /// a gated run must be given at every step).
    fn at(&mut self, t: usize, hidden: Tensor<2>, reset: Option<Tensor<2>>) -> Tensor<2> {
        let input = self.projected.at(t);
        let recurrent = self.recurrence.step(self.gate, hidden, t);
        match reset {
            Some(r) => input + r * recurrent,
            None => input + recurrent,
        }
    }

    /// Pushes the hidden transform's record over the `states` it read.
    fn finish(self, states: Option<&StackedStates>) {
        self.recurrence.finish(states, self.input_probe);
    }
}

impl DpLstm {
    /// The hidden states of every step (`[B, T, H]`, or `[T, B, H]` when not
    /// batch first) and the final `(cell, hidden)` states `[B, H]`, from
    /// `state` (zeros by default), as burn's `Lstm::forward`.
    pub fn forward(
        &self,
        input: Tensor<3>,
        state: Option<(Tensor<2>, Tensor<2>)>,
    ) -> (Tensor<3>, (Tensor<2>, Tensor<2>)) {
        self.forward_masked(input, state, None)
    }

    /// [`forward`](Self::forward) with a padding mask `[B, T]` (`true` =
    /// padded step: both states are carried over, the output is zero).
    pub fn forward_masked(
        &self,
        input: Tensor<3>,
        state: Option<(Tensor<2>, Tensor<2>)>,
        mask_pad: Option<Tensor<2, Bool>>,
    ) -> (Tensor<3>, (Tensor<2>, Tensor<2>)) {
        let x = batch_major(input, self.batch_first);
        let device = x.device();
        let [batch, steps, _] = x.dims();
        let (mut c, mut h) = state.unwrap_or_else(|| {
            let zeros = Tensor::zeros([batch, self.d_hidden], &device);
            (zeros.clone(), zeros)
        });
        // The four gates read the same input and the same states.
        let x_key = tape::fresh_key();
        let mut input_gate = GateRun::new(&self.input_gate, &x, x_key, false);
        let mut forget_gate = self
            .forget_gate
            .as_ref()
            .map(|g| GateRun::new(g, &x, x_key, false));
        let mut output_gate = GateRun::new(&self.output_gate, &x, x_key, false);
        let mut cell_gate = GateRun::new(&self.cell_gate, &x, x_key, false);
        let mut states = States::new(steps);
        let mut outputs = vec![None; steps];
        for t in order(steps, self.reverse) {
            states.log(t, &h);
            let i = self
                .gate_activation
                .forward(input_gate.at(t, h.clone(), None));
            let f = match forget_gate.as_mut() {
                Some(g) => self.gate_activation.forward(g.at(t, h.clone(), None)),
                None => i.clone().neg().add_scalar(1.0),
            };
            let o = self
                .gate_activation
                .forward(output_gate.at(t, h.clone(), None));
            let g = self
                .cell_activation
                .forward(cell_gate.at(t, h.clone(), None));
            let mut new_c = f * c.clone() + i * g;
            if let Some(clip) = self.clip {
                new_c = new_c.clamp(-clip, clip);
            }
            let new_h = o * self.hidden_activation.forward(new_c.clone());
            c = keep_padded(new_c, c, mask_pad.as_ref(), t);
            h = keep_padded(new_h, h, mask_pad.as_ref(), t);
            outputs[t] = Some(h.clone().reshape([batch, 1, self.d_hidden]));
        }
        let states = states.stack();
        input_gate.finish(states.as_ref());
        if let Some(g) = forget_gate {
            g.finish(states.as_ref());
        }
        output_gate.finish(states.as_ref());
        cell_gate.finish(states.as_ref());
        let out = zero_padded(stack(outputs), mask_pad.as_ref());
        (batch_major(out, self.batch_first), (c, h))
    }
}

/// Configuration of a [`DpGru`]: burn's `GruConfig`.
#[derive(Config, Debug)]
pub struct DpGruConfig {
    /// Input features.
    pub d_input: usize,
    /// Hidden state size.
    pub d_hidden: usize,
    /// Whether the transforms have biases.
    pub bias: bool,
    /// Apply the reset gate after the hidden transform (burn's and
    /// cuDNN's default) or to the state before it.
    #[config(default = "true")]
    pub reset_after: bool,
    /// Initialisation (burn's default).
    #[config(default = "Initializer::XavierNormal{gain:1.0}")]
    pub initializer: Initializer,
    /// The gates' non-linearity (sigmoid).
    #[config(default = "ActivationConfig::Sigmoid")]
    pub gate_activation: ActivationConfig,
    /// The candidate's non-linearity (tanh).
    #[config(default = "ActivationConfig::Tanh")]
    pub hidden_activation: ActivationConfig,
    /// Clamp the hidden state to `[−clip, clip]`.
    pub clip: Option<f64>,
}

/// A gated recurrent unit (Cho et al. 2014) with burn's `Gru` layout:
/// `update_gate`, `reset_gate` and `new_gate`, each a
/// [`DpGateController`]. Inputs are batch first, as burn's.
#[derive(Module, Debug)]
pub struct DpGru {
    /// Update gate `z`.
    pub update_gate: DpGateController,
    /// Reset gate `r`.
    pub reset_gate: DpGateController,
    /// Candidate `n`.
    pub new_gate: DpGateController,
    /// State size.
    pub d_hidden: usize,
    /// Reset after the hidden transform.
    pub reset_after: bool,
    /// Gate non-linearity.
    pub gate_activation: Activation,
    /// Candidate non-linearity.
    pub hidden_activation: Activation,
    /// State clamp.
    pub clip: Option<f64>,
}

impl DpGruConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> DpGru {
        let gate = || {
            DpGateController::new(
                self.d_input,
                self.d_hidden,
                self.bias,
                self.initializer.clone(),
                device,
            )
        };
        DpGru {
            update_gate: gate(),
            reset_gate: gate(),
            new_gate: gate(),
            d_hidden: self.d_hidden,
            reset_after: self.reset_after,
            gate_activation: self.gate_activation.init(device),
            hidden_activation: self.hidden_activation.init(device),
            clip: self.clip,
        }
    }
}

impl DpGru {
    /// The hidden states of every step, `[B, T, H]`, from `state` (zeros by
    /// default), as burn's `Gru::forward`.
    pub fn forward(&self, input: Tensor<3>, state: Option<Tensor<2>>) -> Tensor<3> {
        self.forward_masked(input, state, None).0
    }

    /// The hidden states of every step and the final state, with a padding
    /// mask `[B, T]` (`true` = padded step: the state is carried over, the
    /// output is zero).
    pub fn forward_masked(
        &self,
        input: Tensor<3>,
        state: Option<Tensor<2>>,
        mask_pad: Option<Tensor<2, Bool>>,
    ) -> (Tensor<3>, Tensor<2>) {
        let device = input.device();
        let [batch, steps, _] = input.dims();
        let mut h = state.unwrap_or_else(|| Tensor::zeros([batch, self.d_hidden], &device));
        // The gates read the same input; the update and reset gates (and
        // the candidate's, with the reset after it) the same states.
        let x_key = tape::fresh_key();
        let mut update = GateRun::new(&self.update_gate, &input, x_key, false);
        let mut reset = GateRun::new(&self.reset_gate, &input, x_key, false);
        let mut new = GateRun::new(&self.new_gate, &input, x_key, self.reset_after);
        let mut states = States::new(steps);
        // Without the reset after: the candidate reads `h ⊙ r`.
        let mut reset_states = (!self.reset_after).then(|| States::new(steps));
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            states.log(t, &h);
            let z = self.gate_activation.forward(update.at(t, h.clone(), None));
            let r = self.gate_activation.forward(reset.at(t, h.clone(), None));
            let candidate = match reset_states.as_mut() {
                None => new.at(t, h.clone(), Some(r)),
                Some(log) => {
                    let reset_state = h.clone() * r;
                    log.log(t, &reset_state);
                    new.at(t, reset_state, None)
                }
            };
            let n = self.hidden_activation.forward(candidate);
            let mut next = n * z.clone().neg().add_scalar(1.0) + z * h.clone();
            if let Some(c) = self.clip {
                next = next.clamp(-c, c);
            }
            h = keep_padded(next, h, mask_pad.as_ref(), t);
            outputs.push(Some(h.clone().reshape([batch, 1, self.d_hidden])));
        }
        let states = states.stack();
        update.finish(states.as_ref());
        reset.finish(states.as_ref());
        match reset_states {
            None => new.finish(states.as_ref()),
            Some(log) => new.finish(log.stack().as_ref()),
        }
        (zero_padded(stack(outputs), mask_pad.as_ref()), h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    /// Each step's slice, and the sequence's gradient through every step,
    /// are bit for bit those of slicing each step straight out of the
    /// sequence: for lengths with whole and partial blocks, in both
    /// orders, with a step visited twice.
    #[test]
    fn should_slice_steps_through_blocks_as_straight_slices_do() {
        let device = Device::default().autodiff();
        let (batch, features) = (2, 3);
        for steps in [1, 2, 3, 4, 5, 8, 17, 64, 65] {
            let data: Vec<f32> = (0..batch * steps * features)
                .map(|k| ((k * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let weight = |t: usize| {
                let w: Vec<f32> = (0..batch * features)
                    .map(|k| ((k + 3 * t) % 11) as f32 / 3.0 - 1.5)
                    .collect();
                Tensor::<2>::from_data(TensorData::new(w, [batch, features]), &device)
            };
            for reverse in [false, true] {
                let mut visits = order(steps, reverse);
                visits.push(steps / 2);
                let run = |blocked: bool| {
                    let sequence = Tensor::<3>::from_data(
                        TensorData::new(data.clone(), [batch, steps, features]),
                        &device,
                    )
                    .require_grad();
                    let mut slices = StepSlices::new(sequence.clone());
                    let mut seen = Vec::new();
                    let mut loss = Tensor::<1>::zeros([1], &device);
                    for &t in &visits {
                        let step = if blocked {
                            slices.at(t)
                        } else {
                            sequence.clone().narrow(1, t, 1).reshape([batch, features])
                        };
                        seen.extend(values(step.clone().inner()));
                        loss = loss + (step.clone() * step * weight(t)).sum();
                    }
                    let grads = loss.backward();
                    let grad = sequence.grad(&grads).expect("the sequence's gradient");
                    (seen, values(grad))
                };
                let (blocked, straight) = (run(true), run(false));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&blocked.0), bits(&straight.0), "steps {steps}");
                assert_eq!(
                    bits(&blocked.1),
                    bits(&straight.1),
                    "steps {steps} reverse {reverse}"
                );
                assert!(blocked.1.iter().any(|&g| g != 0.0));
            }
        }
    }
}
