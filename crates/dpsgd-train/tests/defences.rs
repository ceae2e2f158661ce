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
/// epochs without improvement and releases the best epoch's model; under
/// DP-SGD the report accounts for the planned steps, whether or when the
/// run stopped (issue 24: the stop is chosen on validation records, a
/// function of the released models: post-processing of the planned run).
#[test]
fn should_stop_early_keep_the_best_epoch_and_account_for_the_plan() {
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
    // Without DP there is no plan to account for: the epochs trained.
    assert_eq!(report.epochs, es.stopped_at_epoch);
    // About 20% of the 898 training records.
    assert!(
        (es.validation_size as f64 - 0.2 * tr.len() as f64).abs() < 60.0,
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

    let sigma = 1.0;
    let mut dp = cfg(Privacy::NoiseMultiplier(sigma), stopping);
    dp.epochs = 200;
    dp.accountant = AccountantKind::Rdp;
    let (report, _) = train_model(&dp, &tr, &te, &device, |_| {}).unwrap();
    let es = report.early_stopping.unwrap();
    assert!(es.stopped_early && es.stopped_at_epoch < 200, "{es:?}");
    // The stop and the epochs trained are in `early_stopping`; the
    // accounting is the plan's: 200 epochs, as an independent accountant
    // computes them.
    assert_eq!(report.epochs, 200);
    let p = &report.privacy;
    let steps_per_epoch = (1.0 / p.sample_rate).round() as u64;
    assert_eq!(p.steps, 200 * steps_per_epoch);
    let mut reference = RdpAccountant::new();
    reference.record(sigma, p.sample_rate, p.steps).unwrap();
    let want = reference.epsilon(p.delta).unwrap();
    let got = p.epsilon.unwrap();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    // Epsilon spent at the stop is less: the history shows it, the report
    // does not use it.
    let spent = report
        .not_covered_by_epsilon
        .epoch_history
        .last()
        .and_then(|r| r.epsilon);
    assert!(spent.is_none_or(|e| e < got));
    // Machine-readable: the validation records are not covered.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["early_stopping"]["validation_covered_by_epsilon"],
        serde_json::Value::Bool(false)
    );
    assert!(
        json["early_stopping"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("planned steps") && n.contains("validation records"))
    );
    // q is the plan's too: B over the records left for training.
    let planned =
        dpsgd_burn::PoissonSampler::new(tr.len() - es.validation_size, dp.batch_size).unwrap();
    assert_eq!(planned.sample_rate(), p.sample_rate);
    assert_eq!(planned.steps_per_epoch() * 200, p.steps);
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
    assert_mist_counts_outside_the_guarantee(&report, tr.len(), 2);
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
        assert_eq!(report.status, "completed");
        let p = &report.privacy;
        match privacy {
            Privacy::NonPrivate => assert_eq!(p.epsilon, None),
            _ => {
                // Every Poisson draw is a step, empty or not: the steps of
                // the worst sub-model's plan (a whole number of epochs of
                // round(1/q) draws each), and its ε is an independent
                // accountant's for (σ, q, those steps).
                let per_epoch = (1.0 / p.sample_rate).round() as u64;
                assert!(p.steps > 0 && p.steps % per_epoch == 0, "{p:?}");
                let mut reference = RdpAccountant::new();
                reference
                    .record(p.noise_multiplier.unwrap(), p.sample_rate, p.steps)
                    .unwrap();
                let want = reference.epsilon(p.delta).unwrap();
                let got = p.epsilon.unwrap();
                assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
                assert!(got <= 3.0 + 1e-9, "{got}");
            }
        }
    }
}

/// MIST's per-part counts (records, dropped examples) are exact statistics
/// of the private data: only under `not_covered_by_epsilon`, never in
/// `mist` or in a warning (issue 24).
fn assert_mist_counts_outside_the_guarantee(
    report: &dpsgd_train::TrainReport,
    n: usize,
    submodels: usize,
) {
    let json = serde_json::to_value(report).unwrap();
    let subs = json["mist"].as_array().unwrap();
    assert_eq!(subs.len(), submodels);
    for sub in subs {
        let fields: Vec<&str> = sub
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, ["epsilon", "sample_rate", "steps"], "{sub}");
    }
    let parts = json["not_covered_by_epsilon"]["mist_submodels"]
        .as_array()
        .unwrap();
    assert_eq!(parts.len(), submodels);
    let records: Vec<u64> = parts
        .iter()
        .map(|p| p["records"].as_u64().unwrap())
        .collect();
    assert_eq!(records.iter().sum::<u64>(), n as u64);
    let dropped: u64 = parts
        .iter()
        .map(|p| p["dropped_examples"].as_u64().unwrap())
        .sum();
    assert_eq!(
        json["not_covered_by_epsilon"]["dropped_examples"].as_u64(),
        Some(dropped)
    );
    for w in &report.warnings {
        let numbers: Vec<u64> = w
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|run| run.parse().ok())
            .collect();
        assert!(
            !w.contains("records)") && !records.iter().any(|r| numbers.contains(r)),
            "a warning names the parts' sizes: {w}"
        );
    }
}

/// The parts' counts move under `not_covered_by_epsilon` without DP too.
#[test]
fn should_keep_mist_part_sizes_outside_the_guarantee() {
    let (tr, te) = data();
    let c = TrainConfig {
        epochs: 1,
        ..cfg(
            Privacy::NonPrivate,
            mist(MistSettings {
                submodels: 3,
                ..MistSettings::default()
            }),
        )
    };
    let (report, _) = train_model(&c, &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert_mist_counts_outside_the_guarantee(&report, tr.len(), 3);
}

/// Under MIST a record's guarantee is its sub-model's, on its part alone:
/// δ is checked against the whole data set and against the smallest part
/// (the old check was each engine's own, against its part only, so a δ ≥
/// 1/N passed), and refused with a configuration error unless allowed;
/// allowed, one warning says so without naming a part's size.
#[test]
fn should_check_delta_against_the_data_and_every_mist_part() {
    let (tr, te) = data();
    let device = Device::flex();
    let n = tr.len() as f64;
    let base = TrainConfig {
        epochs: 1,
        ..cfg(
            Privacy::NoiseMultiplier(1.0),
            mist(MistSettings {
                submodels: 4,
                ..MistSettings::default()
            }),
        )
    };
    // 1/N ≤ δ < 1/(smallest part, about N/4), and δ ≥ 1/(smallest part).
    for (delta, want) in [(1.5 / n, "1/N"), (8.0 / n, "smallest")] {
        let c = TrainConfig {
            delta,
            ..base.clone()
        };
        let err = train_model(&c, &tr, &te, &device, |_| {}).unwrap_err();
        let dpsgd_train::TrainError::Config(config) = &err else {
            panic!("δ = {delta}: expected a configuration error, got {err}");
        };
        assert_eq!(config.setting, "delta", "{err}");
        assert!(
            config.message.contains("MIST") && config.message.contains(want),
            "{err}"
        );
        let allowed = TrainConfig {
            allow_large_delta: true,
            ..c
        };
        let (report, _) = train_model(&allowed, &tr, &te, &device, |_| {}).unwrap();
        let delta_warnings: Vec<&String> = report
            .warnings
            .iter()
            .filter(|w| w.starts_with("δ"))
            .collect();
        assert_eq!(delta_warnings.len(), 1, "{:?}", report.warnings);
        assert!(delta_warnings[0].contains(want), "{}", delta_warnings[0]);
        assert_mist_counts_outside_the_guarantee(&report, tr.len(), 4);
    }
    // Below 1/N: accepted without a warning.
    let (report, _) = train_model(&base, &tr, &te, &device, |_| {}).unwrap();
    assert!(
        !report.warnings.iter().any(|w| w.starts_with("δ")),
        "{:?}",
        report.warnings
    );
}

/// With MIST, early stopping stops between rounds; under DP every
/// sub-model's steps and ε are its plan's (rounds·(T₁ + T₂) epochs of its
/// part), whether or not the run stopped before them.
#[test]
fn should_account_mist_with_early_stopping_over_the_plan() {
    let (tr, te) = data();
    let rounds = 12;
    let c = TrainConfig {
        epochs: rounds,
        accountant: AccountantKind::Rdp,
        defences: Defences {
            early_stopping: Some(EarlyStopping {
                validation_fraction: 0.2,
                patience: 1,
            }),
            ..mist(MistSettings {
                submodels: 2,
                ..MistSettings::default()
            })
        },
        ..cfg(Privacy::NoiseMultiplier(1.0), Defences::default())
    };
    let (report, _) = train_model(&c, &tr, &te, &Device::flex(), |_| {}).unwrap();
    let es = report.early_stopping.unwrap();
    assert!(es.stopped_early && es.stopped_at_epoch < rounds, "{es:?}");
    assert_eq!(report.epochs, rounds, "{es:?}");
    let subs = report.mist.as_ref().unwrap();
    let mut worst: f64 = 0.0;
    for sub in subs {
        let steps_per_epoch = (1.0 / sub.sample_rate).round() as u64;
        assert_eq!(sub.steps, rounds as u64 * 2 * steps_per_epoch, "{sub:?}");
        let mut reference = RdpAccountant::new();
        reference.record(1.0, sub.sample_rate, sub.steps).unwrap();
        let want = reference.epsilon(1e-5).unwrap();
        let got = sub.epsilon.unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
        worst = worst.max(got);
    }
    assert_eq!(report.privacy.epsilon, Some(worst));
}
