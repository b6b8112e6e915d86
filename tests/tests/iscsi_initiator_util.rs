//! Helpers shared by the iscsi_initiator_* tests (included with `#[path]`):
//! a Debian tgtd started on a free loopback port with its own control
//! number, configured with one file-backed LUN, killed by PID at the end.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The target IQN every test uses.
pub const IQN: &str = "iqn.2026-11.test:disk";

/// A running Debian tgtd with target 1 (`IQN`) and LUN 1 on a sparse file.
pub struct Tgtd {
    child: Child,
    pub port: u16,
    pub control: u16,
    pub dir: tempfile::TempDir,
    pub lun_file: PathBuf,
}

/// A tgtd control number (tgtd accepts up to 32767) whose socket is unused.
fn free_control() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 12000 + (std::process::id() % 1000) as u16 * 20;
    loop {
        let n = base + NEXT.fetch_add(1, Ordering::Relaxed) % 20000;
        if !std::path::Path::new(&format!("/var/run/tgtd/socket.{n}")).exists() {
            return n;
        }
    }
}

impl Tgtd {
    /// Starts tgtd with a LUN of `size_mb` MiB, or None when tgtd is not
    /// installed (a skip the caller returns on; a failure under CI).
    pub fn start(size_mb: u64) -> Option<Tgtd> {
        if !tests::require_all(&["tgtd", "tgtadm"]) {
            return None;
        }
        for _ in 0..5 {
            if let Some(t) = Tgtd::try_start(size_mb) {
                return Some(t);
            }
        }
        panic!("tgtd did not start");
    }

    fn try_start(size_mb: u64) -> Option<Tgtd> {
        let dir = tempfile::tempdir().unwrap();
        let lun_file = dir.path().join("lun.img");
        let f = std::fs::File::create(&lun_file).unwrap();
        f.set_len(size_mb << 20).unwrap();
        let port = tests::free_port();
        let control = free_control();
        let log = std::fs::File::create(dir.path().join("tgtd.log")).unwrap();
        // If this test process dies (a CI timeout), tgtd dies with it
        // instead of lingering on its port.
        let child = tests::spawn(
            Command::new("tgtd")
                .args(["-f", "-C", &control.to_string(), "--iscsi"])
                .arg(format!("portal=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log),
        )
        .expect("spawn tgtd");
        let mut t = Tgtd {
            child,
            port,
            control,
            dir,
            lun_file,
        };
        if !t.wait_ready() {
            let log = std::fs::read_to_string(t.dir.path().join("tgtd.log")).unwrap_or_default();
            eprintln!("tgtd on port {port} not ready; its log:\n{log}");
            return None;
        }
        t.tgtadm(&["--mode", "target", "--op", "new", "--tid", "1", "-T", IQN]);
        let path = t.lun_file.to_str().unwrap().to_string();
        t.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            &path,
        ]);
        t.tgtadm(&[
            "--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL",
        ]);
        Some(t)
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // died (port taken?)
            }
            let ok = Command::new("tgtadm")
                .args([
                    "-C",
                    &self.control.to_string(),
                    "--mode",
                    "sys",
                    "--op",
                    "show",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Runs `tgtadm -C N --lld iscsi ARGS`, asserting success.
    pub fn tgtadm(&self, args: &[&str]) {
        let out = Command::new("tgtadm")
            .args(["-C", &self.control.to_string(), "--lld", "iscsi"])
            .args(args)
            .output()
            .expect("run tgtadm");
        assert!(
            out.status.success(),
            "tgtadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn portal(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `iscsi://[auth@]127.0.0.1:PORT/IQN/1`.
    pub fn url(&self, auth: Option<&str>) -> String {
        match auth {
            Some(a) => format!("iscsi://{a}@{}/{IQN}/1", self.portal()),
            None => format!("iscsi://{}/{IQN}/1", self.portal()),
        }
    }

    /// Adds a CHAP account and binds it to target 1 (incoming, or outgoing
    /// for mutual CHAP).
    pub fn add_account(&self, user: &str, password: &str, outgoing: bool) {
        self.tgtadm(&[
            "--mode",
            "account",
            "--op",
            "new",
            "--user",
            user,
            "--password",
            password,
        ]);
        let mut args = vec![
            "--mode", "account", "--op", "bind", "--tid", "1", "--user", user,
        ];
        if outgoing {
            args.push("--outgoing");
        }
        self.tgtadm(&args);
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // Debian tgtd ignores SIGTERM while targets exist; stop it by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}", self.control));
        let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}.lock", self.control));
    }
}
