//! Errors of a run.

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration that cannot work (e.g. a CNN on tabular data).
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// From the DP machinery.
    #[error(transparent)]
    Dp(#[from] dpsgd_core::Error),
    /// From the accountant.
    #[error(transparent)]
    Accountant(#[from] dpsgd_accountant::Error),
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
}

/// Which [`crate::TrainConfig`] setting cannot work, and why (in library
/// terms: a command line maps [`ConfigError::setting`] to its own flag).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The [`crate::TrainConfig`] field, e.g. `model` or `epochs`.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl TrainError {
    /// A [`TrainError::Config`] for `setting`.
    pub(crate) fn config(setting: &'static str, message: impl Into<String>) -> Self {
        Self::Config(ConfigError {
            setting,
            message: message.into(),
        })
    }
}
