//! Privacy loss distributions (PLD): tight (ε, δ) accounting by numerical
//! composition.
//!
//! # Method
//!
//! The privacy loss of one step, `L = ln(P(X)/Q(X))` with `X ~ P`, is
//! discretised **pessimistically** on a grid of spacing `Δ`
//! ([`PldConfig::value_discretization`]): the mass of every interval
//! between two grid points is split between them so that the mean of
//! `1 − e^{ε−L}` is kept or raised for every ε (the chord of a convex
//! function lies above it: "connect the dots", Doroshenko et al. 2022;
//! Meiser & Mohammadi 2018 and Koskela et al. 2021 round each interval up),
//! the far upper tail goes to an "infinite loss" atom and the far lower tail
//! to the lowest bucket. The discretisation can only increase δ(ε), so
//! every reported ε is an upper bound on the true one.
//!
//! `T` steps compose by convolution, computed by FFT: up to 10⁶ steps the
//! transform of the single-step PMF is raised to the power `T` pointwise
//! and transformed back; more steps are composed from pieces of at most
//! 10⁶ by repeated squaring (one power of 10⁷ amplified the transform's
//! rounding to ~1e-9 in δ, enough to give an ε below the true one at small
//! δ). Each window is chosen so that the mass outside it is below
//! [`PldConfig::tail_mass_truncation`]; that mass is added to the
//! infinite-loss atom (pessimistic again). Segments with different (σ, q)
//! are composed by FFT convolution.
//!
//! Finally `δ(ε) = p_∞ + Σ_k p_k (1 − e^{ε − kΔ})₊`, and ε(δ) is its exact
//! inverse on the discrete distribution.
//!
//! # Regime
//!
//! The grid must resolve one step's privacy loss. Its standard deviation is
//! about `q·√(e^{1/σ²} − 1)` ([`loss_sd`]; ≈ `q/σ` for large σ), and rounding
//! each step's loss to a grid of spacing `Δ` adds up to `Δ²/4` of variance
//! per step. At `T` ≥ 1e6 steps the σ a target needs grows like `q√T`, one
//! step's loss shrinks below `Δ = 1e-4`, and the composed distribution was
//! far wider than the true one: at `T = 1e8`, `q = 0.01`, σ = 404.5, δ = 1e-5
//! the fixed grid gave ε = 1.75 where RDP gives 1.00 and the truth is ≈ 0.915.
//! [`PldConfig::refined_for`] therefore makes the spacing at most
//! [`SPACING_PER_LOSS_SD`] of one step's loss deviation (ε = 0.916 there);
//! every entry point that answers for a run ([`epsilon`], the
//! [`PldAccountant`](crate::PldAccountant), PLD calibration) uses it, while
//! [`ComposedPld::subsampled_gaussian`] takes its grid as given (as
//! dp-accounting does). The refined answer converges to the true ε from
//! above as the grid is refined (Doroshenko et al. 2022, connect-the-dots).
//!
//! PLD refuses, with [`Error::OutOfRange`](crate::Error::OutOfRange) naming
//! the reason, where its `f64` arithmetic cannot resolve the answer — RDP
//! ([`crate::rdp`]) answers in all of these:
//!
//! * σ above [`MAX_NOISE_MULTIPLIER`] (e.g. σ = 1e300, where σ² overflows
//!   and the loss was NaN): ε is ≈ 0 there, and RDP gives it. (Between
//!   σ ≈ 1e7·q and that, PLD answers on its configured grid: sound, ε ≈ 0,
//!   possibly looser than RDP — see [`MIN_LOSS_SD`].)
//! * δ at or below the mass the discretisation sets aside at infinite loss
//!   (the truncated tails, [`PldConfig::tail_mass_truncation`] per step and
//!   per composition, ≈ 1e-15 to 1e-8 by default): δ = 1e-300 cannot be
//!   resolved by a distribution computed in `f64` by FFT, whose rounding is
//!   about 1e-16 of the total mass per grid point;
//! * grids too large to hold (σ far too small for `Δ`, or very many steps).
//!
//! Not charged to δ: the FFT's own rounding, a relative ~`T`·1e-16 of each
//! frequency of `z^T`. At `T = 1e8`, δ = 1e-5 composing directly and as 100
//! compositions of 1e6 steps (rounding 100× smaller) agree to 2e-5 in ε,
//! far inside the grid's pessimism (ε = 0.9160 against ≈ 0.9150 on finer
//! grids). A worst-case charge (by Parseval) was tried and is too crude: it
//! refuses single-step runs at δ = 1e-20 that are exact.
//!
//! # Privacy
//!
//! Add/remove neighbours: the "remove" pair `(P, Q) = ((1−q)N(0,σ²) +
//! qN(1,σ²), N(0,σ²))` and the "add" pair (the same, swapped) are composed
//! separately and δ(ε) is the larger of the two, as in Google's dp-accounting.

mod gaussian;
mod pmf;

pub use pmf::Pmf;

use crate::error::{Result, check_noise_multiplier, check_sample_rate, invalid};
use serde::{Deserialize, Serialize};

/// Discretisation settings of the PLD accountant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PldConfig {
    /// Grid spacing `Δ` of privacy-loss values. Smaller is tighter and
    /// slower; the ε overestimate from discretisation is at most about
    /// `steps · Δ` in the worst case and far less in practice.
    /// Default `1e-4` (as dp-accounting).
    pub value_discretization: f64,
    /// Probability mass that may be dropped from the tails, in total, at each
    /// discretisation and composition; it is charged to δ. Default `1e-15`.
    pub tail_mass_truncation: f64,
    /// Most grid points a distribution may hold, one step's or a
    /// composition's (default 2²⁵ ≈ 3.4e7, 256 MiB of f64). A run that needs
    /// more — σ far too small for the grid, or very many steps — gets
    /// [`Error::OutOfRange`](crate::Error::OutOfRange) at once, before
    /// anything is allocated, instead of minutes of work and gigabytes.
    #[serde(default = "default_max_grid_points")]
    pub max_grid_points: usize,
}

/// The grid spacing [`PldConfig::refined_for`] allows, as a fraction of one
/// step's privacy-loss standard deviation ([`loss_sd`]). At 0.1 the ε of
/// `T = 1e8` steps (q = 0.01, σ = 404.5, δ = 1e-5) is within 0.1% of its
/// limit on finer grids; each halving costs twice the time.
pub const SPACING_PER_LOSS_SD: f64 = 0.1;

/// The smallest one-step privacy-loss standard deviation (about σ ≤ 1e7·q)
/// that [`PldConfig::refined_for`] refines the grid for. Below it the
/// interval masses of the two Gaussians agree to nearly `f64` rounding:
/// a finer grid would only resolve rounding, so the configured grid answers
/// (sound; ε is then close to 0 and may be looser than RDP's).
pub const MIN_LOSS_SD: f64 = 1e-7;

/// The largest noise multiplier PLD computes with: σ² overflows `f64` near
/// 1.3e154. Above it PLD refuses ([`Error::OutOfRange`](crate::Error::OutOfRange));
/// one step's privacy loss is below 1e-150 and RDP answers ε ≈ 0.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e150;

/// The standard deviation of one step's privacy loss, `q·√(e^{1/σ²} − 1)`
/// (the square root of the χ² divergence between the mixture and
/// `N(0, σ²)`): about `q/σ` for large σ, `+∞` where `1/σ²` overflows `e^x`.
pub fn loss_sd(q: f64, sigma: f64) -> f64 {
    let inv = 1.0 / sigma;
    q * (inv * inv).exp_m1().sqrt()
}

fn default_max_grid_points() -> usize {
    1 << 25
}

impl Default for PldConfig {
    fn default() -> Self {
        Self {
            value_discretization: 1e-4,
            tail_mass_truncation: 1e-15,
            max_grid_points: default_max_grid_points(),
        }
    }
}

impl PldConfig {
    /// These settings with the spacing refined, where needed, to at most
    /// [`SPACING_PER_LOSS_SD`] of every listed run's one-step privacy-loss
    /// standard deviation (`(q, σ)` pairs); one grid for all, so that the
    /// runs compose. Runs whose deviation is below [`MIN_LOSS_SD`] (which
    /// PLD refuses anyway) or invalid do not refine it.
    ///
    /// A finer grid is never less sound, only slower: it is what keeps PLD
    /// tighter than RDP at 1e7 steps and more (see the module docs).
    pub fn refined_for(&self, runs: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut d = self.value_discretization;
        for (q, sigma) in runs {
            let sd = loss_sd(q, sigma);
            if sd.is_finite() && sd >= MIN_LOSS_SD {
                d = d.min(SPACING_PER_LOSS_SD * sd);
            }
        }
        Self {
            value_discretization: d,
            ..*self
        }
    }

    /// Checks both settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when
    /// `value_discretization ∉ (0, 1]`, `tail_mass_truncation ∉ [0, 1e-3]` or
    /// `max_grid_points < 2`.
    pub fn validate(&self) -> Result<()> {
        let d = self.value_discretization;
        if !(d.is_finite() && d > 0.0 && d <= 1.0) {
            return Err(invalid("value_discretization", d, "must be in (0, 1]"));
        }
        let t = self.tail_mass_truncation;
        if !(t.is_finite() && (0.0..=1e-3).contains(&t)) {
            return Err(invalid("tail_mass_truncation", t, "must be in [0, 1e-3]"));
        }
        if self.max_grid_points < 2 {
            return Err(invalid(
                "max_grid_points",
                self.max_grid_points,
                "must be at least 2",
            ));
        }
        Ok(())
    }
}

/// The two privacy-loss distributions of an add/remove-neighbour run.
#[derive(Debug, Clone)]
pub struct ComposedPld {
    remove: Pmf,
    add: Pmf,
    /// [`PldConfig::max_grid_points`] of the settings it was built with.
    max_grid_points: usize,
}

impl ComposedPld {
    /// The PLDs of `steps` steps of the Poisson-subsampled Gaussian mechanism.
    ///
    /// # Errors
    ///
    /// Invalid `q`, `σ` or config; [`Error::Unbounded`](crate::Error::Unbounded)
    /// when the discretised distribution would not fit in memory (σ far too
    /// small for the chosen `value_discretization`).
    pub fn subsampled_gaussian(q: f64, sigma: f64, steps: u64, config: &PldConfig) -> Result<Self> {
        check_sample_rate(q)?;
        check_noise_multiplier(sigma)?;
        config.validate()?;
        // The two directions are independent: one thread each.
        let one_direction = |direction| -> Result<Pmf> {
            gaussian::discretise(q, sigma, direction, config)?.self_compose(
                steps,
                config.tail_mass_truncation,
                config.max_grid_points,
            )
        };
        let (remove, add) = std::thread::scope(|scope| {
            let add = scope.spawn(|| one_direction(gaussian::Direction::Add));
            let remove = one_direction(gaussian::Direction::Remove);
            (remove, add.join())
        });
        let add = add.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok(Self {
            remove: remove?,
            add,
            max_grid_points: config.max_grid_points,
        })
    }

    /// [`subsampled_gaussian`](Self::subsampled_gaussian) on `config`
    /// [refined for the run](PldConfig::refined_for), or on `config` itself
    /// where the refined grid is too large to hold (sound, looser).
    ///
    /// # Errors
    ///
    /// As [`subsampled_gaussian`](Self::subsampled_gaussian) on `config`.
    pub fn for_run(q: f64, sigma: f64, steps: u64, config: &PldConfig) -> Result<Self> {
        let refined = config.refined_for([(q, sigma)]);
        match Self::subsampled_gaussian(q, sigma, steps, &refined) {
            Err(crate::Error::OutOfRange(_)) if refined != *config => {
                Self::subsampled_gaussian(q, sigma, steps, config)
            }
            other => other,
        }
    }

    /// `Ok` when one step at (q, σ) fits this discretisation's grid; the
    /// [`Error::OutOfRange`](crate::Error::OutOfRange) that
    /// [`subsampled_gaussian`](Self::subsampled_gaussian) would return
    /// otherwise — without building anything (O(1)).
    ///
    /// # Errors
    ///
    /// Invalid `q`, `σ` or config, or a grid too large.
    pub fn check_representable(q: f64, sigma: f64, config: &PldConfig) -> Result<()> {
        check_sample_rate(q)?;
        check_noise_multiplier(sigma)?;
        config.validate()?;
        for direction in [gaussian::Direction::Remove, gaussian::Direction::Add] {
            gaussian::grid(q, sigma, direction, config)?;
        }
        Ok(())
    }

    /// The PLDs of running `self` and then `other` (adaptive composition).
    ///
    /// # Errors
    ///
    /// [`Error::Unbounded`](crate::Error::Unbounded) when the result would not
    /// fit in memory.
    pub fn compose(&self, other: &Self, tail_mass_truncation: f64) -> Result<Self> {
        let max = self.max_grid_points.min(other.max_grid_points);
        Ok(Self {
            remove: self
                .remove
                .compose(&other.remove, tail_mass_truncation, max)?,
            add: self.add.compose(&other.add, tail_mass_truncation, max)?,
            max_grid_points: max,
        })
    }

    /// The identity of composition (no steps taken: ε = 0 for every δ).
    pub fn identity(config: &PldConfig) -> Self {
        Self {
            remove: Pmf::identity(config.value_discretization),
            add: Pmf::identity(config.value_discretization),
            max_grid_points: config.max_grid_points,
        }
    }

    /// δ at `epsilon`: the larger of the add and remove directions.
    ///
    /// # Errors
    ///
    /// Invalid ε.
    pub fn delta(&self, epsilon: f64) -> Result<f64> {
        crate::error::check_epsilon(epsilon)?;
        let d = self.remove.delta(epsilon).max(self.add.delta(epsilon));
        Ok(crate::math::round_up(d.min(1.0)))
    }

    /// ε at `delta`: the smallest ε whose δ(ε) ≤ `delta` in both directions.
    ///
    /// # Errors
    ///
    /// Invalid δ; [`Error::OutOfRange`](crate::Error::OutOfRange) when δ is
    /// not above the mass that truncation set aside at infinite loss (the
    /// true loss is finite, so this is PLD's resolution, not an unbounded
    /// loss).
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        crate::error::check_delta(delta)?;
        // The subsampled Gaussian's privacy loss is finite everywhere: all of
        // the mass at +∞ is what truncation and rounding set aside, so δ at
        // or below it is beyond PLD's resolution, not an unbounded loss.
        let set_aside = self.remove.infinity_mass().max(self.add.infinity_mass());
        if set_aside >= delta {
            return Err(crate::Error::OutOfRange(format!(
                "δ = {delta:e} is below what PLD resolves: its truncated tails and \
                 rounding set aside {set_aside:.3e} of probability (tail_mass_truncation \
                 per step and composition); use RDP, which answers for any δ > 0"
            )));
        }
        let e = self.remove.epsilon(delta)?.max(self.add.epsilon(delta)?);
        Ok(crate::math::round_up(e))
    }
}

/// ε of `steps` steps of the Poisson-subsampled Gaussian mechanism by PLD with
/// the default discretisation, refined for the run
/// ([`PldConfig::refined_for`]); where the refined grid is too large to
/// hold, the default grid answers (sound, looser).
///
/// # Errors
///
/// As [`ComposedPld::subsampled_gaussian`] and [`ComposedPld::epsilon`]:
/// [`Error::OutOfRange`](crate::Error::OutOfRange) outside PLD's regime (see
/// the module docs), where RDP answers.
///
/// # Examples
///
/// ```
/// // Tighter than RDP on a typical DP-SGD run (RDP gives ≈ 0.724 here).
/// let eps = dpsgd_accountant::pld::epsilon(150.0 / 60000.0, 1.3, 6000, 1e-5)?;
/// assert!(eps < 0.70 && eps > 0.5);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<f64> {
    crate::error::check_delta(delta)?;
    ComposedPld::for_run(q, sigma, steps, &PldConfig::default())?.epsilon(delta)
}
