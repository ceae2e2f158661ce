//! The standard training loop: DP-SGD (or plain SGD) steps over Poisson
//! batches, with augmentation, data-parallel workers, EMA, early stopping
//! and checkpoints.

use super::canaries::CanaryRun;
use super::checkpoint::{check_run_state, read_run_state, save_checkpoint, take_checkpoint_dir};
use super::finish::{Finished, add_engine_warnings, conclude, finish};
use super::released::{ReleaseLedger, check_budget_after_redone, redone_steps};
use super::setup::{
    Extra, check_plan, dp_config, engine_error, inner_optimizer, start_engine, user_index,
    with_run_seed,
};
use super::step::{dp_divergence, last_step_loss};
use crate::config::{CHECKPOINT_FILE, Progress, TrainConfig};
use crate::defences::{relax_loss, training_losses};
use crate::error::TrainError;
use crate::eval::{accuracy, batch};
use crate::models::Classifier;
use crate::report::{EpochRecord, TrainReport};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dpsgd_burn::canary::WithCanaries;
use dpsgd_burn::users::choose_records;
use dpsgd_burn::{Augmented, DatasetFingerprint, PoissonSampler, UserBatch, UserIndex};
use dpsgd_data::Dataset;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::Path;
use std::time::Instant;

/// A batch of the standard loop: the rows and their views, or (user-level
/// DP) each user's K rows with their weights.
type Batch = Augmented<(Tensor<4>, Tensor<1, Int>, Option<Tensor<1>>)>;

/// Trains `model` with the standard loop: the run's report and released
/// model (the last good one if training diverged, carried by the error).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<M: Classifier + 'static>(
    cfg: &TrainConfig,
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
        mut ema,
        validation,
    } = extra;
    let patience = cfg
        .defences
        .early_stopping
        .map_or(usize::MAX, |e| e.patience);
    // Early stopping: the best epoch so far, its validation accuracy and
    // model, and the epochs since.
    let mut best: Option<(usize, f64, M)> = None;
    let mut since_best = 0usize;
    let mut stopped_early = false;
    // Gradient canaries' slots are records of the run (N counts them).
    let slots = canaries.as_ref().map_or(0, |c| c.slots());
    // User-level DP: the sampler samples users.
    let users = user_index(cfg, train)?;
    let units = users.as_ref().map_or(train.len(), UserIndex::num_users);
    let sampler = PoissonSampler::new(units + slots, cfg.batch_size)?;
    let steps = cfg.epochs as u64 * sampler.steps_per_epoch();
    if steps == 0 {
        return Err(TrainError::config("epochs", "must be at least 1"));
    }
    let mut rng = match cfg.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s ^ 0x5eed),
        None => ChaCha20Rng::from_os_rng(),
    };
    let dp_config = dp_config(cfg, &model, train, cfg.epochs)?.map(|dp| {
        if slots == 0 {
            dp
        } else {
            dp.with_dataset(DatasetFingerprint {
                size: train.len() + slots,
                hash: train.content_hash(),
            })
        }
    });
    let mut resumed = None;
    let mut checkpoint_lock = None;
    // The record of the steps released to workers outside the process
    // (with a checkpoint folder under DP).
    let mut ledger: Option<ReleaseLedger> = None;
    let mut privacy = match dp_config {
        None => None,
        Some(dp) if cfg.resume => {
            let dir = cfg.checkpoint_dir.as_deref().unwrap_or(Path::new("."));
            checkpoint_lock = Some(take_checkpoint_dir(dir, true)?);
            let path = dir.join(CHECKPOINT_FILE);
            // The loop's own settings first: a flag changed by mistake is
            // named as a flag, before the engine is compared.
            let mut state = read_run_state(cfg, &path)?;
            debug_assert_eq!(
                dp.dataset,
                Some(DatasetFingerprint {
                    size: units,
                    hash: train.content_hash(),
                })
            );
            // Nothing privacy-relevant is taken from the file: the engine
            // these settings give is rebuilt and the checkpoint must match it.
            let restored = with_run_seed(dp, cfg.seed)
                .resume(&path, inner_optimizer(cfg), sampler, model)
                .map_err(|e| match e {
                    e @ dpsgd_core::Error::Checkpoint { .. } => TrainError::Resume(e),
                    e => engine_error(cfg, e),
                })?;
            model = restored.model;
            let mut engine = restored.engine;
            check_run_state(&mut state, &path, &engine, sampler.steps_per_epoch())?;
            // Steps that workers outside the process saw after the
            // checkpoint, and that this run redoes, are charged now.
            let found = ReleaseLedger::resume(
                dir,
                state.epochs_done as u64 * sampler.steps_per_epoch(),
                state.epochs_done,
                &state.redone,
                state.ledger,
            )?;
            engine
                .charge_discarded_steps(found.charge)
                .map_err(|e| engine_error(cfg, e))?;
            ledger = Some(found.ledger);
            resumed = Some(state);
            Some(engine)
        }
        Some(dp) => {
            if let Some(dir) = &cfg.checkpoint_dir {
                checkpoint_lock = Some(take_checkpoint_dir(dir, false)?);
                ledger = Some(ReleaseLedger::start(dir)?);
            }
            Some(start_engine(cfg, dp, sampler, cfg.seed)?)
        }
    };
    // Held to the end of training: a second run into the folder is refused.
    let _checkpoint_lock = checkpoint_lock;
    if let Some(p) = privacy.as_mut() {
        // The engine's steps include the discarded ones a resume charged.
        let redone = ledger.as_ref().map_or(0, |l| redone_steps(l.redone()));
        check_plan(cfg, p, steps.saturating_add(redone))?;
        if redone > 0 {
            check_budget_after_redone(p, steps.saturating_add(redone), redone)?;
        }
        if let Some(c) = canaries.as_ref() {
            c.prepare(p, None)?;
        }
    }
    let mut plain = inner_optimizer(cfg);
    // One loss per example: the mean over its views (itself, without
    // augmentation).
    // The defences' loss (RelaxLoss's branch per example under DP-SGD: a
    // batch statistic deciding every example's gradient would escape the
    // mechanism).
    let relax = relax_loss(&cfg.defences, privacy.is_some())?;
    // Atomic, so that data-parallel workers can share the loss function.
    let current_epoch = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    // Workers in other processes or hosts; or on the devices of the
    // coordinator's kind (distinct GPUs where burn finds several; CPU
    // threads otherwise).
    let parallel = if !cfg.remote_workers.is_empty() {
        Some(remote_workers(cfg, device)?)
    } else if cfg.devices > 1 {
        let workers = dpsgd_burn::parallel::DataParallel::for_device(device, cfg.devices)?;
        Some(if cfg.all_reduce {
            workers.with_burn_all_reduce()?
        } else {
            workers
        })
    } else {
        None
    };
    // Owned ('static): data-parallel workers run it on threads of their
    // own, which a timed-out worker may outlive the step on.
    let (defences, epoch_now) = (cfg.defences.clone(), std::sync::Arc::clone(&current_epoch));
    let loss_fn = move |m: &M, b: &Batch| {
        let (logits, targets) = (m.logits(b.rows.0.clone()), b.rows.1.clone());
        let epoch = epoch_now.load(std::sync::atomic::Ordering::Relaxed);
        let per_row = training_losses(&defences, relax.as_ref(), logits, targets, epoch);
        let n = per_row.dims()[0] / b.k;
        match &b.rows.2 {
            // A user's loss: Σ weight·loss over their rows (the mean over
            // their chosen records; fillers weigh 0).
            Some(weights) => (per_row * weights.clone())
                .reshape([n, b.k])
                .sum_dim(1)
                .reshape([n]),
            None if b.k == 1 => per_row,
            None => per_row.reshape([n, b.k]).mean_dim(1).reshape([n]),
        }
    };
    // Augmentation views: in a seeded run each step's from a stream of its
    // own (the step's), so that a resumed run draws the views the
    // uninterrupted run drew; otherwise from one generator of the OS's.
    let mut view_rng = match cfg.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(s ^ 0xa06),
        None => ChaCha20Rng::from_os_rng(),
    };
    let current_step = std::cell::Cell::new(0u64);
    let mut make_batch = |indices: &[usize]| -> Batch {
        if let Some(s) = cfg.seed {
            view_rng = ChaCha20Rng::seed_from_u64(s ^ 0xa06);
            view_rng.set_stream(current_step.get());
        }
        match cfg.augment_multiplicity {
            1 => {
                let (x, y) = batch(train, indices, device);
                Augmented {
                    rows: (x, y, None),
                    k: 1,
                }
            }
            k => {
                let views = crate::augment::shifted_views(train, indices, k, &mut view_rng, device);
                let (x, y) = views.rows;
                Augmented {
                    rows: (x, y, None),
                    k: views.k,
                }
            }
        }
    };
    let user_batch = |plan: &UserBatch| -> Batch {
        let (x, y) = batch(train, &plan.rows, device);
        let weights = Tensor::from_data(
            TensorData::new(plan.weights.clone(), [plan.rows.len()]),
            device,
        );
        Augmented {
            rows: (x, y, Some(weights)),
            k: plan.slots,
        }
    };
    let start = Instant::now();
    let steps_per_epoch = sampler.steps_per_epoch();
    let (mut epoch_loss, mut epoch_examples, mut final_loss) = (0.0, 0usize, f64::NAN);
    // The engine's warnings, resumed or not (a resumed engine's are the
    // rebuilt engine's, never the file's).
    let warnings = privacy
        .as_ref()
        .map_or_else(Vec::new, |p| p.warnings().to_vec());
    let (mut history, epochs_done) = match resumed {
        Some(state) => (state.history, state.epochs_done),
        // Grown epoch by epoch: `epochs` is the caller's (1e9 would reserve
        // tens of gigabytes up front).
        None => (Vec::new(), 0),
    };
    // A resumed run's epochs go on from the checkpoint's.
    let wall_offset = history.last().map_or(0.0, |r: &EpochRecord| r.wall_seconds);
    if let Some(last) = history.last() {
        final_loss = last.train_loss;
    }
    let mut eval_seconds = 0.0;
    // The model to report if training diverges: the end of the last
    // completed epoch (averaged, with EMA).
    let mut last_good = model.clone();
    // (step, epoch, what was seen) once training has diverged.
    let mut diverged = None;
    let mut steps_taken = epochs_done as u64 * steps_per_epoch;
    // Workers the run went on without (--on-worker-loss continue).
    let mut lost_workers = Vec::new();
    for step in epochs_done as u64 * steps_per_epoch + 1..=steps {
        let epoch = usize::try_from(step.div_ceil(steps_per_epoch)).unwrap_or(usize::MAX);
        current_epoch.store(epoch, std::sync::atomic::Ordering::Relaxed);
        current_step.set(step);
        let (examples, batch_loss, divergence) = match privacy.as_mut() {
            Some(p) => {
                let (examples, batch) = match &users {
                    Some(index) => {
                        let plan = p.sample_users(index).map_err(|e| engine_error(cfg, e))?;
                        (plan.len(), WithCanaries::plain(user_batch(&plan)))
                    }
                    None => {
                        let indices = p.sample_batch();
                        let batch = match canaries.as_deref() {
                            Some(c) => c.batch(&indices, &mut make_batch)?,
                            None => WithCanaries::plain(make_batch(&indices)),
                        };
                        (indices.len(), batch)
                    }
                };
                // The parameters are about to leave the process: on disk
                // first, so that a resume can charge what was seen.
                if let (Some(l), false) = (ledger.as_mut(), cfg.remote_workers.is_empty()) {
                    l.release(step)?;
                }
                let one = loss_fn.clone();
                let loss_fn = move |m: &M, b: &WithCanaries<Batch>| one(m, &b.batch);
                model = match &parallel {
                    Some(workers) => p.step_data_parallel(cfg.lr, model, &batch, loss_fn, workers),
                    None => p.step(cfg.lr, model, &batch, loss_fn),
                }
                .map_err(|r| r.error)?;
                if let Some(workers) = &parallel {
                    lost_workers.extend(workers.take_lost_workers().into_iter().map(|l| {
                        format!(
                            "worker {} was lost at step {step} ({}); the run went on without it",
                            l.name, l.reason
                        )
                    }));
                }
                if let (Some(c), Some(release)) = (canaries.as_deref_mut(), p.last_release()) {
                    let q = p.sampler().sample_rate();
                    let expected = q * p.sampler().dataset_size() as f64;
                    c.observe(release, q, expected, None)?;
                }
                (examples, last_step_loss(p), dp_divergence(&model))
            }
            None => {
                let indices = sampler.sample(&mut rng);
                if indices.is_empty() {
                    (0, 0.0, None)
                } else {
                    let batch = match (&users, cfg.privacy_unit.max_records_per_user()) {
                        (Some(index), Some(k)) => {
                            user_batch(&choose_records(index, &indices, k, &mut rng))
                        }
                        _ => make_batch(&indices),
                    };
                    let losses = loss_fn(&model, &batch);
                    let loss = f64::from(losses.clone().sum().into_scalar::<f32>());
                    if loss.is_finite() {
                        let grads = GradientsParams::from_grads(losses.mean().backward(), &model);
                        model = plain.step(cfg.lr, model, grads);
                        (indices.len(), loss, None)
                    } else {
                        // Without DP there is nothing to protect: the
                        // batch's own loss decides.
                        (
                            indices.len(),
                            loss,
                            Some(format!("the batch's loss is {loss}")),
                        )
                    }
                }
            }
        };
        if let Some(ema) = ema.as_mut() {
            ema.update(&model);
        }
        if let Some(reason) = divergence {
            diverged = Some((step, epoch, reason));
            break;
        }
        epoch_loss += batch_loss;
        epoch_examples += examples;
        let end_of_epoch = step % steps_per_epoch == 0 || step == steps;
        let mut epoch_record = None;
        if end_of_epoch {
            // ε at most once per epoch, and only when someone uses it.
            let epsilon = match &privacy {
                Some(p) if cfg.progress_epsilon => Some(p.epsilon()?),
                _ => None,
            };
            let released = match &ema {
                Some(ema) => ema.apply(model.clone()),
                None => model.clone(),
            };
            let eval_start = Instant::now();
            let test_accuracy = accuracy(&released, test, device);
            eval_seconds += eval_start.elapsed().as_secs_f64();
            final_loss = epoch_loss / epoch_examples.max(1) as f64;
            epoch_loss = 0.0;
            epoch_examples = 0;
            let record = EpochRecord {
                epoch,
                train_loss: final_loss,
                test_accuracy,
                epsilon,
                wall_seconds: wall_offset + start.elapsed().as_secs_f64(),
            };
            history.push(record);
            if let (Some(dir), Some(p)) = (&cfg.checkpoint_dir, &privacy) {
                let redone = ledger.as_ref().map_or(&[][..], ReleaseLedger::redone);
                let mark = ledger.as_ref().map(ReleaseLedger::mark);
                save_checkpoint(cfg, dir, p, &model, &history, redone, mark)?;
            }
            if let Some(v) = &validation {
                let eval_start = Instant::now();
                let accuracy = accuracy(&released, v, device);
                eval_seconds += eval_start.elapsed().as_secs_f64();
                if best.as_ref().is_none_or(|b| accuracy > b.1) {
                    best = Some((epoch, accuracy, released.clone()));
                    since_best = 0;
                } else {
                    since_best += 1;
                }
            }
            last_good = released;
            epoch_record = Some(record);
            if since_best >= patience {
                stopped_early = true;
            }
        }
        progress(Progress {
            step,
            total_steps: steps,
            loss: batch_loss / examples.max(1) as f64,
            epsilon: epoch_record.and_then(|r| r.epsilon),
            test_accuracy: epoch_record.map(|r| r.test_accuracy),
            epoch,
            epoch_loss: epoch_record.map(|r| r.train_loss),
        });
        steps_taken = step;
        if stopped_early {
            break;
        }
    }
    let wall_seconds = start.elapsed().as_secs_f64();
    let mut warnings = warnings;
    warnings.extend(lost_workers);
    add_engine_warnings(&mut warnings, privacy.iter());
    let early_stopping = match (&validation, best) {
        (Some(v), Some((best_epoch, validation_accuracy, model))) => {
            last_good = model;
            Some(crate::report::EarlyStopReport::new(
                best_epoch,
                history.last().map_or(0, |r| r.epoch),
                stopped_early,
                validation_accuracy,
                v.len(),
            ))
        }
        _ => None,
    };
    // Under DP the report accounts for the planned steps whether or when
    // the run stopped (early stopping, divergence): the stop is a function
    // of the released models (and of the validation records), so
    // post-processing of the whole planned run, which ε covers.
    let redone = ledger.as_ref().map_or(0, |l| redone_steps(l.redone()));
    let report = finish(
        cfg,
        train,
        test,
        device,
        &last_good,
        privacy.as_ref(),
        &sampler,
        // (And the discarded steps a resume charged.)
        if privacy.is_some() {
            steps.saturating_add(redone)
        } else {
            steps_taken
        },
        Finished {
            history,
            redone_steps: redone,
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
        },
    )?;
    conclude(report, last_good, diverged)
}

/// The data-parallel workers of `cfg.remote_workers`, connected now, with
/// this process's `device` as the coordinator (where the model lives, the
/// sums are reduced and the noise is added).
#[cfg(feature = "distributed")]
fn remote_workers(
    cfg: &TrainConfig,
    device: &burn::tensor::Device,
) -> Result<dpsgd_burn::parallel::DataParallel, TrainError> {
    let token = cfg.worker_token.as_ref().map(|t| t.0.as_str());
    let devices = dpsgd_burn::remote::connect_workers(&cfg.remote_workers, token)?;
    // As many shards as in-process workers use (at least 8): the same
    // shards, so the same sum, whatever the number of workers.
    let shards = devices.len().max(8);
    let mut workers = dpsgd_burn::parallel::DataParallel::new(devices, shards)?
        .with_coordinator(device.clone())?
        .with_worker_names(cfg.remote_workers.clone())?
        .with_on_worker_loss(cfg.on_worker_loss)?;
    if let Some(timeout) = cfg.worker_timeout {
        workers = workers.with_step_timeout(timeout)?;
    }
    Ok(workers)
}

/// Without the `distributed` feature there are no remote workers.
#[cfg(not(feature = "distributed"))]
fn remote_workers(
    _cfg: &TrainConfig,
    _device: &burn::tensor::Device,
) -> Result<dpsgd_burn::parallel::DataParallel, TrainError> {
    Err(TrainError::config(
        "remote_workers",
        "this build has no remote workers: build with the `distributed` feature",
    ))
}
