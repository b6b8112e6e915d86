//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod core_target;
pub mod model;
pub mod skip;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clusterfs::block::{BlockDevice, FileDevice, MemDevice};
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

/// A 64 MiB volume in memory made by our mkfs with `journals` 8 MiB
/// journals (several nodes' mounts in one test).
pub fn journaled_volume(journals: u32) -> MemDevice {
    let mem = MemDevice::new(64 << 20);
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        journals,
        journal_mb: Some(8),
        bsize: 4096,
        rg_mb: 32,
        ..Default::default()
    };
    mkfs(&mem, &opts, &mut |_, _, _| {}).unwrap();
    mem
}

/// A device that counts the writes and the flushes that reach `inner`.
pub struct Counting {
    inner: Arc<dyn BlockDevice>,
    writes: AtomicUsize,
    flushes: AtomicUsize,
}

impl Counting {
    /// Counts what reaches `inner`.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            writes: AtomicUsize::new(0),
            flushes: AtomicUsize::new(0),
        })
    }

    /// Writes so far.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Flushes so far.
    pub fn flushes(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }
}

impl BlockDevice for Counting {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> clusterfs::block::Result<()> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> clusterfs::block::Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write_at(offset, buf)
    }

    fn flush(&self) -> clusterfs::block::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.inner.flush()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }
}
