//! DP-aware fully connected layer.

use crate::tape::{self, Record, Shared};
use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::LinearLayout;
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};

/// Configuration of a [`DpLinear`]: the same fields and defaults as burn's
/// `LinearConfig`.
#[derive(Config, Debug)]
pub struct DpLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Whether to add a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Parameter initialisation (burn's default for Linear).
    #[config(
        default = "Initializer::KaimingUniform{gain:0.577_350_269_189_625_8, fan_out_only:false}"
    )]
    pub initializer: Initializer,
    /// The weight's layout, as burn's `LinearConfig` takes it: only burn's
    /// default, `Row` (`[d_input, d_output]`), which `init` requires.
    #[config(default = "LinearLayout::Row")]
    pub layout: LinearLayout,
}

/// `y = x W + b` with per-example gradients in the DP engine's fast path.
///
/// The parameters have burn's `Linear` layout (`weight: [d_input, d_output]`),
/// so records load into either.
#[derive(Module, Debug)]
pub struct DpLinear {
    /// `[d_input, d_output]`.
    pub weight: Param<Tensor<2>>,
    /// `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl DpLinearConfig {
    /// Creates the layer on `device`.
    ///
    /// # Panics
    ///
    /// For `LinearLayout::Col`: the DP twin stores burn's `Row` layout,
    /// and a `Col` record would not load into it.
    pub fn init(&self, device: &Device) -> DpLinear {
        assert!(
            matches!(self.layout, LinearLayout::Row),
            "DpLinearConfig: DpLinear stores its weight in burn's Row layout ([d_input, d_output]); use LinearLayout::Row"
        );
        let (fan_in, fan_out) = (Some(self.d_input), Some(self.d_output));
        DpLinear {
            weight: self.initializer.init_with(
                [self.d_input, self.d_output],
                fan_in,
                fan_out,
                device,
            ),
            bias: self.bias.then(|| {
                self.initializer
                    .init_with([self.d_output], fan_in, fan_out, device)
            }),
        }
    }
}

impl DpLinear {
    /// Applies the layer to `[..., d_input]`.
    ///
    /// # Panics
    ///
    /// When the last dimension is not `d_input` (as burn's `Linear`).
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.forward_shared(input, Shared::default()).0
    }

    /// [`forward`](Self::forward), and while recording the record's probe
    /// `[B, positions, d_out]`; `shared` says which of the record's tensors
    /// other records hold too.
    pub(crate) fn forward_shared<const D: usize>(
        &self,
        input: Tensor<D>,
        shared: Shared,
    ) -> (Tensor<D>, Option<Tensor<3>>) {
        if !tape::is_recording() {
            let out = linear(
                input,
                self.weight.val(),
                self.bias.as_ref().map(|b| b.val()),
            );
            return (out, None);
        }
        let dims = input.dims();
        let [d_in, d_out] = self.weight.val().dims();
        assert_eq!(
            dims[D - 1],
            d_in,
            "DpLinear: input has {} features, expected {d_in}",
            dims[D - 1]
        );
        let batch = dims[0];
        let positions: usize = dims[1..D - 1].iter().product();
        let weight = self.weight.val().inner();
        let bias = self.bias.as_ref().map(|b| b.val().inner());
        let out = linear(input.clone(), weight, bias);
        let probe = tape::probe([batch, positions, d_out], &out.device());
        let mut out_dims = dims;
        out_dims[D - 1] = d_out;
        tape::push(Record::Dense {
            weight: self.weight.id,
            bias: self.bias.as_ref().map(|b| b.id),
            input: input.inner().reshape([batch, positions, d_in]),
            probe: probe.clone(),
            transposed: false,
            shared,
        });
        let out = (out.reshape([batch, positions, d_out]) + probe.clone()).reshape(out_dims);
        (out, Some(probe))
    }
}
