//! SCSI commands the initiator issues (SBC-3, SPC-4): CDB builders, the
//! parsers of their replies, and sense data.

use std::fmt;

/// SCSI status codes (SAM-5 5.3).
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const ACA_ACTIVE: u8 = 0x30;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// The name of a SCSI status.
pub fn status_name(s: u8) -> &'static str {
    match s {
        status::GOOD => "GOOD",
        status::CHECK_CONDITION => "CHECK CONDITION",
        status::CONDITION_MET => "CONDITION MET",
        status::BUSY => "BUSY",
        status::RESERVATION_CONFLICT => "RESERVATION CONFLICT",
        status::TASK_SET_FULL => "TASK SET FULL",
        status::ACA_ACTIVE => "ACA ACTIVE",
        status::TASK_ABORTED => "TASK ABORTED",
        _ => "unknown",
    }
}

/// Sense keys (SPC-4 4.5.6).
pub mod sense_key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
}

/// Decoded sense data (fixed or descriptor format), with the raw bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    pub raw: Vec<u8>,
}

impl Sense {
    /// Parses sense data (SPC-4 4.5.2 descriptor, 4.5.3 fixed format).
    /// Anything too short or of an unknown format decodes as key 0 with the
    /// raw bytes kept.
    pub fn parse(raw: &[u8]) -> Sense {
        let mut s = Sense {
            raw: raw.to_vec(),
            ..Sense::default()
        };
        match raw.first().map(|b| b & 0x7f) {
            Some(0x70) | Some(0x71) if raw.len() >= 14 => {
                s.key = raw[2] & 0x0f;
                s.asc = raw[12];
                s.ascq = raw[13];
            }
            Some(0x72) | Some(0x73) if raw.len() >= 4 => {
                s.key = raw[1] & 0x0f;
                s.asc = raw[2];
                s.ascq = raw[3];
            }
            _ => {}
        }
        s
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.raw.is_empty() {
            return write!(f, "(none)");
        }
        write!(
            f,
            "key {:#x} asc {:#04x} ascq {:#04x}",
            self.key, self.asc, self.ascq
        )
    }
}

/// TEST UNIT READY.
pub fn test_unit_ready() -> Vec<u8> {
    vec![0u8; 6]
}

/// INQUIRY (standard data, or a VPD page when `page` is set).
pub fn inquiry(page: Option<u8>, alloc_len: u16) -> Vec<u8> {
    let mut c = vec![0x12, 0, 0, 0, 0, 0];
    if let Some(p) = page {
        c[1] = 1;
        c[2] = p;
    }
    c[3..5].copy_from_slice(&alloc_len.to_be_bytes());
    c
}

/// REPORT LUNS (SPC-4 6.33), all LUNs.
pub fn report_luns(alloc_len: u32) -> Vec<u8> {
    let mut c = vec![0u8; 12];
    c[0] = 0xa0;
    c[6..10].copy_from_slice(&alloc_len.to_be_bytes());
    c
}

/// Parses REPORT LUNS data into LUN numbers.
pub fn parse_report_luns(data: &[u8]) -> Vec<u64> {
    if data.len() < 8 {
        return Vec::new();
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let body = &data[8..data.len().min(8 + len)];
    body.chunks_exact(8)
        .map(|c| crate::pdu::decode_lun(u64::from_be_bytes(c.try_into().unwrap())))
        .filter(|l| *l < 1 << 63)
        .collect()
}

/// READ CAPACITY (16) (SERVICE ACTION IN 0x9e / 0x10).
pub fn read_capacity16() -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&32u32.to_be_bytes());
    c
}

/// Parses READ CAPACITY (16) data into (number of blocks, block size).
pub fn parse_read_capacity16(data: &[u8]) -> Option<(u64, u32)> {
    if data.len() < 12 {
        return None;
    }
    let last = u64::from_be_bytes(data[0..8].try_into().ok()?);
    let bs = u32::from_be_bytes(data[8..12].try_into().ok()?);
    Some((last.checked_add(1)?, bs))
}

fn rw16(op: u8, lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    if fua {
        c[1] = 0x08;
    }
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// READ (16).
pub fn read16(lba: u64, blocks: u32) -> Vec<u8> {
    rw16(0x88, lba, blocks, false)
}

/// WRITE (16), with FUA when asked.
pub fn write16(lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
    rw16(0x8a, lba, blocks, fua)
}

/// SYNCHRONIZE CACHE (10) of the whole medium.
pub fn synchronize_cache10() -> Vec<u8> {
    vec![0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Persistent reservation types (SPC-4 6.15.3.4).
pub mod pr_type {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 5;
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: u8 = 6;
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 7;
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: u8 = 8;
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2).
pub mod pr_out {
    pub const REGISTER: u8 = 0;
    pub const RESERVE: u8 = 1;
    pub const RELEASE: u8 = 2;
    pub const CLEAR: u8 = 3;
    pub const PREEMPT: u8 = 4;
    pub const PREEMPT_AND_ABORT: u8 = 5;
    pub const REGISTER_AND_IGNORE: u8 = 6;
}

/// PERSISTENT RESERVE IN service actions (SPC-4 6.15.1).
pub mod pr_in {
    pub const READ_KEYS: u8 = 0;
    pub const READ_RESERVATION: u8 = 1;
}

/// PERSISTENT RESERVE IN with `alloc_len` bytes of room.
pub fn persistent_reserve_in(service_action: u8, alloc_len: u16) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = 0x5e;
    c[1] = service_action & 0x1f;
    c[7..9].copy_from_slice(&alloc_len.to_be_bytes());
    c
}

/// PERSISTENT RESERVE OUT (scope LU) and its 24-byte parameter list.
pub fn persistent_reserve_out(
    service_action: u8,
    pr_type: u8,
    key: u64,
    sa_key: u64,
    aptpl: bool,
) -> (Vec<u8>, Vec<u8>) {
    let mut c = vec![0u8; 10];
    c[0] = 0x5f;
    c[1] = service_action & 0x1f;
    c[2] = pr_type & 0x0f;
    c[5..9].copy_from_slice(&24u32.to_be_bytes());
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    if aptpl {
        p[20] = 1;
    }
    (c, p)
}

/// READ KEYS data: the PR generation and the registered keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrKeys {
    pub generation: u32,
    pub keys: Vec<u64>,
}

/// Parses READ KEYS parameter data (SPC-4 6.15.2).
pub fn parse_read_keys(data: &[u8]) -> Option<PrKeys> {
    if data.len() < 8 {
        return None;
    }
    let generation = u32::from_be_bytes(data[0..4].try_into().ok()?);
    let len = u32::from_be_bytes(data[4..8].try_into().ok()?) as usize;
    let body = &data[8..data.len().min(8 + len)];
    let keys = body
        .chunks_exact(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect();
    Some(PrKeys { generation, keys })
}

/// The current reservation (READ RESERVATION, SPC-4 6.15.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrReservation {
    pub generation: u32,
    /// (holder's key, type), or None when nothing is reserved.
    pub holder: Option<(u64, u8)>,
}

/// Parses READ RESERVATION parameter data.
pub fn parse_read_reservation(data: &[u8]) -> Option<PrReservation> {
    if data.len() < 8 {
        return None;
    }
    let generation = u32::from_be_bytes(data[0..4].try_into().ok()?);
    let len = u32::from_be_bytes(data[4..8].try_into().ok()?) as usize;
    let holder = if len >= 16 && data.len() >= 24 {
        let key = u64::from_be_bytes(data[8..16].try_into().ok()?);
        Some((key, data[21] & 0x0f))
    } else {
        None
    };
    Some(PrReservation { generation, holder })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbc3_read_write16_layout() {
        let c = write16(0x0102_0304_0506_0708, 0x10, true);
        assert_eq!(c[0], 0x8a);
        assert_eq!(c[1], 0x08);
        assert_eq!(&c[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&c[10..14], &[0, 0, 0, 0x10]);
        assert_eq!(read16(1, 2)[0], 0x88);
    }

    #[test]
    fn spc4_sense_fixed_and_descriptor() {
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x06;
        fixed[12] = 0x29;
        fixed[13] = 0x01;
        let s = Sense::parse(&fixed);
        assert_eq!((s.key, s.asc, s.ascq), (6, 0x29, 1));
        let s = Sense::parse(&[0x72, 0x05, 0x24, 0x00]);
        assert_eq!((s.key, s.asc, s.ascq), (5, 0x24, 0));
        assert_eq!(Sense::parse(&[0x70]).key, 0);
    }

    #[test]
    fn spc4_pr_parameter_data() {
        let (c, p) = persistent_reserve_out(pr_out::PREEMPT_AND_ABORT, 5, 0xa, 0xb, false);
        assert_eq!((c[0], c[1], c[2], c[8]), (0x5f, 5, 5, 24));
        assert_eq!(&p[0..8], &0xau64.to_be_bytes());
        assert_eq!(&p[8..16], &0xbu64.to_be_bytes());
        let mut keys = vec![0, 0, 0, 3, 0, 0, 0, 16];
        keys.extend_from_slice(&1u64.to_be_bytes());
        keys.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(
            parse_read_keys(&keys),
            Some(PrKeys {
                generation: 3,
                keys: vec![1, 2]
            })
        );
        let mut res = vec![0, 0, 0, 4, 0, 0, 0, 16];
        res.extend_from_slice(&9u64.to_be_bytes());
        res.extend_from_slice(&[0, 0, 0, 0, 0, 5, 0, 0]);
        assert_eq!(parse_read_reservation(&res).unwrap().holder, Some((9, 5)));
        assert_eq!(
            parse_read_reservation(&[0, 0, 0, 4, 0, 0, 0, 0])
                .unwrap()
                .holder,
            None
        );
        assert_eq!(
            parse_read_capacity16(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 2, 0]),
            Some((8, 512))
        );
    }
}
