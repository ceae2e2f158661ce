//! What can go wrong, each with its cause kept.

use std::path::PathBuf;

/// An error of DP training inside burn-train.
///
/// burn-train reports a training failure as a [`burn_train::TrainingError`];
/// these errors reach it wrapped in its `Dataset` variant (the one that
/// carries a caller's error), with this error as the source, so
/// `LearningResult::error` still names the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The privacy engine refused (invalid settings, an unsupported model,
    /// a checkpoint that is not the run's, …).
    #[error("DP-SGD: {0}")]
    Engine(#[from] dpsgd_core::Error),
    /// The data loader was driven by another strategy than the DP one.
    #[error(
        "the DP data loader was iterated by another learning strategy than dpsgd's: burn-train's \
         own strategies would apply raw, unclipped gradients; add \
         `.with_training_strategy(dp.strategy(...))` to the SupervisedTraining"
    )]
    NotDrivenByDp,
    /// A burn-train option that would break the accounting.
    #[error("{option} cannot be used with DP-SGD: {why}")]
    Unsupported {
        /// The burn-train option.
        option: &'static str,
        /// Why it breaks the guarantee.
        why: &'static str,
    },
    /// burn-train checkpoints are on (or a resume is asked) but no folder
    /// for the privacy engine's state was given.
    #[error(
        "burn-train {what}, but the privacy engine's state (accountant, noise and sampling \
         generators) has nowhere to go: give DpTraining::with_checkpoint_dir(DIR)"
    )]
    NoCheckpointDir {
        /// "checkpoints are on" or "resumes from epoch N".
        what: String,
    },
    /// A resume whose burn-train and dpsgd checkpoints do not match.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The privacy engine's checkpoint.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The data set given is not the size the sampler was built for.
    #[error(
        "the training data set has {found} examples, but the DP sampler was built for {expected}"
    )]
    DatasetSize {
        /// N the sampler was built for.
        expected: usize,
        /// The data set's length.
        found: usize,
    },
    /// An example of the Poisson batch could not be read from the data
    /// set (which one is not said: the batch is secret).
    #[error("cannot read a training example of the batch")]
    Example {
        /// burn's error.
        #[source]
        source: burn::data::dataset::DatasetError,
    },
    /// The batcher made a batch of another number of examples than the
    /// items it was given: each record must be exactly one example (the
    /// sensitivity is one clipped gradient per record).
    #[error(
        "the batcher made a batch of another number of examples than the records it was given: \
         DP-SGD needs exactly one example per record"
    )]
    BatcherSize,
    /// The output's per-example loss does not average to the loss the
    /// step reports: the per-example loss derived from the output is not
    /// the loss the model trains on (the values are not given: they are
    /// statistics of a private batch).
    #[error(
        "the per-example losses dpsgd derives from the step's output do not average to the loss \
         the step reports: give the loss the model trains on per example with \
         DpTraining::strategy_with_loss"
    )]
    LossMismatch,
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error as burn-train carries a caller's failure.
    pub(crate) fn into_training_error(self) -> burn_train::TrainingError {
        burn_train::TrainingError::Dataset(burn::data::dataset::DatasetError::new(self))
    }
}
