//! A public CSV schema: declared categories and classes, so that no record
//! can add a feature or a class (issue 24, item 2).

use dpsgd_data::{
    ColumnEncoding, CsvSchema, Error, LabelColumn, Position, read_csv_encoded,
    read_csv_with_encoding, read_csv_with_schema,
};
mod common;

use common::{corrupt, write};

use std::path::PathBuf;

fn temp_dir() -> PathBuf {
    common::temp_dir("schema")
}

fn schema_reason(e: Error) -> String {
    match e {
        Error::Schema { .. } => e.to_string(),
        other => panic!("expected Schema, got {other}"),
    }
}

fn colours() -> CsvSchema {
    CsvSchema::from_json(
        r#"{"header": true, "columns": {"colour": ["red", "green", "blue"]}, "classes": ["no", "yes"]}"#,
    )
    .unwrap()
}

const BASE: &str = "x,colour,label\n1,red,yes\n2,green,no\n3,blue,yes\n4,red,no\n";

#[test]
fn should_encode_with_the_declared_categories_in_their_order() {
    let dir = temp_dir();
    let p = write(&dir, "a.csv", BASE);
    let (d, enc) = read_csv_with_schema(&p, &LabelColumn::Last, &colours()).unwrap();
    assert_eq!(
        enc.feature_names(),
        ["x", "colour=red", "colour=green", "colour=blue"]
    );
    assert_eq!(enc.classes().unwrap(), ["no", "yes"]);
    assert_eq!(d.labels(), &[1, 0, 1, 0]);
    assert_eq!(d.example(1), &[2.0, 0.0, 1.0, 0.0]);
    assert!(enc.is_declared() && enc.read_from_data().is_empty());
    // Without the schema, the same file's vocabularies are read off it,
    // and the encoding says so.
    let (_, read) = read_csv_encoded(&p, &LabelColumn::Last).unwrap();
    assert_eq!(
        read.read_from_data(),
        [
            "categories of column 1 (`colour`)",
            "class names of the label, column 2 (`label`)",
            "whether the first line is a header (detected from the rows: declare \"header\" in a schema)"
        ]
    );
}

/// One record with a category nobody else has: a new feature without a
/// schema, all zeros with one; the other rows are unchanged either way.
#[test]
fn should_encode_an_unlisted_or_missing_category_as_all_zeros() {
    let dir = temp_dir();
    let base = write(&dir, "base.csv", BASE);
    let odd = write(
        &dir,
        "odd.csv",
        &BASE.replace("4,red,no", "4,ultraviolet,no"),
    );
    let missing = write(&dir, "missing.csv", &BASE.replace("4,red,no", "4,?,no"));
    let (a, _) = read_csv_encoded(&base, &LabelColumn::Last).unwrap();
    let (b, _) = read_csv_encoded(&odd, &LabelColumn::Last).unwrap();
    assert_eq!(
        (a.n_features(), b.n_features()),
        (4, 5),
        "read off the data"
    );
    let s = colours();
    let (a, _) = read_csv_with_schema(&base, &LabelColumn::Last, &s).unwrap();
    for p in [&odd, &missing] {
        let (b, enc) = read_csv_with_schema(p, &LabelColumn::Last, &s).unwrap();
        assert_eq!(
            (b.n_features(), b.n_classes()),
            (a.n_features(), a.n_classes())
        );
        assert_eq!(b.example(3), &[4.0, 0.0, 0.0, 0.0]);
        for i in 0..3 {
            assert_eq!(a.example(i), b.example(i));
        }
        assert_eq!(a.labels(), b.labels());
        // The declared encoding keeps its rule on another file.
        let again = read_csv_with_encoding(p, &enc).unwrap();
        assert_eq!(again, b);
    }
}

#[test]
fn should_refuse_a_label_outside_the_classes_naming_the_line() {
    let dir = temp_dir();
    let p = write(&dir, "a.csv", &BASE.replace("3,blue,yes", "3,blue,maybe"));
    let (pos, reason) =
        corrupt(read_csv_with_schema(&p, &LabelColumn::Last, &colours()).unwrap_err());
    assert_eq!(pos, Position::Line(4));
    assert!(
        // The schema's (public) classes, never the record's label.
        !reason.contains("`maybe`") && reason.contains("2 classes (`no`, `yes`)"),
        "{reason}"
    );
    // Numeric labels are matched as listed, in the listed order.
    let p = write(&dir, "n.csv", "x,colour,y\n1,red,1\n2,red,0\n3,red,2\n");
    let s = CsvSchema::new()
        .with_column("colour", ["red"])
        .unwrap()
        .with_classes(["1", "0", "2"])
        .unwrap();
    let (d, _) = read_csv_with_schema(&p, &LabelColumn::Last, &s).unwrap();
    assert_eq!((d.labels(), d.n_classes()), (&[0, 1, 2][..], 3));
    let p = write(&dir, "n2.csv", "x,colour,y\n1,red,1\n2,red,7\n");
    let (pos, reason) = corrupt(read_csv_with_schema(&p, &LabelColumn::Last, &s).unwrap_err());
    assert_eq!(pos, Position::Line(3), "{reason}");
    // Without classes a numeric label is read as before (largest + 1).
    let s = CsvSchema::new()
        .with_header(true)
        .with_column("colour", ["red"])
        .unwrap();
    let (d, enc) = read_csv_with_schema(&p, &LabelColumn::Last, &s).unwrap();
    assert_eq!((d.n_classes(), enc.classes()), (8, None));
    assert!(enc.read_from_data().is_empty());
}

#[test]
fn should_refuse_text_in_a_column_the_schema_does_not_list() {
    let dir = temp_dir();
    let p = write(
        &dir,
        "a.csv",
        "x,colour,size,label\n1,red,S,no\n2,red,M,yes\n",
    );
    let (pos, reason) =
        corrupt(read_csv_with_schema(&p, &LabelColumn::Last, &colours()).unwrap_err());
    assert_eq!(pos, Position::Line(2));
    assert!(
        reason.contains("column 2 (`size`)")
            && reason.contains("the value is not a number")
            && !reason.contains("`S`")
            && reason.contains("schema"),
        "{reason}"
    );
}

#[test]
fn should_name_columns_by_index_in_a_file_without_header() {
    let dir = temp_dir();
    let p = write(&dir, "a.csv", "1,red,1\n2,blue,0\n3,teal,1\n");
    let s = CsvSchema::from_json(r#"{"columns": {"1": ["red", "blue"]}}"#).unwrap();
    let (d, enc) = read_csv_with_schema(&p, &LabelColumn::Last, &s).unwrap();
    assert_eq!(enc.header(), None);
    assert_eq!(d.example(2), &[3.0, 0.0, 0.0]);
    assert_eq!(d.n_classes(), 2);
    for bad in [
        r#"{"columns": {"5": ["a"]}}"#,
        r#"{"columns": {"colour": ["a"]}}"#,
    ] {
        let s = CsvSchema::from_json(bad).unwrap();
        let reason = schema_reason(read_csv_with_schema(&p, &LabelColumn::Last, &s).unwrap_err());
        assert!(reason.contains("0-based index"), "{reason}");
    }
}

#[test]
fn should_refuse_a_schema_that_does_not_fit_the_file() {
    let dir = temp_dir();
    let p = write(&dir, "a.csv", BASE);
    for (json, needle) in [
        (
            r#"{"columns": {"shape": ["round"]}}"#,
            "`shape` is not in the header",
        ),
        (
            r#"{"columns": {"label": ["no", "yes"]}}"#,
            "under `classes`",
        ),
    ] {
        let s = CsvSchema::from_json(json).unwrap();
        let reason = schema_reason(read_csv_with_schema(&p, &LabelColumn::Last, &s).unwrap_err());
        assert!(
            reason.contains(needle) && reason.contains("a.csv"),
            "{reason}"
        );
    }
}

#[test]
fn should_refuse_invalid_schemas_with_a_reason() {
    let cases = [
        ("{", "EOF"),
        (r#"{"colums": {}}"#, "unknown field `colums`"),
        (r#"{"columns": {"a": "x"}}"#, "invalid type"),
        (r#"{"columns": {"a": []}}"#, "column `a`: the list is empty"),
        (r#"{"columns": {"a": ["x", "x"]}}"#, "`x` is listed twice"),
        (
            r#"{"columns": {"a": ["x"], "a": ["y"]}}"#,
            "column `a` is listed twice",
        ),
        (r#"{"columns": {"a": ["?"]}}"#, "missing value"),
        (r#"{"columns": {"a": [" x"]}}"#, "spaces"),
        (r#"{"classes": []}"#, "classes: the list is empty"),
        (r#"{"classes": ["a", "b", "a"]}"#, "`a` is listed twice"),
        (r#"{"columns": {"": ["x"]}}"#, "empty"),
    ];
    for (json, needle) in cases {
        let e = CsvSchema::from_json(json).unwrap_err();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text += &format!(": {s}");
            source = s.source();
        }
        assert!(matches!(e, Error::Schema { .. }), "{json}: {text}");
        assert!(text.contains(needle), "{json}: `{needle}` not in {text}");
    }
    // From a file: the file is named; a missing file is an I/O error.
    let dir = temp_dir();
    let p = write(&dir, "s.json", r#"{"classes": []}"#);
    let text = CsvSchema::read(&p).unwrap_err().to_string();
    assert!(text.contains("s.json") && text.contains("empty"), "{text}");
    assert!(matches!(
        CsvSchema::read(&dir.join("none.json")),
        Err(Error::Io { .. })
    ));
    // Empty is valid: every column numeric, labels read as before.
    assert_eq!(CsvSchema::from_json("{}").unwrap(), CsvSchema::new());
}

/// UCI Adult with the vocabulary of its public codebook (adult.names):
/// the same 105 features as reading them off the data (the data has every
/// category the codebook lists), fixed before any record is read.
#[test]
fn should_read_uci_adult_with_its_codebook_when_available() {
    let (Some(data), Some(names)) = (
        common::require("adult/adult.data"),
        common::require("adult/adult.names"),
    ) else {
        return;
    };
    let root = common::data_root();
    let codebook = std::fs::read_to_string(&names).unwrap();
    let attributes: Vec<(String, String)> = codebook
        .lines()
        .skip_while(|l| !l.starts_with("age:"))
        .filter_map(|l| l.split_once(": "))
        .map(|(a, v)| (a.to_owned(), v.trim_end_matches('.').to_owned()))
        .collect();
    assert_eq!(attributes.len(), 14);
    let mut schema = CsvSchema::new()
        .with_header(false)
        .with_classes(["<=50K", ">50K"])
        .unwrap();
    for (i, (_, values)) in attributes.iter().enumerate() {
        if values != "continuous" {
            schema = schema
                .with_column(i.to_string(), values.split(", "))
                .unwrap();
        }
    }
    let (d, enc) = read_csv_with_schema(&data, &LabelColumn::Last, &schema).unwrap();
    assert_eq!((d.len(), d.n_features(), d.n_classes()), (32_561, 105, 2));
    assert!(enc.read_from_data().is_empty());
    assert!(matches!(&enc.columns()[1], ColumnEncoding::OneHot(c) if c[0] == "Private"));
    // adult.test spells its labels `<=50K.`: refused under these classes,
    // read without them (its labels are not needed for a scaling
    // reference). Its first line (`|1x3 Cross validator`) is a header.
    let test = root.join("adult/adult.test");
    if test.is_file() {
        let schema = schema.clone().with_header(true);
        let (pos, reason) =
            corrupt(read_csv_with_schema(&test, &LabelColumn::Last, &schema).unwrap_err());
        assert!(
            reason.contains("not among the schema's 2 classes (`<=50K`, `>50K`)")
                && !reason.contains("50K.`"),
            "{pos}: {reason}"
        );
        let (t, _) =
            read_csv_with_schema(&test, &LabelColumn::Last, &schema.clone().without_classes())
                .unwrap();
        assert_eq!((t.len(), t.n_features()), (16_281, 105));
    }
}

/// The reviewer's three ways for one record to change N outside the
/// mechanism (issue 24): a first record taken for a header, a line of
/// empty fields dropped as blank, and a quote that swallows the records
/// after it. With `header` declared, the first line is never guessed; the
/// other two are refused whatever the schema.
#[test]
fn should_not_let_one_record_decide_the_header_or_hide_others() {
    let dir = temp_dir();
    let rows = "1,2,0\n3,4,1\n5,6,0\n7,8,1\n";
    let label = LabelColumn::Last;
    // A headerless numeric file whose first record has text: detected, it
    // is taken for a header (N shrinks) and the encoding says the header
    // was read off the data; declared headerless, the record is refused.
    let first_text = write(&dir, "first.csv", &format!("x,2,0\n{rows}"));
    let (guessed, encoding) = read_csv_encoded(&first_text, &label).unwrap();
    assert_eq!(guessed.len(), 4);
    assert!(
        encoding
            .read_from_data()
            .iter()
            .any(|r| r.contains("header")),
        "{:?}",
        encoding.read_from_data()
    );
    let headerless = CsvSchema::new().with_header(false);
    let (position, reason) =
        corrupt(read_csv_with_schema(&first_text, &label, &headerless).unwrap_err());
    assert_eq!(position, Position::Line(1), "{reason}");
    let plain = write(&dir, "plain.csv", &format!("9,9,0\n{rows}"));
    let (data, encoding) = read_csv_with_schema(&plain, &label, &headerless).unwrap();
    assert_eq!(data.len(), 5);
    assert!(
        encoding.read_from_data().is_empty(),
        "{:?}",
        encoding.read_from_data()
    );
    // Declared, a header is the first line whatever it holds.
    let with_header = write(&dir, "header.csv", &format!("a,b,label\n{rows}"));
    let declared = CsvSchema::new().with_header(true);
    let (data, encoding) = read_csv_with_schema(&with_header, &label, &declared).unwrap();
    assert_eq!(
        (data.len(), encoding.header().map(<[String]>::len)),
        (4, Some(3))
    );
    // A line of empty fields is a record (refused here: a numeric column
    // cannot be missing), not a blank line to skip.
    let commas = write(&dir, "commas.csv", &format!("a,b,label\n1,2,0\n,,\n{rows}"));
    let (position, _) = corrupt(read_csv_with_schema(&commas, &label, &declared).unwrap_err());
    assert_eq!(position, Position::Line(3));
    // A blank line is still skipped.
    let blank = write(&dir, "blank.csv", &format!("a,b,label\n1,2,0\n\n{rows}"));
    assert_eq!(
        read_csv_with_schema(&blank, &label, &declared)
            .unwrap()
            .0
            .len(),
        5
    );
    // A quote never closed would swallow every later record.
    let quote = write(&dir, "quote.csv", &format!("a,b,label\n1,\"2,0\n{rows}"));
    let (_, reason) = corrupt(read_csv_with_schema(&quote, &label, &declared).unwrap_err());
    assert!(reason.contains("spans several lines"), "{reason}");
    assert!(
        CsvSchema::from_json(r#"{"header": false}"#)
            .unwrap()
            .header()
            == Some(false)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
