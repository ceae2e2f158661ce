//! The empirical defences of issue 14 as training options, with and
//! without DP-SGD: each does what it says on a real data set.

use burn::tensor::Device;
use dpsgd_audit::scores::{ScoreKind, score_logits};
use dpsgd_data::{Dataset, Scaling, digits};
use dpsgd_train::{
    Defences, EarlyStopping, ModelKind, OptimizerKind, Privacy, RelaxLossSettings, TrainConfig,
    TrainedModel, train_model,
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
