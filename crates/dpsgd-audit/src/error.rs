//! The audit crate's error type.

/// Everything that can go wrong while measuring leakage.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter or input is outside its domain (an empty score list, a
    /// NaN score, a probability vector that does not sum to one, α ∉ (0, 1)).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name as used in this crate's API.
        name: &'static str,
        /// The offending value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A model queried by an attack refused or failed to answer (an
    /// exhausted query budget, a backend error).
    #[error("query refused: {reason}")]
    Query {
        /// What the model said.
        reason: String,
    },
    /// Writing an output file (an image grid) failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(
    name: &'static str,
    value: impl ToString,
    reason: impl Into<String>,
) -> Error {
    Error::InvalidParameter {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}
