//! tgtd's per-LUN counters (issue 14) from outside: `tgtadm --mode
//! metrics --op show` after READ(10)s and WRITE(10)s of a raw iSCSI
//! session, and `tgtd --metrics ADDR:PORT` answering `GET /metrics`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dlm::metrics::{fetch_http, sample};

#[path = "iscsi_target_util.rs"]
mod tgt;

const IQN: &str = "iqn.2026-12.lab:metrics.lun1";

fn lun1(op: &str) -> String {
    format!("tid=\"1\",target=\"{IQN}\",lun=\"1\",op=\"{op}\"")
}

#[test]
fn tgtadm_shows_reads_and_writes_per_lun() {
    let tgtd = tgt::Tgtd::start();
    tgtd.tutorial_target(1, IQN);
    let show = || tgtd.adm_ok(&["--mode", "metrics", "--op", "show"]);
    let before = show();
    assert_eq!(
        sample(&before, "tgtd_lun_commands_total", &lun1("read")),
        Some(0.0),
        "{before}"
    );
    let mut raw = tgt::Raw::connect(tgtd.port);
    raw.login_normal("iqn.2026-12.lab:metrics-test", IQN, &[]);
    raw.clear_unit_attention(1);
    for lba in 0..5 {
        let (data, status) = raw.read10(1, lba * 8, 8);
        assert_eq!((data.len(), status), (4096, 0));
    }
    let after = show();
    let v = |m: &str, op: &str| sample(&after, m, &lun1(op)).unwrap_or(-1.0);
    assert_eq!(v("tgtd_lun_commands_total", "read"), 5.0, "{after}");
    assert_eq!(v("tgtd_lun_bytes_total", "read"), 5.0 * 4096.0, "{after}");
    assert_eq!(v("tgtd_lun_commands_total", "write"), 0.0, "{after}");
}

#[test]
fn tgtd_serves_get_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (tests::free_port(), tests::free_port());
    let mut child = tests::spawn(
        Command::new(tests::bin("tgtd"))
            .args([
                "-f",
                "--iscsi",
                &format!("portal=127.0.0.1:{port}"),
                "-C",
                "0",
            ])
            .arg("--control-dir")
            .arg(dir.path())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--metrics", &format!("127.0.0.1:{mport}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{mport}").parse().unwrap();
    let start = Instant::now();
    let text = loop {
        match fetch_http(addr) {
            Ok(t) => break t,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no metrics endpoint: {e}"
                );
                assert!(matches!(child.try_wait(), Ok(None)), "tgtd exited");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(
        text.contains("# TYPE tgtd_lun_commands_total counter"),
        "{text}"
    );
    tests::reap(&mut child);
}
