//! The service manager of one node, sans IO: fed cmand's group events in
//! agreed order, local facts (quorum, fencing notices, agent results,
//! administrator requests, ticks), it returns actions (group messages to
//! send, agent operations to run, replies).
//!
//! **One writer through agreed order.** Every node's daemon joins the
//! cmand process group `rgmanager`. The service records ([`Replicated`])
//! change only when a group message or a membership change (confchg) is
//! applied, and every member applies the same messages in the same order,
//! so every member holds the same records; a record outlives any node,
//! including the one whose message changed it last. Messages that decide
//! something carry the record's version and are dropped when it moved on
//! (compare-and-set): of two nodes proposing at once, the first in the
//! agreed order wins and the other's message is stale. Placement is
//! proposed by the lowest-numbered synced member (the "RG master"), and
//! only while its cmand is quorate; results come from the owner that ran
//! the agents. A node joining the group gets the records from the lowest
//! synced member ([`Msg::Snapshot`], taken at the confchg that let it in)
//! and replays what it buffered after that point.
//!
//! **Fencing.** A member that fails (the confchg says `failed`) keeps its
//! services (shown `recoverable`) until a [`Msg::Fenced`] for it is
//! applied: each node sends one when its cmand reports the fence.
//!
//! **Quorum.** A node whose cmand loses quorum stops every service it runs
//! and proposes nothing; the quorate side fences it before taking over.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{DependMode, Recovery, RmConfig, ServiceConfig};
use crate::placement::{self, DomainIds, Load};
use crate::state::{After, Record, State};
use crate::NodeId;

/// Where a confchg sits in cmand's agreed order: (view, seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pos {
    /// View sequence.
    pub view: u64,
    /// Agreed sequence inside the view (0: came with the view).
    pub seq: u64,
}

/// The records every member agrees on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicated {
    /// Service records by `service:NAME`.
    pub services: BTreeMap<String, Record>,
    /// Group members (nodes running rgmanager).
    pub members: BTreeSet<NodeId>,
    /// Members that hold the records.
    pub synced: BTreeSet<NodeId>,
    /// Failed nodes whose fencing is awaited.
    pub awaiting_fence: BTreeMap<NodeId, Pos>,
    /// Members shutting down: nothing is placed on them.
    pub leaving: BTreeSet<NodeId>,
    /// Nodes whose daemon left while owning running services.
    pub orphaned: BTreeSet<NodeId>,
    /// `config_version` of the `<rm>` the records follow.
    pub config_version: u64,
    /// Services gone from the configuration, still being stopped.
    pub removing: BTreeSet<String>,
    /// The records were rebuilt without knowing owners: nothing is placed
    /// until every node in `awaiting_fence` is fenced.
    pub blind: bool,
    /// `clusvcadm -l`: the resource managers are locked; nothing is
    /// started (no placement, no failover, no failback, no enable) until
    /// `clusvcadm -u`. Gone with the records (rgmanager 3 reset it when
    /// quorum dissolved).
    #[serde(default)]
    pub locked: bool,
}

/// An administrator's operation (`clusvcadm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// `-e` (on `node`, or by the domain with `-F`).
    Enable(Option<NodeId>),
    /// `-d`.
    Disable,
    /// `-r` (to `node`, or the best other node).
    Relocate(Option<NodeId>),
    /// `-R`.
    Restart,
    /// `-s`.
    Stop,
    /// `-Z`.
    Freeze,
    /// `-U`.
    Unfreeze,
    /// `-M` (as a relocation: our agents cannot migrate live).
    Migrate(NodeId),
    /// `-c`: start the failed non-critical resources of a running
    /// service. Our services have none (no `__independent_subtree`), so
    /// a running service is never partial: "already running".
    Convalesce,
}

/// rgmanager's request results (`RG_E*`), the exit status of clusvcadm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResult {
    /// 0.
    Success,
    /// -1.
    Fail,
    /// -2: the service failed.
    Abort,
    /// -4.
    NoService,
    /// -6.
    Again,
    /// -7.
    Depend,
    /// -8.
    Invalid,
    /// -9.
    Quorum,
    /// -10.
    Running,
    /// -11.
    Frozen,
    /// -12.
    Node,
    /// -15: no node of its domain can run it.
    Domain,
}

impl AdminResult {
    /// `RG_E*` value.
    pub fn code(self) -> i32 {
        match self {
            AdminResult::Success => 0,
            AdminResult::Fail => -1,
            AdminResult::Abort => -2,
            AdminResult::NoService => -4,
            AdminResult::Again => -6,
            AdminResult::Depend => -7,
            AdminResult::Invalid => -8,
            AdminResult::Quorum => -9,
            AdminResult::Running => -10,
            AdminResult::Frozen => -11,
            AdminResult::Node => -12,
            AdminResult::Domain => -15,
        }
    }

    /// rgmanager's `rg_strerror` text.
    pub fn message(self) -> &'static str {
        match self {
            AdminResult::Success => "Success",
            AdminResult::Fail => "Failure",
            AdminResult::Abort => "Aborted; service failed",
            AdminResult::NoService => "Service does not exist",
            AdminResult::Again => "Temporary failure; try again",
            AdminResult::Depend => "Operation violates dependency rule",
            AdminResult::Invalid => "Invalid operation for resource",
            AdminResult::Quorum => "Operation requires quorum",
            AdminResult::Running => "Service is already running",
            AdminResult::Frozen => "Failure: Service is frozen",
            AdminResult::Node => "Target node dead / nonexistent",
            AdminResult::Domain => "Service not runnable",
        }
    }
}

/// A message of the group, applied by every member in agreed order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub enum Msg {
    /// The master places a stopped service on `node`.
    Start {
        /// Service.
        svc: String,
        /// Record version it saw.
        ver: u64,
        /// Target.
        node: NodeId,
    },
    /// The master moves a running service to a better node (failback).
    Failback {
        /// Service.
        svc: String,
        /// Record version.
        ver: u64,
        /// Target.
        node: NodeId,
    },
    /// The owner's start finished; after a failure it ran stop too.
    StartDone {
        /// Service.
        svc: String,
        /// Version of the start.
        ver: u64,
        /// The owner.
        node: NodeId,
        /// Start succeeded.
        ok: bool,
        /// (After a failed start) the stop succeeded.
        stop_ok: bool,
    },
    /// The owner's stop finished.
    StopDone {
        /// Service.
        svc: String,
        /// Version of the stop.
        ver: u64,
        /// The owner.
        node: NodeId,
        /// Stop succeeded.
        ok: bool,
    },
    /// The owner's status check failed.
    StatusFailed {
        /// Service.
        svc: String,
        /// Version.
        ver: u64,
        /// The owner.
        node: NodeId,
        /// Owner's clock, for `restart_expire_time`.
        now_ms: u64,
    },
    /// The owner no longer runs it (stopped after a quorum loss or a
    /// daemon restart).
    Lost {
        /// Service.
        svc: String,
        /// Version.
        ver: u64,
        /// The owner.
        node: NodeId,
        /// The cleanup stop succeeded.
        ok: bool,
    },
    /// An administrator's request made on node `from`.
    Admin {
        /// Service.
        svc: String,
        /// Operation.
        op: AdminOp,
        /// Requesting node.
        from: NodeId,
        /// Request id on that node.
        id: u64,
    },
    /// `clusvcadm -l` / `-u` made on node `from`.
    Lock {
        /// Locked (`-l`) or unlocked (`-u`).
        locked: bool,
        /// Requesting node.
        from: NodeId,
        /// Request id on that node.
        id: u64,
    },
    /// A new cluster.conf, applied by every member at the same point.
    Config {
        /// Its `config_version`.
        version: u64,
        /// The whole text.
        text: String,
    },
    /// `node` shuts down: its services move, nothing more goes there.
    Leaving {
        /// The node.
        node: NodeId,
    },
    /// cmand fenced `node` after its failure at `failed_at`.
    Fenced {
        /// Victim.
        node: NodeId,
        /// The confchg that reported the failure.
        failed_at: Pos,
    },
    /// The records as of confchg `pos`, for members not synced.
    Snapshot {
        /// The confchg.
        pos: Pos,
        /// Records.
        state: Box<Replicated>,
        /// Who it is for.
        for_nodes: Vec<NodeId>,
    },
}

/// A local agent operation on a whole service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    /// Start the tree (on failure the driver stops it and reports that).
    Start,
    /// Stop the tree.
    Stop,
    /// Status check.
    Status,
    /// Stop what may be left here (daemon restart, quorum loss).
    Cleanup,
}

/// An input of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The group's membership changed.
    Confchg {
        /// Agreed position.
        pos: Pos,
        /// Members after the change.
        members: Vec<NodeId>,
        /// Who joined.
        joined: Vec<NodeId>,
        /// Who failed (their node died; fencing follows).
        failed: Vec<NodeId>,
        /// Nodes cmand still has to fence (its status's victims).
        unfenced: Vec<NodeId>,
    },
    /// A group message, in agreed order.
    Deliver(Msg),
    /// This node's cmand: quorate or not.
    Quorum(bool),
    /// This node's cmand reported a node fenced.
    FenceNotice(NodeId),
    /// A local agent operation finished.
    OpDone {
        /// Service.
        svc: String,
        /// Operation.
        op: Op,
        /// Success.
        ok: bool,
        /// For a failed start: the stop that followed succeeded.
        stop_ok: bool,
    },
    /// Time passes.
    Tick {
        /// Now, ms (monotonic).
        now_ms: u64,
    },
    /// This node's cmand has a new cluster.conf.
    NewConfig {
        /// Its `config_version`.
        version: u64,
        /// The text.
        text: String,
    },
    /// This node's daemon is asked to shut down.
    Shutdown,
    /// An administrator's request on this node.
    Admin {
        /// Request id (for the reply).
        id: u64,
        /// Service.
        svc: String,
        /// Operation.
        op: AdminOp,
    },
    /// `clusvcadm -l` (true) or `-u` (false) on this node.
    Lock {
        /// Request id (for the reply).
        id: u64,
        /// Lock or unlock.
        locked: bool,
    },
}

/// An action for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to the group.
    Send(Msg),
    /// Run an agent operation on a service's tree.
    Run {
        /// Service.
        svc: String,
        /// Operation.
        op: Op,
    },
    /// Answer request `id`: applied with `result`.
    Reply {
        /// Request id.
        id: u64,
        /// Result.
        result: AdminResult,
    },
}

/// A service's configuration as the core uses it.
#[derive(Clone, Debug)]
struct Svc {
    domain: Option<DomainIds>,
    cfg: ServiceConfig,
    /// The tree before a reconfiguration, until it is stopped.
    stop_cfg: Option<ServiceConfig>,
}

/// Membership as far as a joiner knows it before the snapshot.
#[derive(Clone, Debug)]
struct Joining {
    /// Members already there when this node joined (not co-joiners).
    old: BTreeSet<NodeId>,
    /// Joined in the same confchg.
    co: BTreeSet<NodeId>,
    /// Everything since this node's join confchg.
    buffer: Vec<Input>,
    /// Nodes that failed while joining.
    failed: BTreeSet<NodeId>,
}

/// One node's rgmanager.
pub struct Node {
    me: NodeId,
    svcs: BTreeMap<String, Svc>,
    ids: BTreeMap<String, NodeId>,
    /// `config_version` of the configuration this node started with.
    config_version: u64,
    /// The newest configuration this node offered the group.
    offered: u64,
    rep: Replicated,
    joining: Option<Joining>,
    /// This node holds the agreed records (fresh or from a snapshot).
    holding: bool,
    quorate: bool,
    now_ms: u64,
    status_every_ms: u64,
    /// Operation running per service, with the version it serves.
    running: BTreeMap<String, (Op, u64)>,
    /// Last finished operation per service (op, version).
    finished: BTreeMap<String, (Op, u64)>,
    /// Services whose resources are (or may be) up here.
    up: BTreeSet<String>,
    next_status_ms: BTreeMap<String, u64>,
    /// Master proposals sent: service → version.
    proposed: BTreeMap<String, u64>,
    /// Fences cmand reported, not sent yet.
    fence_notices: BTreeSet<NodeId>,
    /// Services whose failback is considered once they run again (after
    /// a confchg with joins; one starting then is checked once started).
    failback_due: BTreeSet<String>,
    out: Vec<Action>,
    replaying: bool,
    log: Vec<String>,
}

impl Node {
    /// A node `me` with the `<rm>` config and node names → ids.
    pub fn new(me: NodeId, cfg: &RmConfig, ids: &BTreeMap<String, NodeId>) -> Node {
        let svcs = services_of(cfg, ids);
        Node {
            me,
            svcs,
            ids: ids.clone(),
            config_version: cfg.config_version,
            offered: 0,
            rep: Replicated::default(),
            joining: None,
            holding: false,
            quorate: false,
            now_ms: 0,
            status_every_ms: 10_000,
            running: BTreeMap::new(),
            finished: BTreeMap::new(),
            up: BTreeSet::new(),
            next_status_ms: BTreeMap::new(),
            proposed: BTreeMap::new(),
            fence_notices: BTreeSet::new(),
            failback_due: BTreeSet::new(),
            out: Vec::new(),
            replaying: false,
            log: Vec::new(),
        }
    }

    /// Sets the status check interval.
    pub fn set_status_interval_ms(&mut self, ms: u64) {
        self.status_every_ms = ms.max(1);
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The records (meaningful once synced).
    pub fn replicated(&self) -> &Replicated {
        &self.rep
    }

    /// True once this node holds the agreed records.
    pub fn is_synced(&self) -> bool {
        self.holding
    }

    /// True once this node is leaving and runs nothing any more.
    pub fn is_drained(&self) -> bool {
        self.running.is_empty()
            && self.up.is_empty()
            && !self
                .rep
                .services
                .values()
                .any(|r| r.owner == Some(self.me) && !matches!(r.state, State::Failed))
    }

    /// This node's cmand is quorate.
    pub fn is_quorate(&self) -> bool {
        self.quorate
    }

    /// Services whose resources may be up on this node.
    pub fn local_up(&self) -> &BTreeSet<String> {
        &self.up
    }

    /// Takes the log lines written since the last call (rgmanager's
    /// messages: "Taking over service ...", "#71: Relocating ...").
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// The configured services.
    pub fn service_names(&self) -> impl Iterator<Item = &String> {
        self.svcs.keys()
    }

    fn note(&mut self, line: String) {
        if !self.replaying {
            tracing::info!("{line}");
            self.log.push(line);
        }
    }

    fn emit(&mut self, a: Action) {
        if !self.replaying {
            self.out.push(a);
        }
    }

    /// Feeds one input; returns the actions it calls for.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Quorum(q) => self.quorate = q,
            Input::Tick { now_ms } => self.now_ms = now_ms,
            Input::FenceNotice(node) => {
                self.fence_notices.insert(node);
                self.send_fence_notices();
            }
            Input::NewConfig { version, text } => {
                if self.holding && version > self.rep.config_version && version > self.offered {
                    self.offered = version;
                    self.emit(Action::Send(Msg::Config { version, text }));
                }
            }
            Input::Shutdown => {
                let node = self.me;
                self.emit(Action::Send(Msg::Leaving { node }))
            }
            Input::OpDone {
                svc,
                op,
                ok,
                stop_ok,
            } => self.op_done(&svc, op, ok, stop_ok),
            Input::Admin { id, svc, op } => self.admin_request(id, svc, op),
            Input::Lock { id, locked } => {
                // rgmanager 3 answered lock requests only while quorate.
                if self.quorate && self.is_synced() {
                    let from = self.me;
                    self.emit(Action::Send(Msg::Lock { locked, from, id }));
                } else {
                    self.emit(Action::Reply {
                        id,
                        result: AdminResult::Fail,
                    });
                }
            }
            group @ (Input::Confchg { .. } | Input::Deliver(_)) => self.group_input(group),
        }
        if self.is_synced() {
            self.evaluate();
        }
        std::mem::take(&mut self.out)
    }

    fn admin_request(&mut self, id: u64, svc: String, op: AdminOp) {
        let svc = crate::config::full_name(&svc);
        if !self.svcs.contains_key(&svc) {
            return self.emit(Action::Reply {
                id,
                result: AdminResult::NoService,
            });
        }
        if !self.quorate || !self.is_synced() {
            return self.emit(Action::Reply {
                id,
                result: AdminResult::Quorum,
            });
        }
        self.emit(Action::Send(Msg::Admin {
            svc,
            op,
            from: self.me,
            id,
        }));
    }

    // ------------------------------------------------------------ joining

    fn group_input(&mut self, input: Input) {
        if self.joining.is_some() {
            return self.joining_input(input);
        }
        match input {
            Input::Confchg {
                pos,
                members,
                joined,
                failed,
                unfenced,
            } => {
                if !self.holding {
                    if !joined.contains(&self.me) {
                        return; // not ours yet
                    }
                    let old: BTreeSet<NodeId> = members
                        .iter()
                        .filter(|m| !joined.contains(m))
                        .copied()
                        .collect();
                    self.joining = Some(Joining {
                        old,
                        co: joined.iter().copied().collect(),
                        buffer: Vec::new(),
                        failed: BTreeSet::new(),
                    });
                    let c = Input::Confchg {
                        pos,
                        members,
                        joined,
                        failed,
                        unfenced,
                    };
                    return self.joining_input(c);
                }
                self.apply_confchg(pos, &members, &joined, &failed);
            }
            Input::Deliver(msg) => {
                if self.holding {
                    self.apply(msg);
                }
            }
            _ => unreachable!(),
        }
    }

    fn joining_input(&mut self, input: Input) {
        let j = self.joining.as_mut().expect("joining");
        match &input {
            Input::Confchg {
                pos,
                members,
                joined,
                failed,
                unfenced,
            } => {
                let first = j.buffer.is_empty() && joined.contains(&self.me);
                if !first {
                    j.old.retain(|n| members.contains(n));
                }
                j.failed.extend(failed.iter().copied());
                j.buffer.push(input.clone());
                if j.old.is_empty() {
                    // Nobody who holds the records is left: start afresh.
                    let co: BTreeSet<NodeId> =
                        j.co.iter()
                            .filter(|n| members.contains(n))
                            .copied()
                            .collect();
                    let awaiting: BTreeMap<NodeId, Pos> = j
                        .failed
                        .iter()
                        .chain(unfenced.iter())
                        .map(|n| (*n, *pos))
                        .collect();
                    let (pos, members) = (*pos, members.clone());
                    self.joining = None;
                    self.fresh(&members, co, awaiting);
                    self.after_confchg(pos, &members);
                    self.send_fence_notices();
                }
            }
            Input::Deliver(Msg::Snapshot { pos, state, .. }) => {
                let Some(at) = j
                    .buffer
                    .iter()
                    .position(|i| matches!(i, Input::Confchg { pos: p, .. } if p == pos))
                else {
                    tracing::debug!(?pos, "a snapshot from before this node joined");
                    return;
                };
                tracing::info!(?pos, "service records received");
                let rest: Vec<Input> = j.buffer.split_off(at + 1);
                self.rep = (**state).clone();
                self.joining = None;
                self.holding = true;
                // This node may become the master: it checks failback
                // once, as for the join that let it in.
                self.failback_due = self.svcs.keys().cloned().collect();
                self.replaying = true;
                for i in rest {
                    self.group_input(i);
                }
                self.replaying = false;
                self.group_input(input);
                self.send_fence_notices();
            }
            Input::Deliver(_) => j.buffer.push(input),
            _ => {}
        }
    }

    /// Records from the configuration: nobody left knows better.
    fn fresh(
        &mut self,
        members: &[NodeId],
        synced: BTreeSet<NodeId>,
        awaiting: BTreeMap<NodeId, Pos>,
    ) {
        let blind = !awaiting.is_empty();
        self.holding = true;
        self.rep = Replicated {
            services: self
                .svcs
                .iter()
                .map(|(n, s)| (n.clone(), Record::new(s.cfg.autostart)))
                .collect(),
            members: members.iter().copied().collect(),
            synced,
            awaiting_fence: awaiting,
            leaving: BTreeSet::new(),
            orphaned: BTreeSet::new(),
            config_version: self.config_version,
            removing: BTreeSet::new(),
            blind,
            locked: false,
        };
        self.note(format!(
            "Service records initialized by {} member(s)",
            self.rep.synced.len()
        ));
    }

    // ------------------------------------------------------------ applying

    fn apply_confchg(
        &mut self,
        pos: Pos,
        members: &[NodeId],
        joined: &[NodeId],
        failed: &[NodeId],
    ) {
        let r = &mut self.rep;
        // A daemon gone without its node failing (killed, crashed) may
        // have left its services running: like a failed node's, they
        // wait for its fence, or for it to come back and clean up.
        let left: Vec<NodeId> = r
            .members
            .iter()
            .filter(|n| !members.contains(n) && !failed.contains(n))
            .filter(|n| {
                r.services.values().any(|rec| {
                    rec.owner == Some(**n)
                        && !matches!(rec.state, State::Stopped | State::Disabled | State::Failed)
                })
            })
            .copied()
            .collect();
        r.members = members.iter().copied().collect();
        r.leaving.retain(|n| members.contains(n));
        r.synced
            .retain(|n| members.contains(n) && !joined.contains(n));
        for f in failed.iter().chain(&left) {
            r.awaiting_fence.insert(*f, pos);
        }
        r.orphaned.extend(left.iter().copied());
        let mut back = Vec::new();
        for j in joined {
            if r.orphaned.remove(j) {
                r.awaiting_fence.remove(j);
                back.push(*j);
            }
        }
        for rec in r.services.values_mut() {
            rec.hold = false;
            if rec.state == State::Stopped {
                rec.tried.clear();
            }
            let gone = |o: NodeId| failed.contains(&o) || left.contains(&o);
            if rec.owner.is_some_and(gone) && rec.state != State::Failed {
                rec.state = State::Recoverable;
            }
            // Back: its daemon cleans up what it owned (Lost).
            if rec.owner.is_some_and(|o| back.contains(&o)) && rec.state == State::Recoverable {
                rec.state = State::Started;
            }
        }
        for f in failed {
            self.note(format!("State change: {} DOWN", f.0));
        }
        for l in &left {
            self.note(format!(
                "Member {} left with services running: waiting for its fence or its return",
                l.0
            ));
        }
        self.send_fence_notices();
        if !joined.is_empty() {
            self.failback_due = self.rep.services.keys().cloned().collect();
        }
        self.proposed.clear();
        self.after_confchg(pos, members);
    }

    /// Sends the snapshot if this node is the lowest synced member and
    /// some member is not synced.
    fn after_confchg(&mut self, pos: Pos, members: &[NodeId]) {
        let unsynced: Vec<NodeId> = members
            .iter()
            .filter(|m| !self.rep.synced.contains(m))
            .copied()
            .collect();
        let first_synced = self.rep.synced.iter().find(|n| members.contains(n));
        if !unsynced.is_empty() && first_synced == Some(&self.me) {
            let state = Box::new(self.rep.clone());
            self.emit(Action::Send(Msg::Snapshot {
                pos,
                state,
                for_nodes: unsynced,
            }));
        }
    }

    fn take_over(&mut self, dead: NodeId) {
        let mut lines = Vec::new();
        for (name, rec) in self.rep.services.iter_mut() {
            if rec.owner != Some(dead) {
                continue;
            }
            if rec.state == State::Failed {
                rec.last_owner = rec.owner.take();
                rec.ver += 1;
                continue;
            }
            lines.push(if self.rep.locked {
                format!("Not initiating failover of {name}: Resource groups locked!")
            } else {
                format!("Taking over service {name} from down member {}", dead.0)
            });
            rec.tried.clear();
            rec.avoid = None;
            rec.release(State::Stopped);
        }
        for l in lines {
            self.note(l);
        }
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::Snapshot { for_nodes, .. } => {
                let r = &mut self.rep;
                r.synced
                    .extend(for_nodes.iter().filter(|n| r.members.contains(n)));
            }
            Msg::Fenced { node, failed_at } => self.apply_fenced(node, failed_at),
            Msg::Leaving { node } => {
                if self.rep.members.contains(&node) {
                    self.rep.leaving.insert(node);
                }
            }
            Msg::Admin { svc, op, from, id } => {
                let result = self.apply_admin(&svc, op);
                if from == self.me {
                    self.emit(Action::Reply { id, result });
                }
            }
            Msg::Lock { locked, from, id } => {
                if self.rep.locked != locked {
                    self.rep.locked = locked;
                    self.note(
                        if locked {
                            "Resource Groups Locked"
                        } else {
                            "Resource Groups Unlocked"
                        }
                        .to_string(),
                    );
                }
                if from == self.me {
                    self.emit(Action::Reply {
                        id,
                        result: AdminResult::Success,
                    });
                }
            }
            Msg::Config { version, text } => self.apply_config(version, &text),
            other => self.apply_result(other),
        }
        self.drop_removed();
    }

    /// A new configuration: new services get records, changed ones
    /// restart if running, removed ones stop and go; an invalid `<rm>`
    /// is refused by every member alike and the running one kept.
    fn apply_config(&mut self, version: u64, text: &str) {
        if version <= self.rep.config_version {
            return;
        }
        let new = match crate::config::parse(text) {
            Ok(c) => c,
            Err(e) => {
                self.rep.config_version = version;
                let line = format!(
                    "Refusing configuration version {version} ({e}); keeping the running one"
                );
                return self.note(line);
            }
        };
        let mut svcs = services_of(&new, &self.ids);
        for (name, svc) in svcs.iter_mut() {
            let rec = self
                .rep
                .services
                .entry(name.clone())
                .or_insert_with(|| Record::new(svc.cfg.autostart));
            self.rep.removing.remove(name);
            let Some(old) = self.svcs.get(name) else {
                continue;
            };
            if same_tree(&old.cfg, &svc.cfg) {
                continue;
            }
            svc.stop_cfg = Some(old.stop_cfg.clone().unwrap_or_else(|| old.cfg.clone()));
            if rec.state == State::Started && !rec.frozen {
                rec.after = After::Restart;
                rec.set(State::Stopping);
            }
        }
        for (name, old) in std::mem::take(&mut self.svcs) {
            if svcs.contains_key(&name) {
                continue;
            }
            if let Some(rec) = self.rep.services.get_mut(&name) {
                if rec.state == State::Started {
                    rec.after = After::Disabled;
                    rec.set(State::Stopping);
                }
            }
            self.rep.removing.insert(name.clone());
            svcs.insert(name, old);
        }
        self.svcs = svcs;
        self.rep.config_version = version;
        self.note(format!("Configuration version {version} applied"));
    }

    /// Forgets removed services once nothing runs them.
    fn drop_removed(&mut self) {
        let gone: Vec<String> = self
            .rep
            .removing
            .iter()
            .filter(|n| {
                self.rep.services.get(*n).is_none_or(|r| {
                    r.owner.is_none() && matches!(r.state, State::Stopped | State::Disabled)
                })
            })
            .cloned()
            .collect();
        for n in gone {
            self.rep.removing.remove(&n);
            self.rep.services.remove(&n);
            self.svcs.remove(&n);
        }
    }

    /// The tree to run `op` on (the old tree for a stop after a change).
    pub fn service_config(&self, svc: &str, op: Op) -> Option<ServiceConfig> {
        let s = self.svcs.get(svc)?;
        match op {
            Op::Stop | Op::Cleanup => Some(s.stop_cfg.clone().unwrap_or_else(|| s.cfg.clone())),
            _ => Some(s.cfg.clone()),
        }
    }

    /// A fence of the failure seen at `failed_at`: an older failure's
    /// report (the node has rejoined and failed again since) is stale.
    fn apply_fenced(&mut self, node: NodeId, failed_at: Pos) {
        let r = &mut self.rep;
        if r.awaiting_fence.get(&node) != Some(&failed_at) {
            return;
        }
        r.awaiting_fence.remove(&node);
        r.orphaned.remove(&node);
        if r.awaiting_fence.is_empty() {
            r.blind = false;
        }
        self.take_over(node);
    }

    /// Reports the fences cmand announced for failures this node has
    /// seen. cmand sends a failure's confchg before its fence, so a
    /// notice for a node not awaited is about an older failure: dropped
    /// (kept, it would let a later failure skip its fence).
    fn send_fence_notices(&mut self) {
        let notices = std::mem::take(&mut self.fence_notices);
        for v in notices {
            if let Some(pos) = self.rep.awaiting_fence.get(&v) {
                let failed_at = *pos;
                self.emit(Action::Send(Msg::Fenced { node: v, failed_at }));
            }
        }
    }

    /// Applies a result or a master proposal (checked against the
    /// record's version).
    fn apply_result(&mut self, msg: Msg) {
        let (svc, ver) = match &msg {
            Msg::Start { svc, ver, .. }
            | Msg::Failback { svc, ver, .. }
            | Msg::StartDone { svc, ver, .. }
            | Msg::StopDone { svc, ver, .. }
            | Msg::StatusFailed { svc, ver, .. }
            | Msg::Lost { svc, ver, .. } => (svc.clone(), *ver),
            _ => return,
        };
        let members = self.rep.members.clone();
        let awaiting = self.rep.awaiting_fence.clone();
        let Some(svc_cfg) = self.svcs.get(&svc).map(|s| s.cfg.clone()) else {
            return;
        };
        let Some(rec) = self.rep.services.get_mut(&svc) else {
            return;
        };
        if rec.ver != ver {
            return; // stale
        }
        let usable = |n: &NodeId| members.contains(n) && !awaiting.contains_key(n);
        let mut line = None;
        let mut stopped_cleanly = false;
        match msg {
            Msg::Start { node, .. }
                if rec.state == State::Stopped && rec.owner.is_none() && usable(&node) =>
            {
                rec.start_on(node);
            }
            Msg::Failback { node, .. }
                if rec.state == State::Started && usable(&node) && !rec.frozen =>
            {
                rec.after = After::Relocate(Some(node));
                rec.set(State::Stopping);
            }
            Msg::StartDone {
                node, ok, stop_ok, ..
            } => {
                if rec.state != State::Starting || rec.owner != Some(node) {
                    return;
                }
                if ok {
                    rec.tried.clear();
                    rec.avoid = None;
                    rec.set(State::Started);
                } else if stop_ok {
                    rec.tried.insert(node);
                    rec.release(State::Stopped);
                    line = Some(format!("#71: Relocating failed service {svc}"));
                } else {
                    rec.set(State::Failed);
                    line = Some(format!("#12: Service {svc} failed to stop cleanly"));
                }
            }
            Msg::StopDone { node, ok, .. } => {
                if !matches!(rec.state, State::Stopping | State::Recovering)
                    || rec.owner != Some(node)
                {
                    return;
                }
                if ok {
                    stopped_cleanly = true;
                }
                if !ok {
                    rec.set(State::Failed);
                    line = Some(format!("#12: Service {svc} failed to stop cleanly"));
                } else {
                    match rec.after {
                        After::Stopped => {
                            rec.hold = true;
                            rec.release(State::Stopped);
                        }
                        After::Disabled => rec.release(State::Disabled),
                        After::Restart => rec.start_on(node),
                        After::Relocate(Some(t)) if usable(&t) && t != node => {
                            rec.avoid = Some(node);
                            rec.last_owner = Some(node);
                            rec.start_on(t);
                        }
                        After::Relocate(_) => {
                            rec.avoid = Some(node);
                            rec.release(State::Stopped);
                        }
                    }
                }
            }
            Msg::StatusFailed { node, now_ms, .. } => {
                if rec.state != State::Started || rec.owner != Some(node) || rec.frozen {
                    return;
                }
                rec.after = recovery_after(rec, &svc_cfg, now_ms, &mut line, &svc);
                rec.set(State::Recovering);
            }
            Msg::Lost { node, ok, .. } => {
                if rec.owner != Some(node) || matches!(rec.state, State::Failed | State::Disabled) {
                    return;
                }
                if ok {
                    rec.release(State::Stopped);
                } else {
                    rec.set(State::Failed);
                }
            }
            _ => {}
        }
        if stopped_cleanly {
            if let Some(s) = self.svcs.get_mut(&svc) {
                s.stop_cfg = None;
            }
        }
        if let Some(l) = line {
            self.note(l);
        }
    }

    fn apply_admin(&mut self, svc: &str, op: AdminOp) -> AdminResult {
        let locked = self.rep.locked;
        let members = self.rep.members.clone();
        let awaiting = self.rep.awaiting_fence.clone();
        let Some(s) = self.svcs.get(svc) else {
            return AdminResult::NoService;
        };
        let domain = s.domain.clone();
        let depend_ok = self.depend_ok(&s.cfg);
        let leaving = self.rep.leaving.clone();
        let online: BTreeSet<NodeId> = members
            .iter()
            .filter(|n| !awaiting.contains_key(n) && !leaving.contains(n))
            .copied()
            .collect();
        let Some(rec) = self.rep.services.get_mut(svc) else {
            return AdminResult::NoService;
        };
        let legal = |n: NodeId| placement::score(domain.as_ref(), n, &online, None) > 0;
        let reloc = match op {
            AdminOp::Relocate(t) => Some(t),
            AdminOp::Migrate(t) => Some(Some(t)),
            _ => None,
        };
        if op == AdminOp::Convalesce {
            // rgmanager 3's svc_convalesce: the state first, then frozen,
            // then whether anything is left to repair.
            return match rec.state {
                State::Started if rec.frozen => AdminResult::Frozen,
                State::Started => AdminResult::Running,
                s if s.is_transient() || s == State::Recoverable => AdminResult::Again,
                _ => AdminResult::Invalid,
            };
        }
        if rec.frozen && !matches!(op, AdminOp::Unfreeze | AdminOp::Freeze) {
            return AdminResult::Frozen;
        }
        // Locked: nothing starts (rgmanager 3's svc_advise_start said
        // "try again").
        let starts = matches!(
            op,
            AdminOp::Enable(_) | AdminOp::Relocate(_) | AdminOp::Migrate(_) | AdminOp::Restart
        );
        if locked && starts && !(matches!(op, AdminOp::Enable(_)) && rec.state == State::Started) {
            return AdminResult::Again;
        }
        if rec.state.is_transient() || rec.state == State::Recoverable {
            return AdminResult::Again;
        }
        let start = |rec: &mut Record, target: Option<NodeId>| -> AdminResult {
            if !depend_ok {
                return AdminResult::Depend;
            }
            match target {
                Some(t) if !online.contains(&t) => AdminResult::Node,
                Some(t) if !legal(t) => AdminResult::Domain,
                Some(t) => {
                    rec.tried.clear();
                    rec.avoid = None;
                    rec.start_on(t);
                    AdminResult::Success
                }
                None => {
                    rec.tried.clear();
                    rec.hold = false;
                    rec.release(State::Stopped);
                    AdminResult::Success
                }
            }
        };
        match (op, rec.state) {
            (AdminOp::Freeze, _) => {
                rec.frozen = true;
                rec.ver += 1;
                AdminResult::Success
            }
            (AdminOp::Unfreeze, _) => {
                rec.frozen = false;
                rec.ver += 1;
                AdminResult::Success
            }
            (AdminOp::Enable(_), State::Started) => AdminResult::Running,
            (_, State::Failed) if op != AdminOp::Disable => AdminResult::Invalid,
            (AdminOp::Enable(t), _) => start(rec, t),
            (AdminOp::Disable, State::Started | State::Failed) if rec.owner.is_some() => {
                rec.after = After::Disabled;
                rec.set(State::Stopping);
                AdminResult::Success
            }
            (AdminOp::Disable, _) => {
                rec.release(State::Disabled);
                AdminResult::Success
            }
            (AdminOp::Relocate(_) | AdminOp::Migrate(_), State::Started) => {
                let t = reloc.flatten();
                match t {
                    Some(t) if rec.owner == Some(t) => return AdminResult::Success,
                    Some(t) if !online.contains(&t) => return AdminResult::Node,
                    Some(t) if !legal(t) => return AdminResult::Domain,
                    _ => {}
                }
                rec.after = After::Relocate(t);
                rec.set(State::Stopping);
                AdminResult::Success
            }
            (AdminOp::Relocate(_) | AdminOp::Migrate(_), _) => start(rec, reloc.flatten()),
            (AdminOp::Restart, State::Started) => {
                rec.after = After::Restart;
                rec.set(State::Stopping);
                AdminResult::Success
            }
            (AdminOp::Restart, _) => AdminResult::Invalid,
            (AdminOp::Convalesce, _) => unreachable!("answered above"),
            (AdminOp::Stop, State::Started) => {
                rec.after = After::Stopped;
                rec.set(State::Stopping);
                AdminResult::Success
            }
            (AdminOp::Stop, _) => {
                rec.hold = true;
                rec.ver += 1;
                AdminResult::Success
            }
        }
    }

    fn depend_ok(&self, cfg: &ServiceConfig) -> bool {
        match &cfg.depend {
            None => true,
            Some(d) => self
                .rep
                .services
                .get(d)
                .is_some_and(|r| r.state == State::Started),
        }
    }

    // ------------------------------------------------------------ local work

    fn op_done(&mut self, svc: &str, op: Op, ok: bool, stop_ok: bool) {
        let Some((_, ver)) = self.running.remove(svc) else {
            return;
        };
        self.finished.insert(svc.to_string(), (op, ver));
        let node = self.me;
        let svc_s = svc.to_string();
        match op {
            Op::Start => {
                if ok || !stop_ok {
                    self.up.insert(svc_s.clone());
                } else {
                    self.up.remove(svc);
                }
                self.next_status_ms
                    .insert(svc_s.clone(), self.now_ms + self.status_every_ms);
                self.emit(Action::Send(Msg::StartDone {
                    svc: svc_s,
                    ver,
                    node,
                    ok,
                    stop_ok,
                }));
            }
            Op::Stop => {
                if ok {
                    self.up.remove(svc);
                }
                self.emit(Action::Send(Msg::StopDone {
                    svc: svc_s,
                    ver,
                    node,
                    ok,
                }));
            }
            Op::Status => {
                self.next_status_ms
                    .insert(svc_s.clone(), self.now_ms + self.status_every_ms);
                if !ok {
                    self.emit(Action::Send(Msg::StatusFailed {
                        svc: svc_s,
                        ver,
                        node,
                        now_ms: self.now_ms,
                    }));
                }
            }
            Op::Cleanup => {
                if ok {
                    self.up.remove(svc);
                }
                if self.quorate {
                    self.emit(Action::Send(Msg::Lost {
                        svc: svc_s,
                        ver,
                        node,
                        ok,
                    }));
                }
            }
        }
    }

    fn run(&mut self, svc: &str, op: Op, ver: u64) {
        self.running.insert(svc.to_string(), (op, ver));
        self.emit(Action::Run {
            svc: svc.to_string(),
            op,
        });
    }

    /// Runs what the records ask of this node, then (as master) places.
    fn evaluate(&mut self) {
        if !self.quorate {
            // Without quorum: stop whatever runs here, start nothing.
            let up: Vec<String> = self.up.iter().cloned().collect();
            for s in up {
                if !self.running.contains_key(&s) {
                    self.run(&s, Op::Cleanup, u64::MAX);
                }
            }
            return;
        }
        let mine: Vec<(String, Record)> = self
            .rep
            .services
            .iter()
            .filter(|(_, r)| r.owner == Some(self.me))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        let leaving = self.rep.leaving.contains(&self.me);
        for (svc, rec) in mine {
            if leaving && matches!(rec.state, State::Started) && !self.running.contains_key(&svc) {
                if self.finished.get(&svc) != Some(&(Op::Cleanup, rec.ver)) {
                    self.run(&svc, Op::Cleanup, rec.ver);
                }
                continue;
            }
            self.evaluate_own(&svc, &rec);
        }
        if self.is_master() {
            self.place();
        }
    }

    fn evaluate_own(&mut self, svc: &str, rec: &Record) {
        if self.running.contains_key(svc) {
            return;
        }
        let done = |op| self.finished.get(svc) == Some(&(op, rec.ver));
        match rec.state {
            State::Starting if !done(Op::Start) => self.run(svc, Op::Start, rec.ver),
            State::Stopping | State::Recovering if !done(Op::Stop) => {
                self.run(svc, Op::Stop, rec.ver)
            }
            State::Started if !self.up.contains(svc) && !done(Op::Cleanup) => {
                self.run(svc, Op::Cleanup, rec.ver);
            }
            State::Started if !self.up.contains(svc) => {}
            State::Started if !rec.frozen => {
                let due = self.next_status_ms.get(svc).copied().unwrap_or(0);
                if self.now_ms >= due {
                    self.run(svc, Op::Status, rec.ver);
                }
            }
            _ => {}
        }
    }

    fn is_master(&self) -> bool {
        self.rep
            .synced
            .iter()
            .find(|n| self.rep.members.contains(n))
            == Some(&self.me)
    }

    fn load(&self) -> Load {
        let mut load = Load::default();
        for (name, rec) in &self.rep.services {
            let Some(o) = rec.owner else { continue };
            if matches!(rec.state, State::Disabled | State::Stopped) {
                continue;
            }
            *load.running.entry(o).or_default() += 1;
            if self.svcs.get(name).is_some_and(|s| s.cfg.exclusive) {
                load.exclusive.insert(o);
            }
        }
        load
    }

    /// The master's placement: stopped services to the best node, and
    /// failback after a join.
    fn place(&mut self) {
        if self.rep.blind {
            return;
        }
        let online: BTreeSet<NodeId> = self
            .rep
            .members
            .iter()
            .filter(|n| !self.rep.awaiting_fence.contains_key(n) && !self.rep.leaving.contains(n))
            .copied()
            .collect();
        let names: Vec<String> = self.rep.services.keys().cloned().collect();
        for name in names {
            let rec = self.rep.services[&name].clone();
            let Some(s) = self.svcs.get(&name) else {
                continue;
            };
            let owner_gone = rec.owner.is_some_and(|o| !self.rep.members.contains(&o));
            if rec.frozen
                || owner_gone
                || self.proposed.get(&name) == Some(&rec.ver)
                || self.rep.removing.contains(&name)
            {
                continue;
            }
            // Only a running service fails back; one about to run is
            // checked once it does.
            let failback = match rec.state {
                State::Started => self.failback_due.remove(&name),
                State::Stopped | State::Starting | State::Stopping | State::Recovering => false,
                _ => {
                    self.failback_due.remove(&name);
                    false
                }
            };
            let msg = match rec.state {
                State::Stopped if !rec.hold && rec.owner.is_none() && !self.rep.locked => {
                    if !self.depend_ok(&s.cfg) {
                        continue;
                    }
                    self.target(s, &online, &rec).map(|node| Msg::Start {
                        svc: name.clone(),
                        ver: rec.ver,
                        node,
                    })
                }
                State::Started if failback && !self.rep.locked => self
                    .failback_target(s, &online, &rec)
                    .map(|node| Msg::Failback {
                        svc: name.clone(),
                        ver: rec.ver,
                        node,
                    }),
                State::Started | State::Starting => {
                    self.hard_depend_broken(s).then(|| Msg::Admin {
                        svc: name.clone(),
                        op: AdminOp::Stop,
                        from: self.me,
                        id: u64::MAX,
                    })
                }
                _ => None,
            };
            if let Some(m) = msg {
                self.proposed.insert(name.clone(), rec.ver);
                self.emit(Action::Send(m));
            }
        }
    }

    fn hard_depend_broken(&self, s: &Svc) -> bool {
        s.cfg.depend_mode == DependMode::Hard && !self.depend_ok(&s.cfg)
    }

    fn target(&self, s: &Svc, online: &BTreeSet<NodeId>, rec: &Record) -> Option<NodeId> {
        let mut exclude = rec.tried.clone();
        let load = self.load();
        if let Some(a) = rec.avoid {
            exclude.insert(a);
            if let Some(t) =
                placement::best_target(s.domain.as_ref(), s.cfg.exclusive, online, &exclude, &load)
            {
                return Some(t);
            }
            exclude.remove(&a);
        }
        placement::best_target(s.domain.as_ref(), s.cfg.exclusive, online, &exclude, &load)
    }

    fn failback_target(&self, s: &Svc, online: &BTreeSet<NodeId>, rec: &Record) -> Option<NodeId> {
        let owner = rec.owner?;
        let d = s.domain.as_ref()?;
        if !d.ordered || d.nofailback {
            return None;
        }
        let own = placement::score(Some(d), owner, online, Some(owner));
        if own == placement::BEST {
            return None;
        }
        online
            .iter()
            .find(|n| placement::score(Some(d), **n, online, Some(owner)) == placement::BEST)
            .copied()
    }
}

fn services_of(cfg: &RmConfig, ids: &BTreeMap<String, NodeId>) -> BTreeMap<String, Svc> {
    cfg.services
        .iter()
        .map(|s| {
            let domain = s
                .domain
                .as_ref()
                .and_then(|d| cfg.domains.get(d))
                .map(|d| DomainIds::resolve(d, ids));
            (
                s.name.clone(),
                Svc {
                    domain,
                    cfg: s.clone(),
                    stop_cfg: None,
                },
            )
        })
        .collect()
}

/// Same service apart from where it is written in the file.
fn same_tree(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    fn strip(r: &crate::config::Resource) -> crate::config::Resource {
        let mut r = r.clone();
        r.line = 0;
        r.children = r.children.iter().map(strip).collect();
        r
    }
    let norm = |s: &ServiceConfig| {
        let mut s = s.clone();
        s.line = 0;
        s.children = s.children.iter().map(strip).collect();
        s
    };
    norm(a) == norm(b)
}

/// What a status failure leads to under the service's `recovery`.
fn recovery_after(
    rec: &mut Record,
    cfg: &ServiceConfig,
    now_ms: u64,
    line: &mut Option<String>,
    svc: &str,
) -> After {
    match cfg.recovery {
        Recovery::Disable => After::Disabled,
        Recovery::Relocate => After::Relocate(None),
        Recovery::Restart => {
            let window_ms = cfg.restart_expire_time_s * 1000;
            if window_ms > 0 {
                rec.restart_times_ms
                    .retain(|t| now_ms.saturating_sub(*t) < window_ms);
            }
            if cfg.max_restarts > 0 && rec.restart_times_ms.len() as u32 >= cfg.max_restarts {
                rec.restart_times_ms.clear();
                *line = Some(format!(
                    "Restart threshold for {svc} exceeded; attempting to relocate"
                ));
                After::Relocate(None)
            } else {
                rec.restart_times_ms.push(now_ms);
                rec.restarts += 1;
                After::Restart
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Recovery as a table: a perfect group (every message delivered at
    //! once, in order, to every member), agents answering as told.
    use super::*;
    use crate::config::parse;
    use std::collections::VecDeque;

    struct Group {
        nodes: BTreeMap<u32, Node>,
        queue: VecDeque<Msg>,
        /// Agent results to give, per (node, op): (ok, stop_ok).
        script: BTreeMap<(u32, Op), VecDeque<(bool, bool)>>,
        pending: VecDeque<(u32, String, Op)>,
        /// Every agent operation run: (node, service, op).
        ran: Vec<(u32, String, Op)>,
        pos: u64,
        now: u64,
        log: Vec<String>,
    }

    const CONF: &str = r#"<cluster name="t"><clusternodes>
<clusternode name="a" nodeid="1"/><clusternode name="b" nodeid="2"/><clusternode name="c" nodeid="3"/>
</clusternodes><rm><failoverdomains>
<failoverdomain name="d" ordered="1" restricted="1"><failoverdomainnode name="a" priority="1"/><failoverdomainnode name="b" priority="2"/><failoverdomainnode name="c" priority="3"/></failoverdomain>
</failoverdomains>
<service name="s" domain="d" recovery="RECOVERY" max_restarts="2" restart_expire_time="100"/>
</rm></cluster>"#;

    fn group(recovery: &str) -> Group {
        let cfg = parse(&CONF.replace("RECOVERY", recovery)).unwrap();
        let ids: BTreeMap<String, NodeId> = [("a", 1), ("b", 2), ("c", 3)]
            .iter()
            .map(|(n, i)| (n.to_string(), NodeId(*i)))
            .collect();
        let mut g = Group {
            nodes: (1..=3)
                .map(|i| (i, Node::new(NodeId(i), &cfg, &ids)))
                .collect(),
            queue: VecDeque::new(),
            script: BTreeMap::new(),
            pending: VecDeque::new(),
            ran: Vec::new(),
            pos: 0,
            now: 0,
            log: Vec::new(),
        };
        for i in 1..=3 {
            g.input(i, Input::Quorum(true));
        }
        g.confchg(&[1, 2, 3], &[1, 2, 3], &[]);
        g.settle();
        g
    }

    impl Group {
        fn input(&mut self, i: u32, inp: Input) {
            let Some(n) = self.nodes.get_mut(&i) else {
                return;
            };
            let acts = n.step(inp);
            self.log.extend(n.take_log());
            for a in acts {
                match a {
                    Action::Send(m) => self.queue.push_back(m),
                    Action::Run { svc, op } => self.pending.push_back((i, svc, op)),
                    Action::Reply { .. } => {}
                }
            }
        }

        fn confchg(&mut self, members: &[u32], joined: &[u32], failed: &[u32]) {
            self.pos += 1;
            let ids = |v: &[u32]| v.iter().map(|i| NodeId(*i)).collect::<Vec<_>>();
            for &m in members {
                self.input(
                    m,
                    Input::Confchg {
                        pos: Pos {
                            view: self.pos,
                            seq: 0,
                        },
                        members: ids(members),
                        joined: ids(joined),
                        failed: ids(failed),
                        unfenced: vec![],
                    },
                );
            }
        }

        /// Delivers messages and runs agents until nothing is left.
        fn settle(&mut self) {
            for _ in 0..1000 {
                if let Some(m) = self.queue.pop_front() {
                    let ids: Vec<u32> = self.nodes.keys().copied().collect();
                    for i in ids {
                        self.input(i, Input::Deliver(m.clone()));
                    }
                } else if let Some((i, svc, op)) = self.pending.pop_front() {
                    self.ran.push((i, svc.clone(), op));
                    let (ok, stop_ok) = self
                        .script
                        .get_mut(&(i, op))
                        .and_then(|q| q.pop_front())
                        .unwrap_or((true, true));
                    self.input(
                        i,
                        Input::OpDone {
                            svc,
                            op,
                            ok,
                            stop_ok,
                        },
                    );
                } else {
                    return;
                }
            }
            panic!("no quiescence");
        }

        fn tell(&mut self, node: u32, op: Op, results: &[(bool, bool)]) {
            self.script
                .entry((node, op))
                .or_default()
                .extend(results.iter().copied());
        }

        fn rec(&self) -> Record {
            self.nodes[&1].replicated().services["service:s"].clone()
        }

        fn where_(&self) -> (State, Option<u32>) {
            let r = self.rec();
            (r.state, r.owner.map(|o| o.0))
        }

        /// Time passes by `s` seconds with status checks.
        fn tick(&mut self, s: u64) {
            self.now += s * 1000;
            for i in 1..=3 {
                let now_ms = self.now;
                self.input(i, Input::Tick { now_ms });
            }
            self.settle();
        }

        fn admin(&mut self, on: u32, op: AdminOp) -> AdminResult {
            let n = self.nodes.get_mut(&on).unwrap();
            let acts = n.step(Input::Admin {
                id: 7,
                svc: "s".into(),
                op,
            });
            let mut result = None;
            for a in acts {
                match a {
                    Action::Send(m) => {
                        let ids: Vec<u32> = self.nodes.keys().copied().collect();
                        for i in ids {
                            let acts = self
                                .nodes
                                .get_mut(&i)
                                .unwrap()
                                .step(Input::Deliver(m.clone()));
                            for a in acts {
                                match a {
                                    Action::Reply { result: r, .. } => result = Some(r),
                                    Action::Send(m) => self.queue.push_back(m),
                                    Action::Run { svc, op } => self.pending.push_back((i, svc, op)),
                                }
                            }
                        }
                    }
                    Action::Reply { result: r, .. } => result = Some(r),
                    Action::Run { .. } => unreachable!(),
                }
            }
            self.settle();
            result.expect("a reply")
        }
    }

    #[test]
    fn starts_on_the_preferred_node() {
        let g = group("restart");
        assert_eq!(g.where_(), (State::Started, Some(1)));
    }

    /// (recovery, status failures, expected state and owner afterwards).
    #[test]
    #[allow(clippy::type_complexity)]
    fn status_failure_table() {
        let table: &[(&str, u32, (State, Option<u32>), u32)] = &[
            ("restart", 1, (State::Started, Some(1)), 1),
            ("restart", 2, (State::Started, Some(1)), 2),
            // The third within restart_expire_time: relocate.
            ("restart", 3, (State::Started, Some(2)), 2),
            ("relocate", 1, (State::Started, Some(2)), 0),
            ("disable", 1, (State::Disabled, None), 0),
        ];
        for (recovery, fails, want, restarts) in table {
            let mut g = group(recovery);
            for _ in 0..*fails {
                g.tell(1, Op::Status, &[(false, true)]);
                g.tick(10);
            }
            assert_eq!(g.where_(), *want, "{recovery} x{fails}");
            assert_eq!(g.rec().restarts, *restarts, "{recovery} x{fails}");
        }
    }

    #[test]
    fn restarts_expire() {
        let mut g = group("restart");
        for _ in 0..4 {
            g.tell(1, Op::Status, &[(false, true)]);
            g.tick(60); // the window is 100 s: never more than 2 inside it
        }
        assert_eq!(g.where_(), (State::Started, Some(1)));
        assert!(g.log.iter().all(|l| !l.contains("Restart threshold")));
    }

    #[test]
    fn start_failure_tries_the_next_node_then_stays_stopped() {
        let mut g = group("restart");
        g.admin(1, AdminOp::Disable);
        assert_eq!(g.where_(), (State::Disabled, None));
        g.tell(1, Op::Start, &[(false, true)]);
        assert_eq!(
            g.admin(1, AdminOp::Enable(Some(NodeId(1)))),
            AdminResult::Success
        );
        assert_eq!(g.where_(), (State::Started, Some(2)));
        assert!(g
            .log
            .iter()
            .any(|l| l == "#71: Relocating failed service service:s"));
        // Every node fails: stopped.
        g.admin(1, AdminOp::Disable);
        for n in 1..=3 {
            g.tell(n, Op::Start, &[(false, true)]);
        }
        g.admin(1, AdminOp::Enable(Some(NodeId(1))));
        assert_eq!(g.where_(), (State::Stopped, None));
    }

    #[test]
    fn stop_failure_is_failed_and_only_disable_is_allowed() {
        let mut g = group("relocate");
        g.tell(1, Op::Stop, &[(false, false)]);
        assert_eq!(
            g.admin(2, AdminOp::Relocate(Some(NodeId(2)))),
            AdminResult::Success
        );
        assert_eq!(g.where_(), (State::Failed, Some(1)));
        assert_eq!(g.admin(2, AdminOp::Enable(None)), AdminResult::Invalid);
        assert_eq!(g.admin(2, AdminOp::Relocate(None)), AdminResult::Invalid);
        assert_eq!(g.admin(2, AdminOp::Restart), AdminResult::Invalid);
        assert_eq!(g.admin(2, AdminOp::Disable), AdminResult::Success);
        assert_eq!(g.where_(), (State::Disabled, None));
        assert_eq!(
            g.admin(2, AdminOp::Enable(Some(NodeId(3)))),
            AdminResult::Success
        );
        assert_eq!(g.where_(), (State::Started, Some(3)));
    }

    #[test]
    fn node_failure_waits_for_the_fence() {
        let mut g = group("restart");
        g.nodes.remove(&1);
        g.confchg(&[2, 3], &[], &[1]);
        g.settle();
        assert_eq!(g.where_2(), (State::Recoverable, Some(1)));
        g.tick(30);
        assert_eq!(g.where_2(), (State::Recoverable, Some(1)));
        g.input(3, Input::FenceNotice(NodeId(1)));
        g.settle();
        assert_eq!(g.where_2(), (State::Started, Some(2)));
        assert!(g
            .log
            .iter()
            .any(|l| l.contains("Taking over service service:s from down member 1")));
    }

    /// `clusvcadm -l`: every member locked; nothing starts (enable,
    /// placement, failover) until `-u`, stopping still works.
    #[test]
    fn locked_managers_start_nothing_until_unlocked() {
        let mut g = group("restart");
        let lock = |g: &mut Group, on: u32, locked: bool| {
            g.input(on, Input::Lock { id: 1, locked });
            g.settle();
            for n in g.nodes.values() {
                assert_eq!(n.replicated().locked, locked);
            }
        };
        lock(&mut g, 2, true);
        assert_eq!(g.admin(1, AdminOp::Convalesce), AdminResult::Running);
        assert_eq!(g.admin(1, AdminOp::Disable), AdminResult::Success);
        assert_eq!(g.where_(), (State::Disabled, None));
        assert_eq!(
            g.admin(1, AdminOp::Enable(Some(NodeId(1)))),
            AdminResult::Again
        );
        assert_eq!(g.admin(1, AdminOp::Convalesce), AdminResult::Invalid);
        assert_eq!(g.where_(), (State::Disabled, None));
        lock(&mut g, 3, false);
        assert_eq!(g.admin(1, AdminOp::Enable(None)), AdminResult::Success);
        assert_eq!(g.where_(), (State::Started, Some(1)));
        assert_eq!(
            g.admin(2, AdminOp::Relocate(Some(NodeId(3)))),
            AdminResult::Success
        );
        assert_eq!(g.where_(), (State::Started, Some(3)));
        lock(&mut g, 1, true);
        assert_eq!(g.admin(1, AdminOp::Relocate(None)), AdminResult::Again);
        assert_eq!(g.admin(1, AdminOp::Restart), AdminResult::Again);
        // The owner dies while locked: fenced, but not taken over.
        g.nodes.remove(&3);
        g.confchg(&[1, 2], &[], &[3]);
        g.input(1, Input::FenceNotice(NodeId(3)));
        g.settle();
        g.tick(30);
        assert_eq!(g.where_(), (State::Stopped, None));
        assert!(g
            .log
            .iter()
            .any(|l| l == "Not initiating failover of service:s: Resource groups locked!"));
        lock(&mut g, 2, false);
        g.tick(1);
        assert_eq!(g.where_(), (State::Started, Some(1)));
    }

    /// Convalesce as rgmanager 3's svc_convalesce answers it.
    #[test]
    fn convalesce_answers() {
        let mut g = group("restart");
        assert_eq!(g.admin(2, AdminOp::Convalesce), AdminResult::Running);
        assert_eq!(g.admin(2, AdminOp::Freeze), AdminResult::Success);
        assert_eq!(g.admin(2, AdminOp::Convalesce), AdminResult::Frozen);
        assert_eq!(g.admin(2, AdminOp::Unfreeze), AdminResult::Success);
        assert_eq!(g.admin(2, AdminOp::Disable), AdminResult::Success);
        assert_eq!(g.admin(2, AdminOp::Convalesce), AdminResult::Invalid);
    }

    #[test]
    fn quorum_loss_stops_everything() {
        let mut g = group("restart");
        g.input(1, Input::Quorum(false));
        assert_eq!(
            g.pending.pop_front(),
            Some((1, "service:s".to_string(), Op::Cleanup))
        );
        g.input(
            1,
            Input::OpDone {
                svc: "service:s".into(),
                op: Op::Cleanup,
                ok: true,
                stop_ok: true,
            },
        );
        assert!(g.nodes[&1].local_up().is_empty());
        assert!(g.queue.is_empty(), "an inquorate node tells nobody");
        // Admin requests need quorum.
        let acts = g.nodes.get_mut(&1).unwrap().step(Input::Admin {
            id: 1,
            svc: "s".into(),
            op: AdminOp::Disable,
        });
        assert_eq!(
            acts,
            vec![Action::Reply {
                id: 1,
                result: AdminResult::Quorum
            }]
        );
    }

    #[test]
    fn relocate_and_failback() {
        let mut g = group("restart");
        assert_eq!(
            g.admin(3, AdminOp::Relocate(Some(NodeId(3)))),
            AdminResult::Success
        );
        assert_eq!(g.where_(), (State::Started, Some(3)));
        assert_eq!(
            g.admin(3, AdminOp::Relocate(Some(NodeId(9)))),
            AdminResult::Node
        );
        assert_eq!(g.admin(3, AdminOp::Enable(None)), AdminResult::Running);
        // Owner 3 fails its start target? No: node 1 leaves and comes back;
        // the ordered domain brings the service home.
        g.confchg(&[2, 3], &[], &[]);
        g.confchg(&[1, 2, 3], &[1], &[]);
        g.settle();
        assert_eq!(g.where_(), (State::Started, Some(1)));
    }

    impl Group {
        fn where_2(&self) -> (State, Option<u32>) {
            let r = &self.nodes[&2].replicated().services["service:s"];
            (r.state, r.owner.map(|o| o.0))
        }
    }

    fn conf_with(version: u32, services: &str) -> String {
        CONF.replace("<cluster name=\"t\">", &format!("<cluster name=\"t\" config_version=\"{version}\">"))
            .replace(
                "<service name=\"s\" domain=\"d\" recovery=\"RECOVERY\" max_restarts=\"2\" restart_expire_time=\"100\"/>",
                services,
            )
    }

    impl Group {
        fn push_config(&mut self, on: u32, version: u64, text: String) {
            self.input(on, Input::NewConfig { version, text });
            self.settle();
        }

        fn state_of(&self, svc: &str) -> Option<(State, Option<u32>)> {
            self.nodes[&2]
                .replicated()
                .services
                .get(svc)
                .map(|r| (r.state, r.owner.map(|o| o.0)))
        }

        fn ops_on(&self, svc: &str) -> Vec<Op> {
            self.ran
                .iter()
                .filter(|(_, s, op)| s == svc && *op != Op::Status)
                .map(|(_, _, op)| *op)
                .collect()
        }
    }

    #[test]
    fn a_pushed_configuration_applies_without_touching_unchanged_services() {
        let mut g = group("restart");
        let s = r#"<service name="s" domain="d" recovery="restart" max_restarts="2" restart_expire_time="100"/>"#;
        let t = r#"<service name="t"><script name="t" file="/t"/></service>"#;
        // Added: t starts; s (same tree) is left alone.
        g.push_config(1, 2, conf_with(2, &format!("{s}{t}")));
        assert_eq!(g.state_of("service:t"), Some((State::Started, Some(1))));
        assert_eq!(g.ops_on("service:s"), vec![Op::Start]);
        // Changed: s restarts with its new tree, t is not touched.
        let s2 = r#"<service name="s" domain="d"><script name="x" file="/x"/></service>"#;
        g.push_config(2, 3, conf_with(3, &format!("{s2}{t}")));
        assert_eq!(g.ops_on("service:s"), vec![Op::Start, Op::Stop, Op::Start]);
        assert_eq!(g.ops_on("service:t"), vec![Op::Start]);
        assert_eq!(
            g.nodes[&1]
                .service_config("service:s", Op::Start)
                .unwrap()
                .children
                .len(),
            1
        );
        // Removed: t stops and its record goes, on every node.
        g.push_config(3, 4, conf_with(4, s2));
        assert_eq!(g.ops_on("service:t"), vec![Op::Start, Op::Stop]);
        for n in g.nodes.values() {
            assert!(!n.replicated().services.contains_key("service:t"));
        }
        // Invalid: refused everywhere, the running one kept.
        let before = g.nodes[&1].replicated().services.clone();
        g.push_config(
            1,
            5,
            conf_with(5, r#"<service name="s" domain="nowhere"/>"#),
        );
        assert_eq!(g.nodes[&3].replicated().services, before);
        assert!(g
            .log
            .iter()
            .any(|l| l.starts_with("Refusing configuration version 5 (cluster.conf line")));
        // An older or equal version is not offered again.
        g.push_config(2, 4, conf_with(4, s));
        assert_eq!(g.ops_on("service:s"), vec![Op::Start, Op::Stop, Op::Start]);
    }

    #[test]
    fn a_daemon_gone_without_its_node_leaves_its_services_waiting() {
        // Gone, then fenced: taken over.
        let mut g = group("restart");
        g.nodes.remove(&1);
        g.confchg(&[2, 3], &[], &[]);
        g.settle();
        assert_eq!(g.where_2(), (State::Recoverable, Some(1)));
        g.tick(30);
        assert_eq!(g.where_2(), (State::Recoverable, Some(1)));
        g.input(2, Input::FenceNotice(NodeId(1)));
        g.settle();
        assert_eq!(g.where_2(), (State::Started, Some(2)));

        // Gone, then back: the new daemon cleans up and it runs again.
        let mut g = group("restart");
        let cfg = parse(&CONF.replace("RECOVERY", "restart")).unwrap();
        let ids: BTreeMap<String, NodeId> = [("a", 1), ("b", 2), ("c", 3)]
            .iter()
            .map(|(n, i)| (n.to_string(), NodeId(*i)))
            .collect();
        g.nodes.remove(&1);
        g.confchg(&[2, 3], &[], &[]);
        g.settle();
        g.nodes.insert(1, Node::new(NodeId(1), &cfg, &ids));
        g.input(1, Input::Quorum(true));
        g.confchg(&[1, 2, 3], &[1], &[]);
        g.settle();
        assert_eq!(g.where_2(), (State::Started, Some(1)));
        let ops: Vec<Op> = g
            .ran
            .iter()
            .filter(|(n, _, op)| *n == 1 && *op != Op::Status)
            .map(|(_, _, op)| *op)
            .collect();
        assert_eq!(ops, vec![Op::Start, Op::Cleanup, Op::Start]);
    }
}
