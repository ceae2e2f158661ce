//! Helpers shared by the facade's integration tests.

/// The code lines (doc comments and blank lines aside) of `new` that a
/// longest-common-subsequence alignment with `old` does not match.
pub fn lines_added(old: &str, new: &str) -> Vec<String> {
    let code = |s: &str| -> Vec<String> {
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//!"))
            .map(String::from)
            .collect()
    };
    let (a, b) = (code(old), code(new));
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut added) = (0, 0, Vec::new());
    while j < b.len() {
        if i < a.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            added.push(b[j].clone());
            j += 1;
        }
    }
    added
}
