//! The run shape of `epsilon` and `calibrate`: q and T, or N, B and E.

use super::parse::{positive_steps, sample_rate, steps};
use crate::error::UsageError;

/// How long a run is: either its sampling rate and step count directly, or
/// (as TF Privacy's `compute_dp_sgd_privacy`) its dataset size, expected
/// batch size and epochs, from which `q = B/N` and
/// `T = E · round(N/B)` (the steps per epoch `dpsgd train` takes).
#[derive(Debug, clap::Args)]
pub struct RunShape {
    /// Poisson sampling rate q (expected batch size / dataset size).
    #[arg(long, allow_hyphen_values = true, value_name = "Q", value_parser = sample_rate,
          required_unless_present = "dataset_size", conflicts_with = "dataset_size")]
    sample_rate: Option<f64>,
    /// Number of steps.
    #[arg(long, allow_hyphen_values = true, value_name = "T", value_parser = steps,
          required_unless_present = "dataset_size", conflicts_with = "dataset_size")]
    steps: Option<u64>,
    /// Dataset size N (instead of --sample-rate and --steps).
    #[arg(long, allow_hyphen_values = true, value_name = "N", value_parser = positive_steps,
          requires_all = ["batch_size", "epochs"])]
    dataset_size: Option<u64>,
    /// Expected batch size B (with --dataset-size).
    #[arg(long, allow_hyphen_values = true, value_name = "B", value_parser = positive_steps,
          requires = "dataset_size")]
    batch_size: Option<u64>,
    /// Number of epochs E (with --dataset-size).
    #[arg(long, allow_hyphen_values = true, value_name = "E", value_parser = positive_steps,
          requires = "dataset_size")]
    epochs: Option<u64>,
}

/// A [`RunShape`] resolved to the accountant's terms.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// q.
    pub sample_rate: f64,
    /// T.
    pub steps: u64,
    /// (N, B, E) when the run was given that way.
    pub epochs_form: Option<(u64, u64, u64)>,
}

impl RunShape {
    /// q and T.
    ///
    /// # Errors
    ///
    /// [`UsageError`] when the batch is larger than the dataset, or the
    /// epochs make more steps than a `u64` counts.
    pub fn resolve(&self) -> Result<Run, UsageError> {
        match (
            self.sample_rate,
            self.steps,
            self.dataset_size,
            self.batch_size,
            self.epochs,
        ) {
            (_, _, Some(n), Some(b), Some(e)) => {
                if b > n {
                    return Err(UsageError {
                        flag: "--batch-size",
                        message: format!("the batch ({b}) is larger than the dataset ({n})"),
                    });
                }
                let per_epoch = ((n as f64 / b as f64).round() as u64).max(1);
                // A saturated count would answer for fewer steps than asked.
                let steps = e.checked_mul(per_epoch).ok_or_else(|| UsageError {
                    flag: "--epochs",
                    message: format!(
                        "{e} epochs of {per_epoch} steps is more steps than can be counted (at most {})",
                        u64::MAX
                    ),
                })?;
                Ok(Run {
                    sample_rate: b as f64 / n as f64,
                    steps,
                    epochs_form: Some((n, b, e)),
                })
            }
            (Some(q), Some(t), _, _, _) => Ok(Run {
                sample_rate: q,
                steps: t,
                epochs_form: None,
            }),
            // clap's `required_unless_present`/`requires` rule these out.
            _ => Err(UsageError {
                flag: "--sample-rate",
                message:
                    "give --sample-rate and --steps, or --dataset-size, --batch-size and --epochs"
                        .into(),
            }),
        }
    }
}
