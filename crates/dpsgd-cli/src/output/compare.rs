//! What `dpsgd compare` writes: compare.csv, compare.md, compare.json and
//! compare.svg, one row per defence.

use crate::flags::defence::DefenceSpec;
use crate::output::files::write_atomically;
use crate::output::format::opt;
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

pub fn csv(rows: &[Row], attacks: &[String]) -> String {
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

pub fn markdown(rows: &[Row], attacks: &[String], dataset: &str) -> String {
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

pub fn json(rows: &[Row]) -> serde_json::Value {
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
pub fn plot(rows: &[Row], attack: &str, path: &Path, dataset: &str) -> Result<()> {
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
