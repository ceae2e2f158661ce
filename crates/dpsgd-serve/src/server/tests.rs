//! The server over loopback, with a model of 4 inputs and 3 classes that
//! needs no training: the HTTP contract's refusals, the audit log's rows,
//! the operator's metrics, the body's deadline and the server's, and what
//! it does with an output that is not a number.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

const DIM: usize = 4;
const CLASSES: usize = 3;
const TOKEN: &str = "operator-token-0123456789";

/// Logit `c` of an input is `(c + 1) × (the sum of its values)`, in f32
/// as a network computes it: large inputs overflow it.
struct Linear;

impl Logits for Linear {
    fn logits(&self, inputs: &[f32]) -> std::result::Result<Vec<f64>, String> {
        Ok(inputs
            .chunks(DIM)
            .flat_map(|row| {
                let s: f32 = row.iter().sum();
                (0..CLASSES).map(move |c| f64::from(s * (c as f32 + 1.0)))
            })
            .collect())
    }
}

fn card() -> ModelCard {
    serde_json::from_value(json!({
        "format": "dpsgd-model-card/1",
        "model": "logreg",
        "hidden": [],
        "activation": "relu",
        "weight_standardization": false,
        "features": {"kind": "raw"},
        "input_len": DIM,
        "input_shape": null,
        "classes": CLASSES,
        "record_bytes": 0,
        "record_crc32": 0,
        "privacy": {"epsilon": 3.0, "delta": 1e-5, "unit": "record", "secure": false, "members": 100},
    }))
    .expect("a card")
}

/// Settings for a test: no monitor, 4 inputs a request, quick deadlines,
/// the operator's token.
fn settings() -> ServeSettings {
    ServeSettings {
        monitoring: false,
        max_batch: 4,
        read_timeout: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
        metrics_token: Some(OperatorToken::new(TOKEN).unwrap()),
        ..ServeSettings::default()
    }
}

/// A server running on a port of loopback.
struct Running {
    addr: String,
    db: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Running {
    /// Tells the server to stop; how long it took to return.
    fn stop(&mut self, within: Duration) -> std::result::Result<Duration, String> {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (Some(done), Some(runtime)) = (self.done.take(), self.runtime.as_ref()) else {
            return Err("stopped already".into());
        };
        match runtime.block_on(async { tokio::time::timeout(within, done).await }) {
            Ok(Ok(Ok(()))) => Ok(started.elapsed()),
            Ok(r) => Err(format!("{r:?}")),
            Err(_) => Err(format!("still serving after {within:?}")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A server of [`Linear`] with `settings`, and a key for each of `keys`
/// (release, budget, rate).
fn start(
    name: &str,
    settings: ServeSettings,
    keys: &[(Release, u64, Option<f64>)],
) -> (Running, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("dpsgd-serve-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keys.db");
    let mut store = KeyStore::open(&db).unwrap();
    let keys = keys
        .iter()
        .map(|&(release, budget, rate)| store.add(release, budget, rate).unwrap().1)
        .collect();
    let server = Server::with_logits(Box::new(Linear), card(), store, settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = runtime.spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (
        Running {
            addr,
            db,
            stop: Some(stop),
            done: Some(done),
            runtime: Some(runtime),
        },
        keys,
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// An answer: status, `Retry-After`, the JSON body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// POSTs `body` to /v1/predict with `key`.
fn post(addr: &str, key: Option<&str>, body: &str) -> Answer {
    let mut req = agent()
        .post(format!("http://{addr}/v1/predict"))
        .header("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.send(body).expect("an answer");
    Answer {
        status: resp.status().as_u16(),
        retry_after: resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: resp.body_mut().read_json().unwrap_or(Value::Null),
    }
}

/// POSTs `rows` inputs of `value` with `key`.
fn predict(addr: &str, key: Option<&str>, rows: usize, value: f32) -> Answer {
    let inputs = vec![vec![value; DIM]; rows];
    post(addr, key, &json!({ "inputs": inputs }).to_string())
}

/// GET /v1/metrics with `token`: status and body.
fn metrics_with(addr: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent().get(format!("http://{addr}/v1/metrics"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("an answer");
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// The audit log's (key, event) rows.
fn log_rows(db: &std::path::Path) -> Vec<(Option<i64>, String)> {
    KeyStore::open(db)
        .unwrap()
        .audit_log()
        .unwrap()
        .into_iter()
        .map(|e| (e.key_id, e.event))
        .collect()
}

fn used(db: &std::path::Path, id: i64) -> u64 {
    KeyStore::open(db).unwrap().get(id).unwrap().used
}

/// `key` with its last hex digit changed.
fn forged(key: &str) -> String {
    let last = if key.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &key[..key.len() - 1])
}

#[test]
fn should_name_the_reason_of_each_refusal_of_who() {
    let (s, keys) = start(
        "reasons",
        settings(),
        &[(Release::Full, 10, None), (Release::Full, 10, None)],
    );
    KeyStore::open(&s.db).unwrap().revoke(2, "test").unwrap();
    let ok = predict(&s.addr, Some(&keys[0]), 1, 0.5);
    assert_eq!(ok.status, 200, "{}", ok.body);
    for (key, reason) in [
        (None, "no-key"),
        (Some(forged(&keys[0])), "unknown-key"),
        (Some("dpk_1_x".to_owned()), "unknown-key"),
        (Some(keys[1].clone()), "revoked"),
    ] {
        let a = predict(&s.addr, key.as_deref(), 1, 0.5);
        assert_eq!((a.status, a.body["reason"].as_str()), (403, Some(reason)));
    }
}

#[test]
fn should_log_every_refusal_of_a_known_key_and_only_count_the_others() {
    let (s, keys) = start(
        "log",
        settings(),
        &[
            (Release::Full, 10, None),       // 1: revoked
            (Release::Full, 2, None),        // 2: a budget of 2
            (Release::Full, 100, Some(0.5)), // 3: a record every 2 s
            (Release::Full, 100, None),      // 4: batches too large
        ],
    );
    KeyStore::open(&s.db).unwrap().revoke(1, "test").unwrap();
    let before = log_rows(&s.db).len();
    let reason = |a: Answer| (a.status, a.body["reason"].as_str().map(str::to_owned));
    let refused = |status: u16, r: &str| (status, Some(r.to_owned()));
    assert_eq!(
        reason(predict(&s.addr, Some(&keys[0]), 1, 0.5)),
        refused(403, "revoked")
    );
    assert_eq!(predict(&s.addr, Some(&keys[1]), 2, 0.5).status, 200);
    assert_eq!(
        reason(predict(&s.addr, Some(&keys[1]), 1, 0.5)),
        refused(429, "budget")
    );
    // A bucket of one record: a batch of 2 never fits (and pays its
    // record), then the bucket is empty for 2 s.
    assert_eq!(
        reason(predict(&s.addr, Some(&keys[2]), 2, 0.5)),
        refused(429, "batch-over-rate")
    );
    assert_eq!(
        reason(predict(&s.addr, Some(&keys[2]), 1, 0.5)),
        refused(429, "rate")
    );
    assert_eq!(
        reason(predict(&s.addr, Some(&keys[3]), 5, 0.5)),
        refused(400, "batch-size")
    );
    // Keys nobody holds: counted, never written.
    for _ in 0..3 {
        assert_eq!(predict(&s.addr, None, 1, 0.5).status, 403);
        assert_eq!(
            predict(&s.addr, Some(&forged(&keys[3])), 1, 0.5).status,
            403
        );
    }
    let rows = log_rows(&s.db);
    assert_eq!(
        rows[before..],
        [
            (Some(1), "refused-revoked".to_owned()),
            (Some(2), "refused-budget".to_owned()),
            (Some(3), "refused-batch-over-rate".to_owned()),
            (Some(3), "refused-rate".to_owned()),
            (Some(4), "refused-batch-size".to_owned()),
        ]
    );
    let (status, text) = metrics_with(&s.addr, Some(TOKEN));
    assert_eq!(status, 200);
    for line in [
        "dpsgd_refusals_total{reason=\"no-key\"} 3",
        "dpsgd_refusals_total{reason=\"unknown-key\"} 3",
        "dpsgd_refusals_total{reason=\"batch-size\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
}

#[test]
fn should_say_when_to_retry_a_rate_refusal() {
    // Half a record a second: the bucket holds one, refilled in 2 s.
    let (s, keys) = start("retry", settings(), &[(Release::Full, 100, Some(0.5))]);
    assert_eq!(predict(&s.addr, Some(&keys[0]), 1, 0.5).status, 200);
    let a = predict(&s.addr, Some(&keys[0]), 1, 0.5);
    assert_eq!((a.status, a.body["reason"].as_str()), (429, Some("rate")));
    let wait: u64 = a
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After of whole seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(predict(&s.addr, Some(&keys[0]), 1, 0.5).status, 200);
}

#[test]
fn should_refuse_more_inputs_than_max_batch_with_400() {
    let (s, keys) = start("batch", settings(), &[(Release::Full, 100, None)]);
    let a = predict(&s.addr, Some(&keys[0]), 5, 0.5);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body["error"].as_str().unwrap().contains("1 to 4 inputs"),
        "{}",
        a.body
    );
    assert_eq!(predict(&s.addr, Some(&keys[0]), 4, 0.5).status, 200);
    // Rows of another length, empty rows, no rows.
    for body in [
        r#"{"inputs": [[1, 2, 3]]}"#,
        r#"{"inputs": [[], [], []]}"#,
        r#"{"inputs": [[1, 2, 3, 4, 5]]}"#,
        r#"{"inputs": []}"#,
    ] {
        assert_eq!(post(&s.addr, Some(&keys[0]), body).status, 400, "{body}");
    }
    assert_eq!(used(&s.db, 1), 4, "refusals charge nothing");
    // A max_batch past the largest is held to it.
    let (big, _) = start(
        "batch-cap",
        ServeSettings {
            max_batch: usize::MAX,
            ..settings()
        },
        &[],
    );
    let mut resp = agent()
        .get(format!("http://{}/v1/health", big.addr))
        .call()
        .unwrap();
    let health: Value = resp.body_mut().read_json().unwrap();
    assert_eq!(health["max_batch"], MAX_BATCH);
}

#[test]
fn should_take_a_record_of_the_rate_before_parsing_a_body() {
    // A bucket of one record, refilled in 5 s.
    let (s, keys) = start("rate-first", settings(), &[(Release::Full, 100, Some(0.2))]);
    // A body that is not parsed still pays its record of the rate...
    assert_eq!(post(&s.addr, Some(&keys[0]), "{not json").status, 400);
    // ... so the next one, parsed or not, waits for the bucket.
    let a = post(&s.addr, Some(&keys[0]), "{not json");
    assert_eq!((a.status, a.body["reason"].as_str()), (429, Some("rate")));
    assert!(a.retry_after.is_some());
    assert_eq!(predict(&s.addr, Some(&keys[0]), 1, 0.5).status, 429);
    assert_eq!(used(&s.db, 1), 0);
}

#[test]
fn should_serve_metrics_only_to_the_operator() {
    let (s, keys) = start(
        "metrics",
        ServeSettings {
            monitoring: true,
            auto_revoke: false,
            ..settings()
        },
        &[(Release::Full, 1000, None)],
    );
    // Off-distribution queries: the monitor flags the key (flag only).
    for _ in 0..6 {
        assert_eq!(predict(&s.addr, Some(&keys[0]), 4, 5.0).status, 200);
    }
    assert!(KeyStore::open(&s.db).unwrap().get(1).unwrap().flagged);
    for (token, status) in [
        (None, 401),
        (Some("wrong-token-0123456789"), 401),
        (Some(keys[0].as_str()), 401),
    ] {
        let (got, text) = metrics_with(&s.addr, token);
        assert_eq!(got, status, "{token:?}");
        assert!(!text.contains("dpsgd_"), "{text}");
    }
    let (status, text) = metrics_with(&s.addr, Some(TOKEN));
    assert_eq!(status, 200);
    for line in ["dpsgd_flags_total 1", "dpsgd_records_total 24"] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    // No token configured: nobody reads them.
    let (off, _) = start(
        "metrics-off",
        ServeSettings {
            metrics_token: None,
            ..settings()
        },
        &[],
    );
    let (status, text) = metrics_with(&off.addr, Some(TOKEN));
    assert_eq!(status, 403);
    assert!(!text.contains("dpsgd_flags_total"), "{text}");
    assert!(text.contains("metrics-off"), "{text}");
    // A token too short to be one, and its Debug output.
    assert!(OperatorToken::new("short").is_err());
    let token = OperatorToken::new(TOKEN).unwrap();
    assert!(!format!("{token:?}").contains(TOKEN));
    assert!(token.matches(TOKEN) && !token.matches("operator-token-012345678"));
}

/// Sends the headers of a request of `length` bytes of body and only
/// `sent` of them.
fn half_sent(addr: &str, key: &str, length: usize, sent: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{sent}"
    )
    .unwrap();
    stream.flush().unwrap();
    stream
}

#[test]
fn should_answer_408_to_a_body_that_stops_arriving() {
    let (s, keys) = start(
        "read-timeout",
        ServeSettings {
            read_timeout: Duration::from_millis(300),
            ..settings()
        },
        &[(Release::Full, 100, None)],
    );
    let started = Instant::now();
    let mut stream = half_sent(&s.addr, &keys[0], 1000, r#"{"inputs": [[1,"#);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = vec![0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 408");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(used(&s.db, 1), 0);
}

/// Sends the headers of a `POST /v1/predict` with `headers` and a body of
/// `length` bytes, and only `sent` of the body.
fn part_sent(addr: &str, headers: &str, length: usize, sent: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{sent}"
    )
    .unwrap();
    stream.flush().unwrap();
    stream
}

/// What the server sends on `stream` until it closes the connection,
/// waiting at most `patience` for each read: `Err` when it sends nothing
/// more for that long without closing.
fn until_closed(stream: &mut TcpStream, patience: Duration) -> std::result::Result<String, String> {
    stream.set_read_timeout(Some(patience)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        // A reset after the answer (bytes of the body left unread) is a
        // close too.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty() => {}
        Err(e) => {
            return Err(format!(
                "{e} after {:?}: {:?}",
                patience,
                String::from_utf8_lossy(&answer)
            ));
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn should_refuse_a_request_without_a_usable_key_before_reading_its_body() {
    // A server that would wait a minute for a body: one that waited for
    // these would not answer within the client's 5 s.
    let (s, keys) = start(
        "before-body",
        ServeSettings {
            read_timeout: Duration::from_secs(60),
            ..settings()
        },
        &[
            (Release::Full, 10, None),  // 1: revoked
            (Release::Full, 1, None),   // 2: its budget spent
            (Release::Full, 100, None), // 3: usable
        ],
    );
    KeyStore::open(&s.db).unwrap().revoke(1, "test").unwrap();
    assert_eq!(predict(&s.addr, Some(&keys[1]), 1, 0.5).status, 200);
    let before = log_rows(&s.db).len();
    // A body near the limit (4 inputs of 4 values, 32 bytes a value, and
    // 64 KiB), of which 1 KiB is sent.
    let length = 4 * DIM * 32 + (1 << 16) - 16;
    let sent = format!(r#"{{"inputs": [[{}"#, "0.5, ".repeat(200));
    let patience = Duration::from_secs(5);
    let bearer = |key: &str| format!("Authorization: Bearer {key}\r\n");
    for (headers, status, reason) in [
        (String::new(), "403", "no-key"),
        (bearer(&forged(&keys[2])), "403", "unknown-key"),
        (bearer("dpk_1_x"), "403", "unknown-key"),
        (bearer(&keys[0]), "403", "revoked"),
        (bearer(&keys[1]), "429", "budget"),
        // Asked to say when to send the body: refused without a 100.
        (
            format!("{}Expect: 100-continue\r\n", bearer(&keys[0])),
            "403",
            "revoked",
        ),
    ] {
        let mut stream = part_sent(&s.addr, &headers, length, &sent);
        let answer = until_closed(&mut stream, patience)
            .unwrap_or_else(|e| panic!("{reason}: no answer before the body: {e}"));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{reason}: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{reason}: {answer}"
        );
        assert!(
            answer.contains(&format!(r#""reason":"{reason}""#)),
            "{reason}: {answer}"
        );
    }
    // Refusals of known keys are still rows of the audit log.
    assert_eq!(
        log_rows(&s.db)[before..],
        [
            (Some(1), "refused-revoked".to_owned()),
            (Some(2), "refused-budget".to_owned()),
            (Some(1), "refused-revoked".to_owned()),
        ]
    );
    // A usable key's body is waited for (the patience above tells the
    // two apart), then answered.
    let body = json!({ "inputs": [vec![0.5_f32; DIM]] }).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = part_sent(&s.addr, &bearer(&keys[2]), body.len(), first);
    let early = until_closed(&mut stream, Duration::from_millis(500));
    assert!(early.is_err(), "answered before its body: {early:?}");
    stream.write_all(rest.as_bytes()).unwrap();
    let mut answer = vec![0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert_eq!(used(&s.db, 3), 1);
}

#[test]
fn should_stop_by_its_deadline_with_a_request_half_sent() {
    let (mut s, keys) = start(
        "shutdown",
        ServeSettings {
            read_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_millis(300),
            ..settings()
        },
        &[(Release::Full, 100, None)],
    );
    let _stream = half_sent(&s.addr, &keys[0], 1000, r#"{"inputs": [[1,"#);
    std::thread::sleep(Duration::from_millis(200));
    let took = s.stop(Duration::from_secs(5)).expect("stopped");
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[test]
fn should_stop_at_once_when_nothing_is_in_flight() {
    let (mut s, keys) = start(
        "shutdown-idle",
        ServeSettings {
            shutdown_timeout: Duration::from_secs(30),
            ..settings()
        },
        &[(Release::Full, 100, None)],
    );
    assert_eq!(predict(&s.addr, Some(&keys[0]), 1, 0.5).status, 200);
    let took = s.stop(Duration::from_secs(5)).expect("stopped");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn should_charge_nothing_for_an_output_that_is_not_a_number() {
    let (s, keys) = start(
        "non-finite",
        settings(),
        &[(Release::Full, 100, None), (Release::LabelOnly, 100, None)],
    );
    // Finite f32 inputs whose logits overflow.
    for (id, key) in [(1, &keys[0]), (2, &keys[1])] {
        let a = predict(&s.addr, Some(key), 2, 3e38);
        assert_eq!(a.status, 422, "{}", a.body);
        assert_eq!(a.body["reason"], "non-finite-output");
        assert!(a.body["outputs"].is_null() && a.body["labels"].is_null());
        assert_eq!(used(&s.db, id), 0, "key {id} charged");
        let a = predict(&s.addr, Some(key), 2, 0.5);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(used(&s.db, id), 2);
    }
}

#[test]
fn should_answer_a_top_k_past_the_classes_as_every_class_and_say_so() {
    let (s, keys) = start(
        "top-k",
        settings(),
        &[
            (Release::TopK(20), 100, None),
            (Release::TopKRounded(5, 2), 100, None),
            (Release::TopK(2), 100, None),
        ],
    );
    for (key, release, nonzero) in [
        (&keys[0], "top-3", 3),
        (&keys[1], "top-3-round-2", 3),
        (&keys[2], "top-2", 2),
    ] {
        let a = predict(&s.addr, Some(key), 1, 0.5);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["release"], release);
        let outputs = a.body["outputs"][0].as_array().unwrap();
        assert_eq!(outputs.len(), CLASSES);
        let n = outputs.iter().filter(|p| p.as_f64() > Some(0.0)).count();
        assert_eq!(n, nonzero, "{}", a.body);
    }
    // The server says which keys it answers otherwise than they read.
    let server = Server::with_logits(
        Box::new(Linear),
        card(),
        KeyStore::open(&s.db).unwrap(),
        settings(),
    );
    let warnings = server.release_warnings().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("key 1") && warnings[0].contains("top-20"),
        "{warnings:?}"
    );
}

/// What the card declares not covered by ε reaches every client with the
/// figures it concerns, at the pointers it names.
#[test]
fn should_pass_the_cards_declarations_on_to_clients() {
    let plain = privacy(&card());
    assert_eq!(plain["not_covered_members"], 0);
    assert_eq!(plain["not_covered_by_epsilon"], Value::Null);
    let mut declared = card();
    declared.privacy.not_covered_members = 7;
    declared.privacy.not_covered_by_epsilon =
        Some(dpsgd_train::CardNotCovered::split("split by user"));
    let v = json!({ "privacy": privacy(&declared) });
    assert_eq!(v["privacy"]["not_covered_members"], 7);
    assert_eq!(
        v["privacy"]["not_covered_by_epsilon"]["split"],
        "split by user"
    );
    let fields = v["privacy"]["not_covered_by_epsilon"]["fields"]
        .as_array()
        .expect("the declared fields");
    for field in fields {
        let pointer = field.as_str().expect("a pointer");
        assert!(
            v.pointer(pointer).is_some(),
            "{pointer} names nothing in {v}"
        );
    }
}

#[test]
fn should_log_every_one_of_many_concurrent_refusals() {
    // 64 revoked keys, one client each, all at once: every client gets its
    // 403 and every refusal is a row, its own committed before its answer
    // left.
    let (s, keys) = start("concurrent", settings(), &[(Release::Full, 10, None); 64]);
    for id in 1..=64 {
        KeyStore::open(&s.db).unwrap().revoke(id, "test").unwrap();
    }
    let before = log_rows(&s.db).len();
    let gate = std::sync::Arc::new(std::sync::Barrier::new(64));
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (addr, key, db, gate) =
                (s.addr.clone(), keys[i].clone(), s.db.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                let a = predict(&addr, Some(&key), 1, 0.5);
                // Committed before the answer left: on disk now.
                let id = (i + 1) as i64;
                let mine = log_rows(&db)[before..]
                    .iter()
                    .filter(|(k, _)| *k == Some(id))
                    .count();
                (a.status, a.body["reason"].as_str().map(str::to_owned), mine)
            })
        })
        .collect();
    for c in clients {
        let (status, reason, mine) = c.join().unwrap();
        assert_eq!((status, reason.as_deref()), (403, Some("revoked")));
        assert_eq!(mine, 1, "the client's own row is in the log");
    }
    let log = KeyStore::open(&s.db).unwrap().audit_log().unwrap();
    let rows = &log[before..];
    assert_eq!(rows.len(), 64);
    for id in 1..=64 {
        let of = rows.iter().filter(|e| e.key_id == Some(id)).count();
        assert_eq!(of, 1, "key {id}");
    }
    assert!(
        rows.iter()
            .all(|e| e.event == "refused-revoked" && e.detail == "a request with a revoked key")
    );
    assert!(
        log.windows(2).all(|w| w[0].at <= w[1].at),
        "in commit order"
    );
}

/// Not a test: how long 500 refusals take, one after another and 50 at a
/// time (`cargo test -p dpsgd-serve --release -- --ignored --nocapture
/// refusal_timing`; the database is in the system's temporary directory,
/// which must be on a disk for the syncs to cost what they do).
#[test]
#[ignore = "a measurement"]
fn refusal_timing() {
    let (s, keys) = start(
        "timing",
        settings(),
        &[(Release::Full, 10, None), (Release::Full, 1_000_000, None)],
    );
    KeyStore::open(&s.db).unwrap().revoke(1, "test").unwrap();
    let started = Instant::now();
    for _ in 0..500 {
        assert_eq!(predict(&s.addr, Some(&keys[0]), 1, 0.5).status, 403);
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (addr, key) = (s.addr.clone(), keys[0].clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    assert_eq!(predict(&addr, Some(&key), 1, 0.5).status, 403);
                }
            })
        })
        .collect();
    // Meanwhile, a client with a good key: its requests' latency.
    let mut good = Vec::new();
    while !clients.iter().all(std::thread::JoinHandle::is_finished) {
        let t = Instant::now();
        assert_eq!(predict(&s.addr, Some(&keys[1]), 1, 0.5).status, 200);
        good.push(t.elapsed());
    }
    for c in clients {
        c.join().unwrap();
    }
    let concurrent = started.elapsed();
    good.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "500 refusals: sequential {:.0} ms ({:.2} ms each); 50 clients x 10: {:.0} ms; a good key meanwhile: {} requests, p50 {:.2} ms, max {:.2} ms",
        ms(sequential),
        ms(sequential) / 500.0,
        ms(concurrent),
        good.len(),
        good.get(good.len() / 2).map_or(0.0, |d| ms(*d)),
        good.last().map_or(0.0, |d| ms(*d)),
    );
}
