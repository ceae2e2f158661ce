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
    /// An example could not be read from the data set.
    #[error("cannot read training example {index}")]
    Example {
        /// The example's index.
        index: usize,
        /// burn's error.
        #[source]
        source: burn::data::dataset::DatasetError,
    },
    /// The output's per-example loss does not average to the loss the
    /// step reports: the per-example loss derived from the output is not
    /// the loss the model trains on.
    #[error(
        "the mean of the per-example losses dpsgd derives from the step's output ({derived}) is not \
         the loss the step reports ({reported}): give the loss the model trains on per example \
         with DpTraining::strategy_with_loss"
    )]
    LossMismatch {
        /// Mean of the derived per-example losses.
        derived: f64,
        /// The step output's own loss.
        reported: f64,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error as burn-train carries a caller's failure.
    pub(crate) fn into_training_error(self) -> burn_train::TrainingError {
        burn_train::TrainingError::Dataset(burn::data::dataset::DatasetError::new(self))
    }
}
