//! `dpsgd audit`'s contract (issue 13): the table, the JSON report's
//! fields, the ROC plots and the inversion grid, the lower bound next to
//! the claim, and one-line usage errors.

mod common;

use common::{assert_usage_error, dpsgd, ok, read_json, temp_dir};

#[test]
fn should_write_the_report_plots_and_inversion_grid_of_a_non_private_audit() {
    let dir = temp_dir("dpsgd-audit", "full");
    let out = dir.join("out");
    let report = dir.join("report.json");
    let model = dir.join("model.bin");
    let stdout = ok(&dpsgd(&[
        "audit",
        "--non-private",
        "--epochs",
        "20",
        "--seed",
        "1",
        "--attacks",
        "loss,confidence,entropy,modified-entropy,shadow,lira,label-only,inversion",
        "--shadow-models",
        "4",
        "--canaries",
        "50",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--save-model",
        model.to_str().unwrap(),
    ]));
    let v = read_json(&report);
    assert!(
        std::fs::metadata(&model).unwrap().len() > 0,
        "the target model is saved"
    );
    assert_eq!(
        v,
        read_json(out.join("audit.json")),
        "--report is audit.json"
    );
    for field in ["test_accuracy", "train_accuracy"] {
        let x = v[field].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&x), "{field}: {}", v[field]);
    }
    assert!(v["epsilon"].is_null(), "non-private: {}", v["epsilon"]);
    let names: Vec<&str> = v["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "loss",
            "confidence",
            "entropy",
            "modified-entropy",
            "lira-online",
            "lira-offline",
            "shadow",
            "label-only"
        ]
    );
    for a in v["attacks"].as_array().unwrap() {
        for field in ["auc", "tpr_at_fpr_0_01", "tpr_at_fpr_0_001"] {
            let x = a[field].as_f64().unwrap_or(-1.0);
            assert!(
                (0.0..=1.0).contains(&x),
                "{}: {field} = {}",
                a["name"],
                a[field]
            );
        }
        assert!(!a["slices"].as_array().unwrap().is_empty(), "{}", a["name"]);
        assert_bca(a, 0.95);
    }
    let bound = v["epsilon_lower_bound"]
        .as_f64()
        .expect("a bound with canaries");
    assert!(bound >= 0.0);
    assert_eq!(v["canary_audit"]["one_run"]["canaries"], 50);
    assert_eq!(v["inversion"]["classes"].as_array().unwrap().len(), 10);
    // The table names every attack and the lower bound.
    for name in names {
        assert!(stdout.contains(name), "{name} not in {stdout}");
    }
    assert!(stdout.contains("ε lower bound"), "{stdout}");
    assert!(
        stdout.contains("intervals: BCa bootstrap (Efron 1987), level 1 − α = 95%"),
        "{stdout}"
    );
    for svg in ["roc.svg", "roc-loglog.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.trim_end().ends_with("</svg>"), "{svg}");
        assert!(
            text.contains("lira-online") && text.contains("false positive rate"),
            "{svg}"
        );
    }
    let png = std::fs::read(out.join("inversion.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Owner-only like every output (it was created with the umask's mode).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("inversion.png"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "inversion.png");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An attack's BCa intervals (issue 28): the AUC's and the TPRs' at 1% and
/// 0.1% FPR, each at `level`, with `low ≤ estimate ≤ high` and the
/// estimate the report's own figure; the percentile interval stays.
fn assert_bca(a: &serde_json::Value, level: f64) {
    for (figure, key) in [
        ("auc", "auc_bca"),
        ("tpr_at_fpr_0_01", "tpr_at_fpr_0_01_bca"),
        ("tpr_at_fpr_0_001", "tpr_at_fpr_0_001_bca"),
    ] {
        let ci = &a[key];
        let get = |f: &str| {
            ci[f]
                .as_f64()
                .unwrap_or_else(|| panic!("{}: {key}.{f} = {}", a["name"], ci[f]))
        };
        let (low, estimate, high) = (get("low"), get("estimate"), get("high"));
        assert_eq!(get("level"), level, "{}: {key}", a["name"]);
        assert_eq!(
            estimate,
            a[figure].as_f64().unwrap(),
            "{}: {key}",
            a["name"]
        );
        assert!(
            (0.0..=1.0).contains(&low) && low <= estimate && estimate <= high && high <= 1.0,
            "{}: {key} = {ci}",
            a["name"]
        );
        assert!(get("acceleration").is_finite() && get("bias_correction").is_finite());
    }
    assert!(a["auc_interval"]["low"].is_number(), "{}", a["name"]);
}

/// The largest bound the report's one-run audit could prove (every guess
/// right), by the library's own bound function: "bound ≤ claim" can fail
/// only when this is above the claim.
fn one_run_cap(v: &serde_json::Value) -> f64 {
    let one = &v["canary_audit"]["one_run"];
    let guesses = one["guesses"].as_u64().unwrap();
    dpsgd::audit::lower_bound::one_run_epsilon(
        one["canaries"].as_u64().unwrap(),
        guesses,
        guesses,
        one["delta"].as_f64().unwrap(),
        one["alpha"].as_f64().unwrap(),
    )
    .unwrap()
}

/// A claim its 20 guesses could refute (ε = 1; they can never prove more
/// than ≈ 1.82, so a claim of 2 could never fail the check — issue 25).
#[test]
fn should_report_epsilon_and_a_lower_bound_below_it_for_a_dp_audit() {
    let dir = temp_dir("dpsgd-audit", "dp");
    let out = ok(&dpsgd(&[
        "audit",
        "--target-epsilon",
        "1",
        "--epochs",
        "10",
        "--seed",
        "2",
        "--attacks",
        "loss",
        "--canaries",
        "100",
        "--canary-kind",
        "ood",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
        "--report",
        "-",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout holds the JSON alone");
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps <= 1.0 + 1e-6, "{eps}");
    assert_eq!(v["canary_audit"]["one_run"]["guesses"], 20);
    let cap = one_run_cap(&v);
    assert!(cap > eps, "{cap}: the check below could not fail");
    let bound = v["epsilon_lower_bound"].as_f64().unwrap();
    assert!(bound <= eps, "lower bound {bound} above the claim {eps}");
    assert_eq!(v["canary_audit"]["exceeds_claim"], false);
    assert_eq!(v["canary_audit"]["kind"], "out-of-distribution");
    assert!(v.get("inversion").is_none_or(serde_json::Value::is_null));
    for a in v["attacks"].as_array().unwrap() {
        assert_bca(a, 0.95);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Positive control (issue 25): Dirac canaries on a mechanism whose noise
/// is cut twentyfold while the claim keeps σ — through the test-only fault
/// `DPSGD_TEST_FAULT_NOISE_SCALE`, read by debug builds only — refute the
/// claim: `exceeds_claim` and exit status 3. The same audit of the honest
/// mechanism passes, at a claim its guesses could refute.
#[test]
fn should_exit_3_when_the_audit_refutes_a_broken_mechanism() {
    let dir = temp_dir("dpsgd-audit", "fault");
    let audit = |fault: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dpsgd"));
        cmd.args([
            "audit",
            "--target-epsilon",
            "1",
            "--epochs",
            "5",
            "--seed",
            "3",
            "--attacks",
            "loss",
            "--canaries",
            "100",
            "--canary-kind",
            "dirac",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
            "--report",
            "-",
        ]);
        cmd.env_remove(dpsgd::train::audit::FAULT_NOISE_SCALE_VAR);
        if let Some(s) = fault {
            cmd.env(dpsgd::train::audit::FAULT_NOISE_SCALE_VAR, s);
        }
        let out = cmd.output().expect("run dpsgd");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (out, v)
    };
    let (out, v) = audit(None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(one_run_cap(&v) > eps, "the honest audit could fail");
    assert_eq!(v["canary_audit"]["exceeds_claim"], false, "{v}");

    let (out, faulty) = audit(Some("0.05"));
    if !cfg!(debug_assertions) {
        // A release build never reads the test-only fault: the same run
        // passes, without the warning.
        assert_eq!(
            out.status.code(),
            Some(0),
            "release builds ignore the fault"
        );
        assert_eq!(faulty["canary_audit"]["exceeds_claim"], false);
        return;
    }

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("exceeds the claimed ε"), "{stderr}");
    assert_eq!(faulty["canary_audit"]["exceeds_claim"], true, "{faulty}");
    assert_eq!(faulty["canary_audit"]["kind"], "dirac");
    assert_eq!(
        faulty["epsilon"], v["epsilon"],
        "the claim is the honest one"
    );
    let bound = faulty["epsilon_lower_bound"].as_f64().unwrap();
    assert!(bound > eps, "{bound} ≤ {eps}");
    let warned = faulty["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("TEST-ONLY FAULT"));
    assert!(warned, "{}", faulty["warnings"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn should_refuse_unusable_audit_arguments_in_one_line() {
    assert_usage_error(
        &dpsgd(&["audit", "--attacks", "loss,nope"]),
        &["--attacks", "nope"],
    );
    assert_usage_error(
        &dpsgd(&["audit", "--attacks", "lira", "--shadow-models", "1"]),
        &["--shadow-models"],
    );
    assert_usage_error(
        &dpsgd(&["audit", "--canaries", "2", "--canary-guesses", "5"]),
        &["--canary-guesses"],
    );
    assert_usage_error(
        &dpsgd(&["audit", "--canary-kind", "purple"]),
        &["--canary-kind"],
    );
}

/// Mislabeled or ood canaries with early stopping are refused before any
/// data is read or any folder created: the hold-out would be taken from
/// the training set after the canaries were added (issue 24, 5b).
#[test]
fn should_refuse_input_canaries_with_early_stopping() {
    let dir = temp_dir("dpsgd-audit", "canaries-early-stopping");
    for kind in ["mislabeled", "ood"] {
        let out = dir.join(kind);
        assert_usage_error(
            &dpsgd(&[
                "audit",
                "--canaries",
                "20",
                "--canary-kind",
                kind,
                "--early-stopping",
                "2",
                "--quiet",
                "--out",
                out.to_str().expect("utf-8 path"),
            ]),
            &["--canaries", "--early-stopping"],
        );
        assert!(!out.exists(), "{kind}: nothing written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Output hardening: the black-box attacks score what the model releases;
/// attacks that cannot run on a release say so.
#[test]
fn should_attack_the_hardened_release() {
    let dir = temp_dir("dpsgd-audit", "release");
    let run = |release: &str| {
        let out = ok(&dpsgd(&[
            "audit",
            "--non-private",
            "--epochs",
            "10",
            "--seed",
            "3",
            "--attacks",
            "loss,shadow,inversion",
            "--shadow-models",
            "2",
            "--release",
            release,
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
            "--report",
            "-",
        ]));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let full = run("full");
    let labels = run("label-only");
    assert_eq!(labels["release"], "LabelOnly");
    let auc = |v: &serde_json::Value| v["attacks"][0]["auc"].as_f64().unwrap();
    assert_ne!(
        auc(&full),
        auc(&labels),
        "the loss attack reads the release"
    );
    let warnings = labels["warnings"].to_string();
    assert!(warnings.contains("shadow attack skipped"), "{warnings}");
    // Inversion runs black-box against the release (gradient estimates
    // from the released vectors, counted as queries); white-box against a
    // full release without a budget.
    assert!(labels["inversion"]["confidence"].is_array(), "{labels}");
    assert!(full["inversion"]["confidence"].is_array(), "{full}");
    let queried = |v: &serde_json::Value, name: &str| {
        v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["client"] == name)
    };
    assert!(queried(&labels, "inversion") && !queried(&full, "inversion"));
    assert_usage_error(&dpsgd(&["audit", "--release", "top-0"]), &["--release"]);
    assert_usage_error(&dpsgd(&["audit", "--release", "round-16"]), &["--release"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A per-attack query budget: every black-box attack is a client of the
/// model; one whose queries would pass the budget is refused, counted and
/// reported, the others run.
#[test]
fn should_refuse_an_attack_past_its_query_budget() {
    let dir = temp_dir("dpsgd-audit", "budget");
    let run = |budget: Option<&str>| {
        let mut args = vec![
            "audit",
            "--non-private",
            "--epochs",
            "5",
            "--seed",
            "3",
            "--attacks",
            "loss,label-only",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
            "--report",
            "-",
        ];
        if let Some(b) = budget {
            args.extend(["--query-budget", b]);
        }
        serde_json::from_str::<serde_json::Value>(&ok(&dpsgd(&args))).unwrap()
    };
    let client = |v: &serde_json::Value, name: &str| {
        v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["client"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no client {name}: {v}"))
    };
    // Unlimited: both run; the loss attack queries each record once, the
    // label-only attack many times.
    let free = run(None);
    assert!(free["query_budget"].is_null());
    assert_eq!(client(&free, "loss")["served"], 1797);
    let label_only = client(&free, "label-only")["served"].as_u64().unwrap();
    assert!(label_only > 2000, "{label_only}");
    assert_eq!(free["attacks"].as_array().unwrap().len(), 2);
    // A budget of 2 000 records: the loss attack fits, label-only does not.
    let capped = run(Some("2000"));
    assert_eq!(capped["query_budget"], 2000);
    assert_eq!(client(&capped, "loss")["served"], 1797);
    let refused = client(&capped, "label-only");
    assert!(refused["served"].as_u64().unwrap() <= 2000, "{refused}");
    assert!(refused["refused"].as_u64().unwrap() > 0, "{refused}");
    assert_eq!(capped["refused_attacks"], serde_json::json!(["label-only"]));
    let names: Vec<&str> = capped["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["loss"]);
    assert!(capped["warnings"].to_string().contains("query budget"));
    assert_usage_error(
        &dpsgd(&["audit", "--query-budget", "0"]),
        &["--query-budget"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--canary-kind dirac` plants gradient canaries in the target's own run
/// (issue 28): the report says what the auditor saw (`--canary-view`), N
/// counts the slots, and the noise check of a correct run passes; the
/// view of canaries that are not gradient canaries is a usage error.
#[test]
fn should_plant_white_box_canaries_in_the_target_and_report_the_view() {
    let dir = temp_dir("dpsgd-audit", "white-box");
    for view in ["all-steps", "final"] {
        let out = dpsgd(&[
            "audit",
            "--target-epsilon",
            "2",
            "--epochs",
            "2",
            "--seed",
            "4",
            "--attacks",
            "loss",
            "--canaries",
            "60",
            "--canary-kind",
            "dirac",
            "--canary-view",
            view,
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ]);
        let stdout = ok(&out);
        assert!(stdout.contains("white-box canaries"), "{stdout}");
        let v = read_json(dir.join("audit.json"));
        let w = &v["canary_audit"]["white_box"];
        assert_eq!(w["view"], view, "{v}");
        assert_eq!(w["canaries"], 60);
        let n = v["target"]["dataset_size"].as_u64().unwrap();
        assert_eq!(w["dataset_size"].as_u64(), Some(n), "N counts the slots");
        assert_eq!(v["canary_audit"]["one_run"]["canaries"], 60);
        // The claim read as the run's own privacy curve: a bound, below
        // the claim of a correct run, never below the (ε, δ) reading.
        let e = &v["canary_audit"]["estimators"];
        let curve = e["fdp_run_curve_epsilon"].as_f64().expect("computed");
        assert!(curve <= v["epsilon"].as_f64().unwrap(), "{e}");
        assert!(curve + 1e-9 >= e["fdp_epsilon"].as_f64().unwrap(), "{e}");
        match view {
            "all-steps" => {
                assert!(w["observed_steps"].as_u64().unwrap() > 0);
                assert_eq!(w["noise_check"]["consistent"], true, "{w}");
            }
            _ => {
                assert_eq!(w["observed_steps"], 0);
                assert!(w["noise_check"].is_null(), "{w}");
            }
        }
    }
    assert_usage_error(
        &dpsgd(&["audit", "--canaries", "10", "--canary-view", "final"]),
        &["--canary-view", "dirac"],
    );
    assert_usage_error(
        &dpsgd(&["audit", "--canary-kind", "dirac", "--canary-view", "every"]),
        &["--canary-view", "every"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--attacks rmia-offline` (issue 28) runs RMIA on its shadows and
/// reports its offline row alone; `lira-online` likewise; `rmia` both.
#[test]
fn should_report_only_the_asked_variant_of_lira_and_rmia() {
    let dir = temp_dir("dpsgd-audit", "variants");
    for (attacks, rows) in [
        ("rmia-offline", vec!["rmia-offline"]),
        (
            "lira-online,rmia-online",
            vec!["lira-online", "rmia-online"],
        ),
        ("rmia", vec!["rmia-online", "rmia-offline"]),
    ] {
        let out = dpsgd(&[
            "audit",
            "--non-private",
            "--epochs",
            "2",
            "--seed",
            "5",
            "--attacks",
            attacks,
            "--shadow-models",
            "2",
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
        ]);
        ok(&out);
        let v = read_json(dir.join("audit.json"));
        let names: Vec<&str> = v["attacks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, rows, "--attacks {attacks}");
        assert_eq!(v["shadow_models"], 2, "{attacks}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Inversion reconstructs every class, whatever classes the private data
/// holds: a class with no member or no non-member is left unmeasured
/// (`null`), and with none measured there is no distance ratio — not a
/// ratio of 0, which would read as reconstructions on the training data.
#[test]
fn should_leave_inversion_unmeasured_where_no_class_has_both_parts() {
    let dir = temp_dir("dpsgd-audit-inversion", "unmeasured");
    let data = dir.join("tiny.csv");
    // Seed 1 splits these four records into two of one class and two of
    // the other: no class has both a member and a non-member.
    std::fs::write(
        &data,
        "a,b,label\n0.1,0.2,0\n0.9,0.8,1\n0.3,0.1,0\n0.7,0.9,1\n",
    )
    .unwrap();
    let out = dir.join("out");
    let page = dir.join("page.html");
    let dataset = format!("csv:{}", data.display());
    let stdout = ok(&dpsgd(&[
        "audit",
        "--dataset",
        &dataset,
        "--num-classes",
        "2",
        "--attacks",
        "inversion",
        "--seed",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]));
    let inversion = &read_json(out.join("audit.json"))["inversion"];
    assert_eq!(inversion["classes"], serde_json::json!([0, 1]));
    assert_eq!(inversion["measured_classes"], 0);
    assert_eq!(inversion["mean_distance_ratio"], serde_json::Value::Null);
    assert_eq!(
        inversion["distance_to_member"],
        serde_json::json!([null, null])
    );
    assert!(
        stdout.contains("nearest non-member distance not measured"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&page).unwrap();
    assert!(
        page.contains("nearest unseen one is not measured"),
        "the page"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
