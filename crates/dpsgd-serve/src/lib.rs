//! A guarded inference endpoint for models trained by dpsgd.
//!
//! Membership inference and model inversion need nothing but a model's
//! API. This crate serves a model saved by `dpsgd train --save-model`
//! ([`dpsgd_train::TrainedModel::load`]) over HTTP, with the defences that
//! act at the API:
//!
//! * **releases** ([`dpsgd_audit::hardening::Release`]): each key is allowed
//!   the full probability vector, the top-K, values rounded to D decimals,
//!   or the label only;
//! * **keys** ([`keys`]): `Authorization: Bearer dpk_<id>_<secret>`, stored
//!   hashed in SQLite with a lifetime budget of records and a rate, so
//!   that budgets, revocations and the audit log survive restarts and
//!   crashes;
//! * **monitoring** ([`monitor`]): each key's query stream scored online
//!   for the traces of zeroth-order gradient estimation, boundary probing,
//!   off-distribution queries and bursts; a key over a threshold is
//!   flagged, and revoked with [`ServeSettings::auto_revoke`].
//!
//! Every answer carries the model's privacy report (ε, δ, unit). DP-SGD's
//! ε is the only guarantee here: the rest raises the cost of an attack,
//! it does not bound what one learns (`docs/serving.md`).
//!
//! ```
//! use dpsgd_serve::keys::KeyStore;
//! use dpsgd_audit::hardening::Release;
//! # let dir = std::env::temp_dir().join(format!("dpsgd-serve-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let mut keys = KeyStore::open(&dir.join("keys.db"))?;
//! let (id, key) = keys.add(Release::TopK(1), 1000, Some(10.0))?;
//! assert_eq!(keys.authenticate(&key)?.map(|k| k.id), Some(id));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod client;
mod error;
mod inputs;
pub mod keys;
pub mod metrics;
pub mod monitor;
mod server;

pub use error::{Result, ServeError};
pub use server::{OperatorToken, ServeSettings, Server};
