//! What the transport tests (auth, backpressure, transport, driver) share:
//! the cluster key, loopback ports, waits, a frame recorder and the
//! captured log. Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use dlm::driver::transport::{frame_finish, frame_start, FrameHandler};
use dlm::{ClusterKey, NodeId};

/// The cluster key of every node in these tests.
pub fn key() -> ClusterKey {
    ClusterKey::new(b"dlm transport tests' cluster key").unwrap()
}

/// Any free port on 127.0.0.1 (the listener picks it).
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Waits (up to 60 s: the machine may be loaded) until `f` holds.
pub fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Frames that carry one number, and who received which.
// ---------------------------------------------------------------------------

/// Frames received, per sender, as the u64 each carries.
pub type Inbox = Arc<Mutex<HashMap<NodeId, Vec<u64>>>>;

/// A frame handler that records each frame's number in an [`Inbox`].
pub fn recorder() -> (Inbox, FrameHandler) {
    let inbox: Inbox = Default::default();
    let i2 = inbox.clone();
    let h: FrameHandler = Arc::new(move |from, payload: &[u8]| {
        let v = u64::from_le_bytes(payload.try_into().expect("8-byte payload"));
        i2.lock().unwrap().entry(from).or_default().push(v);
    });
    (inbox, h)
}

/// The numbers received from node `from`, in order.
pub fn received(inbox: &Inbox, from: u32) -> Vec<u64> {
    inbox
        .lock()
        .unwrap()
        .get(&NodeId(from))
        .cloned()
        .unwrap_or_default()
}

/// A transport frame carrying `v`.
pub fn frame(v: u64) -> Vec<u8> {
    let mut f = frame_start(8);
    f.extend_from_slice(&v.to_le_bytes());
    frame_finish(&mut f);
    f
}

// ---------------------------------------------------------------------------
// The log, captured (WARN and above: what an operator would see).
// ---------------------------------------------------------------------------

fn log_buf() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        log_buf().lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this test binary's log (WARN and above) to the buffer that
/// [`log_lines`] reads; once per binary.
pub fn capture_log() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

/// The captured log lines that contain every one of `words`.
pub fn log_lines(words: &[&str]) -> Vec<String> {
    String::from_utf8_lossy(&log_buf().lock().unwrap())
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}
