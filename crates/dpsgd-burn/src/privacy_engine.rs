//! [`PrivacyEngine`]: DP-SGD for a burn training loop in a few lines, with a
//! budget, virtual batches, adaptive clipping and checkpoints.

use crate::batch::ExampleBatch;
use crate::engine::{GradientEngine, PassSize};
use crate::layers::ConvStrategy;
use crate::sampler::PoissonSampler;
use crate::users::PrivacyUnit;
use burn::module::ParamId;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use dpsgd_accountant::{Accountant, AccountantKind, calibrate_noise};
use dpsgd_core::{
    ClippedGradients, Clipping, DpOptimizer, DpSettings, Error, GradientMethod, NoiseSource,
    Rejected, Result,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// A budget to calibrate the noise for: `epochs` epochs of the sampler at
/// (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetBudget {
    /// ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Planned epochs (each `round(1/q)` steps).
    pub epochs: usize,
}

/// Settings of a DP-SGD run, in burn's `Config` style: `new` takes the
/// required clipping norm, `with_*` set the rest, `init` validates everything
/// and builds the [`PrivacyEngine`].
///
/// ```
/// use dpsgd_burn::{DpSgdConfig, PoissonSampler};
/// let sampler = PoissonSampler::new(60_000, 256)?;
/// let engine = DpSgdConfig::new(1.0)
///     .with_target_epsilon(3.0, 1e-5, 15)
///     .init(burn::optim::SgdConfig::new().init(), sampler)?;
/// assert!(engine.noise_multiplier() > 0.5);
/// assert!(engine.planned_epsilon()? <= 3.0);
/// # Ok::<(), dpsgd_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpSgdConfig {
    /// Clipping policy (flat at the given norm by default).
    pub clipping: Clipping,
    /// A fixed noise multiplier (or use a target).
    pub noise_multiplier: Option<f64>,
    /// A budget σ is calibrated for (or use a noise multiplier).
    pub target: Option<TargetBudget>,
    /// δ to report ε at (taken from the target when there is one).
    pub delta: Option<f64>,
    /// Accountant (RDP by default; PLD is tighter).
    pub accountant: AccountantKind,
    /// Largest number of examples processed at once: bigger Poisson batches
    /// are split into chunks whose clipped sums add up; noise is added once.
    pub max_physical_batch_size: Option<usize>,
    /// Seed for sampling and noise (reproducible, reported as not secure).
    pub seed: Option<u64>,
    /// Refuse steps beyond the target budget (on by default; set the field
    /// to turn it off).
    pub enforce_budget: bool,
    /// Accept δ ≥ 1/N (off by default: such a δ allows publishing a whole
    /// record).
    #[serde(default)]
    pub allow_large_delta: bool,
    /// The private data set's fingerprint, checked on resume.
    #[serde(default)]
    pub dataset: Option<DatasetFingerprint>,
    /// How the DP-aware convolutions compute per-example gradients
    /// ([`ConvStrategy::Auto`] by default; time and memory only).
    #[serde(default)]
    pub conv_strategy: ConvStrategy,
    /// How the engine splits a (physical) batch into forward and backward
    /// passes ([`PassSize::Auto`] by default: passes under a memory budget
    /// on a CPU, one pass on a GPU; time and memory only, see
    /// [`PassSize`]).
    #[serde(default)]
    pub pass_size: PassSize,
    /// The unit of privacy: one record (the default) or one user and all
    /// their records ([`crate::users`]). At user level the sampler's N is
    /// the number of users, its batches are batches of users
    /// ([`PrivacyEngine::sample_users`]) and δ is compared with 1/U.
    #[serde(default)]
    pub privacy_unit: PrivacyUnit,
    /// Announce on standard error, once, when the per-example gradients
    /// leave the fast path for the slow fallback (tens of times slower),
    /// naming the parameters and the DP-aware layer to swap in (on by
    /// default: the warning is also in [`PrivacyEngine::warnings`]; turn
    /// it off when the caller surfaces those itself).
    #[serde(default = "announce_by_default")]
    pub announce_fallback: bool,
}

/// [`DpSgdConfig::announce_fallback`]'s default.
fn announce_by_default() -> bool {
    true
}

/// A fingerprint of the private training set: its size and a hash of its
/// contents. Stored in checkpoints (which are secret anyway) and checked by
/// [`PrivacyEngine::resume`], so a run cannot be continued on other data
/// under the old accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// N.
    pub size: usize,
    /// A hash of the examples (e.g. `dpsgd_data::Dataset::content_hash`).
    pub hash: u64,
}

impl DpSgdConfig {
    /// Flat clipping at `max_grad_norm`; everything else at its default.
    pub fn new(max_grad_norm: f64) -> Self {
        Self {
            clipping: Clipping::Flat { max_grad_norm },
            noise_multiplier: None,
            target: None,
            delta: None,
            accountant: AccountantKind::Rdp,
            max_physical_batch_size: None,
            seed: None,
            enforce_budget: true,
            allow_large_delta: false,
            dataset: None,
            conv_strategy: ConvStrategy::Auto,
            pass_size: PassSize::Auto,
            privacy_unit: PrivacyUnit::Record,
            announce_fallback: true,
        }
    }

    /// Whether to announce the slow fallback on standard error
    /// ([`DpSgdConfig::announce_fallback`]).
    pub fn with_announce_fallback(mut self, announce: bool) -> Self {
        self.announce_fallback = announce;
        self
    }

    /// The unit of privacy ([`PrivacyUnit::User`]: the sampler samples
    /// users).
    pub fn with_privacy_unit(mut self, unit: PrivacyUnit) -> Self {
        self.privacy_unit = unit;
        self
    }

    /// Another clipping policy (per-layer, automatic, adaptive).
    pub fn with_clipping(mut self, clipping: Clipping) -> Self {
        self.clipping = clipping;
        self
    }

    /// A fixed noise multiplier.
    pub fn with_noise_multiplier(mut self, sigma: f64) -> Self {
        self.noise_multiplier = Some(sigma);
        self
    }

    /// Calibrate σ so that `epochs` epochs meet (ε, δ).
    pub fn with_target_epsilon(mut self, epsilon: f64, delta: f64, epochs: usize) -> Self {
        self.target = Some(TargetBudget {
            epsilon,
            delta,
            epochs,
        });
        self
    }

    /// δ for reporting when σ is fixed.
    pub fn with_delta(mut self, delta: f64) -> Self {
        self.delta = Some(delta);
        self
    }

    /// The accountant.
    pub fn with_accountant(mut self, accountant: AccountantKind) -> Self {
        self.accountant = accountant;
        self
    }

    /// Virtual batches: at most `m` examples per forward/backward pass.
    pub fn with_max_physical_batch_size(mut self, m: usize) -> Self {
        self.max_physical_batch_size = Some(m);
        self
    }

    /// A reproducible (not secure) run.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether to accept δ ≥ 1/N (refused by default).
    pub fn with_allow_large_delta(mut self, allow: bool) -> Self {
        self.allow_large_delta = allow;
        self
    }

    /// The private data set's fingerprint: its size must be the sampler's
    /// N, and [`PrivacyEngine::resume`] checks it against the caller's data.
    pub fn with_dataset(mut self, fingerprint: DatasetFingerprint) -> Self {
        self.dataset = Some(fingerprint);
        self
    }

    /// How the DP-aware convolutions compute per-example gradients (see
    /// [`ConvStrategy`]).
    pub fn with_conv_strategy(mut self, strategy: ConvStrategy) -> Self {
        self.conv_strategy = strategy;
        self
    }

    /// How the engine splits a batch into passes (see [`PassSize`]; unlike
    /// [`DpSgdConfig::with_max_physical_batch_size`], which splits the
    /// Poisson batch before the engine, this sets the engine's own split).
    pub fn with_pass_size(mut self, size: PassSize) -> Self {
        self.pass_size = size;
        self
    }

    /// Validates the settings against the sampler, calibrates σ if a target
    /// is set, and builds the engine around `inner`.
    ///
    /// δ ≥ 1/N is refused unless [`DpSgdConfig::with_allow_large_delta`]:
    /// a mechanism that publishes one whole record at random meets such a
    /// δ. When allowed, it is a warning in [`PrivacyEngine::warnings`]
    /// (the library does not print: the caller shows or logs it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for: neither or both of σ and a target,
    /// an invalid σ/ε/δ/epochs, δ ≥ 1/N (unless allowed), an expected batch
    /// `q·N < 1`, a physical batch of 0, an invalid clipping policy, a
    /// dataset fingerprint whose size is not N; calibration failures.
    pub fn init(&self, inner: ModuleOptimizer, sampler: PoissonSampler) -> Result<PrivacyEngine> {
        let n = sampler.dataset_size();
        self.clipping.validate()?;
        self.privacy_unit.validate()?;
        if let Some(fp) = self.dataset
            && fp.size != n
        {
            return Err(Error::invalid(
                "dataset",
                fp.size,
                format!("the fingerprint's size differs from the sampler's N = {n}"),
            ));
        }
        if sampler.expected_batch_size() < 1.0 {
            return Err(Error::invalid(
                "batch_size",
                sampler.expected_batch_size(),
                "the expected batch q·N is below one example",
            ));
        }
        if self.max_physical_batch_size == Some(0) {
            return Err(Error::invalid(
                "max_physical_batch_size",
                0,
                "must be at least 1",
            ));
        }
        let (sigma, delta, planned_steps, budget) = match (self.noise_multiplier, self.target) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "noise_multiplier",
                    "set",
                    "give either a noise multiplier or a target ε, not both",
                ));
            }
            (None, None) => {
                return Err(Error::invalid(
                    "noise_multiplier",
                    "unset",
                    "give a noise multiplier or a target ε",
                ));
            }
            (Some(s), None) => (s, self.delta.unwrap_or(1e-5), None, None),
            (None, Some(t)) => {
                if t.epochs == 0 {
                    return Err(Error::invalid("epochs", 0, "must be at least 1"));
                }
                let steps = t.epochs as u64 * sampler.steps_per_epoch();
                let c = calibrate_noise(
                    self.accountant,
                    sampler.sample_rate(),
                    steps,
                    t.delta,
                    t.epsilon,
                )?;
                let budget = self.enforce_budget.then_some((t.epsilon, t.delta));
                (c.noise_multiplier, t.delta, Some(steps), budget)
            }
        };
        let mut warnings = Vec::new();
        Error::check(dpsgd_accountant::checks::delta(delta))?;
        if delta >= 1.0 / n as f64 {
            let (count, unit) = match self.privacy_unit {
                PrivacyUnit::Record => ("N", "record"),
                PrivacyUnit::User { .. } => ("U", "user's records"),
            };
            let w = format!(
                "δ = {delta} ≥ 1/{count} = {:.3e}: a mechanism that publishes one whole {unit} at random meets this δ; use δ ≪ 1/{count}",
                1.0 / n as f64
            );
            if !self.allow_large_delta {
                return Err(Error::invalid(
                    "delta",
                    delta,
                    format!("{w} (or allow it explicitly)"),
                ));
            }
            warnings.push(w);
        }
        let settings = DpSettings {
            noise_multiplier: sigma,
            clipping: self.clipping.clone(),
            sample_rate: sampler.sample_rate(),
            dataset_size: n,
            accountant: self.accountant,
            budget,
        };
        let noise = self
            .seed
            .map_or_else(NoiseSource::from_os, NoiseSource::seeded);
        let rng = match self.seed {
            Some(s) => ChaCha20Rng::seed_from_u64(s.wrapping_add(0x005a_3d1e)),
            None => ChaCha20Rng::from_os_rng(),
        };
        let mut dp = DpOptimizer::with_noise(inner, settings, noise)?;
        if let Some(planned) = planned_steps {
            // σ was calibrated for these steps: one ε evaluation confirms
            // it, and the per-step budget check is a countdown from then on.
            dp.plan(planned)?;
        }
        Ok(PrivacyEngine {
            config: self.clone(),
            engine: GradientEngine::new(self.clipping.clone())
                .with_conv_strategy(self.conv_strategy)
                .with_pass_size(self.pass_size),
            dp,
            sampler,
            rng,
            planned_steps,
            delta,
            warnings,
            last: None,
            pending_batch: None,
            caller_batches: 0,
            dropped_examples: 0,
            observed: None,
            release: None,
        })
    }
}

/// What the last step did.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Examples in the (logical) batch.
    pub batch_size: usize,
    /// Physical chunks it was processed in.
    pub chunks: usize,
    /// Mean loss of the batch (not private).
    pub mean_loss: f64,
    /// How per-example gradients were computed.
    pub method: GradientMethod,
    /// Per-example gradient norms before clipping (not private).
    pub per_example_norms: Vec<f32>,
    /// The clipping norm used (changes under adaptive clipping).
    pub max_grad_norm: f64,
    /// Examples that contributed zero because their loss or gradient norm
    /// was not finite (not private).
    pub dropped: usize,
}

/// The privacy report of a run: what ε covers and how it was computed.
///
/// A run without DP (the same model and sampler, for comparison) is
/// described by [`PrivacyReport::non_private`]: no ε (ε = ∞), no noise,
/// accountant or clipping, and not secure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReport {
    /// σ (of the whole mechanism; with adaptive clipping the gradient gets
    /// σ_Δ); `None` without DP.
    pub noise_multiplier: Option<f64>,
    /// q.
    pub sample_rate: f64,
    /// Steps accounted for: those taken, or, for a run that charged the
    /// rest of its plan ([`PrivacyEngine::report_over`]: early stopping, a
    /// divergence check), the planned steps.
    pub steps: u64,
    /// ε at δ over `steps`; `None` without DP (ε = ∞).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// Accountant; `None` without DP.
    pub accountant: Option<AccountantKind>,
    /// Clipping policy (with the current C); `None` without DP.
    pub clipping: Option<Clipping>,
    /// The sampling that produced the batches: `poisson` when every step's
    /// batch came from [`PrivacyEngine::sample_batch`]; otherwise it says
    /// how many did not (the accounting assumes Poisson sampling, so ε
    /// does not hold for such a run).
    pub sampler: String,
    /// Seed, if the run is reproducible.
    pub seed: Option<u64>,
    /// Whether noise and sampling come from an OS-seeded CSPRNG (always
    /// false without DP: there is no guarantee to secure).
    pub secure: bool,
    /// N.
    pub dataset_size: usize,
    /// Steps planned by the target, if any.
    pub planned_steps: Option<u64>,
    /// ε after the planned steps, if any.
    pub planned_epsilon: Option<f64>,
    /// Version of dpsgd-burn.
    pub crate_version: String,
    /// What ε protects: `record` (one record) or `user` (one user and all
    /// their records; then `dataset_size` counts users and `sample_rate`
    /// is the rate at which users are sampled).
    #[serde(default = "record_unit")]
    pub privacy_unit: String,
    /// U, the number of users, at user level (`None` at record level).
    #[serde(default)]
    pub users: Option<usize>,
    /// K, the most records one user contributes to a step, at user level.
    #[serde(default)]
    pub max_records_per_user: Option<usize>,
}

/// The unit of a report that does not name one.
fn record_unit() -> String {
    "record".into()
}

impl PrivacyReport {
    /// The report of a run without DP that took `steps` batches from
    /// `sampler`: ε, σ, accountant and clipping are `None`, and the run is
    /// not secure. `delta` is the δ a private run would have used.
    pub fn non_private(
        sampler: &PoissonSampler,
        steps: u64,
        delta: f64,
        seed: Option<u64>,
    ) -> Self {
        Self {
            noise_multiplier: None,
            sample_rate: sampler.sample_rate(),
            steps,
            epsilon: None,
            delta,
            accountant: None,
            clipping: None,
            sampler: "poisson".into(),
            seed,
            secure: false,
            dataset_size: sampler.dataset_size(),
            planned_steps: None,
            planned_epsilon: None,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            privacy_unit: record_unit(),
            users: None,
            max_records_per_user: None,
        }
    }

    /// The report of the same run at another unit of privacy (for a run
    /// without DP, which has no engine to say so).
    pub fn with_privacy_unit(mut self, unit: PrivacyUnit) -> Self {
        self.privacy_unit = unit.name().into();
        self.max_records_per_user = unit.max_records_per_user();
        self.users = self.max_records_per_user.map(|_| self.dataset_size);
        self
    }
}

/// DP-SGD around a burn optimizer: Poisson sampling from a secret RNG,
/// per-example clipping, noise, accounting and budget, in one object.
///
/// # Privacy
///
/// ε covers the model's parameters (and anything computed from them alone)
/// for add/remove-one neighbours of the training set of N examples, N being
/// public. It does not cover [`StepStats`] (batch sizes, losses,
/// per-example norms, dropped examples), which are exact statistics of the
/// private batch, nor checkpoints, which hold the generators' state.
pub struct PrivacyEngine {
    pub(crate) config: DpSgdConfig,
    pub(crate) engine: GradientEngine,
    pub(crate) dp: DpOptimizer,
    pub(crate) sampler: PoissonSampler,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) planned_steps: Option<u64>,
    pub(crate) delta: f64,
    pub(crate) warnings: Vec<String>,
    pub(crate) last: Option<StepStats>,
    /// Size of the batch [`PrivacyEngine::sample_batch`] drew last, until a
    /// step consumes it.
    pub(crate) pending_batch: Option<usize>,
    /// Steps whose batch did not come from `sample_batch`.
    pub(crate) caller_batches: u64,
    /// Examples dropped for a non-finite loss or gradient, over the run.
    pub(crate) dropped_examples: u64,
    /// Coordinates of the released gradient recorded every step (white-box
    /// auditing), if any.
    pub(crate) observed: Option<Vec<(ParamId, usize)>>,
    /// What the last step released at those coordinates.
    pub(crate) release: Option<ReleasedCoordinates>,
}

/// Coordinates of one step's released noisy mean gradient
/// `(Σ_i clip(∇_i) + N(0, σ_Δ²S²))/(qN)`, recorded for white-box auditing.
#[derive(Debug, Clone)]
pub struct ReleasedCoordinates {
    /// The released values, in the order the coordinates were given.
    pub values: Vec<f32>,
    /// Standard deviation of the noise in each value, `σ_Δ·S/(qN)`.
    pub noise_std: f64,
    /// The clipping policy the step clipped under (adaptive clipping's C
    /// of that step).
    pub clipping: Clipping,
}

impl PrivacyEngine {
    /// Indices of the next Poisson batch (may be empty). Give
    /// [`PrivacyEngine::step`] exactly these examples: a batch of another
    /// size, or a step without a sampled batch, is recorded as not
    /// Poisson-sampled in [`PrivacyReport::sampler`].
    pub fn sample_batch(&mut self) -> Vec<usize> {
        let indices = self.sampler.sample(&mut self.rng);
        self.pending_batch = Some(indices.len());
        indices
    }

    /// One DP-SGD step on `batch` (a whole logical batch, split into chunks
    /// of at most `max_physical_batch_size`): clipped per-example gradients,
    /// one noise draw, the inner optimizer's step, one accounted step.
    ///
    /// An example with a NaN/inf loss or gradient norm contributes zero
    /// (counted in [`StepStats::dropped`]) instead of failing the step.
    ///
    /// # Errors
    ///
    /// [`Rejected`] with the model untouched: budget exhausted (checked
    /// once, after the gradients, by the DP optimizer), an unsupported
    /// model, a loss that is not one value per example.
    pub fn step<M, B, F>(
        &mut self,
        lr: f64,
        model: M,
        batch: &B,
        loss_fn: F,
    ) -> Result<M, Rejected<M>>
    where
        M: burn::module::Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        self.step_with(lr, model, batch, |engine, m, b| {
            engine.clipped_gradients(m, b, &loss_fn)
        })
    }

    /// [`PrivacyEngine::step`] with the per-example work spread over the
    /// devices of `parallel`: the same Poisson batch, clipped in fixed
    /// shards by the workers, reduced onto the coordinator, then noised
    /// ONCE, stepped and accounted once by this engine (see
    /// [`crate::parallel`]). The model lives on `parallel`'s coordinator
    /// ([`DataParallel::coordinator`](crate::parallel::DataParallel::coordinator)).
    ///
    /// # Errors
    ///
    /// As [`PrivacyEngine::step`], and a lost worker
    /// ([`crate::parallel::OnWorkerLoss`]) or another worker's error: the
    /// model is untouched and nothing is accounted.
    pub fn step_data_parallel<M, B, F>(
        &mut self,
        lr: f64,
        model: M,
        batch: &B,
        loss_fn: F,
        parallel: &crate::parallel::DataParallel,
    ) -> Result<M, Rejected<M>>
    where
        M: burn::module::Module + 'static,
        B: ExampleBatch + Send + 'static,
        F: Fn(&M, &B) -> Tensor<1> + Send + Sync + 'static,
    {
        // The reduced sum, the noise and the update live on the
        // coordinator: a model elsewhere is refused before any release.
        let coordinator = parallel.coordinator();
        if let Some(other) = model.devices().into_iter().find(|d| d != coordinator) {
            return Err(Rejected {
                error: dpsgd_core::Error::invalid(
                    "devices",
                    format!("{other:?}"),
                    "the model must live on the data-parallel coordinator (the first device, or the one set by DataParallel::with_coordinator)",
                ),
                model,
            });
        }
        let loss_fn = std::sync::Arc::new(loss_fn);
        let stepped = self.step_with(lr, model, batch, |engine, m, b| {
            crate::validate::validate_model(m)?;
            parallel.clipped_gradients(engine, m, b, &loss_fn)
        })?;
        // The workers ran on copies of the engine: what they learnt about
        // the fast path is kept here, so the next step's copies skip it.
        if let Some(GradientMethod::Fallback { reason }) = self.last_step().map(|s| &s.method)
            && reason != crate::engine::INCONCLUSIVE
        {
            let reason = reason.clone();
            self.engine.remember_fallback(&reason);
        }
        Ok(stepped)
    }

    /// The body of a step, with `clip` computing a chunk's clipped sum.
    fn step_with<M, B>(
        &mut self,
        lr: f64,
        model: M,
        batch: &B,
        clip: impl FnMut(&mut GradientEngine, &M, &B) -> Result<ClippedGradients>,
    ) -> Result<M, Rejected<M>>
    where
        M: burn::module::Module,
        B: ExampleBatch,
    {
        let sampled = self.pending_batch.take() == Some(batch.num_examples());
        let (total, stats) = match self.clip_batch(&model, batch, clip) {
            Ok(clipped) => clipped,
            Err(error) => return Err(Rejected { error, model }),
        };
        let model = match &self.observed {
            None => self.dp.step(lr, model, total)?,
            Some(coordinates) => {
                // Read before the step: adaptive clipping moves C after it.
                let noise_std =
                    self.dp.settings().noise_std() / self.dp.settings().expected_batch_size();
                let clipping = self.dp.clipping().clone();
                let mut values = Vec::new();
                let model = self.dp.step_observed(lr, model, total, |m, grads| {
                    values = crate::canary::read_coordinates(m, grads, coordinates);
                })?;
                self.release = Some(ReleasedCoordinates {
                    values,
                    noise_std,
                    clipping,
                });
                model
            }
        };
        self.record_step(stats, sampled);
        Ok(model)
    }

    /// The private release of one step without applying it: the noisy
    /// mean of `batch`'s clipped per-example gradients,
    /// `(Σ_i clip(∇_i) + N(0, σ²S²))/(qN)`, accounted as one step — for a
    /// training loop whose own optimizer applies the update (burn-train's
    /// `Learner`, see the `dpsgd-burn-train` crate). Everything else is as
    /// in [`PrivacyEngine::step`]: draw the batch with
    /// [`PrivacyEngine::sample_batch`], and give the gradients to an
    /// optimizer exactly once.
    ///
    /// # Errors
    ///
    /// As [`PrivacyEngine::step`]; nothing is accounted then.
    pub fn private_gradients<M, B, F>(
        &mut self,
        model: &M,
        batch: &B,
        loss_fn: F,
    ) -> Result<GradientsParams>
    where
        M: burn::module::Module,
        B: ExampleBatch,
        F: Fn(&M, &B) -> Tensor<1>,
    {
        let sampled = self.pending_batch.take() == Some(batch.num_examples());
        let (total, stats) = self.clip_batch(model, batch, |engine, m, b| {
            engine.clipped_gradients(m, b, &loss_fn)
        })?;
        let grads = self.release_gradients(model, total)?;
        self.record_step(stats, sampled);
        Ok(grads)
    }

    /// [`PrivacyEngine::private_gradients`] for a Poisson draw that chose
    /// no example: the release is noise alone, and it is accounted like
    /// every other step (skipping it would condition the mechanism on a
    /// non-empty batch, which the accountant does not cover).
    ///
    /// # Errors
    ///
    /// As [`PrivacyEngine::private_gradients`].
    pub fn private_gradients_of_empty_batch<M>(&mut self, model: &M) -> Result<GradientsParams>
    where
        M: burn::module::Module,
    {
        let sampled = self.pending_batch.take() == Some(0);
        let max_grad_norm = self.dp.clipping().sensitivity();
        let total = ClippedGradients::empty(self.dp.clipping().clone());
        let stats = StepStats {
            batch_size: 0,
            chunks: 0,
            mean_loss: 0.0,
            method: total.method().clone(),
            per_example_norms: Vec::new(),
            max_grad_norm,
            dropped: 0,
        };
        let grads = self.release_gradients(model, total)?;
        self.record_step(stats, sampled);
        Ok(grads)
    }

    /// The size of the Poisson batch [`PrivacyEngine::sample_batch`] drew
    /// and no step has used yet (`None` when there is none).
    pub fn pending_batch(&self) -> Option<usize> {
        self.pending_batch
    }

    /// The noisy mean gradient of `total` (and the white-box observation,
    /// when one is asked for).
    fn release_gradients<M: burn::module::Module>(
        &mut self,
        model: &M,
        total: ClippedGradients,
    ) -> Result<GradientsParams> {
        // Read before the release: adaptive clipping moves C after it.
        let noise_std = self.dp.settings().noise_std() / self.dp.settings().expected_batch_size();
        let clipping = self.dp.clipping().clone();
        let grads = self.dp.privatize(model, total)?;
        if let Some(coordinates) = &self.observed {
            self.release = Some(ReleasedCoordinates {
                values: crate::canary::read_coordinates(model, &grads, coordinates),
                noise_std,
                clipping,
            });
        }
        Ok(grads)
    }

    /// A batch's clipped gradient sum, chunk by chunk, with the step's
    /// statistics (and the fallback announced once).
    fn clip_batch<M, B>(
        &mut self,
        model: &M,
        batch: &B,
        mut clip: impl FnMut(&mut GradientEngine, &M, &B) -> Result<ClippedGradients>,
    ) -> Result<(ClippedGradients, StepStats)>
    where
        M: burn::module::Module,
        B: ExampleBatch,
    {
        let max_grad_norm = self.dp.clipping().sensitivity();
        self.engine.set_clipping(self.dp.clipping().clone());
        let n = batch.num_examples();
        let chunk = self.config.max_physical_batch_size.unwrap_or(n.max(1));
        let mut total = ClippedGradients::empty(self.dp.clipping().clone());
        let mut chunks = 0;
        for start in (0..n).step_by(chunk.max(1)) {
            let end = (start + chunk).min(n);
            let part = if start == 0 && end == n {
                clip(&mut self.engine, model, batch)
            } else {
                clip(&mut self.engine, model, &batch.slice_examples(start, end))
            };
            total.accumulate(part?)?;
            chunks += 1;
        }
        let kept = n - total.dropped();
        let stats = StepStats {
            batch_size: n,
            chunks,
            mean_loss: total.loss_sum() / kept.max(1) as f64,
            method: total.method().clone(),
            per_example_norms: total.per_example_norms().to_vec(),
            max_grad_norm,
            dropped: total.dropped(),
        };
        if let GradientMethod::Fallback { reason } = &stats.method {
            let warning = format!(
                "per-example gradients by the slow fallback (one backward pass per example): {reason}"
            );
            if !self.warnings.contains(&warning) {
                // Loud by default: a model off the fast path is a
                // performance bug the caller should see without asking.
                if self.config.announce_fallback {
                    eprintln!("dpsgd: warning: {warning}");
                }
                self.warnings.push(warning);
            }
        }
        Ok((total, stats))
    }

    /// Books a step that was released.
    fn record_step(&mut self, stats: StepStats, sampled: bool) {
        if !sampled {
            self.caller_batches += 1;
        }
        self.dropped_examples += stats.dropped as u64;
        self.last = Some(stats);
    }

    /// **Test-only**: plants `fault` in this engine's mechanism (see
    /// [`dpsgd_core::fault`]); everything it reports (σ, ε, the sampler)
    /// stays the honest claim.
    ///
    /// # Errors
    ///
    /// [`dpsgd_core::Error::InvalidParameter`] in a build without the
    /// `fault-injection` feature, or for a fault outside its domain.
    #[doc(hidden)]
    pub fn plant_fault(&mut self, fault: dpsgd_core::fault::MechanismFault) -> Result<()> {
        self.dp.plant_fault(fault)?;
        if fault == dpsgd_core::fault::MechanismFault::UnclippedExample {
            self.engine.unclipped_first = true;
        }
        Ok(())
    }

    /// **White-box auditing**: from the next step on, record these
    /// coordinates (parameter, flat index) of every released noisy mean
    /// gradient — what the mechanism releases, from which every
    /// intermediate model is computed — for [`PrivacyEngine::last_release`].
    /// An empty list stops recording.
    pub fn observe_releases(&mut self, coordinates: Vec<(ParamId, usize)>) {
        self.release = None;
        self.observed = (!coordinates.is_empty()).then_some(coordinates);
    }

    /// The observed coordinates of the last step's released noisy mean
    /// gradient (see [`PrivacyEngine::observe_releases`]).
    pub fn last_release(&self) -> Option<&ReleasedCoordinates> {
        self.release.as_ref()
    }

    /// Examples dropped (zero contribution) for a non-finite loss or
    /// gradient norm over the run so far (not private).
    pub fn dropped_examples(&self) -> u64 {
        self.dropped_examples
    }

    /// The sampling the run used: `poisson`, or a description of how many
    /// steps had batches that [`PrivacyEngine::sample_batch`] did not draw.
    pub fn sampler_used(&self) -> String {
        if self.caller_batches == 0 {
            "poisson".into()
        } else {
            format!(
                "caller-supplied batches in {} of {} steps (not Poisson-sampled by the engine: ε does not hold)",
                self.caller_batches,
                self.steps()
            )
        }
    }

    /// What the last step did.
    pub fn last_step(&self) -> Option<&StepStats> {
        self.last.as_ref()
    }

    /// ε spent so far at the run's δ.
    ///
    /// # Errors
    ///
    /// From the accountant.
    pub fn epsilon(&self) -> Result<f64> {
        self.dp.epsilon(self.delta)
    }

    /// ε after all planned steps (the target's), or the spent ε without a target.
    ///
    /// # Errors
    ///
    /// From the accountant.
    pub fn planned_epsilon(&self) -> Result<f64> {
        match self.planned_steps {
            Some(planned) => self.epsilon_over(planned.max(self.steps())),
            None => self.epsilon(),
        }
    }

    /// ε at the run's δ once the run has `total` steps at the engine's σ
    /// and q: the steps taken, and the rest of the `total` charged as if
    /// they had been taken (the accountant's history is not changed).
    ///
    /// What a loop that stops before its plan at a data-dependent time
    /// reports — early stopping on validation records, a divergence check
    /// on the released parameters: every intermediate model is a release
    /// of the mechanism run for the whole plan, so the stop is
    /// post-processing of that run, whose ε covers it; ε for the steps
    /// actually taken would be a function of when the run stopped.
    ///
    /// ```
    /// use dpsgd_accountant::{Accountant, RdpAccountant};
    /// use dpsgd_burn::{DpSgdConfig, PoissonSampler};
    /// let sampler = PoissonSampler::new(1000, 10)?;
    /// let engine = DpSgdConfig::new(1.0)
    ///     .with_noise_multiplier(1.0)
    ///     .init(burn::optim::SgdConfig::new().init(), sampler)?;
    /// // No step taken yet: all 200 planned steps are charged.
    /// let mut reference = RdpAccountant::new();
    /// reference.record(1.0, 0.01, 200)?;
    /// let want = reference.epsilon(1e-5)?;
    /// assert!((engine.epsilon_over(200)? - want).abs() <= 1e-9 * want);
    /// assert_eq!(engine.report_over(200)?.steps, 200);
    /// assert_eq!(engine.steps(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `total` is below the steps taken;
    /// from the accountant.
    pub fn epsilon_over(&self, total: u64) -> Result<f64> {
        let remaining = self.steps_beyond(total)?;
        if remaining == 0 {
            return self.epsilon();
        }
        let seg = dpsgd_accountant::Segment::new(
            self.noise_multiplier(),
            self.sampler.sample_rate(),
            remaining,
        )?;
        Ok(self.dp.accountant().epsilon_after(seg, self.delta)?)
    }

    /// The steps of a `total`-step plan not yet taken.
    fn steps_beyond(&self, total: u64) -> Result<u64> {
        total.checked_sub(self.steps()).ok_or_else(|| {
            Error::invalid(
                "steps",
                total,
                format!(
                    "fewer than the {} steps already taken: ε cannot be charged for fewer steps than were taken",
                    self.steps()
                ),
            )
        })
    }

    /// Charges `steps` steps whose releases were seen and then discarded
    /// (a resumed run redoing steps that data-parallel workers in other
    /// processes already saw): see
    /// [`DpOptimizer::charge_discarded_steps`]. They count in
    /// [`PrivacyEngine::steps`], ε and the budget from then on.
    ///
    /// # Errors
    ///
    /// From the accountant.
    pub fn charge_discarded_steps(&mut self, steps: u64) -> Result<()> {
        self.dp.charge_discarded_steps(steps)
    }

    /// Steps accounted: those taken, and any charged by
    /// [`PrivacyEngine::charge_discarded_steps`].
    pub fn steps(&self) -> u64 {
        self.dp.steps()
    }

    /// Steps planned by the target budget.
    pub fn planned_steps(&self) -> Option<u64> {
        self.planned_steps
    }

    /// σ.
    pub fn noise_multiplier(&self) -> f64 {
        self.dp.settings().noise_multiplier
    }

    /// δ.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// The sampler (q and N).
    pub fn sampler(&self) -> &PoissonSampler {
        &self.sampler
    }

    /// Why the per-example gradients take the slow fallback, once a step
    /// has found out (`None` while the fast path serves every parameter).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.engine.fallback_reason()
    }

    /// Warnings raised by validation (such as an allowed δ ≥ 1/N), for the
    /// caller to show or log: the library does not print them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The DP optimizer.
    pub fn optimizer(&self) -> &DpOptimizer {
        &self.dp
    }

    /// The privacy report.
    ///
    /// # Errors
    ///
    /// From the accountant.
    pub fn report(&self) -> Result<PrivacyReport> {
        self.report_over(self.steps())
    }

    /// The privacy report of a run of `total` steps, of which the ones not
    /// taken are charged at the engine's σ and q
    /// ([`PrivacyEngine::epsilon_over`]): `steps` is `total` and `epsilon`
    /// covers them all. For a loop that may stop before its plan (early
    /// stopping, divergence), so that the accounting fields do not depend
    /// on whether or when it stopped.
    ///
    /// # Errors
    ///
    /// As [`PrivacyEngine::epsilon_over`].
    pub fn report_over(&self, total: u64) -> Result<PrivacyReport> {
        Ok(PrivacyReport {
            noise_multiplier: Some(self.noise_multiplier()),
            sample_rate: self.sampler.sample_rate(),
            steps: total,
            epsilon: Some(self.epsilon_over(total)?),
            delta: self.delta,
            accountant: Some(self.config.accountant),
            clipping: Some(self.dp.clipping().clone()),
            sampler: self.sampler_used(),
            seed: self.config.seed,
            secure: self.dp.is_secure(),
            dataset_size: self.sampler.dataset_size(),
            planned_steps: self.planned_steps,
            planned_epsilon: self
                .planned_steps
                .map(|_| self.planned_epsilon())
                .transpose()?,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            privacy_unit: record_unit(),
            users: None,
            max_records_per_user: None,
        }
        .with_privacy_unit(self.config.privacy_unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    #[test]
    fn should_give_the_engine_the_configured_pass_size() {
        let sampler = PoissonSampler::new(1000, 50).unwrap();
        let inner = || burn::optim::SgdConfig::new().init();
        let three = PassSize::Examples(NonZeroUsize::new(3).unwrap());
        let config = DpSgdConfig::new(1.0)
            .with_noise_multiplier(1.0)
            .with_pass_size(three);
        let engine = config.init(inner(), sampler).unwrap();
        assert_eq!(engine.engine.pass_size(), three);
        // A default config, and one saved before the field existed: Auto.
        let default = DpSgdConfig::new(1.0).with_noise_multiplier(1.0);
        assert_eq!(default.pass_size, PassSize::Auto);
        let mut saved = serde_json::to_value(&config).unwrap();
        assert_eq!(saved["pass_size"], serde_json::json!({ "Examples": 3 }));
        saved.as_object_mut().unwrap().remove("pass_size");
        let old: DpSgdConfig = serde_json::from_value(saved).unwrap();
        assert_eq!(old.pass_size, PassSize::Auto);
    }
}
