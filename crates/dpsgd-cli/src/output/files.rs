//! Writing a command's files: atomically and owner-only
//! ([`write_atomically`]), `--report`'s target ([`ReportTarget`]), and the
//! checks that an output path (or the checkpoint folder) can be used,
//! made before any data is read.

use crate::error;
use anyhow::{Context, Result};
use dpsgd_burn::io::FolderLock;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Refuses, before training, a `--save-model` path that cannot be written:
/// a directory, or one in a missing directory.
pub fn check_save_path(path: &Path) -> Result<(), error::UsageError> {
    check_output_path("--save-model", path)?;
    // The model card goes beside it (`dpsgd serve` loads both).
    check_output_path("--save-model", &dpsgd::train::card_path(path))
}

/// Refuses, before any work, an output `flag` cannot write: `-` (standard
/// output is `--report`'s), a directory, a path in a missing directory.
///
/// # Errors
///
/// [`error::UsageError`] naming `flag` and the path.
pub fn check_output_path(flag: &'static str, path: &Path) -> Result<(), error::UsageError> {
    let refuse = |why: String| error::UsageError {
        flag,
        message: format!("cannot write {}: {why}", path.display()),
    };
    if path == Path::new("-") {
        return Err(refuse(
            "`-` is not a file here (only --report writes to standard output)".into(),
        ));
    }
    if path.is_dir() {
        return Err(refuse("it is a directory".into()));
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
            Err(refuse(format!("{} is not a directory", d.display())))
        }
        _ => Ok(()),
    }
}

/// Refuses, before the data is read, a `--checkpoint-dir` the run could
/// not use: a path that is not a folder; for a fresh run, a folder that
/// holds a checkpoint (it would be overwritten); for `--resume`, one that
/// holds none; a folder another run holds (its lock, probed here and taken
/// for good when training starts).
///
/// # Errors
///
/// [`error::UsageError`] for `--checkpoint-dir` or `--resume`.
pub fn check_checkpoint_dir(dir: &Path, resume: bool) -> Result<(), error::UsageError> {
    let refuse = |flag, why: String| error::UsageError {
        flag,
        message: format!("{}: {why}", dir.display()),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(refuse("--checkpoint-dir", "not a directory".into()));
    }
    let holds_one = dir.join(dpsgd::train::CHECKPOINT_FILE).exists();
    if resume && !holds_one {
        return Err(refuse("--resume", "no checkpoint to resume here".into()));
    }
    if !resume && holds_one {
        return Err(refuse(
            "--checkpoint-dir",
            "already holds a checkpoint: resume it with --resume, or use another folder".into(),
        ));
    }
    if dir.is_dir() {
        match FolderLock::try_lock(dir) {
            Ok(Some(_probe)) => {}
            Ok(None) => {
                return Err(refuse("--checkpoint-dir", "in use by another run".into()));
            }
            Err(e) => return Err(refuse("--checkpoint-dir", format!("cannot lock it: {e}"))),
        }
    }
    Ok(())
}

/// Where `--report` writes.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportTarget {
    /// `-` or `/dev/stdout`.
    Stdout,
    /// An existing path that is not a regular file (a device, a pipe, a
    /// symbolic link): written in place, never replaced.
    InPlace(PathBuf),
    /// A regular file, replaced atomically.
    File(PathBuf),
}

impl ReportTarget {
    /// Where `path` leads, checked to be writable: for a regular file, a
    /// probe file is created and removed in its directory.
    ///
    /// # Errors
    ///
    /// [`error::UsageError`] for `--report` naming `path`: a directory, a
    /// missing or read-only directory.
    pub fn check(path: &Path) -> Result<Self, error::UsageError> {
        if path == Path::new("-") || path == Path::new("/dev/stdout") {
            return Ok(Self::Stdout);
        }
        let refuse = |why: String| error::UsageError {
            flag: "--report",
            message: format!("cannot write {}: {why}", path.display()),
        };
        if let Ok(link) = std::fs::symlink_metadata(path) {
            if path.is_dir() {
                return Err(refuse("it is a directory".into()));
            }
            if link.file_type().is_symlink() || !link.is_file() {
                return Ok(Self::InPlace(path.to_path_buf()));
            }
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(refuse(format!("{} is not a directory", dir.display())));
        }
        let probe = dir.join(format!(".dpsgd-report-probe-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| refuse(e.to_string()))?;
        // The probe is empty and ours; failing to remove it is harmless.
        let _ = std::fs::remove_file(&probe);
        Ok(Self::File(path.to_path_buf()))
    }

    /// Writes `text` (and a final newline).
    ///
    /// # Errors
    ///
    /// I/O errors, naming the path.
    pub fn write(&self, text: &str) -> Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}")
                    .and_then(|()| out.flush())
                    .context("writing the report to standard output")
            }
            // One writer for both: it writes through links and devices and
            // replaces a regular file atomically.
            Self::InPlace(path) | Self::File(path) => write_atomically(path, &format!("{text}\n")),
        }
    }
}

/// Writes `text` to `path` atomically (see
/// [`dpsgd_burn::io::write_atomically`]: a synced temporary file renamed
/// over `path`; a symbolic link or device is written through, never
/// replaced), so a crash never leaves a half-written file, readable by
/// its owner only (mode 0600 on Unix, as the checkpoint is): every output
/// written through it (the JSON reports, the HTML page, the CSV tables)
/// can hold exact statistics of the private data, such as per-epoch
/// training losses, the training accuracy or attack scores.
///
/// # Errors
///
/// I/O errors, naming `path`.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    dpsgd_burn::io::write_atomically(path, text.as_bytes(), dpsgd_burn::io::Access::OwnerOnly)
        .with_context(|| format!("writing {}", path.display()))
}
