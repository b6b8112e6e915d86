//! The dlm on cmand membership (`cman::dlm_membership`): three cmand nodes
//! on 127.0.1.1–3, each with a `dlm_cman_node` process incrementing one
//! counter file under an EX lock. Node 3 (cmand and dlm process) is
//! SIGKILLed mid-traffic; its fence device waits 3 s (fence_lab `delay`),
//! so there is a window between the failure view and the fencing. Checked:
//! the survivors make no increment inside that window (recovery waits for
//! the fencing), no counter value is read twice (no double grant), at most
//! the victim's last increment is unlogged, and each survivor makes 20
//! more increments after the fencing (no hang), then stops on a `stop` file.

use cman::node::Status;
use nix::sys::signal::{kill, Signal};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::Proc;

struct Lab {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let port = tests::cluster_port(3, true);
        let mut nodes = String::new();
        for i in 1..=3 {
            let delay = if i == 3 { "delay=\"3\"" } else { "" };
            nodes.push_str(&format!(
                "    <clusternode name=\"127.0.1.{i}\" nodeid=\"{i}\" votes=\"1\"><fence><method name=\"1\"><device name=\"lab\" port=\"127.0.1.{i}\" {delay}/></method></fence></clusternode>\n"
            ));
        }
        let text = format!(
            "<?xml version=\"1.0\"?>\n<cluster name=\"dlmcl\" config_version=\"1\">\n  <totem token=\"800\"/>\n  <cman port=\"{port}\"/>\n  <fence_daemon post_fail_delay=\"0\" post_join_delay=\"3\"/>\n  <clusternodes>\n{nodes}  </clusternodes>\n  <fencedevices>\n    <fencedevice name=\"lab\" agent=\"fence_lab\" lab_dir=\"{}\"/>\n  </fencedevices>\n</cluster>\n",
            dir.path().display()
        );
        let key = dir.path().join("authkey");
        std::fs::write(&key, b"lab cluster key 0123456789abcdef").unwrap();
        let lab = Lab { dir, key };
        for i in 1..=3 {
            std::fs::create_dir_all(lab.state(i)).unwrap();
            std::fs::write(lab.state(i).join("cluster.conf"), &text).unwrap();
        }
        lab
    }

    fn state(&self, i: u32) -> PathBuf {
        self.dir.path().join(format!("127.0.1.{i}"))
    }

    fn cmand(&self, i: u32) -> Proc {
        Proc::new(tests::spawn_cmand(&self.state(i), i, &self.key))
    }

    fn dlm_node(&self, i: u32, port: u16, iters: u64) -> Proc {
        let state = self.state(i);
        Proc::with_lines(&mut tests::dlm_cman_node(
            &state,
            port,
            "cm",
            self.dir.path(),
            iters,
            "dlm.log",
        ))
    }

    fn dlm_log(&self, i: u32) -> String {
        let s = std::fs::read_to_string(self.state(i).join("dlm.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn status(&self, i: u32) -> Option<Status> {
        tests::cman_status(&self.state(i))
    }

    fn wait_for(&self, i: u32, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        tests::wait_cman(&self.state(i), &i.to_string(), what, f)
    }

    /// Three cmand nodes, quorate, each with a dlm user incrementing the
    /// counter until the `stop` file; returns once `victim` made 20
    /// increments. (cmands, dlm users), by node.
    fn start_traffic(&self, victim: u32) -> (Vec<Proc>, Vec<Proc>) {
        let cmands: Vec<Proc> = (1..=3).map(|i| self.cmand(i)).collect();
        for i in 1..=3 {
            self.wait_for(i, "the full quorate view", |s| {
                s.members.len() == 3 && s.quorum.quorate
            });
        }
        let port = tests::cluster_port(3, false);
        let dlms: Vec<Proc> = (1..=3).map(|i| self.dlm_node(i, port, 1_000_000)).collect();
        for d in &dlms {
            d.expect_line("running", Duration::from_secs(60));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log(victim).len() < 20 {
            assert!(Instant::now() < deadline, "node {victim} made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        (cmands, dlms)
    }

    /// Each of `ids` makes 20 increments after wall-clock ms `since` (no
    /// hang).
    fn wait_progress(&self, ids: &[u32], since: u128) {
        let deadline = Instant::now() + Duration::from_secs(120);
        for &id in ids {
            while self.log(id).iter().filter(|(_, t)| *t >= since).count() < 20 {
                assert!(
                    Instant::now() < deadline,
                    "node {id} hangs; its dlm log:\n{}",
                    self.dlm_log(id)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops the dlm users (the `stop` file) and waits until they say so.
    fn stop_traffic(&self, dlms: &mut [Proc]) {
        std::fs::write(self.dir.path().join("stop"), b"").unwrap();
        for d in dlms.iter() {
            d.expect_line("done", Duration::from_secs(120));
        }
        for d in dlms.iter_mut() {
            d.close_stdin();
        }
    }

    /// Every counter value read, checking that none was read twice (two
    /// holders of the EX lock at once).
    fn values_read_once(&self) -> std::collections::BTreeSet<u64> {
        let mut seen = std::collections::BTreeSet::new();
        for id in 1..=3 {
            for (v, _) in self.log(id) {
                assert!(
                    seen.insert(v),
                    "value {v} read twice (node {id}): two holders"
                );
            }
        }
        seen
    }

    /// (value, wall-clock ms) per increment of node `id`.
    fn log(&self, id: u32) -> Vec<(u64, u128)> {
        std::fs::read_to_string(self.dir.path().join(format!("log.{id}")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            })
            .collect()
    }
}

/// Wall-clock ms of node 3's fencing per status `s`.
fn fenced_at_estimate(s: &Status) -> u128 {
    let ago = s.nodes[2]
        .last_fenced
        .as_ref()
        .map(|(ms, _)| *ms)
        .unwrap_or(0);
    wall_ms() - u128::from(ago)
}

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn sigkilled_node_recovered_only_after_fencing() {
    let lab = Lab::new();
    let victim = 3;
    let (mut cmands, mut dlms) = lab.start_traffic(victim);
    let v_dlm = dlms.remove(victim as usize - 1);
    let v_cmand = cmands.remove(victim as usize - 1);
    kill(v_cmand.pid(), Signal::SIGKILL).unwrap();
    kill(v_dlm.pid(), Signal::SIGKILL).unwrap();
    drop(v_dlm);
    drop(v_cmand);

    // When the failure view was installed and when node 3 was fenced, on
    // the survivors' wall clock.
    let s = lab.wait_for(1, "node 3 fenced", |s| {
        s.victims.is_empty() && s.nodes[2].last_fenced.is_some() && s.members.len() == 2
    });
    // Survivors go on after the fencing (no hang): 20 more increments each.
    lab.wait_progress(&[1, 2], fenced_at_estimate(&s));
    lab.stop_traffic(&mut dlms);
    // Each survivor's dlm follows its own cmand, which applies the fencing
    // (an agreed message) at its own moment: node `id` must take no lock
    // between the failure view and that moment on its cmand. cmand
    // reports ages when it answers, somewhere between `before` and `now`:
    // the view is at most `now - age` (the window starts no earlier), the
    // fencing at least `before - age` (the window ends no later); on a
    // busy machine the answer can take milliseconds.
    for id in 1..=2u32 {
        let before = wall_ms();
        let s = lab.status(id).unwrap();
        let now = wall_ms();
        let view_at = now - u128::from(s.view_age_ms);
        let (fenced_ago, how) = s.nodes[2].last_fenced.clone().unwrap();
        assert!(how.contains("fence_lab"), "{how}");
        let fenced_at = before - u128::from(fenced_ago);
        assert!(
            fenced_at > view_at + 2_000,
            "fence_lab delay did not open a window: view {view_at} fenced {fenced_at}"
        );
        let inside: Vec<_> = lab
            .log(id)
            .into_iter()
            .filter(|(_, t)| *t > view_at + 500 && *t < fenced_at)
            .collect();
        assert!(
            inside.is_empty(),
            "node {id} took the lock after the failure and before the fencing: {inside:?} (view {view_at}, fenced {fenced_at})"
        );
    }
    // No value read twice; no increment lost but the victim's last.
    let final_value: u64 = std::fs::read_to_string(lab.dir.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let seen = lab.values_read_once();
    let missing: Vec<u64> = (0..final_value).filter(|v| !seen.contains(v)).collect();
    assert!(missing.len() <= 1, "lost increments: {missing:?}");
    assert!(seen.iter().all(|v| *v < final_value));
}

/// Issue 17: node 2's cmand alone is SIGKILLed while its dlm user takes
/// the EX lock in a loop, and restarted at once. The dlm user stops the
/// moment its cmand is gone (exit 3); the new cmand starts only once no
/// process of the old incarnation runs (the registry), so the node either
/// rejoins with the old incarnation's fencing completed as "rejoined", or
/// is fenced (new cmand killed) and started again. Either way: no counter
/// value read twice (no write of the old process after another node got
/// the lock), and the survivors go on.
#[test]
fn cmand_killed_alone_and_restarted_at_once() {
    let lab = Lab::new();
    let victim = 2u32;
    let (mut cmands, mut dlms) = lab.start_traffic(victim);
    let v = victim as usize - 1;
    kill(cmands[v].pid(), Signal::SIGKILL).unwrap();
    let _ = cmands[v].child.wait();
    // Restart at once, again and again while refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        cmands[v] = lab.cmand(victim);
        std::thread::sleep(Duration::from_millis(300));
        if cmands[v].child.try_wait().unwrap().is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "cmand never restarted");
    }
    // The old lock user stopped by itself.
    let mut old = dlms.remove(v);
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(st) = old.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "the old dlm user still runs");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        code,
        Some(3),
        "the old dlm user did not stop on losing cmand"
    );
    let stopped_at = wall_ms();
    // The old incarnation's fate settles: rejoined, or fenced (then the new
    // cmand was killed with the node and starts again).
    lab.wait_for(1, "no fence victim left", |s| s.victims.is_empty());
    if cmands[v].child.try_wait().unwrap().is_some() {
        cmands[v] = lab.cmand(victim);
    }
    lab.wait_for(1, "node 2 back", |s| {
        s.members.len() == 3 && s.quorum.quorate
    });
    // Survivors go on.
    lab.wait_progress(&[1, 3], stopped_at);
    lab.stop_traffic(&mut dlms);
    lab.values_read_once();
}
