//! Extended attributes beyond one EA block: values in ED blocks (up to
//! XATTR_SIZE_MAX), the indirect EA block when one EA block is full,
//! space accounting, freeing on removal and unlink, ENOSPC half-way, and
//! `fsck.gfs2 -n` as the judge of every layout.

mod common;

use clusterfs::fs::FileSystem;
use common::{assert_fsck_clean, image, mount};

fn value(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

fn bfree(fs: &mut FileSystem) -> u64 {
    fs.statfs().unwrap().bfree
}

#[test]
fn large_values_live_in_ed_blocks_and_are_freed() {
    for bsize in [1024u32, 4096] {
        let jb = bsize as usize - 24;
        let img = image(64, bsize);
        let mut fs = mount(img.path());
        let root = fs.root();
        let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
        let free0 = bfree(&mut fs);
        let big = value(65536, 1);
        fs.setxattr(f.ino, b"user.big", &big, 0).unwrap();
        let eds = 65536usize.div_ceil(jb) as u64;
        // The EA block and the ED blocks.
        assert_eq!(free0 - bfree(&mut fs), eds + 1, "bsize {bsize}");
        assert_eq!(fs.getattr(f.ino).unwrap().blocks, 1 + eds + 1);
        let sizes = [jb - 40, jb + 1, 3 * jb, 20_000];
        for (i, n) in sizes.iter().enumerate() {
            let name = format!("trusted.v{i}");
            fs.setxattr(f.ino, name.as_bytes(), &value(*n, i as u8), 0)
                .unwrap();
        }
        assert_eq!(
            fs.setxattr(f.ino, b"user.toobig", &vec![0u8; 65537], 0)
                .unwrap_err()
                .errno(),
            libc::ERANGE
        );
        fs.unmount().unwrap();
        assert_fsck_clean(img.path());

        let mut fs = mount(img.path());
        let f = fs.lookup(fs.root(), b"f").unwrap();
        assert_eq!(fs.getxattr(f.ino, b"user.big").unwrap(), big);
        for (i, n) in sizes.iter().enumerate() {
            let name = format!("trusted.v{i}");
            assert_eq!(
                fs.getxattr(f.ino, name.as_bytes()).unwrap(),
                value(*n, i as u8)
            );
        }
        // Replacing with a small value frees the ED blocks.
        let before = bfree(&mut fs);
        fs.setxattr(f.ino, b"user.big", b"small", 2).unwrap();
        fs.sync().unwrap();
        assert_eq!(bfree(&mut fs) - before, eds);
        assert_eq!(fs.getxattr(f.ino, b"user.big").unwrap(), b"small");
        fs.removexattr(f.ino, b"trusted.v3").unwrap();
        fs.unmount().unwrap();
        assert_fsck_clean(img.path());

        let mut fs = mount(img.path());
        let root = fs.root();
        fs.unlink(root, b"f").unwrap();
        fs.sync().unwrap();
        let f0_total = free0 + 1; // the dinode itself
        assert_eq!(bfree(&mut fs), f0_total);
        fs.unmount().unwrap();
        assert_fsck_clean(img.path());
    }
}

#[test]
fn values_too_large_for_the_pointer_list_are_erange() {
    // At 512-byte blocks a 64 KiB value needs 135 pointers: more than one
    // EA record can hold, as the kernel's ea_check_size says.
    let img = image(64, 512);
    let mut fs = mount(img.path());
    let root = fs.root();
    let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
    let free0 = bfree(&mut fs);
    let err = fs
        .setxattr(f.ino, b"user.x", &vec![1u8; 65536], 0)
        .unwrap_err();
    assert_eq!(err.errno(), libc::ERANGE);
    assert_eq!(bfree(&mut fs), free0);
    fs.setxattr(f.ino, b"user.x", &value(20_000, 3), 0).unwrap();
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
    let mut fs = mount(img.path());
    let f = fs.lookup(fs.root(), b"f").unwrap();
    assert_eq!(fs.getxattr(f.ino, b"user.x").unwrap(), value(20_000, 3));
    fs.unmount().unwrap();
}

#[test]
fn full_ea_block_goes_indirect_and_unlink_frees_everything() {
    let img = image(64, 1024);
    let mut fs = mount(img.path());
    let root = fs.root();
    let free0 = bfree(&mut fs);
    let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
    // ~150 bytes per record, ~6 per 1 KiB EA block: many EA blocks, some
    // with ED values mixed in.
    for n in 0..200 {
        let v = if n % 25 == 0 {
            value(5000, n as u8)
        } else {
            value(120, n as u8)
        };
        fs.setxattr(f.ino, format!("user.attr{n}").as_bytes(), &v, 0)
            .unwrap();
    }
    // Remove some, so later ones reuse the holes.
    for n in (0..200).step_by(7) {
        fs.removexattr(f.ino, format!("user.attr{n}").as_bytes())
            .unwrap();
    }
    for n in 200..230 {
        fs.setxattr(f.ino, format!("user.attr{n}").as_bytes(), &value(100, 9), 0)
            .unwrap();
    }
    let names = fs.listxattr(f.ino).unwrap();
    assert_eq!(names.len(), 200 - 29 + 30);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let root = fs.root();
    let f = fs.lookup(root, b"f").unwrap();
    assert!(
        f.blocks > 30,
        "EA blocks counted in di_blocks: {}",
        f.blocks
    );
    for n in (1..200).filter(|n| n % 7 != 0) {
        let want = if n % 25 == 0 {
            value(5000, n as u8)
        } else {
            value(120, n as u8)
        };
        let name = format!("user.attr{n}");
        assert_eq!(fs.getxattr(f.ino, name.as_bytes()).unwrap(), want, "{name}");
    }
    fs.unlink(root, b"f").unwrap();
    fs.sync().unwrap();
    assert_eq!(bfree(&mut fs), free0);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}

#[test]
fn enospc_half_way_through_a_large_value_changes_nothing() {
    let img = image(48, 1024);
    let mut fs = mount(img.path());
    let root = fs.root();
    let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
    fs.setxattr(f.ino, b"user.keep", &value(3000, 5), 0)
        .unwrap();
    let filler = fs.mknod(root, b"filler", 0o644, 0, 0, 0).unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    let mut off = 0u64;
    while bfree(&mut fs) > 200 {
        fs.write(filler.ino, off, &chunk).unwrap();
        off += chunk.len() as u64;
    }
    let small = vec![0x5au8; 1024];
    while bfree(&mut fs) > 30 {
        fs.write(filler.ino, off, &small).unwrap();
        off += small.len() as u64;
    }
    fs.sync().unwrap();
    let free = bfree(&mut fs);
    let blocks = fs.getattr(f.ino).unwrap().blocks;
    let err = fs
        .setxattr(f.ino, b"user.huge", &value(65536, 6), 0)
        .unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC);
    assert_eq!(bfree(&mut fs), free);
    assert_eq!(fs.getattr(f.ino).unwrap().blocks, blocks);
    // Replacing an existing value that does not fit keeps the old one.
    let err = fs
        .setxattr(f.ino, b"user.keep", &value(65536, 7), 0)
        .unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC);
    assert_eq!(fs.getxattr(f.ino, b"user.keep").unwrap(), value(3000, 5));
    assert_eq!(
        fs.getxattr(f.ino, b"user.huge").unwrap_err().errno(),
        libc::ENODATA
    );
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
    let mut fs = mount(img.path());
    let f = fs.lookup(fs.root(), b"f").unwrap();
    assert_eq!(fs.getxattr(f.ino, b"user.keep").unwrap(), value(3000, 5));
    fs.unmount().unwrap();
}

/// Attributes laid out the way another writer may leave them (not by our
/// xattr code): `di_eattr` → indirect block → two EA blocks; the second
/// starts with an unused record, then a stuffed one, then an unstuffed one
/// whose 5-byte name puts its pointers at the next 8-byte boundary and
/// whose ED blocks are listed out of allocation order. fsck.gfs2 accepts
/// the layout; we read, remove and free it.
#[test]
fn reads_and_frees_attributes_laid_out_by_others() {
    use clusterfs::ondisk::{dif, eatype, put64, BlockState, EaHeader, MetaHeader, MetaType};
    const LAST: u8 = 1;
    let bsize = 1024usize;
    let jb = bsize - 24;
    let img = image(64, bsize as u32);
    let mut fs = mount(img.path());
    let root = fs.root();
    let f = fs.mknod(root, b"f", 0o644, 0, 0, 0).unwrap();
    let free0 = bfree(&mut fs);
    let blob = value(jb * 2 + jb / 2, 42);
    {
        let v = fs.volume();
        let ino = f.ino.0;
        let mut alloc = || v.alloc(ino, BlockState::Used).unwrap();
        let (ind, ea1, ea2) = (alloc(), alloc(), alloc());
        let eds = [alloc(), alloc(), alloc()];
        let order = [eds[2], eds[0], eds[1]];
        let v = fs.volume();
        let b = v.meta_new(ind);
        MetaHeader::new(MetaType::In).encode(b);
        put64(b, 24, ea1);
        put64(b, 32, ea2);
        let b = v.meta_new(ea1);
        MetaHeader::new(MetaType::Ea).encode(b);
        let h = |rec: usize, data: usize, name: usize, t: u8, flags: u8, ptrs: u8| EaHeader {
            ea_rec_len: rec as u32,
            ea_data_len: data as u32,
            ea_name_len: name as u8,
            ea_type: t,
            ea_flags: flags,
            ea_num_ptrs: ptrs,
        };
        h(bsize - 24, 3, 1, eatype::USR, LAST, 0).encode_at(b, 24);
        b[40..44].copy_from_slice(b"axyz");
        let b = v.meta_new(ea2);
        MetaHeader::new(MetaType::Ea).encode(b);
        h(32, 0, 0, eatype::UNUSED, 0, 0).encode_at(b, 24);
        h(24, 2, 1, eatype::TRUSTED, 0, 0).encode_at(b, 56);
        b[72..75].copy_from_slice(b"kv1");
        h(bsize - 80, blob.len(), 5, eatype::USR, LAST, 3).encode_at(b, 80);
        b[96..101].copy_from_slice(b"blob5");
        for (i, &p) in order.iter().enumerate() {
            put64(b, 104 + 8 * i, p);
        }
        for (i, &p) in order.iter().enumerate() {
            let b = v.meta_new(p);
            MetaHeader::new(MetaType::Ed).encode(b);
            let chunk = &blob[i * jb..((i + 1) * jb).min(blob.len())];
            b[24..24 + chunk.len()].copy_from_slice(chunk);
        }
        let mut di = v.dinode(ino).unwrap();
        di.di_eattr = ind;
        di.di_flags |= dif::EA_INDIRECT;
        di.di_blocks += 6;
        v.put_dinode(&di).unwrap();
    }
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let f = fs.lookup(fs.root(), b"f").unwrap();
    let mut names = fs.listxattr(f.ino).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![
            b"trusted.k".to_vec(),
            b"user.a".to_vec(),
            b"user.blob5".to_vec()
        ]
    );
    assert_eq!(fs.getxattr(f.ino, b"user.a").unwrap(), b"xyz");
    assert_eq!(fs.getxattr(f.ino, b"trusted.k").unwrap(), b"v1");
    assert_eq!(fs.getxattr(f.ino, b"user.blob5").unwrap(), blob);
    let before = bfree(&mut fs);
    fs.removexattr(f.ino, b"user.blob5").unwrap();
    assert_eq!(bfree(&mut fs) - before, 3);
    // The freed record's space takes a new value.
    fs.setxattr(f.ino, b"user.new", &value(400, 1), 0).unwrap();
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
    let mut fs = mount(img.path());
    let root = fs.root();
    let f = fs.lookup(root, b"f").unwrap();
    assert_eq!(fs.getxattr(f.ino, b"user.new").unwrap(), value(400, 1));
    fs.unlink(root, b"f").unwrap();
    fs.sync().unwrap();
    assert_eq!(bfree(&mut fs), free0 + 1);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
}
