//! The accuracy–leakage Pareto front of a comparison: which points no other
//! point beats on both counts, and the cheapest point under a leakage
//! target.
//!
//! A point is *dominated* when another has at least its test accuracy and
//! at most its leakage, one of the two strictly; the front is the points
//! nothing dominates. Leakage is the **strongest** attack's figure (the
//! largest AUC, or the largest TPR at 0.1% FPR, over the attacks run), so a
//! defence that stops one attack but not another gets no credit for it.

/// Per point, whether it is on the front of `(accuracy, leakage)`: higher
/// accuracy and lower leakage are better. A point with a non-finite
/// coordinate is never on the front and dominates nothing.
pub fn on_front(points: &[(f64, f64)]) -> Vec<bool> {
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let dominates =
        |a: &(f64, f64), b: &(f64, f64)| a.0 >= b.0 && a.1 <= b.1 && (a.0 > b.0 || a.1 < b.1);
    points
        .iter()
        .map(|p| finite(p) && !points.iter().any(|q| finite(q) && dominates(q, p)))
        .collect()
}

/// The cheapest point under a leakage target: the index of the most
/// accurate point whose leakage is at most `target` (of equally accurate
/// ones the least leaky, then the first: a point of the front), or `None`
/// when no point reaches it.
pub fn cheapest_under(points: &[(f64, f64)], target: f64) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.0.is_finite() && p.1.is_finite() && p.1 <= target)
        .fold(
            None,
            |best: Option<(usize, (f64, f64))>, (i, &p)| match best {
                Some((_, b)) if b.0 > p.0 || (b.0 == p.0 && b.1 <= p.1) => best,
                _ => Some((i, p)),
            },
        )
        .map(|(i, _)| i)
}

/// The leakage target of the "cheapest point" finding: the strongest
/// attack's AUC at most 0.55.
pub const AUC_TARGET: f64 = 0.55;

#[cfg(test)]
mod tests {
    use super::*;

    /// A naive reference: p is on the front iff no q is at least as good on
    /// both counts and better on one.
    fn naive(points: &[(f64, f64)]) -> Vec<bool> {
        (0..points.len())
            .map(|i| {
                let p = points[i];
                !(0..points.len()).any(|j| {
                    let q = points[j];
                    j != i && q.0 >= p.0 && q.1 <= p.1 && q != p
                })
            })
            .collect()
    }

    #[test]
    fn should_keep_exactly_the_non_dominated_points() {
        // (accuracy, AUC): none, two dominated, a DP point, a tie.
        let points = [
            (0.80, 0.70),
            (0.78, 0.72), // dominated by the first
            (0.79, 0.60),
            (0.60, 0.50),
            (0.59, 0.50), // dominated by the DP point
            (0.79, 0.60), // equal to the third: both stay
        ];
        let front = on_front(&points);
        assert_eq!(front, [true, false, true, true, false, true]);
        assert_eq!(front, naive(&points));
    }

    #[test]
    fn should_agree_with_the_naive_reference_on_seeded_clouds() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Coarse values, so that ties happen.
            ((state >> 33) % 20) as f64 / 20.0
        };
        for n in [1, 2, 5, 17, 40] {
            let points: Vec<(f64, f64)> = (0..n).map(|_| (next(), next())).collect();
            let front = on_front(&points);
            assert_eq!(front, naive(&points), "{points:?}");
            assert!(front.iter().any(|&f| f), "a non-empty set has a front");
        }
    }

    #[test]
    fn should_leave_non_finite_points_off_and_find_the_cheapest_point() {
        let points = [
            (0.9, f64::NAN),
            (0.8, 0.56),
            (0.7, 0.55),
            (0.75, 0.52),
            (0.75, 0.50),
        ];
        assert_eq!(on_front(&points), [false, true, false, false, true]);
        assert_eq!(cheapest_under(&points, AUC_TARGET), Some(4));
        assert!(on_front(&points)[4]);
        assert_eq!(cheapest_under(&points, 0.4), None);
        assert_eq!(cheapest_under(&[], 0.5), None);
    }
}
