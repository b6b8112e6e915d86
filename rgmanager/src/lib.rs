//! HA services for the cluster: rgmanager.
//!
//! - [`config`]: the `<rm>` section of cluster.conf.
//! - [`agent`]: the resource agent interface and a runner for service trees.
//! - [`restree`]: a service's resources in start and stop order.
//! - [`placement`]: failover domain scores and target choice.
//! - [`state`]: service states (codes 110..120) and the replicated record.
//! - [`core`]: one node's service manager, sans IO (group messages in
//!   agreed order in, agent operations and messages out).
//! - [`daemon`]: the per-node daemon driving the core; [`control`]: its
//!   local socket for clusvcadm and clustat.
//!
//! Glossary (rgmanager's words): a *service* (resource group, `rg`) is a
//! tree of *resources* run by *agents*; its *owner* is the node running
//! it; a *failover domain* says where it may run; *recovery* is what a
//! failed status check leads to; the *RG master* here is the member that
//! proposes placements.

pub mod agent;
pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod placement;
pub mod report;
pub mod restree;
pub mod state;

/// A cluster node id (cmand's node id).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub u32);
