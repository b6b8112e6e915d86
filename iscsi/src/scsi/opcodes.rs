//! The command table: every command this target implements, with its CDB
//! usage data (SPC-4 6.35.3, also giving the CDB size) and the access
//! class that decides reservation conflicts.

use super::cdb::{op, sa};

/// How a command behaves against a reservation held by another I_T nexus
/// (SPC-4 table 66 "SPC commands that are allowed in the presence of
/// various reservations" and SBC-3 table 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Allowed under every reservation (INQUIRY, TEST UNIT READY, ...).
    Always,
    /// Reads the medium: allowed under Write Exclusive types, conflicts
    /// under Exclusive Access types for non-holders.
    Read,
    /// Writes the medium or changes state: conflicts for non-holders.
    Write,
    /// PERSISTENT RESERVE OUT: conflicts are decided by the service action.
    PrOut,
    /// Conflict-checked by the handler (START STOP UNIT, PREVENT ALLOW
    /// MEDIUM REMOVAL: allowed or conflicting depending on CDB bits).
    ByCdb,
}

/// One implemented command.
#[derive(Debug)]
pub struct OpDesc {
    pub op: u8,
    /// Service action for opcodes that have them.
    pub sa: Option<u8>,
    pub name: &'static str,
    /// CDB usage data: byte 0 is the opcode, the others mask the bits we
    /// look at. Its length is the CDB size.
    pub usage: &'static [u8],
    pub access: Access,
    /// Which LUNs implement it.
    pub needs: Needs,
}

/// Which logical units implement a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Every LUN, the controller LUN 0 too.
    Any,
    /// Disk LUNs.
    Disk,
    /// Thin-provisioned disk LUNs (logical block provisioning).
    Thin,
    /// Disk LUNs with SANITIZE enabled.
    Sanitize,
    /// Thin disk LUNs with SANITIZE enabled.
    SanitizeThin,
}

/// What a LUN is, for [`Needs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LunKind {
    pub disk: bool,
    pub thin: bool,
    pub sanitize: bool,
}

impl OpDesc {
    /// Whether a LUN of this kind implements the command.
    pub fn available(&self, k: LunKind) -> bool {
        match self.needs {
            Needs::Any => true,
            Needs::Disk => k.disk,
            Needs::Thin => k.disk && k.thin,
            Needs::Sanitize => k.disk && k.sanitize,
            Needs::SanitizeThin => k.disk && k.thin && k.sanitize,
        }
    }

    /// The CDB size.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }

    /// The first CDB byte (and bit) that sets a bit outside the usage
    /// data, i.e. a reserved field (SPC-4 4.3.2).
    pub fn reserved_bits(&self, cdb: &[u8]) -> Option<(u16, u8)> {
        let (i, bad) = cdb
            .iter()
            .zip(self.usage)
            .enumerate()
            .skip(1)
            .map(|(i, (b, m))| (i, b & !m))
            .find(|(_, bad)| *bad != 0)?;
        Some((i as u16, 7 - bad.leading_zeros() as u8))
    }
}

macro_rules! d {
    ($op:expr, $sa:expr, $name:expr, $access:ident, $disk:ident, [$($u:expr),*]) => {
        OpDesc { op: $op, sa: $sa, name: $name, usage: &[$($u),*], access: Access::$access, needs: Needs::$disk }
    };
}

/// Every implemented command, in opcode order.
pub static COMMANDS: &[OpDesc] = &[
    d!(
        op::TEST_UNIT_READY,
        None,
        "TEST UNIT READY",
        Always,
        Any,
        [0x00, 0, 0, 0, 0, 0x07]
    ),
    d!(
        op::REQUEST_SENSE,
        None,
        "REQUEST SENSE",
        Always,
        Any,
        [0x03, 0x01, 0, 0, 0xff, 0x07]
    ),
    d!(
        op::READ_6,
        None,
        "READ(6)",
        Read,
        Disk,
        [0x08, 0x1f, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::WRITE_6,
        None,
        "WRITE(6)",
        Write,
        Disk,
        [0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::INQUIRY,
        None,
        "INQUIRY",
        Always,
        Any,
        [0x12, 0x01, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::MODE_SELECT_6,
        None,
        "MODE SELECT(6)",
        Write,
        Disk,
        [0x15, 0x11, 0, 0, 0xff, 0x07]
    ),
    d!(
        op::RESERVE_6,
        None,
        "RESERVE(6)",
        Write,
        Disk,
        [0x16, 0, 0, 0, 0, 0x07]
    ),
    d!(
        op::RELEASE_6,
        None,
        "RELEASE(6)",
        Write,
        Disk,
        [0x17, 0, 0, 0, 0, 0x07]
    ),
    d!(
        op::MODE_SENSE_6,
        None,
        "MODE SENSE(6)",
        Write,
        Disk,
        [0x1a, 0x08, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::START_STOP_UNIT,
        None,
        "START STOP UNIT",
        ByCdb,
        Disk,
        [0x1b, 0x01, 0, 0x0f, 0xf7, 0x07]
    ),
    d!(
        op::PREVENT_ALLOW,
        None,
        "PREVENT ALLOW MEDIUM REMOVAL",
        ByCdb,
        Disk,
        [0x1e, 0, 0, 0, 0x03, 0x07]
    ),
    d!(
        op::READ_CAPACITY_10,
        None,
        "READ CAPACITY(10)",
        Always,
        Disk,
        [0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07]
    ),
    d!(
        op::READ_10,
        None,
        "READ(10)",
        Read,
        Disk,
        [0x28, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::WRITE_10,
        None,
        "WRITE(10)",
        Write,
        Disk,
        [0x2a, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::WRITE_VERIFY_10,
        None,
        "WRITE AND VERIFY(10)",
        Write,
        Disk,
        [0x2e, 0x12, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::VERIFY_10,
        None,
        "VERIFY(10)",
        Read,
        Disk,
        [0x2f, 0x16, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PREFETCH_10,
        None,
        "PRE-FETCH(10)",
        Read,
        Disk,
        [0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::READ_DEFECT_DATA_10,
        None,
        "READ DEFECT DATA(10)",
        Read,
        Disk,
        [0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::SYNCHRONIZE_CACHE_10,
        None,
        "SYNCHRONIZE CACHE(10)",
        Write,
        Disk,
        [0x35, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::WRITE_SAME_10,
        None,
        "WRITE SAME(10)",
        Write,
        Disk,
        [0x41, 0x08, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::UNMAP,
        None,
        "UNMAP",
        Write,
        Thin,
        [0x42, 0x01, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0x07]
    ),
    d!(
        op::SANITIZE,
        Some(0x01),
        "SANITIZE / OVERWRITE",
        Write,
        Sanitize,
        [0x48, 0xbf, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::SANITIZE,
        Some(0x02),
        "SANITIZE / BLOCK ERASE",
        Write,
        SanitizeThin,
        [0x48, 0xbf, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::SANITIZE,
        Some(0x03),
        "SANITIZE / CRYPTO ERASE",
        Write,
        SanitizeThin,
        [0x48, 0xbf, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::SANITIZE,
        Some(0x1f),
        "SANITIZE / EXIT FAILURE MODE",
        Write,
        Sanitize,
        [0x48, 0xbf, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::MODE_SELECT_10,
        None,
        "MODE SELECT(10)",
        Write,
        Disk,
        [0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::RESERVE_10,
        None,
        "RESERVE(10)",
        Write,
        Disk,
        [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x07]
    ),
    d!(
        op::RELEASE_10,
        None,
        "RELEASE(10)",
        Write,
        Disk,
        [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x07]
    ),
    d!(
        op::MODE_SENSE_10,
        None,
        "MODE SENSE(10)",
        Write,
        Disk,
        [0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_IN,
        Some(0x00),
        "PERSISTENT RESERVE IN / READ KEYS",
        Always,
        Disk,
        [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_IN,
        Some(0x01),
        "PERSISTENT RESERVE IN / READ RESERVATION",
        Always,
        Disk,
        [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_IN,
        Some(0x02),
        "PERSISTENT RESERVE IN / REPORT CAPABILITIES",
        Always,
        Disk,
        [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_IN,
        Some(0x03),
        "PERSISTENT RESERVE IN / READ FULL STATUS",
        Always,
        Disk,
        [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x00),
        "PERSISTENT RESERVE OUT / REGISTER",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x01),
        "PERSISTENT RESERVE OUT / RESERVE",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x02),
        "PERSISTENT RESERVE OUT / RELEASE",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x03),
        "PERSISTENT RESERVE OUT / CLEAR",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x04),
        "PERSISTENT RESERVE OUT / PREEMPT",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x05),
        "PERSISTENT RESERVE OUT / PREEMPT AND ABORT",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x06),
        "PERSISTENT RESERVE OUT / REGISTER AND IGNORE EXISTING KEY",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::PR_OUT,
        Some(0x07),
        "PERSISTENT RESERVE OUT / REGISTER AND MOVE",
        PrOut,
        Disk,
        [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]
    ),
    d!(
        op::EXTENDED_COPY,
        Some(0x00),
        "EXTENDED COPY(LID1)",
        Write,
        Disk,
        [0x83, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]
    ),
    d!(
        op::RECEIVE_COPY_RESULTS,
        Some(0x00),
        "RECEIVE COPY RESULTS / COPY STATUS",
        Write,
        Disk,
        [0x84, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]
    ),
    d!(
        op::RECEIVE_COPY_RESULTS,
        Some(0x03),
        "RECEIVE COPY RESULTS / OPERATING PARAMETERS",
        Write,
        Disk,
        [0x84, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]
    ),
    d!(
        op::READ_16,
        None,
        "READ(16)",
        Read,
        Disk,
        [
            0x88, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::COMPARE_AND_WRITE,
        None,
        "COMPARE AND WRITE",
        Write,
        Disk,
        [0x89, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0x07]
    ),
    d!(
        op::WRITE_16,
        None,
        "WRITE(16)",
        Write,
        Disk,
        [
            0x8a, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::ORWRITE_16,
        None,
        "ORWRITE(16)",
        Write,
        Disk,
        [
            0x8b, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::WRITE_VERIFY_16,
        None,
        "WRITE AND VERIFY(16)",
        Write,
        Disk,
        [
            0x8e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::VERIFY_16,
        None,
        "VERIFY(16)",
        Read,
        Disk,
        [
            0x8f, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::PREFETCH_16,
        None,
        "PRE-FETCH(16)",
        Read,
        Disk,
        [
            0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::SYNCHRONIZE_CACHE_16,
        None,
        "SYNCHRONIZE CACHE(16)",
        Write,
        Disk,
        [
            0x91, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::WRITE_SAME_16,
        None,
        "WRITE SAME(16)",
        Write,
        Disk,
        [
            0x93, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::WRITE_ATOMIC_16,
        None,
        "WRITE ATOMIC(16)",
        Write,
        Disk,
        [
            0x9c, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x1f, 0x07
        ]
    ),
    d!(
        op::SERVICE_ACTION_IN_16,
        Some(sa::READ_CAPACITY_16),
        "READ CAPACITY(16)",
        Always,
        Disk,
        [
            0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x01, 0x07
        ]
    ),
    d!(
        op::SERVICE_ACTION_IN_16,
        Some(sa::GET_LBA_STATUS),
        "GET LBA STATUS",
        Read,
        Disk,
        [
            0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
            0x07
        ]
    ),
    d!(
        op::REPORT_LUNS,
        None,
        "REPORT LUNS",
        Always,
        Any,
        [0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]
    ),
    d!(
        op::MAINTENANCE_IN,
        Some(sa::REPORT_SUPPORTED_OPCODES),
        "REPORT SUPPORTED OPERATION CODES",
        Always,
        Any,
        [0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07]
    ),
    d!(
        op::READ_12,
        None,
        "READ(12)",
        Read,
        Disk,
        [0xa8, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]
    ),
    d!(
        op::WRITE_12,
        None,
        "WRITE(12)",
        Write,
        Disk,
        [0xaa, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]
    ),
    d!(
        op::WRITE_VERIFY_12,
        None,
        "WRITE AND VERIFY(12)",
        Write,
        Disk,
        [0xae, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]
    ),
    d!(
        op::VERIFY_12,
        None,
        "VERIFY(12)",
        Read,
        Disk,
        [0xaf, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]
    ),
    d!(
        op::READ_DEFECT_DATA_12,
        None,
        "READ DEFECT DATA(12)",
        Read,
        Disk,
        [0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]
    ),
];

/// Whether `opcode` takes a service action in CDB byte 1 (bits 4..0).
pub fn has_service_action(opcode: u8) -> bool {
    matches!(
        opcode,
        op::PR_IN
            | op::PR_OUT
            | op::SERVICE_ACTION_IN_16
            | op::MAINTENANCE_IN
            | op::EXTENDED_COPY
            | op::SANITIZE
            | op::RECEIVE_COPY_RESULTS
    )
}

/// Why a CDB does not name an implemented command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// Unknown operation code.
    Opcode,
    /// Known opcode, unknown service action (field pointer: byte 1).
    ServiceAction,
}

/// Find the command a CDB names on a LUN of this kind.
pub fn lookup(cdb: &[u8], kind: LunKind) -> Result<&'static OpDesc, LookupError> {
    let opcode = *cdb.first().ok_or(LookupError::Opcode)?;
    let sa = if has_service_action(opcode) {
        cdb.get(1).map(|b| b & 0x1f)
    } else {
        None
    };
    let mut seen_opcode = false;
    for d in COMMANDS
        .iter()
        .filter(|d| d.op == opcode && d.available(kind))
    {
        seen_opcode = true;
        if d.sa.is_none() || d.sa == sa {
            return Ok(d);
        }
    }
    if seen_opcode {
        Err(LookupError::ServiceAction)
    } else {
        Err(LookupError::Opcode)
    }
}
