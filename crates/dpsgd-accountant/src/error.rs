//! The accountant's error type.

/// Everything that can go wrong while accounting for privacy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is outside its domain (for example `q ∉ (0, 1]`, `σ ≤ 0`,
    /// `δ ∉ (0, 1)` or a non-finite value).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name as used in this crate's API (`sample_rate`,
        /// `noise_multiplier`, `delta`, `epsilon`, `steps`, ...).
        name: &'static str,
        /// The offending value, as written by the caller.
        value: String,
        /// Why the value is rejected.
        reason: &'static str,
    },
    /// No parameter within the searched range meets the privacy target.
    #[error("no {name} meets the target: {reason}")]
    Unreachable {
        /// The quantity that was searched for (`noise_multiplier`, `steps`).
        name: &'static str,
        /// What limited the search.
        reason: String,
    },
    /// The requested guarantee cannot be expressed as a finite number
    /// (for example ε for a δ smaller than the mechanism's infinite-loss mass).
    #[error("the privacy loss is unbounded: {0}")]
    Unbounded(String),
    /// The computation left the range in which this method's arithmetic is
    /// sound (an overflow, a NaN, or a grid too large to hold), so no ε is
    /// given rather than a wrong one. Another method (RDP instead of PLD, a
    /// coarser PLD grid) may still answer.
    #[error("the accountant cannot answer this reliably: {0}")]
    OutOfRange(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(name: &'static str, value: impl ToString, reason: &'static str) -> Error {
    Error::InvalidParameter {
        name,
        value: value.to_string(),
        reason,
    }
}

/// `q ∈ (0, 1]`.
///
/// # Errors
///
/// [`Error::InvalidParameter`] named `sample_rate` otherwise (NaN included).
pub fn check_sample_rate(q: f64) -> Result<()> {
    if q.is_finite() && q > 0.0 && q <= 1.0 {
        Ok(())
    } else {
        Err(invalid("sample_rate", q, "must be in (0, 1]"))
    }
}

/// `σ > 0`, finite.
///
/// # Errors
///
/// [`Error::InvalidParameter`] named `noise_multiplier` otherwise.
pub fn check_noise_multiplier(sigma: f64) -> Result<()> {
    if sigma.is_finite() && sigma > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            "noise_multiplier",
            sigma,
            "must be a finite number > 0",
        ))
    }
}

/// `δ ∈ (0, 1)`.
///
/// # Errors
///
/// [`Error::InvalidParameter`] named `delta` otherwise (NaN included).
pub fn check_delta(delta: f64) -> Result<()> {
    if delta.is_finite() && delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(invalid("delta", delta, "must be in (0, 1)"))
    }
}

/// `ε ≥ 0`, finite.
///
/// # Errors
///
/// [`Error::InvalidParameter`] named `epsilon` otherwise.
pub fn check_epsilon(epsilon: f64) -> Result<()> {
    if epsilon.is_finite() && epsilon >= 0.0 {
        Ok(())
    } else {
        Err(invalid("epsilon", epsilon, "must be a finite number >= 0"))
    }
}
