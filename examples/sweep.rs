//! The privacy–utility trade-off on the embedded digits: one training per
//! ε budget, accuracy and measured leakage side by side.
//!
//! Run: `cargo run --release --example sweep`
use burn::tensor::Device;
use dpsgd::accountant::AccountantKind;
use dpsgd::data::Scaling;
use dpsgd::models::Activation;
use dpsgd::train::{
    ClippingMode, ConvStrategy, DEFAULT_HIDDEN, ModelKind, OptimizerKind, Privacy, TrainConfig,
    default_delta, train,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut tr, mut te) = dpsgd::data::digits().split(0.2, 0)?;
    tr.apply(&Scaling::Divide(16.0));
    te.apply(&Scaling::Divide(16.0));
    println!(
        "{:>8} {:>8} {:>10} {:>8} {:>8}",
        "target ε", "ε", "σ", "test acc", "MIA AUC"
    );
    for target in [0.5, 1.0, 2.0, 4.0, 8.0, f64::INFINITY] {
        let cfg = TrainConfig {
            model: ModelKind::Mlp,
            activation: Activation::Relu,
            epochs: 50,
            batch_size: 128,
            max_grad_norm: 1.0,
            lr: 1e-2,
            optimizer: OptimizerKind::Adam,
            privacy: if target.is_finite() {
                Privacy::TargetEpsilon(target)
            } else {
                Privacy::NonPrivate
            },
            delta: default_delta(tr.len()),
            accountant: AccountantKind::Pld,
            seed: Some(1),
            allow_large_delta: false,
            clipping: ClippingMode::Flat,
            hidden: DEFAULT_HIDDEN.to_vec(),
            max_physical_batch_size: None,
            conv_strategy: ConvStrategy::Auto,
            save_model: None,
            checkpoint_dir: None,
            resume: false,
            progress_epsilon: false,
            ..TrainConfig::default()
        };
        let r = train(&cfg, &tr, &te, &Device::flex(), |_| {})?;
        // The run's warnings (the slow fallback among them) are the caller's to show.
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{:>8} {:>8} {:>10} {:>7.2}% {:>8.3}",
            target,
            r.privacy.epsilon.map_or("∞".into(), |e| format!("{e:.2}")),
            r.privacy
                .noise_multiplier
                .map_or("–".into(), |s| format!("{s:.3}")),
            100.0 * r.test_accuracy,
            // Measured on the training data itself: not covered by ε.
            r.not_covered_by_epsilon.loss_threshold_auc
        );
    }
    Ok(())
}
