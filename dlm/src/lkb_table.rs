//! A node's process copies ([`Lkb`]s), indexed by lock id.
//!
//! A slab, not a hash map: a lock id names its slot directly, so finding,
//! adding and removing a lock costs no hashing and no moving of other
//! entries (the lock path does each once per lock/unlock pair). Slots are
//! reused, as the kernel reuses its idr lock ids; unlike the kernel, part
//! of every id is the slot's generation, bumped on each reuse, so a stale
//! id (kept by a caller after its unlock, or carried by a message that
//! outlived its lock) names no lock instead of a newer one.
//!
//! Ids keep the form `first_id + n * stride` of [`crate::node::Node::new`],
//! so a driver running several nodes (shards) still finds the owner of an
//! id by `id % stride`; `n` is `generation << slot_bits | slot`.

use crate::node::Lkb;
use crate::types::LockId;

/// Slots per table at most: `2^SLOT_BITS_MAX` locks held by one node
/// (per shard).
const SLOT_BITS_MAX: u32 = 20;
/// Generation bits wanted before slot bits are given out.
const GEN_BITS_MIN: u32 = 8;

#[derive(Clone, Debug)]
struct Slot {
    /// Generation the next lock in this slot gets.
    gen: u32,
    lkb: Option<Lkb>,
}

/// The lock table of one node.
#[derive(Clone, Debug)]
pub struct LockTable {
    slots: Vec<Slot>,
    /// Free slots, most recently freed last (reused first: warm in cache).
    free: Vec<u32>,
    len: usize,
    first_id: u32,
    stride: u32,
    /// `log2(stride)` when the stride is a power of two (no division).
    stride_shift: Option<u32>,
    slot_bits: u32,
    gen_mask: u32,
}

impl LockTable {
    /// An empty table handing out ids `first_id + n * stride`.
    pub fn new(first_id: u32, stride: u32) -> LockTable {
        assert!(stride > 0);
        let max_n = u64::from(u32::MAX - first_id) / u64::from(stride);
        // Every n below 2^total_bits gives an id that fits in 32 bits.
        let total_bits = 63 - (max_n + 1).leading_zeros();
        let slot_bits = total_bits
            .saturating_sub(GEN_BITS_MIN)
            .clamp(1, SLOT_BITS_MAX);
        let gen_bits = total_bits.saturating_sub(slot_bits);
        LockTable {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            first_id,
            stride,
            stride_shift: stride.is_power_of_two().then(|| stride.trailing_zeros()),
            slot_bits,
            gen_mask: (1u32 << gen_bits).wrapping_sub(1),
        }
    }

    /// Number of locks.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn id_of(&self, slot: u32, gen: u32) -> LockId {
        let n = gen << self.slot_bits | slot;
        LockId(self.first_id + n * self.stride)
    }

    /// The slot `id` names, if it is an id of this table.
    #[inline]
    fn slot_of(&self, id: LockId) -> Option<usize> {
        let off = id.0.checked_sub(self.first_id)?;
        let n = match self.stride_shift {
            Some(s) if off & (self.stride - 1) == 0 => off >> s,
            Some(_) => return None,
            None if off % self.stride == 0 => off / self.stride,
            None => return None,
        };
        Some((n & ((1 << self.slot_bits) - 1)) as usize)
    }

    /// True when every slot is taken: [`LockTable::insert_with`] would fail.
    pub fn is_full(&self) -> bool {
        self.free.is_empty() && self.slots.len() >= 1 << self.slot_bits
    }

    /// Adds the lock `make` builds for its new id. `None` when every slot
    /// is taken.
    pub fn insert_with(&mut self, make: impl FnOnce(LockId) -> Lkb) -> Option<(LockId, &mut Lkb)> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.slots.len() < 1 << self.slot_bits => {
                self.slots.push(Slot { gen: 0, lkb: None });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let id = self.id_of(slot, self.slots[slot as usize].gen);
        let s = &mut self.slots[slot as usize];
        s.gen = s.gen.wrapping_add(1) & self.gen_mask;
        self.len += 1;
        Some((id, s.lkb.insert(make(id))))
    }

    /// The lock `id`.
    #[inline]
    pub fn get(&self, id: LockId) -> Option<&Lkb> {
        let s = self.slot_of(id)?;
        self.slots.get(s)?.lkb.as_ref().filter(|l| l.id == id)
    }

    /// The lock `id`, to change.
    #[inline]
    pub fn get_mut(&mut self, id: LockId) -> Option<&mut Lkb> {
        let s = self.slot_of(id)?;
        self.slots.get_mut(s)?.lkb.as_mut().filter(|l| l.id == id)
    }

    /// True when `id` names a lock.
    pub fn contains_key(&self, id: LockId) -> bool {
        self.get(id).is_some()
    }

    /// Removes the lock `id`; its slot is free for the next insert.
    pub fn remove(&mut self, id: LockId) -> Option<Lkb> {
        let s = self.free_slot(id)?;
        self.slots[s].lkb.take()
    }

    /// [`LockTable::remove`] without handing the lock back (no copy out).
    /// False when there was no such lock.
    pub fn discard(&mut self, id: LockId) -> bool {
        match self.free_slot(id) {
            Some(s) => {
                // Only the tag needs clearing: `get` checks the id.
                self.slots[s].lkb = None;
                true
            }
            None => false,
        }
    }

    /// Marks the slot of lock `id` free (its contents are the caller's
    /// to clear).
    fn free_slot(&mut self, id: LockId) -> Option<usize> {
        let s = self.slot_of(id)?;
        let slot = self.slots.get(s)?;
        if slot.lkb.as_ref().is_none_or(|l| l.id != id) {
            return None;
        }
        self.len -= 1;
        self.free.push(s as u32);
        Some(s)
    }

    /// Every lock, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &Lkb> {
        self.slots.iter().filter_map(|s| s.lkb.as_ref())
    }

    /// Every lock id, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = LockId> + '_ {
        self.values().map(|l| l.id)
    }
}

impl std::ops::Index<LockId> for LockTable {
    type Output = Lkb;
    fn index(&self, id: LockId) -> &Lkb {
        self.get(id).expect("no such lock in the table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Op;
    use crate::types::{Flags, Lvb, ResName};

    fn lkb(id: LockId) -> Lkb {
        Lkb {
            id,
            name: ResName::new(b"r").expect("name"),
            grmode: None,
            rqmode: None,
            op: Op::None,
            flags: Flags::empty(),
            lvb: Lvb::default(),
            lvbseq: 0,
            has_lvb: false,
            cancel: false,
            sent: false,
            master: None,
            demoted: false,
        }
    }

    #[test]
    fn ids_keep_their_shard_and_stale_ids_miss() {
        let (first, stride) = (16 + 5, 16);
        let mut t = LockTable::new(first, stride);
        let (a, _) = t.insert_with(lkb).expect("room");
        assert_eq!(a.0 % stride, 5);
        assert!(t.contains_key(a));
        assert_eq!(t.remove(a).map(|l| l.id), Some(a));
        // The slot is reused under a new id; the old id names nothing.
        let (b, _) = t.insert_with(lkb).expect("room");
        assert_ne!(a, b);
        assert_eq!(b.0 % stride, 5);
        assert!(t.get(a).is_none());
        assert!(t.remove(a).is_none());
        assert!(!t.discard(a));
        let (c, _) = t.insert_with(lkb).expect("room");
        assert!(t.discard(c));
        assert!(t.get(c).is_none());
        assert_eq!(t[b].id, b);
        assert_eq!(t.len(), 1);
        // Ids of other shards or below the first id are not ours.
        assert!(t.get(LockId(b.0 + 1)).is_none());
        assert!(t.get(LockId(3)).is_none());
    }

    #[test]
    fn many_locks_unique_ids_and_reuse_after_wrap() {
        let mut t = LockTable::new(1, 1);
        let ids: Vec<LockId> = (0..5000)
            .map(|_| t.insert_with(lkb).expect("room").0)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert_eq!(t.keys().count(), 5000);
        for id in &ids[..2500] {
            assert!(t.remove(*id).is_some());
        }
        assert_eq!(t.len(), 2500);
        assert!(ids[2500..].iter().all(|id| t.contains_key(*id)));
        // Churn one slot through its generations: a reused slot gets a new
        // id every time until the generations wrap, and the old id of the
        // slot names nothing meanwhile.
        let mut seen = std::collections::HashSet::new();
        let mut prev: Option<LockId> = None;
        for _ in 0..(t.gen_mask + 1) {
            let (id, _) = t.insert_with(lkb).expect("room");
            assert!(
                seen.insert(id),
                "id {id} reused before the generations wrapped"
            );
            if let Some(p) = prev {
                assert!(t.get(p).is_none());
            }
            assert!(t.remove(id).is_some());
            prev = Some(id);
        }
        // Then they wrap: the next id of that slot is one seen before.
        let (id, _) = t.insert_with(lkb).expect("room");
        assert!(seen.contains(&id));
    }

    #[test]
    fn a_full_table_refuses() {
        // Huge stride: few ids fit in 32 bits, so few slots.
        let mut t = LockTable::new(1, 1 << 24);
        let mut n = 0;
        while t.insert_with(lkb).is_some() {
            n += 1;
            assert!(n <= 256, "more slots than ids");
        }
        assert!(n >= 2);
        assert_eq!(t.len(), n);
    }
}
