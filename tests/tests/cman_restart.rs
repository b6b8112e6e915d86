//! Issue 17: a node is more than its cmand. Two cmand nodes (two_node) on
//! 127.0.1.1–2, each with a `dlm_cman_node` that takes one EX lock in turn
//! and, holding it, appends a line to a shared file `writes` every 5 ms
//! for a second. Node 2's dlm user is a stubborn one (`--on-lost
//! ignore`): it does not withdraw when its cmand is lost and goes on
//! writing under its lock until it is killed, the worst case for a
//! process that outlives its cmand (a mount writing its journal).
//!
//! While that user holds the lock, node 2's cmand alone is SIGKILLed and
//! restarted at once. Checked, with `fence_lab` and with `fence_manual`:
//! - the restarted cmand is *held*: it finds the old user in the node's
//!   registry, says so (its log, `cman_tool status`) and stays out of the
//!   cluster; node 1 shows node 2 as `d` with the old process
//!   (`cman_tool nodes`), and `fence_tool ls` tells whoever would ack a
//!   manual fence that the victim's processes still run there;
//! - the old incarnation's fence really runs (never "rejoined");
//! - no write of the old user lands after node 1 was granted the lock
//!   (holds never interleave in `writes`), and node 1 goes on afterwards.
//!
//! Where node 2 ends: with `fence_lab`, the switch kills the old user and
//! the held cmand with it (the whole node goes down); started again, cmand
//! joins. With `fence_manual`, the operator stops the old user (the reset
//! by hand); the held cmand sees it gone and waits outside, shown as `d`,
//! until `fence_ack_manual`; then it joins, in the same incarnation.

use cman::node::Status;
use nix::sys::signal::{kill, Signal};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::Proc;

const NODES: [&str; 2] = ["127.0.1.1", "127.0.1.2"];
/// How long a dlm user holds the lock, writing (ms).
const HOLD_MS: u64 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Agent {
    /// fence_lab, with a 2 s delay on node 2's device: a window in which
    /// the held state can be looked at before the switch acts.
    Lab,
    /// fence_manual, acknowledged by the test with fence_ack_manual.
    Manual,
}

/// One line of `writes`.
#[derive(Clone, Copy, Debug)]
struct Write {
    pid: u32,
    hold: u64,
}

struct Lab {
    dir: tempfile::TempDir,
    key: PathBuf,
    dlm_port: u16,
}

impl Lab {
    fn new(agent: Agent) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let port = tests::free_port_on(&NODES, true);
        let dlm_port = tests::free_port_on(&NODES, false);
        let state1 = dir.path().join(NODES[0]);
        let (device, fencedevice) = match agent {
            Agent::Lab => (
                "<device name=\"lab\" port=\"127.0.1.2\" delay=\"2\"/>".to_string(),
                format!(
                    "<fencedevice name=\"lab\" agent=\"fence_lab\" lab_dir=\"{}\"/>",
                    dir.path().display()
                ),
            ),
            Agent::Manual => (
                "<device name=\"manual\"/>".to_string(),
                format!(
                    "<fencedevice name=\"manual\" agent=\"fence_manual\" state_dir=\"{}\"/>",
                    state1.display()
                ),
            ),
        };
        // Node 1 is never fenced here; node 2 has the device under test.
        let text = format!(
            "<?xml version=\"1.0\"?>\n<cluster name=\"restartcl\" config_version=\"1\">\n  <totem token=\"800\"/>\n  <cman port=\"{port}\" two_node=\"1\" expected_votes=\"1\"/>\n  <fence_daemon post_fail_delay=\"0\"/>\n  <clusternodes>\n    <clusternode name=\"127.0.1.1\" nodeid=\"1\" votes=\"1\"/>\n    <clusternode name=\"127.0.1.2\" nodeid=\"2\" votes=\"1\"><fence><method name=\"1\">{device}</method></fence></clusternode>\n  </clusternodes>\n  <fencedevices>\n    {fencedevice}\n  </fencedevices>\n</cluster>\n"
        );
        let key = dir.path().join("authkey");
        std::fs::write(&key, b"restart lab key 0123456789abcdef").unwrap();
        let lab = Lab { dir, key, dlm_port };
        for i in 1..=2 {
            std::fs::create_dir_all(lab.state(i)).unwrap();
            std::fs::write(lab.state(i).join("cluster.conf"), &text).unwrap();
        }
        lab
    }

    fn state(&self, i: u32) -> PathBuf {
        self.dir.path().join(NODES[i as usize - 1])
    }

    fn cmand(&self, i: u32) -> Proc {
        Proc::new(tests::spawn_cmand(&self.state(i), i, &self.key))
    }

    /// A dlm user on node `i`; `stubborn`: it goes on writing when its
    /// cmand is lost.
    fn dlm_user(&self, i: u32, stubborn: bool, log: &str) -> Proc {
        let state = self.state(i);
        let mut cmd =
            tests::dlm_cman_node(&state, self.dlm_port, "rs", self.dir.path(), 1_000_000, log);
        cmd.arg("--hold-ms")
            .arg(HOLD_MS.to_string())
            .arg("--on-lost")
            .arg(if stubborn { "ignore" } else { "stop" });
        let p = Proc::with_lines(&mut cmd);
        p.expect_line("running", Duration::from_secs(60));
        p
    }

    fn status(&self, i: u32) -> Option<Status> {
        tests::cman_status(&self.state(i))
    }

    fn wait_for(&self, i: u32, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        tests::wait_cman(&self.state(i), &i.to_string(), what, f)
    }

    /// Runs a tool against node `i`'s cmand; its stdout.
    fn tool(&self, i: u32, tool: &str, args: &[&str]) -> String {
        let out = Command::new(tests::bin(tool))
            .arg("--state-dir")
            .arg(self.state(i))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `tool` on node `i` prints something `f` accepts.
    fn wait_tool(&self, i: u32, tool: &str, args: &[&str], f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.tool(i, tool, args);
            if f(&out) {
                return out;
            }
            assert!(Instant::now() < end, "{tool} {args:?} on node {i}:\n{out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn writes(&self) -> Vec<Write> {
        std::fs::read_to_string(self.dir.path().join("writes"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Some(Write {
                    pid: w.get(1)?.parse().ok()?,
                    hold: w.get(2)?.parse().ok()?,
                })
            })
            .collect()
    }

    /// Waits until node 2's user `pid` has just started a hold (so it holds
    /// the lock and writes under it for most of a second).
    fn wait_hold_start(&self, pid: u32) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let w = self.writes();
            let holds: std::collections::BTreeSet<u64> =
                w.iter().filter(|x| x.pid == pid).map(|x| x.hold).collect();
            if let Some(last) = w.last().filter(|x| x.pid == pid && holds.len() >= 2) {
                let in_hold = w
                    .iter()
                    .rev()
                    .take_while(|x| x.pid == pid && x.hold == last.hold)
                    .count();
                if in_hold <= 10 {
                    return;
                }
            }
            assert!(Instant::now() < end, "node 2's user never got the lock");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop_users(&self, users: &mut [&mut Proc]) {
        std::fs::write(self.dir.path().join("stop"), b"").unwrap();
        for u in users.iter() {
            u.expect_line("done", Duration::from_secs(60));
        }
        for u in users.iter_mut() {
            u.close_stdin();
        }
    }
}

/// The lock's holds, in the order their writes landed, never interleave:
/// each (process, hold) is one unbroken run of lines.
fn holds_never_interleave(w: &[Write]) {
    let mut seen = std::collections::BTreeSet::new();
    let mut cur = None;
    for (i, x) in w.iter().enumerate() {
        let key = (x.pid, x.hold);
        if cur != Some(key) {
            assert!(
                seen.insert(key),
                "line {i}: hold {} of pid {} resumes after another holder wrote: two holders at once",
                x.hold,
                x.pid
            );
            cur = Some(key);
        }
    }
}

fn log_of(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

fn restart_with_a_stubborn_old_user(agent: Agent) {
    let lab = Lab::new(agent);
    let _c1 = lab.cmand(1);
    let mut c2 = lab.cmand(2);
    for i in 1..=2 {
        lab.wait_for(i, "both nodes members", |s| {
            s.members.len() == 2 && s.quorum.quorate
        });
    }
    let mut u1 = lab.dlm_user(1, false, "dlm.log");
    let mut old = lab.dlm_user(2, true, "dlm.log");
    let old_pid = old.child.id();
    lab.wait_hold_start(old_pid);

    // cmand alone dies and is started again at once.
    let inc_before = lab.status(2).unwrap().inc;
    kill(c2.pid(), Signal::SIGKILL).unwrap();
    c2.wait_exit("the killed cmand", Duration::from_secs(10));
    let at_kill = lab.writes().len();
    c2 = lab.cmand(2);

    // Held: the new cmand names the old user and stays out.
    let s2 = lab.wait_for(2, "the restarted cmand held", |s| !s.held.is_empty());
    let named = format!("PID {old_pid} of dlm_cman_node.pid");
    assert_eq!(s2.held, std::slice::from_ref(&named));
    assert!(s2.members.is_empty(), "{s2:?}");
    let log = log_of(&lab.state(2), "cmand.log");
    assert!(
        log.contains("cluster processes of this node still run") && log.contains(&named),
        "{log}"
    );
    let st = lab.tool(2, "cman_tool", &["status"]);
    assert!(st.contains("Membership state: Held"), "{st}");
    // Node 1 fences node 2's old incarnation and says why it must.
    let ls = lab.wait_tool(1, "fence_tool", &["ls"], |o| o.contains(&named));
    assert!(
        ls.contains("victim 2 127.0.1.2 incarnation")
            && ls.contains("processes of the victim still run there"),
        "{ls}"
    );
    let nodes = lab.tool(1, "cman_tool", &["nodes"]);
    let row = nodes
        .lines()
        .find(|l| l.trim_start().starts_with("2 "))
        .unwrap();
    assert!(row.contains(" d "), "{nodes}");
    assert!(
        nodes.contains(&format!("Held out:      {named}")),
        "{nodes}"
    );
    let s1 = lab.status(1).unwrap();
    assert_eq!(s1.members.len(), 1, "node 2 is no member: {s1:?}");
    assert!(s1
        .victims
        .iter()
        .any(|v| v.id.0 == 2 && v.inc.0 == inc_before));

    let how = match agent {
        Agent::Lab => {
            // The switch takes the node down: the old user and the held
            // cmand with it.
            let st = old.wait_exit("the old user", Duration::from_secs(30));
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
            c2.wait_exit("the held cmand", Duration::from_secs(30));
            let s = lab.wait_for(1, "node 2 fenced", |s| s.victims.is_empty());
            assert_eq!(s.nodes[1].last_fenced.as_ref().unwrap().1, "fence_lab");
            c2 = lab.cmand(2);
            "fence_lab"
        }
        Agent::Manual => {
            // fence_manual waits for the operator: nothing moves.
            std::thread::sleep(Duration::from_millis(2000));
            let s1 = lab.status(1).unwrap();
            assert_eq!(s1.victims.len(), 1, "{s1:?}");
            assert!(old.running(), "the old user went away by itself");
            // The operator reads fence_tool ls and stops the old user (the
            // reset by hand); the held cmand sees it gone, yet waits
            // outside while the fence is pending.
            kill(old.pid(), Signal::SIGKILL).unwrap();
            old.wait_exit("the old user", Duration::from_secs(10));
            lab.wait_tool(1, "fence_tool", &["ls"], |o| {
                o.contains("reports no process of the victim running")
            });
            lab.wait_for(2, "node 2 no longer held", |s| s.held.is_empty());
            std::thread::sleep(Duration::from_millis(1000));
            let s1 = lab.status(1).unwrap();
            assert_eq!(
                s1.members.len(),
                1,
                "a member while its fence waits: {s1:?}"
            );
            assert_eq!(s1.nodes[1].status, "d");
            let out = lab.tool(1, "fence_ack_manual", &["127.0.1.2"]);
            assert!(out.contains("acknowledged"), "{out}");
            let s = lab.wait_for(1, "node 2 fenced", |s| s.victims.is_empty());
            let how = &s.nodes[1].last_fenced.as_ref().unwrap().1;
            assert!(how.starts_with("fence_"), "{how}");
            assert!(c2.running(), "the held cmand joins as it is");
            "fence_manual"
        }
    };
    // Node 2 is back in the new incarnation, a plain member.
    let s1 = lab.wait_for(1, "node 2 a member again", |s| {
        s.members.len() == 2 && s.quorum.quorate
    });
    let s2 = lab.wait_for(2, "node 2 a member", |s| s.members.len() == 2);
    assert_eq!(s1.nodes[1].status, "M");
    assert!(s2.inc > inc_before && s2.held.is_empty());
    assert!(c2.running());
    let log = log_of(&lab.state(1), "cmand.log");
    assert!(!log.contains("rejoined"), "{how}: {log}");

    // Node 1 goes on, and so does a new user of node 2.
    let mut new = lab.dlm_user(2, false, "dlm2.log");
    let new_pid = new.child.id();
    let end = Instant::now() + Duration::from_secs(90);
    while lab.writes().iter().filter(|w| w.pid == new_pid).count() < 20 {
        assert!(Instant::now() < end, "node 2's new user never wrote");
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.stop_users(&mut [&mut u1, &mut new]);

    let w = lab.writes();
    holds_never_interleave(&w);
    let after: Vec<usize> = (at_kill..w.len())
        .filter(|i| w[*i].pid == old_pid)
        .collect();
    assert!(
        !after.is_empty(),
        "the old user wrote nothing after losing cmand: the case is not tested"
    );
    let first_other = (at_kill..w.len())
        .find(|i| w[*i].pid != old_pid)
        .expect("node 1 wrote again");
    assert!(
        after.iter().all(|i| *i < first_other),
        "a write of the old user landed after node 1 got the lock (lines {after:?}, node 1 from {first_other})"
    );
}

#[test]
fn cmand_killed_alone_beside_a_writing_user_fence_lab() {
    restart_with_a_stubborn_old_user(Agent::Lab);
}

#[test]
fn cmand_killed_alone_beside_a_writing_user_fence_manual() {
    restart_with_a_stubborn_old_user(Agent::Manual);
}
