//! The public lock API of one lockspace: blocking and callback (async)
//! forms of lock, convert, unlock and cancel, over sharded node state
//! machines.
//!
//! A lockspace runs `shards` independent [`Node`]s; a resource belongs to
//! the shard its name hashes to, and lock ids carry their shard (`id %
//! shards`). Each shard has its own mutex, so threads working on different
//! resources rarely meet, and a lock on a resource mastered here runs
//! entirely on the caller's thread: no network, no thread hop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::driver::spin;
use crate::driver::transport::{run_callback, throttle, InConn, Lead, Transport};
use crate::driver::DlmError;
use crate::membership::MembershipEvent;
use crate::metrics::LsCounters;
use crate::node::{Action, Immediate, Node, NodeError, Placement};
use crate::plock::{Family, Kind, Plock};
use crate::types::{Flags, LockId, Lvb, NodeId, ResName, SbFlags, Status};
use crate::wire::{Envelope, Msg, PlockOp, PlockReply};
use crate::Mode;

/// What a completion callback receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The lock.
    pub id: LockId,
    /// Outcome.
    pub status: Status,
    /// Status flags.
    pub sbflags: SbFlags,
    /// Value block read on grant (VALBLK).
    pub lvb: Option<Lvb>,
}

/// Completion callback (ast).
pub type AstFn = Arc<dyn Fn(Completion) + Send + Sync>;
/// Blocking callback (bast): the lock and the mode that waits.
pub type BastFn = Arc<dyn Fn(LockId, Mode) + Send + Sync>;

/// Callbacks that many locks share, each lock told apart by the argument
/// given with its request (the kernel's `astarg`): nothing to allocate
/// per lock ([`Lockspace::lock_async_with`]). Called holding no lockspace
/// lock, on the caller's thread or the lockspace's.
pub trait LockHandler: Send + Sync {
    /// A request, conversion or unlock of the lock asked for with `arg`
    /// completed.
    fn completed(&self, arg: u128, c: Completion);
    /// The lock asked for with `arg` (lock `id`) blocks a request for
    /// `wanted`.
    fn blocking(&self, arg: u128, id: LockId, wanted: Mode);
}

/// A blocked caller waiting for one result (a lock completion, a plock
/// reply).
struct Waiter<T> {
    done: Mutex<Option<T>>,
    /// Set with `done`: lets a spinning or leading waiter check without
    /// the mutex.
    ready: AtomicBool,
    cv: Condvar,
    /// The connection the caller reads while it waits ([`Lead`]), and
    /// whether it sleeps there (then completing it must kick it).
    lead: Mutex<Option<Arc<InConn>>>,
    sleeping: AtomicBool,
}

impl<T> Default for Waiter<T> {
    fn default() -> Waiter<T> {
        Waiter {
            done: Mutex::new(None),
            ready: AtomicBool::new(false),
            cv: Condvar::new(),
            lead: Mutex::new(None),
            sleeping: AtomicBool::new(false),
        }
    }
}

/// Longest poll of a blocked caller without a connection to read before
/// it sleeps (see `driver::spin`).
const SPIN: Duration = Duration::from_micros(60);

impl<T> Waiter<T> {
    fn complete(&self, c: T) {
        *self.done.lock() = Some(c);
        self.ready.store(true, Ordering::SeqCst);
        self.cv.notify_all();
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(conn) = &*self.lead.lock() {
                conn.kick();
            }
        }
    }

    /// Waits as the reader of the connection the answer comes on (see
    /// [`Lead`]) until completed.
    fn wait_leading(&self, lead: Lead) -> T {
        *self.lead.lock() = Some(lead.conn().clone());
        lead.wait(&self.sleeping, || self.ready.load(Ordering::SeqCst));
        drop(lead);
        *self.lead.lock() = None;
        self.wait()
    }

    /// Waits until completed, polling a little first when that pays.
    fn spin_wait(&self) -> T {
        spin::poll_first(SPIN, || self.ready.load(Ordering::Acquire));
        self.wait()
    }

    fn wait(&self) -> T {
        let mut done = self.done.lock();
        while done.is_none() {
            self.cv.wait(&mut done);
        }
        done.take().expect("completed")
    }
}

#[derive(Default)]
struct LockCb {
    calls: Calls,
    /// Blocking callers waiting for this lock's next completion (a lock
    /// call and a FORCEUNLOCK from another thread may both wait).
    waiters: Vec<Arc<Waiter<Completion>>>,
}

/// Who hears of a lock's completions and of the requests it blocks.
enum Calls {
    /// Closures ([`Lockspace::lock_async`]); either may be missing.
    Fns {
        ast: Option<AstFn>,
        bast: Option<BastFn>,
    },
    /// A shared handler and the lock's argument.
    Handler(Arc<dyn LockHandler>, u128),
}

impl Default for Calls {
    fn default() -> Calls {
        Calls::Fns {
            ast: None,
            bast: None,
        }
    }
}

impl LockCb {
    fn of(calls: Calls) -> LockCb {
        LockCb {
            calls,
            waiters: Vec::new(),
        }
    }

    /// True if completions go to a callback.
    fn has_ast(&self) -> bool {
        !matches!(self.calls, Calls::Fns { ast: None, .. })
    }

    /// The callback call for completion `c`, if there is a callback.
    fn ast(&self, c: Completion) -> Option<Deferred> {
        match &self.calls {
            Calls::Fns { ast: Some(f), .. } => Some(Deferred::Ast(f.clone(), c)),
            Calls::Fns { ast: None, .. } => None,
            Calls::Handler(h, arg) => Some(Deferred::Completed(h.clone(), *arg, c)),
        }
    }

    /// The blocking callback call for a request of `mode` that lock `id`
    /// blocks, if there is a callback.
    fn bast(&self, id: LockId, mode: Mode) -> Option<Deferred> {
        match &self.calls {
            Calls::Fns { bast: Some(f), .. } => Some(Deferred::Bast(f.clone(), id, mode)),
            Calls::Fns { bast: None, .. } => None,
            Calls::Handler(h, arg) => Some(Deferred::Blocking(h.clone(), *arg, id, mode)),
        }
    }
}

pub(crate) struct Shard {
    pub(crate) node: Node,
    /// When unused resources were last swept ([`Node::sweep`]).
    last_sweep: Duration,
    out: Vec<Action>,
    cbs: crate::types::FastMap<LockId, LockCb>,
    plock_waiters: crate::types::FastMap<u64, PlockWait>,
}

/// Who hears of a plock request's result.
enum PlockWait {
    /// A blocked caller.
    Blocking(Arc<Waiter<PlockReply>>),
    /// A callback ([`Lockspace::plock_async`]).
    Callback(Box<dyn FnOnce(PlockReply) + Send>),
}

/// Result callback of an async POSIX lock or flock request.
pub type PlockFn = Box<dyn FnOnce(Result<(), DlmError>) + Send>;

/// A POSIX lock or flock request started by [`Lockspace::plock_async`] or
/// [`Lockspace::flock_async`], to cancel with [`Lockspace::plock_cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlockReq(pub u64);

/// A POSIX lock or flock request.
fn lock_op(kind: Kind, start: u64, end: u64, wait: bool) -> PlockOp {
    PlockOp::Lock {
        kind,
        start,
        end,
        wait,
    }
}

/// `done`, fed the caller's view of a lock request's result.
fn callback(done: PlockFn) -> PlockWait {
    PlockWait::Callback(Box::new(move |r| done(lock_result(r))))
}

/// A lock request's result as the caller sees it.
fn lock_result(r: PlockReply) -> Result<(), DlmError> {
    match r {
        PlockReply::Ok => Ok(()),
        PlockReply::Conflict(_) => Err(DlmError::Again),
        PlockReply::Deadlock => Err(DlmError::Deadlock),
        PlockReply::Canceled => Err(DlmError::Canceled),
    }
}

enum Deferred {
    Ast(AstFn, Completion),
    Bast(BastFn, LockId, Mode),
    Completed(Arc<dyn LockHandler>, u128, Completion),
    Blocking(Arc<dyn LockHandler>, u128, LockId, Mode),
    /// A blocked caller, woken after the shard lock is released (woken
    /// under it, it would at once contend with the thread that woke it).
    Wake(Arc<Waiter<Completion>>, Completion),
    PlockWake(Arc<Waiter<PlockReply>>, PlockReply),
    PlockCall(Box<dyn FnOnce(PlockReply) + Send>, PlockReply),
    Recover(Arc<dyn RecoverOps>, RecoverEvent),
}

/// What the lockspace tells its [`RecoverOps`].
#[derive(Clone, Debug)]
enum RecoverEvent {
    Prep,
    Slot(NodeId, u32),
    Done(u64, Vec<(NodeId, u32)>, u32),
}

/// The kernel's `dlm_lockspace_ops`: how a lockspace user (a cluster
/// filesystem) hears of recovery. Called from the lockspace's own threads
/// in this order for each recovery: `recover_prep`, then `recover_slot`
/// for each slot whose process is gone (only after that node is fenced),
/// then `recover_done`. They must not block on locks of this lockspace.
pub trait RecoverOps: Send + Sync {
    /// The lockspace stopped for recovery: lock requests now wait.
    fn recover_prep(&self) {}
    /// `node`, which held `slot`, is gone (left, or failed and fenced).
    fn recover_slot(&self, node: NodeId, slot: u32) {
        let _ = (node, slot);
    }
    /// Recovery of generation `gen` is done: every member's slot, and ours.
    fn recover_done(&self, gen: u64, slots: &[(NodeId, u32)], our_slot: u32) {
        let _ = (gen, slots, our_slot);
    }
}

/// A value alone on its cache lines (128 bytes: adjacent-line prefetch),
/// so threads working in different shards do not share a line (false
/// sharing of one shard's mutex with its neighbour's fields).
#[repr(align(128))]
pub(crate) struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct LsInner {
    pub(crate) name: String,
    pub(crate) shards: Box<[CacheLine<Mutex<Shard>>]>,
    transport: Arc<Transport>,
    /// Told of recovery (by shard 0, which agrees the slots).
    ops: Option<Arc<dyn RecoverOps>>,
    /// Lock traffic counters (the control socket's `metrics`), one set
    /// per shard: callers on different shards never write the same cache
    /// line (one shared set cut 4-thread local locking from 22 to 7.5
    /// million a second).
    pub(crate) counters: Box<[LsCounters]>,
}

/// A joined lockspace. Cheap to clone.
#[derive(Clone)]
pub struct Lockspace {
    pub(crate) inner: Arc<LsInner>,
}

fn node_err(e: NodeError) -> DlmError {
    match e {
        NodeError::NoLock => DlmError::NoLock,
        NodeError::Busy => DlmError::Busy,
        NodeError::Invalid => DlmError::Invalid,
        NodeError::NotMember => DlmError::NotMember,
        // Out of lock slots: "resource temporarily unavailable".
        NodeError::TooMany => DlmError::Again,
    }
}

fn status_result(c: Completion) -> Result<Completion, DlmError> {
    match c.status {
        Status::Granted(_) | Status::Unlocked => Ok(c),
        Status::Again => Err(DlmError::Again),
        Status::Deadlock => Err(DlmError::Deadlock),
        Status::Canceled => Err(DlmError::Canceled),
    }
}

impl LsInner {
    pub(crate) fn new(
        name: &str,
        me: NodeId,
        shards: u32,
        transport: Arc<Transport>,
        ops: Option<Arc<dyn RecoverOps>>,
        placement: &Placement,
    ) -> LsInner {
        let shards = (0..shards)
            .map(|k| {
                let mut node = Node::new(me, k + shards, shards);
                node.set_placement(placement.clone());
                if k > 0 {
                    node.set_quiet_recovery();
                }
                CacheLine(Mutex::new(Shard {
                    node,
                    last_sweep: coarse_clock(),
                    out: Vec::new(),
                    cbs: Default::default(),
                    plock_waiters: Default::default(),
                }))
            })
            .collect::<Box<[_]>>();
        let counters = shards.iter().map(|_| LsCounters::default()).collect();
        LsInner {
            name: name.to_string(),
            shards,
            transport,
            ops,
            counters,
        }
    }

    pub(crate) fn shard_of_name(&self, name: &ResName) -> usize {
        self.shard_index(name.hash64() >> 32)
    }

    fn shard_of_id(&self, id: LockId) -> usize {
        self.shard_index(u64::from(id.0))
    }

    /// `x % shards`, with a mask instead of a division (tens of cycles) for
    /// the usual power-of-two shard count. Equal results: `x < 2^32`.
    fn shard_index(&self, x: u64) -> usize {
        let n = self.shards.len() as u64;
        if n.is_power_of_two() {
            (x & (n - 1)) as usize
        } else {
            (x % n) as usize
        }
    }

    fn frame(&self, shard: usize, env: &Envelope) -> Vec<u8> {
        let mut f = crate::driver::transport::frame_start(96);
        f.push(self.name.len() as u8);
        f.extend_from_slice(self.name.as_bytes());
        f.extend_from_slice(&(shard as u16).to_le_bytes());
        env.encode(&mut f);
        crate::driver::transport::frame_finish(&mut f);
        f
    }

    /// Executes the actions a shard produced, under its lock (so sends keep
    /// their order); returns the user callbacks to run after unlocking.
    /// Sends never wait here: a peer's back-pressure is owed to
    /// [`throttle`], which public calls run once they hold no lock.
    fn run_actions(&self, k: usize, sh: &mut Shard, deferred: &mut Vec<Deferred>) {
        for a in sh.out.drain(..) {
            match a {
                Action::Send { to, env } => {
                    if let Msg::Lookup { .. } = env.msg {
                        self.counters[k].lookups_sent.inc();
                    }
                    self.transport.send_deferred(to, self.frame(k, &env));
                }
                Action::Ast {
                    id,
                    status,
                    sbflags,
                    lvb,
                } => {
                    let c = Completion {
                        id,
                        status,
                        sbflags,
                        lvb,
                    };
                    self.count_grant(k, status);
                    let gone = sh.node.lock_info(id).is_none();
                    let Some(cb) = sh.cbs.get_mut(&id) else {
                        continue;
                    };
                    if !cb.waiters.is_empty() {
                        for w in cb.waiters.drain(..) {
                            deferred.push(Deferred::Wake(w, c));
                        }
                    } else if let Some(call) = cb.ast(c) {
                        deferred.push(call);
                    }
                    if gone {
                        sh.cbs.remove(&id);
                    }
                }
                Action::PlockDone { req, result } => match sh.plock_waiters.remove(&req) {
                    Some(PlockWait::Blocking(w)) => deferred.push(Deferred::PlockWake(w, result)),
                    Some(PlockWait::Callback(f)) => deferred.push(Deferred::PlockCall(f, result)),
                    None => {}
                },
                Action::Bast { id, mode } => {
                    self.counters[k].blocking_callbacks.inc();
                    if let Some(call) = sh.cbs.get(&id).and_then(|cb| cb.bast(id, mode)) {
                        deferred.push(call);
                    }
                }
                Action::RecoverPrep => self.recover_event(k, RecoverEvent::Prep, deferred),
                Action::RecoverSlot { node, slot } => {
                    self.recover_event(k, RecoverEvent::Slot(node, slot), deferred)
                }
                Action::RecoverDone { gen, slots } => {
                    let ours = sh.node.slot();
                    self.recover_event(k, RecoverEvent::Done(gen, slots, ours), deferred)
                }
            }
        }
    }

    /// Queues a recovery event for the ops, from shard 0 only (every shard
    /// recovers; shard 0's slots are the lockspace's).
    fn recover_event(&self, k: usize, ev: RecoverEvent, deferred: &mut Vec<Deferred>) {
        if let (0, Some(ops)) = (k, &self.ops) {
            deferred.push(Deferred::Recover(ops.clone(), ev));
        }
    }

    fn run_deferred(deferred: Vec<Deferred>) {
        for d in deferred {
            match d {
                Deferred::Ast(f, c) => run_callback(move || f(c)),
                Deferred::Bast(f, id, m) => run_callback(move || f(id, m)),
                Deferred::Completed(h, arg, c) => run_callback(move || h.completed(arg, c)),
                Deferred::Blocking(h, arg, id, m) => run_callback(move || h.blocking(arg, id, m)),
                Deferred::Wake(w, c) => w.complete(c),
                Deferred::PlockWake(w, r) => w.complete(r),
                Deferred::PlockCall(f, r) => run_callback(move || f(r)),
                Deferred::Recover(ops, ev) => run_callback(move || match ev {
                    RecoverEvent::Prep => ops.recover_prep(),
                    RecoverEvent::Slot(n, s) => ops.recover_slot(n, s),
                    RecoverEvent::Done(gen, slots, ours) => ops.recover_done(gen, &slots, ours),
                }),
            }
        }
    }

    /// [`LsInner::with_shard`] for a public call: then waits for room in
    /// the queues of peers that do not keep up ([`throttle`]).
    fn call<R>(&self, k: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        let r = self.with_shard(k, f);
        throttle();
        r
    }

    /// Runs `f` on shard `k`, executes its actions, runs callbacks.
    /// Sweeps the shard's unused resources when it is time.
    fn with_shard<R>(&self, k: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut deferred = Vec::new();
        let r = {
            let mut g = self.shards[k].lock();
            let r = f(&mut g);
            Self::sweep_if_due(&mut g, SWEEP_EVERY);
            if !g.out.is_empty() {
                self.run_actions(k, &mut g, &mut deferred);
            }
            r
        };
        if !deferred.is_empty() {
            Self::run_deferred(deferred);
        }
        r
    }

    /// Sweeps shard `sh` if its last sweep is more than `every` ago.
    fn sweep_if_due(sh: &mut Shard, every: Duration) {
        let now = coarse_clock();
        if now.saturating_sub(sh.last_sweep) >= every {
            sh.node.sweep(&mut sh.out);
            sh.last_sweep = now;
        }
    }

    fn count_grant(&self, k: usize, status: Status) {
        if let Status::Granted(_) = status {
            self.counters[k].grants.inc();
        }
    }

    /// See [`Lockspace::purge_orphans`].
    pub(crate) fn purge_orphans(&self, node: NodeId) {
        for k in 0..self.shards.len() {
            self.call(k, |sh| sh.node.purge_orphans(node, &mut sh.out));
        }
    }

    pub(crate) fn receive(&self, from: NodeId, shard: usize, env: Envelope) {
        if shard >= self.shards.len() {
            tracing::warn!(%from, shard, "frame for a shard that does not exist");
            return;
        }
        if let Msg::Request { .. } | Msg::Convert { .. } = env.msg {
            self.counters[shard].remote_requests.inc();
        }
        self.with_shard(shard, |sh| sh.node.receive(from, env, &mut sh.out));
    }

    /// A membership event, on the membership source's thread: recovery's
    /// messages are paced by the peers' back-pressure like a caller's.
    pub(crate) fn membership(&self, ev: &MembershipEvent) {
        for k in 0..self.shards.len() {
            self.call(k, |sh| match ev {
                MembershipEvent::View { gen, members } => {
                    sh.node.set_members(*gen, members, &mut sh.out)
                }
                MembershipEvent::Fenced(n) => sh.node.fenced(*n, &mut sh.out),
            });
        }
    }

    /// Starts an operation; unless it completed at once, registers a
    /// waiter (blocking form) and waits for its completion; then waits
    /// for room in the queues of peers that do not keep up ([`throttle`]).
    fn blocking(
        &self,
        k: usize,
        start: impl FnOnce(
            &mut Node,
            &mut Vec<Action>,
        ) -> Result<(LockId, Option<Immediate>), NodeError>,
    ) -> Result<Completion, DlmError> {
        let r = self.blocking_inner(k, start);
        throttle();
        r
    }

    fn blocking_inner(
        &self,
        k: usize,
        start: impl FnOnce(
            &mut Node,
            &mut Vec<Action>,
        ) -> Result<(LockId, Option<Immediate>), NodeError>,
    ) -> Result<Completion, DlmError> {
        let mut deferred = Vec::new();
        let (w, lead) = {
            let mut g = self.shards[k].lock();
            let sh = &mut *g;
            let (id, now) = start(&mut sh.node, &mut sh.out).map_err(node_err)?;
            match now {
                // Fast path: completed at once and nobody else wants to
                // hear of it (no callbacks registered at all is the usual
                // case for the blocking API: no map lookup then).
                Some(c)
                    if sh.cbs.is_empty()
                        || sh
                            .cbs
                            .get(&id)
                            .is_none_or(|cb| !cb.has_ast() && cb.waiters.is_empty()) =>
                {
                    if !sh.cbs.is_empty() && sh.node.lock_info(id).is_none() {
                        sh.cbs.remove(&id);
                    }
                    if !sh.out.is_empty() {
                        self.run_actions(k, sh, &mut deferred);
                    }
                    drop(g);
                    if !deferred.is_empty() {
                        Self::run_deferred(deferred);
                    }
                    self.count_grant(k, c.status);
                    return status_result(completion(id, c));
                }
                // Someone else waits too, or an ast is registered: deliver
                // it as the slow path does.
                Some(c) => sh.out.push(Action::Ast {
                    id,
                    status: c.status,
                    sbflags: c.sbflags,
                    lvb: c.lvb,
                }),
                None => {}
            }
            let w = Arc::new(Waiter::default());
            sh.cbs.entry(id).or_default().waiters.push(w.clone());
            // Before the request goes out, so its answer cannot wake the
            // connection's reader thread instead of this caller.
            let lead = answer_from(&sh.node, id).and_then(|n| self.transport.lead(n));
            Self::sweep_if_due(sh, SWEEP_EVERY);
            self.run_actions(k, sh, &mut deferred);
            (w, lead)
        };
        Self::run_deferred(deferred);
        status_result(match lead {
            Some(lead) => w.wait_leading(lead),
            None => w.spin_wait(),
        })
    }
}

/// The node whose message will complete lock `id`'s pending operation, if
/// not this one: the master it was sent to, else the directory node asked
/// for the master.
fn answer_from(node: &Node, id: LockId) -> Option<NodeId> {
    let l = node.lock_info(id)?;
    let from = l.master.or_else(|| node.dir_node(&l.name))?;
    (from != node.id()).then_some(from)
}

/// How often a shard's unused resources are swept; a resource is freed
/// after one to two of these without locks (the kernel's `toss_secs` is 10).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The monotonic clock to the kernel's tick (a few milliseconds), read
/// without asking the time source: every lockspace call looks whether a
/// sweep is due, and a sweep every few seconds needs no finer clock.
fn coarse_clock() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(r, 0, "CLOCK_MONOTONIC_COARSE");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn completion(id: LockId, c: Immediate) -> Completion {
    Completion {
        id,
        status: c.status,
        sbflags: c.sbflags,
        lvb: c.lvb,
    }
}

fn res_name(name: &[u8]) -> Result<ResName, DlmError> {
    ResName::new(name).ok_or(DlmError::Invalid)
}

impl Lockspace {
    /// The lockspace name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Takes a lock on `name` in `mode`, waiting until it is granted.
    /// Fails with [`DlmError::Again`] for a NOQUEUE request that cannot be
    /// granted at once.
    pub fn lock(&self, name: &[u8], mode: Mode, flags: Flags) -> Result<LockId, DlmError> {
        let name = res_name(name)?;
        let k = self.inner.shard_of_name(&name);
        self.inner.counters[k].local_requests.inc();
        // Ids carry a generation and a gone lock's callbacks go with it,
        // so a new id has none registered.
        if let Some(id) = self.inner.shards[k]
            .lock()
            .node
            .try_lock_here(&name, mode, flags)
        {
            self.inner.counters[k].grants.inc();
            return Ok(id);
        }
        self.lock_in(k, name, mode, flags, None).map(|(id, _)| id)
    }

    /// Like [`Lockspace::lock`]; with VALBLK, returns the value block.
    pub fn lock_lvb(
        &self,
        name: &[u8],
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
    ) -> Result<(LockId, Completion), DlmError> {
        let name = res_name(name)?;
        let k = self.inner.shard_of_name(&name);
        self.inner.counters[k].local_requests.inc();
        self.lock_in(k, name, mode, flags, lvb)
    }

    /// [`Lockspace::lock_lvb`] on shard `k` of `name`.
    fn lock_in(
        &self,
        k: usize,
        name: ResName,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
    ) -> Result<(LockId, Completion), DlmError> {
        let c = self
            .inner
            .blocking(k, |n, out| n.lock_now(name, mode, flags, lvb, out))?;
        if c.status == Status::Unlocked {
            // Force-unlocked by another thread before it was granted.
            return Err(DlmError::Canceled);
        }
        Ok((c.id, c))
    }

    /// Converts granted lock `id` to `mode`, waiting for the result. With
    /// VALBLK, `lvb` is written back on a down-conversion from PW/EX and the
    /// value block is returned on an up-conversion.
    pub fn convert(
        &self,
        id: LockId,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
    ) -> Result<Completion, DlmError> {
        let k = self.inner.shard_of_id(id);
        self.inner.counters[k].local_requests.inc();
        let c = self.inner.blocking(k, |n, out| {
            n.convert_now(id, mode, flags, lvb, out).map(|c| (id, c))
        })?;
        if c.status == Status::Unlocked {
            // Force-unlocked by another thread while converting.
            return Err(DlmError::Canceled);
        }
        Ok(c)
    }

    /// Unlocks `id`, waiting for the master to confirm. With VALBLK, `lvb` is
    /// written back when releasing PW/EX.
    pub fn unlock(&self, id: LockId, flags: Flags, lvb: Option<Lvb>) -> Result<(), DlmError> {
        let k = self.inner.shard_of_id(id);
        self.inner.counters[k].unlocks.inc();
        {
            let mut g = self.inner.shards[k].lock();
            // A lock with callbacks hears of its unlock: not this path.
            if (g.cbs.is_empty() || !g.cbs.contains_key(&id))
                && g.node.try_unlock_here(id, flags, lvb)
            {
                return Ok(());
            }
        }
        self.inner
            .blocking(k, |n, out| {
                n.unlock_now(id, flags, lvb, out).map(|c| (id, c))
            })
            .map(|_| ())
    }

    /// Requests a lock; `ast` runs on completion (and on every later
    /// completion of this lock: conversions, unlock), `bast` when another
    /// request is blocked by it. Returns at once.
    pub fn lock_async(
        &self,
        name: &[u8],
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        ast: AstFn,
        bast: Option<BastFn>,
    ) -> Result<LockId, DlmError> {
        let name = res_name(name)?;
        let k = self.inner.shard_of_name(&name);
        self.inner.counters[k].local_requests.inc();
        self.inner.call(k, |sh| {
            let id = sh
                .node
                .lock(name, mode, flags, lvb, &mut sh.out)
                .map_err(node_err)?;
            let calls = Calls::Fns {
                ast: Some(ast),
                bast,
            };
            sh.cbs.insert(id, LockCb::of(calls));
            Ok(id)
        })
    }

    /// [`Lockspace::lock_async`], except that an answer given at once (a
    /// resource mastered here) is returned instead of passed to `ast`,
    /// which hears only of what comes later (conversions, the unlock).
    /// The caller is spared the callback's hand-over.
    pub fn lock_async_now(
        &self,
        name: &[u8],
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        ast: AstFn,
        bast: Option<BastFn>,
    ) -> Result<(LockId, Option<Completion>), DlmError> {
        self.lock_now_calls(name, mode, flags, lvb, || Calls::Fns {
            ast: Some(ast),
            bast,
        })
    }

    /// [`Lockspace::lock_async_now`] with a shared `handler`, told `arg`,
    /// in place of two closures made for this lock.
    pub fn lock_async_with(
        &self,
        name: &[u8],
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        handler: &Arc<dyn LockHandler>,
        arg: u128,
    ) -> Result<(LockId, Option<Completion>), DlmError> {
        self.lock_now_calls(name, mode, flags, lvb, || {
            Calls::Handler(handler.clone(), arg)
        })
    }

    /// Takes a new lock on `name` if the DLM grants it on the spot, the
    /// resource being mastered here (or known to nobody, its directory
    /// here) with nothing converting or waiting, compatible holders, and
    /// no value block or flag that changes the rules: the lock
    /// [`Lockspace::lock_async_with`] would make, with no message sent, no
    /// callback run and no wait for room on a link, so that the caller
    /// may hold its own locks. `None`, with nothing done, otherwise.
    pub fn try_lock_here_with(
        &self,
        name: &[u8],
        mode: Mode,
        flags: Flags,
        handler: &Arc<dyn LockHandler>,
        arg: u128,
    ) -> Result<Option<LockId>, DlmError> {
        let name = res_name(name)?;
        let k = self.inner.shard_of_name(&name);
        let mut g = self.inner.shards[k].lock();
        let Some(id) = g.node.try_lock_here(&name, mode, flags) else {
            return Ok(None);
        };
        g.cbs
            .insert(id, LockCb::of(Calls::Handler(handler.clone(), arg)));
        drop(g);
        self.inner.counters[k].local_requests.inc();
        self.inner.counters[k].grants.inc();
        Ok(Some(id))
    }

    /// Requests a lock; `calls` (made only if the lock outlives the call)
    /// hear of what comes after the answer returned.
    fn lock_now_calls(
        &self,
        name: &[u8],
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        calls: impl FnOnce() -> Calls,
    ) -> Result<(LockId, Option<Completion>), DlmError> {
        let name = res_name(name)?;
        let k = self.inner.shard_of_name(&name);
        self.inner.counters[k].local_requests.inc();
        self.inner.call(k, |sh| {
            let (id, now) = sh
                .node
                .lock_now(name, mode, flags, lvb, &mut sh.out)
                .map_err(node_err)?;
            let now = now.map(|c| Completion {
                id,
                status: c.status,
                sbflags: c.sbflags,
                lvb: c.lvb,
            });
            if let Some(c) = &now {
                self.inner.count_grant(k, c.status);
            }
            // A request refused at once leaves no lock to call back.
            if now.is_none() || sh.node.lock_info(id).is_some() {
                sh.cbs.insert(id, LockCb::of(calls()));
            }
            Ok((id, now))
        })
    }

    /// Starts a conversion; the lock's `ast` reports the result.
    pub fn convert_async(
        &self,
        id: LockId,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
    ) -> Result<(), DlmError> {
        let k = self.inner.shard_of_id(id);
        self.inner.counters[k].local_requests.inc();
        self.inner.call(k, |sh| {
            sh.node
                .convert(id, mode, flags, lvb, &mut sh.out)
                .map_err(node_err)
        })
    }

    /// Starts an unlock; the lock's `ast` reports [`Status::Unlocked`].
    pub fn unlock_async(&self, id: LockId, flags: Flags, lvb: Option<Lvb>) -> Result<(), DlmError> {
        let k = self.inner.shard_of_id(id);
        self.inner.counters[k].unlocks.inc();
        self.inner.call(k, |sh| {
            sh.node
                .unlock(id, flags, lvb, &mut sh.out)
                .map_err(node_err)
        })
    }

    /// Cancels the pending request or conversion of `id`. The pending call
    /// completes with [`DlmError::Canceled`] (or succeeds if the grant won).
    pub fn cancel(&self, id: LockId) -> Result<(), DlmError> {
        let k = self.inner.shard_of_id(id);
        self.inner
            .call(k, |sh| sh.node.cancel(id, &mut sh.out).map_err(node_err))
    }

    /// Sweeps unused resources now (normally done every few seconds in
    /// passing): run twice, it frees every resource without locks.
    pub fn sweep_now(&self) {
        for k in 0..self.inner.shards.len() {
            self.inner
                .call(k, |sh| LsInner::sweep_if_due(sh, Duration::ZERO));
        }
    }

    /// Number of resources this node keeps (master copies and cached
    /// entries), over all shards.
    pub fn resource_count(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().node.resources().count())
            .sum()
    }

    /// Drops the orphans of dead node `node` (PERSISTENT locks nobody
    /// adopted) on every master, granting what they blocked: what a
    /// restarted node does after adopting what it wants back, or what an
    /// administrator does for a node gone for good (the kernel's
    /// `dlm_ls_purge`).
    pub fn purge_orphans(&self, node: NodeId) {
        self.inner.purge_orphans(node);
    }

    /// Sets or replaces the blocking callback of `id`; refused for a lock
    /// with a handler ([`Lockspace::lock_async_with`]).
    pub fn set_bast(&self, id: LockId, bast: BastFn) -> Result<(), DlmError> {
        let k = self.inner.shard_of_id(id);
        self.inner.with_shard(k, |sh| {
            if sh.node.lock_info(id).is_none() {
                return Err(DlmError::NoLock);
            }
            match &mut sh.cbs.entry(id).or_default().calls {
                Calls::Fns { bast: b, .. } => {
                    *b = Some(bast);
                    Ok(())
                }
                // A lock with a handler has its blocking callback there.
                Calls::Handler(..) => Err(DlmError::Invalid),
            }
        })
    }

    /// Starts a plock operation on shard 0 (which carries the lockspace's
    /// plocks); `wait` hears of its result.
    fn plock_start(
        &self,
        fam: Family,
        file: u64,
        owner: u64,
        op: PlockOp,
        wait: PlockWait,
    ) -> Result<(PlockReq, Option<Lead>), DlmError> {
        let mut deferred = Vec::new();
        let blocking = matches!(wait, PlockWait::Blocking(_));
        self.inner.counters[0].plock_requests.inc();
        let (req, lead) = {
            let mut g = self.inner.shards[0].lock();
            let sh = &mut *g;
            let req = sh
                .node
                .plock(fam, file, owner, op, &mut sh.out)
                .map_err(node_err)?;
            sh.plock_waiters.insert(req, wait);
            // A blocked caller reads the plock master's answer itself (see
            // `LsInner::blocking`).
            let lead = sh
                .node
                .plock_master()
                .filter(|m| blocking && *m != sh.node.id())
                .and_then(|m| self.inner.transport.lead(m));
            self.inner.run_actions(0, sh, &mut deferred);
            (req, lead)
        };
        LsInner::run_deferred(deferred);
        if !blocking {
            throttle();
        }
        Ok((PlockReq(req), lead))
    }

    /// Runs a plock operation and waits for its result.
    fn plock_op(
        &self,
        fam: Family,
        file: u64,
        owner: u64,
        op: PlockOp,
    ) -> Result<PlockReply, DlmError> {
        let w = Arc::new(Waiter::default());
        let (_, lead) = self.plock_start(fam, file, owner, op, PlockWait::Blocking(w.clone()))?;
        let r = match lead {
            Some(lead) => w.wait_leading(lead),
            // No spin: a plock wait may last as long as a conflicting lock.
            None => w.wait(),
        };
        throttle();
        Ok(r)
    }

    /// fcntl F_SETLK (`wait` false: [`DlmError::Again`] on conflict) or
    /// F_SETLKW (`wait` true: waits; [`DlmError::Deadlock`] for EDEADLK) on
    /// bytes `start..=end` of `file`, for process `owner` of this node.
    pub fn plock(
        &self,
        file: u64,
        owner: u64,
        kind: Kind,
        start: u64,
        end: u64,
        wait: bool,
    ) -> Result<(), DlmError> {
        self.plock_op(Family::Posix, file, owner, lock_op(kind, start, end, wait))
            .and_then(lock_result)
    }

    /// [`Lockspace::plock`] without waiting: `done` gets the result (on
    /// the thread that learns it). A waiting request can be withdrawn
    /// with [`Lockspace::plock_cancel`] (a signal interrupting F_SETLKW).
    #[allow(clippy::too_many_arguments)]
    pub fn plock_async(
        &self,
        file: u64,
        owner: u64,
        kind: Kind,
        start: u64,
        end: u64,
        wait: bool,
        done: PlockFn,
    ) -> Result<PlockReq, DlmError> {
        let op = lock_op(kind, start, end, wait);
        self.plock_start(Family::Posix, file, owner, op, callback(done))
            .map(|(req, _)| req)
    }

    /// [`Lockspace::flock`] without waiting: `done` gets the result.
    pub fn flock_async(
        &self,
        file: u64,
        owner: u64,
        kind: Kind,
        wait: bool,
        done: PlockFn,
    ) -> Result<PlockReq, DlmError> {
        let op = lock_op(kind, 0, u64::MAX, wait);
        self.plock_start(Family::Flock, file, owner, op, callback(done))
            .map(|(req, _)| req)
    }

    /// Withdraws a waiting request of [`Lockspace::plock_async`] or
    /// [`Lockspace::flock_async`]: its callback gets
    /// [`DlmError::Canceled`], unless the lock was granted first.
    pub fn plock_cancel(&self, req: PlockReq) -> Result<(), DlmError> {
        self.inner.call(0, |sh| {
            sh.node.plock_cancel(req.0, &mut sh.out).map_err(node_err)
        })
    }

    /// fcntl F_UNLCK of bytes `start..=end`.
    pub fn punlock(&self, file: u64, owner: u64, start: u64, end: u64) -> Result<(), DlmError> {
        self.plock_op(Family::Posix, file, owner, PlockOp::Unlock { start, end })
            .map(|_| ())
    }

    /// fcntl F_GETLK: the lock that would block, if any.
    pub fn pget(
        &self,
        file: u64,
        owner: u64,
        kind: Kind,
        start: u64,
        end: u64,
    ) -> Result<Option<Plock>, DlmError> {
        match self.plock_op(
            Family::Posix,
            file,
            owner,
            PlockOp::Get { kind, start, end },
        )? {
            PlockReply::Conflict(p) => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    /// Drops every POSIX lock of `owner` on `file` (close).
    pub fn pclose(&self, file: u64, owner: u64) -> Result<(), DlmError> {
        self.plock_op(Family::Posix, file, owner, PlockOp::Close)
            .map(|_| ())
    }

    /// flock LOCK_SH/LOCK_EX (`wait` false: LOCK_NB) of `file` for open file `owner`.
    pub fn flock(&self, file: u64, owner: u64, kind: Kind, wait: bool) -> Result<(), DlmError> {
        self.plock_op(Family::Flock, file, owner, lock_op(kind, 0, u64::MAX, wait))
            .and_then(lock_result)
    }

    /// flock LOCK_UN: drops the open file's flock; a request of the same
    /// open file still waiting (another thread's) goes on waiting, as on
    /// Linux.
    pub fn funlock(&self, file: u64, owner: u64) -> Result<(), DlmError> {
        self.plock_op(
            Family::Flock,
            file,
            owner,
            PlockOp::Unlock {
                start: 0,
                end: u64::MAX,
            },
        )
        .map(|_| ())
    }

    /// The open file's last close: drops its flock and answers its own
    /// waiting requests [`DlmError::Canceled`].
    pub fn fclose(&self, file: u64, owner: u64) -> Result<(), DlmError> {
        self.plock_op(Family::Flock, file, owner, PlockOp::Close)
            .map(|_| ())
    }

    /// True when every shard has finished recovery and runs.
    pub fn is_running(&self) -> bool {
        self.inner
            .shards
            .iter()
            .all(|s| s.lock().node.phase() == crate::node::Phase::Running)
    }

    /// The current membership generation.
    pub fn generation(&self) -> u64 {
        self.inner.shards[0].lock().node.generation()
    }

    /// This node's slot in the lockspace (0 until the first recovery
    /// assigned one); a cluster filesystem's journal id is `slot - 1`.
    pub fn slot(&self) -> u32 {
        self.inner.shards[0].lock().node.slot()
    }

    /// Every member's slot, as agreed at the last recovery.
    pub fn slots(&self) -> Vec<(NodeId, u32)> {
        self.inner.shards[0].lock().node.slots()
    }
}
