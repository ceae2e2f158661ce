//! How well a membership score separates members from non-members: the ROC
//! curve and the figures read off it.
//!
//! A score is "higher means more likely a member"; the attack says *member*
//! when the score is at least a threshold. Every threshold gives one
//! (FPR, TPR) point; ties between a member and a non-member score move both
//! rates at once, which is why the AUC counts them as half (Mann–Whitney).

use crate::error::{Result, invalid};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// The ROC curve of one attack on one population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roc {
    /// `(fpr, tpr)` points from `(0, 0)` to `(1, 1)`, one per distinct score.
    pub points: Vec<(f64, f64)>,
    /// Area under the curve: P(member score > non-member score) + ½ P(tie).
    pub auc: f64,
    /// Number of member and non-member scores.
    pub counts: (usize, usize),
}

fn check(name: &'static str, scores: &[f64]) -> Result<()> {
    if scores.is_empty() {
        return Err(invalid(name, "[]", "need at least one score"));
    }
    if let Some(s) = scores.iter().find(|s| s.is_nan()) {
        return Err(invalid(name, s, "scores must not be NaN"));
    }
    Ok(())
}

impl Roc {
    /// The ROC curve of `members`' and `non_members`' scores (±∞ allowed).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for an
    /// empty list or a NaN score.
    ///
    /// # Examples
    ///
    /// ```
    /// use dpsgd_audit::metrics::Roc;
    /// let roc = Roc::new(&[0.9, 0.8, 0.4], &[0.7, 0.3, 0.2])?;
    /// assert!((roc.auc - 8.0 / 9.0).abs() < 1e-12);
    /// assert_eq!(roc.tpr_at_fpr(0.0), 2.0 / 3.0);
    /// # Ok::<(), dpsgd_audit::Error>(())
    /// ```
    pub fn new(members: &[f64], non_members: &[f64]) -> Result<Self> {
        check("members", members)?;
        check("non_members", non_members)?;
        let (n_in, n_out) = (members.len() as f64, non_members.len() as f64);
        let mut all: Vec<(f64, bool)> = members
            .iter()
            .map(|&s| (s, true))
            .chain(non_members.iter().map(|&s| (s, false)))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut points = vec![(0.0, 0.0)];
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut auc = 0.0;
        let mut i = 0;
        while i < all.len() {
            // All scores equal to this one cross the threshold together.
            let score = all[i].0;
            let (mut dtp, mut dfp) = (0.0, 0.0);
            while i < all.len() && all[i].0 == score {
                if all[i].1 {
                    dtp += 1.0;
                } else {
                    dfp += 1.0;
                }
                i += 1;
            }
            // Trapezoid: members above every non-member counted so far, and
            // half of the ties within this group.
            auc += dfp * (tp + dtp / 2.0);
            tp += dtp;
            fp += dfp;
            points.push((fp / n_out, tp / n_in));
        }
        Ok(Self {
            points,
            auc: auc / (n_in * n_out),
            counts: (members.len(), non_members.len()),
        })
    }

    /// The highest TPR among thresholds whose FPR is at most `fpr` (the
    /// low-FPR figure LiRA reports: TPR at 1% or 0.1% FPR).
    pub fn tpr_at_fpr(&self, fpr: f64) -> f64 {
        self.points
            .iter()
            .filter(|p| p.0 <= fpr)
            .map(|p| p.1)
            .fold(0.0, f64::max)
    }

    /// Membership advantage `max_t |TPR − FPR|` (Yeom et al. 2018).
    pub fn advantage(&self) -> f64 {
        self.points
            .iter()
            .map(|p| (p.1 - p.0).abs())
            .fold(0.0, f64::max)
    }

    /// The best balanced accuracy `max_t (TPR + 1 − FPR)/2` of a threshold
    /// (or of its negation, which is as available to an attacker).
    pub fn balanced_accuracy(&self) -> f64 {
        0.5 + self.advantage() / 2.0
    }
}

/// A percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// A `level` (e.g. 0.95) percentile bootstrap interval of `statistic` over
/// `resamples` resamplings (with replacement, members and non-members
/// separately) from a ChaCha20 generator seeded with `seed`.
///
/// # Errors
///
/// As [`Roc::new`], and `level ∉ (0, 1)` or `resamples = 0`.
pub fn bootstrap(
    members: &[f64],
    non_members: &[f64],
    statistic: impl Fn(&Roc) -> f64,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Result<Interval> {
    Roc::new(members, non_members)?;
    if !(level > 0.0 && level < 1.0) {
        return Err(invalid("level", level, "must be in (0, 1)"));
    }
    if resamples == 0 {
        return Err(invalid("resamples", 0, "need at least one resample"));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let draw = |v: &[f64], rng: &mut ChaCha20Rng| -> Vec<f64> {
        (0..v.len())
            .map(|_| v[rng.random_range(0..v.len())])
            .collect()
    };
    let mut values: Vec<f64> = (0..resamples)
        .map(|_| {
            let m = draw(members, &mut rng);
            let n = draw(non_members, &mut rng);
            // Both lists are non-empty and NaN-free: Roc::new cannot fail.
            Roc::new(&m, &n).map(|r| statistic(&r)).unwrap_or(f64::NAN)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    let at =
        |p: f64| values[((p * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    Ok(Interval {
        low: at((1.0 - level) / 2.0),
        high: at((1.0 + level) / 2.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// AUC is in [0, 1], swapping the roles gives 1 − AUC, the curve
        /// rises from (0, 0) to (1, 1), and the AUC is the pair count.
        #[test]
        fn should_keep_the_roc_invariants(
            members in prop::collection::vec(-5i32..5, 1..30),
            others in prop::collection::vec(-5i32..5, 1..30),
        ) {
            let m: Vec<f64> = members.iter().map(|&x| f64::from(x)).collect();
            let o: Vec<f64> = others.iter().map(|&x| f64::from(x)).collect();
            let roc = Roc::new(&m, &o).unwrap();
            let swapped = Roc::new(&o, &m).unwrap();
            prop_assert!((roc.auc + swapped.auc - 1.0).abs() < 1e-12);
            prop_assert_eq!(roc.points[0], (0.0, 0.0));
            prop_assert_eq!(*roc.points.last().unwrap(), (1.0, 1.0));
            prop_assert!(roc.points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
            let pairs: f64 = m.iter().flat_map(|a| o.iter().map(move |b| {
                if a > b { 1.0 } else if a == b { 0.5 } else { 0.0 }
            })).sum();
            prop_assert!((roc.auc - pairs / (m.len() * o.len()) as f64).abs() < 1e-12);
        }
    }

    #[test]
    fn should_match_hand_computed_curves() {
        // Perfect separation.
        let roc = Roc::new(&[3.0, 4.0], &[1.0, 2.0]).unwrap();
        assert_eq!(roc.auc, 1.0);
        assert_eq!(roc.tpr_at_fpr(0.0), 1.0);
        assert_eq!(roc.advantage(), 1.0);
        // Perfectly inverted: AUC 0, but the advantage (either direction) is 1.
        let roc = Roc::new(&[1.0, 2.0], &[3.0, 4.0]).unwrap();
        assert_eq!(roc.auc, 0.0);
        assert_eq!(roc.advantage(), 1.0);
        // All tied: the diagonal.
        let roc = Roc::new(&[1.0; 3], &[1.0; 5]).unwrap();
        assert_eq!(roc.auc, 0.5);
        assert_eq!(roc.points, vec![(0.0, 0.0), (1.0, 1.0)]);
        assert_eq!(roc.tpr_at_fpr(0.5), 0.0);
        // members {0.9, 0.8, 0.4}, non-members {0.7, 0.3, 0.2}: of 9 pairs
        // only (0.4, 0.7) is mis-ordered → AUC 8/9; points after each score.
        let roc = Roc::new(&[0.9, 0.8, 0.4], &[0.7, 0.3, 0.2]).unwrap();
        assert!((roc.auc - 8.0 / 9.0).abs() < 1e-15);
        let third = 1.0 / 3.0;
        let expected = [
            (0.0, 0.0),
            (0.0, third),
            (0.0, 2.0 * third),
            (third, 2.0 * third),
            (third, 1.0),
            (2.0 * third, 1.0),
            (1.0, 1.0),
        ];
        for (p, e) in roc.points.iter().zip(expected) {
            assert!(
                (p.0 - e.0).abs() < 1e-15 && (p.1 - e.1).abs() < 1e-15,
                "{p:?} vs {e:?}"
            );
        }
        assert!((roc.advantage() - 2.0 / 3.0).abs() < 1e-15);
        assert!((roc.balanced_accuracy() - 5.0 / 6.0).abs() < 1e-15);
        // A tie across the groups counts half: members {1, 2}, non-members
        // {2, 0}: pairs (1>0) 1, (1<2) 0, (2>0) 1, (2=2) ½ → 2.5/4.
        let roc = Roc::new(&[1.0, 2.0], &[2.0, 0.0]).unwrap();
        assert_eq!(roc.auc, 0.625);
    }

    #[test]
    fn should_reject_empty_and_nan_scores() {
        assert!(Roc::new(&[], &[1.0]).is_err());
        assert!(Roc::new(&[1.0], &[f64::NAN]).is_err());
        assert!(Roc::new(&[f64::INFINITY], &[f64::NEG_INFINITY]).is_ok());
        assert!(bootstrap(&[1.0], &[0.0], |r| r.auc, 0, 0.95, 1).is_err());
        assert!(bootstrap(&[1.0], &[0.0], |r| r.auc, 10, 1.0, 1).is_err());
    }

    #[test]
    fn should_bracket_the_auc_with_the_bootstrap() {
        let members: Vec<f64> = (0..200).map(|i| f64::from(i % 17) + 2.0).collect();
        let non: Vec<f64> = (0..200).map(|i| f64::from(i % 13)).collect();
        let roc = Roc::new(&members, &non).unwrap();
        let ci = bootstrap(&members, &non, |r| r.auc, 200, 0.95, 7).unwrap();
        assert!(
            ci.low <= roc.auc && roc.auc <= ci.high,
            "{ci:?} vs {}",
            roc.auc
        );
        assert!(ci.high - ci.low < 0.15, "{ci:?}");
        // Seeded: the same interval again.
        assert_eq!(
            ci,
            bootstrap(&members, &non, |r| r.auc, 200, 0.95, 7).unwrap()
        );
    }
}
