//! Reading a file that may be gzip-compressed (detected by its magic bytes),
//! up to [`MAX_CONTENT_BYTES`] of content.

use crate::error::{Error, Position, Result, corrupt};
use std::io::Read;
use std::path::Path;

/// The most bytes of (decompressed) content [`read_maybe_gz`] returns: 2³⁰
/// (1 GiB), one byte per value of the most values a data set may hold
/// ([`MAX_VALUES`](crate::synthetic::MAX_VALUES), 2³⁰: 4 GiB of f32, the
/// bound of the largest model the trainer builds). An IDX file holds a byte
/// per pixel, so one at the value cap is this size (plus its header); a
/// CSV file takes at least two bytes per value (`0,`), so this still
/// admits the published tabular benchmarks (Texas-100, the largest, is
/// about 0.83 GB of text). A gzip stream can expand a thousandfold (a 1 MB
/// file to 1 GB): without a cap a small file exhausted memory before any
/// check of its content. Parsed, a CSV content takes up to about eight
/// times its size (1 GiB of `1,0` lines, some 9 GB with their features),
/// so the cap is not set higher. A larger content is refused with
/// [`Error::TooLarge`].
pub(crate) const MAX_CONTENT_BYTES: u64 = 1 << 30;

/// The whole (decompressed) content of `path`, at most 2³⁰ bytes (1 GiB).
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be read, [`Error::CorruptData`] for a
/// damaged gzip stream, [`Error::TooLarge`] for a file, or a decompressed
/// content, of more than 2³⁰ bytes (or one whose memory cannot be
/// allocated).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // The file's size, when known, sizes the buffer at once.
    let size = file
        .metadata()
        .map_or(0, |m| m.len().min(MAX_CONTENT_BYTES));
    let raw = read_capped(file, MAX_CONTENT_BYTES, size)
        .map_err(|e| e.into_error(path, "the file", MAX_CONTENT_BYTES, |e| io(e.source)))?;
    decompress_capped(path, raw, MAX_CONTENT_BYTES)
}

pub(crate) fn decompress_if_gz(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    decompress_capped(path, raw, MAX_CONTENT_BYTES)
}

/// `raw`, decompressed when it is gzip, refused past `limit` bytes.
fn decompress_capped(path: &Path, raw: Vec<u8>, limit: u64) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let decoder = flate2::read::MultiGzDecoder::new(raw.as_slice());
        read_capped(decoder, limit, 0).map_err(|e| {
            e.into_error(path, "its decompressed (gzip) content", limit, |e| {
                corrupt(
                    path,
                    Position::Byte(e.read),
                    format!("damaged gzip stream: {}", e.source),
                )
            })
        })
    } else if raw.len() as u64 > limit {
        Err(too_large(path, "the file", limit))
    } else {
        Ok(raw)
    }
}

/// Why [`read_capped`] stopped.
enum Capped {
    /// The reader failed after `read` bytes.
    Read(ReadFailure),
    /// More than the limit.
    TooLarge,
    /// The buffer could not grow past `read` bytes.
    Alloc {
        read: u64,
        source: std::collections::TryReserveError,
    },
}

/// A reader's error, and how far it had read.
struct ReadFailure {
    read: u64,
    source: std::io::Error,
}

impl Capped {
    fn into_error(
        self,
        path: &Path,
        what: &str,
        limit: u64,
        read_error: impl FnOnce(ReadFailure) -> Error,
    ) -> Error {
        match self {
            Capped::Read(e) => read_error(e),
            Capped::TooLarge => too_large(path, what, limit),
            Capped::Alloc { read, source } => Error::TooLarge {
                path: path.to_path_buf(),
                reason: format!(
                    "cannot allocate memory for {what} beyond {read} bytes \
                     (at most {limit} bytes are read)"
                ),
                source: Some(source),
            },
        }
    }
}

fn too_large(path: &Path, what: &str, limit: u64) -> Error {
    Error::TooLarge {
        path: path.to_path_buf(),
        reason: format!("{what} exceeds {limit} bytes, the most a data file may hold"),
        source: None,
    }
}

/// Everything `reader` yields, refused once it yields more than `limit`
/// bytes; the buffer (first sized for `size` bytes, at most `limit`) grows
/// with `try_reserve`, so memory that cannot be had is an error, not an
/// abort.
fn read_capped(reader: impl Read, limit: u64, size: u64) -> std::result::Result<Vec<u8>, Capped> {
    const CHUNK: usize = 1 << 16;
    let mut out: Vec<u8> = Vec::new();
    // A size beyond `usize` (on a 32-bit target) is left to grow.
    if let Ok(size) = usize::try_from(size.min(limit)) {
        out.try_reserve_exact(size)
            .map_err(|source| Capped::Alloc { read: 0, source })?;
    }
    // One byte past the limit tells a content of exactly `limit` bytes
    // from a longer one.
    let mut reader = reader.take(limit.saturating_add(1));
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Capped::Read(ReadFailure {
                    read: out.len() as u64,
                    source,
                }));
            }
        };
        let read = out.len() as u64;
        if read + n as u64 > limit {
            return Err(Capped::TooLarge);
        }
        out.try_reserve(n)
            .map_err(|source| Capped::Alloc { read, source })?;
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn should_refuse_a_gzip_bomb_past_the_limit() {
        // 1 MiB of one repeated record compresses to about a kilobyte: a
        // thousandfold expansion, refused at a 64 KiB limit before it is
        // all decompressed.
        let bomb = gzip(&b"1,0\n".repeat(1 << 18));
        assert!(bomb.len() < 8 << 10, "{} bytes", bomb.len());
        let e = decompress_capped(Path::new("bomb.csv.gz"), bomb, 64 << 10).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("bomb.csv.gz"), "{text}");
        assert!(text.contains("exceeds 65536 bytes"), "{text}");
    }

    #[test]
    fn should_read_a_gzip_content_of_exactly_the_limit() {
        let content = b"1,0\n".repeat(1 << 14);
        let limit = content.len() as u64;
        let got = decompress_capped(Path::new("f.csv.gz"), gzip(&content), limit).unwrap();
        assert_eq!(got, content);
        let e = decompress_capped(Path::new("f.csv.gz"), gzip(&content), limit - 1).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    }

    #[test]
    fn should_refuse_a_plain_content_past_the_limit() {
        let content = b"1,0\n".repeat(100);
        assert_eq!(
            decompress_capped(Path::new("f.csv"), content.clone(), 400).unwrap(),
            content
        );
        let e = decompress_capped(Path::new("f.csv"), content, 399).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    }

    #[test]
    fn should_stop_reading_an_endless_reader_at_the_limit() {
        // /dev/zero, as a reader: never ends, refused once past the limit.
        let e = read_capped(std::io::repeat(0), 1 << 20, 1 << 30).unwrap_err();
        assert!(matches!(e, Capped::TooLarge));
    }

    #[test]
    fn should_still_report_a_damaged_gzip_stream_as_corrupt() {
        let mut bytes = gzip(&b"1,0\n".repeat(1000));
        let n = bytes.len();
        bytes.truncate(n / 2);
        let e = decompress_capped(Path::new("f.csv.gz"), bytes, 1 << 20).unwrap_err();
        assert!(matches!(e, Error::CorruptData { .. }), "{e}");
    }

    #[test]
    fn should_cap_at_one_gibibyte() {
        assert_eq!(MAX_CONTENT_BYTES, 1 << 30);
        assert_eq!(
            MAX_CONTENT_BYTES,
            crate::synthetic::MAX_VALUES as u64,
            "one byte of content per value kept"
        );
    }
}
