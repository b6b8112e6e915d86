//! The initiator's full feature phase (RFC 7143 3.2, 4.2, 11) as a sans-IO
//! state machine, one connection per session (MaxConnections=1, ERL 0).
//!
//! Callers submit requests ([`Session::submit_scsi`], task management, text,
//! NOP-Out, logout), each with an opaque token `T`; the session numbers them
//! (ITT, CmdSN), holds non-immediate commands while the command window
//! (MaxCmdSN) is closed, and queues the PDUs to send ([`Session::poll_transmit`]).
//! Every PDU the target sends goes to [`Session::receive`]; completions and
//! target events come out of [`Session::poll_event`] with their token.
//! After a dropped connection, [`Session::into_unfinished`] hands back the
//! SCSI requests that never completed so a new session can re-issue them
//! (ERL 0 semantics).

use std::collections::{HashMap, VecDeque};

use tracing::{debug, trace, warn};

use super::cdb::Sense;
use super::login::LoginOutcome;
use super::{InitiatorError, Result};
use crate::params::Negotiated;
use crate::pdu::{
    async_msg, data_in, data_out, flags, logout, nop, opcode, r2t, reject, scsi_cmd, scsi_rsp,
    sn_lt, task_mgmt, text, Bhs, Pdu, RESERVED_TAG,
};

/// An Initiator Task Tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Itt(pub u32);

/// A SCSI command to run.
#[derive(Clone, Debug, Default)]
pub struct ScsiRequest {
    pub lun: u64,
    /// The CDB (at most 16 bytes).
    pub cdb: Vec<u8>,
    /// Data to write (empty for none).
    pub data_out: Vec<u8>,
    /// Bytes of Data-In expected (0 for none).
    pub in_len: u32,
}

/// The end of a SCSI command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiResult {
    /// SCSI status (see [`super::cdb::status`]).
    pub status: u8,
    pub sense: Sense,
    /// The Data-In received, cut at what the target transferred.
    pub data: Vec<u8>,
    /// Residual count: positive for underflow, negative for overflow.
    pub residual: i64,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A SCSI command completed at the target (any status).
    Scsi(ScsiResult),
    /// A task management function's response code.
    TaskMgmt(u8),
    /// A text exchange's (reassembled) key=value data.
    Text(Vec<u8>),
    /// The NOP-In answering our ping.
    Nop,
    /// The logout response code (0 = closed successfully).
    Logout(u8),
    /// Rejected, aborted by task management, or failed at the target.
    Failed(String),
}

/// What the session reports.
#[derive(Debug)]
pub enum Event<T> {
    /// A request ended.
    Complete { token: T, outcome: Outcome },
    /// A SCSI asynchronous event (sense data attached).
    ScsiAsync { lun: u64, sense: Sense },
    /// The target asks us to log out within `time2wait_s`.
    LogoutRequested { time2wait_s: u16 },
    /// The target will drop (or has dropped) the connection.
    DropConnection,
}

#[derive(Debug)]
enum Kind {
    Scsi {
        req: ScsiRequest,
        data_in: Vec<u8>,
        /// Highest byte received + 1.
        received: usize,
    },
    TaskMgmt {
        function: u8,
        lun: u64,
        ref_itt: u32,
    },
    Text {
        got: Vec<u8>,
    },
    Nop,
    Logout,
}

#[derive(Debug)]
struct Task<T> {
    token: T,
    kind: Kind,
    issued: bool,
}

/// The full feature phase of one session.
#[derive(Debug)]
pub struct Session<T> {
    params: Negotiated,
    cmd_sn: u32,
    exp_stat_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    next_itt: u32,
    tasks: HashMap<u32, Task<T>>,
    waiting: VecDeque<u32>,
    transmit: VecDeque<Pdu>,
    events: VecDeque<Event<T>>,
    logged_out: bool,
}

fn protocol(msg: String) -> InitiatorError {
    InitiatorError::Protocol(msg)
}

impl<T> Session<T> {
    /// The session that a login settled.
    pub fn new(login: &LoginOutcome) -> Self {
        Session {
            params: login.params.clone(),
            cmd_sn: login.cmd_sn,
            exp_stat_sn: login.exp_stat_sn,
            exp_cmd_sn: login.exp_cmd_sn,
            max_cmd_sn: login.max_cmd_sn,
            next_itt: 1,
            tasks: HashMap::new(),
            waiting: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            logged_out: false,
        }
    }

    /// The negotiated parameters.
    pub fn params(&self) -> &Negotiated {
        &self.params
    }

    /// Requests not yet completed (issued or waiting for the window).
    pub fn outstanding(&self) -> usize {
        self.tasks.len()
    }

    /// True once the logout response arrived.
    pub fn is_logged_out(&self) -> bool {
        self.logged_out
    }

    /// The next PDU to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Pdu> {
        self.transmit.pop_front()
    }

    /// The next completion or event, if any.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    fn window_open(&self) -> bool {
        !sn_lt(self.max_cmd_sn, self.cmd_sn)
    }

    /// Queues a SCSI command; it is sent at once if the window allows.
    pub fn submit_scsi(&mut self, req: ScsiRequest, token: T) -> Result<Itt> {
        if req.cdb.is_empty() || req.cdb.len() > scsi_cmd::CDB_LEN {
            return Err(InitiatorError::BadRequest(format!(
                "CDB of {} bytes (1 to 16 supported)",
                req.cdb.len()
            )));
        }
        if req.data_out.len() > u32::MAX as usize {
            return Err(InitiatorError::BadRequest("data too long".into()));
        }
        let itt = self.alloc_itt();
        let kind = Kind::Scsi {
            data_in: Vec::new(),
            received: 0,
            req,
        };
        self.tasks.insert(
            itt,
            Task {
                token,
                kind,
                issued: false,
            },
        );
        self.waiting.push_back(itt);
        self.issue_waiting();
        Ok(Itt(itt))
    }

    /// Sends the queued commands the window allows.
    fn issue_waiting(&mut self) {
        while self.window_open() {
            let Some(itt) = self.waiting.pop_front() else {
                return;
            };
            let cmd_sn = self.cmd_sn;
            self.cmd_sn = self.cmd_sn.wrapping_add(1);
            self.issue_scsi(itt, cmd_sn);
        }
    }

    fn issue_scsi(&mut self, itt: u32, cmd_sn: u32) {
        let exp_stat_sn = self.exp_stat_sn;
        let p = self.params.clone();
        let task = self.tasks.get_mut(&itt).expect("waiting task exists");
        task.issued = true;
        let Kind::Scsi { req, .. } = &task.kind else {
            unreachable!("only SCSI commands wait for the window")
        };
        let write_len = req.data_out.len();
        let mut bhs = Bhs::new(opcode::SCSI_CMD);
        let mut f = 1u8; // SIMPLE task attribute
        if req.in_len > 0 {
            f |= flags::READ;
        }
        if write_len > 0 {
            f |= flags::WRITE;
        }
        bhs.set_lun(req.lun);
        bhs.set_itt(itt);
        let edtl = if write_len > 0 {
            write_len as u32
        } else {
            req.in_len
        };
        bhs.set_u32_at(scsi_cmd::EDTL, edtl);
        bhs.set_u32_at(scsi_cmd::CMD_SN, cmd_sn);
        bhs.set_u32_at(scsi_cmd::EXP_STAT_SN, exp_stat_sn);
        bhs.0[scsi_cmd::CDB..scsi_cmd::CDB + req.cdb.len()].copy_from_slice(&req.cdb);
        let first_burst = (p.first_burst() as usize).min(write_len);
        let xmit = p.max_xmit_data_segment_length as usize;
        let immediate = if p.immediate_data {
            first_burst.min(xmit)
        } else {
            0
        };
        let unsolicited_end = if p.initial_r2t {
            immediate
        } else {
            first_burst
        };
        if unsolicited_end <= immediate {
            f |= flags::FINAL;
        }
        bhs.set_flags(f);
        let mut pdu = Pdu::new(bhs);
        pdu.data = req.data_out[..immediate].to_vec();
        let lun = req.lun;
        let data_pdus = data_out_pdus(
            &req.data_out,
            immediate,
            unsolicited_end,
            xmit,
            (itt, RESERVED_TAG, lun, exp_stat_sn),
        );
        trace!(
            itt,
            cmd_sn,
            edtl,
            immediate,
            unsolicited_end,
            "SCSI command"
        );
        self.transmit.push_back(pdu);
        self.transmit.extend(data_pdus);
    }

    fn submit_immediate(&mut self, kind: Kind, token: T) -> u32 {
        let itt = self.alloc_itt();
        self.tasks.insert(
            itt,
            Task {
                token,
                kind,
                issued: true,
            },
        );
        itt
    }

    /// Sends a task management request (immediate). `ref_itt` names the
    /// task for ABORT TASK.
    pub fn submit_task_mgmt(
        &mut self,
        function: u8,
        lun: u64,
        ref_itt: Option<Itt>,
        token: T,
    ) -> Itt {
        let ref_itt = ref_itt.map_or(RESERVED_TAG, |i| i.0);
        let itt = self.submit_immediate(
            Kind::TaskMgmt {
                function,
                lun,
                ref_itt,
            },
            token,
        );
        let mut bhs = Bhs::new(opcode::TASK_MGMT_REQ);
        bhs.set_immediate(true);
        bhs.set_u8_at(task_mgmt::FUNCTION, 0x80 | function);
        bhs.set_lun(lun);
        bhs.set_itt(itt);
        bhs.set_u32_at(task_mgmt::RTT, ref_itt);
        bhs.set_u32_at(task_mgmt::CMD_SN, self.cmd_sn);
        bhs.set_u32_at(task_mgmt::EXP_STAT_SN, self.exp_stat_sn);
        // RefCmdSN: the CmdSN of the referenced task is not tracked; the
        // target matches on RTT (RFC 7143 11.5.4 allows ExpCmdSN-based checks).
        bhs.set_u32_at(task_mgmt::REF_CMD_SN, self.cmd_sn);
        self.transmit.push_back(Pdu::new(bhs));
        Itt(itt)
    }

    /// Sends a Text Request (immediate) with these key=value pairs
    /// (e.g. `SendTargets=All` in a discovery session).
    pub fn submit_text(&mut self, pairs: Vec<u8>, token: T) -> Itt {
        let itt = self.submit_immediate(Kind::Text { got: Vec::new() }, token);
        self.send_text(itt, RESERVED_TAG, pairs);
        Itt(itt)
    }

    fn send_text(&mut self, itt: u32, ttt: u32, data: Vec<u8>) {
        let mut bhs = Bhs::new(opcode::TEXT_REQ);
        bhs.set_immediate(true);
        bhs.set_flags(flags::FINAL);
        bhs.set_itt(itt);
        bhs.set_u32_at(text::TTT, ttt);
        bhs.set_u32_at(text::CMD_SN, self.cmd_sn);
        bhs.set_u32_at(text::EXP_STAT_SN, self.exp_stat_sn);
        let mut pdu = Pdu::new(bhs);
        pdu.data = data;
        self.transmit.push_back(pdu);
    }

    /// Sends a NOP-Out ping that the target must answer.
    pub fn submit_nop(&mut self, token: T) -> Itt {
        let itt = self.submit_immediate(Kind::Nop, token);
        let mut bhs = Bhs::new(opcode::NOP_OUT);
        bhs.set_immediate(true);
        bhs.set_flags(flags::FINAL);
        bhs.set_itt(itt);
        bhs.set_u32_at(nop::TTT, RESERVED_TAG);
        bhs.set_u32_at(nop::CMD_SN, self.cmd_sn);
        bhs.set_u32_at(nop::EXP_STAT_SN, self.exp_stat_sn);
        self.transmit.push_back(Pdu::new(bhs));
        Itt(itt)
    }

    /// Sends a Logout Request closing the session (immediate).
    pub fn submit_logout(&mut self, token: T) -> Itt {
        let itt = self.submit_immediate(Kind::Logout, token);
        let mut bhs = Bhs::new(opcode::LOGOUT_REQ);
        bhs.set_immediate(true);
        bhs.set_flags(flags::FINAL | logout::CLOSE_SESSION);
        bhs.set_itt(itt);
        bhs.set_u32_at(logout::CMD_SN, self.cmd_sn);
        bhs.set_u32_at(logout::EXP_STAT_SN, self.exp_stat_sn);
        self.transmit.push_back(Pdu::new(bhs));
        Itt(itt)
    }

    /// Records the target's StatSN (status-bearing PDUs only).
    fn note_stat_sn(&mut self, stat_sn: u32) {
        let next = stat_sn.wrapping_add(1);
        if sn_lt(self.exp_stat_sn, next) {
            self.exp_stat_sn = next;
        }
    }

    /// Records ExpCmdSN / MaxCmdSN (RFC 7143 4.2.2.1: ignored unless
    /// MaxCmdSN >= ExpCmdSN - 1), then issues what the window now allows.
    fn note_window(&mut self, exp: u32, max: u32) {
        if sn_lt(max, exp.wrapping_sub(1)) {
            return;
        }
        if sn_lt(self.max_cmd_sn, max) {
            self.max_cmd_sn = max;
        }
        if sn_lt(self.exp_cmd_sn, exp) {
            self.exp_cmd_sn = exp;
        }
        self.issue_waiting();
    }

    fn complete(&mut self, itt: u32, outcome: Outcome) {
        if let Some(task) = self.tasks.remove(&itt) {
            self.events.push_back(Event::Complete {
                token: task.token,
                outcome,
            });
        }
    }

    /// Feeds one PDU from the target.
    pub fn receive(&mut self, pdu: Pdu) -> Result<()> {
        let b = &pdu.bhs;
        let op = b.opcode();
        trace!(op, itt = b.itt(), len = pdu.data.len(), "received PDU");
        match op {
            opcode::DATA_IN => self.receive_data_in(pdu),
            opcode::SCSI_RSP => self.receive_scsi_rsp(pdu),
            opcode::R2T => self.receive_r2t(&pdu),
            opcode::NOP_IN => self.receive_nop_in(pdu),
            opcode::TASK_MGMT_RSP => self.receive_task_mgmt_rsp(&pdu),
            opcode::TEXT_RSP => self.receive_text_rsp(pdu),
            opcode::LOGOUT_RSP => self.receive_logout_rsp(&pdu),
            opcode::ASYNC_MSG => self.receive_async(&pdu),
            opcode::REJECT => self.receive_reject(&pdu),
            other => Err(protocol(format!(
                "unexpected opcode {other:#04x} in full feature phase"
            ))),
        }
    }

    fn receive_data_in(&mut self, pdu: Pdu) -> Result<()> {
        let b = &pdu.bhs;
        let itt = b.itt();
        let fl = b.flags();
        self.note_window(b.u32_at(data_in::EXP_CMD_SN), b.u32_at(data_in::MAX_CMD_SN));
        let offset = b.u32_at(data_in::BUFFER_OFFSET) as usize;
        let Some(Task {
            kind:
                Kind::Scsi {
                    req,
                    data_in,
                    received,
                },
            ..
        }) = self.tasks.get_mut(&itt)
        else {
            warn!(itt, "Data-In for an unknown task, dropped");
            return Ok(());
        };
        let end = offset + pdu.data.len();
        if end > req.in_len as usize {
            let msg = format!("Data-In past the buffer: {end} > {}", req.in_len);
            self.complete(itt, Outcome::Failed(msg.clone()));
            return Err(protocol(msg));
        }
        if data_in.len() < end {
            data_in.resize(end, 0);
        }
        data_in[offset..end].copy_from_slice(&pdu.data);
        *received = (*received).max(end);
        if fl & flags::STATUS != 0 {
            self.note_stat_sn(b.u32_at(data_in::STAT_SN));
            let residual = residual(fl, b.u32_at(data_in::RESIDUAL));
            let status = b.u8_at(data_in::STATUS);
            self.finish_scsi(itt, status, Sense::default(), residual);
        }
        Ok(())
    }

    fn finish_scsi(&mut self, itt: u32, status: u8, sense: Sense, residual: i64) {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let Kind::Scsi {
            data_in,
            received,
            req,
        } = &mut task.kind
        else {
            return;
        };
        let mut data = std::mem::take(data_in);
        let mut len = *received;
        if residual > 0 {
            len = len.min((req.in_len as usize).saturating_sub(residual as usize));
        }
        data.truncate(len);
        self.complete(
            itt,
            Outcome::Scsi(ScsiResult {
                status,
                sense,
                data,
                residual,
            }),
        );
    }

    fn receive_scsi_rsp(&mut self, pdu: Pdu) -> Result<()> {
        let b = &pdu.bhs;
        let itt = b.itt();
        self.note_stat_sn(b.u32_at(scsi_rsp::STAT_SN));
        self.note_window(
            b.u32_at(scsi_rsp::EXP_CMD_SN),
            b.u32_at(scsi_rsp::MAX_CMD_SN),
        );
        if !matches!(
            self.tasks.get(&itt),
            Some(Task {
                kind: Kind::Scsi { .. },
                ..
            })
        ) {
            warn!(itt, "SCSI Response for an unknown task, dropped");
            return Ok(());
        }
        let response = b.u8_at(scsi_rsp::RESPONSE);
        if response != 0 {
            self.complete(
                itt,
                Outcome::Failed(format!("target failure (iSCSI response {response:#04x})")),
            );
            return Ok(());
        }
        let sense = if pdu.data.len() >= 2 {
            let n = u16::from_be_bytes([pdu.data[0], pdu.data[1]]) as usize;
            Sense::parse(&pdu.data[2..(2 + n).min(pdu.data.len())])
        } else {
            Sense::default()
        };
        let residual = residual(b.flags(), b.u32_at(scsi_rsp::RESIDUAL));
        self.finish_scsi(itt, b.u8_at(scsi_rsp::STATUS), sense, residual);
        Ok(())
    }

    fn receive_r2t(&mut self, pdu: &Pdu) -> Result<()> {
        let b = &pdu.bhs;
        let itt = b.itt();
        self.note_window(b.u32_at(r2t::EXP_CMD_SN), b.u32_at(r2t::MAX_CMD_SN));
        let offset = b.u32_at(r2t::BUFFER_OFFSET) as usize;
        let len = b.u32_at(r2t::DESIRED_LEN) as usize;
        let ttt = b.u32_at(r2t::TTT);
        let xmit = self.params.max_xmit_data_segment_length as usize;
        let exp_stat_sn = self.exp_stat_sn;
        let Some(Task {
            kind: Kind::Scsi { req, .. },
            ..
        }) = self.tasks.get(&itt)
        else {
            warn!(itt, "R2T for an unknown task, ignored");
            return Ok(());
        };
        let end = offset.checked_add(len).filter(|&e| e <= req.data_out.len());
        let Some(end) = end else {
            let msg = format!(
                "R2T for {len} bytes at {offset}, past {}",
                req.data_out.len()
            );
            self.complete(itt, Outcome::Failed(msg.clone()));
            return Err(protocol(msg));
        };
        debug!(itt, offset, len, "R2T");
        let pdus = data_out_pdus(
            &req.data_out,
            offset,
            end,
            xmit,
            (itt, ttt, req.lun, exp_stat_sn),
        );
        self.transmit.extend(pdus);
        Ok(())
    }

    fn receive_nop_in(&mut self, pdu: Pdu) -> Result<()> {
        let b = &pdu.bhs;
        self.note_window(b.u32_at(nop::EXP_CMD_SN), b.u32_at(nop::MAX_CMD_SN));
        let itt = b.itt();
        if itt != RESERVED_TAG {
            self.note_stat_sn(b.u32_at(nop::STAT_SN));
            self.complete(itt, Outcome::Nop);
            return Ok(());
        }
        let ttt = b.u32_at(nop::TTT);
        if ttt == RESERVED_TAG {
            return Ok(()); // an unsolicited NOP-In that wants no answer
        }
        let mut out = Bhs::new(opcode::NOP_OUT);
        out.set_immediate(true);
        out.set_flags(flags::FINAL);
        out.set_lun_raw(b.lun_raw());
        out.set_itt(RESERVED_TAG);
        out.set_u32_at(nop::TTT, ttt);
        out.set_u32_at(nop::CMD_SN, self.cmd_sn);
        out.set_u32_at(nop::EXP_STAT_SN, self.exp_stat_sn);
        let mut reply = Pdu::new(out);
        reply.data = pdu.data;
        self.transmit.push_back(reply);
        Ok(())
    }

    fn receive_task_mgmt_rsp(&mut self, pdu: &Pdu) -> Result<()> {
        let b = &pdu.bhs;
        self.note_stat_sn(b.u32_at(task_mgmt::STAT_SN));
        self.note_window(
            b.u32_at(task_mgmt::EXP_CMD_SN),
            b.u32_at(task_mgmt::MAX_CMD_SN),
        );
        let itt = b.itt();
        let response = b.u8_at(task_mgmt::RESPONSE);
        let Some(Task {
            kind:
                Kind::TaskMgmt {
                    function,
                    lun,
                    ref_itt,
                },
            ..
        }) = self.tasks.get(&itt)
        else {
            warn!(itt, "task management response for an unknown task");
            return Ok(());
        };
        let (function, lun, ref_itt) = (*function, *lun, *ref_itt);
        if response == task_mgmt::RSP_COMPLETE {
            self.abort_affected(function, lun, ref_itt);
        }
        self.complete(itt, Outcome::TaskMgmt(response));
        Ok(())
    }

    /// Ends the tasks a successful task management function aborted
    /// (the target sends no response for them, RFC 7143 4.2.3.3).
    fn abort_affected(&mut self, function: u8, lun: u64, ref_itt: u32) {
        let victims: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| match &t.kind {
                Kind::Scsi { req, .. } => match function {
                    task_mgmt::ABORT_TASK => false,
                    task_mgmt::ABORT_TASK_SET
                    | task_mgmt::CLEAR_TASK_SET
                    | task_mgmt::LOGICAL_UNIT_RESET => req.lun == lun && t.issued,
                    task_mgmt::TARGET_WARM_RESET | task_mgmt::TARGET_COLD_RESET => t.issued,
                    _ => false,
                },
                _ => false,
            })
            .map(|(&itt, _)| itt)
            .chain((function == task_mgmt::ABORT_TASK).then_some(ref_itt))
            .collect();
        for itt in victims {
            self.waiting.retain(|&w| w != itt);
            self.complete(itt, Outcome::Failed("aborted by task management".into()));
        }
    }

    fn receive_text_rsp(&mut self, pdu: Pdu) -> Result<()> {
        let b = &pdu.bhs;
        self.note_stat_sn(b.u32_at(text::STAT_SN));
        self.note_window(b.u32_at(text::EXP_CMD_SN), b.u32_at(text::MAX_CMD_SN));
        let itt = b.itt();
        let ttt = b.u32_at(text::TTT);
        let fl = b.flags();
        let Some(Task {
            kind: Kind::Text { got, .. },
            ..
        }) = self.tasks.get_mut(&itt)
        else {
            warn!(itt, "text response for an unknown task");
            return Ok(());
        };
        if got.len() + pdu.data.len() > 1 << 20 {
            self.complete(itt, Outcome::Failed("text response over 1 MiB".into()));
            return Err(protocol("text response over 1 MiB".into()));
        }
        got.extend_from_slice(&pdu.data);
        if fl & flags::CONTINUE != 0 || fl & flags::FINAL == 0 {
            self.send_text(itt, ttt, Vec::new());
            return Ok(());
        }
        let got = std::mem::take(got);
        self.complete(itt, Outcome::Text(got));
        Ok(())
    }

    fn receive_logout_rsp(&mut self, pdu: &Pdu) -> Result<()> {
        let b = &pdu.bhs;
        self.note_stat_sn(b.u32_at(logout::STAT_SN));
        let response = b.u8_at(logout::RESPONSE);
        self.logged_out = true;
        self.complete(b.itt(), Outcome::Logout(response));
        Ok(())
    }

    fn receive_async(&mut self, pdu: &Pdu) -> Result<()> {
        let b = &pdu.bhs;
        self.note_stat_sn(b.u32_at(async_msg::STAT_SN));
        self.note_window(
            b.u32_at(async_msg::EXP_CMD_SN),
            b.u32_at(async_msg::MAX_CMD_SN),
        );
        let event = match b.u8_at(async_msg::EVENT) {
            async_msg::EVENT_SCSI => {
                let sense = if pdu.data.len() >= 2 {
                    let n = u16::from_be_bytes([pdu.data[0], pdu.data[1]]) as usize;
                    Sense::parse(&pdu.data[2..(2 + n).min(pdu.data.len())])
                } else {
                    Sense::default()
                };
                Event::ScsiAsync {
                    lun: b.lun(),
                    sense,
                }
            }
            async_msg::EVENT_LOGOUT_REQUEST => Event::LogoutRequested {
                time2wait_s: b.u16_at(async_msg::PARAM3),
            },
            async_msg::EVENT_DROP_CONNECTION | async_msg::EVENT_DROP_ALL_CONNECTIONS => {
                Event::DropConnection
            }
            other => {
                debug!(event = other, "async message ignored");
                return Ok(());
            }
        };
        self.events.push_back(event);
        Ok(())
    }

    fn receive_reject(&mut self, pdu: &Pdu) -> Result<()> {
        let b = &pdu.bhs;
        self.note_stat_sn(b.u32_at(reject::STAT_SN));
        self.note_window(b.u32_at(reject::EXP_CMD_SN), b.u32_at(reject::MAX_CMD_SN));
        let reason = b.u8_at(reject::REASON);
        if pdu.data.len() < 48 {
            return Err(protocol(format!(
                "Reject (reason {reason:#04x}) without the header"
            )));
        }
        let rejected = u32::from_be_bytes(pdu.data[16..20].try_into().unwrap());
        warn!(reason, itt = rejected, "target rejected a PDU");
        if reason == reject::DATA_DIGEST_ERROR {
            // ERL 0: the command will fail; the target ends it with a response.
            return Ok(());
        }
        self.waiting.retain(|&w| w != rejected);
        self.complete(
            rejected,
            Outcome::Failed(format!("rejected, reason {reason:#04x}")),
        );
        Ok(())
    }

    /// Ends the session: every unfinished SCSI request (to re-issue on a new
    /// session) and the tokens of the other requests (to fail).
    pub fn into_unfinished(self) -> (Vec<(ScsiRequest, T)>, Vec<T>) {
        let mut order: Vec<(u32, Task<T>)> = self.tasks.into_iter().collect();
        // Re-issue in submission order (ITTs increase, modulo wrap-around).
        order.sort_by(|a, b| {
            if sn_lt(a.0, b.0) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        let mut scsi = Vec::new();
        let mut other = Vec::new();
        for (_, task) in order {
            match task.kind {
                Kind::Scsi { req, .. } => scsi.push((req, task.token)),
                _ => other.push(task.token),
            }
        }
        (scsi, other)
    }
}

/// The residual of a SCSI Response or final Data-In: positive for
/// underflow (U), negative for overflow (O).
fn residual(fl: u8, count: u32) -> i64 {
    if fl & flags::UNDERFLOW != 0 {
        i64::from(count)
    } else if fl & flags::OVERFLOW != 0 {
        -i64::from(count)
    } else {
        0
    }
}

/// Data-Out PDUs for bytes `start..end` of `data`, each at most `xmit`
/// bytes, DataSN from 0, F on the last (one sequence, RFC 7143 11.7).
fn data_out_pdus(
    data: &[u8],
    start: usize,
    end: usize,
    xmit: usize,
    (itt, ttt, lun, exp_stat_sn): (u32, u32, u64, u32),
) -> Vec<Pdu> {
    let xmit = xmit.max(512);
    let mut pdus = Vec::new();
    let mut off = start;
    let mut data_sn = 0u32;
    while off < end {
        let n = (end - off).min(xmit);
        let mut bhs = Bhs::new(opcode::DATA_OUT);
        bhs.set_flags(if off + n == end { flags::FINAL } else { 0 });
        bhs.set_lun(lun);
        bhs.set_itt(itt);
        bhs.set_u32_at(data_out::TTT, ttt);
        bhs.set_u32_at(data_out::EXP_STAT_SN, exp_stat_sn);
        bhs.set_u32_at(data_out::DATA_SN, data_sn);
        bhs.set_u32_at(data_out::BUFFER_OFFSET, off as u32);
        let mut pdu = Pdu::new(bhs);
        pdu.data = data[off..off + n].to_vec();
        pdus.push(pdu);
        off += n;
        data_sn += 1;
    }
    pdus
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
