//! Reading a file that may be gzip-compressed (detected by its magic bytes).

use crate::error::{Error, Position, Result, corrupt};
use std::io::Read;
use std::path::Path;

/// The whole (decompressed) content of `path`.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be read, [`Error::CorruptData`] for a
/// damaged gzip stream.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decompress_if_gz(path, raw)
}

pub(crate) fn decompress_if_gz(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let mut decoder = flate2::read::MultiGzDecoder::new(raw.as_slice());
        decoder.read_to_end(&mut out).map_err(|e| {
            corrupt(
                path,
                Position::Byte(out.len() as u64),
                format!("damaged gzip stream: {e}"),
            )
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
