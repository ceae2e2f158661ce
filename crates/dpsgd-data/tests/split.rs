//! `Dataset::split` assigns positions from (N, fraction, seed) alone: no
//! record's label or features can move the sizes or another record
//! (issue 24, item 1).

use dpsgd_data::Dataset;
use proptest::prelude::*;

/// `n` examples whose first feature is their position (an identity that
/// survives the split) and whose second is `x[i]`; labels `y[i]`.
fn identified(y: &[u32], x: &[f32], n_classes: usize) -> Dataset {
    let features = (0..y.len()).flat_map(|i| [i as f32, x[i]]).collect();
    Dataset::new(features, y.to_vec(), 2, n_classes).unwrap()
}

/// The identities, in order, of a part.
fn ids(d: &Dataset) -> Vec<usize> {
    (0..d.len()).map(|i| d.example(i)[0] as usize).collect()
}

/// The reproduced case: 26 records, 13 of class 0 and 12 of class 1 before
/// the last; labelled 0 or 1, the last record used to decide whether 20 or
/// 21 records were trained on. Now both give round(0.8 · 26) = 21, and
/// the very same records in the same order.
#[test]
fn should_not_let_one_label_change_the_split() {
    let mut y: Vec<u32> = (0..25).map(|i| u32::from(i >= 13)).collect();
    y.push(0);
    let x = vec![0.5; 26];
    let a = identified(&y, &x, 2).split(0.2, 0).unwrap();
    y[25] = 1;
    let b = identified(&y, &x, 2).split(0.2, 0).unwrap();
    assert_eq!((a.0.len(), a.1.len()), (21, 5));
    assert_eq!((ids(&a.0), ids(&a.1)), (ids(&b.0), ids(&b.1)));
}

/// The sizes for many N and fractions: exactly round(f · N) test examples.
#[test]
fn should_hold_out_exactly_round_f_n() {
    for n in 0..300usize {
        for f in [0.01, 0.1, 0.2, 0.25, 0.5, 0.7, 0.99] {
            let (train, test) = Dataset::split_positions(n, f, n as u64).unwrap();
            let expected = (n as f64 * f).round() as usize;
            assert_eq!(test.len(), expected, "n {n}, f {f}");
            assert_eq!(train.len(), n - expected, "n {n}, f {f}");
        }
    }
    for f in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(Dataset::split_positions(10, f, 0).is_err(), "{f}");
    }
}

/// Adding a record at the end moves at most one other record between the
/// parts (keys are per position).
#[test]
fn should_move_at_most_one_other_record_when_one_is_added() {
    for n in [10usize, 57, 200] {
        let (_, a) = Dataset::split_positions(n, 0.3, 9).unwrap();
        let (_, b) = Dataset::split_positions(n + 1, 0.3, 9).unwrap();
        let moved = a.iter().filter(|i| !b.contains(i)).count()
            + b.iter().filter(|&&i| i < n && !a.contains(&i)).count();
        assert!(moved <= 1, "n {n}: {moved} moved");
    }
}

proptest! {
    /// Replacing one record (any label, any feature value) changes neither
    /// the sizes nor which record goes where: only that record's row.
    #[test]
    fn should_depend_on_positions_only(
        labels in proptest::collection::vec(0u32..4, 1..120),
        other_label in 0u32..4,
        other_value in -1e6f32..1e6,
        at in any::<prop::sample::Index>(),
        f in 0.05f64..0.95,
        seed in any::<u64>(),
    ) {
        let n = labels.len();
        let at = at.index(n);
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let a = identified(&labels, &x, 4).split(f, seed).unwrap();
        let (mut labels2, mut x2) = (labels.clone(), x.clone());
        labels2[at] = other_label;
        x2[at] = other_value;
        let b = identified(&labels2, &x2, 4).split(f, seed).unwrap();
        prop_assert_eq!(ids(&a.0), ids(&b.0));
        prop_assert_eq!(ids(&a.1), ids(&b.1));
        // Every other row is identical; the replaced one is itself.
        for (pa, pb) in [(&a.0, &b.0), (&a.1, &b.1)] {
            for i in 0..pa.len() {
                if ids(pa)[i] != at {
                    prop_assert_eq!(pa.example(i), pb.example(i));
                    prop_assert_eq!(pa.labels()[i], pb.labels()[i]);
                }
            }
        }
    }

    /// Every record lands in exactly one part.
    #[test]
    fn should_put_every_record_in_exactly_one_part(
        n in 0usize..500,
        f in 0.01f64..0.99,
        seed in any::<u64>(),
    ) {
        let (train, test) = Dataset::split_positions(n, f, seed).unwrap();
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        // The same seed gives the same split; another seed another one.
        prop_assert_eq!(Dataset::split_positions(n, f, seed).unwrap(), (train, test.clone()));
        if test.len() >= 5 && n - test.len() >= 5 {
            let (_, other) = Dataset::split_positions(n, f, seed ^ 1).unwrap();
            prop_assert_ne!(other, test);
        }
    }
}
