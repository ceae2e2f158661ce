//! The embedded default data set: UCI optical recognition of handwritten
//! digits (8×8, 1 797 images, 10 classes). CC BY 4.0, Alpaydin & Kaynak
//! (1998); see `data/README.md` for the attribution.

use crate::csv_file::{LabelColumn, read_csv_bytes};
use crate::dataset::Dataset;
use std::path::Path;

const DIGITS_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// The 1 797 UCI digits as `[1, 8, 8]` images with pixel values 0..16
/// (unscaled), labels 0..9.
///
/// # Panics
///
/// Never in practice: the embedded file is checked by this crate's tests.
pub fn digits() -> Dataset {
    read_csv_bytes(
        Path::new("<embedded digits.csv.gz>"),
        DIGITS_GZ,
        &LabelColumn::Last,
    )
    .and_then(|d| d.with_image_shape([1, 8, 8]))
    .expect("the embedded digits data set is valid")
}
