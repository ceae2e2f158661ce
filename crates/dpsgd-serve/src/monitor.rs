//! Online monitoring of each key's query stream for the traces attacks
//! leave.
//!
//! Black-box attacks on a served model query it in patterns ordinary
//! clients do not:
//!
//! * **zeroth-order gradient estimation** (black-box model inversion, as
//!   `dpsgd_audit::inversion::ZerothOrder` does): pairs `x ± δu` around a
//!   point, step after step — many queries within a small distance of an
//!   earlier one;
//! * **boundary probing** (label-only membership inference): noisy copies
//!   of a record, looking for where the label flips — near queries whose
//!   labels differ;
//! * **off-distribution queries**: inputs outside the public input range
//!   of the model (its preprocessing maps features into [−1, 1]);
//! * **bursts**: far more records per second than the key's rate would
//!   suggest a person sends.
//!
//! Each is measured per key over its last [`MonitorSettings::window`]
//! records, from the queries alone (no training data: it costs no
//! privacy). A key is flagged once one of them passes its threshold; the
//! [`Verdict`] says which and with what evidence. The thresholds are
//! settings; `docs/serving.md` gives the detection and false-positive
//! rates measured with the defaults.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Thresholds of the [`Monitor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorSettings {
    /// Records remembered per key.
    pub window: usize,
    /// Two inputs are *near* when their root-mean-square difference per
    /// feature is at most this (features in [−1, 1] or [0, 1]). The
    /// default, 0.06, catches ZerothOrder's `x ± μu` (μ = 0.05, Gaussian
    /// `u`: RMS ≈ μ from `x`) and the label-only attack's smallest noise
    /// (σ = 0.05), and sits below the distance between distinct digits or
    /// MNIST images.
    pub near_rms: f64,
    /// Flag when this many of the window's records were near an earlier
    /// one…
    pub near_count: usize,
    /// …and they are at least this share of the window.
    pub near_share: f64,
    /// Flag when this many near pairs had different predicted labels
    /// (boundary probing).
    pub label_flips: usize,
    /// A value is out of range beyond `[−1 − m, 1 + m]` for this margin `m`.
    pub range_margin: f64,
    /// Flag when this many of the window's records had a value out of range.
    pub out_of_range: usize,
    /// Flag when a key sends more than this many records within one second.
    pub burst_records: usize,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            window: 256,
            near_rms: 0.06,
            near_count: 24,
            near_share: 0.25,
            label_flips: 8,
            range_margin: 0.5,
            out_of_range: 16,
            burst_records: 2000,
        }
    }
}

/// What the monitor concluded about one key after a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether a threshold was passed (now or before).
    pub flagged: bool,
    /// The signals that passed, with their evidence (empty if none).
    pub evidence: Vec<String>,
    /// Near-duplicate records in the window.
    pub near: usize,
    /// Near pairs with different labels in the window.
    pub flips: usize,
    /// Records with a value out of range in the window.
    pub out_of_range: usize,
}

/// One record of a key's window.
#[derive(Debug, Clone)]
struct Seen {
    input: Vec<f32>,
    label: usize,
    near: bool,
    flip: bool,
    out_of_range: bool,
}

/// One key's stream.
#[derive(Debug, Default)]
struct Stream {
    window: VecDeque<Seen>,
    /// Arrival times of the last second's records (one entry per batch:
    /// time and size).
    recent: VecDeque<(Instant, usize)>,
    flagged: bool,
}

/// Per-key monitoring of query streams.
#[derive(Debug, Default)]
pub struct Monitor {
    settings: MonitorSettings,
    streams: HashMap<i64, Stream>,
}

/// Root-mean-square difference of two equally long inputs.
fn rms(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (s / a.len().max(1) as f64).sqrt()
}

impl Monitor {
    /// A monitor with `settings`.
    pub fn new(settings: MonitorSettings) -> Self {
        Self {
            settings,
            streams: HashMap::new(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> MonitorSettings {
        self.settings
    }

    /// Records `key`'s batch of `inputs` (`dim` values each) with the
    /// labels the model predicts for them, and judges the key.
    pub fn observe(&mut self, key: i64, inputs: &[f32], dim: usize, labels: &[usize]) -> Verdict {
        let s = self.settings;
        let stream = self.streams.entry(key).or_default();
        let now = Instant::now();
        let records = inputs.len() / dim.max(1);
        stream.recent.push_back((now, records));
        while stream
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t).as_secs_f64() > 1.0)
        {
            stream.recent.pop_front();
        }
        let per_second: usize = stream.recent.iter().map(|(_, n)| n).sum();
        let limit = (1.0 + s.range_margin) as f32;
        for (row, &label) in inputs.chunks(dim.max(1)).zip(labels) {
            let nearest = stream
                .window
                .iter()
                .filter(|seen| seen.input.len() == row.len())
                .map(|seen| (rms(&seen.input, row), seen.label))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let near = nearest.is_some_and(|(d, _)| d <= s.near_rms);
            let flip = near && nearest.is_some_and(|(_, l)| l != label);
            let out_of_range = row.iter().any(|v| !v.is_finite() || v.abs() > limit);
            stream.window.push_back(Seen {
                input: row.to_vec(),
                label,
                near,
                flip,
                out_of_range,
            });
            if stream.window.len() > s.window {
                stream.window.pop_front();
            }
        }
        let near = stream.window.iter().filter(|r| r.near).count();
        let flips = stream.window.iter().filter(|r| r.flip).count();
        let off = stream.window.iter().filter(|r| r.out_of_range).count();
        let len = stream.window.len().max(1);
        let mut evidence = Vec::new();
        if near >= s.near_count && near as f64 / len as f64 >= s.near_share {
            evidence.push(format!(
                "near-duplicates: {near} of the last {len} records within RMS {} of an earlier one (zeroth-order gradient estimation or probing)",
                s.near_rms
            ));
        }
        if flips >= s.label_flips {
            evidence.push(format!(
                "boundary probing: {flips} near-duplicate records of the last {len} changed the predicted label"
            ));
        }
        if off >= s.out_of_range {
            evidence.push(format!(
                "off-distribution: {off} of the last {len} records had values outside [−{limit}, {limit}]"
            ));
        }
        if per_second > s.burst_records {
            evidence.push(format!(
                "burst: {per_second} records within one second (threshold {})",
                s.burst_records
            ));
        }
        stream.flagged |= !evidence.is_empty();
        Verdict {
            flagged: stream.flagged,
            evidence,
            near,
            flips,
            out_of_range: off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn point(rng: &mut ChaCha20Rng, d: usize) -> Vec<f32> {
        (0..d).map(|_| rng.random::<f32>()).collect()
    }

    #[test]
    fn should_flag_zeroth_order_pairs_and_not_distinct_points() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let d = 64;
        let mut m = Monitor::default();
        // Distinct uniform points: RMS distance ≈ √(1/6) ≈ 0.41, never near.
        for _ in 0..400 {
            let x = point(&mut rng, d);
            let v = m.observe(1, &x, d, &[0]);
            assert!(!v.flagged, "{v:?}");
        }
        // Antithetic pairs x ± δu around one point, δ = 5% of the range,
        // u a unit direction (ZerothOrder's): each pair is 2δ/√d = 0.0125
        // RMS apart, and the points drift by one small step per round.
        let mut x = point(&mut rng, d);
        let mut flagged_at = None;
        for q in 0..200 {
            let u: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
            let n = u.iter().map(|v| v * v).sum::<f32>().sqrt();
            let pair: Vec<f32> = [1.0f32, -1.0]
                .iter()
                .flat_map(|s| x.iter().zip(&u).map(move |(a, b)| a + s * 0.05 * b / n))
                .collect();
            if m.observe(2, &pair, d, &[3, 3]).flagged && flagged_at.is_none() {
                flagged_at = Some(q);
            }
            x[q % d] += 0.001;
        }
        // The first pair's second record is near its partner (2δ/√d =
        // 0.0125); every later record is near the pair before it (its
        // centre moved by 0.001), so after k + 1 pairs 1 + 2k records are
        // near: 24 at the 13th pair.
        assert_eq!(flagged_at, Some(12));
    }

    #[test]
    fn should_flag_label_flips_out_of_range_and_bursts() {
        let d = 8;
        let mut m = Monitor::new(MonitorSettings {
            burst_records: 100,
            ..MonitorSettings::default()
        });
        let x = vec![0.5f32; d];
        // Copies of one record, the first labelled 0 and the others 1:
        // each later copy flips against the first (nearest, ties to the
        // oldest), 7 flips after 8 copies.
        for i in 0..8 {
            let v = m.observe(1, &x, d, &[usize::from(i > 0)]);
            assert!(!v.flagged, "{v:?}");
        }
        let v = m.observe(1, &x, d, &[1]);
        assert!(
            v.flagged && v.evidence.iter().any(|e| e.contains("boundary")),
            "{v:?}"
        );
        // Values far outside the public range.
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for i in 0..16 {
            let far: Vec<f32> = (0..d).map(|_| 10.0 + rng.random::<f32>()).collect();
            let v = m.observe(2, &far, d, &[0]);
            assert_eq!(v.flagged, i == 15, "{i}: {v:?}");
        }
        // 101 distinct records within a second.
        let many: Vec<f32> = (0..101 * d).map(|_| rng.random::<f32>()).collect();
        let v = m.observe(3, &many, d, &[0; 101]);
        assert!(v.evidence.iter().any(|e| e.contains("burst")), "{v:?}");
    }
}
