//! Shadow models and the attacks built on them: the balanced IN/OUT
//! design, the shadows trained in parallel through the target's recipe,
//! LiRA (online and offline) and the shadow-model attack.

use super::settings::{Attack, AuditConfig, audit_error, bad};
use super::target::{Findings, Gate, Population, softmax};
use crate::config::{Features, TrainConfig};
use crate::error::TrainError;
use crate::features::{scatter_features, scattering_for};
use crate::fit::train_model;
use dpsgd_audit::hardening::{RELEASED_FLOOR, Release};
use dpsgd_audit::lira::{LiraConfig, ShadowScores, lira_scores};
use dpsgd_audit::rmia::{
    OFFLINE_A_GRID, ReferenceSignals, RmiaConfig, rmia_scores, tune_offline_a,
};
use dpsgd_audit::scores::ScoreKind;
use dpsgd_audit::shadow::{ShadowAttack, ShadowAttackConfig, ShadowExample};
use dpsgd_data::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Salt of the shadows' random stream.
const SHADOW_SALT: u64 = 0x5ad0_3e15;

/// One trained shadow model: which population records it trained on, and
/// its logits on the whole population.
pub(crate) struct Shadow {
    inside: Vec<bool>,
    logits: Vec<f64>,
}

/// The balanced IN/OUT design: record `i` is IN the shadows
/// `design[k][i]`, exactly `⌊K/2⌋` or `⌈K/2⌉` of them.
pub(crate) fn shadow_design(n: usize, k: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<bool>> {
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

/// The balanced IN/OUT design over **users** (data with user ids): each
/// user, with all their records, is IN `⌊K/2⌋` or `⌈K/2⌉` shadows, as a
/// user-level target's members are: its shadows' per-user scores compare
/// like with like. Users in ascending id order.
pub(crate) fn user_design(ids: &[u64], k: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<bool>> {
    let mut users: Vec<u64> = ids.to_vec();
    users.sort_unstable();
    users.dedup();
    let per_user = shadow_design(users.len(), k, rng);
    per_user
        .iter()
        .map(|inside| {
            ids.iter()
                .map(|id| inside[users.binary_search(id).unwrap_or(0)])
                .collect()
        })
        .collect()
}

/// Trains the shadow models on `audit.threads` workers, each shadow on one
/// core (so the shadows, and the attacks built on them, do not depend on the
/// number of workers).
pub(crate) fn train_shadows(
    cfg: &TrainConfig,
    population: &Dataset,
    audit: &AuditConfig,
    device: &burn::tensor::Device,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Shadow>, TrainError> {
    let k = audit.shadow_models;
    let mut rng = ChaCha20Rng::seed_from_u64(audit.seed ^ SHADOW_SALT);
    let design = match population.users() {
        Some(ids) => user_design(ids, k, &mut rng),
        None => shadow_design(population.len(), k, &mut rng),
    };
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
    // At user level the batch counts users.
    shadow_cfg.batch_size = shadow_cfg.batch_size.min(crate::config::privacy_units(
        cfg.privacy_unit,
        &shadow_train,
    ));
    let (_, model) = train_model(&shadow_cfg, &shadow_train, &shadow_test, device, |_| {})?;
    model.logits(population)
}

/// Largest number of shadow outputs the attack classifiers train on (a
/// random sample beyond it).
const SHADOW_ATTACK_SAMPLES: usize = 50_000;

/// The shadow-model attack: per-class attack classifiers fit on the
/// shadows' outputs with known membership, applied to the target's
/// probability vectors.
pub(crate) fn shadow_attack_scores(
    shadows: &[Shadow],
    target_probabilities: &[Vec<f64>],
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
        .map(|i| attack.score(&target_probabilities[i], labels[i]))
        .collect::<Result<_, _>>()
        .map_err(audit_error)
}

/// Offline RMIA's `a` in the paper's configurations (ML Privacy Meter's
/// `attack_configs/cifar10/rmia_offline_*.yaml`), used where too few
/// shadows leave it nothing to tune on.
const PAPER_OFFLINE_A: f64 = 0.3;

/// RMIA (Zarifzadeh, Liu, Ng & Shokri 2024) online and offline on the
/// shadows as reference models, each record's signal its true class's
/// probability as the attacker sees it (the hardened release's, if any,
/// floored at [`RELEASED_FLOOR`]: a release can give it 0).
/// The population samples `z` are the target's non-members (the held-out
/// split: data of the distribution the target did not train on); a
/// non-member is compared with itself too, which never counts (its ratio
/// with itself is 1 ≤ γ). Offline RMIA's `a` is chosen on the shadows
/// alone: shadow 0 attacked with the others' signals
/// ([`dpsgd_audit::rmia::tune_offline_a`]), never on the target's members
/// ([`PAPER_OFFLINE_A`] where the others hold no OUT signal of a record).
fn rmia_attack_scores(
    population: &Population<'_>,
    shadows: &[Shadow],
) -> Result<Vec<(&'static str, Vec<f64>)>, TrainError> {
    let n = population.data.len();
    // A hardened release can give a record's class probability 0 (label
    // only, top-k, rounding): RMIA divides by the signals' mean, so every
    // released signal is floored where the released scores floor their
    // logarithms. Exact probabilities (a full release of the audit's own
    // target) are left as they are.
    let floor = if population.reads_released() {
        RELEASED_FLOOR
    } else {
        0.0
    };
    let signal = |logits: &[f64], i: usize| {
        population
            .score(
                ScoreKind::Confidence,
                &population.row(logits, i),
                population.labels[i],
            )
            .map(|p| p.max(floor))
            .map_err(audit_error)
    };
    let target: Vec<f64> = population
        .target_scores(ScoreKind::Confidence)?
        .into_iter()
        .map(|p| p.max(floor))
        .collect();
    // signals[s][i]: shadow s's signal of record i.
    let signals: Vec<Vec<f64>> = shadows
        .iter()
        .map(|s| (0..n).map(|i| signal(&s.logits, i)).collect())
        .collect::<Result<_, _>>()?;
    let references = |from: usize, offline: bool| -> Vec<ReferenceSignals> {
        (0..n)
            .map(|i| {
                let mut r = ReferenceSignals::default();
                for (s, shadow) in shadows.iter().enumerate().skip(from) {
                    if shadow.inside[i] {
                        if !offline {
                            r.inside.push(signals[s][i]);
                        }
                    } else {
                        r.outside.push(signals[s][i]);
                    }
                }
                r
            })
            .collect()
    };
    let z: Vec<usize> = (0..n).filter(|&i| !population.is_member[i]).collect();
    let at = |v: &[f64]| z.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let at_refs = |v: &[ReferenceSignals]| z.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
    let online_refs = references(0, false);
    let online = rmia_scores(
        &target,
        &online_refs,
        &at(&target),
        &at_refs(&online_refs),
        RmiaConfig::online(),
    )
    .map_err(audit_error)?;
    let offline_config = RmiaConfig::offline(0.0);
    let others = references(1, true);
    // With few shadows some record has no OUT signal among the others
    // (with 2, every record IN the second): then the paper's own choice.
    let a = match tune_offline_a(
        &signals[0],
        &shadows[0].inside,
        &others,
        &at(&signals[0]),
        &at_refs(&others),
        offline_config.gamma,
        &OFFLINE_A_GRID,
    ) {
        Ok((a, _)) => a,
        Err(dpsgd_audit::Error::NoReferenceSignal { .. }) => PAPER_OFFLINE_A,
        Err(e) => return Err(audit_error(e)),
    };
    let offline_refs = references(0, true);
    let offline = rmia_scores(
        &target,
        &offline_refs,
        &at(&target),
        &at_refs(&offline_refs),
        RmiaConfig::offline(a),
    )
    .map_err(audit_error)?;
    Ok(vec![
        (Attack::RMIA_ONLINE, online),
        (Attack::RMIA_OFFLINE, offline),
    ])
}

/// What the shadow stage did: whether shadows were trained, and in how
/// long.
pub(crate) struct ShadowStage {
    /// Whether the shadows were trained (an attack needing them ran).
    pub(crate) trained: bool,
    /// Seconds spent training them.
    pub(crate) seconds: f64,
}

/// The attacks built on shadow models, if asked for and admitted by the
/// gate: trains the shadows through `cfg`'s recipe once, then runs LiRA
/// (online and offline) and the shadow-model attack.
pub(crate) fn shadow_attacks(
    cfg: &TrainConfig,
    population: &Population<'_>,
    gate: &mut Gate<'_>,
    findings: &mut Findings,
    device: &burn::tensor::Device,
    log: &(dyn Fn(&str) + Sync),
) -> Result<ShadowStage, TrainError> {
    let audit = population.audit;
    let release = audit.release;
    let mut shadow_seconds = 0.0;
    // The shadow attack reads full vectors: not run against a hardened
    // release (and then not queried).
    let run_shadow_attack = audit.attacks.contains(&Attack::Shadow)
        && release == Release::Full
        && findings.admit(gate, population, Attack::Shadow.name())?;
    let asked = |family: Attack| audit.attacks.iter().any(|a| a.family() == family);
    let run_lira = asked(Attack::Lira) && findings.admit(gate, population, Attack::Lira.name())?;
    let run_rmia = asked(Attack::Rmia) && findings.admit(gate, population, Attack::Rmia.name())?;
    let needs_shadows = run_lira || run_rmia || run_shadow_attack;
    if audit.attacks.contains(&Attack::Shadow) && release != Release::Full {
        findings.warnings.push(
            "shadow attack skipped: its attack models read full probability vectors, not hardened releases".into(),
        );
    }
    if needs_shadows {
        let shadow_start = Instant::now();
        // Per-example features (ScatterNet) are computed once for the
        // population, not once per shadow: the shadows train on them as
        // raw features, which is the same model.
        let (shadow_cfg, features) = match cfg.features {
            Features::Raw => (cfg.clone(), std::borrow::Cow::Borrowed(&population.data)),
            Features::Scatter { groups } => {
                log("shadows: computing ScatterNet features of the population once");
                let scattering = scattering_for(&population.data)?;
                let features = scatter_features(&population.data, &scattering, groups)?;
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
            let phi = population.target_scores(ScoreKind::LogitScaled)?;
            let per_record: Vec<ShadowScores> = (0..population.data.len())
                .map(|i| {
                    let mut s = ShadowScores::default();
                    for shadow in &shadows {
                        let row = population.row(&shadow.logits, i);
                        // The attacker hardens its own shadows' outputs
                        // the same way, to calibrate on what it sees.
                        let v = population
                            .score(ScoreKind::LogitScaled, &row, population.labels[i])
                            .unwrap_or(f64::NAN);
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
            for (name, online) in [(Attack::LIRA_ONLINE, true), (Attack::LIRA_OFFLINE, false)]
                .into_iter()
                .filter(|(name, _)| Attack::reports(&audit.attacks, name))
            {
                let scores = lira_scores(
                    &phi,
                    &per_record,
                    LiraConfig {
                        online,
                        fixed_variance,
                    },
                )
                .map_err(audit_error)?;
                findings
                    .attacks
                    .push(population.evaluate(name, &scores, None)?);
            }
        }
        if run_rmia {
            for (name, scores) in rmia_attack_scores(population, &shadows)?
                .into_iter()
                .filter(|(name, _)| Attack::reports(&audit.attacks, name))
            {
                findings
                    .attacks
                    .push(population.evaluate(name, &scores, None)?);
            }
        }
        if run_shadow_attack {
            let scores = shadow_attack_scores(
                &shadows,
                &population.target_probabilities(),
                &population.labels,
                population.classes,
                audit.seed,
            )?;
            findings
                .attacks
                .push(population.evaluate(Attack::Shadow.name(), &scores, None)?);
        }
    }
    Ok(ShadowStage {
        trained: needs_shadows,
        seconds: shadow_seconds,
    })
}
