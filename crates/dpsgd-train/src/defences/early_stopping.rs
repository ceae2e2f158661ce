//! Early stopping on a validation split of the training data: its
//! settings and checks (the loop itself is the standard one's,
//! `fit/standard.rs`).

use crate::config_error::ConfigError;
use serde::Serialize;

/// Early stopping: hold out `validation_fraction` of the training data,
/// evaluate it after every epoch, stop after `patience` epochs without a
/// better validation accuracy and keep the best epoch's model.
///
/// # Privacy
///
/// Under DP-SGD, ε covers the training records over the **planned**
/// epochs, whether or when the run stops: every intermediate model is a
/// DP release of the run over the whole plan, so the stop and the choice
/// of the best epoch are post-processing of them (the report's `steps`,
/// `epsilon` and `epochs` are the plan's). The validation records are
/// held out of training and **not covered by ε**: the validation
/// accuracy, the best epoch and the epoch stopped at (all in the report's
/// `early_stopping`) are exact statistics of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EarlyStopping {
    /// Fraction of the training data held out for validation, in (0, 1).
    pub validation_fraction: f64,
    /// Epochs without improvement before stopping (≥ 1).
    pub patience: usize,
}

/// Refuses a validation fraction outside (0, 1) and a patience of 0 (what
/// early stopping does not support yet: [`super::check`]).
pub(crate) fn check(settings: Option<EarlyStopping>) -> Result<(), ConfigError> {
    let Some(e) = settings else {
        return Ok(());
    };
    if !(e.validation_fraction > 0.0 && e.validation_fraction < 1.0) {
        return Err(ConfigError::new(
            "early_stopping",
            "the validation fraction must be in (0, 1)",
        ));
    }
    if e.patience == 0 {
        return Err(ConfigError::new(
            "early_stopping",
            "the patience must be at least 1 epoch",
        ));
    }
    Ok(())
}
