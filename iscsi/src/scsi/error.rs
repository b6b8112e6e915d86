//! Errors of the LUN management API (not SCSI command errors, which are
//! reported to the initiator as sense data).

use std::io;
use std::path::PathBuf;

/// Why a LUN management call on [`super::ScsiTarget`] failed.
#[derive(thiserror::Error, Debug)]
pub enum ScsiError {
    #[error("no such LUN {0}")]
    NoSuchLun(u64),
    #[error("LUN {0} already exists")]
    LunExists(u64),
    #[error("LUN {0} is busy")]
    LunBusy(u64),
    #[error("LUN 0 is the controller LUN and cannot be replaced or removed")]
    ControllerLun,
    #[error("backing store {path}: {source}")]
    Backing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("backing store {path}: size {size_bytes} is not a multiple of block size {block_size} or is empty")]
    BadSize {
        path: PathBuf,
        size_bytes: u64,
        block_size: u32,
    },
    #[error("invalid block size {0} (512, 1024, 2048 or 4096)")]
    BadBlockSize(u32),
    #[error("persistent reservation state {path}: {reason}")]
    PrState { path: PathBuf, reason: String },
}
