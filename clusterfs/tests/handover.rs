//! Two mounts of one volume alive at once (jid 0 and 1), handing it over
//! by hand the way glocks will: the node giving it up syncs for the demote
//! and drops its caches, the node taking it drops what it had cached; and
//! a failed node's journal recovered by a live mount (lock_dlm's recovery
//! after fencing) brings back exactly what it had committed.

mod common;

use std::sync::Arc;

use clusterfs::block::{BlockDevice, MemDevice};
use clusterfs::fs::FileSystem;
use clusterfs::lock::LocalLocks;
use clusterfs::volume::{MountParams, Recovery};
use common::assert_fsck_clean;

fn volume() -> Arc<MemDevice> {
    Arc::new(common::journaled_volume(2))
}

fn mount(dev: &Arc<dyn BlockDevice>, jid: u32) -> FileSystem {
    FileSystem::mount_with(
        Arc::clone(dev),
        Arc::new(LocalLocks),
        MountParams::node(jid, Recovery::Own),
    )
    .unwrap_or_else(|e| panic!("mount jid {jid}: {e}"))
    .0
}

/// `from` gives the volume up (go_sync, go_inval); `to` takes it, dropping
/// what it may have cached while it did not hold it.
fn hand_over(from: &mut FileSystem, to: &mut FileSystem) {
    from.sync_for_demote().unwrap();
    from.drop_caches().unwrap();
    to.drop_caches().unwrap();
}

fn names(fs: &mut FileSystem) -> Vec<String> {
    let root = fs.root();
    let mut v: Vec<String> = fs
        .readdir(root, 0, 1000)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    v.sort();
    v
}

fn fsck(mem: &MemDevice) {
    let img = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(img.path(), mem.snapshot()).unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn two_live_mounts_see_each_others_changes_after_a_handover() {
    let mem = volume();
    let dev: Arc<dyn BlockDevice> = mem.clone();
    let mut a = mount(&dev, 0);
    let mut b = mount(&dev, 1);
    // B looks first, so it has the root directory cached.
    assert!(names(&mut b).is_empty());
    hand_over(&mut b, &mut a);
    let root = a.root();
    let f = a.mknod(root, b"from-a", 0o644, 0, 0, 0).unwrap().ino;
    a.write(f, 0, b"written by a").unwrap();
    hand_over(&mut a, &mut b);
    assert_eq!(names(&mut b), vec!["from-a"]);
    let fb = b.lookup(root, b"from-a").unwrap().ino;
    assert_eq!(b.read(fb, 0, 100).unwrap(), b"written by a");
    b.write(fb, 0, b"WRITTEN").unwrap();
    b.mknod(root, b"from-b", 0o644, 0, 0, 0).unwrap();
    hand_over(&mut b, &mut a);
    assert_eq!(names(&mut a), vec!["from-a", "from-b"]);
    assert_eq!(a.read(f, 0, 100).unwrap(), b"WRITTEN by a");
    a.unlink(root, b"from-b").unwrap();
    hand_over(&mut a, &mut b);
    assert_eq!(names(&mut b), vec!["from-a"]);
    b.unmount().unwrap();
    a.unmount().unwrap();
    fsck(&mem);
}

/// A glock given up from SH drops the node's clean cached blocks but must
/// keep its changes not yet synced (made under another glock it still
/// holds in EX): they are neither lost nor reread stale from the disk.
#[test]
fn a_cache_drop_keeps_changes_not_synced() {
    let mem = volume();
    let dev: Arc<dyn BlockDevice> = mem.clone();
    let mut a = mount(&dev, 0);
    let root = a.root();
    let f = a.mknod(root, b"x", 0o644, 0, 0, 0).unwrap().ino;
    a.write(f, 0, b"kept").unwrap();
    a.drop_caches().unwrap();
    assert_eq!(a.lookup(root, b"x").unwrap().ino, f);
    assert_eq!(a.read(f, 0, 10).unwrap(), b"kept");
    a.sync_for_demote().unwrap();
    a.drop_caches().unwrap();
    let mut b = mount(&dev, 1);
    assert_eq!(b.read(f, 0, 10).unwrap(), b"kept");
    b.unmount().unwrap();
    a.unmount().unwrap();
    fsck(&mem);
}

#[test]
fn a_live_mount_recovers_a_failed_nodes_journal() {
    let mem = volume();
    let dev: Arc<dyn BlockDevice> = mem.clone();
    let mut a = mount(&dev, 0);
    let mut b = mount(&dev, 1);
    let root = b.root();
    let f = b.mknod(root, b"kept", 0o644, 0, 0, 0).unwrap().ino;
    b.write(f, 0, b"b's fsync'd data").unwrap();
    b.sync().unwrap();
    // B dies without unmounting: its journal is dirty.
    drop(b);
    // Fenced; A takes B's journal glock and replays it (nothing of A's is
    // lost: A syncs first).
    a.drop_caches().unwrap();
    let replayed = a.recover_journal(1).unwrap();
    assert!(replayed > 0, "nothing replayed from a dirty journal");
    assert!(a.recover_journal(0).is_err(), "recovered its own journal");
    assert_eq!(names(&mut a), vec!["kept"]);
    let fa = a.lookup(root, b"kept").unwrap().ino;
    assert_eq!(a.read(fa, 0, 100).unwrap(), b"b's fsync'd data");
    // Clean now: a second recovery replays nothing.
    assert_eq!(a.recover_journal(1).unwrap(), 0);
    a.unmount().unwrap();
    fsck(&mem);
}
