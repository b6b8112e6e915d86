//! A service's resource tree in the order rgmanager runs it: a parent
//! before its children on start, children by type level (service.sh's
//! `<child type start stop>`: lvm 1, fs 2, clusterfs 3, netfs 4,
//! nfsexport 5, nfsclient 6, ip 7, smb 8, script 9; types without a level
//! after those, in configuration order), and on stop the children by
//! their stop level (untyped ones first) before the parent.

use crate::config::Resource;

/// (type, start level, stop level) of service.sh's children.
pub const CHILD_LEVELS: &[(&str, u32, u32)] = &[
    ("lvm", 1, 9),
    ("fs", 2, 8),
    ("clusterfs", 3, 7),
    ("netfs", 4, 6),
    ("nfsexport", 5, 5),
    ("nfsclient", 6, 4),
    ("ip", 7, 2),
    ("smb", 8, 3),
    ("script", 9, 1),
];

fn level(rtype: &str, start: bool) -> u32 {
    CHILD_LEVELS
        .iter()
        .find(|(t, _, _)| *t == rtype)
        .map(|(_, a, o)| if start { *a } else { *o })
        // Untyped children start after the typed ones and stop before.
        .unwrap_or(if start { u32::MAX } else { 0 })
}

/// Siblings sorted by level (stable: configuration order within a level).
fn sorted(children: &[Resource], start: bool) -> Vec<&Resource> {
    let mut v: Vec<&Resource> = children.iter().collect();
    v.sort_by_key(|r| level(&r.rtype, start));
    v
}

/// Every resource of the tree in start order.
pub fn start_order(children: &[Resource]) -> Vec<&Resource> {
    let mut out = Vec::new();
    for r in sorted(children, true) {
        out.push(r);
        out.extend(start_order(&r.children));
    }
    out
}

/// Every resource of the tree in stop order.
pub fn stop_order(children: &[Resource]) -> Vec<&Resource> {
    let mut out = Vec::new();
    for r in sorted(children, false) {
        out.extend(stop_order(&r.children));
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn names(v: &[&Resource]) -> Vec<String> {
        v.iter().map(|r| r.instance()).collect()
    }

    #[test]
    fn seed_service_order() {
        let cfg = parse(include_str!("../tests/data/seed-cluster.conf")).unwrap();
        let s = cfg.service("httpd_srv").unwrap();
        assert_eq!(
            names(&start_order(&s.children)),
            ["clusterfs:docroot", "ip:192.168.10.254", "script:httpd"]
        );
        assert_eq!(
            names(&stop_order(&s.children)),
            ["script:httpd", "ip:192.168.10.254", "clusterfs:docroot"]
        );
    }

    #[test]
    fn every_type_level_and_nesting() {
        let text = r#"<cluster name="c"><rm><service name="s">
            <script name="sc" file="/x"/>
            <mine name="custom"/>
            <smb name="smb"/>
            <ip address="10.0.0.1"/>
            <nfsclient name="nc"/>
            <nfsexport name="ne"/>
            <netfs name="nf"/>
            <clusterfs name="cfs"/>
            <fs name="fs"><script name="inner" file="/y"/><ip address="10.0.0.2"/></fs>
            <lvm name="lv"/>
        </service></rm></cluster>"#;
        let cfg = parse(text).unwrap();
        let s = &cfg.services[0];
        assert_eq!(
            names(&start_order(&s.children)),
            [
                "lvm:lv",
                "fs:fs",
                "ip:10.0.0.2",
                "script:inner",
                "clusterfs:cfs",
                "netfs:nf",
                "nfsexport:ne",
                "nfsclient:nc",
                "ip:10.0.0.1",
                "smb:smb",
                "script:sc",
                "mine:custom",
            ]
        );
        assert_eq!(
            names(&stop_order(&s.children)),
            [
                "mine:custom",
                "script:sc",
                "ip:10.0.0.1",
                "smb:smb",
                "nfsclient:nc",
                "nfsexport:ne",
                "netfs:nf",
                "clusterfs:cfs",
                "script:inner",
                "ip:10.0.0.2",
                "fs:fs",
                "lvm:lv",
            ]
        );
    }
}
