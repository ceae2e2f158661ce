//! What every step shares between the standard loop and MIST: the loss
//! sum of a DP step, and the divergence check on the released parameters.

use burn::tensor::Tensor;
use dpsgd_burn::PrivacyEngine;

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
pub(crate) fn dp_divergence<M: burn::module::Module>(model: &M) -> Option<String> {
    // Words only, no number: the reason names nothing of the private batch
    // (tests/divergence.rs). A σ or C too large for f32 is refused before
    // training (`DpSettings::validate`), not reported here.
    (!parameters_finite(model)).then(|| {
        "the model's parameters are no longer finite after the noisy update (decided from the released parameters only)".to_owned()
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
