//! The FUSE adapter: each callback opens one `tracing` span, calls the core
//! ([`crate::fs::FileSystem`]) under a mutex, and maps errors to errno.
//!
//! FUSE's root inode (1) is the volume's root dinode; every other inode
//! number is a dinode block address.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::InitFlags;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use smallvec::SmallVec;
use tracing::{debug, debug_span, error, info, warn};

use crate::fs::{Attr, FileSystem, Ino, RenameFlags, SetAttr, Timestamp};
use crate::lock_dlm::GlockSet;
use crate::ondisk::Inum;
use crate::volume::FsError;

const TTL: Duration = Duration::from_secs(1);

/// A guard held for as long as a cluster lock is needed.
pub type Guard = Box<dyn std::any::Any + Send>;

/// An inode open on this node ([`Cluster::opens`]).
struct Open {
    /// Its open handles.
    handles: u32,
    /// Its iopen glock in SH.
    guard: Guard,
    /// An unlink here found it open: its last close reads the link count.
    look: bool,
}

/// What the (one or two) names of an operation name, or `None`.
type Names<T> = SmallVec<[Option<T>; 2]>;

/// The glocks one operation holds: inodes, each shared or exclusive, and
/// resource groups (exclusive). The hooks take them in GFS2's order
/// (inodes by number, then resource groups by number), all before the
/// operation starts and none while another is awaited out of that order,
/// so no two nodes (or threads) can wait on each other in a cycle.
#[derive(Debug, Default, Clone)]
pub struct LockPlan {
    /// Inodes by dinode block, `true` for exclusive.
    pub inodes: SmallVec<[(u64, bool); 4]>,
    /// Resource groups by header block.
    pub rgrps: SmallVec<[u64; 4]>,
    /// The rename glock first (EX): a rename between directories, which
    /// may change the tree's shape.
    pub rename: bool,
    /// The operation may allocate: start with the resource groups this
    /// node allocated in lately (their glocks are most likely ours).
    alloc: bool,
}

impl LockPlan {
    fn sh(ino: Ino) -> LockPlan {
        LockPlan::default().and_sh(ino)
    }

    fn ex(ino: Ino) -> LockPlan {
        LockPlan::default().and_ex(ino)
    }

    fn and_sh(mut self, ino: Ino) -> LockPlan {
        self.inodes.push((ino.0, false));
        self
    }

    fn and_ex(mut self, ino: Ino) -> LockPlan {
        self.inodes.push((ino.0, true));
        self
    }

    fn and(self, ino: Option<Ino>, ex: bool) -> LockPlan {
        match (ino, ex) {
            (None, _) => self,
            (Some(i), true) => self.and_ex(i),
            (Some(i), false) => self.and_sh(i),
        }
    }

    fn allocating(mut self) -> LockPlan {
        self.alloc = true;
        self
    }

    fn and_rgrp(mut self, rgrp: Option<u64>) -> LockPlan {
        self.rgrps.extend(rgrp);
        self
    }

    /// Puts the inodes and the resource groups in the order they are
    /// taken: by number, each once (an inode exclusive if asked so
    /// anywhere).
    pub fn order(&mut self) {
        self.inodes.sort_unstable();
        // Of two entries for one inode, the later (`a`) goes, its mode
        // folded into the earlier (`b`).
        self.inodes.dedup_by(|a, b| {
            let same = a.0 == b.0;
            if same {
                b.1 |= a.1;
            }
            same
        });
        self.rgrps.sort_unstable();
        self.rgrps.dedup();
    }
}

/// What a mount in a cluster adds to the FUSE operations (see
/// `crate::cluster`): the glocks around every operation, and iopen locks
/// that tell whether another node has an inode open.
pub trait ClusterHooks: Send + Sync {
    /// The glocks of `plan`, taken before an operation touches the
    /// filesystem and held until it is done (never taken while the
    /// filesystem's mutex is held).
    /// `plan` is in order ([`LockPlan::order`]).
    fn op_guard(&self, plan: &LockPlan) -> Result<GlockSet, Errno>;
    /// Held while this node has `ino` open; `new`: this node just made
    /// the inode (nobody else can know it yet).
    fn open_guard(&self, ino: u64, new: bool) -> Result<Guard, Errno>;
    /// Lets an [`Self::open_guard`] go; true if that was a plain release
    /// of a glock that stays cached: no other node asked for it while it
    /// was held, and no holder here waits for it.
    fn close_guard(&self, guard: Guard) -> bool;
    /// Without waiting: a guard when no other node has `ino` open. The
    /// glock stays cached in EX after the guard goes, until another node
    /// asks for it.
    fn try_only_opener(&self, ino: u64) -> Option<Guard>;
    /// Waits until a demote of `ino`'s iopen glock that another node
    /// asked for is over; true if nobody here holds it then (given up, or
    /// cached again with no holder), false if a holder here has it.
    fn wait_open_given_up(&self, ino: u64) -> bool;
    /// At unmount: gives up every iopen glock this node caches, and waits
    /// until the DLM has them so (a node that then tries one in EX is not
    /// refused because of us).
    fn give_up_opens(&self);
    /// POSIX record locks and flock across the nodes: F_SETLK/F_SETLKW,
    /// LOCK_SH/LOCK_EX/LOCK_UN (with or without LOCK_NB); the answer goes
    /// to `done` (EAGAIN when refused, EDEADLK for a deadlock, EINTR when
    /// [`ClusterHooks::interrupt`] withdrew it), perhaps later.
    fn setlk(&self, lk: LockRequest, done: Box<dyn FnOnce(Result<(), Errno>) + Send>);
    /// The caller of FUSE request `unique` got a signal: a lock request of
    /// it still waiting is withdrawn (it is answered EINTR, or granted if
    /// the grant came first).
    fn interrupt(&self, unique: u64);
    /// F_GETLK: the lock that would block, as (start, end, type).
    fn getlk(
        &self,
        ino: u64,
        owner: u64,
        start: u64,
        end: u64,
        typ: i32,
    ) -> Result<Option<(u64, u64, i32)>, Errno>;
    /// `owner` closed a descriptor of `ino`: its POSIX locks on it go.
    fn release_locks(&self, ino: u64, owner: u64);
    /// The last close of open file `owner` of `ino`: its flock goes.
    fn release_flock(&self, ino: u64, owner: u64);
    /// A line per glock this node knows: state, transition in flight,
    /// holders (logged on SIGUSR1).
    fn dump(&self) -> Vec<String>;
    /// How many failed nodes' journals this node has replayed so far
    /// (after each, the inodes those nodes had open and unlinked are
    /// reclaimed: [`FuseFs::reclaim_unlinked`]).
    fn journals_recovered(&self) -> u64;
}

/// A lock request as FUSE_SETLK/SETLKW brings it.
#[derive(Clone, Copy, Debug)]
pub struct LockRequest {
    /// The FUSE request (what an interrupt names).
    pub unique: u64,
    /// The file.
    pub ino: u64,
    /// The lock owner: the process's files for fcntl, the open file for flock.
    pub owner: u64,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
    /// F_RDLCK, F_WRLCK or F_UNLCK (flock: LOCK_SH, LOCK_EX, LOCK_UN).
    pub typ: i32,
    /// F_SETLKW, or a flock without LOCK_NB.
    pub wait: bool,
    /// A flock (whole file), not an fcntl lock.
    pub flock: bool,
}

/// The cluster side of a [`FuseFs`].
struct Cluster {
    hooks: Arc<dyn ClusterHooks>,
    /// Per inode open here: its open handles, iopen guard, and whether
    /// the last close must look at its link count.
    opens: Mutex<rustc_hash::FxHashMap<u64, Open>>,
    /// The resource groups this node allocated or freed in lately, most
    /// recent last (at most [`RGRP_HINTS`]).
    rgrp_hints: Mutex<Vec<u64>>,
    /// The master statfs file's dinode: its glock guards reading and
    /// folding into it.
    statfs_ino: u64,
    /// A spectator's mount (no journal): it frees nothing. An inode
    /// unlinked elsewhere while only a spectator had it open stays
    /// allocated until a node with a journal reclaims it, as the kernel's
    /// read-only gfs2 leaves it on evict.
    spectator: bool,
    /// Inodes whose iopen glock another node asked for while this node
    /// cached it ([`FuseFs::iopen_wanted`]).
    deletes: Arc<DeleteQueue>,
    /// What names named when this node last looked, (parent, hash of
    /// the name) → inode: the guess of which glocks an operation on a
    /// name needs, always checked under them (so two names of one
    /// directory with the same hash cost a retry, nothing else).
    names: Mutex<rustc_hash::FxHashMap<(u64, u64), u64>>,
}

/// Inodes to look at on the reclaimer's thread ([`FuseFs::iopen_wanted`]):
/// the kernel's delete work queue. The glocks' DLM callbacks fill it; they
/// must not take a glock themselves.
#[derive(Debug, Default)]
pub struct DeleteQueue {
    inos: Mutex<Vec<u64>>,
    more: parking_lot::Condvar,
    /// Held while inodes taken from the queue are looked at, by the
    /// reclaimer or by the unmount, which holds it to the end and sets it
    /// (closed: the reclaimer stops).
    turn: Mutex<bool>,
    /// How many failed nodes' journals this node had replayed when it
    /// last freed the inodes they left unlinked (under the turn).
    reclaimed: AtomicU64,
}

impl DeleteQueue {
    /// Another node wants `ino`'s iopen glock in EX.
    pub fn push(&self, ino: u64) {
        self.inos.lock().push(ino);
        self.more.notify_one();
    }

    /// Waits up to `wait` for something to be pushed.
    fn wait(&self, wait: Duration) {
        let mut inos = self.inos.lock();
        if inos.is_empty() {
            self.more.wait_for(&mut inos, wait);
        }
    }

    /// What was pushed so far (call with the turn).
    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.inos.lock())
    }
}

/// Names remembered for [`Cluster::names`] before it starts afresh.
const NAME_GUESSES: usize = 1 << 16;

impl Cluster {
    /// Notes what `parent/name` names now (`None`: nothing).
    fn remember_name(&self, parent: Ino, name: &[u8], ino: Option<Ino>) {
        let key = name_key(parent, name);
        let mut seen = self.names.lock();
        match ino {
            Some(i) => {
                if seen.len() >= NAME_GUESSES {
                    seen.clear();
                }
                seen.insert(key, i.0);
            }
            None => {
                seen.remove(&key);
            }
        }
    }

    /// The inode `parent/name` named when this node last looked.
    fn guess_name(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        let key = name_key(parent, name);
        self.names.lock().get(&key).map(|&i| Ino(i))
    }
}

/// The key of `parent/name` in [`Cluster::names`].
fn name_key(parent: Ino, name: &[u8]) -> (u64, u64) {
    use std::hash::BuildHasher;
    (parent.0, rustc_hash::FxBuildHasher.hash_one(name))
}

/// How many recently used resource groups an allocating operation takes
/// up front.
const RGRP_HINTS: usize = 4;

/// Threads serving a cluster mount's FUSE requests.
const FUSE_THREADS: usize = 4;

/// The kernel's caches of a mount, as far as the server can reach them
/// without taking a kernel lock that a waiting request may hold (page and
/// per-name invalidation lock the inode or its directory, and could
/// deadlock against a request waiting for the glock being given up):
/// - attributes: forgotten per inode when its glock goes
///   ([`KernelCache::forget_attrs`]);
/// - names: the kernel keeps them only where it can be told to forget
///   them all at once, with FUSE's epoch (Linux 6.16, FUSE 7.44), which
///   takes no lock: a directory's glock going bumps the epoch, and every
///   name the kernel learnt before is looked up again at its next use
///   ([`KernelCache::forget_names`]). Older kernels keep no names.
#[derive(Debug, Default)]
pub struct KernelCache {
    notifier: OnceLock<fuser::Notifier>,
    root: u64,
    /// A descriptor of the mount's FUSE connection, when the kernel takes
    /// epoch notifications.
    epoch_dev: OnceLock<std::os::fd::OwnedFd>,
    /// Directories whose names the kernel may hold since the last epoch
    /// (by dinode).
    named_dirs: Mutex<rustc_hash::FxHashSet<u64>>,
}

/// FUSE_NOTIFY_INC_EPOCH: the notification code that ends every name
/// the kernel cached before it (no payload).
const FUSE_NOTIFY_INC_EPOCH: i32 = 8;

impl KernelCache {
    /// The kernel forgets `ino`'s attributes (its next stat asks us).
    pub fn forget_attrs(&self, ino: u64) {
        let Some(n) = self.notifier.get() else { return };
        let fuse_ino = if ino == self.root { 1 } else { ino };
        if let Err(e) = n.inval_inode(INodeNo(fuse_ino), -1, 0) {
            // ENOENT (not cached) is answered as Ok; anything else means
            // the session is going away.
            debug!(ino, error = %e, "attribute invalidation");
        }
    }

    /// Whether the kernel may keep names (it takes epoch notifications).
    fn keeps_names(&self) -> bool {
        self.epoch_dev.get().is_some()
    }

    /// An answer naming entries of directory `dir` is about to go to the
    /// kernel: the next time `dir`'s glock goes, the kernel must forget.
    /// Called before the operation takes its glocks: if the glock goes
    /// in between, the epoch the kernel read before asking is already old
    /// and the answer is looked up again at its first use.
    fn names_from(&self, dir: u64) {
        if self.keeps_names() {
            self.named_dirs.lock().insert(dir);
        }
    }

    /// `dir`'s glock is going: if the kernel may hold names from it, it
    /// forgets every name it holds (they are looked up again).
    pub fn forget_names(&self, dir: u64) {
        if !self.named_dirs.lock().remove(&dir) {
            return;
        }
        if let Some(fd) = self.epoch_dev.get() {
            if let Err(e) = notify_inc_epoch(fd) {
                debug!(dir, error = %e, "name invalidation (epoch)");
            }
        }
    }

    /// Keeps a descriptor of the session's FUSE connection for epoch
    /// notifications, if the kernel takes them (one is sent to find out).
    fn probe_epoch(&self, dev: std::os::fd::BorrowedFd<'_>) {
        let fd = match dev.try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                warn!(error = %e, "duplicating the FUSE descriptor");
                return;
            }
        };
        match notify_inc_epoch(&fd) {
            Ok(()) => {
                let _ = self.epoch_dev.set(fd);
            }
            Err(e) => info!(
                error = %e,
                "this kernel takes no FUSE epoch notification (Linux < 6.16): \
                 names are not cached, every path walk asks"
            ),
        }
    }
}

/// Writes FUSE_NOTIFY_INC_EPOCH to a FUSE connection.
fn notify_inc_epoch(fd: &std::os::fd::OwnedFd) -> nix::Result<()> {
    // struct fuse_out_header { len: u32, error: i32 (the code), unique: u64 (0) }
    let mut msg = [0u8; 16];
    msg[0..4].copy_from_slice(&16u32.to_ne_bytes());
    msg[4..8].copy_from_slice(&FUSE_NOTIFY_INC_EPOCH.to_ne_bytes());
    let n = nix::unistd::write(fd, &msg)?;
    if n == msg.len() {
        Ok(())
    } else {
        Err(nix::errno::Errno::EIO)
    }
}

/// The mounted filesystem as FUSE sees it (clones share everything).
#[derive(Clone)]
pub struct FuseFs {
    inner: Arc<Mutex<Option<FileSystem>>>,
    root: u64,
    acl: bool,
    kernel: Arc<KernelCache>,
    /// In a cluster: attributes and names are not cached by the kernel
    /// (another node may change them), nor file pages (direct I/O).
    cluster: Option<Arc<Cluster>>,
}

impl FuseFs {
    /// Wraps a mounted core. The same handle is shared with the periodic
    /// committer (see [`FuseFs::shared`]).
    pub fn new(fs: FileSystem) -> Self {
        let root = fs.root().0;
        FuseFs {
            inner: Arc::new(Mutex::new(Some(fs))),
            root,
            acl: true,
            kernel: Arc::new(KernelCache {
                root,
                ..KernelCache::default()
            }),
            cluster: None,
        }
    }

    /// Serves as one node of a cluster: every operation under the glocks
    /// it needs (`hooks.op_guard`), unlinked inodes freed by whichever node closes
    /// them last, no kernel caching of attributes, names or pages.
    pub fn with_cluster(mut self, hooks: Arc<dyn ClusterHooks>) -> Self {
        let mut statfs_ino = 0;
        let mut spectator = false;
        if let Some(fs) = self.inner.lock().as_mut() {
            fs.set_defer_free(true);
            // Between operations nothing may allocate or free.
            fs.set_rgrps_held(Some(&[]));
            statfs_ino = fs.statfs_inode();
            spectator = fs.volume().jid().is_none();
        }
        self.cluster = Some(Arc::new(Cluster {
            hooks,
            opens: Mutex::default(),
            rgrp_hints: Mutex::new(Vec::new()),
            statfs_ino,
            spectator,
            deletes: Arc::default(),
            names: Mutex::default(),
        }));
        self
    }

    /// How long the kernel may keep a name. In a cluster only with epoch
    /// notifications ([`KernelCache`]): the directory's glock going makes
    /// it forget; without them, not at all (every path walk asks).
    fn ttl(&self) -> Duration {
        if self.cluster.is_none() || self.kernel.keeps_names() {
            TTL
        } else {
            Duration::ZERO
        }
    }

    /// In a cluster: the kernel is about to learn names in `dir`
    /// ([`KernelCache::names_from`]).
    fn naming(&self, dir: Ino) {
        if self.cluster.is_some() {
            self.kernel.names_from(dir.0);
        }
    }

    /// How long the kernel may keep the attributes of an inode this node
    /// holds no glock of (a new one): in a cluster, not at all.
    fn unlocked_attr_ttl(&self) -> Duration {
        if self.cluster.is_some() {
            Duration::ZERO
        } else {
            TTL
        }
    }

    /// How long the kernel may keep attributes given under the inode's
    /// glock: in a cluster too, since giving the glock up makes the kernel
    /// forget them ([`KernelCache::forget_attrs`]) before another node can
    /// change them.
    fn attr_ttl(&self) -> Duration {
        TTL
    }

    fn fopen_flags(&self) -> FopenFlags {
        if self.cluster.is_some() {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        }
    }

    /// In a cluster: takes `ino`'s iopen guard for a new open handle
    /// (`new`: of an inode this node just made).
    fn opened(&self, ino: u64, new: bool) -> Result<(), Errno> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if let Some(e) = c.opens.lock().get_mut(&ino) {
            e.handles += 1;
            return Ok(());
        }
        let guard = c.hooks.open_guard(ino, new)?;
        let mut opens = c.opens.lock();
        let open = opens.entry(ino).or_insert(Open {
            handles: 0,
            guard,
            look: false,
        });
        open.handles += 1;
        Ok(())
    }

    /// In a cluster: an open handle of `ino` closed; at the last one the
    /// iopen guard goes (the glock stays cached in SH) and the inode is
    /// freed if it was unlinked and no other node has it open.
    ///
    /// Why no unlinked inode is left allocated: a node that unlinks an
    /// inode sets its link count under the inode's EX glock before it
    /// tries the iopen glock in EX. If another node's SH stops that try,
    /// the refusal still reaches that node ([`FuseFs::iopen_wanted`]),
    /// which gives the glock up once the file is closed there, reads the
    /// count and tries in turn: the last node to give SH up finds every
    /// other one in NL and frees the inode. (An inode still linked costs
    /// no DLM request at all to open and close again.)
    ///
    /// Here, at the last close, the count is read when an unlink may have
    /// come while the file was open:
    /// - one made here found it open ([`FuseFs::free_if_last`] marks it);
    /// - one made elsewhere tried the iopen glock in EX while we held it:
    ///   the glock then has a demote pending, so letting the guard go is
    ///   not a plain release (nor is it while any other holder here waits
    ///   for the glock: an open or a free in progress).
    ///
    /// A try that came before the open was answered by giving the glock
    /// up, with nobody holding it: the reclaimer looked then. One that
    /// comes after the guard went finds no holder either: it looks then.
    fn closed(&self, ino: u64) {
        let Some(c) = &self.cluster else {
            return;
        };
        let open = {
            let mut opens = c.opens.lock();
            match opens.get_mut(&ino) {
                Some(e) if e.handles > 1 => {
                    e.handles -= 1;
                    return;
                }
                Some(_) => opens.remove(&ino),
                None => return,
            }
        };
        let Some(open) = open else { return };
        let quiet = c.hooks.close_guard(open.guard);
        if !c.spectator && (open.look || !quiet) {
            self.free_if_unlinked(ino);
        }
    }

    /// In a cluster: another node asked for `ino`'s iopen glock in EX
    /// while this node had it in SH or EX (the kernel's delete work):
    /// once the glock is given up, the inode is freed here if it is
    /// unlinked and nobody has it open. Called on the reclaimer's thread,
    /// never on a DLM thread or a FUSE one.
    fn iopen_wanted(&self, ino: u64) {
        let Some(c) = &self.cluster else {
            return;
        };
        if c.spectator {
            return;
        }
        // Held here (the file is open, or an operation tried it in EX):
        // its holder looks when it lets go. Given up, or taken again
        // since and cached with no holder: looked at now (an unlinked
        // inode must not be left to a node that gave the glock up).
        if !c.hooks.wait_open_given_up(ino) {
            debug!(ino, "iopen wanted elsewhere: held here");
            return;
        }
        let freed = self.free_if_unlinked(ino);
        debug!(ino, freed, "iopen wanted elsewhere");
    }

    /// Frees `ino` if its link count is zero, read under its glock, and
    /// nobody here or elsewhere has it open ([`FuseFs::free_if_last`]).
    /// Returns whether it was freed.
    fn free_if_unlinked(&self, ino: u64) -> bool {
        let i = Ino(ino);
        match self.with(LockPlan::sh(i), |fs| fs.links_if_dinode(i)) {
            Ok(Some(n)) if n > 0 => false,
            // Freed already (by another node, or here), its block perhaps
            // reused.
            Ok(None) => false,
            _ => self.free_if_last(ino),
        }
    }

    /// Removes `parent/name` with `op` (unlink or rmdir); in a cluster the
    /// inode it named is then freed if nobody, here or elsewhere, has it
    /// open (alone, the core frees it itself).
    fn remove(
        &self,
        parent: Ino,
        name: &OsStr,
        op: impl Fn(&mut FileSystem, &[u8]) -> Result<(), FsError>,
    ) -> Result<(), Errno> {
        let n = name.as_bytes();
        // The inode the name named when this node last looked, if nobody
        // here has it open: with its iopen glock in EX (a try: it never
        // waits) this very operation frees it when its last name goes,
        // instead of a second one after (see `free_if_last`).
        let only = self.cluster.as_ref().and_then(|c| {
            let guess = c.guess_name(parent, n)?;
            if c.opens.lock().contains_key(&guess.0) {
                return None;
            }
            c.hooks.try_only_opener(guess.0).map(|g| (guess, g))
        });
        // Whether this operation, holding the victim's iopen glock in EX,
        // already did what `free_if_last` would: freed it, or found it
        // still linked (another name left), so nothing is to be freed.
        let settled = std::cell::Cell::new(false);
        let r = self.with_named(
            &[(parent, n)],
            |c| {
                LockPlan::ex(parent)
                    .and(c[0], true)
                    .and_rgrp(c[0].and_then(|v| self.rgrp_of(v)))
            },
            |fs, c| {
                op(fs, n)?;
                let victim = c.first().copied().flatten().map(ino_of);
                settled.set(false);
                if let (Some(v), Some((only, _))) = (victim, &only) {
                    if v == *only {
                        // Undone as a whole if it fails (its data in an
                        // rgrp not held, say); `free_if_last` retries
                        // then, as its own operation.
                        settled.set(fs.free_if_unlinked(v).is_ok());
                    }
                }
                Ok(victim)
            },
        );
        let victim = r.as_ref().ok().copied().flatten();
        // (The guard goes here.)
        let tried = only.map(|(guess, _)| guess);
        match victim {
            Some(v) if !settled.get() => {
                self.free_if_last(v.0);
            }
            _ => {}
        }
        // The guess was wrong (the name named another inode by then, or
        // none): we held that inode's iopen glock in EX all the same,
        // perhaps after another node gave it up to free it. It may be
        // unlinked, and then it is ours to free.
        if let Some(guess) = tried.filter(|g| Some(*g) != victim) {
            self.free_if_unlinked(guess.0);
        }
        r.map(|_| ())
    }

    /// Remembers the inode `parent/name` was made for here: the guess
    /// [`FuseFs::with_named`] starts from when the name is used next (an
    /// unlink after a create would otherwise first lock as if the name
    /// were absent, see it is not, and start again).
    fn learned(&self, parent: Ino, name: &[u8], made: Option<Ino>) {
        if let (Some(c), Some(ino)) = (&self.cluster, made) {
            c.remember_name(parent, name, Some(ino));
        }
    }

    /// In a cluster: frees `ino` if it is unlinked and nobody, here or on
    /// another node, has it open. Returns whether it was freed.
    fn free_if_last(&self, ino: u64) -> bool {
        let Some(c) = &self.cluster else {
            return false;
        };
        if let Some(open) = c.opens.lock().get_mut(&ino) {
            debug!(ino, "open here: its last close frees it if unlinked");
            open.look = true;
            return false;
        }
        let Some(g) = c.hooks.try_only_opener(ino) else {
            debug!(
                ino,
                "iopen refused: a node that has it frees it if unlinked"
            );
            return false;
        };
        let plan = LockPlan::ex(Ino(ino))
            .and_rgrp(self.rgrp_of(Ino(ino)))
            .allocating();
        let freed = self
            .with(plan, |fs| fs.free_if_unlinked(Ino(ino)))
            .unwrap_or_else(|e| {
                warn!(ino, ?e, "freeing an unlinked inode");
                false
            });
        drop(g);
        debug!(ino, freed, "iopen in EX");
        freed
    }

    /// In a cluster: frees every inode marked unlinked that no node has
    /// open, resource group by resource group; returns how many. A node
    /// that fails with files open and unlinked leaves them so: whoever
    /// replays its journal runs this afterwards (the kernel finds them
    /// lazily when allocating; the last mounter alone frees them at mount).
    pub fn reclaim_unlinked(&self) -> Result<usize, Errno> {
        let Some(rgrps) = self.inner.lock().as_ref().map(|fs| fs.rgrp_addrs()) else {
            return Err(Errno::EIO);
        };
        let mut freed = 0;
        for rg in rgrps {
            let plan = LockPlan::default().and_rgrp(Some(rg));
            for ino in self.with(plan, |fs| fs.unlinked_dinodes(rg))? {
                freed += usize::from(self.free_if_last(ino));
            }
        }
        Ok(freed)
    }

    /// Frees the inodes failed nodes left unlinked if this node replayed
    /// a journal since it last did (call with the delete queue's turn).
    fn reclaim_if_recovered(&self, c: &Cluster) {
        let now = c.hooks.journals_recovered();
        if c.deletes.reclaimed.swap(now, Ordering::SeqCst) == now {
            return;
        }
        match self.reclaim_unlinked() {
            Ok(n) => info!(freed = n, "reclaimed the inodes failed nodes left unlinked"),
            Err(e) => warn!(?e, "reclaiming unlinked inodes"),
        }
    }

    /// The resource group holding `ino`'s dinode (the rgrp index never
    /// changes: no glock needed).
    fn rgrp_of(&self, ino: Ino) -> Option<u64> {
        self.inner.lock().as_ref()?.rgrp_of(ino.0)
    }

    /// Whether to ask the kernel for POSIX ACL enforcement (on by default).
    pub fn with_acl(mut self, acl: bool) -> Self {
        self.acl = acl;
        self
    }

    /// The kernel's caches of this mount (reachable once it is served).
    pub fn kernel_cache(&self) -> Arc<KernelCache> {
        Arc::clone(&self.kernel)
    }

    /// In a cluster: where the glocks' callbacks queue the inodes to look
    /// at ([`FuseFs::iopen_wanted`]).
    pub fn delete_queue(&self) -> Option<Arc<DeleteQueue>> {
        self.cluster.as_ref().map(|c| Arc::clone(&c.deletes))
    }

    /// The core, shared (for a commit timer).
    pub fn shared(&self) -> Arc<Mutex<Option<FileSystem>>> {
        Arc::clone(&self.inner)
    }

    fn ino(&self, i: INodeNo) -> Ino {
        if i.0 == 1 {
            Ino(self.root)
        } else {
            Ino(i.0)
        }
    }

    fn fuse_ino(&self, i: Ino) -> INodeNo {
        if i.0 == self.root {
            INodeNo(1)
        } else {
            INodeNo(i.0)
        }
    }

    /// Runs `f` on the core; in a cluster holding the glocks of `plan`,
    /// and again holding one more resource group whenever `f` finds that
    /// it must allocate or free in one whose glock it lacks (its changes
    /// undone first: see `FsError::NeedRgrp`).
    fn with<T>(
        &self,
        mut plan: LockPlan,
        mut f: impl FnMut(&mut FileSystem) -> Result<T, FsError>,
    ) -> Result<T, Errno> {
        let Some(c) = &self.cluster else {
            let mut g = self.inner.lock();
            let fs = g.as_mut().ok_or(Errno::EIO)?;
            return f(fs).map_err(errno_of);
        };
        if plan.alloc {
            plan.rgrps.extend(c.rgrp_hints.lock().iter().copied());
        }
        loop {
            plan.order();
            let guard = c.hooks.op_guard(&plan)?;
            let r = {
                // Busy with a demote's sync (a log flush and a device
                // flush) or another request: another thread reads on.
                let mut g = self.inner.try_lock().unwrap_or_else(|| {
                    fuser::hand_off_reading();
                    self.inner.lock()
                });
                let fs = g.as_mut().ok_or(Errno::EIO)?;
                fs.set_rgrps_held(Some(&plan.rgrps));
                let r = f(fs);
                fs.set_rgrps_held(Some(&[]));
                r
            };
            drop(guard);
            match r {
                Err(FsError::NeedRgrp(rg)) if !plan.rgrps.contains(&rg) => {
                    plan.rgrps.push(rg);
                    let mut hints = c.rgrp_hints.lock();
                    hints.retain(|&h| h != rg);
                    hints.push(rg);
                    if hints.len() > RGRP_HINTS {
                        hints.remove(0);
                    }
                }
                r => return r.map_err(errno_of),
            }
        }
    }

    /// Runs `f` with the inodes that `names` (parent, name) name now, or
    /// `None` where a name is absent. In a cluster `f` runs holding what
    /// `plan` asks for given a guess of those inodes (what the names named
    /// when this node last looked, else absent), once the names, read under
    /// the parents' glocks, are seen to name them; otherwise again with
    /// what they name. Alone, `f` gets no inodes.
    fn with_named<T>(
        &self,
        names: &[(Ino, &[u8])],
        plan: impl Fn(&[Option<Ino>]) -> LockPlan,
        mut f: impl FnMut(&mut FileSystem, &[Option<Inum>]) -> Result<T, FsError>,
    ) -> Result<T, Errno> {
        let Some(c) = &self.cluster else {
            return self.with(LockPlan::default(), |fs| f(fs, &[]));
        };
        let resolve = |fs: &mut FileSystem| -> Result<Names<Inum>, FsError> {
            names.iter().map(|&(p, n)| fs.lookup_entry(p, n)).collect()
        };
        let mut children: Names<Ino> = names.iter().map(|&(p, n)| c.guess_name(p, n)).collect();
        loop {
            let r = self.with(plan(&children), |fs| {
                let now = resolve(fs)?;
                if !now
                    .iter()
                    .map(|e| e.map(ino_of))
                    .eq(children.iter().copied())
                {
                    return Ok(Err(now.iter().map(|e| e.map(ino_of)).collect()));
                }
                f(fs, &now).map(Ok)
            });
            let r = match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(now)) => {
                    children = now;
                    Err(None)
                }
                Err(e) => Err(Some(e)),
            };
            for (&(p, n), &child) in names.iter().zip(&children) {
                c.remember_name(p, n, child);
            }
            match r {
                Ok(v) => return Ok(v),
                Err(Some(e)) => return Err(e),
                Err(None) => {}
            }
        }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        let t = |ts: Timestamp| UNIX_EPOCH + Duration::new(ts.sec, ts.nsec.min(999_999_999));
        FileAttr {
            ino: self.fuse_ino(a.ino),
            size: a.size,
            blocks: a.blocks * u64::from(a.blksize) / 512,
            atime: t(a.atime),
            mtime: t(a.mtime),
            ctime: t(a.ctime),
            crtime: t(a.ctime),
            kind: kind_of(a.mode),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: a.blksize,
            flags: 0,
        }
    }

    /// Attributes read under the inode's glock.
    fn reply_attr(&self, r: Result<Attr, Errno>, reply: ReplyAttr) {
        match r {
            Ok(a) => reply.attr(&self.attr_ttl(), &self.file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    /// A name and its inode's attributes, read under its glock.
    fn reply_entry(&self, r: Result<Attr, Errno>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry_with_ttls(
                &self.attr_ttl(),
                &self.ttl(),
                &self.file_attr(&a),
                Generation(a.generation),
            ),
            Err(e) => reply.error(e),
        }
    }

    /// A new inode: in a cluster this node takes its glock in EX and keeps
    /// it cached, as GFS2 does on create (the inode's next stat, write or
    /// unlink here asks the DLM nothing), and answers with attributes read
    /// under it, which the kernel may then keep; if that fails, with
    /// attributes the kernel must not keep.
    fn reply_new_entry(&self, r: Result<Attr, Errno>, reply: ReplyEntry) {
        match r.map(|a| self.hold(a, true)) {
            Ok((a, held)) => reply.entry_with_ttls(
                &if held {
                    self.attr_ttl()
                } else {
                    self.unlocked_attr_ttl()
                },
                &self.ttl(),
                &self.file_attr(&a),
                Generation(a.generation),
            ),
            Err(e) => reply.error(e),
        }
    }

    /// In a cluster: takes the glock of the inode just made or opened
    /// (`a`) in EX (`ex`) or SH, which stays cached, and reads its
    /// attributes again under it; returns them and whether the glock is
    /// held. (The operation that made it could not name its glock
    /// beforehand.)
    fn hold(&self, a: Attr, ex: bool) -> (Attr, bool) {
        if self.cluster.is_none() {
            return (a, true);
        }
        let i = a.ino;
        let plan = if ex { LockPlan::ex(i) } else { LockPlan::sh(i) };
        match self.with(plan, |fs| fs.getattr(i)) {
            Ok(fresh) => (fresh, true),
            Err(e) => {
                debug!(ino = i.0, ?e, "taking a new inode's glock");
                (a, false)
            }
        }
    }
}

/// The errno for a core error, logged when it means trouble.
fn errno_of(e: FsError) -> Errno {
    if matches!(
        e,
        FsError::Corrupt(_) | FsError::Io(_) | FsError::Journal(_) | FsError::NeedRgrp(_)
    ) {
        error!(error = %e, "filesystem error");
    }
    Errno::from_i32(e.errno())
}

/// `create` found the name made by another node meanwhile: opens that
/// file as `open(O_CREAT)` without O_EXCL would. The kernel checked only
/// the directory, so the file's own permission is checked here by its mode
/// (with an access ACL, only its owner and root pass: nothing is granted
/// that the ACL might deny); O_TRUNC is applied.
fn open_existing(
    fs: &mut FileSystem,
    a: Attr,
    flags: i32,
    uid: u32,
    gid: u32,
) -> Result<Attr, FsError> {
    if a.mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(FsError::IsDir);
    }
    let want = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => 0o4,
        libc::O_WRONLY => 0o2,
        _ => 0o6,
    } | if flags & libc::O_TRUNC != 0 { 0o2 } else { 0 };
    let bits = if uid == a.uid {
        (a.mode >> 6) & 7
    } else if fs.getxattr(a.ino, crate::acl::ACCESS).is_ok() {
        0
    } else if gid == a.gid {
        (a.mode >> 3) & 7
    } else {
        a.mode & 7
    };
    if uid != 0 && bits & want != want {
        return Err(FsError::PermissionDenied);
    }
    let a = if flags & libc::O_TRUNC != 0 && a.size > 0 {
        let zero = SetAttr {
            size: Some(0),
            ..Default::default()
        };
        fs.setattr(a.ino, zero)?
    } else {
        a
    };
    fs.open(a.ino)?;
    Ok(a)
}

/// Answers an operation that returns nothing.
fn reply_empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// The mode a new inode asks for: the umask applies unless the parent has
/// a default ACL, which masks the mode instead (in the core).
fn create_mode(fs: &mut FileSystem, parent: Ino, mode: u32, umask: u32) -> Result<u32, FsError> {
    if fs.has_default_acl(parent)? {
        Ok(mode)
    } else {
        Ok(mode & !umask)
    }
}

/// The inode a directory entry names.
fn ino_of(inum: Inum) -> Ino {
    Ino(inum.no_addr)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dt(dt: u16) -> FileType {
    use crate::ondisk::dt;
    match dt {
        dt::DIR => FileType::Directory,
        dt::LNK => FileType::Symlink,
        dt::CHR => FileType::CharDevice,
        dt::BLK => FileType::BlockDevice,
        dt::FIFO => FileType::NamedPipe,
        dt::SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn timestamp(t: TimeOrNow) -> Timestamp {
    let st = match t {
        TimeOrNow::SpecificTime(s) => s,
        TimeOrNow::Now => SystemTime::now(),
    };
    let d = st.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        sec: d.as_secs(),
        nsec: d.subsec_nanos(),
    }
}

impl fuser::Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // POSIX ACLs: the kernel caches them (read through getxattr) and
        // enforces them; DONT_MASK leaves the umask to us, since a default
        // ACL replaces it (see `create_mode`).
        if self.acl {
            let want = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
            if let Err(missing) = config.add_capabilities(want) {
                warn!(
                    ?missing,
                    "kernel lacks POSIX ACL support; ACLs not enforced"
                );
                self.acl = false;
            }
        }
        // In a cluster POSIX locks and flock must reach us, to go through
        // the DLM (a single node leaves both to the kernel).
        if self.cluster.is_some() {
            if let Err(missing) = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS) {
                warn!(
                    ?missing,
                    "kernel lacks FUSE POSIX locks: fcntl locks stay per node"
                );
            }
            // flock then comes as FUSE_SETLK(W) with FUSE_LK_FLOCK.
            if let Err(missing) = config.add_capabilities(InitFlags::FUSE_FLOCK_LOCKS) {
                warn!(
                    ?missing,
                    "kernel lacks FUSE flock locks: flock stays per node"
                );
            }
        }
        info!(acl = self.acl, "FUSE session started");
        Ok(())
    }

    fn destroy(&mut self) {
        let _s = debug_span!("destroy").entered();
        // Held to the end: the reclaimer finishes what it does, then stops.
        let _turn = self.cluster.as_ref().map(|c| {
            let mut turn = c.deletes.turn.lock();
            *turn = true;
            // Another node that unlinked an inode we cached may have been
            // refused its iopen glock: those go first, then we free what
            // the refusals asked of us. Any try after that succeeds.
            c.hooks.give_up_opens();
            for ino in c.deletes.take() {
                self.iopen_wanted(ino);
            }
            // A failed node's journal replayed here since the reclaimer
            // last looked (it looks every half second): what that node
            // left unlinked is freed now, not left to the next mount.
            self.reclaim_if_recovered(c);
            turn
        });
        // In a cluster the unmount folds statfs into the shared master
        // file: under its glock.
        let _op = self
            .cluster
            .as_ref()
            .map(|c| c.hooks.op_guard(&LockPlan::ex(Ino(c.statfs_ino))));
        if let Some(fs) = self.inner.lock().take() {
            match fs.unmount() {
                Ok(()) => info!("unmounted cleanly"),
                Err(e) => {
                    error!(error = %e, "unmount failed; the journal will be replayed on next mount")
                }
            }
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = debug_span!("lookup", parent = parent.0, ?name).entered();
        let p = self.ino(parent);
        let n = name.as_bytes();
        self.naming(p);
        let r = self.with_named(
            &[(p, n)],
            |c| LockPlan::sh(p).and(c[0], false),
            // The name was just read under the parent's glock: absent, it
            // is not searched for again.
            |fs, c| match c.first() {
                Some(None) => Err(FsError::NotFound),
                Some(Some(inum)) => fs.entry_attr(*inum),
                None => fs.lookup(p, n),
            },
        );
        self.reply_entry(r, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _s = debug_span!("getattr", ino = ino.0).entered();
        let i = self.ino(ino);
        self.reply_attr(self.with(LockPlan::sh(i), |fs| fs.getattr(i)), reply)
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _s = debug_span!("setattr", ino = ino.0, ?size, ?mode).entered();
        let i = self.ino(ino);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(timestamp),
            mtime: mtime.map(timestamp),
        };
        let plan = match size {
            Some(_) => LockPlan::ex(i).allocating(),
            None => LockPlan::ex(i),
        };
        self.reply_attr(self.with(plan, |fs| fs.setattr(i, set)), reply)
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _s = debug_span!("readlink", ino = ino.0).entered();
        let i = self.ino(ino);
        match self.with(LockPlan::sh(i), |fs| fs.readlink(i)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _s = debug_span!("mknod", parent = parent.0, ?name, mode).entered();
        let p = self.ino(parent);
        let (uid, gid) = (req.uid(), req.gid());
        self.naming(p);
        let r = self.with(LockPlan::ex(p).allocating(), |fs| {
            let m = create_mode(fs, p, mode, umask)?;
            fs.mknod(p, name.as_bytes(), m, uid, gid, u64::from(rdev))
        });
        self.learned(p, name.as_bytes(), r.as_ref().ok().map(|a| a.ino));
        self.reply_new_entry(r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _s = debug_span!("mkdir", parent = parent.0, ?name).entered();
        let p = self.ino(parent);
        let (uid, gid) = (req.uid(), req.gid());
        self.naming(p);
        let r = self.with(LockPlan::ex(p).allocating(), |fs| {
            let m = create_mode(fs, p, mode, umask)?;
            fs.mkdir(p, name.as_bytes(), m, uid, gid)
        });
        self.learned(p, name.as_bytes(), r.as_ref().ok().map(|a| a.ino));
        self.reply_new_entry(r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = debug_span!("unlink", parent = parent.0, ?name).entered();
        let p = self.ino(parent);
        let r = self.remove(p, name, |fs, n| fs.unlink(p, n));
        reply_empty(r, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = debug_span!("rmdir", parent = parent.0, ?name).entered();
        let p = self.ino(parent);
        let r = self.remove(p, name, |fs, n| fs.rmdir(p, n));
        reply_empty(r, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _s = debug_span!("symlink", parent = parent.0, ?link_name).entered();
        let p = self.ino(parent);
        let (uid, gid) = (req.uid(), req.gid());
        let t = target.as_os_str().as_bytes().to_vec();
        self.naming(p);
        let r = self.with(LockPlan::ex(p).allocating(), |fs| {
            fs.symlink(p, link_name.as_bytes(), &t, uid, gid)
        });
        self.learned(p, link_name.as_bytes(), r.as_ref().ok().map(|a| a.ino));
        self.reply_new_entry(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _s = debug_span!(
            "rename",
            parent = parent.0,
            ?name,
            newparent = newparent.0,
            ?newname
        )
        .entered();
        let (p, np) = (self.ino(parent), self.ino(newparent));
        let f = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        let (n, nn) = (name.as_bytes(), newname.as_bytes());
        // Between directories: under the rename glock, which every change
        // of the tree's shape takes, reading the ancestors (the check that
        // a directory does not move into itself) from disk, not from a
        // cache that no glock of ours covers.
        let between = self.cluster.is_some() && p != np;
        // The kernel moves its own name from one directory to the other.
        self.naming(p);
        self.naming(np);
        let r = self.with_named(
            &[(p, n), (np, nn)],
            |c| {
                let mut plan = LockPlan::ex(p)
                    .and_ex(np)
                    .and(c[0], true)
                    .and(c[1], true)
                    .and_rgrp(c[1].and_then(|v| self.rgrp_of(v)))
                    .allocating();
                plan.rename = between;
                plan
            },
            |fs, c| {
                if between {
                    fs.drop_caches()?;
                }
                let r = fs.rename(p, n, np, nn, f);
                if between {
                    fs.drop_caches()?;
                }
                r?;
                // In a cluster, a name replaced by the rename may lose its
                // last link: the inode is freed once nobody has it open.
                Ok(match f.exchange {
                    true => None,
                    false => c.get(1).copied().flatten().map(ino_of),
                })
            },
        );
        if let Ok(Some(victim)) = r {
            self.free_if_last(victim.0);
        }
        reply_empty(r.map(drop), reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _s = debug_span!("link", ino = ino.0, newparent = newparent.0, ?newname).entered();
        let (i, np) = (self.ino(ino), self.ino(newparent));
        let plan = LockPlan::ex(i).and_ex(np).allocating();
        self.naming(np);
        let r = self.with(plan, |fs| fs.link(i, np, newname.as_bytes()));
        self.reply_entry(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _s = debug_span!("open", ino = ino.0).entered();
        let i = self.ino(ino);
        if let Err(e) = self.opened(i.0, false) {
            return reply.error(e);
        }
        match self.with(LockPlan::sh(i), |fs| fs.open(i)) {
            Ok(()) => reply.opened(FileHandle(0), self.fopen_flags()),
            Err(e) => {
                self.closed(i.0);
                reply.error(e)
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _s = debug_span!("read", ino = ino.0, offset, size).entered();
        let i = self.ino(ino);
        match self.with(LockPlan::sh(i), |fs| fs.read(i, offset, size as usize)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _s = debug_span!("write", ino = ino.0, offset, len = data.len()).entered();
        let i = self.ino(ino);
        // In a cluster the kernel's idea of the end of file may be stale
        // (another node appended): an O_APPEND write goes to the end as
        // this node finds it under the cluster lock.
        let append = self.cluster.is_some() && flags.0 & libc::O_APPEND != 0;
        let r = self.with(LockPlan::ex(i).allocating(), |fs| {
            let at = if append { fs.getattr(i)?.size } else { offset };
            fs.write(i, at, data)
        });
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close by a process drops its POSIX locks on the file.
        if let Some(c) = &self.cluster {
            c.hooks.release_locks(self.ino(ino).0, lock_owner.0);
        }
        reply.ok();
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: fuser::ReplyLock,
    ) {
        let _s = debug_span!("getlk", ino = ino.0, start, end, typ).entered();
        let Some(c) = &self.cluster else {
            return reply.error(Errno::ENOSYS);
        };
        match c
            .hooks
            .getlk(self.ino(ino).0, lock_owner.0, start, end, typ)
        {
            // The holder may be on another node: no local pid to give.
            Ok(Some((s, e, t))) => reply.locked(s, e, t, 0),
            Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
            Err(e) => reply.error(e),
        }
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        flock: bool,
        reply: ReplyEmpty,
    ) {
        let _s = debug_span!("setlk", ino = ino.0, start, end, typ, sleep, flock).entered();
        let Some(c) = &self.cluster else {
            return reply.error(Errno::ENOSYS);
        };
        let lk = LockRequest {
            unique: req.unique().0,
            ino: self.ino(ino).0,
            owner: lock_owner.0,
            start,
            end,
            typ,
            wait: sleep,
            flock,
        };
        // A waiting request is answered from the DLM's thread when granted:
        // this FUSE thread goes on serving.
        let done = Box::new(move |r: Result<(), Errno>| match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        });
        c.hooks.setlk(lk, done);
    }

    fn interrupt(&self, _req: &Request, unique: fuser::RequestId) -> Result<(), Errno> {
        let _s = debug_span!("interrupt", unique = unique.0).entered();
        // Without a cluster nothing of ours waits: the kernel may stop
        // sending interrupts.
        let Some(c) = &self.cluster else {
            return Err(Errno::ENOSYS);
        };
        c.hooks.interrupt(unique.0);
        Ok(())
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _s = debug_span!("release", ino = ino.0).entered();
        let i = self.ino(ino);
        // The kernel names the open file when it held a flock
        // (FUSE_RELEASE_FLOCK_UNLOCK): the last close drops it.
        if let (Some(c), Some(owner)) = (&self.cluster, lock_owner) {
            c.hooks.release_flock(i.0, owner.0);
        }
        let r = self.with(LockPlan::sh(i), |fs| fs.release(i));
        self.closed(i.0);
        reply_empty(r, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _s = debug_span!("fsync", ino = ino.0).entered();
        reply_empty(self.with(LockPlan::default(), |fs| fs.sync()), reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _s = debug_span!("readdir", ino = ino.0, offset).entered();
        let i = self.ino(ino);
        match self.with(LockPlan::sh(i), |fs| fs.readdir(i, offset, 256)) {
            Ok(ents) => {
                for e in ents {
                    let child = self.fuse_ino(Ino(e.inum.no_addr));
                    if reply.add(
                        child,
                        e.cookie,
                        kind_of_dt(e.de_type),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _s = debug_span!("fsyncdir", ino = ino.0).entered();
        reply_empty(self.with(LockPlan::default(), |fs| fs.sync()), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _s = debug_span!("statfs").entered();
        let plan = match &self.cluster {
            Some(c) => LockPlan::sh(Ino(c.statfs_ino)),
            None => LockPlan::default(),
        };
        match self.with(plan, |fs| fs.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks,
                s.bfree,
                s.bfree,
                s.files + s.ffree,
                s.ffree,
                s.bsize,
                255,
                s.bsize,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _s = debug_span!("create", parent = parent.0, ?name).entered();
        let p = self.ino(parent);
        let (uid, gid) = (req.uid(), req.gid());
        // In a cluster the kernel's "it does not exist" may be stale:
        // another node may have created the name since. Without O_EXCL
        // that is an open of the existing file, as on a local volume.
        let reuse = self.cluster.is_some() && flags & libc::O_EXCL == 0;
        self.naming(p);
        let trunc = flags & libc::O_TRUNC != 0;
        let n = name.as_bytes();
        let r = self.with_named(
            &[(p, n)],
            // An existing file is opened: exclusively only to truncate it.
            |c| LockPlan::ex(p).and(c[0], trunc).allocating(),
            |fs, c| {
                // Only a name just read as present is looked up again.
                if let (true, Some(Some(inum))) = (reuse, c.first()) {
                    if let Ok(a) = fs.entry_attr(*inum) {
                        return open_existing(fs, a, flags, uid, gid).map(|a| (a, false));
                    }
                }
                let m = create_mode(fs, p, mode, umask)?;
                let a = match c.first() {
                    // Read as absent just now, under the parent's glock.
                    Some(None) => fs.mknod_absent(p, n, m, uid, gid)?,
                    _ => fs.mknod(p, n, m, uid, gid, 0)?,
                };
                fs.open(a.ino)?;
                Ok((a, true))
            },
        );
        let r = r.and_then(|(a, new)| {
            // Open here from now on. Another node can have the new inode
            // only in SH (it opened it already) or cached from an inode
            // it freed at this address, which it gives up at once: this
            // waits for no open file.
            self.opened(a.ino.0, new).map(|()| (a, new))
        });
        self.learned(p, n, r.as_ref().ok().map(|(a, _)| a.ino));
        // An existing file opened: its glock in SH only.
        match r.map(|(a, new)| self.hold(a, new)) {
            Ok((a, held)) => reply.created(
                &if held {
                    self.ttl()
                } else {
                    self.unlocked_attr_ttl()
                },
                &self.file_attr(&a),
                Generation(a.generation),
                FileHandle(0),
                self.fopen_flags(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let _s = debug_span!("getxattr", ino = ino.0, ?name).entered();
        let i = self.ino(ino);
        match self.with(LockPlan::sh(i), |fs| fs.getxattr(i, name.as_bytes())) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        let _s = debug_span!("listxattr", ino = ino.0).entered();
        let i = self.ino(ino);
        match self.with(LockPlan::sh(i), |fs| fs.listxattr(i)) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32);
                } else if buf.len() > size as usize {
                    reply.error(Errno::from_i32(libc::ERANGE));
                } else {
                    reply.data(&buf);
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _s = debug_span!("setxattr", ino = ino.0, ?name, len = value.len()).entered();
        let i = self.ino(ino);
        reply_empty(
            self.with(LockPlan::ex(i).allocating(), |fs| {
                fs.setxattr(i, name.as_bytes(), value, flags)
            }),
            reply,
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = debug_span!("removexattr", ino = ino.0, ?name).entered();
        let i = self.ino(ino);
        let plan = LockPlan::ex(i).allocating();
        reply_empty(
            self.with(plan, |fs| fs.removexattr(i, name.as_bytes())),
            reply,
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _s = debug_span!("fallocate", ino = ino.0, offset, length, mode).entered();
        let i = self.ino(ino);
        let plan = LockPlan::ex(i).allocating();
        reply_empty(
            self.with(plan, |fs| fs.fallocate(i, offset, length, mode)),
            reply,
        );
    }
}

/// Mount options `mount.clusterfs -o` understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// `lockproto=`: overrides the superblock's.
    pub lockproto: Option<String>,
    /// `commit=` seconds between periodic journal commits.
    pub commit_secs: u64,
    /// POSIX ACLs enforced (`acl`, the default here; `noacl` turns it off).
    pub acl: bool,
    /// `allow_other`: other users may use the mount (needed for ACLs and
    /// permissions to matter to anyone but the mounting user).
    pub allow_other: bool,
    /// `spectator`: read-only, without a journal; nothing is written to
    /// the device.
    pub spectator: bool,
    /// `hostdata=jid=N`: the journal a `lock_nolock` mount writes through
    /// (as the kernel's lock_nolock takes it); default journal0.
    pub jid: Option<u32>,
    /// `locktable=CLUSTER:FSNAME`: overrides the superblock's.
    pub locktable: Option<String>,
    /// `dlm_port=N`: the TCP port of the volume's lockspace on every node
    /// (default: derived from FSNAME, see `cluster::default_port`).
    pub dlm_port: Option<u16>,
    /// `metrics=ADDR:PORT`: serve the lockspace's and the glocks' counters
    /// as `GET /metrics` (Prometheus text) there, besides the DLM control
    /// socket's `metrics` command.
    pub metrics: Option<std::net::SocketAddr>,
    /// `dir_placement=rgrp` (the default): the DLM keeps the directory
    /// entries of inode, iopen and rgrp glocks on the node whose share of
    /// the resource groups holds them (`cluster::placement`);
    /// `dir_placement=hash` places them by a hash of the name as the
    /// kernel's DLM does. Every node of a volume must mount it alike
    /// (checked).
    pub rgrp_placement: bool,
    /// `glock_cache=N`: how many glocks nobody holds stay cached in SH,
    /// DF or EX before the longest unused is dropped, as the kernel's
    /// shrinker trims its glock LRU (default 65,536).
    pub glock_cache: usize,
    /// Options accepted for compatibility but without effect here.
    pub ignored: Vec<String>,
}

impl MountOptions {
    /// Parses a comma-separated `-o` string.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut o = MountOptions {
            lockproto: None,
            commit_secs: 5,
            acl: true,
            allow_other: false,
            spectator: false,
            jid: None,
            locktable: None,
            dlm_port: None,
            metrics: None,
            rgrp_placement: true,
            glock_cache: crate::glock::GlockConfig::default().cached_kept,
            ignored: Vec::new(),
        };
        for opt in s.split(',').filter(|x| !x.is_empty()) {
            let (k, v) = opt
                .split_once('=')
                .map_or((opt, None), |(k, v)| (k, Some(v)));
            match (k, v) {
                ("lockproto", Some(v)) => o.lockproto = Some(v.to_string()),
                ("acl", None) => o.acl = true,
                ("noacl", None) => o.acl = false,
                ("allow_other", None) => o.allow_other = true,
                ("spectator", None) => o.spectator = true,
                ("locktable", Some(v)) => o.locktable = Some(v.to_string()),
                ("dlm_port", Some(v)) => {
                    o.dlm_port = Some(v.parse().map_err(|_| format!("bad dlm_port {v:?}"))?);
                }
                ("metrics", Some(v)) => {
                    o.metrics = Some(v.parse().map_err(|_| {
                        format!("bad metrics address {v:?} (want ADDR:PORT, e.g. 127.0.0.1:9840)")
                    })?);
                }
                ("dir_placement", Some("rgrp")) => o.rgrp_placement = true,
                ("dir_placement", Some("hash")) => o.rgrp_placement = false,
                ("dir_placement", Some(v)) => {
                    return Err(format!("bad dir_placement {v:?} (want rgrp or hash)"));
                }
                ("glock_cache", Some(v)) => {
                    o.glock_cache = v
                        .parse()
                        .map_err(|_| format!("bad glock_cache {v:?} (want a number of glocks)"))?;
                }
                ("hostdata", Some(v)) => {
                    if o.parse_hostdata(v)? {
                        o.ignored.push(opt.to_string());
                    }
                }
                ("commit", Some(v)) => {
                    o.commit_secs = v
                        .parse()
                        .map_err(|_| format!("bad commit interval {v:?}"))?;
                }
                ("errors" | "quota" | "data" | "statfs_quantum" | "statfs_percent", Some(_))
                | (
                    "localflocks" | "discard" | "nodiscard" | "barrier" | "nobarrier" | "rgrplvb"
                    | "norgrplvb" | "rw" | "noatime" | "relatime" | "defaults",
                    None,
                ) => o.ignored.push(opt.to_string()),
                _ => return Err(format!("unknown mount option {opt:?}")),
            }
        }
        Ok(o)
    }

    /// Takes `jid=N` from a `hostdata=` value (items separated by `:`);
    /// true when other items were left without effect.
    fn parse_hostdata(&mut self, v: &str) -> Result<bool, String> {
        let mut others = false;
        for item in v.split(':').filter(|x| !x.is_empty()) {
            match item.strip_prefix("jid=") {
                Some(n) => {
                    self.jid = Some(n.parse().map_err(|_| format!("bad jid {n:?}"))?);
                }
                None => others = true,
            }
        }
        Ok(others)
    }
}

/// How long a signal-initiated unmount retries while the mount is busy
/// before it detaches lazily (the session then ends when the last user
/// lets go, like `umount -l`).
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// Unmounts the kernel side at `mp`: umount2(2) when we may, else
/// `fusermount3 -u`; busy mounts are retried, then detached lazily. The
/// FUSE session ends once the kernel lets go.
fn unmount_kernel(mp: &Path) {
    let start = std::time::Instant::now();
    loop {
        let lazy = start.elapsed() >= BUSY_RETRY;
        match try_unmount(mp, lazy) {
            Ok(()) => return,
            Err(nix::errno::Errno::EBUSY) if !lazy => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                error!(error = %e, lazy, "unmount failed");
                return;
            }
        }
    }
}

/// How long a session may outlive its unmount before its connection is
/// aborted.
const PINNED_GRACE: Duration = Duration::from_secs(5);

/// After our unmount the session should end at once; it does not when
/// another mount namespace copied the mount while it was up (a namespace
/// made with private propagation keeps its copy, and with it the FUSE
/// connection, alive), and then this process would serve forever. If it
/// still runs after [`PINNED_GRACE`], connection `conn` is
/// aborted through fusectl (mounted if needed), so that this node's volume
/// is released cleanly; the copy in the other namespace gets ENOTCONN.
/// The FUSE connection number of the mount at `mp` (the minor of its
/// device, as fusectl names it), from this namespace's mount table.
fn fuse_connection(mp: &Path) -> Option<u32> {
    // The parent resolved, not the mount point itself (its root answers
    // only once the session serves).
    let parent = mp.parent().filter(|p| !p.as_os_str().is_empty());
    let mp = std::fs::canonicalize(parent.unwrap_or(Path::new(".")))
        .ok()?
        .join(mp.file_name()?);
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table
        .lines()
        .rev()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && Path::new(f[4]) == mp).then(|| f[2].split(':').nth(1)?.parse().ok())?
        })
        .next()
}

fn abort_if_pinned(conn: u32, ended: Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        std::thread::sleep(PINNED_GRACE);
        if ended.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let dir = Path::new("/sys/fs/fuse/connections");
        let conn = dir.join(conn.to_string());
        if !conn.exists() {
            let _ = nix::mount::mount(
                Some("fusectl"),
                dir,
                Some("fusectl"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
        }
        warn!(
            connection = %conn.display(),
            "still serving after the unmount: the mount is held in another mount namespace; \
             aborting the FUSE connection"
        );
        if let Err(e) = std::fs::write(conn.join("abort"), b"1") {
            error!(error = %e, "cannot abort the FUSE connection");
        }
    });
}

fn try_unmount(mp: &Path, lazy: bool) -> nix::Result<()> {
    use nix::mount::{umount2, MntFlags};
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match umount2(mp, flags) {
        Err(nix::errno::Errno::EPERM) => {
            // Not privileged: the setuid helper unmounts user mounts.
            let mut cmd = std::process::Command::new("fusermount3");
            cmd.arg("-u");
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd
                .arg(mp)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|_| nix::errno::Errno::ENOENT)?;
            if out.status.success() {
                Ok(())
            } else {
                Err(nix::errno::Errno::EBUSY)
            }
        }
        r => r,
    }
}

/// In a cluster: looks at the inodes whose iopen glock another node asked
/// for ([`FuseFs::iopen_wanted`]); after each failed node's journal this
/// node replays, frees the inodes that node had open and unlinked (see
/// [`FuseFs::reclaim_unlinked`]); ends with the file system.
fn spawn_reclaimer(fuse: FuseFs) {
    let Some(c) = fuse.cluster.clone() else {
        return;
    };
    std::thread::spawn(move || {
        loop {
            c.deletes.wait(RECLAIM_POLL);
            // Never beside the unmount, which takes the turn for good.
            let turn = c.deletes.turn.lock();
            if *turn || fuse.inner.lock().is_none() {
                return;
            }
            for ino in c.deletes.take() {
                fuse.iopen_wanted(ino);
            }
            fuse.reclaim_if_recovered(&c);
        }
    });
}

/// How often the reclaimer looks for replayed journals.
const RECLAIM_POLL: Duration = Duration::from_millis(500);

/// Commits the journal every `secs` seconds until the filesystem is gone.
fn spawn_committer(shared: Arc<Mutex<Option<FileSystem>>>, secs: u64) {
    if secs == 0 {
        return;
    }
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(secs));
        let mut g = shared.lock();
        let Some(fs) = g.as_mut() else { return };
        if let Err(e) = fs.sync() {
            error!(error = %e, "periodic commit failed");
        }
    });
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, and so in
/// every thread it starts afterwards; [`serve`] takes them with `sigwait`
/// to unmount (and SIGUSR1, which logs a cluster mount's glocks). A mount
/// that starts threads before `serve` (the cluster's) calls this first, or
/// a signal could kill the process uncleanly.
pub fn block_unmount_signals() -> std::io::Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        sigs.add(s);
    }
    sigs.thread_block().map_err(std::io::Error::from)?;
    Ok(sigs)
}

/// Serves `fs` on `mountpoint` until it is unmounted (`fusermount3 -u`)
/// or the process gets SIGTERM, SIGINT or SIGHUP (which unmount it), then
/// unmounts the volume cleanly. `mounted` runs once the kernel mount is up.
/// Call before starting other threads: the signals are blocked process-wide
/// and taken by one thread with `sigwait`.
pub fn serve(
    fs: FileSystem,
    mountpoint: &Path,
    fsname: &str,
    opts: &MountOptions,
    mounted: impl FnOnce(),
) -> std::io::Result<()> {
    serve_fuse(FuseFs::new(fs), mountpoint, fsname, opts, mounted)
}

/// [`serve`] for an adapter built by the caller (a cluster mount gives it
/// its [`ClusterHooks`] and keeps its [`FuseFs::shared`] handle).
pub fn serve_fuse(
    fuse: FuseFs,
    mountpoint: &Path,
    fsname: &str,
    opts: &MountOptions,
    mounted: impl FnOnce(),
) -> std::io::Result<()> {
    let sigs = block_unmount_signals()?;
    let fuse = fuse.with_acl(opts.acl);
    let shared = fuse.shared();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(fsname.to_string()),
        fuser::MountOption::Subtype("clusterfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    if opts.spectator {
        // As the kernel's gfs2 marks a spectator's superblock: the VFS
        // refuses changes before they reach us (and so before any of
        // them could ask another node for a glock in EX).
        config.mount_options.push(fuser::MountOption::RO);
    }
    if fuse.cluster.is_some() {
        // An operation may wait for another node's glock: the others go
        // on meanwhile (each thread with its own /dev/fuse descriptor).
        config.n_threads = Some(FUSE_THREADS);
        config.clone_fd = true;
        // One thread reads while the others wait: a lock waiter hands
        // reading on (lock_dlm); consecutive requests find a warm thread.
        config.read_in_turns = true;
    }
    let kernel = fuse.kernel_cache();
    let cluster = fuse.cluster.is_some();
    let dump_hooks = fuse.cluster.as_ref().map(|c| c.hooks.clone());
    if cluster {
        spawn_reclaimer(fuse.clone());
    }
    let session = fuser::Session::new(fuse, mountpoint, &config)?;
    let _ = kernel.notifier.set(session.notifier());
    if cluster {
        kernel.probe_epoch(std::os::fd::AsFd::as_fd(&session));
    }
    info!(mountpoint = %mountpoint.display(), "mounted");
    mounted();
    spawn_committer(Arc::clone(&shared), opts.commit_secs);
    let mp = mountpoint.to_path_buf();
    // Not a stat of the mount point: that would wait for this session,
    // which is not serving yet.
    let conn = fuse_connection(mountpoint);
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let session_ended = ended.clone();
    let mut armed = false;
    std::thread::spawn(move || loop {
        match sigs.wait() {
            Ok(nix::sys::signal::Signal::SIGUSR1) => {
                // The kernel's glocks file in debugfs, for this mount.
                match &dump_hooks {
                    Some(h) => {
                        for line in h.dump() {
                            info!("glock {line}");
                        }
                    }
                    None => info!("SIGUSR1: not a cluster mount, no glocks to show"),
                }
            }
            Ok(sig) => {
                info!(?sig, "unmounting on signal");
                unmount_kernel(&mp);
                if let (Some(conn), false) = (conn, armed) {
                    armed = true;
                    abort_if_pinned(conn, session_ended.clone());
                }
            }
            Err(e) => {
                error!(error = %e, "sigwait failed");
                return;
            }
        }
    });
    let run = session.run();
    ended.store(true, std::sync::atomic::Ordering::SeqCst);
    run?;
    // The session's end called destroy; make sure the volume is clean.
    if let Some(fs) = shared.lock().take() {
        fs.unmount()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_takes_inodes_by_number_each_once_exclusive_if_asked_anywhere() {
        let mut plan = LockPlan::sh(Ino(30))
            .and_ex(Ino(10))
            .and_sh(Ino(20))
            .and_ex(Ino(30))
            .and_sh(Ino(10))
            .and_sh(Ino(20))
            .and_rgrp(Some(7))
            .and_rgrp(Some(5))
            .and_rgrp(Some(7));
        plan.order();
        assert_eq!(
            plan.inodes.as_slice(),
            [(10, true), (20, false), (30, true)]
        );
        assert_eq!(plan.rgrps.as_slice(), [5, 7]);
        let mut none = LockPlan::default();
        none.order();
        assert!(none.inodes.is_empty() && none.rgrps.is_empty());
    }
}
