//! Our log is GFS2's log: a volume left with a dirty journal (mounted,
//! committed, never unmounted) is replayed by gfs2-utils' own recovery in
//! `fsck.gfs2 -y`, after which `fsck.gfs2 -n` is clean and our data is there.

mod common;

use common::{have, image, mount};

#[test]
fn fsck_gfs2_replays_our_journal() {
    if !have("fsck.gfs2") {
        eprintln!("fsck.gfs2 not installed: skipping");
        return;
    }
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let d = fs.mkdir(root, b"d", 0o755, 0, 0).unwrap();
    for i in 0..50 {
        let f = fs
            .mknod(d.ino, format!("f{i}").as_bytes(), 0o644, 0, 0, 0)
            .unwrap();
        fs.write(f.ino, 0, &vec![i as u8; 1000 * i]).unwrap();
    }
    fs.sync().unwrap();
    drop(fs); // no unmount: the journal's head is a FLUSH header, not UNMOUNT

    let text = common::fsck_repair(img.path());
    // gfs2-utils' recovery must accept every descriptor and copy we wrote.
    let line = text
        .lines()
        .find(|l| l.contains("metadata blocks") && l.contains("Replayed"))
        .unwrap_or_else(|| panic!("fsck.gfs2 did not replay the journal:\n{text}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        nums.len() >= 2 && nums[0] == nums[1] && nums[0] > 0,
        "{line}"
    );
    common::assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let d = fs.lookup(fs.root(), b"d").unwrap();
    let f = fs.lookup(d.ino, b"f33").unwrap();
    assert_eq!(fs.read(f.ino, 0, 40_000).unwrap(), vec![33u8; 33_000]);
    fs.unmount().unwrap();
}
