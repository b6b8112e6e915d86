//! Fixed-format sense data (SPC-4 4.5.3) and the sense keys / additional
//! sense codes this target reports.

/// Sense keys (SPC-4 table 27).
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const COPY_ABORTED: u8 = 0xa;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// An additional sense code and qualifier (ASC, ASCQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

impl Asc {
    pub const NO_ADDITIONAL: Asc = Asc(0x00, 0x00);
    pub const WRITE_ERROR: Asc = Asc(0x0c, 0x00);
    pub const UNRECOVERED_READ_ERROR: Asc = Asc(0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1a, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: Asc = Asc(0x1d, 0x00);
    pub const INVALID_OPCODE: Asc = Asc(0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Asc = Asc(0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
    pub const LUN_NOT_SUPPORTED: Asc = Asc(0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc(0x26, 0x00);
    pub const INVALID_RELEASE_OF_PR: Asc = Asc(0x26, 0x04);
    pub const WRITE_PROTECTED: Asc = Asc(0x27, 0x00);
    pub const POWER_ON_RESET: Asc = Asc(0x29, 0x00);
    pub const BUS_DEVICE_RESET: Asc = Asc(0x29, 0x03);
    pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2a, 0x01);
    pub const RESERVATIONS_PREEMPTED: Asc = Asc(0x2a, 0x03);
    pub const RESERVATIONS_RELEASED: Asc = Asc(0x2a, 0x04);
    pub const REGISTRATIONS_PREEMPTED: Asc = Asc(0x2a, 0x05);
    pub const CAPACITY_DATA_CHANGED: Asc = Asc(0x2a, 0x09);
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Asc = Asc(0x2f, 0x00);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc(0x39, 0x00);
    pub const MEDIUM_NOT_PRESENT: Asc = Asc(0x3a, 0x00);
    pub const REPORTED_LUNS_DATA_CHANGED: Asc = Asc(0x3f, 0x0e);
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);
    pub const MEDIUM_REMOVAL_PREVENTED: Asc = Asc(0x53, 0x02);
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: Asc = Asc(0x55, 0x04);
}

/// One sense condition, encoded by [`Sense::to_fixed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: Asc,
    /// The INFORMATION field; reported with VALID=1 when it fits 32 bits.
    pub info: Option<u64>,
    /// Sense-key specific bytes 15..18 (SKSV already set in byte 0).
    pub sks: Option<[u8; 3]>,
}

/// Length of the fixed-format sense data we build.
pub const FIXED_SENSE_LEN: usize = 18;

impl Sense {
    /// A sense condition without INFORMATION or sense-key specific data.
    pub fn new(key: u8, asc: Asc) -> Self {
        Sense {
            key,
            asc,
            info: None,
            sks: None,
        }
    }

    /// ILLEGAL REQUEST with the given ASC.
    pub fn illegal(asc: Asc) -> Self {
        Sense::new(key::ILLEGAL_REQUEST, asc)
    }

    /// INVALID FIELD IN CDB with a field pointer to `byte` (and `bit`).
    pub fn invalid_cdb(byte: u16, bit: Option<u8>) -> Self {
        Sense::illegal(Asc::INVALID_FIELD_IN_CDB).with_field_pointer(true, byte, bit)
    }

    /// INVALID FIELD IN PARAMETER LIST with a field pointer.
    pub fn invalid_param(byte: u16, bit: Option<u8>) -> Self {
        Sense::illegal(Asc::INVALID_FIELD_IN_PARAMETER_LIST).with_field_pointer(false, byte, bit)
    }

    /// INVALID COMMAND OPERATION CODE.
    pub fn invalid_opcode() -> Self {
        Sense::invalid_cdb(0, None).with_asc(Asc::INVALID_OPCODE)
    }

    /// LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub fn lba_out_of_range() -> Self {
        Sense::illegal(Asc::LBA_OUT_OF_RANGE)
    }

    /// PARAMETER LIST LENGTH ERROR.
    pub fn param_list_length() -> Self {
        Sense::illegal(Asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    /// MISCOMPARE with the offset of the first differing byte.
    pub fn miscompare(offset: u64) -> Self {
        Sense {
            key: key::MISCOMPARE,
            asc: Asc::MISCOMPARE_DURING_VERIFY,
            info: Some(offset),
            sks: None,
        }
    }

    /// DATA PROTECT / WRITE PROTECTED.
    pub fn write_protected() -> Self {
        Sense::new(key::DATA_PROTECT, Asc::WRITE_PROTECTED)
    }

    /// A UNIT ATTENTION condition.
    pub fn unit_attention(asc: Asc) -> Self {
        Sense::new(key::UNIT_ATTENTION, asc)
    }

    /// Replace the ASC/ASCQ.
    pub fn with_asc(mut self, asc: Asc) -> Self {
        self.asc = asc;
        self
    }

    /// Set the sense-key specific field pointer (SPC-4 4.5.2.4.2).
    pub fn with_field_pointer(mut self, in_cdb: bool, byte: u16, bit: Option<u8>) -> Self {
        let mut b0 = 0x80;
        if in_cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = bit {
            b0 |= 0x08 | (bit & 7);
        }
        let be = byte.to_be_bytes();
        self.sks = Some([b0, be[0], be[1]]);
        self
    }

    /// Encode as 18 bytes of fixed-format sense data (response code 0x70).
    pub fn to_fixed(&self) -> Vec<u8> {
        let mut s = vec![0u8; FIXED_SENSE_LEN];
        s[0] = 0x70;
        s[2] = self.key & 0x0f;
        if let Some(info) = self.info {
            if let Ok(v) = u32::try_from(info) {
                s[0] |= 0x80;
                s[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        s[7] = (FIXED_SENSE_LEN - 8) as u8;
        s[12] = self.asc.0;
        s[13] = self.asc.1;
        if let Some(sks) = self.sks {
            s[15..18].copy_from_slice(&sks);
        }
        s
    }
}
