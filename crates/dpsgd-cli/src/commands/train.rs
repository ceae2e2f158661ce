//! `dpsgd train`: train a model with DP-SGD (or without, for comparison)
//! and report what the privacy cost.

use crate::error;
use crate::flags::train::{PrivacyOptions, TrainOptions};
use crate::output::clobbering;
use crate::output::files::{
    ReportTarget, check_checkpoint_dir, check_output_path, check_save_path,
};
use crate::setup::{Preprocessing, config, load, recipe_line};
use crate::training::{run_one, summary};
use anyhow::Result;
use dpsgd::train::{TrainConfig, TrainError, TrainReport};
use dpsgd_burn::io::FolderLock;
use std::path::PathBuf;

/// Arguments of `dpsgd train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: TrainOptions,
    #[command(flatten)]
    pub privacy: PrivacyOptions,
    /// Write the JSON privacy report and metrics here (`-` or /dev/stdout:
    /// standard output, and the summary line goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write the privacy report as one self-contained HTML page here
    /// (as `dpsgd report` does).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Save the trained model here (burn's record bytes; load them into a
    /// model of the same architecture), written atomically, and its card
    /// beside it (FILE.card.json: the architecture and the run's ε, δ and
    /// unit), from which `dpsgd serve` and `TrainedModel::load` rebuild it.
    #[arg(long, value_name = "FILE")]
    pub save_model: Option<PathBuf>,
    /// Checkpoint a private run into DIR after every epoch (created if
    /// missing; one file, replaced atomically; a secret: mode 0600). The
    /// folder is locked while the run lasts: a second run into it exits 2
    /// at once.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue the run checkpointed in --checkpoint-dir from its next
    /// epoch (same data and settings; --epochs may grow with
    /// --noise-multiplier). A checkpoint whose privacy settings or steps
    /// are not this run's (edited by hand) is refused.
    #[arg(long, requires = "checkpoint_dir")]
    pub resume: bool,
    /// Data-parallel workers in other processes or hosts, comma-separated
    /// `ws://HOST:PORT` (each a `dpsgd worker`; a build with the
    /// `distributed` feature): the DP step's fixed shards are clipped
    /// there; the Poisson sampling, the reduction, the noise, the step and
    /// the accounting stay in this process (docs/distributed.md).
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    pub workers: Vec<String>,
    /// The token the workers require (`dpsgd worker --token-file`), read
    /// from this file.
    #[arg(long, value_name = "FILE", requires = "workers")]
    pub worker_token_file: Option<PathBuf>,
    /// How long a DP step waits for a sign of life from each worker, in
    /// seconds (its start, then each shard it answers): one silent for
    /// that long (a stopped process, a silently dropped network) is lost,
    /// as is one whose connection drops. A lost worker fails the step
    /// (nothing noised, nothing accounted, the model untouched); see
    /// --on-worker-loss.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0, requires = "workers",
          value_parser = parse_timeout)]
    pub worker_timeout: f64,
    /// When a worker is lost: `stop` the run (exit 1; the last
    /// checkpoint stays, resume it with --resume, which charges the steps
    /// the workers saw after it: docs/distributed.md), or `continue` on the
    /// others (the same step redone, its shards re-planned: the result
    /// and ε do not depend on the number of workers). Continuing stops
    /// once no worker is left.
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "stop",
        requires = "workers"
    )]
    pub on_worker_loss: WorkerLoss,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--on-worker-loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerLoss {
    /// The run stops (exit 1), the last checkpoint intact.
    Stop,
    /// The run goes on without the lost worker.
    Continue,
}

/// A positive, finite number of seconds (at most a day).
fn parse_timeout(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "expected a number of seconds above 0, at most 86400; got {text:?}"
        )),
    }
}

/// Runs the command.
///
/// # Errors
///
/// Bad data, bad settings, or a failed run.
pub fn run(a: &Args) -> Result<()> {
    let o = &a.options;
    // Found before the data is read and the model trained, not after.
    let report_target = a.report.as_deref().map(ReportTarget::check).transpose()?;
    if let Some(path) = &a.save_model {
        check_save_path(path)?;
    }
    if let Some(path) = &a.html {
        check_output_path("--html", path)?;
    }
    if let Some(dir) = &a.checkpoint_dir {
        check_checkpoint_dir(dir, a.resume)?;
    }
    check_no_clobbering(a)?;
    // Read before the data: a bad token file fails at once.
    let worker_token = a
        .worker_token_file
        .as_deref()
        .map(|p| super::worker::read_token("--worker-token-file", p))
        .transpose()?
        .map(dpsgd::train::WorkerToken);
    let (train, test, preprocessing) = load(o, o.seed.unwrap_or(0))?;
    let privacy = a.privacy.privacy();
    let cfg = TrainConfig {
        remote_workers: a.workers.iter().map(|w| w.trim().to_owned()).collect(),
        worker_token,
        worker_timeout: Some(std::time::Duration::from_secs_f64(a.worker_timeout)),
        on_worker_loss: match a.on_worker_loss {
            WorkerLoss::Stop => dpsgd_burn::parallel::OnWorkerLoss::Stop,
            WorkerLoss::Continue => dpsgd_burn::parallel::OnWorkerLoss::Continue,
        },
        save_model: a.save_model.clone(),
        checkpoint_dir: a.checkpoint_dir.clone(),
        resume: a.resume,
        // The HTML report's budget curve needs ε after every epoch.
        progress_epsilon: a.html.is_some(),
        ..config(o, privacy, &train)
    };
    if !a.quiet
        && let Some(line) = recipe_line(&cfg)
    {
        eprintln!("{line}");
    }
    let started = std::time::Instant::now();
    let report = match run_one(&cfg, &train, &test, o.backend, a.quiet) {
        Ok(report) => report,
        Err(e) => {
            // A diverged run leaves its partial report (the last good
            // model's) before the error is shown.
            if let (Some(TrainError::Diverged { report, .. }), Some(target)) =
                (e.downcast_ref::<TrainError>(), &report_target)
            {
                let mut json = report_json(report, o, &preprocessing)?;
                json["error"] = format!("{e:#}").into();
                target.write(&serde_json::to_string_pretty(&json)?)?;
            }
            return Err(e);
        }
    };
    let total_seconds = started.elapsed().as_secs_f64();
    // Standard output holds the JSON alone when the report goes there.
    if let Some(ReportTarget::Stdout) = report_target {
        eprintln!("{}", summary(&report));
    } else {
        println!("{}", summary(&report));
    }
    if report_target.is_some() || a.html.is_some() {
        let mut json = report_json(&report, o, &preprocessing)?;
        // `wall_seconds` is the training loop (with its per-epoch test
        // accuracy); the rest of the command is mostly the final evaluation
        // (train and test accuracy, the leakage metric), plus setup.
        json["total_seconds"] = total_seconds.into();
        if let Some(path) = &a.save_model {
            json["saved_model"] = path.display().to_string().into();
        }
        json["evaluation_and_setup_seconds"] =
            (total_seconds - report.wall_seconds).max(0.0).into();
        if let Some(target) = &report_target {
            target.write(&serde_json::to_string_pretty(&json)?)?;
        }
        if let Some(path) = &a.html {
            crate::html::write_html_of(&json, "dpsgd train", None, path)?;
        }
    }
    Ok(())
}

/// The report as JSON, with where the data came from and how it was
/// preprocessed.
fn report_json(
    report: &TrainReport,
    o: &TrainOptions,
    preprocessing: &Preprocessing,
) -> Result<serde_json::Value> {
    let mut json = serde_json::to_value(report)?;
    json["dataset"] = serde_json::Value::String(o.dataset.to_string());
    json["preprocessing"] = serde_json::to_value(preprocessing)?;
    Ok(json)
}

/// Refuses, before any work, an output that would replace an input (the
/// data set, the scaling reference, the schema, the checkpoint being
/// resumed) or another output: exit 2 naming both flags (issue 26). An
/// output that overwrote the data lost it; two outputs on one path lost
/// the model.
///
/// # Errors
///
/// [`error::UsageError`] naming the output's flag and the other one.
pub fn check_no_clobbering(a: &Args) -> Result<(), error::UsageError> {
    let mut inputs = a.options.inputs();
    if let Some(file) = &a.worker_token_file {
        inputs.push(("--worker-token-file", file.clone()));
    }
    if let Some(dir) = &a.checkpoint_dir {
        inputs.extend(clobbering::in_folder(
            "--checkpoint-dir",
            dir,
            // RELEASED_FILE: the ledger of the steps released to workers,
            // read on --resume.
            &[
                dpsgd::train::CHECKPOINT_FILE,
                dpsgd::train::RELEASED_FILE,
                FolderLock::FILE,
            ],
        ));
    }
    let card = a.save_model.as_deref().map(dpsgd::train::card_path);
    let written = clobbering::given([
        ("--report", a.report.as_ref()),
        ("--html", a.html.as_ref()),
        ("--save-model", a.save_model.as_ref()),
        ("--save-model", card.as_ref()),
    ]);
    clobbering::check_no_clobbering(&inputs, &written)
}
