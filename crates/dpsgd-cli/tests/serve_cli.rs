//! `dpsgd serve` over loopback (issue 36): the HTTP contract, budgets and
//! revocations that survive `kill -9`, and the project's own black-box
//! attacks as clients, flagged and revoked by the monitor; benign clients
//! are not.

mod common;

use common::{dpsgd, ok, temp_dir};
use dpsgd::audit::hardening::ProbabilityOracle;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A saved digits model (DP, ε = 3, seeded) in `dir`.
fn saved_model(dir: &Path) -> PathBuf {
    let model = dir.join("model.bin");
    ok(&dpsgd(&[
        "train",
        "--save-model",
        model.to_str().unwrap(),
        "--epochs",
        "5",
        "--seed",
        "1",
        "--quiet",
    ]));
    model
}

/// `dpsgd serve keys add`: the key, alone on standard output.
fn add_key(db: &Path, budget: u64, release: &str, rate: Option<&str>) -> String {
    let budget = budget.to_string();
    let mut args = vec![
        "serve",
        "keys",
        "add",
        "--db",
        db.to_str().unwrap(),
        "--budget",
        &budget,
        "--release",
        release,
    ];
    if let Some(r) = rate {
        args.extend(["--rate", r]);
    }
    let out = ok(&dpsgd(&args));
    let key = out.trim_end_matches('\n');
    assert_eq!(out.lines().count(), 1, "the key alone: {out:?}");
    let (id, secret) = key
        .strip_prefix("dpk_")
        .and_then(|r| r.split_once('_'))
        .expect("dpk_<id>_<secret>");
    assert!(id.parse::<i64>().is_ok() && secret.len() == 64, "{key}");
    key.to_owned()
}

fn list_keys(db: &Path) -> Vec<Value> {
    let out = ok(&dpsgd(&[
        "serve",
        "keys",
        "list",
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]));
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `dpsgd serve keys revoke`.
fn revoke_key(db: &Path, id: i64) {
    let id = id.to_string();
    ok(&dpsgd(&[
        "serve",
        "keys",
        "revoke",
        "--db",
        db.to_str().unwrap(),
        &id,
    ]));
}

/// The `outputs` of a predict answer, one vector per input.
fn outputs(v: &Value) -> Vec<Vec<f64>> {
    v["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            o.as_array()
                .expect("a vector")
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// A running server, its address and what it has written on standard
/// error after the line naming it.
struct Served {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &Path, db: &Path, extra: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args([
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start dpsgd serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("a line").expect("readable");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line}"))
        .to_owned();
    // Keep draining standard error so the server never blocks on it.
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let kept = stderr.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Served {
        child,
        addr,
        stderr,
    }
}

/// A file holding the operator's token for `--metrics-token-file`.
const OPERATOR_TOKEN: &str = "the-operators-token-0123456789";

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("metrics.token");
    std::fs::write(&path, format!("{OPERATOR_TOKEN}\n")).unwrap();
    path
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs `inputs` with `key`; the status and the JSON answer.
fn predict(addr: &str, key: Option<&str>, inputs: &[Vec<f32>]) -> (u16, Value) {
    let mut req = agent().post(format!("http://{addr}/v1/predict"));
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req
        .send_json(json!({ "inputs": inputs }))
        .expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn get(addr: &str, path: &str) -> (u16, String) {
    get_with(addr, path, None)
}

/// GETs `path` with `Authorization: Bearer TOKEN`.
fn get_with(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent().get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("an answer");
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

/// The digits as the model takes them (pixels / 16), row by row.
fn digits_rows() -> Vec<Vec<f32>> {
    let d = dpsgd::data::digits();
    (0..d.len())
        .map(|i| d.example(i).iter().map(|v| v / 16.0).collect())
        .collect()
}

#[test]
fn should_serve_the_contract_over_loopback() {
    let dir = temp_dir("dpsgd-serve", "contract");
    let model = saved_model(&dir);
    let db = dir.join("keys.db");
    let top = add_key(&db, 5, "top-3", Some("1000/s"));
    let label = add_key(&db, 100, "label-only", None);
    let token = token_file(&dir);
    let s = serve(
        &model,
        &db,
        &["--metrics-token-file", token.to_str().unwrap()],
    );
    let rows = digits_rows();

    let (status, v) = predict(&s.addr, Some(&top), &rows[..2]);
    assert_eq!(status, 200, "{v}");
    let outputs = outputs(&v);
    assert_eq!(outputs.len(), 2);
    for o in outputs {
        assert_eq!(o.len(), 10);
        assert_eq!(o.iter().filter(|&&p| p > 0.0).count(), 3, "top-3: {o:?}");
    }
    assert_eq!(v["release"], "top-3");
    assert!((v["epsilon"].as_f64().unwrap() - 3.0).abs() < 1e-3, "{v}");
    assert_eq!(v["privacy"]["unit"], "record");
    assert_eq!(v["remaining"], 3);
    // A batch past the budget is refused whole and charges nothing.
    let (status, v) = predict(&s.addr, Some(&top), &rows[..4]);
    assert_eq!(status, 429, "{v}");
    assert_eq!(list_keys(&db)[0]["used"], 2);
    let (status, v) = predict(&s.addr, Some(&top), &rows[..3]);
    assert_eq!((status, v["remaining"].as_u64()), (200, Some(0)));
    // Label only: one-hot outputs and the labels.
    let (status, v) = predict(&s.addr, Some(&label), &rows[..2]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["release"], "label-only");
    assert_eq!(v["labels"].as_array().unwrap().len(), 2);
    for o in v["outputs"].as_array().unwrap() {
        let ones = o
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x.as_f64() == Some(1.0))
            .count();
        assert_eq!(ones, 1, "{o}");
    }
    // Unknown, missing and malformed keys; a wrong input length.
    // The last hex digit changed (to another digit, whatever it was).
    let last = if label.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &label[..label.len() - 1]);
    for (key, reason) in [
        (Some(forged.as_str()), "unknown-key"),
        (Some("dpk_1_x"), "unknown-key"),
        (None, "no-key"),
    ] {
        let (status, v) = predict(&s.addr, key, &rows[..1]);
        assert_eq!(
            (status, v["reason"].as_str()),
            (403, Some(reason)),
            "{key:?}"
        );
    }
    assert_eq!(predict(&s.addr, Some(&label), &[vec![0.5; 63]]).0, 400);
    assert_eq!(predict(&s.addr, Some(&label), &[]).0, 400);
    // Revoked from the command line while the server runs: 403.
    revoke_key(&db, 2);
    let (status, v) = predict(&s.addr, Some(&label), &rows[..1]);
    assert_eq!((status, v["reason"].as_str()), (403, Some("revoked")));
    // Health needs no key; metrics need the operator's token.
    let (status, health) = get(&s.addr, "/v1/health");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["model"]["classes"], 10);
    assert_eq!(health["model"]["input_len"], 64);
    for token in [None, Some(top.as_str())] {
        let (status, metrics) = get_with(&s.addr, "/v1/metrics", token);
        assert_eq!(status, 401, "{metrics}");
        assert!(!metrics.contains("dpsgd_flags_total"), "{metrics}");
    }
    let (status, metrics) = get_with(&s.addr, "/v1/metrics", Some(OPERATOR_TOKEN));
    assert_eq!(status, 200);
    for line in [
        "dpsgd_records_total 7",
        "dpsgd_refusals_total{reason=\"budget\"} 1",
        "dpsgd_flags_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    // The list: by id, used, budget, revoked, flagged; never a secret.
    let list = list_keys(&db);
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["used"].as_u64(), list[0]["budget"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(
        (list[1]["revoked"].as_bool(), list[1]["flagged"].as_bool()),
        (Some(true), Some(false))
    );
    let text = serde_json::to_string(&list).unwrap();
    for key in [&top, &label] {
        assert!(!text.contains(key.rsplit('_').next().unwrap()));
    }
}

#[test]
fn should_hold_each_key_to_its_rate_and_refuse_a_missing_database() {
    let dir = temp_dir("dpsgd-serve", "rate");
    let model = saved_model(&dir);
    let db = dir.join("keys.db");
    let slow = add_key(&db, 1000, "full", Some("2/s"));
    let s = serve(&model, &db, &[]);
    let rows = digits_rows();
    // One second's worth (2 records), then nothing until it refills (the
    // answer says when to come back); a batch larger than a second's worth
    // never fits (and pays its one record of the rate); the scheme's case
    // does not matter.
    assert_eq!(predict(&s.addr, Some(&slow), &rows[..2]).0, 200);
    let mut resp = agent()
        .post(format!("http://{}/v1/predict", s.addr))
        .header("Authorization", &format!("Bearer {slow}"))
        .send_json(json!({ "inputs": &rows[..1] }))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(retry.as_deref(), Some("1"));
    let v: Value = resp.body_mut().read_json().unwrap();
    assert_eq!(v["reason"], "rate");
    std::thread::sleep(Duration::from_millis(1100));
    let (status, v) = predict(&s.addr, Some(&slow), &rows[..3]);
    assert_eq!(
        (status, v["reason"].as_str()),
        (429, Some("batch-over-rate"))
    );
    assert!(v["error"].as_str().unwrap().contains("never fits"), "{v}");
    std::thread::sleep(Duration::from_millis(600));
    let mut resp = agent()
        .post(format!("http://{}/v1/predict", s.addr))
        .header("Authorization", &format!("bearer {slow}"))
        .send_json(json!({ "inputs": &rows[..1] }))
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{:?}",
        resp.body_mut().read_to_string()
    );
    assert_eq!(list_keys(&db)[0]["used"], 3, "refusals charge nothing");
    // Serving needs a key database that exists (a typo would serve nobody).
    let out = dpsgd(&[
        "serve",
        "--model",
        model.to_str().unwrap(),
        "--db",
        dir.join("typo.db").to_str().unwrap(),
    ]);
    common::assert_usage_error(&out, &["--db", "typo.db"]);
    assert!(!dir.join("typo.db").exists());
}

/// Waits up to 5 s for a line of `s`'s standard error holding every one
/// of `words`.
fn wait_for_stderr(s: &Served, words: &[&str]) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = s
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find(|l| words.iter().all(|w| l.contains(w)))
        {
            return line.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no line with {words:?} in {:?}",
            s.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What bounds a server: --max-batch at most `client::MAX_BATCH`, an
/// operator's token worth the name, a release no wider than the model
/// (refused by `keys add --model`, answered as the model can and said so
/// by `serve` otherwise), and SIGTERM with a request half sent: the
/// server exits by --shutdown-timeout.
#[cfg(unix)]
#[test]
fn should_bound_what_it_serves_and_exit_by_its_deadline_on_sigterm() {
    use std::io::Write;
    let dir = temp_dir("dpsgd-serve", "bounds");
    let db = dir.join("keys.db");
    let out = dpsgd(&[
        "serve",
        "--model",
        "model.bin",
        "--db",
        "keys.db",
        "--max-batch",
        "1048577",
    ]);
    common::assert_usage_error(&out, &["--max-batch", "1048576"]);
    let model = saved_model(&dir);
    let (m, d) = (model.to_str().unwrap(), db.to_str().unwrap());
    let out = dpsgd(&[
        "serve",
        "keys",
        "add",
        "--db",
        d,
        "--budget",
        "10",
        "--release",
        "top-20",
        "--model",
        m,
    ]);
    common::assert_usage_error(&out, &["--release", "top-20", "10 classes"]);
    assert!(!db.exists(), "no key made");
    let full = add_key(&db, 1000, "full", None);
    // Made without --model: served as the model can, with a warning.
    let wide = add_key(&db, 1000, "top-20", None);
    let short = dir.join("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    let out = dpsgd(&[
        "serve",
        "--model",
        m,
        "--db",
        d,
        "--metrics-token-file",
        short.to_str().unwrap(),
    ]);
    common::assert_usage_error(&out, &["--metrics-token-file"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("abc"));

    let mut s = serve(&model, &db, &["--shutdown-timeout", "1"]);
    wait_for_stderr(&s, &["warning", "key 2", "top-20", "top-10"]);
    let rows = digits_rows();
    let (status, v) = predict(&s.addr, Some(&wide), &rows[..1]);
    assert_eq!(
        (status, v["release"].as_str()),
        (200, Some("top-10")),
        "{v}"
    );
    // Metrics without --metrics-token-file: nobody's.
    let (status, text) = get_with(&s.addr, "/v1/metrics", Some(OPERATOR_TOKEN));
    assert_eq!(status, 403);
    assert!(!text.contains("dpsgd_flags_total"), "{text}");

    // A request whose body stops half way, then SIGTERM.
    let mut stream = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        stream,
        "POST /v1/predict HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {full}\r\nContent-Length: 1000\r\n\r\n{{\"inputs\": [[0.5,",
        s.addr
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_millis(900));
    wait_for_stderr(&s, &["stopped without them"]);
    drop(stream);
}

#[test]
fn should_keep_budgets_and_revocations_across_kill_9() {
    let dir = temp_dir("dpsgd-serve", "kill9");
    let model = saved_model(&dir);
    let db = dir.join("keys.db");
    let a = add_key(&db, 10, "full", None);
    let b = add_key(&db, 10, "full", None);
    let rows = digits_rows();
    {
        let s = serve(&model, &db, &[]);
        assert_eq!(predict(&s.addr, Some(&a), &rows[..6]).0, 200);
        revoke_key(&db, 2);
        // Dropping `s` kills the process with SIGKILL: no clean shutdown.
    }
    let s = serve(&model, &db, &[]);
    let (status, v) = predict(&s.addr, Some(&a), &rows[..4]);
    assert_eq!((status, v["remaining"].as_u64()), (200, Some(0)), "{v}");
    assert_eq!(predict(&s.addr, Some(&a), &rows[..1]).0, 429);
    assert_eq!(predict(&s.addr, Some(&b), &rows[..1]).0, 403);
}

/// The served model as a [`ProbabilityOracle`] over HTTP, for the
/// project's black-box attacks.
struct Http {
    addr: String,
    key: String,
    queries: u64,
}

impl ProbabilityOracle for Http {
    fn classes(&self) -> usize {
        10
    }

    fn probabilities(&mut self, inputs: &[f32], dim: usize) -> dpsgd::audit::Result<Vec<Vec<f64>>> {
        let rows: Vec<Vec<f32>> = inputs.chunks(dim).map(<[f32]>::to_vec).collect();
        self.queries += rows.len() as u64;
        let (status, v) = predict(&self.addr, Some(&self.key), &rows);
        if status != 200 {
            return Err(dpsgd::audit::Error::Query {
                reason: format!("HTTP {status}: {v}"),
            });
        }
        Ok(outputs(&v))
    }
}

#[test]
fn should_revoke_the_projects_black_box_attacks_within_their_first_batch() {
    use dpsgd::audit::inversion::{InversionConfig, ZerothOrder, invert};
    use dpsgd::audit::label_only::{LabelOnlyConfig, label_only_scores};
    let dir = temp_dir("dpsgd-serve", "attacks");
    let model = saved_model(&dir);
    let db = dir.join("keys.db");
    let inverter = add_key(&db, 1_000_000, "full", None);
    let prober = add_key(&db, 1_000_000, "full", None);
    let s = serve(&model, &db, &["--auto-revoke"]);

    // Black-box inversion (ZerothOrder: 1 + 2·16 queries per estimate).
    let mut http = Http {
        addr: s.addr.clone(),
        key: inverter,
        queries: 0,
    };
    let mut zo = ZerothOrder::new(&mut http, 64, 16, 0.05, 1).unwrap();
    let err = invert(&mut zo, &[3], &InversionConfig::default()).unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let http = zo.into_inner();
    assert_eq!(http.queries, 33, "revoked on its first gradient estimate");

    // The label-only attack (41 noisy queries per record, 512 per call).
    let rows = digits_rows();
    let flat: Vec<f32> = rows[..24].concat();
    let labels = dpsgd::data::digits().labels()[..24]
        .iter()
        .map(|&l| l as usize)
        .collect::<Vec<_>>();
    // The label-only attack reads labels: the argmax of what the key gets.
    let mut http = Http {
        addr: s.addr.clone(),
        key: prober,
        queries: 0,
    };
    let mut calls = 0;
    let mut oracle = |inputs: &[f32], dim: usize| {
        calls += 1;
        let probs = http.probabilities(inputs, dim)?;
        Ok(probs
            .iter()
            .map(|o| (0..o.len()).fold(0, |b, i| if o[i] > o[b] { i } else { b }))
            .collect())
    };
    let err = label_only_scores(&mut oracle, &flat, 64, &labels, &LabelOnlyConfig::default());
    assert!(err.is_err(), "the prober is cut off");
    assert_eq!(calls, 1, "revoked on its first call of 512 queries");
    let list = list_keys(&db);
    assert!(
        list.iter()
            .all(|k| k["revoked"] == true && k["flagged"] == true),
        "{list:?}"
    );
}

#[test]
fn should_not_flag_benign_clients_querying_the_data_in_random_order() {
    let dir = temp_dir("dpsgd-serve", "benign");
    let model = saved_model(&dir);
    let db = dir.join("keys.db");
    let keys: Vec<String> = (0..8)
        .map(|_| add_key(&db, 1_000_000, "top-1", None))
        .collect();
    let s = serve(&model, &db, &["--auto-revoke"]);
    // All 1 797 digits, shuffled, dealt to 8 keys (≈ 225 each, close to the
    // monitor's 256-record window), sent one to eight records at a time.
    let mut rows = digits_rows();
    rows.shuffle(&mut rand_chacha::ChaCha20Rng::seed_from_u64(3));
    for (i, chunk) in rows.chunks(225).enumerate() {
        let key = &keys[i % keys.len()];
        for batch in chunk.chunks(1 + i % 8) {
            let (status, v) = predict(&s.addr, Some(key), batch);
            assert_eq!(status, 200, "key {i}: {v}");
        }
    }
    let flagged = list_keys(&db)
        .iter()
        .filter(|k| k["flagged"] == true)
        .count();
    assert_eq!(flagged, 0, "benign keys flagged");
}

/// `dpsgd audit --target` with the key in `key_file`, and `extra` flags;
/// the command's output.
fn audit_endpoint(addr: &str, key_file: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let target = format!("http://{addr}");
    let mut args = vec![
        "audit",
        "--target",
        &target,
        "--key-file",
        key_file.to_str().unwrap(),
        "--seed",
        "1",
        "--shadow-models",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--report",
        "-",
        "--quiet",
    ];
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(&args)
        .env_remove("DPSGD_API_KEY")
        .output()
        .expect("run dpsgd audit")
}

/// The attacks of an audit report, by name: (AUC, TPR@1%, TPR@0.1%).
fn attack_figures(report: &Value) -> std::collections::BTreeMap<String, [f64; 3]> {
    report["attacks"]
        .as_array()
        .expect("attacks")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                [
                    a["auc"].as_f64().unwrap(),
                    a["tpr_at_fpr_0_01"].as_f64().unwrap(),
                    a["tpr_at_fpr_0_001"].as_f64().unwrap(),
                ],
            )
        })
        .collect()
}

/// Issue 36, item 4: the audit's attacks as clients of a live endpoint.
/// Against the served model they measure what the local audit of the same
/// run measures (the same model, the same shadows: the same figures);
/// what the endpoint refuses is reported refused; a budget that cannot
/// cover the population, data the model was not trained on and flags
/// that apply only to a trained target are refused.
#[test]
fn should_audit_a_served_model_as_the_local_audit_does() {
    let dir = temp_dir("serve-cli", "audit-target");
    let model = saved_model(&dir);
    let db = dir.join("keys.db");
    let key_file = |name: &str, key: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{key}\n")).unwrap();
        p
    };
    let full = key_file("full.key", &add_key(&db, 1_000_000, "full", None));
    let server = serve(&model, &db, &[]);
    // The shadows train through this command's recipe: the training
    // run's (its 5 epochs).
    let attacks = [
        "--attacks",
        "loss,entropy,lira,rmia,shadow",
        "--epochs",
        "5",
    ];
    let out = audit_endpoint(&server.addr, &full, &dir.join("remote"), &attacks);
    let remote: Value = serde_json::from_str(&ok(&out)).unwrap();
    // The key is in no output.
    let secret = std::fs::read_to_string(&full).unwrap();
    let written = std::fs::read_to_string(dir.join("remote").join("audit.json")).unwrap();
    for text in [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        written,
    ] {
        assert!(!text.contains(secret.trim()), "the key leaked");
    }
    // The same run audited locally: `train`'s split (test fraction 0.2),
    // seed and epochs, so the same target and the same shadows.
    let local = ok(&dpsgd(&[
        "audit",
        "--epochs",
        "5",
        "--seed",
        "1",
        "--test-fraction",
        "0.2",
        "--shadow-models",
        "4",
        "--attacks",
        "loss,entropy,lira,rmia,shadow",
        "--out",
        dir.join("local").to_str().unwrap(),
        "--report",
        "-",
        "--quiet",
    ]));
    let local: Value = serde_json::from_str(&local).unwrap();
    let (r, l) = (attack_figures(&remote), attack_figures(&local));
    assert_eq!(
        r.keys().collect::<Vec<_>>(),
        l.keys().collect::<Vec<_>>(),
        "the same attacks"
    );
    for (name, figures) in &r {
        for (a, b) in figures.iter().zip(&l[name]) {
            // Scores from the released f64 probabilities instead of the
            // logits: equal but for the last bits of a logarithm.
            assert!((a - b).abs() < 1e-9, "{name}: {figures:?} vs {:?}", l[name]);
        }
    }
    assert_eq!(remote["kind"], "endpoint-audit");
    assert_eq!(remote["release"], "full");
    assert_eq!(remote["test_accuracy"], local["test_accuracy"]);
    assert_eq!(remote["train_accuracy"], local["train_accuracy"]);
    assert_eq!(remote["epsilon"], local["epsilon"]);
    assert_eq!(remote["target"]["members"], 1438);
    // The population once (1 797 records in batches of ≤ 1 024), read by
    // every attack.
    assert_eq!(remote["endpoint_usage"]["records_answered"], 1797);
    assert_eq!(remote["endpoint_usage"]["requests"], 2);
    for f in ["audit.json", "roc.svg", "roc-loglog.svg"] {
        assert!(dir.join("remote").join(f).is_file(), "{f}");
    }
    // The HTML report does not read an endpoint's claim as a training
    // report's guarantee: refused, saying why.
    let out = dpsgd(&[
        "report",
        "--from",
        dir.join("remote").to_str().unwrap(),
        "--out",
        dir.join("remote.html").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deployed endpoint"));
    assert!(!dir.join("remote.html").exists());
    drop(server);

    // With --auto-revoke the monitor revokes the label-only attack's key
    // on its first batch of noisy copies: reported refused, the threshold
    // attack (one plain query of the population) measured.
    let probe = key_file("probe.key", &add_key(&db, 1_000_000, "top-3", None));
    let server = serve(&model, &db, &["--auto-revoke"]);
    let out = audit_endpoint(
        &server.addr,
        &probe,
        &dir.join("probe"),
        &["--attacks", "loss,label-only"],
    );
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["release"], "top-3");
    assert_eq!(report["refused_attacks"], json!(["label-only"]));
    // Revoked on its first batch: one request refused, after the
    // population's two.
    assert_eq!(report["endpoint_usage"]["refused_requests"], 1, "{report}");
    assert_eq!(report["endpoint_usage"]["requests"], 3, "{report}");
    assert_eq!(attack_figures(&report).keys().collect::<Vec<_>>(), ["loss"]);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("revoked"), "{warnings}");

    // A rate of 400 records a second: batches halved until they fit, and
    // the rest waited out.
    let slow = key_file("slow.key", &add_key(&db, 1_000_000, "full", Some("400/s")));
    let out = audit_endpoint(
        &server.addr,
        &slow,
        &dir.join("slow"),
        &["--attacks", "loss"],
    );
    let report: Value = serde_json::from_str(&ok(&out)).unwrap();
    let usage = &report["endpoint_usage"];
    assert_eq!(usage["records_answered"], 1797);
    let waits = usage["rate_waits"].as_u64().unwrap();
    assert!(waits >= 1, "{report}");
    // 1 024 and 512 refused as over the rate, then 8 batches of ≤ 256,
    // each rate refusal sent again.
    assert_eq!(
        usage["refused_requests"].as_u64().unwrap(),
        2 + waits,
        "{report}"
    );
    assert_eq!(
        usage["requests"].as_u64().unwrap(),
        2 + 8 + waits,
        "{report}"
    );
    assert_eq!(
        attack_figures(&report)["loss"],
        r["loss"],
        "paced, the same answers"
    );

    // A budget that cannot cover the population: the audit fails, saying so.
    let small = key_file("small.key", &add_key(&db, 1000, "full", None));
    let out = audit_endpoint(
        &server.addr,
        &small,
        &dir.join("small"),
        &["--attacks", "loss"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("budget"), "{err}");

    // Data split otherwise than the model was trained on: refused before
    // any attack, naming the count.
    let out = audit_endpoint(
        &server.addr,
        &full,
        &dir.join("split"),
        &["--attacks", "loss", "--test-fraction", "0.5"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("held 1438 records") && err.contains("898 members"),
        "{err}"
    );

    // Flags of a trained target, and a missing key: usage errors.
    for extra in [
        &["--release", "full"][..],
        &["--canaries", "10"],
        &["--save-model", "x.bin"],
        &["--html", "x.html"],
        &["--canary-kind", "ood"],
        // The key file is an input: no output replaces it.
        &["--report", full.to_str().unwrap()],
    ] {
        let out = audit_endpoint(&server.addr, &full, &dir.join("usage"), extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dpsgd"))
        .args(["audit", "--target", &format!("http://{}", server.addr)])
        .env_remove("DPSGD_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DPSGD_API_KEY"));
    let _ = std::fs::remove_dir_all(&dir);
}
