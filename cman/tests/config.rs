//! cluster.conf parsing and validation.

use cman::config::{add_node, create, del_node, ClusterConf, NewNode};
use cman::ids::NodeId;

const SEED: &str = include_str!("../testdata/seed-cluster.conf");

#[test]
fn seed_file_loads_verbatim() {
    let c = ClusterConf::parse(SEED).expect("seed cluster.conf");
    assert_eq!(c.name, "httpd_cluster");
    assert_eq!(c.config_version, 2);
    assert_eq!(c.fence_daemon.post_fail_delay_s, 0);
    assert_eq!(c.fence_daemon.post_join_delay_s, 3);
    assert!(c.cman.two_node);
    assert_eq!(c.cman.expected_votes, Some(1));
    assert_eq!(c.nodes.len(), 2);
    let n2 = c.node(NodeId(2)).unwrap();
    assert_eq!(n2.name, "RealServer2");
    assert_eq!(n2.fence[0].devices[0].name, "fence2");
    assert_eq!(n2.fence[0].devices[0].attrs["nodename"], "RealServer2");
    assert_eq!(c.fence_device("fence1").unwrap().agent, "fence_manual");
    let rm = c.rm.as_ref().unwrap();
    assert_eq!(rm.failover_domains[0].name, "httpd_fail");
    assert!(rm.failover_domains[0].restricted);
    assert_eq!(rm.resources.len(), 3);
    assert_eq!(rm.resources[2].attr("mountpoint"), Some("/var/www/html"));
    assert_eq!(rm.services[0].attr("recovery"), Some("relocate"));
    assert_eq!(rm.services[0].children.len(), 3);
    // Regenerated text parses to the same config.
    let again = ClusterConf::parse(&c.to_document()).unwrap();
    assert_eq!(again.nodes, c.nodes);
    assert_eq!(again.rm, c.rm);
}

fn err(text: &str) -> String {
    ClusterConf::parse(text).unwrap_err().to_string()
}

fn seed_with(from: &str, to: &str) -> String {
    assert!(SEED.contains(from), "{from}");
    SEED.replacen(from, to, 1)
}

#[test]
fn bad_xml_names_the_line() {
    let e = err(&seed_with("</clusternodes>", "</clusternode>"));
    assert!(e.contains("bad XML"), "{e}");
    assert!(e.starts_with("cluster.conf line 19"), "{e}");
}

#[test]
fn unknown_failover_domain_node() {
    let e = err(&seed_with(
        "<failoverdomainnode name=\"RealServer2\"",
        "<failoverdomainnode name=\"RealServer9\"",
    ));
    assert_eq!(
        e,
        "cluster.conf line 29: failover domain httpd_fail names unknown node RealServer9"
    );
}

#[test]
fn duplicate_nodeid_and_name() {
    let e = err(&seed_with(
        "name=\"RealServer2\" nodeid=\"2\"",
        "name=\"RealServer2\" nodeid=\"1\"",
    ));
    assert_eq!(e, "cluster.conf line 12: duplicate nodeid 1");
    let e = err(&seed_with(
        "name=\"RealServer2\" nodeid=\"2\"",
        "name=\"RealServer1\" nodeid=\"2\"",
    ));
    assert_eq!(e, "cluster.conf line 12: duplicate node name RealServer1");
}

#[test]
fn undefined_fence_device() {
    let e = err(&seed_with(
        "<device name=\"fence2\"",
        "<device name=\"nope\"",
    ));
    assert_eq!(
        e,
        "cluster.conf line 15: fence device nope is not defined in <fencedevices>"
    );
}

#[test]
fn votes_out_of_range_and_not_numbers() {
    let e = err(&seed_with(
        "nodeid=\"2\" votes=\"1\"",
        "nodeid=\"2\" votes=\"300\"",
    ));
    assert_eq!(
        e,
        "cluster.conf line 12: <clusternode> votes=300 is out of range 0..=255"
    );
    let e = err(&seed_with(
        "nodeid=\"2\" votes=\"1\"",
        "nodeid=\"2\" votes=\"x\"",
    ));
    assert!(e.contains("votes=\"x\" is not a number"), "{e}");
}

#[test]
fn missing_names() {
    let e = err(&seed_with("name=\"httpd_cluster\"", ""));
    assert_eq!(e, "cluster.conf line 2: <cluster> has no name attribute");
    let e = err(&seed_with(
        "<clusternode name=\"RealServer2\"",
        "<clusternode",
    ));
    assert_eq!(
        e,
        "cluster.conf line 12: <clusternode> has no name attribute"
    );
    let e = err(&seed_with(
        "<fencedevice agent=\"fence_manual\" name=\"fence2\"/>",
        "<fencedevice agent=\"fence_manual\"/>",
    ));
    assert!(e.contains("<fencedevice> has no name attribute"), "{e}");
}

#[test]
fn two_node_needs_two_nodes() {
    let three = seed_with(
        "</clusternodes>",
        "<clusternode name=\"n3\" nodeid=\"3\"/></clusternodes>",
    );
    assert!(err(&three).contains("two_node=\"1\" needs exactly 2 nodes"));
}

#[test]
fn unknown_elements_and_attributes_are_kept() {
    let text = seed_with("<rm>", "<rm log_level=\"7\"><futurething x=\"1\"/>").replacen(
        "<cluster ",
        "<cluster foo=\"bar\" ",
        1,
    );
    let c = ClusterConf::parse(&text).unwrap();
    assert_eq!(c.root.attr("foo"), Some("bar"));
    let rm = c.root.child("rm").unwrap();
    assert_eq!(rm.attr("log_level"), Some("7"));
    assert_eq!(rm.child("futurething").unwrap().attr("x"), Some("1"));
}

#[test]
fn hostile_xml_is_refused_cleanly() {
    // Entity expansion (billion laughs) needs a DTD, which is refused.
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><cluster name=\"&lol2;\"/>";
    assert!(err(laughs).contains("bad XML"), "{}", err(laughs));
    // External entity.
    let xxe = "<!DOCTYPE c [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><cluster name=\"&x;\"/>";
    assert!(err(xxe).contains("bad XML"));
    // Deep nesting.
    let deep = format!(
        "<cluster name=\"a\">{}{}</cluster>",
        "<a>".repeat(5000),
        "</a>".repeat(5000)
    );
    assert!(err(&deep).contains("nested deeper than"), "{}", err(&deep));
    // Huge attribute.
    let huge = format!("<cluster name=\"{}\"/>", "x".repeat(100_000));
    assert!(err(&huge).contains("longer than"));
    // Huge file.
    let big = format!("<cluster name=\"a\">{}</cluster>", " ".repeat(2 << 20));
    assert!(err(&big).contains("limit"));
    // Not XML at all, empty, binary.
    for junk in ["", "\0\0\0", "<cluster", "hello", "<a/>"] {
        assert!(ClusterConf::parse(junk).is_err(), "{junk:?}");
    }
}

#[test]
fn totem_token_and_defaults() {
    let c = ClusterConf::parse(SEED).unwrap();
    assert_eq!(c.totem.token_ms, cman::config::DEFAULT_TOKEN_MS);
    assert_eq!(c.cman.port, 5405);
    let t = seed_with(
        "<cman ",
        "<totem token=\"500\"/><cman last_man_standing=\"0\" ",
    );
    assert_eq!(ClusterConf::parse(&t).unwrap().totem.token_ms, 500);
}

#[test]
fn ccs_tool_edits() {
    let text = create("lab", false);
    assert!(ClusterConf::parse(&text).is_err(), "no nodes yet");
    let mut conf = None;
    let mut text = text;
    for i in 1..=3 {
        let c = add_node(
            &text,
            &NewNode {
                name: format!("127.0.1.{i}"),
                ..Default::default()
            },
        )
        .unwrap();
        text = c.to_document();
        conf = Some(c);
    }
    let c = conf.unwrap();
    assert_eq!(c.config_version, 4);
    assert_eq!(
        c.nodes.iter().map(|n| n.id.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let c = del_node(&text, "127.0.1.2").unwrap();
    assert_eq!(c.config_version, 5);
    assert_eq!(c.nodes.len(), 2);
    assert!(del_node(&text, "nope").is_err());
    let dup = add_node(
        &text,
        &NewNode {
            name: "x".into(),
            nodeid: Some(1),
            ..Default::default()
        },
    );
    assert!(dup.unwrap_err().to_string().contains("duplicate nodeid 1"));
    let undefined = add_node(
        &text,
        &NewNode {
            name: "y".into(),
            fence_device: Some("nodev".into()),
            ..Default::default()
        },
    );
    assert!(undefined.is_err());
}
