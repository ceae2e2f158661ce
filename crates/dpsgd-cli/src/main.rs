//! `dpsgd`: differentially private deep learning from the command line.
//!
//! Subcommands: `train`, `sweep`, `audit`, `epsilon` and `calibrate` (privacy
//! accounting), `bench`.

mod commands;
mod error;
mod flags;
mod html;
mod output;
mod setup;
mod training;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Differentially private deep learning on burn: accounting, training, sweeps.
#[derive(Debug, Parser)]
#[command(name = "dpsgd", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ε of a DP-SGD run (Poisson-subsampled Gaussian mechanism).
    Epsilon(commands::epsilon::Args),
    /// The smallest noise multiplier that meets a target ε.
    Calibrate(commands::calibrate::Args),
    /// Train a model with DP-SGD and report accuracy, ε and leakage.
    Train(commands::train::Args),
    /// Train at several ε budgets and plot accuracy and leakage against ε.
    Sweep(commands::sweep::Args),
    /// Train a model as `train` would, attack it and report its leakage:
    /// membership inference, ε lower bound, model inversion.
    Audit(commands::audit::Args),
    /// Train with each defence (and DP-SGD) on the same split, attack each,
    /// and compare test accuracy with measured leakage.
    Compare(commands::compare::Args),
    /// Benchmarks (DP step vs non-private step).
    Bench(commands::bench::Args),
    /// One self-contained HTML page (findings, guarantee, leakage,
    /// defences) from the JSON reports of train, audit, sweep and compare.
    Report(commands::report::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return error::exit_on_parse_error(e),
    };
    let result = match cli.command {
        Command::Epsilon(a) => commands::epsilon::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Calibrate(a) => commands::calibrate::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => commands::bench::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Report(a) => commands::report::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Train(a) => commands::train::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Sweep(a) => commands::sweep::run(&a),
        Command::Audit(a) => commands::audit::run(&a),
        Command::Compare(a) => commands::compare::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(error::exit_code(&e))
        }
    }
}

/// The error and its causes on one line, each cause once: errors that
/// already quote their source in their own message (`cannot read F: not
/// found`) would otherwise print it twice, as `{e:#}` does.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
