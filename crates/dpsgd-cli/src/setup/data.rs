//! Reading the data a run trains on: the train and test sets, scaled and
//! encoded with public information only (or reported as read off the
//! data, [`Preprocessing`]), and checked against the settings.

use crate::error;
use crate::flags::train::{DatasetSpec, TrainOptions};
use anyhow::{Context, Result};
use dpsgd::data::{Dataset, Scaling};
use dpsgd::train::{Features, PrivacyUnit};
use std::path::Path;

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

/// The clip on the signed logarithm of CSV data's default scaling
/// ([`Scaling::SignedLog`]): values beyond `e⁴ − 1 ≈ 53.6` in magnitude
/// saturate. Chosen by measurement over 3, 4, 6 and 16 on UCI Adult, breast
/// cancer and the UCI digits read as a table (docs/benchmarks.md, "Tables
/// with no flags").
pub const SIGNED_LOG_CLIP: f32 = 4.0;

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
/// (`--scaling-reference`), or, by default, go through a fixed map of each
/// value on its own ([`Scaling::SignedLog`] with [`SIGNED_LOG_CLIP`] on
/// numeric features), which reads nothing off the data. The vocabularies of CSV
/// data (one-hot categories, class names) come from a public schema
/// (`--schema`) or are read off the data and reported as not covered by ε;
/// the number of classes is declared (`--schema`'s classes or
/// `--num-classes`) or likewise read off the data and reported. The
/// train/test split depends on the number of records and the seed only
/// ([`Dataset::split`]); at user level on the users' order of first
/// appearance, their number and the seed only ([`Dataset::split_by_user`]).
///
/// # Errors
///
/// Unreadable or corrupt data; an unreadable or invalid schema, or one that
/// does not fit the data; a reference file with other columns; a label ≥
/// `--num-classes` or outside the schema's classes.
pub fn load(o: &TrainOptions, seed: u64) -> Result<(Dataset, Dataset, Preprocessing)> {
    load_split(o, seed, UserSplit::AtUserLevel)
}

/// [`load`] for `audit`'s own target run, which scores users whenever the
/// data has a user column and so needs every user's records on one side of
/// the split ([`Dataset::split_by_user`]), at the record level too.
///
/// # Privacy
///
/// At the record level a record's user id is part of the record, and a
/// split by user lets one record (given another user's id, or a new one)
/// change the parts' sizes, N and so q and ε: the audit's report says so
/// (its `not_covered_by_epsilon`). `train` splits by position at the record
/// level ([`load`]).
///
/// # Errors
///
/// As [`load`].
pub fn load_for_audit(o: &TrainOptions, seed: u64) -> Result<(Dataset, Dataset, Preprocessing)> {
    load_split(o, seed, UserSplit::Always)
}

/// `train` and `test` as [`load`] split them, without their user ids at
/// the record level: there the split is by record, so a user's records can
/// fall on both sides and the audits of `command` (which refuse that)
/// leave users unscored; says so on standard error unless `quiet`. At user
/// level (a split by user) they keep their ids.
pub fn users_unscored_at_record_level(
    o: &TrainOptions,
    train: Dataset,
    test: Dataset,
    command: &str,
    quiet: bool,
) -> (Dataset, Dataset) {
    if matches!(o.privacy_unit(), PrivacyUnit::User { .. }) || train.users().is_none() {
        return (train, test);
    }
    if !quiet {
        eprintln!(
            "dpsgd {command}: the records' users are not scored: at the record level the data is split by record, as `train` splits it, so a user's records can be on both sides"
        );
    }
    (train.without_users(), test.without_users())
}

/// When data with a user column is split by user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserSplit {
    /// At user level only; record-level runs split by position.
    AtUserLevel,
    /// Whenever the data has user ids.
    Always,
}

/// [`load`] or [`load_for_audit`].
fn load_split(
    o: &TrainOptions,
    seed: u64,
    by_user: UserSplit,
) -> Result<(Dataset, Dataset, Preprocessing)> {
    let loaded = load_quietly(o, seed, by_user)?;
    if let Some(warning) = loaded.2.warning() {
        eprintln!("{warning}");
    }
    Ok(loaded)
}

/// [`load_split`] without printing the warning.
fn load_quietly(
    o: &TrainOptions,
    seed: u64,
    by_user: UserSplit,
) -> Result<(Dataset, Dataset, Preprocessing)> {
    check_user_flags(o)?;
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
            message: "a schema declares the columns of CSV data (--dataset csv:FILE); digits, location-like and IDX images have none".into(),
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
        DatasetSpec::LocationLike => {
            let (tr, te) =
                declared(dpsgd::data::location_like())?.split(o.test_fraction(), seed)?;
            (
                tr,
                te,
                Scaling::None,
                "none (binary features, 0 or 1 by the generator's definition)".to_owned(),
                "dataset definition".to_owned(),
                "none (binary features, classes 0-29 by the generator's definition)".to_owned(),
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
            let (all, encoding) = match (&o.user_column, &schema) {
                (Some(user), schema) => {
                    dpsgd::data::read_csv_with_users(file, label, user, schema.as_ref())
                }
                (None, Some(schema)) => dpsgd::data::read_csv_with_schema(file, label, schema),
                (None, None) => dpsgd::data::read_csv_encoded(file, label),
            }
            .map_err(dataset_error)?;
            let all = declared(all)?;
            // At user level by user: a user's records are all trained on
            // or all held out (a split by record would leave part of every
            // heavy user in the test set). At the record level by position,
            // as without users: a record's user id is part of the record,
            // and a split by user would let one record move N (issue 24's
            // rule); the ids stay, to be counted.
            let user_level = matches!(o.privacy_unit(), PrivacyUnit::User { .. });
            let (tr, te) = if user_level || by_user == UserSplit::Always {
                all.split_by_user(o.test_fraction(), seed)?
            } else {
                all.split(o.test_fraction(), seed)?
            };
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
                    Scaling::SignedLog {
                        numeric: encoding.numeric_features(),
                        clip: SIGNED_LOG_CLIP,
                    },
                    format!(
                        "a fixed public map of each value on its own: numeric features x ← clamp(sign(x)·ln(1 + |x|), −{SIGNED_LOG_CLIP}, {SIGNED_LOG_CLIP})/{SIGNED_LOG_CLIP} (no statistic of the data), one-hot features as they are; give --feature-range or --scaling-reference to scale with public ranges instead"
                    ),
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

/// Refuses the user-level flags that do not fit together, naming the flag:
/// K without user-level DP, user-level DP without a user column, a user
/// column on data that has no columns.
fn check_user_flags(o: &TrainOptions) -> Result<(), error::UsageError> {
    let user_level = o.privacy_unit.as_deref() == Some("user");
    if o.max_records_per_user.is_some() && !user_level {
        return Err(error::UsageError {
            flag: "--max-records-per-user",
            message: "bounds a user's records at user-level DP: add --privacy-unit user".into(),
        });
    }
    if o.user_column.is_some() && !matches!(o.dataset, DatasetSpec::Csv(..)) {
        return Err(error::UsageError {
            flag: "--user-column",
            message: "names a column of CSV data (--dataset csv:FILE); digits, location-like and IDX images have no user ids".into(),
        });
    }
    // What the library refuses at user level, refused before the data is
    // read (the library's check stays, for its own callers).
    if user_level {
        let clash = [
            (
                o.early_stopping.is_some(),
                "--early-stopping",
                "its validation split holds out records, which would split users",
            ),
            (
                o.mist,
                "--mist",
                "MIST splits the training records between sub-models, which would split users",
            ),
            (
                o.augment_multiplicity.is_some_and(|k| k > 1),
                "--augment-multiplicity",
                "augmented views and a user's records would both be rows of one example",
            ),
        ];
        if let Some((_, flag, why)) = clash.into_iter().find(|c| c.0) {
            return Err(error::UsageError {
                flag,
                message: format!("does not combine with user-level DP: {why}"),
            });
        }
    }
    if user_level && o.user_column.is_none() {
        return Err(error::UsageError {
            flag: "--privacy-unit",
            message: "user needs --user-column COL: the CSV column that names each record's user"
                .into(),
        });
    }
    Ok(())
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
        && batch_size > super::units(o, train)
    {
        return Err(error::UsageError {
            flag: "--batch-size",
            message: match o.privacy_unit() {
                PrivacyUnit::Record => format!(
                    "{batch_size} is larger than the training set ({} examples)",
                    train.len()
                ),
                PrivacyUnit::User { .. } => format!(
                    "{batch_size} users a batch is more than the training set's {} users",
                    super::units(o, train)
                ),
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::PathBuf;

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
                // The swapped record (first feature 25, under the default
                // signed-log scaling).
                if a.example(i)[0] != 25f32.ln_1p() / SIGNED_LOG_CLIP {
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
        // The line, never the record's label (private data in a message).
        assert!(text.contains("line 27") && !text.contains("`2`"), "{text}");
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
