//! A saved model that can be loaded again: burn's record bytes (what
//! [`crate::TrainConfig::save_model`] writes) and, beside them, a *model
//! card* (`<file>.card.json`) with the architecture the bytes fit and the
//! privacy report of the run that made them.
//!
//! ```no_run
//! # fn main() -> Result<(), dpsgd_train::TrainError> {
//! let (model, card) = dpsgd_train::TrainedModel::load("model.bin".as_ref())?;
//! println!("{} classes, ε = {:?}", model.classes(), card.privacy.epsilon);
//! # Ok(()) }
//! ```
//!
//! # What the card is, and is not
//!
//! The card's privacy figures are what the training run reported. Anyone
//! who can write the file can change them: the card is a description,
//! not evidence. The record bytes are checked against the architecture
//! (every tensor's shape) when loaded, and against the card's byte count.

use crate::config::{Features, ModelKind, TrainConfig};
use crate::error::TrainError;
use crate::models::{Activation, Cnn, Mlp};
use crate::report::TrainReport;
use crate::trained::{Net, TrainedModel};
use burn::module::Module;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The card's `format`.
pub const CARD_FORMAT: &str = "dpsgd-model-card/1";

/// The architecture and privacy of a saved model (the `.card.json` beside
/// its record bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// [`CARD_FORMAT`].
    pub format: String,
    /// `logreg`, `mlp` or `cnn`.
    pub model: String,
    /// Hidden layer sizes (the MLP's; empty otherwise).
    pub hidden: Vec<usize>,
    /// `relu` or `tanh`.
    pub activation: String,
    /// The CNN's weight standardisation.
    pub weight_standardization: bool,
    /// The feature transform in front of the network.
    pub features: Features,
    /// Input values per example (before the feature transform).
    pub input_len: usize,
    /// `[channels, height, width]` of image inputs.
    pub input_shape: Option<[usize; 3]>,
    /// Number of classes.
    pub classes: usize,
    /// Length of the record bytes.
    pub record_bytes: u64,
    /// CRC-32 of the record bytes: the card belongs to these bytes (a
    /// check against mix-ups, not against someone who edits both).
    pub record_crc32: u32,
    /// The run's privacy.
    pub privacy: CardPrivacy,
}

/// What a served model says about its privacy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardPrivacy {
    /// ε (`None`: trained without DP, no guarantee).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// The unit of privacy (`record` or `user`).
    pub unit: String,
    /// Whether the run was seeded (not secure) or used OS entropy.
    pub secure: bool,
    /// The privacy units of the training set the run was given (records,
    /// or users at user level), before any validation hold-out or MIST
    /// partition: public, as N is. An auditor checks that it loaded as
    /// many members. `None` in a card that does not say.
    #[serde(default)]
    pub members: Option<usize>,
    /// Of `members`, the records the run held out of training for early
    /// stopping's validation: ε does **not** cover them (the choice of the
    /// released epoch is an exact statistic of them). 0 when nothing was
    /// held out, and in a card that does not say.
    #[serde(default)]
    pub not_covered_members: usize,
    /// What else on this card ε does not cover: `Some` when the run's
    /// training set was drawn by a split that depends on the records (an
    /// audit's split by user at the record level), `None` otherwise, and
    /// in a card that does not say.
    #[serde(default)]
    pub not_covered_by_epsilon: Option<CardNotCovered>,
}

/// The card's fields that are statistics of the private data, not covered
/// by ε (issue 24's rule: a statistic of the private data that is released
/// anyway is declared), and why: in the card's privacy section as
/// `not_covered_by_epsilon`, with the same `split` as the audit report's
/// `not_covered_by_epsilon.split`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardNotCovered {
    /// What this section is.
    pub note: String,
    /// The card's fields (JSON pointers into the card) that depend on the
    /// private records.
    pub fields: Vec<String>,
    /// How the data was split: at the record level with user ids, `dpsgd
    /// audit` splits by user, so one record's user id can move the parts'
    /// sizes and with them N (`members`), q, the steps and ε.
    pub split: String,
}

impl CardNotCovered {
    /// What [`CardNotCovered::note`] says.
    pub const NOTE: &'static str = "the training set was split off by a rule that reads the private records: these fields of the card depend on them and are not covered by epsilon";

    /// The fields a split by user moves: N (`members`), ε through q and
    /// the steps, δ where it is the default for N, and the validation
    /// hold-out, a fraction of N.
    pub const SPLIT_FIELDS: [&'static str; 4] = [
        "/privacy/members",
        "/privacy/epsilon",
        "/privacy/delta",
        "/privacy/not_covered_members",
    ];

    /// The declaration of a training set split off as `split` says
    /// ([`crate::audit::AuditNotCovered::split`]).
    pub fn split(split: &str) -> Self {
        Self {
            note: Self::NOTE.to_owned(),
            fields: Self::SPLIT_FIELDS.map(str::to_owned).to_vec(),
            split: split.to_owned(),
        }
    }
}

/// Where the card of the model saved at `model` lives: `<model>.card.json`.
pub fn card_path(model: &Path) -> PathBuf {
    let mut name = model.as_os_str().to_owned();
    name.push(".card.json");
    PathBuf::from(name)
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
    }
}

impl TrainedModel {
    /// The card of this model, trained with `cfg` on `members` privacy
    /// units, whose run reported `report`, for its saved `record` bytes.
    pub fn card(
        &self,
        cfg: &TrainConfig,
        report: &TrainReport,
        members: usize,
        record: &[u8],
    ) -> ModelCard {
        ModelCard {
            format: CARD_FORMAT.to_owned(),
            model: match cfg.model {
                ModelKind::Logreg => "logreg",
                ModelKind::Mlp => "mlp",
                ModelKind::Cnn => "cnn",
            }
            .to_owned(),
            hidden: match cfg.model {
                ModelKind::Mlp => cfg.hidden.clone(),
                _ => Vec::new(),
            },
            activation: activation_name(cfg.activation).to_owned(),
            weight_standardization: cfg.weight_standardization,
            features: self.features(),
            input_len: self.input_len(),
            input_shape: self.input_shape(),
            classes: self.classes(),
            record_bytes: record.len() as u64,
            record_crc32: crc32fast::hash(record),
            privacy: CardPrivacy {
                epsilon: report.privacy.epsilon,
                delta: report.privacy.delta,
                unit: report.privacy.privacy_unit.clone(),
                secure: report.privacy.secure,
                members: Some(members),
                not_covered_members: report.early_stopping.map_or(0, |e| e.validation_size),
                not_covered_by_epsilon: None,
            },
        }
    }

    /// Loads the model saved at `path` (burn's record bytes, as
    /// [`crate::TrainConfig::save_model`] writes them) with its card
    /// (`<path>.card.json`, [`card_path`]) on the default device.
    ///
    /// # Errors
    ///
    /// [`TrainError::Load`] when either file cannot be read, the card is
    /// not a [`CARD_FORMAT`] card or describes no model this crate builds,
    /// or the bytes do not fit the architecture it describes.
    pub fn load(path: &Path) -> Result<(Self, ModelCard), TrainError> {
        let failed = |reason: String| TrainError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let card_file = card_path(path);
        let text = std::fs::read_to_string(&card_file)
            .map_err(|e| failed(format!("reading its card {}: {e}", card_file.display())))?;
        let card: ModelCard = serde_json::from_str(&text)
            .map_err(|e| failed(format!("its card {}: {e}", card_file.display())))?;
        if card.format != CARD_FORMAT {
            return Err(failed(format!(
                "its card has format `{}`, expected `{CARD_FORMAT}`",
                card.format
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| failed(format!("reading it: {e}")))?;
        if bytes.len() as u64 != card.record_bytes || crc32fast::hash(&bytes) != card.record_crc32 {
            return Err(failed(format!(
                "its {} bytes are not the ones its card describes ({} bytes, CRC-32 {:08x})",
                bytes.len(),
                card.record_bytes,
                card.record_crc32
            )));
        }
        let activation = match card.activation.as_str() {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            other => return Err(failed(format!("unknown activation `{other}`"))),
        };
        if card.classes < 2 || card.input_len == 0 {
            return Err(failed(
                "its card has fewer than 2 classes or no inputs".into(),
            ));
        }
        // Nothing is built that the bytes could not hold: every parameter
        // takes at least 4 bytes (f32) of the record, and every model here
        // has more parameters than inputs (before or after ScatterNet).
        let at_most = bytes.len() / 4;
        let too_big = |what: &str| {
            failed(format!(
                "its card describes {what} larger than its {} bytes hold",
                bytes.len()
            ))
        };
        if let Some(shape) = card.input_shape
            && shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(card.input_len)
        {
            return Err(failed(format!(
                "its card's input shape {shape:?} does not hold {} values",
                card.input_len
            )));
        }
        if card.classes > at_most || card.input_len > at_most {
            return Err(too_big("a model"));
        }
        // The network's input: the data's, or the ScatterNet features'.
        let scattered = match (card.features, card.input_shape) {
            (Features::Raw, shape) => shape,
            (Features::Scatter { .. }, Some([c, h, w])) => {
                let s = dpsgd_data::Scattering::new(h, w, 2, 8)
                    .map_err(|e| failed(format!("ScatterNet features: {e}")))?;
                let (sh, sw) = s.output_size();
                let channels = c
                    .checked_mul(s.channels())
                    .ok_or_else(|| failed("its card's input shape overflows".into()))?;
                Some([channels, sh, sw])
            }
            (Features::Scatter { .. }, None) => {
                return Err(failed("ScatterNet features need an image shape".into()));
            }
        };
        let net_inputs = match scattered {
            Some(s) => s
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| failed("its card's input shape overflows".into()))?,
            None => card.input_len,
        };
        if net_inputs > at_most {
            return Err(too_big("a model"));
        }
        if card.model == "cnn" {
            // The CNNs' first dense layer alone has more than 2 weights per
            // input value (Cnn::new: about 64; Cnn::for_input on ScatterNet's
            // 81 channels: about 3), and their sides must allow the strides.
            let min_side = match scattered {
                Some([1, ..]) => Cnn::MIN_SIZE,
                _ => 2,
            };
            if net_inputs.checked_mul(2).is_none_or(|p| p > at_most) {
                return Err(too_big("a CNN"));
            }
            if let Some([_, h, w]) = scattered
                && (h < min_side || w < min_side)
            {
                return Err(failed(format!(
                    "its card's images of {h}×{w} are too small for the CNN (at least {min_side}×{min_side})"
                )));
            }
        }
        if matches!(card.model.as_str(), "logreg" | "mlp") {
            let dims = match card.model.as_str() {
                "logreg" => vec![net_inputs, card.classes],
                _ => [&[net_inputs][..], &card.hidden, &[card.classes][..]].concat(),
            };
            let params = dims.windows(2).try_fold(0usize, |acc, w| {
                w[0].checked_add(1)?.checked_mul(w[1])?.checked_add(acc)
            });
            if params.is_none_or(|p| p > at_most) {
                return Err(too_big("layers"));
            }
        }
        // As in training: built on the autodiff device, queried through
        // its inner (non-autodiff) module.
        let device = Device::default().autodiff();
        let record = |bytes: Vec<u8>| {
            burn::store::ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
                .map_err(|e| failed(format!("its record: {e}")))
        };
        let net = match card.model.as_str() {
            "logreg" | "mlp" => {
                let dims = match card.model.as_str() {
                    "logreg" => vec![net_inputs, card.classes],
                    _ => [&[net_inputs][..], &card.hidden, &[card.classes][..]].concat(),
                };
                let m = Mlp::new(&dims, &device)
                    .with_activation(activation)
                    .try_load_record(record(bytes)?)
                    .map_err(|e| failed(format!("its record does not fit the card: {e}")))?;
                Net::Mlp(m)
            }
            "cnn" => {
                let Some(shape) = scattered else {
                    return Err(failed("the CNN needs an image shape".into()));
                };
                let m = Cnn::for_input(shape, card.classes, &device)
                    .with_activation(activation)
                    .with_weight_standardization(card.weight_standardization)
                    .try_load_record(record(bytes)?)
                    .map_err(|e| failed(format!("its record does not fit the card: {e}")))?;
                Net::Cnn(Box::new(m))
            }
            other => return Err(failed(format!("unknown model `{other}`"))),
        };
        let model = TrainedModel::from_parts(
            net,
            card.features,
            card.input_shape,
            card.input_len,
            card.classes,
            device,
        )?;
        Ok((model, card))
    }
}
