//! Calibration: the smallest noise multiplier, or the largest number of
//! steps, that keeps a run within an (ε, δ) budget.

use crate::accountant::{Accountant, AccountantKind, AnyAccountant};
use crate::error::{Error, Result, check_delta, check_epsilon, check_sample_rate};
use crate::pld::{ComposedPld, PldConfig};
use crate::rdp;

/// The outcome of [`calibrate_noise`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseCalibration {
    /// The noise multiplier σ found.
    pub noise_multiplier: f64,
    /// ε of the run at σ (always ≤ the target).
    pub epsilon: f64,
}

/// Relative resolution of the σ search: the σ returned is within this factor
/// of the exact smallest σ (RDP is cheap, PLD costs one composition per probe).
fn tolerance(kind: AccountantKind) -> f64 {
    match kind {
        AccountantKind::Rdp => 1e-7,
        AccountantKind::Pld => 1e-4,
    }
}

/// An accountant's ε at one σ, or why it cannot answer there.
type Eval = std::result::Result<f64, String>;

/// ε of `steps` steps at (q, σ): `Ok(ε)` (`+∞` where ε is unbounded at
/// δ), or `Err(reason)` where the accountant cannot answer for the run
/// (σ far too small for its arithmetic or its grid, σ or δ outside PLD's
/// regime) — such a σ is never chosen. PLD uses the grid
/// [refined](PldConfig::refined_for) for each σ, as [`pld::epsilon`](crate::pld::epsilon).
fn epsilon_of(kind: AccountantKind, q: f64, sigma: f64, steps: u64, delta: f64) -> Result<Eval> {
    let eps = match kind {
        AccountantKind::Rdp => rdp::epsilon(q, sigma, steps, delta).map(|(e, _)| e),
        AccountantKind::Pld => ComposedPld::for_run(q, sigma, steps, &PldConfig::default())
            .and_then(|p| p.epsilon(delta)),
    };
    match eps {
        Ok(e) => Ok(Ok(e)),
        Err(Error::Unbounded(_)) => Ok(Ok(f64::INFINITY)),
        Err(Error::OutOfRange(reason)) => Ok(Err(reason)),
        Err(e) => Err(e),
    }
}

fn out_of_range(target_epsilon: f64, sigma: f64, reason: &str) -> Error {
    let advice = if reason.contains("RDP") {
        ""
    } else {
        "; calibrate with RDP instead"
    };
    Error::OutOfRange(format!(
        "PLD cannot answer for the runs near σ = {sigma} that a target of ε = \
         {target_epsilon} needs: {reason}{advice}"
    ))
}

/// The smallest noise multiplier σ (to a relative resolution of 1e-7 for
/// RDP, 1e-4 for PLD) such that `steps` steps at sampling rate `q` are
/// (ε, δ)-DP with ε ≤ `target_epsilon`. The σ returned always satisfies the
/// target: the search keeps the bracket end that does.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for invalid q, δ, ε or `steps = 0`;
/// [`Error::Unreachable`] when no σ ≤ 10⁶ meets the target, or when every
/// σ ≥ 10⁻³ does (the target is vacuous); [`Error::OutOfRange`] for PLD,
/// with PLD's reason, where the runs the target needs are outside its
/// regime (see [`crate::pld`]): σ too small for its grid, σ so large that
/// one step's loss is below what it resolves, δ below the mass its
/// truncation sets aside (δ = 1e-300), grids too large. RDP answers there.
///
/// # Examples
///
/// ```
/// use dpsgd_accountant::{calibrate_noise, AccountantKind};
/// let c = calibrate_noise(AccountantKind::Rdp, 256.0 / 60000.0, 14062, 1e-5, 3.0)?;
/// assert!(c.epsilon <= 3.0);
/// assert!(c.noise_multiplier > 0.9 && c.noise_multiplier < 1.1);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
pub fn calibrate_noise(
    kind: AccountantKind,
    sample_rate: f64,
    steps: u64,
    delta: f64,
    target_epsilon: f64,
) -> Result<NoiseCalibration> {
    check_sample_rate(sample_rate)?;
    check_delta(delta)?;
    check_epsilon(target_epsilon)?;
    if target_epsilon == 0.0 {
        return Err(crate::error::invalid("target_epsilon", 0, "must be > 0"));
    }
    if steps == 0 {
        return Err(crate::error::invalid("steps", 0, "must be at least 1"));
    }
    let eps = |sigma: f64| epsilon_of(kind, sample_rate, sigma, steps, delta);
    // Bracket [lo, hi] with ε(lo) > target ≥ ε(hi). PLD starts from the RDP
    // answer, which usually needs a little more noise.
    let (mut hi, mut eps_hi) = match kind {
        AccountantKind::Rdp => (1.0, eps(1.0)?),
        AccountantKind::Pld => {
            let rdp_sigma = calibrate_noise(
                AccountantKind::Rdp,
                sample_rate,
                steps,
                delta,
                target_epsilon,
            )?
            .noise_multiplier;
            // Where PLD cannot even hold RDP's σ it cannot hold the smaller
            // σ the target allows either: refuse at once (O(1) for one
            // step's grid, one discretisation for the composed one) rather
            // than search the edge of its range for minutes.
            let config = PldConfig::default().refined_for([(sample_rate, rdp_sigma)]);
            if let Err(Error::OutOfRange(reason)) =
                ComposedPld::check_representable(sample_rate, rdp_sigma, &config)
            {
                return Err(out_of_range(target_epsilon, rdp_sigma, &reason));
            }
            let e = eps(rdp_sigma)?;
            if let Err(reason) = &e {
                return Err(out_of_range(target_epsilon, rdp_sigma, reason));
            }
            (rdp_sigma, e)
        }
    };
    // σ whose ε is unknown (`Err`) is treated as over the target.
    let over = |e: &Eval| e.as_ref().map_or(true, |e| *e > target_epsilon);
    while over(&eps_hi) {
        if let (AccountantKind::Pld, Err(reason)) = (kind, &eps_hi) {
            // More noise only shrinks one step's loss further below what
            // PLD resolves: name PLD's reason, not the target's.
            return Err(out_of_range(target_epsilon, hi, reason));
        }
        hi *= 2.0;
        if hi > 1e6 {
            return Err(Error::Unreachable {
                name: "noise_multiplier",
                reason: format!("even σ = 1e6 gives ε > {target_epsilon}"),
            });
        }
        eps_hi = eps(hi)?;
    }
    // PLD's σ is usually a few percent below RDP's: try a tight bracket
    // first, then halve.
    let mut lo = match kind {
        AccountantKind::Pld => hi * 0.9,
        AccountantKind::Rdp => hi / 2.0,
    };
    // Why the bracket's lower end is over the target, where that is only
    // because the accountant could not evaluate it.
    let mut lo_unknown: Option<String>;
    let eps_lo;
    loop {
        let e = eps(lo)?;
        if over(&e) {
            lo_unknown = e.as_ref().err().cloned();
            eps_lo = e;
            break;
        }
        hi = lo;
        eps_hi = e;
        lo /= 2.0;
        if lo < 1e-3 {
            return Err(Error::Unreachable {
                name: "noise_multiplier",
                reason: format!("every σ ≥ 1e-3 gives ε ≤ {target_epsilon}; the target is vacuous"),
            });
        }
    }
    let tol = tolerance(kind);
    // Each probe keeps the invariant over(ε(lo)), !over(ε(hi)). While it
    // helps, the root is guessed by a secant through the last two points of
    // ln ε against ln σ (ε is close to a power of σ) and probed just either
    // side, which usually closes the bracket in a few probes; geometric
    // bisection guarantees it otherwise.
    let point = |sigma: f64, e: &Eval| {
        e.as_ref()
            .ok()
            .filter(|e| e.is_finite() && **e > 0.0)
            .map(|e| (sigma.ln(), (e / target_epsilon).ln()))
    };
    let mut recent = [point(lo, &eps_lo), point(hi, &eps_hi)];
    let mut guesses = 0;
    while hi / lo - 1.0 > tol {
        let secant = match recent {
            [Some((x0, y0)), Some((x1, y1))] if guesses < 8 && y0 != y1 => {
                Some((x1 - y1 * (x1 - x0) / (y1 - y0)).exp())
            }
            _ => None,
        };
        let probes = match secant {
            Some(guess) if guess > lo && guess < hi => {
                guesses += 1;
                vec![guess * (1.0 + tol / 4.0), guess * (1.0 - tol / 4.0)]
            }
            _ => vec![(lo * hi).sqrt()],
        };
        for mid in probes {
            if !(mid > lo && mid < hi) {
                continue; // outside the bracket: no information
            }
            let e = eps(mid)?;
            recent = [recent[1], point(mid, &e)];
            if over(&e) {
                lo = mid;
                lo_unknown = e.as_ref().err().cloned();
            } else {
                hi = mid;
                eps_hi = e;
            }
        }
    }
    if let Some(reason) = lo_unknown {
        // Minimality rests on a σ the accountant could not evaluate.
        return Err(out_of_range(target_epsilon, lo, &reason));
    }
    let eps_hi = eps_hi.map_err(|reason| out_of_range(target_epsilon, hi, &reason))?;
    Ok(NoiseCalibration {
        noise_multiplier: hi,
        epsilon: eps_hi,
    })
}

/// The largest number of steps at (q, σ) whose ε at δ stays ≤
/// `target_epsilon` (0 if even one step exceeds it; at most
/// [`MAX_STEPS`](crate::MAX_STEPS)). Step counts whose ε the accountant cannot
/// compute count as over the target.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for invalid q, σ, δ or ε.
///
/// # Examples
///
/// ```
/// use dpsgd_accountant::{max_steps, rdp, AccountantKind};
/// let q = 256.0 / 60000.0;
/// let t = max_steps(AccountantKind::Rdp, q, 1.1, 1e-5, 2.6)?;
/// assert!(rdp::epsilon(q, 1.1, t, 1e-5)?.0 <= 2.6);
/// assert!(rdp::epsilon(q, 1.1, t + 1, 1e-5)?.0 > 2.6);
/// # Ok::<(), dpsgd_accountant::Error>(())
/// ```
pub fn max_steps(
    kind: AccountantKind,
    sample_rate: f64,
    noise_multiplier: f64,
    delta: f64,
    target_epsilon: f64,
) -> Result<u64> {
    // The accountant validates the arguments.
    AnyAccountant::new(kind).max_additional_steps(
        noise_multiplier,
        sample_rate,
        delta,
        target_epsilon,
    )
}
