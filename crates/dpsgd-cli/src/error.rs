//! The exit-code policy: clap's errors on one line, [`UsageError`] for
//! arguments a command finds unusable (exit 2, as clap's own), and the
//! exit code of every other error.

use clap::error::ErrorKind;
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
            // clap's "tip: a similar argument exists" lines are kept, on
            // the same line.
            let rendered = e.render().to_string();
            let mut line: Vec<&str> = rendered
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let tips = rendered
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("tip:"));
            for tip in tips {
                line.push("—");
                line.push(tip);
            }
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

/// Exit code when an audit's lower bound exceeds the claimed ε: the claim
/// is false (a privacy bug), at the audit's confidence.
pub const EXIT_CLAIM_REFUTED: u8 = 3;
