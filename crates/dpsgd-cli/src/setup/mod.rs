//! From flags to settings: the data ([`data`]: reading, public
//! preprocessing), the training configuration ([`config`]: the recipe
//! overridden by every flag given) and the audit's ([`audit_config`]).

pub mod data;

pub use data::{Preprocessing, load, load_for_audit, users_unscored_at_record_level};

use crate::error;
use crate::flags::train::TrainOptions;
use dpsgd::data::Dataset;
use dpsgd::train::audit::{Attack, AuditConfig, CanaryKind};
use dpsgd::train::{Defences, ModelKind, OptimizerKind, Privacy, Recipe, TrainConfig};

/// The recipe: named by `--recipe`, else chosen by the data's public shape
/// (and `--model`), with its settings for the run's budget
/// ([`Recipe::for_privacy`]: the target ε is public).
pub fn recipe_for(o: &TrainOptions, privacy: Privacy, train: &Dataset) -> Recipe {
    let recipe = match o.recipe.as_deref().and_then(Recipe::named) {
        Some(r) => r.for_privacy(privacy).fitted_to(train),
        None => Recipe::for_run(train, o.model.as_deref().map(model_kind), privacy),
    };
    // At user level the public N counts users (records ≥ users, so the cap
    // at a quarter of the users is all that remains of the record count).
    recipe.fitted_to_units(units(o, train))
}

/// The public N of the run: training users at user level (the number of
/// records is then a statistic of the private data), records otherwise.
pub fn units(o: &TrainOptions, train: &Dataset) -> usize {
    dpsgd::train::privacy_units(o.privacy_unit(), train)
}

fn model_kind(name: &str) -> ModelKind {
    match name {
        "logreg" => ModelKind::Logreg,
        "cnn" => ModelKind::Cnn,
        _ => ModelKind::Mlp,
    }
}

/// The line naming the run's recipe and the settings in which this run
/// differs from its description (flags, or a batch size capped at a
/// quarter of a small data set): `…; this run: batch_size 32, epochs 300`,
/// so the line never describes settings the run does not use.
pub fn recipe_line(cfg: &TrainConfig) -> Option<String> {
    let recipe = cfg
        .recipe
        .as_deref()
        .and_then(Recipe::named)?
        .for_privacy(cfg.privacy);
    let base = serde_json::to_value(recipe.config(cfg.privacy, cfg.delta)).ok()?;
    let this = serde_json::to_value(cfg).ok()?;
    let changed: Vec<String> = [
        "model",
        "features",
        "activation",
        "hidden",
        "optimizer",
        "lr",
        "max_grad_norm",
        "batch_size",
        "epochs",
        "ema_decay",
        "accountant",
    ]
    .into_iter()
    // Only settings the model trained uses: hidden layers are the MLP's,
    // an activation is not the linear model's.
    .filter(|k| match *k {
        "hidden" => cfg.model == ModelKind::Mlp,
        "activation" => cfg.model != ModelKind::Logreg,
        _ => true,
    })
    .filter(|k| base.get(k) != this.get(k))
    .map(|k| {
        let v = this.get(k).map_or_else(String::new, |v| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "none".into(),
            other => other.to_string(),
        });
        format!("{k} {v}")
    })
    .collect();
    Some(if changed.is_empty() {
        format!("dpsgd: recipe {}: {}", recipe.name, recipe.description)
    } else {
        format!(
            "dpsgd: recipe {}: {}; this run: {}",
            recipe.name,
            recipe.description,
            changed.join(", ")
        )
    })
}

/// Builds the run configuration: the recipe, overridden by every flag given.
pub fn config(o: &TrainOptions, privacy: Privacy, train: &Dataset) -> TrainConfig {
    let recipe = recipe_for(o, privacy, train);
    let optimizer = match o.optimizer.as_deref() {
        Some("sgd") => OptimizerKind::Sgd,
        Some(_) => OptimizerKind::Adam,
        None => recipe.optimizer,
    };
    // Another optimizer than the recipe's needs its own learning rate.
    let lr = match (o.lr, optimizer == recipe.optimizer) {
        (Some(lr), _) => lr,
        (None, true) => recipe.lr,
        (None, false) => match optimizer {
            OptimizerKind::Adam => 1e-2,
            OptimizerKind::Sgd => 0.3,
        },
    };
    let model = o.model.as_deref().map_or(recipe.model, model_kind);
    let hidden = match (&o.hidden, recipe.hidden.is_empty()) {
        (Some(h), _) => h.0.clone(),
        (None, false) => recipe.hidden.clone(),
        (None, true) => dpsgd::train::DEFAULT_HIDDEN.to_vec(),
    };
    let cfg = TrainConfig {
        model,
        activation: o.activation.unwrap_or(recipe.activation),
        // A recipe with a step count makes those steps with the batch the
        // run uses (a --batch-size of the user's included).
        epochs: o.epochs.unwrap_or_else(|| {
            o.batch_size
                .and_then(|b| recipe.epochs_for(b, units(o, train)))
                .unwrap_or(recipe.epochs)
        }),
        batch_size: o.batch_size.unwrap_or(recipe.batch_size),
        max_grad_norm: o.max_grad_norm.unwrap_or(recipe.max_grad_norm),
        lr,
        optimizer,
        privacy,
        delta: o
            .delta
            .unwrap_or_else(|| dpsgd::train::default_delta(units(o, train))),
        accountant: o.accountant.unwrap_or(recipe.accountant),
        seed: o.seed,
        allow_large_delta: o.allow_large_delta,
        clipping: o.clipping,
        hidden,
        max_physical_batch_size: o.max_physical_batch_size,
        devices: o.devices,
        all_reduce: o.all_reduce,
        remote_workers: Vec::new(),
        worker_token: None,
        worker_timeout: Some(dpsgd::train::DEFAULT_WORKER_TIMEOUT),
        on_worker_loss: dpsgd_burn::parallel::OnWorkerLoss::Stop,
        conv_strategy: o.conv_strategy,
        save_model: None,
        checkpoint_dir: None,
        resume: false,
        progress_epsilon: false,
        features: o.features.unwrap_or(recipe.features),
        ema_decay: match o.ema_decay {
            Some(d) if d > 0.0 => Some(d),
            Some(_) => None,
            None => recipe.ema_decay,
        },
        augment_multiplicity: o.augment_multiplicity.unwrap_or(1),
        weight_standardization: o.weight_standardization,
        recipe: Some(recipe.name.to_owned()),
        defences: Defences::default(),
        privacy_unit: o.privacy_unit(),
    };
    with_defences(cfg, o.defences(train.n_classes()), o, train)
}

/// `cfg` with the empirical `defences`, its batch and epochs set again
/// from the flags and the recipe (so that calling it twice, as `compare`
/// does for each point, leaves nothing of the first call). Under MIST
/// without a `--batch-size`, the batch is at most a quarter of a
/// sub-model's expected part, N/M units (at least 1), as the recipes keep
/// it at most a quarter of N: each sub-model samples its batches from its
/// own part, and a small data set (breast cancer's 285 training records, 4
/// parts of about 71) would otherwise ask for batches larger than a part;
/// a recipe with a step count then takes its epochs for that batch. N/M is
/// public: the parts are drawn from the seed alone, whatever the records
/// hold.
pub fn with_defences(
    mut cfg: TrainConfig,
    defences: Defences,
    o: &TrainOptions,
    train: &Dataset,
) -> TrainConfig {
    let recipe = recipe_for(o, cfg.privacy, train);
    let n = units(o, train);
    let mut batch = o.batch_size.unwrap_or(recipe.batch_size);
    if let (Some(mist), None) = (&defences.mist, o.batch_size) {
        batch = batch.min((n / mist.submodels.max(1) / 4).max(1));
    }
    cfg.epochs = o.epochs.unwrap_or_else(|| {
        if o.batch_size.is_none() && batch == recipe.batch_size {
            recipe.epochs
        } else {
            recipe.epochs_for(batch, n).unwrap_or(recipe.epochs)
        }
    });
    cfg.batch_size = batch;
    cfg.defences = defences;
    cfg
}

/// The audit's settings from the command line.
pub fn audit_config(
    attacks: &[Attack],
    shadow_models: usize,
    canaries: usize,
    canary_kind: CanaryKind,
    canary_guesses: Option<usize>,
    threads: Option<usize>,
    seed: u64,
) -> Result<AuditConfig, error::UsageError> {
    if canary_guesses.is_some_and(|r| r > canaries) {
        return Err(error::UsageError {
            flag: "--canary-guesses",
            message: format!("more guesses than canaries ({canaries})"),
        });
    }
    if shadow_models < 2 && attacks.iter().any(|a| a.needs_shadows()) {
        return Err(error::UsageError {
            flag: "--shadow-models",
            message: "the shadow and LiRA attacks need at least 2 shadow models".into(),
        });
    }
    let mut unique = Vec::new();
    for a in attacks {
        if !unique.contains(a) {
            unique.push(*a);
        }
    }
    Ok(AuditConfig {
        attacks: unique,
        shadow_models,
        canaries,
        canary_kind,
        canary_guesses,
        threads: threads.unwrap_or(0),
        seed,
        ..AuditConfig::default()
    })
}

/// Refuses input canaries (mislabeled, ood) with early stopping, before
/// any data is read: the run takes early stopping's validation hold-out
/// from the training set after the canaries are added, so an included
/// canary could be held out, never trained on, and still count as
/// included. (The library refuses the combination too; this names the
/// flags.)
///
/// # Errors
///
/// A [`error::UsageError`] naming `--canaries` and `--early-stopping`.
pub fn check_canaries(
    canaries: usize,
    kind: CanaryKind,
    options: &TrainOptions,
) -> Result<(), error::UsageError> {
    if canaries > 0 && kind != CanaryKind::Dirac && options.early_stopping.is_some() {
        return Err(error::UsageError {
            flag: "--canaries",
            message: "input canaries cannot be combined with --early-stopping: its validation hold-out is taken from the training set after the canaries are added, so an included canary could be held out and never trained on; drop one of the two (or use --canary-kind dirac)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recipe line names only settings the model trained uses: a
    /// linear model's run never says "hidden" or "activation", however the
    /// configuration holds them; an MLP's says both when they differ.
    #[test]
    fn should_list_only_settings_the_model_uses() {
        let recipe = Recipe::named("image-scatternet").unwrap();
        let cfg = TrainConfig {
            hidden: vec![128],
            activation: dpsgd::train::Activation::Relu,
            epochs: 3,
            recipe: Some("image-scatternet".into()),
            ..recipe.config(Privacy::TargetEpsilon(3.0), 1e-5)
        };
        let line = recipe_line(&cfg).unwrap();
        assert!(line.contains("this run: epochs 3"), "{line}");
        assert!(!line.contains("hidden"), "{line}");
        assert!(!line.contains("activation"), "{line}");
        let general = Recipe::named("general").unwrap();
        let mlp = TrainConfig {
            hidden: vec![7],
            recipe: Some("general".into()),
            ..general.config(Privacy::TargetEpsilon(3.0), 1e-5)
        };
        let line = recipe_line(&mlp).unwrap();
        assert!(line.contains("hidden [7]"), "{line}");
    }
}
