//! The DP-SGD algorithm on burn tensors: per-example clipping policies,
//! calibrated Gaussian noise from a CSPRNG, and [`DpOptimizer`], which wraps
//! any burn optimizer and records every step with a
//! [`dpsgd_accountant`] accountant.
//!
//! The per-example gradient engine that produces [`ClippedGradients`] lives
//! in `dpsgd-burn`.
//!
//! # Privacy
//!
//! A step releases `(Σ_i clip(∇_i) + N(0, σ²C²I)) / (qN)` (Abadi et al.
//! 2016) under Poisson sampling with rate q, add/remove neighbours; see
//! [`optimizer`] and [`clipping`].
#![warn(missing_docs)]

pub mod clipping;
mod error;
#[doc(hidden)]
pub mod fault;
pub mod gradients;
pub mod noise;
pub mod optimizer;
pub mod params;
mod threads;
mod ziggurat;

pub use clipping::{Clipping, round_factor};
pub use error::{Error, Result};
pub use gradients::{ClippedGradients, GradientMethod};
pub use noise::NoiseSource;
pub use optimizer::{DpOptimizer, DpSettings, DpState, Rejected};
pub use params::{ParamInfo, layer_groups, parameter_values, trainable_params};
pub use threads::cores;

pub use dpsgd_accountant as accountant;
