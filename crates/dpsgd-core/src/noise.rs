//! Gaussian noise from the library's own CSPRNG.
//!
//! Noise is drawn on the host from ChaCha20 — seeded from the operating
//! system by default — never from burn's `Tensor::random`, whose process-wide
//! generator any `seed()` call makes predictable. Each step takes a fresh
//! 256-bit key from the master generator and fills independent ChaCha
//! *streams* (one per chunk of 64 Ki values) in parallel, so the result is
//! the same for a given seed whatever the number of threads. Normal variates
//! come from a 128-layer ziggurat that reads 64 bits of the stream per
//! attempt (Marsaglia and Tsang 2000), with a lighter loop than
//! `rand_distr`'s f64 ziggurat, which earlier versions used (a seeded run of
//! an earlier version drew other values).
//!
//! # Privacy
//!
//! Floating-point Gaussian sampling is not exactly a Gaussian: the values
//! lie on the ziggurat's grids (of absolute step up to 8.2 · 10⁻¹⁶ before
//! the scaling by σC: every f32 value from 10⁻⁴ to 7 is drawn with its
//! Gaussian probability to within 10⁻⁵ relative; beyond about 10.3, with
//! probability below 10⁻²³, the tail leaves some undrawn), nothing beyond
//! about 12 σC is drawn, and scaling by σC and adding to the gradient sum
//! round in f32. These effects are far below the statistical resolution of
//! training but are not covered by the DP proof, and exact f32 noisy
//! gradients are open to lattice attacks; see docs/limitations.md.

use crate::ziggurat;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

const CHUNK: usize = 1 << 16;

/// The source of DP noise: a ChaCha20 master generator.
///
/// [`prefetch`](Self::prefetch) draws the next step's noise on a background
/// thread while the current step computes; the values are exactly those a
/// direct call would give.
///
/// # Privacy
///
/// A secure (OS-seeded) stream is never continued by anyone but the source
/// that drew it: two optimizers adding the same noise to two models would
/// let whoever sees both cancel it. So a `NoiseSource` is not [`Clone`],
/// and a secure one serialises without its generator (as
/// `{"rng": null, "secure": true}`): deserialising it — once or twice —
/// re-keys from the operating system. Only a seeded source (reproducible,
/// reported as not secure) saves its generator and resumes exactly where
/// it stood.
///
/// ```compile_fail
/// fn shares<T: Clone>() {}
/// shares::<dpsgd_core::NoiseSource>(); // a noise stream cannot be copied
/// ```
#[derive(Deserialize)]
#[serde(try_from = "NoiseState")]
pub struct NoiseSource {
    rng: ChaCha20Rng,
    secure: bool,
    pending: Option<Pending>,
    timing: DrawTiming,
}

/// What a source measured of its own draws of one request (`parts`), to
/// decide whether to draw the next one ahead ([`NoiseSource::prepare_next`]).
/// Wall-clock times only: they decide when the values are drawn, never
/// which values.
#[derive(Debug, Default)]
struct DrawTiming {
    /// The request the times are of (the last one prepared).
    parts: Vec<usize>,
    /// Seconds of the last draw made when asked, on all threads.
    sync: Option<f64>,
    /// The threads that draw used.
    threads: usize,
    /// Seconds of the last background draw (one thread).
    background: Option<f64>,
    /// Seconds from the last [`NoiseSource::prepare_next`] call to the
    /// next request: the caller's work a background draw overlaps.
    overlap: Option<f64>,
    /// When [`NoiseSource::prepare_next`] was last called.
    since: Option<Instant>,
}

impl DrawTiming {
    /// Whether drawing ahead pays for the buffer it holds through the
    /// caller's next step: when waiting for an unfinished background draw
    /// would cost at most half of a draw made when asked. A background draw
    /// not yet timed is taken to last the draw when asked times its
    /// threads (it runs on one). Until a draw when asked and the caller's
    /// work are both timed: no (the lighter choice).
    fn ahead_pays(&self) -> bool {
        let Some(sync) = self.sync else {
            return false;
        };
        let background = self.background.unwrap_or(sync * self.threads.max(1) as f64);
        self.overlap
            .is_some_and(|overlap| (background - overlap).max(0.0) <= 0.5 * sync)
    }
}

struct Pending {
    parts: Vec<usize>,
    std: f32,
    /// The generator before the prefetch drew its key.
    before: ChaCha20Rng,
    /// The values and the seconds the draw took.
    handle: std::thread::JoinHandle<(Vec<Vec<f32>>, f64)>,
}

/// The serialised form: the generator of a seeded source; `None` for a
/// secure one (re-keyed from the operating system when read back; a
/// generator saved by an older version is ignored).
#[derive(Deserialize)]
struct NoiseState {
    #[serde(default)]
    rng: Option<ChaCha20Rng>,
    secure: bool,
}

#[derive(Serialize)]
struct NoiseStateRef<'a> {
    rng: Option<&'a ChaCha20Rng>,
    secure: bool,
}

impl TryFrom<NoiseState> for NoiseSource {
    type Error = &'static str;

    fn try_from(s: NoiseState) -> Result<Self, Self::Error> {
        match (s.secure, s.rng) {
            (true, _) => Ok(Self::from_os()),
            (false, Some(rng)) => Ok(Self {
                rng,
                secure: false,
                pending: None,
                timing: DrawTiming::default(),
            }),
            (false, None) => Err("a seeded noise source needs its saved generator (`rng`)"),
        }
    }
}

impl Serialize for NoiseSource {
    /// A seeded source saves its generator as it stands for the caller (a
    /// pending prefetch is not saved); a secure one saves none.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        NoiseStateRef {
            rng: (!self.secure).then(|| self.stream_position()),
            secure: self.secure,
        }
        .serialize(serializer)
    }
}

impl std::fmt::Debug for NoiseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseSource")
            .field("secure", &self.secure)
            .field("prefetching", &self.pending.is_some())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// N(0, std²) values for parts of sizes `parts` from one step key, on
/// `threads` threads. Each chunk of [`CHUNK`] values (numbered across the
/// parts) is its own ChaCha stream, so the values do not depend on the
/// number of threads.
fn fill(key: [u8; 32], parts: &[usize], std: f32, threads: usize) -> Vec<Vec<f32>> {
    fill_into(key, zeroed(parts), std, threads)
}

/// Zeroed buffers of sizes `parts`.
fn zeroed(parts: &[usize]) -> Vec<Vec<f32>> {
    parts.iter().map(|&len| vec![0.0f32; len]).collect()
}

/// [`fill`] into buffers the caller allocated: a prefetch's buffers come
/// from, and go back to, the caller's allocator heap rather than a
/// short-lived thread's (with mimalloc, the DP step's peak resident memory
/// at the benchmark MLP's batch 1024 fell from 69–75 to 54–66 MB, and at
/// 4096 from 122–147 to 99–100 MB; issue 31).
fn fill_into(key: [u8; 32], mut out: Vec<Vec<f32>>, std: f32, threads: usize) -> Vec<Vec<f32>> {
    let tables = ziggurat::tables();
    let fill_chunk = |(index, chunk): (usize, &mut [f32])| {
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(index as u64);
        let mut words = ziggurat::Words::new(rng);
        for v in chunk.iter_mut() {
            *v = ziggurat::standard_normal(tables, &mut words) * std;
        }
    };
    let chunks: Vec<(usize, &mut [f32])> = out
        .iter_mut()
        .flat_map(|part| part.chunks_mut(CHUNK))
        .enumerate()
        .collect();
    let threads = threads.min(chunks.len());
    if threads <= 1 {
        chunks.into_iter().for_each(fill_chunk);
    } else {
        let mut groups: Vec<Vec<(usize, &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
        for (k, c) in chunks.into_iter().enumerate() {
            groups[k % threads].push(c);
        }
        std::thread::scope(|s| {
            for group in groups {
                s.spawn(move || group.into_iter().for_each(fill_chunk));
            }
        });
    }
    out
}

impl NoiseSource {
    /// A generator seeded from the operating system: the default, and the
    /// only setting under which the DP guarantee holds against an adversary
    /// who knows the code.
    pub fn from_os() -> Self {
        Self {
            rng: ChaCha20Rng::from_os_rng(),
            secure: true,
            pending: None,
            timing: DrawTiming::default(),
        }
    }

    /// A reproducible generator: the same seed gives the same noise. Runs
    /// report themselves as not secure.
    pub fn seeded(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
            secure: false,
            pending: None,
            timing: DrawTiming::default(),
        }
    }

    /// Whether the generator was seeded from the operating system.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// A source to save or restore in place of this one: a seeded source's
    /// exact copy (it resumes the same stream), or, for a secure source, a
    /// fresh one from the operating system (a secure stream is never
    /// continued elsewhere; see the type's `# Privacy`).
    pub(crate) fn successor(&self) -> Self {
        if self.secure {
            Self::from_os()
        } else {
            Self {
                rng: self.stream_position().clone(),
                secure: false,
                pending: None,
                timing: DrawTiming::default(),
            }
        }
    }

    /// The generator as it stands for the caller (before any prefetch).
    fn stream_position(&self) -> &ChaCha20Rng {
        self.pending.as_ref().map_or(&self.rng, |p| &p.before)
    }

    fn next_key(&mut self) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        key
    }

    /// `len` independent N(0, std²) values.
    pub fn gaussian(&mut self, len: usize, std: f32) -> Vec<f32> {
        self.gaussian_parts(&[len], std).pop().unwrap_or_default()
    }

    /// Independent N(0, std²) values in parts of sizes `parts` (one per
    /// parameter tensor: each part can become a tensor without a copy).
    pub fn gaussian_parts(&mut self, parts: &[usize], std: f32) -> Vec<Vec<f32>> {
        // The first request of a source is its step's, before any
        // preparation names it.
        if self.timing.parts.is_empty() && self.timing.since.is_none() {
            self.timing.parts = parts.to_vec();
        }
        let timed = self.timing.parts == parts;
        if timed && let Some(since) = self.timing.since.take() {
            self.timing.overlap = Some(since.elapsed().as_secs_f64());
        }
        if let Some(p) = self.pending.take() {
            let ready = p.handle.join();
            match ready {
                Ok((values, seconds)) if p.parts == parts && p.std.to_bits() == std.to_bits() => {
                    self.timing.background = Some(seconds);
                    return values;
                }
                // A different request (or a failed thread): forget the
                // prefetched key and draw as if it never happened.
                _ => self.rng = p.before,
            }
        }
        let key = self.next_key();
        let threads = crate::cores();
        let start = Instant::now();
        let values = fill(key, parts, std, threads);
        if timed {
            self.timing.sync = Some(start.elapsed().as_secs_f64());
            // The threads `fill` used: at most one per chunk.
            let chunks: usize = parts.iter().map(|p| p.div_ceil(CHUNK)).sum();
            self.timing.threads = threads.min(chunks).max(1);
        }
        values
    }

    /// Starts drawing the values of the next
    /// [`gaussian_parts`](Self::gaussian_parts) call (same parts and `std`)
    /// on a background thread.
    pub fn prefetch(&mut self, parts: &[usize], std: f32) {
        if self.pending.is_some() {
            return;
        }
        let before = self.rng.clone();
        let key = self.next_key();
        let out = zeroed(parts);
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let values = fill_into(key, out, std, 1);
            (values, start.elapsed().as_secs_f64())
        });
        self.pending = Some(Pending {
            parts: parts.to_vec(),
            std,
            before,
            handle,
        });
    }

    /// Prepares the next [`gaussian_parts`](Self::gaussian_parts) call of
    /// the same parts and `std`: [`prefetch`](Self::prefetch)es it when
    /// drawing ahead saves time, else leaves it to be drawn when asked, on
    /// all threads. The values are the same either way.
    ///
    /// Drawing ahead holds a buffer of the request's size through the
    /// caller's next step. It pays when that step is long enough to hide
    /// the background draw: this source times its own draws and the
    /// caller's work between them, draws when asked until both are timed,
    /// then draws ahead unless waiting for the background draw would cost
    /// more than half of a draw made when asked.
    /// On the benchmark MLP (535 818 values, 2 cores) that is a draw when
    /// asked at batch 64, where the step waited for the background draw
    /// anyway, and ahead from batch 256 on (issue 31).
    pub fn prepare_next(&mut self, parts: &[usize], std: f32) {
        if self.timing.parts != parts {
            self.timing = DrawTiming {
                parts: parts.to_vec(),
                ..DrawTiming::default()
            };
        }
        if self.timing.ahead_pays() {
            self.prefetch(parts, std);
        }
        self.timing.since = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::distribution::{ContinuousCDF, Normal};

    #[test]
    fn should_reproduce_with_a_seed_and_differ_between_steps() {
        let mut a = NoiseSource::seeded(7);
        let mut b = NoiseSource::seeded(7);
        let (x, y) = (a.gaussian(200_000, 1.0), b.gaussian(200_000, 1.0));
        assert_eq!(x, y);
        assert_ne!(a.gaussian(10, 1.0), x[..10]);
        assert!(!a.is_secure());
        assert!(NoiseSource::from_os().is_secure());
    }

    #[test]
    fn should_give_the_values_of_sampling_each_chunk_stream_directly() {
        // The reference: the step key is the master generator's next 32
        // bytes; chunk k (numbered across the parts) is that key's stream k,
        // sampled value by value by the ziggurat. Seeded runs and their
        // checkpoints depend on these exact values.
        let parts = [5, CHUNK + 3, 2 * CHUNK, 1];
        let mut master = ChaCha20Rng::seed_from_u64(17);
        let mut key = [0u8; 32];
        master.fill_bytes(&mut key);
        let mut expected: Vec<Vec<f32>> = Vec::new();
        let mut stream = 0u64;
        for &len in &parts {
            let mut part = Vec::with_capacity(len);
            while part.len() < len {
                let mut rng = ChaCha20Rng::from_seed(key);
                rng.set_stream(stream);
                stream += 1;
                let take = CHUNK.min(len - part.len());
                let tables = ziggurat::tables();
                let mut words = ziggurat::Words::new(rng);
                part.extend((0..take).map(|_| ziggurat::standard_normal(tables, &mut words) * 1.5));
            }
            expected.push(part);
        }
        for threads in [1, 2, 3] {
            let mut src = NoiseSource::seeded(17);
            let key = src.next_key();
            let bits =
                |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
            let got = fill(key, &parts, 1.5, threads);
            assert_eq!(bits(&got), bits(&expected), "threads {threads}");
        }
        let mut src = NoiseSource::seeded(17);
        assert_eq!(src.gaussian_parts(&parts, 1.5), expected);
    }

    #[test]
    fn should_draw_the_pinned_values_of_a_seed() {
        // A regression pin: seeded runs, and the resume of their
        // checkpoints, depend on these exact values. A change of sampler,
        // stream layout or key schedule shows here (and belongs in the
        // CHANGELOG).
        let got: Vec<u32> = NoiseSource::seeded(7)
            .gaussian(8, 1.0)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(
            got,
            PINNED,
            "{:?}",
            got.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>()
        );
    }

    /// The f32 bits of −0.046520714, 0.9004241, 1.0285368, 1.7241352,
    /// −0.7967534, −0.18035153, 1.2374868, 1.2232608.
    const PINNED: [u32; 8] = [
        3174993025, 1063682610, 1065592600, 1071427702, 3209426952, 3191385618, 1067345400,
        1067226063,
    ];

    #[test]
    fn should_have_the_requested_standard_deviation() {
        // 400 000 draws of N(0, 2.5²): the sample std has standard error
        // σ/√(2n) ≈ 0.0028; a 5-sigma band (false alarm ≈ 6e-7) is ±0.014.
        let mut src = NoiseSource::seeded(1);
        let v = src.gaussian(400_000, 2.5);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        assert!(mean.abs() < 5.0 * 2.5 / n.sqrt(), "mean {mean}");
        assert!((var.sqrt() - 2.5).abs() < 0.014, "std {}", var.sqrt());
    }

    #[test]
    fn should_pass_a_kolmogorov_smirnov_test() {
        // KS statistic against N(0, 1) with n = 20 000: the critical value at
        // α = 0.001 is 1.95/√n ≈ 0.0138 (fixed seed; false alarm 0.1%).
        let mut src = NoiseSource::seeded(3);
        let mut v: Vec<f64> = src
            .gaussian(20_000, 1.0)
            .into_iter()
            .map(f64::from)
            .collect();
        v.sort_by(f64::total_cmp);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let n = v.len() as f64;
        let d = v
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let f = normal.cdf(x);
                (f - i as f64 / n).abs().max((f - (i + 1) as f64 / n).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / n.sqrt(), "KS D = {d}");
    }

    #[test]
    fn should_give_the_same_values_with_and_without_prefetch() {
        let mut direct = NoiseSource::seeded(21);
        let mut ahead = NoiseSource::seeded(21);
        for len in [10, 100_000, 100_000, 7] {
            ahead.prefetch(&[100_000], 0.5);
            assert_eq!(
                direct.gaussian(len, 0.5),
                ahead.gaussian(len, 0.5),
                "len {len}"
            );
        }
        // A saved state ignores the pending prefetch.
        ahead.prefetch(&[50], 1.0);
        let saved: NoiseSource =
            serde_json::from_str(&serde_json::to_string(&ahead).unwrap()).unwrap();
        let mut resumed = saved;
        let expected = direct.gaussian(50, 1.0);
        assert_eq!(resumed.gaussian(50, 1.0), expected);
        assert_eq!(ahead.gaussian(50, 1.0), expected);
    }

    #[test]
    fn should_draw_ahead_only_while_that_saves_time() {
        let timing = |background, overlap, sync| DrawTiming {
            background,
            overlap,
            sync,
            threads: 2,
            ..DrawTiming::default()
        };
        // Until a draw when asked and the caller's work are timed: no.
        assert!(!timing(None, None, None).ahead_pays());
        assert!(!timing(Some(1.0), Some(6.0), None).ahead_pays());
        assert!(!timing(None, None, Some(3.4)).ahead_pays());
        // Batch 64 of the benchmark MLP (ms): waiting 3.3 would cost more
        // than half of a 3.4 draw when asked.
        assert!(!timing(Some(5.3), Some(2.0), Some(3.4)).ahead_pays());
        // Batch 256: the wait is gone.
        assert!(timing(Some(5.3), Some(6.5), Some(3.4)).ahead_pays());
        // At the boundary (values exact in binary): a wait of 1.75 against
        // half of 3.5 is ahead, 1.875 is not.
        assert!(timing(Some(5.5), Some(3.75), Some(3.5)).ahead_pays());
        assert!(!timing(Some(5.5), Some(3.625), Some(3.5)).ahead_pays());
        // No background draw timed yet: 2 × 3.5 = 7 estimated.
        assert!(timing(None, Some(5.25), Some(3.5)).ahead_pays());
        assert!(!timing(None, Some(5.0), Some(3.5)).ahead_pays());
    }

    #[test]
    fn should_give_the_same_values_whenever_the_next_draw_is_prepared() {
        let parts = [3, CHUNK + 5];
        let mut direct = NoiseSource::seeded(9);
        let mut prepared = NoiseSource::seeded(9);
        // Steps that alternate between drawing ahead and when asked, as
        // the timings say; a one-value request between them (adaptive
        // clipping's count) is neither timed nor prefetched.
        for step in 0..6 {
            prepared.prepare_next(&parts, 0.5);
            let ahead = prepared.pending.is_some();
            assert_eq!(ahead, step % 2 == 1, "step {step}");
            assert_eq!(
                direct.gaussian_parts(&parts, 0.5),
                prepared.gaussian_parts(&parts, 0.5),
                "step {step}"
            );
            assert_eq!(direct.gaussian(1, 2.0), prepared.gaussian(1, 2.0));
            // Pretend the caller's work was long (even steps) or short.
            let (b, o, s) = if step % 2 == 0 {
                (0.5, 0.0, 2.0)
            } else {
                (5.0, 0.0, 1.0)
            };
            prepared.timing.background = Some(b);
            prepared.timing.overlap = Some(o);
            prepared.timing.sync = Some(s);
        }
        assert_eq!(prepared.timing.parts, parts);
    }

    #[test]
    fn should_draw_parts_as_independent_streams() {
        // Parts are filled chunk by chunk, one stream per chunk numbered
        // across the parts: the same parts give the same values, with and
        // without prefetch, and the parts are not copies of each other.
        let mut direct = NoiseSource::seeded(5);
        let mut ahead = NoiseSource::seeded(5);
        let parts = [3, CHUNK + 5, 1];
        ahead.prefetch(&parts, 2.0);
        let a = direct.gaussian_parts(&parts, 2.0);
        let b = ahead.gaussian_parts(&parts, 2.0);
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), parts);
        assert_ne!(a[1][..3], a[0][..]);
        assert_ne!(a[1][CHUNK..CHUNK + 3], a[0][..]);
    }

    #[test]
    fn should_re_key_a_secure_source_whenever_it_is_read_back() {
        // A secure source saves no generator: each read-back is a fresh key
        // from the OS, so two restores never share noise with each other
        // or with the original.
        let mut original = NoiseSource::from_os();
        original.gaussian(10, 1.0);
        let saved = serde_json::to_value(&original).unwrap();
        assert_eq!(saved, serde_json::json!({"rng": null, "secure": true}));
        let mut a: NoiseSource = serde_json::from_value(saved.clone()).unwrap();
        let mut b: NoiseSource = serde_json::from_value(saved).unwrap();
        assert!(a.is_secure() && b.is_secure());
        let (x, y, z) = (
            a.gaussian(64, 1.0),
            b.gaussian(64, 1.0),
            original.gaussian(64, 1.0),
        );
        assert_ne!(x, y);
        assert_ne!(x, z);
        assert_ne!(y, z);
        // A state written by an older version, generator included: the
        // generator is ignored, not continued.
        let mut legacy = NoiseSource::seeded(9);
        let mut rng_json = serde_json::to_value(&legacy).unwrap();
        rng_json["secure"] = true.into();
        let mut restored: NoiseSource = serde_json::from_value(rng_json).unwrap();
        assert!(restored.is_secure());
        assert_ne!(restored.gaussian(64, 1.0), legacy.gaussian(64, 1.0));
    }

    #[test]
    fn should_refuse_a_seeded_state_without_its_generator() {
        let err = serde_json::from_str::<NoiseSource>(r#"{"rng": null, "secure": false}"#)
            .expect_err("refused");
        assert!(err.to_string().contains("generator"), "{err}");
    }

    #[test]
    fn should_give_a_successor_that_resumes_a_seeded_stream_only() {
        let mut seeded = NoiseSource::seeded(4);
        seeded.gaussian(10, 1.0);
        seeded.prefetch(&[32], 1.0);
        let mut next = seeded.successor();
        assert!(!next.is_secure());
        assert_eq!(next.gaussian(32, 1.0), seeded.gaussian(32, 1.0));
        let mut secure = NoiseSource::from_os();
        let mut fresh = secure.successor();
        assert!(fresh.is_secure());
        assert_ne!(fresh.gaussian(64, 1.0), secure.gaussian(64, 1.0));
    }

    #[test]
    fn should_survive_serialisation_mid_stream() {
        let mut a = NoiseSource::seeded(11);
        a.gaussian(1000, 1.0);
        let saved = serde_json::to_string(&a).unwrap();
        let mut b: NoiseSource = serde_json::from_str(&saved).unwrap();
        assert_eq!(a.gaussian(100, 1.0), b.gaussian(100, 1.0));
    }
}
