//! A lower bound on the true ε of the Poisson-subsampled Gaussian mechanism
//! that needs no discretisation and no series: an independent check of the
//! accountants (whose answers are upper bounds), in every regime.
//!
//! # Method
//!
//! For neighbouring output distributions `P` (the example present) and `Q`
//! (absent), any event `E` gives `P(E) ≤ e^ε Q(E) + δ`, so
//!
//! ```text
//! ε(δ) ≥ ln(P(E) − δ) − ln Q(E)      for every E with P(E) > δ.
//! ```
//!
//! Over `T` steps `Q = N(0, σ²)^T` and `P = ((1−q)N(0, σ²) + qN(1, σ²))^T`
//! (the "remove" pair, in units of the clipping norm). Two families of
//! events have closed forms:
//!
//! * **sum test** `E = {Σ_t x_t > c}`: under `Q`, `Σx ~ N(0, Tσ²)`; under
//!   `P`, `Σx ~ K + N(0, Tσ²)` with `K ~ Binomial(T, q)`. At `q = 1` this is
//!   the Neyman–Pearson test, so the bound is the exact Gaussian ε.
//! * **max test** `E = {max_t x_t > c}`: `Q(E) = 1 − Φ(c/σ)^T`,
//!   `P(E) = 1 − ((1−q)Φ(c/σ) + qΦ((c−1)/σ))^T`. At `T = 1` the privacy loss
//!   is monotone in `x`, so this is the exact ε of one step.
//!
//! The best threshold `c` is searched on a grid. Every approximation made is
//! on the safe side: `P(E)` is rounded down (binomial mass grouped into
//! blocks at their smallest `k`, far tails dropped), `Q(E)` up.

use crate::error::{Result, check_delta, check_noise_multiplier, check_sample_rate};
use crate::math::{log_add, log_erfc};
use statrs::function::gamma::ln_gamma;

/// A lower bound on the smallest ε for which `steps` steps of the
/// Poisson-subsampled Gaussian mechanism (rate `q`, noise multiplier σ) are
/// (ε, δ)-DP under add/remove neighbours. Any sound accountant's ε is at
/// least this; `0` when no test finds a positive bound.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for invalid
/// q, σ or δ, or `steps = 0`.
///
/// # Examples
///
/// ```
/// use dpsgd_accountant::{lower_bound::epsilon_lower_bound, pld, rdp};
/// let (q, sigma, steps, delta) = (0.01, 1.0, 1000, 1e-5);
/// let low = epsilon_lower_bound(q, sigma, steps, delta)?;
/// assert!(low > 0.0);
/// assert!(low <= pld::epsilon(q, sigma, steps, delta)?);
/// assert!(low <= rdp::epsilon(q, sigma, steps, delta)?.0);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
pub fn epsilon_lower_bound(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<f64> {
    check_sample_rate(q)?;
    check_noise_multiplier(sigma)?;
    check_delta(delta)?;
    if steps == 0 {
        return Err(crate::error::invalid("steps", 0, "must be at least 1"));
    }
    let sum = sum_test(q, sigma, steps, delta);
    let max = max_test(q, sigma, steps, delta);
    Ok(sum.max(max).max(0.0))
}

/// `ln(P(E) − δ) − ln Q(E)`, or `−∞` where `P(E) ≤ δ`. Shaves a relative
/// 1e-9 off `P(E)` and adds it to `ln Q(E)` against rounding.
fn bound(p: f64, log_q: f64, delta: f64) -> f64 {
    let p = p * (1.0 - 1e-9);
    if p > delta && log_q.is_finite() {
        (p - delta).ln() - log_q - 1e-9
    } else {
        f64::NEG_INFINITY
    }
}

/// `ln(1 − Φ(z))`, accurate far into the tail.
fn log_normal_sf(z: f64) -> f64 {
    log_erfc(z / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// `1 − Φ(z)`.
fn normal_sf(z: f64) -> f64 {
    log_normal_sf(z).exp()
}

/// Thresholds `start + step·i` for `i = 0..count`.
fn grid(start: f64, step: f64, count: usize) -> impl Iterator<Item = f64> {
    (0..count).map(move |i| start + step * i as f64)
}

fn max_test(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    let t = steps as f64;
    let thresholds =
        grid(-5.0 * sigma, 0.05 * sigma, 1000).chain(grid(1.0 - 15.0 * sigma, 0.05 * sigma, 1100));
    thresholds
        .map(|c| {
            let log_sf0 = log_normal_sf(c / sigma);
            let sf0 = log_sf0.exp();
            let sf1 = normal_sf((c - 1.0) / sigma);
            // One step: P[x > c] under P, as a sum of two tails.
            let p1 = (1.0 - q) * sf0 + q * sf1;
            // P[max > c] = 1 − (1 − p1)^T.
            let p = -(t * (-p1).ln_1p()).exp_m1();
            // Q[max > c] = 1 − (1 − sf0)^T ≤ T·sf0 (union bound: an upper
            // bound on Q where the exact form underflows).
            let exact = -(t * (-sf0).ln_1p()).exp_m1();
            let log_q = if exact > 1e-200 {
                exact.ln()
            } else {
                t.ln() + log_sf0
            };
            bound(p, log_q, delta)
        })
        .fold(f64::NEG_INFINITY, f64::max)
}

/// `Binomial(T, q)` mass grouped into at most ~1000 blocks `(k_start, mass)`
/// covering `mean ± 14 sd` (the dropped tails only lower `P(E)`), each mass
/// rounded down by more than its evaluation error.
fn binomial_blocks(q: f64, steps: u64) -> Vec<(f64, f64)> {
    let t = steps as f64;
    if q == 1.0 {
        return vec![(t, 1.0)];
    }
    let mean = t * q;
    let sd = (t * q * (1.0 - q)).sqrt();
    let k_lo = (mean - 14.0 * sd - 1.0).floor().max(0.0) as u64;
    let k_hi = ((mean + 14.0 * sd + 1.0).ceil() as u64).min(steps);
    let block = ((k_hi - k_lo + 1) / 1000).max(1);
    let log_norm = ln_gamma(t + 1.0);
    // ln C(T, j) cancels numbers as large as ln Γ(T + 1) (≈ 2e10 at T = 1e9):
    // its absolute error is a few ulps of that, so every mass is shaved by
    // that relative amount (measured excess at T = 1e9: 4.8e-6; shave 1.8e-5).
    let shave = (4.0 * f64::EPSILON * (log_norm + 1.0)).min(0.5);
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let mut blocks = Vec::new();
    let mut k = k_lo;
    while k <= k_hi {
        let end = (k + block - 1).min(k_hi);
        let mut log_mass = f64::NEG_INFINITY;
        for j in k..=end {
            let jf = j as f64;
            let log_pmf = log_norm - ln_gamma(jf + 1.0) - ln_gamma(t - jf + 1.0)
                + jf * log_q
                + (t - jf) * log_1mq;
            log_mass = log_add(log_mass, log_pmf);
        }
        blocks.push((k as f64, log_mass.exp() * (1.0 - shave)));
        k = end + 1;
    }
    blocks
}

fn sum_test(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    let t = steps as f64;
    let s = sigma * t.sqrt();
    let blocks = binomial_blocks(q, steps);
    let centre = t * q;
    grid(centre - 15.0 * s, 0.05 * s, 1500)
        .map(|c| {
            // Φ̄((c − k)/s) grows with k: each block at its smallest k is a
            // lower bound on its part of P(E).
            let p: f64 = blocks
                .iter()
                .map(|&(k, mass)| mass * normal_sf((c - k) / s))
                .sum();
            bound(p, log_normal_sf(c / s), delta)
        })
        .fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact ε of the Gaussian mechanism with sensitivity/σ = μ
    /// (Balle & Wang 2018): δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2),
    /// inverted by bisection.
    fn exact_gaussian_epsilon(mu: f64, delta: f64) -> f64 {
        let phi = |z: f64| normal_sf(-z);
        let d = |e: f64| phi(-e / mu + mu / 2.0) - e.exp() * phi(-e / mu - mu / 2.0);
        let (mut lo, mut hi) = (0.0, 1e4);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if d(mid) > delta { lo = mid } else { hi = mid }
        }
        hi
    }

    #[test]
    fn should_be_the_exact_gaussian_epsilon_at_q_one() {
        for (sigma, steps) in [(1.0, 1), (4.530877117, 1), (2.0, 10), (10.0, 1000)] {
            let mu = (steps as f64).sqrt() / sigma;
            let exact = exact_gaussian_epsilon(mu, 1e-6);
            let low = epsilon_lower_bound(1.0, sigma, steps, 1e-6).unwrap();
            assert!(low <= exact, "σ={sigma} T={steps}: {low} > exact {exact}");
            assert!(
                low >= exact - 2e-3 * exact.max(1.0),
                "σ={sigma} T={steps}: {low} ≪ {exact}"
            );
        }
    }

    #[test]
    fn should_never_overstate_binomial_mass() {
        // ln C(T, j) loses ~1e-6 relative at T = 1e9; the shave must cover it
        // (found in review: the blocks summed to 1 + 4.75e-6).
        for steps in [10u64, 10_000, 10_000_000, 1_000_000_000] {
            for q in [0.5, 0.3, 0.01] {
                let total: f64 = binomial_blocks(q, steps).iter().map(|b| b.1).sum();
                assert!(total <= 1.0, "T={steps} q={q}: {total}");
                assert!(total > 1.0 - 1e-4, "T={steps} q={q}: {total}");
            }
        }
    }

    #[test]
    fn should_reject_invalid_input() {
        assert!(epsilon_lower_bound(0.0, 1.0, 1, 1e-5).is_err());
        assert!(epsilon_lower_bound(0.1, -1.0, 1, 1e-5).is_err());
        assert!(epsilon_lower_bound(0.1, 1.0, 0, 1e-5).is_err());
        assert!(epsilon_lower_bound(0.1, 1.0, 1, 1.0).is_err());
    }
}
