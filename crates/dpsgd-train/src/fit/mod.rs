//! One training run, private or not, with a report: the engine behind
//! `dpsgd train` and `dpsgd sweep`. [`train_model`] checks the settings,
//! prepares the features and builds the model, then dispatches to the one
//! training loop the settings ask for: [`standard`] or [`mist`].

pub mod canaries;
mod checkpoint;
mod finish;
pub mod mist;
mod released;
pub use released::RELEASED_FILE;
mod setup;
mod standard;
mod step;

use crate::config::{Features, ModelKind, Privacy, PrivacyUnit, Progress, TrainConfig};
use crate::ema::Ema;
use crate::error::TrainError;
use crate::features::{scatter_features, scattering_for};
use crate::models::{Classifier, Cnn, Mlp};
use crate::report::TrainReport;
use crate::trained::{Net, TrainedModel};
use burn::tensor::Device;
use canaries::{CanaryObservation, CanaryRun, GradientCanaries};
use dpsgd_data::Dataset;
use setup::{Extra, seeded};
use std::time::Instant;

/// Trains `cfg.model` on `train`, evaluates on `test`, calling `progress`
/// after every step.
///
/// # Errors
///
/// [`TrainError::Config`] for a model that does not fit the data (a CNN on
/// tabular data or on images too small for it) or zero epochs;
/// [`TrainError::Dp`] and [`TrainError::Accountant`] for invalid
/// ε/δ/σ/C, a batch larger than the data, or a NaN loss during training.
pub fn train(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    progress: impl FnMut(Progress),
) -> Result<TrainReport, TrainError> {
    train_model(cfg, train, test, device, progress).map(|(report, _)| report)
}

/// [`train`], returning the trained model as well (the one reported and
/// saved: averaged under EMA), ready to answer queries: what the audit's
/// attacks and shadow models need.
///
/// # Errors
///
/// As [`train`].
pub fn train_model(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    progress: impl FnMut(Progress),
) -> Result<(TrainReport, TrainedModel), TrainError> {
    train_planted(cfg, train, test, device, None, None, progress).map(|(r, m, _)| (r, m))
}

/// An audit's target: [`train_model`], or [`train_with_gradient_canaries`]
/// with `canaries`, whose training set was split off as `split` says when
/// that split depends on the records
/// ([`crate::audit::AuditNotCovered::split`]): the saved model's card then
/// declares it ([`crate::CardNotCovered`]).
pub(crate) fn train_split_off(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    canaries: Option<&GradientCanaries>,
    split: Option<&'static str>,
) -> Result<(TrainReport, TrainedModel, Option<CanaryObservation>), TrainError> {
    match canaries {
        Some(g) => gradient_canary_run(cfg, train, test, device, g, split, |_| {})
            .map(|(r, m, o)| (r, m, Some(o))),
        None => train_planted(cfg, train, test, device, None, split, |_| {}),
    }
}

/// **White-box auditing**: [`train_model`] with `canaries` planted in the
/// run (see [`crate::canaries`] for what is planted and observed): the run's
/// report (its N counts the canaries' slots), the released model, and
/// what the auditor observed.
///
/// # Errors
///
/// As [`train_model`], and [`TrainError::Config`] for a non-private run,
/// checkpoints (a run with canaries is an audit, not a run to resume), no
/// canaries, or more canaries than the model has trainable coordinates.
pub fn train_with_gradient_canaries(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    canaries: &GradientCanaries,
    progress: impl FnMut(Progress),
) -> Result<(TrainReport, TrainedModel, CanaryObservation), TrainError> {
    gradient_canary_run(cfg, train, test, device, canaries, None, progress)
}

/// [`train_with_gradient_canaries`], its card declaring `split`
/// ([`train_split_off`]).
fn gradient_canary_run(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    canaries: &GradientCanaries,
    split: Option<&'static str>,
    progress: impl FnMut(Progress),
) -> Result<(TrainReport, TrainedModel, CanaryObservation), TrainError> {
    if cfg.privacy == Privacy::NonPrivate {
        return Err(TrainError::config(
            "canaries",
            "gradient canaries audit the DP-SGD mechanism: a non-private run has none (use input canaries)",
        ));
    }
    if cfg.checkpoint_dir.is_some() || cfg.resume {
        return Err(TrainError::config(
            "checkpoint_dir",
            "a run with gradient canaries is an audit: it takes no checkpoints",
        ));
    }
    if !cfg.remote_workers.is_empty() {
        // The canary gradients would be built on the workers, who would
        // then learn which canaries each step includes: the secret the
        // audit's statistic rests on.
        return Err(TrainError::config(
            "remote_workers",
            "a run with gradient canaries keeps its canaries in this process: workers outside it would learn which canaries each step includes (use --devices)",
        ));
    }
    let (report, model, observed) =
        train_planted(cfg, train, test, device, Some(canaries), split, progress)?;
    let observed = observed.ok_or_else(|| {
        TrainError::config("canaries", "the run did not plant its gradient canaries")
    })?;
    Ok((report, model, observed))
}

/// Refuses, with one line naming the setting, what user-level DP does not
/// combine with: data without user ids, augmentation multiplicity (its
/// views and a user's records would both be an example's rows), MIST and
/// early stopping (both split the training data by record, which would
/// split users), and white-box gradient canaries (record slots).
fn check_user_level(
    cfg: &TrainConfig,
    train: &Dataset,
    gradient_canaries: bool,
) -> Result<(), TrainError> {
    if cfg.privacy_unit == PrivacyUnit::Record {
        return Ok(());
    }
    cfg.privacy_unit
        .validate()
        .map_err(|e| TrainError::config_from("max_records_per_user", e))?;
    let refuse = |setting, why: &str| {
        Err(TrainError::config(
            setting,
            format!("does not combine with user-level DP: {why}"),
        ))
    };
    if train.users().is_none() {
        return Err(TrainError::config(
            "privacy_unit",
            "user-level DP needs the user of every record (Dataset::with_users; --user-column for CSV data)",
        ));
    }
    if cfg.augment_multiplicity > 1 {
        return refuse(
            "augment_multiplicity",
            "augmented views and a user's records would both be rows of one example",
        );
    }
    if cfg.defences.mist.is_some() {
        return refuse(
            "mist",
            "MIST splits the training records between sub-models, which would split users",
        );
    }
    if cfg.defences.early_stopping.is_some() {
        return refuse(
            "early_stopping",
            "its validation split holds out records, which would split users",
        );
    }
    if gradient_canaries {
        return refuse(
            "canaries",
            "white-box gradient canaries are record slots; audit a user-level run with canary users",
        );
    }
    Ok(())
}

/// [`train_model`], with gradient canaries when given, its card declaring
/// `split` ([`train_split_off`]).
fn train_planted(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    canaries: Option<&GradientCanaries>,
    split: Option<&'static str>,
    progress: impl FnMut(Progress),
) -> Result<(TrainReport, TrainedModel, Option<CanaryObservation>), TrainError> {
    let raw_train = train;
    if cfg.model == ModelKind::Mlp
        && let Some(&bad) = cfg.hidden.iter().find(|&&h| h == 0)
    {
        return Err(TrainError::config(
            "hidden",
            format!("hidden layer sizes must be at least 1, not {bad}"),
        ));
    }
    if cfg.checkpoint_dir.is_some() && cfg.privacy == Privacy::NonPrivate {
        return Err(TrainError::config(
            "checkpoint_dir",
            "checkpoints are for private (DP-SGD) runs; a non-private run has none",
        ));
    }
    if cfg.resume && cfg.checkpoint_dir.is_none() {
        return Err(TrainError::config(
            "resume",
            "needs the checkpoint folder to resume from",
        ));
    }
    if cfg.checkpoint_dir.is_some() && cfg.ema_decay.is_some() {
        return Err(TrainError::config(
            "ema_decay",
            "parameter averaging is not checkpointed yet: use one or the other",
        ));
    }
    let ema = cfg
        .ema_decay
        .map(Ema::new)
        .transpose()
        .map_err(|e| TrainError::config("ema_decay", e))?;
    if cfg.augment_multiplicity == 0 {
        return Err(TrainError::config(
            "augment_multiplicity",
            "must be at least 1 (1: no augmentation)",
        ));
    }
    if cfg.augment_multiplicity > 1
        && (train.image_shape().is_none() || cfg.features != Features::Raw)
    {
        return Err(TrainError::config(
            "augment_multiplicity",
            "augmentation translates images: it needs image data with raw features (ScatterNet features are computed once, before training)",
        ));
    }
    check_user_level(cfg, train, canaries.is_some())?;
    let dropout = cfg.defences.dropout.unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(TrainError::config("dropout", "must be in [0, 1)"));
    }
    crate::defences::check(
        &cfg.defences,
        crate::defences::Run {
            ema: cfg.ema_decay.is_some(),
            checkpoints: cfg.checkpoint_dir.is_some(),
            augmentation: cfg.augment_multiplicity > 1,
        },
    )?;
    if cfg.devices == 0 {
        return Err(TrainError::config("devices", "must be at least 1"));
    }
    if cfg.devices > 1 && cfg.privacy == Privacy::NonPrivate {
        return Err(TrainError::config(
            "devices",
            "data-parallel workers are for DP-SGD steps; a non-private run uses one device",
        ));
    }
    if !cfg.remote_workers.is_empty() {
        let clash = if cfg.devices > 1 {
            Some("one kind of workers: --devices (threads) or remote workers")
        } else if cfg.privacy == Privacy::NonPrivate {
            Some("data-parallel workers are for DP-SGD steps; a non-private run uses one device")
        } else if cfg.all_reduce {
            Some(
                "remote workers are reduced on the coordinator (burn 0.22 has no collective across processes)",
            )
        } else if cfg.defences.mist.is_some() {
            Some("MIST trains its sub-models on one device")
        } else {
            None
        };
        if let Some(why) = clash {
            return Err(TrainError::config("remote_workers", why));
        }
        // Addresses checked before the data is prepared, not at connect.
        #[cfg(feature = "distributed")]
        for (i, url) in cfg.remote_workers.iter().enumerate() {
            dpsgd_burn::remote::check_worker_url(url)?;
            if cfg.remote_workers[..i].contains(url) {
                return Err(TrainError::config(
                    "remote_workers",
                    format!("{url} is named twice: each worker once"),
                ));
            }
        }
    }
    if cfg.all_reduce && cfg.devices < 2 {
        return Err(TrainError::config(
            "all_reduce",
            "needs data-parallel workers (devices of at least 2)",
        ));
    }
    if cfg.devices > 1 && cfg.defences.mist.is_some() {
        return Err(TrainError::config(
            "devices",
            "MIST trains its sub-models on one device: use one or the other",
        ));
    }
    if cfg.max_physical_batch_size == Some(0) {
        return Err(TrainError::config(
            "max_physical_batch_size",
            "must be at least 1",
        ));
    }
    // Features after the checks that do not depend on them: the whole data
    // set is not transformed for a run that is refused anyway.
    // Early stopping holds out part of the training data (by position
    // only, from the run's seed: no record's value moves the split).
    // The privacy units handed to the run, before any hold-out: the
    // card's member count (public, as N is).
    let members = crate::config::privacy_units(cfg.privacy_unit, train);
    let held_out;
    let (train, validation) = match cfg.defences.early_stopping {
        None => (train, None),
        Some(e) => {
            held_out = train
                .split(e.validation_fraction, cfg.seed.unwrap_or(0) ^ 0xea21)
                .map_err(|err| TrainError::config_from("early_stopping", err))?;
            if held_out.0.is_empty() || held_out.1.is_empty() {
                return Err(TrainError::config(
                    "early_stopping",
                    "the validation fraction leaves no training or no validation data",
                ));
            }
            (&held_out.0, Some(&held_out.1))
        }
    };
    let feature_start = Instant::now();
    let prepared;
    let (train, test, validation) = match cfg.features {
        Features::Raw => (train, test, validation.cloned()),
        Features::Scatter { groups } => {
            let scattering = scattering_for(train)?;
            let features = |d: &Dataset| scatter_features(d, &scattering, groups);
            prepared = (features(train)?, features(test)?);
            let validation = validation.map(features).transpose()?;
            (&prepared.0, &prepared.1, validation)
        }
    };
    let feature_seconds = feature_start.elapsed().as_secs_f64();
    let device = device.clone().autodiff();
    let classes = train.n_classes().max(test.n_classes());
    if classes < 2 {
        // One class: every prediction is right and every loss 0, so the
        // run would report 100% and a NaN leakage figure.
        return Err(TrainError::config(
            "num_classes",
            format!("the data has {classes} class: a classifier needs at least 2"),
        ));
    }
    check_model_size(cfg, train.n_features(), classes)?;
    if let ModelKind::Cnn = cfg.model
        && let Some([1, h, w]) = train.image_shape()
        && (h < Cnn::MIN_SIZE || w < Cnn::MIN_SIZE)
    {
        return Err(TrainError::config(
            "model",
            format!(
                "the CNN needs images of at least {0}×{0} pixels, the data has {h}×{w}; use the MLP",
                Cnn::MIN_SIZE
            ),
        ));
    }
    let extra = Extra {
        feature_seconds,
        ema,
        validation,
    };
    let (report, net, observed) = match cfg.model {
        ModelKind::Logreg => {
            let model = seeded(cfg, &device, || {
                Mlp::new(&[train.n_features(), classes], &device)
            });
            let (report, model, observed) =
                run(cfg, train, test, &device, model, extra, canaries, progress)?;
            (report, Net::Mlp(model), observed)
        }
        ModelKind::Mlp => {
            let model = seeded(cfg, &device, || {
                Mlp::new(
                    &[&[train.n_features()][..], &cfg.hidden, &[classes][..]].concat(),
                    &device,
                )
            })
            .with_activation(cfg.activation)
            .with_dropout(dropout);
            let (report, model, observed) =
                run(cfg, train, test, &device, model, extra, canaries, progress)?;
            (report, Net::Mlp(model.with_dropout(0.0)), observed)
        }
        ModelKind::Cnn => {
            let Some(shape) = train.image_shape() else {
                return Err(TrainError::config("model", "the CNN needs image data"));
            };
            let model = seeded(cfg, &device, || Cnn::for_input(shape, classes, &device))
                .with_activation(cfg.activation)
                .with_weight_standardization(cfg.weight_standardization)
                .with_dropout(dropout);
            let (report, model, observed) =
                run(cfg, train, test, &device, model, extra, canaries, progress)?;
            (
                report,
                Net::Cnn(Box::new(model.with_dropout(0.0))),
                observed,
            )
        }
    };
    let model = TrainedModel::new(net, cfg.features, raw_train, classes, device)?;
    if let Some(path) = &cfg.save_model {
        save_card(&model, cfg, &report, members, split, path)?;
    }
    Ok((report, model, observed))
}

/// Writes the card of the model saved at `path` beside it
/// ([`crate::model_file::card_path`]), atomically, so that
/// [`TrainedModel::load`] can rebuild it, declaring the training set's
/// `split` where it depends on the records.
fn save_card(
    model: &TrainedModel,
    cfg: &TrainConfig,
    report: &TrainReport,
    members: usize,
    split: Option<&'static str>,
    path: &std::path::Path,
) -> Result<(), TrainError> {
    let card_path = crate::model_file::card_path(path);
    let failed = |reason: String| TrainError::Save {
        path: card_path.clone(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| failed(format!("reading the saved model: {e}")))?;
    let mut card = model.card(cfg, report, members, &bytes);
    card.privacy.not_covered_by_epsilon = split.map(crate::CardNotCovered::split);
    let text = serde_json::to_string_pretty(&card).map_err(|e| failed(e.to_string()))?;
    dpsgd_burn::io::write_atomically(&card_path, text.as_bytes(), dpsgd_burn::io::Access::Default)
        .map_err(|e| failed(e.to_string()))
}

/// The most classes a model is built for: a `--num-classes` of 2³² − 1
/// (or one stray label that large, read off the data) would otherwise ask
/// for terabytes before the first step.
pub const MAX_CLASSES: usize = 1 << 20;

/// The most parameters a dense model (logistic regression, MLP) is built
/// with: 2³⁰, 4 GiB of f32 for one copy (DP-SGD holds several: gradients,
/// per-example norms, the optimizer's moments).
pub const MAX_PARAMETERS: u64 = 1 << 30;

/// Refuses, before anything is allocated, a model too large to build:
/// more than [`MAX_CLASSES`] classes, or a dense model of more than
/// [`MAX_PARAMETERS`] parameters (the sum over layers of `(inputs + 1) ×
/// outputs`, computed without overflow).
fn check_model_size(cfg: &TrainConfig, features: usize, classes: usize) -> Result<(), TrainError> {
    if classes > MAX_CLASSES {
        return Err(TrainError::config(
            "num_classes",
            format!("{classes} classes: at most {MAX_CLASSES} are supported"),
        ));
    }
    let widths: Vec<usize> = match cfg.model {
        ModelKind::Logreg => vec![features, classes],
        ModelKind::Mlp => [&[features][..], &cfg.hidden, &[classes][..]].concat(),
        ModelKind::Cnn => return Ok(()),
    };
    let parameters = widths.windows(2).try_fold(0u64, |total, w| {
        (w[0] as u64)
            .checked_add(1)?
            .checked_mul(w[1] as u64)?
            .checked_add(total)
    });
    match parameters {
        Some(p) if p <= MAX_PARAMETERS => Ok(()),
        _ => Err(TrainError::config(
            "hidden",
            format!(
                "layers of widths {widths:?} need {} parameters, more than the {MAX_PARAMETERS} supported",
                parameters.map_or_else(|| "over 2^64".to_owned(), |p| p.to_string())
            ),
        )),
    }
}

/// The one dispatcher: MIST's rounds when `cfg` asks for MIST, the
/// standard loop otherwise.
#[allow(clippy::too_many_arguments)]
fn run<M: Classifier + 'static>(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    model: M,
    extra: Extra,
    canaries: Option<&GradientCanaries>,
    progress: impl FnMut(Progress),
) -> Result<(TrainReport, M, Option<CanaryObservation>), TrainError> {
    let mut planted = match canaries {
        Some(spec) => Some(CanaryRun::new(
            spec,
            &model,
            train.len(),
            &setup::clipping_for(cfg, &model)?,
            // From the held-out records, never the training records: the
            // canaries' coordinates shape the released model, so choosing
            // them from the training records would let one record move
            // the model outside the mechanism.
            &canaries::coordinate_activity(&model, test, device),
        )?),
        None => None,
    };
    let (report, model) = match cfg.defences.mist {
        Some(settings) => mist::run(
            cfg,
            settings,
            train,
            test,
            device,
            model,
            extra,
            planted.as_mut(),
            progress,
        )?,
        None => standard::run(
            cfg,
            train,
            test,
            device,
            model,
            extra,
            planted.as_mut(),
            progress,
        )?,
    };
    let observed = planted.map(|c| c.finish(&model));
    Ok((report, model, observed))
}
