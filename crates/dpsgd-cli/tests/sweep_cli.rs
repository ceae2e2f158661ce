//! `dpsgd sweep`'s plot and failure contract: one readable tick per budget,
//! the dataset and δ in the title, no empty legend entries, and `--repeats 0`
//! refused.

mod common;

use common::{assert_usage_error, dpsgd};
use std::path::PathBuf;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpsgd-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The texts of the SVG's `<text>` elements.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let start = t.find('>')? + 1;
            let end = t.find("</text>")?;
            Some(t[start..end].trim().to_owned())
        })
        .collect()
}

fn sweep(name: &str, epsilons: &str) -> (Vec<String>, String) {
    let out = out_dir(name);
    let result = dpsgd(&[
        "sweep",
        "--epsilons",
        epsilons,
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let svg = std::fs::read_to_string(out.join("sweep.svg")).expect("sweep.svg");
    let csv = std::fs::read_to_string(out.join("sweep.csv")).expect("sweep.csv");
    let _ = std::fs::remove_dir_all(&out);
    (texts(&svg), csv)
}

#[test]
fn should_label_each_budget_once_and_name_dataset_and_delta() {
    let (texts, csv) = sweep("ticks", "0.5,1,2,10,inf");
    assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
    // Two panels (accuracy, leakage): one tick label per budget in each.
    for label in ["0.5", "1", "2", "10"] {
        let n = texts.iter().filter(|t| *t == label).count();
        assert_eq!(n, 2, "tick {label} drawn {n} times: {texts:?}");
    }
    // plotters' own log-axis labels ("10.0" twice, "1.0") are not drawn;
    // accuracy is labelled in percent, so no y label reads like a budget.
    assert!(
        !texts.iter().any(|t| t == "10.0" || t == "1.0"),
        "{texts:?}"
    );
    let title = &texts[0];
    assert!(
        title.contains("digits") && title.contains("δ = 1e-5"),
        "{title}"
    );
}

#[test]
fn should_draw_a_tick_for_a_single_budget_and_no_empty_legend() {
    let (texts, _) = sweep("single", "2");
    assert_eq!(texts.iter().filter(|t| *t == "2").count(), 2, "{texts:?}");
    let (texts, _) = sweep("inf", "inf");
    assert!(
        !texts.iter().any(|t| t.contains("DP-SGD (mean")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("non-private")),
        "{texts:?}"
    );
}

#[test]
fn should_refuse_zero_repeats() {
    assert_usage_error(&dpsgd(&["sweep", "--repeats", "0"]), &["--repeats"]);
}

/// K canary audits are tested at 5%/K each (Bonferroni), so the sweep's
/// exit status 3 keeps its 5% false-alarm rate over the whole family
/// (issue 24, 5a); sweep.json says so, and every run's bound is at 5%/K.
#[test]
fn should_test_each_canary_audit_at_the_family_alpha_over_k() {
    let out = out_dir("bonferroni");
    let result = dpsgd(&[
        "sweep",
        "--epsilons",
        "2,8,inf",
        "--repeats",
        "2",
        "--canaries",
        "20",
        "--attacks",
        "loss",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let json = common::read_json(out.join("sweep.json"));
    let _ = std::fs::remove_dir_all(&out);
    // Two DP budgets × two repeats: four claims (the non-private runs
    // claim nothing).
    assert_eq!(json["family_alpha"], 0.05, "{json}");
    assert_eq!(json["audits_tested"], 4, "{json}");
    assert_eq!(json["per_audit_alpha"], 0.0125, "{json}");
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 6);
    for run in runs {
        assert_eq!(run["canary_audit"]["one_run"]["alpha"], 0.0125, "{run}");
    }
}

#[test]
fn should_say_how_the_exit_status_controls_false_alarms_in_help() {
    let help = dpsgd(&["sweep", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in ["Bonferroni", "0.05/K", "per_audit_alpha", "at most 5%"] {
        assert!(text.contains(needle), "`{needle}` not in {text}");
    }
}

/// Input canaries and early stopping together are refused before any data
/// is read or any folder created (issue 24, 5b).
#[test]
fn should_refuse_canaries_with_early_stopping() {
    let out = out_dir("canaries-early-stopping");
    let line = common::assert_usage_error(
        &dpsgd(&[
            "sweep",
            "--canaries",
            "20",
            "--early-stopping",
            "2",
            "--out",
            out.to_str().expect("utf-8 path"),
        ]),
        &["--canaries", "--early-stopping"],
    );
    assert!(!out.exists(), "{line}");
}

/// Positive control (issue 25): the sweep's exit status 3. One DP budget
/// (K = 1: each audit at α = 0.05), ε = 1, 200 mislabeled canaries on a
/// model that memorises them: its 40 guesses could prove up to ≈ 2.55, so
/// the honest run's "bound ≤ claim" can fail, and passes (exit 0). With the
/// training noise cut a thousandfold through the test-only fault
/// `DPSGD_TEST_FAULT_NOISE_SCALE` (debug builds only; input canaries are
/// weak, so the cut is larger than the Dirac audit's) while the claim
/// keeps σ, the bound exceeds the claim and the sweep exits 3. (A
/// hundredfold cut refuted the claim with 32–37 of 40 guesses right,
/// depending on the seed and the noise values: bounds of 0.70–1.50
/// against ε = 1, too close to call. A thousandfold cut got 38–40 right,
/// bounds of 1.74–2.55, at seeds 3, 4 and 5.)
#[test]
fn should_exit_3_when_a_canary_audit_refutes_a_broken_mechanism() {
    let var = dpsgd::train::audit::FAULT_NOISE_SCALE_VAR;
    let sweep = |name: &str, fault: Option<&str>| {
        let out = out_dir(name);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dpsgd"));
        cmd.args([
            "sweep",
            "--epsilons",
            "1",
            "--repeats",
            "1",
            "--canaries",
            "200",
            "--attacks",
            "loss",
            "--epochs",
            "60",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--seed",
            "3",
            "--quiet",
            "--out",
            out.to_str().expect("utf-8 path"),
        ]);
        cmd.env_remove(var);
        if let Some(s) = fault {
            cmd.env(var, s);
        }
        let result = cmd.output().expect("run dpsgd");
        let json = common::read_json(out.join("sweep.json"));
        let _ = std::fs::remove_dir_all(&out);
        (result, json["runs"][0].clone())
    };
    let (result, honest) = sweep("honest", None);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let eps = honest["epsilon"].as_f64().expect("a claim");
    let one = &honest["canary_audit"]["one_run"];
    assert_eq!(one["alpha"], 0.05, "{one}");
    let guesses = one["guesses"].as_u64().unwrap();
    let cap = dpsgd::audit::lower_bound::one_run_epsilon(
        one["canaries"].as_u64().unwrap(),
        guesses,
        guesses,
        one["delta"].as_f64().unwrap(),
        one["alpha"].as_f64().unwrap(),
    )
    .unwrap();
    assert!(cap > eps, "{cap}: the honest run's check could not fail");
    assert!(honest["epsilon_lower_bound"].as_f64().unwrap() <= eps);
    assert_eq!(honest["canary_audit"]["exceeds_claim"], false);

    let (result, faulty) = sweep("fault", Some("0.001"));
    if !cfg!(debug_assertions) {
        // A release build never reads the test-only fault: the same run
        // passes, without the warning.
        assert_eq!(
            result.status.code(),
            Some(0),
            "release builds ignore the fault"
        );
        assert_eq!(faulty["canary_audit"]["exceeds_claim"], false);
        return;
    }

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("exceeds the claimed ε"), "{stderr}");
    assert_eq!(faulty["canary_audit"]["exceeds_claim"], true, "{faulty}");
    assert_eq!(faulty["epsilon"], honest["epsilon"], "the claim is σ's");
    assert!(faulty["epsilon_lower_bound"].as_f64().unwrap() > eps);
    let warned = faulty["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("TEST-ONLY FAULT"));
    assert!(warned, "{}", faulty["warnings"]);
}
