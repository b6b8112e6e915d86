//! Deterministic simulation of a lockspace: several nodes, a seeded clock
//! and network (random delay, reordering across links, loss repaired by
//! retransmission), crashes with fencing, restarts that re-join, and
//! clients that lock, convert, cancel and unlock at random, and frequent
//! sweeps that free unused resources (racing lookups and requests). Some
//! locks are PERSISTENT: a crashed node's become orphans at their masters,
//! and the node, restarted, adopts them (ORPHAN) from a record that
//! survived its crash, as a user process would from a file.
//!
//! Checked after every step: no two incompatible locks are relied on at
//! once (holders' effective modes). Checked at the end (network healed,
//! traffic stopped): every request completed and every node is running.
//!
//! `DLM_SIM_SEEDS=10000 cargo test -p dlm --test sim -- --ignored` runs a
//! long campaign; `DLM_SIM_SEED=1234` replays one seed with a trace.

use std::collections::{BTreeMap, HashMap, VecDeque};

use dlm::node::{Action, Event, Node, Phase};
use dlm::plock::{Family, Kind, Plock};
use dlm::wire::{Envelope, PlockOp, PlockReply};
use dlm::{Flags, LockId, Lvb, Mode, NodeId, ResName, SbFlags, Status};

/// SplitMix64: tiny, stable across crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Idle {
        until: u64,
    },
    /// Waiting for a plock request (F_SETLK or F_SETLKW).
    PWaiting {
        req: u64,
    },
    /// Holding bytes start..=end of the plock file.
    PHolding {
        start: u64,
        end: u64,
        until: u64,
    },
    /// Waiting for a plock unlock to be acknowledged.
    PReleasing {
        req: u64,
    },
    Waiting {
        id: LockId,
        since: u64,
        convert: bool,
    },
    Holding {
        id: LockId,
        until: u64,
    },
    Releasing {
        id: LockId,
    },
}

struct SimNode {
    node: Node,
    clients: Vec<Client>,
    pending_ranges: HashMap<u64, (u64, u64)>,
    /// The slot this incarnation was given by its last recovery (0: none).
    slot: u32,
}

struct Sim {
    rng: Rng,
    now: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Per directed link: FIFO of (delivery time, message).
    links: HashMap<(NodeId, NodeId), VecDeque<(u64, Envelope)>>,
    /// Scheduled membership events: (time, event, targets).
    control: Vec<(u64, Control)>,
    gen: u64,
    members: Vec<NodeId>,
    names: Vec<ResName>,
    traffic_until: u64,
    trace: bool,
    steps: u64,
    crashes: u32,
    rebuilt_locks: u64,
    removes: u64,
    refused: u64,
    /// Per node, the PERSISTENT locks it held or asked for when it last
    /// crashed and has not adopted back yet (survives the crash).
    records: HashMap<NodeId, Vec<(ResName, Mode)>>,
    /// Live locks asked for with PERSISTENT (their flags change on unlock).
    persistent: std::collections::HashSet<(NodeId, LockId)>,
    adopted: u64,
    /// Nodes whose orphans must go: purged (again every 20 ms) once their
    /// restarted incarnation adopted what it recorded, or at once for a
    /// node that stays dead, until none is left anywhere.
    purge: std::collections::BTreeSet<NodeId>,
    last_purge: u64,
    purges: u64,
    /// The slots each recovered generation agreed, as its first member
    /// reported them.
    slot_views: HashMap<u64, Vec<(NodeId, u32)>>,
    /// Slots reported gone (`RecoverSlot`).
    slots_freed: u64,
    /// Crashed nodes not fenced yet.
    unfenced: std::collections::BTreeSet<NodeId>,
}

#[derive(Clone, Debug)]
enum Control {
    Crash(NodeId),
    Detect(NodeId),
    Fence(NodeId),
    Restart(NodeId),
}

const CLIENTS: usize = 3;
const LOSS_PERCENT: u64 = 5;
const RTO_US: u64 = 20_000;
/// Chance per node per clock tick (100 us) of a resource sweep.
const SWEEP_PERCENT: u64 = 10;

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng(seed);
        let n = 2 + rng.below(3) as u32;
        let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut nodes = BTreeMap::new();
        for &id in &members {
            nodes.insert(
                id,
                SimNode {
                    node: Node::with_members(id, 1, &members),
                    clients: vec![Client::Idle { until: 0 }; CLIENTS],
                    pending_ranges: HashMap::new(),
                    slot: 0,
                },
            );
        }
        let names = (0..1 + rng.below(4))
            .map(|i| ResName::new(format!("r{i}").as_bytes()).unwrap())
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            nodes,
            links: HashMap::new(),
            control: Vec::new(),
            gen: 1,
            members,
            names,
            traffic_until: 2_000_000,
            trace,
            steps: 0,
            crashes: 0,
            rebuilt_locks: 0,
            removes: 0,
            refused: 0,
            records: HashMap::new(),
            persistent: Default::default(),
            adopted: 0,
            purge: Default::default(),
            last_purge: 0,
            purges: 0,
            slot_views: HashMap::new(),
            slots_freed: 0,
            unfenced: Default::default(),
        };
        let crashes = sim.rng.below(3);
        for _ in 0..crashes {
            let victim = NodeId(1 + sim.rng.below(n as u64) as u32);
            let at = 100_000 + sim.rng.below(1_500_000);
            sim.control.push((at, Control::Crash(victim)));
        }
        sim
    }

    fn log(&self, s: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>8}] {}", self.now, s());
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, env: Envelope) {
        let mut delay = 50 + self.rng.below(500);
        while self.rng.chance(LOSS_PERCENT) {
            delay += RTO_US; // lost, retransmitted after a timeout
        }
        let q = self.links.entry((from, to)).or_default();
        let t = q.back().map_or(0, |(t, _)| *t).max(self.now + delay);
        q.push_back((t, env));
    }

    fn apply(&mut self, at: NodeId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, env } => {
                    match &env.msg {
                        dlm::wire::Msg::RecMaster { locks, .. } => {
                            self.rebuilt_locks += locks.len() as u64
                        }
                        dlm::wire::Msg::RecPlocks { locks } => {
                            self.rebuilt_locks += locks.len() as u64
                        }
                        dlm::wire::Msg::Remove { .. } => self.removes += 1,
                        dlm::wire::Msg::NotMaster { .. } => self.refused += 1,
                        _ => {}
                    }
                    self.log(|| format!("{at} -> {to}: {:?}", env));
                    self.send(at, to, env);
                }
                Action::Ast {
                    id,
                    status,
                    sbflags,
                    lvb,
                } => self.on_ast(at, id, status, sbflags, lvb),
                Action::Bast { id, mode } => self.log(|| format!("{at} bast {id} {mode}")),
                Action::PlockDone { req, result } => self.on_plock_done(at, req, result),
                Action::RecoverPrep => {}
                Action::RecoverSlot { node, slot } => self.on_recover_slot(at, node, slot),
                Action::RecoverDone { gen, slots } => self.on_recover_done(at, gen, slots),
            }
        }
    }

    /// A slot is reported gone only when the process that held it is:
    /// crashed (and fenced, as recovery waits for that) or restarted.
    fn on_recover_slot(&mut self, at: NodeId, node: NodeId, slot: u32) {
        self.log(|| format!("{at} recover_slot {node} slot {slot}"));
        assert_ne!(at, node, "a node recovers its own slot");
        assert!(
            !self.unfenced.contains(&node),
            "slot {slot} of {node} reported gone before {node} was fenced"
        );
        assert!(
            self.nodes.get(&node).is_none_or(|sn| sn.slot != slot),
            "slot {slot} of live node {node} reported gone"
        );
        self.slots_freed += 1;
    }

    /// Every member of a generation agrees on its slots; slots are
    /// distinct; an incarnation keeps its slot for as long as it lives.
    fn on_recover_done(&mut self, at: NodeId, gen: u64, slots: Vec<(NodeId, u32)>) {
        self.log(|| format!("{at} recover_done gen {gen} slots {slots:?}"));
        let mut seen: Vec<u32> = slots.iter().map(|(_, s)| *s).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), slots.len(), "slot given twice: {slots:?}");
        assert!(!seen.contains(&0), "member without a slot: {slots:?}");
        let agreed = self.slot_views.entry(gen).or_insert_with(|| slots.clone());
        assert_eq!(*agreed, slots, "members of gen {gen} disagree on slots");
        let sn = self.nodes.get_mut(&at).expect("live node");
        let mine = slots.iter().find(|(n, _)| *n == at).expect("in own view").1;
        assert!(
            sn.slot == 0 || sn.slot == mine,
            "node {at} moved from slot {} to {mine}",
            sn.slot
        );
        sn.slot = mine;
    }

    fn on_plock_done(&mut self, at: NodeId, req: u64, result: PlockReply) {
        self.log(|| format!("{at} plock done {req} {result:?}"));
        let now = self.now;
        // Some holds outlast a whole recovery.
        let hold = if self.rng.chance(20) {
            200_000 + self.rng.below(200_000)
        } else {
            100 + self.rng.below(3000)
        };
        let idle = self.rng.below(2000);
        let Some(sn) = self.nodes.get_mut(&at) else {
            return;
        };
        for c in sn.clients.iter_mut() {
            match *c {
                Client::PWaiting { req: r } if r == req => {
                    *c = match result {
                        PlockReply::Ok => {
                            let (start, end) = sn.pending_ranges.remove(&req).expect("range");
                            Client::PHolding {
                                start,
                                end,
                                until: now + hold,
                            }
                        }
                        _ => {
                            sn.pending_ranges.remove(&req);
                            Client::Idle { until: now + idle }
                        }
                    };
                }
                Client::PReleasing { req: r } if r == req => {
                    *c = Client::Idle { until: now + idle }
                }
                _ => {}
            }
        }
    }

    fn on_ast(
        &mut self,
        at: NodeId,
        id: LockId,
        status: Status,
        sbflags: SbFlags,
        _lvb: Option<Lvb>,
    ) {
        self.log(|| format!("{at} ast {id} {status:?} {sbflags:?}"));
        if self
            .nodes
            .get(&at)
            .is_some_and(|sn| sn.node.lock_info(id).is_none())
        {
            self.persistent.remove(&(at, id));
        }
        let now = self.now;
        let hold = if self.rng.chance(10) {
            200_000 + self.rng.below(200_000)
        } else {
            100 + self.rng.below(3000)
        };
        let idle = self.rng.below(2000);
        let Some(sn) = self.nodes.get_mut(&at) else {
            return;
        };
        for c in sn.clients.iter_mut() {
            match *c {
                Client::Waiting { id: w, convert, .. } if w == id => {
                    if status != Status::Again
                        && sn
                            .node
                            .lock_info(id)
                            .is_some_and(|l| l.flags.contains(Flags::ORPHAN))
                    {
                        self.adopted += 1;
                    }
                    *c = match status {
                        Status::Granted(_) => Client::Holding {
                            id,
                            until: now + hold,
                        },
                        // A refused or cancelled conversion keeps the old mode.
                        _ if convert => Client::Holding { id, until: now },
                        _ => Client::Idle { until: now + idle },
                    };
                }
                Client::Releasing { id: w } if w == id => {
                    *c = match status {
                        Status::Unlocked => Client::Idle { until: now + idle },
                        _ => Client::Holding {
                            id,
                            until: now + hold,
                        },
                    };
                }
                _ => {}
            }
        }
    }

    fn random_mode(&mut self) -> Mode {
        Mode::ALL[self.rng.below(6) as usize]
    }

    fn client_step(&mut self, at: NodeId, ci: usize) {
        let c = self.nodes[&at].clients[ci];
        let traffic = self.now < self.traffic_until;
        let mut out = Vec::new();
        let next = match c {
            Client::Idle { until } if until <= self.now && traffic && self.rng.chance(25) => {
                let start = self.rng.below(20);
                let end = start + self.rng.below(10);
                let kind = if self.rng.chance(50) {
                    Kind::Read
                } else {
                    Kind::Write
                };
                let wait = self.rng.chance(70);
                let op = PlockOp::Lock {
                    kind,
                    start,
                    end,
                    wait,
                };
                let sn = self.nodes.get_mut(&at).unwrap();
                let req = sn
                    .node
                    .plock(Family::Posix, 1, ci as u64, op, &mut out)
                    .expect("plock");
                sn.pending_ranges.insert(req, (start, end));
                self.log(|| {
                    format!("{at} c{ci} plock {kind:?} {start}-{end} wait={wait} -> {req}")
                });
                Some(Client::PWaiting { req })
            }
            Client::PHolding { start, end, until } if until <= self.now => {
                let sn = self.nodes.get_mut(&at).unwrap();
                let req = sn
                    .node
                    .plock(
                        Family::Posix,
                        1,
                        ci as u64,
                        PlockOp::Unlock { start, end },
                        &mut out,
                    )
                    .expect("punlock");
                self.log(|| format!("{at} c{ci} punlock {start}-{end} -> {req}"));
                Some(Client::PReleasing { req })
            }
            Client::Idle { until }
                if until <= self.now && self.records.get(&at).is_some_and(|r| !r.is_empty()) =>
            {
                // Take back what this node held before it crashed.
                let (name, mode) = self.records.get_mut(&at).unwrap().pop().unwrap();
                let flags = Flags::VALBLK | Flags::PERSISTENT | Flags::ORPHAN;
                let n = &mut self.nodes.get_mut(&at).unwrap().node;
                let id = n.lock(name, mode, flags, None, &mut out).expect("adopt");
                self.persistent.insert((at, id));
                self.log(|| format!("{at} c{ci} adopt {name} {mode} -> {id}"));
                Some(Client::Waiting {
                    id,
                    since: self.now,
                    convert: false,
                })
            }
            Client::Idle { until } if until <= self.now && traffic => {
                let name = self.names[self.rng.below(self.names.len() as u64) as usize];
                let mode = self.random_mode();
                let mut flags = Flags::VALBLK;
                if self.rng.chance(15) {
                    flags = flags | Flags::NOQUEUE;
                }
                if self.rng.chance(30) {
                    flags = flags | Flags::PERSISTENT;
                }
                let n = &mut self.nodes.get_mut(&at).unwrap().node;
                match n.lock(name, mode, flags, None, &mut out) {
                    Ok(id) => {
                        if flags.contains(Flags::PERSISTENT) {
                            self.persistent.insert((at, id));
                        }
                        self.log(|| format!("{at} c{ci} lock {name} {mode} -> {id}"));
                        Some(Client::Waiting {
                            id,
                            since: self.now,
                            convert: false,
                        })
                    }
                    Err(e) => panic!("lock refused: {e}"),
                }
            }
            // Adoptions are not cancelled: the record would lose them.
            Client::Waiting { id, since, .. }
                if self.now > since + 5_000
                    && self.rng.chance(2)
                    && !self.nodes[&at]
                        .node
                        .lock_info(id)
                        .is_some_and(|l| l.flags.contains(Flags::ORPHAN)) =>
            {
                let n = &mut self.nodes.get_mut(&at).unwrap().node;
                let _ = n.cancel(id, &mut out);
                self.log(|| format!("{at} c{ci} cancel {id}"));
                None
            }
            Client::Holding { id, until } if until <= self.now => {
                // Persistent locks are not converted (a conversion
                // without PERSISTENT would drop it, as in the kernel).
                let persistent = self.nodes[&at]
                    .node
                    .lock_info(id)
                    .is_some_and(|l| l.flags.contains(Flags::PERSISTENT));
                let convert = traffic && !persistent && self.rng.chance(30);
                let mode = self.random_mode();
                let flags = if self.rng.chance(30) {
                    Flags::VALBLK | Flags::CONVDEADLK
                } else {
                    Flags::VALBLK
                };
                let lvb = Some(Lvb([self.rng.below(256) as u8; 32]));
                let n = &mut self.nodes.get_mut(&at).unwrap().node;
                if convert {
                    n.convert(id, mode, flags, lvb, &mut out).expect("convert");
                    self.log(|| format!("{at} c{ci} convert {id} {mode}"));
                    Some(Client::Waiting {
                        id,
                        since: self.now,
                        convert: true,
                    })
                } else {
                    n.unlock(id, Flags::VALBLK, lvb, &mut out).expect("unlock");
                    self.log(|| format!("{at} c{ci} unlock {id}"));
                    Some(Client::Releasing { id })
                }
            }
            _ => None,
        };
        if let Some(next) = next {
            self.nodes.get_mut(&at).unwrap().clients[ci] = next;
        }
        self.apply(at, out);
    }

    fn control(&mut self, ev: Control) {
        self.log(|| format!("control {ev:?}"));
        match ev {
            Control::Crash(n) => {
                if !self.nodes.contains_key(&n) || self.nodes.len() < 2 {
                    return;
                }
                self.crashes += 1;
                self.unfenced.insert(n);
                let gone = self.nodes.remove(&n).unwrap();
                // What a user process would have written down: every
                // persistent lock held or asked for (a grant may be on
                // its way), with the mode it was granted or asked in.
                let record = self.records.entry(n).or_default();
                for l in gone.node.locks() {
                    if self.persistent.remove(&(n, l.id)) {
                        if let Some(m) = l.grmode.or(l.rqmode) {
                            record.push((l.name, m));
                        }
                    }
                }
                self.persistent.retain(|(node, _)| *node != n);
                self.links.retain(|(a, b), _| *a != n && *b != n);
                let detect = self.now + 1_000 + self.rng.below(50_000);
                self.control.push((detect, Control::Detect(n)));
            }
            Control::Detect(n) => {
                self.gen += 1;
                self.members.retain(|m| *m != n);
                let (gen, members) = (self.gen, self.members.clone());
                self.broadcast(Event::Members { gen, members });
                let fence = self.now + self.rng.below(100_000);
                self.control.push((fence, Control::Fence(n)));
            }
            Control::Fence(n) => {
                self.unfenced.remove(&n);
                self.broadcast(Event::Fenced(n));
                // A node with orphans to adopt always comes back.
                let orphans = self.records.get(&n).is_some_and(|r| !r.is_empty());
                self.purge.insert(n);
                if orphans || self.rng.chance(60) {
                    let at = self.now + self.rng.below(300_000);
                    self.control.push((at, Control::Restart(n)));
                }
            }
            Control::Restart(n) => {
                if self.nodes.contains_key(&n) {
                    return;
                }
                self.nodes.insert(
                    n,
                    SimNode {
                        node: Node::new(n, 1, 1),
                        clients: vec![Client::Idle { until: self.now }; CLIENTS],
                        pending_ranges: HashMap::new(),
                        slot: 0,
                    },
                );
                self.gen += 1;
                self.members.push(n);
                let (gen, members) = (self.gen, self.members.clone());
                self.broadcast(Event::Members { gen, members });
            }
        }
    }

    fn broadcast(&mut self, ev: Event) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let mut out = Vec::new();
            self.nodes
                .get_mut(&id)
                .unwrap()
                .node
                .handle(ev.clone(), &mut out);
            self.apply(id, out);
        }
    }

    /// Runs one step; false when nothing is left to do.
    fn step(&mut self) -> bool {
        self.steps += 1;
        // Next message delivery.
        let msg = self
            .links
            .iter()
            .filter_map(|(k, q)| q.front().map(|(t, _)| (*t, *k)))
            .min();
        let ctl = self
            .control
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (*t, i))
            .min();
        let client_due = self.now < self.traffic_until + 10_000_000;
        let tick = self.now + 100;
        let t_msg = msg.map_or(u64::MAX, |m| m.0);
        let t_ctl = ctl.map_or(u64::MAX, |c| c.0);
        if t_ctl <= t_msg && t_ctl <= tick {
            self.now = self.now.max(t_ctl);
            let (_, ev) = self.control.remove(ctl.unwrap().1);
            self.control(ev);
        } else if t_msg <= tick {
            let (t, (from, to)) = msg.unwrap();
            self.now = self.now.max(t);
            let (_, env) = self
                .links
                .get_mut(&(from, to))
                .unwrap()
                .pop_front()
                .unwrap();
            if let Some(sn) = self.nodes.get_mut(&to) {
                let mut out = Vec::new();
                sn.node.receive(from, env, &mut out);
                self.apply(to, out);
            }
        } else {
            self.now = tick;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                for ci in 0..CLIENTS {
                    if self.nodes.contains_key(&id) {
                        self.client_step(id, ci);
                    }
                }
                if self.nodes.contains_key(&id) {
                    self.purge_step(id);
                }
                // Free unused resources far more often than a real node
                // (every 10 s), so frees race with lookups and requests.
                if self.nodes.contains_key(&id) && self.rng.chance(SWEEP_PERCENT) {
                    let mut out = Vec::new();
                    self.nodes.get_mut(&id).unwrap().node.sweep(&mut out);
                    self.apply(id, out);
                }
            }
            if !client_due {
                return false;
            }
        }
        self.check_safety();
        !(self.now > self.traffic_until && self.quiescent())
    }

    /// Whether `owner`'s orphans may be purged now: it is dead, or alive
    /// with nothing left to adopt.
    fn adoption_done(&self, owner: NodeId) -> bool {
        if self.records.get(&owner).is_some_and(|r| !r.is_empty()) {
            return false;
        }
        let Some(sn) = self.nodes.get(&owner) else {
            return !self
                .control
                .iter()
                .any(|(_, c)| matches!(c, Control::Restart(n) if *n == owner));
        };
        !sn.clients.iter().any(|c| match c {
            Client::Waiting { id, .. } => sn
                .node
                .lock_info(*id)
                .is_some_and(|l| l.flags.contains(Flags::ORPHAN)),
            _ => false,
        })
    }

    fn orphans_of(&self, owner: NodeId) -> usize {
        self.nodes
            .values()
            .flat_map(|sn| sn.node.resources())
            .filter_map(|(_, e)| e.core.as_ref())
            .flat_map(|c| c.queue(dlm::rsb::Queue::Grant))
            .filter(|l| l.orphan_of == Some(owner))
            .count()
    }

    /// Node `at` purges the orphans of the owners due, as a restarted
    /// node (its own) or an administrator (a node gone for good) would.
    fn purge_step(&mut self, at: NodeId) {
        if self.now < self.last_purge + 20_000 || self.nodes[&at].node.phase() != Phase::Running {
            return;
        }
        let settled = self.links.values().all(|q| q.is_empty())
            && self
                .nodes
                .values()
                .all(|n| n.node.phase() == Phase::Running);
        for owner in self.purge.clone() {
            if !self.adoption_done(owner) {
                continue;
            }
            if settled && self.orphans_of(owner) == 0 {
                self.purge.remove(&owner);
                continue;
            }
            let mut out = Vec::new();
            self.nodes
                .get_mut(&at)
                .unwrap()
                .node
                .purge_orphans(owner, &mut out);
            self.log(|| format!("{at} purge orphans of {owner}"));
            self.purges += 1;
            self.apply(at, out);
        }
        self.last_purge = self.now;
    }

    fn quiescent(&self) -> bool {
        self.purge.is_empty()
            && self.records.values().all(|r| r.is_empty())
            && self.control.is_empty()
            && self.links.values().all(|q| q.is_empty())
            && self
                .nodes
                .values()
                .all(|n| n.clients.iter().all(|c| matches!(c, Client::Idle { .. })))
    }

    fn check_plocks(&self) {
        let mut all: Vec<Plock> = Vec::new();
        for sn in self.nodes.values() {
            all.extend(sn.node.own_plocks().dump().into_iter().map(|(_, _, p)| p));
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                let overlap = a.start <= b.end && b.start <= a.end;
                let conflict = a.owner != b.owner
                    && overlap
                    && (a.kind == Kind::Write || b.kind == Kind::Write);
                assert!(
                    !conflict,
                    "t={}: conflicting plocks {a:?} and {b:?}",
                    self.now
                );
            }
        }
    }

    fn check_safety(&self) {
        self.check_plocks();
        let mut held: HashMap<ResName, Vec<(NodeId, LockId, Mode)>> = HashMap::new();
        for (nid, sn) in &self.nodes {
            for l in sn.node.locks() {
                if let Some(m) = l.effective_mode() {
                    held.entry(l.name).or_default().push((*nid, l.id, m));
                }
            }
        }
        for sn in self.nodes.values() {
            for (name, e) in sn.node.resources() {
                let Some(core) = &e.core else { continue };
                for l in core.queue(dlm::rsb::Queue::Grant) {
                    if l.orphan_of.is_some() {
                        let m = l.grmode.expect("orphans are granted");
                        held.entry(*name)
                            .or_default()
                            .push((l.key.node, l.key.id, m));
                    }
                }
            }
        }
        for (name, locks) in held {
            for (i, a) in locks.iter().enumerate() {
                for b in &locks[i + 1..] {
                    assert!(
                        a.2.compatible(b.2),
                        "t={} {name}: incompatible grants {a:?} and {b:?}",
                        self.now
                    );
                }
            }
        }
    }

    fn check_liveness(&self) {
        for (nid, sn) in &self.nodes {
            assert_eq!(
                sn.node.phase(),
                Phase::Running,
                "node {nid} stuck in recovery"
            );
            for (ci, c) in sn.clients.iter().enumerate() {
                assert!(
                    matches!(c, Client::Idle { .. }),
                    "node {nid} client {ci} never completed: {c:?}"
                );
            }
            assert_eq!(sn.node.locks().count(), 0, "node {nid} still has locks");
            for (name, e) in sn.node.resources() {
                let orphans = e.core.as_ref().map_or(0, |c| {
                    c.queue(dlm::rsb::Queue::Grant)
                        .iter()
                        .filter(|l| l.orphan_of.is_some())
                        .count()
                });
                assert_eq!(
                    orphans, 0,
                    "node {nid} keeps orphans of {name} nobody adopted"
                );
            }
            assert!(
                sn.node.own_plocks().dump().is_empty(),
                "node {nid} still has plocks"
            );
        }
    }
}

/// What one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Stats {
    steps: u64,
    crashes: u64,
    /// Locks sent to new masters by recovery.
    rebuilt: u64,
    /// Master copies freed (`Remove` sent to a directory node).
    removes: u64,
    /// Requests that reached a node without the master copy and were sent
    /// back to look the master up again (`NotMaster`).
    refused: u64,
    /// Orphans adopted by their restarted node.
    adopted: u64,
    /// Orphan purges sent.
    purges: u64,
    /// Slots of gone processes reported to the lockspace user.
    slots_freed: u64,
}

fn run_seed(seed: u64, trace: bool) -> Stats {
    let mut sim = Sim::new(seed, trace);
    let mut steps = 0u64;
    while sim.step() {
        steps += 1;
        assert!(steps < 5_000_000, "seed {seed}: no progress");
    }
    sim.check_liveness();
    Stats {
        steps: sim.steps,
        crashes: u64::from(sim.crashes),
        rebuilt: sim.rebuilt_locks,
        removes: sim.removes,
        refused: sim.refused,
        adopted: sim.adopted,
        purges: sim.purges,
        slots_freed: sim.slots_freed,
    }
}

/// Runs the seeds; returns the totals.
fn run_seeds(seeds: impl Iterator<Item = u64>) -> Stats {
    let mut total = Stats::default();
    for seed in seeds {
        match std::panic::catch_unwind(|| run_seed(seed, false)) {
            Ok(s) => {
                total.steps += s.steps;
                total.crashes += s.crashes;
                total.rebuilt += s.rebuilt;
                total.removes += s.removes;
                total.refused += s.refused;
                total.adopted += s.adopted;
                total.purges += s.purges;
                total.slots_freed += s.slots_freed;
            }
            Err(e) => {
                eprintln!("simulation failed for seed {seed}; replay with DLM_SIM_SEED={seed} cargo test -p dlm --test sim replay -- --nocapture");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("{total:?}");
    total
}

#[test]
fn sim_fixed_sample() {
    let s = run_seeds(0..200);
    // The sample must really exercise recovery with locks held, and
    // freeing racing with requests.
    assert!(s.crashes > 50, "{s:?}");
    assert!(s.rebuilt > 50, "{s:?}");
    assert!(s.removes > 100, "{s:?}");
    assert!(s.refused > 5, "{s:?}");
    assert!(s.adopted > 10, "{s:?}");
    assert!(s.slots_freed > 50, "{s:?}");
}

#[test]
fn sim_same_seed_same_run() {
    assert_eq!(run_seed(7, false), run_seed(7, false));
}

#[test]
#[ignore]
fn sim_campaign() {
    let n: u64 = std::env::var("DLM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    run_seeds(1_000..1_000 + n);
}

#[test]
fn replay() {
    if let Some(seed) = std::env::var("DLM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let s = run_seed(seed, true);
        eprintln!("seed {seed}: {s:?}, ok");
    }
}
