//! The privacy report as one self-contained HTML page (inline CSS and SVG,
//! no script, no network), for a reader who knows no DP. Every number on
//! the page is read from the JSON reports of `train`, `audit`, `sweep` and
//! `compare`; the page never recomputes a privacy figure, so it cannot
//! disagree with them.

use crate::output::files::write_atomically;
use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

mod charts;
mod findings;
mod inputs;
mod privacy;
mod sections;
mod text;

pub use findings::findings;
pub use inputs::Inputs;
use sections::{
    budget_section, compare_section, guarantee_section, leakage_section, sweep_section,
};
use text::esc;

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}.finding{border-left:6px solid #999;padding:.5em .8em;margin:.5em 0;background:#fafafa}.alert{border-color:#c0392b;background:#fdecea}.warn{border-color:#e67e22;background:#fff4e5}.info{border-color:#2e86c1;background:#eef6fc}.chart{width:100%;max-width:460px;height:auto;display:inline-block;margin:.4em}.chart.wide{max-width:630px}.chart .axis{stroke:#333;stroke-width:1}.chart .title{font-size:13px;text-anchor:middle;font-weight:600}.chart .label{font-size:11px;text-anchor:middle}.chart .tick{font-size:10px}.chart .legend{font-size:11px}.muted{color:#666;font-size:.9em}img.grid{image-rendering:pixelated;width:100%;max-width:640px;border:1px solid #ccc}@media print{body{margin:0;max-width:none}h2{break-after:avoid}.chart,table,.finding{break-inside:avoid}}";

/// The page.
pub fn render(inputs: &Inputs) -> String {
    let mut body = String::new();
    let trainings = inputs.trainings();
    let mut datasets: Vec<&str> = Vec::new();
    for r in inputs
        .audit
        .iter()
        .chain(&inputs.train)
        .chain(&inputs.sweep)
    {
        if let Some(d) = r.value.get("dataset").and_then(Value::as_str)
            && !datasets.contains(&d)
        {
            datasets.push(d);
        }
    }
    let dataset = if datasets.is_empty() {
        "the training data".to_owned()
    } else {
        datasets.join(", ")
    };
    let _ = write!(
        body,
        "<h1>Privacy report</h1><p class=\"muted\">{} on <b>{}</b>. Every figure below is read from the JSON reports listed at the end.</p>",
        if trainings.len() > 1 {
            "Models trained"
        } else {
            "Model trained"
        },
        esc(&dataset)
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
            f.level,
            f.text,
            esc(&f.evidence)
        );
    }
    let several = trainings.len() > 1;
    for (i, t) in trainings.iter().enumerate() {
        body.push_str(&guarantee_section(t, i, several));
        body.push_str(&budget_section(t, i, several));
    }
    for (i, s) in inputs.sweep.iter().enumerate() {
        body.push_str(&sweep_section(s, i, inputs.sweep.len() > 1));
    }
    for (i, a) in inputs.audit.iter().enumerate() {
        body.push_str(&leakage_section(a, i, inputs.audit.len() > 1));
    }
    for (i, c) in inputs.compare.iter().enumerate() {
        body.push_str(&compare_section(c, i, inputs.compare.len() > 1));
    }
    body.push_str("<h2 id=\"sources\">Sources</h2><ul>");
    for s in &inputs.sources {
        let _ = write!(body, "<li><code>{}</code></li>", esc(s));
    }
    body.push_str("</ul>");
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Privacy report — {}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        esc(&dataset)
    )
}

/// Writes the page for `inputs` to `path`.
///
/// # Errors
///
/// An unwritable path.
pub fn write_page(inputs: &Inputs, path: &Path) -> Result<()> {
    write_atomically(path, &render(inputs))
}

/// The page of one command's own JSON (`--html` of train, audit, sweep and
/// compare), with the inversion grid when there is one.
///
/// # Errors
///
/// A JSON of no known kind (a bug), or an unwritable path.
pub fn write_html_of(
    json: &serde_json::Value,
    source: &str,
    png: Option<&Path>,
    path: &Path,
) -> Result<()> {
    let mut inputs = Inputs::default();
    inputs
        .add(json.clone(), source)
        .map_err(anyhow::Error::msg)?;
    if let Some(png) = png.filter(|p| p.is_file()) {
        inputs.attach_inversion(
            std::fs::read(png).with_context(|| format!("reading {}", png.display()))?,
        );
    }
    write_page(&inputs, path)
}

#[cfg(test)]
pub(super) mod tests {
    use super::inputs::*;
    use super::text::*;
    use super::*;
    use serde_json::json;

    pub(super) fn audit(
        epsilon: Option<f64>,
        bound: Option<f64>,
        loss_auc: f64,
        lira: (f64, f64),
    ) -> Value {
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

    pub(super) fn levels(inputs: &Inputs) -> Vec<(&'static str, String)> {
        findings(inputs)
            .into_iter()
            .map(|f| (f.level, f.text))
            .collect()
    }

    pub(super) fn with_audit(a: Value) -> Inputs {
        let mut i = Inputs::default();
        i.add(a, "test").unwrap();
        i
    }

    #[test]
    fn text_from_the_reports_is_escaped() {
        let mut a = audit(None, None, 0.5, (0.5, 0.001));
        a["dataset"] = json!("<script>alert(1)</script>");
        let page = render(&with_audit(a));
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
    }

    /// A row's cells are text; markup goes only through `row_html`.
    #[test]
    fn row_cells_are_escaped() {
        let cell = "</td><script>alert(1)</script>\"'&".to_owned();
        assert_eq!(
            row(&[cell]),
            "<tr><td>&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;</td></tr>"
        );
        assert_eq!(
            row_html(&["<code>x</code>".to_owned()]),
            "<tr><td><code>x</code></td></tr>"
        );
    }

    /// Control characters and direction overrides cannot reorder or hide
    /// what follows them.
    #[test]
    fn control_and_direction_characters_are_replaced() {
        assert_eq!(
            esc("a\u{202E}b\u{2066}c\u{0}d\u{7}e\u{9b}f\tg"),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f\tg"
        );
        assert_eq!(esc("مرحبا שלום ε"), "مرحبا שלום ε");
    }

    /// A training report whose ε cannot be read, given to the page without
    /// the load-time check (as a library caller could): no guarantee and
    /// no "trained without DP" — the page says no guarantee can be read.
    #[test]
    fn an_unreadable_epsilon_is_never_a_guarantee_nor_no_dp() {
        for eps in [json!(-5), json!("NaN"), json!("inf"), json!(true)] {
            let mut t = audit(Some(1.0), None, 0.6, (0.5, 0.001))["target"].clone();
            t["epsilon"] = eps.clone();
            let mut missing = t.clone();
            missing.as_object_mut().unwrap().remove("epsilon");
            for t in [t, missing] {
                let inputs = Inputs {
                    train: vec![Report {
                        value: t,
                        source: "t.json".into(),
                        inversion_png: None,
                    }],
                    ..Inputs::default()
                };
                let page = render(&inputs);
                assert!(
                    page.contains("ε missing/invalid — no guarantee can be read from this report"),
                    "{eps}: {page}"
                );
                for claim in [
                    "DP-SGD</b>",
                    "No guarantee.",
                    "trained without differential privacy",
                    "e<sup>ε</sup>",
                ] {
                    assert!(!page.contains(claim), "{eps}: `{claim}` in {page}");
                }
            }
        }
    }

    #[test]
    fn unknown_documents_are_refused() {
        let mut i = Inputs::default();
        assert!(i.add(json!({"hello": 1}), "x.json").is_err());
        assert!(i.is_empty());
    }
}
