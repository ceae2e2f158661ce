//! The training loop's checkpoint: its state saved inside the engine's
//! checkpoint file, the folder's lock, and the checks a resume makes.

use super::released::{LedgerMark, RELEASED_FILE, Redone, redone_before, redone_steps};
use crate::config::{CHECKPOINT_FILE, Privacy, TrainConfig};
use crate::error::TrainError;
use crate::models::Classifier;
use crate::report::EpochRecord;
use dpsgd_accountant::{Accountant, AnyAccountant};
use dpsgd_burn::PrivacyEngine;
use dpsgd_burn::io::FolderLock;
use std::path::Path;

/// What the training loop needs to continue from a checkpoint, saved in
/// the same file as the engine's ([`PrivacyEngine::save_checkpoint_with`]):
/// the two are always at the same step.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct RunState {
    /// [`settings`] of the run.
    pub(crate) settings: String,
    /// Epochs completed.
    pub(crate) epochs_done: usize,
    /// The engine's steps at the time: checked against the checkpoint's.
    pub(crate) steps: u64,
    /// The epoch history so far.
    pub(crate) history: Vec<EpochRecord>,
    /// Discarded steps charged at resumes (in the engine's steps): see
    /// [`super::released`].
    #[serde(default)]
    pub(crate) redone: Vec<Redone>,
    /// The ledger of released steps as it stood (`None`: a checkpoint
    /// older than ledgers).
    #[serde(default)]
    pub(crate) ledger: Option<LedgerMark>,
}

/// The settings a resumed run must share with the checkpointed one, as
/// JSON text (compared as text: no float round trip): all of
/// [`TrainConfig`] but what may change between the two.
fn settings(cfg: &TrainConfig) -> Result<serde_json::Map<String, serde_json::Value>, TrainError> {
    let serde_json::Value::Object(mut map) =
        serde_json::to_value(cfg).map_err(|e| TrainError::config_from("resume", e))?
    else {
        return Err(TrainError::config("resume", "settings are not an object"));
    };
    for key in ["checkpoint_dir", "resume", "save_model", "progress_epsilon"] {
        map.remove(key);
    }
    // The workers are a count, wherever they run: remote workers and as
    // many in-process ones clip the same shards (a run whose worker died
    // resumes on others, or on threads).
    // (At least 2: one remote worker clips sharded, as `devices: 1`, the
    // unsharded step, does not.)
    if !cfg.remote_workers.is_empty() {
        map.insert("devices".into(), cfg.remote_workers.len().max(2).into());
    }
    map.remove("remote_workers");
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
pub(crate) fn take_checkpoint_dir(dir: &Path, resume: bool) -> Result<FolderLock, TrainError> {
    let refuse = |reason: String| TrainError::config("checkpoint_dir", reason);
    if resume && !dir.join(CHECKPOINT_FILE).is_file() {
        return Err(TrainError::config(
            "resume",
            format!("no checkpoint to resume in {}", dir.display()),
        ));
    }
    // A checkpoint behind a link would be rewritten in place, where a kill
    // mid-write loses it, and outside the folder the lock guards.
    if std::fs::symlink_metadata(dir.join(CHECKPOINT_FILE)).is_ok_and(|m| !m.file_type().is_file())
    {
        return Err(refuse(format!(
            "{} is not a regular file (a link or a device): checkpoints are replaced atomically, only in the folder itself",
            dir.join(CHECKPOINT_FILE).display()
        )));
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
    for file in [CHECKPOINT_FILE, RELEASED_FILE] {
        dpsgd_burn::io::remove_stale_temporaries(&dir.join(file))
            .map_err(|e| refuse(format!("cannot tidy {}: {e}", dir.display())))?;
    }
    Ok(lock)
}

/// Reads the loop's state from the checkpoint at `path` (its caller state,
/// before the engine is restored, so that a setting changed by mistake is
/// named in the run's own words) and checks it against the run's settings
/// and the epochs planned.
pub(crate) fn read_run_state(cfg: &TrainConfig, path: &Path) -> Result<RunState, TrainError> {
    let refuse = |reason: String| {
        TrainError::config(
            "resume",
            format!("cannot resume from {}: {reason}", path.display()),
        )
    };
    let bytes = dpsgd_burn::read_caller_state(path).map_err(TrainError::Resume)?;
    if bytes.is_empty() {
        return Err(refuse(
            "it holds no training loop state (made by an older dpsgd, or by the library directly); start again in a new folder".into(),
        ));
    }
    let state: RunState =
        serde_json::from_slice(&bytes).map_err(|e| refuse(format!("unreadable run state: {e}")))?;
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
    Ok(state)
}

/// Checks the loop's state against the engine restored beside it (whose
/// settings and history were checked against the run's): the steps (the
/// engine's, `epochs_done` whole epochs of `steps_per_epoch` and the
/// discarded steps charged at resumes, one history record per epoch), so an epoch count edited alone can neither skip nor
/// repeat training; then replaces what the file says of ε per epoch by
/// the accountant's ε after that epoch's steps. (A history rolled back
/// together with the engine's is not detectable: see
/// [`dpsgd_burn::DpSgdConfig::resume`].)
pub(crate) fn check_run_state(
    state: &mut RunState,
    path: &Path,
    engine: &PrivacyEngine,
    steps_per_epoch: u64,
) -> Result<(), TrainError> {
    let engine_steps = engine.steps();
    let expected_steps = (state.epochs_done as u64)
        .checked_mul(steps_per_epoch)
        .and_then(|s| s.checked_add(redone_steps(&state.redone)));
    let charges_in_order = state
        .redone
        .iter()
        .all(|r| r.steps > 0 && r.after_epochs <= state.epochs_done);
    let epochs_in_order = state
        .history
        .iter()
        .enumerate()
        .all(|(i, r)| r.epoch == i + 1);
    if state.steps != engine_steps
        || expected_steps != Some(engine_steps)
        || state.history.len() != state.epochs_done
        || !epochs_in_order
        || !charges_in_order
    {
        return Err(TrainError::config(
            "resume",
            format!(
                "cannot resume from {}: its state does not add up (edited?): {} epochs of {steps_per_epoch} steps, {} epoch records, the loop at step {}, the engine at step {engine_steps}",
                path.display(),
                state.epochs_done,
                state.history.len(),
                state.steps
            ),
        ));
    }
    let settings = engine.optimizer().settings();
    for record in &mut state.history {
        if record.epsilon.is_some() {
            let mut accountant = AnyAccountant::new(settings.accountant);
            accountant.record(
                settings.noise_multiplier,
                settings.sample_rate,
                record.epoch as u64 * steps_per_epoch + redone_before(&state.redone, record.epoch),
            )?;
            record.epsilon = Some(accountant.epsilon(engine.delta())?);
        }
    }
    Ok(())
}

/// Writes the engine's checkpoint, with the loop's state inside, into
/// `dir`.
pub(crate) fn save_checkpoint<M: Classifier>(
    cfg: &TrainConfig,
    dir: &Path,
    engine: &PrivacyEngine,
    model: &M,
    history: &[EpochRecord],
    redone: &[Redone],
    ledger: Option<LedgerMark>,
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
        redone: redone.to_vec(),
        ledger,
    };
    let bytes = serde_json::to_vec(&state).map_err(|e| failed(e.to_string()))?;
    engine.save_checkpoint_with(&path, model, &bytes)?;
    Ok(())
}
