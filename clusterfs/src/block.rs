//! The block device layer: one small trait and its implementations.
//!
//! * [`FileDevice`]: a regular file or a block device, with `pread`/`pwrite`.
//! * [`MemDevice`]: a byte vector, for tests.
//! * [`CrashDevice`]: a fault injector for tests; writes stay volatile until
//!   `flush`, [`CrashDevice::crash`] drops the unflushed ones (as a power cut
//!   would), and an I/O error can be armed after N more writes.
//!
//! * [`LvmDevice`]: an LV named `lvm:VG/LV`, mapped in-process over its PVs
//!   by the lvm crate (no FUSE hop).
//!
//! An `iscsi://` implementation lives with the initiator.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;
use thiserror::Error;

/// Errors of the block layer.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The operating system reported an error.
    #[error("{op} at byte {offset}: {source}")]
    Io {
        /// `read`, `write`, `flush` or `open`.
        op: &'static str,
        /// Byte offset of the request.
        offset: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request reaches past the end of the device.
    #[error("request at byte {offset} of {len} bytes is past the end ({size} bytes)")]
    OutOfRange {
        /// Byte offset.
        offset: u64,
        /// Request length.
        len: usize,
        /// Device size.
        size: u64,
    },
    /// An injected fault (tests).
    #[error("injected I/O error")]
    Injected,
}

/// Result alias for the block layer.
pub type Result<T> = std::result::Result<T, BlockError>;

/// A byte-addressed device. Reads and writes are whole-buffer; `flush`
/// makes every completed write durable.
pub trait BlockDevice: Send + Sync {
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Makes completed writes durable.
    fn flush(&self) -> Result<()>;
    /// Size in bytes.
    fn size(&self) -> u64;
}

fn check_range(offset: u64, len: usize, size: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

/// A regular file or block device.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    size: u64,
}

impl FileDevice {
    /// Opens `path` read-write; the size is the file length, or for a block
    /// device its capacity (found by seeking to the end).
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| BlockError::Io {
            op: "open",
            offset: 0,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let size = device_size(&file).map_err(io)?;
        Ok(FileDevice { file, size })
    }
}

fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut f = file;
    let end = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(end)
}

impl BlockDevice for FileDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| BlockError::Io {
                op: "read",
                offset,
                source,
            })
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|source| BlockError::Io {
                op: "write",
                offset,
                source,
            })
    }

    fn flush(&self) -> Result<()> {
        self.file.sync_data().map_err(|source| BlockError::Io {
            op: "flush",
            offset: 0,
            source,
        })
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// The device-string prefix of an LV.
pub const LVM_SCHEME: &str = "lvm:";

/// An LV (`lvm:VG/LV`), found through the system's lvm.conf.
#[derive(Debug)]
pub struct LvmDevice(lvm::LvDevice);

impl LvmDevice {
    /// Opens `VG/LV`.
    pub fn open(spec: &str) -> Result<Self> {
        let other = |e: String| BlockError::Io {
            op: "open",
            offset: 0,
            source: std::io::Error::other(e),
        };
        let conf = lvm::conf::Conf::load(&[]).map_err(other)?;
        let lv = lvm::LvDevice::open(spec, &conf).map_err(|e| other(e.0))?;
        Ok(LvmDevice(lv))
    }
}

impl BlockDevice for LvmDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size())?;
        lvm::device::Device::read_at(&self.0, offset, buf).map_err(|source| BlockError::Io {
            op: "read",
            offset,
            source,
        })
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size())?;
        lvm::device::Device::write_at(&self.0, offset, buf).map_err(|source| BlockError::Io {
            op: "write",
            offset,
            source,
        })
    }

    fn flush(&self) -> Result<()> {
        lvm::device::Device::flush(&self.0).map_err(|source| BlockError::Io {
            op: "flush",
            offset: 0,
            source,
        })
    }

    fn size(&self) -> u64 {
        lvm::device::Device::size(&self.0)
    }
}

/// An in-memory device.
#[derive(Debug)]
pub struct MemDevice {
    bytes: Mutex<Vec<u8>>,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: u64) -> Self {
        MemDevice {
            bytes: Mutex::new(vec![0; size as usize]),
        }
    }

    /// A copy of the contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.bytes.lock().clone()
    }

    /// A device holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemDevice {
            bytes: Mutex::new(bytes),
        }
    }
}

impl BlockDevice for MemDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bytes = self.bytes.lock();
        check_range(offset, buf.len(), bytes.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&bytes[o..o + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut bytes = self.bytes.lock();
        check_range(offset, buf.len(), bytes.len() as u64)?;
        let o = offset as usize;
        bytes[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size(&self) -> u64 {
        self.bytes.lock().len() as u64
    }
}

/// A fault-injecting device: a durable image plus a list of writes not yet
/// flushed. Reads see every write; [`CrashDevice::crash`] forgets the
/// unflushed ones.
#[derive(Debug)]
pub struct CrashDevice {
    durable: MemDevice,
    pending: Mutex<Vec<(u64, Vec<u8>)>>,
    /// Writes left before an injected error; negative = never.
    fail_after: AtomicI64,
}

impl CrashDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self::from_bytes(vec![0; size as usize])
    }

    /// A device whose durable contents are `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        CrashDevice {
            durable: MemDevice::from_bytes(bytes),
            pending: Mutex::new(Vec::new()),
            fail_after: AtomicI64::new(-1),
        }
    }

    /// Drops every unflushed write, as a power loss would, and disarms any
    /// injected error.
    pub fn crash(&self) {
        self.pending.lock().clear();
        self.fail_after.store(-1, Ordering::SeqCst);
    }

    /// A power cut with a volatile write cache that had written back some
    /// of its contents: keeps each unflushed write with probability 1/2
    /// (chosen by `seed`), drops the rest, and disarms injected errors.
    pub fn crash_keeping_some(&self, seed: u64) {
        let writes = std::mem::take(&mut *self.pending.lock());
        let mut x = seed | 1;
        for (off, data) in writes {
            // xorshift64: a fixed, seedable choice per write.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x & 1 == 1 {
                let _ = self.durable.write_at(off, &data);
            }
        }
        self.fail_after.store(-1, Ordering::SeqCst);
    }

    /// Makes the write after the next `n` fail (and every one after it).
    pub fn fail_after_writes(&self, n: u64) {
        self.fail_after.store(n as i64, Ordering::SeqCst);
    }

    /// Number of writes not yet flushed.
    pub fn unflushed(&self) -> usize {
        self.pending.lock().len()
    }

    /// The durable contents.
    pub fn durable_snapshot(&self) -> Vec<u8> {
        self.durable.snapshot()
    }
}

impl BlockDevice for CrashDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.durable.read_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        for (woff, data) in self.pending.lock().iter() {
            let wend = woff + data.len() as u64;
            if *woff >= end || wend <= offset {
                continue;
            }
            let from = offset.max(*woff);
            let to = end.min(wend);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - woff) as usize..(to - woff) as usize]);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(offset, buf.len(), self.durable.size())?;
        let left = self.fail_after.load(Ordering::SeqCst);
        if left == 0 {
            return Err(BlockError::Injected);
        }
        if left > 0 {
            self.fail_after.store(left - 1, Ordering::SeqCst);
        }
        self.pending.lock().push((offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if self.fail_after.load(Ordering::SeqCst) == 0 {
            return Err(BlockError::Injected);
        }
        let writes = std::mem::take(&mut *self.pending.lock());
        for (off, data) in writes {
            self.durable.write_at(off, &data)?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.durable.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_device_reads_back_and_bounds_checks() {
        let d = MemDevice::new(4096);
        d.write_at(100, b"hello").unwrap();
        let mut b = [0u8; 5];
        d.read_at(100, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert!(matches!(
            d.write_at(4094, b"abc"),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.read_at(u64::MAX, &mut b),
            Err(BlockError::OutOfRange { .. })
        ));
    }

    #[test]
    fn crash_device_drops_unflushed_writes_only() {
        let d = CrashDevice::new(8192);
        d.write_at(0, b"kept").unwrap();
        d.flush().unwrap();
        d.write_at(2, b"LOST").unwrap();
        let mut b = [0u8; 6];
        d.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"keLOST");
        d.crash();
        d.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"kept\0\0");
    }

    #[test]
    fn crash_device_injects_errors() {
        let d = CrashDevice::new(4096);
        d.fail_after_writes(1);
        d.write_at(0, b"a").unwrap();
        assert!(matches!(d.write_at(0, b"b"), Err(BlockError::Injected)));
        d.crash();
        d.write_at(0, b"c").unwrap();
    }

    #[test]
    fn file_device_round_trip() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let d = FileDevice::open(f.path()).unwrap();
        assert_eq!(d.size(), 1 << 20);
        d.write_at(4096, &[7u8; 512]).unwrap();
        d.flush().unwrap();
        let mut b = [0u8; 512];
        d.read_at(4096, &mut b).unwrap();
        assert_eq!(b, [7u8; 512]);
        assert!(d.read_at(1 << 20, &mut b).is_err());
    }
}
