//! What `dpsgd sweep` writes besides its JSON: sweep.csv and the
//! accuracy / leakage against ε figure, sweep.svg.

use crate::output::files::write_atomically;
use crate::output::format::opt;
use anyhow::Result;
use dpsgd::train::TrainReport;
use dpsgd::train::audit::AuditReport;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// One run of the sweep.
pub struct Row {
    /// The target ε (infinite: non-private).
    pub target: f64,
    /// The run's seed.
    pub seed: u64,
    /// Its training report and attacks.
    pub audit: AuditReport,
}

impl Row {
    /// The run's training report.
    pub fn report(&self) -> &TrainReport {
        &self.audit.target
    }

    /// The attack named `name`, if it ran.
    pub fn attack(&self, name: &str) -> Option<&dpsgd::train::audit::AttackResult> {
        self.audit.attacks.iter().find(|a| a.name == name)
    }
}

/// `lira_auc`, `tpr_at_1pct_fpr` and `lira_tpr_at_0_1pct_fpr` are LiRA
/// online's; `loss_threshold_auc` is the loss attack's (training vs test
/// split); `audit_epsilon_lower_bound` the one-run canary audit's;
/// `batch_size` and `lr` are the run's (a recipe may train small budgets
/// with other settings: `Recipe::for_privacy`).
pub const CSV_COLUMNS: &str = "target_epsilon,seed,epsilon,delta,noise_multiplier,sample_rate,steps,epochs,\
test_accuracy,train_accuracy,loss_threshold_auc,lira_auc,tpr_at_1pct_fpr,audit_epsilon_lower_bound,wall_seconds,\
lira_tpr_at_0_1pct_fpr,loss_tpr_at_0_1pct_fpr,batch_size,lr";

pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_COLUMNS);
    out.push('\n');
    for r in rows {
        let p = r.report();
        let lira = r.attack(dpsgd::audit::Attack::LIRA_ONLINE);
        let loss = r.attack("loss");
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
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
            p.batch_size,
            p.lr,
        );
    }
    out
}

pub fn mean_std(v: &[f64]) -> (f64, f64) {
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
pub struct Curve<'a> {
    label: &'a str,
    color: RGBColor,
    value: &'a dyn Fn(&Row) -> Option<f64>,
}

/// Mean ± sd of `curve` at each finite budget that has values, and its mean
/// without DP.
pub fn curve_points(
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
pub fn plot(rows: &[Row], path: &Path, dataset: &str) -> Result<()> {
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
    let lira_auc = |r: &Row| r.attack(dpsgd::audit::Attack::LIRA_ONLINE).map(|a| a.auc);
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, (1400, 470)).into_drawing_area();
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
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    drop((left, right, root));
    write_atomically(path, &svg)
}

/// One panel of [`plot`]: `curves` against ε; `accuracy` sets the y range
/// (up to 100%) and the baseline label of the accuracy panel.
#[allow(clippy::too_many_arguments)]
pub fn panel(
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
