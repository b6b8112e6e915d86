//! A lockspace's shards recover alike: its log tells each recovery step
//! once, not once per shard. (A test binary of its own: it installs the
//! process's global log subscriber.)

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use dlm::{Dlm, DlmConfig, NodeId, StaticMembership};

mod common;
use common::wait_until;

/// Log lines written at info level and above, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_recovery_step_is_logged_once_per_lockspace() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut cfg = DlmConfig::new(
        NodeId(1),
        "127.0.0.1:0".parse().unwrap(),
        HashMap::new(),
        dlm::ClusterKey::new(b"recovery log test's key").unwrap(),
    );
    cfg.shards = 4;
    let d = Dlm::start(cfg).unwrap();
    let members = StaticMembership::new(&[NodeId(1)]);
    let ls = d.join("alone", members.as_ref()).unwrap();
    wait_until("recovery of the first view", || ls.is_running());

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for step in [
        "lockspace stopped for recovery",
        "recovery: sending locks to directory nodes",
        "recovery done, lockspace running",
    ] {
        let n = text.lines().filter(|l| l.contains(step)).count();
        assert_eq!(n, 1, "{step:?} logged {n} times:\n{text}");
    }
}
