//! Pessimistic discretisation of one step of the Poisson-subsampled Gaussian
//! mechanism.

use super::{PldConfig, Pmf};
use crate::error::Result;
use crate::math::{log_add, normal_cdf, normal_sf};
use statrs::function::erf::erfc_inv;

/// Which ordered pair of neighbouring output distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `P = (1−q)N(0,σ²) + qN(1,σ²)` (the example is in the dataset),
    /// `Q = N(0,σ²)`; loss `L(x) = ln(1 − q + q e^{(2x−1)/(2σ²)})`, increasing.
    Remove,
    /// `P = N(0,σ²)`, `Q` the mixture; loss `−ln(1 − q + q e^{(2x−1)/(2σ²)})`,
    /// decreasing.
    Add,
}

/// The tail probabilities of `N(0, σ²)` and `N(1, σ²)` at one point `x`,
/// each taken on the side of its mean where it does not cancel (`1 − Φ(z)`
/// for `z ≥ 0`, `Φ(z)` below). Adjacent grid intervals share their edges, so
/// each edge is evaluated once.
#[derive(Debug, Clone, Copy)]
struct Edge {
    z: [f64; 2],
    tail: [f64; 2],
}

impl Edge {
    fn at(x: f64, sigma: f64) -> Self {
        let z = [x / sigma, (x - 1.0) / sigma];
        let tail = z.map(|z| {
            if z >= 0.0 {
                normal_sf(z)
            } else {
                normal_cdf(z)
            }
        });
        Self { z, tail }
    }

    /// `P[a < X ≤ b]` for `X ~ N(i, σ²)`, with `a = self ≤ b`.
    fn mass_to(&self, b: &Self, i: usize) -> f64 {
        let (za, zb, ta, tb) = (self.z[i], b.z[i], self.tail[i], b.tail[i]);
        let m = if za >= 0.0 {
            ta - tb
        } else if zb < 0.0 {
            tb - ta
        } else {
            1.0 - ta - tb
        };
        // Rounding can make a difference of tails slightly negative; NaN is
        // kept (and rejected by `Pmf::checked`).
        if m < 0.0 { 0.0 } else { m }
    }

    /// `P[a < X ≤ b]` for `X` the mixture with weights `w` on `N(0, σ²)` and
    /// `N(1, σ²)`.
    fn mixture_mass_to(&self, b: &Self, w: [f64; 2]) -> f64 {
        let mut m = 0.0;
        for (i, &wi) in w.iter().enumerate() {
            if wi > 0.0 {
                m += wi * self.mass_to(b, i);
            }
        }
        m
    }
}

/// The x at which the mixture's log ratio `ln(1 − q + q e^{(2x−1)/(2σ²)})`
/// equals `l`, or `None` where `l ≤ ln(1−q)` (below the ratio's range).
///
/// `x = σ² ln((e^l − (1 − q))/q) + ½`, with `ln(e^l − (1−q))` taken in log
/// space for large `l`: losses in the hundreds or thousands (σ ≪ 1) have
/// finite edges, where `e^l` alone would overflow past `l ≈ 709.78`.
fn inverse_log_ratio(q: f64, s2: f64, l: f64) -> Option<f64> {
    let log_gap = if l > 1.0 {
        l + (-(1.0 - q) * (-l).exp()).ln_1p()
    } else if let Some(log_ratio) = Some((l.exp_m1() / q).ln_1p()).filter(|r| r.is_finite()) {
        // ln((e^l − (1 − q))/q) = ln(1 + (e^l − 1)/q), without the
        // cancellation of ln(gap) − ln(q) (whose error, times σ², moved
        // the edges by more than σ for σ ≳ 1e12).
        return Some(s2 * log_ratio + 0.5);
    } else {
        // e^l − (1 − q) = expm1(l) + q, accurate for small l.
        let gap = l.exp_m1() + q;
        if gap <= 0.0 {
            return None;
        }
        gap.ln()
    };
    Some(s2 * (log_gap - q.ln()) + 0.5)
}

/// `ln(1 − q + q e^e)` with `e = (2x − 1)/(2σ²)`, accurate for every `e`
/// (and exactly `e` at q = 1).
fn log_ratio(q: f64, s2: f64, x: f64) -> f64 {
    let e = (2.0 * x - 1.0) / (2.0 * s2);
    if e < 0.0 {
        // A sum of two positive terms in log space: no cancellation, and
        // ln(1 − q) = −∞ at q = 1 is the identity.
        log_add((-q).ln_1p(), q.ln() + e)
    } else if e < 30.0 {
        (q * e.exp_m1()).ln_1p()
    } else {
        e + q.ln() + ((1.0 - q) * (-e).exp() / q).ln_1p()
    }
}

/// The range of grid indices `[k_lo, k_hi]` that one step's privacy loss
/// occupies, outside of which `P` has at most the truncated mass.
pub(crate) struct Grid {
    k_lo: i64,
    k_hi: i64,
}

/// `|Z|` beyond this has probability ≤ tail/2 on each side.
fn z_tail(config: &PldConfig) -> f64 {
    let half_tail = (config.tail_mass_truncation / 2.0).max(1e-300);
    std::f64::consts::SQRT_2 * erfc_inv(2.0 * half_tail)
}

fn sign(direction: Direction) -> f64 {
    match direction {
        Direction::Remove => 1.0,
        Direction::Add => -1.0,
    }
}

/// The grid one step needs, or [`Error::OutOfRange`](crate::Error::OutOfRange)
/// when it is not finite or holds more than [`MAX_STEP_GRID`] (or the
/// configured maximum) points. O(1).
pub(crate) fn grid(q: f64, sigma: f64, direction: Direction, config: &PldConfig) -> Result<Grid> {
    let d = config.value_discretization;
    if sigma.is_nan() || sigma > super::MAX_NOISE_MULTIPLIER {
        return Err(crate::Error::OutOfRange(format!(
            "σ = {sigma:e} is above the largest noise multiplier PLD computes with ({:e}; \
             σ² overflows f64 near 1.3e154): one step's privacy loss is ≈ 0 there (its \
             standard deviation is ≈ q/σ = {:.3e}); use RDP, which answers for any σ",
            super::MAX_NOISE_MULTIPLIER,
            q / sigma
        )));
    }
    let s2 = sigma * sigma;
    let z = z_tail(config);
    // The x-range outside of which P has at most the truncated mass.
    let (x_lo, x_hi) = match direction {
        Direction::Remove => (-sigma * z, 1.0 + sigma * z),
        Direction::Add => (-sigma * z, sigma * z),
    };
    let sign = sign(direction);
    let loss_at = |x: f64| sign * log_ratio(q, s2, x);
    let (l_min, l_max) = if sign > 0.0 {
        (loss_at(x_lo), loss_at(x_hi))
    } else {
        (loss_at(x_hi), loss_at(x_lo))
    };
    if !(l_min.is_finite() && l_max.is_finite()) {
        return Err(crate::Error::OutOfRange(format!(
            "one step's privacy loss range [{l_min}, {l_max}] is not finite (q = {q}, σ = {sigma})"
        )));
    }
    // One more grid point on each side than the computed range needs: the
    // range itself is rounded (by ~1e-18 near loss 0), which at σ ≳ 1e16,
    // where one step's loss is below that, put the whole upper half of the
    // distribution at +∞.
    let (k_lo, k_hi) = ((l_min / d).floor() - 1.0, (l_max / d).ceil() + 1.0);
    let span = k_hi - k_lo + 1.0;
    let max = config.max_grid_points.min(MAX_STEP_GRID);
    if span.is_nan() || span > max as f64 {
        return Err(crate::Error::OutOfRange(format!(
            "one step's privacy loss spans {span:.3e} grid points (more than {max}); \
             σ = {sigma} is too small for value_discretization = {d}: use RDP or a coarser grid"
        )));
    }
    let k_lo = k_lo as i64;
    Ok(Grid {
        k_lo,
        k_hi: (k_hi as i64).max(k_lo + 1),
    })
}

/// The pessimistic PLD of one step.
pub(crate) fn discretise(
    q: f64,
    sigma: f64,
    direction: Direction,
    config: &PldConfig,
) -> Result<Pmf> {
    let Grid { k_lo, k_hi } = grid(q, sigma, direction, config)?;
    let d = config.value_discretization;
    let s2 = sigma * sigma;
    // Weights of (N(0, σ²), N(1, σ²)) in P.
    let p = match direction {
        Direction::Remove => [1.0 - q, q],
        Direction::Add => [1.0, 0.0],
    };
    let sign = sign(direction);
    let len = (k_hi - k_lo + 1) as usize;
    // The x at which the loss is kΔ. The loss rises with x in the remove
    // direction and falls in the add direction.
    let edge = |k: i64| -> Edge {
        let l = sign * k as f64 * d;
        Edge::at(
            inverse_log_ratio(q, s2, l).unwrap_or(f64::NEG_INFINITY),
            sigma,
        )
    };
    let (minus_infinity, plus_infinity) = (
        Edge::at(f64::NEG_INFINITY, sigma),
        Edge::at(f64::INFINITY, sigma),
    );
    // Connect the dots (Doroshenko et al. 2022): the P-mass of each interval
    // is split between its two end points so that both its P-mass and its
    // Q-mass (mass · e^{−loss}) are kept. The discrete pair then dominates
    // the true one: δ(ε) is the chord of the true δ, convex in e^ε.
    //
    // The share `w` that goes to the upper end depends only on where the
    // interval's mean loss `ℓ = ln(P-mass / Q-mass)` lies in it
    // (`u = ℓ − kΔ ∈ [0, Δ]`): `w = (1 − e^{−u}) / (1 − e^{−Δ})`. The two
    // ends then get `w·pm` and `pm − w·pm`, so no mass is created or lost by
    // rounding: splitting each end's mass from differences of nearly equal
    // numbers (as the textbook formulas do) erred by ~1e-16/Δ of the mass
    // per interval, which `T` ≥ 1e7 compositions turned into a few percent of
    // missing (optimistic) mass. `w` is rounded up by a bound on its own
    // error — moving mass to a higher loss is always pessimistic.
    let one_minus_shrink = -(-d).exp_m1();
    let mut probs = vec![0.0; len];
    let mut current = edge(k_lo);
    // Losses ≤ k_lo·Δ: rounded up to k_lo·Δ (pessimistic).
    probs[0] = match direction {
        Direction::Remove => minus_infinity.mixture_mass_to(&current, p),
        Direction::Add => current.mixture_mass_to(&plus_infinity, p),
    };
    for k in k_lo..k_hi {
        let next = edge(k + 1);
        // The losses in (kΔ, (k+1)Δ].
        let (lo_edge, hi_edge) = match direction {
            Direction::Remove => (&current, &next),
            Direction::Add => (&next, &current),
        };
        let pm = lo_edge.mixture_mass_to(hi_edge, p);
        let share = upper_share(q, sign, k as f64 * d, one_minus_shrink, lo_edge, hi_edge);
        current = next;
        let upper = (pm * share).min(pm);
        let lower = pm - upper;
        let i = (k - k_lo) as usize;
        probs[i] += lower;
        probs[i + 1] += upper;
    }
    // Losses above k_hi·Δ: infinite (pessimistic), computed directly as a
    // tail rather than as 1 − (1 − tail).
    let infinity_mass = match direction {
        Direction::Remove => current.mixture_mass_to(&plus_infinity, p),
        Direction::Add => minus_infinity.mixture_mass_to(&current, p),
    };
    Pmf::new(d, k_lo, probs, infinity_mass).checked()
}

/// The share of an interval's P-mass that connect-the-dots puts at its upper
/// end `(k+1)Δ`, rounded up by a bound on its rounding error; `1` (all of
/// it, the classic pessimistic rounding) wherever the masses are too small
/// to resolve the split. `k_d` is `kΔ`, `one_minus_shrink` is `1 − e^{−Δ}`.
fn upper_share(q: f64, sign: f64, k_d: f64, one_minus_shrink: f64, a: &Edge, b: &Edge) -> f64 {
    let (m0, m1) = (a.mass_to(b, 0), a.mass_to(b, 1));
    if !(m0 >= f64::MIN_POSITIVE && m1 >= f64::MIN_POSITIVE) {
        return 1.0;
    }
    // ln(P-mass/Q-mass) in the remove direction: ln(1 − q + q·m1/m0),
    // with only q·(m1/m0 − 1) carrying rounding (damped by q).
    let ratio = m1 / m0;
    let g = if ratio.is_finite() && ratio < 1e300 {
        (q * (ratio - 1.0)).ln_1p()
    } else {
        log_add((-q).ln_1p(), q.ln() + m1.ln() - m0.ln())
    };
    let loss = sign * g;
    // Relative error of each mass, a difference of two tails each good to a
    // few ulps; the error of `loss` that they and the logarithms cause.
    let eps = f64::EPSILON;
    let rel = |i: usize, m: f64| 16.0 * eps * (a.tail[i] + b.tail[i] + m) / m;
    let weight = if ratio.is_finite() {
        (q * ratio / (1.0 - q + q * ratio)).min(1.0)
    } else {
        1.0
    };
    let loss_error =
        weight * (rel(0, m0) + rel(1, m1) + 4.0 * eps) + 8.0 * eps * (loss.abs() + k_d.abs());
    let u = loss - k_d;
    let share = -(-u).exp_m1() / one_minus_shrink + loss_error / one_minus_shrink;
    if share.is_nan() {
        return 1.0;
    }
    share.clamp(0.0, 1.0)
}

/// Most grid points one step's distribution may have (2²⁴ ≈ 1.7e7, 128 MiB):
/// beyond it σ is far too small for the grid, and RDP answers instead.
const MAX_STEP_GRID: usize = 1 << 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_keep_all_mass() {
        for direction in [Direction::Remove, Direction::Add] {
            for (q, sigma) in [(0.01, 1.0), (1.0, 2.0), (0.3, 0.5)] {
                let pmf = discretise(q, sigma, direction, &PldConfig::default()).unwrap();
                let total: f64 = pmf.iter().map(|(_, p)| p).sum::<f64>() + pmf.infinity_mass();
                assert!(
                    (total - 1.0).abs() < 1e-12,
                    "{direction:?} q={q} σ={sigma}: {total}"
                );
            }
        }
    }

    #[test]
    fn should_give_gaussian_mean_loss_at_q_one() {
        // With q = 1 the loss is N(μ, 2μ) with μ = 1/(2σ²); rounding up shifts
        // the mean by at most Δ.
        let sigma = 2.0;
        let pmf = discretise(1.0, sigma, Direction::Remove, &PldConfig::default()).unwrap();
        let mean: f64 = pmf.iter().map(|(l, p)| l * p).sum();
        let mu = 1.0 / (2.0 * sigma * sigma);
        assert!(mean >= mu - 1e-9 && mean <= mu + 1e-4, "{mean} vs {mu}");
    }
}
