//! fence_scsi: I/O fencing with SCSI-3 persistent reservations over iSCSI,
//! as ClusterLabs fence-agents `agents/scsi/fence_scsi.py` does it with
//! sg_persist.
//!
//! Each node registers a key derived from the cluster name and its node id
//! (`%.4s%.4d` of md5(cluster name) and the id, read as hex) on every shared
//! device, and the first one reserves it Write Exclusive – Registrants Only
//! (type 5), so only registered nodes may write. Fencing a node is a
//! PREEMPT AND ABORT of its key with our own key: its writes then end with
//! RESERVATION CONFLICT.
//!
//! Options come as `key=value` lines on stdin (the fence agent protocol) or,
//! when there are command-line arguments, from those instead. Devices are
//! `iscsi://` URLs. Registrations belong to an I_T nexus (initiator name +
//! ISID), so a node must log in here with the same initiator name and ISID as
//! its I/O sessions: `initiator_name=` (default: `$ISCSI_INITIATOR_NAME` or
//! one from the host name) and `isid=` (12 hex digits; default derived from
//! the initiator name).
//!
//! Exit codes: 0 success (status: registered), 1 failure, 2 status: not
//! registered (fenced).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use iscsi::initiator::cdb::pr_type;
use iscsi::initiator::lun::{default_initiator_name, session_config, LunOptions};
use iscsi::initiator::{Connection, IscsiUrl, Lun};
use md5::{Digest, Md5};

/// The reservation type fence_scsi uses: Write Exclusive – Registrants Only.
const PR_TYPE: u8 = pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY;

/// Where the cluster configuration is read when no cluster name is given.
const DEFAULT_CONFIG: &str = "/etc/cluster/cluster.conf";

const METADATA: &str = r#"<?xml version="1.0" ?>
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
		<shortdesc lang="en">Comma separated list of iscsi:// URLs of the shared LUNs. Each must support SCSI-3 persistent reservations.</shortdesc>
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

/// A SCSI persistent reservation key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PrKey(u64);

impl fmt::Display for PrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

/// Parses a key as sg_persist does: hex, with or without `0x`.
fn parse_key(s: &str) -> Result<PrKey> {
    let hex = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    if hex.is_empty() || hex.len() > 16 {
        bail!("bad key {s:?}: expected 1 to 16 hex digits");
    }
    let v = u64::from_str_radix(hex, 16).map_err(|_| anyhow!("bad key {s:?}: not hex"))?;
    if v == 0 {
        bail!("bad key {s:?}: zero is not a registration key");
    }
    Ok(PrKey(v))
}

/// The key of node `node_id` in cluster `cluster`: fence-agents'
/// `"%.4s%.4d" % (md5(cluster).hexdigest(), node_id)`, read as hex.
fn derive_key(cluster: &str, node_id: u32) -> Result<PrKey> {
    if cluster.is_empty() {
        bail!("empty cluster name");
    }
    if node_id == 0 || node_id > 9999 {
        bail!("node id {node_id} out of range 1..9999 for a fence_scsi key");
    }
    let digest = Md5::digest(cluster.as_bytes());
    let hash: String = digest.iter().take(2).map(|b| format!("{b:02x}")).collect();
    parse_key(&format!("{hash}{node_id:04}"))
}

/// The ISID of a node: from `isid=` or derived from the initiator name
/// (random format, RFC 7143 10.12.5 T=10b), stable across runs.
fn node_isid(initiator: &str, given: Option<&str>) -> Result<[u8; 6]> {
    if let Some(s) = given {
        let s = s.trim().trim_start_matches("0x");
        if s.len() != 12 {
            bail!("bad isid {s:?}: expected 12 hex digits");
        }
        let v = u64::from_str_radix(s, 16).map_err(|_| anyhow!("bad isid {s:?}: not hex"))?;
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
enum Action {
    On,
    Off,
    Status,
    Monitor,
    List,
    Metadata,
    ValidateAll,
}

impl Action {
    fn parse(s: &str) -> Result<Action> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "on" | "enable" => Action::On,
            "off" | "disable" => Action::Off,
            "status" => Action::Status,
            "monitor" => Action::Monitor,
            "list" => Action::List,
            "metadata" => Action::Metadata,
            "validate-all" => Action::ValidateAll,
            "reboot" => bail!("action reboot is not supported by fence_scsi (use off, then restart the node and run on)"),
            other => bail!("unknown action {other:?}"),
        })
    }
}

/// Command-line options as the stdin keys they stand for.
fn parse_cli(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let key = match name {
            "-o" | "--action" => "action",
            "-n" | "--plug" | "--port" => "port",
            "-d" | "--devices" => "devices",
            "-k" | "--key" => "key",
            "--nodename" => "nodename",
            "--cluster-name" => "cluster_name",
            "-c" | "--config" => "config",
            "--initiator-name" => "initiator_name",
            "--isid" => "isid",
            "-h" | "--help" => {
                out.insert("help".to_string(), String::new());
                continue;
            }
            other => bail!("unknown option {other:?} (try --help)"),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| anyhow!("option {name} needs a value"))?
                .clone(),
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Splits `devices=` (comma or space separated, as fence-agents allows).
fn split_devices(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Cluster name and node ids, from the options or cluster.conf.
struct Cluster {
    opts: BTreeMap<String, String>,
    conf: Option<cman::config::ClusterConf>,
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

    fn conf(&mut self) -> Result<&cman::config::ClusterConf> {
        if self.conf.is_none() {
            let path = self.config_path();
            let conf = cman::config::ClusterConf::load(&path)
                .with_context(|| format!("cannot read cluster configuration {}", path.display()))?;
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
        let conf = self.conf()?;
        conf.node_by_name(node.trim())
            .map(|n| n.id.0)
            .ok_or_else(|| anyhow!("node {node:?} is not in the cluster configuration"))
    }

    fn key_of(&mut self, node: &str) -> Result<PrKey> {
        let id = self.node_id(node)?;
        let name = self.name()?;
        derive_key(&name, id)
    }
}

/// Everything an action needs.
struct Agent {
    action: Action,
    devices: Vec<String>,
    opts: BTreeMap<String, String>,
    cluster: Cluster,
    initiator: String,
    isid: [u8; 6],
}

impl Agent {
    fn from_options(opts: BTreeMap<String, String>) -> Result<Agent> {
        let action = Action::parse(opts.get("action").map(String::as_str).unwrap_or("off"))?;
        let devices = opts
            .get("devices")
            .map(|d| split_devices(d))
            .unwrap_or_default();
        let initiator = opts
            .get("initiator_name")
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(default_initiator_name);
        let isid = node_isid(&initiator, opts.get("isid").map(String::as_str))?;
        Ok(Agent {
            action,
            devices,
            cluster: Cluster::new(opts.clone()),
            opts,
            initiator,
            isid,
        })
    }

    fn need_devices(&self) -> Result<()> {
        if self.devices.is_empty() {
            bail!("no devices given (devices=iscsi://host/iqn/lun,...)");
        }
        Ok(())
    }

    /// The key acted on: `key=`, else derived from the plug (for `on`,
    /// the plug or else this node).
    fn target_key(&mut self) -> Result<PrKey> {
        if let Some(k) = self.opts.get("key").filter(|k| !k.is_empty()) {
            return parse_key(k);
        }
        let node = match (self.opts.get("port"), self.action) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Action::On) => self
                .opts
                .get("nodename")
                .cloned()
                .ok_or_else(|| anyhow!("no plug (node to unfence) and no nodename"))?,
            _ => bail!("no plug: which node? (port=NAME|ID, or key=HEX)"),
        };
        self.cluster.key_of(&node)
    }

    /// This node's key, for `off`.
    fn own_key(&mut self) -> Result<PrKey> {
        let node = self
            .opts
            .get("nodename")
            .filter(|n| !n.is_empty())
            .cloned()
            .ok_or_else(|| {
                anyhow!("no nodename: the local node's name or id is needed to fence")
            })?;
        self.cluster.key_of(&node)
    }

    fn open(&self, url: &str) -> Result<Lun> {
        let parsed = IscsiUrl::parse(url).with_context(|| format!("device {url}"))?;
        let opts = LunOptions {
            initiator_name: self.initiator.clone(),
            command_timeout: Duration::from_secs(30),
            relogin_timeout: Duration::from_secs(10),
            ..LunOptions::default()
        };
        let mut cfg = session_config(&parsed, &opts).with_context(|| format!("device {url}"))?;
        cfg.login.isid = self.isid;
        let conn = Connection::connect(cfg).with_context(|| format!("cannot log in to {url}"))?;
        Lun::attach(conn, parsed).with_context(|| format!("device {url} is not ready"))
    }

    /// Opens every device, runs `f` on each, logs out.
    fn each_device<T>(&self, mut f: impl FnMut(&str, &Lun) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for url in &self.devices {
            let lun = self.open(url)?;
            let r = f(url, &lun);
            let _ = lun.close();
            out.push(r.with_context(|| format!("device {url}"))?);
        }
        Ok(out)
    }

    fn run(&mut self) -> Result<ExitCode> {
        match self.action {
            Action::Metadata => {
                print!("{METADATA}");
                Ok(ExitCode::SUCCESS)
            }
            Action::ValidateAll => {
                self.need_devices()?;
                self.target_key()?;
                Ok(ExitCode::SUCCESS)
            }
            Action::On => self.on(),
            Action::Off => self.off(),
            Action::Status => self.status(),
            Action::Monitor => self.monitor(),
            Action::List => self.list(),
        }
    }

    /// Unfence: register, then reserve where nobody holds the reservation.
    fn on(&mut self) -> Result<ExitCode> {
        self.need_devices()?;
        let key = self.target_key()?;
        self.each_device(|url, lun| {
            lun.pr_register(key.0)
                .context("REGISTER AND IGNORE EXISTING KEY")?;
            if !lun.pr_read_keys()?.keys.contains(&key.0) {
                bail!("key {key} is not registered after REGISTER");
            }
            if lun.pr_read_reservation()?.holder.is_none() {
                if let Err(e) = lun.pr_reserve(key.0, PR_TYPE) {
                    // Another node may have reserved meanwhile: fine if so.
                    if lun.pr_read_reservation()?.holder.is_none() {
                        return Err(anyhow!(e).context("RESERVE"));
                    }
                }
            }
            tracing::info!(%key, url, "registered");
            Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }

    /// Fence: PREEMPT AND ABORT the victim's key with ours, then verify.
    fn off(&mut self) -> Result<ExitCode> {
        self.need_devices()?;
        let victim = self.target_key()?;
        let own = self.own_key()?;
        if victim == own {
            bail!("keys cannot be the same ({own}): a node cannot fence itself");
        }
        self.each_device(|url, lun| {
            let keys = lun.pr_read_keys()?.keys;
            if keys.contains(&victim.0) {
                if !keys.contains(&own.0) {
                    bail!("our key {own} is not registered, cannot preempt {victim} (unfence this node first)");
                }
                let aborted = lun
                    .pr_fence(own.0, victim.0, PR_TYPE)
                    .context("PREEMPT AND ABORT")?;
                tracing::info!(%victim, url, aborted, "preempted");
            }
            if lun.pr_read_keys()?.keys.contains(&victim.0) {
                bail!("key {victim} is still registered after PREEMPT");
            }
            if lun.pr_read_reservation()?.holder.is_none() {
                bail!("no reservation on the device after fencing");
            }
            Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }

    /// ON (0) while the key is registered on any device, OFF (2) when on none.
    fn status(&mut self) -> Result<ExitCode> {
        self.need_devices()?;
        let key = self.target_key()?;
        let found = self.each_device(|_, lun| Ok(lun.pr_read_keys()?.keys.contains(&key.0)))?;
        if found.iter().any(|f| *f) {
            println!("Status: ON");
            Ok(ExitCode::SUCCESS)
        } else {
            println!("Status: OFF");
            Ok(ExitCode::from(2))
        }
    }

    /// Every device logs in and answers TEST UNIT READY and READ KEYS.
    fn monitor(&mut self) -> Result<ExitCode> {
        self.need_devices()?;
        self.each_device(|_, lun| lun.pr_read_keys().map(|_| ()).map_err(Into::into))?;
        Ok(ExitCode::SUCCESS)
    }

    /// The registered keys of every device, one `url key` line each.
    fn list(&mut self) -> Result<ExitCode> {
        self.need_devices()?;
        let lists = self.each_device(|_, lun| Ok(lun.pr_read_keys()?.keys))?;
        for (url, keys) in self.devices.iter().zip(lists) {
            for k in keys {
                println!("{url} {}", PrKey(k));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

const USAGE: &str = "usage: fence_scsi [-o ACTION] [-n NODE] -d iscsi://HOST/IQN/LUN[,...] \
[-k KEY] [--nodename LOCAL] [--cluster-name NAME | -c cluster.conf] \
[--initiator-name IQN] [--isid HEX12]
  with no arguments, reads key=value lines on stdin
  actions: on off status monitor list metadata validate-all";

fn read_options() -> Result<BTreeMap<String, String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read options on stdin")?;
        Ok(cman::agent::parse_options(&text))
    } else {
        parse_cli(&args)
    }
}

fn main() -> ExitCode {
    tools::init_logging();
    let result = read_options().and_then(|opts| {
        if opts.contains_key("help") {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Agent::from_options(opts)?.run()
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fence_scsi: Failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_md5_prefix_and_decimal_node_id() {
        // md5("") = d41d8cd9..., md5("abc") = 900150983cd24fb0...
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
        let o = cman::agent::parse_options(
            "# a comment\naction=status\nplug=node2\naction=off\nunknown=x\n\ndevices=iscsi://a/b/1, iscsi://c/d/2\n",
        );
        let a = Agent::from_options(o).unwrap();
        assert_eq!(a.action, Action::Off);
        assert_eq!(a.opts.get("port").map(String::as_str), Some("node2"));
        assert_eq!(a.devices, vec!["iscsi://a/b/1", "iscsi://c/d/2"]);
    }

    #[test]
    fn cli_options_map_to_stdin_keys() {
        let args: Vec<String> = [
            "-o",
            "off",
            "--plug=2",
            "--devices",
            "iscsi://h/t/1",
            "--nodename",
            "1",
            "--cluster-name",
            "c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_cli(&args).unwrap();
        assert_eq!(o["action"], "off");
        assert_eq!(o["port"], "2");
        assert_eq!(o["devices"], "iscsi://h/t/1");
        let mut a = Agent::from_options(o).unwrap();
        assert_eq!(a.target_key().unwrap(), derive_key("c", 2).unwrap());
        assert_eq!(a.own_key().unwrap(), derive_key("c", 1).unwrap());
        assert!(parse_cli(&["--bogus".to_string()]).is_err());
        assert!(parse_cli(&["-o".to_string()]).is_err());
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
        assert!(tags_balance(METADATA));
        assert!(!tags_balance("<a><b></a></b>"));
    }

    /// Checks tags balance (no XML crate in this package).
    fn tags_balance(s: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        for part in s.split('<').skip(1) {
            let tag = part.split('>').next().unwrap_or("");
            if tag.starts_with('?') || tag.ends_with('/') {
                continue;
            }
            let name = tag
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            if tag.starts_with('/') {
                if stack.pop().as_deref() != Some(name.as_str()) {
                    return false;
                }
            } else {
                stack.push(name);
            }
        }
        stack.is_empty()
    }
}
