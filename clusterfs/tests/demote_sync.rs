//! `sync_for_demote`, the filesystem's `go_sync`: before a glock goes to
//! another node, the running transaction is committed and the log is
//! emptied (a `GFS2_LOG_HEAD_FLUSH_NORMAL` header whose `lh_tail` is its
//! own block), so that recovering this node's journal after a crash never
//! writes its old copies over what the other node changed since.
//!
//! Two nodes (journals 0 and 1 of a volume made by our mkfs with two
//! journals), mounted one after the other on one device:
//! - node A commits a file, syncs for demote; node B rewrites that file's
//!   dinode and the root directory and unmounts; A crashes; recovering
//!   journal 0 keeps B's blocks. Without the sync, the same recovery brings
//!   A's old copies back (the bug this fixes);
//! - a second `sync_for_demote` with nothing dirty writes nothing, and the
//!   emptied log's header carries A's statfs deltas;
//! - `fsck.gfs2 -n` is clean after a sync then a clean unmount, and after a
//!   crash right after a sync.

mod common;

use std::sync::Arc;

use clusterfs::block::{BlockDevice, CrashDevice};
use clusterfs::fs::{FileSystem, Ino, SetAttr};
use clusterfs::journal::find_head;
use clusterfs::lock::LocalLocks;
use clusterfs::ondisk::{log_head, Dinode, LogHeader, StatfsChange};
use clusterfs::volume::{FsError, MountInfo, MountParams, Recovery};
use common::assert_fsck_clean;

const A: u32 = 0;
const B: u32 = 1;
const OLD: &[u8] = b"node A wrote this";
const NEW: &[u8] = b"B!";

/// A device holding a fresh volume made by our mkfs with two journals.
fn volume() -> Arc<CrashDevice> {
    let mem = common::journaled_volume(2);
    Arc::new(CrashDevice::from_bytes(mem.snapshot()))
}

fn mount(dev: &Arc<dyn BlockDevice>, jid: u32, recover: Recovery) -> (FileSystem, MountInfo) {
    FileSystem::mount_with(
        Arc::clone(dev),
        Arc::new(LocalLocks),
        MountParams::node(jid, recover),
    )
    .unwrap_or_else(|e| panic!("mount jid {jid}: {e}"))
}

/// Where a node's journal and statfs deltas live, found through a
/// spectator mount (which writes nothing).
struct Journal0 {
    bsize: u64,
    /// Journal 0's device blocks.
    blocks: Vec<u64>,
    /// `per_node/statfs_change0`.
    statfs_change: u64,
}

fn journal0(dev: &Arc<dyn BlockDevice>) -> Journal0 {
    let (mut fs, _) = FileSystem::mount_with(
        Arc::clone(dev),
        Arc::new(LocalLocks),
        MountParams::spectator(Recovery::Own),
    )
    .unwrap();
    let v = fs.volume();
    let master = v.sb.sb_master_dir.no_addr;
    let mut find = |dir: u64, name: &str| {
        v.dir_lookup(dir, name.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{name} missing"))
            .0
            .no_addr
    };
    let jindex = find(master, "jindex");
    let per_node = find(master, "per_node");
    let jinode = find(jindex, "journal0");
    let statfs_change = find(per_node, "statfs_change0");
    let j = Journal0 {
        bsize: u64::from(v.geo.bsize),
        blocks: v.file_block_map(jinode).unwrap(),
        statfs_change,
    };
    fs.unmount().unwrap();
    j
}

fn read_block(dev: &Arc<dyn BlockDevice>, bsize: u64, blk: u64) -> Vec<u8> {
    let mut b = vec![0u8; bsize as usize];
    dev.read_at(blk * bsize, &mut b).unwrap();
    b
}

/// Journal 0's head (the valid header with the highest sequence).
fn head(dev: &Arc<dyn BlockDevice>, j: &Journal0) -> LogHeader {
    let blocks: Vec<Vec<u8>> = j
        .blocks
        .iter()
        .map(|&b| read_block(dev, j.bsize, b))
        .collect();
    find_head((0u32..).zip(blocks.iter().map(Vec::as_slice))).expect("journal0 has a head")
}

/// Node A: a stuffed file `f` (its data lives in the dinode block) in the
/// root directory, committed.
fn node_a_writes(fs: &mut FileSystem) -> Ino {
    let f = fs.mknod(fs.root(), b"f", 0o644, 0, 0, 0).unwrap().ino;
    fs.write(f, 0, OLD).unwrap();
    fs.sync().unwrap();
    f
}

/// Node B: shrinks and rewrites `f` (its dinode block) and adds `g` to the
/// root directory (the root dinode block), then unmounts cleanly.
fn node_b_rewrites(dev: &Arc<dyn BlockDevice>) {
    let mut fs = mount(dev, B, Recovery::Own).0;
    let f = fs.lookup(fs.root(), b"f").unwrap().ino;
    let size = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(f, size).unwrap();
    fs.write(f, 0, NEW).unwrap();
    fs.mknod(fs.root(), b"g", 0o644, 0, 0, 0).unwrap();
    fs.unmount().unwrap();
}

/// What is on disk after node A crashed and journal 0 was recovered by a
/// recover-all mount: `f`'s contents and whether `g` exists.
fn after_recovery(dev: &Arc<dyn BlockDevice>) -> (Vec<u8>, bool) {
    let (mut fs, info) = mount(dev, B, Recovery::All);
    assert_eq!(info.recovered, vec![A], "journal 0 was dirty");
    let root = fs.root();
    let f = fs.lookup(root, b"f").unwrap().ino;
    let data = fs.read(f, 0, 4096).unwrap();
    let g = match fs.lookup(root, b"g") {
        Ok(_) => true,
        Err(FsError::NotFound) => false,
        Err(e) => panic!("lookup g: {e}"),
    };
    fs.unmount().unwrap();
    (data, g)
}

/// Node A commits `f` (and syncs for demote when `demote_sync`), node B
/// rewrites it, A crashes, journal 0 is recovered. Returns `f`'s
/// contents, whether `g` exists, and the device.
fn scenario(demote_sync: bool) -> (Vec<u8>, bool, Arc<CrashDevice>) {
    let crash = volume();
    let dev: Arc<dyn BlockDevice> = crash.clone();
    let mut a = mount(&dev, A, Recovery::Own).0;
    node_a_writes(&mut a);
    if demote_sync {
        a.sync_for_demote().unwrap();
    }
    node_b_rewrites(&dev);
    // A crashes: nothing unflushed survives, no unmount.
    crash.crash();
    drop(a);
    let (data, g) = after_recovery(&dev);
    (data, g, crash)
}

#[test]
fn recovery_after_demote_sync_keeps_the_other_nodes_changes() {
    let (data, g, crash) = scenario(true);
    assert_eq!(data, NEW, "B's rewrite of f survives A's recovery");
    assert!(g, "B's directory entry survives A's recovery");
    assert_eq!(crash.unflushed(), 0);
    fsck_durable(&crash);
}

/// The bug `sync_for_demote` fixes: A's last commit stays replayable, so
/// recovering A's journal writes A's old copies over B's newer blocks.
#[test]
fn recovery_without_demote_sync_brings_old_copies_back() {
    let (data, g, _) = scenario(false);
    assert_eq!(data, OLD, "A's old copy of f's dinode is replayed");
    assert!(!g, "A's old copy of the root directory is replayed");
}

/// A device that counts writes.
#[test]
fn demote_sync_with_nothing_to_do_writes_nothing() {
    let inner: Arc<dyn BlockDevice> = volume();
    let j = journal0(&inner);
    let counting = common::Counting::new(inner);
    let dev: Arc<dyn BlockDevice> = counting.clone();
    let mut a = mount(&dev, A, Recovery::Own).0;

    // Freshly mounted on a clean journal: the log is already empty.
    let n = counting.writes();
    a.sync_for_demote().unwrap();
    assert_eq!(counting.writes(), n, "clean log, nothing dirty: no write");

    node_a_writes(&mut a);
    let committed = head(&dev, &j);
    assert_ne!(
        committed.lh_tail, committed.lh_blkno,
        "a commit is replayable"
    );
    let n = counting.writes();
    a.sync_for_demote().unwrap();
    assert_eq!(counting.writes(), n + 1, "one lone header");

    let lh = head(&dev, &j);
    assert_eq!(lh.lh_sequence, committed.lh_sequence + 1);
    assert_eq!(lh.lh_flags, log_head::FLUSH_NORMAL);
    assert_eq!(lh.lh_tail, lh.lh_blkno, "tail == head: an empty log");
    assert_eq!(lh.lh_statfs_addr, j.statfs_change);
    let local =
        StatfsChange::decode(&read_block(&dev, j.bsize, j.statfs_change)[Dinode::SIZE..]).unwrap();
    assert_ne!(local, StatfsChange::default(), "A allocated blocks");
    assert_eq!(
        (lh.lh_local_total, lh.lh_local_free, lh.lh_local_dinodes),
        (local.sc_total, local.sc_free, local.sc_dinodes),
        "the header carries A's unfolded statfs deltas"
    );

    let n = counting.writes();
    a.sync_for_demote().unwrap();
    a.sync_for_demote().unwrap();
    assert_eq!(counting.writes(), n, "already empty: no write");
    assert_eq!(head(&dev, &j), lh);

    // Something dirty again: commit, then one more header.
    let f = a.lookup(a.root(), b"f").unwrap().ino;
    a.write(f, 0, NEW).unwrap();
    a.sync_for_demote().unwrap();
    let again = head(&dev, &j);
    assert_eq!(again.lh_tail, again.lh_blkno);
    assert_eq!(again.lh_sequence, lh.lh_sequence + 2, "commit, then header");
    a.unmount().unwrap();
}

/// `fsck.gfs2 -n` on the durable contents of `crash`.
fn fsck_durable(crash: &CrashDevice) {
    let img = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(img.path(), crash.durable_snapshot()).unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn fsck_clean_after_demote_sync_then_unmount() {
    let crash = volume();
    let dev: Arc<dyn BlockDevice> = crash.clone();
    let mut a = mount(&dev, A, Recovery::Own).0;
    node_a_writes(&mut a);
    a.sync_for_demote().unwrap();
    a.unmount().unwrap();
    fsck_durable(&crash);
}

/// A crash right after a sync: journal 0 is left dirty (no UNMOUNT
/// header) but its log is empty. A's file was created in an earlier,
/// cleanly unmounted session, so no statfs deltas are left unfolded and
/// `fsck.gfs2 -n` (which does not replay) has nothing to report.
#[test]
fn fsck_clean_after_crash_right_after_demote_sync() {
    let crash = volume();
    let dev: Arc<dyn BlockDevice> = crash.clone();
    let j = journal0(&dev);
    let mut a = mount(&dev, A, Recovery::Own).0;
    let f = a.mknod(a.root(), b"f", 0o644, 0, 0, 0).unwrap().ino;
    a.unmount().unwrap();

    let mut a = mount(&dev, A, Recovery::Own).0;
    a.write(f, 0, OLD).unwrap();
    a.sync_for_demote().unwrap();
    crash.crash();
    drop(a);
    let lh = head(&dev, &j);
    assert_eq!(lh.lh_flags, log_head::FLUSH_NORMAL, "journal 0 left dirty");
    assert_eq!(lh.lh_tail, lh.lh_blkno);
    fsck_durable(&crash);

    let (mut fs, info) = mount(&dev, B, Recovery::All);
    assert_eq!(info.recovered, vec![A]);
    assert_eq!(info.replayed, 0, "an empty log replays nothing");
    assert_eq!(fs.read(f, 0, 4096).unwrap(), OLD);
    fs.unmount().unwrap();
    fsck_durable(&crash);
}

/// A crash right after a sync with A's statfs deltas unfolded: recovery
/// replays nothing but folds the deltas the emptied log's header carries
/// (`lh_local_*`) into the master statfs file; `fsck.gfs2 -n` is clean.
#[test]
fn recovery_after_demote_sync_folds_statfs_deltas() {
    let crash = volume();
    let dev: Arc<dyn BlockDevice> = crash.clone();
    let mut a = mount(&dev, A, Recovery::Own).0;
    node_a_writes(&mut a);
    a.sync_for_demote().unwrap();
    crash.crash();
    drop(a);

    let (fs, info) = mount(&dev, B, Recovery::All);
    assert_eq!(info.recovered, vec![A]);
    assert_eq!(info.replayed, 0, "an empty log replays nothing");
    fs.unmount().unwrap();
    fsck_durable(&crash);
}
