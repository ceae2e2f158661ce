//! Numerically stable helpers in log space and Gaussian tails.

use statrs::function::erf::erfc;

/// `ln(e^a + e^b)` without overflow; `-∞` is the additive identity.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY || hi == f64::INFINITY || hi.is_nan() || lo.is_nan() {
        // −∞ is the identity; +∞ absorbs; NaN stays NaN (callers check).
        return if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            hi
        };
    }
    hi + (lo - hi).exp().ln_1p()
}

/// `ln(e^a − e^b)` for `a ≥ b`; returns `-∞` when the difference vanishes
/// or rounding makes it negative, and NaN for `∞ − ∞` (undefined: callers
/// must not read it as a number).
pub(crate) fn log_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if b == f64::INFINITY || a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if b >= a {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp_m1()).ln()
}

/// `ln(Σ eˣ)` of a slice, computed as `m + ln(1 + Σ_{x≠max} e^{x−m})` so that
/// sums close to one keep their relative precision.
pub(crate) fn log_sum_exp(xs: &[f64]) -> f64 {
    let Some((imax, &m)) = xs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else {
        return f64::NEG_INFINITY;
    };
    if m.is_infinite() {
        return m;
    }
    let rest: f64 = xs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != imax)
        .map(|(_, &x)| (x - m).exp())
        .sum();
    m + rest.ln_1p()
}

/// `ln(erfc(x))`, accurate also far in the tail where `erfc` underflows.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        erfc(x).ln()
    } else {
        // Asymptotic expansion (Abramowitz & Stegun 7.1.23):
        // erfc(x) = e^{−x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + …);
        // at x ≥ 25 the truncation error is below 1e-13 relative.
        let inv2 = 1.0 / (x * x);
        let series = 1.0 - 0.5 * inv2 + 0.75 * inv2 * inv2 - 1.875 * inv2 * inv2 * inv2;
        -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
    }
}

/// Standard normal CDF Φ(z), accurate in the lower tail.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Standard normal survival function 1 − Φ(z), accurate in the upper tail.
pub(crate) fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Smallest representable value strictly above `x` (for finite, non-zero
/// `x`): used to round reported privacy parameters up, never down. An exact
/// zero (perfect privacy, no steps taken) stays zero.
pub(crate) fn round_up(x: f64) -> f64 {
    if x.is_finite() && x != 0.0 {
        x.next_up()
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_match_erfc_where_both_are_accurate() {
        for x in [-3.0, 0.0, 1.0, 5.0, 20.0, 24.9] {
            let direct = erfc(x).ln();
            assert!((log_erfc(x) - direct).abs() <= 1e-12 * direct.abs().max(1.0));
        }
        // The asymptotic series agrees with erfc where it takes over
        // (scipy: ln erfc(25) = -628.79204...).
        for x in [25.0, 26.0] {
            let direct = erfc(x).ln();
            assert!((log_erfc(x) - direct).abs() < 1e-12 * direct.abs(), "{x}");
        }
        assert!((log_erfc(25.000_001) - (-628.792_089_214_008_9)).abs() < 1e-9);
    }

    #[test]
    fn should_add_and_subtract_in_log_space() {
        let a = 3.0_f64.ln();
        let b = 2.0_f64.ln();
        assert!((log_add(a, b) - 5.0_f64.ln()).abs() < 1e-15);
        assert!((log_sub(a, b) - 0.0).abs() < 1e-15);
        assert_eq!(log_sub(b, a), f64::NEG_INFINITY);
        assert!((log_sum_exp(&[a, b, 0.0]) - 6.0_f64.ln()).abs() < 1e-15);
    }
}
