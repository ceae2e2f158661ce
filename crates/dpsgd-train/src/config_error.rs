//! A refused setting: which [`crate::TrainConfig`] field cannot work, and
//! why. A leaf (it imports nothing of the crate), so that the settings'
//! own checks (the defences') can return it without depending on
//! [`crate::TrainError`], which carries a report.

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

impl ConfigError {
    /// `setting` refused, with `message`.
    pub(crate) fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}
