//! The glock core on 2–3 simulated nodes over a tiny fake DLM, driven by
//! random operations (proptest, plus a seeded campaign that prints its
//! seed on failure). After every step the checker asserts:
//! - granted holders of one glock on different nodes are compatible, and
//!   so are the nodes' effective glock states;
//! - no holder is granted beyond its node's glock state, and holders on one
//!   node are compatible with each other;
//! - a glock at rest is in the mode the DLM granted it; a glock in flight
//!   has its request in the DLM or its answer on the way;
//! - nothing waits unless a holder is granted or a transition is in flight
//!   (no lost wake-up);
//! - a DLM request leaving EX comes after a Sync; one going to NL or CW
//!   from a caching state comes after an Invalidate; a remote demote of an
//!   inode glock comes at least the minimum hold time after its last change
//!   unless nobody held or waited for it when it was asked for (as in the
//!   kernel's `gfs2_glock_cb`).
//!
//! At the end all holders are released and messages delivered until every
//! request was granted or refused (no deadlock, no lost wake-up).
//!
//! Longer campaigns: `GLOCK_SEEDS=20000 cargo test -p clusterfs --test glock_model seeded`
//! (`GLOCK_SEED=N` replays one seed), `PROPTEST_CASES=5000 ... coherent`.

mod common;

use clusterfs::glock::{
    nondisk, Action, DlmFailure, DlmMode, GlockConfig, GlockName, GlockState, GlockTable,
    GlockType, HolderFlags, HolderId,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const MIN_HOLD_MS: u64 = 200;
const NAMES: [GlockName; 4] = [
    GlockName::inode(100),
    GlockName::inode(101),
    GlockName::rgrp(17),
    GlockName::nondisk(nondisk::RENAME),
];
const MAX_HOLDERS_PER_NODE: usize = 5;

// ---------------------------------------------------------------- fake DLM

/// What the DLM sends a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    Granted(GlockName, DlmMode),
    Failed(GlockName, DlmFailure),
    Bast(GlockName, DlmMode),
}

#[derive(Clone, Debug)]
struct Granted {
    mode: DlmMode,
    /// Modes this lock was already told about since its last grant.
    basted: BTreeSet<DlmMode>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    node: usize,
    mode: DlmMode,
}

#[derive(Clone, Debug, Default)]
struct Resource {
    granted: BTreeMap<usize, Granted>,
    converting: Vec<Pending>,
    waiting: Vec<Pending>,
}

impl Resource {
    fn fits(&self, node: usize, mode: DlmMode) -> bool {
        self.granted
            .iter()
            .all(|(&n, g)| n == node || g.mode.compatible(mode))
    }

    fn is_pending(&self, node: usize) -> bool {
        self.converting
            .iter()
            .chain(&self.waiting)
            .any(|p| p.node == node)
    }

    /// A new conversion that waits on a queued one which waits on it.
    fn conversion_deadlock(&self, node: usize, mode: DlmMode) -> bool {
        let held = self.granted[&node].mode;
        self.converting.iter().any(|p| {
            let other_held = self.granted[&p.node].mode;
            !p.mode.compatible(held) && !mode.compatible(other_held)
        })
    }
}

/// Grants by compatibility (conversions first, then new requests in FIFO
/// order), refuses NOQUEUE requests that cannot be granted, reports
/// conversion deadlocks, and sends one blocking callback per blocked mode
/// to each granted lock in the way.
#[derive(Debug, Default)]
struct FakeDlm {
    resources: BTreeMap<GlockName, Resource>,
    inbox: Vec<VecDeque<Msg>>,
}

impl FakeDlm {
    fn new(nodes: usize) -> Self {
        FakeDlm {
            resources: BTreeMap::new(),
            inbox: vec![VecDeque::new(); nodes],
        }
    }

    fn granted_mode(&self, node: usize, name: GlockName) -> Option<DlmMode> {
        self.resources
            .get(&name)?
            .granted
            .get(&node)
            .map(|g| g.mode)
    }

    fn request(&mut self, node: usize, name: GlockName, mode: DlmMode, try_lock: bool) {
        let res = self.resources.entry(name).or_default();
        assert!(
            !res.is_pending(node),
            "node {node}: second request on {name}"
        );
        let converting = res.granted.contains_key(&node);
        let queues_empty = res.converting.is_empty() && res.waiting.is_empty();
        if res.fits(node, mode) && (converting || queues_empty) {
            Self::grant(res, &mut self.inbox, node, name, mode);
        } else if try_lock {
            self.inbox[node].push_back(Msg::Failed(name, DlmFailure::TryFailed));
        } else if converting && res.conversion_deadlock(node, mode) {
            self.inbox[node].push_back(Msg::Failed(name, DlmFailure::Deadlock));
        } else if converting {
            res.converting.push(Pending { node, mode });
        } else {
            res.waiting.push(Pending { node, mode });
        }
        self.settle(name);
    }

    fn unlock(&mut self, node: usize, name: GlockName) {
        let res = self
            .resources
            .get_mut(&name)
            .expect("unlock of an unknown resource");
        assert!(
            !res.is_pending(node),
            "node {node}: unlock of {name} with a request pending"
        );
        assert!(
            res.granted.remove(&node).is_some(),
            "node {node}: unlock of {name} it does not hold"
        );
        self.settle(name);
    }

    fn grant(
        res: &mut Resource,
        inbox: &mut [VecDeque<Msg>],
        node: usize,
        name: GlockName,
        mode: DlmMode,
    ) {
        res.granted.insert(
            node,
            Granted {
                mode,
                basted: BTreeSet::new(),
            },
        );
        inbox[node].push_back(Msg::Granted(name, mode));
    }

    fn settle(&mut self, name: GlockName) {
        while self.grant_one(name) {}
        self.send_basts(name);
        let res = &self.resources[&name];
        if res.granted.is_empty() && res.converting.is_empty() && res.waiting.is_empty() {
            self.resources.remove(&name);
        }
    }

    fn grant_one(&mut self, name: GlockName) -> bool {
        let res = self.resources.get_mut(&name).unwrap();
        if let Some(at) = res.converting.iter().position(|p| res.fits(p.node, p.mode)) {
            let p = res.converting.remove(at);
            Self::grant(res, &mut self.inbox, p.node, name, p.mode);
            return true;
        }
        let head_fits = res
            .waiting
            .first()
            .is_some_and(|p| res.fits(p.node, p.mode));
        if head_fits && res.converting.is_empty() {
            let p = res.waiting.remove(0);
            Self::grant(res, &mut self.inbox, p.node, name, p.mode);
            return true;
        }
        false
    }

    fn send_basts(&mut self, name: GlockName) {
        let res = self.resources.get_mut(&name).unwrap();
        let blocked: Vec<Pending> = res.converting.iter().chain(&res.waiting).copied().collect();
        for p in blocked {
            for (&node, g) in res.granted.iter_mut() {
                if node != p.node && !g.mode.compatible(p.mode) && g.basted.insert(p.mode) {
                    self.inbox[node].push_back(Msg::Bast(name, p.mode));
                }
            }
        }
    }

    /// Is `node`'s request on `name` still queued, or its answer on the way?
    fn has_request_or_answer(&self, node: usize, name: GlockName) -> bool {
        let queued = self
            .resources
            .get(&name)
            .is_some_and(|r| r.is_pending(node));
        let answer = self.inbox[node]
            .iter()
            .any(|m| matches!(m, Msg::Granted(n, _) | Msg::Failed(n, _) if *n == name));
        queued || answer
    }
}

// ---------------------------------------------------------------- nodes

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    name: GlockName,
    mode: GlockState,
    nocache: bool,
    granted: bool,
}

/// One node: its glock table and what its driver knows.
#[derive(Debug)]
struct Node {
    table: GlockTable,
    holders: BTreeMap<HolderId, Outstanding>,
    /// Glocks with changes not yet synced (an EX holder was granted).
    dirty: BTreeSet<GlockName>,
    /// Glocks with something cached (a holder was granted).
    cached: BTreeSet<GlockName>,
    /// Time of the last grant delivered, per glock.
    changed_at_ms: BTreeMap<GlockName, u64>,
    /// Glocks with a local reason to drop since their last transition
    /// started (nocache, drop, conversion deadlock): exempt from min hold.
    local_drop: BTreeSet<GlockName>,
    /// Glocks whose remote demote was asked for while nobody held or
    /// waited for them: the kernel demotes those at once (no hold time).
    unused_bast: BTreeSet<GlockName>,
}

impl Node {
    fn new() -> Self {
        Node {
            // Few idle and unused glocks kept, so that runs both keep
            // and forget, and drop unused glocks as a shrinker does.
            table: GlockTable::new(GlockConfig {
                min_hold_ms: MIN_HOLD_MS,
                idle_kept: 2,
                cached_kept: 2,
            }),
            holders: BTreeMap::new(),
            dirty: BTreeSet::new(),
            cached: BTreeSet::new(),
            changed_at_ms: BTreeMap::new(),
            local_drop: BTreeSet::new(),
            unused_bast: BTreeSet::new(),
        }
    }
}

// ---------------------------------------------------------------- operations

#[derive(Clone, Copy, Debug)]
enum Op {
    Acquire {
        node: usize,
        glock: usize,
        mode: GlockState,
        nocache: bool,
        try_lock: bool,
    },
    Release {
        node: usize,
        pick: usize,
    },
    Deliver {
        node: usize,
    },
    Advance {
        ms: u64,
    },
    DropCached {
        node: usize,
        glock: usize,
    },
    DropAll {
        node: usize,
    },
}

fn mode_strategy() -> impl Strategy<Value = GlockState> {
    prop_oneof![5 => Just(GlockState::Sh), 4 => Just(GlockState::Ex), 1 => Just(GlockState::Df)]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let node = 0usize..3;
    prop_oneof![
        4 => (node.clone(), 0..NAMES.len(), mode_strategy(), prop::bool::weighted(0.1), prop::bool::weighted(0.1))
            .prop_map(|(node, glock, mode, nocache, try_lock)| Op::Acquire { node, glock, mode, nocache, try_lock }),
        3 => (node.clone(), 0usize..8).prop_map(|(node, pick)| Op::Release { node, pick }),
        8 => node.clone().prop_map(|node| Op::Deliver { node }),
        2 => (0u64..300).prop_map(|ms| Op::Advance { ms }),
        1 => (node.clone(), 0..NAMES.len()).prop_map(|(node, glock)| Op::DropCached { node, glock }),
        1 => node.prop_map(|node| Op::DropAll { node }),
    ]
}

/// The seeded campaign's generator (the tests' splitmix64, so that it does
/// not depend on a crate's generator staying the same).
struct SplitMix(common::model::Rng64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0.range(0..n)
    }

    fn op(&mut self, nodes: usize) -> Op {
        let node = self.below(nodes as u64) as usize;
        let glock = self.below(NAMES.len() as u64) as usize;
        match self.below(19) {
            0..=3 => {
                let mode = [
                    GlockState::Sh,
                    GlockState::Sh,
                    GlockState::Ex,
                    GlockState::Ex,
                    GlockState::Df,
                ][self.below(5) as usize];
                let (nocache, try_lock) = (self.below(10) == 0, self.below(10) == 0);
                Op::Acquire {
                    node,
                    glock,
                    mode,
                    nocache,
                    try_lock,
                }
            }
            4..=6 => Op::Release {
                node,
                pick: self.below(8) as usize,
            },
            7..=14 => Op::Deliver { node },
            15..=16 => Op::Advance {
                ms: self.below(300),
            },
            17 => Op::DropCached { node, glock },
            _ if self.below(4) == 0 => Op::DropAll { node },
            _ => Op::Deliver { node },
        }
    }
}

// ---------------------------------------------------------------- the simulation

/// How often each interesting thing happened, so that a campaign can show
/// it was not vacuous.
#[derive(Debug, Default)]
struct Stats {
    grants: u64,
    basts: u64,
    syncs: u64,
    invalidates: u64,
    demotes: u64,
    deadlocks: u64,
    try_failures: u64,
    forgets: u64,
    /// Inode demotes that came because a hold time ran out (on a tick).
    held_demotes: u64,
    /// Acquires and releases the driver's fast paths took.
    fast_acquires: u64,
    fast_releases: u64,
}

struct Sim {
    stats: Stats,
    now_ms: u64,
    nodes: Vec<Node>,
    dlm: FakeDlm,
    acquired: u64,
    resolved: u64,
}

impl Sim {
    fn new(nodes: usize) -> Self {
        Sim {
            stats: Stats::default(),
            now_ms: 0,
            nodes: (0..nodes).map(|_| Node::new()).collect(),
            dlm: FakeDlm::new(nodes),
            acquired: 0,
            resolved: 0,
        }
    }

    fn step(&mut self, op: Op) {
        let n = self.nodes.len();
        match op {
            Op::Acquire {
                node,
                glock,
                mode,
                nocache,
                try_lock,
            } => self.acquire(
                node % n,
                NAMES[glock],
                mode,
                HolderFlags { nocache, try_lock },
            ),
            Op::Release { node, pick } => self.release_pick(node % n, pick),
            Op::Deliver { node } => self.deliver(node % n),
            Op::Advance { ms } => self.advance(ms),
            Op::DropCached { node, glock } => {
                let node = node % n;
                self.nodes[node].local_drop.insert(NAMES[glock]);
                let out = self.nodes[node]
                    .table
                    .drop_cached(NAMES[glock], self.now_ms);
                self.apply(node, out);
            }
            Op::DropAll { node } => {
                let node = node % n;
                let names: Vec<_> = self.nodes[node].table.glocks().map(|g| g.name()).collect();
                self.nodes[node].local_drop.extend(names);
                let out = self.nodes[node].table.drop_all(self.now_ms);
                self.apply(node, out);
            }
        }
        self.check();
    }

    fn acquire(&mut self, node: usize, name: GlockName, mode: GlockState, flags: HolderFlags) {
        if self.nodes[node].holders.len() >= MAX_HOLDERS_PER_NODE {
            return;
        }
        // As the driver does: the fast path first, which must do exactly
        // what the full one does when it grants at once.
        let table = &mut self.nodes[node].table;
        let mut full = table.clone();
        let (id, out) = match table.acquire_cached(name, mode, flags) {
            Some(id) => {
                self.stats.fast_acquires += 1;
                let (full_id, full_out) = full.acquire(name, mode, flags, self.now_ms);
                assert_eq!(
                    (full_id, &full_out[..]),
                    (id, &[Action::Grant { holder: id }][..])
                );
                assert_eq!(format!("{full:?}"), format!("{table:?}"), "fast path");
                (id, full_out)
            }
            None => {
                assert_eq!(format!("{full:?}"), format!("{table:?}"), "refused");
                table.acquire(name, mode, flags, self.now_ms)
            }
        };
        self.acquired += 1;
        self.nodes[node].holders.insert(
            id,
            Outstanding {
                name,
                mode,
                nocache: flags.nocache,
                granted: false,
            },
        );
        self.apply(node, out);
    }

    fn release_pick(&mut self, node: usize, pick: usize) {
        let ids: Vec<HolderId> = self.nodes[node].holders.keys().copied().collect();
        if let Some(&id) = ids.get(pick % ids.len().max(1)) {
            self.release(node, id);
        }
    }

    fn release(&mut self, node: usize, id: HolderId) {
        let held = self.nodes[node].holders.remove(&id).unwrap();
        if !held.granted {
            self.resolved += 1; // cancelled
        }
        // As the driver does: the fast path first, which must do exactly
        // what the full one does when it has nothing to carry out.
        let table = &mut self.nodes[node].table;
        let mut full = table.clone();
        let out = if table.release_cached(id) {
            self.stats.fast_releases += 1;
            let full_out = full.release(id, self.now_ms);
            assert_eq!(full_out, vec![], "fast release");
            assert_eq!(format!("{full:?}"), format!("{table:?}"), "fast release");
            full_out
        } else {
            assert_eq!(format!("{full:?}"), format!("{table:?}"), "release refused");
            table.release(id, self.now_ms)
        };
        let queue_empty = self.nodes[node]
            .table
            .glock(&held.name)
            .is_none_or(|g| g.holders().next().is_none());
        if held.nocache && queue_empty {
            // A nocache holder leaving an empty queue drops the glock.
            self.nodes[node].local_drop.insert(held.name);
            let glock = self.nodes[node].table.glock(&held.name);
            // Going to UN now, or after the demote in flight (EX to SH,
            // started under SH holders) with the drop pending.
            let dropping = glock.is_none_or(|g| {
                g.in_flight().is_some_and(|t| t.to == GlockState::Un)
                    || (g.in_flight().is_some() && g.demote_pending())
            });
            assert!(
                !held.granted || dropping,
                "node {node} {}: nocache release kept the glock",
                held.name
            );
        }
        self.apply(node, out);
    }

    fn deliver(&mut self, node: usize) {
        let Some(msg) = self.dlm.inbox[node].pop_front() else {
            return;
        };
        let now = self.now_ms;
        let out = match msg {
            Msg::Granted(name, mode) => {
                self.nodes[node].changed_at_ms.insert(name, now);
                self.nodes[node].unused_bast.remove(&name);
                self.nodes[node].table.dlm_granted(name, mode, now)
            }
            Msg::Failed(name, why) => {
                self.stats.deadlocks += u64::from(why == DlmFailure::Deadlock);
                self.stats.try_failures += u64::from(why == DlmFailure::TryFailed);
                if why == DlmFailure::Deadlock {
                    self.nodes[node].local_drop.insert(name);
                }
                self.nodes[node].table.dlm_failed(name, why, now)
            }
            Msg::Bast(name, mode) => {
                self.stats.basts += 1;
                let n = &mut self.nodes[node];
                let unused = n
                    .table
                    .glock(&name)
                    .is_some_and(|g| g.holders().next().is_none() && !g.demote_pending());
                if unused {
                    n.unused_bast.insert(name);
                }
                n.table.blocking_callback(name, mode, now)
            }
        };
        self.apply(node, out);
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        for node in 0..self.nodes.len() {
            let out = self.nodes[node].table.tick(self.now_ms);
            self.stats.held_demotes += out
                .iter()
                .filter(|a| matches!(a, Action::DlmRequest { .. }))
                .count() as u64;
            self.apply(node, out);
        }
    }

    /// The driver: carries out the actions in order, checking their order.
    fn apply(&mut self, node: usize, out: Vec<Action>) {
        for action in out {
            match action {
                Action::Grant { holder } => self.on_grant(node, holder),
                Action::Failed { holder } => {
                    let held = self.nodes[node]
                        .holders
                        .remove(&holder)
                        .expect("failed holder is outstanding");
                    assert!(!held.granted, "node {node}: granted holder failed");
                    self.resolved += 1;
                }
                Action::Sync { name } => {
                    self.stats.syncs += 1;
                    assert_eq!(
                        self.nodes[node].table.glock(&name).map(|g| g.state()),
                        Some(GlockState::Ex)
                    );
                    self.nodes[node].dirty.remove(&name);
                }
                Action::Invalidate { name, .. } => {
                    self.stats.invalidates += 1;
                    self.nodes[node].cached.remove(&name);
                }
                Action::DlmRequest {
                    name,
                    from,
                    to,
                    try_lock,
                } => self.on_request(node, name, from, to, try_lock),
                Action::Forget { name } => {
                    self.stats.forgets += 1;
                    assert!(
                        self.nodes[node].table.glock(&name).is_none(),
                        "forgotten glock still known"
                    );
                    self.dlm.unlock(node, name);
                    self.nodes[node].changed_at_ms.remove(&name);
                }
            }
        }
    }

    fn on_grant(&mut self, node: usize, holder: HolderId) {
        let n = &mut self.nodes[node];
        let held = n
            .holders
            .get_mut(&holder)
            .expect("granted holder is outstanding");
        assert!(!held.granted, "node {node}: {holder:?} granted twice");
        held.granted = true;
        self.resolved += 1;
        self.stats.grants += 1;
        let name = held.name;
        n.cached.insert(name);
        if held.mode == GlockState::Ex {
            n.dirty.insert(name);
        }
    }

    fn on_request(
        &mut self,
        node: usize,
        name: GlockName,
        from: GlockState,
        to: GlockState,
        try_lock: bool,
    ) {
        let now = self.now_ms;
        let n = &mut self.nodes[node];
        assert_eq!(
            self.dlm.granted_mode(node, name).unwrap_or(DlmMode::Nl),
            from.dlm_mode(),
            "node {node} {name}: from"
        );
        if from == GlockState::Ex && to != GlockState::Ex {
            assert!(
                !n.dirty.contains(&name),
                "node {node} {name}: EX dropped without Sync"
            );
        }
        if from.caches() && matches!(to, GlockState::Un | GlockState::Df) {
            assert!(
                !n.cached.contains(&name),
                "node {node} {name}: {from}->{to} without Invalidate"
            );
        }
        let demote = from.covers(to) && from != to;
        self.stats.demotes += u64::from(demote);
        // A local drop (the model's own, or the table's bound on unused
        // glocks) need not wait for the hold time.
        let dropping = n.table.glock(&name).is_some_and(|g| g.dropping());
        let exempt = n.local_drop.contains(&name) || n.unused_bast.contains(&name) || dropping;
        if demote && name.kind == GlockType::Inode && !exempt {
            let changed = n.changed_at_ms.get(&name).copied().unwrap_or(0);
            assert!(
                now >= changed + MIN_HOLD_MS,
                "node {node} {name}: demote at {now}, changed at {changed}"
            );
        }
        n.local_drop.remove(&name);
        n.unused_bast.remove(&name);
        self.dlm.request(node, name, to.dlm_mode(), try_lock);
    }

    // ------------------------------------------------------------ checks

    /// The state a node may rely on for `name`: mid-demote it has already
    /// given up its cache; mid-promote it has not got the new state yet.
    fn effective_state(&self, node: usize, name: GlockName) -> GlockState {
        let Some(glock) = self.nodes[node].table.glock(&name) else {
            return GlockState::Un;
        };
        match glock.in_flight() {
            None => glock.state(),
            Some(t) if t.from.covers(t.to) => t.to,
            Some(t) if t.to.covers(t.from) => t.from,
            Some(_) => GlockState::Un,
        }
    }

    fn check(&self) {
        for name in NAMES {
            self.check_across_nodes(name);
            for node in 0..self.nodes.len() {
                self.check_node(node, name);
            }
        }
        // The table counts its unused glocks right and keeps no more
        // than its bound.
        for (node, n) in self.nodes.iter().enumerate() {
            let unused = n
                .table
                .glocks()
                .filter(|g| {
                    g.state() != GlockState::Un
                        && g.holders().next().is_none()
                        && g.in_flight().is_none()
                        && !g.demote_pending()
                })
                .count();
            assert_eq!(n.table.unused_len(), unused, "node {node}: unused glocks");
            assert!(unused <= 2, "node {node}: {unused} unused glocks kept");
        }
    }

    fn granted_modes(&self, node: usize, name: GlockName) -> Vec<GlockState> {
        let held = self.nodes[node].holders.values();
        held.filter(|h| h.granted && h.name == name)
            .map(|h| h.mode)
            .collect()
    }

    fn check_across_nodes(&self, name: GlockName) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (sa, sb) = (self.effective_state(a, name), self.effective_state(b, name));
                assert!(
                    sa.compatible(sb),
                    "{name}: node {a} in {sa}, node {b} in {sb}"
                );
                for ma in self.granted_modes(a, name) {
                    for mb in self.granted_modes(b, name) {
                        assert!(
                            ma.compatible(mb),
                            "{name}: node {a} holds {ma}, node {b} holds {mb}"
                        );
                    }
                }
            }
        }
    }

    fn check_node(&self, node: usize, name: GlockName) {
        let granted = self.granted_modes(node, name);
        let Some(glock) = self.nodes[node].table.glock(&name) else {
            assert!(
                granted.is_empty(),
                "node {node} {name}: holders on a forgotten glock"
            );
            assert_eq!(
                self.dlm.granted_mode(node, name),
                None,
                "node {node} {name}: forgotten but locked"
            );
            return;
        };
        for (i, &m) in granted.iter().enumerate() {
            assert!(
                glock.state().covers(m),
                "node {node} {name}: {m} granted in {}",
                glock.state()
            );
            assert!(
                granted[i + 1..].iter().all(|&o| o.compatible(m)),
                "node {node} {name}: local conflict"
            );
        }
        let waiting = glock.holders().any(|h| !h.granted);
        match glock.in_flight() {
            Some(t) => {
                // Only a demote that keeps them covered (EX to SH under SH
                // holders) runs while holders are granted.
                assert!(
                    granted.iter().all(|&m| t.from.covers(m) && t.to.covers(m)),
                    "node {node} {name}: granted during a transition ({} to {}) that does not cover them",
                    t.from,
                    t.to
                );
                assert!(
                    self.dlm.has_request_or_answer(node, name),
                    "node {node} {name}: request lost"
                );
            }
            None => {
                let dlm_mode = self.dlm.granted_mode(node, name).unwrap_or(DlmMode::Nl);
                assert_eq!(
                    dlm_mode,
                    glock.state().dlm_mode(),
                    "node {node} {name}: state vs DLM"
                );
                assert!(
                    !waiting || !granted.is_empty(),
                    "node {node} {name}: lost wake-up"
                );
            }
        }
    }

    /// Releases every granted holder and delivers every message until
    /// every request was answered. Bounded, so that a livelock fails the
    /// test instead of hanging it.
    fn quiesce(&mut self) {
        let mut budget = 100_000u32;
        for _round in 0..1_000 {
            let granted: Vec<(usize, HolderId)> = (0..self.nodes.len())
                .flat_map(|n| {
                    self.nodes[n]
                        .holders
                        .iter()
                        .filter(|(_, h)| h.granted)
                        .map(move |(&id, _)| (n, id))
                })
                .collect();
            for (node, id) in granted {
                self.release(node, id);
                self.check();
            }
            for node in 0..self.nodes.len() {
                while !self.dlm.inbox[node].is_empty() {
                    budget = budget
                        .checked_sub(1)
                        .expect("livelock: messages keep coming");
                    self.deliver(node);
                    self.check();
                }
            }
            if let Some(t) = self
                .nodes
                .iter()
                .filter_map(|n| n.table.next_tick_ms())
                .min()
            {
                self.advance(t.saturating_sub(self.now_ms));
                self.check();
            }
            let idle = self.nodes.iter().all(|n| n.holders.is_empty())
                && self.dlm.inbox.iter().all(|q| q.is_empty());
            if idle {
                assert_eq!(
                    self.acquired, self.resolved,
                    "every acquire granted, refused or cancelled"
                );
                return;
            }
        }
        panic!(
            "no progress: holders {:?}",
            self.nodes.iter().map(|n| &n.holders).collect::<Vec<_>>()
        );
    }
}

fn run(nodes: usize, ops: &[Op]) -> Stats {
    let mut sim = Sim::new(nodes);
    for &op in ops {
        sim.step(op);
    }
    sim.quiesce();
    sim.stats
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise.
    #[test]
    fn glocks_stay_coherent(nodes in 2usize..=3, ops in prop::collection::vec(op_strategy(), 1..300)) {
        run(nodes, &ops);
    }
}

/// Prints the seed if the campaign fails.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "glock_model: failing seed {} (replay: GLOCK_SEED={} cargo test seeded)",
                self.0, self.0
            );
        }
    }
}

#[test]
fn seeded_campaign() {
    let seeds: Vec<u64> = match std::env::var("GLOCK_SEED") {
        Ok(s) => vec![s.parse().expect("GLOCK_SEED is a number")],
        Err(_) => {
            let count = std::env::var("GLOCK_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(300);
            (0..count).collect()
        }
    };
    let seeds_len = seeds.len();
    let mut total = Stats::default();
    for seed in seeds {
        let _guard = SeedGuard(seed);
        let mut rng = SplitMix(common::model::Rng64::new(seed));
        let nodes = 2 + rng.below(2) as usize;
        let ops: Vec<Op> = (0..1000).map(|_| rng.op(nodes)).collect();
        let stats = run(nodes, &ops);
        total.add(&stats);
    }
    eprintln!("glock_model: {total:?}");
    let counts = [
        total.grants,
        total.basts,
        total.syncs,
        total.invalidates,
        total.demotes,
        total.forgets,
        total.fast_acquires,
        total.fast_releases,
    ];
    assert!(
        counts.iter().all(|&c| c > 0),
        "campaign missed an event kind: {total:?}"
    );
    if seeds_len > 100 {
        let rare = [total.deadlocks, total.try_failures, total.held_demotes];
        assert!(
            rare.iter().all(|&c| c > 0),
            "campaign missed a rare event: {total:?}"
        );
    }
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.grants += o.grants;
        self.basts += o.basts;
        self.syncs += o.syncs;
        self.invalidates += o.invalidates;
        self.demotes += o.demotes;
        self.deadlocks += o.deadlocks;
        self.try_failures += o.try_failures;
        self.forgets += o.forgets;
        self.held_demotes += o.held_demotes;
        self.fast_acquires += o.fast_acquires;
        self.fast_releases += o.fast_releases;
    }
}

/// Two nodes that take turns on one inode glock: each hand-off waits out
/// the minimum hold time, and both get the glock.
#[test]
fn ping_pong_respects_min_hold() {
    let name = NAMES[0];
    let mut sim = Sim::new(2);
    for round in 0..6 {
        let node = round % 2;
        sim.acquire(node, name, GlockState::Ex, HolderFlags::default());
        for _ in 0..50 {
            (0..2).for_each(|n| sim.deliver(n));
            sim.advance(10);
            sim.check();
        }
        let id = *sim.nodes[node].holders.keys().next().unwrap();
        assert!(
            sim.nodes[node].holders[&id].granted,
            "round {round}: node {node} got the glock"
        );
        sim.release(node, id);
        sim.check();
    }
    sim.quiesce();
}
