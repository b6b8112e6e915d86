//! The device seam: PVs are read and written through [`Device`].
//!
//! * [`FileDevice`]: a regular file or a block device.
//! * [`MemDevice`]: bytes in memory, for tests.
//! * [`CrashDevice`]: a fault injector; writes stay volatile until `flush`,
//!   and a power cut can be armed to happen after N more writes, dropping
//!   every unflushed write (the crash tests).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

/// A byte-addressed device.
pub trait Device: Send + Sync {
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes completed writes durable.
    fn flush(&self) -> io::Result<()>;
    /// Size in bytes.
    fn size(&self) -> u64;
}

impl<D: Device + ?Sized> Device for Arc<D> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
}

fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{len} bytes at {offset} are past the end ({size} bytes)"),
        )),
    }
}

/// A regular file or block device.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    size: u64,
}

impl FileDevice {
    /// Opens `path` read-write (read-only when `write` is false).
    pub fn open(path: &Path, write: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        let size = device_size(&file)?;
        Ok(FileDevice { file, size })
    }
}

/// A file's length, or a block device's capacity (found by seeking).
pub fn device_size(file: &File) -> io::Result<u64> {
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

impl Device for FileDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.file.write_all_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// An iSCSI LUN through the in-process initiator.
pub struct IscsiDevice {
    lun: iscsi::initiator::Lun,
}

impl std::fmt::Debug for IscsiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiDevice")
            .field("size", &self.lun.size_bytes())
            .finish()
    }
}

/// The URL scheme of an iSCSI LUN.
pub const ISCSI_SCHEME: &str = "iscsi://";

impl IscsiDevice {
    /// Logs in to `iscsi://host[:port]/IQN/LUN`.
    pub fn open(url: &str) -> io::Result<Self> {
        let lun = iscsi::initiator::Lun::open(url).map_err(io::Error::other)?;
        Ok(IscsiDevice { lun })
    }
}

impl Device for IscsiDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size())?;
        self.lun.read_at(offset, buf).map_err(io::Error::other)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size())?;
        self.lun.write_at(offset, buf).map_err(io::Error::other)
    }
    fn flush(&self) -> io::Result<()> {
        self.lun.flush().map_err(io::Error::other)
    }
    fn size(&self) -> u64 {
        self.lun.size_bytes()
    }
}

/// Opens a device by name: an `iscsi://` URL through the initiator, else a
/// path (read-write when allowed, read-only otherwise).
pub fn open_device(name: &str) -> io::Result<Arc<dyn Device>> {
    if name.starts_with(ISCSI_SCHEME) {
        return Ok(Arc::new(IscsiDevice::open(name)?));
    }
    let path = Path::new(name);
    match FileDevice::open(path, true) {
        Ok(d) => Ok(Arc::new(d)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Ok(Arc::new(FileDevice::open(path, false)?))
        }
        Err(e) => Err(e),
    }
}

/// An in-memory device.
#[derive(Debug)]
pub struct MemDevice {
    bytes: Mutex<Vec<u8>>,
}

impl MemDevice {
    /// A zeroed device of `size` bytes.
    pub fn new(size: u64) -> Self {
        MemDevice {
            bytes: Mutex::new(vec![0; usize::try_from(size).expect("fits memory")]),
        }
    }
    /// A copy of the contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.bytes.lock().clone()
    }
}

impl Device for MemDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let b = self.bytes.lock();
        check_range(offset, buf.len(), b.len() as u64)?;
        buf.copy_from_slice(&b[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut b = self.bytes.lock();
        check_range(offset, buf.len(), b.len() as u64)?;
        b[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.bytes.lock().len() as u64
    }
}

/// The power supply shared by the [`CrashDevice`]s of one machine: a cut
/// armed here fires on the Nth write to any of them, and all of them lose
/// power at once.
#[derive(Debug, Default)]
pub struct Power {
    state: Mutex<PowerState>,
}

#[derive(Debug, Default)]
struct PowerState {
    /// Writes still allowed before the cut; `None` = no cut armed.
    writes_left: Option<u64>,
    /// The power is off.
    off: bool,
    /// Writes accepted so far.
    writes: u64,
}

impl Power {
    /// A supply with no cut armed.
    pub fn new() -> Arc<Power> {
        Arc::new(Power::default())
    }

    /// Arms a cut: the `n`th write or flush from now (0 = the next) does
    /// not happen, nor anything after it.
    pub fn cut_after(&self, n: u64) {
        self.state.lock().writes_left = Some(n);
    }

    /// Whether the cut has fired.
    pub fn is_off(&self) -> bool {
        self.state.lock().off
    }

    /// Writes and flushes accepted so far.
    pub fn writes(&self) -> u64 {
        self.state.lock().writes
    }

    /// Power back on (each device then drops what it had not flushed; see
    /// [`CrashDevice::restart`]).
    pub fn restore(&self) {
        let mut s = self.state.lock();
        s.off = false;
        s.writes_left = None;
    }

    /// Takes one write: false when the cut fires now or has fired.
    fn take_write(&self) -> bool {
        let mut s = self.state.lock();
        if s.off {
            return false;
        }
        if s.writes_left == Some(0) {
            s.off = true;
            return false;
        }
        if let Some(n) = s.writes_left.as_mut() {
            *n -= 1;
        }
        s.writes += 1;
        true
    }
}

/// A fault-injecting device over durable bytes: writes are volatile until
/// `flush`; when the power is cut the unflushed writes are lost, except a
/// seeded subset of them (a disk cache may have written some, each whole:
/// sector writes are atomic), and every request fails until the power is
/// restored and [`CrashDevice::restart`] is called.
#[derive(Debug)]
pub struct CrashDevice {
    durable: MemDevice,
    pending: Mutex<Vec<(u64, Vec<u8>)>>,
    power: Arc<Power>,
    seed: Mutex<u64>,
}

impl CrashDevice {
    /// A zeroed device of `size` bytes with its own power supply.
    pub fn new(size: u64, seed: u64) -> Self {
        Self::with_power(size, seed, Power::new())
    }

    /// A zeroed device of `size` bytes on a shared power supply.
    pub fn with_power(size: u64, seed: u64, power: Arc<Power>) -> Self {
        CrashDevice {
            durable: MemDevice::new(size),
            pending: Mutex::new(Vec::new()),
            power,
            seed: Mutex::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        }
    }

    /// Arms a power cut on this device's supply (see [`Power::cut_after`]).
    pub fn cut_after(&self, n: u64) {
        self.power.cut_after(n);
    }

    /// Whether the power cut has fired.
    pub fn is_dead(&self) -> bool {
        self.power.is_off()
    }

    /// After a cut: a seeded subset of the unflushed writes reached the
    /// disk, the rest is lost; the device works again once the supply is
    /// restored (this restores it too).
    pub fn restart(&self) {
        let pending: Vec<_> = self.pending.lock().drain(..).collect();
        for (off, data) in pending {
            if self.next_random() & 1 == 0 {
                self.durable.write_at(off, &data).expect("in range");
            }
        }
        self.power.restore();
    }

    fn next_random(&self) -> u64 {
        // xorshift64: the crash tests replay exactly from their seed.
        let mut x = self.seed.lock();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
}

fn power_off() -> io::Error {
    io::Error::other("power cut (injected)")
}

impl Device for CrashDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.power.is_off() {
            return Err(power_off());
        }
        self.durable.read_at(offset, buf)?;
        for (off, data) in self.pending.lock().iter() {
            overlay(offset, buf, *off, data);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.durable.size())?;
        if !self.power.take_write() {
            return Err(power_off());
        }
        self.pending.lock().push((offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        // The cut may fall between a write and its flush too.
        if !self.power.take_write() {
            return Err(power_off());
        }
        for (off, data) in self.pending.lock().drain(..) {
            self.durable.write_at(off, &data)?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.durable.size()
    }
}

/// Copies the part of a write (`woff`, `data`) that overlaps a read
/// (`roff`, `buf`) into `buf`.
fn overlay(roff: u64, buf: &mut [u8], woff: u64, data: &[u8]) {
    let start = roff.max(woff);
    let end = (roff + buf.len() as u64).min(woff + data.len() as u64);
    if start >= end {
        return;
    }
    let (a, b) = ((start - roff) as usize, (start - woff) as usize);
    let n = (end - start) as usize;
    buf[a..a + n].copy_from_slice(&data[b..b + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_device_loses_only_unflushed_writes() {
        let d = CrashDevice::new(4096, 7);
        d.write_at(0, &[1; 512]).unwrap();
        d.flush().unwrap();
        d.write_at(512, &[2; 512]).unwrap();
        let mut b = [0u8; 1024];
        d.read_at(0, &mut b).unwrap();
        assert_eq!((b[0], b[600]), (1, 2), "reads see pending writes");
        d.cut_after(0);
        assert!(d.write_at(0, &[3; 512]).is_err());
        assert!(d.is_dead());
        d.restart();
        d.read_at(0, &mut b).unwrap();
        assert_eq!(
            b[0], 1,
            "the flushed write survives, the cut one never happened"
        );
        assert!(
            b[600] == 2 || b[600] == 0,
            "an unflushed write is whole or absent"
        );
    }
}
