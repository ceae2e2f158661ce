//! What `dpsgd epsilon` and `dpsgd calibrate` answer where PLD's
//! discretisation is strained (issue 26): 1e8 steps, δ = 1e-300, σ = 1e300.
//! Each test failed before the fix.

mod common;

use common::dpsgd;
use std::process::Output;

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("valid JSON")
}

fn refusal(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn should_calibrate_less_noise_with_pld_than_rdp_at_1e8_steps() {
    // Was σ = 1110.5 with PLD against 404.5 with RDP; now 373.5.
    let sigma = |accountant| {
        json(&dpsgd(&[
            "calibrate",
            "--sample-rate",
            "0.01",
            "--steps",
            "100000000",
            "--delta",
            "1e-5",
            "--target-epsilon",
            "1",
            "--accountant",
            accountant,
            "--json",
        ]))["noise_multiplier"]
            .as_f64()
            .unwrap()
    };
    let (rdp, pld) = (sigma("rdp"), sigma("pld"));
    assert!(pld < 0.95 * rdp, "PLD σ {pld} vs RDP σ {rdp}");
}

#[test]
fn should_refuse_delta_1e_300_with_pld_naming_delta() {
    // Was "no noise_multiplier meets the target: even σ = 1e6 gives ε > 3";
    // RDP needs σ = 6.6.
    let run = |accountant| {
        dpsgd(&[
            "calibrate",
            "--sample-rate",
            "0.01",
            "--steps",
            "1000",
            "--delta",
            "1e-300",
            "--target-epsilon",
            "3",
            "--accountant",
            accountant,
        ])
    };
    let err = refusal(&run("pld"));
    assert!(
        err.contains("δ = 1e-300 is below what PLD resolves") && err.contains("RDP"),
        "{err}"
    );
    assert!(!err.contains("1e6"), "{err}");
    let out = run("rdp");
    assert!(out.status.success());
    // δ is written as 1e-300, not as 300 digits.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("at δ = 1e-300 "), "{text}");
}

#[test]
fn should_refuse_sigma_1e300_with_pld_without_nan() {
    // Was "privacy loss distribution has mass NaN at loss 0".
    let run = |accountant, json| {
        let mut args = vec![
            "epsilon",
            "--sample-rate",
            "0.01",
            "--steps",
            "1000",
            "--delta",
            "1e-5",
            "--noise-multiplier",
            "1e300",
            "--accountant",
            accountant,
        ];
        if json {
            args.push("--json");
        }
        dpsgd(&args)
    };
    let err = refusal(&run("pld", false));
    assert!(err.contains("σ = 1e300") && err.contains("RDP"), "{err}");
    assert!(!err.contains("NaN"), "{err}");
    let eps = json(&run("rdp", true))["epsilon"].as_f64().unwrap();
    assert!(eps < 1e-6, "{eps}");
}
