//! Mounting a `lock_dlm` volume in a cluster: the part of `mount.clusterfs`
//! that talks to the node's cmand and the DLM.
//!
//! [`ClusterMount::join`] checks the volume's lock table (`CLUSTER:FSNAME`)
//! against the running cluster (its name, quorum; the volume not mounted
//! on this node already), joins the DLM lockspace FSNAME with membership
//! from cmand's process group `dlm:ls:FSNAME`, learns this node's journal
//! id (lockspace slot − 1) and waits until no failed node awaits fencing.
//! [`ClusterMount::mount_shared`] then runs lock_dlm's mount protocol
//! ([`MountControl`]: the first mounter replays every dirty journal, a
//! later one its own) and returns the FUSE adapter in cluster mode.
//!
//! **Locking.** Every operation takes the glocks of what it touches
//! (`LockPlan` in the FUSE adapter): its inodes, SH to read and EX to
//! change, then the resource groups it allocates or frees in, in GFS2's
//! order (the rename glock, inodes by number, rgrps by number); a
//! rename between directories takes the rename glock first. A node keeps
//! glocks cached until another asks. Giving one up from EX syncs (the
//! journal is committed, written in place and its log emptied,
//! `sync_for_demote`), and giving one up at all drops the node's clean
//! cached blocks and makes the kernel forget the inode's attributes. The
//! kernel keeps attributes (for a second at most), never names (a path
//! walk looks each name up) nor file pages (direct I/O). An
//! operation that finds it must allocate or free in an rgrp whose glock
//! it lacks is undone and retried holding it; each node starts its
//! searches in its own share of the rgrps, so nodes seldom meet there.
//! Inodes open on a node hold its iopen glock in SH, and keep it cached
//! after the last close, so an inode unlinked elsewhere is freed by the
//! last node to close it or to give that glock up when the unlinker's
//! refused request reaches it.
//!
//! **Failures.** A failed node's journal is replayed by a survivor after
//! cmand fenced it, while new lock requests wait. The mount writes its PID
//! into the node's state directory (`mount.clusterfs.PID.pid`), so
//! `fence_lab` kills it with its node, and it stops writing the moment its
//! connection to cmand breaks ([`WriteGate`]): a node whose cmand is gone
//! is about to be fenced, and another node will replay its journal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cman::api::Client;
use cman::dlm_membership::{group_name, CmanMembership};
use dlm::plock::Kind;
use dlm::{Dlm, DlmConfig, Lockspace, NodeId, PlockReq, RecoverOps};

use fuser::Errno;

use crate::block::{BlockDevice, BlockError, Result as BlockResult};
use crate::fs::FileSystem;
use crate::fuse::{ClusterHooks, DeleteQueue, FuseFs, Guard, KernelCache, LockPlan, LockRequest};
use crate::glock::{GlockConfig, GlockName, GlockState, GlockType, HolderFlags};
use crate::lock::LockError;
use crate::lock_dlm::{
    DlmGlocks, GlockGuard, GlockOps, GlockSet, JournalRecovery, MountControl, MountRole,
};
use crate::volume::{Recovery, RgrpShare};

/// The kernel DLM's port; a lockspace's processes listen near it.
pub const DLM_BASE_PORT: u16 = 21064;

/// How long to wait for cmand's group and the DLM's first recovery.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors joining the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The superblock's lock table is not `CLUSTER:FSNAME`.
    #[error("lock table {0:?} is not CLUSTER:FSNAME (mkfs.gfs2 -t)")]
    LockTable(String),
    /// No cmand answers in the state directory.
    #[error("no cmand on this node ({dir}: {why}); start the cluster first (service cman start)")]
    NoCmand {
        /// The state directory.
        dir: PathBuf,
        /// What failed.
        why: String,
    },
    /// The volume belongs to another cluster.
    #[error("the volume belongs to cluster {volume:?}, but this node is in cluster {running:?}")]
    WrongCluster {
        /// From the lock table.
        volume: String,
        /// cmand's cluster name.
        running: String,
    },
    /// This node has the volume mounted already.
    #[error("{0} is already mounted on this node")]
    AlreadyMounted(String),
    /// The cluster has no quorum.
    #[error("cluster {0:?} is not quorate: nothing is mounted without quorum")]
    NoQuorum(String),
    /// Joining the lockspace failed.
    #[error("joining lockspace {fsname:?}: {why}")]
    Join {
        /// The lockspace.
        fsname: String,
        /// What failed.
        why: String,
    },
}

/// Splits a lock table `CLUSTER:FSNAME`.
pub fn parse_locktable(table: &str) -> Result<(String, String), ClusterError> {
    match table.split_once(':') {
        Some((c, f)) if !c.is_empty() && !f.is_empty() && !f.contains(':') => {
            Ok((c.to_string(), f.to_string()))
        }
        _ => Err(ClusterError::LockTable(table.to_string())),
    }
}

/// The port a lockspace's processes listen on unless told otherwise:
/// above the kernel DLM's, spread by name so that two file systems
/// mounted on one node do not collide.
pub fn default_port(fsname: &str) -> u16 {
    DLM_BASE_PORT + 1 + (crc32fast::hash(fsname.as_bytes()) % 1024) as u16
}

/// Once closed, every write and flush fails: the node lost its cmand and
/// must not touch shared storage again (the mount then withdraws).
#[derive(Debug, Default)]
pub struct WriteGate {
    closed: AtomicBool,
}

impl WriteGate {
    /// Stops all writes for good.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A device whose writes go through a [`WriteGate`].
pub struct GatedDevice {
    dev: Arc<dyn BlockDevice>,
    gate: Arc<WriteGate>,
}

impl GatedDevice {
    /// Wraps `dev`.
    pub fn new(dev: Arc<dyn BlockDevice>, gate: Arc<WriteGate>) -> GatedDevice {
        GatedDevice { dev, gate }
    }

    fn check(&self, op: &'static str, offset: u64) -> BlockResult<()> {
        if self.gate.is_closed() {
            return Err(BlockError::Io {
                op,
                offset,
                source: std::io::Error::other("this node lost its cluster membership"),
            });
        }
        Ok(())
    }
}

impl BlockDevice for GatedDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
        self.dev.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> BlockResult<()> {
        self.check("write", offset)?;
        self.dev.write_at(offset, buf)
    }

    fn flush(&self) -> BlockResult<()> {
        self.check("flush", 0)?;
        self.dev.flush()
    }

    fn size(&self) -> u64 {
        self.dev.size()
    }
}

/// How to join.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// The node's cmand state directory.
    pub state_dir: PathBuf,
    /// The volume's lock table.
    pub locktable: String,
    /// The lockspace's port; [`default_port`] when `None`.
    pub port: Option<u16>,
    /// Where to serve the counters as `GET /metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The volume's division among the members, read from its rindex
    /// before joining: where the DLM places its glocks' directory entries
    /// ([`placement`]) and where this node creates files. `None`: hashed,
    /// as the kernel's DLM places them.
    pub share: Option<Arc<RgrpShare>>,
    /// The glocks' tunables (`-o glock_cache=N` sets how many unused
    /// glocks stay cached).
    pub glocks: GlockConfig,
}

/// The DLM directory placement of a volume divided by `share`: the
/// glocks of inodes, iopens and rgrps by the division block their number
/// falls in ([`RgrpShare::key`]), so the member whose share that block is
/// keeps them; the others by a hash of their name.
pub fn placement(share: Arc<RgrpShare>) -> dlm::Placement {
    dlm::Placement::keyed(move |name| {
        let g = GlockName::from_dlm_name(name)?;
        match g.kind {
            GlockType::Inode | GlockType::Rgrp | GlockType::Iopen => share.key(g.number),
            _ => None,
        }
    })
}

/// Recovery hooks that, at the end of each recovery, also tell the
/// volume's division this node's place among the members.
struct PlacingOps {
    inner: Arc<dyn RecoverOps>,
    share: Arc<RgrpShare>,
    me: NodeId,
}

impl RecoverOps for PlacingOps {
    fn recover_prep(&self) {
        self.inner.recover_prep();
    }

    fn recover_slot(&self, node: NodeId, slot: u32) {
        self.inner.recover_slot(node, slot);
    }

    fn recover_done(&self, gen: u64, slots: &[(NodeId, u32)], our_slot: u32) {
        // Sorted by node id, as the DLM's members are.
        let mut members: Vec<NodeId> = slots.iter().map(|&(n, _)| n).collect();
        members.sort();
        if let Some(rank) = members.iter().position(|&n| n == self.me) {
            self.share.set_place(rank as u32, members.len() as u32);
        }
        self.inner.recover_done(gen, slots, our_slot);
    }
}

/// A node's membership of a volume's lockspace, holding the volume.
pub struct ClusterMount {
    /// This node's journal.
    pub jid: u32,
    /// Closed when cmand is lost.
    pub gate: Arc<WriteGate>,
    /// The cluster's name.
    pub cluster: String,
    /// The lockspace (file system) name.
    pub fsname: String,
    pid_file: PathBuf,
    ctl: Arc<MountControl>,
    held: Option<Held>,
    slot: Option<Arc<FsSlot>>,
    ls: Lockspace,
    share: Option<Arc<RgrpShare>>,
    glock_config: GlockConfig,
    _dlm: Dlm,
    _membership: Arc<CmanMembership>,
}

/// What a mounted node holds in the lockspace: its journal's glock, and
/// the glocks (declared in this order: the journal's guard goes first).
struct Held {
    _own_journal: Option<GlockGuard>,
    _glocks: Arc<DlmGlocks>,
}

impl ClusterMount {
    /// Joins the cluster and takes the volume (see the module docs).
    pub fn join(opts: &JoinOptions) -> Result<ClusterMount, ClusterError> {
        let (cluster, fsname) = parse_locktable(&opts.locktable)?;
        check_cluster(&opts.state_dir, &cluster, &fsname)?;
        let join_err = |why: String| ClusterError::Join {
            fsname: fsname.clone(),
            why,
        };
        let m = CmanMembership::join(&opts.state_dir, &group_name(&fsname), JOIN_TIMEOUT)
            .map_err(|e| join_err(e.to_string()))?;
        let gate = Arc::new(WriteGate::default());
        {
            let gate = gate.clone();
            m.on_lost(Box::new(move || {
                tracing::error!("lost cmand: no more writes to the volume (withdraw)");
                gate.close();
            }));
        }
        let port = opts.port.unwrap_or_else(|| default_port(&fsname));
        let peers = m.peer_addrs(port);
        let me = m.dlm_node();
        let listen: SocketAddr = *peers
            .get(&me)
            .ok_or_else(|| join_err("this node is not named by an IP address".into()))?;
        let mut config = DlmConfig::new(
            me,
            listen,
            peers,
            cman::authkey::load_for_dlm(&opts.state_dir, &cluster)
                .map_err(|e| join_err(e.to_string()))?,
        );
        // `dlm_tool lockdump FSNAME` and `plocks` read it, as on a node
        // with the kernel's DLM.
        config.ctl_dir = Some(opts.state_dir.clone());
        config.metrics = opts.metrics;
        let dlm = Dlm::start(config).map_err(|e| join_err(format!("dlm on {listen}: {e}")))?;
        let (ctl, join) = match &opts.share {
            Some(share) => {
                let ctl = MountControl::placed(share.tag());
                let ops = Arc::new(PlacingOps {
                    inner: ctl.ops(),
                    share: share.clone(),
                    me,
                });
                let placement = placement(share.clone());
                (
                    ctl,
                    dlm::JoinOptions {
                        ops: Some(ops),
                        placement,
                    },
                )
            }
            None => {
                let ctl = MountControl::new();
                let ops = Some(ctl.ops());
                (
                    ctl,
                    dlm::JoinOptions {
                        ops,
                        ..Default::default()
                    },
                )
            }
        };
        let ls = dlm
            .join_with(&fsname, m.as_ref(), join)
            .map_err(|e| join_err(e.to_string()))?;
        wait_running(&ls).map_err(join_err)?;
        let slot = ls.slot();
        let jid = slot
            .checked_sub(1)
            .ok_or_else(|| join_err("no slot".into()))?;
        // A node that failed before we joined the lockspace was never a
        // member of it with us, so the DLM did not wait for its fencing:
        // we do, before touching its journal.
        wait_fenced(&opts.state_dir, &cluster)?;
        let pid_file = opts
            .state_dir
            .join(format!("mount.clusterfs.{}.pid", std::process::id()));
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            tracing::warn!(file = %pid_file.display(), error = %e,
                "cannot register with the node's fencing");
        }
        tracing::info!(%cluster, %fsname, jid, "joined the cluster");
        Ok(ClusterMount {
            jid,
            gate,
            cluster,
            fsname,
            pid_file,
            ctl,
            held: None,
            slot: None,
            ls,
            share: opts.share.clone(),
            glock_config: opts.glocks,
            _dlm: dlm,
            _membership: m,
        })
    }
}

impl ClusterMount {
    /// Mounts the volume shared with the other nodes: lock_dlm's mount
    /// protocol (`MountControl`), during which `mount_fs` mounts the file
    /// system recovering what this node must (every dirty journal for the
    /// first mounter, else its own); then the FUSE adapter with every
    /// operation under the cluster lock. `journals`: journals on the
    /// volume. A `spectator` takes no journal and recovers none (its
    /// `mount_fs` must mount read-only without one, refusing dirty
    /// journals when told [`Recovery::All`]).
    pub fn mount_shared(
        &mut self,
        journals: u32,
        spectator: bool,
        mount_fs: impl FnOnce(Recovery) -> Result<FileSystem, String>,
    ) -> Result<FuseFs, ClusterError> {
        let join_err = |why: String| ClusterError::Join {
            fsname: self.fsname.clone(),
            why,
        };
        let slot = Arc::new(FsSlot::default());
        let ops: Arc<dyn GlockOps> = slot.clone();
        let glocks = Arc::new(DlmGlocks::new(self.ls.clone(), ops, self.glock_config));
        let recovery: Arc<dyn JournalRecovery> = slot.clone();
        let (role, own, fs) = self
            .ctl
            .mount(
                self.ls.clone(),
                glocks.clone(),
                recovery,
                (!spectator).then_some(self.jid),
                journals,
                |role| {
                    let rec = match role {
                        MountRole::First => Recovery::All,
                        MountRole::Joined => Recovery::Own,
                    };
                    mount_fs(rec).map_err(LockError::Unavailable)
                },
            )
            .map_err(|e| join_err(e.to_string()))?;
        let mut fs = fs;
        // What the mount read was read without the cluster lock.
        fs.drop_caches().map_err(|e| join_err(e.to_string()))?;
        if let Some(share) = &self.share {
            fs.volume().share_rgrps(share.clone());
        }
        fs.volume().on_withdraw(self.withdraw_hook(&glocks));
        let hooks = Arc::new(Hooks {
            glocks: glocks.clone(),
            spectator,
            slot: slot.clone(),
            locks: Plocks::new(self.ls.clone()),
        });
        let statfs = fs.statfs_inode();
        glocks.taken_by_recovery(inode(statfs));
        let fuse = FuseFs::new(fs).with_cluster(hooks);
        let _ = slot.fs.set(fuse.shared());
        let _ = slot.kernel.set(fuse.kernel_cache());
        if let Some(q) = fuse.delete_queue() {
            let _ = slot.deletes.set(q);
        }
        self.slot = Some(slot.clone());
        let _ = slot.glocks.set((Arc::downgrade(&glocks), statfs));
        if spectator {
            tracing::info!(
                ?role,
                "mounted in the cluster as a spectator (read-only, no journal)"
            );
        } else {
            tracing::info!(?role, jid = self.jid, "mounted in the cluster");
        }
        self.held = Some(Held {
            _own_journal: own,
            _glocks: glocks,
        });
        Ok(fuse)
    }
}

impl ClusterMount {
    /// What a withdraw does in a cluster (the volume calls it with the
    /// filesystem locked, so no write of ours follows): the write gate
    /// closes; the glocks stop talking to the DLM, so that no glock whose
    /// changes may not be in place goes to another node; and this node
    /// leaves the volume's group, so that the others' lockspace recovers
    /// without it and one of them replays our journal before granting
    /// what we held. Operations fail with EIO from then on.
    fn withdraw_hook(&self, glocks: &Arc<DlmGlocks>) -> crate::volume::WithdrawHook {
        let gate = self.gate.clone();
        let glocks = Arc::downgrade(glocks);
        let membership = self._membership.clone();
        let fsname = self.fsname.clone();
        Box::new(move |why: &str| {
            gate.close();
            if let Some(g) = glocks.upgrade() {
                g.withdraw(why);
            }
            tracing::error!(
                %fsname,
                why,
                "withdrawn: leaving the lockspace, so that another node replays this node's journal"
            );
            membership.leave();
        })
    }
}

impl Drop for ClusterMount {
    fn drop(&mut self) {
        // The glocks go with `held` (their worker syncs and unlocks what is
        // cached; the file system is unmounted by then).
        if let Some(slot) = &self.slot {
            let n = |a: &[std::sync::atomic::AtomicU64; 3], i: usize| a[i].load(Ordering::Relaxed);
            tracing::info!(
                inode_syncs = n(&slot.syncs, 0),
                inode_invalidations = n(&slot.invals, 0),
                rgrp_syncs = n(&slot.syncs, 1),
                rgrp_invalidations = n(&slot.invals, 1),
                other_syncs = n(&slot.syncs, 2),
                "glocks given up to other nodes while mounted"
            );
        }
        self.held = None;
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// The rename glock: cross-directory renames, which may change the tree's
/// shape.
const RENAME_LOCK: GlockName = GlockName {
    kind: GlockType::Nondisk,
    number: crate::glock::nondisk::RENAME,
};

fn inode(ino: u64) -> GlockName {
    GlockName {
        kind: GlockType::Inode,
        number: ino,
    }
}

fn rgrp(addr: u64) -> GlockName {
    GlockName {
        kind: GlockType::Rgrp,
        number: addr,
    }
}

fn iopen(ino: u64) -> GlockName {
    GlockName {
        kind: GlockType::Iopen,
        number: ino,
    }
}

/// The mounted file system, once there, for the glock worker and the
/// recovery thread.
#[derive(Default)]
struct FsSlot {
    fs: OnceLock<Arc<parking_lot::Mutex<Option<FileSystem>>>>,
    /// The glocks (weak: they own this slot) and the master statfs
    /// inode, whose glock recovery takes to fold a journal's statfs in.
    glocks: OnceLock<(std::sync::Weak<DlmGlocks>, u64)>,
    /// The kernel's caches of the mount.
    kernel: OnceLock<Arc<KernelCache>>,
    /// Inodes whose iopen glock another node wants in EX, for the mount
    /// to free if unlinked.
    deletes: OnceLock<Arc<DeleteQueue>>,
    /// Demotes seen, logged at unmount: syncs and invalidations of inode,
    /// rgrp and other glocks.
    syncs: [std::sync::atomic::AtomicU64; 3],
    invals: [std::sync::atomic::AtomicU64; 3],
    /// Failed nodes' journals this node replayed.
    recovered: std::sync::atomic::AtomicU64,
}

fn kind_index(kind: GlockType) -> usize {
    match kind {
        GlockType::Inode => 0,
        GlockType::Rgrp => 1,
        _ => 2,
    }
}

impl FsSlot {
    fn with<T>(&self, f: impl FnOnce(&mut FileSystem) -> T) -> Option<T> {
        let shared = self.fs.get()?;
        let mut g = shared.lock();
        g.as_mut().map(f)
    }
}

impl GlockOps for FsSlot {
    fn sync(&self, name: GlockName) {
        // What a glock covers, changed here, must be on disk before another
        // node may read it; the journal is emptied so that replaying it
        // later can never write an old copy over a newer one. (The rename
        // glock covers the tree's shape: the `..` entries a rename changed.)
        if !self.caches(name) {
            return;
        }
        self.syncs[kind_index(name.kind)].fetch_add(1, Ordering::Relaxed);
        self.with(|fs| {
            if let Err(e) = fs.sync_for_demote() {
                // The glock must not go to another node with our changes
                // perhaps half in place: withdrawing keeps it from the
                // DLM, and our journal's replay elsewhere completes them.
                tracing::error!(error = %e, "sync before giving the volume up failed");
                fs.volume()
                    .withdraw(&format!("sync before a demote failed: {e}"));
            }
        });
    }

    fn caches(&self, name: GlockName) -> bool {
        matches!(name.kind, GlockType::Inode | GlockType::Rgrp) || name == RENAME_LOCK
    }

    fn callback(&self, name: GlockName, held: GlockState, wanted: GlockState) {
        // The kernel's `iopen_go_callback`: a node that would free the
        // inode asks for EX while we cache SH (or EX: we made the inode,
        // or freed the one that was there before). We give it up (nobody
        // here has the file open, or the last close lets it go) and then
        // look whether it is unlinked: the last node to give it up frees
        // it. (A node that makes a new inode where we freed one asks for
        // EX too: we look, and find it linked.)
        if name.kind == GlockType::Iopen && held != GlockState::Un && wanted == GlockState::Ex {
            tracing::debug!(ino = name.number, ?held, "iopen wanted in EX elsewhere");
            if let Some(q) = self.deletes.get() {
                q.push(name.number);
            }
        }
    }

    fn invalidate(&self, name: GlockName, keep_metadata: bool) {
        // Dropping every clean block, not just this glock's, keeps one
        // rule simple: a cached block was read under a glock held ever
        // since.
        if keep_metadata || !matches!(name.kind, GlockType::Inode | GlockType::Rgrp) {
            return;
        }
        self.invals[kind_index(name.kind)].fetch_add(1, Ordering::Relaxed);
        if let Some(Err(e)) = self.with(|fs| fs.drop_caches()) {
            tracing::error!(error = %e, "dropping caches failed");
        }
        if name.kind == GlockType::Inode {
            if let Some(k) = self.kernel.get() {
                k.forget_names(name.number);
                k.forget_attrs(name.number);
            }
        }
    }
}

impl JournalRecovery for FsSlot {
    fn recover_journal(&self, jid: u32) -> Result<(), String> {
        // Folding the journal's statfs changes into the master file is a
        // change of that file: under its glock.
        let (glocks, statfs) = self.glocks.get().ok_or("not mounted")?;
        let glocks = glocks.upgrade().ok_or("unmounted")?;
        let _statfs = glocks
            .acquire(inode(*statfs), GlockState::Ex, HolderFlags::default())
            .map_err(|e| e.to_string())?;
        match self.with(|fs| fs.recover_journal(jid)) {
            Some(Ok(blocks)) => {
                tracing::info!(jid, blocks, "recovered a failed node's journal");
                self.recovered.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("not mounted".into()),
        }
    }
}

/// The cluster's locks for the FUSE adapter.
struct Hooks {
    glocks: Arc<DlmGlocks>,
    /// A spectator's mount: its iopen glocks are not cached (it frees
    /// nothing, see [`ClusterHooks::open_guard`]).
    spectator: bool,
    /// The mounted file system's side of the glocks (recoveries counted).
    slot: Arc<FsSlot>,
    /// POSIX locks and flock go through the lockspace's plocks.
    locks: Plocks,
}

/// fcntl locks and flock through the lockspace's plocks, with the waiting
/// requests an interrupt can withdraw.
struct Plocks {
    ls: Lockspace,
    waits: Arc<parking_lot::Mutex<LockWaits>>,
    /// The flock each open file of this node holds, by (inode, open file):
    /// a conversion drops the old one first, as Linux's flock does.
    flocks: Arc<parking_lot::Mutex<HashMap<(u64, u64), Kind>>>,
    /// The inodes on which a process of this node has asked for a POSIX
    /// lock since the mount. A close of any other file has no POSIX lock
    /// to drop, and does not ask the DLM (which may be another node's
    /// plock master) to drop none.
    posix: parking_lot::Mutex<HashSet<u64>>,
}

/// Lock requests waiting in the DLM, by FUSE request.
#[derive(Default)]
struct LockWaits {
    waiting: HashMap<u64, PlockReq>,
    /// Interrupts for requests not waiting here (yet: another FUSE thread
    /// may still be starting one), newest last, at most [`EARLY_INTERRUPTS`].
    /// The kernel's request ids are never reused, so a stale one matches
    /// nothing.
    early: VecDeque<u64>,
}

/// How many interrupts of requests not seen waiting are kept.
const EARLY_INTERRUPTS: usize = 64;

/// What answers a lock request, taken once: by the DLM's result, or by
/// this side when the request could not start.
type Answer = Arc<parking_lot::Mutex<Option<Box<dyn FnOnce(Result<(), Errno>) + Send>>>>;

impl Plocks {
    fn new(ls: Lockspace) -> Plocks {
        Plocks {
            ls,
            waits: Arc::default(),
            flocks: Arc::default(),
            posix: parking_lot::Mutex::default(),
        }
    }

    fn setlk(&self, lk: LockRequest, done: Box<dyn FnOnce(Result<(), Errno>) + Send>) {
        if lk.typ == libc::F_UNLCK {
            let r = if lk.flock {
                self.flocks.lock().remove(&(lk.ino, lk.owner));
                self.ls.funlock(lk.ino, lk.owner)
            } else {
                self.ls.punlock(lk.ino, lk.owner, lk.start, lk.end)
            };
            return done(r.map_err(plock_errno));
        }
        let Some(kind) = plock_kind(lk.typ) else {
            return done(Err(Errno::EINVAL));
        };
        if lk.flock {
            // Linux's flock: the same lock again changes nothing; another
            // kind first drops the one held (a waiting or refused
            // conversion leaves none, and two upgraders cannot deadlock).
            let held = self.flocks.lock().get(&(lk.ino, lk.owner)).copied();
            match held {
                Some(k) if k == kind => return done(Ok(())),
                Some(_) => {
                    self.flocks.lock().remove(&(lk.ino, lk.owner));
                    if let Err(e) = self.ls.funlock(lk.ino, lk.owner) {
                        return done(Err(plock_errno(e)));
                    }
                }
                None => {}
            }
        }
        if !lk.flock {
            // Before the request starts: a close from now on drops it.
            self.posix.lock().insert(lk.ino);
        }
        let answer: Answer = Arc::new(parking_lot::Mutex::new(Some(done)));
        let cb = self.on_result(lk, kind, answer.clone());
        let started = if lk.flock {
            self.ls.flock_async(lk.ino, lk.owner, kind, lk.wait, cb)
        } else {
            let (ino, owner, start, end) = (lk.ino, lk.owner, lk.start, lk.end);
            self.ls
                .plock_async(ino, owner, kind, start, end, lk.wait, cb)
        };
        match started {
            Ok(req) if lk.wait => self.waiting(lk.unique, req, &answer),
            Ok(_) => {}
            Err(e) => {
                if let Some(done) = answer.lock().take() {
                    done(Err(plock_errno(e)));
                }
            }
        }
    }

    /// The DLM's callback for request `lk`: forgets it as waiting, notes a
    /// granted flock, answers the kernel.
    fn on_result(&self, lk: LockRequest, kind: Kind, answer: Answer) -> dlm::PlockFn {
        let waits = self.waits.clone();
        let flocks = self.flocks.clone();
        Box::new(move |r: Result<(), dlm::DlmError>| {
            let done = {
                let mut w = waits.lock();
                w.waiting.remove(&lk.unique);
                answer.lock().take()
            };
            if lk.flock && r.is_ok() {
                flocks.lock().insert((lk.ino, lk.owner), kind);
            }
            if let Some(done) = done {
                done(r.map_err(plock_errno));
            }
        })
    }

    /// Notes request `unique` as waiting in the DLM, unless it is already
    /// answered; cancels it when its interrupt came first.
    fn waiting(&self, unique: u64, req: PlockReq, answer: &Answer) {
        let cancel = {
            let mut w = self.waits.lock();
            if answer.lock().is_none() {
                return;
            }
            w.waiting.insert(unique, req);
            match w.early.iter().position(|&u| u == unique) {
                Some(i) => {
                    w.early.remove(i);
                    true
                }
                None => false,
            }
        };
        if cancel {
            self.cancel(unique, req);
        }
    }

    fn interrupt(&self, unique: u64) {
        let req = {
            let mut w = self.waits.lock();
            let req = w.waiting.get(&unique).copied();
            if req.is_none() {
                if w.early.len() == EARLY_INTERRUPTS {
                    w.early.pop_front();
                }
                w.early.push_back(unique);
            }
            req
        };
        if let Some(req) = req {
            self.cancel(unique, req);
        }
    }

    /// Withdraws a waiting request; its callback then answers EINTR, or
    /// the grant that came first (the lock is then held, and reported so).
    fn cancel(&self, unique: u64, req: PlockReq) {
        match self.ls.plock_cancel(req) {
            Ok(()) => tracing::debug!(unique, "lock request canceled"),
            // Answered meanwhile.
            Err(e) => tracing::debug!(unique, error = %e, "lock request not canceled"),
        }
    }

    fn release_flock(&self, ino: u64, owner: u64) {
        self.flocks.lock().remove(&(ino, owner));
        if let Err(e) = self.ls.fclose(ino, owner) {
            tracing::warn!(ino, error = %e, "dropping a flock on the last close");
        }
    }
}

fn plock_errno(e: dlm::DlmError) -> Errno {
    match e {
        dlm::DlmError::Again => Errno::EAGAIN,
        dlm::DlmError::Deadlock => Errno::EDEADLK,
        dlm::DlmError::Canceled => Errno::EINTR,
        other => {
            tracing::error!(error = %other, "plock");
            Errno::EIO
        }
    }
}

fn plock_kind(typ: i32) -> Option<Kind> {
    match typ {
        libc::F_RDLCK => Some(Kind::Read),
        libc::F_WRLCK => Some(Kind::Write),
        _ => None,
    }
}

fn guard(g: GlockGuard) -> Guard {
    Box::new(g)
}

impl ClusterHooks for Hooks {
    fn op_guard(&self, plan: &LockPlan) -> Result<GlockSet, Errno> {
        let mut wants = smallvec::SmallVec::<[(GlockName, GlockState); 6]>::new();
        if plan.rename {
            wants.push((RENAME_LOCK, GlockState::Ex));
        }
        for &(ino, ex) in &plan.inodes {
            let mode = if ex { GlockState::Ex } else { GlockState::Sh };
            wants.push((inode(ino), mode));
        }
        for &addr in &plan.rgrps {
            wants.push((rgrp(addr), GlockState::Ex));
        }
        match self.glocks.acquire_set(&wants) {
            Ok(set) => Ok(set),
            Err(e) => {
                tracing::error!(error = %e, "cluster lock");
                Err(Errno::EIO)
            }
        }
    }

    fn open_guard(&self, ino: u64, new: bool) -> Result<Guard, Errno> {
        // Kept in SH after the last close, as GFS2 keeps it while the
        // inode is cached: opening the file again here, and closing it,
        // ask the DLM nothing. A node that unlinks it and would free it
        // asks for EX; that request, refused, still tells us, and we give
        // the glock up and free the inode ourselves if it is unlinked
        // (`GlockOps::callback`, `FuseFs::iopen_wanted`). A spectator
        // frees nothing, so it must not stand in the way: it lets go at
        // its last close.
        //
        // An inode made here is first tried in EX (GFS2 takes SH): other
        // nodes rarely know it yet, and an unlink here then finds EX cached
        // and frees it with no DLM request. Another node that opens it
        // asks for SH: we go down to SH at once, open or not (SH holders
        // fit in SH). A try, never a wait: another node may have looked
        // the new name up and opened it already.
        if new && !self.spectator {
            let flags = HolderFlags {
                try_lock: true,
                ..HolderFlags::default()
            };
            drop(self.glocks.acquire(iopen(ino), GlockState::Ex, flags));
        }
        let flags = HolderFlags {
            nocache: self.spectator,
            ..HolderFlags::default()
        };
        self.glocks
            .acquire(iopen(ino), GlockState::Sh, flags)
            .map(guard)
            .map_err(|_| Errno::EIO)
    }

    fn close_guard(&self, guard: Guard) -> bool {
        match guard.downcast::<GlockGuard>() {
            Ok(g) => g.release_quietly(),
            Err(_) => false,
        }
    }

    fn setlk(&self, lk: LockRequest, done: Box<dyn FnOnce(Result<(), Errno>) + Send>) {
        self.locks.setlk(lk, done);
    }

    fn interrupt(&self, unique: u64) {
        self.locks.interrupt(unique);
    }

    fn getlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        typ: i32,
    ) -> Result<Option<(u64, u64, i32)>, Errno> {
        let kind = plock_kind(typ).ok_or(Errno::EINVAL)?;
        let got = self
            .locks
            .ls
            .pget(ino, owner, kind, start, end)
            .map_err(plock_errno)?;
        Ok(got.map(|p| {
            let t = match p.kind {
                Kind::Read => libc::F_RDLCK,
                Kind::Write => libc::F_WRLCK,
            };
            (p.start, p.end, t)
        }))
    }

    fn release_locks(&self, ino: u64, owner: u64) {
        if !self.locks.posix.lock().contains(&ino) {
            return;
        }
        if let Err(e) = self.locks.ls.pclose(ino, owner) {
            tracing::warn!(ino, error = %e, "dropping POSIX locks on close");
        }
    }

    fn release_flock(&self, ino: u64, owner: u64) {
        self.locks.release_flock(ino, owner);
    }

    fn dump(&self) -> Vec<String> {
        self.glocks.dump()
    }

    fn journals_recovered(&self) -> u64 {
        self.slot.recovered.load(Ordering::SeqCst)
    }

    fn give_up_opens(&self) {
        self.glocks.give_up_all(GlockType::Iopen);
    }

    fn wait_open_given_up(&self, ino: u64) -> bool {
        self.glocks.wait_demoted(iopen(ino))
    }

    fn try_only_opener(&self, ino: u64) -> Option<Guard> {
        // Kept in EX once released (the inode is usually freed by then):
        // no conversion back to NL now, and another node that opens an
        // inode at this address later takes it from us at once (nobody
        // here holds it, and iopen glocks have no hold time).
        let flags = HolderFlags {
            nocache: false,
            try_lock: true,
        };
        self.glocks
            .acquire(iopen(ino), GlockState::Ex, flags)
            .ok()
            .map(guard)
    }
}

/// The running cluster must be the volume's, and quorate; and this node
/// must not have the volume mounted already (one process per node in a
/// lockspace: the DLM knows nodes, not processes).
fn check_cluster(state_dir: &Path, cluster: &str, fsname: &str) -> Result<(), ClusterError> {
    let no_cmand = |why: String| ClusterError::NoCmand {
        dir: state_dir.to_path_buf(),
        why,
    };
    let mut client = Client::connect(state_dir).map_err(|e| no_cmand(e.to_string()))?;
    let mut status = client.status().map_err(|e| no_cmand(e.to_string()))?;
    if status.cluster_name != cluster {
        return Err(ClusterError::WrongCluster {
            volume: cluster.to_string(),
            running: status.cluster_name,
        });
    }
    if !status.quorum.quorate {
        return Err(ClusterError::NoQuorum(status.cluster_name));
    }
    let group = group_name(fsname);
    let here = |s: &cman::node::Status| {
        s.groups
            .iter()
            .any(|(g, members)| *g == group && members.iter().any(|(n, _)| *n == s.node_id))
    };
    // A mount of this node that has just ended (or was refused: it joined
    // to learn the journals were all in use) leaves the group when its
    // connection to cmand closes, which the cluster agrees on a moment
    // later: give it that moment.
    let deadline = Instant::now() + LEAVE_GRACE;
    while here(&status) {
        if Instant::now() >= deadline {
            return Err(ClusterError::AlreadyMounted(fsname.to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
        status = client.status().map_err(|e| no_cmand(e.to_string()))?;
    }
    Ok(())
}

/// How long a new mount waits for this node's previous one to have left
/// the volume's group before it says the volume is mounted here already.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// Waits until cmand has no fence victim left (a failed node may still
/// write until it is fenced); fails if quorum is lost meanwhile.
fn wait_fenced(state_dir: &Path, cluster: &str) -> Result<(), ClusterError> {
    let no_cmand = |why: String| ClusterError::NoCmand {
        dir: state_dir.to_path_buf(),
        why,
    };
    let mut client = Client::connect(state_dir).map_err(|e| no_cmand(e.to_string()))?;
    let mut said = false;
    loop {
        let status = client.status().map_err(|e| no_cmand(e.to_string()))?;
        if !status.quorum.quorate {
            return Err(ClusterError::NoQuorum(cluster.to_string()));
        }
        if status.victims.is_empty() {
            return Ok(());
        }
        if !said {
            let victims: Vec<String> = status.victims.iter().map(|v| format!("{v:?}")).collect();
            tracing::warn!(
                ?victims,
                "waiting for failed nodes to be fenced before mounting"
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_running(ls: &Lockspace) -> Result<(), String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    while !ls.is_running() || ls.slot() == 0 {
        if Instant::now() > deadline {
            return Err(format!("no lockspace recovery within {JOIN_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two DLM nodes on loopback sharing lockspace "locks": a [`Plocks`]
    /// on each.
    fn two_plocks() -> (Vec<Dlm>, Plocks, Plocks) {
        use dlm::{NodeId, StaticMembership};
        let dlms: Vec<Dlm> = (1..=2)
            .map(|i| {
                let key = dlm::ClusterKey::new(b"cluster.rs plock tests' key").unwrap();
                let addr = "127.0.0.1:0".parse().unwrap();
                Dlm::start(DlmConfig::new(NodeId(i), addr, Default::default(), key)).unwrap()
            })
            .collect();
        for a in &dlms {
            for b in &dlms {
                a.add_peer(b.node(), b.local_addr());
            }
        }
        let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
        let ls: Vec<Lockspace> = dlms
            .iter()
            .map(|d| {
                d.join("locks", StaticMembership::new(&ids).as_ref())
                    .unwrap()
            })
            .collect();
        let t = Instant::now();
        while !ls.iter().all(|l| l.is_running()) {
            assert!(t.elapsed() < Duration::from_secs(60), "lockspace recovery");
            std::thread::sleep(Duration::from_millis(5));
        }
        let a = Plocks::new(ls[0].clone());
        let b = Plocks::new(ls[1].clone());
        (dlms, a, b)
    }

    fn lk(unique: u64, owner: u64, typ: i32, wait: bool, flock: bool) -> LockRequest {
        LockRequest {
            unique,
            ino: 42,
            owner,
            start: 0,
            end: u64::MAX,
            typ,
            wait,
            flock,
        }
    }

    /// Starts `lk` on `p`; its answer comes on the receiver.
    fn start(p: &Plocks, lk: LockRequest) -> std::sync::mpsc::Receiver<Result<(), Errno>> {
        let (tx, rx) = std::sync::mpsc::channel();
        p.setlk(
            lk,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx
    }

    fn answer(rx: &std::sync::mpsc::Receiver<Result<(), Errno>>) -> Result<(), Errno> {
        rx.recv_timeout(Duration::from_secs(30)).expect("an answer")
    }

    #[test]
    fn an_interrupt_cancels_a_waiting_lock_even_when_it_comes_first() {
        let (_dlms, a, b) = two_plocks();
        for flock in [false, true] {
            let base = if flock { 100 } else { 0 };
            assert_eq!(
                answer(&start(&a, lk(base + 1, 1, libc::F_WRLCK, false, flock))),
                Ok(())
            );
            // Interrupted while waiting.
            let rx = start(&b, lk(base + 2, 2, libc::F_WRLCK, true, flock));
            std::thread::sleep(Duration::from_millis(50));
            assert!(rx.try_recv().is_err(), "granted while node a holds it");
            b.interrupt(base + 2);
            assert_eq!(answer(&rx), Err(Errno::EINTR));
            // Interrupted before it was seen waiting (another FUSE thread
            // read the interrupt first).
            b.interrupt(base + 3);
            let rx = start(&b, lk(base + 3, 3, libc::F_WRLCK, true, flock));
            assert_eq!(answer(&rx), Err(Errno::EINTR));
            // Neither withdrawn request is granted when node a lets go.
            assert_eq!(
                answer(&start(&a, lk(base + 4, 1, libc::F_UNLCK, false, flock))),
                Ok(())
            );
            assert_eq!(
                answer(&start(&a, lk(base + 5, 1, libc::F_WRLCK, false, flock))),
                Ok(())
            );
            assert_eq!(
                answer(&start(&a, lk(base + 6, 1, libc::F_UNLCK, false, flock))),
                Ok(())
            );
            assert!(b.waits.lock().waiting.is_empty());
        }
    }

    #[test]
    fn flock_and_fcntl_locks_do_not_conflict_and_a_flock_conversion_drops_the_old_lock() {
        let (_dlms, a, b) = two_plocks();
        assert_eq!(
            answer(&start(&a, lk(1, 1, libc::F_WRLCK, false, true))),
            Ok(())
        );
        // An fcntl lock of the whole file by node b: another family.
        assert_eq!(
            answer(&start(&b, lk(2, 2, libc::F_WRLCK, false, false))),
            Ok(())
        );
        assert_eq!(
            answer(&start(&a, lk(3, 1, libc::F_RDLCK, false, true))),
            Ok(())
        );
        assert_eq!(
            answer(&start(&b, lk(4, 2, libc::F_RDLCK, false, true))),
            Ok(())
        );
        // Node a's upgrade is refused, and its shared lock is gone (as
        // Linux's flock drops it first): node b's upgrade then goes.
        assert_eq!(
            answer(&start(&a, lk(5, 1, libc::F_WRLCK, false, true))),
            Err(Errno::EAGAIN)
        );
        assert_eq!(
            answer(&start(&b, lk(6, 2, libc::F_WRLCK, false, true))),
            Ok(())
        );
        // The last close of node b's open file lets node a in.
        b.release_flock(42, 2);
        assert_eq!(
            answer(&start(&a, lk(7, 1, libc::F_WRLCK, false, true))),
            Ok(())
        );
    }

    #[test]
    fn lock_tables_split_into_cluster_and_fsname() {
        assert_eq!(
            parse_locktable("httpd_cluster:webvg_lv1").unwrap(),
            ("httpd_cluster".to_string(), "webvg_lv1".to_string())
        );
        for bad in ["", "nocolon", ":fs", "cl:", "a:b:c"] {
            assert!(parse_locktable(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_ports_stay_above_the_kernel_dlm_and_differ_by_name() {
        let a = default_port("webvg_lv1");
        let b = default_port("webvg_lv2");
        assert!(a > DLM_BASE_PORT && b > DLM_BASE_PORT);
        assert_ne!(a, b);
        assert_eq!(a, default_port("webvg_lv1"));
    }

    #[test]
    fn a_closed_gate_refuses_writes_and_flushes_but_not_reads() {
        let dev: Arc<dyn BlockDevice> = Arc::new(crate::block::MemDevice::new(4096));
        let gate = Arc::new(WriteGate::default());
        let g = GatedDevice::new(dev, gate.clone());
        g.write_at(0, b"ok").unwrap();
        gate.close();
        assert!(g.write_at(0, b"no").is_err());
        assert!(g.flush().is_err());
        let mut b = [0u8; 2];
        g.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"ok");
    }
}
