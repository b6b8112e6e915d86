//! Inputs, outputs and status of the node state machine.

use crate::ids::{ClientId, Member, NodeId, ViewId};
use crate::proto::Msg;
use crate::quorum::QuorumStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Group of the fence domain (`fence_tool join` puts the daemon, client 0, in it).
pub const FENCE_DOMAIN: &str = "fenced:default";

/// What a local client (tool or daemon) asks of its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Join a process group.
    Join {
        /// Group name.
        group: String,
    },
    /// Leave a process group.
    Leave {
        /// Group name.
        group: String,
    },
    /// Send a message to a group (delivered in agreed order, sender included).
    Send {
        /// Group name.
        group: String,
        /// Body.
        data: String,
    },
    /// The client disconnected: it leaves all its groups.
    Gone,
    /// `cman_tool expected -e N`.
    SetExpected(u32),
    /// `ccs_tool update` / `cman_tool version -r`: a new cluster.conf.
    ConfigUpdate {
        /// The file's text.
        text: String,
    },
    /// The node was fenced by hand (`fence_node`, `fence_ack_manual`).
    FenceOverride {
        /// The node.
        node: NodeId,
        /// How (agent name or "override").
        how: String,
    },
    /// `cman_tool leave`.
    LeaveCluster,
    /// `fence_tool join` (true) / `leave` (false).
    FenceDomain(bool),
}

/// An input of the node state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed (call at least every [`super::Node::tick_ms`]).
    Tick,
    /// An authenticated message from another node.
    Packet {
        /// Sender.
        from: Member,
        /// The message.
        msg: Msg,
    },
    /// A local client's request.
    Client {
        /// Who asks.
        client: ClientId,
        /// What.
        req: Request,
    },
    /// The processes of this node started under an earlier cmand that
    /// still run, as the driver finds them in the node's registry
    /// ([`crate::registry`]); empty once they are all gone. While the list
    /// is not empty the node is *held*: it stays out of every view (its
    /// old processes may still hold cluster locks and write), and the
    /// fence of its earlier incarnation is really run, never skipped as
    /// "rejoined". A node is not held until told.
    OldProcesses(Vec<String>),
    /// A fence job ended.
    FenceResult {
        /// The victim.
        victim: Member,
        /// Whether a method succeeded.
        ok: bool,
        /// What succeeded (or why not).
        how: String,
    },
}

/// One fence device call: the agent and its stdin options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCall {
    /// Agent program.
    pub agent: String,
    /// key=value options (action=off included).
    pub args: BTreeMap<String, String>,
}

/// Fence a victim: try the methods in order; a method succeeds when all its
/// devices succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceJob {
    /// The victim.
    pub victim: Member,
    /// Its name.
    pub node_name: String,
    /// Methods, each a list of device calls.
    pub methods: Vec<Vec<DeviceCall>>,
}

/// A membership change of a process group, as a member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupEvent {
    /// Members changed (CPG confchg).
    Confchg {
        /// Group.
        group: String,
        /// Members after the change, sorted.
        members: Vec<(NodeId, ClientId)>,
        /// Who joined.
        joined: Vec<(NodeId, ClientId)>,
        /// Who left (or failed: see `failed`).
        left: Vec<(NodeId, ClientId)>,
        /// Nodes whose members left because the node failed.
        failed: Vec<NodeId>,
        /// Where the change sits in the view's agreed order: 0 for a
        /// change that came with the view itself, else the agreed sequence
        /// number of the join or leave. Every member sees the same number
        /// for the same change, so (view, seq) orders a group's changes.
        #[serde(default)]
        seq: u64,
        /// The sequence number of the view the change belongs to.
        #[serde(default)]
        view_seq: u64,
    },
    /// A message, in agreed order.
    Message {
        /// Group.
        group: String,
        /// Sender node.
        node: NodeId,
        /// Sender client.
        client: ClientId,
        /// Body.
        data: String,
    },
}

/// Cluster-wide events for every local listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A view was installed.
    View {
        /// View id.
        view: ViewId,
        /// Members.
        members: Vec<Member>,
        /// Whether quorate.
        quorate: bool,
    },
    /// A failed node was fenced: its resources may now be recovered.
    NodeFenced {
        /// The victim.
        victim: Member,
        /// How.
        how: String,
    },
}

/// An output of the node state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message to a node.
    Send {
        /// Destination.
        to: NodeId,
        /// Message.
        msg: Msg,
    },
    /// Deliver a group event to a local client.
    Group {
        /// Client.
        client: ClientId,
        /// Event.
        event: GroupEvent,
    },
    /// Tell every local listener.
    Notify(ClusterEvent),
    /// Answer a client's request.
    Reply {
        /// Client.
        client: ClientId,
        /// Ok text or error text.
        result: Result<String, String>,
    },
    /// Run a fence job and report with [`Event::FenceResult`].
    RunFence(FenceJob),
    /// A new cluster.conf was adopted: write it.
    ConfigChanged {
        /// Its text.
        text: String,
    },
    /// This node must stop (evicted, or left).
    Shutdown {
        /// Why.
        reason: String,
    },
}

/// State of one configured node, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: NodeId,
    /// Name.
    pub name: String,
    /// Votes.
    pub votes: u32,
    /// "M" member, "X" not a member, "d" an incarnation of it is dead and
    /// waiting for fencing (shown even when a newer incarnation is back),
    /// "h" back in a new incarnation but held out of the cluster:
    /// processes of its earlier incarnation still run (see `held`).
    pub status: String,
    /// Incarnation when known.
    pub inc: u64,
    /// Milliseconds since it joined the view (members only).
    pub joined_ms_ago: Option<u64>,
    /// Last fencing: (ms ago, how).
    pub last_fenced: Option<(u64, String)>,
    /// When the node's current incarnation is held: the processes of its
    /// earlier incarnation that still run, as that node reports them.
    #[serde(default)]
    pub held: Vec<String>,
}

/// Everything `cman_tool status|nodes|services` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Cluster name.
    pub cluster_name: String,
    /// config_version.
    pub config_version: u64,
    /// This node.
    pub node_id: NodeId,
    /// This node's name.
    pub node_name: String,
    /// This node's incarnation.
    pub inc: u64,
    /// Installed view.
    pub view: ViewId,
    /// Milliseconds since that view was installed.
    pub view_age_ms: u64,
    /// Its members.
    pub members: Vec<Member>,
    /// Quorum.
    pub quorum: QuorumStatus,
    /// Every configured node.
    pub nodes: Vec<NodeInfo>,
    /// Fence domain members.
    pub fence_domain: Vec<NodeId>,
    /// Victims waiting.
    pub victims: Vec<Member>,
    /// Node running the fencing.
    pub fence_master: Option<NodeId>,
    /// Group table.
    pub groups: Vec<(String, Vec<(NodeId, ClientId)>)>,
    /// Leaving.
    pub leaving: bool,
    /// Token timeout (ms).
    pub token_ms: u64,
    /// This node is held out of the cluster: processes started under an
    /// earlier cmand of this node still run (see [`Event::OldProcesses`]).
    #[serde(default)]
    pub held: Vec<String>,
}
