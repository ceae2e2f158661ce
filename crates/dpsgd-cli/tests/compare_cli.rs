//! `dpsgd compare`'s contract (issue 14): every defence trained on the same
//! split and attacked; compare.csv, compare.md, compare.svg and
//! compare.json (a list of {defence, test_accuracy, epsilon, attacks:
//! [{name, auc, tpr_at_fpr_0_001}]}).

mod common;

use common::{assert_usage_error, dpsgd, read_json, temp_dir};

#[test]
fn should_compare_defences_and_write_the_four_outputs() {
    let out = temp_dir("dpsgd-compare", "four");
    let run = dpsgd(&[
        "compare",
        "--defences",
        "none,relaxloss:alpha=0.5,upper=0.3,mist,dp:eps=2",
        "--attacks",
        "loss,lira",
        "--shadow-models",
        "2",
        "--epochs",
        "5",
        "--seed",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let v = read_json(out.join("compare.json"));
    let rows = v.as_array().expect("a list");
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["defence"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["none", "relaxloss:alpha=0.5,upper=0.3", "mist", "dp:eps=2"]
    );
    assert!(rows[..3].iter().all(|r| r["epsilon"].is_null()));
    assert_eq!(rows[2]["defences"]["mist"]["submodels"], 4);
    let eps = rows[3]["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps <= 2.0 + 1e-6, "{eps}");
    for r in rows {
        assert!((0.0..=1.0).contains(&r["test_accuracy"].as_f64().unwrap()));
        let attacks = r["attacks"].as_array().unwrap();
        let names: Vec<&str> = attacks
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["loss", "lira-online", "lira-offline"]);
        for a in attacks {
            for f in ["auc", "tpr_at_fpr_0_001"] {
                assert!((0.0..=1.0).contains(&a[f].as_f64().unwrap()), "{f}");
            }
        }
    }
    let csv = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert!(csv.starts_with("defence,test_accuracy,train_accuracy,epsilon,loss_auc"));
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("| relaxloss:alpha=0.5,upper=0.3 |"), "{md}");
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert!(svg.trim_end().ends_with("</svg>") && svg.contains("dp:eps=2"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn should_refuse_an_unknown_defence_in_one_line() {
    assert_usage_error(
        &dpsgd(&["compare", "--defences", "none,purple"]),
        &["--defences", "purple"],
    );
    assert_usage_error(
        &dpsgd(&["compare", "--defences", "mist:m=1"]),
        &["--defences", "mist"],
    );
}
