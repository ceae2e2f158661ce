//! Atomic file writes, used for checkpoints and reports: a crash or a full
//! disk never leaves a half-written file at the destination, and a
//! symbolic link or device given as the destination is written through,
//! never replaced.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Who may read a file written by [`write_atomically`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The process's default (umask) permissions.
    Default,
    /// The owner only (mode 0600 on Unix): for secrets such as checkpoints.
    OwnerOnly,
}

/// A fresh candidate for the temporary file [`write_atomically`] writes
/// `path` through: in the same directory, hidden, with an unpredictable
/// part (from `rand`'s thread generator, seeded by the operating system),
/// so that no one can plant a file or symbolic link at the name in
/// advance (and [`write_atomically`] creates it exclusively regardless):
/// `.<name>.<16 hex digits>.dpsgd-tmp`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "dpsgd".as_ref()));
    name.push(format!(".{:016x}.dpsgd-tmp", rand::random::<u64>()));
    path.with_file_name(name)
}

/// Writes `contents` to `path` without ever destroying what is there.
///
/// A regular file (or a missing one) is replaced atomically: `contents` go
/// to a new file created exclusively at a fresh [`temporary_path`] (never
/// through an existing file or symbolic link there), synced to disk,
/// renamed over `path`, and the directory synced (so the rename itself
/// survives a crash); the temporary file is removed on failure.
///
/// Anything else already at `path` (a symbolic link, a device such as
/// `/dev/null`, a pipe) is written through in place, never replaced: the
/// link's target or the device receives `contents`, and its errors (such
/// as "no space left on device" from `/dev/full`) are returned. `access`
/// then applies to nothing: the existing file keeps its permissions.
///
/// # Errors
///
/// The I/O error of creating, writing, syncing or renaming the file (a
/// missing directory, no permission, a full disk), or of writing through
/// the link or device.
pub fn write_atomically(path: &Path, contents: &[u8], access: Access) -> std::io::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
        && !meta.is_dir()
    {
        return write_in_place(path, contents);
    }
    let (mut f, tmp) = create_temporary(path, access)?;
    let write = || -> std::io::Result<()> {
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_directory(path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes `contents` through the existing symbolic link or special file
/// at `path` (truncating a regular file it leads to), without creating
/// anything: a dangling link is an error.
fn write_in_place(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(contents)?;
    f.flush()?;
    // Devices and pipes cannot be synced; a regular file behind a link can.
    if f.metadata()?.is_file() {
        f.sync_all()?;
    }
    Ok(())
}

/// Creates a new temporary file for `path`, exclusively (failing rather
/// than opening an existing file or following a symbolic link), with the
/// permissions of `access`; retries a few fresh names should one exist.
fn create_temporary(path: &Path, access: Access) -> std::io::Result<(File, PathBuf)> {
    let mut attempt = 0;
    loop {
        let tmp = temporary_path(path);
        match create(&tmp, access) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn create(path: &Path, access: Access) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if access == Access::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = access;
    options.open(path)
}

/// Syncs the directory holding `path` (Unix; elsewhere a directory cannot
/// be opened for syncing, and the rename is left to the file system).
fn sync_directory(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Removes the temporary files [`write_atomically`] left beside `path`
/// when a process died between creating and renaming one (they match
/// [`temporary_path`]'s pattern). Call it only while no other process can
/// be writing `path` (under a [`FolderLock`]); links are removed, never
/// followed. Returns how many were removed.
///
/// # Errors
///
/// The folder cannot be listed, or a temporary file cannot be removed.
pub fn remove_stale_temporaries(path: &Path) -> std::io::Result<usize> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(0);
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.");
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".dpsgd-tmp"))
        else {
            continue;
        };
        // Only files (and links) of ours: a folder of that name is left.
        if rest.len() == 16
            && rest.bytes().all(|b| b.is_ascii_hexdigit())
            && !entry.file_type()?.is_dir()
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// An exclusive lock on a folder (an advisory lock on its file
/// [`FolderLock::FILE`], released when the value is dropped or the
/// process ends, `kill -9` included).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// The lock file's name inside the folder.
    pub const FILE: &'static str = ".dpsgd-lock";

    /// Takes the lock on `dir` (which must exist) without waiting:
    /// `Ok(None)` when another process (or another lock in this one)
    /// holds it.
    ///
    /// # Errors
    ///
    /// The lock file cannot be opened or created (a missing or read-only
    /// folder), is not a regular file, or the file system has no locks.
    pub fn try_lock(dir: &Path) -> std::io::Result<Option<Self>> {
        let path = dir.join(Self::FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Never through a planted link; owner only, like the checkpoint.
            options.custom_flags(libc::O_NOFOLLOW).mode(0o600);
        }
        let file = options.open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_replace_the_file_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("dpsgd-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.json");
        write_atomically(&path, b"first", Access::Default).unwrap();
        write_atomically(&path, b"second", Access::OwnerOnly).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.json"], "a temporary file is left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A missing directory is an error, and leaves nothing behind.
        let missing = dir.join("missing").join("out.json");
        assert!(write_atomically(&missing, b"x", Access::Default).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh, empty folder for one test.
    #[cfg(unix)]
    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dpsgd-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[cfg(unix)]
    #[test]
    fn should_write_through_a_symbolic_link_and_keep_it() {
        let dir = fresh_dir("link");
        let target = dir.join("target.json");
        std::fs::write(&target, "old contents, longer than the new").unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, b"new", Access::OwnerOnly).unwrap();
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.file_type().is_symlink(), "the link was replaced");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn should_not_follow_a_link_at_the_old_temporary_name() {
        let dir = fresh_dir("planted");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("out.html");
        std::os::unix::fs::symlink(&victim, dir.join("out.html.dpsgd-tmp")).unwrap();
        write_atomically(&path, b"page", Access::Default).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"page");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        // Only the planted link is left besides the two files.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["out.html", "out.html.dpsgd-tmp", "victim"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The character device `1, minor` (3 is `/dev/null`, 7 `/dev/full`):
    /// a private node in `dir` where the system allows one (as root), so
    /// that a regression replaces that node and never the system's;
    /// `fallback` otherwise (which a user cannot replace).
    #[cfg(unix)]
    fn device(dir: &Path, minor: u32, fallback: &str) -> PathBuf {
        let node = dir.join(format!("device-{minor}"));
        let made = std::process::Command::new("mknod")
            .args([node.to_str().unwrap(), "c", "1", &minor.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if made { node } else { PathBuf::from(fallback) }
    }

    #[cfg(unix)]
    #[test]
    fn should_write_to_a_device_in_place_and_report_its_errors() {
        use std::os::unix::fs::FileTypeExt;
        let dir = fresh_dir("devices");
        let is_device = |p: &Path| {
            std::fs::symlink_metadata(p)
                .unwrap()
                .file_type()
                .is_char_device()
        };
        // A null device takes the write and stays a device.
        let null = device(&dir, 3, "/dev/null");
        write_atomically(&null, b"x", Access::OwnerOnly).unwrap();
        assert!(is_device(&null), "{null:?} was replaced");
        // A full device's error is returned, and it stays a device.
        let full = device(&dir, 7, "/dev/full");
        let err = write_atomically(&full, b"x", Access::Default).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "not ENOSPC: {err}");
        assert!(is_device(&full), "{full:?} was replaced");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
