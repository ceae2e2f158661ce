#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
//! # The facade
//!
//! This package only re-exports the workspace's crates: the privacy
//! [`accountant`], the DP-SGD algorithm ([`dpsgd_core`]), the per-example
//! gradient engine, DP-aware layers and Poisson sampling ([`dpsgd_burn`],
//! with its most used items at the root), the [`data`] readers and the
//! training recipe ([`train`], with the built-in [`models`]).

pub use dpsgd_accountant as accountant;
pub use dpsgd_audit as audit;
pub use dpsgd_data as data;
pub use dpsgd_train as train;
pub use {dpsgd_accountant, dpsgd_audit, dpsgd_burn, dpsgd_core, dpsgd_data, dpsgd_train};

pub use dpsgd_burn::{
    DpSgdConfig, GradientEngine, PoissonSampler, PrivacyEngine, PrivacyReport, layers, loss,
    validate_model,
};
pub use dpsgd_train::{accuracy, batch, models};
