//! Corrupt metadata is an error (or a withdraw), never a panic: seeded
//! byte damage to random metadata blocks of a populated volume, then mount,
//! walk, read, write and unmount. More seeds: CLUSTERFS_CORRUPT_SEEDS. At
//! least half of the damaged images must mount and be walked (the count is
//! printed), or the test would pass without exercising anything.

mod common;

use std::sync::Arc;

use clusterfs::block::{BlockDevice, MemDevice};
use clusterfs::fs::{FileSystem, Ino};
use clusterfs::lock::LocalLocks;
use clusterfs::mkfs::{mkfs, LockProto, MkfsOptions};
use clusterfs::ondisk::GFS2_MAGIC;
use common::model::Rng64;

/// A populated volume; `dirty` leaves its journal unreplayed (the last
/// commits' descriptors and copies are then damaged too, and mount's
/// recovery must cope).
fn populated(bsize: u32, dirty: bool) -> Vec<u8> {
    let dev = Arc::new(MemDevice::new(32 << 20));
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        bsize,
        rg_mb: 32,
        ..Default::default()
    };
    mkfs(dev.as_ref(), &opts, &mut |_, _, _| {}).unwrap();
    let d: Arc<dyn BlockDevice> = dev.clone();
    let (mut fs, _) = FileSystem::mount(d, Arc::new(LocalLocks)).unwrap();
    let root = fs.root();
    let big = fs.mkdir(root, b"big", 0o755, 0, 0).unwrap();
    for i in 0..200 {
        let f = fs
            .mknod(big.ino, format!("entry-{i}").as_bytes(), 0o644, 0, 0, 0)
            .unwrap();
        fs.write(f.ino, 0, &vec![i as u8; (i * 97) % 5000]).unwrap();
    }
    let f = fs.mknod(root, b"large", 0o644, 0, 0, 0).unwrap();
    fs.write(f.ino, 0, &vec![3u8; 3 << 20]).unwrap();
    fs.setxattr(f.ino, b"user.x", b"value", 0).unwrap();
    // Values in ED blocks and enough attributes for an indirect EA block.
    fs.setxattr(f.ino, b"user.big", &vec![7u8; 9000], 0)
        .unwrap();
    for i in 0..40 {
        fs.setxattr(f.ino, format!("trusted.t{i}").as_bytes(), &[i as u8; 90], 0)
            .unwrap();
    }
    fs.symlink(root, b"ln", b"big/entry-1", 0, 0).unwrap();
    if dirty {
        fs.sync().unwrap();
        for i in 0..20 {
            let _ = fs.unlink(big.ino, format!("entry-{i}").as_bytes());
        }
        fs.setxattr(f.ino, b"user.late", &vec![9u8; 3000], 0)
            .unwrap();
        fs.sync().unwrap();
        drop(fs);
    } else {
        fs.unmount().unwrap();
    }
    dev.snapshot()
}

/// Directory entries [`walk`] visits at most per image.
const WALK_BUDGET: usize = 2000;

/// Walks the tree touching everything; errors are fine.
fn walk(fs: &mut FileSystem, dir: Ino, budget: &mut usize) {
    let mut after = 0;
    while *budget > 0 {
        let Ok(batch) = fs.readdir(dir, after, 64) else {
            return;
        };
        let Some(last) = batch.last() else { return };
        after = last.cookie;
        for e in batch {
            *budget = budget.saturating_sub(1);
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let Ok(a) = fs.lookup(dir, &e.name) else {
                continue;
            };
            for name in fs.listxattr(a.ino).unwrap_or_default() {
                let _ = fs.getxattr(a.ino, &name);
            }
            match a.mode & libc::S_IFMT {
                libc::S_IFDIR => walk(fs, a.ino, budget),
                libc::S_IFLNK => drop(fs.readlink(a.ino)),
                _ => drop(fs.read(a.ino, 0, 1 << 20)),
            }
        }
    }
}

#[test]
fn corrupt_metadata_never_panics() {
    let seeds: u64 = std::env::var("CLUSTERFS_CORRUPT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cases = [(1024u32, false), (4096, false), (1024, true), (4096, true)];
    let mut walked = [0u64; 4];
    for (k, (bsize, dirty)) in cases.into_iter().enumerate() {
        let clean = populated(bsize, dirty);
        let bs = bsize as usize;
        let meta: Vec<usize> = (0..clean.len() / bs)
            .filter(|&b| clean[b * bs..b * bs + 4] == GFS2_MAGIC.to_be_bytes())
            .collect();
        for seed in 0..seeds {
            let mut rng = Rng64::new(seed * 7 + k as u64);
            let mut img = clean.clone();
            for _ in 0..3 {
                let b = meta[rng.range(0..meta.len() as u64) as usize];
                for _ in 0..8 {
                    let off = b * bs + rng.range(0..bs as u64) as usize;
                    img[off] = rng.next_u64() as u8;
                }
            }
            let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img));
            let Ok((mut fs, _)) = FileSystem::mount(dev, Arc::new(LocalLocks)) else {
                continue;
            };
            let root = fs.root();
            let mut budget = WALK_BUDGET;
            walk(&mut fs, root, &mut budget);
            // Walked: the damage left more than the root's own entries.
            // Walked: it got into big/ (200 entries), past the root's five.
            if WALK_BUDGET - budget >= 100 {
                walked[k] += 1;
            }
            if let Ok(a) = fs.mknod(root, b"new-file", 0o644, 0, 0, 0) {
                let _ = fs.write(a.ino, 0, &[1u8; 10_000]);
                let _ = fs.setxattr(a.ino, b"user.y", b"z", 0);
            }
            if let Ok(l) = fs.lookup(root, b"large") {
                let _ = fs.removexattr(l.ino, b"user.big");
                let _ = fs.setxattr(l.ino, b"user.new", &[5u8; 5000], 0);
            }
            let _ = fs.unlink(root, b"large");
            let _ = fs.rename(root, b"big", root, b"big2", Default::default());
            let _ = fs.unmount();
        }
    }
    // Proof that the damage was exercised, not rejected wholesale at mount:
    // on the default 20 seeds, 79 of the 80 images mount and are walked
    // today; the floor is half of all images.
    let total: u64 = walked.iter().sum();
    println!(
        "damaged images mounted and walked: {total} of {}, per case {walked:?}",
        4 * seeds
    );
    assert!(
        total >= 2 * seeds,
        "only {total} of {} damaged images mounted and were walked (floor {})",
        4 * seeds,
        2 * seeds
    );
}
