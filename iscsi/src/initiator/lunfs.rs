//! A FUSE adapter that shows each LUN of a session as a regular file, so
//! programs that want a disk (mkfs.gfs2, dd, fio) can open it like /dev/sdb.
//!
//! The mount is one flat directory: inode 1 is the root, inode 2 + i the
//! i-th LUN. Files are opened in direct-I/O mode (no page cache): every
//! read and write goes to the target, fsync sends SYNCHRONIZE CACHE. The
//! size is the LUN's capacity and cannot change. Each callback opens one
//! `tracing` span and maps initiator errors to errno.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug_span, warn};

use super::lun::Lun;
use super::InitiatorError;

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

/// The LUN files of one mount.
pub struct LunFs {
    files: Vec<(String, Arc<Lun>)>,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

fn errno(e: &InitiatorError) -> Errno {
    match e {
        InitiatorError::BadRequest(_) => Errno::EINVAL,
        InitiatorError::Scsi { status, .. }
            if *status == super::cdb::status::RESERVATION_CONFLICT =>
        {
            Errno::EACCES
        }
        _ => Errno::EIO,
    }
}

impl LunFs {
    /// A filesystem with these (name, LUN) files.
    pub fn new(files: Vec<(String, Arc<Lun>)>) -> Self {
        LunFs {
            files,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            started: SystemTime::now(),
        }
    }

    fn lun(&self, ino: INodeNo) -> Option<&Arc<Lun>> {
        let i = ino.0.checked_sub(2)? as usize;
        self.files.get(i).map(|(_, l)| l)
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            let lun = self.lun(INodeNo(ino))?;
            (FileType::RegularFile, 0o600, lun.size_bytes(), 1)
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

/// Mounts `fs` on `mountpoint` and serves it until unmounted. `mounted`
/// runs once the mount is in place; the returned unmounter ends it from
/// another thread.
pub fn serve(
    fs: LunFs,
    mountpoint: &Path,
    fsname: &str,
    mounted: impl FnOnce(fuser::SessionUnmounter),
) -> std::io::Result<()> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(fsname.to_string()),
        fuser::MountOption::Subtype("iscsi".into()),
    ];
    config.n_threads = Some(4);
    let mut session = fuser::Session::new(fs, mountpoint, &config)?;
    mounted(session.unmount_callable());
    session.run()
}

impl fuser::Filesystem for LunFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = debug_span!("lookup", ?name).entered();
        let found = (parent.0 == ROOT)
            .then(|| self.files.iter().position(|(n, _)| OsStr::new(n) == name))
            .flatten()
            .and_then(|i| self.attr(i as u64 + 2));
        match found {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(a) = self.attr(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // A disk cannot be resized: as with a block device node, a size
        // change (O_TRUNC) is ignored and the size stays the capacity.
        if size.is_some_and(|s| s != a.size) {
            tracing::debug!(ino = ino.0, ?size, "size change ignored");
        }
        reply.attr(&TTL, &a)
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lun(ino) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            None => reply.error(Errno::EISDIR),
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
        let Some(lun) = self.lun(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let end = (offset + u64::from(size)).min(lun.size_bytes());
        if offset >= end {
            return reply.data(&[]);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        match lun.read_at(offset, &mut buf) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                warn!(error = %e, offset, "read failed");
                reply.error(errno(&e))
            }
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
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _s = debug_span!("write", ino = ino.0, offset, len = data.len()).entered();
        let Some(lun) = self.lun(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if offset >= lun.size_bytes() && !data.is_empty() {
            return reply.error(Errno::ENOSPC);
        }
        let n = data.len().min((lun.size_bytes() - offset) as usize);
        match lun.write_at(offset, &data[..n]) {
            Ok(()) => reply.written(n as u32),
            Err(e) => {
                warn!(error = %e, offset, "write failed");
                reply.error(errno(&e))
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
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
        let Some(lun) = self.lun(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match lun.flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (ROOT, FileType::Directory, ".".to_string()),
            (ROOT, FileType::Directory, "..".to_string()),
        ];
        for (i, (name, _)) in self.files.iter().enumerate() {
            entries.push((i as u64 + 2, FileType::RegularFile, name.clone()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, OsStr::new(&name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let total: u64 = self.files.iter().map(|(_, l)| l.size_bytes() / 4096).sum();
        reply.statfs(total, 0, 0, self.files.len() as u64, 0, 4096, 255, 4096);
    }
}
