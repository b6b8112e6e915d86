//! Several nodes on one volume, one journal each (mounted one after the
//! other here; the glocks that let them run at once come elsewhere):
//! every node writes through its own journal and its own
//! `statfs_change{jid}`; a recover-all mounter replays exactly the dirty
//! journals, a recover-own mounter leaves other nodes' journals alone; a
//! spectator writes nothing and refuses changes with EROFS; each node
//! starts allocating in its own share of the rgrps. Volumes made by our
//! mkfs with three journals and, when installed, by `mkfs.gfs2 -j 3`;
//! `fsck.gfs2 -n` clean after each scenario when installed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use clusterfs::block::{BlockDevice, CrashDevice, FileDevice};
use clusterfs::fs::{FileSystem, Ino, RenameFlags, SetAttr};
use clusterfs::lock::LocalLocks;
use clusterfs::mkfs::{mkfs, LockProto, MkfsOptions};
use clusterfs::ondisk::{log_head, Dinode, LogHeader, Rgrp, Rindex, StatfsChange};
use clusterfs::volume::{home_rgrps, FsError, MountInfo, MountParams, Recovery, RgrpShare};
use common::{assert_fsck_clean, have};

const JOURNALS: u32 = 3;

// ---------------------------------------------------------------------
// Volumes.

/// A sparse image made by our mkfs with three 8 MiB journals.
fn our_image(size_mb: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size_mb << 20).unwrap();
    let dev = FileDevice::open(f.path()).unwrap();
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        journals: JOURNALS,
        journal_mb: Some(8),
        bsize: 4096,
        rg_mb: 32,
        ..Default::default()
    };
    mkfs(&dev, &opts, &mut |_, _, _| {}).unwrap();
    f
}

/// A sparse image made by `mkfs.gfs2 -j 3`, when it is installed.
fn gfs2_image(size_mb: u64) -> Option<tempfile::NamedTempFile> {
    if !have("mkfs.gfs2") {
        eprintln!("mkfs.gfs2 not installed: skipping");
        return None;
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size_mb << 20).unwrap();
    let st = Command::new("mkfs.gfs2")
        .args(["-O", "-q", "-p", "lock_nolock", "-j", "3", "-J", "8"])
        .args(["-r", "32"])
        .arg(f.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    Some(f)
}

fn file_dev(path: &Path) -> Arc<dyn BlockDevice> {
    Arc::new(FileDevice::open(path).unwrap())
}

fn mount(dev: &Arc<dyn BlockDevice>, params: MountParams) -> (FileSystem, MountInfo) {
    FileSystem::mount_with(Arc::clone(dev), Arc::new(LocalLocks), params)
        .unwrap_or_else(|e| panic!("mount {params:?}: {e}"))
}

fn mount_err(dev: &Arc<dyn BlockDevice>, params: MountParams) -> FsError {
    match FileSystem::mount_with(Arc::clone(dev), Arc::new(LocalLocks), params) {
        Ok(_) => panic!("mount {params:?} should have failed"),
        Err(e) => e,
    }
}

/// Where things are: found through a spectator mount that recovers
/// nothing (and writes nothing).
struct Layout {
    bsize: u64,
    /// Each journal's device blocks, by jid.
    journals: Vec<Vec<u64>>,
    /// The master statfs dinode.
    statfs: u64,
    /// `per_node/statfs_change{jid}` dinodes, by jid.
    statfs_change: Vec<u64>,
    rgrps: Vec<Rindex>,
}

fn layout(dev: &Arc<dyn BlockDevice>) -> Layout {
    let (mut fs, info) = mount(dev, MountParams::spectator(Recovery::Own));
    assert_eq!(info.journals, JOURNALS);
    let v = fs.volume();
    let master = v.sb.sb_master_dir.no_addr;
    let mut find = |dir: u64, name: String| {
        v.dir_lookup(dir, name.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{name} missing"))
            .0
            .no_addr
    };
    let jindex = find(master, "jindex".into());
    let per_node = find(master, "per_node".into());
    let statfs = find(master, "statfs".into());
    let jinodes: Vec<u64> = (0..JOURNALS)
        .map(|j| find(jindex, format!("journal{j}")))
        .collect();
    let statfs_change = (0..JOURNALS)
        .map(|j| find(per_node, format!("statfs_change{j}")))
        .collect();
    let journals = jinodes
        .iter()
        .map(|&a| v.file_block_map(a).unwrap())
        .collect();
    let lay = Layout {
        bsize: u64::from(v.geo.bsize),
        journals,
        statfs,
        statfs_change,
        rgrps: v.rgrps().to_vec(),
    };
    fs.unmount().unwrap();
    lay
}

fn read_block(dev: &Arc<dyn BlockDevice>, lay: &Layout, blk: u64) -> Vec<u8> {
    let mut b = vec![0u8; lay.bsize as usize];
    dev.read_at(blk * lay.bsize, &mut b).unwrap();
    b
}

/// A journal's bytes.
fn journal_bytes(dev: &Arc<dyn BlockDevice>, lay: &Layout, jid: u32) -> Vec<u8> {
    lay.journals[jid as usize]
        .iter()
        .flat_map(|&b| read_block(dev, lay, b))
        .collect()
}

/// Every valid log header of a journal, by sequence.
fn headers(dev: &Arc<dyn BlockDevice>, lay: &Layout, jid: u32) -> Vec<LogHeader> {
    let mut hs: Vec<LogHeader> = lay.journals[jid as usize]
        .iter()
        .filter_map(|&b| LogHeader::decode(&read_block(dev, lay, b)).ok())
        .collect();
    hs.sort_by_key(|h| h.lh_sequence);
    hs
}

/// The journal's head: its newest header.
fn head(dev: &Arc<dyn BlockDevice>, lay: &Layout, jid: u32) -> LogHeader {
    *headers(dev, lay, jid).last().expect("a log header")
}

fn is_clean(dev: &Arc<dyn BlockDevice>, lay: &Layout, jid: u32) -> bool {
    head(dev, lay, jid).lh_flags & log_head::UNMOUNT != 0
}

/// A statfs-format file's contents on the device.
fn statfs_file(dev: &Arc<dyn BlockDevice>, lay: &Layout, dinode: u64) -> StatfsChange {
    StatfsChange::decode(&read_block(dev, lay, dinode)[Dinode::SIZE..]).unwrap()
}

/// What the rgrp headers on the device add up to: (free, dinodes).
fn rgrp_sums(dev: &Arc<dyn BlockDevice>, lay: &Layout) -> (i64, i64) {
    lay.rgrps.iter().fold((0, 0), |(f, d), ri| {
        let rg = Rgrp::decode(&read_block(dev, lay, ri.ri_addr)).unwrap();
        (f + i64::from(rg.rg_free), d + i64::from(rg.rg_dinodes))
    })
}

/// The master statfs file plus every node's statfs_change: (free, dinodes).
fn statfs_sums(dev: &Arc<dyn BlockDevice>, lay: &Layout) -> (i64, i64) {
    std::iter::once(lay.statfs)
        .chain(lay.statfs_change.iter().copied())
        .map(|a| statfs_file(dev, lay, a))
        .fold((0, 0), |(f, d), sc| (f + sc.sc_free, d + sc.sc_dinodes))
}

/// Asserts the master statfs file agrees with the rgrps and no node has
/// unfolded deltas (every node unmounted or recovered).
fn assert_statfs_folded(dev: &Arc<dyn BlockDevice>, lay: &Layout) {
    let master = statfs_file(dev, lay, lay.statfs);
    assert_eq!(
        (master.sc_free, master.sc_dinodes),
        rgrp_sums(dev, lay),
        "master statfs = the rgrps' sums"
    );
    for (jid, &sc) in lay.statfs_change.iter().enumerate() {
        assert_eq!(
            statfs_file(dev, lay, sc),
            StatfsChange::default(),
            "statfs_change{jid} folded"
        );
    }
}

// ---------------------------------------------------------------------
// Workloads.

/// Data of file `name`: 20 KiB, a pattern of its name.
fn data_of(name: &str) -> Vec<u8> {
    name.bytes().cycle().take(20 << 10).collect()
}

/// Creates `n` files `{prefix}{i}` in a new directory `prefix` (allocating
/// dinodes, a directory and data blocks).
fn write_files(fs: &mut FileSystem, prefix: &str, n: usize) {
    let root = fs.root();
    let d = fs.mkdir(root, prefix.as_bytes(), 0o755, 0, 0).unwrap().ino;
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let f = fs.mknod(d, name.as_bytes(), 0o644, 0, 0, 0).unwrap().ino;
        fs.write(f, 0, &data_of(&name)).unwrap();
    }
}

/// Asserts the files of [`write_files`] are there with their data.
fn check_files(fs: &mut FileSystem, prefix: &str, n: usize) {
    let root = fs.root();
    let d = fs.lookup(root, prefix.as_bytes()).unwrap().ino;
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let f = fs.lookup(d, name.as_bytes()).unwrap().ino;
        assert_eq!(fs.read(f, 0, 1 << 20).unwrap(), data_of(&name), "{name}");
    }
}

/// A node's session: mount with journal `jid`, write, sync, and check
/// that only journal `jid` moved, its headers carry the node's statfs
/// deltas, and the master statfs file was not written.
fn node_session(
    dev: &Arc<dyn BlockDevice>,
    lay: &Layout,
    jid: u32,
    recover: Recovery,
) -> FileSystem {
    let others: Vec<u32> = (0..JOURNALS).filter(|&j| j != jid).collect();
    let before: Vec<Vec<u8>> = others.iter().map(|&j| journal_bytes(dev, lay, j)).collect();
    let master_before = read_block(dev, lay, lay.statfs);
    let seq_before = head(dev, lay, jid).lh_sequence;

    let (mut fs, info) = mount(dev, MountParams::node(jid, recover));
    assert_eq!((info.jid, info.journals), (Some(jid), JOURNALS));
    assert_eq!(fs.volume().jid(), Some(jid));
    let statfs0 = fs.statfs().unwrap();
    let prefix = format!("node{jid}_");
    write_files(&mut fs, &prefix, 6);
    fs.sync().unwrap();

    // Our commits are in journal jid, by jid, with our statfs deltas.
    let ours: Vec<LogHeader> = headers(dev, lay, jid)
        .into_iter()
        .filter(|h| h.lh_sequence > seq_before)
        .collect();
    assert!(!ours.is_empty(), "journal{jid} has our commits");
    assert!(ours.iter().all(|h| h.jid == jid), "mh_jid {jid}: {ours:?}");
    let h = *ours.last().unwrap();
    assert_eq!(h.lh_flags & log_head::UNMOUNT, 0);
    assert_eq!(h.lh_statfs_addr, lay.statfs_change[jid as usize]);
    let local = statfs_file(dev, lay, lay.statfs_change[jid as usize]);
    assert!(local.sc_free < 0 && local.sc_dinodes > 0, "{local:?}");
    assert_eq!(
        (h.lh_local_total, h.lh_local_free, h.lh_local_dinodes),
        (local.sc_total, local.sc_free, local.sc_dinodes),
        "lh_local_* = statfs_change{jid}"
    );
    // No allocation wrote the shared master statfs file.
    assert_eq!(read_block(dev, lay, lay.statfs), master_before);
    // What users see: master + local. The rgrps agree with the master
    // plus every node's statfs_change (a crashed node's included).
    let st = fs.statfs().unwrap();
    assert_eq!(st.bfree as i64, statfs0.bfree as i64 + local.sc_free);
    assert_eq!(statfs_sums(dev, lay), rgrp_sums(dev, lay));
    // Nobody else's journal moved.
    for (k, &j) in others.iter().enumerate() {
        assert!(
            journal_bytes(dev, lay, j) == before[k],
            "journal{j} untouched"
        );
    }
    fs
}

/// Unmounts cleanly and checks journal `jid` ends with an UNMOUNT header
/// and its deltas are folded into the master.
fn node_unmount(fs: FileSystem, dev: &Arc<dyn BlockDevice>, lay: &Layout, jid: u32) {
    fs.unmount().unwrap();
    let h = head(dev, lay, jid);
    assert_eq!(h.lh_flags & log_head::UNMOUNT, log_head::UNMOUNT);
    assert_eq!(h.lh_local_free, 0);
    assert_eq!(
        statfs_file(dev, lay, lay.statfs_change[jid as usize]),
        StatfsChange::default()
    );
}

// ---------------------------------------------------------------------
// Scenarios.

/// Nodes 0 (recover all), 1 and 2 (recover own) in turn, each through its
/// own journal; then node 1 crashes mid-session, node 2 (recover own)
/// leaves journal1 dirty, and node 0 (recover all) replays exactly it.
fn nodes_in_turn_then_a_crash(path: &Path) {
    let dev = file_dev(path);
    let lay = layout(&dev);
    assert!((0..JOURNALS).all(|j| is_clean(&dev, &lay, j)));

    for (jid, recover) in [(0, Recovery::All), (1, Recovery::Own), (2, Recovery::Own)] {
        let fs = node_session(&dev, &lay, jid, recover);
        node_unmount(fs, &dev, &lay, jid);
    }
    assert_statfs_folded(&dev, &lay);
    assert_fsck_clean(path);

    // Node 1 again, then dropped without unmount: journal1 stays dirty
    // with its statfs deltas in statfs_change1 and lh_local_*.
    let mut fs = mount(&dev, MountParams::node(1, Recovery::Own)).0;
    write_files(&mut fs, "crashed_", 4);
    fs.sync().unwrap();
    drop(fs);
    assert!(!is_clean(&dev, &lay, 1));
    let lost = statfs_file(&dev, &lay, lay.statfs_change[1]);
    assert!(lost.sc_free < 0);
    assert_eq!(statfs_sums(&dev, &lay), rgrp_sums(&dev, &lay));

    // Node 2, recovering its own journal only: journal1 is not its own.
    // (It changes only its own file: in a cluster nobody takes a dead
    // node's glocks before its journal is recovered.)
    let j1 = journal_bytes(&dev, &lay, 1);
    let seq2 = head(&dev, &lay, 2).lh_sequence;
    let (mut fs, info) = mount(&dev, MountParams::node(2, Recovery::Own));
    assert!(info.recovered.is_empty());
    check_files(&mut fs, "crashed_", 4);
    let d = fs.lookup(fs.root(), b"node2_").unwrap().ino;
    let f = fs.lookup(d, b"node2_0").unwrap().ino;
    fs.write(f, 0, &data_of("node2_0")).unwrap();
    fs.sync().unwrap();
    assert!(
        head(&dev, &lay, 2).lh_sequence > seq2,
        "node 2 wrote journal2"
    );
    node_unmount(fs, &dev, &lay, 2);
    assert!(journal_bytes(&dev, &lay, 1) == j1, "journal1 left alone");
    assert_eq!(statfs_file(&dev, &lay, lay.statfs_change[1]), lost);

    // Node 0 recovering all: exactly journal1 is replayed.
    let j2 = journal_bytes(&dev, &lay, 2);
    let (mut fs, info) = mount(&dev, MountParams::node(0, Recovery::All));
    assert_eq!(info.recovered, vec![1]);
    assert!(info.replayed > 0);
    let h = head(&dev, &lay, 1);
    assert_eq!(h.lh_flags, log_head::UNMOUNT | log_head::RECOVERY);
    assert!(
        journal_bytes(&dev, &lay, 2) == j2,
        "clean journal2 only read"
    );
    for jid in 0..JOURNALS {
        check_files(&mut fs, &format!("node{jid}_"), 6);
    }
    check_files(&mut fs, "crashed_", 4);
    // Node 1's lost deltas are in the master now.
    assert_eq!(
        statfs_file(&dev, &lay, lay.statfs_change[1]),
        StatfsChange::default()
    );
    assert_eq!(statfs_sums(&dev, &lay), rgrp_sums(&dev, &lay));
    node_unmount(fs, &dev, &lay, 0);
    assert_statfs_folded(&dev, &lay);
    assert_fsck_clean(path);
}

#[test]
fn our_volume_nodes_in_turn_then_a_crash() {
    let img = our_image(256);
    nodes_in_turn_then_a_crash(img.path());
}

#[test]
fn mkfs_gfs2_volume_nodes_in_turn_then_a_crash() {
    let Some(img) = gfs2_image(256) else { return };
    nodes_in_turn_then_a_crash(img.path());
}

/// A power cut on node 1 (unflushed writes lost): its own next mount, with
/// recover-own, replays journal1 and nothing else; what it fsync'd is there.
#[test]
fn crashed_node_recovers_its_own_journal() {
    let img = our_image(128);
    let bytes = std::fs::read(img.path()).unwrap();
    let crash = Arc::new(CrashDevice::from_bytes(bytes));
    let dev: Arc<dyn BlockDevice> = crash.clone();
    let lay = layout(&dev);

    let mut fs = mount(&dev, MountParams::node(1, Recovery::Own)).0;
    write_files(&mut fs, "kept_", 3);
    fs.sync().unwrap();
    write_files(&mut fs, "lost_", 3);
    crash.crash();
    drop(fs);
    assert!(!is_clean(&dev, &lay, 1));
    let others = [journal_bytes(&dev, &lay, 0), journal_bytes(&dev, &lay, 2)];

    let (mut fs, info) = mount(&dev, MountParams::node(1, Recovery::Own));
    assert_eq!(info.recovered, vec![1]);
    assert!(info.replayed > 0);
    check_files(&mut fs, "kept_", 3);
    assert!(matches!(
        fs.lookup(fs.root(), b"lost_"),
        Err(FsError::NotFound)
    ));
    fs.unmount().unwrap();
    let now = [journal_bytes(&dev, &lay, 0), journal_bytes(&dev, &lay, 2)];
    assert!(now == others, "journals 0 and 2 untouched");

    let (fs, info) = mount(&dev, MountParams::node(0, Recovery::All));
    assert!(info.recovered.is_empty());
    fs.unmount().unwrap();
    assert_statfs_folded(&dev, &lay);
    let snap = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(snap.path(), crash.durable_snapshot()).unwrap();
    assert_fsck_clean(snap.path());
}

/// A device over the image at `path` that counts writes and flushes.
fn probe(path: &Path) -> (Arc<common::Counting>, Arc<dyn BlockDevice>) {
    let p = common::Counting::new(file_dev(path));
    let d: Arc<dyn BlockDevice> = p.clone();
    (p, d)
}

fn assert_erofs<T: std::fmt::Debug>(what: &str, r: clusterfs::volume::Result<T>) {
    match r {
        Err(e) => assert_eq!(e.errno(), libc::EROFS, "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded on a spectator: {v:?}"),
    }
}

/// Every kind of change a spectator is asked for fails with EROFS.
fn try_every_change(fs: &mut FileSystem, dir: Ino, file: Ino) {
    let root = fs.root();
    assert_erofs("mknod", fs.mknod(dir, b"new", 0o644, 0, 0, 0));
    assert_erofs("mkdir", fs.mkdir(root, b"newdir", 0o755, 0, 0));
    assert_erofs("symlink", fs.symlink(dir, b"sl", b"target", 0, 0));
    assert_erofs("link", fs.link(file, root, b"hard"));
    assert_erofs("write", fs.write(file, 0, b"overwrite"));
    assert_erofs("append", fs.write(file, 1 << 20, b"grow"));
    let trunc = SetAttr {
        size: Some(1),
        ..Default::default()
    };
    assert_erofs("truncate", fs.setattr(file, trunc));
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    assert_erofs("chmod", fs.setattr(file, chmod));
    assert_erofs("fallocate", fs.fallocate(file, 0, 1 << 20, 0));
    assert_erofs("setxattr", fs.setxattr(file, b"user.k", b"v2", 0));
    assert_erofs("removexattr", fs.removexattr(file, b"user.k"));
    assert_erofs("unlink", fs.unlink(dir, b"spec0"));
    assert_erofs("rmdir", fs.rmdir(root, b"empty"));
    assert_erofs(
        "rename",
        fs.rename(dir, b"spec0", root, b"moved", RenameFlags::default()),
    );
}

#[test]
fn spectator_writes_nothing_and_refuses_changes() {
    let img = our_image(128);
    let dev = file_dev(img.path());
    let lay = layout(&dev);
    let mut fs = mount(&dev, MountParams::node(0, Recovery::All)).0;
    write_files(&mut fs, "spec", 2);
    let root = fs.root();
    fs.mkdir(root, b"empty", 0o755, 0, 0).unwrap();
    let dir = fs.lookup(root, b"spec").unwrap().ino;
    let file = fs.lookup(dir, b"spec0").unwrap().ino;
    fs.setxattr(file, b"user.k", b"v", 0).unwrap();
    let st = fs.statfs().unwrap();
    fs.unmount().unwrap();
    let image = std::fs::read(img.path()).unwrap();

    // Spectator first on the volume (recover all): every journal clean.
    let (p, pdev) = probe(img.path());
    let (mut fs, info) = mount(&pdev, MountParams::spectator(Recovery::All));
    assert_eq!((info.jid, info.recovered.len()), (None, 0));
    assert_eq!(fs.volume().jid(), None);
    check_files(&mut fs, "spec", 2);
    assert_eq!(fs.getxattr(file, b"user.k").unwrap(), b"v");
    let names: Vec<Vec<u8>> = fs
        .readdir(root, 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&b"spec".to_vec()) && names.contains(&b"empty".to_vec()));
    assert_eq!(fs.statfs().unwrap(), st);
    try_every_change(&mut fs, dir, file);
    check_files(&mut fs, "spec", 2);
    fs.sync().unwrap();
    fs.open(file).unwrap();
    fs.release(file).unwrap();
    fs.unmount().unwrap();
    assert_eq!(p.writes() + p.flushes(), 0, "writes or flushes");
    assert!(
        std::fs::read(img.path()).unwrap() == image,
        "device unchanged"
    );

    // Node 1 crashes: a spectator that would have to recover refuses.
    let mut fs = mount(&dev, MountParams::node(1, Recovery::Own)).0;
    write_files(&mut fs, "dirty", 1);
    fs.sync().unwrap();
    drop(fs);
    let image = std::fs::read(img.path()).unwrap();
    let (p, pdev) = probe(img.path());
    let e = mount_err(&pdev, MountParams::spectator(Recovery::All));
    assert!(
        matches!(&e, FsError::RecoveryNeeded { jids } if jids == &[1]),
        "{e}"
    );
    assert!(e.to_string().contains("[1]") && e.to_string().contains("spectator"));
    // One that recovers nothing mounts (journal1 is someone else's).
    let (mut fs, info) = mount(&pdev, MountParams::spectator(Recovery::Own));
    assert!(info.recovered.is_empty());
    check_files(&mut fs, "dirty", 1);
    try_every_change(&mut fs, dir, file);
    fs.unmount().unwrap();
    assert_eq!(p.writes() + p.flushes(), 0, "writes or flushes");
    assert!(
        std::fs::read(img.path()).unwrap() == image,
        "device unchanged"
    );
    assert!(!is_clean(&dev, &lay, 1));

    let (fs, info) = mount(&dev, MountParams::nolock());
    assert_eq!(info.recovered, vec![1]);
    fs.unmount().unwrap();
    assert_statfs_folded(&dev, &lay);
    assert_fsck_clean(img.path());
}

#[test]
fn jid_beyond_jindex_is_refused() {
    let img = our_image(128);
    let image = std::fs::read(img.path()).unwrap();
    let (p, dev) = probe(img.path());
    let e = mount_err(&dev, MountParams::node(JOURNALS, Recovery::Own));
    assert!(
        matches!(
            e,
            FsError::NoJournal {
                jid: 3,
                journals: 3
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("3 journal"), "{msg}");
    assert_eq!(e.errno(), libc::EINVAL);
    assert_eq!(p.writes() + p.flushes(), 0);
    assert!(std::fs::read(img.path()).unwrap() == image);
}

/// Each node's first new dinode (in the shared root directory) lands in
/// its own share of the rgrps, its data next to it.
#[test]
fn nodes_start_allocating_in_their_own_rgrps() {
    let img = our_image(512);
    let dev = file_dev(img.path());
    let lay = layout(&dev);
    let n = lay.rgrps.len();
    let rg_of = |blk: u64| {
        lay.rgrps
            .iter()
            .position(|r| r.contains_data(blk))
            .expect("in an rgrp")
    };
    let mut seen = Vec::new();
    for jid in 0..JOURNALS {
        let (mut fs, _) = mount(&dev, MountParams::node(jid, Recovery::Own));
        let home: Vec<usize> = (0..n).filter(|&i| fs.volume().is_home(i)).collect();
        assert_eq!(home, home_rgrps(jid, JOURNALS, n).collect::<Vec<_>>());
        let root = fs.root();
        let name = format!("f{jid}");
        let f = fs.mknod(root, name.as_bytes(), 0o644, 0, 0, 0).unwrap().ino;
        fs.write(f, 0, &data_of(&name)).unwrap();
        let rg = rg_of(f.0);
        assert!(
            home.contains(&rg),
            "jid {jid}: dinode in rgrp {rg}, home {home:?}"
        );
        for b in fs.volume().file_block_map(f.0).unwrap() {
            assert_eq!(rg_of(b), rg, "jid {jid}: data next to its dinode");
        }
        seen.push(rg);
        fs.unmount().unwrap();
    }
    seen.dedup();
    assert_eq!(seen.len(), JOURNALS as usize, "three rgrps: {seen:?}");
    assert_statfs_folded(&dev, &lay);
    assert_fsck_clean(img.path());
}

/// In a cluster, a node's share is every rgrp whose place in the
/// division is its place among the members: its new dinodes go there,
/// several of them too, and elsewhere only once its share is full.
#[test]
fn a_members_share_is_every_nth_rgrp_and_its_dinodes_go_there() {
    let img = our_image(512);
    let dev = file_dev(img.path());
    let lay = layout(&dev);
    let addrs: Vec<u64> = lay.rgrps.iter().map(|r| r.ri_addr).collect();
    let n = addrs.len();
    assert!(n >= 4, "{n} rgrps");
    let rg_of = |blk: u64| {
        lay.rgrps
            .iter()
            .position(|r| r.contains_data(blk))
            .expect("in an rgrp")
    };
    let share = Arc::new(RgrpShare::of_rgrps(&lay.rgrps).unwrap());
    let again = RgrpShare::of_rgrps(&lay.rgrps).unwrap();
    assert_eq!(share.tag(), again.tag());
    assert_ne!(
        share.tag(),
        RgrpShare::of_rgrps(&lay.rgrps[..n - 1]).unwrap().tag(),
        "another layout, another tag"
    );
    assert_eq!(share.key(addrs[0] - 1), None, "before the first rgrp");
    let last = lay.rgrps[n - 1];
    assert_eq!(share.key(last.ri_data0 + u64::from(last.ri_data)), None);
    // No members known yet: everything is ours.
    assert!((0..n).all(|i| share.holds(i)));
    for (i, &a) in addrs.iter().enumerate() {
        assert_eq!(share.key(a), Some(i as u64), "rgrp {i} at {a}");
        assert_eq!(share.key(lay.rgrps[i].ri_data0 + 1), Some(i as u64));
    }
    share.set_place(1, 3);
    let ours: Vec<usize> = (0..n).filter(|&i| share.holds(i)).collect();
    assert_eq!(ours, (1..n).step_by(3).collect::<Vec<_>>());
    let (mut fs, _) = mount(&dev, MountParams::node(1, Recovery::Own));
    fs.volume().share_rgrps(share.clone());
    let home: Vec<usize> = (0..n).filter(|&i| fs.volume().is_home(i)).collect();
    assert_eq!(home, ours);
    let root = fs.root();
    for k in 0..20 {
        let name = format!("g{k}");
        let f = fs.mknod(root, name.as_bytes(), 0o644, 0, 0, 0).unwrap().ino;
        assert!(ours.contains(&rg_of(f.0)), "{name} in rgrp {}", rg_of(f.0));
    }
    // The members change: this node is now the second of two.
    share.set_place(1, 2);
    let d = fs.mkdir(root, b"d", 0o755, 0, 0).unwrap().ino;
    assert_eq!(rg_of(d.0) % 2, 1, "mkdir in rgrp {}", rg_of(d.0));
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn home_rgrps_split_the_volume() {
    assert_eq!(home_rgrps(0, 1, 7), 0..7);
    assert_eq!(home_rgrps(0, 3, 9), 0..3);
    assert_eq!(home_rgrps(1, 3, 9), 3..6);
    assert_eq!(home_rgrps(2, 3, 9), 6..9);
    assert_eq!(home_rgrps(2, 3, 10), 6..10);
    // More journals than rgrps: every node still has one.
    assert_eq!(home_rgrps(3, 8, 2), 0..1);
    assert_eq!(home_rgrps(7, 8, 2), 1..2);
}

#[test]
fn mount_options_choose_spectator_and_jid() {
    use clusterfs::fuse::MountOptions;
    let o = MountOptions::parse("spectator,hostdata=jid=2").unwrap();
    assert!(o.spectator);
    assert_eq!(o.jid, Some(2));
    assert!(o.ignored.is_empty());
    let o = MountOptions::parse("hostdata=jid=1:first=1").unwrap();
    assert_eq!(o.jid, Some(1));
    assert_eq!(o.ignored, vec!["hostdata=jid=1:first=1".to_string()]);
    let o = MountOptions::parse("").unwrap();
    assert!(!o.spectator && o.jid.is_none());
    assert!(MountOptions::parse("hostdata=jid=x").is_err());
}

#[test]
fn mount_options_place_the_directory_by_rgrp_unless_told_hash() {
    use clusterfs::fuse::MountOptions;
    assert!(MountOptions::parse("").unwrap().rgrp_placement);
    assert!(
        MountOptions::parse("dir_placement=rgrp")
            .unwrap()
            .rgrp_placement
    );
    assert!(
        !MountOptions::parse("dir_placement=hash")
            .unwrap()
            .rgrp_placement
    );
    let bad = MountOptions::parse("dir_placement=random").unwrap_err();
    assert!(bad.contains("rgrp or hash"), "{bad}");
}

/// `-o glock_cache=N` bounds the unused glocks kept cached; the default is
/// the glock core's.
#[test]
fn mount_options_bound_the_glock_cache() {
    use clusterfs::fuse::MountOptions;
    use clusterfs::glock::GlockConfig;
    assert_eq!(
        MountOptions::parse("").unwrap().glock_cache,
        GlockConfig::default().cached_kept
    );
    assert_eq!(
        MountOptions::parse("glock_cache=16").unwrap().glock_cache,
        16
    );
    let bad = MountOptions::parse("glock_cache=lots").unwrap_err();
    assert!(bad.contains("glock_cache"), "{bad}");
}
