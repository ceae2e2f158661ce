//! Measured leakage in every report: the loss-threshold membership-inference
//! attack on the training set (members) vs the test set (non-members).

use crate::models::Classifier;
use crate::trained::logits_of;
use burn::tensor::Device;
use dpsgd_audit::metrics::Roc;
use dpsgd_audit::scores::{ScoreKind, score_logits};
use dpsgd_data::Dataset;

/// Loss scores (`ln p_y`, higher = more likely a member) of every example
/// of `data`, computed in f64 from the logits: a confident model's f32
/// losses are exactly 0 for members and non-members alike, and would hide
/// the leakage in ties.
pub(crate) fn loss_scores(logits: &[f64], data: &Dataset) -> Vec<f64> {
    let classes = logits.len() / data.len().max(1);
    logits
        .chunks(classes.max(1))
        .zip(data.labels())
        .map(|(row, &y)| score_logits(ScoreKind::Loss, row, y as usize).unwrap_or(f64::NAN))
        .collect()
}

/// ROC AUC of the loss-threshold attack (Yeom et al. 2018): members are
/// `train`, non-members `test`; 0.5 means no measurable leakage, NaN when
/// a split is empty or a logit is not finite.
pub(crate) fn loss_threshold_auc<M: Classifier>(
    model: &M,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> f64 {
    let model = model.valid();
    let device = device.clone().without_autodiff();
    let members = loss_scores(&logits_of(&model, train, &device), train);
    let others = loss_scores(&logits_of(&model, test, &device), test);
    Roc::new(&members, &others).map_or(f64::NAN, |roc| roc.auc)
}
