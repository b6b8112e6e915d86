//! Deterministic simulation of a clusterfs volume on 2–4 nodes: real
//! `dlm::node::Node`s carry lock traffic over a seeded network, real
//! `GlockTable`s sit on them, and lock_dlm's mount and recovery protocol
//! (control and mounted locks, the control LVB, journal glocks) runs
//! around them as `lock_dlm.rs` and `lock_dlm/control.rs` drive it, here
//! without threads (`cluster_sim/mount.rs`). Membership follows cman's
//! rule: a node that fails (crash, or cut off longer than the token
//! timeout) leaves the view, is fenced by the power switch or by
//! fence_scsi (its later writes are refused; it withdraws when it notices,
//! possibly much later), and only then do the survivors hear it fenced,
//! through cman's real translator (`cman::dlm_membership::Translator`).
//! Faults: crashes, a node cut off (briefly, or long enough to be
//! evicted), failed fence attempts, restarts, clean unmounts (every glock
//! dropped, then a clean leave, which the others hear as fenced at once),
//! and whole-cluster power losses (the next first mounter replays every
//! journal).
//!
//! Nodes write blocks of a shared disk only under an EX glock (an inode's,
//! and for an allocation also a resource group's, taken in GFS2's order),
//! journal each write before acknowledging it, write in place and revoke
//! when the glock is given up; survivors replay a dead node's journal
//! after it is fenced (`cluster_sim/disk.rs`).
//!
//! Checked after every step:
//! - no two nodes that can still write hold conflicting glocks (granted
//!   holders, and the states they rely on);
//! - every block a node that can still write caches is the last value
//!   acknowledged (reads check it too);
//! - no journal is replayed while an incarnation that mounted with it can
//!   still write;
//! - replaying any journal now writes only last acknowledged values, and
//!   every acknowledged value is in place or in a journal.
//!
//! At the end (faults over, every node back, traffic stopped): every node
//! is mounted with recovery done, nothing waits, and a power loss now
//! followed by a replay of all journals would lose no acknowledged write.
//!
//! `cargo test -p clusterfs --test cluster_sim` runs a fixed sample;
//! `CLUSTER_SIM_SEEDS=20000 cargo test --release -p clusterfs --test
//! cluster_sim campaign -- --ignored --nocapture` a campaign;
//! `CLUSTER_SIM_SEED=N cargo test -p clusterfs --test cluster_sim replay --
//! --nocapture` replays one seed with a trace.
//!
//! Not modelled: quorum (only the side that keeps the view acts; cman's
//! own simulation checks quorum and fence races), the rename and iopen
//! glocks, and time spent in I/O.
//!
//! # Findings
//! The copy of `control.rs` here follows the kernel's `control_mount`
//! where `control.rs` does not ([`JoinRule`]); with
//! `CLUSTER_SIM_JOIN_RULE=control_rs` it runs `control.rs`'s rule, and:
//! - seed 124 never settles: a node restarts and gets the slot (so the
//!   journal) of a node lost in the same recovery; it finds no journal
//!   flagged in the control LVB because the survivor has not written its
//!   pass yet, joins, and holds its journal glock from then on. The
//!   survivor then flags that journal and retries its journal glock (try
//!   EX) every 50 ms for ever, with its own lock requests blocked. The
//!   kernel makes a joiner wait until the LVB's generation reaches its
//!   own lockspace generation, and survivors write the generation in each
//!   pass (only up to the recovery whose losses the pass took: writing a
//!   later one drops that one's losses at every survivor, seed 1466).
//! - seed 4259 (with the generation rule alone) never settles: nodes that
//!   wait to join keep the mounted lock in PR, so once no mounted node is
//!   left to recover the flagged journals, none of them can become the
//!   first mounter. The kernel converts the mounted lock back to NL
//!   before it retries.
//!
//! And one in the dlm, fixed there: seed 4062 lost an acknowledged
//! write. A node died holding a dirty inode glock; the survivors'
//! recovery was cut short by the view in which the node came back as a
//! new process, and only that process got as far as assigning slots (it
//! took its old slot back). In the next recovery it claimed that slot,
//! so no survivor reported the slot gone and its journal was not
//! replayed; a survivor wrote the block, and the new process, replaying
//! "its own" journal, brought the older copy back.

mod cluster_sim {
    pub mod disk;
    pub mod mount;

    /// SplitMix64: tiny, stable across crate versions.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        pub fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }
}

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use cluster_sim::disk::{Disk, Member};
use cluster_sim::mount::{Counters, Ctx, Effect, JoinRule, Mount, Timer};
use cluster_sim::Rng;
use clusterfs::glock::{GlockName, GlockState, GlockTable};
use dlm::wire::Envelope;
use dlm::NodeId;

/// Time a failed node goes unnoticed (the token timeout), in µs.
const TOKEN_US: u64 = 30_000;
const LOSS_PERCENT: u64 = 3;
const RTO_US: u64 = 10_000;

#[derive(Debug)]
enum Ev {
    Deliver {
        from: Member,
        to: Member,
        env: Envelope,
    },
    Timer {
        who: Member,
        timer: Timer,
    },
    Fault,
    /// The token of a failed or cut-off incarnation expired.
    Detect(Member),
    Fence {
        victim: Member,
    },
    /// An evicted incarnation learns it (its cmand shut down) and withdraws.
    Notice(Member),
    Restart(u32),
    Reconnect(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FenceKind {
    Power,
    Scsi,
}

/// What one run did.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    steps: u64,
    crashes: u64,
    cutoffs: u64,
    evictions: u64,
    power_fences: u64,
    scsi_fences: u64,
    fence_failures: u64,
    withdrawals: u64,
    power_losses: u64,
    restarts: u64,
    unmounts: u64,
    acked: u64,
    c: Counters,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.crashes += o.crashes;
        self.cutoffs += o.cutoffs;
        self.evictions += o.evictions;
        self.power_fences += o.power_fences;
        self.scsi_fences += o.scsi_fences;
        self.fence_failures += o.fence_failures;
        self.withdrawals += o.withdrawals;
        self.power_losses += o.power_losses;
        self.restarts += o.restarts;
        self.unmounts += o.unmounts;
        self.acked += o.acked;
        let (a, b) = (&mut self.c, &o.c);
        a.reads += b.reads;
        a.writes += b.writes;
        a.syncs += b.syncs;
        a.basts += b.basts;
        a.frozen += b.frozen;
        a.deferred += b.deferred;
        a.first_mounts += b.first_mounts;
        a.joins += b.joins;
        a.recovered += b.recovered;
        a.recovered_entries += b.recovered_entries;
        a.try_refused += b.try_refused;
        a.allocs += b.allocs;
    }
}

struct World {
    rng: Rng,
    now_us: u64,
    trace: bool,
    n: u32,
    min_hold_ms: u64,
    join_rule: JoinRule,
    fence_kind: Option<FenceKind>,
    nodes: BTreeMap<u32, Mount>,
    incs: BTreeMap<u32, u64>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    link_last: HashMap<(u32, u32), u64>,
    /// cman's view: the nodes in the cluster's membership.
    members: BTreeSet<u32>,
    view_seq: u64,
    /// Evicted incarnations still running: their traffic goes nowhere.
    cut: BTreeSet<Member>,
    /// Nodes cut off from the others until the given time.
    cut_off: BTreeMap<u32, u64>,
    /// Failed incarnations not fenced yet.
    unfenced: BTreeSet<Member>,
    disk: Disk,
    fault_until: u64,
    faults_over: bool,
    traffic_until: u64,
    stats: Stats,
}

impl World {
    fn new(seed: u64, trace: bool) -> World {
        let mut rng = Rng(seed);
        let n = 2 + rng.below(3) as u32;
        let min_hold_ms = [0, 5, 20, 200][rng.below(4) as usize];
        let fence_kind =
            [None, Some(FenceKind::Power), Some(FenceKind::Scsi)][rng.below(3) as usize];
        let mut w = World {
            rng,
            now_us: 0,
            trace,
            n,
            min_hold_ms,
            join_rule: join_rule(),
            fence_kind,
            nodes: BTreeMap::new(),
            incs: BTreeMap::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            link_last: HashMap::new(),
            members: BTreeSet::new(),
            view_seq: 0,
            cut: BTreeSet::new(),
            cut_off: BTreeMap::new(),
            unfenced: BTreeSet::new(),
            disk: Disk::new(n),
            fault_until: 1_500_000,
            faults_over: false,
            traffic_until: 2_000_000,
            stats: Stats::default(),
        };
        w.log(|| format!("{n} nodes, min hold {min_hold_ms} ms, fencing {fence_kind:?}"));
        for id in 1..=n {
            w.start(id);
        }
        w.new_view(&[]);
        let first = 50_000 + w.rng.below(200_000);
        w.schedule(first, Ev::Fault);
        w
    }

    fn log(&self, s: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>9}] {}", self.now_us, s());
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now_us), self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn member(&self, id: u32) -> Option<Member> {
        self.nodes.get(&id).map(|m| m.me)
    }

    // ------------------------------------------------------------ node life

    fn start(&mut self, id: u32) {
        let inc = self.incs.entry(id).or_insert(0);
        *inc += 1;
        let me = (id, *inc);
        self.log(|| format!("start n{id}/{}", me.1));
        self.nodes
            .insert(id, Mount::new(me, self.min_hold_ms, self.join_rule));
        self.disk.alive.insert(me);
        self.members.insert(id);
    }

    /// The incarnation running on `id` ends (crash, power-off, withdraw).
    fn kill(&mut self, id: u32, why: &str) {
        let Some(m) = self.nodes.remove(&id) else {
            return;
        };
        self.log(|| format!("n{id}/{} ends: {why}", m.me.1));
        self.disk.alive.remove(&m.me);
        self.cut.remove(&m.me);
        self.link_last.retain(|(a, b), _| *a != id && *b != id);
    }

    /// A clean unmount is done: the process leaves the lockspace's group
    /// (a clean leave: the others hear it fenced at once) and ends.
    fn leave(&mut self, me: Member) {
        self.stats.unmounts += 1;
        let jid = self.nodes[&me.0].jid.expect("was mounted");
        assert!(
            !self.disk.dirty(jid),
            "n{}/{} unmounted with journal {jid} dirty",
            me.0,
            me.1
        );
        self.kill(me.0, "unmounted");
        self.members.remove(&me.0);
        self.new_view(&[]);
        let at = self.now_us + 50_000 + self.rng.below(300_000);
        self.schedule(at, Ev::Restart(me.0));
    }

    /// A new cman view of `members`, `failed` having failed, given to every
    /// member through its translator.
    fn new_view(&mut self, failed: &[u32]) {
        self.view_seq += 1;
        let members: Vec<u32> = self.members.iter().copied().collect();
        self.log(|| format!("view {} {members:?} failed {failed:?}", self.view_seq));
        for id in members.clone() {
            let seq = self.view_seq;
            self.with_node(id, |m, cx| m.confchg(seq, &members, failed, cx));
        }
    }

    /// Runs `f` on node `id`'s mount (if it runs and is not cut off from
    /// the cluster), then carries out what it asked for.
    fn with_node(&mut self, id: u32, f: impl FnOnce(&mut Mount, &mut Ctx)) {
        let Some(mut m) = self.nodes.remove(&id) else {
            return;
        };
        let mut cx = Ctx {
            now_us: self.now_us,
            disk: &mut self.disk,
            rng: &mut self.rng,
            traffic: self.now_us < self.traffic_until,
            trace: self.trace,
            stats: &mut self.stats.c,
            victims: self.unfenced.len(),
        };
        f(&mut m, &mut cx);
        let leave = m.withdrawn.is_none() && m.ready_to_leave(&mut cx);
        let out = std::mem::take(&mut m.out);
        let me = m.me;
        let withdrawn = m.withdrawn.clone();
        self.nodes.insert(id, m);
        for e in out {
            match e {
                Effect::Send { to, env } => self.send(me, to.0, env),
                Effect::Timer { at_us, timer } => {
                    self.schedule(at_us, Ev::Timer { who: me, timer })
                }
            }
        }
        if leave {
            self.leave(me);
            return;
        }
        if let Some(why) = withdrawn {
            self.stats.withdrawals += 1;
            assert!(
                self.disk.refuses(me),
                "n{}/{} withdrew without being fenced: {why}",
                me.0,
                me.1
            );
            self.kill(id, &why);
        }
    }

    // ------------------------------------------------------------ network

    fn send(&mut self, from: Member, to: u32, env: Envelope) {
        let Some(target) = self.member(to) else {
            return;
        };
        if self.cut.contains(&from) || self.cut.contains(&target) {
            return;
        }
        let mut delay = 50 + self.rng.below(500);
        while self.rng.chance(LOSS_PERCENT) {
            delay += RTO_US;
        }
        let mut at = self.now_us + delay;
        for n in [from.0, to] {
            if let Some(&until) = self.cut_off.get(&n) {
                at = at.max(until + delay);
            }
        }
        let last = self.link_last.entry((from.0, to)).or_insert(0);
        at = at.max(*last);
        *last = at;
        self.schedule(
            at,
            Ev::Deliver {
                from,
                to: target,
                env,
            },
        );
    }

    fn deliver(&mut self, from: Member, to: Member, env: Envelope) {
        let current = |w: &World, m: Member| w.member(m.0) == Some(m) && !w.cut.contains(&m);
        if !current(self, from) || !current(self, to) {
            return;
        }
        self.with_node(to.0, |m, cx| m.receive(NodeId(from.0), env, cx));
    }

    // ------------------------------------------------------------ faults

    /// Incarnations that are members, run and are not cut off.
    fn healthy(&self) -> Vec<u32> {
        self.members
            .iter()
            .copied()
            .filter(|id| self.nodes.contains_key(id) && !self.cut_off.contains_key(id))
            .collect()
    }

    fn fault(&mut self) {
        if self.faults_over {
            return;
        }
        let next = self.now_us + 50_000 + self.rng.below(250_000);
        self.schedule(next, Ev::Fault);
        let healthy = self.healthy();
        if healthy.len() < 2 {
            return;
        }
        let victim = healthy[self.rng.below(healthy.len() as u64) as usize];
        match self.rng.below(20) {
            0..=8 => {
                self.stats.crashes += 1;
                let me = self.member(victim).expect("runs");
                self.kill(victim, "crash");
                let at = self.now_us + TOKEN_US + self.rng.below(TOKEN_US);
                self.schedule(at, Ev::Detect(me));
            }
            9..=16 => {
                // Cut off: briefly (messages wait), or past the token
                // timeout (evicted) unless it would leave no majority.
                let long = self.rng.chance(60) && 2 * (healthy.len() - 1) >= self.members.len();
                let span = if long {
                    2 * TOKEN_US + self.rng.below(300_000)
                } else {
                    1_000 + self.rng.below(TOKEN_US / 2)
                };
                self.stats.cutoffs += 1;
                let until = self.now_us + span;
                self.log(|| format!("n{victim} cut off until {until}"));
                self.cut_off.insert(victim, until);
                self.schedule(until, Ev::Reconnect(victim));
                if long {
                    let me = self.member(victim).expect("runs");
                    self.schedule(self.now_us + TOKEN_US, Ev::Detect(me));
                }
            }
            17 => {
                // umount: it waits for the node's work to end.
                self.with_node(victim, |m, _| m.unmount_wanted = true);
            }
            18 => {}
            _ => self.power_loss(),
        }
    }

    fn power_loss(&mut self) {
        self.stats.power_losses += 1;
        self.log(|| "power loss: every node goes down".into());
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.kill(id, "power loss");
        }
        self.members.clear();
        self.cut.clear();
        self.unfenced.clear();
        for id in 1..=self.n {
            let at = self.now_us + 10_000 + self.rng.below(200_000);
            self.schedule(at, Ev::Restart(id));
        }
    }

    /// cman drops a failed or cut-off incarnation from the view and fences.
    fn detect(&mut self, m: Member) {
        if !self.members.contains(&m.0) || self.member(m.0).is_some_and(|cur| cur != m) {
            return;
        }
        self.stats.evictions += 1;
        self.members.remove(&m.0);
        self.unfenced.insert(m);
        if self.member(m.0) == Some(m) {
            // Still running, cut off: it hears nothing from now on, and
            // notices its eviction only later (a process stuck in I/O).
            self.cut.insert(m);
            let at = self.now_us + self.rng.below(1_500_000);
            self.schedule(at, Ev::Notice(m));
        }
        self.new_view(&[m.0]);
        let at = self.now_us + 1_000 + self.rng.below(50_000);
        self.schedule(at, Ev::Fence { victim: m });
    }

    fn fence(&mut self, victim: Member) {
        if !self.unfenced.contains(&victim) {
            return;
        }
        if self.rng.chance(20) {
            self.stats.fence_failures += 1;
            self.log(|| format!("fencing n{}/{} failed; again", victim.0, victim.1));
            let at = self.now_us + 20_000 + self.rng.below(100_000);
            self.schedule(at, Ev::Fence { victim });
            return;
        }
        let kind = self.fence_kind.unwrap_or(if self.rng.chance(50) {
            FenceKind::Power
        } else {
            FenceKind::Scsi
        });
        self.log(|| format!("n{}/{} fenced ({kind:?})", victim.0, victim.1));
        self.disk.refuse(victim);
        match kind {
            FenceKind::Power => {
                self.stats.power_fences += 1;
                if self.member(victim.0) == Some(victim) {
                    self.kill(victim.0, "powered off");
                }
            }
            FenceKind::Scsi => self.stats.scsi_fences += 1,
        }
        self.unfenced.remove(&victim);
        for id in self.members.clone() {
            self.with_node(id, |m, cx| m.node_fenced(victim.0, cx));
        }
        if self.rng.chance(80) || self.faults_over {
            let at = self.now_us + 100_000 + self.rng.below(500_000);
            self.schedule(at, Ev::Restart(victim.0));
        }
    }

    fn restart(&mut self, id: u32) {
        if self.members.contains(&id) {
            return;
        }
        if let Some(old) = self.member(id) {
            if self.unfenced.contains(&old) {
                // Not fenced yet: cman holds the new incarnation back.
                self.schedule(self.now_us + 50_000, Ev::Restart(id));
                return;
            }
            self.kill(id, "rebooted");
        }
        if self.unfenced.iter().any(|m| m.0 == id) {
            self.schedule(self.now_us + 50_000, Ev::Restart(id));
            return;
        }
        self.stats.restarts += 1;
        self.start(id);
        self.new_view(&[]);
    }

    // ------------------------------------------------------------ run

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { from, to, env } => self.deliver(from, to, env),
            Ev::Timer { who, timer } => {
                if self.member(who.0) == Some(who) {
                    self.with_node(who.0, |m, cx| m.on_timer(timer, cx));
                }
            }
            Ev::Fault => self.fault(),
            Ev::Detect(m) => self.detect(m),
            Ev::Fence { victim } => self.fence(victim),
            Ev::Notice(m) => {
                if self.member(m.0) == Some(m) {
                    self.stats.withdrawals += 1;
                    self.kill(m.0, "evicted: withdraws");
                }
            }
            Ev::Restart(id) => self.restart(id),
            Ev::Reconnect(id) => {
                if self.cut_off.get(&id).is_some_and(|&t| t <= self.now_us) {
                    self.cut_off.remove(&id);
                }
            }
        }
    }

    fn settled(&self) -> bool {
        self.nodes.len() == self.n as usize
            && self.members.len() == self.n as usize
            && self.cut.is_empty()
            && self.unfenced.is_empty()
            && self.nodes.values().all(|m| m.settled())
            && !self
                .events
                .values()
                .any(|e| matches!(e, Ev::Deliver { .. } | Ev::Restart(_)))
    }

    fn dump(&self) -> String {
        let mut s = format!(
            "members {:?} cut {:?} unfenced {:?} cut off {:?}\n",
            self.members, self.cut, self.unfenced, self.cut_off
        );
        for m in self.nodes.values() {
            s.push_str(&m.dump());
            s.push('\n');
        }
        s
    }

    fn run(&mut self) {
        let limit_us = self.traffic_until + 20_000_000;
        while let Some(Reverse((at, key))) = self.queue.pop() {
            let ev = self.events.remove(&key).expect("scheduled");
            self.now_us = at;
            if self.now_us >= self.fault_until {
                self.end_faults();
            }
            self.on_event(ev);
            self.stats.steps += 1;
            self.check();
            if self.now_us > self.traffic_until && self.settled() {
                break;
            }
            assert!(
                self.now_us < limit_us,
                "no progress: not settled by {} µs\n{}",
                self.now_us,
                self.dump()
            );
        }
        assert!(
            self.settled(),
            "ran out of events unsettled\n{}",
            self.dump()
        );
        self.disk.check_after_power_loss();
        self.stats.acked = self.disk.acked_writes;
    }

    /// Faults are over: cut-offs end, every node comes back.
    fn end_faults(&mut self) {
        if self.faults_over {
            return;
        }
        self.faults_over = true;
        self.log(|| "faults over".into());
        self.cut_off.clear();
        for id in 1..=self.n {
            if !self.members.contains(&id) {
                let at = self.now_us + self.rng.below(100_000);
                self.schedule(at, Ev::Restart(id));
            }
        }
    }

    // ------------------------------------------------------------ checks

    fn check(&self) {
        self.disk.check();
        let writers: Vec<&Mount> = self
            .nodes
            .values()
            .filter(|m| self.disk.may_write(m.me))
            .collect();
        for m in &writers {
            for (&b, &(v, _)) in &m.cache {
                assert_eq!(
                    v,
                    self.disk.acked(b),
                    "n{}/{} caches block {b} stale",
                    m.me.0,
                    m.me.1
                );
            }
        }
        let mut names: BTreeSet<GlockName> =
            cluster_sim::mount::data_glocks().into_iter().collect();
        names.extend((0..self.n).map(GlockName::journal));
        for name in names {
            for (i, a) in writers.iter().enumerate() {
                for b in &writers[i + 1..] {
                    check_pair(name, a, b);
                }
            }
        }
    }
}

/// The state a node may rely on for `name`: mid-demote it has already
/// given its cache up; mid-promote it has not got the new state yet.
fn effective_state(t: &GlockTable, name: GlockName) -> GlockState {
    let Some(g) = t.glock(&name) else {
        return GlockState::Un;
    };
    match g.in_flight() {
        None => g.state(),
        Some(tr) if tr.from.covers(tr.to) => tr.to,
        Some(tr) if tr.to.covers(tr.from) => tr.from,
        Some(_) => GlockState::Un,
    }
}

fn granted(t: &GlockTable, name: GlockName) -> Vec<GlockState> {
    t.glock(&name).map_or(Vec::new(), |g| {
        g.holders().filter(|h| h.granted).map(|h| h.mode).collect()
    })
}

fn check_pair(name: GlockName, a: &Mount, b: &Mount) {
    let (sa, sb) = (
        effective_state(&a.glocks, name),
        effective_state(&b.glocks, name),
    );
    assert!(
        sa.compatible(sb),
        "{name}: n{}/{} in {sa}, n{}/{} in {sb}",
        a.me.0,
        a.me.1,
        b.me.0,
        b.me.1
    );
    for ma in granted(&a.glocks, name) {
        for mb in granted(&b.glocks, name) {
            assert!(
                ma.compatible(mb),
                "{name}: n{}/{} holds {ma}, n{}/{} holds {mb}",
                a.me.0,
                a.me.1,
                b.me.0,
                b.me.1
            );
        }
    }
}

/// `CLUSTER_SIM_JOIN_RULE=control_rs` runs today's `control.rs` rule.
fn join_rule() -> JoinRule {
    match std::env::var("CLUSTER_SIM_JOIN_RULE").as_deref() {
        Ok("control_rs") => JoinRule::ControlRs,
        _ => JoinRule::Kernel,
    }
}

fn run_seed(seed: u64, trace: bool) -> Stats {
    let mut w = World::new(seed, trace);
    w.run();
    w.stats
}

fn run_seeds(seeds: impl Iterator<Item = u64>) -> Stats {
    let mut total = Stats::default();
    let mut count = 0u64;
    for seed in seeds {
        match std::panic::catch_unwind(|| run_seed(seed, false)) {
            Ok(s) => total.add(&s),
            Err(e) => {
                eprintln!(
                    "cluster_sim: seed {seed} failed; replay with CLUSTER_SIM_SEED={seed} cargo test -p clusterfs --test cluster_sim replay -- --nocapture"
                );
                std::panic::resume_unwind(e);
            }
        }
        count += 1;
    }
    eprintln!("cluster_sim: {count} seeds: {total:?}");
    total
}

#[test]
fn fixed_sample() {
    let s = run_seeds(0..300);
    // The sample must exercise what the checks are about.
    assert!(s.crashes > 100, "{s:?}");
    assert!(s.evictions > 100, "{s:?}");
    assert!(s.power_fences > 50 && s.scsi_fences > 50, "{s:?}");
    assert!(s.fence_failures > 10, "{s:?}");
    assert!(s.withdrawals > 10, "{s:?}");
    assert!(s.power_losses > 5, "{s:?}");
    assert!(s.c.recovered > 50, "{s:?}");
    assert!(s.c.frozen > 5 && s.c.deferred > 5, "{s:?}");
    assert!(s.c.first_mounts > 300 && s.c.joins > 300, "{s:?}");
    assert!(s.acked > 10_000 && s.c.reads > 10_000, "{s:?}");
}

/// The seeds that found bugs (see "Findings").
#[test]
fn regression_seeds() {
    run_seeds([124, 1466, 4062, 4259].into_iter());
}

#[test]
fn same_seed_same_run() {
    let (a, b) = (run_seed(11, false), run_seed(11, false));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
#[ignore]
fn campaign() {
    let n: u64 = std::env::var("CLUSTER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let start = std::time::Instant::now();
    run_seeds(1_000..1_000 + n);
    eprintln!("cluster_sim: campaign took {:?}", start.elapsed());
}

#[test]
fn replay() {
    if let Some(seed) = std::env::var("CLUSTER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let s = run_seed(seed, true);
        eprintln!("seed {seed}: {s:?}, ok");
    }
}
