//! The resource (rsb) as its master keeps it: grant, convert and wait
//! queues and the kernel's grant rules (`fs/dlm/lock.c`: `_can_be_granted`,
//! `grant_pending_locks`, conversion deadlock detection, blocking asts).
//!
//! Plain state machine: every operation appends the resulting completion
//! (cast) and blocking (bast) callbacks to an output vector.

use smallvec::SmallVec;

use crate::mode::{LvbOp, Mode};
use crate::types::{Flags, LockId, LockKey, Lvb, NodeId, SbFlags, Status};

/// A lock as the master sees it (the kernel's master copy of an lkb).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasterLkb {
    /// Owner and lock id.
    pub key: LockKey,
    /// Granted mode (`None` for a new request not yet granted).
    pub grmode: Option<Mode>,
    /// Requested mode while waiting or converting.
    pub rqmode: Option<Mode>,
    /// Flags of the current request.
    pub flags: Flags,
    /// Highest mode a blocking callback was sent for since the last grant.
    pub highbast: Option<Mode>,
    /// The holder's value block, written on release from PW/EX.
    pub lvb: Option<Lvb>,
    /// Status flags to report on the next completion.
    pub sbflags: SbFlags,
    /// The holder wants blocking callbacks.
    pub wants_bast: bool,
    /// For an orphan (key node [`NodeId::ORPHANS`]): the dead node that
    /// held it, the only one that may adopt it.
    pub orphan_of: Option<NodeId>,
}

impl MasterLkb {
    /// A new request from `key` for `mode`.
    pub fn new(key: LockKey, mode: Mode, flags: Flags, lvb: Option<Lvb>) -> MasterLkb {
        MasterLkb {
            key,
            grmode: None,
            rqmode: Some(mode),
            flags,
            highbast: None,
            lvb,
            sbflags: SbFlags::default(),
            wants_bast: true,
            orphan_of: None,
        }
    }

    /// An orphan: the granted PERSISTENT lock of dead node `owner`, kept
    /// under key `(ORPHANS, n)`; `n` tells a resource's orphans apart.
    pub fn orphan(owner: NodeId, n: u32, mode: Mode, flags: Flags) -> MasterLkb {
        let key = LockKey {
            node: NodeId::ORPHANS,
            id: LockId(n),
        };
        MasterLkb {
            grmode: Some(mode),
            rqmode: None,
            wants_bast: false,
            orphan_of: Some(owner),
            ..MasterLkb::new(key, mode, flags, None)
        }
    }
}

/// A callback the master produces for the holder of `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsbEvent {
    /// Completion: the request, conversion, unlock or cancel finished.
    Cast {
        /// Which lock.
        key: LockKey,
        /// Outcome.
        status: Status,
        /// Status flags (DEMOTED, VALNOTVALID, ALTMODE).
        sbflags: SbFlags,
        /// The value block and its sequence number, when the holder reads it.
        lvb: Option<(Lvb, u32)>,
    },
    /// The conversion was queued after the granted mode was demoted to NL
    /// (CONVDEADLK); the holder must stop relying on its old mode now.
    Demoted {
        /// Which lock.
        key: LockKey,
    },
    /// Blocking callback: someone waits for `mode`.
    Bast {
        /// The granted lock that blocks.
        key: LockKey,
        /// The mode that is waiting.
        mode: Mode,
    },
}

/// Why the master refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RsbError {
    /// No such lock on this resource.
    #[error("no such lock")]
    NotFound,
    /// The lock is in the wrong state for this operation.
    #[error("lock busy")]
    Busy,
    /// Invalid flag or mode combination.
    #[error("invalid request")]
    Invalid,
}

/// Which queue a lock sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// Granted.
    Grant,
    /// Granted, converting to another mode.
    Convert,
    /// Waiting for a first grant.
    Wait,
}

/// A master copy of a resource.
#[derive(Clone, Debug, Default)]
pub struct Rsb {
    grant: LockQueue,
    convert: LockQueue,
    wait: LockQueue,
    lvb: Option<Lvb>,
    lvbseq: u32,
    valnotvalid: bool,
}

/// A queue of locks: most resources have one lock, kept inline, so that
/// a new resource costs one allocation (its boxed [`Rsb`]), not one per
/// queue used.
type LockQueue = SmallVec<[MasterLkb; 1]>;

type Out = Vec<RsbEvent>;

fn compat(holder: &MasterLkb, req: &MasterLkb) -> bool {
    match (holder.grmode, req.rqmode) {
        (Some(g), Some(r)) => g.compatible(r),
        _ => true,
    }
}

impl Rsb {
    /// An empty resource.
    pub fn new() -> Rsb {
        Rsb::default()
    }

    /// The locks on `q`, in queue order.
    pub fn queue(&self, q: Queue) -> &[MasterLkb] {
        match q {
            Queue::Grant => &self.grant,
            Queue::Convert => &self.convert,
            Queue::Wait => &self.wait,
        }
    }

    /// True when no lock is on any queue.
    pub fn is_empty(&self) -> bool {
        self.grant.is_empty() && self.convert.is_empty() && self.wait.is_empty()
    }

    /// The value block, its sequence number and whether it is valid.
    pub fn lvb(&self) -> (Option<Lvb>, u32, bool) {
        (self.lvb, self.lvbseq, !self.valnotvalid)
    }

    /// Sets the value block (recovery).
    pub fn set_lvb(&mut self, lvb: Option<Lvb>, seq: u32, valid: bool) {
        self.lvb = lvb;
        self.lvbseq = seq;
        self.valnotvalid = !valid;
    }

    /// Marks the value block invalid (a PW/EX holder died).
    pub fn invalidate_lvb(&mut self) {
        self.valnotvalid = true;
    }

    /// Where `key` is queued, if anywhere.
    pub fn find(&self, key: LockKey) -> Option<(Queue, &MasterLkb)> {
        [Queue::Grant, Queue::Convert, Queue::Wait]
            .into_iter()
            .find_map(|q| self.queue(q).iter().find(|l| l.key == key).map(|l| (q, l)))
    }

    fn queue_mut(&mut self, q: Queue) -> &mut LockQueue {
        match q {
            Queue::Grant => &mut self.grant,
            Queue::Convert => &mut self.convert,
            Queue::Wait => &mut self.wait,
        }
    }

    fn take(&mut self, q: Queue, key: LockKey) -> Option<MasterLkb> {
        let v = self.queue_mut(q);
        let i = v.iter().position(|l| l.key == key)?;
        Some(v.remove(i))
    }

    fn put(&mut self, q: Queue, lkb: MasterLkb) {
        let head = q != Queue::Grant && lkb.flags.contains(Flags::HEADQUE);
        let v = self.queue_mut(q);
        if head {
            v.insert(0, lkb);
        } else {
            v.push(lkb);
        }
    }

    /// Adds an already granted lock while rebuilding after recovery.
    pub fn rebuild_granted(&mut self, lkb: MasterLkb) {
        debug_assert!(lkb.grmode.is_some());
        self.grant.push(lkb);
    }

    fn queue_conflict(&self, q: Queue, lkb: &MasterLkb) -> bool {
        self.queue(q)
            .iter()
            .any(|other| other.key != lkb.key && !compat(other, lkb))
    }

    fn first_in(&self, q: Queue, lkb: &MasterLkb) -> bool {
        self.queue(q).first().is_some_and(|f| f.key == lkb.key)
    }

    /// The kernel's `_can_be_granted`, without the recovery case (after
    /// recovery this implementation rebuilds granted locks only and
    /// re-issues every pending request).
    fn can_be_granted_raw(&self, lkb: &MasterLkb, now: bool) -> bool {
        let conv = lkb.grmode.is_some();
        if lkb.flags.contains(Flags::EXPEDITE) {
            return true;
        }
        if self.queue_conflict(Queue::Grant, lkb) || self.queue_conflict(Queue::Convert, lkb) {
            return false;
        }
        if now && conv {
            return !lkb.flags.contains(Flags::QUECVT) || self.convert.is_empty();
        }
        if lkb.flags.contains(Flags::NOORDER) {
            return true;
        }
        if conv {
            return self.first_in(Queue::Convert, lkb);
        }
        if now {
            return self.convert.is_empty() && self.wait.is_empty();
        }
        self.convert.is_empty() && self.first_in(Queue::Wait, lkb)
    }

    /// "A conversion deadlock arises with a pair of lock requests in the
    /// converting queue for one resource. The granted mode of each lock
    /// blocks the requested mode of the other lock."
    fn conversion_deadlock(&self, lkb2: &MasterLkb) -> bool {
        let mut ahead = false;
        for lkb1 in &self.convert {
            if lkb1.key == lkb2.key {
                ahead = true;
                continue;
            }
            if !ahead {
                if !compat(lkb2, lkb1) {
                    return true;
                }
            } else if !compat(lkb2, lkb1) && !compat(lkb1, lkb2) {
                return true;
            }
        }
        false
    }

    /// The kernel's `can_be_granted`: may demote (CONVDEADLK) or switch to
    /// the alternate mode (ALTPR/ALTCW) in `lkb`. Returns (grantable, deadlock).
    fn can_be_granted(&self, lkb: &mut MasterLkb, now: bool) -> (bool, bool) {
        if self.can_be_granted_raw(lkb, now) {
            return (true, false);
        }
        let queueable = !lkb.flags.contains(Flags::NOQUEUE);
        if lkb.grmode.is_some() && queueable && self.conversion_deadlock(lkb) {
            if lkb.flags.contains(Flags::CONVDEADLK) {
                lkb.grmode = Some(Mode::Nl);
                lkb.sbflags |= SbFlags::DEMOTED;
                return (false, false);
            }
            return (false, true);
        }
        let rq = lkb.rqmode.expect("request has a mode");
        let alt = if rq != Mode::Pr && lkb.flags.contains(Flags::ALTPR) {
            Some(Mode::Pr)
        } else if rq != Mode::Cw && lkb.flags.contains(Flags::ALTCW) {
            Some(Mode::Cw)
        } else {
            None
        };
        if let Some(alt) = alt {
            lkb.rqmode = Some(alt);
            if self.can_be_granted_raw(lkb, now) {
                lkb.sbflags |= SbFlags::ALTMODE;
                return (true, false);
            }
            lkb.rqmode = Some(rq);
        }
        (false, false)
    }

    /// Grants `lkb` (not on any queue): LVB transfer, queue move, cast.
    fn grant_lock(&mut self, lkb: MasterLkb, out: &mut Out) {
        let key = lkb.key;
        let rq = lkb.rqmode.expect("granting a request");
        let (sbflags, lvb) = self.grant_quiet(lkb);
        out.push(RsbEvent::Cast {
            key,
            status: Status::Granted(rq),
            sbflags,
            lvb,
        });
    }

    /// [`Rsb::grant_lock`] returning the completion's status flags and
    /// value block instead of pushing the cast.
    pub(crate) fn grant_quiet(&mut self, mut lkb: MasterLkb) -> (SbFlags, Option<(Lvb, u32)>) {
        let rq = lkb.rqmode.expect("granting a request");
        let mut lvb_out = None;
        match Mode::lvb_op(lkb.grmode, rq) {
            LvbOp::Read => {
                if lkb.flags.contains(Flags::VALBLK) {
                    lvb_out = Some((self.lvb.unwrap_or_default(), self.lvbseq));
                }
            }
            LvbOp::Write => self.write_lvb(&lkb),
            LvbOp::None => {}
        }
        if self.valnotvalid {
            lkb.sbflags |= SbFlags::VALNOTVALID;
        }
        lkb.grmode = Some(rq);
        lkb.rqmode = None;
        lkb.highbast = None;
        let sbflags = std::mem::take(&mut lkb.sbflags);
        self.grant.push(lkb);
        (sbflags, lvb_out)
    }

    fn write_lvb(&mut self, lkb: &MasterLkb) {
        if lkb.flags.contains(Flags::IVVALBLK) {
            self.valnotvalid = true;
        } else if let (true, Some(v)) = (lkb.flags.contains(Flags::VALBLK), lkb.lvb) {
            self.lvb = Some(v);
            self.lvbseq = self.lvbseq.wrapping_add(1);
            self.valnotvalid = false;
        }
    }

    fn cast(out: &mut Out, key: LockKey, status: Status) {
        out.push(RsbEvent::Cast {
            key,
            status,
            sbflags: SbFlags::default(),
            lvb: None,
        });
    }

    fn modes_require_bast(gr: &MasterLkb, rq: Mode) -> bool {
        let g = gr.grmode.expect("granted");
        if (g == Mode::Pr && rq == Mode::Cw) || (g == Mode::Cw && rq == Mode::Pr) {
            return gr.highbast < Some(Mode::Ex);
        }
        gr.highbast < Some(rq) && !g.compatible(rq)
    }

    fn send_bast_queue(&mut self, q: Queue, lkb: &MasterLkb, out: &mut Out) {
        let rq = lkb.rqmode.expect("request has a mode");
        for gr in self.queue_mut(q).iter_mut() {
            if gr.key != lkb.key && gr.wants_bast && Self::modes_require_bast(gr, rq) {
                out.push(RsbEvent::Bast {
                    key: gr.key,
                    mode: rq,
                });
                gr.highbast = Some(rq);
            }
        }
    }

    /// Processes a new request (`do_request` + effects).
    pub fn request(&mut self, mut lkb: MasterLkb, out: &mut Out) -> Result<(), RsbError> {
        let Some(rq) = lkb.rqmode else {
            return Err(RsbError::Invalid);
        };
        if lkb.grmode.is_some() || self.find(lkb.key).is_some() {
            return Err(RsbError::Busy);
        }
        if lkb.flags.contains(Flags::EXPEDITE) && rq != Mode::Nl {
            return Err(RsbError::Invalid);
        }
        if lkb.flags.contains(Flags::ORPHAN) {
            self.adopt(lkb, out);
            return Ok(());
        }
        let (ok, _) = self.can_be_granted(&mut lkb, true);
        if ok {
            self.grant_lock(lkb, out);
        } else if !lkb.flags.contains(Flags::NOQUEUE) {
            self.put(Queue::Wait, lkb);
            self.send_bast_queue(Queue::Grant, &lkb, out);
        } else {
            Self::cast(out, lkb.key, Status::Again);
            if lkb.flags.contains(Flags::NOQUEUEBAST) {
                self.send_bast_queue(Queue::Grant, &lkb, out);
                self.send_bast_queue(Queue::Convert, &lkb, out);
            }
        }
        Ok(())
    }

    /// An ORPHAN request: the requester's node takes over its own orphan
    /// held in the requested mode, which stays granted in place (as the
    /// kernel's `dlm_user_adopt_orphan`); the value block is read with
    /// VALBLK. Without such an orphan the request fails with EAGAIN (the
    /// kernel also answers ENOENT when the node has no orphan at all).
    fn adopt(&mut self, lkb: MasterLkb, out: &mut Out) {
        let rq = lkb.rqmode.expect("request has a mode");
        let owner = lkb.key.node;
        let Some(o) = self
            .grant
            .iter_mut()
            .find(|g| g.orphan_of == Some(owner) && g.grmode == Some(rq))
        else {
            Self::cast(out, lkb.key, Status::Again);
            return;
        };
        o.key = lkb.key;
        o.orphan_of = None;
        o.wants_bast = true;
        o.highbast = None;
        o.flags = lkb.flags;
        let lvb = lkb
            .flags
            .contains(Flags::VALBLK)
            .then(|| (self.lvb.unwrap_or_default(), self.lvbseq));
        let sbflags = if self.valnotvalid {
            SbFlags::VALNOTVALID
        } else {
            SbFlags::default()
        };
        out.push(RsbEvent::Cast {
            key: lkb.key,
            status: Status::Granted(rq),
            sbflags,
            lvb,
        });
    }

    /// Drops the orphans of `owner` and grants what they blocked. Returns
    /// whether there were any.
    pub fn purge_orphans(&mut self, owner: NodeId, out: &mut Out) -> bool {
        let before = self.grant.len();
        self.grant.retain(|g| g.orphan_of != Some(owner));
        if self.grant.len() == before {
            return false;
        }
        self.grant_pending_locks(out);
        true
    }

    /// The common case of [`Rsb::request`] for a lock new to this
    /// resource, without the event list: when nothing converts or waits
    /// and the granted locks allow `lkb`, grants it and returns its
    /// completion's status flags and value block. `None` (and nothing
    /// changed) when any other rule could apply: take `request` then.
    /// The caller vouches that `lkb.key` is on no queue here.
    pub fn request_now(&mut self, lkb: MasterLkb) -> Option<(SbFlags, Option<(Lvb, u32)>)> {
        let rq = lkb.rqmode?;
        if lkb.grmode.is_some()
            || lkb.flags.contains(Flags::EXPEDITE)
            || lkb.flags.contains(Flags::NOORDER)
            || lkb.flags.contains(Flags::ORPHAN)
            || !self.grantable_now(rq)
        {
            return None;
        }
        debug_assert!(self.find(lkb.key).is_none());
        Some(self.grant_quiet(lkb))
    }

    /// True when a new request for `rq` (without EXPEDITE or NOORDER)
    /// would be granted at once: nothing converts or waits, and every
    /// granted mode is compatible.
    #[inline]
    pub fn grantable_now(&self, rq: Mode) -> bool {
        self.convert.is_empty()
            && self.wait.is_empty()
            && self
                .grant
                .iter()
                .all(|g| g.grmode.is_none_or(|m| m.compatible(rq)))
    }

    /// The common case of [`Rsb::unlock`]: a granted lock released while
    /// nothing converts or waits, so nothing else can be granted and no
    /// blocking callback is due. Returns false (and changes nothing) when
    /// that is not the case: take `unlock` then.
    pub fn unlock_now(&mut self, key: LockKey, flags: Flags, lvb: Option<Lvb>) -> bool {
        if !self.convert.is_empty() || !self.wait.is_empty() {
            return false;
        }
        let Some(i) = self.grant.iter().position(|l| l.key == key) else {
            return false;
        };
        let mut lkb = self.grant.remove(i);
        if lkb.grmode >= Some(Mode::Pw) {
            lkb.flags = flags;
            lkb.lvb = lvb;
            self.write_lvb(&lkb);
        }
        true
    }

    /// Processes a conversion of a granted lock (`do_convert` + effects).
    pub fn convert(
        &mut self,
        key: LockKey,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Out,
    ) -> Result<(), RsbError> {
        let Some((q, cur)) = self.find(key) else {
            return Err(RsbError::NotFound);
        };
        if q != Queue::Grant {
            return Err(RsbError::Busy);
        }
        let gr = cur.grmode.expect("granted");
        if flags.contains(Flags::QUECVT) && !gr.quecvt_allowed(mode)
            || flags.contains(Flags::EXPEDITE)
        {
            return Err(RsbError::Invalid);
        }
        let mut lkb = *cur;
        lkb.rqmode = Some(mode);
        lkb.flags = flags;
        lkb.lvb = lvb;
        lkb.sbflags = SbFlags::default();
        let (ok, deadlk) = self.can_be_granted(&mut lkb, true);
        self.replace(Queue::Grant, lkb);
        if ok {
            self.finish_grant(Queue::Grant, key, out);
            self.grant_pending_locks(out);
            return Ok(());
        }
        if deadlk && !flags.contains(Flags::NODLCKWT) {
            self.revert(key);
            Self::cast(out, key, Status::Deadlock);
            return Ok(());
        }
        if lkb.sbflags.contains(SbFlags::DEMOTED) {
            self.grant_pending_convert(out);
            let mut again = *self.find(key).expect("still granted").1;
            if self.can_be_granted_raw(&again, true) {
                again.sbflags |= SbFlags::DEMOTED;
                self.replace(Queue::Grant, again);
                self.finish_grant(Queue::Grant, key, out);
                self.grant_pending_locks(out);
                return Ok(());
            }
        }
        if !flags.contains(Flags::NOQUEUE) {
            let lkb = self.take(Queue::Grant, key).expect("granted");
            if lkb.sbflags.contains(SbFlags::DEMOTED) {
                out.push(RsbEvent::Demoted { key });
            }
            self.put(Queue::Convert, lkb);
            self.send_bast_queue(Queue::Grant, &lkb, out);
        } else {
            self.revert(key);
            Self::cast(out, key, Status::Again);
            if flags.contains(Flags::NOQUEUEBAST) {
                self.send_bast_queue(Queue::Grant, &lkb, out);
                self.send_bast_queue(Queue::Convert, &lkb, out);
            }
        }
        Ok(())
    }

    fn replace(&mut self, q: Queue, lkb: MasterLkb) {
        if let Some(slot) = self.queue_mut(q).iter_mut().find(|l| l.key == lkb.key) {
            *slot = lkb;
        }
    }

    fn revert(&mut self, key: LockKey) {
        if let Some(l) = self.grant.iter_mut().find(|l| l.key == key) {
            l.rqmode = None;
            l.sbflags = SbFlags::default();
        }
    }

    fn finish_grant(&mut self, q: Queue, key: LockKey, out: &mut Out) {
        let lkb = self.take(q, key).expect("lock to grant");
        self.grant_lock(lkb, out);
    }

    /// Unlocks a granted lock (or any lock with FORCEUNLOCK).
    pub fn unlock(
        &mut self,
        key: LockKey,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Out,
    ) -> Result<(), RsbError> {
        let Some((q, _)) = self.find(key) else {
            return Err(RsbError::NotFound);
        };
        if q != Queue::Grant && !flags.contains(Flags::FORCEUNLOCK) {
            return Err(RsbError::Busy);
        }
        let mut lkb = self.take(q, key).expect("found");
        if lkb.grmode >= Some(Mode::Pw) {
            lkb.flags = flags;
            lkb.lvb = lvb;
            self.write_lvb(&lkb);
        }
        Self::cast(out, key, Status::Unlocked);
        self.grant_pending_locks(out);
        Ok(())
    }

    /// Cancels a waiting request or a conversion. Returns false (and does
    /// nothing) when the lock is simply granted: the cancel lost the race.
    pub fn cancel(&mut self, key: LockKey, out: &mut Out) -> Result<bool, RsbError> {
        let Some((q, _)) = self.find(key) else {
            return Err(RsbError::NotFound);
        };
        match q {
            Queue::Grant => return Ok(false),
            Queue::Convert => {
                let mut lkb = self.take(q, key).expect("found");
                lkb.rqmode = None;
                lkb.sbflags = SbFlags::default();
                self.grant.push(lkb);
            }
            Queue::Wait => {
                self.take(q, key);
            }
        }
        Self::cast(out, key, Status::Canceled);
        self.grant_pending_locks(out);
        Ok(true)
    }

    /// Removes every lock whose owner matches `dead`, without callbacks
    /// (purge after a node failure); returns whether a PW/EX holder died.
    pub fn purge(&mut self, dead: impl Fn(&MasterLkb) -> bool) -> bool {
        let mut strong = false;
        for q in [Queue::Grant, Queue::Convert, Queue::Wait] {
            self.queue_mut(q).retain(|l| {
                let d = dead(l);
                strong |= d && l.grmode >= Some(Mode::Pw);
                !d
            });
        }
        if strong {
            self.valnotvalid = true;
        }
        strong
    }

    fn grant_pending_convert(&mut self, out: &mut Out) -> (Option<Mode>, bool) {
        let mut quit = false;
        loop {
            let mut grant_restart = false;
            let mut demote_restart = false;
            let mut hi = None;
            let mut cw = false;
            let mut i = 0;
            while i < self.convert.len() {
                let mut lkb = self.convert[i];
                let demoted = lkb.sbflags.contains(SbFlags::DEMOTED);
                let (ok, deadlk) = self.can_be_granted(&mut lkb, false);
                self.convert[i] = lkb;
                if ok {
                    let lkb = self.convert.remove(i);
                    self.grant_lock(lkb, out);
                    grant_restart = true;
                    continue;
                }
                i += 1;
                if !demoted && lkb.sbflags.contains(SbFlags::DEMOTED) {
                    out.push(RsbEvent::Demoted { key: lkb.key });
                    demote_restart = true;
                    continue;
                }
                if deadlk {
                    let rq = lkb.rqmode.expect("converting");
                    if lkb.flags.contains(Flags::NODLCKWT) && lkb.highbast < Some(rq) {
                        out.push(RsbEvent::Bast {
                            key: lkb.key,
                            mode: rq,
                        });
                        self.convert[i - 1].highbast = Some(rq);
                    }
                    continue;
                }
                hi = hi.max(lkb.rqmode);
                cw |= lkb.rqmode == Some(Mode::Cw);
            }
            if grant_restart {
                continue;
            }
            if demote_restart && !quit {
                quit = true;
                continue;
            }
            return (hi, cw);
        }
    }

    fn grant_pending_wait(&mut self, out: &mut Out) -> (Option<Mode>, bool) {
        let mut hi = None;
        let mut cw = false;
        let mut i = 0;
        while i < self.wait.len() {
            let mut lkb = self.wait[i];
            let (ok, _) = self.can_be_granted(&mut lkb, false);
            if ok {
                self.wait.remove(i);
                self.grant_lock(lkb, out);
            } else {
                hi = hi.max(lkb.rqmode);
                cw |= lkb.rqmode == Some(Mode::Cw);
                i += 1;
            }
        }
        (hi, cw)
    }

    /// Grants whatever has become grantable, in the kernel's order
    /// (conversions first, then waiters), then sends blocking callbacks for
    /// the highest mode still waiting.
    pub fn grant_pending_locks(&mut self, out: &mut Out) {
        let (h1, cw1) = self.grant_pending_convert(out);
        let (h2, cw2) = self.grant_pending_wait(out);
        let (Some(high), cw) = (h1.max(h2), cw1 || cw2) else {
            return;
        };
        for gr in &mut self.grant {
            let g = gr.grmode.expect("granted");
            let needs = if g == Mode::Pr && cw {
                gr.highbast < Some(Mode::Ex)
            } else {
                gr.highbast < Some(high) && !g.compatible(high)
            };
            if gr.wants_bast && needs {
                let mode = if cw && high == Mode::Pr && g == Mode::Pr {
                    Mode::Cw
                } else {
                    high
                };
                out.push(RsbEvent::Bast { key: gr.key, mode });
                gr.highbast = Some(high);
            }
        }
    }
}

#[cfg(test)]
#[path = "rsb_tests.rs"]
mod tests;
