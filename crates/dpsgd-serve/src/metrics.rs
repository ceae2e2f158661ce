//! Counters and a latency histogram in Prometheus's text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    records: AtomicU64,
    flags: AtomicU64,
    revocations: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<([u64; BUCKETS.len()], u64, f64)>,
}

impl Metrics {
    /// A request answered with `status` after `took`.
    pub fn observe(&self, status: u16, took: Duration) {
        if let Ok(mut m) = self.by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
        if let Ok(mut h) = self.latency.lock() {
            let s = took.as_secs_f64();
            for (count, bound) in h.0.iter_mut().zip(BUCKETS) {
                if s <= bound {
                    *count += 1;
                }
            }
            h.1 += 1;
            h.2 += s;
        }
    }

    /// `n` records answered.
    pub fn served(&self, n: usize) {
        self.records.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A request refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        if let Ok(mut m) = self.refusals.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// A key flagged by the monitor.
    pub fn flagged(&self) {
        self.flags.fetch_add(1, Ordering::Relaxed);
    }

    /// A key revoked by the monitor.
    pub fn revoked(&self) {
        self.revocations.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, in Prometheus's text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP dpsgd_records_total Records answered.");
        let _ = writeln!(out, "# TYPE dpsgd_records_total counter");
        let _ = writeln!(
            out,
            "dpsgd_records_total {}",
            self.records.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP dpsgd_requests_total Prediction requests by HTTP status."
        );
        let _ = writeln!(out, "# TYPE dpsgd_requests_total counter");
        if let Ok(m) = self.by_status.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(out, "dpsgd_requests_total{{status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP dpsgd_refusals_total Prediction requests refused, by reason."
        );
        let _ = writeln!(out, "# TYPE dpsgd_refusals_total counter");
        if let Ok(m) = self.refusals.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(out, "dpsgd_refusals_total{{reason=\"{reason}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP dpsgd_flags_total Keys flagged by the monitor.");
        let _ = writeln!(out, "# TYPE dpsgd_flags_total counter");
        let _ = writeln!(
            out,
            "dpsgd_flags_total {}",
            self.flags.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP dpsgd_revocations_total Keys revoked by the monitor."
        );
        let _ = writeln!(out, "# TYPE dpsgd_revocations_total counter");
        let _ = writeln!(
            out,
            "dpsgd_revocations_total {}",
            self.revocations.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP dpsgd_request_seconds Prediction latency.");
        let _ = writeln!(out, "# TYPE dpsgd_request_seconds histogram");
        if let Ok(h) = self.latency.lock() {
            for (count, bound) in h.0.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "dpsgd_request_seconds_bucket{{le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(out, "dpsgd_request_seconds_bucket{{le=\"+Inf\"}} {}", h.1);
            let _ = writeln!(out, "dpsgd_request_seconds_sum {}", h.2);
            let _ = writeln!(out, "dpsgd_request_seconds_count {}", h.1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_render_cumulative_buckets_and_counts() {
        let m = Metrics::default();
        m.observe(200, Duration::from_millis(3));
        m.observe(429, Duration::from_millis(30));
        m.served(5);
        m.refused("budget");
        m.flagged();
        let text = m.render();
        for line in [
            "dpsgd_records_total 5",
            "dpsgd_requests_total{status=\"200\"} 1",
            "dpsgd_requests_total{status=\"429\"} 1",
            "dpsgd_refusals_total{reason=\"budget\"} 1",
            "dpsgd_flags_total 1",
            "dpsgd_request_seconds_bucket{le=\"0.0025\"} 0",
            "dpsgd_request_seconds_bucket{le=\"0.005\"} 1",
            "dpsgd_request_seconds_bucket{le=\"0.05\"} 2",
            "dpsgd_request_seconds_bucket{le=\"+Inf\"} 2",
            "dpsgd_request_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
