//! clvmd — the cluster LVM lock daemon (`lvmconf --enable-cluster`, then
//! `service clvmd start`): joins the DLM lockspace `clvmd` through the
//! node's cmand and takes the VG and activation locks of the node's lvm
//! commands. `-f` stays in the foreground; otherwise it starts itself in
//! the background and returns once it serves. `-d` prints a running
//! clvmd's live state.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "cluster LVM lock daemon")]
struct Args {
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// Print the live state of the running clvmd (locks, cache drops).
    #[arg(short = 'd')]
    dump: bool,
    /// The node's cmand state dir.
    #[arg(long, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Socket for the lvm commands (default: lvm.conf global/clvmd_socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// DLM port of the clvmd lockspace (the same on every node).
    #[arg(long, default_value_t = lvm::clvmd::DEFAULT_PORT)]
    port: u16,
}

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    let conf = lvm::conf::Conf::load(&[]).map_err(anyhow::Error::msg)?;
    let socket = a.socket.clone().unwrap_or_else(|| conf.clvmd_socket());
    if a.dump {
        let d = lvm::clvmd::dump(&socket).map_err(anyhow::Error::msg)?;
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    if !a.foreground {
        return background();
    }
    let cfg = lvm::clvmd::ClvmdConfig {
        state_dir: a.state_dir,
        socket,
        port: a.port,
        conf,
    };
    lvm::clvmd::run(cfg, || {
        println!("ready");
        let _ = std::io::stdout().flush();
    })
    .map_err(anyhow::Error::msg)
}

/// Starts `clvmd -f ...` in its own session and returns once it is ready.
fn background() -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("-f".into());
    let mut cmd = Command::new(exe);
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("start clvmd")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        let st = child.wait()?;
        bail!("clvmd did not start ({st})");
    }
    println!("Starting clvmd: [  OK  ]");
    Ok(())
}
