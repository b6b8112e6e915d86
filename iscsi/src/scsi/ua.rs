//! Unit attention conditions, queued per I_T nexus for one LUN
//! (SAM-5 5.14, SPC-4 7.x "unit attention condition").

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::sense::Asc;
use super::NexusId;

/// Bound on queued conditions per nexus; older ones are dropped first.
const MAX_QUEUED: usize = 16;

/// The pending unit attentions of one LUN. The fast path
/// ([`UaTable::pending`]) is one atomic load.
#[derive(Debug, Default)]
pub struct UaTable {
    count: AtomicUsize,
    queues: Mutex<HashMap<NexusId, VecDeque<Asc>>>,
}

impl UaTable {
    /// Whether any nexus has a pending condition.
    pub fn pending(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0
    }

    /// Queue `asc` for `nexus`; POWER ON / RESET replaces everything.
    pub fn add(&self, nexus: NexusId, asc: Asc) {
        let mut q = self.queues.lock();
        let queue = q.entry(nexus).or_default();
        let before = queue.len();
        if asc.0 == 0x29 {
            queue.clear();
        }
        if queue.contains(&asc) {
            self.fix_count(before, queue.len());
            return;
        }
        if queue.len() == MAX_QUEUED {
            queue.pop_front();
        }
        queue.push_back(asc);
        self.fix_count(before, queue.len());
    }

    fn fix_count(&self, before: usize, after: usize) {
        if after > before {
            self.count.fetch_add(after - before, Ordering::AcqRel);
        } else if before > after {
            self.count.fetch_sub(before - after, Ordering::AcqRel);
        }
    }

    /// Take the oldest pending condition of `nexus`.
    pub fn take(&self, nexus: NexusId) -> Option<Asc> {
        if !self.pending() {
            return None;
        }
        let mut q = self.queues.lock();
        let asc = q.get_mut(&nexus)?.pop_front()?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        Some(asc)
    }

    /// Forget everything queued for `nexus` (logout).
    pub fn clear(&self, nexus: NexusId) {
        let mut q = self.queues.lock();
        if let Some(queue) = q.remove(&nexus) {
            self.count.fetch_sub(queue.len(), Ordering::AcqRel);
        }
    }
}
