//! Empirical defences against membership inference, one file each
//! holding the defence's loss, its settings and its checks:
//! [`label_smoothing`], [`confidence_penalty`](mod@confidence_penalty), [`relaxloss`], [`mist`]
//! (its training loop is [`crate::mist`]) and [`early_stopping`]; weight
//! decay and dropout are one setting each, checked here and in the run.
//! This module gathers them: the [`Defences`] of a run, their checks in
//! one place, and the run's loss.

pub mod confidence_penalty;
pub mod early_stopping;
pub mod label_smoothing;
pub mod mist;
pub mod relaxloss;

pub use confidence_penalty::{confidence_penalty, prediction_entropy};
pub use early_stopping::EarlyStopping;
pub use label_smoothing::label_smoothed_cross_entropy;
pub use mist::{MistSettings, cross_difference};
pub use relaxloss::{
    RelaxBranch, RelaxLoss, RelaxLossSettings, flattened_cross_entropy, flattened_target,
};

use crate::config_error::ConfigError;
use burn::tensor::{Int, Tensor};
use dpsgd_burn::loss::cross_entropy_per_example;
use serde::Serialize;

/// Empirical defences against membership inference (issue 14): training
/// losses and regularisers that make members' outputs look like
/// non-members'. Each works with or without DP-SGD; none gives a
/// guarantee (docs/defences.md measures what they buy).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Defences {
    /// Label smoothing ε: the target puts `1 − ε` on the true class and
    /// `ε/(C − 1)` on each other one (Szegedy et al. 2016).
    pub label_smoothing: Option<f32>,
    /// Confidence penalty β: cross-entropy − β·H(p) (Pereyra et al. 2017).
    pub confidence_penalty: Option<f32>,
    /// RelaxLoss (Chen et al. 2022): target loss level α and the flattened
    /// posterior's bound; under DP-SGD each example's branch comes from its
    /// own loss (the published per-batch choice would use a batch statistic
    /// outside the mechanism).
    pub relaxloss: Option<RelaxLossSettings>,
    /// Early stopping on a validation split of the training data.
    pub early_stopping: Option<EarlyStopping>,
    /// Decoupled L2 weight decay λ of the optimizer (post-processing of the
    /// noisy gradient under DP: free in ε).
    pub weight_decay: Option<f64>,
    /// Dropout probability between the built-in models' hidden layers
    /// (training only).
    pub dropout: Option<f64>,
    /// MIST, membership-invariant subspace training (Li, Li & Ribeiro
    /// 2024): sub-models on disjoint parts of the data, a cross-difference
    /// loss towards the non-member loss, averaged every round. With MIST
    /// each of [`crate::TrainConfig::epochs`] is one round.
    pub mist: Option<MistSettings>,
}

impl Defences {
    /// Whether no defence is on.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// What the checks need to know of the run besides its defences: the
/// features some defences do not support yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    /// Parameter averaging (EMA) is on.
    pub(crate) ema: bool,
    /// Checkpoints are written.
    pub(crate) checkpoints: bool,
    /// Augmentation multiplicity above 1.
    pub(crate) augmentation: bool,
}

/// Refuses defence settings outside their domains (each defence's own
/// check), more than one loss replacing cross-entropy, and combinations
/// with the rest of the run not supported yet.
pub(crate) fn check(d: &Defences, run: Run) -> Result<(), ConfigError> {
    label_smoothing::check(d.label_smoothing)?;
    confidence_penalty::check(d.confidence_penalty)?;
    relaxloss::check(d.relaxloss)?;
    if [
        d.label_smoothing.is_some(),
        d.confidence_penalty.is_some(),
        d.relaxloss.is_some(),
    ]
    .iter()
    .filter(|&&on| on)
    .count()
        > 1
    {
        return Err(ConfigError::new(
            "defences",
            "label smoothing, the confidence penalty and RelaxLoss each replace the loss: choose one",
        ));
    }
    mist::check(d.mist)?;
    if d.mist.is_some() {
        let clash = if run.ema {
            Some("parameter averaging (EMA)")
        } else if run.checkpoints {
            Some("checkpoints")
        } else if run.augmentation {
            Some("augmentation multiplicity")
        } else {
            None
        };
        if let Some(other) = clash {
            return Err(ConfigError::new(
                "mist",
                format!("MIST does not support {other} yet: use one or the other"),
            ));
        }
    }
    if let Some(w) = d.weight_decay
        && !(w >= 0.0 && w.is_finite())
    {
        return Err(ConfigError::new("weight_decay", "must be ≥ 0"));
    }
    early_stopping::check(d.early_stopping)?;
    if d.early_stopping.is_some() && run.checkpoints {
        return Err(ConfigError::new(
            "early_stopping",
            "early stopping is not checkpointed yet: use one or the other",
        ));
    }
    Ok(())
}

/// RelaxLoss as `defences` asks for it (per example under DP-SGD, when
/// `private`: a batch statistic deciding every example's gradient would
/// escape the mechanism).
pub(crate) fn relax_loss(
    defences: &Defences,
    private: bool,
) -> Result<Option<RelaxLoss>, ConfigError> {
    defences
        .relaxloss
        .map(|r| RelaxLoss::new(r.alpha, r.upper, private))
        .transpose()
        .map_err(|e| ConfigError::caused_by("relaxloss", e))
}

/// The run's loss, one value per row: the defences' loss if one is on,
/// cross-entropy otherwise. `epoch` (from 1) drives RelaxLoss's
/// alternation.
pub(crate) fn training_losses(
    defences: &Defences,
    relax: Option<&RelaxLoss>,
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    epoch: usize,
) -> Tensor<1> {
    match (relax, defences.label_smoothing, defences.confidence_penalty) {
        (Some(r), _, _) => r.losses(logits, targets, epoch),
        (None, Some(e), _) => label_smoothed_cross_entropy(logits, targets, e),
        (None, None, Some(beta)) => confidence_penalty(logits, targets, beta),
        (None, None, None) => cross_entropy_per_example(logits, targets),
    }
}

/// Hand-computed references and small batches shared by the defences'
/// tests.
#[cfg(test)]
pub(crate) mod test_support {
    pub(crate) use burn::tensor::{Device, Int, Tensor, TensorData};

    pub(crate) const A: [f32; 3] = [1.0, 2.0, 3.0]; // y = 2: p_y ≈ 0.665, ℓ ≈ 0.408
    pub(crate) const U: [f32; 3] = [0.0, 0.0, 0.0]; // y = 0: p_y = 1/3, ℓ = ln 3
    pub(crate) const B: [f32; 3] = [2.0, 0.0, -1.0]; // y = 2: p_y ≈ 0.042, ℓ ≈ 3.170
    pub(crate) const C: [f32; 3] = [0.0, 0.0, 5.0]; // y = 2: p_y ≈ 0.987, ℓ ≈ 0.013

    pub(crate) fn logits_on(rows: &[[f32; 3]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), 3]), device)
    }

    pub(crate) fn logits(rows: &[[f32; 3]]) -> Tensor<2> {
        logits_on(rows, &Device::default())
    }

    pub(crate) fn labels_on(y: &[i64], device: &Device) -> Tensor<1, Int> {
        Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [y.len()]), device)
    }

    pub(crate) fn labels(y: &[i64]) -> Tensor<1, Int> {
        labels_on(y, &Device::default())
    }

    pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    pub(crate) fn softmax64(z: &[f32; 3]) -> Vec<f64> {
        let e: Vec<f64> = z.iter().map(|&v| f64::from(v).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    pub(crate) fn ce64(z: &[f32; 3], y: usize) -> f64 {
        -softmax64(z)[y].ln()
    }

    pub(crate) fn entropy64(z: &[f32; 3]) -> f64 {
        -softmax64(z).iter().map(|p| p * p.ln()).sum::<f64>()
    }

    /// q: min(p_y, upper) on y, (1 − p_t)/2 on the two other classes.
    pub(crate) fn flat_target64(z: &[f32; 3], y: usize, upper: f64) -> Vec<f64> {
        let p_t = softmax64(z)[y].min(upper);
        (0..3)
            .map(|c| if c == y { p_t } else { (1.0 - p_t) / 2.0 })
            .collect()
    }

    pub(crate) fn soft_ce64(z: &[f32; 3], q: &[f64]) -> f64 {
        let p = softmax64(z);
        -q.iter().zip(&p).map(|(q, p)| q * p.ln()).sum::<f64>()
    }

    pub(crate) fn flat_ce64(z: &[f32; 3], y: usize, upper: f64) -> f64 {
        soft_ce64(z, &flat_target64(z, y, upper))
    }

    pub(crate) fn assert_close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() < tol,
                "element {i}: got {g}, want {w} (all: {got:?} vs {want:?})"
            );
        }
    }

    /// `softmax(z) − q`, row-major.
    pub(crate) fn analytic_grad(
        rows: &[[f32; 3]],
        targets: &[Vec<f64>],
        signs: &[f64],
    ) -> Vec<f64> {
        rows.iter()
            .zip(targets)
            .zip(signs)
            .flat_map(|((z, q), s)| {
                softmax64(z)
                    .into_iter()
                    .zip(q)
                    .map(move |(p, q)| s * (p - q))
            })
            .collect()
    }

    pub(crate) fn one_hot64(y: usize) -> Vec<f64> {
        (0..3).map(|c| if c == y { 1.0 } else { 0.0 }).collect()
    }
}
