//! Errors of a run.

use crate::config_error::ConfigError;

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration that cannot work (e.g. a CNN on tabular data). Its
    /// source is the [`ConfigError`], whose own source is the error of
    /// another crate the refusal came from, if any.
    #[error("invalid configuration: {0}")]
    Config(#[source] ConfigError),
    /// From the DP machinery.
    #[error(transparent)]
    Dp(#[from] dpsgd_core::Error),
    /// From the accountant.
    #[error(transparent)]
    Accountant(#[from] dpsgd_accountant::Error),
    /// Training diverged. Under DP-SGD this is decided from the released
    /// values only: the model's parameters are no longer finite after a
    /// noisy update (a record whose loss or gradient is not finite
    /// contributes zero to its step and never stops the run, and the
    /// reason names no count of the private batch). Without DP: a batch's
    /// loss became non-finite. The run stopped at once; `report`
    /// describes the last good model (the end of the last completed
    /// epoch, or the initial model), which was saved to
    /// [`crate::TrainConfig::save_model`] if set; the last epoch's
    /// checkpoint, if any, is in [`crate::TrainConfig::checkpoint_dir`].
    /// Under DP, ε in the report covers the planned steps (the stop is a
    /// function of the released parameters: post-processing of the whole
    /// planned run).
    #[error(
        "training diverged at step {step} (epoch {epoch}): {reason}; lower the learning rate (or the clipping norm), or use the recipe's defaults"
    )]
    Diverged {
        /// The step at which divergence was detected.
        step: u64,
        /// Its epoch, from 1.
        epoch: usize,
        /// What was seen.
        reason: String,
        /// The partial report (status `diverged`).
        report: Box<crate::TrainReport>,
    },
    /// The checkpoint in [`crate::TrainConfig::checkpoint_dir`] cannot be
    /// resumed: missing, damaged, made by another run, or edited (its
    /// privacy settings or step count are not the run's). Nothing was
    /// trained; the file is left as it was.
    #[error("cannot resume: {0}")]
    Resume(#[source] dpsgd_core::Error),
    /// The trained model ([`crate::TrainConfig::save_model`]) or the training
    /// loop's checkpoint state ([`crate::TrainConfig::checkpoint_dir`]) could
    /// not be saved.
    #[error("saving the model to {}: {reason}", path.display())]
    Save {
        /// Where it was to go.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// A saved model ([`crate::TrainedModel::load`]) could not be read or
    /// does not fit its card.
    #[error("loading the model {}: {reason}", path.display())]
    Load {
        /// The model's record file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
}

impl TrainError {
    /// A [`TrainError::Config`] for `setting`.
    pub(crate) fn config(setting: &'static str, message: impl Into<String>) -> Self {
        Self::Config(ConfigError::new(setting, message))
    }

    /// A [`TrainError::Config`] for `setting` caused by another crate's
    /// error `cause` (its text the message, itself kept as the source).
    pub(crate) fn config_from(
        setting: &'static str,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Config(ConfigError::caused_by(setting, cause))
    }
}

/// A refused setting is a [`TrainError::Config`] (not a source: the
/// message is the error's own).
impl From<ConfigError> for TrainError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}
