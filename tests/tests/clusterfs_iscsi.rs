//! mkfs.clusterfs and mount.clusterfs on an `iscsi://` LUN served by our
//! tgtd: the seeded random workload through the FUSE mount must match the
//! reference model, and after unmount the backing file must pass
//! `fsck.gfs2 -n`. Skipped (counted as skipped; failed under CI) when
//! /dev/fuse, fusermount3 or fsck.gfs2 are missing. More steps:
//! CLUSTERFS_ISCSI_STEPS.

#[path = "iscsi_target_util.rs"]
mod iscsi_target_util;
#[path = "../../clusterfs/tests/common/model.rs"]
mod model;
#[path = "support/mounted.rs"]
mod mounted;

use std::fs;
use std::process::Command;

use iscsi_target_util::Tgtd;
use mounted::Mounted;
use tests::FuseMount;

const IQN: &str = "iqn.2026-11.org.clusterfs:iscsi-test";

#[test]
fn clusterfs_on_iscsi_lun_passes_the_exerciser_and_fsck() {
    if !tests::require_fuse() || !tests::require("fsck.gfs2") {
        return;
    }
    let steps = std::env::var("CLUSTERFS_ISCSI_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let mut tgtd = Tgtd::start();
    let backing = tgtd.backing_file("lun1.img", 256);
    tgtd.export(1, IQN, &backing);
    let url = tgtd.url(IQN, 1);

    let st = Command::new(tests::bin("mkfs_clusterfs"))
        .args(["-q", "-O", "-p", "lock_nolock", "-t", "test:fs", "-j", "1"])
        .arg(&url)
        .status()
        .expect("run mkfs_clusterfs");
    assert!(st.success(), "mkfs_clusterfs {url}: {st}");

    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = FuseMount::start(
        Command::new(tests::bin("mount_clusterfs"))
            .arg(&url)
            .arg(&mnt)
            .args(["-o", "lockproto=lock_nolock", "-f"]),
        &mnt,
    );
    let mut target = Mounted(mnt.clone());
    let model = model::run(4242, steps, &mut target, &mut |_, _| {});
    assert!(
        !model::all_paths(&mut model.clone()).is_empty(),
        "the workload created nothing"
    );
    m.unmount();
    tgtd.stop();

    // Everything went over iSCSI: the target's backing file is the volume.
    tests::fsck_clean(&backing);
}
