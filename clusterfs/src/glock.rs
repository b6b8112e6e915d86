//! The glock core: GFS2's cluster lock state machine, sans I/O.
//!
//! A *glock* guards what this node may cache of one object (an inode, a
//! resource group, a journal, ...) while other nodes use the same volume.
//! Each glock sits on one DLM lock. This module is only the state machine:
//! it reads no clock, takes no lock, does no I/O. A driver feeds it events
//! (a local acquire or release, the DLM's grant, failure or blocking
//! callback, the time) through [`GlockTable`] and carries out the
//! [`Action`]s it returns, in order, like raft-rs's `step` and `Ready`.
//!
//! # States
//! | state | DLM | may cache                                   |
//! |-------|-----|---------------------------------------------|
//! | UN    | NL  | nothing                                     |
//! | SH    | PR  | clean data and metadata                     |
//! | DF    | CW  | metadata only (direct I/O); conflicts SH    |
//! | EX    | EX  | data and metadata, dirty too                |
//!
//! # Rules
//! - **Cache.** A holder whose mode the state covers (EX covers all) and
//!   that is compatible with the holders already granted here is granted at
//!   once, with no DLM traffic. Holders are served in FIFO order: one that
//!   cannot be granted stops those behind it, so an EX waiter is never
//!   overtaken. Holders on one node exclude each other like nodes do (SH
//!   with SH, EX alone), as in current kernels; this is what lets several
//!   FUSE threads run without a filesystem-wide mutex.
//! - **Promote.** When no holder is granted and the head of the queue
//!   needs a state the glock lacks, one transition to that state starts.
//! - **Demote.** A blocking callback says another node waits for a DLM
//!   mode; the glock must go to the highest state it covers that is
//!   compatible (from EX: a wait for EX means UN, for CW means DF, for PR
//!   means SH; several different waits mean UN). The demote starts once no
//!   holder is granted; while it is due, new holders wait, so the other
//!   node is not starved. Inode glocks (only they, as in the kernel) that
//!   have a holder granted or waiting when the callback comes first keep
//!   their state for the *minimum hold time* after each change
//!   ([`GlockConfig::min_hold_ms`], 200 ms) so that two nodes do not
//!   ping-pong a glock without getting work done; during the hold, holders
//!   are still granted. A glock nobody holds or waits for goes at once.
//!   [`GlockTable::next_tick_ms`] says when to call [`GlockTable::tick`].
//! - **One at a time.** While a transition is in flight nothing else
//!   starts and nothing is granted; whoever waited for the new state is
//!   granted when it arrives, even if a demote is already due (so two
//!   nodes always make progress).
//! - **Local drops.** A holder with [`HolderFlags::nocache`] that leaves an
//!   empty queue, [`GlockTable::drop_cached`] and [`GlockTable::drop_all`]
//!   (unmount) take the glock to UN without waiting for the hold time.
//! - **Idle glocks.** A glock at UN with nobody waiting keeps its DLM lock
//!   in NL while it is among the [`GlockConfig::idle_kept`] most recently
//!   idle (the kernel's glock LRU): taking it again converts that lock
//!   instead of making a new DLM resource. The longest idle beyond that,
//!   and every idle glock after `drop_cached` or `drop_all`, are forgotten
//!   ([`Action::Forget`]).
//! - **Unused glocks.** A glock cached in SH, DF or EX that nobody holds
//!   or waits for stays so while it is among the
//!   [`GlockConfig::cached_kept`] most recently used; the longest unused
//!   beyond that is dropped as `drop_cached` drops it (the kernel's
//!   shrinker), so a node that touches files without end does not keep a
//!   glock for each.
//! - **Failures.** A refused NOQUEUE request fails the waiting try holders
//!   ([`Action::Failed`]); a conversion deadlock (EDEADLK) makes the glock
//!   drop to UN and ask again (NL blocks nobody, so the retry cannot
//!   deadlock); any other DLM error fails every waiting holder the state
//!   does not cover.
//!
//! # Action order of a transition
//! 1. [`Action::Sync`], only when leaving EX: flush the log for this glock,
//!    write its dirty blocks in place, revoke them (the kernel's `go_sync`).
//!    EX→SH stops here.
//! 2. [`Action::Invalidate`], only when going to UN or DF from a state that
//!    caches: drop this glock's cached data, and its metadata too unless
//!    going to DF (`go_inval`), including the kernel's page cache through
//!    FUSE notifications.
//! 3. [`Action::DlmRequest`]: convert the DLM lock (or take a new one if the
//!    driver has none yet). The answer comes back as
//!    [`GlockTable::dlm_granted`] or [`GlockTable::dlm_failed`].
//!
//! # Example
//! ```
//! use clusterfs::glock::{Action, DlmMode, GlockName, GlockState, GlockTable, HolderFlags};
//!
//! let mut table = GlockTable::default();
//! let ino = GlockName::inode(0x8103);
//! let (holder, actions) = table.acquire(ino, GlockState::Sh, HolderFlags::default(), 0);
//! let request = Action::DlmRequest { name: ino, from: GlockState::Un, to: GlockState::Sh, try_lock: false };
//! assert_eq!(actions, vec![request]);
//! // ... the driver asks the DLM for PR on "       2            8103" ...
//! assert_eq!(table.dlm_granted(ino, DlmMode::Pr, 3), vec![Action::Grant { holder }]);
//! assert_eq!(table.release(holder, 9), vec![], "the glock stays cached in SH");
//! ```
//!
//! # Glossary
//! - **holder**: one local request for a glock (the kernel's
//!   `gfs2_holder`), waiting or granted.
//! - **promote / demote**: a transition to a state that allows more / less.
//! - **bast**: blocking AST, the DLM's note that another node waits.
//! - **min hold**: time an inode glock in use stays after a change
//!   before a remote demote may take it.
//! - **DLM resource name**: `"%8x%16x"` of type and number, 24 bytes
//!   ([`GlockName::dlm_name`]).

mod machine;
mod mode;
mod name;
mod table;

pub use self::machine::{GlockCore, Holder, Transition};
pub use self::mode::{DlmMode, GlockState, ModeSet};
pub use self::name::{nondisk, GlockName, GlockType, DLM_NAME_LEN};
pub use self::table::{GlockConfig, GlockTable};

/// A holder's id, unique within its [`GlockTable`]: a number, in the
/// order holders were asked for, and the glock it is queued on (so that
/// releasing it finds its glock with no index of holders to keep).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HolderId {
    /// Its number within the table.
    pub seq: u64,
    /// The glock it is queued on.
    pub name: GlockName,
}

/// Options of one holder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolderFlags {
    /// Drop the glock to UN when this holder leaves and nobody else is
    /// queued (the kernel's `GL_NOCACHE`).
    pub nocache: bool,
    /// If this holder needs a DLM request, ask with NOQUEUE; a refusal
    /// fails it (`LM_FLAG_TRY`). It still waits for other local holders.
    pub try_lock: bool,
}

/// Why the DLM refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DlmFailure {
    /// A NOQUEUE request could not be granted at once (EAGAIN).
    TryFailed,
    /// Conversion deadlock (EDEADLK): another node converts the other way.
    Deadlock,
    /// Anything else (the lockspace is gone, ...).
    Error,
}

/// What the driver must do, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The holder is granted and may proceed.
    Grant {
        /// The holder.
        holder: HolderId,
    },
    /// The holder was refused and is gone (its acquire fails).
    Failed {
        /// The holder.
        holder: HolderId,
    },
    /// Make everything dirty under this glock durable and clean.
    Sync {
        /// The glock.
        name: GlockName,
    },
    /// Drop what is cached under this glock.
    Invalidate {
        /// The glock.
        name: GlockName,
        /// Going to DF: drop data pages only, keep metadata.
        keep_metadata: bool,
    },
    /// Ask the DLM to convert the lock from `from` to `to` (new lock if
    /// the driver has none).
    DlmRequest {
        /// The glock.
        name: GlockName,
        /// The state now.
        from: GlockState,
        /// The state wanted.
        to: GlockState,
        /// Ask with NOQUEUE.
        try_lock: bool,
    },
    /// The glock is at UN and idle and was forgotten: unlock its DLM lock.
    Forget {
        /// The glock.
        name: GlockName,
    },
}

#[cfg(test)]
mod tests;
