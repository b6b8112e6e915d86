//! SPC-4 primary commands: INQUIRY and its VPD pages, REPORT LUNS,
//! REQUEST SENSE, TEST UNIT READY, REPORT SUPPORTED OPERATION CODES,
//! START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL.

use std::sync::atomic::Ordering;

use super::cdb::{be16, be32, op};
use super::lun::{CmdResult, Ctx, Disk, Lun};
use super::opcodes::{self, LunKind, OpDesc, COMMANDS};
use super::sense::{Asc, Sense};

/// Peripheral device types.
const TYPE_DISK: u8 = 0x00;
const TYPE_CONTROLLER: u8 = 0x0c;
/// "No LUN here": peripheral qualifier 3, device type 0x1f.
const TYPE_NO_LUN: u8 = 0x7f;

/// Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0960, 0x0460, 0x04c0];

/// Truncate Data-In to the CDB's allocation length.
pub(crate) fn truncate(mut data: Vec<u8>, alloc_len: usize) -> Vec<u8> {
    data.truncate(alloc_len);
    data
}

/// Copy `s` into a space-padded ASCII field.
fn put_ascii(field: &mut [u8], s: &str) {
    field.fill(b' ');
    for (d, c) in field
        .iter_mut()
        .zip(s.bytes().filter(|c| (0x20..0x7f).contains(c)))
    {
        *d = c;
    }
}

/// INQUIRY to a LUN that does not exist.
pub(crate) fn inquiry_no_lun(cdb: &[u8]) -> CmdResult {
    check_inquiry_cdb(cdb)?;
    let mut d = vec![0u8; 36];
    d[0] = TYPE_NO_LUN;
    d[2] = 0x06;
    d[3] = 0x12;
    d[4] = 31;
    Ok(truncate(d, usize::from(be16(cdb, 3))))
}

fn check_inquiry_cdb(cdb: &[u8]) -> Result<(), Sense> {
    if cdb[1] & 0xfe != 0 {
        return Err(Sense::invalid_cdb(
            1,
            Some(if cdb[1] & 0x02 != 0 { 1 } else { 7 }),
        ));
    }
    if cdb[1] & 0x01 == 0 && cdb[2] != 0 {
        return Err(Sense::invalid_cdb(2, None));
    }
    Ok(())
}

/// REPORT LUNS (SPC-4 6.33): SELECT REPORT 0, 1 and 2 list every LUN.
pub(crate) fn report_luns(cdb: &[u8], luns: &[u64]) -> CmdResult {
    let alloc = be32(cdb, 6) as usize;
    if alloc < 16 {
        return Err(Sense::invalid_cdb(6, None).into());
    }
    if cdb[2] > 2 {
        return Err(Sense::invalid_cdb(2, None).into());
    }
    let mut d = vec![0u8; 8];
    d[0..4].copy_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
    for &l in luns {
        d.extend_from_slice(&encode_lun(l));
    }
    Ok(truncate(d, alloc))
}

/// SAM-5 LUN encoding: peripheral (< 256) or flat space addressing.
fn encode_lun(lun: u64) -> [u8; 8] {
    let mut e = [0u8; 8];
    if lun < 256 {
        e[1] = lun as u8;
    } else {
        let l = (lun & 0x3fff) as u16;
        e[0..2].copy_from_slice(&(0x4000 | l).to_be_bytes());
    }
    e
}

/// Sense data as REQUEST SENSE returns it (DESC=1 is refused).
pub(crate) fn request_sense_data(cdb: &[u8], s: &Sense) -> Vec<u8> {
    truncate(s.to_fixed(), usize::from(cdb[4]))
}

/// How many Data-Out bytes a CDB implies for `block_size`.
pub(crate) fn data_out_len(cdb: &[u8], block_size: u32) -> Option<u32> {
    let opcode = *cdb.first()?;
    let need = super::cdb::cdb_size(opcode);
    if cdb.len() < need {
        return None;
    }
    let blocks = |n: u32| n.checked_mul(block_size);
    match opcode {
        op::WRITE_6 => blocks(if cdb[4] == 0 { 256 } else { u32::from(cdb[4]) }),
        op::WRITE_10 | op::WRITE_VERIFY_10 => blocks(u32::from(be16(cdb, 7))),
        op::VERIFY_10 if cdb[1] & 0x06 != 0 => blocks(u32::from(be16(cdb, 7))),
        op::WRITE_12 | op::WRITE_VERIFY_12 => blocks(be32(cdb, 6)),
        op::VERIFY_12 if cdb[1] & 0x06 != 0 => blocks(be32(cdb, 6)),
        op::WRITE_16 | op::WRITE_VERIFY_16 | op::ORWRITE_16 => blocks(be32(cdb, 10)),
        op::WRITE_ATOMIC_16 => blocks(u32::from(be16(cdb, 12))),
        op::VERIFY_16 if cdb[1] & 0x06 != 0 => blocks(be32(cdb, 10)),
        op::COMPARE_AND_WRITE => blocks(2 * u32::from(cdb[13])),
        op::WRITE_SAME_10 => Some(block_size),
        op::WRITE_SAME_16 => Some(if cdb[1] & 0x01 != 0 { 0 } else { block_size }),
        op::UNMAP => Some(u32::from(be16(cdb, 7))),
        op::MODE_SELECT_6 => Some(u32::from(cdb[4])),
        op::SANITIZE => Some(u32::from(be16(cdb, 7))),
        op::MODE_SELECT_10 => Some(u32::from(be16(cdb, 7))),
        op::PR_OUT => Some(be32(cdb, 5)),
        op::EXTENDED_COPY => Some(be32(cdb, 10)),
        _ => Some(0),
    }
}

impl Lun {
    /// TEST UNIT READY (SPC-4 6.47).
    pub(crate) fn test_unit_ready(&self, _c: &Ctx) -> CmdResult {
        Ok(Vec::new())
    }

    /// REQUEST SENSE (SPC-4 6.39): a pending unit attention, else NO SENSE.
    pub(crate) fn request_sense(&self, c: &Ctx) -> CmdResult {
        if c.cdb[1] & 0x01 != 0 {
            return Err(Sense::invalid_cdb(1, Some(0)).into());
        }
        let s = match self.ua.take(c.nexus) {
            Some(asc) => Sense::unit_attention(asc),
            None => Sense::new(super::sense::key::NO_SENSE, Asc::NO_ADDITIONAL),
        };
        Ok(request_sense_data(c.cdb, &s))
    }

    /// INQUIRY (SPC-4 6.6): standard data or a VPD page.
    pub(crate) fn inquiry(&self, c: &Ctx) -> CmdResult {
        check_inquiry_cdb(c.cdb)?;
        let alloc = usize::from(be16(c.cdb, 3));
        let data = if c.cdb[1] & 0x01 == 0 {
            self.standard_inquiry()
        } else {
            self.vpd(c.cdb[2], c)?
        };
        Ok(truncate(data, alloc))
    }

    fn device_type(&self) -> u8 {
        if self.disk.is_some() {
            TYPE_DISK
        } else {
            TYPE_CONTROLLER
        }
    }

    fn standard_inquiry(&self) -> Vec<u8> {
        let mut d = vec![0u8; 66];
        d[0] = self.device_type();
        d[2] = 0x06; // SPC-4
        d[3] = 0x12; // HISUP, response data format 2
        d[4] = (d.len() - 5) as u8;
        d[7] = 0x02; // CMDQUE
        let (vendor, product) = match &self.disk {
            Some(disk) => (disk.opts.vendor.as_str(), disk.opts.product.as_str()),
            None => ("RHCSRS", "Controller"),
        };
        put_ascii(&mut d[8..16], vendor);
        put_ascii(&mut d[16..32], product);
        put_ascii(&mut d[32..36], "0001");
        for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
            d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
        }
        d
    }

    fn vpd_pages(&self) -> &'static [u8] {
        if self.disk.is_some() {
            &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]
        } else {
            &[0x00, 0x80, 0x83]
        }
    }

    fn vpd(&self, page: u8, c: &Ctx) -> Result<Vec<u8>, Sense> {
        if !self.vpd_pages().contains(&page) {
            return Err(Sense::invalid_cdb(2, None));
        }
        let body = match page {
            0x00 => self.vpd_pages().to_vec(),
            0x80 => self.serial().into_bytes(),
            0x83 => self.vpd_device_id(c),
            0xb0 => self
                .disk()
                .map_err(|_| Sense::invalid_cdb(2, None))?
                .vpd_block_limits(),
            0xb1 => vpd_block_characteristics(self.kind().thin, self.kind().sanitize),
            _ => self
                .disk()
                .map_err(|_| Sense::invalid_cdb(2, None))?
                .vpd_provisioning(),
        };
        let mut d = vec![self.device_type(), page];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&body);
        Ok(d)
    }

    fn serial(&self) -> String {
        match &self.disk {
            Some(d) => d.opts.serial.clone(),
            None => format!("beaf{}0", self.target.tid),
        }
    }

    /// VPD 0x83 (SPC-4 7.8.6): NAA, T10 vendor id, relative target port,
    /// target port name and target device name.
    /// The T10 vendor identification designator.
    pub(crate) fn t10_id(&self) -> Vec<u8> {
        let (vendor, product) = match &self.disk {
            Some(disk) => (disk.opts.vendor.clone(), disk.opts.product.clone()),
            None => ("RHCSRS".to_string(), "Controller".to_string()),
        };
        let mut t10 = [b' '; 8].to_vec();
        put_ascii(&mut t10, &vendor);
        let mut prod = vec![b' '; 16];
        put_ascii(&mut prod, &product);
        t10.extend_from_slice(&prod);
        t10.extend_from_slice(self.serial().as_bytes());
        t10.truncate(255);
        t10
    }

    fn vpd_device_id(&self, c: &Ctx) -> Vec<u8> {
        let mut d = Vec::with_capacity(128);
        // NAA IEEE Registered Extended (6h), binary, LU association.
        push_designator(&mut d, 0x01, 0x03, &self.naa());
        push_designator(&mut d, 0x02, 0x01, &self.t10_id());
        let rel_port = c.it.rel_port.max(1);
        push_designator(
            &mut d,
            0x51,
            0x94,
            &[0, 0, (rel_port >> 8) as u8, rel_port as u8],
        );
        let port_name = format!("{},t,0x{:04x}", self.target.name, rel_port);
        push_designator(&mut d, 0x53, 0x98, &scsi_name(&port_name));
        push_designator(&mut d, 0x53, 0xa8, &scsi_name(&self.target.name));
        d
    }

    /// A stable NAA 6h identifier from the target id, LUN and serial.
    pub(crate) fn naa(&self) -> [u8; 16] {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.target.name.bytes().chain(self.serial().bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut n = [0u8; 16];
        // NAA 6, OUI 00-14-05 (locally chosen), vendor specific id.
        n[0..4].copy_from_slice(&0x6001_4050u32.to_be_bytes());
        n[4..8].copy_from_slice(&(h as u32).to_be_bytes());
        n[8..16].copy_from_slice(
            &(((u64::from(self.target.tid)) << 48) ^ (self.lun << 32) ^ (h >> 32)).to_be_bytes(),
        );
        n
    }

    /// REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).
    pub(crate) fn report_supported_opcodes(&self, c: &Ctx) -> CmdResult {
        let cdb = c.cdb;
        let rctd = cdb[2] & 0x80 != 0;
        let options = cdb[2] & 0x07;
        let opcode = cdb[3];
        let req_sa = be16(cdb, 4);
        let alloc = be32(cdb, 6) as usize;
        let kind = self.kind();
        let data = match options {
            0 => all_commands(kind, rctd),
            1 => {
                if opcodes::has_service_action(opcode) {
                    return Err(Sense::invalid_cdb(3, None).into());
                }
                one_command(find(opcode, None, kind), rctd)
            }
            2 => {
                if !opcodes::has_service_action(opcode) {
                    return Err(Sense::invalid_cdb(3, None).into());
                }
                one_command(find(opcode, Some(req_sa), kind), rctd)
            }
            3 => {
                let sa = if opcodes::has_service_action(opcode) {
                    Some(req_sa)
                } else {
                    None
                };
                one_command(find(opcode, sa, kind), rctd)
            }
            _ => return Err(Sense::invalid_cdb(2, Some(2)).into()),
        };
        Ok(truncate(data, alloc))
    }

    /// START STOP UNIT (SBC-3 5.25): a disk that is always spinning; the
    /// LOEJ eject is refused while medium removal is prevented.
    pub(crate) fn start_stop_unit(&self, c: &Ctx) -> CmdResult {
        let disk = self.disk()?;
        let power_condition = c.cdb[4] >> 4;
        let loej = c.cdb[4] & 0x02 != 0;
        let start = c.cdb[4] & 0x01 != 0;
        if power_condition == 0 && loej && !start && !disk.prevent.lock().is_empty() {
            return Err(Sense::illegal(Asc::MEDIUM_REMOVAL_PREVENTED).into());
        }
        Ok(Vec::new())
    }

    /// PREVENT ALLOW MEDIUM REMOVAL (SPC-4 6.13).
    pub(crate) fn prevent_allow(&self, c: &Ctx) -> CmdResult {
        let disk = self.disk()?;
        let mut prevent = disk.prevent.lock();
        prevent.retain(|n| *n != c.nexus);
        if c.cdb[4] & 0x01 != 0 {
            prevent.push(c.nexus);
        }
        Ok(Vec::new())
    }
}

fn push_designator(d: &mut Vec<u8>, code_set: u8, kind: u8, value: &[u8]) {
    d.extend_from_slice(&[code_set, kind, 0, value.len() as u8]);
    d.extend_from_slice(value);
}

/// A SCSI name string: UTF-8, NUL-terminated, padded to a multiple of 4.
fn scsi_name(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(250).collect();
    v.push(0);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

/// VPD 0xB1 (SBC-3 6.5.2): non-rotating medium.
fn vpd_block_characteristics(thin: bool, sanitize: bool) -> Vec<u8> {
    let mut d = vec![0u8; 0x3c];
    d[0..2].copy_from_slice(&1u16.to_be_bytes());
    // WABEREQ / WACEREQ 01b where BLOCK / CRYPTO ERASE exist (thin
    // LUNs with SANITIZE): reads after the erase complete GOOD, with zeros.
    d[3] = if thin && sanitize { 0x50 } else { 0 };
    d
}

/// Maximum WRITE SAME length in blocks (VPD 0xB0).
pub(crate) const MAX_WRITE_SAME_BLOCKS: u64 = 1 << 22;
/// Maximum UNMAP block descriptors in one command.
pub(crate) const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Maximum COMPARE AND WRITE length in blocks.
pub(crate) const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 128;
/// Maximum transfer length, bytes.
pub(crate) const MAX_TRANSFER_BYTES: u64 = 32 << 20;

impl Disk {
    /// VPD 0xB0 block limits (SBC-3 6.5.3).
    fn vpd_block_limits(&self) -> Vec<u8> {
        let mut d = vec![0u8; 0x3c];
        let bs = u64::from(self.block_size);
        d[1] = MAX_COMPARE_AND_WRITE_BLOCKS;
        d[2..4].copy_from_slice(&1u16.to_be_bytes());
        d[4..8].copy_from_slice(&((MAX_TRANSFER_BYTES / bs) as u32).to_be_bytes());
        d[8..12].copy_from_slice(&(((1u64 << 20) / bs) as u32).to_be_bytes());
        if self.opts.thin {
            d[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
            d[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
            d[24..28].copy_from_slice(&1u32.to_be_bytes());
        }
        d[32..40].copy_from_slice(&MAX_WRITE_SAME_BLOCKS.to_be_bytes());
        // WRITE ATOMIC(16): any aligment and granularity, no boundaries.
        d[40..44].copy_from_slice(&((MAX_TRANSFER_BYTES / bs) as u32).to_be_bytes());
        d
    }

    /// VPD 0xB2 logical block provisioning (SBC-3 6.5.4).
    fn vpd_provisioning(&self) -> Vec<u8> {
        let mut d = vec![0u8; 4];
        if self.opts.thin {
            d[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ
            d[2] = 0x02; // thin provisioned
        }
        d
    }

    /// Capacity in blocks.
    pub(crate) fn capacity(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }
}

fn find(opcode: u8, sa: Option<u16>, kind: LunKind) -> Option<&'static OpDesc> {
    COMMANDS
        .iter()
        .find(|d| d.op == opcode && d.sa.map(u16::from) == sa && d.available(kind))
}

/// The command timeouts descriptor (SPC-4 6.35.4): no timeouts given.
fn timeouts_descriptor() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0a;
    t
}

fn all_commands(kind: LunKind, rctd: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for d in COMMANDS.iter().filter(|d| d.available(kind)) {
        let mut desc = [0u8; 8];
        desc[0] = d.op;
        if let Some(sa) = d.sa {
            desc[3] = sa;
            desc[5] = 0x01; // SERVACTV
        }
        if rctd {
            desc[5] |= 0x02; // CTDP
        }
        desc[6..8].copy_from_slice(&(d.cdb_len() as u16).to_be_bytes());
        body.extend_from_slice(&desc);
        if rctd {
            body.extend_from_slice(&timeouts_descriptor());
        }
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn one_command(d: Option<&OpDesc>, rctd: bool) -> Vec<u8> {
    let Some(d) = d else {
        return vec![0, 0x01, 0, 0]; // SUPPORT 001b: not supported
    };
    let mut out = vec![0, 0x03, 0, 0]; // SUPPORT 011b: as the standard says
    if rctd {
        out[1] |= 0x80; // CTDP
    }
    out[2..4].copy_from_slice(&(d.cdb_len() as u16).to_be_bytes());
    out.extend_from_slice(d.usage);
    if d.sa.is_some() {
        // The service action is part of the usage data's byte 1.
        out[5] = (d.usage[1] & 0xe0) | 0x1f;
    }
    if rctd {
        out.extend_from_slice(&timeouts_descriptor());
    }
    out
}
