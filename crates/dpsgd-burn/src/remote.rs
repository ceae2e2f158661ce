//! Data-parallel workers in other processes or hosts, on burn's own
//! remote devices (burn 0.22's `remote-websocket` and `remote-server`
//! features): a **worker** serves its machine's device
//! ([`serve_worker`]); the **coordinator** connects one remote device
//! per worker ([`connect_workers`]) and hands them to
//! [`DataParallel`](crate::parallel::DataParallel) with itself as the
//! coordinator ([`DataParallel::with_coordinator`](crate::parallel::DataParallel::with_coordinator)),
//! so that the protocol is the one of in-process workers: the Poisson
//! batch sampled once by the coordinator, fixed shards clipped per example
//! on the workers, the shard sums reduced on the coordinator in shard
//! order, noise added once there, one accounting step. A worker receives
//! the model's parameters and its shards; never the noise, its key, or
//! another worker's shard.
//!
//! The transport is burn's WebSocket one: unencrypted. A token
//! ([`serve_worker`]'s `token`, the coordinator's credential) keeps stray
//! clients out on a trusted network; it does not stop someone who can read
//! the traffic (docs/distributed.md, "Threat model").

use burn::remote::RemoteHost;
use burn::server::{RemoteServer, TokenAuthorizer, WebSocketTransport};
use burn::tensor::Device;
use dpsgd_core::{Error, Result};

/// A worker's address as the coordinator dials it: `ws://HOST:PORT`.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for anything else.
pub fn check_worker_url(url: &str) -> Result<()> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        Error::invalid(
            "workers",
            url,
            "expected ws://HOST:PORT (burn's WebSocket transport)",
        )
    })?;
    let ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok && !rest.contains(['/', '?', '#', '@']) {
        Ok(())
    } else {
        Err(Error::invalid(
            "workers",
            url,
            "expected ws://HOST:PORT, with no path",
        ))
    }
}

/// One autodiff device per worker at `urls` (each `ws://HOST:PORT`, the
/// worker's device 0), connected now, with `token` as the credential
/// when the workers require one.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for an address that is not
/// `ws://HOST:PORT` or named twice; [`Error::Worker`] for a worker that
/// cannot be connected (with the transport's error as its source).
pub fn connect_workers(urls: &[String], token: Option<&str>) -> Result<Vec<Device>> {
    for (i, url) in urls.iter().enumerate() {
        check_worker_url(url)?;
        if urls[..i].contains(url) {
            return Err(Error::invalid(
                "workers",
                url,
                "named twice: each worker once",
            ));
        }
    }
    urls.iter()
        .map(|url| {
            let mut host = RemoteHost::websocket(url);
            if let Some(token) = token {
                host = host.with_credential(token.to_owned());
            }
            Device::remote_options(&host)
                .init()
                .map(Device::autodiff)
                .map_err(|e| Error::Worker {
                    worker: url.clone(),
                    reason: "cannot connect".into(),
                    source: Some(Box::new(e)),
                })
        })
        .collect()
}

/// Serves this machine's flex device to the coordinator on `listener`
/// until the process is stopped (Ctrl-C or SIGTERM), accepting only
/// sessions that present `token` when one is given.
///
/// # Errors
///
/// [`Error::Worker`] when the server cannot start or fails.
pub fn serve_worker(listener: std::net::TcpListener, token: Option<String>) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let failed =
        |reason: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| Error::Worker {
            worker: format!("ws://{addr}"),
            reason,
            source,
        };
    let mut server = RemoteServer::new([Device::flex()]);
    if let Some(token) = token {
        let authorizer = TokenAuthorizer::new(token)
            .map_err(|e| failed("unusable token".into(), Some(Box::new(e))))?;
        server = server.with_authorizer(authorizer);
    }
    server
        .serve(WebSocketTransport::from_listener(listener))
        .map_err(|e| failed("serving".into(), Some(Box::new(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_take_only_websocket_addresses() {
        assert!(check_worker_url("ws://127.0.0.1:7000").is_ok());
        assert!(check_worker_url("ws://gpu-3:1").is_ok());
        for bad in [
            "127.0.0.1:7000",
            "wss://h:1",
            "ws://h",
            "ws://h:0",
            "ws://:7000",
            "ws://h:7000/x",
            "ws://h:99999",
        ] {
            assert!(check_worker_url(bad).is_err(), "{bad}");
        }
        let twice = vec!["ws://h:1".to_owned(), "ws://h:1".to_owned()];
        assert!(connect_workers(&twice, None).is_err());
    }
}
