//! The sans-IO node: membership, views, ordered group messaging and fencing.
//!
//! Feed it [`Event`]s with the current time; it returns [`Action`]s. It never
//! reads a clock, a socket or a random number generator itself.
//!
//! Protocol, in short:
//! - Every node sends a [`Heartbeat`] to every configured node each
//!   `token / 8` ms; a peer not heard for `token` ms is dead to it.
//! - The *coordinator* is the lowest live node id. It proposes a view made of
//!   a large set of nodes that all hear each other (picked from the members
//!   of its view first, then joiners, each in id order; while a live node was
//!   first heard less than two heartbeats ago it does not leave anybody out),
//!   collects one [`Ack`] per proposed member, then commits. Members install
//!   a view only from a commit and only if its id is higher than theirs.
//! - Members of an old view missing from a new one are dead in that
//!   incarnation (they must restart to come back) and become *victims*.
//! - Group messages go through the view's sequencer (its lowest member),
//!   which numbers them; members deliver a message once every member has it
//!   (*stable*), so at a view change all survivors of a view deliver the same
//!   prefix (the *cut*); what was cut is resubmitted by its origin.
//! - A quorate view's fencer (lowest member of the fence domain) fences each
//!   victim after `post_fail_delay`, retrying until it succeeds, then orders a
//!   `Fenced` payload; recovery ([`ClusterEvent::NodeFenced`]) follows it.
//! - A node whose earlier cmand left processes running (mounts, lock users:
//!   [`Event::OldProcesses`]) is *held*: it stays out of every view, and a
//!   victim is completed as "rejoined" without an agent only when its
//!   node's newer incarnation is heard and not held. While the view is
//!   quorate, a node whose earlier incarnation awaits its fence waits
//!   outside until the fence is done.

mod fence;
mod order;
mod types;
mod view;

pub use types::*;

use crate::config::ClusterConf;
use crate::ids::{ClientId, Incarnation, Member, Millis, NodeId, ViewId};
use crate::proto::{Commit, GroupEntry, Heartbeat, Msg, Payload};
use crate::quorum::{QuorumConfig, QuorumState};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What this node knows of a peer.
#[derive(Clone, Debug)]
struct Peer {
    inc: Incarnation,
    last_heard: Millis,
    /// Since when this incarnation is heard without a token-long silence.
    heard_since: Millis,
    alive: Vec<NodeId>,
    view: ViewId,
    leaving: bool,
    config_version: u64,
    /// What its heartbeats say of its node's earlier processes (see
    /// [`Event::OldProcesses`]); `None` until a heartbeat of this
    /// incarnation arrives, and an unknown incarnation counts as held.
    held: Option<Vec<String>>,
}

/// An installed view.
#[derive(Clone, Debug, Default)]
struct View {
    id: ViewId,
    installed_at: Millis,
    members: Vec<Member>,
    joined_at: BTreeMap<NodeId, Millis>,
}

/// A proposal this node (as coordinator) is collecting acks for.
#[derive(Clone, Debug)]
struct Proposal {
    view: ViewId,
    members: Vec<Member>,
    acks: BTreeMap<NodeId, crate::proto::Ack>,
    started: Millis,
    last_sent: Millis,
}

/// A victim as this node tracks it.
#[derive(Clone, Debug)]
struct VictimState {
    member: Member,
    since: Millis,
    running: bool,
    submitted: bool,
    retry_at: Millis,
}

/// Ordered-delivery state of the installed view.
#[derive(Clone, Debug, Default)]
struct Ordering {
    recv: BTreeMap<u64, (Member, u64, Payload)>,
    delivered: u64,
    stable: u64,
    seq: Option<order::Sequencer>,
}

/// One node's membership, messaging and fencing state.
#[derive(Debug)]
pub struct Node {
    me: Member,
    conf: ClusterConf,
    conf_text: String,
    token_ms: u64,
    started: Option<Millis>,
    last_hb: Millis,
    peers: BTreeMap<NodeId, Peer>,
    dead: BTreeMap<NodeId, Incarnation>,
    view: View,
    /// Members of the last quorate view and whether each was in the fence domain.
    last_quorate: Vec<(Member, bool)>,
    max_seq: u64,
    promised: ViewId,
    proposal: Option<Proposal>,
    last_commit: Option<(Commit, Millis)>,
    suspects: BTreeMap<NodeId, Millis>,
    groups: BTreeSet<GroupEntry>,
    intents: BTreeSet<(String, ClientId)>,
    pending: VecDeque<(u64, Payload)>,
    next_oseq: u64,
    ord: Ordering,
    victims: BTreeMap<NodeId, VictimState>,
    last_fenced: BTreeMap<NodeId, (Incarnation, Millis, String)>,
    recovered: BTreeSet<Member>,
    delivered_oseq: BTreeMap<Member, u64>,
    quorum: QuorumState,
    expected: Option<u32>,
    leaving: Option<Millis>,
    /// Processes of this node's earlier incarnations that still run: while
    /// any does, this node stays out of every view.
    held: Vec<String>,
    shut: bool,
    now: Millis,
    last_config_req: Millis,
    out: Vec<Action>,
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// This node is not in the config.
    #[error("node {0} is not in cluster.conf")]
    NotInConfig(String),
}

impl Node {
    /// A node `id` in incarnation `inc` with the given cluster.conf text. The
    /// node joins the fence domain at start, as `service cman start` does.
    pub fn new(id: NodeId, inc: Incarnation, conf_text: &str) -> Result<Node, NodeError> {
        let conf = ClusterConf::parse(conf_text)?;
        if conf.node(id).is_none() {
            return Err(NodeError::NotInConfig(id.to_string()));
        }
        let mut node = Node {
            me: Member { id, inc },
            token_ms: conf.totem.token_ms,
            quorum: QuorumState::new(QuorumConfig::from_conf(&conf)),
            conf,
            conf_text: conf_text.to_string(),
            started: None,
            last_hb: Millis(0),
            peers: BTreeMap::new(),
            dead: BTreeMap::new(),
            view: View::default(),
            last_quorate: Vec::new(),
            max_seq: 0,
            promised: ViewId::default(),
            proposal: None,
            last_commit: None,
            suspects: BTreeMap::new(),
            groups: BTreeSet::new(),
            intents: BTreeSet::new(),
            pending: VecDeque::new(),
            next_oseq: 1,
            ord: Ordering::default(),
            victims: BTreeMap::new(),
            last_fenced: BTreeMap::new(),
            recovered: BTreeSet::new(),
            delivered_oseq: BTreeMap::new(),
            expected: None,
            leaving: None,
            held: Vec::new(),
            shut: false,
            now: Millis(0),
            last_config_req: Millis(0),
            out: Vec::new(),
        };
        node.intents.insert((FENCE_DOMAIN.to_string(), ClientId(0)));
        Ok(node)
    }

    /// This node in its incarnation.
    pub fn me(&self) -> Member {
        self.me
    }

    /// How often the driver should send [`Event::Tick`] (ms).
    pub fn tick_ms(&self) -> u64 {
        (self.hb_ms() / 2).max(5)
    }

    fn hb_ms(&self) -> u64 {
        (self.token_ms / 8).max(10)
    }

    /// The current cluster.conf.
    pub fn conf(&self) -> &ClusterConf {
        &self.conf
    }

    /// The current cluster.conf text.
    pub fn conf_text(&self) -> &str {
        &self.conf_text
    }

    /// Installed view id and members.
    pub fn view(&self) -> (ViewId, &[Member]) {
        (self.view.id, &self.view.members)
    }

    /// Whether the installed view is quorate and intact: every other member
    /// is still heard within the token timeout. While a member is missing
    /// the view is *transitional* and counts as not quorate, so a stale view
    /// never lends quorum for longer than one token timeout.
    pub fn quorate(&self) -> bool {
        self.in_view() && self.quorum.status().quorate && !self.transitional()
    }

    /// Whether some member of the installed view is no longer heard.
    pub fn transitional(&self) -> bool {
        self.view.members.iter().any(|m| {
            m.id != self.me.id
                && !(self.peer_alive(self.now, m.id)
                    && self.peers.get(&m.id).is_some_and(|p| p.inc == m.inc))
        })
    }

    /// The latest incarnation of `id` this node has heard from, if any.
    pub fn heard_incarnation(&self, id: NodeId) -> Option<Incarnation> {
        self.peers.get(&id).map(|p| p.inc)
    }

    /// Whether this node stopped (evicted or left).
    pub fn is_shut(&self) -> bool {
        self.shut
    }

    /// Whether this node is held out of the cluster (processes of its
    /// node's earlier incarnations still run).
    pub fn is_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether the incarnation of `id` heard last is held, or unknown
    /// (no heartbeat of it yet): its node's earlier processes may run.
    pub fn peer_held(&self, id: NodeId) -> bool {
        self.peers
            .get(&id)
            .is_none_or(|p| p.held.as_ref().is_none_or(|h| !h.is_empty()))
    }

    /// Victims waiting for fencing.
    pub fn victims(&self) -> Vec<Member> {
        self.victims.values().map(|v| v.member).collect()
    }

    /// One line of internal state for simulation traces.
    pub fn debug_line(&self, now: Millis) -> String {
        format!(
            "{} view {} promised {} proposal {:?} alive {:?} suspects {:?} dead {:?} peers {:?}",
            self.me,
            self.view.id,
            self.promised,
            self.proposal
                .as_ref()
                .map(|p| (p.view, p.members.len(), p.acks.len())),
            self.alive_ids(now),
            self.suspects,
            self.dead,
            self.peers
                .iter()
                .map(|(id, p)| (id.0, p.inc.0, p.alive.clone(), now.since(p.last_heard)))
                .collect::<Vec<_>>()
        )
    }

    fn in_view(&self) -> bool {
        self.view.members.contains(&self.me)
    }

    /// Handles one event at time `now`; returns what to do.
    pub fn handle(&mut self, now: Millis, ev: Event) -> Vec<Action> {
        if self.shut {
            return Vec::new();
        }
        self.started.get_or_insert(now);
        self.now = now;
        match ev {
            Event::Tick => self.on_tick(now),
            Event::Packet { from, msg } => self.on_packet(now, from, msg),
            Event::Client { client, req } => self.on_request(now, client, req),
            Event::OldProcesses(list) => self.on_old_processes(list),
            Event::FenceResult { victim, ok, how } => self.on_fence_result(now, victim, ok, how),
        }
        std::mem::take(&mut self.out)
    }

    fn on_old_processes(&mut self, list: Vec<String>) {
        if list.is_empty() && !self.held.is_empty() {
            tracing::info!(node = %self.me, "the earlier processes of this node are gone: joining");
            // Live from now on, as if it just started: listen before
            // coordinating, so that the others' heartbeats list it first (a
            // lowest-id node that proposed at once would find nobody hearing
            // it and leave a healthy quorate view's members out).
            self.started = Some(self.now);
        } else if !list.is_empty() && self.held.is_empty() {
            tracing::warn!(node = %self.me, processes = ?list, "processes started under an earlier cmand of this node still run: held out of the cluster until they are gone");
        }
        self.held = list;
    }

    fn send(&mut self, to: NodeId, msg: Msg) {
        if to == self.me.id {
            return;
        }
        self.out.push(Action::Send { to, msg });
    }

    fn send_to_all(&mut self, msg: &Msg) {
        let ids: Vec<NodeId> = self.conf.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.send(id, msg.clone());
        }
    }

    fn reply(&mut self, client: ClientId, result: Result<String, String>) {
        if client != ClientId(0) {
            self.out.push(Action::Reply { client, result });
        }
    }

    fn shutdown(&mut self, reason: String) {
        tracing::warn!(node = %self.me, %reason, "shutting down");
        self.shut = true;
        self.out.push(Action::Shutdown { reason });
    }

    fn is_dead(&self, m: Member) -> bool {
        self.dead.get(&m.id).is_some_and(|d| m.inc <= *d)
    }

    fn mark_dead(&mut self, m: Member) {
        let d = self.dead.entry(m.id).or_insert(m.inc);
        *d = (*d).max(m.inc);
    }

    fn peer_alive(&self, now: Millis, id: NodeId) -> bool {
        let Some(p) = self.peers.get(&id) else {
            return false;
        };
        now.since(p.last_heard) < self.token_ms
            && !p.leaving
            && !self.peer_held(id)
            && !self.is_dead(Member { id, inc: p.inc })
            && self.suspects.get(&id).is_none_or(|until| now >= *until)
    }

    fn alive_ids(&self, now: Millis) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .peers
            .keys()
            .copied()
            .filter(|id| self.peer_alive(now, *id))
            .collect();
        if self.leaving.is_none() && self.held.is_empty() {
            ids.push(self.me.id);
        }
        ids.sort();
        ids
    }

    fn on_tick(&mut self, now: Millis) {
        let due = now.since(self.last_hb) >= self.hb_ms() || self.last_hb == Millis(0);
        if due {
            self.last_hb = now;
            self.send_heartbeat(now);
        }
        self.check_leaving(now);
        if self.shut {
            return;
        }
        self.coordinate(now);
        if due {
            self.order_tick();
        }
        self.fence_tick(now);
        if let Some(n) = self.quorum.tick(now) {
            tracing::info!(expected = n, "last_man_standing lowered expected votes");
        }
    }

    fn send_heartbeat(&mut self, now: Millis) {
        let stable = if self.ord.seq.is_some() {
            self.ord.stable
        } else {
            0
        };
        let hb = Msg::Heartbeat(Heartbeat {
            view: self.view.id,
            alive: self.alive_ids(now),
            config_version: self.conf.config_version,
            stable,
            leaving: self.leaving.is_some(),
            victims: self.victims(),
            fenced: self.fenced_list(),
            held: self.held.clone(),
        });
        self.send_to_all(&hb);
    }

    fn check_leaving(&mut self, now: Millis) {
        let Some(since) = self.leaving else { return };
        let others_moved = self
            .view
            .members
            .iter()
            .filter(|m| m.id != self.me.id)
            .all(|m| self.peers.get(&m.id).is_some_and(|p| p.view > self.view.id));
        if others_moved || now.since(since) > 2 * self.token_ms {
            self.shutdown("left the cluster".to_string());
        }
    }

    fn on_packet(&mut self, now: Millis, from: Member, msg: Msg) {
        if from.id == self.me.id || self.conf.node(from.id).is_none() {
            return;
        }
        if let Msg::Evicted { member } = &msg {
            if *member == self.me && self.leaving.is_some() {
                self.shutdown("left the cluster".to_string());
            } else if *member == self.me {
                self.shutdown(format!("evicted from the cluster by node {}", from.id));
            }
            return;
        }
        if self.is_dead(from) {
            // Dead marks only come from quorate views: tell it to restart.
            self.send(from.id, Msg::Evicted { member: from });
            return;
        }
        if !self.note_peer(now, from) {
            return;
        }
        match msg {
            Msg::Heartbeat(hb) => self.on_heartbeat(now, from, hb),
            Msg::Propose { view, members } => self.on_propose(now, from, view, members),
            Msg::Ack(ack) => self.on_ack(now, from, *ack),
            Msg::Nack { view, promised } => self.on_nack(now, view, promised),
            Msg::Commit(c) => self.apply_commit(now, *c),
            Msg::Submit {
                view,
                oseq,
                base,
                payload,
            } => self.on_submit(from, view, oseq, base, payload),
            Msg::Deliver {
                view,
                seq,
                origin,
                oseq,
                stable,
                payload,
            } => self.on_deliver(view, seq, origin, oseq, stable, payload),
            Msg::Received { view, upto } => self.on_received(from, view, upto),
            Msg::Stable { view, upto } => self.on_stable(view, upto),
            Msg::ConfigRequest => {
                let text = self.conf_text.clone();
                self.send(from.id, Msg::ConfigData { text });
            }
            Msg::ConfigData { text } => self.on_config_data(&text),
            Msg::Evicted { .. } => {}
        }
    }

    /// Records that `from` spoke; false when the packet is from an older
    /// incarnation than one already heard.
    fn note_peer(&mut self, now: Millis, from: Member) -> bool {
        let fresh = Peer {
            inc: from.inc,
            last_heard: now,
            heard_since: now,
            alive: Vec::new(),
            view: ViewId::default(),
            leaving: false,
            config_version: 0,
            held: None,
        };
        let token_ms = self.token_ms;
        let p = self.peers.entry(from.id).or_insert(fresh.clone());
        if from.inc < p.inc {
            return false;
        }
        if from.inc > p.inc {
            *p = fresh;
        }
        if now.since(p.last_heard) >= token_ms {
            p.heard_since = now;
        }
        p.last_heard = now;
        true
    }

    fn on_heartbeat(&mut self, now: Millis, from: Member, hb: Heartbeat) {
        self.max_seq = self.max_seq.max(hb.view.seq);
        if let Some(p) = self.peers.get_mut(&from.id) {
            p.alive = hb.alive;
            p.view = hb.view;
            p.leaving = hb.leaving;
            p.config_version = hb.config_version;
            if !hb.held.is_empty() && p.held.as_ref().is_none_or(|h| h.is_empty()) {
                tracing::warn!(node = %self.me, peer = %from, processes = ?hb.held, "node is back but processes of its earlier incarnation still run: it stays out of the cluster, and the fence of its earlier incarnation is not skipped");
            }
            p.held = Some(hb.held);
        }
        self.gossip_fencing(now, &hb.victims, &hb.fenced);
        if hb.view == self.view.id && self.view.members.first() == Some(&from) {
            self.on_stable(hb.view, hb.stable);
        }
        if hb.config_version > self.conf.config_version
            && now.since(self.last_config_req) >= self.hb_ms()
        {
            self.last_config_req = now;
            self.send(from.id, Msg::ConfigRequest);
        }
    }

    fn on_config_data(&mut self, text: &str) {
        match self.check_config(text) {
            Ok(conf) => self.adopt_config(conf, text),
            Err(e) => tracing::warn!(error = %e, "refused cluster.conf from a peer"),
        }
    }

    /// Validates a new cluster.conf against the current one.
    fn check_config(&self, text: &str) -> Result<ClusterConf, String> {
        let conf = ClusterConf::parse(text).map_err(|e| e.to_string())?;
        if conf.name != self.conf.name {
            return Err(format!(
                "cluster name {} differs from {}",
                conf.name, self.conf.name
            ));
        }
        if conf.config_version <= self.conf.config_version {
            return Err(format!(
                "config_version {} is not higher than the current {}",
                conf.config_version, self.conf.config_version
            ));
        }
        if conf.node(self.me.id).is_none() {
            return Err(format!("node {} is not in the new config", self.me.id));
        }
        Ok(conf)
    }

    fn adopt_config(&mut self, conf: ClusterConf, text: &str) {
        tracing::info!(version = conf.config_version, "adopting cluster.conf");
        self.token_ms = conf.totem.token_ms;
        self.quorum.set_config(QuorumConfig::from_conf(&conf));
        self.conf = conf;
        self.conf_text = text.to_string();
        self.out.push(Action::ConfigChanged {
            text: text.to_string(),
        });
    }

    fn on_request(&mut self, now: Millis, client: ClientId, req: Request) {
        match req {
            Request::Join { group } => self.client_join(client, group),
            Request::Leave { group } => self.client_leave(client, group),
            Request::Send { group, data } => {
                if self.intents.contains(&(group.clone(), client)) {
                    self.submit(Payload::Data {
                        group,
                        client,
                        data,
                    });
                    self.reply(client, Ok(String::new()));
                } else {
                    self.reply(client, Err(format!("not a member of group {group}")));
                }
            }
            Request::Gone => {
                let groups: Vec<String> = self
                    .intents
                    .iter()
                    .filter(|(_, c)| *c == client)
                    .map(|(g, _)| g.clone())
                    .collect();
                for g in groups {
                    self.client_leave(client, g);
                }
            }
            Request::SetExpected(votes) => {
                self.submit(Payload::SetExpected { votes });
                self.reply(client, Ok(format!("expected votes set to {votes}")));
            }
            Request::ConfigUpdate { text } => match self.check_config(&text) {
                Ok(conf) => {
                    let v = conf.config_version;
                    self.adopt_config(conf, &text);
                    self.reply(client, Ok(format!("config_version {v} accepted")));
                }
                Err(e) => self.reply(client, Err(e)),
            },
            Request::FenceOverride { node, how } => self.fence_override(client, node, how),
            Request::LeaveCluster => {
                self.leaving = Some(now);
                self.send_heartbeat(now);
                self.reply(client, Ok("leaving".to_string()));
            }
            Request::FenceDomain(true) => self.client_join(client, FENCE_DOMAIN.to_string()),
            Request::FenceDomain(false) => self.client_leave(client, FENCE_DOMAIN.to_string()),
        }
    }

    fn client_join(&mut self, client: ClientId, group: String) {
        // The fence domain belongs to the daemon (client 0) whoever asks.
        let owner = if group == FENCE_DOMAIN {
            ClientId(0)
        } else {
            client
        };
        if !self.intents.insert((group.clone(), owner)) {
            return self.reply(client, Err(format!("already in group {group}")));
        }
        self.submit(Payload::Join {
            group,
            client: owner,
        });
        self.reply(client, Ok(String::new()));
    }

    fn client_leave(&mut self, client: ClientId, group: String) {
        let owner = if group == FENCE_DOMAIN {
            ClientId(0)
        } else {
            client
        };
        if !self.intents.remove(&(group.clone(), owner)) {
            return self.reply(client, Err(format!("not in group {group}")));
        }
        self.submit(Payload::Leave {
            group,
            client: owner,
        });
        self.reply(client, Ok(String::new()));
    }

    /// Status for the tools.
    pub fn status(&self, now: Millis) -> Status {
        let mut q = self.quorum.status();
        q.quorate = self.quorate();
        Status {
            cluster_name: self.conf.name.clone(),
            config_version: self.conf.config_version,
            node_id: self.me.id,
            node_name: self
                .conf
                .node(self.me.id)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
            inc: self.me.inc.0,
            view: self.view.id,
            view_age_ms: now.since(self.view.installed_at),
            members: self.view.members.clone(),
            quorum: q,
            nodes: self.node_infos(now),
            fence_domain: self.domain_members(),
            victims: self.victims(),
            fence_master: self.fencer(),
            groups: self.group_lists(),
            leaving: self.leaving.is_some(),
            token_ms: self.token_ms,
            held: self.held.clone(),
        }
    }

    fn node_infos(&self, now: Millis) -> Vec<NodeInfo> {
        self.conf
            .nodes
            .iter()
            .map(|n| {
                let member = self.view.members.iter().find(|m| m.id == n.id);
                let held = self.held_report(now, n.id);
                // A pending fence comes first: a node whose earlier
                // incarnation is not fenced yet is never shown as a plain
                // member.
                let status = if self.victims.contains_key(&n.id) {
                    "d"
                } else if member.is_some() {
                    "M"
                } else if !held.is_empty() {
                    "h"
                } else {
                    "X"
                };
                let inc = member
                    .map(|m| m.inc.0)
                    .or_else(|| self.peers.get(&n.id).map(|p| p.inc.0))
                    .unwrap_or(0);
                NodeInfo {
                    id: n.id,
                    name: n.name.clone(),
                    votes: n.votes,
                    status: status.to_string(),
                    inc,
                    joined_ms_ago: member
                        .and_then(|_| self.view.joined_at.get(&n.id))
                        .map(|t| now.since(*t)),
                    last_fenced: self
                        .last_fenced
                        .get(&n.id)
                        .map(|(_, at, how)| (now.since(*at), how.clone())),
                    held,
                }
            })
            .collect()
    }

    /// The earlier processes node `id` reports still running (this node's
    /// own, or a peer's as its last heartbeat within the token said).
    fn held_report(&self, now: Millis, id: NodeId) -> Vec<String> {
        if id == self.me.id {
            return self.held.clone();
        }
        self.peers
            .get(&id)
            .filter(|p| now.since(p.last_heard) < self.token_ms)
            .and_then(|p| p.held.clone())
            .unwrap_or_default()
    }

    fn group_lists(&self) -> Vec<(String, Vec<(NodeId, ClientId)>)> {
        let mut out: BTreeMap<String, Vec<(NodeId, ClientId)>> = BTreeMap::new();
        for e in &self.groups {
            out.entry(e.group.clone())
                .or_default()
                .push((e.node, e.client));
        }
        out.into_iter().collect()
    }
}
