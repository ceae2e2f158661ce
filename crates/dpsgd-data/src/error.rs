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
