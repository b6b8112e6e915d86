//! The backing store of a disk LUN: a regular file or a block device,
//! accessed with pread/pwrite (no shared file offset, no lock).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Whether a byte range is allocated (mapped) or a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    Mapped,
    Hole,
}

/// An open backing file or block device.
#[derive(Debug)]
pub struct Backing {
    path: PathBuf,
    file: File,
    /// A second descriptor opened with O_DSYNC for FUA writes.
    dsync: File,
    is_block_device: bool,
}

impl Backing {
    /// Open `path` read-write (or read-only).
    pub fn open(path: &Path, readonly: bool) -> io::Result<Self> {
        let open = |flags: i32| {
            OpenOptions::new()
                .read(true)
                .write(!readonly)
                .custom_flags(flags)
                .open(path)
        };
        let file = open(0)?;
        let dsync = open(libc::O_DSYNC)?;
        let meta = file.metadata()?;
        let is_block_device = meta.file_type().is_block_device();
        if !meta.is_file() && !is_block_device {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        }
        Ok(Backing {
            path: path.to_path_buf(),
            file,
            dsync,
            is_block_device,
        })
    }

    /// The path this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current size in bytes (file length, or device size).
    pub fn size(&self) -> io::Result<u64> {
        if self.is_block_device {
            let mut f = &self.file;
            f.seek(SeekFrom::End(0))
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    /// Read exactly `buf.len()` bytes at `offset`; bytes past the end of a
    /// regular file read as zeros.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` into a new buffer, like [`Self::read_at`]
    /// but without zero-filling the buffer first: on large reads the
    /// zero-fill costs as much as a fifth of the read path's CPU.
    pub fn read_vec(&self, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        while buf.len() < len {
            let done = buf.len();
            let spare = &mut buf.spare_capacity_mut()[..len - done];
            // SAFETY: pread writes at most `spare.len()` bytes into memory
            // this Vec owns; the length grows only by what was written.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    (offset + done as u64) as libc::off_t,
                )
            };
            match n {
                0 => buf.resize(len, 0),
                n if n > 0 => unsafe { buf.set_len(done + n as usize) },
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(buf)
    }

    /// Write all of `buf` at `offset`; `fua` writes through O_DSYNC.
    pub fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        let f = if fua { &self.dsync } else { &self.file };
        f.write_all_at(buf, offset)
    }

    /// Make written data durable (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Deallocate a byte range, keeping the size; it then reads as zeros.
    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if self.is_block_device {
            return self.zero_range_block(offset, len);
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a valid descriptor with plain integer arguments.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            return self.write_zeros(offset, len);
        }
        Err(err)
    }

    fn zero_range_block(&self, offset: u64, len: u64) -> io::Result<()> {
        // BLKDISCARD would lose the "reads as zeros" guarantee on some
        // devices; write zeros instead.
        self.write_zeros(offset, len)
    }

    /// Write zeros over a range.
    pub fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        let chunk = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// The extent starting at `offset`: whether it is mapped, and where it
    /// ends (clamped to `end`). Block devices are always mapped.
    pub fn extent_at(&self, offset: u64, end: u64) -> io::Result<(Extent, u64)> {
        if self.is_block_device {
            return Ok((Extent::Mapped, end));
        }
        let fd = self.file.as_raw_fd();
        let data = match lseek(fd, offset, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                return Ok((Extent::Mapped, end));
            }
            Err(e) => return Err(e),
        };
        match data {
            Some(d) if d == offset => {
                let hole = lseek(fd, offset, libc::SEEK_HOLE)?.unwrap_or(end);
                Ok((Extent::Mapped, hole.min(end)))
            }
            Some(d) => Ok((Extent::Hole, d.min(end))),
            None => Ok((Extent::Hole, end)),
        }
    }
}

/// lseek with SEEK_DATA/SEEK_HOLE; `None` for ENXIO (no more data).
fn lseek(fd: i32, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a valid descriptor; does not touch memory.
    let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_vec_matches_read_at_and_zero_fills_past_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let b = Backing::open(&path, true).unwrap();
        assert_eq!(b.read_vec(4096, 1000).unwrap(), &data[1000..5096]);
        let tail = b.read_vec(4096, 8000).unwrap();
        assert_eq!(&tail[..2000], &data[8000..]);
        assert!(tail[2000..].iter().all(|&x| x == 0));
        let mut via_read_at = vec![0xffu8; 4096];
        b.read_at(&mut via_read_at, 8000).unwrap();
        assert_eq!(tail, via_read_at);
    }
}
