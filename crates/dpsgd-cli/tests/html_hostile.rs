//! The HTML page with hostile reports (issue 26, item 3): every string a
//! report holds is shown as text, never run as markup. Real reports of
//! every kind the CLI writes (a DP train run with MIST, a non-private one,
//! an audit with canaries and the inversion grid, a sweep, a comparison),
//! made here with tiny settings, have every string field, at any depth,
//! replaced by an injection; the page must hold only its own markup and
//! show each injection escaped.
//!
//! With `DPSGD_HOSTILE_PAGE=FILE` set, one such page is also written to
//! FILE, for the browser check (`scripts/check-report-in-browser.sh
//! --hostile FILE`, run by `.ci/run`).

mod common;

use common::{assert_usage_error, dpsgd, temp_dir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The injections: closing the title, an attribute and an event handler,
/// a `javascript:` URL, closing the style sheet, a CDATA end and a comment
/// (SVG is inline), entities, control characters and direction overrides
/// among right-to-left text, and a 100 KB string.
fn payloads() -> Vec<String> {
    let mut p: Vec<String> = [
        "</title><script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "' onmouseover='alert(1)' x='",
        "javascript:alert(1)",
        "</style><script>alert(1)</script><style>",
        "]]><script>alert(1)</script>",
        "<!--<script>alert(1)</script>-->",
        "</text></svg><svg onload=alert(1)><a href=\"javascript:alert(1)\">x</a>",
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#60;b&#62;",
        "مرحبا \u{202E}1.0 = ε\u{202C} שלום \u{2067}x\u{2069} \u{0}\u{7}\u{1b}[31m 雪 🙂",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    p.push(format!("{}<script>alert(1)</script>", "A".repeat(100_000)));
    p
}

/// `s` as the page must show it (as its `esc`).
fn escaped(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            '\t' | '\n' => c.to_string(),
            c if c.is_control() || is_bidi_control(c) => "\u{FFFD}".into(),
            c => c.to_string(),
        })
        .collect()
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Real reports, made once per test binary: (file name, document), and
/// the audit's inversion grid.
struct Real {
    reports: Vec<(&'static str, Value)>,
    inversion_png: Vec<u8>,
}

fn run_ok(args: &[&str]) {
    let out = dpsgd(args);
    assert!(
        out.status.success(),
        "dpsgd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(|| {
        let dir = temp_dir("dpsgd-html-hostile", "real");
        let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let tiny = ["--quiet", "--hidden", "8", "--epochs", "1", "--seed", "1"];
        fn with<'a>(args: &[&'a str], tiny: &[&'a str]) -> Vec<&'a str> {
            [args, tiny].concat()
        }
        // --html: the report then holds ε after every epoch.
        run_ok(&with(
            &[
                "train",
                "--mist",
                "--mist-submodels",
                "2",
                "--report",
                &p("train.json"),
                "--html",
                &p("train.html"),
            ],
            &tiny,
        ));
        run_ok(&with(
            &["train", "--non-private", "--report", &p("non-private.json")],
            &tiny,
        ));
        run_ok(&with(
            &[
                "audit",
                "--target-epsilon",
                "2",
                "--attacks",
                "loss,inversion",
                "--canaries",
                "20",
                "--out",
                &p("audit"),
            ],
            &tiny,
        ));
        run_ok(&with(
            &[
                "sweep",
                "--epsilons",
                "1,inf",
                "--attacks",
                "loss",
                "--out",
                &p("sweep"),
            ],
            &tiny,
        ));
        run_ok(&with(
            &[
                "compare",
                "--defences",
                "none,dp:eps=1",
                "--attacks",
                "loss",
                "--shadow-models",
                "1",
                "--out",
                &p("compare"),
            ],
            &tiny,
        ));
        let read = |path: PathBuf| -> Value {
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let real = Real {
            reports: vec![
                ("train.json", read(dir.join("train.json"))),
                ("non-private.json", read(dir.join("non-private.json"))),
                ("audit.json", read(dir.join("audit/audit.json"))),
                ("sweep.json", read(dir.join("sweep/sweep.json"))),
                ("compare.json", read(dir.join("compare/compare.json"))),
            ],
            inversion_png: std::fs::read(dir.join("audit/inversion.png")).unwrap(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        real
    })
}

/// `v` with its `i`-th string value (counting from `*i`, at any depth)
/// replaced by `payloads[(i + shift) % n]`; the keys stay (the page finds
/// its figures by them), and so does the non-private sweep run's budget
/// `"inf"` (any other string there is refused: see
/// [`should_refuse_a_hostile_privacy_field_in_one_line`]).
fn poison(v: &Value, payloads: &[String], shift: usize, i: &mut usize) -> Value {
    match v {
        Value::String(_) => {
            *i += 1;
            Value::String(payloads[(*i + shift) % payloads.len()].clone())
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| poison(x, payloads, shift, i))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| {
                    let x = if k == "target_epsilon" && x == "inf" {
                        x.clone()
                    } else {
                        poison(x, payloads, shift, i)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Writes `reports` into `dir` (the audit into its own folder with the
/// grid) and returns the `--from` list.
fn write_reports(dir: &Path, reports: &[(&str, Value)], png: &[u8]) -> String {
    let mut from = Vec::new();
    for (name, v) in reports {
        let path = if *name == "audit.json" {
            let folder = dir.join("audit");
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("inversion.png"), png).unwrap();
            from.push(folder.to_str().unwrap().to_owned());
            folder.join(name)
        } else {
            from.push(dir.join(name).to_str().unwrap().to_owned());
            dir.join(name)
        };
        std::fs::write(&path, v.to_string()).unwrap();
    }
    from.join(",")
}

/// The page `dpsgd report` builds from `reports`.
fn render(name: &str, reports: &[(&str, Value)]) -> String {
    let dir = temp_dir("dpsgd-html-hostile", name);
    let from = write_reports(&dir, reports, &real().inversion_png);
    let page = dir.join("page.html");
    run_ok(&["report", "--from", &from, "--out", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    html
}

/// The elements the page itself writes.
const TAGS: [&str; 29] = [
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "sup", "code",
    "div", "a", "table", "tr", "th", "td", "ul", "li", "img", "svg", "text", "line", "polyline",
    "circle", "rect", "path",
];

/// No markup came from the reports: every tag is one the page writes, with
/// no event handler, no link off the page, no image but the grid; one
/// title, one style sheet, no comment, no CDATA, no script; no control
/// character or direction override left raw.
fn assert_inert(html: &str) {
    let lower = html.to_lowercase();
    assert!(lower.starts_with("<!doctype html>"));
    for bad in [
        "<script",
        "<!--",
        "<![cdata[",
        "<iframe",
        "<object",
        "<embed",
    ] {
        assert!(!lower.contains(bad), "`{bad}` on the page");
    }
    assert_eq!(
        lower.matches("</title>").count(),
        1,
        "the title was closed early"
    );
    assert_eq!(
        lower.matches("</style>").count(),
        1,
        "the style sheet was closed early"
    );
    assert!(
        !html
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)),
        "a raw control or direction character"
    );
    for tag in lower
        .split('<')
        .skip(1)
        .skip_while(|t| t.starts_with("!doctype"))
    {
        let tag = &tag[..tag.find('>').expect("every tag is closed")];
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        assert!(
            TAGS.contains(&name),
            "a <{name}> element: <{}>",
            &tag[..tag.len().min(200)]
        );
        // Attributes: names outside the quoted values (a `"` inside a value
        // is escaped), values inside.
        let parts: Vec<&str> = tag.split('"').collect();
        for outside in parts.iter().step_by(2) {
            for word in outside.split(|c: char| c.is_whitespace() || c == '/') {
                assert!(
                    !word.starts_with("on"),
                    "an event handler `{word}` in <{tag}>"
                );
                assert!(!word.contains('\''), "an unquoted value in <{tag}>");
            }
        }
        for (attr, value) in parts.iter().step_by(2).zip(parts.iter().skip(1).step_by(2)) {
            let attr = attr
                .trim_end_matches('=')
                .rsplit(' ')
                .next()
                .unwrap_or_default();
            assert!(
                !value.trim_start().starts_with("javascript:"),
                "a script URL in <{tag}>"
            );
            if attr == "href" {
                assert!(value.starts_with('#'), "a link off the page: {value}");
            }
            if attr == "src" {
                assert!(
                    name == "img" && value.starts_with("data:image/png;base64,"),
                    "a source that is not the grid: <{}>",
                    &tag[..tag.len().min(200)]
                );
            }
        }
    }
}

/// Every payload, at every string of every real report (each page gives
/// every string another payload), is shown escaped and runs nothing.
#[test]
fn should_show_every_string_of_every_report_type_as_text() {
    let payloads = payloads();
    let mut shown = vec![false; payloads.len()];
    for shift in 0..payloads.len() {
        let mut i = 0;
        let reports: Vec<(&str, Value)> = real()
            .reports
            .iter()
            .map(|(name, v)| (*name, poison(v, &payloads, shift, &mut i)))
            .collect();
        let html = render(&format!("all-{shift}"), &reports);
        assert_inert(&html);
        // Every kind has its sections: two train reports and the audit's
        // target, the sweep, the leakage with the grid, the defences.
        for id in [
            "guarantee",
            "guarantee-2",
            "guarantee-3",
            "budget",
            "sweep",
            "leakage",
            "inversion",
            "defences",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "no section {id}");
        }
        // The attack table's BCa intervals, with their level (issue 28).
        assert!(
            html.contains("BCa bootstrap (Efron 1987), level 1 − α = 95%"),
            "no BCa level"
        );
        for (k, p) in payloads.iter().enumerate() {
            shown[k] |= html.contains(&escaped(p));
        }
    }
    for (p, shown) in payloads.iter().zip(shown) {
        assert!(shown, "{} never shown escaped", &p[..p.len().min(60)]);
    }
    // Every injection but the long one, together in every string: the
    // page the browser check opens.
    let all = vec![payloads[..payloads.len() - 1].join(" ")];
    let reports: Vec<(&str, Value)> = real()
        .reports
        .iter()
        .map(|(name, v)| (*name, poison(v, &all, 0, &mut 0)))
        .collect();
    let html = render("together", &reports);
    assert_inert(&html);
    assert!(html.matches(&escaped(&all[0])).count() >= 10);
    if let Some(path) = std::env::var_os("DPSGD_HOSTILE_PAGE") {
        std::fs::write(path, &html).unwrap();
    }
}

/// Strings where the page expects numbers (a slice's counts, a ROC point,
/// an accuracy) and hostile keys where it lists a map's entries (the
/// preparation) are text too.
#[test]
fn should_show_strings_in_unexpected_places_as_text() {
    let hostile = &payloads()[0];
    let mut audit = real().reports[2].1.clone();
    audit["attacks"][0]["slices"] = json!([{"name": "x", "counts": [hostile, 3], "auc": hostile}]);
    audit["attacks"][0]["roc"] = json!([[hostile, 0.5], [1.0, 1.0]]);
    audit["attacks"][0]["auc_bca"] = json!({"level": hostile, "low": hostile, "high": 0.6});
    audit["attacks"][0]["tpr_at_fpr_0_01_bca"] = json!(hostile);
    audit["attacks"][0]["tpr_at_fpr_0_001_bca"] =
        json!({"level": 0.9, "low": 0.0, "high": hostile});
    audit["target"]["test_accuracy"] = json!(hostile);
    audit["target"]["preprocessing"][hostile] = json!("y");
    audit["preprocessing"] = json!({hostile: [hostile], "public": false});
    let html = render("odd", &[("audit.json", audit)]);
    assert_inert(&html);
    assert!(html.matches(&escaped(hostile)).count() >= 2, "{html}");
}

/// A hostile string where the page reads ε or δ is no number: the report
/// is refused (exit 2) in one short line naming the file and the field,
/// with the string cut and its control characters escaped, and no page.
#[test]
fn should_refuse_a_hostile_privacy_field_in_one_line() {
    let dir = temp_dir("dpsgd-html-hostile", "refused");
    let page = dir.join("page.html");
    let train = &real().reports[0].1;
    for p in payloads() {
        for field in ["epsilon", "delta"] {
            let mut v = train.clone();
            v[field] = json!(p);
            let file = dir.join(format!("{field}.json"));
            std::fs::write(&file, v.to_string()).unwrap();
            let out = dpsgd(&[
                "report",
                "--from",
                file.to_str().unwrap(),
                "--out",
                page.to_str().unwrap(),
            ]);
            let line = assert_usage_error(
                &out,
                &["--from", file.to_str().unwrap(), &format!("`{field}`")],
            );
            assert!(line.chars().count() < 400, "{line}");
            assert!(!page.exists(), "a page was written");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
