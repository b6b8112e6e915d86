//! The filesystem core without FUSE: operations, remount, fsck.gfs2.

mod common;

use clusterfs::fs::{FileSystem, Ino, RenameFlags, SetAttr};
use clusterfs::ondisk::BlockState;
use common::{assert_fsck_clean, image, mount};

fn names(fs: &mut FileSystem, dir: Ino) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let batch = fs.readdir(dir, after, 50).unwrap();
        if batch.is_empty() {
            break;
        }
        after = batch.last().unwrap().cookie;
        out.extend(
            batch
                .into_iter()
                .map(|e| String::from_utf8(e.name).unwrap()),
        );
    }
    out.sort();
    out
}

#[test]
fn create_write_read_remount() {
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let a = fs.mknod(root, b"a", 0o644, 1, 2, 0).unwrap();
    assert_eq!(fs.write(a.ino, 0, b"hello").unwrap(), 5);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let b = fs.mknod(root, b"big", 0o600, 0, 0, 0).unwrap();
    fs.write(b.ino, 10, &big).unwrap();
    let d = fs.mkdir(root, b"dir", 0o755, 0, 0).unwrap();
    fs.symlink(d.ino, b"ln", b"../a", 0, 0).unwrap();
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let root = fs.root();
    assert_eq!(names(&mut fs, root), vec![".", "..", "a", "big", "dir"]);
    let a = fs.lookup(root, b"a").unwrap();
    assert_eq!(fs.read(a.ino, 0, 100).unwrap(), b"hello");
    let b = fs.lookup(root, b"big").unwrap();
    assert_eq!(b.size, 300_010);
    let back = fs.read(b.ino, 10, 300_000).unwrap();
    assert_eq!(back, big);
    assert_eq!(fs.read(b.ino, 0, 10).unwrap(), vec![0u8; 10]);
    let d = fs.lookup(root, b"dir").unwrap();
    let l = fs.lookup(d.ino, b"ln").unwrap();
    assert_eq!(fs.readlink(l.ino).unwrap(), b"../a");
    assert_eq!(fs.getattr(root).unwrap().nlink, 3);
    fs.unmount().unwrap();
}

/// A write's whole blocks go to the device in runs of blocks that lie one
/// after the other: a write over blocks scattered by another file's
/// allocations, a hole, unaligned ends and new blocks past the end reads
/// back as written, after a remount too, and fsck is clean.
#[test]
fn writes_over_scattered_blocks_holes_and_unaligned_ends_read_back() {
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let a = fs.mknod(root, b"a", 0o644, 0, 0, 0).unwrap();
    let b = fs.mknod(root, b"b", 0o644, 0, 0, 0).unwrap();
    let mut model = vec![0u8; 0];
    let put = |model: &mut Vec<u8>, off: usize, data: &[u8]| {
        if model.len() < off + data.len() {
            model.resize(off + data.len(), 0);
        }
        model[off..off + data.len()].copy_from_slice(data);
    };
    // a's blocks alternate with b's on the device; block 6 of a stays a
    // hole.
    for blk in 0..12usize {
        let data = vec![blk as u8 + 1; 4096];
        if blk != 6 {
            fs.write(a.ino, (blk * 4096) as u64, &data).unwrap();
            put(&mut model, blk * 4096, &data);
        }
        fs.write(b.ino, (blk * 4096) as u64, &[0xbb; 4096]).unwrap();
    }
    // One write from the middle of block 1 to the middle of block 20.
    let big: Vec<u8> = (0..(19 * 4096 + 100)).map(|i| (i % 253) as u8).collect();
    fs.write(a.ino, 4096 + 2000, &big).unwrap();
    put(&mut model, 4096 + 2000, &big);
    assert_eq!(fs.read(a.ino, 0, model.len() + 10).unwrap(), model);
    assert_eq!(fs.read(b.ino, 0, 12 * 4096).unwrap(), vec![0xbb; 12 * 4096]);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let a = fs.lookup(fs.root(), b"a").unwrap();
    assert_eq!(fs.read(a.ino, 0, model.len() + 10).unwrap(), model);
    let b = fs.lookup(fs.root(), b"b").unwrap();
    assert_eq!(fs.read(b.ino, 0, 12 * 4096).unwrap(), vec![0xbb; 12 * 4096]);
    fs.unmount().unwrap();
}

#[test]
fn truncate_unlink_and_space_comes_back() {
    let img = image(64, 1024);
    let mut fs = mount(img.path());
    let root = fs.root();
    let free0 = fs.statfs().unwrap().bfree;
    let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
    fs.write(f.ino, 0, &vec![7u8; 5 << 20]).unwrap();
    assert!(fs.statfs().unwrap().bfree < free0 - 5000);
    fs.setattr(
        f.ino,
        SetAttr {
            size: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs.read(f.ino, 0, 2000).unwrap(), vec![7u8; 1000]);
    fs.setattr(
        f.ino,
        SetAttr {
            size: Some(3000),
            ..Default::default()
        },
    )
    .unwrap();
    let r = fs.read(f.ino, 0, 4000).unwrap();
    assert_eq!(&r[..1000], &vec![7u8; 1000][..]);
    assert_eq!(&r[1000..], &vec![0u8; 2000][..]);
    fs.unlink(root, b"f").unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn rename_link_rmdir_rules() {
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let d1 = fs.mkdir(root, b"d1", 0o755, 0, 0).unwrap();
    let d2 = fs.mkdir(d1.ino, b"d2", 0o755, 0, 0).unwrap();
    let f = fs.mknod(d2.ino, b"f", 0o644, 0, 0, 0).unwrap();
    assert_eq!(fs.rmdir(root, b"d1").unwrap_err().errno(), libc::ENOTEMPTY);
    assert_eq!(
        fs.rename(root, b"d1", d2.ino, b"x", RenameFlags::default())
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    fs.link(f.ino, root, b"hard").unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, 2);
    fs.rename(d1.ino, b"d2", root, b"moved", RenameFlags::default())
        .unwrap();
    assert_eq!(fs.getattr(d1.ino).unwrap().nlink, 2);
    assert_eq!(fs.getattr(root).unwrap().nlink, 4);
    let (dotdot, _) = fs.volume().dir_lookup(d2.ino.0, b"..").unwrap().unwrap();
    assert_eq!(dotdot.no_addr, root.0);
    fs.rename(root, b"hard", d1.ino, b"h2", RenameFlags::default())
        .unwrap();
    assert_eq!(
        fs.rename(d1.ino, b"h2", root, b"moved", RenameFlags::default())
            .unwrap_err()
            .errno(),
        libc::EISDIR
    );
    fs.unlink(d1.ino, b"h2").unwrap();
    fs.unlink(d2.ino, b"f").unwrap();
    fs.rmdir(root, b"moved").unwrap();
    fs.rmdir(root, b"d1").unwrap();
    assert_eq!(names(&mut fs, root), vec![".", ".."]);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn big_directory_grows_exhash_and_shrinks() {
    let n: usize = std::env::var("CLUSTERFS_BIGDIR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let img = image(128, 512);
    let mut fs = mount(img.path());
    let root = fs.root();
    let d = fs.mkdir(root, b"big", 0o755, 0, 0).unwrap();
    for i in 0..n {
        fs.mknod(d.ino, format!("file-{i:06}").as_bytes(), 0o644, 0, 0, 0)
            .unwrap();
    }
    assert_eq!(names(&mut fs, d.ino).len(), n + 2);
    for i in (0..n).step_by(2) {
        fs.unlink(d.ino, format!("file-{i:06}").as_bytes()).unwrap();
    }
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
    let mut fs = mount(img.path());
    let d = fs.lookup(fs.root(), b"big").unwrap();
    assert_eq!(names(&mut fs, d.ino).len(), n / 2 + 2);
    assert!(fs.lookup(d.ino, b"file-000001").is_ok());
    assert!(fs.lookup(d.ino, b"file-000002").is_err());
    fs.unmount().unwrap();
}

/// An access ACL with a named user (so it is stored, not folded into the mode).
fn acl_bytes() -> Vec<u8> {
    use clusterfs::acl::{tag, Acl, AclEntry};
    let e = |tag, perm, id| AclEntry { tag, perm, id };
    Acl(vec![
        e(tag::USER_OBJ, 6, u32::MAX),
        e(tag::USER, 4, 1000),
        e(tag::GROUP_OBJ, 4, u32::MAX),
        e(tag::MASK, 4, u32::MAX),
        e(tag::OTHER, 0, u32::MAX),
    ])
    .encode()
}

#[test]
fn xattrs_round_trip_and_stay_fsck_clean() {
    for bsize in [512u32, 4096] {
        let img = image(64, bsize);
        let mut fs = mount(img.path());
        let root = fs.root();
        let free0 = fs.statfs().unwrap().bfree;
        let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
        fs.setxattr(f.ino, b"user.a", b"1", 0).unwrap();
        fs.setxattr(f.ino, b"trusted.t", &[7u8; 40], 0).unwrap();
        fs.setxattr(f.ino, b"security.selinux", b"ctx", 0).unwrap();
        fs.setxattr(f.ino, b"system.posix_acl_access", &acl_bytes(), 0)
            .unwrap();
        assert_eq!(
            fs.setxattr(f.ino, b"user.a", b"x", 1).unwrap_err().errno(),
            libc::EEXIST
        );
        assert_eq!(
            fs.setxattr(f.ino, b"user.none", b"x", 2)
                .unwrap_err()
                .errno(),
            libc::ENODATA
        );
        assert_eq!(
            fs.setxattr(f.ino, b"bogus.x", b"x", 0).unwrap_err().errno(),
            libc::EOPNOTSUPP
        );
        fs.setxattr(f.ino, b"user.a", b"replaced value", 2).unwrap();
        assert_eq!(fs.getxattr(f.ino, b"user.a").unwrap(), b"replaced value");
        fs.removexattr(f.ino, b"trusted.t").unwrap();
        assert_eq!(
            fs.getxattr(f.ino, b"trusted.t").unwrap_err().errno(),
            libc::ENODATA
        );
        let mut names = fs.listxattr(f.ino).unwrap();
        names.sort();
        assert_eq!(
            names,
            vec![
                b"security.selinux".to_vec(),
                b"system.posix_acl_access".to_vec(),
                b"user.a".to_vec()
            ]
        );
        // More than one EA block holds: the indirect EA block takes over.
        for n in 0..120 {
            fs.setxattr(f.ino, format!("user.k{n}").as_bytes(), &[n as u8; 50], 0)
                .unwrap();
        }
        assert_eq!(fs.listxattr(f.ino).unwrap().len(), 123);
        let d = fs.mkdir(root, b"d", 0o755, 0, 0).unwrap();
        fs.setxattr(d.ino, b"user.dir", b"yes", 0).unwrap();
        fs.unmount().unwrap();
        assert_fsck_clean(img.path());

        let mut fs = mount(img.path());
        let root = fs.root();
        let f = fs.lookup(root, b"f").unwrap();
        assert_eq!(fs.getxattr(f.ino, b"user.k1").unwrap(), vec![1u8; 50]);
        assert_eq!(
            fs.getxattr(f.ino, b"system.posix_acl_access").unwrap(),
            acl_bytes()
        );
        fs.unlink(root, b"f").unwrap();
        fs.rmdir(root, b"d").unwrap();
        assert_eq!(fs.statfs().unwrap().bfree, free0);
        fs.unmount().unwrap();
        assert_fsck_clean(img.path());
    }
}

#[test]
fn unlinked_open_files_live_until_release_or_remount() {
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let free0 = fs.statfs().unwrap().bfree;
    let a = fs.mknod(root, b"a", 0o644, 0, 0, 0).unwrap();
    fs.write(a.ino, 0, &[9u8; 100_000]).unwrap();
    fs.open(a.ino).unwrap();
    fs.unlink(root, b"a").unwrap();
    assert!(fs.lookup(root, b"a").is_err());
    assert_eq!(
        fs.read(a.ino, 0, 10).unwrap(),
        vec![9u8; 10],
        "still readable while open"
    );
    fs.release(a.ino).unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0, "freed on last release");

    // Left open at a crash: reclaimed by the next mount.
    let b = fs.mknod(root, b"b", 0o644, 0, 0, 0).unwrap();
    fs.write(b.ino, 0, &[1u8; 50_000]).unwrap();
    fs.open(b.ino).unwrap();
    fs.unlink(root, b"b").unwrap();
    fs.sync().unwrap();
    drop(fs);
    let dev = std::sync::Arc::new(clusterfs::block::FileDevice::open(img.path()).unwrap());
    let (mut fs, info) =
        clusterfs::fs::FileSystem::mount(dev, std::sync::Arc::new(clusterfs::lock::LocalLocks))
            .unwrap();
    assert_eq!(info.reclaimed, 1);
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn full_volume_fails_cleanly_and_recovers_space() {
    let img = image(48, 1024);
    let mut fs = mount(img.path());
    let root = fs.root();
    let free0 = fs.statfs().unwrap().bfree;
    let d = fs.mkdir(root, b"fill", 0o755, 0, 0).unwrap();
    let chunk = vec![0xabu8; 256 << 10];
    let mut i = 0;
    let err = loop {
        let f = match fs.mknod(d.ino, format!("f{i}").as_bytes(), 0o644, 0, 0, 0) {
            Ok(f) => f,
            Err(e) => break e,
        };
        if let Err(e) = fs.write(f.ino, 0, &chunk) {
            break e;
        }
        i += 1;
    };
    assert_eq!(err.errno(), libc::ENOSPC);
    // Small things fail the same way once nothing is left.
    let mut names = 0;
    while fs
        .mknod(d.ino, format!("tiny{names}").as_bytes(), 0o644, 0, 0, 0)
        .is_ok()
    {
        names += 1;
    }
    assert!(fs.statfs().unwrap().bfree < 8);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let d = fs.lookup(fs.root(), b"fill").unwrap();
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = fs.readdir(d.ino, after, 100).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.cookie;
        all.extend(
            batch
                .into_iter()
                .map(|e| e.name)
                .filter(|n| n != b"." && n != b".."),
        );
    }
    assert!(all.len() >= i);
    for n in all {
        fs.unlink(d.ino, &n).unwrap();
    }
    fs.rmdir(fs.root(), b"fill").unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}

/// The allocator's bitmap scan (a byte, or eight, at a time, from where it
/// last allocated) against the bitmap read block by block: among random
/// holes it hands out exactly the free blocks, each once, never one freed
/// since the last commit, and says "no space" only when none is left.
#[test]
fn allocation_finds_every_free_block_and_no_uncommitted_one() {
    let img = image(48, 1024);
    let mut fs = mount(img.path());
    let vol = fs.volume();
    let rgs = vol.rgrps().to_vec();
    let data: Vec<u64> = rgs
        .iter()
        .flat_map(|rg| rg.ri_data0..rg.ri_data0 + u64::from(rg.ri_data))
        .collect();
    let free_now = |vol: &mut clusterfs::volume::Volume| -> std::collections::BTreeSet<u64> {
        data.iter()
            .copied()
            .filter(|&b| vol.block_state(b).unwrap() == BlockState::Free)
            .collect()
    };
    let mut rng = common::model::Rng64::new(7);
    for round in 0..3 {
        let mut free = free_now(vol);
        // Take every free block, in whatever order the allocator likes.
        let mut taken = Vec::new();
        loop {
            match vol.alloc(
                rgs[rng.range(0..rgs.len() as u64) as usize].ri_data0,
                BlockState::Used,
            ) {
                Ok(b) => {
                    assert!(free.remove(&b), "round {round}: block {b} was not free");
                    taken.push(b);
                }
                Err(e) => {
                    assert_eq!(e.errno(), libc::ENOSPC);
                    break;
                }
            }
        }
        assert!(
            free.is_empty(),
            "round {round}: {} free blocks never handed out",
            free.len()
        );
        // Random holes, some in runs longer than 32 blocks; until the
        // commit none of them may be handed out again.
        let mut holes = std::collections::BTreeSet::new();
        while holes.len() < taken.len() / 5 {
            let at = rng.range(0..taken.len() as u64) as usize;
            let run = if rng.chance(0.2) { 40 } else { 1 };
            for &b in taken.iter().skip(at).take(run) {
                holes.insert(b);
            }
        }
        for &b in &holes {
            vol.free(b).unwrap();
        }
        assert_eq!(
            vol.alloc(data[0], BlockState::Used).unwrap_err().errno(),
            libc::ENOSPC
        );
        vol.commit().unwrap();
        assert_eq!(free_now(vol), holes, "round {round}");
    }
}

/// A link count read by an inode number learnt under no glock (an iopen
/// callback's) is read past the cache and leaves nothing in it: in a
/// cluster that block may belong to another inode by now, whose glock
/// would not cover our copy (seed 7049 of the two-node exerciser read
/// such a stale copy back as another file's extended attribute block).
#[test]
fn a_link_count_read_by_a_guessed_number_is_not_cached() {
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let a = fs.mknod(root, b"a", 0o644, 0, 0, 0).unwrap();
    fs.sync().unwrap();
    fs.drop_caches().unwrap();
    assert!(!fs.volume().is_cached(a.ino.0));
    assert_eq!(fs.links_if_dinode(a.ino).unwrap(), Some(1));
    assert!(!fs.volume().is_cached(a.ino.0));
    // Cached by a read that follows the tree, the copy is the one read.
    fs.getattr(a.ino).unwrap();
    assert!(fs.volume().is_cached(a.ino.0));
    assert_eq!(fs.links_if_dinode(a.ino).unwrap(), Some(1));
    fs.unmount().unwrap();
}
