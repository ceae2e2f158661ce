//! Outputs never destroy what is behind their path:
//!
//! - an inherited stream named as an output (`/dev/stderr`, `/dev/fd/2`,
//!   `/proc/self/fd/2`, a link to one) is appended to, never truncated: a
//!   log that standard error is redirected to keeps its earlier lines;
//! - a file behind a symbolic link is replaced atomically in its own
//!   folder: a write that fails (a file-size limit) leaves it whole;
//! - an output that is one file with an input (a link to a hard link of
//!   the data set) is refused, as is one on the checkpoint folder's
//!   ledger of released steps, and a fresh run does not replace a file of
//!   the ledger's name that is not a ledger;
//! - an output in a folder where no file can be created is refused before
//!   any data is read, not after training.
#![cfg(unix)]

mod common;

use common::{assert_usage_error, tiny_csv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn temp_dir(name: &str) -> PathBuf {
    let dir = common::temp_dir("dpsgd-output-streams", name);
    // A leftover from an earlier run of the same process id.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dpsgd train`: one quick private epoch of logistic regression on
/// [`tiny_csv`] in `dir`, plus `extra`.
fn train_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let data = format!("csv:{}", tiny_csv(dir).display());
    let mut args: Vec<String> = [
        "train",
        "--quiet",
        "--dataset",
        &data,
        "--model",
        "logreg",
        "--num-classes",
        "2",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--noise-multiplier",
        "1",
        "--seed",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn dpsgd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .unwrap()
        .file_type()
        .is_symlink()
}

/// The lines a log holds before the run: what must survive it.
fn earlier_lines() -> String {
    (1..=1000).map(|i| format!("{i}\n")).collect()
}

/// Runs `dpsgd train … --report NAME` (or `--html NAME`) with standard
/// error going to `log`, opened as `2>>log` does (`append`) or as
/// `{ …; dpsgd …; } 2>log` leaves it after earlier lines (written through
/// the same open file, which is then at their end).
#[cfg(target_os = "linux")]
fn run_with_stderr_to(dir: &Path, log: &Path, append: bool, flag: &str, name: &str) -> Output {
    use std::io::Write;
    let stream = if append {
        std::fs::write(log, earlier_lines()).unwrap();
        std::fs::OpenOptions::new().append(true).open(log).unwrap()
    } else {
        let mut f = std::fs::File::create(log).unwrap();
        f.write_all(earlier_lines().as_bytes()).unwrap();
        f
    };
    dpsgd()
        .args(train_args(dir, &[flag, name]))
        .stdout(Stdio::null())
        .stderr(Stdio::from(stream))
        .output()
        .unwrap()
}

/// The pretty-printed JSON document that ends `text` (from its line `{`).
#[cfg(target_os = "linux")]
fn report_in(text: &str) -> Option<&str> {
    let start = if text.starts_with("{\n") {
        0
    } else {
        text.find("\n{\n")? + 1
    };
    Some(text[start..].trim_end())
}

#[cfg(target_os = "linux")]
#[test]
fn should_append_the_report_to_a_redirected_stderr_and_keep_its_lines() {
    let dir = temp_dir("stderr");
    let link = dir.join("to-stderr.json");
    std::os::unix::fs::symlink("/dev/stderr", &link).unwrap();
    let names = [
        "/dev/stderr".to_owned(),
        "/dev/fd/2".to_owned(),
        "/proc/self/fd/2".to_owned(),
        link.display().to_string(),
    ];
    for append in [true, false] {
        for name in &names {
            let log = dir.join("run.log");
            let out = run_with_stderr_to(&dir, &log, append, "--report", name);
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(
                out.status.success(),
                "{name} (append {append}): exit {:?}: {text}",
                out.status.code()
            );
            let rest = text.strip_prefix(&earlier_lines()).unwrap_or_else(|| {
                panic!("{name} (append {append}): the earlier lines are gone: {text:.200}")
            });
            // After any warnings of the run: the pretty-printed JSON.
            let json = report_in(rest)
                .unwrap_or_else(|| panic!("{name}: no report after the lines: {rest:.300}"));
            let report: serde_json::Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{name}: not the report: {e}: {json:.300}"));
            assert!(report["test_accuracy"].is_number(), "{name}: {report}");
            assert!(is_symlink(&link), "the link to /dev/stderr was replaced");
        }
    }
    // The HTML page too.
    let log = dir.join("page.log");
    let out = run_with_stderr_to(&dir, &log, true, "--html", "/dev/stderr");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(out.status.success(), "{text}");
    let rest = text
        .strip_prefix(&earlier_lines())
        .expect("the earlier lines");
    assert!(
        rest.contains("<html"),
        "no page after the lines: {rest:.200}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn should_refuse_to_write_a_descriptor_open_for_reading() {
    let dir = temp_dir("stdin");
    let input = dir.join("input.txt");
    std::fs::write(&input, "precious").unwrap();
    let out = dpsgd()
        .args(train_args(&dir, &["--report", "/dev/stdin"]))
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_usage_error(&out, &["--report", "/dev/stdin", "reading only"]);
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "precious");
}

/// Runs `args` with no file allowed to grow (`ulimit -f 0`, SIGXFSZ
/// ignored, so that a write to a regular file fails with EFBIG: as a full
/// disk would, after the file was opened).
fn run_under_a_file_size_limit(args: &[String]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 0 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_dpsgd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn should_leave_the_file_behind_a_link_whole_when_a_write_fails() {
    let dir = temp_dir("limit");
    let good = dir.join("good.json");
    let contents = "{\"a good report\": true}\n".repeat(10);
    std::fs::write(&good, &contents).unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink("good.json", &link).unwrap();
    let model = dir.join("model.bin");
    std::fs::write(&model, &contents).unwrap();
    let model_link = dir.join("model-link.bin");
    std::os::unix::fs::symlink("model.bin", &model_link).unwrap();
    for (flag, link, target) in [
        ("--report", &link, &good),
        ("--save-model", &model_link, &model),
    ] {
        let out = run_under_a_file_size_limit(&train_args(&dir, &[flag, link.to_str().unwrap()]));
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{flag}: exited 0 under the limit");
        assert!(stderr.contains("too large"), "{flag}: not EFBIG: {stderr}");
        assert_eq!(
            std::fs::read_to_string(target).unwrap(),
            contents,
            "{flag}: the file behind the link was damaged"
        );
        assert!(is_symlink(link), "{flag}: the link was replaced");
    }
    let temporaries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".dpsgd-tmp"))
        .collect();
    assert!(temporaries.is_empty(), "left behind: {temporaries:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn should_replace_the_file_behind_a_link_and_keep_its_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = temp_dir("link-mode");
    let folder = dir.join("reports");
    std::fs::create_dir_all(&folder).unwrap();
    let target = folder.join("r.json");
    std::fs::write(&target, "old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let inode = std::fs::metadata(&target).unwrap().ino();
    let link = dir.join("r.json");
    std::os::unix::fs::symlink("reports/r.json", &link).unwrap();
    let out = dpsgd()
        .args(train_args(&dir, &["--report", link.to_str().unwrap()]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(is_symlink(&link));
    let meta = std::fs::metadata(&target).unwrap();
    assert_ne!(meta.ino(), inode, "rewritten in place, not replaced");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let report = common::read_json(&target);
    assert!(report["test_accuracy"].is_number(), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn should_refuse_an_output_linked_to_a_hard_link_of_the_dataset() {
    let dir = temp_dir("hard-link");
    let data = tiny_csv(&dir);
    let before = std::fs::read(&data).unwrap();
    std::fs::hard_link(&data, dir.join("data-hl.csv")).unwrap();
    let out_json = dir.join("out.json");
    std::os::unix::fs::symlink("data-hl.csv", &out_json).unwrap();
    let model = dir.join("m.bin");
    std::os::unix::fs::symlink("data-hl.csv", dir.join("m.bin.card.json")).unwrap();
    let out_json = out_json.to_str().unwrap();
    let model = model.to_str().unwrap();
    for (flag, extra) in [
        ("--report", vec!["--report", out_json]),
        ("--html", vec!["--html", out_json]),
        ("--save-model", vec!["--save-model", out_json]),
        // The model's card, beside it.
        ("--save-model", vec!["--save-model", model]),
    ] {
        let out = dpsgd().args(train_args(&dir, &extra)).output().unwrap();
        assert_usage_error(&out, &[flag, "would overwrite --dataset"]);
        assert_eq!(
            std::fs::read(&data).unwrap(),
            before,
            "{flag}: the data changed"
        );
    }
    // A file in an --out folder.
    let out_dir = dir.join("results");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::os::unix::fs::symlink(dir.join("data-hl.csv"), out_dir.join("sweep.csv")).unwrap();
    let data_arg = format!("csv:{}", data.display());
    let out = dpsgd()
        .args([
            "sweep",
            "--quiet",
            "--dataset",
            &data_arg,
            "--model",
            "logreg",
            "--num-classes",
            "2",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--attacks",
            "loss",
            "--epsilons",
            "inf",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_usage_error(&out, &["--out", "would overwrite --dataset"]);
    assert_eq!(std::fs::read(&data).unwrap(), before, "the data changed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn should_refuse_an_output_on_the_checkpoint_folders_ledger() {
    let dir = temp_dir("ledger-output");
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let ledger = ck.join("released.json");
    let out = dpsgd()
        .args(train_args(
            &dir,
            &[
                "--checkpoint-dir",
                ck.to_str().unwrap(),
                "--report",
                ledger.to_str().unwrap(),
            ],
        ))
        .output()
        .unwrap();
    assert_usage_error(&out, &["--report", "would overwrite --checkpoint-dir"]);
    assert!(!ledger.exists(), "the report was written over the ledger");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn should_not_replace_a_file_named_as_the_ledger_that_is_none() {
    let dir = temp_dir("ledger-foreign");
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let ledger = ck.join("released.json");
    std::fs::write(&ledger, "precious, not a ledger").unwrap();
    let out = dpsgd()
        .args(train_args(
            &dir,
            &["--checkpoint-dir", ck.to_str().unwrap()],
        ))
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("released.json"), "{stderr}");
    assert!(stderr.contains("not a ledger"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap(),
        "precious, not a ledger"
    );
    assert!(
        !ck.join("checkpoint.dpsgd").exists(),
        "a checkpoint was written"
    );
    // An earlier run's ledger (no checkpoint beside it) is replaced.
    std::fs::remove_file(&ledger).unwrap();
    std::fs::write(
        &ledger,
        r#"{"run": 7, "released_through": 3, "redone": []}"#,
    )
    .unwrap();
    let out = dpsgd()
        .args(train_args(
            &dir,
            &["--checkpoint-dir", ck.to_str().unwrap()],
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(ck.join("checkpoint.dpsgd").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder no file can be created in: a read-only one, or, for root
/// (whom modes do not stop), `/proc` (Linux).
fn unwritable_folder(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ro = dir.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = ro.join("probe");
    if std::fs::write(&probe, "").is_err() {
        return Some(ro);
    }
    std::fs::remove_file(&probe).unwrap();
    cfg!(target_os = "linux").then(|| PathBuf::from("/proc"))
}

#[test]
fn should_refuse_outputs_in_a_read_only_folder_before_reading_the_data() {
    let dir = temp_dir("read-only");
    let Some(ro) = unwritable_folder(&dir) else {
        eprintln!("no folder here that files cannot be created in: skipped");
        return;
    };
    let html = ro.join("x.html");
    let model = ro.join("m.bin");
    let report = ro.join("r.json");
    for (flag, path) in [
        ("--html", &html),
        ("--save-model", &model),
        ("--report", &report),
    ] {
        let out = dpsgd()
            .args(train_args(&dir, &[flag, path.to_str().unwrap()]))
            .output()
            .unwrap();
        assert_usage_error(&out, &[flag, "cannot write"]);
        assert!(!path.exists(), "{flag}: {path:?} was written");
    }
    // `sweep --out` on the folder and on a folder to be made in it.
    let data = format!("csv:{}", tiny_csv(&dir).display());
    for out_dir in [ro.clone(), ro.join("results")] {
        let out = dpsgd()
            .args([
                "sweep",
                "--quiet",
                "--dataset",
                &data,
                "--model",
                "logreg",
                "--num-classes",
                "2",
                "--batch-size",
                "8",
                "--epochs",
                "1",
                "--attacks",
                "loss",
                "--epsilons",
                "inf",
                "--out",
                out_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_usage_error(&out, &["--out", "cannot write"]);
        assert!(!ro.join("results").exists());
        assert!(!ro.join("sweep.csv").exists());
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir.join("ro"), std::fs::Permissions::from_mode(0o755));
    std::fs::remove_dir_all(&dir).unwrap();
}
