//! The outcome of a run: privacy report and metrics.

use crate::config::{ClippingMode, ConvStrategy, Features, ModelKind, OptimizerKind};
use crate::models::Activation;
use dpsgd_burn::PrivacyReport;
use serde::Serialize;

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
    /// ε, δ, σ, q, steps, accountant, clipping, sampler, seed, secure flag,
    /// N and version, serialised as fields of the report itself. Without
    /// DP it is [`PrivacyReport::non_private`]: `epsilon`, `noise_multiplier`,
    /// `accountant` and `clipping` are null and `secure` is false.
    #[serde(flatten)]
    pub privacy: PrivacyReport,
    /// Epochs: under DP the planned epochs, which `steps` and ε cover
    /// whether or not early stopping stopped the run before them (where it
    /// stopped is in [`TrainReport::early_stopping`]); without DP the
    /// epochs trained. A diverged run's partial report: the epochs it
    /// completed (its model's).
    pub epochs: usize,
    /// Wall-clock seconds of training (without data loading; a timing is
    /// not covered by ε either), including the test evaluation after each
    /// epoch.
    pub wall_seconds: f64,
    /// Seconds spent evaluating: the test accuracy after each epoch (part
    /// of `wall_seconds`) and the final training-set accuracy and leakage
    /// measurement (after it).
    pub eval_seconds: f64,
    /// Test-set size.
    pub test_size: usize,
    /// Steps redone after a resume whose first outcome workers outside the
    /// process had already seen (OS-seeded runs only): charged to ε, and
    /// included in `steps` (docs/distributed.md, "Resuming"). 0 otherwise.
    pub redone_steps: u64,
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
    /// Clipping policy (`None` without DP); its parameters are in the
    /// privacy report's `clipping`.
    pub clipping_mode: Option<ClippingMode>,
    /// Hidden layer sizes of the MLP (empty for logistic regression, `None`
    /// for the CNN).
    pub hidden: Option<Vec<usize>>,
    /// Largest physical batch (`None`: the whole batch at once).
    pub max_physical_batch_size: Option<usize>,
    /// Data-parallel workers of the DP step (1: none).
    pub devices: usize,
    /// Convolution strategy of the DP engine.
    pub conv_strategy: ConvStrategy,
    /// How per-example gradients were computed.
    pub gradient_method: String,
    /// The recipe the settings came from ([`crate::Recipe`]; `None`: set
    /// by hand).
    pub recipe: Option<String>,
    /// Features the model saw.
    pub features: Features,
    /// Seconds spent computing them (ScatterNet; 0 for raw features), not
    /// part of `wall_seconds`.
    pub feature_seconds: f64,
    /// Parameter averaging: the EMA decay, when the reported model is the
    /// average of the iterates.
    pub ema_decay: Option<f64>,
    /// Augmentation multiplicity (views per example; 1: none).
    pub augment_multiplicity: usize,
    /// Whether the CNN's convolutions used weight standardisation.
    pub weight_standardization: bool,
    /// The empirical defences the run trained with.
    pub defences: crate::defences::Defences,
    /// Early stopping's outcome, when on.
    pub early_stopping: Option<EarlyStopReport>,
    /// MIST's sub-models, each on its own part of the data with its own
    /// privacy engine. The report's ε is the largest of theirs, and its
    /// accounting fields (dataset size, sampling rate, steps, σ) are that
    /// sub-model's. Their records and dropped examples are in
    /// [`NotCovered::mist_submodels`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mist: Option<Vec<MistSubModel>>,
    /// `completed`, or `diverged` for the partial report of a run stopped
    /// by [`crate::TrainError::Diverged`] (its model is the last good one:
    /// the end of the last completed epoch).
    pub status: &'static str,
    /// Warnings raised while setting the run up (such as an allowed
    /// δ ≥ 1/N), for the caller to show: the library does not print.
    pub warnings: Vec<String>,
    /// Exact statistics of the private training data, released next to ε
    /// but **not covered by it**.
    pub not_covered_by_epsilon: NotCovered,
}

/// One MIST sub-model's accounting: under DP its own accountant's
/// figures, over its planned steps. (Its part's records and dropped
/// examples are in [`NotCovered::mist_submodels`].)
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MistSubModel {
    /// Its Poisson sampling rate.
    pub sample_rate: f64,
    /// Its steps: under DP the planned ones, which its ε covers whether or
    /// not the run stopped before them.
    pub steps: u64,
    /// Its ε (`None` without DP).
    pub epsilon: Option<f64>,
}

/// One MIST sub-model's part of the training data: counts of the private
/// data, outside the guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MistPart {
    /// Records in its part.
    pub records: usize,
    /// Examples of its batches dropped for a non-finite loss or gradient.
    pub dropped_examples: u64,
}

/// What early stopping did.
///
/// # Privacy
///
/// Under DP, ε covers the training records over the **planned** steps
/// (the report's `steps` and `epsilon` do not depend on the stop): every
/// model after every step is a release of DP-SGD run for the whole plan,
/// so stopping and choosing the best epoch are post-processing of those
/// releases with respect to the training records. The validation records
/// (held out of training by a data-independent split) are **not** covered
/// by ε: the validation accuracy, the best epoch and the epoch stopped at
/// are exact statistics of them (as the test accuracy is of the test
/// split).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EarlyStopReport {
    /// The epoch whose model is released (best validation accuracy).
    pub best_epoch: usize,
    /// The last epoch trained.
    pub stopped_at_epoch: usize,
    /// Whether training stopped before the planned epochs.
    pub stopped_early: bool,
    /// Validation accuracy of the released model.
    pub validation_accuracy: f64,
    /// Validation records.
    pub validation_size: usize,
    /// Always false: ε does not cover the validation records, of which
    /// the fields above are exact statistics.
    pub validation_covered_by_epsilon: bool,
    /// What ε covers here, in words.
    pub note: &'static str,
}

impl EarlyStopReport {
    /// What [`EarlyStopReport::note`] says.
    pub const NOTE: &'static str = "under DP, epsilon covers the training records over the planned steps: every intermediate model is a DP release, so the stop and the choice of the best epoch are post-processing of them; the validation records are not covered by epsilon: the validation accuracy, the best epoch and the epoch stopped at are exact statistics of them";

    /// The report of a run whose best epoch was `best_epoch`, stopped
    /// after `stopped_at_epoch`.
    pub(crate) fn new(
        best_epoch: usize,
        stopped_at_epoch: usize,
        stopped_early: bool,
        validation_accuracy: f64,
        validation_size: usize,
    ) -> Self {
        Self {
            best_epoch,
            stopped_at_epoch,
            stopped_early,
            validation_accuracy,
            validation_size,
            validation_covered_by_epsilon: false,
            note: Self::NOTE,
        }
    }
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
    /// gradient norm was not finite (with MIST, over all sub-models).
    pub dropped_examples: u64,
    /// MIST's sub-models' parts, in the order of
    /// [`TrainReport::mist`]: their records and dropped examples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mist_submodels: Option<Vec<MistPart>>,
    /// The training data's users, when its records carry user ids: exact
    /// counts of the private data. At user level ε's N is the number of
    /// users (public), but how many records they hold is not; at record
    /// level they say how exposed a heavy user is (group privacy: a user
    /// with n records is protected only at about n·ε).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<UserCounts>,
    /// One entry per epoch, in order. Each holds the epoch's mean training
    /// loss, which ε does not cover; its test accuracy and ε are covered.
    pub epoch_history: Vec<EpochRecord>,
}

/// How the training records are spread over users (statistics of the
/// private data: not covered by ε).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UserCounts {
    /// Distinct users.
    pub users: usize,
    /// Training records.
    pub records: usize,
    /// The most records one user holds.
    pub max_records_of_one_user: usize,
}

impl UserCounts {
    /// The counts of per-record user ids `ids`.
    pub fn of(ids: &[u64]) -> Self {
        // The engine's own grouping (none for no records).
        let index = dpsgd_burn::UserIndex::from_ids(ids).ok();
        Self {
            users: index.as_ref().map_or(0, dpsgd_burn::UserIndex::num_users),
            records: ids.len(),
            max_records_of_one_user: index.as_ref().map_or(0, dpsgd_burn::UserIndex::max_records),
        }
    }
}

/// The state of a run at the end of one epoch.
///
/// # Privacy
///
/// `train_loss` is an exact statistic of the private training data and is
/// **not covered by ε**; `test_accuracy` and `epsilon` are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean per-example training loss over the epoch's batches (not
    /// covered by ε).
    pub train_loss: f64,
    /// Accuracy on the test set after the epoch.
    pub test_accuracy: f64,
    /// ε spent so far; `None` without DP or when
    /// [`TrainConfig::progress_epsilon`](crate::TrainConfig::progress_epsilon)
    /// is off.
    pub epsilon: Option<f64>,
    /// Wall-clock seconds from the start of training to the end of the
    /// epoch (its test evaluation included).
    pub wall_seconds: f64,
}
