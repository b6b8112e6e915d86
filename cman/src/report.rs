//! Text output of the tools, close to the originals' (cman_tool, fence_tool,
//! ccs_tool).

use crate::config::ClusterConf;
use crate::node::{Status, FENCE_DOMAIN};
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Version string printed by `cman_tool version`/`status`.
pub const VERSION: &str = "6.2.0";

/// cman's 16-bit cluster id, derived from the cluster name.
pub fn cluster_id(name: &str) -> u16 {
    let mut v: u32 = 0;
    for b in name.bytes() {
        v = v.wrapping_shl(1).wrapping_add(b as u32);
    }
    (v & 0xffff) as u16
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time `ms_ago` before now.
pub fn time_ago(ms_ago: u64) -> String {
    let t = SystemTime::now() - Duration::from_millis(ms_ago);
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `cman_tool status`.
pub fn status(s: &Status) -> String {
    let member = s.members.iter().any(|m| m.id == s.node_id);
    let node_votes = s
        .nodes
        .iter()
        .find(|n| n.id == s.node_id)
        .map(|n| n.votes)
        .unwrap_or(0);
    let mut o = String::new();
    let _ = writeln!(o, "Version: {VERSION}");
    let _ = writeln!(o, "Config Version: {}", s.config_version);
    let _ = writeln!(o, "Cluster Name: {}", s.cluster_name);
    let _ = writeln!(o, "Cluster Id: {}", cluster_id(&s.cluster_name));
    let _ = writeln!(o, "Cluster Member: {}", if member { "Yes" } else { "No" });
    let _ = writeln!(o, "Cluster Generation: {}", s.view.seq);
    let state = if s.leaving {
        "Leaving".to_string()
    } else if !s.held.is_empty() {
        format!(
            "Held (processes started under an earlier cmand still run: {}; this node joins once they are gone or the node is fenced)",
            s.held.join(", ")
        )
    } else if member {
        "Cluster-Member".to_string()
    } else {
        "Joining".to_string()
    };
    let _ = writeln!(o, "Membership state: {state}");
    let _ = writeln!(o, "Nodes: {}", s.members.len());
    let _ = writeln!(o, "Expected votes: {}", s.quorum.expected_votes);
    let _ = writeln!(o, "Total votes: {}", s.quorum.total_votes);
    let _ = writeln!(o, "Node votes: {node_votes}");
    let blocked = if s.quorum.quorate {
        ""
    } else {
        " Activity blocked"
    };
    let _ = writeln!(o, "Quorum: {}{blocked}", s.quorum.quorum);
    let _ = writeln!(o, "Active subsystems: {}", s.groups.len());
    let _ = writeln!(o, "Flags: {}", s.quorum.flags.join(" "));
    let _ = writeln!(o, "Ports Bound: 0");
    let _ = writeln!(o, "Node name: {}", s.node_name);
    let _ = writeln!(o, "Node ID: {}", s.node_id);
    let _ = writeln!(o, "Multicast addresses: none (UDP unicast)");
    let _ = writeln!(o, "Node addresses: {}", s.node_name);
    let _ = writeln!(o, "Token timeout: {} ms", s.token_ms);
    o
}

/// `cman_tool nodes [-f]`.
pub fn nodes(s: &Status, fence: bool) -> String {
    let mut o = String::from("Node  Sts   Inc   Joined               Name\n");
    for n in &s.nodes {
        let joined = n.joined_ms_ago.map(time_ago).unwrap_or_default();
        let inc = if n.status == "M" { n.inc % 100_000 } else { 0 };
        let _ = writeln!(
            o,
            "{:>4}   {:<2} {:>6}   {:<19}  {}",
            n.id.0, n.status, inc, joined, n.name
        );
        if !n.held.is_empty() {
            let _ = writeln!(o, "       Held out:      {}", n.held.join(", "));
        }
        if fence {
            if let Some((ago, how)) = &n.last_fenced {
                let _ = writeln!(o, "       Last fenced:   {} by {}", time_ago(*ago), how);
            }
        }
    }
    o
}

/// `fence_tool ls` (and the fence part of `cman_tool services`).
pub fn fence_ls(s: &Status) -> String {
    let members: Vec<String> = s.fence_domain.iter().map(|n| n.to_string()).collect();
    let mut o = String::from("fence domain\n");
    let _ = writeln!(o, "member count  {}", s.fence_domain.len());
    let _ = writeln!(o, "victim count  {}", s.victims.len());
    let _ = writeln!(
        o,
        "victim now    {}",
        s.victims.first().map(|v| v.id.0).unwrap_or(0)
    );
    let _ = writeln!(
        o,
        "master nodeid {}",
        s.fence_master.map(|n| n.0).unwrap_or(0)
    );
    let wait = if s.victims.is_empty() {
        "none"
    } else if s.quorum.quorate {
        "fencing"
    } else {
        "quorum"
    };
    let _ = writeln!(o, "wait state    {wait}");
    let _ = writeln!(o, "members       {}", members.join(" "));
    for v in &s.victims {
        let _ = writeln!(o, "{}", victim_line(s, *v));
    }
    o
}

/// One victim of `fence_tool ls`, with what its node's newer incarnation
/// (if one is heard) says of the victim's processes: whoever acknowledges
/// a manual fence must know whether they still run.
fn victim_line(s: &Status, v: crate::ids::Member) -> String {
    let node = s.nodes.iter().find(|n| n.id == v.id);
    let name = node.map(|n| n.name.as_str()).unwrap_or("?");
    let mut line = format!("victim {} {name} incarnation {}", v.id, v.inc.0);
    match node {
        Some(n) if !n.held.is_empty() => {
            let _ = write!(
                line,
                ": the node is back, and processes of the victim still run there ({}): \
                 they may hold cluster locks and write; the fence must stop them \
                 (with fence_manual: reset the node or kill them before fence_ack_manual)",
                n.held.join(", ")
            );
        }
        Some(n) if n.inc > v.inc.0 => {
            let _ = write!(
                line,
                ": the node is back (incarnation {}) and reports no process of the victim running",
                n.inc
            );
        }
        _ => {}
    }
    line
}

/// `cman_tool services`: the fence domain and every other group.
pub fn services(s: &Status) -> String {
    let mut o = fence_ls(s);
    for (g, members) in s.groups.iter().filter(|(g, _)| g != FENCE_DOMAIN) {
        let list: Vec<String> = members
            .iter()
            .map(|(n, c)| format!("{}:{}", n.0, c.0))
            .collect();
        let _ = writeln!(
            o,
            "\ngroup {g}\nmember count  {}\nmembers       {}",
            members.len(),
            list.join(" ")
        );
    }
    o
}

/// `ccs_tool lsnode`.
pub fn lsnode(c: &ClusterConf) -> String {
    let mut o = format!(
        "\nCluster name: {}, config_version: {}\n\n",
        c.name, c.config_version
    );
    let _ = writeln!(o, "Nodename                        Votes Nodeid Fencetype");
    for n in &c.nodes {
        let fences: Vec<&str> = n
            .fence
            .iter()
            .flat_map(|m| m.devices.iter().map(|d| d.name.as_str()))
            .collect();
        let _ = writeln!(
            o,
            "{:<32}{:>4}  {:>4}    {}",
            n.name,
            n.votes,
            n.id.0,
            fences.join(",")
        );
    }
    o
}

/// `ccs_tool lsfence`.
pub fn lsfence(c: &ClusterConf) -> String {
    let mut o = String::from("Name             Agent\n");
    for d in &c.fence_devices {
        let _ = writeln!(o, "{:<17}{}", d.name, d.agent);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn lsnode_of_the_seed() {
        let c = ClusterConf::parse(include_str!("../testdata/seed-cluster.conf")).unwrap();
        let out = lsnode(&c);
        assert!(out.contains("Cluster name: httpd_cluster, config_version: 2"));
        assert!(
            out.contains("RealServer2                        1     2    fence2"),
            "{out}"
        );
        assert!(lsfence(&c).contains("fence1           fence_manual"));
    }
}
