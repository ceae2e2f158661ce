//! MIST: membership-invariant subspace training (Li, Li & Ribeiro, "MIST:
//! Defending Against Membership Inference Attacks Through
//! Membership-Invariant Subspace Training", USENIX Security 2024,
//! arXiv 2311.00919).
//!
//! # The algorithm
//!
//! Most records have a low loss whether or not they were trained on; an
//! attack only gains on the few whose loss drops when they are members.
//! MIST avoids overfitting exactly those. With M sub-models and a global
//! model θ, each of [`TrainConfig::epochs`] *rounds* does:
//!
//! 1. every sub-model starts from θ;
//! 2. **local training**: sub-model `i` trains on its part `D_i` of the data
//!    for T₁ epochs with the run's loss (cross-entropy, or a loss defence);
//! 3. **cross-difference**: the sub-models after step 2 are frozen as
//!    references; sub-model `i` trains on `D_i` for T₂ epochs with
//!    `λ·|ℓ_i(x) − r(x)|` ([`crate::defences::cross_difference`]), where
//!    `r(x)` is the mean cross-entropy of `x` under the *other* frozen
//!    sub-models, which never trained on `x`: its counterfactual non-member
//!    loss. A member's loss is pulled towards its non-member loss;
//! 4. θ ← the mean of the sub-models' parameters. All sub-models start each
//!    round from θ, so they stay in a low-dimensional subspace around it
//!    where averaging works (the "subspace training" of the name).
//!
//! # Where a detail had to be chosen
//!
//! * **Partition**: each record is assigned to one sub-model, independently
//!   and uniformly, once, from the run's seed (the paper's sub-models see
//!   disjoint subsets; we do not re-partition every round, so that each
//!   record's privacy cost under DP-SGD is that of one sub-model's fixed
//!   data set).
//! * **The reference** is the mean cross-entropy under the other M − 1
//!   sub-models, and the difference is on the loss (the absolute
//!   difference, L1), as "a loss that makes a member's loss match its
//!   non-member loss".
//! * **Batch size and learning rate** are per sub-model: each samples
//!   batches of the run's expected size from its own part.
//! * **Defaults**: M = 4, T₁ = T₂ = 1, λ = 1 ([`MistSettings::default`]). A
//!   round costs (T₁ + T₂) passes over the data plus the references'
//!   forward passes, about 2.5× an ordinary epoch with the defaults.
//!
//! # Under DP-SGD
//!
//! Every sub-model has its own privacy engine over its own part (Poisson
//! sampling, clipping, noise, accountant). A record changes one part only
//! (assignment is independent per record), so one record's privacy loss is
//! the composition of its sub-model's steps, `rounds·(T₁ + T₂)` epochs of
//! it; everything else is post-processing or adaptive composition: the
//! references of step 3 are outputs of other sub-models' DP training on
//! data without the record (or, for the other sub-models' references to
//! this one, post-processing of its DP output), and averaging is
//! post-processing. The report's ε is the largest over the sub-models (the
//! smallest part has the largest sampling rate), each over its planned
//! steps (early stopping or a divergence — noisy parameters that are no
//! longer finite — stops the run as post-processing of the released
//! models). A target ε is calibrated per sub-model over its
//! `rounds·(T₁ + T₂)` epochs. δ must be below 1/N for the whole data set
//! (and so for every part). The parts' sizes and dropped examples are
//! reported under `not_covered_by_epsilon.mist_submodels`.
//!
//! [`TrainConfig::epochs`]: crate::TrainConfig::epochs
//! [`MistSettings::default`]: crate::MistSettings

use super::canaries::CanaryRun;
use super::finish::{Finished, add_engine_warnings, conclude, finish};
use super::setup::{Extra, check_plan, dp_config, inner_optimizer, start_engine};
use super::step::{dp_divergence, last_step_loss};
use crate::config::{Progress, TrainConfig};
use crate::defences::MistSettings;
use crate::defences::cross_difference;
use crate::defences::{relax_loss, training_losses};
use crate::error::TrainError;
use crate::eval::{accuracy, batch};
use crate::models::Classifier;
use crate::report::{EarlyStopReport, EpochRecord, MistPart, MistSubModel, TrainReport};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use dpsgd_burn::canary::WithCanaries;
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::{ExampleBatch, PoissonSampler, PrivacyEngine};
use dpsgd_data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::time::Instant;

/// A batch of the local phase: inputs and labels.
type Plain = (Tensor<4>, Tensor<1, Int>);
/// A batch of the cross-difference phase: inputs, labels and each
/// example's reference (non-member) loss.
type WithReference = (Tensor<4>, Tensor<1, Int>, Tensor<1>);

/// Assigns each of `n` records to one of `m` parts, independently and
/// uniformly: the record indices of each part, in order.
pub(crate) fn partition(n: usize, m: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<usize>> {
    let mut parts = vec![Vec::with_capacity(n / m.max(1) + 1); m];
    for i in 0..n {
        parts[rng.random_range(0..m)].push(i);
    }
    parts
}

/// One sub-model's training state across rounds (its parameters are reset
/// to the global model's every round, its optimizer state and generators
/// are not).
struct SubTrainer {
    data: Dataset,
    /// Per record of the part: the gradient canary whose slot it is.
    slot_of: Vec<Option<usize>>,
    /// The gradient canaries of this part.
    own: Vec<usize>,
    sampler: PoissonSampler,
    engine: Option<PrivacyEngine>,
    optimizer: ModuleOptimizer,
    rng: ChaCha20Rng,
}

impl SubTrainer {
    /// `batch` (of the part's records `indices`) with its gradient
    /// canaries' slots marked, if the run has canaries.
    fn with_canaries<B: ExampleBatch>(
        &self,
        canaries: Option<&CanaryRun>,
        indices: &[usize],
        batch: B,
    ) -> Result<WithCanaries<B>, TrainError> {
        match canaries {
            Some(c) => c.rows(batch, indices.iter().map(|&i| self.slot_of[i]).collect()),
            None => Ok(WithCanaries::plain(batch)),
        }
    }

    /// Adds this part's engine's last release to its canaries' scores.
    fn observe(&self, canaries: Option<&mut CanaryRun>) -> Result<(), TrainError> {
        if let (Some(c), Some(p)) = (canaries, &self.engine)
            && let Some(release) = p.last_release()
        {
            let q = p.sampler().sample_rate();
            let expected = q * p.sampler().dataset_size() as f64;
            c.observe(release, q, expected, Some(&self.own))?;
        }
        Ok(())
    }

    /// Indices (into this part) of the next Poisson batch.
    fn sample(&mut self) -> Vec<usize> {
        match &mut self.engine {
            Some(p) => p.sample_batch(),
            None => self.sampler.sample(&mut self.rng),
        }
    }

    /// One step on `batch` of `n` examples: the model, the batch's loss sum
    /// and why training has diverged, if it has (under DP decided from the
    /// released parameters only, as in [`dp_divergence`]).
    fn step<M: Classifier, B: ExampleBatch>(
        &mut self,
        lr: f64,
        model: M,
        batch: &B,
        n: usize,
        loss_fn: impl Fn(&M, &B) -> Tensor<1>,
    ) -> Result<(M, f64, Option<String>), TrainError> {
        if let Some(p) = &mut self.engine {
            let model = p.step(lr, model, batch, loss_fn).map_err(|r| r.error)?;
            let divergence = dp_divergence(&model);
            return Ok((model, last_step_loss(p), divergence));
        }
        if n == 0 {
            return Ok((model, 0.0, None));
        }
        let losses = loss_fn(&model, batch);
        let loss = f64::from(losses.clone().sum().into_scalar::<f32>());
        if !loss.is_finite() {
            return Ok((model, loss, Some(format!("the batch's loss is {loss}"))));
        }
        let grads = GradientsParams::from_grads(losses.mean().backward(), &model);
        Ok((self.optimizer.step(lr, model, grads), loss, None))
    }
}

/// Mean cross-entropy of `x` under `references` (detached models), as a
/// tensor on `device`.
fn reference_losses<M: Classifier>(
    references: &[&M],
    data: &Dataset,
    indices: &[usize],
    device: &Device,
) -> Tensor<1> {
    let plain = device.clone().without_autodiff();
    let (x, y) = batch(data, indices, &plain);
    let mut sum = vec![0.0f64; indices.len()];
    for m in references {
        let losses = cross_entropy_per_example(m.logits(x.clone()), y.clone());
        for (s, l) in sum.iter_mut().zip(losses.into_data().iter::<f32>()) {
            *s += f64::from(l);
        }
    }
    let k = references.len().max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / k) as f32).collect();
    Tensor::from_data(TensorData::new(mean, [indices.len()]), device)
}

/// What a round's loop keeps between steps.
struct Tally {
    step: u64,
    total_steps: u64,
    loss_sum: f64,
    examples: usize,
}

/// Trains `model` with MIST (see the module documentation).
#[allow(clippy::too_many_arguments, clippy::too_many_lines)]
pub(crate) fn run<M: Classifier + 'static>(
    cfg: &TrainConfig,
    mist: MistSettings,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    mut model: M,
    extra: Extra,
    mut canaries: Option<&mut CanaryRun>,
    mut progress: impl FnMut(Progress),
) -> Result<(TrainReport, M), TrainError> {
    let Extra {
        feature_seconds,
        validation,
        ..
    } = extra;
    if cfg.epochs == 0 {
        return Err(TrainError::config("epochs", "must be at least 1"));
    }
    let m = mist.submodels;
    let mut rng = match cfg.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s ^ 0x3157),
        None => ChaCha20Rng::from_os_rng(),
    };
    let epochs_per_round = mist.local_epochs + mist.cross_epochs;
    // Gradient canaries' slots are records of the run, partitioned like
    // the others.
    let slots = canaries.as_ref().map_or(0, |c| c.slots());
    let parts = partition(train.len() + slots, m, &mut rng);
    let private = !matches!(cfg.privacy, crate::config::Privacy::NonPrivate);
    let large_delta = if private {
        check_delta(cfg, train.len() + slots, &parts)?
    } else {
        None
    };
    let mut trainers = Vec::with_capacity(m);
    for (i, records) in parts.into_iter().enumerate() {
        // A slot's placeholder input is record 0.
        let slot_of: Vec<Option<usize>> = records
            .iter()
            .map(|&r| canaries.as_ref().and_then(|c| c.slot(r)))
            .collect();
        let real: Vec<usize> = records
            .iter()
            .zip(&slot_of)
            .map(|(&r, s)| if s.is_some() { 0 } else { r })
            .collect();
        let own: Vec<usize> = slot_of.iter().flatten().copied().collect();
        let data = train.subset(&real);
        let sampler = PoissonSampler::new(data.len(), cfg.batch_size).map_err(|e| {
            TrainError::config(
                "mist",
                format!(
                    "sub-model {} has {} records, too few for batches of {} ({e}): use fewer sub-models or a smaller batch",
                    i + 1,
                    data.len(),
                    cfg.batch_size
                ),
            )
        })?;
        let seed = cfg.seed.map(|s| s.wrapping_add(0x3157 * (i as u64 + 1)));
        let engine = match dp_config(cfg, &model, &data, cfg.epochs * epochs_per_round)? {
            Some(dp) => {
                let mut engine = start_engine(cfg, dp, sampler, seed)?;
                if let Some(c) = canaries.as_ref() {
                    c.prepare(&mut engine, Some(&own))?;
                }
                let steps = (cfg.epochs * epochs_per_round) as u64 * sampler.steps_per_epoch();
                check_plan(cfg, &engine, steps)?;
                Some(engine)
            }
            None => None,
        };
        trainers.push(SubTrainer {
            data,
            slot_of,
            own,
            sampler,
            engine,
            optimizer: inner_optimizer(cfg),
            rng: match seed {
                Some(s) => ChaCha20Rng::seed_from_u64(s ^ 0x5eed),
                None => ChaCha20Rng::from_os_rng(),
            },
        });
    }
    let relax = relax_loss(&cfg.defences, private)?;
    let mut warnings = Vec::new();
    // The engines' own δ warnings name their parts' sizes: one warning
    // for the run replaces them.
    warnings.extend(large_delta);
    add_mist_engine_warnings(&mut warnings, &trainers);
    let epochs_each = cfg.epochs * epochs_per_round;
    warnings.push(if private {
        format!(
            "MIST: each record trains one of {m} sub-models; ε is the largest over the sub-models' accountants, each over {epochs_each} epochs of its part"
        )
    } else {
        format!(
            "MIST: each record trains one of {m} sub-models; q and steps are one sub-model's, over {epochs_each} epochs of its part"
        )
    });
    let patience = cfg
        .defences
        .early_stopping
        .map_or(usize::MAX, |e| e.patience);
    let mut best: Option<(usize, f64, M)> = None;
    let mut since_best = 0usize;
    let mut stopped_early = false;
    let mut tally = Tally {
        step: 0,
        total_steps: (cfg.epochs * epochs_per_round) as u64
            * trainers
                .iter()
                .map(|t| t.sampler.steps_per_epoch())
                .sum::<u64>(),
        loss_sum: 0.0,
        examples: 0,
    };
    let start = Instant::now();
    let mut eval_seconds = 0.0;
    let mut history = Vec::new();
    let mut final_loss = f64::NAN;
    let mut diverged = None;
    let mut last_good = model.clone();
    'rounds: for round in 1..=cfg.epochs {
        let mut subs: Vec<M> = vec![model.clone(); m];
        // Local training, the run's loss.
        for local in 0..mist.local_epochs {
            let epoch = (round - 1) * mist.local_epochs + local + 1;
            let loss_fn = |net: &M, b: &WithCanaries<Plain>| {
                training_losses(
                    &cfg.defences,
                    relax.as_ref(),
                    net.logits(b.batch.0.clone()),
                    b.batch.1.clone(),
                    epoch,
                )
            };
            for (t, sub) in trainers.iter_mut().zip(subs.iter_mut()) {
                for _ in 0..t.sampler.steps_per_epoch() {
                    let indices = t.sample();
                    let b = t.with_canaries(
                        canaries.as_deref(),
                        &indices,
                        batch(&t.data, &indices, device),
                    )?;
                    let (next, loss, divergence) =
                        t.step(cfg.lr, sub.clone(), &b, indices.len(), loss_fn)?;
                    t.observe(canaries.as_deref_mut())?;
                    *sub = next;
                    tally.step += 1;
                    tally.loss_sum += loss;
                    tally.examples += indices.len();
                    if let Some(reason) = divergence {
                        diverged = Some((tally.step, round, reason));
                        break 'rounds;
                    }
                    progress(step_progress(&tally, round, loss, indices.len()));
                }
            }
        }
        // Cross-difference towards the frozen sub-models' non-member loss.
        let frozen: Vec<M> = subs.iter().map(|s| s.valid()).collect();
        let weight = mist.weight;
        let loss_fn = |net: &M, b: &WithCanaries<WithReference>| {
            let b = &b.batch;
            cross_difference(net.logits(b.0.clone()), b.1.clone(), b.2.clone(), weight)
        };
        for _ in 0..mist.cross_epochs {
            for (i, (t, sub)) in trainers.iter_mut().zip(subs.iter_mut()).enumerate() {
                let others: Vec<&M> = frozen
                    .iter()
                    .enumerate()
                    .filter_map(|(j, f)| (j != i).then_some(f))
                    .collect();
                for _ in 0..t.sampler.steps_per_epoch() {
                    let indices = t.sample();
                    // An empty Poisson batch is still a (noise-only) step;
                    // there is nothing to run the references on.
                    let reference = if indices.is_empty() {
                        Tensor::zeros([0], device)
                    } else {
                        reference_losses(&others, &t.data, &indices, device)
                    };
                    let (x, y) = batch(&t.data, &indices, device);
                    let b = t.with_canaries(canaries.as_deref(), &indices, (x, y, reference))?;
                    let (next, loss, divergence) =
                        t.step(cfg.lr, sub.clone(), &b, indices.len(), loss_fn)?;
                    t.observe(canaries.as_deref_mut())?;
                    *sub = next;
                    tally.step += 1;
                    if let Some(reason) = divergence {
                        diverged = Some((tally.step, round, reason));
                        break 'rounds;
                    }
                    progress(step_progress(&tally, round, loss, indices.len()));
                }
            }
        }
        model = crate::ema::mean_of(&subs).unwrap_or(model);
        // The round's record: the local phase's mean loss (the
        // cross-difference is not a fit measure).
        let eval_start = Instant::now();
        let test_accuracy = accuracy(&model, test, device);
        eval_seconds += eval_start.elapsed().as_secs_f64();
        final_loss = tally.loss_sum / tally.examples.max(1) as f64;
        (tally.loss_sum, tally.examples) = (0.0, 0);
        let epsilon = if cfg.progress_epsilon {
            worst_engine(&trainers, None)?.map(|(_, e)| e)
        } else {
            None
        };
        let record = EpochRecord {
            epoch: round,
            train_loss: final_loss,
            test_accuracy,
            epsilon,
            wall_seconds: start.elapsed().as_secs_f64(),
        };
        history.push(record);
        if let Some(v) = &validation {
            let eval_start = Instant::now();
            let accuracy = accuracy(&model, v, device);
            eval_seconds += eval_start.elapsed().as_secs_f64();
            if best.as_ref().is_none_or(|b| accuracy > b.1) {
                best = Some((round, accuracy, model.clone()));
                since_best = 0;
            } else {
                since_best += 1;
            }
        }
        last_good = model.clone();
        progress(Progress {
            step: tally.step,
            total_steps: tally.total_steps,
            loss: final_loss,
            epsilon,
            test_accuracy: Some(test_accuracy),
            epoch: round,
            epoch_loss: Some(final_loss),
        });
        if since_best >= patience {
            stopped_early = true;
            break;
        }
    }
    let wall_seconds = start.elapsed().as_secs_f64();
    let early_stopping = match (&validation, best) {
        (Some(v), Some((best_epoch, validation_accuracy, best_model))) => {
            last_good = best_model;
            Some(EarlyStopReport::new(
                best_epoch,
                history.last().map_or(0, |r| r.epoch),
                stopped_early,
                validation_accuracy,
                v.len(),
            ))
        }
        _ => None,
    };
    add_mist_engine_warnings(&mut warnings, &trainers);
    // Each sub-model's steps: under DP its planned ones (the stop, early
    // or by divergence, is post-processing of the released models: ε is
    // over the whole plan, whether or when the run stopped); without DP
    // those of the rounds completed.
    let rounds_accounted = if private { cfg.epochs } else { history.len() };
    let steps_of =
        |t: &SubTrainer| (rounds_accounted * epochs_per_round) as u64 * t.sampler.steps_per_epoch();
    // The report's privacy is the sub-model with the largest ε.
    let worst = worst_engine(&trainers, Some(&steps_of))?;
    let reported = worst.map_or(0, |(i, _)| i);
    let steps = steps_of(&trainers[reported]);
    let report = finish(
        cfg,
        train,
        test,
        device,
        &last_good,
        trainers[reported].engine.as_ref(),
        &trainers[reported].sampler,
        steps,
        Finished {
            history,
            final_loss,
            warnings,
            wall_seconds,
            eval_seconds,
            feature_seconds,
            early_stopping,
            status: if diverged.is_some() {
                "diverged"
            } else {
                "completed"
            },
            // MIST refuses checkpoints and remote workers.
            redone_steps: 0,
        },
    )?;
    let mut report = report;
    report.mist = Some(
        trainers
            .iter()
            .map(|t| {
                let steps = steps_of(t);
                Ok(MistSubModel {
                    sample_rate: t.sampler.sample_rate(),
                    steps,
                    epsilon: t
                        .engine
                        .as_ref()
                        .map(|p| p.epsilon_over(steps))
                        .transpose()?,
                })
            })
            .collect::<Result<_, TrainError>>()?,
    );
    // The dropped examples are counts of the private data, outside the
    // guarantee; the parts' sizes depend only on N and the per-record draw
    // (each sub-model's q shows them too) but are kept beside the counts.
    let parts: Vec<MistPart> = trainers
        .iter()
        .map(|t| MistPart {
            records: t.data.len(),
            dropped_examples: t.engine.as_ref().map_or(0, PrivacyEngine::dropped_examples),
        })
        .collect();
    report.not_covered_by_epsilon.dropped_examples = parts.iter().map(|p| p.dropped_examples).sum();
    report.not_covered_by_epsilon.mist_submodels = Some(parts);
    conclude(report, last_good, diverged)
}

/// The progress record of one sub-model step.
fn step_progress(tally: &Tally, round: usize, loss: f64, n: usize) -> Progress {
    Progress {
        step: tally.step,
        total_steps: tally.total_steps,
        loss: loss / n.max(1) as f64,
        epsilon: None,
        test_accuracy: None,
        epoch: round,
        epoch_loss: None,
    }
}

/// Refuses, unless allowed, a δ ≥ 1/N for the whole data set of `n`
/// records or ≥ 1/(records of the smallest part) (a record's guarantee is
/// its own sub-model's, a mechanism on that part alone; each engine checks
/// only its own part, which let a δ ≥ 1/N through); when allowed, the
/// warning to show instead, naming no part's size (the engines' warnings
/// would).
fn check_delta(
    cfg: &TrainConfig,
    n: usize,
    parts: &[Vec<usize>],
) -> Result<Option<String>, TrainError> {
    let delta = cfg.delta;
    let smallest = parts.iter().map(Vec::len).min().unwrap_or(0).max(1);
    // The engines' own test (each is also refused by its engine).
    let large = |records: usize| delta >= 1.0 / records.max(1) as f64;
    if !large(smallest) && !large(n) {
        return Ok(None);
    }
    let m = parts.len();
    let what = if large(smallest) {
        format!(
            "δ = {delta} ≥ 1/N = {:.3e}, and ≥ 1/(records of the smallest of the {m} MIST parts): each record's guarantee is its sub-model's, trained on its part alone, and a mechanism that publishes one whole record of that part at random meets this δ",
            1.0 / n.max(1) as f64
        )
    } else {
        format!(
            "δ = {delta} ≥ 1/N = {:.3e} (N records in all, in {m} MIST parts): a mechanism that publishes one whole record at random meets this δ",
            1.0 / n.max(1) as f64
        )
    };
    if cfg.allow_large_delta {
        Ok(Some(what))
    } else {
        Err(TrainError::config(
            "delta",
            format!(
                "{what}; use δ well below 1/N (each part has about N/{m} records), or allow it explicitly"
            ),
        ))
    }
}

/// Adds the sub-models' engines' warnings to `warnings`, each once, but
/// for their δ ≥ 1/N warnings (which name their parts' sizes;
/// [`check_delta`] gives the run's own).
fn add_mist_engine_warnings(warnings: &mut Vec<String>, trainers: &[SubTrainer]) {
    let mut engine_warnings = Vec::new();
    add_engine_warnings(
        &mut engine_warnings,
        trainers.iter().filter_map(|t| t.engine.as_ref()),
    );
    for w in engine_warnings {
        if !w.contains("≥ 1/N =") && !warnings.contains(&w) {
            warnings.push(w);
        }
    }
}

/// The index of the sub-model whose accountant reports the largest ε, and
/// that ε (`None` without DP): spent so far, or over `steps_of` each
/// sub-model's steps when given (the plan).
fn worst_engine(
    trainers: &[SubTrainer],
    steps_of: Option<&dyn Fn(&SubTrainer) -> u64>,
) -> Result<Option<(usize, f64)>, TrainError> {
    let mut worst: Option<(usize, f64)> = None;
    for (i, t) in trainers.iter().enumerate() {
        if let Some(p) = &t.engine {
            let e = match steps_of {
                Some(steps) => p.epsilon_over(steps(t))?,
                None => p.epsilon()?,
            };
            if worst.is_none_or(|(_, w)| e > w) {
                worst = Some((i, e));
            }
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_assigns_every_record_once_and_roughly_evenly() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let parts = partition(10_000, 4, &mut rng);
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
        // Binomial(10 000, ¼): sd ≈ 43; 5 sd either side.
        for p in &parts {
            assert!((p.len() as i64 - 2500).abs() < 220, "{}", p.len());
        }
    }
}
