//! User-level DP through the training loop, on the embedded digits with
//! synthetic users: the report names the unit and counts users, the
//! sampler samples users, a resumed run is exact, and what does not
//! combine is refused with one line.

mod common;

use burn::tensor::Device;
use dpsgd_data::{Dataset, digits};
use dpsgd_train::{
    ClippingMode, EarlyStopping, ModelKind, Privacy, PrivacyUnit, TrainConfig, TrainError, train,
};

/// Digits with users (1–7 records each), split by user.
fn data() -> (Dataset, Dataset) {
    common::digits_with_users(0.2)
}

fn config(k: usize) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Logreg,
        epochs: 2,
        batch_size: 32,
        lr: 0.05,
        privacy: Privacy::TargetEpsilon(2.0),
        seed: Some(5),
        privacy_unit: PrivacyUnit::User {
            max_records_per_user: k,
        },
        ..TrainConfig::default()
    }
}

#[test]
fn should_train_and_account_at_user_level() {
    let (tr, te) = data();
    let users = tr.num_users().unwrap();
    assert!(
        users > 200 && users < tr.len(),
        "{users} users, {} records",
        tr.len()
    );
    let report = train(&config(4), &tr, &te, &Device::flex(), |_| {}).unwrap();
    let p = &report.privacy;
    assert_eq!(p.privacy_unit, "user");
    assert_eq!(p.users, Some(users));
    assert_eq!(p.dataset_size, users, "N counts users");
    assert_eq!(p.max_records_per_user, Some(4));
    assert!((p.sample_rate - 32.0 / users as f64).abs() < 1e-12);
    let steps_per_epoch = (users as f64 / 32.0).round() as u64;
    assert_eq!(p.steps, 2 * steps_per_epoch);
    assert!(p.epsilon.unwrap() <= 2.0 + 1e-9);
    let counts = report.not_covered_by_epsilon.users.unwrap();
    assert_eq!(
        (counts.users, counts.records, counts.max_records_of_one_user),
        (users, tr.len(), 7)
    );
    // Digits are learnable at user level too (10 classes: 10% by chance).
    assert!(report.test_accuracy > 0.5, "{}", report.test_accuracy);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["privacy_unit"], "user");
    assert_eq!(json["users"], users);
    assert_eq!(json["max_records_per_user"], 4);
}

#[test]
fn should_say_record_level_and_count_users_when_the_data_has_them() {
    let (tr, te) = data();
    let cfg = TrainConfig {
        privacy_unit: PrivacyUnit::Record,
        epochs: 1,
        ..config(1)
    };
    let report = train(&cfg, &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert_eq!(report.privacy.privacy_unit, "record");
    assert_eq!(report.privacy.users, None);
    assert_eq!(report.privacy.dataset_size, tr.len());
    assert_eq!(
        report
            .not_covered_by_epsilon
            .users
            .unwrap()
            .max_records_of_one_user,
        7
    );
}

#[test]
fn should_run_every_clipping_mode_virtual_batches_and_workers_at_user_level() {
    let (tr, te) = data();
    for (clipping, physical, devices) in [
        (ClippingMode::PerLayer, None, 1),
        (ClippingMode::Automatic, None, 1),
        (ClippingMode::Adaptive, None, 1),
        (ClippingMode::Flat, Some(5), 1),
        (ClippingMode::Flat, None, 2),
    ] {
        let cfg = TrainConfig {
            clipping,
            max_physical_batch_size: physical,
            devices,
            epochs: 1,
            ..config(3)
        };
        let report = train(&cfg, &tr, &te, &Device::flex(), |_| {})
            .unwrap_or_else(|e| panic!("{clipping:?} {physical:?} {devices}: {e}"));
        assert_eq!(report.privacy.privacy_unit, "user");
        assert!(
            report.test_accuracy > 0.2,
            "{clipping:?}: {}",
            report.test_accuracy
        );
    }
    // Without DP the baseline samples users too.
    let cfg = TrainConfig {
        privacy: Privacy::NonPrivate,
        epochs: 1,
        ..config(3)
    };
    let report = train(&cfg, &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert_eq!(report.privacy.privacy_unit, "user");
    assert_eq!(report.privacy.dataset_size, tr.num_users().unwrap());
}

#[test]
fn should_resume_a_user_level_run_exactly() {
    // The users' records are chosen by the engine's generator, which the
    // checkpoint carries: a run interrupted after epoch 1 and resumed
    // ends where the uninterrupted run does.
    let (tr, te) = data();
    let dir = std::env::temp_dir().join(format!("dpsgd-user-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::flex();
    let whole = train(&config(3), &tr, &te, &device, |_| {}).unwrap();
    let checkpointed = TrainConfig {
        checkpoint_dir: Some(dir.clone()),
        ..config(3)
    };
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&checkpointed, &tr, &te, &device, |p| {
            if p.epoch == 1 && p.test_accuracy.is_some() {
                panic!("simulated crash after epoch 1");
            }
        })
    }));
    assert!(crashed.is_err(), "the run must have been interrupted");
    let resumed = train(
        &TrainConfig {
            resume: true,
            ..checkpointed
        },
        &tr,
        &te,
        &device,
        |_| {},
    )
    .unwrap();
    assert_eq!(resumed.privacy, whole.privacy);
    assert_eq!(resumed.test_accuracy, whole.test_accuracy);
    assert_eq!(
        resumed.not_covered_by_epsilon.final_loss,
        whole.not_covered_by_epsilon.final_loss
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One line naming the setting, for each option user-level DP refuses.
#[test]
fn should_refuse_what_does_not_combine_with_user_level_dp() {
    let (tr, te) = data();
    let refused = |cfg: TrainConfig, train_data: &Dataset, setting: &str| {
        let e = train(&cfg, train_data, &te, &Device::flex(), |_| {}).unwrap_err();
        let TrainError::Config(c) = &e else {
            panic!("{setting}: {e}")
        };
        let line = e.to_string();
        assert!(line.contains(setting), "{setting}: {line}");
        assert!(!line.contains('\n'), "{setting}: one line: {line}");
        assert_eq!(c.setting, setting);
    };
    let plain = digits();
    refused(config(3), &plain, "privacy_unit");
    refused(config(0), &tr, "max_records_per_user");
    refused(
        TrainConfig {
            augment_multiplicity: 2,
            ..config(3)
        },
        &tr,
        "augment_multiplicity",
    );
    refused(
        TrainConfig {
            defences: dpsgd_train::Defences {
                early_stopping: Some(EarlyStopping {
                    validation_fraction: 0.2,
                    patience: 2,
                }),
                ..Default::default()
            },
            ..config(3)
        },
        &tr,
        "early_stopping",
    );
    refused(
        TrainConfig {
            defences: dpsgd_train::Defences {
                mist: Some(dpsgd_train::MistSettings::default()),
                ..Default::default()
            },
            ..config(3)
        },
        &tr,
        "mist",
    );
}
