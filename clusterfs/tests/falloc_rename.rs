//! fallocate modes (KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE) and
//! renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE) in the core, with
//! space accounting and `fsck.gfs2 -n` after. The random exerciser runs
//! them against the model too.

mod common;

use clusterfs::falloc::{KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE};
use clusterfs::fs::{FileSystem, RenameFlags, SetAttr};
use common::{assert_fsck_clean, image, mount};

fn bfree(fs: &mut FileSystem) -> u64 {
    fs.statfs().unwrap().bfree
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 + 1).collect()
}

#[test]
fn punch_keep_size_and_zero_range() {
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
    let data = pattern(1 << 20);
    fs.write(f.ino, 0, &data).unwrap();
    let (free, blocks) = (bfree(&mut fs), fs.getattr(f.ino).unwrap().blocks);

    // Punch [100 KiB + 5, 600 KiB): 124 whole blocks go, the edges zeroed.
    let (off, end) = (100 * 1024 + 5, 600 * 1024);
    fs.fallocate(f.ino, off, end - off, PUNCH_HOLE | KEEP_SIZE)
        .unwrap();
    fs.sync().unwrap();
    assert_eq!(bfree(&mut fs) - free, 124);
    assert_eq!(blocks - fs.getattr(f.ino).unwrap().blocks, 124);
    let mut want = data.clone();
    want[off as usize..end as usize].fill(0);
    assert_eq!(fs.getattr(f.ino).unwrap().size, 1 << 20);
    assert_eq!(fs.read(f.ino, 0, 2 << 20).unwrap(), want);

    // ZERO_RANGE over part of the hole and data, growing the file.
    fs.fallocate(f.ino, 900 * 1024, 300 * 1024, ZERO_RANGE)
        .unwrap();
    want[900 * 1024..].fill(0);
    want.resize(1200 * 1024, 0);
    assert_eq!(fs.read(f.ino, 0, 2 << 20).unwrap(), want);
    // ZERO_RANGE|KEEP_SIZE refills the hole's blocks, size unchanged.
    let before = bfree(&mut fs);
    fs.fallocate(f.ino, 200 * 1024, 100 * 1024, ZERO_RANGE | KEEP_SIZE)
        .unwrap();
    assert_eq!(before - bfree(&mut fs), 25);
    assert_eq!(fs.read(f.ino, 0, 2 << 20).unwrap(), want);

    // KEEP_SIZE preallocation past the end: blocks but no size.
    let before = bfree(&mut fs);
    fs.fallocate(f.ino, 1300 * 1024, 400 * 1024, KEEP_SIZE)
        .unwrap();
    assert_eq!(before - bfree(&mut fs), 100);
    assert_eq!(fs.getattr(f.ino).unwrap().size, 1200 * 1024);
    // Mode 0 grows the size; the new part reads as zeros.
    let g = fs.mknod(root, b"g", 0o644, 0, 0, 0).unwrap();
    fs.write(g.ino, 0, b"abc").unwrap();
    fs.fallocate(g.ino, 10, 5000, 0).unwrap();
    let mut gw = b"abc".to_vec();
    gw.resize(5010, 0);
    assert_eq!(fs.read(g.ino, 0, 9000).unwrap(), gw);
    // A stuffed file: punch zeroes in place.
    let s = fs.mknod(root, b"s", 0o644, 0, 0, 0).unwrap();
    fs.write(s.ino, 0, b"hello world").unwrap();
    fs.fallocate(s.ino, 2, 3, PUNCH_HOLE | KEEP_SIZE).unwrap();
    assert_eq!(fs.read(s.ino, 0, 100).unwrap(), b"he\0\0\0 world");

    for bad in [PUNCH_HOLE, 0x08, 0x20, 0x40] {
        assert_eq!(
            fs.fallocate(f.ino, 0, 10, bad).unwrap_err().errno(),
            libc::EOPNOTSUPP,
            "mode {bad:#x}"
        );
    }
    assert_eq!(
        fs.fallocate(f.ino, 0, 0, 0).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        fs.fallocate(root, 0, 10, 0).unwrap_err().errno(),
        libc::EISDIR
    );
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    // Truncating frees the preallocated blocks past the old end too.
    let mut fs = mount(img.path());
    let root = fs.root();
    let f = fs.lookup(root, b"f").unwrap();
    let free = bfree(&mut fs);
    let blocks = f.blocks;
    let trunc = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    fs.setattr(f.ino, trunc).unwrap();
    fs.sync().unwrap();
    assert_eq!(bfree(&mut fs) - free, blocks - 1);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn rename_noreplace_and_exchange() {
    let img = image(64, 1024);
    let mut fs = mount(img.path());
    let root = fs.root();
    let a = fs.mkdir(root, b"a", 0o755, 0, 0).unwrap();
    let b = fs.mkdir(root, b"b", 0o755, 0, 0).unwrap();
    let sub = fs.mkdir(a.ino, b"sub", 0o755, 0, 0).unwrap();
    fs.mknod(sub.ino, b"inner", 0o644, 0, 0, 0).unwrap();
    let file = fs.mknod(b.ino, b"file", 0o644, 0, 0, 0).unwrap();
    fs.write(file.ino, 0, b"contents").unwrap();
    let nr = RenameFlags {
        noreplace: true,
        exchange: false,
    };
    let ex = RenameFlags {
        noreplace: false,
        exchange: true,
    };
    let both = RenameFlags {
        noreplace: true,
        exchange: true,
    };
    assert_eq!(
        fs.rename(b.ino, b"file", a.ino, b"sub", nr)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    fs.rename(b.ino, b"file", b.ino, b"file2", nr).unwrap();
    fs.rename(b.ino, b"file2", b.ino, b"file", nr).unwrap();
    assert_eq!(
        fs.rename(b.ino, b"file", a.ino, b"nothing", ex)
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    assert_eq!(
        fs.rename(b.ino, b"file", a.ino, b"sub", both)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    // A directory into its own subtree by exchange.
    assert_eq!(
        fs.rename(root, b"a", sub.ino, b"inner", ex)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );

    // Swap a/sub (a directory) with b/file across directories.
    let (na, nb) = (
        fs.getattr(a.ino).unwrap().nlink,
        fs.getattr(b.ino).unwrap().nlink,
    );
    fs.rename(a.ino, b"sub", b.ino, b"file", ex).unwrap();
    assert_eq!(fs.lookup(a.ino, b"sub").unwrap().ino, file.ino);
    assert_eq!(fs.lookup(b.ino, b"file").unwrap().ino, sub.ino);
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, na - 1);
    assert_eq!(fs.getattr(b.ino).unwrap().nlink, nb + 1);
    assert_eq!(fs.lookup(sub.ino, b"..").unwrap().ino, b.ino);
    assert_eq!(fs.read(file.ino, 0, 100).unwrap(), b"contents");
    // Within one directory: plain swap.
    let x = fs.mknod(root, b"x", 0o644, 0, 0, 0).unwrap();
    fs.rename(root, b"x", root, b"a", ex).unwrap();
    assert_eq!(fs.lookup(root, b"a").unwrap().ino, x.ino);
    assert_eq!(fs.lookup(root, b"x").unwrap().ino, a.ino);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let root = fs.root();
    let x = fs.lookup(root, b"x").unwrap();
    let sub = fs.lookup(x.ino, b"sub").unwrap();
    assert_eq!(fs.read(sub.ino, 0, 100).unwrap(), b"contents");
    fs.unmount().unwrap();
}
