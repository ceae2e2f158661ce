//! The `epsilon` and `calibrate` command-line contract.

use std::process::{Command, Output};

fn dpsgd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(args)
        .output()
        .expect("run dpsgd")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim().lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(text.trim()).expect("valid JSON")
}

const RUN: [&str; 8] = [
    "--sample-rate",
    "0.004266666666666667",
    "--noise-multiplier",
    "1.1",
    "--steps",
    "14062",
    "--delta",
    "1e-5",
];

#[test]
fn should_print_rdp_epsilon_as_json() {
    let mut args = vec!["epsilon"];
    args.extend(RUN);
    args.push("--json");
    let v = json(&dpsgd(&args));
    assert_eq!(v["accountant"], "rdp");
    assert_eq!(v["delta"], 1e-5);
    let eps = v["epsilon"].as_f64().unwrap();
    assert!((eps - 2.597).abs() < 2e-3, "{eps}");
    assert!(v["order"].as_f64().unwrap() > 1.0);
}

#[test]
fn should_print_pld_epsilon_as_json() {
    let mut args = vec!["epsilon"];
    args.extend(RUN);
    args.extend(["--accountant", "pld", "--json"]);
    let v = json(&dpsgd(&args));
    assert_eq!(v["accountant"], "pld");
    let eps = v["epsilon"].as_f64().unwrap();
    assert!((eps - 2.382).abs() < 2e-3, "{eps}");
}

#[test]
fn should_calibrate_below_the_target() {
    for accountant in ["rdp", "pld"] {
        let v = json(&dpsgd(&[
            "calibrate",
            "--sample-rate",
            "0.004266666666666667",
            "--steps",
            "14062",
            "--delta",
            "1e-5",
            "--target-epsilon",
            "2.5",
            "--accountant",
            accountant,
            "--json",
        ]));
        let eps = v["epsilon"].as_f64().unwrap();
        let sigma = v["noise_multiplier"].as_f64().unwrap();
        assert!(eps <= 2.5 && eps > 2.49, "{accountant}: {eps}");
        // σ = 1.1 gives 2.597 (RDP) / 2.382 (PLD), so 2.5 needs more / less.
        if accountant == "rdp" {
            assert!(sigma > 1.1, "{sigma}");
        } else {
            assert!(sigma < 1.1, "{sigma}");
        }
    }
}

#[test]
fn should_answer_in_words_without_json() {
    let mut args = vec!["epsilon"];
    args.extend(RUN);
    let out = dpsgd(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("ε = 2.59"), "{text}");
}

#[test]
fn should_exit_2_naming_the_bad_argument() {
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "epsilon",
                "--sample-rate",
                "1.5",
                "--noise-multiplier",
                "1",
                "--steps",
                "1",
                "--delta",
                "1e-5",
            ],
            "--sample-rate",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "0",
                "--steps",
                "1",
                "--delta",
                "1e-5",
            ],
            "--noise-multiplier",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "-3",
                "--delta",
                "1e-5",
            ],
            "--steps",
        ),
        (
            &[
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "3",
                "--delta",
                "1",
            ],
            "--delta",
        ),
        (
            &[
                "calibrate",
                "--sample-rate",
                "0.1",
                "--steps",
                "3",
                "--delta",
                "1e-5",
                "--target-epsilon",
                "nan",
            ],
            "--target-epsilon",
        ),
    ];
    for (args, flag) in cases {
        let out = dpsgd(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(flag), "{err} should name {flag}");
    }
    let out = dpsgd(&["epsilon", "--sample-rate", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--delta"));
}
