//! The guarantee covers the whole pipeline (issue 10): adaptive clipping's
//! count, one owner of the clip norm, checkpoints, model validation,
//! non-finite examples, δ and the sampler the report names.

mod common;

use burn::module::{Module, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::optim::{AdamConfig, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::{DatasetFingerprint, DpSgdConfig, GradientEngine, PoissonSampler, PrivacyEngine};
use dpsgd_core::accountant::lower_bound::epsilon_lower_bound;
use dpsgd_core::accountant::rdp::{default_orders, epsilon_from_rdp, rdp_curve};
use dpsgd_core::{
    ClippedGradients, Clipping, DpOptimizer, DpSettings, Error, GradientMethod, NoiseSource,
    trainable_params,
};
use std::collections::HashMap;

type Batch = (Tensor<2>, Tensor<1, Int>);

fn ce(m: &DpLinear, b: &Batch) -> Tensor<1> {
    cross_entropy_per_example(m.forward(b.0.clone()), b.1.clone())
}

fn rows(x: &[[f32; 4]], device: &Device) -> Batch {
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let y: Vec<i64> = (0..x.len()).map(|i| (i % 2) as i64).collect();
    (
        Tensor::from_data(TensorData::new(flat, [x.len(), 4]), device),
        Tensor::from_data(TensorData::new(y, [x.len()]), device),
    )
}

fn adaptive(count_noise_std: f64) -> Clipping {
    Clipping::Adaptive {
        max_grad_norm: 1.0,
        target_quantile: 0.5,
        learning_rate: 1.0,
        count_noise_std,
    }
}

fn settings(sigma: f64, clipping: Clipping, q: f64, n: usize) -> DpSettings {
    DpSettings {
        noise_multiplier: sigma,
        clipping,
        sample_rate: q,
        dataset_size: n,
        accountant: Default::default(),
        budget: None,
    }
}

/// The count adaptive clipping releases for a batch with these norms, read
/// back from the update of C (`C' = C·exp(−η(b̃ − γ))` with η = 1, C = 1):
/// `b̃·qN`, up to a public constant, with the noise of a fixed seed.
fn released_count(norms: &[f32], sigma_b: f64) -> f64 {
    let device = devices()[0].1.clone();
    let model: DpLinear = DpLinearConfig::new(2, 1).init(&device);
    let s = settings(1.0, adaptive(sigma_b), 0.1, 100);
    let expected = s.expected_batch_size();
    let mut dp =
        DpOptimizer::with_noise(SgdConfig::new().init(), s, NoiseSource::seeded(3)).unwrap();
    let clipped = ClippedGradients::new(
        HashMap::new(),
        norms.to_vec(),
        GradientMethod::EmptyBatch,
        adaptive(sigma_b),
    )
    .unwrap();
    dp.privatize(&model, clipped).unwrap();
    let fraction = 0.5 - dp.clipping().sensitivity().ln();
    fraction * expected
}

#[test]
fn should_release_the_adaptive_count_with_the_sensitivity_it_is_accounted_at() {
    let sigma_b = 0.55;
    let base = [0.5f32, 2.0, 0.5, 3.0];
    let with = |extra: f32| {
        let mut v = base.to_vec();
        v.push(extra);
        released_count(&v, sigma_b)
    };
    let d = released_count(&base, sigma_b);
    // Add one unclipped or one clipped example: the released count moves by
    // at most its sensitivity (same noise: same seed).
    let sensitivity = (with(0.1) - d).abs().max((with(9.0) - d).abs());
    assert!(
        (sensitivity - DpSettings::COUNT_SENSITIVITY).abs() < 1e-4,
        "measured sensitivity {sensitivity}"
    );

    // The pair (gradient sum, count) by Mironov's RDP composition, each a
    // Gaussian mechanism with its own multiplier: σ_Δ for the sum, σ_b/Δ
    // for the count. At q = 1 composition is exact and must equal what the
    // accountant records (σ per step).
    let (sigma, steps) = (1.0, 10u64);
    let s = settings(sigma, adaptive(sigma_b), 1.0, 100);
    let grad_multiplier = s.gradient_noise_multiplier();
    let count_multiplier = sigma_b / sensitivity;
    let orders = default_orders();
    let composed: Vec<f64> = rdp_curve(1.0, grad_multiplier, steps, &orders)
        .unwrap()
        .iter()
        .zip(rdp_curve(1.0, count_multiplier, steps, &orders).unwrap())
        .map(|(a, b)| a + b)
        .collect();
    let truth = epsilon_from_rdp(&orders, &composed, 1e-5).unwrap().0;
    let device = devices()[0].1.clone();
    let model: DpLinear = DpLinearConfig::new(2, 1).init(&device);
    let mut dp =
        DpOptimizer::with_noise(SgdConfig::new().init(), s, NoiseSource::seeded(1)).unwrap();
    for _ in 0..steps {
        let clipped = ClippedGradients::empty(dp.clipping().clone());
        dp.privatize(&model, clipped).unwrap();
    }
    let reported = dp.epsilon(1e-5).unwrap();
    assert!(
        (reported - truth).abs() <= 1e-9 * truth,
        "reported ε = {reported}, composition of the two mechanisms = {truth}"
    );

    // ... and at q = 1 no accountant may report less than the exact ε of
    // that Gaussian (μ = √T/σ_joint): the sum test of the lower bound is
    // Neyman–Pearson there.
    let exact = epsilon_lower_bound(1.0, sigma, steps, 1e-5).unwrap();
    assert!(
        exact > 0.0 && reported >= exact,
        "reported ε = {reported} < exact Gaussian ε = {exact}"
    );

    // Subsampled (both from the same Poisson batch): whitened, the pair is
    // one Gaussian mechanism with multiplier (σ_Δ⁻² + (σ_b/Δ)⁻²)^(−1/2), Δ the
    // sensitivity measured above. At the edge validation allows (σ = 1,
    // σ_b = 0.55, q = 0.089, 110 steps) the uncentred count was reported as
    // 7.35 for a true ε ≈ 28.5. The reference is computed here, independently
    // of the accountant's series: the RDP of that mechanism by quadrature of
    // its defining integral, converted by the same published formula.
    let (q, steps) = (0.089, 110u64);
    let joint = (grad_multiplier.powi(-2) + count_multiplier.powi(-2)).powf(-0.5);
    let reference = quadrature_epsilon(q, joint, steps, 1e-5);
    let s = settings(sigma, adaptive(sigma_b), q, 1000);
    let mut dp =
        DpOptimizer::with_noise(SgdConfig::new().init(), s, NoiseSource::seeded(1)).unwrap();
    for _ in 0..steps {
        let clipped = ClippedGradients::empty(dp.clipping().clone());
        dp.privatize(&model, clipped).unwrap();
    }
    let reported = dp.epsilon(1e-5).unwrap();
    // Quadrature and series agree to ~1e-10; 1e-6 leaves room for rounding.
    assert!(
        (reported - reference).abs() <= 1e-6 * reference,
        "reported ε = {reported}, quadrature of the pair's RDP = {reference}"
    );
    // Sound: not below a lower bound on the pair's true ε (a different
    // method: explicit tests on the T-step output distributions).
    let low = epsilon_lower_bound(q, joint, steps, 1e-5).unwrap();
    assert!(
        low > 0.0 && reported >= low,
        "reported ε = {reported} < lower bound {low}"
    );
    // The check has power: the uncentred count (sensitivity 1, not ½) is a
    // different mechanism, whose ε the engine's value is far below.
    let uncentred = (grad_multiplier.powi(-2) + sigma_b.powi(-2)).powf(-0.5);
    let wrong = quadrature_epsilon(q, uncentred, steps, 1e-5);
    assert!(
        wrong > 1.5 * reported,
        "uncentred {wrong} vs reported {reported}"
    );
}

/// ε at δ of `steps` steps of the Poisson-subsampled Gaussian (rate q,
/// multiplier s) on the default orders, computed without the accountant:
/// `A_α = E_{u~N(0,1)}[(1 − q + q·exp((2su − 1)/(2s²)))^α]` (Mironov, Talwar,
/// Zhang 2019, §3.3, the definition the accountant's series expands) by the
/// trapezoidal rule in log space on u ∈ [−40, α/s + 40] (the integrand peaks
/// near α/s), `RDP(α) = T·ln A_α/(α − 1)`, then Balle et al. (2020)'s
/// `ε = min_α RDP(α) + ln(1 − 1/α) − (ln δ + ln α)/(α − 1)`.
fn quadrature_epsilon(q: f64, s: f64, steps: u64, delta: f64) -> f64 {
    let log_mix = |x: f64| {
        if x > 0.0 {
            x + (q + (1.0 - q) * (-x).exp()).ln()
        } else {
            (q * x.exp_m1()).ln_1p()
        }
    };
    let h = 0.005;
    default_orders()
        .into_iter()
        .filter(|&a| a > 1.01)
        .map(|a| {
            let n = ((a / s + 80.0) / h).ceil() as usize;
            let f: Vec<f64> = (0..=n)
                .map(|i| {
                    let u = -40.0 + h * i as f64;
                    a * log_mix((2.0 * s * u - 1.0) / (2.0 * s * s)) - 0.5 * u * u
                })
                .collect();
            let top = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = f.iter().map(|v| (v - top).exp()).sum::<f64>()
                - 0.5 * ((f[0] - top).exp() + (f[n] - top).exp());
            let log_a = top + (sum * h).ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
            let rdp = steps as f64 * log_a / (a - 1.0);
            rdp + (-1.0 / a).ln_1p() - (delta.ln() + a.ln()) / (a - 1.0)
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn should_refuse_gradients_clipped_under_another_norm() {
    let device = devices()[0].1.clone();
    let model: DpLinear = DpLinearConfig::new(4, 2).init(&device);
    let batch = rows(&[[1.0, 2.0, 3.0, 4.0], [0.5, 0.1, 0.0, 1.0]], &device);
    let mut dp = DpOptimizer::with_noise(
        SgdConfig::new().init(),
        settings(1.0, Clipping::flat(0.5).unwrap(), 0.1, 100),
        NoiseSource::seeded(2),
    )
    .unwrap();
    // An engine built separately with another C: the sum's sensitivity is 1,
    // the noise would be calibrated to 0.5.
    let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
    let clipped = engine.clipped_gradients(&model, &batch, ce).unwrap();
    assert_eq!(clipped.clipping(), &Clipping::flat(1.0).unwrap());
    match dp.step(0.1, model, clipped) {
        Err(r) => assert!(
            matches!(r.error, Error::ClippingMismatch { .. }),
            "{}",
            r.error
        ),
        Ok(_) => panic!("a sum clipped at C = 1 was noised for C = 0.5"),
    }
    assert_eq!(dp.steps(), 0, "nothing recorded");

    // Adaptive clipping moves C after each step: a stale engine is refused.
    let model: DpLinear = DpLinearConfig::new(4, 2).init(&device);
    let mut dp = DpOptimizer::with_noise(
        SgdConfig::new().init(),
        settings(1.0, adaptive(2.0), 0.1, 100),
        NoiseSource::seeded(2),
    )
    .unwrap();
    let mut engine = GradientEngine::new(dp.clipping().clone());
    let first = engine.clipped_gradients(&model, &batch, ce).unwrap();
    let model = dp.step(0.1, model, first).unwrap();
    let stale = engine.clipped_gradients(&model, &batch, ce).unwrap();
    let model = match dp.step(0.1, model, stale) {
        Err(r) => r.model,
        Ok(_) => panic!("stale C accepted"),
    };
    engine.set_clipping(dp.clipping().clone());
    let fresh = engine.clipped_gradients(&model, &batch, ce).unwrap();
    assert!(dp.step(0.1, model, fresh).is_ok());

    // Chunks of one logical batch must share the policy.
    let mut a = ClippedGradients::empty(Clipping::flat(1.0).unwrap());
    assert!(
        a.accumulate(ClippedGradients::empty(Clipping::flat(2.0).unwrap()))
            .is_err()
    );
}

#[test]
fn should_validate_clipping_on_every_path() {
    let sampler = PoissonSampler::new(1000, 50).unwrap();
    let init = |c: DpSgdConfig| c.init(AdamConfig::new().init(), sampler);
    for cfg in [
        DpSgdConfig::new(-1.0),
        DpSgdConfig::new(f64::NAN),
        DpSgdConfig::new(1.0).with_clipping(Clipping::Automatic {
            max_grad_norm: 1.0,
            stability: -0.01,
        }),
    ] {
        assert!(
            matches!(
                init(cfg.clone().with_noise_multiplier(1.0)),
                Err(Error::InvalidParameter { .. })
            ),
            "{cfg:?}"
        );
    }
    // The engine refuses it too, before any example is scaled by
    // C/(‖g‖ + γ) > C/‖g‖·11.
    let device = devices()[0].1.clone();
    let model: DpLinear = DpLinearConfig::new(4, 2).init(&device);
    let mut engine = GradientEngine::new(Clipping::Automatic {
        max_grad_norm: 1.0,
        stability: -0.01,
    });
    let batch = rows(&[[1.0, 2.0, 3.0, 4.0]], &device);
    assert!(engine.clipped_gradients(&model, &batch, ce).is_err());
}

#[test]
fn should_drop_examples_with_non_finite_gradients_instead_of_failing() {
    for (backend, device) in devices() {
        let mut model: DpLinear = DpLinearConfig::new(4, 2).init(&device);
        // Weights that put the crafted example (label 1) firmly in class 0:
        // its loss is finite, its output gradient (1, −1) is not zero.
        model.weight = model.weight.map(|w| {
            let v: Vec<f32> = (0..8)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            Tensor::from_data(TensorData::new(v, [4, 2]), &w.device()).require_grad()
        });
        // Logits of 4·f32::MAX overflow: the middle example's loss and
        // gradient are not finite. (Large but finite activations are
        // clipped exactly, see `huge_values`.)
        let crafted = [f32::MAX; 4];
        let good = [[1.0, -2.0, 0.5, 3.0], [0.2, 0.1, -1.0, 2.0]];
        let batch = rows(&[good[0], crafted, good[1]], &device);
        let mut engine = GradientEngine::new(Clipping::flat(0.5).unwrap());
        let got = engine.clipped_gradients(&model, &batch, ce).unwrap();
        assert_eq!(got.dropped(), 1, "{backend}");
        assert_eq!(got.batch_size(), 3);
        assert_eq!(got.per_example_norms().len(), 2);
        // The rest is exactly the clipped sum without the crafted example
        // (labels follow the position, so rebuild them as they were).
        let without = (
            Tensor::cat(
                vec![
                    batch.0.clone().narrow(0, 0, 1),
                    batch.0.clone().narrow(0, 2, 1),
                ],
                0,
            ),
            Tensor::cat(
                vec![
                    batch.1.clone().narrow(0, 0, 1),
                    batch.1.clone().narrow(0, 2, 1),
                ],
                0,
            ),
        );
        let reference = engine.clipped_gradients(&model, &without, ce).unwrap();
        for p in trainable_params(&model) {
            let (a, b) = (
                to_vec(got.sum(&p.id).unwrap()),
                to_vec(reference.sum(&p.id).unwrap()),
            );
            assert!(rel_err(&a, &b) < 1e-6, "{backend}: {}", p.name());
            assert!(a.iter().all(|x| x.is_finite()));
        }
        // The same in passes of two examples (the crafted one in the first).
        let mut split = GradientEngine::new(Clipping::flat(0.5).unwrap())
            .with_pass_size(dpsgd_burn::PassSize::Examples(2.try_into().unwrap()));
        let got = split.clipped_gradients(&model, &batch, ce).unwrap();
        assert_eq!(got.dropped(), 1, "{backend}: passes");
        assert_eq!(got.per_example_norms().len(), 2, "{backend}: passes");
        for p in trainable_params(&model) {
            let (a, b) = (
                to_vec(got.sum(&p.id).unwrap()),
                to_vec(reference.sum(&p.id).unwrap()),
            );
            assert!(rel_err(&a, &b) < 1e-6, "{backend}: passes {}", p.name());
        }
        // The same on the per-example fallback.
        let mut slow = GradientEngine::new(Clipping::flat(0.5).unwrap())
            .with_mode(dpsgd_burn::EngineMode::FallbackOnly);
        let got = slow.clipped_gradients(&model, &batch, ce).unwrap();
        assert_eq!(got.dropped(), 1, "{backend}: fallback");
        for p in trainable_params(&model) {
            let (a, b) = (
                to_vec(got.sum(&p.id).unwrap()),
                to_vec(reference.sum(&p.id).unwrap()),
            );
            assert!(rel_err(&a, &b) < 1e-5, "{backend}: fallback {}", p.name());
        }
        // Through the engine: the step goes on and the drop is counted.
        let mut pe = DpSgdConfig::new(0.5)
            .with_noise_multiplier(1.0)
            .with_seed(5)
            .init(
                SgdConfig::new().init(),
                PoissonSampler::new(100, 10).unwrap(),
            )
            .unwrap();
        let model = pe.step(0.1, model, &batch, ce).unwrap();
        assert_eq!(pe.last_step().unwrap().dropped, 1);
        assert_eq!(pe.dropped_examples(), 1);
        assert!(
            model
                .weight
                .val()
                .into_data()
                .iter::<f32>()
                .all(f32::is_finite)
        );
    }
}

#[derive(Module, Debug)]
struct WithBatchNorm {
    fc: DpLinear,
    norm: BatchNorm,
}

/// A custom layer with a running statistic of its inputs.
#[derive(Module, Debug)]
struct Tracker {
    fc: DpLinear,
    seen: RunningState<Tensor<1>>,
}

#[test]
fn should_refuse_layers_with_forward_state_without_being_asked() {
    let device = devices()[0].1.clone();
    let batch = rows(&[[1.0, 2.0, 3.0, 4.0], [0.5, 0.1, 0.0, 1.0]], &device);
    let bn = WithBatchNorm {
        fc: DpLinearConfig::new(4, 4).init(&device),
        norm: BatchNormConfig::new(4).init(&device),
    };
    let loss = |m: &WithBatchNorm, b: &Batch| {
        cross_entropy_per_example(m.norm.forward(m.fc.forward(b.0.clone())), b.1.clone())
    };
    // No validate_model call: the engine checks by itself.
    let mut engine = GradientEngine::new(Clipping::flat(1.0).unwrap());
    match engine.clipped_gradients(&bn, &batch, loss) {
        Err(Error::UnsupportedLayer { layer, .. }) => assert_eq!(layer, "BatchNorm"),
        other => panic!("expected UnsupportedLayer, got {other:?}"),
    }
    let tracker = Tracker {
        fc: DpLinearConfig::new(4, 2).init(&device),
        seen: RunningState::new(Tensor::zeros([4], &device)),
    };
    let loss = |m: &Tracker, b: &Batch| {
        m.seen.update(b.0.clone().mean_dim(0).reshape([4]).inner());
        ce(&m.fc, b)
    };
    match engine.clipped_gradients(&tracker, &batch, loss) {
        Err(Error::UnsupportedLayer { path, .. }) => assert_eq!(path, "seen"),
        other => panic!("expected UnsupportedLayer, got {other:?}"),
    }
    // Frozen parameters are not state.
    let mut frozen: DpLinear = DpLinearConfig::new(4, 2).init(&device);
    frozen.bias = frozen.bias.map(|b| b.map(|t| t.set_require_grad(false)));
    assert!(engine.clipped_gradients(&frozen, &batch, ce).is_ok());
}

fn fingerprint(n: usize) -> DatasetFingerprint {
    DatasetFingerprint { size: n, hash: 42 }
}

fn params(m: &DpLinear) -> Vec<f32> {
    m.weight.val().into_data().iter::<f32>().collect()
}

#[test]
fn should_keep_checkpoints_secret_and_rekey_unseeded_resumes() {
    let device = devices()[0].1.clone();
    let dir = std::env::temp_dir().join(format!("dpsgd-guarantee-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let cfg = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_dataset(fingerprint(100));
    let pe = cfg
        .init(
            SgdConfig::new().init(),
            PoissonSampler::new(100, 10).unwrap(),
        )
        .unwrap();
    let model: DpLinear = DpLinearConfig::new(4, 2).init(&device);
    pe.save_checkpoint(&path, &model).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "checkpoint mode {mode:o}");
    }
    // Two runs resumed from one unseeded checkpoint must not share noise:
    // otherwise the difference of their models is noise-free.
    let resume_and_step = || {
        let fresh: DpLinear = DpLinearConfig::new(4, 2).init(&device);
        let (mut pe, model) =
            PrivacyEngine::resume(&path, SgdConfig::new().init(), fresh, fingerprint(100)).unwrap();
        let empty = rows(&[], &device);
        params(&pe.step(1.0, model, &empty, ce).unwrap())
    };
    assert_ne!(resume_and_step(), resume_and_step());

    // The data must be the run's.
    let fresh: DpLinear = DpLinearConfig::new(4, 2).init(&device);
    let other = DatasetFingerprint {
        size: 100,
        hash: 43,
    };
    match PrivacyEngine::resume(&path, SgdConfig::new().init(), fresh, other) {
        Err(Error::Checkpoint { reason, .. }) => assert!(reason.contains("data set"), "{reason}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("resumed on other data"),
    }
}

#[test]
fn should_refuse_large_delta_unless_allowed_and_report_the_sampler_used() {
    let sampler = PoissonSampler::new(1000, 50).unwrap();
    let cfg = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .with_delta(1e-3);
    match cfg.init(AdamConfig::new().init(), sampler) {
        Err(Error::InvalidParameter { name, reason, .. }) => {
            assert_eq!(name, "delta");
            assert!(reason.contains("1/N"), "{reason}");
        }
        other => panic!("δ = 1/N accepted: {:?}", other.map(|_| ())),
    }
    let pe = cfg
        .with_allow_large_delta(true)
        .init(AdamConfig::new().init(), sampler)
        .unwrap();
    assert!(pe.warnings()[0].contains("1/N"));

    let device = devices()[0].1.clone();
    let mut pe = DpSgdConfig::new(1.0)
        .with_noise_multiplier(1.0)
        .init(
            SgdConfig::new().init(),
            PoissonSampler::new(100, 10).unwrap(),
        )
        .unwrap();
    let mut model: DpLinear = DpLinearConfig::new(4, 2).init(&device);
    let idx = pe.sample_batch();
    let batch = rows(&vec![[0.5, 0.5, 0.5, 0.5]; idx.len()], &device);
    model = pe.step(0.1, model, &batch, ce).unwrap();
    assert_eq!(pe.report().unwrap().sampler, "poisson");
    // A batch the engine did not sample: ε's assumption does not hold.
    let batch = rows(&[[0.5, 0.5, 0.5, 0.5]; 10], &device);
    pe.step(0.1, model, &batch, ce).unwrap();
    let sampler = pe.report().unwrap().sampler;
    assert!(sampler.contains("1 of 2"), "{sampler}");
}

#[test]
fn should_check_the_budget_by_the_configured_accountant_in_constant_time() {
    use dpsgd_core::accountant::{AccountantKind, max_steps};
    let device = devices()[0].1.clone();
    let model: DpLinear = DpLinearConfig::new(2, 1).init(&device);
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        // σ = 2, q = 0.1: the budget ε = 1.5 runs out after a few dozen steps.
        let mut s = settings(2.0, Clipping::flat(1.0).unwrap(), 0.1, 100);
        s.accountant = kind;
        s.budget = Some((1.5, 1e-5));
        let allowed = max_steps(kind, 0.1, 2.0, 1e-5, 1.5).unwrap();
        for plan in [None, Some(allowed / 2), Some(allowed + 5)] {
            let mut dp =
                DpOptimizer::with_noise(SgdConfig::new().init(), s.clone(), NoiseSource::seeded(1))
                    .unwrap();
            if let Some(p) = plan {
                assert_eq!(dp.plan(p).unwrap(), p <= allowed, "{kind} plan {p}");
            }
            let mut taken = 0;
            while dp
                .privatize(&model, ClippedGradients::empty(dp.clipping().clone()))
                .is_ok()
            {
                taken += 1;
                assert!(taken <= allowed, "{kind}: past the budget");
            }
            assert_eq!(
                taken, allowed,
                "{kind}, plan {plan:?}: every step that fits"
            );
            assert!(dp.epsilon(1e-5).unwrap() <= 1.5);
            assert_eq!(dp.steps_left(), Some(0));
        }
    }
}
