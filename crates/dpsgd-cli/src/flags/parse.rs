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
