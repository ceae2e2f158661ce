//! Checkpoints under an adversary and under accidents (issue 26, item 2):
//! `kill -9` at random moments never leaves a checkpoint that cannot be
//! resumed to the uninterrupted run's exact result; a second run into a
//! checkpoint folder is refused at once; a checkpoint edited by hand (its
//! checksum recomputed) is refused, not believed.

mod common;

use common::{assert_usage_error, dpsgd, temp_dir, tiny_csv};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The arguments of a seeded σ = 1 logistic regression on [`tiny_csv`]
/// (48 training examples, batch 8: 6 steps an epoch) checkpointed into
/// `ck`, its report in `report` and its model in `model`.
fn train_args(dir: &Path, epochs: &str, ck: &Path, report: &Path, model: &Path) -> Vec<String> {
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{"header": true}"#).expect("write the schema");
    let mut args: Vec<String> = [
        "train",
        "--quiet",
        "--model",
        "logreg",
        "--num-classes",
        "2",
        "--batch-size",
        "8",
        "--noise-multiplier",
        "1",
        "--seed",
        "3",
        "--epochs",
        epochs,
    ]
    .map(String::from)
    .to_vec();
    for (flag, path) in [
        (
            "--dataset",
            PathBuf::from(format!("csv:{}", tiny_csv(dir).display())),
        ),
        ("--schema", schema),
        ("--checkpoint-dir", ck.to_path_buf()),
        ("--report", report.to_path_buf()),
        ("--save-model", model.to_path_buf()),
    ] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    args
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dpsgd")
}

fn run(args: &[String]) -> Output {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    dpsgd(&strs)
}

/// A report with what a resume may change removed: timings (and the
/// model's path, another file here).
fn without_timings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !k.ends_with("seconds") && k != "saved_model");
            map.values_mut().for_each(without_timings);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_timings),
        _ => {}
    }
}

fn report(path: &Path) -> serde_json::Value {
    let mut v = common::read_json(path);
    without_timings(&mut v);
    v
}

/// The parameters' bytes in a saved model (burn's burnpack record: `NRUB`,
/// a u16 version, a u32 LE metadata length, the metadata — which holds
/// parameter ids, random per process — then the tensors' data).
fn tensor_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("the saved model");
    assert_eq!(&bytes[..4], b"NRUB", "a burnpack record");
    let len = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes")) as usize;
    assert!(bytes.len() > 10 + len, "tensor data after the metadata");
    bytes[10 + len..].to_vec()
}

/// A small deterministic generator for the kill times (xorshift64*).
struct Times(u64);

impl Times {
    fn next_fraction(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn should_finish_every_killed_run_with_the_uninterrupted_result() {
    // Issue 26: the engine's checkpoint and the loop's state were renamed
    // one after the other; 6 of 42 `kill -9` left them at different steps
    // and the folder could then be neither resumed nor reused. They are now
    // one file: 40 kills at random moments (during training, checkpoint
    // writes, the final evaluation and the outputs), each followed by a
    // resume, must end with the uninterrupted run's report and model.
    let dir = temp_dir("checkpoints", "kill");
    let epochs = "100";
    let (ck0, r0, m0) = (dir.join("ck0"), dir.join("r0.json"), dir.join("m0.bin"));
    let started = Instant::now();
    let out = run(&train_args(&dir, epochs, &ck0, &r0, &m0));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = started.elapsed();
    let (ck, r, m) = (dir.join("ck"), dir.join("r.json"), dir.join("m.bin"));
    let fresh = train_args(&dir, epochs, &ck, &r, &m);
    let mut resume = fresh.clone();
    resume.push("--resume".into());

    let mut times = Times(0x9e37_79b9_7f4a_7c15);
    let (mut kills, mut resumes, mut finished_early) = (0, 0, 0);
    while kills < 40 {
        // Resume when a checkpoint exists (a kill before the first one
        // leaves a folder to start afresh in).
        let resuming = ck.join("checkpoint.dpsgd").exists();
        let args = if resuming { &resume } else { &fresh };
        resumes += usize::from(resuming);
        let mut child = spawn(args);
        std::thread::sleep(whole.mul_f64(1.2 * times.next_fraction()));
        match child.try_wait().expect("wait") {
            Some(status) => {
                // It finished (or failed) before the kill: it must have
                // finished, and then there is nothing more to interrupt.
                let stderr = child.wait_with_output().expect("stderr").stderr;
                assert!(
                    status.success(),
                    "a run after {kills} kills failed: {}",
                    String::from_utf8_lossy(&stderr)
                );
                finished_early += 1;
                std::fs::remove_dir_all(&ck).expect("start over");
            }
            None => {
                child.kill().expect("kill -9");
                child.wait().expect("reap");
                kills += 1;
            }
        }
    }
    // The last interrupted run, resumed to its end.
    let args = if ck.join("checkpoint.dpsgd").exists() {
        &resume
    } else {
        &fresh
    };
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the resume after {kills} kills failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(resumes >= 10, "only {resumes} of the runs resumed");
    assert_eq!(report(&r), report(&r0), "the report differs after kills");
    assert_eq!(
        tensor_bytes(&m),
        tensor_bytes(&m0),
        "the model's parameters differ after kills"
    );
    // Killed writes leave no temporary files behind once resumed.
    let names: Vec<String> = std::fs::read_dir(&ck)
        .expect("the folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dpsgd-tmp"))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
    eprintln!("{kills} kills, {resumes} resumes, {finished_early} runs finished before the kill");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn should_refuse_a_second_run_into_a_folder_in_use() {
    // Issue 26: two runs into one folder raced; one died after training.
    let dir = temp_dir("checkpoints", "lock");
    let ck = dir.join("ck");
    let long = train_args(
        &dir,
        "100000",
        &ck,
        &dir.join("r1.json"),
        &dir.join("m1.bin"),
    );
    let mut first = spawn(&long);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ck.join("checkpoint.dpsgd").exists() {
        assert!(
            Instant::now() < deadline,
            "the first run made no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut second = train_args(
        &dir,
        "100000",
        &ck,
        &dir.join("r2.json"),
        &dir.join("m2.bin"),
    );
    second.push("--resume".into());
    let out = run(&second);
    first.kill().expect("stop the first run");
    first.wait().expect("reap");
    assert_usage_error(&out, &["--checkpoint-dir", "in use by another run"]);
    assert!(!dir.join("r2.json").exists() && !dir.join("m2.bin").exists());
    // Once the first has stopped, the folder is free again: a resume gets
    // past the lock (to be refused, quickly, for another learning rate).
    second.extend(["--lr".into(), "0.5".into()]);
    assert_usage_error(&run(&second), &["--resume", "lr"]);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The checkpoint at `path` with its JSON header and its caller state (the
/// training loop's, JSON too) edited, the checksum recomputed: what a
/// hand-editing adversary writes.
fn forge(
    path: &Path,
    edit_header: impl Fn(&mut serde_json::Value),
    edit_state: impl Fn(&mut serde_json::Value),
) {
    let bytes = std::fs::read(path).expect("the checkpoint");
    assert_eq!(&bytes[..8], b"DPSGDCK2");
    let body = &bytes[12..bytes.len() - 8];
    let mut sections = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let len = u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes")) as usize;
        sections.push(body[at + 8..at + 8 + len].to_vec());
        at += 8 + len;
    }
    for (i, edit) in [(0, &edit_header as &dyn Fn(&mut _)), (3, &edit_state)] {
        let mut v: serde_json::Value = serde_json::from_slice(&sections[i]).expect("JSON");
        edit(&mut v);
        sections[i] = serde_json::to_vec(&v).expect("JSON");
    }
    let mut new_body = Vec::new();
    for s in &sections {
        new_body.extend_from_slice(&(s.len() as u64).to_le_bytes());
        new_body.extend_from_slice(s);
    }
    new_body.extend_from_slice(b"DPSGDEND");
    let mut out = b"DPSGDCK2".to_vec();
    out.extend_from_slice(&crc32(&new_body).to_le_bytes());
    out.extend_from_slice(&new_body);
    std::fs::write(path, out).expect("write the forgery");
}

/// CRC-32 (IEEE, reflected), bit by bit: the checkpoint's checksum.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sets every field named `key`, at any depth, to `value`.
fn set_everywhere(v: &mut serde_json::Value, key: &str, value: &serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                if k == key {
                    *field = value.clone();
                } else {
                    set_everywhere(field, key, value);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                set_everywhere(item, key, value);
            }
        }
        _ => {}
    }
}

/// An edit of the checkpoint file at a path.
type Edit = Box<dyn Fn(&Path)>;

#[test]
fn should_refuse_a_checkpoint_edited_by_hand() {
    // Issue 26: σ edited from 1 to 100 inside a checkpoint (checksum
    // recomputed) made a σ = 1 run report ε = 3.25 where the truth is
    // 18.6; an edited `epochs_done` ran extra epochs; δ = 0.5 passed
    // without --allow-large-delta. Each edit is refused, exit 2, and the
    // file is left as it was.
    let dir = temp_dir("checkpoints", "forged");
    let ck = dir.join("ck");
    let (r, m) = (dir.join("r.json"), dir.join("m.bin"));
    let out = run(&train_args(&dir, "2", &ck, &r, &m));
    assert_eq!(out.status.code(), Some(0));
    let honest = std::fs::read(ck.join("checkpoint.dpsgd")).expect("the checkpoint");
    let mut resume = train_args(&dir, "4", &ck, &r, &m);
    resume.push("--resume".into());
    let cases: [(&str, Edit); 5] = [
        (
            "σ",
            Box::new(|p| {
                forge(
                    p,
                    |h| set_everywhere(h, "noise_multiplier", &100.0.into()),
                    |_| {},
                )
            }),
        ),
        (
            "δ",
            Box::new(|p| forge(p, |h| set_everywhere(h, "delta", &0.5.into()), |_| {})),
        ),
        (
            "does not add up",
            Box::new(|p| forge(p, |_| {}, |s| s["epochs_done"] = 1.into())),
        ),
        (
            "does not add up",
            Box::new(|p| {
                // Fewer steps in the accountant's history, and the loop's
                // record of them to match: the epochs still do not.
                forge(
                    p,
                    |h| set_everywhere(h, "steps", &6.into()),
                    |s| s["steps"] = 6.into(),
                )
            }),
        ),
        (
            "the large-δ allowance",
            Box::new(|p| {
                forge(
                    p,
                    |h| set_everywhere(h, "allow_large_delta", &true.into()),
                    |_| {},
                )
            }),
        ),
    ];
    let (report_before, model_before) = (
        std::fs::read(&r).expect("the report"),
        std::fs::read(&m).expect("the model"),
    );
    for (what, edit) in cases {
        let path = ck.join("checkpoint.dpsgd");
        std::fs::write(&path, &honest).expect("restore the checkpoint");
        edit(&path);
        let forged = std::fs::read(&path).expect("the forgery");
        let out = run(&resume);
        assert_usage_error(&out, &["--resume", what]);
        assert_eq!(
            std::fs::read(&path).expect("the checkpoint"),
            forged,
            "a refused resume changed the checkpoint"
        );
        // Nothing else was written either.
        assert_eq!(std::fs::read(&r).expect("the report"), report_before);
        assert_eq!(std::fs::read(&m).expect("the model"), model_before);
    }
    // The honest checkpoint still resumes.
    std::fs::write(ck.join("checkpoint.dpsgd"), &honest).expect("restore");
    let out = run(&resume);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn should_take_warnings_and_epsilons_from_the_settings_not_the_file() {
    // Review of issue 26: a resume showed the warnings and the per-epoch ε
    // the file held, so an edit could drop "δ ≥ 1/N" or shrink the budget
    // curve; and a checkpoint behind a link was rewritten in place.
    let dir = temp_dir("checkpoints", "file-claims");
    let (ck, ck0) = (dir.join("ck"), dir.join("ck0"));
    let (r, m) = (dir.join("r.json"), dir.join("m.bin"));
    let (r0, m0) = (dir.join("r0.json"), dir.join("m0.bin"));
    let large_delta = ["--delta", "0.1", "--allow-large-delta"].map(String::from);
    let mut first = train_args(&dir, "2", &ck, &r, &m);
    first.extend(large_delta.clone());
    assert_eq!(run(&first).status.code(), Some(0));
    forge(
        &ck.join("checkpoint.dpsgd"),
        |_| {},
        |s| {
            s["warnings"] = serde_json::json!([]);
            s["history"][0]["epsilon"] = 0.001.into();
        },
    );
    let page = dir.join("page.html");
    let mut resume = train_args(&dir, "3", &ck, &r, &m);
    resume.extend(large_delta.clone());
    resume.extend([
        "--html".into(),
        page.display().to_string(),
        "--resume".into(),
    ]);
    let out = run(&resume);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The uninterrupted run, with ε per epoch.
    let mut whole = train_args(&dir, "3", &ck0, &r0, &m0);
    whole.extend(large_delta);
    whole.extend([
        "--html".into(),
        dir.join("page0.html").display().to_string(),
    ]);
    assert_eq!(run(&whole).status.code(), Some(0));
    let (resumed, uninterrupted) = (common::read_json(&r), common::read_json(&r0));
    assert_eq!(resumed["warnings"], uninterrupted["warnings"]);
    assert!(
        resumed["warnings"].to_string().contains("δ = 0.1"),
        "{}",
        resumed["warnings"]
    );
    let first_epsilon =
        |v: &serde_json::Value| v["not_covered_by_epsilon"]["epoch_history"][0]["epsilon"].clone();
    assert_eq!(first_epsilon(&resumed), first_epsilon(&uninterrupted));

    // A checkpoint behind a symbolic link is refused, the link kept.
    #[cfg(unix)]
    {
        let linked = dir.join("linked");
        std::fs::create_dir_all(&linked).expect("a folder");
        std::os::unix::fs::symlink(ck.join("checkpoint.dpsgd"), linked.join("checkpoint.dpsgd"))
            .expect("a link");
        let mut args = train_args(
            &dir,
            "3",
            &linked,
            &dir.join("r2.json"),
            &dir.join("m2.bin"),
        );
        args.extend(["--delta", "0.1", "--allow-large-delta", "--resume"].map(String::from));
        assert_usage_error(&run(&args), &["--checkpoint-dir", "not a regular file"]);
        assert!(
            std::fs::symlink_metadata(linked.join("checkpoint.dpsgd"))
                .expect("the link")
                .file_type()
                .is_symlink()
        );
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
