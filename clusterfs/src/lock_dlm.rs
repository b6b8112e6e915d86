//! `lock_dlm`: the glock core ([`crate::glock`]) driven over a lockspace of
//! the in-process DLM, as the kernel's `lock_dlm.c` drives GFS2's glocks.
//!
//! One [`DlmGlocks`] per mount. Callers take glocks with
//! [`DlmGlocks::acquire`], which blocks until the holder is granted (at
//! once when this node caches the glock in a mode that covers it) and
//! returns a guard that releases on drop.
//!
//! Threads:
//! - the caller's thread runs the core and waits for its grant; it never
//!   does filesystem work for another glock;
//! - one *glock worker* thread carries out the core's actions in order:
//!   [`GlockOps::sync`] and [`GlockOps::invalidate`] (the filesystem's
//!   `go_sync` and `go_inval`), then the DLM request; and the core's timer
//!   (minimum hold time);
//! - the DLM's callbacks (completion and blocking ASTs) only feed the core
//!   and queue work: no filesystem work ever runs on a DLM thread.
//!
//! A demote is therefore: blocking AST → core → worker: sync, invalidate,
//! convert → the other node's grant. The filesystem's ops must not wait
//! for a glock themselves (they run while the demote is in progress), and
//! callers must not hold a filesystem-wide lock while they wait in
//! `acquire`.

mod control;

pub use control::{ControlLvb, JournalRecovery, MountControl, MountRole};

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use dlm::{Completion, Flags, LockHandler, LockId, Lockspace, Mode, SbFlags, Status};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::glock::{
    Action, DlmFailure, DlmMode, GlockConfig, GlockName, GlockState, GlockTable, GlockType,
    HolderFlags, HolderId,
};
use crate::lock::LockError;

/// What the filesystem does when a glock changes state under it.
pub trait GlockOps: Send + Sync {
    /// Makes everything dirty under `name` durable and clean (log flushed,
    /// blocks written in place, and the log moved on so that replaying it
    /// later cannot write those blocks again): the kernel's `go_sync`.
    fn sync(&self, name: GlockName);
    /// Drops what is cached under `name`: data, and metadata too unless
    /// `keep_metadata` (going to DF): the kernel's `go_inval`.
    fn invalidate(&self, name: GlockName, keep_metadata: bool);
    /// Whether `sync` and `invalidate` have anything to do for `name`.
    /// Types without the kernel's `go_sync` and `go_inval` (iopen, the
    /// nondisk locks) answer false: their demotes take no turn on the
    /// worker, so a last close drops its iopen glock on its own thread.
    fn caches(&self, _name: GlockName) -> bool {
        true
    }
    /// Another node asked for `name` in `wanted` while this node has it
    /// in `held` (the kernel's `go_callback`, for a remote request). Runs
    /// on a DLM thread: it may only note what to do, elsewhere.
    fn callback(&self, _name: GlockName, _held: GlockState, _wanted: GlockState) {}
}

/// Work the glock worker carries out, in order.
enum Work {
    Sync(GlockName),
    Invalidate(GlockName, bool),
    Request {
        name: GlockName,
        to: GlockState,
        try_lock: bool,
    },
    Forget(GlockName),
}

/// How a holder's wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Granted,
    Failed,
}

struct State {
    table: GlockTable,
    /// The DLM lock behind each glock the DLM knows of, and whether it
    /// was ever granted (a refused first request leaves no lock behind).
    dlm_ids: HashMap<GlockName, (LockId, bool)>,
    work: VecDeque<Work>,
    outcomes: HashMap<HolderId, Outcome>,
    /// Holders whose guard was dropped before their grant arrived.
    abandoned: Vec<HolderId>,
    stop: bool,
    /// Set when the lockspace failed us: every wait fails from then on.
    broken: Option<String>,
    /// The filesystem withdrew: nothing more goes to the DLM. A glock
    /// whose changes may not be in place must not reach another node but
    /// through the replay of our journal, after we leave the lockspace.
    withdrawn: bool,
    /// Recovery in progress (`recover_prep` until every failed node's
    /// journal is replayed): DLM requests wait in `deferred`, except for
    /// journal glocks, which recovery itself needs.
    blocked: bool,
    /// Glocks besides the journals' that recovery itself takes, so that
    /// they pass while requests are blocked (the kernel's LM_FLAG_NOEXP).
    recovery_locks: Vec<GlockName>,
    deferred: Vec<Work>,
    /// An emptied list of actions, kept for the next event's (a new
    /// glock's request and grant then allocate none).
    spare: Vec<Action>,
    /// Grants that arrived while blocked, delivered once unblocked.
    frozen: Vec<(GlockName, Completion)>,
    /// First requests refused before `lock_async` returned their id: no
    /// lock to remember.
    refused_early: Vec<LockId>,
    /// A job is being carried out (by the worker, or by a caller that
    /// took a DLM request at the head of the queue itself): jobs run one
    /// at a time, in queue order.
    running: bool,
    /// While the worker sleeps: until when (`Some(None)`: until woken).
    /// `None` while it is awake, when it plans its next sleep anew anyway.
    worker_sleeps_until: Option<Option<u64>>,
}

impl State {
    /// Whether requests of `name` go out during recovery.
    fn passes_recovery(&self, name: GlockName) -> bool {
        name.kind == GlockType::Journal || self.recovery_locks.contains(&name)
    }
}

struct Inner {
    ls: Lockspace,
    /// What the DLM calls back for every glock's lock ([`Callbacks`]).
    callbacks: Arc<dyn LockHandler>,
    ops: Arc<dyn GlockOps>,
    state: Mutex<State>,
    /// Holders waiting for their outcome.
    granted: Condvar,
    /// The worker waiting for work or its next tick.
    wake: Condvar,
    epoch: Instant,
}

/// The DLM's callbacks for every glock of a mount, a lock's argument
/// being its glock's name. The glocks are held weakly: the lockspace,
/// which keeps this, is theirs.
struct Callbacks(Weak<Inner>);

impl LockHandler for Callbacks {
    fn completed(&self, arg: u128, c: Completion) {
        if let (Some(me), Some(name)) = (self.0.upgrade(), GlockName::from_u128(arg)) {
            me.completed(name, c);
        }
    }

    fn blocking(&self, arg: u128, _id: LockId, wanted: Mode) {
        if let (Some(me), Some(name)) = (self.0.upgrade(), GlockName::from_u128(arg)) {
            me.blocking(name, wanted);
        }
    }
}

/// Glocks of one mount over a DLM lockspace.
pub struct DlmGlocks {
    inner: Arc<Inner>,
    worker: Option<thread::JoinHandle<()>>,
}

/// A granted glock; released when dropped.
pub struct GlockGuard {
    inner: Arc<Inner>,
    /// Taken when released.
    holder: Option<HolderId>,
}

impl GlockGuard {
    /// The glock held.
    pub fn name(&self) -> GlockName {
        self.holder.expect("held until dropped").name
    }

    /// Releases the glock; true if that only took the holder off a glock
    /// that stays cached: nothing in flight, no demote asked for (no
    /// other node's request came while it was held), nobody here waiting.
    pub fn release_quietly(mut self) -> bool {
        let holder = self.holder.take().expect("held until dropped");
        self.inner.release(holder)
    }
}

impl Drop for GlockGuard {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            self.inner.release(holder);
        }
    }
}

/// The glocks of one operation ([`DlmGlocks::acquire_set`]), let go
/// together when it is dropped.
pub struct GlockSet {
    inner: Arc<Inner>,
    held: SmallVec<[HolderId; 6]>,
}

impl Drop for GlockSet {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        for &holder in &self.held {
            // Nothing to carry out, nobody to wake (the usual case).
            if st.table.release_cached(holder) {
                continue;
            }
            let now = self.inner.now_ms();
            let actions = st.table.release(holder, now);
            self.inner.dispatch_here(&mut st, actions);
        }
    }
}

impl DlmGlocks {
    /// Glocks over `ls`, calling `ops` on demotes; starts the worker.
    pub fn new(ls: Lockspace, ops: Arc<dyn GlockOps>, config: GlockConfig) -> DlmGlocks {
        let inner = Arc::new_cyclic(|me| Inner {
            ls,
            callbacks: Arc::new(Callbacks(me.clone())),
            ops,
            state: Mutex::new(State {
                table: GlockTable::new(config),
                dlm_ids: HashMap::default(),
                work: VecDeque::new(),
                outcomes: HashMap::default(),
                abandoned: Vec::new(),
                stop: false,
                broken: None,
                withdrawn: false,
                blocked: false,
                recovery_locks: Vec::new(),
                deferred: Vec::new(),
                frozen: Vec::new(),
                spare: Vec::new(),
                refused_early: Vec::new(),
                running: false,
                worker_sleeps_until: None,
            }),
            granted: Condvar::new(),
            wake: Condvar::new(),
            epoch: Instant::now(),
        });
        let worker = {
            let inner = inner.clone();
            thread::Builder::new()
                .name("glock-worker".into())
                .spawn(move || inner.work_loop())
                .expect("spawn glock worker")
        };
        DlmGlocks {
            inner,
            worker: Some(worker),
        }
    }

    /// Takes `name` in `mode`, waiting as long as it takes (another node
    /// must give it up first). Fails when the holder was refused (a try
    /// lock) or the lockspace failed.
    pub fn acquire(
        &self,
        name: GlockName,
        mode: GlockState,
        flags: HolderFlags,
    ) -> Result<GlockGuard, LockError> {
        let holder = self.inner.acquire(name, mode, flags)?;
        Ok(GlockGuard {
            inner: self.inner.clone(),
            holder: Some(holder),
        })
    }

    /// Takes every glock of `wants`, in that order, as [`Self::acquire`]
    /// would (no flags), for one operation, under one lock of the table
    /// (let go only while waiting for a glock that is not cached). On a
    /// failure the glocks taken are let go.
    pub fn acquire_set(&self, wants: &[(GlockName, GlockState)]) -> Result<GlockSet, LockError> {
        let inner = &self.inner;
        let mut set = GlockSet {
            inner: inner.clone(),
            held: SmallVec::new(),
        };
        let mut st = inner.state.lock();
        if let Some(why) = &st.broken {
            return Err(LockError::Unavailable(why.clone()));
        }
        // On a failure `st` goes first (made after `set`), then the set
        // lets its glocks go, taking the lock itself.
        let flags = HolderFlags::default();
        for &(name, mode) in wants {
            let holder = match st.table.acquire_cached(name, mode, flags) {
                Some(holder) => holder,
                None => inner.acquire_queued(&mut st, name, mode, flags)?,
            };
            set.held.push(holder);
        }
        drop(st);
        Ok(set)
    }

    /// Waits until a demote of `name` asked for or under way is over, or
    /// a holder here has it; true if nobody here holds it then (it is at
    /// UN, forgotten, or cached again with no holder), false if a holder
    /// has it or the lockspace failed.
    pub fn wait_demoted(&self, name: GlockName) -> bool {
        let inner = &self.inner;
        let mut st = inner.state.lock();
        loop {
            if st.broken.is_some() {
                return false;
            }
            match st.table.glock(&name) {
                None => return true,
                Some(g) if g.holders().any(|h| h.granted) => return false,
                Some(g) if g.in_flight().is_none() && !g.demote_pending() => return true,
                Some(_) => {}
            }
            inner.granted.wait(&mut st);
        }
    }

    /// Drops every glock of type `kind` this node caches and nobody here
    /// holds, and waits until the DLM has them all in NL or unlocked (a
    /// glock still held here is left to its holder).
    pub fn give_up_all(&self, kind: GlockType) {
        let inner = &self.inner;
        let mut st = inner.state.lock();
        let now = inner.now_ms();
        let (names, actions) = st.table.drop_kind(kind, now);
        inner.dispatch_here(&mut st, actions);
        for name in names {
            loop {
                if st.broken.is_some() {
                    return;
                }
                match st.table.glock(&name) {
                    Some(g) if g.holders().any(|h| h.granted) => break,
                    Some(g) if g.in_flight().is_some() || g.demote_pending() => {}
                    Some(g) if g.state() != GlockState::Un => {
                        // Taken and let go again since (by a holder that
                        // came after the drop): dropped anew.
                        let now = inner.now_ms();
                        let actions = st.table.drop_cached(name, now);
                        inner.dispatch_here(&mut st, actions);
                        continue;
                    }
                    _ => break,
                }
                inner.granted.wait(&mut st);
            }
        }
    }

    /// Takes `name` in `mode` only if no other node must be asked to give
    /// it up (a DLM NOQUEUE request); `Ok(None)` when it is busy.
    pub fn try_acquire(
        &self,
        name: GlockName,
        mode: GlockState,
    ) -> Result<Option<GlockGuard>, LockError> {
        let flags = HolderFlags {
            try_lock: true,
            ..HolderFlags::default()
        };
        match self.acquire(name, mode, flags) {
            Ok(g) => Ok(Some(g)),
            Err(_) if self.inner.state.lock().broken.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Drops every cached glock (unmount): syncs, invalidates and unlocks
    /// them all, then stops the worker. Holders must all be released.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        {
            let mut st = self.inner.state.lock();
            let now = self.inner.now_ms();
            let actions = st.table.drop_all(now);
            self.inner.dispatch(&mut st, actions);
            st.stop = true;
            self.inner.wake.notify_all();
        }
        let _ = worker.join();
    }

    /// The filesystem withdrew: every waiting and later acquire fails,
    /// and no request, conversion or unlock goes to the DLM any more (the
    /// glocks stay as the DLM has them until this node leaves the
    /// lockspace; the others' recovery then replays our journal before
    /// they are granted).
    pub fn withdraw(&self, why: &str) {
        let mut st = self.inner.state.lock();
        st.withdrawn = true;
        st.broken.get_or_insert_with(|| format!("withdrawn: {why}"));
        st.work.clear();
        st.deferred.clear();
        self.inner.granted.notify_all();
        self.inner.wake.notify_all();
    }

    /// `name` is taken by journal recovery (as the journals' glocks are):
    /// its requests go out while others wait for recovery to end.
    pub fn taken_by_recovery(&self, name: GlockName) {
        self.inner.state.lock().recovery_locks.push(name);
    }

    /// Recovery started: new DLM requests wait, and grants of requests
    /// already made are held back (cached glocks stay usable: no failed
    /// node can have held them in a conflicting mode).
    pub fn block_requests(&self) {
        self.inner.state.lock().blocked = true;
    }

    /// Recovery is done: the waiting DLM requests go out, in order.
    pub fn unblock_requests(&self) {
        let mut st = self.inner.state.lock();
        st.blocked = false;
        for (name, c) in std::mem::take(&mut st.frozen) {
            self.inner.complete_locked(&mut st, name, c);
        }
        let deferred = std::mem::take(&mut st.deferred);
        for w in deferred.into_iter().rev() {
            st.work.push_front(w);
        }
        self.inner.wake.notify_all();
    }

    /// A line per glock: state, transition in flight, holders (for dumps).
    pub fn dump(&self) -> Vec<String> {
        let st = self.inner.state.lock();
        let mut v: Vec<String> = st
            .table
            .glocks()
            .map(|g| {
                let holders: Vec<String> = g.holders().map(|h| format!("{h:?}")).collect();
                format!(
                    "{:?} {:?} in_flight={:?} demote={} dlm={:?} holders={holders:?}",
                    g.name(),
                    g.state(),
                    g.in_flight(),
                    g.demote_pending(),
                    st.dlm_ids.get(&g.name()),
                )
            })
            .collect();
        v.sort();
        v.push(format!("work queued: {}", st.work.len()));
        v
    }

    /// Glocks this node knows of, with their state (for dumps and tests).
    pub fn states(&self) -> Vec<(GlockName, GlockState)> {
        let st = self.inner.state.lock();
        let mut v: Vec<_> = st.table.glocks().map(|g| (g.name(), g.state())).collect();
        v.sort_by_key(|(n, _)| (n.kind as u32, n.number));
        v
    }
}

impl Drop for DlmGlocks {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Takes `name` in `mode` for a new holder, waiting as long as it
    /// takes; the holder's id ([`DlmGlocks::acquire`]).
    fn acquire(
        self: &Arc<Self>,
        name: GlockName,
        mode: GlockState,
        flags: HolderFlags,
    ) -> Result<HolderId, LockError> {
        let mut st = self.state.lock();
        if let Some(why) = &st.broken {
            return Err(LockError::Unavailable(why.clone()));
        }
        // Granted at once (a glock this node holds in a mode that covers
        // it): nothing to record, nobody to wake.
        if let Some(holder) = st.table.acquire_cached(name, mode, flags) {
            return Ok(holder);
        }
        self.acquire_queued(&mut st, name, mode, flags)
    }

    /// [`Inner::acquire`] past the cache: queues the holder and waits for
    /// its outcome (the lock is let go while waiting).
    fn acquire_queued(
        self: &Arc<Self>,
        st: &mut MutexGuard<'_, State>,
        name: GlockName,
        mode: GlockState,
        flags: HolderFlags,
    ) -> Result<HolderId, LockError> {
        let now = self.now_ms();
        let mut actions = std::mem::take(&mut st.spare);
        let holder = st.table.acquire_into(name, mode, flags, now, &mut actions);
        if let Some(c) = self.request_at_once(st, &actions) {
            actions.clear();
            st.spare = actions;
            self.complete_locked(st, name, c);
        } else {
            self.dispatch_here(st, actions);
        }
        loop {
            match st.outcomes.remove(&holder) {
                Some(Outcome::Granted) => return Ok(holder),
                Some(Outcome::Failed) => {
                    return Err(LockError::Unavailable(format!("{name:?} refused")));
                }
                None => {}
            }
            if let Some(why) = st.broken.clone() {
                st.abandoned.push(holder);
                return Err(LockError::Unavailable(why));
            }
            // Another node may hold it, or our own demote may need the
            // kernel to drop a cache first: on a FUSE thread, another
            // thread reads the next requests meanwhile.
            fuser::hand_off_reading();
            self.granted.wait(st);
        }
    }

    /// A new glock's first request, when it is the one thing to do
    /// (`actions`) and the DLM grants it on the spot (a new inode's glocks
    /// on a node that keeps their directory): asked under the state lock,
    /// with no job queued and no DLM callback; the grant, to record as the
    /// DLM's answers are ([`Inner::complete_locked`]). Only while no job
    /// runs or waits (jobs go to the DLM in order) and nothing holds
    /// requests back; `None`, with nothing asked, otherwise.
    fn request_at_once(&self, st: &State, actions: &[Action]) -> Option<Completion> {
        let [Action::DlmRequest {
            name, to, try_lock, ..
        }] = actions[..]
        else {
            return None;
        };
        if st.running
            || !st.work.is_empty()
            || st.blocked
            || st.withdrawn
            || st.broken.is_some()
            || st.dlm_ids.contains_key(&name)
        {
            return None;
        }
        let mode = dlm_mode(to.dlm_mode());
        let got = self.ls.try_lock_here_with(
            &name.dlm_name(),
            mode,
            request_flags(name, try_lock),
            &self.callbacks,
            name.to_u128(),
        );
        let id = got.ok().flatten()?;
        Some(Completion {
            id,
            status: Status::Granted(mode),
            sbflags: SbFlags::default(),
            lvb: None,
        })
    }

    /// Records grants and failures, queues the rest for the worker. While
    /// a job runs (on the worker, or on a caller in [`Inner::run_here`],
    /// often the very job whose DLM answer this is), the queue is looked
    /// at again when it ends: no wake-up then.
    fn dispatch(&self, st: &mut State, actions: Vec<Action>) {
        if self.dispatch_quiet(st, actions) && !st.running {
            self.wake.notify_all();
        }
    }

    /// [`Inner::dispatch`] from a caller's thread, which sends the DLM
    /// requests and unlocks it queued itself when nothing else runs
    /// ([`Inner::run_here`]); the worker is woken only for what is left.
    fn dispatch_here(self: &Arc<Self>, st: &mut MutexGuard<'_, State>, actions: Vec<Action>) {
        if self.dispatch_quiet(st, actions) {
            self.run_here(st);
            if !st.work.is_empty() {
                self.wake.notify_all();
            }
        }
    }

    /// Records grants and failures, queues the rest; true if it queued
    /// work (the caller wakes the worker).
    fn dispatch_quiet(&self, st: &mut State, mut actions: Vec<Action>) -> bool {
        let mut woke = false;
        let mut work = false;
        for a in actions.drain(..) {
            match a {
                Action::Grant { holder } => {
                    if let Some(i) = st.abandoned.iter().position(|h| *h == holder) {
                        // Its caller gave up (lockspace broken): release it.
                        st.abandoned.swap_remove(i);
                        let now = self.now_ms();
                        let more = st.table.release(holder, now);
                        self.dispatch(st, more);
                        continue;
                    }
                    st.outcomes.insert(holder, Outcome::Granted);
                    woke = true;
                }
                Action::Failed { holder } => {
                    st.abandoned.retain(|h| *h != holder);
                    st.outcomes.insert(holder, Outcome::Failed);
                    woke = true;
                }
                Action::Sync { name } => {
                    if self.ops.caches(name) {
                        st.work.push_back(Work::Sync(name));
                        work = true;
                    }
                }
                Action::Invalidate {
                    name,
                    keep_metadata,
                } => {
                    if self.ops.caches(name) {
                        dlm::metrics::GLOCK_INVALIDATIONS.inc();
                        st.work.push_back(Work::Invalidate(name, keep_metadata));
                        work = true;
                    }
                }
                Action::DlmRequest {
                    name, to, try_lock, ..
                } => {
                    st.work.push_back(Work::Request { name, to, try_lock });
                    work = true;
                }
                Action::Forget { name } => {
                    st.work.push_back(Work::Forget(name));
                    work = true;
                }
            }
        }
        if woke {
            self.granted.notify_all();
        }
        // A small one only: an unmount's thousands are not kept for good.
        if actions.capacity() > st.spare.capacity() && actions.capacity() <= SPARE_MAX {
            st.spare = actions;
        }
        work
    }

    /// Releases a holder; true if that was [`GlockTable::release_cached`].
    fn release(self: &Arc<Self>, holder: HolderId) -> bool {
        let mut st = self.state.lock();
        // Nothing to carry out, nobody to wake.
        if st.table.release_cached(holder) {
            return true;
        }
        let now = self.now_ms();
        let actions = st.table.release(holder, now);
        self.dispatch_here(&mut st, actions);
        false
    }

    /// Carries out the DLM requests and unlocks at the head of the queue
    /// on the calling thread, when no job runs: a caller that needs a new
    /// glock (a create takes two) or drops one on its last close then
    /// waits for no hand-over to the worker and back, and the DLM answers
    /// a lock mastered here inside `lock_async`. The worker's order is
    /// kept: only the queue's head, one job at a time, never past a sync
    /// or an invalidation (filesystem work stays on the worker).
    fn run_here(self: &Arc<Self>, st: &mut MutexGuard<'_, State>) {
        while !st.running && !st.withdrawn {
            match st.work.front() {
                Some(Work::Request { name, .. }) if !st.blocked || st.passes_recovery(*name) => {}
                Some(Work::Forget(_)) => {}
                _ => return,
            }
            let job = st.work.pop_front().expect("a head");
            st.running = true;
            MutexGuard::unlocked(st, || match job {
                Work::Request { name, to, try_lock } => self.request(name, to, try_lock),
                Work::Forget(name) => self.forget(name),
                Work::Sync(_) | Work::Invalidate(..) => unreachable!("only DLM work here"),
            });
            st.running = false;
        }
    }

    /// The glock worker: carries out queued work in order; runs the
    /// core's timer.
    fn work_loop(self: Arc<Self>) {
        loop {
            let job = {
                let mut st = self.state.lock();
                loop {
                    if !st.running {
                        if let Some(w) = st.work.pop_front() {
                            st.running = true;
                            break w;
                        }
                    }
                    if st.stop {
                        return;
                    }
                    let now = self.now_ms();
                    match st.table.next_tick_ms() {
                        Some(t) if t <= now => {
                            let actions = st.table.tick(now);
                            self.dispatch(&mut st, actions);
                        }
                        Some(t) => {
                            let wait = Duration::from_millis(t - now);
                            st.worker_sleeps_until = Some(Some(t));
                            self.wake.wait_for(&mut st, wait);
                            st.worker_sleeps_until = None;
                        }
                        None => {
                            st.worker_sleeps_until = Some(None);
                            self.wake.wait(&mut st);
                            st.worker_sleeps_until = None;
                        }
                    }
                }
            };
            self.run(job);
            self.state.lock().running = false;
        }
    }

    fn run(self: &Arc<Self>, job: Work) {
        {
            let mut st = self.state.lock();
            if st.withdrawn {
                return;
            }
            if let Work::Request { name, .. } = &job {
                if st.blocked && !st.passes_recovery(*name) {
                    st.deferred.push(job);
                    return;
                }
            }
        }
        match job {
            Work::Sync(name) => self.ops.sync(name),
            Work::Invalidate(name, keep) => self.ops.invalidate(name, keep),
            Work::Request { name, to, try_lock } => self.request(name, to, try_lock),
            Work::Forget(name) => self.forget(name),
        }
    }

    /// Unlocks the DLM lock of a glock the core forgot.
    fn forget(&self, name: GlockName) {
        let id = self.state.lock().dlm_ids.remove(&name);
        if let Some((id, _)) = id {
            if let Err(e) = self.ls.unlock_async(id, Flags::empty(), None) {
                tracing::warn!(?name, error = %e, "unlocking a forgotten glock");
            }
        }
    }

    /// Converts (or first takes) the DLM lock behind `name`.
    fn request(self: &Arc<Self>, name: GlockName, to: GlockState, try_lock: bool) {
        let mode = dlm_mode(to.dlm_mode());
        let flags = request_flags(name, try_lock);
        let id = self.state.lock().dlm_ids.get(&name).map(|(id, _)| *id);
        let r = match id {
            Some(id) => self.ls.convert_async(id, mode, flags, None),
            None => {
                let dlm_name = name.dlm_name();
                self.ls
                    .lock_async_with(
                        &dlm_name,
                        mode,
                        flags,
                        None,
                        &self.callbacks,
                        name.to_u128(),
                    )
                    .map(|(id, now)| {
                        let mut st = self.state.lock();
                        if let Some(c) = now {
                            // Answered at once (mastered here): as the
                            // callback would have, with no hand-over.
                            st.dlm_ids.insert(name, (id, false));
                            self.completed_locked(&mut st, name, c);
                            return;
                        }
                        // The answer may have come already: granted (the
                        // id is known) or refused (no lock is left).
                        if let Some(i) = st.refused_early.iter().position(|r| *r == id) {
                            st.refused_early.swap_remove(i);
                        } else {
                            st.dlm_ids.entry(name).or_insert((id, false));
                        }
                    })
            }
        };
        if let Err(e) = r {
            self.fail(name, format!("dlm request for {name:?}: {e}"));
        }
    }

    /// The DLM answered a request of `name`.
    fn completed(&self, name: GlockName, c: Completion) {
        self.completed_locked(&mut self.state.lock(), name, c);
    }

    fn completed_locked(&self, st: &mut State, name: GlockName, c: Completion) {
        if st.blocked && !st.passes_recovery(name) && is_grant_above_nl(&c) {
            // Asked before recovery began, granted after the DLM's
            // recovery: what it guards may still be in a failed node's
            // journal. Kept until that journal is replayed (the kernel's
            // GLF_FROZEN).
            st.frozen.push((name, c));
            return;
        }
        self.complete_locked(st, name, c);
    }

    fn complete_locked(&self, st: &mut State, name: GlockName, c: Completion) {
        let now = self.now_ms();
        match (c.status, st.dlm_ids.get(&name)) {
            (Status::Granted(_), _) => {
                st.dlm_ids.insert(name, (c.id, true));
            }
            // Unlocks of forgotten glocks complete too.
            (Status::Unlocked, _) => {}
            // A first request that failed leaves no lock.
            (_, Some(&(id, false))) if id == c.id => {
                st.dlm_ids.remove(&name);
            }
            (_, None) => st.refused_early.push(c.id),
            _ => {}
        }
        let actions = match c.status {
            Status::Granted(m) => {
                let mut out = std::mem::take(&mut st.spare);
                st.table
                    .dlm_granted_into(name, glock_mode(m), now, &mut out);
                out
            }
            Status::Again => st.table.dlm_failed(name, DlmFailure::TryFailed, now),
            Status::Deadlock => st.table.dlm_failed(name, DlmFailure::Deadlock, now),
            // An unlock we asked for (Forget) completes with Unlocked.
            Status::Unlocked => return,
            Status::Canceled => st.table.dlm_failed(name, DlmFailure::Error, now),
        };
        self.dispatch(st, actions);
        // A grant may start a minimum hold time; `wait_released` waits
        // for demotes to complete.
        self.replan(st);
        self.granted.notify_all();
    }

    /// Wakes the worker if the core's next tick is now earlier than the
    /// worker sleeps for (a new minimum hold time or demote): a grant
    /// wakes no thread that has nothing to do.
    fn replan(&self, st: &State) {
        let Some(until) = st.worker_sleeps_until else {
            return; // awake: it plans its next sleep after its job
        };
        if let Some(t) = st.table.next_tick_ms() {
            if until.is_none_or(|u| t < u) {
                self.wake.notify_all();
            }
        }
    }

    /// Another node waits for `name` in `wanted`.
    fn blocking(&self, name: GlockName, wanted: Mode) {
        let wanted = glock_mode(wanted);
        let mut st = self.state.lock();
        let held = st.table.glock(&name).map(|g| g.state());
        let now = self.now_ms();
        let actions = st.table.blocking_callback(name, wanted, now);
        self.dispatch(&mut st, actions);
        // The demote may wait for the minimum hold time: a new tick.
        self.replan(&st);
        drop(st);
        if let Some(held) = held {
            self.ops.callback(name, held, GlockState::from_dlm(wanted));
        }
    }

    /// The lockspace refused a request: every holder of `name` fails.
    fn fail(&self, name: GlockName, why: String) {
        tracing::error!(%why, "glock request failed");
        let mut st = self.state.lock();
        let now = self.now_ms();
        let actions = st.table.dlm_failed(name, DlmFailure::Error, now);
        st.broken.get_or_insert(why);
        self.dispatch(&mut st, actions);
        self.granted.notify_all();
    }
}

/// The largest list of actions kept for reuse ([`State::spare`]).
const SPARE_MAX: usize = 64;

fn is_grant_above_nl(c: &Completion) -> bool {
    matches!(c.status, Status::Granted(m) if m != Mode::Nl)
}

/// The DLM flags of a request for `name`. A refused try for an iopen
/// glock still tells its holders, as GFS2 asks (LM_FLAG_TRY_1CB): a node
/// that only caches it gives it up and frees the inode itself if it is
/// unlinked (`GlockOps::callback`).
fn request_flags(name: GlockName, try_lock: bool) -> Flags {
    match (try_lock, name.kind) {
        (false, _) => Flags::empty(),
        (true, GlockType::Iopen) => Flags::NOQUEUE | Flags::NOQUEUEBAST,
        (true, _) => Flags::NOQUEUE,
    }
}

/// The DLM mode of a glock mode.
fn dlm_mode(m: DlmMode) -> Mode {
    match m {
        DlmMode::Nl => Mode::Nl,
        DlmMode::Cw => Mode::Cw,
        DlmMode::Pr => Mode::Pr,
        DlmMode::Ex => Mode::Ex,
    }
}

/// The glock mode of a DLM mode. GFS2 nodes use only NL, CW, PR and EX; a
/// CR waiter is blocked only by EX (as PR is), a PW waiter by all that PR
/// or CW block (as EX is).
fn glock_mode(m: Mode) -> DlmMode {
    match m {
        Mode::Nl => DlmMode::Nl,
        Mode::Cw => DlmMode::Cw,
        Mode::Cr | Mode::Pr => DlmMode::Pr,
        Mode::Pw | Mode::Ex => DlmMode::Ex,
    }
}
