//! A run that diverges stops with a clear error and leaves its partial
//! report and last good model (issue 12).

use burn::tensor::Device;
use dpsgd_data::{Scaling, digits};
use dpsgd_train::{ModelKind, OptimizerKind, Privacy, TrainConfig, TrainError, train};

fn data() -> (dpsgd_data::Dataset, dpsgd_data::Dataset) {
    let (mut tr, mut te) = digits().split(0.2, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    (tr, te)
}

/// A learning rate so large that the second epoch's parameters overflow
/// f32: the loss becomes non-finite.
fn exploding(privacy: Privacy) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Mlp,
        optimizer: OptimizerKind::Sgd,
        lr: 1e36,
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
        // ε covers every step taken, the diverged one included.
        if let Privacy::NoiseMultiplier(_) = privacy {
            assert_eq!(report.privacy.steps, *step);
            assert!(report.privacy.epsilon.is_some_and(f64::is_finite));
        }
        // The last good model was saved.
        assert!(path.exists(), "{privacy:?}: no model saved");
        let _ = std::fs::remove_file(&path);
    }
}
