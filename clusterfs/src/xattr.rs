//! Extended attributes in GFS2's EA block format: one EA block per inode
//! (`di_eattr`), records with a 16-byte header, the name without its
//! namespace prefix, and the value stored inline. Values too large for the
//! block (which GFS2 keeps in ED blocks) are refused with `E2BIG`/`ENOSPC`.

use crate::ondisk::{dif, eatype, BlockState, EaHeader, MetaHeader, MetaType, GFS2_EAFLAG_LAST};
use crate::volume::{FsError, Result, Volume};

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

/// Space a record with this name and inline value takes.
fn ea_size(name_len: usize, data_len: usize) -> usize {
    (EaHeader::SIZE + name_len + data_len + 7) & !7
}

/// One parsed record.
struct Rec {
    off: usize,
    h: EaHeader,
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

impl Volume {
    fn ea_records(&mut self, blk: u64) -> Result<Vec<Rec>> {
        let b = self.meta(blk)?;
        MetaHeader::decode_as(b, MetaType::Ea)
            .map_err(|e| FsError::Corrupt(format!("EA block {blk}: {e}")))?;
        let mut out = Vec::new();
        let mut off = MetaHeader::SIZE;
        loop {
            let h = EaHeader::decode_at(b, off)
                .map_err(|e| FsError::Corrupt(format!("EA block {blk}: {e}")))?;
            let last = h.ea_flags & GFS2_EAFLAG_LAST != 0;
            let rec = h.ea_rec_len as usize;
            let inline = if h.ea_num_ptrs == 0 {
                h.ea_data_len as usize
            } else {
                0
            };
            if h.ea_type != eatype::UNUSED && ea_size(usize::from(h.ea_name_len), inline) > rec {
                return Err(FsError::Corrupt(format!(
                    "EA block {blk}: record overruns its length"
                )));
            }
            out.push(Rec { off, h });
            if last {
                return Ok(out);
            }
            off += rec;
            if off >= b.len() {
                return Err(FsError::Corrupt(format!("EA block {blk}: no last record")));
            }
        }
    }

    fn ea_block(&mut self, ino: u64) -> Result<Option<u64>> {
        let di = self.dinode(ino)?;
        if di.di_eattr == 0 {
            return Ok(None);
        }
        if di.di_flags & dif::EA_INDIRECT != 0 {
            return Err(FsError::NotSupported);
        }
        Ok(Some(di.di_eattr))
    }

    fn ea_find(&mut self, blk: u64, t: u8, name: &[u8]) -> Result<Option<Rec>> {
        let recs = self.ea_records(blk)?;
        let b = self.meta(blk)?;
        Ok(recs.into_iter().find(|r| {
            let n = usize::from(r.h.ea_name_len);
            r.h.ea_type == t && &b[r.off + EaHeader::SIZE..r.off + EaHeader::SIZE + n] == name
        }))
    }

    /// The value of an attribute.
    pub fn xattr_get(&mut self, ino: u64, full: &[u8]) -> Result<Vec<u8>> {
        let (t, name) = split_name(full)?;
        let blk = self.ea_block(ino)?.ok_or(FsError::NoData)?;
        let r = self.ea_find(blk, t, name)?.ok_or(FsError::NoData)?;
        if r.h.ea_num_ptrs != 0 {
            return Err(FsError::NotSupported);
        }
        let start = r.off + EaHeader::SIZE + usize::from(r.h.ea_name_len);
        let b = self.meta(blk)?;
        let end = start + r.h.ea_data_len as usize;
        if end > r.off + r.h.ea_rec_len as usize {
            return Err(FsError::Corrupt(format!(
                "EA block {blk}: value overruns its record"
            )));
        }
        Ok(b[start..end].to_vec())
    }

    /// Every attribute name, with its prefix.
    pub fn xattr_list(&mut self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let Some(blk) = self.ea_block(ino)? else {
            return Ok(Vec::new());
        };
        let recs = self.ea_records(blk)?;
        let b = self.meta(blk)?;
        Ok(recs
            .iter()
            .filter(|r| r.h.ea_type != eatype::UNUSED)
            .map(|r| {
                let n = usize::from(r.h.ea_name_len);
                let mut v = prefix(r.h.ea_type).to_vec();
                v.extend_from_slice(&b[r.off + EaHeader::SIZE..r.off + EaHeader::SIZE + n]);
                v
            })
            .collect())
    }

    /// Removes an attribute.
    pub fn xattr_remove(&mut self, ino: u64, full: &[u8]) -> Result<()> {
        let (t, name) = split_name(full)?;
        let blk = self.ea_block(ino)?.ok_or(FsError::NoData)?;
        let recs = self.ea_records(blk)?;
        let r = self.ea_find(blk, t, name)?.ok_or(FsError::NoData)?;
        let i = recs
            .iter()
            .position(|x| x.off == r.off)
            .expect("found among records");
        let b = self.meta_mut(blk)?;
        if i == 0 {
            let mut h = r.h;
            h.ea_type = eatype::UNUSED;
            h.encode_at(b, r.off);
        } else {
            let mut prev = recs[i - 1].h;
            prev.ea_rec_len += r.h.ea_rec_len;
            prev.ea_flags |= r.h.ea_flags & GFS2_EAFLAG_LAST;
            prev.encode_at(b, recs[i - 1].off);
        }
        Ok(())
    }

    /// Sets an attribute (inline value).
    pub fn xattr_set(&mut self, ino: u64, full: &[u8], value: &[u8], mode: SetMode) -> Result<()> {
        let (t, name) = split_name(full)?;
        if value.len() > 65536 {
            return Err(FsError::Range);
        }
        let need = ea_size(name.len(), value.len());
        if need > self.bsize() - MetaHeader::SIZE {
            return Err(FsError::NoSpace);
        }
        let exists = match self.ea_block(ino)? {
            Some(blk) => self.ea_find(blk, t, name)?.is_some(),
            None => false,
        };
        match (mode, exists) {
            (SetMode::Create, true) => return Err(FsError::Exists),
            (SetMode::Replace, false) => return Err(FsError::NoData),
            (_, true) => self.xattr_remove(ino, full)?,
            _ => {}
        }
        let blk = match self.ea_block(ino)? {
            Some(b) => b,
            None => self.new_ea_block(ino)?,
        };
        self.ea_insert(blk, t, name, value, need)
    }

    fn new_ea_block(&mut self, ino: u64) -> Result<u64> {
        let mut di = self.dinode(ino)?;
        let blk = self.alloc(ino, BlockState::Used)?;
        let bs = self.bsize();
        let b = self.meta_new(blk);
        MetaHeader::new(MetaType::Ea).encode(b);
        let h = EaHeader {
            ea_rec_len: (bs - MetaHeader::SIZE) as u32,
            ea_type: eatype::UNUSED,
            ea_flags: GFS2_EAFLAG_LAST,
            ..Default::default()
        };
        h.encode_at(b, MetaHeader::SIZE);
        di.di_eattr = blk;
        di.di_blocks += 1;
        self.put_dinode(&di)?;
        Ok(blk)
    }

    fn ea_insert(&mut self, blk: u64, t: u8, name: &[u8], value: &[u8], need: usize) -> Result<()> {
        for r in self.ea_records(blk)? {
            let rec = r.h.ea_rec_len as usize;
            let last = r.h.ea_flags & GFS2_EAFLAG_LAST;
            let (at, len, flags) = if r.h.ea_type == eatype::UNUSED {
                if rec < need {
                    continue;
                }
                (r.off, rec, last)
            } else {
                let used = ea_size(usize::from(r.h.ea_name_len), r.h.ea_data_len as usize);
                if rec.saturating_sub(used) < need || r.h.ea_num_ptrs != 0 {
                    continue;
                }
                let mut h = r.h;
                h.ea_rec_len = used as u32;
                h.ea_flags &= !GFS2_EAFLAG_LAST;
                h.encode_at(self.meta_mut(blk)?, r.off);
                (r.off + used, rec - used, last)
            };
            let h = EaHeader {
                ea_rec_len: len as u32,
                ea_data_len: value.len() as u32,
                ea_name_len: name.len() as u8,
                ea_type: t,
                ea_flags: flags,
                ea_num_ptrs: 0,
            };
            let b = self.meta_mut(blk)?;
            b[at..at + len].fill(0);
            h.encode_at(b, at);
            let n = at + EaHeader::SIZE;
            b[n..n + name.len()].copy_from_slice(name);
            b[n + name.len()..n + name.len() + value.len()].copy_from_slice(value);
            return Ok(());
        }
        Err(FsError::NoSpace)
    }
}
