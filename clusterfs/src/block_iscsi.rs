//! [`BlockDevice`] over an iSCSI LUN, and [`open_device`], which picks the
//! implementation from the device string: `iscsi://host[:port]/IQN/LUN`
//! opens a LUN through the in-process initiator, anything else is a path
//! for [`FileDevice`].

use std::path::Path;
use std::sync::Arc;

use iscsi::initiator::lun::LunOptions;
use iscsi::initiator::{InitiatorError, Lun};

use crate::block::{BlockDevice, BlockError, FileDevice, Result};

/// The URL scheme that selects an iSCSI LUN.
pub const ISCSI_SCHEME: &str = "iscsi://";

/// An iSCSI logical unit as a block device. Reads and writes go straight
/// to the target; `flush` is SYNCHRONIZE CACHE.
pub struct IscsiDevice {
    lun: Lun,
}

impl std::fmt::Debug for IscsiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiDevice")
            .field("size", &self.lun.size_bytes())
            .finish_non_exhaustive()
    }
}

impl IscsiDevice {
    /// Logs in to the LUN named by `url` with default options.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, LunOptions::default())
    }

    /// Logs in to the LUN named by `url` with these options.
    pub fn open_with(url: &str, opts: LunOptions) -> Result<Self> {
        let lun = Lun::open_with(url, opts).map_err(|e| io_error("open", 0, e))?;
        Ok(IscsiDevice { lun })
    }

    /// Wraps an already opened LUN.
    pub fn from_lun(lun: Lun) -> Self {
        IscsiDevice { lun }
    }

    /// The LUN underneath.
    pub fn lun(&self) -> &Lun {
        &self.lun
    }
}

/// Maps an initiator error to the block layer's, keeping the operation
/// and offset (and the initiator error as the source).
fn io_error(op: &'static str, offset: u64, e: InitiatorError) -> BlockError {
    BlockError::Io {
        op,
        offset,
        source: std::io::Error::other(e),
    }
}

fn check_range(offset: u64, len: usize, size: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

impl BlockDevice for IscsiDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size())?;
        self.lun
            .read_at(offset, buf)
            .map_err(|e| io_error("read", offset, e))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size())?;
        self.lun
            .write_at(offset, buf)
            .map_err(|e| io_error("write", offset, e))
    }

    fn flush(&self) -> Result<()> {
        self.lun.flush().map_err(|e| io_error("flush", 0, e))
    }

    fn size(&self) -> u64 {
        self.lun.size_bytes()
    }
}

/// True when `device` names an iSCSI LUN rather than a path.
pub fn is_iscsi_url(device: &str) -> bool {
    device.starts_with(ISCSI_SCHEME)
}

/// Opens `device`: an `iscsi://` URL through the initiator, otherwise a
/// file or block device path.
pub fn open_device(device: &str) -> Result<Arc<dyn BlockDevice>> {
    if let Some(spec) = device.strip_prefix(crate::block::LVM_SCHEME) {
        return Ok(Arc::new(crate::block::LvmDevice::open(spec)?));
    }
    if is_iscsi_url(device) {
        Ok(Arc::new(IscsiDevice::open(device)?))
    } else {
        Ok(Arc::new(FileDevice::open(Path::new(device))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_selects_the_implementation() {
        assert!(is_iscsi_url(
            "iscsi://127.0.0.1:3260/iqn.2001-04.com.example:t/1"
        ));
        assert!(!is_iscsi_url("/dev/sdb"));
        assert!(!is_iscsi_url("vol.img"));
    }

    #[test]
    fn open_device_opens_files() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let d = open_device(f.path().to_str().unwrap()).unwrap();
        assert_eq!(d.size(), 1 << 20);
        d.write_at(512, b"abc").unwrap();
        let mut b = [0u8; 3];
        d.read_at(512, &mut b).unwrap();
        assert_eq!(&b, b"abc");
    }

    #[test]
    fn bad_urls_and_missing_files_are_open_errors() {
        for dev in [
            "iscsi://",
            "iscsi://127.0.0.1:1/",
            "/nonexistent/dir/vol.img",
        ] {
            match open_device(dev) {
                Err(BlockError::Io { op: "open", .. }) => {}
                Err(e) => panic!("{dev}: wrong error {e}"),
                Ok(d) => panic!("{dev}: opened a device of {} bytes", d.size()),
            }
        }
    }
}
