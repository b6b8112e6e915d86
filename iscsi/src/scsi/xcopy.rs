//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.26): the
//! copy manager runs block-to-block segments between disk LUNs of this
//! target, named by their NAA or T10 vendor identification designators.

use std::collections::VecDeque;
use std::sync::Arc;

use super::cdb::{be16, be32, be64};
use super::lun::{CmdResult, Ctx, Disk, Lun};
use super::sense::{key, Asc, Sense};
use super::spc::truncate;
use super::NexusId;

/// Copy manager limits (RECEIVE COPY RESULTS, OPERATING PARAMETERS).
pub(crate) const MAX_TARGET_DESCRIPTORS: usize = 8;
pub(crate) const MAX_SEGMENT_DESCRIPTORS: usize = 16;
pub(crate) const MAX_DESCRIPTOR_LIST_LEN: usize = 1024;
/// Largest segment, in bytes.
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Copy status records kept per LUN.
const MAX_STATUS_RECORDS: usize = 64;

const HEADER_LEN: usize = 16;
const TARGET_DESC_LEN: usize = 32;
/// Identification descriptor CSCD descriptor.
const IDENT_TARGET_DESC: u8 = 0xe4;
/// Block device to block device segment descriptor.
const BLOCK_TO_BLOCK: u8 = 0x02;
const BLOCK_TO_BLOCK_LEN: usize = 28;

/// RECEIVE COPY RESULTS service actions.
mod sa {
    pub const COPY_STATUS: u8 = 0x00;
    pub const OPERATING_PARAMETERS: u8 = 0x03;
}

/// The outcome of one EXTENDED COPY, for COPY STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CopyStatus {
    nexus: NexusId,
    list_id: u8,
    ok: bool,
    segments_done: u16,
    bytes: u64,
}

/// Recent copy results of one LUN (bounded).
#[derive(Debug, Default)]
pub(crate) struct CopyResults {
    records: VecDeque<CopyStatus>,
}

impl CopyResults {
    fn put(&mut self, s: CopyStatus) {
        self.records
            .retain(|r| !(r.nexus == s.nexus && r.list_id == s.list_id));
        if self.records.len() == MAX_STATUS_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(s);
    }

    fn get(&self, nexus: NexusId, list_id: u8) -> Option<CopyStatus> {
        self.records
            .iter()
            .find(|r| r.nexus == nexus && r.list_id == list_id)
            .copied()
    }
}

/// A CSCD: the LUN it names, if it is one of ours and not NUL.
struct Cscd {
    lun: Option<Arc<Lun>>,
}

/// One block-to-block segment.
struct Segment {
    src: usize,
    dst: usize,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
}

fn copy_aborted(asc: Asc) -> Sense {
    Sense::new(key::COPY_ABORTED, asc)
}

/// COPY TARGET DEVICE NOT REACHABLE.
const NOT_REACHABLE: Asc = Asc(0x0d, 0x02);
const TOO_MANY_TARGET_DESCRIPTORS: Asc = Asc(0x26, 0x06);
const UNSUPPORTED_TARGET_DESCRIPTOR: Asc = Asc(0x26, 0x07);
const TOO_MANY_SEGMENT_DESCRIPTORS: Asc = Asc(0x26, 0x08);
const UNSUPPORTED_SEGMENT_DESCRIPTOR: Asc = Asc(0x26, 0x09);

impl Lun {
    /// EXTENDED COPY (LID1).
    pub(crate) fn extended_copy(&self, c: &Ctx) -> CmdResult {
        self.disk()?;
        let plen = be32(c.cdb, 10) as usize;
        if plen == 0 {
            return Ok(Vec::new());
        }
        let p = c.data.get(..plen).ok_or_else(Sense::param_list_length)?;
        if plen < HEADER_LEN {
            return Err(Sense::param_list_length().into());
        }
        let list_id = p[0];
        let list_id_usage = (p[1] >> 3) & 0x03;
        let tdl = usize::from(be16(p, 2));
        let sdl = be32(p, 8) as usize;
        let inline = be32(p, 12) as usize;
        if inline != 0 {
            return Err(Sense::invalid_param(12, None).into());
        }
        if HEADER_LEN + tdl + sdl > plen || tdl + sdl > MAX_DESCRIPTOR_LIST_LEN {
            return Err(Sense::param_list_length().into());
        }
        let cscds = self.parse_cscds(c, &p[HEADER_LEN..HEADER_LEN + tdl])?;
        let segments = parse_segments(
            &p[HEADER_LEN + tdl..HEADER_LEN + tdl + sdl],
            HEADER_LEN + tdl,
        )?;
        let mut status = CopyStatus {
            nexus: c.nexus,
            list_id,
            ok: false,
            segments_done: 0,
            bytes: 0,
        };
        let result = self.run_segments(&cscds, &segments, &mut status);
        status.ok = result.is_ok();
        if list_id_usage < 2 {
            self.copy_results.lock().put(status);
        }
        result.map(|_| Vec::new()).map_err(Into::into)
    }

    fn parse_cscds(&self, c: &Ctx, list: &[u8]) -> Result<Vec<Cscd>, Sense> {
        if !list.len().is_multiple_of(TARGET_DESC_LEN) {
            return Err(Sense::param_list_length());
        }
        if list.len() / TARGET_DESC_LEN > MAX_TARGET_DESCRIPTORS {
            return Err(Sense::illegal(TOO_MANY_TARGET_DESCRIPTORS));
        }
        let mut out = Vec::new();
        for (i, d) in list.chunks_exact(TARGET_DESC_LEN).enumerate() {
            let at = (HEADER_LEN + i * TARGET_DESC_LEN) as u16;
            if d[0] != IDENT_TARGET_DESC {
                return Err(Sense::illegal(UNSUPPORTED_TARGET_DESCRIPTOR)
                    .with_field_pointer(false, at, None));
            }
            // LU ID TYPE (byte 1 bits 7-6) is ignored: SPC-4 6.4.5.1 has
            // the LU named by the designator alone.
            if d[1] & 0x1f != 0 {
                return Err(Sense::invalid_param(at + 1, Some(4))); // block devices only
            }
            let nul = d[1] & 0x20 != 0;
            let len = usize::from(d[7]).min(20);
            let lun = if nul {
                None
            } else {
                c.target.lun_by_designator(d[5] & 0x0f, &d[8..8 + len])
            };
            out.push(Cscd { lun });
        }
        Ok(out)
    }

    fn run_segments(
        &self,
        cscds: &[Cscd],
        segments: &[Segment],
        st: &mut CopyStatus,
    ) -> Result<(), Sense> {
        for s in segments {
            let disk_of = |i: usize| -> Result<&Disk, Sense> {
                let l = cscds
                    .get(i)
                    .and_then(|t| t.lun.as_ref())
                    .ok_or_else(|| copy_aborted(NOT_REACHABLE))?;
                l.disk.as_ref().ok_or_else(|| copy_aborted(NOT_REACHABLE))
            };
            let (src, dst) = (disk_of(s.src)?, disk_of(s.dst)?);
            copy_segment(src, dst, s).map_err(|e| {
                if e.key == key::ILLEGAL_REQUEST {
                    copy_aborted(Asc::NO_ADDITIONAL)
                } else {
                    e
                }
            })?;
            st.segments_done += 1;
            st.bytes += s.blocks * u64::from(src.block_size);
        }
        Ok(())
    }

    /// RECEIVE COPY RESULTS: COPY STATUS and OPERATING PARAMETERS.
    pub(crate) fn receive_copy_results(&self, c: &Ctx) -> CmdResult {
        self.disk()?;
        let alloc = be32(c.cdb, 10) as usize;
        let data = match c.cdb[1] & 0x1f {
            sa::OPERATING_PARAMETERS => operating_parameters(),
            sa::COPY_STATUS => {
                let st = self
                    .copy_results
                    .lock()
                    .get(c.nexus, c.cdb[2])
                    .ok_or_else(|| Sense::invalid_cdb(2, None))?;
                copy_status(&st)
            }
            _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
        };
        Ok(truncate(data, alloc))
    }
}

fn parse_segments(list: &[u8], base: usize) -> Result<Vec<Segment>, Sense> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < list.len() {
        if list.len() - at < 4 {
            return Err(Sense::param_list_length());
        }
        let len = usize::from(be16(list, at + 2)) + 4;
        if out.len() == MAX_SEGMENT_DESCRIPTORS {
            return Err(Sense::illegal(TOO_MANY_SEGMENT_DESCRIPTORS));
        }
        if list[at] != BLOCK_TO_BLOCK || len != BLOCK_TO_BLOCK_LEN {
            return Err(
                Sense::illegal(UNSUPPORTED_SEGMENT_DESCRIPTOR).with_field_pointer(
                    false,
                    (base + at) as u16,
                    None,
                ),
            );
        }
        if at + len > list.len() {
            return Err(Sense::param_list_length());
        }
        let d = &list[at..at + len];
        out.push(Segment {
            src: usize::from(be16(d, 4)),
            dst: usize::from(be16(d, 6)),
            blocks: u64::from(be16(d, 10)),
            src_lba: be64(d, 12),
            dst_lba: be64(d, 20),
        });
        at += len;
    }
    Ok(out)
}

/// Copy one segment in 1 MiB chunks.
fn copy_segment(src: &Disk, dst: &Disk, s: &Segment) -> Result<(), Sense> {
    if src.block_size != dst.block_size {
        return Err(copy_aborted(Asc::NO_ADDITIONAL));
    }
    src.check_range(s.src_lba, s.blocks)?;
    dst.check_range(s.dst_lba, s.blocks)?;
    let bs = u64::from(src.block_size);
    if s.blocks * bs > MAX_SEGMENT_BYTES {
        return Err(copy_aborted(Asc::NO_ADDITIONAL));
    }
    if dst.opts.readonly || dst.software_write_protect() {
        return Err(Sense::write_protected());
    }
    let chunk_blocks = ((1u64 << 20) / bs).max(1);
    let mut buf = vec![0u8; (chunk_blocks * bs) as usize];
    let mut done = 0;
    let _shared = dst.write_gate.read();
    while done < s.blocks {
        let n = chunk_blocks.min(s.blocks - done);
        let part = &mut buf[..(n * bs) as usize];
        src.backing
            .read_at(part, (s.src_lba + done) * bs)
            .map_err(|_| copy_aborted(Asc::UNRECOVERED_READ_ERROR))?;
        dst.backing
            .write_at(part, (s.dst_lba + done) * bs, false)
            .map_err(|_| copy_aborted(Asc::WRITE_ERROR))?;
        done += n;
    }
    Ok(())
}

/// OPERATING PARAMETERS (SPC-4 6.26.4).
fn operating_parameters() -> Vec<u8> {
    let mut d = vec![0u8; 46];
    let n = d.len() as u32 - 4;
    d[0..4].copy_from_slice(&n.to_be_bytes());
    d[4] = 0x01; // SNLID: list identifiers are per I_T nexus
    d[8..10].copy_from_slice(&(MAX_TARGET_DESCRIPTORS as u16).to_be_bytes());
    d[10..12].copy_from_slice(&(MAX_SEGMENT_DESCRIPTORS as u16).to_be_bytes());
    d[12..16].copy_from_slice(&(MAX_DESCRIPTOR_LIST_LEN as u32).to_be_bytes());
    d[16..20].copy_from_slice(&(MAX_SEGMENT_BYTES as u32).to_be_bytes());
    d[34..36].copy_from_slice(&1u16.to_be_bytes()); // TOTAL CONCURRENT COPIES
    d[36] = 1; // MAXIMUM CONCURRENT COPIES
    d[37] = 9; // DATA SEGMENT GRANULARITY: 512 bytes
    d[43] = 2; // IMPLEMENTED DESCRIPTOR LIST LENGTH
    d[44] = BLOCK_TO_BLOCK;
    d[45] = IDENT_TARGET_DESC;
    d
}

/// COPY STATUS (SPC-4 6.26.2): transfer count in bytes.
fn copy_status(s: &CopyStatus) -> Vec<u8> {
    let mut d = vec![0u8; 12];
    d[0..4].copy_from_slice(&8u32.to_be_bytes());
    d[4] = if s.ok { 0x01 } else { 0x02 };
    d[5..7].copy_from_slice(&s.segments_done.to_be_bytes());
    d[7] = 0; // TRANSFER COUNT UNITS: bytes
    d[8..12].copy_from_slice(&u32::try_from(s.bytes).unwrap_or(u32::MAX).to_be_bytes());
    d
}
