//! `dpsgd bench step --compare-torch`: the PyTorch side run beside dpsgd's
//! measurement, held to its `--help` with a stand-in interpreter (a shell
//! script that answers as the reference script would, and logs its calls),
//! so that the tests need no torch.
#![cfg(unix)]

mod common;

use common::{assert_usage_error, temp_dir};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A stand-in for `python3` in `dir`: `-c 'import …'` succeeds (or fails
/// as a missing torch does, with `import_fails`), a run of the script
/// prints one result line per run with torch 2 ms, Opacus hooks 16 ms and
/// ghost 8 ms (or fails, with `run_fails`). Every call is logged to
/// `dir/calls.log`.
fn fake_python(dir: &Path, import_fails: bool, run_fails: bool) -> PathBuf {
    let path = dir.join("python");
    let script = format!(
        r#"#!/bin/sh
log="{log}"
if [ "$1" = "-c" ] && [ "${{2#import }}" != "$2" ]; then
    echo "import [$2] omp=$OMP_NUM_THREADS" >> "$log"
    if {import_fails}; then echo "ModuleNotFoundError: No module named 'torch'" >&2; exit 1; fi
    exit 0
fi
case "$2" in *"def main()"*) ;; *) echo "not the reference script" >&2; exit 3;; esac
shift 2
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model=$2;; --batch-sizes) batch=$2;; --modes) modes=$2;;
        --device) device=$2;; --repeats) repeats=$2;; --seq-len) seq=$2;;
    esac
    shift 2
done
echo "run model=$model batch=$batch modes=[$modes] device=$device repeats=$repeats seq=$seq omp=$OMP_NUM_THREADS" >> "$log"
if {run_fails}; then echo "RuntimeError: out of memory" >&2; exit 1; fi
echo "torch: warming up"
echo "{{\"model\": \"$model\", \"batch_size\": $batch, \"threads\": $OMP_NUM_THREADS, \"device\": \"$device\", \"torch_ms\": 2.0, \"opacus_hooks_ms\": 16.0, \"opacus_ghost_ms\": 8.0}}"
"#,
        log = dir.join("calls.log").display(),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `dpsgd bench step` with `args`, torch's thread count left to dpsgd
/// (`OMP_NUM_THREADS` unset) and burn's set to 3.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(["bench", "step", "--repeats", "1", "--warmup", "0"])
        .args(["--fallback-repeats", "0"])
        .args(args)
        .env_remove("OMP_NUM_THREADS")
        .env("RAYON_NUM_THREADS", "3")
        .output()
        .expect("run dpsgd")
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn should_time_torch_once_per_round_after_dpsgd_and_compare() {
    let dir = temp_dir("bench-torch", "rounds");
    let python = fake_python(&dir, false, false);
    let out = bench(&[
        "--model",
        "mlp",
        "--batch-sizes",
        "4,8",
        "--rounds",
        "2",
        "--json",
        "--compare-torch",
        "--python",
        python.to_str().unwrap(),
    ]);
    common::ok(&out);
    // One check of the imports before anything is timed, then one run per
    // round and batch size, in dpsgd's order, on dpsgd's thread count.
    assert_eq!(
        calls(&dir),
        [
            "import [import torch, opacus] omp=3",
            "run model=mlp batch=4 modes=[hooks,ghost] device=cpu repeats=1 seq=64 omp=3",
            "run model=mlp batch=4 modes=[hooks,ghost] device=cpu repeats=1 seq=64 omp=3",
            "run model=mlp batch=8 modes=[hooks,ghost] device=cpu repeats=1 seq=64 omp=3",
            "run model=mlp batch=8 modes=[hooks,ghost] device=cpu repeats=1 seq=64 omp=3",
        ]
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), 2);
    for (line, batch) in lines.iter().zip([4, 8]) {
        assert_eq!(line["batch_size"], batch, "{line}");
        assert_eq!(line["torch_ms"], 2.0, "{line}");
        assert_eq!(line["torch_round_ms"], serde_json::json!([2.0, 2.0]));
        assert_eq!(line["opacus_hooks_ms"], 16.0, "{line}");
        assert_eq!(line["opacus_ghost_ms"], 8.0, "{line}");
        assert_eq!(line["opacus_best_mode"], "ghost", "{line}");
        assert_eq!(line["torch_threads"], 3, "{line}");
        assert_eq!(line["torch_device"], "cpu", "{line}");
        let (np, dp) = (
            line["non_private_ms"].as_f64().unwrap(),
            line["dp_ms"].as_f64().unwrap(),
        );
        let close = |key: &str, want: f64| {
            let got = line[key].as_f64().unwrap();
            assert!((got - want).abs() <= 1e-12 * want, "{key}: {got} vs {want}");
        };
        close("dp_vs_torch", dp / 2.0);
        close("non_private_vs_torch", np / 2.0);
        close("dp_vs_opacus_best", dp / 8.0);
    }
}

#[test]
fn should_time_torch_alone_without_opacus_modes_and_say_so_in_text() {
    let dir = temp_dir("bench-torch", "alone");
    let python = fake_python(&dir, false, false);
    let python = python.to_str().unwrap();
    let base = ["--model", "lstm", "--batch-size", "2", "--seq-len", "3"];
    let mut args = base.to_vec();
    args.extend(["--json", "--compare-torch", "--python", python]);
    args.extend(["--torch-modes", "", "--torch-device", "cuda"]);
    let out = bench(&args);
    common::ok(&out);
    assert_eq!(
        calls(&dir),
        [
            "import [import torch] omp=3",
            "run model=lstm batch=2 modes=[] device=cuda repeats=1 seq=3 omp=3",
        ]
    );
    let line = &lines(&out)[0];
    assert_eq!(line["torch_ms"], 2.0, "{line}");
    assert!(line.get("opacus_ghost_ms").is_none(), "{line}");
    assert_eq!(line["opacus_best_mode"], Value::Null, "{line}");
    assert_eq!(line["dp_vs_opacus_best"], Value::Null, "{line}");
    // Without --json, a second line reads dpsgd against torch.
    let mut args = base.to_vec();
    args.extend(["--compare-torch", "--python", python]);
    let text = common::ok(&bench(&args));
    assert!(
        text.contains("PyTorch: 2.00 ms non-private") && text.contains("(ghost)"),
        "{text}"
    );
}

#[test]
fn should_refuse_before_timing_when_torch_cannot_run() {
    // No such interpreter.
    let out = bench(&["--compare-torch", "--python", "/nonexistent/python3"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--compare-torch") && stderr.contains("--python"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing timed");
    // torch is missing: the interpreter's own words are quoted.
    let dir = temp_dir("bench-torch", "missing");
    let python = fake_python(&dir, true, false);
    let out = bench(&["--compare-torch", "--python", python.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No module named 'torch'"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing timed");
    assert_eq!(calls(&dir).len(), 1, "only the import was tried");
    // The script fails mid-run: the batch is named, nothing is printed for it.
    let dir = temp_dir("bench-torch", "fails");
    let python = fake_python(&dir, false, true);
    let python = python.to_str().unwrap();
    let out = bench(&[
        "--batch-size",
        "2",
        "--json",
        "--compare-torch",
        "--python",
        python,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed at batch 2 ") && stderr.contains("out of memory"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn should_refuse_unknown_modes_and_torch_flags_without_compare_torch() {
    assert_usage_error(
        &bench(&["--compare-torch", "--torch-modes", "ghost,fast"]),
        &["--torch-modes", "fast"],
    );
    assert_usage_error(
        &bench(&[
            "--compare-torch",
            "--torch-script",
            "/nonexistent/torch_step.py",
        ]),
        &["--torch-script"],
    );
    for flag in [
        ["--python", "python3"],
        ["--torch-modes", "ghost"],
        ["--torch-device", "cpu"],
    ] {
        let out = bench(&flag);
        assert_eq!(out.status.code(), Some(2), "{flag:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--compare-torch"),
            "{flag:?}"
        );
    }
}
