//! `dpsgd bench check`: the DP engine's fast path, and its fallback,
//! against per-example gradients by their definition
//! ([`dpsgd_burn::reference`]: one backward pass per example on the
//! device, in f32, each gradient read back, clipped and summed in f64 on
//! the host), for the benchmark models on one backend.
//!
//! The engine's tests do this on small layers for every backend in the
//! build; this runs the models users train, on the device a user has (a
//! GPU through wgpu, say), from a binary that can be carried there.

use super::{BenchModel, VOCAB, image_batch, image_loss, token_batch};
use crate::flags::parse;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::Tensor;
use dpsgd::models::{Cnn, Mlp};
use dpsgd::train::text::{TextLstm, TextModelConfig, TextTransformer};
use dpsgd_burn::backend::Backend;
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::reference::{
    ExampleGradient, clipped_sum, floored_relative_error, naive_per_example, norm,
};
use dpsgd_burn::{EngineMode, ExampleBatch, GradientEngine};
use dpsgd_core::{ClippedGradients, Clipping, GradientMethod, trainable_params};
use serde_json::json;

/// Arguments of `dpsgd bench check`.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct CheckArgs {
    /// The models to check (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1..,
          default_values_t = [BenchModel::Mlp, BenchModel::Cnn, BenchModel::Transformer, BenchModel::Lstm])]
    models: Vec<BenchModel>,
    /// Backend: one compiled into this build.
    #[arg(long, default_value = "flex", value_parser = parse::backend())]
    backend: Backend,
    /// Examples in the batch (the reference costs one backward pass each).
    #[arg(long, allow_hyphen_values = true, default_value_t = 8, value_parser = parse::positive_count)]
    batch_size: usize,
    /// Sequence length of the text models' token batches.
    #[arg(long, allow_hyphen_values = true, default_value_t = 16, value_parser = parse::positive_count)]
    seq_len: usize,
    /// Seed of the initial weights and of the synthetic inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Largest relative error accepted, for the per-example norms and for
    /// each parameter's clipped sum (f32 arithmetic against f64).
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// One JSON object per model and line.
    #[arg(long)]
    json: bool,
}

/// What one model's check found.
struct Outcome {
    method: String,
    clip_norm: f64,
    clipped_examples: usize,
    norm_error: f64,
    fast_error: f64,
    fast_worst: String,
    fallback_error: f64,
}

impl Outcome {
    /// Every error within `tolerance` (a NaN error fails) on the fast path.
    fn passed(&self, tolerance: f64) -> bool {
        self.method == "fast path"
            && self.norm_error <= tolerance
            && self.fast_error <= tolerance
            && self.fallback_error <= tolerance
    }
}

/// Runs the check for every model; fails after reporting them all when one
/// does not pass.
pub(super) fn run(a: &CheckArgs) -> Result<()> {
    let device = a.backend.autodiff_device().map_err(anyhow::Error::msg)?;
    let text = TextModelConfig::new(VOCAB, a.seq_len, 2);
    let mut failed = Vec::new();
    for &model in &a.models {
        device.seed(a.seed);
        let outcome = match model {
            BenchModel::Mlp => check(
                &Mlp::new(&[784, 512, 256, 10], &device),
                &image_batch(a.batch_size, &device, a.seed),
                image_loss,
            ),
            BenchModel::Cnn => check(
                &Cnn::new(28, 28, 10, &device),
                &image_batch(a.batch_size, &device, a.seed),
                image_loss,
            ),
            BenchModel::Transformer => check(
                &TextTransformer::new(&text, &device),
                &token_batch(a.batch_size, a.seq_len, &device, a.seed),
                |m: &TextTransformer, b: &super::Tokens| {
                    cross_entropy_per_example(m.logits(b.0.clone(), None), b.1.clone())
                },
            ),
            BenchModel::Lstm => check(
                &TextLstm::new(&text, &device),
                &token_batch(a.batch_size, a.seq_len, &device, a.seed),
                |m: &TextLstm, b: &super::Tokens| {
                    cross_entropy_per_example(m.logits(b.0.clone(), None), b.1.clone())
                },
            ),
        }?;
        let passed = outcome.passed(a.tolerance);
        let name = format!("{model:?}").to_lowercase();
        if a.json {
            println!(
                "{}",
                json!({
                    "model": name,
                    "backend": a.backend.name(),
                    "batch_size": a.batch_size,
                    "seq_len": matches!(model, BenchModel::Transformer | BenchModel::Lstm).then_some(a.seq_len),
                    "seed": a.seed,
                    "dp_method": outcome.method,
                    "clip_norm": outcome.clip_norm,
                    "clipped_examples": outcome.clipped_examples,
                    "norm_relative_error": outcome.norm_error,
                    "fast_path_relative_error": outcome.fast_error,
                    "fast_path_worst_parameter": outcome.fast_worst,
                    "fallback_relative_error": outcome.fallback_error,
                    "tolerance": a.tolerance,
                    "passed": passed,
                })
            );
        } else {
            println!(
                "{name} on {}: {} of {} examples clipped at C = {:.4}; norms within {:.1e}, fast-path sums within {:.1e} (worst: {}), fallback within {:.1e} of the per-example loop — {}",
                a.backend,
                outcome.clipped_examples,
                a.batch_size,
                outcome.clip_norm,
                outcome.norm_error,
                outcome.fast_error,
                outcome.fast_worst,
                outcome.fallback_error,
                if passed {
                    "ok".to_owned()
                } else if outcome.method != "fast path" {
                    format!(
                        "FAILED (the engine did not take the fast path: {})",
                        outcome.method
                    )
                } else {
                    format!("FAILED (tolerance {:.0e})", a.tolerance)
                }
            );
        }
        if !passed {
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "the engine disagrees with the per-example loop on {} (backend {}, tolerance {:e})",
            failed.join(", "),
            a.backend,
            a.tolerance
        );
    }
    Ok(())
}

/// The engine (fast path, then fallback) against the reference at a C
/// between the examples' norms (their median), so that the batch mixes
/// clipped and unclipped examples.
fn check<M: Module, B: ExampleBatch>(
    model: &M,
    batch: &B,
    loss: impl Fn(&M, &B) -> Tensor<1> + Copy,
) -> Result<Outcome> {
    let reference = naive_per_example(model, batch, loss);
    let mut norms: Vec<f64> = reference.iter().map(norm).collect();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let c = sorted[sorted.len() / 2].max(f64::MIN_POSITIVE);
    let want = clipped_sum(&reference, c);
    let whole = norm(&want);
    let mut fast_engine = GradientEngine::new(Clipping::flat(c)?);
    let fast = fast_engine.clipped_gradients(model, batch, loss)?;
    let method = match fast.method() {
        GradientMethod::FastPath { .. } => "fast path".to_owned(),
        other => format!("{other:?}"),
    };
    let got_norms = fast.per_example_norms();
    if got_norms.len() != norms.len() {
        bail!(
            "the engine returned {} per-example norms for {} examples",
            got_norms.len(),
            norms.len()
        );
    }
    let norm_error = got_norms
        .iter()
        .zip(&norms)
        .map(|(got, want)| finite_or_inf((f64::from(*got) - want).abs() / want.max(1e-12)))
        .fold(0.0, f64::max);
    let (fast_error, fast_worst) = sum_error(model, &fast, &want, whole);
    let mut fallback_engine =
        GradientEngine::new(Clipping::flat(c)?).with_mode(EngineMode::FallbackOnly);
    let slow = fallback_engine.clipped_gradients(model, batch, loss)?;
    let (fallback_error, _) = sum_error(model, &slow, &want, whole);
    norms.retain(|n| *n > c);
    Ok(Outcome {
        method,
        clip_norm: c,
        clipped_examples: norms.len(),
        norm_error,
        fast_error,
        fast_worst,
        fallback_error,
    })
}

/// The largest error of a parameter's clipped sum against the reference
/// ([`floored_relative_error`]), with the parameter's name.
fn sum_error<M: Module>(
    model: &M,
    got: &ClippedGradients,
    want: &ExampleGradient,
    whole: f64,
) -> (f64, String) {
    let mut worst = (0.0f64, String::from("-"));
    for p in trainable_params(model) {
        let a: Vec<f64> = got.sum(&p.id).map_or_else(
            || vec![0.0; p.numel()],
            |t| t.clone().into_data().iter::<f32>().map(f64::from).collect(),
        );
        let zeros = vec![0.0; p.numel()];
        let b = want.get(&p.id).unwrap_or(&zeros);
        let err = finite_or_inf(floored_relative_error(&a, b, whole));
        if err > worst.0 || worst.1 == "-" {
            worst = (err, p.name());
        }
    }
    worst
}

/// A NaN or infinite error as +∞: `f64::max` would skip a NaN, and a
/// comparison with the tolerance would not see it.
fn finite_or_inf(e: f64) -> f64 {
    if e.is_finite() { e } else { f64::INFINITY }
}
