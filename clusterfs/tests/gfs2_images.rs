//! Volumes made by gfs2-utils' mkfs.gfs2: our decoders read them exactly,
//! and our core writes to them leaving fsck.gfs2 -n clean. Skipped with a
//! message when mkfs.gfs2 is not installed.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use clusterfs::block::{BlockDevice, FileDevice};
use clusterfs::fs::SetAttr;
use clusterfs::ondisk::{
    log_head, LogHeader, MetaHeader, MetaType, Rgrp, Rindex, StatfsChange, Superblock,
    GFS2_FORMAT_FS,
};
use clusterfs::volume::Volume;
use common::{assert_fsck_clean, have, mount};

fn gfs2_image(size_mb: u64, args: &[&str]) -> Option<tempfile::NamedTempFile> {
    if !have("mkfs.gfs2") {
        eprintln!("mkfs.gfs2 not installed: skipping");
        return None;
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size_mb << 20).unwrap();
    let st = Command::new("mkfs.gfs2")
        .args(["-O", "-q", "-p", "lock_nolock"])
        .args(args)
        .arg(f.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    Some(f)
}

#[test]
fn decodes_every_structure_of_a_mkfs_gfs2_volume() {
    let Some(img) = gfs2_image(96, &["-b", "1024", "-j", "2", "-r", "32"]) else {
        return;
    };
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(img.path()).unwrap());
    let mut b = vec![0u8; 1024];
    dev.read_at(65536, &mut b).unwrap();
    let sb = Superblock::decode(&b).unwrap();
    assert_eq!(
        (sb.sb_fs_format, sb.sb_bsize, sb.sb_bsize_shift),
        (GFS2_FORMAT_FS, 1024, 10)
    );
    assert_eq!(sb.sb_lockproto, "lock_nolock");

    let (mut vol, info) = Volume::open(dev.clone(), Arc::new(clusterfs::lock::LocalLocks)).unwrap();
    assert_eq!(info.replayed, 0, "a fresh volume's journal is clean");
    let rgs: Vec<Rindex> = vol.rgrps().to_vec();
    assert!(rgs.len() >= 3);
    let mut free = 0u64;
    let mut total = 0u64;
    for (i, ri) in rgs.iter().enumerate() {
        let rg = Rgrp::decode(vol.meta(ri.ri_addr).unwrap()).unwrap();
        assert_eq!(
            (rg.rg_data0, rg.rg_data, rg.rg_bitbytes),
            (ri.ri_data0, ri.ri_data, ri.ri_bitbytes)
        );
        let next = rgs
            .get(i + 1)
            .map_or(0, |n| (n.ri_addr - ri.ri_addr) as u32);
        assert_eq!(rg.rg_skip, next);
        for k in 1..ri.ri_length {
            MetaHeader::decode_as(vol.meta(ri.ri_addr + u64::from(k)).unwrap(), MetaType::Rb)
                .unwrap();
        }
        free += u64::from(rg.rg_free);
        total += u64::from(rg.rg_data);
    }
    let sc: StatfsChange = vol.statfs().unwrap();
    assert_eq!((sc.sc_total as u64, sc.sc_free as u64), (total, free));

    // Both journals: every block a valid UNMOUNT log header, in sequence.
    let master = sb.sb_master_dir.no_addr;
    let (jindex, _) = vol.dir_lookup(master, b"jindex").unwrap().unwrap();
    for j in 0..2 {
        let (jn, _) = vol
            .dir_lookup(jindex.no_addr, format!("journal{j}").as_bytes())
            .unwrap()
            .unwrap();
        let map = vol.file_block_map(jn.no_addr).unwrap();
        assert_eq!(map.len(), 8 << 10, "8 MiB of 1 KiB blocks");
        let mut prev = None;
        for (lbn, &blk) in map.iter().enumerate().take(64) {
            let lh = LogHeader::decode(vol.meta(blk).unwrap()).unwrap();
            assert_eq!(
                (lh.lh_blkno as usize, lh.lh_addr, lh.lh_jinode),
                (lbn, blk, jn.no_addr)
            );
            assert_ne!(lh.lh_flags & log_head::UNMOUNT, 0);
            if let Some(p) = prev {
                assert_eq!(lh.lh_sequence, p + 1);
            }
            prev = Some(lh.lh_sequence);
        }
    }
}

#[test]
fn our_writes_to_a_mkfs_gfs2_volume_stay_fsck_clean() {
    let Some(img) = gfs2_image(128, &["-j", "1"]) else {
        return;
    };
    let mut fs = mount(img.path());
    let root = fs.root();
    let d = fs.mkdir(root, b"data", 0o755, 0, 0).unwrap();
    for i in 0..500u32 {
        let f = fs
            .mknod(d.ino, format!("f{i}").as_bytes(), 0o644, 0, 0, 0)
            .unwrap();
        fs.write(f.ino, u64::from(i) * 1000, &vec![i as u8; 3000])
            .unwrap();
    }
    let big = fs.mknod(root, b"big", 0o644, 0, 0, 0).unwrap();
    fs.write(big.ino, 0, &vec![1u8; 9 << 20]).unwrap();
    fs.setattr(
        big.ino,
        SetAttr {
            size: Some(12345),
            ..Default::default()
        },
    )
    .unwrap();
    for i in (0..500u32).step_by(3) {
        fs.unlink(d.ino, format!("f{i}").as_bytes()).unwrap();
    }
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());
    let mut fs = mount(img.path());
    let d = fs.lookup(fs.root(), b"data").unwrap();
    let f = fs.lookup(d.ino, b"f7").unwrap();
    assert_eq!(f.size, 7000 + 3000);
    assert_eq!(fs.read(f.ino, 7000, 3000).unwrap(), vec![7u8; 3000]);
    fs.unmount().unwrap();
}
