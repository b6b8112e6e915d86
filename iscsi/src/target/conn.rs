//! One iSCSI connection on the target side, sans-IO: PDUs and completions
//! in, PDUs and actions out. The login phase lives in [`super::login`],
//! the SCSI data flow in [`super::task`]; this file holds the connection
//! state, the dispatch by phase and opcode, CmdSN ordering and the small
//! request types (NOP, Text, Logout, SNACK, Reject).
//!
//! The driver feeds [`Connection::receive`] with every PDU read (or a read
//! error), [`Connection::complete`] with every finished SCSI command, and
//! sends what [`Connection::take_outputs`] returns, in order.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::params::Negotiated;
use crate::pdu::{self, flags, opcode, Bhs, Digests, Pdu, PduError, RESERVED_TAG};
use crate::scsi::{NexusId, ScsiResponse, ScsiTarget};

use super::login::LoginState;
use super::registry::{Registry, Target, Tsih};
use super::task::{ScsiTask, TaskState};

/// Commands the target accepts in flight per session (tgt's MaxQueueCmd).
pub const QUEUE_DEPTH: u32 = 128;

/// The portal group tag every portal of this target reports.
pub const PORTAL_GROUP_TAG: u16 = 1;

/// One PDU to send: the header and its data (kept apart so the driver can
/// write the data where it is, framed by [`pdu::frame`]).
#[derive(Clone, Debug)]
pub struct OutPdu {
    pub bhs: Bhs,
    pub data: Payload,
}

/// The data segment of an outgoing PDU.
#[derive(Clone, Debug)]
pub enum Payload {
    None,
    Owned(Vec<u8>),
    /// A slice of a shared buffer (Data-In of a large read).
    Shared(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl Payload {
    /// The bytes of the data segment.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::None => &[],
            Payload::Owned(v) => v,
            Payload::Shared(v, r) => &v[r.clone()],
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Output {
    /// Send a PDU.
    Send(OutPdu),
    /// Run a SCSI command (possibly on another thread) and hand the result
    /// to [`Connection::complete`].
    Execute(ScsiTask),
    /// From now on read and write with these digests and this data
    /// segment limit (sent after the final login response).
    SetLimits { digests: Digests, max_recv: usize },
    /// Close the connection once everything queued before is sent.
    Close,
    /// Send nothing queued after this for that long (a login being slowed
    /// down, see [`super::throttle`]).
    Delay(std::time::Duration),
}

/// The phase of a connection.
#[derive(Debug)]
pub(super) enum Phase {
    Login(Box<LoginState>),
    FullFeature(Box<Session>),
    Closed,
}

/// What a logged-in session is bound to.
#[derive(Debug)]
pub(super) enum SessionKind {
    Discovery,
    Normal { target: Arc<Target>, nexus: NexusId },
}

/// A logged-in session (one connection per session: MaxConnections=1).
#[derive(Debug)]
pub(super) struct Session {
    pub kind: SessionKind,
    pub tsih: Tsih,
    pub initiator_name: String,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// Non-immediate commands that arrived ahead of ExpCmdSN.
    pub early: BTreeMap<u32, Pdu>,
    /// Tasks by ITT: waiting for Data-Out or executing.
    pub tasks: HashMap<u32, TaskState>,
    pub next_ttt: u32,
}

/// The target side of one TCP connection.
pub struct Connection {
    pub(super) registry: Arc<Registry>,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) phase: Phase,
    pub(super) params: Negotiated,
    pub(super) stat_sn: u32,
    pub(super) out: Vec<Output>,
    /// Closes this connection from elsewhere (session reinstatement).
    pub(super) killer: Arc<dyn Fn() + Send + Sync>,
}

impl Connection {
    /// A new connection accepted from `peer` on the portal address `local`.
    /// `killer` closes the socket from another thread (used when a new
    /// login reinstates this connection's session).
    pub fn new(
        registry: Arc<Registry>,
        peer: SocketAddr,
        local: SocketAddr,
        killer: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Connection {
            registry,
            peer,
            local,
            phase: Phase::Login(Box::default()),
            params: Negotiated::default(),
            stat_sn: 0,
            out: Vec::new(),
            killer,
        }
    }

    /// The limits to read the next PDU with.
    pub fn read_limits(&self) -> (Digests, usize) {
        let digests = match self.phase {
            Phase::FullFeature(_) => Digests {
                header: self.params.header_digest,
                data: self.params.data_digest,
            },
            _ => Digests::default(),
        };
        (digests, self.params.max_recv_data_segment_length as usize)
    }

    /// True once the connection is over (the driver closes the socket).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The TSIH of the session once logged in.
    pub fn tsih(&self) -> Option<Tsih> {
        match &self.phase {
            Phase::FullFeature(s) => Some(s.tsih),
            _ => None,
        }
    }

    /// Everything to do since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Feeds the result of reading one PDU.
    pub fn receive(&mut self, read: Result<Pdu, PduError>) {
        if self.is_closed() {
            return;
        }
        match read {
            Ok(pdu) => self.receive_pdu(pdu),
            Err(PduError::DataDigest { bhs, .. }) => self.receive_data_digest_error(*bhs),
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "connection read failed");
                self.close();
            }
        }
    }

    fn receive_pdu(&mut self, pdu: Pdu) {
        let _span =
            tracing::trace_span!("pdu", op = pdu.bhs.opcode(), itt = pdu.bhs.itt()).entered();
        match self.phase {
            Phase::Login(_) => self.receive_login_phase(pdu),
            Phase::FullFeature(_) => self.receive_full_feature(pdu),
            Phase::Closed => {}
        }
    }

    /// A data digest error: Reject the PDU with reason 0x02 and drop its
    /// data (RFC 7143 7.8); during login it ends the connection.
    fn receive_data_digest_error(&mut self, bhs: Bhs) {
        if !matches!(self.phase, Phase::FullFeature(_)) {
            self.close();
            return;
        }
        tracing::warn!(peer = %self.peer, ?bhs, "data digest error");
        self.send_reject(&bhs, pdu::reject::DATA_DIGEST_ERROR);
    }

    /// Ends the connection: forgets the session and asks the driver to close.
    pub fn close(&mut self) {
        if let Phase::FullFeature(s) = std::mem::replace(&mut self.phase, Phase::Closed) {
            self.end_session(&s);
        }
        self.phase = Phase::Closed;
        self.out.push(Output::Close);
    }

    fn end_session(&self, s: &Session) {
        if let SessionKind::Normal { target, nexus } = &s.kind {
            target.scsi.nexus_logout(*nexus);
        }
        self.registry.remove_session(s.tsih);
        tracing::info!(peer = %self.peer, tsih = s.tsih.0, initiator = %s.initiator_name, "session closed");
    }

    /// Queues a PDU to send.
    pub(super) fn send(&mut self, bhs: Bhs, data: Payload) {
        self.out.push(Output::Send(OutPdu { bhs, data }));
    }

    /// Fills StatSN/ExpCmdSN/MaxCmdSN of a status-bearing response and
    /// advances StatSN.
    pub(super) fn stamp_status(&mut self, bhs: &mut Bhs) {
        bhs.set_u32_at(24, self.stat_sn);
        self.stat_sn = self.stat_sn.wrapping_add(1);
        self.stamp_window(bhs);
    }

    /// Fills ExpCmdSN/MaxCmdSN (offsets 28 and 32 in every target PDU).
    pub(super) fn stamp_window(&mut self, bhs: &mut Bhs) {
        let (exp, max) = match &mut self.phase {
            Phase::FullFeature(s) => {
                let busy = (s.tasks.len() as u32).min(QUEUE_DEPTH);
                let candidate = s
                    .exp_cmd_sn
                    .wrapping_add(QUEUE_DEPTH - busy)
                    .wrapping_sub(1);
                if pdu::sn_lt(s.max_cmd_sn, candidate) {
                    s.max_cmd_sn = candidate;
                }
                (s.exp_cmd_sn, s.max_cmd_sn)
            }
            Phase::Login(l) => (l.cmd_sn, l.cmd_sn.wrapping_add(QUEUE_DEPTH - 1)),
            Phase::Closed => (0, 0),
        };
        bhs.set_u32_at(28, exp);
        bhs.set_u32_at(32, max);
    }

    /// Sends a Reject carrying the offending header (RFC 7143 11.17).
    pub(super) fn send_reject(&mut self, offending: &Bhs, reason: u8) {
        let mut bhs = Bhs::new(opcode::REJECT);
        bhs.set_flags(flags::FINAL);
        bhs.set_u8_at(pdu::reject::REASON, reason);
        bhs.set_itt(RESERVED_TAG);
        self.stamp_status(&mut bhs);
        self.send(bhs, Payload::Owned(offending.0.to_vec()));
    }

    pub(super) fn session(&mut self) -> &mut Session {
        match &mut self.phase {
            Phase::FullFeature(s) => s,
            _ => unreachable!("full feature handler outside full feature phase"),
        }
    }

    /// The SCSI target of a normal session.
    pub(super) fn scsi(&mut self) -> Option<(Arc<ScsiTarget>, NexusId)> {
        match &self.session().kind {
            SessionKind::Normal { target, nexus } => Some((target.scsi.clone(), *nexus)),
            SessionKind::Discovery => None,
        }
    }

    fn receive_full_feature(&mut self, pdu: Pdu) {
        let op = pdu.bhs.opcode();
        match op {
            opcode::DATA_OUT => return self.receive_data_out(pdu),
            opcode::SNACK_REQ => return self.send_reject(&pdu.bhs, pdu::reject::SNACK_REJECT),
            opcode::NOP_OUT
            | opcode::SCSI_CMD
            | opcode::TASK_MGMT_REQ
            | opcode::TEXT_REQ
            | opcode::LOGOUT_REQ => {}
            opcode::LOGIN_REQ => {
                self.send_reject(&pdu.bhs, pdu::reject::PROTOCOL_ERROR);
                return self.close();
            }
            _ => return self.send_reject(&pdu.bhs, pdu::reject::COMMAND_NOT_SUPPORTED),
        }
        if pdu.bhs.immediate() {
            return self.do_command(pdu);
        }
        self.order_command(pdu);
    }

    /// CmdSN ordering (RFC 7143 4.2.2.1): run the command that is next,
    /// keep early ones in the window, drop those outside.
    fn order_command(&mut self, pdu: Pdu) {
        let cmd_sn = pdu.bhs.u32_at(24);
        let s = self.session();
        let (exp, max) = (s.exp_cmd_sn, s.max_cmd_sn);
        if cmd_sn == exp {
            s.exp_cmd_sn = exp.wrapping_add(1);
            self.do_command(pdu);
            self.run_early_commands();
        } else if pdu::sn_lt(exp, cmd_sn) && !pdu::sn_lt(max, cmd_sn) {
            tracing::debug!(cmd_sn, exp, "command ahead of ExpCmdSN held");
            s.early.insert(cmd_sn, pdu);
        } else {
            tracing::debug!(cmd_sn, exp, max, "command outside the CmdSN window dropped");
        }
    }

    /// Runs the held commands that are now next in CmdSN order.
    pub(super) fn run_early_commands(&mut self) {
        loop {
            let Phase::FullFeature(s) = &mut self.phase else {
                return;
            };
            let Some(pdu) = s.early.remove(&s.exp_cmd_sn) else {
                return;
            };
            s.exp_cmd_sn = s.exp_cmd_sn.wrapping_add(1);
            self.do_command(pdu);
        }
    }

    fn do_command(&mut self, pdu: Pdu) {
        if !matches!(self.phase, Phase::FullFeature(_)) {
            return;
        }
        let discovery = matches!(self.session().kind, SessionKind::Discovery);
        match pdu.bhs.opcode() {
            opcode::NOP_OUT => self.do_nop_out(pdu),
            opcode::TEXT_REQ => self.do_text(pdu),
            opcode::LOGOUT_REQ => self.do_logout(pdu),
            _ if discovery => self.send_reject(&pdu.bhs, pdu::reject::PROTOCOL_ERROR),
            opcode::SCSI_CMD => self.do_scsi_command(pdu),
            opcode::TASK_MGMT_REQ => self.do_task_mgmt(pdu),
            _ => self.send_reject(&pdu.bhs, pdu::reject::COMMAND_NOT_SUPPORTED),
        }
    }

    /// NOP-Out: a ping (ITT set) is answered with a NOP-In echoing its data.
    fn do_nop_out(&mut self, pdu: Pdu) {
        if pdu.bhs.itt() == RESERVED_TAG {
            return;
        }
        let mut bhs = Bhs::new(opcode::NOP_IN);
        bhs.set_flags(flags::FINAL);
        bhs.set_lun_raw(pdu.bhs.lun_raw());
        bhs.set_itt(pdu.bhs.itt());
        bhs.set_u32_at(pdu::nop::TTT, RESERVED_TAG);
        self.stamp_status(&mut bhs);
        self.send(bhs, Payload::Owned(pdu.data));
    }

    /// Text Request in full feature phase: SendTargets; anything else is
    /// answered NotUnderstood (no renegotiation after login).
    fn do_text(&mut self, pdu: Pdu) {
        let mut answer = Vec::new();
        match pdu::keys::parse(&pdu.data) {
            Ok(pairs) => {
                for (k, v) in pairs {
                    if k == "SendTargets" {
                        answer.extend(self.send_targets(&v));
                    } else {
                        answer.push((k, "NotUnderstood".to_string()));
                    }
                }
            }
            Err(_) => return self.send_reject(&pdu.bhs, pdu::reject::PROTOCOL_ERROR),
        }
        let mut bhs = Bhs::new(opcode::TEXT_RSP);
        bhs.set_flags(flags::FINAL);
        bhs.set_itt(pdu.bhs.itt());
        bhs.set_u32_at(pdu::text::TTT, RESERVED_TAG);
        self.stamp_status(&mut bhs);
        let data = pdu::keys::encode(answer.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let max = self.params.max_xmit_data_segment_length as usize;
        let data = truncate_keys(data, max);
        self.send(bhs, Payload::Owned(data));
    }

    /// The SendTargets answer (RFC 7143 Appendix C): every target this
    /// initiator may see, each with this portal's address.
    pub(super) fn send_targets(&mut self, which: &str) -> Vec<(String, String)> {
        let initiator = match &self.phase {
            Phase::FullFeature(s) => s.initiator_name.clone(),
            _ => return Vec::new(),
        };
        let current = match &self.session().kind {
            SessionKind::Normal { target, .. } => Some(target.name.clone()),
            SessionKind::Discovery => None,
        };
        let address = match self.local {
            SocketAddr::V4(a) => format!("{}:{},{}", a.ip(), a.port(), PORTAL_GROUP_TAG),
            SocketAddr::V6(a) => format!("[{}]:{},{}", a.ip(), a.port(), PORTAL_GROUP_TAG),
        };
        let mut out = Vec::new();
        for t in self.registry.targets() {
            let wanted = match which {
                "All" => current.is_none(),
                "" => current
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(&t.name)),
                name => name.eq_ignore_ascii_case(&t.name),
            };
            if wanted && t.access.read().allows(self.peer.ip(), &initiator) {
                out.push(("TargetName".to_string(), t.name.clone()));
                out.push(("TargetAddress".to_string(), address.clone()));
            }
        }
        out
    }

    /// Logout (RFC 7143 11.14): close the session or this connection (the
    /// same thing with one connection); recovery removal is unsupported.
    fn do_logout(&mut self, pdu: Pdu) {
        let reason = pdu.bhs.flags() & 0x7f;
        let mut bhs = Bhs::new(opcode::LOGOUT_RSP);
        bhs.set_flags(flags::FINAL);
        bhs.set_itt(pdu.bhs.itt());
        let response = match reason {
            pdu::logout::CLOSE_SESSION | pdu::logout::CLOSE_CONNECTION => 0,
            _ => 2,
        };
        bhs.set_u8_at(pdu::logout::RESPONSE, response);
        self.stamp_status(&mut bhs);
        self.send(bhs, Payload::None);
        if response == 0 {
            self.session().tasks.clear();
            self.close();
        }
    }

    /// Hands a finished SCSI command back; queues its Data-In and status.
    pub fn complete(&mut self, itt: u32, response: ScsiResponse) {
        if !matches!(self.phase, Phase::FullFeature(_)) {
            return;
        }
        let Some(state) = self.session().tasks.remove(&itt) else {
            return;
        };
        match state {
            TaskState::Executing(done) if !done.aborted => self.send_scsi_result(done, response),
            _ => tracing::debug!(itt, "result of an aborted task dropped"),
        }
    }
}

/// Cuts a key=value text at the last whole pair that fits `max` bytes.
fn truncate_keys(mut data: Vec<u8>, max: usize) -> Vec<u8> {
    if data.len() <= max {
        return data;
    }
    let cut = data[..max]
        .iter()
        .rposition(|&b| b == 0)
        .map_or(0, |p| p + 1);
    data.truncate(cut);
    data
}
