//! Unstuffed extended attribute values: GFS2 ED blocks (type ED, format
//! 1700), each holding `bsize - 24` bytes of the value after its meta
//! header, the last one zero-padded. They are metadata: written through
//! the journal like the EA block that points at them, counted in the
//! inode's `di_blocks`.

use crate::ondisk::{BlockState, MetaHeader, MetaType};
use crate::volume::{FsError, Result, Volume};

impl Volume {
    /// Reads a `len`-byte value from the ED blocks `ptrs` (named by the EA
    /// block `ea`).
    pub(crate) fn ed_read(&mut self, ea: u64, ptrs: &[u64], len: usize) -> Result<Vec<u8>> {
        let jb = self.ed_capacity();
        if ptrs.len() != len.div_ceil(jb) {
            return Err(FsError::Corrupt(format!(
                "EA block {ea}: {} data pointers for a {len}-byte value",
                ptrs.len()
            )));
        }
        let mut out = Vec::with_capacity(len);
        for &p in ptrs {
            let b = self.meta(p)?;
            MetaHeader::decode_as(b, MetaType::Ed)
                .map_err(|e| FsError::Corrupt(format!("EA data block {p} (of {ea}): {e}")))?;
            let n = jb.min(len - out.len());
            out.extend_from_slice(&b[MetaHeader::SIZE..MetaHeader::SIZE + n]);
        }
        Ok(out)
    }

    /// Writes `value` into fresh ED blocks allocated near `ino`, adding
    /// them to its `di_blocks`; returns their addresses.
    pub(crate) fn ed_write(&mut self, ino: u64, value: &[u8]) -> Result<Vec<u64>> {
        let jb = self.ed_capacity();
        let mut ptrs = Vec::with_capacity(value.len().div_ceil(jb));
        let mut goal = ino;
        for chunk in value.chunks(jb) {
            let blk = self.alloc(goal, BlockState::Used)?;
            let b = self.meta_new(blk);
            MetaHeader::new(MetaType::Ed).encode(b);
            b[MetaHeader::SIZE..MetaHeader::SIZE + chunk.len()].copy_from_slice(chunk);
            ptrs.push(blk);
            goal = blk;
        }
        let mut di = self.dinode(ino)?;
        di.di_blocks += ptrs.len() as u64;
        self.put_dinode(&di)?;
        Ok(ptrs)
    }

    /// Frees the ED blocks `ptrs` of inode `ino`.
    pub(crate) fn ed_free(&mut self, ino: u64, ptrs: &[u64]) -> Result<()> {
        for &p in ptrs {
            self.free(p)?;
        }
        let mut di = self.dinode(ino)?;
        di.di_blocks = di.di_blocks.saturating_sub(ptrs.len() as u64);
        self.put_dinode(&di)
    }
}
