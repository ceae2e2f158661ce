//! CSV files of numeric features and an integer class label (RFC 4180
//! quoting, plain or gzip-compressed, header optional).

use crate::dataset::Dataset;
use crate::error::{Error, Position, Result, corrupt};
use crate::gz::{decompress_if_gz, read_maybe_gz};
use std::path::Path;

/// Which column holds the label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LabelColumn {
    /// The last column (the default).
    #[default]
    Last,
    /// A 0-based column index.
    Index(usize),
    /// A column named in the header.
    Name(String),
}

impl std::fmt::Display for LabelColumn {
    /// The spelling [`FromStr`](std::str::FromStr) reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelColumn::Last => write!(f, "last"),
            LabelColumn::Index(i) => write!(f, "{i}"),
            LabelColumn::Name(name) => write!(f, "{name}"),
        }
    }
}

impl std::str::FromStr for LabelColumn {
    type Err = std::convert::Infallible;
    /// `last`, a 0-based index, or a header name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "last" {
            LabelColumn::Last
        } else if let Ok(i) = s.parse() {
            LabelColumn::Index(i)
        } else {
            LabelColumn::Name(s.to_owned())
        })
    }
}

/// Reads a CSV file.
///
/// The first row is taken as a header when any of its fields is not a
/// number. Labels must be non-negative integers; the number of classes is
/// the largest label + 1.
///
/// # Errors
///
/// [`Error::CorruptData`] naming the file and line for malformed CSV, a row
/// whose width differs from the first data row, a field that is not a
/// finite number, a label that is not a non-negative integer (or above
/// 65 535), or a file without data rows; [`Error::InvalidParameter`] for a
/// label column that does not exist; [`Error::Io`].
pub fn read_csv(path: &Path, label: &LabelColumn) -> Result<Dataset> {
    parse_csv(path, &read_maybe_gz(path)?, label)
}

pub(crate) fn read_csv_bytes(path: &Path, raw: &[u8], label: &LabelColumn) -> Result<Dataset> {
    let bytes = decompress_if_gz(path, raw.to_vec())?;
    parse_csv(path, &bytes, label)
}

fn parse_csv(path: &Path, bytes: &[u8], label: &LabelColumn) -> Result<Dataset> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut header: Option<Vec<String>> = None;
    let mut width: Option<usize> = None;
    let mut label_index: Option<usize> = None;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(row as u64 + 1, |p| p.line());
            corrupt(path, Position::Line(line), format!("malformed CSV: {e}"))
        })?;
        let line = record.position().map_or(row as u64 + 1, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue; // blank line
        }
        if row == 0 && record.iter().any(|f| f.parse::<f64>().is_err()) {
            header = Some(record.iter().map(str::to_owned).collect());
            continue;
        }
        let w = *width.get_or_insert(record.len());
        if record.len() != w {
            return Err(corrupt(
                path,
                Position::Line(line),
                format!(
                    "row has {} fields, expected {w} like the first data row",
                    record.len()
                ),
            ));
        }
        if w < 2 {
            return Err(corrupt(
                path,
                Position::Line(line),
                "need at least one feature and a label",
            ));
        }
        let li = match label_index {
            Some(i) => i,
            None => {
                let i = resolve_label(label, w, header.as_deref())?;
                label_index = Some(i);
                i
            }
        };
        for (col, field) in record.iter().enumerate() {
            let value: f64 = field.parse().map_err(|_| {
                corrupt(
                    path,
                    Position::Line(line),
                    format!("column {col}: `{field}` is not a number"),
                )
            })?;
            if !value.is_finite() {
                return Err(corrupt(
                    path,
                    Position::Line(line),
                    format!("column {col}: `{field}` is not finite"),
                ));
            }
            if col == li {
                if value < 0.0 || value.fract() != 0.0 || value > 65_535.0 {
                    return Err(corrupt(
                        path,
                        Position::Line(line),
                        format!(
                            "label `{field}` out of range: labels must be integers in 0..=65535"
                        ),
                    ));
                }
                labels.push(value as u32);
            } else {
                features.push(value as f32);
            }
        }
    }
    let Some(w) = width else {
        return Err(corrupt(path, Position::Line(1), "no data rows"));
    };
    let n_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Dataset::new(features, labels, w - 1, n_classes)
}

fn resolve_label(label: &LabelColumn, width: usize, header: Option<&[String]>) -> Result<usize> {
    let bad = |value: String, reason: String| Error::InvalidParameter {
        name: "label",
        value,
        reason,
    };
    match label {
        LabelColumn::Last => Ok(width - 1),
        LabelColumn::Index(i) if *i < width => Ok(*i),
        LabelColumn::Index(i) => Err(bad(i.to_string(), format!("the file has {width} columns"))),
        LabelColumn::Name(name) => header
            .and_then(|h| h.iter().position(|c| c == name))
            .ok_or_else(|| bad(name.clone(), "no header column has this name".into())),
    }
}
