//! CSV files of numeric and categorical (text) features and a class label
//! (RFC 4180 quoting, plain or gzip-compressed, header optional); the
//! encoding rules are in the crate docs (`# CSV files`).

use crate::dataset::Dataset;
use crate::error::{Column, Error, OutOfRange, Position, Result, corrupt};
use crate::gz::{decompress_if_gz, read_maybe_gz};
use crate::schema::{CsvSchema, schema_mismatch};
use crate::synthetic::MAX_VALUES;
use std::collections::{BTreeSet, HashMap};
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

/// How one CSV column becomes features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnEncoding {
    /// One feature: the number.
    Numeric,
    /// One feature per category (sorted when read off the data, in the
    /// schema's order when declared); a missing value is all zeros.
    OneHot(Vec<String>),
}

/// How a CSV file's columns became a [`Dataset`]: the encoding read off
/// the file by [`read_csv_encoded`] or declared by a [`CsvSchema`]
/// ([`read_csv_with_schema`]), reusable for another file with
/// [`read_csv_with_encoding`].
///
/// Categories and class names read off the data are **not covered by ε**
/// (see the [crate docs](crate#privacy)); [`CsvEncoding::read_from_data`]
/// names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvEncoding {
    header: Option<Vec<String>>,
    label_column: usize,
    columns: Vec<ColumnEncoding>,
    classes: Option<Vec<String>>,
    /// The columns' kinds and categories come from a schema: a category
    /// it does not list is all zeros, and nothing was read off the data.
    declared_columns: bool,
    /// The classes come from a schema.
    declared_classes: bool,
    /// Whether the first line is a header was declared by a schema (not
    /// detected from the data).
    declared_header: bool,
}

impl CsvEncoding {
    /// The most bytes of content a data file may hold, after gzip
    /// decompression: 2³⁰ (1 GiB); a larger one is refused
    /// ([`Error::TooLarge`]) before it is all read (see
    /// [`read_maybe_gz`](crate::read_maybe_gz)).
    pub const MAX_CONTENT_BYTES: u64 = crate::gz::MAX_CONTENT_BYTES;

    /// The most values (records × features, after one-hot encoding) a CSV
    /// file is read into: 2³⁰, 4 GiB of `f32`, the same bound as the
    /// largest model the trainer builds. More is refused
    /// ([`Error::TooLarge`]) before the features are allocated.
    pub const MAX_VALUES: usize = MAX_VALUES;

    /// The 0-based label column.
    pub fn label_column(&self) -> usize {
        self.label_column
    }

    /// The encoding of every column (the label column's entry describes
    /// the label: numeric, or its class names).
    pub fn columns(&self) -> &[ColumnEncoding] {
        &self.columns
    }

    /// The header, when the file has one.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// The class names (class `i` is `classes()[i]`) for a text label;
    /// `None` for a numeric label.
    pub fn classes(&self) -> Option<&[String]> {
        self.classes.as_deref()
    }

    /// Whether the columns' kinds and categories were declared by a
    /// [`CsvSchema`] (then a category it does not list encodes as all
    /// zeros) rather than read off the data.
    pub fn is_declared(&self) -> bool {
        self.declared_columns
    }

    /// The vocabularies that were read off the data rather than declared
    /// in a [`CsvSchema`], in words (`categories of column 2 (`job`)`,
    /// `class names of the label, column 4 (`income`)`); empty when there
    /// is none. They are **not covered by ε**: one record can add a
    /// category (an input feature) or a class, or move another's index.
    ///
    /// For a numeric label the number of classes (the largest label + 1)
    /// is also read off the data unless it is declared
    /// ([`Dataset::with_num_classes`]); that is not listed here.
    pub fn read_from_data(&self) -> Vec<String> {
        let mut read = Vec::new();
        if !self.declared_columns {
            for (c, e) in self.columns.iter().enumerate() {
                if c != self.label_column && matches!(e, ColumnEncoding::OneHot(_)) {
                    read.push(format!("categories of {}", self.describe(c)));
                }
            }
        }
        if self.classes.is_some() && !self.declared_classes {
            read.push(format!(
                "class names of the label, {}",
                self.describe(self.label_column)
            ));
        }
        if !self.declared_header {
            read.push(
                "whether the first line is a header (detected from the rows: declare \"header\" in a schema)"
                    .to_owned(),
            );
        }
        read
    }

    /// The number of features after one-hot encoding.
    pub fn n_features(&self) -> usize {
        self.columns
            .iter()
            .enumerate()
            .filter(|&(c, _)| c != self.label_column)
            .map(|(_, e)| match e {
                ColumnEncoding::Numeric => 1,
                ColumnEncoding::OneHot(cats) => cats.len(),
            })
            .sum()
    }

    /// Per feature, whether it is a numeric column's (one-hot features are
    /// not): the mask [`Scaling::SignedLog`](crate::Scaling::SignedLog)
    /// takes. Its length is [`CsvEncoding::n_features`].
    pub fn numeric_features(&self) -> Vec<bool> {
        self.columns
            .iter()
            .enumerate()
            .filter(|&(c, _)| c != self.label_column)
            .flat_map(|(_, e)| match e {
                ColumnEncoding::Numeric => vec![true],
                ColumnEncoding::OneHot(cats) => vec![false; cats.len()],
            })
            .collect()
    }

    /// A name per feature: the column name (or `column <i>`) for a numeric
    /// column, `name=category` for a one-hot feature.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.n_features());
        for (c, e) in self.columns.iter().enumerate() {
            if c == self.label_column {
                continue;
            }
            let col = self.column_name(c);
            match e {
                ColumnEncoding::Numeric => names.push(col),
                ColumnEncoding::OneHot(cats) => {
                    names.extend(cats.iter().map(|v| format!("{col}={v}")));
                }
            }
        }
        names
    }

    fn column_name(&self, c: usize) -> String {
        self.header
            .as_ref()
            .and_then(|h| h.get(c))
            .map_or_else(|| format!("column {c}"), Clone::clone)
    }

    /// `column <i>`, with its header name when there is one (for errors).
    fn describe(&self, c: usize) -> String {
        describe_column(self.header.as_deref(), c)
    }

    /// Column `c` as an error names it: its header name, else its index.
    fn column(&self, c: usize) -> Column {
        match self.header.as_ref().and_then(|h| h.get(c)) {
            Some(name) => Column::Name(name.clone()),
            None => Column::Index(c),
        }
    }
}

/// Reads a CSV file.
///
/// The first row is a header when it is the only row or not as wide as the
/// next one and holds text; otherwise when some column holds only numbers
/// below it but text in it; and, when no column is numeric, when each of its
/// fields is text that appears nowhere else in its column. Text columns are
/// one-hot encoded and a text label is mapped to class indices (see
/// [`read_csv_encoded`] and the [crate docs](crate#csv-files)). A numeric
/// label must be a non-negative integer; the number of classes is the
/// largest label + 1. A blank line is skipped; a line of empty fields
/// (`,,,`) is a record (with missing values), and a quoted field may not
/// span lines, so that no record can hide or swallow others. Whether the
/// first line is a header is thus read off the data
/// ([`CsvEncoding::read_from_data`] says so): declare it in a
/// [`CsvSchema`] ([`CsvSchema::with_header`]) to keep one record from
/// deciding it.
///
/// # Errors
///
/// [`Error::CorruptData`] naming the file and line for malformed CSV, a
/// field that spans several lines, a row
/// whose width differs from the first data row, a column that mixes numbers and
/// text (naming the column), a missing value in a numeric column or in the
/// label, a numeric label that is not a non-negative integer (or above
/// 65 535), or a file without data rows; [`Error::NumberOutOfRange`]
/// naming the file, line, column and value for a number that is not
/// finite, or a feature beyond `f32`'s range (`1e39`: it would be stored
/// as infinity); [`Error::InvalidParameter`] for a label column that does not exist;
/// [`Error::TooLarge`] for a file or decompressed content of more than 2³⁰
/// bytes (1 GiB), or for more than 2³⁰ values (records × features after
/// one-hot encoding: 4 GiB of `f32`), naming the counts and the column with
/// the most categories (a text column of a million distinct values would
/// make a million features), or when their memory cannot be allocated;
/// [`Error::Io`].
pub fn read_csv(path: &Path, label: &LabelColumn) -> Result<Dataset> {
    read_csv_encoded(path, label).map(|(d, _)| d)
}

/// Reads a CSV file like [`read_csv`] and also returns the encoding read
/// off it (column kinds, sorted categories, class names).
///
/// # Errors
///
/// As [`read_csv`].
pub fn read_csv_encoded(path: &Path, label: &LabelColumn) -> Result<(Dataset, CsvEncoding)> {
    parse_csv(path, &read_maybe_gz(path)?, label, None, None)
}

/// Reads a CSV file with a public [`CsvSchema`] instead of reading the
/// vocabularies off the file, and returns the encoding too.
///
/// * A column the schema lists is one-hot encoded over exactly its listed
///   categories, in the listed order; a value that is not listed, and a
///   missing value (`?` or an empty field), encode as **all zeros**: never
///   a new feature.
/// * Every other column (but the label) is numeric: text there is an
///   error.
/// * With `classes`, label `classes[i]` is class `i` (a numeric label is
///   matched as written), and a label that is not listed is an error,
///   never a new class. Without `classes`, the label is read as
///   [`read_csv`] reads it (then [`CsvEncoding::read_from_data`] names a
///   text label's class names).
///
/// The number of features and classes, and which feature means what, are
/// then the schema's: no record of the file can change them.
///
/// # Errors
///
/// As [`read_csv`]; [`Error::Schema`] for a schema column that the header
/// lacks (or, in a file without a header, that is not a 0-based index
/// below its width) or that is the label column; [`Error::CorruptData`]
/// naming the line and column for text in a column the schema does not
/// list, and naming the line for a label not among the classes.
pub fn read_csv_with_schema(
    path: &Path,
    label: &LabelColumn,
    schema: &CsvSchema,
) -> Result<(Dataset, CsvEncoding)> {
    parse_csv(path, &read_maybe_gz(path)?, label, Some(schema), None)
}

/// Reads a CSV file like [`read_csv_encoded`] (`schema: None`) or
/// [`read_csv_with_schema`] (`Some`), but column `user` is a **user
/// identifier**, for user-level differential privacy: all records with the
/// same id are one user's ([`Dataset::with_users`]).
///
/// `user` names the column like a label column: a 0-based index or a
/// header name ([`LabelColumn::Last`] means the last column). Both `label`
/// and `user` refer to the **file's** columns. The user column is taken
/// out of every row before the encoding: it is never a feature, and the
/// returned [`CsvEncoding`] describes the remaining (feature and label)
/// columns only (its [`CsvEncoding::label_column`] and header are those of
/// the file without the user column). Its values (any text, trimmed;
/// numbers are compared as written, so `1` and `1.0` are two users) become
/// user ids: the 64-bit FNV-1a hash of the text, which depends on that
/// text alone (not on where or how often it appears), so one user's
/// records never renumber another user. (Two distinct texts colliding
/// would make one user of two: their records would share one clipped
/// contribution, which protects both.)
///
/// [`read_csv_with_encoding`] does not know about user columns: a file read
/// with it must not have one.
///
/// # Privacy
///
/// The ids only group records; which id a user gets (its first
/// appearance) carries no meaning. The number of users, like the number of
/// records, is treated as public by the callers' accounting.
///
/// # Errors
///
/// As [`read_csv`] and [`read_csv_with_schema`] (a file needs at least a
/// feature, a label and the user column); [`Error::InvalidParameter`] when
/// the user column does not exist or is the label column; [`Error::Schema`]
/// when the schema declares the user column under `columns`;
/// [`Error::CorruptData`] naming the line for a missing user id (an empty
/// field or `?`).
pub fn read_csv_with_users(
    path: &Path,
    label: &LabelColumn,
    user: &LabelColumn,
    schema: Option<&CsvSchema>,
) -> Result<(Dataset, CsvEncoding)> {
    parse_csv(path, &read_maybe_gz(path)?, label, schema, Some(user))
}

/// Reads a CSV file with an encoding read off another file (for example a
/// separate test file): same width, same column kinds, and only the
/// categories and class names the encoding knows.
///
/// # Errors
///
/// As [`read_csv`], and [`Error::CorruptData`] for a row whose width
/// differs from the encoding's, or a category or class the encoding does
/// not know (naming the column). An encoding declared by a [`CsvSchema`]
/// ([`CsvEncoding::is_declared`]) keeps its rules instead: a category it
/// does not list is all zeros, a class it does not list is an error.
pub fn read_csv_with_encoding(path: &Path, encoding: &CsvEncoding) -> Result<Dataset> {
    let bytes = read_maybe_gz(path)?;
    let records = records(path, &bytes)?;
    let fields = records.fields();
    let (_, data) = split_header(fields, &records.rows);
    if let Some(r) = data
        .iter()
        .find(|r| fields.width(r) != encoding.columns.len())
    {
        return Err(corrupt(
            path,
            Position::Line(r.line()),
            format!(
                "row has {} fields, the encoding {}",
                fields.width(r),
                encoding.columns.len()
            ),
        ));
    }
    encode(path, fields, data, encoding)
}

pub(crate) fn read_csv_bytes(path: &Path, raw: &[u8], label: &LabelColumn) -> Result<Dataset> {
    let bytes = decompress_if_gz(path, raw.to_vec())?;
    parse_csv(path, &bytes, label, None, None).map(|(d, _)| d)
}

/// A record: its line and where its fields are in [`Records`].
#[derive(Debug, Clone, Copy)]
struct Row {
    /// 1-based line.
    line: u32,
    /// The index of its first field in [`Records::ends`].
    first: u32,
    /// Its number of fields.
    len: u32,
}

impl Row {
    fn line(&self) -> u64 {
        u64::from(self.line)
    }
}

/// The non-blank records of a file, their fields' text in one buffer. A
/// `String` per field cost some 50 bytes more than its text, so that a
/// small gzip file of short lines expanded 56-fold in memory (128 MiB of
/// `1,0` lines took 7.2 GB; 1.1 GB so, features and labels included): here
/// a field costs its text and a 4-byte offset, a record 12 bytes. The
/// offsets are `u32`: a file's content is at most 2³⁰ bytes
/// ([`CsvEncoding::MAX_CONTENT_BYTES`]), so its text and its fields (at
/// most one more than its bytes a line) count below 2³²; more is refused.
struct Records {
    /// Every field's text, one after another.
    text: String,
    /// The end of each field in `text` (its start: the end of the one
    /// before it, or 0).
    ends: Vec<u32>,
    rows: Vec<Row>,
}

impl Records {
    fn fields(&self) -> Fields<'_> {
        Fields {
            text: &self.text,
            ends: &self.ends,
            skip: None,
        }
    }

    /// Appends a record, refusing what the offsets cannot count or the
    /// memory cannot hold.
    fn push(&mut self, path: &Path, line: u64, record: &csv::StringRecord) -> Result<()> {
        let bytes: usize = record.iter().map(str::len).sum();
        let too_large = |what: &str| Error::TooLarge {
            path: path.to_path_buf(),
            reason: format!("more than 2^32 {what}"),
            source: None,
        };
        let fits = |n: usize, what: &str| u32::try_from(n).map_err(|_| too_large(what));
        fits(self.text.len() + bytes, "bytes of text")?;
        let first = fits(self.ends.len(), "fields")?;
        let len = fits(record.len(), "fields in a record")?;
        fits(self.ends.len() + record.len(), "fields")?;
        let line = u32::try_from(line).map_err(|_| too_large("lines"))?;
        let n_fields = self.ends.len();
        let alloc = |source| Error::TooLarge {
            path: path.to_path_buf(),
            reason: format!(
                "cannot allocate memory for the records up to line {line} ({n_fields} fields)"
            ),
            source: Some(source),
        };
        self.text.try_reserve(bytes).map_err(alloc)?;
        self.ends.try_reserve(record.len()).map_err(alloc)?;
        self.rows.try_reserve(1).map_err(alloc)?;
        for field in record {
            self.text.push_str(field);
            // Checked above: the text's length fits.
            self.ends.push(self.text.len() as u32);
        }
        self.rows.push(Row { line, first, len });
        Ok(())
    }
}

/// The fields of [`Records`], less the user column once it is taken out.
#[derive(Clone, Copy)]
struct Fields<'a> {
    text: &'a str,
    ends: &'a [u32],
    /// A column left out of every record (the user column, by its index
    /// in the file).
    skip: Option<usize>,
}

impl<'a> Fields<'a> {
    /// The index, in the file, of column `c`.
    fn column(&self, c: usize) -> usize {
        match self.skip {
            Some(u) if c >= u => c + 1,
            _ => c,
        }
    }

    /// The number of fields of `r`.
    fn width(&self, r: &Row) -> usize {
        let len = r.len as usize;
        len - usize::from(self.skip.is_some_and(|u| u < len))
    }

    /// Field `c` of `r`, if it has one.
    fn get(&self, r: &Row, c: usize) -> Option<&'a str> {
        let c = self.column(c);
        (c < r.len as usize).then(|| {
            let i = r.first as usize + c;
            let start = i.checked_sub(1).map_or(0, |j| self.ends[j] as usize);
            &self.text[start..self.ends[i] as usize]
        })
    }

    /// Field `c` of `r`, which has it (a row checked as wide as the data).
    fn field(&self, r: &Row, c: usize) -> &'a str {
        self.get(r, c).unwrap_or_default()
    }

    /// The fields of `r`, in order.
    fn iter(self, r: &Row) -> impl Iterator<Item = &'a str> + use<'a> {
        let r = *r;
        (0..self.width(&r)).map(move |c| self.field(&r, c))
    }
}

fn is_missing(field: &str) -> bool {
    field.is_empty() || field == "?"
}

fn is_number(field: &str) -> bool {
    field.parse::<f64>().is_ok()
}

/// The non-blank records.
fn records(path: &Path, bytes: &[u8]) -> Result<Records> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut records = Records {
        text: String::new(),
        ends: Vec::new(),
        rows: Vec::new(),
    };
    let mut record = csv::StringRecord::new();
    for row in 0u64.. {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(row + 1, |p| p.line());
                return Err(corrupt(
                    path,
                    Position::Line(line),
                    format!("malformed CSV: {e}"),
                ));
            }
        }
        let line = record.position().map_or(row + 1, |p| p.line());
        if record.len() == 1 && record[0].is_empty() {
            continue; // a blank line (a line of empty fields is a record)
        }
        // A quoted field across lines (or a quote never closed) would
        // swallow the records after it: one record would change N.
        if let Some(c) = record.iter().position(|f| f.contains(['\n', '\r'])) {
            return Err(corrupt(
                path,
                Position::Line(line),
                format!(
                    "field {c} spans several lines (a quote that is never closed?): \
                     a record must be one line"
                ),
            ));
        }
        records.push(path, line, &record)?;
    }
    Ok(records)
}

/// Splits off the header row, if the first row is one.
fn split_header<'r>(f: Fields<'_>, rows: &'r [Row]) -> (Option<&'r Row>, &'r [Row]) {
    let Some((first, rest)) = rows.split_first() else {
        return (None, rows);
    };
    let text = |v: &str| !is_missing(v) && !is_number(v);
    let header = if rest.is_empty() || f.width(&rest[0]) != f.width(first) {
        // A lone row, or one as wide as no data row: a header if any field is text.
        f.iter(first).any(text)
    } else {
        let numeric_below: Vec<bool> = (0..f.width(first))
            .map(|c| {
                let mut values = rest.iter().filter_map(|r| f.get(r, c));
                values.clone().any(|v| !is_missing(v))
                    && values.all(|v| is_missing(v) || is_number(v))
            })
            .collect();
        if numeric_below.iter().any(|&n| n) {
            f.iter(first)
                .zip(&numeric_below)
                .any(|(v, &n)| n && text(v))
        } else {
            f.iter(first)
                .enumerate()
                .all(|(c, v)| text(v) && rest.iter().all(|r| f.get(r, c) != Some(v)))
        }
    };
    if header {
        (Some(first), rest)
    } else {
        (None, rows)
    }
}

fn parse_csv(
    path: &Path,
    bytes: &[u8],
    label: &LabelColumn,
    schema: Option<&CsvSchema>,
    user: Option<&LabelColumn>,
) -> Result<(Dataset, CsvEncoding)> {
    let records = records(path, bytes)?;
    let mut fields = records.fields();
    let rows = &records.rows[..];
    let declared_header = schema.and_then(CsvSchema::header);
    let (header, data) = match declared_header {
        Some(true) => match rows.split_first() {
            Some((first, rest)) => (Some(first), rest),
            None => (None, rows),
        },
        Some(false) => (None, rows),
        None => split_header(fields, rows),
    };
    let Some(first) = data.first() else {
        return Err(corrupt(path, Position::Line(1), "no data rows"));
    };
    let width = fields.width(first);
    if let Some(r) = data.iter().find(|r| fields.width(r) != width) {
        return Err(corrupt(
            path,
            Position::Line(r.line()),
            format!(
                "row has {} fields, expected {width} like the first data row",
                fields.width(r)
            ),
        ));
    }
    if width < 2 + usize::from(user.is_some()) {
        return Err(corrupt(
            path,
            Position::Line(first.line()),
            if user.is_some() {
                "need at least one feature, a label and a user column"
            } else {
                "need at least one feature and a label"
            },
        ));
    }
    let mut header: Option<Vec<String>> =
        header.map(|h| fields.iter(h).map(str::to_owned).collect());
    // The label and user columns are the file's: resolve both against the
    // full rows, then take the user column out.
    let mut label_column = resolve_column("label", label, width, header.as_deref())?;
    let user_column = user
        .map(|u| resolve_column("user", u, width, header.as_deref()))
        .transpose()?;
    if let (Some(u), Some(spec)) = (user_column, user)
        && u == label_column
    {
        return Err(Error::InvalidParameter {
            name: "user",
            value: spec.to_string(),
            reason: format!(
                "{} is the label column: a user id is an identifier, never the label",
                describe_column(header.as_deref(), u)
            ),
        });
    }
    let mut declared = schema
        .map(|s| resolve_schema(path, s, width, header.as_deref(), label_column, user_column))
        .transpose()?;
    let mut users = None;
    if let Some(u) = user_column {
        users = Some(take_users(path, fields, data, u, header.as_deref())?);
        // From here on the rows are read without the user column.
        fields.skip = Some(u);
        if let Some(h) = header.as_mut().filter(|h| u < h.len()) {
            h.remove(u);
        }
        if let Some(d) = declared.as_mut() {
            d.remove(u);
        }
        if label_column > u {
            label_column -= 1;
        }
    }
    let width = width - usize::from(user_column.is_some());
    let declared_classes = schema.and_then(CsvSchema::classes);
    let mut columns = Vec::with_capacity(width);
    for c in 0..width {
        columns.push(match (&declared, declared_classes) {
            (Some(_), Some(classes)) if c == label_column => {
                ColumnEncoding::OneHot(classes.to_vec())
            }
            (Some(declared), _) if c != label_column => declared[c]
                .clone()
                .map_or(ColumnEncoding::Numeric, ColumnEncoding::OneHot),
            _ => read_column(path, fields, data, c, header.as_deref())?,
        });
    }
    let classes = match &columns[label_column] {
        ColumnEncoding::Numeric => None,
        ColumnEncoding::OneHot(names) => Some(names.clone()),
    };
    let encoding = CsvEncoding {
        header,
        label_column,
        columns,
        classes,
        declared_columns: schema.is_some(),
        declared_classes: declared_classes.is_some(),
        declared_header: declared_header.is_some(),
    };
    let mut dataset = encode(path, fields, data, &encoding)?;
    if let Some(ids) = users {
        dataset = dataset.with_users(ids)?;
    }
    Ok((dataset, encoding))
}

/// A user's id: the 64-bit FNV-1a hash of the column's (trimmed) text.
/// It depends on that text alone, never on where or how often the user
/// appears in the file, so one user's records (their number, their
/// positions) do not renumber any other user.
pub(crate) fn user_id(value: &str) -> u64 {
    value.trim().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The user ids of column `u` ([`user_id`] of each value); the rows are
/// then read without that column ([`Fields::skip`]).
fn take_users(
    path: &Path,
    fields: Fields<'_>,
    data: &[Row],
    u: usize,
    header: Option<&[String]>,
) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    ids.try_reserve_exact(data.len())
        .map_err(|source| Error::TooLarge {
            path: path.to_path_buf(),
            reason: format!("cannot allocate memory for {} user ids", data.len()),
            source: Some(source),
        })?;
    for r in data {
        let value = fields.field(r, u);
        if is_missing(value) {
            return Err(corrupt(
                path,
                Position::Line(r.line()),
                format!(
                    "{}: missing user id: every record must name its user",
                    describe_column(header, u)
                ),
            ));
        }
        ids.push(user_id(value));
    }
    Ok(ids)
}

/// Column `c`'s kind read off the data: numeric when every non-missing
/// value is a number, one-hot over the sorted distinct values when none is.
fn read_column(
    path: &Path,
    fields: Fields<'_>,
    data: &[Row],
    c: usize,
    header: Option<&[String]>,
) -> Result<ColumnEncoding> {
    let mut first_number: Option<(&str, u64)> = None;
    let mut first_text: Option<(&str, u64)> = None;
    for r in data {
        let f = fields.field(r, c);
        if is_missing(f) {
            continue;
        }
        let slot = if is_number(f) {
            &mut first_number
        } else {
            &mut first_text
        };
        slot.get_or_insert((f, r.line()));
        if first_number.is_some() && first_text.is_some() {
            break;
        }
    }
    Ok(match (first_number, first_text) {
        (Some((_, nl)), Some((_, tl))) => {
            let reason = if tl > nl {
                format!("this line's value is not a number, but line {nl}'s is")
            } else {
                format!("this line's value is a number, but line {tl}'s is not")
            };
            return Err(corrupt(
                path,
                Position::Line(tl.max(nl)),
                format!(
                    "{}: {reason}; a column must hold only numbers or only text \
                     (`?` or an empty field is missing)",
                    describe_column(header, c)
                ),
            ));
        }
        (Some(_), None) => ColumnEncoding::Numeric,
        (None, _) => {
            let cats: BTreeSet<&str> = data
                .iter()
                .map(|r| fields.field(r, c))
                .filter(|f| !is_missing(f))
                .collect();
            ColumnEncoding::OneHot(cats.into_iter().map(str::to_owned).collect())
        }
    })
}

/// The schema's categories for each column of the file (`None`: numeric).
fn resolve_schema(
    path: &Path,
    schema: &CsvSchema,
    width: usize,
    header: Option<&[String]>,
    label_column: usize,
    user_column: Option<usize>,
) -> Result<Vec<Option<Vec<String>>>> {
    let mut out: Vec<Option<Vec<String>>> = vec![None; width];
    // Only a header as wide as the data names its columns (adult.test's
    // first line, `|1x3 Cross validator`, is a lone comment).
    let names = header.filter(|h| h.len() == width);
    for (key, categories) in schema.columns() {
        let c = match names {
            Some(h) => h.iter().position(|n| n == key).ok_or_else(|| {
                schema_mismatch(
                    path,
                    // Not the header's fields: without a declared header
                    // they can be a data row read as one.
                    format!(
                        "column `{key}` is not in the header (of {} fields)",
                        h.len()
                    ),
                )
            })?,
            None => key
                .parse::<usize>()
                .ok()
                .filter(|&c| c < width)
                .ok_or_else(|| {
                    schema_mismatch(
                        path,
                        format!(
                            "column `{key}`: the file has no header row as wide as its data, \
                         so columns are named by their 0-based index, below {width}"
                        ),
                    )
                })?,
        };
        if c == label_column {
            return Err(schema_mismatch(
                path,
                format!(
                    "column `{key}` is the label: declare its values under `classes`, not `columns`"
                ),
            ));
        }
        if Some(c) == user_column {
            return Err(schema_mismatch(
                path,
                format!(
                    "column `{key}` is the user column: a user id is an identifier, \
                     never a feature, so the schema may not declare it"
                ),
            ));
        }
        if out[c].is_some() {
            return Err(schema_mismatch(
                path,
                format!("{} is declared twice", describe_column(header, c)),
            ));
        }
        out[c] = Some(categories.to_vec());
    }
    Ok(out)
}

/// Encodes rows (as wide as the encoding) with the encoding.
fn encode(
    path: &Path,
    fields: Fields<'_>,
    data: &[Row],
    encoding: &CsvEncoding,
) -> Result<Dataset> {
    if data.is_empty() {
        return Err(corrupt(path, Position::Line(1), "no data rows"));
    }
    let li = encoding.label_column;
    let index: Vec<Option<HashMap<&str, usize>>> = encoding
        .columns
        .iter()
        .map(|e| match e {
            ColumnEncoding::Numeric => None,
            ColumnEncoding::OneHot(cats) => Some(
                cats.iter()
                    .enumerate()
                    .map(|(i, v)| (v.as_str(), i))
                    .collect(),
            ),
        })
        .collect();
    let n_features = encoding.n_features();
    let values = data
        .len()
        .checked_mul(n_features)
        .filter(|&v| v <= MAX_VALUES)
        .ok_or_else(|| too_many_values(path, data.len(), encoding))?;
    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<u32> = Vec::new();
    features
        .try_reserve_exact(values)
        .and_then(|()| labels.try_reserve_exact(data.len()))
        .map_err(|source| Error::TooLarge {
            path: path.to_path_buf(),
            reason: format!(
                "cannot allocate memory for {} records × {n_features} features",
                data.len()
            ),
            source: Some(source),
        })?;
    for r in data {
        let at = |reason: String| corrupt(path, Position::Line(r.line()), reason);
        for (c, field) in fields.iter(r).enumerate() {
            match &index[c] {
                None => {
                    if is_missing(field) {
                        return Err(at(format!(
                            "{}: missing value in a numeric column (only text columns \
                             may have missing values)",
                            encoding.describe(c)
                        )));
                    }
                    let value: f64 = field.parse().map_err(|_| {
                        at(format!(
                            "{}: the value is not a number{}",
                            encoding.describe(c),
                            if encoding.declared_columns && c != li {
                                " (a column the schema does not list under `columns` is numeric)"
                            } else {
                                ""
                            }
                        ))
                    })?;
                    // A feature is stored as f32: 1e39 parses, then is inf.
                    let why = if !value.is_finite() {
                        Some(OutOfRange::NotFinite)
                    } else if c != li && !(value as f32).is_finite() {
                        Some(OutOfRange::BeyondF32)
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        return Err(Error::NumberOutOfRange {
                            path: path.to_path_buf(),
                            line: r.line(),
                            column: encoding.column(c),
                            value: field.to_owned(),
                            why,
                        });
                    }
                    if c == li {
                        if value < 0.0 || value.fract() != 0.0 || value > 65_535.0 {
                            return Err(at("the label is out of range: numeric labels must be \
                                 integers in 0..=65535"
                                .to_owned()));
                        }
                        labels.push(value as u32);
                    } else {
                        features.push(value as f32);
                    }
                }
                Some(cats) => {
                    let hit = match cats.get(field) {
                        _ if is_missing(field) => None,
                        Some(&i) => Some(i),
                        // A declared label set is closed: never a new class.
                        None if c == li && encoding.declared_classes => {
                            // The schema's classes are public: named, up
                            // to a few; the record's label is not.
                            return Err(at(format!(
                                "the label is not among the schema's {} classes ({})",
                                cats.len(),
                                declared_names(&encoding.columns[c])
                            )));
                        }
                        // A declared vocabulary: another value is all zeros.
                        None if c != li && encoding.declared_columns => None,
                        None => {
                            return Err(at(format!(
                                "{}: the value is not among the encoding's {} categories",
                                encoding.describe(c),
                                cats.len()
                            )));
                        }
                    };
                    if c == li {
                        let class = hit.ok_or_else(|| at("the label is missing".to_owned()))?;
                        labels.push(class as u32);
                    } else {
                        let start = features.len();
                        features.resize(start + cats.len(), 0.0);
                        if let Some(i) = hit {
                            features[start + i] = 1.0;
                        }
                    }
                }
            }
        }
    }
    let n_classes = match &encoding.classes {
        Some(names) => names.len(),
        None => labels.iter().max().map_or(0, |&m| m as usize + 1),
    };
    Dataset::new(features, labels, n_features, n_classes)
}

/// The error for a data set of more than [`MAX_VALUES`] values: the
/// counts, and the one-hot column with the most categories (by name or
/// index, never a value: one record's category is private).
fn too_many_values(path: &Path, rows: usize, encoding: &CsvEncoding) -> Error {
    let widest = encoding
        .columns
        .iter()
        .enumerate()
        .filter(|&(c, _)| c != encoding.label_column)
        .filter_map(|(c, e)| match e {
            ColumnEncoding::OneHot(cats) => Some((c, cats.len())),
            ColumnEncoding::Numeric => None,
        })
        .max_by_key(|&(c, k)| (k, std::cmp::Reverse(c)));
    let widest = match widest {
        Some((c, k)) if k > 1 && encoding.declared_columns => format!(
            "; {} alone is one-hot over {k} categories (declared by the schema)",
            encoding.describe(c),
        ),
        Some((c, k)) if k > 1 => format!(
            "; {} alone is one-hot over {k} categories (read off the data): declare its \
             categories in a schema, or drop the column",
            encoding.describe(c),
        ),
        _ => String::new(),
    };
    let n_features = encoding.n_features();
    // u128: the product of two usizes cannot overflow it.
    let values = rows as u128 * n_features as u128;
    Error::TooLarge {
        path: path.to_path_buf(),
        reason: format!(
            "{rows} records × {n_features} features make {values} values, more than the \
             {MAX_VALUES} (2^30, 4 GiB of 32-bit floats) a data set may hold{widest}"
        ),
        source: None,
    }
}

/// The 0-based index of column `column` (the label or the user column).
fn resolve_column(
    name: &'static str,
    column: &LabelColumn,
    width: usize,
    header: Option<&[String]>,
) -> Result<usize> {
    let bad = |value: String, reason: String| Error::InvalidParameter {
        name,
        value,
        reason,
    };
    match column {
        LabelColumn::Last => Ok(width - 1),
        LabelColumn::Index(i) if *i < width => Ok(*i),
        LabelColumn::Index(i) => Err(bad(i.to_string(), format!("the file has {width} columns"))),
        LabelColumn::Name(name) => header
            .and_then(|h| h.iter().position(|c| c == name))
            .ok_or_else(|| bad(name.clone(), "no header column has this name".into())),
    }
}

fn describe_column(header: Option<&[String]>, c: usize) -> String {
    match header.and_then(|h| h.get(c)) {
        Some(n) => format!("column {c} (`{n}`)"),
        None => format!("column {c}"),
    }
}

/// Up to eight of a one-hot column's declared names, in order, quoted (for
/// a message about a value outside a public schema).
fn declared_names(column: &ColumnEncoding) -> String {
    const SHOWN: usize = 8;
    match column {
        ColumnEncoding::OneHot(names) => {
            let mut shown: Vec<String> =
                names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
            if names.len() > SHOWN {
                shown.push(format!("… {} more", names.len() - SHOWN));
            }
            shown.join(", ")
        }
        ColumnEncoding::Numeric => "numeric".to_owned(),
    }
}
