//! How to audit: the attacks, the canaries, the significance levels and
//! the target's release ([`AuditConfig`]), the checks of those settings,
//! and the audit's errors.

use crate::error::TrainError;
use dpsgd_audit::hardening::Release;
use dpsgd_audit::inversion::InversionConfig;
use serde::Serialize;

pub use crate::fit::canaries::CanaryView;
pub use dpsgd_audit::Attack;

/// What the canaries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryKind {
    /// Copies of random training records with a random wrong label.
    #[default]
    Mislabeled,
    /// Inputs of independent N(0, 1) features with a random label.
    OutOfDistribution,
    /// White-box gradient canaries (Dirac: a gradient on a coordinate of
    /// the model of its own, clipped to the run's full budget) planted in
    /// the target's own training run — its loop, sampler, engine, clipping,
    /// virtual batches, workers and MIST parts — and observed as
    /// [`AuditConfig::canary_view`] says ([`crate::canaries`]); DP runs
    /// only.
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
    /// What the white-box auditor observes of Dirac canaries: every step's
    /// release (default) or the final model.
    pub canary_view: CanaryView,
    /// Records of each input canary: above 1, every canary is a **user** of
    /// that many copies of one canary record (mislabeled: a training
    /// record with a random wrong label; out-of-distribution: a noise
    /// point) — a user whose records are near-identical, the worst case
    /// for a record-level claim (at user level a user's mean gradient over
    /// copies is one copy's: the canary user is as strong as any user),
    /// with a user id of its own, included or left out whole by one coin,
    /// and scored by the mean of its records' loss scores; the one-run
    /// bound then counts canary users. `None`: the run's
    /// `max_records_per_user` K at user level, 1 at record level. 0 is
    /// refused. Against a record-level claim, canaries of k > 1 records
    /// are judged against the group-privacy claim kε that the record-level
    /// claim implies for them, and whether they exceed ε itself is
    /// reported beside it
    /// ([`CanaryAudit::exceeds_record_level_claim`](super::CanaryAudit::exceeds_record_level_claim)).
    pub canary_records_per_user: Option<usize>,
    /// Guesses `r` of the one-run audit (`None`: `max(1, m/5)`), fixed
    /// before the scores are seen.
    pub canary_guesses: Option<usize>,
    /// Significance α of the lower bounds and the level `1 − α` of the
    /// bootstrap intervals.
    pub alpha: f64,
    /// Significance of the canary audit's ε lower bounds (the one-run
    /// bound that decides [`CanaryAudit::exceeds_claim`](super::CanaryAudit::exceeds_claim), and the
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
    /// The records of each input canary under `unit`:
    /// [`AuditConfig::canary_records_per_user`], or K at user level and 1
    /// at record level.
    pub fn canary_records(&self, unit: dpsgd_burn::PrivacyUnit) -> usize {
        self.canary_records_per_user
            .unwrap_or_else(|| unit.max_records_per_user().unwrap_or(1))
    }

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
            attacks: vec![Attack::Loss, Attack::Lira, Attack::Rmia],
            shadow_models: 16,
            canaries: 0,
            canary_kind: CanaryKind::Mislabeled,
            canary_view: CanaryView::AllSteps,
            canary_records_per_user: None,
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

/// The audit's error for a bad [`AuditConfig`].
pub(crate) fn bad(field: &'static str, reason: impl Into<String>) -> TrainError {
    TrainError::config(field, reason)
}

pub(crate) fn audit_error(e: dpsgd_audit::Error) -> TrainError {
    TrainError::config_from("audit", e)
}

/// Refuses an [`AuditConfig`] that cannot work, whatever the run.
pub(crate) fn check_config(audit: &AuditConfig) -> Result<(), TrainError> {
    if audit.attacks.is_empty() {
        return Err(bad("attacks", "choose at least one attack"));
    }
    let needs_shadows = audit.attacks.iter().any(|a| a.needs_shadows());
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
    if audit.canary_records_per_user == Some(0) {
        return Err(bad(
            "canary_records_per_user",
            "a canary user needs at least one record",
        ));
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
