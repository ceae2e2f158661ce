//! The 2-D wavelet scattering transform (ScatterNet features) and a
//! per-example group normalisation.
//!
//! A faithful re-implementation of kymatio's `Scattering2D(J, shape, L)`
//! (Andreux et al. 2020, numpy frontend, versions 0.2/0.3), the hand-crafted
//! features on which Tramèr & Boneh (2021) train linear models and small
//! CNNs with DP-SGD. The transform cascades wavelet convolutions and complex
//! moduli and averages the result with a low-pass filter (Bruna & Mallat
//! 2013; Oyallon & Mallat 2015):
//!
//! ```text
//! S0 x = x ⋆ φ_J
//! S1 x = |x ⋆ ψ_{j1,θ1}| ⋆ φ_J                            0 ≤ j1 < J
//! S2 x = ||x ⋆ ψ_{j1,θ1}| ⋆ ψ_{j2,θ2}| ⋆ φ_J              0 ≤ j1 < j2 < J
//! ```
//!
//! each sampled every 2^J pixels, which gives `1 + J·L + L²·J(J−1)/2`
//! channels (81 for `J = 2, L = 8`) of size `⌊H/2^J⌋ × ⌊W/2^J⌋` (7×7 for
//! 28×28 MNIST digits).
//!
//! # Algorithm (kymatio's, step by step)
//!
//! 1. **Padding.** The image is padded to `M_p = (⌊(M + 2^J)/2^J⌋ + 1)·2^J`
//!    rows (and `N_p` columns likewise; 28 → 36 for `J = 2`) with numpy's
//!    `reflect` mode (the edge is not repeated), `⌊(M_p − M)/2⌋` rows on
//!    top and the rest at the bottom. Where the padding exceeds `M − 1` rows
//!    (only when `M = 2^J`) the reflection continues periodically with
//!    period `2(M − 1)`, as numpy's does.
//! 2. **Filters**, built once in [`Scattering::new`], in the Fourier domain
//!    at size `M_p × N_p`. A Gabor filter is the periodised (over 5×5
//!    periods) Gaussian envelope times a plane wave,
//!    `g(u) = Σ_{e ∈ {−2..2}²} exp(−uₑᵀ C uₑ + i ξ (cos θ, sin θ)·uₑ) / (2·3.1415·σ²/s)`
//!    with `uₑ = u + (e₁M_p, e₂N_p)` and `C = R_θ diag(1, s²) R_θ⁻¹ / (2σ²)`
//!    (kymatio writes π as 3.1415 there; so does this module). A Morlet
//!    wavelet subtracts the Gaussian envelope `g₀` (the same Gabor filter
//!    with `ξ = 0`) to have zero mean: `ψ = g − (Σg / Σg₀)·g₀`. The wavelets
//!    are `ψ_{j,t}` with `σ = 0.8·2^j`, `θ = (⌊L − L/2 − 1⌋ − t)·π/L`,
//!    `ξ = 3π/(4·2^j)` and slant `s = 4/L`; the low-pass filter `φ` is the
//!    Gabor filter with `σ = 0.8·2^(J−1)`, `θ = ξ = 0`, `s = 1`. Each
//!    filter keeps the real part of its 2-D DFT. A filter applied at
//!    resolution `r` (signal subsampled by `2^r`) is cropped to its low
//!    frequencies (kymatio's `periodize_filter_fft`): rows and columns
//!    `M_p/2^(r+1) .. M_p/2^(r+1) + M_p(1 − 2^−r)` are zeroed, then the
//!    `2^r × 2^r` aliases are summed.
//! 3. **Cascade.** With `F` the unnormalised 2-D DFT, `F⁻¹` its inverse
//!    (divided by the number of points) and `Sub_k` the Fourier-domain
//!    subsampling `Z[u,v] = k⁻² Σ_{a,b<k} Y[u + aP/k, v + bQ/k]` (the same as
//!    keeping every `k`-th sample in space):
//!
//!    ```text
//!    X   = F(pad x)
//!    S0  = Re F⁻¹ Sub_{2^J}(X ⊙ φ̂⁽⁰⁾)
//!    U1  = |F⁻¹ Sub_{2^j1}(X ⊙ ψ̂_{j1,t1}⁽⁰⁾)|,            S1 = Re F⁻¹ Sub_{2^(J−j1)}(F(U1) ⊙ φ̂⁽ʲ¹⁾)
//!    U2  = |F⁻¹ Sub_{2^(j2−j1)}(F(U1) ⊙ ψ̂_{j2,t2}⁽ʲ¹⁾)|,    S2 = Re F⁻¹ Sub_{2^(J−j2)}(F(U2) ⊙ φ̂⁽ʲ²⁾)
//!    ```
//!
//!    where `⁽ʳ⁾` marks the filter cropped to resolution `r`. Every `S` is
//!    `(M_p/2^J) × (N_p/2^J)`; one row and column is removed on each side.
//!
//! # Output order
//!
//! Channel-first, row-major: `S0`; then the `J·L` first-order channels in
//! `(j1, t1)` order; then the second-order channels in `(j1, t1, j2, t2)`
//! order with `j2 > j1` — the order of kymatio ≥ 0.2 (kymatio 0.1
//! interleaved the orders). All arithmetic is done in `f64` (kymatio uses
//! `f32`), and the result is rounded to `f32`.
//!
//! # References
//!
//! * J. Bruna, S. Mallat, *Invariant scattering convolution networks*,
//!   IEEE TPAMI 35(8), 2013.
//! * E. Oyallon, S. Mallat, *Deep roto-translation scattering for object
//!   classification*, CVPR 2015.
//! * M. Andreux et al., *Kymatio: scattering transforms in Python*, JMLR
//!   21(60), 2020.
//! * F. Tramèr, D. Boneh, *Differentially private learning needs better
//!   features (or much more data)*, ICLR 2021.
//!
//! ```
//! use dpsgd_data::scatter::Scattering;
//! let s = Scattering::new(28, 28, 2, 8)?;
//! assert_eq!((s.channels(), s.output_size()), (81, (7, 7)));
//! let image = vec![0.5f32; 28 * 28];
//! let mut features = vec![0.0f32; s.output_len()];
//! s.transform(&image, &mut features);
//! // A constant image has no oscillation: only the low-pass channel is non-zero.
//! assert!((features[0] - 0.5).abs() < 1e-3);
//! assert!(features[49..].iter().all(|v| v.abs() < 1e-5));
//! # Ok::<(), dpsgd_data::Error>(())
//! ```

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::fmt;
use std::sync::Arc;

type C64 = Complex<f64>;

/// kymatio normalises its Gabor filters with `2·3.1415·σ²/s`, not `2πσ²/s`.
/// Deliberately not `std::f64::consts::PI`: reproduces kymatio's filters.
#[allow(clippy::approx_constant)]
const KYMATIO_PI: f64 = 3.1415;

/// The `ε` of torch's `GroupNorm` default.
const GROUP_NORM_EPS: f64 = 1e-5;

/// A wavelet scattering transform for images of one size, with its filters
/// precomputed (kymatio's `Scattering2D(J, (height, width), L)`, order 2).
///
/// See the [module documentation](self) for the definition. `Scattering`
/// is `Send + Sync`: [`transform`](Self::transform) takes `&self` and may run
/// from several threads at once.
#[derive(Clone)]
pub struct Scattering {
    height: usize,
    width: usize,
    j: usize,
    l: usize,
    /// Padded size `(M_p, N_p)`.
    padded: (usize, usize),
    /// Rows added on top and columns added on the left.
    pad_top_left: (usize, usize),
    /// `φ̂` cropped to resolutions `r = 0..J`.
    phi: Vec<Vec<f64>>,
    /// The `J·L` wavelets in `(j, t)` order.
    psi: Vec<Wavelet>,
    /// 2-D FFT plans for the grids `(M_p/2^r) × (N_p/2^r)`, `r = 0..=J`.
    plans: Vec<Fft2>,
}

/// One wavelet `ψ̂_{j,t}`, cropped to the resolutions it is applied at.
#[derive(Clone)]
struct Wavelet {
    j: usize,
    /// Crops at `r = 0..min(j + 1, max(J − 1, 1))` (kymatio's levels).
    levels: Vec<Vec<f64>>,
}

impl fmt::Debug for Scattering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scattering")
            .field("height", &self.height)
            .field("width", &self.width)
            .field("j", &self.j)
            .field("l", &self.l)
            .field("padded", &self.padded)
            .finish_non_exhaustive()
    }
}

impl Scattering {
    /// Builds the transform with `j` scales and `l` orientations for images
    /// of `height × width` pixels, computing the filters (kymatio's
    /// `filter_bank`) and FFT plans.
    ///
    /// Tramèr & Boneh (2021) use `j = 2, l = 8`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `j = 0`, `l = 0`, or the image is
    /// smaller than `2^j` pixels on a side (kymatio's rule: the output would
    /// be empty).
    pub fn new(height: usize, width: usize, j: usize, l: usize) -> Result<Self> {
        validate(height, width, j, l)?;
        let padded = (padded_len(height, j), padded_len(width, j));
        let (mp, np) = padded;
        let mut planner = FftPlanner::new();
        let plans: Vec<Fft2> = (0..=j)
            .map(|r| Fft2::new(&mut planner, mp >> r, np >> r))
            .collect();
        let psi = wavelet_bank(&plans[0], j, l);
        let phi_hat = fourier_real(
            &plans[0],
            gabor_2d(mp, np, 0.8 * pow2(j - 1), 0.0, 0.0, 1.0),
        );
        let phi = (0..j)
            .map(|r| periodize_filter(&phi_hat, mp, np, r))
            .collect();
        Ok(Self {
            height,
            width,
            j,
            l,
            padded,
            pad_top_left: ((mp - height) / 2, (np - width) / 2),
            phi,
            psi,
            plans,
        })
    }

    /// The number of scales `J`.
    pub fn j(&self) -> usize {
        self.j
    }

    /// The number of orientations `L`.
    pub fn l(&self) -> usize {
        self.l
    }

    /// The input size `(height, width)`.
    pub fn input_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// The padded size `(M_p, N_p)`, `M_p = (⌊(M + 2^J)/2^J⌋ + 1)·2^J`.
    pub fn padded_size(&self) -> (usize, usize) {
        self.padded
    }

    /// Output channels per input channel: `1 + J·L + L²·J(J−1)/2` (81 for
    /// `J = 2, L = 8`).
    pub fn channels(&self) -> usize {
        1 + self.j * self.l + self.l * self.l * self.j * (self.j - 1) / 2
    }

    /// Output spatial size `(⌊height/2^J⌋, ⌊width/2^J⌋)` (7×7 for 28×28).
    pub fn output_size(&self) -> (usize, usize) {
        ((self.padded.0 >> self.j) - 2, (self.padded.1 >> self.j) - 2)
    }

    /// Output length per input channel: `channels · oh · ow`.
    pub fn output_len(&self) -> usize {
        let (oh, ow) = self.output_size();
        self.channels() * oh * ow
    }

    /// Transforms one single-channel image (row-major, `height × width`)
    /// into `channels × oh × ow` features (row-major, channel first, in the
    /// order of the [module documentation](self)).
    ///
    /// # Panics
    ///
    /// When `image.len() ≠ height·width` or `out.len() ≠`
    /// [`output_len`](Self::output_len) (a programming error).
    pub fn transform(&self, image: &[f32], out: &mut [f32]) {
        self.transform_with(image, out, &mut Work::new(self));
    }

    /// [`transform`](Self::transform) with caller-provided buffers.
    fn transform_with(&self, image: &[f32], out: &mut [f32], work: &mut Work) {
        assert_eq!(
            image.len(),
            self.height * self.width,
            "image must have height·width = {}·{} pixels",
            self.height,
            self.width
        );
        assert_eq!(
            out.len(),
            self.output_len(),
            "output must have channels·oh·ow values"
        );
        let (oh, ow) = self.output_size();
        let plane = oh * ow;
        let Work {
            x_hat,
            u1_hat,
            u2_hat,
            low,
            fft,
        } = work;
        self.pad_into(image, x_hat);
        self.plans[0].forward(x_hat, fft);
        self.lowpass(x_hat, 0, low, fft, &mut out[..plane]);
        let mut second = 1 + self.psi.len();
        for (n1, psi1) in self.psi.iter().enumerate() {
            let j1 = psi1.j;
            self.wavelet_modulus(x_hat, 0, &psi1.levels[0], j1, u1_hat, fft);
            let s1 = 1 + n1;
            self.lowpass(u1_hat, j1, low, fft, &mut out[s1 * plane..(s1 + 1) * plane]);
            for psi2 in self.psi.iter().filter(|p| p.j > j1) {
                let filter = &psi2.levels[j1];
                self.wavelet_modulus(u1_hat, j1, filter, psi2.j - j1, u2_hat, fft);
                let dst = &mut out[second * plane..(second + 1) * plane];
                self.lowpass(u2_hat, psi2.j, low, fft, dst);
                second += 1;
            }
        }
    }

    /// Reflect-pads `image` into the complex `M_p × N_p` buffer `dst`.
    fn pad_into(&self, image: &[f32], dst: &mut Vec<C64>) {
        let (mp, np) = self.padded;
        let (top, left) = self.pad_top_left;
        dst.clear();
        for i in 0..mp {
            let row = reflect_index(i as isize - top as isize, self.height) * self.width;
            dst.extend((0..np).map(|c| {
                let col = reflect_index(c as isize - left as isize, self.width);
                C64::new(f64::from(image[row + col]), 0.0)
            }));
        }
    }

    /// `dst = F(|F⁻¹ Sub_{2^k}(spec ⊙ filter)|)` for a spectrum `spec` at
    /// resolution `r`; `dst` is at resolution `r + k`.
    fn wavelet_modulus(
        &self,
        spec: &[C64],
        r: usize,
        filter: &[f64],
        k: usize,
        dst: &mut Vec<C64>,
        fft: &mut FftBuffers,
    ) {
        let grid = &self.plans[r];
        multiply_subsample(spec, filter, grid.rows, grid.cols, 1 << k, dst);
        let coarse = &self.plans[r + k];
        coarse.inverse(dst, fft);
        // √(re² + im²): `norm` (hypot) is several times slower
        dst.iter_mut()
            .for_each(|z| *z = C64::new(z.norm_sqr().sqrt(), 0.0));
        coarse.forward(dst, fft);
    }

    /// `out = unpad(Re F⁻¹ Sub_{2^(J−r)}(spec ⊙ φ̂⁽ʳ⁾))` for a spectrum at
    /// resolution `r`.
    fn lowpass(
        &self,
        spec: &[C64],
        r: usize,
        buf: &mut Vec<C64>,
        fft: &mut FftBuffers,
        out: &mut [f32],
    ) {
        let grid = &self.plans[r];
        multiply_subsample(
            spec,
            &self.phi[r],
            grid.rows,
            grid.cols,
            1 << (self.j - r),
            buf,
        );
        let coarse = &self.plans[self.j];
        coarse.inverse(buf, fft);
        let (oh, ow) = self.output_size();
        for (i, out_row) in out.chunks_exact_mut(ow).enumerate().take(oh) {
            let src = &buf[(i + 1) * coarse.cols + 1..];
            for (o, z) in out_row.iter_mut().zip(src) {
                *o = z.re as f32;
            }
        }
    }
}

/// Checks the parameters of [`Scattering::new`].
fn validate(height: usize, width: usize, j: usize, l: usize) -> Result<()> {
    if j == 0 || j >= 32 {
        return Err(Error::InvalidParameter {
            name: "j",
            value: j.to_string(),
            reason: "the number of scales must be in 1..32".into(),
        });
    }
    if l == 0 {
        return Err(Error::InvalidParameter {
            name: "l",
            value: "0".into(),
            reason: "at least one orientation is needed".into(),
        });
    }
    for (name, size) in [("height", height), ("width", width)] {
        if size < 1 << j {
            return Err(Error::InvalidParameter {
                name,
                value: size.to_string(),
                reason: format!("the image must be at least 2^J = {} pixels", 1usize << j),
            });
        }
    }
    Ok(())
}

/// `2^e` as a float.
fn pow2(e: usize) -> f64 {
    (1u64 << e) as f64
}

/// kymatio's padded length `(⌊(n + 2^J)/2^J⌋ + 1)·2^J`.
fn padded_len(n: usize, j: usize) -> usize {
    ((n + (1 << j)) / (1 << j) + 1) << j
}

/// numpy's `reflect` padding index: `t` mirrored about `0` and `n − 1`
/// (edges not repeated), periodically with period `2(n − 1)`; `n ≥ 2`.
fn reflect_index(t: isize, n: usize) -> usize {
    let period = 2 * (n as isize - 1);
    let m = t.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// The `J·L` wavelets in `(j, t)` order, in the Fourier domain, cropped.
fn wavelet_bank(plan: &Fft2, j_max: usize, l: usize) -> Vec<Wavelet> {
    let (mp, np) = (plan.rows, plan.cols);
    let n_levels = |j: usize| (j + 1).min((j_max.max(2)) - 1);
    let mut bank = Vec::with_capacity(j_max * l);
    for j in 0..j_max {
        for t in 0..l {
            let sigma = 0.8 * pow2(j);
            let xi = 0.75 * std::f64::consts::PI / pow2(j);
            let spatial = morlet_2d(mp, np, sigma, orientation(t, l), xi, 4.0 / l as f64);
            let fourier = fourier_real(plan, spatial);
            let levels = (0..n_levels(j))
                .map(|r| periodize_filter(&fourier, mp, np, r))
                .collect();
            bank.push(Wavelet { j, levels });
        }
    }
    bank
}

/// kymatio's angle of orientation `t`: `(⌊L − L/2 − 1⌋ − t)·π/L`, where
/// `⌊·⌋` truncates towards zero (Python's `int`).
fn orientation(t: usize, l: usize) -> f64 {
    let l_f = l as f64;
    let first = (l_f - l_f / 2.0 - 1.0).trunc();
    (first - t as f64) * std::f64::consts::PI / l_f
}

/// The real part of the 2-D DFT of a spatial filter.
fn fourier_real(plan: &Fft2, mut spatial: Vec<C64>) -> Vec<f64> {
    plan.forward(&mut spatial, &mut FftBuffers::default());
    spatial.iter().map(|z| z.re).collect()
}

/// kymatio's `gabor_2d`: the `rows × cols` Gabor filter
/// `Σ_{e ∈ {−2..2}²} exp(−uₑᵀ C uₑ + i ξ (cos θ, sin θ)·uₑ) / (2·3.1415·σ²/s)`,
/// `uₑ = (i + e₁·rows, j + e₂·cols)`, `C = R_θ diag(1, s²) R_θ⁻¹ / (2σ²)`.
fn gabor_2d(rows: usize, cols: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<C64> {
    let (c, s) = (theta.cos(), theta.sin());
    let rot = [[c, -s], [s, c]];
    let rot_inv = [[c, s], [-s, c]];
    let diag = [[1.0, 0.0], [0.0, slant * slant]];
    let curv =
        mat_mul(&rot, &mat_mul(&diag, &rot_inv)).map(|row| row.map(|v| v / (2.0 * sigma * sigma)));
    let cross = curv[0][1] + curv[1][0];
    let norm = 2.0 * KYMATIO_PI * sigma * sigma / slant;
    let mut gab = vec![C64::new(0.0, 0.0); rows * cols];
    for ex in -2i32..=2 {
        for ey in -2i32..=2 {
            for (i, row) in gab.chunks_exact_mut(cols).enumerate() {
                let xx = i as f64 + f64::from(ex) * rows as f64;
                for (jj, g) in row.iter_mut().enumerate() {
                    let yy = jj as f64 + f64::from(ey) * cols as f64;
                    let re = -(curv[0][0] * xx * xx + cross * xx * yy + curv[1][1] * yy * yy);
                    let im = xi * (xx * c + yy * s);
                    *g += C64::from_polar(re.exp(), im);
                }
            }
        }
    }
    gab.iter_mut().for_each(|g| *g /= norm);
    gab
}

/// kymatio's `morlet_2d`: `g_ξ − K·g_0` with `K = Σ g_ξ / Σ g_0`, a zero-mean
/// wavelet.
fn morlet_2d(rows: usize, cols: usize, sigma: f64, theta: f64, xi: f64, slant: f64) -> Vec<C64> {
    let wave = gabor_2d(rows, cols, sigma, theta, xi, slant);
    let envelope = gabor_2d(rows, cols, sigma, theta, 0.0, slant);
    let k = wave.iter().sum::<C64>() / envelope.iter().sum::<C64>();
    wave.iter().zip(&envelope).map(|(w, e)| w - k * e).collect()
}

/// 2×2 matrix product.
fn mat_mul(a: &[[f64; 2]; 2], b: &[[f64; 2]; 2]) -> [[f64; 2]; 2] {
    std::array::from_fn(|i| std::array::from_fn(|j| a[i][0] * b[0][j] + a[i][1] * b[1][j]))
}

/// kymatio's `periodize_filter_fft`: the Fourier filter `x` (`rows × cols`)
/// cropped to resolution `r`. Frequencies `rows/2^(r+1) .. rows/2^(r+1) +
/// rows(1 − 2^−r)` (and likewise for columns) are zeroed, then the
/// `2^r × 2^r` aliases are summed: `crop[k,l] = Σ_{a,b<2^r} x[k + a·rows/2^r, l + b·cols/2^r]`.
fn periodize_filter(x: &[f64], rows: usize, cols: usize, r: usize) -> Vec<f64> {
    let masked = |n: usize, i: usize| {
        let start = n >> (r + 1);
        let len = n - (n >> r);
        (start..start + len).contains(&i)
    };
    let (cr, cc) = (rows >> r, cols >> r);
    let mut crop = vec![0.0; cr * cc];
    for (i, row) in x.chunks_exact(cols).enumerate() {
        if masked(rows, i) {
            continue;
        }
        for (jj, &v) in row.iter().enumerate() {
            if !masked(cols, jj) {
                crop[(i % cr) * cc + jj % cc] += v;
            }
        }
    }
    crop
}

/// `dst = Sub_k(spec ⊙ filter)`: the product of a `rows × cols` spectrum and
/// a real filter, subsampled by `k` in space, i.e.
/// `dst[u,v] = k⁻² Σ_{a,b<k} (spec ⊙ filter)[u + a·rows/k, v + b·cols/k]`.
fn multiply_subsample(
    spec: &[C64],
    filter: &[f64],
    rows: usize,
    cols: usize,
    k: usize,
    dst: &mut Vec<C64>,
) {
    let (sr, sc) = (rows / k, cols / k);
    dst.clear();
    dst.resize(sr * sc, C64::new(0.0, 0.0));
    let scale = 1.0 / (k * k) as f64;
    for (i, (spec_row, filter_row)) in spec
        .chunks_exact(cols)
        .zip(filter.chunks_exact(cols))
        .enumerate()
    {
        let dst_row = &mut dst[(i % sr) * sc..(i % sr + 1) * sc];
        // the k aliases of each column, block by block
        for (s_block, f_block) in spec_row.chunks_exact(sc).zip(filter_row.chunks_exact(sc)) {
            for ((d, s), f) in dst_row.iter_mut().zip(s_block).zip(f_block) {
                *d += s * (f * scale);
            }
        }
    }
}

/// Buffers of one [`Scattering::transform`] call (one per thread).
struct Work {
    x_hat: Vec<C64>,
    u1_hat: Vec<C64>,
    u2_hat: Vec<C64>,
    low: Vec<C64>,
    fft: FftBuffers,
}

impl Work {
    fn new(s: &Scattering) -> Self {
        let n = s.padded.0 * s.padded.1;
        Self {
            x_hat: Vec::with_capacity(n),
            u1_hat: Vec::with_capacity(n),
            u2_hat: Vec::with_capacity(n),
            low: Vec::with_capacity(n),
            fft: FftBuffers::default(),
        }
    }
}

/// Scratch space of [`Fft2`].
#[derive(Default)]
struct FftBuffers {
    transposed: Vec<C64>,
    scratch: Vec<C64>,
}

/// 2-D DFT plans for a `rows × cols` grid (row FFTs, then column FFTs).
#[derive(Clone)]
struct Fft2 {
    rows: usize,
    cols: usize,
    row_fwd: Arc<dyn Fft<f64>>,
    row_inv: Arc<dyn Fft<f64>>,
    col_fwd: Arc<dyn Fft<f64>>,
    col_inv: Arc<dyn Fft<f64>>,
    scratch_len: usize,
}

impl Fft2 {
    fn new(planner: &mut FftPlanner<f64>, rows: usize, cols: usize) -> Self {
        let row_fwd = planner.plan_fft_forward(cols);
        let row_inv = planner.plan_fft_inverse(cols);
        let col_fwd = planner.plan_fft_forward(rows);
        let col_inv = planner.plan_fft_inverse(rows);
        let scratch_len = [&row_fwd, &row_inv, &col_fwd, &col_inv]
            .iter()
            .map(|p| p.get_inplace_scratch_len())
            .max()
            .unwrap_or(0);
        Self {
            rows,
            cols,
            row_fwd,
            row_inv,
            col_fwd,
            col_inv,
            scratch_len,
        }
    }

    /// In-place unnormalised forward DFT `X[u,v] = Σ x[m,n] e^{−2πi(um/P + vn/Q)}`.
    fn forward(&self, buf: &mut [C64], work: &mut FftBuffers) {
        self.process(buf, work, &*self.row_fwd, &*self.col_fwd);
    }

    /// In-place inverse DFT, divided by the number of points `P·Q`.
    fn inverse(&self, buf: &mut [C64], work: &mut FftBuffers) {
        self.process(buf, work, &*self.row_inv, &*self.col_inv);
        let scale = 1.0 / (self.rows * self.cols) as f64;
        buf.iter_mut().for_each(|z| *z *= scale);
    }

    fn process(
        &self,
        buf: &mut [C64],
        work: &mut FftBuffers,
        row: &dyn Fft<f64>,
        col: &dyn Fft<f64>,
    ) {
        debug_assert_eq!(buf.len(), self.rows * self.cols);
        work.scratch.resize(self.scratch_len, C64::new(0.0, 0.0));
        row.process_with_scratch(buf, &mut work.scratch);
        transpose(buf, self.rows, self.cols, &mut work.transposed);
        col.process_with_scratch(&mut work.transposed, &mut work.scratch);
        for (c, src_col) in work.transposed.chunks_exact(self.rows).enumerate() {
            for (dst, z) in buf[c..].iter_mut().step_by(self.cols).zip(src_col) {
                *dst = *z;
            }
        }
    }
}

/// `dst` = the transpose (`cols × rows`) of the `rows × cols` matrix `src`.
fn transpose(src: &[C64], rows: usize, cols: usize, dst: &mut Vec<C64>) {
    dst.clear();
    for c in 0..cols {
        dst.extend(src[c..].iter().step_by(cols).take(rows));
    }
}

/// Scatters every image of a data set whose `image_shape` is `[C, H, W]`
/// into a data set of shape `[C·K, oh, ow]` (`K =`
/// [`Scattering::channels`]): each input channel is transformed separately
/// and its `K` outputs kept together (kymatio's order, channel `c·K + k`).
/// Labels and the number of classes are unchanged.
///
/// The work is split over [`std::thread::available_parallelism`] threads;
/// each image is transformed independently, so the result is bit-identical
/// whatever the number of threads. The transform depends on each example
/// alone: it is data-independent preprocessing, with no privacy cost.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when the data set has no image shape or its
/// `H × W` differs from the transform's input size.
pub fn scatter_dataset(data: &Dataset, scattering: &Scattering) -> Result<Dataset> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    scatter_dataset_with_threads(data, scattering, threads)
}

/// [`scatter_dataset`] on `threads` threads (at least one).
fn scatter_dataset_with_threads(
    data: &Dataset,
    scattering: &Scattering,
    threads: usize,
) -> Result<Dataset> {
    let [c, h, w] = data.image_shape().ok_or_else(|| Error::InvalidParameter {
        name: "image_shape",
        value: "None".into(),
        reason: "the scattering transform needs image data [channels, height, width]".into(),
    })?;
    if (h, w) != scattering.input_size() {
        return Err(Error::InvalidParameter {
            name: "image_shape",
            value: format!("{:?}", [c, h, w]),
            reason: format!(
                "the scattering transform was built for {}×{} images",
                scattering.height, scattering.width
            ),
        });
    }
    let out_len = c * scattering.output_len();
    let mut out = vec![0.0f32; data.len() * out_len];
    let per_thread = data.len().div_ceil(threads.max(1)).max(1);
    let jobs = data
        .features()
        .chunks(per_thread * data.n_features())
        .zip(out.chunks_mut(per_thread * out_len));
    if threads <= 1 {
        jobs.for_each(|(src, dst)| scatter_images(scattering, src, dst));
    } else {
        std::thread::scope(|scope| {
            for (src, dst) in jobs {
                scope.spawn(move || scatter_images(scattering, src, dst));
            }
        });
    }
    let (oh, ow) = scattering.output_size();
    let built = Dataset::new(out, data.labels().to_vec(), out_len, data.n_classes())?
        .with_image_shape([c * scattering.channels(), oh, ow])?;
    // Each example's user id (user-level DP) stays with it.
    Ok(data.keep_users_of(built))
}

/// Transforms consecutive single-channel images of `src` into `dst`.
fn scatter_images(scattering: &Scattering, src: &[f32], dst: &mut [f32]) {
    let mut work = Work::new(scattering);
    let (h, w) = scattering.input_size();
    for (image, out) in src
        .chunks_exact(h * w)
        .zip(dst.chunks_exact_mut(scattering.output_len()))
    {
        scattering.transform_with(image, out, &mut work);
    }
}

/// Per-example group normalisation without affine parameters: torch's
/// `GroupNorm(groups, K, affine=False)` applied to each example of shape
/// `[K, h, w]` (`image_shape`), as Tramèr & Boneh (2021) do on ScatterNet
/// features.
///
/// The `K` channels are split into `groups` consecutive groups of `K/groups`
/// channels; within each group `G` of each example,
/// `x ← (x − μ_G)/√(σ²_G + 10⁻⁵)` with `μ_G` the mean and `σ²_G` the biased
/// variance of the group's `(K/groups)·h·w` values (a constant group
/// becomes zeros).
///
/// Each example is normalised with its own statistics only, so this is a
/// data-independent preprocessing step: it has no privacy cost.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when the data set has no image shape, or
/// `groups` is 0 or does not divide `K`.
pub fn group_normalize(data: &mut Dataset, groups: usize) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    group_normalize_with_threads(data, groups, threads)
}

/// [`group_normalize`] on `threads` threads (at least one).
fn group_normalize_with_threads(data: &mut Dataset, groups: usize, threads: usize) -> Result<()> {
    let shape = data.image_shape().ok_or_else(|| Error::InvalidParameter {
        name: "image_shape",
        value: "None".into(),
        reason: "group normalisation needs image data [channels, height, width]".into(),
    })?;
    let [k, h, w] = shape;
    if groups == 0 || k % groups != 0 {
        return Err(Error::InvalidParameter {
            name: "groups",
            value: groups.to_string(),
            reason: format!("must be a positive divisor of the {k} channels"),
        });
    }
    // In place, the examples split over the threads (each group is
    // normalised alone, so the split changes nothing): a copy and one core
    // took 3–5 s of MNIST's 20 s of features. Every example holds `groups`
    // consecutive groups of equal length, and every part whole examples.
    // Values stay finite: |x − μ|/√(σ² + ε) ≤ √(group length).
    let example_len = k * h * w;
    let group_len = example_len / groups;
    let part_len = data.len().div_ceil(threads.max(1)).max(1) * example_len;
    let normalize_all = |part: &mut [f32]| {
        part.chunks_exact_mut(group_len).for_each(normalize_group);
    };
    let features = data.features_mut();
    if threads <= 1 || features.len() <= part_len {
        normalize_all(features);
    } else {
        std::thread::scope(|scope| {
            for part in features.chunks_mut(part_len) {
                scope.spawn(move || normalize_all(part));
            }
        });
    }
    debug_assert!(data.features().iter().all(|x| x.is_finite()));
    Ok(())
}

/// `x ← (x − mean)/√(var + 10⁻⁵)` over one group (biased variance, `f64`).
fn normalize_group(group: &mut [f32]) {
    let n = group.len() as f64;
    let mean = group.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = group
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv_std = 1.0 / (var + GROUP_NORM_EPS).sqrt();
    for x in group {
        *x = ((f64::from(*x) - mean) * inv_std) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// A deterministic test image with structure at several scales.
    fn test_image(h: usize, w: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..h * w)
            .map(|p| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let (i, j) = ((p / w) as f32, (p % w) as f32);
                let blob =
                    (-((i - h as f32 / 2.0).powi(2) + (j - w as f32 / 3.0).powi(2)) / 8.0).exp();
                0.5 * blob + 0.3 * (state % 1000) as f32 / 1000.0 + 0.2 * (0.7 * i + 0.3 * j).sin()
            })
            .collect()
    }

    fn max_abs(v: &[f32]) -> f32 {
        v.iter().fold(0.0, |m, x| m.max(x.abs()))
    }

    fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        (diff / norm).sqrt()
    }

    // ----- a naive reference: direct DFTs, spatial striding -----

    /// Direct `O((PQ)²)` 2-D DFT; the inverse is divided by `P·Q`.
    fn naive_dft2(x: &[C64], rows: usize, cols: usize, inverse: bool) -> Vec<C64> {
        let sign = if inverse { 1.0 } else { -1.0 };
        let tw = |n: usize| -> Vec<C64> {
            (0..n)
                .map(|t| C64::from_polar(1.0, sign * 2.0 * PI * t as f64 / n as f64))
                .collect()
        };
        let (tr, tc) = (tw(rows), tw(cols));
        let mut out = vec![C64::new(0.0, 0.0); rows * cols];
        for u in 0..rows {
            for v in 0..cols {
                let mut acc = C64::new(0.0, 0.0);
                for m in 0..rows {
                    let wr = tr[(u * m) % rows];
                    for n in 0..cols {
                        acc += x[m * cols + n] * wr * tc[(v * n) % cols];
                    }
                }
                out[u * cols + v] = if inverse {
                    acc / (rows * cols) as f64
                } else {
                    acc
                };
            }
        }
        out
    }

    /// kymatio's `periodize_filter_fft`, transcribed literally (mask, then
    /// four nested loops).
    fn naive_periodize(x: &[f64], m: usize, n: usize, res: u32) -> Vec<f64> {
        let f = 2f64.powi(-(res as i32));
        let (len_x, start_x) = (
            (m as f64 * (1.0 - f)) as usize,
            (m as f64 * f / 2.0) as usize,
        );
        let (len_y, start_y) = (
            (n as f64 * (1.0 - f)) as usize,
            (n as f64 * f / 2.0) as usize,
        );
        let mut xm = x.to_vec();
        for i in 0..m {
            for j in 0..n {
                if (start_x..start_x + len_x).contains(&i)
                    || (start_y..start_y + len_y).contains(&j)
                {
                    xm[i * n + j] = 0.0;
                }
            }
        }
        let (cm, cn, p) = (m >> res, n >> res, 1usize << res);
        let mut crop = vec![0.0; cm * cn];
        for k in 0..cm {
            for l in 0..cn {
                for i in 0..p {
                    for j in 0..p {
                        crop[k * cn + l] += xm[(k + i * cm) * n + l + j * cn];
                    }
                }
            }
        }
        crop
    }

    /// Keeps every `k`-th sample of a `rows × cols` signal.
    fn stride(x: &[C64], cols: usize, k: usize) -> Vec<C64> {
        x.chunks_exact(cols)
            .step_by(k)
            .flat_map(|row| row.iter().step_by(k).copied())
            .collect()
    }

    /// `stride_k(F⁻¹(spec ⊙ filter))` at full resolution of `spec`.
    fn filter_stride(spec: &[C64], filter: &[f64], rows: usize, cols: usize, k: usize) -> Vec<C64> {
        let prod: Vec<C64> = spec.iter().zip(filter).map(|(s, f)| s * f).collect();
        stride(&naive_dft2(&prod, rows, cols, true), cols, k)
    }

    /// The whole transform, naively: single-reflection padding, filters
    /// by direct DFT, subsampling by striding in space.
    fn naive_scattering(image: &[f32], h: usize, w: usize, jj: usize, l: usize) -> Vec<Vec<f64>> {
        let (mp, np) = (
            ((h + (1 << jj)) / (1 << jj) + 1) << jj,
            ((w + (1 << jj)) / (1 << jj) + 1) << jj,
        );
        let (top, left) = ((mp - h) / 2, (np - w) / 2);
        let refl = |t: isize, n: usize| -> usize {
            let t = if t < 0 { -t } else { t };
            (if t >= n as isize {
                2 * (n as isize - 1) - t
            } else {
                t
            }) as usize
        };
        let padded: Vec<C64> = (0..mp * np)
            .map(|p| {
                let (i, j) = (
                    refl((p / np) as isize - top as isize, h),
                    refl((p % np) as isize - left as isize, w),
                );
                C64::new(f64::from(image[i * w + j]), 0.0)
            })
            .collect();
        let ft = |g: Vec<C64>| -> Vec<f64> {
            naive_dft2(&g, mp, np, false).iter().map(|z| z.re).collect()
        };
        let phi = ft(gabor_2d(
            mp,
            np,
            0.8 * 2f64.powi(jj as i32 - 1),
            0.0,
            0.0,
            1.0,
        ));
        let mut psi = Vec::new();
        for j in 0..jj {
            for t in 0..l {
                let theta =
                    (((l as f64 - l as f64 / 2.0 - 1.0) as i64) - t as i64) as f64 * PI / l as f64;
                let g = morlet_2d(
                    mp,
                    np,
                    0.8 * 2f64.powi(j as i32),
                    theta,
                    0.75 * PI / 2f64.powi(j as i32),
                    4.0 / l as f64,
                );
                psi.push((j, ft(g)));
            }
        }
        let at = |f: &[f64], r: usize| naive_periodize(f, mp, np, r as u32);
        let re = |v: Vec<C64>| -> Vec<f64> { v.iter().map(|z| z.re).collect() };
        let modulus =
            |v: Vec<C64>| -> Vec<C64> { v.iter().map(|z| C64::new(z.norm(), 0.0)).collect() };
        let x_hat = naive_dft2(&padded, mp, np, false);
        let mut s0 = vec![re(filter_stride(&x_hat, &phi, mp, np, 1 << jj))];
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        for (j1, psi1) in &psi {
            let (r1, c1) = (mp >> j1, np >> j1);
            let u1 = modulus(filter_stride(&x_hat, psi1, mp, np, 1 << j1));
            let u1_hat = naive_dft2(&u1, r1, c1, false);
            s1.push(re(filter_stride(
                &u1_hat,
                &at(&phi, *j1),
                r1,
                c1,
                1 << (jj - j1),
            )));
            for (j2, psi2) in psi.iter().filter(|(j2, _)| j2 > j1) {
                let u2 = modulus(filter_stride(
                    &u1_hat,
                    &at(psi2, *j1),
                    r1,
                    c1,
                    1 << (j2 - j1),
                ));
                let (r2, c2) = (mp >> j2, np >> j2);
                let u2_hat = naive_dft2(&u2, r2, c2, false);
                s2.push(re(filter_stride(
                    &u2_hat,
                    &at(&phi, *j2),
                    r2,
                    c2,
                    1 << (jj - j2),
                )));
            }
        }
        // unpad: drop one row and column on each side
        let (sr, sc) = (mp >> jj, np >> jj);
        s0.append(&mut s1);
        s0.append(&mut s2);
        s0.iter()
            .map(|s| {
                (1..sr - 1)
                    .flat_map(|i| (1..sc - 1).map(move |j| i * sc + j))
                    .map(|p| s[p])
                    .collect()
            })
            .collect()
    }

    fn check_against_naive(h: usize, w: usize, j: usize, l: usize) {
        let s = Scattering::new(h, w, j, l).unwrap();
        let image = test_image(h, w, 3);
        let mut out = vec![0.0; s.output_len()];
        s.transform(&image, &mut out);
        let reference = naive_scattering(&image, h, w, j, l);
        let (oh, ow) = s.output_size();
        assert_eq!(reference.len(), s.channels());
        let scale = reference
            .iter()
            .flatten()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        for (ch, (got, want)) in out.chunks_exact(oh * ow).zip(&reference).enumerate() {
            assert_eq!(want.len(), oh * ow);
            for (p, (g, w)) in got.iter().zip(want).enumerate() {
                let err = (f64::from(*g) - w).abs();
                assert!(
                    err <= 1e-4 * w.abs().max(scale * 1e-2),
                    "channel {ch} pixel {p}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn matches_naive_reference_j2() {
        // 14 × 19: non-square, asymmetric padding (20 × 24 padded).
        check_against_naive(14, 19, 2, 4);
    }

    #[test]
    fn matches_naive_reference_j3() {
        // J = 3 uses wavelets cropped to resolution 1 (masked and folded).
        check_against_naive(16, 12, 3, 2);
    }

    #[test]
    fn shapes_and_channel_counts() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Scattering>();
        let s = Scattering::new(28, 28, 2, 8).unwrap();
        assert_eq!(s.channels(), 81);
        assert_eq!(s.padded_size(), (36, 36));
        assert_eq!(s.output_size(), (7, 7));
        assert_eq!(s.output_len(), 81 * 49);
        let mut out = vec![0.0; s.output_len()];
        s.transform(&test_image(28, 28, 1), &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
        for (j, l, k) in [(1, 4, 5), (2, 8, 81), (3, 4, 61)] {
            assert_eq!(Scattering::new(16, 16, j, l).unwrap().channels(), k);
        }
        let s = Scattering::new(13, 30, 2, 4).unwrap();
        assert_eq!((s.padded_size(), s.output_size()), ((20, 36), (3, 7)));
    }

    #[test]
    fn constant_image_only_low_pass() {
        let s = Scattering::new(16, 16, 2, 8).unwrap();
        let c = 0.7f32;
        let mut out = vec![0.0; s.output_len()];
        s.transform(&vec![c; 256], &mut out);
        let phi_0 = s.phi[0][0];
        // Σ of a periodised Gaussian / (2·3.1415σ²) = 2π/(2·3.1415)·(1 + tiny)
        assert!((phi_0 - PI / KYMATIO_PI).abs() < 1e-6, "φ̂(0) = {phi_0}");
        let plane = 16;
        for v in &out[..plane] {
            assert!((f64::from(*v) - f64::from(c) * phi_0).abs() < 1e-5);
        }
        assert!(max_abs(&out[plane..]) < 1e-5);
    }

    #[test]
    fn wavelet_orientations_follow_kymatio() {
        // ψ̂_{0,t} peaks at frequency ξ(cos θ, sin θ), θ = (L/2 − 1 − t)π/L.
        let (l, s) = (8, Scattering::new(28, 28, 2, 8).unwrap());
        let (mp, np) = s.padded_size();
        for (t, wavelet) in s.psi.iter().take(l).enumerate() {
            let filter = &wavelet.levels[0];
            let peak = (0..filter.len())
                .max_by(|&a, &b| filter[a].total_cmp(&filter[b]))
                .unwrap();
            let theta = (3.0 - t as f64) * PI / 8.0;
            let radius = 0.75 * PI / (2.0 * PI);
            let (u, v) = (
                radius * theta.cos() * mp as f64,
                radius * theta.sin() * np as f64,
            );
            let wrap =
                |d: f64, n: usize| (d.rem_euclid(n as f64)).min(n as f64 - d.rem_euclid(n as f64));
            let (du, dv) = (
                wrap((peak / np) as f64 - u, mp),
                wrap((peak % np) as f64 - v, np),
            );
            assert!(
                du.hypot(dv) < 2.5,
                "t = {t}: peak {peak} far from ({u}, {v})"
            );
        }
    }

    #[test]
    fn stable_to_small_translations() {
        // A blob of width σ = 1 moved by one pixel changes by ≈ 67 % (relative
        // L2); its scattering (J = 2, averaging over 2^J = 4 pixels) by ≈ 20 %.
        let (h, w) = (16, 16);
        let blob = |shift: f32| -> Vec<f32> {
            (0..h * w)
                .map(|p| {
                    let (i, j) = ((p / w) as f32 - 7.5, (p % w) as f32 - 7.5 - shift);
                    (-(i * i + j * j) / 2.0).exp()
                })
                .collect()
        };
        let (a, b) = (blob(0.0), blob(1.0));
        let s = Scattering::new(h, w, 2, 8).unwrap();
        let (mut sa, mut sb) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
        s.transform(&a, &mut sa);
        s.transform(&b, &mut sb);
        let (raw, scat) = (rel_l2(&a, &b), rel_l2(&sa, &sb));
        assert!(raw > 0.6, "raw change {raw}");
        assert!(
            scat < 0.5 * raw,
            "raw change {raw}, scattering change {scat}"
        );
    }

    #[test]
    fn positively_homogeneous() {
        let s = Scattering::new(12, 12, 2, 4).unwrap();
        let x = test_image(12, 12, 5);
        let a = -2.5f32;
        let ax: Vec<f32> = x.iter().map(|v| a * v).collect();
        let (mut sx, mut sax) = (vec![0.0; s.output_len()], vec![0.0; s.output_len()]);
        s.transform(&x, &mut sx);
        s.transform(&ax, &mut sax);
        let plane = 9;
        let scale = max_abs(&sx);
        for (p, (u, v)) in sx.iter().zip(&sax).enumerate() {
            let factor = if p < plane { a } else { a.abs() };
            assert!(
                (factor * u - v).abs() <= 1e-5 * scale * a.abs(),
                "value {p}"
            );
        }
    }

    #[test]
    fn reflect_padding_like_numpy() {
        // np.pad([1, 2, 3], 4, 'reflect') = [1 2 3 2 | 1 2 3 | 2 1 2 3]
        let got: Vec<usize> = (-4..7).map(|t| reflect_index(t, 3)).collect();
        assert_eq!(got, [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2]);
        // The smallest image kymatio accepts (M = 2^J) needs that periodic
        // reflection: 4 × 4 with J = 2 pads 4 rows on each side.
        let s = Scattering::new(4, 4, 2, 4).unwrap();
        assert_eq!((s.padded_size(), s.output_size()), ((12, 12), (1, 1)));
        let mut out = vec![0.0; s.output_len()];
        s.transform(&test_image(4, 4, 2), &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(Scattering::new(3, 16, 2, 8).is_err());
        assert!(Scattering::new(16, 3, 2, 8).is_err());
        assert!(Scattering::new(16, 16, 0, 8).is_err());
        assert!(Scattering::new(16, 16, 2, 0).is_err());
        assert!(Scattering::new(16, 16, 64, 8).is_err());
        let err = Scattering::new(3, 16, 2, 8).unwrap_err().to_string();
        assert!(err.contains("height") && err.contains('4'), "{err}");
    }

    #[test]
    #[should_panic(expected = "image must have")]
    fn wrong_image_length_panics() {
        let s = Scattering::new(8, 8, 2, 2).unwrap();
        s.transform(&[0.0; 63], &mut vec![0.0; s.output_len()]);
    }

    #[test]
    #[should_panic(expected = "output must have")]
    fn wrong_output_length_panics() {
        let s = Scattering::new(8, 8, 2, 2).unwrap();
        s.transform(&[0.0; 64], &mut [0.0; 3]);
    }

    fn image_dataset(n: usize, c: usize, h: usize, w: usize) -> Dataset {
        let features: Vec<f32> = (0..n * c)
            .flat_map(|i| test_image(h, w, i as u64))
            .collect();
        let labels = (0..n as u32).map(|i| i % 3).collect();
        Dataset::new(features, labels, c * h * w, 3)
            .unwrap()
            .with_image_shape([c, h, w])
            .unwrap()
    }

    #[test]
    fn scatter_dataset_shapes_order_and_threads() {
        let (n, c) = (5, 2);
        let data = image_dataset(n, c, 12, 12);
        let s = Scattering::new(12, 12, 2, 4).unwrap();
        let one = scatter_dataset_with_threads(&data, &s, 1).unwrap();
        let three = scatter_dataset_with_threads(&data, &s, 3).unwrap();
        let all = scatter_dataset(&data, &s).unwrap();
        assert_eq!(one, three);
        assert_eq!(one, all);
        assert_eq!(one.image_shape(), Some([c * 25, 3, 3]));
        assert_eq!((one.labels(), one.n_classes()), (data.labels(), 3));
        // example 3, channel 1 = transform of that channel alone
        let mut expect = vec![0.0; s.output_len()];
        s.transform(&data.example(3)[144..], &mut expect);
        assert_eq!(&one.example(3)[s.output_len()..], &expect[..]);
    }

    #[test]
    fn scatter_dataset_errors_and_empty() {
        let s = Scattering::new(12, 12, 2, 4).unwrap();
        let flat = Dataset::new(vec![0.0; 144], vec![0], 144, 1).unwrap();
        assert!(scatter_dataset(&flat, &s).is_err());
        let wrong_size = image_dataset(1, 1, 16, 16);
        assert!(scatter_dataset(&wrong_size, &s).is_err());
        let empty = image_dataset(0, 1, 12, 12);
        let out = scatter_dataset(&empty, &s).unwrap();
        assert_eq!((out.len(), out.n_features()), (0, 25 * 9));
    }

    #[test]
    fn group_normalize_hand_computed() {
        let make = || {
            Dataset::new(vec![1.0, 3.0, 10.0, 10.0], vec![0], 4, 1)
                .unwrap()
                .with_image_shape([2, 1, 2])
                .unwrap()
        };
        let mut d = make();
        group_normalize(&mut d, 2).unwrap();
        let a = 1.0 / (1.0f64 + 1e-5).sqrt();
        let want = [-a, a, 0.0, 0.0];
        for (g, w) in d.features().iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{:?}", d.features());
        }
        let mut d = make();
        group_normalize(&mut d, 1).unwrap();
        let sd = (16.5f64 + 1e-5).sqrt();
        let want = [-5.0 / sd, -3.0 / sd, 4.0 / sd, 4.0 / sd];
        for (g, w) in d.features().iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{:?}", d.features());
        }
        assert_eq!(d.image_shape(), Some([2, 1, 2]));
    }

    /// Split over any number of threads, every example is normalised
    /// exactly as the definition does it alone: 101 examples (odd splits),
    /// each group's mean and variance computed here in f64 from the input.
    #[test]
    fn group_normalize_matches_the_definition_on_many_examples() {
        let (n, [k, h, w], groups) = (101, [6, 2, 3], 3);
        let d = k * h * w;
        let values: Vec<f32> = (0..n * d)
            .map(|i| ((i as f32 * 0.37).sin() * 5.0 + (i / d) as f32).round())
            .collect();
        let labels = vec![0; n];
        let input = Dataset::new(values.clone(), labels, d, 1)
            .unwrap()
            .with_image_shape([k, h, w])
            .unwrap();
        let mut data = input.clone();
        group_normalize(&mut data, groups).unwrap();
        // Any split gives the same values, bit for bit.
        for threads in [1, 2, 3, 8, 101, 500] {
            let mut other = input.clone();
            group_normalize_with_threads(&mut other, groups, threads).unwrap();
            assert_eq!(other, data, "{threads} threads");
        }
        let len = d / groups;
        for (g, (input, got)) in values
            .chunks_exact(len)
            .zip(data.features().chunks_exact(len))
            .enumerate()
        {
            let m = input.iter().map(|&x| f64::from(x)).sum::<f64>() / len as f64;
            let v = input
                .iter()
                .map(|&x| (f64::from(x) - m).powi(2))
                .sum::<f64>()
                / len as f64;
            for (x, y) in input.iter().zip(got) {
                let want = (f64::from(*x) - m) / (v + 1e-5).sqrt();
                assert!(
                    (f64::from(*y) - want).abs() < 1e-5,
                    "group {g}: {y} vs {want}"
                );
            }
        }
        assert_eq!((data.len(), data.image_shape()), (n, Some([k, h, w])));
    }

    #[test]
    fn group_normalize_errors() {
        let mut d = image_dataset(2, 3, 4, 4);
        for groups in [0, 2, 4] {
            assert!(
                group_normalize(&mut d, groups).is_err(),
                "groups = {groups}"
            );
        }
        let mut flat = Dataset::new(vec![1.0, 2.0], vec![0], 2, 1).unwrap();
        assert!(group_normalize(&mut flat, 1).is_err());
    }

    #[test]
    fn group_normalize_standardises_each_group() {
        let moments = |group: &[f32]| {
            let n = group.len() as f64;
            let mean = group.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let var = group
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var)
        };
        let s = Scattering::new(12, 12, 2, 4).unwrap();
        let mut pixels = image_dataset(3, 1, 12, 12);
        pixels.apply(&crate::Scaling::Divide(1.0 / 255.0)); // byte range
        let before = scatter_dataset(&pixels, &s).unwrap();
        let mut after = before.clone();
        group_normalize(&mut after, 5).unwrap();
        for i in 0..after.len() {
            let groups = before.example(i).chunks_exact(5 * 9);
            for (old, new) in groups.zip(after.example(i).chunks_exact(5 * 9)) {
                let (_, v) = moments(old);
                let (mean, var) = moments(new);
                assert!(mean.abs() < 1e-5, "mean {mean}");
                // the ε in the denominator: variance v/(v + ε) ≈ 1
                assert!((var - v / (v + 1e-5)).abs() < 1e-4, "variance {var}");
                assert!((var - 1.0).abs() < 1e-3, "variance {var}");
            }
        }
    }

    /// Times 1000 MNIST-sized images:
    /// `cargo test --release -p dpsgd-data scatter::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing"]
    fn timing_1000_mnist_images() {
        let s = Scattering::new(28, 28, 2, 8).unwrap();
        let data = image_dataset(1000, 1, 28, 28);
        for threads in [1, 2] {
            let start = std::time::Instant::now();
            let out = scatter_dataset_with_threads(&data, &s, threads).unwrap();
            println!(
                "{threads} thread(s): {:?} for {} images",
                start.elapsed(),
                out.len()
            );
        }
    }
}
