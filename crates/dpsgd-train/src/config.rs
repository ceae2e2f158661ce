//! What a run is asked to do: [`TrainConfig`] and its parts, and the
//! [`Progress`] reported after each step.

use crate::models::Activation;
use dpsgd_accountant::AccountantKind;
use serde::Serialize;

/// Which model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Multinomial logistic regression (one linear layer).
    Logreg,
    /// MLP with one hidden layer of 128 units (see [`TrainConfig::activation`]).
    Mlp,
    /// The CNN of [`crate::models::Cnn`] (image data only).
    Cnn,
}

/// Which inner optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum 0.9.
    Sgd,
    /// Adam.
    Adam,
}

/// How much privacy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Privacy {
    /// No clipping, no noise (the same model and sampler, for comparison).
    NonPrivate,
    /// A fixed noise multiplier.
    NoiseMultiplier(f64),
    /// σ calibrated so that the whole run meets this ε at the run's δ.
    TargetEpsilon(f64),
}

/// Everything a run needs besides the data.
#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    /// Model.
    pub model: ModelKind,
    /// Activation between hidden layers (ignored by logistic regression).
    pub activation: Activation,
    /// Epochs (each `round(1/q)` Poisson steps).
    pub epochs: usize,
    /// Expected (Poisson) batch size.
    pub batch_size: usize,
    /// Clipping norm C.
    pub max_grad_norm: f64,
    /// Learning rate.
    pub lr: f64,
    /// Inner optimizer.
    pub optimizer: OptimizerKind,
    /// Privacy setting.
    pub privacy: Privacy,
    /// δ.
    pub delta: f64,
    /// Accountant.
    pub accountant: AccountantKind,
    /// Seed for initialisation, sampling and noise (then not secure).
    pub seed: Option<u64>,
    /// Accept δ ≥ 1/N (refused otherwise).
    pub allow_large_delta: bool,
    /// Compute ε at the end of each epoch, for [`Progress::epsilon`] and
    /// the report's epoch history (off: ε is computed once, for the report).
    pub progress_epsilon: bool,
}

/// The default δ for a dataset of `n` examples: the largest power of ten
/// strictly below `1/n`, capped at 1e-5.
pub fn default_delta(n: usize) -> f64 {
    let inverse = 1.0 / n.max(1) as f64;
    let mut exponent = inverse.log10().floor();
    if 10f64.powf(exponent) >= inverse {
        exponent -= 1.0;
    }
    10f64.powf(exponent).min(1e-5)
}

/// Progress after a step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Steps planned.
    pub total_steps: u64,
    /// Mean loss of the last batch: an exact statistic of the private
    /// batch, **not covered by ε** (for debugging; do not publish it).
    pub loss: f64,
    /// ε spent so far, at the end of an epoch when
    /// [`TrainConfig::progress_epsilon`] is on (`None` otherwise, and
    /// without DP).
    pub epsilon: Option<f64>,
    /// Test accuracy, at the end of an epoch.
    pub test_accuracy: Option<f64>,
    /// The epoch this step belongs to, from 1.
    pub epoch: usize,
    /// Mean training loss of the epoch, at its end: an exact statistic of
    /// the private data, **not covered by ε** (as [`Progress::loss`]).
    pub epoch_loss: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_pick_the_default_delta() {
        assert_eq!(default_delta(1437), 1e-5);
        assert_eq!(default_delta(60_000), 1e-5);
        assert_eq!(default_delta(600_000), 1e-6);
        assert_eq!(default_delta(2_000_000), 1e-7);
        // Strictly below 1/N, also when 1/N is a power of ten.
        assert_eq!(default_delta(100_000), 1e-6);
        assert_eq!(default_delta(100), 1e-5);
    }
}
