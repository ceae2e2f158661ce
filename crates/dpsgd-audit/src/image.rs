//! Writing grayscale images (model-inversion reconstructions, their nearest
//! training examples) as one PNG grid.
//!
//! Each image of `h × w` values (row-major) is mapped linearly from
//! `range = (lo, hi)` to `0–255`, `v ↦ round(255 · (v − lo)/(hi − lo))`
//! clamped to `[0, 255]`, and upscaled by an integer `scale` (nearest
//! neighbour: each value becomes a `scale × scale` block). Images fill the
//! grid row by row, `columns` to a row (fewer when there are fewer images),
//! with a 1-pixel separator of mid-grey ([`SEPARATOR`]) between cells; the
//! unused cells of a last, incomplete row are separator-grey too.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::Error;
use crate::error::{Result, invalid};

/// The grey level of the separator lines and of empty cells.
pub const SEPARATOR: u8 = 128;

/// An 8-bit grayscale image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height · width` grey levels, row-major.
    pub pixels: Vec<u8>,
}

/// Maps `v` from `[lo, hi]` to a grey level, clamping.
fn grey(v: f32, lo: f64, width: f64) -> u8 {
    let level = (255.0 * (f64::from(v) - lo) / width).round();
    level.clamp(0.0, 255.0) as u8
}

/// The pixel buffer of the grid [`write_png_grid`] writes (see the [module
/// docs](self) for the layout): `columns' = min(columns, n)` cells across
/// and `⌈n / columns'⌉` down, `columns' · w · scale + columns' − 1` pixels
/// wide and `rows · h · scale + rows − 1` high.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for no images, `h`, `w`, `columns` or
/// `scale` zero, an image that is not `h · w` long or has a NaN value, a
/// range that is not a finite `lo < hi`, or a grid too large for a PNG (over
/// `u32::MAX` pixels a side).
///
/// # Examples
///
/// ```
/// use dpsgd_audit::image::{grid, SEPARATOR};
/// // Two 1 × 2 images side by side, doubled: 2·2 + 1 + 2·2 = 9 wide, 2 high.
/// let g = grid(&[vec![0.0, 1.0], vec![0.5, 2.0]], 1, 2, 2, (0.0, 1.0), 2)?;
/// assert_eq!((g.width, g.height), (9, 2));
/// assert_eq!(&g.pixels[..9], &[0, 0, 255, 255, SEPARATOR, 128, 128, 255, 255]);
/// # Ok::<(), dpsgd_audit::Error>(())
/// ```
pub fn grid(
    images: &[Vec<f32>],
    h: usize,
    w: usize,
    columns: usize,
    range: (f32, f32),
    scale: usize,
) -> Result<GrayImage> {
    if images.is_empty() {
        return Err(invalid("images", "[]", "need at least one image"));
    }
    for (name, value) in [("h", h), ("w", w), ("columns", columns), ("scale", scale)] {
        if value == 0 {
            return Err(invalid(name, 0, "must be > 0"));
        }
    }
    let (lo, hi) = range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(invalid(
            "range",
            format!("({lo}, {hi})"),
            "need finite lo < hi",
        ));
    }
    let len = h.checked_mul(w);
    if let Some(img) = images.iter().find(|img| Some(img.len()) != len) {
        return Err(invalid(
            "images",
            img.len(),
            format!("each image must have h · w = {h} · {w} values"),
        ));
    }
    if images.iter().flatten().any(|v| v.is_nan()) {
        return Err(invalid("images", f32::NAN, "values must not be NaN"));
    }
    let cols = columns.min(images.len());
    let rows = images.len().div_ceil(cols);
    let side = |cells: usize, size: usize| {
        size.checked_mul(scale)
            .and_then(|cell| cell.checked_mul(cells))
            .and_then(|px| px.checked_add(cells - 1))
            .filter(|&px| u32::try_from(px).is_ok())
    };
    let (Some(width), Some(height)) = (side(cols, w), side(rows, h)) else {
        return Err(invalid(
            "images",
            images.len(),
            "the grid is too large for a PNG",
        ));
    };
    let Some(area) = width
        .checked_mul(height)
        .filter(|&a| isize::try_from(a).is_ok())
    else {
        return Err(invalid(
            "images",
            images.len(),
            "the grid is too large to hold in memory",
        ));
    };
    let mut pixels = vec![SEPARATOR; area];
    let (lo, span) = (f64::from(lo), f64::from(hi) - f64::from(lo));
    for (k, img) in images.iter().enumerate() {
        let top = (k / cols) * (h * scale + 1);
        let left = (k % cols) * (w * scale + 1);
        for (r, row) in img.chunks(w).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let level = grey(v, lo, span);
                for dy in 0..scale {
                    let start = (top + r * scale + dy) * width + left + c * scale;
                    pixels[start..start + scale].fill(level);
                }
            }
        }
    }
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

/// Encodes `images` (each `h·w` values, row-major) as one grayscale 8-bit
/// PNG grid with `columns` columns and a 1-pixel separator, each image
/// scaled from `range` to 0–255 (clamped), upscaled by an integer `scale`
/// (nearest neighbour) so small digits are visible. The layout is
/// [`grid`]'s. The bytes are the caller's to write (atomically, with the
/// permissions it wants).
///
/// # Errors
///
/// * [`Error::InvalidParameter`] for empty input or wrong lengths, and the
///   other cases of [`grid`].
/// * [`Error::Write`] (path `<memory>`) if the encoder fails.
pub fn encode_png_grid(
    images: &[Vec<f32>],
    h: usize,
    w: usize,
    columns: usize,
    range: (f32, f32),
    scale: usize,
) -> Result<Vec<u8>> {
    let image = grid(images, h, w, columns, range, scale)?;
    let fail = |reason: String| Error::Write {
        path: "<memory>".into(),
        reason,
    };
    // `grid` guarantees both sides fit in u32.
    let (width, height) = (
        u32::try_from(image.width).map_err(|e| fail(e.to_string()))?,
        u32::try_from(image.height).map_err(|e| fail(e.to_string()))?,
    );
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(e.to_string()))?;
    writer
        .write_image_data(&image.pixels)
        .map_err(|e| fail(e.to_string()))?;
    writer.finish().map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

/// [`encode_png_grid`] written to `path` (an existing file is truncated
/// and overwritten in place; prefer writing the encoded bytes atomically).
///
/// # Errors
///
/// As [`encode_png_grid`]; [`Error::Write`] when the file cannot be
/// created or written.
pub fn write_png_grid(
    path: &Path,
    images: &[Vec<f32>],
    h: usize,
    w: usize,
    columns: usize,
    range: (f32, f32),
    scale: usize,
) -> Result<()> {
    let bytes = encode_png_grid(images, h, w, columns, range, scale)?;
    let fail = |reason: String| Error::Write {
        path: path.display().to_string(),
        reason,
    };
    let mut file = File::create(path).map_err(|e| fail(e.to_string()))?;
    file.write_all(&bytes).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A fresh path in the system's temporary directory.
    fn temp_path(name: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "dpsgd-audit-{}-{nanos}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    #[test]
    fn grid_lays_out_scales_and_clamps() {
        // Three 2 × 2 images, two columns, scale 1: 2 + 1 + 2 = 5 wide,
        // 2 + 1 + 2 = 5 high; the fourth cell is empty.
        let images = vec![
            vec![0.0, 1.0, 0.5, 0.25],
            vec![-1.0, 2.0, 1.0, 0.0],
            vec![0.2, 0.2, 0.2, 0.2],
        ];
        let g = grid(&images, 2, 2, 2, (0.0, 1.0), 1).unwrap();
        assert_eq!((g.width, g.height), (5, 5));
        let s = SEPARATOR;
        #[rustfmt::skip]
        let expected = vec![
            0,   255, s, 0,   255,
            128, 64,  s, 255, 0,
            s,   s,   s, s,   s,
            51,  51,  s, s,   s,
            51,  51,  s, s,   s,
        ];
        assert_eq!(g.pixels, expected);
        // More columns than images: one row, no empty cells.
        let g = grid(&images[..1], 2, 2, 10, (0.0, 1.0), 1).unwrap();
        assert_eq!((g.width, g.height), (2, 2));
        // Scale 3 and a range of (−1, 1): 0 ↦ 128 (127.5 rounds up).
        let g = grid(&[vec![-1.0, 0.0]], 1, 2, 1, (-1.0, 1.0), 3).unwrap();
        assert_eq!((g.width, g.height), (6, 3));
        for row in g.pixels.chunks(6) {
            assert_eq!(row, &[0, 0, 0, 128, 128, 128]);
        }
    }

    #[test]
    fn grid_rejects_malformed_input() {
        let one = vec![vec![0.0; 4]];
        let bad = |images: &[Vec<f32>], h, w, columns, range, scale| {
            matches!(
                grid(images, h, w, columns, range, scale),
                Err(Error::InvalidParameter { .. })
            )
        };
        assert!(!bad(&one, 2, 2, 1, (0.0, 1.0), 1));
        assert!(bad(&[], 2, 2, 1, (0.0, 1.0), 1));
        assert!(bad(&one, 2, 3, 1, (0.0, 1.0), 1));
        assert!(bad(&[vec![0.0; 4], vec![0.0; 3]], 2, 2, 1, (0.0, 1.0), 1));
        assert!(bad(
            &[vec![0.0, f32::NAN, 0.0, 0.0]],
            2,
            2,
            1,
            (0.0, 1.0),
            1
        ));
        assert!(bad(&one, 0, 2, 1, (0.0, 1.0), 1));
        assert!(bad(&one, 2, 2, 0, (0.0, 1.0), 1));
        assert!(bad(&one, 2, 2, 1, (0.0, 1.0), 0));
        assert!(bad(&one, 2, 2, 1, (1.0, 1.0), 1));
        assert!(bad(&one, 2, 2, 1, (0.0, f32::NAN), 1));
        assert!(bad(&one, 2, 2, 1, (0.0, 1.0), usize::MAX / 2));
    }

    #[test]
    fn png_grid_round_trips_through_the_decoder() {
        let path = temp_path("grid.png");
        // Ten 3 × 4 images, four columns, scale 2: 4·8 + 3 = 35 wide,
        // 3·6 + 2 = 20 high. Image k has value k/9 everywhere but a white
        // top-left pixel.
        let images: Vec<Vec<f32>> = (0..10)
            .map(|k| {
                let mut img = vec![k as f32 / 9.0; 12];
                img[0] = 1.0;
                img
            })
            .collect();
        write_png_grid(&path, &images, 3, 4, 4, (0.0, 1.0), 2).unwrap();
        let file = File::open(&path).unwrap();
        let mut reader = png::Decoder::new(BufReader::new(file)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((info.width, info.height), (35, 20));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let at = |x: usize, y: usize| buf[y * 35 + x];
        assert_eq!(at(0, 0), 255); // image 0's white corner, 2 × 2
        assert_eq!(at(1, 1), 255);
        assert_eq!(at(2, 0), 0); // image 0's value 0
        assert_eq!(at(8, 0), SEPARATOR); // separator after the first column
        assert_eq!(at(9 + 2, 0), 28); // image 1: 255/9 = 28.3
        assert_eq!(at(2, 7 + 3), 113); // image 4 (row 1, column 0): 4·255/9 = 113.3
        // Image 9 (row 2, column 1) is all white; cells 10 and 11 are empty.
        assert_eq!(at(9 + 7, 14 + 5), 255);
        assert_eq!(at(18 + 3, 14 + 3), SEPARATOR);
        assert_eq!(at(27 + 3, 14 + 3), SEPARATOR);
        // The whole grid matches the pure function.
        let g = grid(&images, 3, 4, 4, (0.0, 1.0), 2).unwrap();
        assert_eq!(&buf[..info.buffer_size()], &g.pixels[..]);
    }

    #[test]
    fn png_grid_reports_unwritable_paths() {
        let dir = temp_path("missing-dir");
        let path = dir.join("grid.png");
        let err = write_png_grid(&path, &[vec![0.0; 4]], 2, 2, 1, (0.0, 1.0), 1).unwrap_err();
        match err {
            Error::Write { path: p, reason } => {
                assert_eq!(p, path.display().to_string());
                assert!(!reason.is_empty());
            }
            other => panic!("expected a write error, got {other:?}"),
        }
        // Invalid input is rejected before any file is created.
        let path = temp_path("never.png");
        assert!(matches!(
            write_png_grid(&path, &[], 2, 2, 1, (0.0, 1.0), 1),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(!path.exists());
    }
}
