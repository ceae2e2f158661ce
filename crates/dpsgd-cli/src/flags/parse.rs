//! Value parsers shared by the subcommands: each validates its domain, so
//! that a bad value is refused by clap naming its flag (exit 2).

use dpsgd_accountant::AccountantKind;

fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not finite"))
    }
}

/// q ∈ (0, 1].
pub fn sample_rate(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err("the sample rate must be in (0, 1]".into())
    }
}

/// σ > 0.
pub fn noise_multiplier(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err("the noise multiplier must be > 0".into())
    }
}

/// δ ∈ (0, 1).
pub fn delta(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err("δ must be in (0, 1)".into())
    }
}

/// ε > 0.
pub fn epsilon(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err("ε must be > 0".into())
    }
}

/// `rdp` or `pld`.
pub fn accountant(s: &str) -> Result<AccountantKind, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an accountant (expected rdp or pld)"))
}

/// A whole number ≥ 1.
pub fn positive_steps(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("`{s}` is not a whole number >= 1")),
    }
}

/// A real number > 0 (a learning rate, a clipping norm): the flag is named
/// by clap in front of the message.
pub fn positive(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err("must be > 0".into())
    }
}

/// A fraction in the open interval (0, 1).
pub fn open_fraction(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err("must be in (0, 1)".into())
    }
}

/// A count ≥ 1 (epochs, a batch size).
pub fn positive_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("`{s}` is not a whole number >= 1")),
    }
}

/// A whole number ≥ 0.
pub fn steps(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{s}` is not a whole number >= 0"))
}

/// `--backend`: only the backends compiled into this build are accepted,
/// and `--help` lists them (`[possible values: flex]` in a default build;
/// the others need `--features ndarray|wgpu|cuda`).
pub fn backend() -> impl clap::builder::TypedValueParser<Value = dpsgd_burn::backend::Backend> {
    let names: Vec<&'static str> = dpsgd_burn::backend::Backend::enabled()
        .into_iter()
        .map(dpsgd_burn::backend::Backend::name)
        .collect();
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names).try_map(|name| name.parse())
}

/// RelaxLoss's target loss level as spelled: an absolute α, or a share of
/// ln K (`0.2lnK`), the cross-entropy of the uniform prediction over the
/// K classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RelaxAlpha {
    /// α itself.
    Absolute(f64),
    /// α = this share · ln K.
    PerLnK(f64),
}

impl RelaxAlpha {
    /// The default rule, `0.2lnK` (see
    /// [`dpsgd::train::RelaxLossSettings::DEFAULT_ALPHA_PER_LN_K`]).
    pub const DEFAULT: Self =
        Self::PerLnK(dpsgd::train::RelaxLossSettings::DEFAULT_ALPHA_PER_LN_K as f64);

    /// The settings for `classes` classes with flattening bound `upper`.
    pub fn settings(self, classes: usize, upper: f64) -> dpsgd::train::RelaxLossSettings {
        match self {
            Self::Absolute(alpha) => dpsgd::train::RelaxLossSettings {
                alpha: alpha as f32,
                upper: upper as f32,
            },
            Self::PerLnK(share) => {
                dpsgd::train::RelaxLossSettings::relative(share as f32, classes, upper as f32)
            }
        }
    }
}

/// `ALPHA` (> 0) or `SHARElnK` (SHARE > 0, `lnK` in any case): RelaxLoss's
/// target, absolute or relative to ln K.
pub fn relax_alpha(s: &str) -> Result<RelaxAlpha, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    match lower.strip_suffix("lnk") {
        Some(share) => {
            let v = positive(share).map_err(|e| format!("`{t}`: the share of ln K {e}"))?;
            Ok(RelaxAlpha::PerLnK(v))
        }
        None => positive(t).map(RelaxAlpha::Absolute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_read_relaxloss_alpha_absolute_or_relative_to_ln_k() {
        assert_eq!(relax_alpha("0.5"), Ok(RelaxAlpha::Absolute(0.5)));
        assert_eq!(relax_alpha(" 0.2lnK "), Ok(RelaxAlpha::PerLnK(0.2)));
        assert_eq!(relax_alpha("1LNK"), Ok(RelaxAlpha::PerLnK(1.0)));
        for bad in [
            "0", "-1", "lnK", "0lnK", "-0.2lnK", "xlnK", "0.2ln", "nan", "inf",
        ] {
            assert!(relax_alpha(bad).is_err(), "{bad}");
        }
        // 0.2 · ln 10 and 0.2 · ln 2; a single class counts as two.
        let ten = RelaxAlpha::PerLnK(0.2).settings(10, 0.3);
        assert!((ten.alpha - 0.460_517).abs() < 1e-5 && ten.upper == 0.3);
        let one = RelaxAlpha::DEFAULT.settings(1, 0.3).alpha;
        assert!((one - 0.138_629).abs() < 1e-5);
        assert_eq!(RelaxAlpha::Absolute(0.7).settings(30, 0.1).alpha, 0.7);
    }
}
