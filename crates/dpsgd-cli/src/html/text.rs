//! Reading the reports' JSON (numbers, attacks by name) and writing HTML
//! text (escaping, table rows, section ids), shared by every part of the
//! page.

use serde_json::Value;
use std::fmt::Write as _;

/// The id of the `i`-th section of a kind: `base`, then `base-2`, …
pub(super) fn section_id(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_owned()
    } else {
        format!("{base}-{}", i + 1)
    }
}

/// A heading's suffix naming the report, where a page has several of a
/// kind (escaped).
pub(super) fn heading_label(label: &str, several: bool) -> String {
    if several {
        format!(" — <code>{}</code>", esc(label))
    } else {
        String::new()
    }
}

pub(super) fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// `s` as HTML text, safe in an element and in a quoted attribute value:
/// `& < > " '` escaped, and control characters and bidirectional
/// overrides (which can make the text after them read reversed, e.g. a
/// figure) shown as U+FFFD. Every string read from a report goes through
/// it.
pub(super) fn esc(s: &str) -> String {
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
pub(super) fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// The attack named `name` of an audit-like report.
pub(super) fn attack<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    attacks(report).find(|a| name_of(a) == name)
}

/// The report's attacks.
pub(super) fn attacks(report: &Value) -> impl Iterator<Item = &Value> {
    report
        .get("attacks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

pub(super) fn name_of(v: &Value) -> &str {
    v.get("name").and_then(Value::as_str).unwrap_or("?")
}

/// The attack whose `key` is largest (the strongest evidence), with it.
pub(super) fn strongest<'a>(
    attacks: impl Iterator<Item = &'a Value>,
    key: &str,
) -> Option<(&'a Value, f64)> {
    attacks
        .filter_map(|a| Some((a, num(a, key)?)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
}

/// A table row of text cells (escaped here: a cell may hold report text).
pub(super) fn row(cells: &[String]) -> String {
    let escaped: Vec<String> = cells.iter().map(|c| esc(c)).collect();
    row_html(&escaped)
}

/// A table row of cells that are already HTML (markup built by the page,
/// with any report text in them escaped by the caller).
pub(super) fn row_html(cells: &[String]) -> String {
    let mut s = String::from("<tr>");
    for c in cells {
        let _ = write!(s, "<td>{c}</td>");
    }
    s.push_str("</tr>");
    s
}

/// The `[low, high]` ends of the interval object at `key` (both numbers).
pub(super) fn ends(v: &Value, key: &str) -> Option<(f64, f64)> {
    let i = v.get(key)?;
    Some((num(i, "low")?, num(i, "high")?))
}

/// A level in (0, 1) as a percentage without float noise (0.95 → `95%`,
/// 0.999 → `99.9%`); `None` for anything else.
pub(super) fn level_percent(level: f64) -> Option<String> {
    (level > 0.0 && level < 1.0).then(|| {
        let s = format!("{:.3}", 100.0 * level);
        format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
    })
}

pub(super) fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_owned(), f)
}
