//! Rényi differential privacy of the Poisson-subsampled Gaussian mechanism
//! and its conversion to (ε, δ).
//!
//! # Privacy
//!
//! Neighbouring datasets differ by adding or removing one example; each
//! example is included in a step's batch independently with probability `q`
//! (Poisson sampling); the clipped sum has sensitivity 1 in units of the
//! clipping norm and receives Gaussian noise of standard deviation `σ`.
//!
//! For an integer order α ≥ 2 (Mironov, Talwar, Zhang 2019, "Rényi
//! Differential Privacy of the Sampled Gaussian Mechanism", §3.3):
//!
//! ```text
//! A_α = Σ_{k=0..α} C(α,k) (1−q)^{α−k} q^k exp((k²−k)/(2σ²)),   RDP(α) = ln(A_α)/(α−1)
//! ```
//!
//! Fractional orders use the two-series form of the same paper (§3.3,
//! eq. for `A_α` split at `z₀ = σ² ln(1/q − 1) + ½`), with the alternating
//! signs of the generalised binomial coefficients kept, so the value is exact
//! (not an upper bound). Everything is evaluated in log space.

use crate::error::{
    Result, check_delta, check_epsilon, check_noise_multiplier, check_sample_rate, invalid,
};
use crate::math::{log_add, log_erfc, log_sub, log_sum_exp};

/// The default grid of Rényi orders: dense at small orders (where
/// high-privacy runs attain their optimum), integer from 12 to 64, then powers
/// of two up to 1024 (for low-noise, few-step runs).
///
/// It is a superset of TF Privacy's `[1 + x/10 for x in 1..100] + [12..64)`
/// grid and of dp-accounting's default grid, so ε computed on it is never
/// larger than theirs.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend([1.25, 1.75, 2.25]);
    orders.extend((11..=64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders.sort_by(f64::total_cmp);
    orders.dedup();
    orders
}

/// RDP at order `alpha` of ONE step of the Poisson-subsampled Gaussian
/// mechanism with sampling rate `q` and noise multiplier `sigma`.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when
/// `q ∉ (0, 1]`, `σ ≤ 0` or `α ≤ 1` (or any of them is not finite).
///
/// # Examples
///
/// ```
/// // q = 1 is the plain Gaussian mechanism: RDP(α) = α / (2σ²).
/// let r = dpsgd_accountant::rdp::rdp_step(1.0, 2.0, 8.0)?;
/// assert!((r - 8.0 / 8.0).abs() < 1e-12);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
pub fn rdp_step(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    check_sample_rate(q)?;
    check_noise_multiplier(sigma)?;
    check_order(alpha)?;
    Ok(rdp_step_unchecked(q, sigma, alpha))
}

pub(crate) fn check_order(alpha: f64) -> Result<()> {
    if alpha.is_finite() && alpha > 1.0 {
        Ok(())
    } else {
        Err(invalid(
            "order",
            alpha,
            "Rényi orders must be finite and > 1",
        ))
    }
}

/// One step's RDP at `alpha`, for validated inputs. Never NaN and never
/// below the true value: where the arithmetic overflows (σ so small that
/// `1/(2σ²)` is not representable) the value is `+∞`, which excludes the order
/// from the minimum in [`epsilon_from_rdp`] — pessimistic, never optimistic.
pub(crate) fn rdp_step_unchecked(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 1.0 {
        // α/(2σ²), computed so that a tiny σ overflows to +∞, not NaN.
        return alpha / 2.0 / sigma / sigma;
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_integer(q, sigma, alpha as u64)
    } else {
        log_a_fractional(q, sigma, alpha)
    };
    let r = log_a / (alpha - 1.0);
    if r.is_nan() {
        // The fractional series cancels huge terms when σ is tiny; an order we
        // cannot evaluate is left out of the minimum (its RDP taken as +∞).
        f64::INFINITY
    } else if r < 0.0 {
        // RDP is non-negative (A_α ≥ 1); a tiny negative value is rounding.
        0.0
    } else {
        r
    }
}

/// `(k² − k)/(2σ²)` without `0·∞`: exactly 0 for k ∈ {0, 1}, `+∞` when it
/// overflows.
fn quadratic_exponent(k: f64, sigma: f64) -> f64 {
    let numerator = k * k - k;
    if numerator == 0.0 {
        0.0
    } else {
        numerator / 2.0 / sigma / sigma
    }
}

/// `ln A_α` for integer α by the binomial expansion, in log space.
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let a = alpha as f64;
    let mut log_binom = 0.0;
    let terms: Vec<f64> = (0..=alpha)
        .map(|k| {
            let kf = k as f64;
            if k > 0 {
                log_binom += ((a - kf + 1.0) / kf).ln();
            }
            log_binom + (a - kf) * log_1mq + kf * log_q + quadratic_exponent(kf, sigma)
        })
        .collect();
    log_sum_exp(&terms)
}

/// `ln A_α` for fractional α: the two series of Mironov et al. (2019), with
/// the signs of the generalised binomial coefficients `C(α, i)` kept.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let s2 = sigma * sigma;
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let z0 = s2 * (1.0 / q - 1.0).ln() + 0.5;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let half_ln = 0.5_f64.ln();
    // Positive and negative parts of each series, summed separately so that a
    // cancellation happens once, at the end.
    let (mut pos0, mut neg0, mut pos1, mut neg1) = (
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    let mut log_abs_binom = 0.0_f64;
    let mut negative = false;
    for i in 0..100_000u32 {
        let fi = f64::from(i);
        if i > 0 {
            let factor = (alpha - fi + 1.0) / fi;
            log_abs_binom += factor.abs().ln();
            negative ^= factor < 0.0;
        }
        let j = alpha - fi;
        let log_t0 = log_abs_binom + fi * log_q + j * log_1mq;
        let log_t1 = log_abs_binom + j * log_q + fi * log_1mq;
        let log_e0 = half_ln + log_erfc((fi - z0) / sqrt2_sigma);
        let log_e1 = half_ln + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + quadratic_exponent(fi, sigma) + log_e0;
        let log_s1 = log_t1 + quadratic_exponent(j, sigma) + log_e1;
        if negative {
            neg0 = log_add(neg0, log_s0);
            neg1 = log_add(neg1, log_s1);
        } else {
            pos0 = log_add(pos0, log_s0);
            pos1 = log_add(pos1, log_s1);
        }
        // A_α ≥ 1, so terms below e^{-40} no longer matter; the terms decay
        // monotonically once i exceeds α (Mironov et al. 2019, §3.3).
        if fi > alpha && log_s0.max(log_s1) < -40.0 {
            break;
        }
    }
    log_add(log_sub(pos0, neg0), log_sub(pos1, neg1))
}

/// RDP of `steps` identical steps at each order of `orders`.
///
/// # Errors
///
/// As [`rdp_step`], and for an order ≤ 1.
pub fn rdp_curve(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Result<Vec<f64>> {
    check_sample_rate(q)?;
    check_noise_multiplier(sigma)?;
    orders
        .iter()
        .map(|&alpha| {
            check_order(alpha)?;
            Ok(scaled(steps, rdp_step_unchecked(q, sigma, alpha)))
        })
        .collect()
}

/// `steps · r` for an RDP value `r ∈ [0, ∞]`, with `0 · ∞ = 0` (no steps
/// cost nothing).
pub(crate) fn scaled(steps: u64, r: f64) -> f64 {
    if steps == 0 { 0.0 } else { steps as f64 * r }
}

/// An absolute margin above the computed RDP for the KL shortcut of
/// [`epsilon_from_rdp`] (far above the computation's rounding).
const RDP_ROUNDING_MARGIN: f64 = 1e-12;

/// ε of an RDP curve at `δ`, by the conversion of Balle et al. (2020,
/// "Hypothesis testing interpretations and Rényi DP", Prop. 12) and
/// Canonne, Kamath, Steinke (2020, eq. 20):
///
/// ```text
/// ε = min_α [ RDP(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1) ]
/// ```
///
/// together with the bound via KL divergence δ ≤ √(1 − e^{−RDP}) that gives
/// ε = 0 for tiny RDP. Returns `(ε, α*)`, the order that attains the minimum.
/// Orders ≤ 1.01, where the conversion is numerically unstable, are skipped.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for an invalid
/// δ, mismatched lengths or a negative/NaN RDP value;
/// [`Error::Unbounded`](crate::Error::Unbounded) when no order gives a finite ε.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64)> {
    check_delta(delta)?;
    check_curve(orders, rdp)?;
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        // The KL shortcut needs an upper bound on RDP; `r` is computed to
        // about 1e-16 absolute (a tiny true value can round to 0), so a
        // margin of 1e-12 keeps it one: without it, q = 1e-4, σ = 1e4 gave
        // ε = 0 at δ = 1e-10, below the lower bound 1.7e-8.
        let eps = if delta * delta + (-(r + RDP_ROUNDING_MARGIN)).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    if !best.0.is_finite() {
        return Err(crate::Error::Unbounded(
            "no Rényi order gives a finite ε; add orders or reduce the number of steps".into(),
        ));
    }
    Ok((crate::math::round_up(best.0.max(0.0)), best.1))
}

/// δ of an RDP curve at `ε` (the inverse of [`epsilon_from_rdp`]'s bound),
/// together with the order that attains it.
///
/// # Errors
///
/// As [`epsilon_from_rdp`], with `ε` validated instead of δ.
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<(f64, f64)> {
    check_epsilon(epsilon)?;
    check_curve(orders, rdp)?;
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        // Bound through KL divergence, then the RDP conversion.
        let mut log_delta = if r == 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 {
            best = (log_delta, a);
        }
    }
    Ok((crate::math::round_up(best.0.exp().min(1.0)), best.1))
}

fn check_curve(orders: &[f64], rdp: &[f64]) -> Result<()> {
    if orders.is_empty() || orders.len() != rdp.len() {
        return Err(invalid(
            "orders",
            orders.len(),
            "need one RDP value per order, and at least one order",
        ));
    }
    for &a in orders {
        check_order(a)?;
    }
    if let Some(&r) = rdp.iter().find(|r| r.is_nan() || **r < 0.0) {
        return Err(invalid("rdp", r, "RDP values must be >= 0"));
    }
    Ok(())
}

/// ε of `steps` steps of one mechanism on the default order grid:
/// a convenience for [`rdp_curve`] + [`epsilon_from_rdp`].
///
/// # Errors
///
/// As [`rdp_curve`] and [`epsilon_from_rdp`].
///
/// # Examples
///
/// ```
/// // TF Privacy's compute_dp_sgd_privacy test: n = 60000, batch 150, σ = 1.3,
/// // 15 epochs, δ = 1e-5 → ε ≈ 0.7242.
/// let (eps, _order) = dpsgd_accountant::rdp::epsilon(150.0 / 60000.0, 1.3, 6000, 1e-5)?;
/// assert!((eps - 0.7242).abs() < 1e-3);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<(f64, f64)> {
    let orders = default_orders();
    let rdp = rdp_curve(q, sigma, steps, &orders)?;
    epsilon_from_rdp(&orders, &rdp, delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_reduce_to_plain_gaussian_at_q_one() {
        for alpha in [1.5, 2.0, 7.0, 100.0] {
            let r = rdp_step(1.0, 1.7, alpha).unwrap();
            assert!((r - alpha / (2.0 * 1.7 * 1.7)).abs() < 1e-12);
        }
    }

    #[test]
    fn should_agree_between_integer_and_fractional_series() {
        // The fractional series evaluated at an order just off an integer must
        // be continuous with the integer binomial expansion.
        for (q, sigma) in [(0.01, 1.0), (0.1, 0.8), (0.5, 2.0), (0.004, 1.1)] {
            for alpha in [2.0, 3.0, 10.0, 32.0] {
                let exact = rdp_step(q, sigma, alpha).unwrap();
                let near = rdp_step(q, sigma, alpha + 1e-9).unwrap();
                assert!(
                    (exact - near).abs() <= 1e-6 * exact.max(1e-300),
                    "q={q} σ={sigma} α={alpha}: {exact} vs {near}"
                );
            }
        }
    }

    #[test]
    fn should_reject_invalid_parameters() {
        assert!(rdp_step(0.0, 1.0, 2.0).is_err());
        assert!(rdp_step(1.5, 1.0, 2.0).is_err());
        assert!(rdp_step(0.1, 0.0, 2.0).is_err());
        assert!(rdp_step(0.1, f64::NAN, 2.0).is_err());
        assert!(rdp_step(0.1, 1.0, 1.0).is_err());
        assert!(epsilon(0.1, 1.0, 10, 0.0).is_err());
        assert!(epsilon(0.1, 1.0, 10, 1.0).is_err());
    }
}
