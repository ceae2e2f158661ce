//! `dpsgd sweep`: train at several privacy budgets (and seeds) and write
//! the accuracy / privacy / leakage trade-off as CSV, JSON and an SVG plot.

use crate::commands::train::{TrainOptions, config, load, run_one, summary, write_atomically};
use anyhow::{Context, Result};
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
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    options: TrainOptions,
}

/// One run of the sweep.
struct Row {
    target: f64,
    seed: u64,
    report: TrainReport,
}

const CSV_COLUMNS: &str = "target_epsilon,seed,epsilon,delta,noise_multiplier,sample_rate,steps,epochs,\
test_accuracy,train_accuracy,loss_threshold_auc,lira_auc,tpr_at_1pct_fpr,audit_epsilon_lower_bound,wall_seconds";

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x}"))
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_COLUMNS);
    out.push('\n');
    for r in rows {
        let p = &r.report;
        // Leakage columns of the audit (LiRA, TPR at low FPR, ε lower bound)
        // stay empty until an audit fills them.
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},,,,{}",
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
            p.not_covered_by_epsilon.loss_threshold_auc,
            p.wall_seconds
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

/// Test accuracy (mean ± standard deviation over seeds) against ε on a log
/// axis, with one tick labelled at each budget (labels that would overlap
/// are thinned); the non-private accuracy as a dashed line. The title names
/// the dataset and δ.
fn plot(rows: &[Row], path: &Path, dataset: &str) -> Result<()> {
    let mut targets: Vec<f64> = rows.iter().map(|r| r.target).collect();
    targets.sort_by(f64::total_cmp);
    targets.dedup();
    let stats = |t: f64| {
        let accs: Vec<f64> = rows
            .iter()
            .filter(|r| r.target == t)
            .map(|r| r.report.test_accuracy)
            .collect();
        mean_std(&accs)
    };
    let finite: Vec<(f64, f64, f64)> = targets
        .iter()
        .filter(|t| t.is_finite())
        .map(|&t| {
            let (m, s) = stats(t);
            (t, m, s)
        })
        .collect();
    let baseline = targets
        .iter()
        .find(|t| t.is_infinite())
        .map(|&t| stats(t).0);
    let (x_lo, x_hi) = finite.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let (x_lo, x_hi) = if finite.is_empty() {
        (0.1, 10.0)
    } else {
        (x_lo / 1.5, x_hi * 1.5)
    };
    let y_lo = finite
        .iter()
        .map(|p| p.1 - p.2)
        .chain(baseline)
        .fold(1.0f64, f64::min)
        .max(0.0);
    let deltas: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.report.privacy.epsilon.map(|_| r.report.privacy.delta))
        .collect();
    let delta_text = match deltas.first() {
        Some(d) if deltas.iter().all(|x| x == d) => format!(", δ = {d:e}"),
        Some(_) => ", δ varies".into(),
        None => String::new(),
    };
    let title = format!("DP-SGD on {dataset}: test accuracy vs ε{delta_text}");
    let root = SVGBackend::new(path, (760, 470)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let y_min = (y_lo - 0.05).max(0.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), y_min..1.0)?;
        // plotters' automatic log-axis labels round to look alike ("10.0"
        // twice) or vanish for a narrow range: label the budgets instead.
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .x_label_formatter(&|_| String::new())
            .x_desc("ε (log scale)")
            .y_desc("test accuracy")
            .y_label_formatter(&|y| format!("{:.0}%", 100.0 * y))
            .draw()?;
        let mut last_label_px: Option<i32> = None;
        for &(t, _, _) in &finite {
            chart.draw_series(LineSeries::new(vec![(t, y_min), (t, 1.0)], BLACK.mix(0.12)))?;
            let (px, py) = chart.backend_coord(&(t, y_min));
            if last_label_px.is_none_or(|last| px - last >= 34) {
                root.draw(&Text::new(
                    format!("{t}"),
                    (px, py + 6),
                    ("sans-serif", 13).into_font().into_text_style(&root).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Top,
                        ),
                    ),
                ))?;
                last_label_px = Some(px);
            }
        }
        if !finite.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    finite.iter().map(|p| (p.0, p.1)),
                    BLUE.stroke_width(2),
                ))?
                .label("DP-SGD (mean ± sd over seeds)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
            chart.draw_series(
                finite
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 4, BLUE.filled())),
            )?;
            chart.draw_series(finite.iter().map(|p| {
                ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, BLUE.filled(), 8)
            }))?;
        }
        if let Some(b) = baseline {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x_lo, b), (x_hi, b)],
                    6,
                    4,
                    RED.stroke_width(2),
                ))?
                .label(format!("non-private ({:.1}%)", 100.0 * b))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// Writes sweep.csv, sweep.json and sweep.svg for the runs so far (each
/// atomically), so that an interrupted sweep keeps every finished run.
fn write_outputs(a: &Args, rows: &[Row], preprocessing: &impl serde::Serialize) -> Result<()> {
    let o = &a.options;
    write_atomically(&a.out.join("sweep.csv"), &csv(rows))?;
    let runs: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r.report).unwrap_or_default();
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
    plot(rows, &a.out.join("sweep.svg"), &o.dataset.to_string())
}

/// Runs the command.
///
/// # Errors
///
/// Bad data or settings, a failed run, or unwritable output.
pub fn run(a: &Args) -> Result<()> {
    let o = &a.options;
    let base_seed = o.seed.unwrap_or(1);
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
            let report = run_one(&cfg, &train, &test, o.backend, a.quiet)?;
            let label = if target.is_finite() {
                format!("ε ≤ {target}")
            } else {
                "ε = ∞".into()
            };
            println!("[{label}, seed {seed}] {}", summary(&report));
            rows.push(Row {
                target,
                seed,
                report,
            });
            write_outputs(a, &rows, &preprocessing)?;
        }
    }
    println!(
        "wrote {}/sweep.csv, sweep.json and sweep.svg",
        a.out.display()
    );
    Ok(())
}
