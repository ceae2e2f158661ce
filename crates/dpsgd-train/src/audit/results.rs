//! What an audit measured: one attack's figures ([`AttackResult`], from
//! its scores), the canary audit's, inversion's, and the whole report.

use super::settings::{AuditConfig, CanaryKind, audit_error, exceeds_claim};
use crate::error::TrainError;
use crate::report::TrainReport;
use crate::trained::TrainedModel;
use dpsgd_audit::estimators::{BcaInterval, bca_roc};
use dpsgd_audit::hardening::{ClientUsage, Release};
use dpsgd_audit::lower_bound::OneRunAudit;
use dpsgd_audit::metrics::{Interval, Roc, bootstrap};
use dpsgd_audit::slices::{Record, Slice, slices};
use dpsgd_audit::users::{UserAggregate, user_scores};
use serde::Serialize;

/// Salt of the bootstrap's random stream.
const BOOT_SALT: u64 = 0xb007_5742;
/// Salt of the BCa bootstrap's random stream.
const BCA_SALT: u64 = 0xbca0_5eed;
/// Groups per sample of the BCa acceleration's delete-a-group jackknife
/// ([`bca_roc`]): at most 200 ROC curves however many records, and the
/// full jackknife for up to 100 members and 100 non-members.
const BCA_JACKKNIFE_GROUPS: usize = 100;

/// One attack's figures on the members vs non-members.
#[derive(Debug, Clone, Serialize)]
pub struct AttackResult {
    /// `loss`, `confidence`, `entropy`, `modified-entropy`, `shadow`,
    /// `lira-online`, `lira-offline`, `label-only`.
    pub name: String,
    /// ROC AUC (0.5: no leakage measured).
    pub auc: f64,
    /// Percentile bootstrap interval of the AUC at level `1 − α`
    /// ([`bootstrap`]); [`AttackResult::auc_bca`] is the BCa one.
    pub auc_interval: Interval,
    /// BCa bootstrap interval (Efron 1987) of the AUC at level `1 − α`,
    /// from `bootstrap_resamples` resamples and a delete-a-group jackknife
    /// ([`bca_roc`]). `None` when it cannot be computed (fewer than two
    /// members or non-members, fewer than two resamples, a non-finite end).
    /// Serialised as `level` (`1 − α`), `estimate` (= `auc`), `low`, `high`,
    /// `bias_correction` (`z₀`) and `acceleration` (`a`).
    pub auc_bca: Option<BcaInterval>,
    /// TPR at 1% FPR.
    pub tpr_at_fpr_0_01: f64,
    /// BCa interval of the TPR at 1% FPR, as [`AttackResult::auc_bca`]
    /// (from the same resamples).
    pub tpr_at_fpr_0_01_bca: Option<BcaInterval>,
    /// TPR at 0.1% FPR.
    pub tpr_at_fpr_0_001: f64,
    /// BCa interval of the TPR at 0.1% FPR, as [`AttackResult::auc_bca`].
    pub tpr_at_fpr_0_001_bca: Option<BcaInterval>,
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
    /// The same attack against **users**, when the records carry user ids:
    /// one entry per aggregate of a user's record scores (`mean`, then
    /// `max`). Empty (and not serialised) without user ids. A record-level
    /// claim says nothing of users with many records: these figures show
    /// how far their membership is inferable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserLevelAttack>,
}

/// One attack's figures against users: each user scored by the aggregate
/// of their records' scores ([`dpsgd_audit::users::user_scores`]), members
/// (users of the training split) against non-members (users of the test
/// split).
#[derive(Debug, Clone, Serialize)]
pub struct UserLevelAttack {
    /// How a user's record scores were aggregated: `mean` or `max`.
    pub aggregate: &'static str,
    /// Which users were scored: those with at least this many records in
    /// the audited population (1: every user; above 1: the heaviest fifth
    /// of the users, whose many records are what record-level DP covers
    /// only at group privacy).
    pub min_records: usize,
    /// Member and non-member users scored.
    pub users: (usize, usize),
    /// ROC AUC over users (0.5: no leakage measured).
    pub auc: f64,
    /// Percentile bootstrap interval of the AUC at level `1 − α`, over
    /// users (as [`AttackResult::auc_interval`]).
    pub auc_interval: Interval,
    /// TPR at 1% FPR, over users.
    pub tpr_at_fpr_0_01: f64,
    /// TPR at 0.1% FPR, over users.
    pub tpr_at_fpr_0_001: f64,
}

/// The canary audit's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryAudit {
    /// What the canaries were.
    pub kind: CanaryKind,
    /// For white-box (Dirac) canaries: what the auditor observed of the
    /// target's run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub white_box: Option<crate::fit::canaries::CanaryObservation>,
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
    /// Other readings of the same canaries, beside the one-run bound; none
    /// of them decides [`CanaryAudit::exceeds_claim`].
    pub estimators: CanaryEstimators,
    /// Whether the one-run lower bound exceeds the claim: the claim is then
    /// false (a privacy bug) at confidence `1 − α`, with α the bound's
    /// significance (`one_run.alpha`). Canary users of k > 1 records
    /// against a record-level claim are judged against the group-privacy
    /// claim that ε implies for them ([`CanaryAudit::claimed_group_epsilon`]).
    pub exceeds_claim: bool,
    /// Records of each canary (k): above 1, every canary is a user of k
    /// records, included or left out whole, scored by the mean of its
    /// records' scores, and the one-run audit counts canary users.
    pub records_per_canary: usize,
    /// What one canary is: `record`, or `user` (canary users, at user
    /// level or with k > 1).
    pub unit: &'static str,
    /// Canary users of k > 1 records against a **record-level** claim ε:
    /// the claim they are judged against, kε of group privacy, at
    /// δₖ = k·e^{(k−1)ε}·δ (the one-run bound recomputed at δₖ decides
    /// [`CanaryAudit::exceeds_claim`]; never refuted when δₖ ≥ 1). `None`
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_group_epsilon: Option<f64>,
    /// Canary users of k > 1 records against a record-level claim ε:
    /// whether the one-run bound exceeds ε itself. Not a refutation (ε is
    /// about records, the canaries are users); `true` shows that the
    /// record-level claim does not cover users. `None` otherwise (and
    /// without a claim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceeds_record_level_claim: Option<bool>,
}

/// The f-DP one-run bounds and a Gaussian-DP estimate from one canary
/// audit's counts and scores (issue 28).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CanaryEstimators {
    /// The f-DP one-run bound (Mahloujifar, Melis & Chaudhuri 2024) from
    /// the one-run audit's counts, the claim read as the (ε, δ) trade-off
    /// curve: a lower bound on ε for an (ε, δ)-DP claim, at the one-run
    /// bound's α. `None` where it cannot be computed.
    pub fdp_epsilon: Option<f64>,
    /// The same, the claim read as the Gaussian mechanism calibrated to
    /// (ε, δ) (as JAX Privacy's `epsilon_one_run_fdp`): larger, and a bound
    /// only for a mechanism that is Gaussian-DP.
    pub fdp_gaussian_epsilon: Option<f64>,
    /// The f-DP one-run bound with the claim read as **the run's own
    /// privacy curve**: the privacy profile δ(ε) of its T steps of the
    /// Poisson-subsampled Gaussian at rate q (PLD), over the family of
    /// noise multipliers, reported as the claimed ε (by the run's
    /// accountant) of the least private one the canaries refute (see
    /// `audit/curve.rs`). A lower bound for the claim DP-SGD's analysis
    /// actually makes, far above the (ε, δ) reading; `None` without DP,
    /// under MIST (one claim per sub-model) or where PLD cannot answer.
    pub fdp_run_curve_epsilon: Option<f64>,
    /// A Gaussian-DP **estimate** (Nasr et al. 2023): μ fitted to the
    /// included and left-out canaries' scores (equal-variance moments) and
    /// its ε at the run's δ. An estimate, not a bound: it can exceed or
    /// fall short of the truth. `None` where it cannot be fitted.
    pub gdp_estimate: Option<dpsgd_audit::estimators::GdpEstimate>,
}

impl CanaryAudit {
    /// Whether this audit refutes its claim at significance `alpha`: the
    /// one-run bound, recomputed at `alpha` from the audit's counts
    /// (canaries, guesses, right guesses, δ), exceeds the claimed ε
    /// ([`exceeds_claim`]). At `one_run.alpha` this is
    /// [`CanaryAudit::exceeds_claim`]; a family of K audits tests each at
    /// [`bonferroni`](super::bonferroni)`(α, K)`.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for `α ∉ (0, 1)` or inconsistent counts.
    pub fn refutes_at(&self, alpha: f64) -> Result<bool, TrainError> {
        let o = &self.one_run;
        let (claim, delta) = match (self.claimed_group_epsilon, self.claimed_epsilon) {
            (Some(group), Some(eps)) => {
                let k = self.records_per_canary as f64;
                let delta = k * ((k - 1.0) * eps).exp() * o.delta;
                if delta >= 1.0 || delta.is_nan() {
                    // A vacuous group claim: nothing refutes it. α is
                    // still checked.
                    if !(alpha > 0.0 && alpha < 1.0) {
                        return Err(super::settings::bad("alpha", "must be in (0, 1)"));
                    }
                    return Ok(false);
                }
                (Some(group), delta)
            }
            _ => (self.claimed_epsilon, o.delta),
        };
        let bound = dpsgd_audit::lower_bound::one_run_epsilon(
            o.canaries, o.guesses, o.correct, delta, alpha,
        )
        .map_err(audit_error)?;
        Ok(exceeds_claim(claim, bound))
    }
}

/// Model inversion's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct InversionReport {
    /// The classes reconstructed.
    pub classes: Vec<usize>,
    /// The target's confidence `p_y` on each reconstruction.
    pub confidence: Vec<f64>,
    /// Distance from each reconstruction to its class's nearest member
    /// (`NaN`, `null` in JSON, for a class with no member or no
    /// non-member: not measured).
    pub distance_to_member: Vec<f64>,
    /// Distance to its class's nearest non-member (`NaN` as above).
    pub distance_to_non_member: Vec<f64>,
    /// The classes whose distances were measured: those with a member and
    /// a non-member.
    pub measured_classes: usize,
    /// Mean of `distance_to_member / distance_to_non_member` over the
    /// classes measured (below 1: the reconstructions sit closer to the
    /// training data than to unseen data of the same class; `NaN`, `null`
    /// in JSON, when no class was measured).
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

/// What an audit's report computes from private records directly, which
/// its target's ε does not cover (issue 24's rule: a statistic of the
/// private data that is shown anyway is declared).
///
/// An audit is a measurement on the data, not a release: its figures are
/// exact statistics of the members (the target's training records) and of
/// the non-members (the held-out records), computed from the model and
/// from those records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditNotCovered {
    /// What this section is.
    pub note: &'static str,
    /// The report's fields (JSON pointers) that are such statistics.
    pub fields: Vec<&'static str>,
    /// How the data was split, where the split itself depends on the
    /// records: at the record level with user ids the audit splits by user
    /// (its per-user figures need every user on one side), so one record's
    /// user id can move the parts' sizes and with them the target's N, q
    /// and ε. `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<&'static str>,
}

impl AuditNotCovered {
    /// What [`AuditNotCovered::note`] says.
    pub const NOTE: &'static str = "an audit measures the model on the private records: these fields are exact statistics of the members (the target's training records) and the non-members, not covered by the target's epsilon; publish them only if that is acceptable";

    /// What [`AuditNotCovered::split`] says when it applies.
    pub const SPLIT_BY_USER: &'static str = "split by user at the record level: a record's user id decides its part, so the parts' sizes and the target's N, q, steps and epsilon depend on the records' user ids (train splits by position at the record level)";

    /// The declaration for an audit (`deployed`: of a served model, whose
    /// report has no canaries and no nested training report) of `train`
    /// at `unit`.
    pub(crate) fn of(
        deployed: bool,
        unit: crate::PrivacyUnit,
        train: &dpsgd_data::Dataset,
    ) -> Self {
        let mut fields = vec![
            "/train_accuracy",
            "/attacks",
            "/inversion",
            "/queries",
            "/refused_attacks",
        ];
        if !deployed {
            fields.extend([
                "/epsilon_lower_bound",
                "/canary_audit",
                "/target/not_covered_by_epsilon",
                "/target/early_stopping",
            ]);
        }
        let record_level_users =
            !deployed && matches!(unit, crate::PrivacyUnit::Record) && train.users().is_some();
        Self {
            note: Self::NOTE,
            fields,
            split: record_level_users.then_some(Self::SPLIT_BY_USER),
        }
    }
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
    /// What the fields above compute from private records directly.
    pub not_covered_by_epsilon: AuditNotCovered,
}

/// What an audit hands back besides the report.
#[derive(Debug)]
pub struct AuditOutcome {
    /// The figures.
    pub report: AuditReport,
    /// The target model.
    pub model: TrainedModel,
}

/// The figures of one attack's scores (NaN scores, and records outside
/// `subset` when given, are left out), with its figures against users
/// when the records' `users` are given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attack_result(
    name: &str,
    scores: &[f64],
    is_member: &[bool],
    labels: &[usize],
    losses: &[f64],
    users: Option<&[u64]>,
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
    let (roc, auc_interval) = roc_with_interval(&members, &others, audit)?;
    let [auc_bca, tpr_at_fpr_0_01_bca, tpr_at_fpr_0_001_bca] = bca_figures(
        &members,
        &others,
        audit.bootstrap_resamples,
        1.0 - audit.alpha,
        audit.seed ^ BCA_SALT,
    );
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
    let users = match users {
        Some(ids) => user_level(&chosen, scores, is_member, ids, audit)?,
        None => Vec::new(),
    };
    Ok(AttackResult {
        name: name.to_owned(),
        auc: roc.auc,
        auc_interval,
        auc_bca,
        tpr_at_fpr_0_01: roc.tpr_at_fpr(0.01),
        tpr_at_fpr_0_01_bca,
        tpr_at_fpr_0_001: roc.tpr_at_fpr(0.001),
        tpr_at_fpr_0_001_bca,
        balanced_accuracy: roc.balanced_accuracy(),
        advantage: roc.advantage(),
        records: roc.counts,
        roc: roc_summary(&roc),
        slices: slices(&records, 10).map_err(audit_error)?,
        users,
    })
}

/// The figures against users of the `chosen` records' scores, for each
/// aggregate ([`UserAggregate::ALL`]).
fn user_level(
    chosen: &[usize],
    scores: &[f64],
    is_member: &[bool],
    ids: &[u64],
    audit: &AuditConfig,
) -> Result<Vec<UserLevelAttack>, TrainError> {
    let s: Vec<f64> = chosen.iter().map(|&i| scores[i]).collect();
    let u: Vec<u64> = chosen.iter().map(|&i| ids[i]).collect();
    let m: Vec<bool> = chosen.iter().map(|&i| is_member[i]).collect();
    // Each user's records in the population, and the heavy users' bar:
    // the record count of the user at the 80th percentile (at least 2).
    let mut counts: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for id in &u {
        *counts.entry(*id).or_default() += 1;
    }
    let mut sorted: Vec<usize> = counts.values().copied().collect();
    sorted.sort_unstable();
    let heavy = sorted
        .get(sorted.len() * 4 / 5)
        .copied()
        .filter(|&t| t >= 2);
    // Each aggregate once, read for every set of users.
    let aggregates = UserAggregate::ALL
        .iter()
        .map(|&how| Ok((how, user_scores(&s, &u, &m, how).map_err(audit_error)?)))
        .collect::<Result<Vec<_>, TrainError>>()?;
    let mut out = Vec::new();
    for min_records in std::iter::once(1).chain(heavy) {
        for (how, per_user) in &aggregates {
            let keep = |side: bool| -> Vec<f64> {
                per_user
                    .users
                    .iter()
                    .zip(&per_user.scores)
                    .zip(&per_user.is_member)
                    .filter(|((id, _), member)| **member == side && counts[*id] >= min_records)
                    .map(|((_, score), _)| *score)
                    .collect()
            };
            let (members, others) = (keep(true), keep(false));
            if min_records > 1 && (members.is_empty() || others.is_empty()) {
                continue;
            }
            let (roc, auc_interval) = roc_with_interval(&members, &others, audit)?;
            out.push(UserLevelAttack {
                aggregate: how.name(),
                min_records,
                users: roc.counts,
                auc: roc.auc,
                auc_interval,
                tpr_at_fpr_0_01: roc.tpr_at_fpr(0.01),
                tpr_at_fpr_0_001: roc.tpr_at_fpr(0.001),
            });
        }
    }
    Ok(out)
}

/// The ROC of `members` against `others` and its AUC's percentile
/// bootstrap interval at level `1 − α` (the audit's resamples and seed).
fn roc_with_interval(
    members: &[f64],
    others: &[f64],
    audit: &AuditConfig,
) -> Result<(Roc, Interval), TrainError> {
    let roc = Roc::new(members, others).map_err(audit_error)?;
    let interval = bootstrap(
        members,
        others,
        |r| r.auc,
        audit.bootstrap_resamples,
        1.0 - audit.alpha,
        audit.seed ^ BOOT_SALT,
    )
    .map_err(audit_error)?;
    Ok((roc, interval))
}

/// BCa intervals at `level` of the AUC, the TPR at 1% and at 0.1% FPR
/// ([`bca_roc`]); each `None` where it cannot be computed (too few scores
/// or resamples, a non-finite end), never an error.
fn bca_figures(
    members: &[f64],
    others: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> [Option<BcaInterval>; 3] {
    let Ok(ci) = bca_roc(
        members,
        others,
        &[0.01, 0.001],
        resamples,
        level,
        seed,
        BCA_JACKKNIFE_GROUPS,
    ) else {
        return [None; 3];
    };
    let label = |ci: BcaInterval| {
        (ci.low.is_finite() && ci.high.is_finite() && ci.estimate.is_finite()).then_some(ci)
    };
    [
        label(ci.auc),
        ci.tpr_at_fpr.first().copied().and_then(label),
        ci.tpr_at_fpr.get(1).copied().and_then(label),
    ]
}

/// The ROC curve at fixed FPRs: 101 linear points and 121 logarithmic ones
/// from 10⁻⁶, enough for both plots without every distinct score.
pub(crate) fn roc_summary(roc: &Roc) -> Vec<(f64, f64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(resamples: usize) -> AuditConfig {
        AuditConfig {
            bootstrap_resamples: resamples,
            alpha: 0.1,
            seed: 3,
            ..AuditConfig::default()
        }
    }

    /// Members score higher than non-members with overlap (a deterministic
    /// interleaving): every BCa interval is labelled at 1 − α and holds its
    /// point estimate, the same figure as the report's own.
    #[test]
    fn should_report_bca_intervals_around_the_figures() {
        let n = 3000;
        let scores: Vec<f64> = (0..2 * n)
            .map(|i| {
                let x = ((i * 7919) % 1000) as f64 / 1000.0;
                if i < n { x + 0.3 } else { x }
            })
            .collect();
        let is_member: Vec<bool> = (0..2 * n).map(|i| i < n).collect();
        let labels = vec![0; 2 * n];
        let losses = vec![0.0; 2 * n];
        let r = attack_result(
            "loss",
            &scores,
            &is_member,
            &labels,
            &losses,
            None,
            None,
            &config(200),
        )
        .unwrap();
        for (ci, figure) in [
            (r.auc_bca, r.auc),
            (r.tpr_at_fpr_0_01_bca, r.tpr_at_fpr_0_01),
            (r.tpr_at_fpr_0_001_bca, r.tpr_at_fpr_0_001),
        ] {
            let ci = ci.expect("a BCa interval");
            assert_eq!(ci.level, 0.9);
            assert_eq!(ci.estimate, figure);
            assert!(
                ci.low <= figure && figure <= ci.high,
                "{figure} outside {ci:?}"
            );
        }
        let auc = r.auc_bca.unwrap();
        assert!(auc.low > 0.5 && auc.high < 1.0, "{auc:?}");
        let json = serde_json::to_value(&r).unwrap();
        for key in ["auc_bca", "tpr_at_fpr_0_01_bca", "tpr_at_fpr_0_001_bca"] {
            for field in ["level", "estimate", "low", "high"] {
                assert!(json[key][field].is_number(), "{key}.{field}");
            }
        }
        assert!(json["auc_interval"]["low"].is_number());
    }

    /// One member (or one resample) leaves no BCa interval: `None`, and the
    /// point figures are still there.
    #[test]
    fn should_leave_the_bca_intervals_out_when_a_group_is_too_small() {
        let scores = [0.9, 0.1, 0.2, 0.3];
        let labels = [0; 4];
        let losses = [0.0; 4];
        let r = attack_result(
            "loss",
            &scores,
            &[true, false, false, false],
            &labels,
            &losses,
            None,
            None,
            &config(50),
        )
        .unwrap();
        assert_eq!(r.auc, 1.0);
        assert!(r.auc_bca.is_none());
        assert!(r.tpr_at_fpr_0_01_bca.is_none() && r.tpr_at_fpr_0_001_bca.is_none());
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["auc_bca"].is_null());
        let member = [true, true, false, false];
        let r = attack_result(
            "loss",
            &scores,
            &member,
            &labels,
            &losses,
            None,
            None,
            &config(1),
        )
        .unwrap();
        assert!(r.auc_bca.is_none());
        assert!(r.users.is_empty(), "no user ids, no user-level figures");
        assert!(serde_json::to_value(&r).unwrap().get("users").is_none());
    }

    /// Users 1 and 2 are members, 3 and 4 not; the record-level AUC mixes
    /// them, the user-level ones are by hand. A subset restricts the
    /// records before they are grouped.
    #[test]
    fn should_score_users_by_the_mean_and_the_best_of_their_records() {
        // user:    1    1    2    3    3    3    4
        let scores = [0.9, 0.1, 0.5, 0.8, 0.0, 0.1, 0.45];
        let users = [1, 1, 2, 3, 3, 3, 4];
        let member = [true, true, true, false, false, false, false];
        let (labels, losses) = ([0; 7], [0.0; 7]);
        let r = attack_result(
            "loss",
            &scores,
            &member,
            &labels,
            &losses,
            Some(&users),
            None,
            &config(20),
        )
        .unwrap();
        assert_eq!(r.users.len(), 2);
        let (mean, max) = (&r.users[0], &r.users[1]);
        assert_eq!((mean.aggregate, max.aggregate), ("mean", "max"));
        // Means: members 0.5, 0.5; non-members 0.3, 0.45: perfectly apart.
        assert_eq!(mean.users, (2, 2));
        assert_eq!(mean.auc, 1.0);
        assert_eq!(mean.tpr_at_fpr_0_01, 1.0);
        // Maxima: members 0.9, 0.5; non-members 0.8, 0.45: 3 of 4 pairs.
        assert_eq!(max.auc, 0.75);
        assert_eq!(max.tpr_at_fpr_0_01, 0.5);
        assert!(max.auc_interval.low <= max.auc_interval.high);
        // Only records 0, 3 and 6: users 1 (0.9), 3 (0.8), 4 (0.45).
        let r = attack_result(
            "loss",
            &scores,
            &member,
            &labels,
            &losses,
            Some(&users),
            Some(&[0, 3, 6]),
            &config(20),
        )
        .unwrap();
        assert_eq!(r.users[0].users, (1, 2));
        assert_eq!(r.users[0].auc, 1.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["users"][1]["aggregate"], "max");
        assert_eq!(json["users"][0]["users"][1], 2);
        // A user on both sides has no user-level membership.
        let mixed = [true, false, true, false, false, false, false];
        let e = attack_result(
            "loss",
            &scores,
            &mixed,
            &labels,
            &losses,
            Some(&users),
            None,
            &config(20),
        )
        .unwrap_err();
        assert!(e.to_string().contains("split the data by user"), "{e}");
    }
}
