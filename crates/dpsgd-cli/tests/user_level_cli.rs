//! `--privacy-unit user`, `--user-column` and `--max-records-per-user`:
//! what `--help` and README promise, the summary line and report at user
//! level, the finding at record level on data with users, and one-line
//! refusals.

mod common;

use common::{assert_usage_error, dpsgd, ok, read_json, temp_dir};
use std::path::{Path, PathBuf};

/// 40 users owning 1–4 records each (100 records), near-identical within
/// a user, with a `user` column first.
fn users_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("user,a,b,label\n");
    for u in 0..40usize {
        let class = u % 2;
        let c = class as f64 * 2.0 - 1.0;
        for r in 0..(u % 4 + 1) {
            let jitter = ((u as f64) * 0.731).sin() * 0.3 + r as f64 * 0.01;
            text += &format!("p{u},{},{},{class}\n", c + jitter, -c + jitter);
        }
    }
    let p = dir.join("users.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    let data = format!("csv:{}", users_csv(dir).display());
    let mut args = vec![
        "train",
        "--dataset",
        &data,
        "--model",
        "logreg",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--seed",
        "3",
        "--num-classes",
        "2",
    ];
    args.extend_from_slice(extra);
    dpsgd(&args)
}

#[test]
fn help_describes_the_unit_of_privacy() {
    let out = dpsgd(&["train", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--privacy-unit <record|user>",
        "--user-column <COL>",
        "--max-records-per-user <K>",
    ] {
        assert!(help.contains(flag), "{flag} not in --help");
    }
    assert!(help.contains("protects any one user and all their records"));
    let out = dpsgd(&["audit", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--canary-records-per-user <K>"));
    let readme = include_str!("../README.md"); // the CLI's reference
    for flag in [
        "--privacy-unit record|user",
        "--user-column COL",
        "--max-records-per-user K",
        "--canary-records-per-user K",
    ] {
        assert!(readme.contains(flag), "{flag} not in the CLI's README");
    }
}

#[test]
fn should_train_at_user_level_and_say_so() {
    let dir = temp_dir("dpsgd-user-cli", "train");
    let report = dir.join("r.json");
    let out = train(
        &dir,
        &[
            "--user-column",
            "user",
            "--privacy-unit",
            "user",
            "--max-records-per-user",
            "3",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let stdout = ok(&out);
    assert!(
        stdout
            .contains("for any one user's records (all of them; up to 3 of them train each step)"),
        "{stdout}"
    );
    let r = read_json(&report);
    assert_eq!(r["privacy_unit"], "user");
    assert_eq!(r["max_records_per_user"], 3);
    // 40 users, a fifth held out by user: 32 train; N counts them.
    assert_eq!(r["users"], 32);
    assert_eq!(r["dataset_size"], 32);
    assert!((r["sample_rate"].as_f64().unwrap() - 4.0 / 32.0).abs() < 1e-12);
    let counts = &r["not_covered_by_epsilon"]["users"];
    assert_eq!(counts["users"], 32);
    assert_eq!(counts["max_records_of_one_user"], 4);
    // The user column is no feature: 2 inputs, 2 classes → 6 parameters.
    assert_eq!(r["hidden"], serde_json::json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn should_warn_that_record_level_dp_covers_users_only_at_group_privacy() {
    let dir = temp_dir("dpsgd-user-cli", "record");
    let report = dir.join("r.json");
    let out = train(
        &dir,
        &[
            "--user-column",
            "user",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let stdout = ok(&out);
    assert!(
        stdout.contains("users with up to 4 records each (record-level ε: such a user is protected only at group privacy, about 4·ε = "),
        "{stdout}"
    );
    let r = read_json(&report);
    assert_eq!(r["privacy_unit"], "record");
    assert!(r["users"].is_null());
    // By user: every record of the 32 training users.
    let records = r["not_covered_by_epsilon"]["users"]["records"]
        .as_u64()
        .unwrap();
    assert_eq!(r["dataset_size"].as_u64(), Some(records));
    let page = dir.join("page.html");
    let out = dpsgd(&[
        "report",
        "--from",
        report.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
    ]);
    ok(&out);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("a user with n records is protected only at about ε·n"));
    assert!(html.contains("Train with --privacy-unit user"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn should_refuse_user_level_flags_that_do_not_fit_in_one_line() {
    let dir = temp_dir("dpsgd-user-cli", "refusals");
    assert_usage_error(
        &train(&dir, &["--privacy-unit", "user"]),
        &["--privacy-unit", "--user-column"],
    );
    assert_usage_error(
        &train(
            &dir,
            &["--user-column", "user", "--max-records-per-user", "2"],
        ),
        &["--max-records-per-user", "--privacy-unit user"],
    );
    assert_usage_error(
        &dpsgd(&["train", "--user-column", "user", "--epochs", "1"]),
        &["--user-column", "CSV"],
    );
    // At user level the batch counts users: 33 of 32 training users.
    let data = format!("csv:{}", users_csv(&dir).display());
    assert_usage_error(
        &dpsgd(&[
            "train",
            "--dataset",
            &data,
            "--user-column",
            "user",
            "--privacy-unit",
            "user",
            "--batch-size",
            "33",
        ]),
        &["--batch-size", "32 users"],
    );
    assert_usage_error(
        &train(
            &dir,
            &[
                "--user-column",
                "user",
                "--privacy-unit",
                "user",
                "--early-stopping",
                "2",
            ],
        ),
        &["--early-stopping", "user-level DP"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
