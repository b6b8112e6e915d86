//! luci: the cluster's web console (see luci/README.md).
//!
//! `luci [--listen ADDR:PORT] [--state-dir DIR]... [--data-dir DIR] [--users FILE]`
//! serves; `luci --add-user NAME --role admin|readonly [--users FILE]`
//! adds a user, reading the password from the first line of stdin.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use luci::users::{self, Role};

#[derive(Parser, Debug)]
#[command(name = "luci", about = "The cluster's web console")]
struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = luci::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// A node's state directory (cmand's and rgmanager's sockets); luci
    /// acts through the first. Give more for nodes on this machine.
    #[arg(long = "state-dir")]
    state_dirs: Vec<PathBuf>,
    /// luci's own files: audit.log, history/.
    #[arg(long, default_value = luci::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The users file (default DATA_DIR/users).
    #[arg(long)]
    users: Option<PathBuf>,
    /// Minutes without a request after which a session ends.
    #[arg(long, default_value_t = 30)]
    session_minutes: u64,
    /// Directory of tgtd's control socket (default: $TGT_CONTROL_DIR or
    /// /var/run/tgtd), for the storage page.
    #[arg(long)]
    tgtd_control_dir: Option<PathBuf>,
    /// tgtd's control port (its socket is DIR/socket.N), as tgtadm's -C.
    #[arg(long, default_value_t = 0)]
    tgtd_control_port: u32,
    /// Directory of the dlm users' control sockets (default: $DLM_CTL_DIR
    /// or /tmp/dlm-ctl, as dlm_tool's), for the storage page.
    #[arg(long)]
    dlm_ctl_dir: Option<PathBuf>,
    /// Add this user (password on stdin) and exit.
    #[arg(long, value_name = "NAME")]
    add_user: Option<String>,
    /// The new user's role: admin or readonly.
    #[arg(long, requires = "add_user")]
    role: Option<String>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let users = a.users.unwrap_or_else(|| a.data_dir.join("users"));
    if let Some(name) = a.add_user {
        let role = a.role.as_deref().unwrap_or("");
        let Some(role) = Role::parse(role) else {
            bail!("--role must be admin or readonly");
        };
        let mut pw = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut pw)
            .context("reading the password from stdin")?;
        let pw = pw.trim_end_matches(['\n', '\r']);
        if let Some(dir) = users.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        users::add(&users, &name, role, pw)?;
        println!("Added {name} ({}) to {}", role.as_str(), users.display());
        return Ok(());
    }
    let mut state_dirs = a.state_dirs;
    if state_dirs.is_empty() {
        state_dirs.push(PathBuf::from(cman::api::DEFAULT_STATE_DIR));
    }
    let tgtd_dir = a
        .tgtd_control_dir
        .or_else(|| std::env::var_os("TGT_CONTROL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/tgtd"));
    let dlm_ctl_dir = a
        .dlm_ctl_dir
        .or_else(|| std::env::var_os("DLM_CTL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/tmp/dlm-ctl"));
    luci::run(luci::Options {
        dlm_ctl_dir,
        tgtd_socket: iscsi::target::driver::control_path(&tgtd_dir, a.tgtd_control_port),
        listen: a.listen,
        state_dirs,
        data_dir: a.data_dir,
        users,
        session_idle: Duration::from_secs(a.session_minutes.max(1) * 60),
    })?;
    Ok(())
}
