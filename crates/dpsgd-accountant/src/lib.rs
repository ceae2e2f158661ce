//! Privacy accounting for DP-SGD, in pure Rust (no deep-learning dependency).
//!
//! Turns a training run of the Poisson-subsampled Gaussian mechanism — noise
//! multiplier σ, sampling rate q, number of steps — into an (ε, δ)
//! differential-privacy guarantee, and back:
//!
//! * [`rdp`]: Rényi DP (the moments accountant) with exact integer and
//!   fractional orders and the tight RDP → (ε, δ) conversion.
//! * [`pld`]: privacy loss distributions, pessimistically discretised and
//!   composed by FFT; a tighter ε than RDP for the same run.
//! * [`calibrate_noise`] and [`max_steps`]: the smallest σ, or the most steps,
//!   within a budget.
//! * [`lower_bound`]: a discretisation-free lower bound on the true ε, to
//!   check any accountant against.
//! * [`Accountant`]: one interface over both, with a serialisable history
//!   ([`AnyAccountant`]) for training engines that checkpoint and resume.
//!
//! # Privacy
//!
//! Neighbouring datasets differ by adding or removing one example (the
//! "add/remove" relation); each step includes every example independently
//! with probability q (Poisson sampling); the clipped gradient sum has
//! sensitivity equal to the clipping norm C and receives N(0, σ²C²) noise.
//! Reported ε are rounded up and never below the true value of the chosen
//! method's bound; invalid inputs are errors, never NaN.
//!
//! # Example
//!
//! ```
//! use dpsgd_accountant::{Accountant, AccountantKind, AnyAccountant};
//!
//! let q = 256.0 / 60_000.0; // expected batch 256 of 60 000 examples
//! let mut rdp = AnyAccountant::new(AccountantKind::Rdp);
//! let mut pld = AnyAccountant::new(AccountantKind::Pld);
//! for acc in [&mut rdp, &mut pld] {
//!     acc.record(1.1, q, 14_062)?; // σ = 1.1, 60 epochs
//! }
//! let (e_rdp, e_pld) = (rdp.epsilon(1e-5)?, pld.epsilon(1e-5)?);
//! assert!(e_pld < e_rdp); // ≈ 2.38 vs ≈ 2.60
//! # Ok::<(), dpsgd_accountant::Error>(())
//! ```
#![warn(missing_docs)]

mod accountant;
mod calibrate;
mod error;
mod history;
pub mod lower_bound;
mod math;
pub mod pld;
pub mod rdp;

pub use accountant::{
    Accountant, AccountantKind, AnyAccountant, MAX_STEPS, PldAccountant, RdpAccountant,
};
pub use calibrate::{NoiseCalibration, calibrate_noise, max_steps};
pub use error::{Error, Result};

/// The range checks of the accountant's inputs, public so that every crate
/// checks q, σ, δ and ε against the same ranges (each is written once).
pub mod checks {
    pub use crate::error::{
        check_delta as delta, check_epsilon as epsilon, check_noise_multiplier as noise_multiplier,
        check_sample_rate as sample_rate,
    };
}
pub use history::{History, Segment};
pub use pld::PldConfig;
