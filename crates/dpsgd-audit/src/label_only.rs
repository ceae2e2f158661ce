//! The label-only attack (Choquette-Choo et al. 2021, "Label-Only
//! Membership Inference Attacks"), data-augmentation variant with Gaussian
//! noise.
//!
//! A model that answers with labels only hides the confidences the
//! [`scores`](crate::scores) attacks read. Its confidence still shows in
//! how far a record lies from the decision boundary: training records tend
//! to sit deeper inside their class's region, so their label survives
//! larger perturbations. The attack queries the label of the record under
//! Gaussian input noise of growing scale and counts how often it stays
//! correct.
//!
//! For a record `x ∈ ℝ^d` with true label `y`, noise scales `s_1, …, s_S`
//! and `q` queries per scale, the score is
//!
//! ```text
//! score(x) = 1/(1 + S) · [ 1{f(x) = y} + Σ_{k=1}^{S} (1/q) Σ_{r=1}^{q} 1{f(x + s_k ε_{k,r}) = y} ],
//! ε_{k,r} ~ N(0, I_d),
//! ```
//!
//! the clean query's correctness and each scale's fraction of correct noisy
//! labels, averaged with equal weights (higher = member). Each scale's term
//! estimates `P(f(x + s ε) = y)`; for a linear boundary at distance `δ` on
//! the correct side of `x` that is `Φ(δ/s)`.
//!
//! # Cost and determinism
//!
//! The attack makes exactly [`query_count`]`(n, config) = n·(1 + S·q)`
//! label queries for `n` records, sent in batches of `config.batch` inputs:
//! `⌈n(1 + S·q)/batch⌉` oracle calls. The noise comes from a ChaCha20
//! generator seeded with `config.seed`, drawn in query order (record by
//! record, scale by scale, feature by feature), so the scores depend on the
//! seed but not on the batch size.

use crate::Error;
use crate::error::{Result, invalid};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// A model that answers with labels only (the hardened-output threat model).
pub trait LabelOracle {
    /// Predicted labels for `n = inputs.len() / dim` inputs stored row-major.
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when the model refuses (e.g. a query budget) or
    /// fails.
    fn labels(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<usize>>;
}

/// Any `FnMut(inputs, dim) -> Result<labels>` closure is an oracle.
impl<F> LabelOracle for F
where
    F: FnMut(&[f32], usize) -> Result<Vec<usize>>,
{
    fn labels(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<usize>> {
        self(inputs, dim)
    }
}

/// How the label-only attack queries the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelOnlyConfig {
    /// Standard deviations `s` of the Gaussian noise added to every feature,
    /// in the units of the inputs (`0` queries the clean input again).
    pub noise_scales: Vec<f64>,
    /// Noisy queries per record and scale.
    pub queries_per_scale: usize,
    /// Seed of the noise generator.
    pub seed: u64,
    /// Inputs per oracle call.
    pub batch: usize,
}

impl Default for LabelOnlyConfig {
    /// Scales 0.05, 0.1, 0.2 and 0.5, meant for features of unit range
    /// (pixels in [0, 1], or standardised features; multiply by the feature
    /// range otherwise), 10 queries each, seed 0, 512 inputs per call: 41
    /// queries per record.
    fn default() -> Self {
        Self {
            noise_scales: vec![0.05, 0.1, 0.2, 0.5],
            queries_per_scale: 10,
            seed: 0,
            batch: 512,
        }
    }
}

/// The number of label queries [`label_only_scores`] makes for `records`
/// records: `records · (1 + noise_scales.len() · queries_per_scale)`.
pub fn query_count(records: usize, config: &LabelOnlyConfig) -> usize {
    records * (1 + config.noise_scales.len() * config.queries_per_scale)
}

/// Queries waiting to be sent: their inputs and, for each, the record and
/// the group (0 = clean, k = k-th scale) it counts for.
struct Pending {
    inputs: Vec<f32>,
    slots: Vec<(usize, usize)>,
}

impl Pending {
    /// Sends the pending queries and counts correct labels into `hits`
    /// (`hits[record · groups + group]`).
    fn flush<O: LabelOracle>(
        &mut self,
        oracle: &mut O,
        dim: usize,
        labels: &[usize],
        hits: &mut [usize],
        groups: usize,
    ) -> Result<()> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let answers = oracle.labels(&self.inputs, dim)?;
        if answers.len() != self.slots.len() {
            return Err(Error::Query {
                reason: format!(
                    "the model answered {} labels for {} inputs",
                    answers.len(),
                    self.slots.len()
                ),
            });
        }
        for (&(record, group), answer) in self.slots.iter().zip(answers) {
            if answer == labels[record] {
                hits[record * groups + group] += 1;
            }
        }
        self.inputs.clear();
        self.slots.clear();
        Ok(())
    }
}

/// Score per record = fraction of (noisy) queries whose label equals the
/// true label, averaged over scales (plus the clean query); higher =
/// member. See the [module docs](self) for the formula; `inputs` holds
/// `labels.len()` records of `dim` features, row-major.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when `dim = 0`, `inputs` is empty, not a
/// multiple of `dim` long or not finite, `labels` does not have one entry
/// per record, a noise scale is negative or not finite, `batch = 0`, or
/// `queries_per_scale = 0` with scales given. [`Error::Query`] when the
/// oracle fails, or answers with a number of labels other than the number
/// of inputs.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::label_only::{label_only_scores, LabelOnlyConfig};
/// // A 1-D threshold model: label 1 above 0.
/// let mut model = |x: &[f32], _dim: usize| -> dpsgd_audit::Result<Vec<usize>> {
///     Ok(x.iter().map(|&v| usize::from(v > 0.0)).collect())
/// };
/// let config = LabelOnlyConfig { noise_scales: vec![0.5], ..Default::default() };
/// let s = label_only_scores(&mut model, &[2.0, 0.05], 1, &[1, 1], &config)?;
/// assert!(s[0] > s[1]); // far from the boundary: more robust
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn label_only_scores<O: LabelOracle>(
    oracle: &mut O,
    inputs: &[f32],
    dim: usize,
    labels: &[usize],
    config: &LabelOnlyConfig,
) -> Result<Vec<f64>> {
    if dim == 0 {
        return Err(invalid("dim", 0, "need at least one feature"));
    }
    if inputs.is_empty() || !inputs.len().is_multiple_of(dim) {
        return Err(invalid(
            "inputs",
            format!("{} values", inputs.len()),
            format!("need a positive multiple of dim = {dim}"),
        ));
    }
    let n = inputs.len() / dim;
    if labels.len() != n {
        return Err(invalid(
            "labels",
            labels.len(),
            format!("need one label per record ({n})"),
        ));
    }
    if let Some(v) = inputs.iter().find(|v| !v.is_finite()) {
        return Err(invalid("inputs", v, "must be finite"));
    }
    if let Some(s) = config
        .noise_scales
        .iter()
        .find(|s| !(**s >= 0.0 && s.is_finite()))
    {
        return Err(invalid("noise_scales", s, "must be finite and ≥ 0"));
    }
    if config.batch == 0 {
        return Err(invalid("batch", 0, "need at least one input per call"));
    }
    let (scales, q) = (&config.noise_scales, config.queries_per_scale);
    if q == 0 && !scales.is_empty() {
        return Err(invalid(
            "queries_per_scale",
            0,
            "need at least one query per scale",
        ));
    }
    let groups = 1 + scales.len();
    let mut hits = vec![0usize; n * groups];
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    let mut pending = Pending {
        inputs: Vec::with_capacity(config.batch * dim),
        slots: Vec::with_capacity(config.batch),
    };
    for (i, x) in inputs.chunks_exact(dim).enumerate() {
        pending.inputs.extend_from_slice(x);
        pending.slots.push((i, 0));
        if pending.slots.len() == config.batch {
            pending.flush(oracle, dim, labels, &mut hits, groups)?;
        }
        for (k, &s) in scales.iter().enumerate() {
            for _ in 0..q {
                pending.inputs.extend(x.iter().map(|&v| {
                    let noise: f64 = rng.sample(StandardNormal);
                    v + (s * noise) as f32
                }));
                pending.slots.push((i, k + 1));
                if pending.slots.len() == config.batch {
                    pending.flush(oracle, dim, labels, &mut hits, groups)?;
                }
            }
        }
    }
    pending.flush(oracle, dim, labels, &mut hits, groups)?;
    Ok(hits
        .chunks_exact(groups)
        .map(|h| {
            let noisy: f64 = h[1..].iter().map(|&c| c as f64 / q as f64).sum();
            (h[0] as f64 + noisy) / groups as f64
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::distribution::{ContinuousCDF, Normal};

    /// A 1-D threshold model at 0 that counts its calls and queries.
    #[derive(Default)]
    struct Threshold {
        calls: usize,
        queries: usize,
        largest: usize,
    }

    impl LabelOracle for Threshold {
        fn labels(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<usize>> {
            assert_eq!(dim, 1);
            self.calls += 1;
            self.queries += inputs.len();
            self.largest = self.largest.max(inputs.len());
            Ok(inputs.iter().map(|&v| usize::from(v > 0.0)).collect())
        }
    }

    /// Nearest of two centroids in 2-D, (−1, 0) → 0 and (1, 0) → 1: the
    /// boundary is the line x₀ = 0.
    fn nearest_centroid(inputs: &[f32], dim: usize) -> Result<Vec<usize>> {
        let c = [[-1.0f32, 0.0], [1.0, 0.0]];
        let d2 = |x: &[f32], c: &[f32; 2]| (x[0] - c[0]).powi(2) + (x[1] - c[1]).powi(2);
        Ok(inputs
            .chunks_exact(dim)
            .map(|x| usize::from(d2(x, &c[1]) < d2(x, &c[0])))
            .collect())
    }

    /// For x at distance δ above the threshold and noise s, each noisy
    /// label is correct with probability Φ(δ/s). With 4000 queries the
    /// estimate's standard error is at most 0.5/√4000 ≈ 0.008; tolerance
    /// 0.03 (3.8 standard errors). The score is (1 + estimate)/2.
    #[test]
    fn should_estimate_the_probability_of_a_correct_label() {
        let phi = Normal::new(0.0, 1.0).unwrap();
        let distances = [0.05f32, 0.3, 1.0, 2.5];
        let config = LabelOnlyConfig {
            noise_scales: vec![1.0],
            queries_per_scale: 4000,
            seed: 11,
            batch: 1000,
        };
        let mut model = Threshold::default();
        let scores = label_only_scores(&mut model, &distances, 1, &[1, 1, 1, 1], &config).unwrap();
        for (&d, s) in distances.iter().zip(&scores) {
            let estimate = 2.0 * s - 1.0;
            let exact = phi.cdf(f64::from(d));
            assert!(
                (estimate - exact).abs() < 0.03,
                "δ = {d}: {estimate} vs {exact}"
            );
        }
        // Label 0 for the same points: clean query wrong, P = Φ(−δ/s).
        let scores = label_only_scores(&mut model, &distances, 1, &[0, 0, 0, 0], &config).unwrap();
        for (&d, s) in distances.iter().zip(&scores) {
            let exact = phi.cdf(-f64::from(d));
            assert!((2.0 * s - exact).abs() < 0.03, "δ = {d}: {s}");
        }
    }

    /// Exactly n·(1 + S·q) queries in ⌈that / batch⌉ calls of at most
    /// `batch` inputs.
    #[test]
    fn should_count_and_batch_the_queries() {
        let config = LabelOnlyConfig {
            noise_scales: vec![0.1, 0.2, 0.3],
            queries_per_scale: 5,
            seed: 0,
            batch: 7,
        };
        let inputs = [0.5f32; 10];
        let mut model = Threshold::default();
        label_only_scores(&mut model, &inputs, 1, &[1; 10], &config).unwrap();
        assert_eq!(query_count(10, &config), 160);
        assert_eq!(model.queries, 160);
        assert_eq!(model.calls, 160usize.div_ceil(7));
        assert_eq!(model.largest, 7);
    }

    /// Scale 0 repeats the clean query; no scales at all is the gap attack
    /// (1 when the label is right, 0 otherwise).
    #[test]
    fn should_reduce_to_the_clean_label_without_noise() {
        let mut model = Threshold::default();
        let inputs = [0.01f32, -0.01];
        let zero = LabelOnlyConfig {
            noise_scales: vec![0.0, 0.0],
            queries_per_scale: 3,
            ..Default::default()
        };
        let none = LabelOnlyConfig {
            noise_scales: vec![],
            queries_per_scale: 0,
            ..Default::default()
        };
        for config in [zero, none] {
            let s = label_only_scores(&mut model, &inputs, 1, &[1, 1], &config).unwrap();
            assert_eq!(s, vec![1.0, 0.0]);
        }
    }

    /// Records deep inside their class's region score higher than records
    /// near the boundary, and misclassified ones lowest (default scales).
    #[test]
    fn should_rank_records_by_distance_from_the_boundary() {
        let inputs = [
            2.0f32, 0.3, // deep in class 1
            0.6, -0.5, // inside class 1
            0.02, 0.9, // on the boundary
            -0.1, 0.0, // just on the wrong side
        ];
        let config = LabelOnlyConfig {
            queries_per_scale: 200,
            ..Default::default()
        };
        let s = label_only_scores(&mut nearest_centroid, &inputs, 2, &[1; 4], &config).unwrap();
        assert!(s[0] > s[1] && s[1] > s[2] && s[2] > s[3], "{s:?}");
        // Distance 2 against scales up to 0.5: practically always right.
        assert!(s[0] > 0.99, "{s:?}");
        assert!(s[3] < 0.5, "{s:?}");
    }

    #[test]
    fn should_be_deterministic_for_a_seed_whatever_the_batch() {
        let inputs: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) / 20.0).collect();
        let labels = vec![1; 20];
        let config = LabelOnlyConfig {
            noise_scales: vec![0.3, 1.0],
            queries_per_scale: 7,
            seed: 3,
            batch: 16,
        };
        let run = |c: &LabelOnlyConfig| {
            label_only_scores(&mut nearest_centroid, &inputs, 2, &labels, c).unwrap()
        };
        let first = run(&config);
        assert_eq!(first, run(&config));
        for batch in [1, 5, 1000] {
            assert_eq!(
                first,
                run(&LabelOnlyConfig {
                    batch,
                    ..config.clone()
                })
            );
        }
        assert_ne!(first, run(&LabelOnlyConfig { seed: 4, ..config }));
    }

    #[test]
    fn should_propagate_oracle_errors() {
        // A model with a budget of two calls.
        let mut calls = 0;
        let mut budget = |x: &[f32], _: usize| -> Result<Vec<usize>> {
            calls += 1;
            if calls > 2 {
                return Err(Error::Query {
                    reason: "budget exhausted".into(),
                });
            }
            Ok(vec![0; x.len()])
        };
        let config = LabelOnlyConfig {
            batch: 10,
            ..Default::default()
        };
        let err = label_only_scores(&mut budget, &[0.0; 5], 1, &[0; 5], &config).unwrap_err();
        assert_eq!(
            err,
            Error::Query {
                reason: "budget exhausted".into()
            }
        );
        // A model that answers one label too few, or too many.
        for extra in [-1i64, 1] {
            let mut wrong = |x: &[f32], _: usize| -> Result<Vec<usize>> {
                Ok(vec![0; (x.len() as i64 + extra) as usize])
            };
            let err = label_only_scores(&mut wrong, &[0.0; 5], 1, &[0; 5], &config).unwrap_err();
            assert!(matches!(err, Error::Query { .. }), "{err:?}");
        }
    }

    #[test]
    fn should_reject_invalid_inputs() {
        let mut model = nearest_centroid;
        let ok = LabelOnlyConfig::default();
        let x = [0.5f32, 0.5, -0.5, 0.5];
        assert!(label_only_scores(&mut model, &x, 2, &[1, 0], &ok).is_ok());
        assert!(label_only_scores(&mut model, &x, 0, &[1, 0], &ok).is_err());
        assert!(label_only_scores(&mut model, &x, 3, &[1], &ok).is_err());
        assert!(label_only_scores(&mut model, &[], 2, &[], &ok).is_err());
        assert!(label_only_scores(&mut model, &x, 2, &[1], &ok).is_err());
        assert!(label_only_scores(&mut model, &x, 2, &[1, 0, 1], &ok).is_err());
        let nan = [0.5f32, f32::NAN, -0.5, 0.5];
        assert!(label_only_scores(&mut model, &nan, 2, &[1, 0], &ok).is_err());
        for config in [
            LabelOnlyConfig {
                noise_scales: vec![0.1, -0.1],
                ..ok.clone()
            },
            LabelOnlyConfig {
                noise_scales: vec![f64::NAN],
                ..ok.clone()
            },
            LabelOnlyConfig {
                noise_scales: vec![f64::INFINITY],
                ..ok.clone()
            },
            LabelOnlyConfig {
                batch: 0,
                ..ok.clone()
            },
            LabelOnlyConfig {
                queries_per_scale: 0,
                ..ok.clone()
            },
        ] {
            let r = label_only_scores(&mut model, &x, 2, &[1, 0], &config);
            assert!(
                matches!(r, Err(Error::InvalidParameter { .. })),
                "{config:?}"
            );
        }
    }
}
