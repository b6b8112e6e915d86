//! The management API tgtadm speaks to tgtd over a unix socket: one JSON
//! [`Request`] per connection, one JSON [`Reply`] back. The operations and
//! their error codes and messages follow tgt's `tgtadm`; `--op show`
//! prints what tgt prints.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scsi::LunOptions;

use super::registry::{Registry, Target, Tid};

/// tgtadm's `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    System,
    Target,
    LogicalUnit,
    Account,
    /// Not tgt's: the per-LUN counters ([`super::metrics`]), with `show`.
    Metrics,
}

/// tgtadm's `--op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    New,
    Delete,
    Show,
    Bind,
    Unbind,
    Update,
}

/// One management request (the flags of one tgtadm call).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub mode: Option<Mode>,
    pub op: Option<Op>,
    pub tid: Option<u32>,
    pub lun: Option<u64>,
    pub target_name: Option<String>,
    pub backing_store: Option<String>,
    pub bstype: Option<String>,
    /// `--params k=v,k=v` (logicalunit) or `--name`/`--value` (target update).
    pub params: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
    pub initiator_address: Option<String>,
    pub initiator_name: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub outgoing: bool,
    pub force: bool,
}

/// The daemon's answer: `code` 0 with `output`, or a tgt error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub code: u32,
    pub message: String,
    pub output: String,
}

/// tgt's management errors (`enum tgtadm_errno`), with its messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MgmtError {
    #[error("can't find the target")]
    NoTarget,
    #[error("can't find the logical unit")]
    NoLun,
    #[error("this target already exists")]
    TargetExists,
    #[error("this logical unit number already exists")]
    LunExists,
    #[error("this access control rule already exists")]
    AclExists,
    #[error("this access control rule does not exist")]
    AclMissing,
    #[error("this account already exists")]
    UserExists,
    #[error("can't find the account")]
    NoUser,
    #[error("invalid request{0}")]
    Invalid(String),
    #[error("this target already has an outgoing account")]
    OutgoingExists,
    #[error("this target is still active")]
    TargetActive,
    #[error("this operation isn't supported")]
    Unsupported,
    #[error("unknown parameter")]
    UnknownParam,
}

impl MgmtError {
    /// tgt's error number (`tgtadm_errno`).
    pub fn code(&self) -> u32 {
        match self {
            MgmtError::NoTarget => 4,
            MgmtError::NoLun => 5,
            MgmtError::TargetExists => 9,
            MgmtError::LunExists => 11,
            MgmtError::AclExists => 12,
            MgmtError::AclMissing => 13,
            MgmtError::UserExists => 14,
            MgmtError::NoUser => 15,
            MgmtError::Invalid(_) => 17,
            MgmtError::OutgoingExists => 18,
            MgmtError::TargetActive => 19,
            MgmtError::Unsupported => 22,
            MgmtError::UnknownParam => 23,
        }
    }

    fn invalid(why: impl std::fmt::Display) -> Self {
        MgmtError::Invalid(format!(": {why}"))
    }
}

/// Daemon-wide settings the management API needs.
#[derive(Clone, Debug, Default)]
pub struct MgmtConfig {
    /// Where LUNs keep persistent reservation state (APTPL).
    pub state_dir: Option<PathBuf>,
}

/// Runs one request against the registry.
pub fn handle(registry: &Registry, cfg: &MgmtConfig, req: &Request) -> Reply {
    match dispatch(registry, cfg, req) {
        Ok(output) => Reply {
            code: 0,
            message: String::new(),
            output,
        },
        Err(e) => {
            tracing::info!(error = %e, ?req, "management request refused");
            Reply {
                code: e.code(),
                message: e.to_string(),
                output: String::new(),
            }
        }
    }
}

type Result<T> = std::result::Result<T, MgmtError>;

fn dispatch(r: &Registry, cfg: &MgmtConfig, req: &Request) -> Result<String> {
    let op = req.op.ok_or_else(|| MgmtError::invalid("no --op"))?;
    match req.mode.ok_or_else(|| MgmtError::invalid("no --mode"))? {
        Mode::System => match op {
            Op::Show => Ok(show_system()),
            _ => Err(MgmtError::Unsupported),
        },
        Mode::Target => target_op(r, req, op),
        Mode::LogicalUnit => lun_op(r, cfg, req, op),
        Mode::Account => account_op(r, req, op),
        Mode::Metrics => match op {
            Op::Show => Ok(super::metrics::render(r)),
            _ => Err(MgmtError::Unsupported),
        },
    }
}

fn tid_of(req: &Request) -> Result<Tid> {
    match req.tid {
        Some(t) if t > 0 => Ok(Tid(t)),
        _ => Err(MgmtError::invalid("--tid N (N > 0) is required")),
    }
}

fn target_of(r: &Registry, req: &Request) -> Result<std::sync::Arc<Target>> {
    r.target(tid_of(req)?).ok_or(MgmtError::NoTarget)
}

fn target_op(r: &Registry, req: &Request, op: Op) -> Result<String> {
    match op {
        Op::New => {
            let tid = tid_of(req)?;
            let name = req
                .target_name
                .as_deref()
                .ok_or_else(|| MgmtError::invalid("--targetname is required"))?;
            if !valid_iscsi_name(name) {
                return Err(MgmtError::invalid(format!("{name:?} is not an iSCSI name")));
            }
            r.add_target(tid, name)
                .then_some(String::new())
                .ok_or(MgmtError::TargetExists)
        }
        Op::Delete => {
            let t = target_of(r, req)?;
            let sessions = r.sessions_of(Some(t.tid));
            if !sessions.is_empty() && !req.force {
                return Err(MgmtError::TargetActive);
            }
            for s in sessions {
                (s.kill)();
            }
            r.remove_target(t.tid);
            Ok(String::new())
        }
        Op::Show => match req.tid {
            None => Ok(r.targets().iter().map(|t| show_target(r, t)).collect()),
            Some(_) => Ok(show_params(&*target_of(r, req)?)),
        },
        Op::Bind => acl_change(r, req, true),
        Op::Unbind => acl_change(r, req, false),
        Op::Update => {
            let t = target_of(r, req)?;
            let (name, value) = match (&req.name, &req.value) {
                (Some(n), Some(v)) => (n, v),
                _ => return Err(MgmtError::invalid("--name and --value are required")),
            };
            let mut access = t.access.write();
            let slot = access
                .params
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(name));
            let (_, v) = slot.ok_or(MgmtError::UnknownParam)?;
            *v = value.clone();
            Ok(String::new())
        }
    }
}

/// iqn., eui. or naa. names (RFC 7143 4.2.7), printable, no spaces.
fn valid_iscsi_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa."))
        && name.len() <= 223
        && name.chars().all(|c| c.is_ascii_graphic())
}

fn acl_change(r: &Registry, req: &Request, add: bool) -> Result<String> {
    let t = target_of(r, req)?;
    let mut access = t.access.write();
    let (list, item) = match (&req.initiator_address, &req.initiator_name) {
        (Some(a), _) => (&mut access.acl_addresses, a.clone()),
        (None, Some(n)) => (&mut access.acl_names, n.clone()),
        (None, None) => {
            return Err(MgmtError::invalid(
                "-I ADDRESS or --initiator-name NAME is required",
            ));
        }
    };
    let pos = list.iter().position(|x| x.eq_ignore_ascii_case(&item));
    match (add, pos) {
        (true, Some(_)) => Err(MgmtError::AclExists),
        (true, None) => {
            list.push(item);
            Ok(String::new())
        }
        (false, Some(p)) => {
            list.remove(p);
            Ok(String::new())
        }
        (false, None) => Err(MgmtError::AclMissing),
    }
}

fn lun_op(r: &Registry, cfg: &MgmtConfig, req: &Request, op: Op) -> Result<String> {
    let t = target_of(r, req)?;
    let lun = req
        .lun
        .ok_or_else(|| MgmtError::invalid("--lun N is required"))?;
    match op {
        Op::New => {
            if t.scsi
                .luns()
                .iter()
                .any(|l| l.lun == lun && (lun != 0 || l.kind != "controller"))
            {
                return Err(MgmtError::LunExists);
            }
            let path = req
                .backing_store
                .as_deref()
                .ok_or_else(|| MgmtError::invalid("-b PATH is required"))?;
            if let Some(bs) = req
                .bstype
                .as_deref()
                .filter(|b| *b != "rdwr" && *b != "aio")
            {
                return Err(MgmtError::invalid(format!(
                    "backing store type {bs} is not supported (rdwr, aio)"
                )));
            }
            let opts = lun_options(t.tid, lun, cfg, req.params.as_deref())?;
            t.scsi
                .add_lun(lun, Path::new(path), opts)
                .map_err(map_scsi)?;
            Ok(String::new())
        }
        Op::Delete => {
            t.scsi.remove_lun(lun).map_err(map_scsi)?;
            Ok(String::new())
        }
        Op::Update => {
            let info = t
                .scsi
                .luns()
                .into_iter()
                .find(|l| l.lun == lun && l.kind != "controller")
                .ok_or(MgmtError::NoLun)?;
            let mut opts = lun_options(t.tid, lun, cfg, req.params.as_deref())?;
            opts.readonly |= info.readonly && !has_param(req.params.as_deref(), "readonly");
            opts.thin |= info.thin && !has_param(req.params.as_deref(), "thin_provisioning");
            t.scsi.remove_lun(lun).map_err(map_scsi)?;
            t.scsi.add_lun(lun, &info.path, opts).map_err(map_scsi)?;
            Ok(String::new())
        }
        _ => Err(MgmtError::Unsupported),
    }
}

fn has_param(params: Option<&str>, key: &str) -> bool {
    params.is_some_and(|p| p.split(',').any(|kv| kv.split('=').next() == Some(key)))
}

fn map_scsi(e: crate::scsi::ScsiError) -> MgmtError {
    use crate::scsi::ScsiError as E;
    match e {
        E::NoSuchLun(_) | E::ControllerLun => MgmtError::NoLun,
        E::LunExists(_) => MgmtError::LunExists,
        other => MgmtError::invalid(other),
    }
}

/// LUN options from tgt's `--params` (thin_provisioning, readonly,
/// vendor_id, product_id, scsi_sn, block_size).
fn lun_options(tid: Tid, lun: u64, cfg: &MgmtConfig, params: Option<&str>) -> Result<LunOptions> {
    let mut opts = LunOptions {
        serial: format!("beaf{}{}", tid.0, lun),
        state_dir: cfg.state_dir.clone(),
        ..LunOptions::default()
    };
    let bool_of = |v: &str| matches!(v, "1" | "yes" | "Yes" | "on" | "true");
    for kv in params.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| MgmtError::invalid(format!("--params {kv:?} is not key=value")))?;
        match k.trim() {
            "thin_provisioning" => opts.thin = bool_of(v),
            "readonly" => opts.readonly = bool_of(v),
            "vendor_id" => opts.vendor = v.to_string(),
            "product_id" => opts.product = v.to_string(),
            "scsi_sn" => opts.serial = v.to_string(),
            "block_size" | "blocksize" => {
                opts.block_size = v
                    .parse()
                    .map_err(|_| MgmtError::invalid(format!("block_size {v:?}")))?
            }
            "removable" | "online" | "mode_page" | "sense_format" | "scsi_id" | "path"
            | "bstype" => {}
            _ => return Err(MgmtError::UnknownParam),
        }
    }
    Ok(opts)
}

fn account_op(r: &Registry, req: &Request, op: Op) -> Result<String> {
    let user = || {
        req.user
            .as_deref()
            .ok_or_else(|| MgmtError::invalid("--user is required"))
    };
    match op {
        Op::New => {
            let password = req
                .password
                .as_deref()
                .ok_or_else(|| MgmtError::invalid("--password is required"))?;
            r.add_account(user()?, password)
                .then_some(String::new())
                .ok_or(MgmtError::UserExists)
        }
        Op::Delete => r
            .remove_account(user()?)
            .then_some(String::new())
            .ok_or(MgmtError::NoUser),
        Op::Show => {
            let mut out = String::from("Account list:\n");
            for u in r.account_names() {
                let _ = writeln!(out, "    {u}");
            }
            Ok(out)
        }
        Op::Bind => {
            let t = target_of(r, req)?;
            let user = user()?;
            r.secret(user).ok_or(MgmtError::NoUser)?;
            let mut a = t.access.write();
            if req.outgoing {
                if a.outgoing_user.is_some() {
                    return Err(MgmtError::OutgoingExists);
                }
                a.outgoing_user = Some(user.to_string());
            } else if !a.incoming_users.iter().any(|u| u == user) {
                a.incoming_users.push(user.to_string());
            } else {
                return Err(MgmtError::UserExists);
            }
            Ok(String::new())
        }
        Op::Unbind => {
            let t = target_of(r, req)?;
            let user = user()?;
            let mut a = t.access.write();
            if a.outgoing_user.as_deref() == Some(user) {
                a.outgoing_user = None;
            } else if let Some(p) = a.incoming_users.iter().position(|u| u == user) {
                a.incoming_users.remove(p);
            } else {
                return Err(MgmtError::NoUser);
            }
            Ok(String::new())
        }
        Op::Update => Err(MgmtError::Unsupported),
    }
}

/// `--mode target --op show`: tgt's layout.
pub fn show_target(r: &Registry, t: &Target) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Target {}: {}", t.tid.0, t.name);
    o.push_str("    System information:\n        Driver: iscsi\n        State: ready\n");
    o.push_str("    I_T nexus information:\n");
    for s in r.sessions_of(Some(t.tid)) {
        let _ = writeln!(o, "        I_T nexus: {}", s.tsih.0);
        let alias = s.initiator_alias.as_deref().unwrap_or("none");
        let _ = writeln!(
            o,
            "            Initiator: {} alias: {}",
            s.initiator_name, alias
        );
        let _ = writeln!(o, "            Connection: {}", s.cid);
        let _ = writeln!(o, "                IP Address: {}", s.peer);
    }
    o.push_str("    LUN information:\n");
    for l in t.scsi.luns() {
        let controller = l.kind == "controller";
        let _ = writeln!(o, "        LUN: {}", l.lun);
        let _ = writeln!(o, "            Type: {}", l.kind);
        let _ = writeln!(
            o,
            "            SCSI ID: IET     {:04x}{:04x}",
            t.tid.0, l.lun
        );
        let serial = if controller {
            format!("beaf{}0", t.tid.0)
        } else {
            l.serial.clone()
        };
        let _ = writeln!(o, "            SCSI SN: {serial}");
        let _ = writeln!(
            o,
            "            Size: {} MB, Block size: {}",
            l.size_bytes / 1_000_000,
            if controller { 1 } else { l.block_size }
        );
        o.push_str("            Online: Yes\n            Removable media: No\n            Prevent removal: No\n");
        let _ = writeln!(
            o,
            "            Readonly: {}",
            yes_no(l.readonly && !controller)
        );
        o.push_str("            SWP: No\n");
        let _ = writeln!(o, "            Thin-provisioning: {}", yes_no(l.thin));
        let (bs, path) = if controller {
            ("null", "None".to_string())
        } else {
            ("rdwr", l.path.display().to_string())
        };
        let _ = writeln!(o, "            Backing store type: {bs}");
        let _ = writeln!(o, "            Backing store path: {path}");
        o.push_str("            Backing store flags: \n");
    }
    let a = t.access.read();
    o.push_str("    Account information:\n");
    for u in &a.incoming_users {
        let _ = writeln!(o, "        {u}");
    }
    if let Some(u) = &a.outgoing_user {
        let _ = writeln!(o, "        {u} (outgoing)");
    }
    o.push_str("    ACL information:\n");
    for x in a.acl_addresses.iter().chain(&a.acl_names) {
        let _ = writeln!(o, "        {x}");
    }
    o
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// `--mode target --op show --tid N`: the target's negotiation settings.
fn show_params(t: &Target) -> String {
    let a = t.access.read();
    let mut o = String::from("nop_interval=0\nnop_count=0\n");
    for (k, v) in &a.params {
        let _ = writeln!(o, "{k}={v}");
    }
    o
}

/// `--mode sys --op show`.
fn show_system() -> String {
    "System:\n    State: ready\n    debug: off\nLLDs:\n    iscsi: ready\nBacking stores:\n    rdwr\n    aio\nDevice types:\n    disk\n    controller\niSNS:\n    iSNS=Off\n".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(mode: Mode, op: Op) -> Request {
        Request {
            mode: Some(mode),
            op: Some(op),
            ..Request::default()
        }
    }

    #[test]
    fn target_lifecycle_and_tgt_errors() {
        let r = Registry::new();
        let cfg = MgmtConfig::default();
        let mut new = req(Mode::Target, Op::New);
        new.tid = Some(1);
        new.target_name = Some("iqn.2026-01.test:a".into());
        assert_eq!(handle(&r, &cfg, &new).code, 0);
        let again = handle(&r, &cfg, &new);
        assert_eq!(
            (again.code, again.message.as_str()),
            (9, "this target already exists")
        );
        let mut bind = req(Mode::Target, Op::Bind);
        bind.tid = Some(1);
        bind.initiator_address = Some("ALL".into());
        assert_eq!(handle(&r, &cfg, &bind).code, 0);
        assert_eq!(handle(&r, &cfg, &bind).code, 12);
        let show = handle(&r, &cfg, &req(Mode::Target, Op::Show));
        assert!(show
            .output
            .starts_with("Target 1: iqn.2026-01.test:a\n    System information:\n"));
        assert!(show
            .output
            .contains("        LUN: 0\n            Type: controller\n"));
        assert!(show.output.ends_with("    ACL information:\n        ALL\n"));
        let mut del = req(Mode::Target, Op::Delete);
        del.tid = Some(7);
        assert_eq!(handle(&r, &cfg, &del).message, "can't find the target");
    }

    #[test]
    fn lun_errors_are_clear() {
        let r = Registry::new();
        let cfg = MgmtConfig::default();
        assert!(r.add_target(Tid(1), "iqn.2026-01.test:a"));
        let mut lun = req(Mode::LogicalUnit, Op::New);
        lun.tid = Some(1);
        lun.lun = Some(1);
        lun.backing_store = Some("/nonexistent/file".into());
        let reply = handle(&r, &cfg, &lun);
        assert_eq!(reply.code, 17);
        assert!(
            reply.message.contains("/nonexistent/file"),
            "{}",
            reply.message
        );
        lun.tid = Some(2);
        assert_eq!(handle(&r, &cfg, &lun).code, 4);
        let mut bad = req(Mode::LogicalUnit, Op::New);
        bad.tid = Some(1);
        bad.lun = Some(2);
        bad.backing_store = Some("/dev/null".into());
        bad.params = Some("frobnicate=1".into());
        assert_eq!(handle(&r, &cfg, &bad).message, "unknown parameter");
    }

    #[test]
    fn accounts_bind_incoming_and_one_outgoing() {
        let r = Registry::new();
        let cfg = MgmtConfig::default();
        assert!(r.add_target(Tid(1), "iqn.2026-01.test:a"));
        let mut new = req(Mode::Account, Op::New);
        new.user = Some("u".into());
        new.password = Some("p".into());
        assert_eq!(handle(&r, &cfg, &new).code, 0);
        assert_eq!(handle(&r, &cfg, &new).code, 14);
        let mut bind = req(Mode::Account, Op::Bind);
        bind.tid = Some(1);
        bind.user = Some("u".into());
        bind.outgoing = true;
        assert_eq!(handle(&r, &cfg, &bind).code, 0);
        assert_eq!(handle(&r, &cfg, &bind).code, 18);
        bind.user = Some("nobody".into());
        assert_eq!(handle(&r, &cfg, &bind).message, "can't find the account");
        let show = handle(&r, &cfg, &req(Mode::Target, Op::Show)).output;
        assert!(show.contains("    Account information:\n        u (outgoing)\n"));
    }
}
