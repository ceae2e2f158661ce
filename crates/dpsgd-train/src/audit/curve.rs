//! The f-DP one-run bound with a DP-SGD claim read as **the run's own
//! privacy curve** (issue 28, item 2): the strongest reading of the claim
//! that is still a guarantee the run makes.
//!
//! A run of `T` steps of the Poisson-subsampled Gaussian mechanism at rate
//! `q` and noise σ is f-DP for the trade-off function of its privacy
//! profile `δ(ε)`, which the PLD accountant computes (pessimistically:
//! never below the true δ) — a much stronger statement than the single
//! (ε, δ) pair it reports. The family of such runs, indexed by σ, is
//! audited with the f-DP one-run test of Mahloujifar, Melis & Chaudhuri
//! (2024) ([`dpsgd_audit::fdp::fdp_refutes`] of
//! [`dpsgd_audit::fdp::profile_trade_off`]): the bound is the claimed ε
//! (by the run's own accountant) of the least private σ the canaries
//! refute. A correct run is refuted with probability at most α, as for
//! Steinke et al.'s bound: its own σ's curve is a true guarantee.
//!
//! The grid of the profile has 200 points from ε = 0 to ε at δ = 10⁻¹⁰,
//! and the point at the claim's own δ; the curve they give is at most the
//! run's (the envelope of true guarantees), so the reading never claims
//! more than the accountant, and at least the (ε, δ) point PLD gives.

use dpsgd_accountant::pld::ComposedPld;
use dpsgd_accountant::{Accountant, AccountantKind, AnyAccountant, PldConfig};
use dpsgd_audit::fdp::{fdp_refutes, profile_trade_off};
use dpsgd_audit::lower_bound::OneRunAudit;

/// Points of the privacy profile read per σ.
const PROFILE_POINTS: u32 = 200;
/// Bisection steps over log σ.
const BISECTION_STEPS: usize = 16;
/// The σ range searched: below it the claims are far beyond any one-run
/// bound; above it nothing is left to refute.
const SIGMA_RANGE: (f64, f64) = (0.3, 64.0);

/// The one-run f-DP bound of `one_run`'s counts with the claim read as
/// the privacy curve of `steps` steps at rate `q` (the family over σ),
/// reported as the claimed ε of `accountant` at `one_run.delta` (see the
/// [module documentation](self)). `None` when it cannot be computed (a
/// PLD outside its regime).
pub fn curve_epsilon(
    one_run: &OneRunAudit,
    q: f64,
    steps: u64,
    accountant: AccountantKind,
) -> Option<f64> {
    let claimed = |sigma: f64| -> Option<f64> {
        let mut a = AnyAccountant::new(accountant);
        a.record(sigma, q, steps).ok()?;
        a.epsilon(one_run.delta).ok()
    };
    let refuted = |sigma: f64| -> Option<bool> {
        let pld = ComposedPld::for_run(q, sigma, steps, &PldConfig::default()).ok()?;
        let top = pld.epsilon(1e-10).ok()?;
        let mut profile: Vec<(f64, f64)> = (0..=PROFILE_POINTS)
            .map(|i| {
                let e = top * f64::from(i) / f64::from(PROFILE_POINTS);
                pld.delta(e).map(|d| (e, d))
            })
            .collect::<Result<_, _>>()
            .ok()?;
        // The point at the claim's δ itself: the curve is then never
        // weaker than the (ε, δ) reading of the same run.
        if let Ok(e) = pld.epsilon(one_run.delta) {
            profile.push((e, one_run.delta));
        }
        fdp_refutes(
            |x| profile_trade_off(&profile, x),
            one_run.canaries,
            one_run.guesses,
            one_run.correct,
            one_run.alpha,
        )
        .ok()
    };
    let (mut lo, mut hi) = SIGMA_RANGE;
    // More noise is easier to refute: refuted for every σ above some σ*.
    if !refuted(hi)? {
        return Some(0.0);
    }
    if refuted(lo)? {
        return claimed(lo);
    }
    for _ in 0..BISECTION_STEPS {
        let mid = (lo * hi).sqrt();
        if refuted(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // The least private σ known to be refuted.
    claimed(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(canaries: u64, guesses: u64, correct: u64) -> OneRunAudit {
        OneRunAudit {
            canaries,
            included: canaries / 2,
            guesses,
            correct,
            delta: 1e-5,
            alpha: 0.05,
            epsilon: 0.0,
        }
    }

    /// Chance-level guesses refute nothing; more right guesses refute more;
    /// the reading proves more than the (ε, δ) curve does from the same
    /// counts (the run's curve is a stronger claim), and what it refutes is
    /// refuted: the run's own curve at the returned ε's σ fails the test.
    #[test]
    fn should_bound_more_than_the_epsilon_delta_reading_from_the_same_counts() {
        let (q, steps) = (0.08, 650);
        assert_eq!(
            curve_epsilon(&counts(800, 160, 80), q, steps, AccountantKind::Rdp),
            Some(0.0)
        );
        let mut last = 0.0;
        for correct in [110, 120, 135, 150] {
            let c = counts(800, 160, correct);
            let e = curve_epsilon(&c, q, steps, AccountantKind::Rdp).unwrap();
            let flat = dpsgd_audit::fdp::fdp_one_run_epsilon(
                800,
                160,
                correct,
                1e-5,
                0.05,
                dpsgd_audit::fdp::EpsilonCurve::EpsilonDelta,
            )
            .unwrap();
            eprintln!("{correct}/160: run's curve {e:.3}, (ε, δ) curve {flat:.3}");
            assert!(e > last, "{correct}: {e} ≤ {last}");
            assert!(e > flat, "{correct}: {e} ≤ {flat}");
            last = e;
        }
    }
}
