//! DP-aware 1-D and 2-D convolutions (per-example gradients by unfolding).

use crate::tape::{self, Record};
use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Slice, Tensor};

/// How convolutions get their per-example weight gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvStrategy {
    /// [`Materialize`](ConvStrategy::Materialize) for single-input-channel
    /// convolutions whose `batch · |W|` per-example gradients fit in 2²⁴
    /// values, [`Unfold`](ConvStrategy::Unfold) otherwise. Measured on
    /// burn-flex (MNIST CNN, batch 256): the grouped convolution is the
    /// faster one for the 1-channel first layer (19 ms vs 28 ms) and the
    /// slower one for a 16-channel layer (41 ms vs ≈ 15 ms).
    #[default]
    Auto,
    /// One grouped weight-gradient convolution (groups = batch) materialises
    /// every example's weight gradient.
    Materialize,
    /// Unfold the input into patches (`k_h·k_w` strided slices), then ghost
    /// norms (Gram) or per-example products, whichever costs less.
    Unfold,
}

thread_local! {
    static STRATEGY: std::cell::Cell<ConvStrategy> = const { std::cell::Cell::new(ConvStrategy::Auto) };
}

/// Sets how convolutions recorded on this thread compute per-example
/// gradients (the engine runs on the caller's thread).
pub fn set_conv_strategy(strategy: ConvStrategy) {
    STRATEGY.with(|s| s.set(strategy));
}

/// Records a convolution on the tape: materialised per-example gradients
/// when they fit, unfolded patches otherwise.
#[allow(clippy::too_many_arguments)]
fn record_conv(
    weight: burn::module::ParamId,
    bias: Option<burn::module::ParamId>,
    input: Tensor<4>,
    probe: Tensor<3>,
    kernel: [usize; 4],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    out_hw: [usize; 2],
) {
    let batch = input.dims()[0];
    let materialize = match STRATEGY.with(std::cell::Cell::get) {
        ConvStrategy::Materialize => true,
        ConvStrategy::Unfold => false,
        ConvStrategy::Auto => kernel[1] == 1 && batch * kernel.iter().product::<usize>() <= 1 << 24,
    };
    if materialize {
        tape::push(Record::Conv {
            weight,
            bias,
            input,
            probe,
            out_hw,
            kernel,
            stride,
            padding,
            dilation,
        });
    } else {
        let patches = im2col(
            input,
            [kernel[2], kernel[3]],
            stride,
            padding,
            dilation,
            out_hw,
        );
        tape::push(Record::Dense {
            weight,
            bias,
            input: patches,
            probe,
            transposed: true,
            channels_first: true,
        });
    }
}

/// The patches of a 2-D convolution, `[B, L, C·k_h·k_w]` with `L = H_out·W_out`
/// and features in the weight's `(c, i, j)` order: built from `k_h·k_w`
/// strided slices of the padded input (cheaper than an unfold through a
/// one-hot convolution).
fn im2col(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    out: [usize; 2],
) -> Tensor<3> {
    let [batch, channels, h, w] = x.dims();
    let padded = if padding == [0, 0] {
        x
    } else {
        Tensor::<4>::zeros(
            [batch, channels, h + 2 * padding[0], w + 2 * padding[1]],
            &x.device(),
        )
        .slice_assign(
            [
                0..batch,
                0..channels,
                padding[0]..padding[0] + h,
                padding[1]..padding[1] + w,
            ],
            x,
        )
    };
    let span = |start: usize, axis: usize| {
        let end = start + stride[axis] * (out[axis] - 1) + 1;
        Slice::new(start as isize, Some(end as isize), stride[axis] as isize)
    };
    let mut taps = Vec::with_capacity(kernel[0] * kernel[1]);
    for i in 0..kernel[0] {
        for j in 0..kernel[1] {
            taps.push(padded.clone().slice([
                Slice::full(),
                Slice::full(),
                span(i * dilation[0], 0),
                span(j * dilation[1], 1),
            ]));
        }
    }
    // [B, C, k_h·k_w, H_out, W_out] → [B, C·k_h·k_w, L] → [B, L, C·k_h·k_w]
    Tensor::<4>::stack::<5>(taps, 2)
        .reshape([batch, channels * kernel[0] * kernel[1], out[0] * out[1]])
        .swap_dims(1, 2)
}

/// Configuration of a [`DpConv2d`] (burn's `Conv2dConfig` without groups;
/// padding as explicit symmetric sizes).
#[derive(Config, Debug)]
pub struct DpConv2dConfig {
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Kernel `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Stride.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Dilation.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Zero padding on each side.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Whether to add a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Parameter initialisation (burn's default for convolutions).
    #[config(
        default = "Initializer::KaimingUniform{gain:0.577_350_269_189_625_8, fan_out_only:false}"
    )]
    pub initializer: Initializer,
}

/// 2-D convolution on `[B, C_in, H, W]` with per-example gradients in the DP
/// engine's fast path. Parameters have burn's `Conv2d` layout
/// (`weight: [C_out, C_in, k_h, k_w]`).
#[derive(Module, Debug)]
pub struct DpConv2d {
    /// `[C_out, C_in, k_h, k_w]`.
    pub weight: Param<Tensor<4>>,
    /// `[C_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: [usize; 2],
}

impl DpConv2dConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> DpConv2d {
        let [c_in, c_out] = self.channels;
        let [kh, kw] = self.kernel_size;
        let fan_in = Some(c_in * kh * kw);
        let fan_out = Some(c_out * kh * kw);
        DpConv2d {
            weight: self
                .initializer
                .init_with([c_out, c_in, kh, kw], fan_in, fan_out, device),
            bias: self
                .bias
                .then(|| self.initializer.init_with([c_out], fan_in, fan_out, device)),
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding,
        }
    }
}

impl DpConv2d {
    /// Applies the convolution.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let options = ConvOptions::new(self.stride, self.padding, self.dilation, 1);
        if !tape::is_recording() {
            return conv2d(
                input,
                self.weight.val(),
                self.bias.as_ref().map(|b| b.val()),
                options,
            );
        }
        let [c_out, c_in, kh, kw] = self.weight.val().dims();
        let out = conv2d(
            input.clone(),
            self.weight.val().inner(),
            self.bias.as_ref().map(|b| b.val().inner()),
            options,
        );
        let [batch, _, ho, wo] = out.dims();
        let probe = tape::probe([batch, c_out, ho * wo], &out.device());
        record_conv(
            self.weight.id,
            self.bias.as_ref().map(|b| b.id),
            input.inner(),
            probe.clone(),
            [c_out, c_in, kh, kw],
            self.stride,
            self.padding,
            self.dilation,
            [ho, wo],
        );
        out + probe.reshape([batch, c_out, ho, wo])
    }
}

/// Configuration of a [`DpConv1d`].
#[derive(Config, Debug)]
pub struct DpConv1dConfig {
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Kernel size.
    pub kernel_size: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Dilation.
    #[config(default = 1)]
    pub dilation: usize,
    /// Zero padding on each side.
    #[config(default = 0)]
    pub padding: usize,
    /// Whether to add a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Parameter initialisation.
    #[config(
        default = "Initializer::KaimingUniform{gain:0.577_350_269_189_625_8, fan_out_only:false}"
    )]
    pub initializer: Initializer,
}

/// 1-D convolution on `[B, C_in, L]`, parameters in burn's `Conv1d` layout
/// (`weight: [C_out, C_in, k]`). Computed as a 2-D convolution of height 1.
#[derive(Module, Debug)]
pub struct DpConv1d {
    /// `[C_out, C_in, k]`.
    pub weight: Param<Tensor<3>>,
    /// `[C_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    stride: usize,
    dilation: usize,
    padding: usize,
}

impl DpConv1dConfig {
    /// Creates the layer on `device`.
    pub fn init(&self, device: &Device) -> DpConv1d {
        let k = self.kernel_size;
        let fan_in = Some(self.channels_in * k);
        let fan_out = Some(self.channels_out * k);
        DpConv1d {
            weight: self.initializer.init_with(
                [self.channels_out, self.channels_in, k],
                fan_in,
                fan_out,
                device,
            ),
            bias: self.bias.then(|| {
                self.initializer
                    .init_with([self.channels_out], fan_in, fan_out, device)
            }),
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding,
        }
    }
}

impl DpConv1d {
    /// Applies the convolution.
    pub fn forward(&self, input: Tensor<3>) -> Tensor<3> {
        let [batch, c_in, len] = input.dims();
        let [c_out, _, k] = self.weight.val().dims();
        let options = ConvOptions::new([1, self.stride], [0, self.padding], [1, self.dilation], 1);
        let x = input.reshape([batch, c_in, 1, len]);
        let as_2d = |w: Tensor<3>| w.reshape([c_out, c_in, 1, k]);
        if !tape::is_recording() {
            let out = conv2d(
                x,
                as_2d(self.weight.val()),
                self.bias.as_ref().map(|b| b.val()),
                options,
            );
            let [_, _, _, lo] = out.dims();
            return out.reshape([batch, c_out, lo]);
        }
        let out = conv2d(
            x.clone(),
            as_2d(self.weight.val().inner()),
            self.bias.as_ref().map(|b| b.val().inner()),
            options,
        );
        let [_, _, _, lo] = out.dims();
        let probe = tape::probe([batch, c_out, lo], &out.device());
        record_conv(
            self.weight.id,
            self.bias.as_ref().map(|b| b.id),
            x.inner(),
            probe.clone(),
            [c_out, c_in, 1, k],
            [1, self.stride],
            [0, self.padding],
            [1, self.dilation],
            [1, lo],
        );
        out.reshape([batch, c_out, lo]) + probe
    }
}
