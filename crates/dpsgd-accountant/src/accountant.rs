//! The [`Accountant`] trait and its two implementations.

use crate::error::{Result, check_delta, check_epsilon};
use crate::history::{History, Segment};
use crate::pld::{ComposedPld, PldConfig};
use crate::rdp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Mutex;

/// Which accounting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountantKind {
    /// Rényi DP (the moments accountant): fast, slightly loose.
    #[default]
    Rdp,
    /// Privacy loss distributions: tight, slower.
    Pld,
}

impl AccountantKind {
    /// The short name (`"rdp"` or `"pld"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::Pld => "pld",
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AccountantKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rdp" => Ok(Self::Rdp),
            "pld" => Ok(Self::Pld),
            _ => Err(crate::error::invalid(
                "accountant",
                s,
                "expected `rdp` or `pld`",
            )),
        }
    }
}

/// What a training engine needs from an accountant: record steps, ask for
/// (ε, δ). Implementations keep the full history, so σ and q may change
/// during training.
pub trait Accountant {
    /// Records `steps` steps with noise multiplier σ and sampling rate q.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter) for an
    /// invalid σ or q; nothing is recorded then.
    fn record(&mut self, noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<()>;

    /// The smallest ε (rounded up) such that the run so far is (ε, δ)-DP.
    ///
    /// # Errors
    ///
    /// Invalid δ, or ε unbounded at this δ.
    fn epsilon(&self, delta: f64) -> Result<f64>;

    /// The δ at which the run so far is (ε, δ)-DP.
    ///
    /// # Errors
    ///
    /// Invalid ε.
    fn delta(&self, epsilon: f64) -> Result<f64>;

    /// The steps recorded so far.
    fn history(&self) -> &History;

    /// Which method this is.
    fn kind(&self) -> AccountantKind;

    /// ε after also taking `extra` (not recorded): lets a caller check a
    /// budget before it commits a step.
    ///
    /// # Errors
    ///
    /// As [`Accountant::epsilon`].
    fn epsilon_after(&self, extra: Segment, delta: f64) -> Result<f64>;
}

/// RDP accountant over a fixed grid of orders.
///
/// # Examples
///
/// ```
/// use dpsgd_accountant::{Accountant, RdpAccountant};
/// let mut acc = RdpAccountant::new();
/// acc.record(1.1, 256.0 / 60000.0, 14062)?;
/// let (eps, order) = acc.epsilon_with_order(1e-5)?;
/// assert!((eps - 2.597).abs() < 0.01);
/// assert!(order > 1.0);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    history: History,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An accountant on [`rdp::default_orders`].
    pub fn new() -> Self {
        Self {
            orders: rdp::default_orders(),
            history: History::new(),
        }
    }

    /// An accountant on a custom grid of orders (all > 1).
    ///
    /// # Errors
    ///
    /// An empty grid, or an order ≤ 1 or not finite.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() {
            return Err(crate::error::invalid(
                "orders",
                0,
                "need at least one order",
            ));
        }
        for &a in &orders {
            rdp::check_order(a)?;
        }
        Ok(Self {
            orders,
            history: History::new(),
        })
    }

    /// The grid of orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Total RDP of the history at each order.
    pub fn rdp(&self) -> Vec<f64> {
        rdp_of(&self.orders, self.history.segments())
    }

    /// ε at δ and the Rényi order that attains it.
    ///
    /// # Errors
    ///
    /// As [`rdp::epsilon_from_rdp`].
    pub fn epsilon_with_order(&self, delta: f64) -> Result<(f64, f64)> {
        rdp::epsilon_from_rdp(&self.orders, &self.rdp(), delta)
    }
}

fn rdp_of(orders: &[f64], segments: &[Segment]) -> Vec<f64> {
    orders
        .iter()
        .map(|&alpha| {
            segments
                .iter()
                .map(|s| {
                    s.steps as f64
                        * rdp::rdp_step_unchecked(s.sample_rate, s.noise_multiplier, alpha)
                })
                .sum()
        })
        .collect()
}

impl Accountant for RdpAccountant {
    fn record(&mut self, noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<()> {
        self.history
            .push(Segment::new(noise_multiplier, sample_rate, steps)?);
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        Ok(self.epsilon_with_order(delta)?.0)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        Ok(rdp::delta_from_rdp(&self.orders, &self.rdp(), epsilon)?.0)
    }

    fn history(&self) -> &History {
        &self.history
    }

    fn kind(&self) -> AccountantKind {
        AccountantKind::Rdp
    }

    fn epsilon_after(&self, extra: Segment, delta: f64) -> Result<f64> {
        let mut segments = self.history.segments().to_vec();
        segments.push(extra);
        Ok(rdp::epsilon_from_rdp(&self.orders, &rdp_of(&self.orders, &segments), delta)?.0)
    }
}

/// PLD accountant: tight ε, composes the whole history on each query (with
/// the last result cached until the next step).
///
/// # Examples
///
/// ```
/// use dpsgd_accountant::{Accountant, PldAccountant};
/// let mut acc = PldAccountant::default();
/// acc.record(1.1, 256.0 / 60000.0, 14062)?;
/// let eps = acc.epsilon(1e-5)?;
/// assert!((eps - 2.38).abs() < 0.03);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct PldAccountant {
    config: PldConfig,
    history: History,
    #[serde(skip)]
    cache: Mutex<Option<(u64, ComposedPld)>>,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self {
            config: PldConfig::default(),
            history: History::new(),
            cache: Mutex::new(None),
        }
    }
}

impl Clone for PldAccountant {
    fn clone(&self) -> Self {
        Self {
            config: self.config,
            history: self.history.clone(),
            cache: Mutex::new(None),
        }
    }
}

impl PartialEq for PldAccountant {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.history == other.history
    }
}

impl PldAccountant {
    /// An accountant with the given discretisation.
    ///
    /// # Errors
    ///
    /// As [`PldConfig::validate`].
    pub fn new(config: PldConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            ..Self::default()
        })
    }

    /// The discretisation settings.
    pub fn config(&self) -> &PldConfig {
        &self.config
    }

    fn compose(&self, segments: &[Segment]) -> Result<ComposedPld> {
        let mut total: Option<ComposedPld> = None;
        for s in segments {
            let one = ComposedPld::subsampled_gaussian(
                s.sample_rate,
                s.noise_multiplier,
                s.steps,
                &self.config,
            )?;
            total = Some(match total {
                None => one,
                Some(t) => t.compose(&one, self.config.tail_mass_truncation)?,
            });
        }
        Ok(total.unwrap_or_else(|| ComposedPld::identity(&self.config)))
    }

    /// The composed distributions of the whole history (cached).
    ///
    /// # Errors
    ///
    /// As [`ComposedPld::subsampled_gaussian`].
    pub fn composed(&self) -> Result<ComposedPld> {
        let steps = self.history.steps();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_steps, pld)) = cache.as_ref()
            && *cached_steps == steps
        {
            return Ok(pld.clone());
        }
        let pld = self.compose(self.history.segments())?;
        *cache = Some((steps, pld.clone()));
        Ok(pld)
    }
}

impl Accountant for PldAccountant {
    fn record(&mut self, noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<()> {
        self.history
            .push(Segment::new(noise_multiplier, sample_rate, steps)?);
        *self.cache.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        self.composed()?.epsilon(delta)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        check_epsilon(epsilon)?;
        self.composed()?.delta(epsilon)
    }

    fn history(&self) -> &History {
        &self.history
    }

    fn kind(&self) -> AccountantKind {
        AccountantKind::Pld
    }

    fn epsilon_after(&self, extra: Segment, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        let base = self.composed()?;
        let one = ComposedPld::subsampled_gaussian(
            extra.sample_rate,
            extra.noise_multiplier,
            extra.steps,
            &self.config,
        )?;
        base.compose(&one, self.config.tail_mass_truncation)?
            .epsilon(delta)
    }
}

/// Either accountant, chosen at run time; serialises with its history so a
/// resumed run continues exactly where it stopped.
///
/// # Examples
///
/// ```
/// use dpsgd_accountant::{Accountant, AccountantKind, AnyAccountant};
/// let mut acc = AnyAccountant::new(AccountantKind::Rdp);
/// acc.record(1.0, 0.01, 1000)?;
/// let saved = serde_json::to_string(&acc).unwrap();
/// let resumed: AnyAccountant = serde_json::from_str(&saved).unwrap();
/// assert_eq!(resumed.epsilon(1e-5)?, acc.epsilon(1e-5)?);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AnyAccountant {
    /// See [`RdpAccountant`].
    Rdp(RdpAccountant),
    /// See [`PldAccountant`].
    Pld(PldAccountant),
}

impl AnyAccountant {
    /// A fresh accountant of the given kind with default settings.
    pub fn new(kind: AccountantKind) -> Self {
        match kind {
            AccountantKind::Rdp => Self::Rdp(RdpAccountant::new()),
            AccountantKind::Pld => Self::Pld(PldAccountant::default()),
        }
    }

    fn inner(&self) -> &dyn Accountant {
        match self {
            Self::Rdp(a) => a,
            Self::Pld(a) => a,
        }
    }
}

impl Accountant for AnyAccountant {
    fn record(&mut self, noise_multiplier: f64, sample_rate: f64, steps: u64) -> Result<()> {
        match self {
            Self::Rdp(a) => a.record(noise_multiplier, sample_rate, steps),
            Self::Pld(a) => a.record(noise_multiplier, sample_rate, steps),
        }
    }
    fn epsilon(&self, delta: f64) -> Result<f64> {
        self.inner().epsilon(delta)
    }
    fn delta(&self, epsilon: f64) -> Result<f64> {
        self.inner().delta(epsilon)
    }
    fn history(&self) -> &History {
        self.inner().history()
    }
    fn kind(&self) -> AccountantKind {
        self.inner().kind()
    }
    fn epsilon_after(&self, extra: Segment, delta: f64) -> Result<f64> {
        self.inner().epsilon_after(extra, delta)
    }
}
