//! The shared data folder for the tests that read real data sets.

use std::path::PathBuf;

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
