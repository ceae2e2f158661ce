//! One training run, private or not, with a report: the engine behind
//! `dpsgd train` and `dpsgd sweep`.

use crate::config::{
    CHECKPOINT_FILE, ClippingMode, Features, ModelKind, OptimizerKind, Privacy, Progress,
    TrainConfig,
};
use crate::ema::Ema;
use crate::error::TrainError;
use crate::eval::{accuracy, batch};
use crate::leakage::loss_threshold_auc;
use crate::models::{Classifier, Cnn, Mlp};
use crate::report::{EpochRecord, NotCovered, TrainReport};
use crate::trained::{Net, TrainedModel};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig, momentum::MomentumConfig,
};
use burn::tensor::{Device, Int, Tensor};
use dpsgd_accountant::{Accountant, Segment};
use dpsgd_burn::io::FolderLock;
use dpsgd_burn::loss::{
    RelaxLoss, confidence_penalty, cross_entropy_per_example, label_smoothed_cross_entropy,
};
use dpsgd_burn::{
    Augmented, DatasetFingerprint, DpSgdConfig, PoissonSampler, PrivacyEngine, PrivacyReport,
};
use dpsgd_core::{Clipping, GradientMethod, layer_groups, trainable_params};
use dpsgd_data::Dataset;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::Path;
use std::time::Instant;

type Batch = Augmented<(Tensor<4>, Tensor<1, Int>)>;

/// The optimizer applied to the (noisy, under DP) gradient, with the
/// defences' weight decay: post-processing, free in ε.
pub(crate) fn inner_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let decay = cfg
        .defences
        .weight_decay
        .map(|w| WeightDecayConfig::new(w as f32));
    match cfg.optimizer {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .with_weight_decay(decay)
            .init(),
        OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).init(),
    }
}

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
    let dropout = cfg.defences.dropout.unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(TrainError::config("dropout", "must be in [0, 1)"));
    }
    check_defences(cfg)?;
    if cfg.devices == 0 {
        return Err(TrainError::config("devices", "must be at least 1"));
    }
    if cfg.devices > 1 && cfg.privacy == Privacy::NonPrivate {
        return Err(TrainError::config(
            "devices",
            "data-parallel workers are for DP-SGD steps; a non-private run uses one device",
        ));
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
    let held_out;
    let (train, validation) = match cfg.defences.early_stopping {
        None => (train, None),
        Some(e) => {
            held_out = train
                .split(e.validation_fraction, cfg.seed.unwrap_or(0) ^ 0xea21)
                .map_err(|err| TrainError::config("early_stopping", err.to_string()))?;
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
    let (report, net) = match cfg.model {
        ModelKind::Logreg => {
            let model = seeded(cfg, &device, || {
                Mlp::new(&[train.n_features(), classes], &device)
            });
            let (report, model) = run(cfg, train, test, &device, model, extra, progress)?;
            (report, Net::Mlp(model))
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
            let (report, model) = run(cfg, train, test, &device, model, extra, progress)?;
            (report, Net::Mlp(model.with_dropout(0.0)))
        }
        ModelKind::Cnn => {
            let Some(shape) = train.image_shape() else {
                return Err(TrainError::config("model", "the CNN needs image data"));
            };
            let model = seeded(cfg, &device, || Cnn::for_input(shape, classes, &device))
                .with_activation(cfg.activation)
                .with_weight_standardization(cfg.weight_standardization)
                .with_dropout(dropout);
            let (report, model) = run(cfg, train, test, &device, model, extra, progress)?;
            (report, Net::Cnn(Box::new(model.with_dropout(0.0))))
        }
    };
    let model = TrainedModel::new(net, cfg.features, raw_train, classes, device)?;
    Ok((report, model))
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

/// Refuses defence settings outside their domains.
fn check_defences(cfg: &TrainConfig) -> Result<(), TrainError> {
    let d = &cfg.defences;
    if let Some(e) = d.label_smoothing
        && !(0.0..1.0).contains(&e)
    {
        return Err(TrainError::config("label_smoothing", "must be in [0, 1)"));
    }
    if let Some(b) = d.confidence_penalty
        && !(b >= 0.0 && b.is_finite())
    {
        return Err(TrainError::config("confidence_penalty", "must be ≥ 0"));
    }
    if let Some(r) = d.relaxloss
        && !(r.alpha > 0.0 && r.alpha.is_finite() && r.upper > 0.0 && r.upper <= 1.0)
    {
        return Err(TrainError::config(
            "relaxloss",
            "needs α > 0 and an upper bound in (0, 1]",
        ));
    }
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
        return Err(TrainError::config(
            "defences",
            "label smoothing, the confidence penalty and RelaxLoss each replace the loss: choose one",
        ));
    }
    if let Some(m) = d.mist {
        if m.submodels < 2 {
            return Err(TrainError::config(
                "mist",
                "needs at least 2 sub-models (each trains on 1/M of the data)",
            ));
        }
        if m.local_epochs == 0 || m.cross_epochs == 0 {
            return Err(TrainError::config(
                "mist",
                "needs at least 1 local and 1 cross-difference epoch per round",
            ));
        }
        if !(m.weight > 0.0 && m.weight.is_finite()) {
            return Err(TrainError::config(
                "mist",
                "the cross-difference weight λ must be > 0",
            ));
        }
        let clash = if cfg.ema_decay.is_some() {
            Some("parameter averaging (EMA)")
        } else if cfg.checkpoint_dir.is_some() {
            Some("checkpoints")
        } else if cfg.augment_multiplicity > 1 {
            Some("augmentation multiplicity")
        } else {
            None
        };
        if let Some(other) = clash {
            return Err(TrainError::config(
                "mist",
                format!("MIST does not support {other} yet: use one or the other"),
            ));
        }
    }
    if let Some(w) = d.weight_decay
        && !(w >= 0.0 && w.is_finite())
    {
        return Err(TrainError::config("weight_decay", "must be ≥ 0"));
    }
    if let Some(e) = d.early_stopping {
        if !(e.validation_fraction > 0.0 && e.validation_fraction < 1.0) {
            return Err(TrainError::config(
                "early_stopping",
                "the validation fraction must be in (0, 1)",
            ));
        }
        if e.patience == 0 {
            return Err(TrainError::config(
                "early_stopping",
                "the patience must be at least 1 epoch",
            ));
        }
        if cfg.checkpoint_dir.is_some() {
            return Err(TrainError::config(
                "early_stopping",
                "early stopping is not checkpointed yet: use one or the other",
            ));
        }
    }
    Ok(())
}

/// Serialises seeded initialisations: burn's initialisation RNG is one
/// per device, so two runs seeding and initialising at the same time (the
/// audit's shadow models) would interleave their draws.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Initialises a model with `init`, from `cfg.seed` when set (burn's RNG
/// serves initialisation only; DP noise never uses it). Every
/// initialisation holds [`INIT_LOCK`], seeded or not: an unseeded one
/// drawing between another's seeding and its draws would change them.
///
/// burn initialises parameters lazily, at their first use, so the model's
/// parameters are materialised here, under the lock: otherwise a model
/// would draw its initial weights in its first training step, after
/// another thread had re-seeded the device (an audit's shadows trained on
/// two threads came out different from one thread's, depending on timing).
fn seeded<M: burn::module::Module>(
    cfg: &TrainConfig,
    device: &Device,
    init: impl FnOnce() -> M,
) -> M {
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(seed) = cfg.seed {
        device.seed(seed);
    }
    let model = init();
    materialise(&model);
    model
}

/// Draws every lazily initialised parameter of `model` now.
fn materialise<M: burn::module::Module>(model: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
        fn visit_int<const D: usize>(
            &mut self,
            param: &burn::module::Param<Tensor<D, burn::tensor::Int>>,
        ) {
            let _ = param.val();
        }
        fn visit_bool<const D: usize>(
            &mut self,
            param: &burn::module::Param<Tensor<D, burn::tensor::Bool>>,
        ) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
}

/// What `run` needs besides the config, the data and the model.
pub(crate) struct Extra {
    /// Seconds spent computing features.
    pub(crate) feature_seconds: f64,
    /// Parameter averaging, if asked for.
    pub(crate) ema: Option<Ema>,
    /// Early stopping's validation split (features computed).
    pub(crate) validation: Option<Dataset>,
}

/// The scattering transform (J = 2, L = 8) for `data`'s image size.
pub(crate) fn scattering_for(data: &Dataset) -> Result<dpsgd_data::Scattering, TrainError> {
    let Some([_, h, w]) = data.image_shape() else {
        return Err(TrainError::config(
            "features",
            "ScatterNet features need image data",
        ));
    };
    dpsgd_data::Scattering::new(h, w, 2, 8)
        .map_err(|e| TrainError::config("features", e.to_string()))
}

/// ScatterNet features of `data`: the scattering transform, then
/// per-example group normalisation in `groups` groups (both per example: no
/// privacy cost).
pub(crate) fn scatter_features(
    data: &Dataset,
    scattering: &dpsgd_data::Scattering,
    groups: usize,
) -> Result<Dataset, TrainError> {
    let mut out = dpsgd_data::scatter_dataset(data, scattering)
        .map_err(|e| TrainError::config("features", e.to_string()))?;
    dpsgd_data::group_normalize(&mut out, groups)
        .map_err(|e| TrainError::config("features", e.to_string()))?;
    Ok(out)
}

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

/// What the training loop needs to continue from a checkpoint, saved in
/// the same file as the engine's ([`PrivacyEngine::save_checkpoint_with`]):
/// the two are always at the same step.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunState {
    /// [`settings`] of the run.
    settings: String,
    /// Epochs completed.
    epochs_done: usize,
    /// The engine's steps at the time: checked against the checkpoint's.
    steps: u64,
    /// The epoch history so far.
    history: Vec<EpochRecord>,
    /// The engine's warnings at the start of the run.
    warnings: Vec<String>,
}

/// The settings a resumed run must share with the checkpointed one, as
/// JSON text (compared as text: no float round trip): all of
/// [`TrainConfig`] but what may change between the two.
fn settings(cfg: &TrainConfig) -> Result<serde_json::Map<String, serde_json::Value>, TrainError> {
    let serde_json::Value::Object(mut map) =
        serde_json::to_value(cfg).map_err(|e| TrainError::config("resume", e.to_string()))?
    else {
        return Err(TrainError::config("resume", "settings are not an object"));
    };
    for key in ["checkpoint_dir", "resume", "save_model", "progress_epsilon"] {
        map.remove(key);
    }
    // σ calibrated for a target ε depends on the planned epochs.
    if !matches!(cfg.privacy, Privacy::TargetEpsilon(_)) {
        map.remove("epochs");
    }
    Ok(map)
}

/// Takes the checkpoint folder for this run, held until the value is
/// dropped: creates it for a fresh run (and refuses one that holds a
/// checkpoint: it would be overwritten), requires it for a resume, and
/// refuses a folder another run holds. Temporary files a killed run left
/// behind are removed (under the lock, none can be live).
fn take_checkpoint_dir(dir: &Path, resume: bool) -> Result<FolderLock, TrainError> {
    let refuse = |reason: String| TrainError::config("checkpoint_dir", reason);
    if resume && !dir.join(CHECKPOINT_FILE).is_file() {
        return Err(TrainError::config(
            "resume",
            format!("no checkpoint to resume in {}", dir.display()),
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| refuse(format!("cannot create {}: {e}", dir.display())))?;
    let lock = FolderLock::try_lock(dir)
        .map_err(|e| refuse(format!("cannot lock {}: {e}", dir.display())))?
        .ok_or_else(|| {
            refuse(format!(
                "{} is in use by another run (it holds {}/{})",
                dir.display(),
                dir.display(),
                FolderLock::FILE
            ))
        })?;
    if !resume && dir.join(CHECKPOINT_FILE).exists() {
        return Err(refuse(format!(
            "{} already holds a checkpoint: resume it, or use another folder",
            dir.display()
        )));
    }
    dpsgd_burn::io::remove_stale_temporaries(&dir.join(CHECKPOINT_FILE))
        .map_err(|e| refuse(format!("cannot tidy {}: {e}", dir.display())))?;
    Ok(lock)
}

/// Reads the loop's state from a checkpoint's caller state and checks it
/// against the run's settings and the engine restored beside it: the
/// settings, the epochs done (at most `cfg.epochs`), and the steps (the
/// engine's, `epochs_done` whole epochs of `steps_per_epoch`, and one
/// history record per epoch), so an edited epoch count can neither skip
/// nor repeat training.
fn read_run_state(
    cfg: &TrainConfig,
    path: &Path,
    bytes: &[u8],
    engine_steps: u64,
    steps_per_epoch: u64,
) -> Result<RunState, TrainError> {
    let refuse = |reason: String| {
        TrainError::config(
            "resume",
            format!("cannot resume from {}: {reason}", path.display()),
        )
    };
    if bytes.is_empty() {
        return Err(refuse(
            "it holds no training loop state (made by an older dpsgd, or by the library directly); start again in a new folder".into(),
        ));
    }
    let state: RunState =
        serde_json::from_slice(bytes).map_err(|e| refuse(format!("unreadable run state: {e}")))?;
    let saved: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&state.settings)
            .map_err(|e| refuse(format!("unreadable settings: {e}")))?;
    let current = settings(cfg)?;
    if serde_json::to_string(&current).ok().as_deref() != Some(state.settings.as_str()) {
        let differing: Vec<&str> = current
            .iter()
            .filter(|(k, v)| saved.get(*k).map(ToString::to_string) != Some(v.to_string()))
            .map(|(k, _)| k.as_str())
            .chain(
                saved
                    .keys()
                    .filter(|k| !current.contains_key(*k))
                    .map(String::as_str),
            )
            .collect();
        return Err(TrainError::config(
            "resume",
            format!(
                "the run's settings differ from the checkpoint's: {}",
                if differing.is_empty() {
                    "settings".to_owned()
                } else {
                    differing.join(", ")
                }
            ),
        ));
    }
    if state.epochs_done > cfg.epochs {
        return Err(TrainError::config(
            "epochs",
            format!(
                "the checkpoint has already done {} epochs, more than {}",
                state.epochs_done, cfg.epochs
            ),
        ));
    }
    let expected_steps = (state.epochs_done as u64).checked_mul(steps_per_epoch);
    let epochs_in_order = state
        .history
        .iter()
        .enumerate()
        .all(|(i, r)| r.epoch == i + 1);
    if state.steps != engine_steps
        || expected_steps != Some(engine_steps)
        || state.history.len() != state.epochs_done
        || !epochs_in_order
    {
        return Err(refuse(format!(
            "its state does not add up (edited?): {} epochs of {steps_per_epoch} steps, {} epoch records, the loop at step {}, the engine at step {engine_steps}",
            state.epochs_done,
            state.history.len(),
            state.steps
        )));
    }
    Ok(state)
}

/// Writes the engine's checkpoint, with the loop's state inside, into
/// `dir`.
fn save_checkpoint<M: Classifier>(
    cfg: &TrainConfig,
    dir: &Path,
    engine: &PrivacyEngine,
    model: &M,
    history: &[EpochRecord],
    warnings: &[String],
) -> Result<(), TrainError> {
    let path = dir.join(CHECKPOINT_FILE);
    let failed = |reason: String| TrainError::Save {
        path: path.clone(),
        reason,
    };
    let state = RunState {
        settings: serde_json::to_string(&settings(cfg)?).map_err(|e| failed(e.to_string()))?,
        epochs_done: history.last().map_or(0, |r| r.epoch),
        steps: engine.steps(),
        history: history.to_vec(),
        warnings: warnings.to_vec(),
    };
    let bytes = serde_json::to_vec(&state).map_err(|e| failed(e.to_string()))?;
    engine.save_checkpoint_with(&path, model, &bytes)?;
    Ok(())
}

/// The clipping policy of `cfg` for `model`.
fn clipping_for<M: burn::module::Module>(
    cfg: &TrainConfig,
    model: &M,
) -> Result<Clipping, TrainError> {
    Ok(match cfg.clipping {
        ClippingMode::Flat => Clipping::flat(cfg.max_grad_norm)?,
        ClippingMode::PerLayer => {
            // An equal share per layer: the whole gradient stays within C.
            let layers = layer_groups(&trainable_params(model)).len().max(1);
            Clipping::per_layer(vec![cfg.max_grad_norm / (layers as f64).sqrt(); layers])?
        }
        ClippingMode::Automatic => Clipping::automatic(cfg.max_grad_norm)?,
        ClippingMode::Adaptive => {
            Clipping::adaptive(cfg.max_grad_norm, 0.5, cfg.batch_size as f64 / 20.0)?
        }
    })
}

/// The DP-SGD settings of `cfg` for `model` trained on `data` for `epochs`
/// epochs (a target ε is calibrated over them); `None` without DP.
pub(crate) fn dp_config<M: burn::module::Module>(
    cfg: &TrainConfig,
    model: &M,
    data: &Dataset,
    epochs: usize,
) -> Result<Option<DpSgdConfig>, TrainError> {
    let base = DpSgdConfig::new(cfg.max_grad_norm)
        .with_clipping(clipping_for(cfg, model)?)
        .with_conv_strategy(cfg.conv_strategy)
        .with_accountant(cfg.accountant)
        .with_delta(cfg.delta)
        .with_allow_large_delta(cfg.allow_large_delta)
        .with_dataset(DatasetFingerprint {
            size: data.len(),
            hash: data.content_hash(),
        });
    let base = match cfg.max_physical_batch_size {
        Some(m) => base.with_max_physical_batch_size(m),
        None => base,
    };
    Ok(match cfg.privacy {
        Privacy::NonPrivate => None,
        Privacy::NoiseMultiplier(s) => Some(base.with_noise_multiplier(s)),
        Privacy::TargetEpsilon(e) => Some(base.with_target_epsilon(e, cfg.delta, epochs)),
    })
}

/// A privacy engine for `dp` over `sampler`'s data, its generators seeded
/// from `seed` when set.
pub(crate) fn start_engine(
    cfg: &TrainConfig,
    dp: DpSgdConfig,
    sampler: PoissonSampler,
    seed: Option<u64>,
) -> Result<PrivacyEngine, TrainError> {
    with_run_seed(dp, seed)
        .init(inner_optimizer(cfg), sampler)
        .map_err(|e| engine_error(cfg, e))
}

/// `dp` seeded with the run's seed, if any.
fn with_run_seed(dp: DpSgdConfig, seed: Option<u64>) -> DpSgdConfig {
    match seed {
        Some(seed) => dp.with_seed(seed),
        None => dp,
    }
}

/// An error of the engine's settings in the run's terms.
fn engine_error(cfg: &TrainConfig, e: dpsgd_core::Error) -> TrainError {
    match e {
        dpsgd_core::Error::InvalidParameter {
            name: "count_noise_std",
            reason,
            ..
        } => TrainError::config(
            "clipping",
            format!(
                "adaptive clipping releases its count with noise batch size / 20 = {}, too little for this σ ({reason}); use a larger batch size or another clipping mode",
                cfg.batch_size as f64 / 20.0
            ),
        ),
        e => e.into(),
    }
}

/// Refuses now, not after hours of training when ε is first asked for, a
/// fixed σ the accountant cannot bound over the `steps` planned (σ so small
/// that ε overflows, or a PLD grid too large to hold).
pub(crate) fn check_plan(
    cfg: &TrainConfig,
    p: &PrivacyEngine,
    steps: u64,
) -> Result<(), TrainError> {
    if let Privacy::NoiseMultiplier(_) = cfg.privacy {
        let remaining = steps.saturating_sub(p.steps());
        if remaining > 0 {
            let planned = Segment::new(p.noise_multiplier(), p.sampler().sample_rate(), remaining)?;
            p.optimizer()
                .accountant()
                .epsilon_after(planned, p.delta())?;
        }
    }
    Ok(())
}

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

fn run<M: Classifier + 'static>(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    mut model: M,
    extra: Extra,
    mut progress: impl FnMut(Progress),
) -> Result<(TrainReport, M), TrainError> {
    if let Some(mist) = cfg.defences.mist {
        return crate::mist::run(cfg, mist, train, test, device, model, extra, progress);
    }
    let Extra {
        feature_seconds,
        mut ema,
        validation,
    } = extra;
    let patience = cfg
        .defences
        .early_stopping
        .map_or(usize::MAX, |e| e.patience);
    // Early stopping: the best epoch so far, its validation accuracy and
    // model, and the epochs since.
    let mut best: Option<(usize, f64, M)> = None;
    let mut since_best = 0usize;
    let mut stopped_early = false;
    let sampler = PoissonSampler::new(train.len(), cfg.batch_size)?;
    let steps = cfg.epochs as u64 * sampler.steps_per_epoch();
    if steps == 0 {
        return Err(TrainError::config("epochs", "must be at least 1"));
    }
    let mut rng = match cfg.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s ^ 0x5eed),
        None => ChaCha20Rng::from_os_rng(),
    };
    let dp_config = dp_config(cfg, &model, train, cfg.epochs)?;
    let mut resumed = None;
    let mut checkpoint_lock = None;
    let mut privacy = match dp_config {
        None => None,
        Some(dp) if cfg.resume => {
            let dir = cfg.checkpoint_dir.as_deref().unwrap_or(Path::new("."));
            checkpoint_lock = Some(take_checkpoint_dir(dir, true)?);
            let path = dir.join(CHECKPOINT_FILE);
            debug_assert_eq!(
                dp.dataset,
                Some(DatasetFingerprint {
                    size: train.len(),
                    hash: train.content_hash(),
                })
            );
            // Nothing privacy-relevant is taken from the file: the engine
            // these settings give is rebuilt and the checkpoint must match it.
            let restored = with_run_seed(dp, cfg.seed)
                .resume(&path, inner_optimizer(cfg), sampler, model)
                .map_err(|e| match e {
                    e @ dpsgd_core::Error::Checkpoint { .. } => TrainError::Resume(e),
                    e => engine_error(cfg, e),
                })?;
            model = restored.model;
            let state = read_run_state(
                cfg,
                &path,
                &restored.caller_state,
                restored.engine.steps(),
                sampler.steps_per_epoch(),
            )?;
            resumed = Some(state);
            Some(restored.engine)
        }
        Some(dp) => {
            if let Some(dir) = &cfg.checkpoint_dir {
                checkpoint_lock = Some(take_checkpoint_dir(dir, false)?);
            }
            Some(start_engine(cfg, dp, sampler, cfg.seed)?)
        }
    };
    // Held to the end of training: a second run into the folder is refused.
    let _checkpoint_lock = checkpoint_lock;
    if let Some(p) = privacy.as_ref() {
        check_plan(cfg, p, steps)?;
    }
    let mut plain = inner_optimizer(cfg);
    // One loss per example: the mean over its views (itself, without
    // augmentation).
    // The defences' loss (RelaxLoss's branch per example under DP-SGD: a
    // batch statistic deciding every example's gradient would escape the
    // mechanism).
    let relax = relax_loss(cfg, privacy.is_some())?;
    // Atomic, so that data-parallel workers can share the loss function.
    let current_epoch = std::sync::atomic::AtomicUsize::new(1);
    // Workers on the devices of the coordinator's kind (distinct GPUs
    // where burn finds several; CPU threads otherwise).
    let parallel = (cfg.devices > 1)
        .then(|| {
            let workers = dpsgd_burn::parallel::DataParallel::for_device(device, cfg.devices)?;
            if cfg.all_reduce {
                workers.with_burn_all_reduce()
            } else {
                Ok(workers)
            }
        })
        .transpose()?;
    let loss_fn = |m: &M, b: &Batch| {
        let (logits, targets) = (m.logits(b.rows.0.clone()), b.rows.1.clone());
        let epoch = current_epoch.load(std::sync::atomic::Ordering::Relaxed);
        let per_row = training_losses(cfg, relax.as_ref(), logits, targets, epoch);
        if b.k == 1 {
            return per_row;
        }
        let n = per_row.dims()[0] / b.k;
        per_row.reshape([n, b.k]).mean_dim(1).reshape([n])
    };
    let mut view_rng = match cfg.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s ^ 0xa06),
        None => ChaCha20Rng::from_os_rng(),
    };
    let mut make_batch = |indices: &[usize]| -> Batch {
        match cfg.augment_multiplicity {
            1 => Augmented {
                rows: batch(train, indices, device),
                k: 1,
            },
            k => crate::augment::shifted_views(train, indices, k, &mut view_rng, device),
        }
    };
    let start = Instant::now();
    let steps_per_epoch = sampler.steps_per_epoch();
    let (mut epoch_loss, mut epoch_examples, mut final_loss) = (0.0, 0usize, f64::NAN);
    let (mut history, epochs_done, warnings) = match resumed {
        Some(state) => (state.history, state.epochs_done, state.warnings),
        None => (
            // Grown epoch by epoch: `epochs` is the caller's (1e9 would
            // reserve tens of gigabytes up front).
            Vec::new(),
            0,
            privacy
                .as_ref()
                .map_or_else(Vec::new, |p| p.warnings().to_vec()),
        ),
    };
    // A resumed run's epochs go on from the checkpoint's.
    let wall_offset = history.last().map_or(0.0, |r: &EpochRecord| r.wall_seconds);
    if let Some(last) = history.last() {
        final_loss = last.train_loss;
    }
    let mut eval_seconds = 0.0;
    // The model to report if training diverges: the end of the last
    // completed epoch (averaged, with EMA).
    let mut last_good = model.clone();
    // (step, epoch, what was seen) once training has diverged.
    let mut diverged = None;
    let mut steps_taken = epochs_done as u64 * steps_per_epoch;
    for step in epochs_done as u64 * steps_per_epoch + 1..=steps {
        let epoch = usize::try_from(step.div_ceil(steps_per_epoch)).unwrap_or(usize::MAX);
        current_epoch.store(epoch, std::sync::atomic::Ordering::Relaxed);
        let (indices, batch_loss, divergence) = match privacy.as_mut() {
            Some(p) => {
                let indices = p.sample_batch();
                let batch = make_batch(&indices);
                model = match &parallel {
                    Some(workers) => p.step_data_parallel(cfg.lr, model, &batch, loss_fn, workers),
                    None => p.step(cfg.lr, model, &batch, loss_fn),
                }
                .map_err(|r| r.error)?;
                (indices, last_step_loss(p), dp_divergence(&model, p))
            }
            None => {
                let indices = sampler.sample(&mut rng);
                if indices.is_empty() {
                    (indices, 0.0, None)
                } else {
                    let batch = make_batch(&indices);
                    let losses = loss_fn(&model, &batch);
                    let loss = f64::from(losses.clone().sum().into_scalar::<f32>());
                    if loss.is_finite() {
                        let grads = GradientsParams::from_grads(losses.mean().backward(), &model);
                        model = plain.step(cfg.lr, model, grads);
                        (indices, loss, None)
                    } else {
                        // Without DP there is nothing to protect: the
                        // batch's own loss decides.
                        (indices, loss, Some(format!("the batch's loss is {loss}")))
                    }
                }
            }
        };
        if let Some(ema) = ema.as_mut() {
            ema.update(&model);
        }
        if let Some(reason) = divergence {
            diverged = Some((step, epoch, reason));
            break;
        }
        epoch_loss += batch_loss;
        epoch_examples += indices.len();
        let end_of_epoch = step % steps_per_epoch == 0 || step == steps;
        let mut epoch_record = None;
        if end_of_epoch {
            // ε at most once per epoch, and only when someone uses it.
            let epsilon = match &privacy {
                Some(p) if cfg.progress_epsilon => Some(p.epsilon()?),
                _ => None,
            };
            let released = match &ema {
                Some(ema) => ema.apply(model.clone()),
                None => model.clone(),
            };
            let eval_start = Instant::now();
            let test_accuracy = accuracy(&released, test, device);
            eval_seconds += eval_start.elapsed().as_secs_f64();
            final_loss = epoch_loss / epoch_examples.max(1) as f64;
            epoch_loss = 0.0;
            epoch_examples = 0;
            let record = EpochRecord {
                epoch,
                train_loss: final_loss,
                test_accuracy,
                epsilon,
                wall_seconds: wall_offset + start.elapsed().as_secs_f64(),
            };
            history.push(record);
            if let (Some(dir), Some(p)) = (&cfg.checkpoint_dir, &privacy) {
                save_checkpoint(cfg, dir, p, &model, &history, &warnings)?;
            }
            if let Some(v) = &validation {
                let eval_start = Instant::now();
                let accuracy = accuracy(&released, v, device);
                eval_seconds += eval_start.elapsed().as_secs_f64();
                if best.as_ref().is_none_or(|b| accuracy > b.1) {
                    best = Some((epoch, accuracy, released.clone()));
                    since_best = 0;
                } else {
                    since_best += 1;
                }
            }
            last_good = released;
            epoch_record = Some(record);
            if since_best >= patience {
                stopped_early = true;
            }
        }
        progress(Progress {
            step,
            total_steps: steps,
            loss: batch_loss / indices.len().max(1) as f64,
            epsilon: epoch_record.and_then(|r| r.epsilon),
            test_accuracy: epoch_record.map(|r| r.test_accuracy),
            epoch,
            epoch_loss: epoch_record.map(|r| r.train_loss),
        });
        steps_taken = step;
        if stopped_early {
            break;
        }
    }
    let wall_seconds = start.elapsed().as_secs_f64();
    let mut warnings = warnings;
    add_engine_warnings(&mut warnings, privacy.iter());
    let early_stopping = match (&validation, best) {
        (Some(v), Some((best_epoch, validation_accuracy, model))) => {
            last_good = model;
            Some(crate::report::EarlyStopReport::new(
                best_epoch,
                history.last().map_or(0, |r| r.epoch),
                stopped_early,
                validation_accuracy,
                v.len(),
            ))
        }
        _ => None,
    };
    // Under DP the report accounts for the planned steps whether or when
    // the run stopped (early stopping, divergence): the stop is a function
    // of the released models (and of the validation records), so
    // post-processing of the whole planned run, which ε covers.
    let report = finish(
        cfg,
        train,
        test,
        device,
        &last_good,
        privacy.as_ref(),
        &sampler,
        if privacy.is_some() {
            steps
        } else {
            steps_taken
        },
        Finished {
            history,
            final_loss,
            warnings,
            wall_seconds,
            eval_seconds,
            feature_seconds,
            early_stopping,
            status: if diverged.is_some() {
                "diverged"
            } else {
                "completed"
            },
        },
    )?;
    conclude(report, last_good, diverged)
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
    pub(crate) early_stopping: Option<crate::report::EarlyStopReport>,
    pub(crate) final_loss: f64,
    pub(crate) warnings: Vec<String>,
    pub(crate) wall_seconds: f64,
    pub(crate) eval_seconds: f64,
    pub(crate) feature_seconds: f64,
    pub(crate) status: &'static str,
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
        save_model(model, path)?;
    }
    let privacy_report = match privacy {
        Some(p) => p.report_over(steps)?,
        None => PrivacyReport::non_private(sampler, steps, cfg.delta, cfg.seed),
    };
    Ok(TrainReport {
        not_covered_by_epsilon: NotCovered {
            note: "exact statistics of the private training data: not covered by epsilon",
            train_accuracy,
            final_loss,
            loss_threshold_auc: auc,
            dropped_examples: privacy.map_or(0, PrivacyEngine::dropped_examples),
            mist_submodels: None,
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
        devices: cfg.devices,
        conv_strategy: cfg.conv_strategy,
        warnings,
        gradient_method: match privacy.and_then(|p| p.last_step()).map(|s| &s.method) {
            None => "non-private".into(),
            Some(GradientMethod::Fallback { reason }) => format!("fallback: {reason}"),
            Some(_) => "fast path (ghost norms, book-keeping)".into(),
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
