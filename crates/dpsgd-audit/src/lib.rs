//! Measuring what a model leaks about its training data.
//!
//! DP-SGD *bounds* leakage; this crate *measures* it, on any model: the
//! attacks take output probabilities or scores, so they apply to models
//! trained here or anywhere else.
//!
//! * [`metrics`]: ROC, AUC, TPR at low FPR, advantage, bootstrap intervals.
//! * [`scores`]: black-box threshold attacks (loss, confidence, entropy,
//!   modified entropy) and LiRA's logit-scaled confidence.
//! * [`lira`]: the likelihood-ratio attack from shadow-model scores, online
//!   and offline, fixed or per-example variance.
//! * [`rmia`]: the relative membership-inference attack (Zarifzadeh et al.
//!   2024) against population samples, online and offline, strong with one
//!   or two reference models.
//! * [`slices`]: the same figures per class and per loss percentile, the
//!   most exposed slice first.
//! * [`lower_bound`]: empirical ε lower bounds from canaries (Clopper–Pearson)
//!   and from one training run (Steinke et al. 2023), with the one-run
//!   guesser.
//! * [`estimators`]: a Gaussian-DP ε estimate (Nasr et al. 2023; an
//!   estimate, never a bound) and BCa bootstrap intervals (Efron 1987) for
//!   AUC and TPR at a given FPR.
//! * [`fdp`]: the f-DP one-run bound (Mahloujifar, Melis & Chaudhuri
//!   2024) for Gaussian-DP and (ε, δ) claims, and JAX Privacy's search over
//!   thresholds for it and for Steinke et al.'s bound.
//! * [`shadow`]: the shadow-model attack (Shokri et al. 2017): attack
//!   classifiers per class on shadow models' outputs.
//! * [`label_only`]: the label-only attack (Choquette-Choo et al. 2021) for
//!   models that return labels only.
//! * [`inversion`]: model inversion (Fredrikson et al. 2015) on any model
//!   that answers input-gradient queries, and how close its reconstructions
//!   sit to the training data.
//! * [`image`]: reconstructions as a PNG grid.
//! * [`users`]: user-level membership, one score per user (the mean or the
//!   best of their records' scores).
//!
//! The crate does not depend on burn: a model enters as scores,
//! probabilities, logits ([`scores::score_logits`]) or through the
//! [`label_only::LabelOracle`] and [`inversion::WhiteBox`] traits. Training
//! the target and its shadow models through a DP-SGD recipe, and the
//! `dpsgd audit` pipeline, live in `dpsgd-train`'s `audit` module.
//!
//! # Example
//!
//! ```
//! use dpsgd_audit::metrics::Roc;
//! use dpsgd_audit::scores::{score, ScoreKind};
//!
//! // Output probabilities of a model on records it trained on, and on others.
//! let members = [[0.97, 0.03], [0.9, 0.1], [0.2, 0.8]];
//! let others = [[0.6, 0.4], [0.3, 0.7], [0.55, 0.45]];
//! let labels = ([0, 0, 1], [0, 1, 0]);
//! let s = |p: &[f64; 2], y| score(ScoreKind::Loss, p, y);
//! let m: Vec<f64> = members.iter().zip(labels.0).map(|(p, y)| s(p, y)).collect::<Result<_, _>>()?;
//! let o: Vec<f64> = others.iter().zip(labels.1).map(|(p, y)| s(p, y)).collect::<Result<_, _>>()?;
//! let roc = Roc::new(&m, &o)?;
//! assert!(roc.auc > 0.8); // low loss gives the members away
//! # Ok::<(), dpsgd_audit::Error>(())
//! ```
#![warn(missing_docs)]

pub mod attack;
mod error;
pub mod estimators;
pub mod fdp;
pub mod hardening;
pub mod image;
pub mod inversion;
pub mod label_only;
pub mod lira;
pub mod lower_bound;
pub mod metrics;
pub mod rmia;
pub mod scores;
pub mod shadow;
pub mod slices;
pub mod users;

pub use attack::Attack;
pub use error::{Error, Result};
