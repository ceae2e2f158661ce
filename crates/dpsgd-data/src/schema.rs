//! A public schema for CSV files: the categories of each text column and
//! the label's classes, declared instead of read off the (private) data.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The vocabularies of a CSV file, declared from public knowledge: for
/// each text column, its categories (one one-hot feature each, in the
/// order given), and the label's classes (class `i` is `classes[i]`).
///
/// Read a file with it using [`read_csv_with_schema`](crate::read_csv_with_schema):
/// a listed column is one-hot over exactly its listed categories, and a
/// value that is not listed (or missing) is all zeros, never a new
/// feature; every column that is not listed is numeric; a label that is not
/// among the classes is an error, never a new class.
///
/// Columns are named by their header name, or, in a file without a header
/// row as wide as its data, by their 0-based index written as a string
/// (`"3"`).
///
/// # Privacy
///
/// With a schema, the number of features, their meaning and the number
/// and order of classes are fixed before any record is read: one record
/// cannot add a feature or a class, or move another's index. The schema
/// must come from public knowledge (a codebook, a published data
/// dictionary), not from the private file itself.
///
/// ```
/// let schema = dpsgd_data::CsvSchema::from_json(
///     r#"{"columns": {"job": ["clerk", "admin"]}, "classes": ["low", "high"]}"#,
/// )?;
/// assert_eq!(schema.categories("job").unwrap(), ["clerk", "admin"]);
/// assert_eq!(schema.classes().unwrap(), ["low", "high"]);
/// # Ok::<(), dpsgd_data::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CsvSchema {
    columns: Vec<(String, Vec<String>)>,
    classes: Option<Vec<String>>,
    header: Option<bool>,
}

impl CsvSchema {
    /// The most bytes a schema file may hold ([`CsvSchema::read`]): 64 MiB.
    /// A category costs at least four bytes of JSON (`"a",`), so this
    /// admits some 16 million categories, far beyond any codebook, while
    /// the parsed schema (a string each) stays within about a gigabyte.
    pub const MAX_FILE_BYTES: u64 = 64 << 20;

    /// A schema that declares nothing: every column numeric, and the
    /// classes read as [`read_csv`](crate::read_csv) reads them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `column` (a header name, or a 0-based index for a file
    /// without a header) categorical, with these categories in this order.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for an empty column name, a column declared twice,
    /// or a bad category list (see [`CsvSchema::with_classes`]).
    pub fn with_column<S: Into<String>>(
        mut self,
        column: impl Into<String>,
        categories: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        let column = column.into();
        if self.columns.iter().any(|(c, _)| *c == column) {
            return Err(schema_error(format!("column `{column}` is declared twice")));
        }
        self.columns.push(checked_column(column, categories)?);
        Ok(self)
    }

    /// Declares the label's classes, in order (class `i` is `classes[i]`);
    /// a numeric label is matched as written (`"1"` matches `1`, not `1.0`).
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for an empty list, a duplicate, an empty value or
    /// `?` (both mean "missing" in a CSV file), or a value with leading or
    /// trailing spaces (CSV fields are trimmed, so it would never match).
    pub fn with_classes<S: Into<String>>(
        mut self,
        classes: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        self.classes = Some(values("classes", classes)?);
        Ok(self)
    }

    /// Declares whether the file's first line is a header (`true`) or a
    /// record (`false`). Undeclared, it is detected from the data (see
    /// [`read_csv`](crate::read_csv)), which one record can change (a
    /// headerless file's first record with text where the rows below hold
    /// numbers is taken for a header);
    /// [`CsvEncoding::read_from_data`](crate::CsvEncoding::read_from_data)
    /// then says so.
    #[must_use]
    pub fn with_header(mut self, header: bool) -> Self {
        self.header = Some(header);
        self
    }

    /// Whether the first line is declared a header (`None`: undeclared).
    pub fn header(&self) -> Option<bool> {
        self.header
    }

    /// The same schema with the header left to detection (for a public
    /// file, such as a scaling reference, laid out unlike the private one).
    #[must_use]
    pub fn without_header(mut self) -> Self {
        self.header = None;
        self
    }

    /// The same schema without classes (for a file whose labels are not
    /// used, such as a scaling reference).
    #[must_use]
    pub fn without_classes(mut self) -> Self {
        self.classes = None;
        self
    }

    /// The declared columns and their categories, in declaration order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.columns.iter().map(|(c, v)| (c.as_str(), v.as_slice()))
    }

    /// The categories of `column`, when it is declared.
    pub fn categories(&self, column: &str) -> Option<&[String]> {
        self.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, v)| v.as_slice())
    }

    /// The declared classes.
    pub fn classes(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    /// Parses a schema from JSON:
    /// `{"header": true, "columns": {"COL": ["cat", ...], ...}, "classes":
    /// ["label", ...]}`; every key is optional, no other key is allowed.
    ///
    /// # Errors
    ///
    /// [`Error::Schema`] for invalid JSON, another shape or unknown keys
    /// (with the JSON error as its source), a column listed twice, or a
    /// category or class list refused by [`CsvSchema::with_column`] and
    /// [`CsvSchema::with_classes`].
    pub fn from_json(text: &str) -> Result<Self> {
        let json: Json = serde_json::from_str(text).map_err(|e| Error::Schema {
            path: None,
            reason: "expected {\"header\": true|false, \"columns\": {\"COLUMN\": [\"category\", ...]}, \"classes\": [\"class\", ...]}".into(),
            source: Some(Box::new(e)),
        })?;
        let mut schema = Self::new();
        // `Columns` has refused a column listed twice: push each without
        // `with_column`'s scan of the columns before it.
        schema.columns.reserve(json.columns.0.len());
        for (column, categories) in json.columns.0 {
            let (column, categories) = checked_column(column, categories)?;
            schema.columns.push((column, categories));
        }
        if let Some(classes) = json.classes {
            schema = schema.with_classes(classes)?;
        }
        if let Some(header) = json.header {
            schema = schema.with_header(header);
        }
        Ok(schema)
    }

    /// Reads a JSON schema file (see [`CsvSchema::from_json`]) of at most
    /// [`CsvSchema::MAX_FILE_BYTES`] bytes; no more than one byte past that
    /// is read (an endless file such as `/dev/zero` is refused, not read
    /// until memory runs out).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read or is not UTF-8;
    /// [`Error::TooLarge`] when it holds more than
    /// [`CsvSchema::MAX_FILE_BYTES`] bytes; [`Error::Schema`], naming the
    /// file, when it is not a valid schema.
    pub fn read(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(Self::MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        if bytes.len() as u64 > Self::MAX_FILE_BYTES {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                reason: format!(
                    "a schema file may hold at most {} bytes (64 MiB)",
                    Self::MAX_FILE_BYTES
                ),
                source: None,
            });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Schema {
                path: None,
                reason,
                source,
            } => Error::Schema {
                path: Some(path.to_path_buf()),
                reason,
                source,
            },
            e => e,
        })
    }
}

/// A schema error without a file.
pub(crate) fn schema_error(reason: impl Into<String>) -> Error {
    Error::Schema {
        path: None,
        reason: reason.into(),
        source: None,
    }
}

/// A schema error about how it fits a data file.
pub(crate) fn schema_mismatch(data: &Path, reason: impl Into<String>) -> Error {
    Error::Schema {
        path: None,
        reason: format!("{} (data file {})", reason.into(), data.display()),
        source: None,
    }
}

/// A column's name and categories, checked (all but its uniqueness among
/// the columns).
fn checked_column<S: Into<String>>(
    column: String,
    categories: impl IntoIterator<Item = S>,
) -> Result<(String, Vec<String>)> {
    if column.trim().is_empty() {
        return Err(schema_error("a column name is empty"));
    }
    let categories = values(&format!("column `{column}`"), categories)?;
    Ok((column, categories))
}

/// A checked list of categories or classes.
fn values<S: Into<String>>(what: &str, list: impl IntoIterator<Item = S>) -> Result<Vec<String>> {
    let list: Vec<String> = list.into_iter().map(Into::into).collect();
    if list.is_empty() {
        return Err(schema_error(format!("{what}: the list is empty")));
    }
    // A set, not a scan of the values before each: a million categories
    // would take a million² comparisons.
    let mut seen: HashSet<&str> = HashSet::with_capacity(list.len());
    for v in &list {
        if v.is_empty() || v == "?" {
            return Err(schema_error(format!(
                "{what}: `{v}` means a missing value in a CSV file and cannot be a category"
            )));
        }
        if v.trim() != v {
            return Err(schema_error(format!(
                "{what}: `{v}` has leading or trailing spaces (CSV fields are trimmed, so it would never match)"
            )));
        }
        if !seen.insert(v.as_str()) {
            return Err(schema_error(format!("{what}: `{v}` is listed twice")));
        }
    }
    Ok(list)
}

/// The JSON form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    #[serde(default)]
    columns: Columns,
    #[serde(default)]
    classes: Option<Vec<String>>,
    #[serde(default)]
    header: Option<bool>,
}

/// The `columns` object, in its order, refusing a key given twice (which a
/// map would silently keep the last of).
#[derive(Default)]
struct Columns(Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object mapping column names to lists of categories")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Columns, A::Error> {
                let mut out: Vec<(String, Vec<String>)> = Vec::new();
                let mut seen: HashSet<String> = HashSet::new();
                while let Some((k, v)) = map.next_entry::<String, Vec<String>>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "column `{k}` is listed twice"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(Columns(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Where a schema came from, for messages.
pub(crate) fn describe(path: Option<&PathBuf>) -> String {
    path.map_or_else(String::new, |p| format!(" {}", p.display()))
}
