//! [`DpTraining`]: what a burn-train program adds to train privately.

use crate::error::{Error, Result};
use crate::loader::PoissonLoader;
use crate::metrics::{EpsilonMetric, PrivacyLog};
use crate::output::{PerExampleLoss, StepOutput};
use crate::strategy::{DpStrategy, LossFn};
use burn::data::dataloader::DataLoader;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::optim::{ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor};
use burn_train::{InferenceStep, LearnerModel, TrainStep, TrainingStrategy};
use dpsgd_burn::{DpSgdConfig, ExampleBatch, PoissonSampler, PrivacyEngine, PrivacyReport};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// DP-SGD for a burn-train `SupervisedTraining`: the privacy engine, the
/// training data it samples from, and the pieces to plug in — the
/// [`loader`](Self::loader), the [`strategy`](Self::strategy) and the
/// [`epsilon_metric`](Self::epsilon_metric).
///
/// The strategy draws each step's batch by Poisson sampling (every example
/// independently with probability q = B/N, from the engine's secret
/// generator), batches it with your batcher, clips every example's
/// gradient, adds the noise once and accounts the step; burn-train's
/// `Learner` applies only that noisy gradient, with your optimizer and
/// learning-rate schedule. Running out of budget stops training cleanly
/// (`LearningResult::interrupted` says why) and [`report`](Self::report)
/// gives the privacy report of what was trained.
///
/// # Example
///
/// ```no_run
/// # use burn::data::dataloader::batcher::Batcher;
/// # use burn::data::dataset::InMemDataset;
/// # use burn::tensor::{Device, Int, Tensor};
/// # use burn_train::{ClassificationOutput, SupervisedTraining, Learner};
/// # use dpsgd_burn::DpSgdConfig;
/// # use dpsgd_burn_train::DpTraining;
/// # #[derive(Clone, Debug)] struct Item;
/// # #[derive(Clone, Debug)] struct Batch { x: Tensor<2>, y: Tensor<1, Int> }
/// # dpsgd_burn::impl_example_batch!(Batch { x, y });
/// # #[derive(Clone)] struct MyBatcher;
/// # impl Batcher<Item, Batch> for MyBatcher { fn batch(&self, _: Vec<Item>, _: &Device) -> Batch { unimplemented!() } }
/// # fn demo(train: InMemDataset<Item>) -> Result<(), Box<dyn std::error::Error>> {
/// let config = DpSgdConfig::new(1.0).with_target_epsilon(3.0, 1e-5, 10);
/// let dp = DpTraining::new(config, 64, train, MyBatcher)?;
/// // SupervisedTraining::new(DIR, dp.loader(), valid_loader)
/// //     .metric_train_numeric(dp.epsilon_metric())
/// //     .with_training_strategy(dp.strategy(|m: &Model, b: Batch| m.forward_classification(b.x, b.y)))
/// //     .launch(learner);
/// println!("{}", serde_json::to_string(&dp.report()?)?);
/// # Ok(()) }
/// ```
pub struct DpTraining<I, B> {
    pub(crate) run: Run<I, B>,
}

/// What a [`DpTraining`] and the strategies it makes share: the settings,
/// the engine (one, behind a lock), the data and where state goes.
pub(crate) struct Run<I, B> {
    pub(crate) config: DpSgdConfig,
    pub(crate) sampler: PoissonSampler,
    pub(crate) engine: Arc<Mutex<PrivacyEngine>>,
    pub(crate) dataset: Arc<dyn Dataset<I>>,
    pub(crate) batcher: Arc<dyn Batcher<I, B>>,
    pub(crate) checkpoint_dir: Option<PathBuf>,
    pub(crate) device: Option<Device>,
    pub(crate) log: Arc<PrivacyLog>,
    pub(crate) quiet: bool,
}

// By hand: the data's item and batch types need not be `Clone`.
impl<I, B> Clone for Run<I, B> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            sampler: self.sampler,
            engine: self.engine.clone(),
            dataset: self.dataset.clone(),
            batcher: self.batcher.clone(),
            checkpoint_dir: self.checkpoint_dir.clone(),
            device: self.device.clone(),
            log: self.log.clone(),
            quiet: self.quiet,
        }
    }
}

/// The privacy engine's inner optimizer is never stepped here (the
/// `Learner`'s optimizer applies the release); a plain SGD fills the slot.
pub(crate) fn placeholder_optimizer() -> ModuleOptimizer {
    SgdConfig::new().init()
}

impl<I, B> DpTraining<I, B>
where
    I: Send + Sync + 'static,
    B: ExampleBatch + Clone + Send + 'static,
{
    /// DP-SGD over `dataset` with batches of `expected_batch_size`
    /// examples on average (q = B/N), made by `batcher`, under `config`
    /// (clipping, σ or a target ε over a number of epochs, δ, accountant,
    /// seed, physical batch size; see [`DpSgdConfig`]).
    ///
    /// # Errors
    ///
    /// [`Error::Engine`] for invalid settings (an empty data set, a batch
    /// larger than it, a target no σ reaches, a δ above 1/N, user-level
    /// privacy, which this integration does not offer yet: use
    /// `PrivacyEngine::sample_users` in a loop of your own).
    pub fn new(
        config: DpSgdConfig,
        expected_batch_size: usize,
        dataset: impl Dataset<I> + 'static,
        batcher: impl Batcher<I, B> + 'static,
    ) -> Result<Self> {
        if !matches!(config.privacy_unit, dpsgd_burn::PrivacyUnit::Record) {
            return Err(Error::Engine(dpsgd_core::Error::invalid(
                "privacy_unit",
                "user",
                "user-level DP is not offered in burn-train yet (sample users with \
                 PrivacyEngine::sample_users in a loop of your own)",
            )));
        }
        let sampler = PoissonSampler::new(dataset.len(), expected_batch_size)?;
        let engine = config.init(placeholder_optimizer(), sampler)?;
        Ok(Self {
            run: Run {
                config,
                sampler,
                engine: Arc::new(Mutex::new(engine)),
                dataset: Arc::new(dataset),
                batcher: Arc::new(batcher),
                checkpoint_dir: None,
                device: None,
                log: Arc::new(PrivacyLog::default()),
                quiet: false,
            },
        })
    }

    /// Where the privacy engine's state (accountant history, noise and
    /// sampling generators) is saved beside burn-train's checkpoints —
    /// one file per checkpointed epoch, `dpsgd-engine-{epoch}.ckpt`, a
    /// secret (mode 0600) — and read back when burn-train resumes
    /// (`SupervisedTraining::checkpoint(epoch)`); and where the privacy
    /// report is saved when training ends (`privacy-report.json`, public).
    /// Required when burn-train's checkpointers are on; the
    /// `SupervisedTraining`'s own folder is a good choice.
    pub fn with_checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run.checkpoint_dir = Some(dir.into());
        self
    }

    /// Do not print the privacy report on standard error when training
    /// ends (it is printed by default, and saved as `privacy-report.json`
    /// in the checkpoint folder when there is one).
    pub fn with_quiet(mut self, quiet: bool) -> Self {
        self.run.quiet = quiet;
        self
    }

    /// The device batches are made on (default: the model's, as an
    /// autodiff device).
    pub fn with_device(mut self, device: Device) -> Self {
        self.run.device = Some(device);
        self
    }

    /// The loader to give `SupervisedTraining::new` for training: see
    /// [`PoissonLoader`].
    pub fn loader(&self) -> Arc<dyn DataLoader<B>> {
        Arc::new(PoissonLoader::new(self.run.dataset.len()))
    }

    /// ε spent so far, as a burn-train numeric metric (register it with
    /// `metric_train_numeric`).
    pub fn epsilon_metric(&self) -> EpsilonMetric {
        EpsilonMetric::spent(&self.run.log, self.engine().delta())
    }

    /// The ε the budget still allows, as a burn-train numeric metric
    /// (`None` for a run without a budget).
    pub fn budget_metric(&self) -> Option<EpsilonMetric> {
        let budget = self.engine().optimizer().settings().budget?;
        Some(EpsilonMetric::left(&self.run.log, budget.0, budget.1))
    }

    /// The DP learning strategy for a model whose step output carries its
    /// per-example loss ([`PerExampleLoss`]: burn-train's
    /// `ClassificationOutput` and `RegressionOutput`): `forward` is the
    /// model's forward pass to that output — in a stock program, the body
    /// of its `TrainStep::step` before `loss.backward()`.
    pub fn strategy<M, F>(&self, forward: F) -> TrainingStrategy<M>
    where
        M: LearnerModel + TrainStep<Input = B>,
        <M as TrainStep>::Output: PerExampleLoss,
        F: Fn(&M, B) -> <M as TrainStep>::Output + Send + Sync + 'static,
    {
        let loss: LossFn<<M as TrainStep>::Output> = Arc::new(|o| o.per_example_loss());
        let reported: LossFn<<M as TrainStep>::Output> = Arc::new(|o| o.reported_loss());
        self.custom(Arc::new(forward), loss, Some(reported))
    }

    /// [`DpTraining::strategy`] with the model's own `InferenceStep::step`
    /// as the forward pass — in a stock burn-train program it computes the
    /// same output as `TrainStep::step` does before `loss.backward()`
    /// (here on the training model, so dropout and the like stay in
    /// training mode).
    pub fn strategy_from_inference<M>(&self) -> TrainingStrategy<M>
    where
        M: LearnerModel
            + TrainStep<Input = B>
            + InferenceStep<Input = B, Output = <M as TrainStep>::Output>,
        <M as TrainStep>::Output: PerExampleLoss,
    {
        self.strategy(|model: &M, batch: B| InferenceStep::step(model, batch))
    }

    /// [`DpTraining::strategy`] with the per-example loss given: `loss`
    /// reads the loss of each example (shape `[n]`, on the autodiff graph)
    /// from the step's output — for a smoothed, weighted or otherwise
    /// custom loss, or an output of your own.
    pub fn strategy_with_loss<M, F, L>(&self, forward: F, loss: L) -> TrainingStrategy<M>
    where
        M: LearnerModel + TrainStep<Input = B>,
        <M as TrainStep>::Output: StepOutput,
        F: Fn(&M, B) -> <M as TrainStep>::Output + Send + Sync + 'static,
        L: Fn(&<M as TrainStep>::Output) -> Tensor<1> + Send + Sync + 'static,
    {
        self.custom(Arc::new(forward), Arc::new(loss), None)
    }

    fn custom<M>(
        &self,
        forward: crate::strategy::ForwardFn<M>,
        loss: LossFn<<M as TrainStep>::Output>,
        reported: Option<LossFn<<M as TrainStep>::Output>>,
    ) -> TrainingStrategy<M>
    where
        M: LearnerModel + TrainStep<Input = B>,
        <M as TrainStep>::Output: StepOutput,
    {
        TrainingStrategy::Custom(Arc::new(DpStrategy {
            run: self.run.clone(),
            forward,
            loss,
            reported,
        }))
    }

    /// The privacy report of the steps taken so far (ε, σ, q, steps, δ,
    /// sampler, …).
    ///
    /// # Errors
    ///
    /// An accountant error.
    pub fn report(&self) -> Result<PrivacyReport> {
        Ok(self.engine().report()?)
    }

    /// The privacy engine (ε so far, steps, the last step's statistics,
    /// warnings). Do not step it yourself while the strategy trains.
    pub fn engine(&self) -> MutexGuard<'_, PrivacyEngine> {
        self.run
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
