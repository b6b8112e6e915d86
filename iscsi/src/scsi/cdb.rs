//! CDB field access: big-endian integers and the common READ/WRITE
//! layouts (SBC-3 5.x).

/// Operation codes handled here.
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PREFETCH_10: u8 = 0x34;
    pub const SANITIZE: u8 = 0x48;
    pub const READ_DEFECT_DATA_10: u8 = 0x37;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PR_IN: u8 = 0x5e;
    pub const PR_OUT: u8 = 0x5f;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const WRITE_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PREFETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const WRITE_ATOMIC_16: u8 = 0x9c;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;
    pub const READ_DEFECT_DATA_12: u8 = 0xb7;
}

/// Service actions of SERVICE ACTION IN(16) and MAINTENANCE IN.
pub mod sa {
    pub const READ_CAPACITY_16: u8 = 0x10;
    pub const GET_LBA_STATUS: u8 = 0x12;
    pub const REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
}

/// Big-endian u16 at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Big-endian 24-bit value at `at`.
pub fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

/// Big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Big-endian u64 at `at`.
pub fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// The LBA / transfer length / flags of a READ, WRITE, VERIFY, WRITE AND
/// VERIFY, PRE-FETCH or WRITE SAME CDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rw {
    pub lba: u64,
    /// Number of logical blocks.
    pub blocks: u32,
    /// Byte 1 of the CDB (FUA, DPO, BYTCHK, WRPROTECT...); 0 for 6-byte CDBs.
    pub flags: u8,
}

impl Rw {
    /// Decode by CDB size; the caller checked `cdb.len()` against the
    /// opcode's size. 6-byte CDBs: a transfer length of 0 means 256.
    pub fn parse(cdb: &[u8]) -> Rw {
        match cdb_size(cdb[0]) {
            6 => {
                let lba = u64::from(be24(cdb, 1) & 0x1f_ffff);
                let blocks = if cdb[4] == 0 { 256 } else { u32::from(cdb[4]) };
                Rw {
                    lba,
                    blocks,
                    flags: 0,
                }
            }
            10 => Rw {
                lba: u64::from(be32(cdb, 2)),
                blocks: u32::from(be16(cdb, 7)),
                flags: cdb[1],
            },
            12 => Rw {
                lba: u64::from(be32(cdb, 2)),
                blocks: be32(cdb, 6),
                flags: cdb[1],
            },
            _ => Rw {
                lba: be64(cdb, 2),
                blocks: be32(cdb, 10),
                flags: cdb[1],
            },
        }
    }

    /// Force Unit Access bit.
    pub fn fua(&self) -> bool {
        self.flags & 0x08 != 0
    }
}

/// The CDB size implied by the operation code's group (SAM-5 5.2).
pub fn cdb_size(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 16,
    }
}
