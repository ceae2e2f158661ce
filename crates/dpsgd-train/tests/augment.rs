//! Augmentation multiplicity through the training loop (issue 12).

use burn::tensor::Device;
use dpsgd_data::{Dataset, Scaling, digits};
use dpsgd_train::{Features, ModelKind, Privacy, TrainConfig, TrainError, train};

/// burn's seeded initialisation draws from one generator per device: tests
/// of this file that train run one at a time, so that a seeded run is
/// reproducible while the others run.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn data() -> (Dataset, Dataset) {
    let (mut tr, mut te) = digits().split(0.2, 0).unwrap();
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    (tr, te)
}

fn cnn(k: usize) -> TrainConfig {
    TrainConfig {
        model: ModelKind::Cnn,
        // Enough steps to leave chance (after one epoch the CNN still
        // guesses: 10.3% with or without views).
        epochs: 6,
        seed: Some(2),
        privacy: Privacy::NoiseMultiplier(1.0),
        augment_multiplicity: k,
        ..TrainConfig::default()
    }
}

#[test]
fn should_train_on_k_views_per_example_through_the_fast_path() {
    let _one_at_a_time = TRAINING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (tr, te) = data();
    let r = train(&cnn(3), &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert_eq!(r.augment_multiplicity, 3);
    assert!(
        r.gradient_method.starts_with("fast path"),
        "{}",
        r.gradient_method
    );
    // It learns: above chance (1/10) by more than three binomial standard
    // deviations of the test set's accuracy at chance (a guessing model
    // passes with probability ≈ 0.1%).
    let n = te.len() as f64;
    let chance = 0.1;
    let margin = 3.0 * (chance * (1.0 - chance) / n).sqrt();
    assert!(
        r.test_accuracy > chance + margin,
        "test accuracy {} is not above chance ({chance} + {margin:.3})",
        r.test_accuracy
    );
    // Seeded runs are reproducible, views included.
    let again = train(&cnn(3), &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert_eq!(r.test_accuracy, again.test_accuracy);
    // ε depends on the sampling and σ only, not on the views.
    let plain = train(&cnn(1), &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert_eq!(r.privacy.epsilon, plain.privacy.epsilon);
}

#[test]
fn should_refuse_augmentation_where_it_cannot_apply() {
    let _one_at_a_time = TRAINING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (tr, te) = data();
    let table = Dataset::new(tr.features().to_vec(), tr.labels().to_vec(), 64, 10).unwrap();
    let cases = [
        (cnn(0), &tr),
        (
            TrainConfig {
                model: ModelKind::Mlp,
                ..cnn(2)
            },
            &table,
        ),
        (
            TrainConfig {
                features: Features::Scatter { groups: 27 },
                ..cnn(2)
            },
            &tr,
        ),
    ];
    for (cfg, train_set) in cases {
        match train(&cfg, train_set, &te, &Device::flex(), |_| {}) {
            Err(TrainError::Config(c)) => assert_eq!(c.setting, "augment_multiplicity", "{c}"),
            other => panic!(
                "expected a refusal, got {:?}",
                other.map(|r| r.test_accuracy)
            ),
        }
    }
}

/// Weight standardisation through the training loop: the fast path still
/// computes the per-example gradients, and the report says it was on.
#[test]
fn should_train_a_weight_standardised_cnn_through_the_fast_path() {
    let _one_at_a_time = TRAINING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (tr, te) = data();
    let cfg = TrainConfig {
        weight_standardization: true,
        ..cnn(1)
    };
    let r = train(&cfg, &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert!(r.weight_standardization);
    assert!(
        r.gradient_method.starts_with("fast path"),
        "{}",
        r.gradient_method
    );
    let plain = train(&cnn(1), &tr, &te, &Device::flex(), |_| {}).unwrap();
    assert!(!plain.weight_standardization);
    // Another model: the same run (the flag only concerns convolutions).
    let mlp = TrainConfig {
        model: ModelKind::Mlp,
        ..cfg
    };
    assert!(
        !train(&mlp, &tr, &te, &Device::flex(), |_| {})
            .unwrap()
            .weight_standardization
    );
}
