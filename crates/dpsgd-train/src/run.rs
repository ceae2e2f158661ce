//! One training run, private or not, with a report: the engine behind
//! `dpsgd train` and `dpsgd sweep`.

use ::burn::optim::{
    AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig, momentum::MomentumConfig,
};
use ::burn::tensor::{Device, Int, Tensor};
use dpsgd_accountant::AccountantKind;
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::models::{Activation, Classifier, Cnn, Mlp};
use dpsgd_burn::{DatasetFingerprint, DpSgdConfig, PoissonSampler, PrivacyEngine};
use dpsgd_core::{Clipping, GradientMethod};
use dpsgd_data::Dataset;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::time::Instant;

/// Which model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Multinomial logistic regression (one linear layer).
    Logreg,
    /// MLP with one hidden layer of 128 units (see [`TrainConfig::activation`]).
    Mlp,
    /// The CNN of [`dpsgd_burn::models::Cnn`] (image data only).
    Cnn,
}

/// Which inner optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum 0.9.
    Sgd,
    /// Adam.
    Adam,
}

/// How much privacy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Privacy {
    /// No clipping, no noise (the same model and sampler, for comparison).
    NonPrivate,
    /// A fixed noise multiplier.
    NoiseMultiplier(f64),
    /// σ calibrated so that the whole run meets this ε at the run's δ.
    TargetEpsilon(f64),
}

/// Everything a run needs besides the data.
#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    /// Model.
    pub model: ModelKind,
    /// Activation between hidden layers (ignored by logistic regression).
    pub activation: Activation,
    /// Epochs (each `round(1/q)` Poisson steps).
    pub epochs: usize,
    /// Expected (Poisson) batch size.
    pub batch_size: usize,
    /// Clipping norm C.
    pub max_grad_norm: f64,
    /// Learning rate.
    pub lr: f64,
    /// Inner optimizer.
    pub optimizer: OptimizerKind,
    /// Privacy setting.
    pub privacy: Privacy,
    /// δ.
    pub delta: f64,
    /// Accountant.
    pub accountant: AccountantKind,
    /// Seed for initialisation, sampling and noise (then not secure).
    pub seed: Option<u64>,
    /// Accept δ ≥ 1/N (refused otherwise).
    pub allow_large_delta: bool,
    /// Compute ε for [`Progress::epsilon`] at the end of each epoch (off:
    /// ε is computed once, for the report).
    pub progress_epsilon: bool,
}

/// The default δ for a dataset of `n` examples: the largest power of ten
/// strictly below `1/n`, capped at 1e-5.
pub fn default_delta(n: usize) -> f64 {
    let inverse = 1.0 / n.max(1) as f64;
    let mut exponent = inverse.log10().floor();
    if 10f64.powf(exponent) >= inverse {
        exponent -= 1.0;
    }
    10f64.powf(exponent).min(1e-5)
}

/// Progress after a step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Steps planned.
    pub total_steps: u64,
    /// Mean loss of the last batch: an exact statistic of the private
    /// batch, **not covered by ε** (for debugging; do not publish it).
    pub loss: f64,
    /// ε spent so far, at the end of an epoch when
    /// [`TrainConfig::progress_epsilon`] is on (`None` otherwise, and
    /// without DP).
    pub epsilon: Option<f64>,
    /// Test accuracy, at the end of an epoch.
    pub test_accuracy: Option<f64>,
}

/// The outcome of a run: privacy report and metrics (serialised by the CLI).
///
/// # Privacy
///
/// ε covers the trained model and what is computed from it and public data
/// only: `test_accuracy` (the test split is not part of the private
/// training set), σ, q, steps. Everything computed from the private
/// training data directly is in [`TrainReport::not_covered_by_epsilon`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Accuracy on the test set.
    pub test_accuracy: f64,
    /// ε spent (null when not private).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// σ (null when not private).
    pub noise_multiplier: Option<f64>,
    /// q.
    pub sample_rate: f64,
    /// Steps taken.
    pub steps: u64,
    /// Epochs.
    pub epochs: usize,
    /// Wall-clock seconds of training (without data loading; a timing is
    /// not covered by ε either).
    pub wall_seconds: f64,
    /// Accountant.
    pub accountant: AccountantKind,
    /// Clipping mode and norm.
    pub clipping: Option<Clipping>,
    /// The sampling the run used (`poisson`, or what else happened).
    pub sampler: String,
    /// Seed, if any.
    pub seed: Option<u64>,
    /// Whether noise and sampling came from an OS-seeded CSPRNG.
    pub secure: bool,
    /// Training-set size N (public by assumption).
    pub dataset_size: usize,
    /// Test-set size.
    pub test_size: usize,
    /// Model.
    pub model: ModelKind,
    /// Activation between hidden layers.
    pub activation: Activation,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Expected batch size.
    pub batch_size: usize,
    /// How per-example gradients were computed.
    pub gradient_method: String,
    /// dpsgd version.
    pub crate_version: &'static str,
    /// Exact statistics of the private training data, released next to ε
    /// but **not covered by it**.
    pub not_covered_by_epsilon: NotCovered,
}

/// Statistics computed directly from the private training data: ε does not
/// cover them; publish them only if that is acceptable.
#[derive(Debug, Clone, Serialize)]
pub struct NotCovered {
    /// What this section is.
    pub note: &'static str,
    /// Accuracy on the training set.
    pub train_accuracy: f64,
    /// Mean training loss of the last epoch.
    pub final_loss: f64,
    /// Measured leakage: ROC AUC of the loss-threshold membership-inference
    /// attack, training set (members) vs test set (non-members); 0.5 = none.
    pub loss_threshold_auc: f64,
    /// Examples that contributed zero to a step because their loss or
    /// gradient norm was not finite.
    pub dropped_examples: u64,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration that cannot work (e.g. a CNN on tabular data).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// From the DP machinery.
    #[error(transparent)]
    Dp(#[from] dpsgd_core::Error),
    /// From the accountant.
    #[error(transparent)]
    Accountant(#[from] dpsgd_accountant::Error),
}

type Batch = (Tensor<4>, Tensor<1, Int>);

fn inner_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    match cfg.optimizer {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .init(),
        OptimizerKind::Adam => AdamConfig::new().init(),
    }
}

/// Trains `cfg.model` on `train`, evaluates on `test`, calling `progress`
/// after every step.
///
/// # Errors
///
/// Invalid settings (batch larger than the data, CNN on non-image data,
/// invalid ε/δ/σ/C), or a NaN loss during training.
pub fn train(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    progress: impl FnMut(Progress),
) -> Result<TrainReport, TrainError> {
    let device = device.clone().autodiff();
    if let Some(seed) = cfg.seed {
        device.seed(seed); // initialisation only; DP noise never uses burn's RNG
    }
    let classes = train.n_classes().max(test.n_classes());
    if let ModelKind::Cnn = cfg.model
        && let Some([_, h, w]) = train.image_shape()
        && (h < Cnn::MIN_SIZE || w < Cnn::MIN_SIZE)
    {
        return Err(TrainError::Config(format!(
            "--model cnn needs images of at least {0}×{0} pixels, the data has {h}×{w}; use --model mlp",
            Cnn::MIN_SIZE
        )));
    }
    match cfg.model {
        ModelKind::Logreg => run(
            cfg,
            train,
            test,
            &device,
            Mlp::new(&[train.n_features(), classes], &device),
            progress,
        ),
        ModelKind::Mlp => run(
            cfg,
            train,
            test,
            &device,
            Mlp::new(&[train.n_features(), 128, classes], &device).with_activation(cfg.activation),
            progress,
        ),
        ModelKind::Cnn => {
            let Some([1, h, w]) = train.image_shape() else {
                return Err(TrainError::Config(
                    "--model cnn needs single-channel image data (digits or idx:DIR)".into(),
                ));
            };
            run(
                cfg,
                train,
                test,
                &device,
                Cnn::new(h, w, classes, &device).with_activation(cfg.activation),
                progress,
            )
        }
    }
}

fn run<M: Classifier + 'static>(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    mut model: M,
    mut progress: impl FnMut(Progress),
) -> Result<TrainReport, TrainError> {
    let sampler = PoissonSampler::new(train.len(), cfg.batch_size)?;
    let q = sampler.sample_rate();
    let steps = cfg.epochs as u64 * sampler.steps_per_epoch();
    if steps == 0 {
        return Err(TrainError::Config("--epochs must be at least 1".into()));
    }
    let mut rng = match cfg.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s ^ 0x5eed),
        None => ChaCha20Rng::from_os_rng(),
    };
    let base = DpSgdConfig::new(cfg.max_grad_norm)
        .with_accountant(cfg.accountant)
        .with_delta(cfg.delta)
        .with_allow_large_delta(cfg.allow_large_delta)
        .with_dataset(DatasetFingerprint {
            size: train.len(),
            hash: train.content_hash(),
        });
    let dp_config = match cfg.privacy {
        Privacy::NonPrivate => None,
        Privacy::NoiseMultiplier(s) => Some(base.with_noise_multiplier(s)),
        Privacy::TargetEpsilon(e) => Some(base.with_target_epsilon(e, cfg.delta, cfg.epochs)),
    };
    let mut privacy = match dp_config {
        None => None,
        Some(dp) => {
            let dp = match cfg.seed {
                Some(seed) => dp.with_seed(seed),
                None => dp,
            };
            Some(dp.init(inner_optimizer(cfg), sampler)?)
        }
    };
    let sigma = privacy.as_ref().map(PrivacyEngine::noise_multiplier);
    let mut plain = inner_optimizer(cfg);
    let loss_fn = |m: &M, b: &Batch| cross_entropy_per_example(m.logits(b.0.clone()), b.1.clone());
    let start = Instant::now();
    let steps_per_epoch = sampler.steps_per_epoch();
    let (mut epoch_loss, mut epoch_examples, mut final_loss) = (0.0, 0usize, f64::NAN);
    for step in 1..=steps {
        let (indices, batch_loss) = match privacy.as_mut() {
            Some(p) => {
                let indices = p.sample_batch();
                let batch = crate::batch(train, &indices, device);
                model = p
                    .step(cfg.lr, model, &batch, loss_fn)
                    .map_err(|r| r.error)?;
                let loss = p
                    .last_step()
                    .map_or(0.0, |s| s.mean_loss * s.batch_size as f64);
                (indices, loss)
            }
            None => {
                let indices = sampler.sample(&mut rng);
                if indices.is_empty() {
                    (indices, 0.0)
                } else {
                    let batch = crate::batch(train, &indices, device);
                    let losses = loss_fn(&model, &batch);
                    let loss = f64::from(losses.clone().sum().into_scalar::<f32>());
                    if !loss.is_finite() {
                        return Err(dpsgd_core::Error::NonFinite {
                            what: "loss",
                            detail: format!("step {step}"),
                        }
                        .into());
                    }
                    let grads = GradientsParams::from_grads(losses.mean().backward(), &model);
                    model = plain.step(cfg.lr, model, grads);
                    (indices, loss)
                }
            }
        };
        epoch_loss += batch_loss;
        epoch_examples += indices.len();
        let end_of_epoch = step % steps_per_epoch == 0 || step == steps;
        // ε at most once per epoch, and only when someone shows it.
        let epsilon = match &privacy {
            Some(p) if end_of_epoch && cfg.progress_epsilon => Some(p.epsilon()?),
            _ => None,
        };
        let test_accuracy = end_of_epoch.then(|| crate::accuracy(&model, test, device));
        if end_of_epoch {
            final_loss = epoch_loss / epoch_examples.max(1) as f64;
            epoch_loss = 0.0;
            epoch_examples = 0;
        }
        progress(Progress {
            step,
            total_steps: steps,
            loss: batch_loss / indices.len().max(1) as f64,
            epsilon,
            test_accuracy,
        });
    }
    let wall_seconds = start.elapsed().as_secs_f64();
    let auc = loss_threshold_auc(
        &per_example_losses(&model, train, device),
        &per_example_losses(&model, test, device),
    );
    Ok(TrainReport {
        not_covered_by_epsilon: NotCovered {
            note: "exact statistics of the private training data: not covered by epsilon",
            train_accuracy: crate::accuracy(&model, train, device),
            final_loss,
            loss_threshold_auc: auc,
            dropped_examples: privacy.as_ref().map_or(0, PrivacyEngine::dropped_examples),
        },
        test_accuracy: crate::accuracy(&model, test, device),
        epsilon: privacy.as_ref().map(PrivacyEngine::epsilon).transpose()?,
        delta: cfg.delta,
        noise_multiplier: sigma,
        sample_rate: q,
        steps,
        epochs: cfg.epochs,
        wall_seconds,
        accountant: cfg.accountant,
        clipping: privacy.as_ref().map(|p| p.optimizer().clipping().clone()),
        sampler: privacy
            .as_ref()
            .map_or_else(|| "poisson".to_owned(), PrivacyEngine::sampler_used),
        seed: cfg.seed,
        secure: privacy
            .as_ref()
            .map_or(cfg.seed.is_none(), |p| p.optimizer().is_secure()),
        dataset_size: train.len(),
        test_size: test.len(),
        model: cfg.model,
        activation: cfg.activation,
        optimizer: cfg.optimizer,
        lr: cfg.lr,
        batch_size: cfg.batch_size,
        gradient_method: match privacy
            .as_ref()
            .and_then(|p| p.last_step())
            .map(|s| &s.method)
        {
            None => "non-private".into(),
            Some(GradientMethod::Fallback { reason }) => format!("fallback: {reason}"),
            Some(_) => "fast path (ghost norms, book-keeping)".into(),
        },
        crate_version: env!("CARGO_PKG_VERSION"),
    })
}

/// Per-example losses of `model` on `data` (no autodiff), in chunks.
pub fn per_example_losses<M: Classifier>(model: &M, data: &Dataset, device: &Device) -> Vec<f32> {
    let device = device.clone().without_autodiff();
    // `valid()` detaches the parameters from autodiff; `to_device` alone
    // would keep them tracked, and every evaluation batch's activations
    // would stay in the never-consumed graph (≈ 60 MB per 1024 MNIST
    // images with the CNN, 9 GB after a training run's final evaluation).
    let model = model.valid();
    let all: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len());
    for chunk in all.chunks(1024) {
        let (x, y) = crate::batch(data, chunk, &device);
        out.extend(
            cross_entropy_per_example(model.logits(x), y)
                .into_data()
                .iter::<f32>(),
        );
    }
    out
}

/// ROC AUC of the loss-threshold membership-inference attack (Yeom et al.
/// 2018): the probability that a random member (training example) has a
/// lower loss than a random non-member (test example), ties counting half.
/// 0.5 means no measurable leakage.
pub fn loss_threshold_auc(member_losses: &[f32], non_member_losses: &[f32]) -> f64 {
    if member_losses.is_empty() || non_member_losses.is_empty() {
        return f64::NAN;
    }
    // Mann–Whitney U with mid-ranks over the pooled losses.
    let mut pooled: Vec<(f32, bool)> = member_losses
        .iter()
        .map(|&l| (l, true))
        .chain(non_member_losses.iter().map(|&l| (l, false)))
        .collect();
    pooled.sort_by(|a, b| b.0.total_cmp(&a.0)); // highest loss first: rank 1
    let mut rank_sum_members = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        let mid_rank = (i + j + 1) as f64 / 2.0;
        rank_sum_members += pooled[i..j].iter().filter(|p| p.1).count() as f64 * mid_rank;
        i = j;
    }
    let (m, n) = (member_losses.len() as f64, non_member_losses.len() as f64);
    (rank_sum_members - m * (m + 1.0) / 2.0) / (m * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_compute_auc_as_mann_whitney() {
        // Members all below non-members: perfect attack.
        assert_eq!(loss_threshold_auc(&[0.1, 0.2], &[0.5, 0.9, 1.0]), 1.0);
        assert_eq!(loss_threshold_auc(&[0.5, 0.9], &[0.1, 0.2]), 0.0);
        // Identical distributions with ties: 0.5.
        assert_eq!(loss_threshold_auc(&[0.3, 0.3], &[0.3, 0.3]), 0.5);
        // One of four pairs ordered the wrong way: 0.75.
        assert_eq!(loss_threshold_auc(&[0.1, 0.6], &[0.5, 0.7]), 0.75);
    }

    #[test]
    fn should_pick_the_default_delta() {
        assert_eq!(default_delta(1437), 1e-5);
        assert_eq!(default_delta(60_000), 1e-5);
        assert_eq!(default_delta(600_000), 1e-6);
        assert_eq!(default_delta(2_000_000), 1e-7);
        // Strictly below 1/N, also when 1/N is a power of ten.
        assert_eq!(default_delta(100_000), 1e-6);
        assert_eq!(default_delta(100), 1e-5);
    }
}
