//! The privacy report as one self-contained HTML page (inline CSS and SVG,
//! no script, no network), for a reader who knows no DP. Every number on
//! the page is read from the JSON reports of `train`, `audit`, `sweep` and
//! `compare`; the page never recomputes a privacy figure, so it cannot
//! disagree with them.

use serde_json::Value;
use std::fmt::Write as _;

mod charts;
mod findings;
mod sections;

pub use findings::findings;
use sections::{
    budget_section, compare_section, guarantee_section, leakage_section, sweep_section,
};

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

    /// How the data were prepared: a train report records it; an audit or
    /// a sweep records it beside its runs.
    fn preprocessing(&self) -> Option<&Value> {
        self.training()
            .and_then(|t| t.get("preprocessing"))
            .or_else(|| self.audit.as_ref()?.get("preprocessing"))
            .or_else(|| self.sweep.as_ref()?.get("preprocessing"))
            .filter(|p| !p.is_null())
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

/// `s` as HTML text, safe in an element and in a quoted attribute value:
/// `& < > " '` escaped. Every string read from a report goes through it.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
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

/// A table row of text cells (escaped here: a cell may hold report text).
fn row(cells: &[String]) -> String {
    let escaped: Vec<String> = cells.iter().map(|c| esc(c)).collect();
    row_html(&escaped)
}

/// A table row of cells that are already HTML (markup built by the page,
/// with any report text in them escaped by the caller).
fn row_html(cells: &[String]) -> String {
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
        body.push_str(&guarantee_section(t, inputs.preprocessing()));
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

#[cfg(test)]
pub(super) mod tests {
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

    #[test]
    fn unknown_documents_are_refused() {
        let mut i = Inputs::default();
        assert!(i.add(json!({"hello": 1}), "x.json").is_err());
        assert!(i.is_empty());
    }
}
