//! `Dataset::gather` against the definition: row `indices[k]` at position
//! `k`, repeats included.

use dpsgd_data::Dataset;
use proptest::prelude::*;

/// `n` examples of `d` features whose values name their row and column.
fn numbered(n: usize, d: usize) -> Dataset {
    let x = (0..n * d).map(|v| v as f32).collect();
    let y = (0..n).map(|i| (i % 7) as u32).collect();
    Dataset::new(x, y, d, 7).unwrap()
}

/// The naive gather: row by row.
fn reference(data: &Dataset, indices: &[usize]) -> (Vec<f32>, Vec<u32>) {
    let x = indices
        .iter()
        .flat_map(|&i| data.example(i).to_vec())
        .collect();
    let y = indices.iter().map(|&i| data.labels()[i]).collect();
    (x, y)
}

#[test]
fn should_gather_rows_in_the_order_asked() {
    let data = numbered(4, 3);
    let (x, y) = data.gather(&[2, 0, 2]);
    assert_eq!(x, [6.0, 7.0, 8.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0]);
    assert_eq!(y, [2, 0, 2]);
    let (x, y) = data.gather(&[]);
    assert!(x.is_empty() && y.is_empty());
}

#[test]
fn should_gather_a_large_batch_as_the_row_by_row_copy_does() {
    // 2 048 rows of 1 000 features: a training batch's size.
    let d = 1000;
    let data = numbered(3000, d);
    let indices: Vec<usize> = (0..2048).map(|k| (k * 7919 + 13) % 3000).collect();
    assert_eq!(data.gather(&indices), reference(&data, &indices));
    // With repeats.
    let odd: Vec<usize> = (0..2049).map(|k| (k * k) % 3000).collect();
    assert_eq!(data.gather(&odd), reference(&data, &odd));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// For any rows (repeats included).
    #[test]
    fn gather_matches_the_definition(
        d in 1usize..600,
        rows in 1usize..40,
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..3000),
    ) {
        let data = numbered(rows, d);
        let indices: Vec<usize> = picks.iter().map(|p| p.index(rows)).collect();
        prop_assert_eq!(data.gather(&indices), reference(&data, &indices));
    }
}
