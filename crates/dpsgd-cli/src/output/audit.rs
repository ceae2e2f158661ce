//! What `dpsgd audit` writes: the summary table and the ROC figures
//! (linear and log-log).

use crate::output::files::write_atomically;
use crate::output::format::{p_value, percent};
use anyhow::Result;
use dpsgd::audit::estimators::BcaInterval;
use dpsgd::audit::hardening::ClientUsage;
use dpsgd::train::audit::{AttackResult, AuditReport, DeployedAuditReport, InversionReport};
use dpsgd_serve::client::Usage;
use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;
use std::path::Path;

/// `level` as a percentage without float noise: 0.95 → `95%`, 0.999 →
/// `99.9%`.
fn level_percent(level: f64) -> String {
    let s = format!("{:.3}", 100.0 * level);
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// `[low, high]` of a BCa interval with `show`, or `–` without one.
fn bca_ends(ci: Option<&BcaInterval>, show: impl Fn(f64) -> String) -> String {
    ci.map_or_else(
        || "–".to_owned(),
        |c| format!("[{}, {}]", show(c.low), show(c.high)),
    )
}

/// The human-readable summary: accuracy and ε, one row per attack (AUC and
/// TPRs with their BCa intervals) followed by its most exposed slice, the
/// lower bound and the inversion figures.
pub fn table(r: &AuditReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "test accuracy {} | train accuracy {} | {}",
        percent(r.test_accuracy),
        percent(r.train_accuracy),
        match r.epsilon {
            Some(e) => format!(
                "ε = {e:.3} at δ = {:e}{}",
                r.delta,
                if r.target.privacy.privacy_unit == "user" {
                    " for any one user's records"
                } else {
                    ""
                }
            ),
            None => "non-private (ε = ∞)".into(),
        }
    );
    attack_rows(&mut out, &r.attacks);
    if let Some(c) = &r.canary_audit {
        let _ = writeln!(
            out,
            "canaries: {} {:?}{} ({} included), {} guesses, {} right → ε lower bound {:.3} (one run), {:.3} (Clopper–Pearson), {}",
            c.one_run.canaries,
            c.kind,
            if c.unit == "user" {
                format!(" users of {} records", c.records_per_canary)
            } else {
                String::new()
            },
            c.one_run.included,
            c.one_run.guesses,
            c.one_run.correct,
            c.one_run.epsilon,
            c.clopper_pearson_epsilon,
            match (
                c.claimed_epsilon,
                c.claimed_group_epsilon,
                c.exceeds_record_level_claim
            ) {
                // Canary users against a record-level claim: the claim
                // covers a user of K records at group privacy only.
                (Some(e), Some(g), Some(above)) => format!(
                    "{} the record-level ε = {e:.3}, which covers a user of {} records only at K·ε = {g:.3}{}",
                    if above { "ABOVE" } else { "below" },
                    c.records_per_canary,
                    if c.exceeds_claim {
                        " — ABOVE even that"
                    } else {
                        ""
                    }
                ),
                (Some(e), _, _) if c.exceeds_claim => format!("ABOVE the claimed ε = {e:.3}"),
                (Some(e), _, _) => format!("claimed ε = {e:.3}"),
                (None, _, _) => "no claim (non-private)".into(),
            }
        );
        if let Some(w) = &c.white_box {
            let _ = writeln!(
                out,
                "white-box canaries: planted in the target's own run (N = {} with their slots), auditor's view {}, {} releases observed{}",
                w.dataset_size,
                w.view,
                w.observed_steps,
                w.noise_check.map_or_else(String::new, |n| format!(
                    "; noise check: measured/claimed noise {:.3}, step-to-step correlation {:.3} — {}",
                    n.noise_ratio,
                    n.lag1_correlation,
                    if n.consistent {
                        "as claimed"
                    } else {
                        "NOT the noise ε assumes (a diagnostic, not a bound)"
                    }
                )),
            );
        }
        let e = &c.estimators;
        let shown = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |x| format!("{x:.3}"));
        let _ = writeln!(
            out,
            "canaries, other readings: f-DP one-run bound {} (claim as an (ε, δ) curve), {} (claim as the run's own privacy curve), {} (claim as a Gaussian mechanism); Gaussian-DP estimate ε ≈ {} (an estimate, not a bound)",
            shown(e.fdp_epsilon),
            shown(e.fdp_run_curve_epsilon),
            shown(e.fdp_gaussian_epsilon),
            e.gdp_estimate.map_or_else(
                || "–".to_owned(),
                |g| format!("{:.3}, μ = {:.3}", g.epsilon, g.mu)
            ),
        );
    }
    inversion_and_queries(&mut out, r.inversion.as_ref(), &r.queries, r.query_budget);
    if r.shadow_models > 0 {
        let _ = writeln!(
            out,
            "{} shadow models in {:.1} s; audit {:.1} s",
            r.shadow_models, r.shadow_seconds, r.audit_seconds
        );
    }
    out
}

/// One row per attack (AUC and TPRs with their BCa intervals), each
/// followed by its most exposed slice and its figures against users, then
/// the intervals' level.
fn attack_rows(out: &mut String, attacks: &[AttackResult]) {
    use std::fmt::Write as _;
    let level = attacks
        .iter()
        .find_map(|a| {
            a.auc_bca
                .or(a.tpr_at_fpr_0_01_bca)
                .or(a.tpr_at_fpr_0_001_bca)
        })
        .map(|c| level_percent(c.level));
    let _ = writeln!(
        out,
        "{:<17} {:>6} {:>16} {:>22} {:>22} {:>9}",
        "attack", "AUC", "BCa interval", "TPR@1%FPR [BCa]", "TPR@0.1%FPR [BCa]", "advantage"
    );
    for a in attacks {
        let slice = a.slices.first().map_or_else(
            || "–".to_owned(),
            |s| {
                format!(
                    "{} (AUC {:.3}, TPR@1%FPR {}{})",
                    s.name,
                    s.auc,
                    percent(s.tpr_at_fpr_0_01),
                    s.p_value_adjusted
                        .map_or_else(String::new, |p| format!(", adjusted p {}", p_value(p)))
                )
            },
        );
        let tpr = |x: f64, ci: Option<&BcaInterval>| match ci {
            Some(_) => format!("{} {}", percent(x), bca_ends(ci, percent)),
            None => percent(x),
        };
        let _ = writeln!(
            out,
            "{:<17} {:>6.3} {:>16} {:>22} {:>22} {:>9.3}\n  most exposed slice: {slice}",
            a.name,
            a.auc,
            bca_ends(a.auc_bca.as_ref(), |x| format!("{x:.3}")),
            tpr(a.tpr_at_fpr_0_01, a.tpr_at_fpr_0_01_bca.as_ref()),
            tpr(a.tpr_at_fpr_0_001, a.tpr_at_fpr_0_001_bca.as_ref()),
            a.advantage,
        );
        // The same scores per user: the mean and the best of each user's
        // records (data with a user column).
        for u in &a.users {
            let _ = writeln!(
                out,
                "  users{}, {} of their records' scores ({} members, {} non-members): AUC {:.3} [{:.3}, {:.3}], TPR@1%FPR {}, TPR@0.1%FPR {}",
                if u.min_records > 1 {
                    format!(" with ≥ {} records", u.min_records)
                } else {
                    String::new()
                },
                match u.aggregate {
                    "max" => "best",
                    other => other,
                },
                u.users.0,
                u.users.1,
                u.auc,
                u.auc_interval.low,
                u.auc_interval.high,
                percent(u.tpr_at_fpr_0_01),
                percent(u.tpr_at_fpr_0_001),
            );
        }
    }
    if !attacks.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            match &level {
                Some(l) => format!(
                    "intervals: BCa bootstrap (Efron 1987), level 1 − α = {l}; – where one could not be computed"
                ),
                None => "intervals: no BCa bootstrap interval could be computed (too few records or resamples)".to_owned(),
            }
        );
    }
}

/// The inversion figures and the queries per attack, where there are any.
fn inversion_and_queries(
    out: &mut String,
    inversion: Option<&InversionReport>,
    queries: &[ClientUsage],
    query_budget: Option<u64>,
) {
    use std::fmt::Write as _;
    if let Some(inv) = inversion {
        let mean_conf = inv.confidence.iter().sum::<f64>() / inv.confidence.len().max(1) as f64;
        let distance = if inv.mean_distance_ratio.is_finite() {
            format!(
                "{:.3} over {} of the classes",
                inv.mean_distance_ratio, inv.measured_classes
            )
        } else {
            "not measured (no class has both a member and a non-member)".to_owned()
        };
        let _ = writeln!(
            out,
            "inversion: {} classes, mean target confidence {:.3}, independent classifier recognises {}, nearest member / nearest non-member distance {distance}",
            inv.classes.len(),
            mean_conf,
            percent(inv.independent_accuracy),
        );
    }
    if !queries.is_empty() {
        let budget =
            query_budget.map_or_else(|| "no budget".to_owned(), |b| format!("budget {b} each"));
        let each: Vec<String> = queries
            .iter()
            .map(|q| {
                if q.refused > 0 {
                    format!("{} {} served, {} REFUSED", q.client, q.served, q.refused)
                } else {
                    format!("{} {}", q.client, q.served)
                }
            })
            .collect();
        let _ = writeln!(out, "queries ({budget}): {}", each.join(", "));
    }
}

/// The summary of an audit of a deployed model: what it released and its
/// accuracy as answered, the attacks' rows, inversion, the queries per
/// attack and what the endpoint was sent and refused.
pub fn deployed_table(r: &DeployedAuditReport, usage: &Usage) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "target {} ({} release) | test accuracy {} | train accuracy {} (as released) | {}",
        r.target.location,
        r.release,
        percent(r.test_accuracy),
        percent(r.train_accuracy),
        match r.epsilon {
            Some(e) => format!(
                "claims ε = {e:.3} at δ = {:e} per {}",
                r.delta, r.target.unit
            ),
            None => "claims no DP (ε = ∞)".into(),
        }
    );
    attack_rows(&mut out, &r.attacks);
    inversion_and_queries(&mut out, r.inversion.as_ref(), &r.queries, r.query_budget);
    for refused in &r.refused_attacks {
        let _ = writeln!(
            out,
            "{refused}: REFUSED (see the warnings for by whom and why)"
        );
    }
    let _ = writeln!(
        out,
        "endpoint: {} requests, {} records answered, {} requests refused ({} rate waits, {:.1} s waited)",
        usage.requests,
        usage.records_answered,
        usage.refused_requests,
        usage.rate_waits,
        usage.waited_ms as f64 / 1000.0
    );
    if r.shadow_models > 0 {
        let _ = writeln!(
            out,
            "{} shadow models in {:.1} s (trained here, through this command's recipe); audit {:.1} s",
            r.shadow_models, r.shadow_seconds, r.audit_seconds
        );
    }
    out
}

/// Colours of the attacks' curves, in order.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 0, 255),
    RGBColor(255, 0, 0),
    RGBColor(0, 160, 0),
    RGBColor(200, 0, 200),
    RGBColor(0, 170, 200),
    RGBColor(0, 0, 0),
    RGBColor(230, 140, 0),
    RGBColor(120, 60, 160),
];

/// ROC curves of every attack: linear axes, or log-log (where the low-FPR
/// regime that matters for membership inference is visible), with the
/// chance diagonal.
pub fn plot_roc(attacks: &[AttackResult], path: &Path, title: &str, log: bool) -> Result<()> {
    let mut svg = String::new();
    draw_roc(attacks, &mut svg, title, log)
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    write_atomically(path, &svg)
}

/// [`plot_roc`]'s figure, drawn into `svg`.
fn draw_roc(
    attacks: &[AttackResult],
    svg: &mut String,
    title: &str,
    log: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (640, 560)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(
                format!("{title}: ROC{}", if log { " (log-log)" } else { "" }),
                ("sans-serif", 16),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55);
        if log {
            // TPR 0 has no place on a log axis: such points sit at the floor.
            let floor = 1e-5;
            let mut chart =
                builder.build_cartesian_2d((floor..1.0).log_scale(), (floor..1.0).log_scale())?;
            chart
                .configure_mesh()
                .x_desc("false positive rate")
                .y_desc("true positive rate")
                .x_label_formatter(&|x| format!("{x:.0e}"))
                .y_label_formatter(&|y| format!("{y:.0e}"))
                .draw()?;
            draw_curves(&mut chart, attacks, (floor, 1.0), |p| {
                (p.0 >= floor).then_some((p.0, p.1.max(floor)))
            })?;
        } else {
            let mut chart = builder.build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
            chart
                .configure_mesh()
                .x_desc("false positive rate")
                .y_desc("true positive rate")
                .draw()?;
            draw_curves(&mut chart, attacks, (0.0, 1.0), Some)?;
        }
        root.present()?;
        Ok(())
    };
    draw()
}

/// The chance diagonal from `(lo, lo)` to `(hi, hi)`, each attack's ROC
/// points as `point` maps them (`None`: left out), and the legend.
fn draw_curves<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    attacks: &[AttackResult],
    (lo, hi): (f64, f64),
    point: impl Fn((f64, f64)) -> Option<(f64, f64)>,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart.draw_series(LineSeries::new(vec![(lo, lo), (hi, hi)], BLACK.mix(0.3)))?;
    for (i, a) in attacks.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                a.roc.iter().copied().filter_map(&point),
                color.stroke_width(2),
            ))?
            .label(format!(
                "{} (AUC {:.3}, TPR@0.1%FPR {})",
                a.name,
                a.auc,
                percent(a.tpr_at_fpr_0_001)
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
