//! What can go wrong serving a model.

use std::path::PathBuf;

/// An error of the key store, the model or the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The key database could not be opened, read or written.
    #[error("the key database {}: {source}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// No key has this id.
    #[error("no key with id {0}")]
    NoSuchKey(i64),
    /// A setting out of its domain.
    #[error("invalid {name} `{value}`: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The model could not be loaded.
    #[error(transparent)]
    Model(#[from] dpsgd_train::TrainError),
    /// An endpoint could not be reached, or its answer read.
    #[error("{url}: {source}")]
    Http {
        /// What was asked.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The listening socket could not be opened or served.
    #[error("serving on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The socket's error.
        #[source]
        source: std::io::Error,
    },
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, ServeError>;
