//! Data-parallel workers in other processes (issue 34, feature
//! `distributed`): `dpsgd worker` processes on 127.0.0.1 and `train
//! --workers`, against the same run's in-process workers.
#![cfg(feature = "distributed")]

mod common;

use common::{Worker, dpsgd, ok, read_json, temp_dir, worker};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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
    // in another order, of models that agree to rounding (logits within
    // 5e-7 here): equal to rounding of that order. Measured 4.5e-9
    // relative on an AMD EPYC machine; 1e-6 still catches a loss summed
    // from the wrong examples or counted twice.
    let loss = |r: &serde_json::Value| r["not_covered_by_epsilon"]["final_loss"].as_f64().unwrap();
    let gap = (loss(&remote) - loss(&local)).abs();
    assert!(
        gap < 1e-6 * loss(&local),
        "training losses differ by {gap:e}"
    );
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
        (&["--on-worker-loss", "continue"], "--workers"),
        (&["--worker-timeout", "5"], "--workers"),
        (
            &["--workers", "ws://127.0.0.1:1", "--worker-timeout", "0"],
            "above 0",
        ),
        (
            &["--workers", "ws://127.0.0.1:1", "--on-worker-loss", "retry"],
            "stop",
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
/// uninterrupted run's step count and ε, plus the steps the workers saw
/// after the checkpoint.
#[test]
fn should_fail_the_step_when_a_worker_dies_and_resume_elsewhere() {
    let dir = temp_dir("distributed-cli", "worker-dies");
    let ck = dir.join("ck");
    // A fixed σ: under the default target ε (an enforced budget) a
    // charged resume is refused (tested below).
    let flags = [
        "train",
        "--epochs",
        "40",
        "--seed",
        "3",
        "--quiet",
        "--noise-multiplier",
        "1.1",
    ];
    let (_, err) = kill_a_worker_between_checkpoints(&flags, &ck);
    assert!(err.contains("the step was not taken"), "{err}");
    assert!(ck.join("checkpoint.dpsgd").is_file());
    // Resumed on two in-process workers: the same shards, the same count.
    let resumed = ok(&resume(&flags, &ck));
    let resumed: serde_json::Value = serde_json::from_str(&resumed).unwrap();
    let whole = ok(&dpsgd(
        &[&flags[..], &["--devices", "2", "--report", "-"]].concat(),
    ));
    let whole: serde_json::Value = serde_json::from_str(&whole).unwrap();
    // The steps the workers saw after the checkpoint are charged, seeded
    // or not (the charge itself is checked below, OS-seeded).
    let redone = resumed["redone_steps"].as_u64().unwrap();
    assert_eq!(resumed["steps"], 440 + redone, "40 epochs of 11 steps");
    assert_eq!(whole["steps"], 440);
    assert!(resumed["epsilon"].as_f64().is_some());
    if redone == 0 {
        assert_eq!(resumed["epsilon"], whole["epsilon"]);
    } else {
        assert!(resumed["epsilon"].as_f64() > whole["epsilon"].as_f64());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stops (SIGSTOP) or resumes (SIGCONT) a worker process: a hung worker,
/// whose connection stays open and silent.
fn signal(worker: &Worker, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &worker.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig}");
}

/// `train` on digits with two remote workers, started in the background.
fn spawn_train(flags: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(flags)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dpsgd train")
}

/// Waits for `run` to exit (at most `limit` seconds from `since`): its
/// status, stdout and stderr.
fn finish(mut run: Child, since: std::time::Instant, limit: u64) -> (Option<i32>, String, String) {
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if since.elapsed().as_secs() > limit {
            let _ = run.kill();
            panic!("the run hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    std::io::Read::read_to_string(&mut run.stdout.take().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), out, err)
}

/// The ledger's `released_through`, once the file is there.
fn released_through(ck: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(ck.join("released.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["released_through"].as_u64()
}

/// A hung worker (stopped, its connection open and silent) fails the step
/// within `--worker-timeout`: with `--on-worker-loss stop` the run exits 1
/// naming the timeout; with `continue` it goes on without the worker and
/// ends with the uninterrupted run's ε, steps and accuracy (the same
/// shards, re-planned over the remaining worker), the loss among its
/// warnings.
#[test]
fn should_time_out_a_hung_worker_and_stop_or_go_on_without_it() {
    let dir = temp_dir("distributed-cli", "hung-worker");
    let flags = [
        "train", "--epochs", "6", "--seed", "3", "--quiet", "--report", "-",
    ];
    for policy in ["stop", "continue"] {
        let ck = dir.join(policy);
        let (a, b) = (worker(None), worker(None));
        let workers = format!("{},{}", a.url, b.url);
        let started = std::time::Instant::now();
        let run = spawn_train(
            &[
                &flags[..],
                &[
                    "--workers",
                    &workers,
                    "--worker-timeout",
                    "4",
                    "--on-worker-loss",
                    policy,
                    "--checkpoint-dir",
                    ck.to_str().unwrap(),
                ],
            ]
            .concat(),
        );
        while released_through(&ck).is_none_or(|r| r < 3) {
            assert!(started.elapsed().as_secs() < 120, "no step");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        signal(&b, "-STOP");
        let (code, out, err) = finish(run, started, 240);
        signal(&b, "-CONT");
        if policy == "stop" {
            assert_eq!(code, Some(1), "{err}");
            assert!(
                err.contains("did not answer within the step timeout (4 s)"),
                "{err}"
            );
            assert!(err.contains(&b.url), "{err}");
            assert!(err.contains("the step was not taken"), "{err}");
            continue;
        }
        assert_eq!(code, Some(0), "{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let warnings = report["warnings"].to_string();
        assert!(
            warnings.contains(&format!("worker {} was lost", b.url)),
            "{warnings}"
        );
        let whole: serde_json::Value =
            serde_json::from_str(&ok(&dpsgd(&[&flags[..], &["--devices", "2"]].concat()))).unwrap();
        for key in ["epsilon", "steps", "noise_multiplier", "sample_rate"] {
            assert!(!whole[key].is_null(), "{key}");
            assert_eq!(report[key], whole[key], "{key}");
        }
        assert_eq!(report["test_accuracy"], whole["test_accuracy"]);
        assert_eq!(report["redone_steps"], 0, "nothing was redone");
        drop(a);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An OS-seeded run on two worker processes with a checkpoint folder,
/// the second worker killed once the ledger has passed step 16 (past the
/// first checkpoint, 11 steps an epoch): the run exits 1. Returns the
/// ledger's last released step and the run's standard error.
fn kill_a_worker_between_checkpoints(flags: &[&str], ck: &Path) -> (u64, String) {
    let (a, mut b) = (worker(None), worker(None));
    let workers = format!("{},{}", a.url, b.url);
    let started = std::time::Instant::now();
    let run = spawn_train(
        &[
            flags,
            &[
                "--workers",
                &workers,
                "--checkpoint-dir",
                ck.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    while released_through(ck).is_none_or(|r| r < 16) {
        assert!(started.elapsed().as_secs() < 120, "no step");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = b.child.kill();
    let _ = b.child.wait();
    let (code, _, err) = finish(run, started, 180);
    assert_eq!(code, Some(1), "{err}");
    drop(a);
    (released_through(ck).unwrap(), err)
}

/// `flags` resumed from `ck` on two in-process workers.
fn resume(flags: &[&str], ck: &Path) -> std::process::Output {
    dpsgd(
        &[
            flags,
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
    )
}

/// An OS-seeded run whose worker dies between two checkpoints: the
/// workers saw the noisy outcome of the steps after the checkpoint, which
/// the resumed run redoes with fresh noise. The resumed report charges
/// them: `redone_steps` is the ledger's count, `steps` includes them, and
/// ε is the accountant's over all of them, above the plan's. Under a
/// target ε (an enforced budget) the charge leaves the plan over budget:
/// the resume is refused, saying why.
#[test]
fn should_charge_the_steps_workers_saw_when_an_os_seeded_run_resumes() {
    let dir = temp_dir("distributed-cli", "charge-redone");
    let ck = dir.join("ck");
    let flags = [
        "train",
        "--epochs",
        "40",
        "--quiet",
        "--noise-multiplier",
        "1.1",
    ];
    let (through, _) = kill_a_worker_between_checkpoints(&flags, &ck);
    // The checkpoint is the last whole epoch before step `through`.
    let expected = (through - 1) % 11;
    eprintln!("the ledger stood at step {through}: {expected} steps to charge");
    let resumed: serde_json::Value = serde_json::from_str(&ok(&resume(&flags, &ck))).unwrap();
    assert_eq!(resumed["redone_steps"], expected, "ledger at {through}");
    assert_eq!(resumed["steps"], 440 + expected);
    let epsilon = |steps: u64| {
        let out = ok(&dpsgd(&[
            "epsilon",
            "--sample-rate",
            &resumed["sample_rate"].to_string(),
            "--steps",
            &steps.to_string(),
            "--noise-multiplier",
            &resumed["noise_multiplier"].to_string(),
            "--delta",
            &resumed["delta"].to_string(),
            "--accountant",
            resumed["accountant"].as_str().unwrap(),
            "--json",
        ]));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["epsilon"]
            .as_f64()
            .unwrap()
    };
    let got = resumed["epsilon"].as_f64().unwrap();
    let want = epsilon(440 + expected);
    assert!((got - want).abs() <= 1e-9 * want, "ε {got} vs {want}");
    if expected > 0 {
        assert!(got > epsilon(440), "the redone steps raise ε");
    }
    // The charge is kept: resumed again (nothing left to train), the same.
    let again: serde_json::Value = serde_json::from_str(&ok(&resume(&flags, &ck))).unwrap();
    assert_eq!(again["redone_steps"], expected);
    assert_eq!(again["epsilon"], resumed["epsilon"]);
    // The default target ε = 3 is a budget the charge breaks: refused.
    let ck = dir.join("target");
    let flags = ["train", "--epochs", "40", "--quiet"];
    let (through, _) = kill_a_worker_between_checkpoints(&flags, &ck);
    let out = resume(&flags, &ck);
    let err = String::from_utf8_lossy(&out.stderr);
    if !(through - 1).is_multiple_of(11) {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("redone after checkpoints"), "{err}");
        assert!(err.contains("> the budget 3"), "{err}");
        assert!(err.contains("spent all the same: ε = "), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
