//! Inference-time output hardening: releasing less of a model's output, and
//! refusing queries past a per-client budget.
//!
//! A deployed classifier usually answers with its whole probability vector.
//! The black-box attacks of this crate read that vector: the threshold
//! attacks ([`scores`](crate::scores)) its confidences, LiRA ([`lira`](crate::lira))
//! the logit-scaled confidence of the true class, the label-only attack
//! ([`label_only`](crate::label_only)) the predicted label under many noisy
//! queries. The classic empirical defences at inference time release less
//! (Shokri et al. 2017, "Membership Inference Attacks Against Machine
//! Learning Models", S&P, §VI: restricting the output to the top-k classes
//! and coarsening its precision; Fredrikson, Jha & Ristenpart 2015, CCS:
//! rounding the reported confidences against model inversion) or answer
//! fewer queries. [`Hardened`] wraps any [`ProbabilityOracle`] and does
//! both, so that the attacks can be run against what the hardened model
//! actually releases.
//!
//! # What is released
//!
//! For a model output `p ∈ [0, 1]^C` (the wrapper checks each value is in
//! `[0, 1]`, not that they sum to 1), the [`Release`]:
//!
//! * [`Release::Full`]: `p` itself.
//! * [`Release::TopK`]`(k)`, `1 ≤ k ≤ C`: with the classes ordered by
//!   decreasing `p_j`, **ties broken by the lower class index**, the first
//!   `k` keep their value and every other class reads 0:
//!   `r_j = p_j` if `j` is among the top `k`, else `r_j = 0`. The kept
//!   values are **not renormalised**: every released value is the model's
//!   own, and `Σ r_j ≤ Σ p_j`. A kept class whose probability is itself 0
//!   reads 0 too, so at most `k` values are non-zero.
//! * [`Release::Rounded`]`(d)`, `d ≤ 15`: every value rounded to `d`
//!   decimals, half away from zero, `r_j = round(p_j · 10^d) / 10^d`
//!   (`f64::round` of the product as f64 computes it, divided by the exact
//!   `10^d`: the f64 nearest to the decimal). Not renormalised: the
//!   released values may sum to a little more or less than 1, and values
//!   below `0.5 · 10^−d` read 0. `|r_j − p_j| ≤ 0.5 · 10^−d` (up to f64
//!   rounding of the product).
//! * [`Release::TopKRounded`]`(k, d)`: top-k, then the kept values rounded
//!   as above (a kept value may round to 0).
//! * [`Release::LabelOnly`]: the one-hot vector of the argmax of `p` (the
//!   first class of largest probability): `r_j = 1` for that class, 0 for
//!   the others.
//!
//! Whatever the release, [`Hardened::labels_for`] (and a [`ClientView`] as a
//! [`LabelOracle`]) answers the argmax of the model's full vector, ties to
//! the lower index: the predicted label, which every release gives away
//! (it is the top-1 class, the largest rounded value up to ties, the
//! one-hot position).
//!
//! # The query budget
//!
//! With [`Hardened::with_budget`]`(b)`, every client (named by a string)
//! may have at most `b` **records** (inputs) answered in all, summed over
//! its calls and over probability and label queries alike; without a budget
//! nothing is refused. A batch of `n` inputs from a client already served
//! `s` is answered when `s + n ≤ b`; otherwise it is **refused whole**:
//! nothing of it is answered, the model is not queried, the call fails with
//! [`Error::Query`] naming the client, the budget, the records already
//! served and the batch size, and `n` is added to the client's *refused*
//! count. A refused batch consumes nothing: a smaller batch that fits
//! (`s + n' ≤ b`) is still answered. Malformed queries (`dim = 0`, an input
//! length not a multiple of `dim`) are [`Error::InvalidParameter`] and
//! counted neither way; a batch the model itself fails on, or answers with
//! the wrong number of vectors, vectors of the wrong length or values
//! outside `[0, 1]` ([`Error::Query`]), is not counted as served either. An
//! empty batch is answered with nothing, without querying the model.
//! [`Hardened::usage`] reports every client's served and refused records.
//!
//! The attacks' query counts set what a budget stops: the label-only attack
//! makes `n · (1 + S·q)` queries for `n` records
//! ([`label_only::query_count`](crate::label_only::query_count), 41 per
//! record with its defaults), a threshold or LiRA attack one per record
//! (per augmentation). A budget bounds how many records one client can
//! attack; it does not stop an attacker who spreads queries over many
//! clients, nor one who needs a single query per record.
//!
//! # Scoring released vectors
//!
//! [`scores::score`](crate::scores::score) requires a vector that sums to 1.
//! [`released_score`] scores a released (partial) vector `r` by first
//! completing it to a distribution `q`, with missing mass `m = 1 − Σ r_j`
//! (computed in f64) and `Z = {j : r_j = 0}`:
//!
//! * if `m > 0` and `Z` is non-empty, the missing mass is spread uniformly
//!   over the zeroed classes: `q_j = r_j` for `j ∉ Z`, `q_j = m / |Z|` for
//!   `j ∈ Z` (what is left of a top-k release is shared by the classes it
//!   hid; rounded-to-zero values share the rounding deficit);
//! * otherwise (`m ≤ 0`: rounding up, or a top-k or one-hot vector that
//!   already sums to 1; or no zero to give the mass to) `q = r / Σ r_j`.
//!
//! The [`ScoreKind`]s are then evaluated on `q` as in
//! [`scores`](crate::scores), with every logarithm's argument floored at
//! [`RELEASED_FLOOR`] `= 10⁻¹⁶`, `ln⁺(x) = ln(max(x, 10⁻¹⁶))`, and
//! `0 ln 0 = 0` in the entropy:
//!
//! * loss `ln⁺ q_y`; confidence `q_y` (not floored);
//! * entropy `Σ_j q_j ln q_j`;
//! * modified entropy `(1 − q_y) ln⁺ q_y + Σ_{j≠y} q_j ln⁺(1 − q_j)`;
//! * logit-scaled `ln⁺ q_y − ln⁺ Σ_{j≠y} q_j`.
//!
//! The floor makes every score finite: a true class the release zeroed with
//! no missing mass (a wrong one-hot label, a top-k summing to 1) scores
//! `ln 10⁻¹⁶ ≈ −36.8` as its loss, and a correct one-hot vector a
//! logit-scaled `+36.8`. `10⁻¹⁶` lies below every non-zero value a rounded
//! release can carry (`10⁻¹⁵` at 15 decimals) and below the spacing of f64
//! just under 1, so it only changes logarithms of exact zeros and of values
//! smaller than any release at ≤ 15 decimals resolves. On a full vector with
//! no value below `10⁻¹⁶` that sums to 1, [`released_score`] agrees with
//! [`scores::score`](crate::scores::score) (up to rounding); for full
//! outputs, [`scores::score_logits`](crate::scores::score_logits) stays the
//! better choice. On a label-only release, every score reduces to whether
//! the label is correct (the gap attack).
//!
//! # What hardening buys, and what it does not
//!
//! Top-k, rounding and label-only release remove the fine confidence
//! information the threshold attacks and LiRA read, but leave the predicted
//! label, from which the label-only attack (Choquette-Choo et al. 2021)
//! recovers much of the same signal given enough queries; the budget then
//! caps the number of records it can be run on. White-box access (the
//! input gradients of [`inversion::WhiteBox`](crate::inversion::WhiteBox))
//! is outside this wrapper: it hardens a black-box API. Unlike DP-SGD, none
//! of this is a guarantee.
//!
//! # Example
//!
//! ```
//! use dpsgd_audit::hardening::{FnOracle, Hardened, ProbabilityOracle, Release};
//! use dpsgd_audit::label_only::LabelOracle;
//!
//! // A 3-class model answering the same vector for every input.
//! let model = FnOracle::new(3, |x: &[f32], dim: usize| {
//!     Ok(vec![vec![0.62, 0.3, 0.08]; x.len() / dim])
//! });
//! let mut hardened = Hardened::new(model, Release::TopKRounded(2, 1))?.with_budget(3);
//! let mut attacker = hardened.client("attacker");
//! assert_eq!(attacker.probabilities(&[0.0, 1.0], 1)?, vec![vec![0.6, 0.3, 0.0]; 2]);
//! assert_eq!(attacker.labels(&[2.0], 1)?, vec![0]);
//! assert!(attacker.labels(&[3.0], 1).is_err()); // a fourth record: over budget
//! assert_eq!((hardened.served("attacker"), hardened.refused("attacker")), (3, 1));
//! # Ok::<(), dpsgd_audit::Error>(())
//! ```

use crate::Error;
use crate::error::{Result, invalid};
use crate::label_only::LabelOracle;
use crate::scores::ScoreKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The floor of every logarithm's argument in [`released_score`]: below
/// every non-zero value a rounded release carries (see the
/// [module docs](self)).
pub const RELEASED_FLOOR: f64 = 1e-16;

/// The most decimals [`Release::Rounded`] accepts.
pub const MAX_DECIMALS: u32 = 15;

/// `10^d` for `d ≤ 15`, exact.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A model that answers queries with a probability vector per input (the
/// black-box threat model).
pub trait ProbabilityOracle {
    /// Number of classes.
    fn classes(&self) -> usize;

    /// One probability vector of [`classes`](Self::classes) values per input
    /// (`n = inputs.len() / dim` inputs, row-major).
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when the model refuses (e.g. a query budget) or
    /// fails.
    fn probabilities(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<Vec<f64>>>;
}

/// A mutable reference to an oracle is an oracle (so a [`Hardened`] can
/// borrow the model).
impl<O: ProbabilityOracle + ?Sized> ProbabilityOracle for &mut O {
    fn classes(&self) -> usize {
        (**self).classes()
    }

    fn probabilities(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<Vec<f64>>> {
        (**self).probabilities(inputs, dim)
    }
}

/// A [`ProbabilityOracle`] from a number of classes and an
/// `FnMut(inputs, dim) -> Result<probability vectors>` closure.
#[derive(Debug, Clone)]
pub struct FnOracle<F> {
    classes: usize,
    answer: F,
}

impl<F> FnOracle<F>
where
    F: FnMut(&[f32], usize) -> Result<Vec<Vec<f64>>>,
{
    /// The oracle of `classes` classes answering with `answer`.
    pub fn new(classes: usize, answer: F) -> Self {
        Self { classes, answer }
    }
}

impl<F> ProbabilityOracle for FnOracle<F>
where
    F: FnMut(&[f32], usize) -> Result<Vec<Vec<f64>>>,
{
    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<Vec<f64>>> {
        (self.answer)(inputs, dim)
    }
}

/// What the hardened model releases (see the [module docs](self) for the
/// exact rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Release {
    /// The whole probability vector.
    Full,
    /// The `k` largest probabilities (ties to the lower class index), the
    /// others 0; not renormalised.
    TopK(usize),
    /// Every probability rounded to this many decimals (half away from
    /// zero); not renormalised.
    Rounded(u32),
    /// Top-`k` (first field), then rounded to the decimals of the second.
    TopKRounded(usize, u32),
    /// The one-hot vector of the predicted label (the argmax).
    LabelOnly,
}

impl Release {
    /// What this release makes of the output `probs` (see the
    /// [module docs](self)).
    ///
    /// It does not validate: `k ≥ probs.len()` keeps every value, `k = 0`
    /// none, decimals past 15 are taken as 15, and an empty `probs` gives
    /// an empty vector. [`Hardened::new`] checks the release against the
    /// model.
    ///
    /// # Examples
    ///
    /// ```
    /// use dpsgd_audit::hardening::Release;
    /// let p = [0.1, 0.45, 0.45];
    /// assert_eq!(Release::TopK(1).apply(&p), vec![0.0, 0.45, 0.0]);
    /// assert_eq!(Release::Rounded(1).apply(&p), vec![0.1, 0.5, 0.5]);
    /// assert_eq!(Release::LabelOnly.apply(&p), vec![0.0, 1.0, 0.0]);
    /// ```
    pub fn apply(self, probs: &[f64]) -> Vec<f64> {
        match self {
            Self::Full => probs.to_vec(),
            Self::TopK(k) => top_k(probs, k),
            Self::Rounded(d) => probs.iter().map(|&p| round_to(p, d)).collect(),
            Self::TopKRounded(k, d) => top_k(probs, k)
                .into_iter()
                .map(|p| round_to(p, d))
                .collect(),
            Self::LabelOnly => {
                let mut r = vec![0.0; probs.len()];
                if !probs.is_empty() {
                    r[argmax(probs)] = 1.0;
                }
                r
            }
        }
    }

    /// Checks `1 ≤ k ≤ classes` and `decimals ≤ 15`.
    fn validate(self, classes: usize) -> Result<()> {
        let (k, decimals) = match self {
            Self::Full | Self::LabelOnly => (None, None),
            Self::TopK(k) => (Some(k), None),
            Self::Rounded(d) => (None, Some(d)),
            Self::TopKRounded(k, d) => (Some(k), Some(d)),
        };
        if let Some(k) = k
            && !(1..=classes).contains(&k)
        {
            return Err(invalid("k", k, format!("need 1 ≤ k ≤ classes = {classes}")));
        }
        if let Some(d) = decimals
            && d > MAX_DECIMALS
        {
            return Err(invalid("decimals", d, format!("at most {MAX_DECIMALS}")));
        }
        Ok(())
    }
}

impl std::str::FromStr for Release {
    type Err = String;

    /// `full`, `label-only`, `top-K`, `round-D` or `top-K-round-D`, with
    /// `K ≥ 1` and `D ≤ 15`.
    ///
    /// ```
    /// use dpsgd_audit::hardening::Release;
    /// assert_eq!("top-3-round-2".parse(), Ok(Release::TopKRounded(3, 2)));
    /// assert!("top-0".parse::<Release>().is_err());
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected full, label-only, top-K, round-D or top-K-round-D");
        let number = |t: &str| t.parse::<u32>().map_err(|_| bad());
        let s = s.trim();
        match s {
            "full" => return Ok(Self::Full),
            "label-only" => return Ok(Self::LabelOnly),
            _ => {}
        }
        let release = if let Some(rest) = s.strip_prefix("top-") {
            match rest.split_once("-round-") {
                Some((k, d)) => Self::TopKRounded(number(k)? as usize, number(d)?),
                None => Self::TopK(number(rest)? as usize),
            }
        } else if let Some(d) = s.strip_prefix("round-") {
            Self::Rounded(number(d)?)
        } else {
            return Err(bad());
        };
        match release {
            Self::TopK(0) | Self::TopKRounded(0, _) => Err(format!("`{s}`: k must be at least 1")),
            Self::Rounded(d) | Self::TopKRounded(_, d) if d > MAX_DECIMALS => {
                Err(format!("`{s}`: at most {MAX_DECIMALS} decimals"))
            }
            r => Ok(r),
        }
    }
}

impl std::fmt::Display for Release {
    /// The spelling [`Release::from_str`](std::str::FromStr) reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => write!(f, "full"),
            Self::LabelOnly => write!(f, "label-only"),
            Self::TopK(k) => write!(f, "top-{k}"),
            Self::Rounded(d) => write!(f, "round-{d}"),
            Self::TopKRounded(k, d) => write!(f, "top-{k}-round-{d}"),
        }
    }
}

/// The first index of the largest value (0 for an empty slice).
fn argmax(probs: &[f64]) -> usize {
    let mut best = 0;
    for (j, &p) in probs.iter().enumerate().skip(1) {
        if p > probs[best] {
            best = j;
        }
    }
    best
}

/// The `k` largest values kept (ties to the lower index), the others 0.
fn top_k(probs: &[f64], k: usize) -> Vec<f64> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut r = vec![0.0; probs.len()];
    for &j in order.iter().take(k) {
        r[j] = probs[j];
    }
    r
}

/// `p` rounded to `d` decimals, half away from zero.
fn round_to(p: f64, d: u32) -> f64 {
    let scale = POW10[d.min(MAX_DECIMALS) as usize];
    (p * scale).round() / scale
}

/// One client's queries, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientUsage {
    /// The client's name.
    pub client: String,
    /// Records (inputs) answered.
    pub served: u64,
    /// Records (inputs) in refused batches.
    pub refused: u64,
    /// The per-client budget in records (`None`: unlimited).
    pub budget: Option<u64>,
}

/// Served and refused records of one client.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    served: u64,
    refused: u64,
}

/// A wrapper around any [`ProbabilityOracle`] that releases only its
/// [`Release`], and refuses queries past a per-client budget (counted in
/// inputs, i.e. records queried), counting what it served and refused (see
/// the [module docs](self)).
#[derive(Debug)]
pub struct Hardened<O> {
    inner: O,
    release: Release,
    classes: usize,
    budget: Option<u64>,
    counts: BTreeMap<String, Counts>,
}

impl<O: ProbabilityOracle> Hardened<O> {
    /// Wraps `inner`, releasing `release`, with no query budget.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when the model has no class, `k` is 0 or
    /// more than the number of classes, or the decimals are more than 15.
    pub fn new(inner: O, release: Release) -> Result<Self> {
        let classes = inner.classes();
        if classes == 0 {
            return Err(invalid("classes", 0, "need at least one class"));
        }
        release.validate(classes)?;
        Ok(Self {
            inner,
            release,
            classes,
            budget: None,
            counts: BTreeMap::new(),
        })
    }

    /// Sets the budget: at most `per_client` records answered per client
    /// (0 refuses every non-empty batch).
    pub fn with_budget(mut self, per_client: u64) -> Self {
        self.budget = Some(per_client);
        self
    }

    /// What is released.
    pub fn release(&self) -> Release {
        self.release
    }

    /// The per-client budget in records (`None`: unlimited).
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Number of classes of the model.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The wrapped model.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped model, unwrapped.
    pub fn into_inner(self) -> O {
        self.inner
    }

    /// The released vectors for `n = inputs.len() / dim` inputs queried by
    /// `client` (budgets are per client).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `dim = 0` or `inputs.len()` is not a
    /// multiple of `dim`. [`Error::Query`] when the batch would take the
    /// client past its budget (refused whole and counted as refused), when
    /// the model fails, or when it answers with the wrong number of
    /// vectors, a vector of the wrong length or a value outside `[0, 1]`.
    pub fn probabilities_for(
        &mut self,
        client: &str,
        inputs: &[f32],
        dim: usize,
    ) -> Result<Vec<Vec<f64>>> {
        let release = self.release;
        Ok(self
            .query(client, inputs, dim)?
            .iter()
            .map(|p| release.apply(p))
            .collect())
    }

    /// The predicted labels (argmax of the model's full vector, ties to the
    /// lower index, whatever the release) for `n = inputs.len() / dim`
    /// inputs queried by `client`; they count against the budget like
    /// probability queries.
    ///
    /// # Errors
    ///
    /// As [`probabilities_for`](Self::probabilities_for).
    pub fn labels_for(&mut self, client: &str, inputs: &[f32], dim: usize) -> Result<Vec<usize>> {
        Ok(self
            .query(client, inputs, dim)?
            .iter()
            .map(|p| argmax(p))
            .collect())
    }

    /// Records answered to `client` (0 for a client never seen).
    pub fn served(&self, client: &str) -> u64 {
        self.counts.get(client).map_or(0, |c| c.served)
    }

    /// Records in batches refused to `client`.
    pub fn refused(&self, client: &str) -> u64 {
        self.counts.get(client).map_or(0, |c| c.refused)
    }

    /// Records `client` may still have answered (`None`: no budget).
    pub fn remaining(&self, client: &str) -> Option<u64> {
        self.budget.map(|b| b.saturating_sub(self.served(client)))
    }

    /// Every client that was served or refused something, by name.
    pub fn usage(&self) -> Vec<ClientUsage> {
        self.counts
            .iter()
            .map(|(client, c)| ClientUsage {
                client: client.clone(),
                served: c.served,
                refused: c.refused,
                budget: self.budget,
            })
            .collect()
    }

    /// The view of `client`: an oracle whose queries count as that
    /// client's.
    pub fn client(&mut self, client: impl Into<String>) -> ClientView<'_, O> {
        ClientView {
            hardened: self,
            client: client.into(),
        }
    }

    /// Checks the query and the budget, queries the model, checks and
    /// counts its answer; returns the full vectors.
    fn query(&mut self, client: &str, inputs: &[f32], dim: usize) -> Result<Vec<Vec<f64>>> {
        if dim == 0 {
            return Err(invalid("dim", 0, "need at least one feature"));
        }
        if !inputs.len().is_multiple_of(dim) {
            return Err(invalid(
                "inputs",
                format!("{} values", inputs.len()),
                format!("need a multiple of dim = {dim}"),
            ));
        }
        let n = inputs.len() / dim;
        if n == 0 {
            return Ok(Vec::new());
        }
        let records = n as u64;
        let served = self.served(client);
        if let Some(budget) = self.budget
            && served.saturating_add(records) > budget
        {
            self.counts.entry(client.to_owned()).or_default().refused += records;
            return Err(Error::Query {
                reason: format!(
                    "client {client:?} is over its query budget of {budget} records: \
                     {served} already served, a batch of {records} refused"
                ),
            });
        }
        let answers = match self.inner.probabilities(inputs, dim) {
            Ok(answers) => answers,
            Err(e @ Error::Refused { .. }) => {
                // The model itself refused (a remote endpoint's budget,
                // rate or revocation): counted as this gate's refusals are.
                self.counts.entry(client.to_owned()).or_default().refused += records;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if answers.len() != n {
            return Err(Error::Query {
                reason: format!(
                    "the model answered {} probability vectors for {n} inputs",
                    answers.len()
                ),
            });
        }
        for p in &answers {
            if p.len() != self.classes {
                return Err(Error::Query {
                    reason: format!(
                        "the model answered {} probabilities for {} classes",
                        p.len(),
                        self.classes
                    ),
                });
            }
            if let Some(v) = p.iter().find(|v| !(**v >= 0.0 && **v <= 1.0)) {
                return Err(Error::Query {
                    reason: format!("the model answered the probability {v}, not in [0, 1]"),
                });
            }
        }
        self.counts.entry(client.to_owned()).or_default().served += records;
        Ok(answers)
    }
}

/// One client's view of a [`Hardened`] model, from [`Hardened::client`]: a
/// [`ProbabilityOracle`] (the released vectors) and a [`LabelOracle`] (the
/// predicted labels) whose queries count against that client's budget, so
/// the audit's attacks run against the hardened outputs.
#[derive(Debug)]
pub struct ClientView<'a, O> {
    hardened: &'a mut Hardened<O>,
    client: String,
}

impl<O: ProbabilityOracle> ClientView<'_, O> {
    /// The client's name.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// Records answered to this client.
    pub fn served(&self) -> u64 {
        self.hardened.served(&self.client)
    }

    /// Records in batches refused to this client.
    pub fn refused(&self) -> u64 {
        self.hardened.refused(&self.client)
    }

    /// Records this client may still have answered (`None`: no budget).
    pub fn remaining(&self) -> Option<u64> {
        self.hardened.remaining(&self.client)
    }
}

impl<O: ProbabilityOracle> ProbabilityOracle for ClientView<'_, O> {
    fn classes(&self) -> usize {
        self.hardened.classes
    }

    /// The released vectors ([`Hardened::probabilities_for`]).
    fn probabilities(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<Vec<f64>>> {
        self.hardened.probabilities_for(&self.client, inputs, dim)
    }
}

impl<O: ProbabilityOracle> LabelOracle for ClientView<'_, O> {
    /// The predicted labels ([`Hardened::labels_for`]).
    fn labels(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<usize>> {
        self.hardened.labels_for(&self.client, inputs, dim)
    }
}

/// `x ln x` with `0 ln 0 = 0`.
fn x_ln_x(x: f64) -> f64 {
    if x > 0.0 { x * x.ln() } else { 0.0 }
}

/// `ln(max(x, RELEASED_FLOOR))`.
fn ln_floor(x: f64) -> f64 {
    x.max(RELEASED_FLOOR).ln()
}

/// The released vector completed to a distribution (see the
/// [module docs](self)); `released` is valid and non-empty.
fn complete(released: &[f64]) -> Vec<f64> {
    let total: f64 = released.iter().sum();
    let missing = 1.0 - total;
    let zeros = released.iter().filter(|&&r| r == 0.0).count();
    if missing > 0.0 && zeros > 0 {
        let share = missing / zeros as f64;
        released
            .iter()
            .map(|&r| if r == 0.0 { share } else { r })
            .collect()
    } else {
        // Σ r ≥ 1 here, or every r_j > 0: the total is positive.
        released.iter().map(|&r| r / total).collect()
    }
}

/// The membership score (higher = more likely a member) of one record from
/// a **released** vector, which may be partial (top-k), rounded or one-hot
/// and need not sum to 1: the vector is completed to a distribution (the
/// missing mass spread uniformly over the zeroed classes, or the vector
/// renormalised when nothing is missing) and every logarithm floored at
/// [`RELEASED_FLOOR`]; see the [module docs](self) for the formulas.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when `label` is out of range (or `released`
/// is empty), or a value is NaN or outside `[0, 1]`.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::hardening::released_score;
/// use dpsgd_audit::scores::ScoreKind;
/// // Top-2 of [0.5, 0.25, 0.15, 0.1]: the hidden classes share 0.25.
/// let r = [0.5, 0.25, 0.0, 0.0];
/// assert_eq!(released_score(ScoreKind::Confidence, &r, 2)?, 0.125);
/// assert_eq!(released_score(ScoreKind::Loss, &r, 0)?, 0.5f64.ln());
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn released_score(kind: ScoreKind, released: &[f64], label: usize) -> Result<f64> {
    if label >= released.len() {
        return Err(invalid(
            "label",
            label,
            format!("must be < {}", released.len()),
        ));
    }
    if let Some(r) = released.iter().find(|r| !(**r >= 0.0 && **r <= 1.0)) {
        return Err(invalid("released probability", r, "must be in [0, 1]"));
    }
    let q = complete(released);
    let qy = q[label];
    let others = || {
        q.iter()
            .enumerate()
            .filter(|&(j, _)| j != label)
            .map(|(_, &p)| p)
    };
    Ok(match kind {
        ScoreKind::Loss => ln_floor(qy),
        ScoreKind::Confidence => qy,
        ScoreKind::Entropy => q.iter().map(|&p| x_ln_x(p)).sum(),
        ScoreKind::ModifiedEntropy => {
            (1.0 - qy) * ln_floor(qy) + others().map(|p| p * ln_floor(1.0 - p)).sum::<f64>()
        }
        ScoreKind::LogitScaled => ln_floor(qy) - ln_floor(others().sum()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label_only::{LabelOnlyConfig, label_only_scores, query_count};
    use crate::scores::score;
    use proptest::prelude::*;

    const KINDS: [ScoreKind; 5] = [
        ScoreKind::Loss,
        ScoreKind::Confidence,
        ScoreKind::Entropy,
        ScoreKind::ModifiedEntropy,
        ScoreKind::LogitScaled,
    ];

    /// A model's answer to a batch.
    type Vectors = Result<Vec<Vec<f64>>>;

    /// A model answering `probs` for every input, counting its calls.
    struct Fixed {
        probs: Vec<f64>,
        calls: usize,
    }

    impl Fixed {
        fn new(probs: &[f64]) -> Self {
            Self {
                probs: probs.to_vec(),
                calls: 0,
            }
        }
    }

    impl ProbabilityOracle for Fixed {
        fn classes(&self) -> usize {
            self.probs.len()
        }

        fn probabilities(&mut self, inputs: &[f32], dim: usize) -> Result<Vec<Vec<f64>>> {
            self.calls += 1;
            Ok(vec![self.probs.clone(); inputs.len() / dim])
        }
    }

    /// The released vector of one query.
    fn released(probs: &[f64], release: Release) -> Vec<f64> {
        let mut h = Hardened::new(Fixed::new(probs), release).unwrap();
        let mut out = h.probabilities_for("c", &[0.0], 1).unwrap();
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    /// Probability vectors of 1 to 9 classes, with frequent ties and zeros
    /// (integer weights) as well as generic values.
    fn distribution() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![(0u32..4).prop_map(f64::from), 0.0f64..4.0],
            1..10,
        )
        .prop_filter("some mass", |w| w.iter().sum::<f64>() > 0.0)
        .prop_map(|w| {
            let total: f64 = w.iter().sum();
            w.iter().map(|v| v / total).collect()
        })
    }

    /// A distribution and a `k` in `1..=classes`.
    fn with_k() -> impl Strategy<Value = (Vec<f64>, usize)> {
        distribution().prop_flat_map(|p| {
            let c = p.len();
            (Just(p), 1..=c)
        })
    }

    /// The first index of the largest value, computed independently.
    fn first_max(p: &[f64]) -> usize {
        let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        p.iter().position(|&v| v == max).unwrap()
    }

    fn assert_top_k(p: &[f64], r: &[f64], k: usize) -> std::result::Result<(), TestCaseError> {
        prop_assert_eq!(r.len(), p.len());
        let nonzero = r.iter().filter(|&&v| v != 0.0).count();
        prop_assert!(nonzero <= k);
        // Every released value is the model's own.
        for (rj, pj) in r.iter().zip(p) {
            prop_assert!(*rj == 0.0 || rj == pj, "{rj} vs {pj}");
        }
        // As many non-zero values as the model's top k hold.
        let positive = p.iter().filter(|&&v| v > 0.0).count();
        prop_assert_eq!(nonzero, k.min(positive));
        // Every kept class comes before every dropped non-zero one in the
        // order (decreasing value, then increasing index).
        for i in (0..p.len()).filter(|&i| r[i] != 0.0) {
            for j in (0..p.len()).filter(|&j| r[j] == 0.0 && p[j] != 0.0) {
                prop_assert!(p[i] > p[j] || (p[i] == p[j] && i < j), "{p:?} → {r:?}");
            }
        }
        Ok(())
    }

    fn assert_rounded(p: &[f64], r: &[f64], d: u32) -> std::result::Result<(), TestCaseError> {
        let scale = 10f64.powi(d as i32);
        prop_assert_eq!(r.len(), p.len());
        for (&rj, &pj) in r.iter().zip(p) {
            // At most d decimals: for d ≤ 6 within 1e-9 of a multiple of
            // 10^−d; for any d, rounding again changes nothing.
            let x = rj * scale;
            if d <= 6 {
                prop_assert!((x - x.round()).abs() < 1e-9, "{rj} at {d} decimals");
            }
            prop_assert_eq!(round_to(rj, d), rj);
            prop_assert!((rj - pj).abs() <= 0.5 / scale + 1e-15, "{pj} → {rj}");
            prop_assert!((0.0..=1.0).contains(&rj));
        }
        Ok(())
    }

    proptest! {
        /// Top-k never releases more than k non-zero values, each the
        /// model's own, and those are the k largest (ties to the lower
        /// index).
        #[test]
        fn should_release_only_the_k_largest_values((p, k) in with_k()) {
            let r = released(&p, Release::TopK(k));
            assert_top_k(&p, &r, k)?;
            prop_assert_eq!(&r, &Release::TopK(k).apply(&p));
        }

        /// Rounded values have at most d decimals and lie within
        /// 0.5 · 10^−d of the model's.
        #[test]
        fn should_round_to_d_decimals(p in distribution(), d in 0u32..=15) {
            let r = released(&p, Release::Rounded(d));
            assert_rounded(&p, &r, d)?;
        }

        /// Top-k then rounding: the rounded top-k vector.
        #[test]
        fn should_round_the_top_k((p, k) in with_k(), d in 0u32..=15) {
            let r = released(&p, Release::TopKRounded(k, d));
            let top = released(&p, Release::TopK(k));
            assert_rounded(&top, &r, d)?;
            prop_assert!(r.iter().filter(|&&v| v != 0.0).count() <= k);
            for (rj, tj) in r.iter().zip(&top) {
                prop_assert_eq!(*rj, round_to(*tj, d));
            }
        }

        /// Label only: exactly one 1, at the argmax, and zeros.
        #[test]
        fn should_release_one_hot_labels(p in distribution()) {
            let r = released(&p, Release::LabelOnly);
            prop_assert_eq!(r.iter().filter(|&&v| v == 1.0).count(), 1);
            prop_assert_eq!(r.iter().filter(|&&v| v == 0.0).count(), p.len() - 1);
            prop_assert_eq!(r[first_max(&p)], 1.0);
            prop_assert_eq!(released(&p, Release::Full), p);
        }

        /// `labels_for` answers the argmax of the full vector whatever the
        /// release, and counts like a probability query.
        #[test]
        fn should_label_with_the_full_argmax((p, k) in with_k(), d in 0u32..=3) {
            for release in [
                Release::Full,
                Release::TopK(k),
                Release::Rounded(d),
                Release::TopKRounded(k, d),
                Release::LabelOnly,
            ] {
                let mut h = Hardened::new(Fixed::new(&p), release).unwrap().with_budget(3);
                prop_assert_eq!(h.labels_for("c", &[0.0; 6], 2).unwrap(), vec![first_max(&p); 3]);
                prop_assert_eq!(h.served("c"), 3);
                prop_assert!(h.labels_for("c", &[0.0; 2], 2).is_err());
            }
        }

        /// Every score of every release is finite, and on a full vector
        /// without tiny values it is `scores::score`'s.
        #[test]
        fn should_score_released_vectors_finitely((p, k) in with_k(), d in 0u32..=4) {
            for y in 0..p.len() {
                for release in [
                    Release::TopK(k),
                    Release::Rounded(d),
                    Release::TopKRounded(k, d),
                    Release::LabelOnly,
                ] {
                    let r = release.apply(&p);
                    for kind in KINDS {
                        let s = released_score(kind, &r, y).unwrap();
                        prop_assert!(s.is_finite(), "{kind:?} {release:?} {r:?} y={y}: {s}");
                    }
                }
                if p.len() > 1 && p.iter().all(|&v| v > 1e-3) {
                    for kind in KINDS {
                        let a = released_score(kind, &p, y).unwrap();
                        let b = score(kind, &p, y).unwrap();
                        prop_assert!((a - b).abs() < 1e-9, "{kind:?} {p:?} y={y}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn should_apply_each_release_by_hand() {
        let p = [0.1, 0.35, 0.2, 0.35];
        assert_eq!(Release::Full.apply(&p), p.to_vec());
        // Tie between classes 1 and 3: the lower index wins.
        assert_eq!(Release::TopK(1).apply(&p), vec![0.0, 0.35, 0.0, 0.0]);
        assert_eq!(Release::TopK(2).apply(&p), vec![0.0, 0.35, 0.0, 0.35]);
        assert_eq!(Release::TopK(3).apply(&p), vec![0.0, 0.35, 0.2, 0.35]);
        assert_eq!(Release::TopK(4).apply(&p), p.to_vec());
        // Half away from zero: 0.125 → 0.13 (0.125 is exact in binary).
        assert_eq!(Release::Rounded(2).apply(&[0.125, 0.875]), vec![0.13, 0.88]);
        assert_eq!(Release::Rounded(0).apply(&p), vec![0.0, 0.0, 0.0, 0.0]);
        // Not renormalised: sums to 1.1.
        assert_eq!(Release::Rounded(1).apply(&p), vec![0.1, 0.4, 0.2, 0.4]);
        assert_eq!(
            Release::TopKRounded(2, 1).apply(&p),
            vec![0.0, 0.4, 0.0, 0.4]
        );
        // A kept value may round to zero.
        assert_eq!(
            Release::TopKRounded(2, 1).apply(&[0.96, 0.03, 0.01]),
            vec![1.0, 0.0, 0.0]
        );
        assert_eq!(Release::LabelOnly.apply(&p), vec![0.0, 1.0, 0.0, 0.0]);
        assert_eq!(Release::LabelOnly.apply(&[]), Vec::<f64>::new());
    }

    /// A model that refuses itself (an endpoint's budget, rate or
    /// revocation) is counted as a refusal of that client, and any other
    /// failure is not.
    #[test]
    fn should_count_the_models_own_refusals_as_refusals() {
        let mut answers = vec![
            Err(Error::Query {
                reason: "backend down".into(),
            }),
            Err(Error::Refused {
                reason: "HTTP 429: over budget".into(),
            }),
            Ok(vec![vec![0.5, 0.5]; 2]),
        ];
        let oracle = FnOracle::new(2, move |_: &[f32], _| answers.pop().unwrap());
        let mut h = Hardened::new(oracle, Release::Full).unwrap();
        assert_eq!(h.probabilities_for("a", &[0.0; 2], 1).unwrap().len(), 2);
        let err = h.probabilities_for("a", &[0.0; 3], 1).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert_eq!((h.served("a"), h.refused("a")), (2, 3));
        let err = h.labels_for("a", &[0.0; 4], 1).unwrap_err();
        assert!(matches!(err, Error::Query { .. }), "{err:?}");
        assert_eq!(
            (h.served("a"), h.refused("a")),
            (2, 3),
            "a fault is no refusal"
        );
    }

    /// Budget 10: 6 served, a batch of 5 refused whole (nothing answered,
    /// the model not queried), then 4 still fit; clients have their own
    /// budgets; without a budget nothing is refused.
    #[test]
    fn should_refuse_a_batch_past_the_budget_whole() {
        let mut h = Hardened::new(Fixed::new(&[0.7, 0.3]), Release::Full)
            .unwrap()
            .with_budget(10);
        assert_eq!(h.probabilities_for("alice", &[0.0; 6], 1).unwrap().len(), 6);
        let err = h.probabilities_for("alice", &[0.0; 5], 1).unwrap_err();
        let Error::Query { reason } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            reason,
            "client \"alice\" is over its query budget of 10 records: \
             6 already served, a batch of 5 refused"
        );
        assert_eq!((h.served("alice"), h.refused("alice")), (6, 5));
        assert_eq!(h.inner().calls, 1);
        assert_eq!(h.remaining("alice"), Some(4));
        // Labels count against the same budget.
        assert!(h.labels_for("alice", &[0.0; 5], 1).is_err());
        assert_eq!(h.labels_for("alice", &[0.0; 4], 1).unwrap(), vec![0; 4]);
        assert_eq!((h.served("alice"), h.refused("alice")), (10, 10));
        assert!(h.labels_for("alice", &[0.0], 1).is_err());
        // An empty batch is always answered, with nothing.
        assert_eq!(h.labels_for("alice", &[], 1).unwrap(), Vec::<usize>::new());
        // Bob has his own budget.
        assert_eq!(h.probabilities_for("bob", &[0.0; 20], 2).unwrap().len(), 10);
        assert_eq!((h.served("bob"), h.refused("bob")), (10, 0));
        assert_eq!(h.inner().calls, 3);
        assert_eq!(
            h.usage(),
            vec![
                ClientUsage {
                    client: "alice".into(),
                    served: 10,
                    refused: 11,
                    budget: Some(10),
                },
                ClientUsage {
                    client: "bob".into(),
                    served: 10,
                    refused: 0,
                    budget: Some(10),
                },
            ]
        );
        assert_eq!((h.served("carol"), h.refused("carol")), (0, 0));
        // A budget of 0 refuses everything.
        let mut none = Hardened::new(Fixed::new(&[1.0]), Release::Full)
            .unwrap()
            .with_budget(0);
        assert!(none.labels_for("x", &[0.0], 1).is_err());
        assert_eq!(none.refused("x"), 1);
        // Without a budget nothing is refused.
        let mut open = Hardened::new(Fixed::new(&[0.7, 0.3]), Release::Full).unwrap();
        for _ in 0..100 {
            open.probabilities_for("alice", &[0.0; 50], 1).unwrap();
        }
        assert_eq!((open.served("alice"), open.refused("alice")), (5000, 0));
        assert_eq!(open.remaining("alice"), None);
        assert_eq!(open.usage()[0].budget, None);
    }

    /// A 1-D model: class 1 above 0, confidence growing with |x|.
    fn threshold_model() -> FnOracle<impl FnMut(&[f32], usize) -> Vectors> {
        FnOracle::new(2, |x: &[f32], dim: usize| {
            assert_eq!(dim, 1);
            Ok(x.iter()
                .map(|&v| {
                    let v = f64::from(v).clamp(-1.0, 1.0);
                    let p1 = if v > 0.0 {
                        0.6 + 0.4 * v
                    } else {
                        0.4 + 0.4 * v
                    };
                    vec![1.0 - p1, p1]
                })
                .collect())
        })
    }

    /// The label-only attack runs through a client's view, gives the scores
    /// of the unhardened labels, and fails with the refusal once the budget
    /// runs out; other clients are unaffected.
    #[test]
    fn should_run_the_label_only_attack_against_a_client() {
        let config = LabelOnlyConfig {
            noise_scales: vec![0.5],
            queries_per_scale: 3,
            seed: 0,
            batch: 4,
        };
        let (inputs, labels) = ([1.0f32, -0.2], [1, 1]);
        assert_eq!(query_count(2, &config), 8);
        let mut plain = |x: &[f32], _: usize| -> Result<Vec<usize>> {
            Ok(x.iter().map(|&v| usize::from(v > 0.0)).collect())
        };
        let expected = label_only_scores(&mut plain, &inputs, 1, &labels, &config).unwrap();
        let mut h = Hardened::new(threshold_model(), Release::LabelOnly)
            .unwrap()
            .with_budget(10);
        let mut attacker = h.client("attacker");
        let got = label_only_scores(&mut attacker, &inputs, 1, &labels, &config).unwrap();
        assert_eq!(got, expected);
        assert_eq!(attacker.served(), 8);
        assert_eq!(attacker.remaining(), Some(2));
        // A second run: its first batch of 4 would make 12 > 10.
        let err = label_only_scores(&mut attacker, &inputs, 1, &labels, &config).unwrap_err();
        assert_eq!(
            err,
            Error::Query {
                reason: "client \"attacker\" is over its query budget of 10 records: \
                         8 already served, a batch of 4 refused"
                    .into()
            }
        );
        assert_eq!((attacker.served(), attacker.refused()), (8, 4));
        assert_eq!(attacker.client(), "attacker");
        let mut auditor = h.client("auditor");
        assert_eq!(
            label_only_scores(&mut auditor, &inputs, 1, &labels, &config).unwrap(),
            expected
        );
        assert_eq!(h.served("auditor"), 8);
        assert_eq!(h.served("attacker"), 8);
    }

    /// Loss scores from released vectors, through any probability oracle.
    fn loss_scores<O: ProbabilityOracle>(
        oracle: &mut O,
        inputs: &[f32],
        labels: &[usize],
    ) -> Result<Vec<f64>> {
        let probs = oracle.probabilities(inputs, 1)?;
        probs
            .iter()
            .zip(labels)
            .map(|(p, &y)| {
                assert_eq!(p.len(), oracle.classes());
                released_score(ScoreKind::Loss, p, y)
            })
            .collect()
    }

    /// A client's view as a probability oracle releases top-1 vectors; the
    /// loss attack reads them, until the budget refuses.
    #[test]
    fn should_serve_released_vectors_through_a_client_view() {
        let model = FnOracle::new(3, |x: &[f32], _: usize| {
            Ok(x.iter()
                .map(|&v| {
                    if v == 0.0 {
                        vec![0.7, 0.2, 0.1]
                    } else {
                        vec![0.1, 0.3, 0.6]
                    }
                })
                .collect())
        });
        let mut h = Hardened::new(model, Release::TopK(1))
            .unwrap()
            .with_budget(4);
        let mut view = h.client("attacker");
        assert_eq!(view.classes(), 3);
        assert_eq!(
            view.probabilities(&[0.0, 1.0], 1).unwrap(),
            vec![vec![0.7, 0.0, 0.0], vec![0.0, 0.0, 0.6]]
        );
        // Class 0 released: ln 0.7. Class 1 hidden: the hidden mass 0.3
        // shared by classes 1 and 2, ln 0.15.
        let s = loss_scores(&mut view, &[0.0, 0.0], &[0, 1]).unwrap();
        assert!((s[0] - 0.7f64.ln()).abs() < 1e-12, "{s:?}");
        assert!((s[1] - 0.15f64.ln()).abs() < 1e-12, "{s:?}");
        assert!(matches!(
            loss_scores(&mut view, &[1.0], &[2]),
            Err(Error::Query { .. })
        ));
        assert_eq!((view.served(), view.refused()), (4, 1));
        // A borrowed model works as well.
        let mut fixed = Fixed::new(&[0.25, 0.75]);
        let mut borrowed = Hardened::new(&mut fixed, Release::Rounded(0)).unwrap();
        assert_eq!(
            borrowed.probabilities_for("c", &[0.0], 1).unwrap(),
            vec![vec![0.0, 1.0]]
        );
        assert_eq!(fixed.calls, 1);
    }

    /// Each score kind on hand-computed completions.
    #[test]
    fn should_score_partial_vectors_by_hand() {
        let ln = f64::ln;
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        let eps = RELEASED_FLOOR;
        // Top-2 of [0.6, 0.3, 0.06, 0.04]: q = [0.6, 0.3, 0.05, 0.05].
        let r = [0.6, 0.3, 0.0, 0.0];
        let s = |kind, y| released_score(kind, &r, y).unwrap();
        close(s(ScoreKind::Loss, 0), ln(0.6));
        close(s(ScoreKind::Confidence, 0), 0.6);
        let entropy = 0.6 * ln(0.6) + 0.3 * ln(0.3) + 2.0 * 0.05 * ln(0.05);
        close(s(ScoreKind::Entropy, 0), entropy);
        close(s(ScoreKind::Entropy, 3), entropy);
        close(
            s(ScoreKind::ModifiedEntropy, 0),
            0.4 * ln(0.6) + 0.3 * ln(0.7) + 2.0 * 0.05 * ln(0.95),
        );
        close(s(ScoreKind::LogitScaled, 0), ln(0.6 / 0.4));
        // The true class is not in the top 2.
        close(s(ScoreKind::Loss, 2), ln(0.05));
        close(s(ScoreKind::Confidence, 2), 0.05);
        close(
            s(ScoreKind::ModifiedEntropy, 2),
            0.95 * ln(0.05) + 0.6 * ln(0.4) + 0.3 * ln(0.7) + 0.05 * ln(0.95),
        );
        close(s(ScoreKind::LogitScaled, 2), ln(0.05 / 0.95));
        // A top 2 summing to 1 leaves nothing: the hidden class reads 0,
        // its logarithm the floor.
        let r = [0.5, 0.5, 0.0];
        let s = |kind, y| released_score(kind, &r, y).unwrap();
        close(s(ScoreKind::Loss, 2), ln(eps));
        close(s(ScoreKind::Confidence, 2), 0.0);
        close(s(ScoreKind::Entropy, 2), ln(0.5));
        close(s(ScoreKind::ModifiedEntropy, 2), ln(eps) + ln(0.5));
        close(s(ScoreKind::LogitScaled, 2), ln(eps));
        // One-hot (label only): right or wrong, and nothing else.
        let r = [0.0, 1.0, 0.0];
        let s = |kind, y| released_score(kind, &r, y).unwrap();
        close(s(ScoreKind::Loss, 1), 0.0);
        close(s(ScoreKind::Loss, 0), ln(eps));
        close(s(ScoreKind::Confidence, 1), 1.0);
        close(s(ScoreKind::Entropy, 0), 0.0);
        close(s(ScoreKind::ModifiedEntropy, 1), 0.0);
        close(s(ScoreKind::ModifiedEntropy, 0), 2.0 * ln(eps));
        close(s(ScoreKind::LogitScaled, 1), -ln(eps));
        close(s(ScoreKind::LogitScaled, 0), ln(eps));
        // Rounding up past 1: renormalised.
        let r = [0.34, 0.34, 0.34];
        close(
            released_score(ScoreKind::Loss, &r, 1).unwrap(),
            ln(1.0 / 3.0),
        );
        // Rounding down to nothing at all: uniform.
        close(
            released_score(ScoreKind::Loss, &[0.0; 4], 3).unwrap(),
            ln(0.25),
        );
        // Rounding down with no zero: renormalised, [0.33, 0.33, 0.33] → ⅓.
        close(
            released_score(ScoreKind::Confidence, &[0.33, 0.33, 0.33], 0).unwrap(),
            1.0 / 3.0,
        );
        // A rounded vector with zeros: the deficit 0.04 is shared by the
        // two zeros.
        close(
            released_score(ScoreKind::Confidence, &[0.0, 0.5, 0.46, 0.0], 0).unwrap(),
            0.02,
        );
        // A full vector: the scores module's value.
        let p = [0.5, 0.25, 0.25];
        for kind in KINDS {
            close(
                released_score(kind, &p, 1).unwrap(),
                score(kind, &p, 1).unwrap(),
            );
        }
    }

    #[test]
    fn should_reject_invalid_releases_and_queries() {
        let bad = |probs: &[f64], release| {
            let r = Hardened::new(Fixed::new(probs), release);
            assert!(
                matches!(r, Err(Error::InvalidParameter { .. })),
                "{release:?}"
            );
        };
        let p = [0.5, 0.3, 0.2];
        bad(&p, Release::TopK(0));
        bad(&p, Release::TopK(4));
        bad(&p, Release::TopKRounded(0, 2));
        bad(&p, Release::TopKRounded(4, 2));
        bad(&p, Release::TopKRounded(2, 16));
        bad(&p, Release::Rounded(16));
        bad(&[], Release::Full);
        for ok in [
            Release::Full,
            Release::TopK(1),
            Release::TopK(3),
            Release::Rounded(0),
            Release::Rounded(15),
            Release::TopKRounded(3, 15),
            Release::LabelOnly,
        ] {
            let h = Hardened::new(Fixed::new(&p), ok).unwrap();
            assert_eq!(h.release(), ok);
            assert_eq!(h.classes(), 3);
            assert_eq!(h.budget(), None);
        }
        // Malformed queries: invalid, counted neither way, model not queried.
        let mut h = Hardened::new(Fixed::new(&p), Release::Full)
            .unwrap()
            .with_budget(1);
        for (inputs, dim) in [(&[0.0f32; 3][..], 2), (&[0.0; 2][..], 0)] {
            let r = h.probabilities_for("c", inputs, dim);
            assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
            let r = h.labels_for("c", inputs, dim);
            assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
        }
        assert_eq!((h.served("c"), h.refused("c")), (0, 0));
        assert!(h.usage().is_empty());
        assert_eq!(h.into_inner().calls, 0);
    }

    /// A model that fails, or answers the wrong number of vectors, vectors
    /// of the wrong length or values outside [0, 1]: `Error::Query`, and
    /// nothing counted as served.
    #[test]
    fn should_reject_malformed_answers() {
        let answers: [fn(usize) -> Vectors; 7] = [
            |n| Ok(vec![vec![0.5, 0.5]; n - 1]),
            |n| Ok(vec![vec![0.5, 0.5]; n + 1]),
            |n| Ok(vec![vec![1.0]; n]),
            |n| Ok(vec![vec![0.3, 0.3, 0.4]; n]),
            |n| Ok(vec![vec![f64::NAN, 0.5]; n]),
            |n| Ok(vec![vec![-0.1, 1.1]; n]),
            |_| {
                Err(Error::Query {
                    reason: "backend down".into(),
                })
            },
        ];
        for answer in answers {
            let model = FnOracle::new(2, move |x: &[f32], dim: usize| answer(x.len() / dim));
            let mut h = Hardened::new(model, Release::TopK(1))
                .unwrap()
                .with_budget(5);
            let r = h.probabilities_for("c", &[0.0; 4], 2);
            assert!(matches!(r, Err(Error::Query { .. })), "{r:?}");
            let r = h.labels_for("c", &[0.0; 4], 2);
            assert!(matches!(r, Err(Error::Query { .. })), "{r:?}");
            assert_eq!((h.served("c"), h.refused("c")), (0, 0));
        }
        let model = FnOracle::new(2, |_: &[f32], _: usize| {
            Err(Error::Query {
                reason: "backend down".into(),
            })
        });
        let mut h = Hardened::new(model, Release::Full).unwrap();
        assert_eq!(
            h.labels_for("c", &[0.0], 1).unwrap_err(),
            Error::Query {
                reason: "backend down".into()
            }
        );
    }

    #[test]
    fn should_reject_invalid_released_vectors() {
        let bad = |r: &[f64], y| {
            let s = released_score(ScoreKind::Loss, r, y);
            assert!(
                matches!(s, Err(Error::InvalidParameter { .. })),
                "{r:?} {y}"
            );
        };
        bad(&[], 0);
        bad(&[0.5, 0.5], 2);
        bad(&[f64::NAN, 0.5], 0);
        bad(&[-0.1, 0.5], 1);
        bad(&[1.1, 0.0], 1);
        bad(&[f64::INFINITY, 0.0], 1);
    }
}
