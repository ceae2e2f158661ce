//! `dpsgd serve`: a guarded HTTP inference endpoint for a model saved by
//! `train --save-model`, and `dpsgd serve keys add|list|revoke` for its
//! API keys (`dpsgd_serve`).

use crate::error::UsageError;
use anyhow::{Context, Result};
use dpsgd::audit::hardening::Release;
use dpsgd_serve::client::MAX_BATCH;
use dpsgd_serve::keys::KeyStore;
use dpsgd_serve::{OperatorToken, ServeSettings, Server};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `dpsgd serve`.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Requests carry `Authorization: Bearer KEY`. POST /v1/predict takes \
{\"inputs\": [[f32, ...], ...]} (each input as the model's, flattened) and answers \
{\"outputs\": [...], \"release\": \"...\", \"epsilon\": ..., \"privacy\": {...}, \
\"remaining\": N}; past the key's budget or rate: 429; a revoked or unknown key: 403. \
GET /v1/health needs no key; GET /v1/metrics (Prometheus text) answers only the operator's \
token (--metrics-token-file). DP-SGD's ε is the only guarantee: releases, budgets and \
monitoring raise an attack's cost (docs/serving.md)."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    /// The model, as saved by `dpsgd train --save-model FILE` (its card,
    /// FILE.card.json, beside it).
    #[arg(long, value_name = "FILE", required = true)]
    pub model: Option<PathBuf>,
    /// The key database (SQLite), made by `dpsgd serve keys add`.
    #[arg(long, value_name = "FILE", required = true)]
    pub db: Option<PathBuf>,
    /// Address to listen on (port 0: any free port, printed on standard
    /// error).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Revoke a key as soon as the monitor flags it (otherwise flag only).
    #[arg(long)]
    pub auto_revoke: bool,
    /// Turn the query-stream monitor off.
    #[arg(long)]
    pub no_monitor: bool,
    /// The most inputs one request may carry (at most 1048576).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = max_batch)]
    pub max_batch: usize,
    /// Serve GET /v1/metrics to the operator only: requests must carry
    /// `Authorization: Bearer TOKEN`, TOKEN being this file's content (at
    /// least 16 characters). Without it, metrics are served to nobody.
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Seconds a request's body may take to arrive, once its headers are
    /// read (then 408).
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    pub read_timeout: Duration,
    /// Seconds to finish the requests in flight after Ctrl-C or SIGTERM;
    /// then the server exits without them.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    pub shutdown_timeout: Duration,
}

/// `dpsgd serve keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum ServeCommand {
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `dpsgd serve keys add|list|revoke`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key; prints the key alone on standard output (it is stored
    /// only hashed: it cannot be shown again).
    Add {
        /// The key database (created if missing).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// Records the key may query in its lifetime.
        #[arg(long, value_name = "N")]
        budget: u64,
        /// What it is answered: full, top-K, round-D, top-K-round-D or
        /// label-only.
        #[arg(long, value_name = "R", default_value = "label-only", value_parser = |s: &str| s.parse::<Release>())]
        release: Release,
        /// Records per second (`Q/s` or `Q`); none: no rate limit.
        #[arg(long, value_name = "Q/s", value_parser = rate)]
        rate: Option<f64>,
        /// The model the key is for (as saved by `train --save-model`):
        /// a release of more classes than it has is refused.
        #[arg(long, value_name = "FILE")]
        model: Option<PathBuf>,
    },
    /// List the keys (by id, never the secret).
    List {
        /// The key database.
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// One JSON array: id, release, budget, used, rate, revoked,
        /// flagged, created.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key for good.
    Revoke {
        /// The key database.
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The key's id (`dpk_<id>_…`, or `keys list`).
        id: i64,
    },
}

/// `Q/s` or `Q`: a positive finite number of records per second.
fn rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    match t.trim().parse::<f64>() {
        Ok(q) if q.is_finite() && q > 0.0 => Ok(q),
        _ => Err(format!(
            "`{s}`: expected a positive number of records per second, as 10/s"
        )),
    }
}

/// `N`: 1 to [`MAX_BATCH`] inputs.
fn max_batch(s: &str) -> Result<usize, String> {
    match crate::flags::parse::positive_count(s)? {
        n if n > MAX_BATCH => Err(format!("`{s}`: at most {MAX_BATCH} inputs per request")),
        n => Ok(n),
    }
}

/// A positive number of seconds, at most a day.
fn seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => Ok(Duration::from_secs_f64(t)),
        _ => Err(format!(
            "`{s}`: expected a positive number of seconds, at most 86400"
        )),
    }
}

/// The number of classes `release` asks for, if it names one.
fn release_classes(release: Release) -> Option<usize> {
    match release {
        Release::TopK(k) | Release::TopKRounded(k, _) => Some(k),
        _ => None,
    }
}

/// The operator's token, from `path`.
fn operator_token(path: &Path) -> Result<OperatorToken> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError {
        flag: "--metrics-token-file",
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    OperatorToken::new(&text).map_err(|e| {
        UsageError {
            flag: "--metrics-token-file",
            message: format!("{}: {e}", path.display()),
        }
        .into()
    })
}

/// An existing key database (`keys list`, `keys revoke`: a typo must not
/// create an empty one).
fn existing(db: &std::path::Path) -> Result<KeyStore> {
    if !db.is_file() {
        anyhow::bail!(UsageError {
            flag: "--db",
            message: format!(
                "{} is not a key database (make one with `dpsgd serve keys add`)",
                db.display()
            ),
        });
    }
    Ok(KeyStore::open(db)?)
}

/// Runs the command.
///
/// # Errors
///
/// Unreadable model or database, a socket that cannot be opened, or a
/// key that does not exist.
pub fn run(a: &Args) -> Result<()> {
    match &a.command {
        Some(ServeCommand::Keys(k)) => keys(k),
        None => serve(a),
    }
}

fn keys(k: &KeysCommand) -> Result<()> {
    match k {
        KeysCommand::Add {
            db,
            budget,
            release,
            rate,
            model,
        } => {
            if let Some(path) = model {
                let (_, card) = dpsgd::train::TrainedModel::load(path)
                    .with_context(|| format!("--model {}", path.display()))?;
                if let Some(k) = release_classes(*release).filter(|&k| k > card.classes) {
                    anyhow::bail!(UsageError {
                        flag: "--release",
                        message: format!(
                            "{release} asks for the top {k} of a model of {} classes ({})",
                            card.classes,
                            path.display()
                        ),
                    });
                }
            }
            let mut store = KeyStore::open(db)?;
            let (_, key) = store.add(*release, *budget, *rate)?;
            println!("{key}");
        }
        KeysCommand::List { db, json } => {
            let list = existing(db)?.list()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:>5} {:<16} {:>10} {:>10} {:>8} {:>8} {:>8}",
                    "id", "release", "used", "budget", "rate/s", "revoked", "flagged"
                );
                for k in list {
                    let rate = k.rate.map_or_else(|| "-".to_owned(), |r| r.to_string());
                    println!(
                        "{:>5} {:<16} {:>10} {:>10} {:>8} {:>8} {:>8}",
                        k.id, k.release, k.used, k.budget, rate, k.revoked, k.flagged
                    );
                }
            }
        }
        KeysCommand::Revoke { db, id } => {
            existing(db)?.revoke(*id, "by `dpsgd serve keys revoke`")?;
            eprintln!("dpsgd serve: key {id} revoked");
        }
    }
    Ok(())
}

fn serve(a: &Args) -> Result<()> {
    let (Some(model_path), Some(db)) = (&a.model, &a.db) else {
        anyhow::bail!(UsageError {
            flag: "--model",
            message: "serving needs --model FILE and --db FILE".into(),
        });
    };
    let (model, card) = dpsgd::train::TrainedModel::load(model_path)
        .with_context(|| format!("--model {}", model_path.display()))?;
    let store = existing(db)?;
    let metrics_token = a
        .metrics_token_file
        .as_deref()
        .map(operator_token)
        .transpose()?;
    let settings = ServeSettings {
        auto_revoke: a.auto_revoke,
        monitoring: !a.no_monitor,
        max_batch: a.max_batch,
        read_timeout: a.read_timeout,
        shutdown_timeout: a.shutdown_timeout,
        metrics_token,
        ..ServeSettings::default()
    };
    let epsilon = card.privacy.epsilon.map_or_else(
        || "none (trained without DP)".to_owned(),
        |e| format!("{e:.3}"),
    );
    let server = Server::new(model, card, store, settings);
    let warnings = server.release_warnings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .map_err(|e| UsageError {
                flag: "--listen",
                message: format!("cannot listen on {}: {e}", a.listen),
            })?;
        let addr = listener.local_addr().context("the listening address")?;
        eprintln!(
            "dpsgd serve: listening on http://{addr} (model {}, ε = {epsilon})",
            model_path.display()
        );
        for w in &warnings {
            eprintln!("dpsgd serve: warning: {w}");
        }
        // Ctrl-C or SIGTERM: stop accepting, finish the requests in flight
        // (for at most --shutdown-timeout).
        let shutdown = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        server.serve(listener, shutdown).await?;
        Ok::<(), anyhow::Error>(())
    });
    // What the deadline left running (a body still arriving, an answer
    // still computed) is not waited for: every charge is committed before
    // its answer leaves.
    runtime.shutdown_timeout(Duration::from_millis(500));
    if served.is_ok() {
        eprintln!("dpsgd serve: stopped");
    }
    served
}
