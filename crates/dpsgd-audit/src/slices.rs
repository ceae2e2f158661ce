//! Leakage by slice: an attack that looks harmless on average can expose a
//! class or the hardest records. Each slice (a class, or a range of loss
//! percentiles) gets its own ROC, and the most exposed slice is named rather
//! than averaged away.
//!
//! Small slices are noisy, and the largest of twenty noisy advantages looks
//! like a finding. Each slice's advantage `D = max |TPR − FPR|` is the
//! two-sample Kolmogorov–Smirnov statistic of its members' against its
//! non-members' scores, so it comes with a p-value (the chance of an
//! advantage at least this large if the attack could not tell the slice's
//! members from its non-members), and a Bonferroni-adjusted one over the
//! slices of the attack: only a slice whose adjusted p-value is small is
//! evidence of exposure.

use crate::error::{Result, invalid};
use crate::metrics::Roc;
use serde::{Deserialize, Serialize};

/// One record as an attack saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    /// The attack's membership score (higher = more likely a member).
    pub score: f64,
    /// Whether the record was in the training set.
    pub member: bool,
    /// Its class label.
    pub label: usize,
    /// Its loss under the target model (for percentile slices).
    pub loss: f64,
}

/// The attack's figures on one slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// `class 3` or `loss percentile 90–100`.
    pub name: String,
    /// Members and non-members in the slice.
    pub counts: (usize, usize),
    /// ROC AUC within the slice.
    pub auc: f64,
    /// Membership advantage `max |TPR − FPR|` within the slice.
    pub advantage: f64,
    /// TPR at 1% FPR within the slice.
    pub tpr_at_fpr_0_01: f64,
    /// The two-sample Kolmogorov–Smirnov p-value of `advantage` (see
    /// [`ks_p_value`]): how often an attack that cannot tell members from
    /// non-members would show an advantage this large on a slice this size.
    /// Absent in reports written before it existed.
    #[serde(default)]
    pub p_value: Option<f64>,
    /// `p_value` times the number of slices of the attack, capped at 1
    /// (Bonferroni): below 0.05, the slice's exposure is not a fluke of
    /// looking at many slices.
    #[serde(default)]
    pub p_value_adjusted: Option<f64>,
}

/// Above this many member × non-member pairs [`ks_p_value`] uses the
/// asymptotic distribution (accurate there) instead of the exact one.
pub const KS_EXACT_LIMIT: usize = 4_000_000;

/// The p-value of a two-sample Kolmogorov–Smirnov statistic `d` between
/// samples of sizes `n` and `m`: `P(D ≥ d)` when both samples come from the
/// same continuous distribution.
///
/// * Exact for `n·m ≤` [`KS_EXACT_LIMIT`]: under the null every ordering of
///   the `n + m` pooled values is equally likely, i.e. a uniform random
///   lattice path from `(0, 0)` to `(n, m)`, and `D < d` means the path
///   stays inside `|i/n − j/m| < d`. The probability of staying inside is
///   a dynamic programme over the lattice, carried as the fraction of paths
///   to each point (so nothing overflows): `u(i, j) = u(i−1, j)·i/(i+j) +
///   u(i, j−1)·j/(i+j)` (Hodges, *The significance probability of the
///   Smirnov two-sample test*, Ark. Mat. 3, 1958).
/// * Otherwise Kolmogorov's limiting distribution with Stephens' correction
///   (M. A. Stephens, JRSS B 32, 1970; Numerical Recipes §14.3):
///
/// ```text
/// p = Q_KS(λ),   λ = (√nₑ + 0.12 + 0.11/√nₑ) · d,   nₑ = n·m/(n + m),
/// Q_KS(λ) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²λ²}
/// ```
///
/// summed for `λ < 1.18` in its Jacobi-transformed form
/// `1 − (√(2π)/λ) Σ e^{−(2k−1)²π²/(8λ²)}`, which converges fast there.
///
/// Tied scores can only lower `D`, so with ties the p-value is
/// conservative (at least the exact one).
///
/// ```
/// use dpsgd_audit::slices::ks_p_value;
/// // Kolmogorov's 5% critical value is λ = 1.3581 (Smirnov 1948).
/// let n = 1_000_000;
/// let p = ks_p_value(1.3581 / (n as f64 / 2.0).sqrt(), n, n);
/// assert!((p - 0.05).abs() < 1e-3);
/// // Exact for small samples: 3 vs 3 values completely separated happens
/// // for 2 of the C(6, 3) = 20 orderings.
/// assert!((ks_p_value(1.0, 3, 3) - 0.1).abs() < 1e-12);
/// ```
pub fn ks_p_value(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 || d <= 0.0 {
        return 1.0;
    }
    if n.saturating_mul(m) <= KS_EXACT_LIMIT {
        ks_exact(d, n, m)
    } else {
        ks_asymptotic(d, n, m)
    }
}

fn ks_exact(d: f64, n: usize, m: usize) -> f64 {
    // A statistic computed as |i/n − j/m| elsewhere may differ in the last
    // bit: points within 1e-12 of d count as reaching it.
    let inside = |i: usize, j: usize| (i as f64 / n as f64 - j as f64 / m as f64).abs() < d - 1e-12;
    // u[j]: the fraction of the paths to (i, j) that stayed inside.
    let mut u = vec![0.0f64; m + 1];
    for i in 0..=n {
        for j in 0..=m {
            u[j] = if !inside(i, j) {
                0.0
            } else if i == 0 && j == 0 {
                1.0
            } else {
                let total = (i + j) as f64;
                let from_left = if j > 0 {
                    u[j - 1] * j as f64 / total
                } else {
                    0.0
                };
                let from_below = if i > 0 { u[j] * i as f64 / total } else { 0.0 };
                from_left + from_below
            };
        }
    }
    (1.0 - u[m]).clamp(0.0, 1.0)
}

fn ks_asymptotic(d: f64, n: usize, m: usize) -> f64 {
    let ne = (n as f64 * m as f64) / (n + m) as f64;
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d.min(1.0);
    let p = if lambda < 1.18 {
        let y = (-std::f64::consts::PI.powi(2) / (8.0 * lambda * lambda)).exp();
        // Σ_{k≥1} y^{(2k−1)²}: four terms reach double precision here.
        let sum = y + y.powi(9) + y.powi(25) + y.powi(49);
        1.0 - (2.0 * std::f64::consts::PI).sqrt() / lambda * sum
    } else {
        let x = (-2.0 * lambda * lambda).exp();
        // Σ (−1)^{k−1} x^{k²}: four terms reach double precision here.
        2.0 * (x - x.powi(4) + x.powi(9) - x.powi(16))
    };
    p.clamp(0.0, 1.0)
}

/// Slices with fewer members or non-members than this are skipped: their
/// figures would be noise.
pub const MIN_SLICE: usize = 10;

fn slice(name: String, records: &[&Record]) -> Option<Slice> {
    let members: Vec<f64> = records
        .iter()
        .filter(|r| r.member)
        .map(|r| r.score)
        .collect();
    let others: Vec<f64> = records
        .iter()
        .filter(|r| !r.member)
        .map(|r| r.score)
        .collect();
    if members.len() < MIN_SLICE || others.len() < MIN_SLICE {
        return None;
    }
    let roc = Roc::new(&members, &others).ok()?;
    let advantage = roc.advantage();
    Some(Slice {
        name,
        counts: roc.counts,
        auc: roc.auc,
        advantage,
        tpr_at_fpr_0_01: roc.tpr_at_fpr(0.01),
        p_value: Some(ks_p_value(advantage, members.len(), others.len())),
        p_value_adjusted: None,
    })
}

/// Per-class slices and `buckets` loss-percentile slices (of the pooled
/// losses, members and non-members together), most exposed first (by
/// advantage, then AUC), each with its Kolmogorov–Smirnov p-value and the
/// Bonferroni-adjusted one over the slices returned. Slices with fewer than
/// [`MIN_SLICE`] members or non-members are left out.
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for no
/// records, a NaN score or loss, or `buckets = 0`.
pub fn slices(records: &[Record], buckets: usize) -> Result<Vec<Slice>> {
    if records.is_empty() {
        return Err(invalid("records", 0, "need at least one record"));
    }
    if buckets == 0 {
        return Err(invalid("buckets", 0, "need at least one percentile bucket"));
    }
    if let Some(r) = records.iter().find(|r| r.score.is_nan() || r.loss.is_nan()) {
        return Err(invalid(
            "record",
            format!("{r:?}"),
            "scores and losses must not be NaN",
        ));
    }
    let mut out = Vec::new();
    let classes = records.iter().map(|r| r.label).max().unwrap_or(0) + 1;
    for c in 0..classes {
        let in_class: Vec<&Record> = records.iter().filter(|r| r.label == c).collect();
        out.extend(slice(format!("class {c}"), &in_class));
    }
    let mut by_loss: Vec<&Record> = records.iter().collect();
    by_loss.sort_by(|a, b| a.loss.total_cmp(&b.loss));
    let n = by_loss.len();
    for b in 0..buckets {
        let (start, end) = (b * n / buckets, (b + 1) * n / buckets);
        let name = format!(
            "loss percentile {}–{}",
            100 * b / buckets,
            100 * (b + 1) / buckets
        );
        out.extend(slice(name, &by_loss[start..end]));
    }
    let tested = out.len() as f64;
    for s in &mut out {
        s.p_value_adjusted = s.p_value.map(|p| (p * tested).min(1.0));
    }
    out.sort_by(|a, b| {
        b.advantage
            .total_cmp(&a.advantage)
            .then(b.auc.total_cmp(&a.auc))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class 1's members are perfectly separable, class 0's not at all: the
    /// average hides it, the slices name it.
    #[test]
    fn should_name_the_most_exposed_class() {
        let mut records = Vec::new();
        for i in 0..40 {
            let x = f64::from(i);
            // Class 0: members and non-members score alike.
            records.push(Record {
                score: x,
                member: true,
                label: 0,
                loss: 1.0 + x,
            });
            records.push(Record {
                score: x,
                member: false,
                label: 0,
                loss: 1.5 + x,
            });
            // Class 1: members score above every non-member.
            records.push(Record {
                score: 100.0 + x,
                member: true,
                label: 1,
                loss: 0.01,
            });
            records.push(Record {
                score: -100.0 - x,
                member: false,
                label: 1,
                loss: 50.0,
            });
        }
        let all = slices(&records, 4).unwrap();
        assert_eq!(all[0].name, "class 1");
        assert_eq!(all[0].auc, 1.0);
        assert_eq!(all[0].advantage, 1.0);
        assert_eq!(all[0].counts, (40, 40));
        let class0 = all.iter().find(|s| s.name == "class 0").unwrap();
        assert_eq!(class0.auc, 0.5);
        // Four loss buckets of 40 records each; the lowest-loss bucket is
        // all class-1 members, so it has no non-members and is skipped.
        assert!(all.iter().all(|s| s.name != "loss percentile 0–25"));
        assert!(all.iter().any(|s| s.name == "loss percentile 50–75"));
    }

    /// Kolmogorov's distribution at Smirnov's (1948) tabulated quantiles;
    /// with n = m = 10⁶ Stephens' correction moves λ by less than 2·10⁻⁴.
    #[test]
    fn should_match_the_tabulated_kolmogorov_quantiles() {
        let n = 1_000_000;
        let root = (n as f64 / 2.0).sqrt();
        for (lambda, alpha) in [
            (1.2238, 0.10),
            (1.3581, 0.05),
            (1.4802, 0.025),
            (1.6276, 0.01),
            (1.9495, 0.001),
        ] {
            let p = ks_asymptotic(lambda / root, n, n);
            assert!(
                (p - alpha).abs() < 0.02 * alpha + 1e-4,
                "λ = {lambda}: p {p} vs {alpha}"
            );
        }
        // The two series meet at λ = 1.18.
        let below = ks_asymptotic((1.18 - 1e-9) / root, n, n);
        let above = ks_asymptotic((1.18 + 1e-9) / root, n, n);
        assert!((below - above).abs() < 1e-7, "{below} vs {above}");
        assert_eq!(ks_p_value(0.0, 10, 10), 1.0);
        assert_eq!(ks_p_value(0.5, 0, 10), 1.0);
        assert!(ks_p_value(1.0, 500, 500) < 1e-100);
    }

    /// The exact p-value against brute force: every one of the C(n+m, n)
    /// orderings of the pooled sample enumerated, for small n and m.
    #[test]
    fn should_match_the_enumerated_distribution() {
        fn orderings(n: usize, m: usize) -> Vec<Vec<bool>> {
            if n == 0 && m == 0 {
                return vec![Vec::new()];
            }
            let mut out = Vec::new();
            if n > 0 {
                for mut rest in orderings(n - 1, m) {
                    rest.insert(0, true);
                    out.push(rest);
                }
            }
            if m > 0 {
                for mut rest in orderings(n, m - 1) {
                    rest.insert(0, false);
                    out.push(rest);
                }
            }
            out
        }
        for (n, m) in [(3, 3), (4, 6), (5, 7), (6, 6)] {
            let all = orderings(n, m);
            let stats: Vec<f64> = all
                .iter()
                .map(|order| {
                    let (mut i, mut j, mut d) = (0.0, 0.0, 0.0f64);
                    for &member in order {
                        if member {
                            i += 1.0
                        } else {
                            j += 1.0
                        }
                        d = d.max((i / n as f64 - j / m as f64).abs());
                    }
                    d
                })
                .collect();
            for &d in &stats {
                let at_least = stats.iter().filter(|&&s| s >= d - 1e-12).count();
                let want = at_least as f64 / all.len() as f64;
                let got = ks_p_value(d, n, m);
                assert!(
                    (got - want).abs() < 1e-12,
                    "n {n}, m {m}, d {d}: {got} vs {want}"
                );
            }
        }
    }

    /// Where the exact and the asymptotic computations meet (about
    /// n·m = KS_EXACT_LIMIT) they agree to 0.005 over the range of p that
    /// matters.
    #[test]
    fn should_agree_with_the_asymptotic_distribution_for_large_samples() {
        let (n, m) = (1500, 2000);
        let ne = (n * m) as f64 / (n + m) as f64;
        for lambda in [0.8, 1.0, 1.2238, 1.3581, 1.6276] {
            let d = lambda / ne.sqrt();
            let (exact, asymptotic) = (ks_exact(d, n, m), ks_asymptotic(d, n, m));
            assert!(
                (exact - asymptotic).abs() < 0.005,
                "λ = {lambda}: exact {exact} vs asymptotic {asymptotic}"
            );
        }
    }

    /// Against an independent reference: the permutation distribution of
    /// the advantage for one fixed pair of samples (4 000 relabellings,
    /// seeded). Tolerance 0.03: the permutation estimate's standard error
    /// is below 0.008.
    #[test]
    fn should_agree_with_a_permutation_test() {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(17);
        for (n, m, shift) in [
            (60, 60, 0.12),
            (40, 90, 0.15),
            (100, 100, 0.1),
            (30, 30, 0.0),
        ] {
            let members: Vec<f64> = (0..n).map(|_| rng.random::<f64>() + shift).collect();
            let others: Vec<f64> = (0..m).map(|_| rng.random::<f64>()).collect();
            let d = Roc::new(&members, &others).unwrap().advantage();
            let mut pooled: Vec<f64> = members.iter().chain(&others).copied().collect();
            let trials = 4000;
            let mut at_least = 0;
            for _ in 0..trials {
                pooled.shuffle(&mut rng);
                let (a, b) = pooled.split_at(n);
                if Roc::new(a, b).unwrap().advantage() >= d - 1e-12 {
                    at_least += 1;
                }
            }
            let permutation = f64::from(at_least) / f64::from(trials);
            let p = ks_p_value(d, n, m);
            assert!(
                (p - permutation).abs() < 0.03,
                "n {n}, m {m}: asymptotic {p} vs permutation {permutation}"
            );
        }
    }

    /// Under the null (members and non-members alike), about 5% of slices
    /// have p < 0.05, and the Bonferroni-adjusted p-value keeps the chance
    /// that ANY of 20 slices looks exposed near 5%: 1 000 simulated
    /// attacks of 20 slices of 50 + 50 records, seeded. The test is
    /// conservative for small samples, hence the lower bounds' slack.
    #[test]
    fn should_hold_its_false_alarm_rate_under_the_null() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let (attacks, per_attack) = (1000, 20);
        let (mut raw_alarms, mut any_adjusted) = (0, 0);
        for _ in 0..attacks {
            let records: Vec<Record> = (0..per_attack * 100)
                .map(|i| Record {
                    score: rng.random(),
                    member: i % 2 == 0,
                    label: i / 100,
                    loss: rng.random(),
                })
                .collect();
            let all = slices(&records, 1).unwrap();
            let classes: Vec<&Slice> = all.iter().filter(|s| s.name.starts_with("class")).collect();
            assert_eq!(classes.len(), per_attack);
            raw_alarms += classes.iter().filter(|s| s.p_value.unwrap() < 0.05).count();
            if all.iter().any(|s| s.p_value_adjusted.unwrap() < 0.05) {
                any_adjusted += 1;
            }
        }
        let raw = raw_alarms as f64 / (attacks * per_attack) as f64;
        let family = any_adjusted as f64 / attacks as f64;
        assert!((0.02..0.065).contains(&raw), "raw false-alarm rate {raw}");
        assert!(family < 0.065, "family-wise false-alarm rate {family}");
    }

    #[test]
    fn should_reject_bad_input() {
        assert!(slices(&[], 4).is_err());
        let r = Record {
            score: 0.0,
            member: true,
            label: 0,
            loss: f64::NAN,
        };
        assert!(slices(&[r], 4).is_err());
        let r = Record { loss: 1.0, ..r };
        assert!(slices(&[r], 0).is_err());
        // Too small to slice: no slices, not an error.
        assert!(slices(&[r], 1).unwrap().is_empty());
    }
}
