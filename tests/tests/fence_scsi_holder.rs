//! fence_scsi through the nodes' session holders, as the real agent goes
//! through the kernel's /dev/sdX: two "nodes" (iscsiadm state directories,
//! initiator names of their own) log in to one LUN of our tgtd; fence_scsi
//! given each node's LUN file registers that node's key on the session that
//! carries its writes. Node 2 cannot write before it is unfenced (Write
//! Exclusive – Registrants Only), can after; once node 1 has fenced it
//! (PREEMPT AND ABORT through node 1's holder), its writes through its LUN
//! file fail with RESERVATION CONFLICT (EACCES) while node 1's succeed.

#[path = "iscsi_target_util.rs"]
mod util;

use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use util::Tgtd;

const IQN: &str = "iqn.2026-12.rs.rhcs:fence-holder";
const CLUSTER: &str = "holdertest";

/// A node: its iscsiadm state and mount directories, its initiator name.
struct Node {
    id: u32,
    state: PathBuf,
    mount: PathBuf,
    initiator: String,
}

impl Node {
    fn new(dir: &Path, id: u32) -> Node {
        Node {
            id,
            state: dir.join(format!("state{id}")),
            mount: dir.join(format!("by-path{id}")),
            initiator: format!("iqn.2026-12.rs.rhcs:node{id}"),
        }
    }

    fn iscsiadm(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(tests::bin("iscsiadm"));
        cmd.args(args)
            .env("ISCSI_STATE_DIR", &self.state)
            .env("ISCSI_MOUNT_DIR", &self.mount)
            .env("ISCSI_INITIATOR_NAME", &self.initiator)
            .stdin(Stdio::null());
        cmd
    }

    fn iscsiadm_ok(&self, args: &[&str]) {
        let out = self.iscsiadm(args).output().expect("run iscsiadm");
        assert!(out.status.success(), "iscsiadm {args:?}: {}", show(&out));
    }

    fn lun_file(&self, port: u16) -> PathBuf {
        self.mount
            .join(format!("ip-127.0.0.1:{port}-iscsi-{IQN}-lun-1"))
    }

    /// fence_scsi as this node, on its LUN file, its state directory in
    /// `$ISCSI_STATE_DIR`.
    fn fence(&self, port: u16, extra: &[&str]) -> Output {
        let id = self.id.to_string();
        let lun = self.lun_file(port);
        Command::new(tests::bin("fence_scsi"))
            .args(["--devices", lun.to_str().unwrap()])
            .args(["--cluster-name", CLUSTER, "--nodename", &id])
            .args(extra)
            .env("ISCSI_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .output()
            .expect("run fence_scsi")
    }

    /// Writes `fill` at block `block` through the LUN file.
    fn write(&self, port: u16, block: u64, fill: u8) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.lun_file(port))?;
        f.write_all_at(&[fill; 4096], block * 4096)?;
        f.sync_all()
    }
}

/// Logs both nodes out at the end, even when the test fails or the runner
/// is killed: no holder (a daemon, out of reach of a parent-death signal)
/// or FUSE mount outlives the test.
struct LogoutOnDrop<'a> {
    nodes: &'a [Node],
    _on_runner_death: Vec<tests::OnRunnerDeath>,
}

impl<'a> LogoutOnDrop<'a> {
    fn new(nodes: &'a [Node]) -> Self {
        let guards = nodes
            .iter()
            .map(|n| tests::OnRunnerDeath::new(&n.iscsiadm(&["-m", "node", "--logout"])))
            .collect();
        LogoutOnDrop {
            nodes,
            _on_runner_death: guards,
        }
    }
}

impl Drop for LogoutOnDrop<'_> {
    fn drop(&mut self) {
        for n in self.nodes {
            let _ = n.iscsiadm(&["-m", "node", "--logout"]).output();
        }
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_conflict(r: std::io::Result<()>, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EACCES),
        "{what}: RESERVATION CONFLICT is EACCES, got {err}"
    );
}

#[test]
fn fence_scsi_through_the_session_holders_cuts_the_victims_own_writes() {
    if !tests::require_dev_fuse() {
        return;
    }
    let tgtd = Tgtd::start();
    let disk = tgtd.tutorial_target(1, IQN);
    let port = tgtd.port;
    let dir = tempfile::tempdir().unwrap();
    let nodes = [Node::new(dir.path(), 1), Node::new(dir.path(), 2)];
    let _logout = LogoutOnDrop::new(&nodes);
    let portal = format!("127.0.0.1:{port}");
    for n in &nodes {
        n.iscsiadm_ok(&["-m", "discovery", "-t", "st", "-p", &portal]);
        n.iscsiadm_ok(&["-m", "node", "-T", IQN, "-p", &portal, "--login"]);
    }
    let [n1, n2] = &nodes;

    // Each holder's socket: beside its session record, root's only.
    for n in &nodes {
        let sock = n.state.join("sessions/1.pr");
        let mode = std::fs::metadata(&sock)
            .expect("holder socket")
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600, "{}", sock.display());
    }

    // Node 1 unfences (registers, reserves type 5) through its holder.
    let out = n1.fence(port, &["-o", "on"]);
    assert_eq!(out.status.code(), Some(0), "node 1 on: {}", show(&out));
    n1.write(port, 0, 0x11)
        .expect("node 1 writes once unfenced");
    // Node 2 is not a registrant yet: refused.
    assert_conflict(n2.write(port, 1, 0x20), "node 2 before unfencing");

    // Node 2 unfences through its holder (the stdin protocol, the state
    // directory as a key): its own writes now go through.
    let mut child = tests::spawn(
        Command::new(tests::bin("fence_scsi"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("spawn fence_scsi");
    let stdin = format!(
        "action=on\nnodename=2\ncluster_name={CLUSTER}\ndevices={}\niscsi_state_dir={}\n",
        n2.lun_file(port).display(),
        n2.state.display()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "node 2 on: {}", show(&out));
    n2.write(port, 1, 0x22)
        .expect("node 2 writes once unfenced");
    let out = n2.fence(port, &["-o", "list"]);
    assert_eq!(out.status.code(), Some(0), "list: {}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // Node 1 fences node 2.
    let out = n1.fence(port, &["-o", "off", "-n", "2"]);
    assert_eq!(out.status.code(), Some(0), "off: {}", show(&out));
    assert_conflict(n2.write(port, 2, 0x33), "node 2 after fencing");
    n1.write(port, 3, 0x44).expect("node 1 still writes");
    let out = n1.fence(port, &["-o", "status", "-n", "2"]);
    assert_eq!(out.status.code(), Some(2), "status of 2: {}", show(&out));

    let img = std::fs::read(&disk).expect("backing file");
    let block = |i: usize| &img[i * 4096..(i + 1) * 4096];
    assert!(block(0).iter().all(|b| *b == 0x11));
    assert!(block(1).iter().all(|b| *b == 0x22), "node 2's write landed");
    assert!(block(2).iter().all(|b| *b == 0), "a fenced write landed");
    assert!(block(3).iter().all(|b| *b == 0x44));

    // A path that is no holder's LUN file: a clear failure.
    let out = Command::new(tests::bin("fence_scsi"))
        .args(["-o", "monitor", "--devices"])
        .arg(&disk)
        .env("ISCSI_STATE_DIR", &n1.state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a LUN file"),
        "{}",
        show(&out)
    );
}
