//! `dpsgd report`: one self-contained HTML page from the JSON reports of
//! `train`, `audit`, `sweep` and `compare` (see [`crate::html`]).

use crate::commands::train::write_atomically;
use crate::html::{Inputs, render};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Arguments of `dpsgd report`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "A folder is searched for report.json, train.json, audit.json, sweep.json, \
compare.json and inversion.png; a file is recognised by its content. The page has no script \
and loads nothing from the network; every number on it is read from the reports."
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

/// The reports in `paths`.
///
/// # Errors
///
/// A path that does not exist, a file that is not a dpsgd report, or
/// nothing found at all.
pub fn collect(paths: &[PathBuf]) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    for path in paths {
        if path.is_dir() {
            for name in NAMES {
                let file = path.join(name);
                if file.is_file() {
                    let source = file.display().to_string();
                    inputs
                        .add(read_json(&file)?, &source)
                        .map_err(anyhow::Error::msg)?;
                }
            }
            let png = path.join("inversion.png");
            if png.is_file() {
                inputs.inversion_png = Some(
                    std::fs::read(&png).with_context(|| format!("reading {}", png.display()))?,
                );
            }
        } else if path.is_file() {
            let source = path.display().to_string();
            inputs
                .add(read_json(path)?, &source)
                .map_err(anyhow::Error::msg)?;
        } else {
            bail!(crate::args::UsageError {
                flag: "--from",
                message: format!("{} does not exist", path.display()),
            });
        }
    }
    if inputs.is_empty() {
        bail!(crate::args::UsageError {
            flag: "--from",
            message: "no dpsgd report found there".into(),
        });
    }
    Ok(inputs)
}

/// Writes the page for `inputs` to `path`.
///
/// # Errors
///
/// An unwritable path.
pub fn write_page(inputs: &Inputs, path: &Path) -> Result<()> {
    write_atomically(path, &render(inputs))
}

/// Runs the command.
///
/// # Errors
///
/// As [`collect`], or an unwritable `--out`.
pub fn run(a: &Args) -> Result<()> {
    let inputs = collect(&a.from)?;
    write_page(&inputs, &a.out)?;
    eprintln!(
        "wrote {} from {} report(s)",
        a.out.display(),
        inputs.sources.len()
    );
    Ok(())
}

/// The page of one command's own JSON (`--html` of train, audit, sweep and
/// compare), with the inversion grid when there is one.
///
/// # Errors
///
/// A JSON of no known kind (a bug), or an unwritable path.
pub fn write_html_of(
    json: &serde_json::Value,
    source: &str,
    png: Option<&Path>,
    path: &Path,
) -> Result<()> {
    let mut inputs = Inputs::default();
    inputs
        .add(json.clone(), source)
        .map_err(anyhow::Error::msg)?;
    if let Some(png) = png.filter(|p| p.is_file()) {
        inputs.inversion_png = Some(std::fs::read(png)?);
    }
    write_page(&inputs, path)
}
