//! The `<rm>` section of cluster.conf: failover domains, shared resources
//! and services (service.sh's attributes), parsed into plain data.
//!
//! A service's children are either references to a shared resource
//! (`<ip ref="192.168.10.254"/>`: the resource of that type whose primary
//! attribute has that value; attributes written beside `ref` override the
//! shared ones) or inline resources; both may hold children of their own.
//! Every error names the line of cluster.conf it comes from.

use std::collections::{BTreeMap, BTreeSet};

/// An error in the `<rm>` section, with its line in cluster.conf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster.conf line {line}: {msg}")]
pub struct ConfigError {
    /// 1-based line.
    pub line: u32,
    /// What is wrong.
    pub msg: String,
}

/// What to do when a service's status check fails (service.sh `recovery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Recovery {
    /// Restart in place (the default), relocating past `max_restarts`.
    Restart,
    /// Move to another node.
    Relocate,
    /// Stop and disable.
    Disable,
}

/// A failover domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    /// Name.
    pub name: String,
    /// Members are preferred by priority (lower first).
    pub ordered: bool,
    /// Services never run outside the domain.
    pub restricted: bool,
    /// A running service does not move back to a better node.
    pub nofailback: bool,
    /// Members: node name and priority (1..100; 1 when unordered).
    pub nodes: Vec<(String, u32)>,
}

/// A resource in a service's tree, references resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Agent type: the element name (`ip`, `script`, `fs`...).
    pub rtype: String,
    /// Attributes (the agent's parameters).
    pub attrs: BTreeMap<String, String>,
    /// Children, in configuration order.
    pub children: Vec<Resource>,
    /// `<action name=... interval=... depth=... timeout=...>` overrides of
    /// the agent's metadata, as rgmanager allows inside a resource.
    pub actions: Vec<ActionOverride>,
    /// Line of the element in cluster.conf.
    pub line: u32,
}

/// An `<action>` written inside a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionOverride {
    /// Action name (`status`, `start`...).
    pub name: String,
    /// Status depth it applies to.
    pub depth: Option<u32>,
    /// Interval, seconds.
    pub interval_s: Option<u64>,
    /// Timeout, seconds.
    pub timeout_s: Option<u64>,
}

/// A duration as rgmanager writes them: `20`, `20s`, `1m`, `1h`.
pub fn parse_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.char_indices().last()? {
        (i, 's') => (&v[..i], 1),
        (i, 'm') => (&v[..i], 60),
        (i, 'h') => (&v[..i], 3600),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

fn parse_action(e: roxmltree::Node<'_, '_>) -> Res<ActionOverride> {
    let Some(name) = e.attribute("name").filter(|n| !n.is_empty()) else {
        return err(e, "an <action> needs a name");
    };
    let secs = |attr: &str| -> Res<Option<u64>> {
        match e.attribute(attr) {
            None => Ok(None),
            Some(v) => match parse_seconds(v) {
                Some(s) => Ok(Some(s)),
                None => err(e, format!("{attr}=\"{v}\" is not a duration")),
            },
        }
    };
    Ok(ActionOverride {
        name: name.to_string(),
        depth: match e.attribute("depth") {
            None => None,
            Some(_) => Some(parse_num(e, "depth", 0)?),
        },
        interval_s: secs("interval")?,
        timeout_s: secs("timeout")?,
    })
}

impl Resource {
    /// `type:primary`, as `OCF_RESOURCE_INSTANCE`.
    pub fn instance(&self) -> String {
        let key = primary_attr(&self.rtype);
        let v = self.attrs.get(key).or_else(|| self.attrs.get("name"));
        format!("{}:{}", self.rtype, v.map(String::as_str).unwrap_or(""))
    }
}

/// How a service follows the one it depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DependMode {
    /// Stopped when the dependency stops (the default).
    Hard,
    /// Only needs it to start.
    Soft,
}

/// A service (`<service>`) with service.sh's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `service:NAME`.
    pub name: String,
    /// Failover domain.
    pub domain: Option<String>,
    /// Started when the cluster forms (false: comes up disabled).
    pub autostart: bool,
    /// Runs only on a node running nothing else.
    pub exclusive: bool,
    /// Status failure policy.
    pub recovery: Recovery,
    /// Restarts allowed within `restart_expire_time_s` (0: no limit).
    pub max_restarts: u32,
    /// Window of `max_restarts`, seconds (0: restarts never expire).
    pub restart_expire_time_s: u64,
    /// A service that must be running first (`service:NAME`).
    pub depend: Option<String>,
    /// Hard or soft dependency.
    pub depend_mode: DependMode,
    /// The resource tree.
    pub children: Vec<Resource>,
    /// Line of the element.
    pub line: u32,
}

/// The parsed `<rm>` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RmConfig {
    /// Failover domains by name.
    pub domains: BTreeMap<String, Domain>,
    /// Services in configuration order.
    pub services: Vec<ServiceConfig>,
    /// `config_version` of the file.
    pub config_version: u64,
    /// `name` of the cluster.
    pub cluster_name: String,
}

impl RmConfig {
    /// The service called `name` (with or without `service:`).
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        let full = full_name(name);
        self.services.iter().find(|s| s.name == full)
    }
}

/// `NAME` → `service:NAME`; a name with a `:` is kept.
pub fn full_name(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("service:{name}")
    }
}

/// The attribute that names a resource of `rtype` (`ref=` matches it).
pub fn primary_attr(rtype: &str) -> &'static str {
    match rtype {
        "ip" => "address",
        _ => "name",
    }
}

/// Attributes of `<service>` itself (everything else is an error).
const SERVICE_ATTRS: &[&str] = &[
    "name",
    "domain",
    "autostart",
    "exclusive",
    "recovery",
    "max_restarts",
    "restart_expire_time",
    "depend",
    "depend_mode",
    "nfslock",
    "nfs_client_cache",
    "priority",
    "__independent_subtree",
];

type Res<T> = Result<T, ConfigError>;

fn line_of(n: roxmltree::Node<'_, '_>) -> u32 {
    n.document().text_pos_at(n.range().start).row
}

fn err<T>(n: roxmltree::Node<'_, '_>, msg: impl Into<String>) -> Res<T> {
    Err(ConfigError {
        line: line_of(n),
        msg: msg.into(),
    })
}

fn elements<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    n.children().filter(|c| c.is_element())
}

fn parse_bool(n: roxmltree::Node<'_, '_>, attr: &str, default: bool) -> Res<bool> {
    match n.attribute(attr) {
        None => Ok(default),
        Some("1" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "no" | "false" | "off" | "") => Ok(false),
        Some(v) => err(n, format!("{attr}=\"{v}\" is not a boolean (0 or 1)")),
    }
}

fn parse_num<T: std::str::FromStr>(n: roxmltree::Node<'_, '_>, attr: &str, default: T) -> Res<T> {
    match n.attribute(attr) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse()
            .or_else(|_| err(n, format!("{attr}=\"{v}\" is not a number"))),
    }
}

/// Parses the `<rm>` section of a whole cluster.conf text. A file without
/// `<rm>` gives an empty configuration.
pub fn parse(text: &str) -> Res<RmConfig> {
    let doc = roxmltree::Document::parse(text).map_err(|e| ConfigError {
        line: e.pos().row,
        msg: format!("not well-formed XML: {e}"),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "cluster" {
        return err(root, "the root element is not <cluster>");
    }
    let mut cfg = RmConfig {
        config_version: parse_num(root, "config_version", 0)?,
        cluster_name: root.attribute("name").unwrap_or("").to_string(),
        ..Default::default()
    };
    let nodes = cluster_nodes(root);
    let Some(rm) = elements(root).find(|e| e.tag_name().name() == "rm") else {
        return Ok(cfg);
    };
    let mut shared = Vec::new();
    let mut service_nodes = Vec::new();
    for e in elements(rm) {
        match e.tag_name().name() {
            "failoverdomains" => {
                for d in elements(e) {
                    let dom = parse_domain(d, &nodes)?;
                    if cfg.domains.contains_key(&dom.name) {
                        return err(d, format!("failover domain {:?} defined twice", dom.name));
                    }
                    cfg.domains.insert(dom.name.clone(), dom);
                }
            }
            "resources" => {
                for r in elements(e) {
                    shared.push(parse_shared(r, &shared)?);
                }
            }
            "service" => service_nodes.push(e),
            "events" | "vm" => {
                tracing::warn!(
                    line = line_of(e),
                    "<{}> is not supported; ignored",
                    e.tag_name().name()
                )
            }
            other => return err(e, format!("unknown element <{other}> in <rm>")),
        }
    }
    for s in service_nodes {
        let svc = parse_service(s, &shared, &cfg.domains)?;
        if cfg.services.iter().any(|o| o.name == svc.name) {
            return err(s, format!("{} defined twice", svc.name));
        }
        cfg.services.push(svc);
    }
    check_depends(&cfg)?;
    Ok(cfg)
}

fn cluster_nodes(root: roxmltree::Node<'_, '_>) -> Option<BTreeSet<String>> {
    let cn = elements(root).find(|e| e.tag_name().name() == "clusternodes")?;
    Some(
        elements(cn)
            .filter_map(|n| n.attribute("name").map(str::to_string))
            .collect(),
    )
}

fn parse_domain(d: roxmltree::Node<'_, '_>, nodes: &Option<BTreeSet<String>>) -> Res<Domain> {
    if d.tag_name().name() != "failoverdomain" {
        return err(d, format!("<{}> in <failoverdomains>", d.tag_name().name()));
    }
    let Some(name) = d.attribute("name").filter(|n| !n.is_empty()) else {
        return err(d, "a failoverdomain needs a name");
    };
    let mut dom = Domain {
        name: name.to_string(),
        ordered: parse_bool(d, "ordered", false)?,
        restricted: parse_bool(d, "restricted", false)?,
        nofailback: parse_bool(d, "nofailback", false)?,
        nodes: Vec::new(),
    };
    for n in elements(d) {
        if n.tag_name().name() != "failoverdomainnode" {
            return err(n, format!("<{}> in a failoverdomain", n.tag_name().name()));
        }
        let Some(node) = n.attribute("name").filter(|n| !n.is_empty()) else {
            return err(n, "a failoverdomainnode needs a name");
        };
        if nodes.as_ref().is_some_and(|all| !all.contains(node)) {
            return err(n, format!("{node:?} is not a clusternode"));
        }
        let prio: u32 = parse_num(n, "priority", 1)?;
        if !(1..=100).contains(&prio) {
            return err(n, format!("priority {prio} is outside 1..100"));
        }
        if dom.nodes.iter().any(|(o, _)| o == node) {
            return err(n, format!("{node:?} is listed twice in domain {name:?}"));
        }
        dom.nodes.push((node.to_string(), prio));
    }
    Ok(dom)
}

fn attrs_of(e: roxmltree::Node<'_, '_>) -> BTreeMap<String, String> {
    e.attributes()
        .map(|a| (a.name().to_string(), a.value().to_string()))
        .collect()
}

fn parse_shared(r: roxmltree::Node<'_, '_>, shared: &[Resource]) -> Res<Resource> {
    let rtype = r.tag_name().name();
    let key = primary_attr(rtype);
    let Some(v) = r.attribute(key) else {
        return err(r, format!("a shared <{rtype}> needs its {key} attribute"));
    };
    if shared
        .iter()
        .any(|o| o.rtype == rtype && o.attrs.get(key).map(String::as_str) == Some(v))
    {
        return err(r, format!("<{rtype} {key}=\"{v}\"> defined twice"));
    }
    if elements(r).next().is_some() {
        return err(r, "shared resources cannot have children here");
    }
    Ok(Resource {
        rtype: rtype.to_string(),
        attrs: attrs_of(r),
        children: Vec::new(),
        actions: Vec::new(),
        line: line_of(r),
    })
}

fn parse_child(e: roxmltree::Node<'_, '_>, shared: &[Resource]) -> Res<Resource> {
    let rtype = e.tag_name().name();
    if rtype == "service" {
        return err(e, "a service inside a service");
    }
    let mut attrs = BTreeMap::new();
    if let Some(r) = e.attribute("ref") {
        let key = primary_attr(rtype);
        let Some(base) = shared
            .iter()
            .find(|o| o.rtype == rtype && o.attrs.get(key).map(String::as_str) == Some(r))
        else {
            return err(
                e,
                format!("<{rtype} ref=\"{r}\">: no such resource in <resources>"),
            );
        };
        attrs = base.attrs.clone();
    }
    for (k, v) in attrs_of(e) {
        if k != "ref" {
            attrs.insert(k, v);
        }
    }
    if !attrs.contains_key(primary_attr(rtype)) && !attrs.contains_key("name") {
        return err(
            e,
            format!("<{rtype}> needs {} (or ref=)", primary_attr(rtype)),
        );
    }
    let mut children = Vec::new();
    let mut actions = Vec::new();
    for c in elements(e) {
        if c.tag_name().name() == "action" {
            actions.push(parse_action(c)?);
        } else {
            children.push(parse_child(c, shared)?);
        }
    }
    Ok(Resource {
        rtype: rtype.to_string(),
        attrs,
        children,
        actions,
        line: line_of(e),
    })
}

fn parse_service(
    s: roxmltree::Node<'_, '_>,
    shared: &[Resource],
    domains: &BTreeMap<String, Domain>,
) -> Res<ServiceConfig> {
    let Some(name) = s.attribute("name").filter(|n| !n.is_empty()) else {
        return err(s, "a service needs a name");
    };
    for a in s.attributes() {
        if !SERVICE_ATTRS.contains(&a.name()) {
            return err(s, format!("unknown service attribute {}", a.name()));
        }
    }
    let domain = s.attribute("domain").filter(|d| !d.is_empty());
    if let Some(d) = domain {
        if !domains.contains_key(d) {
            return err(s, format!("service {name:?}: no failover domain {d:?}"));
        }
    }
    let recovery = match s.attribute("recovery") {
        None | Some("" | "restart") => Recovery::Restart,
        Some("relocate") => Recovery::Relocate,
        Some("disable") => Recovery::Disable,
        Some(v) => return err(s, format!("recovery=\"{v}\": restart, relocate or disable")),
    };
    let depend_mode = match s.attribute("depend_mode") {
        None | Some("" | "hard") => DependMode::Hard,
        Some("soft") => DependMode::Soft,
        Some(v) => return err(s, format!("depend_mode=\"{v}\": hard or soft")),
    };
    let children = elements(s)
        .map(|c| parse_child(c, shared))
        .collect::<Res<Vec<_>>>()?;
    Ok(ServiceConfig {
        name: full_name(name),
        domain: domain.map(str::to_string),
        autostart: parse_bool(s, "autostart", true)?,
        exclusive: parse_bool(s, "exclusive", false)?,
        recovery,
        max_restarts: parse_num(s, "max_restarts", 0)?,
        restart_expire_time_s: parse_num(s, "restart_expire_time", 0)?,
        depend: s
            .attribute("depend")
            .filter(|d| !d.is_empty())
            .map(full_name),
        depend_mode,
        children,
        line: line_of(s),
    })
}

fn check_depends(cfg: &RmConfig) -> Res<()> {
    for s in &cfg.services {
        let Some(d) = &s.depend else { continue };
        if cfg.service(d).is_none() {
            return Err(ConfigError {
                line: s.line,
                msg: format!("{} depends on {d}, which is not defined", s.name),
            });
        }
        // A cycle would keep both from ever starting.
        let mut seen = BTreeSet::from([s.name.clone()]);
        let mut cur = cfg.service(d);
        while let Some(c) = cur {
            if !seen.insert(c.name.clone()) {
                return Err(ConfigError {
                    line: s.line,
                    msg: format!("{}: dependency cycle through {}", s.name, c.name),
                });
            }
            cur = c.depend.as_deref().and_then(|n| cfg.service(n));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../tests/data/seed-cluster.conf");

    #[test]
    fn the_seed_loads_verbatim() {
        let cfg = parse(SEED).unwrap();
        assert_eq!(cfg.cluster_name, "httpd_cluster");
        assert_eq!(cfg.config_version, 2);
        let d = &cfg.domains["httpd_fail"];
        assert!(!d.ordered && d.restricted && !d.nofailback);
        assert_eq!(
            d.nodes,
            vec![("RealServer1".into(), 1), ("RealServer2".into(), 1)]
        );
        assert_eq!(cfg.services.len(), 1);
        let s = cfg.service("httpd_srv").unwrap();
        assert_eq!(s.name, "service:httpd_srv");
        assert_eq!(s.domain.as_deref(), Some("httpd_fail"));
        assert!(s.autostart && !s.exclusive);
        assert_eq!(s.recovery, Recovery::Relocate);
        let kinds: Vec<_> = s.children.iter().map(|r| r.instance()).collect();
        assert_eq!(
            kinds,
            ["ip:192.168.10.254", "script:httpd", "clusterfs:docroot"]
        );
        assert_eq!(s.children[0].attrs["monitor_link"], "1");
        assert_eq!(s.children[1].attrs["file"], "/etc/init.d/httpd");
        let fs = &s.children[2].attrs;
        assert_eq!(fs["device"], "/dev/webvg/webvg_lv1");
        assert_eq!(fs["mountpoint"], "/var/www/html");
        assert_eq!(fs["force_unmount"], "1");
        assert_eq!(s.children[2].line, 40);
    }

    fn rm(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n<cluster name=\"c\" config_version=\"1\">\n<clusternodes>\n<clusternode name=\"n1\" nodeid=\"1\"/>\n<clusternode name=\"n2\" nodeid=\"2\"/>\n</clusternodes>\n<rm>\n{body}\n</rm>\n</cluster>\n"
        )
    }

    fn error_of(body: &str) -> ConfigError {
        parse(&rm(body)).unwrap_err()
    }

    #[test]
    fn inline_children_refs_with_overrides_and_attributes() {
        let cfg = parse(&rm(r#"<resources><script name="s" file="/a"/></resources>
<service name="a" autostart="0" exclusive="1" recovery="restart" max_restarts="3" restart_expire_time="300" depend="b" depend_mode="soft">
  <fs name="data" device="/dev/x" mountpoint="/m" fstype="ext4"><script ref="s" file="/b"/></fs>
</service>
<service name="b"/>"#))
        .unwrap();
        let a = cfg.service("service:a").unwrap();
        assert!(!a.autostart && a.exclusive);
        assert_eq!((a.max_restarts, a.restart_expire_time_s), (3, 300));
        assert_eq!(a.depend.as_deref(), Some("service:b"));
        assert_eq!(a.depend_mode, DependMode::Soft);
        assert_eq!(a.children[0].rtype, "fs");
        assert_eq!(a.children[0].children[0].attrs["file"], "/b");
        assert_eq!(a.children[0].children[0].attrs["name"], "s");
    }

    #[test]
    fn bad_input_names_the_line() {
        let cases = [
            (
                r#"<service name="a"><ip ref="10.0.0.1"/></service>"#,
                8,
                "no such resource",
            ),
            (r#"<service name="a" recovery="reboot"/>"#, 8, "recovery"),
            (
                r#"<service name="a" domain="nope"/>"#,
                8,
                "no failover domain",
            ),
            (r#"<service/>"#, 8, "needs a name"),
            ("<service name=\"a\"/>\n<service name=\"a\"/>", 9, "twice"),
            (
                r#"<failoverdomains><failoverdomain name="d"><failoverdomainnode name="n9"/></failoverdomain></failoverdomains>"#,
                8,
                "not a clusternode",
            ),
            (
                r#"<failoverdomains><failoverdomain name="d"><failoverdomainnode name="n1" priority="101"/></failoverdomain></failoverdomains>"#,
                8,
                "outside 1..100",
            ),
            (r#"<service name="a" autostart="maybe"/>"#, 8, "boolean"),
            (r#"<service name="a" max_restarts="x"/>"#, 8, "number"),
            (r#"<service name="a" depend="b"/>"#, 8, "not defined"),
            (
                "<service name=\"a\" depend=\"b\"/>\n<service name=\"b\" depend=\"a\"/>",
                8,
                "cycle",
            ),
            (
                r#"<service name="a" colour="red"/>"#,
                8,
                "unknown service attribute",
            ),
            (r#"<frobs/>"#, 8, "unknown element"),
            (r#"<service name="a"><ip/></service>"#, 8, "needs address"),
        ];
        for (body, line, what) in cases {
            let e = error_of(body);
            assert_eq!(e.line, line, "{body}: {e}");
            assert!(e.msg.contains(what), "{body}: {e}");
        }
        let e = parse("<cluster>\n<rm>\n<service name=\"a\">\n</cluster>").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e
            .to_string()
            .starts_with("cluster.conf line 4: not well-formed XML"));
    }

    #[test]
    fn action_overrides_and_durations() {
        let cfg = parse(&rm(r#"<service name="a"><script name="s" file="/x"><action name="status" depth="0" interval="5s" timeout="1m"/></script></service>"#)).unwrap();
        let r = &cfg.services[0].children[0];
        assert!(r.children.is_empty());
        assert_eq!(
            r.actions,
            vec![ActionOverride {
                name: "status".into(),
                depth: Some(0),
                interval_s: Some(5),
                timeout_s: Some(60),
            }]
        );
        assert_eq!(parse_seconds("20"), Some(20));
        assert_eq!(parse_seconds("2h"), Some(7200));
        assert_eq!(parse_seconds("x"), None);
        let e = error_of(
            r#"<service name="a"><script name="s" file="/x"><action name="status" interval="soon"/></script></service>"#,
        );
        assert!(e.msg.contains("not a duration"), "{e}");
    }

    #[test]
    fn no_rm_section_is_empty() {
        let cfg = parse("<cluster name=\"x\" config_version=\"3\"/>").unwrap();
        assert!(cfg.services.is_empty() && cfg.domains.is_empty());
        assert_eq!(cfg.config_version, 3);
    }
}
