//! `dpsgd`: differentially private deep learning from the command line.
//!
//! Subcommands: `train`, `sweep`, `audit`, `compare`, `report`, `serve`,
//! `epsilon` and `calibrate` (privacy accounting), `bench`, `device`,
//! `worker`.
//!
//! Layout (after ripgrep's), each layer importing only those below it:
//! * `commands/`: one file per subcommand, its `Args` and `run`;
//! * `training`: a training or an audit run with progress on standard
//!   error, and the library's refusals named by flag;
//! * `setup/`: flags to settings (the data and its public preprocessing,
//!   the recipe and `TrainConfig`, the audit's config);
//! * `flags/`: every flag group declared once (value parsers, the training
//!   and privacy options, `compare`'s defences, the run shape of the
//!   accounting commands), flattened into the commands' `Args`;
//! * `html/`: the privacy report page;
//! * `output/`: everything written (atomic owner-only files, `--report`'s
//!   target, clobbering checks, number formatting, each command's tables
//!   and figures);
//! * `error`: the exit-code policy and `UsageError`.

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
    /// Benchmarks (DP step vs non-private step) and the engine's check
    /// against the per-example loop on a backend.
    Bench(commands::bench::Args),
    /// What a backend computes on (the GPU adapter wgpu finds, or the
    /// host), with a matrix product checked against the host.
    Device(commands::device::Args),
    /// One self-contained HTML page (findings, guarantee, leakage,
    /// defences) from the JSON reports of train, audit, sweep and compare.
    Report(commands::report::Args),
    /// Serve a saved model over HTTP behind per-key releases, budgets and
    /// query-stream monitoring; `serve keys add|list|revoke` manages keys.
    Serve(commands::serve::Args),
    /// Serve this machine's device as a data-parallel worker for `train
    /// --workers` (burn's remote device over WebSocket; a build with the
    /// `distributed` feature).
    Worker(commands::worker::Args),
}

/// mimalloc keeps freed large blocks for reuse instead of returning them to
/// the OS between training steps (glibc's malloc maps and unmaps them, and
/// every step then pays page faults on fresh memory).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return error::exit_on_parse_error(e),
    };
    let result = match cli.command {
        Command::Epsilon(a) => commands::epsilon::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Calibrate(a) => commands::calibrate::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => commands::bench::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Device(a) => commands::device::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Report(a) => commands::report::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Train(a) => commands::train::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Sweep(a) => commands::sweep::run(&a),
        Command::Audit(a) => commands::audit::run(&a),
        Command::Compare(a) => commands::compare::run(&a),
        Command::Serve(a) => commands::serve::run(&a).map(|()| ExitCode::SUCCESS),
        Command::Worker(a) => commands::worker::run(&a).map(|()| ExitCode::SUCCESS),
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
