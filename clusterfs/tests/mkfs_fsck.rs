//! Volumes made by our mkfs must pass `fsck.gfs2 -n` (the independent
//! oracle from gfs2-utils). Skipped with a message when it is not installed.

use std::path::Path;
use std::process::Command;

use clusterfs::block::FileDevice;
use clusterfs::mkfs::{mkfs, LockProto, MkfsOptions};

fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

fn fsck_clean(path: &Path) -> (bool, String) {
    let out = Command::new("fsck.gfs2")
        .arg("-n")
        .arg(path)
        .output()
        .expect("run fsck.gfs2");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn make(size: u64, opts: &MkfsOptions) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    let dev = FileDevice::open(f.path()).unwrap();
    mkfs(&dev, opts, &mut |_, _, _| {}).unwrap();
    f
}

fn check(size_mb: u64, bsize: u32, journals: u32, rg_mb: u32) {
    if !have("fsck.gfs2") {
        eprintln!("fsck.gfs2 not installed: skipping");
        return;
    }
    let opts = MkfsOptions {
        lockproto: LockProto::LockDlm,
        locktable: "alpha:gfs0".into(),
        journals,
        bsize,
        rg_mb,
        ..Default::default()
    };
    let f = make(size_mb << 20, &opts);
    let (ok, text) = fsck_clean(f.path());
    assert!(
        ok,
        "fsck.gfs2 -n failed for {size_mb} MiB bsize {bsize} j{journals}:\n{text}"
    );
    assert!(!text.contains("fix"), "fsck.gfs2 found problems:\n{text}");
}

#[test]
fn fsck_clean_64m_4k_1j() {
    check(64, 4096, 1, 256);
}

#[test]
fn fsck_clean_64m_512_3j() {
    check(64, 512, 3, 32);
}

#[test]
fn fsck_clean_256m_1k_4j() {
    check(256, 1024, 4, 64);
}

#[test]
fn fsck_clean_1g_2k_2j() {
    check(1024, 2048, 2, 32);
}

#[test]
fn fsck_clean_1g_4k_8j_small_rgrps() {
    check(1024, 4096, 8, 32);
}
