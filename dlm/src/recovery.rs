//! Recovery after a membership change, as a part of the [`Node`] state
//! machine.
//!
//! On a new view every member stops (lock traffic of older generations is
//! dropped from then on), waits until every failed node is fenced, then:
//! 1. throws away its master copies and its part of the directory (they
//!    are rebuilt from the holders' process copies, the source of truth);
//!    releases already asked for (unlocks, down-conversions) complete now;
//! 2. sends, for every resource it holds locks on or mastered, its granted
//!    locks and value block knowledge to the resource's new directory node,
//!    then barrier 1 (`RecDone1` to every member; links are FIFO);
//! 3. each directory node picks the master (the old one if it survived,
//!    else the lowest surviving holder), sends it the locks (`RecMaster`)
//!    and tells the other holders (`RecSetMaster`), then barrier 2;
//! 4. resumes and re-issues every pending request, conversion, unlock and
//!    cancel, so requests made meanwhile complete afterwards.
//!
//! Value blocks: the highest sequence number among the old master's copy,
//! holders' copies and releases in flight wins. It is marked invalid when a
//! dead node held PW/EX (known by a surviving old master), or, when the old
//! master died too, unless a survivor holds PR or stronger with a copy.
//! Locks of dead nodes are purged, except PERSISTENT ones that a surviving
//! master knew of: they stay granted as orphans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::mode::Mode;
use crate::node::{push_ast, sorted, Action, Master, Node, Op, Phase};
use crate::rsb::{MasterLkb, Queue, Rsb};
use crate::types::{Flags, LockId, LockKey, Lvb, NodeId, ResName, SbFlags, Status};
use crate::wire::{Envelope, Msg, RecLock, RecLvb};

/// What a master knew of a resource when it stopped.
#[derive(Clone, Debug)]
pub(crate) struct Snap {
    lvb: Option<Lvb>,
    seq: u32,
    valid: bool,
    remote_locks: Vec<(LockKey, Mode, Flags, Option<NodeId>)>,
}

/// Reports gathered by a directory node for one resource.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gathered {
    old_master: Option<NodeId>,
    reporters: BTreeSet<NodeId>,
    lvbs: Vec<RecLvb>,
    locks: Vec<RecLock>,
}

/// Recovery bookkeeping of a node.
#[derive(Default)]
pub(crate) struct RecState {
    pub(crate) buffered: Vec<(NodeId, Envelope)>,
    fenced: BTreeSet<NodeId>,
    unfenced: BTreeSet<NodeId>,
    snapshot: Option<HashMap<ResName, Snap>>,
    pending_writes: BTreeMap<ResName, RecLvb>,
    done1: BTreeSet<NodeId>,
    /// The slot each member had before this recovery (from `RecDone1`).
    claims: BTreeMap<NodeId, u32>,
    done2: BTreeSet<NodeId>,
    gathered: BTreeMap<ResName, Gathered>,
    /// Members that left holding a slot, not reported yet: a recovery cut
    /// short by a newer view may never reach `assign_slots`, and by the
    /// next one the node may be back claiming the same slot.
    departed: BTreeMap<NodeId, u32>,
}

impl Node {
    /// Installs membership view `gen`; starts recovery.
    pub fn set_members(&mut self, gen: u64, members: &[NodeId], out: &mut Vec<Action>) {
        if gen <= self.gen && self.phase != Phase::Out || gen < self.gen {
            return;
        }
        let new = sorted(members);
        let old = std::mem::take(&mut self.members);
        for n in old.iter().filter(|n| !new.contains(n)) {
            if !self.rec.fenced.contains(n) {
                self.rec.unfenced.insert(*n);
            }
            if let Some(&slot) = self.slots.get(n) {
                self.rec.departed.insert(*n, slot);
            }
        }
        for n in new.iter().filter(|n| !old.contains(n)) {
            self.rec.fenced.remove(n);
            self.rec.unfenced.remove(n);
        }
        if self.phase == Phase::Running {
            self.rec.snapshot = Some(self.take_snapshot());
        }
        self.members = new;
        self.gen = gen;
        self.note_recovery("lockspace stopped for recovery");
        if !self.members.contains(&self.me) {
            self.phase = Phase::Out;
            return;
        }
        self.stop(out);
        out.push(Action::RecoverPrep);
        self.phase = Phase::WaitFence;
        self.rec.done1.clear();
        self.rec.claims.clear();
        self.rec.done2.clear();
        self.rec.gathered.clear();
        self.try_gather(out);
        self.replay_buffered(out);
    }

    /// The membership source reports `node` fenced.
    pub fn fenced(&mut self, node: NodeId, out: &mut Vec<Action>) {
        if self.members.contains(&node) {
            return;
        }
        self.rec.fenced.insert(node);
        self.rec.unfenced.remove(&node);
        self.try_gather(out);
    }

    fn take_snapshot(&self) -> HashMap<ResName, Snap> {
        let mut snap = HashMap::new();
        for (name, e) in &self.rsbs {
            let Some(core) = &e.core else { continue };
            let (lvb, seq, valid) = core.lvb();
            if core.is_empty() && lvb.is_none() {
                continue;
            }
            let remote_locks = [Queue::Grant, Queue::Convert]
                .into_iter()
                .flat_map(|q| core.queue(q))
                .filter(|l| l.key.node != self.me)
                .map(|l| (l.key, l.grmode.expect("granted"), l.flags, l.orphan_of))
                .collect();
            snap.insert(
                *name,
                Snap {
                    lvb,
                    seq,
                    valid,
                    remote_locks,
                },
            );
        }
        snap
    }

    /// Drops master state and routing; completes releases already asked for.
    fn stop(&mut self, out: &mut Vec<Action>) {
        self.dir.clear();
        self.plocks.table = None;
        self.plocks.reports.clear();
        for e in self.rsbs.values_mut() {
            e.core = None;
            e.master = Master::Unknown;
            e.lookup_waiters.clear();
            e.held.clear();
        }
        let mut ids: Vec<LockId> = self.lkbs.keys().collect();
        ids.sort();
        for id in ids {
            self.stop_lkb(id, out);
        }
    }

    fn stop_lkb(&mut self, id: LockId, out: &mut Vec<Action>) {
        let lkb = self.lkbs.get_mut(id).expect("lkb");
        lkb.sent = false;
        lkb.master = None;
        let Some(gr) = lkb.grmode else { return };
        let write = lkb.has_lvb && lkb.flags.contains(Flags::VALBLK) && gr >= Mode::Pw;
        let contribution = RecLvb {
            value: lkb.lvb,
            seq: lkb.lvbseq.wrapping_add(1),
            valid: false,
            from_master: false,
        };
        match lkb.op {
            Op::Unlock => {
                let name = lkb.name;
                self.lkbs.discard(id);
                if write {
                    self.add_write(name, contribution);
                }
                push_ast(out, id, Status::Unlocked, SbFlags::default(), None);
            }
            Op::Convert if lkb.flags.contains(Flags::CONVDEADLK) && gr != Mode::Nl => {
                lkb.grmode = Some(Mode::Nl);
                lkb.demoted = true;
            }
            Op::Convert if !matches!(gr.meet(lkb.rqmode.expect("rq")), m if m == gr || Some(m) == lkb.rqmode) =>
            {
                // Neither up nor down (PR<->CW): the master may have
                // granted either mode; keep only what both allow.
                lkb.grmode = Some(gr.meet(lkb.rqmode.expect("rq")));
            }
            Op::Convert if gr.is_down_to(lkb.rqmode.expect("rq")) => {
                let rq = lkb.rqmode.take().expect("rq");
                lkb.grmode = Some(rq);
                lkb.op = Op::None;
                lkb.cancel = false;
                let name = lkb.name;
                if write {
                    self.lkbs.get_mut(id).expect("lkb").lvbseq = contribution.seq;
                    self.add_write(name, contribution);
                }
                push_ast(out, id, Status::Granted(rq), SbFlags::default(), None);
            }
            _ => {}
        }
    }

    fn add_write(&mut self, name: ResName, c: RecLvb) {
        let slot = self.rec.pending_writes.entry(name).or_insert(c);
        if c.seq > slot.seq {
            *slot = c;
        }
    }

    fn try_gather(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::WaitFence || !self.rec.unfenced.is_empty() {
            return;
        }
        self.phase = Phase::Gather;
        self.note_recovery("recovery: sending locks to directory nodes");
        let reports = self.build_reports();
        for (name, (was_master, lvb, locks)) in reports {
            let msg = Msg::RecLocks {
                name,
                was_master,
                lvb,
                locks,
            };
            let dir = self.dir_node(&name).expect("members");
            self.send_rec(dir, msg, out);
        }
        let report = self.plock_report();
        let pm = self.plock_master().expect("members");
        self.send_rec(pm, report, out);
        let slot = self.slot();
        self.broadcast(Msg::RecDone1 { slot }, out);
    }

    #[allow(clippy::type_complexity)]
    fn build_reports(&self) -> BTreeMap<ResName, (bool, Option<RecLvb>, Vec<RecLock>)> {
        let mut r: BTreeMap<ResName, (bool, Option<RecLvb>, Vec<RecLock>)> = BTreeMap::new();
        let better = |cur: &mut Option<RecLvb>, c: RecLvb| {
            if cur.is_none_or(|x| c.seq > x.seq || c.seq == x.seq && c.valid && !x.valid) {
                *cur = Some(c);
            }
        };
        let mut ids: Vec<LockId> = self.lkbs.keys().collect();
        ids.sort();
        for id in ids {
            let lkb = &self.lkbs[id];
            let Some(gr) = lkb.grmode else { continue };
            let e = r.entry(lkb.name).or_default();
            e.2.push(RecLock {
                node: self.me,
                lkid: lkb.id,
                mode: gr,
                flags: lkb.flags,
            });
            if lkb.has_lvb && lkb.lvbseq > 0 {
                let c = RecLvb {
                    value: lkb.lvb,
                    seq: lkb.lvbseq,
                    valid: gr >= Mode::Pr,
                    from_master: false,
                };
                better(&mut e.1, c);
            }
        }
        for (name, c) in &self.rec.pending_writes {
            better(&mut r.entry(*name).or_default().1, *c);
        }
        if let Some(snap) = &self.rec.snapshot {
            for (name, s) in snap {
                let dead =
                    |k: &LockKey| k.node != NodeId::ORPHANS && !self.members.contains(&k.node);
                let strong_died = s
                    .remote_locks
                    .iter()
                    .any(|(k, m, _, _)| dead(k) && *m >= Mode::Pw);
                let e = r.entry(*name).or_default();
                e.0 = true;
                let c = RecLvb {
                    value: s.lvb.unwrap_or_default(),
                    seq: s.seq,
                    valid: s.valid && !strong_died,
                    from_master: true,
                };
                // The master's view replaces holder copies of the same node.
                if e.1.is_none_or(|x| c.seq >= x.seq) {
                    e.1 = Some(c);
                } else if let Some(x) = e.1.as_mut() {
                    x.from_master = true;
                    x.valid = c.valid;
                }
                // Orphans, old and new, travel as (ORPHANS, owner).
                for (k, m, f, o) in &s.remote_locks {
                    let owner = match o {
                        Some(owner) => *owner,
                        None if dead(k) && f.contains(Flags::PERSISTENT) => k.node,
                        None => continue,
                    };
                    e.2.push(RecLock {
                        node: NodeId::ORPHANS,
                        lkid: LockId(owner.0),
                        mode: *m,
                        flags: *f,
                    });
                }
            }
        }
        r
    }

    fn send_rec(&mut self, to: NodeId, msg: Msg, out: &mut Vec<Action>) {
        if to == self.me {
            let me = self.me;
            self.receive_recovery(me, msg, out);
        } else {
            out.push(Action::Send {
                to,
                env: Envelope { gen: self.gen, msg },
            });
        }
    }

    fn broadcast(&mut self, msg: Msg, out: &mut Vec<Action>) {
        for to in self.members.clone() {
            self.send_rec(to, msg.clone(), out);
        }
    }

    pub(crate) fn receive_recovery(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) {
        match msg {
            Msg::RecLocks {
                name,
                was_master,
                lvb,
                locks,
            } => {
                let g = self.rec.gathered.entry(name).or_default();
                g.reporters.insert(from);
                if was_master {
                    g.old_master = Some(from);
                }
                g.lvbs.extend(lvb);
                g.locks.extend(locks);
            }
            Msg::RecPlocks { locks } => self.plocks.reports.extend(locks),
            Msg::RecDone1 { slot } => {
                self.rec.done1.insert(from);
                self.rec.claims.insert(from, slot);
                self.maybe_assign(out);
            }
            Msg::RecMaster { name, lvb, locks } => self.rebuild_master(name, lvb, locks),
            Msg::RecSetMaster { name, master } => {
                self.new_entry(name).master = Master::Node(master)
            }
            Msg::RecDone2 => {
                self.rec.done2.insert(from);
                self.maybe_resume(out);
            }
            other => tracing::error!(?other, "lock message routed as recovery message"),
        }
    }

    fn maybe_assign(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Gather || !self.members.iter().all(|m| self.rec.done1.contains(m)) {
            return;
        }
        self.plock_rebuild();
        self.assign_slots(out);
        let gathered = std::mem::take(&mut self.rec.gathered);
        for (name, g) in gathered {
            let master = match g.old_master {
                Some(m) if self.members.contains(&m) => m,
                _ => *g.reporters.iter().next().expect("a reporter"),
            };
            self.dir.insert(name, master);
            let lvb = merge_lvbs(&g.lvbs);
            for r in g.reporters.iter().filter(|r| **r != master) {
                self.send_rec(*r, Msg::RecSetMaster { name, master }, out);
            }
            self.send_rec(
                master,
                Msg::RecMaster {
                    name,
                    lvb,
                    locks: g.locks,
                },
                out,
            );
        }
        self.phase = Phase::Assign;
        self.broadcast(Msg::RecDone2, out);
    }

    fn rebuild_master(&mut self, name: ResName, lvb: Option<RecLvb>, locks: Vec<RecLock>) {
        let mut rsb = Rsb::new();
        if let Some(l) = lvb {
            rsb.set_lvb(Some(l.value), l.seq, l.valid);
        }
        let mut orphans = 0;
        for l in locks {
            let m = if l.node == NodeId::ORPHANS {
                orphans += 1;
                MasterLkb::orphan(NodeId(l.lkid.0), orphans, l.mode, l.flags)
            } else {
                let key = LockKey {
                    node: l.node,
                    id: l.lkid,
                };
                MasterLkb {
                    grmode: Some(l.mode),
                    rqmode: None,
                    ..MasterLkb::new(key, l.mode, l.flags, None)
                }
            };
            if rsb
                .queue(Queue::Grant)
                .iter()
                .any(|g| !g.grmode.expect("g").compatible(l.mode))
            {
                tracing::error!(%name, lock = ?l, "recovered locks conflict");
            }
            rsb.rebuild_granted(m);
        }
        let me = self.me;
        let e = self.new_entry(name);
        e.master = Master::Node(me);
        e.core = Some(Box::new(rsb));
    }

    fn maybe_resume(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Assign || !self.members.iter().all(|m| self.rec.done2.contains(m)) {
            return;
        }
        self.phase = Phase::Running;
        self.rec.snapshot = None;
        self.rec.pending_writes.clear();
        self.note_recovery("recovery done, lockspace running");
        let mut ids: Vec<LockId> = self
            .lkbs
            .values()
            .filter(|l| l.op != Op::None)
            .map(|l| l.id)
            .collect();
        ids.sort();
        for id in ids {
            if self.lkbs.contains_key(id) {
                self.issue(id, out);
            }
        }
        self.plock_resume(out);
        out.push(Action::RecoverDone {
            gen: self.gen,
            slots: self.slots(),
        });
        self.replay_buffered(out);
    }

    /// Slots, as the kernel's `dlm_slots_assign`: a member keeps the slot
    /// it had; members without one get the lowest free slots, by node id.
    /// Every member computes this from the same `RecDone1` claims, so all
    /// agree. A slot whose process is gone (the member left, or came back
    /// as a new process that claims nothing) is reported (`RecoverSlot`);
    /// so is the slot of a member that left since the last assignment
    /// here, even if it is back claiming that slot (learned in a recovery
    /// that a newer view cut short before it reached this node's
    /// assignment): a new process cannot have used the old one's slot.
    fn assign_slots(&mut self, out: &mut Vec<Action>) {
        let claims = std::mem::take(&mut self.rec.claims);
        let mut slots = BTreeMap::new();
        let mut used = BTreeSet::new();
        for m in &self.members {
            let claim = claims.get(m).copied().unwrap_or(0);
            if claim == 0 {
                continue;
            }
            if used.insert(claim) {
                slots.insert(*m, claim);
            } else {
                // Two views that grew apart (a healed partition).
                tracing::error!(node = %m, slot = claim, "slot claimed twice: reassigned");
            }
        }
        let mut next = 1;
        for m in &self.members {
            if slots.contains_key(m) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            used.insert(next);
            slots.insert(*m, next);
        }
        let old = std::mem::replace(&mut self.slots, slots);
        let mut gone: BTreeSet<(NodeId, u32)> =
            std::mem::take(&mut self.rec.departed).into_iter().collect();
        for (node, slot) in old {
            // Gone, or back as a new process that does not know its slot.
            if claims.get(&node) != Some(&slot) {
                gone.insert((node, slot));
            }
        }
        for (node, slot) in gone {
            out.push(Action::RecoverSlot { node, slot });
        }
    }

    fn replay_buffered(&mut self, out: &mut Vec<Action>) {
        let gen = self.gen;
        let buf = std::mem::take(&mut self.rec.buffered);
        let (now, later): (Vec<_>, Vec<_>) = buf.into_iter().partition(|(_, e)| e.gen <= gen);
        self.rec.buffered = later;
        for (from, env) in now {
            self.receive(from, env, out);
        }
    }
}

/// Picks the value block to recover (see the module docs).
fn merge_lvbs(lvbs: &[RecLvb]) -> Option<RecLvb> {
    let best = lvbs.iter().max_by_key(|l| (l.seq, l.from_master))?;
    let valid = match lvbs.iter().find(|l| l.from_master) {
        Some(m) => m.valid,
        None => lvbs.iter().any(|l| l.valid),
    };
    Some(RecLvb { valid, ..*best })
}
