//! Helpers shared by the CLI's integration tests (each test binary uses
//! some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `dpsgd` binary built for these tests.
pub fn dpsgd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(args)
        .output()
        .expect("run dpsgd")
}

/// Checks that `out` succeeded (else fails with its exit code and standard
/// error) and gives its standard output.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh folder under the system's temporary folder, unique to this test
/// binary (`prefix`) and test (`name`).
pub fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}

/// The JSON document in the file at `path`.
pub fn read_json(path: impl AsRef<std::path::Path>) -> serde_json::Value {
    let text = std::fs::read_to_string(path.as_ref()).expect("read the JSON file");
    serde_json::from_str(&text).expect("valid JSON")
}

/// Checks that `out` is a usage error: exit code 2 and one line on stderr
/// that mentions every one of `expected`; returns that line.
pub fn assert_usage_error(out: &Output, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "`{e}` not in {stderr}");
    }
    stderr
}

/// 60 examples, 2 features, 2 classes, with a header row.
pub fn tiny_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("a,b,label\n");
    for i in 0..60 {
        let class = i % 2;
        let c = class as f64 * 2.0 - 1.0;
        let jitter = ((i as f64) * 0.731).sin() * 0.3;
        text += &format!("{},{},{class}\n", c + jitter, -c + jitter);
    }
    let p = dir.join("tiny.csv");
    std::fs::write(&p, text).unwrap();
    p
}

/// One quick epoch of logistic regression on [`tiny_csv`], plus `extra`.
pub fn quick_train(dir: &Path, extra: &[&str]) -> Output {
    let data = format!("csv:{}", tiny_csv(dir).display());
    let mut args = vec![
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
        "--seed",
        "1",
    ];
    args.extend_from_slice(extra);
    dpsgd(&args)
}

/// A running `dpsgd worker` process and its address (killed on drop).
#[cfg(feature = "distributed")]
pub struct Worker {
    /// The process.
    pub child: std::process::Child,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
}

#[cfg(feature = "distributed")]
impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dpsgd worker` on a free port of 127.0.0.1, single-threaded (so that
/// its kernels add in one order, as a reference run's do), requiring the
/// token in the file `token` when given.
#[cfg(feature = "distributed")]
pub fn worker(token: Option<&Path>) -> Worker {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpsgd"));
    cmd.args(["worker", "--listen", "127.0.0.1:0"])
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(t) = token {
        cmd.arg("--token-file").arg(t);
    }
    let mut child = cmd.spawn().expect("start dpsgd worker");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let line = lines.next().expect("a line").expect("readable");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no address in {line}"))
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    Worker { child, url }
}
