//! The initiator's login phase (RFC 7143 6.3, 11.12, 11.13) as a sans-IO
//! state machine: [`Login::start`] gives the first Login Request, each Login
//! Response fed to [`Login::receive`] gives the next request or the settled
//! session parameters.
//!
//! The security stage is always entered (as open-iscsi does): with
//! `AuthMethod=None` and the T bit when no credentials are set, or with
//! `AuthMethod=CHAP,None` and the CHAP exchange (RFC 7143 12.1.3; one-way,
//! or mutual when the target's credentials are set, in which case the
//! target's CHAP_R is checked against our own challenge). The operational
//! stage offers our parameters and answers whatever the target offers,
//! through [`crate::params`].

use rand::RngCore;

use super::{InitiatorError, Result};
use crate::chap;
use crate::params::{self, Answer, Negotiated};
use crate::pdu::{flags, keys, login, opcode, Bhs, Pdu};

/// CHAP credentials: a name and a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: String,
}

/// What to log in to, and what to offer.
#[derive(Clone, Debug)]
pub struct LoginConfig {
    /// Our IQN.
    pub initiator_name: String,
    /// The target IQN; `None` for a discovery session.
    pub target_name: Option<String>,
    /// Initiator session id (kept across relogins so the target reinstates).
    pub isid: [u8; 6],
    /// Connection id.
    pub cid: u16,
    /// Our credentials (one-way CHAP).
    pub chap: Option<ChapCredentials>,
    /// The target's credentials (mutual CHAP); needs `chap` too.
    pub mutual_chap: Option<ChapCredentials>,
    /// Offer CRC32C header digests (preferred over None).
    pub header_digest: bool,
    /// Offer CRC32C data digests (preferred over None).
    pub data_digest: bool,
    /// The largest data segment we accept (our MaxRecvDataSegmentLength).
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength and FirstBurstLength we offer.
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    /// The CmdSN of the first login request (and of the first command).
    pub initial_cmd_sn: u32,
}

impl LoginConfig {
    /// Defaults for a normal session to `target` (None: discovery).
    pub fn new(initiator_name: &str, target_name: Option<&str>) -> Self {
        LoginConfig {
            initiator_name: initiator_name.to_string(),
            target_name: target_name.map(str::to_string),
            isid: random_isid(),
            cid: 0,
            chap: None,
            mutual_chap: None,
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 16_776_192,
            first_burst_length: 262_144,
            initial_cmd_sn: 1,
        }
    }
}

/// A random-format ISID (RFC 7143 10.12.5, T=10b).
pub fn random_isid() -> [u8; 6] {
    let mut isid = [0u8; 6];
    rand::rng().fill_bytes(&mut isid);
    isid[0] = 0x80 | (isid[0] & 0x3f);
    isid
}

/// What the login settled.
#[derive(Clone, Debug)]
pub struct LoginOutcome {
    pub params: Negotiated,
    /// Target session identifying handle.
    pub tsih: u16,
    /// The next CmdSN to use.
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// TargetAlias, if the target declared one.
    pub target_alias: Option<String>,
}

/// The next thing to do after a Login Response.
#[derive(Debug)]
pub enum LoginStep {
    /// Send this Login Request and wait for the next response.
    Send(Pdu),
    /// The login is complete: full feature phase.
    Done(LoginOutcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sent AuthMethod, waiting for the target's choice.
    AuthMethod,
    /// Sent CHAP_A, waiting for CHAP_I/CHAP_C.
    ChapAlgorithm,
    /// Sent CHAP_N/CHAP_R, waiting for the transit (and mutual CHAP_R).
    ChapResponse,
    /// Security done (or skipped), waiting for the transit to operational.
    SecurityDone,
    /// In the operational stage.
    Operational,
}

/// The login state machine.
#[derive(Clone, Debug)]
pub struct Login {
    cfg: LoginConfig,
    phase: Phase,
    itt: u32,
    exp_stat_sn: u32,
    params: Negotiated,
    /// Keys we offered in the operational stage, with our values.
    offered: Vec<(String, String)>,
    /// Text of a response split with the C bit, so far.
    partial: Vec<u8>,
    /// Our mutual CHAP identifier and challenge.
    mutual_challenge: Option<(u8, Vec<u8>)>,
    target_alias: Option<String>,
}

/// RFC 7143 11.13.5 status class / detail as text.
pub fn status_text(class: u8, detail: u8) -> String {
    let what = match (class, detail) {
        (1, _) => "target moved (redirect)",
        (2, 0) => "initiator error",
        (2, 1) => "authentication failure",
        (2, 2) => "authorization failure",
        (2, 3) => "target not found",
        (2, 4) => "target removed",
        (2, 5) => "unsupported version",
        (2, 6) => "too many connections",
        (2, 7) => "missing parameter",
        (2, 8) => "cannot include in session",
        (2, 9) => "session type not supported",
        (2, 10) => "session does not exist",
        (2, 11) => "invalid request during login",
        (3, 0) => "target error",
        (3, 1) => "service unavailable",
        (3, 2) => "out of resources",
        _ => "unknown status",
    };
    format!("{what} (class {class:#04x}, detail {detail:#04x})")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

impl Login {
    /// Starts a login: returns the machine and the first Login Request.
    pub fn start(cfg: LoginConfig) -> (Login, Pdu) {
        let mut params = Negotiated {
            max_recv_data_segment_length: cfg.max_recv_data_segment_length,
            ..Negotiated::default()
        };
        params.max_burst_length = params.max_burst_length.min(cfg.max_burst_length);
        let m = Login {
            cfg,
            phase: Phase::AuthMethod,
            itt: 0,
            exp_stat_sn: 0,
            params,
            offered: Vec::new(),
            partial: Vec::new(),
            mutual_challenge: None,
            target_alias: None,
        };
        let mut pairs = vec![
            ("InitiatorName".to_string(), m.cfg.initiator_name.clone()),
            (
                "SessionType".to_string(),
                if m.cfg.target_name.is_some() {
                    "Normal"
                } else {
                    "Discovery"
                }
                .to_string(),
            ),
        ];
        if let Some(t) = &m.cfg.target_name {
            pairs.push(("TargetName".to_string(), t.clone()));
        }
        let transit = if m.cfg.chap.is_some() {
            pairs.push(("AuthMethod".to_string(), "CHAP,None".to_string()));
            false
        } else {
            pairs.push(("AuthMethod".to_string(), "None".to_string()));
            true
        };
        let pdu = m.request(login::STAGE_SECURITY, transit, &pairs);
        (m, pdu)
    }

    fn is_discovery(&self) -> bool {
        self.cfg.target_name.is_none()
    }

    /// Builds a Login Request in stage `csg` (NSG is the next stage).
    fn request(&self, csg: u8, transit: bool, pairs: &[(String, String)]) -> Pdu {
        let nsg = if csg == login::STAGE_SECURITY {
            login::STAGE_OPERATIONAL
        } else {
            login::STAGE_FULL_FEATURE
        };
        let mut bhs = Bhs::new(opcode::LOGIN_REQ);
        bhs.set_immediate(true);
        let mut stages = (csg << 2) | if transit { nsg } else { 0 };
        if transit {
            stages |= flags::TRANSIT;
        }
        bhs.set_u8_at(login::STAGES, stages);
        bhs.0[login::ISID..login::ISID + login::ISID_LEN].copy_from_slice(&self.cfg.isid);
        bhs.set_itt(self.itt);
        bhs.set_u16_at(login::CID, self.cfg.cid);
        bhs.set_u32_at(login::CMD_SN, self.cfg.initial_cmd_sn);
        bhs.set_u32_at(login::EXP_STAT_SN, self.exp_stat_sn);
        let mut pdu = Pdu::new(bhs);
        pdu.data = keys::encode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        pdu
    }

    fn operational_offer(&self) -> Vec<(String, String)> {
        let digest = |on| if on { "CRC32C,None" } else { "None" };
        let mut v: Vec<(&str, String)> = vec![
            ("HeaderDigest", digest(self.cfg.header_digest).into()),
            ("DataDigest", digest(self.cfg.data_digest).into()),
            (
                "MaxRecvDataSegmentLength",
                self.cfg.max_recv_data_segment_length.to_string(),
            ),
        ];
        if !self.is_discovery() {
            v.extend([
                ("InitialR2T", yes_no(false).into()),
                ("ImmediateData", yes_no(true).into()),
                ("MaxBurstLength", self.cfg.max_burst_length.to_string()),
                ("FirstBurstLength", self.cfg.first_burst_length.to_string()),
                ("MaxConnections", "1".into()),
                ("MaxOutstandingR2T", "1".into()),
                ("DefaultTime2Wait", "2".into()),
                ("DefaultTime2Retain", "0".into()),
                ("DataPDUInOrder", "Yes".into()),
                ("DataSequenceInOrder", "Yes".into()),
                ("ErrorRecoveryLevel", "0".into()),
                ("IFMarker", "No".into()),
                ("OFMarker", "No".into()),
            ]);
        }
        v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Feeds one Login Response.
    pub fn receive(&mut self, pdu: &Pdu) -> Result<LoginStep> {
        let bhs = &pdu.bhs;
        if bhs.opcode() != opcode::LOGIN_RSP {
            return Err(InitiatorError::Protocol(format!(
                "expected a Login Response, got opcode {:#04x}",
                bhs.opcode()
            )));
        }
        let class = bhs.u8_at(login::STATUS_CLASS);
        let detail = bhs.u8_at(login::STATUS_DETAIL);
        if class != 0 {
            return Err(InitiatorError::LoginRefused { class, detail });
        }
        self.exp_stat_sn = bhs.u32_at(login::STAT_SN).wrapping_add(1);
        let stages = bhs.u8_at(login::STAGES);
        if stages & flags::CONTINUE != 0 {
            // The target continues its text: ask for the rest (empty request, no T).
            self.partial.extend_from_slice(&pdu.data);
            let csg = bhs.login_csg();
            return Ok(LoginStep::Send(self.request(csg, false, &[])));
        }
        let mut text = std::mem::take(&mut self.partial);
        text.extend_from_slice(&pdu.data);
        let pairs = keys::parse(&text).map_err(|e| InitiatorError::Protocol(e.to_string()))?;
        let transit = stages & flags::TRANSIT != 0;
        let nsg = bhs.login_nsg();
        match self.phase {
            Phase::AuthMethod => self.on_auth_method(&pairs, transit, nsg),
            Phase::ChapAlgorithm => self.on_chap_challenge(&pairs),
            Phase::ChapResponse => self.on_chap_done(&pairs, transit, nsg),
            Phase::SecurityDone => self.security_transit(transit, nsg),
            Phase::Operational => self.on_operational(bhs, &pairs, transit, nsg),
        }
    }

    fn on_auth_method(
        &mut self,
        pairs: &[(String, String)],
        transit: bool,
        nsg: u8,
    ) -> Result<LoginStep> {
        self.note_declarations(pairs);
        let method = find(pairs, "AuthMethod");
        match method {
            Some("CHAP") if self.cfg.chap.is_some() => {
                self.phase = Phase::ChapAlgorithm;
                let pairs = [("CHAP_A".to_string(), chap::CHAP_A_MD5.to_string())];
                Ok(LoginStep::Send(self.request(
                    login::STAGE_SECURITY,
                    false,
                    &pairs,
                )))
            }
            Some("None") | None => {
                if self.cfg.mutual_chap.is_some() {
                    return Err(InitiatorError::Auth(
                        "mutual CHAP configured but the target chose AuthMethod=None".into(),
                    ));
                }
                self.phase = Phase::SecurityDone;
                self.security_transit(transit, nsg)
            }
            Some(other) => Err(InitiatorError::Auth(format!(
                "target chose AuthMethod={other}"
            ))),
        }
    }

    fn on_chap_challenge(&mut self, pairs: &[(String, String)]) -> Result<LoginStep> {
        if find(pairs, "CHAP_A") != Some(chap::CHAP_A_MD5) {
            return Err(InitiatorError::Auth(
                "target did not accept CHAP_A=5 (MD5)".into(),
            ));
        }
        let id: u8 = find(pairs, "CHAP_I")
            .and_then(|v| params::parse_number("CHAP_I", v).ok())
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| InitiatorError::Auth("missing or bad CHAP_I".into()))?;
        let challenge = find(pairs, "CHAP_C")
            .ok_or_else(|| InitiatorError::Auth("missing CHAP_C".into()))
            .and_then(|v| {
                chap::decode_binary(v).map_err(|e| InitiatorError::Auth(e.to_string()))
            })?;
        let creds = self
            .cfg
            .chap
            .clone()
            .expect("CHAP phase without credentials");
        let resp = chap::response(id, creds.secret.as_bytes(), &challenge);
        let mut out = vec![
            ("CHAP_N".to_string(), creds.user.clone()),
            ("CHAP_R".to_string(), chap::encode_hex(&resp)),
        ];
        if self.cfg.mutual_chap.is_some() {
            let mut ch = vec![0u8; 16];
            rand::rng().fill_bytes(&mut ch);
            let mid = (rand::rng().next_u32() & 0xff) as u8;
            out.push(("CHAP_I".to_string(), mid.to_string()));
            out.push(("CHAP_C".to_string(), chap::encode_hex(&ch)));
            self.mutual_challenge = Some((mid, ch));
        }
        self.phase = Phase::ChapResponse;
        Ok(LoginStep::Send(self.request(
            login::STAGE_SECURITY,
            true,
            &out,
        )))
    }

    fn on_chap_done(
        &mut self,
        pairs: &[(String, String)],
        transit: bool,
        nsg: u8,
    ) -> Result<LoginStep> {
        if let (Some(creds), Some((id, challenge))) =
            (self.cfg.mutual_chap.clone(), self.mutual_challenge.clone())
        {
            let name = find(pairs, "CHAP_N");
            let got = find(pairs, "CHAP_R")
                .and_then(|v| chap::decode_binary(v).ok())
                .ok_or_else(|| InitiatorError::Auth("target sent no CHAP_R".into()))?;
            if name != Some(creds.user.as_str()) {
                return Err(InitiatorError::Auth(format!(
                    "target named itself {name:?}, expected {:?}",
                    creds.user
                )));
            }
            let want = chap::response(id, creds.secret.as_bytes(), &challenge);
            if got != want {
                return Err(InitiatorError::Auth("target's CHAP_R is wrong".into()));
            }
        }
        self.phase = Phase::SecurityDone;
        self.security_transit(transit, nsg)
    }

    /// After security: move to the operational stage once the target transits.
    fn security_transit(&mut self, transit: bool, nsg: u8) -> Result<LoginStep> {
        if !transit {
            // The target wants another round in the security stage.
            return Ok(LoginStep::Send(self.request(
                login::STAGE_SECURITY,
                true,
                &[],
            )));
        }
        if nsg != login::STAGE_OPERATIONAL {
            return Err(InitiatorError::Protocol(format!(
                "target transits from security to stage {nsg}"
            )));
        }
        self.phase = Phase::Operational;
        self.offered = self.operational_offer();
        let offer = self.offered.clone();
        Ok(LoginStep::Send(self.request(
            login::STAGE_OPERATIONAL,
            true,
            &offer,
        )))
    }

    fn note_declarations(&mut self, pairs: &[(String, String)]) {
        if let Some(alias) = find(pairs, "TargetAlias") {
            self.target_alias = Some(alias.to_string());
        }
    }

    fn on_operational(
        &mut self,
        bhs: &Bhs,
        pairs: &[(String, String)],
        transit: bool,
        nsg: u8,
    ) -> Result<LoginStep> {
        self.note_declarations(pairs);
        let answers = self.settle(pairs)?;
        if transit && nsg == login::STAGE_FULL_FEATURE {
            return Ok(LoginStep::Done(LoginOutcome {
                params: self.params.clone(),
                tsih: bhs.u16_at(login::TSIH),
                cmd_sn: self.cfg.initial_cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
                exp_cmd_sn: bhs.u32_at(login::EXP_CMD_SN),
                max_cmd_sn: bhs.u32_at(login::MAX_CMD_SN),
                target_alias: self.target_alias.clone(),
            }));
        }
        Ok(LoginStep::Send(self.request(
            login::STAGE_OPERATIONAL,
            true,
            &answers,
        )))
    }

    /// Applies the target's answers to our offer and answers its own offers.
    fn settle(&mut self, pairs: &[(String, String)]) -> Result<Vec<(String, String)>> {
        let mut answers = Vec::new();
        for (key, value) in pairs {
            if matches!(value.as_str(), "NotUnderstood" | "Irrelevant" | "Reject") {
                continue;
            }
            let ours = self
                .offered
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone());
            let result = match ours {
                Some(_) => value.clone(),
                None => match params::answer(key, value, &local_value(key)) {
                    Ok(Answer::Value(v)) => {
                        answers.push((key.clone(), v.clone()));
                        v
                    }
                    Ok(Answer::NotUnderstood) => {
                        answers.push((key.clone(), "NotUnderstood".into()));
                        continue;
                    }
                    Ok(Answer::Reject) => {
                        answers.push((key.clone(), "Reject".into()));
                        continue;
                    }
                    Ok(Answer::Irrelevant) => value.clone(),
                    Err(e) => return Err(InitiatorError::Protocol(e.to_string())),
                },
            };
            self.params
                .apply(key, &result)
                .map_err(|e| InitiatorError::Protocol(e.to_string()))?;
        }
        Ok(answers)
    }
}

/// Our local value for a key the target offers without our having offered it.
fn local_value(key: &str) -> String {
    match key {
        "HeaderDigest" | "DataDigest" => "None".into(),
        "InitialR2T" => "No".into(),
        "ImmediateData" | "DataPDUInOrder" | "DataSequenceInOrder" => "Yes".into(),
        "IFMarker" | "OFMarker" => "No".into(),
        "MaxBurstLength" => "16776192".into(),
        "FirstBurstLength" => "262144".into(),
        "ErrorRecoveryLevel" => "0".into(),
        "DefaultTime2Wait" => "2".into(),
        "DefaultTime2Retain" => "0".into(),
        "AuthMethod" => "None".into(),
        _ => "1".into(),
    }
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(stages: u8, pairs: &[(&str, &str)], stat_sn: u32) -> Pdu {
        let mut bhs = Bhs::new(opcode::LOGIN_RSP);
        bhs.set_u8_at(login::STAGES, stages);
        bhs.set_u32_at(login::STAT_SN, stat_sn);
        bhs.set_u16_at(login::TSIH, 7);
        bhs.set_u32_at(login::EXP_CMD_SN, 1);
        bhs.set_u32_at(login::MAX_CMD_SN, 32);
        let mut pdu = Pdu::new(bhs);
        pdu.data = keys::encode(pairs.iter().copied());
        pdu
    }

    fn text(pdu: &Pdu) -> Vec<(String, String)> {
        keys::parse(&pdu.data).unwrap()
    }

    fn send(step: LoginStep) -> Pdu {
        match step {
            LoginStep::Send(p) => p,
            LoginStep::Done(_) => panic!("login ended early"),
        }
    }

    const SEC_TO_OP: u8 = 0x80 | 1;
    const OP_TO_FFP: u8 = 0x80 | (1 << 2) | 3;

    #[test]
    fn rfc7143_6_3_login_without_auth_settles_parameters() {
        let cfg = LoginConfig::new("iqn.i", Some("iqn.t"));
        let (mut m, first) = Login::start(cfg);
        assert_eq!(first.bhs.u8_at(login::STAGES), SEC_TO_OP);
        assert_eq!(find(&text(&first), "AuthMethod"), Some("None"));
        assert_eq!(find(&text(&first), "TargetName"), Some("iqn.t"));
        let op = send(
            m.receive(&response(SEC_TO_OP, &[("AuthMethod", "None")], 5))
                .unwrap(),
        );
        assert_eq!(op.bhs.u8_at(login::STAGES), OP_TO_FFP);
        assert_eq!(op.bhs.u32_at(login::EXP_STAT_SN), 6);
        let answer = response(
            OP_TO_FFP,
            &[
                ("ImmediateData", "No"),
                ("InitialR2T", "Yes"),
                ("MaxBurstLength", "65536"),
                ("MaxRecvDataSegmentLength", "8192"),
            ],
            6,
        );
        let LoginStep::Done(out) = m.receive(&answer).unwrap() else {
            panic!("not done")
        };
        assert!(!out.params.immediate_data && out.params.initial_r2t);
        assert_eq!(out.params.max_burst_length, 65536);
        assert_eq!(out.params.max_xmit_data_segment_length, 8192);
        assert_eq!((out.tsih, out.exp_stat_sn, out.max_cmd_sn), (7, 7, 32));
    }

    #[test]
    fn rfc7143_12_1_3_mutual_chap_checks_the_target() {
        let mut cfg = LoginConfig::new("iqn.i", Some("iqn.t"));
        cfg.chap = Some(ChapCredentials {
            user: "u".into(),
            secret: "secretsecret".into(),
        });
        cfg.mutual_chap = Some(ChapCredentials {
            user: "t".into(),
            secret: "tsecrettsecret".into(),
        });
        let (mut m, first) = Login::start(cfg);
        assert_eq!(first.bhs.u8_at(login::STAGES) & flags::TRANSIT, 0);
        let a = send(
            m.receive(&response(0, &[("AuthMethod", "CHAP")], 1))
                .unwrap(),
        );
        assert_eq!(find(&text(&a), "CHAP_A"), Some("5"));
        let challenge = [9u8; 16];
        let c = chap::encode_hex(&challenge);
        let r = send(
            m.receive(&response(
                0,
                &[("CHAP_A", "5"), ("CHAP_I", "3"), ("CHAP_C", &c)],
                2,
            ))
            .unwrap(),
        );
        let t = text(&r);
        let want = chap::encode_hex(&chap::response(3, b"secretsecret", &challenge));
        assert_eq!(find(&t, "CHAP_R"), Some(want.as_str()));
        let mid: u8 = find(&t, "CHAP_I").unwrap().parse().unwrap();
        let mch = chap::decode_binary(find(&t, "CHAP_C").unwrap()).unwrap();
        // A wrong target answer is refused.
        let bad = chap::encode_hex(&[0u8; 16]);
        let rsp = response(SEC_TO_OP, &[("CHAP_N", "t"), ("CHAP_R", &bad)], 3);
        assert!(matches!(
            m.clone().receive(&rsp),
            Err(InitiatorError::Auth(_))
        ));
        let good = chap::encode_hex(&chap::response(mid, b"tsecrettsecret", &mch));
        let op = send(
            m.receive(&response(
                SEC_TO_OP,
                &[("CHAP_N", "t"), ("CHAP_R", &good)],
                3,
            ))
            .unwrap(),
        );
        assert_eq!(op.bhs.login_csg(), login::STAGE_OPERATIONAL);
    }

    #[test]
    fn refused_login_reports_the_status() {
        let (mut m, _) = Login::start(LoginConfig::new("iqn.i", Some("iqn.t")));
        let mut rsp = response(0, &[], 0);
        rsp.bhs.set_u8_at(login::STATUS_CLASS, 2);
        rsp.bhs.set_u8_at(login::STATUS_DETAIL, 1);
        let err = m.receive(&rsp).unwrap_err();
        assert!(matches!(
            err,
            InitiatorError::LoginRefused {
                class: 2,
                detail: 1
            }
        ));
        assert!(err.to_string().contains("authentication failure"));
    }
}
