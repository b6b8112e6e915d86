//! CCS: cluster.conf read into typed structs and validated.
//!
//! Unknown elements and attributes are kept in the generic [`Element`] tree
//! (`ClusterConf::root`) so later layers (rgmanager) can read their parts.

mod edit;
mod xml;

pub use edit::{add_node, create, del_node, NewNode};
pub use xml::{parse as parse_xml, Element};

use crate::ids::NodeId;
use std::collections::{BTreeMap, HashSet};

/// A cluster.conf that cannot be used, with the line it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster.conf line {line}: {msg}")]
pub struct ConfigError {
    /// 1-based line of the offending element.
    pub line: u32,
    /// What is wrong.
    pub msg: String,
}

impl ConfigError {
    fn at(line: u32, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            line,
            msg: msg.into(),
        }
    }
}

/// Highest nodeid accepted.
pub const MAX_NODEID: u32 = 255;
/// Highest votes a node may carry.
pub const MAX_VOTES: u32 = 255;
/// Default token timeout (ms) when `<totem token>` is absent: short enough to
/// detect a failure in under a second (see README for the measurements).
pub const DEFAULT_TOKEN_MS: u64 = 800;
/// Default UDP port.
pub const DEFAULT_PORT: u16 = 5405;

/// `<totem>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Totem {
    /// Failure detection timeout in ms.
    pub token_ms: u64,
}

/// `<cman>`: quorum options.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CmanConf {
    /// `expected_votes`, if given.
    pub expected_votes: Option<u32>,
    /// `two_node="1"`.
    pub two_node: bool,
    /// `wait_for_all`, if given (two_node implies it).
    pub wait_for_all: Option<bool>,
    /// `last_man_standing="1"`.
    pub last_man_standing: bool,
    /// `last_man_standing_window` in ms (default 10000).
    pub lms_window_ms: u64,
    /// `port` (default 5405).
    pub port: u16,
}

/// `<fence_daemon>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceDaemon {
    /// Seconds to wait after a failure before fencing.
    pub post_fail_delay_s: u64,
    /// Seconds to wait after joining before fencing absent nodes.
    pub post_join_delay_s: u64,
}

/// A `<device>` inside a node's fence method or `<unfence>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRef {
    /// The `<fencedevice>` it names.
    pub name: String,
    /// Other attributes (nodename, port, delay ...), passed to the agent.
    pub attrs: BTreeMap<String, String>,
}

/// A `<method>`: all its devices must succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceMethod {
    /// Method name.
    pub name: String,
    /// Devices in order.
    pub devices: Vec<DeviceRef>,
}

/// A `<clusternode>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// Node name (host name or IP address).
    pub name: String,
    /// Node id.
    pub id: NodeId,
    /// Votes (default 1).
    pub votes: u32,
    /// Fence methods in order.
    pub fence: Vec<FenceMethod>,
    /// Unfence devices.
    pub unfence: Vec<DeviceRef>,
    /// Line in the file.
    pub line: u32,
}

/// A `<fencedevice>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceDevice {
    /// Device name.
    pub name: String,
    /// Agent program (`fence_manual`, `fence_lab` ...).
    pub agent: String,
    /// Other attributes (ipaddr, login ...), passed to the agent.
    pub attrs: BTreeMap<String, String>,
}

/// A `<failoverdomain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverDomain {
    /// Name.
    pub name: String,
    /// `ordered="1"`.
    pub ordered: bool,
    /// `restricted="1"`.
    pub restricted: bool,
    /// `nofailback="1"`.
    pub nofailback: bool,
    /// (node name, priority) in file order.
    pub nodes: Vec<(String, u32)>,
}

/// `<rm>`: kept mostly generic for rgmanager.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Rm {
    /// Failover domains.
    pub failover_domains: Vec<FailoverDomain>,
    /// Children of `<resources>`.
    pub resources: Vec<Element>,
    /// `<service>` elements.
    pub services: Vec<Element>,
}

/// A validated cluster.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConf {
    /// Cluster name.
    pub name: String,
    /// `config_version`.
    pub config_version: u64,
    /// `<totem>`.
    pub totem: Totem,
    /// `<cman>`.
    pub cman: CmanConf,
    /// `<fence_daemon>`.
    pub fence_daemon: FenceDaemon,
    /// `<clusternodes>`.
    pub nodes: Vec<ClusterNode>,
    /// `<fencedevices>`.
    pub fence_devices: Vec<FenceDevice>,
    /// `<rm>`, if present.
    pub rm: Option<Rm>,
    /// The whole document, unknown parts included.
    pub root: Element,
}

impl ClusterConf {
    /// Parses and validates cluster.conf text.
    pub fn parse(text: &str) -> Result<ClusterConf, ConfigError> {
        Self::from_element(xml::parse(text)?)
    }

    /// Reads and validates a cluster.conf file.
    pub fn load(path: &std::path::Path) -> Result<ClusterConf, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::at(0, format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Validates an element tree.
    pub fn from_element(root: Element) -> Result<ClusterConf, ConfigError> {
        if root.name != "cluster" {
            return Err(ConfigError::at(
                root.line,
                format!("root element is <{}>, expected <cluster>", root.name),
            ));
        }
        let name = required(&root, "name")?.to_string();
        let config_version = num(&root, "config_version", 0, u64::MAX)?.unwrap_or(0);
        let totem = read_totem(&root)?;
        let cman = read_cman(&root)?;
        let fence_daemon = read_fence_daemon(&root)?;
        let fence_devices = read_fence_devices(&root)?;
        let nodes = read_nodes(&root, &fence_devices)?;
        let rm = root.child("rm").map(|rm| read_rm(rm, &nodes)).transpose()?;
        let conf = ClusterConf {
            name,
            config_version,
            totem,
            cman,
            fence_daemon,
            nodes,
            fence_devices,
            rm,
            root,
        };
        conf.check_two_node()?;
        Ok(conf)
    }

    fn check_two_node(&self) -> Result<(), ConfigError> {
        let line = self
            .root
            .child("cman")
            .map(|c| c.line)
            .unwrap_or(self.root.line);
        if self.cman.two_node && self.nodes.len() != 2 {
            return Err(ConfigError::at(
                line,
                format!(
                    "two_node=\"1\" needs exactly 2 nodes, found {}",
                    self.nodes.len()
                ),
            ));
        }
        Ok(())
    }

    /// Node by name.
    pub fn node_by_name(&self, name: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Node by id.
    pub fn node(&self, id: NodeId) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Fence device by name.
    pub fn fence_device(&self, name: &str) -> Option<&FenceDevice> {
        self.fence_devices.iter().find(|d| d.name == name)
    }

    /// The document text (regenerated from the tree).
    pub fn to_document(&self) -> String {
        self.root.to_document()
    }
}

fn required<'a>(el: &'a Element, key: &str) -> Result<&'a str, ConfigError> {
    match el.attr(key) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError::at(
            el.line,
            format!("<{}> has no {} attribute", el.name, key),
        )),
    }
}

fn num<T>(el: &Element, key: &str, min: T, max: T) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(v) = el.attr(key) else {
        return Ok(None);
    };
    let n: T = v.trim().parse().map_err(|_| {
        ConfigError::at(
            el.line,
            format!("<{}> {}=\"{}\" is not a number", el.name, key, v),
        )
    })?;
    if n < min || n > max {
        return Err(ConfigError::at(
            el.line,
            format!(
                "<{}> {}={} is out of range {}..={}",
                el.name, key, n, min, max
            ),
        ));
    }
    Ok(Some(n))
}

fn flag(el: &Element, key: &str) -> Result<Option<bool>, ConfigError> {
    Ok(num::<u32>(el, key, 0, 1)?.map(|v| v == 1))
}

fn read_totem(root: &Element) -> Result<Totem, ConfigError> {
    let token_ms = match root.child("totem") {
        Some(t) => num(t, "token", 50, 600_000)?.unwrap_or(DEFAULT_TOKEN_MS),
        None => DEFAULT_TOKEN_MS,
    };
    Ok(Totem { token_ms })
}

fn read_cman(root: &Element) -> Result<CmanConf, ConfigError> {
    let Some(c) = root.child("cman") else {
        return Ok(CmanConf {
            lms_window_ms: 10_000,
            port: DEFAULT_PORT,
            ..Default::default()
        });
    };
    Ok(CmanConf {
        expected_votes: num(c, "expected_votes", 1, 65_535)?,
        two_node: flag(c, "two_node")?.unwrap_or(false),
        wait_for_all: flag(c, "wait_for_all")?,
        last_man_standing: flag(c, "last_man_standing")?.unwrap_or(false),
        lms_window_ms: num(c, "last_man_standing_window", 0, 3_600_000)?.unwrap_or(10_000),
        port: num(c, "port", 1, 65_535)?.unwrap_or(DEFAULT_PORT),
    })
}

fn read_fence_daemon(root: &Element) -> Result<FenceDaemon, ConfigError> {
    let fd = root.child("fence_daemon");
    let get = |key, default| match fd {
        Some(el) => Ok(num(el, key, 0, 86_400)?.unwrap_or(default)),
        None => Ok(default),
    };
    Ok(FenceDaemon {
        post_fail_delay_s: get("post_fail_delay", 0)?,
        post_join_delay_s: get("post_join_delay", 6)?,
    })
}

fn other_attrs(el: &Element, skip: &[&str]) -> BTreeMap<String, String> {
    el.attrs
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn read_fence_devices(root: &Element) -> Result<Vec<FenceDevice>, ConfigError> {
    let mut out: Vec<FenceDevice> = Vec::new();
    let Some(fds) = root.child("fencedevices") else {
        return Ok(out);
    };
    for d in fds.children_named("fencedevice") {
        let name = required(d, "name")?.to_string();
        if out.iter().any(|o| o.name == name) {
            return Err(ConfigError::at(
                d.line,
                format!("fence device {name} defined twice"),
            ));
        }
        out.push(FenceDevice {
            name,
            agent: required(d, "agent")?.to_string(),
            attrs: other_attrs(d, &["name", "agent"]),
        });
    }
    Ok(out)
}

fn read_device_ref(d: &Element, devices: &[FenceDevice]) -> Result<DeviceRef, ConfigError> {
    let name = required(d, "name")?.to_string();
    if !devices.iter().any(|f| f.name == name) {
        return Err(ConfigError::at(
            d.line,
            format!("fence device {name} is not defined in <fencedevices>"),
        ));
    }
    Ok(DeviceRef {
        name,
        attrs: other_attrs(d, &["name"]),
    })
}

fn read_node(n: &Element, devices: &[FenceDevice]) -> Result<ClusterNode, ConfigError> {
    let name = required(n, "name")?.to_string();
    let id = num(n, "nodeid", 1, MAX_NODEID)?
        .ok_or_else(|| ConfigError::at(n.line, format!("<clusternode> {name} has no nodeid")))?;
    let votes = num(n, "votes", 0, MAX_VOTES)?.unwrap_or(1);
    let mut fence = Vec::new();
    if let Some(f) = n.child("fence") {
        for m in f.children_named("method") {
            let devices = m
                .children_named("device")
                .map(|d| read_device_ref(d, devices))
                .collect::<Result<Vec<_>, _>>()?;
            fence.push(FenceMethod {
                name: m.attr("name").unwrap_or("").to_string(),
                devices,
            });
        }
    }
    let unfence = match n.child("unfence") {
        Some(u) => u
            .children_named("device")
            .map(|d| read_device_ref(d, devices))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(ClusterNode {
        name,
        id: NodeId(id),
        votes,
        fence,
        unfence,
        line: n.line,
    })
}

fn read_nodes(root: &Element, devices: &[FenceDevice]) -> Result<Vec<ClusterNode>, ConfigError> {
    let Some(cn) = root.child("clusternodes") else {
        return Err(ConfigError::at(
            root.line,
            "<cluster> has no <clusternodes>",
        ));
    };
    let mut out: Vec<ClusterNode> = Vec::new();
    for n in cn.children_named("clusternode") {
        let node = read_node(n, devices)?;
        if out.iter().any(|o| o.id == node.id) {
            return Err(ConfigError::at(
                n.line,
                format!("duplicate nodeid {}", node.id),
            ));
        }
        if out.iter().any(|o| o.name == node.name) {
            return Err(ConfigError::at(
                n.line,
                format!("duplicate node name {}", node.name),
            ));
        }
        out.push(node);
    }
    if out.is_empty() {
        return Err(ConfigError::at(
            cn.line,
            "<clusternodes> lists no <clusternode>",
        ));
    }
    Ok(out)
}

fn read_domain(d: &Element, nodes: &[ClusterNode]) -> Result<FailoverDomain, ConfigError> {
    let name = required(d, "name")?.to_string();
    let mut members = Vec::new();
    let mut seen = HashSet::new();
    for m in d.children_named("failoverdomainnode") {
        let node = required(m, "name")?.to_string();
        if !nodes.iter().any(|n| n.name == node) {
            return Err(ConfigError::at(
                m.line,
                format!("failover domain {name} names unknown node {node}"),
            ));
        }
        if !seen.insert(node.clone()) {
            return Err(ConfigError::at(
                m.line,
                format!("failover domain {name} lists node {node} twice"),
            ));
        }
        let prio = num(m, "priority", 1, 100)?.unwrap_or(1);
        members.push((node, prio));
    }
    Ok(FailoverDomain {
        name,
        ordered: flag(d, "ordered")?.unwrap_or(false),
        restricted: flag(d, "restricted")?.unwrap_or(false),
        nofailback: flag(d, "nofailback")?.unwrap_or(false),
        nodes: members,
    })
}

fn read_rm(rm: &Element, nodes: &[ClusterNode]) -> Result<Rm, ConfigError> {
    let mut out = Rm::default();
    if let Some(fds) = rm.child("failoverdomains") {
        for d in fds.children_named("failoverdomain") {
            let dom = read_domain(d, nodes)?;
            if out.failover_domains.iter().any(|o| o.name == dom.name) {
                return Err(ConfigError::at(
                    d.line,
                    format!("failover domain {} defined twice", dom.name),
                ));
            }
            out.failover_domains.push(dom);
        }
    }
    if let Some(r) = rm.child("resources") {
        out.resources = r.children.clone();
    }
    out.services = rm.children_named("service").cloned().collect();
    for s in &out.services {
        required(s, "name")?;
        if let Some(dom) = s.attr("domain") {
            if !out.failover_domains.iter().any(|d| d.name == dom) {
                return Err(ConfigError::at(
                    s.line,
                    format!(
                        "service {} names unknown failover domain {dom}",
                        s.attr("name").unwrap_or("")
                    ),
                ));
            }
        }
    }
    Ok(out)
}
