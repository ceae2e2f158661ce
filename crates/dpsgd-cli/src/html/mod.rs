//! The privacy report as one self-contained HTML page (inline CSS and SVG,
//! no script, no network), for a reader who knows no DP. Every number on
//! the page is read from the JSON reports of `train`, `audit`, `sweep` and
//! `compare`; the page never recomputes a privacy figure, so it cannot
//! disagree with them.

use crate::output::files::write_atomically;
use crate::output::format::percent;
use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

mod charts;
mod findings;
mod privacy;
mod sections;

pub use findings::findings;
use privacy::Privacy;
use sections::{
    budget_section, compare_section, guarantee_section, leakage_section, sweep_section,
};

/// One report and the file it came from.
#[derive(Debug, Clone)]
pub struct Report {
    /// The document.
    pub value: Value,
    /// Where it came from (a path, or the command that wrote it).
    pub source: String,
    /// The inversion grid found beside an audit report (PNG bytes).
    pub inversion_png: Option<Vec<u8>>,
}

/// The reports a page is built from: every one given is shown.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `train` reports.
    pub train: Vec<Report>,
    /// `audit` reports.
    pub audit: Vec<Report>,
    /// `sweep.json`s.
    pub sweep: Vec<Report>,
    /// `compare.json`s.
    pub compare: Vec<Report>,
    /// Where each came from, for the page's sources section.
    pub sources: Vec<String>,
}

/// A trained model the page states the guarantee of: a train report, or
/// an audit's target.
pub(crate) struct Training<'a> {
    /// The report.
    pub value: &'a Value,
    /// Its privacy, read strictly.
    pub privacy: Privacy,
    /// Which report it is, for a page with several.
    pub label: String,
    /// How its data were prepared.
    pub preprocessing: Option<&'a Value>,
}

impl Inputs {
    /// Files an input by its content: an audit report (`attacks` and
    /// `target`), a sweep (`runs`), a comparison (a list of rows with
    /// `defence`), or a training report (`not_covered_by_epsilon`); then
    /// checks its privacy fields (see [`privacy`]). Returns the kind.
    ///
    /// # Errors
    ///
    /// A document of none of these kinds, or one whose ε, δ or budgets
    /// cannot be read, naming the source and the field.
    pub fn add(&mut self, v: Value, source: &str) -> Result<&'static str, String> {
        let kind = if v.get("attacks").is_some() && v.get("target").is_some() {
            "audit"
        } else if v.get("runs").is_some_and(Value::is_array) {
            "sweep"
        } else if v
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r.get("defence").is_some()))
        {
            "compare"
        } else if v.get("not_covered_by_epsilon").is_some() {
            "train"
        } else {
            return Err(format!(
                "{source}: not a report of dpsgd train, audit, sweep or compare"
            ));
        };
        privacy::check(kind, &v)
            .map_err(|why| format!("{source}: {why}: no guarantee can be read from this report"))?;
        let report = Report {
            value: v,
            source: source.to_owned(),
            inversion_png: None,
        };
        match kind {
            "audit" => self.audit.push(report),
            "sweep" => self.sweep.push(report),
            "compare" => self.compare.push(report),
            _ => self.train.push(report),
        }
        self.sources.push(format!("{source} ({kind})"));
        Ok(kind)
    }

    /// Attaches an inversion grid to the last audit added (the one beside
    /// it); ignored without one.
    pub fn attach_inversion(&mut self, png: Vec<u8>) {
        if let Some(a) = self.audit.last_mut() {
            a.inversion_png = Some(png);
        }
    }

    /// The trained models: every train report, then every audit's target,
    /// each with how its data were prepared (an audit records it beside
    /// its target).
    pub(crate) fn trainings(&self) -> Vec<Training<'_>> {
        fn of(t: &Report) -> Training<'_> {
            Training {
                value: &t.value,
                privacy: privacy::training(&t.value, ""),
                label: t.source.clone(),
                preprocessing: t.value.get("preprocessing").filter(|p| !p.is_null()),
            }
        }
        fn audited(a: &Report) -> Training<'_> {
            let target = &a.value["target"];
            Training {
                value: target,
                privacy: privacy::training(target, "target."),
                label: format!("{} (the audited model)", a.source),
                preprocessing: target
                    .get("preprocessing")
                    .or_else(|| a.value.get("preprocessing"))
                    .filter(|p| !p.is_null()),
            }
        }
        self.train
            .iter()
            .map(of)
            .chain(self.audit.iter().map(audited))
            .collect()
    }

    /// Whether anything is there to report.
    pub fn is_empty(&self) -> bool {
        self.train.is_empty()
            && self.audit.is_empty()
            && self.sweep.is_empty()
            && self.compare.is_empty()
    }
}

/// The id of the `i`-th section of a kind: `base`, then `base-2`, …
pub(crate) fn section_id(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_owned()
    } else {
        format!("{base}-{}", i + 1)
    }
}

/// A heading's suffix naming the report, where a page has several of a
/// kind (escaped).
pub(crate) fn heading_label(label: &str, several: bool) -> String {
    if several {
        format!(" — <code>{}</code>", esc(label))
    } else {
        String::new()
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
    pub evidence: String,
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// `s` as HTML text, safe in an element and in a quoted attribute value:
/// `& < > " '` escaped, and control characters and bidirectional
/// overrides (which can make the text after them read reversed, e.g. a
/// figure) shown as U+FFFD. Every string read from a report goes through
/// it.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() || is_bidi_control(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The characters that embed, override or isolate a direction of text.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
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
