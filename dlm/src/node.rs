//! One node's lockspace as a sans-IO state machine.
//!
//! The node keeps process copies of the locks it holds ([`Lkb`]), master
//! copies of the resources it masters ([`Rsb`] in [`RsbEntry`]), and the
//! part of the resource directory that hashes to it. Local calls
//! (`lock`, `convert`, `unlock`, `cancel`) and received messages go in;
//! [`Action`]s (messages to send, completion and blocking callbacks) come
//! out. Resources mastered here are handled without any message.
//!
//! Handlers come in symmetric sets as in the kernel's `lock.c`:
//! `send_*` (issue to the master), `receive_*` (at the master or holder),
//! `do_*` (the rsb work).

use std::collections::BTreeSet;

use crate::lkb_table::LockTable;
use crate::mode::Mode;
use crate::rsb::{MasterLkb, Rsb, RsbError, RsbEvent};
use crate::types::{FastMap, Flags, LockId, LockKey, Lvb, NodeId, ResName, SbFlags, Status};
use crate::wire::{Envelope, Msg};

/// Messages kept while recovering (or from a newer generation) at most.
pub const MAX_BUFFERED: usize = 1 << 20;

/// Errors returned to local callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No such lock id.
    #[error("no such lock")]
    NoLock,
    /// The lock has an operation in progress or is in the wrong state (EBUSY).
    #[error("lock busy")]
    Busy,
    /// Invalid mode/flag combination (EINVAL).
    #[error("invalid argument")]
    Invalid,
    /// This node is not a member of the lockspace.
    #[error("not a lockspace member")]
    NotMember,
    /// The lock table is full (the kernel's ENOMEM).
    #[error("too many locks")]
    TooMany,
}

/// The operation a process copy is waiting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Nothing pending.
    None,
    /// A new request.
    Request,
    /// A conversion to `rqmode`.
    Convert,
    /// An unlock.
    Unlock,
}

/// A lock as its holder keeps it (process copy).
#[derive(Clone, Debug)]
pub struct Lkb {
    /// Lock id on this node.
    pub id: LockId,
    /// Resource.
    pub name: ResName,
    /// Granted mode as this node knows it.
    pub grmode: Option<Mode>,
    /// Requested mode of a pending request or conversion.
    pub rqmode: Option<Mode>,
    /// Pending operation.
    pub op: Op,
    /// Flags of the pending operation (or of the last one).
    pub flags: Flags,
    /// The lock's copy of the value block.
    pub lvb: Lvb,
    /// Sequence number of that copy (0 when never read).
    pub lvbseq: u32,
    /// True once the value block was read or set with VALBLK.
    pub has_lvb: bool,
    /// A cancel was requested for the pending operation.
    pub cancel: bool,
    /// The pending operation was sent to the master (this generation).
    pub sent: bool,
    /// The node this lock's request went to, which then masters it (the
    /// resource's cached master may have moved on for newer requests);
    /// conversions, unlocks and cancels go there. `None` before the
    /// request is sent and after a recovery.
    pub master: Option<NodeId>,
    /// Demoted to NL by CONVDEADLK; reported with the next grant.
    pub demoted: bool,
}

impl Lkb {
    /// The strongest mode this lock may be relied on for right now: a
    /// release (unlock, down-conversion, CONVDEADLK conversion) counts as
    /// done as soon as it is asked for.
    pub fn effective_mode(&self) -> Option<Mode> {
        let gr = self.grmode?;
        match self.op {
            Op::Unlock => None,
            Op::Convert if self.flags.contains(Flags::CONVDEADLK) => Some(Mode::Nl),
            Op::Convert => Some(self.rqmode.map_or(gr, |rq| gr.meet(rq))),
            _ => Some(gr),
        }
    }
}

/// Who masters a resource, as far as this node knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Master {
    /// Unknown; a lookup may be in flight.
    Unknown,
    /// A lookup was sent to the directory node.
    LookingUp,
    /// Known.
    Node(NodeId),
}

/// A resource as this node knows it.
#[derive(Clone, Debug)]
pub struct RsbEntry {
    /// Master of the resource.
    pub master: Master,
    /// The master copy, when this node masters the resource (boxed: the
    /// table's entries stay small, and entries of resources mastered
    /// elsewhere have none).
    pub core: Option<Box<Rsb>>,
    /// Local locks waiting for a lookup reply.
    pub lookup_waiters: Vec<LockId>,
    /// Lock messages from peers that reached this node without a master
    /// copy, held until the directory says who masters the resource.
    pub held: Vec<(NodeId, Msg)>,
    /// Found unused by the last [`Node::sweep`]; the next one frees it.
    pub idle: bool,
}

impl RsbEntry {
    /// A fresh entry.
    pub(crate) fn new(master: Master) -> RsbEntry {
        RsbEntry {
            master,
            core: None,
            lookup_waiters: Vec::new(),
            held: Vec::new(),
            idle: false,
        }
    }
}

/// What the node asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message to a peer.
    Send {
        /// Destination.
        to: NodeId,
        /// Message.
        env: Envelope,
    },
    /// Completion callback for a local lock.
    Ast {
        /// Which lock.
        id: LockId,
        /// Outcome.
        status: Status,
        /// Status flags.
        sbflags: SbFlags,
        /// Value block read on grant (VALBLK).
        lvb: Option<Lvb>,
    },
    /// Blocking callback for a local lock: `mode` is waiting.
    Bast {
        /// Which lock.
        id: LockId,
        /// The waiting mode.
        mode: Mode,
    },
    /// Recovery started: lock requests wait until it is done (the kernel's
    /// `recover_prep` lockspace op).
    RecoverPrep,
    /// `node`, which held `slot`, left the lockspace; with a cluster
    /// filesystem its journal (`slot - 1`) needs checking (`recover_slot`).
    /// Emitted after the node is fenced.
    RecoverSlot {
        /// The departed node.
        node: NodeId,
        /// The slot it held.
        slot: u32,
    },
    /// Recovery of generation `gen` is done and the lockspace runs again;
    /// `slots` is every member's slot, the same at every member
    /// (`recover_done`).
    RecoverDone {
        /// Generation.
        gen: u64,
        /// (member, slot), by node id.
        slots: Vec<(NodeId, u32)>,
    },
    /// A plock request finished.
    PlockDone {
        /// The id [`Node::plock`] returned.
        req: u64,
        /// Its result.
        result: crate::wire::PlockReply,
    },
}

/// Inputs, for drivers that prefer one entry point (the simulator).
#[derive(Clone, Debug)]
pub enum Event {
    /// A message from a peer.
    Receive {
        /// Sender.
        from: NodeId,
        /// Message.
        env: Envelope,
    },
    /// New membership view.
    Members {
        /// View generation (strictly increasing).
        gen: u64,
        /// Members, any order.
        members: Vec<NodeId>,
    },
    /// The membership source says `node` is fenced.
    Fenced(NodeId),
}

/// Recovery phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Normal operation.
    Running,
    /// Stopped, waiting until every failed node is fenced.
    WaitFence,
    /// Our locks are sent to the directory nodes; waiting for barrier 1.
    Gather,
    /// Our directory assignments are sent; waiting for barrier 2.
    Assign,
    /// This node is not in the current membership.
    Out,
}

/// What [`Node::local_fast`] did.
enum Local {
    /// The resource is not mastered here (or unknown): take the slow path.
    NotHere,
    /// Done; `remove`: the lock is gone.
    Done {
        /// Drop the lock from the table.
        remove: bool,
        /// The lock's completion (none when a FORCEUNLOCK overtook it).
        now: Option<Immediate>,
    },
    /// Done; `events` holds callbacks to deliver.
    Events,
}

/// One node's lockspace state machine.
pub struct Node {
    pub(crate) me: NodeId,
    pub(crate) members: Vec<NodeId>,
    pub(crate) gen: u64,
    pub(crate) phase: Phase,
    pub(crate) rsbs: FastMap<ResName, RsbEntry>,
    /// As directory node: the master of each resource mastered elsewhere
    /// (and, after a recovery, of some mastered here). A resource this
    /// node masters needs no entry ([`Node::dir_master`]).
    pub(crate) dir: FastMap<ResName, NodeId>,
    pub(crate) lkbs: LockTable,
    pub(crate) rec: crate::recovery::RecState,
    pub(crate) plocks: crate::node_plock::PlockState,
    /// Every member's slot, as agreed at the last recovery (slots start at
    /// 1; a member keeps its slot for as long as it stays a member).
    pub(crate) slots: std::collections::BTreeMap<NodeId, u32>,
    /// Which member keeps each resource's directory entry.
    pub(crate) placement: Placement,
    events: Vec<RsbEvent>,
    /// Recovery steps logged at debug level ([`Node::set_quiet_recovery`]).
    quiet_recovery: bool,
}

/// A key that places a resource's directory entry: the name's own key
/// (from [`Placement::keyed`]) or, by default, a hash of it.
pub type PlacementKey = dyn Fn(&[u8]) -> Option<u64> + Send + Sync;

/// Where resources' directory entries live: the member at `key % n` of
/// the `n` sorted members, where the key is a hash of the resource's
/// name unless the lockspace's user gives one.
///
/// A user that knows which node will use a family of resources most (a
/// cluster filesystem: each node allocates in resource groups of its
/// own) keys them so that their directory entries fall on that node,
/// whose first request of a new resource then needs no lookup over the
/// network. Every member must place alike: the function may depend only
/// on the name and on facts every member reads the same (never on
/// anything that changes while the lockspace is in use).
#[derive(Clone, Default)]
pub struct Placement(Option<std::sync::Arc<PlacementKey>>);

impl Placement {
    /// By `key(name)` where it gives one, else by a hash of the name.
    pub fn keyed(key: impl Fn(&[u8]) -> Option<u64> + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(key)))
    }

    /// The key that places `name`.
    pub fn key(&self, name: &ResName) -> u64 {
        self.0
            .as_ref()
            .and_then(|k| k(name.as_bytes()))
            .unwrap_or_else(|| name.hash64())
    }
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Placement(keyed)"
        } else {
            "Placement(hashed)"
        })
    }
}

impl Node {
    /// A node `me` that is not yet a member of any view. Lock ids are
    /// `first_id + n * id_stride`, so a driver running several nodes (shards)
    /// can tell from an id which one owns it.
    pub fn new(me: NodeId, first_id: u32, id_stride: u32) -> Node {
        assert!(id_stride > 0);
        Node {
            me,
            members: Vec::new(),
            gen: 0,
            phase: Phase::Out,
            rsbs: FastMap::default(),
            dir: FastMap::default(),
            lkbs: LockTable::new(first_id, id_stride),
            rec: Default::default(),
            plocks: Default::default(),
            slots: Default::default(),
            placement: Placement::default(),
            events: Vec::new(),
            quiet_recovery: false,
        }
    }

    /// Logs its recovery steps at debug level only: a lockspace's shards
    /// recover alike, and its first one tells.
    pub fn set_quiet_recovery(&mut self) {
        self.quiet_recovery = true;
    }

    /// Logs a recovery step, at info level unless [`Self::set_quiet_recovery`].
    pub(crate) fn note_recovery(&self, step: &str) {
        let (node, gen, members) = (self.me, self.gen, &self.members);
        if self.quiet_recovery {
            tracing::debug!(%node, gen, ?members, "{step}");
        } else {
            tracing::info!(%node, gen, ?members, "{step}");
        }
    }

    /// A node already running in view `gen` with `members` (tests, static clusters).
    pub fn with_members(me: NodeId, gen: u64, members: &[NodeId]) -> Node {
        let mut n = Node::new(me, 1, 1);
        n.members = sorted(members);
        n.gen = gen;
        n.phase = if n.members.contains(&me) {
            Phase::Running
        } else {
            Phase::Out
        };
        n
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Current generation.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Current recovery phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Current members, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// This node's slot (0 until the first recovery assigned one).
    pub fn slot(&self) -> u32 {
        self.slots.get(&self.me).copied().unwrap_or(0)
    }

    /// Every member's slot, as agreed at the last recovery.
    pub fn slots(&self) -> Vec<(NodeId, u32)> {
        self.slots.iter().map(|(n, s)| (*n, *s)).collect()
    }

    /// Local locks (process copies).
    pub fn locks(&self) -> impl Iterator<Item = &Lkb> {
        self.lkbs.values()
    }

    /// One local lock.
    pub fn lock_info(&self, id: LockId) -> Option<&Lkb> {
        self.lkbs.get(id)
    }

    /// Resources this node knows of.
    pub fn resources(&self) -> impl Iterator<Item = (&ResName, &RsbEntry)> {
        self.rsbs.iter()
    }

    /// The directory node of `name` in the current view.
    pub fn dir_node(&self, name: &ResName) -> Option<NodeId> {
        match self.members[..] {
            // Alone: no key to work out (a placement may cost a hash).
            [only] => Some(only),
            _ => dir_node_by_key(&self.members, self.placement.key(name)),
        }
    }

    /// Places directory entries by `placement` from now on: set before
    /// the node takes any lock, identically on every member.
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// Single entry point for non-call inputs.
    pub fn handle(&mut self, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::Receive { from, env } => self.receive(from, env, out),
            Event::Members { gen, members } => self.set_members(gen, &members, out),
            Event::Fenced(n) => self.fenced(n, out),
        }
    }

    // ---- local calls -------------------------------------------------

    /// Requests a new lock on `name` in `mode`. Completion comes as an
    /// [`Action::Ast`] (possibly already in `out`).
    pub fn lock(
        &mut self,
        name: ResName,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Vec<Action>,
    ) -> Result<LockId, NodeError> {
        let (id, now) = self.lock_now(name, mode, flags, lvb, out)?;
        push_immediate(out, id, now);
        Ok(id)
    }

    /// [`Node::lock`], except that a completion that happens at once is
    /// returned instead of pushed to `out` (the blocking API's fast path).
    pub fn lock_now(
        &mut self,
        name: ResName,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Vec<Action>,
    ) -> Result<(LockId, Option<Immediate>), NodeError> {
        check_lock_flags(mode, flags)?;
        if self.phase == Phase::Out {
            return Err(NodeError::NotMember);
        }
        let (id, lkb) = self
            .lkbs
            .insert_with(|id| Lkb {
                id,
                name,
                grmode: None,
                rqmode: Some(mode),
                op: Op::Request,
                flags,
                lvb: lvb.unwrap_or_default(),
                lvbseq: 0,
                has_lvb: lvb.is_some(),
                cancel: false,
                sent: false,
                master: None,
                demoted: false,
            })
            .ok_or(NodeError::TooMany)?;
        if self.phase != Phase::Running {
            return Ok((id, None));
        }
        let mut r = Self::local_fast(self.me, lkb, id, &mut self.rsbs, &mut self.events);
        if matches!(r, Local::NotHere) && !self.rsbs.contains_key(&name) {
            // A resource nobody here knows yet, whose directory is this
            // node (the usual case in a lockspace of one, and for a new
            // inode's glocks): made here, master here, and the request
            // takes the fast path on it like any other.
            if self.master_of(name, out) == Master::Node(self.me) {
                let lkb = self.lkbs.get_mut(id).expect("lkb just made");
                r = Self::local_fast(self.me, lkb, id, &mut self.rsbs, &mut self.events);
            }
        }
        Ok((id, self.after_local(id, r, out)))
    }

    /// The fast path for a new lock: when `name` is mastered here (or
    /// known to nobody, its directory being this node) and `mode` can be
    /// granted at once without any rule beyond compatibility (nothing
    /// converts or waits, no value block, no flag that changes the grant),
    /// grants it and returns its id. `None`, with nothing changed, in
    /// every other case: call [`Node::lock`] then. The state left is
    /// exactly what `lock` leaves.
    pub fn try_lock_here(&mut self, name: &ResName, mode: Mode, flags: Flags) -> Option<LockId> {
        const PLAIN: u32 = Flags::NOQUEUE.0 | Flags::NOQUEUEBAST.0 | Flags::PERSISTENT.0;
        if flags.0 & !PLAIN != 0 || self.phase != Phase::Running {
            return None;
        }
        let me = self.me;
        let e = match self.rsbs.get_mut(name) {
            Some(e) => e,
            None => {
                // Nobody masters it (its directory is here, with no entry,
                // and no master copy is here): `lock` would make it here.
                if self.dir_node(name) != Some(me)
                    || self.dir.contains_key(name)
                    || self.lkbs.is_full()
                {
                    return None;
                }
                self.rsbs.entry(*name).or_insert(RsbEntry {
                    core: Some(Box::default()),
                    ..RsbEntry::new(Master::Node(me))
                })
            }
        };
        if e.master != Master::Node(me) {
            return None;
        }
        let rsb = e.core.as_mut()?;
        if !rsb.grantable_now(mode) {
            return None;
        }
        let (id, _) = self.lkbs.insert_with(|id| Lkb {
            id,
            name: *name,
            grmode: Some(mode),
            rqmode: None,
            op: Op::None,
            flags,
            lvb: Lvb::default(),
            lvbseq: 0,
            has_lvb: false,
            cancel: false,
            sent: true,
            master: Some(self.me),
            demoted: false,
        })?;
        let key = LockKey { node: self.me, id };
        rsb.grant_quiet(MasterLkb::new(key, mode, flags, None));
        Some(id)
    }

    /// The blocking API's fast path for an unlock: when lock `id` is
    /// granted and idle, its resource mastered here and nothing converts or
    /// waits on it, releases it (writing `lvb` back from PW/EX with
    /// VALBLK) and returns true. False, with nothing changed, otherwise:
    /// call [`Node::unlock`] then.
    pub fn try_unlock_here(&mut self, id: LockId, flags: Flags, lvb: Option<Lvb>) -> bool {
        const PLAIN: u32 = Flags::VALBLK.0 | Flags::IVVALBLK.0;
        if flags.0 & !PLAIN != 0 || self.phase != Phase::Running {
            return false;
        }
        let Some(lkb) = self.lkbs.get_mut(id) else {
            return false;
        };
        if lkb.op != Op::None || lkb.grmode.is_none() || lkb.cancel {
            return false;
        }
        let Some(e) = self.rsbs.get_mut(&lkb.name) else {
            return false;
        };
        if e.master != Master::Node(self.me) {
            return false;
        }
        let Some(rsb) = e.core.as_mut() else {
            return false;
        };
        let lvb = lvb.or(lkb.has_lvb.then_some(lkb.lvb));
        if !rsb.unlock_now(LockKey { node: self.me, id }, flags, lvb) {
            return false;
        }
        self.lkbs.discard(id);
        true
    }

    /// Converts granted lock `id` to `mode`. `lvb` is written back when
    /// converting down from PW/EX with VALBLK.
    pub fn convert(
        &mut self,
        id: LockId,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let now = self.convert_now(id, mode, flags, lvb, out)?;
        push_immediate(out, id, now);
        Ok(())
    }

    /// [`Node::convert`], returning a completion that happens at once.
    pub fn convert_now(
        &mut self,
        id: LockId,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Vec<Action>,
    ) -> Result<Option<Immediate>, NodeError> {
        let lkb = self.lkbs.get_mut(id).ok_or(NodeError::NoLock)?;
        let Some(gr) = lkb.grmode else {
            return Err(NodeError::Busy);
        };
        if lkb.op != Op::None {
            return Err(NodeError::Busy);
        }
        if flags.contains(Flags::EXPEDITE)
            || flags.contains(Flags::CONVDEADLK) && flags.contains(Flags::NOQUEUE)
            || flags.contains(Flags::QUECVT) && !gr.quecvt_allowed(mode)
        {
            return Err(NodeError::Invalid);
        }
        lkb.op = Op::Convert;
        lkb.rqmode = Some(mode);
        lkb.flags = flags;
        lkb.cancel = false;
        if let Some(v) = lvb {
            lkb.lvb = v;
            lkb.has_lvb = true;
        }
        Ok(self.issue_now(id, out))
    }

    /// Unlocks `id`. Without FORCEUNLOCK the lock must be granted and idle.
    pub fn unlock(
        &mut self,
        id: LockId,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let now = self.unlock_now(id, flags, lvb, out)?;
        push_immediate(out, id, now);
        Ok(())
    }

    /// [`Node::unlock`], returning a completion that happens at once.
    pub fn unlock_now(
        &mut self,
        id: LockId,
        flags: Flags,
        lvb: Option<Lvb>,
        out: &mut Vec<Action>,
    ) -> Result<Option<Immediate>, NodeError> {
        let lkb = self.lkbs.get_mut(id).ok_or(NodeError::NoLock)?;
        let force = flags.contains(Flags::FORCEUNLOCK);
        if lkb.op == Op::Unlock || (lkb.op != Op::None || lkb.grmode.is_none()) && !force {
            return Err(NodeError::Busy);
        }
        if lkb.op == Op::Request && !lkb.sent {
            // Never reached a master: unlock locally.
            self.drop_unsent(id);
            return Ok(Some(Immediate::of(Status::Unlocked)));
        }
        lkb.op = Op::Unlock;
        lkb.flags = flags;
        lkb.cancel = false;
        if let Some(v) = lvb {
            lkb.lvb = v;
            lkb.has_lvb = true;
        }
        if self.phase != Phase::Running {
            return Ok(None);
        }
        let r = Self::local_fast(self.me, lkb, id, &mut self.rsbs, &mut self.events);
        Ok(self.after_local(id, r, out))
    }

    /// Cancels the pending request or conversion of `id`; completion comes
    /// as an ast with [`Status::Canceled`] (or the grant, if it won the race).
    pub fn cancel(&mut self, id: LockId, out: &mut Vec<Action>) -> Result<(), NodeError> {
        let lkb = self.lkbs.get_mut(id).ok_or(NodeError::NoLock)?;
        if !matches!(lkb.op, Op::Request | Op::Convert) || lkb.cancel {
            return Err(NodeError::Busy);
        }
        if !lkb.sent {
            if lkb.op == Op::Request {
                self.drop_unsent(id);
            } else {
                lkb.op = Op::None;
                lkb.rqmode = None;
            }
            push_ast(out, id, Status::Canceled, SbFlags::default(), None);
            return Ok(());
        }
        lkb.cancel = true;
        let (name, master) = (lkb.name, lkb.master);
        if self.phase == Phase::Running {
            match master {
                Some(m) if m == self.me => self.receive_cancel(m, name, id, out),
                Some(m) => self.send(m, Msg::Cancel { name, lkid: id }, out),
                // Sent means sent somewhere; recovery re-sends it all.
                None => {}
            }
        }
        Ok(())
    }

    fn drop_unsent(&mut self, id: LockId) {
        if let Some(lkb) = self.lkbs.remove(id) {
            if let Some(e) = self.rsbs.get_mut(&lkb.name) {
                e.lookup_waiters.retain(|w| *w != id);
            }
        }
    }

    // ---- issuing to the master ---------------------------------------

    /// Sends the pending operation of `id` to its master (or runs it here).
    pub(crate) fn issue(&mut self, id: LockId, out: &mut Vec<Action>) {
        let now = self.issue_now(id, out);
        push_immediate(out, id, now);
    }

    /// [`Node::issue`], returning a completion that happens at once.
    fn issue_now(&mut self, id: LockId, out: &mut Vec<Action>) -> Option<Immediate> {
        if self.phase != Phase::Running {
            return None;
        }
        let lkb = self.lkbs.get_mut(id).expect("lkb");
        let r = Self::local_fast(self.me, lkb, id, &mut self.rsbs, &mut self.events);
        self.after_local(id, r, out)
    }

    /// Fast path for a resource already mastered here, on the lock in hand
    /// (no lock-table lookup, one of the resource, no message, the name
    /// not copied). Callbacks other than the lock's own single completion
    /// are left in `events` ([`Local::Events`]).
    fn local_fast(
        me: NodeId,
        lkb: &mut Lkb,
        id: LockId,
        rsbs: &mut FastMap<ResName, RsbEntry>,
        events: &mut Vec<RsbEvent>,
    ) -> Local {
        if lkb.master.is_some_and(|m| m != me) {
            return Local::NotHere;
        }
        let Some(e) = rsbs.get_mut(&lkb.name) else {
            return Local::NotHere;
        };
        if e.master != Master::Node(me) {
            return Local::NotHere;
        }
        let Some(rsb) = e.core.as_mut() else {
            return Local::NotHere;
        };
        if let Some(r) = Self::quick_local(me, lkb, rsb, id) {
            return r;
        }
        Self::do_local_on(me, lkb, rsb, id, events);
        // The usual outcome, one completion of this very lock: apply it to
        // the lock in hand.
        if let [RsbEvent::Cast {
            key,
            status,
            sbflags,
            lvb,
        }] = events[..]
        {
            if key == (LockKey { node: me, id }) {
                events.clear();
                return Self::finished(lkb, status, sbflags, lvb);
            }
        }
        Local::Events
    }

    /// The commonest local operations without the rsb's event list: a new
    /// request granted at once, an unlock with nobody waiting. `None` when
    /// neither applies (nothing changed).
    fn quick_local(me: NodeId, lkb: &mut Lkb, rsb: &mut Rsb, id: LockId) -> Option<Local> {
        if lkb.cancel {
            return None;
        }
        let key = LockKey { node: me, id };
        let (status, sbflags, lvb) = match lkb.op {
            Op::Request => {
                let rq = lkb.rqmode.expect("rq");
                let lvb = lkb.has_lvb.then_some(lkb.lvb);
                let (sbflags, lvb) = rsb.request_now(MasterLkb::new(key, rq, lkb.flags, lvb))?;
                (Status::Granted(rq), sbflags, lvb)
            }
            Op::Unlock => {
                let lvb = lkb.has_lvb.then_some(lkb.lvb);
                if !rsb.unlock_now(key, lkb.flags, lvb) {
                    return None;
                }
                (Status::Unlocked, SbFlags::default(), None)
            }
            Op::Convert | Op::None => return None,
        };
        lkb.sent = true;
        lkb.master = Some(me);
        Some(Self::finished(lkb, status, sbflags, lvb))
    }

    /// Applies the lock's own completion to the lock in hand.
    fn finished(lkb: &mut Lkb, status: Status, sbflags: SbFlags, lvb: Option<(Lvb, u32)>) -> Local {
        match apply_cast(lkb, status, sbflags, lvb) {
            Some((remove, sbflags)) => Local::Done {
                remove,
                now: Some(Immediate {
                    status,
                    sbflags,
                    lvb: lvb.map(|(v, _)| v),
                }),
            },
            None => Local::Done {
                remove: false,
                now: None,
            },
        }
    }

    /// Finishes [`Node::local_fast`]: drops a finished lock, delivers the
    /// callbacks left in `events`, or takes the slow path. Returns the
    /// lock's own completion when that was all that happened.
    fn after_local(&mut self, id: LockId, r: Local, out: &mut Vec<Action>) -> Option<Immediate> {
        match r {
            Local::NotHere => {
                self.issue_slow(id, out);
                None
            }
            Local::Done { remove, now } => {
                if remove {
                    self.lkbs.discard(id);
                }
                now
            }
            Local::Events => {
                let me = self.me;
                let events = std::mem::take(&mut self.events);
                // Callbacks to peers need the name; take it while the lock
                // still exists (a completion may remove it).
                let name = events
                    .iter()
                    .any(|ev| event_key(ev).node != me)
                    .then(|| self.lkbs[id].name);
                for &ev in &events {
                    match name {
                        Some(name) => self.deliver(name, ev, out),
                        None => self.holder_event(ev, out),
                    }
                }
                let mut events = events;
                events.clear();
                self.events = events;
                None
            }
        }
    }

    /// [`Node::issue`] for a resource not (known to be) mastered here.
    fn issue_slow(&mut self, id: LockId, out: &mut Vec<Action>) {
        let lkb = &self.lkbs[id];
        let name = lkb.name;
        // A granted lock's operations go where it was granted.
        if let Some(m) = lkb.master.filter(|_| lkb.op != Op::Request) {
            return if m == self.me {
                self.do_local(id, out)
            } else {
                self.send_op(id, m, out)
            };
        }
        match self.master_of(name, out) {
            Master::Node(m) if m == self.me => self.do_local(id, out),
            Master::Node(m) => self.send_op(id, m, out),
            Master::Unknown | Master::LookingUp => {
                let e = self.rsbs.get_mut(&name).expect("entry made by master_of");
                if !e.lookup_waiters.contains(&id) {
                    e.lookup_waiters.push(id);
                }
            }
        }
    }

    /// The master of `name`, starting a lookup if it is unknown.
    fn master_of(&mut self, name: ResName, out: &mut Vec<Action>) -> Master {
        if let Some(e) = self.rsbs.get(&name) {
            if e.master != Master::Unknown {
                return e.master;
            }
        }
        let me = self.me;
        let dir = self.dir_node(&name).expect("running node has members");
        let e = self
            .rsbs
            .entry(name)
            .or_insert_with(|| RsbEntry::new(Master::Unknown));
        if dir == me {
            // No entry: nobody masters it, and this node becomes master.
            let m = self.dir.get(&name).copied().unwrap_or(me);
            e.master = Master::Node(m);
            if m == me && e.core.is_none() {
                e.core = Some(Box::default());
            }
            return e.master;
        }
        e.master = Master::LookingUp;
        self.send(dir, Msg::Lookup { name }, out);
        Master::LookingUp
    }

    /// The master that this node, as directory node of `name`, records: an
    /// entry of `dir`, or this node when it keeps the master copy. A
    /// resource mastered by its directory node has no entry (its rsb is
    /// the record, as in the kernel): a new lock on a resource of its own
    /// costs no directory insert.
    pub(crate) fn dir_master(&self, name: &ResName) -> Option<NodeId> {
        match self.dir.get(name) {
            Some(m) => Some(*m),
            None => self.has_core(name).then_some(self.me),
        }
    }

    /// Sends `msg` to `to` in the current generation.
    pub(crate) fn send(&self, to: NodeId, msg: Msg, out: &mut Vec<Action>) {
        out.push(Action::Send {
            to,
            env: Envelope { gen: self.gen, msg },
        });
    }

    fn op_msg(&self, lkb: &Lkb) -> Msg {
        let (name, lkid, flags) = (lkb.name, lkb.id, lkb.flags);
        let lvb = lkb.has_lvb.then_some(lkb.lvb);
        match lkb.op {
            Op::Request => Msg::Request {
                name,
                lkid,
                mode: lkb.rqmode.expect("rq"),
                flags,
                lvb,
            },
            Op::Convert => Msg::Convert {
                name,
                lkid,
                mode: lkb.rqmode.expect("rq"),
                flags,
                lvb,
            },
            Op::Unlock => Msg::Unlock {
                name,
                lkid,
                flags,
                lvb,
            },
            Op::None => unreachable!("issue without an operation"),
        }
    }

    fn send_op(&mut self, id: LockId, master: NodeId, out: &mut Vec<Action>) {
        let lkb = self.lkbs.get_mut(id).expect("lkb");
        if lkb.op == Op::None {
            return;
        }
        lkb.sent = true;
        lkb.master = Some(master);
        let (name, cancel) = (lkb.name, lkb.cancel);
        let msg = self.op_msg(&self.lkbs[id]);
        self.send(master, msg, out);
        if cancel {
            self.send(master, Msg::Cancel { name, lkid: id }, out);
        }
    }

    /// Runs the pending operation of local lock `id` on the local master
    /// copy: the fast path, no message is built.
    fn do_local(&mut self, id: LockId, out: &mut Vec<Action>) {
        let lkb = self.lkbs.get_mut(id).expect("lkb");
        let name = lkb.name;
        let mut events = std::mem::take(&mut self.events);
        let Some(rsb) = self.rsbs.get_mut(&name).and_then(|e| e.core.as_mut()) else {
            tracing::error!(%name, "local master copy missing");
            self.events = events;
            return;
        };
        Self::do_local_on(self.me, lkb, rsb, id, &mut events);
        for ev in events.drain(..) {
            self.deliver(name, ev, out);
        }
        self.events = events;
    }

    /// The rsb work of [`Node::do_local`] on master copy `rsb`; callbacks
    /// go to `events`.
    fn do_local_on(
        me: NodeId,
        lkb: &mut Lkb,
        rsb: &mut Rsb,
        id: LockId,
        events: &mut Vec<RsbEvent>,
    ) {
        lkb.sent = true;
        lkb.master = Some(me);
        let (op, rq, flags, cancel) = (lkb.op, lkb.rqmode, lkb.flags, lkb.cancel);
        let lvb = lkb.has_lvb.then_some(lkb.lvb);
        let key = LockKey { node: me, id };
        let res = match op {
            Op::Request => rsb.request(MasterLkb::new(key, rq.expect("rq"), flags, lvb), events),
            Op::Convert => rsb.convert(key, rq.expect("rq"), flags, lvb, events),
            Op::Unlock => rsb.unlock(key, flags, lvb, events),
            Op::None => Ok(()),
        };
        if let Err(e) = res {
            tracing::warn!(name = %lkb.name, %id, error = %e, "local lock operation refused");
        }
        if cancel && matches!(op, Op::Request | Op::Convert) {
            let _ = rsb.cancel(key, events);
        }
    }

    /// A master-side callback for a lock held on this node.
    fn holder_event(&mut self, ev: RsbEvent, out: &mut Vec<Action>) {
        match ev {
            RsbEvent::Cast {
                key,
                status,
                sbflags,
                lvb,
            } => self.receive_cast(key.id, status, sbflags, lvb, out),
            RsbEvent::Demoted { key } => self.receive_demoted(key.id),
            RsbEvent::Bast { key, mode } => {
                if self.lkbs.contains_key(key.id) {
                    out.push(Action::Bast { id: key.id, mode });
                }
            }
        }
    }

    // ---- receiving ---------------------------------------------------

    /// Handles a message from `from`.
    pub fn receive(&mut self, from: NodeId, env: Envelope, out: &mut Vec<Action>) {
        if let Msg::PurgeOrphans { owner } = env.msg {
            // Not tied to a generation (see `purge_orphans`).
            if self.phase == Phase::Running {
                self.receive_purge(owner, out);
            } else if self.rec.buffered.len() < MAX_BUFFERED {
                let gen = self.gen;
                self.rec.buffered.push((from, Envelope { gen, ..env }));
            }
            return;
        }
        if !self.members.contains(&from) && env.gen <= self.gen {
            tracing::debug!(%from, "dropping message from non-member");
            return;
        }
        if env.gen < self.gen {
            tracing::trace!(%from, gen = env.gen, "dropping message of an old generation");
            return;
        }
        if env.gen > self.gen || (self.phase != Phase::Running && !is_recovery(&env.msg)) {
            if self.rec.buffered.len() >= MAX_BUFFERED {
                tracing::error!(%from, gen = env.gen, "recovery buffer full, message dropped");
                return;
            }
            self.rec.buffered.push((from, env));
            return;
        }
        if is_recovery(&env.msg) {
            self.receive_recovery(from, env.msg, out);
        } else {
            self.receive_lock_msg(from, env.msg, out);
        }
    }

    pub(crate) fn receive_lock_msg(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) {
        if let Msg::Request { name, .. }
        | Msg::Convert { name, .. }
        | Msg::Unlock { name, .. }
        | Msg::Cancel { name, .. } = msg
        {
            if !self.has_core(&name) {
                return self.no_master_copy(from, msg, out);
            }
        }
        match msg {
            Msg::Request {
                name,
                lkid,
                mode,
                flags,
                lvb,
            } => {
                self.master_do(from, name, out, |rsb, key, ev| {
                    rsb.request(MasterLkb::new(key(lkid), mode, flags, lvb), ev)
                });
            }
            Msg::Convert {
                name,
                lkid,
                mode,
                flags,
                lvb,
            } => {
                self.master_do(from, name, out, |rsb, key, ev| {
                    rsb.convert(key(lkid), mode, flags, lvb, ev)
                });
            }
            Msg::Unlock {
                name,
                lkid,
                flags,
                lvb,
            } => {
                self.master_do(from, name, out, |rsb, key, ev| {
                    rsb.unlock(key(lkid), flags, lvb, ev)
                });
            }
            Msg::Cancel { name, lkid } => self.receive_cancel(from, name, lkid, out),
            Msg::Cast {
                lkid,
                status,
                sbflags,
                lvb,
                ..
            } => self.receive_cast(lkid, status, sbflags, lvb, out),
            Msg::Demoted { lkid, .. } => self.receive_demoted(lkid),
            Msg::Bast { lkid, mode, .. } => {
                if self.lkbs.contains_key(lkid) {
                    out.push(Action::Bast { id: lkid, mode });
                }
            }
            Msg::Lookup { name } => self.receive_lookup(from, name, out),
            Msg::PlockReq {
                req,
                fam,
                file,
                owner,
                op,
            } => self.receive_plock_req(from, req, fam, file, owner, op, out),
            Msg::PlockReply { req, result } => self.receive_plock_reply(req, result, out),
            Msg::LookupReply { name, master } => self.receive_lookup_reply(name, master, out),
            Msg::NotMaster { name, lkid } => self.receive_not_master(from, name, lkid, out),
            Msg::Remove { name } => self.receive_remove(from, name),
            other => tracing::error!(?other, "recovery message routed as lock message"),
        }
    }

    fn receive_cancel(&mut self, from: NodeId, name: ResName, lkid: LockId, out: &mut Vec<Action>) {
        self.master_do(from, name, out, |rsb, key, ev| {
            rsb.cancel(key(lkid), ev).map(|_| ())
        });
    }

    /// Runs `f` on the master copy of `name` for a lock owned by `from`,
    /// then delivers the resulting callbacks.
    fn master_do(
        &mut self,
        from: NodeId,
        name: ResName,
        out: &mut Vec<Action>,
        f: impl FnOnce(&mut Rsb, &dyn Fn(LockId) -> LockKey, &mut Vec<RsbEvent>) -> Result<(), RsbError>,
    ) {
        let mut events = std::mem::take(&mut self.events);
        let res = match self.rsbs.get_mut(&name).and_then(|e| e.core.as_mut()) {
            Some(rsb) => f(rsb, &|id| LockKey { node: from, id }, &mut events),
            None => Err(RsbError::NotFound),
        };
        if let Err(e) = res {
            tracing::warn!(%from, %name, error = %e, "lock message refused by master");
        }
        for ev in events.drain(..) {
            self.deliver(name, ev, out);
        }
        self.events = events;
    }

    /// Routes a master-side callback to the local holder or to a peer.
    pub(crate) fn deliver(&mut self, name: ResName, ev: RsbEvent, out: &mut Vec<Action>) {
        let (RsbEvent::Cast { key, .. } | RsbEvent::Demoted { key } | RsbEvent::Bast { key, .. }) =
            ev;
        if key.node == self.me {
            return self.holder_event(ev, out);
        }
        if !self.members.contains(&key.node) {
            return;
        }
        let lkid = key.id;
        let msg = match ev {
            RsbEvent::Cast {
                status,
                sbflags,
                lvb,
                ..
            } => Msg::Cast {
                name,
                lkid,
                status,
                sbflags,
                lvb,
            },
            RsbEvent::Demoted { .. } => Msg::Demoted { name, lkid },
            RsbEvent::Bast { mode, .. } => Msg::Bast { name, lkid, mode },
        };
        out.push(Action::Send {
            to: key.node,
            env: Envelope { gen: self.gen, msg },
        });
    }

    fn receive_cast(
        &mut self,
        id: LockId,
        status: Status,
        sbflags: SbFlags,
        lvb: Option<(Lvb, u32)>,
        out: &mut Vec<Action>,
    ) {
        let Some(lkb) = self.lkbs.get_mut(id) else {
            tracing::debug!(%id, "cast for unknown lock");
            return;
        };
        if let Some((remove, sbflags)) = apply_cast(lkb, status, sbflags, lvb) {
            if remove {
                self.lkbs.discard(id);
            }
            push_ast(out, id, status, sbflags, lvb.map(|(v, _)| v));
        }
    }

    fn receive_demoted(&mut self, id: LockId) {
        if let Some(lkb) = self.lkbs.get_mut(id) {
            lkb.grmode = Some(Mode::Nl);
            lkb.demoted = true;
        }
    }

    fn receive_lookup(&mut self, from: NodeId, name: ResName, out: &mut Vec<Action>) {
        if self.dir_node(&name) != Some(self.me) {
            tracing::warn!(%from, %name, "lookup sent to a node that is not the directory node");
            return;
        }
        let master = match self.dir_master(&name) {
            Some(m) => m,
            None if from == self.me => from,
            None => *self.dir.entry(name).or_insert(from),
        };
        if master == self.me {
            let e = self
                .rsbs
                .entry(name)
                .or_insert_with(|| RsbEntry::new(Master::Node(self.me)));
            e.master = Master::Node(self.me);
            e.core.get_or_insert_with(Box::default);
        }
        if from == self.me {
            self.receive_lookup_reply(name, master, out);
        } else {
            out.push(Action::Send {
                to: from,
                env: Envelope {
                    gen: self.gen,
                    msg: Msg::LookupReply { name, master },
                },
            });
        }
    }

    fn receive_lookup_reply(&mut self, name: ResName, master: NodeId, out: &mut Vec<Action>) {
        let me = self.me;
        let Some(e) = self.rsbs.get_mut(&name) else {
            return;
        };
        e.master = Master::Node(master);
        if master == me {
            e.core.get_or_insert_with(Box::default);
        }
        let waiters = std::mem::take(&mut e.lookup_waiters);
        self.release_held(name, out);
        for id in waiters {
            if self.lkbs.contains_key(id) {
                self.issue(id, out);
            }
        }
    }

    pub(crate) fn new_entry(&mut self, name: ResName) -> &mut RsbEntry {
        self.rsbs
            .entry(name)
            .or_insert_with(|| RsbEntry::new(Master::Unknown))
    }
}

fn is_recovery(msg: &Msg) -> bool {
    matches!(
        msg,
        Msg::RecLocks { .. }
            | Msg::RecDone1 { .. }
            | Msg::RecMaster { .. }
            | Msg::RecSetMaster { .. }
            | Msg::RecDone2
            | Msg::RecPlocks { .. }
    )
}

/// A completion that happened during the call that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Immediate {
    /// Outcome.
    pub status: Status,
    /// Status flags.
    pub sbflags: SbFlags,
    /// Value block read on grant (VALBLK).
    pub lvb: Option<Lvb>,
}

impl Immediate {
    fn of(status: Status) -> Immediate {
        Immediate {
            status,
            sbflags: SbFlags::default(),
            lvb: None,
        }
    }
}

/// Pushes an immediate completion as the [`Action::Ast`] it stands for.
fn push_immediate(out: &mut Vec<Action>, id: LockId, now: Option<Immediate>) {
    if let Some(c) = now {
        push_ast(out, id, c.status, c.sbflags, c.lvb);
    }
}

pub(crate) fn push_ast(
    out: &mut Vec<Action>,
    id: LockId,
    status: Status,
    sbflags: SbFlags,
    lvb: Option<Lvb>,
) {
    out.push(Action::Ast {
        id,
        status,
        sbflags,
        lvb,
    });
}

/// Applies a completion to the holder's copy of the lock. Returns `None`
/// when no completion is reported (a FORCEUNLOCK overtook it), else whether
/// the lock is gone and the status flags to report.
fn apply_cast(
    lkb: &mut Lkb,
    status: Status,
    mut sbflags: SbFlags,
    lvb: Option<(Lvb, u32)>,
) -> Option<(bool, SbFlags)> {
    lkb.cancel = false;
    if lkb.op == Op::Unlock && status != Status::Unlocked {
        // A FORCEUNLOCK overtook this completion: only track the mode.
        if let Status::Granted(m) = status {
            lkb.grmode = Some(m);
        }
        lkb.rqmode = None;
        return None;
    }
    let mut remove = false;
    match status {
        Status::Granted(m) => {
            // A conversion down from PW/EX wrote our value block: the
            // master's sequence moved one past the one we read.
            let wrote = lkb.op == Op::Convert
                && lkb.grmode >= Some(Mode::Pw)
                && lkb.has_lvb
                && lkb.flags.contains(Flags::VALBLK)
                && !lkb.flags.contains(Flags::IVVALBLK)
                && lvb.is_none();
            if wrote {
                lkb.lvbseq = lkb.lvbseq.wrapping_add(1);
            }
            lkb.grmode = Some(m);
            lkb.rqmode = None;
            lkb.op = Op::None;
            if lkb.demoted {
                sbflags |= SbFlags::DEMOTED;
                lkb.demoted = false;
            }
            if let Some((v, seq)) = lvb {
                lkb.lvb = v;
                lkb.lvbseq = seq;
                lkb.has_lvb = true;
            }
        }
        Status::Unlocked => remove = true,
        Status::Again | Status::Deadlock | Status::Canceled => {
            if lkb.grmode.is_none() {
                remove = true;
            } else {
                lkb.op = Op::None;
                lkb.rqmode = None;
            }
        }
    }
    Some((remove, sbflags))
}

/// The lock a master-side callback is for.
fn event_key(ev: &RsbEvent) -> LockKey {
    match ev {
        RsbEvent::Cast { key, .. } | RsbEvent::Demoted { key } | RsbEvent::Bast { key, .. } => *key,
    }
}

/// The directory node of `name` among sorted `members`, placed by a hash
/// of the name (the default [`Placement`]).
pub fn dir_node(members: &[NodeId], name: &ResName) -> Option<NodeId> {
    dir_node_by_key(members, name.hash64())
}

/// The member at `key % n` of the `n` sorted `members`.
fn dir_node_by_key(members: &[NodeId], key: u64) -> Option<NodeId> {
    if members.is_empty() {
        return None;
    }
    Some(members[(key % members.len() as u64) as usize])
}

pub(crate) fn sorted(members: &[NodeId]) -> Vec<NodeId> {
    let s: BTreeSet<NodeId> = members.iter().copied().collect();
    s.into_iter().collect()
}

/// The kernel's `set_lock_args` checks for a new request.
fn check_lock_flags(mode: Mode, flags: Flags) -> Result<(), NodeError> {
    let bad = flags.contains(Flags::CANCEL)
        || flags.contains(Flags::CONVERT)
        || flags.contains(Flags::QUECVT)
        || flags.contains(Flags::CONVDEADLK)
        || flags.contains(Flags::EXPEDITE) && (flags.contains(Flags::NOQUEUE) || mode != Mode::Nl);
    if bad {
        Err(NodeError::Invalid)
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
