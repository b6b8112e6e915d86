//! Three `dlm_tool testnode` processes on 127.0.0.1 increment a shared
//! counter file under an EX lock; one is SIGKILLed mid-traffic; the
//! survivors are told (static membership) that it is gone and fenced,
//! recover, and finish. Every increment logs the value it read: a value
//! read twice would mean two nodes held the EX lock at once.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::Proc;

fn spawn(id: u32, ports: &[u16], dir: &Path, iters: u32) -> Proc {
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
    Proc::with_lines(&mut cmd)
}

fn read_log(dir: &Path, prefix: &str, id: u32) -> Vec<u64> {
    std::fs::read_to_string(dir.join(format!("{prefix}.{id}")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Checks the logs of one counter: no value read twice (no two holders at
/// once); every increment logged except perhaps the killed node's last.
fn check_counter(dir: &Path, prefix: &str, counter: &str, iters: u32, victim: u32) {
    let logs: Vec<(u32, Vec<u64>)> = (1..=3).map(|id| (id, read_log(dir, prefix, id))).collect();
    for (id, log) in &logs {
        if *id == victim {
            assert!(log.len() >= 20, "{prefix}: victim made little progress");
        } else {
            assert_eq!(log.len(), iters as usize, "{prefix}: node {id} incomplete");
        }
    }
    let final_value: u64 = std::fs::read_to_string(dir.join(counter))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (id, log) in &logs {
        for v in log {
            assert!(
                seen.insert(*v),
                "{counter}: value {v} read twice (node {id}): two holders"
            );
        }
    }
    let missing: Vec<u64> = (0..final_value).filter(|v| !seen.contains(v)).collect();
    assert!(
        missing.len() <= 1,
        "{counter}: lost increments: {missing:?}"
    );
    assert!(seen.iter().all(|v| *v < final_value));
}

/// Node 1 (lowest id: the plock master, and master of the resources it
/// used first) is killed mid-traffic.
#[test]
fn three_processes_one_killed_mid_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| tests::free_port()).collect();
    let iters = 300;
    let victim = 1;
    // The victim would run far longer than the others: it is always killed
    // mid-traffic.
    let mut nodes: Vec<Proc> = (1..=3)
        .map(|id| {
            spawn(
                id,
                &ports,
                dir.path(),
                if id == victim { 1_000_000 } else { iters },
            )
        })
        .collect();
    for n in &nodes {
        n.expect_line("running", Duration::from_secs(60));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_log(dir.path(), "log", victim).len() < 20
        || read_log(dir.path(), "plog", victim).len() < 20
    {
        assert!(Instant::now() < deadline, "node {victim} made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let v = nodes.remove(victim as usize - 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(v.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(v);
    for n in nodes.iter_mut() {
        n.tell(&format!("remove {victim}"));
    }
    std::thread::sleep(Duration::from_millis(50));
    for n in nodes.iter_mut() {
        n.tell(&format!("fence {victim}"));
    }
    for n in &nodes {
        n.expect_line("done", Duration::from_secs(120));
    }
    // dlm_tool reads the survivors' state through their control sockets.
    let tool = |args: &[&str]| {
        let out = Command::new(tests::bin("dlm_tool"))
            .arg("--ctl-dir")
            .arg(dir.path().join("ctl"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "dlm_tool {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = tool(&["ls"]);
    assert_eq!(text.matches("name          mp").count(), 2, "{text}");
    assert!(text.contains("members       2 3"), "{text}");
    let text = tool(&["plocks", "mp"]);
    assert!(text.contains("plock master 2"), "{text}");
    tool(&["lockdump", "mp"]);
    for n in nodes.iter_mut() {
        n.tell("quit");
    }
    check_counter(dir.path(), "log", "counter", iters, victim);
    check_counter(dir.path(), "plog", "pcounter", iters, victim);
}
