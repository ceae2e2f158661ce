//! Data-parallel workers in other processes (issue 34, feature
//! `distributed`): `dpsgd worker` processes on 127.0.0.1 and `train
//! --workers`, against the same run's in-process workers.
#![cfg(feature = "distributed")]

mod common;

use common::{dpsgd, ok, read_json, temp_dir};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running worker and its address.
struct Worker {
    child: Child,
    url: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dpsgd worker` on a free port of 127.0.0.1, single-threaded (so that
/// its kernels add in one order, as the reference run's do).
fn worker(token: Option<&Path>) -> Worker {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpsgd"));
    cmd.args(["worker", "--listen", "127.0.0.1:0"])
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.arg("--token-file").arg(t);
    }
    let mut child = cmd.spawn().expect("start dpsgd worker");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("a line").expect("readable");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("no address in {line}"))
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    Worker { child, url }
}

/// `dpsgd train` on digits, single-threaded, with `extra` flags.
fn train(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args([
            "train", "--epochs", "2", "--seed", "3", "--quiet", "--report", "-",
        ])
        .args(extra)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("run dpsgd train")
}

/// Two worker processes train the model the same run trains with two
/// in-process workers: the same shards, summed in the same order, noised
/// once by the coordinator — the same parameters to the last f32 bit or
/// so (the remote backend replays the operations on the worker), and the
/// same ε. A token keeps out a coordinator without it.
#[test]
fn should_train_on_two_worker_processes_as_in_one_process() {
    let dir = temp_dir("distributed-cli", "two-workers");
    let token = dir.join("token");
    std::fs::write(&token, "a shared secret\n").unwrap();
    let (a, b) = (worker(Some(&token)), worker(Some(&token)));
    let workers = format!("{},{}", a.url, b.url);
    let remote_model = dir.join("remote.bin");
    let remote = train(&[
        "--workers",
        &workers,
        "--worker-token-file",
        token.to_str().unwrap(),
        "--save-model",
        remote_model.to_str().unwrap(),
    ]);
    let remote: serde_json::Value = serde_json::from_str(&ok(&remote)).unwrap();
    let local_model = dir.join("local.bin");
    let local = train(&[
        "--devices",
        "2",
        "--save-model",
        local_model.to_str().unwrap(),
    ]);
    let local: serde_json::Value = serde_json::from_str(&ok(&local)).unwrap();
    // The same parameters to f32 rounding: the same logits on every digit.
    // (burn's record bytes name each parameter by a per-process id, so the
    // files themselves differ between any two runs.)
    let inputs: Vec<f32> = dpsgd::data::digits()
        .features()
        .iter()
        .map(|x| x / 16.0)
        .collect();
    let logits = |path: &Path| {
        dpsgd::train::TrainedModel::load(path)
            .unwrap()
            .0
            .logits_of_inputs(&inputs)
            .unwrap()
    };
    let (r, l) = (logits(&remote_model), logits(&local_model));
    let worst = r
        .iter()
        .zip(&l)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    eprintln!("largest logit difference: {worst:e}");
    assert!(worst <= 1e-4, "largest logit difference {worst:e}");
    // The same privacy, field by field (the report holds it at its top).
    for key in [
        "epsilon",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "dataset_size",
        "accountant",
    ] {
        assert!(!local[key].is_null(), "{key}");
        assert_eq!(remote[key], local[key], "{key}");
    }
    assert_eq!(remote["test_accuracy"], local["test_accuracy"]);
    assert_eq!(
        remote["not_covered_by_epsilon"]["train_accuracy"],
        local["not_covered_by_epsilon"]["train_accuracy"]
    );
    // The training loss is a statistic the workers' losses are summed into
    // in another order: equal to rounding.
    let loss = |r: &serde_json::Value| r["not_covered_by_epsilon"]["final_loss"].as_f64().unwrap();
    assert!((loss(&remote) - loss(&local)).abs() < 1e-9 * loss(&local));
    assert_eq!(remote["devices"], 2);
    // The cards say the same (but for nothing).
    assert_eq!(
        read_json(dir.join("remote.bin.card.json"))["privacy"],
        read_json(dir.join("local.bin.card.json"))["privacy"]
    );
    // Without the token the workers refuse the session: a clean error.
    let out = train(&["--workers", &workers]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker ws://127.0.0.1:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `--workers` is refused with, before anything is trained.
#[test]
fn should_refuse_remote_workers_where_they_do_not_apply() {
    for (extra, says) in [
        (&["--workers", "127.0.0.1:1"][..], "ws://HOST:PORT"),
        (&["--workers", "ws://127.0.0.1:1,ws://127.0.0.1:1"], "twice"),
        (
            &["--workers", "ws://127.0.0.1:1", "--devices", "2"],
            "one kind of workers",
        ),
        (
            &["--workers", "ws://127.0.0.1:1", "--non-private"],
            "DP-SGD steps",
        ),
    ] {
        let out = dpsgd(&[&["train", "--epochs", "1", "--quiet"][..], extra].concat());
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{extra:?}: {err}");
    }
    // Nobody listening: the connection fails, naming the worker.
    let out = dpsgd(&[
        "train",
        "--epochs",
        "1",
        "--quiet",
        "--workers",
        "ws://127.0.0.1:9",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker ws://127.0.0.1:9"), "{err}");
}

/// A worker killed mid-run fails the step it was in (nothing noised or
/// accounted, exit status 1, the worker named), the checkpoint of the last
/// epoch stays, and the run resumes from it on in-process workers to the
/// uninterrupted run's ε and step count.
#[test]
fn should_fail_the_step_when_a_worker_dies_and_resume_elsewhere() {
    let dir = temp_dir("distributed-cli", "worker-dies");
    let ck = dir.join("ck");
    let (a, mut b) = (worker(None), worker(None));
    let workers = format!("{},{}", a.url, b.url);
    let flags = ["train", "--epochs", "40", "--seed", "3", "--quiet"];
    let mut run = Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(flags)
        .args([
            "--workers",
            &workers,
            "--checkpoint-dir",
            ck.to_str().unwrap(),
        ])
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dpsgd train");
    let checkpoint = ck.join("checkpoint.dpsgd");
    let started = std::time::Instant::now();
    while !checkpoint.exists() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = b.child.kill();
    let _ = b.child.wait();
    // The coordinator notices at its next exchange with the worker.
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed().as_secs() < 180, "the run hung");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the step was not taken"), "{err}");
    assert!(checkpoint.is_file());
    // Resumed on two in-process workers: the same shards, the same count.
    let resumed = ok(&dpsgd(
        &[
            &flags[..],
            &[
                "--devices",
                "2",
                "--checkpoint-dir",
                ck.to_str().unwrap(),
                "--resume",
                "--report",
                "-",
            ],
        ]
        .concat(),
    ));
    let resumed: serde_json::Value = serde_json::from_str(&resumed).unwrap();
    let whole = ok(&dpsgd(
        &[&flags[..], &["--devices", "2", "--report", "-"]].concat(),
    ));
    let whole: serde_json::Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(resumed["steps"], 440, "40 epochs of 11 steps");
    assert_eq!(resumed["steps"], whole["steps"]);
    assert!(resumed["epsilon"].as_f64().is_some());
    assert_eq!(resumed["epsilon"], whole["epsilon"]);
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}
