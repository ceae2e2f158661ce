//! The DP-aware layers keep burn's parameter layout: a record taken from
//! burn's layer loads into its DP-aware twin (and back) unchanged, and both
//! compute the same outputs, on every enabled backend.

mod common;

use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttentionConfig};
use burn::nn::{GruConfig, InstanceNormConfig, LstmConfig, RmsNormConfig, RnnConfig};
use burn::tensor::{Device, Tensor, TensorData};
use common::devices;
use dpsgd_burn::layers::*;

fn input<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37 + 0.1).sin()).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

fn assert_same<const D: usize>(a: Tensor<D>, b: Tensor<D>, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    for (i, (x, y)) in values(a).into_iter().zip(values(b)).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Loads `from`'s record into `into`, refusing a partial or unused match.
fn load<A: Module, B: Module>(from: &A, into: B, what: &str) -> B {
    into.try_load_record(from.clone().into_record())
        .unwrap_or_else(|e| panic!("{what}: the record does not load: {e}"))
}

#[test]
fn multi_head_attention_records_load_both_ways() {
    for (backend, device) in devices() {
        let device = device.without_autodiff();
        let burn_layer = MultiHeadAttentionConfig::new(8, 2)
            .with_dropout(0.0)
            .init(&device);
        let dp = load(
            &burn_layer,
            DpMultiHeadAttentionConfig::new(8, 2)
                .with_dropout(0.0)
                .init(&device),
            "burn → dp attention",
        );
        let x = input([2, 5, 8], &device);
        let want = burn_layer.forward(MhaInput::self_attn(x.clone()));
        let got = dp.forward(DpMhaInput::self_attn(x));
        assert_same(want.context, got.context, &format!("{backend} attention"));
        assert_same(want.weights, got.weights, &format!("{backend} weights"));
        let back = load(
            &dp,
            MultiHeadAttentionConfig::new(8, 2).init(&device),
            "dp → burn attention",
        );
        assert_eq!(
            values(back.query.weight.val()),
            values(dp.query.weight.val())
        );
    }
}

#[test]
fn recurrent_records_load_and_compute_the_same_states() {
    for (backend, device) in devices() {
        let device = device.without_autodiff();
        let x = input([3, 6, 4], &device);
        for input_forget in [false, true] {
            let burn_lstm = LstmConfig::new(4, 5, true)
                .with_input_forget(input_forget)
                .init(&device);
            let dp = load(
                &burn_lstm,
                DpLstmConfig::new(4, 5, true)
                    .with_input_forget(input_forget)
                    .init(&device),
                "lstm",
            );
            let (want, state) = burn_lstm.forward(x.clone(), None);
            let (got, (cell, hidden)) = dp.forward(x.clone(), None);
            let what = format!("{backend} lstm (coupled {input_forget})");
            assert_same(want, got, &what);
            assert_same(state.cell, cell, &what);
            assert_same(state.hidden, hidden, &what);
        }
        for reset_after in [true, false] {
            let burn_gru = GruConfig::new(4, 5, true)
                .with_reset_after(reset_after)
                .init(&device);
            let dp = load(
                &burn_gru,
                DpGruConfig::new(4, 5, true)
                    .with_reset_after(reset_after)
                    .init(&device),
                "gru",
            );
            assert_same(
                burn_gru.forward(x.clone(), None),
                dp.forward(x.clone(), None),
                &format!("{backend} gru (reset after {reset_after})"),
            );
        }
        for reverse in [false, true] {
            let burn_rnn = RnnConfig::new(4, 5, true)
                .with_reverse(reverse)
                .init(&device);
            let dp = load(
                &burn_rnn,
                DpRnnConfig::new(4, 5, true)
                    .with_reverse(reverse)
                    .init(&device),
                "rnn",
            );
            let (want, state) = burn_rnn.forward(x.clone(), None);
            let (got, hidden) = dp.forward(x.clone(), None);
            let what = format!("{backend} rnn (reverse {reverse})");
            assert_same(want, got, &what);
            assert_same(state.hidden, hidden, &what);
        }
    }
}

#[test]
fn normalisation_records_load_and_normalise_the_same() {
    for (backend, device) in devices() {
        let device = device.without_autodiff();
        let burn_instance = InstanceNormConfig::new(3).init(&device);
        let dp = load(
            &burn_instance,
            DpInstanceNormConfig::new(3).init(&device),
            "instance norm",
        );
        let x = input([2, 3, 4, 5], &device) * 2.0 + 0.5;
        assert_same(
            burn_instance.forward(x.clone()),
            dp.forward(x.clone()),
            &format!("{backend} instance norm"),
        );
        let burn_rms = RmsNormConfig::new(5).init(&device);
        let dp = load(&burn_rms, DpRmsNormConfig::new(5).init(&device), "rms norm");
        assert_same(
            burn_rms.forward(x.clone()),
            dp.forward(x),
            &format!("{backend} rms norm"),
        );
    }
}

/// A padded step changes nothing: the final state of a sequence padded
/// after its length is the state of the unpadded sequence.
#[test]
fn padded_steps_carry_the_state() {
    for (backend, device) in devices() {
        let device = device.without_autodiff();
        let lstm = DpLstmConfig::new(4, 5, true).init(&device);
        let gru = DpGruConfig::new(4, 5, true).init(&device);
        let x = input([1, 6, 4], &device);
        let mask = Tensor::<2, burn::tensor::Bool>::from_data(
            TensorData::new(vec![false, false, false, true, true, true], [1, 6]),
            &device,
        );
        let short = x.clone().narrow(1, 0, 3);
        let (out, (_, h)) = lstm.forward_masked(x.clone(), None, Some(mask.clone()));
        let (_, (_, h_short)) = lstm.forward(short.clone(), None);
        assert_same(h, h_short, &format!("{backend} lstm"));
        assert!(values(out.narrow(1, 3, 3)).iter().all(|&v| v == 0.0));
        let (_, h) = gru.forward_masked(x, None, Some(mask));
        let (_, h_short) = gru.forward_masked(short, None, None);
        assert_same(h, h_short, &format!("{backend} gru"));
    }
}

#[test]
fn convolution_records_load_and_convolve_the_same() {
    use burn::nn::conv::{Conv2dConfig, Conv3dConfig, ConvTranspose2dConfig};
    use burn::nn::{PaddingConfig2d, PaddingConfig3d};
    for (backend, device) in devices() {
        let device = device.without_autodiff();
        let burn_grouped = Conv2dConfig::new([4, 6], [3, 3])
            .with_groups(2)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let dp = load(
            &burn_grouped,
            DpConv2dConfig::new([4, 6], [3, 3])
                .with_groups(2)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device),
            "grouped conv2d",
        );
        let x = input([2, 4, 5, 5], &device);
        assert_same(
            burn_grouped.forward(x.clone()),
            dp.forward(x.clone()),
            &format!("{backend} grouped conv2d"),
        );
        let burn_3d = Conv3dConfig::new([2, 4], [2, 3, 3])
            .with_padding(PaddingConfig3d::Explicit(0, 1, 1))
            .init(&device);
        let dp = load(
            &burn_3d,
            DpConv3dConfig::new([2, 4], [2, 3, 3])
                .with_padding([0, 1, 1])
                .init(&device),
            "conv3d",
        );
        let v = input([2, 2, 3, 4, 4], &device);
        assert_same(
            burn_3d.forward(v.clone()),
            dp.forward(v),
            &format!("{backend} conv3d"),
        );
        let burn_up = ConvTranspose2dConfig::new([4, 2], [3, 3])
            .with_stride([2, 2])
            .with_groups(2)
            .init(&device);
        let dp = load(
            &burn_up,
            DpConvTranspose2dConfig::new([4, 2], [3, 3])
                .with_stride([2, 2])
                .with_groups(2)
                .init(&device),
            "transposed conv2d",
        );
        assert_same(
            burn_up.forward(x.clone()),
            dp.forward(x),
            &format!("{backend} transposed conv2d"),
        );
    }
}

/// burn's own configs convert to the DP twins without loss: a layer built
/// from burn's config (Same and Explicit padding, dilation, groups, no
/// bias) and the twin built from the converted config, holding the same
/// record, compute the same outputs.
#[test]
fn burn_configs_convert_to_twins_that_compute_the_same() {
    use burn::nn::conv::{Conv1dConfig, Conv2dConfig};
    use burn::nn::{LinearConfig, PaddingConfig1d, PaddingConfig2d};
    for (backend, device) in devices() {
        let device = device.without_autodiff();
        for config in [
            Conv2dConfig::new([2, 4], [3, 5]).with_padding(PaddingConfig2d::Same),
            Conv2dConfig::new([2, 4], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_dilation([2, 1])
                .with_groups(2)
                .with_bias(false),
            Conv2dConfig::new([2, 3], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 2, 1, 2))
                .with_stride([2, 1]),
        ] {
            let burn_layer = config.init(&device);
            let twin = DpConv2dConfig::try_from(&config).unwrap().init(&device);
            let twin = load(&burn_layer, twin, "burn → dp conv2d");
            let x = input([2, 2, 7, 8], &device);
            assert_same(
                burn_layer.forward(x.clone()),
                twin.forward(x),
                &format!("{backend} conv2d {:?}", config.padding),
            );
        }
        let config = Conv1dConfig::new(2, 3, 5).with_padding(PaddingConfig1d::Same);
        let burn_layer = config.init(&device);
        let twin = load(
            &burn_layer,
            DpConv1dConfig::try_from(&config).unwrap().init(&device),
            "burn → dp conv1d",
        );
        let x = input([2, 2, 9], &device);
        assert_same(
            burn_layer.forward(x.clone()),
            twin.forward(x),
            &format!("{backend} conv1d"),
        );
        let config = LinearConfig::new(6, 3);
        let burn_layer = config.init(&device);
        let twin = load(
            &burn_layer,
            DpLinearConfig::try_from(&config).unwrap().init(&device),
            "burn → dp linear",
        );
        let x = input([4, 6], &device);
        assert_same(
            burn_layer.forward(x.clone()),
            twin.forward(x),
            &format!("{backend} linear"),
        );
    }
}
