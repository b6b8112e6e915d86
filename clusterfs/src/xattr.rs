//! Extended attributes in GFS2's EA format.
//!
//! `di_eattr` names one EA block, or (flag `GFS2_DIF_EA_INDIRECT`) an
//! indirect block (type IN) of pointers to EA blocks, packed from the
//! front. An EA block holds records with a 16-byte header and the name
//! without its namespace prefix. A value that fits in a record with its
//! name is stored inline ("stuffed"); a larger one lives in ED blocks
//! (`bsize - 24` bytes each) whose pointers follow the name, aligned to 8
//! ([`crate::xattr_ed`]). Removing a record marks it unused (the first one
//! of a block) or merges it into the previous record, as the kernel does;
//! EA blocks stay allocated until the inode goes.

use crate::ondisk::{
    be64, dif, eatype, put64, BlockState, EaHeader, MetaHeader, MetaType, GFS2_EAFLAG_LAST,
};
use crate::volume::{FsError, Result, Volume};

/// Largest value (`XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;

/// Splits `user.foo` into (type, "foo").
pub fn split_name(full: &[u8]) -> Result<(u8, &[u8])> {
    const SPACES: [(&[u8], u8); 4] = [
        (b"user.", eatype::USR),
        (b"system.", eatype::SYS),
        (b"security.", eatype::SECURITY),
        (b"trusted.", eatype::TRUSTED),
    ];
    for (prefix, t) in SPACES {
        if let Some(rest) = full.strip_prefix(prefix) {
            if rest.is_empty() || rest.len() > 255 {
                return Err(FsError::Range);
            }
            return Ok((t, rest));
        }
    }
    Err(FsError::NotSupported)
}

fn prefix(t: u8) -> &'static [u8] {
    match t {
        eatype::USR => b"user.",
        eatype::SYS => b"system.",
        eatype::SECURITY => b"security.",
        _ => b"trusted.",
    }
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Space a record with this name and inline value takes.
fn ea_size(name_len: usize, data_len: usize) -> usize {
    align8(EaHeader::SIZE + name_len + data_len)
}

/// Space a record takes (`GFS2_EA_SIZE`).
fn rec_size(h: &EaHeader) -> usize {
    let n = usize::from(h.ea_name_len);
    if h.ea_num_ptrs == 0 {
        ea_size(n, h.ea_data_len as usize)
    } else {
        EaHeader::SIZE + align8(n) + 8 * usize::from(h.ea_num_ptrs)
    }
}

/// Offset of the ED pointers (or inline value) of a record at `off`.
fn ptrs_at(off: usize, h: &EaHeader) -> usize {
    off + EaHeader::SIZE + align8(usize::from(h.ea_name_len))
}

/// One parsed record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rec {
    pub(crate) off: usize,
    pub(crate) h: EaHeader,
}

/// Where a new record goes in an EA block.
struct Slot {
    at: usize,
    len: usize,
    flags: u8,
    /// A record to shorten first: (offset, its header with the new length).
    shrink: Option<(usize, EaHeader)>,
}

/// How [`Volume::xattr_set`] treats an existing attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Create or replace.
    Any,
    /// Fail with EEXIST if present.
    Create,
    /// Fail with ENODATA if absent.
    Replace,
}

/// A value as it will be stored.
enum Payload<'a> {
    Inline(&'a [u8]),
    Ed { len: usize, ptrs: Vec<u64> },
}

impl Volume {
    /// Bytes of value one ED block holds.
    pub(crate) fn ed_capacity(&self) -> usize {
        self.bsize() - MetaHeader::SIZE
    }

    pub(crate) fn ea_records(&mut self, blk: u64) -> Result<Vec<Rec>> {
        let b = self.meta(blk)?;
        let bad = |why: &str| FsError::Corrupt(format!("EA block {blk}: {why}"));
        MetaHeader::decode_as(b, MetaType::Ea).map_err(|e| bad(&e.to_string()))?;
        let mut out = Vec::new();
        let mut off = MetaHeader::SIZE;
        loop {
            let h = EaHeader::decode_at(b, off).map_err(|e| bad(&e.to_string()))?;
            let rec = h.ea_rec_len as usize;
            if rec < EaHeader::SIZE || off + rec > b.len() {
                return Err(bad("record length out of the block"));
            }
            if h.ea_type != eatype::UNUSED && rec_size(&h) > rec {
                return Err(bad("record overruns its length"));
            }
            out.push(Rec { off, h });
            if h.ea_flags & GFS2_EAFLAG_LAST != 0 {
                return Ok(out);
            }
            off += rec;
            if off >= b.len() {
                return Err(bad("no last record"));
            }
        }
    }

    /// The EA blocks of an inode, in order.
    pub(crate) fn ea_blocks(&mut self, ino: u64) -> Result<Vec<u64>> {
        let di = self.dinode(ino)?;
        if di.di_eattr == 0 {
            return Ok(Vec::new());
        }
        if di.di_flags & dif::EA_INDIRECT == 0 {
            return Ok(vec![di.di_eattr]);
        }
        let b = self.meta(di.di_eattr)?;
        MetaHeader::decode_as(b, MetaType::In)
            .map_err(|e| FsError::Corrupt(format!("EA indirect block of {ino}: {e}")))?;
        Ok((MetaHeader::SIZE..b.len())
            .step_by(8)
            .map(|off| be64(b, off))
            .take_while(|&p| p != 0)
            .collect())
    }

    fn rec_name<'a>(b: &'a [u8], r: &Rec) -> &'a [u8] {
        let s = r.off + EaHeader::SIZE;
        &b[s..s + usize::from(r.h.ea_name_len)]
    }

    /// The block and record of an attribute, if present.
    fn ea_find(&mut self, ino: u64, t: u8, name: &[u8]) -> Result<Option<(u64, Rec)>> {
        for blk in self.ea_blocks(ino)? {
            let recs = self.ea_records(blk)?;
            let b = self.meta(blk)?;
            if let Some(r) = recs
                .into_iter()
                .find(|r| r.h.ea_type == t && Self::rec_name(b, r) == name)
            {
                return Ok(Some((blk, r)));
            }
        }
        Ok(None)
    }

    /// The ED pointers of a record.
    pub(crate) fn rec_ptrs(&mut self, blk: u64, r: &Rec) -> Result<Vec<u64>> {
        let at = ptrs_at(r.off, &r.h);
        let b = self.meta(blk)?;
        Ok((0..usize::from(r.h.ea_num_ptrs))
            .map(|i| be64(b, at + 8 * i))
            .collect())
    }

    /// The value of an attribute.
    pub fn xattr_get(&mut self, ino: u64, full: &[u8]) -> Result<Vec<u8>> {
        let (t, name) = split_name(full)?;
        let (blk, r) = self.ea_find(ino, t, name)?.ok_or(FsError::NoData)?;
        let len = r.h.ea_data_len as usize;
        if r.h.ea_num_ptrs != 0 {
            let ptrs = self.rec_ptrs(blk, &r)?;
            return self.ed_read(blk, &ptrs, len);
        }
        let start = r.off + EaHeader::SIZE + usize::from(r.h.ea_name_len);
        Ok(self.meta(blk)?[start..start + len].to_vec())
    }

    /// Every attribute name, with its prefix.
    pub fn xattr_list(&mut self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for blk in self.ea_blocks(ino)? {
            let recs = self.ea_records(blk)?;
            let b = self.meta(blk)?;
            out.extend(
                recs.iter()
                    .filter(|r| r.h.ea_type != eatype::UNUSED)
                    .map(|r| {
                        let mut v = prefix(r.h.ea_type).to_vec();
                        v.extend_from_slice(Self::rec_name(b, r));
                        v
                    }),
            );
        }
        Ok(out)
    }

    /// Removes an attribute, freeing its ED blocks.
    pub fn xattr_remove(&mut self, ino: u64, full: &[u8]) -> Result<()> {
        let (t, name) = split_name(full)?;
        let (blk, r) = self.ea_find(ino, t, name)?.ok_or(FsError::NoData)?;
        if r.h.ea_num_ptrs != 0 {
            let ptrs = self.rec_ptrs(blk, &r)?;
            self.ed_free(ino, &ptrs)?;
        }
        let recs = self.ea_records(blk)?;
        let i = recs
            .iter()
            .position(|x| x.off == r.off)
            .expect("found among records");
        let b = self.meta_mut(blk)?;
        if i == 0 {
            let mut h = r.h;
            h.ea_type = eatype::UNUSED;
            h.ea_num_ptrs = 0;
            h.encode_at(b, r.off);
        } else {
            let mut prev = recs[i - 1].h;
            prev.ea_rec_len += r.h.ea_rec_len;
            prev.ea_flags |= r.h.ea_flags & GFS2_EAFLAG_LAST;
            prev.encode_at(b, recs[i - 1].off);
        }
        Ok(())
    }

    /// Sets an attribute: inline when it fits in a record, else in ED
    /// blocks; a new EA block (and the indirect block) when no EA block has
    /// room.
    pub fn xattr_set(&mut self, ino: u64, full: &[u8], value: &[u8], mode: SetMode) -> Result<()> {
        let (t, name) = split_name(full)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::Range);
        }
        let jb = self.ed_capacity();
        let stuffed = ea_size(name.len(), value.len()) <= jb;
        let nptrs = if stuffed { 0 } else { value.len().div_ceil(jb) };
        let need = if stuffed {
            ea_size(name.len(), value.len())
        } else {
            EaHeader::SIZE + align8(name.len()) + 8 * nptrs
        };
        if need > jb {
            // The kernel's ea_check_size: the pointers alone do not fit.
            return Err(FsError::Range);
        }
        let exists = self.ea_find(ino, t, name)?.is_some();
        match (mode, exists) {
            (SetMode::Create, true) => return Err(FsError::Exists),
            (SetMode::Replace, false) => return Err(FsError::NoData),
            (_, true) => self.xattr_remove(ino, full)?,
            _ => {}
        }
        let (blk, slot) = self.ea_room(ino, need)?;
        let payload = if stuffed {
            Payload::Inline(value)
        } else {
            Payload::Ed {
                len: value.len(),
                ptrs: self.ed_write(ino, value)?,
            }
        };
        self.ea_place(blk, slot, t, name, payload)
    }

    /// An EA block with room for `need` bytes, adding one if none has it.
    fn ea_room(&mut self, ino: u64, need: usize) -> Result<(u64, Slot)> {
        for blk in self.ea_blocks(ino)? {
            if let Some(s) = self.ea_fit(blk, need)? {
                return Ok((blk, s));
            }
        }
        let blk = self.ea_add_block(ino)?;
        let s = self
            .ea_fit(blk, need)?
            .expect("a fresh EA block fits a record");
        Ok((blk, s))
    }

    /// Where a record of `need` bytes fits in `blk`.
    fn ea_fit(&mut self, blk: u64, need: usize) -> Result<Option<Slot>> {
        for r in self.ea_records(blk)? {
            let rec = r.h.ea_rec_len as usize;
            let last = r.h.ea_flags & GFS2_EAFLAG_LAST;
            if r.h.ea_type == eatype::UNUSED {
                if rec >= need {
                    return Ok(Some(Slot {
                        at: r.off,
                        len: rec,
                        flags: last,
                        shrink: None,
                    }));
                }
                continue;
            }
            let used = rec_size(&r.h);
            if rec - used >= need {
                let mut h = r.h;
                h.ea_rec_len = used as u32;
                h.ea_flags &= !GFS2_EAFLAG_LAST;
                return Ok(Some(Slot {
                    at: r.off + used,
                    len: rec - used,
                    flags: last,
                    shrink: Some((r.off, h)),
                }));
            }
        }
        Ok(None)
    }

    fn ea_place(&mut self, blk: u64, s: Slot, t: u8, name: &[u8], p: Payload<'_>) -> Result<()> {
        let (data_len, nptrs) = match &p {
            Payload::Inline(v) => (v.len(), 0),
            Payload::Ed { len, ptrs } => (*len, ptrs.len()),
        };
        let h = EaHeader {
            ea_rec_len: s.len as u32,
            ea_data_len: data_len as u32,
            ea_name_len: name.len() as u8,
            ea_type: t,
            ea_flags: s.flags,
            ea_num_ptrs: nptrs as u8,
        };
        let b = self.meta_mut(blk)?;
        if let Some((off, sh)) = s.shrink {
            sh.encode_at(b, off);
        }
        b[s.at..s.at + s.len].fill(0);
        h.encode_at(b, s.at);
        let n = s.at + EaHeader::SIZE;
        b[n..n + name.len()].copy_from_slice(name);
        match p {
            Payload::Inline(v) => b[n + name.len()..n + name.len() + v.len()].copy_from_slice(v),
            Payload::Ed { ptrs, .. } => {
                let at = ptrs_at(s.at, &h);
                for (i, p) in ptrs.iter().enumerate() {
                    put64(b, at + 8 * i, *p);
                }
            }
        }
        Ok(())
    }

    /// A fresh, empty EA block (one unused record spanning it).
    fn new_ea_block(&mut self, goal: u64) -> Result<u64> {
        let blk = self.alloc(goal, BlockState::Used)?;
        let bs = self.bsize();
        let b = self.meta_new(blk);
        MetaHeader::new(MetaType::Ea).encode(b);
        EaHeader {
            ea_rec_len: (bs - MetaHeader::SIZE) as u32,
            ea_type: eatype::UNUSED,
            ea_flags: GFS2_EAFLAG_LAST,
            ..Default::default()
        }
        .encode_at(b, MetaHeader::SIZE);
        Ok(blk)
    }

    /// Adds an EA block to the inode: the first one goes in `di_eattr`; the
    /// second turns `di_eattr` into an indirect block listing both, as the
    /// kernel's `ea_set_block` does. ENOSPC when the indirect block is full.
    fn ea_add_block(&mut self, ino: u64) -> Result<u64> {
        let mut di = self.dinode(ino)?;
        if di.di_eattr == 0 {
            let blk = self.new_ea_block(ino)?;
            di.di_eattr = blk;
            di.di_blocks += 1;
            self.put_dinode(&di)?;
            return Ok(blk);
        }
        let slots = self.ed_capacity() / 8;
        let (ind, used) = if di.di_flags & dif::EA_INDIRECT != 0 {
            let used = self.ea_blocks(ino)?.len();
            if used == slots {
                return Err(FsError::NoSpace);
            }
            (di.di_eattr, used)
        } else {
            let ind = self.alloc(ino, BlockState::Used)?;
            let b = self.meta_new(ind);
            MetaHeader::new(MetaType::In).encode(b);
            put64(b, MetaHeader::SIZE, di.di_eattr);
            di.di_eattr = ind;
            di.di_flags |= dif::EA_INDIRECT;
            di.di_blocks += 1;
            (ind, 1)
        };
        let blk = self.new_ea_block(ind)?;
        put64(self.meta_mut(ind)?, MetaHeader::SIZE + 8 * used, blk);
        di.di_blocks += 1;
        self.put_dinode(&di)?;
        Ok(blk)
    }
}
