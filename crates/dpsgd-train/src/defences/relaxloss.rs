//! RelaxLoss (Chen, Yu & Fritz, ICLR 2022): the loss held near a target
//! level α, alternating descent, ascent and posterior flattening. Its
//! loss (per batch, or per example under DP-SGD), its settings and its
//! checks.

use crate::config_error::ConfigError;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_core::Error;
use serde::Serialize;

/// RelaxLoss's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RelaxLossSettings {
    /// Target loss level α > 0.
    pub alpha: f32,
    /// Upper bound of the flattened true-class probability, in (0, 1].
    pub upper: f32,
}

impl RelaxLossSettings {
    /// The default rule's α per nat of `ln K`: α = 0.2 · ln K.
    ///
    /// `ln K` is the cross-entropy of the uniform prediction over K
    /// classes, the loss a model that has learnt nothing has: a target α
    /// at or above it asks the model to unlearn (a two-class table
    /// collapsed to 18% accuracy at α = 1 > ln 2). Measured on every data
    /// set the project has (docs/defences.md, "Defaults by a rule"), 0.2 is
    /// the largest share that kept test accuracy within 2 points of no
    /// defence, with room to spare, on digits, Adult-4k and breast cancer;
    /// the most protective share within 2 points was higher on some (0.7 ·
    /// ln K on Adult). On the 30-class location-like table no share kept
    /// accuracy with the Adam recipes (0.2 cost 8 points and raised the
    /// loss attack), where SGD, as the authors train, did. The authors'
    /// published settings span 0.11–0.65 · ln K.
    pub const DEFAULT_ALPHA_PER_LN_K: f32 = 0.2;

    /// The default flattening bound, the authors' Purchase setting.
    pub const DEFAULT_UPPER: f32 = 0.3;

    /// α = `share` · ln K for `classes` = K (at least 2), with flattening
    /// bound `upper`: a target stated relative to the uniform prediction's
    /// loss, so that one share means the same on 2 classes and on 100.
    ///
    /// ```
    /// use dpsgd_train::RelaxLossSettings;
    /// let s = RelaxLossSettings::relative(0.5, 10, 0.3);
    /// assert!((s.alpha - 0.5 * 10f32.ln()).abs() < 1e-6);
    /// ```
    pub fn relative(share: f32, classes: usize, upper: f32) -> Self {
        Self {
            alpha: share * (classes.max(2) as f32).ln(),
            upper,
        }
    }

    /// The default rule for `classes` classes:
    /// α = [`Self::DEFAULT_ALPHA_PER_LN_K`] · ln K, upper =
    /// [`Self::DEFAULT_UPPER`]. It reads only the number of classes.
    ///
    /// ```
    /// use dpsgd_train::RelaxLossSettings;
    /// // ≈ 0.139 on two classes, 0.461 on ten.
    /// assert!((RelaxLossSettings::default_for(2).alpha - 0.1386).abs() < 1e-3);
    /// assert!((RelaxLossSettings::default_for(10).alpha - 0.4605).abs() < 1e-3);
    /// ```
    pub fn default_for(classes: usize) -> Self {
        Self::relative(Self::DEFAULT_ALPHA_PER_LN_K, classes, Self::DEFAULT_UPPER)
    }
}

/// RelaxLoss's flattened soft target, `[B, classes]`, without gradient.
///
/// For example `i` with true class `y_i` and `p_i = softmax(logits_i)`:
/// `q_i[y_i] = p_t = min(p_i[y_i], upper)` and `q_i[c] = (1 − p_t)/(C − 1)`
/// for every other class `c`, so `q_i` sums to 1. The target is computed
/// from detached logits: no gradient flows through `p_t` (it is a label,
/// not part of the objective). With a single class the target is `[p_t]`
/// (its cross-entropy is 0 anyway).
///
/// `upper` is meant to lie in (0, 1] ([`RelaxLoss::new`] checks it); this
/// function does not validate it.
///
/// # Panics
///
/// If `targets` does not hold exactly `B` elements (burn's shape check).
pub fn flattened_target(logits: Tensor<2>, targets: Tensor<1, Int>, upper: f32) -> Tensor<2> {
    let [batch, classes] = logits.dims();
    let p = softmax(logits.detach(), 1);
    let one_hot: Tensor<2> = targets.clone().one_hot(classes).float();
    let p_t = p
        .gather(1, targets.reshape([batch, 1]))
        .clamp_max(upper)
        .repeat_dim(1, classes);
    let off = p_t
        .clone()
        .neg()
        .add_scalar(1.0)
        .div_scalar((classes.max(2) - 1) as f32);
    // one_hot · p_t + (1 − one_hot) · off
    (one_hot * (p_t - off.clone()) + off).detach()
}

/// Cross-entropy of each example to its flattened target (RelaxLoss's
/// "posterior flattening" step), `[B]`: `ℓ_i = −Σ_c q_i[c] · ln p_i[c]`
/// with `q_i` from [`flattened_target`] (detached).
///
/// Its gradient with respect to the logits is `softmax(logits_i) − q_i`
/// (`q_i` sums to 1 and is a constant): it pulls the true class's
/// probability down to `upper` when above it and evens out the other
/// classes' probabilities.
///
/// # Panics
///
/// If `targets` does not hold exactly `B` elements (burn's shape check).
pub fn flattened_cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    upper: f32,
) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let target = flattened_target(logits.clone(), targets, upper);
    (log_softmax(logits, 1) * target)
        .sum_dim(1)
        .reshape([batch])
        .neg()
}

/// RelaxLoss (Chen, Yu & Fritz, "RelaxLoss: Defending Membership Inference
/// Attacks without Losing Utility", ICLR 2022), as specified in
/// `REFERENCES.md` ("Empirical defences").
///
/// With target loss level α and the mean cross-entropy `L` of a batch:
///
/// * odd epochs (1, 3, 5, …; epochs count from 1) minimise `|L − α|`:
///   gradient descent on `L` when `L > α`, ascent when `L < α`;
/// * even epochs descend on `L` when `L > α`, and otherwise "flatten the
///   posterior": cross-entropy to the soft target of [`flattened_target`]
///   (`min(p_y, upper)` on the true class, the rest spread evenly), which
///   is computed without gradient.
///
/// [`RelaxLoss::losses`] turns this into one loss per example: `ℓ_i` for
/// [`RelaxBranch::Descend`], `−ℓ_i` for [`RelaxBranch::Ascend`] (a descent
/// step on it is an ascent step on `ℓ_i`) and the flattened cross-entropy
/// for [`RelaxBranch::Flatten`]. Since `∇|L − α| = sign(L − α) · ∇L`,
/// Descend and Ascend reproduce the gradient of the `|L − α|` objective
/// exactly (away from the tie `L = α`); the values differ from `|L − α|` by
/// the constant α only.
///
/// # Batch or per example (DP-SGD)
///
/// * `per_example = false` is the published algorithm: the batch mean `L`
///   picks one branch for every example of the batch. The sign of each
///   example's gradient then depends on the other examples, a
///   data-dependent choice outside the DP mechanism: use it for
///   **non-private training only**.
/// * `per_example = true` picks each example's branch from its own
///   cross-entropy `ℓ_i` (`|ℓ_i − α|` on odd epochs, descend or flatten by
///   `ℓ_i` on even ones). Each example's loss and gradient then depend on
///   that example alone, so DP-SGD's clipping bounds its contribution: this
///   is the variant **DP-SGD runs must use**.
///
/// # Choices and differences from the authors' code
///
/// * Epoch parity: the authors' code (`DingfanChen/RelaxLoss`) applies
///   `|L − α|` when its 0-based epoch counter is even, i.e. in the first,
///   third, … epoch: the odd 1-based epochs here.
/// * Ties `L = α` (a measure-zero event in floating point): odd epochs
///   Descend (`|L − α|` has no gradient there; PyTorch's `abs` gives 0, we
///   take the `+∇L` subgradient and keep learning); even epochs Flatten
///   (the published test is `L > α` for descent).
/// * A NaN loss takes Descend, so it stays NaN and the engine's
///   non-finite check drops the example.
/// * The soft target is detached. The authors' Purchase/Texas code builds
///   it from the live softmax, so when `p_y < upper` (the clamp inactive)
///   its gradient also flows through `p_t`; we treat the target as a label.
/// * The authors' CIFAR code uses another flattening loss,
///   `(1 − correct) · CE(q) − CE`; we implement the one in `REFERENCES.md`
///   (and in their Purchase/Texas code), `CE(q)`.
///
/// Published settings: Purchase α = 0.8, upper = 0.3; Texas α = 2.5,
/// upper = 0.1; CIFAR-10 α ≈ 0.4–1.
///
/// The fields are public; [`RelaxLoss::new`] validates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelaxLoss {
    /// The target loss level α (> 0).
    pub alpha: f32,
    /// The flattening bound on the true class's probability, in (0, 1].
    pub upper: f32,
    /// Pick the branch per example (DP-compatible) rather than from the
    /// batch mean (the published, non-private algorithm).
    pub per_example: bool,
}

/// Which branch of [`RelaxLoss`] a batch (or an example) takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelaxBranch {
    /// Gradient descent on the cross-entropy: the loss is `ℓ_i`.
    Descend,
    /// Gradient ascent on the cross-entropy: the loss is `−ℓ_i`.
    Ascend,
    /// Posterior flattening: the loss is [`flattened_cross_entropy`].
    Flatten,
}

impl RelaxLoss {
    /// RelaxLoss with target loss level `alpha` and flattening bound
    /// `upper`; `per_example` as in [`RelaxLoss`] (`true` for DP-SGD).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for `alpha` not finite or ≤ 0, or
    /// `upper` outside (0, 1] (NaN included).
    pub fn new(alpha: f32, upper: f32, per_example: bool) -> Result<Self, Error> {
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(Error::invalid(
                "alpha",
                alpha,
                "the RelaxLoss target loss level must be finite and > 0",
            ));
        }
        if !(upper > 0.0 && upper <= 1.0) {
            return Err(Error::invalid(
                "upper",
                upper,
                "the RelaxLoss flattening bound must lie in (0, 1]",
            ));
        }
        Ok(Self {
            alpha,
            upper,
            per_example,
        })
    }

    /// The branch for mean (or per-example) cross-entropy `loss` at `epoch`
    /// (counted from 1).
    ///
    /// * Odd epochs (`|L − α|`): [`RelaxBranch::Ascend`] when `loss < α`,
    ///   else [`RelaxBranch::Descend`] (the tie `loss == α` descends).
    /// * Even epochs: [`RelaxBranch::Descend`] when `loss > α`, else
    ///   [`RelaxBranch::Flatten`] (the tie flattens).
    /// * A NaN `loss` gives [`RelaxBranch::Descend`] in both.
    ///
    /// # Panics
    ///
    /// If `epoch == 0`: epochs count from 1, and a 0-based counter would
    /// silently swap the two kinds of epochs.
    pub fn branch(&self, loss: f32, epoch: usize) -> RelaxBranch {
        assert!(epoch >= 1, "RelaxLoss epochs count from 1, got epoch 0");
        if epoch % 2 == 1 {
            if loss < self.alpha {
                RelaxBranch::Ascend
            } else {
                RelaxBranch::Descend
            }
        } else if loss <= self.alpha {
            RelaxBranch::Flatten
        } else {
            RelaxBranch::Descend
        }
    }

    /// The branch of each example, given the examples' cross-entropies:
    /// each from its own loss with `per_example`, otherwise all from the
    /// batch mean (summed in f64). Empty for an empty batch.
    ///
    /// # Panics
    ///
    /// If `epoch == 0` (see [`RelaxLoss::branch`]).
    pub fn branches(&self, cross_entropies: &[f32], epoch: usize) -> Vec<RelaxBranch> {
        assert!(epoch >= 1, "RelaxLoss epochs count from 1, got epoch 0");
        if self.per_example {
            cross_entropies
                .iter()
                .map(|&loss| self.branch(loss, epoch))
                .collect()
        } else if cross_entropies.is_empty() {
            Vec::new()
        } else {
            let sum: f64 = cross_entropies.iter().map(|&l| f64::from(l)).sum();
            let mean = (sum / cross_entropies.len() as f64) as f32;
            vec![self.branch(mean, epoch); cross_entropies.len()]
        }
    }

    /// Per-example losses, `[B]`, whose gradient is the RelaxLoss gradient,
    /// with the branch each example took.
    ///
    /// With `per_example = false` the branch is chosen by the batch's mean
    /// cross-entropy (the published algorithm; non-private training only)
    /// and applied to every example; with `per_example = true` each
    /// example's branch comes from its own cross-entropy (DP-compatible).
    /// Example `i`'s loss is `ℓ_i` (Descend), `−ℓ_i` (Ascend) or its
    /// [`flattened_cross_entropy`] (Flatten); the mean of the returned
    /// losses has the gradient of the published batch objective.
    ///
    /// Reads the cross-entropies back to the host to choose the branches.
    ///
    /// # Panics
    ///
    /// If `epoch == 0`, or `targets` does not hold exactly `B` elements.
    pub fn losses_and_branches(
        &self,
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
        epoch: usize,
    ) -> (Tensor<1>, Vec<RelaxBranch>) {
        assert!(epoch >= 1, "RelaxLoss epochs count from 1, got epoch 0");
        let [batch, _] = logits.dims();
        let ce = cross_entropy_per_example(logits.clone(), targets.clone());
        let values: Vec<f32> = ce.clone().inner().into_data().iter::<f32>().collect();
        let branches = self.branches(&values, epoch);
        let device = ce.device();
        let any = |b: RelaxBranch| branches.contains(&b);
        let mut out = if any(RelaxBranch::Ascend) {
            let signs: Vec<f32> = branches
                .iter()
                .map(|&b| if b == RelaxBranch::Ascend { -1.0 } else { 1.0 })
                .collect();
            ce * Tensor::<1>::from_data(TensorData::new(signs, [batch]), &device)
        } else {
            ce
        };
        if any(RelaxBranch::Flatten) {
            let flat = flattened_cross_entropy(logits, targets, self.upper);
            if branches.iter().all(|&b| b == RelaxBranch::Flatten) {
                out = flat;
            } else {
                let mask: Vec<bool> = branches
                    .iter()
                    .map(|&b| b == RelaxBranch::Flatten)
                    .collect();
                let mask = Tensor::<1, Bool>::from_bool(TensorData::new(mask, [batch]), &device);
                out = out.mask_where(mask, flat);
            }
        }
        (out, branches)
    }

    /// Per-example losses, `[B]`, whose gradient is the RelaxLoss gradient:
    /// [`RelaxLoss::losses_and_branches`] without the branches.
    ///
    /// With `per_example = false` the branch is chosen by the batch mean
    /// (the published algorithm; non-private only) and applied to every
    /// example; with `per_example = true` each example's branch comes from
    /// its own loss (DP-compatible).
    ///
    /// # Panics
    ///
    /// If `epoch == 0`, or `targets` does not hold exactly `B` elements.
    pub fn losses(&self, logits: Tensor<2>, targets: Tensor<1, Int>, epoch: usize) -> Tensor<1> {
        self.losses_and_branches(logits, targets, epoch).0
    }
}

/// Refuses α ≤ 0 (or not finite) and an upper bound outside (0, 1].
pub(crate) fn check(settings: Option<RelaxLossSettings>) -> Result<(), ConfigError> {
    if let Some(r) = settings
        && !(r.alpha > 0.0 && r.alpha.is_finite() && r.upper > 0.0 && r.upper <= 1.0)
    {
        return Err(ConfigError::new(
            "relaxloss",
            "needs α > 0 and an upper bound in (0, 1]",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defences::test_support::*;

    #[test]
    fn flattened_target_matches_hand_computed_values() {
        let q = values(flattened_target(
            logits(&[A, U, B]),
            labels(&[2, 0, 2]),
            0.3,
        ));
        // A: p_y ≈ 0.665 > 0.3 → [0.35, 0.35, 0.3]; U: p_y = 1/3 > 0.3, y = 0
        // → [0.3, 0.35, 0.35]; B: p_y ≈ 0.042 < 0.3 → p_t = p_y.
        let p_b = softmax64(&B)[2];
        let want = [
            0.35,
            0.35,
            0.3,
            0.3,
            0.35,
            0.35,
            (1.0 - p_b) / 2.0,
            (1.0 - p_b) / 2.0,
            p_b,
        ];
        assert_close(&q, &want, 1e-6);
        let got = values(flattened_cross_entropy(
            logits(&[A, U, B]),
            labels(&[2, 0, 2]),
            0.3,
        ));
        assert_close(
            &got,
            &[flat_ce64(&A, 2, 0.3), 3f64.ln(), flat_ce64(&B, 2, 0.3)],
            1e-5,
        );
    }

    #[test]
    fn relaxloss_branch_switches_as_specified() {
        use RelaxBranch::{Ascend, Descend, Flatten};
        let relax = RelaxLoss::new(1.0, 0.3, false).unwrap();
        let table = [
            // (loss, epoch, branch)
            (2.0, 1, Descend),
            (0.5, 1, Ascend),
            (1.0, 1, Descend), // tie on a |L − α| epoch descends
            (1.0 + f32::EPSILON, 1, Descend),
            (1.0 - f32::EPSILON, 1, Ascend),
            (2.0, 2, Descend),
            (0.5, 2, Flatten),
            (1.0, 2, Flatten), // tie on a flattening epoch flattens
            (1.0 + f32::EPSILON, 2, Descend),
            (2.0, 3, Descend),
            (0.0, 3, Ascend),
            (0.5, 4, Flatten),
            (3.0, 4, Descend),
            (0.5, 101, Ascend),
            (0.5, 100, Flatten),
            (f32::NAN, 1, Descend),
            (f32::NAN, 2, Descend),
            (f32::INFINITY, 2, Descend),
        ];
        for (loss, epoch, want) in table {
            assert_eq!(
                relax.branch(loss, epoch),
                want,
                "loss {loss}, epoch {epoch}"
            );
        }
        // The per-example flag changes how losses are pooled, not the rule.
        let per_example = RelaxLoss::new(1.0, 0.3, true).unwrap();
        for (loss, epoch, want) in table {
            assert_eq!(per_example.branch(loss, epoch), want);
        }
    }

    #[test]
    fn relaxloss_branches_pool_by_batch_mean_or_per_example() {
        use RelaxBranch::{Ascend, Descend, Flatten};
        let losses = [0.4, 3.0]; // mean 1.7
        let batch = RelaxLoss::new(1.0, 0.3, false).unwrap();
        let each = RelaxLoss::new(1.0, 0.3, true).unwrap();
        assert_eq!(batch.branches(&losses, 1), [Descend, Descend]);
        assert_eq!(each.branches(&losses, 1), [Ascend, Descend]);
        assert_eq!(batch.branches(&losses, 2), [Descend, Descend]);
        assert_eq!(each.branches(&losses, 2), [Flatten, Descend]);
        let batch_high = RelaxLoss::new(2.0, 0.3, false).unwrap();
        assert_eq!(batch_high.branches(&losses, 1), [Ascend, Ascend]);
        assert_eq!(batch_high.branches(&losses, 2), [Flatten, Flatten]);
        assert!(batch.branches(&[], 1).is_empty());
    }

    #[test]
    #[should_panic(expected = "count from 1")]
    fn relaxloss_refuses_epoch_zero() {
        let relax = RelaxLoss::new(1.0, 0.3, true).unwrap();
        let _ = relax.branch(0.5, 0);
    }

    #[test]
    fn relaxloss_losses_follow_the_batch_branch() {
        use RelaxBranch::{Ascend, Descend, Flatten};
        let rows = [A, U, B];
        let y = [2i64, 0, 2];
        let ce: Vec<f64> = rows
            .iter()
            .zip(y)
            .map(|(z, y)| ce64(z, y as usize))
            .collect();
        let mean = ce.iter().sum::<f64>() / 3.0; // ≈ 1.559
        assert!(mean > 0.5 && mean < 2.0);
        let low = RelaxLoss::new(0.5, 0.3, false).unwrap(); // mean above α
        let high = RelaxLoss::new(2.0, 0.3, false).unwrap(); // mean below α
        let run = |relax: &RelaxLoss, epoch| {
            let (l, b) = relax.losses_and_branches(logits(&rows), labels(&y), epoch);
            (values(l), b)
        };

        // Odd epoch, above α: descend, ℓ_i.
        let (got, branches) = run(&low, 1);
        assert_eq!(branches, [Descend; 3]);
        assert_close(&got, &ce, 1e-5);
        // Odd epoch, below α: ascend, −ℓ_i.
        let (got, branches) = run(&high, 3);
        assert_eq!(branches, [Ascend; 3]);
        let neg: Vec<f64> = ce.iter().map(|v| -v).collect();
        assert_close(&got, &neg, 1e-5);
        // Even epoch, below α: flatten (upper 0.3).
        let (got, branches) = run(&high, 2);
        assert_eq!(branches, [Flatten; 3]);
        let want: Vec<f64> = rows
            .iter()
            .zip(y)
            .map(|(z, y)| flat_ce64(z, y as usize, 0.3))
            .collect();
        assert_close(&got, &want, 1e-5);
        // Check one flattened value fully by hand: A's target is
        // [0.35, 0.35, 0.3], ln p_c = z_c − ln Σ e^z.
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let by_hand = -(0.35 * (1.0 - lse) + 0.35 * (2.0 - lse) + 0.3 * (3.0 - lse));
        assert!((f64::from(got[0]) - by_hand).abs() < 1e-5);
        // Even epoch, above α: descend, ℓ_i.
        let (got, branches) = run(&low, 4);
        assert_eq!(branches, [Descend; 3]);
        assert_close(&got, &ce, 1e-5);
        // `losses` is the same tensor.
        assert_close(
            &values(high.losses(logits(&rows), labels(&y), 2)),
            &want,
            1e-5,
        );
    }

    #[test]
    fn relaxloss_per_example_picks_each_examples_branch() {
        use RelaxBranch::{Ascend, Descend, Flatten};
        // ℓ_A ≈ 0.408 < α = 1 < ℓ_B ≈ 3.170; the mean ≈ 1.789 is above α.
        let (ce_a, ce_b) = (ce64(&A, 2), ce64(&B, 2));
        let (flat_a, flat_b) = (flat_ce64(&A, 2, 0.3), flat_ce64(&B, 2, 0.3));
        let run = |alpha: f32, per_example: bool, epoch| {
            let relax = RelaxLoss::new(alpha, 0.3, per_example).unwrap();
            let (l, b) = relax.losses_and_branches(logits(&[A, B]), labels(&[2, 2]), epoch);
            (values(l), b)
        };

        let (got, b) = run(1.0, true, 1);
        assert_eq!(b, [Ascend, Descend]);
        assert_close(&got, &[-ce_a, ce_b], 1e-5);
        let (got, b) = run(1.0, false, 1);
        assert_eq!(b, [Descend, Descend]);
        assert_close(&got, &[ce_a, ce_b], 1e-5);

        let (got, b) = run(1.0, true, 2);
        assert_eq!(b, [Flatten, Descend]);
        assert_close(&got, &[flat_a, ce_b], 1e-5);
        let (got, b) = run(1.0, false, 2);
        assert_eq!(b, [Descend, Descend]);
        assert_close(&got, &[ce_a, ce_b], 1e-5);

        // α = 2 puts the mean below α: the batch version ascends or
        // flattens both, the per-example one still descends on B.
        let (got, b) = run(2.0, true, 1);
        assert_eq!(b, [Ascend, Descend]);
        assert_close(&got, &[-ce_a, ce_b], 1e-5);
        let (got, b) = run(2.0, false, 1);
        assert_eq!(b, [Ascend, Ascend]);
        assert_close(&got, &[-ce_a, -ce_b], 1e-5);
        let (got, b) = run(2.0, true, 2);
        assert_eq!(b, [Flatten, Descend]);
        assert_close(&got, &[flat_a, ce_b], 1e-5);
        let (got, b) = run(2.0, false, 2);
        assert_eq!(b, [Flatten, Flatten]);
        assert_close(&got, &[flat_a, flat_b], 1e-5);
    }

    #[test]
    fn per_example_losses_do_not_depend_on_the_rest_of_the_batch() {
        // A next to B (mean ≈ 1.79 > α) or next to C (mean ≈ 0.21 < α).
        for epoch in [1, 2] {
            let each = RelaxLoss::new(1.0, 0.3, true).unwrap();
            let with_b = values(each.losses(logits(&[A, B]), labels(&[2, 2]), epoch));
            let with_c = values(each.losses(logits(&[A, C]), labels(&[2, 2]), epoch));
            assert_eq!(with_b[0], with_c[0], "epoch {epoch}");
            // The published batch version changes A's loss (and gradient)
            // with its neighbour: why it is for non-private training only.
            let batch = RelaxLoss {
                per_example: false,
                ..each
            };
            let with_b = values(batch.losses(logits(&[A, B]), labels(&[2, 2]), epoch));
            let with_c = values(batch.losses(logits(&[A, C]), labels(&[2, 2]), epoch));
            assert!((with_b[0] - with_c[0]).abs() > 0.1, "epoch {epoch}");
        }
    }

    #[test]
    fn flatten_gradient_does_not_flow_through_the_soft_target() {
        let device = Device::default().autodiff();
        let x = logits_on(&[A, B], &device).require_grad();
        let loss = flattened_cross_entropy(x.clone(), labels_on(&[2, 2], &device), 0.3);
        let grads = loss.sum().backward();
        let got = values(x.grad(&grads).expect("logits gradient"));
        let q = [flat_target64(&A, 2, 0.3), flat_target64(&B, 2, 0.3)];
        let want = analytic_grad(&[A, B], &q, &[1.0, 1.0]);
        assert_close(&got, &want, 1e-5);
        // The check is sensitive: for B the clamp is inactive (p_y < upper),
        // and a target left attached would add −∂q/∂z · ln p, whose true-class
        // component is −p_y(1 − p_y)(ln p_y − ½ Σ_{c≠y} ln p_c) ≈ 0.08 ≠ 0.
        let p = softmax64(&B);
        let attached_extra = -p[2] * (1.0 - p[2]) * (p[2].ln() - 0.5 * (p[0].ln() + p[1].ln()));
        assert!(attached_extra.abs() > 0.05, "{attached_extra}");
        assert!((f64::from(got[5]) - (want[5] + attached_extra)).abs() > 0.05);
    }

    #[test]
    fn relaxloss_gradients_follow_each_examples_branch() {
        let device = Device::default().autodiff();
        let relax = RelaxLoss::new(1.0, 0.3, true).unwrap();
        let hot = [one_hot64(2), one_hot64(2)];
        // Odd epoch: A ascends (−(p − e_y)), B descends (p − e_y).
        let x = logits_on(&[A, B], &device).require_grad();
        let loss = relax.losses(x.clone(), labels_on(&[2, 2], &device), 1);
        let got = values(x.grad(&loss.sum().backward()).expect("logits gradient"));
        assert_close(&got, &analytic_grad(&[A, B], &hot, &[-1.0, 1.0]), 1e-5);
        // Even epoch: A flattens (p − q), B descends (p − e_y).
        let x = logits_on(&[A, B], &device).require_grad();
        let loss = relax.losses(x.clone(), labels_on(&[2, 2], &device), 2);
        let got = values(x.grad(&loss.sum().backward()).expect("logits gradient"));
        let targets = [flat_target64(&A, 2, 0.3), one_hot64(2)];
        assert_close(&got, &analytic_grad(&[A, B], &targets, &[1.0, 1.0]), 1e-5);
    }

    #[test]
    fn relaxloss_new_refuses_invalid_parameters() {
        let refused = |alpha: f32, upper: f32| match RelaxLoss::new(alpha, upper, true) {
            Err(Error::InvalidParameter { name, .. }) => name,
            other => panic!("alpha {alpha}, upper {upper}: expected a refusal, got {other:?}"),
        };
        for alpha in [0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(refused(alpha, 0.3), "alpha");
        }
        for upper in [0.0, -0.1, 1.5, f32::NAN, f32::INFINITY] {
            assert_eq!(refused(0.8, upper), "upper");
        }
        let ok = RelaxLoss::new(0.8, 1.0, false).unwrap();
        assert_eq!(
            ok,
            RelaxLoss {
                alpha: 0.8,
                upper: 1.0,
                per_example: false
            }
        );
        assert!(RelaxLoss::new(2.5, 0.1, true).is_ok());
    }
}
