//! What clustat prints: cluster 3's text layout, rgmanager 3's XML
//! (`-x`), and JSON; and what clusvcadm says while it works.

use std::fmt::Write as _;

use crate::control::{AdminAction, StatusView};
use crate::state::State;

/// Which part clustat shows.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// `-s SERVICE` (full name).
    pub service: Option<String>,
    /// `-m NODE`.
    pub member: Option<String>,
    /// `-l`: long service format.
    pub long: bool,
}

/// `(last)` or owner, as the Owner column shows it.
fn owner_column(s: &crate::control::ServiceView) -> String {
    match s.record.state {
        State::Stopped | State::Disabled | State::Failed => {
            format!("({})", s.last_owner.as_deref().unwrap_or("none"))
        }
        _ => s.owner.clone().unwrap_or_else(|| "none".into()),
    }
}

fn flags_str(s: &crate::control::ServiceView, sep: &str) -> String {
    let mut f = Vec::new();
    if s.record.frozen {
        f.push("frozen");
    }
    f.join(sep)
}

fn flags_bits(s: &crate::control::ServiceView) -> u32 {
    u32::from(s.record.frozen)
}

fn member_status(n: &crate::control::NodeView) -> String {
    let mut st = String::from(if n.online { "Online" } else { "Offline" });
    if n.local {
        st.push_str(", Local");
    }
    if n.rgmanager {
        st.push_str(", rgmanager");
    }
    st
}

/// A `ctime` date without its newline: `Thu Dec  3 12:00:00 2026`.
pub fn ctime(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own; strftime writes at
    // most buf.len() bytes into buf.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return secs.to_string();
        }
        let mut buf = [0u8; 64];
        let fmt = c"%a %b %e %H:%M:%S %Y";
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// clustat's text; with the exit status clustat returns (0, or for `-s`
/// a service not running its state code, for `-m` 1 if the node is
/// offline).
pub fn text(v: &StatusView, f: &Filter, now_secs: u64, rgmanager: bool) -> (String, i32) {
    let mut o = String::new();
    let mut ret = 0;
    if f.service.is_none() && f.member.is_none() {
        let _ = writeln!(o, "Cluster Status for {} @ {}", v.cluster, ctime(now_secs));
        let _ = writeln!(
            o,
            "Member Status: {}\n",
            if v.quorate { "Quorate" } else { "Inquorate" }
        );
        if !rgmanager {
            o.push_str("Resource Group Manager not running; no service information available.\n\n");
        }
    }
    if f.service.is_none() || f.member.is_some() {
        let nodes: Vec<_> = v
            .nodes
            .iter()
            .filter(|n| f.member.as_ref().is_none_or(|m| *m == n.name))
            .collect();
        let w = nodes
            .iter()
            .map(|n| n.name.len())
            .max()
            .unwrap_or(0)
            .max(15);
        let _ = writeln!(o, " {:<w$} {:<4} Status", "Member Name", "ID");
        let _ = writeln!(o, " {:<w$} {:<4} ------", "------ ----", "----");
        for n in &nodes {
            let _ = writeln!(o, " {:<w$} {:>4} {}", n.name, n.id, member_status(n));
            if f.member.is_some() && !n.online {
                ret = 1;
            }
        }
        if f.member.is_some() && nodes.is_empty() {
            ret = 1;
        }
        o.push('\n');
        if f.member.is_some() && f.service.is_none() {
            return (o, ret);
        }
    }
    if !rgmanager {
        return (o, if f.service.is_some() { 1 } else { ret });
    }
    let svcs: Vec<_> = v
        .services
        .iter()
        .filter(|s| f.service.as_ref().is_none_or(|n| *n == s.name))
        .collect();
    if f.service.is_some() && svcs.is_empty() {
        ret = 1;
    }
    if f.long {
        o.push_str("Service Information\n------- -----------\n\n");
        for s in &svcs {
            long_service(&mut o, s);
        }
    } else {
        let wn = svcs.iter().map(|s| s.name.len()).max().unwrap_or(0).max(15);
        let wo = svcs
            .iter()
            .map(|s| owner_column(s).len())
            .max()
            .unwrap_or(0)
            .max(15);
        let _ = writeln!(o, " {:<wn$} {:<wo$} State", "Service Name", "Owner (Last)");
        let _ = writeln!(o, " {:<wn$} {:<wo$} -----", "------- ----", "----- ------");
        for s in &svcs {
            let mut state = s.record.state.as_str().to_string();
            if s.record.frozen {
                state.push_str(" [Z]");
            }
            let _ = writeln!(o, " {:<wn$} {:<wo$} {}", s.name, owner_column(s), state);
        }
    }
    if f.service.is_some() {
        if let Some(s) = svcs.first() {
            if !matches!(
                s.record.state,
                State::Starting | State::Started | State::Stopping
            ) {
                ret = s.record.state.code() as i32;
            }
        }
    }
    (o, ret)
}

fn long_service(o: &mut String, s: &crate::control::ServiceView) {
    let flags = flags_str(s, ", ");
    let _ = writeln!(o, "Service Name      : {}", s.name);
    let _ = writeln!(
        o,
        "  Current State   : {} ({})",
        s.record.state.as_str(),
        s.record.state.code()
    );
    let _ = writeln!(
        o,
        "  Flags           : {} ({})",
        if flags.is_empty() { "none" } else { &flags },
        flags_bits(s)
    );
    let _ = writeln!(
        o,
        "  Owner           : {}",
        s.owner.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        o,
        "  Last Owner      : {}",
        s.last_owner.as_deref().unwrap_or("none")
    );
    let _ = writeln!(o, "  Last Transition : {}\n", ctime(s.last_transition));
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// clustat -x: rgmanager 3's XML.
pub fn xml(v: &StatusView, cluster_id: u16, f: &Filter, rgmanager: bool) -> String {
    let mut o = String::new();
    o.push_str("<?xml version=\"1.0\"?>\n<clustat version=\"4.1.1\">\n");
    if f.service.is_none() && f.member.is_none() {
        let _ = writeln!(
            o,
            "  <cluster name=\"{}\" id=\"{}\" generation=\"{}\"/>",
            esc(&v.cluster),
            cluster_id,
            v.generation
        );
        let local_rg = v.nodes.iter().any(|n| n.local && n.rgmanager);
        let _ = writeln!(
            o,
            "  <quorum quorate=\"{}\" groupmember=\"{}\"/>",
            u8::from(v.quorate),
            u8::from(v.quorate && local_rg)
        );
    }
    if f.service.is_none() || f.member.is_some() {
        o.push_str("  <nodes>\n");
        for n in v
            .nodes
            .iter()
            .filter(|n| f.member.as_ref().is_none_or(|m| *m == n.name))
        {
            let _ = writeln!(
                o,
                "    <node name=\"{}\" state=\"{}\" local=\"{}\" estranged=\"0\" rgmanager=\"{}\" rgmanager_master=\"{}\" qdisk=\"0\" nodeid=\"0x{:08x}\"/>",
                esc(&n.name),
                u8::from(n.online),
                u8::from(n.local),
                u8::from(n.rgmanager),
                u8::from(n.rgmanager_master),
                n.id
            );
        }
        o.push_str("  </nodes>\n");
    }
    if rgmanager && (f.member.is_none() || f.service.is_some()) {
        o.push_str("  <groups>\n");
        for s in v
            .services
            .iter()
            .filter(|s| f.service.as_ref().is_none_or(|n| *n == s.name))
        {
            let _ = writeln!(
                o,
                "    <group name=\"{}\" state=\"{}\" state_str=\"{}\" flags=\"{}\" flags_str=\"{}\" owner=\"{}\" last_owner=\"{}\" restarts=\"{}\" last_transition=\"{}\" last_transition_str=\"{}\"/>",
                esc(&s.name),
                s.record.state.code(),
                s.record.state.as_str(),
                flags_bits(s),
                flags_str(s, " "),
                esc(s.owner.as_deref().unwrap_or("none")),
                esc(s.last_owner.as_deref().unwrap_or("none")),
                s.record.restarts,
                s.last_transition,
                ctime(s.last_transition)
            );
        }
        o.push_str("  </groups>\n");
    }
    o.push_str("</clustat>\n");
    o
}

/// clusvcadm's progress line (printed before the request, without a
/// newline).
pub fn progress(action: AdminAction, svc: &str, node: Option<&str>) -> String {
    let local = |what: &str| match node {
        Some(n) => format!("Member {n} {what} {svc}..."),
        None => format!("Local machine {what} {svc}..."),
    };
    match action {
        AdminAction::Enable => local("trying to enable"),
        AdminAction::Disable => local("disabling"),
        AdminAction::Restart => local("trying to restart"),
        AdminAction::Stop => local("stopping"),
        AdminAction::Freeze => local("freezing"),
        AdminAction::Unfreeze => local("unfreezing"),
        AdminAction::Convalesce => local("convalescing"),
        AdminAction::Relocate => match node {
            Some(n) => format!("Trying to relocate {svc} to {n}..."),
            None => format!("Trying to relocate {svc}..."),
        },
        AdminAction::Migrate => format!("Trying to migrate {svc} to {}...", node.unwrap_or("")),
    }
}

/// The line after a successful enable or relocate: `service:S is now
/// running on N`, with `Warning: ` when N is not the node asked for.
pub fn now_running(svc: &str, owner: &str, requested: Option<&str>) -> String {
    let warn = requested.is_some_and(|r| r != owner);
    format!(
        "{}{svc} is now running on {owner}",
        if warn { "Warning: " } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{NodeView, ServiceView};
    use crate::state::Record;
    use crate::NodeId;

    fn view() -> StatusView {
        let node = |name: &str, id, online, local| NodeView {
            name: name.into(),
            id,
            online,
            local,
            rgmanager: online,
            rgmanager_master: id == 1,
        };
        let svc = |name: &str, state, owner: Option<&str>, last: Option<&str>| {
            let mut record = Record::new(true);
            record.state = state;
            record.owner = owner.map(|_| NodeId(1));
            ServiceView {
                name: name.into(),
                record,
                owner: owner.map(str::to_string),
                last_owner: last.map(str::to_string),
                last_transition: 0,
            }
        };
        StatusView {
            cluster: "alpha".into(),
            local: "node-01".into(),
            generation: 12,
            quorate: true,
            synced: true,
            nodes: vec![
                node("node-01", 1, true, true),
                node("node-02", 2, true, false),
            ],
            services: vec![
                svc("service:web", State::Started, Some("node-01"), None),
                svc("service:db", State::Stopped, None, Some("node-02")),
            ],
            locked: false,
        }
    }

    /// The layout of cluster 3's clustat (`cluster.md`), line for line.
    #[test]
    fn text_layout_is_cluster3s() {
        let (out, code) = text(&view(), &Filter::default(), 0, true);
        let body: Vec<&str> = out.lines().skip(1).collect();
        assert!(out.starts_with("Cluster Status for alpha @ "));
        assert_eq!(
            body,
            [
                "Member Status: Quorate",
                "",
                " Member Name     ID   Status",
                " ------ ----     ---- ------",
                " node-01            1 Online, Local, rgmanager",
                " node-02            2 Online, rgmanager",
                "",
                " Service Name    Owner (Last)    State",
                " ------- ----    ----- ------    -----",
                " service:web     node-01         started",
                " service:db      (node-02)       stopped",
            ]
        );
        assert_eq!(code, 0);
    }

    #[test]
    fn service_and_member_filters_and_codes() {
        let v = view();
        let f = Filter {
            service: Some("service:db".into()),
            ..Default::default()
        };
        let (out, code) = text(&v, &f, 0, true);
        assert!(!out.contains("Member Name"));
        assert!(out.contains("service:db") && !out.contains("service:web"));
        assert_eq!(code, 110);
        let f = Filter {
            member: Some("node-02".into()),
            ..Default::default()
        };
        let (out, code) = text(&v, &f, 0, true);
        assert!(out.contains("node-02") && !out.contains("node-01") && !out.contains("Service"));
        assert_eq!(code, 0);
        let f = Filter {
            service: Some("service:nope".into()),
            ..Default::default()
        };
        assert_eq!(text(&v, &f, 0, true).1, 1);
    }

    #[test]
    fn long_format() {
        let mut v = view();
        v.services[0].record.frozen = true;
        let f = Filter {
            service: Some("service:web".into()),
            long: true,
            ..Default::default()
        };
        let (out, code) = text(&v, &f, 0, true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            &lines[..7],
            [
                "Service Information",
                "------- -----------",
                "",
                "Service Name      : service:web",
                "  Current State   : started (112)",
                "  Flags           : frozen (1)",
                "  Owner           : node-01",
            ]
        );
        assert_eq!(lines[7], "  Last Owner      : none");
        assert!(lines[8].starts_with("  Last Transition : "));
        assert_eq!(code, 0);
        let (out, _) = text(&v, &Filter::default(), 0, true);
        assert!(
            out.contains(" service:web     node-01         started [Z]\n"),
            "{out}"
        );
    }

    #[test]
    fn xml_is_rgmanager3s() {
        let out = xml(&view(), 4242, &Filter::default(), true);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "clustat");
        assert_eq!(root.attribute("version"), Some("4.1.1"));
        let c = root.children().find(|n| n.has_tag_name("cluster")).unwrap();
        assert_eq!(c.attribute("name"), Some("alpha"));
        assert_eq!(c.attribute("id"), Some("4242"));
        let q = root.children().find(|n| n.has_tag_name("quorum")).unwrap();
        assert_eq!(
            (q.attribute("quorate"), q.attribute("groupmember")),
            (Some("1"), Some("1"))
        );
        let n1 = doc.descendants().find(|n| n.has_tag_name("node")).unwrap();
        assert_eq!(n1.attribute("nodeid"), Some("0x00000001"));
        assert_eq!(n1.attribute("rgmanager_master"), Some("1"));
        let g: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("group"))
            .collect();
        assert_eq!(g[0].attribute("state"), Some("112"));
        assert_eq!(g[0].attribute("state_str"), Some("started"));
        assert_eq!(g[1].attribute("owner"), Some("none"));
        assert_eq!(g[1].attribute("last_owner"), Some("node-02"));
        assert!(out.contains("\n  <nodes>\n    <node name=\"node-01\" state=\"1\" local=\"1\""));
    }

    #[test]
    fn clusvcadm_lines() {
        use AdminAction::*;
        let s = "service:httpd_srv";
        assert_eq!(
            progress(Relocate, s, Some("node2")),
            "Trying to relocate service:httpd_srv to node2..."
        );
        assert_eq!(
            progress(Enable, s, None),
            "Local machine trying to enable service:httpd_srv..."
        );
        assert_eq!(
            progress(Enable, s, Some("node1")),
            "Member node1 trying to enable service:httpd_srv..."
        );
        assert_eq!(
            progress(Disable, s, None),
            "Local machine disabling service:httpd_srv..."
        );
        assert_eq!(
            now_running(s, "node2", Some("node2")),
            "service:httpd_srv is now running on node2"
        );
        assert_eq!(
            now_running(s, "node1", Some("node2")),
            "Warning: service:httpd_srv is now running on node1"
        );
    }
}
