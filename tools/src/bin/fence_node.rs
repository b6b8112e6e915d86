//! fence_node: fence (or with -U unfence) a node by hand, using its methods
//! from cluster.conf, and tell cmand.

use anyhow::{bail, Context, Result};
use clap::Parser;
use cman::api::{ApiRequest, Client};
use cman::config::{ClusterConf, DeviceRef};
use cman::node::DeviceCall;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "fence_node", about = "Fence or unfence a cluster node")]
struct Args {
    /// Unfence instead (the node's <unfence> devices, action=on).
    #[arg(short = 'U')]
    unfence: bool,
    /// State directory of this node's cmand.
    #[arg(long, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// cluster.conf (used when cmand is not running).
    #[arg(short = 'c', default_value = "/etc/cluster/cluster.conf")]
    config: PathBuf,
    /// Node to fence.
    node: String,
}

fn call(conf: &ClusterConf, d: &DeviceRef, node: &str, action: &str) -> Option<DeviceCall> {
    let dev = conf.fence_device(&d.name)?;
    let mut args = dev.attrs.clone();
    args.extend(d.attrs.clone());
    args.insert("action".into(), action.into());
    args.entry("nodename".into()).or_insert(node.to_string());
    Some(DeviceCall {
        agent: dev.agent.clone(),
        args,
    })
}

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    let mut client = Client::connect(&a.state_dir).ok();
    let text = match client.as_mut() {
        Some(c) => c.request(&ApiRequest::GetConfig)?.msg.unwrap_or_default(),
        None => {
            std::fs::read_to_string(&a.config).with_context(|| a.config.display().to_string())?
        }
    };
    let conf = ClusterConf::parse(&text)?;
    let node = conf
        .node_by_name(&a.node)
        .context(format!("node {} is not in cluster.conf", a.node))?;
    let methods: Vec<Vec<DeviceCall>> = if a.unfence {
        vec![node
            .unfence
            .iter()
            .filter_map(|d| call(&conf, d, &node.name, "on"))
            .collect()]
    } else {
        node.fence
            .iter()
            .map(|m| {
                m.devices
                    .iter()
                    .filter_map(|d| call(&conf, d, &node.name, "off"))
                    .collect()
            })
            .collect()
    };
    let job = cman::node::FenceJob {
        victim: cman::ids::Member {
            id: node.id,
            inc: cman::ids::Incarnation(0),
        },
        node_name: node.name.clone(),
        methods,
    };
    let (ok, how) = cman::agent::run_job(&job, cman::agent::AGENT_TIMEOUT);
    let what = if a.unfence { "unfence" } else { "fence" };
    if !ok {
        bail!("{what} {} failed: {how}", node.name);
    }
    if let (false, Some(c)) = (a.unfence, client.as_mut()) {
        let req = ApiRequest::FenceOverride {
            node: node.name.clone(),
            how: format!("fence_node ({how})"),
        };
        if let Err(e) = c.request(&req) {
            eprintln!("fence_node: could not tell cmand: {e}");
        }
    }
    println!("{what} {} success", node.name);
    Ok(())
}
