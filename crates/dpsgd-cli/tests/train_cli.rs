//! `dpsgd train` and `dpsgd sweep` on a tiny dataset: the report contract,
//! the sweep outputs, and errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dpsgd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(args)
        .output()
        .expect("run dpsgd")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpsgd-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 120 examples, 4 features, 3 well-separated classes; a header row and a
/// quoted field exercise the CSV reader.
fn tiny_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("f1,f2,\"f3, quoted\",f4,label\n");
    for i in 0..120 {
        let class = i % 3;
        let jitter = ((i as f64) * 0.731).sin() * 0.3;
        text += &format!(
            "{},{},{},{},{class}\n",
            class as f64 + jitter,
            -(class as f64) + jitter,
            jitter,
            2.0 * class as f64 - jitter
        );
    }
    let p = dir.join("tiny.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn should_write_the_privacy_report() {
    let dir = temp_dir("train");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let report = dir.join("report.json");
    let stdout = ok(&dpsgd(&[
        "train",
        "--dataset",
        &data,
        "--model",
        "logreg",
        "--target-epsilon",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("test accuracy") && stdout.contains("ε = 2.00"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for field in [
        "test_accuracy",
        "epsilon",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "epochs",
        "wall_seconds",
    ] {
        assert!(v[field].is_number(), "{field}: {v}");
    }
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(eps <= 2.0 && eps > 1.9, "{eps}");
    // N = 96 training examples: δ = 1/N rounded down to a power of ten, capped at 1e-5.
    assert_eq!(v["delta"].as_f64(), Some(1e-5));
    assert_eq!(v["sample_rate"].as_f64(), Some(16.0 / 96.0));
    assert_eq!(v["steps"].as_u64(), Some(3 * 6));
    assert_eq!(v["secure"], false);
    assert!(
        v["test_accuracy"].as_f64().unwrap() > 0.5,
        "three separable classes: {v}"
    );
}

#[test]
fn should_report_null_epsilon_without_privacy() {
    let dir = temp_dir("nonprivate");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let report = dir.join("report.json");
    ok(&dpsgd(&[
        "train",
        "--dataset",
        &data,
        "--model",
        "mlp",
        "--activation",
        "tanh",
        "--non-private",
        "--epochs",
        "5",
        "--batch-size",
        "16",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        v["epsilon"].is_null() && v["noise_multiplier"].is_null(),
        "{v}"
    );
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.8, "{v}");
    assert_eq!(v["activation"], "tanh");
    assert!(
        v["dataset"].as_str().is_some_and(|d| d.starts_with("csv:")),
        "the dataset as --dataset spells it: {v}"
    );
}

#[test]
fn should_sweep_one_row_per_budget_and_seed_with_a_plot() {
    let dir = temp_dir("sweep");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let out = dir.join("out");
    ok(&dpsgd(&[
        "sweep",
        "--dataset",
        &data,
        "--model",
        "logreg",
        "--epsilons",
        "1,4,inf",
        "--repeats",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("target_epsilon,seed,epsilon,delta"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("loss_threshold_auc") && lines[0].contains("audit_epsilon_lower_bound")
    );
    assert_eq!(lines.len(), 1 + 3 * 2, "{csv}");
    let keys: Vec<(String, String)> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[1].to_owned())
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("1", "1"),
            ("1", "2"),
            ("4", "1"),
            ("4", "2"),
            ("inf", "1"),
            ("inf", "2")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("<circle") && svg.contains("non-private"),
        "points and baseline drawn"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 6);
}

#[test]
fn should_name_the_file_and_line_of_corrupt_data() {
    let dir = temp_dir("corrupt");
    let p = dir.join("bad.csv");
    std::fs::write(&p, "1,2,0\n3,4,1\n5,oops,1\n").unwrap();
    let out = dpsgd(&[
        "train",
        "--dataset",
        &format!("csv:{}", p.display()),
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv") && err.contains("line 3"), "{err}");

    let out = dpsgd(&["train", "--dataset", "parquet:x", "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dataset"));

    let out = dpsgd(&["train", "--activation", "sigmoid", "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--activation"));
}
