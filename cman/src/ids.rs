//! Newtypes for the identifiers and units the cluster layer talks about.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's `nodeid` from cluster.conf (1..=255 here, as cman allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One run of a node's daemon. A restart gets a higher incarnation; a node
/// declared dead stays dead for every incarnation up to the one that died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation(pub u64);

/// A node in one incarnation: what a view is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node.
    pub id: NodeId,
    /// Its run.
    pub inc: Incarnation,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.id.0, self.inc.0)
    }
}

/// Identifier of an installed membership view. Unique: each coordinator
/// numbers its own proposals (`seq` above any it has seen), and the pair
/// (coordinator, its incarnation) tells coordinators apart. Ordered by `seq`
/// first, so "newer view" means a higher `seq`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ViewId {
    /// Cluster generation: grows with every view.
    pub seq: u64,
    /// Node that proposed the view.
    pub coord: u32,
    /// Incarnation of the coordinator.
    pub coord_inc: u64,
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.seq, self.coord, self.coord_inc)
    }
}

/// A local API client of one node's daemon (0 is the daemon itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// A point in time or a duration in milliseconds on the node's monotonic clock.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    /// Time elapsed since `earlier` (0 if `earlier` is later).
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
