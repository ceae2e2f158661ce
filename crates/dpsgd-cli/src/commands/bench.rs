//! `dpsgd bench step`: the cost of a DP step against a non-private step of
//! the same model, batch and backend, measured in one process; `dpsgd bench
//! check`: the engine against the per-example loop on a backend.

mod check;
mod torch;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use dpsgd::models::{Classifier, Cnn, Mlp};
use dpsgd::train::text::{TextLstm, TextModelConfig, TextTransformer};
use dpsgd_burn::ExampleBatch;
use dpsgd_burn::backend::Backend;
use dpsgd_burn::layers::{ConvStrategy, with_conv_strategy};
use dpsgd_burn::loss::cross_entropy_per_example;
use dpsgd_burn::{EngineMode, GradientEngine, PassSize};
use dpsgd_core::{Clipping, DpOptimizer, DpSettings};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::Instant;

/// `dpsgd bench ...`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Time one training step: non-private, DP (fast path) and DP (fallback).
    Step(StepArgs),
    /// Check the DP engine's clipped sums and per-example norms against the
    /// per-example loop (one backward pass per example on the device, each
    /// gradient clipped and summed in f64 on the host) for the benchmark
    /// models on a backend; exit 1 on a mismatch.
    Check(check::CheckArgs),
}

/// The benchmark models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchModel {
    /// MLP 784-512-256-10 (ReLU).
    Mlp,
    /// The classic DP MNIST CNN (28×28×1 input).
    Cnn,
    /// Transformer encoder classifier: 2 layers, d = 128, 4 heads, over
    /// `--seq-len` tokens of a 1 000-word vocabulary.
    Transformer,
    /// LSTM classifier: embeddings and one LSTM layer of width 128 over
    /// `--seq-len` tokens.
    Lstm,
}

#[derive(Debug, Clone, clap::Args)]
struct StepArgs {
    /// Which model.
    #[arg(long, value_enum, default_value = "mlp")]
    model: BenchModel,
    /// Batch size (MNIST-shaped synthetic inputs, or token sequences).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Several batch sizes, measured one after the other in this process
    /// (`64,256,1024,4096`): one line each (one JSON object per line with
    /// `--json`), so the DP step's overhead can be read against the batch.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with = "batch_size")]
    batch_sizes: Option<Vec<usize>>,
    /// Sequence length of the text models' synthetic token batches.
    #[arg(long, allow_hyphen_values = true, default_value_t = 64, value_parser = crate::flags::parse::positive_count)]
    seq_len: usize,
    /// Backend: one compiled into this build (the others need
    /// `--features ndarray`, `wgpu` or `cuda`).
    #[arg(long, default_value = "flex", value_parser = crate::flags::parse::backend())]
    backend: Backend,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Untimed warm-up steps (before every block of timed steps).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Alternate the two kinds of step this many times: each round times
    /// `--repeats` non-private steps, then `--repeats` DP steps, each block
    /// after its own `--warmup` steps (which also absorb the last DP step's
    /// background noise draw, when they take longer than it). On a machine
    /// whose speed drifts, each of the per-round ratios (`round_ratios`:
    /// DP / non-private, for the CNN against burn's own convolution)
    /// compares steps timed close together; `non_private_ms`, `dp_ms` and
    /// `ratio` are the medians of all rounds' steps.
    #[arg(long, default_value_t = 1, value_parser = crate::flags::parse::positive_count)]
    rounds: usize,
    /// How the DP engine splits a batch into forward and backward passes:
    /// `auto` (the library's default: on a CPU, passes whose recorded
    /// inputs and output gradients stay under 2 Mi values), `whole` (one
    /// pass) or a number of examples per pass.
    #[arg(long, value_name = "auto|whole|N", default_value = "auto", allow_hyphen_values = true, value_parser = pass_size)]
    pass_size: PassSize,
    /// Timed repetitions of the (slow) fallback engine; 0 skips it.
    #[arg(long, default_value_t = 2)]
    fallback_repeats: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also time PyTorch's own step and Opacus's DP modes on the same
    /// model and shapes of batch, once per round right after dpsgd's (the
    /// reference script benches/reference/torch_step.py, embedded in this
    /// binary; it needs torch, and opacus for `--torch-modes`). Each line
    /// gains `torch_ms`, `opacus_<mode>_ms` (medians over the rounds, and
    /// `..._round_ms` per round), `non_private_vs_torch`, `dp_vs_torch` and
    /// `dp_vs_opacus_best`. torch gets this process's thread count through
    /// `OMP_NUM_THREADS` unless that is set.
    #[arg(long)]
    compare_torch: bool,
    /// The Python interpreter `--compare-torch` runs.
    #[arg(long, default_value = "python3", requires = "compare_torch")]
    python: std::path::PathBuf,
    /// A script to run instead of the embedded reference script (same
    /// flags and output as benches/reference/torch_step.py).
    #[arg(long, requires = "compare_torch")]
    torch_script: Option<std::path::PathBuf>,
    /// The Opacus modes `--compare-torch` times besides torch's own step:
    /// `hooks` (per-example gradients materialised: slow at large
    /// batches), `ghost` (ghost clipping), or '' for none.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hooks,ghost",
        requires = "compare_torch"
    )]
    torch_modes: Vec<String>,
    /// Where torch runs: `cpu`, or `cuda` (the default for the wgpu and
    /// cuda backends).
    #[arg(long, requires = "compare_torch")]
    torch_device: Option<String>,
    /// Internal: measure the peak memory of one mode in this process.
    #[arg(long, hide = true)]
    memory_probe: Option<String>,
}

/// Runs the command.
///
/// # Errors
///
/// Backend not enabled, or a failing step.
pub fn run(a: &Args) -> Result<()> {
    match &a.what {
        What::Step(s) => step(s),
        What::Check(c) => check::run(c),
    }
}

fn step(a: &StepArgs) -> Result<()> {
    let sizes = a.batch_sizes.clone().unwrap_or_else(|| vec![a.batch_size]);
    if sizes.contains(&0) || a.repeats == 0 {
        bail!(crate::error::UsageError {
            flag: "--batch-size/--repeats",
            message: "must be at least 1".into()
        });
    }
    let torch = a.compare_torch.then(|| torch_side(a)).transpose()?;
    for batch_size in sizes {
        step_one(
            &StepArgs {
                batch_size,
                batch_sizes: None,
                ..a.clone()
            },
            torch.as_ref(),
        )?;
    }
    Ok(())
}

/// The PyTorch side of `--compare-torch`, checked before anything is
/// timed.
fn torch_side(a: &StepArgs) -> Result<torch::TorchSide> {
    let modes: Vec<String> = a
        .torch_modes
        .iter()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    let device = a.torch_device.clone().unwrap_or_else(|| {
        if matches!(a.backend, Backend::Flex | Backend::Ndarray) {
            "cpu".into()
        } else {
            "cuda".into()
        }
    });
    // burn's CPU backends run on rayon's pool: RAYON_NUM_THREADS, else
    // every available core.
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(dpsgd_core::cores);
    let side = torch::TorchSide {
        python: a.python.clone().into_os_string(),
        script: a.torch_script.clone(),
        model: format!("{:?}", a.model).to_lowercase(),
        seq_len: a.seq_len,
        repeats: a.repeats,
        modes,
        device,
        threads,
    };
    side.check()?;
    Ok(side)
}

fn step_one(a: &StepArgs, torch: Option<&torch::TorchSide>) -> Result<()> {
    let device = a.backend.autodiff_device().map_err(anyhow::Error::msg)?;
    let text = TextModelConfig::new(VOCAB, a.seq_len, 2);
    match a.model {
        BenchModel::Mlp => bench(
            a,
            torch,
            &device,
            || Mlp::new(&[784, 512, 256, 10], &device),
            image_batch(a.batch_size, &device, 1),
            image_loss,
        ),
        BenchModel::Cnn => bench(
            a,
            torch,
            &device,
            || Cnn::new(28, 28, 10, &device),
            image_batch(a.batch_size, &device, 1),
            image_loss,
        ),
        BenchModel::Transformer => bench(
            a,
            torch,
            &device,
            || TextTransformer::new(&text, &device),
            token_batch(a.batch_size, a.seq_len, &device, 1),
            |m: &TextTransformer, b: &Tokens| {
                cross_entropy_per_example(m.logits(b.0.clone(), None), b.1.clone())
            },
        ),
        BenchModel::Lstm => bench(
            a,
            torch,
            &device,
            || TextLstm::new(&text, &device),
            token_batch(a.batch_size, a.seq_len, &device, 1),
            |m: &TextLstm, b: &Tokens| {
                cross_entropy_per_example(m.logits(b.0.clone(), None), b.1.clone())
            },
        ),
    }
}

/// Vocabulary of the text benchmarks' synthetic tokens.
const VOCAB: usize = 1000;

/// Token ids `[B, S]` and labels `[B]`.
type Tokens = (Tensor<2, Int>, Tensor<1, Int>);

/// `n` sequences of `seq` synthetic tokens and their labels, from `seed`.
fn token_batch(n: usize, seq: usize, device: &Device, seed: u64) -> Tokens {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<i64> = (0..n * seq)
        .map(|_| rng.random_range(0..VOCAB as i64))
        .collect();
    let y: Vec<i64> = (0..n).map(|_| rng.random_range(0..2)).collect();
    (
        Tensor::from_data(TensorData::new(ids, [n, seq]), device),
        Tensor::from_data(TensorData::new(y, [n]), device),
    )
}

/// `n` MNIST-shaped images of uniform noise and their labels, from `seed`.
fn image_batch(n: usize, device: &Device, seed: u64) -> (Tensor<4>, Tensor<1, Int>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..n * 784).map(|_| rng.random::<f32>()).collect();
    let y: Vec<i64> = (0..n).map(|_| rng.random_range(0..10)).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, 1, 28, 28]), device),
        Tensor::from_data(TensorData::new(y, [n]), device),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Batch = (Tensor<4>, Tensor<1, Int>);

fn image_loss<M: Classifier>(m: &M, b: &Batch) -> Tensor<1> {
    cross_entropy_per_example(m.logits(b.0.clone()), b.1.clone())
}

/// Times `steps` calls of `f` after `warmup` (device synced each time).
fn time_steps(
    device: &Device,
    warmup: usize,
    steps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
        device.sync().context("device sync")?;
    }
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        f()?;
        device.sync().context("device sync")?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

fn bench<M: Module + 'static, B: ExampleBatch>(
    a: &StepArgs,
    torch: Option<&torch::TorchSide>,
    device: &Device,
    make: impl Fn() -> M,
    data: B,
    loss: impl Fn(&M, &B) -> Tensor<1> + Copy,
) -> Result<()> {
    let clipping = Clipping::flat(1.0)?;
    let settings = DpSettings {
        noise_multiplier: 1.0,
        clipping: clipping.clone(),
        sample_rate: a.batch_size as f64 / 60_000.0,
        dataset_size: 60_000,
        accountant: Default::default(),
        budget: None,
    };
    let mut model = Some(make());
    let mut optim = SgdConfig::new().init();
    let mut non_private = || -> Result<()> {
        let m = model.take().context("model")?;
        let grads = loss(&m, &data).mean().backward();
        let grads = GradientsParams::from_grads(grads, &m);
        model = Some(optim.step(0.01, m, grads));
        Ok(())
    };
    let mut dp_model = Some(make());
    let mut engine = GradientEngine::new(clipping.clone()).with_pass_size(a.pass_size);
    let mut dp = DpOptimizer::new(SgdConfig::new().init(), settings.clone())?;
    let mut dp_step = |engine: &mut GradientEngine, dp: &mut DpOptimizer| -> Result<()> {
        let m = dp_model.take().context("model")?;
        let clipped = engine.clipped_gradients(&m, &data, loss)?;
        dp_model = Some(dp.step(0.01, m, clipped).map_err(|r| r.error)?);
        Ok(())
    };
    if let Some(mode) = &a.memory_probe {
        let before = rss_kib("VmRSS")?;
        reset_peak();
        match mode.as_str() {
            "nonprivate" => time_steps(device, PROBE_WARMUP, PROBE_STEPS, &mut non_private)?,
            "dp" => time_steps(device, PROBE_WARMUP, PROBE_STEPS, || {
                dp_step(&mut engine, &mut dp)
            })?,
            other => bail!("unknown memory probe {other}"),
        };
        println!("{}", rss_kib("VmHWM")?.saturating_sub(before));
        return Ok(());
    }
    let (mut np_all, mut np_gemm_all, mut dp_all) = (Vec::new(), Vec::new(), Vec::new());
    let mut round_ratios = Vec::with_capacity(a.rounds);
    let mut torch_rounds = Vec::new();
    for _ in 0..a.rounds {
        let np = time_steps(device, a.warmup, a.repeats, &mut non_private)?;
        // The DP step computes convolutions by gather + GEMM; the same
        // non-private step with that convolution is the like-for-like
        // baseline.
        if a.model == BenchModel::Cnn {
            np_gemm_all.extend(with_conv_strategy(ConvStrategy::Unfold, || {
                time_steps(device, a.warmup, a.repeats, &mut non_private)
            })?);
        }
        let dp_times = time_steps(device, a.warmup, a.repeats, || {
            dp_step(&mut engine, &mut dp)
        })?;
        round_ratios.push(median(dp_times.clone()) / median(np.clone()));
        np_all.extend(np);
        dp_all.extend(dp_times);
        if let Some(torch) = torch {
            torch_rounds.push(torch.measure(a.batch_size)?);
        }
    }
    let np = median(np_all);
    let np_gemm = if np_gemm_all.is_empty() {
        np
    } else {
        median(np_gemm_all)
    };
    let dp_ms = median(dp_all);
    let method = engine
        .fallback_reason()
        .map_or_else(|| "fast path".to_owned(), |r| format!("fallback: {r}"));
    let fallback_ms = if a.fallback_repeats > 0 {
        let mut slow = GradientEngine::new(clipping).with_mode(EngineMode::FallbackOnly);
        median(time_steps(device, 0, a.fallback_repeats, || {
            dp_step(&mut slow, &mut dp)
        })?)
    } else {
        f64::NAN
    };
    // Resident host memory says nothing of a GPU's memory: measured for the
    // CPU backends only.
    let peak_mem_ratio = if matches!(a.backend, Backend::Flex | Backend::Ndarray) {
        peak_memory_ratio(a).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    let ratio = dp_ms / np;
    let per_s = |ms: f64| a.batch_size as f64 / ms * 1e3;
    let comparison = torch.and_then(|t| t.compare(&torch_rounds, np, dp_ms));
    if a.json {
        let mut out = json!({
            "non_private_ms": np,
            "dp_ms": dp_ms,
            "ratio": ratio,
            "non_private_examples_per_s": per_s(np),
            "dp_examples_per_s": per_s(dp_ms),
            "fallback_ms": if fallback_ms.is_finite() { json!(fallback_ms) } else { json!(null) },
            "peak_mem_ratio": if peak_mem_ratio.is_finite() { json!(peak_mem_ratio) } else { json!(null) },
            "non_private_gemm_conv_ms": np_gemm,
            "ratio_vs_gemm_conv": dp_ms / np_gemm,
            "model": format!("{:?}", a.model).to_lowercase(),
            "batch_size": a.batch_size,
            "seq_len": matches!(a.model, BenchModel::Transformer | BenchModel::Lstm).then_some(a.seq_len),
            "backend": a.backend.name(),
            "repeats": a.repeats,
            "rounds": a.rounds,
            "round_ratios": round_ratios,
            "dp_method": method,
            "pass_size": pass_size_name(a.pass_size),
            "dp_passes": engine.last_passes(),
        });
        if let (Some(line), Some(c)) = (out.as_object_mut(), &comparison) {
            line.extend(c.json_fields());
        }
        println!("{out}");
    } else {
        println!(
            "{:?} batch {} on {}: non-private {np:.2} ms ({np_gemm:.2} ms with gather+GEMM convolutions), DP {dp_ms:.2} ms (×{ratio:.2}; ×{:.2} vs gather+GEMM), fallback {fallback_ms:.1} ms, peak memory ×{peak_mem_ratio:.2}",
            a.model,
            a.batch_size,
            a.backend,
            dp_ms / np_gemm
        );
        if let Some(c) = &comparison {
            println!("{}", c.text());
        }
    }
    Ok(())
}

/// Warm-up steps of a memory probe, before its [`PROBE_STEPS`]: together
/// enough for the DP step's steady state, where the optimizer draws each
/// step's noise ahead on a background thread once its own timings say that
/// saves time (from the third step on). With one warm-up step and three
/// more, the DP probe of the benchmark MLP at batch 1024 read 32 or 40 MB
/// from run to run, as a draw ahead fell inside it or not (issue 31).
const PROBE_WARMUP: usize = 2;
/// Steps of a memory probe after its [`PROBE_WARMUP`].
const PROBE_STEPS: usize = 6;

/// Peak extra resident memory of a DP step over a non-private one, each
/// measured in a fresh child process (Linux; `None` elsewhere).
fn peak_memory_ratio(a: &StepArgs) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let probe = |mode: &str| -> Option<f64> {
        let out = std::process::Command::new(&exe)
            .args([
                "bench",
                "step",
                "--model",
                &format!("{:?}", a.model).to_lowercase(),
            ])
            .args([
                "--batch-size",
                &a.batch_size.to_string(),
                "--seq-len",
                &a.seq_len.to_string(),
                "--backend",
                a.backend.name(),
            ])
            .args(["--pass-size", &pass_size_name(a.pass_size)])
            .args(["--memory-probe", mode])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .ok()
    };
    let (np, dp) = (probe("nonprivate")?, probe("dp")?);
    (np > 0.0).then(|| dp / np)
}

/// `auto`, `whole` or a positive number of examples.
fn pass_size(s: &str) -> Result<PassSize, String> {
    match s {
        "auto" => Ok(PassSize::Auto),
        "whole" => Ok(PassSize::Whole),
        n => n
            .parse::<std::num::NonZeroUsize>()
            .map(PassSize::Examples)
            .map_err(|_| format!("`{n}` is not auto, whole or a positive number of examples")),
    }
}

/// The `--pass-size` value that gives `size`.
fn pass_size_name(size: PassSize) -> String {
    match size {
        PassSize::Auto => "auto".into(),
        PassSize::Whole => "whole".into(),
        PassSize::Examples(n) => n.to_string(),
        PassSize::Budget(values) => format!("budget of {values} values"),
    }
}

fn rss_kib(field: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("/proc/self/status (Linux only)")?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field).and_then(|r| {
                r.trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .with_context(|| format!("{field} not in /proc/self/status"))
}

/// Resets the peak-RSS counter (`echo 5 > /proc/self/clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
