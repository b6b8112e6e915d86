//! A mounted volume: the metadata block cache and its transaction, the
//! resource groups and their allocator, statfs, and the journal.
//!
//! Every metadata change goes through [`Volume::meta_mut`], which marks the
//! cached block dirty; [`Volume::commit`] logs the dirty set to the journal
//! and writes it in place. Regular-file data blocks bypass the cache and are
//! written directly (GFS2's "ordered" data: they reach the disk before the
//! commit that references them, because a commit starts with a flush).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap, FxHashSet};
use std::ops::Range;
use std::sync::Arc;

use thiserror::Error;
use tracing::{info, warn};

use crate::block::{BlockDevice, BlockError};
use crate::dirbuild::DirLayoutError;
use crate::journal::{Journal, JournalError, Replayed};
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
    /// The volume is read-only (a spectator mount).
    #[error("read-only volume")]
    ReadOnly,
    /// The volume withdrew (EIO, as the kernel's gfs2 answers then).
    #[error("withdrawn volume: {0}")]
    Withdrawn(String),
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
    /// The mount asked for a journal that jindex does not have.
    #[error(
        "no journal{jid}: this volume has {journals} journal(s), so jid must be below {journals} \
         (gfs2_jadd adds journals)"
    )]
    NoJournal {
        /// The jid asked for.
        jid: u32,
        /// Journals in jindex.
        journals: u32,
    },
    /// Dirty journals that a spectator mount, which writes nothing, cannot
    /// recover.
    #[error(
        "journal(s) {jids:?} need recovery, which a spectator mount cannot do: \
         mount once with a journal (or run fsck.gfs2) first"
    )]
    RecoveryNeeded {
        /// The dirty journals, by jid.
        jids: Vec<u32>,
    },
    /// In a cluster: the operation must allocate or free in the resource
    /// group with this header block, whose glock it does not hold. Its
    /// changes were undone; the caller retries holding that glock too.
    #[error("resource group {0}: its glock is needed")]
    NeedRgrp(u64),
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
            FsError::ReadOnly | FsError::RecoveryNeeded { .. } => libc::EROFS,
            FsError::NoJournal { .. } => libc::EINVAL,
            FsError::Io(_)
            | FsError::Corrupt(_)
            | FsError::Withdrawn(_)
            | FsError::Journal(_)
            | FsError::Lock(_)
            | FsError::NeedRgrp(_) => libc::EIO,
        }
    }
}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, FsError>;

/// What an operation changed, to undo it on failure.
#[derive(Debug, Default)]
struct Undo {
    blocks: FxHashMap<u64, (Option<Vec<u8>>, bool)>,
    freed: Vec<u64>,
}

/// Clean metadata blocks kept cached before the cache is dropped.
const CACHE_LIMIT: usize = 32 * 1024;

/// What [`Volume::on_withdraw`] calls.
pub type WithdrawHook = Box<dyn FnOnce(&str) + Send>;

/// A mounted volume.
pub struct Volume {
    dev: Arc<dyn BlockDevice>,
    /// Block-size constants.
    pub geo: Geometry,
    /// The superblock.
    pub sb: Superblock,
    cache: FxHashMap<u64, Vec<u8>>,
    dirty: BTreeSet<u64>,
    /// Blocks freed since the last commit: not reused until it is on disk.
    freed: FxHashSet<u64>,
    /// While an operation runs: each block's state before it first changed
    /// (cached contents, was dirty) and the blocks it freed, so a failed
    /// operation can be undone as a whole.
    undo: Option<Undo>,
    rgs: Vec<Rindex>,
    /// Where a search for a new dinode starts when its goal (the parent
    /// directory) lies outside `home`: first `home.start`, then the rgrp
    /// such a search last allocated in.
    rg_cursor: usize,
    /// The block this node last allocated in each rgrp (by header block):
    /// where the next search there starts unless the caller's goal lies
    /// in it (the kernel's `rd_last_alloc`). Without it every create
    /// would scan from its directory's block over all the blocks taken,
    /// or freed and not yet committed, since.
    last_alloc: FxHashMap<u64, u64>,
    /// This node's share of the rgrps: [`home_rgrps`] by journal, or in a
    /// cluster the share that its place among the members gives it.
    home: Home,
    /// In a cluster, while an operation runs: the rgrps (by header block)
    /// whose glocks it holds, the only ones it may allocate or free in
    /// ([`FsError::NeedRgrp`] otherwise). `None`: all of them (alone on
    /// the volume, or under a lock that covers every rgrp).
    rgrps_held: Option<Vec<u64>>,
    /// Our journal (journal `jid`); `None` for a spectator.
    journal: Option<Journal>,
    /// Our journal id, whose `Glock::Journal` we hold EX while mounted;
    /// `None` for a spectator (read-only, no journal) and after unmount.
    jid: Option<u32>,
    /// Journals in jindex.
    journals: u32,
    pub(crate) statfs_addr: u64,
    /// Our `per_node/statfs_change{jid}` dinode (0 for a spectator): where
    /// this node's statfs deltas accumulate until they are folded into
    /// the master statfs file.
    sc_addr: u64,
    locks: Arc<dyn LockManager>,
    withdrawn: Option<String>,
    /// Told once, with the reason, when the volume withdraws.
    on_withdraw: Option<WithdrawHook>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Blocks replayed from dirty journals.
    pub replayed: usize,
    /// Unlinked dinodes reclaimed.
    pub reclaimed: usize,
    /// The journal this mount writes through (`None`: spectator).
    pub jid: Option<u32>,
    /// Journals in jindex.
    pub journals: u32,
    /// The journals found dirty and recovered, by jid.
    pub recovered: Vec<u32>,
}

/// Which dirty journals a mount recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Every dirty journal in jindex: the first mounter of a cluster, or a
    /// `lock_nolock` mount (nobody else can be using the volume).
    All,
    /// Only this node's own journal: a later mounter, which must not touch
    /// a journal that a live node owns.
    Own,
}

/// How a node mounts the volume: which journal it writes through and which
/// journals it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountParams {
    /// This node's journal; `None` mounts as a spectator: read-only, no
    /// journal, nothing ever written to the device.
    pub jid: Option<u32>,
    /// Which dirty journals to recover. A spectator recovers none: with
    /// [`Recovery::All`] it refuses to mount while any journal is dirty.
    pub recover: Recovery,
}

impl MountParams {
    /// `lock_nolock`: journal0, every dirty journal recovered.
    pub const fn nolock() -> Self {
        MountParams {
            jid: Some(0),
            recover: Recovery::All,
        }
    }

    /// A node writing through journal `jid`.
    pub const fn node(jid: u32, recover: Recovery) -> Self {
        MountParams {
            jid: Some(jid),
            recover,
        }
    }

    /// A read-only mount without a journal (`-o spectator`).
    pub const fn spectator(recover: Recovery) -> Self {
        MountParams { jid: None, recover }
    }

    /// True for a spectator mount.
    pub const fn is_spectator(&self) -> bool {
        self.jid.is_none()
    }
}

impl Default for MountParams {
    fn default() -> Self {
        Self::nolock()
    }
}

/// The rgrps where node `jid` of `journals` starts looking for new dinodes:
/// an equal share of the `rgrps`, from `jid * rgrps / journals`, so that
/// nodes creating files do not fight over one rgrp (and its glock).
pub fn home_rgrps(jid: u32, journals: u32, rgrps: usize) -> Range<usize> {
    let journals = journals.max(1) as usize;
    let jid = (jid as usize).min(journals - 1);
    let start = jid * rgrps / journals;
    let end = ((jid + 1) * rgrps / journals).max(start + 1).min(rgrps);
    start..end
}

/// Where a node's new dinodes go first.
#[derive(Debug)]
enum Home {
    /// A run of rgrps (by rindex position): [`home_rgrps`].
    Range(Range<usize>),
    /// The rgrps a cluster's [`RgrpShare`] gives this node.
    Share(Arc<RgrpShare>),
}

/// A cluster's division of the volume among its members: resource group
/// `k` (by rindex position) is member `k % n`'s, by node id, of the `n`
/// members. The DLM places the directory entries of the glocks of the
/// blocks in it on that member (`crate::cluster`), and that member creates
/// its files there, so its new inodes' glocks need no lookup on another
/// node.
///
/// Every member must divide alike: the rindex each read when it mounted
/// is the same (nothing here changes it while mounted), and
/// [`RgrpShare::tag`] lets a mounting node check that against the
/// mounted ones.
#[derive(Debug)]
pub struct RgrpShare {
    /// Each rgrp's header block, in rindex order.
    addrs: Vec<u64>,
    /// The block after the last rgrp.
    end: u64,
    /// This node's place among the members (high half) and how many
    /// there are (low half); 0 members: none known yet.
    place: std::sync::atomic::AtomicU64,
}

impl RgrpShare {
    /// The division of the rgrps `rgs` (the rindex, in order).
    pub fn of_rgrps(rgs: &[Rindex]) -> Option<Self> {
        let last = rgs.last()?;
        Some(Self {
            addrs: rgs.iter().map(|rg| rg.ri_addr).collect(),
            end: last.ri_data0 + u64::from(last.ri_data),
            place: Default::default(),
        })
    }

    /// The rgrp `block` lies in, by rindex position (its key in the DLM's
    /// directory placement); `None` outside every rgrp.
    pub fn key(&self, block: u64) -> Option<u64> {
        if block >= self.end {
            return None;
        }
        let k = self.addrs.partition_point(|&a| a <= block).checked_sub(1)?;
        Some(k as u64)
    }

    /// A nonzero tag that nodes dividing the volume alike share (see
    /// `MountControl::placed`): a hash of the rindex's layout.
    pub fn tag(&self) -> u64 {
        let h = self
            .addrs
            .iter()
            .chain([&self.end])
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &a| {
                (h ^ a).wrapping_mul(0x0000_0100_0000_01b3)
            });
        h | 1 << 63
    }

    /// This node is member `rank` of `members` (sorted by node id).
    pub fn set_place(&self, rank: u32, members: u32) {
        let v = u64::from(rank) << 32 | u64::from(members);
        self.place.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether rgrp `k` (by rindex position, its [`RgrpShare::key`]) is
    /// this node's; every rgrp is while no members are known.
    pub fn holds(&self, k: usize) -> bool {
        let v = self.place.load(std::sync::atomic::Ordering::Relaxed);
        let (rank, members) = (v >> 32, v & 0xffff_ffff);
        members == 0 || k as u64 % members == rank
    }
}

impl Volume {
    /// Opens the volume on `dev` as `lock_nolock` does: journal0, every
    /// dirty journal recovered ([`MountParams::nolock`]).
    pub fn open(
        dev: Arc<dyn BlockDevice>,
        locks: Arc<dyn LockManager>,
    ) -> Result<(Self, MountInfo)> {
        Self::open_with(dev, locks, MountParams::nolock())
    }

    /// Opens the volume on `dev` with journal `params.jid` (its glock held
    /// EX until [`Volume::unmount`]), recovering the dirty journals
    /// `params.recover` says, then reads rindex and statfs.
    pub fn open_with(
        dev: Arc<dyn BlockDevice>,
        locks: Arc<dyn LockManager>,
        params: MountParams,
    ) -> Result<(Self, MountInfo)> {
        let mut sbb = vec![0u8; Superblock::SIZE];
        dev.read_at(crate::ondisk::SB_BYTE_OFFSET, &mut sbb)?;
        let sb = Superblock::decode(&sbb)?;
        let geo = Geometry::new(sb.sb_bsize);
        let mut v = Volume {
            dev,
            geo,
            sb,
            cache: FxHashMap::default(),
            dirty: BTreeSet::new(),
            freed: FxHashSet::default(),
            undo: None,
            rgs: Vec::new(),
            rg_cursor: 0,
            last_alloc: FxHashMap::default(),
            home: Home::Range(0..0),
            rgrps_held: None,
            journal: None,
            jid: None,
            journals: 0,
            statfs_addr: 0,
            sc_addr: 0,
            locks,
            withdrawn: None,
            on_withdraw: None,
        };
        match v.mount(params) {
            Ok(info) => {
                info!(
                    jid = ?info.jid,
                    journals = info.journals,
                    recovered = ?info.recovered,
                    replayed = info.replayed,
                    reclaimed = info.reclaimed,
                    rgrps = v.rgs.len(),
                    "volume mounted"
                );
                Ok((v, info))
            }
            Err(e) => {
                if let Some(jid) = v.jid.take() {
                    v.locks.release(Glock::Journal(jid));
                }
                Err(e)
            }
        }
    }

    /// The mount proper: our journal, recovery, rindex, statfs, and (for
    /// the first mounter) reclaiming unlinked dinodes.
    fn mount(&mut self, params: MountParams) -> Result<MountInfo> {
        let master = self.sb.sb_master_dir.no_addr;
        let jinodes = self.jindex(master)?;
        self.journals = jinodes.len() as u32;
        let mut info = MountInfo {
            replayed: 0,
            reclaimed: 0,
            jid: params.jid,
            journals: self.journals,
            recovered: Vec::new(),
        };
        if let Some(jid) = params.jid {
            let jinode = *jinodes.get(jid as usize).ok_or(FsError::NoJournal {
                jid,
                journals: self.journals,
            })?;
            self.take_own_journal(master, jid, jinode, &mut info)?;
        }
        if params.recover == Recovery::All {
            if params.is_spectator() {
                self.check_journals_clean(&jinodes)?;
            } else {
                for (jid, &jinode) in (0u32..).zip(&jinodes) {
                    if Some(jid) != params.jid {
                        self.recover_other(master, jid, jinode, &mut info)?;
                    }
                }
            }
        }
        self.statfs_addr = self.lookup_system(master, "statfs")?;
        let rindex = self.lookup_system(master, "rindex")?;
        self.load_rindex(rindex)?;
        if let Some(jid) = params.jid {
            let home = home_rgrps(jid, self.journals, self.rgs.len());
            self.rg_cursor = home.start;
            self.home = Home::Range(home);
            // Unlinked dinodes may still be open on another node: only a
            // mounter alone on the volume reclaims them.
            if params.recover == Recovery::All {
                info.reclaimed = self.reclaim_unlinked()?;
            }
            self.commit()?;
        }
        Ok(info)
    }

    /// The journals' dinodes by jid (`jindex/journal0`, `journal1`, ...).
    fn jindex(&mut self, master: u64) -> Result<Vec<u64>> {
        /// More journals than `mkfs.gfs2 -j` allows means a corrupt jindex.
        const MAX_JOURNALS: u32 = 1024;
        let jindex = self.lookup_system(master, "jindex")?;
        let mut jinodes = Vec::new();
        for jid in 0..MAX_JOURNALS {
            let name = format!("journal{jid}");
            match self.dir_lookup(jindex, name.as_bytes())? {
                Some((inum, _)) => jinodes.push(inum.no_addr),
                None => break,
            }
        }
        if jinodes.is_empty() {
            return Err(FsError::Corrupt("system file journal0 missing".into()));
        }
        Ok(jinodes)
    }

    /// The journal whose dinode is `jinode`, with its block map.
    fn load_journal(&mut self, jid: u32, jinode: u64) -> Result<Journal> {
        let map = self.file_block_map(jinode)?;
        if map.is_empty() {
            return Err(FsError::Corrupt(format!("journal{jid} is empty")));
        }
        Ok(Journal::new(jid, jinode, self.bsize(), map))
    }

    /// Replays `j` when dirty; the replay wrote under our cache.
    fn replay_journal(&mut self, j: &mut Journal) -> Result<Replayed> {
        let r = j.replay(self.dev.as_ref());
        self.cache.clear();
        Ok(r?)
    }

    /// Takes journal `jid` as ours: its glock EX (held until unmount), its
    /// `per_node/statfs_change{jid}`, and its recovery when dirty (a node
    /// always recovers its own journal, as the kernel's `init_journal`).
    fn take_own_journal(
        &mut self,
        master: u64,
        jid: u32,
        jinode: u64,
        info: &mut MountInfo,
    ) -> Result<()> {
        self.locks
            .acquire(Glock::Journal(jid), GlockMode::Exclusive)?;
        self.jid = Some(jid);
        self.sc_addr = self.statfs_change_addr(master, jid)?;
        let mut j = self.load_journal(jid, jinode)?;
        let r = self.replay_journal(&mut j);
        self.journal = Some(j);
        let r = r?;
        info.replayed += r.blocks;
        if let Some(head) = r.head {
            self.fold_recovered_statfs(master, jid, &head)?;
            let dev = Arc::clone(&self.dev);
            let j = self.journal.as_mut().expect("our journal is set");
            j.finish_recovery(dev.as_ref())?;
            info.recovered.push(jid);
        }
        Ok(())
    }

    /// Recovers another node's journal when dirty: its glock EX first,
    /// replay, its statfs deltas folded in (committed through our
    /// journal), marked clean, glock released.
    fn recover_other(
        &mut self,
        master: u64,
        jid: u32,
        jinode: u64,
        info: &mut MountInfo,
    ) -> Result<()> {
        self.locks
            .acquire(Glock::Journal(jid), GlockMode::Exclusive)?;
        let res = self.recover_other_locked(master, jid, jinode, info);
        self.locks.release(Glock::Journal(jid));
        res
    }

    fn recover_other_locked(
        &mut self,
        master: u64,
        jid: u32,
        jinode: u64,
        info: &mut MountInfo,
    ) -> Result<()> {
        let mut j = self.load_journal(jid, jinode)?;
        let r = self.replay_journal(&mut j)?;
        info.replayed += r.blocks;
        if let Some(head) = r.head {
            self.fold_recovered_statfs(master, jid, &head)?;
            j.finish_recovery(self.dev.as_ref())?;
            info.recovered.push(jid);
        }
        Ok(())
    }

    /// Recovers journal `jid` of a failed node while this volume is
    /// mounted (lock_dlm's recovery after fencing; the caller holds that
    /// journal's glock in EX): replayed when dirty, its statfs deltas
    /// folded in (committed through our journal), marked clean. The cache
    /// is dropped (the replay wrote under it). Returns blocks replayed.
    pub fn recover_journal(&mut self, jid: u32) -> Result<usize> {
        self.check_writable()?;
        if Some(jid) == self.jid {
            return Err(FsError::Invalid("recover_journal of our own journal"));
        }
        self.commit()?;
        let master = self.sb.sb_master_dir.no_addr;
        let jinodes = self.jindex(master)?;
        let jinode = *jinodes.get(jid as usize).ok_or(FsError::NoJournal {
            jid,
            journals: jinodes.len() as u32,
        })?;
        let mut info = MountInfo {
            replayed: 0,
            reclaimed: 0,
            jid: self.jid,
            journals: self.journals,
            recovered: Vec::new(),
        };
        self.recover_other_locked(master, jid, jinode, &mut info)?;
        self.cache.clear();
        Ok(info.replayed)
    }

    /// Drops every cached metadata block that is not dirty: the kernel's
    /// `go_inval` when a glock goes to UN, after which another node may
    /// change what it covered. A dirty block was changed under a glock
    /// this node still holds in EX (a demote from EX syncs everything
    /// first), so no other node can have changed it. Not while an
    /// operation runs.
    pub fn drop_caches(&mut self) -> Result<()> {
        if self.undo.is_some() {
            return Err(FsError::Invalid("drop_caches inside an operation"));
        }
        let dirty = &self.dirty;
        self.cache.retain(|blk, _| dirty.contains(blk));
        Ok(())
    }

    /// A spectator alone on the volume: every journal must be clean, since
    /// it can replay none. Reads the log heads only.
    fn check_journals_clean(&mut self, jinodes: &[u64]) -> Result<()> {
        let mut dirty = Vec::new();
        for (jid, &jinode) in (0u32..).zip(jinodes) {
            self.locks.acquire(Glock::Journal(jid), GlockMode::Shared)?;
            let head = self
                .load_journal(jid, jinode)
                .and_then(|j| Ok(j.find_log_head(self.dev.as_ref())?));
            self.locks.release(Glock::Journal(jid));
            if head?.lh_flags & log_head::UNMOUNT == 0 {
                dirty.push(jid);
            }
        }
        if dirty.is_empty() {
            Ok(())
        } else {
            Err(FsError::RecoveryNeeded { jids: dirty })
        }
    }

    /// `per_node/statfs_change{jid}`, which must be stuffed.
    fn statfs_change_addr(&mut self, master: u64, jid: u32) -> Result<u64> {
        let per_node = self.lookup_system(master, "per_node")?;
        let addr = self.lookup_system(per_node, &format!("statfs_change{jid}"))?;
        if self.dinode(addr)?.di_height != 0 {
            return Err(FsError::Corrupt(format!(
                "statfs_change{jid} is not stuffed"
            )));
        }
        Ok(addr)
    }

    /// A recovered journal's statfs deltas folded into the master statfs
    /// and committed through our journal before that journal is marked
    /// clean: the kernel's `recover_local_statfs`, then `clean_journal`.
    fn fold_recovered_statfs(&mut self, master: u64, jid: u32, head: &LogHeader) -> Result<()> {
        self.recover_local_statfs(master, jid, head)?;
        self.commit()
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
        // Bounded by the device: a damaged size must not make the read
        // allocate without limit.
        if di.di_size > self.dev.size() {
            return Err(FsError::Corrupt(format!("rindex size {}", di.di_size)));
        }
        let data = self.read_file(rindex, 0, di.di_size as usize)?;
        if data.len() % Rindex::SIZE != 0 || data.is_empty() {
            return Err(FsError::Corrupt(format!("rindex size {}", data.len())));
        }
        let dev_blocks = self.dev.size() / self.geo.bsize as u64;
        let mut rgs = Vec::new();
        for rec in data.chunks(Rindex::SIZE) {
            let ri = Rindex::decode(rec)?;
            let bits = u64::from(ri.ri_bitbytes) * 4;
            // Header and bitmaps before the data, the data on the device:
            // scans of a group's bitmap stay bounded by the device size.
            let inside = ri
                .ri_addr
                .checked_add(u64::from(ri.ri_length))
                .is_some_and(|e| e <= ri.ri_data0)
                && ri
                    .ri_data0
                    .checked_add(u64::from(ri.ri_data))
                    .is_some_and(|e| e <= dev_blocks);
            if bits < u64::from(ri.ri_data) || ri.ri_length == 0 || !inside {
                return Err(FsError::Corrupt(format!(
                    "rindex entry at {} is inconsistent",
                    ri.ri_addr
                )));
            }
            rgs.push(ri);
        }
        rgs.sort_by_key(|r| r.ri_addr);
        // Groups do not overlap, so all of them together span the device
        // at most once.
        for w in rgs.windows(2) {
            if w[0].ri_data0 + u64::from(w[0].ri_data) > w[1].ri_addr {
                return Err(FsError::Corrupt(format!(
                    "rindex entries at {} and {} overlap",
                    w[0].ri_addr, w[1].ri_addr
                )));
            }
        }
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

    /// The journal this mount writes through; `None` for a spectator (and
    /// once unmounted).
    pub fn jid(&self) -> Option<u32> {
        self.jid
    }

    /// Journals in jindex.
    pub fn journals(&self) -> u32 {
        self.journals
    }

    /// Whether rgrp `i` (by rindex position) is in this node's share,
    /// where its new dinodes go first.
    pub fn is_home(&self, i: usize) -> bool {
        match &self.home {
            Home::Range(r) => r.contains(&i),
            Home::Share(share) => i < self.rgs.len() && share.holds(i),
        }
    }

    /// From now on this node's share of the rgrps is `share`'s (in a
    /// cluster: those whose glocks' directory entries live here).
    pub fn share_rgrps(&mut self, share: Arc<RgrpShare>) {
        self.home = Home::Share(share);
    }

    // -----------------------------------------------------------------
    // Withdraw.

    /// Stops all further changes, keeping what is on disk, and says why
    /// (the log and the hook given to [`Volume::on_withdraw`]).
    pub fn withdraw(&mut self, why: &str) {
        if self.withdrawn.is_none() {
            warn!(why, "withdrawing: no further writes to the volume");
            self.withdrawn = Some(why.to_string());
            self.dirty.clear();
            self.cache.clear();
            if let Some(hook) = self.on_withdraw.take() {
                hook(why);
            }
        }
    }

    /// Calls `hook` when the volume withdraws (at once if it has): a
    /// cluster mount stops asking for locks and leaves the lockspace, so
    /// that another node replays this node's journal. It runs with the
    /// filesystem locked, so no write of this node can follow it.
    pub fn on_withdraw(&mut self, hook: WithdrawHook) {
        match &self.withdrawn {
            Some(why) => hook(why),
            None => self.on_withdraw = Some(hook),
        }
    }

    /// Why the volume withdrew, if it did.
    pub fn withdrawn(&self) -> Option<&str> {
        self.withdrawn.as_deref()
    }

    /// Refuses changes on a withdrawn volume (EIO) and on a mount without
    /// a journal (spectator, or unmounted: EROFS).
    pub(crate) fn check_writable(&self) -> Result<()> {
        if let Some(why) = &self.withdrawn {
            return Err(FsError::Withdrawn(why.clone()));
        }
        if self.jid.is_none() {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // Metadata cache.

    fn load(&mut self, blk: u64) -> Result<()> {
        if !self.cache.contains_key(&blk) {
            let b = self.read_block(blk)?;
            self.cache.insert(blk, b);
        }
        Ok(())
    }

    /// Block `blk` as the device has it (no cache).
    fn read_block(&self, blk: u64) -> Result<Vec<u8>> {
        self.check_block(blk)?;
        let mut b = vec![0u8; self.bsize()];
        self.dev.read_at(blk * self.geo.bsize as u64, &mut b)?;
        Ok(b)
    }

    /// A metadata block, read through the cache.
    pub fn meta(&mut self, blk: u64) -> Result<&[u8]> {
        self.load(blk)?;
        Ok(&self.cache[&blk])
    }

    /// A block read under no glock known to cover it (an inode number
    /// learnt earlier, whose block may belong to another inode by now): the
    /// cached copy if there is one, else the device's, which is not kept.
    /// In a cluster a cached block must have been read under a glock held
    /// ever since; another node may have given this block to an inode
    /// whose glock we do not hold, its new contents not yet in place.
    pub fn peek(&self, blk: u64) -> Result<std::borrow::Cow<'_, [u8]>> {
        if let Some(b) = self.cache.get(&blk) {
            return Ok(std::borrow::Cow::Borrowed(b));
        }
        Ok(std::borrow::Cow::Owned(self.read_block(blk)?))
    }

    /// Whether `blk` is in the cache.
    pub fn is_cached(&self, blk: u64) -> bool {
        self.cache.contains_key(&blk)
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
        self.write_data_blocks(blk, buf)
    }

    /// Writes whole data blocks `blk`, `blk + 1`, ... directly to the
    /// device in one write (`buf` holds a whole number of blocks).
    pub fn write_data_blocks(&mut self, blk: u64, buf: &[u8]) -> Result<()> {
        let bs = self.geo.bsize as usize;
        debug_assert_eq!(buf.len() % bs, 0);
        self.check_writable()?;
        for b in blk..blk + buf.len().div_ceil(bs) as u64 {
            self.check_block(b)?;
            self.cache.remove(&b);
        }
        Ok(self.dev.write_at(blk * bs as u64, buf)?)
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

    /// Commits the transaction through our journal, then in place. Its
    /// log header carries our unfolded statfs deltas (`lh_local_*`). With
    /// nothing to commit this is a no-op, on a spectator mount too.
    pub fn commit(&mut self) -> Result<()> {
        if self.dirty.is_empty() && self.withdrawn.is_none() {
            self.freed.clear();
            return Ok(());
        }
        self.check_writable()?;
        let local = self.local_statfs()?;
        let blocks: BTreeMap<u64, Vec<u8>> = self
            .dirty
            .iter()
            .map(|b| (*b, self.cache[b].clone()))
            .collect();
        let journal = self
            .journal
            .as_mut()
            .expect("journal loaded before changes");
        journal.set_local_statfs(self.sc_addr, local);
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

    /// The filesystem's `go_sync`, run before a glock goes to another
    /// node: commits the running transaction (log, flush, in place,
    /// flush), then empties our log with a lone `GFS2_LOG_HEAD_FLUSH_NORMAL`
    /// header whose `lh_tail` is its own block, carrying our unfolded
    /// statfs deltas in `lh_local_*` as every header does. After it no
    /// recovery of our journal replays a block, so none can overwrite a
    /// newer copy written by the node the glock goes to (GFS2 gets this
    /// from its log flush and AIL flush moving the tail on). Writes
    /// nothing when nothing is dirty and the log is already empty; a
    /// spectator writes nothing either.
    pub fn sync_for_demote(&mut self) -> Result<()> {
        self.commit()?;
        if self.journal.as_ref().is_none_or(Journal::is_log_empty) {
            return Ok(());
        }
        self.check_writable()?;
        let local = self.local_statfs()?;
        let dev = Arc::clone(&self.dev);
        let journal = self.journal.as_mut().expect("checked above");
        journal.set_local_statfs(self.sc_addr, local);
        if let Err(e) = journal.empty_log(dev.as_ref()) {
            self.withdraw(&format!("journal log flush failed: {e}"));
            return Err(e.into());
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

    /// Commits, folds our statfs deltas into the master statfs file,
    /// writes the UNMOUNT log header in our journal, flushes and releases
    /// our journal's glock. A spectator writes nothing.
    pub fn unmount(&mut self) -> Result<()> {
        let Some(jid) = self.jid else {
            info!("spectator volume unmounted");
            return Ok(());
        };
        self.commit()?;
        self.statfs_sync()?;
        let local = self.local_statfs()?;
        if let Some(j) = self.journal.as_mut() {
            j.set_local_statfs(self.sc_addr, local);
            j.write_header(self.dev.as_ref(), log_head::UNMOUNT)?;
        }
        self.journal = None;
        self.jid = None;
        self.locks.release(Glock::Journal(jid));
        info!(jid, "volume unmounted cleanly");
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
        self.rgrp_permitted(i)?;
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
        self.statfs_change(0, dfree, ddinodes)
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

    /// Allocates one block near `goal` and marks it `state`. The search
    /// starts in `goal`'s rgrp, except for a new dinode whose goal (the
    /// parent directory) lies outside this node's share of the rgrps: that
    /// one starts at `rg_cursor`, so that nodes do not fight over one rgrp.
    pub fn alloc(&mut self, goal: u64, state: BlockState) -> Result<u64> {
        self.alloc_gen(goal, state).map(|(blk, _)| blk)
    }

    /// Allocates a new dinode near `goal`: its block and its generation,
    /// which is also its formal inode number (as the kernel numbers them;
    /// no file that every node writes on each create).
    pub fn alloc_dinode(&mut self, goal: u64) -> Result<(u64, u64)> {
        self.alloc_gen(goal, BlockState::Dinode)
    }

    fn alloc_gen(&mut self, goal: u64, state: BlockState) -> Result<(u64, u64)> {
        self.check_writable()?;
        let dinode = state == BlockState::Dinode;
        let near_goal = self.rg_index(goal).filter(|&i| !dinode || self.is_home(i));
        let start = near_goal.unwrap_or(self.rg_cursor);
        let n = self.rgs.len();
        // A dinode goes in this node's share first, then anywhere.
        let passes: &[Option<bool>] = if dinode {
            &[Some(true), Some(false)]
        } else {
            &[None]
        };
        for &home in passes {
            for k in 0..n {
                let i = (start + k) % n;
                if home.is_some_and(|h| self.is_home(i) != h) {
                    continue;
                }
                let rg = self.rgs[i];
                // A file's data goes on from its goal; a dinode (whose
                // goal, its directory, only chose the rgrp) after the
                // last block taken here.
                let from = if k == 0 && !dinode && rg.contains_data(goal) {
                    goal
                } else {
                    self.last_alloc
                        .get(&rg.ri_addr)
                        .map(|b| b + 1)
                        .filter(|&b| rg.contains_data(b))
                        .unwrap_or(rg.ri_data0)
                };
                if let Some(got) = self.alloc_in(i, from, state)? {
                    if near_goal.is_none() {
                        self.rg_cursor = i;
                    }
                    return Ok(got);
                }
            }
        }
        Err(FsError::NoSpace)
    }

    fn alloc_in(&mut self, i: usize, from: u64, state: BlockState) -> Result<Option<(u64, u64)>> {
        let rg = self.rgs[i];
        if self.rgrp_free_hint(i)? == 0 {
            return Ok(None);
        }
        self.rgrp_permitted(i)?;
        self.locks
            .acquire(Glock::Rgrp(rg.ri_addr), GlockMode::Exclusive)?;
        let res = self.alloc_locked(i, from, state);
        self.locks.release(Glock::Rgrp(rg.ri_addr));
        res
    }

    /// [`Volume::alloc_in`] under the rgrp's lock: the block, and for a
    /// dinode its generation (the rgrp's `rg_igeneration`, never 0, as
    /// `gfs2_alloc_blocks` hands them out).
    fn alloc_locked(
        &mut self,
        i: usize,
        from: u64,
        state: BlockState,
    ) -> Result<Option<(u64, u64)>> {
        let rg = self.rgs[i];
        let mut found = self.find_free(&rg, from)?;
        if found.is_none() && from > rg.ri_data0 {
            found = self.find_free(&rg, rg.ri_data0)?;
        }
        let Some(blk) = found else { return Ok(None) };
        self.set_bits(blk, state)?;
        self.last_alloc.insert(rg.ri_addr, blk);
        let dinode = state == BlockState::Dinode;
        self.adjust(i, -1, i64::from(dinode))?;
        let mut generation = 0;
        if dinode {
            let addr = rg.ri_addr;
            let mut h = self.rgrp_header(i)?;
            generation = h.rg_igeneration;
            if generation == 0 {
                generation = 1;
            }
            h.rg_igeneration = generation + 1;
            h.encode(self.meta_mut(addr)?);
        }
        Ok(Some((blk, generation)))
    }

    /// Free blocks in rgrp `i`: from the cache when the running operation
    /// holds its glock; otherwise read past the cache (a hint whether to
    /// ask for the glock, which must not leave a block in the cache that
    /// no glock of ours covers).
    fn rgrp_free_hint(&mut self, i: usize) -> Result<u32> {
        if self.rgrp_permitted(i).is_ok() {
            return Ok(self.rgrp_header(i)?.rg_free);
        }
        let addr = self.rgs[i].ri_addr;
        let mut b = vec![0u8; self.bsize()];
        self.dev.read_at(addr * self.geo.bsize as u64, &mut b)?;
        let rg = Rgrp::decode(&b).map_err(|e| FsError::Corrupt(format!("rgrp {addr}: {e}")))?;
        Ok(rg.rg_free)
    }

    /// In a cluster: whether the running operation holds rgrp `i`'s glock.
    fn rgrp_permitted(&self, i: usize) -> Result<()> {
        match &self.rgrps_held {
            Some(held) if !held.contains(&self.rgs[i].ri_addr) => {
                Err(FsError::NeedRgrp(self.rgs[i].ri_addr))
            }
            _ => Ok(()),
        }
    }

    /// In a cluster: the rgrps whose glocks the next operations hold (see
    /// [`FsError::NeedRgrp`]); `None` permits every rgrp. A few at a
    /// time, set around every operation: kept in a list that is reused.
    pub fn set_rgrps_held(&mut self, held: Option<&[u64]>) {
        match (held, &mut self.rgrps_held) {
            (None, h) => *h = None,
            (Some(new), Some(h)) => {
                h.clear();
                h.extend_from_slice(new);
            }
            (Some(new), h) => *h = Some(new.to_vec()),
        }
    }

    /// The resource group holding `blk`, by header block.
    pub fn rgrp_of(&self, blk: u64) -> Option<u64> {
        self.rg_index(blk).map(|i| self.rgs[i].ri_addr)
    }

    fn find_free(&mut self, rg: &Rindex, from: u64) -> Result<Option<u64>> {
        // The low bit of every two-bit entry: an entry is free (0) when
        // neither of its bits is set.
        const LOW: u64 = 0x5555_5555_5555_5555;
        let end = rg.ri_data0 + u64::from(rg.ri_data);
        let mut blk = from;
        while blk < end {
            let (bblk, mut off, mut shift) = self.bit_location(rg, blk);
            self.load(bblk)?;
            let bits = &self.cache[&bblk];
            if off >= bits.len() {
                return Err(FsError::Corrupt(format!("bitmap block {bblk} too short")));
            }
            while off < bits.len() && blk < end {
                if shift == 0 && blk + 32 <= end && off + 8 <= bits.len() {
                    let w = u64::from_le_bytes(bits[off..off + 8].try_into().expect("8 bytes"));
                    if (w | w >> 1) & LOW == LOW {
                        // 32 blocks, none free.
                        off += 8;
                        blk += 32;
                        continue;
                    }
                }
                if BlockState::from_bits(bits[off] >> shift) == BlockState::Free
                    && !self.freed.contains(&blk)
                {
                    return Ok(Some(blk));
                }
                blk += 1;
                shift += 2;
                if shift == 8 {
                    shift = 0;
                    off += 1;
                }
            }
        }
        Ok(None)
    }

    /// Frees `blk`; it becomes reusable after the next commit.
    pub fn free(&mut self, blk: u64) -> Result<()> {
        let i = self
            .rg_index(blk)
            .ok_or_else(|| FsError::Corrupt(format!("freeing block {blk} outside rgrps")))?;
        self.rgrp_permitted(i)?;
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
        let i = self
            .rg_index(blk)
            .ok_or_else(|| FsError::Corrupt(format!("dinode {blk} not in any rgrp")))?;
        self.rgrp_permitted(i)?;
        self.set_bits(blk, state)?;
        Ok(())
    }

    // -----------------------------------------------------------------
    // statfs: the master file plus per-node statfs_change{jid} deltas.

    /// Totals (total, free, dinodes): the master statfs file plus this
    /// node's deltas not yet folded into it (the kernel's `gfs2_statfs_i`).
    pub fn statfs(&mut self) -> Result<StatfsChange> {
        let m = self.master_statfs()?;
        let l = self.local_statfs()?;
        Ok(StatfsChange {
            sc_total: m.sc_total + l.sc_total,
            sc_free: m.sc_free + l.sc_free,
            sc_dinodes: m.sc_dinodes + l.sc_dinodes,
        })
    }

    /// The master statfs file as cached.
    pub fn master_statfs(&mut self) -> Result<StatfsChange> {
        let sa = self.statfs_addr;
        Ok(StatfsChange::decode(&self.meta(sa)?[Dinode::SIZE..])?)
    }

    /// This node's deltas in `per_node/statfs_change{jid}` (zero for a
    /// spectator).
    pub fn local_statfs(&mut self) -> Result<StatfsChange> {
        let a = self.sc_addr;
        if a == 0 {
            return Ok(StatfsChange::default());
        }
        Ok(StatfsChange::decode(&self.meta(a)?[Dinode::SIZE..])?)
    }

    /// Adds deltas to this node's `statfs_change{jid}` in the running
    /// transaction (the kernel's `gfs2_statfs_change`): allocations never
    /// write the master statfs file that every node shares.
    fn statfs_change(&mut self, total: i64, free: i64, dinodes: i64) -> Result<()> {
        let a = self.sc_addr;
        let b = &mut self.meta_mut(a)?[Dinode::SIZE..];
        let mut sc = StatfsChange::decode(b)?;
        sc.sc_total += total;
        sc.sc_free += free;
        sc.sc_dinodes += dinodes;
        sc.encode(b);
        Ok(())
    }

    /// Folds this node's deltas into the master statfs file and zeroes its
    /// `statfs_change{jid}`, in one commit under the master statfs inode's
    /// glock EX (the kernel's `gfs2_statfs_sync` / `update_statfs`). Runs
    /// at unmount; a no-op without deltas or without a journal.
    pub fn statfs_sync(&mut self) -> Result<()> {
        if self.jid.is_none() {
            return Ok(());
        }
        let local = self.local_statfs()?;
        if local == StatfsChange::default() {
            return Ok(());
        }
        let sa = self.statfs_addr;
        self.locks.acquire(Glock::Inode(sa), GlockMode::Exclusive)?;
        let res = self.fold_local_statfs(local).and_then(|()| self.commit());
        self.locks.release(Glock::Inode(sa));
        res
    }

    fn fold_local_statfs(&mut self, local: StatfsChange) -> Result<()> {
        let sa = self.statfs_addr;
        // Another node may have folded its own deltas in since we read the
        // master: read it afresh unless this transaction changed it.
        if !self.dirty.contains(&sa) {
            self.cache.remove(&sa);
        }
        let b = &mut self.meta_mut(sa)?[Dinode::SIZE..];
        let mut m = StatfsChange::decode(b)?;
        m.sc_total += local.sc_total;
        m.sc_free += local.sc_free;
        m.sc_dinodes += local.sc_dinodes;
        m.encode(b);
        let a = self.sc_addr;
        self.meta_mut(a)?[Dinode::SIZE..Dinode::SIZE + StatfsChange::SIZE].fill(0);
        Ok(())
    }

    /// Frees every dinode left Unlinked (by a crash while files were open).
    fn reclaim_unlinked(&mut self) -> Result<usize> {
        let mut found = Vec::new();
        for i in 0..self.rgs.len() {
            found.extend(self.unlinked_in(i)?);
        }
        for &blk in &found {
            self.dealloc_inode(blk)?;
            self.maybe_commit()?;
        }
        Ok(found.len())
    }

    /// The header blocks of every resource group, in order.
    pub fn rgrp_addrs(&self) -> Vec<u64> {
        self.rgs.iter().map(|rg| rg.ri_addr).collect()
    }

    /// The dinodes that the resource group at `rg_addr` marks unlinked:
    /// removed while open, and not freed yet (in a cluster the operation
    /// must hold that rgrp's glock).
    pub fn unlinked_dinodes(&mut self, rg_addr: u64) -> Result<Vec<u64>> {
        let i = self
            .rgs
            .iter()
            .position(|rg| rg.ri_addr == rg_addr)
            .ok_or_else(|| FsError::Corrupt(format!("no resource group at block {rg_addr}")))?;
        self.rgrp_permitted(i)?;
        self.unlinked_in(i)
    }

    fn unlinked_in(&mut self, i: usize) -> Result<Vec<u64>> {
        let rg = self.rgs[i];
        let end = rg.ri_data0 + u64::from(rg.ri_data);
        let mut found = Vec::new();
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
        Ok(found)
    }

    /// The inum of a dinode block.
    pub fn inum_of(&mut self, addr: u64) -> Result<Inum> {
        Ok(self.dinode(addr)?.di_num)
    }
}
