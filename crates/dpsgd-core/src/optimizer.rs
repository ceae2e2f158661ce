//! The DP optimizer: noise, accounting and budget around any burn optimizer.
//!
//! # Privacy
//!
//! Each step releases `(Σ_i clip(∇_i) + N(0, σ²S²I)) / (qN)` where `S` is the
//! clipping policy's sensitivity, `q` the Poisson sampling rate and `N` the
//! dataset size (the *expected* batch size `qN`, not the actual one, so the
//! normalisation leaks nothing about the batch). Under add/remove neighbours
//! and Poisson sampling this is the subsampled Gaussian mechanism with noise
//! multiplier σ, recorded in the accountant once per step. Everything the
//! inner optimizer does afterwards is post-processing.

use crate::clipping::Clipping;
use crate::error::{Error, Result, invalid};
use crate::fault::MechanismFault;
use crate::gradients::ClippedGradients;
use crate::noise::NoiseSource;
use crate::params::trainable_params;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Tensor, TensorData};
use dpsgd_accountant::{Accountant, AccountantKind, AnyAccountant, Segment, checks};
use serde::{Deserialize, Serialize};

/// The privacy settings of a DP-SGD run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpSettings {
    /// σ: noise standard deviation divided by the clipping sensitivity.
    pub noise_multiplier: f64,
    /// The clipping policy.
    pub clipping: Clipping,
    /// q: Poisson sampling rate, from the sampler.
    pub sample_rate: f64,
    /// N: the number of examples in the private dataset.
    pub dataset_size: usize,
    /// Accounting method.
    pub accountant: AccountantKind,
    /// Optional budget (ε, δ): a step that would exceed it is refused.
    pub budget: Option<(f64, f64)>,
}

impl DpSettings {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for σ ≤ 0, q ∉ (0, 1], N = 0, q·N < 1, a noise
    /// standard deviation σ·C beyond f32, or an
    /// invalid budget.
    pub fn validate(&self) -> Result<()> {
        Error::check(checks::noise_multiplier(self.noise_multiplier))?;
        Error::check(checks::sample_rate(self.sample_rate))?;
        self.clipping.validate()?;
        if self.dataset_size == 0 {
            return Err(invalid("dataset_size", 0, "the dataset is empty"));
        }
        // q = B/N computed in floating point can give q·N = 1 − 2⁻⁵³ for a
        // batch of exactly one: that is one example, not fewer.
        if self.expected_batch_size() < 1.0 - 1e-12 {
            return Err(invalid(
                "sample_rate",
                self.sample_rate,
                format!(
                    "expected batch size q·N = {} is below one example",
                    self.expected_batch_size()
                ),
            ));
        }
        if let Clipping::Adaptive {
            count_noise_std, ..
        } = self.clipping
            && self
                .count_noise_multiplier()
                .is_some_and(|count| count <= self.noise_multiplier)
        {
            return Err(invalid(
                "count_noise_std",
                count_noise_std,
                format!(
                    "adaptive clipping needs σ_b > σ/2 = {} (the count's noise must leave some of σ for the gradient)",
                    self.noise_multiplier / 2.0
                ),
            ));
        }
        // The noise is drawn in f32: a standard deviation beyond it makes
        // every update infinite (σ = 1e300 once read as "lower the
        // learning rate").
        if self.noise_std() > f64::from(f32::MAX) {
            return Err(invalid(
                "noise_multiplier",
                format!("{:e}", self.noise_multiplier),
                format!(
                    "the noise's standard deviation σ·C = {:e} is beyond 32-bit floats ({:e}): every update would be infinite",
                    self.noise_std(),
                    f32::MAX
                ),
            ));
        }
        if let Some((eps, delta)) = self.budget {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(invalid(
                    "target_epsilon",
                    eps,
                    "must be a finite number > 0",
                ));
            }
            Error::check(checks::delta(delta))?;
        }
        Ok(())
    }

    /// `q·N`.
    pub fn expected_batch_size(&self) -> f64 {
        self.sample_rate * self.dataset_size as f64
    }

    /// The L2 sensitivity of the count that adaptive clipping releases:
    /// ½. The count is centred, `Σ_i (b_i − ½)` with `b_i ∈ {0, 1}`, so
    /// adding or removing one example moves it by exactly ½ (the uncentred
    /// `Σ_i b_i` would move by 1).
    pub const COUNT_SENSITIVITY: f64 = 0.5;

    /// The noise multiplier of the released count, `σ_b / ½ = 2σ_b`
    /// (`None` without adaptive clipping).
    pub fn count_noise_multiplier(&self) -> Option<f64> {
        match self.clipping {
            Clipping::Adaptive {
                count_noise_std, ..
            } => Some(count_noise_std / Self::COUNT_SENSITIVITY),
            _ => None,
        }
    }

    /// The noise multiplier of the gradient sum: σ, or with adaptive
    /// clipping `σ_Δ = (σ⁻² − (2σ_b)⁻²)^{−1/2}` (Andrew et al. 2021, Thm. 1).
    ///
    /// # Privacy
    ///
    /// A step of adaptive clipping releases the gradient sum (sensitivity
    /// C, noise σ_Δ·C) and the centred count (sensitivity ½, noise σ_b)
    /// from the same Poisson batch. Whitened, one example moves the pair by
    /// at most `√(σ_Δ⁻² + (2σ_b)⁻²) = 1/σ`: the pair is one Gaussian
    /// mechanism with multiplier σ, which is what the accountant records.
    pub fn gradient_noise_multiplier(&self) -> f64 {
        match self.count_noise_multiplier() {
            Some(count) => (self.noise_multiplier.powi(-2) - count.powi(-2)).powf(-0.5),
            None => self.noise_multiplier,
        }
    }

    /// Standard deviation of the noise added to the clipped sum: `σ_Δ·S`.
    pub fn noise_std(&self) -> f64 {
        self.gradient_noise_multiplier() * self.clipping.sensitivity()
    }
}

/// A step refused before any change: the error and the untouched model.
#[derive(Debug)]
pub struct Rejected<M> {
    /// Why.
    pub error: Error,
    /// The model, exactly as it was passed in.
    pub model: M,
}

impl<M> std::fmt::Display for Rejected<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<M: std::fmt::Debug> std::error::Error for Rejected<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<M> From<Rejected<M>> for Error {
    fn from(r: Rejected<M>) -> Self {
        r.error
    }
}

/// Wraps any burn optimizer (SGD with momentum, Adam, AdamW, ...): adds the
/// calibrated noise to a clipped gradient sum, steps the inner optimizer, and
/// records the step with the accountant.
///
/// Its state — accountant history, noise generator, step count — serialises
/// with [`DpOptimizer::state`] for checkpoints.
pub struct DpOptimizer {
    inner: ModuleOptimizer,
    settings: DpSettings,
    accountant: AnyAccountant,
    noise: NoiseSource,
    /// Further steps the budget allows at (σ, q) by the configured
    /// accountant: computed once when first needed (after construction or
    /// a restore), then counted down by each step. σ, q and the budget never
    /// change after construction, so the count stays exact.
    steps_left: Option<StepsLeft>,
    /// A test-only planted bug ([`crate::fault`]); never set in a build
    /// without the `fault-injection` feature.
    fault: Option<MechanismFault>,
    /// The noise a [`MechanismFault::ReusedNoise`] step will add again.
    reused_noise: Option<Vec<Vec<f32>>>,
}

/// What [`DpOptimizer::check_budget`] knows about the steps left.
#[derive(Debug, Clone, Copy)]
struct StepsLeft {
    /// Steps that still fit the budget.
    steps: u64,
    /// Whether `steps` is the largest such number; if not (a
    /// [`DpOptimizer::plan`]), the exact count is computed when they are used up.
    exact: bool,
}

/// The serialisable state of a [`DpOptimizer`] (without the inner
/// optimizer, whose record burn saves).
///
/// # Privacy
///
/// Not [`Clone`], and a secure noise source never travels in it: a state
/// restores at most one optimizer that continues a seeded stream, and
/// every optimizer restored from a secure state draws fresh noise (see
/// [`DpOptimizer::from_state`]).
///
/// ```compile_fail
/// fn shares<T: Clone>() {}
/// shares::<dpsgd_core::DpState>(); // one state cannot restore two twins
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct DpState {
    /// The settings.
    pub settings: DpSettings,
    /// The accountant with its history.
    pub accountant: AnyAccountant,
    /// The noise generator: a seeded one mid-stream; a secure one is
    /// re-keyed from the operating system on restore.
    pub noise: NoiseSource,
}

impl DpOptimizer {
    /// A DP optimizer around `inner` with noise from the operating system.
    ///
    /// # Errors
    ///
    /// As [`DpSettings::validate`].
    pub fn new(inner: ModuleOptimizer, settings: DpSettings) -> Result<Self> {
        Self::with_noise(inner, settings, NoiseSource::from_os())
    }

    /// A DP optimizer with a given noise source (e.g. seeded, for
    /// reproducible research runs that report themselves as not secure).
    ///
    /// # Errors
    ///
    /// As [`DpSettings::validate`].
    pub fn with_noise(
        inner: ModuleOptimizer,
        settings: DpSettings,
        noise: NoiseSource,
    ) -> Result<Self> {
        settings.validate()?;
        Ok(Self {
            inner,
            accountant: AnyAccountant::new(settings.accountant),
            settings,
            noise,
            steps_left: None,
            fault: None,
            reused_noise: None,
        })
    }

    /// **Test-only**: plants `fault` in this optimizer's mechanism (see
    /// [`crate::fault`]); the claim it reports stays the honest one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] in a build without the
    /// `fault-injection` feature, or for a fault outside its domain.
    #[doc(hidden)]
    pub fn plant_fault(&mut self, fault: MechanismFault) -> Result<()> {
        crate::fault::check(fault)?;
        self.fault = Some(fault);
        Ok(())
    }

    /// Restores an optimizer from a saved state (and the inner optimizer,
    /// restored by the caller from burn's record).
    ///
    /// # Privacy
    ///
    /// A secure (OS-seeded) noise source is re-keyed from the operating
    /// system: two optimizers restored from one state (or from two copies
    /// of one file) add independent noise, so releasing both models does
    /// not cancel it. A seeded source — reproducible, reported as not
    /// secure — resumes its stream exactly. The accountant's history is
    /// kept either way, so ε is that of the uninterrupted run.
    ///
    /// # Errors
    ///
    /// As [`DpSettings::validate`], or a history the accountant rejects.
    pub fn from_state(inner: ModuleOptimizer, state: DpState) -> Result<Self> {
        state.settings.validate()?;
        if state.accountant.kind() != state.settings.accountant {
            return Err(invalid(
                "accountant",
                state.accountant.kind(),
                format!("the settings name {}", state.settings.accountant),
            ));
        }
        let noise = if state.noise.is_secure() {
            NoiseSource::from_os()
        } else {
            state.noise
        };
        Ok(Self {
            inner,
            settings: state.settings,
            accountant: state.accountant,
            noise,
            // The history came from outside: count the steps left afresh.
            steps_left: None,
            fault: None,
            reused_noise: None,
        })
    }

    /// The serialisable state. A seeded noise source is saved where it
    /// stands; a secure one is not saved at all (the state holds a fresh
    /// one, and [`DpOptimizer::from_state`] re-keys it again).
    pub fn state(&self) -> DpState {
        DpState {
            settings: self.settings.clone(),
            accountant: self.accountant.clone(),
            noise: self.noise.successor(),
        }
    }

    /// The inner optimizer (for its record).
    pub fn inner(&self) -> &ModuleOptimizer {
        &self.inner
    }

    /// The settings.
    pub fn settings(&self) -> &DpSettings {
        &self.settings
    }

    /// The accountant.
    pub fn accountant(&self) -> &AnyAccountant {
        &self.accountant
    }

    /// Whether the noise comes from an OS-seeded generator.
    pub fn is_secure(&self) -> bool {
        self.noise.is_secure()
    }

    /// Records `steps` further steps at this optimizer's (σ, q) that were
    /// taken, and whose results left the process, but were then discarded:
    /// a run resumed from a checkpoint redoes the steps after it, and where
    /// the discarded ones were already seen by someone (data-parallel
    /// workers in other processes see every step's parameters) they are
    /// releases of the mechanism all the same, which ε must cover
    /// (composition counts every release, kept or not). Zero records
    /// nothing. The budget's count of steps left is recomputed.
    ///
    /// # Errors
    ///
    /// From the accountant (an invalid σ or q; nothing is recorded then).
    pub fn charge_discarded_steps(&mut self, steps: u64) -> Result<()> {
        if steps == 0 {
            return Ok(());
        }
        self.accountant.record(
            self.settings.noise_multiplier,
            self.settings.sample_rate,
            steps,
        )?;
        self.steps_left = None;
        Ok(())
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.accountant.history().steps()
    }

    /// ε spent so far at δ.
    ///
    /// # Errors
    ///
    /// Invalid δ.
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        Ok(self.accountant.epsilon(delta)?)
    }

    fn one_step(&self) -> Segment {
        Segment {
            noise_multiplier: self.settings.noise_multiplier,
            sample_rate: self.settings.sample_rate,
            steps: 1,
        }
    }

    /// Checks that one more step fits the budget, by the configured
    /// accountant only.
    ///
    /// O(1) amortised: the number of further steps the budget allows at
    /// (σ, q) is computed once with
    /// [`Accountant::max_additional_steps`] and then counted down by
    /// [`DpOptimizer::privatize`]; it is recomputed only after the history
    /// came from outside ([`DpOptimizer::from_state`]).
    ///
    /// # Errors
    ///
    /// [`Error::BudgetExhausted`] when it does not fit; an accountant error.
    pub fn check_budget(&mut self) -> Result<()> {
        let Some((budget, delta)) = self.settings.budget else {
            return Ok(());
        };
        let left = match self.steps_left {
            Some(left) if left.steps > 0 || left.exact => left.steps,
            _ => {
                let steps = self.accountant.max_additional_steps(
                    self.settings.noise_multiplier,
                    self.settings.sample_rate,
                    delta,
                    budget,
                )?;
                self.steps_left = Some(StepsLeft { steps, exact: true });
                steps
            }
        };
        if left == 0 {
            return Err(Error::BudgetExhausted {
                epsilon_spent: self.accountant.epsilon(delta)?,
                // A step this accountant cannot even evaluate is over budget.
                epsilon_after: self
                    .accountant
                    .epsilon_after(self.one_step(), delta)
                    .unwrap_or(f64::INFINITY),
                budget,
                delta,
            });
        }
        Ok(())
    }

    /// Checks once, with one ε evaluation of the configured accountant,
    /// that `steps` further steps at (σ, q) fit the budget (e.g. the steps
    /// σ was calibrated for). If they do, [`DpOptimizer::check_budget`]
    /// counts them down without asking the accountant again, and computes
    /// the exact number left only once they are used up. Returns whether
    /// they fit (if not, nothing changes). Without a budget: `Ok(true)`.
    ///
    /// # Errors
    ///
    /// An accountant error other than "ε cannot be computed" (which counts
    /// as not fitting).
    pub fn plan(&mut self, steps: u64) -> Result<bool> {
        let Some((budget, delta)) = self.settings.budget else {
            return Ok(true);
        };
        if steps == 0 {
            return Ok(true);
        }
        let extra = Segment::new(
            self.settings.noise_multiplier,
            self.settings.sample_rate,
            steps,
        )?;
        let fits = match self.accountant.epsilon_after(extra, delta) {
            Ok(epsilon) => epsilon <= budget,
            Err(dpsgd_accountant::Error::Unbounded(_) | dpsgd_accountant::Error::OutOfRange(_)) => {
                false
            }
            Err(e) => return Err(e.into()),
        };
        if fits && self.steps_left.is_none_or(|left| !left.exact) {
            self.steps_left = Some(StepsLeft {
                steps,
                exact: false,
            });
        }
        Ok(fits)
    }

    /// Further steps the budget allows (`None` without a budget, or before
    /// the first check).
    /// (A lower bound after [`DpOptimizer::plan`].)
    pub fn steps_left(&self) -> Option<u64> {
        self.settings.budget.and(self.steps_left).map(|l| l.steps)
    }

    /// Turns a clipped gradient sum into the noisy mean gradient and records
    /// the step: the private release. The model is only read (for parameter
    /// ids and shapes).
    ///
    /// # Errors
    ///
    /// [`Error::ClippingMismatch`] when `clipped` was clipped under another
    /// policy than [`DpOptimizer::clipping`]; [`Error::BudgetExhausted`].
    /// Nothing is recorded then.
    pub fn privatize<M: Module>(
        &mut self,
        model: &M,
        mut clipped: ClippedGradients,
    ) -> Result<GradientsParams> {
        if clipped.clipping() != &self.settings.clipping {
            return Err(Error::ClippingMismatch {
                expected: format!("{:?}", self.settings.clipping),
                found: format!("{:?}", clipped.clipping()),
            });
        }
        self.check_budget()?;
        let parts: Vec<usize> = trainable_params(model).iter().map(|p| p.numel()).collect();
        let std = self.settings.noise_std() as f32;
        let mut noise = self.noise.gaussian_parts(&parts, std);
        match self.fault {
            Some(MechanismFault::NoiseScale(s)) => {
                noise.iter_mut().flatten().for_each(|x| *x *= s as f32)
            }
            Some(MechanismFault::ReusedNoise) => match self.reused_noise.take() {
                Some(previous) => noise = previous,
                None => self.reused_noise = Some(noise.clone()),
            },
            _ => {}
        }
        self.adapt_clipping(clipped.per_example_norms(), clipped.dropped());
        let mut visitor = NoisyMean {
            clipped: &mut clipped,
            seen: std::collections::HashSet::new(),
            noise: noise.into_iter(),
            scale: (1.0 / self.settings.expected_batch_size()) as f32,
            grads: GradientsParams::new(),
        };
        model.visit(&mut visitor);
        let grads = visitor.grads;
        // The next step needs as much noise again: draw it on a background
        // thread while the inner optimizer and the next step compute, when
        // that saves time (started only now, so that two steps' noise are
        // never held at once).
        self.noise
            .prepare_next(&parts, self.settings.noise_std() as f32);
        self.accountant
            .record(self.settings.noise_multiplier, self.settings.sample_rate, 1)?;
        if let Some(left) = &mut self.steps_left {
            left.steps = left.steps.saturating_sub(1);
        }
        Ok(grads)
    }

    /// Adaptive clipping's update of C from the noisy unclipped fraction.
    ///
    /// Releases the centred count `Σ_i (b_i − ½) + N(0, σ_b²)` with
    /// `b_i = [‖∇_i‖ ≤ C]` over the whole batch (a dropped example has
    /// `b_i = 0`), and estimates the fraction as `released/(qN) + ½` —
    /// divided by the expected batch size, never the actual one.
    fn adapt_clipping(&mut self, norms: &[f32], dropped: usize) {
        let expected = self.settings.expected_batch_size();
        if let Clipping::Adaptive {
            max_grad_norm,
            target_quantile,
            learning_rate,
            count_noise_std,
        } = &mut self.settings.clipping
        {
            let unclipped = norms
                .iter()
                .filter(|&&n| f64::from(n) <= *max_grad_norm)
                .count() as f64;
            let batch = (norms.len() + dropped) as f64;
            let centred = unclipped - DpSettings::COUNT_SENSITIVITY * batch;
            let noise = f64::from(self.noise.gaussian(1, *count_noise_std as f32)[0]);
            let fraction = (centred + noise) / expected + 0.5;
            *max_grad_norm *= (-*learning_rate * (fraction - *target_quantile)).exp();
        }
    }

    /// The clipping policy in force for the next step (adaptive clipping
    /// changes C after every step: give this to the gradient engine; a sum
    /// clipped under any other policy is refused).
    pub fn clipping(&self) -> &Clipping {
        &self.settings.clipping
    }

    /// One DP-SGD step: [`privatize`](Self::privatize) then the inner
    /// optimizer's step at learning rate `lr`.
    ///
    /// # Errors
    ///
    /// [`Rejected`] with the model untouched when the budget is exhausted.
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        model: M,
        clipped: ClippedGradients,
    ) -> Result<M, Rejected<M>> {
        self.step_observed(lr, model, clipped, |_, _| {})
    }

    /// [`DpOptimizer::step`], with `observe` shown the released noisy mean
    /// gradient (and the model it is computed for) before the inner
    /// optimizer uses it: white-box auditing observes what the mechanism
    /// releases. `observe` is not called when the step is refused.
    ///
    /// # Errors
    ///
    /// As [`DpOptimizer::step`].
    pub fn step_observed<M: Module>(
        &mut self,
        lr: f64,
        model: M,
        clipped: ClippedGradients,
        observe: impl FnOnce(&M, &GradientsParams),
    ) -> Result<M, Rejected<M>> {
        match self.privatize(&model, clipped) {
            Ok(grads) => {
                observe(&model, &grads);
                Ok(self.inner.step(lr, model, grads))
            }
            Err(error) => Err(Rejected { error, model }),
        }
    }
}

struct NoisyMean<'a> {
    clipped: &'a mut ClippedGradients,
    /// The ids released so far: a parameter held by several fields (tied
    /// weights) is released once, at its first field, as
    /// [`trainable_params`] lists it.
    seen: std::collections::HashSet<burn::module::ParamId>,
    /// One noise vector per trainable parameter, in visiting order.
    noise: std::vec::IntoIter<Vec<f32>>,
    scale: f32,
    grads: GradientsParams,
}

impl ModuleVisitor for NoisyMean<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !crate::params::is_trainable(&value) || !self.seen.insert(param.id) {
            return;
        }
        let dims = value.dims();
        let numel: usize = dims.iter().product();
        let device = value.inner().device();
        let Some(part) = self.noise.next() else {
            return; // unreachable: one part per trainable parameter
        };
        debug_assert_eq!(part.len(), numel);
        let noise = Tensor::<1>::from_data(TensorData::new(part, [numel]), &device);
        let noisy = match self.clipped.take(&param.id) {
            Some(sum) => sum + noise,
            None => noise,
        };
        self.grads
            .register::<D>(param.id, noisy.mul_scalar(self.scale).reshape(dims));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(clipping: Clipping) -> DpSettings {
        DpSettings {
            noise_multiplier: 1.0,
            clipping,
            sample_rate: 0.01,
            dataset_size: 10_000,
            accountant: AccountantKind::Rdp,
            budget: None,
        }
    }

    #[test]
    fn should_accept_a_batch_of_one_whatever_the_rounding_of_q() {
        // 1/49 · 49 = 1 − 2⁻⁵³ in f64: one example, not fewer.
        let one = DpSettings {
            sample_rate: 1.0 / 49.0,
            dataset_size: 49,
            ..settings(Clipping::flat(1.0).unwrap())
        };
        assert!(one.expected_batch_size() < 1.0);
        one.validate().unwrap();
        // Half an example is still refused.
        let half = DpSettings {
            sample_rate: 0.5 / 49.0,
            ..one
        };
        assert!(half.validate().is_err());
    }

    #[test]
    fn should_split_sigma_between_gradient_and_count() {
        // σ = 1, σ_b = 2: the count's multiplier is 2σ_b = 4 and the
        // gradient's σ_Δ = (1 − 4⁻²)^(−1/2) = 4/√15.
        let adaptive = settings(Clipping::adaptive(1.0, 0.5, 2.0).unwrap());
        adaptive.validate().unwrap();
        assert_eq!(adaptive.count_noise_multiplier(), Some(4.0));
        let expected = 4.0 / 15f64.sqrt();
        assert!((adaptive.gradient_noise_multiplier() - expected).abs() < 1e-12);
        let flat = settings(Clipping::flat(1.0).unwrap());
        assert_eq!(flat.count_noise_multiplier(), None);
        assert_eq!(flat.gradient_noise_multiplier(), 1.0);
    }

    /// One optimizer's noisy gradient of a 1000-scalar parameter on an
    /// empty batch: its noise, scaled.
    fn noise_of(dp: &mut DpOptimizer) -> Vec<f32> {
        let device = burn::tensor::Device::flex();
        let param = Param::from_tensor(Tensor::<1>::zeros([1000], &device));
        let empty = ClippedGradients::empty(dp.clipping().clone());
        let grads = dp.privatize(&param, empty).unwrap();
        grads
            .get::<1>(param.id)
            .unwrap()
            .into_data()
            .iter::<f32>()
            .collect()
    }

    fn sgd() -> ModuleOptimizer {
        burn::optim::SgdConfig::new().init()
    }

    #[test]
    fn should_draw_fresh_noise_in_every_optimizer_restored_from_a_secure_state() {
        let mut original = DpOptimizer::new(sgd(), settings(Clipping::flat(1.0).unwrap())).unwrap();
        noise_of(&mut original);
        // One state restored twice, in memory and through a file's JSON.
        let json = serde_json::to_string(&original.state()).unwrap();
        let restore = || {
            let state: DpState = serde_json::from_str(&json).unwrap();
            DpOptimizer::from_state(sgd(), state).unwrap()
        };
        let (mut a, mut b) = (restore(), restore());
        let mut c = DpOptimizer::from_state(sgd(), original.state()).unwrap();
        assert!(a.is_secure() && b.is_secure() && c.is_secure());
        assert_eq!((a.steps(), b.steps(), c.steps()), (1, 1, 1));
        let draws = [
            noise_of(&mut original),
            noise_of(&mut a),
            noise_of(&mut b),
            noise_of(&mut c),
        ];
        for i in 0..draws.len() {
            for j in i + 1..draws.len() {
                assert_ne!(draws[i], draws[j], "optimizers {i} and {j} share noise");
            }
        }
    }

    #[test]
    fn should_resume_a_seeded_optimizer_exactly() {
        let s = settings(Clipping::flat(1.0).unwrap());
        let mut straight =
            DpOptimizer::with_noise(sgd(), s.clone(), NoiseSource::seeded(8)).unwrap();
        let mut saved = DpOptimizer::with_noise(sgd(), s, NoiseSource::seeded(8)).unwrap();
        assert_eq!(noise_of(&mut straight), noise_of(&mut saved));
        // Saved between steps (were a draw ahead pending, the state would
        // stand before it: `noise::tests`).
        let json = serde_json::to_string(&saved.state()).unwrap();
        let mut resumed =
            DpOptimizer::from_state(sgd(), serde_json::from_str(&json).unwrap()).unwrap();
        assert!(!resumed.is_secure());
        assert_eq!(resumed.steps(), 1);
        for _ in 0..2 {
            assert_eq!(noise_of(&mut resumed), noise_of(&mut straight));
        }
        // The in-memory state resumes the same stream too.
        let mut again = DpOptimizer::from_state(sgd(), saved.state()).unwrap();
        assert_eq!(noise_of(&mut again), noise_of(&mut saved));
    }

    #[test]
    fn should_refuse_a_count_noise_that_leaves_nothing_for_the_gradient() {
        // 2σ_b = σ: σ_Δ would be infinite.
        let s = settings(Clipping::adaptive(1.0, 0.5, 0.5).unwrap());
        assert!(s.validate().is_err());
    }
}
