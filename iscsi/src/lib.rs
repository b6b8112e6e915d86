//! iSCSI target and initiator (RFC 7143) with SCSI disk emulation (SPC-4/SBC-3).
//!
//! Layers, bottom up; nothing below calls up:
//! - [`pdu`]: the Basic Header Segment, data segments, digests, text keys.
//! - [`params`]: login/text negotiation rules; [`chap`]: CHAP-MD5.
//! - [`scsi`]: a sans-IO SCSI disk: CDB in, status/sense/data out.
//! - [`target`]: the target side (tgtd); [`initiator`]: the client side.
//!
//! Glossary: BHS (basic header segment, 48 bytes), AHS (additional header
//! segment), ITT (initiator task tag), TTT (target transfer tag), CmdSN /
//! ExpCmdSN / MaxCmdSN (command numbering), StatSN, DataSN, R2T (ready to
//! transfer), ISID / TSIH (session ids), LUN, CDB, PR key (persistent
//! reservation key), UA (unit attention), I_T nexus.

pub mod chap;
pub mod initiator;
pub mod params;
pub mod pdu;
pub mod scsi;
pub mod target;
