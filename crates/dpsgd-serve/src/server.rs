//! The HTTP server: `POST /v1/predict`, `GET /v1/health`, `GET /v1/metrics`.

use crate::client::MAX_BATCH;
use crate::error::{Result, ServeError};
use crate::inputs::{self, Invalid};
use crate::keys::{AuditLog, Charge, KeyInfo, KeyStore};
use crate::metrics::Metrics;
use crate::monitor::{Monitor, MonitorSettings};
use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dpsgd_audit::hardening::Release;
use dpsgd_train::{ModelCard, TrainedModel};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Revoke a key the monitor flags (otherwise flag it only).
    pub auto_revoke: bool,
    /// The monitor's thresholds.
    pub monitor: MonitorSettings,
    /// Whether to monitor at all.
    pub monitoring: bool,
    /// The most records one request may carry (1 to
    /// [`MAX_BATCH`](crate::client::MAX_BATCH); [`Server::new`] holds it
    /// there).
    pub max_batch: usize,
    /// The longest a request's body may take to arrive, from the moment
    /// its headers are read (then 408).
    pub read_timeout: Duration,
    /// How long [`Server::serve`] waits, once told to stop, for the
    /// requests in flight; then it returns without them.
    pub shutdown_timeout: Duration,
    /// The operator's token for `GET /v1/metrics` (`None`: metrics are
    /// served to nobody).
    pub metrics_token: Option<OperatorToken>,
}

impl Default for ServeSettings {
    /// 1 024 records a request, a 30 s body, 10 s to stop, no metrics.
    fn default() -> Self {
        Self {
            auto_revoke: false,
            monitor: MonitorSettings::default(),
            monitoring: true,
            max_batch: 1024,
            read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            metrics_token: None,
        }
    }
}

/// The secret an operator sends (`Authorization: Bearer TOKEN`) to read
/// `GET /v1/metrics`; kept only as its SHA-256, compared in full, and in
/// no `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken {
    sha256: [u8; 32],
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(..)")
    }
}

impl OperatorToken {
    /// The fewest characters a token may have.
    pub const MIN_LEN: usize = 16;

    /// `token`, without the white space around it.
    ///
    /// # Errors
    ///
    /// [`ServeError::Invalid`] for a token of fewer than
    /// [`Self::MIN_LEN`] characters or with white space or control
    /// characters inside (it could not travel in a header); the token is
    /// not in the error.
    pub fn new(token: &str) -> Result<Self> {
        let token = token.trim();
        if token.chars().count() < Self::MIN_LEN
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ServeError::Invalid {
                name: "operator token",
                value: "(not shown)".into(),
                reason: format!(
                    "expected at least {} characters, none of them white space",
                    Self::MIN_LEN
                ),
            });
        }
        Ok(Self {
            sha256: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `given` is the token (compared in full, whatever the first
    /// difference).
    fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.sha256
            .iter()
            .zip(given)
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
    }
}

/// What answers the queries: logits of row-major inputs.
pub(crate) trait Logits: Send {
    /// `classes` logits per input of `inputs` (row-major).
    fn logits(&self, inputs: &[f32]) -> std::result::Result<Vec<f64>, String>;
}

impl Logits for TrainedModel {
    fn logits(&self, inputs: &[f32]) -> std::result::Result<Vec<f64>, String> {
        self.logits_of_inputs(inputs).map_err(|e| e.to_string())
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
    model: Mutex<Box<dyn Logits>>,
    card: ModelCard,
    keys: Mutex<KeyStore>,
    /// The key store's audit log, whose rows are appended (group commit)
    /// without the lock of `keys`.
    audit: Arc<AuditLog>,
    monitor: Mutex<Monitor>,
    buckets: Mutex<HashMap<i64, Bucket>>,
    metrics: Metrics,
    settings: ServeSettings,
    /// The largest body `POST /v1/predict` reads.
    body_limit: usize,
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

/// `release` as a model of `classes` classes can give it: a top-K of more
/// than `classes` is every class, top-`classes`.
fn fitted(release: Release, classes: usize) -> Release {
    match release {
        Release::TopK(k) if k > classes => Release::TopK(classes),
        Release::TopKRounded(k, d) if k > classes => Release::TopKRounded(classes, d),
        r => r,
    }
}

impl Server {
    /// Serves `model` (with its `card`) to the keys of `keys`; a
    /// `settings.max_batch` outside 1 to
    /// [`MAX_BATCH`](crate::client::MAX_BATCH) is taken as the nearest.
    pub fn new(
        model: TrainedModel,
        card: ModelCard,
        keys: KeyStore,
        settings: ServeSettings,
    ) -> Self {
        Self::with_logits(Box::new(model), card, keys, settings)
    }

    pub(crate) fn with_logits(
        model: Box<dyn Logits>,
        card: ModelCard,
        keys: KeyStore,
        mut settings: ServeSettings,
    ) -> Self {
        settings.max_batch = settings.max_batch.clamp(1, MAX_BATCH);
        // Room for `max_batch` inputs of up to 32 bytes of JSON per value
        // (`-2.2250738585072014e-308, ` is 26).
        let body_limit = settings
            .max_batch
            .saturating_mul(card.input_len)
            .saturating_mul(32)
            .saturating_add(1 << 16);
        Self {
            state: Arc::new(AppState {
                model: Mutex::new(model),
                monitor: Mutex::new(Monitor::new(settings.monitor)),
                card,
                audit: keys.audit_writer(),
                keys: Mutex::new(keys),
                buckets: Mutex::new(HashMap::new()),
                metrics: Metrics::default(),
                settings,
                body_limit,
            }),
        }
    }

    /// One line for each key (not revoked) whose release asks for more
    /// classes than the model has: it is answered the release the model
    /// can give (top-K of every class), and its answers name that one.
    ///
    /// # Errors
    ///
    /// [`ServeError::Database`].
    pub fn release_warnings(&self) -> Result<Vec<String>> {
        let keys = self.state.keys.lock().map_err(|_| ServeError::Invalid {
            name: "key store",
            value: String::new(),
            reason: "its lock is poisoned".into(),
        })?;
        let classes = self.state.card.classes;
        Ok(keys
            .list()?
            .into_iter()
            .filter(|k| !k.revoked)
            .filter_map(|k| {
                let asked: Release = k.release.parse().ok()?;
                let given = fitted(asked, classes);
                (given != asked).then(|| {
                    format!(
                        "key {}'s release {asked} asks for more than the model's {classes} classes: it is answered {given} (every class), and its answers say so",
                        k.id
                    )
                })
            })
            .collect())
    }

    /// The routes, for serving or for tests.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/predict", post(predict))
            .route("/v1/health", get(health))
            .route("/v1/metrics", get(metrics))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the
    /// requests in flight for at most
    /// [`ServeSettings::shutdown_timeout`] and returns (the requests still
    /// open then are dropped unanswered; what they charged is committed).
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
        let grace = self.state.settings.shutdown_timeout;
        let (told, heard) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = told.send(());
        };
        let serving = std::future::IntoFuture::into_future(
            axum::serve(listener, self.router()).with_graceful_shutdown(signal),
        );
        let deadline = async move {
            match heard.await {
                Ok(()) => tokio::time::sleep(grace).await,
                // Never told to stop: serving ends first.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            done = serving => done.map_err(|source| ServeError::Listen { addr, source }),
            () = deadline => {
                eprintln!(
                    "dpsgd serve: requests still in flight {} s after the signal to stop: stopped without them",
                    grace.as_secs_f64()
                );
                Ok(())
            }
        }
    }
}

/// The privacy part of every answer's metadata.
/// The answers' `privacy` object: the card's guarantee, with what the card
/// declares ε does not cover (`not_covered_members`, and
/// `not_covered_by_epsilon`, whose pointers name fields of this object as
/// `/privacy/…`), so that no client sees a figure without its declaration.
fn privacy(card: &ModelCard) -> Value {
    json!({
        "epsilon": card.privacy.epsilon,
        "delta": card.privacy.delta,
        "unit": card.privacy.unit,
        "members": card.privacy.members,
        "not_covered_members": card.privacy.not_covered_members,
        "not_covered_by_epsilon": card.privacy.not_covered_by_epsilon,
        "guarantee": if card.privacy.epsilon.is_some() { "differential privacy (DP-SGD)" } else { "none: trained without DP" },
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A refusal with a machine-readable `reason`: `no-key`, `unknown-key`,
/// `revoked` (403); `budget`, `rate` (wait and retry: the `Retry-After`
/// header says how long) or `batch-over-rate` (a batch this key's rate
/// never admits) (429); `batch-size` (more than `max_batch` inputs, 400);
/// `non-finite-output` (422); `metrics-off` (403) and `operator-token`
/// (401) for `GET /v1/metrics`.
fn refusal(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": message.into(), "reason": reason })),
    )
        .into_response()
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
/// `Err(tokens it holds)` when there are not enough (nothing taken).
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
        Err(b.tokens)
    }
}

/// A 500 that says no more than that: the detail goes to the server's
/// standard error, not to the client.
fn internal(detail: impl std::fmt::Display) -> Response {
    eprintln!("dpsgd serve: internal error: {detail}");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Why a request's body was not read.
enum Unread {
    /// Longer than the limit.
    TooLarge,
    /// The connection failed while it was read.
    Broken(String),
}

/// Reads `body`, at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> std::result::Result<Vec<u8>, Unread> {
    let mut body = std::pin::pin!(body);
    if body.size_hint().lower() > limit as u64 {
        return Err(Unread::TooLarge);
    }
    // The length the request declares, within the limit (a body that
    // ends short of it leaves the rest unused; one past it is refused).
    let declared = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let mut bytes = Vec::with_capacity(declared.min(limit));
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| Unread::Broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len().saturating_add(data.len()) > limit {
                return Err(Unread::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// What a request's headers decide.
enum Admission {
    /// The key's request, its body still to be read.
    Admitted(KeyInfo),
    /// Refused: the answer.
    Refused(Response),
}

/// `response`, saying that the connection closes after it: the request's
/// body was not read to its end, and what is left of it is not read.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

async fn predict(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    // Who, from the headers alone, before a byte of the body is read: a
    // request refused here (no key, an unknown or revoked key, a spent
    // budget, an empty bucket) costs the server its headers, not its body.
    // The key store blocks (SQLite), so this runs off the async workers.
    let work = state.clone();
    let admitted = tokio::task::spawn_blocking(move || admit(&work, &headers))
        .await
        .unwrap_or_else(|e| Admission::Refused(internal(e)));
    let response = match admitted {
        // The rest of the body is never read: the connection closes after
        // the answer (hyper takes at most what it already holds).
        Admission::Refused(refused) if body.is_end_stream() => refused,
        Admission::Refused(refused) => closing(refused),
        Admission::Admitted(info) => read_and_answer(&state, info, body).await,
    };
    state
        .metrics
        .observe(response.status().as_u16(), started.elapsed());
    response
}

/// Reads the body of a request `admit`ted for the key `info`, then
/// answers it.
async fn read_and_answer(state: &Arc<AppState>, info: KeyInfo, body: Body) -> Response {
    // The body must arrive whole, within the limit and the time allowed:
    // a client that stops sending holds nothing for long.
    let timeout = state.settings.read_timeout;
    match tokio::time::timeout(timeout, read_body(body, state.body_limit)).await {
        Err(_) => closing(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request's body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )),
        Ok(Err(Unread::TooLarge)) => closing(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a request's body may hold at most {} bytes",
                state.body_limit
            ),
        )),
        Ok(Err(Unread::Broken(e))) => error(
            StatusCode::BAD_REQUEST,
            format!("reading the request's body: {e}"),
        ),
        Ok(Ok(body)) => {
            // Everything an answer does blocks — the key store's SQLite
            // commits with a full sync, the model, the monitor — so all of
            // it runs off the async workers, which stay free to accept and
            // read requests.
            let work = state.clone();
            tokio::task::spawn_blocking(move || answer(&work, &info, &body))
                .await
                .unwrap_or_else(internal)
        }
    }
}

/// Refuses a request of the known key `id` for `reason`, after the
/// audit log's row `refused-<reason>` (with `detail`) is committed, in
/// one transaction with the rows of the refusals made at the same time
/// (the key store's lock is not taken here).
fn refuse_known(
    state: &AppState,
    id: i64,
    status: StatusCode,
    reason: &'static str,
    message: String,
    detail: &str,
) -> Response {
    state.metrics.refused(reason);
    match state
        .audit
        .append(Some(id), &format!("refused-{reason}"), detail)
    {
        Ok(()) => refusal(status, reason, message),
        Err(e) => internal(e),
    }
}

/// 429 `rate` for a key of `rate` records per second: wait `records`
/// tokens' worth, less the `held` ones (whole seconds, RFC 9110, rounded
/// up: the batch fits then).
fn over_rate(state: &AppState, info: &KeyInfo, rate: f64, records: usize, held: f64) -> Response {
    let wait = ((records as f64 - held) / rate).ceil().max(1.0) as u64;
    let mut response = refuse_known(
        state,
        info.id,
        StatusCode::TOO_MANY_REQUESTS,
        "rate",
        format!("over this key's rate of {rate} records per second"),
        &format!("{records} records over the rate of {rate} a second (retry after {wait} s)"),
    );
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
    }
    response
}

/// 429 `budget` for a batch of `n` the key's budget cannot cover.
fn over_budget(state: &AppState, n: usize, info: &KeyInfo) -> Response {
    refuse_known(
        state,
        info.id,
        StatusCode::TOO_MANY_REQUESTS,
        "budget",
        format!(
            "a batch of {n} records passes this key's budget ({} of {} used)",
            info.used, info.budget
        ),
        &format!("a batch of {n} records"),
    )
}

/// What the headers decide, before any of the body is read: the key, or
/// the refusal of a request without a usable one.
fn admit(state: &AppState, headers: &HeaderMap) -> Admission {
    // 1. Who: a missing or unknown key is refused before anything else,
    //    and only counted (a row each would let anyone fill the disk).
    let Some(key) = bearer(headers) else {
        state.metrics.refused("no-key");
        return Admission::Refused(refusal(
            StatusCode::FORBIDDEN,
            "no-key",
            "no key: send Authorization: Bearer KEY",
        ));
    };
    let info = match state.keys.lock().map(|k| k.authenticate(key)) {
        Ok(Ok(Some(info))) => info,
        Ok(Ok(None)) => {
            state.metrics.refused("unknown-key");
            return Admission::Refused(refusal(
                StatusCode::FORBIDDEN,
                "unknown-key",
                "unknown key",
            ));
        }
        Ok(Err(e)) => return Admission::Refused(internal(e)),
        Err(_) => return Admission::Refused(internal("the key store's lock is poisoned")),
    };
    // From here on every refusal is a row of the audit log.
    if info.revoked {
        return Admission::Refused(refuse_known(
            state,
            info.id,
            StatusCode::FORBIDDEN,
            "revoked",
            "this key is revoked".into(),
            "a request with a revoked key",
        ));
    }
    // 2. Before the body is read: a spent budget, and one record of the
    //    key's rate, which every request pays, answered or not (a key
    //    cannot have more bodies read than its rate).
    if info.used >= info.budget {
        return Admission::Refused(refuse_known(
            state,
            info.id,
            StatusCode::TOO_MANY_REQUESTS,
            "budget",
            format!(
                "this key's budget is spent ({} of {} used)",
                info.used, info.budget
            ),
            "a request with the budget spent",
        ));
    }
    if let (Some(rate), Err(held)) = (info.rate, take_tokens(state, &info, 1)) {
        return Admission::Refused(over_rate(state, &info, rate, 1, held));
    }
    Admission::Admitted(info)
}

/// Answers the request of `info`'s key (admitted) with `body`.
fn answer(state: &AppState, info: &KeyInfo, body: &[u8]) -> Response {
    // 3. What: 1 to max_batch inputs of the model's length, finite,
    //    checked as they are read.
    let dim = state.card.input_len;
    let max_batch = state.settings.max_batch;
    let flat = match inputs::parse(body, dim, max_batch) {
        Ok(inputs) => inputs.flat,
        Err(too_many @ Invalid::TooMany { .. }) => {
            return refuse_known(
                state,
                info.id,
                StatusCode::BAD_REQUEST,
                "batch-size",
                too_many.to_string(),
                &format!("more than {max_batch} inputs"),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let n = flat.len() / dim;
    // 4. How much: a batch the budget cannot cover is refused before any
    //    work (the charge below decides, atomically, for the others).
    if info.used.saturating_add(n as u64) > info.budget {
        return over_budget(state, n, info);
    }
    // 5. How fast: the rest of the batch's records (one is paid).
    if let Some(rate) = info.rate {
        if n as f64 > capacity(rate) {
            let most = capacity(rate).floor();
            return refuse_known(
                state,
                info.id,
                StatusCode::TOO_MANY_REQUESTS,
                "batch-over-rate",
                format!(
                    "a batch of {n} records never fits this key's rate of {rate} records per second: send at most {most} per request"
                ),
                &format!("a batch of {n} records, over the rate of {rate} a second"),
            );
        }
        if let Err(held) = take_tokens(state, info, n - 1) {
            return over_rate(state, info, rate, n, held);
        }
    }
    // 6. The model's answer and the monitor's verdict (it sees every query
    //    that got this far).
    let id = info.id;
    let classes = state.card.classes;
    let done = (|| {
        let logits = {
            let model = state
                .model
                .lock()
                .map_err(|_| "the model's lock is poisoned".to_owned())?;
            model.logits(&flat)?
        };
        if logits.len() != n * classes {
            return Err(format!(
                "the model gave {} logits for {n} inputs of {classes} classes",
                logits.len()
            ));
        }
        let probabilities: Vec<Vec<f64>> = logits.chunks(classes).map(softmax).collect();
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
            // The row with the others being committed, the store free.
            drop(keys);
            if let Err(e) = state.audit.append(
                Some(info.id),
                "refused-revoked",
                "the request that tripped the monitor",
            ) {
                return internal(e);
            }
            return refusal(
                StatusCode::FORBIDDEN,
                "revoked",
                format!("this key is revoked: {evidence}"),
            );
        }
    }
    // 7. An answer the model cannot give: inputs (finite, but large)
    //    that overflow its logits. Nothing is charged and nothing is
    //    released; 422, since the same inputs always fail.
    if probabilities.iter().flatten().any(|p| !p.is_finite()) {
        return refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "non-finite-output",
            "the model's output for these inputs is not a finite number (inputs too large?): nothing was charged",
        );
    }
    // 8. The budget, charged for the whole batch or not at all.
    let charge = match state.keys.lock().map(|mut k| k.charge(info.id, n as u64)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return internal(e),
        Err(_) => return internal("the key store's lock is poisoned"),
    };
    let remaining = match charge {
        Charge::Granted { remaining } => remaining,
        Charge::OverBudget => {
            // The charge's own transaction logged it.
            state.metrics.refused("budget");
            return refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "budget",
                format!("a batch of {n} records passes this key's budget"),
            );
        }
        Charge::Revoked | Charge::Unknown => {
            return refuse_known(
                state,
                info.id,
                StatusCode::FORBIDDEN,
                "revoked",
                "this key is revoked".into(),
                "revoked while its request was answered",
            );
        }
    };
    // 9. The release the key is allowed, as the model can give it.
    let release: Release = fitted(info.release.parse().unwrap_or(Release::LabelOnly), classes);
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

/// The counters, to the operator only: who flags and revokes keys, and
/// when, is what a client probing the monitor wants to know.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(token) = &state.settings.metrics_token else {
        return refusal(
            StatusCode::FORBIDDEN,
            "metrics-off",
            "metrics are served to the operator only: start the server with --metrics-token-file FILE and send Authorization: Bearer TOKEN",
        );
    };
    if !bearer(&headers).is_some_and(|given| token.matches(given)) {
        let mut response = refusal(
            StatusCode::UNAUTHORIZED,
            "operator-token",
            "metrics need the operator's token: Authorization: Bearer TOKEN",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
