//! Scripted scenarios on the sans-IO node (lossless instant network).

use cman::ids::{Incarnation, Member, Millis, NodeId};
use cman::node::{Action, ClusterEvent, Event, FenceJob, Node};
use cman::sim::SimConfig;
use std::collections::{BTreeMap, BTreeSet};

struct Net {
    nodes: BTreeMap<u32, Node>,
    now: Millis,
    fences: Vec<(Member, FenceJob)>,
    recovered: Vec<(Member, Member)>,
    conf: String,
    /// Links (from, to) that drop every packet.
    cut: BTreeSet<(u32, u32)>,
}

impl Net {
    fn new(n: u32) -> Net {
        let cfg = SimConfig {
            nodes: n,
            ..SimConfig::for_seed(0)
        };
        let conf = cfg.cluster_conf();
        let mut net = Net {
            nodes: BTreeMap::new(),
            now: Millis(1),
            fences: Vec::new(),
            recovered: Vec::new(),
            conf,
            cut: BTreeSet::new(),
        };
        for i in 1..=n {
            net.boot(i, 1);
        }
        net
    }

    fn boot(&mut self, i: u32, inc: u64) {
        let node = Node::new(NodeId(i), Incarnation(inc), &self.conf).unwrap();
        self.nodes.insert(i, node);
    }

    fn apply(&mut self, from: Member, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => {
                    if self.cut.contains(&(from.id.0, to.0)) {
                        continue;
                    }
                    if let Some(n) = self.nodes.get_mut(&to.0) {
                        let more = n.handle(self.now, Event::Packet { from, msg });
                        let me = n.me();
                        self.apply(me, more);
                    }
                }
                Action::RunFence(job) => self.fences.push((from, job)),
                Action::Notify(ClusterEvent::NodeFenced { victim, .. }) => {
                    self.recovered.push((from, victim))
                }
                _ => {}
            }
        }
    }

    fn run(&mut self, ms: u64) {
        let end = self.now.plus(ms);
        while self.now < end {
            self.now = self.now.plus(10);
            let ids: Vec<u32> = self.nodes.keys().copied().collect();
            for i in ids {
                let Some(n) = self.nodes.get_mut(&i) else {
                    continue;
                };
                let me = n.me();
                let actions = n.handle(self.now, Event::Tick);
                self.apply(me, actions);
            }
        }
    }

    fn members(&self, i: u32) -> Vec<u32> {
        self.nodes[&i].view().1.iter().map(|m| m.id.0).collect()
    }

    /// Hands node `i` an event from its driver.
    fn tell(&mut self, i: u32, ev: Event) {
        let n = self.nodes.get_mut(&i).unwrap();
        let me = n.me();
        let actions = n.handle(self.now, ev);
        self.apply(me, actions);
    }

    /// Fence job `idx` ends: `ok` powers the victim's node off (whatever
    /// incarnation runs there) as a switch would.
    fn fence_done(&mut self, idx: usize, ok: bool) {
        if ok {
            let victim = self.fences[idx].1.victim;
            self.nodes.remove(&victim.id.0);
        }
        self.fence_reported(idx, ok);
    }

    /// Fence job `idx` reports `ok` without touching the node (a manual
    /// fence acknowledged).
    fn fence_reported(&mut self, idx: usize, ok: bool) {
        let (fencer, job) = self.fences[idx].clone();
        let ev = Event::FenceResult {
            victim: job.victim,
            ok,
            how: "test".into(),
        };
        if let Some(n) = self.nodes.get_mut(&fencer.id.0) {
            let actions = n.handle(self.now, ev);
            self.apply(fencer, actions);
        }
    }
}

#[test]
fn no_fencing_and_no_recovery_without_quorum() {
    let mut net = Net::new(3);
    net.run(2000);
    assert_eq!(net.members(1), [1, 2, 3]);
    net.nodes.remove(&2);
    net.nodes.remove(&3);
    net.run(3000);
    assert_eq!(net.members(1), [1]);
    assert!(!net.nodes[&1].quorate());
    assert!(net.fences.is_empty(), "an inquorate node fenced");
    assert!(net.recovered.is_empty());
    // Node 3 reboots: quorum is back. Node 2, lost while there was no
    // quorum, is still owed a fencing; node 3's old incarnation is done
    // by its clean restart.
    net.boot(3, 2);
    net.run(2000);
    assert_eq!(net.members(1), [1, 3]);
    assert!(net.nodes[&1].quorate());
    let victims: Vec<u32> = net.fences.iter().map(|(_, j)| j.victim.id.0).collect();
    assert_eq!(victims, [2]);
    assert!(
        net.recovered.iter().any(|(_, v)| v.id.0 == 3),
        "3/1 recovered as rejoined"
    );
    assert!(
        !net.recovered.iter().any(|(_, v)| v.id.0 == 2),
        "2 not before its fencing"
    );
}

#[test]
fn recovery_waits_for_fence_success_and_retries() {
    let mut net = Net::new(3);
    net.run(2000);
    net.nodes.remove(&3);
    net.run(1500);
    assert_eq!(net.members(1), [1, 2]);
    assert_eq!(net.fences.len(), 1);
    assert_eq!(net.fences[0].0.id.0, 1, "the lowest member fences");
    assert_eq!(net.fences[0].1.methods[0][0].args["action"], "off");
    net.fence_done(0, false);
    net.run(500);
    assert!(net.recovered.is_empty(), "no recovery after a failed fence");
    assert_eq!(net.fences.len(), 1, "retry waits");
    net.run(1000);
    assert_eq!(net.fences.len(), 2, "retried");
    net.fence_done(1, true);
    net.run(200);
    let mut rec: Vec<(u32, u32)> = net
        .recovered
        .iter()
        .map(|(a, v)| (a.id.0, v.id.0))
        .collect();
    rec.sort();
    assert_eq!(rec, [(1, 3), (2, 3)], "every survivor recovers once");
    assert_eq!(net.nodes[&2].victims(), []);
}

#[test]
fn a_dead_incarnation_is_told_to_stop() {
    let mut net = Net::new(3);
    net.run(2000);
    // Node 3 stops hearing anything (paused): take it out, let the others move on.
    let paused = net.nodes.remove(&3).unwrap();
    net.run(1500);
    assert_eq!(net.members(1), [1, 2]);
    // It comes back with the same incarnation: evicted, it shuts down.
    net.nodes.insert(3, paused);
    net.run(500);
    assert!(net.nodes[&3].is_shut());
    assert_eq!(net.members(1), [1, 2]);
}

#[test]
fn a_joiner_not_heard_by_every_member_waits_outside() {
    // Simulation seed 11383: a restarted node that some members did not hear
    // yet was picked before them, and a healthy member was left out of a
    // quorate view, declared dead and fenced.
    let mut net = Net::new(5);
    net.run(2000);
    assert_eq!(net.members(1), [1, 2, 3, 4, 5]);
    net.nodes.remove(&2);
    net.run(1500);
    assert_eq!(net.members(1), [1, 3, 4, 5]);
    net.fence_done(0, true);
    net.run(200);
    // Node 2 comes back, but node 5 and it do not hear each other.
    net.cut.insert((2, 5));
    net.cut.insert((5, 2));
    net.boot(2, 2);
    net.run(2000);
    assert_eq!(net.members(1), [1, 3, 4, 5], "the joiner waits outside");
    assert!(!net.nodes[&5].is_shut());
    assert_eq!(net.fences.len(), 1, "nobody else is fenced");
    net.cut.clear();
    net.run(1000);
    assert_eq!(net.members(1), [1, 2, 3, 4, 5]);
    assert_eq!(net.members(5), [1, 2, 3, 4, 5]);
}

#[test]
fn a_victim_heard_in_a_new_incarnation_is_not_powered_off() {
    let mut net = Net::new(3);
    net.run(2000);
    // Node 3 restarts at once; it and node 2 do not hear each other, so the
    // new incarnation cannot join, but the fencer (node 1) hears it.
    net.nodes.remove(&3);
    net.cut.insert((3, 2));
    net.cut.insert((2, 3));
    net.boot(3, 2);
    net.run(1500);
    assert_eq!(net.members(1), [1, 2]);
    assert!(net.fences.is_empty(), "3/1 is over: its node runs 3/2");
    let rec: Vec<(u32, u32, u64)> = net
        .recovered
        .iter()
        .map(|(a, v)| (a.id.0, v.id.0, v.inc.0))
        .collect();
    assert!(
        rec.contains(&(1, 3, 1)) && rec.contains(&(2, 3, 1)),
        "{rec:?}"
    );
    assert!(!net.nodes[&3].is_shut());
    net.cut.clear();
    net.run(1000);
    assert_eq!(net.members(1), [1, 2, 3]);
}

fn old_processes() -> Event {
    Event::OldProcesses(vec!["PID 4242 of dlm_cman_node.pid".into()])
}

/// Issue 17: cmand of node 3 dies alone and comes back at once, while a
/// process of its earlier incarnation still runs. The new incarnation is
/// held: it stays out of the view, the old one's fence is really run
/// (never "rejoined"), and the survivors show why.
#[test]
fn a_victim_whose_new_incarnation_is_held_is_fenced_for_real() {
    let mut net = Net::new(3);
    net.run(2000);
    net.nodes.remove(&3);
    net.boot(3, 2);
    net.tell(3, old_processes());
    net.run(1500);
    assert_eq!(net.members(1), [1, 2], "the held node stays out");
    assert!(net.nodes[&3].is_held());
    assert!(net.nodes[&3].view().1.is_empty());
    let victims: Vec<(u32, u64)> = net
        .fences
        .iter()
        .map(|(_, j)| (j.victim.id.0, j.victim.inc.0))
        .collect();
    assert_eq!(victims, [(3, 1)], "3/1 is fenced for real");
    assert!(net.recovered.is_empty(), "no recovery before the fence");
    let st = net.nodes[&1].status(net.now);
    assert_eq!(st.nodes[2].status, "d");
    assert_eq!(st.nodes[2].held, ["PID 4242 of dlm_cman_node.pid"]);
    let ls = cman::report::fence_ls(&st);
    assert!(
        ls.contains("victim 3 n3 incarnation 1: the node is back, and processes of the victim still run there (PID 4242 of dlm_cman_node.pid)"),
        "{ls}"
    );
    // The switch takes the whole node down, held cmand included; it boots
    // clean and joins.
    net.fence_done(0, true);
    net.run(200);
    assert!(net
        .recovered
        .iter()
        .any(|(_, v)| v.id.0 == 3 && v.inc.0 == 1));
    net.boot(3, 3);
    net.run(1500);
    assert_eq!(net.members(1), [1, 2, 3]);
    assert_eq!(net.fences.len(), 1);
}

/// A held node whose old processes end (they withdrew and exited) before
/// the fence succeeds: the retried fence is skipped as "rejoined" and the
/// node joins.
#[test]
fn a_held_node_joins_once_its_old_processes_are_gone() {
    let mut net = Net::new(3);
    net.run(2000);
    net.nodes.remove(&3);
    net.boot(3, 2);
    net.tell(3, old_processes());
    net.run(1500);
    assert_eq!(net.fences.len(), 1);
    net.fence_done(0, false);
    net.tell(3, Event::OldProcesses(Vec::new()));
    net.run(1500);
    assert_eq!(net.fences.len(), 1, "no second attempt");
    assert_eq!(net.members(1), [1, 2, 3]);
    assert_eq!(net.members(3), [1, 2, 3]);
    let st = net.nodes[&1].status(net.now);
    assert_eq!(st.nodes[2].last_fenced.as_ref().unwrap().1, "rejoined");
}

/// The fence of 3/1 runs (say fence_manual, waiting for an operator)
/// when 3/2 starts clean: 3/2 waits outside until the fence is done, so
/// no member list shows node 3 while its fence is pending.
#[test]
fn a_new_incarnation_waits_outside_while_the_fence_of_its_old_one_runs() {
    let mut net = Net::new(3);
    net.run(2000);
    net.nodes.remove(&3);
    net.run(1500);
    assert_eq!(net.fences.len(), 1);
    net.boot(3, 2);
    net.run(2000);
    assert_eq!(net.members(1), [1, 2], "3/2 waits for the fence of 3/1");
    assert_eq!(net.nodes[&1].status(net.now).nodes[2].status, "d");
    let ls = cman::report::fence_ls(&net.nodes[&1].status(net.now));
    assert!(
        ls.contains("victim 3 n3 incarnation 1: the node is back (incarnation 2) and reports no process of the victim running"),
        "{ls}"
    );
    net.fence_reported(0, true);
    net.run(1500);
    assert_eq!(net.members(1), [1, 2, 3]);
    assert_eq!(net.fences.len(), 1);
}
