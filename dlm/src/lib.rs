//! An in-process distributed lock manager with the Linux kernel DLM's semantics.
//!
//! Layers, bottom up: [`mode`] (modes and their tables), [`rsb`] (one
//! resource's queues and grant rules, as its master keeps them), [`wire`]
//! (messages and their binary encoding), [`node`] (one node's lockspace
//! state machine: process copies, master copies, directory, recovery).
//! All of these are sans-IO. The drivers around them do the I/O.
//!
//! Glossary (the kernel's words):
//! - **rsb**: a resource, named by up to 64 bytes.
//! - **lkb**: a lock on a resource. The *process copy* lives on the node
//!   that holds the lock; the *master copy* on the resource's master.
//! - **master**: the node that keeps a resource's queues and decides grants.
//! - **directory node**: the node that records who masters a resource,
//!   chosen by a hash of the name over the sorted member list.
//! - **ast**: completion callback; **bast**: blocking callback (carries the
//!   mode that is waiting).
//! - **LVB**: lock value block.

pub mod bench;
pub mod driver;
mod lkb_table;
pub mod membership;
pub mod metrics;
pub mod mode;
pub mod node;
mod node_free;
mod node_plock;
pub mod plock;
mod recovery;
pub mod rsb;
pub mod types;
pub mod wire;

pub use driver::lockspace::{
    AstFn, BastFn, Completion, LockHandler, Lockspace, PlockFn, PlockReq, RecoverOps,
};
pub use driver::{ClusterKey, Dlm, DlmConfig, DlmError, JoinOptions};
pub use membership::{Membership, MembershipEvent, StaticMembership};
pub use mode::Mode;
pub use node::Placement;
pub use types::{Flags, LockId, LockKey, Lvb, NodeId, ResName, SbFlags, Status};
