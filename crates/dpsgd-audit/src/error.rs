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
    /// The model declined to answer this client any further: a spent
    /// query budget, a rate it may not exceed, a revoked or unknown key.
    /// Unlike [`Error::Query`] this is the defence working, not a fault:
    /// [`crate::hardening::Hardened`] counts the batch as refused, and an
    /// audit reports the attack as refused rather than failing.
    #[error("query refused by the model's owner: {reason}")]
    Refused {
        /// What the model (or the endpoint serving it) said.
        reason: String,
    },
    /// RMIA was given no population samples `z` to compare against: its
    /// score is a fraction over the population, undefined for an empty one.
    #[error("empty population: RMIA needs at least one population sample z")]
    EmptyPopulation,
    /// A record has no reference-model signal that the attack's variant can
    /// use (RMIA online: no reference model at all; offline: no OUT model,
    /// nor an IN model to invert through `a`).
    #[error("record {record} has no usable reference-model signal ({reason})")]
    NoReferenceSignal {
        /// Index of the record (in the audited records, or in the population
        /// when `population` is true).
        record: usize,
        /// Whether the record is a population sample.
        population: bool,
        /// What is missing.
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
