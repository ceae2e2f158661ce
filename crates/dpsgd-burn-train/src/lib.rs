//! DP-SGD inside [burn-train](https://docs.rs/burn-train)'s `Learner`.
//!
//! A stock burn-train program becomes private with a handful of lines:
//! build a [`DpTraining`] from the training data set and batcher, give
//! `SupervisedTraining` its [`loader`](DpTraining::loader), its
//! [`epsilon_metric`](DpTraining::epsilon_metric) and its
//! [`strategy`](DpTraining::strategy), and launch as before. The strategy
//! runs burn-train's epoch loop — metrics, dashboard, validation,
//! learning-rate schedule, checkpoints — with a DP-SGD step: a Poisson
//! batch from the engine's secret generator, every example's gradient
//! clipped, Gaussian noise added once, the step accounted; the `Learner`'s
//! optimizer applies only that noisy gradient.
//!
//! * **ε is a metric**: [`EpsilonMetric`] (spent, and the budget left)
//!   shows in the dashboard and the metric logs beside loss and accuracy.
//! * **The budget ends training cleanly**: the step the budget no longer
//!   allows is not taken; `LearningResult::interrupted` gives the reason
//!   and [`DpTraining::report`] the privacy report of what was trained.
//! * **Resumes are exact**: with burn-train's checkpointers on, the
//!   engine's accountant and generators are saved beside each epoch's
//!   checkpoint ([`DpTraining::with_checkpoint_dir`]) and restored by
//!   `SupervisedTraining::checkpoint(epoch)`; a checkpoint that does not
//!   belong with burn-train's model of that epoch is refused.
//! * **What would break the accounting is refused** with a clear error:
//!   gradient accumulation, early stopping, a run driven by burn-train's
//!   own strategies (whose multi-device and DDP variants all-reduce raw
//!   gradients) instead of the DP one.
//!
//! # What ε does not cover
//!
//! burn-train's training metrics (loss, accuracy of each batch) are
//! statistics of the private data computed without noise; like the
//! validation metrics and whatever your metric loggers write, they are not
//! covered by ε — keep them with the model's owner. The progress shown
//! counts steps, not examples (a Poisson batch's size is itself a
//! statistic of the data).
//!
//! A full program is `examples/burn_train.rs` in the repository: a stock
//! burn-train classifier and its private twin.
#![warn(missing_docs)]

mod error;
mod loader;
mod metrics;
mod output;
mod strategy;
mod training;

pub use error::{Error, Result};
pub use loader::PoissonLoader;
pub use metrics::EpsilonMetric;
pub use output::{PerExampleLoss, StepOutput};
pub use training::DpTraining;
