//! The model's `Target` over a mounted directory: every operation of the
//! model done through the kernel's FUSE mount. Shared by the clusterfs_fuse
//! and clusterfs_iscsi tests, which include it with `#[path]`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::model::{Errno, Kind, Target};

/// A mounted filesystem's root, driven as a model `Target`.
pub struct Mounted(pub PathBuf);

fn errno(e: std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn last_errno() -> Errno {
    errno(std::io::Error::last_os_error())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// Sets extended attribute `name` of `p` (not following a last symlink).
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<(), Errno> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings and a buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// Extended attribute `name` of `p` (not following a last symlink).
pub fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, Errno> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    let mut v = vec![0u8; 65536];
    // SAFETY: valid C strings; the buffer is valid for its length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    if len < 0 {
        return Err(last_errno());
    }
    v.truncate(len as usize);
    Ok(v)
}

impl Mounted {
    pub fn p(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }

    fn open_w(&self, path: &str) -> Result<fs::File, Errno> {
        OpenOptions::new()
            .write(true)
            .open(self.p(path))
            .map_err(errno)
    }
}

impl Target for Mounted {
    fn create(&mut self, path: &str) -> Result<(), Errno> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.p(path))
            .map(|_| ())
            .map_err(errno)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        fs::create_dir(self.p(path)).map_err(errno)
    }
    fn write(&mut self, path: &str, off: u64, data: &[u8]) -> Result<(), Errno> {
        self.open_w(path)?.write_all_at(data, off).map_err(errno)
    }
    fn truncate(&mut self, path: &str, size: u64) -> Result<(), Errno> {
        self.open_w(path)?.set_len(size).map_err(errno)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        fs::rename(self.p(from), self.p(to)).map_err(errno)
    }
    fn link(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        fs::hard_link(self.p(from), self.p(to)).map_err(errno)
    }
    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        fs::remove_file(self.p(path)).map_err(errno)
    }
    fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        fs::remove_dir(self.p(path)).map_err(errno)
    }
    fn read_all(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        fs::read(self.p(path)).map_err(errno)
    }
    fn list(&mut self, path: &str) -> Result<Vec<(String, Kind)>, Errno> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.p(path)).map_err(errno)? {
            let e = e.map_err(errno)?;
            let kind = if e.file_type().map_err(errno)?.is_dir() {
                Kind::Dir
            } else {
                Kind::File
            };
            out.push((e.file_name().into_string().unwrap(), kind));
        }
        out.sort();
        Ok(out)
    }
    fn nlink(&mut self, path: &str) -> Result<u32, Errno> {
        Ok(fs::symlink_metadata(self.p(path)).map_err(errno)?.nlink() as u32)
    }
    fn sync(&mut self) -> Result<(), Errno> {
        fs::File::open(&self.0)
            .and_then(|f| f.sync_all())
            .map_err(errno)
    }
    fn setxattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        set_xattr(&self.p(path), name, value)
    }
    fn removexattr(&mut self, path: &str, name: &str) -> Result<(), Errno> {
        let (p, n) = (cpath(&self.p(path)), CString::new(name).unwrap());
        // SAFETY: valid C strings.
        if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }
    fn fallocate(&mut self, path: &str, mode: i32, off: u64, len: u64) -> Result<(), Errno> {
        use std::os::fd::AsRawFd;
        let f = self.open_w(path)?;
        // SAFETY: a valid open descriptor.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
        if rc == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }
    fn rename2(&mut self, from: &str, to: &str, flags: u32) -> Result<(), Errno> {
        let (a, b) = (cpath(&self.p(from)), cpath(&self.p(to)));
        // SAFETY: valid C strings.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }
    fn xattrs(&mut self, path: &str) -> Result<BTreeMap<String, Vec<u8>>, Errno> {
        let p = cpath(&self.p(path));
        let mut names = vec![0u8; 4096];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n < 0 {
            return Err(last_errno());
        }
        let mut out = BTreeMap::new();
        for name in names[..n as usize]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
        {
            let name = String::from_utf8(name.to_vec()).unwrap();
            let v = get_xattr(&self.p(path), &name)?;
            out.insert(name, v);
        }
        Ok(out)
    }
}
