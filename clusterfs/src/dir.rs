//! Directories: lookup, insertion, removal and listing over linear
//! (stuffed) and exhash directories, with linear→exhash conversion, leaf
//! splits and hash table doubling.

use crate::dirbuild::{hash_slot, pack_dirents, parse_dirents, DirEntryIn};
use crate::ondisk::{
    be64, dif, disk_hash, BlockState, Dinode, Dirent, Inum, Leaf, GFS2_DIR_MAX_DEPTH,
    GFS2_FORMAT_DE,
};
use crate::volume::{FsError, Result, Volume};

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Resume cookie (readdir offset) of the entry after this one.
    pub cookie: u64,
    /// Target inode.
    pub inum: Inum,
    /// `de_type`.
    pub de_type: u16,
    /// Name bytes.
    pub name: Vec<u8>,
}

/// Where a dirent region lives: a block and the offset it starts at.
#[derive(Debug, Clone, Copy)]
struct Region {
    blk: u64,
    start: usize,
}

fn cookie(hash: u32, ordinal: usize) -> u64 {
    (u64::from(hash) << 16) | (ordinal as u64 + 1)
}

impl Volume {
    fn region_entries(&mut self, r: Region) -> Result<Vec<crate::dirbuild::DirEntryOut>> {
        let b = self.meta(r.blk)?;
        parse_dirents(&b[r.start..])
            .map_err(|e| FsError::Corrupt(format!("directory block {}: {e}", r.blk)))
    }

    fn region_find(&mut self, r: Region, name: &[u8]) -> Result<Option<(Inum, u16)>> {
        let b = self.meta(r.blk)?;
        let found = crate::dirbuild::find_dirent(&b[r.start..], disk_hash(name), name)
            .map_err(|e| FsError::Corrupt(format!("directory block {}: {e}", r.blk)))?;
        Ok(found.map(|d| (d.de_inum, d.de_type)))
    }

    /// Tries to place an entry in the region; false when there is no room.
    fn region_insert(&mut self, r: Region, e: &DirEntryIn) -> Result<bool> {
        let need = Dirent::rec_len_for(e.name.len());
        let ents = self.region_entries(r)?;
        for cur in ents {
            let rec = usize::from(cur.dirent.de_rec_len);
            let (at, rec_len) = if !cur.dirent.in_use() {
                if rec < need {
                    continue;
                }
                (cur.offset, rec)
            } else {
                let used = Dirent::rec_len_for(cur.name.len());
                if rec - used < need {
                    continue;
                }
                let mut shrunk = cur.dirent;
                shrunk.de_rec_len = used as u16;
                let b = self.meta_mut(r.blk)?;
                shrunk.encode_at(&mut b[r.start..], cur.offset);
                (cur.offset + used, rec - used)
            };
            let de = Dirent {
                de_inum: e.inum,
                de_hash: disk_hash(&e.name),
                de_rec_len: rec_len as u16,
                de_name_len: e.name.len() as u16,
                de_type: e.de_type,
                de_rahead: 0,
            };
            let b = &mut self.meta_mut(r.blk)?[r.start..];
            de.encode_at(b, at);
            b[at + Dirent::SIZE..at + Dirent::SIZE + e.name.len()].copy_from_slice(&e.name);
            return Ok(true);
        }
        Ok(false)
    }

    /// Removes `name` from the region, returning its inum.
    fn region_remove(&mut self, r: Region, name: &[u8]) -> Result<Option<Inum>> {
        let h = disk_hash(name);
        let ents = self.region_entries(r)?;
        let Some(i) = ents
            .iter()
            .position(|e| e.dirent.in_use() && e.dirent.de_hash == h && e.name == name)
        else {
            return Ok(None);
        };
        let inum = ents[i].dirent.de_inum;
        let b = &mut self.meta_mut(r.blk)?[r.start..];
        if i == 0 {
            let mut de = ents[0].dirent;
            de.de_inum = Inum::default();
            de.encode_at(b, 0);
        } else {
            let mut prev = ents[i - 1].dirent;
            prev.de_rec_len += ents[i].dirent.de_rec_len;
            prev.encode_at(b, ents[i - 1].offset);
        }
        Ok(Some(inum))
    }

    fn region_set(&mut self, r: Region, name: &[u8], inum: Inum, de_type: u16) -> Result<bool> {
        let h = disk_hash(name);
        let ents = self.region_entries(r)?;
        let Some(e) = ents
            .into_iter()
            .find(|e| e.dirent.in_use() && e.dirent.de_hash == h && e.name == name)
        else {
            return Ok(false);
        };
        let mut de = e.dirent;
        de.de_inum = inum;
        de.de_type = de_type;
        de.encode_at(&mut self.meta_mut(r.blk)?[r.start..], e.offset);
        Ok(true)
    }

    fn is_exhash(di: &Dinode) -> bool {
        di.di_flags & dif::EXHASH != 0
    }

    fn stuffed_region(di: &Dinode) -> Region {
        Region {
            blk: di.di_num.no_addr,
            start: Dinode::SIZE,
        }
    }

    fn leaf_region(blk: u64) -> Region {
        Region {
            blk,
            start: Leaf::SIZE,
        }
    }

    fn leaf(&mut self, blk: u64) -> Result<Leaf> {
        let b = self.meta(blk)?;
        Leaf::decode(b).map_err(|e| FsError::Corrupt(format!("leaf {blk}: {e}")))
    }

    fn table_ptr(&mut self, di: &Dinode, slot: usize) -> Result<u64> {
        let b = self.dir_data_read(di, slot as u64 * 8, 8)?;
        let p = be64(&b, 0);
        if p == 0 {
            return Err(FsError::Corrupt(format!(
                "directory {}: empty hash slot",
                di.di_num.no_addr
            )));
        }
        Ok(p)
    }

    /// The chain of leaves for a name's hash slot.
    fn leaf_chain(&mut self, di: &Dinode, name: &[u8]) -> Result<Vec<u64>> {
        let first = self.table_ptr(di, hash_slot(name, di.di_depth))?;
        let mut chain = vec![first];
        let mut next = self.leaf(first)?.lf_next;
        while next != 0 {
            if chain.len() > 1024 {
                return Err(FsError::Corrupt("leaf chain loops".into()));
            }
            chain.push(next);
            next = self.leaf(next)?.lf_next;
        }
        Ok(chain)
    }

    fn check_dir(di: &Dinode) -> Result<()> {
        if !di.is_dir() {
            return Err(FsError::NotDir);
        }
        if Self::is_exhash(di) && (di.di_depth == 0 || di.di_size != 8u64 << di.di_depth) {
            return Err(FsError::Corrupt(format!(
                "directory {}: bad hash table size",
                di.di_num.no_addr
            )));
        }
        Ok(())
    }

    /// Looks `name` up in directory `dir`.
    pub fn dir_lookup(&mut self, dir: u64, name: &[u8]) -> Result<Option<(Inum, u16)>> {
        let di = self.dinode(dir)?;
        Self::check_dir(&di)?;
        if !Self::is_exhash(&di) {
            return self.region_find(Self::stuffed_region(&di), name);
        }
        for leaf in self.leaf_chain(&di, name)? {
            if let Some(hit) = self.region_find(Self::leaf_region(leaf), name)? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// Adds an entry (the caller checked it is not there) and counts it.
    pub fn dir_add(&mut self, di: &mut Dinode, e: &DirEntryIn) -> Result<()> {
        Self::check_dir(di)?;
        if !Self::is_exhash(di) {
            if self.region_insert(Self::stuffed_region(di), e)? {
                di.di_entries += 1;
                return Ok(());
            }
            self.make_exhash(di)?;
        }
        loop {
            let chain = self.leaf_chain(di, &e.name)?;
            for &leaf in &chain {
                if self.region_insert(Self::leaf_region(leaf), e)? {
                    self.leaf_entries(leaf, 1)?;
                    di.di_entries += 1;
                    return Ok(());
                }
            }
            let leaf = chain[0];
            let lf = self.leaf(leaf)?;
            if lf.lf_depth < di.di_depth && lf.lf_next == 0 {
                self.split_leaf(di, leaf, hash_slot(&e.name, di.di_depth))?;
            } else if di.di_depth < GFS2_DIR_MAX_DEPTH {
                self.double_table(di)?;
            } else {
                return Err(FsError::NoSpace);
            }
        }
    }

    fn leaf_entries(&mut self, leaf: u64, delta: i32) -> Result<()> {
        let mut lf = self.leaf(leaf)?;
        lf.lf_entries = (i32::from(lf.lf_entries) + delta) as u16;
        lf.encode(self.meta_mut(leaf)?);
        Ok(())
    }

    fn new_leaf(&mut self, di: &mut Dinode, depth: u16, entries: &[DirEntryIn]) -> Result<u64> {
        let blk = self.alloc(di.di_num.no_addr, BlockState::Used)?;
        let bs = self.bsize();
        let (sec, nsec) = crate::fs::now();
        let lf = Leaf {
            lf_depth: depth,
            lf_entries: entries.len() as u16,
            lf_dirent_format: GFS2_FORMAT_DE,
            lf_inode: di.di_num.no_addr,
            lf_nsec: nsec,
            lf_sec: sec,
            ..Default::default()
        };
        let region = pack_dirents(entries, bs - Leaf::SIZE)?;
        let b = self.meta_new(blk);
        lf.encode(b);
        b[Leaf::SIZE..].copy_from_slice(&region);
        di.di_blocks += 1;
        Ok(blk)
    }

    fn live_entries(&mut self, r: Region) -> Result<Vec<DirEntryIn>> {
        Ok(self
            .region_entries(r)?
            .into_iter()
            .filter(|e| e.dirent.in_use())
            .map(|e| DirEntryIn {
                name: e.name,
                inum: e.dirent.de_inum,
                de_type: e.dirent.de_type,
            })
            .collect())
    }

    /// Linear → exhash: all entries into one leaf, a stuffed table of
    /// `bsize/16` pointers to it.
    fn make_exhash(&mut self, di: &mut Dinode) -> Result<()> {
        let entries = self.live_entries(Self::stuffed_region(di))?;
        let leaf = self.new_leaf(di, 0, &entries)?;
        let ptrs = self.geo.hash_ptrs() as usize;
        let mut table = vec![0u8; ptrs * 8];
        for i in 0..ptrs {
            table[i * 8..i * 8 + 8].copy_from_slice(&leaf.to_be_bytes());
        }
        let addr = di.di_num.no_addr;
        let p = &mut self.meta_mut(addr)?[Dinode::SIZE..];
        p.fill(0);
        p[..table.len()].copy_from_slice(&table);
        di.di_flags |= dif::EXHASH;
        di.di_depth = ptrs.trailing_zeros() as u16;
        di.di_size = table.len() as u64;
        Ok(())
    }

    /// Splits the leaf serving `slot` into two of one more depth.
    fn split_leaf(&mut self, di: &mut Dinode, leaf: u64, slot: usize) -> Result<()> {
        let mut lf = self.leaf(leaf)?;
        if lf.lf_depth > di.di_depth {
            return Err(FsError::Corrupt(format!(
                "leaf {leaf} deeper than its directory"
            )));
        }
        let span = 1usize << (di.di_depth - lf.lf_depth);
        let start = slot / span * span;
        let half = span / 2;
        let all = self.live_entries(Self::leaf_region(leaf))?;
        let (moved, kept): (Vec<DirEntryIn>, Vec<DirEntryIn>) = all
            .into_iter()
            .partition(|e| hash_slot(&e.name, di.di_depth) >= start + half);
        let new = self.new_leaf(di, lf.lf_depth + 1, &moved)?;
        let bs = self.bsize();
        let region = pack_dirents(&kept, bs - Leaf::SIZE)?;
        lf.lf_depth += 1;
        lf.lf_entries = kept.len() as u16;
        let b = self.meta_mut(leaf)?;
        lf.encode(b);
        b[Leaf::SIZE..].copy_from_slice(&region);
        let mut ptrs = Vec::with_capacity(half * 8);
        for _ in 0..half {
            ptrs.extend_from_slice(&new.to_be_bytes());
        }
        self.dir_data_write(di, ((start + half) * 8) as u64, &ptrs)?;
        Ok(())
    }

    /// Doubles the hash table: each pointer appears twice.
    fn double_table(&mut self, di: &mut Dinode) -> Result<()> {
        let old = self.dir_data_read(di, 0, di.di_size as usize)?;
        let mut new = Vec::with_capacity(old.len() * 2);
        for p in old.chunks(8) {
            new.extend_from_slice(p);
            new.extend_from_slice(p);
        }
        self.dir_data_write(di, 0, &new)?;
        di.di_depth += 1;
        Ok(())
    }

    /// Removes `name`, returning its inum.
    pub fn dir_remove(&mut self, di: &mut Dinode, name: &[u8]) -> Result<Inum> {
        Self::check_dir(di)?;
        if !Self::is_exhash(di) {
            let inum = self
                .region_remove(Self::stuffed_region(di), name)?
                .ok_or(FsError::NotFound)?;
            di.di_entries -= 1;
            return Ok(inum);
        }
        for leaf in self.leaf_chain(di, name)? {
            if let Some(inum) = self.region_remove(Self::leaf_region(leaf), name)? {
                self.leaf_entries(leaf, -1)?;
                di.di_entries -= 1;
                return Ok(inum);
            }
        }
        Err(FsError::NotFound)
    }

    /// Points an existing entry at another inode.
    pub fn dir_set(&mut self, di: &Dinode, name: &[u8], inum: Inum, de_type: u16) -> Result<()> {
        Self::check_dir(di)?;
        let regions: Vec<Region> = if Self::is_exhash(di) {
            self.leaf_chain(di, name)?
                .into_iter()
                .map(Self::leaf_region)
                .collect()
        } else {
            vec![Self::stuffed_region(di)]
        };
        for r in regions {
            if self.region_set(r, name, inum, de_type)? {
                return Ok(());
            }
        }
        Err(FsError::NotFound)
    }

    /// Distinct leaf blocks of an exhash directory (chains included).
    pub fn dir_leaf_blocks(&mut self, di: &Dinode) -> Result<Vec<u64>> {
        let table = self.dir_data_read(di, 0, di.di_size as usize)?;
        let mut out = Vec::new();
        let mut last = 0;
        for p in table.chunks(8).map(|c| be64(c, 0)) {
            if p == last {
                continue;
            }
            last = p;
            let mut next = p;
            while next != 0 {
                out.push(next);
                next = self.leaf(next)?.lf_next;
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn entries_with_cookies(&mut self, regions: &[Region]) -> Result<Vec<ListEntry>> {
        let mut ents: Vec<(u32, Vec<u8>, Inum, u16)> = Vec::new();
        for &r in regions {
            for e in self.region_entries(r)? {
                if e.dirent.in_use() {
                    ents.push((e.dirent.de_hash, e.name, e.dirent.de_inum, e.dirent.de_type));
                }
            }
        }
        ents.sort();
        let mut out = Vec::with_capacity(ents.len());
        let mut ordinal = 0;
        for (i, (hash, name, inum, de_type)) in ents.iter().enumerate() {
            ordinal = if i > 0 && ents[i - 1].0 == *hash {
                ordinal + 1
            } else {
                0
            };
            out.push(ListEntry {
                cookie: cookie(*hash, ordinal),
                inum: *inum,
                de_type: *de_type,
                name: name.clone(),
            });
        }
        Ok(out)
    }

    /// Up to `max` entries whose cookie is greater than `after` (0 = from
    /// the start), in cookie order.
    pub fn dir_list(&mut self, dir: u64, after: u64, max: usize) -> Result<Vec<ListEntry>> {
        let di = self.dinode(dir)?;
        Self::check_dir(&di)?;
        if !Self::is_exhash(&di) {
            let mut all = self.entries_with_cookies(&[Self::stuffed_region(&di)])?;
            all.retain(|e| e.cookie > after);
            all.truncate(max);
            return Ok(all);
        }
        let slots = 1usize << di.di_depth;
        let mut slot = if after == 0 {
            0
        } else {
            hash_slot_of_hash((after >> 16) as u32, di.di_depth)
        };
        let mut out = Vec::new();
        while slot < slots && out.len() < max {
            let leaf = self.table_ptr(&di, slot)?;
            let lf = self.leaf(leaf)?;
            let span = 1usize << (di.di_depth.saturating_sub(lf.lf_depth));
            let mut chain = vec![Self::leaf_region(leaf)];
            let mut next = lf.lf_next;
            while next != 0 {
                chain.push(Self::leaf_region(next));
                next = self.leaf(next)?.lf_next;
            }
            let mut ents = self.entries_with_cookies(&chain)?;
            ents.retain(|e| e.cookie > after);
            out.extend(ents);
            slot = (slot / span + 1) * span;
        }
        out.truncate(max);
        Ok(out)
    }
}

fn hash_slot_of_hash(hash: u32, depth: u16) -> usize {
    (hash >> (32 - u32::from(depth))) as usize
}
