//! [`BlockDevice`] over an iSCSI LUN, and [`open_device`], which picks the
//! implementation from the device string: `iscsi://host[:port]/IQN/LUN`
//! opens a LUN through the in-process initiator, anything else is a path
//! for [`FileDevice`].

use std::path::Path;
use std::sync::Arc;

use iscsi::initiator::lun::{session_config, LunOptions};
use iscsi::initiator::{Connection, InitiatorError, IscsiUrl, Lun};

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
    /// Logs in to the LUN named by `url` with default options, and the
    /// initiator port that its own arguments `initiator_name=IQN` and
    /// `isid=` (12 hex digits) name, if any: the I_T nexus under which
    /// `fence_scsi -o on` registered this node's key, so that a fence
    /// (PREEMPT AND ABORT) cuts this session off.
    pub fn open(url: &str) -> Result<Self> {
        let NexusArgs {
            url,
            initiator_name,
            isid,
        } = nexus_args(url).map_err(|why| BlockError::Io {
            op: "open",
            offset: 0,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
        })?;
        let mut opts = LunOptions::default();
        if let Some(name) = initiator_name {
            opts.initiator_name = name;
        }
        let Some(isid) = isid else {
            return Self::open_with(&url, opts);
        };
        let err = |e| io_error("open", 0, e);
        let parsed = IscsiUrl::parse(&url).map_err(err)?;
        let mut cfg = session_config(&parsed, &opts).map_err(err)?;
        cfg.login.isid = isid;
        let conn = Connection::connect(cfg).map_err(err)?;
        Ok(IscsiDevice {
            lun: Lun::attach(conn, parsed).map_err(err)?,
        })
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

/// An `iscsi://` URL without our own arguments, and what they said.
#[derive(Debug, PartialEq, Eq)]
struct NexusArgs {
    url: String,
    initiator_name: Option<String>,
    isid: Option<[u8; 6]>,
}

/// Takes our own arguments out of an `iscsi://` URL's query (libiscsi
/// knows no way to name the initiator port in a URL): `initiator_name`
/// and `isid`.
fn nexus_args(url: &str) -> std::result::Result<NexusArgs, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(NexusArgs {
            url: url.to_string(),
            initiator_name: None,
            isid: None,
        });
    };
    let (mut name, mut isid, mut rest) = (None, None, Vec::new());
    for arg in query.split('&') {
        match arg.split_once('=') {
            Some(("initiator_name", v)) if !v.is_empty() => name = Some(v.to_string()),
            Some(("isid", v)) => {
                let n = (v.len() == 12)
                    .then(|| u64::from_str_radix(v, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("isid={v}: want 12 hex digits"))?;
                let mut b = [0u8; 6];
                b.copy_from_slice(&n.to_be_bytes()[2..]);
                isid = Some(b);
            }
            _ => rest.push(arg),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(NexusArgs {
        url,
        initiator_name: name,
        isid,
    })
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
    fn nexus_arguments_come_out_of_the_url() {
        let got = nexus_args(
            "iscsi://h/iqn.x:t/1?header_digest=crc32c&initiator_name=iqn.y:n1&isid=400000000001",
        )
        .unwrap();
        assert_eq!(
            got,
            NexusArgs {
                url: "iscsi://h/iqn.x:t/1?header_digest=crc32c".into(),
                initiator_name: Some("iqn.y:n1".into()),
                isid: Some([0x40, 0, 0, 0, 0, 1]),
            }
        );
        assert_eq!(
            nexus_args("iscsi://h/iqn.x:t/1").unwrap(),
            NexusArgs {
                url: "iscsi://h/iqn.x:t/1".into(),
                initiator_name: None,
                isid: None,
            }
        );
        assert!(nexus_args("iscsi://h/t/1?isid=12").is_err());
        assert!(nexus_args("iscsi://h/t/1?isid=zz0000000000").is_err());
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
