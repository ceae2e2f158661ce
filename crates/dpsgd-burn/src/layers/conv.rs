//! DP-aware 1-D and 2-D convolutions (per-example gradients from gathered
//! patches, or a grouped weight-gradient convolution).

use crate::tape::{self, Record};
use burn::config::Config;
use burn::module::{Initializer, Module, Param, ParamId};
use burn::nn::{PaddingConfig1d, PaddingConfig2d};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// How convolutions compute their output and per-example weight gradients
/// while the DP engine records: an engine setting
/// ([`GradientEngine::with_conv_strategy`](crate::GradientEngine::with_conv_strategy),
/// [`DpSgdConfig::with_conv_strategy`](crate::DpSgdConfig::with_conv_strategy)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvStrategy {
    /// [`Unfold`](ConvStrategy::Unfold) when one layer's patches
    /// (`batch · L · C_in·k_h·k_w` values) fit in 2²⁵ values (128 MiB of
    /// f32), [`Materialize`](ConvStrategy::Materialize) otherwise (large
    /// images, where the patches would dwarf the activations).
    #[default]
    Auto,
    /// burn's convolution for the output; one grouped weight-gradient
    /// convolution (groups = batch) materialises every example's weight
    /// gradient after the backward pass.
    Materialize,
    /// Gather the input's patches with one `select` and compute the output as
    /// one GEMM on them; after the backward pass, gather them again and take
    /// per-example products (`gᵢᵀ Aᵢ`) or Gram ghost norms, whichever costs
    /// less. Unlike `Auto`, this also applies outside DP training (a
    /// like-for-like non-private baseline). On burn-flex this is much faster
    /// than the direct convolution for the small-channel layers of DP models
    /// (MNIST CNN, batch 256: DP step ≈ 0.9× burn's non-private step, against
    /// 1.5× with `Materialize`).
    Unfold,
}

/// [`ConvStrategy::Auto`]'s limit on a layer's patches, in values.
const AUTO_MAX_PATCH_VALUES: usize = 1 << 25;

/// Runs `f` with the DP-aware convolutions computed under `strategy`
/// outside DP training, e.g. [`ConvStrategy::Unfold`] for a non-private
/// baseline that convolves as the DP step does. Inside `f`, the DP engine
/// still uses its own strategy
/// ([`GradientEngine::with_conv_strategy`](crate::GradientEngine::with_conv_strategy))
/// while it records.
pub fn with_conv_strategy<T>(strategy: ConvStrategy, f: impl FnOnce() -> T) -> T {
    tape::with_conv_strategy(strategy, f)
}

/// Stride, padding and dilation of a 2-D convolution (a 1-D one as height 1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) dilation: [usize; 2],
}

impl Geometry {
    /// burn's options for this geometry with `groups` groups.
    pub(crate) fn options(&self, groups: usize) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, self.dilation, groups)
    }

    /// Output height and width for an input `[h, w]` and kernel `[k_h, k_w]`,
    /// `None` when the kernel does not fit in the padded input (or a stride
    /// is 0).
    fn output(&self, input: [usize; 2], kernel: [usize; 2]) -> Option<[usize; 2]> {
        let size = |axis: usize| {
            let span = self.dilation[axis] * (kernel[axis].checked_sub(1)?) + 1;
            let padded = input[axis] + 2 * self.padding[axis];
            Some(padded.checked_sub(span)?.checked_div(self.stride[axis])? + 1)
        };
        Some([size(0)?, size(1)?])
    }
}

/// A DP-aware layer's convolution: recorded for the engine while the tape
/// records; otherwise burn's convolution, or the gather + GEMM one under
/// [`ConvStrategy::Unfold`].
fn convolve(
    ids: (ParamId, Option<ParamId>),
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    input: Tensor<4>,
    geometry: Geometry,
    standardize: bool,
) -> Tensor<4> {
    let (weight, standardized) = if standardize {
        let (hat, inv_std) = standardized_kernel(weight);
        let stats = (
            hat.clone().inner().reshape([inv_std.dims()[0] as i32, -1]),
            inv_std.inner(),
        );
        (hat, Some(stats))
    } else {
        (weight, None)
    };
    let [batch, c_in, h, w] = input.dims();
    let [c_out, weight_c_in, kh, kw] = weight.dims();
    let out_hw = geometry
        .output([h, w], [kh, kw])
        .filter(|_| c_in == weight_c_in);
    let Some(out_hw) = out_hw else {
        // Let burn report the invalid shapes.
        return conv2d(input, weight, bias, geometry.options(1));
    };
    let strategy = tape::conv_strategy();
    let positions = out_hw[0] * out_hw[1];
    let to_nchw = |out: Tensor<3>| {
        out.swap_dims(1, 2)
            .reshape([batch, c_out, out_hw[0], out_hw[1]])
    };
    if !tape::is_recording() {
        return match strategy {
            ConvStrategy::Unfold => to_nchw(conv_by_gemm(input, weight, bias, geometry, out_hw)),
            _ => conv2d(input, weight, bias, geometry.options(1)),
        };
    }
    // Parameters enter as constants: autodiff never computes unclipped
    // weight gradients.
    let (w, b) = (weight.inner(), bias.map(|b| b.inner()));
    let unfolded = match strategy {
        ConvStrategy::Materialize => false,
        ConvStrategy::Unfold => true,
        ConvStrategy::Auto => batch * positions * c_in * kh * kw <= AUTO_MAX_PATCH_VALUES,
    };
    let (out, probe) = if unfolded {
        let probe = tape::probe([batch, positions, c_out], &input.device());
        let out = conv_by_gemm(input.clone(), w, b, geometry, out_hw) + probe.clone();
        (to_nchw(out), probe)
    } else {
        let probe = tape::probe([batch, c_out, positions], &input.device());
        let out = (conv2d(input.clone(), w, b, geometry.options(1))
            .reshape([batch, c_out, positions])
            + probe.clone())
        .reshape([batch, c_out, out_hw[0], out_hw[1]]);
        (out, probe)
    };
    tape::push(Record::Conv {
        weight: ids.0,
        bias: ids.1,
        input: input.inner(),
        probe,
        out_hw,
        kernel: [c_out, c_in, kh, kw],
        geometry,
        unfolded,
        standardized,
    });
    out
}

/// Panics unless both channel counts are multiples of `groups ≥ 1`.
pub(crate) fn check_groups(channels: [usize; 2], groups: usize) {
    assert!(
        groups > 0 && channels[0].is_multiple_of(groups) && channels[1].is_multiple_of(groups),
        "channels {channels:?} must be multiples of groups ({groups})"
    );
}

/// The ε of weight standardisation's variance.
pub const WEIGHT_STANDARDIZATION_EPS: f32 = 1e-5;

/// Weight standardisation (Qiao et al. 2019, "Micro-batch training with
/// batch-channel normalization and weight standardization"; used under DP by
/// De et al. 2022): each output channel's kernel `w` (over `C_in·k_h·k_w`
/// values) becomes `ŵ = (w − μ)/s` with `s = √(var(w) + ε)` (biased
/// variance). Returns `ŵ` (tracked by autodiff, so burn's gradient of `w`
/// goes through it) and `1/s` per output channel.
pub fn standardized_kernel(weight: Tensor<4>) -> (Tensor<4>, Tensor<1>) {
    let dims = weight.dims();
    let c_out = dims[0];
    let flat: Tensor<2> = weight.reshape([c_out as i32, -1]);
    let mean = flat.clone().mean_dim(1);
    let centred = flat - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(1);
    let inv_std = var.add_scalar(WEIGHT_STANDARDIZATION_EPS).sqrt().recip();
    let hat = (centred * inv_std.clone()).reshape(dims);
    (hat, inv_std.reshape([c_out]))
}

/// A convolution as ONE GEMM on the input's gathered patches:
/// `[B·L, C_in·k_h·k_w] · Wᵀ`, returned as `[B, L, C_out]`. With a constant
/// weight autodiff keeps neither operand, so the patches live only for the
/// product (the engine gathers them again after the backward pass, one
/// layer at a time).
fn conv_by_gemm(
    input: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    geometry: Geometry,
    out_hw: [usize; 2],
) -> Tensor<3> {
    let batch = input.dims()[0];
    let [c_out, c_in, kh, kw] = weight.dims();
    let (positions, features) = (out_hw[0] * out_hw[1], c_in * kh * kw);
    let mut out = im2col(input, [kh, kw], geometry, out_hw)
        .reshape([batch * positions, features])
        .matmul(weight.reshape([c_out, features]).transpose());
    if let Some(b) = bias {
        out = out + b.reshape([1, c_out]);
    }
    out.reshape([batch, positions, c_out])
}

/// For each output position `l` and weight feature `(c, i, j)` (the
/// weight's order), the flat index `c·H·W + y·W + x` of the input value it
/// reads, or `C·H·W` (a zero appended to every example) where it reads
/// padding. `[L · C·k_h·k_w]`, row-major.
fn patch_indices(
    [channels, h, w]: [usize; 3],
    kernel: [usize; 2],
    g: Geometry,
    out: [usize; 2],
) -> Vec<i64> {
    let zero = (channels * h * w) as i64;
    let mut idx = Vec::with_capacity(out[0] * out[1] * channels * kernel[0] * kernel[1]);
    for oy in 0..out[0] {
        for ox in 0..out[1] {
            for c in 0..channels {
                for i in 0..kernel[0] {
                    let y = (oy * g.stride[0] + i * g.dilation[0]).checked_sub(g.padding[0]);
                    for j in 0..kernel[1] {
                        let x = (ox * g.stride[1] + j * g.dilation[1]).checked_sub(g.padding[1]);
                        idx.push(match (y, x) {
                            (Some(y), Some(x)) if y < h && x < w => (c * h * w + y * w + x) as i64,
                            _ => zero,
                        });
                    }
                }
            }
        }
    }
    idx
}

/// The patches of a 2-D convolution, `[B, L, C·k_h·k_w]` with `L = H_out·W_out`
/// and features in the weight's `(c, i, j)` order, by ONE gather (`select`)
/// from the flattened input with a zero appended for the padding. The
/// gather is differentiable (its backward is a scatter-add), so the patches
/// carry the input's gradient.
pub(crate) fn im2col(x: Tensor<4>, kernel: [usize; 2], g: Geometry, out: [usize; 2]) -> Tensor<3> {
    let [batch, channels, h, w] = x.dims();
    let device = x.device();
    let idx = patch_indices([channels, h, w], kernel, g, out);
    let reads_padding = idx.contains(&((channels * h * w) as i64));
    let n = idx.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
    let mut flat: Tensor<2> = x.reshape([batch, channels * h * w]);
    if reads_padding {
        flat = Tensor::cat(vec![flat, Tensor::zeros([batch, 1], &device)], 1);
    }
    flat.select(1, idx)
        .reshape([batch, out[0] * out[1], channels * kernel[0] * kernel[1]])
}

/// Configuration of a [`DpConv2d`]: burn's `Conv2dConfig`, its fields,
/// defaults and padding type included.
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
    /// Zero padding, as burn's `Conv2d` takes it: `Valid` (none), `Same`
    /// (burn's sizes, `(k − 1)/2` on each side at stride 1) or
    /// `Explicit(top, left, bottom, right)`. The DP convolution pads
    /// symmetrically: `init` refuses asymmetric sizes and `Same` with an
    /// even kernel or a stride above 1.
    #[config(default = "PaddingConfig2d::Valid")]
    pub padding: PaddingConfig2d,
    /// Channel groups (both channel counts must be multiples; `groups =
    /// C_in` is a depthwise convolution). With more than one group the
    /// per-example gradients come from per-example copies of the kernel
    /// (`layers::replicated`).
    #[config(default = 1)]
    pub groups: usize,
    /// Whether to add a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Parameter initialisation (burn's default for convolutions).
    #[config(
        default = "Initializer::KaimingUniform{gain:0.577_350_269_189_625_8, fan_out_only:false}"
    )]
    pub initializer: Initializer,
    /// Weight standardisation: convolve with each output channel's kernel
    /// standardised to mean 0 and variance 1 ([`standardized_kernel`]).
    #[config(default = false)]
    pub weight_standardization: bool,
}

/// 2-D convolution on `[B, C_in, H, W]` with per-example gradients in the DP
/// engine's fast path. Parameters have burn's `Conv2d` layout
/// (`weight: [C_out, C_in/groups, k_h, k_w]`).
#[derive(Module, Debug)]
pub struct DpConv2d {
    /// `[C_out, C_in/groups, k_h, k_w]`.
    pub weight: Param<Tensor<4>>,
    /// `[C_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: [usize; 2],
    weight_standardization: bool,
    groups: usize,
}

impl DpConv2dConfig {
    /// Creates the layer on `device`.
    ///
    /// # Panics
    ///
    /// When a channel count is not a multiple of `groups`, or for padding
    /// the DP convolution cannot express (see [`DpConv2dConfig::padding`];
    /// burn's own `init` panics on unsupported padding too).
    pub fn init(&self, device: &Device) -> DpConv2d {
        check_groups(self.channels, self.groups);
        let padding = super::from_burn::padding_2d(&self.padding, self.kernel_size, self.stride)
            .unwrap_or_else(|e| panic!("DpConv2dConfig: {e}"));
        let [c_in, c_out] = self.channels;
        let [kh, kw] = self.kernel_size;
        let per_group = c_in / self.groups;
        let fan_in = Some(per_group * kh * kw);
        let fan_out = Some(c_out / self.groups * kh * kw);
        DpConv2d {
            weight: self
                .initializer
                .init_with([c_out, per_group, kh, kw], fan_in, fan_out, device),
            bias: self
                .bias
                .then(|| self.initializer.init_with([c_out], fan_in, fan_out, device)),
            stride: self.stride,
            dilation: self.dilation,
            padding,
            weight_standardization: self.weight_standardization,
            groups: self.groups,
        }
    }
}

impl DpConv2d {
    /// The same layer with weight standardisation on or off (see
    /// [`DpConv2dConfig::weight_standardization`]).
    #[must_use]
    pub fn with_weight_standardization(mut self, on: bool) -> Self {
        self.weight_standardization = on;
        self
    }

    /// Applies the convolution.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let geometry = Geometry {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
        };
        if self.groups > 1 {
            return super::replicated::grouped_conv2d(
                &self.weight,
                self.bias.as_ref(),
                input,
                geometry,
                self.groups,
                self.weight_standardization,
            );
        }
        convolve(
            (self.weight.id, self.bias.as_ref().map(|b| b.id)),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            input,
            Geometry {
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
            },
            self.weight_standardization,
        )
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
    /// Zero padding, as burn's `Conv1d` takes it: `Valid`, `Same` (burn's
    /// sizes, at stride 1 and an odd kernel) or `Explicit(left, right)`
    /// with equal sizes (`init` refuses the others).
    #[config(default = "PaddingConfig1d::Valid")]
    pub padding: PaddingConfig1d,
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
    ///
    /// # Panics
    ///
    /// For padding the DP convolution cannot express (see
    /// [`DpConv1dConfig::padding`]).
    pub fn init(&self, device: &Device) -> DpConv1d {
        let padding = super::from_burn::padding_1d(&self.padding, self.kernel_size, self.stride)
            .unwrap_or_else(|e| panic!("DpConv1dConfig: {e}"));
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
            padding,
        }
    }
}

impl DpConv1d {
    /// Applies the convolution (as a 2-D convolution of height 1).
    pub fn forward(&self, input: Tensor<3>) -> Tensor<3> {
        let [batch, c_in, len] = input.dims();
        let [c_out, _, k] = self.weight.val().dims();
        let as_2d = |w: Tensor<3>| w.reshape([c_out, c_in, 1, k]);
        let out = convolve(
            (self.weight.id, self.bias.as_ref().map(|b| b.id)),
            as_2d(self.weight.val()),
            self.bias.as_ref().map(|b| b.val()),
            input.reshape([batch, c_in, 1, len]),
            Geometry {
                stride: [1, self.stride],
                padding: [0, self.padding],
                dilation: [1, self.dilation],
            },
            false,
        );
        let [_, _, _, lo] = out.dims();
        out.reshape([batch, c_out, lo])
    }
}

/// burn's `Conv2d` as its DP twin (the same parameters). Refused for
/// `Same` padding (its size depends on the input) and asymmetric explicit
/// padding, which the twin does not take.
impl TryFrom<burn::nn::conv::Conv2d> for DpConv2d {
    type Error = dpsgd_core::Error;

    fn try_from(c: burn::nn::conv::Conv2d) -> Result<Self, Self::Error> {
        use burn::nn::PaddingConfig2d;
        let padding = match c.padding {
            PaddingConfig2d::Valid => [0, 0],
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top == bottom && left == right =>
            {
                [top, left]
            }
            other => {
                return Err(dpsgd_core::Error::invalid(
                    "padding",
                    format!("{other:?}"),
                    "only valid or symmetric explicit padding converts to DpConv2d",
                ));
            }
        };
        Ok(Self {
            weight: c.weight,
            bias: c.bias,
            stride: c.stride,
            dilation: c.dilation,
            padding,
            weight_standardization: false,
            groups: c.groups,
        })
    }
}
