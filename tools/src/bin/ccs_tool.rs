//! ccs_tool: update the cluster's config, list and edit cluster.conf.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cman::api::{ApiRequest, Client};
use cman::config::{add_node, create, del_node, ClusterConf, NewNode};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(name = "ccs_tool", about = "Cluster configuration system tool")]
struct Args {
    /// State directory of the node's cmand.
    #[arg(long, global = true, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// cluster.conf to read or edit.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "/etc/cluster/cluster.conf"
    )]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Validate FILE and push it to every member.
    Update {
        /// New cluster.conf.
        file: PathBuf,
    },
    /// List nodes.
    Lsnode,
    /// List fence devices.
    Lsfence,
    /// Add a node to the config file.
    Addnode {
        /// Node name.
        name: String,
        /// Node id.
        #[arg(short = 'n')]
        nodeid: Option<u32>,
        /// Votes.
        #[arg(short = 'v')]
        votes: Option<u32>,
        /// Fence device.
        #[arg(short = 'f')]
        fence: Option<String>,
        /// Fence device attributes, key=value.
        args: Vec<String>,
    },
    /// Remove a node from the config file.
    Delnode {
        /// Node name.
        name: String,
    },
    /// Create a skeleton config file.
    Create {
        /// Two-node cluster.
        #[arg(short = '2')]
        two_node: bool,
        /// Cluster name.
        name: String,
    },
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    match a.cmd {
        Cmd::Update { file } => update(&a.state_dir, &file)?,
        Cmd::Lsnode => print!(
            "{}",
            cman::report::lsnode(&ClusterConf::parse(&read(&a.config)?)?)
        ),
        Cmd::Lsfence => print!(
            "{}",
            cman::report::lsfence(&ClusterConf::parse(&read(&a.config)?)?)
        ),
        Cmd::Addnode {
            name,
            nodeid,
            votes,
            fence,
            args,
        } => {
            let fence_args = args
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect::<Option<Vec<_>>>()
                .context("fence arguments are key=value")?;
            let node = NewNode {
                name,
                nodeid,
                votes,
                fence_device: fence,
                fence_args,
            };
            let c = add_node(&read(&a.config)?, &node)?;
            std::fs::write(&a.config, c.to_document())?;
        }
        Cmd::Delnode { name } => {
            let c = del_node(&read(&a.config)?, &name)?;
            std::fs::write(&a.config, c.to_document())?;
        }
        Cmd::Create { two_node, name } => {
            if a.config.exists() {
                bail!("{} already exists", a.config.display());
            }
            std::fs::write(&a.config, create(&name, two_node))?;
        }
    }
    Ok(())
}

fn update(dir: &Path, file: &Path) -> Result<()> {
    let text = read(file)?;
    let new = ClusterConf::parse(&text)?;
    let mut c = Client::connect(dir).context("ccs_tool: cman is not running")?;
    let old = c.status()?.config_version;
    c.request(&ApiRequest::ConfigUpdate { text })?;
    println!(
        "Config file updated from version {old} to {}",
        new.config_version
    );
    println!("\nUpdate complete.");
    Ok(())
}
