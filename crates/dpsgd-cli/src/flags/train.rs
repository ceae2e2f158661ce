//! The options of a training run, shared by `train`, `audit`, `sweep` and
//! `compare` (flattened into each command's arguments): the data, the
//! model and its training, the empirical defences ([`TrainOptions`]), and
//! how much privacy ([`PrivacyOptions`], `train` and `audit`).

use super::parse;
use crate::output::clobbering::Named;
use dpsgd::data::LabelColumn;
use dpsgd::models::Activation;
use dpsgd::train::{ClippingMode, ConvStrategy, Features, Privacy, PrivacyUnit, Recipe};

/// K when `--privacy-unit user` is given without `--max-records-per-user`.
pub const DEFAULT_MAX_RECORDS_PER_USER: usize = 8;
use dpsgd_accountant::AccountantKind;
use dpsgd_burn::backend::Backend;
use std::path::PathBuf;

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    /// The embedded UCI digits (80/20 split, see [`dpsgd::data::Dataset::split`]).
    Digits,
    /// A synthetic table of the Location-30 benchmark's shape (5 010
    /// records, 446 binary features, 30 classes; see
    /// [`dpsgd::data::location_like`]), generated, fixed by its definition.
    LocationLike,
    /// A directory with the MNIST file names (its own train/test split).
    Idx(PathBuf),
    /// A CSV file (80/20 split, see [`dpsgd::data::Dataset::split`]; features scaled and
    /// vocabularies fixed only with public information, or reported as read
    /// off the data, see `setup::Preprocessing`).
    Csv(PathBuf, LabelColumn),
}

impl std::fmt::Display for DatasetSpec {
    /// The spelling `--dataset` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetSpec::Digits => write!(f, "digits"),
            DatasetSpec::LocationLike => write!(f, "location-like"),
            DatasetSpec::Idx(dir) => write!(f, "idx:{}", dir.display()),
            DatasetSpec::Csv(file, LabelColumn::Last) => write!(f, "csv:{}", file.display()),
            DatasetSpec::Csv(file, label) => write!(f, "csv:{},label={label}", file.display()),
        }
    }
}

/// `digits`, `location-like`, `idx:DIR`, `csv:FILE[,label=COL]`.
pub fn dataset(s: &str) -> Result<DatasetSpec, String> {
    if s == "digits" {
        Ok(DatasetSpec::Digits)
    } else if s == "location-like" {
        Ok(DatasetSpec::LocationLike)
    } else if let Some(dir) = s.strip_prefix("idx:") {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        Ok(DatasetSpec::Idx(dir))
    } else if let Some(rest) = s.strip_prefix("csv:") {
        let (file, label) = match rest.rsplit_once(",label=") {
            Some((f, l)) => (f, l.parse().unwrap_or_default()),
            None => (rest, LabelColumn::Last),
        };
        let file = PathBuf::from(file);
        if !file.is_file() {
            return Err(format!("{} is not a readable file", file.display()));
        }
        Ok(DatasetSpec::Csv(file, label))
    } else {
        Err(format!(
            "`{s}`: expected digits, location-like, idx:DIR or csv:FILE[,label=COL]"
        ))
    }
}

/// A public input file (`--schema`, `--scaling-reference`) of at most
/// `limit` bytes: refused when it exists but is not a regular file (a FIFO
/// would hang the run, `/dev/zero` be read until memory runs out) or is
/// larger. A path that cannot be inspected (missing, no permission) is
/// left to its reader, which names the OS error.
fn public_file(s: &str, what: &str, limit: u64) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => Err(format!(
            "{} is not a readable file: {what} must be a regular file (not a FIFO, device or folder)",
            path.display()
        )),
        Ok(m) if m.len() > limit => Err(format!(
            "{} has {} bytes, more than the {limit} {what} may hold",
            path.display(),
            m.len()
        )),
        _ => Ok(path),
    }
}

/// `--schema FILE`: a regular file of at most
/// [`CsvSchema::MAX_FILE_BYTES`](dpsgd::data::CsvSchema::MAX_FILE_BYTES).
fn schema_file(s: &str) -> Result<PathBuf, String> {
    public_file(s, "a schema", dpsgd::data::CsvSchema::MAX_FILE_BYTES)
}

/// `--scaling-reference FILE`: a regular file of at most
/// [`CsvEncoding::MAX_CONTENT_BYTES`](dpsgd::data::CsvEncoding::MAX_CONTENT_BYTES)
/// (the reader also caps its decompressed content).
fn reference_file(s: &str) -> Result<PathBuf, String> {
    public_file(
        s,
        "a scaling reference",
        dpsgd::data::CsvEncoding::MAX_CONTENT_BYTES,
    )
}

/// `--user-column`: a 0-based index or a header name (`last` is the last
/// column, as for the label).
fn user_column(s: &str) -> Result<LabelColumn, String> {
    if s.trim().is_empty() {
        return Err("expected a column index or header name".into());
    }
    Ok(s.parse().unwrap_or(LabelColumn::Last))
}

/// Options shared by `train` and `sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOptions {
    /// digits (embedded) | location-like (a generated table of the Location-30
    /// benchmark's shape: 5010 records, 446 binary features, 30 classes) |
    /// idx:DIR (MNIST file names) | csv:FILE[,label=COL].
    #[arg(long, default_value = "digits", value_parser = dataset)]
    pub dataset: DatasetSpec,
    /// Settings known to work, chosen by the data's public shape unless
    /// named: single-channel images of side >= 16 get image-scatternet
    /// (below a target epsilon of 2: batch 4096, lr 4, 40 epochs; image-cnn
    /// with --model cnn), tables (CSV data) tabular, anything else (the 8x8
    /// digits) general. Every flag below overrides one setting of the
    /// recipe; the report names it.
    #[arg(long, value_name = "auto|general|tabular|image-scatternet|image-cnn", value_parser = recipe)]
    pub recipe: Option<String>,
    /// Model (default: the recipe's; general: mlp, tabular: logreg, image-scatternet: logreg on ScatterNet features).
    #[arg(long, value_parser = ["logreg", "mlp", "cnn"])]
    pub model: Option<String>,
    /// Features the model sees: raw, or scatter (ScatterNet: wavelet
    /// scattering + group normalisation, per example; images only).
    #[arg(long, value_name = "raw|scatter", value_parser = features)]
    pub features: Option<Features>,
    /// MLP hidden layer sizes, comma-separated (default 128; ignored by logreg and cnn).
    #[arg(long, value_name = "N,N,...", value_parser = hidden)]
    pub hidden: Option<Hidden>,
    /// Activation between hidden layers (default: the recipe's; tanh is
    /// the published best choice under DP: bounded activations lose less
    /// to clipping).
    #[arg(long, value_name = "relu|tanh")]
    pub activation: Option<Activation>,
    /// Parameter averaging: evaluate, report and save the exponential
    /// moving average of the iterates with this decay in [0, 1) (free in ε;
    /// default: the recipe's; 0 = the last iterate).
    #[arg(long, value_name = "D", allow_hyphen_values = true, value_parser = ema_decay)]
    pub ema_decay: Option<f64>,
    /// Augmentation multiplicity: train on K random translations of each
    /// sampled image, their mean gradient clipped as one (De et al. 2022;
    /// images with raw features only; K times the compute; default 1:
    /// none).
    #[arg(long, value_name = "K", allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub augment_multiplicity: Option<usize>,
    /// Weight standardisation of the CNN's convolutions (each output
    /// channel's kernel used with mean 0, variance 1; De et al. 2022).
    #[arg(long)]
    pub weight_standardization: bool,
    /// δ (default: 1/N rounded down to a power of ten, capped at 1e-5).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::delta)]
    pub delta: Option<f64>,
    /// Epochs, each round(1/q) Poisson steps (default: the recipe's;
    /// general: 50).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub epochs: Option<usize>,
    /// Expected (Poisson) batch size (default: the recipe's, at most a
    /// quarter of the training set; general: 128).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub batch_size: Option<usize>,
    /// Per-example clipping norm C (default: the recipe's; general: 1).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::positive)]
    pub max_grad_norm: Option<f64>,
    /// Clipping policy, at --max-grad-norm: flat (whole gradient),
    /// per-layer (C/√L per layer), automatic (normalised, Bu et al.),
    /// adaptive (C tracks the median norm, Andrew et al.).
    #[arg(long, value_name = "flat|per-layer|automatic|adaptive", default_value = "flat", value_parser = clipping)]
    pub clipping: ClippingMode,
    /// Process a Poisson batch in chunks of at most this many examples
    /// (same result, less memory; default: the whole batch at once).
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub max_physical_batch_size: Option<usize>,
    /// Data-parallel workers for the DP step (the batch is sampled once,
    /// clipped in 8 fixed shards by N workers, noised once; the result does
    /// not depend on N). Workers share the chosen backend's device.
    #[arg(long, allow_hyphen_values = true, value_name = "N", default_value_t = 1, value_parser = parse::positive_count)]
    pub devices: usize,
    /// With --devices N: sum the workers' parts with burn's collective
    /// all-reduce (NCCL between CUDA GPUs; burn 0.22 has it for CUDA only,
    /// so other backends refuse it) instead of on the first device.
    #[arg(long)]
    pub all_reduce: bool,
    /// How DP convolutions get per-example gradients (auto picks unfold
    /// unless the patches are large).
    #[arg(long, value_name = "auto|unfold|materialize", default_value = "auto", value_parser = conv_strategy)]
    pub conv_strategy: ConvStrategy,
    /// Learning rate (default: the recipe's; with another optimizer than
    /// the recipe's, 0.01 for adam and 0.3 for sgd).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::positive)]
    pub lr: Option<f64>,
    /// Inner optimizer (default: the recipe's; general: adam; the image
    /// recipes: sgd with momentum 0.9).
    #[arg(long, value_parser = ["sgd", "adam"])]
    pub optimizer: Option<String>,
    /// Seed for initialisation, sampling and noise (the run is then
    /// reproducible and reported as not secure).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::steps)]
    pub seed: Option<u64>,
    /// Backend: one compiled into this build (the others need
    /// `--features ndarray`, `wgpu` or `cuda`).
    #[arg(long, default_value = "flex", value_parser = parse::backend())]
    pub backend: Backend,
    /// Accountant (default: the recipe's; general: rdp, the image recipes:
    /// pld). pld usually gives a smaller ε than rdp for the same run (about
    /// 8% less at q = 0.01 over 1e6–1e8 steps) but refuses, naming the
    /// reason, where it cannot resolve the run (δ below the mass its
    /// truncation sets aside, ≈ 1e-15 per step; σ > 1e150; grids too
    /// large); rdp answers everywhere.
    #[arg(long, value_parser = parse::accountant)]
    pub accountant: Option<AccountantKind>,
    /// The unit of privacy: record (default; ε protects any one record)
    /// or user (ε protects any one user and all their records: users are
    /// Poisson-sampled, each contributes the mean gradient of at most
    /// --max-records-per-user of their records, clipped as one; needs
    /// --user-column). --batch-size then counts users.
    #[arg(long, value_name = "record|user", value_parser = ["record", "user"])]
    pub privacy_unit: Option<String>,
    /// CSV column naming each record's user (0-based index or header
    /// name): an identifier, never a feature. The train/test split is then
    /// by user, the report counts users (not covered by ε) and the audit
    /// scores users as well as records.
    #[arg(long, value_name = "COL", value_parser = user_column)]
    pub user_column: Option<LabelColumn>,
    /// With --privacy-unit user: the most records one user contributes to
    /// a step, chosen uniformly at random among theirs (default 8). Each
    /// sampled user costs this many rows of compute.
    #[arg(long, value_name = "K", allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub max_records_per_user: Option<usize>,
    /// Fraction of a single-file dataset held out for testing (default
    /// 0.2; `audit`: 0.5, members and non-members in equal numbers).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::open_fraction)]
    pub test_fraction: Option<f64>,
    /// CSV data: the public range of every feature; features are clipped to
    /// it and mapped to [0, 1]. Without it (or --scaling-reference) numeric
    /// features go through a fixed public map of each value on its own,
    /// clamp(sign(x)*ln(1+|x|), -4, 4)/4, and one-hot features stay 0/1.
    #[arg(long, value_name = "LO:HI", allow_hyphen_values = true, value_parser = feature_range, conflicts_with = "scaling_reference")]
    pub feature_range: Option<(f32, f32)>,
    /// CSV data: a PUBLIC reference file (same columns) whose per-feature
    /// min/max become the ranges features are clipped to and mapped to [0, 1].
    #[arg(long, value_name = "FILE", value_parser = reference_file)]
    pub scaling_reference: Option<PathBuf>,
    /// CSV data: the number of classes, declared (labels 0..K−1); without it
    /// (or --schema's classes) the count is read off the private data and
    /// marked as not covered by ε.
    #[arg(long, allow_hyphen_values = true, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub num_classes: Option<u32>,
    /// CSV data: a PUBLIC schema (JSON) declaring the vocabularies:
    /// {"header": true, "columns": {"COL": ["cat", ...]}, "classes":
    /// ["label", ...]} ("header": whether the first line is one; otherwise
    /// detected from the rows, which one record can change). A
    /// listed column is one-hot over exactly its categories (another value
    /// or a missing one: all zeros); other columns are numeric; a label
    /// outside "classes" is an error. COL is a header name (a 0-based index
    /// without a header). Without it, categories and class names are read
    /// off the private data, outside ε (see docs/schema.md).
    #[arg(long, value_name = "FILE", value_parser = schema_file)]
    pub schema: Option<PathBuf>,
    /// Accept δ ≥ 1/N (a δ that allows publishing a whole record).
    #[arg(long)]
    pub allow_large_delta: bool,
    /// Defence: label smoothing ε in [0, 1) (the target puts 1 − ε on the
    /// true class). Measured to RAISE membership leakage at every setting
    /// tried (ε = 0.05–0.4 on digits, Adult-4k and location-like; not on
    /// breast cancer; docs/defences.md).
    #[arg(long, value_name = "E", allow_hyphen_values = true, value_parser = unit_interval)]
    pub label_smoothing: Option<f32>,
    /// Defence: confidence penalty β ≥ 0 (loss − β·entropy). Measured to
    /// RAISE membership leakage at β = 0.5 on digits, Adult and
    /// location-like (docs/defences.md).
    #[arg(long, value_name = "B", allow_hyphen_values = true, value_parser = non_negative)]
    pub confidence_penalty: Option<f32>,
    /// Defence: RelaxLoss with target loss level α > 0 (Chen et al. 2022;
    /// per example under DP-SGD), or a share of ln K as `0.5lnK` (ln K is the
    /// loss of a uniform prediction over K classes); alone, `0.2lnK` (the
    /// default rule, docs/defences.md). Keep α below ln K: above it training
    /// collapses (18% on a two-class table at α ≥ 1). With an Adam recipe
    /// (general, tabular) it cost 5-14 points and raised the loss attack on
    /// the 30-class location-like table; its authors train with SGD
    /// (--optimizer sgd): there it kept accuracy, and at 0.5lnK lowered the
    /// loss attack.
    #[arg(long, value_name = "ALPHA", num_args = 0..=1, default_missing_value = "0.2lnK", allow_negative_numbers = true, value_parser = parse::relax_alpha)]
    pub relaxloss: Option<parse::RelaxAlpha>,
    /// RelaxLoss: upper bound of the flattened true-class probability, in
    /// (0, 1] (default 0.3, the published Purchase setting).
    #[arg(long, value_name = "U", requires = "relaxloss", allow_hyphen_values = true, value_parser = parse::open_fraction)]
    pub relaxloss_upper: Option<f64>,
    /// Defence: MIST, membership-invariant subspace training (Li, Li &
    /// Ribeiro 2024): M sub-models on disjoint parts, a cross-difference
    /// loss, averaged every round; each epoch is one round.
    #[arg(long)]
    pub mist: bool,
    /// MIST: sub-models M ≥ 2 (default 4).
    #[arg(long, allow_hyphen_values = true, value_name = "M", requires = "mist", value_parser = clap::value_parser!(u32).range(2..))]
    pub mist_submodels: Option<u32>,
    /// MIST: weight λ > 0 of the cross-difference loss (default 1). Too
    /// large a λ collapses training to a constant prediction: measured at
    /// λ ≥ 1 on breast cancer (285 records, parts of about 71), λ ≥ 2 on
    /// Adult-4k, λ ≥ 3 on location-like (docs/defences.md).
    #[arg(long, value_name = "L", requires = "mist", allow_hyphen_values = true, value_parser = parse::positive)]
    pub mist_weight: Option<f64>,
    /// MIST: epochs of ordinary training T₁ ≥ 1 per round (default 1).
    #[arg(long, value_name = "T1", requires = "mist", allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub mist_local_epochs: Option<usize>,
    /// MIST: epochs of the cross-difference loss T₂ ≥ 1 per round (default 1).
    #[arg(long, value_name = "T2", requires = "mist", allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub mist_cross_epochs: Option<usize>,
    /// Defence: early stopping after this many epochs without a better
    /// validation accuracy (the best epoch's model is kept).
    #[arg(long, value_name = "PATIENCE", allow_hyphen_values = true, value_parser = parse::positive_count)]
    pub early_stopping: Option<usize>,
    /// Early stopping: fraction of the training data held out for
    /// validation (default 0.1).
    #[arg(long, value_name = "F", requires = "early_stopping", allow_hyphen_values = true, value_parser = parse::open_fraction)]
    pub validation_fraction: Option<f64>,
    /// Defence: L2 weight decay λ ≥ 0 in the optimizer. Added to the
    /// gradient, so Adam rescales it: with the Adam recipes it cost 8 points
    /// on location-like at λ = 0.0001–0.01 (docs/defences.md).
    #[arg(long, value_name = "L", allow_hyphen_values = true, value_parser = non_negative_f64)]
    pub weight_decay: Option<f64>,
    /// Defence: dropout probability in [0, 1) between the built-in models'
    /// hidden layers (training only).
    #[arg(long, value_name = "P", allow_hyphen_values = true, value_parser = unit_interval_f64)]
    pub dropout: Option<f64>,
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err("must be a finite number ≥ 0".into())
    }
}

fn non_negative(s: &str) -> Result<f32, String> {
    non_negative_f64(s).map(|v| v as f32)
}

fn unit_interval_f64(s: &str) -> Result<f64, String> {
    let v = non_negative_f64(s)?;
    if v < 1.0 {
        Ok(v)
    } else {
        Err("must be in [0, 1)".into())
    }
}

fn unit_interval(s: &str) -> Result<f32, String> {
    unit_interval_f64(s).map(|v| v as f32)
}

impl TrainOptions {
    /// The empirical defences the flags ask for, on data with `classes`
    /// classes (RelaxLoss's α may be a share of ln K).
    pub fn defences(&self, classes: usize) -> dpsgd::train::Defences {
        dpsgd::train::Defences {
            label_smoothing: self.label_smoothing,
            confidence_penalty: self.confidence_penalty,
            relaxloss: self.relaxloss.map(|alpha| {
                let upper = self
                    .relaxloss_upper
                    .unwrap_or(f64::from(dpsgd::train::RelaxLossSettings::DEFAULT_UPPER));
                alpha.settings(classes, upper)
            }),
            early_stopping: self
                .early_stopping
                .map(|patience| dpsgd::train::EarlyStopping {
                    validation_fraction: self.validation_fraction.unwrap_or(0.1),
                    patience,
                }),
            weight_decay: self.weight_decay,
            dropout: self.dropout,
            mist: self.mist.then(|| {
                let d = dpsgd::train::MistSettings::default();
                dpsgd::train::MistSettings {
                    submodels: self.mist_submodels.map_or(d.submodels, |m| m as usize),
                    local_epochs: self.mist_local_epochs.unwrap_or(d.local_epochs),
                    cross_epochs: self.mist_cross_epochs.unwrap_or(d.cross_epochs),
                    weight: self.mist_weight.map_or(d.weight, |w| w as f32),
                }
            }),
        }
    }
}

impl TrainOptions {
    /// The files a run with these options reads: the `--dataset` CSV file (or IDX files),
    /// the `--scaling-reference` and the `--schema`.
    pub fn inputs(&self) -> Vec<Named> {
        let o = self;
        let mut inputs = Vec::new();
        match &o.dataset {
            DatasetSpec::Csv(file, _) => inputs.push(("--dataset", file.clone())),
            DatasetSpec::Idx(dir) => {
                if let Ok(files) = dpsgd::data::mnist_files(dir) {
                    inputs.extend(files.into_iter().map(|f| ("--dataset", f)));
                }
            }
            DatasetSpec::Digits | DatasetSpec::LocationLike => {}
        }
        if let Some(p) = &o.scaling_reference {
            inputs.push(("--scaling-reference", p.clone()));
        }
        if let Some(p) = &o.schema {
            inputs.push(("--schema", p.clone()));
        }
        inputs
    }

    /// The unit of privacy the flags ask for (`--max-records-per-user`
    /// defaults to [`DEFAULT_MAX_RECORDS_PER_USER`]).
    pub fn privacy_unit(&self) -> PrivacyUnit {
        match self.privacy_unit.as_deref() {
            Some("user") => PrivacyUnit::User {
                max_records_per_user: self
                    .max_records_per_user
                    .unwrap_or(DEFAULT_MAX_RECORDS_PER_USER),
            },
            _ => PrivacyUnit::Record,
        }
    }

    /// The held-out fraction of a single-file dataset.
    pub fn test_fraction(&self) -> f64 {
        self.test_fraction.unwrap_or(0.2)
    }
}

/// MLP hidden layer sizes (a `Vec` under another name, so that clap takes
/// the whole list as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden(pub Vec<usize>);

/// `N,N,...`: one or more sizes ≥ 1.
fn hidden(s: &str) -> Result<Hidden, String> {
    s.split(',')
        .map(|v| match v.trim().parse::<usize>() {
            Ok(0) => Err("every size must be at least 1".to_owned()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "`{s}`: expected sizes >= 1 separated by commas, e.g. 256,128"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Hidden)
}

/// `auto` (None) or a recipe name.
fn recipe(s: &str) -> Result<String, String> {
    if s == "auto" || Recipe::named(s).is_some() {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}`: expected auto, {}",
            Recipe::NAMES.join(", ")
        ))
    }
}

/// `raw` or `scatter`.
fn features(s: &str) -> Result<Features, String> {
    match s {
        "raw" => Ok(Features::Raw),
        "scatter" => Ok(Features::SCATTER),
        _ => Err(format!("`{s}`: expected raw or scatter")),
    }
}

/// A decay in [0, 1).
fn ema_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if (0.0..1.0).contains(&d) => Ok(d),
        _ => Err(format!("`{s}`: expected a number in [0, 1)")),
    }
}

/// `flat`, `per-layer`, `automatic`, `adaptive`.
fn clipping(s: &str) -> Result<ClippingMode, String> {
    s.parse()
}

/// `auto`, `unfold`, `materialize`.
fn conv_strategy(s: &str) -> Result<ConvStrategy, String> {
    match s {
        "auto" => Ok(ConvStrategy::Auto),
        "unfold" => Ok(ConvStrategy::Unfold),
        "materialize" => Ok(ConvStrategy::Materialize),
        _ => Err(format!("`{s}`: expected auto, unfold or materialize")),
    }
}

/// `LO:HI` with finite LO < HI.
fn feature_range(s: &str) -> Result<(f32, f32), String> {
    let (lo, hi) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected LO:HI"))?;
    let parse = |v: &str| -> Result<f32, String> {
        v.trim()
            .parse::<f32>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("`{v}` is not a finite number"))
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo >= hi {
        Err(format!("`{s}`: LO must be below HI"))
    } else if !(hi - lo).is_finite() {
        // The width overflows f32: every feature would map to 0.
        Err(format!(
            "`{s}`: the range is wider than f32 can hold (HI − LO overflows)"
        ))
    } else {
        Ok((lo, hi))
    }
}

/// How much privacy, for `train` and `audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrivacyOptions {
    /// Target ε: σ is calibrated so that the whole run meets it (default:
    /// 3 when no other privacy flag is given).
    #[arg(long, allow_hyphen_values = true, value_parser = parse::epsilon, conflicts_with_all = ["noise_multiplier", "non_private"])]
    pub target_epsilon: Option<f64>,
    /// A fixed noise multiplier σ instead of a target ε.
    #[arg(long, allow_hyphen_values = true, value_parser = parse::noise_multiplier, conflicts_with = "non_private")]
    pub noise_multiplier: Option<f64>,
    /// Train the same model without DP (no clipping, no noise).
    #[arg(long)]
    pub non_private: bool,
}

impl PrivacyOptions {
    /// The privacy the flags ask for (ε = 3 when none is given).
    pub fn privacy(&self) -> Privacy {
        match (self.non_private, self.noise_multiplier, self.target_epsilon) {
            (true, _, _) => Privacy::NonPrivate,
            (false, Some(s), _) => Privacy::NoiseMultiplier(s),
            (false, None, Some(e)) => Privacy::TargetEpsilon(e),
            (false, None, None) => Privacy::TargetEpsilon(3.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A declared range must be finite, ordered and of finite width: with
    /// `-3e38:3e38` the width overflowed f32 and every feature silently
    /// mapped to 0 (issue 26, item 4).
    #[test]
    fn should_refuse_a_feature_range_whose_width_overflows() {
        assert_eq!(feature_range("-3:3"), Ok((-3.0, 3.0)));
        assert_eq!(feature_range("-1e38:1e38"), Ok((-1e38, 1e38)));
        for bad in ["-3e38:3e38", "3:3", "4:3", "nan:1", "-inf:0", "1"] {
            assert!(feature_range(bad).is_err(), "{bad}");
        }
        assert!(
            feature_range("-3e38:3e38")
                .unwrap_err()
                .contains("overflows")
        );
    }

    /// `--schema` and `--scaling-reference` took a FIFO (the run hung) or
    /// `/dev/zero` (read until memory ran out): a file that is not regular,
    /// or larger than its reader loads, is refused as the flag is parsed.
    #[test]
    fn should_refuse_a_public_input_that_is_not_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("dpsgd-flags-public-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("schema.json");
        std::fs::write(&small, r#"{"header": true}"#).unwrap();
        let small = small.to_str().unwrap();
        let folder = dir.to_str().unwrap();
        for parse in [schema_file, reference_file] {
            assert_eq!(parse(small), Ok(PathBuf::from(small)));
            // A missing file is left to the reader (its OS error).
            assert!(parse("/nonexistent/dpsgd.json").is_ok());
            assert!(parse(folder).unwrap_err().contains("not a readable file"));
            #[cfg(unix)]
            assert!(
                parse("/dev/zero")
                    .unwrap_err()
                    .contains("must be a regular file")
            );
        }
        let fifo = dir.join("fifo.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let fifo = fifo.to_str().unwrap();
            assert!(schema_file(fifo).unwrap_err().contains("not a FIFO"));
            assert!(reference_file(fifo).unwrap_err().contains("not a FIFO"));
        }
        // Larger than the limit: refused, naming the size and the limit.
        let e = public_file(small, "a schema", 4).unwrap_err();
        assert!(
            e.contains("has 16 bytes, more than the 4 a schema may hold"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
