//! What every step shares between the standard loop and MIST: the
//! defences' loss, the loss sum of a DP step, and the divergence check on
//! the released parameters.

use crate::config::TrainConfig;
use crate::error::TrainError;
use burn::tensor::{Int, Tensor};
use dpsgd_burn::PrivacyEngine;
use dpsgd_burn::loss::{
    RelaxLoss, confidence_penalty, cross_entropy_per_example, label_smoothed_cross_entropy,
};

/// RelaxLoss as `cfg` asks for it (per example under DP-SGD: a batch
/// statistic deciding every example's gradient would escape the
/// mechanism).
pub(crate) fn relax_loss(
    cfg: &TrainConfig,
    private: bool,
) -> Result<Option<RelaxLoss>, TrainError> {
    cfg.defences
        .relaxloss
        .map(|r| RelaxLoss::new(r.alpha, r.upper, private))
        .transpose()
        .map_err(|e| TrainError::config("relaxloss", e.to_string()))
}

/// The run's loss, one value per row: the defences' loss if one is on,
/// cross-entropy otherwise. `epoch` (from 1) drives RelaxLoss's
/// alternation.
pub(crate) fn training_losses(
    cfg: &TrainConfig,
    relax: Option<&RelaxLoss>,
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    epoch: usize,
) -> Tensor<1> {
    match (
        relax,
        cfg.defences.label_smoothing,
        cfg.defences.confidence_penalty,
    ) {
        (Some(r), _, _) => r.losses(logits, targets, epoch),
        (None, Some(e), _) => label_smoothed_cross_entropy(logits, targets, e),
        (None, None, Some(beta)) => confidence_penalty(logits, targets, beta),
        (None, None, None) => cross_entropy_per_example(logits, targets),
    }
}

/// The loss sum of the engine's last step (an exact statistic of the
/// private batch: it feeds only `not_covered_by_epsilon`).
pub(crate) fn last_step_loss(p: &PrivacyEngine) -> f64 {
    p.last_step()
        .map_or(0.0, |s| s.mean_loss * (s.batch_size - s.dropped) as f64)
}

/// Why a DP-SGD run has diverged, if it has: decided from the released
/// (noisy) parameters only, never from the batch (its loss, its size, how
/// many of its examples were dropped), so that no record decides whether
/// a private run stops, and the reason names no private count. One pass
/// over the parameters: about 1% of a DP step of the default digits MLP
/// (2.8 µs against 290–340 µs per step of batch 128, release build, flex,
/// 2 cores), so it runs after every step.
pub(crate) fn dp_divergence<M: burn::module::Module>(
    model: &M,
    engine: &PrivacyEngine,
) -> Option<String> {
    (!parameters_finite(model)).then(|| {
        // Public settings only: the noise's scale on the mean gradient,
        // σ·C/(q·N), which a huge σ or C makes the cause.
        let settings = engine.optimizer().settings();
        format!(
            "the model's parameters are no longer finite after the noisy update (decided from the released parameters only; the noise on the mean gradient has standard deviation σ·C/(q·N) = {:.3e} per coordinate)",
            settings.noise_std() / settings.expected_batch_size()
        )
    })
}

/// Whether every float parameter of `model` is finite: one reduction per
/// parameter (`Σ 0·θ` is 0 when every θ is finite, NaN otherwise, and
/// never overflows) and one read-back.
pub(crate) fn parameters_finite<M: burn::module::Module>(model: &M) -> bool {
    struct Check(Option<Tensor<1>>);
    impl burn::module::ModuleVisitor for Check {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let zero = param.val().inner().mul_scalar(0.0).sum();
            self.0 = Some(match self.0.take() {
                Some(total) => total + zero,
                None => zero,
            });
        }
    }
    let mut check = Check(None);
    model.visit(&mut check);
    check
        .0
        .is_none_or(|total| total.into_scalar::<f32>().is_finite())
}
