//! `dpsgd report`: one self-contained HTML page from the JSON reports of
//! `train`, `audit`, `sweep` and `compare` (see [`crate::html`]).

use crate::html::{Inputs, write_page};
use crate::output::clobbering::same_file;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Arguments of `dpsgd report`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "A folder is searched for report.json, train.json, audit.json, sweep.json, \
compare.json and inversion.png; a file is recognised by its content. Every report given is shown (two \
train reports are two sections). A report whose ε or δ cannot be read (missing, negative, not a \
number, δ outside (0, 1)) is refused, as is an --out over a file --from reads. The page has no \
script and loads nothing from the network; every number on it is read from the reports."
)]
pub struct Args {
    /// Report folders or JSON files (`--out` folders of audit, sweep or
    /// compare; a train `--report` file), comma-separated or repeated.
    #[arg(
        long,
        required = true,
        value_delimiter = ',',
        value_name = "DIR_OR_FILE"
    )]
    pub from: Vec<PathBuf>,
    /// The HTML file to write.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

/// File names read from a folder, in order.
const NAMES: [&str; 5] = [
    "report.json",
    "train.json",
    "audit.json",
    "sweep.json",
    "compare.json",
];

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// A `--from` value that is refused: exit 2, naming the flag.
fn bad_from(message: String) -> crate::error::UsageError {
    crate::error::UsageError {
        flag: "--from",
        message,
    }
}

/// The reports in `paths`, every one of them (two train reports are two
/// sections of the page).
///
/// # Errors
///
/// A path that does not exist, a file that is not a dpsgd report, a report
/// whose privacy fields cannot be read (ε missing, negative or not a
/// number, δ outside (0, 1), a budget that is neither a number nor the
/// non-private run's), naming the file and the field; or nothing found
/// at all.
pub fn collect(paths: &[PathBuf]) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for path in paths {
        if path.is_dir() {
            let audits = inputs.audit.len();
            for name in NAMES {
                let file = path.join(name);
                if file.is_file() {
                    let source = file.display().to_string();
                    inputs.add(read_json(&file)?, &source).map_err(bad_from)?;
                }
            }
            // The grid belongs to the audit of its own folder.
            let png = path.join("inversion.png");
            if png.is_file() && inputs.audit.len() > audits {
                inputs.attach_inversion(
                    std::fs::read(&png).with_context(|| format!("reading {}", png.display()))?,
                );
            }
        } else if path.is_file() {
            let source = path.display().to_string();
            inputs.add(read_json(path)?, &source).map_err(bad_from)?;
        } else {
            bail!(bad_from(format!("{} does not exist", path.display())));
        }
    }
    if inputs.is_empty() {
        bail!(bad_from("no dpsgd report found there".into()));
    }
    Ok(inputs)
}

/// Refuses, before any work, an `--out` that is a folder or would replace
/// a file `--from` reads (a report, or the inversion grid beside one):
/// exit 2, one line naming both flags (issue 26). `report` writes one
/// file, so no two outputs can share a path.
///
/// # Errors
///
/// [`crate::error::UsageError`] for `--out`.
pub fn check_no_clobbering(a: &Args) -> Result<(), crate::error::UsageError> {
    let refuse = |message: String| crate::error::UsageError {
        flag: "--out",
        message,
    };
    if a.out.is_dir() {
        return Err(refuse(format!(
            "{} is a directory: give the HTML file to write",
            a.out.display()
        )));
    }
    for from in &a.from {
        let read: Vec<PathBuf> = if from.is_dir() {
            NAMES
                .iter()
                .chain(&["inversion.png"])
                .map(|n| from.join(n))
                .collect()
        } else {
            vec![from.clone()]
        };
        if let Some(input) = read.iter().find(|f| f.exists() && same_file(&a.out, f)) {
            return Err(refuse(format!(
                "{} would overwrite {}, which --from reads: give another path",
                a.out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Runs the command.
///
/// # Errors
///
/// As [`check_no_clobbering`] and [`collect`], or an unwritable `--out`.
pub fn run(a: &Args) -> Result<()> {
    check_no_clobbering(a)?;
    let inputs = collect(&a.from)?;
    write_page(&inputs, &a.out)?;
    eprintln!(
        "wrote {} from {} report(s)",
        a.out.display(),
        inputs.sources.len()
    );
    Ok(())
}
