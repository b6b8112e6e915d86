//! cman_tool: status, nodes, join, leave, version, expected, services,
//! keygen.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cman::api::{ApiRequest, Client};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "cman_tool", about = "Cluster manager administration")]
struct Args {
    /// State directory of the node's cmand.
    #[arg(long, global = true, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Cluster status.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Cluster nodes.
    Nodes {
        /// Show the last fencing of each node.
        #[arg(short = 'f')]
        fence: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Start cmand for this node and wait until it answers.
    Join {
        /// cluster.conf.
        #[arg(short = 'c', default_value = "/etc/cluster/cluster.conf")]
        config: PathBuf,
        /// Node name.
        #[arg(short = 'n')]
        node_name: Option<String>,
        /// Key file.
        #[arg(short = 'k', long)]
        key_file: Option<PathBuf>,
        /// Seconds to wait for the daemon.
        #[arg(short = 't', default_value_t = 10)]
        timeout: u64,
    },
    /// Leave the cluster cleanly (the daemon exits).
    Leave {
        /// Seconds to wait.
        #[arg(short = 't', default_value_t = 10)]
        timeout: u64,
    },
    /// Show the version, or with -r load a new config version.
    Version {
        /// New config_version to load from the config file.
        #[arg(short = 'r')]
        reload: Option<u64>,
        /// cluster.conf holding the new version.
        #[arg(short = 'c', default_value = "/etc/cluster/cluster.conf")]
        config: PathBuf,
    },
    /// Set expected votes.
    Expected {
        /// Votes.
        #[arg(short = 'e')]
        votes: u32,
    },
    /// Groups and the fence domain.
    Services,
    /// Make a new cluster key (128 random bytes, mode 0400), as
    /// corosync-keygen does; copy it to every node.
    Keygen {
        /// Where to write the key.
        #[arg(short = 'k', long = "key-file", default_value = cman::authkey::DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        /// Overwrite an existing key.
        #[arg(short = 'f')]
        force: bool,
    },
}

fn client(dir: &Path) -> Result<Client> {
    Client::connect(dir).context("cman_tool: cman is not running")
}

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    let dir = a.state_dir.as_path();
    match a.cmd {
        Cmd::Status { json } => {
            let s = client(dir)?.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", cman::report::status(&s));
            }
        }
        Cmd::Nodes { fence, json } => {
            let s = client(dir)?.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s.nodes)?);
            } else {
                print!("{}", cman::report::nodes(&s, fence));
            }
        }
        Cmd::Join {
            config,
            node_name,
            key_file,
            timeout,
        } => join(dir, &config, node_name, key_file, timeout)?,
        Cmd::Leave { timeout } => leave(dir, timeout)?,
        Cmd::Version { reload, config } => version(dir, reload, &config)?,
        Cmd::Expected { votes } => {
            let r = client(dir)?.request(&ApiRequest::Expected { votes })?;
            println!("{}", r.msg.unwrap_or_default());
        }
        Cmd::Services => print!("{}", cman::report::services(&client(dir)?.status()?)),
        Cmd::Keygen { key_file, force } => {
            cman::authkey::write_new_key(&key_file, force)?;
            println!(
                "cman_tool: wrote a {}-byte key to {}; copy it to every node",
                cman::authkey::NEW_KEY_BYTES,
                key_file.display()
            );
        }
    }
    Ok(())
}

fn join(
    dir: &Path,
    config: &Path,
    name: Option<String>,
    key: Option<PathBuf>,
    timeout: u64,
) -> Result<()> {
    if Client::connect(dir).is_ok() {
        bail!("cman_tool: node is already active");
    }
    let exe = std::env::current_exe()?.with_file_name("cmand");
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-f")
        .arg("-c")
        .arg(config)
        .arg("--state-dir")
        .arg(dir);
    if let Some(n) = name {
        cmd.arg("-n").arg(n);
    }
    if let Some(k) = key {
        cmd.arg("--key-file").arg(k);
    }
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("cmand.log"))?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = cmd.spawn().context("cannot start cmand")?;
    let end = Instant::now() + Duration::from_secs(timeout);
    while Instant::now() < end {
        if Client::connect(dir).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "cmand exited ({st}); see {}",
                dir.join("cmand.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("cmand did not answer within {timeout} s")
}

fn leave(dir: &Path, timeout: u64) -> Result<()> {
    client(dir)?.request(&ApiRequest::LeaveCluster)?;
    let end = Instant::now() + Duration::from_secs(timeout);
    while Instant::now() < end {
        if Client::connect(dir).is_err() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("cmand did not leave within {timeout} s")
}

fn version(dir: &Path, reload: Option<u64>, config: &Path) -> Result<()> {
    let mut c = client(dir)?;
    let Some(v) = reload else {
        let s = c.status()?;
        println!("{} config {}", cman::report::VERSION, s.config_version);
        return Ok(());
    };
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let conf = cman::config::ClusterConf::parse(&text)?;
    if conf.config_version != v {
        bail!(
            "{} has config_version {}, not {v}",
            config.display(),
            conf.config_version
        );
    }
    let r = c.request(&ApiRequest::ConfigUpdate { text })?;
    println!("{}", r.msg.unwrap_or_default());
    Ok(())
}
