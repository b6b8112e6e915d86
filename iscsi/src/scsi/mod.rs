//! A sans-IO SCSI disk target (SPC-4 / SBC-3): the transport hands it a CDB
//! and the Data-Out buffer for one I_T nexus and gets back status, sense data
//! and the Data-In buffer. No sockets here; the only I/O is the LUN's backing
//! store.
//!
//! This module's public surface is the contract with the iSCSI transport
//! (`crate::target`): [`ScsiTarget`], [`LunOptions`], [`LunInfo`],
//! [`ScsiError`], [`NexusId`], [`ScsiCommand`], [`ScsiResponse`],
//! [`TaskMgmt`].
//!
//! Inside, the layers are: [`sense`] (sense data), `backing` (pread/pwrite
//! on a file or block device), `pr` (the persistent reservation state
//! machine, pure), `ua` (unit attention queues), `opcodes` (the command
//! table: CDB sizes, reservation access class, which LUNs implement it,
//! REPORT SUPPORTED OPERATION CODES data), and the command handlers
//! (`spc`, `mode`, `sbc`, `prcmd`, `xcopy`, `sanitize`) that `lun` calls
//! after the SAM-5 checks (unit attention, opcode, reservation).
//!
//! Concurrency: `execute` takes no global lock. READ/WRITE do one atomic
//! load for pending unit attentions, one for "any reservation", and
//! pread/pwrite; writers hold the LUN's write gate shared, COMPARE AND
//! WRITE / ORWRITE / WRITE ATOMIC hold it exclusive.

mod backing;
mod cdb;
mod error;
mod lun;
mod mode;
pub(crate) mod opcodes;
mod pr;
mod prcmd;
mod sanitize;
mod sbc;
pub mod sense;
mod spc;
mod target;
mod ua;
mod xcopy;

#[cfg(test)]
mod tests;

pub use error::ScsiError;
pub use lun::{LunInfo, LunOptions};
pub use target::{tmf_response, ScsiTarget};

/// One I_T nexus: an initiator port (initiator name + ISID) talking to one
/// target port. Reservations, unit attentions and PR registrations are kept
/// per nexus. Allocated by [`ScsiTarget::nexus_login`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexusId(pub u64);

/// SCSI status byte values (SAM-5).
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// One SCSI command as the transport received it.
#[derive(Clone, Copy, Debug)]
pub struct ScsiCommand<'a> {
    /// The 8-byte LUN field decoded to a LUN number (SAM flat/peripheral).
    pub lun: u64,
    /// The CDB, 6 to 16 bytes (longer with AHS).
    pub cdb: &'a [u8],
    /// Every Data-Out byte the initiator sent (immediate, unsolicited and
    /// solicited), already gathered. Empty for commands without Data-Out.
    pub data_out: &'a [u8],
    /// Expected Data Transfer Length for Data-In (the initiator's buffer).
    pub expected_in_len: u32,
    /// The task tag (ITT), for ABORT TASK bookkeeping and tracing.
    pub tag: u32,
}

/// The outcome of one command. The transport computes residuals from
/// `data_in.len()` against the expected length and truncates `data_in` to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiResponse {
    pub status: u8,
    /// Fixed-format sense data (18 bytes or more) when status is CHECK CONDITION.
    pub sense: Vec<u8>,
    pub data_in: Vec<u8>,
}

/// Task management functions the transport forwards (RFC 7143 11.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskMgmt {
    AbortTask { lun: u64, tag: u32 },
    AbortTaskSet { lun: u64 },
    ClearTaskSet { lun: u64 },
    LunReset { lun: u64 },
    TargetWarmReset,
    TargetColdReset,
}
