//! `dpsgd train`: train a model with DP-SGD (or without, for comparison)
//! and report what the privacy cost.

use crate::error;
use crate::flags::train::{DatasetSpec, PrivacyOptions, TrainOptions};
use crate::output::clobbering;
use crate::output::files::{
    ReportTarget, check_checkpoint_dir, check_output_path, check_save_path,
};
use anyhow::{Context, Result};
use dpsgd::data::{Dataset, Scaling};
use dpsgd::train::{
    Features, ModelKind, OptimizerKind, Privacy, Progress, Recipe, TrainConfig, TrainError,
    TrainReport,
};
use dpsgd_burn::backend::Backend;
use dpsgd_burn::io::FolderLock;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// How the features and the label set were fixed, for the report: only
/// public information may shape them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preprocessing {
    /// The feature scaling and where its constants came from.
    pub scaling: String,
    /// Number of classes (the model's output size).
    pub num_classes: usize,
    /// Where the number of classes came from.
    pub num_classes_source: String,
    /// Where the vocabularies (one-hot categories, class names) came from.
    pub vocabulary: String,
    /// What was read off the private data rather than declared (one-hot
    /// categories of a column, class names, the number of classes): not
    /// covered by ε. Empty when nothing was.
    pub read_from_data: Vec<String>,
    /// Whether every step of the preprocessing used public information
    /// only (`read_from_data` is empty).
    pub public: bool,
}

impl Preprocessing {
    /// The warning the command prints when something was read off the
    /// private data; `None` when the preprocessing is public.
    pub fn warning(&self) -> Option<String> {
        (!self.read_from_data.is_empty()).then(|| {
            format!(
                "WARNING: dpsgd: read off the private data, not covered by ε: {}; one record can change them (a category or class only it has adds an input or an output of the model; a first record taken for a header changes N). Declare them from public knowledge with --schema FILE (and --num-classes for a numeric label)",
                self.read_from_data.join("; ")
            )
        })
    }
}

/// Arguments of `dpsgd train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: TrainOptions,
    #[command(flatten)]
    pub privacy: PrivacyOptions,
    /// Write the JSON privacy report and metrics here (`-` or /dev/stdout:
    /// standard output, and the summary line goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write the privacy report as one self-contained HTML page here
    /// (as `dpsgd report` does).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Save the trained model here (burn's record bytes; load them into a
    /// model of the same architecture), written atomically.
    #[arg(long, value_name = "FILE")]
    pub save_model: Option<PathBuf>,
    /// Checkpoint a private run into DIR after every epoch (created if
    /// missing; one file, replaced atomically; a secret: mode 0600). The
    /// folder is locked while the run lasts: a second run into it exits 2
    /// at once.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue the run checkpointed in --checkpoint-dir from its next
    /// epoch (same data and settings; --epochs may grow with
    /// --noise-multiplier). A checkpoint whose privacy settings or steps
    /// are not this run's (edited by hand) is refused.
    #[arg(long, requires = "checkpoint_dir")]
    pub resume: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Loads and scales the train and test sets, with preprocessing fitted on
/// public information only (or reported as read off the data), and prints
/// the warning of [`Preprocessing::warning`] once (every command calls
/// this once).
///
/// # Privacy
///
/// A scaling fitted on the training split (its mean, std, min or max)
/// would let one record change every other record's features, outside the
/// DP-SGD argument. So: digits and IDX images are divided by their public
/// maximum; CSV features are clipped to a declared range
/// (`--feature-range`), or to the ranges of a public reference file
/// (`--scaling-reference`), or left as they are. The vocabularies of CSV
/// data (one-hot categories, class names) come from a public schema
/// (`--schema`) or are read off the data and reported as not covered by ε;
/// the number of classes is declared (`--schema`'s classes or
/// `--num-classes`) or likewise read off the data and reported. The
/// train/test split depends on the number of records and the seed only
/// ([`Dataset::split`]).
///
/// # Errors
///
/// Unreadable or corrupt data; an unreadable or invalid schema, or one that
/// does not fit the data; a reference file with other columns; a label ≥
/// `--num-classes` or outside the schema's classes.
pub fn load(o: &TrainOptions, seed: u64) -> Result<(Dataset, Dataset, Preprocessing)> {
    let loaded = load_quietly(o, seed)?;
    if let Some(warning) = loaded.2.warning() {
        eprintln!("{warning}");
    }
    Ok(loaded)
}

/// [`load`] without printing the warning.
fn load_quietly(o: &TrainOptions, seed: u64) -> Result<(Dataset, Dataset, Preprocessing)> {
    let declared = |d: Dataset| -> Result<Dataset> {
        Ok(match o.num_classes {
            Some(k) => d.with_num_classes(k as usize)?,
            None => d,
        })
    };
    let schema = match (&o.schema, &o.dataset) {
        (None, _) => None,
        (Some(path), DatasetSpec::Csv(..)) => Some(read_schema(path)?),
        (Some(_), _) => anyhow::bail!(error::UsageError {
            flag: "--schema",
            message: "a schema declares the columns of CSV data (--dataset csv:FILE); digits and IDX images have none".into(),
        }),
    };
    if let (Some(k), Some(classes)) = (o.num_classes, schema.as_ref().and_then(|s| s.classes()))
        && k as usize != classes.len()
    {
        anyhow::bail!(error::UsageError {
            flag: "--num-classes",
            message: format!(
                "{k} disagrees with the {} classes of --schema",
                classes.len()
            ),
        });
    }
    let mut read_from_data = Vec::new();
    let (mut train, mut test, scaling, scaling_note, classes_source, vocabulary) = match &o.dataset
    {
        DatasetSpec::Digits => {
            let (tr, te) = declared(dpsgd::data::digits())?.split(o.test_fraction(), seed)?;
            let note = "divide by 16 (the public maximum pixel value)";
            (
                tr,
                te,
                Scaling::Divide(16.0),
                note.to_owned(),
                "dataset definition".to_owned(),
                "none (numeric features, classes 0-9 by the dataset definition)".to_owned(),
            )
        }
        DatasetSpec::Idx(dir) => {
            let (tr, te) = dpsgd::data::read_mnist(dir).map_err(dataset_error)?;
            let note = "divide by 255 (the public maximum pixel value)";
            (
                tr,
                te,
                Scaling::Divide(255.0),
                note.to_owned(),
                "dataset definition".to_owned(),
                "none (numeric features, labels by the dataset definition)".to_owned(),
            )
        }
        DatasetSpec::Csv(file, label) => {
            let (all, encoding) = match &schema {
                Some(schema) => dpsgd::data::read_csv_with_schema(file, label, schema),
                None => dpsgd::data::read_csv_encoded(file, label),
            }
            .map_err(dataset_error)?;
            let all = declared(all)?;
            let (tr, te) = all.split(o.test_fraction(), seed)?;
            let (scaling, note) = match (o.feature_range, &o.scaling_reference) {
                (Some((lo, hi)), _) => (
                    Scaling::Range {
                        lo: vec![lo; tr.n_features()],
                        hi: vec![hi; tr.n_features()],
                    },
                    format!("clip to the declared range [{lo}, {hi}], map to [0, 1]"),
                ),
                (None, Some(reference)) => (
                    reference_ranges(reference, label, &encoding, schema.as_ref())?,
                    format!(
                        "clip numeric features to the min/max of the public reference {}, one-hot features to [0, 1], map to [0, 1]",
                        reference.display()
                    ),
                ),
                (None, None) => (
                    Scaling::None,
                    "none (raw features; give --feature-range or --scaling-reference to scale with public information)"
                        .to_owned(),
                ),
            };
            let vocabulary_read = encoding.read_from_data();
            read_from_data.clone_from(&vocabulary_read);
            let source = match (&schema, encoding.classes()) {
                (Some(s), _) if s.classes().is_some() => "declared (--schema classes)",
                _ if o.num_classes.is_some() => "declared (--num-classes)",
                (_, Some(_)) => {
                    "read off the private data (the label's class names): not covered by epsilon (declare them with --schema)"
                }
                (_, None) => {
                    read_from_data.push("the number of classes (largest label + 1)".to_owned());
                    "read off the private data: not covered by epsilon (declare --num-classes or --schema classes)"
                }
            };
            let vocabulary = match (&o.schema, vocabulary_read.is_empty()) {
                (Some(path), true) => format!("declared (--schema {})", path.display()),
                (Some(path), false) => format!(
                    "declared (--schema {}), except what read_from_data names: not covered by epsilon",
                    path.display()
                ),
                (None, true) => "none (numeric columns and label)".to_owned(),
                (None, false) => {
                    "read off the private data: not covered by epsilon (declare it with --schema)"
                        .to_owned()
                }
            };
            (tr, te, scaling, note, source.to_owned(), vocabulary)
        }
    };
    if let (Some(k), DatasetSpec::Idx(_)) = (o.num_classes, &o.dataset) {
        train = train.with_num_classes(k as usize)?;
        test = test.with_num_classes(k as usize)?;
    }
    check_fits(o, &train, &test)?;
    train.apply(&scaling);
    test.apply(&scaling);
    let classes_source = match &o.dataset {
        DatasetSpec::Csv(..) => classes_source,
        _ if o.num_classes.is_some() => "declared (--num-classes)".to_owned(),
        _ => classes_source,
    };
    let preprocessing = Preprocessing {
        public: read_from_data.is_empty(),
        scaling: scaling_note,
        num_classes: train.n_classes().max(test.n_classes()),
        num_classes_source: classes_source,
        vocabulary,
        read_from_data,
    };
    Ok((train, test, preprocessing))
}

/// Reads `--schema`: any problem with it is a usage error naming the flag.
fn read_schema(path: &Path) -> Result<dpsgd::data::CsvSchema> {
    dpsgd::data::CsvSchema::read(path).map_err(|e| {
        error::UsageError {
            flag: "--schema",
            message: one_line(&e),
        }
        .into()
    })
}

/// An error and its sources on one line (a usage error holds a message).
fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Per-feature ranges from a public reference CSV file with the same
/// columns: each numeric column's min/max there, and [0, 1] for every
/// one-hot feature (the reference may lack some categories of the data, as
/// UCI Adult's test file does, or have others).
fn reference_ranges(
    reference: &Path,
    label: &dpsgd::data::LabelColumn,
    encoding: &dpsgd::data::CsvEncoding,
    schema: Option<&dpsgd::data::CsvSchema>,
) -> Result<Scaling> {
    use dpsgd::data::ColumnEncoding;
    // With a schema, the reference is encoded with it too (its labels are
    // not used, so its own class spelling is no matter).
    let (public, public_encoding) = match schema {
        Some(s) => {
            dpsgd::data::read_csv_with_schema(
                reference,
                label,
                // The reference is public: its header may be detected.
                &s.clone().without_classes().without_header(),
            )
        }
        None => dpsgd::data::read_csv_encoded(reference, label),
    }
    .map_err(schema_usage_error)
    .with_context(|| format!("reading --scaling-reference {}", reference.display()))?;
    let refuse = |message: String| error::UsageError {
        flag: "--scaling-reference",
        message,
    };
    if public_encoding.label_column() != encoding.label_column() {
        anyhow::bail!(refuse(format!(
            "the label is column {} of {} but column {} of the data: the columns must line up",
            public_encoding.label_column(),
            reference.display(),
            encoding.label_column()
        )));
    }
    if public_encoding.columns().len() != encoding.columns().len() {
        anyhow::bail!(refuse(format!(
            "{} has {} columns, the data {}",
            reference.display(),
            public_encoding.columns().len(),
            encoding.columns().len()
        )));
    }
    let Scaling::Range {
        lo: public_lo,
        hi: public_hi,
    } = public.fit_range()
    else {
        anyhow::bail!("a fitted range is a range");
    };
    // The reference's first feature of each column.
    let mut public_start = Vec::new();
    let mut next = 0;
    for (c, column) in public_encoding.columns().iter().enumerate() {
        public_start.push(next);
        if c != public_encoding.label_column() {
            next += match column {
                ColumnEncoding::Numeric => 1,
                ColumnEncoding::OneHot(categories) => categories.len(),
            };
        }
    }
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for (c, column) in encoding.columns().iter().enumerate() {
        if c == encoding.label_column() {
            continue;
        }
        match (column, &public_encoding.columns()[c]) {
            (ColumnEncoding::OneHot(categories), _) => {
                lo.extend(std::iter::repeat_n(0.0, categories.len()));
                hi.extend(std::iter::repeat_n(1.0, categories.len()));
            }
            (ColumnEncoding::Numeric, ColumnEncoding::Numeric) => {
                lo.push(public_lo[public_start[c]]);
                hi.push(public_hi[public_start[c]]);
            }
            (ColumnEncoding::Numeric, ColumnEncoding::OneHot(_)) => {
                anyhow::bail!(refuse(format!(
                    "column {c} is numeric in the data but text in {}",
                    reference.display()
                )));
            }
        }
    }
    Ok(Scaling::Range { lo, hi })
}

/// A schema that does not fit a file as a usage error naming `--schema`;
/// other errors unchanged.
fn schema_usage_error(e: dpsgd::data::Error) -> anyhow::Error {
    match e {
        dpsgd::data::Error::Schema { .. } => error::UsageError {
            flag: "--schema",
            message: one_line(&e),
        }
        .into(),
        e => e.into(),
    }
}

/// A dataset that cannot be read as given (a missing file, a label column
/// that is not there) as a usage error naming `--dataset`, a schema that
/// does not fit it as one naming `--schema`; corrupt content stays a
/// runtime error.
fn dataset_error(e: dpsgd::data::Error) -> anyhow::Error {
    match e {
        dpsgd::data::Error::Schema { .. } => schema_usage_error(e),
        dpsgd::data::Error::InvalidParameter { .. } => error::UsageError {
            flag: "--dataset",
            message: e.to_string(),
        }
        .into(),
        dpsgd::data::Error::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            error::UsageError {
                flag: "--dataset",
                message: e.to_string(),
            }
            .into()
        }
        e => e.into(),
    }
}

/// Refuses, before any training, settings that cannot work with the data
/// as loaded: an empty split, a batch larger than the training set, a CNN
/// on tabular data.
fn check_fits(o: &TrainOptions, train: &Dataset, test: &Dataset) -> Result<(), error::UsageError> {
    if train.is_empty() || test.is_empty() {
        let (flag, message) = match o.dataset {
            DatasetSpec::Idx(_) => (
                "--dataset",
                "the training or test file has no examples".to_owned(),
            ),
            _ => (
                "--test-fraction",
                format!(
                    "{} leaves {} training and {} test examples; both must be non-empty",
                    o.test_fraction(),
                    train.len(),
                    test.len()
                ),
            ),
        };
        return Err(error::UsageError { flag, message });
    }
    if o.model.as_deref() == Some("cnn") && train.image_shape().is_none() {
        return Err(error::UsageError {
            flag: "--model",
            message: "cnn needs image data (digits or idx:DIR); use mlp or logreg on CSV data"
                .into(),
        });
    }
    if let Some(batch_size) = o.batch_size
        && batch_size > train.len()
    {
        return Err(error::UsageError {
            flag: "--batch-size",
            message: format!(
                "{batch_size} is larger than the training set ({} examples)",
                train.len()
            ),
        });
    }
    if o.features == Some(Features::SCATTER) && train.image_shape().is_none() {
        return Err(error::UsageError {
            flag: "--features",
            message: "scatter needs image data (digits or idx:DIR)".into(),
        });
    }
    Ok(())
}

/// The recipe: named by `--recipe`, else chosen by the data's public shape
/// (and `--model`).
pub fn recipe_for(o: &TrainOptions, train: &Dataset) -> Recipe {
    match o.recipe.as_deref().and_then(Recipe::named) {
        Some(r) => r.fitted_to(train),
        None => Recipe::for_data(train, o.model.as_deref().map(model_kind)),
    }
}

fn model_kind(name: &str) -> ModelKind {
    match name {
        "logreg" => ModelKind::Logreg,
        "cnn" => ModelKind::Cnn,
        _ => ModelKind::Mlp,
    }
}

/// The line naming the run's recipe and the settings in which this run
/// differs from its description (flags, or a batch size capped at a
/// quarter of a small data set): `…; this run: batch_size 32, epochs 300`,
/// so the line never describes settings the run does not use.
pub fn recipe_line(cfg: &TrainConfig) -> Option<String> {
    let recipe = cfg.recipe.as_deref().and_then(Recipe::named)?;
    let base = serde_json::to_value(recipe.config(cfg.privacy, cfg.delta)).ok()?;
    let this = serde_json::to_value(cfg).ok()?;
    let changed: Vec<String> = [
        "model",
        "features",
        "activation",
        "hidden",
        "optimizer",
        "lr",
        "max_grad_norm",
        "batch_size",
        "epochs",
        "ema_decay",
        "accountant",
    ]
    .into_iter()
    .filter(|k| base.get(k) != this.get(k))
    .map(|k| {
        let v = this.get(k).map_or_else(String::new, |v| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "none".into(),
            other => other.to_string(),
        });
        format!("{k} {v}")
    })
    .collect();
    Some(if changed.is_empty() {
        format!("dpsgd: recipe {}: {}", recipe.name, recipe.description)
    } else {
        format!(
            "dpsgd: recipe {}: {}; this run: {}",
            recipe.name,
            recipe.description,
            changed.join(", ")
        )
    })
}

/// Builds the run configuration: the recipe, overridden by every flag given.
pub fn config(o: &TrainOptions, privacy: Privacy, train: &Dataset) -> TrainConfig {
    let recipe = recipe_for(o, train);
    let optimizer = match o.optimizer.as_deref() {
        Some("sgd") => OptimizerKind::Sgd,
        Some(_) => OptimizerKind::Adam,
        None => recipe.optimizer,
    };
    // Another optimizer than the recipe's needs its own learning rate.
    let lr = match (o.lr, optimizer == recipe.optimizer) {
        (Some(lr), _) => lr,
        (None, true) => recipe.lr,
        (None, false) => match optimizer {
            OptimizerKind::Adam => 1e-2,
            OptimizerKind::Sgd => 0.3,
        },
    };
    let model = o.model.as_deref().map_or(recipe.model, model_kind);
    let hidden = match (&o.hidden, recipe.hidden.is_empty()) {
        (Some(h), _) => h.0.clone(),
        (None, false) => recipe.hidden.clone(),
        (None, true) => dpsgd::train::DEFAULT_HIDDEN.to_vec(),
    };
    TrainConfig {
        model,
        activation: o.activation.unwrap_or(recipe.activation),
        epochs: o.epochs.unwrap_or(recipe.epochs),
        batch_size: o.batch_size.unwrap_or(recipe.batch_size),
        max_grad_norm: o.max_grad_norm.unwrap_or(recipe.max_grad_norm),
        lr,
        optimizer,
        privacy,
        delta: o
            .delta
            .unwrap_or_else(|| dpsgd::train::default_delta(train.len())),
        accountant: o.accountant.unwrap_or(recipe.accountant),
        seed: o.seed,
        allow_large_delta: o.allow_large_delta,
        clipping: o.clipping,
        hidden,
        max_physical_batch_size: o.max_physical_batch_size,
        devices: o.devices,
        all_reduce: o.all_reduce,
        conv_strategy: o.conv_strategy,
        save_model: None,
        checkpoint_dir: None,
        resume: false,
        progress_epsilon: false,
        features: o.features.unwrap_or(recipe.features),
        ema_decay: match o.ema_decay {
            Some(d) if d > 0.0 => Some(d),
            Some(_) => None,
            None => recipe.ema_decay,
        },
        augment_multiplicity: o.augment_multiplicity.unwrap_or(1),
        weight_standardization: o.weight_standardization,
        recipe: Some(recipe.name.to_owned()),
        defences: o.defences(),
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
    // ε for the bar once per epoch, and not at all when nobody sees it
    // (the caller may ask for it anyway, for a report's budget curve).
    let cfg = &TrainConfig {
        progress_epsilon: cfg.progress_epsilon || !quiet,
        ..cfg.clone()
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A log file (stderr not a terminal, where the bar is not drawn) gets
    // one line per epoch instead.
    let epoch_lines = !quiet && !std::io::stderr().is_terminal();
    // Only released quantities: step, test accuracy, ε (the batch loss is
    // an exact statistic of the private batch).
    let (mut last_eps, mut last_acc) = (None, None);
    let report = dpsgd::train::train(cfg, train, test, &device, |p| {
        bar.set_length(p.total_steps);
        bar.set_position(p.step);
        if p.test_accuracy.is_some() {
            // `p.epoch`, not a count: a resumed run starts past epoch 1.
            if epoch_lines {
                eprintln!("{}", epoch_line(p.epoch, cfg.epochs, &p));
            }
        }
        if p.epsilon.is_none() && p.test_accuracy.is_none() {
            return;
        }
        last_eps = p.epsilon.or(last_eps);
        last_acc = p.test_accuracy.or(last_acc);
        let eps = last_eps.map_or_else(|| "ε –".to_owned(), |e| format!("ε {e:.2}"));
        let acc = last_acc.map_or_else(
            || "test acc –".to_owned(),
            |a| format!("test acc {:.1}%", 100.0 * a),
        );
        bar.set_message(format!("{acc} {eps}"));
    })
    .map_err(|e| match usage_error(e) {
        e if e.is::<error::UsageError>() => e,
        e => e.context("training failed"),
    })?;
    bar.finish_and_clear();
    // The library returns its warnings; the binary shows them.
    for w in &report.warnings {
        eprintln!("WARNING: dpsgd: {w}");
    }
    Ok(report)
}

/// The line logged at the end of an epoch: the epoch, its test accuracy and
/// ε so far (released quantities), then the last batch's loss, marked as
/// not covered by ε (an exact statistic of the private batch).
pub fn epoch_line(epoch: usize, epochs: usize, p: &Progress) -> String {
    let accuracy = p
        .test_accuracy
        .map_or_else(|| "–".to_owned(), |a| format!("{:.2}%", 100.0 * a));
    let epsilon = p
        .epsilon
        .map_or_else(|| "∞".to_owned(), |e| format!("{e:.3}"));
    format!(
        "epoch {epoch}/{epochs} | step {}/{} | test accuracy {accuracy} | ε {epsilon} | last batch loss {:.4} (not covered by ε)",
        p.step, p.total_steps, p.loss
    )
}

/// A configuration the library refuses, as a usage error naming the flag
/// of the refused setting; other errors unchanged.
fn usage_error(e: TrainError) -> anyhow::Error {
    let flag = match &e {
        TrainError::Config(c) => match c.setting {
            "model" => Some("--model"),
            "epochs" => Some("--epochs"),
            "hidden" => Some("--hidden"),
            "clipping" => Some("--clipping"),
            "max_physical_batch_size" => Some("--max-physical-batch-size"),
            "all_reduce" => Some("--all-reduce"),
            "devices" => Some("--devices"),
            "checkpoint_dir" => Some("--checkpoint-dir"),
            "features" => Some("--features"),
            "ema_decay" => Some("--ema-decay"),
            "augment_multiplicity" => Some("--augment-multiplicity"),
            "resume" => Some("--resume"),
            "label_smoothing" => Some("--label-smoothing"),
            "confidence_penalty" => Some("--confidence-penalty"),
            "relaxloss" => Some("--relaxloss"),
            "early_stopping" => Some("--early-stopping"),
            "weight_decay" => Some("--weight-decay"),
            "dropout" => Some("--dropout"),
            "mist" => Some("--mist"),
            "defences" => Some("--label-smoothing/--confidence-penalty/--relaxloss"),
            "num_classes" => Some("--num-classes"),
            "delta" => Some("--delta"),
            _ => None,
        },
        // δ ≥ 1/N without --allow-large-delta, found once N is known.
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter { name: "delta", .. }) => {
            Some("--delta")
        }
        // σ·C or C beyond f32.
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter {
            name: "noise_multiplier",
            ..
        }) => Some("--noise-multiplier"),
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter {
            name: "max_grad_norm",
            ..
        }) => Some("--max-grad-norm"),
        // burn's collective all-reduce on a backend without it.
        TrainError::Dp(dpsgd::optim::Error::InvalidParameter {
            name: "reduction", ..
        }) => Some("--all-reduce"),
        TrainError::Resume(_) => Some("--resume"),
        _ => None,
    };
    match (flag, e) {
        (Some(flag), TrainError::Config(c)) => error::UsageError {
            flag,
            message: c.message,
        }
        .into(),
        (Some(flag), e @ (TrainError::Dp(_) | TrainError::Resume(_))) => error::UsageError {
            flag,
            message: e.to_string(),
        }
        .into(),
        (_, e) => e.into(),
    }
}

/// One line that says what the run cost and bought.
pub fn summary(r: &TrainReport) -> String {
    let p = &r.privacy;
    let privacy = match (p.epsilon, p.noise_multiplier, p.accountant) {
        (Some(e), Some(s), Some(accountant)) => format!(
            "ε = {e:.2} at δ = {:e} ({}, σ = {s:.3})",
            p.delta,
            accountant.name().to_uppercase()
        ),
        _ => "non-private (ε = ∞)".to_owned(),
    };
    let nc = &r.not_covered_by_epsilon;
    format!(
        "test accuracy {:.2}% | {privacy} | q = {:.4}, {} steps, {} epochs, {:.1} s{} | not covered by ε: train accuracy {:.2}%, loss-threshold MIA AUC {:.3}{}",
        100.0 * r.test_accuracy,
        p.sample_rate,
        p.steps,
        r.epochs,
        r.wall_seconds,
        // Without DP `secure` is false too, but a run is "seeded" only
        // when it has a seed.
        if p.seed.is_some() {
            " (seeded: not secure)"
        } else {
            ""
        },
        100.0 * nc.train_accuracy,
        nc.loss_threshold_auc,
        if nc.dropped_examples > 0 {
            format!(", {} non-finite examples dropped", nc.dropped_examples)
        } else {
            String::new()
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
    // Found before the data is read and the model trained, not after.
    let report_target = a.report.as_deref().map(ReportTarget::check).transpose()?;
    if let Some(path) = &a.save_model {
        check_save_path(path)?;
    }
    if let Some(path) = &a.html {
        check_output_path("--html", path)?;
    }
    if let Some(dir) = &a.checkpoint_dir {
        check_checkpoint_dir(dir, a.resume)?;
    }
    check_no_clobbering(a)?;
    let (train, test, preprocessing) = load(o, o.seed.unwrap_or(0))?;
    let privacy = a.privacy.privacy();
    let cfg = TrainConfig {
        save_model: a.save_model.clone(),
        checkpoint_dir: a.checkpoint_dir.clone(),
        resume: a.resume,
        // The HTML report's budget curve needs ε after every epoch.
        progress_epsilon: a.html.is_some(),
        ..config(o, privacy, &train)
    };
    if !a.quiet
        && let Some(line) = recipe_line(&cfg)
    {
        eprintln!("{line}");
    }
    let started = std::time::Instant::now();
    let report = match run_one(&cfg, &train, &test, o.backend, a.quiet) {
        Ok(report) => report,
        Err(e) => {
            // A diverged run leaves its partial report (the last good
            // model's) before the error is shown.
            if let (Some(TrainError::Diverged { report, .. }), Some(target)) =
                (e.downcast_ref::<TrainError>(), &report_target)
            {
                let mut json = report_json(report, o, &preprocessing)?;
                json["error"] = format!("{e:#}").into();
                target.write(&serde_json::to_string_pretty(&json)?)?;
            }
            return Err(e);
        }
    };
    let total_seconds = started.elapsed().as_secs_f64();
    // Standard output holds the JSON alone when the report goes there.
    if let Some(ReportTarget::Stdout) = report_target {
        eprintln!("{}", summary(&report));
    } else {
        println!("{}", summary(&report));
    }
    if report_target.is_some() || a.html.is_some() {
        let mut json = report_json(&report, o, &preprocessing)?;
        // `wall_seconds` is the training loop (with its per-epoch test
        // accuracy); the rest of the command is mostly the final evaluation
        // (train and test accuracy, the leakage metric), plus setup.
        json["total_seconds"] = total_seconds.into();
        if let Some(path) = &a.save_model {
            json["saved_model"] = path.display().to_string().into();
        }
        json["evaluation_and_setup_seconds"] =
            (total_seconds - report.wall_seconds).max(0.0).into();
        if let Some(target) = &report_target {
            target.write(&serde_json::to_string_pretty(&json)?)?;
        }
        if let Some(path) = &a.html {
            crate::html::write_html_of(&json, "dpsgd train", None, path)?;
        }
    }
    Ok(())
}

/// The report as JSON, with where the data came from and how it was
/// preprocessed.
fn report_json(
    report: &TrainReport,
    o: &TrainOptions,
    preprocessing: &Preprocessing,
) -> Result<serde_json::Value> {
    let mut json = serde_json::to_value(report)?;
    json["dataset"] = serde_json::Value::String(o.dataset.to_string());
    json["preprocessing"] = serde_json::to_value(preprocessing)?;
    Ok(json)
}

/// Refuses, before any work, an output that would replace an input (the
/// data set, the scaling reference, the schema, the checkpoint being
/// resumed) or another output: exit 2 naming both flags (issue 26). An
/// output that overwrote the data lost it; two outputs on one path lost
/// the model.
///
/// # Errors
///
/// [`error::UsageError`] naming the output's flag and the other one.
pub fn check_no_clobbering(a: &Args) -> Result<(), error::UsageError> {
    let mut inputs = a.options.inputs();
    if let Some(dir) = &a.checkpoint_dir {
        inputs.extend(clobbering::in_folder(
            "--checkpoint-dir",
            dir,
            &[dpsgd::train::CHECKPOINT_FILE, FolderLock::FILE],
        ));
    }
    let written = clobbering::given([
        ("--report", a.report.as_ref()),
        ("--html", a.html.as_ref()),
        ("--save-model", a.save_model.as_ref()),
    ]);
    clobbering::check_no_clobbering(&inputs, &written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Options {
        #[command(flatten)]
        o: TrainOptions,
    }

    fn rows(path: &std::path::Path, extra: Option<&str>) {
        let mut text = String::from("a,b,label\n");
        for i in 0..40 {
            text += &format!("{},{},{}\n", i % 7, (i * 3) % 5, i % 2);
        }
        if let Some(row) = extra {
            text += row;
        }
        std::fs::write(path, text).unwrap();
    }

    /// Every preprocessed row of both splits, sorted (the split itself may
    /// move rows between train and test).
    fn processed(file: &std::path::Path, flags: &[&str]) -> Vec<Vec<u32>> {
        let dataset = format!("csv:{}", file.display());
        let mut args = vec!["x", "--dataset", &dataset, "--batch-size", "8"];
        args.extend_from_slice(flags);
        let o = Options::try_parse_from(args).unwrap().o;
        let (train, test, _) = load(&o, 0).unwrap();
        let mut all: Vec<Vec<u32>> = [train, test]
            .iter()
            .flat_map(|d| {
                (0..d.len())
                    .map(|i| d.example(i).iter().map(|x| x.to_bits()).collect())
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn should_not_let_one_record_change_the_others_features() {
        let dir = std::env::temp_dir().join(format!("dpsgd-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (plain, outlier) = (dir.join("plain.csv"), dir.join("outlier.csv"));
        rows(&plain, None);
        rows(&outlier, Some("1000000,-1000000,1\n"));
        for flags in [&[][..], &["--feature-range", "0:10"][..]] {
            let a = processed(&plain, flags);
            let mut b = processed(&outlier, flags);
            // Remove the outlier's own row: everything else must be unchanged.
            let extra = b
                .iter()
                .position(|r| !a.contains(r))
                .expect("the outlier's row");
            b.remove(extra);
            assert_eq!(a, b, "{flags:?}: one record moved the others' features");
        }
    }

    /// A 26-record CSV file: 13 records of class 0, then 12 of class 1,
    /// each with its position as first feature and a colour, then `last`.
    fn neighbour(dir: &std::path::Path, name: &str, last: &str) -> PathBuf {
        let colours = ["red", "green", "blue"];
        let mut text = String::from("id,colour,label\n");
        for i in 0..25 {
            text += &format!("{i},{},{}\n", colours[i % 3], u8::from(i >= 13));
        }
        text += last;
        text.push('\n');
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn loaded(file: &Path, flags: &[&str]) -> (Dataset, Dataset, Preprocessing) {
        let dataset = format!("csv:{}", file.display());
        let mut args = vec!["x", "--dataset", &dataset];
        args.extend_from_slice(flags);
        load(&Options::try_parse_from(args).unwrap().o, 0).unwrap()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dpsgd-load-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Issue 24: the last record's label decided how many records were
    /// trained on (a stratified split rounds per class: 20 or 21). Now the
    /// sizes are round(0.8 · 26) = 21 either way, and every other record
    /// sits at the same place of the same part.
    #[test]
    fn should_train_on_as_many_records_whatever_one_label() {
        let dir = temp("label");
        let zero = neighbour(&dir, "zero.csv", "25,red,0");
        let one = neighbour(&dir, "one.csv", "25,red,1");
        let (a_train, a_test, _) = loaded(&zero, &[]);
        let (b_train, b_test, _) = loaded(&one, &[]);
        assert_eq!((a_train.len(), a_test.len()), (21, 5));
        assert_eq!((b_train.len(), b_test.len()), (21, 5));
        for (a, b) in [(&a_train, &b_train), (&a_test, &b_test)] {
            for i in 0..a.len() {
                assert_eq!(a.example(i), b.example(i), "row {i}");
                if a.example(i)[0] != 25.0 {
                    assert_eq!(a.labels()[i], b.labels()[i], "row {i}");
                }
            }
        }
    }

    /// Issue 24: a category only one record has added an input feature.
    /// With a schema it is all zeros and the preparation is public; without
    /// one, the report says what was read off the data.
    #[test]
    fn should_fix_the_vocabulary_with_a_schema() {
        let dir = temp("schema");
        let base = neighbour(&dir, "base.csv", "25,red,0");
        let odd = neighbour(&dir, "odd.csv", "25,ultraviolet,0");
        let schema = dir.join("schema.json");
        std::fs::write(
            &schema,
            r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["0", "1"]}"#,
        )
        .unwrap();
        let flags = ["--schema", schema.to_str().unwrap()];
        let (a, _, pa) = loaded(&base, &flags);
        let (b, _, pb) = loaded(&odd, &flags);
        assert_eq!((a.n_features(), b.n_features()), (4, 4));
        assert!(pa.public && pb.public && pa.read_from_data.is_empty());
        assert_eq!(pa.num_classes_source, "declared (--schema classes)");
        assert!(pa.vocabulary.starts_with("declared (--schema"), "{pa:?}");
        assert_eq!(pa.warning(), None);
        let (a, _, pa) = loaded(&base, &[]);
        let (b, _, pb) = loaded(&odd, &[]);
        assert_eq!((a.n_features(), b.n_features()), (4, 5));
        for p in [&pa, &pb] {
            assert!(!p.public);
            assert_eq!(
                p.read_from_data,
                [
                    "categories of column 1 (`colour`)",
                    HEADER_READ,
                    "the number of classes (largest label + 1)"
                ]
            );
            let warning = p.warning().unwrap();
            assert!(
                warning.starts_with("WARNING: dpsgd: ")
                    && warning.contains("not covered by ε")
                    && warning.contains("--schema"),
                "{warning}"
            );
        }
        // --num-classes declares the count; the categories are still read.
        let (_, _, p) = loaded(&base, &["--num-classes", "2"]);
        assert_eq!(
            p.read_from_data,
            ["categories of column 1 (`colour`)", HEADER_READ]
        );
        // A purely numeric file with a declared count reads only whether
        // its first line is a header, and nothing once that is declared.
        let numeric = dir.join("numeric.csv");
        std::fs::write(&numeric, "a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n").unwrap();
        let (_, _, p) = loaded(&numeric, &["--num-classes", "2"]);
        assert_eq!(p.read_from_data, [HEADER_READ]);
        let header = dir.join("header.json");
        std::fs::write(&header, r#"{"header": true}"#).unwrap();
        let flags = ["--num-classes", "2", "--schema", header.to_str().unwrap()];
        let (_, _, p) = loaded(&numeric, &flags);
        assert!(p.public && p.read_from_data.is_empty(), "{p:?}");
    }

    /// What the reader says when it detected the header from the rows.
    const HEADER_READ: &str = "whether the first line is a header (detected from the rows: declare \"header\" in a schema)";

    /// `--schema` problems are usage errors naming the flag; a label
    /// outside its classes is corrupt data naming the line.
    #[test]
    fn should_refuse_schemas_that_do_not_fit() {
        let dir = temp("bad-schema");
        let base = neighbour(&dir, "base.csv", "25,red,0");
        let schema = |name: &str, json: &str| {
            let p = dir.join(name);
            std::fs::write(&p, json).unwrap();
            p.display().to_string()
        };
        let good = schema(
            "good.json",
            r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["0", "1"]}"#,
        );
        let dataset = format!("csv:{}", base.display());
        let missing = dir.join("missing.json").display().to_string();
        let cases: Vec<(Vec<String>, &str, &str)> = vec![
            (vec![missing], "--schema", "missing.json"),
            (vec![schema("bad.json", "{")], "--schema", "bad.json"),
            (
                vec![schema("col.json", r#"{"columns": {"shape": ["x"]}}"#)],
                "--schema",
                "`shape` is not in the header",
            ),
            (
                vec![schema("empty.json", r#"{"columns": {"colour": []}}"#)],
                "--schema",
                "empty",
            ),
            (
                vec![schema("dup.json", r#"{"classes": ["0", "0"]}"#)],
                "--schema",
                "twice",
            ),
            (
                vec![good.clone(), "--num-classes".into(), "3".into()],
                "--num-classes",
                "2 classes of --schema",
            ),
        ];
        for (extra, flag, needle) in cases {
            let mut args = vec!["x".to_owned(), "--dataset".into(), dataset.clone()];
            args.push("--schema".into());
            args.extend(extra);
            let o = Options::try_parse_from(&args).unwrap().o;
            let e = load(&o, 0).unwrap_err();
            let usage = e
                .downcast_ref::<error::UsageError>()
                .unwrap_or_else(|| panic!("{args:?}: {e:#}"));
            assert_eq!(usage.flag, flag, "{e:#}");
            assert!(usage.message.contains(needle), "{needle}: {e:#}");
        }
        let o = Options::try_parse_from(["x", "--schema", &good]).unwrap().o;
        let e = load(&o, 0).unwrap_err();
        assert_eq!(
            e.downcast_ref::<error::UsageError>().unwrap().flag,
            "--schema"
        );
        let two = neighbour(&dir, "two.csv", "25,red,2");
        let o = Options::try_parse_from([
            "x",
            "--dataset",
            &format!("csv:{}", two.display()),
            "--schema",
            &good,
        ])
        .unwrap()
        .o;
        let e = load(&o, 0).unwrap_err();
        assert!(e.downcast_ref::<error::UsageError>().is_none(), "{e:#}");
        let text = format!("{e:#}");
        assert!(text.contains("line 27") && text.contains("`2`"), "{text}");
    }

    /// A public reference file is encoded with the same schema: its ranges
    /// line up with the data's features whatever categories either holds.
    #[test]
    fn should_encode_the_scaling_reference_with_the_schema() {
        let dir = temp("reference");
        let base = neighbour(&dir, "base.csv", "25,ultraviolet,1");
        let reference = dir.join("public.csv");
        std::fs::write(&reference, "id,colour,label\n-10,blue,x\n40,teal,y\n").unwrap();
        let schema = dir.join("schema.json");
        std::fs::write(
            &schema,
            r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["0", "1"]}"#,
        )
        .unwrap();
        let (train, test, p) = loaded(
            &base,
            &[
                "--schema",
                schema.to_str().unwrap(),
                "--scaling-reference",
                reference.to_str().unwrap(),
            ],
        );
        assert!(p.public && p.scaling.contains("public reference"), "{p:?}");
        for d in [&train, &test] {
            assert_eq!(d.n_features(), 4);
            for i in 0..d.len() {
                let x = d.example(i);
                // id in [-10, 40] → [0, 1]; one-hot features unchanged.
                assert!((x[0] - 0.2).abs() <= 0.5 + 1e-6, "{x:?}");
                assert!(x[1..].iter().all(|&v| v == 0.0 || v == 1.0), "{x:?}");
            }
        }
    }
}
