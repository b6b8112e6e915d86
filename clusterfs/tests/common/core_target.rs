//! The filesystem core as a model [`Target`], addressed by path.
#![allow(dead_code)]

use clusterfs::fs::{FileSystem, Ino, RenameFlags, SetAttr};

use super::model::{Errno, Kind, Target, RENAME_EXCHANGE, RENAME_NOREPLACE};

/// The core, addressed by path.
pub struct Core {
    pub fs: Option<FileSystem>,
}

impl Core {
    fn fs(&mut self) -> &mut FileSystem {
        self.fs.as_mut().expect("mounted")
    }

    fn resolve(&mut self, path: &str) -> Result<Ino, Errno> {
        let mut cur = self.fs().root();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            cur = self
                .fs()
                .lookup(cur, c.as_bytes())
                .map_err(|e| e.errno())?
                .ino;
        }
        Ok(cur)
    }

    fn parent(&mut self, path: &str) -> Result<(Ino, String), Errno> {
        let (p, n) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        Ok((self.resolve(p)?, n.to_string()))
    }
}

impl Target for Core {
    fn create(&mut self, path: &str) -> Result<(), Errno> {
        let (d, n) = self.parent(path)?;
        self.fs()
            .mknod(d, n.as_bytes(), 0o644, 0, 0, 0)
            .map(|_| ())
            .map_err(|e| e.errno())
    }
    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        let (d, n) = self.parent(path)?;
        self.fs()
            .mkdir(d, n.as_bytes(), 0o755, 0, 0)
            .map(|_| ())
            .map_err(|e| e.errno())
    }
    fn write(&mut self, path: &str, off: u64, data: &[u8]) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        self.fs()
            .write(ino, off, data)
            .map(|_| ())
            .map_err(|e| e.errno())
    }
    fn truncate(&mut self, path: &str, size: u64) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        self.fs()
            .setattr(
                ino,
                SetAttr {
                    size: Some(size),
                    ..Default::default()
                },
            )
            .map(|_| ())
            .map_err(|e| e.errno())
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let (a, an) = self.parent(from)?;
        // What the VFS checks before calling the filesystem.
        self.resolve(from)?;
        let to_parent = to.rsplit_once('/').map_or("", |(p, _)| p);
        if to.starts_with(&format!("{from}/"))
            && (to_parent == from || self.resolve(to_parent).is_ok())
        {
            return Err(libc::EINVAL);
        }
        if from.starts_with(&format!("{to}/")) {
            return Err(libc::ENOTEMPTY);
        }
        let (b, bn) = self.parent(to)?;
        self.fs()
            .rename(a, an.as_bytes(), b, bn.as_bytes(), RenameFlags::default())
            .map_err(|e| e.errno())
    }
    fn link(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let ino = self.resolve(from)?;
        let (b, bn) = self.parent(to)?;
        self.fs()
            .link(ino, b, bn.as_bytes())
            .map(|_| ())
            .map_err(|e| e.errno())
    }
    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        let (d, n) = self.parent(path)?;
        self.fs().unlink(d, n.as_bytes()).map_err(|e| e.errno())
    }
    fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        let (d, n) = self.parent(path)?;
        self.fs().rmdir(d, n.as_bytes()).map_err(|e| e.errno())
    }
    fn read_all(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        let ino = self.resolve(path)?;
        let size = self.fs().getattr(ino).map_err(|e| e.errno())?.size;
        self.fs()
            .read(ino, 0, size as usize + 10)
            .map_err(|e| e.errno())
    }
    fn list(&mut self, path: &str) -> Result<Vec<(String, Kind)>, Errno> {
        let ino = self.resolve(path)?;
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let batch = self.fs().readdir(ino, after, 64).map_err(|e| e.errno())?;
            let Some(last) = batch.last() else { break };
            after = last.cookie;
            for e in batch {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let kind = if e.de_type == clusterfs::ondisk::dt::DIR {
                    Kind::Dir
                } else {
                    Kind::File
                };
                out.push((String::from_utf8(e.name).unwrap(), kind));
            }
        }
        out.sort();
        Ok(out)
    }
    fn nlink(&mut self, path: &str) -> Result<u32, Errno> {
        let ino = self.resolve(path)?;
        self.fs()
            .getattr(ino)
            .map(|a| a.nlink)
            .map_err(|e| e.errno())
    }
    fn sync(&mut self) -> Result<(), Errno> {
        self.fs().sync().map_err(|e| e.errno())
    }

    fn setxattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        self.fs()
            .setxattr(ino, name.as_bytes(), value, 0)
            .map_err(|e| e.errno())
    }

    fn removexattr(&mut self, path: &str, name: &str) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        self.fs()
            .removexattr(ino, name.as_bytes())
            .map_err(|e| e.errno())
    }

    fn fallocate(&mut self, path: &str, mode: i32, off: u64, len: u64) -> Result<(), Errno> {
        let ino = self.resolve(path)?;
        self.fs()
            .fallocate(ino, off, len, mode)
            .map_err(|e| e.errno())
    }

    fn rename2(&mut self, from: &str, to: &str, flags: u32) -> Result<(), Errno> {
        if flags == 0 {
            return self.rename(from, to);
        }
        if flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return Err(libc::EINVAL);
        }
        // What the VFS checks before calling the filesystem.
        let (a, an) = self.parent(from)?;
        self.resolve(from)?;
        let (b, bn) = self.parent(to)?;
        let exists = self.resolve(to).is_ok();
        if flags == RENAME_NOREPLACE && exists {
            return Err(libc::EEXIST);
        }
        if flags == RENAME_EXCHANGE && !exists {
            return Err(libc::ENOENT);
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(libc::EINVAL);
        }
        if from.starts_with(&format!("{to}/")) {
            return Err(if flags == RENAME_EXCHANGE {
                libc::EINVAL
            } else {
                libc::ENOTEMPTY
            });
        }
        let f = RenameFlags {
            noreplace: flags == RENAME_NOREPLACE,
            exchange: flags == RENAME_EXCHANGE,
        };
        self.fs()
            .rename(a, an.as_bytes(), b, bn.as_bytes(), f)
            .map_err(|e| e.errno())
    }

    fn xattrs(&mut self, path: &str) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Errno> {
        let ino = self.resolve(path)?;
        let mut out = std::collections::BTreeMap::new();
        for n in self.fs().listxattr(ino).map_err(|e| e.errno())? {
            let v = self.fs().getxattr(ino, &n).map_err(|e| e.errno())?;
            out.insert(String::from_utf8(n).unwrap(), v);
        }
        Ok(out)
    }
}
