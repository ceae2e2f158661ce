//! Synthetic stand-ins for benchmarks whose data we cannot ship.
//!
//! [`location_like`] has the shape of the Location-30 membership-inference
//! benchmark (Shokri et al., "Membership Inference Attacks Against Machine
//! Learning Models", IEEE S&P 2017: 5 010 records, 446 binary features, 30
//! classes), a standard membership-inference benchmark (the issue that
//! asked for it measured defences there): sparse binary rows drawn from 30 class profiles of unequal
//! size, with a share of rows mixing two profiles. It is not that data:
//! it reproduces its shape and its difficulty for an over-parameterised
//! MLP (a large gap between training and test accuracy), not its values.
//!
//! ```
//! let data = dpsgd_data::location_like();
//! assert_eq!((data.len(), data.n_features(), data.n_classes()), (5010, 446, 30));
//! assert!(data.features().iter().all(|&x| x == 0.0 || x == 1.0));
//! // Fixed by its definition: the same records on every machine.
//! assert_eq!(data, dpsgd_data::location_like());
//! ```

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The most values (records × features) [`binary_profiles`] draws: 2³⁰,
/// 4 GiB of f32.
pub const MAX_VALUES: usize = 1 << 30;

/// How a sparse binary table is drawn ([`binary_profiles`]).
///
/// Each class `k` has a profile: every feature `j` has a background rate
/// `b_j` (shared by all classes) except the class's `hot_features` "hot"
/// ones, whose rate is drawn in `hot_rate`. A record of class `k` sets each
/// feature independently with its profile's rate; with probability `mix`
/// it also takes the hot features of a second, random class at half their
/// rate (a row between two profiles, the source of the classes' overlap).
/// Class sizes follow weights `0.2 + u²` (`u` uniform in [0, 1)), so the
/// largest class is up to six times the smallest.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryProfiles {
    /// Number of records (> 0).
    pub records: usize,
    /// Number of binary features (≥ `hot_features`).
    pub features: usize,
    /// Number of classes (≥ 2).
    pub classes: usize,
    /// Hot features per class (> 0).
    pub hot_features: usize,
    /// The range of a hot feature's rate, within [0, 1].
    pub hot_rate: (f64, f64),
    /// The largest background rate: `b_j = background · u³`, `u` uniform in
    /// [0, 1) (most features rare, a few common), within [0, 1].
    pub background: f64,
    /// The share of records mixing a second class's profile, in [0, 1].
    pub mix: f64,
    /// The generator's seed.
    pub seed: u64,
}

impl BinaryProfiles {
    /// The settings of [`location_like`].
    pub const LOCATION: Self = Self {
        records: 5010,
        features: 446,
        classes: 30,
        hot_features: 24,
        hot_rate: (0.1, 0.35),
        background: 0.3,
        mix: 0.6,
        seed: 30,
    };
}

/// The Location-30-shaped stand-in: [`binary_profiles`] with
/// [`BinaryProfiles::LOCATION`] (see the module documentation).
///
/// # Panics
///
/// Never: the fixed settings are valid (this crate's tests build it).
pub fn location_like() -> Dataset {
    binary_profiles(&BinaryProfiles::LOCATION).expect("the fixed Location-like settings are valid")
}

/// Draws a sparse binary classification table as [`BinaryProfiles`]
/// describes; features are 0 or 1, labels `0..classes`, the whole table a
/// function of the settings (seed included) only.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when a count is zero or too small (fewer
/// than 2 classes, more hot features than features) or a rate is outside
/// [0, 1].
pub fn binary_profiles(p: &BinaryProfiles) -> Result<Dataset> {
    let invalid = |name: &'static str, value: String, reason: &str| Error::InvalidParameter {
        name,
        value,
        reason: reason.to_owned(),
    };
    if p.records == 0 {
        return Err(invalid("records", "0".into(), "needs at least one record"));
    }
    if p.classes < 2 {
        return Err(invalid(
            "classes",
            p.classes.to_string(),
            "needs at least 2 classes",
        ));
    }
    if p.hot_features == 0 || p.hot_features > p.features {
        return Err(invalid(
            "hot_features",
            p.hot_features.to_string(),
            &format!("needs 1 to {} (the number of features)", p.features),
        ));
    }
    let unit = |x: f64| (0.0..=1.0).contains(&x);
    if !(unit(p.hot_rate.0) && unit(p.hot_rate.1) && p.hot_rate.0 <= p.hot_rate.1) {
        return Err(invalid(
            "hot_rate",
            format!("{:?}", p.hot_rate),
            "needs 0 ≤ lo ≤ hi ≤ 1",
        ));
    }
    if !unit(p.background) || !unit(p.mix) {
        return Err(invalid(
            "background, mix",
            format!("{}, {}", p.background, p.mix),
            "need values in [0, 1]",
        ));
    }
    let Some(values) = p
        .records
        .checked_mul(p.features)
        .filter(|&v| v <= MAX_VALUES)
    else {
        return Err(invalid(
            "records × features",
            format!("{} × {}", p.records, p.features),
            &format!("at most {MAX_VALUES} values"),
        ));
    };
    let mut rng = ChaCha20Rng::seed_from_u64(p.seed);
    let background: Vec<f64> = (0..p.features)
        .map(|_| {
            let u = rng.random::<f64>();
            p.background * u * u * u
        })
        .collect();
    // Each class's hot features and their rates.
    let hot: Vec<Vec<(usize, f64)>> = (0..p.classes)
        .map(|_| {
            sample(&mut rng, p.features, p.hot_features)
                .into_iter()
                .map(|j| (j, rng.random_range(p.hot_rate.0..=p.hot_rate.1)))
                .collect()
        })
        .collect();
    let weights: Vec<f64> = (0..p.classes)
        .map(|_| {
            let u = rng.random::<f64>();
            0.2 + u * u
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut features = Vec::with_capacity(values);
    let mut labels = Vec::with_capacity(p.records);
    let mut rates = vec![0.0; p.features];
    for _ in 0..p.records {
        let mut u = rng.random::<f64>() * total;
        let class = weights
            .iter()
            .position(|&w| {
                u -= w;
                u < 0.0
            })
            .unwrap_or(p.classes - 1);
        rates.copy_from_slice(&background);
        if rng.random_bool(p.mix) {
            let other = (class + rng.random_range(1..p.classes)) % p.classes;
            for &(j, r) in &hot[other] {
                rates[j] = rates[j].max(r / 2.0);
            }
        }
        for &(j, r) in &hot[class] {
            rates[j] = r;
        }
        features.extend(
            rates
                .iter()
                .map(|&r| f32::from(u8::from(rng.random_bool(r)))),
        );
        labels.push(class as u32);
    }
    Dataset::new(features, labels, p.features, p.classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_draw_the_declared_shape_with_every_class_present() {
        let data = location_like();
        assert_eq!(
            (data.len(), data.n_features(), data.n_classes()),
            (5010, 446, 30)
        );
        let mut counts = [0usize; 30];
        for &l in data.labels() {
            counts[l as usize] += 1;
        }
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        // Weights 0.2 + u² in [0.2, 1.2): each class holds some records,
        // the largest at most ~6× (plus sampling noise) the smallest.
        assert!(*lo >= 30 && *hi <= 8 * lo, "class sizes {counts:?}");
        // Sparse rows: the mean density sits between the background's mean
        // (0.3/4 = 0.075) and that plus the hot features' share.
        let density = data.features().iter().sum::<f32>() / data.features().len() as f32;
        assert!((0.07..0.14).contains(&density), "density {density}");
    }

    #[test]
    fn should_follow_the_profiles_and_the_seed() {
        let p = BinaryProfiles {
            records: 4000,
            features: 20,
            classes: 2,
            hot_features: 5,
            hot_rate: (0.9, 0.9),
            background: 0.0,
            mix: 0.0,
            seed: 1,
        };
        let data = binary_profiles(&p).unwrap();
        // Without background or mixing a class sets only its hot features,
        // each with rate 0.9: 5 · 0.9 = 4.5 ones per row.
        let ones: f32 = data.features().iter().sum();
        let per_row = ones / 4000.0;
        // Binomial(20000, 0.9) / 4000: sd ≈ 0.0106; 5 sd.
        assert!((per_row - 4.5).abs() < 0.053, "{per_row}");
        assert_eq!(binary_profiles(&p).unwrap(), data);
        assert_ne!(
            binary_profiles(&BinaryProfiles {
                seed: 2,
                ..p.clone()
            })
            .unwrap(),
            data
        );
    }

    #[test]
    fn should_refuse_settings_that_cannot_be_drawn() {
        let ok = BinaryProfiles::LOCATION;
        for bad in [
            BinaryProfiles {
                records: 0,
                ..ok.clone()
            },
            BinaryProfiles {
                classes: 1,
                ..ok.clone()
            },
            BinaryProfiles {
                hot_features: 0,
                ..ok.clone()
            },
            BinaryProfiles {
                hot_features: 447,
                ..ok.clone()
            },
            BinaryProfiles {
                hot_rate: (0.7, 0.2),
                ..ok.clone()
            },
            BinaryProfiles {
                hot_rate: (0.2, 1.5),
                ..ok.clone()
            },
            BinaryProfiles {
                background: -0.1,
                ..ok.clone()
            },
            BinaryProfiles {
                mix: f64::NAN,
                ..ok.clone()
            },
        ] {
            assert!(binary_profiles(&bad).is_err(), "{bad:?}");
        }
    }
}
