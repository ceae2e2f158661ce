//! DP-SGD for [burn](https://burn.dev): the per-example gradient engine,
//! DP-aware layers and Poisson sampling.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use dpsgd_burn::layers::{DpLinear, DpLinearConfig};
//! use dpsgd_burn::{GradientEngine, PoissonSampler};
//! use dpsgd_core::{Clipping, DpOptimizer, DpSettings};
//!
//! # fn main() -> Result<(), dpsgd_core::Error> {
//! let device = Device::flex().autodiff();
//! let model: DpLinear = DpLinearConfig::new(64, 10).init(&device);
//! let sampler = PoissonSampler::new(1797, 64)?;
//! let clipping = Clipping::flat(1.0)?;
//! let mut engine = GradientEngine::new(clipping.clone());
//! let settings = DpSettings {
//!     noise_multiplier: 1.0,
//!     clipping,
//!     sample_rate: sampler.sample_rate(),
//!     dataset_size: sampler.dataset_size(),
//!     accountant: Default::default(),
//!     budget: Some((3.0, 1e-5)),
//! };
//! let mut dp = DpOptimizer::new(burn::optim::SgdConfig::new().init(), settings)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod adapter;
pub mod backend;
mod batch;
pub mod canary;
mod checkpoint;
mod engine;
pub mod fix;
mod grad_sample;
pub mod io;
pub mod layers;
pub mod loss;
pub mod parallel;
mod privacy_engine;
pub mod reference;
#[cfg(feature = "distributed")]
pub mod remote;
mod sampler;
mod tape;
pub mod users;
mod validate;

pub use batch::{Augmented, ExampleBatch};
pub use checkpoint::{Resumed, read_caller_state};
pub use dpsgd_core::{Error, Result};
pub use engine::{EngineMode, GradientEngine, PassSize};
pub use privacy_engine::{
    DatasetFingerprint, DpSgdConfig, PrivacyEngine, PrivacyReport, ReleasedCoordinates, StepStats,
    TargetBudget,
};
pub use sampler::PoissonSampler;
pub use users::{PrivacyUnit, UserBatch, UserIndex};
pub use validate::validate_model;

/// The `rand` whose [`Rng`](rand::Rng) [`PoissonSampler::sample`] and
/// [`users::choose_records`] take: use it (or `rand_chacha` below) so that
/// your generator implements this version's trait.
pub use rand;
/// ChaCha20, the generator the engine keys from the OS for noise and
/// sampling; `rand_chacha::ChaCha20Rng::seed_from_u64` for a reproducible
/// (not secure) sampler of your own.
pub use rand_chacha;

/// What [`impl_example_batch!`] refers to.
#[doc(hidden)]
pub mod __private {
    pub use burn::tensor::Device;
}
