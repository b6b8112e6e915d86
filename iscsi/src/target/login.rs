//! The login phase on the target side (RFC 7143 6.3 and 12): the security
//! stage (AuthMethod None or CHAP, one-way or mutual), the operational
//! stage (keys settled with [`crate::params`]), session creation with a
//! fresh TSIH, and reinstatement of an older session of the same ISID.

use std::sync::Arc;

use rand::RngCore;

use crate::chap;
use crate::params::{self, Answer};
use crate::pdu::{self, flags, login, opcode, Bhs, Digests, Pdu};

use super::conn::{
    Connection, Output, Payload, Phase, Session, SessionKind, PORTAL_GROUP_TAG, QUEUE_DEPTH,
};
use super::registry::{SessionEntry, Target, Tsih};

/// Login status class and detail (RFC 7143 11.13.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginStatus(pub u8, pub u8);

impl LoginStatus {
    pub const SUCCESS: Self = LoginStatus(0, 0);
    pub const INITIATOR_ERROR: Self = LoginStatus(2, 0);
    pub const AUTH_FAILED: Self = LoginStatus(2, 1);
    pub const FORBIDDEN: Self = LoginStatus(2, 2);
    pub const NOT_FOUND: Self = LoginStatus(2, 3);
    pub const UNSUPPORTED_VERSION: Self = LoginStatus(2, 5);
    pub const TOO_MANY_CONNECTIONS: Self = LoginStatus(2, 6);
    pub const MISSING_PARAMETER: Self = LoginStatus(2, 7);
    pub const NO_SESSION: Self = LoginStatus(2, 0x0a);
    pub const INVALID_DURING_LOGIN: Self = LoginStatus(2, 0x0b);
    pub const TARGET_ERROR: Self = LoginStatus(3, 0);
}

/// Where CHAP stands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Auth {
    /// Nothing negotiated yet.
    #[default]
    Start,
    /// AuthMethod=CHAP agreed; waiting for CHAP_A.
    ChapChosen,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    Challenged { id: u8, challenge: Vec<u8> },
    /// Authenticated (or no authentication needed).
    Done,
}

/// The state of a connection still logging in.
#[derive(Debug, Default)]
pub struct LoginState {
    started: bool,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    itt: u32,
    pub(super) cmd_sn: u32,
    initiator_name: Option<String>,
    initiator_alias: Option<String>,
    target_name: Option<String>,
    discovery: bool,
    target: Option<Arc<Target>>,
    auth: Auth,
    /// Text of a request continued with the C bit.
    pending: Vec<u8>,
    declared_tpgt: bool,
    declared_mrdsl: bool,
    security_done: bool,
}

type Keys = Vec<(String, String)>;

impl Connection {
    pub(super) fn receive_login_phase(&mut self, pdu: Pdu) {
        if pdu.bhs.opcode() != opcode::LOGIN_REQ {
            tracing::warn!(peer = %self.peer, op = pdu.bhs.opcode(), "PDU before login completed");
            self.send_reject(&pdu.bhs, pdu::reject::PROTOCOL_ERROR);
            return self.close();
        }
        match self.login_step(&pdu) {
            Ok(()) => {}
            Err(status) => self.refuse_login(&pdu.bhs, status),
        }
    }

    fn login(&mut self) -> &mut LoginState {
        match &mut self.phase {
            Phase::Login(l) => l,
            _ => unreachable!("login handler outside login phase"),
        }
    }

    fn login_step(&mut self, pdu: &Pdu) -> Result<(), LoginStatus> {
        let bhs = &pdu.bhs;
        self.begin_login(bhs)?;
        let csg = bhs.login_csg();
        let transit = bhs.flags() & flags::TRANSIT != 0;
        let l = self.login();
        l.pending.extend_from_slice(&pdu.data);
        if l.pending.len() > 64 * 1024 {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        if bhs.flags() & flags::CONTINUE != 0 {
            // More text follows: acknowledge with an empty response.
            return self.send_login_rsp(bhs, false, csg, csg, Vec::new());
        }
        let text = std::mem::take(&mut l.pending);
        let keys = pdu::keys::parse(&text).map_err(|_| LoginStatus::INITIATOR_ERROR)?;
        let mut answer = Keys::new();
        self.login_declarations(&keys)?;
        self.check_target(&mut answer)?;
        match csg {
            login::STAGE_SECURITY => self.security_keys(&keys, &mut answer)?,
            login::STAGE_OPERATIONAL => {
                if !self.login().security_done && self.auth_required() {
                    return Err(LoginStatus::AUTH_FAILED);
                }
                self.operational_keys(&keys, &mut answer)?
            }
            _ => return Err(LoginStatus::INITIATOR_ERROR),
        }
        let nsg = bhs.login_nsg();
        let may_transit = transit && self.may_leave_stage(csg, nsg)?;
        if may_transit && csg == login::STAGE_SECURITY {
            self.login().security_done = true;
        }
        let data = pdu::keys::encode(answer.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if may_transit && nsg == login::STAGE_FULL_FEATURE {
            return self.finish_login(bhs, csg, data);
        }
        let next = if may_transit { nsg } else { csg };
        self.send_login_rsp(bhs, may_transit, csg, next, data)
    }

    /// First PDU: remember the session identity; check the version.
    fn begin_login(&mut self, bhs: &Bhs) -> Result<(), LoginStatus> {
        let first = !self.login().started;
        if first {
            if bhs.u8_at(login::VERSION_MIN) > 0 {
                return Err(LoginStatus::UNSUPPORTED_VERSION);
            }
            self.stat_sn = bhs.u32_at(login::EXP_STAT_SN);
            let l = self.login();
            l.started = true;
            l.isid
                .copy_from_slice(&bhs.0[login::ISID..login::ISID + login::ISID_LEN]);
            l.tsih = bhs.u16_at(login::TSIH);
            l.cid = bhs.u16_at(login::CID);
            l.cmd_sn = bhs.u32_at(login::CMD_SN);
        }
        let l = self.login();
        l.itt = bhs.itt();
        Ok(())
    }

    fn login_declarations(&mut self, keys: &Keys) -> Result<(), LoginStatus> {
        let l = self.login();
        for (k, v) in keys {
            match k.as_str() {
                "InitiatorName" => l.initiator_name = Some(v.clone()),
                "InitiatorAlias" => l.initiator_alias = Some(v.clone()),
                "TargetName" => l.target_name = Some(v.clone()),
                "SessionType" => match v.as_str() {
                    "Discovery" => l.discovery = true,
                    "Normal" => l.discovery = false,
                    _ => return Err(LoginStatus(2, 9)),
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// Finds the target named in the login and checks the ACLs.
    fn check_target(&mut self, answer: &mut Keys) -> Result<(), LoginStatus> {
        let peer = self.peer.ip();
        let registry = self.registry.clone();
        let l = self.login();
        let name = l
            .initiator_name
            .clone()
            .ok_or(LoginStatus::MISSING_PARAMETER)?;
        if l.discovery || l.target.is_some() {
            return Ok(());
        }
        let wanted = l
            .target_name
            .clone()
            .ok_or(LoginStatus::MISSING_PARAMETER)?;
        let target = registry
            .target_by_name(&wanted)
            .ok_or(LoginStatus::NOT_FOUND)?;
        if !target.access.read().allows(peer, &name) {
            tracing::warn!(%peer, initiator = %name, target = %target.name, "login refused by ACL");
            return Err(LoginStatus::FORBIDDEN);
        }
        let l = self.login();
        l.target = Some(target);
        if !l.declared_tpgt {
            l.declared_tpgt = true;
            answer.push(("TargetPortalGroupTag".into(), PORTAL_GROUP_TAG.to_string()));
        }
        Ok(())
    }

    fn auth_required(&mut self) -> bool {
        let l = self.login();
        match &l.target {
            Some(t) if !l.discovery => !t.access.read().incoming_users.is_empty(),
            _ => false,
        }
    }

    /// Security stage keys: AuthMethod and the CHAP exchange.
    fn security_keys(&mut self, keys: &Keys, answer: &mut Keys) -> Result<(), LoginStatus> {
        let required = self.auth_required();
        let mut chap_n = None;
        let mut chap_r = None;
        let mut chap_i = None;
        let mut chap_c = None;
        for (k, v) in keys {
            match k.as_str() {
                "AuthMethod" => {
                    let ours = if required { "CHAP" } else { "None" };
                    let chosen = v.split(',').find(|m| *m == ours);
                    match chosen {
                        Some(m) => {
                            answer.push((k.clone(), m.to_string()));
                            self.login().auth = if required {
                                Auth::ChapChosen
                            } else {
                                Auth::Done
                            };
                        }
                        None if required => return Err(LoginStatus::AUTH_FAILED),
                        None => answer.push((k.clone(), "Reject".into())),
                    }
                }
                "CHAP_A" => self.chap_challenge(v, answer)?,
                "CHAP_N" => chap_n = Some(v.clone()),
                "CHAP_R" => chap_r = Some(v.clone()),
                "CHAP_I" => chap_i = Some(v.clone()),
                "CHAP_C" => chap_c = Some(v.clone()),
                "InitiatorName" | "InitiatorAlias" | "SessionType" | "TargetName" => {}
                _ => self.negotiate_key(k, v, answer)?,
            }
        }
        if let (Some(n), Some(r)) = (chap_n, chap_r) {
            self.chap_verify(&n, &r)?;
            if let (Some(i), Some(c)) = (chap_i, chap_c) {
                self.chap_mutual(&i, &c, answer)?;
            }
            self.login().auth = Auth::Done;
        }
        Ok(())
    }

    fn chap_challenge(&mut self, offered: &str, answer: &mut Keys) -> Result<(), LoginStatus> {
        if self.login().auth != Auth::ChapChosen {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        if !offered.split(',').any(|a| a == chap::CHAP_A_MD5) {
            answer.push(("CHAP_A".into(), "Reject".into()));
            return Err(LoginStatus::AUTH_FAILED);
        }
        let mut rng = rand::rng();
        let id = (rng.next_u32() & 0xff) as u8;
        let mut challenge = vec![0u8; 16];
        rng.fill_bytes(&mut challenge);
        answer.push(("CHAP_A".into(), chap::CHAP_A_MD5.into()));
        answer.push(("CHAP_I".into(), id.to_string()));
        answer.push(("CHAP_C".into(), chap::encode_hex(&challenge)));
        self.login().auth = Auth::Challenged { id, challenge };
        Ok(())
    }

    /// Checks CHAP_N/CHAP_R against the target's incoming accounts.
    fn chap_verify(&mut self, user: &str, response: &str) -> Result<(), LoginStatus> {
        let Auth::Challenged { id, challenge } = self.login().auth.clone() else {
            return Err(LoginStatus::AUTH_FAILED);
        };
        let target = self
            .login()
            .target
            .clone()
            .ok_or(LoginStatus::AUTH_FAILED)?;
        let bound = target
            .access
            .read()
            .incoming_users
            .iter()
            .any(|u| u == user);
        let secret = self.registry.secret(user).filter(|_| bound);
        // Slowed down after failures, whatever the outcome (see throttle).
        let name = self.login().initiator_name.clone().unwrap_or_default();
        let who = (self.peer.ip(), name);
        let now = std::time::Instant::now();
        let wait = self.registry.chap_throttle().reserve(&who, now);
        if !wait.is_zero() {
            tracing::info!(peer = %self.peer, initiator = %who.1, wait_ms = wait.as_millis() as u64,
                "CHAP response answered late: earlier failures");
            self.out.push(Output::Delay(wait));
        }
        let ok = chap::decode_binary(response).is_ok_and(|got| {
            secret.is_some_and(|s| chap::response(id, s.as_bytes(), &challenge)[..] == got[..])
        });
        self.registry.chap_throttle().record(&who, ok, now + wait);
        if !ok {
            tracing::warn!(peer = %self.peer, user, target = %target.name, "CHAP authentication failed");
            return Err(LoginStatus::AUTH_FAILED);
        }
        Ok(())
    }

    /// Mutual CHAP: answer the initiator's challenge with the outgoing account.
    fn chap_mutual(
        &mut self,
        id: &str,
        challenge: &str,
        answer: &mut Keys,
    ) -> Result<(), LoginStatus> {
        let target = self
            .login()
            .target
            .clone()
            .ok_or(LoginStatus::AUTH_FAILED)?;
        let user = target
            .access
            .read()
            .outgoing_user
            .clone()
            .ok_or(LoginStatus::AUTH_FAILED)?;
        let secret = self
            .registry
            .secret(&user)
            .ok_or(LoginStatus::AUTH_FAILED)?;
        let id: u8 = params::parse_number("CHAP_I", id)
            .ok()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or(LoginStatus::AUTH_FAILED)?;
        let challenge = chap::decode_binary(challenge).map_err(|_| LoginStatus::AUTH_FAILED)?;
        if let Auth::Challenged {
            challenge: ours, ..
        } = &self.login().auth
        {
            if *ours == challenge {
                return Err(LoginStatus::AUTH_FAILED);
            }
        }
        let r = chap::response(id, secret.as_bytes(), &challenge);
        answer.push(("CHAP_N".into(), user));
        answer.push(("CHAP_R".into(), chap::encode_hex(&r)));
        Ok(())
    }

    /// Operational stage keys, answered with the target's settings.
    fn operational_keys(&mut self, keys: &Keys, answer: &mut Keys) -> Result<(), LoginStatus> {
        for (k, v) in keys {
            match k.as_str() {
                "InitiatorName" | "InitiatorAlias" | "SessionType" | "TargetName" => {}
                k if k == "AuthMethod" || k.starts_with("CHAP_") => {
                    return Err(LoginStatus::INVALID_DURING_LOGIN);
                }
                _ => self.negotiate_key(k, v, answer)?,
            }
        }
        let l = self.login();
        if !l.declared_mrdsl {
            l.declared_mrdsl = true;
            let ours = self.local_value("MaxRecvDataSegmentLength");
            let n = params::parse_number("MaxRecvDataSegmentLength", &ours).unwrap_or(8192);
            self.params.max_recv_data_segment_length = n.clamp(512, (1 << 24) - 1);
            answer.push((
                "MaxRecvDataSegmentLength".into(),
                self.params.max_recv_data_segment_length.to_string(),
            ));
        }
        Ok(())
    }

    /// Our setting for a key: the target's parameter (tgt defaults).
    fn local_value(&mut self, key: &str) -> String {
        let from_target = self
            .login()
            .target
            .as_ref()
            .and_then(|t| t.access.read().param(key).map(str::to_string));
        let v = from_target.or_else(|| {
            super::registry::TARGET_PARAM_DEFAULTS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        });
        let v = v.unwrap_or_default();
        match key {
            // Digests: accept both, preferring the configured one.
            "HeaderDigest" | "DataDigest" if v == "None" => "None,CRC32C".into(),
            "HeaderDigest" | "DataDigest" => "CRC32C,None".into(),
            _ => v,
        }
    }

    fn negotiate_key(
        &mut self,
        key: &str,
        offered: &str,
        answer: &mut Keys,
    ) -> Result<(), LoginStatus> {
        if key == "MaxRecvDataSegmentLength" {
            return self
                .params
                .apply(key, offered)
                .map_err(|_| LoginStatus::INITIATOR_ERROR);
        }
        let local = self.local_value(key);
        match params::answer(key, offered, &local) {
            Ok(Answer::Value(v)) => {
                self.params
                    .apply(key, &v)
                    .map_err(|_| LoginStatus::INITIATOR_ERROR)?;
                answer.push((key.to_string(), v));
            }
            Ok(Answer::NotUnderstood) => answer.push((key.to_string(), "NotUnderstood".into())),
            Ok(Answer::Reject) => answer.push((key.to_string(), "Reject".into())),
            Ok(Answer::Irrelevant) => {}
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "bad login key");
                return Err(LoginStatus::INITIATOR_ERROR);
            }
        }
        Ok(())
    }

    /// May the initiator leave stage `csg` for `nsg` now?
    fn may_leave_stage(&mut self, csg: u8, nsg: u8) -> Result<bool, LoginStatus> {
        if nsg <= csg || nsg == 2 {
            return Err(LoginStatus::INITIATOR_ERROR);
        }
        if csg != login::STAGE_SECURITY {
            return Ok(true);
        }
        let required = self.auth_required();
        match self.login().auth {
            Auth::Done => Ok(true),
            Auth::Start if !required => Ok(true),
            Auth::Start => Err(LoginStatus::AUTH_FAILED),
            // Still exchanging CHAP keys: stay in the security stage.
            _ => Ok(false),
        }
    }

    fn send_login_rsp(
        &mut self,
        req: &Bhs,
        transit: bool,
        csg: u8,
        nsg: u8,
        data: Vec<u8>,
    ) -> Result<(), LoginStatus> {
        let bhs = self.login_rsp_header(req, transit, csg, nsg, LoginStatus::SUCCESS, 0);
        self.send(bhs, Payload::Owned(data));
        Ok(())
    }

    fn login_rsp_header(
        &mut self,
        req: &Bhs,
        transit: bool,
        csg: u8,
        nsg: u8,
        status: LoginStatus,
        tsih: u16,
    ) -> Bhs {
        let mut bhs = Bhs::new(opcode::LOGIN_RSP);
        let t = if transit { flags::TRANSIT } else { 0 };
        bhs.set_flags(t | (csg << 2) | if transit { nsg } else { 0 });
        bhs.0[login::ISID..login::ISID + login::ISID_LEN]
            .copy_from_slice(&req.0[login::ISID..login::ISID + login::ISID_LEN]);
        bhs.set_u16_at(login::TSIH, tsih);
        bhs.set_itt(req.itt());
        bhs.set_u8_at(login::STATUS_CLASS, status.0);
        bhs.set_u8_at(login::STATUS_DETAIL, status.1);
        self.stamp_status(&mut bhs);
        bhs
    }

    /// Sends a failed login response and closes (RFC 7143 6.1).
    fn refuse_login(&mut self, req: &Bhs, status: LoginStatus) {
        tracing::info!(peer = %self.peer, class = status.0, detail = status.1, "login refused");
        let csg = req.login_csg();
        let bhs = self.login_rsp_header(req, false, csg, csg, status, 0);
        self.send(bhs, Payload::None);
        self.close();
    }

    /// The last login response: creates the session and enters full feature.
    fn finish_login(&mut self, req: &Bhs, csg: u8, data: Vec<u8>) -> Result<(), LoginStatus> {
        let registry = self.registry.clone();
        let l = self.login();
        if l.tsih != 0 {
            // Adding a connection to a session (MC/S): MaxConnections is 1.
            let exists = registry.session(Tsih(l.tsih)).is_some();
            return Err(if exists {
                LoginStatus::TOO_MANY_CONNECTIONS
            } else {
                LoginStatus::NO_SESSION
            });
        }
        let name = l
            .initiator_name
            .clone()
            .ok_or(LoginStatus::MISSING_PARAMETER)?;
        let (isid, cid, cmd_sn, discovery, target, alias) = (
            l.isid,
            l.cid,
            l.cmd_sn,
            l.discovery,
            l.target.clone(),
            l.initiator_alias.clone(),
        );
        let tid = target.as_ref().map(|t| t.tid);
        if let Some(old) = self.registry.find_session(tid, &name, isid) {
            tracing::info!(initiator = %name, tsih = old.tsih.0, "session reinstatement: closing the old session");
            self.registry.remove_session(old.tsih);
            (old.kill)();
        }
        let tsih = self.registry.allocate_tsih();
        let kind = match (&target, discovery) {
            (_, true) => SessionKind::Discovery,
            (Some(t), false) => {
                let port = format!("{},i,0x{}", name, hex(&isid));
                let nexus = t.scsi.nexus_login(&port, PORTAL_GROUP_TAG);
                SessionKind::Normal {
                    target: t.clone(),
                    nexus,
                }
            }
            (None, false) => return Err(LoginStatus::MISSING_PARAMETER),
        };
        let bhs = self.login_rsp_header(
            req,
            true,
            csg,
            login::STAGE_FULL_FEATURE,
            LoginStatus::SUCCESS,
            tsih.0,
        );
        self.send(bhs, Payload::Owned(data));
        self.registry.add_session(SessionEntry {
            tsih,
            tid,
            initiator_name: name.clone(),
            initiator_alias: alias,
            isid,
            peer: self.peer.ip(),
            cid,
            kill: self.killer.clone(),
        });
        tracing::info!(peer = %self.peer, tsih = tsih.0, initiator = %name, discovery, "login complete");
        self.phase = Phase::FullFeature(Box::new(Session {
            kind,
            tsih,
            initiator_name: name,
            exp_cmd_sn: cmd_sn,
            max_cmd_sn: cmd_sn.wrapping_add(QUEUE_DEPTH - 1),
            early: Default::default(),
            tasks: Default::default(),
            next_ttt: 1,
        }));
        let digests = Digests {
            header: self.params.header_digest,
            data: self.params.data_digest,
        };
        let max_recv = self.params.max_recv_data_segment_length as usize;
        self.out.push(Output::SetLimits { digests, max_recv });
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
