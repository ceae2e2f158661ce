//! Model inversion: reconstructing a representative input of a class from a
//! white-box model, and measuring how close it comes to the training data.
//!
//! # The attack (MI-Face)
//!
//! Fredrikson, Jha & Ristenpart (2015), "Model Inversion Attacks that
//! Exploit Confidence Information and Basic Countermeasures" (CCS), recover
//! a recognisable face of a person from a face classifier by descending the
//! cost `c(x) = 1 − f_y(x)` from the blank image `x₀ = 0`, with a denoising
//! step between gradient steps, and keep the best iterate. This module
//! **maximises**
//!
//! ```text
//! J(x) = ℓ_y(x) − λ · TV_ε(x) − μ · ‖x − x₀‖₁ / s      subject to  x ∈ [lo, hi]^d
//! ```
//!
//! where `s = hi − lo` is the width of the input range, `x₀` the start, and
//! `ℓ_y` the [`Objective`]: by default the log-odds
//! `ln(f_y / (1 − f_y))`, or `ln f_y`.
//!
//! * **Objective** (default [`Objective::LogOdds`]). The log-odds is the
//!   margin `z_y − ln Σ_{j≠y} e^{z_j}` of the class's logit over the others;
//!   it keeps growing while the class gets more certain, and its gradient
//!   is exactly `∇ln f_y / (1 − f_y)`, computed from what
//!   [`WhiteBox::log_prob_gradient`] returns. `ln f_y` (the earlier default)
//!   saturates: `∇ln f_y = (1 − f_y) ∇ℓ_y` vanishes once `f_y ≈ 1`, and on a
//!   non-private MLP of the digits data, from the blank start, the ascent
//!   stopped at faint images (a mean of 13% of the range) of confidence
//!   0.996 whose shape is mostly whatever crossed the threshold first. Both objectives have the same
//!   maximisers without priors (they are increasing functions of `f_y`); the
//!   log-odds weighs the priors against a margin in logits (nats) instead of
//!   a vanishing `ln f_y`. Models answer in `f32`, so `f_y` rounds to 1 at a
//!   margin of about 16.6: `1 − f_y` is computed as `−expm1(ln f_y)` and
//!   floored at [`ODDS_FLOOR`] `= 10⁻⁷`. Beyond that margin `ℓ_y` reads as
//!   the constant `ln((1 − 10⁻⁷)/10⁻⁷) ≈ 16.1` (the best iterate is then the
//!   one with the smallest prior among the saturated ones), while the
//!   gradient, still resolved for the competing classes, keeps pushing them
//!   down.
//! * **Start** (`start: None`). For images, the blank canvas: the low end
//!   of the range everywhere (MI-Face's `x₀ = 0`; the background of
//!   digits and MNIST); for other inputs, the midpoint of the range. From
//!   the midpoint (the earlier default for images too) every pixel moves by
//!   a full Adam step from the first step on, including the pixels that
//!   are (almost) always 0 in training (the borders of digits, whose
//!   first-layer weights then keep most of their random initialisation),
//!   and the reconstructions were grey noise. Images with a light background need an explicit
//!   `start`.
//! * **Priors.** The smoothness prior, for images only
//!   (`image_shape = Some([h, w])`), is
//!   `TV_ε(x) = Σ_{vertical and horizontal neighbours a, b} φ((x_a − x_b)/s)`
//!   with the Charbonnier `φ(t) = √(t² + ε²) − ε`, differences measured in
//!   range widths. With the default `ε = 1` ([`TV_SMOOTHING`]) `φ` is close
//!   to `t²/2` over the whole range (`φ(1) = 0.41`): a quadratic smoothness
//!   prior, the `β = 2` of Mahendran & Vedaldi's `TV^β` (2015), which plays
//!   the role of MI-Face's denoising. A small `ε` (0.01, the earlier
//!   default) gives the total variation proper (`φ ≈ |t|`), whose
//!   reconstructions were piecewise-constant grey patches and more
//!   sensitive to `λ`. Default `λ = 0.1`.
//!   The sparsity prior `μ · Σ_k |x_k − x₀_k| / s` (for any input, default
//!   `μ = 0.03`) charges every move away from the start: from the blank
//!   canvas it is an ink cost that keeps the background dark wherever the
//!   model's gradient is weak. At `x_k = x₀_k` its minimum-norm subgradient
//!   is used (the coordinate stays unless the rest of the gradient exceeds
//!   `μ / s` in magnitude: soft thresholding), elsewhere `±μ / s`.
//! * **Step.** Adam (Kingma & Ba 2015; β₁ = 0.9, β₂ = 0.999) on `∇J`, with
//!   a step of `lr · s · m̂ / (√v̂ + 10⁻⁸)`: Adam's normalisation makes the
//!   step independent of the gradient's scale, and the factor `s` of the
//!   input's scale, so `lr` is (roughly: `|m̂|/√v̂ ≤ 1` for steady
//!   gradients) the largest move of a coordinate per step *as a fraction of
//!   the input range*. Defaults: 300 steps of `lr = 0.02`.
//! * **Projection.** After every step each coordinate is clamped to the
//!   public input range `[lo, hi]` (pixel intensities).
//! * **Result.** The iterate with the highest `J` among those queried
//!   (MI-Face keeps the best as well), with its confidence `f_y`.
//!
//! All requested classes are inverted together: each step is one batched
//! query of the model ([`WhiteBox::log_prob_gradient`]), plus one final
//! query that scores the last iterate: `steps + 1` queries in all.
//!
//! # How the defaults were chosen, and what to expect
//!
//! Measured with `dpsgd audit --attacks inversion` on the embedded digits
//! data (8 × 8, range `[0, 1]`, background 0), seeds 1–3, against the
//! default non-private MLP (test accuracy 96%). The figure of merit was the
//! Pearson correlation of each reconstruction with its class's mean image
//! (real digits: median 0.86), besides looking at the images. The earlier
//! defaults (midpoint start, `ln f_y`, `λ = 0.005`, `ε = 0.01`, no sparsity
//! prior) gave grey noise, correlation 0.50; these give dark backgrounds
//! with bright strokes, correlation 0.66, and the independent classifier of
//! the audit labels 29 of the 30 correctly (the earlier defaults: 24). The
//! blank start alone took the correlation to 0.54, the log-odds to 0.57,
//! the priors to 0.66 (quadratic smoothing, `ε = 1`, held 0.62–0.66 for
//! `λ` from 0.03 to 0.3; `ε = 0.01`: 0.54–0.63). These did not help: 100 or
//! 1 000 steps instead of 300, `lr` 0.01 or 0.05, averaging the gradient
//! over random one-pixel shifts or input noise, normalised gradient ascent
//! instead of Adam (with or without blurring the gradient), optimising
//! 2 × 2 blocks first, a cap on the log-odds above which only the priors
//! act (the minimal-evidence images it gives are sparser still), the margin
//! over the mean of the other classes' logits, and averaging the results
//! of restarts from random starts (tried with normalised gradient ascent:
//! they land on much the same images).
//!
//! Even so, an MLP's reconstructions are not prototypes. The zeros are
//! clean rings, and several classes show their telling strokes (the right
//! arcs of a 3, the loop of a 6, the bar of a 7, the upright of a 1) in some
//! seeds, but most are blotches a person would not name: the model is
//! certain of a class long before its input looks like a typical example,
//! and the ascent exaggerates what separates the class from its nearest
//! rivals. The weights `λ` and `μ` are in nats of log-odds and so depend
//! on the model's logit scale. Against a linear model the log-odds is
//! linear and the ascent ends on a corner of the box (thresholded
//! discriminative templates); against the digits model trained with DP-SGD
//! at ε = 1, whose log-odds gradient barely changes along the path, the
//! same happens and the reconstructions are black-and-white noise
//! (correlation 0.38; the earlier defaults: 0.41), though the independent
//! classifier still labels 25 of 30 correctly (the earlier defaults: 19):
//! it reads class features, not digits.
//!
//! # Measuring leakage
//!
//! A reconstruction that looks like "a 3" says the model knows what 3s look
//! like, which is the point of a classifier; it is a privacy leak when it
//! resembles the *training* examples more than unseen ones of its class.
//! [`nearest_distances`] returns, per reconstruction, the Euclidean distance
//! to the nearest member (training example) and the nearest non-member
//! (held-out example) of its class; the ratio `to_member / to_non_member`
//! is below 1 when the reconstruction sits closer to the training data. An
//! independent classifier's accuracy on the reconstructions (do they carry
//! the class at all?) is the other figure the literature reports; it needs
//! a second model and is left to the caller. DP-SGD and rounding of the
//! outputs both degrade the attack.

use crate::Error;
use crate::error::{Result, invalid};
use crate::hardening::{ProbabilityOracle, released_score};
use crate::scores::ScoreKind;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};

/// Default Charbonnier smoothing `ε` of the smoothness prior, in range
/// widths ([`InversionConfig::tv_smoothing`], [`total_variation`]): at
/// `ε = 1` the prior is close to quadratic over the whole range (see the
/// [module docs](self)).
pub const TV_SMOOTHING: f64 = 1.0;

/// The floor of `1 − f_y` in the log-odds objective: about the resolution
/// of an `f32` probability just below 1.
pub const ODDS_FLOOR: f64 = 1e-7;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// A model whose input gradients the attacker can query (white-box).
pub trait WhiteBox {
    /// Number of input features.
    fn input_len(&self) -> usize;

    /// Number of classes, when the model knows it: [`invert`] then rejects
    /// out-of-range classes itself. The default, `None`, leaves that to the
    /// model (which should answer [`Error::Query`]).
    fn num_classes(&self) -> Option<usize> {
        None
    }

    /// For `n = classes.len()` inputs (row-major, `n · input_len()`
    /// values), the probability `p_{classes[i]}(x_i)` and the gradient of
    /// `ln p_{classes[i]}` with respect to `x_i` (row-major, same layout as
    /// `inputs`).
    ///
    /// # Errors
    ///
    /// [`Error::Query`] when the model fails.
    fn log_prob_gradient(
        &mut self,
        inputs: &[f32],
        classes: &[usize],
    ) -> Result<(Vec<f64>, Vec<f32>)>;
}

/// A black-box model as a [`WhiteBox`]: `p_y` and `∇ ln p_y` **estimated**
/// from the probability vectors a [`ProbabilityOracle`] releases (possibly
/// hardened: top-k, rounded, label only, under a query budget), so that
/// [`invert`] runs against what a client of the model sees.
///
/// The gradient is the antithetic Gaussian finite-difference estimate of
/// zeroth-order optimisation (Nesterov & Spokoiny, "Random gradient-free
/// minimization of convex functions", 2017; used against black-box models
/// by Chen et al., "ZOO", AISec 2017):
///
/// ```text
/// ĝ = 1/K · Σ_k (f(x + μ·u_k) − f(x − μ·u_k)) / (2μ) · u_k,   u_k ~ N(0, I_d)
/// ```
///
/// with `f = ln p̃_y`, `p̃` the released vector completed to a distribution
/// and floored as in [`released_score`]. It is unbiased for the gradient of
/// the Gaussian-smoothed `f`. Each call queries `1 + 2K` inputs per class
/// in one batch (the point itself for `p̃_y`), which is what a query budget
/// counts: [`queries`](Self::queries) keeps the total. A release that hides
/// small changes (label only, coarse rounding) gives `f(x + μu) = f(x − μu)`,
/// a zero estimate and an ascent that does not move: what hardening buys
/// against inversion.
#[derive(Debug)]
pub struct ZerothOrder<O> {
    oracle: O,
    input_len: usize,
    directions: usize,
    smoothing: f64,
    rng: ChaCha20Rng,
    queries: u64,
}

impl<O: ProbabilityOracle> ZerothOrder<O> {
    /// The estimator over `oracle` for inputs of `input_len` values, with
    /// `K = directions` random directions per gradient and the smoothing
    /// radius `μ = smoothing` (in input units), seeded.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for `input_len = 0`, `directions = 0` or
    /// a smoothing that is not a finite number > 0.
    pub fn new(
        oracle: O,
        input_len: usize,
        directions: usize,
        smoothing: f64,
        seed: u64,
    ) -> Result<Self> {
        if input_len == 0 {
            return Err(invalid("input_len", 0, "the model has no inputs"));
        }
        if directions == 0 {
            return Err(invalid("directions", 0, "need at least one direction"));
        }
        if !(smoothing > 0.0 && smoothing.is_finite()) {
            return Err(invalid(
                "smoothing",
                smoothing,
                "must be a finite number > 0",
            ));
        }
        Ok(Self {
            oracle,
            input_len,
            directions,
            smoothing,
            rng: ChaCha20Rng::seed_from_u64(seed),
            queries: 0,
        })
    }

    /// Inputs queried so far.
    pub fn queries(&self) -> u64 {
        self.queries
    }

    /// The oracle back.
    pub fn into_inner(self) -> O {
        self.oracle
    }
}

impl<O: ProbabilityOracle> WhiteBox for ZerothOrder<O> {
    fn input_len(&self) -> usize {
        self.input_len
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.oracle.classes())
    }

    fn log_prob_gradient(
        &mut self,
        inputs: &[f32],
        classes: &[usize],
    ) -> Result<(Vec<f64>, Vec<f32>)> {
        let (d, k) = (self.input_len, self.directions);
        if inputs.len() != classes.len() * d {
            return Err(invalid(
                "inputs",
                format!("{} values", inputs.len()),
                format!("need {} (one input per class)", classes.len() * d),
            ));
        }
        let per_input = 1 + 2 * k;
        let mut batch = Vec::with_capacity(classes.len() * per_input * d);
        let mut directions = Vec::with_capacity(classes.len() * k * d);
        let mu = self.smoothing;
        for x in inputs.chunks(d) {
            batch.extend_from_slice(x);
            for _ in 0..k {
                let u: Vec<f64> = (0..d)
                    .map(|_| StandardNormal.sample(&mut self.rng))
                    .collect();
                batch.extend(
                    x.iter()
                        .zip(&u)
                        .map(|(&x, u)| (f64::from(x) + mu * u) as f32),
                );
                batch.extend(
                    x.iter()
                        .zip(&u)
                        .map(|(&x, u)| (f64::from(x) - mu * u) as f32),
                );
                directions.extend(u);
            }
        }
        let answers = self.oracle.probabilities(&batch, d)?;
        if answers.len() != classes.len() * per_input {
            return Err(Error::Query {
                reason: format!(
                    "the model answered {} vectors for {} inputs",
                    answers.len(),
                    classes.len() * per_input
                ),
            });
        }
        self.queries += answers.len() as u64;
        let mut probs = Vec::with_capacity(classes.len());
        let mut grads = Vec::with_capacity(classes.len() * d);
        for (i, &y) in classes.iter().enumerate() {
            let rows = &answers[i * per_input..(i + 1) * per_input];
            probs.push(released_score(ScoreKind::Loss, &rows[0], y)?.exp());
            let mut g = vec![0.0f64; d];
            for j in 0..k {
                let plus = released_score(ScoreKind::Loss, &rows[1 + 2 * j], y)?;
                let minus = released_score(ScoreKind::Loss, &rows[2 + 2 * j], y)?;
                let coef = (plus - minus) / (2.0 * mu * k as f64);
                if coef != 0.0 {
                    let u = &directions[(i * k + j) * d..(i * k + j + 1) * d];
                    for (g, u) in g.iter_mut().zip(u) {
                        *g += coef * u;
                    }
                }
            }
            grads.extend(g.into_iter().map(|v| v as f32));
        }
        Ok((probs, grads))
    }
}

/// The class score [`invert`] ascends (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// The log-odds `ln(f_y / (1 − f_y))`, the margin of the class's logit
    /// over the others (`1 − f_y` floored at [`ODDS_FLOOR`]): does not
    /// saturate as `f_y → 1` (the default).
    #[default]
    LogOdds,
    /// `ln f_y`, whose gradient vanishes as `f_y → 1`.
    LogProb,
}

/// Settings of [`invert`].
#[derive(Debug, Clone, PartialEq)]
pub struct InversionConfig {
    /// Gradient steps (default 300).
    pub steps: usize,
    /// Adam step size as a fraction of the range width (default 0.02: a
    /// coordinate moves by at most about 2% of `hi − lo` per step).
    pub lr: f64,
    /// Weight `λ ≥ 0` of the smoothness prior `TV_ε` against the objective
    /// (default 0.1); used only with an `image_shape`. It weighs nats of
    /// log-odds, so its effect depends on the model's logit scale.
    pub tv_weight: f64,
    /// Charbonnier smoothing `ε > 0` of `TV_ε`, in range widths (default
    /// [`TV_SMOOTHING`] = 1: close to quadratic; 0.01: total variation
    /// proper).
    pub tv_smoothing: f64,
    /// Weight `μ ≥ 0` of the sparsity prior `Σ |x − x₀| / s`, which charges
    /// every move away from the start (default 0.03; any input).
    pub sparsity_weight: f64,
    /// The class score ascended (default [`Objective::LogOdds`]).
    pub objective: Objective,
    /// The public input range `[lo, hi]` every iterate is projected onto
    /// (default `(0, 1)`, pixel intensities).
    pub range: (f32, f32),
    /// `[h, w]` of image inputs (`h · w = input_len`), which turns on the
    /// smoothness prior and the blank start (default `None`: no smoothness
    /// prior, start at the midpoint).
    pub image_shape: Option<[usize; 2]>,
    /// The neutral start, `input_len` values in `range`, shared by all
    /// classes (default `None`: with an `image_shape` the low end of the
    /// range everywhere, the blank canvas; otherwise the midpoint).
    pub start: Option<Vec<f32>>,
}

impl Default for InversionConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            lr: 0.02,
            tv_weight: 0.1,
            tv_smoothing: TV_SMOOTHING,
            sparsity_weight: 0.03,
            objective: Objective::LogOdds,
            range: (0.0, 1.0),
            image_shape: None,
            start: None,
        }
    }
}

impl InversionConfig {
    /// The default settings for `h × w` images in `[0, 1]`, with the
    /// smoothness prior on and the blank start.
    pub fn image(h: usize, w: usize) -> Self {
        Self {
            image_shape: Some([h, w]),
            ..Self::default()
        }
    }
}

/// Reconstructions from [`invert`], in the order of the requested classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Inversion {
    /// One reconstruction per class, `input_len` values each.
    pub images: Vec<Vec<f32>>,
    /// `f_y` of each reconstruction, as the model reported it.
    pub confidence: Vec<f64>,
}

/// The smoothed anisotropic total variation `TV_ε` of an `h × w` image
/// (row-major) whose differences are measured in units of `1/inv_width`,
/// and its gradient, added into `grad`.
fn tv_accumulate(x: &[f64], [h, w]: [usize; 2], inv_width: f64, eps: f64, grad: &mut [f64]) -> f64 {
    let mut total = 0.0;
    let mut pair = |a: usize, b: usize, grad: &mut [f64]| {
        let t = (x[a] - x[b]) * inv_width;
        let root = (t * t + eps * eps).sqrt();
        total += root - eps;
        // dφ/dt = t / √(t² + ε²); dt/dx_a = inv_width = −dt/dx_b.
        let d = t / root * inv_width;
        grad[a] += d;
        grad[b] -= d;
    };
    for r in 0..h {
        for c in 0..w {
            let i = r * w + c;
            if c + 1 < w {
                pair(i + 1, i, grad);
            }
            if r + 1 < h {
                pair(i + w, i, grad);
            }
        }
    }
    total
}

fn check_range(range: (f32, f32)) -> Result<()> {
    let (lo, hi) = range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(invalid(
            "range",
            format!("({lo}, {hi})"),
            "need finite lo < hi",
        ));
    }
    Ok(())
}

/// The smoothed anisotropic total variation `TV_ε` of one `[h, w]` image
/// (row-major), with differences in units of the width of `range` and the
/// default smoothing `ε =` [`TV_SMOOTHING`] (see the [module docs](self)),
/// and its gradient with respect to the pixels.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when `image.len() ≠ h · w`, a pixel is not
/// finite, or the range is not a finite `lo < hi`.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::inversion::{total_variation, TV_SMOOTHING};
/// // One vertical edge of full contrast across two rows: two differences of 1.
/// let (tv, _) = total_variation(&[0.0, 1.0, 0.0, 1.0], [2, 2], (0.0, 1.0))?;
/// let phi = (1.0 + TV_SMOOTHING * TV_SMOOTHING).sqrt() - TV_SMOOTHING;
/// assert!((tv - 2.0 * phi).abs() < 1e-12);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn total_variation(
    image: &[f32],
    shape: [usize; 2],
    range: (f32, f32),
) -> Result<(f64, Vec<f64>)> {
    check_range(range)?;
    let [h, w] = shape;
    if h.checked_mul(w) != Some(image.len()) {
        return Err(invalid(
            "image",
            image.len(),
            format!("length must be h · w = {h} · {w}"),
        ));
    }
    if let Some(v) = image.iter().find(|v| !v.is_finite()) {
        return Err(invalid("image", v, "pixels must be finite"));
    }
    let x: Vec<f64> = image.iter().map(|&v| f64::from(v)).collect();
    let mut grad = vec![0.0; x.len()];
    let inv_width = 1.0 / (f64::from(range.1) - f64::from(range.0));
    let tv = tv_accumulate(&x, [h, w], inv_width, TV_SMOOTHING, &mut grad);
    Ok((tv, grad))
}

/// Checks the settings against a model with `d` inputs, and returns the
/// validated start.
fn validated_start(config: &InversionConfig, d: usize) -> Result<Vec<f64>> {
    if config.steps == 0 {
        return Err(invalid("steps", 0, "need at least one step"));
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return Err(invalid("lr", config.lr, "must be finite and > 0"));
    }
    if !(config.tv_weight.is_finite() && config.tv_weight >= 0.0) {
        return Err(invalid(
            "tv_weight",
            config.tv_weight,
            "must be finite and ≥ 0",
        ));
    }
    if !(config.tv_smoothing.is_finite() && config.tv_smoothing > 0.0) {
        return Err(invalid(
            "tv_smoothing",
            config.tv_smoothing,
            "must be finite and > 0",
        ));
    }
    if !(config.sparsity_weight.is_finite() && config.sparsity_weight >= 0.0) {
        return Err(invalid(
            "sparsity_weight",
            config.sparsity_weight,
            "must be finite and ≥ 0",
        ));
    }
    check_range(config.range)?;
    let (lo, hi) = config.range;
    if let Some([h, w]) = config.image_shape
        && h.checked_mul(w) != Some(d)
    {
        return Err(invalid(
            "image_shape",
            format!("[{h}, {w}]"),
            format!("h · w must equal the model's input length {d}"),
        ));
    }
    match &config.start {
        // Images: the blank canvas; other inputs: the midpoint.
        None if config.image_shape.is_some() => Ok(vec![f64::from(lo); d]),
        None => {
            let mid = (f64::from(lo) + f64::from(hi)) / 2.0;
            Ok(vec![mid; d])
        }
        Some(start) => {
            if start.len() != d {
                return Err(invalid(
                    "start",
                    start.len(),
                    format!("length must equal the model's input length {d}"),
                ));
            }
            if let Some(v) = start.iter().find(|v| !(**v >= lo && **v <= hi)) {
                return Err(invalid(
                    "start",
                    v,
                    format!("values must lie in the range [{lo}, {hi}]"),
                ));
            }
            Ok(start.iter().map(|&v| f64::from(v)).collect())
        }
    }
}

/// One batched query, with the answer's shape and values checked.
fn query<M: WhiteBox>(
    model: &mut M,
    x: &[f64],
    classes: &[usize],
    d: usize,
) -> Result<(Vec<f64>, Vec<f32>)> {
    let inputs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let (probs, grads) = model.log_prob_gradient(&inputs, classes)?;
    let fail = |reason: String| Err(Error::Query { reason });
    if probs.len() != classes.len() {
        return fail(format!(
            "returned {} probabilities for {} inputs",
            probs.len(),
            classes.len()
        ));
    }
    if grads.len() != classes.len() * d {
        return fail(format!(
            "returned {} gradient values, expected {}",
            grads.len(),
            classes.len() * d
        ));
    }
    if let Some(p) = probs.iter().find(|p| !(**p >= 0.0 && **p <= 1.0)) {
        return fail(format!("returned probability {p} outside [0, 1]"));
    }
    if let Some(g) = grads.iter().find(|g| !g.is_finite()) {
        return fail(format!("returned a non-finite gradient value {g}"));
    }
    Ok((probs, grads))
}

/// Reconstructs one representative per requested class, all classes in one
/// batch per step (one [`WhiteBox::log_prob_gradient`] call per step, and
/// one more to score the final iterate): Adam ascent on
/// `ℓ_y(x) − λ · TV_ε(x) − μ · ‖x − x₀‖₁ / s` (`ℓ_y` the log-odds or
/// `ln f_y`) with projection onto the input range, from a neutral start
/// `x₀`, keeping the best iterate (see the [module docs](self)). A class
/// may be requested more than once (the runs are identical for a
/// deterministic model).
///
/// # Errors
///
/// * [`Error::InvalidParameter`] for no classes, a model with no inputs, a
///   class `≥ num_classes()` (when the model states it), `steps = 0`,
///   `lr ≤ 0`, `tv_weight < 0`, `tv_smoothing ≤ 0`, `sparsity_weight < 0`,
///   a range that is not a finite `lo < hi`, an `image_shape` whose `h · w`
///   is not the input length, or a start of the wrong length or outside the
///   range.
/// * [`Error::Query`] when the model fails, or answers with the wrong number
///   of values, a probability outside `[0, 1]` or a non-finite gradient.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::inversion::{invert, InversionConfig, WhiteBox};
///
/// /// Two classes with logits `±(x₀ − x₁)`.
/// struct Tilt;
/// impl WhiteBox for Tilt {
///     fn input_len(&self) -> usize { 2 }
///     fn log_prob_gradient(&mut self, x: &[f32], classes: &[usize])
///         -> dpsgd_audit::Result<(Vec<f64>, Vec<f32>)> {
///         let mut p = Vec::new();
///         let mut g = Vec::new();
///         for (xi, &c) in x.chunks(2).zip(classes) {
///             let sign = if c == 0 { 1.0 } else { -1.0 };
///             let z = sign * 2.0 * f64::from(xi[0] - xi[1]);
///             let pc = 1.0 / (1.0 + (-z).exp());
///             let d = (1.0 - pc) * sign * 2.0;
///             p.push(pc);
///             g.extend([d as f32, -d as f32]);
///         }
///         Ok((p, g))
///     }
/// }
///
/// let out = invert(&mut Tilt, &[0, 1], &InversionConfig::default())?;
/// // Pushed from the midpoint to the range's corners (to within the f32
/// // resolution of the model's answers).
/// let near = |x: &[f32], corner: [f32; 2]| {
///     x.iter().zip(corner).all(|(a, b)| (a - b).abs() < 1e-6)
/// };
/// assert!(near(&out.images[0], [1.0, 0.0]));
/// assert!(near(&out.images[1], [0.0, 1.0]));
/// assert!(out.confidence[0] > 0.85);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn invert<M: WhiteBox>(
    model: &mut M,
    classes: &[usize],
    config: &InversionConfig,
) -> Result<Inversion> {
    let d = model.input_len();
    if d == 0 {
        return Err(invalid("input_len", 0, "the model has no inputs"));
    }
    if classes.is_empty() {
        return Err(invalid("classes", "[]", "need at least one class"));
    }
    if let Some(k) = model.num_classes()
        && let Some(&c) = classes.iter().find(|&&c| c >= k)
    {
        return Err(invalid("classes", c, format!("the model has {k} classes")));
    }
    let start = validated_start(config, d)?;
    let n = classes.len();
    let (lo, hi) = (f64::from(config.range.0), f64::from(config.range.1));
    let width = hi - lo;
    let step = config.lr * width;
    let prior = config
        .image_shape
        .filter(|_| config.tv_weight > 0.0)
        .map(|shape| (shape, config.tv_weight));
    // The sparsity prior's gradient magnitude, in input units.
    let pull = config.sparsity_weight / width;

    let mut x: Vec<f64> = (0..n).flat_map(|_| start.iter().copied()).collect();
    let mut m = vec![0.0; n * d];
    let mut v = vec![0.0; n * d];
    let mut best_x = x.clone();
    let mut best_j = vec![f64::NEG_INFINITY; n];
    let mut best_p = vec![f64::NAN; n];
    let mut tv_grad = vec![0.0; d];
    let mut grad = vec![0.0; n * d];

    for t in 0..=config.steps {
        let (probs, log_grads) = query(model, &x, classes, d)?;
        for i in 0..n {
            let xi = &x[i * d..(i + 1) * d];
            let gi = &mut grad[i * d..(i + 1) * d];
            let ln_p = probs[i].ln();
            // ℓ and dℓ/d(ln p): ln(p/(1 − p)) has gradient ∇ln p / (1 − p).
            let (mut objective, scale) = match config.objective {
                Objective::LogProb => (ln_p, 1.0),
                Objective::LogOdds => {
                    let q = (-ln_p.exp_m1()).max(ODDS_FLOOR);
                    (ln_p - q.ln(), 1.0 / q)
                }
            };
            for (g, &lg) in gi.iter_mut().zip(&log_grads[i * d..(i + 1) * d]) {
                *g = f64::from(lg) * scale;
            }
            if let Some((shape, lambda)) = prior {
                tv_grad.iter_mut().for_each(|g| *g = 0.0);
                objective -= lambda
                    * tv_accumulate(xi, shape, 1.0 / width, config.tv_smoothing, &mut tv_grad);
                for (g, tg) in gi.iter_mut().zip(&tv_grad) {
                    *g -= lambda * tg;
                }
            }
            if pull > 0.0 {
                for ((g, &xk), &x0) in gi.iter_mut().zip(xi).zip(&start) {
                    objective -= pull * (xk - x0).abs();
                    if xk > x0 {
                        *g -= pull;
                    } else if xk < x0 {
                        *g += pull;
                    } else {
                        // The minimum-norm subgradient at the kink: stay
                        // unless the rest of the gradient outweighs μ / s.
                        *g = g.signum() * (g.abs() - pull).max(0.0);
                    }
                }
            }
            // The first query always sets the best (even at ln 0 = −∞).
            if t == 0 || objective > best_j[i] {
                best_j[i] = objective;
                best_p[i] = probs[i];
                best_x[i * d..(i + 1) * d].copy_from_slice(xi);
            }
        }
        if t == config.steps {
            break;
        }
        // Adam ascent step, then projection onto [lo, hi].
        let k = (t + 1) as f64;
        let (c1, c2) = (1.0 - BETA1.powf(k), 1.0 - BETA2.powf(k));
        for j in 0..n * d {
            m[j] = BETA1 * m[j] + (1.0 - BETA1) * grad[j];
            v[j] = BETA2 * v[j] + (1.0 - BETA2) * grad[j] * grad[j];
            let update = step * (m[j] / c1) / ((v[j] / c2).sqrt() + ADAM_EPS);
            x[j] = (x[j] + update).clamp(lo, hi);
        }
    }

    Ok(Inversion {
        images: best_x
            .chunks(d)
            .map(|c| {
                c.iter()
                    .map(|&v| (v as f32).clamp(config.range.0, config.range.1))
                    .collect()
            })
            .collect(),
        confidence: best_p,
    })
}

/// How close one reconstruction comes to the examples of its class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearestDistance {
    /// The class the reconstruction was made for.
    pub class: usize,
    /// Euclidean distance to the nearest member (training example) of the
    /// class.
    pub to_member: f64,
    /// Euclidean distance to the nearest non-member (held-out example) of
    /// the class.
    pub to_non_member: f64,
    /// Index (row in `members`) of that nearest member.
    pub member_index: usize,
    /// Index (row in `non_members`) of that nearest non-member.
    pub non_member_index: usize,
}

impl NearestDistance {
    /// `to_member / to_non_member`: below 1 when the reconstruction is
    /// closer to the training data than to unseen data of its class (`∞`
    /// when it coincides with a non-member but not a member, NaN when it
    /// coincides with both).
    pub fn ratio(&self) -> f64 {
        self.to_member / self.to_non_member
    }
}

fn check_rows(name: &'static str, data: &[f32], labels: &[usize], dim: usize) -> Result<()> {
    if labels.len().checked_mul(dim) != Some(data.len()) {
        return Err(invalid(
            name,
            data.len(),
            format!("length must be {} labels · dim {dim}", labels.len()),
        ));
    }
    if let Some(v) = data.iter().find(|v| !v.is_finite()) {
        return Err(invalid(name, v, "values must be finite"));
    }
    Ok(())
}

/// The nearest row of `data` (rows of `dim` values) labelled `class`: its
/// index and Euclidean distance to `x`.
fn nearest(
    name: &'static str,
    x: &[f32],
    class: usize,
    data: &[f32],
    labels: &[usize],
    dim: usize,
) -> Result<(usize, f64)> {
    data.chunks(dim)
        .zip(labels)
        .enumerate()
        .filter(|&(_, (_, &l))| l == class)
        .map(|(i, (row, _))| {
            let sq: f64 = row
                .iter()
                .zip(x)
                .map(|(&a, &b)| {
                    let diff = f64::from(a) - f64::from(b);
                    diff * diff
                })
                .sum();
            (i, sq.sqrt())
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or_else(|| invalid(name, class, "no example of this class"))
}

/// Leakage figures of reconstructions: for each class, the Euclidean
/// distance from the reconstruction to the nearest member (training
/// example) of that class and to the nearest non-member (held-out example)
/// of that class; their [ratio](NearestDistance::ratio) summarises (< 1:
/// closer to the training data than to unseen data of the class).
///
/// `members` and `non_members` are row-major, `dim` values per example,
/// with one label per row; `reconstructions[i]` was made for `classes[i]`.
/// Ties go to the lowest index.
///
/// # Errors
///
/// [`Error::InvalidParameter`] when `dim = 0`, there are no
/// reconstructions, `classes` and `reconstructions` differ in length, a
/// reconstruction is not `dim` long, a data array is not `labels · dim`
/// long, a value is not finite, or a class has no member or no non-member.
///
/// # Examples
///
/// ```
/// use dpsgd_audit::inversion::nearest_distances;
/// let members = [0.0, 0.0, 3.0, 4.0];
/// let non_members = [6.0, 8.0];
/// let d = nearest_distances(&[vec![0.0, 1.0]], &[0], &members, &[0, 0], &non_members, &[0], 2)?;
/// assert_eq!(d[0].to_member, 1.0);
/// assert!((d[0].to_non_member - (36.0f64 + 49.0).sqrt()).abs() < 1e-12);
/// assert!(d[0].ratio() < 1.0);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn nearest_distances(
    reconstructions: &[Vec<f32>],
    classes: &[usize],
    members: &[f32],
    member_labels: &[usize],
    non_members: &[f32],
    non_member_labels: &[usize],
    dim: usize,
) -> Result<Vec<NearestDistance>> {
    if dim == 0 {
        return Err(invalid("dim", 0, "must be > 0"));
    }
    if reconstructions.is_empty() {
        return Err(invalid(
            "reconstructions",
            "[]",
            "need at least one reconstruction",
        ));
    }
    if classes.len() != reconstructions.len() {
        return Err(invalid(
            "classes",
            classes.len(),
            format!(
                "need one class per reconstruction ({})",
                reconstructions.len()
            ),
        ));
    }
    if let Some(r) = reconstructions.iter().find(|r| r.len() != dim) {
        return Err(invalid(
            "reconstructions",
            r.len(),
            format!("each must have dim = {dim} values"),
        ));
    }
    if let Some(v) = reconstructions.iter().flatten().find(|v| !v.is_finite()) {
        return Err(invalid("reconstructions", v, "values must be finite"));
    }
    check_rows("members", members, member_labels, dim)?;
    check_rows("non_members", non_members, non_member_labels, dim)?;
    reconstructions
        .iter()
        .zip(classes)
        .map(|(x, &class)| {
            let (member_index, to_member) =
                nearest("member_labels", x, class, members, member_labels, dim)?;
            let (non_member_index, to_non_member) = nearest(
                "non_member_labels",
                x,
                class,
                non_members,
                non_member_labels,
                dim,
            )?;
            Ok(NearestDistance {
                class,
                to_member,
                to_non_member,
                member_index,
                non_member_index,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;

    /// Softmax over `z_j = scale · ⟨W_j, x⟩ + bias_j`, with the exact
    /// gradient `∇ ln p_y = scale · (W_y − Σ_j p_j W_j)`.
    struct Linear {
        weights: Vec<Vec<f64>>,
        bias: Vec<f64>,
        scale: f64,
        calls: usize,
    }

    impl Linear {
        fn probs(&self, x: &[f32]) -> Vec<f64> {
            let z: Vec<f64> = self
                .weights
                .iter()
                .zip(&self.bias)
                .map(|(w, b)| {
                    self.scale * w.iter().zip(x).map(|(w, &x)| w * f64::from(x)).sum::<f64>() + b
                })
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|z| (z - max).exp()).collect();
            let total: f64 = e.iter().sum();
            e.iter().map(|e| e / total).collect()
        }
    }

    impl WhiteBox for Linear {
        fn input_len(&self) -> usize {
            self.weights[0].len()
        }

        fn num_classes(&self) -> Option<usize> {
            Some(self.weights.len())
        }

        fn log_prob_gradient(
            &mut self,
            inputs: &[f32],
            classes: &[usize],
        ) -> Result<(Vec<f64>, Vec<f32>)> {
            self.calls += 1;
            let d = self.input_len();
            let mut probs = Vec::new();
            let mut grads = Vec::new();
            for (x, &y) in inputs.chunks(d).zip(classes) {
                let p = self.probs(x);
                probs.push(p[y]);
                for k in 0..d {
                    let mean: f64 = p.iter().zip(&self.weights).map(|(p, w)| p * w[k]).sum();
                    grads.push((self.scale * (self.weights[y][k] - mean)) as f32);
                }
            }
            Ok((probs, grads))
        }
    }

    /// Ten distinct 8 × 8 binary templates: Walsh–Hadamard patterns on a
    /// 4 × 4 grid of 2 × 2 blocks (rows 1..=10 of the Sylvester matrix
    /// `H_ij = (−1)^popcount(i & j)`), as 0/1 values. Each has 8 white
    /// blocks, and any two differ in 8 of the 16 blocks (orthogonal once
    /// centred).
    fn templates() -> Vec<Vec<f32>> {
        (1..=10u32)
            .map(|k| {
                (0..64u32)
                    .map(|i| {
                        let cell = (i / 8 / 2) * 4 + (i % 8) / 2;
                        if (k & cell).count_ones() % 2 == 0 {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Cosine similarity of `a − ½` and `b − ½` (centred on the start).
    fn centred_cosine(a: &[f32], b: &[f32]) -> f64 {
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (&a, &b) in a.iter().zip(b) {
            let (a, b) = (f64::from(a) - 0.5, f64::from(b) - 0.5);
            ab += a * b;
            aa += a * a;
            bb += b * b;
        }
        ab / (aa * bb).sqrt()
    }

    fn planted() -> (Linear, Vec<Vec<f32>>) {
        let t = templates();
        let model = Linear {
            weights: t
                .iter()
                .map(|t| t.iter().map(|&v| f64::from(v) - 0.5).collect())
                .collect(),
            bias: (0..10).map(|j| 0.1 * j as f64).collect(),
            scale: 0.5,
            calls: 0,
        };
        (model, t)
    }

    /// Checks that each reconstruction is closest to its own template
    /// (centred cosine above `min_cosine`, at least 0.3 above any other
    /// template) and that its confidence exceeds `min_confidence` and is the
    /// model's on the returned image.
    fn check_recovery(
        model: &Linear,
        out: &Inversion,
        t: &[Vec<f32>],
        min_cosine: f64,
        min_confidence: f64,
    ) {
        assert_eq!(out.images.len(), t.len());
        for (c, x) in out.images.iter().enumerate() {
            let sims: Vec<f64> = t.iter().map(|t| centred_cosine(x, t)).collect();
            let best = (0..t.len())
                .max_by(|&a, &b| sims[a].total_cmp(&sims[b]))
                .unwrap();
            assert_eq!(best, c, "class {c}: similarities {sims:?}");
            assert!(sims[c] > min_cosine, "class {c}: {}", sims[c]);
            let runner_up = sims
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != c)
                .map(|(_, s)| *s)
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(sims[c] - runner_up > 0.3, "class {c}: {sims:?}");
            let confidence = out.confidence[c];
            assert!(confidence > min_confidence, "class {c}: {confidence}");
            assert!((model.probs(x)[c] - confidence).abs() < 1e-6);
        }
    }

    #[test]
    fn inversion_recovers_a_planted_class_template_on_a_linear_model() {
        let (mut model, t) = planted();
        let classes: Vec<usize> = (0..10).collect();
        // No smoothness prior (no image shape), the default sparsity prior
        // and start (the midpoint). At x = T_c the logit margin over any
        // other class is scale · 16 pixels = 8, less at most 0.9 of bias:
        // p_c(T_c) ≥ 1/(1 + 9 e^{−7.1}) = 0.9926. The pixels on which all
        // templates agree (block 0 is white in all of them) carry no margin
        // and stay at the start.
        let config = InversionConfig::default();
        let out = invert(&mut model, &classes, &config).unwrap();
        assert_eq!(model.calls, config.steps + 1);
        check_recovery(&model, &out, &t, 0.95, 0.99);
        // A light smoothness prior. These checkerboard-like templates are
        // the prior's worst case, yet they are still recovered.
        model.calls = 0;
        let config = InversionConfig {
            tv_weight: 0.001,
            ..InversionConfig::image(8, 8)
        };
        let out = invert(&mut model, &classes, &config).unwrap();
        assert_eq!(model.calls, config.steps + 1);
        check_recovery(&model, &out, &t, 0.8, 0.98);
        // The image defaults (blank start, both priors) recover them too.
        let out = invert(&mut model, &classes, &InversionConfig::image(8, 8)).unwrap();
        check_recovery(&model, &out, &t, 0.85, 0.99);
        // A stronger smoothness prior smooths: lower total variation than
        // without a prior (same start), confidence no higher (lower where
        // it gives up margin, equal where it only fills in the pixels
        // without margin), and on average closer to the templates: from the
        // blank start, block 0 (white in all templates) stays dark without
        // a prior but is filled in by its neighbours with one.
        let weighted = |tv_weight| InversionConfig {
            tv_weight,
            ..InversionConfig::image(8, 8)
        };
        let smooth = invert(&mut model, &classes, &weighted(0.3)).unwrap();
        let rough = invert(&mut model, &classes, &weighted(0.0)).unwrap();
        let tv = |x: &[f32]| total_variation(x, [8, 8], (0.0, 1.0)).unwrap().0;
        let (mut cos_smooth, mut cos_rough) = (0.0, 0.0);
        for (c, template) in t.iter().enumerate() {
            assert!(tv(&smooth.images[c]) < tv(&rough.images[c]), "class {c}");
            assert!(
                smooth.confidence[c] <= rough.confidence[c] + 1e-12,
                "class {c}"
            );
            assert!(smooth.confidence[c] > 0.95, "class {c}");
            cos_smooth += centred_cosine(&smooth.images[c], template) / 10.0;
            cos_rough += centred_cosine(&rough.images[c], template) / 10.0;
        }
        assert!(
            (0..10).any(|c| smooth.confidence[c] < rough.confidence[c] - 1e-6),
            "the prior costs some margin"
        );
        assert!(cos_smooth > cos_rough, "{cos_smooth} vs {cos_rough}");
    }

    #[test]
    fn inversion_beats_the_neutral_start() {
        let (mut model, _) = planted();
        // The images' neutral start is the blank canvas.
        let start = model.probs(&[0.0; 64]);
        let out = invert(&mut model, &[3], &InversionConfig::image(8, 8)).unwrap();
        assert!(start[3] < 0.2);
        assert!(out.confidence[0] > start[3]);
        // ln p saturates; the log-odds does not: with the same priors, the
        // log-odds ascent ends more confident.
        let log_prob = InversionConfig {
            objective: Objective::LogProb,
            ..InversionConfig::image(8, 8)
        };
        let out_ln_p = invert(&mut model, &[3], &log_prob).unwrap();
        assert!(out_ln_p.confidence[0] > start[3]);
        assert!(
            out.confidence[0] > out_ln_p.confidence[0],
            "{} vs {}",
            out.confidence[0],
            out_ln_p.confidence[0]
        );
    }

    /// A model without gradient: the priors alone decide.
    struct Flat;

    impl WhiteBox for Flat {
        fn input_len(&self) -> usize {
            4
        }

        fn log_prob_gradient(
            &mut self,
            _inputs: &[f32],
            classes: &[usize],
        ) -> Result<(Vec<f64>, Vec<f32>)> {
            let n = classes.len();
            Ok((vec![0.5; n], vec![0.0; 4 * n]))
        }
    }

    #[test]
    fn default_start_is_blank_for_images_and_the_midpoint_otherwise() {
        let range = (-1.0, 3.0);
        let out = invert(
            &mut Flat,
            &[0],
            &InversionConfig {
                range,
                ..InversionConfig::default()
            },
        )
        .unwrap();
        assert_eq!(out.images[0], vec![1.0; 4]);
        let image = InversionConfig {
            range,
            ..InversionConfig::image(2, 2)
        };
        let out = invert(&mut Flat, &[0], &image).unwrap();
        assert_eq!(out.images[0], vec![-1.0; 4]);
        assert_eq!(out.confidence, vec![0.5]);
    }

    /// Logits `(a · x₀ + b · x₁, 0)` for class 0 against class 1.
    struct Slopes {
        a: f64,
        b: f64,
    }

    impl WhiteBox for Slopes {
        fn input_len(&self) -> usize {
            2
        }

        fn log_prob_gradient(
            &mut self,
            inputs: &[f32],
            classes: &[usize],
        ) -> Result<(Vec<f64>, Vec<f32>)> {
            let mut probs = Vec::new();
            let mut grads = Vec::new();
            for (x, &c) in inputs.chunks(2).zip(classes) {
                assert_eq!(c, 0);
                let z = self.a * f64::from(x[0]) + self.b * f64::from(x[1]);
                let p = 1.0 / (1.0 + (-z).exp());
                probs.push(p);
                grads.extend([((1.0 - p) * self.a) as f32, ((1.0 - p) * self.b) as f32]);
            }
            Ok((probs, grads))
        }
    }

    #[test]
    fn sparsity_prior_soft_thresholds_weak_evidence() {
        // The log-odds is z itself: slopes 0.5 and 0.01 per unit input. A
        // pull of μ / s = 0.05 keeps the weak input at the blank start and
        // lets the strong one go to the top of the range.
        let config = InversionConfig {
            sparsity_weight: 0.05,
            tv_weight: 0.0,
            ..InversionConfig::image(1, 2)
        };
        let out = invert(&mut Slopes { a: 0.5, b: 0.01 }, &[0], &config).unwrap();
        assert_eq!(out.images[0], vec![1.0, 0.0]);
        // Without the prior both go up (the weak one more slowly).
        let config = InversionConfig {
            sparsity_weight: 0.0,
            ..config
        };
        let out = invert(&mut Slopes { a: 0.5, b: 0.01 }, &[0], &config).unwrap();
        assert_eq!(out.images[0][0], 1.0);
        assert!(out.images[0][1] > 0.5, "{:?}", out.images[0]);
        // An answer of p = 1 does not break the log-odds (1 − p is
        // floored): the first iterate past the floor is kept (the objective
        // is flat beyond it and there is no prior to break the tie).
        let out = invert(&mut Slopes { a: 100.0, b: 100.0 }, &[0], &config).unwrap();
        assert!(out.confidence[0] > 1.0 - ODDS_FLOOR, "{:?}", out.confidence);
        assert!(out.images[0].iter().all(|&v| v > 0.0 && v < 1.0));
    }

    #[test]
    fn tv_gradient_matches_finite_differences() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (h, w) = (5, 7);
        let x: Vec<f64> = (0..h * w)
            .map(|_| rng.random::<f64>() * 2.0 - 1.0)
            .collect();
        let inv_width = 1.0 / 2.0;
        // The default (near-quadratic) smoothing and total variation proper.
        for eps in [TV_SMOOTHING, 0.01] {
            let mut grad = vec![0.0; h * w];
            let tv = tv_accumulate(&x, [h, w], inv_width, eps, &mut grad);
            assert!(tv > 0.0);
            let step = 1e-6;
            let mut scratch = vec![0.0; h * w];
            for i in 0..h * w {
                let mut plus = x.clone();
                plus[i] += step;
                let mut minus = x.clone();
                minus[i] -= step;
                let fd = (tv_accumulate(&plus, [h, w], inv_width, eps, &mut scratch)
                    - tv_accumulate(&minus, [h, w], inv_width, eps, &mut scratch))
                    / (2.0 * step);
                assert!(
                    (fd - grad[i]).abs() < 1e-6,
                    "ε = {eps}, pixel {i}: {fd} vs {}",
                    grad[i]
                );
            }
        }
        // A constant image has no variation and a zero gradient.
        let (tv, g) = total_variation(&[0.3; 12], [3, 4], (0.0, 1.0)).unwrap();
        assert_eq!(tv, 0.0);
        assert!(g.iter().all(|&g| g == 0.0));
        // Differences are measured in range widths: scaling image and range
        // together leaves TV unchanged.
        let img: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let big: Vec<f32> = img.iter().map(|&v| v * 10.0).collect();
        let a = total_variation(&img, [h, w], (-1.0, 1.0)).unwrap().0;
        let b = total_variation(&big, [h, w], (-10.0, 10.0)).unwrap().0;
        assert!((a - b).abs() < 1e-4 * a);
        assert!(total_variation(&img, [h, h], (0.0, 1.0)).is_err());
        assert!(total_variation(&img, [h, w], (1.0, 1.0)).is_err());
    }

    /// A model whose log-probability gradient is a fixed, huge vector.
    struct Push {
        gradient: Vec<f32>,
    }

    impl WhiteBox for Push {
        fn input_len(&self) -> usize {
            self.gradient.len()
        }

        fn log_prob_gradient(
            &mut self,
            inputs: &[f32],
            classes: &[usize],
        ) -> Result<(Vec<f64>, Vec<f32>)> {
            assert!(inputs.iter().all(|&v| (-2.0..=3.0).contains(&v)));
            let n = classes.len();
            let grads = (0..n).flat_map(|_| self.gradient.iter().copied()).collect();
            Ok((vec![0.5; n], grads))
        }
    }

    #[test]
    fn projection_keeps_iterates_in_range() {
        let mut model = Push {
            gradient: vec![1e6, -1e6, 1e-3, -1e-3, 0.0],
        };
        let config = InversionConfig {
            steps: 200,
            lr: 0.5,
            range: (-2.0, 3.0),
            start: Some(vec![0.0; 5]),
            ..InversionConfig::default()
        };
        // `Push` asserts that every queried iterate lies in [−2, 3], though
        // the steps (half the range, 2.5, at first) overshoot it.
        let out = invert(&mut model, &[0, 1], &config).unwrap();
        // Equal confidence throughout, and the sparsity prior charges every
        // move: the first iterate (the start) is kept.
        assert_eq!(out.images[0], vec![0.0; 5]);
        assert_eq!(out.confidence, vec![0.5, 0.5]);
        // The log-odds 0.01 · (x₀ − x₁) grows along the path faster than
        // the sparsity prior's charge (μ / s = 0.006 per unit of input), so
        // the last iterate (scored once more) is returned, and it sits on
        // the bounds.
        let mut model = Linear {
            weights: vec![vec![1.0, -1.0, 0.0], vec![0.0; 3]],
            bias: vec![0.0, 0.0],
            scale: 0.01,
            calls: 0,
        };
        let config = InversionConfig {
            steps: 50,
            range: (-2.0, 3.0),
            ..InversionConfig::default()
        };
        let out = invert(&mut model, &[0], &config).unwrap();
        assert_eq!(out.images[0][0], 3.0);
        assert_eq!(out.images[0][1], -2.0);
        assert_eq!(out.images[0][2], 0.5); // no gradient: stays at the midpoint
        // Without the prior, the same.
        let config = InversionConfig {
            sparsity_weight: 0.0,
            ..config
        };
        let out = invert(&mut model, &[0], &config).unwrap();
        assert_eq!(out.images[0], vec![3.0, -2.0, 0.5]);
    }

    /// A model that fails, or answers malformed values.
    struct Broken {
        answer: Option<(Vec<f64>, Vec<f32>)>,
    }

    impl WhiteBox for Broken {
        fn input_len(&self) -> usize {
            2
        }

        fn log_prob_gradient(
            &mut self,
            _inputs: &[f32],
            _classes: &[usize],
        ) -> Result<(Vec<f64>, Vec<f32>)> {
            self.answer.clone().ok_or_else(|| Error::Query {
                reason: "budget exhausted".into(),
            })
        }
    }

    #[test]
    fn should_reject_bad_settings_and_propagate_model_errors() {
        let (mut model, _) = planted();
        let bad = |config: InversionConfig, classes: &[usize], model: &mut Linear| {
            matches!(
                invert(model, classes, &config),
                Err(Error::InvalidParameter { .. })
            )
        };
        let ok = InversionConfig::default;
        assert!(bad(ok(), &[], &mut model));
        assert!(bad(ok(), &[10], &mut model)); // 10 classes: 0..=9
        assert!(bad(InversionConfig { steps: 0, ..ok() }, &[0], &mut model));
        assert!(bad(InversionConfig { lr: 0.0, ..ok() }, &[0], &mut model));
        assert!(bad(
            InversionConfig {
                lr: f64::NAN,
                ..ok()
            },
            &[0],
            &mut model
        ));
        let tv_weight = -1.0;
        assert!(bad(InversionConfig { tv_weight, ..ok() }, &[0], &mut model));
        for tv_smoothing in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = InversionConfig {
                tv_smoothing,
                ..ok()
            };
            assert!(bad(config, &[0], &mut model));
        }
        for sparsity_weight in [-0.1, f64::NAN, f64::INFINITY] {
            let config = InversionConfig {
                sparsity_weight,
                ..ok()
            };
            assert!(bad(config, &[0], &mut model));
        }
        for range in [
            (1.0, 1.0),
            (1.0, 0.0),
            (f32::NAN, 1.0),
            (0.0, f32::INFINITY),
        ] {
            assert!(bad(InversionConfig { range, ..ok() }, &[0], &mut model));
        }
        assert!(bad(InversionConfig::image(8, 7), &[0], &mut model));
        let start = Some(vec![0.5; 63]);
        assert!(bad(InversionConfig { start, ..ok() }, &[0], &mut model));
        let mut start = vec![0.5; 64];
        start[5] = 1.5;
        let start = Some(start);
        assert!(bad(InversionConfig { start, ..ok() }, &[0], &mut model));
        assert_eq!(model.calls, 0);

        let query_err = |answer| {
            matches!(
                invert(&mut Broken { answer }, &[0], &InversionConfig::default()),
                Err(Error::Query { .. })
            )
        };
        assert_eq!(
            invert(&mut Broken { answer: None }, &[0], &ok()),
            Err(Error::Query {
                reason: "budget exhausted".into()
            })
        );
        assert!(query_err(Some((vec![0.5, 0.5], vec![0.0; 2])))); // two probabilities
        assert!(query_err(Some((vec![0.5], vec![0.0; 3])))); // three gradient values
        assert!(query_err(Some((vec![1.5], vec![0.0; 2]))));
        assert!(query_err(Some((vec![f64::NAN], vec![0.0; 2]))));
        assert!(query_err(Some((vec![0.5], vec![f32::NAN, 0.0]))));
        assert!(!query_err(Some((vec![0.5], vec![0.0; 2]))));
    }

    #[test]
    fn nearest_distances_by_hand() {
        // dim 2; members: class 0 at (0,0) and (3,4), class 1 at (1,1);
        // non-members: class 0 at (0,3), class 1 at (5,5) and (1,2).
        let members = [0.0, 0.0, 3.0, 4.0, 1.0, 1.0];
        let member_labels = [0, 0, 1];
        let non_members = [0.0, 3.0, 5.0, 5.0, 1.0, 2.0];
        let non_member_labels = [0, 1, 1];
        let recs = vec![vec![3.0, 3.0], vec![1.0, 1.0]];
        let d = nearest_distances(
            &recs,
            &[0, 1],
            &members,
            &member_labels,
            &non_members,
            &non_member_labels,
            2,
        )
        .unwrap();
        // (3,3): members of class 0 at distances √18 and 1 → 1 (index 1);
        // the class-0 non-member (0,3) at 3.
        assert_eq!(d[0].class, 0);
        assert_eq!((d[0].to_member, d[0].member_index), (1.0, 1));
        assert_eq!((d[0].to_non_member, d[0].non_member_index), (3.0, 0));
        assert!((d[0].ratio() - 1.0 / 3.0).abs() < 1e-12);
        // (1,1) is the class-1 member itself; the nearest class-1 non-member
        // is (1,2) at 1, not (5,5).
        assert_eq!(d[1].class, 1);
        assert_eq!((d[1].to_member, d[1].member_index), (0.0, 2));
        assert_eq!((d[1].to_non_member, d[1].non_member_index), (1.0, 2));
        assert_eq!(d[1].ratio(), 0.0);
    }

    #[test]
    fn nearest_distances_rejects_malformed_input() {
        let m = [0.0, 0.0, 1.0, 1.0];
        let ml = [0, 1];
        let r = vec![vec![0.5, 0.5]];
        let bad = |r: &[Vec<f32>], c: &[usize], m: &[f32], ml: &[usize], dim| {
            matches!(
                nearest_distances(r, c, m, ml, &m[..2], &ml[..1], dim),
                Err(Error::InvalidParameter { .. })
            )
        };
        assert!(!bad(&r, &[0], &m, &ml, 2));
        assert!(bad(&r, &[0], &m, &ml, 0));
        assert!(bad(&[], &[], &m, &ml, 2));
        assert!(bad(&r, &[0, 0], &m, &ml, 2));
        assert!(bad(&[vec![0.5]], &[0], &m, &ml, 2));
        assert!(bad(&[vec![f32::NAN, 0.0]], &[0], &m, &ml, 2));
        assert!(bad(&r, &[0], &m[..3], &ml, 2));
        assert!(bad(&r, &[0], &[0.0, f32::INFINITY, 1.0, 1.0], &ml, 2));
        // Class 1 has a member but no non-member; class 2 has neither.
        assert!(bad(&r, &[1], &m, &ml, 2));
        assert!(bad(&r, &[2], &m, &ml, 2));
    }

    /// The planted model as a black box answering probability vectors.
    type Answer<'a> = Box<dyn FnMut(&[f32], usize) -> Result<Vec<Vec<f64>>> + 'a>;

    fn black_box(model: &Linear) -> crate::hardening::FnOracle<Answer<'_>> {
        crate::hardening::FnOracle::new(
            10,
            Box::new(move |inputs: &[f32], d: usize| {
                Ok(inputs.chunks(d).map(|x| model.probs(x)).collect())
            }),
        )
    }

    #[test]
    fn zeroth_order_gradient_estimates_the_exact_one() {
        let (mut model, t) = planted();
        let x: Vec<f32> = t[4].iter().map(|v| 0.3 + 0.4 * v).collect();
        let (p, exact) = model.log_prob_gradient(&x, &[4]).unwrap();
        let reference = planted().0;
        let mut zo = ZerothOrder::new(black_box(&reference), 64, 4000, 1e-3, 7).unwrap();
        let (q, estimate) = zo.log_prob_gradient(&x, &[4]).unwrap();
        assert_eq!(zo.queries(), 1 + 2 * 4000);
        assert!((p[0] - q[0]).abs() < 1e-9, "{p:?} vs {q:?}");
        // Cosine of the estimate with the exact gradient: with K = 4000
        // directions in d = 64 the relative error is about √(d/K) ≈ 0.13.
        let dot: f64 = exact
            .iter()
            .zip(&estimate)
            .map(|(a, b)| f64::from(a * b))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
        let cosine = dot / (norm(&exact) * norm(&estimate));
        assert!(cosine > 0.95, "{cosine}");
        assert!((norm(&estimate) / norm(&exact) - 1.0).abs() < 0.25);
    }

    #[test]
    fn black_box_inversion_recovers_the_templates_from_full_outputs() {
        let (model, t) = planted();
        let classes: Vec<usize> = (0..10).collect();
        let config = InversionConfig::default();
        let mut zo = ZerothOrder::new(black_box(&model), 64, 16, 0.05, 1).unwrap();
        let out = invert(&mut zo, &classes, &config).unwrap();
        assert_eq!(zo.queries(), (config.steps as u64 + 1) * 10 * 33);
        check_recovery(&model, &out, &t, 0.8, 0.9);
    }

    #[test]
    fn hardening_stops_black_box_inversion() {
        use crate::hardening::{Hardened, Release};
        let (model, _) = planted();
        let config = InversionConfig::default();
        // Label only: every perturbation answers the same one-hot vector,
        // the estimate is zero and the ascent never leaves the start.
        let mut hardened = Hardened::new(black_box(&model), Release::LabelOnly).unwrap();
        let mut zo = ZerothOrder::new(hardened.client("inverter"), 64, 16, 0.05, 1).unwrap();
        let out = invert(&mut zo, &[3], &config).unwrap();
        assert!(
            out.images[0].iter().all(|&v| v == 0.5),
            "{:?}",
            out.images[0]
        );
        // A query budget: refused once the ascent has used it, counted.
        let budget = 10 * 33;
        let mut hardened = Hardened::new(black_box(&model), Release::Full)
            .unwrap()
            .with_budget(budget);
        let mut zo = ZerothOrder::new(hardened.client("inverter"), 64, 16, 0.05, 1).unwrap();
        let err = invert(&mut zo, &[3], &config).unwrap_err();
        assert!(matches!(err, Error::Query { .. }), "{err}");
        drop(zo);
        assert_eq!(hardened.served("inverter"), budget);
        assert_eq!(hardened.refused("inverter"), 33);
    }
}
