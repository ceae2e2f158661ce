//! `dpsgd compare`: train the same model with each defence on the same
//! split, attack each with the audit's attacks, and write the trade-off
//! (test accuracy against measured leakage) as CSV, Markdown, JSON and SVG.

use crate::args::UsageError;
use crate::commands::audit::{audit_config, run_audit};
use crate::commands::train::{TrainOptions, config, load};
use crate::output::clobbering;
use crate::output::files::{check_output_path, write_atomically};
use anyhow::{Context, Result};
use dpsgd::train::audit::{Attack, AuditReport, CanaryKind};
use dpsgd::train::{
    Defences, EarlyStopping, MistSettings, Privacy, RelaxLossSettings, TrainConfig,
};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One defence of the comparison, as spelled on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenceSpec {
    /// The spelling, e.g. `relaxloss:alpha=1` or `relaxloss+dp:eps=8`.
    pub name: String,
    /// The empirical defences it turns on.
    pub defences: Defences,
    /// DP-SGD at this target ε, if part of it.
    pub epsilon: Option<f64>,
}

/// `key=value` pairs after a defence's colon.
fn params(name: &str, text: &str) -> Result<Vec<(String, f64)>, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("`{name}`: `{p}` is not key=value"))?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{name}`: `{v}` is not a number"))?;
            if !v.is_finite() {
                return Err(format!("`{name}`: `{v}` is not finite"));
            }
            Ok((k.trim().to_owned(), v))
        })
        .collect()
}

fn get(
    name: &str,
    pairs: &[(String, f64)],
    key: &str,
    default: f64,
    allowed: &[&str],
) -> Result<f64, String> {
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "`{name}` has no parameter `{k}` (expected {})",
            allowed.join(", ")
        ));
    }
    Ok(pairs
        .iter()
        .find(|(k, _)| k == key)
        .map_or(default, |(_, v)| *v))
}

/// Parses one defence: `none`, `label-smoothing[:e=0.1]`,
/// `confidence-penalty[:beta=0.5]`, `relaxloss[:alpha=0.5,upper=0.3]`,
/// `mist[:m=4,t1=1,t2=1,lambda=1]`,
/// `early-stopping[:patience=5,validation=0.1]`, `weight-decay[:l=0.001]`,
/// `dropout[:p=0.3]`, `dp:eps=E`, or several joined with `+`
/// (`relaxloss+dp:eps=8`).
///
/// # Errors
///
/// An unknown defence or parameter, or a value out of its domain.
pub fn defence(s: &str) -> Result<DefenceSpec, String> {
    let mut spec = DefenceSpec {
        name: s.trim().to_owned(),
        defences: Defences::default(),
        epsilon: None,
    };
    for part in s.trim().split('+') {
        let (kind, rest) = part.split_once(':').unwrap_or((part, ""));
        let p = params(part, rest)?;
        let d = &mut spec.defences;
        match kind.trim() {
            "none" if p.is_empty() => {}
            "label-smoothing" => {
                let e = get(part, &p, "e", 0.1, &["e"])?;
                if !(0.0..1.0).contains(&e) {
                    return Err(format!("`{part}`: e must be in [0, 1)"));
                }
                d.label_smoothing = Some(e as f32);
            }
            "confidence-penalty" => {
                let b = get(part, &p, "beta", 0.5, &["beta"])?;
                if b < 0.0 {
                    return Err(format!("`{part}`: beta must be ≥ 0"));
                }
                d.confidence_penalty = Some(b as f32);
            }
            "relaxloss" => {
                let alpha = get(part, &p, "alpha", 0.5, &["alpha", "upper"])?;
                let upper = get(part, &p, "upper", 0.3, &["alpha", "upper"])?;
                if alpha <= 0.0 || !(upper > 0.0 && upper <= 1.0) {
                    return Err(format!("`{part}`: needs alpha > 0 and upper in (0, 1]"));
                }
                d.relaxloss = Some(RelaxLossSettings {
                    alpha: alpha as f32,
                    upper: upper as f32,
                });
            }
            "early-stopping" => {
                let allowed = ["patience", "validation"];
                let patience = get(part, &p, "patience", 5.0, &allowed)?;
                let validation = get(part, &p, "validation", 0.1, &allowed)?;
                if patience < 1.0
                    || patience.fract() != 0.0
                    || !(validation > 0.0 && validation < 1.0)
                {
                    return Err(format!(
                        "`{part}`: needs a whole patience ≥ 1 and validation in (0, 1)"
                    ));
                }
                d.early_stopping = Some(EarlyStopping {
                    validation_fraction: validation,
                    patience: patience as usize,
                });
            }
            "weight-decay" => {
                let l = get(part, &p, "l", 1e-3, &["l"])?;
                if l < 0.0 {
                    return Err(format!("`{part}`: l must be ≥ 0"));
                }
                d.weight_decay = Some(l);
            }
            "dropout" => {
                let q = get(part, &p, "p", 0.3, &["p"])?;
                if !(0.0..1.0).contains(&q) {
                    return Err(format!("`{part}`: p must be in [0, 1)"));
                }
                d.dropout = Some(q);
            }
            "dp" => {
                let eps = get(part, &p, "eps", f64::NAN, &["eps"])?;
                if eps.is_nan() || eps <= 0.0 {
                    return Err(format!("`{part}`: needs eps > 0, as dp:eps=1"));
                }
                spec.epsilon = Some(eps);
            }
            "mist" => {
                let allowed = ["m", "t1", "t2", "lambda"];
                let defaults = MistSettings::default();
                let m = get(part, &p, "m", defaults.submodels as f64, &allowed)?;
                let t1 = get(part, &p, "t1", defaults.local_epochs as f64, &allowed)?;
                let t2 = get(part, &p, "t2", defaults.cross_epochs as f64, &allowed)?;
                let lambda = get(part, &p, "lambda", f64::from(defaults.weight), &allowed)?;
                let whole = |v: f64, min: f64| v >= min && v.fract() == 0.0 && v < 1e6;
                if !(whole(m, 2.0) && whole(t1, 1.0) && whole(t2, 1.0) && lambda > 0.0) {
                    return Err(format!(
                        "`{part}`: needs whole m ≥ 2, t1 ≥ 1, t2 ≥ 1 and lambda > 0"
                    ));
                }
                d.mist = Some(MistSettings {
                    submodels: m as usize,
                    local_epochs: t1 as usize,
                    cross_epochs: t2 as usize,
                    weight: lambda as f32,
                });
            }
            other => {
                return Err(format!(
                    "`{other}` is not a defence (expected none, label-smoothing, confidence-penalty, relaxloss, mist, early-stopping, weight-decay, dropout, dp:eps=E, joined with +)"
                ));
            }
        }
    }
    Ok(spec)
}

/// Arguments of `dpsgd compare`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each defence is trained on the same split (--test-fraction defaults to \
0.5: members and non-members in equal numbers) and attacked with --attacks; compare.json \
holds [{defence, test_accuracy, epsilon, attacks: [{name, auc, tpr_at_fpr_0_001}]}]."
)]
pub struct Args {
    /// Defences, comma-separated: none, label-smoothing[:e=0.1],
    /// confidence-penalty[:beta=0.5], relaxloss[:alpha=0.5,upper=0.3],
    /// mist[:m=4,t1=1,t2=1,lambda=1] (each epoch a round),
    /// early-stopping[:patience=5,validation=0.1], weight-decay[:l=0.001],
    /// dropout[:p=0.3], dp:eps=E; join several with + (relaxloss+dp:eps=8).
    #[arg(
        long,
        default_value = "none,label-smoothing,relaxloss,mist,early-stopping,dp:eps=1,dp:eps=8"
    )]
    pub defences: String,
    /// Attacks run on every model (as `dpsgd audit --attacks`).
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.trim().parse::<Attack>(), default_value = "loss,lira")]
    pub attacks: Vec<Attack>,
    /// Shadow models per defence for LiRA and the shadow attack.
    #[arg(long, allow_hyphen_values = true, value_name = "K", default_value_t = 16, value_parser = crate::args::positive_count)]
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

/// `--defences` takes commas inside a defence's parameters, so the list is
/// split on commas that start a new defence: `a,b:x=1,y=2,c` → `a`,
/// `b:x=1,y=2`, `c`.
pub fn split_defences(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split(',') {
        let is_param = piece.contains('=') && !piece.contains(':');
        match out.last_mut() {
            Some(last) if is_param && last.contains(':') => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_owned()),
        }
    }
    out
}

/// One trained and attacked defence.
struct Row {
    spec: DefenceSpec,
    audit: AuditReport,
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x}"))
}

fn csv(rows: &[Row], attacks: &[String]) -> String {
    let mut out = String::from("defence,test_accuracy,train_accuracy,epsilon");
    for a in attacks {
        let _ = write!(out, ",{a}_auc,{a}_tpr_at_fpr_0_01,{a}_tpr_at_fpr_0_001");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "\"{}\",{},{},{}",
            r.spec.name,
            r.audit.test_accuracy,
            r.audit.train_accuracy,
            opt(r.audit.epsilon)
        );
        for name in attacks {
            let a = r.audit.attacks.iter().find(|x| &x.name == name);
            let _ = write!(
                out,
                ",{},{},{}",
                opt(a.map(|x| x.auc)),
                opt(a.map(|x| x.tpr_at_fpr_0_01)),
                opt(a.map(|x| x.tpr_at_fpr_0_001))
            );
        }
        out.push('\n');
    }
    out
}

fn markdown(rows: &[Row], attacks: &[String], dataset: &str) -> String {
    let mut out = format!(
        "# Defences compared on {dataset}\n\nTest accuracy and measured leakage (AUC; TPR at 0.1% FPR, chance 0.1%) of the same model trained with each defence on the same split. Only DP-SGD comes with a guarantee (ε).\n\n| defence | test accuracy | train accuracy | ε |"
    );
    for a in attacks {
        let _ = write!(out, " {a} AUC | {a} TPR@0.1%FPR |");
    }
    out.push_str("\n|---|---|---|---|");
    for _ in attacks {
        out.push_str("---|---|");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "| {} | {:.2}% | {:.2}% | {} |",
            r.spec.name,
            100.0 * r.audit.test_accuracy,
            100.0 * r.audit.train_accuracy,
            r.audit
                .epsilon
                .map_or_else(|| "none".to_owned(), |e| format!("{e:.2}"))
        );
        for name in attacks {
            match r.audit.attacks.iter().find(|x| &x.name == name) {
                Some(a) => {
                    let _ = write!(out, " {:.3} | {:.2}% |", a.auc, 100.0 * a.tpr_at_fpr_0_001);
                }
                None => out.push_str(" – | – |"),
            }
        }
        out.push('\n');
    }
    out
}

fn json(rows: &[Row]) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "defence": r.spec.name,
                "test_accuracy": r.audit.test_accuracy,
                "train_accuracy": r.audit.train_accuracy,
                "epsilon": r.audit.epsilon,
                "defences": r.spec.defences,
                "attacks": r.audit.attacks.iter().map(|a| serde_json::json!({
                    "name": a.name,
                    "auc": a.auc,
                    "tpr_at_fpr_0_01": a.tpr_at_fpr_0_01,
                    "tpr_at_fpr_0_001": a.tpr_at_fpr_0_001,
                    "advantage": a.advantage,
                })).collect::<Vec<_>>(),
                "audit": r.audit,
            })
        })
        .collect();
    serde_json::Value::Array(runs)
}

/// Two panels: test accuracy against `attack`'s AUC (LiRA online when it
/// ran, else the first attack), and against its TPR at 0.1% FPR; one
/// labelled point per defence.
fn plot(rows: &[Row], attack: &str, path: &Path, dataset: &str) -> Result<()> {
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, (1200, 520)).into_drawing_area();
    let (left, right) = root.split_horizontally(600);
    let points =
        |f: &dyn Fn(&dpsgd::train::audit::AttackResult) -> f64| -> Vec<(f64, f64, String)> {
            rows.iter()
                .filter_map(|r| {
                    r.audit
                        .attacks
                        .iter()
                        .find(|a| a.name == attack)
                        .map(|a| (f(a), r.audit.test_accuracy, r.spec.name.clone()))
                })
                .collect()
        };
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        for (area, pts, x_desc) in [
            (
                &left,
                points(&|a| a.auc),
                format!("{attack} attack AUC (0.5 = chance)"),
            ),
            (
                &right,
                points(&|a| a.tpr_at_fpr_0_001),
                format!("{attack} TPR at 0.1% FPR"),
            ),
        ] {
            let (x_lo, x_hi) = pts
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(p.0), hi.max(p.0))
                });
            let (y_lo, y_hi) = pts
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(p.1), hi.max(p.1))
                });
            let pad = |lo: f64, hi: f64| {
                let span = (hi - lo).max(0.01);
                (lo - 0.15 * span, hi + 0.25 * span)
            };
            let (x_lo, x_hi) = if pts.is_empty() {
                (0.0, 1.0)
            } else {
                pad(x_lo, x_hi)
            };
            // Rates and AUCs are never negative.
            let x_lo = x_lo.max(0.0);
            let (y_lo, y_hi) = if pts.is_empty() {
                (0.0, 1.0)
            } else {
                pad(y_lo, y_hi)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{dataset}: accuracy vs leakage"),
                    ("sans-serif", 16),
                )
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
            chart
                .configure_mesh()
                .x_desc(x_desc.as_str())
                .y_desc("test accuracy")
                .y_label_formatter(&|y| format!("{:.1}%", 100.0 * y))
                .draw()?;
            chart.draw_series(pts.iter().map(|(x, y, name)| {
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 5, BLUE.filled())
                    + Text::new(name.clone(), (7, -12), ("sans-serif", 12))
            }))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    drop((left, right, root));
    write_atomically(path, &svg)
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
    clobbering::check_no_clobbering(&clobbering::inputs_of(o), &written)?;
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
    let specs: Vec<DefenceSpec> = split_defences(&a.defences)
        .iter()
        .map(|d| defence(d))
        .collect::<Result<_, _>>()
        .map_err(|message| UsageError {
            flag: "--defences",
            message,
        })?;
    let mut o = a.options.clone();
    o.test_fraction.get_or_insert(0.5);
    check_outputs(a, &o)?;
    let seed = o.seed.unwrap_or(0);
    let (train, test, _) = load(&o, seed)?;
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
    for spec in specs {
        let privacy = spec
            .epsilon
            .map_or(Privacy::NonPrivate, Privacy::TargetEpsilon);
        let cfg = TrainConfig {
            seed: Some(seed),
            defences: spec.defences.clone(),
            ..config(&o, privacy, &train)
        };
        if !a.quiet {
            eprintln!("dpsgd compare: {}", spec.name);
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
        // LiRA's figures when it ran (the sharper attack at low FPR).
        let shown = names
            .iter()
            .find(|n| n.as_str() == "lira-online")
            .unwrap_or(&names[0]);
        plot(&rows, shown, &a.out.join("compare.svg"), &dataset)?;
    }
    if !a.quiet {
        eprintln!(
            "wrote compare.csv, compare.md, compare.json and compare.svg in {}",
            a.out.display()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_split_defences_on_commas_that_start_a_defence() {
        assert_eq!(
            split_defences("none,relaxloss:alpha=1,upper=0.2,dp:eps=8,early-stopping"),
            [
                "none",
                "relaxloss:alpha=1,upper=0.2",
                "dp:eps=8",
                "early-stopping"
            ]
        );
        assert_eq!(split_defences("relaxloss+dp:eps=1"), ["relaxloss+dp:eps=1"]);
    }

    #[test]
    fn should_parse_each_defence_with_its_defaults() {
        let none = defence("none").unwrap();
        assert!(none.defences.is_none() && none.epsilon.is_none());
        assert_eq!(
            defence("label-smoothing").unwrap().defences.label_smoothing,
            Some(0.1)
        );
        assert_eq!(
            defence("relaxloss:alpha=1,upper=0.2")
                .unwrap()
                .defences
                .relaxloss,
            Some(RelaxLossSettings {
                alpha: 1.0,
                upper: 0.2
            })
        );
        let es = defence("early-stopping:patience=3")
            .unwrap()
            .defences
            .early_stopping
            .unwrap();
        assert_eq!((es.patience, es.validation_fraction), (3, 0.1));
        let both = defence("relaxloss+dp:eps=8").unwrap();
        assert_eq!(both.epsilon, Some(8.0));
        assert!(both.defences.relaxloss.is_some());
        assert_eq!(
            defence("mist").unwrap().defences.mist,
            Some(MistSettings::default())
        );
        assert_eq!(
            defence("mist:m=3,t2=2,lambda=0.5").unwrap().defences.mist,
            Some(MistSettings {
                submodels: 3,
                local_epochs: 1,
                cross_epochs: 2,
                weight: 0.5
            })
        );
    }

    #[test]
    fn should_refuse_unknown_defences_and_bad_parameters() {
        for bad in [
            "purple",
            "dp",
            "dp:eps=0",
            "relaxloss:beta=1",
            "relaxloss:upper=2",
            "label-smoothing:e=1",
            "early-stopping:patience=0",
            "early-stopping:patience=1.5",
            "dropout:p=1",
            "weight-decay:l=-1",
            "dp:eps=x",
            "none:e=1",
            "mist:m=1",
            "mist:t1=0.5",
            "mist:lambda=0",
            "mist:k=2",
        ] {
            assert!(defence(bad).is_err(), "{bad}");
        }
    }
}
