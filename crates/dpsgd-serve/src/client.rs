//! A client of a `dpsgd serve` endpoint, as the project's attacks use it:
//! [`Endpoint`] is a [`ProbabilityOracle`] (and a
//! [`dpsgd_train::audit::DeployedOracle`]) whose queries go over HTTP with
//! one key, so that `dpsgd audit --target http://…` audits a model as it
//! is deployed — its release, budget, rate and monitor included.
//!
//! * Batches are cut to the endpoint's `max_batch` (from `GET
//!   /v1/health`).
//! * A **rate** refusal (429, reason `rate`) is waited out as the
//!   endpoint's `Retry-After` says and the batch sent again, up to
//!   [`ClientSettings::max_wait`] in all; a batch the key's rate never
//!   admits (`batch-over-rate`) is halved and sent again.
//! * A spent **budget** (429, `budget`) and a revoked or unknown key (403)
//!   end the query: [`dpsgd_audit::Error::Refused`], which an audit
//!   reports as the attack refused. Everything else the endpoint or the
//!   network does wrong is [`dpsgd_audit::Error::Query`].
//! * The key is sent only in the `Authorization` header; it is in no
//!   error, log line or `Debug` output of this module.
//!
//! Plain `http://` only: TLS is not built in (reach a remote endpoint
//! through an SSH tunnel or a TLS-terminating proxy on the auditor's
//! machine).

use crate::error::{Result, ServeError};
use dpsgd_audit::hardening::{ProbabilityOracle, Release};
use dpsgd_train::audit::{DeployedModel, DeployedOracle};
use serde::Serialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The largest `max_batch` an endpoint may announce.
pub const MAX_BATCH: usize = 1 << 20;

/// The longest body quoted in an error.
const QUOTED: usize = 200;

/// How an [`Endpoint`] behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientSettings {
    /// The limit of one request, connection included.
    pub timeout: Duration,
    /// The most time spent waiting out rate refusals, over the endpoint's
    /// whole life.
    pub max_wait: Duration,
}

impl Default for ClientSettings {
    /// 60 s a request, 30 minutes of rate waits.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_wait: Duration::from_secs(30 * 60),
        }
    }
}

/// What an endpoint says of its model (`GET /v1/health`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Number of classes.
    pub classes: usize,
    /// Values per input.
    pub input_len: usize,
    /// `[channels, height, width]` of image inputs.
    pub input_shape: Option<[usize; 3]>,
    /// `logreg`, `mlp` or `cnn`.
    pub model: String,
    /// The most inputs one request may carry.
    pub max_batch: usize,
    /// The ε the model claims (`None`: no DP).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// `record` or `user`.
    pub unit: String,
    /// The privacy units of the training set the model was given (its
    /// members), where its card says.
    pub members: Option<usize>,
}

/// What a client has sent and been refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// `POST /v1/predict` requests sent (retries included).
    pub requests: u64,
    /// Records the endpoint answered.
    pub records_answered: u64,
    /// Requests refused (403 or 429), rate refusals waited out included.
    pub refused_requests: u64,
    /// Rate refusals waited out.
    pub rate_waits: u64,
    /// Milliseconds spent waiting them out.
    pub waited_ms: u64,
}

/// An endpoint of `dpsgd serve`, queried with one key.
pub struct Endpoint {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    health: Health,
    release: Option<Release>,
    batch: usize,
    settings: ClientSettings,
    usage: Usage,
}

/// Never the key.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("health", &self.health)
            .field("release", &self.release)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

fn invalid(name: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ServeError {
    ServeError::Invalid {
        name,
        value: value.into(),
        reason: reason.into(),
    }
}

/// `http://host[:port]` without a trailing slash or a path.
fn base_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let Some(rest) = trimmed.strip_prefix("http://") else {
        let reason = if trimmed.starts_with("https://") {
            "TLS is not built in: reach the endpoint through an SSH tunnel or a TLS-terminating proxy on this machine, and give its http:// address"
        } else {
            "expected http://HOST:PORT"
        };
        return Err(invalid("target", url, reason));
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace)
    {
        return Err(invalid(
            "target",
            url,
            "expected http://HOST:PORT, with no path, query or credentials",
        ));
    }
    Ok(trimmed.to_owned())
}

/// Whether `base` (`http://host[:port]`) names this machine.
fn is_loopback(base: &str) -> bool {
    let host = base.trim_start_matches("http://");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A key as `keys add` prints it: `dpk_<id>_<64 hex digits>`.
fn check_key(key: &str) -> Result<()> {
    let ok = key
        .strip_prefix("dpk_")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(id, secret)| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && secret.len() == 64
                && secret.bytes().all(|b| b.is_ascii_hexdigit())
        });
    if ok {
        Ok(())
    } else {
        // Never the key itself.
        Err(invalid(
            "key",
            "(not shown)",
            "expected a key as `dpsgd serve keys add` prints it: dpk_<id>_<64 hex digits>",
        ))
    }
}

/// `text`, cut to [`QUOTED`] characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A JSON field as a count.
fn count(v: &Value, what: &'static str) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                "health",
                quoted(&v.to_string()),
                format!("{what} is not a count"),
            )
        })
}

impl Health {
    /// Reads `GET /v1/health`'s answer.
    fn parse(v: &Value) -> Result<Self> {
        let model = &v["model"];
        let privacy = &v["privacy"];
        let input_shape = match &model["input_shape"] {
            Value::Null => None,
            shape => {
                let dims: Vec<usize> = shape
                    .as_array()
                    .map(|a| a.iter().map(|d| count(d, "input_shape")).collect())
                    .transpose()?
                    .unwrap_or_default();
                Some(<[usize; 3]>::try_from(dims).map_err(|_| {
                    invalid(
                        "health",
                        quoted(&shape.to_string()),
                        "input_shape is not [c, h, w]",
                    )
                })?)
            }
        };
        let health = Self {
            classes: count(&model["classes"], "classes")?,
            input_len: count(&model["input_len"], "input_len")?,
            input_shape,
            model: model["model"].as_str().unwrap_or("model").to_owned(),
            // An endpoint that does not say takes the server's default.
            max_batch: match &v["max_batch"] {
                Value::Null => 1024,
                n => count(n, "max_batch")?,
            },
            epsilon: privacy["epsilon"].as_f64(),
            delta: privacy["delta"].as_f64().ok_or_else(|| {
                invalid(
                    "health",
                    quoted(&privacy.to_string()),
                    "the privacy report has no δ",
                )
            })?,
            unit: privacy["unit"].as_str().unwrap_or("record").to_owned(),
            members: match &privacy["members"] {
                Value::Null => None,
                n => Some(count(n, "members")?),
            },
        };
        if health.classes == 0 || health.input_len == 0 || health.max_batch == 0 {
            return Err(invalid(
                "health",
                quoted(&v.to_string()),
                "a model of no class, no input or no batch",
            ));
        }
        if health.max_batch > MAX_BATCH
            || health.classes > MAX_BATCH
            || health.input_len.checked_mul(health.max_batch).is_none()
        {
            return Err(invalid(
                "health",
                quoted(&v.to_string()),
                format!("a batch, a class count or an input larger than {MAX_BATCH}"),
            ));
        }
        Ok(health)
    }
}

/// How one request ended.
enum Outcome {
    /// The released vectors, and the release's name.
    Answered(Vec<Vec<f64>>, Release),
    /// Wait this long and send it again.
    RetryAfter(Duration),
    /// The batch never fits the key's rate: send fewer.
    BatchOverRate,
    /// Refused for good (a budget, a revoked or unknown key).
    Refused(String),
}

impl Endpoint {
    /// Connects to the endpoint at `url` (`http://HOST:PORT`) with `key`
    /// and reads what it says of its model.
    ///
    /// # Errors
    ///
    /// [`ServeError::Invalid`] for a URL that is not `http://HOST:PORT`, a
    /// key not of the form `keys add` prints, or an answer that is not an
    /// endpoint's health; [`ServeError::Http`] when it cannot be reached.
    pub fn connect(url: &str, key: &str, settings: ClientSettings) -> Result<Self> {
        let base = base_url(url)?;
        check_key(key.trim())?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(settings.timeout))
            // No proxy from the environment: the key would go, in clear,
            // to whatever HTTP_PROXY names.
            .proxy(None)
            .build()
            .into();
        let health_url = format!("{base}/v1/health");
        let mut response = agent
            .get(&health_url)
            .call()
            .map_err(|source| ServeError::Http {
                url: health_url.clone(),
                source: Box::new(source),
            })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(invalid(
                "target",
                base,
                format!("GET /v1/health answered HTTP {status}: not a dpsgd serve endpoint?"),
            ));
        }
        let body: Value = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_json()
            .map_err(|source| ServeError::Http {
                url: health_url.clone(),
                source: Box::new(source),
            })?;
        let health = Health::parse(&body)?;
        Ok(Self {
            agent,
            authorization: format!("Bearer {}", key.trim()),
            batch: health.max_batch,
            health,
            base,
            release: None,
            settings,
            usage: Usage::default(),
        })
    }

    /// What the endpoint says of its model.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// What this client has sent and been refused so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The endpoint's address.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The model as the audit describes a deployed one.
    pub fn deployed_model(&self) -> DeployedModel {
        DeployedModel {
            location: self.base.clone(),
            classes: self.health.classes,
            input_len: self.health.input_len,
            input_shape: self.health.input_shape,
            epsilon: self.health.epsilon,
            delta: self.health.delta,
            unit: self.health.unit.clone(),
            members: self.health.members,
        }
    }

    /// Whether the endpoint is on this machine (a key sent in clear to
    /// another host can be read on the way).
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.base)
    }

    /// Sends one batch (`rows.len() / dim` inputs).
    fn send(&mut self, rows: &[f32], dim: usize) -> std::result::Result<Outcome, String> {
        let inputs: Vec<&[f32]> = rows.chunks(dim).collect();
        let url = format!("{}/v1/predict", self.base);
        self.usage.requests += 1;
        let mut response = self
            .agent
            .post(&url)
            .header("Authorization", &self.authorization)
            .send_json(json!({ "inputs": inputs }))
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Room for every answer of a batch: up to 64 bytes a value.
        let limit = (rows.len() / dim)
            .saturating_mul(self.health.classes.saturating_add(1))
            .saturating_mul(64)
            .saturating_add(1 << 16) as u64;
        let body: Value = match response.body_mut().with_config().limit(limit).read_json() {
            Ok(v) => v,
            // A refusal's body is only its explanation.
            Err(_) if status != 200 => Value::Null,
            Err(e) => return Err(format!("{url}: reading the answer: {e}")),
        };
        let message = || quoted(body["error"].as_str().unwrap_or(""));
        match status {
            200 => {
                let release = body["release"]
                    .as_str()
                    .and_then(|r| r.parse::<Release>().ok())
                    .ok_or_else(|| format!("{url} answered without a release it names"))?;
                let outputs = body["outputs"]
                    .as_array()
                    .ok_or_else(|| format!("{url} answered without outputs"))?
                    .iter()
                    .map(|row| {
                        row.as_array()
                            .and_then(|r| r.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
                            .ok_or_else(|| format!("{url} answered an output that is not numbers"))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Outcome::Answered(outputs, release))
            }
            429 | 403 => {
                self.usage.refused_requests += 1;
                let wait = |s: Option<u64>| Duration::from_secs(s.unwrap_or(1).clamp(1, 3600));
                Ok(match (status, body["reason"].as_str()) {
                    (429, Some("rate")) => Outcome::RetryAfter(wait(retry_after)),
                    (429, Some("batch-over-rate")) => Outcome::BatchOverRate,
                    // A server that names no reason but says when to come
                    // back.
                    (429, None) if retry_after.is_some() => Outcome::RetryAfter(wait(retry_after)),
                    _ => Outcome::Refused(format!("HTTP {status}: {}", message())),
                })
            }
            _ => Err(format!("{url} answered HTTP {status}: {}", message())),
        }
    }

    /// The released vectors of `n = rows.len() / dim` inputs, in batches
    /// the endpoint admits.
    fn query(&mut self, rows: &[f32], dim: usize) -> dpsgd_audit::Result<Vec<Vec<f64>>> {
        use dpsgd_audit::Error;
        if dim != self.health.input_len || !rows.len().is_multiple_of(dim) {
            return Err(Error::Query {
                reason: format!(
                    "the endpoint takes inputs of {} values, not {} values in rows of {dim}",
                    self.health.input_len,
                    rows.len()
                ),
            });
        }
        let n = rows.len() / dim;
        let mut answers = Vec::with_capacity(n);
        let mut done = 0;
        while done < n {
            let take = self.batch.clamp(1, n - done);
            let batch = &rows[done * dim..(done + take) * dim];
            match self
                .send(batch, dim)
                .map_err(|reason| Error::Query { reason })?
            {
                Outcome::Answered(outputs, release) => {
                    if outputs.len() != take {
                        return Err(Error::Query {
                            reason: format!(
                                "the endpoint answered {} vectors for {take} inputs",
                                outputs.len()
                            ),
                        });
                    }
                    if let Some(earlier) = self.release.filter(|r| *r != release) {
                        return Err(Error::Query {
                            reason: format!(
                                "the endpoint's release changed from {earlier} to {release} while it was audited"
                            ),
                        });
                    }
                    self.usage.records_answered += take as u64;
                    self.release = Some(release);
                    answers.extend(outputs);
                    done += take;
                }
                Outcome::RetryAfter(wait) => {
                    // The limit holds over the endpoint's life, not one call.
                    let waited = Duration::from_millis(self.usage.waited_ms);
                    if waited.saturating_add(wait) > self.settings.max_wait {
                        return Err(Error::Refused {
                            reason: format!(
                                "the key's rate: {} s more of waiting would pass the client's limit of {} s in all",
                                wait.as_secs(),
                                self.settings.max_wait.as_secs()
                            ),
                        });
                    }
                    let started = Instant::now();
                    std::thread::sleep(wait);
                    self.usage.rate_waits += 1;
                    self.usage.waited_ms = self
                        .usage
                        .waited_ms
                        .saturating_add(started.elapsed().as_millis() as u64);
                }
                Outcome::BatchOverRate if self.batch > 1 => self.batch /= 2,
                Outcome::BatchOverRate => {
                    return Err(Error::Refused {
                        reason: "the key's rate admits no batch at all".into(),
                    });
                }
                Outcome::Refused(reason) => return Err(Error::Refused { reason }),
            }
        }
        Ok(answers)
    }
}

impl ProbabilityOracle for Endpoint {
    fn classes(&self) -> usize {
        self.health.classes
    }

    /// The vectors the endpoint releases to this key.
    fn probabilities(&mut self, inputs: &[f32], dim: usize) -> dpsgd_audit::Result<Vec<Vec<f64>>> {
        self.query(inputs, dim)
    }
}

impl DeployedOracle for Endpoint {
    fn release(&self) -> Option<Release> {
        self.release
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_take_only_plain_http_addresses() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(base_url(" http://host ").unwrap(), "http://host");
        for bad in [
            "https://host:443",
            "ftp://host",
            "127.0.0.1:8080",
            "http://",
            "http://host/v1",
            "http://user:pw@host",
            "http://host?x=1",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
        let e = base_url("https://h").unwrap_err().to_string();
        assert!(e.contains("TLS"), "{e}");
    }

    #[test]
    fn should_tell_loopback_hosts_from_others() {
        for here in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1",
            "http://localhost:1",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback(here), "{here}");
        }
        for there in [
            "http://10.0.0.1:80",
            "http://example.org",
            "http://[2001:db8::1]:80",
        ] {
            assert!(!is_loopback(there), "{there}");
        }
    }

    #[test]
    fn should_cut_long_bodies_in_errors() {
        assert_eq!(quoted("short"), "short");
        let long = "é".repeat(500);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), QUOTED + 1);
        assert!(q.ends_with('…'));
    }

    #[test]
    fn should_check_a_keys_form_without_showing_it() {
        let key = format!("dpk_12_{}", "ab".repeat(32));
        assert!(check_key(&key).is_ok());
        for bad in [
            "dpk_12_abc".to_owned(),
            "dpk__".to_owned() + &"a".repeat(64),
            "xpk_1_".to_owned() + &"a".repeat(64),
            format!("dpk_1_{}", "g".repeat(64)),
        ] {
            let e = check_key(&bad).unwrap_err().to_string();
            assert!(!e.contains(&bad), "the key leaked: {e}");
        }
    }

    #[test]
    fn should_read_an_endpoints_health() {
        let v = json!({
            "status": "ok",
            "model": {"classes": 10, "input_len": 784, "input_shape": [1, 28, 28], "model": "mlp"},
            "max_batch": 256,
            "privacy": {"epsilon": 3.0, "delta": 1e-5, "unit": "record", "members": 60000},
        });
        let h = Health::parse(&v).unwrap();
        assert_eq!(
            h,
            Health {
                classes: 10,
                input_len: 784,
                input_shape: Some([1, 28, 28]),
                model: "mlp".into(),
                max_batch: 256,
                epsilon: Some(3.0),
                delta: 1e-5,
                unit: "record".into(),
                members: Some(60000),
            }
        );
        // No DP, no shape, an older card without the size.
        let v = json!({
            "model": {"classes": 2, "input_len": 5, "input_shape": null, "model": "logreg"},
            "privacy": {"epsilon": null, "delta": 1e-5, "unit": "record"},
        });
        let h = Health::parse(&v).unwrap();
        assert_eq!(
            (h.epsilon, h.input_shape, h.members, h.max_batch),
            (None, None, None, 1024)
        );
        for bad in [
            json!({"model": {"classes": 0, "input_len": 5}, "privacy": {"delta": 1e-5}}),
            json!({"model": {"classes": 2, "input_len": -1}, "privacy": {"delta": 1e-5}}),
            json!({"model": {"classes": 2, "input_len": 5, "input_shape": [1, 2]}, "privacy": {"delta": 1e-5}}),
            json!({"model": {"classes": 2, "input_len": 5}, "privacy": {}}),
        ] {
            assert!(Health::parse(&bad).is_err(), "{bad}");
        }
    }
}
