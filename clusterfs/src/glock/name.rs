//! Glock names: a type and a number, and the DLM resource name built from
//! them exactly as lock_dlm's `gdlm_lock` builds it, so that our nodes and
//! the kernel's agree on every lock.

use std::fmt;

/// Glock types (the kernel's `LM_TYPE_*`, `gfs2_ondisk.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum GlockType {
    /// Locks with no block behind them; numbers are the `NONDISK_*` consts.
    Nondisk = 1,
    /// An inode, numbered by its dinode block.
    Inode = 2,
    /// A resource group, numbered by its header block.
    Rgrp = 3,
    /// An inode's open state (unlinked-while-open), by dinode block.
    Iopen = 5,
    /// A quota, by id.
    Quota = 8,
    /// A journal, by jid.
    Journal = 9,
}

impl GlockType {
    /// The type numbered `n` (`LM_TYPE_*`), if it is one.
    pub fn from_number(n: u64) -> Option<GlockType> {
        Some(match n {
            1 => GlockType::Nondisk,
            2 => GlockType::Inode,
            3 => GlockType::Rgrp,
            5 => GlockType::Iopen,
            8 => GlockType::Quota,
            9 => GlockType::Journal,
            _ => return None,
        })
    }
}

/// Nondisk glock numbers (`GFS2_*_LOCK`).
pub mod nondisk {
    /// The mount lock.
    pub const MOUNT: u64 = 0;
    /// The live lock: SH on every mounted node.
    pub const LIVE: u64 = 1;
    /// The freeze (transaction) lock.
    pub const FREEZE: u64 = 2;
    /// The rename lock: EX for cross-directory renames.
    pub const RENAME: u64 = 3;
    /// lock_dlm's control lock (carries the recovery LVB).
    pub const CONTROL: u64 = 4;
    /// lock_dlm's mounted lock (first-mounter detection).
    pub const MOUNTED: u64 = 5;
}

/// Length of a DLM resource name for a glock (`GDLM_STRNAME_BYTES - 1`).
pub const DLM_NAME_LEN: usize = 24;

/// A glock's name: its type and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlockName {
    /// The type.
    pub kind: GlockType,
    /// The number within the type (block, jid or nondisk number).
    pub number: u64,
}

impl GlockName {
    /// A name from its parts.
    pub const fn new(kind: GlockType, number: u64) -> Self {
        GlockName { kind, number }
    }

    /// The inode glock of the dinode at `block`.
    pub const fn inode(block: u64) -> Self {
        Self::new(GlockType::Inode, block)
    }

    /// The rgrp glock of the resource group whose header is at `block`.
    pub const fn rgrp(block: u64) -> Self {
        Self::new(GlockType::Rgrp, block)
    }

    /// The iopen glock of the dinode at `block`.
    pub const fn iopen(block: u64) -> Self {
        Self::new(GlockType::Iopen, block)
    }

    /// The journal glock of journal `jid`.
    pub const fn journal(jid: u32) -> Self {
        Self::new(GlockType::Journal, jid as u64)
    }

    /// A nondisk glock (see [`nondisk`]).
    pub const fn nondisk(number: u64) -> Self {
        Self::new(GlockType::Nondisk, number)
    }

    /// The DLM resource name: `"%8x%16x"` of (type, number), lower-case
    /// hex, right-aligned and space-padded, no terminating NUL (lock_dlm
    /// passes `GDLM_STRNAME_BYTES - 1` = 24 bytes).
    pub fn dlm_name(&self) -> [u8; DLM_NAME_LEN] {
        let mut name = [b' '; DLM_NAME_LEN];
        write_hex_right(&mut name[..8], self.kind as u64);
        write_hex_right(&mut name[8..], self.number);
        name
    }
}

impl GlockName {
    /// The glock a DLM resource name ([`GlockName::dlm_name`]) names, if
    /// it is one of a known type.
    pub fn from_dlm_name(name: &[u8]) -> Option<Self> {
        if name.len() != DLM_NAME_LEN {
            return None;
        }
        let kind = GlockType::from_number(read_hex_right(&name[..8])?)?;
        Some(Self::new(kind, read_hex_right(&name[8..])?))
    }

    /// The name as one number: the type above the block number (a DLM
    /// lock's callback argument).
    pub fn to_u128(self) -> u128 {
        (self.kind as u128) << 64 | self.number as u128
    }

    /// The name [`GlockName::to_u128`] made `n` from.
    pub fn from_u128(n: u128) -> Option<Self> {
        let kind = GlockType::from_number((n >> 64) as u64)?;
        Some(Self::new(kind, n as u64))
    }
}

/// Reads a field [`write_hex_right`] wrote: spaces, then lower-case hex.
fn read_hex_right(field: &[u8]) -> Option<u64> {
    let digits = field.trim_ascii_start();
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |v, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(v << 4 | u64::from(d))
    })
}

/// Writes `value` in lower-case hex, right-aligned in `field`, as the
/// kernel's `gfs2_reverse_hex` (zero is written as "0").
fn write_hex_right(field: &mut [u8], mut value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = field.len() - 1;
    field[at] = b'0';
    while value != 0 {
        field[at] = HEX[(value & 0xf) as usize];
        value >>= 4;
        at = at.wrapping_sub(1);
    }
}

impl From<crate::lock::Glock> for GlockName {
    fn from(lock: crate::lock::Glock) -> Self {
        match lock {
            crate::lock::Glock::Inode(block) => Self::inode(block),
            crate::lock::Glock::Rgrp(block) => Self::rgrp(block),
            crate::lock::Glock::Journal(jid) => Self::journal(jid),
        }
    }
}

/// The kernel's glock dump notation, `type/number` in hex (`2/1a3f`).
impl fmt::Display for GlockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:x}", self.kind as u32, self.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: GlockName) -> String {
        String::from_utf8(n.dlm_name().to_vec()).unwrap()
    }

    #[test]
    fn a_dlm_name_reads_back_as_its_glock() {
        for g in [
            GlockName::inode(0x1a3f),
            GlockName::rgrp(17),
            GlockName::iopen(u64::MAX),
            GlockName::journal(0),
            GlockName::nondisk(nondisk::LIVE),
        ] {
            assert_eq!(GlockName::from_dlm_name(&g.dlm_name()), Some(g));
        }
        let name = |kind: &str, number: &str| format!("{kind:>8}{number:>16}").into_bytes();
        assert_eq!(
            GlockName::from_dlm_name(&name("2", "1")),
            Some(GlockName::inode(1))
        );
        for bad in [
            name("4", "1"),   // no such type
            name("2", "1 1"), // a space among the digits
            name("2", "1A"),  // upper case
            name("2", ""),    // no number
            b"2 1".to_vec(),  // too short
        ] {
            assert_eq!(
                GlockName::from_dlm_name(&bad),
                None,
                "{:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn a_glock_name_as_one_number_reads_back() {
        for g in [
            GlockName::inode(0x1a3f),
            GlockName::iopen(u64::MAX),
            GlockName::journal(0),
            GlockName::nondisk(nondisk::MOUNTED),
        ] {
            assert_eq!(GlockName::from_u128(g.to_u128()), Some(g));
        }
        // Type and number stay apart: no type is read from a number.
        assert_eq!(GlockName::from_u128(u64::MAX as u128), None);
        assert_eq!(GlockName::from_u128(4 << 64 | 1), None);
    }

    #[test]
    fn type_numbers_are_the_kernels() {
        let types = [
            (GlockType::Nondisk, 1),
            (GlockType::Inode, 2),
            (GlockType::Rgrp, 3),
            (GlockType::Iopen, 5),
            (GlockType::Quota, 8),
            (GlockType::Journal, 9),
        ];
        for (t, n) in types {
            assert_eq!(t as u32, n);
        }
    }

    /// Names as `dlm_tool lockdebug` shows them for a kernel gfs2 mount.
    #[test]
    fn dlm_names_match_lock_dlm() {
        let cases = [
            (
                GlockName::nondisk(nondisk::MOUNT),
                "       1               0",
            ),
            (
                GlockName::nondisk(nondisk::LIVE),
                "       1               1",
            ),
            (
                GlockName::nondisk(nondisk::FREEZE),
                "       1               2",
            ),
            (
                GlockName::nondisk(nondisk::RENAME),
                "       1               3",
            ),
            (
                GlockName::nondisk(nondisk::CONTROL),
                "       1               4",
            ),
            (
                GlockName::nondisk(nondisk::MOUNTED),
                "       1               5",
            ),
            (GlockName::inode(0x8103), "       2            8103"),
            (GlockName::rgrp(0x11), "       3              11"),
            (GlockName::iopen(0x3c2ab), "       5           3c2ab"),
            (
                GlockName::new(GlockType::Quota, 0),
                "       8               0",
            ),
            (GlockName::journal(1), "       9               1"),
            (GlockName::inode(u64::MAX), "       2ffffffffffffffff"),
            (
                GlockName::inode(0xdead_beef_0000_cafe),
                "       2deadbeef0000cafe",
            ),
        ];
        for (n, want) in cases {
            assert_eq!(name(n), want, "{n}");
            assert_eq!(name(n).len(), DLM_NAME_LEN);
        }
    }

    #[test]
    fn display_is_the_glock_dump_notation() {
        assert_eq!(GlockName::inode(0x1a3f).to_string(), "2/1a3f");
        assert_eq!(GlockName::journal(0).to_string(), "9/0");
    }

    #[test]
    fn lock_points_map_onto_names() {
        use crate::lock::Glock;
        assert_eq!(GlockName::from(Glock::Inode(7)), GlockName::inode(7));
        assert_eq!(GlockName::from(Glock::Rgrp(17)), GlockName::rgrp(17));
        assert_eq!(GlockName::from(Glock::Journal(2)), GlockName::journal(2));
    }
}
