//! Deterministic simulation: many [`Node`]s in one process on a seeded clock
//! and network with delays, losses, partitions, crashes, pauses and a power
//! switch for fencing. Invariants are checked after every step; a failure
//! carries its seed and replays exactly.
//!
//! A node is its cmand plus its cluster *users* (a mount, a lock user):
//! one user starts with each cmand incarnation and takes the one lock of a
//! simulated lockspace now and then, writing while it holds it. A crash of
//! the whole node (or its fencing: the power switch) ends them all; a crash
//! of cmand alone (or its exit when evicted) leaves them running: each
//! notices its lost cmand after a while (usually at once, sometimes only
//! seconds later, as a process stuck in I/O would), then withdraws (stops
//! writing, releases nothing) and exits a little later. A cmand started
//! while users of the node's earlier incarnations run is told so
//! ([`Event::OldProcesses`]), as the daemon learns it from the node's
//! registry, until they are gone.

use crate::clock::{Clock, ManualClock};
use crate::ids::ClientId;
use crate::ids::{Incarnation, Member, Millis, NodeId, ViewId};
use crate::node::{Action, ClusterEvent, Event, FenceJob, GroupEvent, Node, Request};
use crate::proto::Msg;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// SplitMix64: a tiny PRNG whose sequence depends on nothing but the seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Parameters of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes (2 means a two_node cluster).
    pub nodes: u32,
    /// Token timeout (ms).
    pub token_ms: u64,
    /// Time with faults (ms), then everything heals.
    pub fault_ms: u64,
    /// Quiet time after healing (ms) before the final checks.
    pub quiet_ms: u64,
    /// The final checks also wait until every node runs and no node crashed
    /// or started for this long (ms): a node fenced or evicted late in the
    /// quiet time gets the same settling time as the others.
    pub settle_ms: u64,
    /// Limit on the settling (ms after the quiet time): crashes and restarts
    /// that go on longer than this are a failure.
    pub settle_limit_ms: u64,
    /// Packet loss probability.
    pub loss: f64,
    /// Probability that a fence attempt fails.
    pub fence_fail: f64,
}

impl SimConfig {
    /// A configuration derived from the seed (2 to 5 nodes).
    pub fn for_seed(seed: u64) -> SimConfig {
        let mut r = Rng::new(seed.wrapping_mul(31));
        SimConfig {
            nodes: r.range(2, 5) as u32,
            token_ms: 500,
            fault_ms: 12_000,
            quiet_ms: 8_000,
            settle_ms: 2_000,
            settle_limit_ms: 30_000,
            loss: [0.0, 0.01, 0.05][r.range(0, 2) as usize],
            fence_fail: 0.2,
        }
    }

    /// The cluster.conf of the simulated cluster.
    pub fn cluster_conf(&self) -> String {
        let mut nodes = String::new();
        for i in 1..=self.nodes {
            nodes.push_str(&format!(
                "<clusternode name=\"n{i}\" nodeid=\"{i}\"><fence><method name=\"1\"><device name=\"lab\" port=\"n{i}\"/></method></fence></clusternode>"
            ));
        }
        let two = if self.nodes == 2 {
            "<cman two_node=\"1\" expected_votes=\"1\"/>"
        } else {
            ""
        };
        format!(
            "<cluster name=\"sim\" config_version=\"1\"><totem token=\"{}\"/>{two}<fence_daemon post_fail_delay=\"0\"/><clusternodes>{nodes}</clusternodes><fencedevices><fencedevice name=\"lab\" agent=\"fence_lab\"/></fencedevices></cluster>",
            self.token_ms
        )
    }
}

/// A failed run.
#[derive(Debug)]
pub struct SimFailure {
    /// Seed to replay.
    pub seed: u64,
    /// Simulated time of the failure.
    pub at: Millis,
    /// The broken invariant.
    pub what: String,
    /// The last trace lines.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at {} ms: {}",
            self.seed, self.at.0, self.what
        )?;
        writeln!(
            f,
            "replay: CMAN_SIM_SEED={} cargo test -p cman --test sim",
            self.seed
        )?;
        for l in &self.trace {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// Counters of a run, for sanity checks and reports.
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    /// Views installed (all nodes).
    pub views: u64,
    /// Successful fence operations.
    pub fences: u64,
    /// Crashes injected (including power-offs by fencing).
    pub crashes: u64,
    /// Packets delivered.
    pub packets: u64,
    /// Group messages delivered (all nodes).
    pub messages: u64,
    /// Successful fences that powered off a newer incarnation than their
    /// victim (it restarted while the fence agent was running).
    pub fences_on_newer: u64,
    /// Simulated time at which the final checks ran (ms).
    pub end_ms: u64,
    /// Crashes of cmand alone (its users live on), evictions included.
    pub cmand_crashes: u64,
    /// cmand starts held: users of an earlier incarnation still ran.
    pub held_starts: u64,
    /// Locks granted to a user of another incarnation than their holder's,
    /// after the holder's incarnation was recovered.
    pub takeovers: u64,
}

enum Due {
    Packet {
        to: NodeId,
        from: Member,
        msg: Box<Msg>,
    },
    FenceDone {
        fencer: Member,
        job: Box<FenceJob>,
        ok: bool,
    },
    Restart(NodeId),
    Resume(NodeId),
    Heal,
    /// A user notices that its cmand is gone and withdraws.
    Notice(u64),
    /// A withdrawn user exits.
    Exit(u64),
}

/// A cluster process of a node besides cmand (a mount, a lock user).
#[derive(Clone, Debug)]
struct User {
    node: NodeId,
    /// The cmand incarnation it started under (its locks are that
    /// incarnation's).
    inc: Incarnation,
    /// It lost its cmand and stopped writing (it released nothing).
    withdrawn: bool,
}

struct Slot {
    node: Option<Node>,
    incs: u64,
    paused: bool,
    inbox: Vec<Event>,
    next_tick: Millis,
}

/// The simulated cluster.
pub struct Sim {
    seed: u64,
    cfg: SimConfig,
    conf: String,
    rng: Rng,
    clock: ManualClock,
    now: Millis,
    slots: BTreeMap<NodeId, Slot>,
    queue: BinaryHeap<std::cmp::Reverse<(Millis, u64)>>,
    dues: BTreeMap<u64, Due>,
    qseq: u64,
    side: BTreeMap<NodeId, u8>,
    views: BTreeMap<ViewId, Vec<Member>>,
    fenced_by: BTreeMap<Member, BTreeSet<Member>>,
    notified: BTreeSet<(Member, Member)>,
    stale_since: BTreeMap<Member, Millis>,
    trace: std::collections::VecDeque<String>,
    violation: Option<String>,
    order: BTreeMap<(ViewId, Member), Vec<String>>,
    seen_msgs: BTreeSet<(Member, String)>,
    sent: u64,
    cur_view: BTreeMap<Member, ViewId>,
    /// Last time a node crashed or started.
    last_change: Millis,
    /// Incarnations that were members of a view installed in the healed
    /// network with every member running: nothing may throw them out.
    healed_members: BTreeSet<Member>,
    /// Running users by pid.
    users: BTreeMap<u64, User>,
    next_pid: u64,
    /// The lockspace's one lock: its holder's pid and the incarnation it
    /// was granted to.
    lock: Option<(u64, Member)>,
    stats: SimStats,
}

impl Sim {
    /// A cluster of `cfg.nodes` fresh nodes.
    pub fn new(seed: u64, cfg: SimConfig) -> Sim {
        let conf = cfg.cluster_conf();
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            cfg,
            conf,
            clock: ManualClock::default(),
            now: Millis(0),
            slots: BTreeMap::new(),
            queue: BinaryHeap::new(),
            dues: BTreeMap::new(),
            qseq: 0,
            side: BTreeMap::new(),
            views: BTreeMap::new(),
            fenced_by: BTreeMap::new(),
            notified: BTreeSet::new(),
            stale_since: BTreeMap::new(),
            trace: Default::default(),
            violation: None,
            order: BTreeMap::new(),
            seen_msgs: BTreeSet::new(),
            sent: 0,
            cur_view: BTreeMap::new(),
            last_change: Millis(0),
            healed_members: BTreeSet::new(),
            users: BTreeMap::new(),
            next_pid: 100,
            lock: None,
            stats: SimStats::default(),
        };
        for i in 1..=sim.cfg.nodes {
            let start = Millis(sim.rng.range(0, 300));
            sim.slots.insert(
                NodeId(i),
                Slot {
                    node: None,
                    incs: 0,
                    paused: false,
                    inbox: Vec::new(),
                    next_tick: start,
                },
            );
            sim.start(NodeId(i));
        }
        sim
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= 400 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>6} {line}", self.now.0));
    }

    fn start(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("slot");
        slot.incs += 1;
        let inc = Incarnation(slot.incs);
        slot.node = Some(Node::new(id, inc, &self.conf).expect("sim config is valid"));
        slot.paused = false;
        slot.inbox.clear();
        slot.next_tick = slot.next_tick.max(self.now);
        self.last_change = self.now;
        let old = self.old_users(id, inc);
        self.log(format!("start n{id} inc {} old users {old:?}", inc.0));
        if !old.is_empty() {
            self.stats.held_starts += 1;
            self.deliver(id, Event::OldProcesses(old));
        }
        self.next_pid += 1;
        let user = User {
            node: id,
            inc,
            withdrawn: false,
        };
        self.users.insert(self.next_pid, user);
        let join = Event::Client {
            client: ClientId(1),
            req: Request::Join {
                group: "g".to_string(),
            },
        };
        self.deliver(id, join);
    }

    /// The users of node `id` started under an incarnation before `inc`
    /// (what the registry shows a new cmand).
    fn old_users(&self, id: NodeId, inc: Incarnation) -> Vec<String> {
        self.users
            .iter()
            .filter(|(_, u)| u.node == id && u.inc < inc)
            .map(|(pid, u)| format!("pid {pid} of n{id}/{}", u.inc.0))
            .collect()
    }

    /// The whole node goes down: cmand and every user.
    fn crash(&mut self, id: NodeId, why: &str) {
        self.cmand_exit(id, why);
        let before = self.users.len();
        self.users.retain(|_, u| u.node != id);
        if self.users.len() != before {
            self.last_change = self.now;
        }
    }

    /// cmand alone goes down; its users notice later.
    fn cmand_exit(&mut self, id: NodeId, why: &str) {
        let slot = self.slots.get_mut(&id).expect("slot");
        slot.paused = false;
        let Some(node) = slot.node.take() else {
            return;
        };
        self.stats.crashes += 1;
        self.last_change = self.now;
        self.log(format!("crash n{id} ({why})"));
        let inc = node.me().inc;
        let orphans: Vec<u64> = self
            .users
            .iter()
            .filter(|(_, u)| u.node == id && u.inc == inc && !u.withdrawn)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in orphans {
            // Usually at once (the socket closes); sometimes seconds later.
            let after = if self.rng.chance(0.3) {
                self.rng.range(300, 4000)
            } else {
                self.rng.range(0, 20)
            };
            self.schedule(self.now.plus(after), Due::Notice(pid));
        }
    }

    fn user_notices(&mut self, pid: u64) {
        let Some(u) = self.users.get_mut(&pid) else {
            return;
        };
        u.withdrawn = true;
        let node = u.node;
        self.log(format!("user {pid} of n{node} withdraws"));
        let at = self.now.plus(self.rng.range(0, 1000));
        self.schedule(at, Due::Exit(pid));
    }

    fn user_exits(&mut self, pid: u64) {
        let Some(u) = self.users.remove(&pid) else {
            return;
        };
        self.last_change = self.now;
        self.log(format!("user {pid} of n{} exits", u.node));
        let Some(node) = self.slots[&u.node].node.as_ref() else {
            return;
        };
        if node.is_held() {
            let old = self.old_users(u.node, node.me().inc);
            self.deliver(u.node, Event::OldProcesses(old));
        }
    }

    fn schedule(&mut self, at: Millis, due: Due) {
        self.qseq += 1;
        self.queue.push(std::cmp::Reverse((at, self.qseq)));
        self.dues.insert(self.qseq, due);
    }

    fn running(&self, m: Member) -> bool {
        self.slots
            .get(&m.id)
            .and_then(|s| s.node.as_ref())
            .is_some_and(|n| n.me() == m)
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.side.get(&a).copied().unwrap_or(0) == self.side.get(&b).copied().unwrap_or(0)
    }

    /// Runs the whole scenario: faults, heal, quiet, settling, final checks.
    pub fn run(mut self) -> Result<SimStats, SimFailure> {
        let fault_end = Millis(self.cfg.fault_ms);
        let quiet_end = fault_end.plus(self.cfg.quiet_ms);
        let limit = quiet_end.plus(self.cfg.settle_limit_ms);
        let mut next_fault = Millis(self.rng.range(1000, 2500));
        self.schedule(fault_end, Due::Heal);
        loop {
            if self.now >= quiet_end && self.settled() {
                break;
            }
            if self.now >= limit {
                return Err(self.fail(format!(
                    "not settled {} ms after the quiet time: last crash or start at {} ms",
                    self.cfg.settle_limit_ms, self.last_change.0
                )));
            }
            let end = quiet_end.max(self.last_change.plus(self.cfg.settle_ms));
            let next_tick = self
                .slots
                .values()
                .map(|s| s.next_tick)
                .min()
                .unwrap_or(end);
            let next_q = self.queue.peek().map(|r| r.0 .0).unwrap_or(end);
            let t = next_tick.min(next_q).min(if next_fault < fault_end {
                next_fault
            } else {
                end
            });
            self.clock.set(t);
            self.now = self.clock.now();
            if next_fault <= self.now && next_fault < fault_end {
                self.inject_fault(fault_end);
                next_fault = self.now.plus(self.rng.range(300, 2500));
            }
            while self.queue.peek().is_some_and(|r| r.0 .0 <= self.now) {
                let std::cmp::Reverse((_, key)) = self.queue.pop().expect("peeked");
                let due = self.dues.remove(&key).expect("scheduled");
                self.on_due(due);
            }
            let ids: Vec<NodeId> = self.slots.keys().copied().collect();
            for id in ids {
                if self.slots[&id].next_tick <= self.now {
                    self.tick(id);
                }
            }
            self.check()?;
            self.check_stale()?;
        }
        self.stats.end_ms = self.now.0;
        self.final_check()?;
        self.check_order()?;
        Ok(self.stats)
    }

    /// The settling period is over: every node runs (none paused) and none
    /// crashed or started for `settle_ms`.
    fn settled(&self) -> bool {
        self.now.since(self.last_change) >= self.cfg.settle_ms
            && self
                .slots
                .values()
                .all(|s| !s.paused && s.node.as_ref().is_some_and(|n| !n.is_held()))
    }

    /// The network has been healed for two tokens: no loss, no partition,
    /// no pause, every running node hears every other one, and whatever the
    /// faults left over (evictions of incarnations declared dead) is done.
    fn healed(&self) -> bool {
        self.now >= Millis(self.cfg.fault_ms).plus(2 * self.cfg.token_ms)
    }

    fn fail(&self, what: String) -> SimFailure {
        let mut trace: Vec<String> = self.trace.iter().cloned().collect();
        for s in self.slots.values() {
            if let Some(n) = &s.node {
                trace.push(format!("state: {}", n.debug_line(self.now)));
            }
        }
        SimFailure {
            seed: self.seed,
            at: self.now,
            what,
            trace,
        }
    }

    fn inject_fault(&mut self, fault_end: Millis) {
        let n = self.cfg.nodes as u64;
        let id = NodeId(self.rng.range(1, n) as u32);
        let back = self.now.plus(self.rng.range(200, 3000)).min(fault_end);
        match self.rng.range(0, 4) {
            0 => {
                self.crash(id, "fault");
                let at = self.now.plus(self.rng.range(300, 3000));
                self.schedule(at, Due::Restart(id));
            }
            4 => {
                // cmand alone (SIGKILL), often restarted at once.
                self.stats.cmand_crashes += 1;
                self.cmand_exit(id, "cmand killed alone");
                let after = if self.rng.chance(0.5) {
                    self.rng.range(0, 200)
                } else {
                    self.rng.range(300, 3000)
                };
                self.schedule(self.now.plus(after), Due::Restart(id));
            }
            1 => {
                let slot = self.slots.get_mut(&id).expect("slot");
                if slot.node.is_some() && !slot.paused {
                    slot.paused = true;
                    self.log(format!("pause n{id} until {}", back.0));
                    self.schedule(back, Due::Resume(id));
                }
            }
            2 => {
                let mut sides = BTreeMap::new();
                for i in 1..=self.cfg.nodes {
                    sides.insert(NodeId(i), self.rng.range(0, 1) as u8);
                }
                self.log(format!("partition {sides:?} until {}", back.0));
                self.side = sides;
                self.schedule(back, Due::Heal);
            }
            _ => {
                // A burst of heavy loss is modelled by a short partition of one node.
                let mut sides = BTreeMap::new();
                sides.insert(id, 1);
                let short = self.now.plus(self.rng.range(50, self.cfg.token_ms * 2));
                self.log(format!("isolate n{id} until {}", short.0));
                self.side = sides;
                self.schedule(short, Due::Heal);
            }
        }
    }

    fn on_due(&mut self, due: Due) {
        match due {
            Due::Packet { to, from, msg } => self.deliver(to, Event::Packet { from, msg: *msg }),
            Due::FenceDone { fencer, job, ok } => self.fence_done(fencer, *job, ok),
            Due::Restart(id) => {
                if self.slots[&id].node.is_none() {
                    self.start(id);
                }
            }
            Due::Resume(id) => self.resume(id),
            Due::Notice(pid) => self.user_notices(pid),
            Due::Exit(pid) => self.user_exits(pid),
            Due::Heal => {
                if !self.side.is_empty() {
                    self.log("heal".to_string());
                }
                self.side.clear();
                if self.now >= Millis(self.cfg.fault_ms) {
                    self.heal_all();
                }
            }
        }
    }

    fn heal_all(&mut self) {
        let ids: Vec<NodeId> = self.slots.keys().copied().collect();
        for id in ids {
            if self.slots[&id].paused {
                self.resume(id);
            }
            if self.slots[&id].node.is_none() {
                let at = self.now.plus(self.rng.range(0, 500));
                self.schedule(at, Due::Restart(id));
            }
        }
    }

    fn resume(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("slot");
        if !slot.paused {
            return;
        }
        slot.paused = false;
        let inbox = std::mem::take(&mut slot.inbox);
        self.log(format!("resume n{id} ({} queued)", inbox.len()));
        for ev in inbox {
            self.deliver(id, ev);
        }
    }

    fn deliver(&mut self, id: NodeId, ev: Event) {
        let now = self.now;
        let slot = self.slots.get_mut(&id).expect("slot");
        if slot.node.is_none() {
            return;
        }
        if slot.paused {
            if slot.inbox.len() < 2000 {
                slot.inbox.push(ev);
            }
            return;
        }
        let node = slot.node.as_mut().expect("checked");
        let me = node.me();
        let actions = node.handle(now, ev);
        self.stats.packets += 1;
        self.apply(me, actions);
    }

    fn tick(&mut self, id: NodeId) {
        let now = self.now;
        let slot = self.slots.get_mut(&id).expect("slot");
        let Some(node) = slot.node.as_mut() else {
            slot.next_tick = now.plus(50);
            return;
        };
        slot.next_tick = now.plus(node.tick_ms());
        if slot.paused {
            return;
        }
        let me = node.me();
        let actions = node.handle(now, Event::Tick);
        self.apply(me, actions);
        self.maybe_send(id);
        self.lock_step(id);
    }

    /// The user of node `id`'s running incarnation releases the lock it
    /// holds, or asks for it, now and then.
    fn lock_step(&mut self, id: NodeId) {
        let Some(me) = self.slots[&id].node.as_ref().map(|n| n.me()) else {
            return;
        };
        let mine = self
            .users
            .iter()
            .find(|(_, u)| u.node == id && u.inc == me.inc && !u.withdrawn)
            .map(|(pid, _)| *pid);
        let Some(pid) = mine else {
            return;
        };
        if self.lock.is_some_and(|(h, _)| h == pid) {
            if self.rng.chance(0.05) {
                self.lock = None;
            }
        } else if self.rng.chance(0.05) {
            self.try_grant(pid, me);
        }
    }

    /// The lockspace grants the lock to user `pid` of incarnation `me`: at
    /// once when it is free; from a holder of another incarnation only
    /// through recovery of that incarnation at `me`'s node (it was
    /// reported fenced there, or its node is back in `me`'s view in a newer
    /// incarnation: the dlm then drops the old one's locks). The check:
    /// the holder it is taken from can no longer write.
    fn try_grant(&mut self, pid: u64, me: Member) {
        let node = self.slots[&me.id].node.as_ref().expect("running");
        if !node.quorate() {
            return;
        }
        if let Some((holder, owner)) = self.lock {
            let back_newer = node
                .view()
                .1
                .iter()
                .any(|m| m.id == owner.id && m.inc > owner.inc);
            if !(self.notified.contains(&(me, owner)) || back_newer) {
                return;
            }
            if self.users.get(&holder).is_some_and(|u| !u.withdrawn) {
                self.violation = Some(format!(
                    "the lock of user {holder} ({owner}) granted to user {pid} ({me}) while {holder} can still write"
                ));
            }
            self.stats.takeovers += 1;
            self.log(format!(
                "lock of {holder} ({owner}) taken over by {pid} ({me})"
            ));
        }
        self.lock = Some((pid, me));
    }

    fn apply(&mut self, me: Member, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => self.send(me, to, msg),
                Action::Notify(ev) => self.on_notify(me, ev),
                Action::RunFence(job) => {
                    let quorate = self.slots[&me.id]
                        .node
                        .as_ref()
                        .is_some_and(|n| n.quorate());
                    if !quorate {
                        self.violation = Some(format!("{me} fences {} without quorum", job.victim));
                    }
                    self.check_fence_start(me, job.victim);
                    let ok = !self.rng.chance(self.cfg.fence_fail);
                    let at = self.now.plus(self.rng.range(20, 400));
                    self.log(format!("n{me} runs fence of {} (ok={ok})", job.victim));
                    self.schedule(
                        at,
                        Due::FenceDone {
                            fencer: me,
                            job: Box::new(job),
                            ok,
                        },
                    );
                }
                Action::Shutdown { reason } => {
                    if self.healed_members.contains(&me) {
                        self.violation = Some(format!(
                            "{me} was a member of a view of the healed network and stopped: {reason}"
                        ));
                    }
                    // cmand exits; the node's users live on.
                    self.stats.cmand_crashes += 1;
                    self.cmand_exit(me.id, &reason);
                    let at = self.now.plus(self.rng.range(500, 2000));
                    self.schedule(at, Due::Restart(me.id));
                }
                Action::Group {
                    event: GroupEvent::Message { data, .. },
                    ..
                } => self.on_group_message(me, data),
                Action::Group { .. } | Action::Reply { .. } | Action::ConfigChanged { .. } => {}
            }
        }
    }

    fn send(&mut self, from: Member, to: NodeId, msg: Msg) {
        match &msg {
            Msg::Propose { view, members } => self.log(format!(
                "n{from} propose {view} to {to}: {} members",
                members.len()
            )),
            Msg::Nack { view, promised } => {
                self.log(format!("n{from} nacks {view} to {to}: promised {promised}"))
            }
            Msg::Evicted { member } => self.log(format!("n{from} evicts {member}")),
            _ => {}
        }
        let loss = if self.now >= Millis(self.cfg.fault_ms) {
            0.0
        } else {
            self.cfg.loss
        };
        if !self.connected(from.id, to) || self.rng.chance(loss) {
            return;
        }
        let at = self.now.plus(self.rng.range(1, 15));
        self.schedule(
            at,
            Due::Packet {
                to,
                from,
                msg: Box::new(msg),
            },
        );
    }

    /// The power switch: a fence attempt that succeeds powers the victim's
    /// node off (whatever incarnation runs there) and it boots again later.
    fn fence_done(&mut self, fencer: Member, job: FenceJob, ok: bool) {
        if !self.running(fencer) {
            return; // the agent died with its node
        }
        if ok {
            self.stats.fences += 1;
            let prior = self.fenced_by.entry(job.victim).or_default();
            if !prior.insert(fencer) {
                self.violation = Some(format!("{fencer} fenced {} twice", job.victim));
            }
            let hit = self.slots[&job.victim.id].node.as_ref().map(|n| n.me());
            if let Some(newer) = hit.filter(|m| *m != job.victim) {
                // The switch cannot aim at an incarnation: the node restarted
                // after the agent started and the new incarnation dies. The
                // cluster handles it as any crash of that incarnation.
                self.stats.fences_on_newer += 1;
                self.log(format!("fence of {} powers off {newer}", job.victim));
            }
            self.crash(job.victim.id, "fenced");
            let at = self.now.plus(self.rng.range(500, 3000));
            self.schedule(at, Due::Restart(job.victim.id));
        }
        let ev = Event::FenceResult {
            victim: job.victim,
            ok,
            how: "fence_lab".to_string(),
        };
        self.deliver(fencer.id, ev);
    }

    fn on_notify(&mut self, me: Member, ev: ClusterEvent) {
        match ev {
            ClusterEvent::View {
                view,
                members,
                quorate,
            } => {
                self.stats.views += 1;
                self.cur_view.insert(me, view);
                if self.healed() && members.iter().all(|m| self.running(*m)) {
                    self.healed_members.extend(members.iter().copied());
                }
                self.log(format!("n{me} view {view} {members:?} quorate={quorate}"));
                self.views.entry(view).or_insert(members);
            }
            ClusterEvent::NodeFenced { victim, how } => {
                self.log(format!("n{me} recovers {victim} ({how})"));
                if self.running(victim) {
                    self.violation = Some(format!("{me} recovered {victim}, which still runs"));
                }
                let writer = self
                    .users
                    .iter()
                    .find(|(_, u)| u.node == victim.id && u.inc == victim.inc && !u.withdrawn);
                if let Some((pid, _)) = writer {
                    self.violation = Some(format!(
                        "{me} recovered {victim} while its user {pid} can still write"
                    ));
                }
                if !self.notified.insert((me, victim)) {
                    self.violation = Some(format!("{me} recovered {victim} twice"));
                }
            }
        }
    }

    /// Records a delivery; [`Sim::check_order`] compares the lists.
    fn on_group_message(&mut self, me: Member, data: String) {
        let view = self.cur_view.get(&me).copied().unwrap_or_default();
        self.stats.messages += 1;
        self.order.entry((view, me)).or_default().push(data.clone());
        if !self.seen_msgs.insert((me, data.clone())) {
            self.violation = Some(format!("{me} delivered {data} twice"));
        }
    }

    /// Agreed order: within one view, the messages two nodes both delivered
    /// come in the same order at both.
    fn check_order(&self) -> Result<(), SimFailure> {
        let mut by_view: BTreeMap<ViewId, Vec<(Member, &Vec<String>)>> = BTreeMap::new();
        for ((v, m), list) in &self.order {
            by_view.entry(*v).or_default().push((*m, list));
        }
        for (v, lists) in by_view {
            for (a, la) in &lists {
                let set_a: BTreeSet<&String> = la.iter().collect();
                for (b, lb) in &lists {
                    let set_b: BTreeSet<&String> = lb.iter().collect();
                    let fa: Vec<&String> = la.iter().filter(|d| set_b.contains(d)).collect();
                    let fb: Vec<&String> = lb.iter().filter(|d| set_a.contains(d)).collect();
                    if fa != fb {
                        return Err(self.fail(format!(
                            "view {v}: {a} delivered {fa:?}, {b} delivered {fb:?}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// What a fence start must respect: the victim's incarnation was lost
    /// by a quorate view, so it is not a member of the fencer's view, and
    /// the fencer has not heard from a newer incarnation of the node that
    /// is not held (that one counts as "rejoined" and is never powered off
    /// on purpose; a held one is, with the victim's users). A member of a
    /// view of the healed network is never a victim.
    fn check_fence_start(&mut self, fencer: Member, victim: Member) {
        let Some(node) = self.slots[&fencer.id].node.as_ref() else {
            return;
        };
        if node.view().1.contains(&victim) {
            self.violation = Some(format!("{fencer} fences {victim}, a member of its view"));
        } else if node
            .heard_incarnation(victim.id)
            .is_some_and(|inc| inc > victim.inc)
            && !node.peer_held(victim.id)
        {
            self.violation = Some(format!(
                "{fencer} fences {victim} after hearing a newer incarnation that is not held"
            ));
        } else if self.healed_members.contains(&victim) && self.running(victim) {
            self.violation = Some(format!(
                "{fencer} fences {victim}, a running member of a view of the healed network"
            ));
        }
    }

    fn maybe_send(&mut self, id: NodeId) {
        if !self.rng.chance(0.05) {
            return;
        }
        let Some(node) = self.slots[&id].node.as_ref() else {
            return;
        };
        let me = node.me();
        self.sent += 1;
        let ev = Event::Client {
            client: ClientId(1),
            req: Request::Send {
                group: "g".to_string(),
                data: format!("{me}#{}", self.sent),
            },
        };
        self.deliver(id, ev);
    }

    fn live_nodes(&self) -> Vec<&Node> {
        self.slots
            .values()
            .filter(|s| !s.paused)
            .filter_map(|s| s.node.as_ref())
            .collect()
    }

    fn check(&self) -> Result<(), SimFailure> {
        if let Some(v) = &self.violation {
            return Err(self.fail(v.clone()));
        }
        for n in self.live_nodes() {
            let (id, members) = n.view();
            if let Some(seen) = self.views.get(&id) {
                if seen != members {
                    return Err(self.fail(format!("view {id} has two member lists")));
                }
            }
        }
        if self.cfg.nodes > 2 {
            self.check_quorate_partitions()?;
        }
        Ok(())
    }

    /// A quorate view that lists a dead incarnation must be replaced within
    /// a few token timeouts.
    fn check_stale(&mut self) -> Result<(), SimFailure> {
        let stale: Vec<Member> = self
            .live_nodes()
            .into_iter()
            .filter(|n| n.quorate() && !n.view().1.iter().all(|m| self.running(*m)))
            .map(|n| n.me())
            .collect();
        let now = self.now;
        self.stale_since.retain(|m, _| stale.contains(m));
        for m in stale {
            let since = *self.stale_since.entry(m).or_insert(now);
            if now.since(since) > 3 * self.cfg.token_ms {
                return Err(self.fail(format!(
                    "{m} stayed quorate with a dead member for {} ms",
                    now.since(since)
                )));
            }
        }
        Ok(())
    }

    /// Never two quorate partitions: the views of quorate live nodes always
    /// share a member. A view that still lists a dead incarnation (the
    /// window before the token expires) is left out here, and
    /// [`Sim::check_stale`] bounds how long such a view may stay quorate.
    fn check_quorate_partitions(&self) -> Result<(), SimFailure> {
        let quorate: Vec<(Member, Vec<Member>)> = self
            .live_nodes()
            .into_iter()
            .filter(|n| n.quorate())
            .filter(|n| n.view().1.iter().all(|m| self.running(*m)))
            .map(|n| (n.me(), n.view().1.to_vec()))
            .collect();
        for (a, va) in &quorate {
            for (b, vb) in &quorate {
                if !va.iter().any(|m| vb.contains(m)) {
                    return Err(self.fail(format!(
                        "two quorate partitions: {a} in {va:?}, {b} in {vb:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// After healing and a quiet period: one view with every node, quorate,
    /// no victim left.
    fn final_check(&self) -> Result<(), SimFailure> {
        let nodes = self.live_nodes();
        if nodes.len() != self.cfg.nodes as usize {
            return Err(self.fail(format!("only {} nodes running at the end", nodes.len())));
        }
        let first = nodes[0].view();
        for n in &nodes {
            if n.view() != first {
                return Err(self.fail(format!(
                    "no agreement at the end: {} has {:?}, {} has {:?}",
                    nodes[0].me(),
                    first,
                    n.me(),
                    n.view()
                )));
            }
            if !n.quorate() {
                return Err(self.fail(format!("{} is not quorate at the end", n.me())));
            }
            if !n.victims().is_empty() {
                return Err(self.fail(format!("{} still has victims {:?}", n.me(), n.victims())));
            }
        }
        if first.1.len() != nodes.len() {
            return Err(self.fail(format!("final view {:?} lacks nodes", first)));
        }
        for (pid, u) in &self.users {
            if !first.1.contains(&Member {
                id: u.node,
                inc: u.inc,
            }) {
                return Err(self.fail(format!(
                    "user {pid} of n{}/{} outlives its incarnation",
                    u.node, u.inc.0
                )));
            }
        }
        Ok(())
    }
}
