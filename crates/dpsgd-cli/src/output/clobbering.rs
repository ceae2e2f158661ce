//! Checks of a command's outputs before any work (issue 26): an output
//! must not replace one of the run's inputs (the data set, the scaling
//! reference, the schema, a checkpoint being resumed) nor another of its
//! outputs, and an output folder must be one. Each refusal is a
//! [`UsageError`] (exit 2) naming the flags involved, found before any
//! data is read or model trained.

use crate::error::UsageError;
use crate::output::files::with_causes;
use dpsgd_burn::io::Destination;
use std::path::{Component, Path, PathBuf};

/// A flag and the path it names (an input or an output). A file that a
/// command writes inside its `--out` folder is named by `--out`.
pub type Named = (&'static str, PathBuf);

/// The file a path names, with every existing folder on its way resolved
/// (symbolic links, `.`, `..`): two spellings of one file compare equal,
/// even inside a folder that the command has yet to create; a symbolic
/// link, dangling or not, names the file it leads to (where a write
/// lands, [`dpsgd_burn::io::destination`]). `None` for standard output
/// (`-`, `/dev/stdout`) or a path that cannot be resolved (no current
/// directory).
pub fn resolved(path: &Path) -> Option<PathBuf> {
    if path == Path::new("-") || path == Path::new("/dev/stdout") {
        return None;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        && let Ok(Destination::File { path: file, .. }) = dpsgd_burn::io::destination(path)
    {
        return Some(file);
    }
    // The longest existing ancestor, resolved, then the rest as written
    // (a folder yet to be created is no symbolic link).
    let parts: Vec<Component> = path.components().collect();
    for k in (0..=parts.len()).rev() {
        let prefix: PathBuf = parts[..k].iter().collect();
        let prefix = if prefix.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            prefix
        };
        if let Ok(mut out) = prefix.canonicalize() {
            for c in &parts[k..] {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    c => out.push(c.as_os_str()),
                }
            }
            return Some(out);
        }
    }
    None
}

/// The `(flag, path)` pairs of the outputs that were given.
pub fn given<'a>(
    outputs: impl IntoIterator<Item = (&'static str, Option<&'a PathBuf>)>,
) -> Vec<Named> {
    outputs
        .into_iter()
        .filter_map(|(flag, p)| Some((flag, p?.clone())))
        .collect()
}

/// The files `names` that a command writes in its output folder `dir`
/// (given as `flag`), each named by `flag`.
pub fn in_folder(flag: &'static str, dir: &Path, names: &[&str]) -> Vec<Named> {
    names.iter().map(|n| (flag, dir.join(n))).collect()
}

/// Refuses, before any work, an output that would replace an input or
/// another output: each of `outputs` is compared with every input and
/// every output before it, both by path (resolved with [`resolved`], so
/// that two spellings of one file clash) and, for files that exist, by
/// the file itself ([`identity`]: device and inode, every symbolic link
/// followed, so that a link to a hard link of an input clashes too).
/// Standard output (`-`) clashes with nothing. Put the files written
/// inside an output folder first, so that a file flag colliding with one
/// of them is the one named as the culprit.
///
/// # Errors
///
/// A [`UsageError`] for the first clashing output's flag, naming its path
/// and the other flag: "PATH would overwrite --dataset" for an input, "PATH
/// is also written by --out" for an output.
pub fn check_no_clobbering(inputs: &[Named], outputs: &[Named]) -> Result<(), UsageError> {
    type Seen<'a> = (&'a str, Option<PathBuf>, Option<FileId>);
    let seen = |p: &Path| (resolved(p), identity(p));
    let inputs: Vec<Seen> = inputs
        .iter()
        .map(|(f, p)| {
            let (path, id) = seen(p);
            (*f, path, id)
        })
        .collect();
    let mut earlier: Vec<Seen> = Vec::new();
    for (flag, path) in outputs {
        let (target, id) = seen(path);
        let same = |(_, other, other_id): &&Seen| {
            (target.is_some() && *other == target) || (id.is_some() && *other_id == id)
        };
        let clash = inputs
            .iter()
            .find(same)
            .map(|(f, ..)| (f, "would overwrite"))
            .or_else(|| {
                earlier
                    .iter()
                    .find(same)
                    .map(|(f, ..)| (f, "is also written by"))
            });
        if let Some((other_flag, what)) = clash {
            return Err(UsageError {
                flag,
                message: format!("{} {what} {other_flag}: give another path", path.display()),
            });
        }
        earlier.push((flag, target, id));
    }
    Ok(())
}

/// One file: its device and inode numbers.
type FileId = (u64, u64);

/// The regular file `path` leads to, every symbolic link followed: its
/// device and inode, which hard links share. `None` for a path that does
/// not exist or is not a regular file (a device, a pipe: writing one
/// replaces nothing), for standard output (`-`) and the other inherited
/// streams (`/dev/stderr`, `/dev/fd/N`: appended to, never replaced, and
/// compared by the file they were opened on, [`resolved`]), and off Unix.
fn identity(path: &Path) -> Option<FileId> {
    if path == Path::new("-")
        || matches!(
            dpsgd_burn::io::destination(path),
            Ok(Destination::Descriptor { .. })
        )
    {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        meta.is_file().then(|| (meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Refuses, before any work, an output folder `flag` cannot be: `-`
/// (standard output is `--report`'s), an existing file, a path under a
/// file; a folder in which one of the files `names` the command writes
/// there is a folder; and a folder where those files cannot be created
/// (read-only), or a missing one that cannot be created (its nearest
/// existing ancestor read-only): a probe file is created and removed. A
/// missing folder is fine otherwise (it is created).
///
/// # Errors
///
/// [`UsageError`] naming `flag` and the path.
pub fn check_output_folder(
    flag: &'static str,
    dir: &Path,
    names: &[&str],
) -> Result<(), UsageError> {
    let refuse = |path: &Path, why: String| UsageError {
        flag,
        message: format!("cannot write {}: {why}", path.display()),
    };
    if dir == Path::new("-") {
        return Err(refuse(
            dir,
            "`-` is not a folder (only --report writes to standard output)".into(),
        ));
    }
    // The nearest existing ancestor must be a folder.
    let existing = dir
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_ok());
    if let Some(a) = existing
        && !a.is_dir()
    {
        let why = if a == dir {
            "it is not a folder".to_owned()
        } else {
            format!("{} is not a folder", a.display())
        };
        return Err(refuse(dir, why));
    }
    for name in names {
        let file = dir.join(name);
        if file.is_dir() {
            return Err(refuse(&file, "it is a directory".into()));
        }
    }
    // Files can be created where they go: in the folder (or, where a
    // file there is a symbolic link, the folder of the file it leads to),
    // or, for a folder yet to be created, in its nearest existing
    // ancestor (a probe file created and removed).
    match existing {
        Some(a) if a == dir => {
            for name in names {
                let file = dir.join(name);
                dpsgd_burn::io::check_writable(&file)
                    .map_err(|e| refuse(&file, with_causes(&e)))?;
            }
        }
        _ => {
            let ancestor = existing.unwrap_or(Path::new("."));
            dpsgd_burn::io::check_folder_writable(ancestor)
                .map_err(|e| refuse(dir, format!("cannot create it: {}", with_causes(&e))))?;
        }
    }
    Ok(())
}

/// The file `path` names, its folder resolved (links, `..`), so that two
/// spellings of one file compare equal; `None` where its folder does not
/// exist (then it is no input either). (`report`'s check: unlike
/// [`resolved`], the folder must exist.)
fn existing(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(path.file_name()?))
}

/// Whether `a` and `b` are one file: one resolved path, or one inode (a
/// hard link).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if existing(a).is_some_and(|x| Some(x) == existing(b)) {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dpsgd-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.canonicalize().unwrap()
    }

    #[test]
    fn should_resolve_paths_inside_folders_yet_to_be_created() {
        let dir = scratch("resolve");
        let a = resolved(&dir.join("new/sub/../f.json")).unwrap();
        assert_eq!(a, dir.join("new/f.json"));
        assert_eq!(resolved(&dir.join("./new/f.json")).unwrap(), a);
        assert_eq!(resolved(Path::new("-")), None);
        std::fs::write(dir.join("x"), "").unwrap();
        assert_eq!(resolved(&dir.join("new/../x")).unwrap(), dir.join("x"));
    }

    #[test]
    fn should_name_both_flags_of_a_clash() {
        let dir = scratch("clash");
        let data = dir.join("d.csv");
        std::fs::write(&data, "a").unwrap();
        let inputs = vec![("--dataset", data.clone())];
        let e = check_no_clobbering(&inputs, &[("--html", dir.join("./d.csv"))]).unwrap_err();
        assert_eq!(e.flag, "--html");
        assert!(
            e.message.contains("would overwrite --dataset"),
            "{}",
            e.message
        );
        let outs = [
            ("--out", dir.join("out/audit.json")),
            ("--report", dir.join("out/audit.json")),
        ];
        let e = check_no_clobbering(&inputs, &outs).unwrap_err();
        assert_eq!(e.flag, "--report");
        assert!(
            e.message.contains("is also written by --out"),
            "{}",
            e.message
        );
        let fine = [
            ("--report", PathBuf::from("-")),
            ("--html", PathBuf::from("-")),
        ];
        assert!(check_no_clobbering(&inputs, &fine).is_ok());
    }

    #[test]
    fn should_refuse_a_file_as_an_output_folder() {
        let dir = scratch("folder");
        let file = dir.join("f");
        std::fs::write(&file, "").unwrap();
        assert!(check_output_folder("--out", &dir.join("new/deeper"), &["a"]).is_ok());
        assert!(check_output_folder("--out", &file, &["a"]).is_err());
        assert!(check_output_folder("--out", &file.join("sub"), &["a"]).is_err());
        assert!(check_output_folder("--out", Path::new("-"), &["a"]).is_err());
        std::fs::create_dir_all(dir.join("a")).unwrap();
        assert!(check_output_folder("--out", &dir, &["a"]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn should_refuse_a_link_to_a_hard_link_of_an_input() {
        let dir = scratch("hard-link");
        let data = dir.join("data.csv");
        std::fs::write(&data, "a").unwrap();
        std::fs::hard_link(&data, dir.join("data-hl.csv")).unwrap();
        std::os::unix::fs::symlink("data-hl.csv", dir.join("out.json")).unwrap();
        let inputs = vec![("--dataset", data.clone())];
        let e = check_no_clobbering(&inputs, &[("--report", dir.join("out.json"))]).unwrap_err();
        assert_eq!(e.flag, "--report");
        assert!(
            e.message.contains("would overwrite --dataset"),
            "{}",
            e.message
        );
        // Two outputs that are one file under two names.
        std::fs::write(dir.join("a.json"), "").unwrap();
        std::fs::hard_link(dir.join("a.json"), dir.join("b.html")).unwrap();
        let outs = [
            ("--report", dir.join("a.json")),
            ("--html", dir.join("b.html")),
        ];
        let e = check_no_clobbering(&inputs, &outs).unwrap_err();
        assert_eq!(e.flag, "--html");
        assert!(
            e.message.contains("is also written by --report"),
            "{}",
            e.message
        );
        // Two dangling links to one file-to-be.
        std::os::unix::fs::symlink("new.json", dir.join("l1")).unwrap();
        std::os::unix::fs::symlink("new.json", dir.join("l2")).unwrap();
        let outs = [("--report", dir.join("l1")), ("--html", dir.join("l2"))];
        let e = check_no_clobbering(&inputs, &outs).unwrap_err();
        assert!(
            e.message.contains("is also written by --report"),
            "{}",
            e.message
        );
        // Devices clash with nothing by identity.
        let outs = [
            ("--report", PathBuf::from("/dev/null")),
            ("--html", dir.join("c.html")),
        ];
        assert!(check_no_clobbering(&inputs, &outs).is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn should_refuse_an_output_folder_no_file_can_be_created_in() {
        // /proc: no file can be created there, even by root.
        let e = check_output_folder("--out", Path::new("/proc/dpsgd-out"), &["a"]).unwrap_err();
        assert_eq!(e.flag, "--out");
        assert!(
            e.message
                .contains("cannot create it: no file can be created in /proc: "),
            "{}",
            e.message
        );
        assert!(check_output_folder("--out", Path::new("/proc/self/fdinfo"), &["a"]).is_err());
        // A writable one is fine, and is left as it was.
        let dir = scratch("writable");
        assert!(check_output_folder("--out", &dir, &["a", "b"]).is_ok());
        assert!(check_output_folder("--out", &dir.join("new"), &["a"]).is_ok());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "a probe is left"
        );
    }
}
