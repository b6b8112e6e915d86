//! iSCSI PDUs (RFC 7143 section 11): the 48-byte Basic Header Segment, the
//! additional header segments, the data segment with its padding, and the
//! optional CRC32C header and data digests.
//!
//! The BHS is kept as its 48 raw bytes ([`Bhs`]) with accessors: the fields
//! common to every PDU have named methods, the opcode-specific ones are read
//! and written through the offset constants of the per-opcode modules
//! ([`scsi_cmd`], [`data_in`], [`login_req`], ...), named as in the RFC.
//! Reading is bounded: a data segment longer than the negotiated limit, a
//! short read or a digest mismatch is a [`PduError`], never a panic.

use std::io::{self, Read, Write};

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// Length of a CRC32C digest on the wire.
pub const DIGEST_LEN: usize = 4;
/// The largest data segment this implementation ever accepts, whatever was
/// negotiated (the RFC's MaxRecvDataSegmentLength upper bound).
pub const MAX_DATA_SEGMENT: usize = (1 << 24) - 1;

/// Opcodes (RFC 7143 11.1.1). Initiator opcodes 0x00-0x1f, target 0x20-0x3f.
pub mod opcode {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_CMD: u8 = 0x01;
    pub const TASK_MGMT_REQ: u8 = 0x02;
    pub const LOGIN_REQ: u8 = 0x03;
    pub const TEXT_REQ: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQ: u8 = 0x06;
    pub const SNACK_REQ: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RSP: u8 = 0x21;
    pub const TASK_MGMT_RSP: u8 = 0x22;
    pub const LOGIN_RSP: u8 = 0x23;
    pub const TEXT_RSP: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RSP: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MSG: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

/// Flag bits of byte 1 shared by several PDUs.
pub mod flags {
    /// F: final PDU of a sequence.
    pub const FINAL: u8 = 0x80;
    /// SCSI Command R: the command reads (Data-In expected).
    pub const READ: u8 = 0x40;
    /// SCSI Command W: the command writes (Data-Out follows).
    pub const WRITE: u8 = 0x20;
    /// SCSI Command task attribute mask (0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA).
    pub const ATTR_MASK: u8 = 0x07;
    /// Login T: transit to the next stage.
    pub const TRANSIT: u8 = 0x80;
    /// Login / Text C: continue (the text is split over several PDUs).
    pub const CONTINUE: u8 = 0x40;
    /// Data-In A: acknowledge requested (ErrorRecoveryLevel > 0 only).
    pub const ACK: u8 = 0x40;
    /// Data-In / SCSI Response o: residual overflow.
    pub const OVERFLOW: u8 = 0x04;
    /// Data-In / SCSI Response u: residual underflow.
    pub const UNDERFLOW: u8 = 0x02;
    /// Data-In S: the status is in this PDU.
    pub const STATUS: u8 = 0x01;
}

/// Field offsets of the SCSI Command PDU (11.3).
pub mod scsi_cmd {
    pub const EDTL: usize = 20;
    pub const CMD_SN: usize = 24;
    pub const EXP_STAT_SN: usize = 28;
    pub const CDB: usize = 32;
    pub const CDB_LEN: usize = 16;
}

/// Field offsets of the SCSI Response PDU (11.4).
pub mod scsi_rsp {
    pub const RESPONSE: usize = 2;
    pub const STATUS: usize = 3;
    pub const SNACK_TAG: usize = 20;
    pub const STAT_SN: usize = 24;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
    pub const EXP_DATA_SN: usize = 36;
    pub const BIDI_RESIDUAL: usize = 40;
    pub const RESIDUAL: usize = 44;
}

/// Field offsets of the SCSI Data-Out PDU (11.7).
pub mod data_out {
    pub const TTT: usize = 20;
    pub const EXP_STAT_SN: usize = 28;
    pub const DATA_SN: usize = 36;
    pub const BUFFER_OFFSET: usize = 40;
}

/// Field offsets of the SCSI Data-In PDU (11.7).
pub mod data_in {
    pub const STATUS: usize = 3;
    pub const TTT: usize = 20;
    pub const STAT_SN: usize = 24;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
    pub const DATA_SN: usize = 36;
    pub const BUFFER_OFFSET: usize = 40;
    pub const RESIDUAL: usize = 44;
}

/// Field offsets of the Ready To Transfer PDU (11.8).
pub mod r2t {
    pub const TTT: usize = 20;
    pub const STAT_SN: usize = 24;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
    pub const R2T_SN: usize = 36;
    pub const BUFFER_OFFSET: usize = 40;
    pub const DESIRED_LEN: usize = 44;
}

/// Field offsets of NOP-Out (11.18) and NOP-In (11.19).
pub mod nop {
    pub const TTT: usize = 20;
    /// NOP-Out: CmdSN; NOP-In: StatSN.
    pub const CMD_SN: usize = 24;
    pub const STAT_SN: usize = 24;
    /// NOP-Out: ExpStatSN; NOP-In: ExpCmdSN.
    pub const EXP_STAT_SN: usize = 28;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
}

/// Field offsets of the Login Request (11.12) and Login Response (11.13).
pub mod login {
    /// Byte 1: T, C, CSG (bits 2-3), NSG (bits 0-1).
    pub const STAGES: usize = 1;
    pub const VERSION_MAX: usize = 2;
    /// Request: Version-min; response: Version-active.
    pub const VERSION_MIN: usize = 3;
    pub const VERSION_ACTIVE: usize = 3;
    pub const ISID: usize = 8;
    pub const ISID_LEN: usize = 6;
    pub const TSIH: usize = 14;
    pub const CID: usize = 20;
    /// Request: CmdSN; response: StatSN.
    pub const CMD_SN: usize = 24;
    pub const STAT_SN: usize = 24;
    /// Request: ExpStatSN; response: ExpCmdSN.
    pub const EXP_STAT_SN: usize = 28;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
    pub const STATUS_CLASS: usize = 36;
    pub const STATUS_DETAIL: usize = 37;

    /// Login stages (CSG / NSG values).
    pub const STAGE_SECURITY: u8 = 0;
    pub const STAGE_OPERATIONAL: u8 = 1;
    pub const STAGE_FULL_FEATURE: u8 = 3;
}

/// Field offsets of the Text Request (11.10) and Text Response (11.11).
pub mod text {
    pub const TTT: usize = 20;
    pub const CMD_SN: usize = 24;
    pub const STAT_SN: usize = 24;
    pub const EXP_STAT_SN: usize = 28;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
}

/// Field offsets of the Task Management Function Request (11.5) and
/// Response (11.6).
pub mod task_mgmt {
    /// Byte 1 & 0x7f: the function.
    pub const FUNCTION: usize = 1;
    pub const RESPONSE: usize = 2;
    pub const RTT: usize = 20;
    pub const CMD_SN: usize = 24;
    pub const STAT_SN: usize = 24;
    pub const EXP_STAT_SN: usize = 28;
    pub const EXP_CMD_SN: usize = 28;
    pub const REF_CMD_SN: usize = 32;
    pub const MAX_CMD_SN: usize = 32;
    pub const EXP_DATA_SN: usize = 36;

    pub const ABORT_TASK: u8 = 1;
    pub const ABORT_TASK_SET: u8 = 2;
    pub const CLEAR_ACA: u8 = 3;
    pub const CLEAR_TASK_SET: u8 = 4;
    pub const LOGICAL_UNIT_RESET: u8 = 5;
    pub const TARGET_WARM_RESET: u8 = 6;
    pub const TARGET_COLD_RESET: u8 = 7;
    pub const TASK_REASSIGN: u8 = 8;

    pub const RSP_COMPLETE: u8 = 0;
    pub const RSP_NO_TASK: u8 = 1;
    pub const RSP_NO_LUN: u8 = 2;
    pub const RSP_TASK_ALLEGIANT: u8 = 3;
    pub const RSP_NO_REASSIGN: u8 = 4;
    pub const RSP_NOT_SUPPORTED: u8 = 5;
    pub const RSP_AUTH_FAILED: u8 = 6;
    pub const RSP_REJECTED: u8 = 255;
}

/// Field offsets of the Logout Request (11.14) and Response (11.15).
pub mod logout {
    /// Byte 1 & 0x7f: the reason code (0 close session, 1 close connection,
    /// 2 remove connection for recovery).
    pub const REASON: usize = 1;
    pub const RESPONSE: usize = 2;
    pub const CID: usize = 20;
    pub const CMD_SN: usize = 24;
    pub const STAT_SN: usize = 24;
    pub const EXP_STAT_SN: usize = 28;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
    pub const TIME2WAIT: usize = 40;
    pub const TIME2RETAIN: usize = 42;

    pub const CLOSE_SESSION: u8 = 0;
    pub const CLOSE_CONNECTION: u8 = 1;
    pub const REMOVE_FOR_RECOVERY: u8 = 2;
}

/// Field offsets of the Reject PDU (11.17) and its reason codes.
pub mod reject {
    pub const REASON: usize = 2;
    pub const STAT_SN: usize = 24;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
    pub const DATA_SN: usize = 36;

    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    pub const SNACK_REJECT: u8 = 0x03;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    pub const INVALID_DATA_ACK: u8 = 0x08;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    pub const LONG_OPERATION_REJECT: u8 = 0x0a;
    pub const NEGOTIATION_RESET: u8 = 0x0b;
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

/// Field offsets of the Asynchronous Message PDU (11.9).
pub mod async_msg {
    pub const STAT_SN: usize = 24;
    pub const EXP_CMD_SN: usize = 28;
    pub const MAX_CMD_SN: usize = 32;
    pub const EVENT: usize = 36;
    pub const VCODE: usize = 37;
    pub const PARAM1: usize = 38;
    pub const PARAM2: usize = 40;
    pub const PARAM3: usize = 42;

    pub const EVENT_SCSI: u8 = 0;
    pub const EVENT_LOGOUT_REQUEST: u8 = 1;
    pub const EVENT_DROP_CONNECTION: u8 = 2;
    pub const EVENT_DROP_ALL_CONNECTIONS: u8 = 3;
    pub const EVENT_RENEGOTIATE: u8 = 4;
}

/// The reserved "no tag" value of ITT and TTT.
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Errors reading or decoding a PDU.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataSegmentTooLong { len: usize, max: usize },
    #[error("header digest mismatch: got {got:#010x}, computed {computed:#010x}")]
    HeaderDigest { got: u32, computed: u32 },
    #[error("data digest mismatch: got {got:#010x}, computed {computed:#010x}")]
    DataDigest {
        /// The header of the PDU whose data was damaged, for the Reject.
        bhs: Box<Bhs>,
        got: u32,
        computed: u32,
    },
}

/// The 48-byte Basic Header Segment, kept raw.
#[derive(Clone, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl std::fmt::Debug for Bhs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bhs {{ op: {:#04x}, flags: {:#04x}, itt: {:#x}, ahs: {}, dlen: {} }}",
            self.opcode(),
            self.flags(),
            self.itt(),
            self.total_ahs_len(),
            self.data_segment_len()
        )
    }
}

impl Default for Bhs {
    fn default() -> Self {
        Bhs([0; BHS_LEN])
    }
}

impl Bhs {
    /// A zeroed header with the opcode set.
    pub fn new(opcode: u8) -> Self {
        let mut bhs = Bhs::default();
        bhs.0[0] = opcode & 0x3f;
        bhs
    }

    /// The opcode, without the I bit.
    pub fn opcode(&self) -> u8 {
        self.0[0] & 0x3f
    }
    /// The I (immediate delivery) bit of initiator PDUs.
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }
    pub fn set_immediate(&mut self, on: bool) {
        if on {
            self.0[0] |= 0x40;
        } else {
            self.0[0] &= !0x40;
        }
    }
    /// Byte 1: the opcode-specific flags (F, R, W, T, C, ...).
    pub fn flags(&self) -> u8 {
        self.0[1]
    }
    pub fn set_flags(&mut self, flags: u8) {
        self.0[1] = flags;
    }
    /// The F (final) bit.
    pub fn is_final(&self) -> bool {
        self.0[1] & flags::FINAL != 0
    }
    /// TotalAHSLength in bytes (the field counts 4-byte words).
    pub fn total_ahs_len(&self) -> usize {
        self.0[4] as usize * 4
    }
    /// DataSegmentLength in bytes, without padding.
    pub fn data_segment_len(&self) -> usize {
        u32::from_be_bytes([0, self.0[5], self.0[6], self.0[7]]) as usize
    }
    fn set_lengths(&mut self, ahs_len: usize, data_len: usize) {
        assert!(
            ahs_len.is_multiple_of(4) && ahs_len / 4 <= 255,
            "bad AHS length {ahs_len}"
        );
        assert!(
            data_len <= MAX_DATA_SEGMENT,
            "data segment {data_len} too long"
        );
        self.0[4] = (ahs_len / 4) as u8;
        self.0[5..8].copy_from_slice(&(data_len as u32).to_be_bytes()[1..]);
    }
    /// The raw 8-byte LUN field.
    pub fn lun_raw(&self) -> u64 {
        self.u64_at(8)
    }
    pub fn set_lun_raw(&mut self, lun: u64) {
        self.set_u64_at(8, lun)
    }
    /// The LUN field decoded (SAM-5 peripheral and flat addressing).
    pub fn lun(&self) -> u64 {
        decode_lun(self.lun_raw())
    }
    pub fn set_lun(&mut self, lun: u64) {
        self.set_lun_raw(encode_lun(lun))
    }
    /// Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }
    pub fn set_itt(&mut self, itt: u32) {
        self.set_u32_at(16, itt)
    }

    pub fn u8_at(&self, off: usize) -> u8 {
        self.0[off]
    }
    pub fn set_u8_at(&mut self, off: usize, v: u8) {
        self.0[off] = v;
    }
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }
    pub fn set_u16_at(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes(self.0[off..off + 4].try_into().unwrap())
    }
    pub fn set_u32_at(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_be_bytes(self.0[off..off + 8].try_into().unwrap())
    }
    pub fn set_u64_at(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_be_bytes());
    }
    /// The CDB bytes of a SCSI Command (16 in the BHS; longer CDBs continue
    /// in an extended-CDB AHS).
    pub fn cdb(&self) -> &[u8] {
        &self.0[scsi_cmd::CDB..scsi_cmd::CDB + scsi_cmd::CDB_LEN]
    }
    /// Login CSG (current stage).
    pub fn login_csg(&self) -> u8 {
        (self.0[login::STAGES] >> 2) & 3
    }
    /// Login NSG (next stage).
    pub fn login_nsg(&self) -> u8 {
        self.0[login::STAGES] & 3
    }
}

/// Decodes a SAM LUN field: peripheral device addressing (method 0) and flat
/// space addressing (method 1) give the LUN number; other methods are
/// returned raw with the top bit set so they never match a configured LUN.
pub fn decode_lun(raw: u64) -> u64 {
    let top = (raw >> 48) as u16;
    match top >> 14 {
        0 => u64::from(top & 0xff) | if top & 0x3f00 != 0 { 1 << 63 } else { 0 },
        1 => u64::from(top & 0x3fff),
        _ => raw | (1 << 63),
    }
}

/// Encodes a LUN number as SAM peripheral (< 256) or flat (< 16384) addressing.
pub fn encode_lun(lun: u64) -> u64 {
    assert!(lun < 0x4000, "LUN {lun} out of the flat addressing range");
    if lun < 256 {
        lun << 48
    } else {
        (0x4000 | lun) << 48
    }
}

/// One PDU: header, additional header segments and data (without padding).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pdu {
    pub bhs: Bhs,
    pub ahs: Vec<u8>,
    pub data: Vec<u8>,
}

/// Which digests a connection negotiated (HeaderDigest / DataDigest = CRC32C).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

/// Pad bytes needed to bring `len` to a multiple of 4.
pub fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// CRC32C of a header or data segment, as iSCSI digests use it.
pub fn crc32c(parts: &[&[u8]]) -> u32 {
    parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p))
}

/// The framing of a PDU on the wire (RFC 7143 11.2): BHS, AHS, header
/// digest, then data segment, padding to 4 bytes and data digest. The one
/// encoder and decoder of the crate, sans-IO: the initiator's and the
/// target's drivers, [`Pdu::read_from`] and [`Pdu::encode_into`] all frame
/// through it.
pub mod frame {
    use super::{crc32c, pad_len, Bhs, Digests, Pdu, PduError, BHS_LEN, MAX_DATA_SEGMENT};

    /// Appends what comes before the data segment: `bhs` with its lengths
    /// set for `ahs` and `data_len`, `ahs`, and the header digest.
    pub fn encode_header(
        bhs: &Bhs,
        ahs: &[u8],
        data_len: usize,
        digests: Digests,
        out: &mut Vec<u8>,
    ) {
        let mut bhs = bhs.clone();
        bhs.set_lengths(ahs.len(), data_len);
        let start = out.len();
        out.extend_from_slice(&bhs.0);
        out.extend_from_slice(ahs);
        if digests.header {
            let crc = crc32c(&[&out[start..]]);
            out.extend_from_slice(&crc.to_le_bytes());
        }
    }

    /// Appends what comes after the data segment `data` (which the caller
    /// writes itself): its padding and data digest; nothing when empty.
    pub fn encode_trailer(data: &[u8], digests: Digests, out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let pad = &[0u8; 3][..pad_len(data.len())];
        out.extend_from_slice(pad);
        if digests.data {
            out.extend_from_slice(&crc32c(&[data, pad]).to_le_bytes());
        }
    }

    /// A checked header, waiting for its data segment.
    #[derive(Debug)]
    pub struct Header {
        pub bhs: Bhs,
        pub ahs: Vec<u8>,
    }

    /// Decodes PDUs under one connection's digests and data segment limit.
    #[derive(Clone, Copy, Debug)]
    pub struct Decoder {
        pub digests: Digests,
        /// MaxRecvDataSegmentLength (capped at [`MAX_DATA_SEGMENT`]).
        pub max_data_len: usize,
    }

    impl Decoder {
        pub fn new(digests: Digests, max_data_len: usize) -> Decoder {
            Decoder {
                digests,
                max_data_len: max_data_len.min(MAX_DATA_SEGMENT),
            }
        }

        /// Bytes from the start of the PDU to the end of its header digest,
        /// known once the BHS is in.
        pub fn header_len(&self, bhs: &Bhs) -> usize {
            BHS_LEN + bhs.total_ahs_len() + if self.digests.header { 4 } else { 0 }
        }

        /// Checks the header (`bytes`: exactly [`Self::header_len`] bytes):
        /// its digest first, then its data segment length against the limit.
        pub fn decode_header(&self, bytes: &[u8]) -> Result<Header, PduError> {
            let mut bhs = Bhs::default();
            bhs.0.copy_from_slice(&bytes[..BHS_LEN]);
            assert_eq!(bytes.len(), self.header_len(&bhs), "header bytes");
            let ahs_end = BHS_LEN + bhs.total_ahs_len();
            if self.digests.header {
                let got = u32::from_le_bytes(bytes[ahs_end..].try_into().expect("4 bytes"));
                let computed = crc32c(&[&bytes[..ahs_end]]);
                if got != computed {
                    return Err(PduError::HeaderDigest { got, computed });
                }
            }
            let len = bhs.data_segment_len();
            if len > self.max_data_len {
                return Err(PduError::DataSegmentTooLong {
                    len,
                    max: self.max_data_len,
                });
            }
            let ahs = bytes[BHS_LEN..ahs_end].to_vec();
            Ok(Header { bhs, ahs })
        }

        /// Bytes of the data segment on the wire after `header`: data,
        /// padding and data digest.
        pub fn data_len(&self, header: &Header) -> usize {
            match header.bhs.data_segment_len() {
                0 => 0,
                len => len + pad_len(len) + if self.digests.data { 4 } else { 0 },
            }
        }

        /// The PDU, once its data segment (`bytes`: exactly
        /// [`Self::data_len`] bytes) is in and its digest checked.
        pub fn decode_data(&self, header: Header, bytes: &[u8]) -> Result<Pdu, PduError> {
            assert_eq!(bytes.len(), self.data_len(&header), "data bytes");
            let len = header.bhs.data_segment_len();
            if len > 0 && self.digests.data {
                let (padded, digest) = bytes.split_at(bytes.len() - 4);
                let got = u32::from_le_bytes(digest.try_into().expect("4 bytes"));
                let computed = crc32c(&[padded]);
                if got != computed {
                    return Err(PduError::DataDigest {
                        bhs: Box::new(header.bhs),
                        got,
                        computed,
                    });
                }
            }
            Ok(Pdu {
                bhs: header.bhs,
                ahs: header.ahs,
                data: bytes[..len].to_vec(),
            })
        }

        /// The first PDU of `buf` and the bytes it took, or None while
        /// `buf` holds less than a whole PDU.
        pub fn decode(&self, buf: &[u8]) -> Result<Option<(Pdu, usize)>, PduError> {
            if buf.len() < BHS_LEN {
                return Ok(None);
            }
            let mut bhs = Bhs::default();
            bhs.0.copy_from_slice(&buf[..BHS_LEN]);
            let head = self.header_len(&bhs);
            if buf.len() < head {
                return Ok(None);
            }
            let header = self.decode_header(&buf[..head])?;
            let end = head + self.data_len(&header);
            if buf.len() < end {
                return Ok(None);
            }
            let pdu = self.decode_data(header, &buf[head..end])?;
            Ok(Some((pdu, end)))
        }
    }
}

impl Pdu {
    /// A PDU with this header and no AHS or data.
    pub fn new(bhs: Bhs) -> Self {
        Pdu {
            bhs,
            ahs: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Appends the wire form of this PDU (lengths fixed up, padding and
    /// digests added) to `out`.
    pub fn encode_into(&self, digests: Digests, out: &mut Vec<u8>) {
        frame::encode_header(&self.bhs, &self.ahs, self.data.len(), digests, out);
        out.extend_from_slice(&self.data);
        frame::encode_trailer(&self.data, digests, out);
    }

    /// The wire form of this PDU.
    pub fn encode(&self, digests: Digests) -> Vec<u8> {
        let mut out = Vec::with_capacity(BHS_LEN + self.ahs.len() + self.data.len() + 12);
        self.encode_into(digests, &mut out);
        out
    }

    /// Writes this PDU to `w` in one `write_all`.
    pub fn write_to(&self, w: &mut impl Write, digests: Digests) -> io::Result<()> {
        w.write_all(&self.encode(digests))
    }

    /// Reads one PDU from `r` through a [`frame::Decoder`], refusing a
    /// data segment longer than `max_data_len`. A clean end of stream
    /// before the first byte is [`PduError::Closed`].
    pub fn read_from(
        r: &mut impl Read,
        digests: Digests,
        max_data_len: usize,
    ) -> Result<Pdu, PduError> {
        let decoder = frame::Decoder::new(digests, max_data_len);
        let mut buf = vec![0u8; BHS_LEN];
        read_exact_or_closed(r, &mut buf)?;
        let mut bhs = Bhs::default();
        bhs.0.copy_from_slice(&buf);
        buf.resize(decoder.header_len(&bhs), 0);
        r.read_exact(&mut buf[BHS_LEN..])?;
        let header = decoder.decode_header(&buf)?;
        buf.clear();
        buf.resize(decoder.data_len(&header), 0);
        r.read_exact(&mut buf)?;
        decoder.decode_data(header, &buf)
    }
}

fn read_exact_or_closed(r: &mut impl Read, buf: &mut [u8]) -> Result<(), PduError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) if done == 0 => return Err(PduError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Serial number arithmetic (RFC 1982, 32 bits) for CmdSN and StatSN:
/// true when `a` comes before `b`.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < (1 << 31)
}

/// Text keys (RFC 7143 6): `key=value` pairs separated by NUL bytes.
pub mod keys {
    /// Errors in a text segment.
    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    pub enum KeyError {
        #[error("text key without '=': {0:?}")]
        MissingEquals(String),
        #[error("text segment is not UTF-8")]
        NotUtf8,
        #[error("key name {0:?} is longer than 63 bytes")]
        NameTooLong(String),
        #[error("value of {0} is longer than 8192 bytes")]
        ValueTooLong(String),
    }

    /// Parses a text data segment into its pairs, in order. Empty entries
    /// (trailing NULs) are skipped.
    pub fn parse(data: &[u8]) -> Result<Vec<(String, String)>, KeyError> {
        let text = std::str::from_utf8(data).map_err(|_| KeyError::NotUtf8)?;
        let mut pairs = Vec::new();
        for item in text.split('\0').filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| KeyError::MissingEquals(item.to_string()))?;
            if k.len() > 63 {
                return Err(KeyError::NameTooLong(k.to_string()));
            }
            if v.len() > 8192 {
                return Err(KeyError::ValueTooLong(k.to_string()));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(pairs)
    }

    /// Encodes pairs as `key=value\0...`.
    pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_rfc3720_appendix_b4_vectors() {
        // RFC 3720 B.4: 32 bytes of zeros -> aa 36 91 8a (little-endian on the wire).
        assert_eq!(crc32c(&[&[0u8; 32]]), 0x8a91_36aa);
        assert_eq!(crc32c(&[&[0xffu8; 32]]), 0x62a8_ab43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&[&inc]), 0x46dd_794e);
    }

    #[test]
    fn encode_read_round_trip_with_digests_and_padding() {
        let mut bhs = Bhs::new(opcode::SCSI_CMD);
        bhs.set_flags(flags::FINAL | flags::WRITE);
        bhs.set_itt(0x1234);
        bhs.set_lun(1);
        bhs.set_u32_at(scsi_cmd::EDTL, 5);
        let pdu = Pdu {
            bhs,
            ahs: vec![],
            data: vec![1, 2, 3, 4, 5],
        };
        let digests = Digests {
            header: true,
            data: true,
        };
        let wire = pdu.encode(digests);
        assert_eq!(wire.len(), 48 + 4 + 8 + 4);
        let back = Pdu::read_from(&mut &wire[..], digests, 8192).unwrap();
        assert_eq!(back.data, pdu.data);
        assert_eq!(back.bhs.itt(), 0x1234);
        assert_eq!(back.bhs.lun(), 1);
        assert_eq!(back.bhs.data_segment_len(), 5);
    }

    #[test]
    fn corrupted_digests_and_lengths_are_errors() {
        let mut pdu = Pdu::new(Bhs::new(opcode::NOP_OUT));
        pdu.data = vec![9; 8];
        let digests = Digests {
            header: true,
            data: true,
        };
        let mut wire = pdu.encode(digests);
        wire[50] ^= 1;
        assert!(matches!(
            Pdu::read_from(&mut &wire[..], digests, 8192),
            Err(PduError::HeaderDigest { .. })
        ));
        let mut wire = pdu.encode(digests);
        wire[53] ^= 1;
        assert!(matches!(
            Pdu::read_from(&mut &wire[..], digests, 8192),
            Err(PduError::DataDigest { .. })
        ));
        let wire = pdu.encode(Digests::default());
        assert!(matches!(
            Pdu::read_from(&mut &wire[..], Digests::default(), 4),
            Err(PduError::DataSegmentTooLong { len: 8, max: 4 })
        ));
        assert!(matches!(
            Pdu::read_from(&mut &wire[..20], Digests::default(), 8192),
            Err(PduError::Io(_))
        ));
        assert!(matches!(
            Pdu::read_from(&mut &[][..], Digests::default(), 8192),
            Err(PduError::Closed)
        ));
    }

    #[test]
    fn rfc7143_11_2_decoder_takes_whole_pdus_from_a_buffer() {
        let all = [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
        ];
        for digests in all {
            let mut stream = Vec::new();
            let mut pdus = Vec::new();
            for (ahs, data) in [(0, 0), (4, 5), (0, 8), (8, 1)] {
                let mut p = Pdu::new(Bhs::new(opcode::NOP_OUT));
                p.ahs = vec![0xa5; ahs];
                p.data = (0..data as u8).collect();
                p.encode_into(digests, &mut stream);
                pdus.push(p);
            }
            let decoder = frame::Decoder::new(digests, 8192);
            let mut rest = &stream[..];
            for want in &pdus {
                // Every proper prefix is "not yet", the whole PDU decodes.
                let (got, used) = (0..rest.len())
                    .find_map(|n| decoder.decode(&rest[..n]).unwrap())
                    .or_else(|| decoder.decode(rest).unwrap())
                    .expect("a whole PDU");
                assert_eq!(got.ahs, want.ahs);
                assert_eq!(got.data, want.data);
                assert_eq!(got.bhs.data_segment_len(), want.data.len());
                let read = Pdu::read_from(&mut &rest[..used], digests, 8192).unwrap();
                assert_eq!(read, got, "read_from and decode agree");
                rest = &rest[used..];
            }
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn header_and_trailer_around_data_are_the_whole_encoding() {
        let digests = Digests {
            header: true,
            data: true,
        };
        for len in [0, 1, 2, 3, 4, 513] {
            let mut p = Pdu::new(Bhs::new(opcode::DATA_IN));
            p.data = vec![7; len];
            let mut split = Vec::new();
            frame::encode_header(&p.bhs, &[], len, digests, &mut split);
            split.extend_from_slice(&p.data);
            frame::encode_trailer(&p.data, digests, &mut split);
            assert_eq!(split, p.encode(digests), "data length {len}");
            assert_eq!(split.len() % 4, 0);
        }
    }

    #[test]
    fn lun_addressing_sam5() {
        for lun in [0u64, 1, 255, 256, 0x3fff] {
            assert_eq!(decode_lun(encode_lun(lun)), lun);
        }
        assert_eq!(encode_lun(1), 0x0001_0000_0000_0000);
        assert_eq!(encode_lun(300), 0x412c_0000_0000_0000);
        // Logical unit addressing (method 2) never decodes to a small LUN.
        assert!(decode_lun(0x8001_0000_0000_0000) >= 1 << 63);
    }

    #[test]
    fn serial_number_arithmetic_wraps() {
        assert!(sn_lt(1, 2));
        assert!(!sn_lt(2, 1));
        assert!(sn_lt(0xffff_fff0, 3));
        assert!(!sn_lt(5, 5));
    }

    #[test]
    fn text_keys_parse_and_encode() {
        let data = keys::encode([("InitiatorName", "iqn.x"), ("SessionType", "Normal")]);
        assert_eq!(
            keys::parse(&data).unwrap(),
            vec![
                ("InitiatorName".to_string(), "iqn.x".to_string()),
                ("SessionType".to_string(), "Normal".to_string())
            ]
        );
        assert_eq!(
            keys::parse(b"NoEquals\0"),
            Err(keys::KeyError::MissingEquals("NoEquals".into()))
        );
        assert_eq!(keys::parse(&[0xff, b'=', 0]), Err(keys::KeyError::NotUtf8));
    }
}
