//! `audit`, `sweep` and `compare` check every output before any work
//! (issue 26, item 1): an output that cannot be written (a folder where a
//! file goes, a missing parent folder, `-` where only `--report` may write
//! to standard output, a file where the `--out` folder goes), or that
//! would replace an input (the data set, the scaling reference) or
//! another output of the run (two flags on one path, a flag on a file
//! written inside `--out`), is refused with exit status 2 and one line
//! naming the flags. Every refusal leaves the scratch folder exactly as it
//! was: the input byte-identical, no `--out` folder created (it is created
//! after the data is read, so none proves that nothing ran).

mod common;

use common::{assert_usage_error, tiny_csv};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch folder holding `tiny.csv`.
struct Scratch {
    dir: PathBuf,
    data: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = common::temp_dir("dpsgd-output-clobbering", name);
        // A leftover from an earlier run of the same process id.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let data = tiny_csv(&dir);
        Self { dir, data }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("utf-8 path").to_owned()
    }

    /// Runs `command` (audit, sweep or compare) on the tiny CSV, as fast
    /// as it goes (one epoch, the loss attack, one budget or defence), in
    /// the scratch folder, with `--out` and `extra`.
    fn run(&self, command: &str, out: &str, extra: &[&str]) -> Output {
        let data = format!("csv:{}", self.data.display());
        let mut args = vec![
            command,
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
            "--attacks",
            "loss",
            "--out",
            out,
        ];
        match command {
            "sweep" => args.extend(["--epsilons", "inf"]),
            "compare" => args.extend(["--defences", "none"]),
            _ => {}
        }
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_dpsgd"))
            .args(&args)
            .current_dir(&self.dir)
            .output()
            .expect("run dpsgd")
    }

    /// Every file and folder under the scratch folder, with its content
    /// (folders: empty).
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, into: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    into.push((path.clone(), Vec::new()));
                    walk(&path, into);
                } else if meta.is_file() {
                    into.push((path.clone(), std::fs::read(&path).unwrap()));
                } else {
                    into.push((path, Vec::new()));
                }
            }
        }
        let mut all = Vec::new();
        walk(&self.dir, &mut all);
        all.sort();
        all
    }

    /// Runs `command` and checks that it is refused as a usage error
    /// naming every one of `expected`, before doing anything: the scratch
    /// folder is left as it was.
    fn assert_refused(&self, command: &str, out: &str, extra: &[&str], expected: &[&str]) {
        let before = self.snapshot();
        let data = std::fs::read(&self.data).unwrap();
        let result = self.run(command, out, extra);
        assert_usage_error(&result, expected);
        assert_eq!(
            std::fs::read(&self.data).unwrap(),
            data,
            "the input changed"
        );
        let after = self.snapshot();
        let names = |s: &[(PathBuf, Vec<u8>)]| s.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&after), names(&before), "files appeared or vanished");
        assert!(after == before, "a file changed");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const COMMANDS: [&str; 3] = ["audit", "sweep", "compare"];

// (1) Outputs that cannot be written, found before any work.

fn html_is_a_directory(command: &str) {
    let s = Scratch::new(&format!("{command}-html-dir"));
    std::fs::create_dir(s.dir.join("page.html")).unwrap();
    s.assert_refused(
        command,
        &s.path("out"),
        &["--html", &s.path("page.html")],
        &["--html", "directory"],
    );
}

#[test]
fn audit_should_refuse_a_directory_as_html() {
    html_is_a_directory(COMMANDS[0]);
}

#[test]
fn sweep_should_refuse_a_directory_as_html() {
    html_is_a_directory(COMMANDS[1]);
}

#[test]
fn compare_should_refuse_a_directory_as_html() {
    html_is_a_directory(COMMANDS[2]);
}

fn html_in_a_missing_folder(command: &str) {
    let s = Scratch::new(&format!("{command}-html-missing"));
    s.assert_refused(
        command,
        &s.path("out"),
        &["--html", &s.path("missing/page.html")],
        &["--html", "missing"],
    );
}

#[test]
fn audit_should_refuse_html_in_a_missing_folder() {
    html_in_a_missing_folder("audit");
}

#[test]
fn sweep_should_refuse_html_in_a_missing_folder() {
    html_in_a_missing_folder("sweep");
}

#[test]
fn compare_should_refuse_html_in_a_missing_folder() {
    html_in_a_missing_folder("compare");
}

fn html_to_standard_output(command: &str) {
    let s = Scratch::new(&format!("{command}-html-dash"));
    // Before the fix, a file named `-` in the working folder.
    s.assert_refused(
        command,
        &s.path("out"),
        &["--html", "-"],
        &["--html", "--report"],
    );
}

#[test]
fn audit_should_refuse_dash_as_html() {
    html_to_standard_output("audit");
}

#[test]
fn sweep_should_refuse_dash_as_html() {
    html_to_standard_output("sweep");
}

#[test]
fn compare_should_refuse_dash_as_html() {
    html_to_standard_output("compare");
}

fn out_is_a_file(command: &str) {
    let s = Scratch::new(&format!("{command}-out-file"));
    std::fs::write(s.dir.join("results"), "not a folder").unwrap();
    s.assert_refused(command, &s.path("results"), &[], &["--out", "not a folder"]);
}

#[test]
fn audit_should_refuse_a_file_as_out() {
    out_is_a_file("audit");
}

#[test]
fn sweep_should_refuse_a_file_as_out() {
    out_is_a_file("sweep");
}

#[test]
fn compare_should_refuse_a_file_as_out() {
    out_is_a_file("compare");
}

fn out_to_standard_output(command: &str) {
    let s = Scratch::new(&format!("{command}-out-dash"));
    // Before the fix, a folder named `-` in the working folder.
    s.assert_refused(command, "-", &[], &["--out", "--report"]);
}

#[test]
fn audit_should_refuse_dash_as_out() {
    out_to_standard_output("audit");
}

#[test]
fn sweep_should_refuse_dash_as_out() {
    out_to_standard_output("sweep");
}

#[test]
fn compare_should_refuse_dash_as_out() {
    out_to_standard_output("compare");
}

// (2) Outputs over an input.

fn html_over_the_dataset(command: &str) {
    let s = Scratch::new(&format!("{command}-html-data"));
    // Another spelling of the data set's path.
    s.assert_refused(
        command,
        &s.path("out"),
        &["--html", "./out/../tiny.csv"],
        &["--html", "--dataset"],
    );
}

#[test]
fn audit_should_refuse_html_over_the_dataset() {
    html_over_the_dataset("audit");
}

#[test]
fn sweep_should_refuse_html_over_the_dataset() {
    html_over_the_dataset("sweep");
}

#[test]
fn compare_should_refuse_html_over_the_dataset() {
    html_over_the_dataset("compare");
}

/// The data set is a file the command writes in `--out`.
fn out_file_over_the_dataset(command: &str, file: &str) {
    let s = Scratch::new(&format!("{command}-out-data"));
    std::fs::create_dir(s.dir.join("out")).unwrap();
    let moved = s.dir.join("out").join(file);
    std::fs::rename(&s.data, &moved).unwrap();
    let s = Scratch { data: moved, ..s };
    s.assert_refused(command, &s.path("out"), &[], &["--out", "--dataset", file]);
}

#[test]
fn audit_should_refuse_an_out_folder_holding_the_dataset_as_audit_json() {
    out_file_over_the_dataset("audit", "audit.json");
}

#[test]
fn sweep_should_refuse_an_out_folder_holding_the_dataset_as_sweep_csv() {
    out_file_over_the_dataset("sweep", "sweep.csv");
}

#[test]
fn compare_should_refuse_an_out_folder_holding_the_dataset_as_compare_csv() {
    out_file_over_the_dataset("compare", "compare.csv");
}

#[test]
fn audit_should_refuse_report_over_the_dataset() {
    let s = Scratch::new("audit-report-data");
    s.assert_refused(
        "audit",
        &s.path("out"),
        &["--report", &s.path("tiny.csv")],
        &["--report", "--dataset"],
    );
}

#[test]
fn audit_should_refuse_save_model_over_the_dataset() {
    let s = Scratch::new("audit-model-data");
    s.assert_refused(
        "audit",
        &s.path("out"),
        &["--save-model", "tiny.csv"],
        &["--save-model", "--dataset"],
    );
}

#[test]
fn audit_should_refuse_html_over_the_scaling_reference() {
    let s = Scratch::new("audit-html-reference");
    let reference = s.dir.join("reference.csv");
    std::fs::copy(&s.data, &reference).unwrap();
    s.assert_refused(
        "audit",
        &s.path("out"),
        &[
            "--scaling-reference",
            &s.path("reference.csv"),
            "--html",
            &s.path("reference.csv"),
        ],
        &["--html", "--scaling-reference"],
    );
}

// (2) Two outputs on one path.

fn html_over_an_out_file(command: &str, file: &str) {
    let s = Scratch::new(&format!("{command}-html-out"));
    // The --out folder does not exist yet: the clash is still found.
    s.assert_refused(
        command,
        "out",
        &["--html", &format!("out/{file}")],
        &["--html", "--out", file],
    );
}

#[test]
fn audit_should_refuse_html_over_roc_svg_in_out() {
    html_over_an_out_file("audit", "roc.svg");
}

#[test]
fn sweep_should_refuse_html_over_sweep_json_in_out() {
    html_over_an_out_file("sweep", "sweep.json");
}

#[test]
fn compare_should_refuse_html_over_compare_md_in_out() {
    html_over_an_out_file("compare", "compare.md");
}

#[test]
fn audit_should_refuse_report_over_audit_json_in_out() {
    let s = Scratch::new("audit-report-out");
    std::fs::create_dir(s.dir.join("out")).unwrap();
    s.assert_refused(
        "audit",
        "out",
        &["--report", &s.path("out/audit.json")],
        &["--report", "--out", "audit.json"],
    );
}

#[test]
fn audit_should_refuse_report_and_html_on_one_path() {
    let s = Scratch::new("audit-report-html");
    s.assert_refused(
        "audit",
        &s.path("out"),
        &[
            "--report",
            &s.path("both.json"),
            "--html",
            &s.path("out/../both.json"),
        ],
        &["--html", "--report"],
    );
}

#[test]
fn audit_should_refuse_save_model_and_html_on_one_path() {
    let s = Scratch::new("audit-model-html");
    s.assert_refused(
        "audit",
        &s.path("out"),
        &["--html", "page.html", "--save-model", &s.path("page.html")],
        &["--save-model", "--html"],
    );
}

// (3) The figures are written as every other output is: atomically, through
// a fresh temporary file readable by its owner only (they plot statistics
// of the private data), never truncated in place.

/// Runs `command` to completion and checks that each of `figures` in
/// `--out` is a file of mode 0600.
#[cfg(unix)]
fn figures_owner_only(command: &str, figures: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new(&format!("{command}-figures"));
    let result = s.run(command, &s.path("out"), &[]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    for figure in figures {
        let meta = std::fs::metadata(s.dir.join("out").join(figure)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{figure}");
    }
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[cfg(unix)]
#[test]
fn audit_should_write_the_roc_figures_for_the_owner_only() {
    figures_owner_only("audit", &["roc.svg", "roc-loglog.svg"]);
}

#[cfg(unix)]
#[test]
fn sweep_should_write_its_figure_for_the_owner_only() {
    figures_owner_only("sweep", &["sweep.svg"]);
}

#[cfg(unix)]
#[test]
fn compare_should_write_its_figure_for_the_owner_only() {
    figures_owner_only("compare", &["compare.svg"]);
}

#[test]
fn sweep_should_refuse_html_on_the_out_folder() {
    let s = Scratch::new("sweep-html-on-out");
    // The folder does not exist yet: it would be created, then the page
    // could not be written over it, after every run.
    s.assert_refused(
        "sweep",
        &s.path("results"),
        &["--html", "./results"],
        &["--html", "--out"],
    );
}
