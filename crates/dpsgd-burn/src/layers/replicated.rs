//! Convolutions whose per-example gradients come from per-example copies of
//! the parameters: grouped and depthwise 2-D convolutions, 3-D
//! convolutions and 2-D transposed convolutions.
//!
//! While the engine records, the batch `[B, C_in, …]` is folded into the
//! channels (`[1, B·C_in, …]`) and convolved ONCE with the kernel repeated
//! per example as `B × groups` groups; the repeated kernel (and bias) is a
//! leaf `[B, numel]` whose gradient after the one backward pass is every
//! example's gradient (the "grouped convolution" form of per-example
//! gradients, as used by Opacus's `ExpandedWeights` and functorch's vmap).
//! Outside recording these are burn's convolutions.

use super::conv::{Geometry, check_groups, standardized_kernel};
use crate::tape::{self, Record};
use burn::config::Config;
use burn::module::{Initializer, Module, Param, ParamId};
use burn::tensor::module::{conv_transpose2d, conv2d, conv3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Tensor};

/// A grouped 2-D convolution (`groups ≥ 1`), per example while recording.
pub(crate) fn grouped_conv2d(
    weight: &Param<Tensor<4>>,
    bias: Option<&Param<Tensor<1>>>,
    input: Tensor<4>,
    geometry: Geometry,
    groups: usize,
    standardize: bool,
) -> Tensor<4> {
    let kernel = |w: Tensor<4>| {
        if standardize {
            standardized_kernel(w).0
        } else {
            w
        }
    };
    if !tape::is_recording() {
        return conv2d(
            input,
            kernel(weight.val()),
            bias.map(|b| b.val()),
            geometry.options(groups),
        );
    }
    let [batch, c_in, h, w] = input.dims();
    let [c_out, per_group, kh, kw] = weight.val().dims();
    let replicas = Replicas::new(weight, bias, batch);
    let out = conv2d(
        input.reshape([1, batch * c_in, h, w]),
        kernel(replicas.kernel([batch * c_out, per_group, kh, kw])),
        replicas.bias(batch * c_out),
        geometry.options(batch * groups),
    );
    replicas.record();
    let [_, _, ho, wo] = out.dims();
    out.reshape([batch, c_out, ho, wo])
}

/// A layer's kernel and bias, one copy per example (see the module
/// documentation), and how to record them.
struct Replicas {
    weight: (ParamId, Tensor<2>),
    bias: Option<(ParamId, Tensor<2>)>,
}

impl Replicas {
    fn new<const D: usize>(
        weight: &Param<Tensor<D>>,
        bias: Option<&Param<Tensor<1>>>,
        batch: usize,
    ) -> Self {
        Self {
            weight: (weight.id, tape::replicate(weight.val(), batch)),
            bias: bias.map(|b| (b.id, tape::replicate(b.val(), batch))),
        }
    }

    /// The copies of the kernel as one `shape` tensor.
    fn kernel<const K: usize>(&self, shape: [usize; K]) -> Tensor<K> {
        self.weight.1.clone().reshape(shape)
    }

    /// The copies of the bias as one `[len]` tensor.
    fn bias(&self, len: usize) -> Option<Tensor<1>> {
        self.bias.as_ref().map(|(_, b)| b.clone().reshape([len]))
    }

    /// Pushes the record.
    fn record(self) {
        let mut params = vec![self.weight];
        params.extend(self.bias);
        tape::push(Record::Replicated { params });
    }
}

/// Configuration of a [`DpConv3d`] (burn's `Conv3dConfig` with symmetric
/// explicit padding).
#[derive(Config, Debug)]
pub struct DpConv3dConfig {
    /// `[in, out]` channels.
    pub channels: [usize; 2],
    /// Kernel `[depth, height, width]`.
    pub kernel_size: [usize; 3],
    /// Stride.
    #[config(default = "[1, 1, 1]")]
    pub stride: [usize; 3],
    /// Dilation.
    #[config(default = "[1, 1, 1]")]
    pub dilation: [usize; 3],
    /// Zero padding on each side.
    #[config(default = "[0, 0, 0]")]
    pub padding: [usize; 3],
    /// Channel groups (both channel counts must be multiples).
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
}

/// 3-D convolution on `[B, C_in, D, H, W]` with per-example gradients in
/// one backward pass; burn's `Conv3d` layout
/// (`weight: [C_out, C_in/groups, k_d, k_h, k_w]`).
#[derive(Module, Debug)]
pub struct DpConv3d {
    /// `[C_out, C_in/groups, k_d, k_h, k_w]`.
    pub weight: Param<Tensor<5>>,
    /// `[C_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    stride: [usize; 3],
    dilation: [usize; 3],
    padding: [usize; 3],
    groups: usize,
}

impl DpConv3dConfig {
    /// Creates the layer on `device`.
    ///
    /// # Panics
    ///
    /// When a channel count is not a multiple of `groups`.
    pub fn init(&self, device: &Device) -> DpConv3d {
        check_groups(self.channels, self.groups);
        let [c_in, c_out] = self.channels;
        let [kd, kh, kw] = self.kernel_size;
        let per_group = c_in / self.groups;
        let fan_in = Some(per_group * kd * kh * kw);
        let fan_out = Some(c_out / self.groups * kd * kh * kw);
        DpConv3d {
            weight: self.initializer.init_with(
                [c_out, per_group, kd, kh, kw],
                fan_in,
                fan_out,
                device,
            ),
            bias: self
                .bias
                .then(|| self.initializer.init_with([c_out], fan_in, fan_out, device)),
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding,
            groups: self.groups,
        }
    }
}

impl DpConv3d {
    /// Applies the convolution.
    pub fn forward(&self, input: Tensor<5>) -> Tensor<5> {
        let options = |groups| ConvOptions::new(self.stride, self.padding, self.dilation, groups);
        if !tape::is_recording() {
            return conv3d(
                input,
                self.weight.val(),
                self.bias.as_ref().map(|b| b.val()),
                options(self.groups),
            );
        }
        let [batch, c_in, d, h, w] = input.dims();
        let [c_out, per_group, kd, kh, kw] = self.weight.val().dims();
        let replicas = Replicas::new(&self.weight, self.bias.as_ref(), batch);
        let out = conv3d(
            input.reshape([1, batch * c_in, d, h, w]),
            replicas.kernel([batch * c_out, per_group, kd, kh, kw]),
            replicas.bias(batch * c_out),
            options(batch * self.groups),
        );
        replicas.record();
        let [_, _, od, oh, ow] = out.dims();
        out.reshape([batch, c_out, od, oh, ow])
    }
}

/// Configuration of a [`DpConvTranspose2d`]: burn's
/// `ConvTranspose2dConfig`.
#[derive(Config, Debug)]
pub struct DpConvTranspose2dConfig {
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
    /// Padding removed from each side of the output.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Extra size added to one side of the output.
    #[config(default = "[0, 0]")]
    pub padding_out: [usize; 2],
    /// Channel groups.
    #[config(default = 1)]
    pub groups: usize,
    /// Whether to add a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Parameter initialisation (burn's default).
    #[config(
        default = "Initializer::KaimingUniform{gain:0.577_350_269_189_625_8, fan_out_only:false}"
    )]
    pub initializer: Initializer,
}

/// 2-D transposed convolution on `[B, C_in, H, W]` with per-example
/// gradients in one backward pass; burn's `ConvTranspose2d` layout
/// (`weight: [C_in, C_out/groups, k_h, k_w]`).
#[derive(Module, Debug)]
pub struct DpConvTranspose2d {
    /// `[C_in, C_out/groups, k_h, k_w]`.
    pub weight: Param<Tensor<4>>,
    /// `[C_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: [usize; 2],
    padding_out: [usize; 2],
    groups: usize,
}

impl DpConvTranspose2dConfig {
    /// Creates the layer on `device`.
    ///
    /// # Panics
    ///
    /// When a channel count is not a multiple of `groups`.
    pub fn init(&self, device: &Device) -> DpConvTranspose2d {
        check_groups(self.channels, self.groups);
        let [c_in, c_out] = self.channels;
        let [kh, kw] = self.kernel_size;
        let fan_in = Some(c_out / self.groups * kh * kw);
        DpConvTranspose2d {
            weight: self.initializer.init_with(
                [c_in, c_out / self.groups, kh, kw],
                fan_in,
                None,
                device,
            ),
            bias: self
                .bias
                .then(|| self.initializer.init_with([c_out], fan_in, None, device)),
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding,
            padding_out: self.padding_out,
            groups: self.groups,
        }
    }
}

impl DpConvTranspose2d {
    /// Applies the transposed convolution.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let options = |groups| {
            ConvTransposeOptions::new(
                self.stride,
                self.padding,
                self.padding_out,
                self.dilation,
                groups,
            )
        };
        if !tape::is_recording() {
            return conv_transpose2d(
                input,
                self.weight.val(),
                self.bias.as_ref().map(|b| b.val()),
                options(self.groups),
            );
        }
        let [batch, c_in, h, w] = input.dims();
        let [_, per_group_out, kh, kw] = self.weight.val().dims();
        let c_out = per_group_out * self.groups;
        let replicas = Replicas::new(&self.weight, self.bias.as_ref(), batch);
        let out = conv_transpose2d(
            input.reshape([1, batch * c_in, h, w]),
            replicas.kernel([batch * c_in, per_group_out, kh, kw]),
            replicas.bias(batch * c_out),
            options(batch * self.groups),
        );
        replicas.record();
        let [_, _, oh, ow] = out.dims();
        out.reshape([batch, c_out, oh, ow])
    }
}

/// burn's `Conv3d` as its DP twin (the same parameters). Refused for
/// `Same` padding (its size depends on the input).
impl TryFrom<burn::nn::conv::Conv3d> for DpConv3d {
    type Error = dpsgd_core::Error;

    fn try_from(c: burn::nn::conv::Conv3d) -> Result<Self, Self::Error> {
        use burn::nn::PaddingConfig3d;
        let padding = match c.padding {
            PaddingConfig3d::Valid => [0, 0, 0],
            PaddingConfig3d::Explicit(d, h, w) => [d, h, w],
            other => {
                return Err(dpsgd_core::Error::invalid(
                    "padding",
                    format!("{other:?}"),
                    "only valid or explicit padding converts to DpConv3d",
                ));
            }
        };
        Ok(Self {
            weight: c.weight,
            bias: c.bias,
            stride: c.stride,
            dilation: c.dilation,
            padding,
            groups: c.groups,
        })
    }
}

impl From<burn::nn::conv::ConvTranspose2d> for DpConvTranspose2d {
    fn from(c: burn::nn::conv::ConvTranspose2d) -> Self {
        Self {
            weight: c.weight,
            bias: c.bias,
            stride: c.stride,
            dilation: c.dilation,
            padding: c.padding,
            padding_out: c.padding_out,
            groups: c.groups,
        }
    }
}
