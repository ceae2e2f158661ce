//! The HTML page with hostile reports (issue 26, item 3): every string a
//! report holds is shown as text, never run as markup. Every string field
//! of a train, audit, sweep and compare report is replaced by an injection;
//! the page must hold no script, no image, no event handler, and show the
//! injection escaped.

mod common;

use common::{dpsgd, temp_dir};
use serde_json::{Value, json};

const HOSTILE: &str = r#"</title><script>alert(1)</script><img src=x onerror=alert(2)>"'&"#;

/// The injection as the page must show it: every character of `& < > " '`
/// escaped.
const ESCAPED: &str = "&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;";

/// `v` with every string value, at any depth, replaced by the injection
/// (the keys stay: the page finds its figures by them).
fn poison(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::String(HOSTILE.into()),
        Value::Array(items) => Value::Array(items.iter().map(poison).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), poison(v))).collect())
        }
        other => other.clone(),
    }
}

/// A `train` report shaped like the CLI's (DP-SGD, MIST parts, a private
/// preparation, an ε history).
fn train_report() -> Value {
    json!({
        "dataset": "data/private.csv",
        "model": "mlp",
        "recipe": "default",
        "accountant": "rdp",
        "epsilon": 1.25,
        "delta": 1e-5,
        "noise_multiplier": 1.1,
        "sample_rate": 0.01,
        "steps": 300,
        "dataset_size": 1000,
        "test_accuracy": 0.81,
        "secure": false,
        "seed": 3,
        "warnings": ["the model is small", "seeded run"],
        "mist": [
            {"epsilon": 1.25, "sample_rate": 0.02, "steps": 150, "accountant": "rdp"},
            {"epsilon": 1.2, "sample_rate": 0.02, "steps": 150, "accountant": "rdp"}
        ],
        "preprocessing": {
            "public": false,
            "scaling": "standardise",
            "read_from_data": ["categories of column 2 (`colour`)", "the number of classes"],
            "note": "free text"
        },
        "not_covered_by_epsilon": {
            "train_accuracy": 0.85,
            "final_loss": 0.4,
            "epoch_history": [
                {"epoch": 1, "epsilon": 0.8, "loss": 0.7},
                {"epoch": 2, "epsilon": 1.25, "loss": 0.5}
            ],
            "mist_submodels": [
                {"records": 500, "dropped": ["row 7"]},
                {"records": 500, "dropped": []}
            ]
        }
    })
}

fn attacks() -> Value {
    json!([
        {"name": "loss", "auc": 0.62, "auc_interval": {"low": 0.6, "high": 0.64},
         "tpr_at_fpr_0_01": 0.03, "tpr_at_fpr_0_001": 0.006, "advantage": 0.2,
         "roc": [[0.0, 0.0], [0.001, 0.006], [1.0, 1.0]],
         "slices": [
            {"name": "class 3", "counts": [40, 38], "auc": 0.7, "advantage": 0.3,
             "p_value_adjusted": 0.001},
            {"name": "loss in [0.1, 0.2)", "counts": [20, 21], "auc": 0.6, "advantage": 0.15,
             "p_value_adjusted": 0.2}
         ]},
        {"name": "lira-online", "auc": 0.58, "tpr_at_fpr_0_01": 0.05, "tpr_at_fpr_0_001": 0.01,
         "advantage": 0.12, "roc": [[0.0, 0.0], [1.0, 1.0]], "slices": []}
    ])
}

fn audit_report() -> Value {
    json!({
        "dataset": "data/private.csv",
        "attacks": attacks(),
        "target": train_report(),
        "epsilon_lower_bound": 0.9,
        "canary_audit": {"claimed_epsilon": 1.25, "exceeds_claim": false, "kind": "ood",
                         "one_run": {"epsilon": 0.9, "alpha": 0.05}},
        "inversion": {"independent_accuracy": 0.4, "mean_distance_ratio": 0.9, "grid": "inversion.png"},
        "preprocessing": {"public": false, "scaling": "none", "read_from_data": ["labels"]},
        "errors": ["shadow model 2 diverged"]
    })
}

fn sweep_report() -> Value {
    json!({
        "dataset": "data/private.csv",
        "runs": [
            {"target_epsilon": 1.0, "test_accuracy": 0.78, "attacks": attacks()},
            {"target_epsilon": 4.0, "test_accuracy": 0.83, "attacks": attacks()},
            {"target_epsilon": "inf", "test_accuracy": 0.85, "attacks": attacks()}
        ]
    })
}

fn compare_report() -> Value {
    json!([
        {"defence": "none", "test_accuracy": 0.85, "epsilon": null, "attacks": attacks()},
        {"defence": "dropout", "test_accuracy": 0.84, "epsilon": null, "attacks": attacks()},
        {"defence": "dp-sgd", "test_accuracy": 0.8, "epsilon": 1.25, "attacks": attacks()}
    ])
}

/// The page `dpsgd report` builds from `reports` (file name, document).
fn render(name: &str, reports: &[(&str, Value)]) -> String {
    let dir = temp_dir("dpsgd-html-hostile", name);
    let mut args = vec!["report".to_owned()];
    for (file, v) in reports {
        let path = dir.join(file);
        std::fs::write(&path, v.to_string()).unwrap();
        args.push("--from".into());
        args.push(path.to_str().unwrap().into());
    }
    let page = dir.join("page.html");
    args.push("--out".into());
    args.push(page.to_str().unwrap().into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = dpsgd(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    html
}

/// No markup came from the reports: no script or image element, one title,
/// no tag with an event-handler attribute (`on…`, outside quoted values),
/// and the injection shown escaped.
fn assert_inert(html: &str) {
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "a <script> element:\n{html}");
    assert!(!lower.contains("<img"), "an <img> element:\n{html}");
    assert!(
        !lower.contains("<img src=x onerror"),
        "a raw onerror handler:\n{html}"
    );
    assert_eq!(
        lower.matches("</title>").count(),
        1,
        "the title was closed early"
    );
    for tag in lower.split('<').skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        // Drop the quoted attribute values (a `"` inside one is escaped).
        let names: String = tag.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        for word in names.split(|c: char| c.is_whitespace() || c == '/') {
            assert!(
                !word.starts_with("on"),
                "an event handler `{word}` in <{tag}>:\n{html}"
            );
        }
    }
    assert!(
        html.contains("&lt;script&gt;"),
        "the injection is shown escaped:\n{html}"
    );
    assert!(html.contains(ESCAPED), "every character escaped:\n{html}");
}

#[test]
fn should_show_every_string_of_every_report_as_text() {
    let html = render(
        "all",
        &[
            ("train.json", poison(&train_report())),
            ("audit.json", poison(&audit_report())),
            ("sweep.json", poison(&sweep_report())),
            ("compare.json", poison(&compare_report())),
        ],
    );
    assert_inert(&html);
    // The injection reached the sections that show report text: the
    // accountant, the dataset in the title, attack, slice and defence
    // names, the preparation.
    assert!(html.matches(ESCAPED).count() >= 8, "{html}");
}

#[test]
fn should_show_a_train_report_alone_as_text() {
    let html = render("train", &[("train.json", poison(&train_report()))]);
    assert_inert(&html);
}

/// Strings where the page expects numbers (a slice's counts) and hostile
/// keys where it lists a map's entries (the preparation) are text too.
#[test]
fn should_show_strings_in_unexpected_places_as_text() {
    let mut audit = audit_report();
    audit["attacks"][0]["slices"][0]["counts"] = json!(["x", 3]);
    audit["target"]["preprocessing"][HOSTILE] = json!("y");
    let html = render("odd", &[("audit.json", poison(&audit))]);
    assert_inert(&html);
}
