//! IDX files (the MNIST family), plain or gzip-compressed.
//!
//! Format: a big-endian u32 magic `0x0000_08DD` (`08` = unsigned bytes, `DD`
//! = number of dimensions), then one big-endian u32 per dimension, then the
//! data. Images have 3 dimensions (n, rows, cols), labels 1 (n).

use crate::dataset::Dataset;
use crate::error::{Error, Position, Result, corrupt};
use crate::gz::read_maybe_gz;
use std::path::{Path, PathBuf};

/// Parses the header of an IDX file of `u8` data with `dims` dimensions and
/// returns the dimension sizes and the data slice.
fn parse<'a>(path: &Path, bytes: &'a [u8], dims: usize) -> Result<(Vec<usize>, &'a [u8])> {
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(corrupt(
            path,
            Position::Byte(bytes.len() as u64),
            format!("truncated header: {} bytes, need {header}", bytes.len()),
        ));
    }
    let word = |i: usize| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    let magic = word(0);
    let expected = 0x0800 | dims as u32;
    if magic != expected {
        return Err(corrupt(
            path,
            Position::Byte(0),
            format!(
                "wrong magic number 0x{magic:08x}, expected 0x{expected:08x} (unsigned bytes, {dims} dimensions)"
            ),
        ));
    }
    let sizes: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let len = sizes
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .ok_or_else(|| {
            corrupt(
                path,
                Position::Byte(4),
                format!("dimensions {sizes:?} overflow"),
            )
        })?;
    let data = &bytes[header..];
    if data.len() < len {
        return Err(corrupt(
            path,
            Position::Byte(bytes.len() as u64),
            format!(
                "truncated data: {} bytes after the header, need {len} for dimensions {sizes:?}",
                data.len()
            ),
        ));
    }
    if data.len() > len {
        return Err(corrupt(
            path,
            Position::Byte((header + len) as u64),
            format!("{} unexpected bytes after the data", data.len() - len),
        ));
    }
    Ok((sizes, data))
}

/// Reads an images file and its labels file into a data set of
/// `[1, rows, cols]` images with pixel values 0..255 (unscaled).
///
/// `n_classes` bounds the labels (10 for MNIST).
///
/// # Errors
///
/// [`Error::CorruptData`] naming the file and byte offset for a wrong magic
/// number, a truncated file, trailing bytes, a label ≥ `n_classes` or
/// counts that differ between the two files; [`Error::Io`].
pub fn read_idx(images: &Path, labels: &Path, n_classes: usize) -> Result<Dataset> {
    let image_bytes = read_maybe_gz(images)?;
    let label_bytes = read_maybe_gz(labels)?;
    let (dims, pixels) = parse(images, &image_bytes, 3)?;
    let (ldims, label_data) = parse(labels, &label_bytes, 1)?;
    if dims[0] != ldims[0] {
        return Err(corrupt(
            labels,
            Position::Byte(4),
            format!(
                "{} labels for {} images in {}",
                ldims[0],
                dims[0],
                images.display()
            ),
        ));
    }
    if let Some(i) = label_data.iter().position(|&l| l as usize >= n_classes) {
        return Err(corrupt(
            labels,
            Position::Byte(8 + i as u64),
            format!("label {} out of range 0..{n_classes}", label_data[i]),
        ));
    }
    let features: Vec<f32> = pixels.iter().map(|&p| f32::from(p)).collect();
    let labels_u32: Vec<u32> = label_data.iter().map(|&l| u32::from(l)).collect();
    Dataset::new(features, labels_u32, dims[1] * dims[2], n_classes)?
        .with_image_shape([1, dims[1], dims[2]])
}

/// The standard MNIST file names in `dir` (each with or without `.gz`):
/// `(train images, train labels, test images, test labels)`.
///
/// # Errors
///
/// [`Error::Io`] naming the first file that is missing.
pub fn mnist_files(dir: &Path) -> Result<[PathBuf; 4]> {
    let find = |stem: &str| -> Result<PathBuf> {
        for name in [format!("{stem}.gz"), stem.to_owned()] {
            let p = dir.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(Error::Io {
            path: dir.join(stem),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found (also tried .gz)"),
        })
    };
    Ok([
        find("train-images-idx3-ubyte")?,
        find("train-labels-idx1-ubyte")?,
        find("t10k-images-idx3-ubyte")?,
        find("t10k-labels-idx1-ubyte")?,
    ])
}

/// MNIST's train and test sets from a directory with the standard names.
///
/// # Errors
///
/// As [`mnist_files`] and [`read_idx`], and [`Error::InvalidParameter`]
/// naming both files when the test images' shape is not the training
/// images' (a model
/// trained on one could not read the other; the same pixel count in
/// another shape would be read as scrambled images).
pub fn read_mnist(dir: &Path) -> Result<(Dataset, Dataset)> {
    let [tri, trl, tei, tel] = mnist_files(dir)?;
    let (train, test) = (read_idx(&tri, &trl, 10)?, read_idx(&tei, &tel, 10)?);
    if train.image_shape() != test.image_shape() {
        let shape = |d: &Dataset| {
            d.image_shape().map_or_else(
                || "no image shape".to_owned(),
                |[_, h, w]| format!("{h}×{w}"),
            )
        };
        return Err(Error::InvalidParameter {
            name: "test images",
            value: shape(&test),
            reason: format!(
                "{} holds {} images but the training images {} are {}: both must have one shape",
                tei.display(),
                shape(&test),
                tri.display(),
                shape(&train)
            ),
        });
    }
    Ok((train, test))
}
