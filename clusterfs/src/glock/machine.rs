//! One glock: its state, its holders, a pending demote and the transition
//! in flight. `GlockCore::run` is the kernel's `run_queue`: every event
//! ends in it, and it either grants holders from the cache, starts one
//! transition, or waits.

use super::mode::ModeSet;
use super::{Action, DlmFailure, DlmMode, GlockName, GlockState, GlockType, HolderFlags, HolderId};
use smallvec::SmallVec;

/// One local request for a glock, granted or waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The number of its id ([`HolderId::seq`]; the glock is the rest).
    pub seq: u64,
    /// The state it needs (never UN).
    pub mode: GlockState,
    /// Its flags.
    pub flags: HolderFlags,
    /// True once [`Action::Grant`] was emitted for it.
    pub granted: bool,
}

/// A DLM request in flight (between [`Action::DlmRequest`] and the DLM's
/// answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state when it started.
    pub from: GlockState,
    /// The state asked for.
    pub to: GlockState,
    /// Asked with NOQUEUE.
    pub try_lock: bool,
}

/// Why the glock should go down.
#[derive(Clone, Copy, Debug, Default)]
struct DemoteRequest {
    /// The DLM modes other nodes wait for (from blocking callbacks).
    remote: ModeSet,
    /// The remote demote waits for the minimum hold time until then.
    delayed_until_ms: Option<u64>,
    /// A local reason to go to UN now: a nocache release, a drop, or a
    /// conversion deadlock to break.
    local: bool,
}

/// The state machine of one glock. Read-only from outside the module: the
/// [`super::GlockTable`] feeds it events.
#[derive(Clone, Debug)]
pub struct GlockCore {
    name: GlockName,
    state: GlockState,
    in_flight: Option<Transition>,
    /// FIFO; the granted holders are always a prefix.
    holders: SmallVec<[Holder; 2]>,
    demote: DemoteRequest,
    changed_at_ms: u64,
    min_hold_ms: u64,
    /// The DLM has a lock for it (some grant arrived), so forgetting it
    /// means an unlock.
    has_dlm_lock: bool,
    /// The table's mark while the glock is cached and nobody holds it:
    /// when it became so (see `GlockTable`'s bound on unused glocks).
    pub(super) unused_since: Option<u64>,
    /// The table's mark while the glock is idle and keeps its DLM lock:
    /// its place among the idle ones.
    pub(super) idle_since: Option<u64>,
    /// The due time of the glock's entry in the table's timers.
    pub(super) timer_due: Option<u64>,
}

impl GlockCore {
    pub(super) fn new(name: GlockName, min_hold_ms: u64, now_ms: u64) -> Self {
        GlockCore {
            name,
            state: GlockState::Un,
            in_flight: None,
            holders: SmallVec::new(),
            demote: DemoteRequest::default(),
            changed_at_ms: now_ms,
            min_hold_ms,
            has_dlm_lock: false,
            unused_since: None,
            idle_since: None,
            timer_due: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> GlockName {
        self.name
    }

    /// The id of one of its holders.
    pub fn id_of(&self, holder: &Holder) -> HolderId {
        HolderId {
            seq: holder.seq,
            name: self.name,
        }
    }

    /// Its current state (the last one the DLM granted).
    pub fn state(&self) -> GlockState {
        self.state
    }

    /// The transition in flight, if any.
    pub fn in_flight(&self) -> Option<Transition> {
        self.in_flight
    }

    /// Its holders, granted ones first, in queue order.
    pub fn holders(&self) -> impl Iterator<Item = &Holder> {
        self.holders.iter()
    }

    /// True while a demote is asked for (remote or local), delayed or not.
    pub fn demote_pending(&self) -> bool {
        !self.demote.remote.is_empty() || self.demote.local
    }

    /// True while a local drop to UN is asked for (a nocache release,
    /// `drop_cached`, the bound on unused glocks, unmount): exempt from
    /// the minimum hold time.
    pub fn dropping(&self) -> bool {
        self.demote.local
    }

    /// When the state last changed (the last DLM grant).
    pub fn changed_at_ms(&self) -> u64 {
        self.changed_at_ms
    }

    /// When a delayed demote becomes due, if one waits for the minimum
    /// hold time.
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.demote.delayed_until_ms
    }

    /// Nothing left to remember: UN, no holder, nothing in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.state == GlockState::Un && self.holders.is_empty() && self.in_flight.is_none()
    }

    /// True if the DLM holds a lock for this glock (forgetting it must
    /// unlock).
    pub(super) fn has_dlm_lock(&self) -> bool {
        self.has_dlm_lock
    }

    /// A new local request joins the queue.
    pub(super) fn enqueue(
        &mut self,
        id: HolderId,
        mode: GlockState,
        flags: HolderFlags,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        assert_ne!(
            mode,
            GlockState::Un,
            "{}: a holder must ask for SH, DF or EX",
            self.name
        );
        let holder = Holder {
            seq: id.seq,
            mode,
            flags,
            granted: false,
        };
        self.holders.push(holder);
        self.run(now_ms, out);
    }

    /// Whether a new holder for `mode` would be granted from the cache by
    /// [`Self::enqueue`] with nothing else to do: no transition in flight,
    /// no demote asked for, nobody waiting, and `mode` covered by the
    /// state and compatible with the granted holders.
    pub(super) fn grants_at_once(&self, mode: GlockState) -> bool {
        self.in_flight.is_none()
            && !self.demote_pending()
            && self.holders.iter().all(|h| h.granted)
            && self.may_grant(mode)
    }

    /// Releases holder `id` if that changes nothing but the queue: it is
    /// granted, nobody waits, nothing is in flight, no demote is asked
    /// for or timed, and it is not a `nocache` holder (whose going may
    /// drop the glock); `run` would then do nothing. Unless
    /// `keep_others`: then only while other holders stay. `Some(true)`
    /// if the queue is empty now, `None` (nothing changed) if the full
    /// release is needed.
    pub(super) fn release_at_once(&mut self, id: HolderId, keep_others: bool) -> Option<bool> {
        if self.in_flight.is_some()
            || self.demote_pending()
            || self.demote.delayed_until_ms.is_some()
            || self.timer_due.is_some()
            || (keep_others && self.holders.len() < 2)
        {
            return None;
        }
        let mut at = None;
        for (i, h) in self.holders.iter().enumerate() {
            if !h.granted {
                return None;
            }
            if h.seq == id.seq {
                at = Some(i);
            }
        }
        let at = at?;
        if self.holders[at].flags.nocache {
            return None;
        }
        self.holders.remove(at);
        Some(self.holders.is_empty())
    }

    /// Queues a holder that [`Self::grants_at_once`] says is granted.
    pub(super) fn push_granted(&mut self, id: HolderId, mode: GlockState, flags: HolderFlags) {
        debug_assert!(self.grants_at_once(mode));
        self.holders.push(Holder {
            seq: id.seq,
            mode,
            flags,
            granted: true,
        });
    }

    /// A holder leaves (released if granted, cancelled if waiting).
    /// Returns false if it is not queued here.
    pub(super) fn dequeue(&mut self, id: HolderId, now_ms: u64, out: &mut Vec<Action>) -> bool {
        let Some(at) = self.holders.iter().position(|h| h.seq == id.seq) else {
            return false;
        };
        let holder = self.holders.remove(at);
        if holder.flags.nocache && self.holders.is_empty() {
            self.demote.local = true;
        }
        self.run(now_ms, out);
        true
    }

    /// Another node waits for `requested` (a blocking AST).
    pub(super) fn blocking_callback(
        &mut self,
        requested: DlmMode,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if self.demote.remote.is_empty() {
            // As the kernel's `gfs2_glock_cb`: the hold time protects the
            // holders queued now; a glock nobody holds or waits for goes
            // at once.
            self.demote.delayed_until_ms = match self.holders.is_empty() {
                true => None,
                false => self.hold_deadline_ms().filter(|&due| due > now_ms),
            };
        }
        self.demote.remote.insert(requested);
        self.run(now_ms, out);
    }

    /// The DLM granted the request in flight (in `granted`).
    pub(super) fn dlm_granted(&mut self, granted: DlmMode, now_ms: u64, out: &mut Vec<Action>) {
        let transition = self.in_flight.take();
        assert!(
            transition.is_some(),
            "{}: a grant with no request in flight",
            self.name
        );
        self.state = GlockState::from_dlm(granted);
        self.changed_at_ms = now_ms;
        self.has_dlm_lock = true;
        if !self.demote.remote.is_empty() {
            self.demote.delayed_until_ms = self.hold_deadline_ms();
        }
        // Whoever waited for this state gets it, even if a demote is due:
        // without this, two nodes could trade a glock forever without
        // either using it.
        self.grant_waiters(out);
        self.run(now_ms, out);
    }

    /// The DLM refused the request in flight; the state stays.
    pub(super) fn dlm_failed(&mut self, why: DlmFailure, now_ms: u64, out: &mut Vec<Action>) {
        let transition = self.in_flight.take();
        assert!(
            transition.is_some(),
            "{}: a failure with no request in flight",
            self.name
        );
        match why {
            DlmFailure::TryFailed => self.fail_waiters(|h| h.flags.try_lock, out),
            DlmFailure::Deadlock => self.demote.local = true,
            DlmFailure::Error => self.fail_waiters(|_| true, out),
        }
        self.run(now_ms, out);
    }

    /// Go to UN as soon as the holders are gone (unmount, or a shrinker).
    pub(super) fn drop_cache(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        self.demote.local = true;
        self.run(now_ms, out);
    }

    /// Time passed: a delayed demote may be due.
    pub(super) fn tick(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        self.run(now_ms, out);
    }

    /// The kernel's `run_queue`: grant from the cache, or start the one
    /// transition that is needed, or wait.
    fn run(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        self.expire_delay(now_ms);
        if self.in_flight.is_some() {
            return;
        }
        self.forget_satisfied_demote();
        if self.demote_due() {
            let target = self.demote_target();
            if !self.any_granted() || self.granted_fit_in(target) {
                dlm::metrics::GLOCK_DEMOTES.inc();
                self.start(target, false, out);
            }
            return;
        }
        self.grant_waiters(out);
        self.promote_if_needed(out);
    }

    fn expire_delay(&mut self, now_ms: u64) {
        if self
            .demote
            .delayed_until_ms
            .is_some_and(|due| due <= now_ms)
        {
            self.demote.delayed_until_ms = None;
        }
    }

    /// Only inode glocks honour the minimum hold time, as in the kernel.
    fn hold_deadline_ms(&self) -> Option<u64> {
        let holds = self.name.kind == GlockType::Inode && self.min_hold_ms > 0;
        holds.then(|| self.changed_at_ms.saturating_add(self.min_hold_ms))
    }

    fn forget_satisfied_demote(&mut self) {
        if self.state == GlockState::Un {
            self.demote.local = false;
        }
        if self.state.demote_target(self.demote.remote) == self.state {
            self.demote = DemoteRequest {
                local: self.demote.local,
                ..DemoteRequest::default()
            };
        }
    }

    /// A demote that may start now (once the holders are gone).
    fn demote_due(&self) -> bool {
        let remote_due = !self.demote.remote.is_empty() && self.demote.delayed_until_ms.is_none();
        self.demote.local || remote_due
    }

    fn demote_target(&self) -> GlockState {
        if self.demote.local {
            GlockState::Un
        } else {
            self.state.demote_target(self.demote.remote)
        }
    }

    /// Whether every granted holder may go on in `target` (a demote from
    /// EX to SH while only SH holders are granted: it need not wait for
    /// them, and must not, since they may stay for as long as a file is
    /// open while another node waits for SH).
    fn granted_fit_in(&self, target: GlockState) -> bool {
        target != GlockState::Un
            && self
                .holders
                .iter()
                .take_while(|h| h.granted)
                .all(|h| target.covers(h.mode))
    }

    fn any_granted(&self) -> bool {
        self.holders.first().is_some_and(|h| h.granted)
    }

    /// Grants waiting holders in queue order while the state covers them
    /// and they are compatible with the granted ones; stops at the first
    /// that cannot be granted, so nobody overtakes a waiting EX.
    fn grant_waiters(&mut self, out: &mut Vec<Action>) {
        for at in 0..self.holders.len() {
            let holder = self.holders[at];
            if holder.granted {
                continue;
            }
            if !self.may_grant(holder.mode) {
                break;
            }
            self.holders[at].granted = true;
            out.push(Action::Grant {
                holder: self.id_of(&holder),
            });
        }
    }

    fn may_grant(&self, mode: GlockState) -> bool {
        let granted = self.holders.iter().take_while(|h| h.granted);
        self.state.covers(mode) && granted.into_iter().all(|h| h.mode.compatible(mode))
    }

    /// With no holder granted, a head that the state does not cover needs
    /// a DLM request for its mode.
    fn promote_if_needed(&mut self, out: &mut Vec<Action>) {
        if self.any_granted() {
            return;
        }
        if let Some(head) = self.holders.first().copied() {
            debug_assert!(!self.state.covers(head.mode));
            self.start(head.mode, head.flags.try_lock, out);
        }
    }

    /// Emits the transition in its fixed order: Sync (leaving EX),
    /// Invalidate (going to UN or DF from a caching state), DlmRequest.
    fn start(&mut self, to: GlockState, try_lock: bool, out: &mut Vec<Action>) {
        let (name, from) = (self.name, self.state);
        assert_ne!(from, to, "{name}: a transition to the same state");
        tracing::debug!(glock = %name, %from, %to, try_lock, "glock transition");
        if from == GlockState::Ex {
            out.push(Action::Sync { name });
        }
        if from.caches() && matches!(to, GlockState::Un | GlockState::Df) {
            let keep_metadata = to == GlockState::Df;
            out.push(Action::Invalidate {
                name,
                keep_metadata,
            });
        }
        out.push(Action::DlmRequest {
            name,
            from,
            to,
            try_lock,
        });
        self.in_flight = Some(Transition { from, to, try_lock });
    }

    /// Fails the waiting holders that `pick` selects and the state does
    /// not cover.
    fn fail_waiters(&mut self, pick: impl Fn(&Holder) -> bool, out: &mut Vec<Action>) {
        let state = self.state;
        self.holders.retain(|h| {
            let fail = !h.granted && !state.covers(h.mode) && pick(h);
            if fail {
                out.push(Action::Failed {
                    holder: HolderId {
                        seq: h.seq,
                        name: self.name,
                    },
                });
            }
            !fail
        });
    }
}
