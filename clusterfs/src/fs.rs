//! The filesystem operations, without FUSE: what a mount calls.
//!
//! Inode numbers are dinode block addresses ([`Ino`]). Each operation takes
//! the inode glocks it needs, changes metadata inside the volume's running
//! transaction, and commits when the transaction grows large; `fsync` and
//! `sync` commit at once.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use tracing::debug;

use crate::block::BlockDevice;
use crate::dirbuild::{pack_dirents, DirEntryIn};
use crate::falloc::Falloc;
use crate::lock::{Glock, GlockMode, LockManager};
use crate::ondisk::{dif, dt_from_mode, BlockState, Dinode, Inum, GFS2_FNAMESIZE, GFS2_FORMAT_DE};
use crate::volume::{FsError, MountInfo, MountParams, Result, Volume};

pub use crate::dir::ListEntry;

/// An inode number: the dinode's block address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

/// A timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub sec: u64,
    /// Nanoseconds.
    pub nsec: u32,
}

/// Current time as (seconds, nanoseconds).
pub fn now() -> (u64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// Inode attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Size in bytes.
    pub size: u64,
    /// Allocated blocks, in filesystem blocks.
    pub blocks: u64,
    /// Mode (type and permissions).
    pub mode: u32,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Change time.
    pub ctime: Timestamp,
    /// Block size.
    pub blksize: u32,
    /// Generation.
    pub generation: u64,
}

/// Attribute changes for [`FileSystem::setattr`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
}

/// Filesystem totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Block size.
    pub bsize: u32,
    /// Data blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Dinodes in use.
    pub files: u64,
    /// Dinodes that could still be made (one per free block).
    pub ffree: u64,
}

/// Rename flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail if the target exists.
    pub noreplace: bool,
    /// Swap the two names.
    pub exchange: bool,
}

/// A mounted filesystem.
#[derive(Debug)]
pub struct FileSystem {
    vol: Volume,
    root: Ino,
    open: HashMap<Ino, u32>,
    /// In a cluster another node may have an inode open: a last unlink
    /// only marks it unlinked, and whoever wins its iopen glock frees it
    /// ([`FileSystem::free_if_unlinked`]).
    defer_free: bool,
}

fn de_type(mode: u32) -> u16 {
    dt_from_mode(mode)
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::Invalid("bad name"));
    }
    if name.len() > GFS2_FNAMESIZE {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

impl FileSystem {
    /// Mounts the volume on `dev` as `lock_nolock` does: journal0, every
    /// dirty journal replayed.
    pub fn mount(
        dev: Arc<dyn BlockDevice>,
        locks: Arc<dyn LockManager>,
    ) -> Result<(Self, MountInfo)> {
        Self::mount_with(dev, locks, MountParams::nolock())
    }

    /// Mounts the volume on `dev` with the journal and recovery `params`
    /// choose (a spectator mount is read-only: changes fail with EROFS).
    pub fn mount_with(
        dev: Arc<dyn BlockDevice>,
        locks: Arc<dyn LockManager>,
        params: MountParams,
    ) -> Result<(Self, MountInfo)> {
        let (vol, info) = Volume::open_with(dev, locks, params)?;
        let root = Ino(vol.sb.sb_root_dir.no_addr);
        Ok((
            FileSystem {
                vol,
                root,
                open: HashMap::default(),
                defer_free: false,
            },
            info,
        ))
    }

    /// Commits everything and marks the journal clean.
    pub fn unmount(mut self) -> Result<()> {
        let open: Vec<Ino> = self.open.keys().copied().collect();
        for ino in open {
            self.open.insert(ino, 1);
            self.release(ino)?;
        }
        self.vol.unmount()
    }

    /// The root directory.
    pub fn root(&self) -> Ino {
        self.root
    }

    /// The volume underneath (for tools and tests).
    pub fn volume(&mut self) -> &mut Volume {
        &mut self.vol
    }

    /// Runs `f` holding exclusive glocks on `inodes` (in address order),
    /// withdrawing the volume if it finds corruption.
    fn locked<T>(&mut self, inodes: &[Ino], f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let mut sorted: Vec<u64> = inodes.iter().map(|i| i.0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let locks = Arc::clone(self.vol.locks());
        for &a in &sorted {
            locks.acquire(Glock::Inode(a), GlockMode::Exclusive)?;
        }
        self.vol.begin_op();
        let res = f(self);
        if res.is_err() {
            self.vol.abort_op();
        } else {
            self.vol.end_op();
        }
        for &a in sorted.iter().rev() {
            locks.release(Glock::Inode(a));
        }
        if let Err(FsError::Corrupt(why)) = &res {
            self.vol.withdraw(why);
        }
        if res.is_ok() {
            self.vol.maybe_commit()?;
        }
        res
    }

    fn attr_of(&self, di: &Dinode) -> Attr {
        Attr {
            ino: Ino(di.di_num.no_addr),
            size: di.di_size,
            blocks: di.di_blocks,
            mode: di.di_mode,
            nlink: di.di_nlink,
            uid: di.di_uid,
            gid: di.di_gid,
            rdev: libc::makedev(di.di_major, di.di_minor) as u32,
            atime: Timestamp {
                sec: di.di_atime,
                nsec: di.di_atime_nsec,
            },
            mtime: Timestamp {
                sec: di.di_mtime,
                nsec: di.di_mtime_nsec,
            },
            ctime: Timestamp {
                sec: di.di_ctime,
                nsec: di.di_ctime_nsec,
            },
            blksize: self.vol.geo.bsize,
            generation: di.di_generation,
        }
    }

    fn dinode(&mut self, ino: Ino) -> Result<Dinode> {
        let di = self.vol.dinode(ino.0)?;
        if di.di_nlink == 0 && !self.open.contains_key(&ino) {
            return Err(FsError::NotFound);
        }
        Ok(di)
    }

    fn dir(&mut self, ino: Ino) -> Result<Dinode> {
        let di = self.dinode(ino)?;
        if !di.is_dir() {
            return Err(FsError::NotDir);
        }
        Ok(di)
    }

    fn touch(di: &mut Dinode, m: bool, c: bool) {
        let (s, n) = now();
        if m {
            di.di_mtime = s;
            di.di_mtime_nsec = n;
        }
        if c {
            di.di_ctime = s;
            di.di_ctime_nsec = n;
        }
    }

    /// Attributes of `ino`.
    pub fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        let di = self.dinode(ino)?;
        Ok(self.attr_of(&di))
    }

    /// Looks `name` up in `parent`.
    pub fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let inum = self.lookup_entry(parent, name)?.ok_or(FsError::NotFound)?;
        self.entry_attr(inum)
    }

    /// The inode `parent/name` names, if any, reading the directory only
    /// (in a cluster the caller holds the parent's glock, not yet the
    /// child's: its dinode must not be read, nor cached, here).
    pub fn lookup_entry(&mut self, parent: Ino, name: &[u8]) -> Result<Option<Inum>> {
        if name.len() > GFS2_FNAMESIZE {
            return Err(FsError::NameTooLong);
        }
        self.dir(parent)?;
        Ok(self.vol.dir_lookup(parent.0, name)?.map(|(inum, _)| inum))
    }

    /// The attributes of the inode a directory entry just read names
    /// ([`Self::lookup_entry`]): [`Self::lookup`] without searching the
    /// directory again.
    pub fn entry_attr(&mut self, inum: Inum) -> Result<Attr> {
        let di = self.vol.dinode(inum.no_addr)?;
        if di.di_num != inum {
            return Err(FsError::Corrupt(format!(
                "a directory entry points at a stale inode {}",
                inum.no_addr
            )));
        }
        Ok(self.attr_of(&di))
    }

    fn new_dinode(
        &mut self,
        parent: &Dinode,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    ) -> Result<Dinode> {
        let (addr, formal) = self.vol.alloc_dinode(parent.di_num.no_addr)?;
        let (s, n) = now();
        let num = Inum {
            no_formal_ino: formal,
            no_addr: addr,
        };
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        let mut di = Dinode {
            di_num: num,
            di_mode: mode,
            di_uid: uid,
            di_gid: gid,
            di_nlink: if is_dir { 2 } else { 1 },
            di_blocks: 1,
            di_atime: s,
            di_mtime: s,
            di_ctime: s,
            di_atime_nsec: n,
            di_mtime_nsec: n,
            di_ctime_nsec: n,
            di_major: libc::major(rdev as libc::dev_t),
            di_minor: libc::minor(rdev as libc::dev_t),
            di_goal_meta: addr,
            di_goal_data: addr,
            di_generation: formal,
            di_flags: parent.di_flags & dif::INHERIT_JDATA & if is_dir { u32::MAX } else { 0 },
            ..Default::default()
        };
        let bs = self.vol.bsize();
        let block = self.vol.meta_new(addr);
        if is_dir {
            di.di_payload_format = GFS2_FORMAT_DE;
            let ents = [
                DirEntryIn {
                    name: b".".to_vec(),
                    inum: num,
                    de_type: crate::ondisk::dt::DIR,
                },
                DirEntryIn {
                    name: b"..".to_vec(),
                    inum: parent.di_num,
                    de_type: crate::ondisk::dt::DIR,
                },
            ];
            let region = pack_dirents(&ents, bs - Dinode::SIZE)?;
            block[Dinode::SIZE..].copy_from_slice(&region);
            di.di_size = (bs - Dinode::SIZE) as u64;
            di.di_entries = 2;
        }
        di.encode(block);
        Ok(di)
    }

    /// Creates a file, device node, FIFO or socket (`mode` carries the type).
    pub fn mknod(
        &mut self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    ) -> Result<Attr> {
        self.make_node(parent, name, (mode, uid, gid, rdev), true)
    }

    /// [`Self::mknod`] of a name the caller has just read as absent from
    /// `parent` ([`Self::lookup_entry`]) with nothing changed since (a
    /// cluster's create, under the parent's glock in EX): the directory is
    /// not searched again.
    pub fn mknod_absent(
        &mut self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.make_node(parent, name, (mode, uid, gid, 0), false)
    }

    fn make_node(
        &mut self,
        parent: Ino,
        name: &[u8],
        (mode, uid, gid, rdev): (u32, u32, u32, u64),
        search: bool,
    ) -> Result<Attr> {
        check_name(name)?;
        self.vol.check_writable()?;
        let mode = if mode & libc::S_IFMT == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        self.locked(&[parent], |fs| {
            fs.do_create(parent, name, mode, uid, gid, rdev, search)
        })
    }

    /// Creates a directory.
    pub fn mkdir(
        &mut self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        check_name(name)?;
        self.vol.check_writable()?;
        let mode = libc::S_IFDIR | (mode & 0o7777);
        self.locked(&[parent], |fs| {
            fs.do_create(parent, name, mode, uid, gid, 0, true)
        })
    }

    /// Makes `parent/name`; `search`: fails if the name exists (else the
    /// caller knows it is absent).
    #[allow(clippy::too_many_arguments)]
    fn do_create(
        &mut self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
        search: bool,
    ) -> Result<Attr> {
        let mut pdi = self.dir(parent)?;
        if search && self.vol.dir_lookup(parent.0, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let di = self.new_dinode(&pdi, mode, uid, gid, rdev)?;
        let e = DirEntryIn {
            name: name.to_vec(),
            inum: di.di_num,
            de_type: de_type(mode),
        };
        self.vol.dir_add(&mut pdi, &e)?;
        if di.is_dir() {
            pdi.di_nlink += 1;
        }
        Self::touch(&mut pdi, true, true);
        self.vol.put_dinode(&pdi)?;
        self.vol.acl_inherit(parent.0, di.di_num.no_addr)?;
        let di = self.vol.dinode(di.di_num.no_addr)?;
        debug!(parent = parent.0, ino = di.di_num.no_addr, "created");
        Ok(self.attr_of(&di))
    }

    /// Creates a symbolic link to `target`.
    pub fn symlink(
        &mut self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        check_name(name)?;
        if target.is_empty() || target.len() as u64 > self.vol.geo.stuffed_max() {
            return Err(FsError::NameTooLong);
        }
        self.vol.check_writable()?;
        self.locked(&[parent], |fs| {
            let attr = fs.do_create(parent, name, libc::S_IFLNK | 0o777, uid, gid, 0, true)?;
            let mut di = fs.vol.dinode(attr.ino.0)?;
            fs.vol.write_file(&mut di, 0, target)?;
            fs.vol.put_dinode(&di)?;
            Ok(fs.attr_of(&di))
        })
    }

    /// The target of a symbolic link.
    pub fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        let di = self.dinode(ino)?;
        if di.di_mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(FsError::Invalid("not a symlink"));
        }
        if di.di_size > self.vol.geo.stuffed_max() {
            return Err(FsError::Corrupt(format!("symlink {} too long", ino.0)));
        }
        self.vol.read_file(ino.0, 0, di.di_size as usize)
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    pub fn link(&mut self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        self.vol.check_writable()?;
        self.locked(&[ino, newparent], |fs| {
            let mut di = fs.dinode(ino)?;
            if di.is_dir() {
                return Err(FsError::NotPermitted);
            }
            if di.di_nlink >= u32::MAX - 1 {
                return Err(FsError::TooManyLinks);
            }
            let mut pdi = fs.dir(newparent)?;
            if fs.vol.dir_lookup(newparent.0, newname)?.is_some() {
                return Err(FsError::Exists);
            }
            let e = DirEntryIn {
                name: newname.to_vec(),
                inum: di.di_num,
                de_type: de_type(di.di_mode),
            };
            fs.vol.dir_add(&mut pdi, &e)?;
            Self::touch(&mut pdi, true, true);
            fs.vol.put_dinode(&pdi)?;
            di.di_nlink += 1;
            Self::touch(&mut di, false, true);
            fs.vol.put_dinode(&di)?;
            Ok(fs.attr_of(&di))
        })
    }

    /// Removes a non-directory name.
    pub fn unlink(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.vol.check_writable()?;
        let (inum, _) = self
            .vol
            .dir_lookup(parent.0, name)?
            .ok_or(FsError::NotFound)?;
        self.locked(&[parent, Ino(inum.no_addr)], |fs| {
            let di = fs.vol.dinode(inum.no_addr)?;
            if di.is_dir() {
                return Err(FsError::IsDir);
            }
            fs.remove_name(parent, name, false)
        })
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(FsError::Invalid("rmdir ."));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        check_name(name)?;
        self.vol.check_writable()?;
        let (inum, _) = self
            .vol
            .dir_lookup(parent.0, name)?
            .ok_or(FsError::NotFound)?;
        self.locked(&[parent, Ino(inum.no_addr)], |fs| {
            let di = fs.vol.dinode(inum.no_addr)?;
            if !di.is_dir() {
                return Err(FsError::NotDir);
            }
            fs.remove_name(parent, name, true)
        })
    }

    /// Removes `parent/name` and drops the link it held.
    fn remove_name(&mut self, parent: Ino, name: &[u8], is_dir: bool) -> Result<()> {
        let mut pdi = self.dir(parent)?;
        let (inum, _) = self
            .vol
            .dir_lookup(parent.0, name)?
            .ok_or(FsError::NotFound)?;
        let mut di = self.vol.dinode(inum.no_addr)?;
        if is_dir && di.di_entries > 2 {
            return Err(FsError::NotEmpty);
        }
        self.vol.dir_remove(&mut pdi, name)?;
        if is_dir {
            pdi.di_nlink -= 1;
        }
        Self::touch(&mut pdi, true, true);
        self.vol.put_dinode(&pdi)?;
        di.di_nlink = if is_dir {
            0
        } else {
            di.di_nlink.saturating_sub(1)
        };
        Self::touch(&mut di, false, true);
        self.vol.put_dinode(&di)?;
        if di.di_nlink == 0 {
            self.drop_inode(Ino(inum.no_addr))?;
        }
        Ok(())
    }

    /// Frees an inode with no links, or marks it unlinked while open
    /// (here, or perhaps on another node: see `defer_free`).
    fn drop_inode(&mut self, ino: Ino) -> Result<()> {
        if self.defer_free || self.open.get(&ino).copied().unwrap_or(0) > 0 {
            self.vol.mark_dinode(ino.0, BlockState::Unlinked)
        } else {
            self.vol.dealloc_inode(ino.0)
        }
    }

    /// Renames `parent/name` to `newparent/newname`.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        check_name(name)?;
        check_name(newname)?;
        if flags.exchange && flags.noreplace {
            return Err(FsError::Invalid("RENAME_EXCHANGE with RENAME_NOREPLACE"));
        }
        self.vol.check_writable()?;
        let (src, _) = self
            .vol
            .dir_lookup(parent.0, name)?
            .ok_or(FsError::NotFound)?;
        let dst = self.vol.dir_lookup(newparent.0, newname)?;
        let mut lock = vec![parent, newparent, Ino(src.no_addr)];
        if let Some((d, _)) = dst {
            lock.push(Ino(d.no_addr));
        }
        if flags.exchange {
            let (dst, _) = dst.ok_or(FsError::NotFound)?;
            return self.locked(&lock, |fs| {
                fs.do_exchange(parent, name, newparent, newname, src, dst)
            });
        }
        self.locked(&lock, |fs| {
            fs.do_rename(
                parent,
                name,
                newparent,
                newname,
                src,
                dst.map(|d| d.0),
                flags,
            )
        })
    }

    /// RENAME_EXCHANGE: `parent/name` and `newparent/newname` swap inodes;
    /// directories moved between parents get their `..` and the parents'
    /// link counts fixed.
    fn do_exchange(
        &mut self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        src: Inum,
        dst: Inum,
    ) -> Result<()> {
        if src == dst {
            return Ok(());
        }
        let sdi = self.vol.dinode(src.no_addr)?;
        let ddi = self.vol.dinode(dst.no_addr)?;
        let moved = parent != newparent;
        if moved
            && ((sdi.is_dir() && self.is_ancestor(Ino(src.no_addr), newparent)?)
                || (ddi.is_dir() && self.is_ancestor(Ino(dst.no_addr), parent)?))
        {
            return Err(FsError::Invalid("exchange a directory into itself"));
        }
        let pdi = self.dir(parent)?;
        self.vol.dir_set(&pdi, name, dst, de_type(ddi.di_mode))?;
        let npdi = self.dir(newparent)?;
        self.vol
            .dir_set(&npdi, newname, src, de_type(sdi.di_mode))?;
        if moved {
            if sdi.is_dir() {
                self.vol
                    .dir_set(&sdi, b"..", npdi.di_num, crate::ondisk::dt::DIR)?;
            }
            if ddi.is_dir() {
                self.vol
                    .dir_set(&ddi, b"..", pdi.di_num, crate::ondisk::dt::DIR)?;
            }
        }
        // The old parent loses the moved-out directory and gains the
        // moved-in one; the new parent the other way round.
        let delta = i64::from(ddi.is_dir()) - i64::from(sdi.is_dir());
        for (dir, d) in [(parent, delta), (newparent, -delta)] {
            let mut di = self.dir(dir)?;
            if moved {
                di.di_nlink = (i64::from(di.di_nlink) + d) as u32;
            }
            Self::touch(&mut di, true, true);
            self.vol.put_dinode(&di)?;
        }
        for ino in [src.no_addr, dst.no_addr] {
            let mut di = self.vol.dinode(ino)?;
            Self::touch(&mut di, false, true);
            self.vol.put_dinode(&di)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn do_rename(
        &mut self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        src: Inum,
        dst: Option<Inum>,
        flags: RenameFlags,
    ) -> Result<()> {
        let sdi = self.vol.dinode(src.no_addr)?;
        self.dir(newparent)?;
        if let Some(d) = dst {
            if flags.noreplace {
                return Err(FsError::Exists);
            }
            if d == src {
                return Ok(());
            }
            let ddi = self.vol.dinode(d.no_addr)?;
            match (sdi.is_dir(), ddi.is_dir()) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if ddi.di_entries > 2 => return Err(FsError::NotEmpty),
                _ => {}
            }
        }
        if sdi.is_dir() && parent != newparent && self.is_ancestor(Ino(src.no_addr), newparent)? {
            return Err(FsError::Invalid("rename a directory into itself"));
        }
        if let Some(d) = dst {
            let ddi = self.vol.dinode(d.no_addr)?;
            self.remove_name(newparent, newname, ddi.is_dir())?;
        }
        let mut pdi = self.dir(parent)?;
        self.vol.dir_remove(&mut pdi, name)?;
        if sdi.is_dir() && parent != newparent {
            pdi.di_nlink -= 1;
        }
        Self::touch(&mut pdi, true, true);
        self.vol.put_dinode(&pdi)?;
        let mut npdi = self.dir(newparent)?;
        let e = DirEntryIn {
            name: newname.to_vec(),
            inum: src,
            de_type: de_type(sdi.di_mode),
        };
        self.vol.dir_add(&mut npdi, &e)?;
        if sdi.is_dir() && parent != newparent {
            npdi.di_nlink += 1;
        }
        Self::touch(&mut npdi, true, true);
        self.vol.put_dinode(&npdi)?;
        let mut sdi = self.vol.dinode(src.no_addr)?;
        if sdi.is_dir() && parent != newparent {
            self.vol
                .dir_set(&sdi, b"..", npdi.di_num, crate::ondisk::dt::DIR)?;
        }
        Self::touch(&mut sdi, false, true);
        self.vol.put_dinode(&sdi)
    }

    /// True when `dir` is `ino` or below it.
    fn is_ancestor(&mut self, ino: Ino, dir: Ino) -> Result<bool> {
        let mut cur = dir;
        for _ in 0..4096 {
            if cur == ino {
                return Ok(true);
            }
            if cur == self.root {
                return Ok(false);
            }
            let (up, _) = self
                .vol
                .dir_lookup(cur.0, b"..")?
                .ok_or(FsError::Corrupt("directory without ..".into()))?;
            cur = Ino(up.no_addr);
        }
        Err(FsError::Corrupt("directory tree loops".into()))
    }

    /// Reads up to `size` bytes at `off`.
    pub fn read(&mut self, ino: Ino, off: u64, size: usize) -> Result<Vec<u8>> {
        let di = self.dinode(ino)?;
        if di.is_dir() {
            return Err(FsError::IsDir);
        }
        self.vol.read_file(ino.0, off, size)
    }

    /// Writes `data` at `off`; returns the bytes written.
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8]) -> Result<usize> {
        self.vol.check_writable()?;
        const CHUNK: usize = 1 << 20;
        let mut done = 0;
        while done < data.len() {
            let n = CHUNK.min(data.len() - done);
            self.locked(&[ino], |fs| {
                let mut di = fs.dinode(ino)?;
                if di.is_dir() {
                    return Err(FsError::IsDir);
                }
                fs.vol
                    .write_file(&mut di, off + done as u64, &data[done..done + n])?;
                Self::touch(&mut di, true, true);
                fs.vol.put_dinode(&di)
            })?;
            done += n;
        }
        Ok(done)
    }

    /// Changes attributes (size changes truncate or extend).
    pub fn setattr(&mut self, ino: Ino, set: SetAttr) -> Result<Attr> {
        self.vol.check_writable()?;
        self.locked(&[ino], |fs| {
            let mut di = fs.dinode(ino)?;
            if let Some(size) = set.size {
                if di.is_dir() {
                    return Err(FsError::IsDir);
                }
                fs.vol.truncate(&mut di, size)?;
                Self::touch(&mut di, true, true);
            }
            if let Some(m) = set.mode {
                di.di_mode = (di.di_mode & libc::S_IFMT) | (m & 0o7777);
            }
            if let Some(u) = set.uid {
                di.di_uid = u;
            }
            if let Some(g) = set.gid {
                di.di_gid = g;
            }
            if let Some(t) = set.atime {
                di.di_atime = t.sec;
                di.di_atime_nsec = t.nsec;
            }
            if let Some(t) = set.mtime {
                di.di_mtime = t.sec;
                di.di_mtime_nsec = t.nsec;
            }
            Self::touch(&mut di, false, true);
            fs.vol.put_dinode(&di)?;
            if let Some(m) = set.mode {
                fs.vol.acl_chmod(ino.0, m)?;
                di = fs.vol.dinode(ino.0)?;
            }
            Ok(fs.attr_of(&di))
        })
    }

    /// fallocate(2): mode 0 / `FALLOC_FL_KEEP_SIZE` preallocate,
    /// `PUNCH_HOLE|KEEP_SIZE` frees blocks (reads give zeros),
    /// `ZERO_RANGE` (with or without KEEP_SIZE) zeroes; any other mode is
    /// EOPNOTSUPP.
    pub fn fallocate(&mut self, ino: Ino, off: u64, len: u64, mode: i32) -> Result<()> {
        let op = Falloc::from_mode(mode).ok_or(FsError::NotSupported)?;
        if len == 0 {
            return Err(FsError::Invalid("zero length"));
        }
        if off.checked_add(len).is_none_or(|end| end > i64::MAX as u64) {
            return Err(FsError::Invalid("range past the largest file"));
        }
        self.vol.check_writable()?;
        self.locked(&[ino], |fs| {
            let mut di = fs.dinode(ino)?;
            match di.di_mode & libc::S_IFMT {
                libc::S_IFREG => {}
                libc::S_IFDIR => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("not a regular file")),
            }
            match op {
                Falloc::Allocate { keep_size } => {
                    fs.vol.allocate_range(&mut di, off, len, keep_size)?;
                    Self::touch(&mut di, !keep_size, true);
                }
                Falloc::PunchHole => {
                    fs.vol.punch_hole(&mut di, off, len)?;
                    Self::touch(&mut di, true, true);
                }
                Falloc::ZeroRange { keep_size } => {
                    fs.vol.zero_range(&mut di, off, len, keep_size)?;
                    Self::touch(&mut di, true, true);
                }
            }
            fs.vol.put_dinode(&di)
        })
    }

    /// Up to `max` entries of `dir` after cookie `after` (0 = start).
    pub fn readdir(&mut self, dir: Ino, after: u64, max: usize) -> Result<Vec<ListEntry>> {
        self.dir(dir)?;
        self.vol.dir_list(dir.0, after, max)
    }

    /// Filesystem totals.
    pub fn statfs(&mut self) -> Result<StatFs> {
        let sc = self.vol.statfs()?;
        Ok(StatFs {
            bsize: self.vol.geo.bsize,
            blocks: sc.sc_total.max(0) as u64,
            bfree: sc.sc_free.max(0) as u64,
            files: sc.sc_dinodes.max(0) as u64,
            ffree: sc.sc_free.max(0) as u64,
        })
    }

    /// Makes everything durable (commits the journal).
    pub fn sync(&mut self) -> Result<()> {
        self.vol.commit()
    }

    /// The `go_sync` before a glock goes to another node: commits and
    /// empties our log, so that no recovery of our journal replays old
    /// copies over that node's changes ([`Volume::sync_for_demote`]).
    pub fn sync_for_demote(&mut self) -> Result<()> {
        self.vol.sync_for_demote()
    }

    /// In a cluster: the resource groups (by header block) whose glocks
    /// the next operations hold; see [`Volume::set_rgrps_held`].
    pub fn set_rgrps_held(&mut self, held: Option<&[u64]>) {
        self.vol.set_rgrps_held(held);
    }

    /// The resource group (header block) that holds `blk`.
    pub fn rgrp_of(&self, blk: u64) -> Option<u64> {
        self.vol.rgrp_of(blk)
    }

    /// Every resource group's header block, in order.
    pub fn rgrp_addrs(&self) -> Vec<u64> {
        self.vol.rgrp_addrs()
    }

    /// The dinodes of resource group `rg_addr` marked unlinked (removed
    /// while open somewhere, not freed yet).
    pub fn unlinked_dinodes(&mut self, rg_addr: u64) -> Result<Vec<u64>> {
        self.vol.unlinked_dinodes(rg_addr)
    }

    /// The master statfs file's dinode, whose glock guards folding into it.
    pub fn statfs_inode(&self) -> u64 {
        self.vol.statfs_addr
    }

    /// Drops every clean cached metadata block (a glock going to UN): see
    /// [`Volume::drop_caches`].
    pub fn drop_caches(&mut self) -> Result<()> {
        self.vol.drop_caches()
    }

    /// Recovers a failed node's journal while mounted: see
    /// [`Volume::recover_journal`].
    pub fn recover_journal(&mut self, jid: u32) -> Result<usize> {
        self.vol.recover_journal(jid)
    }

    /// The value of extended attribute `name` (with its namespace prefix).
    pub fn getxattr(&mut self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.dinode(ino)?;
        self.vol.xattr_get(ino.0, name)
    }

    /// Names of the extended attributes of `ino`.
    pub fn listxattr(&mut self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.dinode(ino)?;
        self.vol.xattr_list(ino.0)
    }

    /// Sets an extended attribute; `flags` as setxattr(2) (XATTR_CREATE 1,
    /// XATTR_REPLACE 2).
    pub fn setxattr(&mut self, ino: Ino, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        self.vol.check_writable()?;
        let mode = match flags {
            0 => crate::xattr::SetMode::Any,
            1 => crate::xattr::SetMode::Create,
            2 => crate::xattr::SetMode::Replace,
            _ => return Err(FsError::Invalid("xattr flags")),
        };
        self.locked(&[ino], |fs| {
            fs.dinode(ino)?;
            if name == crate::acl::ACCESS || name == crate::acl::DEFAULT {
                fs.vol.acl_set(ino.0, name, value, mode)?;
            } else {
                fs.vol.xattr_set(ino.0, name, value, mode)?;
            }
            let mut di = fs.vol.dinode(ino.0)?;
            Self::touch(&mut di, false, true);
            fs.vol.put_dinode(&di)
        })
    }

    /// True when directory `dir` has a default ACL (new entries in it then
    /// take their permissions from it instead of the umask).
    pub fn has_default_acl(&mut self, dir: Ino) -> Result<bool> {
        self.dir(dir)?;
        self.vol.has_default_acl(dir.0)
    }

    /// Removes an extended attribute.
    pub fn removexattr(&mut self, ino: Ino, name: &[u8]) -> Result<()> {
        self.vol.check_writable()?;
        self.locked(&[ino], |fs| {
            fs.dinode(ino)?;
            fs.vol.xattr_remove(ino.0, name)?;
            let mut di = fs.vol.dinode(ino.0)?;
            Self::touch(&mut di, false, true);
            fs.vol.put_dinode(&di)
        })
    }

    /// In a cluster: a last unlink leaves the inode marked unlinked for
    /// [`FileSystem::free_if_unlinked`] instead of freeing it.
    pub fn set_defer_free(&mut self, defer: bool) {
        self.defer_free = defer;
    }

    /// Frees `ino` if it has no links left, is marked unlinked and is not
    /// open here (the caller made sure no other node has it open: it holds
    /// its iopen glock in EX). Returns whether it was freed.
    pub fn free_if_unlinked(&mut self, ino: Ino) -> Result<bool> {
        self.vol.check_writable()?;
        if self.open.get(&ino).copied().unwrap_or(0) > 0
            || self.vol.block_state(ino.0)? != BlockState::Unlinked
        {
            return Ok(false);
        }
        let di = self.vol.dinode(ino.0)?;
        if di.di_nlink != 0 {
            return Ok(false);
        }
        self.locked(&[ino], |fs| fs.vol.dealloc_inode(ino.0))?;
        Ok(true)
    }

    /// The link count of the dinode at `ino`, or `None` if that block is
    /// no dinode now: for an inode number learnt earlier under no glock,
    /// which may have been freed since and its block reused for data. The
    /// block is not kept in the cache ([`Volume::peek`]): it may belong to
    /// another inode now, whose glock does not cover our copy.
    pub fn links_if_dinode(&mut self, ino: Ino) -> Result<Option<u32>> {
        let b = self.vol.peek(ino.0)?;
        Ok(Dinode::decode(&b).ok().map(|di| di.di_nlink))
    }

    /// Notes an open file handle.
    pub fn open(&mut self, ino: Ino) -> Result<()> {
        self.dinode(ino)?;
        *self.open.entry(ino).or_insert(0) += 1;
        Ok(())
    }

    /// Drops an open file handle; frees the inode if it was unlinked
    /// (unless `defer_free`: then the caller decides, see
    /// [`FileSystem::free_if_unlinked`]).
    pub fn release(&mut self, ino: Ino) -> Result<()> {
        let Some(n) = self.open.get_mut(&ino) else {
            return Ok(());
        };
        *n -= 1;
        if *n > 0 {
            return Ok(());
        }
        self.open.remove(&ino);
        if self.defer_free {
            return Ok(());
        }
        let di = self.vol.dinode(ino.0)?;
        if di.di_nlink == 0 && self.vol.block_state(ino.0)? == BlockState::Unlinked {
            self.locked(&[ino], |fs| fs.vol.dealloc_inode(ino.0))?;
        }
        Ok(())
    }
}
