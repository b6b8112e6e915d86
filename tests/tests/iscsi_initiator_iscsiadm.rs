//! `iscsiadm` against Debian's tgtd: discovery records nodes, CHAP settings
//! through `-o update`, `--login` exposes the LUN as a file through FUSE
//! (mkfs.gfs2 then fsck.gfs2 -n succeed on it: a Done criterion of issue 2),
//! `-m session` lists the session, `--logout` removes the file.

#[path = "iscsi_initiator_util.rs"]
mod util;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use util::{Tgtd, IQN};

struct Adm<'a> {
    state: &'a Path,
    mount: &'a Path,
}

impl Adm<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(tests::bin("iscsiadm"));
        cmd.args(args)
            .env("ISCSI_STATE_DIR", self.state)
            .env("ISCSI_MOUNT_DIR", self.mount)
            .env("ISCSI_INITIATOR_NAME", "iqn.2026-11.test:iscsiadm")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run iscsiadm")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "iscsiadm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Logs out of every session of this state dir at the end, even when a
/// test fails or the runner is killed, so no session holder (a daemon
/// iscsiadm forks, out of reach of a parent-death signal) or FUSE mount
/// outlives the test.
struct LogoutOnDrop<'a> {
    adm: &'a Adm<'a>,
    _on_runner_death: tests::OnRunnerDeath,
}

impl<'a> LogoutOnDrop<'a> {
    fn new(adm: &'a Adm<'a>) -> Self {
        let logout = adm.command(&["-m", "node", "--logout"]);
        LogoutOnDrop {
            adm,
            _on_runner_death: tests::OnRunnerDeath::new(&logout),
        }
    }
}

impl Drop for LogoutOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.adm.run(&["-m", "node", "--logout"]);
    }
}

#[test]
fn discovery_login_mkfs_gfs2_fsck_logout() {
    let Some(t) = Tgtd::start(256) else { return };
    if !tests::require_dev_fuse() || !tests::require_all(&["mkfs.gfs2", "fsck.gfs2"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mount) = (dir.path().join("state"), dir.path().join("by-path"));
    let adm = Adm {
        state: &state,
        mount: &mount,
    };
    let _cleanup = LogoutOnDrop::new(&adm);
    let portal = t.portal();

    let out = adm.ok(&["-m", "discovery", "-t", "sendtargets", "-p", &portal]);
    assert_eq!(out, format!("{portal},1 {IQN}\n"));
    assert_eq!(adm.ok(&["-m", "node"]), format!("{portal},1 {IQN}\n"));
    assert_eq!(adm.run(&["-m", "session"]).status.code(), Some(21));

    let out = adm.ok(&["-m", "node", "--targetname", IQN, "-p", &portal, "--login"]);
    let banner = format!(
        "[iface: default, target: {IQN}, portal: 127.0.0.1,{}]",
        t.port
    );
    assert_eq!(
        out,
        format!("Logging in to {banner}\nLogin to {banner} successful.\n")
    );
    let sessions = adm.ok(&["-m", "session"]);
    assert_eq!(sessions, format!("tcp: [1] {portal},1 {IQN} (non-flash)\n"));

    let lun_file = mount.join(format!("ip-{portal}-iscsi-{IQN}-lun-1"));
    let meta = std::fs::metadata(&lun_file).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 256 << 20);

    let mkfs = Command::new("mkfs.gfs2")
        .args(["-O", "-p", "lock_nolock", "-j", "1"])
        .arg(&lun_file)
        .output()
        .expect("run mkfs.gfs2");
    assert!(
        mkfs.status.success(),
        "mkfs.gfs2: {}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    let fsck = Command::new("fsck.gfs2")
        .arg("-n")
        .arg(&lun_file)
        .output()
        .expect("run fsck.gfs2");
    assert!(
        fsck.status.success(),
        "fsck.gfs2 -n: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    // The superblock really went through the target into the backing file:
    // GFS2 magic 0x01161970 at byte 65536.
    let img = std::fs::read(&t.lun_file).unwrap();
    assert_eq!(&img[65536..65540], &[0x01, 0x16, 0x19, 0x70]);

    let out = adm.ok(&["-m", "node", "-T", IQN, "-p", &portal, "--logout"]);
    assert!(
        out.contains(&format!(
            "Logout of [sid: 1, target: {IQN}, portal: 127.0.0.1,{}] successful.",
            t.port
        )),
        "{out}"
    );
    assert!(!lun_file.exists() && std::fs::symlink_metadata(&lun_file).is_err());
    assert_eq!(adm.run(&["-m", "session"]).status.code(), Some(21));
}

#[test]
fn chap_settings_via_node_update_and_refusal() {
    let Some(t) = Tgtd::start(16) else { return };
    if !tests::require_dev_fuse() {
        return;
    }
    t.add_account("bob", "bobsecret1234", false);
    let dir = tempfile::tempdir().unwrap();
    let (state, mount) = (dir.path().join("state"), dir.path().join("by-path"));
    let adm = Adm {
        state: &state,
        mount: &mount,
    };
    let _cleanup = LogoutOnDrop::new(&adm);
    let portal = t.portal();
    adm.ok(&["-m", "discovery", "-t", "st", "-p", &portal]);
    let node = ["-m", "node", "-T", IQN, "-p", portal.as_str()];
    let update = |k: &str, v: &str| {
        let mut a = node.to_vec();
        a.extend(["-o", "update", "-n", k, "-v", v]);
        adm.ok(&a);
    };
    // Without credentials: refused as an authentication failure (24).
    let mut login = node.to_vec();
    login.push("--login");
    let out = adm.run(&login);
    assert_eq!(out.status.code(), Some(24), "{out:?}");
    update("node.session.auth.authmethod", "CHAP");
    update("node.session.auth.username", "bob");
    update("node.session.auth.password", "wrongsecret12");
    assert_eq!(adm.run(&login).status.code(), Some(24));
    update("node.session.auth.password", "bobsecret1234");
    adm.ok(&login);
    let lun_file = mount.join(format!("ip-{portal}-iscsi-{IQN}-lun-1"));
    // Writes through the file reach the target.
    std::fs::write(&lun_file, vec![0x5au8; 16 << 20]).unwrap();
    let img = std::fs::read(&t.lun_file).unwrap();
    assert!(img.iter().all(|&b| b == 0x5a));
    let mut logout = node.to_vec();
    logout.push("--logout");
    adm.ok(&logout);
    assert!(std::fs::symlink_metadata(&lun_file).is_err());
}
