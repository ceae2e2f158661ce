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
//! # Users
//!
//! When the records carry user ids ([`Dataset::with_users`], split by
//! user), every attack is also read against **users**
//! ([`AttackResult::users`]): a user's score is the mean, or the best, of
//! their records' scores — at record level too, where it shows how far a
//! record-level claim leaves heavy users' membership inferable. Canaries
//! become **canary users** of k records
//! ([`AuditConfig::canary_records_per_user`]; K at user level), each with
//! a fresh user id, in or out whole by one coin, scored by the mean of
//! their records' loss scores, and the one-run bound counts canary users.
//! White-box gradient canaries are record slots: refused at user level.
//!
//! # Privacy
//!
//! An audit *releases* attack figures computed from the private training
//! data: they are measurements for whoever owns the data, not covered by
//! the target's ε.
//!
//! # Layout
//!
//! [`audit`] runs the experiment as a list of stages, each in its own
//! file: the settings and their checks (`settings.rs`), the target and
//! the attacks that query only it (`target.rs`: threshold and label-only
//! attacks through the hardened gate), the shadow models with LiRA and
//! the shadow-model attack (`shadows.rs`), model inversion
//! (`inversion.rs`), the input canaries and the white-box gradient
//! canaries' bounds (`canaries.rs`; the canaries themselves are planted
//! in the target's run by [`crate::canaries`]), the f-DP bound against the
//! run's own privacy curve ([`curve`]), the synthetic unit-level Dirac
//! audit ([`dirac`], also at [`crate::whitebox`]), the figures
//! (`results.rs`), and the audit of a model deployed elsewhere, queried as
//! a client ([`audit_deployed`], `deployed.rs`).

mod canaries;
pub mod curve;
mod deployed;
pub mod dirac;
mod inversion;
mod results;
mod settings;
mod shadows;
mod target;

pub use canaries::MAX_CANARY_SHARE;
pub use deployed::{DeployedAuditReport, DeployedModel, DeployedOracle, audit_deployed};
pub use results::{
    AttackResult, AuditNotCovered, AuditOutcome, AuditReport, CanaryAudit, CanaryEstimators,
    InversionReport, UserLevelAttack,
};
pub use settings::{Attack, AuditConfig, CanaryKind, CanaryView, bonferroni, exceeds_claim};
pub use target::FAULT_NOISE_SCALE_VAR;

use crate::config::{Privacy, PrivacyUnit, TrainConfig};
use crate::error::TrainError;
use dpsgd_data::Dataset;
use settings::{bad, check_config};
use std::time::Instant;
use target::{Findings, Population};

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
    // Refused before anything is trained.
    check_config(audit)?;
    check_run(cfg, train, test, audit)?;
    // The target, with its canaries.
    let mut warnings = Vec::new();
    let planted = canaries::plant(cfg, train, test, audit)?;
    let gradient_canaries = canaries::gradient_canaries(audit);
    // Declared in the report, and in the card of a saved target.
    let not_covered = AuditNotCovered::of(false, cfg.privacy_unit, train);
    let target = target::train_target(
        cfg,
        train,
        test,
        planted.as_ref(),
        gradient_canaries.as_ref(),
        not_covered.split,
        device,
        log,
        &mut warnings,
    )?;
    let model = &target.model;
    let epsilon = target.report.privacy.epsilon;
    // The attacks, every black-box query through the hardened gate.
    let population = Population::new(model, train, test, audit)?;
    let mut gate = target::gate(target::TargetSource::Model(model), &population)?;
    let mut findings = Findings {
        attacks: Vec::new(),
        warnings,
        refused_attacks: Vec::new(),
    };
    target::threshold_attacks(&population, &mut gate, &mut findings)?;
    let shadows = shadows::shadow_attacks(cfg, &population, &mut gate, &mut findings, device, log)?;
    target::label_only(&population, &mut gate, &mut findings)?;
    let inversion = inversion::inversion_attack(
        cfg,
        Some(model),
        inversion::InversionTarget::of(model),
        train,
        test,
        audit,
        &mut gate,
        &mut findings,
        device,
        log,
    )?;
    let queries = gate.usage();
    drop(gate);
    // The canary audit: the empirical ε lower bound.
    let canary_audit = canaries::canary_audit(
        cfg,
        planted.as_ref(),
        target.observation.as_ref(),
        model,
        audit,
        epsilon,
        &target.report.privacy,
    )?;
    let Findings {
        attacks,
        mut warnings,
        refused_attacks,
    } = findings;
    if let Some(check) = canary_audit
        .as_ref()
        .and_then(|c| c.white_box.as_ref())
        .and_then(|w| w.noise_check)
        .filter(|n| !n.consistent)
    {
        warnings.push(format!(
            "the noise released at the white-box canaries' coordinates is not the noise ε is computed for (measured/claimed {:.3}, step-to-step correlation {:.3}): a diagnostic, not a bound, but a sign of a broken mechanism",
            check.noise_ratio, check.lag1_correlation
        ));
    }
    Ok(AuditOutcome {
        report: AuditReport {
            test_accuracy: target.report.test_accuracy,
            train_accuracy: target.report.not_covered_by_epsilon.train_accuracy,
            epsilon,
            delta: cfg.delta,
            attacks,
            epsilon_lower_bound: canary_audit.as_ref().map(|c| c.one_run.epsilon),
            canary_audit,
            inversion,
            shadow_models: if shadows.trained {
                audit.shadow_models
            } else {
                0
            },
            shadow_seconds: shadows.seconds,
            audit_seconds: start.elapsed().as_secs_f64(),
            release: audit.release,
            query_budget: audit.query_budget,
            queries,
            refused_attacks,
            warnings,
            target: target.report,
            not_covered_by_epsilon: not_covered,
        },
        model: target.model,
    })
}

/// Refuses, before anything is trained, an audit this run and data cannot
/// support: input canaries with early stopping or beyond their share of
/// the training set, splits of different widths, and Dirac canaries
/// without DP or beyond one per record.
fn check_run(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    audit: &AuditConfig,
) -> Result<(), TrainError> {
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
    // User-level figures need users on one side of the split only.
    if let (Some(a), Some(b)) = (train.users(), test.users()) {
        let members: std::collections::HashSet<u64> = a.iter().copied().collect();
        // No id in the message: an id is a private record's field.
        if b.iter().any(|u| members.contains(u)) {
            return Err(bad(
                "data",
                "a user has records in both the training and the test split: split the data by user (Dataset::split_by_user)",
            ));
        }
    }
    if (train.users().is_some()) != (test.users().is_some()) {
        return Err(bad(
            "data",
            "one split has user ids and the other has none: give every record its user (or none)",
        ));
    }
    // Input canaries join the training set: past a quarter of it they
    // would be what the model learns (10⁵ canaries beside 896 digits
    // trained to 0.33% accuracy without a word). A canary user counts its
    // records.
    let k = audit.canary_records(cfg.privacy_unit);
    // At user level canaries are users among users: the number of records
    // is a statistic of the private data and must not decide a refusal.
    if let (PrivacyUnit::User { .. }, Some(users)) = (cfg.privacy_unit, train.num_users())
        && audit.canary_kind != CanaryKind::Dirac
        && audit.canaries > users / MAX_CANARY_SHARE
    {
        return Err(bad(
            "canaries",
            format!(
                "{} canary users for {users} training users: at most one per {MAX_CANARY_SHARE} users ({}), or the canaries are what the model learns",
                audit.canaries,
                users / MAX_CANARY_SHARE
            ),
        ));
    }
    if cfg.privacy_unit == PrivacyUnit::Record
        && audit.canary_kind != CanaryKind::Dirac
        && audit.canaries * k > train.len() / MAX_CANARY_SHARE
    {
        return Err(bad(
            "canaries",
            format!(
                "{} input canaries{} for {} training records: at most one per {MAX_CANARY_SHARE} records ({}), or the canaries are what the model learns",
                audit.canaries,
                if k > 1 {
                    format!(" of {k} records each ({} records)", audit.canaries * k)
                } else {
                    String::new()
                },
                train.len(),
                train.len() / MAX_CANARY_SHARE / k
            ),
        ));
    }
    if audit.canaries > 0
        && audit.canary_kind == CanaryKind::Dirac
        && (cfg.privacy_unit != PrivacyUnit::Record || k > 1)
    {
        return Err(bad(
            "canaries",
            "white-box gradient canaries are record slots; use input canaries (canary users) at user level",
        ));
    }
    if audit.canaries > 0 && audit.canary_kind == CanaryKind::Dirac {
        if cfg.privacy == Privacy::NonPrivate {
            return Err(bad(
                "canaries",
                "Dirac canaries audit the DP-SGD mechanism: a non-private run has none (use mislabeled or ood canaries)",
            ));
        }
        // Their slots join the run's N: past one per record the audited
        // run would be another run.
        if audit.canaries > train.len() {
            return Err(bad(
                "canaries",
                format!(
                    "Dirac canaries need at most one per training record ({}): their slots join the run's N",
                    train.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::results::roc_summary;
    use super::shadows::shadow_design;
    use super::target::{TargetQueries, softmax};
    use super::*;
    use dpsgd_audit::hardening::ProbabilityOracle;
    use dpsgd_audit::lower_bound::one_run_audit;
    use dpsgd_audit::metrics::Roc;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

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
            source: super::target::TargetSource::Model(&model),
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
            white_box: None,
            exceeds_claim: exceeds_claim(claimed, one_run.epsilon),
            one_run,
            clopper_pearson_epsilon: 0.0,
            estimators: Default::default(),
            claimed_epsilon: claimed,
            records_per_canary: 1,
            unit: "record",
            claimed_group_epsilon: None,
            exceeds_record_level_claim: None,
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
    fn should_put_every_user_whole_in_half_of_the_shadows() {
        // 60 users of 1–5 records, interleaved.
        let ids: Vec<u64> = (0..180u64).map(|i| (i * 7) % 60 + 1000 * (i % 3)).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for k in [2, 5] {
            let design = shadows::user_design(&ids, k, &mut rng);
            for (i, a) in ids.iter().enumerate() {
                for (j, b) in ids.iter().enumerate() {
                    if a == b {
                        assert!(design.iter().all(|s| s[i] == s[j]), "a user split");
                    }
                }
                let ins = design.iter().filter(|s| s[i]).count();
                assert!(ins == k / 2 || ins == k.div_ceil(2), "k={k}: {ins} IN");
            }
        }
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
