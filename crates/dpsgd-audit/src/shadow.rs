//! The shadow-model attack (Shokri et al. 2017, "Membership Inference
//! Attacks against Machine Learning Models").
//!
//! The attacker trains `k` shadow models the way the target was trained, on
//! data whose membership it knows, and records each shadow's output
//! probability vector `p` on records it trained on (members) and on records
//! it did not (non-members). An attack classifier learns *member* versus
//! *non-member* from those outputs, **one per class** `y` (the outputs of a
//! class's members look different from another class's), and then scores
//! the target model's outputs.
//!
//! # Features
//!
//! The raw vector has one entry per class, too many for the few examples a
//! class gets when there are many classes, and its coordinates mean
//! different things for different records. The attack reads a fixed,
//! label-aware transform of it instead (Salem et al. 2019, "ML-Leaks",
//! found the three largest probabilities as informative as the full
//! vector):
//!
//! ```text
//! x(p, y) = [ ln p_y,  ln Σ_{j≠y} p_j,  ln p_(1), …, ln p_(k),  H(p) ],   k = min(3, C)
//! ```
//!
//! with `p_(1) ≥ p_(2) ≥ …` the sorted probabilities, every logarithm's
//! argument clamped at `1e-12` and `H(p) = −Σ p_j ln p_j` the entropy. The
//! first two give LiRA's logit-scaled confidence `ln p_y − ln Σ_{j≠y} p_j`
//! as a linear combination; `ln p_y − ln p_(1)` is zero exactly when the
//! prediction is correct. See [`attack_features`].
//!
//! # Attack model
//!
//! Logistic regression on the features standardised with the training
//! examples' means and standard deviations (`z = (x − μ)/σ`; a feature
//! constant up to rounding keeps `σ = 1`): `P(member | z) = σ(b + w·z)`,
//! fit by full-batch gradient descent from `w = 0, b = 0` on
//!
//! ```text
//! L(w, b) = (1/n) Σ_i [ ln(1 + e^{s_i}) − t_i s_i ] + (λ/2) ‖w‖²,   s_i = b + w·z_i,
//! ```
//!
//! `t_i = 1` for members; the intercept is not penalised. The fit is
//! deterministic. A class with fewer than [`MIN_CLASS_EXAMPLES`] members or
//! non-members among the shadow examples uses a pooled model, fit the same
//! way on all examples. The membership score of a target output is the
//! attack model's log-odds `b + w·z` (higher = member).

use crate::error::{Result, invalid};
use crate::scores::{ScoreKind, score};
use serde::{Deserialize, Serialize};

/// Smallest probability whose logarithm a feature takes.
const FLOOR: f64 = 1e-12;

/// How many of the largest probabilities the features include.
pub const TOP_K: usize = 3;

/// The fewest members, and the fewest non-members, a class needs among the
/// shadow examples to get its own attack model; classes with fewer use the
/// pooled model.
pub const MIN_CLASS_EXAMPLES: usize = 10;

/// One shadow-model output with known membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowExample {
    /// The shadow model's output probabilities on the record.
    pub probs: Vec<f64>,
    /// The record's true label.
    pub label: usize,
    /// Whether the record was in the shadow model's training set.
    pub member: bool,
}

/// How the attack models are fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShadowAttackConfig {
    /// Full-batch gradient-descent steps.
    pub epochs: usize,
    /// Step size (features are standardised, so 0.1–1 is stable).
    pub lr: f64,
    /// L2 penalty `λ` on the weights (not the intercept).
    pub l2: f64,
}

impl Default for ShadowAttackConfig {
    /// 500 steps of size 0.5, `λ = 1e-3`.
    fn default() -> Self {
        Self {
            epochs: 500,
            lr: 0.5,
            l2: 1e-3,
        }
    }
}

/// The attack's features of output `probs` for a record labelled `label`:
/// `[ln p_y, ln Σ_{j≠y} p_j, ln p_(1), …, ln p_(k), H(p)]` with
/// `k = min(TOP_K, probs.len())` (see the [module docs](self)).
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when `label`
/// is out of range or `probs` is not a probability vector (as
/// [`scores::score`](crate::scores::score)).
///
/// # Examples
///
/// ```
/// use dpsgd_audit::shadow::attack_features;
/// let x = attack_features(&[0.5, 0.25, 0.25], 1)?;
/// assert_eq!(x.len(), 6);
/// assert!((x[0] - 0.25f64.ln()).abs() < 1e-12);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn attack_features(probs: &[f64], label: usize) -> Result<Vec<f64>> {
    // Validates the label and the probability vector.
    score(ScoreKind::Confidence, probs, label)?;
    let ln = |p: f64| p.max(FLOOR).ln();
    let rest: f64 = probs
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != label)
        .map(|(_, p)| p)
        .sum();
    let mut sorted = probs.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let entropy: f64 = probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.ln())
        .sum();
    let mut x = vec![ln(probs[label]), ln(rest)];
    x.extend(sorted.iter().take(TOP_K).map(|&p| ln(p)));
    x.push(entropy);
    Ok(x)
}

/// `1 / (1 + e^{−s})` without overflow.
fn sigmoid(s: f64) -> f64 {
    if s >= 0.0 {
        1.0 / (1.0 + (-s).exp())
    } else {
        let e = s.exp();
        e / (1.0 + e)
    }
}

/// A logistic regression on standardised features.
#[derive(Debug, Clone, PartialEq)]
struct Logistic {
    mean: Vec<f64>,
    sd: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

impl Logistic {
    /// Fits on `rows` (features, member), which is non-empty and whose
    /// feature vectors all have the same length.
    fn fit(rows: &[(&[f64], bool)], config: &ShadowAttackConfig) -> Self {
        let d = rows.first().map_or(0, |r| r.0.len());
        let n = rows.len() as f64;
        let mut mean = vec![0.0; d];
        for (x, _) in rows {
            for (m, v) in mean.iter_mut().zip(*x) {
                *m += v / n;
            }
        }
        let mut var = vec![0.0; d];
        for (x, _) in rows {
            for ((s, v), m) in var.iter_mut().zip(*x).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        // A feature constant up to rounding is left unscaled.
        let sd: Vec<f64> = var
            .iter()
            .zip(&mean)
            .map(|(&v, m)| {
                let sd = v.sqrt();
                if sd > 1e-9 * (1.0 + m.abs()) { sd } else { 1.0 }
            })
            .collect();
        let mut model = Self {
            mean,
            sd,
            weights: vec![0.0; d],
            bias: 0.0,
        };
        let z: Vec<Vec<f64>> = rows.iter().map(|(x, _)| model.standardise(x)).collect();
        for _ in 0..config.epochs {
            let mut grad_w = vec![0.0; d];
            let mut grad_b = 0.0;
            for (zi, &(_, member)) in z.iter().zip(rows) {
                let target = if member { 1.0 } else { 0.0 };
                let residual = sigmoid(model.linear(zi)) - target;
                grad_b += residual;
                for (g, v) in grad_w.iter_mut().zip(zi) {
                    *g += residual * v;
                }
            }
            model.bias -= config.lr * grad_b / n;
            for (w, g) in model.weights.iter_mut().zip(&grad_w) {
                *w -= config.lr * (g / n + config.l2 * *w);
            }
        }
        model
    }

    fn standardise(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(self.mean.iter().zip(&self.sd))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    /// `b + w·z` for standardised `z`.
    fn linear(&self, z: &[f64]) -> f64 {
        self.bias + self.weights.iter().zip(z).map(|(w, v)| w * v).sum::<f64>()
    }

    /// The log-odds of membership of raw features `x`.
    fn log_odds(&self, x: &[f64]) -> f64 {
        self.linear(&self.standardise(x))
    }
}

/// A fitted shadow-model attack: one logistic-regression attack model per
/// class, and a pooled one for classes with too few shadow examples.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowAttack {
    classes: usize,
    per_class: Vec<Option<Logistic>>,
    pooled: Logistic,
}

impl ShadowAttack {
    /// Fits one logistic-regression attack model per class (plus a pooled
    /// model used for classes with too few examples of either kind, see
    /// [`MIN_CLASS_EXAMPLES`]) on shadow outputs with known membership.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when
    /// `classes < 2`, `examples` is empty or lacks members or non-members,
    /// an example's probability vector does not have `classes` entries, is
    /// not a probability vector, or its label is `≥ classes`, or the
    /// configuration has `epochs = 0`, a non-positive or non-finite `lr`,
    /// or a negative or non-finite `l2`.
    ///
    /// # Examples
    ///
    /// ```
    /// use dpsgd_audit::shadow::{ShadowAttack, ShadowAttackConfig, ShadowExample};
    /// // Shadow members get confident outputs, non-members flatter ones.
    /// let examples: Vec<ShadowExample> = (0..40)
    ///     .map(|i| {
    ///         let member = i % 2 == 0;
    ///         let p = if member { 0.9 } else { 0.6 } - 0.001 * f64::from(i);
    ///         ShadowExample { probs: vec![p, 1.0 - p], label: 0, member }
    ///     })
    ///     .collect();
    /// let attack = ShadowAttack::fit(&examples, 2, ShadowAttackConfig::default())?;
    /// assert!(attack.score(&[0.9, 0.1], 0)? > attack.score(&[0.6, 0.4], 0)?);
    /// # Ok::<(), dpsgd_audit::Error>(())
    /// ```
    pub fn fit(
        examples: &[ShadowExample],
        classes: usize,
        config: ShadowAttackConfig,
    ) -> Result<Self> {
        if classes < 2 {
            return Err(invalid("classes", classes, "need at least 2 classes"));
        }
        if config.epochs == 0 {
            return Err(invalid("epochs", 0, "need at least one step"));
        }
        if !(config.lr > 0.0 && config.lr.is_finite()) {
            return Err(invalid("lr", config.lr, "must be positive and finite"));
        }
        if !(config.l2 >= 0.0 && config.l2.is_finite()) {
            return Err(invalid("l2", config.l2, "must be non-negative and finite"));
        }
        let members = examples.iter().filter(|e| e.member).count();
        if members == 0 || members == examples.len() {
            return Err(invalid(
                "examples",
                format!("{members} members of {}", examples.len()),
                "need both members and non-members",
            ));
        }
        let features = examples
            .iter()
            .map(|e| {
                check_len(&e.probs, classes)?;
                attack_features(&e.probs, e.label)
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<(&[f64], bool)> = features
            .iter()
            .zip(examples)
            .map(|(x, e)| (x.as_slice(), e.member))
            .collect();
        let pooled = Logistic::fit(&rows, &config);
        let per_class = (0..classes)
            .map(|c| {
                let class_rows: Vec<(&[f64], bool)> = rows
                    .iter()
                    .zip(examples)
                    .filter(|(_, e)| e.label == c)
                    .map(|(r, _)| *r)
                    .collect();
                let inside = class_rows.iter().filter(|r| r.1).count();
                let outside = class_rows.len() - inside;
                (inside >= MIN_CLASS_EXAMPLES && outside >= MIN_CLASS_EXAMPLES)
                    .then(|| Logistic::fit(&class_rows, &config))
            })
            .collect();
        Ok(Self {
            classes,
            per_class,
            pooled,
        })
    }

    /// Membership score of a target output (higher = member): the attack
    /// model's log-odds, from the model of class `label` or, for a class
    /// without one, the pooled model.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when
    /// `probs` does not have one entry per class or is not a probability
    /// vector, or `label` is out of range.
    pub fn score(&self, probs: &[f64], label: usize) -> Result<f64> {
        check_len(probs, self.classes)?;
        let x = attack_features(probs, label)?;
        let model = self.per_class[label].as_ref().unwrap_or(&self.pooled);
        Ok(model.log_odds(&x))
    }

    /// The number of classes the attack was fit for.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Whether `class` has its own attack model (`false` when the pooled
    /// model scores it, and for a class out of range).
    pub fn has_class_model(&self, class: usize) -> bool {
        self.per_class.get(class).is_some_and(Option::is_some)
    }
}

fn check_len(probs: &[f64], classes: usize) -> Result<()> {
    if probs.len() == classes {
        Ok(())
    } else {
        Err(invalid(
            "probs",
            format!("{} entries", probs.len()),
            format!("need one probability per class ({classes})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Roc;
    use proptest::prelude::*;
    use rand::Rng;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use rand_distr::StandardNormal;

    fn softmax(logits: &[f64]) -> Vec<f64> {
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|v| v / total).collect()
    }

    /// A synthetic model output: standard normal logits, `margin` added to
    /// the label's.
    fn output(rng: &mut ChaCha20Rng, classes: usize, label: usize, margin: f64) -> Vec<f64> {
        let logits: Vec<f64> = (0..classes)
            .map(|j| rng.sample::<f64, _>(StandardNormal) + if j == label { margin } else { 0.0 })
            .collect();
        softmax(&logits)
    }

    /// `n` members and `n` non-members per class; `margin(class, member)`
    /// sets how confident the outputs are.
    fn population(
        rng: &mut ChaCha20Rng,
        classes: usize,
        n: usize,
        margin: impl Fn(usize, bool) -> f64,
    ) -> Vec<ShadowExample> {
        let mut v = Vec::new();
        for label in 0..classes {
            for member in [true, false] {
                for _ in 0..n {
                    v.push(ShadowExample {
                        probs: output(rng, classes, label, margin(label, member)),
                        label,
                        member,
                    });
                }
            }
        }
        v
    }

    /// The attack's AUC on `targets` restricted to labels passing `keep`.
    fn auc(attack: &ShadowAttack, targets: &[ShadowExample], keep: impl Fn(usize) -> bool) -> f64 {
        let (mut m, mut o) = (Vec::new(), Vec::new());
        for t in targets.iter().filter(|t| keep(t.label)) {
            let s = attack.score(&t.probs, t.label).unwrap();
            if t.member { m.push(s) } else { o.push(s) }
        }
        Roc::new(&m, &o).unwrap().auc
    }

    #[test]
    fn should_compute_the_features_by_hand() {
        let ln = f64::ln;
        let x = attack_features(&[0.5, 0.25, 0.25], 1).unwrap();
        let expected = [
            ln(0.25),
            ln(0.75),
            ln(0.5),
            ln(0.25),
            ln(0.25),
            1.5 * ln(2.0),
        ];
        assert_eq!(x.len(), expected.len());
        for (a, b) in x.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{x:?}");
        }
        // Zeros are clamped at 1e-12, and only the top 3 of 5 enter.
        let x = attack_features(&[0.0, 0.0, 1.0, 0.0, 0.0], 0).unwrap();
        let floor = ln(1e-12);
        assert_eq!(x, vec![floor, 0.0, 0.0, floor, floor, 0.0]);
        // Two classes: k = 2.
        assert_eq!(attack_features(&[0.6, 0.4], 0).unwrap().len(), 5);
    }

    /// All outputs identical: the features are constant, the weights stay
    /// at zero, and the intercept converges to the log-odds of the base
    /// rate, ln(30/10).
    #[test]
    fn should_learn_the_base_rate_when_outputs_carry_nothing() {
        let examples: Vec<ShadowExample> = (0..40)
            .map(|i| ShadowExample {
                probs: vec![0.6, 0.4],
                label: 0,
                member: i < 30,
            })
            .collect();
        let attack = ShadowAttack::fit(&examples, 2, ShadowAttackConfig::default()).unwrap();
        assert!(attack.has_class_model(0));
        // Class 1 has no examples: the pooled model, which is the same here.
        assert!(!attack.has_class_model(1));
        assert!(!attack.has_class_model(7));
        for (p, y) in [([0.6, 0.4], 0), ([0.1, 0.9], 0), ([0.6, 0.4], 1)] {
            let s = attack.score(&p, y).unwrap();
            assert!((s - 3f64.ln()).abs() < 1e-9, "{s}");
        }
    }

    /// The fit reaches the minimum of the penalised loss: the gradient
    /// vanishes (checked on a non-separable problem with many features).
    #[test]
    fn should_reach_a_stationary_point() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let examples = population(&mut rng, 4, 50, |_, m| if m { 3.0 } else { 2.0 });
        let config = ShadowAttackConfig {
            epochs: 20_000,
            lr: 0.5,
            l2: 0.1,
        };
        let features: Vec<Vec<f64>> = examples
            .iter()
            .map(|e| attack_features(&e.probs, e.label).unwrap())
            .collect();
        let rows: Vec<(&[f64], bool)> = features
            .iter()
            .zip(&examples)
            .map(|(x, e)| (x.as_slice(), e.member))
            .collect();
        let model = Logistic::fit(&rows, &config);
        let n = rows.len() as f64;
        let mut grad = vec![0.0; model.weights.len() + 1];
        for (x, member) in &rows {
            let z = model.standardise(x);
            let r = sigmoid(model.linear(&z)) - if *member { 1.0 } else { 0.0 };
            grad[0] += r / n;
            for (g, v) in grad[1..].iter_mut().zip(&z) {
                *g += r * v / n;
            }
        }
        for (g, w) in grad[1..].iter_mut().zip(&model.weights) {
            *g += config.l2 * w;
        }
        assert!(grad.iter().all(|g| g.abs() < 1e-8), "{grad:?}");
        assert!(model.weights.iter().any(|w| w.abs() > 0.01));
    }

    /// Members' label logit is 5 above the rest, non-members' 1: the attack
    /// (10 classes, 100 shadow examples of each kind per class) separates
    /// fresh target outputs with AUC > 0.9.
    #[test]
    fn should_separate_confident_members_from_flatter_non_members() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let margin = |_, m| if m { 5.0 } else { 1.0 };
        let shadow = population(&mut rng, 10, 100, margin);
        let attack = ShadowAttack::fit(&shadow, 10, ShadowAttackConfig::default()).unwrap();
        assert!((0..10).all(|c| attack.has_class_model(c)));
        let target = population(&mut rng, 10, 100, margin);
        let auc = auc(&attack, &target, |_| true);
        assert!(auc > 0.9, "AUC {auc}");
    }

    /// Members and non-members from one distribution: 1000 target outputs
    /// of each kind, so the AUC's standard error is about 0.013 and 0.05 is
    /// four of them.
    #[test]
    fn should_be_at_chance_when_members_look_like_non_members() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let shadow = population(&mut rng, 10, 100, |_, _| 3.0);
        let attack = ShadowAttack::fit(&shadow, 10, ShadowAttackConfig::default()).unwrap();
        let target = population(&mut rng, 10, 100, |_, _| 3.0);
        let auc = auc(&attack, &target, |_| true);
        assert!((auc - 0.5).abs() < 0.05, "AUC {auc}");
    }

    /// Only class 1 leaks (members' margin 5 against 1); classes 0 and 2
    /// have margin 3 either way. Class 1's model separates its targets,
    /// class 0's stays at chance (500 targets of each kind: standard error
    /// 0.018, tolerance 0.07).
    #[test]
    fn should_learn_per_class_leakage() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let margin = |c, m| match (c, m) {
            (1, true) => 5.0,
            (1, false) => 1.0,
            _ => 3.0,
        };
        let shadow = population(&mut rng, 3, 300, margin);
        let attack = ShadowAttack::fit(&shadow, 3, ShadowAttackConfig::default()).unwrap();
        let target = population(&mut rng, 3, 500, margin);
        let leaky = auc(&attack, &target, |c| c == 1);
        let quiet = auc(&attack, &target, |c| c == 0);
        assert!(leaky > 0.9, "class 1 AUC {leaky}");
        assert!((quiet - 0.5).abs() < 0.07, "class 0 AUC {quiet}");
        // Class 0's model learned that nothing separates: its scores hardly
        // vary, unlike class 1's.
        let spread = |c: usize| {
            let s: Vec<f64> = target
                .iter()
                .filter(|t| t.label == c)
                .map(|t| attack.score(&t.probs, c).unwrap())
                .collect();
            let mean = s.iter().sum::<f64>() / s.len() as f64;
            (s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        assert!(
            spread(0) < 0.2 * spread(1),
            "{} vs {}",
            spread(0),
            spread(1)
        );
    }

    /// A class with too few members uses the pooled model.
    #[test]
    fn should_fall_back_to_the_pooled_model() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut examples = population(&mut rng, 3, 50, |_, m| if m { 4.0 } else { 1.0 });
        // Keep only MIN_CLASS_EXAMPLES − 1 members of class 2.
        let mut kept = 0;
        examples.retain(|e| {
            if e.label == 2 && e.member {
                kept += 1;
                kept < MIN_CLASS_EXAMPLES
            } else {
                true
            }
        });
        let attack = ShadowAttack::fit(&examples, 3, ShadowAttackConfig::default()).unwrap();
        assert!(attack.has_class_model(0) && attack.has_class_model(1));
        assert!(!attack.has_class_model(2));
        assert_eq!(attack.classes(), 3);
        let p = [0.1, 0.2, 0.7];
        let pooled = attack.pooled.log_odds(&attack_features(&p, 2).unwrap());
        assert_eq!(attack.score(&p, 2).unwrap(), pooled);
        let own = attack.per_class[0].as_ref().unwrap();
        let q = [0.7, 0.2, 0.1];
        assert_eq!(
            attack.score(&q, 0).unwrap(),
            own.log_odds(&attack_features(&q, 0).unwrap())
        );
        // Deterministic: the same fit again.
        let again = ShadowAttack::fit(&examples, 3, ShadowAttackConfig::default()).unwrap();
        assert_eq!(attack, again);
    }

    #[test]
    fn should_reject_invalid_inputs() {
        let ok = |member| ShadowExample {
            probs: vec![0.7, 0.3],
            label: 0,
            member,
        };
        let both = vec![ok(true), ok(false)];
        let config = ShadowAttackConfig::default();
        assert!(ShadowAttack::fit(&both, 2, config).is_ok());
        assert!(ShadowAttack::fit(&both, 1, config).is_err());
        assert!(ShadowAttack::fit(&[], 2, config).is_err());
        assert!(ShadowAttack::fit(&[ok(true), ok(true)], 2, config).is_err());
        assert!(ShadowAttack::fit(&[ok(false)], 2, config).is_err());
        // Wrong length, bad probabilities, label out of range.
        assert!(ShadowAttack::fit(&both, 3, config).is_err());
        let mut bad = both.clone();
        bad[0].probs = vec![0.7, 0.4];
        assert!(ShadowAttack::fit(&bad, 2, config).is_err());
        bad[0].probs = vec![f64::NAN, 1.0];
        assert!(ShadowAttack::fit(&bad, 2, config).is_err());
        bad[0].probs = vec![0.7, 0.3];
        bad[0].label = 2;
        assert!(ShadowAttack::fit(&bad, 2, config).is_err());
        for config in [
            ShadowAttackConfig {
                epochs: 0,
                ..config
            },
            ShadowAttackConfig { lr: 0.0, ..config },
            ShadowAttackConfig {
                lr: f64::INFINITY,
                ..config
            },
            ShadowAttackConfig { l2: -1.0, ..config },
            ShadowAttackConfig {
                l2: f64::NAN,
                ..config
            },
        ] {
            assert!(ShadowAttack::fit(&both, 2, config).is_err(), "{config:?}");
        }
        let attack = ShadowAttack::fit(&both, 2, config).unwrap();
        assert!(attack.score(&[0.7, 0.3], 0).is_ok());
        assert!(attack.score(&[0.7, 0.3], 2).is_err());
        assert!(attack.score(&[0.7, 0.2, 0.1], 0).is_err());
        assert!(attack.score(&[0.7, 0.7], 0).is_err());
        assert!(attack.score(&[-0.5, 1.5], 0).is_err());
    }

    proptest! {
        /// Any probability vector, however extreme, gets a finite score.
        #[test]
        fn should_give_finite_scores(
            logits in prop::collection::vec(-800.0f64..800.0, 4),
            label in 0usize..4,
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(6);
            let shadow = population(&mut rng, 4, 15, |_, m| if m { 4.0 } else { 1.0 });
            let config = ShadowAttackConfig { epochs: 50, ..Default::default() };
            let attack = ShadowAttack::fit(&shadow, 4, config).unwrap();
            let s = attack.score(&softmax(&logits), label).unwrap();
            prop_assert!(s.is_finite(), "{s}");
        }
    }
}
