//! SCSI tasks in full feature phase (RFC 7143 4.2 and 11.2-11.8): SCSI
//! Command with immediate and unsolicited data, R2T / Data-Out collection,
//! Data-In split by MaxXmitDataSegmentLength with phase collapse, SCSI
//! Response with residuals, and task management.

use std::sync::Arc;

use crate::pdu::{
    self, data_in, flags, opcode, r2t, scsi_cmd, scsi_rsp, task_mgmt as tmf, Bhs, Pdu, RESERVED_TAG,
};
use crate::scsi::sense::{Asc, Sense};
use crate::scsi::{status, NexusId, ScsiCommand, ScsiResponse, ScsiTarget, TaskMgmt};

use super::conn::{Connection, Output, Payload, Phase, SessionKind, QUEUE_DEPTH};

/// The largest write the target collects for one command (bounds memory).
pub const MAX_WRITE_LEN: u32 = 64 << 20;

/// Write data one session may have in collection at once; a write beyond
/// it is answered BUSY (bounds memory against a hostile initiator).
pub const SESSION_WRITE_BUDGET: u64 = 256 << 20;

/// A SCSI command with all its Data-Out, ready to run on any thread.
#[derive(Debug)]
pub struct ScsiTask {
    pub itt: u32,
    pub scsi: Arc<ScsiTarget>,
    pub nexus: NexusId,
    pub lun: u64,
    pub cdb: Vec<u8>,
    pub data_out: Vec<u8>,
    pub expected_in_len: u32,
}

impl ScsiTask {
    /// Runs the command on the SCSI target (and counts it, see
    /// [`super::metrics`]).
    pub fn run(&self) -> ScsiResponse {
        let r = self.scsi.execute(
            self.nexus,
            &ScsiCommand {
                lun: self.lun,
                cdb: &self.cdb,
                data_out: &self.data_out,
                expected_in_len: self.expected_in_len,
                tag: self.itt,
            },
        );
        let (out, inn) = (self.data_out.len(), r.data_in.len());
        super::metrics::count(self.scsi.name(), self.lun, &self.cdb, out, inn, r.status);
        r
    }
}

/// A task the session knows about.
#[derive(Debug)]
pub(super) enum TaskState {
    /// Collecting Data-Out.
    Receiving(Box<WriteTask>),
    /// Handed to the driver; its response is sent by [`Connection::complete`].
    Executing(Done),
}

/// What the response of an executing task needs.
#[derive(Debug, Clone)]
pub(super) struct Done {
    pub itt: u32,
    pub lun_raw: u64,
    pub lun: u64,
    /// Expected Data-In length (0 without the R bit).
    pub in_len: u32,
    /// Write residual: (flag, count), from SPDTL against EDTL.
    pub write_residual: Option<(u8, u32)>,
    pub r2t_count: u32,
    pub aborted: bool,
}

/// One outstanding R2T.
#[derive(Debug)]
pub(super) struct R2t {
    ttt: u32,
    offset: u32,
    len: u32,
    received: u32,
    next_data_sn: u32,
}

/// A write waiting for its data.
#[derive(Debug)]
pub(super) struct WriteTask {
    done: Done,
    cdb: Vec<u8>,
    edtl: u32,
    buf: Vec<u8>,
    received: u32,
    /// Next expected unsolicited offset, and where unsolicited data ends.
    unsol_pos: u32,
    unsol_end: u32,
    unsol_data_sn: u32,
    next_solicit: u32,
    r2ts: Vec<R2t>,
}

/// Why a Data-Out is refused.
enum DataOutError {
    /// Reject with this reason and fail the task.
    Fatal(u8),
}

/// The data-out length the CDB asks for, when the opcode is a write.
fn spdtl(cdb: &[u8], block_size: u32) -> Option<u64> {
    let bs = u64::from(block_size);
    let be = |r: std::ops::Range<usize>| {
        cdb.get(r)
            .map(|b| b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
    };
    let blocks = match *cdb.first()? {
        0x0a => Some(match be(4..5)? {
            0 => 256,
            n => n,
        }),
        0x2a | 0x2e => be(7..9),
        0xaa | 0xae => be(6..10),
        0x8a | 0x8e => be(10..14),
        0x89 => be(13..14).map(|n| 2 * n),
        0x41 | 0x93 => return Some(bs),
        _ => None,
    }?;
    Some(blocks * bs)
}

impl Connection {
    /// SCSI Command (RFC 7143 11.3).
    pub(super) fn do_scsi_command(&mut self, pdu: Pdu) {
        let Some((scsi, nexus)) = self.scsi() else {
            return;
        };
        let bhs = &pdu.bhs;
        let itt = bhs.itt();
        let f = bhs.flags();
        let (read, write) = (f & flags::READ != 0, f & flags::WRITE != 0);
        let edtl = bhs.u32_at(scsi_cmd::EDTL);
        let imm = pdu.data.len() as u32;
        let p = &self.params;
        let bad_immediate =
            imm > 0 && (!write || !p.immediate_data || imm > p.first_burst() || imm > edtl);
        if bad_immediate || (read && write) {
            return self.send_reject(bhs, pdu::reject::PROTOCOL_ERROR);
        }
        if self.session().tasks.contains_key(&itt) {
            return self.send_reject(bhs, pdu::reject::TASK_IN_PROGRESS);
        }
        let Some(cdb) = full_cdb(&pdu) else {
            return self.send_reject(bhs, pdu::reject::INVALID_PDU_FIELD);
        };
        let lun = bhs.lun();
        let done = Done {
            itt,
            lun_raw: bhs.lun_raw(),
            lun,
            in_len: if read { edtl } else { 0 },
            write_residual: None,
            r2t_count: 0,
            aborted: false,
        };
        if self.session().tasks.len() as u32 >= 2 * QUEUE_DEPTH {
            let full = ScsiResponse {
                status: status::TASK_SET_FULL,
                ..Default::default()
            };
            return self.send_scsi_result(done, full);
        }
        let block_size = if write || edtl == 0 {
            block_size_of(&scsi, lun)
        } else {
            None
        };
        let wanted = block_size.and_then(|bs| spdtl(&cdb, bs));
        let out_len = if write { edtl } else { 0 };
        if out_len > MAX_WRITE_LEN {
            let sense = Sense::new(0x05, Asc(0x24, 0x00));
            return self.send_scsi_result(done, sense_response(sense.to_fixed()));
        }
        if self.pending_write_bytes() + u64::from(out_len) > SESSION_WRITE_BUDGET {
            let busy = ScsiResponse {
                status: status::BUSY,
                ..Default::default()
            };
            return self.send_scsi_result(done, busy);
        }
        let p = &self.params;
        let unsol_end = if p.initial_r2t {
            imm
        } else {
            p.first_burst().min(out_len).max(imm)
        };
        let mut task = Box::new(WriteTask {
            done,
            cdb,
            edtl: out_len,
            buf: pdu.data,
            received: imm,
            unsol_pos: imm,
            unsol_end,
            unsol_data_sn: 0,
            next_solicit: unsol_end,
            r2ts: Vec::new(),
        });
        task.done.write_residual = wanted.map(|w| residual(w, u64::from(out_len)));
        if task.received == task.edtl {
            return self.execute(*task, scsi, nexus);
        }
        self.session().tasks.insert(itt, TaskState::Receiving(task));
        self.send_r2ts(itt);
    }

    /// Bytes of write data the session is collecting.
    fn pending_write_bytes(&mut self) -> u64 {
        self.session()
            .tasks
            .values()
            .map(|t| match t {
                TaskState::Receiving(w) => u64::from(w.edtl),
                TaskState::Executing(_) => 0,
            })
            .sum()
    }

    /// Issues R2Ts up to MaxOutstandingR2T for the rest of a write.
    fn send_r2ts(&mut self, itt: u32) {
        let (max_burst, max_out) = (
            self.params.max_burst_length,
            self.params.max_outstanding_r2t,
        );
        loop {
            let s = self.session();
            let ttt = s.next_ttt;
            let Some(TaskState::Receiving(t)) = s.tasks.get_mut(&itt) else {
                return;
            };
            if t.next_solicit >= t.edtl || t.r2ts.len() as u32 >= max_out {
                return;
            }
            let offset = t.next_solicit;
            let len = (t.edtl - offset).min(max_burst);
            t.next_solicit += len;
            t.r2ts.push(R2t {
                ttt,
                offset,
                len,
                received: 0,
                next_data_sn: 0,
            });
            let r2t_sn = t.done.r2t_count;
            t.done.r2t_count += 1;
            let lun_raw = t.done.lun_raw;
            s.next_ttt = match ttt.wrapping_add(1) {
                RESERVED_TAG => 1,
                n => n,
            };
            let mut bhs = Bhs::new(opcode::R2T);
            bhs.set_flags(flags::FINAL);
            bhs.set_lun_raw(lun_raw);
            bhs.set_itt(itt);
            bhs.set_u32_at(r2t::TTT, ttt);
            bhs.set_u32_at(r2t::STAT_SN, self.stat_sn);
            bhs.set_u32_at(r2t::R2T_SN, r2t_sn);
            bhs.set_u32_at(r2t::BUFFER_OFFSET, offset);
            bhs.set_u32_at(r2t::DESIRED_LEN, len);
            self.stamp_window(&mut bhs);
            self.send(bhs, Payload::None);
        }
    }

    /// SCSI Data-Out (RFC 7143 11.7): solicited or unsolicited write data.
    pub(super) fn receive_data_out(&mut self, pdu: Pdu) {
        let itt = pdu.bhs.itt();
        let Some(TaskState::Receiving(task)) = self.session().tasks.get_mut(&itt) else {
            // Data for a task that was aborted or never existed.
            tracing::debug!(itt, "Data-Out for no pending write ignored");
            return;
        };
        match accept_data_out(task, &pdu) {
            Ok(r2t_done) => {
                if task.received == task.edtl {
                    let Some(TaskState::Receiving(task)) = self.session().tasks.remove(&itt) else {
                        unreachable!("task checked above")
                    };
                    if let Some((scsi, nexus)) = self.scsi() {
                        self.execute(*task, scsi, nexus);
                    }
                } else if r2t_done {
                    self.send_r2ts(itt);
                }
            }
            Err(DataOutError::Fatal(reason)) => {
                // ERL 0 cannot recover the sequence: reject the PDU and
                // end the task with CHECK CONDITION; the session goes on.
                tracing::warn!(peer = %self.peer, itt, reason, "bad Data-Out: task failed");
                self.send_reject(&pdu.bhs, reason);
                if let Some(TaskState::Receiving(task)) = self.session().tasks.remove(&itt) {
                    let sense = Sense::new(0x0b, Asc(0x4b, 0x00));
                    self.send_scsi_result(task.done, sense_response(sense.to_fixed()));
                }
            }
        }
    }

    /// Hands a complete command to the driver, or answers an overflowing
    /// write itself (no data written).
    fn execute(&mut self, task: WriteTask, scsi: Arc<ScsiTarget>, nexus: NexusId) {
        let WriteTask {
            done, cdb, mut buf, ..
        } = task;
        let mut cdb = cdb;
        let mismatch = done.write_residual.is_some_and(|(_, n)| n > 0);
        if mismatch && cdb.first() == Some(&0x89) {
            // COMPARE AND WRITE needs exactly 2 x NUMBER OF LOGICAL BLOCKS.
            let sense = Sense::new(0x05, Asc(0x24, 0x00));
            return self.send_scsi_result(done, sense_response(sense.to_fixed()));
        }
        if let Some((flags::OVERFLOW, _)) = done.write_residual.filter(|(_, n)| *n > 0) {
            // SPDTL > EDTL: write only the whole blocks the initiator sent
            // (FCP-4 9.4.2 a); other commands get INVALID FIELD IN
            // INFORMATION UNIT.
            let bs = block_size_of(&scsi, done.lun).unwrap_or(512);
            let blocks = buf.len() as u64 / u64::from(bs);
            if !set_transfer_blocks(&mut cdb, blocks) {
                let sense = Sense::new(0x05, Asc(0x0e, 0x03));
                return self.send_scsi_result(done, sense_response(sense.to_fixed()));
            }
            if blocks == 0 {
                return self.send_scsi_result(done, ScsiResponse::default());
            }
            buf.truncate((blocks * u64::from(bs)) as usize);
        }
        let itt = done.itt;
        let expected_in_len = done.in_len;
        let lun = done.lun;
        self.session().tasks.insert(itt, TaskState::Executing(done));
        self.out.push(Output::Execute(ScsiTask {
            itt,
            scsi,
            nexus,
            lun,
            cdb,
            data_out: buf,
            expected_in_len,
        }));
    }

    /// Sends Data-In (status collapsed into the last one when GOOD without
    /// sense) and, when needed, a SCSI Response.
    pub(super) fn send_scsi_result(&mut self, done: Done, resp: ScsiResponse) {
        let mut data = resp.data_in;
        let in_len = done.in_len as usize;
        let (res_flag, res_count) = match done.write_residual {
            Some(r) if done.in_len == 0 => r,
            _ => residual(data.len() as u64, in_len as u64),
        };
        data.truncate(in_len);
        let collapse = resp.status == status::GOOD && resp.sense.is_empty() && !data.is_empty();
        let data = Arc::new(data);
        let (max_xmit, max_burst) = (
            self.params.max_xmit_data_segment_length as usize,
            self.params.max_burst_length as usize,
        );
        let mut offset = 0;
        let mut data_sn = 0u32;
        while offset < data.len() {
            let burst_end = (offset / max_burst + 1) * max_burst;
            let end = (offset + max_xmit).min(burst_end).min(data.len());
            let last = end == data.len();
            let mut bhs = Bhs::new(opcode::DATA_IN);
            let mut f = if last || end == burst_end {
                flags::FINAL
            } else {
                0
            };
            bhs.set_lun_raw(done.lun_raw);
            bhs.set_itt(done.itt);
            bhs.set_u32_at(data_in::TTT, RESERVED_TAG);
            bhs.set_u32_at(data_in::DATA_SN, data_sn);
            bhs.set_u32_at(data_in::BUFFER_OFFSET, offset as u32);
            if last && collapse {
                f |= flags::STATUS | res_flag;
                bhs.set_u8_at(data_in::STATUS, resp.status);
                bhs.set_u32_at(data_in::RESIDUAL, res_count);
                bhs.set_flags(f);
                self.stamp_status(&mut bhs);
            } else {
                bhs.set_flags(f);
                bhs.set_u32_at(data_in::STAT_SN, self.stat_sn);
                self.stamp_window(&mut bhs);
            }
            self.send(bhs, Payload::Shared(data.clone(), offset..end));
            data_sn += 1;
            offset = end;
        }
        if collapse {
            return;
        }
        let mut bhs = Bhs::new(opcode::SCSI_RSP);
        bhs.set_flags(flags::FINAL | res_flag);
        bhs.set_u8_at(scsi_rsp::STATUS, resp.status);
        bhs.set_itt(done.itt);
        bhs.set_u32_at(
            scsi_rsp::EXP_DATA_SN,
            if done.in_len > 0 {
                data_sn
            } else {
                done.r2t_count
            },
        );
        bhs.set_u32_at(scsi_rsp::RESIDUAL, res_count);
        self.stamp_status(&mut bhs);
        let sense = if resp.sense.is_empty() {
            Vec::new()
        } else {
            let mut v = (resp.sense.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(&resp.sense);
            v
        };
        self.send(bhs, Payload::Owned(sense));
    }

    /// Task Management Function Request (RFC 7143 11.5).
    pub(super) fn do_task_mgmt(&mut self, pdu: Pdu) {
        let Some((scsi, nexus)) = self.scsi() else {
            return;
        };
        let bhs = &pdu.bhs;
        let function = bhs.flags() & 0x7f;
        let lun = bhs.lun();
        let rtt = bhs.u32_at(tmf::RTT);
        let ref_cmd_sn = bhs.u32_at(tmf::REF_CMD_SN);
        let response = match function {
            tmf::ABORT_TASK => self.abort_task(&scsi, nexus, lun, rtt, ref_cmd_sn),
            tmf::ABORT_TASK_SET => {
                self.abort_where(&scsi, nexus, Some(lun), TaskMgmt::AbortTaskSet { lun })
            }
            tmf::CLEAR_TASK_SET => {
                self.abort_where(&scsi, nexus, Some(lun), TaskMgmt::ClearTaskSet { lun })
            }
            tmf::LOGICAL_UNIT_RESET => {
                self.abort_where(&scsi, nexus, Some(lun), TaskMgmt::LunReset { lun })
            }
            tmf::TARGET_WARM_RESET => {
                self.abort_where(&scsi, nexus, None, TaskMgmt::TargetWarmReset)
            }
            tmf::TARGET_COLD_RESET => {
                self.abort_where(&scsi, nexus, None, TaskMgmt::TargetColdReset)
            }
            tmf::TASK_REASSIGN => tmf::RSP_NO_REASSIGN,
            tmf::CLEAR_ACA => tmf::RSP_NOT_SUPPORTED,
            _ => tmf::RSP_REJECTED,
        };
        self.run_early_commands();
        let mut out = Bhs::new(opcode::TASK_MGMT_RSP);
        out.set_flags(flags::FINAL);
        out.set_u8_at(tmf::RESPONSE, response);
        out.set_itt(bhs.itt());
        self.stamp_status(&mut out);
        self.send(out, Payload::None);
        if function == tmf::TARGET_COLD_RESET && response == tmf::RSP_COMPLETE {
            self.cold_reset_others();
            self.close();
        }
    }

    fn abort_task(
        &mut self,
        scsi: &ScsiTarget,
        nexus: NexusId,
        lun: u64,
        rtt: u32,
        ref_cmd_sn: u32,
    ) -> u8 {
        let s = self.session();
        let exp = s.exp_cmd_sn;
        match s.tasks.get_mut(&rtt) {
            Some(TaskState::Receiving(_)) => {
                s.tasks.remove(&rtt);
                scsi.task_mgmt(nexus, TaskMgmt::AbortTask { lun, tag: rtt });
                tmf::RSP_COMPLETE
            }
            Some(TaskState::Executing(done)) => {
                done.aborted = true;
                scsi.task_mgmt(nexus, TaskMgmt::AbortTask { lun, tag: rtt });
                tmf::RSP_COMPLETE
            }
            // Received and already completed: the task does not exist.
            None if pdu::sn_lt(ref_cmd_sn, exp) => tmf::RSP_NO_TASK,
            // Not received yet (RFC 7143 11.5.1 b): the CmdSN counts as
            // received. A NOP-Out without ITT takes its place (a no-op
            // that lets ExpCmdSN pass it) and the function is complete.
            None if !pdu::sn_lt(s.max_cmd_sn, ref_cmd_sn) => {
                let mut nop = Bhs::new(opcode::NOP_OUT);
                nop.set_itt(RESERVED_TAG);
                s.early.insert(ref_cmd_sn, Pdu::new(nop));
                tmf::RSP_COMPLETE
            }
            None => tmf::RSP_NO_TASK,
        }
    }

    /// Aborts this session's tasks on `lun` (all LUNs for `None`) and
    /// forwards the function to the SCSI target.
    fn abort_where(
        &mut self,
        scsi: &ScsiTarget,
        nexus: NexusId,
        lun: Option<u64>,
        f: TaskMgmt,
    ) -> u8 {
        let s = self.session();
        s.tasks.retain(|_, t| match t {
            TaskState::Receiving(w) => lun.is_some_and(|l| l != w.done.lun),
            TaskState::Executing(_) => true,
        });
        for t in s.tasks.values_mut() {
            if let TaskState::Executing(d) = t {
                if lun.is_none_or(|l| l == d.lun) {
                    d.aborted = true;
                }
            }
        }
        scsi.task_mgmt(nexus, f)
    }

    /// TARGET COLD RESET closes every session of the target (RFC 7143 11.5.1).
    fn cold_reset_others(&mut self) {
        let Phase::FullFeature(s) = &self.phase else {
            return;
        };
        let SessionKind::Normal { target, .. } = &s.kind else {
            return;
        };
        let me = s.tsih;
        for other in self.registry.sessions_of(Some(target.tid)) {
            if other.tsih != me {
                (other.kill)();
            }
        }
    }
}

/// Checks one Data-Out against the write's state and stores its data.
/// Returns true when it completed an R2T.
fn accept_data_out(task: &mut WriteTask, pdu: &Pdu) -> Result<bool, DataOutError> {
    let bhs = &pdu.bhs;
    let ttt = bhs.u32_at(pdu::data_out::TTT);
    let data_sn = bhs.u32_at(pdu::data_out::DATA_SN);
    let offset = bhs.u32_at(pdu::data_out::BUFFER_OFFSET);
    let len = pdu.data.len() as u32;
    let end = offset
        .checked_add(len)
        .ok_or(DataOutError::Fatal(pdu::reject::PROTOCOL_ERROR))?;
    let mut r2t_done = false;
    if ttt == RESERVED_TAG {
        let in_order =
            offset == task.unsol_pos && end <= task.unsol_end && data_sn == task.unsol_data_sn;
        if !in_order {
            return Err(DataOutError::Fatal(pdu::reject::PROTOCOL_ERROR));
        }
        task.unsol_pos = end;
        task.unsol_data_sn += 1;
    } else {
        let Some(idx) = task.r2ts.iter().position(|r| r.ttt == ttt) else {
            return Err(DataOutError::Fatal(pdu::reject::INVALID_PDU_FIELD));
        };
        let r = &mut task.r2ts[idx];
        let in_order =
            offset == r.offset + r.received && end <= r.offset + r.len && data_sn == r.next_data_sn;
        if !in_order {
            return Err(DataOutError::Fatal(pdu::reject::PROTOCOL_ERROR));
        }
        r.received += len;
        r.next_data_sn += 1;
        if r.received == r.len {
            task.r2ts.remove(idx);
            r2t_done = true;
        }
    }
    if task.buf.len() < end as usize {
        task.buf.resize(end as usize, 0);
    }
    task.buf[offset as usize..end as usize].copy_from_slice(&pdu.data);
    task.received += len;
    Ok(r2t_done)
}

/// Rewrites the transfer length of a WRITE / WRITE AND VERIFY CDB; false
/// for other opcodes.
fn set_transfer_blocks(cdb: &mut [u8], blocks: u64) -> bool {
    let range = match cdb.first() {
        Some(0x0a) => 4..5,
        Some(0x2a | 0x2e) => 7..9,
        Some(0xaa | 0xae) => 6..10,
        Some(0x8a | 0x8e) => 10..14,
        _ => return false,
    };
    if cdb.len() < range.end {
        return false;
    }
    let width = range.len();
    let bytes = blocks.to_be_bytes();
    cdb[range].copy_from_slice(&bytes[8 - width..]);
    true
}

/// Residual flag and count of `actual` bytes against `expected`.
fn residual(actual: u64, expected: u64) -> (u8, u32) {
    use std::cmp::Ordering::*;
    match actual.cmp(&expected) {
        Greater => (
            flags::OVERFLOW,
            (actual - expected).min(u64::from(u32::MAX)) as u32,
        ),
        Less => (flags::UNDERFLOW, (expected - actual) as u32),
        Equal => (0, 0),
    }
}

fn sense_response(sense: Vec<u8>) -> ScsiResponse {
    ScsiResponse {
        status: status::CHECK_CONDITION,
        sense,
        data_in: Vec::new(),
    }
}

fn block_size_of(scsi: &ScsiTarget, lun: u64) -> Option<u32> {
    scsi.luns()
        .into_iter()
        .find(|l| l.lun == lun)
        .map(|l| l.block_size)
        .filter(|b| *b > 0)
}

/// The CDB, continued by an extended-CDB AHS (type 1) when longer than 16.
fn full_cdb(pdu: &Pdu) -> Option<Vec<u8>> {
    let mut cdb = pdu.bhs.cdb().to_vec();
    let mut ahs = &pdu.ahs[..];
    while ahs.len() >= 4 {
        let len = u16::from_be_bytes([ahs[0], ahs[1]]) as usize;
        let kind = ahs[2];
        let total = (3 + len).div_ceil(4) * 4;
        if total > ahs.len() || len == 0 {
            return None;
        }
        if kind == 1 {
            cdb.extend_from_slice(&ahs[4..3 + len]);
        }
        ahs = &ahs[total..];
    }
    Some(cdb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdtl_of_write_cdbs() {
        assert_eq!(spdtl(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 2, 0], 512), Some(1024));
        assert_eq!(spdtl(&[0x0a, 0, 0, 0, 0, 0], 512), Some(256 * 512));
        assert_eq!(
            spdtl(&[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 512),
            Some(1024)
        );
        assert_eq!(spdtl(&[0x28; 10], 512), None);
        assert_eq!(spdtl(&[0x2a, 0], 512), None);
    }

    #[test]
    fn residual_flags() {
        assert_eq!(residual(10, 10), (0, 0));
        assert_eq!(residual(12, 10), (flags::OVERFLOW, 2));
        assert_eq!(residual(8, 10), (flags::UNDERFLOW, 2));
    }
}
