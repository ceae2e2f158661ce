//! The HTTP server: `POST /v1/predict`, `GET /v1/health`, `GET /v1/metrics`.

use crate::error::{Result, ServeError};
use crate::keys::{Charge, KeyInfo, KeyStore};
use crate::metrics::Metrics;
use crate::monitor::{Monitor, MonitorSettings};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dpsgd_audit::hardening::Release;
use dpsgd_train::{ModelCard, TrainedModel};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Revoke a key the monitor flags (otherwise flag it only).
    pub auto_revoke: bool,
    /// The monitor's thresholds.
    pub monitor: MonitorSettings,
    /// Whether to monitor at all.
    pub monitoring: bool,
    /// The most records one request may carry.
    pub max_batch: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            auto_revoke: false,
            monitor: MonitorSettings::default(),
            monitoring: true,
            max_batch: 1024,
        }
    }
}

/// A token bucket of records per second, holding at most one second's
/// worth (in memory: a restart refills it, budgets are in the database).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the handlers share.
struct AppState {
    model: Mutex<TrainedModel>,
    card: ModelCard,
    keys: Mutex<KeyStore>,
    monitor: Mutex<Monitor>,
    buckets: Mutex<HashMap<i64, Bucket>>,
    metrics: Metrics,
    settings: ServeSettings,
}

/// The model served, its key store and settings, ready to
/// [`serve`](Server::serve).
pub struct Server {
    state: Arc<AppState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("card", &self.state.card)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Serves `model` (with its `card`) to the keys of `keys`.
    pub fn new(
        model: TrainedModel,
        card: ModelCard,
        keys: KeyStore,
        settings: ServeSettings,
    ) -> Self {
        Self {
            state: Arc::new(AppState {
                model: Mutex::new(model),
                card,
                monitor: Mutex::new(Monitor::new(settings.monitor)),
                keys: Mutex::new(keys),
                buckets: Mutex::new(HashMap::new()),
                metrics: Metrics::default(),
                settings,
            }),
        }
    }

    /// The routes, for serving or for tests.
    pub fn router(&self) -> Router {
        // Room for `max_batch` inputs of up to 32 bytes of JSON per value
        // (`-2.2250738585072014e-308, ` is 26).
        let limit = self
            .state
            .settings
            .max_batch
            .saturating_mul(self.state.card.input_len)
            .saturating_mul(32)
            .saturating_add(1 << 16);
        Router::new()
            .route("/v1/predict", post(predict))
            .route("/v1/health", get(health))
            .route("/v1/metrics", get(metrics))
            .layer(axum::extract::DefaultBodyLimit::max(limit))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes.
    ///
    /// # Errors
    ///
    /// [`ServeError::Listen`] when the socket fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServeError::Listen { addr, source })
    }
}

/// The privacy part of every answer's metadata.
fn privacy(card: &ModelCard) -> Value {
    json!({
        "epsilon": card.privacy.epsilon,
        "delta": card.privacy.delta,
        "unit": card.privacy.unit,
        "members": card.privacy.members,
        "guarantee": if card.privacy.epsilon.is_some() { "differential privacy (DP-SGD)" } else { "none: trained without DP" },
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A refusal (403 or 429) with a machine-readable `reason`: `no-key`,
/// `unknown-key`, `revoked`, `budget`, `rate` (wait and retry: the
/// `Retry-After` header says how long) or `batch-over-rate` (a batch this
/// key's rate never admits).
fn refusal(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": message.into(), "reason": reason })),
    )
        .into_response()
}

/// `{"inputs": [[f32, ...], ...]}`.
#[derive(Debug, Deserialize)]
struct PredictRequest {
    inputs: Vec<Vec<f32>>,
}

/// The key a request carries (`Authorization: Bearer KEY`, the scheme
/// in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// A key's bucket holds one second's worth of records (at least one).
fn capacity(rate: f64) -> f64 {
    rate.max(1.0)
}

/// Takes `records` tokens from `key`'s bucket of `rate` per second:
/// `Err(seconds)` until enough tokens will be there (nothing taken).
fn take_tokens(state: &AppState, key: &KeyInfo, records: usize) -> std::result::Result<(), f64> {
    let Some(rate) = key.rate else {
        return Ok(());
    };
    let mut buckets = state
        .buckets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    let b = buckets.entry(key.id).or_insert(Bucket {
        tokens: capacity(rate),
        at: now,
    });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(capacity(rate));
    b.at = now;
    if b.tokens >= records as f64 {
        b.tokens -= records as f64;
        Ok(())
    } else {
        Err((records as f64 - b.tokens) / rate)
    }
}

/// A 500 that says no more than that: the detail goes to the server's
/// standard error, not to the client.
fn internal(detail: impl std::fmt::Display) -> Response {
    eprintln!("dpsgd serve: internal error: {detail}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

async fn predict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    // Everything an answer does blocks — the key store's SQLite commits
    // with a full sync, the model, the monitor — so all of it runs off
    // the async workers, which stay free to accept and read requests.
    let work = state.clone();
    let response = tokio::task::spawn_blocking(move || answer(&work, &headers, &body))
        .await
        .unwrap_or_else(internal);
    state
        .metrics
        .observe(response.status().as_u16(), started.elapsed());
    response
}

fn answer(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    // 1. Who: an unknown or revoked key is refused before anything else.
    let Some(key) = bearer(headers) else {
        state.metrics.refused("no-key");
        return refusal(
            StatusCode::FORBIDDEN,
            "no-key",
            "no key: send Authorization: Bearer KEY",
        );
    };
    let info = match state.keys.lock().map(|k| k.authenticate(key)) {
        Ok(Ok(Some(info))) => info,
        Ok(Ok(None)) => {
            state.metrics.refused("unknown-key");
            return refusal(StatusCode::FORBIDDEN, "unknown-key", "unknown key");
        }
        Ok(Err(e)) => return internal(e),
        Err(_) => return internal("the key store's lock is poisoned"),
    };
    if info.revoked {
        state.metrics.refused("revoked");
        return refusal(StatusCode::FORBIDDEN, "revoked", "this key is revoked");
    }
    // 2. What: a batch of inputs of the model's length, finite.
    let request: PredictRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"inputs\": [[numbers]]}}: {e}"),
            );
        }
    };
    let dim = state.card.input_len;
    let n = request.inputs.len();
    if n == 0 || n > state.settings.max_batch {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "send 1 to {} inputs per request, not {n}",
                state.settings.max_batch
            ),
        );
    }
    if let Some(i) = request.inputs.iter().position(|r| r.len() != dim) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "input {i} has {} values; the model takes {dim}",
                request.inputs[i].len()
            ),
        );
    }
    let flat: Vec<f32> = request.inputs.into_iter().flatten().collect();
    if flat.iter().any(|v| !v.is_finite()) {
        return error(StatusCode::BAD_REQUEST, "inputs must be finite numbers");
    }
    // 3. How much: a batch the budget cannot cover is refused before any
    //    work (the charge below decides, atomically, for the others).
    if info.used.saturating_add(n as u64) > info.budget {
        state.metrics.refused("budget");
        return over_budget(n, &info);
    }
    // 4. How fast: the key's rate.
    if let Err(wait) = take_tokens(state, &info, n) {
        state.metrics.refused("rate");
        let rate = info.rate.unwrap_or(0.0);
        if n as f64 > capacity(rate) {
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "batch-over-rate",
                format!(
                    "a batch of {n} records never fits this key's rate of {rate} records per second: send at most {} per request",
                    capacity(rate).floor()
                ),
            );
        }
        let mut response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "rate",
            format!("over this key's rate of {rate} records per second"),
        );
        // Whole seconds (RFC 9110), rounded up: the batch fits then.
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(wait.ceil().max(1.0) as u64),
        );
        return response;
    }
    // 5. The model's answer and the monitor's verdict (it sees every query
    //    that got this far).
    let id = info.id;
    let done = (|| {
        let logits = {
            let model = state
                .model
                .lock()
                .map_err(|_| "the model's lock is poisoned".to_owned())?;
            model.logits_of_inputs(&flat).map_err(|e| e.to_string())?
        };
        let probabilities: Vec<Vec<f64>> = logits.chunks(state.card.classes).map(softmax).collect();
        let labels: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
        let verdict = if state.settings.monitoring {
            let mut monitor = state
                .monitor
                .lock()
                .map_err(|_| "the monitor's lock is poisoned".to_owned())?;
            Some(monitor.observe(id, &flat, dim, &labels))
        } else {
            None
        };
        Ok::<_, String>((probabilities, labels, verdict))
    })();
    let (probabilities, labels, verdict) = match done {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    if let Some(verdict) = verdict
        && !verdict.evidence.is_empty()
    {
        let evidence = verdict.evidence.join("; ");
        let Ok(mut keys) = state.keys.lock() else {
            return internal("the key store's lock is poisoned");
        };
        let current = match keys.get(info.id) {
            Ok(k) => k,
            Err(e) => return internal(e),
        };
        if !current.flagged {
            state.metrics.flagged();
            if let Err(e) = keys.flag(info.id, &evidence) {
                return internal(e);
            }
        }
        if state.settings.auto_revoke {
            if !current.revoked {
                if let Err(e) = keys.revoke(info.id, &format!("by the monitor: {evidence}")) {
                    return internal(e);
                }
                state.metrics.revoked();
            }
            state.metrics.refused("revoked");
            return refusal(
                StatusCode::FORBIDDEN,
                "revoked",
                format!("this key is revoked: {evidence}"),
            );
        }
    }
    // 6. The budget, charged for the whole batch or not at all.
    let charge = match state.keys.lock().map(|mut k| k.charge(info.id, n as u64)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return internal(e),
        Err(_) => return internal("the key store's lock is poisoned"),
    };
    let remaining = match charge {
        Charge::Granted { remaining } => remaining,
        Charge::OverBudget => {
            state.metrics.refused("budget");
            return over_budget(n, &info);
        }
        Charge::Revoked | Charge::Unknown => {
            state.metrics.refused("revoked");
            return refusal(StatusCode::FORBIDDEN, "revoked", "this key is revoked");
        }
    };
    // 7. The release the key is allowed.
    let release: Release = info.release.parse().unwrap_or(Release::LabelOnly);
    let outputs: Vec<Vec<f64>> = probabilities.iter().map(|p| release.apply(p)).collect();
    state.metrics.served(n);
    Json(json!({
        "outputs": outputs,
        "labels": if release == Release::LabelOnly { json!(labels) } else { Value::Null },
        "release": release.to_string(),
        "epsilon": state.card.privacy.epsilon,
        "privacy": privacy(&state.card),
        "remaining": remaining,
    }))
    .into_response()
}

/// 429 for a batch of `n` the key's budget cannot cover.
fn over_budget(n: usize, info: &KeyInfo) -> Response {
    refusal(
        StatusCode::TOO_MANY_REQUESTS,
        "budget",
        format!(
            "a batch of {n} records passes this key's budget ({} of {} used)",
            info.used, info.budget
        ),
    )
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > p[best] { i } else { best })
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({
        "status": "ok",
        "model": {
            "classes": state.card.classes,
            "input_len": state.card.input_len,
            "input_shape": state.card.input_shape,
            "model": state.card.model,
        },
        "max_batch": state.settings.max_batch,
        "privacy": privacy(&state.card),
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
