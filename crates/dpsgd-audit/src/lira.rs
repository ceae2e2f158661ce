//! The likelihood-ratio attack (LiRA; Carlini et al. 2022, "Membership
//! Inference Attacks From First Principles").
//!
//! Shadow models are trained on random halves of the population, so every
//! record is IN some shadows' training sets and OUT of the others. For a
//! record, the logit-scaled confidence `φ` of its label
//! ([`ScoreKind::LogitScaled`](crate::scores::ScoreKind::LogitScaled)) is
//! close to Gaussian across shadows of each kind. The target model's `φ` is
//! then scored:
//!
//! * **online**: `ln N(φ; μ_in, σ_in²) − ln N(φ; μ_out, σ_out²)`;
//! * **offline** (OUT shadows only): `ln Φ((φ − μ_out)/σ_out)` — how far
//!   above the non-member distribution the record sits.
//!
//! With few shadows the per-record variances are noisy: **fixed variance**
//! uses one σ for all records (the pooled standard deviation of every
//! record's IN, respectively OUT, scores about their own means).

use crate::error::{Result, invalid};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::erf::erfc;

/// One record's shadow statistics: `φ` under the shadows that trained on it
/// and under those that did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowScores {
    /// `φ` of the record in shadow models that had it in training.
    pub inside: Vec<f64>,
    /// `φ` of the record in shadow models that did not.
    pub outside: Vec<f64>,
}

/// Which LiRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiraConfig {
    /// Use IN shadows too (online) or only OUT shadows (offline).
    pub online: bool,
    /// One pooled σ for all records instead of each record's own.
    pub fixed_variance: bool,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sum of squared deviations from the mean.
fn squares(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum()
}

/// Pooled standard deviation of each group about its own mean.
fn pooled_sd<'a>(groups: impl Iterator<Item = &'a [f64]>) -> f64 {
    let (mut ss, mut dof) = (0.0, 0.0);
    for g in groups {
        if g.len() > 1 {
            ss += squares(g);
            dof += (g.len() - 1) as f64;
        }
    }
    if dof > 0.0 {
        (ss / dof).sqrt()
    } else {
        f64::NAN
    }
}

/// Smallest standard deviation used, against zero-variance shadows.
const MIN_SD: f64 = 1e-6;

fn log_normal_pdf(x: f64, mu: f64, sd: f64) -> f64 {
    let z = (x - mu) / sd;
    -0.5 * z * z - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// `ln Φ(z)` without saturating: for z > 0 as `ln(1 − ½ erfc(z/√2))`,
/// which keeps confident members apart up to z ≈ 38 (the plain
/// `ln Φ(z)` is exactly 0 beyond z ≈ 8.3, and ties would hide them at low
/// FPR), and the CDF's own logarithm below.
fn log_normal_cdf(z: f64) -> f64 {
    if z > 0.0 {
        (-0.5 * erfc(z / std::f64::consts::SQRT_2)).ln_1p()
    } else {
        Normal::new(0.0, 1.0).map_or(f64::NAN, |n| n.cdf(z).ln())
    }
}

/// LiRA scores of the target model's `φ` for each record, given each
/// record's shadow scores (higher = more likely a member).
///
/// # Errors
///
/// [`Error::InvalidParameter`](crate::Error::InvalidParameter) when the
/// lengths differ, a score is NaN, or a record lacks the shadows the
/// variant needs (OUT always; IN for online; two per group for per-example
/// variance).
pub fn lira_scores(
    target: &[f64],
    shadows: &[ShadowScores],
    config: LiraConfig,
) -> Result<Vec<f64>> {
    if target.len() != shadows.len() {
        return Err(invalid(
            "shadows",
            shadows.len(),
            format!("need one entry per target score ({})", target.len()),
        ));
    }
    let all = target.iter().chain(
        shadows
            .iter()
            .flat_map(|s| s.inside.iter().chain(&s.outside)),
    );
    if let Some(x) = all.clone().find(|x| x.is_nan()) {
        return Err(invalid("score", x, "LiRA scores must not be NaN"));
    }
    let need = if config.fixed_variance { 1 } else { 2 };
    for (i, s) in shadows.iter().enumerate() {
        if s.outside.len() < need || (config.online && s.inside.len() < need) {
            return Err(invalid(
                "shadows",
                i,
                format!("record {i} needs at least {need} OUT (and IN, online) shadow scores"),
            ));
        }
    }
    let fixed_out = pooled_sd(shadows.iter().map(|s| s.outside.as_slice()));
    let fixed_in = pooled_sd(shadows.iter().map(|s| s.inside.as_slice()));
    let sd = |group: &[f64], pooled: f64| -> f64 {
        let own = if config.fixed_variance || group.len() < 2 {
            pooled
        } else {
            (squares(group) / (group.len() - 1) as f64).sqrt()
        };
        if own.is_finite() {
            own.max(MIN_SD)
        } else {
            MIN_SD
        }
    };
    Ok(target
        .iter()
        .zip(shadows)
        .map(|(&phi, s)| {
            let (mu_out, sd_out) = (mean(&s.outside), sd(&s.outside, fixed_out));
            if config.online {
                let (mu_in, sd_in) = (mean(&s.inside), sd(&s.inside, fixed_in));
                log_normal_pdf(phi, mu_in, sd_in) - log_normal_pdf(phi, mu_out, sd_out)
            } else {
                log_normal_cdf((phi - mu_out) / sd_out)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_keep_offline_scores_apart_far_in_the_tail() {
        let n = Normal::new(0.0, 1.0).unwrap();
        for z in [-5.0, -1.0, 0.0, 0.5, 3.0] {
            assert!((log_normal_cdf(z) - n.cdf(z).ln()).abs() < 1e-12, "z = {z}");
        }
        // Where ln Φ rounds to 0, the scores still increase with z.
        let (a, b, c) = (
            log_normal_cdf(9.0),
            log_normal_cdf(12.0),
            log_normal_cdf(20.0),
        );
        assert!(a < b && b < c && c < 0.0, "{a} {b} {c}");
        assert!((a / -(0.5 * erfc(9.0 / std::f64::consts::SQRT_2)) - 1.0).abs() < 1e-12);
    }
    use crate::metrics::Roc;
    use rand::Rng;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use rand_distr::StandardNormal;
    use statrs::distribution::Normal;

    /// A synthetic population with a known answer: record i's φ is
    /// N(μ_i, 1) when OUT and N(μ_i + 2, 1) when IN, with μ_i spread over
    /// [−5, 5]. A global threshold on φ barely separates members (the
    /// spread of μ_i hides the shift); LiRA, which calibrates per record,
    /// recovers the ideal test's AUC Φ(2/√2) = 0.921.
    #[test]
    fn should_recover_the_per_record_test_on_a_synthetic_population() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let n = 2000;
        let shadows_each = 16;
        let mut members = Vec::new();
        let mut non_members = Vec::new();
        let mut target = Vec::new();
        let mut shadows = Vec::new();
        let mut is_member = Vec::new();
        for i in 0..n {
            let mu = -5.0 + 10.0 * i as f64 / n as f64;
            let member = rng.random::<bool>();
            let phi = mu + if member { 2.0 } else { 0.0 } + rng.sample::<f64, _>(StandardNormal);
            target.push(phi);
            is_member.push(member);
            shadows.push(ShadowScores {
                inside: (0..shadows_each)
                    .map(|_| mu + 2.0 + rng.sample::<f64, _>(StandardNormal))
                    .collect(),
                outside: (0..shadows_each)
                    .map(|_| mu + rng.sample::<f64, _>(StandardNormal))
                    .collect(),
            });
        }
        let split = |scores: &[f64], m: &mut Vec<f64>, o: &mut Vec<f64>| {
            m.clear();
            o.clear();
            for (s, &member) in scores.iter().zip(&is_member) {
                if member { m.push(*s) } else { o.push(*s) }
            }
        };
        split(&target, &mut members, &mut non_members);
        let global = Roc::new(&members, &non_members).unwrap().auc;
        let ideal = Normal::new(0.0, 1.0).unwrap().cdf(2.0 / 2f64.sqrt());
        for (online, fixed) in [(true, false), (true, true), (false, false), (false, true)] {
            let config = LiraConfig {
                online,
                fixed_variance: fixed,
            };
            let scores = lira_scores(&target, &shadows, config).unwrap();
            split(&scores, &mut members, &mut non_members);
            let roc = Roc::new(&members, &non_members).unwrap();
            assert!(
                (roc.auc - ideal).abs() < 0.03,
                "{config:?}: AUC {} vs ideal {ideal}",
                roc.auc
            );
            assert!(
                roc.auc > global + 0.1,
                "{config:?}: {} vs global {global}",
                roc.auc
            );
            assert!(roc.tpr_at_fpr(0.01) > 0.05, "{config:?}");
        }
    }

    #[test]
    fn should_refuse_records_without_shadows() {
        let config = LiraConfig {
            online: true,
            fixed_variance: false,
        };
        let one = ShadowScores {
            inside: vec![1.0, 2.0],
            outside: vec![0.0],
        };
        assert!(lira_scores(&[0.0], std::slice::from_ref(&one), config).is_err());
        assert!(lira_scores(&[0.0, 1.0], &[one], config).is_err());
        let ok = ShadowScores {
            inside: vec![1.0, 2.0],
            outside: vec![0.0, 0.5],
        };
        assert!(lira_scores(&[f64::NAN], std::slice::from_ref(&ok), config).is_err());
        assert_eq!(lira_scores(&[1.0], &[ok], config).unwrap().len(), 1);
    }
}
