//! The iSCSI initiator: discovery, login, command queueing, reconnect; a LUN as a block device.
//!
//! Layers, bottom up:
//! - [`url`]: `iscsi://[user%secret@]host[:port]/IQN/LUN` as libiscsi parses it.
//! - [`login`]: the sans-IO login state machine (security stage with CHAP
//!   one-way or mutual, operational negotiation through [`crate::params`]).
//! - [`session`]: the sans-IO full-feature phase: CmdSN/ITT allocation, the
//!   command window, immediate / unsolicited / R2T-driven Data-Out, Data-In
//!   reassembly, status and sense, NOP-In answers, async messages, task
//!   management, text (SendTargets) and logout.
//! - [`cdb`]: SCSI CDB builders and parsers (READ/WRITE(16), READ CAPACITY,
//!   PERSISTENT RESERVE IN/OUT, sense data).
//! - [`driver`]: a thread-per-direction driver over a `TcpStream`, with many
//!   commands in flight and relogin after a dropped connection.
//! - [`lun`]: [`Lun`], a LUN as a byte-addressed block device.
//! - [`lunfs`]: a FUSE mount showing each LUN as a regular file (iscsiadm --login).
//! - [`records`]: iscsiadm's node and session records in its state directory.
//! - [`holder`]: the session holder process behind iscsiadm `--login`.
//! - [`prsock`]: persistent reservation commands on a holder's session
//!   (fence_scsi's way to the node's own I_T nexus).

pub mod cdb;
pub mod driver;
pub mod holder;
pub mod login;
pub mod lun;
pub mod lunfs;
pub mod pr;
pub mod prsock;
pub mod records;
pub mod session;
pub mod url;

pub use driver::{discover, Connection, SessionConfig};
pub use lun::Lun;
pub use pr::PersistentReserve;
pub use url::IscsiUrl;

use crate::pdu::PduError;

/// Errors of the initiator.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    /// The `iscsi://` URL does not parse.
    #[error("bad iSCSI URL {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A PDU could not be read.
    #[error("PDU error: {0}")]
    Pdu(#[from] PduError),
    /// The target refused the login (RFC 7143 11.13.5 status class/detail).
    #[error("login refused: {}", login::status_text(*class, *detail))]
    LoginRefused { class: u8, detail: u8 },
    /// CHAP authentication failed on our side (the target's mutual answer).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection is gone and could not be re-established.
    #[error("session is down: {0}")]
    SessionDown(String),
    /// The session was closed by logout.
    #[error("session closed")]
    Closed,
    /// The command did not complete in time.
    #[error("command timed out")]
    Timeout,
    /// The target rejected or aborted the command.
    #[error("command aborted: {0}")]
    Aborted(String),
    /// A SCSI command ended with a status other than GOOD.
    #[error("SCSI status {status:#04x} ({}) sense {sense}", cdb::status_name(*status))]
    Scsi { status: u8, sense: cdb::Sense },
    /// A request outside the device or with a bad length.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl InitiatorError {
    /// True for SCSI status RESERVATION CONFLICT (0x18).
    pub fn is_reservation_conflict(&self) -> bool {
        matches!(self, InitiatorError::Scsi { status, .. } if *status == cdb::status::RESERVATION_CONFLICT)
    }
}

/// Result alias of the initiator.
pub type Result<T> = std::result::Result<T, InitiatorError>;
