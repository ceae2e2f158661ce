//! Every reader rejects every kind of corrupt input with the right error.

use dpsgd_data::{
    Column, Dataset, Error, LabelColumn, OutOfRange, Position, Scaling, read_csv, read_idx,
};
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

mod common;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dpsgd-data-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0803u32.to_be_bytes());
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend((0..n * rows * cols).map(|i| (i % 256) as u8));
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0801u32.to_be_bytes());
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

fn corrupt_at(e: Error) -> (PathBuf, Position, String) {
    match e {
        Error::CorruptData {
            path,
            position,
            reason,
        } => (path, position, reason),
        other => panic!("expected CorruptData, got {other}"),
    }
}

#[test]
fn should_read_valid_idx_plain_and_gzipped() {
    let dir = temp_dir();
    let images = idx_images(3, 2, 2);
    let labels = idx_labels(&[0, 9, 4]);
    for (img, lab) in [
        (write(&dir, "i", &images), write(&dir, "l", &labels)),
        (
            write(&dir, "i.gz", &gzip(&images)),
            write(&dir, "l.gz", &gzip(&labels)),
        ),
    ] {
        let d = read_idx(&img, &lab, 10).unwrap();
        assert_eq!(
            (d.len(), d.n_features(), d.image_shape()),
            (3, 4, Some([1, 2, 2]))
        );
        assert_eq!(d.labels(), &[0, 9, 4]);
        assert_eq!(d.example(1), &[4.0, 5.0, 6.0, 7.0]);
    }
}

#[test]
fn should_reject_each_kind_of_corrupt_idx() {
    let dir = temp_dir();
    let good_images = write(&dir, "gi", &idx_images(3, 2, 2));
    let good_labels = write(&dir, "gl", &idx_labels(&[1, 2, 3]));

    let mut bad_magic = idx_images(3, 2, 2);
    bad_magic[2] = 0x09;
    let p = write(&dir, "magic", &bad_magic);
    let (path, pos, reason) = corrupt_at(read_idx(&p, &good_labels, 10).unwrap_err());
    assert_eq!((path, pos), (p, Position::Byte(0)));
    assert!(reason.contains("magic"), "{reason}");

    let truncated = idx_images(3, 2, 2);
    let p = write(&dir, "trunc", &truncated[..truncated.len() - 1]);
    let (path, _, reason) = corrupt_at(read_idx(&p, &good_labels, 10).unwrap_err());
    assert_eq!(path, p);
    assert!(reason.contains("truncated"), "{reason}");

    let p = write(&dir, "short-header", &truncated[..10]);
    assert!(
        corrupt_at(read_idx(&p, &good_labels, 10).unwrap_err())
            .2
            .contains("header")
    );

    let p = write(&dir, "range", &idx_labels(&[1, 10, 3]));
    let (path, pos, reason) = corrupt_at(read_idx(&good_images, &p, 10).unwrap_err());
    assert_eq!((path, pos), (p, Position::Byte(9)));
    assert!(reason.contains("out of range"), "{reason}");

    let p = write(&dir, "count", &idx_labels(&[1, 2]));
    assert!(
        corrupt_at(read_idx(&good_images, &p, 10).unwrap_err())
            .2
            .contains("2 labels for 3 images")
    );

    let mut trailing = idx_labels(&[1, 2, 3]);
    trailing.push(0);
    let p = write(&dir, "trailing", &trailing);
    assert!(
        corrupt_at(read_idx(&good_images, &p, 10).unwrap_err())
            .2
            .contains("unexpected bytes")
    );

    let gz = gzip(&idx_images(3, 2, 2));
    let p = write(&dir, "badgz", &gz[..gz.len() / 2]);
    assert!(
        corrupt_at(read_idx(&p, &good_labels, 10).unwrap_err())
            .2
            .contains("gzip")
    );

    assert!(matches!(
        read_idx(&dir.join("missing"), &good_labels, 10),
        Err(Error::Io { .. })
    ));
}

#[test]
fn should_read_csv_with_quotes_header_and_label_column() {
    let dir = temp_dir();
    let text = "\"a\",\"b, quoted\",label\n1,2.5,0\n\"3\",4,2\n\n5,6e-1,1\n";
    let p = write(&dir, "h.csv", text.as_bytes());
    let d = read_csv(&p, &LabelColumn::Last).unwrap();
    assert_eq!((d.len(), d.n_features(), d.n_classes()), (3, 2, 3));
    assert_eq!(d.example(2), &[5.0, 0.6]);
    let by_name = read_csv(&p, &LabelColumn::Name("label".into())).unwrap();
    assert_eq!(by_name, d);
    let first = read_csv(
        &write(&dir, "n.csv", b"0,1.5,2\n1,3,4\n"),
        &LabelColumn::Index(0),
    )
    .unwrap();
    assert_eq!(
        (first.labels(), first.example(1)),
        (&[0u32, 1][..], &[3.0f32, 4.0][..])
    );
    let gz = read_csv(
        &write(&dir, "h.csv.gz", &gzip(text.as_bytes())),
        &LabelColumn::Last,
    )
    .unwrap();
    assert_eq!(gz, d);
}

/// Issue 26: `1e308` was reported as "feature 400 is not finite" (a
/// flattened index into the whole data set) once stored as f32; a number
/// out of range names the file, its line (the header is line 1), its
/// column (by name under a header, else by 0-based index) and the value.
#[test]
fn should_name_the_line_and_column_of_a_number_out_of_range() {
    let dir = temp_dir();
    let named = |n: &str| Column::Name(n.into());
    let cases: [(&str, u64, Column, &str, OutOfRange); 7] = [
        (
            "a,b,label\n1e308,1,0\n",
            2,
            named("a"),
            "1e308",
            OutOfRange::BeyondF32,
        ),
        (
            "a,b,label\n1,2,0\n3,1e39,1\n",
            3,
            named("b"),
            "1e39",
            OutOfRange::BeyondF32,
        ),
        (
            "a,b,label\n1,2,0\n-3.5e38,1,1\n",
            3,
            named("a"),
            "-3.5e38",
            OutOfRange::BeyondF32,
        ),
        (
            "a,b,label\n1,2,0\n3,4,1\n5,inf,1\n",
            4,
            named("b"),
            "inf",
            OutOfRange::NotFinite,
        ),
        (
            "a,b,label\n1,1e309,0\n",
            2,
            named("b"),
            "1e309",
            OutOfRange::NotFinite,
        ),
        (
            "1,2,0\n3,4,1\n5,1e39,1\n",
            3,
            Column::Index(1),
            "1e39",
            OutOfRange::BeyondF32,
        ),
        (
            "1,2,0\nNaN,4,1\n",
            2,
            Column::Index(0),
            "NaN",
            OutOfRange::NotFinite,
        ),
    ];
    for (i, (text, line, column, value, why)) in cases.into_iter().enumerate() {
        let p = write(&dir, &format!("range{i}.csv"), text.as_bytes());
        let e = read_csv(&p, &LabelColumn::Last).unwrap_err();
        let message = e.to_string();
        match e {
            Error::NumberOutOfRange {
                path,
                line: l,
                column: c,
                value: v,
                why: w,
            } => {
                assert_eq!(path, p, "case {i}");
                assert_eq!(
                    (l, &c, v.as_str(), w),
                    (line, &column, value, why),
                    "case {i}"
                );
            }
            other => panic!("case {i}: expected NumberOutOfRange, got {other}"),
        }
        for part in [
            p.display().to_string(),
            format!("line {line}"),
            column.to_string(),
        ] {
            assert!(
                message.contains(&part),
                "case {i}: `{part}` not in {message}"
            );
        }
        // The value is the caller's to read (`value`), never in the
        // message: a record's value is private data, and messages end up
        // in logs.
        assert!(
            !message.contains(&format!("`{value}`")),
            "case {i}: {message}"
        );
    }
    // The largest f32 is still a feature.
    let p = write(&dir, "max.csv", b"a,b,label\n3.4e38,-3.4e38,0\n1,2,1\n");
    let d = read_csv(&p, &LabelColumn::Last).unwrap();
    assert!(d.features().iter().all(|x| x.is_finite()));
}

#[test]
fn should_reject_each_kind_of_corrupt_csv() {
    let dir = temp_dir();
    // A number out of range (`inf`) is its own error: see
    // should_name_the_line_and_column_of_a_number_out_of_range.
    let cases: [(&str, u64, &str); 5] = [
        ("1,2,0\n3,4\n", 2, "expected 3"),
        ("1,2,0\n3,x,1\n", 2, "not a number"),
        ("1,2,0\n3,4,-1\n", 2, "out of range"),
        ("1,2,0\n3,4,1.5\n", 2, "out of range"),
        ("1,2,0\n\"3,4,1\n", 2, "expected 3"),
    ];
    for (i, (text, line, needle)) in cases.iter().enumerate() {
        let p = write(&dir, &format!("bad{i}.csv"), text.as_bytes());
        let (path, pos, reason) = corrupt_at(read_csv(&p, &LabelColumn::Last).unwrap_err());
        assert_eq!(path, p);
        assert_eq!(pos, Position::Line(*line), "case {i}: {reason}");
        assert!(reason.contains(needle), "case {i}: {reason}");
    }
    let p = write(&dir, "empty.csv", b"a,b\n");
    assert!(
        corrupt_at(read_csv(&p, &LabelColumn::Last).unwrap_err())
            .2
            .contains("no data")
    );
    let p = write(&dir, "ok.csv", b"1,2,0\n");
    assert!(matches!(
        read_csv(&p, &LabelColumn::Index(7)),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        read_csv(&p, &LabelColumn::Name("y".into())),
        Err(Error::InvalidParameter { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Fuzz-style: any truncation of a valid file is either rejected with
    /// CorruptData or (for CSV cut at a row boundary) parses to a prefix —
    /// never a panic, never garbage.
    #[test]
    fn should_reject_or_shorten_on_random_truncation(cut in 0usize..1000, gz in any::<bool>()) {
        let dir = temp_dir();
        let images = idx_images(4, 3, 3);
        let bytes = if gz { gzip(&images) } else { images.clone() };
        let cut = cut % bytes.len();
        let p = write(&dir, if gz { "t.gz" } else { "t" }, &bytes[..cut]);
        let labels = write(&dir, "tl", &idx_labels(&[0, 1, 2, 3]));
        let rejected = matches!(read_idx(&p, &labels, 10), Err(Error::CorruptData { .. }));
        prop_assert!(rejected, "truncation at {} accepted", cut);

        let text: String = (0..20).map(|i| format!("{i},{}.25,{}\n", i * 3, i % 4)).collect();
        let cut = cut % text.len();
        let p = write(&dir, "t.csv", &text.as_bytes()[..cut]);
        match read_csv(&p, &LabelColumn::Last) {
            Ok(d) => {
                prop_assert!(d.len() <= 20);
                for i in 0..d.len() {
                    prop_assert_eq!(d.example(i)[0], i as f32);
                }
            }
            Err(Error::CorruptData { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }
}

#[test]
fn should_embed_the_uci_digits() {
    let d = dpsgd_data::digits();
    assert_eq!(
        (d.len(), d.n_features(), d.n_classes(), d.image_shape()),
        (1797, 64, 10, Some([1, 8, 8]))
    );
    // About 180 per class (data/README.md).
    for class in 0..10 {
        let count = d.labels().iter().filter(|&&l| l == class).count();
        assert!((174..=183).contains(&count), "class {class}: {count}");
    }
    assert_eq!(d.features().iter().copied().fold(0.0f32, f32::max), 16.0);
    let (train, test) = d.split(0.25, 1).unwrap();
    // Not stratified: round(25%) of all examples, whatever their labels;
    // a random split of 449 keeps every class near its 10% share anyway.
    assert_eq!(test.len(), (1797.0f64 * 0.25).round() as usize);
    for c in 0..10 {
        let share = test.labels().iter().filter(|&&l| l == c).count() as f64 / test.len() as f64;
        assert!((share - 0.1).abs() < 0.05, "class {c} share {share}");
    }
    assert_eq!(train.len() + test.len(), 1797);
    assert_eq!(d.split(0.25, 1).unwrap().0, train, "same seed, same split");
}

#[test]
fn should_read_real_mnist_when_available() {
    let Some(dir) = common::require("mnist") else {
        return;
    };
    let (train, test) = dpsgd_data::read_mnist(&dir).unwrap();
    assert_eq!(
        (train.len(), test.len(), train.n_features()),
        (60_000, 10_000, 784)
    );
    // Class counts from shared/data/README.md.
    let zeros = train.labels().iter().filter(|&&l| l == 0).count();
    assert_eq!(zeros, 5923);
    let mean =
        train.features().iter().map(|&x| f64::from(x)).sum::<f64>() / train.features().len() as f64;
    assert!((mean - 33.32).abs() < 0.01, "{mean}");
}

#[test]
fn should_read_the_breast_cancer_csv_when_available() {
    let Some(p) = common::require("sklearn-small/breast_cancer.csv") else {
        return;
    };
    let d = read_csv(&p, &LabelColumn::Last).unwrap();
    assert_eq!((d.len(), d.n_features(), d.n_classes()), (569, 30, 2));
    assert_eq!(d.labels().iter().filter(|&&l| l == 0).count(), 212);
}

#[test]
fn should_scale_by_declared_ranges_without_looking_at_other_rows() {
    let rows = |extra: Option<f32>| {
        let mut x = vec![0.0f32, 5.0, 2.0, -1.0, 4.0, 20.0];
        let mut y = vec![0u32, 1, 0];
        if let Some(v) = extra {
            x.extend([v, v]);
            y.push(1);
        }
        Dataset::new(x.clone(), y.clone(), 2, 2).unwrap()
    };
    let scaling = Scaling::Range {
        lo: vec![0.0, 0.0],
        hi: vec![4.0, 10.0],
    };
    let mut plain = rows(None);
    let mut with_outlier = rows(Some(1e30));
    plain.apply(&scaling);
    with_outlier.apply(&scaling);
    // Clipped to the range, mapped to [0, 1]; the outlier changes no other row.
    assert_eq!(plain.features(), &[0.0, 0.5, 0.5, 0.0, 1.0, 1.0]);
    assert_eq!(&with_outlier.features()[..6], plain.features());
    assert_eq!(&with_outlier.features()[6..], &[1.0, 1.0]);
    // Ranges fitted on a (public) reference set.
    match rows(None).fit_range() {
        Scaling::Range { lo, hi } => assert_eq!((lo, hi), (vec![0.0, -1.0], vec![4.0, 20.0])),
        other => panic!("{other:?}"),
    }
}

/// The signed logarithm: each numeric value on its own (reference values
/// from `ln_1p` in f64), clipped, divided by the clip; one-hot features
/// untouched; an outlier moves only its own row.
#[test]
fn should_map_numeric_features_by_a_clipped_signed_log() {
    let rows = |extra: f32| {
        Dataset::new(
            vec![0.0, 1.0, 1.0, 0.0, -99_999.0, 1.0, 17.0, 0.0, extra, 1.0],
            vec![0, 1, 0, 1, 0],
            2,
            2,
        )
        .unwrap()
    };
    let scaling = Scaling::SignedLog {
        numeric: vec![true, false],
        clip: 8.0,
    };
    let (mut plain, mut outlier) = (rows(2.5), rows(1e30));
    plain.apply(&scaling);
    outlier.apply(&scaling);
    let log = |x: f64| (x.abs().ln_1p().copysign(x) / 8.0) as f32;
    let expected = [
        0.0,
        1.0,
        log(1.0),
        0.0,
        -1.0, // ln(1 + 99 999) = 11.5 > 8: clipped
        1.0,
        log(17.0),
        0.0,
        log(2.5),
        1.0,
    ];
    for (got, want) in plain.features().iter().zip(expected) {
        assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
    }
    assert_eq!(&outlier.features()[..8], &plain.features()[..8]);
    assert_eq!(&outlier.features()[8..], &[1.0, 1.0]);
}

#[test]
fn should_declare_the_number_of_classes_and_fingerprint_the_data() {
    let d = Dataset::new(vec![1.0, 2.0, 3.0], vec![0, 1, 1], 1, 2).unwrap();
    assert_eq!(d.clone().with_num_classes(5).unwrap().n_classes(), 5);
    assert!(
        d.clone().with_num_classes(1).is_err(),
        "label 1 needs 2 classes"
    );
    assert!(d.clone().with_num_classes(0).is_err());
    let other = Dataset::new(vec![1.0, 2.0, 3.5], vec![0, 1, 1], 1, 2).unwrap();
    assert_eq!(d.content_hash(), d.clone().content_hash());
    assert_ne!(d.content_hash(), other.content_hash());
    assert_ne!(d.content_hash(), d.subset(&[0, 1]).content_hash());
}

/// Training and test images of different shapes are refused at load,
/// naming both files (issue 26, item 4; the CLI exits 2 naming --dataset): the model would fail after
/// training (another pixel count) or read scrambled images (the same count
/// in another shape).
#[test]
fn should_refuse_mnist_whose_test_images_have_another_shape() {
    // Another pixel count, and the same count in another shape.
    for (rows, cols) in [(3, 3), (4, 5)] {
        let dir = std::env::temp_dir().join(format!(
            "dpsgd-data-shapes-{}-{rows}x{cols}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let labels = [0u8, 1, 2];
        std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(3, 2, 10)).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
        std::fs::write(
            dir.join("t10k-images-idx3-ubyte"),
            idx_images(3, rows, cols),
        )
        .unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
        let err = dpsgd_data::read_mnist(&dir).unwrap_err();
        let Error::InvalidParameter { reason, .. } = &err else {
            panic!("expected InvalidParameter, got {err}");
        };
        assert!(reason.contains("t10k-images-idx3-ubyte"), "{reason}");
        assert!(
            reason.contains(&format!("{rows}×{cols}")) && reason.contains("2×10"),
            "{reason}"
        );
        // The same shape on both sides loads.
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_images(3, 2, 10)).unwrap();
        assert!(dpsgd_data::read_mnist(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
