//! Messages between nodes (the payload inside an authenticated packet).

use crate::ids::{ClientId, Member, NodeId, ViewId};
use serde::{Deserialize, Serialize};

/// Periodic liveness message, sent to every configured node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's installed view.
    pub view: ViewId,
    /// Nodes the sender hears from (for the coordinator's clique rule).
    pub alive: Vec<NodeId>,
    /// The sender's config_version.
    pub config_version: u64,
    /// Highest stable sequence number, when the sender sequences its view.
    pub stable: u64,
    /// The sender is leaving cleanly (`cman_tool leave`).
    pub leaving: bool,
    /// Victims the sender knows (gossiped so every fencer learns them).
    pub victims: Vec<Member>,
    /// Latest fenced incarnation per node the sender knows.
    pub fenced: Vec<Member>,
    /// Processes of the sender's node started under an earlier cmand that
    /// still run (as its driver found them in the node's registry): while
    /// this is not empty the sender stays out of every view, and a fence
    /// of its earlier incarnation is never skipped as "rejoined". A
    /// receiver treats an incarnation it has no heartbeat from yet as held.
    #[serde(default)]
    pub held: Vec<String>,
}

/// One entry of a group table: a process (client) of a node in a group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupEntry {
    /// Group name.
    pub group: String,
    /// Node the client lives on.
    pub node: NodeId,
    /// Client on that node (0: the daemon itself).
    pub client: ClientId,
}

/// A failed node waiting for fencing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Victim {
    /// The failed incarnation.
    pub member: Member,
}

/// A node's answer to a proposal: what it brings from its old view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The proposal acknowledged.
    pub view: ViewId,
    /// The sender's installed view.
    pub old_view: ViewId,
    /// Highest stable sequence number it knows in the old view.
    pub stable: u64,
    /// Its own clients' group memberships (intent).
    pub groups: Vec<GroupEntry>,
    /// Victims it knows, still waiting for fencing.
    pub victims: Vec<Victim>,
    /// Members of its old view missing from the proposal, and whether each
    /// needs fencing (false: it left cleanly or is outside the fence domain).
    pub missing: Vec<(Member, bool)>,
    /// Incarnations it knows to be dead.
    pub dead: Vec<Member>,
    /// Latest fenced incarnation of each node it knows of.
    pub fenced: Vec<Member>,
    /// Expected votes set by `cman_tool expected`, if any.
    pub expected: Option<u32>,
}

/// The coordinator's decision: install this view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The new view.
    pub view: ViewId,
    /// Its members, sorted.
    pub members: Vec<Member>,
    /// For each old view: deliver its messages up to this sequence number.
    pub cuts: Vec<(ViewId, u64)>,
    /// The group table of the new view.
    pub groups: Vec<GroupEntry>,
    /// Victims still to fence.
    pub victims: Vec<Victim>,
    /// Dead incarnations.
    pub dead: Vec<Member>,
    /// Latest fenced incarnation of each node.
    pub fenced: Vec<Member>,
    /// Expected votes override.
    pub expected: Option<u32>,
}

/// What travels in the agreed order of a view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A client joined a group.
    Join {
        /// Group.
        group: String,
        /// Client on the origin node.
        client: ClientId,
    },
    /// A client left a group.
    Leave {
        /// Group.
        group: String,
        /// Client on the origin node.
        client: ClientId,
    },
    /// A group message.
    Data {
        /// Group.
        group: String,
        /// Sending client on the origin node.
        client: ClientId,
        /// Body.
        data: String,
    },
    /// A victim was fenced (or acknowledged by an operator).
    Fenced {
        /// The victim.
        victim: Member,
        /// How: the agent(s) that succeeded, "override" or "rejoined".
        how: String,
    },
    /// `cman_tool expected -e N`.
    SetExpected {
        /// New expected votes.
        votes: u32,
    },
}

/// A message between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Liveness.
    Heartbeat(Heartbeat),
    /// Coordinator proposes a view.
    Propose {
        /// Proposed id.
        view: ViewId,
        /// Proposed members.
        members: Vec<Member>,
    },
    /// Member refuses a proposal: it promised a newer one.
    Nack {
        /// The refused proposal.
        view: ViewId,
        /// The newer proposal it promised.
        promised: ViewId,
    },
    /// Member acknowledges a proposal.
    Ack(Box<Ack>),
    /// Coordinator installs a view.
    Commit(Box<Commit>),
    /// A member hands a payload to the sequencer.
    Submit {
        /// View it is meant for.
        view: ViewId,
        /// Origin's sequence number for the payload.
        oseq: u64,
        /// Origin's lowest pending sequence number.
        base: u64,
        /// The payload.
        payload: Payload,
    },
    /// The sequencer orders a payload.
    Deliver {
        /// View.
        view: ViewId,
        /// Position in the view's agreed order (from 1).
        seq: u64,
        /// Origin node.
        origin: Member,
        /// Origin's sequence number.
        oseq: u64,
        /// Highest stable sequence number.
        stable: u64,
        /// The payload.
        payload: Payload,
    },
    /// A member has received everything up to `upto`.
    Received {
        /// View.
        view: ViewId,
        /// Contiguous receipt.
        upto: u64,
    },
    /// Everything up to `upto` was received by every member: deliver it.
    Stable {
        /// View.
        view: ViewId,
        /// Stable mark.
        upto: u64,
    },
    /// Ask for the sender's cluster.conf (it has a higher version).
    ConfigRequest,
    /// A cluster.conf.
    ConfigData {
        /// Its text.
        text: String,
    },
    /// The receiver's incarnation was declared dead: it must restart.
    Evicted {
        /// The dead incarnation.
        member: Member,
    },
}
