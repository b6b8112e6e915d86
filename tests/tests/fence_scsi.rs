//! fence_scsi end to end against our tgtd: two nodes unfence (register +
//! reserve Write Exclusive – Registrants Only), node 1 fences node 2 with
//! PREEMPT AND ABORT, and node 2's writes then end with RESERVATION CONFLICT
//! (SPC-4 5.9.7 / table 66) while node 1 keeps writing.

#[path = "iscsi_target_util.rs"]
mod util;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use iscsi::initiator::lun::{session_config, LunOptions};
use iscsi::initiator::{Connection, IscsiUrl, Lun, PersistentReserve};
use util::Tgtd;

const IQN: &str = "iqn.2026-11.rs.rhcs:fence-scsi";
const CLUSTER: &str = "fencetest";

/// A cluster node as the target sees it: its own initiator port.
struct Node {
    id: u32,
    initiator: String,
    isid: &'static str,
}

fn nodes() -> [Node; 2] {
    [
        Node {
            id: 1,
            initiator: "iqn.2026-11.rs.rhcs:node1".into(),
            isid: "400000000001",
        },
        Node {
            id: 2,
            initiator: "iqn.2026-11.rs.rhcs:node2".into(),
            isid: "400000000002",
        },
    ]
}

fn common_args(node: &Node, url: &str) -> Vec<String> {
    [
        "--devices",
        url,
        "--cluster-name",
        CLUSTER,
        "--nodename",
        &node.id.to_string(),
        "--initiator-name",
        &node.initiator,
        "--isid",
        node.isid,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs fence_scsi as `node` with command-line options.
fn fence(node: &Node, url: &str, extra: &[&str]) -> Output {
    let bin = tests::bin("fence_scsi");
    let mut args = common_args(node, url);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    util::run(bin.to_str().unwrap(), &refs)
}

/// Runs fence_scsi as `node` with the agent protocol on stdin.
fn fence_stdin(text: &str) -> Output {
    let mut child = tests::spawn(
        Command::new(tests::bin("fence_scsi"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("spawn fence_scsi");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().expect("fence_scsi output")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Opens the LUN through the node's own I_T nexus (initiator name + ISID).
fn open_lun(node: &Node, url: &str) -> Lun {
    let parsed = IscsiUrl::parse(url).expect("url");
    let opts = LunOptions {
        initiator_name: node.initiator.clone(),
        ..LunOptions::default()
    };
    let mut cfg = session_config(&parsed, &opts).expect("session config");
    let isid = u64::from_str_radix(node.isid, 16).unwrap().to_be_bytes();
    cfg.login.isid.copy_from_slice(&isid[2..]);
    let conn = Connection::connect(cfg).expect("login");
    Lun::attach(conn, parsed).expect("attach")
}

#[test]
fn spc4_fence_scsi_preempt_and_abort_cuts_off_the_victim() {
    let tgtd = Tgtd::start();
    let file = tgtd.tutorial_target(1, IQN);
    let url = tgtd.url(IQN, 1);
    let [n1, n2] = nodes();

    // Unfence: node 1 by options, node 2 by the stdin protocol.
    let out = fence(&n1, &url, &["-o", "on"]);
    assert_eq!(code(&out), 0, "node 1 on: {}", show(&out));
    let stdin = format!(
        "# unfence node 2\naction=status\naction=on\nplug=2\ndevices={url}\ncluster_name={CLUSTER}\n\
         nodename=2\ninitiator_name={}\nisid={}\nsomething_unknown=1\n",
        n2.initiator, n2.isid
    );
    let out = fence_stdin(&stdin);
    assert_eq!(code(&out), 0, "node 2 on: {}", show(&out));

    // Both keys registered, one reservation of type 5.
    let out = fence(&n1, &url, &["-o", "list"]);
    assert_eq!(code(&out), 0, "list: {}", show(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    for n in [&n1, &n2] {
        let out = fence(&n1, &url, &["-o", "status", "-n", &n.id.to_string()]);
        assert_eq!(code(&out), 0, "status of {} before: {}", n.id, show(&out));
    }

    // Both nodes can write.
    let block = 4096u64;
    {
        let l1 = open_lun(&n1, &url);
        let r = l1.pr_read_reservation().expect("read reservation");
        assert_eq!(r.holder.map(|(_, t)| t), Some(5), "{r:?}");
        l1.write_at(0, &[0x11; 4096]).expect("node 1 writes");
        let _ = l1.close();
        let l2 = open_lun(&n2, &url);
        l2.write_at(block, &[0x22; 4096]).expect("node 2 writes");
        let _ = l2.close();
    }

    // Node 1 fences node 2.
    let out = fence(&n1, &url, &["-o", "off", "-n", "2"]);
    assert_eq!(code(&out), 0, "off: {}", show(&out));

    let l2 = open_lun(&n2, &url);
    let err = l2
        .write_at(2 * block, &[0x33; 4096])
        .expect_err("a fenced node must not write");
    assert!(err.is_reservation_conflict(), "{err}");
    let _ = l2.close();

    let l1 = open_lun(&n1, &url);
    l1.write_at(3 * block, &[0x44; 4096])
        .expect("node 1 still writes");
    let mut buf = vec![0u8; 4 * 4096];
    l1.read_at(0, &mut buf).expect("read back");
    let _ = l1.close();
    assert!(buf[..4096].iter().all(|b| *b == 0x11));
    assert!(buf[4096..8192].iter().all(|b| *b == 0x22));
    assert!(
        buf[8192..12288].iter().all(|b| *b == 0),
        "fenced write landed"
    );
    assert!(buf[12288..].iter().all(|b| *b == 0x44));
    let disk = std::fs::read(&file).expect("backing file");
    assert!(
        disk[8192..12288].iter().all(|b| *b == 0),
        "fenced write on disk"
    );
    assert!(disk[12288..16384].iter().all(|b| *b == 0x44));

    // Status: node 2 off, node 1 on.
    let out = fence(&n1, &url, &["-o", "status", "-n", "2"]);
    assert_eq!(code(&out), 2, "status of 2 after: {}", show(&out));
    let out = fence(&n1, &url, &["-o", "status", "-n", "1"]);
    assert_eq!(code(&out), 0, "status of 1 after: {}", show(&out));

    // A node does not fence itself.
    let out = fence(&n1, &url, &["-o", "off", "-n", "1"]);
    assert_eq!(code(&out), 1, "self-fence: {}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot fence itself"),
        "{}",
        show(&out)
    );
    let out = fence(&n1, &url, &["-o", "status", "-n", "1"]);
    assert_eq!(code(&out), 0, "status of 1 after refusal: {}", show(&out));

    // Unfencing node 2 again gives it back write access.
    let out = fence(&n2, &url, &["-o", "on", "-n", "2"]);
    assert_eq!(code(&out), 0, "node 2 on again: {}", show(&out));
    let l2 = open_lun(&n2, &url);
    l2.write_at(2 * block, &[0x55; 4096])
        .expect("unfenced node writes");
    let _ = l2.close();
}

#[test]
fn metadata_and_errors_need_no_device() {
    let out = Command::new(tests::bin("fence_scsi"))
        .args(["-o", "metadata"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"<resource-agent name="fence_scsi""#),
        "{text}"
    );
    assert!(text.contains(r#"<action name="off" />"#), "{text}");

    // No devices: a clear failure, exit 1.
    let out = fence_stdin("action=off\nport=2\nnodename=1\ncluster_name=x\n");
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no devices"));

    // An unreachable device: monitor fails with exit 1.
    let out = fence_stdin(
        "action=monitor\ndevices=iscsi://127.0.0.1:1/iqn.2026-11.x:none/1\ninitiator_name=iqn.x\n",
    );
    assert_eq!(code(&out), 1, "{}", show(&out));
}
