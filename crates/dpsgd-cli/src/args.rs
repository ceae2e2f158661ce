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

/// How long a run is: either its sampling rate and step count directly, or
/// (as TF Privacy's `compute_dp_sgd_privacy`) its dataset size, expected
/// batch size and epochs, from which `q = B/N` and
/// `T = E · round(N/B)` (the steps per epoch `dpsgd train` takes).
#[derive(Debug, clap::Args)]
pub struct RunShape {
    /// Poisson sampling rate q (expected batch size / dataset size).
    #[arg(long, allow_hyphen_values = true, value_name = "Q", value_parser = sample_rate,
          required_unless_present = "dataset_size", conflicts_with = "dataset_size")]
    sample_rate: Option<f64>,
    /// Number of steps.
    #[arg(long, allow_hyphen_values = true, value_name = "T", value_parser = steps,
          required_unless_present = "dataset_size", conflicts_with = "dataset_size")]
    steps: Option<u64>,
    /// Dataset size N (instead of --sample-rate and --steps).
    #[arg(long, allow_hyphen_values = true, value_name = "N", value_parser = positive_steps,
          requires_all = ["batch_size", "epochs"])]
    dataset_size: Option<u64>,
    /// Expected batch size B (with --dataset-size).
    #[arg(long, allow_hyphen_values = true, value_name = "B", value_parser = positive_steps,
          requires = "dataset_size")]
    batch_size: Option<u64>,
    /// Number of epochs E (with --dataset-size).
    #[arg(long, allow_hyphen_values = true, value_name = "E", value_parser = positive_steps,
          requires = "dataset_size")]
    epochs: Option<u64>,
}

/// A [`RunShape`] resolved to the accountant's terms.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// q.
    pub sample_rate: f64,
    /// T.
    pub steps: u64,
    /// (N, B, E) when the run was given that way.
    pub epochs_form: Option<(u64, u64, u64)>,
}

impl RunShape {
    /// q and T.
    ///
    /// # Errors
    ///
    /// [`UsageError`] when the batch is larger than the dataset, or the
    /// epochs make more steps than a `u64` counts.
    pub fn resolve(&self) -> Result<Run, UsageError> {
        match (
            self.sample_rate,
            self.steps,
            self.dataset_size,
            self.batch_size,
            self.epochs,
        ) {
            (_, _, Some(n), Some(b), Some(e)) => {
                if b > n {
                    return Err(UsageError {
                        flag: "--batch-size",
                        message: format!("the batch ({b}) is larger than the dataset ({n})"),
                    });
                }
                let per_epoch = ((n as f64 / b as f64).round() as u64).max(1);
                // A saturated count would answer for fewer steps than asked.
                let steps = e.checked_mul(per_epoch).ok_or_else(|| UsageError {
                    flag: "--epochs",
                    message: format!(
                        "{e} epochs of {per_epoch} steps is more steps than can be counted (at most {})",
                        u64::MAX
                    ),
                })?;
                Ok(Run {
                    sample_rate: b as f64 / n as f64,
                    steps,
                    epochs_form: Some((n, b, e)),
                })
            }
            (Some(q), Some(t), _, _, _) => Ok(Run {
                sample_rate: q,
                steps: t,
                epochs_form: None,
            }),
            // clap's `required_unless_present`/`requires` rule these out.
            _ => Err(UsageError {
                flag: "--sample-rate",
                message:
                    "give --sample-rate and --steps, or --dataset-size, --batch-size and --epochs"
                        .into(),
            }),
        }
    }
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
