//! Errors of the dataset readers.

use std::fmt;
use std::path::PathBuf;

/// Where in a file a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Byte offset in the (decompressed) content.
    Byte(u64),
    /// 1-based line (record) number.
    Line(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Byte(b) => write!(f, "byte {b}"),
            Position::Line(l) => write!(f, "line {l}"),
        }
    }
}

/// A CSV column, as an error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// Its name in the header row.
    Name(String),
    /// Its 0-based index (in a file without a header row).
    Index(usize),
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Column::Name(n) => write!(f, "column `{n}`"),
            Column::Index(i) => write!(f, "column {i}"),
        }
    }
}

/// Why a number in a data file cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRange {
    /// Infinite or NaN as written (`inf`, `NaN`, or beyond `f64`'s range).
    NotFinite,
    /// A finite `f64` whose magnitude exceeds `f32::MAX` (about 3.4e38):
    /// features are stored as `f32`, where it would become infinite.
    BeyondF32,
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutOfRange::NotFinite => write!(f, "is not finite"),
            OutOfRange::BeyondF32 => write!(
                f,
                "is beyond the range of 32-bit floats (±3.4e38), in which features are stored"
            ),
        }
    }
}

/// Everything that can go wrong while loading data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file's content is not a valid data set.
    #[error("corrupt data in {}: {reason} (at {position})", path.display())]
    CorruptData {
        /// The file.
        path: PathBuf,
        /// Where.
        position: Position,
        /// What is wrong.
        reason: String,
    },
    /// A number in a CSV file that is not finite, or that becomes
    /// infinite as a 32-bit feature: named by file, line and column.
    #[error("number out of range in {}: line {line}, {column}: the value {why}", path.display())]
    NumberOutOfRange {
        /// The file.
        path: PathBuf,
        /// 1-based line of the record (the header row, if any, is line 1).
        line: u64,
        /// The column: its header name, else its 0-based index.
        column: Column,
        /// The field as written: for the caller, never in the message (a
        /// record's value is private data, and an error message ends up in
        /// logs).
        value: String,
        /// What is wrong with it.
        why: OutOfRange,
    },
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CSV schema ([`CsvSchema`](crate::CsvSchema)) is invalid, or does
    /// not fit the file it is applied to (a column the file lacks).
    #[error("invalid schema{}: {reason}", crate::schema::describe(path.as_ref()))]
    Schema {
        /// The schema file, when it was read from one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
        /// The cause (the JSON parser's error), when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A file, or the data read from it, is larger than the readers load
    /// (a limit that keeps a small hostile file, a gzip bomb or a column
    /// of a million distinct values, from exhausting memory), or its
    /// memory could not be allocated. The reason gives the counts, never a
    /// record's values.
    #[error("{} is too large: {reason}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What is too large, with the counts and the limit.
        reason: String,
        /// The failed allocation, when that is the cause.
        #[source]
        source: Option<std::collections::TryReserveError>,
    },
    /// A parameter is outside its domain.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn corrupt(
    path: &std::path::Path,
    position: Position,
    reason: impl Into<String>,
) -> Error {
    Error::CorruptData {
        path: path.to_path_buf(),
        position,
        reason: reason.into(),
    }
}
