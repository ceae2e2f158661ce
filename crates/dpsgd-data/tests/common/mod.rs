//! Helpers shared by the data tests: the data folder for the tests that
//! read real data sets, scratch folders and files, and error matchers
//! (each test binary uses some of them).
#![allow(dead_code)]

use dpsgd_data::{Error, Position};
use std::path::{Path, PathBuf};

/// A fresh scratch folder, unique to this process and call: `prefix` names
/// the test binary.
pub fn temp_dir(prefix: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dpsgd-data-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The position and reason of a [`Error::CorruptData`] (panics otherwise).
pub fn corrupt(e: Error) -> (Position, String) {
    match e {
        Error::CorruptData {
            position, reason, ..
        } => (position, reason),
        other => panic!("expected CorruptData, got {other}"),
    }
}

/// `$DPSGD_DATA_DIR`, else the workspace root's sibling `shared/data`
/// (`<workspace>/../shared/data`; this crate is `<workspace>/crates/dpsgd-data`),
/// independent of the directory the tests run in.
pub fn data_root() -> PathBuf {
    std::env::var_os("DPSGD_DATA_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    )
}

/// The file or folder `rel` under [`data_root`], or `None` (after printing
/// a skip line) when it is missing. A missing file is a failure, not a skip,
/// when `CI` or `DPSGD_DATA_DIR` is set: there the data is meant to be there,
/// and a skipped test would be reported as passed.
pub fn require(rel: &str) -> Option<PathBuf> {
    let path = data_root().join(rel);
    if path.exists() {
        return Some(path);
    }
    let strict = ["CI", "DPSGD_DATA_DIR"]
        .into_iter()
        .find(|v| std::env::var_os(v).is_some());
    if let Some(var) = strict {
        panic!(
            "{} not found, and {var} is set: the real-data tests must run",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED (not run, data missing): {} not found; set DPSGD_DATA_DIR to the data folder",
        path.display()
    );
    None
}
