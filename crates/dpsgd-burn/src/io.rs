//! Atomic file writes, used for checkpoints and reports: a crash or a full
//! disk never leaves a half-written file at the destination.

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

/// The temporary file [`write_atomically`] writes `path` through: the same
/// name with `.dpsgd-tmp` appended, in the same directory.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map_or_else(OsString::new, OsString::from);
    name.push(".dpsgd-tmp");
    path.with_file_name(name)
}

/// Writes `contents` to `path` atomically: into [`temporary_path`], synced
/// to disk, renamed over `path`, and the directory synced (so the rename
/// itself survives a crash). The temporary file is removed on failure.
///
/// # Errors
///
/// The I/O error of creating, writing, syncing or renaming the file (a
/// missing directory, no permission, a full disk).
pub fn write_atomically(path: &Path, contents: &[u8], access: Access) -> std::io::Result<()> {
    let tmp = temporary_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = create(&tmp, access)?;
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

fn create(path: &Path, access: Access) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if access == Access::OwnerOnly {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let f = options.open(path)?;
        // A file left over from an earlier attempt keeps its old mode.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        return Ok(f);
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
        assert!(!temporary_path(&path).exists());
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
}
