//! Standard normal f32 variates from 32-bit words: the ziggurat method of
//! Marsaglia and Tsang (2000), with 128 layers.
//!
//! Each attempt takes one 32-bit word `w` from the stream and splits it
//! into independent fields (Doornik 2005 showed that reusing the layer bits
//! inside the uniform, as the original code does, skews the result):
//!
//! * bits 0–6: the layer `i` (each of the 128 layers has area `V`),
//! * bit 7: the sign,
//! * bits 8–31: `j`, a uniform on `{0, …, 2²⁴ − 1}`; the candidate is
//!   `x = (j + ½) · xᵢ / 2²⁴` with `xᵢ` the layer's right edge (for
//!   `j < 2¹⁸`, refined by 32 bits of one more word: [`position`]).
//!
//! When `x < xᵢ₊₁` (the integer test `j < kᵢ`, 97.2% of attempts) the point
//! lies under the curve and `x` is returned at once. Otherwise the base
//! layer draws from the tail beyond `r` (Marsaglia 1964), and the other
//! layers test the wedge against `exp(−x²/2)` with a 53-bit uniform; 1.2%
//! of attempts are rejected and start again with a new word.
//!
//! About 1.09 words per value is half of what `rand_distr`'s f64 ziggurat
//! reads (a `u64` per attempt), and the keystream is most of the cost of DP
//! noise (issue 31). Within a layer the values lie on a grid of step
//! `xᵢ / 2²⁴` (2.2 · 10⁻⁷ in the base layer, whose width as a rectangle is
//! `x₀ = 3.713`; f32's own spacing is 2.4 · 10⁻⁷ at `r`), refined below
//! `xᵢ/64`. The tail's 53-bit uniforms bound the largest value at
//! `r + √(2 · 53 ln 2) ≈ 12.0`.
//!
//! References: G. Marsaglia and W. W. Tsang, "The Ziggurat Method for
//! Generating Random Variables", J. Stat. Softw. 5(8), 2000; J. A. Doornik,
//! "An Improved Ziggurat Method to Generate Normal Random Samples", 2005;
//! G. Marsaglia, "Generating a variable from the tail of the normal
//! distribution", Technometrics 6(1), 1964.

use rand::RngCore;
use std::sync::OnceLock;

/// Layers of the ziggurat.
const LAYERS: usize = 128;
/// Right edge of the base layer's rectangle, where the tail begins: the
/// `r` for which 128 layers of area `V(r)` close exactly at `x = 0`, solved
/// by bisection in 50-digit arithmetic (Marsaglia and Tsang 2000 print
/// 3.442619855899, whose layers miss closing by 1.2 · 10⁻¹¹).
const R: f64 = 3.442_619_855_896_652_3;
/// Area of every layer, under `f(x) = exp(−x²/2)`: `r·f(r)` plus the tail's
/// `∫_r^∞ f = √(π/2) · erfc(r/√2)`.
const V: f64 = 9.912_563_035_336_46e-3;
/// `2²⁴`: the range of `j`.
const SCALE: f64 = 16_777_216.0;

/// The unnormalised density `f(x) = exp(−x²/2)`.
fn density(x: f64) -> f64 {
    (-0.5 * x * x).exp()
}

/// The precomputed layers.
pub(crate) struct Tables {
    /// `xᵢ`, the right edges: `x₀ = V / f(r)` (the base layer's width as a
    /// rectangle of area `V`), `x₁ = r`, …, `x₁₂₈ = 0`.
    pub(crate) x: [f64; LAYERS + 1],
    /// `fᵢ = f(xᵢ)`.
    f: [f64; LAYERS + 1],
    /// `kᵢ = ⌊2²⁴ · xᵢ₊₁ / xᵢ⌋`: `j < kᵢ` accepts at once.
    k: [u32; LAYERS],
}

impl Tables {
    fn new() -> Self {
        let mut x = [0.0f64; LAYERS + 1];
        x[0] = V / density(R);
        x[1] = R;
        for i in 1..LAYERS - 1 {
            // The layer above xᵢ has area V: xᵢ · (f(xᵢ₊₁) − f(xᵢ)) = V.
            let top = V / x[i] + density(x[i]);
            x[i + 1] = (-2.0 * top.ln()).sqrt();
        }
        x[LAYERS] = 0.0;
        let f = x.map(density);
        let mut k = [0u32; LAYERS];
        for i in 0..LAYERS {
            k[i] = (SCALE * x[i + 1] / x[i]).floor() as u32;
        }
        Self { x, f, k }
    }
}

/// The tables, built once.
pub(crate) fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(Tables::new)
}

/// The 32-bit words of one stream.
pub(crate) struct Words<R>(R);

impl<R: RngCore> Words<R> {
    /// The words of `rng`, in order.
    pub(crate) fn new(rng: R) -> Self {
        Self(rng)
    }

    #[inline]
    fn word(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// A uniform on `(0, 1]` from two words (53 bits).
    #[inline]
    fn open_uniform(&mut self) -> f64 {
        let hi = u64::from(self.word()) << 21;
        let lo = u64::from(self.word()) >> 11;
        ((hi | lo) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Positions below `2⁻⁶` (`j < 2¹⁸`) read one more word.
const FINE: u32 = 1 << 18;

/// The candidate's position in its layer, a uniform on `(0, 1)`: the
/// midpoint `(j + ½) · 2⁻²⁴` of `j`'s cell (so zero is never drawn, and
/// rounding does not shrink the variance), and for `j < 2¹⁸` (1.6% of
/// words) the midpoint of a cell refined by 32 more bits,
/// `(j·2³² + e + ½) · 2⁻⁵⁶`. Small candidates thus lie on grids finer
/// than f32's, as `rand_distr`'s 52-bit positions did, below `xᵢ/64` in
/// every layer (so every f32 value below `x₀/64 = 0.058` can be drawn).
/// Above that a layer's grid, of step `xᵢ/2²⁴`, is coarser than f32 near
/// its bottom; the 128 layers' grids together leave about 0.1% of the f32
/// values between 0.058 and 0.08 unreached, and none above.
#[inline]
fn position<R: RngCore>(j: u32, words: &mut Words<R>) -> f64 {
    if j < FINE {
        return fine_position(j, words);
    }
    (f64::from(j) + 0.5) * (1.0 / SCALE)
}

#[cold]
fn fine_position<R: RngCore>(j: u32, words: &mut Words<R>) -> f64 {
    let m = (u64::from(j) << 32) | u64::from(words.word());
    // m < 2⁵⁰: m + ½ is exact in an f64.
    (m as f64 + 0.5) * (1.0 / (SCALE * 4_294_967_296.0))
}

/// One standard normal value, reading the stream `words`: one word per
/// attempt, one more for a small position, and two words per 53-bit
/// uniform on the rare slow paths.
#[inline]
pub(crate) fn standard_normal<R: RngCore>(t: &Tables, words: &mut Words<R>) -> f32 {
    loop {
        let word = words.word();
        let i = (word & 0x7f) as usize;
        let j = word >> 8;
        let sign = (word & 0x80) << 24;
        let x = position(j, words) * t.x[i];
        if j < t.k[i] {
            // Inside the layer's rectangle: j + 1 ≤ kᵢ ≤ 2²⁴ · xᵢ₊₁ / xᵢ.
            return f32::from_bits((x as f32).to_bits() | sign);
        }
        if let Some(x) = slow(t, i, x, words) {
            return f32::from_bits(x.to_bits() | sign);
        }
    }
}

/// The attempts the integer test does not accept: the base layer beyond
/// `r` (the tail), and the wedges. `None`: rejected.
#[cold]
fn slow<R: RngCore>(t: &Tables, i: usize, x: f64, words: &mut Words<R>) -> Option<f32> {
    if x < t.x[i + 1] {
        // j = kᵢ, on the edge of the integer test: inside the rectangle.
        return Some(x as f32);
    }
    if i == 0 {
        return Some(tail(words));
    }
    // The wedge: a height uniform between the layer's bottom f(xᵢ) and its
    // top f(xᵢ₊₁), under the curve at x.
    let y = t.f[i] + words.open_uniform() * (t.f[i + 1] - t.f[i]);
    (y < density(x)).then_some(x as f32)
}

/// A value from the normal tail beyond `r` (Marsaglia 1964): `r + a` with
/// `a = −ln(u₁)/r`, accepted when `−2 ln(u₂) > a²`.
fn tail<R: RngCore>(words: &mut Words<R>) -> f32 {
    loop {
        let a = -words.open_uniform().ln() / R;
        let b = -words.open_uniform().ln();
        if 2.0 * b > a * a {
            return (R + a) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use statrs::distribution::{ContinuousCDF, Normal};
    use statrs::function::erf::erfc;

    #[test]
    fn should_build_layers_of_equal_area_that_close_at_zero() {
        let t = tables();
        // V is the base layer's area: r·f(r) plus the tail (to statrs's
        // erfc, which is 6 · 10⁻¹² off the 50-digit value here).
        let tail_area = (std::f64::consts::PI / 2.0).sqrt() * erfc(R / 2f64.sqrt());
        let err = R * density(R) + tail_area - V;
        assert!(err.abs() < 1e-10 * V, "{err:e}");
        for i in 1..LAYERS {
            let area = t.x[i] * (t.f[i + 1] - t.f[i]);
            assert!((area - V).abs() < 1e-9 * V, "layer {i}: area {area}");
        }
        // The top layer ends at f = 1: x₁₂₈ = 0 closes the ziggurat.
        assert!(t.x.windows(2).all(|p| p[0] > p[1]));
        assert!((t.x[LAYERS - 1] * (1.0 - t.f[LAYERS - 1]) - V).abs() < 1e-9 * V);
        assert!(t.k.iter().all(|&k| k < 1 << 24));
        assert_eq!(t.k[LAYERS - 1], 0);
    }

    /// Simpson's rule for `∫_a^b g` on `n` (even) intervals.
    fn simpson(g: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
        if b <= a {
            return 0.0;
        }
        let h = (b - a) / n as f64;
        let inner: f64 = (1..n)
            .map(|m| g(a + m as f64 * h) * if m % 2 == 1 { 4.0 } else { 2.0 })
            .sum();
        (g(a) + g(b) + inner) * h / 3.0
    }

    /// `P(|X| ≤ at)` for the sampler's law as its tables make it, with the
    /// position in a layer taken as a continuous uniform: in layer `i`, the
    /// integer test accepts `[0, kᵢ·xᵢ/2²⁴)`, the recheck the rest below
    /// `xᵢ₊₁`, the wedge the fraction of heights under the curve; the base
    /// layer sends what lies beyond `r` to the tail.
    fn sampler_cdf(t: &Tables, at: f64) -> f64 {
        let normal = Normal::standard();
        let accepted = |at: f64| -> f64 {
            (0..LAYERS)
                .map(|i| {
                    let (xi, below) = (t.x[i], t.x[i + 1]);
                    let fast = f64::from(t.k[i]) / SCALE * xi;
                    let rect = fast.max(below);
                    let mut length = at.min(rect);
                    if i == 0 {
                        // Beyond max(fast, r): the tail, whole.
                        let tail_mass = xi - rect;
                        let in_tail = 1.0 - normal.sf(at.max(R)) / normal.sf(R);
                        length += tail_mass * if at > R { in_tail } else { 0.0 };
                    } else {
                        let wedge = |x: f64| {
                            ((density(x) - t.f[i]) / (t.f[i + 1] - t.f[i])).clamp(0.0, 1.0)
                        };
                        length += simpson(wedge, rect, at.min(xi), 400);
                    }
                    length / xi
                })
                .sum()
        };
        accepted(at) / accepted(f64::INFINITY)
    }

    #[test]
    fn should_give_the_normal_law_exactly_from_its_tables() {
        // No random numbers: the law the tables define, at every layer's
        // edge and wedge midpoint and a few points beyond, against
        // 2Φ(t) − 1 (statrs). A layer's width or integer bound off by a few
        // parts in 10⁶ moves it by more than the tolerance.
        let t = tables();
        let normal = Normal::standard();
        let mut points: Vec<f64> = (1..LAYERS).map(|i| t.x[i]).collect();
        points.extend((1..LAYERS).map(|i| 0.5 * (t.x[i] + t.x[i + 1])));
        points.extend([1e-3, 4.0, 5.0, 6.0]);
        for at in points {
            let want = 2.0 * normal.cdf(at) - 1.0;
            let got = sampler_cdf(t, at);
            assert!(
                (got - want).abs() < 1e-9,
                "P(|X| ≤ {at}) = {got}, want {want}"
            );
        }
    }

    /// A stream that gives the listed words, then fails (the tests count
    /// the words a value reads).
    struct Script {
        words: Vec<u32>,
        read: usize,
    }

    impl RngCore for Script {
        fn next_u32(&mut self) -> u32 {
            let word = *self
                .words
                .get(self.read)
                .expect("the sampler read more words than scripted");
            self.read += 1;
            word
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32()) | (u64::from(self.next_u32()) << 32)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(4) {
                let word = self.next_u32().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
        }
    }

    fn script(words: &[u32]) -> Words<Script> {
        Words::new(Script {
            words: Vec::from(words),
            read: 0,
        })
    }

    /// The word of layer `i`, sign bit `sign` and position `j`.
    fn word(i: u32, sign: u32, j: u32) -> u32 {
        (j << 8) | (sign << 7) | i
    }

    #[test]
    fn should_accept_inside_the_rectangle_from_one_word() {
        let t = tables();
        for i in [0usize, 5, 64, 126] {
            let j = t.k[i] - 1;
            assert!(j >= FINE, "layer {i}: no refinement at this j");
            let mut s = script(&[word(i as u32, 0, j)]);
            let x = standard_normal(t, &mut s);
            let want = ((f64::from(j) + 0.5) / SCALE * t.x[i]) as f32;
            assert_eq!(x, want, "layer {i}");
            assert!(f64::from(x) < t.x[i + 1]);
            assert_eq!(s.0.read, 1);
        }
    }

    #[test]
    fn should_refine_a_small_position_with_one_more_word() {
        let t = tables();
        // j = 2¹⁸ − 1 is below the threshold: the next word refines it.
        let e = 0x9e37_79b9u32;
        let j = FINE - 1;
        let mut s = script(&[word(3, 1, j), e, word(3, 0, FINE)]);
        let m = (u64::from(j) << 32) | u64::from(e);
        let want = ((m as f64 + 0.5) * 2f64.powi(-56) * t.x[3]) as f32;
        assert_eq!(standard_normal(t, &mut s), -want);
        assert_eq!(s.0.read, 2);
        // j = 2¹⁸ is not: one word.
        let want = ((f64::from(FINE) + 0.5) * 2f64.powi(-24) * t.x[3]) as f32;
        assert_eq!(standard_normal(t, &mut s), want);
        assert_eq!(s.0.read, 3);
        // j = 0 and e = 0: the smallest position, still not zero.
        let x = standard_normal(t, &mut script(&[word(7, 0, 0), 0]));
        assert_eq!(x, (0.5 * 2f64.powi(-56) * t.x[7]) as f32);
        assert!(x > 0.0);
    }

    #[test]
    fn should_send_the_base_layer_beyond_r_to_the_tail() {
        let t = tables();
        // The widest position of the base layer lies beyond r; the tail
        // then reads two 53-bit uniforms: u₁ ≈ ½ gives a ≈ ln 2 / r, and
        // u₂ = 2⁻⁵³ accepts it.
        let half = [1u32 << 31, 0];
        let tiny = [0u32, 0];
        let mut s = script(&[
            word(0, 0, (1 << 24) - 1),
            half[0],
            half[1],
            tiny[0],
            tiny[1],
        ]);
        let x = standard_normal(t, &mut s);
        assert_eq!(x, (R + 2f64.ln() / R) as f32);
        assert_eq!(s.0.read, 5);
    }

    #[test]
    fn should_test_the_wedge_against_the_curve() {
        let t = tables();
        let (i, j) = (10u32, (1 << 24) - 1);
        let x = ((f64::from(j) + 0.5) / SCALE * t.x[10]) as f32;
        assert!(f64::from(x) > t.x[11], "the position lies in the wedge");
        // The lowest height (u = 2⁻⁵³) is under the curve: accepted after
        // three words.
        let mut s = script(&[word(i, 0, j), 0, 0]);
        assert_eq!(standard_normal(t, &mut s), x);
        assert_eq!(s.0.read, 3);
        // The highest (u = 1) is above it: rejected, and the next word's
        // value is returned.
        let next = word(4, 0, 1 << 23);
        let mut s = script(&[word(i, 0, j), u32::MAX, u32::MAX, next]);
        let want = (((1u64 << 23) as f64 + 0.5) / SCALE * t.x[4]) as f32;
        assert_eq!(standard_normal(t, &mut s), want);
        assert_eq!(s.0.read, 4);
        // The top layer has no rectangle (k = 0): every attempt takes the
        // wedge.
        let mut s = script(&[word(127, 0, 1 << 23), 0, 0]);
        let x = standard_normal(t, &mut s);
        assert_eq!(x, ((0.5 + 0.5 / SCALE) * t.x[127]) as f32);
        assert_eq!(s.0.read, 3);
    }

    #[test]
    fn should_read_open_uniforms_from_two_words() {
        assert_eq!(script(&[0, 0]).open_uniform(), 2f64.powi(-53));
        assert_eq!(script(&[u32::MAX, u32::MAX]).open_uniform(), 1.0);
    }

    #[test]
    fn should_keep_the_sign_independent_of_the_layer() {
        // Words that differ only in the sign bit give values of opposite
        // sign and equal magnitude.
        let t = tables();
        for w in [
            word(5, 0, 1 << 23),
            word(0, 0, 0x12_3456),
            word(17, 0, 0xab_cdef),
            word(9, 0, 5),
        ] {
            // (A second word refines a small position.)
            let x = standard_normal(t, &mut script(&[w, 0x5a5a_5a5a]));
            let y = standard_normal(t, &mut script(&[w ^ 0x80, 0x5a5a_5a5a]));
            assert!(x != 0.0 && x == -y, "word {w:#x}: {x}, {y}");
        }
    }

    /// `n` values from a seeded ChaCha20 stream.
    fn sample(seed: u64, n: usize) -> Vec<f64> {
        let mut words = Words::new(ChaCha20Rng::seed_from_u64(seed));
        let t = tables();
        (0..n)
            .map(|_| f64::from(standard_normal(t, &mut words)))
            .collect()
    }

    /// Kolmogorov–Smirnov distance of sorted `xs` from the CDF `cdf`.
    fn ks_distance(xs: &mut [f64], cdf: impl Fn(f64) -> f64) -> f64 {
        xs.sort_by(f64::total_cmp);
        let n = xs.len() as f64;
        xs.iter()
            .enumerate()
            .map(|(k, &x)| {
                let c = cdf(x);
                (c - k as f64 / n).abs().max(((k + 1) as f64 / n - c).abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn should_follow_the_standard_normal_by_kolmogorov_smirnov() {
        // 2²⁰ values; the KS critical distance at level 10⁻³ is
        // 1.949/√n = 0.00190. A seeded test: it fails only if the sampler
        // (or the seed's luck, with probability 10⁻³) is off.
        let n = 1 << 20;
        let mut xs = sample(1, n);
        let normal = Normal::standard();
        let d = ks_distance(&mut xs, |x| normal.cdf(x));
        assert!(d < 1.949 / (n as f64).sqrt(), "KS distance {d}");
    }

    #[test]
    fn should_fill_equiprobable_bins_evenly_by_chi_square() {
        // 2²² values in 1 024 bins of probability 1/1 024 each under
        // N(0, 1); the χ² critical value for 1 023 degrees of freedom at
        // level 10⁻³ is 1 168.5. This catches gross errors (a wedge test
        // dropped in every layer, positions off by 1%); the exact test above
        // catches fine ones in the tables, and the scripted tests the code
        // paths.
        let n = 1 << 22;
        let bins = 1024;
        let normal = Normal::standard();
        let edges: Vec<f64> = (1..bins)
            .map(|b| normal.inverse_cdf(b as f64 / bins as f64))
            .collect();
        let mut counts = vec![0u64; bins];
        for x in sample(2, n) {
            counts[edges.partition_point(|&e| e <= x)] += 1;
        }
        let expected = n as f64 / bins as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 1168.5, "chi-square {chi2}");
    }

    #[test]
    fn should_match_the_normal_moments_and_tail_mass() {
        let n = 1 << 22;
        let xs = sample(3, n);
        let nf = n as f64;
        let mean = xs.iter().sum::<f64>() / nf;
        let var = xs.iter().map(|x| x * x).sum::<f64>() / nf;
        let kurt = xs.iter().map(|x| x.powi(4)).sum::<f64>() / nf;
        // Five standard errors: 1/√n, √(2/n) and √(96/n).
        assert!(mean.abs() < 5.0 / nf.sqrt(), "mean {mean}");
        assert!(
            (var - 1.0).abs() < 5.0 * (2.0 / nf).sqrt(),
            "variance {var}"
        );
        assert!(
            (kurt - 3.0).abs() < 5.0 * (96.0 / nf).sqrt(),
            "E[x⁴] {kurt}"
        );
        // Beyond r every value comes from the tail sampler: its mass is
        // 2(1 − Φ(r)) = 5.76 · 10⁻⁴, within five binomial standard errors.
        let p = 2.0 * Normal::standard().sf(R);
        let beyond = xs.iter().filter(|x| x.abs() > R).count() as f64;
        let sd = (nf * p * (1.0 - p)).sqrt();
        assert!((beyond - nf * p).abs() < 5.0 * sd, "beyond r: {beyond}");
        assert!(xs.iter().all(|x| x.is_finite() && *x != 0.0));
    }

    #[test]
    fn should_draw_the_tail_beyond_r_as_the_truncated_normal() {
        // 2¹⁸ tail values against P(Z ≤ x | Z > r) = 1 − sf(x)/sf(r),
        // KS at level 10⁻³.
        let n = 1 << 18;
        let mut words = Words::new(ChaCha20Rng::seed_from_u64(4));
        let mut xs: Vec<f64> = (0..n).map(|_| f64::from(tail(&mut words))).collect();
        assert!(xs.iter().all(|&x| x >= R as f32 as f64));
        let normal = Normal::standard();
        let sf_r = normal.sf(R);
        let d = ks_distance(&mut xs, |x| 1.0 - normal.sf(x) / sf_r);
        assert!(d < 1.949 / (n as f64).sqrt(), "KS distance {d}");
    }
}
