//! Errors of a run.

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration that cannot work (e.g. a CNN on tabular data).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// From the DP machinery.
    #[error(transparent)]
    Dp(#[from] dpsgd_core::Error),
    /// From the accountant.
    #[error(transparent)]
    Accountant(#[from] dpsgd_accountant::Error),
}
