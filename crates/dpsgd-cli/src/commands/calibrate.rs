//! `dpsgd calibrate`: the noise multiplier for a target ε.

use crate::error;
use crate::flags::parse;
use crate::flags::run::RunShape;
use crate::output::format::number;
use dpsgd_accountant::{AccountantKind, calibrate_noise};
use serde_json::json;

/// Arguments of `dpsgd calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunShape,
    /// Target δ.
    #[arg(long, allow_hyphen_values = true, value_name = "D", value_parser = parse::delta)]
    delta: f64,
    /// Target ε: the σ found never exceeds it.
    #[arg(long, allow_hyphen_values = true, value_name = "E", value_parser = parse::epsilon)]
    target_epsilon: f64,
    /// Accounting method: rdp (Rényi DP: answers for every σ, δ and number
    /// of steps) or pld (privacy loss distributions: a tighter ε, slower;
    /// refuses, naming the reason, where it cannot resolve the run: δ below
    /// the mass its truncation sets aside, σ > 1e150, grids too large).
    #[arg(long, value_name = "rdp|pld", default_value = "rdp", value_parser = parse::accountant)]
    accountant: AccountantKind,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
///
/// # Errors
///
/// When no noise multiplier meets the target.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let run = a.run.resolve()?;
    if run.steps == 0 {
        return Err(error::UsageError {
            flag: "--steps",
            message: "must be at least 1".into(),
        }
        .into());
    }
    let c = calibrate_noise(
        a.accountant,
        run.sample_rate,
        run.steps,
        a.delta,
        a.target_epsilon,
    )?;
    if a.json {
        let mut out = json!({
            "noise_multiplier": c.noise_multiplier,
            "epsilon": c.epsilon,
            "target_epsilon": a.target_epsilon,
            "delta": a.delta,
            "accountant": a.accountant.name(),
            "sample_rate": run.sample_rate,
            "steps": run.steps,
        });
        if let Some((n, b, e)) = run.epochs_form {
            out["dataset_size"] = json!(n);
            out["batch_size"] = json!(b);
            out["epochs"] = json!(e);
        }
        println!("{out}");
    } else {
        println!(
            "σ = {:.6} gives ε = {:.4} ≤ {} at δ = {} ({} accountant, {} steps at q = {})",
            c.noise_multiplier,
            c.epsilon,
            number(a.target_epsilon),
            number(a.delta),
            a.accountant.name().to_uppercase(),
            run.steps,
            number(run.sample_rate)
        );
    }
    Ok(())
}
