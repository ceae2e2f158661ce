//! **User-level DP**: the unit of privacy is a user who may own many
//! records (a patient's visits, a customer's transactions), not one record.
//!
//! Record-level ε protects each of a user's n records at ε, so the user
//! only at group privacy: about n·ε. User-level DP-SGD bounds what a whole
//! user contributes instead (Levy et al. 2021, "Learning with User-Level
//! Privacy"; McMahan et al. 2018, "Learning Differentially Private
//! Recurrent Language Models", the DP-FedAvg bounded-contribution recipe):
//!
//! 1. **Poisson sampling of users** at rate q = (expected users per batch)
//!    / U, U the number of users ([`crate::PoissonSampler`] over users);
//! 2. each sampled user contributes **at most K of their records**, chosen
//!    uniformly at random without replacement ([`choose_records`]: the
//!    rule looks at the number of the user's records only, never at their
//!    values);
//! 3. the user's contribution is the **mean** of those records' gradients,
//!    $g_u = \frac{1}{m_u}\sum_{r \in S_u} \nabla \ell_r$ with
//!    $m_u = \min(n_u, K)$, clipped **as one vector** to C;
//! 4. noise N(0, σ²C²) on the sum of the users' clipped contributions,
//!    normalised by the expected number of users qU, and the accountant
//!    runs at the user-level q.
//!
//! Adding or removing one user (all their records) changes the sum of
//! clipped contributions by at most C in norm, whatever the number of
//! records they have: the mechanism is the record-level one with users for
//! records, and ε is the record-level accountant's at the user-level q, for
//! **add/remove-one-user** neighbours (as record-level ε is for
//! add/remove-one-record). Replacing one user by another moves the sum by
//! up to 2C: that neighbour is two add/remove steps, covered at group
//! privacy (2ε, (1 + e^ε)δ).
//!
//! **Why the mean and not the sum**: both are bounded by clipping, but the
//! mean keeps a user's contribution on the scale of one record's gradient,
//! so a clipping norm tuned for record-level training carries over, and a
//! heavy user is not clipped harder (relative to their signal) than a
//! light one. With the sum, users with many records would almost always
//! be clipped, and their per-record weight would shrink as 1/n_u anyway.
//!
//! In a batch, each user is one example of `K` consecutive rows (like
//! augmentation multiplicity's views, [`crate::Augmented`]): a user with
//! fewer than K chosen records fills the rest with copies of their first
//! chosen record at **weight 0**, so the loss of the user,
//! $\sum_{s} w_s \ell_s$ with $w_s = 1/m_u$ for a chosen record and 0 for a
//! filler, has exactly $g_u$ as its gradient.

use crate::privacy_engine::PrivacyEngine;
use dpsgd_core::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The unit whose presence ε protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyUnit {
    /// One record (the default): the neighbouring data sets differ in one
    /// record.
    #[default]
    Record,
    /// One user and all their records: the neighbouring data sets differ
    /// in one user. A sampled user contributes at most
    /// `max_records_per_user` of their records (see the module docs).
    User {
        /// K: the most records one user contributes to one step.
        max_records_per_user: usize,
    },
}

impl PrivacyUnit {
    /// `record` or `user`.
    pub fn name(&self) -> &'static str {
        match self {
            PrivacyUnit::Record => "record",
            PrivacyUnit::User { .. } => "user",
        }
    }

    /// K for user-level DP; `None` at record level.
    pub fn max_records_per_user(&self) -> Option<usize> {
        match self {
            PrivacyUnit::Record => None,
            PrivacyUnit::User {
                max_records_per_user,
            } => Some(*max_records_per_user),
        }
    }

    /// Checks K.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for K = 0.
    pub fn validate(&self) -> Result<()> {
        if self.max_records_per_user() == Some(0) {
            return Err(Error::invalid(
                "max_records_per_user",
                0,
                "a user contributes at least one record",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for PrivacyUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which records belong to which user: users are numbered 0..U in the
/// ascending order of their ids, and each user's records are kept in
/// ascending order.
///
/// ```
/// use dpsgd_burn::users::UserIndex;
/// let index = UserIndex::from_ids(&[7, 3, 7, 7])?;
/// assert_eq!(index.num_users(), 2);
/// assert_eq!(index.records_of(0), &[1]); // id 3
/// assert_eq!(index.records_of(1), &[0, 2, 3]); // id 7
/// # Ok::<(), dpsgd_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIndex {
    records: Vec<Vec<usize>>,
    num_records: usize,
}

impl UserIndex {
    /// The index of per-record user ids (`ids[r]` is record r's user).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for no records.
    pub fn from_ids(ids: &[u64]) -> Result<Self> {
        if ids.is_empty() {
            return Err(Error::invalid("users", 0, "the dataset is empty"));
        }
        let mut by_id: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (r, &id) in ids.iter().enumerate() {
            by_id.entry(id).or_default().push(r);
        }
        Ok(Self {
            records: by_id.into_values().collect(),
            num_records: ids.len(),
        })
    }

    /// U.
    pub fn num_users(&self) -> usize {
        self.records.len()
    }

    /// The number of records of all users.
    ///
    /// # Privacy
    ///
    /// A statistic of the private data under user-level DP (one user's
    /// swap changes it): not covered by ε.
    pub fn num_records(&self) -> usize {
        self.num_records
    }

    /// User `u`'s records, ascending.
    ///
    /// # Panics
    ///
    /// When `u ≥ U`.
    pub fn records_of(&self, u: usize) -> &[usize] {
        &self.records[u]
    }

    /// The largest number of records of one user (a statistic of the
    /// private data: not covered by ε).
    pub fn max_records(&self) -> usize {
        self.records.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// One batch of users and the records each contributes, laid out for the
/// engine: `slots` consecutive rows per user (user-major).
#[derive(Debug, Clone, PartialEq)]
pub struct UserBatch {
    /// The sampled users (indices into the [`UserIndex`]), ascending.
    pub users: Vec<usize>,
    /// K = slots per user.
    pub slots: usize,
    /// `users.len()·slots` record indices: each user's chosen records
    /// (ascending), then copies of the first chosen one as fillers.
    pub rows: Vec<usize>,
    /// One weight per row: `1/m_u` for a chosen record, 0 for a filler;
    /// each user's weights sum to 1.
    pub weights: Vec<f32>,
}

impl UserBatch {
    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user was sampled.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// For each of `users`, at most `k` of their records, chosen uniformly at
/// random without replacement (all of them when they have at most `k`),
/// laid out as a [`UserBatch`]. The choice depends on the number of each
/// user's records and the generator only.
///
/// # Panics
///
/// When `k` is 0 or a user is not in `index`.
pub fn choose_records<R: Rng + ?Sized>(
    index: &UserIndex,
    users: &[usize],
    k: usize,
    rng: &mut R,
) -> UserBatch {
    assert!(k > 0, "a user contributes at least one record");
    let mut rows = Vec::with_capacity(users.len() * k);
    let mut weights = Vec::with_capacity(users.len() * k);
    for &u in users {
        let own = index.records_of(u);
        let mut chosen: Vec<usize> = if own.len() <= k {
            own.to_vec()
        } else {
            rand::seq::index::sample(rng, own.len(), k)
                .into_iter()
                .map(|i| own[i])
                .collect()
        };
        chosen.sort_unstable();
        let m = chosen.len();
        let w = 1.0 / m as f32;
        rows.extend_from_slice(&chosen);
        weights.extend(std::iter::repeat_n(w, m));
        rows.extend(std::iter::repeat_n(chosen[0], k - m));
        weights.extend(std::iter::repeat_n(0.0, k - m));
    }
    UserBatch {
        users: users.to_vec(),
        slots: k,
        rows,
        weights,
    }
}

impl PrivacyEngine {
    /// The next Poisson batch of **users** and the records each
    /// contributes (user-level DP: see [`crate::users`]), drawn from the
    /// engine's secret generator. Give [`PrivacyEngine::step`] a batch of
    /// `batch.len()` examples, each the `batch.slots` rows of
    /// `batch.rows` with a loss of `Σ weight·loss` over its rows (e.g. an
    /// [`Augmented`](crate::Augmented) batch with `k = slots`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when the engine is not user-level, or
    /// `users` does not have the sampler's number of users.
    pub fn sample_users(&mut self, users: &UserIndex) -> Result<UserBatch> {
        let Some(k) = self.config.privacy_unit.max_records_per_user() else {
            return Err(Error::invalid(
                "privacy_unit",
                "record",
                "sample_users is for user-level DP: set the privacy unit to user",
            ));
        };
        if users.num_users() != self.sampler.dataset_size() {
            return Err(Error::invalid(
                "users",
                users.num_users(),
                format!(
                    "the sampler was built for {} users",
                    self.sampler.dataset_size()
                ),
            ));
        }
        let sampled = self.sample_batch();
        Ok(choose_records(users, &sampled, k, &mut self.rng))
    }

    /// The unit of privacy ε protects.
    pub fn privacy_unit(&self) -> PrivacyUnit {
        self.config.privacy_unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn should_group_records_by_ascending_id() {
        let index = UserIndex::from_ids(&[5, 1, 5, 9, 1, 5]).unwrap();
        assert_eq!(index.num_users(), 3);
        assert_eq!(index.records_of(0), &[1, 4]);
        assert_eq!(index.records_of(1), &[0, 2, 5]);
        assert_eq!(index.records_of(2), &[3]);
        assert_eq!(index.num_records(), 6);
        assert_eq!(index.max_records(), 3);
        assert!(UserIndex::from_ids(&[]).is_err());
    }

    #[test]
    fn should_pad_light_users_with_zero_weight_fillers() {
        let index = UserIndex::from_ids(&[0, 1, 1, 2, 2, 2, 2, 2]).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let b = choose_records(&index, &[0, 1, 2], 3, &mut rng);
        assert_eq!(b.slots, 3);
        assert_eq!(&b.rows[..3], &[0, 0, 0]);
        assert_eq!(&b.weights[..3], &[1.0, 0.0, 0.0]);
        assert_eq!(&b.rows[3..6], &[1, 2, 1]);
        assert_eq!(&b.weights[3..6], &[0.5, 0.5, 0.0]);
        // The heavy user: 3 distinct of their 5 records, weight 1/3 each.
        let heavy = &b.rows[6..];
        assert!(heavy.windows(2).all(|w| w[0] < w[1]));
        assert!(heavy.iter().all(|r| (3..8).contains(r)));
        assert!(b.weights[6..].iter().all(|&w| (w - 1.0 / 3.0).abs() < 1e-7));
        for u in 0..3 {
            let s: f32 = b.weights[u * 3..u * 3 + 3].iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn should_choose_each_subset_uniformly() {
        // A user with 4 records and K = 2: 6 subsets, each with
        // probability 1/6. 6000 draws: each count ~ Binomial(6000, 1/6),
        // mean 1000, sd 28.9; a 5-sd band.
        let index = UserIndex::from_ids(&[0, 0, 0, 0]).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut counts: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
        for _ in 0..6000 {
            let b = choose_records(&index, &[0], 2, &mut rng);
            *counts.entry(b.rows).or_default() += 1;
        }
        assert_eq!(counts.len(), 6);
        for (subset, c) in counts {
            assert!(
                (f64::from(c) - 1000.0).abs() < 5.0 * 28.9,
                "{subset:?}: {c}"
            );
        }
    }

    #[test]
    fn should_refuse_zero_records_per_user() {
        assert!(
            PrivacyUnit::User {
                max_records_per_user: 0
            }
            .validate()
            .is_err()
        );
        assert!(PrivacyUnit::Record.validate().is_ok());
        assert_eq!(PrivacyUnit::Record.max_records_per_user(), None);
    }
}
