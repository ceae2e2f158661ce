//! What a run is asked to do: [`TrainConfig`] and its parts, and the
//! [`Progress`] reported after each step.

use crate::defences::Defences;
use crate::models::Activation;
use dpsgd_accountant::AccountantKind;
pub use dpsgd_burn::PrivacyUnit;
use serde::Serialize;

pub use dpsgd_burn::layers::ConvStrategy;

/// Which model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Multinomial logistic regression (one linear layer).
    Logreg,
    /// MLP with hidden layers of [`TrainConfig::hidden`] units (one of 128
    /// by default; see [`TrainConfig::activation`]).
    Mlp,
    /// The CNN of [`crate::models::Cnn`] (image data only).
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

/// How per-example gradients are clipped (see [`dpsgd_core::Clipping`]),
/// all at the run's [`TrainConfig::max_grad_norm`] C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClippingMode {
    /// The whole gradient of each example to norm C.
    #[default]
    Flat,
    /// Each layer to `C/√L` (L layers), so the whole gradient is within C.
    PerLayer,
    /// Automatic clipping (Bu et al.): every gradient normalised,
    /// `C/(‖g‖ + 0.01)`.
    Automatic,
    /// Adaptive clipping (Andrew et al.): C starts at the given value and
    /// tracks the median norm (η = 0.2), the unclipped count released with
    /// noise of standard deviation batch size / 20 (accounted for).
    Adaptive,
}

impl ClippingMode {
    /// The spelling of `--clipping`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flat => "flat",
            Self::PerLayer => "per-layer",
            Self::Automatic => "automatic",
            Self::Adaptive => "adaptive",
        }
    }
}

impl std::str::FromStr for ClippingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flat" => Ok(Self::Flat),
            "per-layer" => Ok(Self::PerLayer),
            "automatic" => Ok(Self::Automatic),
            "adaptive" => Ok(Self::Adaptive),
            _ => Err(format!(
                "`{s}`: expected flat, per-layer, automatic or adaptive"
            )),
        }
    }
}

/// What the model sees: the data's features, or data-independent features
/// computed from them (no privacy cost: each example's features depend on
/// that example alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Features {
    /// The data's features as loaded.
    #[default]
    Raw,
    /// ScatterNet features (Tramèr & Boneh 2021): a wavelet scattering
    /// transform ([`dpsgd_data::Scattering`], J = 2, L = 8: 81 channels at a
    /// quarter of the image side per input channel), then per-example group
    /// normalisation in `groups` groups of channels. Image data only.
    Scatter {
        /// Groups of the per-example group normalisation (divides the
        /// number of channels; Tramèr & Boneh use 27 for MNIST).
        groups: usize,
    },
}

impl Features {
    /// ScatterNet features with the published group normalisation.
    pub const SCATTER: Self = Self::Scatter { groups: 27 };
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

/// How long a DP step waits for remote workers by default
/// ([`TrainConfig::worker_timeout`]).
pub const DEFAULT_WORKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The shared secret of remote data-parallel workers (`dpsgd worker
/// --token-file`): never serialised, and `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerToken(pub String);

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerToken(…)")
    }
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
    /// Clipping policy (default: flat).
    pub clipping: ClippingMode,
    /// Hidden layer sizes of the MLP (default: `[128]`; ignored by the
    /// other models).
    pub hidden: Vec<usize>,
    /// Largest physical batch: a larger Poisson batch is processed in
    /// chunks of at most this many examples (same result, less memory);
    /// `None`: the whole batch at once.
    pub max_physical_batch_size: Option<usize>,
    /// Data-parallel workers for the DP step (1: none): the Poisson batch
    /// is sampled once, clipped in fixed shards by this many workers on
    /// copies of the training device, reduced, and noised once
    /// (`dpsgd_burn::parallel`). The result does not depend on the number.
    pub devices: usize,
    /// With `devices > 1`: sum the workers' parts with burn's collective
    /// all-reduce (CUDA GPUs only in burn 0.22; refused elsewhere) instead
    /// of on the coordinator.
    #[serde(default)]
    pub all_reduce: bool,
    /// Data-parallel workers in other processes or hosts, each
    /// `ws://HOST:PORT` (a `dpsgd worker`; feature `distributed`): the DP
    /// step's shards are clipped there, the reduction, the noise, the
    /// optimizer step and the accounting stay here (the same protocol as
    /// [`TrainConfig::devices`], which must then be 1). Empty: none.
    #[serde(default)]
    pub remote_workers: Vec<String>,
    /// The credential the remote workers require (not serialised, not
    /// shown by `Debug`).
    #[serde(skip)]
    pub worker_token: Option<WorkerToken>,
    /// With remote workers: how long a DP step waits for a sign of life
    /// from each (its start, then each shard it answers); one silent for
    /// that long is lost (a stopped process or a silently dropped network
    /// fails the step instead of hanging the run). `None`: as long as they
    /// take. Default: 300 s. Not serialised (it may change between a run
    /// and its resume).
    #[serde(skip)]
    pub worker_timeout: Option<std::time::Duration>,
    /// With remote workers: whether a lost worker stops the run (default;
    /// the step is not taken, the last checkpoint stays) or the run goes
    /// on without it, the same step redone on the others
    /// ([`dpsgd_burn::parallel::OnWorkerLoss`]). Not serialised.
    #[serde(skip)]
    pub on_worker_loss: dpsgd_burn::parallel::OnWorkerLoss,
    /// How convolutions compute per-example gradients (default: auto).
    pub conv_strategy: ConvStrategy,
    /// Save the trained model here at the end (burn's record bytes, as
    /// `ModuleRecord::into_bytes`; load them into a model built with the
    /// same architecture), written atomically. `None`: not saved.
    pub save_model: Option<std::path::PathBuf>,
    /// Checkpoint a private run here at the end of every epoch, in one file
    /// [`CHECKPOINT_FILE`] (a secret, mode 0600) replaced atomically: the
    /// engine's checkpoint
    /// ([`dpsgd_burn::PrivacyEngine::save_checkpoint_with`]) with the loop's
    /// state (epochs done, epoch history, settings) inside, so the two are
    /// never at different steps. The folder is created if missing and
    /// locked for the run ([`dpsgd_burn::io::FolderLock`]: a second run
    /// into it is refused at once); a folder that already holds a
    /// checkpoint is refused unless [`TrainConfig::resume`]. Non-private
    /// runs are refused. `None`: no checkpoints.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Continue the run checkpointed in [`TrainConfig::checkpoint_dir`]
    /// from its next epoch: same data (checked by fingerprint) and same
    /// settings, except `epochs` (which may grow, for a noise multiplier;
    /// a target ε was calibrated for its epochs), `save_model` and
    /// `progress_epsilon`. Nothing privacy-relevant is read from the file:
    /// the engine these settings give is rebuilt and the checkpoint must
    /// match it ([`dpsgd_burn::DpSgdConfig::resume`]), and its epochs must
    /// add up to its steps, so ε in the report is that of the settings over
    /// all steps, before and after the resume, and of the steps a failed
    /// run with remote workers had shown them before the resume redid them
    /// (`TrainReport::redone_steps`, docs/distributed.md "Resuming"). A
    /// seeded run resumes exactly (its augmentation views are drawn per
    /// step).
    pub resume: bool,
    /// Compute ε at the end of each epoch, for [`Progress::epsilon`] and
    /// the report's epoch history (off: ε is computed once, for the report).
    pub progress_epsilon: bool,
    /// Features the model sees (default: the data's own).
    pub features: Features,
    /// Exponential moving average of the parameters (decay β, with the
    /// warm-up `min(β, (1+t)/(10+t))` at step t): the averaged model is the
    /// one evaluated, reported and saved. Post-processing of the private
    /// iterates, so free in ε (De et al. 2022). `None`: the last iterate.
    pub ema_decay: Option<f64>,
    /// Augmentation multiplicity (De et al. 2022): each sampled image is
    /// trained on as this many random translations of itself (up to
    /// [`crate::augment::max_shift`] pixels), the mean of their gradients
    /// clipped as one. 1: no augmentation. Raw image features only; costs
    /// this many times the compute per step.
    pub augment_multiplicity: usize,
    /// Weight standardisation of the CNN's convolutions (Qiao et al. 2019;
    /// De et al. 2022): each output channel's kernel is used standardised
    /// to mean 0, variance 1. Ignored by the other models.
    pub weight_standardization: bool,
    /// Name of the recipe the settings came from (see
    /// [`crate::Recipe`]), for the report; `None`: set by hand.
    pub recipe: Option<String>,
    /// Empirical defences against membership inference, alone or on top
    /// of DP-SGD (default: none).
    pub defences: Defences,
    /// The unit of privacy (default: one record). At user level
    /// ([`PrivacyUnit::User`]) the training data must carry user ids
    /// ([`Dataset::with_users`](dpsgd_data::Dataset::with_users)), the
    /// Poisson batches are batches of users (`batch_size` is the expected
    /// number of users), each sampled user contributes the mean gradient
    /// of at most K of their records, clipped as one, and ε protects one
    /// user and all their records ([`dpsgd_burn::users`]).
    pub privacy_unit: PrivacyUnit,
}

/// The checkpoint's file name in [`TrainConfig::checkpoint_dir`].
pub const CHECKPOINT_FILE: &str = "checkpoint.dpsgd";

/// The MLP's hidden layer sizes unless [`TrainConfig::hidden`] says
/// otherwise.
pub const DEFAULT_HIDDEN: [usize; 1] = [128];

/// The public N of `data` under `unit`: its users at user level (their
/// number of records is then a statistic of the private data), its
/// records otherwise (and for data without user ids, which user-level
/// training refuses).
pub fn privacy_units(unit: PrivacyUnit, data: &dpsgd_data::Dataset) -> usize {
    match (unit, data.num_users()) {
        (PrivacyUnit::User { .. }, Some(users)) => users,
        _ => data.len(),
    }
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
    /// The epoch this step belongs to, from 1.
    pub epoch: usize,
    /// Mean training loss of the epoch, at its end: an exact statistic of
    /// the private data, **not covered by ε** (as [`Progress::loss`]).
    pub epoch_loss: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
