//! The privacy report as one self-contained HTML page (inline CSS and SVG,
//! no script, no network), for a reader who knows no DP. Every number on
//! the page is read from the JSON reports of `train`, `audit`, `sweep` and
//! `compare`; the page never recomputes a privacy figure, so it cannot
//! disagree with them.

use base64::Engine as _;
use serde_json::Value;
use std::fmt::Write as _;

/// The reports a page is built from (any may be absent).
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// A `train` report (or an audit's `target`).
    pub train: Option<Value>,
    /// An `audit` report.
    pub audit: Option<Value>,
    /// A `sweep.json`.
    pub sweep: Option<Value>,
    /// A `compare.json`.
    pub compare: Option<Value>,
    /// The audit's inversion grid (PNG bytes).
    pub inversion_png: Option<Vec<u8>>,
    /// Where each came from, for the page's sources section.
    pub sources: Vec<String>,
}

impl Inputs {
    /// Files an input by its content: an audit report (`attacks` and
    /// `target`), a sweep (`runs`), a comparison (a list of rows with
    /// `defence`), or a training report (`not_covered_by_epsilon`).
    ///
    /// # Errors
    ///
    /// A document of none of these kinds.
    pub fn add(&mut self, v: Value, source: &str) -> Result<(), String> {
        let kind = if v.get("attacks").is_some() && v.get("target").is_some() {
            self.audit = Some(v);
            "audit"
        } else if v.get("runs").is_some_and(Value::is_array) {
            self.sweep = Some(v);
            "sweep"
        } else if v
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r.get("defence").is_some()))
        {
            self.compare = Some(v);
            "compare"
        } else if v.get("not_covered_by_epsilon").is_some() {
            self.train = Some(v);
            "train"
        } else {
            return Err(format!(
                "{source}: not a report of dpsgd train, audit, sweep or compare"
            ));
        };
        self.sources.push(format!("{source} ({kind})"));
        Ok(())
    }

    /// The training report: the one given, or the audit's target.
    fn training(&self) -> Option<&Value> {
        self.train
            .as_ref()
            .or_else(|| self.audit.as_ref().and_then(|a| a.get("target")))
    }

    /// Whether anything is there to report.
    pub fn is_empty(&self) -> bool {
        self.train.is_none()
            && self.audit.is_none()
            && self.sweep.is_none()
            && self.compare.is_none()
    }
}

/// A finding: what the numbers say, what to do, and the section that holds
/// the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `alert`, `warn` or `info`.
    pub level: &'static str,
    /// The finding and its recommendation, in plain words.
    pub text: String,
    /// The id of the section with the evidence.
    pub evidence: &'static str,
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// `x` as a percentage with two decimals (the CLI's tables use it too).
pub(crate) fn percent(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The attack named `name` of an audit-like report.
fn attack<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    attacks(report).find(|a| name_of(a) == name)
}

/// The report's attacks.
fn attacks(report: &Value) -> impl Iterator<Item = &Value> {
    report
        .get("attacks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("?")
}

/// The attack whose `key` is largest (the strongest evidence), with it.
fn strongest<'a>(attacks: impl Iterator<Item = &'a Value>, key: &str) -> Option<(&'a Value, f64)> {
    attacks
        .filter_map(|a| Some((a, num(a, key)?)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
}

/// A slice's exposure counts when its Bonferroni-adjusted p-value is below
/// this.
const SIGNIFICANCE: f64 = 0.05;

/// Chance level of TPR at 0.1% FPR.
const CHANCE_AT_0_1: f64 = 0.001;

/// The findings, from the rules stated in docs/report.md, most serious first.
pub fn findings(inputs: &Inputs) -> Vec<Finding> {
    let mut out = Vec::new();
    let training = inputs.training();
    let epsilon = training.and_then(|t| num(t, "epsilon"));
    if let Some(audit) = &inputs.audit {
        if let (Some(bound), Some(claimed)) = (
            num(audit, "epsilon_lower_bound"),
            audit
                .get("canary_audit")
                .and_then(|c| num(c, "claimed_epsilon")),
        ) {
            if bound > claimed {
                out.push(Finding {
                    level: "alert",
                    text: format!(
                        "The audit PROVES more leakage than the guarantee allows: ε ≥ {bound:.2} measured against ε = {claimed:.2} claimed. The privacy claim is false; do not ship this model, and report the bug."
                    ),
                    evidence: "leakage",
                });
            } else if bound >= 0.5 * claimed {
                out.push(Finding {
                    level: "info",
                    text: format!(
                        "The accounting is tight: the canary audit proves ε ≥ {bound:.2}, within a factor of two of the claimed ε = {claimed:.2}."
                    ),
                    evidence: "leakage",
                });
            }
        }
        if epsilon.is_none()
            && let Some(bound) = num(audit, "epsilon_lower_bound").filter(|b| *b > 0.0)
        {
            out.push(Finding {
                level: "warn",
                text: format!(
                    "The canary audit proves that this model leaks: with {} confidence, no mechanism with ε below {bound:.2} could have produced what the attack saw on the inserted canaries.",
                    audit
                        .pointer("/canary_audit/one_run/alpha")
                        .and_then(Value::as_f64)
                        .map_or_else(|| "95%".into(), |a| format!("{:.0}%", 100.0 * (1.0 - a)))
                ),
                evidence: "leakage",
            });
        }
        // The strongest attack is the evidence (a weak one must not hide it).
        if epsilon.is_none()
            && let Some((best, auc)) = strongest(attacks(audit), "auc")
            && auc > 0.55
        {
            let advice = sweep_advice(inputs).unwrap_or_else(|| "Recommended: train with DP-SGD; run <code>dpsgd sweep</code> to choose the ε at which the accuracy loss is acceptable.".into());
            out.push(Finding {
                level: "alert",
                text: format!(
                    "Without DP, membership in the training data is measurably inferable: the {} attack's AUC is {auc:.3} (0.5 is guessing). {advice}",
                    esc(name_of(best))
                ),
                evidence: "leakage",
            });
        }
        if let Some((lira, tpr)) = strongest(
            attacks(audit).filter(|a| name_of(a).starts_with("lira")),
            "tpr_at_fpr_0_001",
        ) && let Some(auc) = num(lira, "auc")
            && tpr >= 5.0 * CHANCE_AT_0_1
            && auc < 0.6
        {
            out.push(Finding {
                level: "warn",
                text: format!(
                    "Averages hide exposed records: the {} attack's AUC is only {auc:.3}, but at a false-positive rate of 0.1% it still identifies {} of the members ({:.0}× chance). A few records are at real risk.",
                    esc(name_of(lira)),
                    percent(tpr),
                    tpr / CHANCE_AT_0_1
                ),
                evidence: "leakage",
            });
        }
        let slices = attacks(audit).flat_map(|a| {
            a.get("slices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(move |s| (a, s))
        });
        // Only a slice whose exposure survives the correction for looking
        // at many slices is a finding: its p-value, adjusted over its
        // attack's slices, below 5% divided by the number of attacks
        // (Bonferroni again, over the attacks searched).
        let searched = attacks(audit)
            .filter(|a| {
                a.get("slices")
                    .and_then(Value::as_array)
                    .is_some_and(|s| !s.is_empty())
            })
            .count()
            .max(1);
        if let Some((a, slice, adv, p)) = slices
            .filter_map(|(a, s)| Some((a, s, num(s, "advantage")?, num(s, "p_value_adjusted")?)))
            .filter(|x| x.3 * (searched as f64) < SIGNIFICANCE)
            .max_by(|x, y| x.2.total_cmp(&y.2))
            && adv > 0.1
        {
            out.push(Finding {
                level: "warn",
                text: format!(
                    "Membership could be inferred with {} balanced accuracy for the most exposed records ({}, by the {} attack): an attacker's advantage of {adv:.2} there (adjusted p {}: not a fluke of looking at many slices).",
                    percent(0.5 + adv / 2.0),
                    esc(name_of(slice)),
                    esc(name_of(a)),
                    match crate::commands::audit::p_value(p) {
                        small if small.starts_with('<') => small,
                        p => format!("= {p}"),
                    }
                ),
                evidence: "slices",
            });
        }
    }
    if let (Some(eps), Some(audit)) = (epsilon, &inputs.audit)
        && num(audit, "epsilon_lower_bound").is_none_or(|b| b <= eps)
        && let Some((best, auc)) = strongest(attacks(audit), "auc")
    {
        out.push(Finding {
            level: "info",
            text: format!(
                "The audit found nothing beyond the guarantee: the strongest attack ({}) reaches AUC {auc:.3}{}.",
                esc(name_of(best)),
                match num(audit, "epsilon_lower_bound") {
                    Some(b) => format!(", and the canaries prove only ε ≥ {b:.2} against the claimed {eps:.2}"),
                    None => String::new(),
                }
            ),
            evidence: "leakage",
        });
    }
    // The price of the guarantee, where a sweep trained at this ε and
    // without DP on the same data (the sweep's own runs, not this model,
    // which may have been trained on another split).
    if let Some(eps) = epsilon
        && let Some(summary) = inputs.sweep.as_ref().and_then(sweep_summary)
        && let Some((_, acc)) = summary
            .budgets
            .iter()
            .find(|(e, _)| (e - eps).abs() <= 1e-6 * eps.max(1.0))
    {
        out.push(Finding {
            level: "info",
            text: format!(
                "In the sweep, the guarantee at ε = {} costs {} points of accuracy: {} against {} without DP.",
                tick_label(eps),
                fmt_points((summary.baseline - acc).max(0.0)),
                percent(*acc),
                percent(summary.baseline)
            ),
            evidence: "sweep",
        });
    }
    if let Some(t) = training {
        if let (Some(delta), Some(n)) = (num(t, "delta"), num(t, "dataset_size"))
            && epsilon.is_some()
            && delta * n >= 0.1
        {
            out.push(Finding {
                level: "warn",
                text: format!(
                    "δ = {delta:e} is close to 1/N = {:e}: a mechanism may then publish a whole record with probability δ·N = {:.2}. Use δ well below 1/N.",
                    1.0 / n,
                    delta * n
                ),
                evidence: "guarantee",
            });
        }
        if t.get("secure") == Some(&Value::Bool(false)) && epsilon.is_some() {
            out.push(Finding {
                level: "warn",
                text: "The run was seeded: its noise is reproducible by anyone with the seed. Train the model you ship without --seed.".into(),
                evidence: "guarantee",
            });
        }
    }
    if let Some(rows) = inputs.compare.as_ref().and_then(Value::as_array)
        && let Some(best) = best_empirical_defence(rows)
    {
        out.push(Finding {
            level: "info",
            text: best,
            evidence: "defences",
        });
    }
    // Most serious first (the order within a level is the rules' order).
    out.sort_by_key(|f| match f.level {
        "alert" => 0,
        "warn" => 1,
        _ => 2,
    });
    out
}

fn fmt_points(drop: f64) -> String {
    format!("{:.1}", 100.0 * drop)
}

/// The smallest swept ε whose mean accuracy is within 2 points of the
/// non-private runs', and its accuracy drop.
/// What a sweep says about the price of DP: the non-private accuracy and
/// the mean accuracy at each swept ε (several seeds averaged), smallest ε
/// first.
struct SweepSummary {
    baseline: f64,
    budgets: Vec<(f64, f64)>,
}

fn sweep_summary(sweep: &Value) -> Option<SweepSummary> {
    let runs = sweep.get("runs")?.as_array()?;
    let mut by_eps: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut baseline = Vec::new();
    for r in runs {
        let Some(acc) = num(r, "test_accuracy") else {
            continue;
        };
        // A budget is a number; the non-private run's is "inf" (or null).
        match r.get("target_epsilon").and_then(Value::as_f64) {
            Some(e) => match by_eps.iter_mut().find(|(x, _)| *x == e) {
                Some((_, v)) => v.push(acc),
                None => by_eps.push((e, vec![acc])),
            },
            None => baseline.push(acc),
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    if baseline.is_empty() || by_eps.is_empty() {
        return None;
    }
    by_eps.sort_by(|a, b| a.0.total_cmp(&b.0));
    Some(SweepSummary {
        baseline: mean(&baseline),
        budgets: by_eps.iter().map(|(e, v)| (*e, mean(v))).collect(),
    })
}

/// The DP-SGD advice from a sweep: the smallest ε within 2 points of the
/// non-private accuracy, or, where none is, the largest ε swept and its
/// cost.
fn sweep_advice(inputs: &Inputs) -> Option<String> {
    let summary = sweep_summary(inputs.sweep.as_ref()?)?;
    let drop = |acc: f64| (summary.baseline - acc).max(0.0);
    if let Some((eps, acc)) = summary
        .budgets
        .iter()
        .find(|(_, acc)| summary.baseline - acc <= 0.02)
    {
        return Some(format!(
            "Recommended: DP-SGD at ε = {} (the sweep's smallest budget within 2 points of the non-private accuracy: {} points lost).",
            tick_label(*eps),
            fmt_points(drop(*acc))
        ));
    }
    let (eps, acc) = summary.budgets.last()?;
    Some(format!(
        "Recommended: DP-SGD, but no swept budget comes within 2 points of the non-private accuracy ({}): the largest, ε = {}, loses {} points. Sweep larger budgets, or tune the training (epochs, batch size, recipe) under DP, before choosing ε.",
        percent(summary.baseline),
        tick_label(*eps),
        fmt_points(drop(*acc))
    ))
}

/// The empirical (non-DP) defence with the lowest LiRA (or loss) AUC whose
/// accuracy is within 2 points of no defence, as a sentence.
fn best_empirical_defence(rows: &[Value]) -> Option<String> {
    let auc_of = |r: &Value| {
        attack(r, "lira-online")
            .or_else(|| attack(r, "loss"))
            .and_then(|a| num(a, "auc"))
    };
    let none = rows
        .iter()
        .find(|r| r.get("defence").and_then(Value::as_str) == Some("none"))?;
    let (base_acc, base_auc) = (num(none, "test_accuracy")?, auc_of(none)?);
    let best = rows
        .iter()
        .filter(|r| r.get("epsilon").is_none_or(Value::is_null))
        .filter(|r| r.get("defence").and_then(Value::as_str) != Some("none"))
        .filter(|r| num(r, "test_accuracy").is_some_and(|a| a >= base_acc - 0.02))
        .filter_map(|r| Some((r, auc_of(r)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let name = best.0.get("defence").and_then(Value::as_str)?;
    Some(format!(
        "Of the empirical defences that keep accuracy within 2 points, <code>{}</code> lowers the attack AUC most ({base_auc:.3} → {:.3}); none of them gives a guarantee — only DP-SGD does.",
        esc(name),
        best.1
    ))
}

/// One curve of a chart: its label, colour and points.
type Series = (String, &'static str, Vec<(f64, f64)>);

/// A line chart: `series` of (label, colour, points), axes labelled.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_axes: bool,
) -> String {
    chart(title, x_label, y_label, series, log_axes, true)
}

/// A chart of points (no lines between them).
fn scatter_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    chart(title, x_label, y_label, series, false, false)
}

fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_axes: bool,
    lines: bool,
) -> String {
    // A scatter's points are named in a legend column right of the plot
    // (labels beside clustered points would collide).
    let legend_w = if lines { 0.0 } else { 170.0 };
    let (w, h, m) = (460.0 + legend_w, 300.0, 46.0);
    let tx = |x: f64| if log_axes { x.max(1e-4).log10() } else { x };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|&(x, y)| (tx(x), tx(y))))
        .collect();
    if all.is_empty() {
        return String::new();
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if log_axes {
        (x0, y0, x1, y1) = (-4.0, -4.0, 0.0, 0.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| m + (x - x0) / (x1 - x0) * (w - legend_w - 1.5 * m);
    let py = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 1.8 * m);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" class="chart{wide}" role="img" aria-label="{t}"><text x="{cx}" y="16" class="title">{t}</text><line x1="{m}" y1="{b}" x2="{r}" y2="{b}" class="axis"/><line x1="{m}" y1="{b}" x2="{m}" y2="{top}" class="axis"/><text x="{cx}" y="{xl}" class="label">{xlab}</text><text x="12" y="{cy}" class="label" transform="rotate(-90 12 {cy})">{ylab}</text>"##,
        t = esc(title),
        wide = if lines { "" } else { " wide" },
        cx = (w - legend_w) / 2.0,
        b = h - m,
        r = w - legend_w - 0.5 * m,
        top = 0.8 * m,
        xl = h - 10.0,
        cy = h / 2.0,
        xlab = esc(x_label),
        ylab = esc(y_label),
    );
    let tick = |v: f64| tick_label(if log_axes { 10f64.powf(v) } else { v });
    for (v, is_x) in [(x0, true), (x1, true), (y0, false), (y1, false)] {
        if is_x {
            // The first x tick starts at the axis, the last ends there: a
            // long label never runs past the chart.
            let anchor = if v == x1 { "end" } else { "start" };
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="tick" text-anchor="{anchor}">{}</text>"#,
                px(v),
                h - m + 14.0,
                tick(v)
            );
        } else {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="tick" text-anchor="end">{}</text>"#,
                m - 4.0,
                py(v) + 4.0,
                tick(v)
            );
        }
    }
    for (i, (label, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(tx(x)), py(tx(y))))
            .collect();
        if lines {
            let _ = write!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
        }
        if lines {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="legend" fill="{colour}">{}</text>"#,
                m + 8.0,
                0.8 * m + 14.0 * (i as f64 + 1.0),
                esc(label)
            );
        } else {
            let (lx, ly) = (w - legend_w + 10.0, 0.8 * m + 16.0 * i as f64);
            let _ = write!(
                svg,
                r#"<circle cx="{lx}" cy="{ly}" r="3" fill="{colour}"/><text x="{}" y="{}" class="legend" fill="{colour}">{}</text>"#,
                lx + 8.0,
                ly + 4.0,
                esc(label)
            );
        }
        if points.len() <= 12 || !lines {
            for &(x, y) in points {
                let (cx, cy) = (px(tx(x)), py(tx(y)));
                let _ = write!(
                    svg,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}"/>"#,
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

const COLOURS: [&str; 10] = [
    "#1f5fbf", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#555555", "#17becf", "#b8860b",
    "#e377c2", "#000000",
];

/// An axis end as a person writes it: `300`, `0.05`, `1.5`, `0.0001`.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{v}");
    }
    if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        return format!("{:.0}", v.round());
    }
    // Two significant digits, without trailing zeros.
    let decimals = (1 - a.log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

fn roc_series(audit: &Value) -> Vec<Series> {
    audit
        .get("attacks")
        .and_then(Value::as_array)
        .map(|attacks| {
            attacks
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let points: Vec<(f64, f64)> = a
                        .get("roc")?
                        .as_array()?
                        .iter()
                        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                        .collect();
                    Some((
                        a.get("name")?.as_str()?.to_owned(),
                        COLOURS[i % COLOURS.len()],
                        points,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn row(cells: &[String]) -> String {
    let mut s = String::from("<tr>");
    for c in cells {
        let _ = write!(s, "<td>{c}</td>");
    }
    s.push_str("</tr>");
    s
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_owned(), f)
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}.finding{border-left:6px solid #999;padding:.5em .8em;margin:.5em 0;background:#fafafa}.alert{border-color:#c0392b;background:#fdecea}.warn{border-color:#e67e22;background:#fff4e5}.info{border-color:#2e86c1;background:#eef6fc}.chart{width:100%;max-width:460px;height:auto;display:inline-block;margin:.4em}.chart.wide{max-width:630px}.chart .axis{stroke:#333;stroke-width:1}.chart .title{font-size:13px;text-anchor:middle;font-weight:600}.chart .label{font-size:11px;text-anchor:middle}.chart .tick{font-size:10px}.chart .legend{font-size:11px}.muted{color:#666;font-size:.9em}img.grid{image-rendering:pixelated;width:100%;max-width:640px;border:1px solid #ccc}@media print{body{margin:0;max-width:none}h2{break-after:avoid}.chart,table,.finding{break-inside:avoid}}";

/// The page.
pub fn render(inputs: &Inputs) -> String {
    let mut body = String::new();
    let training = inputs.training();
    let dataset = inputs
        .audit
        .as_ref()
        .or(inputs.train.as_ref())
        .or(inputs.sweep.as_ref())
        .and_then(|v| v.get("dataset"))
        .and_then(Value::as_str)
        .unwrap_or("the training data");
    let _ = write!(
        body,
        "<h1>Privacy report</h1><p class=\"muted\">Model trained on <b>{}</b>. Every figure below is read from the JSON reports listed at the end.</p>",
        esc(dataset)
    );
    // Findings first.
    body.push_str("<h2 id=\"findings\">Findings and recommendations</h2>");
    let found = findings(inputs);
    if found.is_empty() {
        body.push_str("<p>No rule fired on these reports (see docs/report.md for the rules).</p>");
    }
    for f in &found {
        let _ = write!(
            body,
            "<div class=\"finding {}\">{} <a href=\"#{}\">evidence</a></div>",
            f.level, f.text, f.evidence
        );
    }
    if let Some(t) = training {
        body.push_str(&guarantee_section(t));
        body.push_str(&budget_section(t));
    }
    if let Some(s) = &inputs.sweep {
        body.push_str(&sweep_section(s));
    }
    if let Some(a) = &inputs.audit {
        body.push_str(&leakage_section(a, inputs.inversion_png.as_deref()));
    }
    if let Some(c) = &inputs.compare {
        body.push_str(&compare_section(c));
    }
    body.push_str("<h2 id=\"sources\">Sources</h2><ul>");
    for s in &inputs.sources {
        let _ = write!(body, "<li><code>{}</code></li>", esc(s));
    }
    body.push_str("</ul>");
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Privacy report — {}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        esc(dataset)
    )
}

fn guarantee_section(t: &Value) -> String {
    let mut s = String::from("<h2 id=\"guarantee\">The guarantee</h2>");
    match num(t, "epsilon") {
        Some(eps) => {
            let _ = write!(
                s,
                "<p>The model was trained with <b>DP-SGD</b>: for any one person's record, the chance of any outcome of training changes by at most a factor <b>e<sup>ε</sup> = {:.2}</b> (ε = {eps:.3}) whether or not the record was used, except with probability δ = {}. This bounds what anyone can learn about a single record from the model — any attack, any number of queries.</p>",
                eps.exp(),
                opt(num(t, "delta"), |d| format!("{d:e}"))
            );
            s.push_str("<table>");
            for (k, v) in [
                (
                    "ε (privacy loss)",
                    opt(num(t, "epsilon"), |e| format!("{e:.3}")),
                ),
                ("δ", opt(num(t, "delta"), |d| format!("{d:e}"))),
                (
                    "accountant",
                    t.get("accountant")
                        .and_then(Value::as_str)
                        .unwrap_or("—")
                        .to_owned(),
                ),
                (
                    "noise multiplier σ",
                    opt(num(t, "noise_multiplier"), |x| format!("{x:.3}")),
                ),
                (
                    "sampling rate q",
                    opt(num(t, "sample_rate"), |x| format!("{x:.4}")),
                ),
                ("steps", opt(num(t, "steps"), |x| format!("{x:.0}"))),
                (
                    "training records N",
                    opt(num(t, "dataset_size"), |x| format!("{x:.0}")),
                ),
                ("test accuracy", opt(num(t, "test_accuracy"), percent)),
            ] {
                s.push_str(&row(&[k.to_owned(), v]));
            }
            s.push_str("</table>");
        }
        None => {
            s.push_str("<p><b>No guarantee.</b> This model was trained without differential privacy: nothing bounds what it reveals about individual training records. The measured leakage below is all there is to go on.</p>");
        }
    }
    s.push_str("<p><b>What the guarantee does not cover</b>:</p><ul>");
    let preprocessing = t
        .get("preprocessing")
        .map(|p| p.to_string())
        .unwrap_or_else(|| "not recorded in this report".into());
    let _ = write!(
        s,
        "<li>data preparation before training (scaling, vocabulary, feature ranges) unless it used public information only — here: <code>{}</code>;</li><li>figures computed on the private data outside the mechanism: training accuracy ({}), final loss and the loss-threshold attack of the training report are exact statistics, not protected by ε;</li><li>the test set, hyper-parameter choices and repeated runs on the same data (each run spends its own ε);</li><li>{}</li></ul>",
        esc(&preprocessing),
        opt(
            t.get("not_covered_by_epsilon")
                .and_then(|n| num(n, "train_accuracy")),
            percent
        ),
        if t.get("secure") == Some(&Value::Bool(false)) {
            "the run was <b>seeded</b>: its noise can be regenerated from the seed, which voids the guarantee against anyone who has it."
        } else {
            "the noise came from the operating system's CSPRNG (not seeded)."
        }
    );
    s
}

fn budget_section(t: &Value) -> String {
    let history = t
        .get("not_covered_by_epsilon")
        .and_then(|n| n.get("epoch_history"))
        .and_then(Value::as_array);
    let points: Vec<(f64, f64)> = history
        .map(|h| {
            h.iter()
                .filter_map(|r| Some((num(r, "epoch")?, num(r, "epsilon")?)))
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        return String::new();
    }
    format!(
        "<h2 id=\"budget\">ε spent over training</h2><p>Privacy loss accumulates with every step; this is the accountant's ε after each epoch.</p>{}",
        line_chart(
            "ε after each epoch",
            "epoch",
            "ε",
            &[("ε".into(), COLOURS[0], points)],
            false
        )
    )
}

fn sweep_section(sweep: &Value) -> String {
    let runs = sweep.get("runs").and_then(Value::as_array);
    let mut rows: Vec<(f64, f64, Option<f64>)> = runs
        .map(|r| {
            r.iter()
                .filter_map(|run| {
                    let eps = run.get("target_epsilon")?.as_f64()?;
                    let lira = attack(run, "lira-online")
                        .or_else(|| attack(run, "loss"))
                        .and_then(|a| num(a, "auc"));
                    Some((eps, num(run, "test_accuracy")?, lira))
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<h2 id=\"sweep\">Accuracy against ε</h2><p>Smaller ε means a stronger guarantee and, usually, lower accuracy; the attack's AUC shows the leakage measured at each budget (0.5: none).</p>",
    );
    s.push_str(&line_chart(
        "test accuracy vs ε",
        "ε",
        "test accuracy",
        &[(
            "accuracy".into(),
            COLOURS[0],
            rows.iter().map(|r| (r.0, r.1)).collect(),
        )],
        false,
    ));
    s.push_str("<table><tr><th>ε</th><th>test accuracy</th><th>attack AUC</th></tr>");
    for (e, acc, auc) in &rows {
        s.push_str(&row(&[
            tick_label(*e),
            percent(*acc),
            opt(*auc, |a| format!("{a:.3}")),
        ]));
    }
    // The non-private runs, for the price of the guarantee.
    for run in runs
        .into_iter()
        .flatten()
        .filter(|r| r.get("target_epsilon").and_then(Value::as_f64).is_none())
    {
        s.push_str(&row(&[
            "∞ (no DP)".into(),
            opt(num(run, "test_accuracy"), percent),
            opt(
                attack(run, "lira-online")
                    .or_else(|| attack(run, "loss"))
                    .and_then(|a| num(a, "auc")),
                |a| format!("{a:.3}"),
            ),
        ]));
    }
    s.push_str("</table>");
    s
}

fn leakage_section(audit: &Value, png: Option<&[u8]>) -> String {
    let mut s = String::from(
        "<h2 id=\"leakage\">Measured leakage</h2><p>Membership-inference attacks try to tell training records (members) from unseen ones. AUC 0.5 is guessing; the true-positive rate at a 0.1% false-positive rate shows whether a few records are identifiable with confidence (chance: 0.1%).</p><table><tr><th>attack</th><th>AUC</th><th>95% interval</th><th>TPR at 1% FPR</th><th>TPR at 0.1% FPR</th><th>advantage</th></tr>",
    );
    for a in attacks(audit) {
        let interval = a
            .get("auc_interval")
            .and_then(|i| Some(format!("[{:.3}, {:.3}]", num(i, "low")?, num(i, "high")?)))
            .unwrap_or_else(|| "—".into());
        s.push_str(&row(&[
            esc(a.get("name").and_then(Value::as_str).unwrap_or("?")),
            opt(num(a, "auc"), |x| format!("{x:.3}")),
            interval,
            opt(num(a, "tpr_at_fpr_0_01"), percent),
            opt(num(a, "tpr_at_fpr_0_001"), percent),
            opt(num(a, "advantage"), |x| format!("{x:.3}")),
        ]));
    }
    s.push_str("</table>");
    let series = roc_series(audit);
    s.push_str(&line_chart(
        "ROC (linear)",
        "false-positive rate",
        "true-positive rate",
        &series,
        false,
    ));
    s.push_str(&line_chart(
        "ROC (log-log)",
        "false-positive rate",
        "true-positive rate",
        &series,
        true,
    ));
    if let Some(c) = audit.get("canary_audit").filter(|c| !c.is_null()) {
        let _ = write!(
            s,
            "<p><b>Audited ε lower bound</b> (canaries): ε ≥ <b>{}</b>, {}</p>",
            opt(
                num(c, "one_run").or_else(|| c.get("one_run").and_then(|o| num(o, "epsilon"))),
                |x| format!("{x:.3}")
            ),
            match num(c, "claimed_epsilon") {
                Some(claimed) => format!(
                    "against the claimed ε = {claimed:.3}. A lower bound above the claim would prove the guarantee false."
                ),
                None => "with no claim to test: the model was trained without DP. The bound is how much leakage the audit proves.".into(),
            }
        );
    }
    s.push_str("<h3 id=\"slices\">Most exposed records</h3><p>Each attack's three most exposed slices (a class, or a range of the records' losses). The adjusted p-value is the chance of an advantage this large on a slice this size if the attack could not tell members from non-members, corrected for the number of slices looked at: above 5%, the slice's figure may be noise.</p><table><tr><th>attack</th><th>slice</th><th>members / non-members</th><th>AUC</th><th>advantage</th><th>adjusted p</th></tr>");
    for a in attacks(audit) {
        for slice in a
            .get("slices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .take(3)
        {
            let counts = slice.get("counts").and_then(Value::as_array).map_or_else(
                || "—".into(),
                |c| {
                    c.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" / ")
                },
            );
            s.push_str(&row(&[
                esc(name_of(a)),
                esc(name_of(slice)),
                counts,
                opt(num(slice, "auc"), |x| format!("{x:.3}")),
                opt(num(slice, "advantage"), |x| format!("{x:.3}")),
                opt(
                    num(slice, "p_value_adjusted"),
                    crate::commands::audit::p_value,
                ),
            ]));
        }
    }
    s.push_str("</table>");
    if let Some(inv) = audit.get("inversion").filter(|i| !i.is_null()) {
        let _ = write!(
            s,
            "<h3 id=\"inversion\">Model inversion</h3><p>Reconstructions of one input per class from the model. An independent classifier recognises {} of them; their distance to the nearest training record over the nearest unseen one is {} (below 1: closer to the training data).</p>",
            opt(num(inv, "independent_accuracy"), percent),
            opt(num(inv, "mean_distance_ratio"), |x| format!("{x:.3}"))
        );
        if let Some(png) = png {
            let _ = write!(
                s,
                "<img class=\"grid\" alt=\"model inversion reconstructions\" src=\"data:image/png;base64,{}\">",
                base64::engine::general_purpose::STANDARD.encode(png)
            );
        }
    }
    s
}

fn compare_section(compare: &Value) -> String {
    let mut s = String::from(
        "<h2 id=\"defences\">Defences compared</h2><p>The same model trained with each defence on the same split and attacked the same way. Only DP-SGD (rows with an ε) comes with a guarantee.</p><table><tr><th>defence</th><th>test accuracy</th><th>ε</th><th>attack</th><th>AUC</th><th>TPR at 0.1% FPR</th></tr>",
    );
    let mut points = Vec::new();
    for r in compare.as_array().into_iter().flatten() {
        let name = r.get("defence").and_then(Value::as_str).unwrap_or("?");
        let best = attack(r, "lira-online").or_else(|| attack(r, "loss"));
        s.push_str(&row(&[
            format!("<code>{}</code>", esc(name)),
            opt(num(r, "test_accuracy"), percent),
            opt(num(r, "epsilon"), |e| format!("{e:.2}")),
            esc(best
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("—")),
            opt(best.and_then(|a| num(a, "auc")), |x| format!("{x:.3}")),
            opt(best.and_then(|a| num(a, "tpr_at_fpr_0_001")), percent),
        ]));
        if let (Some(auc), Some(acc)) = (best.and_then(|a| num(a, "auc")), num(r, "test_accuracy"))
        {
            points.push((
                name.to_owned(),
                COLOURS[points.len() % COLOURS.len()],
                vec![(auc, acc)],
            ));
        }
    }
    s.push_str("</table>");
    s.push_str(&scatter_chart(
        "accuracy against attack AUC (one point per defence)",
        "attack AUC",
        "test accuracy",
        &points,
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn audit(epsilon: Option<f64>, bound: Option<f64>, loss_auc: f64, lira: (f64, f64)) -> Value {
        json!({
            "attacks": [
                {"name": "loss", "auc": loss_auc, "tpr_at_fpr_0_001": 0.001, "slices": []},
                {"name": "lira-online", "auc": lira.0, "tpr_at_fpr_0_001": lira.1, "slices": []}
            ],
            "epsilon_lower_bound": bound,
            "canary_audit": epsilon.map(|e| json!({"claimed_epsilon": e})),
            "target": {"epsilon": epsilon, "delta": 1e-5, "dataset_size": 1000.0, "secure": true,
                        "not_covered_by_epsilon": {}},
        })
    }

    fn levels(inputs: &Inputs) -> Vec<(&'static str, String)> {
        findings(inputs)
            .into_iter()
            .map(|f| (f.level, f.text))
            .collect()
    }

    fn with_audit(a: Value) -> Inputs {
        let mut i = Inputs::default();
        i.add(a, "test").unwrap();
        i
    }

    #[test]
    fn a_lower_bound_above_the_claim_is_an_alert_and_a_close_one_is_tight() {
        let found = levels(&with_audit(audit(Some(2.0), Some(2.5), 0.5, (0.5, 0.001))));
        assert!(
            found[0].0 == "alert" && found[0].1.contains("PROVES"),
            "{found:?}"
        );
        let found = levels(&with_audit(audit(Some(2.0), Some(1.2), 0.5, (0.5, 0.001))));
        assert!(
            found.iter().any(|f| f.0 == "info" && f.1.contains("tight")),
            "{found:?}"
        );
        // A loose bound is neither: the audit only agrees with the claim.
        let found = levels(&with_audit(audit(Some(2.0), Some(0.3), 0.5, (0.5, 0.001))));
        assert!(
            found.len() == 1 && found[0].1.contains("nothing beyond the guarantee"),
            "{found:?}"
        );
    }

    #[test]
    fn dp_is_recommended_only_without_dp_and_with_measurable_leakage() {
        let leaky = levels(&with_audit(audit(None, None, 0.60, (0.5, 0.001))));
        assert!(
            leaky
                .iter()
                .any(|f| f.1.contains("Recommended: train with DP-SGD"))
        );
        let mild = levels(&with_audit(audit(None, None, 0.53, (0.52, 0.001))));
        assert!(
            mild.iter().all(|f| !f.1.contains("Recommended")),
            "{mild:?}"
        );
        let private = levels(&with_audit(audit(Some(1.0), None, 0.60, (0.5, 0.001))));
        assert!(
            private.iter().all(|f| !f.1.contains("Recommended")),
            "{private:?}"
        );
    }

    #[test]
    fn the_sweep_picks_the_smallest_budget_within_two_points() {
        let mut inputs = with_audit(audit(None, None, 0.60, (0.5, 0.001)));
        inputs
            .add(
                json!({"runs": [
                    {"target_epsilon": "inf", "test_accuracy": 0.95},
                    {"target_epsilon": 1.0, "test_accuracy": 0.90},
                    {"target_epsilon": 4.0, "test_accuracy": 0.94},
                    {"target_epsilon": 8.0, "test_accuracy": 0.95}
                ]}),
                "sweep",
            )
            .unwrap();
        let found = levels(&inputs);
        assert!(
            found.iter().any(|f| f.1.contains("DP-SGD at ε = 4")),
            "{found:?}"
        );
    }

    /// No swept budget within 2 points: the advice names the largest one
    /// and its cost instead of asking for a sweep that is already there.
    #[test]
    fn a_sweep_with_no_affordable_budget_says_so() {
        let mut inputs = with_audit(audit(None, None, 0.60, (0.5, 0.001)));
        let sweep = json!({"runs": [
            {"target_epsilon": "inf", "test_accuracy": 0.97},
            {"target_epsilon": 1.0, "test_accuracy": 0.50},
            {"target_epsilon": 8.0, "test_accuracy": 0.80},
            {"target_epsilon": 8.0, "test_accuracy": 0.84}
        ]});
        inputs.add(sweep.clone(), "sweep").unwrap();
        let found = levels(&inputs);
        assert!(
            found
                .iter()
                .any(|f| f.1.contains("the largest, ε = 8, loses 15.0 points")),
            "{found:?}"
        );
        assert!(found.iter().all(|f| !f.1.contains("run <code>dpsgd sweep")));
        // Under DP at a swept ε, the sweep's price of the guarantee, and
        // the audit's agreement with it; the seeded-run warning comes first.
        let mut a = audit(Some(1.0), Some(0.2), 0.52, (0.51, 0.001));
        a["target"]["secure"] = json!(false);
        let mut inputs = with_audit(a);
        inputs.add(sweep, "sweep").unwrap();
        let found = levels(&inputs);
        assert_eq!(found[0].0, "warn", "{found:?}");
        assert!(
            found.iter().any(|f| f
                .1
                .contains("at ε = 1 costs 47.0 points of accuracy: 50.00% against 97.00%")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.1.contains("found nothing beyond the guarantee")
                    && f.1.contains("ε ≥ 0.20 against the claimed 1.00")),
            "{found:?}"
        );
    }

    #[test]
    fn averages_hiding_records_and_a_large_delta_are_warned() {
        let found = levels(&with_audit(audit(None, None, 0.52, (0.55, 0.02))));
        assert!(
            found.iter().any(|f| f.0 == "warn" && f.1.contains("20×")),
            "{found:?}"
        );
        let mut a = audit(Some(1.0), None, 0.5, (0.5, 0.001));
        a["target"]["delta"] = json!(5e-4);
        let found = levels(&with_audit(a));
        assert!(
            found.iter().any(|f| f.1.contains("close to 1/N")),
            "{found:?}"
        );
    }

    /// The strongest attack is the evidence: a weak loss attack must not
    /// hide a strong LiRA (and offline LiRA counts as LiRA).
    #[test]
    fn the_strongest_attack_decides() {
        let mut a = audit(None, None, 0.53, (0.52, 0.001));
        a["attacks"][1]["name"] = json!("lira-offline");
        a["attacks"][1]["auc"] = json!(0.61);
        let found = levels(&with_audit(a));
        assert!(
            found
                .iter()
                .any(|f| f.0 == "alert" && f.1.contains("lira-offline attack's AUC is 0.610")),
            "{found:?}"
        );
    }

    /// A slice is a finding only when its exposure survives the correction
    /// for looking at many slices; then the most exposed such slice, over
    /// every attack, is named.
    #[test]
    fn only_a_significant_slice_is_a_finding() {
        let slice = |name: &str, adv: f64, p: f64| json!({"name": name, "advantage": adv, "auc": 0.6, "counts": [50, 50], "p_value_adjusted": p});
        let mut a = audit(Some(1.0), None, 0.5, (0.5, 0.001));
        a["attacks"][0]["slices"] = json!([slice("class 7", 0.3, 0.4)]);
        let found = levels(&with_audit(a.clone()));
        assert!(found.iter().all(|f| !f.1.contains("class 7")), "{found:?}");
        a["attacks"][1]["slices"] =
            json!([slice("class 2", 0.25, 0.001), slice("class 3", 0.2, 0.01)]);
        let found = levels(&with_audit(a.clone()));
        assert!(
            found
                .iter()
                .any(|f| f.1.contains("class 2, by the lira-online attack")
                    && f.1.contains("62.50%")),
            "{found:?}"
        );
        // Two attacks searched: 0.03 < 0.05 is not enough (0.05 / 2).
        a["attacks"][1]["slices"] = json!([slice("class 2", 0.25, 0.03)]);
        let found = levels(&with_audit(a.clone()));
        assert!(found.iter().all(|f| !f.1.contains("class 2")), "{found:?}");
        // Reports from before the p-values: no claim of exposure.
        a["attacks"][1]["slices"] = json!([{"name": "class 2", "advantage": 0.4}]);
        let found = levels(&with_audit(a));
        assert!(found.iter().all(|f| !f.1.contains("class 2")), "{found:?}");
    }

    #[test]
    fn axis_ends_read_like_numbers() {
        for (v, want) in [
            (300.0, "300"),
            (1.0, "1"),
            (0.05, "0.05"),
            (0.0001, "0.0001"),
            (10f64.powf(-4.0), "0.0001"),
            (0.5, "0.5"),
            (1.26, "1.3"),
            (12.6, "13"),
            (0.0, "0"),
            (0.123, "0.12"),
        ] {
            assert_eq!(tick_label(v), want, "{v}");
        }
    }

    #[test]
    fn text_from_the_reports_is_escaped() {
        let mut a = audit(None, None, 0.5, (0.5, 0.001));
        a["dataset"] = json!("<script>alert(1)</script>");
        let page = render(&with_audit(a));
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
    }

    #[test]
    fn unknown_documents_are_refused() {
        let mut i = Inputs::default();
        assert!(i.add(json!({"hello": 1}), "x.json").is_err());
        assert!(i.is_empty());
    }
}
