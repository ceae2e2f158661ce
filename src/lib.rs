#![doc = include_str!("front.md")]
//!
//! # The facade
//!
//! This package re-exports the workspace's crates, each once under a short
//! name (as `burn` does): the privacy [`accountant`] (`dpsgd-accountant`),
//! the DP-SGD algorithm — clipping, noise, the DP optimizer — as [`optim`]
//! (`dpsgd-core`), the per-example gradient [`engine`], DP-aware layers and
//! Poisson sampling (`dpsgd-burn`, with its most used items at the root),
//! the `data` readers (`dpsgd-data`), the training recipe `train`
//! (`dpsgd-train`, with the built-in `models`), the leakage measurement
//! `audit` (`dpsgd-audit`) and the burn-train integration `learner`
//! (`dpsgd-burn-train`).
//!
//! `optim` and `engine` rather than `core` and `burn`: those would shadow
//! the `core` and `burn` crates in a `use dpsgd::*` scope.
#![warn(missing_docs)]

#[cfg(all(feature = "train", feature = "burn-train"))]
pub mod docs;
pub mod nn;

pub use dpsgd_accountant as accountant;
#[cfg(feature = "audit")]
pub use dpsgd_audit as audit;
pub use dpsgd_burn as engine;
pub use dpsgd_core as optim;
#[cfg(feature = "data")]
pub use dpsgd_data as data;
#[cfg(feature = "train")]
pub use dpsgd_train as train;

/// burn-train itself, at the version [`learner`] plugs into.
#[cfg(feature = "burn-train")]
pub use burn_train;
/// DP-SGD inside burn-train's `Learner`: see [`dpsgd_burn_train`].
#[cfg(feature = "burn-train")]
pub use dpsgd_burn_train as learner;

pub use dpsgd_burn::{ExampleBatch, impl_example_batch, rand, rand_chacha};

pub use dpsgd_burn::{
    DpSgdConfig, GradientEngine, PoissonSampler, PrivacyEngine, PrivacyReport, StepStats, fix,
    layers, loss, validate_model,
};
pub use dpsgd_core::{Clipping, DpOptimizer, DpSettings, Error, Rejected};
#[cfg(feature = "train")]
pub use dpsgd_train::{accuracy, batch, models};
