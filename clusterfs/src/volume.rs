//! A mounted volume: the metadata block cache and its transaction, the
//! resource groups and their allocator, statfs, and the journal.
//!
//! Every metadata change goes through [`Volume::meta_mut`], which marks the
//! cached block dirty; [`Volume::commit`] logs the dirty set to the journal
//! and writes it in place. Regular-file data blocks bypass the cache and are
//! written directly (GFS2's "ordered" data: they reach the disk before the
//! commit that references them, because a commit starts with a flush).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use thiserror::Error;
use tracing::{info, warn};

use crate::block::{BlockDevice, BlockError};
use crate::dirbuild::DirLayoutError;
use crate::journal::{Journal, JournalError};
use crate::lock::{Glock, GlockMode, LockError, LockManager};
use crate::ondisk::{
    bitmap_position, log_head, BlockState, Dinode, Geometry, Inum, LogHeader, OndiskError, Rgrp,
    Rindex, StatfsChange, Superblock,
};

/// Errors of the filesystem core. [`FsError::errno`] maps them for FUSE.
#[derive(Debug, Error)]
pub enum FsError {
    /// No such entry.
    #[error("not found")]
    NotFound,
    /// The name exists.
    #[error("already exists")]
    Exists,
    /// Not a directory.
    #[error("not a directory")]
    NotDir,
    /// Is a directory.
    #[error("is a directory")]
    IsDir,
    /// Directory not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// Name longer than 255 bytes.
    #[error("name too long")]
    NameTooLong,
    /// Out of space.
    #[error("no space left")]
    NoSpace,
    /// Invalid argument.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Operation not supported.
    #[error("not supported")]
    NotSupported,
    /// No such attribute.
    #[error("no such attribute")]
    NoData,
    /// Buffer too small / value too large.
    #[error("out of range")]
    Range,
    /// Too many links.
    #[error("too many links")]
    TooManyLinks,
    /// Operation not permitted.
    #[error("operation not permitted")]
    NotPermitted,
    /// Permission denied.
    #[error("permission denied")]
    PermissionDenied,
    /// The volume is read-only or withdrawn.
    #[error("read-only or withdrawn volume")]
    ReadOnly,
    /// Device failure.
    #[error("I/O error: {0}")]
    Io(#[from] BlockError),
    /// Inconsistent on-disk data: the volume withdraws.
    #[error("corrupt filesystem: {0}")]
    Corrupt(String),
    /// Journal failure.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// Lock manager failure.
    #[error("lock: {0}")]
    Lock(#[from] LockError),
}

impl From<OndiskError> for FsError {
    fn from(e: OndiskError) -> Self {
        FsError::Corrupt(e.to_string())
    }
}

impl From<DirLayoutError> for FsError {
    fn from(e: DirLayoutError) -> Self {
        FsError::Corrupt(e.to_string())
    }
}

impl FsError {
    /// The errno to report.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::NotPermitted => libc::EPERM,
            FsError::PermissionDenied => libc::EACCES,
            FsError::ReadOnly => libc::EROFS,
            FsError::Io(_) | FsError::Corrupt(_) | FsError::Journal(_) | FsError::Lock(_) => {
                libc::EIO
            }
        }
    }
}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, FsError>;

/// What an operation changed, to undo it on failure.
#[derive(Debug, Default)]
struct Undo {
    blocks: HashMap<u64, (Option<Vec<u8>>, bool)>,
    freed: Vec<u64>,
}

/// Clean metadata blocks kept cached before the cache is dropped.
const CACHE_LIMIT: usize = 32 * 1024;

/// A mounted volume.
pub struct Volume {
    dev: Arc<dyn BlockDevice>,
    /// Block-size constants.
    pub geo: Geometry,
    /// The superblock.
    pub sb: Superblock,
    cache: HashMap<u64, Vec<u8>>,
    dirty: BTreeSet<u64>,
    /// Blocks freed since the last commit: not reused until it is on disk.
    freed: HashSet<u64>,
    /// While an operation runs: each block's state before it first changed
    /// (cached contents, was dirty) and the blocks it freed, so a failed
    /// operation can be undone as a whole.
    undo: Option<Undo>,
    rgs: Vec<Rindex>,
    rg_cursor: usize,
    journal: Option<Journal>,
    pub(crate) statfs_addr: u64,
    pub(crate) inum_addr: u64,
    locks: Arc<dyn LockManager>,
    withdrawn: Option<String>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("bsize", &self.geo.bsize)
            .field("rgrps", &self.rgs.len())
            .finish()
    }
}

/// What mounting found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountInfo {
    /// Blocks replayed from a dirty journal.
    pub replayed: usize,
    /// Unlinked dinodes reclaimed.
    pub reclaimed: usize,
}

impl Volume {
    /// Opens the volume on `dev`: superblock, master directory, journal 0
    /// (replayed when dirty), rindex and statfs.
    pub fn open(
        dev: Arc<dyn BlockDevice>,
        locks: Arc<dyn LockManager>,
    ) -> Result<(Self, MountInfo)> {
        let mut sbb = vec![0u8; Superblock::SIZE];
        dev.read_at(crate::ondisk::SB_BYTE_OFFSET, &mut sbb)?;
        let sb = Superblock::decode(&sbb)?;
        let geo = Geometry::new(sb.sb_bsize);
        let mut v = Volume {
            dev,
            geo,
            sb,
            cache: HashMap::new(),
            dirty: BTreeSet::new(),
            freed: HashSet::new(),
            undo: None,
            rgs: Vec::new(),
            rg_cursor: 0,
            journal: None,
            statfs_addr: 0,
            inum_addr: 0,
            locks,
            withdrawn: None,
        };
        let master = v.sb.sb_master_dir.no_addr;
        let replayed = v.recover_journals(master)?;
        v.statfs_addr = v.lookup_system(master, "statfs")?;
        v.inum_addr = v.lookup_system(master, "inum")?;
        let rindex = v.lookup_system(master, "rindex")?;
        v.load_rindex(rindex)?;
        let reclaimed = v.reclaim_unlinked()?;
        v.commit()?;
        info!(replayed, reclaimed, rgrps = v.rgs.len(), "volume mounted");
        Ok((
            v,
            MountInfo {
                replayed,
                reclaimed,
            },
        ))
    }

    /// Recovers every journal (as the first mounter does), keeping
    /// journal0, whose glock stays held, as ours. Returns blocks replayed.
    fn recover_journals(&mut self, master: u64) -> Result<usize> {
        /// More journals than `mkfs.gfs2 -j` allows means a corrupt jindex.
        const MAX_JOURNALS: u32 = 1024;
        let jindex = self.lookup_system(master, "jindex")?;
        let mut replayed = 0;
        for jid in 0..MAX_JOURNALS {
            let name = format!("journal{jid}");
            let Some((inum, _)) = self.dir_lookup(jindex, name.as_bytes())? else {
                if jid == 0 {
                    return Err(FsError::Corrupt("system file journal0 missing".into()));
                }
                break;
            };
            let map = self.file_block_map(inum.no_addr)?;
            let mut j = Journal::new(jid, inum.no_addr, self.bsize(), map);
            self.locks
                .acquire(Glock::Journal(jid), GlockMode::Exclusive)?;
            let r = j.replay(self.dev.as_ref());
            // Replay wrote under the cache.
            self.cache.clear();
            let r = r?;
            replayed += r.blocks;
            // A dirty journal's statfs deltas are folded in and committed
            // (through journal0, recovered first) before it is marked
            // clean: the kernel's recover_local_statfs, then clean_journal.
            if jid == 0 {
                self.journal = Some(j);
                if let Some(head) = r.head {
                    self.recover_local_statfs(master, jid, &head)?;
                    self.commit()?;
                    let dev = Arc::clone(&self.dev);
                    let j0 = self.journal.as_mut().expect("journal0 set");
                    j0.finish_recovery(dev.as_ref())?;
                }
            } else if let Some(head) = r.head {
                self.recover_local_statfs(master, jid, &head)?;
                self.commit()?;
                j.finish_recovery(self.dev.as_ref())?;
            }
            if jid != 0 {
                self.locks.release(Glock::Journal(jid));
            }
        }
        Ok(replayed)
    }

    /// Adds a recovered head's `lh_local_*` deltas to the master statfs
    /// file and zeroes that journal's `per_node/statfs_change{jid}`.
    fn recover_local_statfs(&mut self, master: u64, jid: u32, head: &LogHeader) -> Result<()> {
        let at = Dinode::SIZE;
        if head.lh_local_total != 0 || head.lh_local_free != 0 || head.lh_local_dinodes != 0 {
            let statfs = self.lookup_system(master, "statfs")?;
            let b = self.meta_mut(statfs)?;
            let mut sc = StatfsChange::decode(&b[at..])?;
            sc.sc_total += head.lh_local_total;
            sc.sc_free += head.lh_local_free;
            sc.sc_dinodes += head.lh_local_dinodes;
            sc.encode(&mut b[at..]);
            info!(
                jid,
                total = head.lh_local_total,
                free = head.lh_local_free,
                dinodes = head.lh_local_dinodes,
                "folded the recovered journal's statfs changes into the master statfs"
            );
        }
        let per_node = self.lookup_system(master, "per_node")?;
        let name = format!("statfs_change{jid}");
        if let Some((inum, _)) = self.dir_lookup(per_node, name.as_bytes())? {
            if self.dinode(inum.no_addr)?.di_height != 0 {
                warn!(jid, "statfs_change file is not stuffed; left as it is");
                return Ok(());
            }
            let local = self.meta(inum.no_addr)?;
            if local[at..at + StatfsChange::SIZE].iter().any(|&x| x != 0) {
                self.meta_mut(inum.no_addr)?[at..at + StatfsChange::SIZE].fill(0);
            }
        }
        Ok(())
    }

    fn lookup_system(&mut self, dir: u64, name: &str) -> Result<u64> {
        match self.dir_lookup(dir, name.as_bytes())? {
            Some((inum, _)) => Ok(inum.no_addr),
            None => Err(FsError::Corrupt(format!("system file {name} missing"))),
        }
    }

    fn load_rindex(&mut self, rindex: u64) -> Result<()> {
        let di = self.dinode(rindex)?;
        let data = self.read_file(rindex, 0, di.di_size as usize)?;
        if data.len() % Rindex::SIZE != 0 || data.is_empty() {
            return Err(FsError::Corrupt(format!("rindex size {}", data.len())));
        }
        let mut rgs = Vec::new();
        for rec in data.chunks(Rindex::SIZE) {
            let ri = Rindex::decode(rec)?;
            let bits = u64::from(ri.ri_bitbytes) * 4;
            if bits < u64::from(ri.ri_data) || ri.ri_length == 0 {
                return Err(FsError::Corrupt(format!(
                    "rindex entry at {} is inconsistent",
                    ri.ri_addr
                )));
            }
            rgs.push(ri);
        }
        rgs.sort_by_key(|r| r.ri_addr);
        self.rgs = rgs;
        Ok(())
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// The lock manager.
    pub fn locks(&self) -> &Arc<dyn LockManager> {
        &self.locks
    }

    /// Block size in bytes.
    pub fn bsize(&self) -> usize {
        self.geo.bsize as usize
    }

    /// Resource groups.
    pub fn rgrps(&self) -> &[Rindex] {
        &self.rgs
    }

    // -----------------------------------------------------------------
    // Withdraw.

    /// Stops all further changes, keeping what is on disk, and says why.
    pub fn withdraw(&mut self, why: &str) {
        if self.withdrawn.is_none() {
            warn!(
                why,
                "withdrawing: the volume is inconsistent, no further writes"
            );
            self.withdrawn = Some(why.to_string());
            self.dirty.clear();
            self.cache.clear();
        }
    }

    /// Why the volume withdrew, if it did.
    pub fn withdrawn(&self) -> Option<&str> {
        self.withdrawn.as_deref()
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.withdrawn.is_some() {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // Metadata cache.

    fn load(&mut self, blk: u64) -> Result<()> {
        if !self.cache.contains_key(&blk) {
            if blk >= self.dev.size() / self.geo.bsize as u64 {
                return Err(FsError::Corrupt(format!(
                    "block {blk} is past the end of the device"
                )));
            }
            let mut b = vec![0u8; self.bsize()];
            self.dev.read_at(blk * self.geo.bsize as u64, &mut b)?;
            self.cache.insert(blk, b);
        }
        Ok(())
    }

    /// A metadata block, read through the cache.
    pub fn meta(&mut self, blk: u64) -> Result<&[u8]> {
        self.load(blk)?;
        Ok(&self.cache[&blk])
    }

    fn remember(&mut self, blk: u64) {
        let Some(u) = self.undo.as_mut() else { return };
        if let std::collections::hash_map::Entry::Vacant(e) = u.blocks.entry(blk) {
            e.insert((self.cache.get(&blk).cloned(), self.dirty.contains(&blk)));
        }
    }

    /// Starts an operation whose metadata changes are undone by
    /// [`Volume::abort_op`] if it fails.
    pub fn begin_op(&mut self) {
        self.undo = Some(Undo::default());
    }

    /// Keeps the operation's changes in the running transaction.
    pub fn end_op(&mut self) {
        self.undo = None;
    }

    /// Undoes every metadata change since [`Volume::begin_op`] (data blocks
    /// written meanwhile are in blocks that become free again).
    pub fn abort_op(&mut self) {
        let Some(u) = self.undo.take() else { return };
        for (blk, (content, was_dirty)) in u.blocks {
            match content {
                Some(c) => {
                    self.cache.insert(blk, c);
                }
                None => {
                    self.cache.remove(&blk);
                }
            }
            if was_dirty {
                self.dirty.insert(blk);
            } else {
                self.dirty.remove(&blk);
            }
        }
        for blk in u.freed {
            self.freed.remove(&blk);
        }
    }

    /// A metadata block to change in this transaction.
    pub fn meta_mut(&mut self, blk: u64) -> Result<&mut [u8]> {
        self.check_writable()?;
        self.load(blk)?;
        self.remember(blk);
        self.dirty.insert(blk);
        Ok(self.cache.get_mut(&blk).expect("loaded"))
    }

    /// A fresh zeroed metadata block in this transaction.
    pub fn meta_new(&mut self, blk: u64) -> &mut [u8] {
        self.remember(blk);
        self.dirty.insert(blk);
        let bs = self.bsize();
        let b = self.cache.entry(blk).or_default();
        b.clear();
        b.resize(bs, 0);
        b
    }

    fn forget_block(&mut self, blk: u64) {
        self.remember(blk);
        self.cache.remove(&blk);
        self.dirty.remove(&blk);
    }

    fn check_block(&self, blk: u64) -> Result<()> {
        if blk >= self.dev.size() / self.geo.bsize as u64 {
            return Err(FsError::Corrupt(format!(
                "block {blk} is past the end of the device"
            )));
        }
        Ok(())
    }

    /// Reads a data block directly from the device.
    pub fn read_data_block(&mut self, blk: u64, buf: &mut [u8]) -> Result<()> {
        self.check_block(blk)?;
        if let Some(b) = self.cache.get(&blk) {
            buf.copy_from_slice(b);
            return Ok(());
        }
        Ok(self.dev.read_at(blk * self.geo.bsize as u64, buf)?)
    }

    /// Reads `buf.len() / bsize` consecutive data blocks from `blk` in one
    /// device read (blocks held in the cache are taken from there).
    pub fn read_data_blocks(&mut self, blk: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.geo.bsize as usize;
        let n = (buf.len() / bs) as u64;
        debug_assert_eq!(buf.len() % bs, 0);
        for b in blk..blk + n {
            self.check_block(b)?;
        }
        if (blk..blk + n).any(|b| self.cache.contains_key(&b)) {
            for (i, chunk) in buf.chunks_exact_mut(bs).enumerate() {
                self.read_data_block(blk + i as u64, chunk)?;
            }
            return Ok(());
        }
        Ok(self.dev.read_at(blk * bs as u64, buf)?)
    }

    /// Writes a data block directly to the device.
    pub fn write_data_block(&mut self, blk: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.check_block(blk)?;
        self.cache.remove(&blk);
        Ok(self.dev.write_at(blk * self.geo.bsize as u64, buf)?)
    }

    /// Reads and decodes a dinode.
    pub fn dinode(&mut self, addr: u64) -> Result<Dinode> {
        let b = self.meta(addr)?;
        Dinode::decode(b).map_err(|e| FsError::Corrupt(format!("dinode {addr}: {e}")))
    }

    /// Writes a dinode header back (payload untouched).
    pub fn put_dinode(&mut self, di: &Dinode) -> Result<()> {
        let b = self.meta_mut(di.di_num.no_addr)?;
        di.encode(b);
        Ok(())
    }

    /// Dirty metadata blocks waiting for a commit.
    pub fn dirty_blocks(&self) -> usize {
        self.dirty.len()
    }

    /// Commits the transaction: journal, then in place.
    pub fn commit(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.dirty.is_empty() {
            self.freed.clear();
            return Ok(());
        }
        let blocks: BTreeMap<u64, Vec<u8>> = self
            .dirty
            .iter()
            .map(|b| (*b, self.cache[b].clone()))
            .collect();
        let journal = self
            .journal
            .as_mut()
            .expect("journal loaded before changes");
        let res = journal.commit(self.dev.as_ref(), &blocks);
        if let Err(e) = res {
            self.withdraw(&format!("journal commit failed: {e}"));
            return Err(e.into());
        }
        self.dirty.clear();
        self.freed.clear();
        // What is committed can no longer be undone.
        if self.undo.is_some() {
            self.undo = Some(Undo::default());
        }
        if self.cache.len() > CACHE_LIMIT {
            self.cache.clear();
        }
        Ok(())
    }

    /// Commits when the transaction is getting large for the journal.
    pub fn maybe_commit(&mut self) -> Result<()> {
        let limit = self
            .journal
            .as_ref()
            .map(|j| j.max_commit_blocks() / 4)
            .unwrap_or(64);
        if self.dirty.len() >= limit.max(16) {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits, writes the UNMOUNT log header and flushes.
    pub fn unmount(&mut self) -> Result<()> {
        self.commit()?;
        if let Some(j) = self.journal.as_mut() {
            j.write_header(self.dev.as_ref(), log_head::UNMOUNT)?;
        }
        self.locks.release(Glock::Journal(0));
        info!("volume unmounted cleanly");
        Ok(())
    }

    // -----------------------------------------------------------------
    // Resource groups and allocation.

    fn rg_index(&self, blk: u64) -> Option<usize> {
        let i = self.rgs.partition_point(|r| r.ri_addr <= blk);
        if i == 0 {
            return None;
        }
        self.rgs[i - 1].contains_data(blk).then_some(i - 1)
    }

    fn bit_location(&self, rg: &Rindex, blk: u64) -> (u64, usize, u32) {
        let (idx, off, shift) = bitmap_position(&self.geo, blk - rg.ri_data0);
        (rg.ri_addr + idx as u64, off, shift)
    }

    /// The bitmap state of `blk`.
    pub fn block_state(&mut self, blk: u64) -> Result<BlockState> {
        let i = self
            .rg_index(blk)
            .ok_or_else(|| FsError::Corrupt(format!("block {blk} not in any rgrp")))?;
        let rg = self.rgs[i];
        let (bblk, off, shift) = self.bit_location(&rg, blk);
        let b = self.meta(bblk)?;
        Ok(BlockState::from_bits(b[off] >> shift))
    }

    fn rgrp_header(&mut self, i: usize) -> Result<Rgrp> {
        let addr = self.rgs[i].ri_addr;
        let b = self.meta(addr)?;
        Rgrp::decode(b).map_err(|e| FsError::Corrupt(format!("rgrp {addr}: {e}")))
    }

    fn adjust(&mut self, i: usize, dfree: i64, ddinodes: i64) -> Result<()> {
        let addr = self.rgs[i].ri_addr;
        let mut rg = self.rgrp_header(i)?;
        rg.rg_free = (i64::from(rg.rg_free) + dfree) as u32;
        rg.rg_dinodes = (i64::from(rg.rg_dinodes) + ddinodes) as u32;
        rg.encode(self.meta_mut(addr)?);
        let sa = self.statfs_addr;
        let b = self.meta_mut(sa)?;
        let mut sc = StatfsChange::decode(&b[Dinode::SIZE..])?;
        sc.sc_free += dfree;
        sc.sc_dinodes += ddinodes;
        sc.encode(&mut b[Dinode::SIZE..]);
        Ok(())
    }

    fn set_bits(&mut self, blk: u64, state: BlockState) -> Result<BlockState> {
        let i = self
            .rg_index(blk)
            .ok_or_else(|| FsError::Corrupt(format!("block {blk} not in any rgrp")))?;
        let rg = self.rgs[i];
        let (bblk, off, shift) = self.bit_location(&rg, blk);
        let b = self.meta_mut(bblk)?;
        let old = BlockState::from_bits(b[off] >> shift);
        b[off] = (b[off] & !(3 << shift)) | ((state as u8) << shift);
        Ok(old)
    }

    /// Allocates one block near `goal` and marks it `state`.
    pub fn alloc(&mut self, goal: u64, state: BlockState) -> Result<u64> {
        self.check_writable()?;
        let start = self.rg_index(goal).unwrap_or(self.rg_cursor);
        let n = self.rgs.len();
        for k in 0..n {
            let i = (start + k) % n;
            let from = if k == 0 && self.rgs[i].contains_data(goal) {
                goal
            } else {
                self.rgs[i].ri_data0
            };
            if let Some(blk) = self.alloc_in(i, from, state)? {
                self.rg_cursor = i;
                return Ok(blk);
            }
        }
        Err(FsError::NoSpace)
    }

    fn alloc_in(&mut self, i: usize, from: u64, state: BlockState) -> Result<Option<u64>> {
        let rg = self.rgs[i];
        if self.rgrp_header(i)?.rg_free == 0 {
            return Ok(None);
        }
        self.locks
            .acquire(Glock::Rgrp(rg.ri_addr), GlockMode::Exclusive)?;
        let mut found = self.find_free(&rg, from)?;
        if found.is_none() && from > rg.ri_data0 {
            found = self.find_free(&rg, rg.ri_data0)?;
        }
        let res = match found {
            Some(blk) => {
                self.set_bits(blk, state)?;
                let dd = i64::from(state == BlockState::Dinode);
                self.adjust(i, -1, dd)?;
                Some(blk)
            }
            None => None,
        };
        self.locks.release(Glock::Rgrp(rg.ri_addr));
        Ok(res)
    }

    fn find_free(&mut self, rg: &Rindex, from: u64) -> Result<Option<u64>> {
        let end = rg.ri_data0 + u64::from(rg.ri_data);
        let mut blk = from;
        while blk < end {
            let (bblk, off, shift) = self.bit_location(rg, blk);
            let byte = self.meta(bblk)?[off];
            if shift == 0 && byte & 0x55 == 0x55 && blk + 4 <= end {
                // All four blocks of this byte are in use (or unlinked).
                blk += 4;
                continue;
            }
            if BlockState::from_bits(byte >> shift) == BlockState::Free
                && !self.freed.contains(&blk)
            {
                return Ok(Some(blk));
            }
            blk += 1;
        }
        Ok(None)
    }

    /// Frees `blk`; it becomes reusable after the next commit.
    pub fn free(&mut self, blk: u64) -> Result<()> {
        let i = self
            .rg_index(blk)
            .ok_or_else(|| FsError::Corrupt(format!("freeing block {blk} outside rgrps")))?;
        let old = self.set_bits(blk, BlockState::Free)?;
        if old == BlockState::Free {
            self.withdraw(&format!("block {blk} freed twice"));
            return Err(FsError::Corrupt(format!("block {blk} freed twice")));
        }
        let dd = if matches!(old, BlockState::Dinode | BlockState::Unlinked) {
            -1
        } else {
            0
        };
        self.adjust(i, 1, dd)?;
        self.forget_block(blk);
        self.freed.insert(blk);
        if let Some(u) = self.undo.as_mut() {
            u.freed.push(blk);
        }
        Ok(())
    }

    /// Changes a dinode's bitmap state between Dinode and Unlinked.
    pub fn mark_dinode(&mut self, blk: u64, state: BlockState) -> Result<()> {
        self.set_bits(blk, state)?;
        Ok(())
    }

    /// Hands out the next formal inode number (kept in the `inum` file).
    pub fn next_formal_ino(&mut self) -> Result<u64> {
        let a = self.inum_addr;
        let b = self.meta_mut(a)?;
        let n = crate::ondisk::be64(b, Dinode::SIZE);
        crate::ondisk::put64(b, Dinode::SIZE, n + 1);
        Ok(n)
    }

    /// Totals from the statfs file: (total, free, dinodes).
    pub fn statfs(&mut self) -> Result<StatfsChange> {
        let sa = self.statfs_addr;
        let b = self.meta(sa)?;
        Ok(StatfsChange::decode(&b[Dinode::SIZE..])?)
    }

    /// Frees every dinode left Unlinked (by a crash while files were open).
    fn reclaim_unlinked(&mut self) -> Result<usize> {
        let mut found = Vec::new();
        for i in 0..self.rgs.len() {
            let rg = self.rgs[i];
            let end = rg.ri_data0 + u64::from(rg.ri_data);
            let mut blk = rg.ri_data0;
            while blk < end {
                let (bblk, off, _) = self.bit_location(&rg, blk);
                let byte = self.meta(bblk)?[off];
                // Only the high bit of a pair set and the low one clear is
                // "unlinked" (binary 10); skip bytes without one.
                if byte & 0xaa & !(byte << 1) == 0 {
                    blk += 4;
                    continue;
                }
                for k in 0..4u64.min(end - blk) {
                    if BlockState::from_bits(byte >> (2 * k)) == BlockState::Unlinked {
                        found.push(blk + k);
                    }
                }
                blk += 4;
            }
        }
        for &blk in &found {
            self.dealloc_inode(blk)?;
            self.maybe_commit()?;
        }
        Ok(found.len())
    }

    /// The inum of a dinode block.
    pub fn inum_of(&mut self, addr: u64) -> Result<Inum> {
        Ok(self.dinode(addr)?.di_num)
    }
}
