//! The empirical defences of issue 14 as training options, with and
//! without DP-SGD: each does what it says on a real data set.

use burn::tensor::Device;
use dpsgd_accountant::{Accountant, AccountantKind, RdpAccountant};
use dpsgd_audit::scores::{ScoreKind, score_logits};
use dpsgd_data::{Dataset, Scaling, digits};
use dpsgd_train::{
    Defences, EarlyStopping, MistSettings, ModelKind, OptimizerKind, Privacy, RelaxLossSettings,
    TrainConfig, TrainedModel, train_model,
};

fn data() -> (Dataset, Dataset) {
    let (mut tr, mut te) = digits().split(0.5, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    (tr, te)
}

fn cfg(privacy: Privacy, defences: Defences) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Mlp,
        hidden: vec![64],
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        epochs: 30,
        batch_size: 64,
        privacy,
        delta: 1e-5,
        seed: Some(3),
        defences,
        ..TrainConfig::default()
    }
}

/// Mean cross-entropy of `model` on `data`, from its logits.
fn mean_loss(model: &TrainedModel, data: &Dataset) -> f64 {
    let logits = model.logits(data).unwrap();
    let c = model.classes();
    let total: f64 = (0..data.len())
        .map(|i| {
            -score_logits(
                ScoreKind::Loss,
                &logits[i * c..(i + 1) * c],
                data.labels()[i] as usize,
            )
            .unwrap()
        })
        .sum();
    total / data.len() as f64
}

/// RelaxLoss keeps the training loss near α instead of driving it to 0
/// (what makes members look like non-members), with and without DP.
#[test]
fn should_hold_the_training_loss_near_alpha_with_relaxloss() {
    let (tr, te) = data();
    let device = Device::flex();
    let (_, plain) = train_model(
        &cfg(Privacy::NonPrivate, Defences::default()),
        &tr,
        &te,
        &device,
        |_| {},
    )
    .unwrap();
    let relaxed_cfg = cfg(
        Privacy::NonPrivate,
        Defences {
            relaxloss: Some(RelaxLossSettings {
                alpha: 0.5,
                upper: 0.3,
            }),
            ..Defences::default()
        },
    );
    let (report, relaxed) = train_model(&relaxed_cfg, &tr, &te, &device, |_| {}).unwrap();
    let (plain_loss, relaxed_loss) = (mean_loss(&plain, &tr), mean_loss(&relaxed, &tr));
    assert!(plain_loss < 0.05, "plain training memorises: {plain_loss}");
    assert!(
        (0.2..1.0).contains(&relaxed_loss),
        "RelaxLoss holds the loss near α = 0.5: {relaxed_loss}"
    );
    assert!(report.test_accuracy > 0.85, "{}", report.test_accuracy);
    assert_eq!(report.defences.relaxloss, relaxed_cfg.defences.relaxloss);
    // Under DP-SGD (per-example branches) it trains too.
    let dp = cfg(Privacy::TargetEpsilon(8.0), relaxed_cfg.defences.clone());
    let (report, _) = train_model(&dp, &tr, &te, &device, |_| {}).unwrap();
    assert!(report.test_accuracy > 0.7, "{}", report.test_accuracy);
}

/// Early stopping holds out a validation split, stops after `patience`
/// epochs without improvement, releases the best epoch's model and
/// accounts only for the steps taken.
#[test]
fn should_stop_early_keep_the_best_epoch_and_spend_less_epsilon() {
    let (tr, te) = data();
    let device = Device::flex();
    let stopping = Defences {
        early_stopping: Some(EarlyStopping {
            validation_fraction: 0.2,
            patience: 2,
        }),
        ..Defences::default()
    };
    let mut long = cfg(Privacy::NonPrivate, stopping.clone());
    long.epochs = 200;
    let (report, _) = train_model(&long, &tr, &te, &device, |_| {}).unwrap();
    let es = report.early_stopping.unwrap();
    assert!(es.stopped_early, "{es:?}");
    assert_eq!(es.stopped_at_epoch, es.best_epoch + 2, "{es:?}");
    assert_eq!(report.epochs, es.stopped_at_epoch);
    // A stratified 20% of the 898 training records.
    assert!(
        (es.validation_size as f64 - 0.2 * tr.len() as f64).abs() < 10.0,
        "{es:?}"
    );
    let best = report
        .not_covered_by_epsilon
        .epoch_history
        .iter()
        .find(|r| r.epoch == es.best_epoch)
        .unwrap();
    assert_eq!(
        report.test_accuracy, best.test_accuracy,
        "the best epoch's model is released"
    );

    let mut dp = cfg(Privacy::NoiseMultiplier(1.0), stopping);
    dp.epochs = 200;
    let (report, _) = train_model(&dp, &tr, &te, &device, |_| {}).unwrap();
    let es = report.early_stopping.unwrap();
    let steps_per_epoch = (1.0 / report.privacy.sample_rate).round() as u64;
    assert_eq!(
        report.privacy.steps,
        es.stopped_at_epoch as u64 * steps_per_epoch
    );
    assert!(es.stopped_at_epoch < 200);
}

/// Weight decay shrinks the weights; dropout trains, and the released
/// model answers deterministically.
#[test]
fn should_decay_weights_and_drop_out_in_training_only() {
    let (tr, te) = data();
    let device = Device::flex();
    let norm = |m: &TrainedModel| {
        let logits = m.logits(&te).unwrap();
        logits.iter().map(|z| z * z).sum::<f64>().sqrt()
    };
    let (_, plain) = train_model(
        &cfg(Privacy::NonPrivate, Defences::default()),
        &tr,
        &te,
        &device,
        |_| {},
    )
    .unwrap();
    let decayed_cfg = cfg(
        Privacy::NonPrivate,
        Defences {
            weight_decay: Some(0.05),
            ..Defences::default()
        },
    );
    let (_, decayed) = train_model(&decayed_cfg, &tr, &te, &device, |_| {}).unwrap();
    assert!(
        norm(&decayed) < 0.5 * norm(&plain),
        "{} vs {}",
        norm(&decayed),
        norm(&plain)
    );

    let dropout_cfg = cfg(
        Privacy::NonPrivate,
        Defences {
            dropout: Some(0.3),
            ..Defences::default()
        },
    );
    let (report, dropped) = train_model(&dropout_cfg, &tr, &te, &device, |_| {}).unwrap();
    assert!(report.test_accuracy > 0.9, "{}", report.test_accuracy);
    assert_eq!(dropped.logits(&te).unwrap(), dropped.logits(&te).unwrap());
}

#[test]
fn should_refuse_defences_outside_their_domains() {
    let (tr, te) = data();
    let device = Device::flex();
    let refuse = |d: Defences, setting: &str| {
        let err = train_model(&cfg(Privacy::NonPrivate, d), &tr, &te, &device, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(setting), "{setting}: {err}");
    };
    refuse(
        Defences {
            label_smoothing: Some(1.0),
            ..Defences::default()
        },
        "label_smoothing",
    );
    refuse(
        Defences {
            confidence_penalty: Some(-1.0),
            ..Defences::default()
        },
        "confidence_penalty",
    );
    refuse(
        Defences {
            relaxloss: Some(RelaxLossSettings {
                alpha: 0.0,
                upper: 0.3,
            }),
            ..Defences::default()
        },
        "relaxloss",
    );
    refuse(
        Defences {
            label_smoothing: Some(0.1),
            confidence_penalty: Some(0.1),
            ..Defences::default()
        },
        "defences",
    );
    refuse(
        Defences {
            dropout: Some(1.0),
            ..Defences::default()
        },
        "dropout",
    );
    refuse(
        Defences {
            weight_decay: Some(f64::NAN),
            ..Defences::default()
        },
        "weight_decay",
    );
    refuse(
        Defences {
            early_stopping: Some(EarlyStopping {
                validation_fraction: 0.2,
                patience: 0,
            }),
            ..Defences::default()
        },
        "early_stopping",
    );
}

fn mist(settings: MistSettings) -> Defences {
    Defences {
        mist: Some(settings),
        ..Defences::default()
    }
}

/// MIST trains a model as accurate as plain training whose members' loss
/// stays closer to the non-members' (the generalisation gap an attack
/// reads), and a seeded run is reproducible.
#[test]
fn should_narrow_the_member_gap_with_mist() {
    let (tr, te) = data();
    let device = Device::flex();
    let plain_cfg = TrainConfig {
        epochs: 15,
        ..cfg(Privacy::NonPrivate, Defences::default())
    };
    let (_, plain) = train_model(&plain_cfg, &tr, &te, &device, |_| {}).unwrap();
    let mist_cfg = TrainConfig {
        defences: mist(MistSettings::default()),
        ..plain_cfg.clone()
    };
    let (report, defended) = train_model(&mist_cfg, &tr, &te, &device, |_| {}).unwrap();
    assert_eq!(report.defences.mist, Some(MistSettings::default()));
    assert_eq!(report.not_covered_by_epsilon.epoch_history.len(), 15);
    assert!(report.test_accuracy > 0.9, "{}", report.test_accuracy);
    let gap = |m: &TrainedModel| mean_loss(m, &te) - mean_loss(m, &tr);
    let (plain_gap, mist_gap) = (gap(&plain), gap(&defended));
    assert!(
        mist_gap < 0.7 * plain_gap,
        "MIST gap {mist_gap} vs plain {plain_gap}"
    );
    // Seeded: the same model again.
    let (_, again) = train_model(&mist_cfg, &tr, &te, &device, |_| {}).unwrap();
    assert_eq!(defended.logits(&te).unwrap(), again.logits(&te).unwrap());
}

/// Under DP-SGD every sub-model has its own engine; the reported ε is the
/// worst sub-model's, and equals an independent accountant's ε for its
/// sampling rate over rounds·(T₁ + T₂) epochs of its part.
#[test]
fn should_account_mist_per_sub_model() {
    let (tr, te) = data();
    let device = Device::flex();
    let settings = MistSettings {
        submodels: 2,
        ..MistSettings::default()
    };
    let rounds = 2;
    let sigma = 1.2;
    let run_cfg = TrainConfig {
        epochs: rounds,
        accountant: AccountantKind::Rdp,
        ..cfg(Privacy::NoiseMultiplier(sigma), mist(settings))
    };
    let (report, _) = train_model(&run_cfg, &tr, &te, &device, |_| {}).unwrap();
    let p = &report.privacy;
    // The worst part has at most N/2 records: q ≥ 2B/N.
    let q = p.sample_rate;
    assert!(q >= 2.0 * 64.0 / tr.len() as f64, "{q}");
    let steps_per_epoch = (1.0 / q).round() as u64;
    assert_eq!(p.steps, rounds as u64 * 2 * steps_per_epoch);
    let mut reference = RdpAccountant::new();
    reference.record(sigma, q, p.steps).unwrap();
    let want = reference.epsilon(1e-5).unwrap();
    let got = p.epsilon.unwrap();
    assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
    assert!(report.warnings.iter().any(|w| w.contains("MIST")));
    // A target ε is met by every sub-model.
    let target = TrainConfig {
        privacy: Privacy::TargetEpsilon(4.0),
        ..run_cfg
    };
    let (report, _) = train_model(&target, &tr, &te, &device, |_| {}).unwrap();
    let eps = report.privacy.epsilon.unwrap();
    assert!(eps <= 4.0 && eps > 3.5, "{eps}");
}

#[test]
fn should_refuse_mist_settings_that_cannot_work() {
    let (tr, te) = data();
    let device = Device::flex();
    let refuse = |c: TrainConfig, want: &str| {
        let err = train_model(&c, &tr, &te, &device, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("mist") && err.contains(want), "{want}: {err}");
    };
    let base = cfg(Privacy::NonPrivate, mist(MistSettings::default()));
    for (settings, want) in [
        (
            MistSettings {
                submodels: 1,
                ..MistSettings::default()
            },
            "2 sub-models",
        ),
        (
            MistSettings {
                cross_epochs: 0,
                ..MistSettings::default()
            },
            "epoch",
        ),
        (
            MistSettings {
                weight: f32::NAN,
                ..MistSettings::default()
            },
            "λ",
        ),
        (
            MistSettings {
                submodels: 200,
                ..MistSettings::default()
            },
            "too few",
        ),
    ] {
        refuse(
            TrainConfig {
                defences: mist(settings),
                ..base.clone()
            },
            want,
        );
    }
    refuse(
        TrainConfig {
            ema_decay: Some(0.9),
            ..base
        },
        "EMA",
    );
}

/// Batches of one (so empty Poisson batches are common) with and without
/// DP: the sub-models step on empty batches (noise only under DP) instead
/// of running their references on nothing.
#[test]
fn should_train_mist_on_batches_of_one() {
    let (tr, te) = data();
    let device = Device::flex();
    for privacy in [Privacy::NonPrivate, Privacy::TargetEpsilon(3.0)] {
        let c = TrainConfig {
            epochs: 1,
            batch_size: 1,
            ..cfg(
                privacy,
                mist(MistSettings {
                    submodels: 2,
                    ..MistSettings::default()
                }),
            )
        };
        let (report, _) = train_model(&c, &tr, &te, &device, |_| {}).unwrap();
        assert!(report.test_accuracy > 0.0);
    }
}
