//! Atomic file writes, used for checkpoints and reports: a crash or a full
//! disk never leaves a half-written file at the destination, a symbolic
//! link given as the destination is kept (the file it leads to is
//! replaced atomically), and a device, a pipe or an inherited stream
//! (`/dev/stderr`, `/dev/fd/N`) is written in place, appended to, never
//! replaced or truncated.

use std::ffi::{OsStr, OsString};
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

/// An open file descriptor that a path names through `/proc/PID/fd/N`
/// (Linux), where `/dev/fd/N`, `/proc/self/fd/N`, `/dev/stdout` and
/// `/dev/stderr` lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The descriptor's number.
    pub fd: u32,
    /// Whether it is one of this process's own descriptors (such as a
    /// standard stream it inherited), rather than another process's.
    pub own: bool,
}

/// Where [`write_atomically`] writes a path, every symbolic link on the
/// way followed (see [`destination`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An open file descriptor (`/dev/stderr`, `/dev/fd/N`,
    /// `/proc/self/fd/N`, or a link to one): written in place, at the end
    /// of what it holds, never truncated, so that a redirected stream (a
    /// `2>>log` or `2>log` file) keeps what is already there.
    Descriptor {
        /// Its name under `/proc` (`/proc/PID/fd/N`).
        path: PathBuf,
        /// Which descriptor.
        descriptor: Descriptor,
    },
    /// An existing file that is neither a regular file nor a folder (a
    /// device such as `/dev/null`, a named pipe, a socket): written in
    /// place, appended to, never truncated or replaced.
    Special(PathBuf),
    /// A regular file, existing or to be created, replaced atomically in
    /// its own folder.
    File {
        /// The file itself: every symbolic link on the way followed (a
        /// dangling link leads to the file it names), its folder resolved.
        path: PathBuf,
        /// Whether the path given was (or went through) a symbolic link:
        /// the file it leads to keeps its permission bits.
        through_link: bool,
    },
}

/// The most symbolic links followed for one path (Linux's limit).
const MAX_LINKS: usize = 40;

/// Where a write to `path` lands: each symbolic link on the way is
/// followed (from the folder holding it) until an inherited stream (a
/// name in a `/proc/PID/fd` folder, where `/dev/stderr` and `/dev/fd/N`
/// lead), a file that is not a link, or a missing name is reached.
///
/// # Errors
///
/// A folder on the way is missing or cannot be searched; `path` (or the
/// file a link leads to) is a folder; too many links.
pub fn destination(path: &Path) -> std::io::Result<Destination> {
    let mut current = path.to_path_buf();
    let mut through_link = false;
    for _ in 0..=MAX_LINKS {
        let Some(name) = current.file_name().map(OsStr::to_os_string) else {
            return Err(is_a_directory(&current));
        };
        let folder = match current.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let folder = folder.canonicalize()?;
        if let Some(descriptor) = descriptor_in(&folder, &name) {
            return Ok(Destination::Descriptor {
                path: folder.join(name),
                descriptor,
            });
        }
        let file = folder.join(&name);
        match std::fs::symlink_metadata(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Destination::File {
                    path: file,
                    through_link,
                });
            }
            Err(e) => return Err(e),
            Ok(meta) if meta.file_type().is_symlink() => {
                // A relative target is relative to the link's folder.
                current = folder.join(std::fs::read_link(&file)?);
                through_link = true;
            }
            Ok(meta) if meta.is_file() => {
                return Ok(Destination::File {
                    path: file,
                    through_link,
                });
            }
            Ok(meta) if meta.is_dir() => return Err(is_a_directory(&file)),
            Ok(_) => return Ok(Destination::Special(file)),
        }
    }
    Err(too_many_links(path))
}

/// The descriptor that `name` in the (resolved) folder `folder` is, when
/// that folder is a process's `/proc/PID/fd` (or a thread's
/// `/proc/PID/task/TID/fd`).
fn descriptor_in(folder: &Path, name: &OsStr) -> Option<Descriptor> {
    fn number(s: &OsStr) -> Option<u32> {
        let s = s.to_str()?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    let mut parts = folder.strip_prefix("/proc").ok()?.iter();
    let pid = number(parts.next()?)?;
    let rest: Vec<&OsStr> = parts.collect();
    let fd_folder = match rest.as_slice() {
        [fd] => *fd == "fd",
        [task, tid, fd] => *task == "task" && number(tid).is_some() && *fd == "fd",
        _ => false,
    };
    fd_folder.then_some(Descriptor {
        fd: number(name)?,
        own: pid == std::process::id(),
    })
}

fn is_a_directory(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::IsADirectory,
        format!("{} is a directory", path.display()),
    )
}

fn too_many_links(path: &Path) -> std::io::Error {
    std::io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    ))
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
/// Where `path` leads is found by [`destination`]:
///
/// - a regular file (or a missing one), whether named directly or through
///   symbolic links (a dangling link included), is replaced atomically in
///   its own folder: `contents` go to a new file created exclusively at a
///   fresh [`temporary_path`] beside it (never through an existing file or
///   symbolic link there), synced to disk, renamed over the file, and the
///   folder synced (so the rename itself survives a crash); the temporary
///   file is removed on failure, and the file is left as it was. The links
///   stay links; a file reached through one keeps its permission bits,
///   others get those of `access`;
/// - an inherited stream (`/dev/stdout`, `/dev/stderr`, `/dev/fd/N`,
///   `/proc/self/fd/N`, or a link to one), a device (`/dev/null`) or a
///   pipe is written in place, opened for appending and never truncated:
///   a file a stream is redirected to keeps what it holds, `contents` go
///   at its end. `access` then applies to nothing. A descriptor open for
///   reading only (an input, such as a `<` redirection) is refused.
///
/// # Errors
///
/// The I/O error of resolving `path` (a missing folder, a folder where
/// the file goes), of creating, writing, syncing or renaming the file (no
/// permission, a full disk, a file-size limit), or of writing to the
/// stream or device (such as "no space left on device" from `/dev/full`).
pub fn write_atomically(path: &Path, contents: &[u8], access: Access) -> std::io::Result<()> {
    match destination(path)? {
        Destination::File { path, through_link } => replace(&path, contents, access, through_link),
        Destination::Special(path) => write_in_place(&path, contents),
        Destination::Descriptor { path, descriptor } => {
            write_to_descriptor(&path, descriptor, contents)
        }
    }
}

/// Checks, before any work, that [`write_atomically`] can write `path`,
/// and says where it leads: for a regular file, a file is created (and
/// removed at once) at a fresh [`temporary_path`] in the file's own
/// folder; a descriptor open for reading only is refused. (A device or a
/// pipe is not opened: opening a pipe can wait for a reader.)
///
/// # Errors
///
/// As [`destination`]; [`FolderNotWritable`] (inside the I/O error) when
/// no file can be created in the folder (no permission, a read-only file
/// system); a descriptor open for reading only.
pub fn check_writable(path: &Path) -> std::io::Result<Destination> {
    let found = destination(path)?;
    match &found {
        Destination::File { path, .. } => probe(path)?,
        Destination::Descriptor { path, descriptor } => refuse_read_only(path, *descriptor)?,
        Destination::Special(_) => {}
    }
    Ok(found)
}

/// Checks, before any work, that files can be created in the existing
/// folder `dir`: one is created (and removed at once) at a fresh
/// [`temporary_path`] there.
///
/// # Errors
///
/// [`FolderNotWritable`] (inside the I/O error) with the error of creating
/// the file (no permission, a read-only file system, a missing folder).
pub fn check_folder_writable(dir: &Path) -> std::io::Result<()> {
    probe(&dir.join("dpsgd-probe"))
}

/// No file can be created in the folder a write goes to (found by
/// [`check_writable`] and [`check_folder_writable`]); carried inside the
/// [`std::io::Error`] they return, of the same kind as its source.
#[derive(Debug, thiserror::Error)]
#[error("no file can be created in {}", folder.display())]
pub struct FolderNotWritable {
    /// The folder.
    pub folder: PathBuf,
    /// Why (no permission, a read-only file system, a missing folder).
    #[source]
    pub source: std::io::Error,
}

/// Creates a temporary file for `path` in its folder and removes it.
fn probe(path: &Path) -> std::io::Result<()> {
    let (f, tmp) = create_temporary(path, Access::OwnerOnly).map_err(|source| {
        let folder = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::io::Error::new(source.kind(), FolderNotWritable { folder, source })
    })?;
    drop(f);
    // The probe is empty and ours; failing to remove it is harmless.
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// Replaces the regular file `path` (or creates it) atomically; a file
/// reached through a link (`keep_mode`) keeps its permission bits.
fn replace(path: &Path, contents: &[u8], access: Access, keep_mode: bool) -> std::io::Result<()> {
    let permissions = if keep_mode {
        std::fs::metadata(path).ok().map(|m| m.permissions())
    } else {
        None
    };
    let (mut f, tmp) = create_temporary(path, access)?;
    let write = || -> std::io::Result<()> {
        if let Some(permissions) = permissions {
            #[cfg(unix)]
            let permissions = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::Permissions::from_mode(permissions.mode() & 0o777)
            };
            f.set_permissions(permissions)?;
        }
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

/// Writes `contents` at the end of the existing device, pipe or stream at
/// `path`, opened for appending: never truncated, nothing created.
fn write_in_place(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    f.write_all(contents)?;
    f.flush()?;
    // Devices and pipes cannot be synced; a regular file behind a stream can.
    if f.metadata()?.is_file() {
        f.sync_all()?;
    }
    Ok(())
}

/// Writes `contents` to the open descriptor named `path` (under `/proc`):
/// reopened for appending; this process's standard output or error that
/// cannot be reopened by name (a socket) is written through directly.
fn write_to_descriptor(
    path: &Path,
    descriptor: Descriptor,
    contents: &[u8],
) -> std::io::Result<()> {
    refuse_read_only(path, descriptor)?;
    match write_in_place(path, contents) {
        #[cfg(unix)]
        Err(e) if descriptor.own && e.raw_os_error() == Some(libc::ENXIO) => match descriptor.fd {
            1 => {
                let mut out = std::io::stdout().lock();
                out.write_all(contents)?;
                out.flush()
            }
            2 => {
                let mut err = std::io::stderr().lock();
                err.write_all(contents)?;
                err.flush()
            }
            _ => Err(e),
        },
        result => result,
    }
}

/// Refuses a descriptor open for reading only (an input, such as a file
/// redirected with `<`): writing it would change a file given to be read.
/// Its flags are read from `/proc/PID/fdinfo/N`; nothing is refused where
/// they cannot be read.
fn refuse_read_only(path: &Path, descriptor: Descriptor) -> std::io::Result<()> {
    let Some(folder) = path.parent() else {
        return Ok(());
    };
    let info = folder
        .with_file_name("fdinfo")
        .join(descriptor.fd.to_string());
    let Ok(text) = std::fs::read_to_string(info) else {
        return Ok(());
    };
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
    // O_ACCMODE is 3, O_RDONLY 0 on Linux.
    if flags.is_some_and(|f| f & 3 == 0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is descriptor {}, open for reading only: an input, not written",
                path.display(),
                descriptor.fd
            ),
        ));
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

    /// Whether `path` is a symbolic link.
    #[cfg(unix)]
    fn is_link(path: &Path) -> bool {
        std::fs::symlink_metadata(path)
            .unwrap()
            .file_type()
            .is_symlink()
    }

    #[cfg(unix)]
    #[test]
    fn should_replace_the_file_behind_a_link_atomically_in_its_own_folder() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = fresh_dir("link-atomic");
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let target = elsewhere.join("target.json");
        std::fs::write(&target, "old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&target).unwrap().ino();
        // A chain of links, the last one relative to its own folder.
        let last = dir.join("last.json");
        std::os::unix::fs::symlink("elsewhere/target.json", &last).unwrap();
        let first = dir.join("first.json");
        std::os::unix::fs::symlink(&last, &first).unwrap();
        write_atomically(&first, b"new", Access::OwnerOnly).unwrap();
        assert!(is_link(&first) && is_link(&last), "a link was replaced");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let meta = std::fs::metadata(&target).unwrap();
        // Replaced by a rename (a new file), not rewritten in place.
        assert_ne!(meta.ino(), before, "the file was rewritten in place");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "its mode changed");
        // No temporary file is left in either folder.
        for folder in [&dir, &elsewhere] {
            let temporaries = std::fs::read_dir(folder)
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().ends_with(".dpsgd-tmp")
                })
                .count();
            assert_eq!(temporaries, 0, "a temporary file is left in {folder:?}");
        }
        // A dangling link leads to the file it names: created, the link kept.
        let dangling = dir.join("dangling.json");
        std::os::unix::fs::symlink("elsewhere/new.json", &dangling).unwrap();
        write_atomically(&dangling, b"fresh", Access::OwnerOnly).unwrap();
        assert!(is_link(&dangling));
        assert_eq!(std::fs::read(elsewhere.join("new.json")).unwrap(), b"fresh");
        // A link to a folder is refused, and leaves nothing there.
        let to_folder = dir.join("folder-link");
        std::os::unix::fs::symlink(&elsewhere, &to_folder).unwrap();
        let err = write_atomically(&to_folder, b"x", Access::Default).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::IsADirectory, "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Run by [`should_leave_the_file_behind_a_link_whole_when_a_write_fails`]
    /// in a child process under a file-size limit: the write through the
    /// link must fail.
    #[cfg(unix)]
    #[test]
    #[ignore = "run by should_leave_the_file_behind_a_link_whole_when_a_write_fails"]
    fn child_writing_through_a_link_under_a_file_size_limit() {
        let Some(link) = std::env::var_os("DPSGD_IO_TEST_LINK") else {
            return;
        };
        let big = vec![b'x'; 64 * 1024];
        let err = write_atomically(Path::new(&link), &big, Access::Default).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFBIG), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn should_leave_the_file_behind_a_link_whole_when_a_write_fails() {
        let dir = fresh_dir("link-limit");
        let good = dir.join("good.json");
        let contents = vec![b'g'; 300];
        std::fs::write(&good, &contents).unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        // This test binary again, running the child test above with
        // SIGXFSZ ignored and files limited to one block (512 bytes).
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 1 && exec \"$0\" --exact --ignored --test-threads 1 io::tests::child_writing_through_a_link_under_a_file_size_limit")
            .arg(std::env::current_exe().unwrap())
            .env("DPSGD_IO_TEST_LINK", &link)
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "the child test failed: {}",
            String::from_utf8_lossy(&child.stdout)
        );
        // It ran (a filter matching nothing passes too).
        assert!(
            String::from_utf8_lossy(&child.stdout).contains("1 passed"),
            "the child test did not run: {}",
            String::from_utf8_lossy(&child.stdout)
        );
        assert_eq!(
            std::fs::read(&good).unwrap(),
            contents,
            "the file was damaged"
        );
        assert!(is_link(&link));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 2, "a temporary file is left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn should_append_to_an_inherited_stream_and_never_truncate_it() {
        use std::os::fd::AsRawFd;
        let dir = fresh_dir("stream");
        let log = dir.join("run.log");
        std::fs::write(&log, "earlier lines\n").unwrap();
        // As `2>log` gives it: open for writing, at its start.
        let stream = OpenOptions::new().write(true).open(&log).unwrap();
        let fd = stream.as_raw_fd();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink(format!("/dev/fd/{fd}"), &link).unwrap();
        let names = [
            format!("/dev/fd/{fd}"),
            format!("/proc/self/fd/{fd}"),
            format!("/proc/{}/fd/{fd}", std::process::id()),
            link.display().to_string(),
        ];
        for name in &names {
            let found = destination(Path::new(name)).unwrap();
            assert!(
                matches!(found, Destination::Descriptor { descriptor, .. }
                    if descriptor == Descriptor { fd: fd as u32, own: true }),
                "{name}: {found:?}"
            );
            write_atomically(Path::new(name), b"[out]", Access::OwnerOnly).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier lines\n[out][out][out][out]"
        );
        assert!(is_link(&link), "the link was replaced");
        let stderr = destination(Path::new("/dev/stderr")).unwrap();
        assert!(
            matches!(stderr, Destination::Descriptor { descriptor, .. }
                if descriptor == Descriptor { fd: 2, own: true }),
            "{stderr:?}"
        );
        // A descriptor open for reading only is an input: refused, untouched.
        let input = File::open(&log).unwrap();
        let name = format!("/dev/fd/{}", input.as_raw_fd());
        let err = write_atomically(Path::new(&name), b"x", Access::Default).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        assert!(check_writable(Path::new(&name)).is_err());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier lines\n[out][out][out][out]"
        );
        drop((stream, input));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn should_probe_the_folder_a_write_would_go_to() {
        let dir = fresh_dir("probe");
        let path = dir.join("out.json");
        let found = check_writable(&path).unwrap();
        assert_eq!(
            found,
            Destination::File {
                path: dir.canonicalize().unwrap().join("out.json"),
                through_link: false
            }
        );
        check_folder_writable(&dir).unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "a probe is left"
        );
        // A folder no file can be created in (a read-only one; /proc even
        // for root), and a missing one.
        #[cfg(target_os = "linux")]
        {
            let err = check_writable(Path::new("/proc/dpsgd-probe.json")).unwrap_err();
            let inner = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<FolderNotWritable>());
            assert_eq!(
                inner.map(|e| e.folder.as_path()),
                Some(Path::new("/proc")),
                "{err}"
            );
            assert!(
                std::error::Error::source(&err).is_some(),
                "the cause is lost"
            );
            assert!(check_folder_writable(Path::new("/proc")).is_err());
        }
        assert!(check_writable(&dir.join("missing/out.json")).is_err());
        assert!(check_writable(&dir).is_err(), "a folder is no file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
