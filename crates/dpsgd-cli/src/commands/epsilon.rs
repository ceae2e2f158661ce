//! `dpsgd epsilon`: ε of a run.

use crate::flags::parse;
use crate::flags::run::RunShape;
use crate::output::format::number;
use dpsgd_accountant::{Accountant, AccountantKind, AnyAccountant};
use serde_json::json;

/// Arguments of `dpsgd epsilon`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: RunShape,
    /// Noise multiplier σ (noise std / clipping norm).
    #[arg(long, allow_hyphen_values = true, value_name = "S", value_parser = parse::noise_multiplier)]
    noise_multiplier: f64,
    /// Target δ.
    #[arg(long, allow_hyphen_values = true, value_name = "D", value_parser = parse::delta)]
    delta: f64,
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
/// When the accountant cannot bound ε for this run.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let run = a.run.resolve()?;
    let (epsilon, order) = match a.accountant {
        AccountantKind::Rdp => {
            let mut acc = dpsgd_accountant::RdpAccountant::new();
            acc.record(a.noise_multiplier, run.sample_rate, run.steps)?;
            let (e, o) = acc.epsilon_with_order(a.delta)?;
            (e, Some(o))
        }
        AccountantKind::Pld => {
            let mut acc = AnyAccountant::new(AccountantKind::Pld);
            acc.record(a.noise_multiplier, run.sample_rate, run.steps)?;
            (acc.epsilon(a.delta)?, None)
        }
    };
    if a.json {
        let mut out = json!({
            "epsilon": epsilon,
            "delta": a.delta,
            "accountant": a.accountant.name(),
            "sample_rate": run.sample_rate,
            "noise_multiplier": a.noise_multiplier,
            "steps": run.steps,
        });
        if let Some(order) = order {
            out["order"] = json!(order);
        }
        if let Some((n, b, e)) = run.epochs_form {
            out["dataset_size"] = json!(n);
            out["batch_size"] = json!(b);
            out["epochs"] = json!(e);
        }
        println!("{out}");
    } else {
        let detail = order.map_or(String::new(), |o| format!(", optimal Rényi order {o}"));
        println!(
            "ε = {epsilon:.4} at δ = {} ({} accountant{detail}) for {} steps at q = {}, σ = {}",
            number(a.delta),
            a.accountant.name().to_uppercase(),
            run.steps,
            number(run.sample_rate),
            number(a.noise_multiplier)
        );
    }
    Ok(())
}
