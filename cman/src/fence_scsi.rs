//! fence_scsi: I/O fencing with SCSI-3 persistent reservations over iSCSI,
//! as ClusterLabs fence-agents `agents/scsi/fence_scsi.py` does it with
//! sg_persist. The `fence_scsi` binary parses flags (or the agent's stdin
//! `key=value` lines, see [`crate::agent::parse_options`]), calls
//! [`Agent::run`] and prints its [`Outcome`].
//!
//! Each node registers a key derived from the cluster name and its node id
//! (`%.4s%.4d` of md5(cluster name) and the id, read as hex) on every shared
//! device, and the first one reserves it Write Exclusive – Registrants Only
//! (type 5), so only registered nodes may write. Fencing a node is a
//! PREEMPT AND ABORT of its key with our own key: its writes then end with
//! RESERVATION CONFLICT.
//!
//! Registrations belong to an I_T nexus (initiator name + ISID), so they
//! must be made on the session that carries the node's I/O. A device is
//! therefore, as for sg_persist, the node's LUN file
//! (`/dev/disk/by-path/ip-...-lun-N` after `iscsiadm --login`): the
//! commands go to its session holder ([`iscsi::initiator::prsock`]), found
//! in iscsiadm's state directory (`iscsi_state_dir=`, else
//! `$ISCSI_STATE_DIR`, else `/var/lib/iscsi`). A device may also be an
//! `iscsi://` URL, logged in to here with `initiator_name=` (default:
//! `$ISCSI_INITIATOR_NAME` or one from the host name) and `isid=` (12 hex
//! digits; default derived from the initiator name): for I/O that uses the
//! same initiator name and ISID.
//!
//! Exit codes: 0 success (status: registered), 1 failure, 2 status: not
//! registered (fenced).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iscsi::initiator::cdb::pr_type;
use iscsi::initiator::lun::{default_initiator_name, session_config, LunOptions};
use iscsi::initiator::prsock::HolderLun;
use iscsi::initiator::records::StateDir;
use iscsi::initiator::{Connection, InitiatorError, IscsiUrl, Lun, PersistentReserve};
use md5::{Digest, Md5};

use crate::config::{ClusterConf, ConfigError};

/// The reservation type fence_scsi uses: Write Exclusive – Registrants Only.
pub const PR_TYPE: u8 = pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY;

/// iscsiadm's state directory, where the session holders of LUN files are
/// found, when neither `iscsi_state_dir=` nor `$ISCSI_STATE_DIR` says.
pub const DEFAULT_ISCSI_STATE_DIR: &str = "/var/lib/iscsi";

/// Where the cluster configuration is read when no cluster name is given.
pub const DEFAULT_CONFIG: &str = "/etc/cluster/cluster.conf";

/// The agent's metadata (`-o metadata`), in the fence-agents XML form.
pub const METADATA: &str = r#"<?xml version="1.0" ?>
<resource-agent name="fence_scsi" shortdesc="Fence agent for SCSI persistent reservations over iSCSI" >
<longdesc>fence_scsi uses SCSI-3 persistent reservations to control access to shared iSCSI LUNs. Each node registers its key on every device; a Write Exclusive, Registrants Only reservation keeps unregistered nodes from writing. Fencing removes the victim's key with PREEMPT AND ABORT. A fenced node must be restarted (and unfenced) to regain access.</longdesc>
<vendor-url></vendor-url>
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" default="off"  />
		<shortdesc lang="en">Fencing action</shortdesc>
	</parameter>
	<parameter name="devices" unique="0" required="1">
		<getopt mixed="-d, --devices=[devices]" />
		<content type="string"  />
		<shortdesc lang="en">Comma separated list of the shared LUNs: LUN files of iscsiadm sessions (/dev/disk/by-path/...) or iscsi:// URLs. Each must support SCSI-3 persistent reservations.</shortdesc>
	</parameter>
	<parameter name="key" unique="0" required="0">
		<getopt mixed="-k, --key=[key]" />
		<content type="string"  />
		<shortdesc lang="en">Key to use for the current operation (hex). For "on" the key to register; for "off" and "status" the key of the node acted on. Derived from the cluster name and node id when absent.</shortdesc>
	</parameter>
	<parameter name="port" unique="0" required="0" obsoletes="nodename">
		<getopt mixed="-n, --plug=[id]" />
		<content type="string"  />
		<shortdesc lang="en">Node name or node id of the node to act on</shortdesc>
	</parameter>
	<parameter name="plug" unique="0" required="0" obsoletes="port">
		<getopt mixed="-n, --plug=[id]" />
		<content type="string"  />
		<shortdesc lang="en">Node name or node id of the node to act on</shortdesc>
	</parameter>
	<parameter name="nodename" unique="0" required="0">
		<getopt mixed="--nodename=[name]" />
		<content type="string"  />
		<shortdesc lang="en">Name or id of the local node (the one fencing)</shortdesc>
	</parameter>
	<parameter name="cluster_name" unique="0" required="0">
		<getopt mixed="--cluster-name=[name]" />
		<content type="string"  />
		<shortdesc lang="en">Cluster name (default: read from the cluster configuration)</shortdesc>
	</parameter>
	<parameter name="config" unique="0" required="0">
		<getopt mixed="-c, --config=[file]" />
		<content type="string" default="/etc/cluster/cluster.conf"  />
		<shortdesc lang="en">cluster.conf to read the cluster name and node ids from</shortdesc>
	</parameter>
	<parameter name="initiator_name" unique="0" required="0">
		<getopt mixed="--initiator-name=[iqn]" />
		<content type="string"  />
		<shortdesc lang="en">iSCSI initiator name of the local node (default $ISCSI_INITIATOR_NAME)</shortdesc>
	</parameter>
	<parameter name="iscsi_state_dir" unique="0" required="0">
		<getopt mixed="--iscsi-state-dir=[dir]" />
		<content type="string" default="/var/lib/iscsi"  />
		<shortdesc lang="en">iscsiadm's state directory, where the sessions of LUN files are found (default $ISCSI_STATE_DIR)</shortdesc>
	</parameter>
	<parameter name="isid" unique="0" required="0">
		<getopt mixed="--isid=[hex]" />
		<content type="string"  />
		<shortdesc lang="en">iSCSI session id of the local node, 12 hex digits (default derived from the initiator name)</shortdesc>
	</parameter>
</parameters>
<actions>
	<action name="on" on_target="1" automatic="1"/>
	<action name="off" />
	<action name="status" />
	<action name="list" />
	<action name="monitor" />
	<action name="metadata" />
	<action name="validate-all" />
</actions>
</resource-agent>
"#;

/// Why an action failed (the agent then exits 1).
#[derive(Debug, thiserror::Error)]
pub enum FenceScsiError {
    /// Missing or malformed options.
    #[error("{0}")]
    Invalid(String),
    /// cluster.conf could not be read.
    #[error("cannot read cluster configuration {}: {source}", path.display())]
    Config { path: PathBuf, source: ConfigError },
    /// A device could not be reached or refused a command.
    #[error("device {url}: {what}: {source}")]
    Device {
        url: String,
        what: &'static str,
        source: InitiatorError,
    },
    /// A device answered, but not as fencing needs.
    #[error("device {url}: {why}")]
    Check { url: String, why: String },
}

type Result<T, E = FenceScsiError> = std::result::Result<T, E>;

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(FenceScsiError::Invalid(msg.into()))
}

/// A SCSI persistent reservation key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PrKey(pub u64);

impl fmt::Display for PrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

/// Parses a key as sg_persist does: hex, with or without `0x`.
pub fn parse_key(s: &str) -> Result<PrKey> {
    let hex = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    if hex.is_empty() || hex.len() > 16 {
        return invalid(format!("bad key {s:?}: expected 1 to 16 hex digits"));
    }
    let Ok(v) = u64::from_str_radix(hex, 16) else {
        return invalid(format!("bad key {s:?}: not hex"));
    };
    if v == 0 {
        return invalid(format!("bad key {s:?}: zero is not a registration key"));
    }
    Ok(PrKey(v))
}

/// The key of node `node_id` in cluster `cluster`: fence-agents'
/// `"%.4s%.4d" % (md5(cluster).hexdigest(), node_id)`, read as hex.
pub fn derive_key(cluster: &str, node_id: u32) -> Result<PrKey> {
    if cluster.is_empty() {
        return invalid("empty cluster name");
    }
    if node_id == 0 || node_id > 9999 {
        return invalid(format!(
            "node id {node_id} out of range 1..9999 for a fence_scsi key"
        ));
    }
    let digest = Md5::digest(cluster.as_bytes());
    let hash: String = digest.iter().take(2).map(|b| format!("{b:02x}")).collect();
    parse_key(&format!("{hash}{node_id:04}"))
}

/// The ISID of a node: from `isid=` or derived from the initiator name
/// (random format, RFC 7143 10.12.5 T=10b), stable across runs.
pub fn node_isid(initiator: &str, given: Option<&str>) -> Result<[u8; 6]> {
    if let Some(s) = given {
        let s = s.trim().trim_start_matches("0x");
        if s.len() != 12 {
            return invalid(format!("bad isid {s:?}: expected 12 hex digits"));
        }
        let Ok(v) = u64::from_str_radix(s, 16) else {
            return invalid(format!("bad isid {s:?}: not hex"));
        };
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&v.to_be_bytes()[2..]);
        return Ok(isid);
    }
    let digest = Md5::digest(initiator.as_bytes());
    let mut isid = [0u8; 6];
    isid.copy_from_slice(&digest[..6]);
    isid[0] = 0x80 | (isid[0] & 0x3f);
    Ok(isid)
}

/// What the agent is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    On,
    Off,
    Status,
    Monitor,
    List,
    Metadata,
    ValidateAll,
}

impl Action {
    /// The action of `action=` (fence-agents' names and aliases).
    pub fn parse(s: &str) -> Result<Action> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "on" | "enable" => Action::On,
            "off" | "disable" => Action::Off,
            "status" => Action::Status,
            "monitor" => Action::Monitor,
            "list" => Action::List,
            "metadata" => Action::Metadata,
            "validate-all" => Action::ValidateAll,
            "reboot" => return invalid("action reboot is not supported by fence_scsi (use off, then restart the node and run on)"),
            other => return invalid(format!("unknown action {other:?}")),
        })
    }
}

/// Splits `devices=` (comma or space separated, as fence-agents allows).
pub fn split_devices(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Cluster name and node ids, from the options or cluster.conf (read once,
/// when first needed).
struct Cluster {
    opts: BTreeMap<String, String>,
    conf: Option<ClusterConf>,
}

impl Cluster {
    fn new(opts: BTreeMap<String, String>) -> Cluster {
        Cluster { opts, conf: None }
    }

    fn config_path(&self) -> PathBuf {
        PathBuf::from(
            self.opts
                .get("config")
                .map(String::as_str)
                .unwrap_or(DEFAULT_CONFIG),
        )
    }

    fn conf(&mut self) -> Result<&ClusterConf> {
        if self.conf.is_none() {
            let path = self.config_path();
            let conf = ClusterConf::load(&path)
                .map_err(|source| FenceScsiError::Config { path, source })?;
            self.conf = Some(conf);
        }
        Ok(self.conf.as_ref().expect("just loaded"))
    }

    fn name(&mut self) -> Result<String> {
        if let Some(n) = self.opts.get("cluster_name").filter(|n| !n.is_empty()) {
            return Ok(n.clone());
        }
        Ok(self.conf()?.name.clone())
    }

    /// A node id: the number itself, or the `<clusternode>` of that name.
    fn node_id(&mut self, node: &str) -> Result<u32> {
        if let Ok(id) = node.trim().parse::<u32>() {
            return Ok(id);
        }
        match self.conf()?.node_by_name(node.trim()) {
            Some(n) => Ok(n.id.0),
            None => invalid(format!("node {node:?} is not in the cluster configuration")),
        }
    }

    fn key_of(&mut self, node: &str) -> Result<PrKey> {
        let id = self.node_id(node)?;
        let name = self.name()?;
        derive_key(&name, id)
    }
}

/// The persistent reservation commands fencing uses: the seam between the
/// agent's logic and a logged-in LUN ([`Lun`]), faked in the tests.
pub trait PrDevice {
    fn register(&self, key: u64) -> Result<(), InitiatorError>;
    fn reserve(&self, key: u64, pr_type: u8) -> Result<(), InitiatorError>;
    /// PREEMPT AND ABORT (or PREEMPT where the target lacks it); true when
    /// the victim's tasks were aborted.
    fn fence(&self, key: u64, victim: u64, pr_type: u8) -> Result<bool, InitiatorError>;
    fn read_keys(&self) -> Result<Vec<u64>, InitiatorError>;
    /// The reservation holder's key, if any.
    fn holder(&self) -> Result<Option<u64>, InitiatorError>;
    /// Logs out.
    fn close(self) -> Result<(), InitiatorError>;
}

/// Every [`PersistentReserve`] LUN (our own session's, or a session
/// holder's through its socket) fences the same way.
impl<L: PersistentReserve> PrDevice for L {
    fn register(&self, key: u64) -> Result<(), InitiatorError> {
        self.pr_register(key)
    }
    fn reserve(&self, key: u64, pr_type: u8) -> Result<(), InitiatorError> {
        self.pr_reserve(key, pr_type)
    }
    fn fence(&self, key: u64, victim: u64, pr_type: u8) -> Result<bool, InitiatorError> {
        self.pr_fence(key, victim, pr_type)
    }
    fn read_keys(&self) -> Result<Vec<u64>, InitiatorError> {
        Ok(self.pr_read_keys()?.keys)
    }
    fn holder(&self) -> Result<Option<u64>, InitiatorError> {
        Ok(self.pr_read_reservation()?.holder.map(|(key, _)| key))
    }
    fn close(self) -> Result<(), InitiatorError> {
        PersistentReserve::close(self)
    }
}

/// What an action found, for the binary to print.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (exit 0).
    Done,
    /// `metadata`: print [`METADATA`].
    Metadata,
    /// `status`: "Status: ON" (exit 0) or "Status: OFF" (exit 2).
    Status { on: bool },
    /// `list`: the registered keys, as (device URL, key).
    Keys(Vec<(String, PrKey)>),
}

impl Outcome {
    /// The agent's exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Status { on: false } => 2,
            _ => 0,
        }
    }
}

/// One device's commands, with the device's URL in each error.
struct Device<'a, D> {
    url: &'a str,
    dev: &'a D,
}

impl<D: PrDevice> Device<'_, D> {
    fn wrap<T>(&self, what: &'static str, r: Result<T, InitiatorError>) -> Result<T> {
        r.map_err(|source| FenceScsiError::Device {
            url: self.url.to_string(),
            what,
            source,
        })
    }
    fn check(&self, why: String) -> FenceScsiError {
        FenceScsiError::Check {
            url: self.url.to_string(),
            why,
        }
    }
    fn keys(&self) -> Result<Vec<u64>> {
        self.wrap("READ KEYS", self.dev.read_keys())
    }
    fn holder(&self) -> Result<Option<u64>> {
        self.wrap("READ RESERVATION", self.dev.holder())
    }
}

/// Everything an action needs: the options and a way to open a device.
pub struct Agent<F> {
    action: Action,
    devices: Vec<String>,
    opts: BTreeMap<String, String>,
    cluster: Cluster,
    open: F,
}

/// A device as fence_scsi reaches it: a LUN file of the node's session
/// holder (the node's own I_T nexus, as sg_persist on `/dev/sdX`), or an
/// `iscsi://` URL logged in to here.
pub enum Opened {
    /// Through the session holder that serves the LUN file.
    Holder(HolderLun),
    /// A session of our own.
    Session(Lun),
}

impl PersistentReserve for Opened {
    fn execute_checked(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        in_len: u32,
    ) -> Result<Vec<u8>, InitiatorError> {
        match self {
            Opened::Holder(h) => h.execute_checked(cdb, data_out, in_len),
            Opened::Session(l) => l.execute_checked(cdb, data_out, in_len),
        }
    }
    fn close(self) -> Result<(), InitiatorError> {
        match self {
            // The holder's session stays: it carries the node's I/O.
            Opened::Holder(_) => Ok(()),
            Opened::Session(l) => l.close(),
        }
    }
}

/// Opens a device: a LUN file path through its session holder, an
/// `iscsi://` URL as this node's I_T nexus.
pub type OpenLun = Box<dyn Fn(&str) -> Result<Opened>>;

impl Agent<OpenLun> {
    /// An agent on iSCSI LUNs, from the options (stdin keys: `action`,
    /// `devices`, `port`, `key`, `nodename`, `cluster_name`, `config`,
    /// `initiator_name`, `isid`, `iscsi_state_dir`).
    pub fn from_options(opts: BTreeMap<String, String>) -> Result<Agent<OpenLun>> {
        let initiator = opts
            .get("initiator_name")
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(default_initiator_name);
        let isid = node_isid(&initiator, opts.get("isid").map(String::as_str))?;
        let state = StateDir::new(
            opts.get("iscsi_state_dir")
                .filter(|d| !d.is_empty())
                .cloned()
                .or_else(|| {
                    std::env::var("ISCSI_STATE_DIR")
                        .ok()
                        .filter(|d| !d.is_empty())
                })
                .unwrap_or_else(|| DEFAULT_ISCSI_STATE_DIR.to_string()),
        );
        let open: OpenLun = Box::new(move |dev| {
            if dev.starts_with("iscsi://") {
                open_lun(dev, &initiator, isid).map(Opened::Session)
            } else {
                HolderLun::open(Path::new(dev), &state)
                    .map(Opened::Holder)
                    .map_err(|source| FenceScsiError::Device {
                        url: dev.to_string(),
                        what: "no session holder",
                        source,
                    })
            }
        });
        Agent::with_opener(opts, open)
    }
}

/// Logs in to `url` with this initiator name and ISID and attaches the LUN.
fn open_lun(url: &str, initiator: &str, isid: [u8; 6]) -> Result<Lun> {
    let err = |what, source| FenceScsiError::Device {
        url: url.to_string(),
        what,
        source,
    };
    let parsed = IscsiUrl::parse(url).map_err(|e| err("bad URL", e))?;
    let opts = LunOptions {
        initiator_name: initiator.to_string(),
        command_timeout: Duration::from_secs(30),
        relogin_timeout: Duration::from_secs(10),
        ..LunOptions::default()
    };
    let mut cfg = session_config(&parsed, &opts).map_err(|e| err("session", e))?;
    cfg.login.isid = isid;
    let conn = Connection::connect(cfg).map_err(|e| err("cannot log in", e))?;
    Lun::attach(conn, parsed).map_err(|e| err("not ready", e))
}

impl<D: PrDevice, F: Fn(&str) -> Result<D>> Agent<F> {
    /// An agent whose devices are opened by `open`.
    pub fn with_opener(opts: BTreeMap<String, String>, open: F) -> Result<Agent<F>> {
        let action = Action::parse(opts.get("action").map(String::as_str).unwrap_or("off"))?;
        let devices = opts
            .get("devices")
            .map(|d| split_devices(d))
            .unwrap_or_default();
        Ok(Agent {
            action,
            devices,
            cluster: Cluster::new(opts.clone()),
            opts,
            open,
        })
    }

    /// The action asked for.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The devices acted on.
    pub fn devices(&self) -> &[String] {
        &self.devices
    }

    fn need_devices(&self) -> Result<()> {
        if self.devices.is_empty() {
            return invalid(
                "no devices given (devices=/dev/disk/by-path/...-lun-N or iscsi://host/iqn/lun,...)",
            );
        }
        Ok(())
    }

    /// The key acted on: `key=`, else derived from the plug (for `on`,
    /// the plug or else this node).
    pub fn target_key(&mut self) -> Result<PrKey> {
        if let Some(k) = self.opts.get("key").filter(|k| !k.is_empty()) {
            return parse_key(k);
        }
        let node = match (self.opts.get("port"), self.action) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Action::On) => match self.opts.get("nodename") {
                Some(n) => n.clone(),
                None => return invalid("no plug (node to unfence) and no nodename"),
            },
            _ => return invalid("no plug: which node? (port=NAME|ID, or key=HEX)"),
        };
        self.cluster.key_of(&node)
    }

    /// This node's key, for `off`.
    pub fn own_key(&mut self) -> Result<PrKey> {
        let Some(node) = self.opts.get("nodename").filter(|n| !n.is_empty()) else {
            return invalid("no nodename: the local node's name or id is needed to fence");
        };
        let node = node.clone();
        self.cluster.key_of(&node)
    }

    /// Opens every device, runs `f` on each, logs out.
    fn each_device<T>(&self, mut f: impl FnMut(&Device<'_, D>) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for url in &self.devices {
            let dev = (self.open)(url)?;
            let r = f(&Device { url, dev: &dev });
            let _ = dev.close();
            out.push(r?);
        }
        Ok(out)
    }

    /// Runs the action.
    pub fn run(&mut self) -> Result<Outcome> {
        match self.action {
            Action::Metadata => Ok(Outcome::Metadata),
            Action::ValidateAll => {
                self.need_devices()?;
                self.target_key()?;
                Ok(Outcome::Done)
            }
            Action::On => self.on(),
            Action::Off => self.off(),
            Action::Status => self.status(),
            Action::Monitor => self.monitor(),
            Action::List => self.list(),
        }
    }

    /// Unfence: register, then reserve where nobody holds the reservation.
    fn on(&mut self) -> Result<Outcome> {
        self.need_devices()?;
        let key = self.target_key()?;
        self.each_device(|d| {
            d.wrap("REGISTER AND IGNORE EXISTING KEY", d.dev.register(key.0))?;
            if !d.keys()?.contains(&key.0) {
                return Err(d.check(format!("key {key} is not registered after REGISTER")));
            }
            if d.holder()?.is_none() {
                if let Err(e) = d.dev.reserve(key.0, PR_TYPE) {
                    // Another node may have reserved meanwhile: fine if so.
                    if d.holder()?.is_none() {
                        return d.wrap("RESERVE", Err(e));
                    }
                }
            }
            tracing::info!(%key, url = d.url, "registered");
            Ok(())
        })?;
        Ok(Outcome::Done)
    }

    /// Fence: PREEMPT AND ABORT the victim's key with ours, then verify.
    fn off(&mut self) -> Result<Outcome> {
        self.need_devices()?;
        let victim = self.target_key()?;
        let own = self.own_key()?;
        if victim == own {
            return invalid(format!(
                "keys cannot be the same ({own}): a node cannot fence itself"
            ));
        }
        self.each_device(|d| {
            let keys = d.keys()?;
            if keys.contains(&victim.0) {
                if !keys.contains(&own.0) {
                    return Err(d.check(format!("our key {own} is not registered, cannot preempt {victim} (unfence this node first)")));
                }
                let aborted = d.wrap(
                    "PREEMPT AND ABORT",
                    d.dev.fence(own.0, victim.0, PR_TYPE),
                )?;
                tracing::info!(%victim, url = d.url, aborted, "preempted");
            }
            if d.keys()?.contains(&victim.0) {
                return Err(d.check(format!("key {victim} is still registered after PREEMPT")));
            }
            if d.holder()?.is_none() {
                return Err(d.check("no reservation on the device after fencing".into()));
            }
            Ok(())
        })?;
        Ok(Outcome::Done)
    }

    /// ON while the key is registered on any device, OFF when on none.
    fn status(&mut self) -> Result<Outcome> {
        self.need_devices()?;
        let key = self.target_key()?;
        let found = self.each_device(|d| Ok(d.keys()?.contains(&key.0)))?;
        Ok(Outcome::Status {
            on: found.iter().any(|f| *f),
        })
    }

    /// Every device logs in and answers READ KEYS.
    fn monitor(&mut self) -> Result<Outcome> {
        self.need_devices()?;
        self.each_device(|d| d.keys().map(|_| ()))?;
        Ok(Outcome::Done)
    }

    /// The registered keys of every device.
    fn list(&mut self) -> Result<Outcome> {
        self.need_devices()?;
        let lists = self.each_device(|d| d.keys())?;
        let keys = self
            .devices
            .iter()
            .zip(lists)
            .flat_map(|(url, keys)| keys.into_iter().map(|k| (url.clone(), PrKey(k))))
            .collect();
        Ok(Outcome::Keys(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn key_is_md5_prefix_and_decimal_node_id() {
        // md5("abc") = 900150983cd24fb0...
        let digest = Md5::digest(b"abc");
        assert_eq!(digest[0], 0x90);
        assert_eq!(derive_key("abc", 1).unwrap(), PrKey(0x9001_0001));
        // The node id is written in decimal (%.4d) and read back as hex.
        assert_eq!(derive_key("abc", 12).unwrap(), PrKey(0x9001_0012));
        assert_eq!(derive_key("abc", 9999).unwrap(), PrKey(0x9001_9999));
        assert_ne!(derive_key("abd", 1).unwrap(), derive_key("abc", 1).unwrap());
    }

    #[test]
    fn key_rejects_bad_ids_and_names() {
        assert!(derive_key("abc", 0).is_err());
        assert!(derive_key("abc", 10000).is_err());
        assert!(derive_key("", 1).is_err());
    }

    #[test]
    fn parse_key_as_sg_persist() {
        assert_eq!(parse_key("0x9001ABCD").unwrap(), PrKey(0x9001_abcd));
        assert_eq!(parse_key("90010001").unwrap(), PrKey(0x9001_0001));
        assert!(parse_key("").is_err());
        assert!(parse_key("0").is_err());
        assert!(parse_key("xyz").is_err());
        assert!(parse_key("12345678901234567").is_err());
        assert_eq!(PrKey(0x9001_0002).to_string(), "0x90010002");
    }

    #[test]
    fn stdin_options_last_wins_comments_and_plug_alias() {
        let o = crate::agent::parse_options(
            "# a comment\naction=status\nplug=node2\naction=off\nunknown=x\n\ndevices=iscsi://a/b/1, iscsi://c/d/2\n",
        );
        let a = Agent::from_options(o).unwrap();
        assert_eq!(a.action(), Action::Off);
        assert_eq!(a.opts.get("port").map(String::as_str), Some("node2"));
        assert_eq!(a.devices(), ["iscsi://a/b/1", "iscsi://c/d/2"]);
    }

    #[test]
    fn actions() {
        assert_eq!(Action::parse("ON").unwrap(), Action::On);
        assert_eq!(Action::parse("enable").unwrap(), Action::On);
        assert!(Action::parse("reboot").is_err());
        assert!(Action::parse("explode").is_err());
    }

    #[test]
    fn node_names_resolve_through_cluster_conf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.conf");
        std::fs::write(
            &path,
            r#"<cluster name="alpha" config_version="1">
  <clusternodes>
    <clusternode name="n1" nodeid="1"/>
    <clusternode name="n7" nodeid="7"/>
  </clusternodes>
</cluster>"#,
        )
        .unwrap();
        let mut opts = BTreeMap::new();
        opts.insert("config".to_string(), path.display().to_string());
        let mut c = Cluster::new(opts);
        assert_eq!(c.key_of("n7").unwrap(), derive_key("alpha", 7).unwrap());
        assert_eq!(c.key_of("1").unwrap(), derive_key("alpha", 1).unwrap());
        assert!(c.key_of("nobody").is_err());
    }

    #[test]
    fn isid_given_or_derived() {
        assert_eq!(
            node_isid("x", Some("400001370000")).unwrap(),
            [0x40, 0, 1, 0x37, 0, 0]
        );
        assert!(node_isid("x", Some("12")).is_err());
        let a = node_isid("iqn.a", None).unwrap();
        assert_eq!(a, node_isid("iqn.a", None).unwrap());
        assert_ne!(a, node_isid("iqn.b", None).unwrap());
        assert_eq!(a[0] & 0xc0, 0x80);
    }

    #[test]
    fn metadata_is_well_formed_xml() {
        let doc = roxmltree::Document::parse(METADATA).expect("metadata parses");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "resource-agent");
        assert_eq!(root.attribute("name"), Some("fence_scsi"));
        let actions: Vec<&str> = root
            .descendants()
            .filter(|n| n.has_tag_name("action"))
            .filter_map(|n| n.attribute("name"))
            .collect();
        for a in actions.iter() {
            Action::parse(a).expect("every advertised action parses");
        }
        assert_eq!(actions.len(), 7);
    }

    /// A device's registrations and reservation, shared by its opens.
    #[derive(Default)]
    struct Shared {
        keys: Vec<u64>,
        holder: Option<u64>,
    }

    #[derive(Clone, Default)]
    struct FakeDevice(Rc<RefCell<Shared>>);

    impl PrDevice for FakeDevice {
        fn register(&self, key: u64) -> Result<(), InitiatorError> {
            let mut s = self.0.borrow_mut();
            if !s.keys.contains(&key) {
                s.keys.push(key);
            }
            Ok(())
        }
        fn reserve(&self, key: u64, _: u8) -> Result<(), InitiatorError> {
            let mut s = self.0.borrow_mut();
            match s.holder {
                None if s.keys.contains(&key) => {
                    s.holder = Some(key);
                    Ok(())
                }
                _ => Err(InitiatorError::Protocol("reservation conflict".into())),
            }
        }
        fn fence(&self, key: u64, victim: u64, _: u8) -> Result<bool, InitiatorError> {
            let mut s = self.0.borrow_mut();
            s.keys.retain(|k| *k != victim);
            if s.holder == Some(victim) {
                s.holder = Some(key);
            }
            Ok(true)
        }
        fn read_keys(&self) -> Result<Vec<u64>, InitiatorError> {
            Ok(self.0.borrow().keys.clone())
        }
        fn holder(&self) -> Result<Option<u64>, InitiatorError> {
            Ok(self.0.borrow().holder)
        }
        fn close(self) -> Result<(), InitiatorError> {
            Ok(())
        }
    }

    fn run(dev: &FakeDevice, text: &str) -> Result<Outcome> {
        let opts =
            crate::agent::parse_options(&format!("devices=iscsi://h/t/1\ncluster_name=c\n{text}"));
        let dev = dev.clone();
        Agent::with_opener(opts, move |_: &str| Ok(dev.clone()))?.run()
    }

    #[test]
    fn on_off_status_list_against_a_fake_device() {
        let dev = FakeDevice::default();
        assert_eq!(run(&dev, "action=on\nnodename=1\n").unwrap(), Outcome::Done);
        assert_eq!(run(&dev, "action=on\nport=2\n").unwrap(), Outcome::Done);
        let (k1, k2) = (derive_key("c", 1).unwrap(), derive_key("c", 2).unwrap());
        assert_eq!(dev.0.borrow().holder, Some(k1.0), "the first one reserves");
        assert_eq!(
            run(&dev, "action=list\n").unwrap(),
            Outcome::Keys(vec![
                ("iscsi://h/t/1".into(), k1),
                ("iscsi://h/t/1".into(), k2)
            ])
        );
        let on = run(&dev, "action=status\nport=2\n").unwrap();
        assert_eq!((on.exit_code(), on), (0, Outcome::Status { on: true }));

        // A node cannot fence itself; node 1 fences node 2.
        assert!(run(&dev, "action=off\nport=1\nnodename=1\n").is_err());
        assert_eq!(
            run(&dev, "action=off\nport=2\nnodename=1\n").unwrap(),
            Outcome::Done
        );
        let off = run(&dev, "action=status\nport=2\n").unwrap();
        assert_eq!((off.exit_code(), off), (2, Outcome::Status { on: false }));

        // The fenced node 2 cannot fence node 1: its key is gone.
        let err = run(&dev, "action=off\nport=1\nnodename=2\n").unwrap_err();
        assert!(err.to_string().contains("not registered"), "{err}");
    }

    #[test]
    fn missing_options_are_clear_errors() {
        let dev = FakeDevice::default();
        let err = Agent::with_opener(
            crate::agent::parse_options("action=off\nport=2\nnodename=1\ncluster_name=x\n"),
            |_: &str| Ok(dev.clone()),
        )
        .unwrap()
        .run()
        .unwrap_err();
        assert!(err.to_string().contains("no devices"), "{err}");
        assert!(run(&dev, "action=status\n").is_err(), "no plug");
        assert!(run(&dev, "action=off\nport=2\n").is_err(), "no nodename");
        assert_eq!(run(&dev, "action=metadata\n").unwrap(), Outcome::Metadata);
    }
}
