//! `dpsgd sweep`: train at several privacy budgets (and seeds) and write
//! the accuracy / privacy / leakage trade-off as CSV, JSON and an SVG plot.

use crate::commands::audit::{audit_config, run_audit};
use crate::commands::train::{TrainOptions, config, load, summary, write_atomically};
use anyhow::{Context, Result};
use dpsgd::train::audit::{Attack, AuditReport, CanaryKind};
use dpsgd::train::{Privacy, TrainReport};
use plotters::prelude::*;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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

/// Arguments of `dpsgd sweep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Budgets to train at; `inf` trains without DP.
    #[arg(long, value_delimiter = ',', value_parser = budget, default_value = "0.5,1,2,4,8,inf")]
    epsilons: Vec<f64>,
    /// Seeds per budget (seed, seed+1, ...); at least 1.
    #[arg(long, default_value_t = 1, value_parser = crate::args::positive_steps)]
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
    /// attack costs nothing, LiRA trains --shadow-models shadows per run.
    #[arg(long, value_delimiter = ',', value_parser = |s: &str| s.trim().parse::<Attack>(), default_value = "loss,lira")]
    attacks: Vec<Attack>,
    /// Shadow models per run for LiRA and the shadow attack.
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = crate::args::positive_count)]
    shadow_models: usize,
    /// Canaries per run for the one-run ε lower bound (0: none; the
    /// column stays empty).
    #[arg(long, value_name = "M", default_value_t = 0)]
    canaries: usize,
    #[command(flatten)]
    options: TrainOptions,
}

/// One run of the sweep.
struct Row {
    target: f64,
    seed: u64,
    audit: AuditReport,
}

impl Row {
    fn report(&self) -> &TrainReport {
        &self.audit.target
    }

    fn attack(&self, name: &str) -> Option<&dpsgd::train::audit::AttackResult> {
        self.audit.attacks.iter().find(|a| a.name == name)
    }
}

/// `lira_auc`, `tpr_at_1pct_fpr` and `lira_tpr_at_0_1pct_fpr` are LiRA
/// online's; `loss_threshold_auc` is the loss attack's (training vs test
/// split); `audit_epsilon_lower_bound` the one-run canary audit's.
const CSV_COLUMNS: &str = "target_epsilon,seed,epsilon,delta,noise_multiplier,sample_rate,steps,epochs,\
test_accuracy,train_accuracy,loss_threshold_auc,lira_auc,tpr_at_1pct_fpr,audit_epsilon_lower_bound,wall_seconds,\
lira_tpr_at_0_1pct_fpr,loss_tpr_at_0_1pct_fpr";

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x}"))
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_COLUMNS);
    out.push('\n');
    for r in rows {
        let p = r.report();
        let lira = r.attack("lira-online");
        let loss = r.attack("loss");
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            if r.target.is_finite() {
                r.target.to_string()
            } else {
                "inf".into()
            },
            r.seed,
            opt(p.privacy.epsilon),
            p.privacy.delta,
            opt(p.privacy.noise_multiplier),
            p.privacy.sample_rate,
            p.privacy.steps,
            p.epochs,
            p.test_accuracy,
            p.not_covered_by_epsilon.train_accuracy,
            opt(loss.map(|a| a.auc)),
            opt(lira.map(|a| a.auc)),
            opt(lira.map(|a| a.tpr_at_fpr_0_01)),
            opt(r.audit.epsilon_lower_bound),
            p.wall_seconds,
            opt(lira.map(|a| a.tpr_at_fpr_0_001)),
            opt(loss.map(|a| a.tpr_at_fpr_0_001)),
        );
    }
    out
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// One curve of a panel: a statistic of each run, averaged over seeds.
struct Curve<'a> {
    label: &'a str,
    color: RGBColor,
    value: &'a dyn Fn(&Row) -> Option<f64>,
}

/// Mean ± sd of `curve` at each finite budget that has values, and its mean
/// without DP.
fn curve_points(
    rows: &[Row],
    targets: &[f64],
    curve: &Curve,
) -> (Vec<(f64, f64, f64)>, Option<f64>) {
    let stats = |t: f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.target == t)
            .filter_map(|r| (curve.value)(r))
            .filter(|x| x.is_finite())
            .collect();
        (!v.is_empty()).then(|| mean_std(&v))
    };
    let points = targets
        .iter()
        .filter(|t| t.is_finite())
        .filter_map(|&t| stats(t).map(|(m, s)| (t, m, s)))
        .collect();
    let baseline = targets
        .iter()
        .find(|t| t.is_infinite())
        .and_then(|&t| stats(t))
        .map(|(m, _)| m);
    (points, baseline)
}

/// Two panels side by side, ε on a log axis with one tick labelled at
/// each budget (labels that would overlap are thinned): test accuracy
/// (mean ± sd over seeds) on the left, measured leakage (attack AUCs) on
/// the right; non-private values as dashed lines. The title names the
/// dataset and δ.
fn plot(rows: &[Row], path: &Path, dataset: &str) -> Result<()> {
    let mut targets: Vec<f64> = rows.iter().map(|r| r.target).collect();
    targets.sort_by(f64::total_cmp);
    targets.dedup();
    let deltas: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.report().privacy.epsilon.map(|_| r.report().privacy.delta))
        .collect();
    let delta_text = match deltas.first() {
        Some(d) if deltas.iter().all(|x| x == d) => format!(", δ = {d:e}"),
        Some(_) => ", δ varies".into(),
        None => String::new(),
    };
    let accuracy = |r: &Row| Some(r.report().test_accuracy);
    let loss_auc = |r: &Row| r.attack("loss").map(|a| a.auc);
    let lira_auc = |r: &Row| r.attack("lira-online").map(|a| a.auc);
    let root = SVGBackend::new(path, (1400, 470)).into_drawing_area();
    let (left, right) = root.split_horizontally(760);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        panel(
            &left,
            rows,
            &targets,
            &format!("DP-SGD on {dataset}: test accuracy vs ε{delta_text}"),
            "test accuracy",
            &[Curve {
                label: "DP-SGD (mean ± sd over seeds)",
                color: BLUE,
                value: &accuracy,
            }],
            true,
        )?;
        panel(
            &right,
            rows,
            &targets,
            "measured leakage vs ε (membership-inference AUC; 50% = chance)",
            "attack AUC",
            &[
                Curve {
                    label: "loss attack",
                    color: RGBColor(200, 80, 0),
                    value: &loss_auc,
                },
                Curve {
                    label: "LiRA (online)",
                    color: RGBColor(120, 40, 160),
                    value: &lira_auc,
                },
            ],
            false,
        )?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// One panel of [`plot`]: `curves` against ε; `accuracy` sets the y range
/// (up to 100%) and the baseline label of the accuracy panel.
#[allow(clippy::too_many_arguments)]
fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    rows: &[Row],
    targets: &[f64],
    title: &str,
    y_desc: &str,
    curves: &[Curve],
    accuracy: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let data: Vec<_> = curves
        .iter()
        .map(|c| curve_points(rows, targets, c))
        .collect();
    let finite: Vec<f64> = targets.iter().copied().filter(|t| t.is_finite()).collect();
    let (x_lo, x_hi) = finite.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
        (lo.min(t), hi.max(t))
    });
    let (x_lo, x_hi) = if finite.is_empty() {
        (0.1, 10.0)
    } else {
        (x_lo / 1.5, x_hi * 1.5)
    };
    let values = data.iter().flat_map(|(points, baseline)| {
        points
            .iter()
            .flat_map(|p| [p.1 - p.2, p.1 + p.2])
            .chain(*baseline)
            .collect::<Vec<_>>()
    });
    let (v_lo, v_hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (y_min, y_max) = if accuracy {
        ((v_lo.min(1.0) - 0.05).max(0.0), 1.0)
    } else if v_lo.is_finite() {
        (
            (v_lo.min(0.5) - 0.02).max(0.0),
            (v_hi.max(0.5) + 0.02).min(1.0),
        )
    } else {
        (0.45, 0.6)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), y_min..y_max)?;
    // plotters' automatic log-axis labels round to look alike ("10.0"
    // twice) or vanish for a narrow range: label the budgets instead.
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_label_formatter(&|_| String::new())
        .x_desc("ε (log scale)")
        .y_desc(y_desc)
        .y_label_formatter(&|y| {
            if accuracy {
                format!("{:.0}%", 100.0 * y)
            } else {
                format!("{:.1}%", 100.0 * y)
            }
        })
        .draw()?;
    let mut last_label_px: Option<i32> = None;
    for &t in &finite {
        chart.draw_series(LineSeries::new(
            vec![(t, y_min), (t, y_max)],
            BLACK.mix(0.12),
        ))?;
        // Backend coordinates are the whole figure's; the text is drawn
        // on this panel.
        let (px, py) = chart.backend_coord(&(t, y_min));
        let (base_x, base_y) = area.get_base_pixel();
        let (px, py) = (px - base_x, py - base_y);
        if last_label_px.is_none_or(|last| px - last >= 34) {
            area.draw(&Text::new(
                format!("{t}"),
                (px, py + 6),
                ("sans-serif", 13).into_font().into_text_style(area).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    ),
                ),
            ))?;
            last_label_px = Some(px);
        }
    }
    for (curve, (points, baseline)) in curves.iter().zip(&data) {
        let color = curve.color;
        if !points.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))?
                .label(curve.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
            )?;
            chart.draw_series(points.iter().map(|p| {
                ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, color.filled(), 8)
            }))?;
        }
        if let Some(b) = *baseline {
            let label = if accuracy {
                format!("non-private ({:.1}%)", 100.0 * b)
            } else {
                format!("non-private {} ({:.1}%)", curve.label, 100.0 * b)
            };
            let dashed = if accuracy { RED } else { color };
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x_lo, b), (x_hi, b)],
                    6,
                    4,
                    dashed.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], dashed));
        }
    }
    if !accuracy {
        chart.draw_series(LineSeries::new(
            vec![(x_lo, 0.5), (x_hi, 0.5)],
            BLACK.mix(0.4),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(if accuracy {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperLeft
        })
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Writes sweep.csv, sweep.json and sweep.svg for the runs so far (each
/// atomically), so that an interrupted sweep keeps every finished run.
fn write_outputs(a: &Args, rows: &[Row], preprocessing: &impl serde::Serialize) -> Result<()> {
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
    let doc =
        json!({ "dataset": o.dataset.to_string(), "preprocessing": preprocessing, "runs": runs });
    write_atomically(
        &a.out.join("sweep.json"),
        &serde_json::to_string_pretty(&doc)?,
    )?;
    if let Some(path) = &a.html {
        crate::commands::report::write_html_of(
            &doc,
            &a.out.join("sweep.json").display().to_string(),
            None,
            path,
        )?;
    }
    plot(rows, &a.out.join("sweep.svg"), &o.dataset.to_string())
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
        .any(|x| matches!(x, Attack::Lira | Attack::Shadow))
    {
        options.test_fraction.get_or_insert(0.5);
    }
    let o = &options;
    let mut refuted = false;
    let base_seed = o.seed.unwrap_or(1);
    if !a.attacks.contains(&Attack::Loss) {
        anyhow::bail!(crate::args::UsageError {
            flag: "--attacks",
            message: "the sweep's leakage columns need the loss attack: keep `loss` in the list"
                .into(),
        });
    }
    let (train, test, preprocessing) = load(o, base_seed)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut rows = Vec::new();
    for &target in &a.epsilons {
        for r in 0..a.repeats {
            let seed = base_seed + r;
            let privacy = if target.is_finite() {
                Privacy::TargetEpsilon(target)
            } else {
                Privacy::NonPrivate
            };
            let mut cfg = config(o, privacy, &train);
            cfg.seed = Some(seed);
            let audit_cfg = audit_config(
                &a.attacks,
                a.shadow_models,
                a.canaries,
                CanaryKind::Mislabeled,
                None,
                None,
                seed,
            )?;
            let outcome = run_audit(&cfg, o, &audit_cfg, &train, &test, a.quiet)?;
            let audit = outcome.report;
            let label = if target.is_finite() {
                format!("ε ≤ {target}")
            } else {
                "ε = ∞".into()
            };
            let lira = audit
                .attacks
                .iter()
                .find(|x| x.name == "lira-online")
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
            if audit.canary_audit.as_ref().is_some_and(|c| c.exceeds_claim) {
                eprintln!(
                    "ERROR: dpsgd: [{label}, seed {seed}] the measured ε lower bound exceeds the claimed ε: the privacy claim is false (a bug)"
                );
                refuted = true;
            }
            rows.push(Row {
                target,
                seed,
                audit,
            });
            write_outputs(a, &rows, &preprocessing)?;
        }
    }
    println!(
        "wrote {}/sweep.csv, sweep.json and sweep.svg",
        a.out.display()
    );
    Ok(if refuted {
        std::process::ExitCode::from(crate::commands::audit::EXIT_CLAIM_REFUTED)
    } else {
        std::process::ExitCode::SUCCESS
    })
}
