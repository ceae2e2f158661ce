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
//!   `x = j · xᵢ / 2²⁴` with `xᵢ` the layer's right edge.
//!
//! When `x < xᵢ₊₁` (the integer test `j < kᵢ`, about 98.8% of attempts) the
//! point lies under the curve and `x` is returned at once. Otherwise the
//! base layer draws from the tail beyond `r` (Marsaglia 1964), and the other
//! layers test the wedge against `exp(−x²/2)` with a 53-bit uniform; a
//! rejected attempt starts again with a new word.
//!
//! One word per value is half of what `rand_distr`'s f64 ziggurat reads
//! (a `u64` per attempt), and the keystream is most of the cost of DP noise
//! (issue 31). The 24-bit `j` matches f32's 24-bit significand: within a
//! layer the values lie on a grid of step `xᵢ / 2²⁴` (2.2 · 10⁻⁷ in the base
//! layer, whose width as a rectangle is `x₀ = 3.713`; f32's own spacing is
//! 2.4 · 10⁻⁷ at `r`). The tail's 53-bit uniforms bound the largest value
//! at `r + √(2 · 53 ln 2) ≈ 12.0`.
//!
//! References: G. Marsaglia and W. W. Tsang, "The Ziggurat Method for
//! Generating Random Variables", J. Stat. Softw. 5(8), 2000; J. A. Doornik,
//! "An Improved Ziggurat Method to Generate Normal Random Samples", 2005;
//! G. Marsaglia, "Generating a variable from the tail of the normal
//! distribution", Technometrics 6(1), 1964.

use std::sync::OnceLock;

/// Layers of the ziggurat.
const LAYERS: usize = 128;
/// Right edge of the base layer's rectangle, where the tail begins: the
/// `r` for which 128 layers of area `V(r)` close exactly at `x = 0`, solved
/// by bisection in 50-digit arithmetic (Marsaglia and Tsang 2000 print
/// 3.442619855899, whose layers miss closing by 1.2 · 10⁻¹¹).
const R: f64 = 3.442_619_855_896_652;
/// Area of every layer, under `f(x) = exp(−x²/2)`: `r·f(r)` plus the tail's
/// `∫_r^∞ f = √(π/2) · erfc(r/√2)`.
const V: f64 = 9.912_563_035_336_461e-3;
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
    /// `wᵢ = xᵢ / 2²⁴` in f32: the candidate is `j · wᵢ`.
    w: [f32; LAYERS],
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
        let mut w = [0.0f32; LAYERS];
        for i in 0..LAYERS {
            k[i] = (SCALE * x[i + 1] / x[i]).floor() as u32;
            w[i] = (x[i] / SCALE) as f32;
        }
        Self { x, f, k, w }
    }
}

/// The tables, built once.
pub(crate) fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(Tables::new)
}

/// A uniform on `(0, 1]` from two words (53 bits).
#[inline]
fn open_uniform(words: &mut impl FnMut() -> u32) -> f64 {
    let hi = u64::from(words()) << 21;
    let lo = u64::from(words()) >> 11;
    ((hi | lo) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// One standard normal value, reading 32-bit words from `words` (one per
/// attempt, plus two per 53-bit uniform on the rare slow paths).
#[inline]
pub(crate) fn standard_normal(t: &Tables, words: &mut impl FnMut() -> u32) -> f32 {
    loop {
        let word = words();
        let i = (word & 0x7f) as usize;
        let j = word >> 8;
        let sign = (word & 0x80) << 24;
        if j < t.k[i] {
            let x = j as f32 * t.w[i];
            return f32::from_bits(x.to_bits() | sign);
        }
        if let Some(x) = slow(t, i, j, words) {
            return f32::from_bits(x.to_bits() | sign);
        }
    }
}

/// The attempts the integer test does not accept: the base layer beyond
/// `r` (the tail), and the wedges. `None`: rejected.
#[cold]
fn slow(t: &Tables, i: usize, j: u32, words: &mut impl FnMut() -> u32) -> Option<f32> {
    let x = j as f32 * t.w[i];
    if f64::from(x) < t.x[i + 1] {
        // On the edge of the integer test's rounding: inside the rectangle.
        return Some(x);
    }
    if i == 0 {
        return Some(tail(words));
    }
    let y = t.f[i] + open_uniform(words) * (t.f[i + 1] - t.f[i]);
    (y < density(f64::from(x))).then_some(x)
}

/// A value from the normal tail beyond `r` (Marsaglia 1964): `r + a` with
/// `a = −ln(u₁)/r`, accepted when `−2 ln(u₂) > a²`.
fn tail(words: &mut impl FnMut() -> u32) -> f32 {
    loop {
        let a = -open_uniform(words).ln() / R;
        let b = -open_uniform(words).ln();
        if 2.0 * b > a * a {
            return (R + a) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
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
    }

    /// `n` values from a seeded ChaCha20 stream, one word at a time.
    fn sample(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut words = || rng.next_u32();
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
        // N(0, 1): a table error of a fraction of a percent in any layer
        // or wedge shows. The χ² critical value for 1 023 degrees of
        // freedom at level 10⁻³ is 1 168.5.
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
        assert!(xs.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn should_draw_the_tail_beyond_r_as_the_truncated_normal() {
        // 2¹⁸ tail values against P(Z ≤ x | Z > r) = 1 − sf(x)/sf(r),
        // KS at level 10⁻³.
        let n = 1 << 18;
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut words = || rng.next_u32();
        let mut xs: Vec<f64> = (0..n).map(|_| f64::from(tail(&mut words))).collect();
        assert!(xs.iter().all(|&x| x >= R as f32 as f64));
        let normal = Normal::standard();
        let sf_r = normal.sf(R);
        let d = ks_distance(&mut xs, |x| 1.0 - normal.sf(x) / sf_r);
        assert!(d < 1.949 / (n as f64).sqrt(), "KS distance {d}");
    }

    #[test]
    fn should_keep_the_sign_independent_of_the_layer() {
        // Words that differ only in the sign bit give values of opposite
        // sign and equal magnitude.
        let t = tables();
        for word in [0x0000_0105u32, 0x1234_5600, 0x00ab_cd11, 0xf000_0042] {
            let flipped = word ^ 0x80;
            let mut a = std::iter::repeat(word);
            let mut b = std::iter::repeat(flipped);
            let x = standard_normal(t, &mut || a.next().unwrap_or(0));
            let y = standard_normal(t, &mut || b.next().unwrap_or(0));
            assert!(x != 0.0 && x == -y, "word {word:#x}: {x}, {y}");
        }
    }
}
