//! Input canaries (mislabeled copies of training records, or
//! out-of-distribution noise), each in the target's training set with
//! probability ½, and the one-run ε lower bound from their scores; the
//! coins of the white-box gradient canaries planted in the target's run
//! ([`crate::canaries`]) and the same bounds from their scores. The
//! synthetic unit-level Dirac audit is [`super::dirac`].

use super::results::{CanaryAudit, CanaryEstimators};
use super::settings::{AuditConfig, CanaryKind, audit_error, bad, exceeds_claim};
use crate::config::{PrivacyUnit, TrainConfig};
use crate::error::TrainError;
use crate::fit::canaries::{CanaryObservation, GradientCanaries};
use crate::trained::TrainedModel;
use dpsgd_audit::estimators::gdp_estimate_moments;
use dpsgd_audit::fdp::{EpsilonCurve, fdp_one_run_epsilon};
use dpsgd_audit::lower_bound::{OneRunAudit, canary_epsilon, one_run_audit};
use dpsgd_audit::scores::{ScoreKind, score_logits};
use dpsgd_audit::users::{UserAggregate, user_scores};
use dpsgd_data::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::HashSet;

/// The planted canaries and their coins: canary `c` is the `k` records
/// `c·k .. (c+1)·k` of `data` (a canary user of `k` copies of one canary
/// record when `k > 1`), in or out by its coin `included[c]`.
pub(crate) struct Canaries {
    data: Dataset,
    included: Vec<bool>,
    /// Records per canary.
    k: usize,
    /// What one canary is: `record` or `user`.
    unit: &'static str,
    kind: CanaryKind,
}

impl Canaries {
    /// The canaries included.
    pub(crate) fn included_count(&self) -> usize {
        self.included.iter().filter(|&&b| b).count()
    }

    /// The records of the canaries included.
    pub(crate) fn included_records(&self) -> usize {
        self.included_count() * self.k
    }

    /// The records of the canaries included, with their user ids when the
    /// training data has user ids.
    pub(crate) fn included_data(&self) -> Dataset {
        let idx: Vec<usize> = (0..self.data.len())
            .filter(|&i| self.included[i / self.k])
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
        record_level: bool,
    ) -> Result<CanaryAudit, TrainError> {
        let logits = model.logits(&self.data)?;
        let classes = model.classes();
        let record_scores: Vec<f64> = (0..self.data.len())
            .map(|i| {
                score_logits(
                    ScoreKind::Loss,
                    &logits[i * classes..(i + 1) * classes],
                    self.data.labels()[i] as usize,
                )
            })
            .collect::<Result<_, _>>()
            .map_err(audit_error)?;
        // One score per canary: the mean of its records' (in canary order).
        let canary_of: Vec<u64> = (0..self.data.len()).map(|i| (i / self.k) as u64).collect();
        let record_in: Vec<bool> = (0..self.data.len())
            .map(|i| self.included[i / self.k])
            .collect();
        let scores = user_scores(&record_scores, &canary_of, &record_in, UserAggregate::Mean)
            .map_err(audit_error)?
            .scores;
        let m = self.included.len();
        let guesses = audit.canary_guesses.unwrap_or((m / 5).max(1));
        let one_run = one_run_audit(
            &scores,
            &self.included,
            guesses,
            delta,
            audit.canary_significance(),
        )
        .map_err(audit_error)?;
        let mut result =
            canary_bounds(self.kind, &scores, &self.included, one_run, delta, claimed)?;
        result.unit = self.unit;
        judge_group(&mut result, self.k, record_level)?;
        Ok(result)
    }
}

/// Canary users of `k > 1` records against a record-level claim
/// (`record_level`): the verdict against the group-privacy claim kε (at
/// δₖ), and whether the bound exceeds ε itself beside it.
fn judge_group(result: &mut CanaryAudit, k: usize, record_level: bool) -> Result<(), TrainError> {
    result.records_per_canary = k;
    if k > 1
        && record_level
        && let Some(eps) = result.claimed_epsilon
    {
        result.exceeds_record_level_claim = Some(exceeds_claim(Some(eps), result.one_run.epsilon));
        result.claimed_group_epsilon = Some(k as f64 * eps);
        result.exceeds_claim = result.refutes_at(result.one_run.alpha)?;
    }
    Ok(())
}

/// The canary audit's figures: the one-run bound, and the Clopper–Pearson
/// bound at the one-run guesser's IN threshold (fixed by the number of
/// guesses): TPR over included, FPR over left-out canaries, at the one-run
/// bound's significance.
pub(crate) fn canary_bounds(
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
    let estimators = canary_estimators(scores, included, &one_run);
    Ok(CanaryAudit {
        kind,
        white_box: None,
        estimators,
        // The one-run bound alone decides: it is the one with a theorem
        // behind it for a single run (Steinke et al.), and deciding on
        // either of two bounds at α each would refute falsely up to 2α.
        exceeds_claim: exceeds_claim(claimed, one_run.epsilon),
        one_run,
        clopper_pearson_epsilon,
        claimed_epsilon: claimed,
        records_per_canary: 1,
        unit: "record",
        claimed_group_epsilon: None,
        exceeds_record_level_claim: None,
    })
}

/// The f-DP bounds from the one-run audit's counts and the Gaussian-DP
/// estimate from the scores ([`CanaryEstimators`]); each `None` where it
/// cannot be computed (no guesses, all scores equal, δ = 0 for the
/// Gaussian reading).
pub(crate) fn canary_estimators(
    scores: &[f64],
    included: &[bool],
    one_run: &OneRunAudit,
) -> CanaryEstimators {
    let fdp = |curve| {
        fdp_one_run_epsilon(
            one_run.canaries,
            one_run.guesses,
            one_run.correct,
            one_run.delta,
            one_run.alpha,
            curve,
        )
        .ok()
        .filter(|e| e.is_finite())
    };
    let (inside, outside): (Vec<f64>, Vec<f64>) = {
        let inside = scores
            .iter()
            .zip(included)
            .filter(|(_, i)| **i)
            .map(|(s, _)| *s)
            .collect();
        let outside = scores
            .iter()
            .zip(included)
            .filter(|(_, i)| !**i)
            .map(|(s, _)| *s)
            .collect();
        (inside, outside)
    };
    CanaryEstimators {
        fdp_epsilon: fdp(EpsilonCurve::EpsilonDelta),
        fdp_gaussian_epsilon: fdp(EpsilonCurve::Gaussian),
        fdp_run_curve_epsilon: None,
        gdp_estimate: gdp_estimate_moments(&inside, &outside, one_run.delta).ok(),
    }
}

/// Input canaries may be at most one per this many training records.
pub const MAX_CANARY_SHARE: usize = 4;

/// Draws `audit.canaries` canaries of `k` records each and their
/// inclusion coins (one per canary); `user_level` says whether the run's
/// unit is the user. When `train` has user ids, every canary gets a fresh
/// one, among neither `train`'s nor `test`'s.
pub(crate) fn plant_canaries(
    train: &Dataset,
    test: &Dataset,
    audit: &AuditConfig,
    k: usize,
    user_level: bool,
    rng: &mut ChaCha20Rng,
) -> Result<Option<Canaries>, TrainError> {
    let m = audit.canaries;
    if m == 0 || audit.canary_kind == CanaryKind::Dirac {
        return Ok(None);
    }
    // One source record per canary (copied k times): the count that must
    // fit is the canaries', never m·k (at user level the records are a
    // private statistic; the share check counted users already).
    if k == 0 || m > train.len() {
        return Err(bad(
            "canary_records_per_user",
            format!(
                "{m} canaries of {k} records for {} training records",
                train.len()
            ),
        ));
    }
    let classes = train.n_classes();
    if classes < 2 {
        return Err(bad("canaries", "canaries need at least two classes"));
    }
    let d = train.n_features();
    let mut features = Vec::with_capacity(m * k * d);
    let mut labels = Vec::with_capacity(m * k);
    let mut sources: Vec<usize> = (0..train.len()).collect();
    sources.shuffle(rng);
    // One record per canary (the same stream whatever k); a canary user
    // is k copies of it, below: a user whose records are near-identical,
    // the worst case for a record-level claim (under user-level DP-SGD the
    // mean over copies is one copy's gradient, as strong as any user's).
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
    let features: Vec<f32> = features
        .chunks(d)
        .flat_map(|x| std::iter::repeat_n(x, k).flatten().copied())
        .collect();
    let labels: Vec<u32> = labels
        .iter()
        .flat_map(|&y| std::iter::repeat_n(y, k))
        .collect();
    let data = Dataset::new(features, labels, d, classes)
        .map_err(|e| TrainError::config_from("canaries", e))?;
    let data = match train.image_shape() {
        Some(shape) => data
            .with_image_shape(shape)
            .map_err(|e| TrainError::config_from("canaries", e))?,
        None => data,
    };
    let data = match train.users() {
        Some(ids) => {
            let ids = fresh_users(ids, test.users().unwrap_or(&[]), m);
            data.with_users((0..m * k).map(|i| ids[i / k]).collect())
                .map_err(|e| TrainError::config_from("canaries", e))?
        }
        None => data,
    };
    Ok(Some(Canaries {
        data,
        included,
        k,
        unit: if k > 1 || user_level {
            "user"
        } else {
            "record"
        },
        kind: audit.canary_kind,
    }))
}

/// `m` user ids in neither `train` nor `test`, counting down from the
/// largest id.
fn fresh_users(train: &[u64], test: &[u64], m: usize) -> Vec<u64> {
    let used: HashSet<u64> = train.iter().chain(test).copied().collect();
    (0..=u64::MAX)
        .rev()
        .filter(|u| !used.contains(u))
        .take(m)
        .collect()
}

/// Salt of the canaries' random stream.
const CANARY_SALT: u64 = 0xca4a_21e5;

/// Draws the audit's input canaries and their coins, from its seed (none
/// for Dirac canaries, which are not records): canary users of
/// [`AuditConfig::canary_records`] records each when that is above 1.
pub(crate) fn plant(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    audit: &AuditConfig,
) -> Result<Option<Canaries>, TrainError> {
    let mut rng = ChaCha20Rng::seed_from_u64(audit.seed ^ CANARY_SALT);
    let k = audit.canary_records(cfg.privacy_unit);
    let user_level = cfg.privacy_unit != PrivacyUnit::Record;
    plant_canaries(train, test, audit, k, user_level, &mut rng)
}

/// The gradient canaries of a Dirac audit, if asked for: `m` coins from
/// the audit's seed (the canaries' stream, as input canaries'), the
/// coordinates' seed and the auditor's view.
pub(crate) fn gradient_canaries(audit: &AuditConfig) -> Option<GradientCanaries> {
    (audit.canaries > 0 && audit.canary_kind == CanaryKind::Dirac).then(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(audit.seed ^ CANARY_SALT);
        GradientCanaries {
            included: (0..audit.canaries).map(|_| rng.random_bool(0.5)).collect(),
            seed: audit.seed,
            view: audit.canary_view,
            fault: None,
        }
    })
}

/// The canary audit, if asked for: the planted input canaries scored by
/// the target `model`, or the target's own gradient canaries scored by
/// what the white-box auditor observed of its run (`observation`).
/// `claimed` is the target's ε, `privacy` its privacy report (q and T for
/// the reading of the claim as the run's own privacy curve).
pub(crate) fn canary_audit(
    cfg: &TrainConfig,
    planted: Option<&Canaries>,
    observation: Option<&CanaryObservation>,
    model: &TrainedModel,
    audit: &AuditConfig,
    claimed: Option<f64>,
    privacy: &dpsgd_burn::PrivacyReport,
) -> Result<Option<CanaryAudit>, TrainError> {
    let delta = cfg.delta;
    let mut result = match (planted, observation) {
        (Some(c), _) => Some(c.audit(
            model,
            audit,
            delta,
            claimed,
            cfg.privacy_unit == PrivacyUnit::Record,
        )?),
        (None, Some(o)) => {
            let m = o.scores.len();
            let guesses = audit.canary_guesses.unwrap_or((m / 5).max(1));
            let one_run = one_run_audit(
                &o.scores,
                &o.included,
                guesses,
                delta,
                audit.canary_significance(),
            )
            .map_err(audit_error)?;
            let mut result = canary_bounds(
                CanaryKind::Dirac,
                &o.scores,
                &o.included,
                one_run,
                delta,
                claimed,
            )?;
            result.white_box = Some(o.clone());
            Some(result)
        }
        (None, None) => None,
    };
    // The run's curve is the claim of its own unit: canary users against a
    // record-level claim are judged at group privacy, not on that curve.
    if let Some(r) = result.as_mut()
        && claimed.is_some()
        && cfg.defences.mist.is_none()
        && r.claimed_group_epsilon.is_none()
    {
        r.estimators.fdp_run_curve_epsilon = super::curve::curve_epsilon(
            &r.one_run,
            privacy.sample_rate,
            privacy.steps,
            cfg.accountant,
        );
    }
    Ok(result)
}
