//! Argument parsing shared by the subcommands: value parsers that validate
//! domains (so a bad value names its flag), and the exit-code policy.

use clap::error::ErrorKind;
use dpsgd_accountant::AccountantKind;
use std::process::ExitCode;

/// Exit code for bad command-line arguments (as clap's own).
pub const EXIT_USAGE: u8 = 2;

/// Prints a clap error as ONE line naming the argument and exits with 2;
/// help and version requests print normally and succeed.
pub fn exit_on_parse_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            // clap's first paragraph names the argument (a missing argument
            // is listed on the lines below the first): fold it into one line.
            let rendered = e.render().to_string();
            let line: Vec<&str> = rendered
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", line.join(" "));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// An error a command can return to mean "the arguments are unusable"
/// (exit code 2), as opposed to a failure while running (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {flag}: {message}")]
pub struct UsageError {
    /// The flag, e.g. `--sample-rate`.
    pub flag: &'static str,
    /// What is wrong.
    pub message: String,
}

/// 2 for usage errors and invalid parameters caught by the library, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
    }
    if let Some(dpsgd_accountant::Error::InvalidParameter { .. }) = e.downcast_ref() {
        return EXIT_USAGE;
    }
    // A configuration the library refuses before training starts (δ ≥ 1/N,
    // a CNN on images too small for it, an invalid clipping setting).
    match e.downcast_ref::<dpsgd::train::TrainError>() {
        Some(dpsgd::train::TrainError::Config(_))
        | Some(dpsgd::train::TrainError::Dp(dpsgd_core::Error::InvalidParameter { .. }))
        | Some(dpsgd::train::TrainError::Accountant(dpsgd_accountant::Error::InvalidParameter {
            ..
        })) => EXIT_USAGE,
        _ => 1,
    }
}

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
    match steps(s)? {
        0 => Err("must be at least 1".into()),
        v => Ok(v),
    }
}

/// A whole number ≥ 0.
pub fn steps(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{s}` is not a whole number >= 0"))
}
