//! CSV files with categorical (text) columns: one-hot encoding, `?` as
//! missing, text labels, and the real UCI Adult file when available.

use dpsgd_data::{ColumnEncoding, LabelColumn, Position, read_csv, read_csv_encoded};
use std::path::PathBuf;

mod common;

use common::{corrupt, write};

fn temp_dir() -> PathBuf {
    common::temp_dir("categorical")
}

#[test]
fn should_one_hot_encode_text_columns_with_missing_as_all_zeros() {
    let dir = temp_dir();
    // Comma+space separated like UCI Adult; `?` and an empty field are missing.
    let text = "age, color, size, label\n\
                30, red, S, yes\n\
                41, ?, M, no\n\
                25, blue, , yes\n\
                52, red, M, no\n";
    let p = write(&dir, "mixed.csv", text);
    let (d, enc) = read_csv_encoded(&p, &LabelColumn::Last).unwrap();
    assert_eq!((d.len(), d.n_features(), d.n_classes()), (4, 5, 2));
    assert_eq!(
        enc.feature_names(),
        ["age", "color=blue", "color=red", "size=M", "size=S"]
    );
    assert_eq!(enc.classes().unwrap(), ["no", "yes"]);
    assert_eq!(d.labels(), &[1, 0, 1, 0]);
    assert_eq!(d.example(0), &[30.0, 0.0, 1.0, 0.0, 1.0]);
    assert_eq!(d.example(1), &[41.0, 0.0, 0.0, 1.0, 0.0]); // `?` → all zeros
    assert_eq!(d.example(2), &[25.0, 1.0, 0.0, 0.0, 0.0]); // empty → all zeros
    assert_eq!(
        enc.columns()[1],
        ColumnEncoding::OneHot(vec!["blue".into(), "red".into()])
    );
    assert_eq!(enc.columns()[0], ColumnEncoding::Numeric);

    // The encoding depends on the set of values, not their order.
    let shuffled = "age, color, size, label\n\
                    52, red, M, no\n\
                    25, blue, , yes\n\
                    41, ?, M, no\n\
                    30, red, S, yes\n";
    let (d2, enc2) =
        read_csv_encoded(&write(&dir, "shuffled.csv", shuffled), &LabelColumn::Last).unwrap();
    assert_eq!(enc2, enc);
    assert_eq!(d2.example(3), d.example(0));

    // A text label chosen by name or index; without a header.
    let by_name = read_csv(&p, &LabelColumn::Name("color".into()));
    assert!(
        corrupt(by_name.unwrap_err()).1.contains("label is missing"),
        "a missing label is an error"
    );
    let first = read_csv(
        &write(&dir, "nohead.csv", "b,1.5,x\na,2,y\nb,3,x\n"),
        &LabelColumn::Index(0),
    )
    .unwrap();
    assert_eq!(first.labels(), &[1, 0, 1]);
    assert_eq!(first.example(1), &[2.0, 0.0, 1.0]);
    assert_eq!(first.n_classes(), 2);

    // The encoding applies to another file; an unknown category is an error.
    let test = write(&dir, "test.csv", "age,color,size,label\n60,blue,S,no\n");
    let t = dpsgd_data::read_csv_with_encoding(&test, &enc).unwrap();
    assert_eq!(
        (t.example(0), t.labels()),
        (&[60.0, 1.0, 0.0, 0.0, 1.0][..], &[0][..])
    );
    let unknown = write(&dir, "unknown.csv", "age,color,size,label\n60,green,S,no\n");
    let (pos, reason) = corrupt(dpsgd_data::read_csv_with_encoding(&unknown, &enc).unwrap_err());
    assert_eq!(pos, Position::Line(2));
    assert!(
        // The column, never the record's value (private data in a message
        // that ends up in logs).
        reason.contains("`color`") && !reason.contains("green"),
        "{reason}"
    );
}

#[test]
fn should_refuse_mixed_columns_and_missing_numbers_naming_the_column() {
    let dir = temp_dir();
    let cases: [(&str, u64, &[&str]); 4] = [
        // Text after numbers, with a header: named by its header.
        (
            "age,job,y\n30,clerk,0\nforty,admin,1\n",
            3,
            &["column 0 (`age`)", "is not a number, but line 2's is"],
        ),
        // A number after text.
        (
            "a,x,0\nb,y,1\nc,7,0\n",
            3,
            &["column 1", "value is a number, but line 1's is not"],
        ),
        // A missing value in a numeric column.
        (
            "age,job,y\n30,clerk,0\n?,admin,1\n",
            3,
            &["column 0 (`age`)", "missing value in a numeric column"],
        ),
        // A mixed label.
        (
            "1,a\n2,3\n3,b\n",
            2,
            &["column 1", "value is a number, but line 1's is not"],
        ),
    ];
    for (i, (text, line, needles)) in cases.iter().enumerate() {
        let p = write(&dir, &format!("bad{i}.csv"), text);
        let (pos, reason) = corrupt(read_csv(&p, &LabelColumn::Last).unwrap_err());
        assert_eq!(pos, Position::Line(*line), "case {i}: {reason}");
        for needle in *needles {
            assert!(
                reason.contains(needle),
                "case {i}: `{needle}` not in {reason}"
            );
        }
    }
}

#[test]
fn should_read_uci_adult_when_available() {
    let Some(p) = common::require("adult/adult.data") else {
        return;
    };
    let (d, enc) = read_csv_encoded(&p, &LabelColumn::Last).unwrap();
    // 6 numeric columns + 99 categories of 8 text columns (`?` not counted).
    assert_eq!((d.len(), d.n_features(), d.n_classes()), (32_561, 105, 2));
    assert_eq!(enc.header(), None);
    assert_eq!(enc.classes().unwrap(), ["<=50K", ">50K"]);
    assert_eq!(d.labels().iter().filter(|&&l| l == 0).count(), 24_720);
    let sizes: Vec<usize> = enc
        .columns()
        .iter()
        .map(|c| match c {
            ColumnEncoding::Numeric => 0,
            ColumnEncoding::OneHot(cats) => cats.len(),
        })
        .collect();
    assert_eq!(sizes, [0, 8, 0, 16, 0, 7, 14, 6, 5, 2, 0, 0, 0, 41, 2]);
    // Rows with a `?` (all in text columns) are those with an all-zero group:
    // 2 399 by shared/data/README.md.
    let with_missing = (0..d.len())
        .filter(|&i| {
            let x = d.example(i);
            let mut at = 0;
            enc.columns()[..14].iter().any(|c| match c {
                ColumnEncoding::Numeric => {
                    at += 1;
                    false
                }
                ColumnEncoding::OneHot(cats) => {
                    let group = &x[at..at + cats.len()];
                    at += cats.len();
                    group.iter().all(|&v| v == 0.0)
                }
            })
        })
        .count();
    assert_eq!(with_missing, 2_399);

    // adult.test spells its labels `<=50K.`: not classes of this encoding.
    if let Some(test) = common::require("adult/adult.test") {
        let (_, reason) = corrupt(dpsgd_data::read_csv_with_encoding(&test, &enc).unwrap_err());
        assert!(
            reason.contains("not among the encoding's 2 categories") && !reason.contains("50K"),
            "{reason}"
        );
    }
}
