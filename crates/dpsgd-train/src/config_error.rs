//! A refused setting: which [`crate::TrainConfig`] field cannot work, and
//! why. A leaf (it imports nothing of the crate), so that the settings'
//! own checks (the defences') can return it without depending on
//! [`crate::TrainError`], which carries a report.

use std::error::Error;
use std::sync::Arc;

/// The error of another crate a refusal came from, kept whole.
type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// Which [`crate::TrainConfig`] setting cannot work, and why (in library
/// terms: a command line maps [`ConfigError::setting`] to its own flag).
///
/// A refusal that comes from another crate's error (the data's, the
/// engine's, the audit's) keeps it as its [`Error::source`], typed (walk
/// the chain and downcast); its text is already in
/// [`ConfigError::message`], so a chain printed without repeats reads the
/// same as the message.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The [`crate::TrainConfig`] field, e.g. `model` or `epochs`.
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
    /// The error it came from, if another crate's.
    cause: Option<Cause>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

impl Error for ConfigError {
    /// The other crate's error itself (not the shared pointer to it), so
    /// that it downcasts to its own type.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// Equal when the setting and the message are (the cause's text is in the
/// message).
impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        self.setting == other.setting && self.message == other.message
    }
}

impl Eq for ConfigError {}

impl ConfigError {
    /// `setting` refused, with `message`.
    pub(crate) fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
            cause: None,
        }
    }

    /// `setting` refused because of `cause`, another crate's error: its
    /// text is the message, and it is kept as the source.
    pub(crate) fn caused_by(
        setting: &'static str,
        cause: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            setting,
            message: cause.to_string(),
            cause: Some(Arc::new(cause)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_keep_another_crates_error_as_a_typed_source_with_the_same_text() {
        let cause = dpsgd_core::Error::invalid("alpha", -1.0, "must be > 0");
        let text = cause.to_string();
        let e = crate::TrainError::config_from("relaxloss", cause);
        assert_eq!(
            e.to_string(),
            format!("invalid configuration: relaxloss: {text}")
        );
        let config = e.source().expect("the refusal");
        assert_eq!(config.to_string(), format!("relaxloss: {text}"));
        let inner = config.source().expect("the other crate's error");
        assert_eq!(inner.to_string(), text);
        assert!(matches!(
            inner.downcast_ref::<dpsgd_core::Error>(),
            Some(dpsgd_core::Error::InvalidParameter { name: "alpha", .. })
        ));
        // Compared by setting and message.
        assert_eq!(
            ConfigError::new("relaxloss", text.clone()),
            ConfigError::caused_by(
                "relaxloss",
                dpsgd_core::Error::invalid("alpha", -1.0, "must be > 0")
            )
        );
    }
}
