//! Pessimistic discretisation of one step of the Poisson-subsampled Gaussian
//! mechanism.

use super::{PldConfig, Pmf};
use crate::error::Result;
use crate::math::{normal_cdf, normal_sf};
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

/// A mixture of Gaussians with a common σ, with interval probabilities that
/// stay accurate in both tails.
struct Mixture {
    components: Vec<(f64, f64)>, // (weight, mean)
    sigma: f64,
}

impl Mixture {
    /// `P[a < X ≤ b]`, each component computed on the side of its mean where
    /// the tail probabilities do not cancel.
    fn mass(&self, a: f64, b: f64) -> f64 {
        self.components
            .iter()
            .map(|&(w, mu)| {
                let (za, zb) = ((a - mu) / self.sigma, (b - mu) / self.sigma);
                let m = if za >= 0.0 {
                    normal_sf(za) - normal_sf(zb)
                } else {
                    normal_cdf(zb) - normal_cdf(za)
                };
                w * m.max(0.0)
            })
            .sum()
    }
}

/// The x at which the mixture's log ratio `ln(1 − q + q e^{(2x−1)/(2σ²)})`
/// equals `l`, or `None` where `l ≤ ln(1−q)` (below the ratio's range).
fn inverse_log_ratio(q: f64, s2: f64, l: f64) -> Option<f64> {
    // e^l − (1 − q) = expm1(l) + q, accurate for small l.
    let gap = l.exp_m1() + q;
    (gap > 0.0).then(|| s2 * (gap / q).ln() + 0.5)
}

fn log_ratio(q: f64, s2: f64, x: f64) -> f64 {
    let e = (2.0 * x - 1.0) / (2.0 * s2);
    // ln(1 − q + q e^e) = ln(1 + q·expm1(e)); switch form for large e.
    if e < 30.0 {
        (q * e.exp_m1()).ln_1p()
    } else {
        e + q.ln() + ((1.0 - q) * (-e).exp() / q).ln_1p()
    }
}

/// The pessimistic PLD of one step.
pub(crate) fn discretise(
    q: f64,
    sigma: f64,
    direction: Direction,
    config: &PldConfig,
) -> Result<Pmf> {
    let d = config.value_discretization;
    let s2 = sigma * sigma;
    // |Z| beyond z_tail has probability ≤ tail/2 on each side.
    let half_tail = (config.tail_mass_truncation / 2.0).max(1e-300);
    let z_tail = std::f64::consts::SQRT_2 * erfc_inv(2.0 * half_tail);
    let mixture = Mixture {
        components: vec![(1.0 - q, 0.0), (q, 1.0)],
        sigma,
    };
    let plain = Mixture {
        components: vec![(1.0, 0.0)],
        sigma,
    };
    // (P, Q) and the x-range outside of which P has at most `tail` mass.
    let (p, qd, x_lo, x_hi) = match direction {
        Direction::Remove => (&mixture, &plain, -sigma * z_tail, 1.0 + sigma * z_tail),
        Direction::Add => (&plain, &mixture, -sigma * z_tail, sigma * z_tail),
    };
    let sign = if direction == Direction::Remove {
        1.0
    } else {
        -1.0
    };
    let loss_at = |x: f64| sign * log_ratio(q, s2, x);
    let (l_min, l_max) = if sign > 0.0 {
        (loss_at(x_lo), loss_at(x_hi))
    } else {
        (loss_at(x_hi), loss_at(x_lo))
    };
    let k_lo = (l_min / d).floor() as i64;
    let k_hi = ((l_max / d).ceil() as i64).max(k_lo + 1);
    let len = usize::try_from(k_hi - k_lo + 1).unwrap_or(usize::MAX);
    if len > (1 << 26) {
        return Err(crate::Error::Unbounded(format!(
            "one step's privacy loss spans {len} grid points; σ = {sigma} is too small \
             for value_discretization = {d}"
        )));
    }
    // The x-interval on which the loss lies in (kΔ, (k+1)Δ].
    let edge = |k: i64| -> f64 {
        let l = sign * k as f64 * d;
        inverse_log_ratio(q, s2, l).unwrap_or(f64::NEG_INFINITY)
    };
    let interval = |k: i64| -> (f64, f64) {
        match direction {
            Direction::Remove => (edge(k), edge(k + 1)),
            Direction::Add => (edge(k + 1), edge(k)),
        }
    };
    let below = |k: i64| -> (f64, f64) {
        match direction {
            Direction::Remove => (f64::NEG_INFINITY, edge(k)),
            Direction::Add => (edge(k), f64::INFINITY),
        }
    };
    // Connect the dots (Doroshenko et al. 2022): the P-mass of each interval
    // is split between its two end points so that both its P-mass and its
    // Q-mass (mass · e^{−loss}) are kept. The discrete pair then dominates
    // the true one: δ(ε) is the chord of the true δ, convex in e^ε.
    let expm1_d = d.exp_m1();
    let mut probs = vec![0.0; len];
    let (a, b) = below(k_lo);
    // Losses ≤ k_lo·Δ: rounded up to k_lo·Δ (pessimistic).
    probs[0] = p.mass(a, b);
    for k in k_lo..k_hi {
        let (a, b) = interval(k);
        let (pm, qm) = (p.mass(a, b), qd.mass(a, b));
        let e_lo = (k as f64 * d).exp();
        let mut upper = d.exp() * (pm - e_lo * qm) / expm1_d;
        let mut lower = (e_lo * d.exp() * qm - pm) / expm1_d;
        if upper < 0.0 {
            (upper, lower) = (0.0, pm);
        } else if lower < 0.0 {
            (upper, lower) = (pm, 0.0);
        }
        let i = (k - k_lo) as usize;
        probs[i] += lower;
        probs[i + 1] += upper;
    }
    // Losses above k_hi·Δ: infinite (pessimistic), computed directly as a
    // tail rather than as 1 − (1 − tail).
    let infinity_mass = match direction {
        Direction::Remove => p.mass(edge(k_hi), f64::INFINITY),
        Direction::Add => p.mass(f64::NEG_INFINITY, edge(k_hi)),
    };
    Ok(Pmf::new(d, k_lo, probs, infinity_mass))
}

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
