//! One node incarnation's mount: a real `dlm::node::Node`, cman's real
//! membership translator in front of it, a real `GlockTable` on it, and,
//! around them, a sans-IO copy of what `lock_dlm.rs` and
//! `lock_dlm/control.rs` do with threads:
//! - the glock driver: actions become work done in order by one worker
//!   (sync, invalidate, DLM convert, unlock); DLM completions and blocking
//!   callbacks feed the table; during recovery, requests of glocks other
//!   than the journals' wait and their late grants are frozen;
//! - the mount protocol on the control and mounted locks (the first
//!   mounter replays every dirty journal, a later one its own) and the
//!   recovery passes (lost journals flagged in the control LVB, each
//!   replayed by whichever survivor wins its journal glock, try EX);
//! - workers that read and write blocks under inode glocks.

use std::collections::{BTreeMap, HashMap, VecDeque};

use clusterfs::glock::{
    Action as GAction, DlmFailure, DlmMode, GlockConfig, GlockName, GlockState, GlockTable,
    GlockType, HolderFlags, HolderId,
};
use clusterfs::lock_dlm::ControlLvb;
use cman::dlm_membership::Translator;
use dlm::membership::MembershipEvent;
use dlm::node::{Action as DAction, Event, Node};
use dlm::wire::Envelope;
use dlm::{Flags, LockId, Lvb, Mode, NodeId, ResName, Status};

use super::disk::{Disk, Member, Refused};
use super::Rng;

/// Inode glocks the workers use; each covers `BLOCKS_PER_INODE` blocks.
pub const INODES: u64 = 3;
pub const BLOCKS_PER_INODE: u64 = 2;
const WORKERS: usize = 2;
/// How long a mounter or a recovery pass waits before looking again.
const RETRY_US: u64 = 50_000;

/// Resource group glocks, named (as in GFS2) by their header block, the
/// one block each covers. An allocating write takes an inode glock, then
/// one of these, both EX (GFS2's order).
pub const RGRPS: [u64; 2] = [500, 600];

pub fn inode_glock(i: u64) -> GlockName {
    GlockName::inode(100 + i)
}

/// The glocks that cover blocks.
pub fn data_glocks() -> Vec<GlockName> {
    let inodes = (0..INODES).map(inode_glock);
    inodes.chain(RGRPS.map(GlockName::rgrp)).collect()
}

/// The blocks a glock covers.
pub fn blocks_of(name: GlockName) -> Vec<u64> {
    match name.kind {
        GlockType::Inode => {
            let first = (name.number - 100) * BLOCKS_PER_INODE;
            (first..first + BLOCKS_PER_INODE).collect()
        }
        GlockType::Rgrp => vec![name.number],
        _ => Vec::new(),
    }
}

fn glock_of(block: u64) -> GlockName {
    if RGRPS.contains(&block) {
        GlockName::rgrp(block)
    } else {
        inode_glock(block / BLOCKS_PER_INODE)
    }
}

/// Timers a mount asks for.
#[derive(Clone, Copy, Debug)]
pub enum Timer {
    Worker(usize),
    Work,
    GlockTick,
    CtlRetry,
}

/// What a mount asks the world to do.
#[derive(Debug)]
pub enum Effect {
    Send { to: NodeId, env: Envelope },
    Timer { at_us: u64, timer: Timer },
}

/// What the world lends a mount for one call.
pub struct Ctx<'a> {
    pub now_us: u64,
    pub disk: &'a mut Disk,
    pub rng: &'a mut Rng,
    /// Workers start new operations.
    pub traffic: bool,
    pub trace: bool,
    pub stats: &'a mut Counters,
    /// cmand's fence victims (cluster-wide): failed nodes not fenced yet.
    pub victims: usize,
}

impl Ctx<'_> {
    fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }
}

/// Counters a mount adds to.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub reads: u64,
    pub writes: u64,
    pub syncs: u64,
    pub basts: u64,
    pub frozen: u64,
    pub deferred: u64,
    pub first_mounts: u64,
    pub joins: u64,
    pub recovered: u64,
    pub recovered_entries: u64,
    pub try_refused: u64,
    pub allocs: u64,
}

enum Work {
    Sync(GlockName),
    Invalidate(GlockName),
    Request {
        name: GlockName,
        to: GlockState,
        try_lock: bool,
    },
    Forget(GlockName),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Glock(GlockName),
    Control,
    Mounted,
}

#[derive(Clone, Copy, Debug)]
enum Owner {
    Worker(usize),
    Ctl,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Read(u64),
    Write(u64),
    /// Writes a block of an inode and a resource group's header.
    Alloc(u64, u64),
}

#[derive(Clone, Copy, Debug)]
enum Worker {
    Idle,
    /// Waiting for `waiting`, holding `first` (an allocation's inode).
    Waiting {
        first: Option<HolderId>,
        waiting: HolderId,
        op: Op,
    },
    Holding(HolderId, Option<HolderId>),
}

/// Where the mount and recovery protocol stands (one flow at a time, as
/// the control lock is used by one at a time).
#[derive(Clone, Debug, PartialEq)]
enum Flow {
    WaitSlot,
    /// `cluster.rs`'s `wait_fenced`: a node that failed before we joined
    /// the lockspace was never a member with us, so the DLM did not wait
    /// for its fencing; the mount does, before touching any journal.
    WaitFenced,
    Creating {
        granted: u8,
    },
    MountControlEx,
    MountTryEx {
        lvb: ControlLvb,
    },
    FirstJournals {
        next: u32,
        waiting: HolderId,
    },
    FirstMountedPr,
    FirstControlNl,
    JoinTryPr {
        lvb: ControlLvb,
    },
    JoinControlNl {
        joined: bool,
    },
    JoinMountedNl,
    MountRetry,
    OwnJournal {
        waiting: HolderId,
    },
    Mounted,
    PassControlEx {
        lost: BTreeMap<u32, u64>,
        /// The last `recover_done`'s generation when the pass took `lost`.
        gen: u64,
    },
    PassControlNl {
        lvb: ControlLvb,
    },
    PassJournal {
        flagged: Vec<u32>,
        i: usize,
        holder: HolderId,
    },
    PassClearEx {
        flagged: Vec<u32>,
        i: usize,
        holder: HolderId,
    },
    PassClearNl {
        flagged: Vec<u32>,
        i: usize,
        holder: HolderId,
    },
    PassRetry,
}

enum CtlEv {
    Control(Status, Option<Lvb>),
    Mounted(Status),
    Granted(HolderId),
    Failed(HolderId),
    Timer,
}

/// `control.rs`'s `CtlState`.
#[derive(Default)]
struct CtlState {
    slot: u32,
    lost: BTreeMap<u32, u64>,
    lost_now: Vec<u32>,
    recovering: bool,
    again: bool,
    awaiting_done: bool,
    /// The generation of the last `recover_done`.
    done_gen: u64,
}

/// When a later mounter may join (see the module docs of
/// `cluster_sim.rs`, "Findings").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRule {
    /// `control.rs` today: no journal flagged in the control LVB; a
    /// mounter that waits keeps the mounted lock in PR.
    ControlRs,
    /// The kernel's `control_mount`: also, the LVB's generation is at
    /// least this node's lockspace generation, so the survivors recorded
    /// the journals lost in it (they write the generation in their
    /// passes); a mounter that waits lets the mounted lock go to NL.
    Kernel,
}

pub struct Mount {
    pub me: Member,
    join_rule: JoinRule,
    pub dlm: Node,
    tr: Translator,
    pub glocks: GlockTable,
    /// The DLM lock behind each glock, and whether it was ever granted.
    locks: HashMap<GlockName, (LockId, bool)>,
    targets: HashMap<LockId, Target>,
    work: VecDeque<Work>,
    working: bool,
    blocked: bool,
    deferred: Vec<Work>,
    frozen: Vec<(GlockName, LockId, Status)>,
    owners: HashMap<HolderId, Owner>,
    tick_at_ms: Option<u64>,
    flow: Flow,
    st: CtlState,
    control: Option<LockId>,
    mounted_lock: Option<LockId>,
    /// Journal glocks the first mounter holds while it replays.
    first_held: Vec<HolderId>,
    /// This node's own journal glock, held for as long as it is mounted.
    own_journal: Option<HolderId>,
    /// Unmounting: no new work; once every glock is dropped, it leaves.
    unmounting: bool,
    /// `umount` was asked for: it starts once the node is settled.
    pub unmount_wanted: bool,
    pub jid: Option<u32>,
    pub mounted: bool,
    workers: Vec<Worker>,
    /// Cached blocks: value, dirty.
    pub cache: BTreeMap<u64, (u64, bool)>,
    /// Set when the disk refused a write: the mount stops (withdraw).
    pub withdrawn: Option<String>,
    pub out: Vec<Effect>,
}

fn dlm_mode(m: DlmMode) -> Mode {
    match m {
        DlmMode::Nl => Mode::Nl,
        DlmMode::Cw => Mode::Cw,
        DlmMode::Pr => Mode::Pr,
        DlmMode::Ex => Mode::Ex,
    }
}

/// As `lock_dlm.rs`'s `glock_mode`.
fn glock_mode(m: Mode) -> DlmMode {
    match m {
        Mode::Nl => DlmMode::Nl,
        Mode::Cw => DlmMode::Cw,
        Mode::Cr | Mode::Pr => DlmMode::Pr,
        Mode::Pw | Mode::Ex => DlmMode::Ex,
    }
}

fn res(name: GlockName) -> ResName {
    ResName::new(&name.dlm_name()).expect("24 bytes")
}

impl Mount {
    pub fn new(me: Member, min_hold_ms: u64, join_rule: JoinRule) -> Mount {
        Mount {
            me,
            join_rule,
            dlm: Node::new(NodeId(me.0), 1, 1),
            tr: Translator::default(),
            // Few unused glocks kept cached, so that runs also drop them
            // as the shrinker does.
            glocks: GlockTable::new(GlockConfig {
                min_hold_ms,
                cached_kept: 3,
                ..GlockConfig::default()
            }),
            locks: HashMap::new(),
            targets: HashMap::new(),
            work: VecDeque::new(),
            working: false,
            blocked: false,
            deferred: Vec::new(),
            frozen: Vec::new(),
            owners: HashMap::new(),
            tick_at_ms: None,
            flow: Flow::WaitSlot,
            st: CtlState::default(),
            control: None,
            mounted_lock: None,
            first_held: Vec::new(),
            own_journal: None,
            unmounting: false,
            unmount_wanted: false,
            jid: None,
            mounted: false,
            workers: vec![Worker::Idle; WORKERS],
            cache: BTreeMap::new(),
            withdrawn: None,
            out: Vec::new(),
        }
    }

    fn log(&self, cx: &Ctx, s: impl FnOnce() -> String) {
        if cx.trace {
            eprintln!("[{:>9}] n{}/{} {}", cx.now_us, self.me.0, self.me.1, s());
        }
    }

    fn live(&self) -> bool {
        self.withdrawn.is_none()
    }

    fn timer(&mut self, at_us: u64, timer: Timer) {
        self.out.push(Effect::Timer { at_us, timer });
    }

    fn withdraw(&mut self, cx: &Ctx, why: &str) {
        self.log(cx, || format!("withdraws: {why}"));
        self.withdrawn.get_or_insert_with(|| why.to_string());
    }

    /// True when the recovery protocol is at rest and nothing waits.
    pub fn settled(&self) -> bool {
        self.mounted
            && self.flow == Flow::Mounted
            && !self.blocked
            && !self.st.recovering
            && self.work.is_empty()
            && !self.working
            && self.deferred.is_empty()
            && self.frozen.is_empty()
            && self.workers.iter().all(|w| matches!(w, Worker::Idle))
    }

    /// A clean unmount starts (only when settled): the own journal glock
    /// is released and every glock dropped, syncing what is dirty.
    pub fn unmount(&mut self, cx: &mut Ctx) {
        assert!(self.settled(), "unmount while busy");
        self.log(cx, || "unmounts".into());
        self.unmounting = true;
        if let Some(h) = self.own_journal.take() {
            self.release(h, cx);
        }
        self.drop_glocks(cx);
    }

    fn drop_glocks(&mut self, cx: &mut Ctx) {
        let acts = self.glocks.drop_all(cx.now_ms());
        self.dispatch(acts, cx);
    }

    /// An unmounting node whose glocks are all gone, with no recovery
    /// running, leaves the lockspace (and its process ends). Glocks that a
    /// recovery pass took meanwhile are dropped again.
    pub fn ready_to_leave(&mut self, cx: &mut Ctx) -> bool {
        if self.unmount_wanted && !self.unmounting && self.settled() {
            self.unmount(cx);
        }
        let idle = self.unmounting
            && self.flow == Flow::Mounted
            && !self.st.recovering
            && !self.blocked
            && self.work.is_empty()
            && !self.working
            && self.deferred.is_empty()
            && self.frozen.is_empty();
        if idle
            && !self.glocks.is_empty()
            && self
                .glocks
                .glocks()
                .all(|g| g.holders().next().is_none() && g.in_flight().is_none())
        {
            self.drop_glocks(cx);
        }
        idle && self.glocks.is_empty() && self.work.is_empty()
    }

    /// One line of state, for a failure report.
    pub fn dump(&self) -> String {
        format!(
            "n{}/{} jid={:?} mounted={} flow={:?} blocked={} recovering={} again={} awaiting_done={} lost={:?} work={} deferred={} frozen={} workers={:?} dlm={:?}",
            self.me.0,
            self.me.1,
            self.jid,
            self.mounted,
            self.flow,
            self.blocked,
            self.st.recovering,
            self.st.again,
            self.st.awaiting_done,
            self.st.lost,
            self.work.len(),
            self.deferred.len(),
            self.frozen.len(),
            self.workers,
            self.dlm.phase(),
        )
    }

    // ------------------------------------------------------------ membership

    /// A confchg of the lockspace's cman group (view `view_seq`).
    pub fn confchg(&mut self, view_seq: u64, members: &[u32], failed: &[u32], cx: &mut Ctx) {
        let members: Vec<_> = members
            .iter()
            .map(|n| (cman::ids::NodeId(*n), cman::ids::ClientId(1)))
            .collect();
        let failed: Vec<_> = failed.iter().map(|n| cman::ids::NodeId(*n)).collect();
        let evs = self.tr.confchg(view_seq, 0, &members, &failed);
        self.membership(evs, cx);
    }

    /// cmand reports `node` fenced.
    pub fn node_fenced(&mut self, node: u32, cx: &mut Ctx) {
        let evs = self.tr.fenced(cman::ids::NodeId(node));
        self.membership(evs, cx);
    }

    fn membership(&mut self, evs: Vec<MembershipEvent>, cx: &mut Ctx) {
        for ev in evs {
            self.log(cx, || format!("membership {ev:?}"));
            let ev = match ev {
                MembershipEvent::View { gen, members } => Event::Members { gen, members },
                MembershipEvent::Fenced(n) => Event::Fenced(n),
            };
            let mut out = Vec::new();
            self.dlm.handle(ev, &mut out);
            self.apply_dlm(out, cx);
        }
    }

    pub fn receive(&mut self, from: NodeId, env: Envelope, cx: &mut Ctx) {
        if !self.live() {
            return;
        }
        let mut out = Vec::new();
        self.dlm.receive(from, env, &mut out);
        self.apply_dlm(out, cx);
    }

    fn apply_dlm(&mut self, actions: Vec<DAction>, cx: &mut Ctx) {
        for a in actions {
            if !self.live() {
                return;
            }
            match a {
                DAction::Send { to, env } => self.out.push(Effect::Send { to, env }),
                DAction::Ast {
                    id, status, lvb, ..
                } => self.on_ast(id, status, lvb, cx),
                DAction::Bast { id, mode } => {
                    if let Some(Target::Glock(name)) = self.targets.get(&id).copied() {
                        cx.stats.basts += 1;
                        let now = cx.now_ms();
                        let acts = self.glocks.blocking_callback(name, glock_mode(mode), now);
                        self.dispatch(acts, cx);
                    }
                }
                DAction::RecoverPrep => self.on_prep(cx),
                DAction::RecoverSlot { node, slot } => {
                    self.log(cx, || format!("recover_slot {node} slot {slot}"));
                    self.st.lost_now.push(slot - 1);
                }
                DAction::RecoverDone { gen, .. } => {
                    let slot = self.dlm.slot();
                    self.on_done(gen, slot, cx);
                }
                DAction::PlockDone { .. } => unreachable!("no plocks here"),
            }
        }
    }

    fn on_ast(&mut self, id: LockId, status: Status, lvb: Option<Lvb>, cx: &mut Ctx) {
        let Some(target) = self.targets.get(&id).copied() else {
            panic!("n{}: ast for unknown lock {id}: {status:?}", self.me.0);
        };
        self.log(cx, || format!("ast {target:?} {id} {status:?}"));
        if status == Status::Unlocked {
            self.targets.remove(&id);
            return;
        }
        match target {
            Target::Glock(name) => self.glock_completed(name, id, status, cx),
            Target::Control => self.ctl(CtlEv::Control(status, lvb), cx),
            Target::Mounted => self.ctl(CtlEv::Mounted(status), cx),
        }
    }

    // ------------------------------------------------------------ glock driver

    /// `lock_dlm.rs`'s `dispatch`: grants and failures go to their owner
    /// at once, the rest is queued for the worker.
    fn dispatch(&mut self, actions: Vec<GAction>, cx: &mut Ctx) {
        for a in actions {
            if !self.live() {
                return;
            }
            match a {
                GAction::Grant { holder } => self.on_grant(holder, cx),
                GAction::Failed { holder } => self.on_failed(holder, cx),
                GAction::Sync { name } => self.work.push_back(Work::Sync(name)),
                GAction::Invalidate { name, .. } => self.work.push_back(Work::Invalidate(name)),
                GAction::DlmRequest {
                    name, to, try_lock, ..
                } => self.work.push_back(Work::Request { name, to, try_lock }),
                GAction::Forget { name } => self.work.push_back(Work::Forget(name)),
            }
        }
        self.kick_work(cx);
        self.plan_tick(cx);
    }

    fn kick_work(&mut self, cx: &mut Ctx) {
        if !self.working && !self.work.is_empty() {
            self.working = true;
            let at = cx.now_us + cx.rng.below(300);
            self.timer(at, Timer::Work);
        }
    }

    fn plan_tick(&mut self, _cx: &mut Ctx) {
        if let Some(t) = self.glocks.next_tick_ms() {
            if self.tick_at_ms.is_none_or(|s| t < s) {
                self.tick_at_ms = Some(t);
                self.timer(t * 1000, Timer::GlockTick);
            }
        }
    }

    fn passes_recovery(name: GlockName) -> bool {
        name.kind == GlockType::Journal
    }

    fn run_work(&mut self, cx: &mut Ctx) {
        self.working = false;
        let Some(job) = self.work.pop_front() else {
            return;
        };
        match job {
            Work::Request { name, .. } if self.blocked && !Self::passes_recovery(name) => {
                cx.stats.deferred += 1;
                self.deferred.push(job);
            }
            Work::Sync(name) => {
                if let Err(Refused) = self.sync(name, cx) {
                    self.withdraw(cx, "a write in place was refused (fenced)");
                }
            }
            Work::Invalidate(name) => {
                for b in blocks_of(name) {
                    if let Some((_, dirty)) = self.cache.remove(&b) {
                        assert!(
                            !dirty,
                            "n{}: {name} invalidated with block {b} dirty",
                            self.me.0
                        );
                    }
                }
            }
            Work::Request { name, to, try_lock } => self.request(name, to, try_lock, cx),
            Work::Forget(name) => {
                if let Some((id, _)) = self.locks.remove(&name) {
                    let mut out = Vec::new();
                    self.dlm
                        .unlock(id, Flags::empty(), None, &mut out)
                        .unwrap_or_else(|e| panic!("unlock of {name}: {e}"));
                    self.apply_dlm(out, cx);
                }
            }
        }
        self.kick_work(cx);
    }

    /// go_sync: dirty blocks of `name` written in place, then their
    /// journal entries revoked.
    fn sync(&mut self, name: GlockName, cx: &mut Ctx) -> Result<(), Refused> {
        let dirty: Vec<(u64, u64)> = blocks_of(name)
            .into_iter()
            .filter_map(|b| match self.cache.get(&b) {
                Some(&(v, true)) => Some((b, v)),
                _ => None,
            })
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        cx.stats.syncs += 1;
        for &(b, v) in &dirty {
            cx.disk.write_in_place(self.me, b, v)?;
        }
        let blocks: Vec<u64> = dirty.iter().map(|(b, _)| *b).collect();
        let jid = self.jid.expect("a node that wrote has a journal");
        cx.disk.revoke(self.me, jid, &blocks)?;
        for b in blocks {
            self.cache.get_mut(&b).expect("dirty").1 = false;
        }
        Ok(())
    }

    fn request(&mut self, name: GlockName, to: GlockState, try_lock: bool, cx: &mut Ctx) {
        let mode = dlm_mode(to.dlm_mode());
        let flags = if try_lock {
            Flags::NOQUEUE
        } else {
            Flags::empty()
        };
        let mut out = Vec::new();
        match self.locks.get(&name) {
            Some(&(id, _)) => self
                .dlm
                .convert(id, mode, flags, None, &mut out)
                .unwrap_or_else(|e| panic!("n{}: convert of {name}: {e}", self.me.0)),
            None => {
                let id = self
                    .dlm
                    .lock(res(name), mode, flags, None, &mut out)
                    .unwrap_or_else(|e| panic!("n{}: lock of {name}: {e}", self.me.0));
                self.locks.insert(name, (id, false));
                self.targets.insert(id, Target::Glock(name));
            }
        }
        self.apply_dlm(out, cx);
    }

    fn glock_completed(&mut self, name: GlockName, id: LockId, status: Status, cx: &mut Ctx) {
        let above_nl = matches!(status, Status::Granted(m) if m != Mode::Nl);
        if self.blocked && !Self::passes_recovery(name) && above_nl {
            cx.stats.frozen += 1;
            self.frozen.push((name, id, status));
            return;
        }
        self.complete(name, id, status, cx);
    }

    fn complete(&mut self, name: GlockName, id: LockId, status: Status, cx: &mut Ctx) {
        match (status, self.locks.get(&name)) {
            (Status::Granted(_), _) => {
                self.locks.insert(name, (id, true));
            }
            (_, Some(&(lid, false))) if lid == id => {
                self.locks.remove(&name);
                self.targets.remove(&id);
            }
            _ => {}
        }
        let now = cx.now_ms();
        let acts = match status {
            Status::Granted(m) => self.glocks.dlm_granted(name, glock_mode(m), now),
            Status::Again => {
                cx.stats.try_refused += 1;
                self.glocks.dlm_failed(name, DlmFailure::TryFailed, now)
            }
            Status::Deadlock => self.glocks.dlm_failed(name, DlmFailure::Deadlock, now),
            Status::Canceled => self.glocks.dlm_failed(name, DlmFailure::Error, now),
            Status::Unlocked => return,
        };
        self.dispatch(acts, cx);
    }

    fn block_requests(&mut self) {
        self.blocked = true;
    }

    fn unblock_requests(&mut self, cx: &mut Ctx) {
        self.log(cx, || "requests unblocked".into());
        self.blocked = false;
        for (name, id, status) in std::mem::take(&mut self.frozen) {
            self.complete(name, id, status, cx);
        }
        let deferred = std::mem::take(&mut self.deferred);
        for w in deferred.into_iter().rev() {
            self.work.push_front(w);
        }
        self.kick_work(cx);
    }

    fn acquire(
        &mut self,
        owner: Owner,
        name: GlockName,
        mode: GlockState,
        flags: HolderFlags,
        cx: &mut Ctx,
    ) -> (HolderId, Vec<GAction>) {
        // As the driver does: a glock cached in a mode that covers it is
        // granted without the full path.
        let (holder, acts) = match self.glocks.acquire_cached(name, mode, flags) {
            Some(holder) => (holder, vec![GAction::Grant { holder }]),
            None => self.glocks.acquire(name, mode, flags, cx.now_ms()),
        };
        self.owners.insert(holder, owner);
        (holder, acts)
    }

    fn release(&mut self, holder: HolderId, cx: &mut Ctx) {
        self.owners.remove(&holder);
        // As the driver does: a release that leaves the glock cached with
        // nothing to do skips the full path.
        if self.glocks.release_cached(holder) {
            return;
        }
        let acts = self.glocks.release(holder, cx.now_ms());
        self.dispatch(acts, cx);
    }

    fn on_grant(&mut self, holder: HolderId, cx: &mut Ctx) {
        match self.owners.get(&holder).copied() {
            Some(Owner::Worker(i)) => self.worker_granted(i, holder, cx),
            Some(Owner::Ctl) => self.ctl(CtlEv::Granted(holder), cx),
            None => panic!("grant of unknown holder {holder:?}"),
        }
    }

    fn on_failed(&mut self, holder: HolderId, cx: &mut Ctx) {
        match self.owners.remove(&holder) {
            Some(Owner::Worker(i)) => {
                let worker = std::mem::replace(&mut self.workers[i], Worker::Idle);
                if let Worker::Waiting { first: Some(h), .. } = worker {
                    self.release(h, cx);
                }
                let at = cx.now_us + cx.rng.below(5_000);
                self.timer(at, Timer::Worker(i));
            }
            Some(Owner::Ctl) => self.ctl(CtlEv::Failed(holder), cx),
            None => panic!("failure of unknown holder {holder:?}"),
        }
    }

    // ------------------------------------------------------------ timers

    pub fn on_timer(&mut self, timer: Timer, cx: &mut Ctx) {
        if !self.live() {
            return;
        }
        match timer {
            Timer::Work => self.run_work(cx),
            Timer::GlockTick => {
                self.tick_at_ms = None;
                let now = cx.now_ms();
                let acts = self.glocks.tick(now);
                self.dispatch(acts, cx);
                self.plan_tick(cx);
            }
            Timer::CtlRetry => self.ctl(CtlEv::Timer, cx),
            Timer::Worker(i) => self.worker_step(i, cx),
        }
    }

    // ------------------------------------------------------------ workers

    fn worker_step(&mut self, i: usize, cx: &mut Ctx) {
        match self.workers[i] {
            Worker::Idle if self.mounted && cx.traffic && !self.unmount_wanted => {
                let inode = cx.rng.below(INODES);
                let name = inode_glock(inode);
                let block = blocks_of(name)[cx.rng.below(BLOCKS_PER_INODE) as usize];
                let (op, mode) = match cx.rng.below(10) {
                    0..=3 => (Op::Write(block), GlockState::Ex),
                    4 | 5 => {
                        let rgrp = RGRPS[cx.rng.below(RGRPS.len() as u64) as usize];
                        (Op::Alloc(block, rgrp), GlockState::Ex)
                    }
                    _ => (Op::Read(inode), GlockState::Sh),
                };
                let flags = HolderFlags {
                    nocache: cx.rng.chance(10),
                    try_lock: matches!(op, Op::Read(_)) && cx.rng.chance(10),
                };
                let (holder, acts) = self.acquire(Owner::Worker(i), name, mode, flags, cx);
                self.log(cx, || {
                    format!("w{i} acquires {name} {mode:?} {flags:?} for {op:?}")
                });
                self.workers[i] = Worker::Waiting {
                    first: None,
                    waiting: holder,
                    op,
                };
                self.dispatch(acts, cx);
            }
            Worker::Holding(holder, second) => {
                self.workers[i] = Worker::Idle;
                self.log(cx, || format!("w{i} releases"));
                if let Some(h) = second {
                    self.release(h, cx);
                }
                self.release(holder, cx);
                let at = cx.now_us + cx.rng.below(20_000);
                self.timer(at, Timer::Worker(i));
            }
            _ => {}
        }
    }

    fn worker_granted(&mut self, i: usize, holder: HolderId, cx: &mut Ctx) {
        let Worker::Waiting { first, waiting, op } = self.workers[i] else {
            panic!("worker {i} granted while not waiting");
        };
        assert_eq!(waiting, holder);
        match (op, first) {
            (Op::Read(inode), _) => self.read(inode, cx),
            (Op::Write(block), _) => self.write(block, cx),
            (Op::Alloc(_, rgrp), None) => {
                let name = GlockName::rgrp(rgrp);
                let flags = HolderFlags::default();
                let (second, acts) =
                    self.acquire(Owner::Worker(i), name, GlockState::Ex, flags, cx);
                self.workers[i] = Worker::Waiting {
                    first: Some(holder),
                    waiting: second,
                    op,
                };
                self.dispatch(acts, cx);
                return;
            }
            (Op::Alloc(block, rgrp), Some(_)) => {
                cx.stats.allocs += 1;
                self.write(block, cx);
                if self.live() {
                    self.write(rgrp, cx);
                }
            }
        }
        if !self.live() {
            return;
        }
        self.workers[i] = match first {
            Some(inode) => Worker::Holding(inode, Some(holder)),
            None => Worker::Holding(holder, None),
        };
        let hold = if cx.rng.chance(10) {
            20_000 + cx.rng.below(80_000)
        } else {
            cx.rng.below(3_000)
        };
        self.timer(cx.now_us + hold, Timer::Worker(i));
    }

    fn read(&mut self, inode: u64, cx: &mut Ctx) {
        cx.stats.reads += 1;
        for b in blocks_of(inode_glock(inode)) {
            let v = match self.cache.get(&b) {
                Some(&(v, _)) => v,
                None => {
                    let v = cx.disk.read(b);
                    self.cache.insert(b, (v, false));
                    v
                }
            };
            self.log(cx, || format!("reads block {b} = {v}"));
            if !cx.disk.refuses(self.me) {
                let acked = cx.disk.acked(b);
                assert_eq!(v, acked, "n{}/{} read block {b}", self.me.0, self.me.1);
            }
        }
    }

    fn write(&mut self, block: u64, cx: &mut Ctx) {
        let name = glock_of(block);
        let g = self.glocks.glock(&name).expect("held");
        assert_eq!(g.state(), GlockState::Ex, "write under {name} not in EX");
        let jid = self.jid.expect("mounted");
        match cx.disk.journaled_write(self.me, jid, block) {
            Ok(v) => {
                cx.stats.writes += 1;
                self.log(cx, || format!("writes block {block} = {v} (acknowledged)"));
                self.cache.insert(block, (v, true));
            }
            Err(Refused) => self.withdraw(cx, "a journal write was refused (fenced)"),
        }
    }

    // ------------------------------------------------------------ control

    fn lock_ctl(&mut self, target: Target, cx: &mut Ctx) {
        let number = match target {
            Target::Control => clusterfs::glock::nondisk::CONTROL,
            _ => clusterfs::glock::nondisk::MOUNTED,
        };
        let mut out = Vec::new();
        let id = self
            .dlm
            .lock(
                res(GlockName::nondisk(number)),
                Mode::Nl,
                Flags::empty(),
                None,
                &mut out,
            )
            .expect("lock");
        self.targets.insert(id, target);
        match target {
            Target::Control => self.control = Some(id),
            _ => self.mounted_lock = Some(id),
        }
        self.apply_dlm(out, cx);
    }

    fn convert_ctl(
        &mut self,
        target: Target,
        mode: Mode,
        flags: Flags,
        lvb: Option<ControlLvb>,
        cx: &mut Ctx,
    ) {
        let id = match target {
            Target::Control => self.control,
            _ => self.mounted_lock,
        }
        .expect("created");
        let mut out = Vec::new();
        self.dlm
            .convert(id, mode, flags, lvb.map(|l| l.encode()), &mut out)
            .unwrap_or_else(|e| panic!("n{}: convert {target:?}: {e}", self.me.0));
        self.apply_dlm(out, cx);
    }

    fn control_ex(&mut self, cx: &mut Ctx) {
        self.convert_ctl(Target::Control, Mode::Ex, Flags::VALBLK, None, cx);
    }

    fn control_release(&mut self, lvb: Option<ControlLvb>, cx: &mut Ctx) {
        let flags = if lvb.is_some() {
            Flags::VALBLK
        } else {
            Flags::empty()
        };
        self.convert_ctl(Target::Control, Mode::Nl, flags, lvb, cx);
    }

    fn set_flow(&mut self, flow: Flow, cx: &Ctx) {
        self.log(cx, || format!("flow {flow:?}"));
        self.flow = flow;
    }

    fn on_prep(&mut self, cx: &mut Ctx) {
        self.log(cx, || "recover_prep".into());
        self.st.awaiting_done = true;
        if self.mounted {
            self.block_requests();
        }
    }

    fn on_done(&mut self, gen: u64, slot: u32, cx: &mut Ctx) {
        self.log(cx, || format!("recover_done gen {gen:#x} slot {slot}"));
        assert!(slot > 0, "recover_done without a slot");
        self.st.slot = slot;
        self.st.awaiting_done = false;
        self.st.done_gen = gen;
        for jid in std::mem::take(&mut self.st.lost_now) {
            self.st.lost.insert(jid, gen);
        }
        if self.flow == Flow::WaitSlot {
            let jid = slot - 1;
            assert!(jid < cx.disk.journals(), "slot {slot} beyond the journals");
            self.jid = Some(jid);
            self.set_flow(Flow::WaitFenced, cx);
            self.ctl(CtlEv::Timer, cx);
        }
        self.start_recovery(cx);
    }

    fn start_recovery(&mut self, cx: &mut Ctx) {
        if !self.mounted {
            return;
        }
        if self.st.recovering {
            self.st.again = true;
            return;
        }
        self.st.recovering = true;
        self.begin_pass(cx);
    }

    fn begin_pass(&mut self, cx: &mut Ctx) {
        let lost = std::mem::take(&mut self.st.lost);
        let gen = self.st.done_gen;
        self.set_flow(Flow::PassControlEx { lost, gen }, cx);
        self.control_ex(cx);
    }

    fn after_mount(&mut self, cx: &mut Ctx) {
        self.mounted = true;
        self.set_flow(Flow::Mounted, cx);
        if self.st.awaiting_done || !self.st.lost.is_empty() {
            self.block_requests();
        }
        for i in 0..self.workers.len() {
            let at = cx.now_us + cx.rng.below(10_000);
            self.timer(at, Timer::Worker(i));
        }
        self.start_recovery(cx);
    }

    /// Replays journal `jid`; false if the disk refused (withdrawn).
    fn replay(&mut self, jid: u32, cx: &mut Ctx) -> bool {
        match cx.disk.replay(self.me, jid) {
            Ok(n) => {
                if n > 0 {
                    cx.stats.recovered += 1;
                    cx.stats.recovered_entries += n as u64;
                }
                self.log(cx, || format!("replays journal {jid}: {n} entries"));
                true
            }
            Err(Refused) => {
                self.withdraw(cx, "journal replay refused (fenced)");
                false
            }
        }
    }

    fn ctl(&mut self, ev: CtlEv, cx: &mut Ctx) {
        let flow = self.flow.clone();
        match (flow, ev) {
            (Flow::WaitFenced, CtlEv::Timer) => {
                if cx.victims == 0 {
                    self.set_flow(Flow::Creating { granted: 0 }, cx);
                    self.lock_ctl(Target::Control, cx);
                    self.lock_ctl(Target::Mounted, cx);
                } else {
                    self.timer(cx.now_us + 100_000, Timer::CtlRetry);
                }
            }
            (Flow::Creating { granted }, CtlEv::Control(Status::Granted(_), _))
            | (Flow::Creating { granted }, CtlEv::Mounted(Status::Granted(_))) => {
                if granted == 1 {
                    self.set_flow(Flow::MountControlEx, cx);
                    self.control_ex(cx);
                } else {
                    self.set_flow(Flow::Creating { granted: 1 }, cx);
                }
            }
            (Flow::MountControlEx, CtlEv::Control(Status::Granted(_), lvb)) => {
                let lvb = lvb.map(|l| ControlLvb::decode(&l)).unwrap_or_default();
                self.set_flow(Flow::MountTryEx { lvb }, cx);
                self.convert_ctl(Target::Mounted, Mode::Ex, Flags::NOQUEUE, None, cx);
            }
            (Flow::MountTryEx { .. }, CtlEv::Mounted(Status::Granted(_))) => {
                self.first_held.clear();
                self.first_journal(0, cx);
            }
            (Flow::MountTryEx { lvb }, CtlEv::Mounted(Status::Again)) => {
                self.set_flow(Flow::JoinTryPr { lvb }, cx);
                self.convert_ctl(Target::Mounted, Mode::Pr, Flags::NOQUEUE, None, cx);
            }
            (Flow::FirstJournals { next, waiting }, CtlEv::Granted(h)) if h == waiting => {
                if Some(next) == self.jid {
                    self.own_journal = Some(h);
                }
                self.first_held.push(h);
                self.first_journal(next + 1, cx);
            }
            (Flow::FirstMountedPr, CtlEv::Mounted(Status::Granted(_))) => {
                let clean = ControlLvb {
                    generation: self.dlm.generation(),
                    bitmap: [0; 24],
                };
                self.set_flow(Flow::FirstControlNl, cx);
                self.control_release(Some(clean), cx);
            }
            (Flow::FirstControlNl, CtlEv::Control(Status::Granted(_), _)) => {
                cx.stats.first_mounts += 1;
                self.after_mount(cx);
            }
            (Flow::JoinTryPr { lvb }, CtlEv::Mounted(status)) => {
                let recorded = match self.join_rule {
                    JoinRule::ControlRs => true,
                    JoinRule::Kernel => lvb.generation >= self.dlm.generation(),
                };
                let joined = match status {
                    Status::Granted(_) => lvb.jids().is_empty() && recorded,
                    Status::Again => false,
                    s => panic!("mounted lock: {s:?}"),
                };
                self.set_flow(Flow::JoinControlNl { joined }, cx);
                self.control_release(None, cx);
            }
            (Flow::JoinControlNl { joined }, CtlEv::Control(Status::Granted(_), _)) => {
                if joined {
                    let jid = self.jid.expect("slot");
                    let name = GlockName::journal(jid);
                    let (h, acts) =
                        self.acquire(Owner::Ctl, name, GlockState::Ex, HolderFlags::default(), cx);
                    self.set_flow(Flow::OwnJournal { waiting: h }, cx);
                    self.dispatch(acts, cx);
                } else if self.join_rule == JoinRule::Kernel {
                    // As the kernel's control_mount restarts: holding
                    // mounted PR while waiting would keep every other
                    // waiter from becoming the first mounter once no
                    // mounted node is left to recover the flagged journals.
                    self.set_flow(Flow::JoinMountedNl, cx);
                    self.convert_ctl(Target::Mounted, Mode::Nl, Flags::empty(), None, cx);
                } else {
                    self.set_flow(Flow::MountRetry, cx);
                    self.timer(cx.now_us + RETRY_US, Timer::CtlRetry);
                }
            }
            (Flow::JoinMountedNl, CtlEv::Mounted(Status::Granted(_))) => {
                self.set_flow(Flow::MountRetry, cx);
                self.timer(cx.now_us + RETRY_US, Timer::CtlRetry);
            }
            (Flow::MountRetry, CtlEv::Timer) => {
                self.set_flow(Flow::MountControlEx, cx);
                self.control_ex(cx);
            }
            (Flow::OwnJournal { waiting }, CtlEv::Granted(h)) if h == waiting => {
                self.own_journal = Some(h);
                let jid = self.jid.expect("slot");
                cx.disk.take_journal(self.me, jid);
                if self.replay(jid, cx) {
                    cx.stats.joins += 1;
                    self.after_mount(cx);
                }
            }
            (Flow::PassControlEx { lost, gen }, CtlEv::Control(Status::Granted(_), lvb)) => {
                let mut lvb = lvb.map(|l| ControlLvb::decode(&l)).unwrap_or_default();
                let journals = cx.disk.journals();
                let newer: Vec<(u32, u64)> = lost
                    .into_iter()
                    .filter(|(jid, gen)| *gen > lvb.generation && *jid < journals)
                    .collect();
                for (jid, gen) in &newer {
                    lvb.set(*jid);
                    lvb.generation = lvb.generation.max(*gen);
                }
                // The kernel's rule: the first survivor to run a pass for
                // a generation writes it, losses or not, so that joiners
                // can wait for it (see `JoinRule`). Only up to the
                // generation whose losses this pass took: a later one's
                // are in `st.lost` for the next pass, and writing its
                // generation now would make every survivor drop them.
                let advance = self.join_rule == JoinRule::Kernel && gen > lvb.generation;
                if advance {
                    lvb.generation = gen;
                }
                self.log(cx, || {
                    format!("control lvb {:#x} {:?}", lvb.generation, lvb.jids())
                });
                let update = (!newer.is_empty() || advance).then_some(lvb);
                self.set_flow(Flow::PassControlNl { lvb }, cx);
                self.control_release(update, cx);
            }
            (Flow::PassControlNl { lvb }, CtlEv::Control(Status::Granted(_), _)) => {
                let flagged = lvb.jids();
                if flagged.is_empty() {
                    self.pass_done(true, cx);
                } else {
                    self.try_journal(flagged, 0, cx);
                }
            }
            (Flow::PassJournal { flagged, i, holder }, CtlEv::Granted(h)) if h == holder => {
                if self.replay(flagged[i], cx) {
                    self.set_flow(Flow::PassClearEx { flagged, i, holder }, cx);
                    self.control_ex(cx);
                }
            }
            (Flow::PassJournal { flagged, i, holder }, CtlEv::Failed(h)) if h == holder => {
                self.try_journal(flagged, i + 1, cx);
            }
            (Flow::PassClearEx { flagged, i, holder }, CtlEv::Control(Status::Granted(_), lvb)) => {
                let mut lvb = lvb.map(|l| ControlLvb::decode(&l)).unwrap_or_default();
                lvb.clear(flagged[i]);
                self.set_flow(Flow::PassClearNl { flagged, i, holder }, cx);
                self.control_release(Some(lvb), cx);
            }
            (Flow::PassClearNl { flagged, i, holder }, CtlEv::Control(Status::Granted(_), _)) => {
                self.release(holder, cx);
                self.try_journal(flagged, i + 1, cx);
            }
            (Flow::PassRetry, CtlEv::Timer) => self.begin_pass(cx),
            (flow, CtlEv::Control(s, _) | CtlEv::Mounted(s)) => {
                panic!(
                    "n{}: unexpected control/mounted answer {s:?} in {flow:?}",
                    self.me.0
                )
            }
            (flow, CtlEv::Granted(h) | CtlEv::Failed(h)) => {
                panic!(
                    "n{}: unexpected holder {h:?} outcome in {flow:?}",
                    self.me.0
                )
            }
            (flow, CtlEv::Timer) => panic!("n{}: unexpected timer in {flow:?}", self.me.0),
        }
    }

    /// The first mounter takes every journal glock in order, then replays
    /// every dirty journal.
    fn first_journal(&mut self, next: u32, cx: &mut Ctx) {
        let journals = cx.disk.journals();
        if next < journals {
            let name = GlockName::journal(next);
            let (h, acts) =
                self.acquire(Owner::Ctl, name, GlockState::Ex, HolderFlags::default(), cx);
            self.set_flow(Flow::FirstJournals { next, waiting: h }, cx);
            self.dispatch(acts, cx);
            return;
        }
        let jid = self.jid.expect("slot");
        cx.disk.take_journal(self.me, jid);
        for j in 0..journals {
            if !self.replay(j, cx) {
                return;
            }
        }
        let held = std::mem::take(&mut self.first_held);
        self.set_flow(Flow::FirstMountedPr, cx);
        for (j, h) in held.into_iter().enumerate() {
            if j as u32 != jid {
                self.release(h, cx);
            }
        }
        self.convert_ctl(Target::Mounted, Mode::Pr, Flags::empty(), None, cx);
    }

    fn try_journal(&mut self, flagged: Vec<u32>, i: usize, cx: &mut Ctx) {
        if i == flagged.len() {
            self.pass_done(false, cx);
            return;
        }
        let name = GlockName::journal(flagged[i]);
        let flags = HolderFlags {
            try_lock: true,
            ..HolderFlags::default()
        };
        let (holder, acts) = self.acquire(Owner::Ctl, name, GlockState::Ex, flags, cx);
        self.set_flow(Flow::PassJournal { flagged, i, holder }, cx);
        self.dispatch(acts, cx);
    }

    fn pass_done(&mut self, clean: bool, cx: &mut Ctx) {
        if !clean {
            self.set_flow(Flow::PassRetry, cx);
            self.timer(cx.now_us + RETRY_US, Timer::CtlRetry);
            return;
        }
        if !std::mem::take(&mut self.st.again) && !self.st.awaiting_done {
            self.st.recovering = false;
            self.set_flow(Flow::Mounted, cx);
            self.unblock_requests(cx);
        } else {
            // The recovery thread goes round again at once; here a timer
            // lets the rest of the DLM's actions (recover_done) in first.
            self.set_flow(Flow::PassRetry, cx);
            self.timer(cx.now_us + 10, Timer::CtlRetry);
        }
    }
}
