//! Replays the committed fuzz corpora (`clusterfs/fuzz/corpus/<target>/`)
//! and the crash regressions (`clusterfs/fuzz/regressions/<target>/`)
//! through the same harness `cargo fuzz` runs (`clusterfs/fuzz/src/harness.rs`),
//! so CI exercises every input found without cargo-fuzz. An empty or
//! missing corpus fails.
//!
//! `write_seeds` (ignored; `cargo test -p clusterfs --test fuzz_corpus --
//! --ignored write_seeds`) makes the seed corpora from real images: ours and
//! mkfs.gfs2's, clean and with a dirty journal. See `scripts/fuzz.sh`.

#[path = "common/corpus.rs"]
mod corpus;
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clusterfs::block::{BlockDevice, MemDevice};
use clusterfs::fs::FileSystem;
use clusterfs::lock::LocalLocks;
use clusterfs::mkfs::{mkfs, LockProto, MkfsOptions};
use clusterfs::ondisk::{be32, log_head, LogHeader, MetaHeader, MetaType, GFS2_MAGIC};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_corpus_input_replays_without_a_panic() {
    corpus::replay_all(&fuzz_dir(), harness::TARGETS);
}

/// The seed images' sparse forms must mount and walk: proof the `image`
/// target gets past the mount with real volumes, not only rejections.
#[test]
fn the_image_seeds_mount() {
    let seeds = corpus::files(&fuzz_dir().join("corpus").join("image"));
    let mut mounted = 0;
    for f in &seeds {
        let img = harness::sparse_image(&std::fs::read(f).unwrap()).unwrap_or_default();
        if img.is_empty() {
            continue;
        }
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img));
        if FileSystem::mount(dev, Arc::new(LocalLocks)).is_ok() {
            mounted += 1;
        }
    }
    assert!(
        mounted >= 2,
        "only {mounted} of {} image inputs mount",
        seeds.len()
    );
}

/// A volume made by our mkfs (4 KiB blocks, small), populated; `dirty`
/// leaves the last commits in the journal.
fn our_image(dirty: bool) -> Vec<u8> {
    let dev = Arc::new(MemDevice::new(20 << 20));
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        bsize: 4096,
        rg_mb: 32,
        journal_mb: Some(8),
        uuid: Some([7; 16]),
        time: Some(1_700_000_000),
        ..Default::default()
    };
    mkfs(dev.as_ref(), &opts, &mut |_, _, _| {}).unwrap();
    let d: Arc<dyn BlockDevice> = dev.clone();
    let (mut fs, _) = FileSystem::mount(d, Arc::new(LocalLocks)).unwrap();
    let root = fs.root();
    let dir = fs.mkdir(root, b"dir", 0o755, 0, 0).unwrap();
    for i in 0..40 {
        let f = fs
            .mknod(dir.ino, format!("f{i}").as_bytes(), 0o644, 0, 0, 0)
            .unwrap();
        fs.write(f.ino, 0, &vec![i as u8; i * 10]).unwrap();
    }
    let f = fs.mknod(root, b"big", 0o644, 0, 0, 0).unwrap();
    fs.write(f.ino, 0, &[5u8; 6000]).unwrap();
    fs.setxattr(f.ino, b"user.small", b"v", 0).unwrap();
    fs.setxattr(f.ino, b"user.ed", &[6u8; 2500], 0).unwrap();
    for i in 0..12 {
        fs.setxattr(f.ino, format!("trusted.t{i}").as_bytes(), &[i as u8; 90], 0)
            .unwrap();
    }
    fs.symlink(root, b"ln", b"dir/f1", 0, 0).unwrap();
    if dirty {
        fs.sync().unwrap();
        for i in 0..5 {
            fs.unlink(dir.ino, format!("f{i}").as_bytes()).unwrap();
        }
        fs.setxattr(f.ino, b"user.late", &[9u8; 300], 0).unwrap();
        fs.sync().unwrap();
        drop(fs);
    } else {
        fs.unmount().unwrap();
    }
    dev.snapshot()
}

/// A volume made by mkfs.gfs2, when it is installed.
fn gfs2_image(bsize: u32) -> Option<Vec<u8>> {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(20 << 20).unwrap();
    let st = std::process::Command::new("mkfs.gfs2")
        .args([
            "-O",
            "-q",
            "-p",
            "lock_nolock",
            "-j",
            "1",
            "-J",
            "8",
            "-r",
            "32",
            "-b",
        ])
        .arg(bsize.to_string())
        .arg(f.path())
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    assert!(st.success());
    Some(std::fs::read(f.path()).unwrap())
}

fn mtype(b: &[u8]) -> Option<u32> {
    (b.len() >= 24 && be32(b, 0) == GFS2_MAGIC).then(|| be32(b, 4))
}

/// The image without the clean-unmount log headers that are not the
/// newest (a fresh journal has one in every block; the head stays the same).
fn drop_old_headers(mut img: Vec<u8>, bs: usize) -> Vec<u8> {
    let lhs: Vec<(usize, LogHeader)> = img
        .chunks(bs)
        .enumerate()
        .filter_map(|(i, b)| LogHeader::decode(b).ok().map(|lh| (i, lh)))
        .collect();
    let newest = lhs.iter().map(|(_, lh)| lh.lh_sequence).max().unwrap_or(0);
    for (i, lh) in lhs {
        if lh.lh_flags & log_head::UNMOUNT != 0 && lh.lh_sequence < newest {
            img[i * bs..(i + 1) * bs].fill(0);
        }
    }
    img
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// Writes seed inputs for every target from real images.
#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn write_seeds() {
    let mut images = vec![
        ("ours-clean", 4096, our_image(false)),
        ("ours-dirty", 4096, our_image(true)),
    ];
    match gfs2_image(4096) {
        Some(img) => images.push(("gfs2-4k", 4096, img)),
        None => eprintln!("mkfs.gfs2 not installed: its image is left out"),
    }
    for (name, bs, img) in &images {
        let img = drop_old_headers(img.clone(), *bs);
        write("image", name, &harness::to_sparse(&img, *bs));
        // One block of each kind per image, the first few of each.
        let mut seen = std::collections::HashMap::<u32, usize>::new();
        for (i, b) in img.chunks(*bs).enumerate() {
            let Some(t) = mtype(b) else { continue };
            let k = seen.entry(t).or_default();
            *k += 1;
            if *k > 3 {
                continue;
            }
            let target = match t {
                x if x == MetaType::Sb as u32 => "superblock",
                x if x == MetaType::Di as u32 => "dinode",
                x if x == MetaType::Rg as u32 => "rgrp",
                x if x == MetaType::Lf as u32 => "dirents",
                x if x == MetaType::Ea as u32 => "ea",
                _ => continue,
            };
            write(target, &format!("{name}-{i}"), b);
            if t == MetaType::Di as u32 && MetaHeader::decode(b).is_ok() {
                // The stuffed region of a directory dinode is a dirent region.
                write("dirents", &format!("{name}-stuffed-{i}"), &b[232..]);
            }
        }
    }
    // Journals of 512-byte blocks for the log target: a volume with 512-byte
    // blocks, left dirty, its journal's first 64 blocks from the first log
    // header on.
    let dev = Arc::new(MemDevice::new(24 << 20));
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        bsize: 512,
        rg_mb: 32,
        journal_mb: Some(8),
        uuid: Some([9; 16]),
        time: Some(1_700_000_000),
        ..Default::default()
    };
    mkfs(dev.as_ref(), &opts, &mut |_, _, _| {}).unwrap();
    let d: Arc<dyn BlockDevice> = dev.clone();
    let (mut fs, _) = FileSystem::mount(d, Arc::new(LocalLocks)).unwrap();
    let root = fs.root();
    for round in 0..3 {
        for i in 0..6 {
            let name = format!("r{round}-{i}");
            let f = fs.mknod(root, name.as_bytes(), 0o644, 0, 0, 0).unwrap();
            fs.write(f.ino, 0, &[i as u8; 700]).unwrap();
            if i % 2 == 0 {
                fs.unlink(root, name.as_bytes()).unwrap();
            }
        }
        fs.sync().unwrap();
    }
    drop(fs);
    let img = dev.snapshot();
    let first = img
        .chunks(512)
        .position(|b| mtype(b) == Some(MetaType::Lh as u32))
        .expect("a journal");
    let newest = img
        .chunks(512)
        .enumerate()
        .filter_map(|(i, b)| LogHeader::decode(b).ok().map(|lh| (lh.lh_sequence, i)))
        .max()
        .unwrap()
        .1;
    let end = (newest + 8).max(first + 64);
    write("log", "ours-dirty-512", &img[first * 512..end * 512]);
    write(
        "log",
        "ours-clean-start-512",
        &img[first * 512..(first + 16) * 512],
    );
}

/// Fuzz finding (image target, a timeout): a damaged rindex record with a
/// huge `ri_data` (and `ri_bitbytes` to match) made mount scan four
/// billion bitmap entries for unlinked dinodes. Such a record (data past
/// the device) is now refused, at once.
#[test]
fn an_rindex_record_past_the_device_is_refused_at_mount() {
    use clusterfs::ondisk::Rindex;
    let mut img = our_image(false);
    let first = {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img.clone()));
        let (mut fs, _) = FileSystem::mount(dev, Arc::new(LocalLocks)).unwrap();
        fs.volume().rgrps()[0]
    };
    let mut rec = [0u8; Rindex::SIZE];
    first.encode(&mut rec);
    let at = img
        .windows(Rindex::SIZE)
        .position(|w| w == rec)
        .expect("the first rindex record in the image");
    let bad = Rindex {
        ri_data: 0xffff_fff0,
        ri_bitbytes: 0x3fff_fffc,
        ..first
    };
    bad.encode(&mut img[at..at + Rindex::SIZE]);
    let t = std::time::Instant::now();
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img));
    let Err(err) = FileSystem::mount(dev, Arc::new(LocalLocks)) else {
        panic!("a volume whose rindex runs past the device mounted");
    };
    assert!(err.to_string().contains("rindex"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

/// Fuzz finding (superblock target): lock names that are not UTF-8, or
/// fill their field without a NUL, decoded lossily and were written back
/// changed. They are refused now; a good superblock still round-trips.
#[test]
fn superblock_lock_names_must_be_terminated_utf8() {
    use clusterfs::ondisk::Superblock;
    let img = our_image(false);
    let good = &img[65536..65536 + 4096];
    let sb = Superblock::decode(good).unwrap();
    let mut again = vec![0u8; 4096];
    sb.encode(&mut again);
    assert_eq!(Superblock::decode(&again).unwrap(), sb);
    let mut bad = good.to_vec();
    bad[160] = 0xff;
    assert!(Superblock::decode(&bad)
        .unwrap_err()
        .to_string()
        .contains("sb_locktable"));
    let mut full = good.to_vec();
    full[96..160].fill(b'x');
    assert!(Superblock::decode(&full)
        .unwrap_err()
        .to_string()
        .contains("sb_lockproto"));
}
