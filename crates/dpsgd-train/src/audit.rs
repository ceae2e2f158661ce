//! Auditing a training recipe: train the target model, train shadow models
//! through the same recipe, attack the target with every chosen attack and
//! measure an empirical ε lower bound — the engine behind `dpsgd audit`.
//!
//! # The experiment
//!
//! * **Members** are the training split, **non-members** the test split;
//!   together they are the *population*. The target is trained on the
//!   members exactly as [`crate::train_model`] would (DP or not).
//! * **Shadow models** (for `shadow` and `lira`) are trained with the same
//!   configuration on random halves of the population: every record is IN
//!   exactly `⌊K/2⌋` or `⌈K/2⌉` of the `K` shadows (the balanced design of
//!   Carlini et al. 2022), so every record has IN and OUT statistics.
//!   Shadows train in parallel, one per worker thread, on the one data load.
//! * **Canaries** (optional, for the empirical ε lower bound): `m` extra
//!   records — mislabeled copies of training records, or out-of-distribution
//!   noise inputs with random labels — each added to the target's training
//!   set with probability ½ (independent coins from the audit's seed). After
//!   training, each canary's loss score ranks it; the one-run audit of
//!   Steinke, Nasr & Jagielski (2023) guesses IN for the top and OUT for the
//!   bottom, with the number of guesses fixed from `m` before any score is
//!   seen, and bounds ε from the number of right guesses. A bound above the
//!   claimed ε proves the claim false: [`CanaryAudit::exceeds_claim`].
//!
//! # Privacy
//!
//! An audit *releases* attack figures computed from the private training
//! data: they are measurements for whoever owns the data, not covered by
//! the target's ε.

use crate::config::{Features, Privacy, TrainConfig};
use crate::error::TrainError;
use crate::fit::train_model;
use crate::recipe::Recipe;
use crate::report::TrainReport;
use crate::trained::TrainedModel;
use dpsgd_audit::hardening::{ClientUsage, Hardened, ProbabilityOracle, Release, released_score};
use dpsgd_audit::inversion::{InversionConfig, WhiteBox, ZerothOrder, invert, nearest_distances};
use dpsgd_audit::label_only::{LabelOnlyConfig, label_only_scores};
use dpsgd_audit::lira::{LiraConfig, ShadowScores, lira_scores};
use dpsgd_audit::lower_bound::{OneRunAudit, canary_epsilon, one_run_audit};
use dpsgd_audit::metrics::{Interval, Roc, bootstrap};
use dpsgd_audit::scores::{ScoreKind, score_logits};
use dpsgd_audit::shadow::{ShadowAttack, ShadowAttackConfig, ShadowExample};
use dpsgd_audit::slices::{Record, Slice, slices};
use dpsgd_data::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// One attack of the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Loss threshold (Yeom et al. 2018).
    Loss,
    /// Confidence of the true class.
    Confidence,
    /// Prediction entropy.
    Entropy,
    /// Modified entropy (Song & Mittal 2021).
    ModifiedEntropy,
    /// Shadow-model attack classifiers per class (Shokri et al. 2017).
    Shadow,
    /// LiRA online and offline (Carlini et al. 2022).
    Lira,
    /// Label-only: robustness of the label to input noise
    /// (Choquette-Choo et al. 2021).
    LabelOnly,
    /// Model inversion (Fredrikson et al. 2015).
    Inversion,
}

impl Attack {
    /// Every attack, in the order the report lists them.
    pub const ALL: [Self; 8] = [
        Self::Loss,
        Self::Confidence,
        Self::Entropy,
        Self::ModifiedEntropy,
        Self::Shadow,
        Self::Lira,
        Self::LabelOnly,
        Self::Inversion,
    ];

    /// The attack's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Confidence => "confidence",
            Self::Entropy => "entropy",
            Self::ModifiedEntropy => "modified-entropy",
            Self::Shadow => "shadow",
            Self::Lira => "lira",
            Self::LabelOnly => "label-only",
            Self::Inversion => "inversion",
        }
    }

    fn threshold_score(self) -> Option<ScoreKind> {
        match self {
            Self::Loss => Some(ScoreKind::Loss),
            Self::Confidence => Some(ScoreKind::Confidence),
            Self::Entropy => Some(ScoreKind::Entropy),
            Self::ModifiedEntropy => Some(ScoreKind::ModifiedEntropy),
            _ => None,
        }
    }
}

impl std::str::FromStr for Attack {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
                format!("`{s}` is not an attack (expected {})", names.join(", "))
            })
    }
}

/// What the canaries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryKind {
    /// Copies of random training records with a random wrong label.
    #[default]
    Mislabeled,
    /// Inputs of independent N(0, 1) features with a random label.
    OutOfDistribution,
    /// White-box gradient canaries (Dirac: gradient `C·e_j` on a coordinate
    /// of its own) through the run's DP-SGD engine, observed at every step
    /// ([`crate::whitebox`]); DP runs only.
    Dirac,
}

impl std::str::FromStr for CanaryKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mislabeled" => Ok(Self::Mislabeled),
            "ood" | "out-of-distribution" => Ok(Self::OutOfDistribution),
            "dirac" => Ok(Self::Dirac),
            _ => Err(format!(
                "`{s}` is not a canary kind (expected mislabeled, ood or dirac)"
            )),
        }
    }
}

/// How to audit.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The attacks to run.
    pub attacks: Vec<Attack>,
    /// Shadow models `K` for `shadow` and `lira` (at least 2; LiRA with
    /// per-record variances needs 4).
    pub shadow_models: usize,
    /// Canaries `m` for the one-run ε lower bound (0: none).
    pub canaries: usize,
    /// What the canaries are.
    pub canary_kind: CanaryKind,
    /// Guesses `r` of the one-run audit (`None`: `max(1, m/5)`), fixed
    /// before the scores are seen.
    pub canary_guesses: Option<usize>,
    /// Significance α of the lower bounds and the level `1 − α` of the
    /// bootstrap intervals.
    pub alpha: f64,
    /// Significance of the canary audit's ε lower bounds (the one-run
    /// bound that decides [`CanaryAudit::exceeds_claim`], and the
    /// Clopper–Pearson bound beside it), when it is not `alpha`. A caller
    /// that runs K audits and reports a failure if *any* refutes its claim
    /// sets [`bonferroni`]`(α, K)` here, so that a correct implementation
    /// is refuted with probability ≤ α over all K (`dpsgd sweep` does).
    /// `None`: `alpha`.
    pub canary_alpha: Option<f64>,
    /// Bootstrap resamples for the AUC intervals.
    pub bootstrap_resamples: usize,
    /// The label-only attack queries at most this many members and as many
    /// non-members (it needs dozens of queries per record).
    pub label_only_records: usize,
    /// Worker threads training shadow models (0: one per available core).
    pub threads: usize,
    /// Seed of the audit's randomness (canaries, shadow splits, shadow
    /// training, bootstrap).
    pub seed: u64,
    /// Model inversion's settings; its range and image shape are set from
    /// the data.
    pub inversion: InversionConfig,
    /// What the target releases (output hardening): the black-box attacks
    /// score the released vectors (`Full`: the logits themselves, exact).
    pub release: Release,
    /// A per-client query budget, in records: every black-box attack is one
    /// client of the hardened target, and an attack whose queries would
    /// pass the budget is refused (and reported as such). `None`: no limit
    /// (the queries are still counted).
    pub query_budget: Option<u64>,
}

impl AuditConfig {
    /// The significance of the canary audit's bounds:
    /// [`AuditConfig::canary_alpha`], or [`AuditConfig::alpha`].
    pub fn canary_significance(&self) -> f64 {
        self.canary_alpha.unwrap_or(self.alpha)
    }
}

/// The significance of each of `tests` tests that together refute a true
/// claim with probability at most `family_alpha` (Bonferroni: `α/K`; valid
/// whatever the tests' dependence). No test (`tests = 0`) is taken as one.
pub fn bonferroni(family_alpha: f64, tests: usize) -> f64 {
    family_alpha / tests.max(1) as f64
}

/// Whether a measured ε lower bound refutes the claimed ε: it exceeds the
/// claim beyond the bounds' bisection tolerance (1e-6). No claim (a
/// non-private run) is never refuted. The one threshold of every verdict
/// (`dpsgd audit`, `dpsgd sweep`, the Dirac audit).
pub fn exceeds_claim(claimed: Option<f64>, lower_bound: f64) -> bool {
    claimed.is_some_and(|eps| lower_bound > eps + 1e-6)
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            attacks: vec![Attack::Loss, Attack::Lira],
            shadow_models: 16,
            canaries: 0,
            canary_kind: CanaryKind::Mislabeled,
            canary_guesses: None,
            alpha: 0.05,
            canary_alpha: None,
            bootstrap_resamples: 100,
            label_only_records: 1000,
            threads: 0,
            seed: 0,
            inversion: InversionConfig::default(),
            release: Release::Full,
            query_budget: None,
        }
    }
}

/// One attack's figures on the members vs non-members.
#[derive(Debug, Clone, Serialize)]
pub struct AttackResult {
    /// `loss`, `confidence`, `entropy`, `modified-entropy`, `shadow`,
    /// `lira-online`, `lira-offline`, `label-only`.
    pub name: String,
    /// ROC AUC (0.5: no leakage measured).
    pub auc: f64,
    /// Bootstrap interval of the AUC at level `1 − α`.
    pub auc_interval: Interval,
    /// TPR at 1% FPR.
    pub tpr_at_fpr_0_01: f64,
    /// TPR at 0.1% FPR.
    pub tpr_at_fpr_0_001: f64,
    /// Best balanced accuracy of a threshold.
    pub balanced_accuracy: f64,
    /// Membership advantage `max |TPR − FPR|`.
    pub advantage: f64,
    /// Members and non-members scored.
    pub records: (usize, usize),
    /// The ROC curve at fixed FPRs (linear and logarithmic grids), for
    /// plotting: `(fpr, tpr)`.
    pub roc: Vec<(f64, f64)>,
    /// Slices by class and by loss percentile, most exposed first.
    pub slices: Vec<Slice>,
}

/// The canary audit's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryAudit {
    /// What the canaries were.
    pub kind: CanaryKind,
    /// The one-run audit (Steinke et al. 2023).
    pub one_run: OneRunAudit,
    /// Clopper–Pearson bound (Jagielski et al. 2020) at the one-run
    /// guesser's IN threshold: TPR over included, FPR over left-out
    /// canaries. Reported for comparison only: Jagielski's bound assumes
    /// independent training runs, and within one run the guesses are not
    /// independent, so it does not decide [`CanaryAudit::exceeds_claim`].
    pub clopper_pearson_epsilon: f64,
    /// The ε the run claims (`None` without DP).
    pub claimed_epsilon: Option<f64>,
    /// Whether the one-run lower bound exceeds the claim: the claim is then
    /// false (a privacy bug) at confidence `1 − α`, with α the bound's
    /// significance (`one_run.alpha`).
    pub exceeds_claim: bool,
}

impl CanaryAudit {
    /// Whether this audit refutes its claim at significance `alpha`: the
    /// one-run bound, recomputed at `alpha` from the audit's counts
    /// (canaries, guesses, right guesses, δ), exceeds the claimed ε
    /// ([`exceeds_claim`]). At `one_run.alpha` this is
    /// [`CanaryAudit::exceeds_claim`]; a family of K audits tests each at
    /// [`bonferroni`]`(α, K)`.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for `α ∉ (0, 1)` or inconsistent counts.
    pub fn refutes_at(&self, alpha: f64) -> Result<bool, TrainError> {
        let o = &self.one_run;
        let bound = dpsgd_audit::lower_bound::one_run_epsilon(
            o.canaries, o.guesses, o.correct, o.delta, alpha,
        )
        .map_err(audit_error)?;
        Ok(exceeds_claim(self.claimed_epsilon, bound))
    }
}

/// Model inversion's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct InversionReport {
    /// The classes reconstructed.
    pub classes: Vec<usize>,
    /// The target's confidence `p_y` on each reconstruction.
    pub confidence: Vec<f64>,
    /// Distance from each reconstruction to its class's nearest member.
    pub distance_to_member: Vec<f64>,
    /// Distance to its class's nearest non-member.
    pub distance_to_non_member: Vec<f64>,
    /// Mean of `distance_to_member / distance_to_non_member` (below 1: the
    /// reconstructions sit closer to the training data than to unseen data
    /// of the same class).
    pub mean_distance_ratio: f64,
    /// Accuracy of an independent classifier (trained without DP on the
    /// non-members only) on the reconstructions: how recognisable they are.
    pub independent_accuracy: f64,
    /// The reconstructions (row-major inputs), not serialised.
    #[serde(skip)]
    pub images: Vec<Vec<f32>>,
    /// Their image shape, if images.
    pub image_shape: Option<[usize; 3]>,
    /// The input range the reconstructions were kept in.
    pub range: (f32, f32),
}

/// Everything an audit measured.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The target's test accuracy.
    pub test_accuracy: f64,
    /// The target's accuracy on its training set (not covered by ε).
    pub train_accuracy: f64,
    /// The target's claimed ε (`None` without DP).
    pub epsilon: Option<f64>,
    /// δ of the claim.
    pub delta: f64,
    /// One entry per membership attack.
    pub attacks: Vec<AttackResult>,
    /// The one-run ε lower bound, when canaries were planted.
    pub epsilon_lower_bound: Option<f64>,
    /// The canary audit, when canaries were planted.
    pub canary_audit: Option<CanaryAudit>,
    /// Model inversion, when asked for and possible.
    pub inversion: Option<InversionReport>,
    /// Shadow models trained.
    pub shadow_models: usize,
    /// Seconds spent training shadow models (wall clock, all workers).
    pub shadow_seconds: f64,
    /// Seconds of the whole audit, the target's training included.
    pub audit_seconds: f64,
    /// What the target released to the black-box attacks.
    pub release: Release,
    /// The per-client query budget, if one was set.
    pub query_budget: Option<u64>,
    /// The target's queries per attack (client): records served and
    /// records refused past the budget.
    pub queries: Vec<ClientUsage>,
    /// Attacks refused by the query budget (not run).
    pub refused_attacks: Vec<String>,
    /// What the audit could not do (an attack that does not apply).
    pub warnings: Vec<String>,
    /// The target's training report.
    pub target: TrainReport,
}

/// What an audit hands back besides the report.
#[derive(Debug)]
pub struct AuditOutcome {
    /// The figures.
    pub report: AuditReport,
    /// The target model.
    pub model: TrainedModel,
}

/// Salts separating the audit's random streams.
const CANARY_SALT: u64 = 0xca4a_21e5;
const SHADOW_SALT: u64 = 0x5ad0_3e15;
const LABEL_SALT: u64 = 0x1abe_1000;
const BOOT_SALT: u64 = 0xb007_5742;
const SUBSET_SALT: u64 = 0x5ab5_e700;
const INVERSION_SALT: u64 = 0x1a7e_0b0c;

/// The audit's error for a bad [`AuditConfig`].
fn bad(field: &'static str, reason: impl Into<String>) -> TrainError {
    TrainError::config(field, reason)
}

fn audit_error(e: dpsgd_audit::Error) -> TrainError {
    bad("audit", e.to_string())
}

/// Audits `cfg` on `train` (members) and `test` (non-members): trains the
/// target (with canaries, if any), the shadow models the attacks need, and
/// runs every attack of `audit`. `log` receives one line per stage.
///
/// # Errors
///
/// [`TrainError`] from training the target or a shadow (a diverging shadow
/// included), and [`TrainError::Config`] for an unusable audit
/// configuration: no attacks, fewer than 2 shadow models for `shadow` or
/// `lira`, `α ∉ (0, 1)`, more guesses than canaries, input (mislabeled or
/// out-of-distribution) canaries together with early stopping — refused
/// before anything is trained: early stopping's validation hold-out is
/// taken from the training set it is given, so an included canary could
/// be held out and never trained on while it counts as included.
pub fn audit(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    audit: &AuditConfig,
    device: &burn::tensor::Device,
    log: &(dyn Fn(&str) + Sync),
) -> Result<AuditOutcome, TrainError> {
    let start = Instant::now();
    check_config(audit)?;
    if audit.canaries > 0
        && audit.canary_kind != CanaryKind::Dirac
        && cfg.defences.early_stopping.is_some()
    {
        // The run takes early stopping's validation hold-out from the
        // training set it is given, canaries included: an included canary
        // could be held out, never trained on, and still count as included
        // (a wrong coin for the bound).
        return Err(bad(
            "canaries",
            format!(
                "{} canaries cannot be combined with early stopping: its validation hold-out is taken from the training set after the canaries are added, so an included canary could be held out and never trained on; audit without early stopping (or use Dirac canaries, which are not records)",
                match audit.canary_kind {
                    CanaryKind::Mislabeled => "mislabeled",
                    _ => "out-of-distribution",
                }
            ),
        ));
    }
    if train.n_features() != test.n_features() {
        return Err(bad(
            "data",
            "the training and test splits have different numbers of features",
        ));
    }
    // Input canaries join the training set: past a quarter of it they
    // would be what the model learns (10⁵ canaries beside 896 digits
    // trained to 0.33% accuracy without a word).
    if audit.canary_kind != CanaryKind::Dirac && audit.canaries > train.len() / MAX_CANARY_SHARE {
        return Err(bad(
            "canaries",
            format!(
                "{} input canaries for {} training records: at most one per {MAX_CANARY_SHARE} records ({}), or the canaries are what the model learns",
                audit.canaries,
                train.len(),
                train.len() / MAX_CANARY_SHARE
            ),
        ));
    }
    if audit.canaries > 0 && audit.canary_kind == CanaryKind::Dirac {
        if cfg.privacy == Privacy::NonPrivate {
            return Err(bad(
                "canaries",
                "Dirac canaries audit the DP-SGD mechanism: a non-private run has none (use mislabeled or ood canaries)",
            ));
        }
        if audit.canaries > train.len() {
            return Err(bad(
                "canaries",
                format!(
                    "Dirac canaries need at most one per training record ({})",
                    train.len()
                ),
            ));
        }
        if cfg.clipping != crate::config::ClippingMode::Flat {
            return Err(bad(
                "canaries",
                "Dirac canaries audit flat clipping; this run clips otherwise",
            ));
        }
    }
    let mut warnings = Vec::new();
    let mut rng = ChaCha20Rng::seed_from_u64(audit.seed ^ CANARY_SALT);
    let canaries = plant_canaries(train, audit, &mut rng)?;
    let target_train = match &canaries {
        Some(c) => concat(train, &c.included_data())?,
        None => train.clone(),
    };
    log(&format!(
        "target: training on {} records{}",
        target_train.len(),
        match &canaries {
            Some(c) => format!(" ({} of them canaries)", c.included_count()),
            None => String::new(),
        }
    ));
    let noise_scale = test_fault_noise_scale()?;
    let faulty = noise_scale != 1.0 && cfg.privacy != Privacy::NonPrivate;
    if faulty {
        let line = format!(
            "TEST-ONLY FAULT INJECTED ({FAULT_NOISE_SCALE_VAR}={noise_scale}): the target and the Dirac canary audit run a broken mechanism whose noise is cut to {noise_scale}·σ while the claim keeps σ; this audit says nothing about the run"
        );
        log(&line);
        warnings.push(line);
    }
    let (target_report, model) = if faulty {
        // The honest run only for its claim (σ, ε, steps); the model
        // released is that of σ·noise_scale, reported under the honest
        // claim.
        let (honest, _) = train_model(cfg, &target_train, test, device, |_| {})?;
        let sigma = honest.privacy.noise_multiplier.ok_or_else(|| {
            TrainError::config("noise_scale", "the test-only noise fault needs a DP run")
        })?;
        let broken = TrainConfig {
            privacy: Privacy::NoiseMultiplier(sigma * noise_scale),
            ..cfg.clone()
        };
        let (mut report, model) = train_model(&broken, &target_train, test, device, |_| {})?;
        report.privacy = honest.privacy;
        (report, model)
    } else {
        train_model(cfg, &target_train, test, device, |_| {})?
    };
    let epsilon = target_report.privacy.epsilon;
    let delta = cfg.delta;
    let train_accuracy = target_report.not_covered_by_epsilon.train_accuracy;
    let test_accuracy = target_report.test_accuracy;

    let population = concat(train, test)?;
    let is_member: Vec<bool> = (0..population.len()).map(|i| i < train.len()).collect();
    let target_logits = model.logits(&population)?;
    let classes = model.classes();
    let labels: Vec<usize> = population.labels().iter().map(|&y| y as usize).collect();
    let logit_row =
        |logits: &[f64], i: usize| -> Vec<f64> { logits[i * classes..(i + 1) * classes].to_vec() };
    let release = audit.release;
    // A record's score as the attacker sees it: from the logits, or from
    // the hardened release of the probabilities.
    let score_of = |kind: ScoreKind, row: &[f64], label: usize| match release {
        Release::Full => score_logits(kind, row, label),
        r => released_score(kind, &r.apply(&softmax(row)), label),
    };
    let target_scores = |kind: ScoreKind| -> Result<Vec<f64>, TrainError> {
        (0..population.len())
            .map(|i| score_of(kind, &logit_row(&target_logits, i), labels[i]))
            .collect::<Result<_, _>>()
            .map_err(audit_error)
    };
    // The slices' losses are the model's own (exact), whatever it releases.
    let losses: Vec<f64> = (0..population.len())
        .map(|i| score_logits(ScoreKind::Loss, &logit_row(&target_logits, i), labels[i]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(audit_error)?
        .into_iter()
        .map(|s| -s)
        .collect();
    let evaluate = |name: &str, scores: &[f64], subset: Option<&[usize]>| {
        attack_result(name, scores, &is_member, &labels, &losses, subset, audit)
    };
    // Every black-box query of the target goes through the hardened model:
    // one client per attack, counted, and refused past the budget.
    // The target's answers on the population are the logits above: the
    // gate serves them instead of a second forward pass.
    let population_answers = target_logits.chunks(classes.max(1)).map(softmax).collect();
    let oracle = TargetQueries {
        model: &model,
        population: population.features(),
        population_answers,
    };
    let mut gate = Hardened::new(oracle, release).map_err(audit_error)?;
    if let Some(budget) = audit.query_budget {
        gate = gate.with_budget(budget);
    }
    let mut refused_attacks = Vec::new();
    // Queries the whole population as `client`: whether it was served.
    let mut admit = |gate: &mut Hardened<TargetQueries>, client: &str| match gate.probabilities_for(
        client,
        population.features(),
        model.input_len(),
    ) {
        Ok(_) => Ok(true),
        Err(e) if gate.refused(client) > 0 => {
            warnings.push(format!("{client} attack refused: {e}"));
            refused_attacks.push(client.to_owned());
            Ok(false)
        }
        Err(e) => Err(audit_error(e)),
    };
    let mut attacks = Vec::new();
    for attack in &audit.attacks {
        if let Some(kind) = attack.threshold_score()
            && admit(&mut gate, attack.name())?
        {
            attacks.push(evaluate(attack.name(), &target_scores(kind)?, None)?);
        }
    }

    let mut shadow_seconds = 0.0;
    // The shadow attack reads full vectors: not run against a hardened
    // release (and then not queried).
    let run_shadow_attack = audit.attacks.contains(&Attack::Shadow)
        && release == Release::Full
        && admit(&mut gate, Attack::Shadow.name())?;
    let run_lira = audit.attacks.contains(&Attack::Lira) && admit(&mut gate, "lira")?;
    let needs_shadows = run_lira || run_shadow_attack;
    if audit.attacks.contains(&Attack::Shadow) && release != Release::Full {
        warnings.push(
            "shadow attack skipped: its attack models read full probability vectors, not hardened releases".into(),
        );
    }
    if needs_shadows {
        let shadow_start = Instant::now();
        // Per-example features (ScatterNet) are computed once for the
        // population, not once per shadow: the shadows train on them as
        // raw features, which is the same model.
        let (shadow_cfg, features) = match cfg.features {
            Features::Raw => (cfg.clone(), std::borrow::Cow::Borrowed(&population)),
            Features::Scatter { groups } => {
                log("shadows: computing ScatterNet features of the population once");
                let scattering = crate::features::scattering_for(&population)?;
                let features = crate::features::scatter_features(&population, &scattering, groups)?;
                let shadow_cfg = TrainConfig {
                    features: Features::Raw,
                    ..cfg.clone()
                };
                (shadow_cfg, std::borrow::Cow::Owned(features))
            }
        };
        // Shadows report nothing: no ε after every epoch.
        let shadow_cfg = TrainConfig {
            progress_epsilon: false,
            ..shadow_cfg
        };
        let shadows = train_shadows(&shadow_cfg, &features, audit, device, log)?;
        shadow_seconds = shadow_start.elapsed().as_secs_f64();
        log(&format!(
            "shadows: {} trained in {shadow_seconds:.1} s",
            shadows.len()
        ));
        if run_lira {
            let phi = target_scores(ScoreKind::LogitScaled)?;
            let per_record: Vec<ShadowScores> = (0..population.len())
                .map(|i| {
                    let mut s = ShadowScores::default();
                    for shadow in &shadows {
                        let row = logit_row(&shadow.logits, i);
                        // The attacker hardens its own shadows' outputs
                        // the same way, to calibrate on what it sees.
                        let v =
                            score_of(ScoreKind::LogitScaled, &row, labels[i]).unwrap_or(f64::NAN);
                        if shadow.inside[i] {
                            s.inside.push(v);
                        } else {
                            s.outside.push(v);
                        }
                    }
                    s
                })
                .collect();
            // Carlini et al.: a global variance is better below 64 shadows.
            let fixed_variance = audit.shadow_models < 64;
            for (name, online) in [("lira-online", true), ("lira-offline", false)] {
                let scores = lira_scores(
                    &phi,
                    &per_record,
                    LiraConfig {
                        online,
                        fixed_variance,
                    },
                )
                .map_err(audit_error)?;
                attacks.push(evaluate(name, &scores, None)?);
            }
        }
        if run_shadow_attack {
            let scores =
                shadow_attack_scores(&shadows, &target_logits, &labels, classes, audit.seed)?;
            attacks.push(evaluate("shadow", &scores, None)?);
        }
    }

    if audit.attacks.contains(&Attack::LabelOnly) {
        let subset = balanced_subset(&is_member, audit.label_only_records, audit.seed);
        let inputs: Vec<f32> = subset
            .iter()
            .flat_map(|&i| population.example(i).iter().copied())
            .collect();
        let subset_labels: Vec<usize> = subset.iter().map(|&i| labels[i]).collect();
        let spread = feature_spread(&population);
        let config = LabelOnlyConfig {
            noise_scales: [0.05, 0.1, 0.2, 0.4].iter().map(|s| s * spread).collect(),
            seed: audit.seed ^ LABEL_SALT,
            ..LabelOnlyConfig::default()
        };
        let client = Attack::LabelOnly.name();
        let answer = label_only_scores(
            &mut gate.client(client),
            &inputs,
            model.input_len(),
            &subset_labels,
            &config,
        );
        match answer {
            Ok(scores) => {
                let mut full = vec![f64::NAN; population.len()];
                for (&i, s) in subset.iter().zip(scores) {
                    full[i] = s;
                }
                attacks.push(evaluate(client, &full, Some(&subset))?);
            }
            Err(e) if gate.refused(client) > 0 => {
                warnings.push(format!("{client} attack refused: {e}"));
                refused_attacks.push(client.to_owned());
            }
            Err(e) => return Err(audit_error(e)),
        }
    }

    // Inversion is white-box (input gradients) against a full release
    // without a budget; otherwise black-box, from the hardened outputs.
    let black_box = release != Release::Full || audit.query_budget.is_some();
    let inversion = if audit.attacks.contains(&Attack::Inversion) {
        match model.features() {
            Features::Raw if black_box => {
                log(&format!(
                    "inversion: reconstructing one input per class from the released outputs ({INVERSION_DIRECTIONS} random directions per gradient estimate)"
                ));
                let client = Attack::Inversion.name();
                let width = feature_range(train).1 - feature_range(train).0;
                let mut oracle = ZerothOrder::new(
                    gate.client(client),
                    model.input_len(),
                    INVERSION_DIRECTIONS,
                    f64::from(width.max(f32::MIN_POSITIVE)) * INVERSION_SMOOTHING,
                    audit.seed ^ INVERSION_SALT,
                )
                .map_err(audit_error)?;
                let result = run_inversion(
                    &mut oracle,
                    &model,
                    train,
                    test,
                    cfg,
                    &audit.inversion,
                    device,
                );
                drop(oracle);
                match result {
                    Ok(report) => Some(report),
                    Err(_) if gate.refused(client) > 0 => {
                        warnings.push(format!(
                            "{client} attack refused: its query budget of {} records ran out after {} records served ({} refused)",
                            audit.query_budget.unwrap_or(0),
                            gate.served(client),
                            gate.refused(client)
                        ));
                        refused_attacks.push(client.to_owned());
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            Features::Raw => {
                log("inversion: reconstructing one input per class");
                let mut oracle = GradientQueries { model: &model };
                Some(run_inversion(
                    &mut oracle,
                    &model,
                    train,
                    test,
                    cfg,
                    &audit.inversion,
                    device,
                )?)
            }
            other => {
                warnings.push(format!(
                    "inversion skipped: the model sees {} features, which are not differentiated; audit a model on raw features",
                    match other {
                        Features::Scatter { .. } => "ScatterNet",
                        Features::Raw => "raw",
                    }
                ));
                None
            }
        }
    } else {
        None
    };

    let queries = gate.usage();
    drop(gate);
    let canary_audit = match &canaries {
        Some(c) => Some(c.audit(&model, audit, delta, epsilon)?),
        None if audit.canaries > 0 && audit.canary_kind == CanaryKind::Dirac => {
            log(&format!(
                "canaries: {} Dirac gradient canaries through the DP-SGD engine",
                audit.canaries
            ));
            let run = crate::whitebox::dirac_canary_audit_with_noise_fault(
                cfg,
                target_train.len(),
                audit.canaries,
                audit.canary_guesses,
                audit.canary_significance(),
                audit.seed,
                device,
                noise_scale,
            )?;
            Some(canary_bounds(
                CanaryKind::Dirac,
                &run.scores,
                &run.included,
                run.one_run,
                delta,
                Some(run.claimed_epsilon),
            )?)
        }
        None => None,
    };
    Ok(AuditOutcome {
        report: AuditReport {
            test_accuracy,
            train_accuracy,
            epsilon,
            delta,
            attacks,
            epsilon_lower_bound: canary_audit.as_ref().map(|c| c.one_run.epsilon),
            canary_audit,
            inversion,
            shadow_models: if needs_shadows {
                audit.shadow_models
            } else {
                0
            },
            shadow_seconds,
            audit_seconds: start.elapsed().as_secs_f64(),
            release,
            query_budget: audit.query_budget,
            queries,
            refused_attacks,
            warnings,
            target: target_report,
        },
        model,
    })
}

fn check_config(audit: &AuditConfig) -> Result<(), TrainError> {
    if audit.attacks.is_empty() {
        return Err(bad("attacks", "choose at least one attack"));
    }
    let needs_shadows = audit
        .attacks
        .iter()
        .any(|a| matches!(a, Attack::Shadow | Attack::Lira));
    if needs_shadows && audit.shadow_models < 2 {
        return Err(bad(
            "shadow_models",
            "the shadow and LiRA attacks need at least 2 shadow models (16 or more for a sharp LiRA)",
        ));
    }
    if !(audit.alpha > 0.0 && audit.alpha < 1.0) {
        return Err(bad("alpha", "must be in (0, 1)"));
    }
    if audit.canary_alpha.is_some_and(|a| !(a > 0.0 && a < 1.0)) {
        return Err(bad("canary_alpha", "must be in (0, 1)"));
    }
    if audit.bootstrap_resamples == 0 {
        return Err(bad("bootstrap_resamples", "need at least one resample"));
    }
    if let Some(r) = audit.canary_guesses
        && (r == 0 || r > audit.canaries)
    {
        return Err(bad(
            "canary_guesses",
            format!(
                "must be between 1 and the number of canaries ({})",
                audit.canaries
            ),
        ));
    }
    Ok(())
}

/// `a` followed by `b` (same features and image shape).
fn concat(a: &Dataset, b: &Dataset) -> Result<Dataset, TrainError> {
    let features = [a.features(), b.features()].concat();
    let labels = [a.labels(), b.labels()].concat();
    let data = Dataset::new(
        features,
        labels,
        a.n_features(),
        a.n_classes().max(b.n_classes()),
    )
    .map_err(|e| bad("data", e.to_string()))?;
    match a.image_shape() {
        Some(shape) => data
            .with_image_shape(shape)
            .map_err(|e| bad("data", e.to_string())),
        None => Ok(data),
    }
}

/// The figures of one attack's scores (NaN scores, and records outside
/// `subset` when given, are left out).
fn attack_result(
    name: &str,
    scores: &[f64],
    is_member: &[bool],
    labels: &[usize],
    losses: &[f64],
    subset: Option<&[usize]>,
    audit: &AuditConfig,
) -> Result<AttackResult, TrainError> {
    let all: Vec<usize> = (0..scores.len()).collect();
    let chosen: Vec<usize> = subset
        .unwrap_or(&all)
        .iter()
        .copied()
        .filter(|&i| !scores[i].is_nan())
        .collect();
    let members: Vec<f64> = chosen
        .iter()
        .filter(|&&i| is_member[i])
        .map(|&i| scores[i])
        .collect();
    let others: Vec<f64> = chosen
        .iter()
        .filter(|&&i| !is_member[i])
        .map(|&i| scores[i])
        .collect();
    let roc = Roc::new(&members, &others).map_err(audit_error)?;
    let auc_interval = bootstrap(
        &members,
        &others,
        |r| r.auc,
        audit.bootstrap_resamples,
        1.0 - audit.alpha,
        audit.seed ^ BOOT_SALT,
    )
    .map_err(audit_error)?;
    let records: Vec<Record> = chosen
        .iter()
        .map(|&i| Record {
            score: scores[i],
            member: is_member[i],
            label: labels[i],
            loss: if losses[i].is_nan() {
                f64::INFINITY
            } else {
                losses[i]
            },
        })
        .collect();
    Ok(AttackResult {
        name: name.to_owned(),
        auc: roc.auc,
        auc_interval,
        tpr_at_fpr_0_01: roc.tpr_at_fpr(0.01),
        tpr_at_fpr_0_001: roc.tpr_at_fpr(0.001),
        balanced_accuracy: roc.balanced_accuracy(),
        advantage: roc.advantage(),
        records: roc.counts,
        roc: roc_summary(&roc),
        slices: slices(&records, 10).map_err(audit_error)?,
    })
}

/// The ROC curve at fixed FPRs: 101 linear points and 121 logarithmic ones
/// from 10⁻⁶, enough for both plots without every distinct score.
fn roc_summary(roc: &Roc) -> Vec<(f64, f64)> {
    let mut fprs: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
    fprs.extend((0..=120).map(|i| 10f64.powf(-6.0 + f64::from(i) / 20.0)));
    fprs.sort_by(f64::total_cmp);
    // 10^-2 computed as a power may differ from 0.01 in the last bit.
    fprs.dedup_by(|a, b| (*a - *b).abs() <= 1e-12 * b.abs().max(1e-300));
    // One pass over the curve (its FPRs increase).
    let mut out = Vec::with_capacity(fprs.len());
    let mut best = 0.0f64;
    let mut points = roc.points.iter().peekable();
    for f in fprs {
        while let Some(p) = points.next_if(|p| p.0 <= f) {
            best = best.max(p.1);
        }
        out.push((f, best));
    }
    out
}

/// Up to `per_side` members and as many non-members, at random.
fn balanced_subset(is_member: &[bool], per_side: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ SUBSET_SALT);
    let mut pick = |member: bool| {
        let mut v: Vec<usize> = (0..is_member.len())
            .filter(|&i| is_member[i] == member)
            .collect();
        v.shuffle(&mut rng);
        v.truncate(per_side);
        v
    };
    let mut out = pick(true);
    out.extend(pick(false));
    out.sort_unstable();
    out
}

/// The typical spread of a feature: the median over features of their
/// range in `data` (the label-only attack's noise scales are fractions of
/// it).
fn feature_spread(data: &Dataset) -> f64 {
    let d = data.n_features();
    let mut ranges: Vec<f64> = (0..d)
        .map(|j| {
            let (lo, hi) = (0..data.len())
                .map(|i| data.example(i)[j])
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
                    (lo.min(x), hi.max(x))
                });
            f64::from(hi - lo)
        })
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    if ranges.is_empty() {
        return 1.0;
    }
    ranges.sort_by(f64::total_cmp);
    ranges[ranges.len() / 2]
}

/// The target model as a black-box oracle (the hardened model's inner
/// model). Every attack queries the whole population once: those answers
/// (the audit's own logits of the population, softmaxed) are served from
/// memory; the queries are still counted, per client, by the hardened
/// model around this one. Other inputs are computed.
struct TargetQueries<'a> {
    model: &'a TrainedModel,
    population: &'a [f32],
    population_answers: Vec<Vec<f64>>,
}

impl TargetQueries<'_> {
    fn answer(&self, inputs: &[f32]) -> dpsgd_audit::Result<Vec<Vec<f64>>> {
        let logits =
            self.model
                .logits_of_inputs(inputs)
                .map_err(|e| dpsgd_audit::Error::Query {
                    reason: e.to_string(),
                })?;
        Ok(logits
            .chunks(self.model.classes().max(1))
            .map(softmax)
            .collect())
    }
}

impl ProbabilityOracle for TargetQueries<'_> {
    fn classes(&self) -> usize {
        self.model.classes()
    }

    fn probabilities(&mut self, inputs: &[f32], _dim: usize) -> dpsgd_audit::Result<Vec<Vec<f64>>> {
        // The population is borrowed for the oracle's life, so the same
        // address and length mean the same records.
        let is_population =
            inputs.len() == self.population.len() && inputs.as_ptr() == self.population.as_ptr();
        if is_population {
            Ok(self.population_answers.clone())
        } else {
            self.answer(inputs)
        }
    }
}

/// The target model as a white-box (input-gradient) oracle.
struct GradientQueries<'a> {
    model: &'a TrainedModel,
}

impl WhiteBox for GradientQueries<'_> {
    fn input_len(&self) -> usize {
        self.model.input_len()
    }

    fn log_prob_gradient(
        &mut self,
        inputs: &[f32],
        classes: &[usize],
    ) -> dpsgd_audit::Result<(Vec<f64>, Vec<f32>)> {
        self.model
            .log_prob_gradient(inputs, classes)
            .map_err(|e| dpsgd_audit::Error::Query {
                reason: e.to_string(),
            })
    }
}

/// Model inversion of every class, measured against the members and
/// non-members and an independent classifier trained on the non-members.
fn run_inversion<W: WhiteBox>(
    oracle: &mut W,
    model: &TrainedModel,
    train: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    inversion: &InversionConfig,
    device: &burn::tensor::Device,
) -> Result<InversionReport, TrainError> {
    let (lo, hi) = feature_range(train);
    let classes: Vec<usize> = (0..model.classes()).collect();
    let image_shape = model.input_shape();
    let config = InversionConfig {
        range: (lo, hi),
        image_shape: match image_shape {
            Some([1, h, w]) => Some([h, w]),
            _ => None,
        },
        ..inversion.clone()
    };
    let inversion = invert(oracle, &classes, &config).map_err(audit_error)?;
    let to_usize = |d: &Dataset| -> Vec<usize> { d.labels().iter().map(|&y| y as usize).collect() };
    let distances = nearest_distances(
        &inversion.images,
        &classes,
        train.features(),
        &to_usize(train),
        test.features(),
        &to_usize(test),
        train.n_features(),
    )
    .map_err(audit_error)?;
    // An independent judge: a non-private model of the general recipe,
    // trained on the non-members only.
    let mut judge_cfg = Recipe::general()
        .fitted_to(test)
        .config(Privacy::NonPrivate, cfg.delta);
    judge_cfg.seed = cfg.seed.map(|s| s ^ 0x1d9e);
    let (_, judge) = train_model(&judge_cfg, test, test, device, |_| {})?;
    let flat: Vec<f32> = inversion.images.iter().flatten().copied().collect();
    let judged = judge.predict(&flat)?;
    let independent_accuracy =
        judged.iter().zip(&classes).filter(|(p, c)| p == c).count() as f64 / classes.len() as f64;
    let ratios: Vec<f64> = distances
        .iter()
        .map(|d| d.to_member / d.to_non_member)
        .filter(|r| r.is_finite())
        .collect();
    Ok(InversionReport {
        classes,
        confidence: inversion.confidence.clone(),
        distance_to_member: distances.iter().map(|d| d.to_member).collect(),
        distance_to_non_member: distances.iter().map(|d| d.to_non_member).collect(),
        mean_distance_ratio: ratios.iter().sum::<f64>() / ratios.len().max(1) as f64,
        independent_accuracy,
        images: inversion.images,
        image_shape,
        range: (lo, hi),
    })
}

/// The smallest and largest feature value of `data`: the public input range
/// inversion stays in.
fn feature_range(data: &Dataset) -> (f32, f32) {
    data.features()
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Random directions per gradient estimate of black-box inversion.
const INVERSION_DIRECTIONS: usize = 16;
/// The finite-difference radius of black-box inversion, in range widths.
const INVERSION_SMOOTHING: f64 = 0.05;

/// One trained shadow model: which population records it trained on, and
/// its logits on the whole population.
struct Shadow {
    inside: Vec<bool>,
    logits: Vec<f64>,
}

/// The balanced IN/OUT design: record `i` is IN the shadows
/// `design[k][i]`, exactly `⌊K/2⌋` or `⌈K/2⌉` of them.
fn shadow_design(n: usize, k: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<bool>> {
    let mut design = vec![vec![false; n]; k];
    let mut order: Vec<usize> = (0..k).collect();
    (0..n).for_each(|record| {
        order.shuffle(rng);
        let ins = k / 2 + usize::from(k % 2 == 1 && rng.random_bool(0.5));
        for &shadow in &order[..ins] {
            design[shadow][record] = true;
        }
    });
    design
}

/// Trains the shadow models on `audit.threads` workers, each shadow on one
/// core (so the shadows, and the attacks built on them, do not depend on the
/// number of workers).
fn train_shadows(
    cfg: &TrainConfig,
    population: &Dataset,
    audit: &AuditConfig,
    device: &burn::tensor::Device,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Shadow>, TrainError> {
    let k = audit.shadow_models;
    let mut rng = ChaCha20Rng::seed_from_u64(audit.seed ^ SHADOW_SALT);
    let design = shadow_design(population.len(), k, &mut rng);
    let seeds: Vec<u64> = (0..k).map(|_| rng.random()).collect();
    let threads = match audit.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
    .min(k);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    // Each shadow's logits on the population, or why it failed.
    type Slot = Option<Result<Vec<f64>, TrainError>>;
    let results: Mutex<Vec<Slot>> = Mutex::new((0..k).map(|_| None).collect());
    let started = Instant::now();
    // Each worker trains its shadows single-threaded: burn-flex's parallel
    // kernels split float sums by rayon's work stealing, so a shadow trained
    // beside another (or by a pool of another size) could differ in the
    // last bits, and 15 epochs amplify them. In a one-thread pool every
    // shadow is the same bits whatever `threads` is and whatever else runs.
    let pools = (0..threads)
        .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            bad(
                "threads",
                format!("cannot start a shadow-training worker: {e}"),
            )
        })?;
    std::thread::scope(|scope| {
        for single in &pools {
            scope.spawn(|| {
                loop {
                    let s = next.fetch_add(1, Ordering::SeqCst);
                    if s >= k {
                        break;
                    }
                    let result = single
                        .install(|| train_shadow(cfg, population, &design[s], seeds[s], device));
                    let failed = result.is_err();
                    if let Ok(mut r) = results.lock() {
                        r[s] = Some(result);
                    }
                    let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                    log(&format!(
                        "shadow {finished}/{k} trained ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    ));
                    if failed {
                        // Stop handing out work: the audit fails anyway.
                        next.store(k, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| bad("shadow_models", "a shadow-training worker panicked"))?;
    let mut shadows = Vec::with_capacity(k);
    for (s, result) in results.into_iter().enumerate() {
        match result {
            Some(Ok(logits)) => shadows.push(Shadow {
                inside: design[s].clone(),
                logits,
            }),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(bad(
                    "shadow_models",
                    format!("shadow {s} was not trained (another failed first)"),
                ));
            }
        }
    }
    Ok(shadows)
}

/// Held-out records a shadow evaluates its test accuracy on (its accuracy
/// is not reported; a small sample keeps the per-epoch evaluation cheap).
const SHADOW_EVAL: usize = 512;

fn train_shadow(
    cfg: &TrainConfig,
    population: &Dataset,
    inside: &[bool],
    seed: u64,
    device: &burn::tensor::Device,
) -> Result<Vec<f64>, TrainError> {
    let ins: Vec<usize> = (0..inside.len()).filter(|&i| inside[i]).collect();
    let outs: Vec<usize> = (0..inside.len())
        .filter(|&i| !inside[i])
        .take(SHADOW_EVAL)
        .collect();
    let shadow_train = population.subset(&ins);
    let shadow_test = population.subset(if outs.is_empty() { &ins } else { &outs });
    let mut shadow_cfg = cfg.clone();
    shadow_cfg.seed = Some(seed);
    shadow_cfg.save_model = None;
    shadow_cfg.checkpoint_dir = None;
    shadow_cfg.resume = false;
    shadow_cfg.progress_epsilon = false;
    shadow_cfg.batch_size = shadow_cfg.batch_size.min(shadow_train.len());
    let (_, model) = train_model(&shadow_cfg, &shadow_train, &shadow_test, device, |_| {})?;
    model.logits(population)
}

/// Largest number of shadow outputs the attack classifiers train on (a
/// random sample beyond it).
const SHADOW_ATTACK_SAMPLES: usize = 50_000;

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// The shadow-model attack: per-class attack classifiers fit on the
/// shadows' outputs with known membership, applied to the target's.
fn shadow_attack_scores(
    shadows: &[Shadow],
    target_logits: &[f64],
    labels: &[usize],
    classes: usize,
    seed: u64,
) -> Result<Vec<f64>, TrainError> {
    let n = labels.len();
    let mut pairs: Vec<(usize, usize)> = (0..shadows.len())
        .flat_map(|s| (0..n).map(move |i| (s, i)))
        .collect();
    if pairs.len() > SHADOW_ATTACK_SAMPLES {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ SHADOW_SALT ^ 1);
        pairs.shuffle(&mut rng);
        pairs.truncate(SHADOW_ATTACK_SAMPLES);
    }
    let examples: Vec<ShadowExample> = pairs
        .iter()
        .map(|&(s, i)| ShadowExample {
            probs: softmax(&shadows[s].logits[i * classes..(i + 1) * classes]),
            label: labels[i],
            member: shadows[s].inside[i],
        })
        .collect();
    let attack = ShadowAttack::fit(&examples, classes, ShadowAttackConfig::default())
        .map_err(audit_error)?;
    (0..n)
        .map(|i| {
            attack.score(
                &softmax(&target_logits[i * classes..(i + 1) * classes]),
                labels[i],
            )
        })
        .collect::<Result<_, _>>()
        .map_err(audit_error)
}

/// The planted canaries and their coins.
struct Canaries {
    data: Dataset,
    included: Vec<bool>,
    kind: CanaryKind,
}

impl Canaries {
    fn included_count(&self) -> usize {
        self.included.iter().filter(|&&b| b).count()
    }

    fn included_data(&self) -> Dataset {
        let idx: Vec<usize> = (0..self.included.len())
            .filter(|&i| self.included[i])
            .collect();
        self.data.subset(&idx)
    }

    /// Scores every canary by its loss under `model` and audits.
    fn audit(
        &self,
        model: &TrainedModel,
        audit: &AuditConfig,
        delta: f64,
        claimed: Option<f64>,
    ) -> Result<CanaryAudit, TrainError> {
        let logits = model.logits(&self.data)?;
        let classes = model.classes();
        let scores: Vec<f64> = (0..self.data.len())
            .map(|i| {
                score_logits(
                    ScoreKind::Loss,
                    &logits[i * classes..(i + 1) * classes],
                    self.data.labels()[i] as usize,
                )
            })
            .collect::<Result<_, _>>()
            .map_err(audit_error)?;
        let m = self.data.len();
        let guesses = audit.canary_guesses.unwrap_or((m / 5).max(1));
        let one_run = one_run_audit(
            &scores,
            &self.included,
            guesses,
            delta,
            audit.canary_significance(),
        )
        .map_err(audit_error)?;
        canary_bounds(self.kind, &scores, &self.included, one_run, delta, claimed)
    }
}

/// The canary audit's figures: the one-run bound, and the Clopper–Pearson
/// bound at the one-run guesser's IN threshold (fixed by the number of
/// guesses): TPR over included, FPR over left-out canaries, at the one-run
/// bound's significance.
fn canary_bounds(
    kind: CanaryKind,
    scores: &[f64],
    included: &[bool],
    one_run: OneRunAudit,
    delta: f64,
    claimed: Option<f64>,
) -> Result<CanaryAudit, TrainError> {
    let m = scores.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let top = &order[..(one_run.guesses as usize).div_ceil(2)];
    let tp = top.iter().filter(|&&i| included[i]).count() as u64;
    let fp = top.len() as u64 - tp;
    let n_in = one_run.included;
    let n_out = m as u64 - n_in;
    let clopper_pearson_epsilon = if n_in > 0 && n_out > 0 {
        canary_epsilon(tp, n_in, fp, n_out, one_run.alpha, delta).map_err(audit_error)?
    } else {
        0.0
    };
    Ok(CanaryAudit {
        kind,
        // The one-run bound alone decides: it is the one with a theorem
        // behind it for a single run (Steinke et al.), and deciding on
        // either of two bounds at α each would refute falsely up to 2α.
        exceeds_claim: exceeds_claim(claimed, one_run.epsilon),
        one_run,
        clopper_pearson_epsilon,
        claimed_epsilon: claimed,
    })
}

/// Input canaries may be at most one per this many training records.
pub const MAX_CANARY_SHARE: usize = 4;

/// **Test-only fault injection** for positive controls of the audit's
/// verdict (issue 25): in a debug build (`debug_assertions`), this
/// environment variable set to a factor `s` in (0, 1] makes the Dirac
/// canary audit and the target's training run a deliberately broken
/// mechanism that adds σ·`s` noise while the claim stays that of σ (see
/// [`crate::whitebox::dirac_canary_audit_with_noise_fault`]; the target is
/// trained once honestly for its claim, then with the cut noise, and
/// reported under the honest claim), so the CLI's tests can check that a
/// refuted claim exits with status 3 (`audit` and `sweep`). A release
/// build never reads it. Never set it outside tests: the audit it produces
/// says nothing about the run (it is also flagged in the warnings).
#[doc(hidden)]
pub const FAULT_NOISE_SCALE_VAR: &str = "DPSGD_TEST_FAULT_NOISE_SCALE";

/// The test-only noise fault's factor (1: none); see
/// [`FAULT_NOISE_SCALE_VAR`].
fn test_fault_noise_scale() -> Result<f64, TrainError> {
    if !cfg!(debug_assertions) {
        return Ok(1.0);
    }
    let Ok(v) = std::env::var(FAULT_NOISE_SCALE_VAR) else {
        return Ok(1.0);
    };
    if v.trim().is_empty() {
        return Ok(1.0);
    }
    match v.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 1.0 => Ok(s),
        _ => Err(TrainError::config(
            "noise_scale",
            format!("{FAULT_NOISE_SCALE_VAR} (test-only) must be a number in (0, 1], not {v:?}"),
        )),
    }
}

/// Draws `audit.canaries` canaries and their inclusion coins.
fn plant_canaries(
    train: &Dataset,
    audit: &AuditConfig,
    rng: &mut ChaCha20Rng,
) -> Result<Option<Canaries>, TrainError> {
    let m = audit.canaries;
    if m == 0 || audit.canary_kind == CanaryKind::Dirac {
        return Ok(None);
    }
    let classes = train.n_classes();
    if classes < 2 {
        return Err(bad("canaries", "canaries need at least two classes"));
    }
    let d = train.n_features();
    let mut features = Vec::with_capacity(m * d);
    let mut labels = Vec::with_capacity(m);
    let mut sources: Vec<usize> = (0..train.len()).collect();
    sources.shuffle(rng);
    for c in 0..m {
        match audit.canary_kind {
            CanaryKind::Mislabeled => {
                let src = sources[c % sources.len()];
                features.extend_from_slice(train.example(src));
                let y = train.labels()[src];
                // A uniformly random wrong label.
                let shift = rng.random_range(1..classes as u32);
                labels.push((y + shift) % classes as u32);
            }
            CanaryKind::OutOfDistribution | CanaryKind::Dirac => {
                features.extend((0..d).map(|_| {
                    let z: f64 = StandardNormal.sample(rng);
                    z as f32
                }));
                labels.push(rng.random_range(0..classes as u32));
            }
        }
    }
    let included: Vec<bool> = (0..m).map(|_| rng.random_bool(0.5)).collect();
    let data =
        Dataset::new(features, labels, d, classes).map_err(|e| bad("canaries", e.to_string()))?;
    let data = match train.image_shape() {
        Some(shape) => data
            .with_image_shape(shape)
            .map_err(|e| bad("canaries", e.to_string()))?,
        None => data,
    };
    Ok(Some(Canaries {
        data,
        included,
        kind: audit.canary_kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The population's answers are computed once and served again
    /// unchanged; any other inputs (even a copy of the population, or
    /// inputs of the same length) are computed afresh.
    #[test]
    fn should_serve_the_populations_answers_from_memory() {
        let (mut train, mut test) = dpsgd_data::digits().split(0.5, 0).unwrap();
        train.apply(&dpsgd_data::Scaling::Divide(16.0));
        test.apply(&dpsgd_data::Scaling::Divide(16.0));
        let cfg = TrainConfig {
            epochs: 1,
            privacy: crate::Privacy::NonPrivate,
            seed: Some(1),
            ..TrainConfig::default()
        };
        let device = burn::tensor::Device::flex();
        let (_, model) = crate::fit::train_model(&cfg, &train, &test, &device, |_| {}).unwrap();
        let population = test.features();
        // As the audit builds it: the answers from the logits it computed
        // anyway.
        let logits = model.logits(&test).unwrap();
        let seeded: Vec<Vec<f64>> = logits.chunks(model.classes()).map(softmax).collect();
        let mut oracle = TargetQueries {
            model: &model,
            population,
            population_answers: seeded.clone(),
        };
        let first = oracle.probabilities(population, model.input_len()).unwrap();
        assert_eq!(first, seeded);
        let again = oracle.probabilities(population, model.input_len()).unwrap();
        assert_eq!(first, again);
        // A copy is computed afresh: the same model on the same records.
        let copy = population.to_vec();
        let fresh = oracle.probabilities(&copy, model.input_len()).unwrap();
        assert_eq!(fresh.len(), first.len());
        for (a, b) in fresh.iter().flatten().zip(first.iter().flatten()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let other: Vec<f32> = population.iter().map(|x| 1.0 - x).collect();
        assert_ne!(
            oracle.probabilities(&other, model.input_len()).unwrap(),
            first
        );
    }

    #[test]
    fn should_refute_a_claim_only_when_a_bound_exceeds_it() {
        assert!(exceeds_claim(Some(1.0), 1.5));
        assert!(exceeds_claim(Some(1.0), 1.01));
        assert!(!exceeds_claim(Some(1.0), 1.0));
        assert!(!exceeds_claim(Some(1.0), 0.999));
        assert!(
            !exceeds_claim(Some(1.0), 1.0 + 1e-7),
            "within the bisection tolerance"
        );
        assert!(!exceeds_claim(None, 50.0), "no claim without DP");
    }

    #[test]
    fn should_split_the_family_alpha_evenly_between_the_audits() {
        assert_eq!(bonferroni(0.05, 1), 0.05);
        assert!((bonferroni(0.05, 10) - 0.005).abs() < 1e-15);
        assert_eq!(bonferroni(0.05, 0), 0.05, "no test counts as one");
        // The family-wise bound: K tests at α/K refute a true claim with
        // probability ≤ K·α/K = α, where K tests at α each could reach
        // 1 − (1 − α)^K (40% for K = 10).
        for k in [1, 2, 6, 30] {
            assert!(k as f64 * bonferroni(0.05, k) <= 0.05 + 1e-15);
        }
        let cfg = AuditConfig {
            canary_alpha: Some(bonferroni(0.05, 4)),
            ..AuditConfig::default()
        };
        assert_eq!(cfg.canary_significance(), 0.0125);
        assert_eq!(cfg.alpha, 0.05, "the bootstrap intervals stay at 95%");
        assert_eq!(AuditConfig::default().canary_significance(), 0.05);
    }

    /// A canary audit of a perfect attack (1000 canaries, 100 guesses, all
    /// right) against a claim between its bounds at α and α/10.
    fn perfect_audit(alpha: f64, claimed: Option<f64>) -> CanaryAudit {
        let included: Vec<bool> = (0..1000).map(|i| i % 2 == 0).collect();
        let scores: Vec<f64> = included.iter().map(|&b| f64::from(u8::from(b))).collect();
        let one_run = one_run_audit(&scores, &included, 100, 0.0, alpha).unwrap();
        CanaryAudit {
            kind: CanaryKind::Mislabeled,
            exceeds_claim: exceeds_claim(claimed, one_run.epsilon),
            one_run,
            clopper_pearson_epsilon: 0.0,
            claimed_epsilon: claimed,
        }
    }

    #[test]
    fn should_refute_at_the_level_asked_from_the_audits_counts() {
        let at = |alpha| perfect_audit(alpha, None).one_run.epsilon;
        let (loose, strict) = (at(0.05), at(0.005));
        assert!(strict < loose - 0.1, "{strict} vs {loose}");
        let claim = 0.5 * (loose + strict);
        // Computed at α = 0.05 the bound refutes the claim; the same
        // counts at α/10 do not: the level, not the stored verdict, decides.
        let audit = perfect_audit(0.05, Some(claim));
        assert!(audit.exceeds_claim);
        assert!(audit.refutes_at(0.05).unwrap());
        assert!(!audit.refutes_at(0.005).unwrap());
        assert!(
            perfect_audit(0.005, Some(strict - 0.01))
                .refutes_at(0.005)
                .unwrap()
        );
        assert!(!perfect_audit(0.05, None).refutes_at(0.005).unwrap());
        assert!(audit.refutes_at(0.0).is_err());
    }

    #[test]
    fn should_put_every_record_in_half_of_the_shadows() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for k in [2, 5, 16] {
            let design = shadow_design(300, k, &mut rng);
            for record in 0..300 {
                let ins = design.iter().filter(|s| s[record]).count();
                assert!(ins == k / 2 || ins == k.div_ceil(2), "k={k}: {ins} IN");
            }
            // Each shadow trains on about half of the records.
            for s in &design {
                let n = s.iter().filter(|&&b| b).count();
                assert!((100..200).contains(&n), "k={k}: shadow of {n}");
            }
        }
    }

    #[test]
    fn should_summarise_the_roc_on_fixed_fprs() {
        let roc = Roc::new(&[0.9, 0.8, 0.4], &[0.7, 0.3, 0.2]).unwrap();
        let summary = roc_summary(&roc);
        assert!(
            summary
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(summary.first(), Some(&(0.0, 2.0 / 3.0)));
        assert_eq!(summary.last(), Some(&(1.0, 1.0)));
        // Every point agrees with the curve's own TPR at that FPR.
        for &(f, t) in &summary {
            assert_eq!(t, roc.tpr_at_fpr(f), "fpr {f}");
        }
        assert!(summary.iter().any(|p| p.0 == 1e-3));
    }

    #[test]
    fn should_parse_attack_and_canary_names() {
        for a in Attack::ALL {
            assert_eq!(a.name().parse::<Attack>(), Ok(a));
        }
        assert!("nope".parse::<Attack>().unwrap_err().contains("label-only"));
        assert_eq!(
            "ood".parse::<CanaryKind>(),
            Ok(CanaryKind::OutOfDistribution)
        );
        assert!("x".parse::<CanaryKind>().is_err());
    }
}
