//! What `dpsgd compare` writes: compare.csv, compare.md, compare.json and
//! compare.svg, one row per defence (or swept point), with the
//! accuracy–leakage Pareto front marked ([`super::pareto`]).

use crate::flags::defence::DefenceSpec;
use crate::output::files::write_atomically;
use crate::output::format::opt;
use crate::output::pareto::{AUC_TARGET, cheapest_under, on_front};
use anyhow::Result;
use dpsgd::train::audit::AuditReport;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// One trained and attacked defence.
pub struct Row {
    /// The defence as spelled on the command line.
    pub spec: DefenceSpec,
    /// Its model's training report and attacks.
    pub audit: AuditReport,
}

/// The strongest attack's AUC and TPR at 0.1% FPR (the largest of each
/// over the attacks run; NaN when none ran).
pub fn strongest(audit: &AuditReport) -> (f64, f64) {
    audit
        .attacks
        .iter()
        .fold((f64::NAN, f64::NAN), |(auc, tpr), a| {
            (auc.max(a.auc), tpr.max(a.tpr_at_fpr_0_001))
        })
}

/// Per row, whether it is on the front of accuracy against the strongest
/// AUC, and against the strongest TPR at 0.1% FPR.
pub fn fronts(rows: &[Row]) -> (Vec<bool>, Vec<bool>) {
    let pick = |f: fn((f64, f64)) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .map(|r| (r.audit.test_accuracy, f(strongest(&r.audit))))
            .collect()
    };
    (on_front(&pick(|s| s.0)), on_front(&pick(|s| s.1)))
}

/// The cheapest point whose strongest AUC is at most [`AUC_TARGET`].
pub fn cheapest(rows: &[Row]) -> Option<&Row> {
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.audit.test_accuracy, strongest(&r.audit).0))
        .collect();
    cheapest_under(&points, AUC_TARGET).map(|i| &rows[i])
}

pub fn csv(rows: &[Row], attacks: &[String]) -> String {
    let mut out = String::from("defence,test_accuracy,train_accuracy,epsilon");
    for a in attacks {
        let _ = write!(out, ",{a}_auc,{a}_tpr_at_fpr_0_01,{a}_tpr_at_fpr_0_001");
    }
    out.push_str(",strongest_auc,strongest_tpr_at_fpr_0_001,pareto_auc,pareto_tpr\n");
    let (front_auc, front_tpr) = fronts(rows);
    for (i, r) in rows.iter().enumerate() {
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
        let (auc, tpr) = strongest(&r.audit);
        let _ = writeln!(
            out,
            ",{},{},{},{}",
            opt(Some(auc).filter(|v| v.is_finite())),
            opt(Some(tpr).filter(|v| v.is_finite())),
            front_auc[i],
            front_tpr[i]
        );
    }
    out
}

pub fn markdown(rows: &[Row], attacks: &[String], dataset: &str) -> String {
    let mut out = format!(
        "# Defences compared on {dataset}\n\nTest accuracy and measured leakage (AUC; TPR at 0.1% FPR, chance 0.1%) of the same model trained with each defence on the same split. Only DP-SGD comes with a guarantee (ε). **front**: on the Pareto front of accuracy against the strongest attack's AUC (`AUC`) or TPR at 0.1% FPR (`TPR`): no other point is at least as accurate and at most as leaky.\n\n| defence | front | test accuracy | train accuracy | ε |"
    );
    for a in attacks {
        let _ = write!(out, " {a} AUC | {a} TPR@0.1%FPR |");
    }
    out.push_str("\n|---|---|---|---|---|");
    for _ in attacks {
        out.push_str("---|---|");
    }
    out.push('\n');
    let (front_auc, front_tpr) = fronts(rows);
    for (i, r) in rows.iter().enumerate() {
        let front = match (front_auc[i], front_tpr[i]) {
            (true, true) => "**AUC, TPR**",
            (true, false) => "**AUC**",
            (false, true) => "**TPR**",
            (false, false) => "",
        };
        let _ = write!(
            out,
            "| {} | {front} | {:.2}% | {:.2}% | {} |",
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
    match cheapest(rows) {
        Some(r) => {
            let _ = write!(
                out,
                "\nCheapest point with the strongest attack's AUC ≤ {AUC_TARGET}: `{}` ({:.2}% test accuracy, AUC {:.3}).\n",
                r.spec.name,
                100.0 * r.audit.test_accuracy,
                strongest(&r.audit).0
            );
        }
        None if !rows.is_empty() => {
            let _ = write!(
                out,
                "\nNo point keeps the strongest attack's AUC ≤ {AUC_TARGET}.\n"
            );
        }
        None => {}
    }
    out
}

/// What a row of `compare.json` says of its figures of the private records.
const NOT_COVERED_NOTE: &str = "these fields of the row are exact statistics of the members and non-members (the attacks' figures and what is derived from them), not covered by the row's epsilon";

/// The row's fields [`NOT_COVERED_NOTE`] covers.
const NOT_COVERED_FIELDS: [&str; 6] = [
    "strongest_auc",
    "strongest_tpr_at_fpr_0_001",
    "pareto_auc",
    "pareto_tpr",
    "train_accuracy",
    "attacks",
];

pub fn json(rows: &[Row]) -> serde_json::Value {
    let (front_auc, front_tpr) = fronts(rows);
    let finite = |v: f64| v.is_finite().then_some(v);
    let runs: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (auc, tpr) = strongest(&r.audit);
            serde_json::json!({
                "strongest_auc": finite(auc),
                "strongest_tpr_at_fpr_0_001": finite(tpr),
                "pareto_auc": front_auc[i],
                "pareto_tpr": front_tpr[i],
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
                // The row's own figures of the private records (its nested
                // audit declares its own in `audit.not_covered_by_epsilon`).
                "not_covered_by_epsilon": {
                    "note": NOT_COVERED_NOTE,
                    "fields": NOT_COVERED_FIELDS,
                },
            })
        })
        .collect();
    serde_json::Value::Array(runs)
}

/// Two panels: test accuracy against the strongest attack's AUC, and
/// against its TPR at 0.1% FPR; every point labelled, the points of each
/// panel's Pareto front filled red and joined in order of leakage, the
/// others hollow.
pub fn plot(rows: &[Row], path: &Path, dataset: &str) -> Result<()> {
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, (1200, 520)).into_drawing_area();
    let (left, right) = root.split_horizontally(600);
    let (front_auc, front_tpr) = fronts(rows);
    // (leakage, accuracy, label, on the front), finite points only.
    let points = |f: fn((f64, f64)) -> f64, front: &[bool]| -> Vec<(f64, f64, String, bool)> {
        rows.iter()
            .zip(front)
            .map(|(r, &on)| {
                let x = f(strongest(&r.audit));
                (x, r.audit.test_accuracy, r.spec.name.clone(), on)
            })
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect()
    };
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        for (area, pts, x_desc) in [
            (
                &left,
                points(|s| s.0, &front_auc),
                "strongest attack's AUC (0.5 = chance)".to_owned(),
            ),
            (
                &right,
                points(|s| s.1, &front_tpr),
                "strongest attack's TPR at 0.1% FPR".to_owned(),
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
            // Accuracy ends at 100% (a little room for the labels).
            let y_hi = y_hi.min(1.02);
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
            let mut front: Vec<(f64, f64)> =
                pts.iter().filter(|p| p.3).map(|p| (p.0, p.1)).collect();
            front.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            chart.draw_series(LineSeries::new(front, RED.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|(x, y, name, on)| {
                let style = if *on {
                    RED.filled()
                } else {
                    BLUE.stroke_width(1)
                };
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 5, style)
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
