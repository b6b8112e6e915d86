//! Lock points: where cluster glocks slot in.
//!
//! The filesystem core takes a [`Glock`] before touching an inode, a
//! resource group or a journal. With `lock_nolock` the [`LocalLocks`]
//! implementation grants everything at once (the core is already serialised
//! by its caller); a `lock_dlm` implementation maps these onto DLM locks
//! (UN→NL, SH→PR, EX→EX) and must write back and drop cached blocks on
//! demotion.

/// Glock types (the kernel's `LM_TYPE_*`) this core uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Glock {
    /// An inode, by dinode block.
    Inode(u64),
    /// A resource group, by header block.
    Rgrp(u64),
    /// A journal, by jid.
    Journal(u32),
}

/// Glock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlockMode {
    /// Shared: may cache.
    Shared,
    /// Exclusive: may cache and dirty.
    Exclusive,
}

/// Errors taking a glock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock manager is gone (e.g. the node left the lockspace).
    #[error("lock manager unavailable: {0}")]
    Unavailable(String),
}

/// The lock manager the core calls. Calls are balanced: every successful
/// `acquire` is followed by one `release` of the same glock.
pub trait LockManager: Send + Sync {
    /// Takes `lock` in `mode`, waiting as needed.
    fn acquire(&self, lock: Glock, mode: GlockMode) -> Result<(), LockError>;
    /// Drops `lock`. Before demoting an exclusive lock a cluster
    /// implementation must have had the core commit its journal.
    fn release(&self, lock: Glock);
}

/// `lock_nolock`: one node, nothing to coordinate.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalLocks;

impl LockManager for LocalLocks {
    fn acquire(&self, _lock: Glock, _mode: GlockMode) -> Result<(), LockError> {
        Ok(())
    }

    fn release(&self, _lock: Glock) {}
}
