//! [`PrivacyEngine`]: DP-SGD for a burn training loop in a few lines, with a
//! budget, virtual batches, adaptive clipping and checkpoints.

use crate::batch::ExampleBatch;
use crate::engine::GradientEngine;
use crate::sampler::PoissonSampler;
use burn::optim::ModuleOptimizer;
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
    /// Refuse steps beyond the target budget (on by default).
    pub enforce_budget: bool,
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
        }
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

    /// Whether to refuse steps past the target budget.
    pub fn with_enforce_budget(mut self, enforce: bool) -> Self {
        self.enforce_budget = enforce;
        self
    }

    /// Validates the settings against the sampler, calibrates σ if a target
    /// is set, and builds the engine around `inner`.
    ///
    /// Warns (on standard error, and in [`PrivacyEngine::warnings`]) when
    /// δ ≥ 1/N, which allows releasing a whole record.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for: neither or both of σ and a target,
    /// an invalid σ/ε/δ/epochs, an expected batch `q·N < 1`, a physical
    /// batch of 0, a per-layer policy without budgets; calibration failures.
    pub fn init(&self, inner: ModuleOptimizer, sampler: PoissonSampler) -> Result<PrivacyEngine> {
        let n = sampler.dataset_size();
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
        if delta >= 1.0 / n as f64 {
            let w = format!(
                "δ = {delta} ≥ 1/N = {:.3e}: a mechanism that publishes one whole record at random meets this δ; use δ ≪ 1/N",
                1.0 / n as f64
            );
            eprintln!("WARNING: dpsgd: {w}");
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
        Ok(PrivacyEngine {
            config: self.clone(),
            engine: GradientEngine::new(self.clipping.clone()),
            dp: DpOptimizer::with_noise(inner, settings, noise)?,
            sampler,
            rng,
            planned_steps,
            delta,
            warnings,
            last: None,
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
}

/// The privacy report of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReport {
    /// σ (of the whole mechanism; with adaptive clipping the gradient gets σ_Δ).
    pub noise_multiplier: f64,
    /// q.
    pub sample_rate: f64,
    /// Steps taken.
    pub steps: u64,
    /// ε spent at δ.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Accountant.
    pub accountant: AccountantKind,
    /// Clipping policy (with the current C).
    pub clipping: Clipping,
    /// The sampling scheme the accounting assumes.
    pub sampler: String,
    /// Seed, if the run is reproducible.
    pub seed: Option<u64>,
    /// Whether noise and sampling come from an OS-seeded CSPRNG.
    pub secure: bool,
    /// N.
    pub dataset_size: usize,
    /// Steps planned by the target, if any.
    pub planned_steps: Option<u64>,
    /// ε after the planned steps, if any.
    pub planned_epsilon: Option<f64>,
    /// Version of dpsgd-burn.
    pub crate_version: String,
}

/// DP-SGD around a burn optimizer: Poisson sampling from a secret RNG,
/// per-example clipping, noise, accounting and budget, in one object.
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
}

impl PrivacyEngine {
    /// Indices of the next Poisson batch (may be empty).
    pub fn sample_batch(&mut self) -> Vec<usize> {
        self.sampler.sample(&mut self.rng)
    }

    /// One DP-SGD step on `batch` (a whole logical batch, split into chunks
    /// of at most `max_physical_batch_size`): clipped per-example gradients,
    /// one noise draw, the inner optimizer's step, one accounted step.
    ///
    /// # Errors
    ///
    /// [`Rejected`] with the model untouched: budget exhausted, NaN/inf loss
    /// or gradient, a loss that is not one value per example.
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
        if let Err(error) = self.dp.check_budget() {
            return Err(Rejected { error, model });
        }
        let max_grad_norm = self.dp.clipping().sensitivity();
        self.engine.set_clipping(self.dp.clipping().clone());
        let n = batch.num_examples();
        let chunk = self.config.max_physical_batch_size.unwrap_or(n.max(1));
        let mut total = ClippedGradients::empty();
        let mut chunks = 0;
        for start in (0..n).step_by(chunk.max(1)) {
            let end = (start + chunk).min(n);
            let part = if start == 0 && end == n {
                self.engine.clipped_gradients(&model, batch, &loss_fn)
            } else {
                self.engine
                    .clipped_gradients(&model, &batch.slice_examples(start, end), &loss_fn)
            };
            match part {
                Ok(p) => total.accumulate(p),
                Err(error) => return Err(Rejected { error, model }),
            }
            chunks += 1;
        }
        let stats = StepStats {
            batch_size: n,
            chunks,
            mean_loss: total.loss_sum() / n.max(1) as f64,
            method: total.method().clone(),
            per_example_norms: total.per_example_norms().to_vec(),
            max_grad_norm,
        };
        let model = self.dp.step(lr, model, total)?;
        self.last = Some(stats);
        Ok(model)
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
        let Some(planned) = self.planned_steps else {
            return self.epsilon();
        };
        let remaining = planned.saturating_sub(self.steps());
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

    /// Steps taken.
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

    /// Warnings raised by validation.
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
        Ok(PrivacyReport {
            noise_multiplier: self.noise_multiplier(),
            sample_rate: self.sampler.sample_rate(),
            steps: self.steps(),
            epsilon: self.epsilon()?,
            delta: self.delta,
            accountant: self.config.accountant,
            clipping: self.dp.clipping().clone(),
            sampler: "poisson".into(),
            seed: self.config.seed,
            secure: self.dp.is_secure(),
            dataset_size: self.sampler.dataset_size(),
            planned_steps: self.planned_steps,
            planned_epsilon: self
                .planned_steps
                .map(|_| self.planned_epsilon())
                .transpose()?,
            crate_version: env!("CARGO_PKG_VERSION").into(),
        })
    }
}
