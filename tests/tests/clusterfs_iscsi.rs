//! mkfs.clusterfs and mount.clusterfs on an `iscsi://` LUN served by our
//! tgtd: the seeded random workload through the FUSE mount must match the
//! reference model, and after unmount the backing file must pass
//! `fsck.gfs2 -n`. Skipped with a message when /dev/fuse, fusermount3 or
//! fsck.gfs2 are missing. More steps: CLUSTERFS_ISCSI_STEPS.

#[path = "iscsi_target_util.rs"]
mod iscsi_target_util;
#[path = "../../clusterfs/tests/common/model.rs"]
mod model;
#[path = "support/mounted.rs"]
mod mounted;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iscsi_target_util::Tgtd;
use mounted::Mounted;

const IQN: &str = "iqn.2026-11.org.clusterfs:iscsi-test";
/// Generous: the CI machine is small and shared.
const TIMEOUT: Duration = Duration::from_secs(60);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills and reaps a child we started (by PID) unless it already exited.
fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn is_mounted(mnt: &Path) -> bool {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
}

/// A foreground mount.clusterfs; killed and detached on drop if a test
/// fails before the clean unmount.
struct Mount {
    child: Child,
    mnt: PathBuf,
}

impl Mount {
    fn start(device: &str, mnt: &Path) -> Mount {
        let child = Command::new(tests::bin("mount_clusterfs"))
            .arg(device)
            .arg(mnt)
            .args(["-o", "lockproto=lock_nolock", "-f"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn mount_clusterfs");
        let mut m = Mount {
            child,
            mnt: mnt.to_path_buf(),
        };
        wait_for("the mount", || {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("mount_clusterfs exited early: {st}");
            }
            is_mounted(mnt)
        });
        m
    }

    /// `fusermount3 -u`, then the process must exit 0.
    fn unmount(mut self) {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status()
            .expect("run fusermount3");
        assert!(st.success(), "fusermount3 -u: {st}");
        let st = self.child.wait().expect("wait for mount_clusterfs");
        assert!(st.success(), "mount_clusterfs exit {st}");
        assert!(!is_mounted(&self.mnt));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            reap(&mut self.child);
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mnt)
                .status();
        }
    }
}

/// The FUSE mount, addressed by path.
fn prerequisites_ok() -> bool {
    for (ok, what) in [
        (Path::new("/dev/fuse").exists(), "/dev/fuse"),
        (tests::have("fusermount3"), "fusermount3"),
        (tests::have("fsck.gfs2"), "fsck.gfs2"),
    ] {
        if !ok {
            eprintln!("{what} missing: skipping the iscsi:// clusterfs test");
            return false;
        }
    }
    true
}

fn fsck_clean(img: &Path) {
    let out = Command::new("fsck.gfs2")
        .arg("-n")
        .arg(img)
        .output()
        .expect("run fsck.gfs2");
    assert!(
        out.status.success(),
        "fsck.gfs2 -n:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clusterfs_on_iscsi_lun_passes_the_exerciser_and_fsck() {
    if !prerequisites_ok() {
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
    let m = Mount::start(&url, &mnt);
    let mut target = Mounted(mnt.clone());
    let model = model::run(4242, steps, &mut target, &mut |_, _| {});
    assert!(
        !model::all_paths(&mut model.clone()).is_empty(),
        "the workload created nothing"
    );
    m.unmount();
    tgtd.stop();

    // Everything went over iSCSI: the target's backing file is the volume.
    fsck_clean(&backing);
}
