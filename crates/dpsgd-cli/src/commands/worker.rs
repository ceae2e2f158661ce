//! `dpsgd worker --listen ADDR`: this machine's device served to a
//! coordinator's `train --workers` as a data-parallel worker, on burn's
//! remote devices (feature `distributed`; docs/distributed.md).

use crate::error::UsageError;
use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Arguments of `dpsgd worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen (HOST:PORT; port 0 takes any free port, printed on
    /// standard error). The transport is unencrypted WebSocket: listen on
    /// a trusted network only.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Accept only a coordinator that presents the token in this file
    /// (`train --worker-token-file`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The most bytes read for a token.
const TOKEN_LIMIT: u64 = 4096;

/// The token in `path`, trimmed: at most 4 KiB, not empty.
///
/// # Errors
///
/// An unreadable file, or an empty token.
pub fn read_token(flag: &'static str, path: &Path) -> Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(TOKEN_LIMIT + 1).read_to_string(&mut text))
        .with_context(|| format!("reading the token from {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || text.len() as u64 > TOKEN_LIMIT {
        return Err(UsageError {
            flag,
            message: format!(
                "{} holds no token, or more than {TOKEN_LIMIT} bytes",
                path.display()
            ),
        }
        .into());
    }
    Ok(token.to_owned())
}

/// Runs the command: serves until stopped.
///
/// # Errors
///
/// A build without the `distributed` feature, an address that cannot be
/// bound, an unreadable token, a server that fails.
pub fn run(a: &Args) -> Result<()> {
    let token = a
        .token_file
        .as_deref()
        .map(|p| read_token("--token-file", p))
        .transpose()?;
    serve(&a.listen, token)
}

#[cfg(feature = "distributed")]
fn serve(listen: &str, token: Option<String>) -> Result<()> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| UsageError {
        flag: "--listen",
        message: format!("cannot listen on {listen}: {e}"),
    })?;
    let addr = listener.local_addr().context("the listening address")?;
    if token.is_none() && !addr.ip().is_loopback() {
        eprintln!(
            "WARNING: dpsgd worker: listening beyond this machine without --token-file: any client that reaches {addr} can open a session"
        );
    }
    eprintln!(
        "dpsgd worker: listening on ws://{addr} (flex){}",
        if token.is_some() {
            ", token required"
        } else {
            ""
        }
    );
    dpsgd_burn::remote::serve_worker(listener, token).context("serving")?;
    Ok(())
}

#[cfg(not(feature = "distributed"))]
fn serve(_listen: &str, _token: Option<String>) -> Result<()> {
    Err(UsageError {
        flag: "worker",
        message:
            "this dpsgd was built without remote workers: build it with `--features distributed`"
                .into(),
    }
    .into())
}
