//! Lossless conversions from burn's own layer configurations to their DP
//! twins: a model built from `burn::nn` configs goes private by converting
//! each config (`DpLinearConfig::try_from(&linear_config)?`), and every
//! setting either carries over exactly or the conversion is refused,
//! naming it — never silently approximated.

use super::{DpConv1dConfig, DpConv2dConfig, DpLinearConfig};
use burn::nn::conv::{Conv1dConfig, Conv2dConfig};
use burn::nn::{LinearConfig, LinearLayout, PaddingConfig1d, PaddingConfig2d};
use dpsgd_core::Error;

/// Zero padding on each side of one dimension for burn's `Same` padding,
/// as burn 0.22 computes it: at stride 1 a total of `k − 1` (from the
/// kernel alone: burn ignores the dilation there), split evenly when it is
/// even. At a stride above 1 burn's sizes depend on the input's length,
/// which a config cannot hold.
fn same_padding(kernel: usize, stride: usize) -> Result<usize, Error> {
    let total = kernel.saturating_sub(1);
    if stride != 1 {
        return Err(Error::invalid(
            "padding",
            "Same",
            format!(
                "Same padding at stride {stride} depends on the input's size: give Explicit sizes"
            ),
        ));
    }
    if !total.is_multiple_of(2) {
        return Err(Error::invalid(
            "padding",
            "Same",
            format!(
                "Same padding of a kernel of {kernel} is asymmetric ({total} in all); the DP convolutions pad symmetrically: use an odd kernel or Explicit sizes"
            ),
        ));
    }
    Ok(total / 2)
}

/// A symmetric pair, or a refusal naming the asymmetry.
fn symmetric(before: usize, after: usize, what: &str) -> Result<usize, Error> {
    if before == after {
        Ok(before)
    } else {
        Err(Error::invalid(
            "padding",
            format!("Explicit({before}, {after}) {what}"),
            "the DP convolutions pad symmetrically: give the same size on both sides",
        ))
    }
}

/// The symmetric sizes of burn's 2-D padding for a kernel and stride.
pub(crate) fn padding_2d(
    padding: &PaddingConfig2d,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Result<[usize; 2], Error> {
    Ok(match padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Same => [
            same_padding(kernel[0], stride[0])?,
            same_padding(kernel[1], stride[1])?,
        ],
        &PaddingConfig2d::Explicit(top, left, bottom, right) => [
            symmetric(top, bottom, "(top, bottom)")?,
            symmetric(left, right, "(left, right)")?,
        ],
    })
}

/// The symmetric size of burn's 1-D padding for a kernel and stride.
pub(crate) fn padding_1d(
    padding: &PaddingConfig1d,
    kernel: usize,
    stride: usize,
) -> Result<usize, Error> {
    match padding {
        PaddingConfig1d::Valid => Ok(0),
        PaddingConfig1d::Same => same_padding(kernel, stride),
        &PaddingConfig1d::Explicit(left, right) => symmetric(left, right, "(left, right)"),
    }
}

impl TryFrom<&LinearConfig> for DpLinearConfig {
    type Error = Error;

    /// Every setting of burn's `LinearConfig`, exactly.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for `LinearLayout::Col`, whose weight
    /// is stored transposed (`[d_output, d_input]`): records would not
    /// load into the DP twin's `[d_input, d_output]` weight.
    fn try_from(c: &LinearConfig) -> Result<Self, Error> {
        if matches!(c.layout, LinearLayout::Col) {
            return Err(Error::invalid(
                "layout",
                "Col",
                "DpLinear stores its weight as burn's Row layout ([d_input, d_output]); use LinearLayout::Row",
            ));
        }
        Ok(DpLinearConfig::new(c.d_input, c.d_output)
            .with_layout(c.layout)
            .with_bias(c.bias)
            .with_initializer(c.initializer.clone()))
    }
}

impl TryFrom<&Conv2dConfig> for DpConv2dConfig {
    type Error = Error;

    /// Every setting of burn's `Conv2dConfig`, exactly; `Same` padding
    /// becomes the symmetric sizes burn itself pads with.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for padding the DP convolution cannot
    /// express: asymmetric `Explicit` sizes, or `Same` with an even kernel
    /// or a stride above 1.
    fn try_from(c: &Conv2dConfig) -> Result<Self, Error> {
        // Checked now, so that init cannot panic on a converted config.
        padding_2d(&c.padding, c.kernel_size, c.stride)?;
        Ok(DpConv2dConfig::new(c.channels, c.kernel_size)
            .with_stride(c.stride)
            .with_dilation(c.dilation)
            .with_padding(c.padding.clone())
            .with_groups(c.groups)
            .with_bias(c.bias)
            .with_initializer(c.initializer.clone()))
    }
}

impl TryFrom<&Conv1dConfig> for DpConv1dConfig {
    type Error = Error;

    /// Every setting of burn's `Conv1dConfig`, exactly; `Same` padding
    /// becomes the symmetric size burn itself pads with.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for channel groups above 1 (not in the
    /// DP 1-D convolution) and padding it cannot express (asymmetric
    /// `Explicit`, `Same` with an even kernel or a stride above 1).
    fn try_from(c: &Conv1dConfig) -> Result<Self, Error> {
        if c.groups != 1 {
            return Err(Error::invalid(
                "groups",
                c.groups,
                "DpConv1d has no channel groups: use DpConv2d with a height of 1",
            ));
        }
        padding_1d(&c.padding, c.kernel_size, c.stride)?;
        Ok(
            DpConv1dConfig::new(c.channels_in, c.channels_out, c.kernel_size)
                .with_stride(c.stride)
                .with_dilation(c.dilation)
                .with_padding(c.padding.clone())
                .with_bias(c.bias)
                .with_initializer(c.initializer.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::Initializer;

    #[test]
    fn should_convert_linear_exactly_or_refuse_the_column_layout() {
        let burn = LinearConfig::new(5, 3)
            .with_bias(false)
            .with_initializer(Initializer::Constant { value: 0.5 });
        let dp = DpLinearConfig::try_from(&burn).unwrap();
        assert_eq!((dp.d_input, dp.d_output, dp.bias), (5, 3, false));
        assert!(matches!(dp.initializer, Initializer::Constant { value } if value == 0.5));
        let col = LinearConfig::new(5, 3).with_layout(LinearLayout::Col);
        let e = DpLinearConfig::try_from(&col).unwrap_err();
        assert!(e.to_string().contains("Row"), "{e}");
        // burn's own option on the twin's config: Row is burn's default.
        let row = DpLinearConfig::new(5, 3).with_layout(LinearLayout::Row);
        assert_eq!(row.init(&Default::default()).weight.dims(), [5, 3]);
        let col = DpLinearConfig::new(5, 3).with_layout(LinearLayout::Col);
        assert!(std::panic::catch_unwind(|| col.init(&Default::default())).is_err());
    }

    #[test]
    fn should_turn_same_padding_into_symmetric_sizes() {
        let burn = Conv2dConfig::new([2, 4], [3, 5])
            .with_padding(PaddingConfig2d::Same)
            .with_dilation([2, 1])
            .with_groups(2)
            .with_bias(false);
        let dp = DpConv2dConfig::try_from(&burn).unwrap();
        // Burn's own setting, kept; it pads (k − 1)/2 as burn does,
        // whatever the dilation: 1 and 2.
        assert_eq!(dp.padding, PaddingConfig2d::Same);
        assert_eq!(
            padding_2d(&dp.padding, dp.kernel_size, dp.stride).unwrap(),
            [1, 2]
        );
        assert_eq!(
            (dp.channels, dp.kernel_size, dp.dilation),
            ([2, 4], [3, 5], [2, 1])
        );
        assert_eq!((dp.groups, dp.bias, dp.stride), (2, false, [1, 1]));
        let explicit =
            Conv2dConfig::new([1, 1], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 2, 1, 2));
        let dp = DpConv2dConfig::try_from(&explicit).unwrap();
        assert_eq!(
            padding_2d(&dp.padding, dp.kernel_size, dp.stride).unwrap(),
            [1, 2]
        );
        for bad in [
            Conv2dConfig::new([1, 1], [2, 2]).with_padding(PaddingConfig2d::Same),
            Conv2dConfig::new([1, 1], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_stride([2, 2]),
            Conv2dConfig::new([1, 1], [3, 3]).with_padding(PaddingConfig2d::Explicit(0, 1, 1, 1)),
        ] {
            let e = DpConv2dConfig::try_from(&bad).unwrap_err();
            assert!(e.to_string().contains("padding"), "{e}");
            // Given directly, the same padding is refused by init, naming it.
            let direct = DpConv2dConfig::new(bad.channels, bad.kernel_size)
                .with_stride(bad.stride)
                .with_padding(bad.padding.clone());
            let panic = std::panic::catch_unwind(|| direct.init(&Default::default()))
                .expect_err("init refuses it");
            let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(text.contains("padding"), "{text}");
        }
        let c1 = Conv1dConfig::new(2, 3, 5).with_padding(PaddingConfig1d::Same);
        let dp = DpConv1dConfig::try_from(&c1).unwrap();
        assert_eq!(
            padding_1d(&dp.padding, dp.kernel_size, dp.stride).unwrap(),
            2
        );
        assert!(DpConv1dConfig::try_from(&Conv1dConfig::new(2, 4, 3).with_groups(2)).is_err());
    }
}
