//! SBC-3 block commands: READ CAPACITY, READ, WRITE, VERIFY, WRITE AND
//! VERIFY, ORWRITE, PRE-FETCH, SYNCHRONIZE CACHE, WRITE SAME, UNMAP,
//! GET LBA STATUS, COMPARE AND WRITE.

use std::io;

use super::backing::Extent;
use super::cdb::{be16, be32, be64, op, Rw};
use super::lun::{CmdResult, Ctx, Disk, Lun};
use super::sense::{key, Asc, Sense};
use super::spc::{
    self, MAX_COMPARE_AND_WRITE_BLOCKS, MAX_TRANSFER_BYTES, MAX_UNMAP_DESCRIPTORS,
    MAX_WRITE_SAME_BLOCKS,
};

/// Map a read failure of the backing store to sense data.
fn read_error(e: io::Error) -> Sense {
    tracing::error!(error = %e, "backing store read failed");
    Sense::new(key::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR)
}

/// Map a write failure of the backing store to sense data.
fn write_error(e: io::Error) -> Sense {
    tracing::error!(error = %e, "backing store write failed");
    if e.raw_os_error() == Some(libc::ENOSPC) {
        // SPACE ALLOCATION FAILED WRITE PROTECT
        return Sense::new(key::DATA_PROTECT, Asc(0x27, 0x07));
    }
    Sense::new(key::MEDIUM_ERROR, Asc::WRITE_ERROR)
}

/// The field pointer of the TRANSFER LENGTH field by CDB size.
fn transfer_length_byte(cdb: &[u8]) -> u16 {
    match cdb.len() {
        6 => 4,
        10 => 7,
        12 => 6,
        _ => 10,
    }
}

impl Disk {
    /// LBA range check (SBC-3 4.5): LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub(crate) fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        let cap = self.capacity();
        if lba > cap || blocks > cap - lba {
            return Err(Sense::lba_out_of_range());
        }
        Ok(())
    }

    fn bytes(&self, blocks: u64) -> u64 {
        blocks << self.block_shift
    }

    fn offset(&self, lba: u64) -> u64 {
        lba << self.block_shift
    }

    fn check_transfer_len(&self, cdb: &[u8], blocks: u32) -> Result<(), Sense> {
        if self.bytes(u64::from(blocks)) > MAX_TRANSFER_BYTES {
            return Err(Sense::invalid_cdb(transfer_length_byte(cdb), None));
        }
        Ok(())
    }

    pub(crate) fn check_writable(&self) -> Result<(), Sense> {
        if self.opts.readonly || self.software_write_protect() {
            return Err(Sense::write_protected());
        }
        Ok(())
    }

    /// Whether writes must reach stable storage before completion (FUA,
    /// or the caching mode page's WCE cleared).
    fn write_through(&self, fua: bool) -> bool {
        fua || !self.wce.load(std::sync::atomic::Ordering::Acquire)
    }

    fn read_blocks(&self, lba: u64, blocks: u64) -> Result<Vec<u8>, Sense> {
        self.backing
            .read_vec(self.bytes(blocks) as usize, self.offset(lba))
            .map_err(read_error)
    }

    /// The checks every writing command makes, in SBC-3's order (write
    /// protection, LBA range, transfer length), then its Data-Out bytes.
    fn write_data<'a>(&self, c: &Ctx<'a>, lba: u64, blocks: u32) -> Result<&'a [u8], Sense> {
        self.check_writable()?;
        self.check_range(lba, u64::from(blocks))?;
        self.check_transfer_len(c.cdb, blocks)?;
        self.data_for(c, u64::from(blocks))
    }

    /// The Data-Out bytes for `blocks` blocks, or INVALID FIELD IN CDB
    /// when the initiator sent fewer.
    fn data_for<'a>(&self, c: &Ctx<'a>, blocks: u64) -> Result<&'a [u8], Sense> {
        let n = self.bytes(blocks) as usize;
        c.data
            .get(..n)
            .ok_or_else(|| Sense::invalid_cdb(transfer_length_byte(c.cdb), None))
    }
}

/// The RDPROTECT / WRPROTECT / VRPROTECT field: no protection information
/// here, so any non-zero value is INVALID FIELD IN CDB (SBC-3 4.22).
fn check_protect(cdb: &[u8]) -> Result<(), Sense> {
    if cdb.len() > 6 && cdb[1] & 0xe0 != 0 {
        return Err(Sense::invalid_cdb(1, Some(7)));
    }
    Ok(())
}

impl Lun {
    /// READ CAPACITY(10) (SBC-3 5.15).
    pub(crate) fn read_capacity_10(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        if c.cdb[8] & 0x01 == 0 && be32(c.cdb, 2) != 0 {
            return Err(Sense::invalid_cdb(2, None).into());
        }
        let last = d.capacity() - 1;
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&d.block_size.to_be_bytes());
        Ok(out)
    }

    /// READ CAPACITY(16) (SBC-3 5.16), with LBPME/LBPRZ on thin LUNs.
    pub(crate) fn read_capacity_16(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        let alloc = be32(c.cdb, 10) as usize;
        let mut out = vec![0u8; 32];
        out[0..8].copy_from_slice(&(d.capacity() - 1).to_be_bytes());
        out[8..12].copy_from_slice(&d.block_size.to_be_bytes());
        // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT stays 0: any block
        // can be unmapped on its own (a partial hole reads as zeros).
        if d.opts.thin {
            out[14] = 0x80 | 0x40; // LBPME, LBPRZ
        }
        Ok(spc::truncate(out, alloc))
    }

    /// READ(6/10/12/16) (SBC-3 5.7-5.11).
    pub(crate) fn read(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let rw = Rw::parse(c.cdb);
        d.check_range(rw.lba, u64::from(rw.blocks))?;
        d.check_transfer_len(c.cdb, rw.blocks)?;
        Ok(d.read_blocks(rw.lba, u64::from(rw.blocks))?)
    }

    /// WRITE(6/10/12/16) (SBC-3 5.32-5.36). FUA writes through O_DSYNC.
    pub(crate) fn write(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let rw = Rw::parse(c.cdb);
        let data = d.write_data(c, rw.lba, rw.blocks)?;
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let _shared = d.write_gate.read();
        d.backing
            .write_at(data, d.offset(rw.lba), d.write_through(rw.fua()))
            .map_err(write_error)?;
        Ok(Vec::new())
    }

    /// VERIFY(10/12/16) (SBC-3 5.26-5.28). BYTCHK 0: the medium is read;
    /// 01b: compare with the Data-Out; 11b: one Data-Out block against
    /// every block. A difference is MISCOMPARE with the byte offset.
    pub(crate) fn verify(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let rw = Rw::parse(c.cdb);
        let bytchk = (c.cdb[1] >> 1) & 0x03;
        if bytchk == 0x02 {
            return Err(Sense::invalid_cdb(1, Some(2)).into());
        }
        d.check_range(rw.lba, u64::from(rw.blocks))?;
        d.check_transfer_len(c.cdb, rw.blocks)?;
        let blocks = u64::from(rw.blocks);
        let medium = d.read_blocks(rw.lba, blocks)?;
        match bytchk {
            0 => Ok(Vec::new()),
            1 => {
                let data = d.data_for(c, blocks)?;
                compare(&medium, data)
                    .map(|_| Vec::new())
                    .map_err(Into::into)
            }
            _ => {
                let pattern = d.data_for(c, 1.min(blocks))?;
                let bs = d.block_size as usize;
                for (i, block) in medium.chunks(bs).enumerate() {
                    compare(block, pattern).map_err(|s| offset_info(s, (i * bs) as u64))?;
                }
                Ok(Vec::new())
            }
        }
    }

    /// WRITE AND VERIFY(10/12/16) (SBC-3 5.37-5.39).
    pub(crate) fn write_verify(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let rw = Rw::parse(c.cdb);
        let bytchk = (c.cdb[1] >> 1) & 0x03;
        if bytchk > 1 {
            return Err(Sense::invalid_cdb(1, Some(2)).into());
        }
        let data = d.write_data(c, rw.lba, rw.blocks)?;
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let _shared = d.write_gate.read();
        d.backing
            .write_at(data, d.offset(rw.lba), true)
            .map_err(write_error)?;
        if bytchk == 1 {
            let medium = d.read_blocks(rw.lba, u64::from(rw.blocks))?;
            compare(&medium, data)?;
        }
        Ok(Vec::new())
    }

    /// ORWRITE(16) (SBC-3 5.12): medium |= data, atomically.
    pub(crate) fn orwrite(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let rw = Rw::parse(c.cdb);
        let data = d.write_data(c, rw.lba, rw.blocks)?;
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let _exclusive = d.write_gate.write();
        let mut medium = d.read_blocks(rw.lba, u64::from(rw.blocks))?;
        medium.iter_mut().zip(data).for_each(|(m, x)| *m |= x);
        d.backing
            .write_at(&medium, d.offset(rw.lba), d.write_through(rw.fua()))
            .map_err(write_error)?;
        Ok(Vec::new())
    }

    /// WRITE ATOMIC(16) (SBC-4 5.48): one pwrite under the exclusive write
    /// gate, so no other write of this LUN interleaves with it.
    pub(crate) fn write_atomic(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let lba = be64(c.cdb, 2);
        let blocks = u32::from(be16(c.cdb, 12));
        if be16(c.cdb, 10) != 0 {
            return Err(Sense::invalid_cdb(10, None).into()); // no atomic boundaries
        }
        let data = d.write_data(c, lba, blocks)?;
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let fua = c.cdb[1] & 0x08 != 0;
        let _exclusive = d.write_gate.write();
        d.backing
            .write_at(data, d.offset(lba), d.write_through(fua))
            .map_err(write_error)?;
        Ok(Vec::new())
    }

    /// READ DEFECT DATA(10/12) (SBC-3 5.17-5.18): an empty defect list
    /// in the requested format.
    pub(crate) fn read_defect_data(&self, c: &Ctx) -> CmdResult {
        self.disk()?;
        let (flags, alloc, mut out) = if c.cdb[0] == op::READ_DEFECT_DATA_10 {
            (c.cdb[2], usize::from(be16(c.cdb, 7)), vec![0u8; 4])
        } else {
            (c.cdb[1], be32(c.cdb, 6) as usize, vec![0u8; 8])
        };
        // PLISTV / GLISTV: the lists asked for are valid (and empty).
        out[1] = flags & 0x1f;
        Ok(spc::truncate(out, alloc))
    }

    /// PRE-FETCH(10/16) (SBC-3 5.5-5.6): the page cache does the work.
    pub(crate) fn prefetch(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        let rw = Rw::parse(c.cdb);
        d.check_range(rw.lba, u64::from(rw.blocks))?;
        Ok(Vec::new())
    }

    /// SYNCHRONIZE CACHE(10/16) (SBC-3 5.22-5.23): fdatasync.
    pub(crate) fn synchronize_cache(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        let rw = Rw::parse(c.cdb);
        d.check_range(rw.lba, u64::from(rw.blocks))?;
        d.backing.sync().map_err(write_error)?;
        Ok(Vec::new())
    }

    /// WRITE SAME(10/16) (SBC-3 5.41-5.42), with UNMAP and NDOB.
    pub(crate) fn write_same(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let cdb = c.cdb;
        let is16 = cdb[0] == op::WRITE_SAME_16;
        let (lba, blocks) = if is16 {
            (be64(cdb, 2), u64::from(be32(cdb, 10)))
        } else {
            (u64::from(be32(cdb, 2)), u64::from(be16(cdb, 7)))
        };
        let unmap = cdb[1] & 0x08 != 0;
        let ndob = is16 && cdb[1] & 0x01 != 0;
        if cdb[1] & 0x10 != 0 {
            return Err(Sense::invalid_cdb(1, Some(4)).into()); // ANCHOR: not supported
        }
        if cdb[1] & 0x06 != 0 {
            return Err(Sense::invalid_cdb(1, Some(if cdb[1] & 0x04 != 0 { 2 } else { 1 })).into());
        }
        if unmap && !d.opts.thin {
            // LBPWS/LBPWS10 are clear on a fully provisioned LUN.
            return Err(Sense::invalid_cdb(1, Some(3)).into());
        }
        d.check_writable()?;
        d.check_range(lba, blocks)?;
        let blocks = if blocks == 0 {
            d.capacity() - lba
        } else {
            blocks
        };
        if blocks > MAX_WRITE_SAME_BLOCKS {
            return Err(Sense::invalid_cdb(if is16 { 10 } else { 7 }, None).into());
        }
        let bs = d.block_size as usize;
        // The Data-Out is exactly one block (none with NDOB).
        let expected = if ndob { 0 } else { bs };
        if c.data.len() != expected {
            return Err(Sense::invalid_cdb(if is16 { 10 } else { 7 }, None).into());
        }
        let pattern = c.data;
        let zeros = pattern.iter().all(|b| *b == 0);
        let _shared = d.write_gate.read();
        // UNMAP=1 on a thin LUN deallocates whatever the data: LBPRZ says
        // the blocks then read as zeros (SBC-3 5.42, 4.7.3.4).
        if unmap && d.opts.thin {
            d.backing
                .punch_hole(d.offset(lba), d.bytes(blocks))
                .map_err(write_error)?;
        } else if zeros {
            d.backing
                .write_zeros(d.offset(lba), d.bytes(blocks))
                .map_err(write_error)?;
        } else {
            write_pattern(d, pattern, lba, blocks)?;
        }
        if d.write_through(false) {
            d.backing.sync().map_err(write_error)?;
        }
        Ok(Vec::new())
    }

    /// UNMAP (SBC-3 5.28): punch holes on thin LUNs.
    pub(crate) fn unmap(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        if !d.opts.thin {
            return Err(Sense::invalid_opcode().into());
        }
        if c.cdb[1] & 0x01 != 0 {
            return Err(Sense::invalid_cdb(1, Some(0)).into()); // ANCHOR
        }
        let plen = usize::from(be16(c.cdb, 7));
        if plen == 0 {
            return Ok(Vec::new());
        }
        if plen < 8 || c.data.len() < plen {
            return Err(Sense::param_list_length().into());
        }
        let p = &c.data[..plen];
        let desc_len = usize::from(be16(p, 2)).min(plen - 8);
        let descs: Vec<(u64, u64)> = p[8..8 + desc_len]
            .chunks_exact(16)
            .map(|x| (be64(x, 0), u64::from(be32(x, 8))))
            .collect();
        if descs.len() > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::invalid_param(2, None).into());
        }
        d.check_writable()?;
        for &(lba, n) in &descs {
            d.check_range(lba, n)?;
        }
        let _shared = d.write_gate.read();
        for (lba, n) in descs {
            d.backing
                .punch_hole(d.offset(lba), d.bytes(n))
                .map_err(write_error)?;
        }
        Ok(Vec::new())
    }

    /// GET LBA STATUS (SBC-3 5.4): mapped / deallocated extents from
    /// SEEK_DATA / SEEK_HOLE.
    pub(crate) fn get_lba_status(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        let lba = be64(c.cdb, 2);
        let alloc = be32(c.cdb, 10) as usize;
        let cap = d.capacity();
        if lba >= cap {
            return Err(Sense::lba_out_of_range().into());
        }
        let max_desc = (alloc.saturating_sub(8) / 16).clamp(1, 1024);
        let mut body = Vec::new();
        let mut at = lba;
        while at < cap && body.len() / 16 < max_desc {
            let (extent, end) = if d.opts.thin {
                d.backing
                    .extent_at(d.offset(at), d.offset(cap))
                    .map_err(read_error)?
            } else {
                (Extent::Mapped, d.offset(cap))
            };
            let end_lba = (end >> d.block_shift).max(at + 1).min(cap);
            let n = (end_lba - at).min(u64::from(u32::MAX));
            let mut desc = [0u8; 16];
            desc[0..8].copy_from_slice(&at.to_be_bytes());
            desc[8..12].copy_from_slice(&(n as u32).to_be_bytes());
            desc[12] = if extent == Extent::Mapped { 0 } else { 1 };
            body.extend_from_slice(&desc);
            at += n;
        }
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body);
        Ok(spc::truncate(out, alloc))
    }

    /// COMPARE AND WRITE (SBC-3 5.2): atomic against every other writer
    /// of this LUN (they hold the write gate shared, we hold it exclusive).
    pub(crate) fn compare_and_write(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        check_protect(c.cdb)?;
        let lba = be64(c.cdb, 2);
        let blocks = c.cdb[13];
        if blocks > MAX_COMPARE_AND_WRITE_BLOCKS {
            return Err(Sense::invalid_cdb(13, None).into());
        }
        // The Data-Out is exactly the verify and the write data.
        let n = d.bytes(u64::from(blocks)) as usize;
        if c.data.len() != 2 * n {
            return Err(Sense::invalid_cdb(13, None).into());
        }
        d.check_writable()?;
        d.check_range(lba, u64::from(blocks))?;
        if blocks == 0 {
            return Ok(Vec::new());
        }
        let data = c.data;
        let (verify, write) = data.split_at(n);
        let fua = c.cdb[1] & 0x08 != 0;
        let _exclusive = d.write_gate.write();
        let medium = d.read_blocks(lba, u64::from(blocks))?;
        compare(&medium, verify)?;
        d.backing
            .write_at(write, d.offset(lba), d.write_through(fua))
            .map_err(write_error)?;
        Ok(Vec::new())
    }
}

/// MISCOMPARE at the first differing byte.
fn compare(medium: &[u8], expected: &[u8]) -> Result<(), Sense> {
    match medium.iter().zip(expected).position(|(a, b)| a != b) {
        Some(i) => Err(Sense::miscompare(i as u64)),
        None => Ok(()),
    }
}

/// Shift a miscompare's INFORMATION by `base` bytes.
fn offset_info(mut s: Sense, base: u64) -> Sense {
    s.info = s.info.map(|i| i + base);
    s
}

/// Fill `blocks` blocks from `lba` with copies of one block.
fn write_pattern(d: &Disk, pattern: &[u8], lba: u64, blocks: u64) -> Result<(), Sense> {
    let bs = pattern.len() as u64;
    let per_chunk = ((1u64 << 20) / bs).clamp(1, blocks);
    let chunk: Vec<u8> = pattern
        .iter()
        .copied()
        .cycle()
        .take((per_chunk * bs) as usize)
        .collect();
    let mut done = 0;
    while done < blocks {
        let n = per_chunk.min(blocks - done);
        d.backing
            .write_at(&chunk[..(n * bs) as usize], (lba + done) * bs, false)
            .map_err(write_error)?;
        done += n;
    }
    Ok(())
}
