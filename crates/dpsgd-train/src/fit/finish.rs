//! The end of a run: the report of the released model, saving it, and
//! the divergence error carrying the partial report.

use crate::config::{ModelKind, TrainConfig};
use crate::error::TrainError;
use crate::eval::{accuracy, loss_threshold_auc};
use crate::models::Classifier;
use crate::report::{EarlyStopReport, EpochRecord, NotCovered, TrainReport, UserCounts};
use burn::tensor::Device;
use dpsgd_burn::{PoissonSampler, PrivacyEngine, PrivacyReport};
use dpsgd_core::GradientMethod;
use dpsgd_data::Dataset;
use std::time::Instant;

/// Writes `model`'s record bytes to `path`, atomically. The model is the
/// released output of the run: covered by ε (when private).
fn save_model<M: Classifier>(model: &M, path: &std::path::Path) -> Result<(), TrainError> {
    let failed = |reason: String| TrainError::Save {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| failed(e.to_string()))?;
    dpsgd_burn::io::write_atomically(path, &bytes, dpsgd_burn::io::Access::Default)
        .map_err(|e| failed(e.to_string()))
}

/// Adds the warnings `engines` raised while training (the slow fallback)
/// to `warnings`, each once.
pub(crate) fn add_engine_warnings<'a>(
    warnings: &mut Vec<String>,
    engines: impl IntoIterator<Item = &'a PrivacyEngine>,
) {
    for w in engines.into_iter().flat_map(PrivacyEngine::warnings) {
        if !warnings.contains(w) {
            warnings.push(w.clone());
        }
    }
}

/// The run's result: the report and model, or, when training diverged at
/// `(step, epoch, reason)`, the error carrying the partial report.
pub(crate) fn conclude<M>(
    mut report: TrainReport,
    model: M,
    diverged: Option<(u64, usize, String)>,
) -> Result<(TrainReport, M), TrainError> {
    match diverged {
        None => Ok((report, model)),
        Some((step, epoch, reason)) => {
            report.epochs = epoch.saturating_sub(1);
            Err(TrainError::Diverged {
                step,
                epoch,
                reason,
                report: Box::new(report),
            })
        }
    }
}

/// What the loop hands to [`finish`].
pub(crate) struct Finished {
    pub(crate) history: Vec<EpochRecord>,
    pub(crate) early_stopping: Option<EarlyStopReport>,
    pub(crate) final_loss: f64,
    pub(crate) warnings: Vec<String>,
    pub(crate) wall_seconds: f64,
    pub(crate) eval_seconds: f64,
    pub(crate) feature_seconds: f64,
    pub(crate) status: &'static str,
    /// Discarded steps charged at resumes (included in `steps`).
    pub(crate) redone_steps: u64,
}

/// The report of `model` (the released one: the final or the last good
/// model), saving it if asked. `steps` are the steps the report accounts
/// for: under DP the planned ones (those not taken charged to `privacy`'s
/// accountant at its σ and q), without DP those taken.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish<M: Classifier>(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    model: &M,
    privacy: Option<&PrivacyEngine>,
    sampler: &PoissonSampler,
    steps: u64,
    done: Finished,
) -> Result<TrainReport, TrainError> {
    let Finished {
        history,
        final_loss,
        warnings,
        wall_seconds,
        mut eval_seconds,
        feature_seconds,
        early_stopping,
        status,
        redone_steps,
    } = done;
    let eval_start = Instant::now();
    let auc = loss_threshold_auc(model, train, test, device);
    let train_accuracy = accuracy(model, train, device);
    // The last epoch's evaluation is of this model — the best epoch's,
    // with early stopping (none yet: evaluate it).
    let released_epoch = match &early_stopping {
        Some(e) => history.iter().find(|r| r.epoch == e.best_epoch),
        None => history.last(),
    };
    let test_accuracy = match released_epoch {
        Some(r) => r.test_accuracy,
        None => accuracy(model, test, device),
    };
    eval_seconds += eval_start.elapsed().as_secs_f64();
    if let Some(path) = &cfg.save_model {
        // A card left by an earlier run at this path would describe these
        // weights with that run's ε until this run writes its own (never,
        // if it diverges): remove it first.
        let card = crate::model_file::card_path(path);
        match std::fs::remove_file(&card) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TrainError::Save {
                    path: card,
                    reason: format!("removing the earlier card: {e}"),
                });
            }
        }
        save_model(model, path)?;
    }
    let privacy_report = match privacy {
        Some(p) => p.report_over(steps)?,
        None => PrivacyReport::non_private(sampler, steps, cfg.delta, cfg.seed)
            .with_privacy_unit(cfg.privacy_unit),
    };
    Ok(TrainReport {
        not_covered_by_epsilon: NotCovered {
            note: "exact statistics of the private training data: not covered by epsilon",
            train_accuracy,
            final_loss,
            loss_threshold_auc: auc,
            dropped_examples: privacy.map_or(0, PrivacyEngine::dropped_examples),
            mist_submodels: None,
            users: train.users().map(UserCounts::of),
            epoch_history: history,
        },
        test_accuracy,
        privacy: privacy_report,
        // Under DP the planned epochs, which ε covers (where early
        // stopping stopped is in `early_stopping`); without DP those
        // trained.
        epochs: match (privacy, &early_stopping) {
            (None, Some(e)) => e.stopped_at_epoch,
            _ => cfg.epochs,
        },
        defences: cfg.defences.clone(),
        early_stopping,
        mist: None,
        wall_seconds,
        eval_seconds,
        test_size: test.len(),
        redone_steps,
        model: cfg.model,
        activation: cfg.activation,
        optimizer: cfg.optimizer,
        lr: cfg.lr,
        batch_size: cfg.batch_size,
        clipping_mode: privacy.map(|_| cfg.clipping),
        hidden: match cfg.model {
            ModelKind::Logreg => Some(Vec::new()),
            ModelKind::Mlp => Some(cfg.hidden.clone()),
            ModelKind::Cnn => None,
        },
        max_physical_batch_size: cfg.max_physical_batch_size,
        devices: if cfg.remote_workers.is_empty() {
            cfg.devices
        } else {
            cfg.remote_workers.len()
        },
        conv_strategy: cfg.conv_strategy,
        warnings,
        // A private run resumed after its last step took no step in this
        // process: the engine's known fallback (none: the fast path), not
        // "non-private".
        gradient_method: match (
            privacy,
            privacy.and_then(|p| p.last_step()).map(|s| &s.method),
        ) {
            (None, _) => "non-private".into(),
            (_, Some(GradientMethod::Fallback { reason })) => format!("fallback: {reason}"),
            (Some(p), None) => p.fallback_reason().map_or_else(
                || "fast path (ghost norms, book-keeping)".into(),
                |reason| format!("fallback: {reason}"),
            ),
            (_, Some(_)) => "fast path (ghost norms, book-keeping)".into(),
        },
        recipe: cfg.recipe.clone(),
        features: cfg.features,
        feature_seconds,
        ema_decay: cfg.ema_decay,
        augment_multiplicity: cfg.augment_multiplicity,
        weight_standardization: cfg.weight_standardization && cfg.model == ModelKind::Cnn,
        status,
    })
}
