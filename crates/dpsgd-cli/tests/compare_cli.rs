//! `dpsgd compare`'s contract (issue 14): every defence trained on the same
//! split and attacked; compare.csv, compare.md, compare.svg and
//! compare.json (a list of {defence, test_accuracy, epsilon,
//! strongest_auc, strongest_tpr_at_fpr_0_001, pareto_auc, pareto_tpr,
//! attacks: [{name, auc, tpr_at_fpr_0_001}]}); sweeps and default grids.

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
    // The Pareto fronts (issue 32): the strongest attack's figures, and
    // the front recomputed here from them by the definition.
    let point = |r: &serde_json::Value, key: &str| {
        (
            r["test_accuracy"].as_f64().unwrap(),
            r[key].as_f64().unwrap(),
        )
    };
    for (key, flag, field) in [
        ("strongest_auc", "pareto_auc", "auc"),
        (
            "strongest_tpr_at_fpr_0_001",
            "pareto_tpr",
            "tpr_at_fpr_0_001",
        ),
    ] {
        for r in rows {
            let max = r["attacks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a[field].as_f64().unwrap())
                .fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(r[key].as_f64(), Some(max), "{key}");
            let p = point(r, key);
            let dominated = rows.iter().any(|q| {
                let q = point(q, key);
                q.0 >= p.0 && q.1 <= p.1 && q != p
            });
            assert_eq!(r[flag].as_bool(), Some(!dominated), "{flag}: {r}");
        }
    }
    let csv = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",pareto_auc,pareto_tpr"),
        "{csv}"
    );
    assert!(csv.starts_with("defence,test_accuracy,train_accuracy,epsilon,loss_auc"));
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("| relaxloss:alpha=0.5,upper=0.3 |"), "{md}");
    assert!(
        md.contains("| defence | front |") && md.contains("**AUC"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert!(svg.trim_end().ends_with("</svg>") && svg.contains("dp:eps=2"));
    let _ = std::fs::remove_dir_all(&out);
}

/// Sweeps (issue 32): `a|b` trains one point per value, `--grid default`
/// sweeps a bare defence over its default grid, and equal spellings train
/// once.
#[test]
fn should_sweep_a_defence_and_its_default_grid() {
    let out = temp_dir("dpsgd-compare", "sweep");
    let run = dpsgd(&[
        "compare",
        "--defences",
        "none,dp:eps=1|4,dropout,none",
        "--grid",
        "default",
        "--attacks",
        "loss",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let v = read_json(out.join("compare.json"));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["defence"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "none",
            "dp:eps=1",
            "dp:eps=4",
            "dropout:p=0.1",
            "dropout:p=0.3",
            "dropout:p=0.5"
        ]
    );
    // Progress: each point numbered, a time estimate after the first.
    assert!(stderr.contains("dpsgd compare: [1/6] none"), "{stderr}");
    assert!(
        stderr.contains("[6/6] dropout:p=0.5 (") && stderr.contains("left)"),
        "{stderr}"
    );
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
    assert_usage_error(
        &dpsgd(&["compare", "--defences", "relaxloss:alpha=1|"]),
        &["--defences", "empty value"],
    );
}
