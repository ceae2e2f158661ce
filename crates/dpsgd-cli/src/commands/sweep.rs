//! `dpsgd sweep`: train at several privacy budgets (and seeds) and write
//! the accuracy / privacy / leakage trade-off as CSV, JSON and an SVG plot.

use crate::flags::train::TrainOptions;
use crate::output::clobbering;
use crate::output::files::{check_output_path, write_atomically};
use crate::output::sweep::{Row, csv, plot};
use crate::setup::{audit_config, check_canaries, users_unscored_at_record_level};
use crate::setup::{config, load};
use crate::training::run_audit;
use crate::training::summary;
use anyhow::{Context, Result};
use dpsgd::train::Privacy;
use dpsgd::train::audit::{Attack, AuditConfig, CanaryAudit, CanaryKind, bonferroni};
use serde_json::json;
use std::path::PathBuf;

/// `0.5`, `inf` (non-private), ...
fn budget(s: &str) -> Result<f64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("inf") || s == "∞" {
        return Ok(f64::INFINITY);
    }
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number or inf"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}`: ε must be > 0 (or inf)"))
    }
}

/// The chance, over the whole sweep, that a correct implementation is
/// reported refuted (exit status 3) by any of its canary audits.
pub const FAMILY_ALPHA: f64 = 0.05;

/// Arguments of `dpsgd sweep`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every run finished; 1 when a run failed; 2 for unusable \
arguments; 3 when a canary audit's ε lower bound exceeds its run's claimed ε (the privacy \
claim is refuted: a bug). With --canaries, the sweep tests K claims (K = finite budgets × \
repeats) and tests each at α = 0.05/K (Bonferroni), so that a correct implementation is \
reported refuted with probability at most 5% over the whole sweep; sweep.json records \
family_alpha, per_audit_alpha and audits_tested, and each run's canary_audit.one_run.alpha."
)]
pub struct Args {
    /// Budgets to train at; `inf` trains without DP.
    #[arg(long, value_delimiter = ',', value_parser = budget, default_value = "0.5,1,2,4,8,inf")]
    epsilons: Vec<f64>,
    /// Seeds per budget (seed, seed+1, ...); at least 1.
    #[arg(long, allow_hyphen_values = true, default_value_t = 1, value_parser = crate::flags::parse::positive_steps)]
    repeats: u64,
    /// Output folder for sweep.csv, sweep.json and sweep.svg.
    #[arg(long, default_value = "sweep-out")]
    out: PathBuf,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Also write the privacy report (accuracy and leakage against ε) as
    /// one self-contained HTML page here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Attacks run on every model (as `dpsgd audit --attacks`): the loss
    /// attack costs nothing, LiRA trains --shadow-models shadows per run
    /// (RMIA uses the same shadows).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.trim().parse::<Attack>(), default_value = "loss,lira,rmia")]
    attacks: Vec<Attack>,
    /// Shadow models per run for LiRA and the shadow attack.
    #[arg(long, allow_hyphen_values = true, value_name = "K", default_value_t = 8, value_parser = crate::flags::parse::positive_count)]
    shadow_models: usize,
    /// Canaries per run for the one-run ε lower bound (0: none; the
    /// column stays empty). Each bound is computed at α = 0.05/K for the
    /// sweep's K DP runs (Bonferroni). Refused with --early-stopping.
    #[arg(long, value_name = "M", default_value_t = 0)]
    canaries: usize,
    #[command(flatten)]
    options: TrainOptions,
}

/// The sweep's runs and the significance their audits are tested at.
struct Plan {
    /// Each run's budget, seed and audit settings, in order.
    runs: Vec<(f64, u64, AuditConfig)>,
    /// Claims tested: one per DP run when canaries are planted (a
    /// non-private run claims nothing).
    audits_tested: usize,
    /// The significance of each audit's bound: `FAMILY_ALPHA / K` (`None`
    /// without canaries).
    per_audit_alpha: Option<f64>,
}

/// The runs of `a` from `base_seed` on: every budget × repeat, each
/// audit's canary bound at `FAMILY_ALPHA / K`.
fn plan(a: &Args, base_seed: u64) -> Result<Plan> {
    let audits_tested = if a.canaries == 0 {
        0
    } else {
        a.epsilons.iter().filter(|t| t.is_finite()).count() * a.repeats as usize
    };
    let per_audit_alpha = (audits_tested > 0).then(|| bonferroni(FAMILY_ALPHA, audits_tested));
    let mut runs = Vec::new();
    for &target in &a.epsilons {
        for r in 0..a.repeats {
            let seed = base_seed + r;
            let audit = AuditConfig {
                canary_alpha: per_audit_alpha,
                ..audit_config(
                    &a.attacks,
                    a.shadow_models,
                    a.canaries,
                    CanaryKind::Mislabeled,
                    None,
                    None,
                    seed,
                )?
            };
            runs.push((target, seed, audit));
        }
    }
    Ok(Plan {
        runs,
        audits_tested,
        per_audit_alpha,
    })
}

/// The sweep's verdict: refuted iff some audit's one-run bound, computed
/// at the per-audit significance, exceeds its run's claimed ε (recomputed
/// from each audit's counts, so an audit whose bound was computed at
/// another level cannot decide it).
fn refuted<'a>(
    audits: impl IntoIterator<Item = &'a CanaryAudit>,
    per_audit_alpha: f64,
) -> Result<bool> {
    for audit in audits {
        if audit.refutes_at(per_audit_alpha)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes sweep.csv, sweep.json and sweep.svg for the runs so far (each
/// atomically), so that an interrupted sweep keeps every finished run.
fn write_outputs(
    a: &Args,
    plan: &Plan,
    rows: &[Row],
    preprocessing: &impl serde::Serialize,
) -> Result<()> {
    let o = &a.options;
    write_atomically(&a.out.join("sweep.csv"), &csv(rows))?;
    let runs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r.audit).unwrap_or_default();
            v["target_epsilon"] = if r.target.is_finite() {
                json!(r.target)
            } else {
                json!("inf")
            };
            v["seed"] = json!(r.seed);
            v
        })
        .collect();
    let doc = json!({
        "dataset": o.dataset.to_string(),
        "preprocessing": preprocessing,
        "family_alpha": FAMILY_ALPHA,
        "per_audit_alpha": plan.per_audit_alpha,
        "audits_tested": plan.audits_tested,
        "runs": runs,
    });
    write_atomically(
        &a.out.join("sweep.json"),
        &serde_json::to_string_pretty(&doc)?,
    )?;
    if let Some(path) = &a.html {
        crate::html::write_html_of(
            &doc,
            &a.out.join("sweep.json").display().to_string(),
            None,
            path,
        )?;
    }
    plot(rows, &a.out.join("sweep.svg"), &o.dataset.to_string())
}

/// The files a sweep writes in its `--out` folder.
const OUT_FILES: [&str; 3] = ["sweep.csv", "sweep.json", "sweep.svg"];

/// Checks every output before any work (issue 26): `--out` is a folder,
/// `--html` a file in an existing folder, and neither replaces an input
/// of `o` or the other.
///
/// # Errors
///
/// [`crate::error::UsageError`] naming the flag (and the other flag of a
/// clash).
fn check_outputs(a: &Args, o: &TrainOptions) -> Result<(), crate::error::UsageError> {
    // Clashes first: they name both flags, where a path in an `--out`
    // folder yet to be created would otherwise read as a missing folder.
    // The folder itself too: `--html` on it cannot be written either.
    let mut written = vec![("--out", a.out.clone())];
    written.extend(clobbering::in_folder("--out", &a.out, &OUT_FILES));
    written.extend(clobbering::given([("--html", a.html.as_ref())]));
    clobbering::check_no_clobbering(&o.inputs(), &written)?;
    clobbering::check_output_folder("--out", &a.out, &OUT_FILES)?;
    match &a.html {
        Some(path) => check_output_path("--html", path),
        None => Ok(()),
    }
}

/// Runs the command.
///
/// # Errors
///
/// Bad data or settings, a failed run, or unwritable output.
pub fn run(a: &Args) -> Result<std::process::ExitCode> {
    // Shadows train on random halves of train ∪ test: the same size as the
    // target's training set only with a test fraction of 0.5 (as `audit`).
    let mut options = a.options.clone();
    if a.attacks
        .iter()
        .any(|x| matches!(x.family(), Attack::Lira | Attack::Shadow))
    {
        options.test_fraction.get_or_insert(0.5);
    }
    let o = &options;
    let base_seed = o.seed.unwrap_or(1);
    if !a.attacks.contains(&Attack::Loss) {
        anyhow::bail!(crate::error::UsageError {
            flag: "--attacks",
            message: "the sweep's leakage columns need the loss attack: keep `loss` in the list"
                .into(),
        });
    }
    check_canaries(a.canaries, CanaryKind::Mislabeled, o)?;
    check_outputs(a, o)?;
    let plan = plan(a, base_seed)?;
    let (train, test, preprocessing) = load(o, base_seed)?;
    let (train, test) = users_unscored_at_record_level(o, train, test, "sweep", a.quiet);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut rows = Vec::new();
    for (target, seed, audit_cfg) in &plan.runs {
        let (target, seed) = (*target, *seed);
        let privacy = if target.is_finite() {
            Privacy::TargetEpsilon(target)
        } else {
            Privacy::NonPrivate
        };
        let mut cfg = config(o, privacy, &train);
        cfg.seed = Some(seed);
        let outcome = run_audit(&cfg, o, audit_cfg, &train, &test, a.quiet)?;
        let audit = outcome.report;
        let label = if target.is_finite() {
            format!("ε ≤ {target}")
        } else {
            "ε = ∞".into()
        };
        let lira = audit
            .attacks
            .iter()
            .find(|x| x.name == dpsgd::audit::Attack::LIRA_ONLINE)
            .map_or_else(String::new, |l| {
                format!(
                    " | LiRA AUC {:.3}, TPR@0.1%FPR {:.2}%",
                    l.auc,
                    100.0 * l.tpr_at_fpr_0_001
                )
            });
        let bound = audit
            .epsilon_lower_bound
            .map_or_else(String::new, |b| format!(" | audited ε ≥ {b:.3}"));
        println!(
            "[{label}, seed {seed}] {}{lira}{bound}",
            summary(&audit.target)
        );
        if let (Some(c), Some(alpha)) = (&audit.canary_audit, plan.per_audit_alpha)
            && refuted([c], alpha)?
        {
            eprintln!(
                "ERROR: dpsgd: [{label}, seed {seed}] the measured ε lower bound (at α = {FAMILY_ALPHA}/{} = {alpha:.2e}) exceeds the claimed ε: the privacy claim is false (a bug)",
                plan.audits_tested
            );
        }
        rows.push(Row {
            target,
            seed,
            audit,
        });
        write_outputs(a, &plan, &rows, &preprocessing)?;
    }
    let verdict = match plan.per_audit_alpha {
        Some(alpha) => refuted(
            rows.iter().filter_map(|r| r.audit.canary_audit.as_ref()),
            alpha,
        )?,
        None => false,
    };
    println!(
        "wrote {}/sweep.csv, sweep.json and sweep.svg",
        a.out.display()
    );
    Ok(if verdict {
        std::process::ExitCode::from(crate::error::EXIT_CLAIM_REFUTED)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use dpsgd::audit::lower_bound::{OneRunAudit, one_run_epsilon};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("sweep").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn should_test_each_of_k_audits_at_alpha_over_k() {
        // 2 finite budgets × 3 repeats = 6 claims (the non-private runs
        // claim nothing): each audit's bound at 0.05/6.
        let a = args(&[
            "--epsilons",
            "1,4,inf",
            "--repeats",
            "3",
            "--canaries",
            "50",
        ]);
        let six = plan(&a, 7).unwrap();
        assert_eq!(six.runs.len(), 9);
        assert_eq!(six.audits_tested, 6);
        assert_eq!(six.per_audit_alpha, Some(0.05 / 6.0));
        for (target, seed, audit) in &six.runs {
            assert_eq!(audit.canary_significance(), 0.05 / 6.0, "ε {target}");
            assert_eq!(audit.alpha, 0.05, "the AUC intervals stay at 95%");
            assert_eq!(audit.seed, *seed);
        }
        let seeds: Vec<u64> = six.runs.iter().map(|r| r.1).collect();
        assert_eq!(seeds, [7, 8, 9, 7, 8, 9, 7, 8, 9]);
        // One audit keeps the full 5%; without canaries nothing is tested.
        let one = plan(&args(&["--epsilons", "2", "--canaries", "50"]), 1).unwrap();
        assert_eq!((one.audits_tested, one.per_audit_alpha), (1, Some(0.05)));
        let none = plan(&args(&["--epsilons", "1,2"]), 1).unwrap();
        assert_eq!((none.audits_tested, none.per_audit_alpha), (0, None));
        assert!(none.runs.iter().all(|r| r.2.canary_alpha.is_none()));
    }

    /// An audit of `correct` right guesses out of 100 on 1000 canaries
    /// (δ = 0), its bound computed at `alpha`, against `claimed`.
    fn audit(correct: u64, alpha: f64, claimed: Option<f64>) -> CanaryAudit {
        let epsilon = one_run_epsilon(1000, 100, correct, 0.0, alpha).unwrap();
        CanaryAudit {
            white_box: None,
            kind: CanaryKind::Mislabeled,
            one_run: OneRunAudit {
                canaries: 1000,
                included: 500,
                guesses: 100,
                correct,
                delta: 0.0,
                alpha,
                epsilon,
            },
            clopper_pearson_epsilon: 0.0,
            estimators: Default::default(),
            claimed_epsilon: claimed,
            exceeds_claim: claimed.is_some_and(|c| epsilon > c + 1e-6),
            records_per_canary: 1,
            unit: "record",
            claimed_group_epsilon: None,
            exceeds_record_level_claim: None,
        }
    }

    #[test]
    fn should_refute_iff_some_audits_bound_at_alpha_over_k_exceeds_its_claim() {
        let k = 10;
        let alpha = bonferroni(FAMILY_ALPHA, k);
        let bound = |a| one_run_epsilon(1000, 100, 100, 0.0, a).unwrap();
        let (at_5, at_k) = (bound(0.05), bound(alpha));
        assert!(at_k < at_5 - 0.1, "{at_k} vs {at_5}");
        // A claim between the two bounds: refuted at 5% (as the sweep
        // decided before), not at 5%/K — even when the stored verdict,
        // computed at 5%, says otherwise.
        let between = audit(100, 0.05, Some(0.5 * (at_5 + at_k)));
        assert!(between.exceeds_claim);
        assert!(refuted([&between], 0.05).unwrap());
        assert!(!refuted([&between], alpha).unwrap());
        // A claim below the bound at α/K: refuted, alone or among others.
        let below = audit(100, alpha, Some(at_k - 0.05));
        let calm = audit(60, alpha, Some(1.0));
        let open = audit(100, alpha, None);
        assert!(refuted([&below], alpha).unwrap());
        assert!(refuted([&calm, &open, &below, &between], alpha).unwrap());
        assert!(!refuted([&calm, &open, &between], alpha).unwrap());
        assert!(!refuted([], alpha).unwrap());
        // The bound exactly at the claim is not above it.
        let equal = audit(100, alpha, Some(at_k));
        assert!(!refuted([&equal], alpha).unwrap());
    }
}
