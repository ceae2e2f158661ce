//! `dpsgd serve`: a guarded HTTP inference endpoint for a model saved by
//! `train --save-model`, and `dpsgd serve keys add|list|revoke` for its
//! API keys (`dpsgd_serve`).

use crate::error::UsageError;
use anyhow::{Context, Result};
use dpsgd::audit::hardening::Release;
use dpsgd_serve::keys::KeyStore;
use dpsgd_serve::{ServeSettings, Server};
use std::path::PathBuf;

/// Arguments of `dpsgd serve`.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Requests carry `Authorization: Bearer KEY`. POST /v1/predict takes \
{\"inputs\": [[f32, ...], ...]} (each input as the model's, flattened) and answers \
{\"outputs\": [...], \"release\": \"...\", \"epsilon\": ..., \"privacy\": {...}, \
\"remaining\": N}; past the key's budget or rate: 429; a revoked or unknown key: 403. \
GET /v1/health and GET /v1/metrics (Prometheus text) need no key. DP-SGD's ε is the \
only guarantee: releases, budgets and monitoring raise an attack's cost (docs/serving.md)."
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
    /// The most inputs one request may carry.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = crate::flags::parse::positive_count)]
    pub max_batch: usize,
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
        } => {
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
    let settings = ServeSettings {
        auto_revoke: a.auto_revoke,
        monitoring: !a.no_monitor,
        max_batch: a.max_batch,
        ..ServeSettings::default()
    };
    let epsilon = card.privacy.epsilon.map_or_else(
        || "none (trained without DP)".to_owned(),
        |e| format!("{e:.3}"),
    );
    let server = Server::new(model, card, store, settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
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
        // Ctrl-C or SIGTERM: stop accepting, finish the requests in flight.
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
        eprintln!("dpsgd serve: stopped");
        Ok::<(), anyhow::Error>(())
    })
}
