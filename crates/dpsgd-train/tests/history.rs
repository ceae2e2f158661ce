//! The report's epoch history and evaluation time, on the embedded digits.

use burn::tensor::Device;
use dpsgd_accountant::AccountantKind;
use dpsgd_data::{Scaling, digits};
use dpsgd_train::{
    Activation, ClippingMode, ConvStrategy, DEFAULT_HIDDEN, ModelKind, OptimizerKind, Privacy,
    Progress, TrainConfig, TrainReport, train,
};

fn config(privacy: Privacy, progress_epsilon: bool) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Logreg,
        activation: Activation::Relu,
        epochs: 3,
        batch_size: 128,
        max_grad_norm: 1.0,
        lr: 1e-2,
        optimizer: OptimizerKind::Adam,
        privacy,
        delta: 1e-5,
        accountant: AccountantKind::Rdp,
        seed: Some(3),
        allow_large_delta: false,
        clipping: ClippingMode::Flat,
        hidden: DEFAULT_HIDDEN.to_vec(),
        max_physical_batch_size: None,
        devices: 1,
        all_reduce: false,
        conv_strategy: ConvStrategy::Auto,
        save_model: None,
        checkpoint_dir: None,
        resume: false,
        progress_epsilon,
        ..TrainConfig::default()
    }
}

fn run(cfg: &TrainConfig) -> (TrainReport, Vec<Progress>) {
    let (mut tr, mut te) = digits().split(0.2, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    let mut seen = Vec::new();
    let report = train(cfg, &tr, &te, &Device::flex(), |p| seen.push(p)).unwrap();
    (report, seen)
}

#[test]
fn should_report_one_history_entry_per_epoch() {
    let (r, progress) = run(&config(Privacy::NoiseMultiplier(1.0), true));
    let history = &r.not_covered_by_epsilon.epoch_history;
    assert_eq!(
        history.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let last = history.last().unwrap();
    // The last epoch describes the final model and the whole run.
    assert_eq!(last.test_accuracy, r.test_accuracy);
    assert_eq!(last.train_loss, r.not_covered_by_epsilon.final_loss);
    let final_epsilon = r.privacy.epsilon.unwrap();
    assert!((last.epsilon.unwrap() - final_epsilon).abs() <= 1e-9 * final_epsilon);
    for pair in history.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a.epsilon.unwrap() < b.epsilon.unwrap(),
            "ε grows: {a:?} {b:?}"
        );
        assert!(a.wall_seconds <= b.wall_seconds);
    }
    for e in history {
        assert!(e.train_loss.is_finite() && e.train_loss > 0.0, "{e:?}");
        assert!((0.0..=1.0).contains(&e.test_accuracy), "{e:?}");
    }
    assert!(last.wall_seconds <= r.wall_seconds);
    assert!(r.eval_seconds > 0.0);
    // Progress carries the same values at the end of each epoch.
    let ends: Vec<&Progress> = progress.iter().filter(|p| p.epoch_loss.is_some()).collect();
    assert_eq!(ends.len(), 3);
    for (p, e) in ends.iter().zip(history) {
        assert_eq!(p.epoch, e.epoch);
        assert_eq!(p.epoch_loss, Some(e.train_loss));
        assert_eq!(p.test_accuracy, Some(e.test_accuracy));
        assert_eq!(p.epsilon, e.epsilon);
    }
    assert_eq!(progress.last().unwrap().epoch, 3);

    let json = serde_json::to_value(&r).unwrap();
    assert!(json["eval_seconds"].as_f64().unwrap() > 0.0);
    let entries = json["not_covered_by_epsilon"]["epoch_history"]
        .as_array()
        .unwrap();
    assert_eq!(entries.len(), 3);
    for field in [
        "epoch",
        "train_loss",
        "test_accuracy",
        "epsilon",
        "wall_seconds",
    ] {
        assert!(!entries[0][field].is_null(), "{field}");
    }
}

#[test]
fn should_leave_epsilon_out_of_the_history_without_dp() {
    let (r, _) = run(&config(Privacy::NonPrivate, true));
    let history = &r.not_covered_by_epsilon.epoch_history;
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|e| e.epsilon.is_none()));
    assert_eq!(history[2].test_accuracy, r.test_accuracy);
}

#[test]
fn should_save_a_model_that_loads_back_with_the_same_accuracy() {
    use burn::module::Module;
    use burn::store::ModuleRecord;
    let path = std::env::temp_dir().join(format!("dpsgd-save-model-{}.bin", std::process::id()));
    let cfg = TrainConfig {
        epochs: 1,
        save_model: Some(path.clone()),
        ..config(Privacy::NoiseMultiplier(1.0), false)
    };
    let (report, _) = run(&cfg);
    let (_, mut te) = digits().split(0.2, 0).unwrap();
    te.apply(&Scaling::Divide(16.0));
    let device = Device::flex();
    let bytes = std::fs::read(&path).unwrap();
    let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes)).unwrap();
    let model = dpsgd_train::Mlp::new(&[64, 10], &device)
        .try_load_record(record)
        .unwrap();
    assert_eq!(
        dpsgd_train::accuracy(&model, &te, &device),
        report.test_accuracy
    );
    let _ = std::fs::remove_file(&path);
}

/// A target-ε run interrupted after its second epoch (a crash, simulated
/// by a panic in the progress callback once that epoch's checkpoint is
/// written) and resumed: σ stays the one calibrated for the whole plan,
/// and the resumed seeded run is the uninterrupted one — the same ε (at
/// most the target), steps, σ, history and model (issue 25, item 8).
#[test]
fn should_resume_an_interrupted_target_epsilon_run_exactly() {
    let dir = std::env::temp_dir().join(format!("dpsgd-history-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut tr, mut te) = digits().split(0.2, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    let device = Device::flex();
    let cfg = TrainConfig {
        epochs: 4,
        ..config(Privacy::TargetEpsilon(2.0), false)
    };
    let whole = train(&cfg, &tr, &te, &device, |_| {}).unwrap();
    let checkpointed = TrainConfig {
        checkpoint_dir: Some(dir.clone()),
        ..cfg.clone()
    };
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&checkpointed, &tr, &te, &device, |p| {
            if p.epoch == 2 && p.test_accuracy.is_some() {
                panic!("simulated crash after epoch 2");
            }
        })
    }));
    assert!(crashed.is_err(), "the run must have been interrupted");
    let mut first_step = None;
    let resumed = train(
        &TrainConfig {
            resume: true,
            ..checkpointed
        },
        &tr,
        &te,
        &device,
        |p| {
            first_step.get_or_insert(p.step);
        },
    )
    .unwrap();
    // It went on from the checkpoint (a fresh start would give the same
    // seeded result): its first step is the third epoch's.
    let per_epoch = whole.privacy.steps / 4;
    assert_eq!(first_step, Some(2 * per_epoch + 1));
    let (a, b) = (&whole.privacy, &resumed.privacy);
    assert_eq!(a.steps, b.steps);
    assert_eq!(a.noise_multiplier, b.noise_multiplier);
    assert_eq!(a.epsilon, b.epsilon);
    assert!(b.epsilon.unwrap() <= 2.0 + 1e-9, "{:?}", b.epsilon);
    assert_eq!(whole.test_accuracy, resumed.test_accuracy);
    let epochs = |r: &TrainReport| {
        r.not_covered_by_epsilon
            .epoch_history
            .iter()
            .map(|e| (e.epoch, e.test_accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(epochs(&whole), epochs(&resumed));
    assert_eq!(
        whole.not_covered_by_epsilon.final_loss,
        resumed.not_covered_by_epsilon.final_loss
    );
    let _ = std::fs::remove_dir_all(&dir);
}
