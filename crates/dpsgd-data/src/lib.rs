//! Data sets for dpsgd: readers for IDX (the MNIST family) and CSV, plain
//! or gzip-compressed, with validation that names the file and position of
//! any defect; scaling, stratified splits; and the UCI digits data set
//! embedded as the offline default.
//!
//! ```
//! let digits = dpsgd_data::digits();
//! assert_eq!((digits.len(), digits.n_features(), digits.n_classes()), (1797, 64, 10));
//! let (train, test) = digits.split(0.2, 7)?;
//! assert_eq!(train.len() + test.len(), 1797);
//! # Ok::<(), dpsgd_data::Error>(())
//! ```
#![warn(missing_docs)]

mod csv_file;
mod dataset;
mod digits;
mod error;
mod gz;
mod idx;

pub use csv_file::{LabelColumn, read_csv};
pub use dataset::{Dataset, Scaling};
pub use digits::digits;
pub use error::{Error, Position, Result};
pub use gz::read_maybe_gz;
pub use idx::{mnist_files, read_idx, read_mnist};

/// The data directory: `$DPSGD_DATA_DIR`, else `../shared/data` relative to
/// the current directory.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var_os("DPSGD_DATA_DIR")
        .map_or_else(|| std::path::PathBuf::from("../shared/data"), Into::into)
}
