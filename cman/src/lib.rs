//! Cluster membership, quorum, group messaging, cluster.conf and fencing:
//! the CMAN, CCS and fenced of Red Hat Cluster Suite as one library, driven by
//! the `cmand` daemon.
//!
//! Layers, bottom up: [`config`] (cluster.conf), [`quorum`] (votequorum
//! arithmetic), [`node`] (the sans-IO membership, ordered group messaging and
//! fencing state machine), [`sim`] (deterministic simulation of many nodes),
//! [`wire`] (authenticated packets), [`agent`] (fence agent protocol),
//! [`fence_scsi`] (the SCSI persistent reservation fence agent),
//! [`api`] (the local unix-socket API), [`hosts`] (node names to addresses),
//! [`authkey`] (the cluster key) and [`daemon`] (the I/O driver).
//!
//! Glossary: *view* — an agreed membership (id + members); *coordinator* —
//! the lowest live node id, which proposes views and sequences group
//! messages; *incarnation* — one run of a node's daemon; *victim* — a failed
//! node waiting to be fenced; *fence domain* — the nodes that fence and get
//! fenced; *CPG* — corosync's closed process groups, here [`node`] groups.

pub mod agent;
pub mod api;
pub mod authkey;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dlm_membership;
pub mod fence_scsi;
pub mod hosts;
pub mod ids;
pub mod node;
pub mod proto;
pub mod quorum;
pub mod registry;
pub mod report;
pub mod sim;
pub mod wire;
