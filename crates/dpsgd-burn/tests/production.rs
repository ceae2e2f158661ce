//! Production features: virtual batches, checkpoints, adaptive and automatic
//! clipping, model validation, configuration checks.

mod common;

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use burn::optim::AdamConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::{
    DatasetFingerprint, DpSgdConfig, GradientEngine, PoissonSampler, PrivacyEngine, validate_model,
};
use dpsgd_core::accountant::Accountant;
use dpsgd_core::{
    ClippedGradients, Clipping, DpOptimizer, DpSettings, Error, GradientMethod, NoiseSource,
    trainable_params,
};
use std::collections::HashMap;

type Batch = (Tensor<2>, Tensor<1, Int>);

#[derive(Module, Debug)]
struct Net {
    fc1: DpLinear,
    fc2: DpLinear,
}

impl Net {
    fn new(device: &Device) -> Self {
        let mut net = Self {
            fc1: DpLinearConfig::new(6, 8).init(device),
            fc2: DpLinearConfig::new(8, 3).init(device),
        };
        // Deterministic weights, independent of burn's global RNG.
        net.fc1.weight = net.fc1.weight.map(|w| {
            let v: Vec<f32> = (0..48).map(|i| ((i as f32) * 0.91).sin() * 0.4).collect();
            Tensor::from_data(TensorData::new(v, [6, 8]), &w.device()).require_grad()
        });
        net.fc2.weight = net.fc2.weight.map(|w| {
            let v: Vec<f32> = (0..24).map(|i| ((i as f32) * 1.7).cos() * 0.4).collect();
            Tensor::from_data(TensorData::new(v, [8, 3]), &w.device()).require_grad()
        });
        // ... and zero biases.
        net.fc1.bias = net
            .fc1
            .bias
            .map(|b| b.map(|t| t.zeros_like().require_grad()));
        net.fc2.bias = net
            .fc2
            .bias
            .map(|b| b.map(|t| t.zeros_like().require_grad()));
        net
    }

    fn loss(&self, b: &Batch) -> Tensor<1> {
        cross_entropy_per_example(
            self.fc2.forward(burn::tensor::activation::relu(
                self.fc1.forward(b.0.clone()),
            )),
            b.1.clone(),
        )
    }
}

fn data(indices: &[usize], device: &Device) -> Batch {
    let x: Vec<f32> = indices
        .iter()
        .flat_map(|&i| (0..6).map(move |j| ((i * 7 + j) as f32 * 0.37).sin() * 2.0))
        .collect();
    let y: Vec<i64> = indices.iter().map(|&i| (i % 3) as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [indices.len(), 6]), device),
        Tensor::from_data(TensorData::new(y, [indices.len()]), device),
    )
}

fn params(net: &Net) -> Vec<f32> {
    let mut v: Vec<f32> = net.fc1.weight.val().into_data().iter::<f32>().collect();
    v.extend(net.fc2.weight.val().into_data().iter::<f32>());
    v
}

fn config() -> DpSgdConfig {
    DpSgdConfig::new(0.5)
        .with_noise_multiplier(1.0)
        .with_seed(17)
        .with_delta(1e-5)
}

fn engine(cfg: &DpSgdConfig) -> PrivacyEngine {
    cfg.init(
        AdamConfig::new().init(),
        PoissonSampler::new(200, 20).unwrap(),
    )
    .unwrap()
}

fn train_steps(pe: &mut PrivacyEngine, mut net: Net, steps: usize, device: &Device) -> Net {
    for _ in 0..steps {
        let idx = pe.sample_batch();
        net = pe.step(0.05, net, &data(&idx, device), Net::loss).unwrap();
    }
    net
}

#[test]
fn should_give_the_same_step_in_chunks_as_unchunked() {
    for (backend, device) in devices() {
        let mut whole = engine(&config());
        let mut chunked = engine(&config().with_max_physical_batch_size(3));
        let a = train_steps(&mut whole, Net::new(&device), 4, &device);
        let b = train_steps(&mut chunked, Net::new(&device), 4, &device);
        let stats = chunked.last_step().unwrap();
        assert!(
            stats.chunks > 1,
            "{backend}: batch of {} in chunks of 3",
            stats.batch_size
        );
        // The same noise and the same clipped sums up to f32 summation order.
        let (pa, pb) = (params(&a), params(&b));
        let err = rel_err(
            &pa.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
            &pb.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
        );
        assert!(err < 1e-5, "{backend}: chunked differs by {err}");
        assert_eq!(whole.epsilon().unwrap(), chunked.epsilon().unwrap());
        assert_ne!(
            pa,
            params(&Net::new(&device)),
            "{backend}: the steps changed the model"
        );
        assert_eq!(whole.steps(), 4);
    }
}

#[test]
fn should_resume_exactly_where_the_run_stopped() {
    for (backend, device) in devices() {
        let dir = std::env::temp_dir().join(format!("dpsgd-ckpt-{}-{backend}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.ckpt");
        let cfg = config().with_clipping(Clipping::adaptive(0.5, 0.5, 2.0).unwrap());

        let mut straight = engine(&cfg);
        let uninterrupted = train_steps(&mut straight, Net::new(&device), 6, &device);

        let mut first = engine(&cfg);
        let half = train_steps(&mut first, Net::new(&device), 3, &device);
        first.save_checkpoint(&path, &half).unwrap();
        drop((first, half));
        // A freshly initialised model (random weights): the checkpoint overwrites them.
        let fresh = Net {
            fc1: DpLinearConfig::new(6, 8).init(&device),
            fc2: DpLinearConfig::new(8, 3).init(&device),
        };
        // The checked resume accepts it: adaptive clipping's C moved with
        // the steps, and is state, not a setting to compare.
        let checked = cfg
            .resume(
                &path,
                AdamConfig::new().init(),
                PoissonSampler::new(200, 20).unwrap(),
                Net::new(&device),
            )
            .unwrap_or_else(|e| panic!("{backend}: an honest adaptive resume was refused: {e}"));
        assert_eq!(checked.engine.steps(), 3);
        let data = DatasetFingerprint { size: 200, hash: 0 };
        let (mut resumed, net) =
            PrivacyEngine::resume(&path, AdamConfig::new().init(), fresh, data).unwrap();
        assert_eq!(resumed.steps(), 3);
        let finished = train_steps(&mut resumed, net, 3, &device);

        assert_eq!(
            params(&finished),
            params(&uninterrupted),
            "{backend}: parameters differ after resume"
        );
        assert_eq!(resumed.epsilon().unwrap(), straight.epsilon().unwrap());
        assert_eq!(
            resumed.report().unwrap().clipping,
            straight.report().unwrap().clipping,
            "adaptive C restored"
        );
    }
}

#[test]
fn should_detect_truncated_and_corrupted_checkpoints() {
    let device = devices()[0].1.clone();
    let dir = std::env::temp_dir().join(format!("dpsgd-ckpt-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let mut pe = engine(&config());
    let net = train_steps(&mut pe, Net::new(&device), 1, &device);
    pe.save_checkpoint(&path, &net).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // The temporary file (a fresh random name each time) was renamed away:
    // the folder holds the checkpoint alone.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["run.ckpt"], "temporary file renamed away");

    let data = DatasetFingerprint { size: 200, hash: 0 };
    let resume = |b: &[u8]| {
        std::fs::write(&path, b).unwrap();
        match PrivacyEngine::resume(&path, AdamConfig::new().init(), Net::new(&device), data) {
            Err(Error::Checkpoint { reason, .. }) => reason,
            Err(other) => panic!("expected a checkpoint error, got {other}"),
            Ok(_) => panic!("a damaged checkpoint was accepted"),
        }
    };
    for cut in [bytes.len() / 2, bytes.len() - 1, 20, 3] {
        let reason = resume(&bytes[..cut]);
        assert!(
            reason.contains("truncated") || reason.contains("magic"),
            "cut at {cut}: {reason}"
        );
    }
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    assert!(resume(&flipped).contains("checksum"));
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        PrivacyEngine::resume(&path, AdamConfig::new().init(), Net::new(&device), data).is_ok()
    );
}

#[test]
fn should_track_the_target_quantile_with_adaptive_clipping() {
    // Synthetic per-example norms: log-normal with median e^0 = 1 (and 90th
    // percentile e^1.2816·0.5 = 1.90). 400 steps of 200 examples; C must end
    // within 10% of the tracked quantile (fixed seed).
    let device = devices()[0].1.clone();
    let model = DpLinearConfig::new(2, 1).init(&device);
    for (quantile, expected) in [(0.5, 1.0), (0.9, (1.2816f64 * 0.5).exp())] {
        let settings = DpSettings {
            noise_multiplier: 1.0,
            clipping: Clipping::adaptive(0.1, quantile, 10.0).unwrap(),
            sample_rate: 0.2,
            dataset_size: 1000,
            accountant: Default::default(),
            budget: None,
        };
        let mut dp =
            DpOptimizer::with_noise(AdamConfig::new().init(), settings, NoiseSource::seeded(4))
                .unwrap();
        let mut norms_rng = NoiseSource::seeded(5);
        for _ in 0..400 {
            let norms: Vec<f32> = norms_rng
                .gaussian(200, 0.5)
                .into_iter()
                .map(f32::exp)
                .collect();
            let clipped = ClippedGradients::new(
                HashMap::new(),
                norms,
                GradientMethod::EmptyBatch,
                dp.clipping().clone(),
            )
            .unwrap();
            dp.privatize(&model, clipped).unwrap();
        }
        let c = dp.clipping().sensitivity();
        assert!(
            (c / expected - 1.0).abs() < 0.1,
            "quantile {quantile}: C = {c}, expected ≈ {expected}"
        );
        // The count is accounted: the gradient gets less than σ, the accountant σ.
        assert!(dp.settings().gradient_noise_multiplier() > 1.0);
        assert_eq!(
            dp.accountant().history().segments()[0].noise_multiplier,
            1.0
        );
    }
}

#[test]
fn should_bound_each_update_by_one_with_automatic_clipping() {
    for (backend, device) in devices() {
        let net = Net::new(&device);
        let mut engine = GradientEngine::new(Clipping::automatic(1.0).unwrap());
        for i in 0..8 {
            let b = data(&[i], &device);
            let got = engine.clipped_gradients(&net, &b, Net::loss).unwrap();
            let norm: f64 = trainable_params(&net)
                .iter()
                .flat_map(|p| to_vec(got.sum(&p.id).unwrap()))
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt();
            let raw = f64::from(got.per_example_norms()[0]);
            assert!(norm <= 1.0, "{backend}: {norm}");
            assert!(
                (norm - raw / (raw + 0.01)).abs() < 1e-4,
                "{backend}: normalised, {norm} vs {raw}"
            );
        }
    }
}

#[derive(Module, Debug)]
struct WithBatchNorm {
    fc: DpLinear,
    norm: BatchNorm,
}

#[derive(Module, Debug)]
struct WithDropout {
    fc: DpLinear,
    dropout: Dropout,
}

#[test]
fn should_reject_batch_norm_and_accept_dropout() {
    let device = devices()[0].1.clone();
    let bad = WithBatchNorm {
        fc: DpLinearConfig::new(4, 4).init(&device),
        norm: BatchNormConfig::new(4).init(&device),
    };
    match validate_model(&bad) {
        Err(Error::UnsupportedLayer {
            path,
            layer,
            suggestion,
        }) => {
            assert_eq!((path.as_str(), layer.as_str()), ("norm", "BatchNorm"));
            assert!(suggestion.contains("GroupNorm") && suggestion.contains("LayerNorm"));
        }
        other => panic!("expected UnsupportedLayer, got {other:?}"),
    }
    let good = WithDropout {
        fc: DpLinearConfig::new(4, 4).init(&device),
        dropout: DropoutConfig::new(0.5).init(),
    };
    assert!(validate_model(&good).is_ok());
}

#[test]
fn should_validate_the_configuration_up_front() {
    let sampler = PoissonSampler::new(1000, 50).unwrap();
    let init = |c: DpSgdConfig| c.init(AdamConfig::new().init(), sampler);
    let name = |r: Result<PrivacyEngine, Error>| match r {
        Err(Error::InvalidParameter { name, .. }) => name,
        Err(other) => panic!("{other}"),
        Ok(_) => "ok",
    };
    assert_eq!(name(init(DpSgdConfig::new(1.0))), "noise_multiplier");
    assert_eq!(
        name(init(
            DpSgdConfig::new(1.0)
                .with_noise_multiplier(1.0)
                .with_target_epsilon(1.0, 1e-5, 1)
        )),
        "noise_multiplier"
    );
    assert_eq!(
        name(init(DpSgdConfig::new(1.0).with_noise_multiplier(-1.0))),
        "noise_multiplier"
    );
    assert_eq!(
        name(init(
            DpSgdConfig::new(1.0).with_target_epsilon(1.0, 1e-5, 0)
        )),
        "epochs"
    );
    assert_eq!(
        name(init(
            DpSgdConfig::new(1.0)
                .with_noise_multiplier(1.0)
                .with_max_physical_batch_size(0)
        )),
        "max_physical_batch_size"
    );
    let tiny_q = PoissonSampler::with_sample_rate(10, 0.05).unwrap();
    assert_eq!(
        name(
            DpSgdConfig::new(1.0)
                .with_noise_multiplier(1.0)
                .init(AdamConfig::new().init(), tiny_q)
        ),
        "batch_size"
    );
    // δ ≥ 1/N is refused; allowed explicitly, it warns and runs.
    assert_eq!(
        name(init(
            DpSgdConfig::new(1.0)
                .with_noise_multiplier(1.0)
                .with_delta(0.01)
        )),
        "delta"
    );
    let pe = init(
        DpSgdConfig::new(1.0)
            .with_noise_multiplier(1.0)
            .with_delta(0.01)
            .with_allow_large_delta(true),
    )
    .unwrap();
    assert!(pe.warnings()[0].contains("1/N"));
    // A target: planned ε within budget, and the plan is the budget's steps.
    let pe = init(DpSgdConfig::new(1.0).with_target_epsilon(2.0, 1e-5, 3)).unwrap();
    assert_eq!(pe.planned_steps(), Some(60));
    let planned = pe.planned_epsilon().unwrap();
    assert!(planned <= 2.0 && planned > 1.99, "{planned}");
    assert_eq!(pe.report().unwrap().planned_epsilon, Some(planned));
}

/// The checkpoint at `path` with its JSON header edited by `edit` and the
/// checksum recomputed, as a hand-editing adversary would; `v1` rewrites it
/// in the first layout (three sections, no caller state).
fn forge(path: &std::path::Path, edit: impl Fn(&mut serde_json::Value), v1: bool) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"DPSGDCK2");
    let body = &bytes[12..bytes.len() - 8];
    let mut sections = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let len = u64::from_le_bytes(body[at..at + 8].try_into().unwrap()) as usize;
        sections.push(body[at + 8..at + 8 + len].to_vec());
        at += 8 + len;
    }
    assert_eq!(sections.len(), 4, "header, model, optimizer, caller state");
    let mut header: serde_json::Value = serde_json::from_slice(&sections[0]).unwrap();
    edit(&mut header);
    sections[0] = serde_json::to_vec(&header).unwrap();
    if v1 {
        sections.pop();
    }
    let mut new_body = Vec::new();
    for s in &sections {
        new_body.extend_from_slice(&(s.len() as u64).to_le_bytes());
        new_body.extend_from_slice(s);
    }
    new_body.extend_from_slice(b"DPSGDEND");
    let mut out = if v1 {
        b"DPSGDCK1".to_vec()
    } else {
        b"DPSGDCK2".to_vec()
    };
    out.extend_from_slice(&crc32fast::hash(&new_body).to_le_bytes());
    out.extend_from_slice(&new_body);
    out
}

/// Sets every field named `key`, at any depth, to `value`.
fn set_everywhere(v: &mut serde_json::Value, key: &str, value: &serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                if k == key {
                    *field = value.clone();
                } else {
                    set_everywhere(field, key, value);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                set_everywhere(item, key, value);
            }
        }
        _ => {}
    }
}

#[test]
fn should_refuse_a_checkpoint_edited_to_claim_other_privacy_settings() {
    // Issue 26: a checkpoint edited by hand (checksum recomputed) was
    // believed: σ changed from 1 to 100 made a σ = 1 run report a tiny ε.
    // `DpSgdConfig::resume` rebuilds the engine from the run's settings
    // and refuses every such edit; the unchecked `PrivacyEngine::resume`
    // shows what the edit would have claimed.
    let device = devices()[0].1.clone();
    let dir = std::env::temp_dir().join(format!("dpsgd-ckpt-forged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let forged_path = dir.join("forged.ckpt");
    let cfg = config();
    let sampler = PoissonSampler::new(200, 20).unwrap();
    let mut pe = engine(&cfg);
    let net = train_steps(&mut pe, Net::new(&device), 3, &device);
    pe.save_checkpoint_with(&path, &net, b"loop state").unwrap();
    let honest_epsilon = pe.epsilon().unwrap();

    // The honest checkpoint resumes, with the caller's state.
    let resumed = cfg
        .resume(&path, AdamConfig::new().init(), sampler, Net::new(&device))
        .unwrap();
    assert_eq!(resumed.engine.steps(), 3);
    assert_eq!(resumed.engine.epsilon().unwrap(), honest_epsilon);
    assert_eq!(resumed.caller_state, b"loop state");
    assert_eq!(params(&resumed.model), params(&net));
    // A run resumed under another unit of privacy (same N) is refused: it
    // would train users under a record-level engine, or the reverse.
    let as_users = cfg
        .clone()
        .with_privacy_unit(dpsgd_burn::PrivacyUnit::User {
            max_records_per_user: 4,
        });
    match as_users.resume(&path, AdamConfig::new().init(), sampler, Net::new(&device)) {
        Err(Error::Checkpoint { reason, .. }) => {
            assert!(reason.contains("the unit of privacy"), "{reason}")
        }
        Err(e) => panic!("expected a checkpoint error, got {e}"),
        Ok(_) => panic!("a record-level checkpoint resumed at user level"),
    }

    let refused = |bytes: &[u8], what: &str| {
        std::fs::write(&forged_path, bytes).unwrap();
        match cfg.resume(
            &forged_path,
            AdamConfig::new().init(),
            sampler,
            Net::new(&device),
        ) {
            Err(Error::Checkpoint { reason, .. }) => assert!(
                reason.contains(what),
                "the refusal should name {what}: {reason}"
            ),
            Err(e) => panic!("expected a checkpoint error naming {what}, got {e}"),
            Ok(_) => panic!("a checkpoint edited in {what} was accepted"),
        }
    };

    // σ = 100 everywhere (settings, configuration, accountant history): a
    // consistent forgery. The unchecked path believes it ...
    let sigma100 = forge(
        &path,
        |h| set_everywhere(h, "noise_multiplier", &100.0.into()),
        false,
    );
    std::fs::write(&forged_path, &sigma100).unwrap();
    let data = DatasetFingerprint { size: 200, hash: 0 };
    let (believed, _) = PrivacyEngine::resume(
        &forged_path,
        AdamConfig::new().init(),
        Net::new(&device),
        data,
    )
    .unwrap();
    assert!(
        believed.epsilon().unwrap() < honest_epsilon / 10.0,
        "the forgery claims a far smaller ε"
    );
    // ... the checked one refuses it.
    refused(&sigma100, "σ");
    // σ = 100 in the accountant's history alone. (Its step count is the
    // engine's only record of the steps taken: the caller checks it against
    // its own, as the training loop does with its epochs.)
    refused(
        &forge(
            &path,
            |h| {
                let segment = h
                    .pointer_mut("/dp/accountant/history/segments/0")
                    .expect("one history segment");
                segment["noise_multiplier"] = 100.0.into();
            },
            false,
        ),
        "history",
    );
    // δ = 0.5, which needs an explicit allowance.
    refused(
        &forge(&path, |h| set_everywhere(h, "delta", &0.5.into()), false),
        "δ",
    );
    // Another sampling rate.
    refused(
        &forge(
            &path,
            |h| set_everywhere(h, "sample_rate", &0.01.into()),
            false,
        ),
        "q",
    );
    // Another clipping norm.
    refused(
        &forge(
            &path,
            |h| set_everywhere(h, "max_grad_norm", &50.0.into()),
            false,
        ),
        "clipping",
    );

    // A seeded run's noise marked secure (it would report itself secure
    // while its sampling stays seeded).
    refused(
        &forge(
            &path,
            |h| h["dp"]["noise"] = serde_json::json!({"rng": null, "secure": true}),
            false,
        ),
        "secure",
    );

    // The run's own settings must be the checkpoint's: σ = 2 is refused.
    match config().with_noise_multiplier(2.0).resume(
        &path,
        AdamConfig::new().init(),
        sampler,
        Net::new(&device),
    ) {
        Err(Error::Checkpoint { reason, .. }) => assert!(reason.contains("σ"), "{reason}"),
        other => panic!("σ = 2 resumed a σ = 1 checkpoint: {:?}", other.is_ok()),
    }

    // A file of the first layout resumes, with no caller state.
    let v1 = forge(&path, |_| {}, true);
    std::fs::write(&forged_path, &v1).unwrap();
    let old = cfg
        .resume(
            &forged_path,
            AdamConfig::new().init(),
            sampler,
            Net::new(&device),
        )
        .unwrap();
    assert!(old.caller_state.is_empty());
    assert_eq!(old.engine.epsilon().unwrap(), honest_epsilon);
    assert!(
        dpsgd_burn::read_caller_state(&forged_path)
            .unwrap()
            .is_empty()
    );
    assert_eq!(dpsgd_burn::read_caller_state(&path).unwrap(), b"loop state");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn should_keep_the_rebuilt_engines_warnings_on_resume() {
    // The warnings come from the settings, not from the file (which held
    // none: an honest resume lost δ ≥ 1/N's warning, an edited one could
    // drop it).
    let device = devices()[0].1.clone();
    let dir = std::env::temp_dir().join(format!("dpsgd-ckpt-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let cfg = config().with_delta(0.01).with_allow_large_delta(true);
    let sampler = PoissonSampler::new(200, 20).unwrap();
    let mut pe = engine(&cfg);
    assert!(!pe.warnings().is_empty(), "δ = 0.01 ≥ 1/200 warns");
    let net = train_steps(&mut pe, Net::new(&device), 2, &device);
    pe.save_checkpoint(&path, &net).unwrap();
    let resumed = cfg
        .resume(&path, AdamConfig::new().init(), sampler, Net::new(&device))
        .unwrap();
    assert_eq!(resumed.engine.warnings(), pe.warnings());
    std::fs::remove_dir_all(&dir).unwrap();
}
