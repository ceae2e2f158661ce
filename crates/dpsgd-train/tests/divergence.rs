//! A run that diverges stops with a clear error and leaves its partial
//! report and last good model (issue 12); under DP-SGD only the released
//! parameters decide that it diverged, never one record (issue 24).

use burn::tensor::Device;
use dpsgd_accountant::{Accountant, RdpAccountant};
use dpsgd_data::{Dataset, Scaling, digits};
use dpsgd_train::{
    Defences, MistSettings, ModelKind, OptimizerKind, Privacy, TrainConfig, TrainError,
    TrainReport, train,
};

fn data() -> (Dataset, Dataset) {
    let (mut tr, mut te) = digits().split(0.2, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    (tr, te)
}

/// A learning rate so large that the parameters overflow f32 within a few
/// steps: without DP the loss becomes non-finite; under DP-SGD the noisy
/// update itself (σ·C/B ≈ 0.08 per coordinate, times 1e38) overflows the
/// parameters.
fn exploding(privacy: Privacy) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Mlp,
        optimizer: OptimizerKind::Sgd,
        lr: 1e38,
        max_grad_norm: 10.0,
        epochs: 5,
        seed: Some(1),
        privacy,
        ..TrainConfig::default()
    }
}

#[test]
fn should_stop_a_diverging_run_with_its_partial_report_and_last_good_model() {
    let (tr, te) = data();
    for privacy in [Privacy::NonPrivate, Privacy::NoiseMultiplier(1.0)] {
        let path = std::env::temp_dir().join(format!(
            "dpsgd-diverged-{}-{}.bin",
            std::process::id(),
            matches!(privacy, Privacy::NonPrivate)
        ));
        let cfg = TrainConfig {
            save_model: Some(path.clone()),
            ..exploding(privacy)
        };
        let err = train(&cfg, &tr, &te, &Device::flex(), |_| {}).unwrap_err();
        let TrainError::Diverged {
            step,
            epoch,
            reason,
            report,
        } = &err
        else {
            panic!("{privacy:?}: expected divergence, got {err}");
        };
        let text = err.to_string();
        assert!(
            text.contains("diverged") && text.contains("learning rate"),
            "{text}"
        );
        assert!(*step >= 1 && *epoch >= 1 && !reason.is_empty(), "{text}");
        assert_eq!(report.status, "diverged");
        // The report covers the completed epochs only, and is of a model
        // with a finite (if poor) accuracy.
        assert_eq!(report.epochs, epoch - 1);
        assert_eq!(report.not_covered_by_epsilon.epoch_history.len(), epoch - 1);
        assert!(report.test_accuracy.is_finite());
        if let Privacy::NoiseMultiplier(sigma) = privacy {
            // Decided from the released parameters: the reason names no
            // count of the private batch.
            assert!(reason.contains("parameters"), "{reason}");
            assert!(!reason.chars().any(|c| c.is_ascii_digit()), "{reason}");
            // ε covers the planned steps: the stop is a function of the
            // released parameters, post-processing of the planned run.
            assert_planned_epsilon(report, sigma, cfg.epochs);
        }
        // The last good model was saved.
        assert!(path.exists(), "{privacy:?}: no model saved");
        let _ = std::fs::remove_file(&path);
    }
}

/// `report`'s steps and ε are those of `epochs` planned epochs at σ, by an
/// independent RDP accountant.
fn assert_planned_epsilon(report: &TrainReport, sigma: f64, epochs: usize) {
    let p = &report.privacy;
    let steps_per_epoch = (1.0 / p.sample_rate).round() as u64;
    assert_eq!(p.steps, epochs as u64 * steps_per_epoch);
    let mut reference = RdpAccountant::new();
    reference.record(sigma, p.sample_rate, p.steps).unwrap();
    let want = reference.epsilon(p.delta).unwrap();
    let got = p.epsilon.unwrap();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
}

/// Everything a report releases but the model and the metrics computed
/// from it (and timings): what must not depend on one record.
fn released(report: &TrainReport) -> serde_json::Value {
    let mut json = serde_json::to_value(report).unwrap();
    let map = json.as_object_mut().unwrap();
    for key in [
        "test_accuracy",
        "wall_seconds",
        "eval_seconds",
        "feature_seconds",
        "not_covered_by_epsilon",
    ] {
        assert!(map.remove(key).is_some(), "{key}");
    }
    json
}

/// The outcome of a run on `train`: its released fields, or the error's
/// text and its partial report's.
fn outcome(cfg: &TrainConfig, train_set: &Dataset, test: &Dataset) -> String {
    match train(cfg, train_set, test, &Device::flex(), |_| {}) {
        Ok(report) => released(&report).to_string(),
        Err(TrainError::Diverged { report, .. }) => {
            format!("diverged: {}", released(&report))
        }
        Err(e) => format!("error: {e}"),
    }
}

/// One crafted record (every feature 3e38: its loss is non-finite in every
/// batch it is in) in batches of two, where it is often half the batch:
/// under DP-SGD the run completes exactly as with an ordinary record in its
/// place — same status, steps, epochs, ε and warnings. (The old check
/// stopped the run when half a batch was non-finite: this record decided
/// whether the run finished.)
#[test]
fn should_not_let_one_crafted_record_decide_whether_a_dp_run_stops() {
    let (tr, te) = data();
    let first: Vec<usize> = (0..100).collect();
    let ordinary = tr.subset(&first);
    let mut features = ordinary.features().to_vec();
    let d = ordinary.n_features();
    features[..d].fill(3.0e38);
    let crafted = Dataset::new(
        features,
        ordinary.labels().to_vec(),
        d,
        ordinary.n_classes(),
    )
    .unwrap();
    for seed in [1, 2, 3] {
        let cfg = TrainConfig {
            model: ModelKind::Mlp,
            hidden: vec![16],
            batch_size: 2,
            epochs: 10,
            privacy: Privacy::NoiseMultiplier(1.0),
            delta: 1e-5,
            seed: Some(seed),
            ..TrainConfig::default()
        };
        let (a, b) = (outcome(&cfg, &ordinary, &te), outcome(&cfg, &crafted, &te));
        assert!(a.starts_with('{'), "seed {seed}: {a}");
        assert_eq!(
            a, b,
            "seed {seed}: one record changed what the run released"
        );
        // The crafted record was dropped, never trained on, and counted
        // only outside the guarantee.
        let report = train(&cfg, &crafted, &te, &Device::flex(), |_| {}).unwrap();
        assert!(report.not_covered_by_epsilon.dropped_examples > 0);
        assert_eq!(report.status, "completed");
    }
}

/// A fixed σ and an absurd learning rate: the noisy parameters overflow,
/// and a DP run reports `diverged` with the steps and ε of its plan, whose
/// error and report name no private count.
#[test]
fn should_detect_a_dp_run_whose_parameters_overflow() {
    let (tr, te) = data();
    let cfg = TrainConfig {
        lr: 1e38,
        optimizer: OptimizerKind::Sgd,
        max_grad_norm: 10.0,
        epochs: 3,
        privacy: Privacy::NoiseMultiplier(2.0),
        seed: Some(7),
        ..TrainConfig::default()
    };
    let err = train(&cfg, &tr, &te, &Device::flex(), |_| {}).unwrap_err();
    let TrainError::Diverged { reason, report, .. } = &err else {
        panic!("expected divergence, got {err}");
    };
    assert!(reason.contains("parameters"), "{reason}");
    assert!(!reason.chars().any(|c| c.is_ascii_digit()), "{reason}");
    assert_eq!(report.status, "diverged");
    assert_planned_epsilon(report, 2.0, cfg.epochs);
    // Nothing about the batch in what is released outside
    // `not_covered_by_epsilon`.
    let json = released(report).to_string();
    assert!(
        !json.contains("dropped") && !json.contains("examples of the batch"),
        "{json}"
    );
}

/// MIST's sub-models under DP-SGD: the same rule, the sub-models' plan.
#[test]
fn should_detect_a_dp_mist_run_whose_parameters_overflow() {
    let (tr, te) = data();
    let cfg = TrainConfig {
        lr: 1e38,
        optimizer: OptimizerKind::Sgd,
        max_grad_norm: 10.0,
        epochs: 2,
        privacy: Privacy::NoiseMultiplier(2.0),
        seed: Some(7),
        defences: Defences {
            mist: Some(MistSettings {
                submodels: 2,
                ..MistSettings::default()
            }),
            ..Defences::default()
        },
        ..TrainConfig::default()
    };
    let err = train(&cfg, &tr, &te, &Device::flex(), |_| {}).unwrap_err();
    let TrainError::Diverged { reason, report, .. } = &err else {
        panic!("expected divergence, got {err}");
    };
    assert!(reason.contains("parameters"), "{reason}");
    assert!(!reason.chars().any(|c| c.is_ascii_digit()), "{reason}");
    // Each sub-model's plan: rounds·(T₁ + T₂) epochs of its part.
    for sub in report.mist.as_ref().unwrap() {
        let steps_per_epoch = (1.0 / sub.sample_rate).round() as u64;
        assert_eq!(sub.steps, 2 * 2 * steps_per_epoch, "{sub:?}");
    }
    assert_planned_epsilon(report, 2.0, 2 * 2);
}
