//! Three `dlm_tool testnode` processes on 127.0.0.1 increment a shared
//! counter file under an EX lock; one is SIGKILLed mid-traffic; the
//! survivors are told (static membership) that it is gone and fenced,
//! recover, and finish. Every increment logs the value it read: a value
//! read twice would mean two nodes held the EX lock at once.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct TestNode {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl TestNode {
    fn expect_line(&self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim() == want => return,
                Ok(_) => continue,
                Err(e) => panic!("waiting for {want:?}: {e}"),
            }
        }
    }

    fn tell(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(id: u32, ports: &[u16], dir: &Path, iters: u32) -> TestNode {
    let mut cmd = Command::new(tests::bin("dlm_tool"));
    cmd.arg("--ctl-dir")
        .arg(dir.join("ctl"))
        .arg("testnode")
        .arg("--id")
        .arg(id.to_string());
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{}", ports[id as usize - 1]));
    for (i, p) in ports.iter().enumerate() {
        cmd.arg("--peer").arg(format!("{}=127.0.0.1:{p}", i + 1));
    }
    cmd.arg("--ls")
        .arg("mp")
        .arg("--dir")
        .arg(dir)
        .arg("--iters")
        .arg(iters.to_string());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    TestNode {
        child,
        stdin,
        lines,
    }
}

fn read_log(dir: &Path, id: u32) -> Vec<u64> {
    std::fs::read_to_string(dir.join(format!("log.{id}")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn three_processes_one_killed_mid_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let iters = 300;
    // Node 3 would run far longer than the others: it is always killed mid-traffic.
    let mut nodes: Vec<TestNode> = (1..=3)
        .map(|id| {
            spawn(
                id,
                &ports,
                dir.path(),
                if id == 3 { 1_000_000 } else { iters },
            )
        })
        .collect();
    for n in &nodes {
        n.expect_line("running", Duration::from_secs(60));
    }
    // Let node 3 do some work, then kill it without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_log(dir.path(), 3).len() < 20 {
        assert!(Instant::now() < deadline, "node 3 made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let victim = nodes.pop().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(victim);
    for n in nodes.iter_mut() {
        n.tell("remove 3");
    }
    std::thread::sleep(Duration::from_millis(50));
    for n in nodes.iter_mut() {
        n.tell("fence 3");
    }
    for n in &nodes {
        n.expect_line("done", Duration::from_secs(120));
    }
    // dlm_tool reads the survivors' state through their control sockets.
    let out = Command::new(tests::bin("dlm_tool"))
        .arg("--ctl-dir")
        .arg(dir.path().join("ctl"))
        .arg("ls")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.matches("name          mp").count(), 2, "{text}");
    assert!(text.contains("members       1 2"), "{text}");
    for n in nodes.iter_mut() {
        n.tell("quit");
    }

    let logs: Vec<Vec<u64>> = (1..=3).map(|id| read_log(dir.path(), id)).collect();
    assert_eq!(logs[0].len(), iters as usize);
    assert_eq!(logs[1].len(), iters as usize);
    assert!(logs[2].len() >= 20);
    let final_value: u64 = std::fs::read_to_string(dir.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (i, log) in logs.iter().enumerate() {
        for v in log {
            assert!(
                seen.insert(*v),
                "value {v} read twice (node {}): two EX holders",
                i + 1
            );
        }
    }
    // Every increment is logged, except possibly the last one of the
    // killed node (killed between writing the counter and logging).
    let missing: Vec<u64> = (0..final_value).filter(|v| !seen.contains(v)).collect();
    assert!(missing.len() <= 1, "lost increments: {missing:?}");
    assert!(seen.iter().all(|v| *v < final_value));
}
