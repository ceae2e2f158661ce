//! Checkpoints of a private training run: model, inner optimizer state,
//! accountant history, noise and sampling generators, and the caller's own
//! state (a training loop's epoch and history) — in ONE file, written
//! atomically and verified on load.
//!
//! Layout: `DPSGDCK2`, CRC-32 of everything after it (u32 LE), then four
//! length-prefixed (u64 LE) sections — a JSON header, the model's burnpack
//! record, the optimizer's burnpack record, the caller's state (opaque
//! bytes, possibly empty) — and the trailer `DPSGDEND`. Files of the first
//! layout (`DPSGDCK1`, three sections) are read with an empty caller state.
//!
//! One file holds everything a resume needs, so a crash (or `kill -9`) at
//! any moment leaves either the previous checkpoint or the next one, never
//! an engine at one step and a training loop at another.
//!
//! # Privacy
//!
//! A checkpoint is a **secret**: it holds the noise and sampling
//! generators' state, from which all later noise and batches follow, and
//! the not-yet-released model and optimizer state. The file is created
//! with mode 0600 (owner only) on Unix. An unseeded run is re-keyed from
//! the operating system on resume, so two runs resumed from one checkpoint
//! never share noise; a seeded run (not secure anyway) resumes exactly.
//!
//! # Tampering
//!
//! The CRC detects accidents, not an adversary (anyone can recompute it).
//! [`DpSgdConfig::resume`] therefore trusts nothing privacy-relevant in
//! the file: it rebuilds the engine the run's own settings give (σ
//! calibrated afresh, q, N, δ, clipping, budget, accountant) and refuses a
//! checkpoint whose settings differ from it, or whose accountant history is
//! not exactly `steps` steps at that (σ, q) — so the ε reported after a
//! resume is the ε of the run's settings over the steps the file records.
//! What it cannot check is the state itself: a forged model or optimizer
//! state is resumed as given, and so is the step count when history and
//! caller state are rolled back together (a model trained for more steps
//! than recorded then reports too small an ε): keep checkpoints where only
//! the run's owner can write (see docs/limitations.md).

use crate::io::{Access, write_atomically};
use crate::privacy_engine::{DatasetFingerprint, DpSgdConfig, PrivacyEngine};
use crate::sampler::PoissonSampler;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use dpsgd_accountant::Accountant;
use dpsgd_core::{Clipping, DpOptimizer, DpState, Error, NoiseSource, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The first layout: header, model, optimizer.
const MAGIC_V1: &[u8; 8] = b"DPSGDCK1";
/// The current layout: header, model, optimizer, caller state.
const MAGIC: &[u8; 8] = b"DPSGDCK2";
const TRAILER: &[u8; 8] = b"DPSGDEND";

#[derive(Serialize, Deserialize)]
struct Header {
    config: DpSgdConfig,
    dp: DpState,
    dataset_size: usize,
    sample_rate: f64,
    rng: ChaCha20Rng,
    planned_steps: Option<u64>,
    delta: f64,
    crate_version: String,
    #[serde(default)]
    caller_batches: u64,
    #[serde(default)]
    dropped_examples: u64,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A run restored by [`DpSgdConfig::resume`].
pub struct Resumed<M> {
    /// The engine, checked against the run's settings.
    pub engine: PrivacyEngine,
    /// The model, loaded with the saved parameters.
    pub model: M,
    /// What the caller saved with [`PrivacyEngine::save_checkpoint_with`]
    /// (empty when nothing was).
    pub caller_state: Vec<u8>,
}

impl DpSgdConfig {
    /// Resumes the run these settings describe from the checkpoint at
    /// `path`, trusting nothing privacy-relevant in the file.
    ///
    /// The engine a fresh start would build — [`DpSgdConfig::init`] with
    /// `inner` and `sampler`, σ calibrated afresh for a target — is the
    /// reference: the checkpoint's σ, q, N, δ, clipping, budget, planned
    /// steps, accountant and its settings must equal it, and its accountant
    /// history must be exactly its step count at that (σ, q). The ε reported
    /// from then on is thus the ε of these settings over the steps the
    /// file records (a checkpoint edited to claim σ = 100 for a σ = 1 run
    /// is refused, not believed). The data set must be the run's: its
    /// fingerprint ([`DpSgdConfig::with_dataset`]) when both have one, N
    /// otherwise. The warnings are those of the rebuilt engine.
    ///
    /// Taken from the file as they are, since nothing else records them:
    /// the step count (check it against your own record of the steps, as
    /// `dpsgd-train` checks its epochs: a history rolled back together with
    /// your state under-reports the steps the model was trained for), the
    /// model and optimizer state, a seeded run's generators, the count of
    /// steps whose batch the caller supplied, and of dropped examples.
    ///
    /// `model` is a freshly built model of the run's architecture; it comes
    /// back loaded with the saved parameters, `inner` with the saved
    /// optimizer state.
    ///
    /// # Errors
    ///
    /// As [`DpSgdConfig::init`] for invalid settings; [`Error::Checkpoint`]
    /// for a missing, truncated, corrupted or incompatible file, other data,
    /// or settings or a history that are not the run's, naming each
    /// difference.
    pub fn resume<M: Module>(
        &self,
        path: &Path,
        inner: ModuleOptimizer,
        sampler: PoissonSampler,
        model: M,
    ) -> Result<Resumed<M>> {
        let expected = self.init(inner.clone(), sampler)?;
        let warnings = expected.warnings.clone();
        let dataset = self.dataset.unwrap_or(DatasetFingerprint {
            size: sampler.dataset_size(),
            hash: 0,
        });
        let (mut engine, model, caller_state) =
            load(path, inner, model, dataset, self.dataset.is_some())?;
        let differences = differences(&engine, &expected)?;
        if !differences.is_empty() {
            return Err(bad(
                path,
                format!(
                    "does not match this run's settings (edited, or another run's): {}",
                    differences.join("; ")
                ),
            ));
        }
        engine.warnings = warnings;
        Ok(Resumed {
            engine,
            model,
            caller_state,
        })
    }
}

/// A clipping policy without its state: adaptive clipping's current C moves
/// every step (with noise) and is not privacy-relevant (the noise scales
/// with it); its target quantile, learning rate and count noise are.
fn policy(clipping: &Clipping) -> Clipping {
    match clipping {
        Clipping::Adaptive {
            target_quantile,
            learning_rate,
            count_noise_std,
            ..
        } => Clipping::Adaptive {
            max_grad_norm: 0.0,
            target_quantile: *target_quantile,
            learning_rate: *learning_rate,
            count_noise_std: *count_noise_std,
        },
        other => other.clone(),
    }
}

/// What differs between a restored engine and the one the run's settings
/// give, in words; empty when nothing does.
fn differences(saved: &PrivacyEngine, expected: &PrivacyEngine) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut compare = |what: &str, saved: String, expected: String| {
        if saved != expected {
            found.push(format!(
                "{what} is {saved} in the checkpoint, {expected} here"
            ));
        }
    };
    // The unit of privacy: a user-level run resumed as a record-level one
    // (or with another K) would train under the wrong guarantee.
    compare(
        "the unit of privacy",
        format!("{:?}", saved.config.privacy_unit),
        format!("{:?}", expected.config.privacy_unit),
    );
    let (s, e) = (saved.dp.settings(), expected.dp.settings());
    compare(
        "the noise multiplier σ",
        format!("{:?}", s.noise_multiplier),
        format!("{:?}", e.noise_multiplier),
    );
    compare(
        "the sampling rate q",
        format!("{:?}", s.sample_rate),
        format!("{:?}", e.sample_rate),
    );
    compare("N", s.dataset_size.to_string(), e.dataset_size.to_string());
    compare(
        "the clipping",
        format!("{:?}", policy(&s.clipping)),
        format!("{:?}", policy(&e.clipping)),
    );
    compare(
        "the accountant",
        s.accountant.to_string(),
        e.accountant.to_string(),
    );
    compare(
        "the budget",
        format!("{:?}", s.budget),
        format!("{:?}", e.budget),
    );
    compare(
        "δ",
        format!("{:?}", saved.delta),
        format!("{:?}", expected.delta),
    );
    compare(
        "the planned steps",
        format!("{:?}", saved.planned_steps),
        format!("{:?}", expected.planned_steps),
    );
    compare(
        "the sampler",
        format!("{:?}", saved.sampler),
        format!("{:?}", expected.sampler),
    );
    // The settings as given; how examples are batched and convolved is
    // not privacy-relevant.
    let (sc, ec) = (&saved.config, &expected.config);
    compare(
        "the clipping asked for",
        format!("{:?}", policy(&sc.clipping)),
        format!("{:?}", policy(&ec.clipping)),
    );
    compare(
        "the noise multiplier asked for",
        format!("{:?}", sc.noise_multiplier),
        format!("{:?}", ec.noise_multiplier),
    );
    compare(
        "the target",
        format!("{:?}", sc.target),
        format!("{:?}", ec.target),
    );
    compare(
        "the δ asked for",
        format!("{:?}", sc.delta),
        format!("{:?}", ec.delta),
    );
    compare(
        "the accountant asked for",
        sc.accountant.to_string(),
        ec.accountant.to_string(),
    );
    compare(
        "the seed",
        format!("{:?}", sc.seed),
        format!("{:?}", ec.seed),
    );
    compare(
        "the budget's enforcement",
        sc.enforce_budget.to_string(),
        ec.enforce_budget.to_string(),
    );
    compare(
        "the large-δ allowance",
        sc.allow_large_delta.to_string(),
        ec.allow_large_delta.to_string(),
    );
    // The history: rebuilt from the run's (σ, q) over the checkpoint's
    // step count, with the run's own accountant settings.
    let steps = saved.steps();
    let mut rebuilt = expected.dp.accountant().clone();
    if steps > 0 {
        rebuilt.record(e.noise_multiplier, e.sample_rate, steps)?;
    }
    if &rebuilt != saved.dp.accountant() {
        found.push(format!(
            "the accountant's history is not {steps} steps at σ = {}, q = {} with this run's accountant settings",
            e.noise_multiplier, e.sample_rate
        ));
    }
    Ok(found)
}

impl PrivacyEngine {
    /// Writes a checkpoint of `model` and this engine to `path`, through a
    /// temporary file in the same folder, synced and renamed over `path`:
    /// a crash at any point leaves either the old checkpoint or the new one.
    ///
    /// The file is a secret (see the module's `# Privacy`): it is created
    /// readable by its owner only (mode 0600 on Unix).
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`] on I/O or serialisation failure.
    pub fn save_checkpoint<M: Module>(&self, path: &Path, model: &M) -> Result<()> {
        self.save_checkpoint_with(path, model, &[])
    }

    /// [`PrivacyEngine::save_checkpoint`] with the caller's own state (a
    /// training loop's epoch, history, …) in the same file, so the two can
    /// never be at different steps; [`DpSgdConfig::resume`] gives it back.
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`] on I/O or serialisation failure.
    pub fn save_checkpoint_with<M: Module>(
        &self,
        path: &Path,
        model: &M,
        caller_state: &[u8],
    ) -> Result<()> {
        let header = Header {
            config: self.config.clone(),
            dp: self.dp.state(),
            dataset_size: self.sampler.dataset_size(),
            sample_rate: self.sampler.sample_rate(),
            rng: self.rng.clone(),
            planned_steps: self.planned_steps,
            delta: self.delta,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            caller_batches: self.caller_batches,
            dropped_examples: self.dropped_examples,
        };
        let header = serde_json::to_vec(&header).map_err(|e| bad(path, format!("header: {e}")))?;
        let model_bytes = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| bad(path, format!("model record: {e}")))?;
        let optim_bytes = self
            .dp
            .inner()
            .into_bytes()
            .map_err(|e| bad(path, format!("optimizer record: {e}")))?;
        let sections = [
            &header[..],
            &model_bytes[..],
            &optim_bytes[..],
            caller_state,
        ];
        let mut body = Vec::with_capacity(sections.iter().map(|s| s.len() + 8).sum::<usize>() + 8);
        for section in sections {
            body.extend_from_slice(&(section.len() as u64).to_le_bytes());
            body.extend_from_slice(section);
        }
        body.extend_from_slice(TRAILER);
        let crc = crc32fast::hash(&body);
        let mut file = Vec::with_capacity(MAGIC.len() + 4 + body.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&crc.to_le_bytes());
        file.extend_from_slice(&body);
        write_atomically(path, &file, Access::OwnerOnly)
            .map_err(|e| bad(path, format!("write failed: {e}")))
    }

    /// Restores a run from a checkpoint: the engine (accountant history,
    /// sampling and noise state, settings), `inner` loaded with the saved
    /// optimizer state, and `model` (a freshly built model of the same
    /// architecture) loaded with the saved parameters. `dataset` is the
    /// fingerprint of the caller's training data: it must match the one the
    /// run was started with (or, for a run started without one, its size
    /// must be the run's N).
    ///
    /// A resumed run reports exactly the ε of the uninterrupted one. When
    /// seeded it also produces the same parameters; when not, the noise and
    /// sampling generators are re-keyed from the operating system.
    ///
    /// This takes the file's privacy settings as they are: a checkpoint
    /// edited by hand (its checksum recomputed) is believed. Prefer
    /// [`DpSgdConfig::resume`], which checks them against the run's own.
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`] for a missing, truncated, corrupted or
    /// incompatible file, or a dataset that is not the run's, naming what
    /// is wrong.
    pub fn resume<M: Module>(
        path: &Path,
        inner: ModuleOptimizer,
        model: M,
        dataset: DatasetFingerprint,
    ) -> Result<(Self, M)> {
        load(path, inner, model, dataset, true).map(|(engine, model, _)| (engine, model))
    }
}

/// The caller's state in the checkpoint at `path` (empty for a file of
/// the first layout, or when none was saved), read without restoring
/// anything: a caller can check its own settings first and refuse with its
/// own words before [`DpSgdConfig::resume`] compares the engine's. The
/// file is checked (magic, checksum, lengths) as by a resume.
///
/// # Errors
///
/// [`Error::Checkpoint`] for a missing, truncated or corrupted file.
pub fn read_caller_state(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let [_, _, _, caller_state] = sections(path, &bytes)?;
    Ok(caller_state)
}

/// The sections of the checkpoint at `path`, checked for magic, trailer,
/// checksum and lengths: header, model, optimizer, caller state (empty for
/// the first layout).
fn sections(path: &Path, bytes: &[u8]) -> Result<[Vec<u8>; 4]> {
    if bytes.len() < 12 {
        return Err(bad(
            path,
            format!(
                "truncated: {} bytes, too short for a checkpoint",
                bytes.len()
            ),
        ));
    }
    let count = match &bytes[..8] {
        m if m == MAGIC => 4,
        m if m == MAGIC_V1 => 3,
        _ => return Err(bad(path, "not a dpsgd checkpoint (bad magic)")),
    };
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let body = &bytes[12..];
    if !body.ends_with(TRAILER) {
        return Err(bad(
            path,
            format!("truncated: {} bytes and no end marker", bytes.len()),
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err(bad(path, "corrupted: checksum mismatch"));
    }
    let mut out: [Vec<u8>; 4] = Default::default();
    let mut at = 0usize;
    let names = ["header", "model", "optimizer", "caller state"];
    for (slot, name) in out.iter_mut().zip(names).take(count) {
        let len_bytes: [u8; 8] = body
            .get(at..at.saturating_add(8))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(path, format!("truncated before the {name} section")))?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes))
            .map_err(|_| bad(path, format!("the {name} section's length is impossible")))?;
        let start = at + 8;
        let section = start
            .checked_add(len)
            .and_then(|end| body.get(start..end))
            .ok_or_else(|| bad(path, format!("truncated inside the {name} section")))?;
        *slot = section.to_vec();
        at = start + len;
    }
    if at + TRAILER.len() != body.len() {
        return Err(bad(path, "the sections do not end at the end marker"));
    }
    Ok(out)
}

/// Reads and restores the checkpoint at `path`. With `fingerprinted`, a
/// fingerprint stored in the file must equal `dataset`; otherwise only N
/// is compared.
fn load<M: Module>(
    path: &Path,
    inner: ModuleOptimizer,
    model: M,
    dataset: DatasetFingerprint,
    fingerprinted: bool,
) -> Result<(PrivacyEngine, M, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let [header, model_bytes, optim_bytes, caller_state] = sections(path, &bytes)?;
    let mut header: Header = serde_json::from_slice(&header)
        .map_err(|e| bad(path, format!("unreadable header: {e}")))?;
    match header.config.dataset {
        Some(saved) if fingerprinted && saved != dataset => {
            return Err(bad(
                path,
                // The sizes only: a content hash of the private data is a
                // fingerprint of it (a candidate data set can be checked
                // against it), and an error message is not the place.
                format!(
                    "the data set differs from the run's: {} examples, the checkpoint was made on {} examples with other contents",
                    dataset.size, saved.size
                ),
            ));
        }
        _ if dataset.size != header.dataset_size => {
            return Err(bad(
                path,
                format!(
                    "the data set differs from the run's: {} examples, the checkpoint was made on {}",
                    dataset.size, header.dataset_size
                ),
            ));
        }
        _ if fingerprinted => header.config.dataset = Some(dataset),
        _ => {}
    }
    if header.dp.noise.is_secure() != header.config.seed.is_none() {
        return Err(bad(
            path,
            format!(
                "the noise generator is marked {} but the run is {} (edited?)",
                if header.dp.noise.is_secure() {
                    "secure"
                } else {
                    "seeded"
                },
                if header.config.seed.is_none() {
                    "unseeded"
                } else {
                    "seeded"
                }
            ),
        ));
    }
    if header.config.seed.is_none() {
        // Never continue a secret stream that left this process in a
        // file: two resumes would share noise.
        header.dp.noise = NoiseSource::from_os();
        header.rng = ChaCha20Rng::from_os_rng();
    }
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(model_bytes))
        .map_err(|e| bad(path, format!("model record: {e}")))?;
    let model = model
        .try_load_record(record)
        .map_err(|e| bad(path, format!("model does not match the checkpoint: {e}")))?;
    let inner = inner
        .from_bytes(Bytes::from_bytes_vec(optim_bytes))
        .map_err(|e| bad(path, format!("optimizer record: {e}")))?;
    let sampler = PoissonSampler::with_sample_rate(header.dataset_size, header.sample_rate)
        .map_err(|e| bad(path, format!("invalid sampler: {e}")))?;
    let clipping = header.dp.settings.clipping.clone();
    let engine = PrivacyEngine {
        engine: crate::engine::GradientEngine::new(clipping)
            .with_conv_strategy(header.config.conv_strategy)
            .with_pass_size(header.config.pass_size),
        config: header.config,
        dp: DpOptimizer::from_state(inner, header.dp)
            .map_err(|e| bad(path, format!("invalid settings: {e}")))?,
        sampler,
        rng: header.rng,
        planned_steps: header.planned_steps,
        delta: header.delta,
        warnings: Vec::new(),
        last: None,
        pending_batch: None,
        caller_batches: header.caller_batches,
        dropped_examples: header.dropped_examples,
        observed: None,
        release: None,
    };
    Ok((engine, model, caller_state))
}
