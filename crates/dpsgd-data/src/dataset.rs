//! An in-memory classification data set.

use crate::error::{Error, Result};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::HashSet;

/// Examples with `n_features` f32 features each (row-major) and a class label.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<u32>,
    n_features: usize,
    n_classes: usize,
    /// `[channels, height, width]` for image data (features in that order).
    image_shape: Option<[usize; 3]>,
    /// One user id per example, for user-level DP (see [`Dataset::with_users`]).
    users: Option<Vec<u64>>,
}

/// Feature scaling, fitted on training data and applied to both splits.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    /// Leave the features as they are.
    None,
    /// Divide by a constant (e.g. 255 for bytes, 16 for UCI digits) → [0, 1].
    Divide(f32),
    /// Clip each feature to its declared range `[lo, hi]` and map it to
    /// `[0, 1]`: `x ← (clamp(x, lo, hi) − lo)/(hi − lo)`. With ranges that
    /// are public (declared by the user, or read from a public reference
    /// file) one record never changes another's features.
    Range {
        /// Per-feature lower bounds.
        lo: Vec<f32>,
        /// Per-feature upper bounds (> `lo`).
        hi: Vec<f32>,
    },
    /// A fixed map of each value on its own, fitted to nothing: on the
    /// features marked in `numeric`,
    /// `x ← clamp(sign(x)·ln(1 + |x|), −clip, clip)/clip`, which puts them in
    /// `[−1, 1]`; the others (one-hot indicators, already in `[0, 1]`) are
    /// left as they are. The logarithm brings counts, amounts and
    /// measurements of any magnitude (ages, incomes, areas in the
    /// thousands) to a few units without knowing their range; the clip
    /// bounds every feature, so one record's value can move only its own
    /// row. It reads no statistic of any data set: it costs no privacy.
    SignedLog {
        /// Which features are numeric (transformed).
        numeric: Vec<bool>,
        /// The clip on the logarithm (> 0); `ln(1 + |x|) = clip` at
        /// `|x| = e^clip − 1`.
        clip: f32,
    },
    /// Subtract each feature's mean and divide by its standard deviation.
    ///
    /// # Privacy
    ///
    /// Fitted with [`Dataset::fit_standardize`] on private data, the mean
    /// and standard deviation are exact statistics of that data, outside
    /// any DP guarantee: fit it on public data only.
    Standardize {
        /// Per-feature means.
        mean: Vec<f32>,
        /// Per-feature standard deviations (1 where a feature is constant).
        std: Vec<f32>,
    },
}

impl Dataset {
    /// Builds a data set, checking that the parts fit together.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `features.len() ≠ labels.len() ·
    /// n_features`, a label is ≥ `n_classes`, or a value is not finite.
    pub fn new(
        features: Vec<f32>,
        labels: Vec<u32>,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Self> {
        if n_features == 0 || features.len() != labels.len() * n_features {
            return Err(Error::InvalidParameter {
                name: "features",
                value: features.len().to_string(),
                reason: format!("expected {} examples × {n_features} features", labels.len()),
            });
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(Error::InvalidParameter {
                name: "labels",
                value: l.to_string(),
                reason: format!("labels must be below n_classes = {n_classes}"),
            });
        }
        if let Some(i) = features.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "features",
                value: features[i].to_string(),
                reason: format!("feature {i} is not finite"),
            });
        }
        Ok(Self {
            features,
            labels,
            n_features,
            n_classes,
            image_shape: None,
            users: None,
        })
    }

    /// Declares the features to be images `[channels, height, width]`.
    ///
    /// # Errors
    ///
    /// When the shape does not have `n_features` elements.
    pub fn with_image_shape(mut self, shape: [usize; 3]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.n_features {
            return Err(Error::InvalidParameter {
                name: "image_shape",
                value: format!("{shape:?}"),
                reason: format!("must hold {} features", self.n_features),
            });
        }
        self.image_shape = Some(shape);
        Ok(self)
    }

    /// Attaches one user id per example.
    ///
    /// # Privacy
    ///
    /// With user ids the unit of privacy is a **user**, who may own many
    /// examples: all examples with the same id are one user's, and a
    /// user-level guarantee covers adding or removing all of them at once
    /// (replacing a user is two such steps). The ids are identifiers, never features: no model sees
    /// them. Every data set built from this one ([`Dataset::subset`],
    /// [`Dataset::split`], [`Dataset::split_by_user`], scaling, the
    /// scattering transform, …) keeps each example's id with it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `users.len()` is not the number of
    /// examples.
    pub fn with_users(mut self, users: Vec<u64>) -> Result<Self> {
        if users.len() != self.len() {
            return Err(Error::InvalidParameter {
                name: "users",
                value: users.len().to_string(),
                reason: format!("need one user id per example ({} examples)", self.len()),
            });
        }
        self.users = Some(users);
        Ok(self)
    }

    /// The user id of every example (in the examples' order), when the data
    /// set has them ([`Dataset::with_users`]).
    pub fn users(&self) -> Option<&[u64]> {
        self.users.as_deref()
    }

    /// The number of distinct users, when the data set has user ids.
    pub fn num_users(&self) -> Option<usize> {
        self.users
            .as_ref()
            .map(|u| u.iter().collect::<HashSet<_>>().len())
    }

    /// `built` (made from this data set's examples, in the same order) with
    /// this data set's user ids, if any.
    pub(crate) fn keep_users_of(&self, mut built: Self) -> Self {
        debug_assert_eq!(built.len(), self.len());
        built.users.clone_from(&self.users);
        built
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per example.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Number of classes (labels are `0..n_classes`).
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// The image shape, for image data.
    pub fn image_shape(&self) -> Option<[usize; 3]> {
        self.image_shape
    }

    /// All features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// The features, to transform in place by a per-example map that keeps
    /// every value finite (the crate's own transforms).
    pub(crate) fn features_mut(&mut self) -> &mut [f32] {
        &mut self.features
    }

    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The features of example `i`.
    pub fn example(&self, i: usize) -> &[f32] {
        &self.features[i * self.n_features..(i + 1) * self.n_features]
    }

    /// The examples at `indices` (in that order), features and labels.
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(indices.len() * self.n_features);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.example(i));
            y.push(self.labels[i]);
        }
        (x, y)
    }

    /// A new data set of the examples at `indices` (with their user ids,
    /// when there are some).
    pub fn subset(&self, indices: &[usize]) -> Self {
        let (features, labels) = self.gather(indices);
        let users = self
            .users
            .as_ref()
            .map(|u| indices.iter().map(|&i| u[i]).collect());
        Self {
            features,
            labels,
            users,
            ..self.clone_meta()
        }
    }

    /// The metadata with no examples (and no user ids, but an empty id
    /// list when this data set has ids, so that it stays aligned).
    fn clone_meta(&self) -> Self {
        Self {
            features: Vec::new(),
            labels: Vec::new(),
            n_features: self.n_features,
            n_classes: self.n_classes,
            image_shape: self.image_shape,
            users: self.users.as_ref().map(|_| Vec::new()),
        }
    }

    /// A random split into `(train, test)` with exactly
    /// `round(test_fraction · N)` examples in the test part; the same seed
    /// gives the same split. Both parts are in a random order.
    ///
    /// The split is **not** stratified: which positions go to the test part
    /// is [`Dataset::split_positions`]`(N, test_fraction, seed)`, a function
    /// of the number of examples, the fraction and the seed only.
    ///
    /// # Privacy
    ///
    /// Neither the labels nor the features decide anything: the sizes of
    /// both parts depend on the public `N` alone, and replacing one record
    /// by another (same `N`) leaves every other record where it was (same
    /// part, same place in it) and changes only its own row. A stratified
    /// split would not: rounding `f · n_k` per class makes the training
    /// set's size (and with it the sampling rate, the steps and δ's default,
    /// all released) depend on one record's label, and shuffling each class
    /// separately lets one record re-draw the split of many others. The
    /// assignment is public to anyone who knows the seed (0 when a run is
    /// not seeded), like `N`: it is a function of public inputs, so the DP
    /// argument for the training part does not depend on keeping it secret.
    ///
    /// # Errors
    ///
    /// `test_fraction ∉ (0, 1)`.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let (train, test) = Self::split_positions(self.len(), test_fraction, seed)?;
        Ok((self.subset(&train), self.subset(&test)))
    }

    /// A split into `(train, test)` by **user**: every user's examples go to
    /// the same part. The users are numbered in the order of their first
    /// example in the data (their *slots*), and the slots are split as
    /// [`Dataset::split`] splits positions ([`Dataset::split_positions`] of
    /// the number of users `U`, with `seed`): the `round(test_fraction · U)`
    /// users whose slots fall in its test part form the test part. Examples
    /// keep their order (the file's order) within each part. Without user
    /// ids this is exactly [`Dataset::split`].
    ///
    /// # Privacy
    ///
    /// A user's part depends on their slot, `U` and the seed only, never on
    /// their id, on any record's content or on how many records a user
    /// has: replacing one user's records by others — under the same id or
    /// another one new to the data, at the same place in the file —
    /// leaves every user's part as it was, and the training part keeps its
    /// number of users (user-level accounting's N). The sizes of the parts
    /// in *examples* do depend on the users' record counts: user-level
    /// accounting counts users, not examples, and a report states the
    /// examples as not covered by ε. At the record level a record's user id
    /// is part of the record (moving one record to another user can add a
    /// user, or move a user's first appearance), so a record-level run
    /// splits by position ([`Dataset::split`]) and keeps the ids only to
    /// count them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `test_fraction ∉ (0, 1)`, or (with
    /// user ids) when the split leaves either part without a user (fewer
    /// than two users, or a fraction that rounds to none or all of them).
    pub fn split_by_user(&self, test_fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let Some(users) = &self.users else {
            return self.split(test_fraction, seed);
        };
        // Each record's user slot, in order of first appearance.
        let mut slot_of: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        let slots: Vec<usize> = users
            .iter()
            .map(|&id| {
                let next = slot_of.len();
                *slot_of.entry(id).or_insert(next)
            })
            .collect();
        let n_users = slot_of.len();
        let (_, test_slots) = Self::split_positions(n_users, test_fraction, seed)?;
        let n_test = test_slots.len();
        if n_test == 0 || n_test == n_users {
            return Err(Error::InvalidParameter {
                name: "test_fraction",
                value: test_fraction.to_string(),
                reason: format!(
                    "a user-level split of {n_users} user(s) puts round({test_fraction} · \
                     {n_users}) = {n_test} user(s) in the test part, leaving the {} part with no \
                     user: both parts need at least one user",
                    if n_test == 0 { "test" } else { "training" }
                ),
            });
        }
        let mut in_test = vec![false; n_users];
        for slot in test_slots {
            in_test[slot] = true;
        }
        let (test_idx, train_idx): (Vec<usize>, Vec<usize>) =
            (0..users.len()).partition(|&i| in_test[slots[i]]);
        Ok((self.subset(&train_idx), self.subset(&test_idx)))
    }

    /// This data set without its user ids (a record-level run that only
    /// counts them has no further use for them).
    pub fn without_users(mut self) -> Self {
        self.users = None;
        self
    }

    /// The positions `(train, test)` that [`Dataset::split`] assigns to
    /// each part of a data set of `n` examples: exactly
    /// `round(test_fraction · n)` positions in `test`, the rest in `train`,
    /// each part in a random order.
    ///
    /// Every position gets a pseudo-random key from a ChaCha20 stream
    /// seeded with `seed` (position `i` takes the stream's `i`-th 64-bit
    /// word, so its key does not depend on `n`); the positions with the
    /// smallest keys form the test part. Adding an example at the end
    /// therefore moves at most one other example between the parts.
    ///
    /// # Errors
    ///
    /// `test_fraction ∉ (0, 1)`.
    pub fn split_positions(
        n: usize,
        test_fraction: f64,
        seed: u64,
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(Error::InvalidParameter {
                name: "test_fraction",
                value: test_fraction.to_string(),
                reason: "must be in (0, 1)".into(),
            });
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut keyed: Vec<(u64, usize)> = (0..n).map(|i| (rng.next_u64(), i)).collect();
        // Ties (improbable) broken by position: a total, seed-only order.
        keyed.sort_unstable();
        let n_test = ((n as f64 * test_fraction).round() as usize).min(n);
        let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        let (test, train) = order.split_at(n_test);
        Ok((train.to_vec(), test.to_vec()))
    }

    /// Declares the number of classes from public knowledge (instead of the
    /// largest label + 1 found in the data, which is a statistic of it).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for 0 classes or a label ≥ `n_classes`.
    pub fn with_num_classes(mut self, n_classes: usize) -> Result<Self> {
        if n_classes == 0 {
            return Err(Error::InvalidParameter {
                name: "num_classes",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.labels.iter().any(|&l| l as usize >= n_classes) {
            return Err(Error::InvalidParameter {
                name: "num_classes",
                value: n_classes.to_string(),
                reason: format!(
                    "the data has a label of {} or more: labels must be below the declared count",
                    n_classes
                ),
            });
        }
        self.n_classes = n_classes;
        Ok(self)
    }

    /// A 64-bit FNV-1a hash of the features (as f32 bits), labels, shape
    /// and number of classes, and the user ids when there are some: a
    /// fingerprint that tells data sets apart (not a cryptographic
    /// commitment). Stable across platforms and versions; a data set
    /// without user ids hashes as it did before ids existed.
    pub fn content_hash(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        };
        eat(&(self.n_features as u64).to_le_bytes());
        eat(&(self.n_classes as u64).to_le_bytes());
        eat(&(self.labels.len() as u64).to_le_bytes());
        for x in &self.features {
            eat(&x.to_bits().to_le_bytes());
        }
        for l in &self.labels {
            eat(&l.to_le_bytes());
        }
        if let Some(users) = &self.users {
            eat(b"users");
            eat(&(users.len() as u64).to_le_bytes());
            for u in users {
                eat(&u.to_le_bytes());
            }
        }
        h
    }

    /// Per-feature ranges `[min, max]` of this data, for
    /// [`Scaling::Range`]: fit them on a **public** reference data set only
    /// (a constant feature gets `[min, min + 1]`).
    pub fn fit_range(&self) -> Scaling {
        let d = self.n_features;
        let mut lo = vec![f32::INFINITY; d];
        let mut hi = vec![f32::NEG_INFINITY; d];
        for i in 0..self.len() {
            for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(self.example(i)) {
                *l = l.min(x);
                *h = h.max(x);
            }
        }
        for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
            if !l.is_finite() {
                (*l, *h) = (0.0, 1.0); // no rows
            } else if *h <= *l {
                *h = *l + 1.0;
            }
        }
        Scaling::Range { lo, hi }
    }

    /// Fits a standardisation on this data (see the privacy note on
    /// [`Scaling::Standardize`]: use public data).
    pub fn fit_standardize(&self) -> Scaling {
        let n = self.len().max(1) as f64;
        let d = self.n_features;
        let mut mean = vec![0.0f64; d];
        for i in 0..self.len() {
            for (m, &x) in mean.iter_mut().zip(self.example(i)) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; d];
        for i in 0..self.len() {
            for ((v, &x), m) in var.iter_mut().zip(self.example(i)).zip(&mean) {
                *v += (f64::from(x) - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|v| {
                let s = (v / n).sqrt();
                if s > 1e-12 { s as f32 } else { 1.0 }
            })
            .collect();
        Scaling::Standardize {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// Applies a scaling in place.
    ///
    /// # Panics
    ///
    /// For a [`Scaling::SignedLog`] whose clip is not positive and finite,
    /// or whose mask does not have one entry per feature (a caller's
    /// mistake: [`CsvEncoding::numeric_features`](crate::CsvEncoding::numeric_features)
    /// gives the right one).
    pub fn apply(&mut self, scaling: &Scaling) {
        match scaling {
            Scaling::None => {}
            Scaling::Divide(k) => self.features.iter_mut().for_each(|x| *x /= k),
            Scaling::Range { lo, hi } => {
                for row in self.features.chunks_mut(self.n_features) {
                    for ((x, l), h) in row.iter_mut().zip(lo).zip(hi) {
                        *x = (x.clamp(*l, *h) - l) / (h - l);
                    }
                }
            }
            Scaling::SignedLog { numeric, clip } => {
                assert!(
                    clip.is_finite() && *clip > 0.0,
                    "Scaling::SignedLog: the clip must be positive and finite, not {clip}"
                );
                assert_eq!(
                    numeric.len(),
                    self.n_features,
                    "Scaling::SignedLog: one mask entry per feature"
                );
                for row in self.features.chunks_mut(self.n_features) {
                    for (x, _) in row.iter_mut().zip(numeric).filter(|(_, n)| **n) {
                        *x = signed_log(*x).clamp(-clip, *clip) / clip;
                    }
                }
            }
            Scaling::Standardize { mean, std } => {
                for row in self.features.chunks_mut(self.n_features) {
                    for ((x, m), s) in row.iter_mut().zip(mean).zip(std) {
                        *x = (*x - m) / s;
                    }
                }
            }
        }
    }
}

/// `sign(x)·ln(1 + |x|)`: odd, monotone, the identity near 0 and
/// logarithmic far from it (NaN stays NaN).
fn signed_log(x: f32) -> f32 {
    x.abs().ln_1p().copysign(x)
}
