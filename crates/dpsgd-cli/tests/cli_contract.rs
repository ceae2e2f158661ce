//! The command-line contract of `dpsgd train` (issue 11): every usage error
//! exits 2 with one line naming its argument, before any training.

mod common;

use common::{assert_usage_error, dpsgd, quick_train, tiny_csv};
use std::path::{Path, PathBuf};
use std::process::Output;

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("dpsgd-contract", name)
}

/// Runs `dpsgd train ARGS` and checks it is a usage error: exit code 2,
/// one line on stderr that mentions every one of `expected`.
fn usage_error(args: &[&str], expected: &[&str]) {
    let mut all = vec!["train", "--quiet"];
    all.extend_from_slice(args);
    assert_usage_error(&dpsgd(&all), expected);
}

#[test]
fn should_refuse_bad_counts_naming_the_flag() {
    usage_error(&["--batch-size", "0"], &["--batch-size", "at least 1"]);
    usage_error(&["--epochs", "0"], &["--epochs", "at least 1"]);
    usage_error(
        &["--epochs", "-1"],
        &["--epochs", "`-1` is not a whole number"],
    );
    usage_error(&["--epochs", "two"], &["--epochs", "`two`"]);
    usage_error(&["--seed", "-1"], &["--seed", "`-1` is not a whole number"]);
}

#[test]
fn should_refuse_a_model_or_noise_too_large_to_exist() {
    // Issue 26: --num-classes 4294967295 asked for 2 TB and aborted; σ or
    // C = 1e300 trained and was reported as "diverged … lower the learning
    // rate". Each is refused before any work, naming its flag.
    let dir = std::env::temp_dir().join(format!("cli-contract-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{"header": true}"#).expect("write the schema");
    let schema = schema.to_str().expect("a UTF-8 path");
    usage_error(
        &[
            "--dataset",
            &data,
            "--schema",
            schema,
            "--num-classes",
            "4294967295",
        ],
        &["--num-classes", "at most 1048576"],
    );
    usage_error(
        &["--hidden", "100000000,100"],
        &["--hidden", "parameters, more than the 1073741824 supported"],
    );
    usage_error(
        &["--noise-multiplier", "1e300"],
        &["--noise-multiplier", "beyond 32-bit floats"],
    );
    usage_error(
        &["--noise-multiplier", "1e10", "--max-grad-norm", "1e30"],
        &["--noise-multiplier", "σ·C = 1e40"],
    );
    usage_error(
        &["--max-grad-norm", "1e300"],
        &["--max-grad-norm", "32-bit floats"],
    );
    // Not a size, but the same kind of refusal once named "training
    // failed": burn's all-reduce where this build has none.
    #[cfg(not(feature = "cuda"))]
    usage_error(
        &["--devices", "2", "--all-reduce"],
        &["--all-reduce", "CUDA"],
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn should_start_training_for_a_billion_epochs() {
    // Issue 26: --epochs 1000000000 reserved the epoch history up front
    // (48 GB) and aborted (exit 134) before the first step. It must start:
    // the first epoch's line is printed, then the run is stopped here.
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(["train", "--epochs", "1000000000", "--noise-multiplier", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dpsgd");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("a line");
        let first_epoch = line.starts_with("epoch 1/1000000000");
        seen.push(line);
        if first_epoch {
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().expect("reap");
    assert!(
        seen.last()
            .is_some_and(|l| l.starts_with("epoch 1/1000000000")),
        "no first epoch ({status}): {seen:?}"
    );
}

#[test]
fn should_name_the_learning_rate_and_the_clipping_norm() {
    for flag in ["--lr", "--max-grad-norm"] {
        for value in ["0", "-1"] {
            usage_error(&[flag, value], &[flag, "must be > 0"]);
            let out = dpsgd(&["train", flag, value]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("noise multiplier"), "{stderr}");
        }
    }
}

#[test]
fn should_refuse_a_missing_dataset() {
    usage_error(
        &["--dataset", "idx:/nonexistent/dpsgd"],
        &["--dataset", "/nonexistent/dpsgd"],
    );
    usage_error(
        &["--dataset", "csv:/nonexistent/dpsgd.csv"],
        &["--dataset", "/nonexistent/dpsgd.csv"],
    );
    // A directory without the MNIST files.
    let dir = temp_dir("empty-idx");
    usage_error(
        &["--dataset", &format!("idx:{}", dir.display())],
        &["--dataset", "train-images"],
    );
}

#[test]
fn should_refuse_a_missing_label_column() {
    let dir = temp_dir("label");
    let data = format!("csv:{},label=nosuch", tiny_csv(&dir).display());
    usage_error(&["--dataset", &data], &["--dataset", "nosuch"]);
}

#[test]
fn should_refuse_a_test_fraction_that_empties_a_split() {
    let dir = temp_dir("fraction");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    for fraction in ["0.999", "0.001"] {
        usage_error(
            &[
                "--dataset",
                &data,
                "--batch-size",
                "4",
                "--test-fraction",
                fraction,
            ],
            &["--test-fraction", fraction],
        );
    }
    for fraction in ["0", "1", "-0.5", "nan"] {
        usage_error(&["--test-fraction", fraction], &["--test-fraction"]);
    }
}

#[test]
fn should_refuse_a_cnn_on_tabular_data() {
    let dir = temp_dir("cnn");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    usage_error(
        &["--dataset", &data, "--batch-size", "4", "--model", "cnn"],
        &["--model", "image data"],
    );
}

#[test]
fn should_refuse_a_batch_larger_than_the_training_set() {
    let dir = temp_dir("batch");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    usage_error(
        &["--dataset", &data, "--batch-size", "100"],
        &["--batch-size", "48 examples"],
    );
}

#[test]
fn should_print_each_cause_once() {
    let dir = temp_dir("causes");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let out = dpsgd(&[
        "train",
        "--quiet",
        "--dataset",
        &data,
        "--batch-size",
        "4",
        "--scaling-reference",
        "/nonexistent/dpsgd-reference.csv",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    assert!(stderr.contains("--scaling-reference"), "{stderr}");
}

#[test]
fn should_check_the_report_path_before_training() {
    let dir = temp_dir("report-check");
    // Many epochs: the refusal must come before any of them.
    usage_error(
        &[
            "--epochs",
            "100000",
            "--report",
            "/nonexistent/dpsgd/report.json",
        ],
        &["--report", "/nonexistent/dpsgd/report.json"],
    );
    let out = dpsgd(&["train", "--report", "/nonexistent/dpsgd/report.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("tmp") && !stderr.contains("probe"),
        "{stderr}"
    );
    usage_error(
        &["--report", dir.to_str().unwrap()],
        &["--report", "directory"],
    );
    // No probe file is left behind.
    let out = quick_train(&dir, &["--report", dir.join("r.json").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["r.json", "tiny.csv"]);
}

#[test]
fn should_write_the_report_to_standard_output() {
    for target in ["-", "/dev/stdout"] {
        let dir = temp_dir(&format!("report-stdout-{}", target.len()));
        let out = quick_train(&dir, &["--report", target]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{target}: {stderr}");
        // Standard output is the JSON alone; the summary goes to stderr.
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{target}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert!(v["test_accuracy"].is_number(), "{v}");
        assert!(stderr.contains("test accuracy"), "{stderr}");
        assert!(!Path::new("-").exists());
    }
    // The special file is still what it was.
    let meta = std::fs::symlink_metadata("/dev/stdout").unwrap();
    assert!(
        !meta.is_file(),
        "/dev/stdout was replaced by a regular file"
    );
}

#[cfg(unix)]
#[test]
fn should_write_through_a_symbolic_link_without_replacing_it() {
    let dir = temp_dir("report-link");
    let target = dir.join("target.json");
    std::fs::write(&target, "").unwrap();
    let link = dir.join("link.json");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = quick_train(&dir, &["--report", link.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert!(v["test_accuracy"].is_number(), "{v}");
}

#[test]
fn should_log_one_line_per_epoch_when_stderr_is_not_a_terminal() {
    let dir = temp_dir("epochs");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let report = dir.join("r.json");
    let args = [
        "train",
        "--dataset",
        &data,
        "--model",
        "logreg",
        "--num-classes",
        "2",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--report",
        report.to_str().unwrap(),
    ];
    // The test captures stderr: not a terminal.
    let out = dpsgd(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("epoch {}/2 ", i + 1)), "{line}");
        for part in ["test accuracy", "ε ", "loss"] {
            assert!(line.contains(part), "`{part}` not in {line}");
        }
    }
    assert!(lines[1].contains("ε 3.000"), "{}", lines[1]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let total = v["total_seconds"].as_f64().expect("total_seconds");
    let rest = v["evaluation_and_setup_seconds"]
        .as_f64()
        .expect("evaluation");
    assert!(rest >= 0.0 && rest <= total, "{v}");

    // --quiet: nothing per epoch.
    let mut quiet = args.to_vec();
    quiet.push("--quiet");
    let out = dpsgd(&quiet);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("epoch "), "{stderr}");
}

#[test]
fn should_check_sweep_options_as_train_does() {
    let out = dpsgd(&["sweep", "--epsilons", "1", "--epochs", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--epochs"), "{stderr}");
    let out = dpsgd(&[
        "sweep",
        "--epsilons",
        "1",
        "--dataset",
        "csv:/nonexistent/dpsgd.csv",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dataset"), "{stderr}");
}

/// The JSON report of a one-epoch MLP run on the tiny CSV (σ = 1, batch
/// 16), with `extra` flags.
fn report_of(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let data = format!("csv:{}", tiny_csv(dir).display());
    let mut args = vec![
        "train",
        "--quiet",
        "--dataset",
        &data,
        "--num-classes",
        "2",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--report",
        "-",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--non-private") {
        args.extend_from_slice(&["--noise-multiplier", "1"]);
    }
    let out = dpsgd(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{extra:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{extra:?}: {e}"))
}

#[test]
fn should_report_the_clipping_mode_it_was_given() {
    let dir = temp_dir("clipping");
    let v = report_of(&dir, &[]);
    assert_eq!(v["clipping_mode"], "flat");
    assert!(v["clipping"]["Flat"].is_object(), "{}", v["clipping"]);
    for (mode, variant) in [
        ("flat", "Flat"),
        ("per-layer", "PerLayer"),
        ("automatic", "Automatic"),
        ("adaptive", "Adaptive"),
    ] {
        let v = report_of(&dir, &["--clipping", mode]);
        assert_eq!(v["clipping_mode"], mode);
        assert!(
            v["clipping"][variant].is_object(),
            "{mode}: {}",
            v["clipping"]
        );
    }
    // Without DP nothing is clipped.
    let v = report_of(&dir, &["--non-private", "--clipping", "automatic"]);
    assert!(v["clipping_mode"].is_null(), "{}", v["clipping_mode"]);
}

#[test]
fn should_build_the_mlp_with_the_given_hidden_sizes() {
    let dir = temp_dir("hidden");
    // A table gets the tabular recipe's linear model: no hidden layers.
    assert_eq!(report_of(&dir, &[])["hidden"], serde_json::json!([]));
    let mlp = report_of(&dir, &["--model", "mlp"]);
    assert_eq!(mlp["hidden"], serde_json::json!([128]));
    let v = report_of(
        &dir,
        &[
            "--model",
            "mlp",
            "--hidden",
            "8,4",
            "--clipping",
            "per-layer",
        ],
    );
    assert_eq!(v["hidden"], serde_json::json!([8, 4]));
    // Three linear layers, one budget each, C/√3 so the whole is within C.
    let budgets = v["clipping"]["PerLayer"]["max_grad_norms"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(budgets.len(), 3, "{budgets:?}");
    let total: f64 = budgets.iter().map(|c| c.as_f64().unwrap().powi(2)).sum();
    assert!((total.sqrt() - 1.0).abs() < 1e-9, "{budgets:?}");
    let v = report_of(&dir, &["--model", "logreg"]);
    assert_eq!(v["hidden"], serde_json::json!([]));
}

#[test]
fn should_accept_and_report_the_engine_settings() {
    let dir = temp_dir("engine");
    let v = report_of(&dir, &[]);
    assert!(v["max_physical_batch_size"].is_null());
    assert_eq!(v["conv_strategy"], "auto");
    let v = report_of(
        &dir,
        &[
            "--max-physical-batch-size",
            "3",
            "--conv-strategy",
            "materialize",
        ],
    );
    assert_eq!(v["max_physical_batch_size"], 3);
    assert_eq!(v["conv_strategy"], "materialize");
    assert_eq!(
        report_of(&dir, &["--conv-strategy", "unfold"])["conv_strategy"],
        "unfold"
    );
}

#[test]
fn should_refuse_bad_model_and_engine_options_naming_the_flag() {
    usage_error(&["--clipping", "median"], &["--clipping", "`median`"]);
    usage_error(&["--hidden", "0"], &["--hidden", "at least 1"]);
    usage_error(&["--hidden", "64,x"], &["--hidden", "`64,x`"]);
    usage_error(&["--hidden", ""], &["--hidden"]);
    usage_error(
        &["--max-physical-batch-size", "0"],
        &["--max-physical-batch-size", "at least 1"],
    );
    usage_error(
        &["--max-physical-batch-size", "-2"],
        &["--max-physical-batch-size", "`-2`"],
    );
    usage_error(
        &["--conv-strategy", "im2col"],
        &["--conv-strategy", "`im2col`"],
    );
    // Adaptive clipping's count noise (batch / 20) too small for σ.
    usage_error(
        &[
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--clipping",
            "adaptive",
            "--noise-multiplier",
            "2",
        ],
        &["--clipping", "batch size"],
    );
    // sweep flattens the same options.
    for flag in [
        "--clipping",
        "--hidden",
        "--max-physical-batch-size",
        "--conv-strategy",
    ] {
        let out = dpsgd(&["sweep", "--epsilons", "1", flag, "0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn should_save_the_trained_model() {
    let dir = temp_dir("save-model");
    let file = dir.join("model.bin");
    let _ = std::fs::remove_file(&file);
    let v = report_of(
        &dir,
        &["--hidden", "8", "--save-model", file.to_str().unwrap()],
    );
    assert_eq!(v["saved_model"], file.to_str().unwrap());
    let size = std::fs::metadata(&file).expect("the saved model").len();
    assert!(size > 0);
    usage_error(
        &["--save-model", dir.to_str().unwrap()],
        &["--save-model", "directory"],
    );
    usage_error(
        &["--save-model", "/nonexistent/dpsgd/model.bin"],
        &["--save-model", "/nonexistent/dpsgd"],
    );
}

/// `dpsgd train` of an MLP on the tiny CSV (σ = 1, batch 16, seed 1) for
/// `epochs`, with `extra` flags, the report on standard output.
fn train_epochs(dir: &Path, epochs: &str, extra: &[&str]) -> Output {
    let data = format!("csv:{}", tiny_csv(dir).display());
    // Everything public, so that nothing is printed but a usage error.
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{"header": true}"#).expect("write the schema");
    let mut args = vec![
        "train",
        "--quiet",
        "--dataset",
        &data,
        "--schema",
        schema.to_str().expect("a UTF-8 path"),
        "--num-classes",
        "2",
        "--hidden",
        "8",
        "--batch-size",
        "16",
        "--epochs",
        epochs,
        "--seed",
        "1",
        "--report",
        "-",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--non-private") {
        args.extend_from_slice(&["--noise-multiplier", "1"]);
    }
    dpsgd(&args)
}

fn report(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    serde_json::from_slice(&out.stdout).expect("the JSON report")
}

/// A usage error: exit 2, one line on stderr naming every one of `expected`.
fn refused(out: &Output, expected: &[&str]) {
    assert_usage_error(out, expected);
}

#[test]
fn should_resume_a_checkpointed_run_where_it_stopped() {
    let dir = temp_dir("checkpoint");
    let ck = dir.join("checkpoints");
    let _ = std::fs::remove_dir_all(&ck);
    let ck = ck.to_str().unwrap();
    let whole = report(&train_epochs(&dir, "4", &[]));
    let first = report(&train_epochs(&dir, "2", &["--checkpoint-dir", ck]));
    assert_eq!(
        first["steps"].as_u64().unwrap() * 2,
        whole["steps"].as_u64().unwrap()
    );
    let resumed = report(&train_epochs(
        &dir,
        "4",
        &["--checkpoint-dir", ck, "--resume"],
    ));
    // ε covers all four epochs' steps (the accountant's history is in the
    // checkpoint), and a seeded run resumes exactly: same model.
    assert_eq!(resumed["steps"], whole["steps"]);
    assert_eq!(resumed["epsilon"], whole["epsilon"]);
    assert!(resumed["epsilon"].as_f64().unwrap() > first["epsilon"].as_f64().unwrap());
    assert_eq!(resumed["test_accuracy"], whole["test_accuracy"]);
    let history = |v: &serde_json::Value| {
        v["not_covered_by_epsilon"]["epoch_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["epoch"].clone(), r["test_accuracy"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(history(&resumed), history(&whole));

    // Other settings than the checkpoint's.
    refused(
        &train_epochs(
            &dir,
            "4",
            &["--checkpoint-dir", ck, "--resume", "--lr", "0.5"],
        ),
        &["--resume", "lr"],
    );
    // A fresh run would overwrite the checkpoint.
    refused(
        &train_epochs(&dir, "4", &["--checkpoint-dir", ck]),
        &["--checkpoint-dir", "already holds a checkpoint"],
    );
    // Nothing to resume.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    refused(
        &train_epochs(
            &dir,
            "4",
            &["--checkpoint-dir", empty.to_str().unwrap(), "--resume"],
        ),
        &["--resume", "no checkpoint"],
    );
    // Checkpoints are for private runs.
    refused(
        &train_epochs(
            &dir,
            "4",
            &["--non-private", "--checkpoint-dir", empty.to_str().unwrap()],
        ),
        &["--checkpoint-dir", "private"],
    );
    // --resume needs --checkpoint-dir.
    usage_error(&["--resume"], &["--checkpoint-dir"]);
}

/// A seeded run with augmentation (two shifted views of each digit)
/// resumes to exactly the uninterrupted run: each step's views come from
/// that step's own stream of the seed, not from where a generator started
/// at the beginning of this process stood.
#[test]
fn should_resume_an_augmented_run_where_it_stopped() {
    let dir = temp_dir("checkpoint-augmented");
    let ck = dir.join("checkpoints");
    let _ = std::fs::remove_dir_all(&ck);
    let ck = ck.to_str().unwrap();
    let run = |epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--augment-multiplicity",
            "2",
            "--noise-multiplier",
            "1",
            "--seed",
            "4",
            "--quiet",
            "--report",
            "-",
            "--epochs",
            epochs,
        ];
        args.extend_from_slice(extra);
        report(&dpsgd(&args))
    };
    let whole = run("3", &[]);
    let _ = run("1", &["--checkpoint-dir", ck]);
    let resumed = run("3", &["--checkpoint-dir", ck, "--resume"]);
    for field in ["steps", "epsilon", "test_accuracy"] {
        assert_eq!(resumed[field], whole[field], "{field}");
    }
    assert_eq!(
        resumed["not_covered_by_epsilon"]["final_loss"],
        whole["not_covered_by_epsilon"]["final_loss"]
    );
}

/// Data-parallel runs checkpoint once per global step (the coordinator
/// writes it) and resume with the same number of workers to exactly the
/// uninterrupted run; another worker count is refused by name.
#[test]
fn should_resume_a_data_parallel_run_with_the_same_workers() {
    let dir = temp_dir("checkpoint-devices");
    let ck = dir.join("checkpoints");
    let _ = std::fs::remove_dir_all(&ck);
    let ck = ck.to_str().unwrap();
    let whole = report(&train_epochs(&dir, "4", &["--devices", "2"]));
    let first = report(&train_epochs(
        &dir,
        "2",
        &["--devices", "2", "--checkpoint-dir", ck],
    ));
    assert_eq!(first["devices"], 2);
    refused(
        &train_epochs(
            &dir,
            "4",
            &["--devices", "4", "--checkpoint-dir", ck, "--resume"],
        ),
        &["--resume", "devices"],
    );
    let resumed = report(&train_epochs(
        &dir,
        "4",
        &["--devices", "2", "--checkpoint-dir", ck, "--resume"],
    ));
    for field in ["steps", "epsilon", "test_accuracy", "devices"] {
        assert_eq!(resumed[field], whole[field], "{field}");
    }
    assert_eq!(
        resumed["not_covered_by_epsilon"]["final_loss"],
        whole["not_covered_by_epsilon"]["final_loss"]
    );
}

/// A fixed σ whose ε the accountant cannot bound is refused before the
/// first step (it used to train to the end and fail at the report, or — in
/// issue 9 — report ε = 0).
#[test]
fn should_refuse_an_unaccountable_noise_multiplier_before_training() {
    for args in [
        vec!["train", "--noise-multiplier", "1e-200", "--epochs", "50"],
        vec![
            "train",
            "--noise-multiplier",
            "0.03",
            "--accountant",
            "pld",
            "--epochs",
            "50",
        ],
    ] {
        let out = dpsgd(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("epoch 1/"), "trained before refusing: {err}");
        assert!(
            err.contains("unbounded") || err.contains("cannot answer"),
            "{err}"
        );
    }
}

#[test]
fn should_refuse_an_empty_benchmark_sequence_in_one_line() {
    assert_usage_error(
        &dpsgd(&["bench", "step", "--model", "lstm", "--seq-len", "0"]),
        &["--seq-len"],
    );
}

/// The ε a run reports is the one `dpsgd epsilon` computes from the run's
/// own σ, q, steps and δ, by a separate accountant call (issue 25, item 8):
/// for a calibrated target (RDP) and a fixed σ (PLD).
#[test]
fn should_report_the_epsilon_that_the_accountant_gives_for_its_own_plan() {
    let dir = temp_dir("epsilon-recomputed");
    for (privacy, accountant) in [
        (["--target-epsilon", "2"], "rdp"),
        (["--noise-multiplier", "1.3"], "pld"),
    ] {
        let data = format!("csv:{}", tiny_csv(&dir).display());
        let mut args = vec![
            "train",
            "--quiet",
            "--dataset",
            &data,
            "--hidden",
            "8",
            "--batch-size",
            "12",
            "--epochs",
            "3",
            "--seed",
            "4",
            "--accountant",
            accountant,
            "--report",
            "-",
        ];
        args.extend_from_slice(&privacy);
        let run = report(&dpsgd(&args));
        let field = |k: &str| run[k].as_f64().unwrap_or_else(|| panic!("{k}: {run}"));
        let (sigma, q, steps, delta) = (
            field("noise_multiplier"),
            field("sample_rate"),
            run["steps"].as_u64().expect("steps"),
            field("delta"),
        );
        let (sigma, q, steps, delta) = (
            sigma.to_string(),
            q.to_string(),
            steps.to_string(),
            delta.to_string(),
        );
        let out = dpsgd(&[
            "epsilon",
            "--sample-rate",
            &q,
            "--steps",
            &steps,
            "--noise-multiplier",
            &sigma,
            "--delta",
            &delta,
            "--accountant",
            accountant,
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let reference: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the JSON answer");
        let (got, want) = (field("epsilon"), reference["epsilon"].as_f64().unwrap());
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "{accountant}: the run reports ε = {got}, the accountant gives {want} for σ = {sigma}, q = {q}, {steps} steps, δ = {delta}"
        );
        if privacy[0] == "--target-epsilon" {
            assert!(got <= 2.0 + 1e-9, "calibrated to its target: {got}");
        }
    }
}

/// Two resumes of one unseeded checkpoint draw fresh noise and batches
/// each (both generators are re-keyed from the OS): their models differ,
/// while their accounting is the same and covers the whole run (issue 25,
/// item 8). Continuing the checkpoint's generators, as a seeded run does,
/// would give two identical models.
#[test]
fn should_resume_an_unseeded_run_with_fresh_noise_each_time() {
    let dir = temp_dir("checkpoint-unseeded");
    let data = format!("csv:{}", tiny_csv(&dir).display());
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{"header": true}"#).unwrap();
    let run = |epochs: &str, ck: &Path, model: Option<&Path>, resume: bool| {
        let mut args = vec![
            "train",
            "--quiet",
            "--dataset",
            &data,
            "--schema",
            schema.to_str().unwrap(),
            "--num-classes",
            "2",
            "--hidden",
            "8",
            "--batch-size",
            "16",
            "--noise-multiplier",
            "1",
            "--epochs",
            epochs,
            "--checkpoint-dir",
            ck.to_str().unwrap(),
            "--report",
            "-",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        if resume {
            args.push("--resume".into());
        }
        if let Some(m) = model {
            args.extend(["--save-model".into(), m.to_str().unwrap().to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        report(&dpsgd(&args))
    };
    let first = dir.join("first");
    let _ = std::fs::remove_dir_all(&first);
    let started = run("2", &first, None, false);
    assert_eq!(started["secure"], true, "{started}");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for copy in [&a, &b] {
        let _ = std::fs::remove_dir_all(copy);
        std::fs::create_dir_all(copy).unwrap();
        for entry in std::fs::read_dir(&first).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    let (model_a, model_b) = (dir.join("a.bin"), dir.join("b.bin"));
    let ra = run("4", &a, Some(&model_a), true);
    let rb = run("4", &b, Some(&model_b), true);
    for field in ["steps", "epsilon", "noise_multiplier", "sample_rate"] {
        assert_eq!(ra[field], rb[field], "{field}");
    }
    assert_eq!(
        ra["steps"].as_u64(),
        started["steps"].as_u64().map(|s| 2 * s),
        "ε covers the whole run: {ra}"
    );
    assert!(ra["epsilon"].as_f64() > started["epsilon"].as_f64());
    let (bytes_a, bytes_b) = (
        std::fs::read(&model_a).unwrap(),
        std::fs::read(&model_b).unwrap(),
    );
    assert_eq!(bytes_a.len(), bytes_b.len());
    assert_ne!(
        bytes_a, bytes_b,
        "two resumes of one unseeded checkpoint continued the same generators (noise and batches)"
    );
}

/// A negative count is a usage error that names its flag (issue 26, item
/// 5: clap used to read `-1` as an unknown argument and name none).
#[test]
fn should_name_the_flag_of_a_negative_count() {
    for (command, flag) in [
        ("train", "--devices"),
        ("train", "--epochs"),
        ("train", "--num-classes"),
        ("train", "--mist-submodels"),
        ("audit", "--shadow-models"),
        ("audit", "--threads"),
        ("audit", "--canary-guesses"),
        ("audit", "--query-budget"),
        ("sweep", "--repeats"),
        ("sweep", "--shadow-models"),
        ("compare", "--shadow-models"),
    ] {
        let mut args = vec![command, flag, "-1"];
        if flag == "--mist-submodels" {
            args.push("--mist");
        }
        let out = dpsgd(&args);
        assert_usage_error(&out, &[flag]);
    }
}

/// Data with one class is refused before training (it trained to "100%"
/// with a NaN leakage figure), and δ ≥ 1/N is a usage error naming
/// `--delta`, not a training failure (issue 26, item 5).
#[test]
fn should_refuse_one_class_and_a_large_delta_naming_the_flag() {
    let dir = temp_dir("one-class");
    let data = dir.join("one.csv");
    let mut text = String::from("a,b,label\n");
    for i in 0..40 {
        text += &format!("{},{},0\n", (i as f64).sin(), (i as f64).cos());
    }
    std::fs::write(&data, text).unwrap();
    let dataset = format!("csv:{}", data.display());
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{"header": true}"#).unwrap();
    let base = [
        "train",
        "--quiet",
        "--dataset",
        &dataset,
        "--schema",
        schema.to_str().unwrap(),
        "--epochs",
        "1",
    ];
    let with = |extra: &[&'static str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        dpsgd(&args)
    };
    assert_usage_error(
        &with(&["--num-classes", "1"]),
        &["--num-classes", "at least 2"],
    );
    assert_usage_error(
        &with(&["--num-classes", "2", "--delta", "0.5"]),
        &["--delta"],
    );
}

/// An output never replaces an input or another output, and `--html -`
/// is not a file: refused before any work, exit 2 naming the flags, with
/// the inputs untouched (issue 26, item 1: `--report data.csv` replaced
/// the data set; `--report X --save-model X` lost the model).
#[test]
fn should_refuse_an_output_that_would_replace_an_input_or_another_output() {
    let dir = temp_dir("clobbering");
    let data = tiny_csv(&dir);
    let original = std::fs::read(&data).unwrap();
    let dataset = format!("csv:{}", data.display());
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{"header": true}"#).unwrap();
    let ck = dir.join("ck");
    let (report, model) = (dir.join("r.json"), dir.join("m.bin"));
    // The same file spelled another way (through `..`) is still the same.
    let data_again = dir.join("ck/../tiny.csv");
    std::fs::create_dir_all(&ck).unwrap();
    let checkpoint = ck.join("checkpoint.dpsgd");
    for (extra, flags) in [
        (
            vec!["--report", data.to_str().unwrap()],
            ["--report", "--dataset"],
        ),
        (
            vec!["--html", data_again.to_str().unwrap()],
            ["--html", "--dataset"],
        ),
        (
            vec!["--save-model", schema.to_str().unwrap()],
            ["--save-model", "--schema"],
        ),
        (
            vec![
                "--report",
                report.to_str().unwrap(),
                "--save-model",
                report.to_str().unwrap(),
            ],
            ["--save-model", "--report"],
        ),
        (
            vec![
                "--checkpoint-dir",
                ck.to_str().unwrap(),
                "--save-model",
                checkpoint.to_str().unwrap(),
            ],
            ["--save-model", "--checkpoint-dir"],
        ),
        (vec!["--html", "-"], ["--html", "only --report"]),
    ] {
        let mut args = vec![
            "train",
            "--quiet",
            "--dataset",
            &dataset,
            "--schema",
            schema.to_str().unwrap(),
            "--num-classes",
            "2",
            "--epochs",
            "1",
        ];
        args.extend(extra.iter().copied());
        assert_usage_error(&dpsgd(&args), &flags);
        assert_eq!(std::fs::read(&data).unwrap(), original, "{extra:?}");
        assert_eq!(
            std::fs::read_to_string(&schema).unwrap(),
            r#"{"header": true}"#
        );
        assert!(!model.exists() && !dir.join("-").exists(), "{extra:?}");
    }
}
