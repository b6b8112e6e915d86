//! fallocate(2) modes on the metadata tree: preallocation (with or
//! without `FALLOC_FL_KEEP_SIZE`, in [`crate::tree`]), hole punching
//! (`FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE`: whole blocks freed, the
//! partial ones at the edges zeroed) and `FALLOC_FL_ZERO_RANGE` (the range
//! allocated and zeroed).

use crate::ondisk::Dinode;
use crate::volume::{Result, Volume};

/// `FALLOC_FL_KEEP_SIZE`.
pub const KEEP_SIZE: i32 = 0x01;
/// `FALLOC_FL_PUNCH_HOLE`.
pub const PUNCH_HOLE: i32 = 0x02;
/// `FALLOC_FL_ZERO_RANGE`.
pub const ZERO_RANGE: i32 = 0x10;

/// Data blocks freed per transaction while punching.
const PUNCH_CHUNK: u64 = 16 * 1024;

/// What a fallocate mode asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Falloc {
    /// Mode 0 or KEEP_SIZE: allocate.
    Allocate {
        /// Leave the size alone.
        keep_size: bool,
    },
    /// PUNCH_HOLE|KEEP_SIZE.
    PunchHole,
    /// ZERO_RANGE, maybe with KEEP_SIZE.
    ZeroRange {
        /// Leave the size alone.
        keep_size: bool,
    },
}

impl Falloc {
    /// Decodes a mode; `None` for the unsupported ones (EOPNOTSUPP):
    /// COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, PUNCH_HOLE without
    /// KEEP_SIZE, and combinations.
    pub fn from_mode(mode: i32) -> Option<Self> {
        let keep_size = mode & KEEP_SIZE != 0;
        match mode & !KEEP_SIZE {
            0 => Some(Falloc::Allocate { keep_size }),
            PUNCH_HOLE if keep_size => Some(Falloc::PunchHole),
            ZERO_RANGE => Some(Falloc::ZeroRange { keep_size }),
            _ => None,
        }
    }
}

impl Volume {
    /// Zeroes bytes `[lo, hi)` of file block `lbn` if it is allocated.
    pub(crate) fn zero_in_block(
        &mut self,
        di: &Dinode,
        lbn: u64,
        lo: usize,
        hi: usize,
    ) -> Result<()> {
        if lo >= hi {
            return Ok(());
        }
        if let Some(blk) = self.bmap(di, lbn)? {
            let mut buf = vec![0u8; self.bsize()];
            self.read_data_block(blk, &mut buf)?;
            buf[lo..hi].fill(0);
            self.write_data_block(blk, &buf)?;
        }
        Ok(())
    }

    /// Zeroes stuffed bytes `[off, end)` (clamped to the stuffed area).
    fn zero_stuffed(&mut self, di: &Dinode, off: u64, end: u64) -> Result<()> {
        let max = self.geo.stuffed_max();
        let (lo, hi) = (off.min(max) as usize, end.min(max) as usize);
        if lo < hi {
            let base = Dinode::SIZE;
            self.meta_mut(di.di_num.no_addr)?[base + lo..base + hi].fill(0);
        }
        Ok(())
    }

    /// Punches a hole over `[off, off+len)`: blocks wholly inside are
    /// freed, the partial ones zeroed; the size does not change.
    pub fn punch_hole(&mut self, di: &mut Dinode, off: u64, len: u64) -> Result<()> {
        let end = off.saturating_add(len);
        if di.di_height == 0 {
            return self.zero_stuffed(di, off, end.min(di.di_size));
        }
        let bs = self.bsize() as u64;
        let (first, last) = (off / bs, end / bs);
        if first == last {
            return self.zero_in_block(di, first, (off % bs) as usize, (end % bs) as usize);
        }
        self.zero_in_block(
            di,
            first,
            (off % bs) as usize,
            if off.is_multiple_of(bs) {
                0
            } else {
                bs as usize
            },
        )?;
        self.zero_in_block(di, last, 0, (end % bs) as usize)?;
        let mut from = off.div_ceil(bs);
        while from < last {
            let to = (from + PUNCH_CHUNK).min(last);
            self.free_range(di, from..to)?;
            self.put_dinode(di)?;
            self.maybe_commit()?;
            from = to;
        }
        Ok(())
    }

    /// Zeroes `[off, off+len)`, allocating blocks for it (past the end
    /// too); grows the size unless `keep_size`.
    pub fn zero_range(
        &mut self,
        di: &mut Dinode,
        off: u64,
        len: u64,
        keep_size: bool,
    ) -> Result<()> {
        let end = off.saturating_add(len);
        if di.di_height == 0 && end <= self.geo.stuffed_max() {
            let hi = if keep_size { end.min(di.di_size) } else { end };
            self.zero_stuffed(di, off, hi)?;
            if !keep_size {
                di.di_size = di.di_size.max(end);
            }
            return Ok(());
        }
        self.fill_range(di, off, end, keep_size, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_decode_like_linux_accepts_them() {
        assert_eq!(
            Falloc::from_mode(0),
            Some(Falloc::Allocate { keep_size: false })
        );
        assert_eq!(
            Falloc::from_mode(KEEP_SIZE),
            Some(Falloc::Allocate { keep_size: true })
        );
        assert_eq!(
            Falloc::from_mode(PUNCH_HOLE | KEEP_SIZE),
            Some(Falloc::PunchHole)
        );
        assert_eq!(Falloc::from_mode(PUNCH_HOLE), None);
        assert_eq!(
            Falloc::from_mode(ZERO_RANGE | KEEP_SIZE),
            Some(Falloc::ZeroRange { keep_size: true })
        );
        for unsupported in [0x08, 0x20, 0x40, PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE] {
            assert_eq!(Falloc::from_mode(unsupported), None, "{unsupported:#x}");
        }
    }
}
