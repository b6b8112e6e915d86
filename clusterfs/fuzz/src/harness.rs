//! What each fuzz target does with its input, shared by the targets
//! (`fuzz_targets/*.rs`, run by `cargo fuzz`) and by the replay test
//! `clusterfs/tests/fuzz_corpus.rs` (CI, stable), which `#[path]`-includes
//! this file. Every decoder must return an error on bad bytes, never panic
//! or allocate without bound; what decodes must re-encode to itself.

use std::sync::Arc;

use clusterfs::block::{BlockDevice, MemDevice};
use clusterfs::dirbuild::{find_dirent, parse_dirents};
use clusterfs::fs::{FileSystem, Ino};
use clusterfs::lock::LocalLocks;
use clusterfs::ondisk::{
    Dinode, EaHeader, Leaf, LogDescriptor, LogHeader, MetaHeader, Rgrp, Rindex, Superblock,
    GFS2_EAFLAG_LAST,
};
use clusterfs::replay::{find_head, replay_plan};

/// A target: its name (the corpus directory name) and what it runs.
pub type Target = (&'static str, fn(&[u8]));

/// The targets.
pub const TARGETS: &[Target] = &[
    ("superblock", superblock),
    ("dinode", dinode),
    ("rgrp", rgrp),
    ("dirents", dirents),
    ("ea", ea),
    ("log", log),
    ("image", image),
];

/// `gfs2_sb`: decode, and what decodes re-encodes to itself.
pub fn superblock(data: &[u8]) {
    if let Ok(sb) = Superblock::decode(data) {
        let mut b = vec![0u8; Superblock::SIZE];
        sb.encode(&mut b);
        assert_eq!(Superblock::decode(&b).expect("re-encoded superblock"), sb);
    }
}

/// `gfs2_dinode`.
pub fn dinode(data: &[u8]) {
    if let Ok(di) = Dinode::decode(data) {
        let mut b = vec![0u8; Dinode::SIZE];
        di.encode(&mut b);
        assert_eq!(Dinode::decode(&b).expect("re-encoded dinode"), di);
    }
}

/// `gfs2_rgrp` (with its crc) and `gfs2_rindex` records.
pub fn rgrp(data: &[u8]) {
    if let Ok(rg) = Rgrp::decode(data) {
        let mut b = vec![0u8; Rgrp::SIZE];
        rg.encode(&mut b);
        let back = Rgrp::decode(&b).expect("re-encoded rgrp");
        assert_eq!(Rgrp { rg_crc: 0, ..back }, Rgrp { rg_crc: 0, ..rg });
    }
    for rec in data.chunks(Rindex::SIZE) {
        if let Ok(ri) = Rindex::decode(rec) {
            let _ = ri.contains_data(ri.ri_data0.wrapping_add(1));
        }
    }
}

/// A leaf block (header then dirents) or, when it is not one, a stuffed
/// dirent region.
pub fn dirents(data: &[u8]) {
    let region = match Leaf::decode(data) {
        Ok(_) => &data[Leaf::SIZE..],
        Err(_) => data,
    };
    if let Ok(list) = parse_dirents(region) {
        let mut end = 0;
        for e in &list {
            // The lookup finds the first live entry of that name.
            if e.dirent.in_use() {
                let first = list
                    .iter()
                    .find(|f| {
                        f.dirent.in_use()
                            && f.dirent.de_hash == e.dirent.de_hash
                            && f.name == e.name
                    })
                    .map(|f| f.dirent.de_inum);
                let found = find_dirent(region, e.dirent.de_hash, &e.name).expect("parsed region");
                assert_eq!(found.map(|d| d.de_inum), first);
            }
        }
        for e in list {
            assert_eq!(e.offset, end, "records tile the region");
            assert_eq!(e.name.len(), usize::from(e.dirent.de_name_len));
            end += usize::from(e.dirent.de_rec_len);
        }
        assert_eq!(end, region.len());
    }
}

/// An EA block: its header, then records walked by `ea_rec_len` until the
/// last one.
pub fn ea(data: &[u8]) {
    if MetaHeader::decode(data).is_err() {
        return;
    }
    let mut off = MetaHeader::SIZE;
    while let Ok(h) = EaHeader::decode_at(data, off) {
        assert!(h.ea_rec_len as usize >= EaHeader::SIZE);
        if h.ea_flags & GFS2_EAFLAG_LAST != 0 {
            break;
        }
        off += h.ea_rec_len as usize;
    }
}

/// A journal of 512-byte blocks: every log header and descriptor decoded,
/// then the newest head found and the replay planned from it.
pub fn log(data: &[u8]) {
    const BS: usize = 512;
    let blocks: Vec<&[u8]> = data.chunks_exact(BS).collect();
    for b in &blocks {
        let _ = LogHeader::decode(b);
        let _ = LogDescriptor::decode(b);
    }
    if blocks.is_empty() {
        return;
    }
    let Some(head) = find_head(blocks.iter().enumerate().map(|(i, b)| (i as u32, *b))) else {
        return;
    };
    let n = blocks.len() as u32;
    let _ = replay_plan(0, n, &head, |lbn| {
        Ok(blocks
            .get(lbn as usize)
            .expect("replay reads inside the journal")
            .to_vec())
    });
}

/// Largest device an `image` input makes.
pub const IMAGE_MAX_BYTES: u64 = 32 << 20;

/// A whole volume, in a sparse form: `u32` device size in blocks and one
/// byte log2(block size) (9..=16), then records `u32` block number, `u16`
/// length, that many bytes (the rest of the block zero), all big-endian.
/// Returns the device bytes, or `None` when the header is unusable.
pub fn sparse_image(data: &[u8]) -> Option<Vec<u8>> {
    let blocks = u64::from(u32::from_be_bytes(data.get(..4)?.try_into().ok()?));
    let shift = *data.get(4)?;
    if !(9..=16).contains(&shift) {
        return None;
    }
    let bs = 1u64 << shift;
    let size = blocks.checked_mul(bs)?;
    if size > IMAGE_MAX_BYTES || size < 65536 + bs {
        return None;
    }
    let mut img = vec![0u8; size as usize];
    let mut rest = &data[5..];
    while rest.len() >= 6 {
        let blk = u64::from(u32::from_be_bytes(rest[..4].try_into().unwrap()));
        let len = usize::from(u16::from_be_bytes(rest[4..6].try_into().unwrap()));
        let body = &rest[6..];
        let len = len.min(body.len()).min(bs as usize);
        if blk < blocks {
            let at = (blk * bs) as usize;
            img[at..at + len].copy_from_slice(&body[..len]);
        }
        rest = &body[len..];
    }
    Some(img)
}

/// Encodes a device image in the [`sparse_image`] form (blocks of zeros
/// left out, each block's trailing zeros trimmed).
pub fn to_sparse(img: &[u8], bsize: usize) -> Vec<u8> {
    let mut out = ((img.len() / bsize) as u32).to_be_bytes().to_vec();
    out.push(bsize.trailing_zeros() as u8);
    for (i, b) in img.chunks(bsize).enumerate() {
        let Some(last) = b.iter().rposition(|&x| x != 0) else {
            continue;
        };
        out.extend_from_slice(&(i as u32).to_be_bytes());
        out.extend_from_slice(&((last + 1) as u16).to_be_bytes());
        out.extend_from_slice(&b[..=last]);
    }
    out
}

/// Mounts a volume made from a [`sparse_image`] input and walks it:
/// every directory listed, every entry looked up, its attributes listed and
/// read, files and links read, then a write, and an unmount. Errors are
/// fine; a panic is a finding.
pub fn image(data: &[u8]) {
    let Some(img) = sparse_image(data) else {
        return;
    };
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img));
    let Ok((mut fs, _)) = FileSystem::mount(dev, Arc::new(LocalLocks)) else {
        return;
    };
    let root = fs.root();
    let mut budget = 500;
    walk(&mut fs, root, &mut budget, 0);
    if let Ok(a) = fs.mknod(root, b"fuzz-new", 0o644, 0, 0, 0) {
        let _ = fs.write(a.ino, 0, &[1u8; 3000]);
        let _ = fs.setxattr(a.ino, b"user.fuzz", b"v", 0);
    }
    let _ = fs.unmount();
}

fn walk(fs: &mut FileSystem, dir: Ino, budget: &mut usize, depth: usize) {
    if depth > 16 {
        return;
    }
    let mut after = 0;
    while *budget > 0 {
        let Ok(batch) = fs.readdir(dir, after, 64) else {
            return;
        };
        let Some(last) = batch.last() else { return };
        if last.cookie <= after && after != 0 {
            return;
        }
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
                libc::S_IFDIR => walk(fs, a.ino, budget, depth + 1),
                libc::S_IFLNK => drop(fs.readlink(a.ino)),
                _ => drop(fs.read(a.ino, 0, 64 << 10)),
            }
        }
    }
}
