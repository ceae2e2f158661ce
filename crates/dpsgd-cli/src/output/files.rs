//! Writing a command's files: atomically and owner-only
//! ([`write_atomically`]), `--report`'s target ([`ReportTarget`]), and the
//! checks that an output path (or the checkpoint folder) can be used,
//! made before any data is read.

use crate::error;
use anyhow::{Context, Result};
use dpsgd_burn::io::{Descriptor, Destination, FolderLock};
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
/// output is `--report`'s), a directory, a path in a missing directory,
/// and one in a folder where no file can be created (read-only: a probe
/// file is created and removed in the folder of the file a symbolic link
/// leads to, where it is replaced); a descriptor open for reading only
/// (`/dev/stdin` redirected from a file).
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
    check_writable(path).map_err(refuse)?;
    Ok(())
}

/// Where `path` leads ([`dpsgd_burn::io::check_writable`]), checked to be
/// writable before any work: not a directory, in an existing folder where
/// a file can be created (for a regular file, a probe file is created and
/// removed in its folder), not a descriptor open for reading only.
///
/// # Errors
///
/// Why not, in words.
fn check_writable(path: &Path) -> Result<Destination, String> {
    if path.is_dir() {
        return Err("it is a directory".into());
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
            return Err(format!("{} is not a directory", d.display()));
        }
        _ => {}
    }
    dpsgd_burn::io::check_writable(path).map_err(|e| with_causes(&e))
}

/// `error` and each of its causes, joined with `: ` (for a one-line
/// [`error::UsageError`] message).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
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
    /// `-`, `/dev/stdout`, or another name of this process's standard
    /// output (`/dev/fd/1`, `/proc/self/fd/1`).
    Stdout,
    /// An existing path that is not a regular file (a device, a pipe, an
    /// inherited stream such as `/dev/stderr`, or a symbolic link to one):
    /// written in place, appended to, never truncated or replaced.
    InPlace(PathBuf),
    /// A regular file (or a symbolic link to one, kept), replaced
    /// atomically.
    File(PathBuf),
}

impl ReportTarget {
    /// Where `path` leads, checked to be writable: for a regular file
    /// (through its links), a probe file is created and removed in its
    /// folder.
    ///
    /// # Errors
    ///
    /// [`error::UsageError`] for `--report` naming `path`: a directory, a
    /// missing or read-only directory, a descriptor open for reading only.
    pub fn check(path: &Path) -> Result<Self, error::UsageError> {
        if path == Path::new("-") || path == Path::new("/dev/stdout") {
            return Ok(Self::Stdout);
        }
        let refuse = |why: String| error::UsageError {
            flag: "--report",
            message: format!("cannot write {}: {why}", path.display()),
        };
        Ok(match check_writable(path).map_err(refuse)? {
            Destination::Descriptor {
                descriptor: Descriptor { fd: 1, own: true },
                ..
            } => Self::Stdout,
            Destination::Descriptor { .. } | Destination::Special(_) => {
                Self::InPlace(path.to_path_buf())
            }
            Destination::File { .. } => Self::File(path.to_path_buf()),
        })
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
            // One writer for both: it appends to devices and streams and
            // replaces a regular file (behind its links) atomically.
            Self::InPlace(path) | Self::File(path) => write_atomically(path, &format!("{text}\n")),
        }
    }
}

/// Writes `text` to `path` atomically (see
/// [`dpsgd_burn::io::write_atomically`]: a synced temporary file renamed
/// over the file `path` leads to, its symbolic links kept; a device or an
/// inherited stream appended to, never truncated or replaced), so a crash
/// or a full disk never leaves a half-written file, readable by
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
