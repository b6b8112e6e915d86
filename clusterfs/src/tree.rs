//! File contents: the metadata tree of a dinode (stuffed, then indirect
//! blocks of growing height), block mapping and allocation, reads, writes,
//! truncation and deallocation.
//!
//! Regular files keep plain data blocks; directories keep their hash table
//! in journaled-data blocks (`GFS2_METATYPE_JD` header, `bsize - 24` bytes of
//! payload each), which go through the metadata cache.

use crate::ondisk::{
    be64, dif, put64, BlockState, Dinode, EaHeader, MetaHeader, MetaType, GFS2_MAX_META_HEIGHT,
};
use crate::volume::{FsError, Result, Volume};

/// Data blocks freed per transaction while truncating.
const TRUNCATE_CHUNK: u64 = 16 * 1024;

fn corrupt(addr: u64, what: &str) -> FsError {
    FsError::Corrupt(format!("inode {addr}: {what}"))
}

impl Volume {
    /// Pointer slots per tree level: the dinode's, then indirect blocks'.
    fn slots(&self, level: u16) -> (usize, u64) {
        if level == 1 {
            (Dinode::SIZE, self.geo.diptrs)
        } else {
            (MetaHeader::SIZE, self.geo.inptrs)
        }
    }

    /// Pointer indices from the dinode down for `lbn` in a tree of height `h`.
    ///
    /// In u128: a damaged dinode may claim a height (up to
    /// GFS2_MAX_META_HEIGHT) whose top span exceeds u64 (509^9 with 4 KiB
    /// blocks); the path then starts with zeros, never a division by a
    /// wrapped zero.
    fn path(&self, h: u16, lbn: u64) -> Vec<usize> {
        let inptrs = u128::from(self.geo.inptrs.max(1));
        let mut idx = Vec::with_capacity(h as usize);
        let mut span = inptrs.pow(u32::from(h.max(1) - 1));
        let mut rest = u128::from(lbn);
        for _ in 0..h {
            idx.push((rest / span) as usize);
            rest %= span;
            span = (span / inptrs).max(1);
        }
        idx
    }

    fn check_indirect(&mut self, addr: u64, blk: u64) -> Result<()> {
        let b = self.meta(blk)?;
        match MetaHeader::decode_as(b, MetaType::In) {
            Ok(_) => Ok(()),
            Err(e) => Err(corrupt(addr, &format!("indirect block {blk}: {e}"))),
        }
    }

    /// The device block holding file block `lbn`, if allocated.
    pub fn bmap(&mut self, di: &Dinode, lbn: u64) -> Result<Option<u64>> {
        let h = di.di_height;
        if h == 0 || lbn >= self.geo.height_capacity(h) {
            return Ok(None);
        }
        let mut blk = di.di_num.no_addr;
        for (k, idx) in self.path(h, lbn).into_iter().enumerate() {
            let (off, _) = self.slots(k as u16 + 1);
            let p = be64(self.meta(blk)?, off + 8 * idx);
            if p == 0 {
                return Ok(None);
            }
            if k + 1 == h as usize {
                return Ok(Some(p));
            }
            self.check_indirect(di.di_num.no_addr, p)?;
            blk = p;
        }
        unreachable!("path has h entries")
    }

    /// Every data block of a file without holes, in order (journals).
    pub fn file_block_map(&mut self, addr: u64) -> Result<Vec<u64>> {
        let di = self.dinode(addr)?;
        let n = di.di_size.div_ceil(self.geo.bsize as u64);
        if n > self.device().size() / self.geo.bsize as u64 {
            return Err(corrupt(addr, "size larger than the device"));
        }
        let mut out = Vec::with_capacity(n as usize);
        for lbn in 0..n {
            out.push(
                self.bmap(&di, lbn)?
                    .ok_or_else(|| corrupt(addr, "hole in a system file"))?,
            );
        }
        Ok(out)
    }

    fn is_dir_data(di: &Dinode) -> bool {
        di.is_dir()
    }

    /// Allocates a data block for a file: plain for files, JD for dirs.
    fn alloc_data(&mut self, di: &Dinode) -> Result<u64> {
        let goal = di.di_goal_data.max(di.di_num.no_addr);
        let blk = self.alloc(goal, BlockState::Used)?;
        if Self::is_dir_data(di) {
            MetaHeader::new(MetaType::Jd).encode(self.meta_new(blk));
        }
        Ok(blk)
    }

    fn alloc_indirect(&mut self, di: &Dinode) -> Result<u64> {
        let goal = di.di_goal_data.max(di.di_num.no_addr);
        let blk = self.alloc(goal, BlockState::Used)?;
        MetaHeader::new(MetaType::In).encode(self.meta_new(blk));
        Ok(blk)
    }

    /// Moves stuffed contents into a first data block (height 0 → 1).
    pub fn unstuff(&mut self, di: &mut Dinode) -> Result<()> {
        assert_eq!(di.di_height, 0);
        let addr = di.di_num.no_addr;
        let len = (di.di_size as usize).min(self.geo.stuffed_max() as usize);
        let data = self.meta(addr)?[Dinode::SIZE..Dinode::SIZE + len].to_vec();
        let has_data = len > 0 || Self::is_dir_data(di);
        let payload = &mut self.meta_mut(addr)?[Dinode::SIZE..];
        payload.fill(0);
        di.di_height = 1;
        if !has_data {
            return Ok(());
        }
        let blk = self.alloc_data(di)?;
        if Self::is_dir_data(di) {
            let b = self.meta_mut(blk)?;
            b[MetaHeader::SIZE..MetaHeader::SIZE + len].copy_from_slice(&data);
        } else {
            let mut b = vec![0u8; self.bsize()];
            b[..len].copy_from_slice(&data);
            self.write_data_block(blk, &b)?;
        }
        put64(self.meta_mut(addr)?, Dinode::SIZE, blk);
        di.di_blocks += 1;
        di.di_goal_data = blk;
        Ok(())
    }

    /// Adds a level on top of the tree.
    fn grow_height(&mut self, di: &mut Dinode) -> Result<()> {
        if di.di_height >= GFS2_MAX_META_HEIGHT {
            return Err(FsError::Invalid("file too large"));
        }
        let addr = di.di_num.no_addr;
        let ptrs = self.meta(addr)?[Dinode::SIZE..].to_vec();
        if ptrs.iter().any(|&b| b != 0) {
            let top = self.alloc_indirect(di)?;
            let n = self.geo.diptrs as usize * 8;
            self.meta_mut(top)?[MetaHeader::SIZE..MetaHeader::SIZE + n].copy_from_slice(&ptrs[..n]);
            let p = &mut self.meta_mut(addr)?[Dinode::SIZE..];
            p.fill(0);
            put64(p, 0, top);
            di.di_blocks += 1;
        }
        di.di_height += 1;
        Ok(())
    }

    /// The block for `lbn`, allocating the path as needed. The flag is true
    /// when the data block is new (its contents are undefined).
    pub fn bmap_alloc(&mut self, di: &mut Dinode, lbn: u64) -> Result<(u64, bool)> {
        if di.di_height == 0 {
            self.unstuff(di)?;
        }
        while lbn >= self.geo.height_capacity(di.di_height) {
            self.grow_height(di)?;
        }
        let h = di.di_height;
        let mut blk = di.di_num.no_addr;
        for (k, idx) in self.path(h, lbn).into_iter().enumerate() {
            let (off, _) = self.slots(k as u16 + 1);
            let at = off + 8 * idx;
            let p = be64(self.meta(blk)?, at);
            let last = k + 1 == h as usize;
            if p != 0 {
                if last {
                    return Ok((p, false));
                }
                self.check_indirect(di.di_num.no_addr, p)?;
                blk = p;
                continue;
            }
            let new = if last {
                self.alloc_data(di)?
            } else {
                self.alloc_indirect(di)?
            };
            put64(self.meta_mut(blk)?, at, new);
            di.di_blocks += 1;
            if last {
                di.di_goal_data = new;
                return Ok((new, true));
            }
            blk = new;
        }
        unreachable!("path has h entries")
    }

    // -----------------------------------------------------------------
    // Regular file contents.

    /// Reads up to `len` bytes at `off` (short at end of file).
    pub fn read_file(&mut self, addr: u64, off: u64, len: usize) -> Result<Vec<u8>> {
        let di = self.dinode(addr)?;
        if off >= di.di_size {
            return Ok(Vec::new());
        }
        let end = (off + len as u64).min(di.di_size);
        if end - off > self.device().size() {
            return Err(corrupt(addr, "size larger than the device"));
        }
        if di.di_height == 0 {
            if end > self.geo.stuffed_max() {
                return Err(corrupt(addr, "stuffed size too large"));
            }
            let b = self.meta(addr)?;
            return Ok(b[Dinode::SIZE + off as usize..Dinode::SIZE + end as usize].to_vec());
        }
        let bs = self.bsize() as u64;
        // Holes stay zero; each run of blocks that are consecutive on disk
        // is read with one device read (a 128 KiB FUSE read: one pread,
        // not 32).
        let mut out = vec![0u8; (end - off) as usize];
        let (first, last) = (off / bs, (end - 1) / bs);
        let mut buf = Vec::new();
        let mut lbn = first;
        while lbn <= last {
            let Some(blk) = self.bmap(&di, lbn)? else {
                lbn += 1;
                continue;
            };
            let mut run = 1;
            while lbn + run <= last && self.bmap(&di, lbn + run)? == Some(blk + run) {
                run += 1;
            }
            buf.resize((run * bs) as usize, 0);
            self.read_data_blocks(blk, &mut buf)?;
            // The part of this run inside [off, end).
            let run_start = lbn * bs;
            let from = off.max(run_start);
            let to = end.min(run_start + run * bs);
            out[(from - off) as usize..(to - off) as usize]
                .copy_from_slice(&buf[(from - run_start) as usize..(to - run_start) as usize]);
            lbn += run;
        }
        Ok(out)
    }

    /// Writes `data` at `off`, allocating blocks; grows the size. The
    /// caller stamps times and writes the dinode back via the returned value.
    pub fn write_file(&mut self, di: &mut Dinode, off: u64, data: &[u8]) -> Result<()> {
        let end = off + data.len() as u64;
        let addr = di.di_num.no_addr;
        if di.di_height == 0 && end <= self.geo.stuffed_max() {
            let b = self.meta_mut(addr)?;
            b[Dinode::SIZE + off as usize..Dinode::SIZE + end as usize].copy_from_slice(data);
            di.di_size = di.di_size.max(end);
            return Ok(());
        }
        let bs = self.bsize() as u64;
        let mut pos = off;
        let mut buf = Vec::new();
        // Whole blocks that lie one after the other on the device go out
        // in one write, straight from `data`: (first block, offset in
        // `data`, blocks).
        let mut run: Option<(u64, usize, u64)> = None;
        while pos < end {
            let lbn = pos / bs;
            let o = (pos % bs) as usize;
            let n = ((bs - o as u64).min(end - pos)) as usize;
            let at = (pos - off) as usize;
            let (blk, fresh) = self.bmap_alloc(di, lbn)?;
            if n as u64 == bs {
                run = match run {
                    Some((first, from, len)) if first + len == blk => Some((first, from, len + 1)),
                    other => {
                        self.write_run(data, other)?;
                        Some((blk, at, 1))
                    }
                };
            } else {
                self.write_run(data, run.take())?;
                buf.resize(bs as usize, 0);
                if fresh {
                    buf.fill(0);
                } else {
                    self.read_data_block(blk, &mut buf)?;
                }
                buf[o..o + n].copy_from_slice(&data[at..at + n]);
                self.write_data_block(blk, &buf)?;
            }
            pos += n as u64;
        }
        self.write_run(data, run)?;
        di.di_size = di.di_size.max(end);
        Ok(())
    }

    /// Writes a run of whole blocks gathered by [`Volume::write_file`].
    fn write_run(&mut self, data: &[u8], run: Option<(u64, usize, u64)>) -> Result<()> {
        let Some((first, from, len)) = run else {
            return Ok(());
        };
        let bytes = (len * self.bsize() as u64) as usize;
        self.write_data_blocks(first, &data[from..from + bytes])
    }

    /// Allocates zeroed blocks for `[off, off+len)` without changing data
    /// that is already there; grows the size to cover the range unless
    /// `keep_size` (`FALLOC_FL_KEEP_SIZE`: the blocks may lie past the end).
    pub fn allocate_range(
        &mut self,
        di: &mut Dinode,
        off: u64,
        len: u64,
        keep_size: bool,
    ) -> Result<()> {
        self.fill_range(di, off, off + len, keep_size, false)
    }

    /// Allocates the blocks of `[off, end)` (unstuffing first), zeroing
    /// the new ones and, with `zero_old`, the range's part of the ones
    /// already there; grows the size to `end` unless `keep_size`. Commits
    /// between chunks on large ranges.
    pub(crate) fn fill_range(
        &mut self,
        di: &mut Dinode,
        off: u64,
        end: u64,
        keep_size: bool,
        zero_old: bool,
    ) -> Result<()> {
        let bs = self.bsize() as u64;
        if di.di_height == 0 {
            self.unstuff(di)?;
        }
        let zero = vec![0u8; bs as usize];
        for lbn in off / bs..end.div_ceil(bs) {
            let (blk, fresh) = self.bmap_alloc(di, lbn)?;
            let lo = off.max(lbn * bs) - lbn * bs;
            let hi = end.min((lbn + 1) * bs) - lbn * bs;
            if fresh || (zero_old && lo == 0 && hi == bs) {
                self.write_data_block(blk, &zero)?;
            } else if zero_old {
                self.zero_in_block(di, lbn, lo as usize, hi as usize)?;
            }
            if self.dirty_blocks() > 256 {
                self.put_dinode(di)?;
                self.maybe_commit()?;
            }
        }
        if !keep_size {
            di.di_size = di.di_size.max(end);
        }
        Ok(())
    }

    /// Sets the size to `size`, freeing blocks past it and zeroing the tail
    /// of the last block. Commits between chunks on large files.
    pub fn truncate(&mut self, di: &mut Dinode, size: u64) -> Result<()> {
        let addr = di.di_num.no_addr;
        if size >= di.di_size {
            if di.di_height == 0 && size > self.geo.stuffed_max() {
                self.unstuff(di)?;
            }
            di.di_size = size;
            return Ok(());
        }
        if di.di_height == 0 {
            let b = self.meta_mut(addr)?;
            b[Dinode::SIZE + size as usize..Dinode::SIZE + di.di_size as usize].fill(0);
            di.di_size = size;
            return Ok(());
        }
        let bs = self.bsize() as u64;
        let keep = size.div_ceil(bs);
        let top = di.di_size.div_ceil(bs).max(keep);
        let mut from = top;
        while from > keep {
            from = from.saturating_sub(TRUNCATE_CHUNK).max(keep);
            self.free_from(di, from)?;
            self.put_dinode(di)?;
            self.maybe_commit()?;
        }
        // Blocks preallocated past the old size (FALLOC_FL_KEEP_SIZE).
        self.free_from(di, keep)?;
        if !size.is_multiple_of(bs) {
            if let Some(blk) = self.bmap(di, size / bs)? {
                let mut buf = vec![0u8; bs as usize];
                self.read_data_block(blk, &mut buf)?;
                buf[(size % bs) as usize..].fill(0);
                self.write_data_block(blk, &buf)?;
            }
        }
        if size == 0 {
            // Every block is gone: back to a stuffed, empty dinode.
            self.meta_mut(addr)?[Dinode::SIZE..].fill(0);
            di.di_height = 0;
            di.di_goal_data = addr;
            di.di_goal_meta = addr;
        }
        di.di_size = size;
        Ok(())
    }

    /// Frees every data block at or past `from` and the indirect blocks left
    /// empty.
    fn free_from(&mut self, di: &mut Dinode, from: u64) -> Result<()> {
        let h = di.di_height;
        let addr = di.di_num.no_addr;
        let freed = self.free_level(addr, addr, 1, h, 0, from..u64::MAX)?;
        di.di_blocks -= freed.1;
        Ok(())
    }

    /// Frees the data blocks of file blocks `range` (and indirect blocks
    /// left empty), keeping the height: a hole.
    pub(crate) fn free_range(
        &mut self,
        di: &mut Dinode,
        range: std::ops::Range<u64>,
    ) -> Result<()> {
        let h = di.di_height;
        if h == 0 {
            return Ok(());
        }
        let addr = di.di_num.no_addr;
        let freed = self.free_level(addr, addr, 1, h, 0, range)?;
        di.di_blocks -= freed.1;
        Ok(())
    }

    /// Frees file blocks in `range` below `blk`; returns (subtree now
    /// empty, blocks freed).
    fn free_level(
        &mut self,
        ino: u64,
        blk: u64,
        level: u16,
        h: u16,
        base: u64,
        range: std::ops::Range<u64>,
    ) -> Result<(bool, u64)> {
        let (off, nptrs) = self.slots(level);
        let span = self.geo.inptrs.pow(u32::from(h - level));
        let ptrs: Vec<u64> = {
            let b = self.meta(blk)?;
            (0..nptrs as usize).map(|i| be64(b, off + 8 * i)).collect()
        };
        let mut empty = true;
        let mut freed = 0;
        for (i, &p) in ptrs.iter().enumerate() {
            if p == 0 {
                continue;
            }
            let lo = base + i as u64 * span;
            if lo.saturating_add(span) <= range.start || lo >= range.end {
                empty = false;
                continue;
            }
            let gone = if level == h {
                true
            } else {
                self.check_indirect(ino, p)?;
                let (child_empty, n) = self.free_level(ino, p, level + 1, h, lo, range.clone())?;
                freed += n;
                child_empty
            };
            if gone {
                self.free(p)?;
                put64(self.meta_mut(blk)?, off + 8 * i, 0);
                freed += 1;
            } else {
                empty = false;
            }
        }
        Ok((empty, freed))
    }

    /// Frees an inode: its tree, directory leaves, xattr blocks and dinode.
    pub fn dealloc_inode(&mut self, addr: u64) -> Result<()> {
        let di = self.dinode(addr)?;
        if di.is_dir() && di.di_flags & dif::EXHASH != 0 {
            for leaf in self.dir_leaf_blocks(&di)? {
                self.free(leaf)?;
            }
        }
        if di.di_height > 0 {
            let h = di.di_height;
            self.free_level(addr, addr, 1, h, 0, 0..u64::MAX)?;
        }
        if di.di_eattr != 0 {
            self.free_xattr_blocks(&di)?;
        }
        self.free(addr)?;
        Ok(())
    }

    /// Frees the xattr block(s) of an inode and their data blocks.
    pub(crate) fn free_xattr_blocks(&mut self, di: &Dinode) -> Result<()> {
        let mut blocks = vec![di.di_eattr];
        if di.di_flags & dif::EA_INDIRECT != 0 {
            let b = self.meta(di.di_eattr)?.to_vec();
            let n = (self.bsize() - MetaHeader::SIZE) / 8;
            blocks.extend(
                (0..n)
                    .map(|i| be64(&b, MetaHeader::SIZE + 8 * i))
                    .filter(|&p| p != 0),
            );
        }
        for &ea in blocks
            .iter()
            .skip(usize::from(di.di_flags & dif::EA_INDIRECT != 0))
        {
            for ed in self.ea_data_pointers(ea)? {
                self.free(ed)?;
            }
        }
        for blk in blocks {
            self.free(blk)?;
        }
        Ok(())
    }

    /// The ED block pointers of every record in an EA block.
    pub(crate) fn ea_data_pointers(&mut self, ea: u64) -> Result<Vec<u64>> {
        let b = self.meta(ea)?.to_vec();
        MetaHeader::decode_as(&b, MetaType::Ea)?;
        let mut out = Vec::new();
        let mut off = MetaHeader::SIZE;
        while off < b.len() {
            let h = EaHeader::decode_at(&b, off)?;
            let name_end = off + EaHeader::SIZE + usize::from(h.ea_name_len);
            let ptr_start = (name_end + 7) & !7;
            for i in 0..usize::from(h.ea_num_ptrs) {
                let p = be64(&b, ptr_start + 8 * i);
                if p != 0 {
                    out.push(p);
                }
            }
            if h.ea_flags & crate::ondisk::GFS2_EAFLAG_LAST != 0 {
                break;
            }
            off += h.ea_rec_len as usize;
        }
        Ok(out)
    }

    // -----------------------------------------------------------------
    // Directory data (the hash table), in JD blocks once unstuffed.

    /// Reads `len` bytes of directory data at `off`.
    pub fn dir_data_read(&mut self, di: &Dinode, off: u64, len: usize) -> Result<Vec<u8>> {
        let addr = di.di_num.no_addr;
        if di.di_height == 0 {
            let end = off as usize + len;
            if end > self.geo.stuffed_max() as usize {
                return Err(corrupt(addr, "stuffed directory data out of range"));
            }
            return Ok(self.meta(addr)?[Dinode::SIZE + off as usize..Dinode::SIZE + end].to_vec());
        }
        let jb = self.geo.jbsize;
        let mut out = Vec::with_capacity(len);
        let mut pos = off;
        let end = off + len as u64;
        while pos < end {
            let lbn = pos / jb;
            let o = (pos % jb) as usize;
            let n = ((jb - o as u64).min(end - pos)) as usize;
            match self.bmap(di, lbn)? {
                Some(blk) => {
                    let b = self.meta(blk)?;
                    if MetaHeader::decode_as(b, MetaType::Jd).is_err() {
                        return Err(corrupt(addr, "hash table block without JD header"));
                    }
                    out.extend_from_slice(&b[MetaHeader::SIZE + o..MetaHeader::SIZE + o + n]);
                }
                None => return Err(corrupt(addr, "hole in directory hash table")),
            }
            pos += n as u64;
        }
        Ok(out)
    }

    /// Writes directory data at `off`, unstuffing and growing as needed.
    pub fn dir_data_write(&mut self, di: &mut Dinode, off: u64, data: &[u8]) -> Result<()> {
        let addr = di.di_num.no_addr;
        let end = off + data.len() as u64;
        if di.di_height == 0 && end <= self.geo.stuffed_max() {
            self.meta_mut(addr)?[Dinode::SIZE + off as usize..Dinode::SIZE + end as usize]
                .copy_from_slice(data);
            di.di_size = di.di_size.max(end);
            return Ok(());
        }
        let jb = self.geo.jbsize;
        let mut pos = off;
        while pos < end {
            let lbn = pos / jb;
            let o = (pos % jb) as usize;
            let n = ((jb - o as u64).min(end - pos)) as usize;
            let (blk, _) = self.bmap_alloc(di, lbn)?;
            let src = &data[(pos - off) as usize..(pos - off) as usize + n];
            self.meta_mut(blk)?[MetaHeader::SIZE + o..MetaHeader::SIZE + o + n]
                .copy_from_slice(src);
            pos += n as u64;
        }
        di.di_size = di.di_size.max(end);
        Ok(())
    }
}
