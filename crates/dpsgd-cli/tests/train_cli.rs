//! `dpsgd train` and `dpsgd sweep` on a tiny dataset: the report contract,
//! the sweep outputs, and errors on bad input.

mod common;

use common::{dpsgd, ok, read_json};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("dpsgd-cli", name)
}

/// 120 examples, 4 features, 3 well-separated classes; a header row and a
/// quoted field exercise the CSV reader. Features are centred already (no
/// scaling is fitted on private data).
fn tiny_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("f1,f2,\"f3, quoted\",f4,label\n");
    for i in 0..120 {
        let class = i % 3;
        let c = class as f64 - 1.0;
        let jitter = ((i as f64) * 0.731).sin() * 0.3;
        text += &format!(
            "{},{},{},{},{class}\n",
            c + jitter,
            -c + jitter,
            jitter,
            2.0 * c - jitter
        );
    }
    let p = dir.join("tiny.csv");
    std::fs::write(&p, text).unwrap();
    p
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
    // The privacy report's fields sit at the top level of the report.
    // A table's recipe (tabular) accounts with PLD.
    assert_eq!(v["recipe"], "tabular", "{v}");
    assert_eq!(v["accountant"], "pld", "{v}");
    assert!(v["clipping"].is_object(), "{v}");
    assert_eq!(v["seed"].as_u64(), Some(3));
    assert_eq!(v["dataset_size"].as_u64(), Some(96));
    assert!(v["crate_version"].is_string(), "{v}");
    assert!(v.get("privacy").is_none(), "flattened: {v}");
    assert!(
        v["test_accuracy"].as_f64().unwrap() > 0.5,
        "three separable classes: {v}"
    );
    // Exact statistics of the private data are in their own section.
    let nc = &v["not_covered_by_epsilon"];
    for field in ["train_accuracy", "final_loss", "loss_threshold_auc"] {
        assert!(nc[field].is_number(), "{field}: {v}");
        assert!(v[field].is_null(), "{field} must not sit beside ε: {v}");
    }
    assert_eq!(nc["dropped_examples"].as_u64(), Some(0));
    assert_eq!(v["sampler"], "poisson");
    assert_eq!(
        v["preprocessing"]["num_classes_source"]
            .as_str()
            .map(|s| s.contains("not covered")),
        Some(true),
        "{v}"
    );
    let line = stdout.lines().next().unwrap_or_default();
    let (covered, rest) = line
        .split_once("not covered by ε")
        .expect("sectioned summary");
    assert!(
        !covered.contains("train") && !covered.contains("AUC") && rest.contains("AUC"),
        "{line}"
    );
}

/// Runs `dpsgd train --non-private` on `csv` with `extra` flags and returns
/// the report.
fn report_of(dir: &Path, csv: &Path, extra: &[&str]) -> serde_json::Value {
    let report = dir.join("r.json");
    let data = format!("csv:{}", csv.display());
    let mut args = vec![
        "train",
        "--dataset",
        &data,
        "--model",
        "logreg",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--seed",
        "1",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&dpsgd(&args));
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

#[test]
fn should_preprocess_csv_with_public_information_only() {
    let dir = temp_dir("preprocess");
    let csv = tiny_csv(&dir);
    let v = report_of(&dir, &csv, &["--non-private"]);
    // By default a fixed map of each value on its own: nothing fitted.
    assert!(
        v["preprocessing"]["scaling"].as_str().is_some_and(
            |s| s.contains("sign(x)·ln(1 + |x|)") && s.contains("no statistic of the data")
        ),
        "no scaling fitted on the private data by default: {v}"
    );
    // Undeclared, the header is detected from the rows: not public.
    let v = report_of(
        &dir,
        &csv,
        &[
            "--non-private",
            "--feature-range",
            "-3:3",
            "--num-classes",
            "3",
        ],
    );
    assert_eq!(v["preprocessing"]["public"], false, "{v}");
    assert!(
        v["preprocessing"]["read_from_data"]
            .to_string()
            .contains("header"),
        "{v}"
    );
    let header = dir.join("header.json");
    std::fs::write(&header, r#"{"header": true}"#).unwrap();
    let v = report_of(
        &dir,
        &csv,
        &[
            "--non-private",
            "--feature-range",
            "-3:3",
            "--num-classes",
            "3",
            "--schema",
            header.to_str().unwrap(),
        ],
    );
    let p = &v["preprocessing"];
    assert!(p["scaling"].as_str().unwrap().contains("[-3, 3]"), "{v}");
    assert_eq!(p["num_classes_source"], "declared (--num-classes)");
    assert_eq!(
        (p["num_classes"].as_u64(), &p["public"]),
        (Some(3), &serde_json::json!(true))
    );
    // A public reference file.
    let reference = dir.join("public.csv");
    std::fs::write(
        &reference,
        "a,b,c,d,label
-3,-3,-1,-3,0
3,3,1,6,1
",
    )
    .unwrap();
    let v = report_of(
        &dir,
        &csv,
        &[
            "--non-private",
            "--scaling-reference",
            reference.to_str().unwrap(),
        ],
    );
    assert!(
        v["preprocessing"]["scaling"]
            .as_str()
            .unwrap()
            .contains("public reference"),
        "{v}"
    );
    // A label beyond the declared classes is an error, not a bigger model.
    let out = dpsgd(&[
        "train",
        "--dataset",
        &format!("csv:{}", csv.display()),
        "--num-classes",
        "2",
        "--quiet",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("num_classes"));
}

#[test]
fn should_refuse_large_delta_unless_allowed() {
    let dir = temp_dir("delta");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--dataset",
            &data,
            "--model",
            "logreg",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--delta",
            "0.05",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        dpsgd(&args)
    };
    let out = run(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("delta") && err.contains("1/N"), "{err}");
    // Allowed, it is a warning: returned by the library, shown once by the
    // binary.
    let out = run(&["--allow-large-delta"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("WARNING: dpsgd: δ = 0.05 ≥ 1/N").count(),
        1,
        "{err}"
    );
}

/// An IDX dataset of `n_train` + `n_test` square images of `side` pixels
/// (two classes) in a new temporary folder.
fn idx_images(name: &str, side: u32, n_train: u32, n_test: u32) -> std::path::PathBuf {
    let idx = |magic: u32, dims: &[u32], body: Vec<u8>| {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend(body);
        v
    };
    let dir = temp_dir(name);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels = (0..n * side * side).map(|i| (i * 37 % 256) as u8).collect();
        let labels = (0..n).map(|i| (i % 2) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(0x0803, &[n, side, side], pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(0x0801, &[n], labels),
        )
        .unwrap();
    }
    dir
}

#[test]
fn should_refuse_a_cnn_on_tiny_images_with_a_clear_error() {
    for side in [2u32, 3] {
        let dir = idx_images(&format!("tiny-images-{side}"), side, 40, 10);
        let out = dpsgd(&[
            "train",
            "--dataset",
            &format!("idx:{}", dir.display()),
            "--model",
            "cnn",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--delta",
            "1e-3",
            "--quiet",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{side}×{side}: {err}");
        assert!(
            err.contains("--model") && err.contains("CNN") && err.contains("4×4"),
            "{err}"
        );
    }
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
    // Present and null (not absent), no accountant, and not "secure": the
    // run has no guarantee to secure.
    for field in ["epsilon", "noise_multiplier", "accountant", "clipping"] {
        assert_eq!(v.get(field), Some(&serde_json::Value::Null), "{field}: {v}");
    }
    assert_eq!(v["secure"], false, "{v}");
    assert_eq!(v["sampler"], "poisson", "{v}");
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
    // Each run's batch and learning rate (a recipe may change them with
    // the budget): here the flag's batch and the tabular recipe's lr.
    assert!(lines[0].ends_with(",batch_size,lr"), "{}", lines[0]);
    for l in &lines[1..] {
        assert!(l.ends_with(",16,0.03"), "{l}");
    }
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

/// The documented recipe for MNIST-shaped data, chosen without flags and
/// named in the report (issue 12).
#[test]
fn should_train_images_with_the_image_recipe_by_default() {
    let dir = idx_images("image-recipe", 28, 64, 16);
    let report = dir.join("report.json");
    let data = format!("idx:{}", dir.display());
    // One epoch on `dataset` with `extra` flags; its report.
    let run = |dataset: &[&str], extra: &[&str]| {
        let mut args = vec!["train", "--epochs", "1", "--quiet"];
        args.extend_from_slice(dataset);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--report", report.to_str().unwrap()]);
        ok(&dpsgd(&args));
        read_json(&report)
    };
    let idx = ["--dataset", data.as_str(), "--delta", "1e-3"];
    let r = run(&idx, &[]);
    assert_eq!(r["recipe"], "image-scatternet", "{r}");
    assert_eq!(r["features"]["kind"], "scatter");
    assert_eq!(r["features"]["groups"], 27);
    assert_eq!(r["model"], "logreg");
    assert_eq!(r["optimizer"], "sgd");
    assert_eq!(r["lr"], 2.0);
    assert_eq!(r["ema_decay"], 0.99);
    assert_eq!(r["accountant"], "pld");
    assert_eq!(r["clipping"]["Flat"]["max_grad_norm"], 0.1);
    // The recipe's batch of 2048, capped at a quarter of the 64 images.
    assert_eq!(r["batch_size"], 16);
    assert_eq!(r["status"], "completed");
    // Below ε = 2 the recipe's small-budget settings (lr 4, batch 4096
    // capped the same way, 40 epochs), and the recipe line, which lists
    // what differs from them, does not name the learning rate.
    let r = run(&idx, &["--target-epsilon", "1"]);
    assert_eq!(
        (r["lr"].as_f64(), r["batch_size"].as_u64()),
        (Some(4.0), Some(16))
    );
    let r = run(&idx, &["--target-epsilon", "2"]);
    assert_eq!(r["lr"], 2.0);
    // Named by hand, the same; a flag keeps its own value.
    let r = run(
        &idx,
        &["--recipe", "image-scatternet", "--target-epsilon", "1"],
    );
    assert_eq!(
        (r["lr"].as_f64(), r["batch_size"].as_u64()),
        (Some(4.0), Some(16))
    );
    let r = run(&idx, &["--target-epsilon", "1", "--lr", "0.5"]);
    assert_eq!(r["lr"], 0.5);
    let out = dpsgd(&[
        "train",
        "--epochs",
        "1",
        "--dataset",
        &data,
        "--delta",
        "1e-3",
        "--target-epsilon",
        "1",
    ]);
    let line = recipe_line(&out, "image-scatternet");
    assert!(
        line.ends_with("this run: batch_size 16, epochs 1"),
        "{line}"
    );
    // A flag overrides its setting and keeps the rest of the recipe.
    let r = run(&idx, &["--features", "raw"]);
    assert_eq!(
        (r["recipe"].as_str(), r["features"]["kind"].as_str()),
        (Some("image-scatternet"), Some("raw"))
    );
    assert_eq!(r["optimizer"], "sgd");
    // The digits keep the general recipe.
    let r = run(&[], &[]);
    assert_eq!(
        (r["recipe"].as_str(), r["model"].as_str()),
        (Some("general"), Some("mlp"))
    );
}

/// A run that blows up stops with exit 1 and a clear message, and leaves a
/// partial report of its last good model (issue 12).
#[test]
fn should_stop_a_diverging_run_and_leave_a_partial_report() {
    let dir = temp_dir("diverging");
    let report = dir.join("report.json");
    let out = dpsgd(&[
        "train",
        "--optimizer",
        "sgd",
        "--lr",
        // Under DP a run diverges only when its noisy parameters overflow.
        "1e38",
        "--max-grad-norm",
        "10",
        "--epochs",
        "5",
        "--seed",
        "1",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("diverged") && err.contains("learning rate"),
        "{err}"
    );
    let r = read_json(&report);
    assert_eq!(r["status"], "diverged", "{r}");
    assert!(r["error"].as_str().unwrap().contains("diverged"));
    assert!(r["epsilon"].as_f64().is_some_and(f64::is_finite));
    assert!(r["test_accuracy"].as_f64().is_some_and(f64::is_finite));
}

/// The issue 12 options refuse what cannot work with exit 2 and one line
/// naming the flag: ScatterNet features on images smaller than 4×4 or on a
/// table, no views, a decay outside [0, 1).
#[test]
fn should_refuse_impossible_recipe_options_naming_the_flag() {
    let tiny = idx_images("scatter-tiny", 3, 40, 10);
    let tiny = format!("idx:{}", tiny.display());
    let dir = temp_dir("scatter-table");
    let table = format!("csv:{}", tiny_csv(&dir).display());
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &[
                "--dataset",
                &tiny,
                "--delta",
                "1e-3",
                "--features",
                "scatter",
            ],
            &["--features", "4"],
        ),
        (
            &["--dataset", &table, "--features", "scatter"],
            &["--features", "image"],
        ),
        (
            &["--augment-multiplicity", "0"],
            &["--augment-multiplicity"],
        ),
        (&["--ema-decay", "1"], &["--ema-decay"]),
        (
            &["--mist", "--mist-submodels", "40", "--batch-size", "128"],
            &["--mist", "too few"],
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["train", "--epochs", "1", "--quiet"];
        args.extend_from_slice(flags);
        common::assert_usage_error(&dpsgd(&args), expected);
    }
}

/// A reference file whose label sits in another column cannot lend its
/// ranges by position: refused, naming the flag (it used to take the
/// wrong column's range, or panic).
#[test]
fn should_refuse_a_scaling_reference_whose_label_column_differs() {
    let dir = temp_dir("reference-label");
    let data = dir.join("data.csv");
    std::fs::write(&data, "y,a,b\n0,1,2\n1,3,4\n0,5,6\n1,7,8\n0,1,1\n1,2,2\n").unwrap();
    let reference = dir.join("public.csv");
    std::fs::write(&reference, "a,b,y\n0,0,0\n9,9,1\n").unwrap();
    let out = dpsgd(&[
        "train",
        "--dataset",
        &format!("csv:{},label=y", data.display()),
        "--scaling-reference",
        reference.to_str().unwrap(),
        "--epochs",
        "1",
        "--quiet",
    ]);
    common::assert_usage_error(&out, &["--scaling-reference", "label"]);
}

/// `--mist` and its parameters reach the report; a parameter without
/// `--mist` is a usage error.
#[test]
fn should_train_with_mist_and_report_its_settings() {
    let dir = temp_dir("mist");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let report = dir.join("report.json");
    let page = dir.join("report.html");
    ok(&dpsgd(&[
        "train",
        "--dataset",
        &data,
        "--mist",
        "--mist-submodels",
        "2",
        "--mist-weight",
        "0.5",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--seed",
        "1",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    // The page lists the sub-models with their own ε.
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Trained with MIST"), "{html}");
    let mist = &v["defences"]["mist"];
    assert_eq!(mist["submodels"], 2, "{v}");
    assert_eq!(mist["weight"], 0.5, "{v}");
    assert_eq!(mist["local_epochs"], 1, "{v}");
    assert!(v["epsilon"].as_f64().is_some_and(|e| e > 0.0), "{v}");
    // Each sub-model's own figures; the run's ε is the largest of theirs,
    // and the top-level accounting fields are that sub-model's.
    let subs = v["mist"].as_array().expect("the sub-models");
    assert_eq!(subs.len(), 2, "{v}");
    let worst = subs
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            a["epsilon"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["epsilon"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(worst.1["epsilon"], v["epsilon"], "{v}");
    assert_eq!(worst.1["sample_rate"], v["sample_rate"], "{v}");
    // Each part's size sits outside the guarantee's fields (issue 24).
    let parts = v["not_covered_by_epsilon"]["mist_submodels"]
        .as_array()
        .expect("the parts, not covered by ε");
    assert!(subs.iter().all(|s| s.get("records").is_none()), "{v}");
    assert_eq!(parts[worst.0]["records"], v["dataset_size"], "{v}");
    assert!(
        parts.iter().all(|s| s["records"].as_u64().unwrap() > 0),
        "{v}"
    );
    assert!(html.contains("records (not covered by ε)"), "{html}");
    assert!(
        v["warnings"].to_string().contains("MIST"),
        "the per-sub-model accounting is stated: {v}"
    );
    let out = dpsgd(&["train", "--mist-weight", "1", "--quiet"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mist"));
    // Without --batch-size the recipe's batch (a quarter of the 96 training
    // records, 24) would not fit 4 parts of about 24: it is capped at a
    // quarter of N/M = 96/4, so 6, and the run trains.
    // A --batch-size of the user's is kept as given.
    let v = report_of(&dir, &tiny_csv(&dir), &["--mist"]);
    assert_eq!(v["batch_size"], 16, "{v}");
    ok(&dpsgd(&[
        "train",
        "--dataset",
        &data,
        "--mist",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["batch_size"], 6, "{v}");
}

/// `--devices N`: data-parallel DP steps whose result does not depend on
/// N (fixed shards, one noise draw); refused without DP.
#[test]
fn should_train_the_same_model_on_two_and_four_workers() {
    let dir = temp_dir("devices");
    let report = |n: &str| {
        let path = dir.join(format!("report-{n}.json"));
        ok(&dpsgd(&[
            "train",
            "--devices",
            n,
            "--epochs",
            "2",
            "--seed",
            "4",
            "--quiet",
            "--report",
            path.to_str().unwrap(),
        ]));
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let (two, four) = (report("2"), report("4"));
    assert_eq!(two["devices"], 2);
    assert_eq!(four["devices"], 4);
    for field in ["test_accuracy", "epsilon", "steps"] {
        assert_eq!(two[field], four[field], "{field}");
    }
    assert_eq!(
        two["not_covered_by_epsilon"]["final_loss"],
        four["not_covered_by_epsilon"]["final_loss"]
    );
    common::assert_usage_error(
        &dpsgd(&["train", "--devices", "2", "--non-private", "--quiet"]),
        &["--devices"],
    );
    // burn's collective all-reduce: CUDA GPUs only, and only with workers.
    common::assert_usage_error(
        &dpsgd(&["train", "--all-reduce", "--quiet"]),
        &["--all-reduce", "devices"],
    );
    if !dpsgd_burn::backend::Backend::enabled().contains(&dpsgd_burn::backend::Backend::Cuda) {
        common::assert_usage_error(
            &dpsgd(&["train", "--devices", "2", "--all-reduce", "--quiet"]),
            &["all-reduce", "CUDA"],
        );
    }
}

/// `--backend` lists exactly the backends compiled into this build, and
/// refuses the others as a usage error naming what is there.
#[test]
fn should_list_the_backends_this_build_enables() {
    let enabled: Vec<&str> = dpsgd_burn::backend::Backend::enabled()
        .into_iter()
        .map(dpsgd_burn::backend::Backend::name)
        .collect();
    let listed = format!("[possible values: {}]", enabled.join(", "));
    for command in [vec!["train", "--help"], vec!["bench", "step", "--help"]] {
        let out = dpsgd(&command);
        ok(&out);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(&listed), "{command:?}: {help}");
    }
    for name in ["flex", "ndarray", "wgpu", "cuda"] {
        if !enabled.contains(&name) {
            common::assert_usage_error(
                &dpsgd(&["train", "--backend", name, "--quiet"]),
                &["--backend", &listed],
            );
        }
    }
    common::assert_usage_error(
        &dpsgd(&["bench", "step", "--backend", "tpu"]),
        &["--backend"],
    );
}

/// The line naming `recipe` in a successful run's standard error.
fn recipe_line(out: &std::process::Output, recipe: &str) -> String {
    ok(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find(|l| l.starts_with(&format!("dpsgd: recipe {recipe}:")))
        .unwrap_or_else(|| panic!("no recipe line: {stderr}"))
        .to_owned()
}

/// The recipe line names the recipe and every setting in which the run
/// differs from its description, never settings the run does not use.
#[test]
fn should_name_the_recipe_and_what_the_flags_changed() {
    let out = dpsgd(&[
        "train",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--hidden",
        "16",
    ]);
    let line = recipe_line(&out, "general");
    assert!(
        line.ends_with("this run: hidden [16], batch_size 32, epochs 1"),
        "{line}"
    );
    let quiet = dpsgd(&["train", "--epochs", "1", "--quiet"]);
    ok(&quiet);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("recipe"));
}

/// A 26-record CSV file (`id,colour,label`): 13 records of class 0, 12 of
/// class 1, then `last`.
fn neighbour_csv(dir: &Path, name: &str, last: &str) -> PathBuf {
    let colours = ["red", "green", "blue"];
    let mut text = String::from("id,colour,label\n");
    for i in 0..25 {
        let class = u8::from(i >= 13);
        let x = if class == 0 { -1.0 } else { 1.0 } + ((i as f64) * 0.731).sin() * 0.3;
        text += &format!("{x:.4},{},{class}\n", colours[i % 3]);
    }
    text += last;
    text.push('\n');
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `dpsgd train` on `csv` with a small DP run and `extra` flags: its
/// report, model size and standard error.
fn small_run(dir: &Path, csv: &Path, extra: &[&str]) -> (serde_json::Value, u64, String) {
    let (report, model) = (dir.join("r.json"), dir.join("m.bin"));
    let _ = std::fs::remove_file(&model);
    let data = format!("csv:{}", csv.display());
    let mut args = vec![
        "train",
        "--dataset",
        &data,
        "--model",
        "mlp",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--noise-multiplier",
        "1",
        "--seed",
        "5",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
        "--save-model",
        model.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = dpsgd(&args);
    ok(&out);
    let size = std::fs::metadata(&model).unwrap().len();
    (
        read_json(&report),
        size,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 24, item 1: the last record's label decided the training set's
/// size (a stratified split: 20 or 21 records), and with it q, the steps
/// and δ. Now every released size is the same for both.
#[test]
fn should_train_on_as_many_records_whatever_one_label() {
    let dir = temp_dir("split-label");
    let zero = neighbour_csv(&dir, "zero.csv", "0.5,red,0");
    let one = neighbour_csv(&dir, "one.csv", "0.5,red,1");
    let (a, _, _) = small_run(&dir, &zero, &["--num-classes", "2"]);
    let (b, _, _) = small_run(&dir, &one, &["--num-classes", "2"]);
    assert_eq!(a["dataset_size"].as_u64(), Some(21), "{a}");
    for field in ["dataset_size", "sample_rate", "steps", "delta", "epsilon"] {
        assert_eq!(a[field], b[field], "{field}");
    }
}

/// Issue 24, item 2: a category only one record has added an input (the
/// saved model grew). With `--schema` the model's shape and the report's
/// preparation are the same for both files; without it the report says
/// what was read off the data (`public: false`) and the command warns once.
#[test]
fn should_fix_the_model_shape_with_a_public_schema() {
    let dir = temp_dir("schema");
    let base = neighbour_csv(&dir, "base.csv", "0.5,red,0");
    let odd = neighbour_csv(&dir, "odd.csv", "0.5,ultraviolet,0");
    let schema = dir.join("schema.json");
    std::fs::write(
        &schema,
        r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["0", "1"]}"#,
    )
    .unwrap();
    let flags = ["--schema", schema.to_str().unwrap()];
    let (a, a_size, a_err) = small_run(&dir, &base, &flags);
    let (b, b_size, b_err) = small_run(&dir, &odd, &flags);
    assert_eq!(a_size, b_size, "the model's shape");
    assert_eq!(a["preprocessing"], b["preprocessing"]);
    let p = &a["preprocessing"];
    assert_eq!(p["public"], true, "{p}");
    assert_eq!(p["read_from_data"], serde_json::json!([]), "{p}");
    assert_eq!(p["num_classes"], 2, "{p}");
    assert!(
        !a_err.contains("WARNING") && !b_err.contains("WARNING"),
        "{a_err}{b_err}"
    );

    let (a, a_size, a_err) = small_run(&dir, &base, &[]);
    let (_, b_size, b_err) = small_run(&dir, &odd, &[]);
    assert!(
        b_size > a_size,
        "read off the data, one more input: {a_size} {b_size}"
    );
    let p = &a["preprocessing"];
    assert_eq!(p["public"], false, "{p}");
    let read = p["read_from_data"].to_string();
    assert!(
        read.contains("categories of column 1 (`colour`)") && read.contains("number of classes"),
        "{p}"
    );
    for err in [&a_err, &b_err] {
        assert_eq!(
            err.matches("WARNING: dpsgd: read off the private data, not covered by ε")
                .count(),
            1,
            "{err}"
        );
        assert!(err.contains("--schema"), "{err}");
    }
}

/// `--schema` reaches every command that loads data (its options are
/// `train`'s), and the warning comes once per command.
#[test]
fn should_take_the_schema_in_every_command_and_warn_once() {
    for command in ["train", "audit", "sweep", "compare"] {
        let out = dpsgd(&[command, "--help"]);
        ok(&out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--schema <FILE>"),
            "{command}"
        );
    }
    let dir = temp_dir("schema-sweep");
    let base = neighbour_csv(&dir, "base.csv", "0.5,red,0");
    let schema = dir.join("schema.json");
    std::fs::write(
        &schema,
        r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["0", "1"]}"#,
    )
    .unwrap();
    let sweep = |extra: &[&str]| {
        let out_dir = dir.join("out");
        let data = format!("csv:{}", base.display());
        let mut args = vec![
            "sweep",
            "--dataset",
            &data,
            "--model",
            "logreg",
            "--epsilons",
            "2",
            "--repeats",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--quiet",
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = dpsgd(&args);
        ok(&out);
        (
            read_json(out_dir.join("sweep.json")),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (json, err) = sweep(&[]);
    assert_eq!(json["preprocessing"]["public"], false, "{json}");
    assert_eq!(err.matches("WARNING: dpsgd: read off").count(), 1, "{err}");
    let (json, err) = sweep(&["--schema", schema.to_str().unwrap()]);
    assert_eq!(json["preprocessing"]["public"], true, "{json}");
    assert!(!err.contains("WARNING: dpsgd: read off"), "{err}");
}

/// A schema that cannot be read or does not fit the data is a usage error
/// naming `--schema` (or `--num-classes` when the two disagree); a label
/// outside the schema's classes is corrupt data naming the line.
#[test]
fn should_refuse_a_bad_schema_naming_the_flag() {
    let dir = temp_dir("bad-schema");
    let base = neighbour_csv(&dir, "base.csv", "0.5,red,0");
    let data = format!("csv:{}", base.display());
    let write = |name: &str, json: &str| {
        let p = dir.join(name);
        std::fs::write(&p, json).unwrap();
        p.display().to_string()
    };
    let good = write(
        "good.json",
        r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["0", "1"]}"#,
    );
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec![
                "--schema".into(),
                dir.join("none.json").display().to_string(),
            ],
            vec!["--schema", "none.json"],
        ),
        (
            vec![
                "--schema".into(),
                write("bad.json", r#"{"columns": ["colour"]}"#),
            ],
            vec!["--schema", "bad.json", "invalid type"],
        ),
        (
            vec![
                "--schema".into(),
                write("col.json", r#"{"columns": {"shape": ["a"]}}"#),
            ],
            vec!["--schema", "`shape` is not in the header"],
        ),
        (
            vec![
                "--schema".into(),
                write("dup.json", r#"{"columns": {"colour": ["a", "a"]}}"#),
            ],
            vec!["--schema", "listed twice"],
        ),
        (
            vec![
                "--schema".into(),
                good.clone(),
                "--num-classes".into(),
                "3".into(),
            ],
            vec!["--num-classes", "2 classes of --schema"],
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["train", "--dataset", &data, "--epochs", "1", "--quiet"];
        args.extend(extra.iter().map(String::as_str));
        common::assert_usage_error(&dpsgd(&args), &expected);
    }
    common::assert_usage_error(
        &dpsgd(&["train", "--schema", &good, "--epochs", "1", "--quiet"]),
        &["--schema", "CSV"],
    );
    let unknown = neighbour_csv(&dir, "unknown.csv", "0.5,red,7");
    let out = dpsgd(&[
        "train",
        "--dataset",
        &format!("csv:{}", unknown.display()),
        "--schema",
        &good,
        "--epochs",
        "1",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        // The file and line, never the record's label.
        err.contains("unknown.csv") && err.contains("line 27") && !err.contains("`7`"),
        "{err}"
    );
}

/// The report and the page hold exact statistics of the private data
/// (per-epoch training losses, the training accuracy): readable by the
/// owner only, like the run state, even when they replace a readable file.
#[cfg(unix)]
#[test]
fn should_write_the_report_and_page_for_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("modes");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let (report, page) = (dir.join("r.json"), dir.join("r.html"));
    std::fs::write(&report, "old").unwrap();
    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&dpsgd(&[
        "train",
        "--dataset",
        &data,
        "--model",
        "logreg",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]));
    for path in [&report, &page] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", path.display());
    }
    assert!(read_json(&report)["not_covered_by_epsilon"]["epoch_history"].is_array());
}

/// IDX training and test images of different shapes are refused before
/// any training, exit 2 naming `--dataset` (issue 26, item 4: the run
/// used to fail after training with a matmul panic, exit 101).
#[test]
fn should_refuse_idx_images_of_two_shapes_before_training() {
    let small = idx_images("idx-shapes-small", 6, 20, 10);
    let large = idx_images("idx-shapes-large", 8, 20, 10);
    // The 8×8 test set beside the 6×6 training set.
    for file in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::copy(large.join(file), small.join(file)).unwrap();
    }
    let dataset = format!("idx:{}", small.display());
    let out = dpsgd(&["train", "--dataset", &dataset, "--epochs", "1", "--quiet"]);
    let stderr = common::assert_usage_error(&out, &["--dataset", "8×8", "6×6"]);
    assert!(out.stdout.is_empty(), "{stderr}");
}

/// `bench step --batch-sizes` measures each batch size in turn, one JSON
/// object per line; a zero among them is refused.
#[test]
fn bench_step_measures_each_batch_size_on_its_own_line() {
    let out = dpsgd(&[
        "bench",
        "step",
        "--model",
        "mlp",
        "--batch-sizes",
        "4,8",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--fallback-repeats",
        "0",
        "--json",
    ]);
    ok(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let sizes: Vec<u64> = lines
        .iter()
        .map(|l| l["batch_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [4, 8]);
    for line in &lines {
        let dp_ms = line["dp_ms"].as_f64().unwrap();
        assert!(dp_ms > 0.0, "{line}");
        assert!(line["ratio"].as_f64().unwrap().is_finite(), "{line}");
        let batch = line["batch_size"].as_f64().unwrap();
        let per_s = line["dp_examples_per_s"].as_f64().unwrap();
        assert!(
            (per_s - batch / dp_ms * 1e3).abs() <= 1e-9 * per_s,
            "{line}"
        );
        // Host memory is measured on a CPU backend.
        assert!(line["peak_mem_ratio"].as_f64().is_some(), "{line}");
    }
    common::assert_usage_error(
        &dpsgd(&["bench", "step", "--batch-sizes", "4,0", "--repeats", "1"]),
        &["--batch-size"],
    );
}

/// `bench step --rounds` alternates blocks of the two kinds of step: one
/// DP / non-private ratio per round, the medians over all of them; zero
/// rounds are refused.
#[test]
fn bench_step_alternates_rounds_of_both_steps() {
    let out = dpsgd(&[
        "bench",
        "step",
        "--batch-size",
        "4",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--rounds",
        "3",
        "--fallback-repeats",
        "0",
        "--json",
    ]);
    ok(&out);
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(line["rounds"], 3, "{line}");
    let ratios = line["round_ratios"].as_array().expect("round_ratios");
    assert_eq!(ratios.len(), 3, "{line}");
    assert!(
        ratios
            .iter()
            .all(|r| r.as_f64().is_some_and(|r| r.is_finite() && r > 0.0)),
        "{line}"
    );
    common::assert_usage_error(
        &dpsgd(&["bench", "step", "--rounds", "0", "--repeats", "1"]),
        &["--rounds"],
    );
}

/// `--pass-size` picks how the DP engine splits the batch (`auto`, the
/// default; `whole`; a number of examples), is echoed in the JSON, and
/// refuses anything else.
#[test]
fn bench_step_takes_the_engine_pass_size() {
    // Batch 8: one pass under `auto` (a batch of at most 64 examples is
    // never split) and `whole`; 3, 3 and 2 examples under `3`.
    for (flag, echoed, passes) in [
        (None, "auto", 1),
        (Some("whole"), "whole", 1),
        (Some("3"), "3", 3),
    ] {
        let mut args = vec![
            "bench",
            "step",
            "--batch-size",
            "8",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--fallback-repeats",
            "0",
            "--json",
        ];
        if let Some(flag) = flag {
            args.extend(["--pass-size", flag]);
        }
        let out = dpsgd(&args);
        ok(&out);
        let line: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
                .expect("one JSON object");
        assert_eq!(line["pass_size"], echoed, "{line}");
        assert_eq!(line["dp_passes"], passes, "{line}");
        assert_eq!(line["dp_method"], "fast path", "{line}");
        assert!(line["ratio"].as_f64().is_some_and(f64::is_finite), "{line}");
    }
    for bad in ["0", "-2", "half"] {
        common::assert_usage_error(
            &dpsgd(&["bench", "step", "--pass-size", bad, "--repeats", "1"]),
            &["--pass-size"],
        );
    }
}

/// `bench check` holds the engine's fast path and fallback to the
/// per-example loop on every benchmark model, in a batch that mixes
/// clipped and unclipped examples; a tolerance no f32 computation meets
/// fails it, naming every model.
#[test]
fn bench_check_holds_the_engine_to_the_per_example_loop() {
    let out = dpsgd(&["bench", "check", "--json"]);
    ok(&out);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let models: Vec<&str> = lines.iter().map(|l| l["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["mlp", "cnn", "transformer", "lstm"]);
    for l in &lines {
        assert_eq!(l["dp_method"], "fast path", "{l}");
        assert_eq!(l["passed"], true, "{l}");
        // The median norm as C: some examples clipped, some not.
        let clipped = l["clipped_examples"].as_u64().unwrap();
        assert!((1..8).contains(&clipped), "{l}");
        // Measured 2e-8..6e-7 on flex (f32 against f64) for the fallback
        // and for layers normed from what they sum; the text models' Gram
        // ghost norms clip by an upper bound of their rounding, 1.5e-5 to
        // 7.3e-5 above the exact norms and sums at 16 positions.
        for (field, limit) in [
            ("norm_relative_error", 2e-4),
            ("fast_path_relative_error", 2e-4),
            ("fallback_relative_error", 1e-5),
        ] {
            let e = l[field].as_f64().unwrap();
            assert!((0.0..limit).contains(&e), "{field}: {l}");
        }
    }
    let out = dpsgd(&["bench", "check", "--models", "mlp,lstm", "--tolerance", "0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mlp, lstm"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("FAILED")
            .count(),
        2
    );
}

/// `device` describes the host for a CPU backend, with a matrix product
/// checked against the host; `--require-gpu` refuses it (exit 1), so a
/// script cannot record a CPU's timings as a GPU's.
#[test]
fn device_describes_the_backend_and_refuses_a_cpu_as_a_gpu() {
    let out = dpsgd(&["device", "--json"]);
    ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["backend"], "flex");
    assert_eq!(r["device_type"], "cpu");
    assert_eq!(r["software"], false);
    assert!(
        r["smoke_matmul"]["relative_error"].as_f64().unwrap() < 1e-5,
        "{r}"
    );
    let out = dpsgd(&["device", "--require-gpu"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--require-gpu") && stderr.contains("host CPU"),
        "{stderr}"
    );
}
