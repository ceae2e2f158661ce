//! Data sets for dpsgd: readers for IDX (the MNIST family) and CSV, plain
//! or gzip-compressed, with validation that names the file and position of
//! any defect; scaling; train/test splits that no record's content can
//! move; the UCI digits data set embedded as the offline default; and the
//! wavelet scattering transform ([`scatter`], ScatterNet features) with
//! per-example group normalisation.
//!
//! ```
//! let digits = dpsgd_data::digits();
//! assert_eq!((digits.len(), digits.n_features(), digits.n_classes()), (1797, 64, 10));
//! let (train, test) = digits.split(0.2, 7)?;
//! // round(0.2 · 1797) test examples, whatever the labels.
//! assert_eq!((train.len(), test.len()), (1438, 359));
//! # Ok::<(), dpsgd_data::Error>(())
//! ```
//!
//! # Splits
//!
//! [`Dataset::split`] puts exactly `round(f · N)` examples in the test
//! part, chosen by the seed alone ([`Dataset::split_positions`]): not
//! stratified, so that neither the sizes nor which record goes where depend
//! on any record's label or features (see its `# Privacy` section).
//!
//! # User ids (user-level DP)
//!
//! For user-level differential privacy the unit of privacy is a user, who
//! may own many records: [`Dataset::with_users`] attaches one user id per
//! record, every data set built from it keeps the ids aligned, and
//! [`Dataset::split_by_user`] puts each user's records on one side.
//! [`read_csv_with_users`] reads the ids from an identifier column, which
//! never becomes a feature.
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("dpsgd-data-doc-users-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("visits.csv");
//! std::fs::write(&path, "user,x,y\nbob,1.5,0\nann,2.5,1\nbob,3.5,1\ncid,4.5,0\n")?;
//! let user = dpsgd_data::LabelColumn::Name("user".into());
//! let (data, _) =
//!     dpsgd_data::read_csv_with_users(&path, &dpsgd_data::LabelColumn::Last, &user, None)?;
//! assert_eq!(data.n_features(), 1); // `x` only
//! let ids = data.users().unwrap(); // a hash of each user's text
//! assert!(ids[0] == ids[2] && ids[0] != ids[1] && ids[1] != ids[3]);
//! let (train, test) = data.split_by_user(0.34, 1)?; // round(0.34 · 3) = 1 test user
//! assert_eq!((train.num_users(), test.num_users()), (Some(2), Some(1)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # CSV files
//!
//! [`read_csv`] reads numeric and categorical (text) columns. Each column is
//! classified from the values of the file being read:
//!
//! * **numeric**: every non-missing value parses as a number; one feature,
//!   the value itself. A missing value in a numeric column is an error.
//! * **categorical**: no value parses as a number; one-hot encoded, one
//!   feature per distinct non-missing value, in sorted (byte-wise) order, so
//!   the encoding is deterministic. A missing value (`?` or an empty field)
//!   is encoded as **all zeros**: there is no dedicated "missing" feature.
//! * a column that **mixes** numbers and text is refused, with an error
//!   that names the column and the two lines that disagree.
//!
//! The label column may be numeric (non-negative integers, used as they
//! are) or text: its distinct values, sorted, become classes `0, 1, …`
//! ([`CsvEncoding::classes`]). A missing label is an error.
//!
//! [`read_csv_encoded`] also returns the [`CsvEncoding`] read off the file,
//! and [`read_csv_with_encoding`] applies it to another file (an unknown
//! category is an error). Splitting one file into train and test
//! ([`Dataset::split`]) needs neither: both parts share the encoding.
//!
//! ## A public schema
//!
//! [`read_csv_with_schema`] takes the vocabularies from a [`CsvSchema`]
//! (in JSON: `{"columns": {"COL": ["cat", …]}, "classes": ["label", …]}`)
//! instead: a listed column is one-hot over exactly its listed categories in
//! the listed order, and a value it does not list (or a missing one) is all
//! zeros; every other column is numeric; the label's classes are the listed
//! ones, in order, and a label outside them is an error.
//!
//! ## Privacy
//!
//! Without a schema, the category list of each column and the label's
//! class names are read off the data and are therefore **not covered by
//! ε**: one record with a category nobody else has adds an input feature
//! (visible in the model's shape), and a rare class shifts every later
//! class's index; and whether the first line is a header is detected from
//! the rows, which a headerless file's first record can decide.
//! [`CsvEncoding::read_from_data`] names what was read. Declare them in a
//! [`CsvSchema`] from public knowledge instead.
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("dpsgd-data-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("people.csv");
//! std::fs::write(&path, "age,job,income\n30,clerk,low\n41,?,high\n25,admin,low\n")?;
//! let (data, encoding) = dpsgd_data::read_csv_encoded(&path, &dpsgd_data::LabelColumn::Last)?;
//! assert_eq!(encoding.feature_names(), ["age", "job=admin", "job=clerk"]);
//! assert_eq!(data.example(1), &[41.0, 0.0, 0.0]); // `?`: all zeros
//! assert_eq!(encoding.classes().unwrap(), ["high", "low"]);
//! assert_eq!(data.labels(), &[1, 0, 1]);
//! assert_eq!(encoding.read_from_data().len(), 3); // job's categories, the classes, the header
//!
//! // The same file with a public schema: `admin` is not listed (all zeros).
//! let schema = dpsgd_data::CsvSchema::from_json(
//!     r#"{"header": true, "columns": {"job": ["clerk", "nurse"]}, "classes": ["low", "high"]}"#,
//! )?;
//! let (data, encoding) =
//!     dpsgd_data::read_csv_with_schema(&path, &dpsgd_data::LabelColumn::Last, &schema)?;
//! assert_eq!(encoding.feature_names(), ["age", "job=clerk", "job=nurse"]);
//! assert_eq!(data.example(2), &[25.0, 0.0, 0.0]);
//! assert_eq!(data.labels(), &[0, 1, 0]);
//! assert!(encoding.read_from_data().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod csv_file;
mod dataset;
mod digits;
mod error;
mod gz;
mod idx;
pub mod scatter;
mod schema;
mod synthetic;

pub use csv_file::{
    ColumnEncoding, CsvEncoding, LabelColumn, read_csv, read_csv_encoded, read_csv_with_encoding,
    read_csv_with_schema, read_csv_with_users,
};
pub use dataset::{Dataset, Scaling};
pub use digits::digits;
pub use error::{Column, Error, OutOfRange, Position, Result};
pub use gz::read_maybe_gz;
pub use idx::{mnist_files, read_idx, read_mnist};
pub use scatter::{Scattering, group_normalize, scatter_dataset};
pub use schema::CsvSchema;
pub use synthetic::{BinaryProfiles, binary_profiles, location_like};

/// The data directory: `$DPSGD_DATA_DIR`, else `../shared/data` relative to
/// the current directory.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var_os("DPSGD_DATA_DIR")
        .map_or_else(|| std::path::PathBuf::from("../shared/data"), Into::into)
}
