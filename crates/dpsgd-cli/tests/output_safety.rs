//! Outputs never destroy what is at their path (issue 26, item 1): a
//! device or a symbolic link given as an output is written through, never
//! replaced, and a symbolic link planted at a predictable temporary name
//! cannot redirect the write.
#![cfg(unix)]

mod common;

use common::quick_train;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = common::temp_dir("dpsgd-output-safety", name);
    // A leftover from an earlier run of the same process id.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .unwrap()
        .file_type()
        .is_symlink()
}

/// A device that behaves as `/dev/full` (every write fails with "no space
/// left on device"): a private node in `dir` where the system allows one
/// (as root), so that a regression replaces that node and not the
/// system's; `/dev/full` itself otherwise (a user cannot replace it).
fn full_device(dir: &Path) -> PathBuf {
    let node = dir.join("full");
    let made = std::process::Command::new("mknod")
        .args([node.to_str().unwrap(), "c", "1", "7"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        node
    } else {
        PathBuf::from("/dev/full")
    }
}

#[test]
fn should_write_through_a_full_device_and_fail() {
    let dir = temp_dir("full");
    let full = full_device(&dir);
    let out = quick_train(&dir, &["--html", full.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exited 0 writing to {full:?}");
    // The device's own error, not one of replacing it.
    assert!(
        stderr.contains("No space left on device"),
        "the write error is not the device's: {stderr}"
    );
    let meta = std::fs::symlink_metadata(&full).unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "{full:?} is no longer a character device: {meta:?}"
    );
}

#[test]
fn should_write_the_page_through_a_symbolic_link() {
    let dir = temp_dir("html-link");
    let target = dir.join("page-target.html");
    std::fs::write(&target, "old").unwrap();
    let link = dir.join("page.html");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = quick_train(&dir, &["--html", link.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_symlink(&link), "the link was replaced by a file");
    let page = std::fs::read_to_string(&target).unwrap();
    assert!(page.contains("<html"), "the target does not hold the page");
}

#[test]
fn should_save_the_model_through_a_symbolic_link() {
    let dir = temp_dir("model-link");
    let target = dir.join("model-target.bin");
    std::fs::write(&target, "old").unwrap();
    let link = dir.join("model.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = quick_train(&dir, &["--save-model", link.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_symlink(&link), "the link was replaced by a file");
    let saved = std::fs::read(&target).unwrap();
    assert!(saved.len() > 3, "the target does not hold the model");
}

#[test]
fn should_not_follow_a_link_planted_at_the_old_temporary_name() {
    let dir = temp_dir("planted");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let html = dir.join("page.html");
    let model = dir.join("model.bin");
    for out in [&html, &model] {
        let mut planted = out.as_os_str().to_owned();
        planted.push(".dpsgd-tmp");
        std::os::unix::fs::symlink(&victim, PathBuf::from(planted)).unwrap();
    }
    let out = quick_train(
        &dir,
        &[
            "--html",
            html.to_str().unwrap(),
            "--save-model",
            model.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::read_to_string(&html).unwrap().contains("<html"));
    assert!(std::fs::metadata(&model).unwrap().len() > 0);
    // No temporary file of ours is left behind.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".dpsgd-tmp") && n.starts_with('.'))
        .collect();
    names.sort();
    assert!(names.is_empty(), "temporary files left: {names:?}");
}
