//! Journal recovery against gfs2-utils' own: images whose journal holds
//! several commits (a test-side writer lays them out the way the kernel
//! leaves a log: descriptors, copies, REVOKE descriptors continued in LB
//! blocks, a log header closing each commit, the whole log wrapping past
//! the journal's end) are copied; one copy is replayed by our mount, the
//! other by `fsck.gfs2 -y`. Every block outside the journal must come out
//! the same, and both copies must then be `fsck.gfs2 -n` clean.
//!
//! The logged blocks are the volume's own dinodes with new timestamps, so
//! whichever copy wins the volume stays consistent, and the timestamps
//! show which copy was replayed. Odd seeds put the log in journal1 of a
//! two-journal volume (mount recovers every journal, as the first mounter
//! does). Seeds: `CLUSTERFS_REPLAY_SEEDS` (default 4).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use clusterfs::block::FileDevice;
use clusterfs::fs::FileSystem;
use clusterfs::journal::{build_commit, commit_len};
use clusterfs::lock::LocalLocks;
use clusterfs::ondisk::{be64, log_head, put64, Dinode, LogHeader};
use clusterfs::replay::build_revoke;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{assert_fsck_clean, fsck_repair, have, image, mount};

const BS: usize = 1024;
const ATIME: usize = 72;

/// A volume with two journals (mount recovers every journal, as the first
/// mounter does).
fn two_journal_image() -> tempfile::NamedTempFile {
    use clusterfs::mkfs::{mkfs, LockProto, MkfsOptions};
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(64 << 20).unwrap();
    let dev = FileDevice::open(f.path()).unwrap();
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        bsize: BS as u32,
        rg_mb: 32,
        journals: 2,
        journal_mb: Some(8),
        ..Default::default()
    };
    mkfs(&dev, &opts, &mut |_, _, _| {}).unwrap();
    f
}

/// What a test log needs to know about the volume.
struct Layout {
    /// Journal `jid`'s dinode and block map.
    jinode: u64,
    map: Vec<u64>,
    /// The blocks of every journal (left out of the comparison: each
    /// recovery writes its own headers).
    all_journals: std::collections::HashSet<u64>,
    /// The dinodes the log rewrites.
    files: Vec<u64>,
    /// The master statfs file and this journal's statfs_change file.
    statfs: u64,
    statfs_change: u64,
}

fn layout(img: &Path, jid: u32) -> Layout {
    let mut fs = mount(img);
    let root = fs.root();
    let d = fs.mkdir(root, b"d", 0o755, 0, 0).unwrap();
    let mut files = vec![d.ino.0];
    for i in 0..14 {
        let f = fs
            .mknod(d.ino, format!("f{i}").as_bytes(), 0o644, 0, 0, 0)
            .unwrap();
        files.push(f.ino.0);
    }
    let v = fs.volume();
    let master = v.sb.sb_master_dir.no_addr;
    let jindex = v.dir_lookup(master, b"jindex").unwrap().unwrap().0.no_addr;
    let mut all_journals = std::collections::HashSet::new();
    let mut ours = None;
    for k in 0.. {
        let Some((inum, _)) = v
            .dir_lookup(jindex, format!("journal{k}").as_bytes())
            .unwrap()
        else {
            break;
        };
        let map = v.file_block_map(inum.no_addr).unwrap();
        all_journals.extend(map.iter().copied());
        if k == jid {
            ours = Some((inum.no_addr, map));
        }
    }
    let statfs = v.dir_lookup(master, b"statfs").unwrap().unwrap().0.no_addr;
    let per_node = v
        .dir_lookup(master, b"per_node")
        .unwrap()
        .unwrap()
        .0
        .no_addr;
    let statfs_change = v
        .dir_lookup(per_node, format!("statfs_change{jid}").as_bytes())
        .unwrap()
        .unwrap()
        .0
        .no_addr;
    fs.unmount().unwrap();
    let (jinode, map) = ours.expect("the journal exists");
    Layout {
        jinode,
        map,
        all_journals,
        files,
        statfs,
        statfs_change,
    }
}

/// One commit of the test log: dinode copies with new atimes, revokes,
/// and whether the revokes come before the copies.
struct Commit {
    copies: BTreeMap<u64, u64>,
    revokes: Vec<u64>,
    revokes_first: bool,
}

fn random_commits(rng: &mut StdRng, files: &[u64]) -> Vec<Commit> {
    let n = rng.random_range(4..8);
    (0..n)
        .map(|k| {
            let mut copies = BTreeMap::new();
            for _ in 0..rng.random_range(1..6) {
                let f = files[rng.random_range(0..files.len())];
                copies.insert(f, 1_000_000 + 100 * k as u64 + copies.len() as u64);
            }
            let mut revokes: Vec<u64> = Vec::new();
            if rng.random_bool(0.4) {
                // Enough unrelated revokes that the interesting ones land in
                // LB continuation blocks.
                revokes.extend(40_000..40_000 + rng.random_range(100..300));
            }
            for _ in 0..rng.random_range(0..4) {
                revokes.push(files[rng.random_range(0..files.len())]);
            }
            Commit {
                copies,
                revokes,
                revokes_first: rng.random_bool(0.5),
            }
        })
        .collect()
}

/// Writes the commits into the journal starting at `tail` (the rest of
/// the journal holds older UNMOUNT headers), and marks every logged
/// dinode's in-place atime. Returns the copy GFS2 must replay per block,
/// and the copy "last one wins" would replay (to show revokes matter).
#[allow(clippy::too_many_arguments)]
fn write_log(
    img: &mut [u8],
    jid: u32,
    jinode: u64,
    map: &[u64],
    tail: u32,
    commits: &[Commit],
    local_free: i64,
) -> (HashMap<u64, u64>, HashMap<u64, u64>) {
    let n = map.len() as u32;
    let block = |img: &mut [u8], blk: u64| -> Vec<u8> {
        img[blk as usize * BS..(blk as usize + 1) * BS].to_vec()
    };
    let mut log: Vec<Vec<u8>> = Vec::new();
    // (block, atime, log position) of each copy; (block, position) of revokes.
    let mut copies = Vec::new();
    let mut revokes = HashMap::new();
    for (k, c) in commits.iter().enumerate() {
        let blocks: BTreeMap<u64, Vec<u8>> = c
            .copies
            .iter()
            .map(|(&b, &t)| {
                let mut d = block(img, b);
                put64(&mut d, ATIME, t);
                (b, d)
            })
            .collect();
        let rv = if c.revokes.is_empty() {
            Vec::new()
        } else {
            build_revoke(BS, jid, &c.revokes)
        };
        let start = tail + log.len() as u32;
        let len = (rv.len() + commit_len(BS, blocks.len())) as u32;
        let header = LogHeader {
            lh_sequence: 100 + u64::from(n) + k as u64,
            lh_flags: log_head::FLUSH_NORMAL,
            jid,
            lh_tail: tail,
            lh_blkno: (start + len - 1) % n,
            lh_jinode: jinode,
            lh_addr: map[((start + len - 1) % n) as usize],
            lh_local_free: local_free,
            ..Default::default()
        };
        let mut body = build_commit(BS, jid, &blocks, &header);
        let lh = body.pop().unwrap();
        let at_copies = if c.revokes_first { rv.len() } else { 0 };
        let at_revokes = if c.revokes_first { 0 } else { body.len() };
        for (i, (&b, &t)) in c.copies.iter().enumerate() {
            // One descriptor (the commits are small), then the copies.
            copies.push((b, t, start + (at_copies + 1 + i) as u32));
        }
        for &b in &c.revokes {
            revokes.insert(b, start + at_revokes as u32);
        }
        if c.revokes_first {
            log.extend(rv);
            log.extend(body);
        } else {
            log.extend(body);
            log.extend(rv);
        }
        log.push(lh);
    }
    assert!((log.len() as u32) < n);
    for lbn in 0..n {
        let mut b = vec![0u8; BS];
        LogHeader {
            lh_sequence: 100 + u64::from(lbn),
            jid,
            lh_flags: log_head::UNMOUNT,
            lh_blkno: lbn,
            lh_jinode: jinode,
            lh_addr: map[lbn as usize],
            ..Default::default()
        }
        .encode_block(&mut b);
        let off = map[lbn as usize] as usize * BS;
        img[off..off + BS].copy_from_slice(&b);
    }
    for (i, b) in log.iter().enumerate() {
        let lbn = (tail + i as u32) % n;
        let off = map[lbn as usize] as usize * BS;
        img[off..off + BS].copy_from_slice(b);
    }
    for &(b, _, _) in &copies {
        put64(&mut img[b as usize * BS..], ATIME, 7);
    }
    // Positions are unwrapped (tail + i), so "before" is plain `<`.
    let mut gfs2 = HashMap::new();
    let mut naive = HashMap::new();
    for &(b, t, at) in &copies {
        naive.insert(b, t);
        if revokes.get(&b).is_none_or(|&r| at > r) {
            gfs2.insert(b, t);
        }
    }
    (gfs2, naive)
}

fn run_seed(seed: u64) -> bool {
    // Even seeds: journal0 of a one-journal volume; odd: journal1 of two.
    let jid = (seed % 2) as u32;
    let img = if jid == 0 {
        image(64, BS as u32)
    } else {
        two_journal_image()
    };
    let Layout {
        jinode,
        map,
        all_journals,
        files,
        statfs,
        statfs_change,
    } = layout(img.path(), jid);
    let mut rng = StdRng::seed_from_u64(seed);
    let commits = random_commits(&mut rng, &files);
    let n = map.len() as u32;
    let tail = n - rng.random_range(3..20);
    let mut bytes = std::fs::read(img.path()).unwrap();
    // Some seeds leave free-block counts the crashed node had not yet
    // folded into the master statfs: in its statfs_change file and in
    // every log header (lh_local_free), the master short by as much.
    let local_free = if seed.is_multiple_of(3) {
        0
    } else {
        3 + seed as i64
    };
    let free_at = |blk: u64| blk as usize * BS + Dinode::SIZE + 8;
    let master_free = be64(&bytes, free_at(statfs)) as i64;
    put64(
        &mut bytes,
        free_at(statfs),
        (master_free - local_free) as u64,
    );
    put64(&mut bytes, free_at(statfs_change), local_free as u64);
    let (expect, naive) = write_log(&mut bytes, jid, jinode, &map, tail, &commits, local_free);

    let ours = tempfile::NamedTempFile::new().unwrap();
    let theirs = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ours.path(), &bytes).unwrap();
    std::fs::write(theirs.path(), &bytes).unwrap();

    let dev = Arc::new(FileDevice::open(ours.path()).unwrap());
    let (fs, info) = FileSystem::mount(dev, Arc::new(LocalLocks)).unwrap();
    assert_eq!(info.replayed, expect.len(), "seed {seed}");
    fs.unmount().unwrap();
    let text = fsck_repair(theirs.path());
    assert!(
        text.contains("Replayed"),
        "seed {seed}: fsck did not replay:\n{text}"
    );

    let a = std::fs::read(ours.path()).unwrap();
    let b = std::fs::read(theirs.path()).unwrap();
    // recover_local_statfs: the master is whole again, the local file zero.
    assert_eq!(be64(&a, free_at(statfs)) as i64, master_free, "seed {seed}");
    assert_eq!(be64(&a, free_at(statfs_change)), 0, "seed {seed}");
    // fsck.gfs2 recomputes the master from the rgrps (the same figure, so
    // the block comparison below covers it) but leaves statfs_change files
    // alone, where the kernel zeroes them.
    for blk in 0..(a.len() / BS) as u64 {
        if all_journals.contains(&blk) || blk == statfs_change {
            continue;
        }
        let r = blk as usize * BS..(blk as usize + 1) * BS;
        assert!(
            a[r.clone()] == b[r],
            "seed {seed}: block {blk} differs after replay"
        );
    }
    for &f in &files {
        let atime = be64(&a, f as usize * BS + ATIME);
        match expect.get(&f) {
            Some(&t) => assert_eq!(atime, t, "seed {seed}: dinode {f}"),
            None if naive.contains_key(&f) => assert_eq!(atime, 7, "seed {seed}: dinode {f}"),
            None => {}
        }
    }
    assert_fsck_clean(ours.path());
    assert_fsck_clean(theirs.path());
    expect != naive
}

#[test]
fn multi_commit_wrapped_log_with_revokes_replays_like_fsck_gfs2() {
    if !have("fsck.gfs2") {
        eprintln!("fsck.gfs2 not installed: skipping");
        return;
    }
    let seeds: u64 = std::env::var("CLUSTERFS_REPLAY_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut revokes_mattered = 0;
    for seed in 0..seeds {
        if run_seed(seed) {
            revokes_mattered += 1;
        }
    }
    assert!(
        seeds < 4 || revokes_mattered > 0,
        "no seed had a revoke that changed the outcome"
    );
}
