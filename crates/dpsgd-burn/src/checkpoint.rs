//! Checkpoints of a private training run: model, inner optimizer state,
//! accountant history, noise and sampling generators — in ONE file, written
//! atomically and verified on load.
//!
//! Layout: `DPSGDCK1`, CRC-32 of everything after it (u32 LE), then three
//! length-prefixed (u64 LE) sections — a JSON header, the model's burnpack
//! record, the optimizer's burnpack record — and the trailer `DPSGDEND`.
//!
//! # Privacy
//!
//! A checkpoint is a **secret**: it holds the noise and sampling
//! generators' state, from which all later noise and batches follow, and
//! the not-yet-released model and optimizer state. The file is created
//! with mode 0600 (owner only) on Unix. An unseeded run is re-keyed from
//! the operating system on resume, so two runs resumed from one checkpoint
//! never share noise; a seeded run (not secure anyway) resumes exactly.

use crate::io::{Access, write_atomically};
use crate::privacy_engine::{DatasetFingerprint, DpSgdConfig, PrivacyEngine};
use crate::sampler::PoissonSampler;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use dpsgd_core::{DpOptimizer, DpState, Error, NoiseSource, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &[u8; 8] = b"DPSGDCK1";
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
        let mut body =
            Vec::with_capacity(header.len() + model_bytes.len() + optim_bytes.len() + 40);
        for section in [&header[..], &model_bytes[..], &optim_bytes[..]] {
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
        let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad(path, "not a dpsgd checkpoint (bad magic)"));
        }
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
        let mut sections = Vec::new();
        let mut at = 0usize;
        for name in ["header", "model", "optimizer"] {
            let len_bytes: [u8; 8] = body
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad(path, format!("truncated before the {name} section")))?;
            let len = u64::from_le_bytes(len_bytes) as usize;
            let section = body
                .get(at + 8..at + 8 + len)
                .ok_or_else(|| bad(path, format!("truncated inside the {name} section")))?;
            sections.push(section);
            at += 8 + len;
        }
        let mut header: Header = serde_json::from_slice(sections[0])
            .map_err(|e| bad(path, format!("unreadable header: {e}")))?;
        match header.config.dataset {
            Some(saved) if saved != dataset => {
                return Err(bad(
                    path,
                    format!(
                        "the data set differs from the run's: {} examples with hash {:016x}, the checkpoint was made on {} examples with hash {:016x}",
                        dataset.size, dataset.hash, saved.size, saved.hash
                    ),
                ));
            }
            None if dataset.size != header.dataset_size => {
                return Err(bad(
                    path,
                    format!(
                        "the data set differs from the run's: {} examples, the checkpoint was made on {}",
                        dataset.size, header.dataset_size
                    ),
                ));
            }
            _ => header.config.dataset = Some(dataset),
        }
        if header.config.seed.is_none() {
            // Never continue a secret stream that left this process in a
            // file: two resumes would share noise.
            header.dp.noise = NoiseSource::from_os();
            header.rng = ChaCha20Rng::from_os_rng();
        }
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(sections[1].to_vec()))
            .map_err(|e| bad(path, format!("model record: {e}")))?;
        let model = model
            .try_load_record(record)
            .map_err(|e| bad(path, format!("model does not match the checkpoint: {e}")))?;
        let inner = inner
            .from_bytes(Bytes::from_bytes_vec(sections[2].to_vec()))
            .map_err(|e| bad(path, format!("optimizer record: {e}")))?;
        let sampler = PoissonSampler::with_sample_rate(header.dataset_size, header.sample_rate)?;
        let clipping = header.dp.settings.clipping.clone();
        let engine = Self {
            engine: crate::engine::GradientEngine::new(clipping)
                .with_conv_strategy(header.config.conv_strategy),
            config: header.config,
            dp: DpOptimizer::from_state(inner, header.dp)?,
            sampler,
            rng: header.rng,
            planned_steps: header.planned_steps,
            delta: header.delta,
            warnings: Vec::new(),
            last: None,
            pending_batch: None,
            caller_batches: header.caller_batches,
            dropped_examples: header.dropped_examples,
        };
        Ok((engine, model))
    }
}
