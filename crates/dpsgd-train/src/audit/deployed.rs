//! Auditing a **deployed** model: the black-box attacks of
//! [`audit`](super::audit) run against a model this process did not train,
//! queried as a client — a `dpsgd serve` endpoint, with the release, the
//! budget, the rate and the monitor its key is given — so that a model is
//! audited as it is deployed, not as it left training.
//!
//! # The experiment
//!
//! The auditor is the data's owner: it loads the data the model was
//! trained on, split as the training run split it, so that **members**
//! (the training split) and **non-members** (the test split) are known.
//! The model's own card says how many privacy units its training set
//! held ([`DeployedModel::members`], public as N is); a different count
//! is refused, since every figure computed with the wrong membership
//! labels would read as "no leakage". Only the count is checked: a split
//! of the same size from another seed passes, and its figures are wrong
//! (most "non-members" are members). Early stopping's validation records
//! count as members, never trained on (as in [`audit`](super::audit)).
//!
//! * The population (members, then non-members) is sent to the model
//!   once; every threshold attack, LiRA, RMIA and the shadow-model attack
//!   read those answers. The **release** is the one the model gave: the
//!   shadows' outputs are hardened the same way before LiRA and RMIA
//!   calibrate on them (Carlini et al. 2022 calibrate on what the attacker
//!   sees), and every score — the shadows' and the target's — is read
//!   from a released vector ([`dpsgd_audit::hardening::released_score`]).
//! * **Shadow models** are trained here, through the recipe of the
//!   auditor's configuration, on random halves of the population (the
//!   same balanced design as [`audit`](super::audit)): LiRA is only as
//!   strong as that recipe is close to the deployed model's.
//! * **Label-only** and **black-box inversion** send their own queries
//!   (noisy copies of records; zeroth-order gradient estimates): the
//!   model's owner may refuse them — a spent budget, a rate, a key revoked
//!   by the monitor — and the attack is then reported refused
//!   ([`DeployedAuditReport::refused_attacks`]), not failed: that is the
//!   deployment's defence at work, and part of what the audit measures.
//! * No canaries: they must be planted in the training run, and a
//!   deployed model was trained without the audit's.
//!
//! # Privacy
//!
//! Like every audit, the figures are computed from the private training
//! data: they are for the data's owner, not covered by the model's ε.

use super::inversion::{InversionTarget, inversion_attack};
use super::results::{AttackResult, InversionReport};
use super::settings::{AuditConfig, audit_error, bad, check_config};
use super::target::{Findings, Population, TargetSource, concat, gate, label_only};
use super::{check_run, shadows, target};
use crate::config::TrainConfig;
use crate::error::TrainError;
use dpsgd_audit::hardening::{ClientUsage, ProbabilityOracle, Release};
use dpsgd_data::Dataset;
use serde::Serialize;
use std::time::Instant;

/// A deployed model, queried as a client: its answers are already its
/// release (the vectors it gives this client).
pub trait DeployedOracle: ProbabilityOracle {
    /// What the model releases to this client, once it has answered one
    /// query (`None` before).
    fn release(&self) -> Option<Release>;
}

/// What a deployed model says of itself (a `dpsgd serve` endpoint's
/// `GET /v1/health`, from the model's card): a description, not evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployedModel {
    /// Where it is (a URL).
    pub location: String,
    /// Its number of classes.
    pub classes: usize,
    /// Values per input, as it takes them (flattened).
    pub input_len: usize,
    /// `[channels, height, width]` of image inputs.
    pub input_shape: Option<[usize; 3]>,
    /// The ε it claims (`None`: trained without DP).
    pub epsilon: Option<f64>,
    /// δ of the claim.
    pub delta: f64,
    /// The unit of privacy (`record` or `user`).
    pub unit: String,
    /// The privacy units of the training set it was given (records, or
    /// users at user level: its members, before any validation hold-out
    /// or MIST partition), where its card says (`None`: a card that does
    /// not).
    pub members: Option<usize>,
}

/// Everything an audit of a deployed model measured.
#[derive(Debug, Clone, Serialize)]
pub struct DeployedAuditReport {
    /// The model audited, as it describes itself.
    pub target: DeployedModel,
    /// What it released to the audit's key (serialised as the endpoint
    /// names it: `full`, `top-3`, `label-only`, …).
    #[serde(serialize_with = "named")]
    pub release: Release,
    /// Its accuracy on the non-members, from its answers (the most
    /// probable class released; ties to the lower class).
    pub test_accuracy: f64,
    /// Its accuracy on the members, the same way (not covered by ε).
    pub train_accuracy: f64,
    /// The ε it claims.
    pub epsilon: Option<f64>,
    /// δ of the claim.
    pub delta: f64,
    /// One entry per membership attack that ran.
    pub attacks: Vec<AttackResult>,
    /// Black-box model inversion, when asked for and not refused.
    pub inversion: Option<InversionReport>,
    /// Shadow models trained (here, through the auditor's recipe).
    pub shadow_models: usize,
    /// Seconds spent training them.
    pub shadow_seconds: f64,
    /// Seconds of the whole audit.
    pub audit_seconds: f64,
    /// The audit's own per-attack query budget, if one was set (besides
    /// whatever the model's owner enforces).
    pub query_budget: Option<u64>,
    /// Queries per attack, as the audit counts them: the population's
    /// answers are received once and read by every attack that needs them
    /// (each still counted as a client of its own).
    pub queries: Vec<ClientUsage>,
    /// Attacks the model (or the audit's budget) refused: not run.
    pub refused_attacks: Vec<String>,
    /// What the audit could not do, or noticed.
    pub warnings: Vec<String>,
    /// What the fields above compute from private records directly.
    pub not_covered_by_epsilon: super::AuditNotCovered,
}

/// A release by its name.
fn named<S: serde::Serializer>(release: &Release, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(release)
}

/// Audits the deployed model `oracle` (described by `model`) with `audit`'s
/// attacks: `train` are its members and `test` its non-members, as it was
/// trained; shadow models are trained through `cfg`'s recipe. `log`
/// receives one line per stage. `audit.release` is ignored: the release
/// is the model's.
///
/// # Errors
///
/// [`TrainError::Config`] before any query for an unusable configuration
/// (as [`audit`](super::audit)), canaries, data whose width or classes
/// are not the model's, or members that are not as many as the model was
/// trained on; [`TrainError`] from a shadow's training; the model's
/// failure or refusal to answer the population ([`dpsgd_audit::Error`],
/// kept as the source) — the one query every attack needs.
#[allow(clippy::too_many_arguments)]
pub fn audit_deployed(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    audit: &AuditConfig,
    model: &DeployedModel,
    oracle: &mut dyn DeployedOracle,
    device: &burn::tensor::Device,
    log: &(dyn Fn(&str) + Sync),
) -> Result<DeployedAuditReport, TrainError> {
    let start = Instant::now();
    check_config(audit)?;
    if audit.canaries > 0 {
        return Err(bad(
            "canaries",
            "canaries must be planted in the training run, and a deployed model was trained without the audit's: audit the recipe (without a target) for an ε lower bound",
        ));
    }
    check_run(cfg, train, test, audit)?;
    check_model(train, model)?;
    let mut warnings = Vec::new();
    if model.members.is_none() {
        let line = "the deployed model's card does not say how many members it was trained on: that the data loaded here is its training split is not checked".to_owned();
        log(&line);
        warnings.push(line);
    }
    // The one query every population attack reads.
    let population_data = concat(train, test)?;
    log(&format!(
        "target: querying {} for the {} records of the population ({} members)",
        model.location,
        population_data.len(),
        train.len()
    ));
    let released = oracle
        .probabilities(population_data.features(), model.input_len)
        .map_err(audit_error)?;
    drop(population_data);
    let release = oracle.release().ok_or_else(|| {
        bad(
            "target",
            "the deployed model answered without saying what it released",
        )
    })?;
    log(&format!("target: it releases {release} to this key"));
    let audit = AuditConfig {
        release,
        ..audit.clone()
    };
    let population = Population::from_released(train, test, released, model.classes, &audit)?;
    let (train_accuracy, test_accuracy) = (population.accuracy(true), population.accuracy(false));
    let mut gate = gate(TargetSource::Deployed(oracle), &population)?;
    let mut findings = Findings {
        attacks: Vec::new(),
        warnings,
        refused_attacks: Vec::new(),
    };
    target::threshold_attacks(&population, &mut gate, &mut findings)?;
    let shadows = shadows::shadow_attacks(cfg, &population, &mut gate, &mut findings, device, log)?;
    label_only(&population, &mut gate, &mut findings)?;
    let inversion = inversion_attack(
        cfg,
        None,
        InversionTarget {
            classes: model.classes,
            input_len: model.input_len,
            input_shape: model.input_shape,
            features: None,
        },
        train,
        test,
        &audit,
        &mut gate,
        &mut findings,
        device,
        log,
    )?;
    let queries = gate.usage();
    drop(gate);
    let Findings {
        attacks,
        warnings,
        refused_attacks,
    } = findings;
    Ok(DeployedAuditReport {
        target: model.clone(),
        release,
        test_accuracy,
        train_accuracy,
        epsilon: model.epsilon,
        delta: model.delta,
        attacks,
        inversion,
        shadow_models: if shadows.trained {
            audit.shadow_models
        } else {
            0
        },
        shadow_seconds: shadows.seconds,
        audit_seconds: start.elapsed().as_secs_f64(),
        query_budget: audit.query_budget,
        queries,
        refused_attacks,
        warnings,
        not_covered_by_epsilon: super::AuditNotCovered::of(true, cfg.privacy_unit, train),
    })
}

/// Refuses data the deployed model cannot have been trained on: another
/// width, labels past its classes, or members that are not as many as
/// the privacy units its card says it was trained on.
fn check_model(train: &Dataset, model: &DeployedModel) -> Result<(), TrainError> {
    if train.n_features() != model.input_len {
        return Err(bad(
            "target",
            format!(
                "the deployed model takes {} values per input and the data has {}: load the data as the model was trained on it (the same data set and public preprocessing)",
                model.input_len,
                train.n_features()
            ),
        ));
    }
    if model.classes == 0 || train.n_classes() > model.classes {
        return Err(bad(
            "target",
            format!(
                "the deployed model has {} classes and the data {}",
                model.classes,
                train.n_classes()
            ),
        ));
    }
    if let Some(n) = model.members {
        let (members, unit) = match (model.unit.as_str(), train.num_users()) {
            ("user", Some(users)) => (users, "users"),
            ("user", None) => {
                return Err(bad(
                    "target",
                    "the deployed model was trained at user level and the data loaded here has no user ids: load it with its user column",
                ));
            }
            _ => (train.len(), "records"),
        };
        if n != members {
            return Err(bad(
                "target",
                format!(
                    "the deployed model's training set held {n} {unit} and the data loaded here has {members} members: load the data and split it was trained with (the same --dataset, --seed and --test-fraction), or every figure is computed with the wrong membership labels"
                ),
            ));
        }
    }
    Ok(())
}
