//! POSIX byte-range locks (fcntl `F_SETLK`/`F_SETLKW`/`F_GETLK`) and flock,
//! as a sans-IO table: range splitting and merging per owner, conflicts
//! between owners, FIFO wake-up of waiters and EDEADLK detection over the
//! wait-for graph.
//!
//! Owners are (node, owner id) pairs, the owner id being a pid for fcntl
//! locks or an open-file id for flock. Ranges are inclusive; `u64::MAX` as
//! the end means "to end of file".

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::types::NodeId;

/// Who holds a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// Node of the process.
    pub node: NodeId,
    /// Process id (fcntl) or open file id (flock).
    pub id: u64,
}

/// Lock type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Shared (F_RDLCK / LOCK_SH).
    Read,
    /// Exclusive (F_WRLCK / LOCK_EX).
    Write,
}

/// A granted lock on a byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plock {
    /// Holder.
    pub owner: Owner,
    /// Type.
    pub kind: Kind,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl Plock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
    fn conflicts(&self, owner: Owner, kind: Kind, start: u64, end: u64) -> bool {
        self.owner != owner
            && self.overlaps(start, end)
            && (self.kind == Kind::Write || kind == Kind::Write)
    }
}

/// A request waiting for a conflicting lock to go (F_SETLKW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// Caller's id for the request, reported when it is granted.
    pub req: u64,
    /// The lock asked for.
    pub lock: Plock,
}

/// Outcome of a lock request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlockResult {
    /// Granted now.
    Granted,
    /// Conflicts and the caller does not wait (EAGAIN); the first conflict.
    Conflict(Plock),
    /// Queued; granted later (reported by `unlock`/`purge`).
    Queued,
    /// Waiting would deadlock (EDEADLK).
    Deadlock,
}

/// What [`PlockTable::purge_owner`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// The owner's own waiting requests, removed unanswered.
    pub withdrawn: Vec<Waiter>,
    /// Other owners' waiting requests granted because the owner's locks went.
    pub granted: Vec<Waiter>,
}

/// Which lock family a file key belongs to: fcntl and flock locks on the
/// same file do not interact (as on Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// fcntl byte-range locks.
    Posix,
    /// flock whole-file locks.
    Flock,
}

#[derive(Default, Debug)]
struct FileLocks {
    granted: Vec<Plock>,
    waiters: VecDeque<Waiter>,
}

/// All plocks of one lockspace.
#[derive(Default, Debug)]
pub struct PlockTable {
    files: BTreeMap<(Family, u64), FileLocks>,
}

impl PlockTable {
    /// An empty table.
    pub fn new() -> PlockTable {
        PlockTable::default()
    }

    /// F_SETLK (`wait` false) / F_SETLKW (`wait` true) of `kind` on
    /// `start..=end` of `file`. Granted locks replace the owner's own locks
    /// in the range and merge with adjacent ones of the same type.
    pub fn lock(
        &mut self,
        fam: Family,
        file: u64,
        req: u64,
        lock: Plock,
        wait: bool,
    ) -> PlockResult {
        assert!(lock.start <= lock.end);
        let f = self.files.entry((fam, file)).or_default();
        if let Some(c) = f
            .granted
            .iter()
            .find(|g| g.conflicts(lock.owner, lock.kind, lock.start, lock.end))
        {
            if !wait {
                return PlockResult::Conflict(*c);
            }
            if fam == Family::Posix && self.would_deadlock(fam, file, &lock) {
                return PlockResult::Deadlock;
            }
            let f = self.files.get_mut(&(fam, file)).expect("entry");
            f.waiters.push_back(Waiter { req, lock });
            return PlockResult::Queued;
        }
        apply(
            &mut f.granted,
            lock.owner,
            Some(lock.kind),
            lock.start,
            lock.end,
        );
        PlockResult::Granted
    }

    /// F_UNLCK of `start..=end`; returns waiters granted as a result.
    pub fn unlock(
        &mut self,
        fam: Family,
        file: u64,
        owner: Owner,
        start: u64,
        end: u64,
    ) -> Vec<Waiter> {
        let Some(f) = self.files.get_mut(&(fam, file)) else {
            return Vec::new();
        };
        apply(&mut f.granted, owner, None, start, end);
        self.wake(fam, file)
    }

    /// F_GETLK: the first lock that would block `lock`, if any.
    pub fn get(&self, fam: Family, file: u64, lock: &Plock) -> Option<Plock> {
        let f = self.files.get(&(fam, file))?;
        f.granted
            .iter()
            .find(|g| g.conflicts(lock.owner, lock.kind, lock.start, lock.end))
            .copied()
    }

    /// Withdraws waiting request `req` (the caller was interrupted).
    pub fn cancel(&mut self, fam: Family, file: u64, req: u64) -> bool {
        let Some(f) = self.files.get_mut(&(fam, file)) else {
            return false;
        };
        let before = f.waiters.len();
        f.waiters.retain(|w| w.req != req);
        before != f.waiters.len()
    }

    /// Drops every lock and waiter of `node` (it died or left); returns
    /// waiters granted as a result.
    pub fn purge_node(&mut self, node: NodeId) -> Vec<Waiter> {
        let keys: Vec<(Family, u64)> = self.files.keys().copied().collect();
        let mut granted = Vec::new();
        for k in keys {
            let f = self.files.get_mut(&k).expect("key");
            f.granted.retain(|g| g.owner.node != node);
            f.waiters.retain(|w| w.lock.owner.node != node);
            granted.extend(self.wake(k.0, k.1));
        }
        granted
    }

    /// Drops every lock and waiter of `owner` on `file` (process exit /
    /// last close). The owner's waiting requests are returned in
    /// `withdrawn`, to be answered (their callers would otherwise wait
    /// forever); other owners' waiters granted as a result in `granted`.
    pub fn purge_owner(&mut self, fam: Family, file: u64, owner: Owner) -> Purged {
        let mut withdrawn = Vec::new();
        if let Some(f) = self.files.get_mut(&(fam, file)) {
            f.waiters.retain(|w| {
                let theirs = w.lock.owner == owner;
                if theirs {
                    withdrawn.push(*w);
                }
                !theirs
            });
        }
        let granted = self.unlock(fam, file, owner, 0, u64::MAX);
        Purged { withdrawn, granted }
    }

    /// Every granted lock, by file, for `dlm_tool plocks`.
    pub fn dump(&self) -> Vec<(Family, u64, Plock)> {
        self.files
            .iter()
            .flat_map(|(k, f)| f.granted.iter().map(move |p| (k.0, k.1, *p)))
            .collect()
    }

    /// Waiting requests, by file.
    pub fn waiting(&self) -> Vec<(Family, u64, Waiter)> {
        self.files
            .iter()
            .flat_map(|(k, f)| f.waiters.iter().map(move |w| (k.0, k.1, *w)))
            .collect()
    }

    fn wake(&mut self, fam: Family, file: u64) -> Vec<Waiter> {
        let Some(f) = self.files.get_mut(&(fam, file)) else {
            return Vec::new();
        };
        let mut granted = Vec::new();
        let mut i = 0;
        while i < f.waiters.len() {
            let w = f.waiters[i];
            let l = w.lock;
            if f.granted
                .iter()
                .any(|g| g.conflicts(l.owner, l.kind, l.start, l.end))
            {
                i += 1;
                continue;
            }
            f.waiters.remove(i);
            apply(&mut f.granted, l.owner, Some(l.kind), l.start, l.end);
            granted.push(w);
            i = 0; // a grant may change what earlier waiters see
        }
        if f.granted.is_empty() && f.waiters.is_empty() {
            self.files.remove(&(fam, file));
        }
        granted
    }

    /// Would `lock`'s owner, by waiting, close a cycle of owners waiting
    /// for each other (across all files)?
    fn would_deadlock(&self, fam: Family, file: u64, lock: &Plock) -> bool {
        let me = lock.owner;
        let blockers = |f: &FileLocks, l: &Plock| -> Vec<Owner> {
            f.granted
                .iter()
                .filter(|g| g.conflicts(l.owner, l.kind, l.start, l.end))
                .map(|g| g.owner)
                .collect()
        };
        let mut stack = blockers(&self.files[&(fam, file)], lock);
        let mut seen = HashSet::new();
        while let Some(o) = stack.pop() {
            if o == me {
                return true;
            }
            if !seen.insert(o) {
                continue;
            }
            for ((fm, _), f) in &self.files {
                if *fm != Family::Posix {
                    continue;
                }
                for w in f.waiters.iter().filter(|w| w.lock.owner == o) {
                    stack.extend(blockers(f, &w.lock));
                }
            }
        }
        false
    }
}

/// Sets `owner`'s locks on `start..=end` to `kind` (`None`: unlock),
/// splitting and merging as fcntl does. Other owners' locks are untouched.
fn apply(locks: &mut Vec<Plock>, owner: Owner, kind: Option<Kind>, start: u64, end: u64) {
    let mut kept = Vec::with_capacity(locks.len() + 2);
    for l in locks.drain(..) {
        if l.owner != owner || !l.overlaps(start, end) {
            kept.push(l);
            continue;
        }
        if l.start < start {
            kept.push(Plock {
                end: start - 1,
                ..l
            });
        }
        if l.end > end {
            kept.push(Plock {
                start: end + 1,
                ..l
            });
        }
    }
    if let Some(kind) = kind {
        let mut new = Plock {
            owner,
            kind,
            start,
            end,
        };
        // Merge with the owner's adjacent or overlapping locks of the same type.
        kept.retain(|l| {
            let touches = l.owner == owner
                && l.kind == kind
                && l.start <= new.end.saturating_add(1)
                && new.start <= l.end.saturating_add(1);
            if touches {
                new.start = new.start.min(l.start);
                new.end = new.end.max(l.end);
            }
            !touches
        });
        kept.push(new);
    }
    kept.sort_by_key(|l| (l.start, l.owner));
    *locks = kept;
}

#[cfg(test)]
#[path = "plock_tests.rs"]
mod tests;
