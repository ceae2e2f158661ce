//! The DP learning strategy: burn-train's epoch loop with a DP-SGD step.

use crate::error::{Error, Result};
use crate::output::StepOutput;
use crate::training::{Run, placeholder_optimizer};
use burn::data::dataloader::Progress;
use burn::data::dataset::Dataset;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use burn_train::metric::store::EventStoreClient;
use burn_train::{
    EventProcessorTraining, InferenceStep, Interrupter, Learner, LearnerEvent, LearnerModel,
    LearningCheckpointer, SupervisedLearningStrategy, SupervisedTrainingEventProcessor,
    TrainLoader, TrainStep, TrainingComponents, TrainingItem, ValidLoader,
};
use dpsgd_burn::io::{Access, FolderLock, remove_stale_temporaries, write_atomically};
use dpsgd_burn::{ExampleBatch, PrivacyEngine, PrivacyReport};
use dpsgd_core::{GradientMethod, parameter_values};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};

/// A model's forward pass to its step output.
pub(crate) type ForwardFn<M> =
    Arc<dyn Fn(&M, <M as TrainStep>::Input) -> <M as TrainStep>::Output + Send + Sync>;
/// The per-example loss (or the reported loss) of a step output.
pub(crate) type LossFn<O> = Arc<dyn Fn(&O) -> Tensor<1> + Send + Sync>;

/// See [`crate::DpTraining`].
pub(crate) struct DpStrategy<M: LearnerModel, I> {
    pub(crate) run: Run<I, <M as TrainStep>::Input>,
    pub(crate) forward: ForwardFn<M>,
    pub(crate) loss: LossFn<<M as TrainStep>::Output>,
    /// The loss the output reports, checked once against the mean of
    /// `loss` (only when `loss` is derived from the output).
    pub(crate) reported: Option<LossFn<<M as TrainStep>::Output>>,
}

/// Takes the checkpoint folder's lock (another process training or
/// resuming in it is refused), and removes the temporaries a crash left.
fn lock_folder(dir: &Path) -> Result<FolderLock> {
    let io = |e: std::io::Error| {
        Error::Engine(dpsgd_core::Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("cannot lock the checkpoint folder: {e}"),
        })
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = FolderLock::try_lock(dir).map_err(io)?.ok_or_else(|| {
        Error::Engine(dpsgd_core::Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: "another run holds this checkpoint folder".into(),
        })
    })?;
    for epoch in saved_epochs(dir)? {
        remove_stale_temporaries(&engine_checkpoint(dir, epoch)).map_err(io)?;
    }
    Ok(lock)
}

/// The epochs whose engine checkpoints are in `dir`, in increasing order.
fn saved_epochs(dir: &Path) -> Result<Vec<usize>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Engine(dpsgd_core::Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!("cannot list the checkpoint folder: {e}"),
            }));
        }
    };
    let mut epochs: Vec<usize> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            name.strip_prefix("dpsgd-engine-")?
                .strip_suffix(".ckpt")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable();
    Ok(epochs)
}

/// What the strategy keeps of a run in the privacy engine's checkpoint.
#[derive(Serialize, Deserialize)]
struct CallerState {
    /// The burn-train epoch the checkpoint closes.
    epoch: usize,
}

/// Why a step did not happen.
enum StepEnd {
    /// The budget allows no further step: a clean stop.
    Budget(String),
    /// A failure: the run stops with this error.
    Failed(Error),
}

impl From<Error> for StepEnd {
    fn from(error: Error) -> Self {
        match error {
            Error::Engine(dpsgd_core::Error::BudgetExhausted {
                epsilon_spent,
                budget,
                delta,
                ..
            }) => StepEnd::Budget(format!(
                "privacy budget spent: ε = {epsilon_spent:.4} of {budget} at δ = {delta:e}; \
                 one more step would exceed it"
            )),
            other => StepEnd::Failed(other),
        }
    }
}

impl From<dpsgd_core::Error> for StepEnd {
    fn from(error: dpsgd_core::Error) -> Self {
        Error::Engine(error).into()
    }
}

/// The engine checkpoint of `epoch` in `dir`.
pub(crate) fn engine_checkpoint(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("dpsgd-engine-{epoch}.ckpt"))
}

impl<M, I> DpStrategy<M, I>
where
    M: LearnerModel,
    <M as TrainStep>::Input: ExampleBatch + Clone,
    <M as TrainStep>::Output: StepOutput,
    I: Send + Sync + 'static,
{
    fn engine(&self) -> MutexGuard<'_, PrivacyEngine> {
        self.run
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses what would break the accounting, and restores the engine
    /// of a resumed run; gives back the checkpoint folder's lock, to hold
    /// while training.
    fn prepare(
        &self,
        components: &TrainingComponents<M>,
        learner: &Learner<M>,
        starting_epoch: usize,
    ) -> Result<Option<FolderLock>> {
        if components.grad_accumulation.is_some() {
            return Err(Error::Unsupported {
                option: "gradient accumulation (grads_accumulation)",
                why: "the accountant counts one noisy release per step and the expected \
                      batch is the logical batch; take a larger expected batch size, and \
                      DpSgdConfig::with_max_physical_batch_size to bound memory",
            });
        }
        if components.early_stopping.is_some() {
            return Err(Error::Unsupported {
                option: "early stopping",
                why: "when it stops depends on validation metrics of the data, which ε does \
                      not cover (the number of steps is released); train for a fixed number \
                      of epochs",
            });
        }
        let dir = self.run.checkpoint_dir.as_deref();
        if components.checkpointer.is_some() && dir.is_none() {
            return Err(Error::NoCheckpointDir {
                what: "checkpoints are on".into(),
            });
        }
        if self.run.dataset.len() != self.run.sampler.dataset_size() {
            return Err(Error::DatasetSize {
                expected: self.run.sampler.dataset_size(),
                found: self.run.dataset.len(),
            });
        }
        let lock = match dir {
            Some(dir) if components.checkpointer.is_some() || components.checkpoint.is_some() => {
                Some(lock_folder(dir)?)
            }
            _ => None,
        };
        let saved = match dir {
            Some(dir) => saved_epochs(dir)?,
            None => Vec::new(),
        };
        match components.checkpoint {
            Some(epoch) => {
                let Some(dir) = dir else {
                    return Err(Error::NoCheckpointDir {
                        what: format!("resumes from epoch {epoch}"),
                    });
                };
                debug_assert_eq!(starting_epoch, epoch + 1);
                let path = engine_checkpoint(dir, epoch);
                if let Some(later) = saved.iter().find(|&&e| e > epoch) {
                    return Err(Error::Resume {
                        path,
                        reason: format!(
                            "the folder holds the engine of a later epoch ({later}): training \
                             again from epoch {epoch} would release a second continuation of \
                             the run, which its report would not count; delete \
                             dpsgd-engine-{later}.ckpt (and later) to do so deliberately"
                        ),
                    });
                }
                if self.engine().steps() > 0 {
                    return Err(Error::Resume {
                        path,
                        reason: "this DpTraining's engine has already taken steps, which a \
                                 resume would drop from the account: build a fresh DpTraining \
                                 to resume"
                            .into(),
                    });
                }
                self.resume(&path, epoch, learner)?;
            }
            None if components.checkpointer.is_some() && !saved.is_empty() => {
                return Err(Error::Resume {
                    path: engine_checkpoint(dir.unwrap_or(Path::new(".")), saved[0]),
                    reason: "a fresh run would overwrite another run's privacy engine \
                             checkpoints in this folder: resume it \
                             (SupervisedTraining::checkpoint(epoch)) or use a fresh folder"
                        .into(),
                });
            }
            None => {}
        }
        Ok(lock)
    }

    /// Restores the engine saved with burn-train's checkpoint of `epoch`,
    /// refusing one that does not belong with the model burn-train loaded.
    fn resume(&self, path: &Path, epoch: usize, learner: &Learner<M>) -> Result<()> {
        let bad = |reason: String| Error::Resume {
            path: path.to_path_buf(),
            reason,
        };
        let resumed = self.run.config.resume(
            path,
            placeholder_optimizer(),
            self.run.sampler,
            learner.model(),
        )?;
        let state: CallerState = serde_json::from_slice(&resumed.caller_state)
            .map_err(|e| bad(format!("no burn-train epoch recorded ({e})")))?;
        if state.epoch != epoch {
            return Err(bad(format!(
                "it closes epoch {}, not epoch {epoch}",
                state.epoch
            )));
        }
        let expected = epoch as u64 * self.run.sampler.steps_per_epoch();
        if resumed.engine.steps() != expected {
            return Err(bad(format!(
                "its accountant records {} steps, but {epoch} epochs are {expected} steps",
                resumed.engine.steps()
            )));
        }
        if parameter_values(&resumed.model) != parameter_values(&learner.model()) {
            return Err(bad(format!(
                "the model burn-train restored for epoch {epoch} is not the model this \
                 accountant state was saved with"
            )));
        }
        *self.engine() = resumed.engine;
        Ok(())
    }

    /// One DP-SGD step: a Poisson batch, its private release, the
    /// learner's update; the item for burn-train's metrics (none for an
    /// empty batch) and ε after the step.
    fn step(
        &self,
        learner: &mut Learner<M>,
        device: &Device,
        check_loss: &AtomicBool,
    ) -> std::result::Result<(Option<<M as TrainStep>::Output>, f64), StepEnd> {
        let model = learner.model();
        let mut engine = self.engine();
        let indices = engine.sample_batch();
        let (grads, item): (GradientsParams, _) = if indices.is_empty() {
            (engine.private_gradients_of_empty_batch(&model)?, None)
        } else {
            let mut items = Vec::with_capacity(indices.len());
            for &index in &indices {
                items.push(
                    self.run
                        .dataset
                        .get(index)
                        .map_err(|source| Error::Example { source })?,
                );
            }
            let batch = self.run.batcher.batch(items, device);
            if batch.num_examples() != indices.len() {
                return Err(Error::BatcherSize.into());
            }
            if check_loss.load(Ordering::Relaxed) && self.check_loss(&model, &batch)? {
                check_loss.store(false, Ordering::Relaxed);
            }
            let captured = RefCell::new(Vec::new());
            let grads = engine.private_gradients(&model, &batch, |m, b| {
                let output = (self.forward)(m, b.clone());
                let losses = (self.loss)(&output);
                captured.borrow_mut().push((b.num_examples(), output));
                losses
            })?;
            let item = self.metrics_item(&engine, captured.into_inner(), &model, batch);
            (grads, Some(item))
        };
        drop(engine);
        learner.lr_step();
        learner.optimizer_step(grads);
        let epsilon = self.engine().epsilon()?;
        Ok((item, epsilon))
    }

    /// Before the first release: the derived per-example losses must
    /// average to the loss the output reports. Returns whether the check
    /// was conclusive: a batch with a non-finite loss (a record the engine
    /// will drop) proves nothing either way, and the next batch is checked
    /// instead — so that one odd record cannot stop a run its neighbour
    /// would finish.
    fn check_loss(&self, model: &M, batch: &<M as TrainStep>::Input) -> Result<bool> {
        let Some(reported) = &self.reported else {
            return Ok(true);
        };
        let output = self.forward_in_chunks(model, batch);
        let derived: Vec<f64> = (self.loss)(&output)
            .into_data()
            .convert::<f64>()
            .iter::<f64>()
            .collect();
        let reported = scalar(reported(&output).mean());
        if !reported.is_finite() || derived.iter().any(|l| !l.is_finite()) {
            return Ok(false);
        }
        let derived = derived.iter().sum::<f64>() / derived.len().max(1) as f64;
        let tolerance = 1e-4 * reported.abs().max(1.0);
        if (derived - reported).abs() > tolerance {
            return Err(Error::LossMismatch);
        }
        Ok(true)
    }

    /// The step output of `batch`, detached, computed in chunks of at most
    /// the physical batch size (the memory bound the caller set).
    fn forward_in_chunks(
        &self,
        model: &M,
        batch: &<M as TrainStep>::Input,
    ) -> <M as TrainStep>::Output {
        let n = batch.num_examples();
        let chunk = self.run.config.max_physical_batch_size.unwrap_or(n).max(1);
        if chunk >= n {
            return (self.forward)(model, batch.clone()).detach();
        }
        let parts = (0..n)
            .step_by(chunk)
            .map(|start| {
                let part = batch.slice_examples(start, (start + chunk).min(n));
                (self.forward)(model, part).detach()
            })
            .collect();
        StepOutput::concat(parts)
    }

    /// The step's output for burn-train's metrics: the forward passes the
    /// engine made, joined when they were exactly one per physical chunk
    /// (the fast path), otherwise one more forward pass of the batch.
    fn metrics_item(
        &self,
        engine: &PrivacyEngine,
        captured: Vec<(usize, <M as TrainStep>::Output)>,
        model: &M,
        batch: <M as TrainStep>::Input,
    ) -> <M as TrainStep>::Output {
        let one_pass_per_chunk = engine.last_step().is_some_and(|stats| {
            matches!(stats.method, GradientMethod::FastPath { .. })
                && stats.dropped == 0
                && stats.chunks == captured.len()
                && captured.iter().map(|(n, _)| n).sum::<usize>() == stats.batch_size
        });
        if one_pass_per_chunk {
            StepOutput::concat(captured.into_iter().map(|(_, o)| o.detach()).collect())
        } else {
            drop(captured);
            self.forward_in_chunks(model, &batch)
        }
    }

    /// Saves the engine beside burn-train's checkpoint of `epoch`.
    fn save(&self, epoch: usize, learner: &Learner<M>) -> Result<()> {
        let Some(dir) = &self.run.checkpoint_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Engine(dpsgd_core::Error::Checkpoint {
                path: dir.clone(),
                reason: format!("cannot create the folder: {e}"),
            })
        })?;
        let state = serde_json::to_vec(&CallerState { epoch }).expect("a number serialises");
        self.engine().save_checkpoint_with(
            &engine_checkpoint(dir, epoch),
            &learner.model(),
            &state,
        )?;
        Ok(())
    }

    fn validate(
        &self,
        learner: &Learner<M>,
        valid: &ValidLoader<M>,
        epoch: usize,
        processor: &mut SupervisedTrainingEventProcessor<M>,
        interrupter: &Interrupter,
    ) {
        interrupter.fail_on_error(processor.process_valid(LearnerEvent::StartSplit {
            epoch_number: epoch,
            total_items: valid.num_items(),
        }));
        let model = learner.model().valid();
        let mut iterator = valid.iter();
        let mut iteration = 0;
        while let Some(item) = iterator.next() {
            let item = match item {
                Ok(item) => item,
                Err(error) => {
                    interrupter.fail(error);
                    break;
                }
            };
            iteration += 1;
            let item = TrainingItem {
                item: InferenceStep::step(&model, item),
                progress: iterator.progress(),
                iteration: Some(iteration),
                lr: None,
            };
            interrupter.fail_on_error(processor.process_valid(LearnerEvent::ProcessedItem(item)));
            if interrupter.should_stop() {
                break;
            }
        }
        interrupter.fail_on_error(processor.process_valid(LearnerEvent::EndSplit(epoch)));
    }

    #[allow(clippy::too_many_arguments)]
    fn train_epoch(
        &self,
        learner: &mut Learner<M>,
        device: &Device,
        epoch: usize,
        check_loss: &AtomicBool,
        processor: &mut SupervisedTrainingEventProcessor<M>,
        interrupter: &Interrupter,
    ) {
        let steps = self.run.sampler.steps_per_epoch() as usize;
        interrupter.fail_on_error(processor.process_train(LearnerEvent::StartSplit {
            epoch_number: epoch,
            total_items: steps,
        }));
        for step in 1..=steps {
            match self.step(learner, device, check_loss) {
                Ok((item, epsilon)) => {
                    if let Some(item) = item {
                        // Progress counts steps, not examples: the size of
                        // a Poisson batch is a statistic of the data.
                        let item = TrainingItem {
                            item,
                            progress: Progress::new(step, steps, Some("steps".into())),
                            iteration: Some(step),
                            lr: Some(learner.lr_current()),
                        };
                        self.run.log.publish(epsilon);
                        interrupter.fail_on_error(
                            processor.process_train(LearnerEvent::ProcessedItem(item)),
                        );
                    }
                }
                Err(StepEnd::Budget(reason)) => interrupter.stop(Some(&reason)),
                Err(StepEnd::Failed(error)) => interrupter.fail(error.into_training_error()),
            }
            if interrupter.should_stop() {
                break;
            }
        }
        interrupter.fail_on_error(processor.process_train(LearnerEvent::EndSplit(epoch)));
    }

    /// Announces the privacy report of what was trained (unless quiet) and
    /// saves it as `privacy-report.json` in the checkpoint folder, if any.
    /// The report holds public values only (σ, q, steps, ε, δ, N).
    fn finish(&self) -> Result<()> {
        let report = self.engine().report()?;
        if !self.run.quiet {
            eprintln!("dpsgd: {}", summary(&report));
        }
        let Some(dir) = &self.run.checkpoint_dir else {
            return Ok(());
        };
        let path = dir.join(REPORT_FILE);
        let json = serde_json::to_vec_pretty(&report).expect("a report serialises");
        std::fs::create_dir_all(dir)
            .and_then(|()| write_atomically(&path, &json, Access::Default))
            .map_err(|e| {
                Error::Engine(dpsgd_core::Error::Checkpoint {
                    path: path.clone(),
                    reason: format!("cannot write the privacy report: {e}"),
                })
            })
    }

    fn checkpoint(
        &self,
        checkpointer: &mut Option<LearningCheckpointer<M>>,
        learner: &Learner<M>,
        epoch: usize,
        store: &EventStoreClient,
    ) -> Result<()> {
        if let Some(checkpointer) = checkpointer {
            checkpointer.checkpoint(learner, epoch, store);
            self.save(epoch, learner)?;
        }
        Ok(())
    }
}

impl<M, I> SupervisedLearningStrategy<M> for DpStrategy<M, I>
where
    M: LearnerModel,
    <M as TrainStep>::Input: ExampleBatch + Clone,
    <M as TrainStep>::Output: StepOutput,
    I: Send + Sync + 'static,
{
    fn fit(
        &self,
        components: TrainingComponents<M>,
        mut learner: Learner<M>,
        _dataloader_train: TrainLoader<M>,
        dataloader_valid: ValidLoader<M>,
        starting_epoch: usize,
    ) -> (M, SupervisedTrainingEventProcessor<M>) {
        let device = self
            .run
            .device
            .clone()
            .or_else(|| learner.model().devices().into_iter().next())
            .unwrap_or_default();
        let device = if device.is_autodiff() {
            device
        } else {
            device.autodiff()
        };
        learner.fork(&device);
        let interrupter = components.interrupter.clone();
        let _lock = match self.prepare(&components, &learner, starting_epoch) {
            Ok(lock) => lock,
            Err(error) => {
                interrupter.fail(error.into_training_error());
                return (learner.model(), components.event_processor);
            }
        };
        let TrainingComponents {
            num_epochs,
            mut checkpointer,
            mut event_processor,
            event_store,
            ..
        } = components;
        let valid = dataloader_valid.to_device(&device.clone().inner());
        let check_loss = AtomicBool::new(self.reported.is_some());
        for epoch in starting_epoch..=num_epochs {
            self.train_epoch(
                &mut learner,
                &device,
                epoch,
                &check_loss,
                &mut event_processor,
                &interrupter,
            );
            if interrupter.should_stop() {
                if let Some(stop) = interrupter.interruption() {
                    log_stop(stop.reason.as_deref());
                }
                break;
            }
            self.validate(&learner, &valid, epoch, &mut event_processor, &interrupter);
            interrupter.fail_on_error(event_processor.process_train(LearnerEvent::EndEpoch(epoch)));
            if checkpointer.is_some() {
                interrupter.fail_on_error(event_processor.flush());
            }
            if interrupter.should_stop() {
                break;
            }
            if let Err(error) = self.checkpoint(&mut checkpointer, &learner, epoch, &event_store) {
                interrupter.fail(error.into_training_error());
                break;
            }
        }
        if let Err(error) = self.finish() {
            interrupter.fail(error.into_training_error());
        }
        (learner.model(), event_processor)
    }
}

/// The file [`DpStrategy::finish`] writes the report to.
pub(crate) const REPORT_FILE: &str = "privacy-report.json";

/// One line: ε, δ, the mechanism and what ε does not cover.
fn summary(report: &PrivacyReport) -> String {
    let epsilon = report
        .epsilon
        .map_or("∞ (no DP)".to_string(), |e| format!("{e:.3}"));
    format!(
        "ε = {epsilon} at δ = {:e} for any one record ({} steps, q = {:.4}, σ = {}, sampler {}{}); \
         not covered by ε: burn-train's training and validation metrics",
        report.delta,
        report.steps,
        report.sample_rate,
        report
            .noise_multiplier
            .map_or("-".to_string(), |s| format!("{s:.3}")),
        report.sampler,
        if report.secure {
            ""
        } else {
            ", seeded: not secure"
        },
    )
}

fn log_stop(reason: Option<&str>) {
    eprintln!(
        "dpsgd: training stopped: {}",
        reason.unwrap_or("interrupted")
    );
}

/// The value of a one-element tensor.
fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f64>()
}
