//! Small value types: ids, resource names, value blocks and request flags.

use std::fmt;

use crate::mode::Mode;

/// Maximum length of a resource or lockspace name (`DLM_RESNAME_MAXLEN`).
pub const NAME_MAX: usize = 64;
/// Length of a lock value block (the kernel's userspace default).
pub const LVB_LEN: usize = 32;

/// A cluster node id, as the membership source numbers nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

/// A lock id (lkid), unique within one node's lockspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockId(pub u32);

/// The owner-qualified id of a lock: which node holds it and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockKey {
    /// The node that holds (owns) the lock.
    pub node: NodeId,
    /// The lock's id on that node.
    pub id: LockId,
}

impl NodeId {
    /// The owner a master gives the orphans it keeps (PERSISTENT locks of
    /// dead nodes). Never a member: cluster node ids start at 1.
    pub const ORPHANS: NodeId = NodeId(0);
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A resource name: 1 to 64 arbitrary bytes, stored inline (no allocation),
/// with its hash computed once.
#[derive(Clone, Copy)]
pub struct ResName {
    hash: u64,
    len: u8,
    bytes: [u8; NAME_MAX],
}

impl PartialEq for ResName {
    #[inline]
    fn eq(&self, other: &ResName) -> bool {
        // Bytes past `len` are always zero (see `new`), so comparing the
        // 8-byte words that cover `len` is exact; inline, no `memcmp` call
        // on every map probe.
        self.hash == other.hash
            && self.len == other.len
            && self.bytes[..usize::from(self.len).div_ceil(8) * 8]
                .chunks_exact(8)
                .zip(other.bytes.chunks_exact(8))
                .all(|(a, b)| word(a) == word(b))
    }
}

/// An 8-byte chunk as a word (for [`ResName`]'s equality).
#[inline]
fn word(b: &[u8]) -> u64 {
    u64::from_ne_bytes(b.try_into().expect("8-byte chunk"))
}

impl Eq for ResName {}

impl PartialOrd for ResName {
    fn partial_cmp(&self, other: &ResName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ResName {
    fn cmp(&self, other: &ResName) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl ResName {
    /// A name from bytes; `None` when empty or longer than [`NAME_MAX`].
    #[inline]
    pub fn new(name: &[u8]) -> Option<ResName> {
        if name.is_empty() || name.len() > NAME_MAX {
            return None;
        }
        let mut bytes = [0u8; NAME_MAX];
        // Word by word: one multiply per 8 bytes in the hash's dependency
        // chain (a byte-wise hash costs one per byte, ~30 ns for a GFS2
        // glock name), and no `memcpy` call for a short name.
        let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ name.len() as u64;
        for (dst, src) in bytes.chunks_exact_mut(8).zip(name.chunks(8)) {
            let mut w = [0u8; 8];
            w[..src.len()].copy_from_slice(src);
            dst.copy_from_slice(&w);
            hash = (hash ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            hash ^= hash >> 32;
        }
        // MurmurHash3's fmix64: every output bit depends on every input bit.
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^= hash >> 33;
        Some(ResName {
            hash,
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// A stable 64-bit hash of the name (over its zero-padded 8-byte
    /// words), the same on every node: it picks the directory node and the
    /// lock table shard.
    pub fn hash64(&self) -> u64 {
        self.hash
    }
}

impl std::hash::Hash for ResName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A hasher for keys that are already well mixed or small integers (lock
/// ids, [`ResName`] which hashes itself once): one multiply instead
/// of SipHash on the lock path. Not for keys chosen by an attacker.
#[derive(Clone, Copy, Default)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// `BuildHasher` for [`FastHasher`].
pub type FastBuild = std::hash::BuildHasherDefault<FastHasher>;
/// A `HashMap` using [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;

impl fmt::Debug for ResName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self)
    }
}

impl fmt::Display for ResName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// A lock value block: a small buffer attached to a resource, read on grant
/// and written on release from PW/EX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lvb(pub [u8; LVB_LEN]);

/// Request flags (`DLM_LKF_*`), with the kernel's bit values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u32);

impl Flags {
    /// Fail with `Again` instead of queueing.
    pub const NOQUEUE: Flags = Flags(0x1);
    /// Cancel a waiting request or conversion (unlock-call flag).
    pub const CANCEL: Flags = Flags(0x2);
    /// Convert an existing lock.
    pub const CONVERT: Flags = Flags(0x4);
    /// Read/write the lock value block.
    pub const VALBLK: Flags = Flags(0x8);
    /// Queue a conversion behind other conversions even if compatible.
    pub const QUECVT: Flags = Flags(0x10);
    /// Invalidate the value block on release.
    pub const IVVALBLK: Flags = Flags(0x20);
    /// Resolve a conversion deadlock by demoting this lock to NL.
    pub const CONVDEADLK: Flags = Flags(0x40);
    /// The lock survives its owner's death as an orphan.
    pub const PERSISTENT: Flags = Flags(0x80);
    /// Do not report conversion deadlock (send a bast instead).
    pub const NODLCKWT: Flags = Flags(0x100);
    /// Grant a new NL request past the queues.
    pub const EXPEDITE: Flags = Flags(0x400);
    /// Send blocking callbacks even when failing a NOQUEUE request.
    pub const NOQUEUEBAST: Flags = Flags(0x800);
    /// Queue at the head instead of the tail.
    pub const HEADQUE: Flags = Flags(0x1000);
    /// Ignore the standard grant ordering.
    pub const NOORDER: Flags = Flags(0x2000);
    /// Adopt an orphan lock.
    pub const ORPHAN: Flags = Flags(0x4000);
    /// Grant PR if the requested mode cannot be granted.
    pub const ALTPR: Flags = Flags(0x8000);
    /// Grant CW if the requested mode cannot be granted.
    pub const ALTCW: Flags = Flags(0x10000);
    /// Unlock even a lock that is waiting or converting.
    pub const FORCEUNLOCK: Flags = Flags(0x20000);

    /// No flags.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// Status-block flags returned with a grant (`DLM_SBF_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct SbFlags(pub u8);

impl SbFlags {
    /// The granted mode was demoted to NL to break a conversion deadlock.
    pub const DEMOTED: SbFlags = SbFlags(0x1);
    /// The value block is not valid (a holder died or IVVALBLK was used).
    pub const VALNOTVALID: SbFlags = SbFlags(0x2);
    /// The alternate mode (ALTPR/ALTCW) was granted.
    pub const ALTMODE: SbFlags = SbFlags(0x4);

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: SbFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOrAssign for SbFlags {
    fn bitor_assign(&mut self, rhs: SbFlags) {
        self.0 |= rhs.0;
    }
}

/// The outcome a completion callback (ast) reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The request or conversion was granted in this mode.
    Granted(Mode),
    /// NOQUEUE request could not be granted (`-EAGAIN`).
    Again,
    /// Conversion refused to avoid a conversion deadlock (`-EDEADLK`).
    Deadlock,
    /// The lock was unlocked (`-DLM_EUNLOCK`).
    Unlocked,
    /// The waiting request or conversion was cancelled (`-DLM_ECANCEL`).
    Canceled,
}

impl Status {
    /// Wire code.
    pub fn code(self) -> (u8, u8) {
        match self {
            Status::Granted(m) => (0, m as u8),
            Status::Again => (1, 0),
            Status::Deadlock => (2, 0),
            Status::Unlocked => (3, 0),
            Status::Canceled => (4, 0),
        }
    }

    /// From the wire code.
    pub fn from_code(c: u8, m: u8) -> Option<Status> {
        Some(match c {
            0 => Status::Granted(Mode::from_u8(m)?),
            1 => Status::Again,
            2 => Status::Deadlock,
            3 => Status::Unlocked,
            4 => Status::Canceled,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded() {
        assert!(ResName::new(b"").is_none());
        assert!(ResName::new(&[b'a'; 65]).is_none());
        let n = ResName::new(&[b'a'; 64]).unwrap();
        assert_eq!(n.as_bytes().len(), 64);
        assert_eq!(ResName::new(b"x\x01").unwrap().to_string(), "x\\x01");
    }

    #[test]
    fn hash_spreads_names_and_sees_length() {
        // Same padded bytes, different lengths: different names and hashes.
        let (a, a0) = (ResName::new(b"a").unwrap(), ResName::new(b"a\0").unwrap());
        assert_ne!(a, a0);
        assert_ne!(a.hash64(), a0.hash64());
        // GFS2-like glock names over 16 shards and 3 directory nodes: every
        // bucket gets its share within a wide margin.
        let mut shards = [0u32; 16];
        let mut dirs = [0u32; 3];
        for i in 0..16_000u32 {
            let n = ResName::new(format!("       2{i:16x}").as_bytes()).unwrap();
            shards[((n.hash64() >> 32) & 15) as usize] += 1;
            dirs[(n.hash64() % 3) as usize] += 1;
        }
        assert!(
            shards.iter().all(|&c| (700..1300).contains(&c)),
            "{shards:?}"
        );
        assert!(
            dirs.iter().all(|&c| (4_500..6_200).contains(&c)),
            "{dirs:?}"
        );
    }

    #[test]
    fn status_codes_round_trip() {
        for s in [
            Status::Again,
            Status::Deadlock,
            Status::Unlocked,
            Status::Canceled,
        ]
        .into_iter()
        .chain(Mode::ALL.map(Status::Granted))
        {
            let (c, m) = s.code();
            assert_eq!(Status::from_code(c, m), Some(s));
        }
        assert_eq!(Status::from_code(9, 0), None);
        assert_eq!(Status::from_code(0, 9), None);
    }
}
