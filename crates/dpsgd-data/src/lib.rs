//! Data sets for dpsgd: readers for IDX (the MNIST family) and CSV, plain
//! or gzip-compressed, with validation that names the file and position of
//! any defect; scaling, stratified splits; the UCI digits data set
//! embedded as the offline default; and the wavelet scattering transform
//! ([`scatter`], ScatterNet features) with per-example group normalisation.
//!
//! ```
//! let digits = dpsgd_data::digits();
//! assert_eq!((digits.len(), digits.n_features(), digits.n_classes()), (1797, 64, 10));
//! let (train, test) = digits.split(0.2, 7)?;
//! assert_eq!(train.len() + test.len(), 1797);
//! # Ok::<(), dpsgd_data::Error>(())
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
//! ## Privacy
//!
//! The category list of each column and the label's class names are read
//! off the data and are therefore **not covered by ε**: they are treated as
//! part of the data's schema, like the header (a category that only one
//! record holds is visible in the feature count and names). Where that
//! matters, declare the categories from public knowledge instead.
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

pub use csv_file::{
    ColumnEncoding, CsvEncoding, LabelColumn, read_csv, read_csv_encoded, read_csv_with_encoding,
};
pub use dataset::{Dataset, Scaling};
pub use digits::digits;
pub use error::{Error, Position, Result};
pub use gz::read_maybe_gz;
pub use idx::{mnist_files, read_idx, read_mnist};
pub use scatter::{Scattering, group_normalize, scatter_dataset};

/// The data directory: `$DPSGD_DATA_DIR`, else `../shared/data` relative to
/// the current directory.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var_os("DPSGD_DATA_DIR")
        .map_or_else(|| std::path::PathBuf::from("../shared/data"), Into::into)
}
