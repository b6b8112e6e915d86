//! The glocks of one mount, by name, and the API a driver calls.

use super::machine::GlockCore;
use super::{Action, DlmFailure, DlmMode, GlockName, GlockState, GlockType, HolderFlags, HolderId};
use std::collections::BTreeSet;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// Tunables of a [`GlockTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlockConfig {
    /// How long an inode glock is kept after a state change before a
    /// remote demote may take it (the kernel's `gl_hold_time`, HZ/5).
    pub min_hold_ms: u64,
    /// How many idle glocks (UN, nobody queued) keep their DLM lock in NL,
    /// as the kernel keeps unused glocks on its LRU: taking one again is a
    /// conversion, not a new DLM resource. Beyond this many, the longest
    /// idle are forgotten.
    pub idle_kept: usize,
    /// How many glocks nobody holds may stay cached in SH, DF or EX, as
    /// the kernel's shrinker trims its glock LRU. Beyond this many, the
    /// longest unused goes to UN (synced and invalidated first, as any
    /// demote) and is then forgotten: a node that reads or creates and
    /// unlinks files without end does not cache a glock for each of them
    /// for ever.
    pub cached_kept: usize,
}

impl Default for GlockConfig {
    fn default() -> Self {
        GlockConfig {
            min_hold_ms: 200,
            idle_kept: 8192,
            cached_kept: 65_536,
        }
    }
}

/// Every glock this node knows (a holder's id names its glock).
///
/// Each method takes the current time and returns the [`Action`]s to carry
/// out, in order. A glock that falls back to UN with nobody waiting is
/// idle: it keeps its NL DLM lock while it is among the
/// [`GlockConfig::idle_kept`] most recently idle, and is forgotten
/// ([`Action::Forget`]) after that, or at once after [`Self::drop_all`]
/// or [`Self::drop_cached`].
#[derive(Clone, Debug, Default)]
pub struct GlockTable {
    config: GlockConfig,
    glocks: HashMap<GlockName, GlockCore>,
    next_holder: u64,
    /// Glocks with a timer ([`GlockCore::next_tick_ms`]), by due time
    /// (each glock keeps its entry's time, `GlockCore::timer_due`): the
    /// worker asks for the earliest after every event, which must not
    /// cost a walk over every cached glock (a node caches tens of
    /// thousands).
    timers: BTreeSet<(u64, GlockName)>,
    /// Idle glocks that keep their DLM lock, by when they became idle (a
    /// counter; each glock keeps its entry's, `GlockCore::idle_since`).
    idle: BTreeSet<(u64, GlockName)>,
    /// How many cached glocks nobody holds or waits for, with nothing
    /// in flight and no demote pending, each marked with when it became
    /// so (`GlockCore::unused_since`). Taking and letting go of a glock,
    /// the hot path, only sets or clears its mark.
    unused: usize,
    /// The longest unused glocks when last looked for, the longest at the
    /// end: where the bound on unused glocks takes its next one from. An
    /// entry whose glock has been used since (its mark gone or newer) is
    /// stale and skipped. Any glock marked unused and not among them was
    /// marked later than every one of them, so the first entry still
    /// current is the longest unused of all; when none is left, the
    /// glocks are looked through again.
    victims: Vec<(u64, GlockName)>,
    /// The counter that orders both lists.
    idle_seq: u64,
    /// Glocks to forget as soon as they are idle ([`Self::drop_cached`]).
    forgetting: HashSet<GlockName>,
    /// Set by [`Self::drop_all`]: every glock is forgotten once idle.
    dropping_all: bool,
}

impl GlockTable {
    /// An empty table.
    pub fn new(config: GlockConfig) -> Self {
        GlockTable {
            config,
            ..Self::default()
        }
    }

    /// Asks for `name` in `mode` (SH, DF or EX). The holder may proceed
    /// once [`Action::Grant`] names it, possibly in the returned actions.
    pub fn acquire(
        &mut self,
        name: GlockName,
        mode: GlockState,
        flags: HolderFlags,
        now_ms: u64,
    ) -> (HolderId, Vec<Action>) {
        let mut out = Vec::new();
        let id = self.acquire_into(name, mode, flags, now_ms, &mut out);
        (id, out)
    }

    /// [`Self::acquire`], its actions appended to `out`.
    pub fn acquire_into(
        &mut self,
        name: GlockName,
        mode: GlockState,
        flags: HolderFlags,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) -> HolderId {
        let id = next_holder(&mut self.next_holder, name);
        let min_hold_ms = self.config.min_hold_ms;
        let glock = self
            .glocks
            .entry(name)
            .or_insert_with(|| GlockCore::new(name, min_hold_ms, now_ms));
        glock.enqueue(id, mode, flags, now_ms, out);
        self.settle(name, now_ms, out);
        id
    }

    /// [`Self::acquire`] when the glock is cached in a state that grants
    /// `mode` at once (nothing in flight, no demote asked for, nobody
    /// waiting, compatible with the holders): the holder, granted, and no
    /// action to carry out. `None`, with nothing changed, otherwise.
    pub fn acquire_cached(
        &mut self,
        name: GlockName,
        mode: GlockState,
        flags: HolderFlags,
    ) -> Option<HolderId> {
        let glock = self.glocks.get_mut(&name)?;
        if !glock.grants_at_once(mode) {
            return None;
        }
        let id = next_holder(&mut self.next_holder, name);
        glock.push_granted(id, mode, flags);
        if glock.unused_since.take().is_some() {
            self.unused -= 1;
        }
        Some(id)
    }

    /// [`Self::release`] when it only takes the holder off a glock that
    /// stays cached (nobody waits, nothing in flight, no demote asked
    /// for, no cache bound reached): true, and no action to carry out.
    /// False, with nothing changed, otherwise.
    pub fn release_cached(&mut self, holder: HolderId) -> bool {
        let Some(glock) = self.glocks.get_mut(&holder.name) else {
            return false;
        };
        // The last holder of a glock that would exceed the bound on unused
        // glocks goes the full way, which drops the longest unused one.
        let keep_others = self.unused >= self.config.cached_kept;
        match glock.release_at_once(holder, keep_others) {
            None => false,
            Some(now_unused) => {
                if now_unused {
                    mark(glock, true, &mut self.idle_seq, &mut self.unused);
                }
                true
            }
        }
    }

    /// Drops a holder: releases it if granted, cancels it if waiting.
    /// Panics on an unknown holder (a double release is a bug).
    pub fn release(&mut self, holder: HolderId, now_ms: u64) -> Vec<Action> {
        let name = holder.name;
        let known = self
            .glocks
            .get(&name)
            .is_some_and(|g| g.holders().any(|h| g.id_of(h) == holder));
        assert!(known, "{name}: release of an unknown holder {holder:?}");
        self.with_glock(name, now_ms, |glock, out| {
            glock.dequeue(holder, now_ms, out);
        })
    }

    /// A blocking callback (bast): another node waits for `requested` on
    /// `name`. Stale callbacks for forgotten glocks are ignored.
    pub fn blocking_callback(
        &mut self,
        name: GlockName,
        requested: DlmMode,
        now_ms: u64,
    ) -> Vec<Action> {
        if !self.glocks.contains_key(&name) {
            return Vec::new();
        }
        self.with_glock(name, now_ms, |glock, out| {
            glock.blocking_callback(requested, now_ms, out)
        })
    }

    /// The DLM granted the request in flight on `name`, in `granted`.
    pub fn dlm_granted(&mut self, name: GlockName, granted: DlmMode, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.dlm_granted_into(name, granted, now_ms, &mut out);
        out
    }

    /// [`Self::dlm_granted`], its actions appended to `out`.
    pub fn dlm_granted_into(
        &mut self,
        name: GlockName,
        granted: DlmMode,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let glock = self
            .glocks
            .get_mut(&name)
            .unwrap_or_else(|| panic!("{name}: unknown glock"));
        glock.dlm_granted(granted, now_ms, out);
        self.settle(name, now_ms, out);
    }

    /// The DLM refused the request in flight on `name`.
    pub fn dlm_failed(&mut self, name: GlockName, why: DlmFailure, now_ms: u64) -> Vec<Action> {
        self.with_glock(name, now_ms, |glock, out| {
            glock.dlm_failed(why, now_ms, out)
        })
    }

    /// Time passed: starts the demotes whose minimum hold time is over.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut names: Vec<GlockName> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now_ms)
            .map(|(_, name)| *name)
            .collect();
        // By name, so that runs replay identically whatever the hash seed.
        names.sort_unstable();
        self.for_each(names, now_ms, |glock, out| glock.tick(now_ms, out))
    }

    /// The earliest time [`Self::tick`] has work, if any.
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Unmount: every glock goes to UN once its holders are gone, and is
    /// then forgotten.
    pub fn drop_all(&mut self, now_ms: u64) -> Vec<Action> {
        self.dropping_all = true;
        let names = self.sorted_names(|_| true);
        self.for_each(names, now_ms, |glock, out| glock.drop_cache(now_ms, out))
    }

    /// Drops one cached glock to UN once its holders are gone (for a cache
    /// shrinker). Unknown names are ignored.
    pub fn drop_cached(&mut self, name: GlockName, now_ms: u64) -> Vec<Action> {
        if self.glocks.contains_key(&name) {
            self.forgetting.insert(name);
        }
        self.for_each(vec![name], now_ms, |glock, out| {
            glock.drop_cache(now_ms, out)
        })
    }

    /// [`Self::drop_cached`] for every glock of type `kind`; returns
    /// their names too.
    pub fn drop_kind(&mut self, kind: GlockType, now_ms: u64) -> (Vec<GlockName>, Vec<Action>) {
        let names = self.sorted_names(|g| g.name().kind == kind);
        let mut actions = Vec::new();
        for &name in &names {
            actions.extend(self.drop_cached(name, now_ms));
        }
        (names, actions)
    }

    /// How many idle glocks keep their DLM lock.
    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// How many glocks nobody holds stay cached in SH, DF or EX.
    pub fn unused_len(&self) -> usize {
        self.unused
    }

    /// One glock, to inspect.
    pub fn glock(&self, name: &GlockName) -> Option<&GlockCore> {
        self.glocks.get(name)
    }

    /// Every glock, in no particular order.
    pub fn glocks(&self) -> impl Iterator<Item = &GlockCore> {
        self.glocks.values()
    }

    /// The glock a holder is queued on.
    pub fn holder_glock(&self, holder: HolderId) -> Option<GlockName> {
        let glock = self.glocks.get(&holder.name)?;
        glock
            .holders()
            .any(|h| glock.id_of(h) == holder)
            .then_some(holder.name)
    }

    /// How many glocks are known.
    pub fn len(&self) -> usize {
        self.glocks.len()
    }

    /// True when no glock is known.
    pub fn is_empty(&self) -> bool {
        self.glocks.is_empty()
    }

    /// Runs `f` on a glock that must exist, then settles it.
    fn with_glock(
        &mut self,
        name: GlockName,
        now_ms: u64,
        f: impl FnOnce(&mut GlockCore, &mut Vec<Action>),
    ) -> Vec<Action> {
        let glock = self
            .glocks
            .get_mut(&name)
            .unwrap_or_else(|| panic!("{name}: unknown glock"));
        let mut out = Vec::new();
        f(glock, &mut out);
        self.settle(name, now_ms, &mut out);
        out
    }

    /// Runs `f` on each named glock that exists, in the given order.
    fn for_each(
        &mut self,
        names: Vec<GlockName>,
        now_ms: u64,
        mut f: impl FnMut(&mut GlockCore, &mut Vec<Action>),
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for name in names {
            if let Some(glock) = self.glocks.get_mut(&name) {
                f(glock, &mut out);
                self.settle(name, now_ms, &mut out);
            }
        }
        out
    }

    /// Sorted, so that runs replay identically whatever the hash seed.
    fn sorted_names(&self, pick: impl Fn(&GlockCore) -> bool) -> Vec<GlockName> {
        let mut names: Vec<_> = self
            .glocks
            .values()
            .filter(|g| pick(g))
            .map(GlockCore::name)
            .collect();
        names.sort_unstable();
        names
    }

    /// Book-keeping after an event on `name`: an idle glock joins the
    /// idle ones (the longest idle beyond [`GlockConfig::idle_kept`] are
    /// forgotten), or is forgotten at once when it has no DLM lock to keep
    /// or is to be dropped; a cached glock nobody holds joins the unused
    /// ones, and the longest unused beyond [`GlockConfig::cached_kept`]
    /// are dropped. Forgetting appends to `out`.
    fn settle(&mut self, name: GlockName, now_ms: u64, out: &mut Vec<Action>) {
        self.settle_one(name, out);
        while self.unused > self.config.cached_kept {
            let Some((seq, oldest)) = self.victims.pop() else {
                self.find_victims();
                continue;
            };
            let Some(glock) = self.glocks.get_mut(&oldest) else {
                continue; // forgotten since
            };
            if glock.unused_since != Some(seq) {
                continue; // used since
            }
            glock.unused_since = None;
            self.unused -= 1;
            self.forgetting.insert(oldest);
            glock.drop_cache(now_ms, out);
            self.settle_one(oldest, out);
        }
    }

    /// [`Self::settle`] for `name` alone.
    fn settle_one(&mut self, name: GlockName, out: &mut Vec<Action>) {
        // A forgotten glock took its index entries with it.
        let Some(glock) = self.glocks.get_mut(&name) else {
            return;
        };
        let due = glock.next_tick_ms();
        let idle = glock.is_idle();
        let unused = glock.state() != GlockState::Un
            && glock.holders().next().is_none()
            && glock.in_flight().is_none()
            && !glock.demote_pending();
        let has_lock = glock.has_dlm_lock();
        mark(glock, unused, &mut self.idle_seq, &mut self.unused);
        set_timer(&mut self.timers, glock, due.filter(|_| !idle));
        set_idle(&mut self.idle, &mut self.idle_seq, glock, idle && has_lock);
        if !idle {
            return;
        }
        let keep = has_lock
            && self.config.idle_kept > 0
            && !self.dropping_all
            && !self.forgetting.contains(&name);
        if !keep {
            self.forget(name, out);
            return;
        }
        while self.idle.len() > self.config.idle_kept {
            let (_, oldest) = self.idle.pop_first().expect("more idle than kept");
            self.forget(oldest, out);
        }
    }

    /// Removes an idle glock and its index entries; its DLM lock, if any,
    /// is to be unlocked.
    fn forget(&mut self, name: GlockName, out: &mut Vec<Action>) {
        self.forgetting.remove(&name);
        if let Some(glock) = self.glocks.remove(&name) {
            // Only idle glocks (at UN) are forgotten: none is marked unused.
            debug_assert!(glock.unused_since.is_none(), "{name}: forgotten unused");
            if let Some(seq) = glock.idle_since {
                self.idle.remove(&(seq, name));
            }
            if let Some(t) = glock.timer_due {
                self.timers.remove(&(t, name));
            }
            if glock.has_dlm_lock() {
                out.push(Action::Forget { name });
            }
        }
    }

    /// Looks through the glocks for the longest unused ones: an eighth
    /// of the bound (at least 64), so that a node at its bound looks
    /// again only after dropping that many.
    fn find_victims(&mut self) {
        let mut all: Vec<(u64, GlockName)> = self
            .glocks
            .values()
            .filter_map(|g| g.unused_since.map(|seq| (seq, g.name())))
            .collect();
        assert!(
            !all.is_empty(),
            "{} unused glocks, none marked",
            self.unused
        );
        let keep = (self.config.cached_kept / 8).max(64);
        if all.len() > keep {
            all.select_nth_unstable(keep - 1);
            all.truncate(keep);
        }
        // The longest unused last, where `pop` takes it.
        all.sort_unstable_by(|a, b| b.cmp(a));
        self.victims = all;
    }
}

/// A new holder's id on `name`, the next of `seq`.
fn next_holder(seq: &mut u64, name: GlockName) -> HolderId {
    let id = HolderId { seq: *seq, name };
    *seq += 1;
    id
}

/// Keeps the timer index in step with `glock`'s timer.
fn set_timer(timers: &mut BTreeSet<(u64, GlockName)>, glock: &mut GlockCore, due: Option<u64>) {
    let old = std::mem::replace(&mut glock.timer_due, due);
    if old == due {
        return;
    }
    if let Some(t) = old {
        timers.remove(&(t, glock.name()));
    }
    if let Some(t) = due {
        timers.insert((t, glock.name()));
    }
}

/// Keeps the idle index in step with whether `glock` is idle and keeps its
/// DLM lock. A glock that is idle already keeps its place.
fn set_idle(
    idle: &mut BTreeSet<(u64, GlockName)>,
    seq: &mut u64,
    glock: &mut GlockCore,
    now: bool,
) {
    match (now, glock.idle_since) {
        (true, None) => {
            *seq += 1;
            glock.idle_since = Some(*seq);
            idle.insert((*seq, glock.name()));
        }
        (false, Some(was)) => {
            glock.idle_since = None;
            idle.remove(&(was, glock.name()));
        }
        _ => {}
    }
}

/// Marks `glock` unused (with the next of `seq`, counted in `count`) or
/// not.
fn mark(glock: &mut GlockCore, unused: bool, seq: &mut u64, count: &mut usize) {
    match (unused, glock.unused_since) {
        (false, Some(_)) => {
            glock.unused_since = None;
            *count -= 1;
        }
        (true, None) => {
            *seq += 1;
            glock.unused_since = Some(*seq);
            *count += 1;
        }
        _ => {}
    }
}
