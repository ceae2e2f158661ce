//! DP-aware 1-D and 2-D convolutions (per-example gradients by unfolding).

use crate::tape::{self, Record};
use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::module::{conv2d, unfold4d};
use burn::tensor::ops::{ConvOptions, UnfoldOptions};
use burn::tensor::{Device, Tensor};

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
        // Patches [B, C_in·k_h·k_w, L] → [B, L, C_in·k_h·k_w].
        let patches = unfold4d(
            input.inner(),
            [kh, kw],
            UnfoldOptions::new(self.stride, self.padding, self.dilation),
        )
        .swap_dims(1, 2);
        let probe = tape::probe([batch, ho * wo, c_out], &out.device());
        tape::push(Record::Dense {
            weight: self.weight.id,
            bias: self.bias.as_ref().map(|b| b.id),
            input: patches,
            probe: probe.clone(),
            transposed: true,
        });
        debug_assert_eq!(
            c_in * kh * kw,
            self.weight.val().dims()[1..].iter().product::<usize>()
        );
        out + probe.swap_dims(1, 2).reshape([batch, c_out, ho, wo])
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
        let patches = unfold4d(
            x.inner(),
            [1, k],
            UnfoldOptions::new([1, self.stride], [0, self.padding], [1, self.dilation]),
        )
        .swap_dims(1, 2);
        let probe = tape::probe([batch, lo, c_out], &out.device());
        tape::push(Record::Dense {
            weight: self.weight.id,
            bias: self.bias.as_ref().map(|b| b.id),
            input: patches,
            probe: probe.clone(),
            transposed: true,
        });
        out.reshape([batch, c_out, lo]) + probe.swap_dims(1, 2)
    }
}
