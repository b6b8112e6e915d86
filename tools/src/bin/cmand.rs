//! cmand: the cluster manager daemon (membership, quorum, groups, config,
//! fencing) for one node.

use clap::Parser;
use cman::daemon::{run, DaemonOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "cmand",
    about = "Cluster manager daemon: membership, quorum, groups, fencing"
)]
struct Args {
    /// Stay in the foreground (always the case; accepted for compatibility).
    #[arg(short = 'f')]
    foreground: bool,
    /// cluster.conf to use.
    #[arg(short = 'c', default_value = "/etc/cluster/cluster.conf")]
    config: PathBuf,
    /// Which clusternode this is (default: the node named like the host, or
    /// whose address is local). Names resolve through /etc/hosts (or
    /// $CMAN_HOSTS_FILE), then the system resolver.
    #[arg(short = 'n')]
    node_name: Option<String>,
    /// State directory: socket, pid file, authkey.
    #[arg(long, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Cluster key file, which must exist (default STATE_DIR/authkey, then
    /// /etc/cluster/authkey, then a key derived from the cluster name, with a
    /// warning: make a real one with `cman_tool keygen`).
    #[arg(long, short = 'k')]
    key_file: Option<PathBuf>,
    /// Serve the counters (membership events, messages) as `GET /metrics`
    /// (Prometheus text) at this address.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    tools::init_logging();
    let a = Args::parse();
    let _ = a.foreground;
    let opts = DaemonOptions {
        conf_path: a.config,
        node_name: a.node_name,
        state_dir: a.state_dir,
        key_file: a.key_file,
        metrics: a.metrics,
    };
    match run(opts) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("cmand: {e}");
            ExitCode::from(2)
        }
    }
}
