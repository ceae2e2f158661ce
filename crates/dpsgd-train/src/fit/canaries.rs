//! White-box **gradient canaries in a real training run** (issue 28,
//! item 3): Dirac gradient canaries (Nasr et al. 2023; Steinke, Nasr &
//! Jagielski 2023, §6) planted in the run [`crate::train_model`] would do
//! with the same settings — the same loop, sampler, engine, clipping
//! policy, virtual batches, data-parallel workers, MIST parts, defences,
//! σ, q and T — so that a bug in any of those paths reaches the canaries.
//!
//! # What is planted
//!
//! Canary `j` of `m` is a *slot*: record `N + j` of a data set of `N + m`
//! records (the run's N, and so its q = B/(N + m), count the slots; the
//! claim audited is that run's own ε). Its per-example gradient is
//! `M·e_{k_j}`: a Dirac vector on a coordinate `k_j` of the model's
//! trainable parameters of its own — the `m` *quietest* coordinates, where
//! the real records' mean gradient at the start is smallest
//! (one pass over the training set at θ₀; ties in an order drawn from the seed),
//! so that what is released there is mostly noise — of norm `M = 1000·S`
//! (S the policy's sensitivity at the start), so the run's clipping always
//! cuts it to its full budget. A canary that is left out
//! (probability ½, [`GradientCanaries::included`]) keeps its slot with the
//! zero gradient — a removed record to the engine, in no norm and no sum
//! ([`GradientCanary::zero`]): N does not depend on the coins.
//!
//! # What the auditor observes, and its score
//!
//! * [`CanaryView::AllSteps`]: every step's released noisy mean gradient
//!   at the `m` coordinates ([`dpsgd_burn::PrivacyEngine::observe_releases`]:
//!   what the mechanism releases, from which every intermediate model is
//!   computed, so at least as much as the models themselves). At step
//!   `t`, coordinate `k_j` holds `(b_tj·c_t + ξ_tj + r_tj)/(qN)` with
//!   `b_tj` whether the canary was sampled (never, when left out), `c_t`
//!   its clipped norm, `ξ ~ N(0, s_t²)` the noise and `r_tj` the real
//!   records' clipped gradients there. Standardised by the noise *as
//!   measured* across the `m` coordinates (a robust spread: a mechanism
//!   adding less noise than it claims shows as much as it leaks), and
//!   prewhitened against the previous step with the step-to-step
//!   correlation measured across them (noise carried over cancels out),
//!   `z_tj ~ N(μ_t·b_tj, 1)` with `μ_t = c_t/s_t` (`1/σ_Δ` under flat or
//!   adaptive clipping), ignoring `r`. The score is the log-likelihood
//!   ratio of "included" against "left out" under Poisson sampling,
//!   `Σ_t ln(1 − q + q·exp(μ_t z_tj − μ_t²/2))` — the most powerful test
//!   of one canary's inclusion under that model (Neyman–Pearson). The
//!   same releases feed the [`NoiseCheck`].
//! * [`CanaryView::Final`]: only the released model. The score is how far
//!   the canary's coordinate moved against its gradient, `θ_0 − θ_T`.
//!
//! Any score computed from what the auditor observes keeps the one-run
//! bound valid: the model above only decides how powerful it is.
//!
//! Under MIST each sub-model has its own engine over its own part (the
//! slots are partitioned like records); the all-steps score of a canary
//! adds up the releases of its own part's engine, the one that can sample
//! it.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use dpsgd_burn::canary::{CanaryRows, GradientCanary, WithCanaries};
use dpsgd_burn::{ExampleBatch, ReleasedCoordinates};
use dpsgd_core::fault::MechanismFault;
use dpsgd_core::{Clipping, layer_groups, trainable_params};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use std::sync::Arc;

use crate::error::TrainError;

/// What the white-box auditor observes of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryView {
    /// Every step's released noisy gradient (every intermediate model):
    /// the strongest white-box threat model (Nasr et al. 2023).
    #[default]
    AllSteps,
    /// The final released model only.
    Final,
}

impl std::str::FromStr for CanaryView {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all-steps" => Ok(Self::AllSteps),
            "final" => Ok(Self::Final),
            _ => Err(format!(
                "`{s}` is not a canary view (expected all-steps or final)"
            )),
        }
    }
}

impl std::fmt::Display for CanaryView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AllSteps => "all-steps",
            Self::Final => "final",
        })
    }
}

/// Gradient canaries to plant in a training run.
#[derive(Debug, Clone)]
pub struct GradientCanaries {
    /// Whether each canary is in the data set (`m` = its length, at least
    /// 1); drawn by the caller, independently of everything else.
    pub included: Vec<bool>,
    /// Seed of the canaries' coordinates.
    pub seed: u64,
    /// What the auditor observes.
    pub view: CanaryView,
    /// **Test-only**: a bug planted in the run's mechanism (see
    /// [`dpsgd_core::fault`]; refused unless built with the
    /// `fault-injection` feature). `None` for every real audit.
    #[doc(hidden)]
    pub fault: Option<MechanismFault>,
}

/// What the auditor observed of a run with gradient canaries, and each
/// canary's score.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryObservation {
    /// What was observed.
    pub view: CanaryView,
    /// Records of the run, the `m` canary slots included.
    pub dataset_size: usize,
    /// Canary slots.
    pub canaries: usize,
    /// Releases (steps) observed: 0 for the final view.
    pub observed_steps: u64,
    /// The norm `M` of every canary's gradient before clipping.
    pub canary_norm: f64,
    /// The released noise at the canaries' coordinates against the claim
    /// (all-steps view only): a diagnostic, not an ε bound.
    pub noise_check: Option<NoiseCheck>,
    /// Each canary's score: larger is more likely included.
    #[serde(skip)]
    pub scores: Vec<f64>,
    /// Whether each canary was included.
    #[serde(skip)]
    pub included: Vec<bool>,
    /// Each canary's coordinate, as `parameter[flat index]`.
    #[serde(skip)]
    pub coordinates: Vec<String>,
}

/// The canaries of one run while it trains.
pub(crate) struct CanaryRun {
    records: usize,
    included: Vec<bool>,
    view: CanaryView,
    fault: Option<MechanismFault>,
    coordinates: Vec<(ParamId, usize)>,
    names: Vec<String>,
    /// Clipping group of each canary's coordinate, and the groups' count.
    groups: Vec<usize>,
    n_groups: usize,
    canaries: Arc<[GradientCanary]>,
    norm: f64,
    initial: Vec<f32>,
    /// Per canary, every observed release standardised by the noise, the
    /// canary's shift μ in those units at that step, and the engine's q.
    history: Vec<Vec<(f32, f32, f32)>>,
    /// Each canary's last standardised release.
    previous: Vec<Option<f64>>,
    observed: u64,
    noise_check: NoiseTally,
}

impl CanaryRun {
    /// Chooses the coordinates of `spec`'s canaries in `model` (trained on
    /// `records` real records under `clipping`).
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for no canaries, or more canaries than the
    /// model has trainable coordinates.
    pub(crate) fn new<M: Module>(
        spec: &GradientCanaries,
        model: &M,
        records: usize,
        clipping: &Clipping,
        activity: &[f32],
    ) -> Result<Self, TrainError> {
        let m = spec.included.len();
        let params = trainable_params(model);
        let total: usize = params.iter().map(dpsgd_core::ParamInfo::numel).sum();
        if m == 0 || m > total {
            return Err(TrainError::config(
                "canaries",
                format!(
                    "gradient canaries need between 1 and the model's {total} trainable coordinates, one each, not {m}"
                ),
            ));
        }
        let group_of: Vec<usize> = {
            let groups = layer_groups(&params);
            let mut g = vec![0; params.len()];
            for (k, members) in groups.iter().enumerate() {
                for &i in members {
                    g[i] = k;
                }
            }
            g
        };
        let n_groups = group_of.iter().max().map_or(1, |g| g + 1);
        let mut rng = ChaCha20Rng::seed_from_u64(spec.seed ^ 0xd12a_c0de_ca4a);
        // The quietest coordinates (smallest |activity|: the held-out
        // records' summed gradient there at the start), ties in a random
        // order; all of it independent of the coins and of the training
        // records.
        let mut picks = sample(&mut rng, total, total).into_vec();
        let quiet = |k: usize| activity.get(k).map_or(0.0, |a| a.abs());
        picks.sort_by(|&a, &b| quiet(a).total_cmp(&quiet(b)));
        picks.truncate(m);
        let norm = 1000.0 * clipping.sensitivity();
        if !(norm.is_finite() && (norm as f32).is_finite() && norm > 0.0) {
            return Err(TrainError::config(
                "canaries",
                format!(
                    "gradient canaries of norm 1000·C = {norm:e} do not fit f32: audit a run with a smaller clipping norm"
                ),
            ));
        }
        let mut coordinates = Vec::with_capacity(m);
        let mut names = Vec::with_capacity(m);
        let mut groups = Vec::with_capacity(m);
        for flat in picks {
            let mut offset = flat;
            for (i, p) in params.iter().enumerate() {
                if offset < p.numel() {
                    coordinates.push((p.id, offset));
                    names.push(format!("{}[{offset}]", p.name()));
                    groups.push(group_of[i]);
                    break;
                }
                offset -= p.numel();
            }
        }
        let canaries: Arc<[GradientCanary]> = coordinates
            .iter()
            .zip(&spec.included)
            .map(|(&(id, k), &inc)| {
                if inc {
                    GradientCanary::dirac(id, k, norm as f32)
                } else {
                    GradientCanary::zero()
                }
            })
            .collect();
        let initial = read_params(model, &coordinates);
        Ok(Self {
            records,
            included: spec.included.clone(),
            view: spec.view,
            fault: spec.fault,
            coordinates,
            names,
            groups,
            n_groups,
            canaries,
            norm,
            initial,
            history: vec![Vec::new(); m],
            previous: vec![None; m],
            observed: 0,
            noise_check: NoiseTally::default(),
        })
    }

    /// Prepares `engine` for the canaries: it records their releases (all
    /// `own` canaries' — every canary when `None` — in the all-steps view),
    /// with the test-only fault planted when there is one.
    pub(crate) fn prepare(
        &self,
        engine: &mut dpsgd_burn::PrivacyEngine,
        own: Option<&[usize]>,
    ) -> Result<(), TrainError> {
        if let Some(fault) = self.fault {
            engine.plant_fault(fault)?;
        }
        engine.observe_releases(self.observed_coordinates(own));
        Ok(())
    }

    /// Canary slots `m`.
    pub(crate) fn slots(&self) -> usize {
        self.included.len()
    }

    /// The canary of record `index` of the run (`records..records + m`
    /// are the slots), if it is one.
    pub(crate) fn slot(&self, index: usize) -> Option<usize> {
        index.checked_sub(self.records)
    }

    /// The coordinates an engine must observe in the all-steps view (none
    /// in the final view): those of canaries `own` (one MIST part's), or
    /// of every canary when `None`.
    fn observed_coordinates(&self, own: Option<&[usize]>) -> Vec<(ParamId, usize)> {
        match (self.view, own) {
            (CanaryView::Final, _) => Vec::new(),
            (CanaryView::AllSteps, None) => self.coordinates.clone(),
            (CanaryView::AllSteps, Some(own)) => own.iter().map(|&j| self.coordinates[j]).collect(),
        }
    }

    /// The batch of `indices` (records of the run, slots included): built
    /// by `build` from real record indices, a slot's placeholder being
    /// record 0, with the slots marked.
    ///
    /// # Errors
    ///
    /// As [`WithCanaries::new`] (never, for a `build` that returns one
    /// example per index).
    pub(crate) fn batch<B: ExampleBatch>(
        &self,
        indices: &[usize],
        build: impl FnOnce(&[usize]) -> B,
    ) -> Result<WithCanaries<B>, TrainError> {
        let real: Vec<usize> = indices
            .iter()
            .map(|&i| if i < self.records { i } else { 0 })
            .collect();
        self.rows(
            build(&real),
            indices.iter().map(|&i| self.slot(i)).collect(),
        )
    }

    /// `batch` with `rows` (per example: its canary, if a slot).
    pub(crate) fn rows<B: ExampleBatch>(
        &self,
        batch: B,
        rows: Vec<Option<usize>>,
    ) -> Result<WithCanaries<B>, TrainError> {
        Ok(WithCanaries::new(
            batch,
            CanaryRows::new(Arc::clone(&self.canaries), rows),
        )?)
    }

    /// Adds one step's release to the canaries' scores: the engine's
    /// `release` at the coordinates [`Self::prepare`] had it observe (of
    /// the canaries `own`, or of all of them) of a run with
    /// sampling rate `q` and expected batch `q·N`.
    pub(crate) fn observe(
        &mut self,
        release: &ReleasedCoordinates,
        sample_rate: f64,
        expected_batch: f64,
        own: Option<&[usize]>,
    ) -> Result<(), TrainError> {
        if self.view != CanaryView::AllSteps {
            return Ok(());
        }
        self.observed += 1;
        // μ per clipping group: the canary's clipped norm over the noise
        // on the sum (s = release.noise_std·qN).
        let noise = release.noise_std * expected_batch;
        let mut mu = vec![0.0; self.n_groups];
        for (g, slot) in mu.iter_mut().enumerate() {
            let mut sq = vec![vec![0.0]; self.n_groups];
            sq[g][0] = self.norm * self.norm;
            let factor = release.clipping.exact_factors(&sq, 1)?[g][0];
            *slot = factor * self.norm / noise;
        }
        let ids: Vec<usize> = match own {
            Some(own) => own.to_vec(),
            None => (0..release.values.len()).collect(),
        };
        let z: Vec<f64> = release
            .values
            .iter()
            .map(|&v| f64::from(v) / release.noise_std)
            .collect();
        // The noise as released, measured across the canaries' coordinates
        // (a robust spread: the few canaries this step samples are
        // outliers): the scores use it rather than the claimed noise, so
        // that a mechanism adding less noise than it claims shows as much
        // as it leaks.
        // Measured from any two coordinates for the noise check (whose
        // verdict weighs its own standard error); the scores use it from
        // MIN_SPREAD_SAMPLE on, the claimed noise below that.
        let spread = robust_spread(&z).filter(|_| z.len() >= 2);
        if let Some(spread) = spread {
            self.noise_check.add_spread(spread);
        }
        let s = spread
            .filter(|_| z.len() >= MIN_SPREAD_SAMPLE)
            .unwrap_or(1.0);
        // Each canary's previous release (standardised), where it has one.
        let previous: Vec<Option<f64>> = ids.iter().map(|&j| self.previous[j]).collect();
        // The correlation of this step's noise with the last one's, across
        // the canaries (about 0 for fresh noise): each release is
        // prewhitened against the previous one with it, so that noise
        // carried over from a step cancels out of the scores instead of
        // hiding the canaries.
        let (mut cross, mut first, mut second, mut pairs) = (0.0, 0.0, 0.0, 0usize);
        for ((&j, &zj), p) in ids.iter().zip(&z).zip(&previous) {
            if let Some(p) = p {
                let c = zj / s;
                cross += p * c;
                first += p * p;
                second += c * c;
                pairs += 1;
                self.noise_check.add_pair(j, *p, c);
            }
        }
        let rho = if pairs >= MIN_SPREAD_SAMPLE && first > 0.0 && second > 0.0 {
            (cross / (first * second).sqrt()).clamp(-MAX_RHO, MAX_RHO)
        } else {
            0.0
        };
        let whiten = (1.0 - rho * rho).sqrt();
        for ((&j, &zj), p) in ids.iter().zip(&z).zip(&previous) {
            let c = zj / s;
            let innovation = match p {
                Some(p) => (c - rho * p) / whiten,
                None => c,
            };
            let shift = match p {
                Some(_) => mu[self.groups[j]] / s / whiten,
                None => mu[self.groups[j]] / s,
            };
            self.previous[j] = Some(c);
            self.history[j].push((innovation as f32, shift as f32, sample_rate as f32));
        }
        Ok(())
    }

    /// The observation, with `released` the run's final released model.
    pub(crate) fn finish<M: Module>(self, released: &M) -> CanaryObservation {
        let scores = match self.view {
            CanaryView::AllSteps => self.history.iter().map(|h| mixture_llr(h)).collect(),
            CanaryView::Final => {
                let last = read_params(released, &self.coordinates);
                self.initial
                    .iter()
                    .zip(last)
                    .map(|(a, b)| f64::from(*a) - f64::from(b))
                    .collect()
            }
        };
        CanaryObservation {
            view: self.view,
            dataset_size: self.records + self.included.len(),
            canaries: self.included.len(),
            observed_steps: self.observed,
            canary_norm: self.norm,
            noise_check: self.noise_check.report(),
            scores,
            included: self.included,
            coordinates: self.names,
        }
    }
}

/// How much records like the real ones move each trainable coordinate of
/// `model` (in [`trainable_params`] order) at the start: the summed
/// cross-entropy gradient over `records`, one backward pass per chunk of
/// 512 records. The canaries take the quietest coordinates, where what is
/// released is mostly noise: the white-box adversary knows the other
/// records, and so where they leave the model alone.
///
/// # Privacy
///
/// The caller passes the **held-out** records (the test split), never the
/// training records: the chosen coordinates shape the released model, so
/// a choice read off the training records would let one of them change
/// the model outside the mechanism (a neighbour's record reorders the
/// quietest coordinates). The held-out records are not covered by ε (as
/// the test accuracy computed on them is not a statistic of the training
/// records), and the audit's report says so.
pub(crate) fn coordinate_activity<M: crate::models::Classifier>(
    model: &M,
    records: &dpsgd_data::Dataset,
    device: &burn::tensor::Device,
) -> Vec<f32> {
    struct Collect<'a> {
        grads: &'a burn::tensor::Gradients,
        out: Vec<Vec<f32>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if !dpsgd_core::params::is_trainable(&value) {
                return;
            }
            let numel = value.dims().iter().product();
            self.out.push(match value.grad(self.grads) {
                Some(g) => g.into_data().iter::<f32>().collect(),
                None => vec![0.0; numel],
            });
        }
    }
    let mut total: Vec<f32> = Vec::new();
    let indices: Vec<usize> = (0..records.len()).collect();
    for chunk in indices.chunks(512) {
        let (x, y) = crate::eval::batch(records, chunk, device);
        let loss = dpsgd_burn::loss::cross_entropy_per_example(model.logits(x), y).sum();
        let grads = loss.backward();
        let mut collect = Collect {
            grads: &grads,
            out: Vec::new(),
        };
        model.visit(&mut collect);
        let flat: Vec<f32> = collect.out.into_iter().flatten().collect();
        if total.is_empty() {
            total = flat;
        } else {
            total.iter_mut().zip(flat).for_each(|(t, g)| *t += g);
        }
    }
    total
}

/// The values of `model`'s parameters at `coordinates`.
fn read_params<M: Module>(model: &M, coordinates: &[(ParamId, usize)]) -> Vec<f32> {
    struct Read<'a> {
        wanted: &'a [(ParamId, usize)],
        values: std::collections::HashMap<ParamId, Vec<f32>>,
    }
    impl ModuleVisitor for Read<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.wanted.iter().any(|(id, _)| *id == param.id) {
                let v = param.val().into_data().iter::<f32>().collect();
                self.values.insert(param.id, v);
            }
        }
    }
    let mut read = Read {
        wanted: coordinates,
        values: std::collections::HashMap::new(),
    };
    model.visit(&mut read);
    coordinates
        .iter()
        .map(|(id, k)| {
            read.values
                .get(id)
                .and_then(|v| v.get(*k))
                .copied()
                .unwrap_or(0.0)
        })
        .collect()
}

/// One canary's all-steps score from its standardised releases `(z_t,
/// μ_t, q_t)`: the log-likelihood ratio of "included" against "left out"
/// under Poisson sampling, `Σ_t ln(1 − q_t + q_t·exp(μ_t z_t − μ_t²/2))`.
///
/// (Subtracting each coordinate's median release first, against the real
/// records' gradients there, lowered the bound on digits: they are small
/// beside the noise — standardised releases of left-out canaries have
/// standard deviation 1.03 — and the median adds its own noise.)
fn mixture_llr(history: &[(f32, f32, f32)]) -> f64 {
    history
        .iter()
        .map(|&(z, mu, q)| {
            let (z, mu, q) = (f64::from(z), f64::from(mu), f64::from(q));
            // q ∈ (0, 1] (a sampler's rate); ln(1 − q) = −∞ at q = 1.
            let (ln_out, ln_q) = ((1.0 - q).ln(), q.ln());
            // ln((1 − q) + q·e^{μz − μ²/2}), as a log-sum-exp.
            let b = ln_q + mu * z - 0.5 * mu * mu;
            let hi = ln_out.max(b);
            hi + ((ln_out - hi).exp() + (b - hi).exp()).ln()
        })
        .sum()
}

/// Fewest coordinates a step's noise spread (or correlation with the last
/// step) is measured from.
const MIN_SPREAD_SAMPLE: usize = 20;

/// The largest step-to-step correlation prewhitening uses (1 would divide
/// by zero).
const MAX_RHO: f64 = 0.99;

/// A robust standard deviation: 1.4826 × the median absolute deviation
/// from the median (consistent for normal data; a few outliers — the
/// canaries a step samples — barely move it). `None` for no data or a
/// spread of zero.
fn robust_spread(z: &[f64]) -> Option<f64> {
    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    }
    if z.is_empty() {
        return None;
    }
    let mut v = z.to_vec();
    let centre = median(&mut v);
    let mut dev: Vec<f64> = z.iter().map(|x| (x - centre).abs()).collect();
    let spread = 1.4826 * median(&mut dev);
    (spread > 0.0 && spread.is_finite()).then_some(spread)
}

/// Running sums of the noise check.
#[derive(Debug, Default)]
struct NoiseTally {
    spreads: f64,
    spreads_sq: f64,
    steps: u64,
    /// Per canary: its consecutive released pairs' sums, for a lag-1
    /// correlation centred on each coordinate's own mean (a real record's
    /// persistent gradient at a coordinate is not noise carried over).
    pairs: std::collections::HashMap<usize, PairSums>,
}

/// One coordinate's consecutive pairs `(x_{t−1}, x_t)`: counts and sums.
#[derive(Debug, Default, Clone, Copy)]
struct PairSums {
    n: f64,
    first: f64,
    second: f64,
    first_sq: f64,
    second_sq: f64,
    cross: f64,
}

impl NoiseTally {
    fn add_spread(&mut self, spread: f64) {
        self.spreads += spread;
        self.spreads_sq += spread * spread;
        self.steps += 1;
    }

    fn add_pair(&mut self, canary: usize, previous: f64, current: f64) {
        let p = self.pairs.entry(canary).or_default();
        p.n += 1.0;
        p.first += previous;
        p.second += current;
        p.first_sq += previous * previous;
        p.second_sq += current * current;
        p.cross += previous * current;
    }

    /// The pooled within-coordinate correlation of consecutive releases,
    /// and the number of pairs it rests on.
    fn lag1(&self) -> (f64, f64) {
        let (mut cross, mut first, mut second, mut pairs) = (0.0, 0.0, 0.0, 0.0);
        for p in self.pairs.values().filter(|p| p.n >= 2.0) {
            let (m1, m2) = (p.first / p.n, p.second / p.n);
            cross += p.cross - p.n * m1 * m2;
            first += p.first_sq - p.n * m1 * m1;
            second += p.second_sq - p.n * m2 * m2;
            pairs += p.n;
        }
        if first > 0.0 && second > 0.0 {
            (cross / (first * second).sqrt(), pairs)
        } else {
            (0.0, pairs)
        }
    }

    fn report(&self) -> Option<NoiseCheck> {
        if self.steps == 0 {
            return None;
        }
        let steps = self.steps as f64;
        let noise_ratio = self.spreads / steps;
        // Standard errors: of the mean spread, from the steps' own spreads;
        // of a correlation of independent values, 1/√pairs.
        let variance = (self.spreads_sq / steps - noise_ratio * noise_ratio).max(0.0);
        let ratio_error = (variance / steps).sqrt();
        let (lag1_correlation, pairs) = self.lag1();
        let lag1_error = 1.0 / pairs.max(1.0).sqrt();
        let too_little =
            noise_ratio < NoiseCheck::MIN_RATIO && 1.0 - noise_ratio > NoiseCheck::Z * ratio_error;
        let carried = lag1_correlation > NoiseCheck::MAX_LAG1
            && lag1_correlation > NoiseCheck::Z * lag1_error;
        Some(NoiseCheck {
            noise_ratio,
            lag1_correlation,
            consistent: !(too_little || carried),
        })
    }
}

/// Whether the noise the run released at the canaries' coordinates looks
/// like the noise its ε is computed for: independent draws of the claimed
/// standard deviation at every step. The canaries' coordinates are the
/// model's quietest, so what is released there is mostly noise (plus the
/// few canaries a step samples, which the robust spread ignores, and what
/// little the real records' gradients put there, which adds spread).
///
/// A **diagnostic**, not an ε bound: it cannot refute a claim (only the
/// one-run bound does), but a mechanism that adds less noise than it
/// claims, or reuses noise across steps, fails it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NoiseCheck {
    /// The measured noise over the claimed, averaged over steps (about 1,
    /// or a little above with the real records' gradients).
    pub noise_ratio: f64,
    /// Correlation of the released noise between consecutive steps,
    /// within each coordinate (centred on its own mean, so that a real
    /// record's persistent gradient there is not read as noise carried
    /// over), pooled over the coordinates: about 0 for independent draws.
    pub lag1_correlation: f64,
    /// Neither `noise_ratio < 0.8` nor `lag1_correlation > 0.25`, each
    /// counted only when it is also more than 4 standard errors away from
    /// a correct mechanism's (1 and 0): a small audit's own scatter is not
    /// taken for a fault.
    pub consistent: bool,
}

impl NoiseCheck {
    /// Below this ratio the run adds less noise than it claims.
    pub const MIN_RATIO: f64 = 0.8;
    /// Above this correlation the run's noise is not drawn afresh.
    pub const MAX_LAG1: f64 = 0.25;
    /// Standard errors a departure must also exceed.
    pub const Z: f64 = 4.0;
}
