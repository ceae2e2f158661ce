//! `dpsgd compare`: train the same model with each defence on the same
//! split, attack each with the audit's attacks, and write the trade-off
//! (test accuracy against measured leakage) as CSV, Markdown, JSON and SVG.

use crate::error::UsageError;
use crate::flags::defence::{DefenceSpec, defence, expand, split_defences};
use crate::flags::train::TrainOptions;
use crate::output::clobbering;
use crate::output::compare::{Row, csv, json, markdown, plot};
use crate::output::files::{check_output_path, write_atomically};
use crate::setup::audit_config;
use crate::setup::{config, load_for_audit, with_defences};
use crate::training::run_audit;
use anyhow::{Context, Result};
use dpsgd::train::audit::{Attack, CanaryKind};
use dpsgd::train::{Privacy, TrainConfig};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `dpsgd compare`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each defence is trained on the same split (--test-fraction defaults to \
0.5: members and non-members in equal numbers) and attacked with --attacks; compare.json \
holds [{defence, test_accuracy, epsilon, attacks: [{name, auc, tpr_at_fpr_0_001}]}]."
)]
pub struct Args {
    /// Defences, comma-separated: none, label-smoothing[:e=0.1],
    /// confidence-penalty[:beta=0.5], relaxloss[:alpha=0.2lnK,upper=0.3]
    /// (alpha absolute, or a share of ln K, the uniform prediction's loss),
    /// mist[:m=4,t1=1,t2=1,lambda=1] (each epoch a round),
    /// early-stopping[:patience=5,validation=0.1], weight-decay[:l=0.001],
    /// dropout[:p=0.3], dp:eps=E; join several with + (relaxloss+dp:eps=8).
    /// A value may be swept: relaxloss:alpha=0.1lnK|0.5lnK trains one point
    /// per value, several sweeps every combination (quote the list for the
    /// shell); mist:weight= is MIST's lambda. Measured on digits, Adult-4k,
    /// breast cancer and location-like (docs/defences.md): label-smoothing
    /// and confidence-penalty RAISE the strongest attack at their defaults
    /// (on all but breast cancer); with the Adam-trained MLP, relaxloss cost
    /// 5-14 points and raised the loss attack on location-like (train it with
    /// --optimizer sgd, as its authors did), and weight-decay cost 8 points
    /// there; relaxloss with alpha near or above ln K, and mist with too
    /// large a lambda (>= 1 on breast cancer's 285 records), collapse
    /// training.
    #[arg(
        long,
        default_value = "none,label-smoothing,relaxloss,mist,early-stopping,dp:eps=1,dp:eps=8"
    )]
    pub defences: String,
    /// default: a defence given without parameters is swept over its
    /// default grid (label-smoothing e=0.05|0.1|0.2|0.4, confidence-penalty
    /// beta=0.1|0.5|1|2, relaxloss
    /// alpha=0.05lnK|0.1lnK|0.2lnK|0.35lnK|0.5lnK|0.7lnK, mist
    /// lambda=0.5|1|2|3, early-stopping patience=2|5|10, weight-decay
    /// l=0.0001|0.001|0.01, dropout p=0.1|0.3|0.5, dp eps=0.5|1|2|4|8);
    /// none: each at its default setting.
    #[arg(long, value_parser = ["none", "default"], default_value = "none")]
    pub grid: String,
    /// Attacks run on every model (as `dpsgd audit --attacks`).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.trim().parse::<Attack>(), default_value = "loss,lira,rmia")]
    pub attacks: Vec<Attack>,
    /// Shadow models per defence for LiRA and the shadow attack.
    #[arg(long, allow_hyphen_values = true, value_name = "K", default_value_t = 16, value_parser = crate::flags::parse::positive_count)]
    pub shadow_models: usize,
    /// Output folder: compare.csv, compare.md, compare.json, compare.svg.
    #[arg(long, default_value = "compare-out")]
    pub out: PathBuf,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the privacy report (the defences compared) as one
    /// self-contained HTML page here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub options: TrainOptions,
}

/// The files a comparison writes in its `--out` folder.
const OUT_FILES: [&str; 4] = ["compare.csv", "compare.md", "compare.json", "compare.svg"];

/// Checks every output before any work (issue 26): `--out` is a folder,
/// `--html` a file in an existing folder, and neither replaces an input
/// of `o` or the other.
///
/// # Errors
///
/// [`UsageError`] naming the flag (and the other flag of a clash).
fn check_outputs(a: &Args, o: &TrainOptions) -> Result<(), UsageError> {
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

/// The points of `--defences` on data with `classes` classes: each item's
/// sweeps expanded (with the default grids under `grid`), parsed, the first
/// of equal spellings kept.
///
/// # Errors
///
/// The message of a bad item (an unknown defence or parameter, a value out
/// of its domain, an empty swept value, too many combinations).
fn points(defences: &str, grid: bool, classes: usize) -> Result<Vec<DefenceSpec>, String> {
    let mut specs: Vec<DefenceSpec> = Vec::new();
    for item in split_defences(defences) {
        for name in expand(&item, grid)? {
            let spec = defence(&name, classes)?;
            if specs.iter().all(|s| s.name != spec.name) {
                specs.push(spec);
            }
        }
    }
    Ok(specs)
}

/// `" (2m 10s so far, about 4m 20s left)"` after `done` of `total`
/// points, from the mean time per point so far; empty before the first.
fn eta(started: Instant, done: usize, total: usize) -> String {
    if done == 0 {
        return String::new();
    }
    let spent = started.elapsed().as_secs_f64();
    let left = spent / done as f64 * (total - done) as f64;
    let mmss = |s: f64| {
        let s = s.round() as u64;
        if s >= 60 {
            format!("{}m {:02}s", s / 60, s % 60)
        } else {
            format!("{s}s")
        }
    };
    format!(" ({} so far, about {} left)", mmss(spent), mmss(left))
}

/// Runs the command.
///
/// # Errors
///
/// Bad data or settings, a failed run, or unwritable output.
pub fn run(a: &Args) -> Result<std::process::ExitCode> {
    let bad_defences = |message| UsageError {
        flag: "--defences",
        message,
    };
    // Checked before any work; RelaxLoss's α is set once K is known.
    points(&a.defences, a.grid == "default", 2).map_err(bad_defences)?;
    let mut o = a.options.clone();
    o.test_fraction.get_or_insert(0.5);
    check_outputs(a, &o)?;
    let seed = o.seed.unwrap_or(0);
    // Its audits score users whenever the data has users.
    let (train, test, _) = load_for_audit(&o, seed)?;
    let specs =
        points(&a.defences, a.grid == "default", train.n_classes()).map_err(bad_defences)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let audit = audit_config(
        &a.attacks,
        a.shadow_models,
        0,
        CanaryKind::Mislabeled,
        None,
        None,
        seed,
    )?;
    let dataset = o.dataset.to_string();
    let mut rows = Vec::new();
    let (total, started) = (specs.len(), Instant::now());
    for (done, spec) in specs.into_iter().enumerate() {
        let privacy = spec
            .epsilon
            .map_or(Privacy::NonPrivate, Privacy::TargetEpsilon);
        let cfg = with_defences(
            TrainConfig {
                seed: Some(seed),
                ..config(&o, privacy, &train)
            },
            spec.defences.clone(),
            &o,
            &train,
        );
        if !a.quiet {
            eprintln!(
                "dpsgd compare: [{}/{total}] {}{}",
                done + 1,
                spec.name,
                eta(started, done, total)
            );
        }
        let outcome = run_audit(&cfg, &o, &audit, &train, &test, a.quiet)
            .with_context(|| format!("defence `{}`", spec.name))?;
        let r = &outcome.report;
        let leak: Vec<String> = r
            .attacks
            .iter()
            .map(|x| {
                format!(
                    "{} AUC {:.3}, TPR@0.1%FPR {:.2}%",
                    x.name,
                    x.auc,
                    100.0 * x.tpr_at_fpr_0_001
                )
            })
            .collect();
        println!(
            "{:<28} test accuracy {:.2}% | {} | {}",
            spec.name,
            100.0 * r.test_accuracy,
            r.epsilon
                .map_or_else(|| "no guarantee".to_owned(), |e| format!("ε = {e:.2}")),
            leak.join(" | ")
        );
        rows.push(Row {
            spec: spec.clone(),
            audit: outcome.report,
        });
        let names: Vec<String> = rows[0]
            .audit
            .attacks
            .iter()
            .map(|x| x.name.clone())
            .collect();
        write_atomically(&a.out.join("compare.csv"), &csv(&rows, &names))?;
        write_atomically(
            &a.out.join("compare.md"),
            &markdown(&rows, &names, &dataset),
        )?;
        let doc = json(&rows);
        write_atomically(
            &a.out.join("compare.json"),
            &serde_json::to_string_pretty(&doc)?,
        )?;
        if let Some(path) = &a.html {
            crate::html::write_html_of(
                &doc,
                &a.out.join("compare.json").display().to_string(),
                None,
                path,
            )?;
        }
        plot(&rows, &a.out.join("compare.svg"), &dataset)?;
    }
    if !a.quiet {
        eprintln!(
            "wrote compare.csv, compare.md, compare.json and compare.svg in {}",
            a.out.display()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
