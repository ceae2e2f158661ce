//! The error type of DP-SGD on burn.

/// Everything that can go wrong in a DP-SGD step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is outside its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The offending value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Taking this step would exceed the configured privacy budget; nothing
    /// was changed.
    #[error(
        "privacy budget exhausted: one more step would reach ε = {epsilon_after:.4} > budget {budget} at δ = {delta} (spent so far: ε = {epsilon_spent:.4})"
    )]
    BudgetExhausted {
        /// ε of the steps already taken.
        epsilon_spent: f64,
        /// ε if the refused step were taken.
        epsilon_after: f64,
        /// The budget.
        budget: f64,
        /// The δ of the budget.
        delta: f64,
    },
    /// A loss or gradient is NaN or infinite; no parameter was changed.
    #[error("non-finite {what}: {detail}")]
    NonFinite {
        /// What was not finite (`loss`, `gradient`, ...).
        what: &'static str,
        /// Where (example index, parameter).
        detail: String,
    },
    /// A clipped sum was clipped under another policy than the one the
    /// noise is calibrated to; nothing was changed.
    #[error(
        "clipping mismatch: the gradients were clipped under {found}, but the noise is calibrated to {expected} (give the engine `DpOptimizer::clipping()` before each step)"
    )]
    ClippingMismatch {
        /// The policy the optimizer calibrates its noise to.
        expected: String,
        /// The policy the sum was clipped under.
        found: String,
    },
    /// Tensors or batches whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The model contains a layer that DP-SGD cannot train privately.
    #[error("unsupported layer `{path}` ({layer}): {suggestion}")]
    UnsupportedLayer {
        /// Where in the model.
        path: String,
        /// Its type.
        layer: String,
        /// What to use instead.
        suggestion: String,
    },
    /// A checkpoint could not be written or read back.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A data-parallel worker could not be reached, or failed a step (the
    /// step is then not taken: nothing noised, nothing accounted).
    #[error("worker {worker}: {reason}")]
    Worker {
        /// Which: `ws://HOST:PORT` for a remote worker, `#N` for the
        /// in-process worker `N`.
        worker: String,
        /// What went wrong.
        reason: String,
        /// The transport's error, where there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An error of the privacy accountant.
    #[error(transparent)]
    Accountant(#[from] dpsgd_accountant::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidParameter`].
    pub fn invalid(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// The outcome of one of the accountant's range checks
    /// ([`dpsgd_accountant::checks`]), a refusal as this crate's
    /// [`Error::InvalidParameter`].
    ///
    /// # Errors
    ///
    /// The check's refusal.
    pub fn check(result: dpsgd_accountant::Result<()>) -> Result<()> {
        result.map_err(|e| match e {
            dpsgd_accountant::Error::InvalidParameter {
                name,
                value,
                reason,
            } => Self::invalid(name, value, reason),
            e => e.into(),
        })
    }
}

pub(crate) fn invalid(
    name: &'static str,
    value: impl ToString,
    reason: impl Into<String>,
) -> Error {
    Error::invalid(name, value, reason)
}
