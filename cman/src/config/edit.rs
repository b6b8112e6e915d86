//! The editing commands of `ccs_tool`: create, addnode, delnode. Each returns
//! a new validated config with `config_version` raised by one.

use super::{ClusterConf, ConfigError, Element};

/// Arguments of `ccs_tool addnode`.
#[derive(Clone, Debug, Default)]
pub struct NewNode {
    /// Node name.
    pub name: String,
    /// Node id (default: lowest unused).
    pub nodeid: Option<u32>,
    /// Votes (default 1).
    pub votes: Option<u32>,
    /// Fence device for method "1", with its per-node attributes.
    pub fence_device: Option<String>,
    /// Extra `key=value` attributes for the device reference.
    pub fence_args: Vec<(String, String)>,
}

/// `ccs_tool create [-2] NAME`: a skeleton config with no nodes yet. It is
/// returned as text because an empty node list does not validate.
pub fn create(name: &str, two_node: bool) -> String {
    let mut root = Element::new("cluster")
        .with_attr("name", name)
        .with_attr("config_version", "1");
    if two_node {
        root.children.push(
            Element::new("cman")
                .with_attr("two_node", "1")
                .with_attr("expected_votes", "1"),
        );
    }
    for el in ["clusternodes", "fencedevices", "rm"] {
        root.children.push(Element::new(el));
    }
    root.to_document()
}

fn bump(root: &mut Element) {
    let v: u64 = root
        .attr("config_version")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    root.set_attr("config_version", &(v + 1).to_string());
}

fn clusternodes(root: &mut Element) -> &mut Element {
    if root.child("clusternodes").is_none() {
        root.children.push(Element::new("clusternodes"));
    }
    root.child_mut("clusternodes").expect("just added")
}

fn node_element(node: &NewNode, nodeid: u32) -> Element {
    let mut el = Element::new("clusternode")
        .with_attr("name", &node.name)
        .with_attr("nodeid", &nodeid.to_string())
        .with_attr("votes", &node.votes.unwrap_or(1).to_string());
    if let Some(dev) = &node.fence_device {
        let mut d = Element::new("device").with_attr("name", dev);
        for (k, v) in &node.fence_args {
            d.set_attr(k, v);
        }
        let mut m = Element::new("method").with_attr("name", "1");
        m.children.push(d);
        let mut f = Element::new("fence");
        f.children.push(m);
        el.children.push(f);
    }
    el
}

fn free_nodeid(root: &Element) -> u32 {
    let used: Vec<u32> = root
        .child("clusternodes")
        .map(|c| {
            c.children_named("clusternode")
                .filter_map(|n| n.attr("nodeid")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (1..).find(|i| !used.contains(i)).expect("some id is free")
}

/// `ccs_tool addnode`: adds a node to the document `text`.
pub fn add_node(text: &str, node: &NewNode) -> Result<ClusterConf, ConfigError> {
    let mut root = super::xml::parse(text)?;
    let nodeid = node.nodeid.unwrap_or_else(|| free_nodeid(&root));
    clusternodes(&mut root)
        .children
        .push(node_element(node, nodeid));
    bump(&mut root);
    ClusterConf::from_element(root)
}

/// `ccs_tool delnode`: removes node `name` from the document `text`.
pub fn del_node(text: &str, name: &str) -> Result<ClusterConf, ConfigError> {
    let mut root = super::xml::parse(text)?;
    let line = root.line;
    let nodes = clusternodes(&mut root);
    let before = nodes.children.len();
    nodes
        .children
        .retain(|n| !(n.name == "clusternode" && n.attr("name") == Some(name)));
    if nodes.children.len() == before {
        return Err(ConfigError::at(
            line,
            format!("node {name} is not in the config"),
        ));
    }
    bump(&mut root);
    ClusterConf::from_element(root)
}
