//! The target model and the attacks that query only it: its training
//! (with the test-only noise fault), its answers as a black-box oracle,
//! and the threshold and label-only attacks.

use super::canaries::Canaries;
use super::results::{AttackResult, attack_result};
use super::settings::{Attack, AuditConfig, audit_error, bad};
use crate::config::{Privacy, TrainConfig};
use crate::error::TrainError;
use crate::fit::canaries::{CanaryObservation, GradientCanaries};
use crate::fit::train_split_off;
use crate::report::TrainReport;
use crate::trained::TrainedModel;
use burn::tensor::Device;
use dpsgd_audit::hardening::{Hardened, ProbabilityOracle, Release, released_score};
use dpsgd_audit::label_only::{LabelOnlyConfig, label_only_scores};
use dpsgd_audit::scores::{ScoreKind, score_logits};
use dpsgd_data::Dataset;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

/// Salt of the label-only attack's noise.
const LABEL_SALT: u64 = 0x1abe_1000;
/// Salt of the label-only attack's subset.
const SUBSET_SALT: u64 = 0x5ab5_e700;

/// **Test-only fault injection** for positive controls of the audit's
/// verdict (issue 25): in a debug build (`debug_assertions`), this
/// environment variable set to a factor `s` in (0, 1] makes the target's
/// training run — and with it the Dirac canaries planted in it — a
/// deliberately broken mechanism that adds σ·`s` noise while the claim
/// stays that of σ (the target is trained once honestly for its claim,
/// then with the cut noise, and reported under the honest claim), so the
/// CLI's tests can check that a
/// refuted claim exits with status 3 (`audit` and `sweep`). A release
/// build never reads it. Never set it outside tests: the audit it produces
/// says nothing about the run (it is also flagged in the warnings).
#[doc(hidden)]
pub const FAULT_NOISE_SCALE_VAR: &str = "DPSGD_TEST_FAULT_NOISE_SCALE";

/// The test-only noise fault's factor (1: none); see
/// [`FAULT_NOISE_SCALE_VAR`].
pub(crate) fn test_fault_noise_scale() -> Result<f64, TrainError> {
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

/// `a` followed by `b` (same features and image shape), with their user
/// ids when both have them (none when neither has; a mix is refused: half
/// a population of users is no population of users).
pub(crate) fn concat(a: &Dataset, b: &Dataset) -> Result<Dataset, TrainError> {
    let users = match (a.users(), b.users()) {
        (Some(x), Some(y)) => Some([x, y].concat()),
        (None, None) => None,
        _ => {
            return Err(TrainError::config(
                "data",
                "one part has user ids and the other has none: give every record its user (or none)",
            ));
        }
    };
    let features = [a.features(), b.features()].concat();
    let labels = [a.labels(), b.labels()].concat();
    let data = Dataset::new(
        features,
        labels,
        a.n_features(),
        a.n_classes().max(b.n_classes()),
    )
    .map_err(|e| TrainError::config_from("data", e))?;
    let data = match a.image_shape() {
        Some(shape) => data
            .with_image_shape(shape)
            .map_err(|e| TrainError::config_from("data", e))?,
        None => data,
    };
    match users {
        Some(ids) => data
            .with_users(ids)
            .map_err(|e| TrainError::config_from("data", e)),
        None => Ok(data),
    }
}

/// Where the target's answers come from: the model the audit trained, or
/// a deployed model queried as a client (whose answers are already its
/// release).
pub(crate) enum TargetSource<'a> {
    /// The trained model, in this process.
    Model(&'a TrainedModel),
    /// A deployed model (a remote endpoint), with its number of classes.
    Deployed(&'a mut dyn ProbabilityOracle),
}

/// The target model as a black-box oracle (the hardened model's inner
/// model). Every attack queries the whole population once: those answers
/// (the audit's own logits of the population softmaxed, or the deployed
/// model's answers to the audit's first query) are served from memory;
/// the queries are still counted, per client, by the hardened model
/// around this one. Other inputs are computed (or sent to the deployed
/// model).
pub(crate) struct TargetQueries<'a> {
    pub(crate) source: TargetSource<'a>,
    pub(crate) population: &'a [f32],
    pub(crate) population_answers: Vec<Vec<f64>>,
}

impl TargetQueries<'_> {
    fn answer(&mut self, inputs: &[f32], dim: usize) -> dpsgd_audit::Result<Vec<Vec<f64>>> {
        match &mut self.source {
            TargetSource::Model(model) => {
                let logits =
                    model
                        .logits_of_inputs(inputs)
                        .map_err(|e| dpsgd_audit::Error::Query {
                            reason: e.to_string(),
                        })?;
                Ok(logits.chunks(model.classes().max(1)).map(softmax).collect())
            }
            TargetSource::Deployed(oracle) => oracle.probabilities(inputs, dim),
        }
    }
}

impl ProbabilityOracle for TargetQueries<'_> {
    fn classes(&self) -> usize {
        match &self.source {
            TargetSource::Model(model) => model.classes(),
            TargetSource::Deployed(oracle) => oracle.classes(),
        }
    }

    fn probabilities(&mut self, inputs: &[f32], dim: usize) -> dpsgd_audit::Result<Vec<Vec<f64>>> {
        // The population is borrowed for the oracle's life, so the same
        // address and length mean the same records.
        let is_population =
            inputs.len() == self.population.len() && inputs.as_ptr() == self.population.as_ptr();
        if is_population {
            Ok(self.population_answers.clone())
        } else {
            self.answer(inputs, dim)
        }
    }
}

/// Probabilities from logits.
pub(crate) fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// Up to `per_side` members and as many non-members, at random.
pub(crate) fn balanced_subset(is_member: &[bool], per_side: usize, seed: u64) -> Vec<usize> {
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
pub(crate) fn feature_spread(data: &Dataset) -> f64 {
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

/// The target as trained for the audit.
pub(crate) struct Target {
    /// Its training report (under the honest claim, with the noise fault).
    pub(crate) report: TrainReport,
    /// The model released.
    pub(crate) model: TrainedModel,
    /// What the white-box auditor observed of its gradient canaries.
    pub(crate) observation: Option<CanaryObservation>,
}

/// Trains the target on `train` and the included `canaries`, exactly as
/// [`crate::train_model`] would (with the test-only noise fault when set,
/// announced in `log` and in `warnings`); a saved model's card declares
/// `split`, how `train` was split off where that depends on the records
/// ([`super::AuditNotCovered::split`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_target(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    canaries: Option<&Canaries>,
    gradient_canaries: Option<&GradientCanaries>,
    split: Option<&'static str>,
    device: &Device,
    log: &(dyn Fn(&str) + Sync),
    warnings: &mut Vec<String>,
) -> Result<Target, TrainError> {
    let target_train = match canaries {
        Some(c) => concat(train, &c.included_data())?,
        None => train.clone(),
    };
    // At user level the public count is the users' (their records are a
    // statistic of the private data).
    let (count, unit) = match (cfg.privacy_unit, target_train.num_users()) {
        (crate::config::PrivacyUnit::User { .. }, Some(users)) => (users, "users"),
        _ => (target_train.len(), "records"),
    };
    log(&format!(
        "target: training on {count} {unit}{}",
        match canaries {
            Some(c) if unit == "users" => format!(" ({} of them canary users)", c.included_count()),
            Some(c) => format!(
                " ({} of them the records of {} canaries)",
                c.included_records(),
                c.included_count()
            ),
            None => String::new(),
        }
    ));
    let noise_scale = test_fault_noise_scale()?;
    let faulty = noise_scale != 1.0 && cfg.privacy != Privacy::NonPrivate;
    if faulty {
        let line = format!(
            "TEST-ONLY FAULT INJECTED ({FAULT_NOISE_SCALE_VAR}={noise_scale}): the target (and with it its Dirac canaries) runs a broken mechanism whose noise is cut to {noise_scale}·σ while the claim keeps σ; this audit says nothing about the run"
        );
        log(&line);
        warnings.push(line);
    }
    if let Some(g) = gradient_canaries {
        log(&format!(
            "canaries: {} white-box gradient canaries in the target's own run (auditor's view: {})",
            g.included.len(),
            g.view
        ));
    }
    let (report, model, observation) = if faulty {
        // The honest run only for its claim (σ, ε, steps); the model
        // released is that of σ·noise_scale, reported under the honest
        // claim.
        let (honest, _, _) =
            train_split_off(cfg, &target_train, test, device, gradient_canaries, split)?;
        let sigma = honest.privacy.noise_multiplier.ok_or_else(|| {
            TrainError::config("noise_scale", "the test-only noise fault needs a DP run")
        })?;
        let broken = TrainConfig {
            privacy: Privacy::NoiseMultiplier(sigma * noise_scale),
            ..cfg.clone()
        };
        let (mut report, model, observation) = train_split_off(
            &broken,
            &target_train,
            test,
            device,
            gradient_canaries,
            split,
        )?;
        report.privacy = honest.privacy;
        (report, model, observation)
    } else {
        train_split_off(cfg, &target_train, test, device, gradient_canaries, split)?
    };
    Ok(Target {
        report,
        model,
        observation,
    })
}

/// What the audit holds of the target's outputs on the population.
pub(crate) enum TargetOutputs {
    /// The trained model's logits of every record, row-major.
    Logits(Vec<f64>),
    /// A deployed model's answers, one released vector per record (the
    /// release already applied by the model's owner).
    Released(Vec<Vec<f64>>),
}

/// The members and non-members together, with the target's outputs on
/// them and what every attack's figures are computed from.
pub(crate) struct Population<'a> {
    /// The members (the training split) followed by the non-members.
    pub(crate) data: Dataset,
    /// Whether each record is a member.
    pub(crate) is_member: Vec<bool>,
    /// The target's outputs on every record.
    pub(crate) outputs: TargetOutputs,
    /// The number of classes (the logits' row length).
    pub(crate) classes: usize,
    /// Each record's label.
    pub(crate) labels: Vec<usize>,
    /// The target's own (exact) loss of each record, for the slices.
    losses: Vec<f64>,
    /// The target's input length.
    pub(crate) input_len: usize,
    /// How to audit.
    pub(crate) audit: &'a AuditConfig,
}

impl<'a> Population<'a> {
    /// The population of `train` and `test` under `model`.
    pub(crate) fn new(
        model: &TrainedModel,
        train: &Dataset,
        test: &Dataset,
        audit: &'a AuditConfig,
    ) -> Result<Self, TrainError> {
        let data = concat(train, test)?;
        let is_member: Vec<bool> = (0..data.len()).map(|i| i < train.len()).collect();
        let logits = model.logits(&data)?;
        Self::with_outputs(
            data,
            is_member,
            TargetOutputs::Logits(logits),
            model.classes(),
            model.input_len(),
            audit,
        )
    }

    /// The population of `train` and `test` under a deployed model whose
    /// `released` answers (one vector per record, members first) the
    /// audit has already received; `audit.release` must be what the model
    /// released.
    pub(crate) fn from_released(
        train: &Dataset,
        test: &Dataset,
        released: Vec<Vec<f64>>,
        classes: usize,
        audit: &'a AuditConfig,
    ) -> Result<Self, TrainError> {
        let data = concat(train, test)?;
        if released.len() != data.len() || released.iter().any(|r| r.len() != classes) {
            return Err(bad(
                "target",
                format!(
                    "the deployed model answered {} vectors for {} records ({classes} classes each)",
                    released.len(),
                    data.len()
                ),
            ));
        }
        let is_member: Vec<bool> = (0..data.len()).map(|i| i < train.len()).collect();
        let input_len = data.n_features();
        Self::with_outputs(
            data,
            is_member,
            TargetOutputs::Released(released),
            classes,
            input_len,
            audit,
        )
    }

    fn with_outputs(
        data: Dataset,
        is_member: Vec<bool>,
        outputs: TargetOutputs,
        classes: usize,
        input_len: usize,
        audit: &'a AuditConfig,
    ) -> Result<Self, TrainError> {
        let labels: Vec<usize> = data.labels().iter().map(|&y| y as usize).collect();
        let mut population = Self {
            data,
            is_member,
            outputs,
            classes,
            labels,
            losses: Vec::new(),
            input_len,
            audit,
        };
        // The slices' losses are the model's own (exact) where the audit
        // has its logits, whatever it releases; a deployed model's are
        // those of what it released.
        population.losses = population
            .target_scores_as(ScoreKind::Loss, true)?
            .into_iter()
            .map(|s| -s)
            .collect();
        Ok(population)
    }

    /// The target's probability vector of every record: the softmax of
    /// its logits, or the deployed model's released vectors.
    pub(crate) fn target_probabilities(&self) -> Vec<Vec<f64>> {
        match &self.outputs {
            TargetOutputs::Logits(logits) => {
                logits.chunks(self.classes.max(1)).map(softmax).collect()
            }
            TargetOutputs::Released(released) => released.clone(),
        }
    }

    /// The share of `members` (or non-members) whose most probable class,
    /// as the target answered, is their label (ties to the lower class).
    pub(crate) fn accuracy(&self, members: bool) -> f64 {
        let probabilities = self.target_probabilities();
        let (mut right, mut total) = (0usize, 0usize);
        for (i, p) in probabilities.iter().enumerate() {
            if self.is_member[i] == members {
                total += 1;
                let best = p
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, v)| if *v > p[b] { j } else { b });
                right += usize::from(best == self.labels[i]);
            }
        }
        right as f64 / total.max(1) as f64
    }

    /// Record `i`'s row of `logits`.
    pub(crate) fn row(&self, logits: &[f64], i: usize) -> Vec<f64> {
        logits[i * self.classes..(i + 1) * self.classes].to_vec()
    }

    /// A record's score, from a model's logits `row` (a shadow's, or the
    /// trained target's), as the attacker sees it: from the logits, or
    /// from the hardened release of the probabilities. Against a deployed
    /// model every score is read from a released vector, even the full
    /// one, so that the shadows' scores are computed exactly as the
    /// target's answers are.
    pub(crate) fn score(
        &self,
        kind: ScoreKind,
        row: &[f64],
        label: usize,
    ) -> dpsgd_audit::Result<f64> {
        match (self.audit.release, &self.outputs) {
            (Release::Full, TargetOutputs::Logits(_)) => score_logits(kind, row, label),
            (r, _) => released_score(kind, &r.apply(&softmax(row)), label),
        }
    }

    /// Whether the attacks read released vectors (a hardened release, or
    /// any deployed model's answers) rather than exact logits.
    pub(crate) fn reads_released(&self) -> bool {
        self.audit.release != Release::Full || matches!(self.outputs, TargetOutputs::Released(_))
    }

    /// The target's score of every record.
    pub(crate) fn target_scores(&self, kind: ScoreKind) -> Result<Vec<f64>, TrainError> {
        self.target_scores_as(kind, false)
    }

    /// The target's score of every record; `exact`: from the full logits
    /// where the audit has them, whatever the release.
    fn target_scores_as(&self, kind: ScoreKind, exact: bool) -> Result<Vec<f64>, TrainError> {
        (0..self.data.len())
            .map(|i| match &self.outputs {
                TargetOutputs::Logits(logits) if exact => {
                    score_logits(kind, &self.row(logits, i), self.labels[i])
                }
                TargetOutputs::Logits(logits) => {
                    self.score(kind, &self.row(logits, i), self.labels[i])
                }
                TargetOutputs::Released(released) => {
                    released_score(kind, &released[i], self.labels[i])
                }
            })
            .collect::<Result<_, _>>()
            .map_err(audit_error)
    }

    /// The figures of the attack `name` from its `scores` (of `subset`
    /// only, when given).
    pub(crate) fn evaluate(
        &self,
        name: &str,
        scores: &[f64],
        subset: Option<&[usize]>,
    ) -> Result<AttackResult, TrainError> {
        attack_result(
            name,
            scores,
            &self.is_member,
            &self.labels,
            &self.losses,
            self.data.users(),
            subset,
            self.audit,
        )
    }
}

/// The hardened target every black-box query goes through: one client per
/// attack, counted, and refused past the budget.
pub(crate) type Gate<'a> = Hardened<TargetQueries<'a>>;

/// The hardened target of `source` over `population`. The target's
/// answers on the population are those already computed (or received):
/// the gate serves them instead of a second forward pass. A deployed
/// model's answers are already its release: its gate releases them as
/// they are.
pub(crate) fn gate<'a>(
    source: TargetSource<'a>,
    population: &'a Population<'_>,
) -> Result<Gate<'a>, TrainError> {
    let release = match source {
        TargetSource::Model(_) => population.audit.release,
        TargetSource::Deployed(_) => Release::Full,
    };
    let oracle = TargetQueries {
        source,
        population: population.data.features(),
        population_answers: population.target_probabilities(),
    };
    let mut gate = Hardened::new(oracle, release).map_err(audit_error)?;
    if let Some(budget) = population.audit.query_budget {
        gate = gate.with_budget(budget);
    }
    Ok(gate)
}

/// What the attacks found so far: their figures, the audit's warnings and
/// the attacks the gate refused.
pub(crate) struct Findings {
    /// Each attack's figures, in the order run.
    pub(crate) attacks: Vec<AttackResult>,
    /// The audit's warnings.
    pub(crate) warnings: Vec<String>,
    /// The attacks refused (their query budget ran out).
    pub(crate) refused_attacks: Vec<String>,
}

impl Findings {
    /// Queries the whole population as `client`: whether it was served (a
    /// refusal is recorded).
    pub(crate) fn admit(
        &mut self,
        gate: &mut Gate<'_>,
        population: &Population<'_>,
        client: &str,
    ) -> Result<bool, TrainError> {
        match gate.probabilities_for(client, population.data.features(), population.input_len) {
            Ok(_) => Ok(true),
            Err(e) if gate.refused(client) > 0 => {
                self.refuse(client, &e);
                Ok(false)
            }
            Err(e) => Err(audit_error(e)),
        }
    }

    /// Records that `client`'s attack was refused, and why.
    pub(crate) fn refuse(&mut self, client: &str, why: &dyn std::fmt::Display) {
        self.warnings
            .push(format!("{client} attack refused: {why}"));
        self.refused_attacks.push(client.to_owned());
    }
}

/// The threshold attacks (loss, confidence, entropy, …) of the audit, in
/// its order.
pub(crate) fn threshold_attacks(
    population: &Population<'_>,
    gate: &mut Gate<'_>,
    findings: &mut Findings,
) -> Result<(), TrainError> {
    for attack in &population.audit.attacks {
        if let Some(kind) = attack.threshold_score()
            && findings.admit(gate, population, attack.name())?
        {
            let result =
                population.evaluate(attack.name(), &population.target_scores(kind)?, None)?;
            findings.attacks.push(result);
        }
    }
    Ok(())
}

/// The label-only attack, if asked for: the labels the target gives
/// noisy copies of a balanced subset of the population.
pub(crate) fn label_only(
    population: &Population<'_>,
    gate: &mut Gate<'_>,
    findings: &mut Findings,
) -> Result<(), TrainError> {
    let audit = population.audit;
    if !audit.attacks.contains(&Attack::LabelOnly) {
        return Ok(());
    }
    let subset = balanced_subset(&population.is_member, audit.label_only_records, audit.seed);
    let inputs: Vec<f32> = subset
        .iter()
        .flat_map(|&i| population.data.example(i).iter().copied())
        .collect();
    let subset_labels: Vec<usize> = subset.iter().map(|&i| population.labels[i]).collect();
    let spread = feature_spread(&population.data);
    let config = LabelOnlyConfig {
        noise_scales: [0.05, 0.1, 0.2, 0.4].iter().map(|s| s * spread).collect(),
        seed: audit.seed ^ LABEL_SALT,
        ..LabelOnlyConfig::default()
    };
    let client = Attack::LabelOnly.name();
    let answer = label_only_scores(
        &mut gate.client(client),
        &inputs,
        population.input_len,
        &subset_labels,
        &config,
    );
    match answer {
        Ok(scores) => {
            let mut full = vec![f64::NAN; population.data.len()];
            for (&i, s) in subset.iter().zip(scores) {
                full[i] = s;
            }
            findings
                .attacks
                .push(population.evaluate(client, &full, Some(&subset))?);
        }
        Err(e) if gate.refused(client) > 0 => findings.refuse(client, &e),
        Err(e) => return Err(audit_error(e)),
    }
    Ok(())
}
