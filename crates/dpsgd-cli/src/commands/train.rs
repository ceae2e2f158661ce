//! `dpsgd train`: train a model with DP-SGD (or without, for comparison)
//! and report what the privacy cost.

use crate::args;
use anyhow::{Context, Result};
use dpsgd::data::{Dataset, LabelColumn, Scaling};
use dpsgd::train::{ModelKind, OptimizerKind, Privacy, TrainConfig, TrainReport};
use dpsgd_accountant::AccountantKind;
use dpsgd_burn::backend::Backend;
use dpsgd_burn::models::Activation;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    /// The embedded UCI digits (80/20 stratified split).
    Digits,
    /// A directory with the MNIST file names (its own train/test split).
    Idx(PathBuf),
    /// A CSV file (80/20 stratified split, standardised).
    Csv(PathBuf, LabelColumn),
}

impl std::fmt::Display for DatasetSpec {
    /// The spelling `--dataset` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetSpec::Digits => write!(f, "digits"),
            DatasetSpec::Idx(dir) => write!(f, "idx:{}", dir.display()),
            DatasetSpec::Csv(file, LabelColumn::Last) => write!(f, "csv:{}", file.display()),
            DatasetSpec::Csv(file, label) => write!(f, "csv:{},label={label}", file.display()),
        }
    }
}

/// `digits`, `idx:DIR`, `csv:FILE[,label=COL]`.
pub fn dataset(s: &str) -> Result<DatasetSpec, String> {
    if s == "digits" {
        Ok(DatasetSpec::Digits)
    } else if let Some(dir) = s.strip_prefix("idx:") {
        Ok(DatasetSpec::Idx(PathBuf::from(dir)))
    } else if let Some(rest) = s.strip_prefix("csv:") {
        let (file, label) = match rest.rsplit_once(",label=") {
            Some((f, l)) => (f, l.parse().unwrap_or_default()),
            None => (rest, LabelColumn::Last),
        };
        Ok(DatasetSpec::Csv(PathBuf::from(file), label))
    } else {
        Err(format!(
            "`{s}`: expected digits, idx:DIR or csv:FILE[,label=COL]"
        ))
    }
}

/// Options shared by `train` and `sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOptions {
    /// digits (embedded) | idx:DIR (MNIST file names) | csv:FILE[,label=COL].
    #[arg(long, default_value = "digits", value_parser = dataset)]
    pub dataset: DatasetSpec,
    /// Model.
    #[arg(long, value_parser = ["logreg", "mlp", "cnn"], default_value = "mlp")]
    pub model: String,
    /// Activation between hidden layers (tanh is the published best choice
    /// under DP: bounded activations lose less to clipping).
    #[arg(long, value_name = "relu|tanh", default_value = "relu")]
    pub activation: Activation,
    /// δ (default: 1/N rounded down to a power of ten, capped at 1e-5).
    #[arg(long, allow_hyphen_values = true, value_parser = args::delta)]
    pub delta: Option<f64>,
    /// Epochs (each round(1/q) Poisson steps).
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Expected (Poisson) batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Per-example clipping norm C.
    #[arg(long, allow_hyphen_values = true, default_value_t = 1.0, value_parser = args::noise_multiplier)]
    pub max_grad_norm: f64,
    /// Learning rate (default: 0.01 for adam, 0.3 for sgd).
    #[arg(long, allow_hyphen_values = true, value_parser = args::noise_multiplier)]
    pub lr: Option<f64>,
    /// Inner optimizer.
    #[arg(long, value_parser = ["sgd", "adam"], default_value = "adam")]
    pub optimizer: String,
    /// Seed for initialisation, sampling and noise (the run is then
    /// reproducible and reported as not secure).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Backend.
    #[arg(long, default_value = "flex")]
    pub backend: Backend,
    /// Accountant.
    #[arg(long, default_value = "rdp", value_parser = args::accountant)]
    pub accountant: AccountantKind,
    /// Fraction of a single-file dataset held out for testing.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
}

/// Arguments of `dpsgd train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: TrainOptions,
    /// Target ε: σ is calibrated so that the whole run meets it.
    #[arg(long, allow_hyphen_values = true, value_parser = args::epsilon, conflicts_with_all = ["noise_multiplier", "non_private"])]
    pub target_epsilon: Option<f64>,
    /// A fixed noise multiplier σ instead of a target ε.
    #[arg(long, allow_hyphen_values = true, value_parser = args::noise_multiplier, conflicts_with = "non_private")]
    pub noise_multiplier: Option<f64>,
    /// Train the same model without DP (no clipping, no noise).
    #[arg(long)]
    pub non_private: bool,
    /// Write the JSON privacy report and metrics here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Loads and scales the train and test sets.
///
/// # Errors
///
/// Unreadable or corrupt data.
pub fn load(spec: &DatasetSpec, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    let (mut train, mut test, scaling) = match spec {
        DatasetSpec::Digits => {
            let (tr, te) = dpsgd::data::digits().split(test_fraction, seed)?;
            (tr, te, Scaling::Divide(16.0))
        }
        DatasetSpec::Idx(dir) => {
            let (tr, te) = dpsgd::data::read_mnist(dir)?;
            (tr, te, Scaling::Divide(255.0))
        }
        DatasetSpec::Csv(file, label) => {
            let all = dpsgd::data::read_csv(file, label)?;
            let (tr, te) = all.split(test_fraction, seed)?;
            let scaling = tr.fit_standardize();
            (tr, te, scaling)
        }
    };
    train.apply(&scaling);
    test.apply(&scaling);
    Ok((train, test))
}

/// Builds the run configuration.
pub fn config(o: &TrainOptions, privacy: Privacy, n_train: usize) -> TrainConfig {
    let optimizer = if o.optimizer == "sgd" {
        OptimizerKind::Sgd
    } else {
        OptimizerKind::Adam
    };
    TrainConfig {
        model: match o.model.as_str() {
            "logreg" => ModelKind::Logreg,
            "cnn" => ModelKind::Cnn,
            _ => ModelKind::Mlp,
        },
        activation: o.activation,
        epochs: o.epochs,
        batch_size: o.batch_size,
        max_grad_norm: o.max_grad_norm,
        lr: o.lr.unwrap_or(match optimizer {
            OptimizerKind::Adam => 1e-2,
            OptimizerKind::Sgd => 0.3,
        }),
        optimizer,
        privacy,
        delta: o
            .delta
            .unwrap_or_else(|| dpsgd::train::default_delta(n_train)),
        accountant: o.accountant,
        seed: o.seed,
    }
}

/// Runs one training with a progress bar (unless `quiet`).
///
/// # Errors
///
/// As [`dpsgd::train::train`].
pub fn run_one(
    cfg: &TrainConfig,
    train: &Dataset,
    test: &Dataset,
    backend: Backend,
    quiet: bool,
) -> Result<TrainReport> {
    let device = backend.device().map_err(anyhow::Error::msg)?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut last_eps, mut last_acc) = (None, None);
    let report = dpsgd::train::train(cfg, train, test, &device, |p| {
        bar.set_length(p.total_steps);
        bar.set_position(p.step);
        last_eps = p.epsilon.or(last_eps);
        last_acc = p.test_accuracy.or(last_acc);
        let eps = last_eps.map_or_else(|| "ε –".to_owned(), |e| format!("ε {e:.2}"));
        let acc = last_acc.map_or_else(|| "acc –".to_owned(), |a| format!("acc {:.1}%", 100.0 * a));
        bar.set_message(format!("loss {:.3} {acc} {eps}", p.loss));
    })
    .context("training failed")?;
    bar.finish_and_clear();
    Ok(report)
}

/// One line that says what the run cost and bought.
pub fn summary(r: &TrainReport) -> String {
    let privacy = match (r.epsilon, r.noise_multiplier) {
        (Some(e), Some(s)) => format!(
            "ε = {e:.2} at δ = {:e} ({}, σ = {s:.3})",
            r.delta,
            r.accountant.name().to_uppercase()
        ),
        _ => "non-private (ε = ∞)".to_owned(),
    };
    format!(
        "test accuracy {:.2}% (train {:.2}%) | {privacy} | leakage: loss-threshold MIA AUC {:.3} | q = {:.4}, {} steps, {} epochs, {:.1} s{}",
        100.0 * r.test_accuracy,
        100.0 * r.train_accuracy,
        r.loss_threshold_auc,
        r.sample_rate,
        r.steps,
        r.epochs,
        r.wall_seconds,
        if r.secure {
            ""
        } else {
            " (seeded: not secure)"
        }
    )
}

/// Runs the command.
///
/// # Errors
///
/// Bad data, bad settings, or a failed run.
pub fn run(a: &Args) -> Result<()> {
    let o = &a.options;
    if !(o.test_fraction > 0.0 && o.test_fraction < 1.0) {
        anyhow::bail!(args::UsageError {
            flag: "--test-fraction",
            message: "must be in (0, 1)".into()
        });
    }
    let (train, test) = load(&o.dataset, o.test_fraction, o.seed.unwrap_or(0))?;
    let privacy = match (a.non_private, a.noise_multiplier, a.target_epsilon) {
        (true, _, _) => Privacy::NonPrivate,
        (false, Some(s), _) => Privacy::NoiseMultiplier(s),
        (false, None, Some(e)) => Privacy::TargetEpsilon(e),
        (false, None, None) => Privacy::TargetEpsilon(3.0),
    };
    let cfg = config(o, privacy, train.len());
    let report = run_one(&cfg, &train, &test, o.backend, a.quiet)?;
    println!("{}", summary(&report));
    if let Some(path) = &a.report {
        let mut json = serde_json::to_value(&report)?;
        json["dataset"] = serde_json::Value::String(o.dataset.to_string());
        write_atomically(path, &serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// crash never leaves a half-written file.
///
/// # Errors
///
/// I/O errors, with the path.
pub fn write_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
