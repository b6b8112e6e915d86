//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod core_target;
pub mod model;
pub mod skip;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use clusterfs::block::FileDevice;
use clusterfs::fs::FileSystem;
use clusterfs::lock::LocalLocks;
use clusterfs::mkfs::{mkfs, LockProto, MkfsOptions};

/// True when `prog` is on PATH. Every caller skips what needs `prog` when
/// it is missing, so a missing one is recorded as a skip (and fails the
/// test when `CI` is set): see [`skip::skip`].
#[track_caller]
pub fn have(prog: &str) -> bool {
    skip::require(prog)
}

/// Runs `fsck.gfs2 FLAG path`: (exit code, stdout and stderr).
fn run_fsck(flag: &str, path: &Path) -> (Option<i32>, String) {
    let out = Command::new("fsck.gfs2")
        .arg(flag)
        .arg(path)
        .output()
        .expect("run fsck.gfs2");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Runs `fsck.gfs2 -n`; (clean, output).
pub fn fsck(path: &Path) -> (bool, String) {
    let (code, text) = run_fsck("-n", path);
    (code == Some(0), text)
}

/// Runs `fsck.gfs2 -y` (which replays the journals) and returns its
/// output; fails unless it exits 0 or 1 (errors corrected).
pub fn fsck_repair(path: &Path) -> String {
    let (code, text) = run_fsck("-y", path);
    assert!(code.unwrap_or(8) <= 1, "fsck.gfs2 -y failed:\n{text}");
    text
}

/// Asserts fsck.gfs2 -n finds nothing (a recorded skip when it is not
/// installed).
pub fn assert_fsck_clean(path: &Path) {
    if !have("fsck.gfs2") {
        return;
    }
    let (ok, text) = fsck(path);
    assert!(ok, "fsck.gfs2 -n is not clean:\n{text}");
}

/// A sparse image file made by our mkfs.
pub fn image(size_mb: u64, bsize: u32) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size_mb << 20).unwrap();
    let dev = FileDevice::open(f.path()).unwrap();
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        bsize,
        rg_mb: 32,
        ..Default::default()
    };
    mkfs(&dev, &opts, &mut |_, _, _| {}).unwrap();
    f
}

/// Mounts an image file.
pub fn mount(path: &Path) -> FileSystem {
    let dev = Arc::new(FileDevice::open(path).unwrap());
    FileSystem::mount(dev, Arc::new(LocalLocks)).unwrap().0
}
