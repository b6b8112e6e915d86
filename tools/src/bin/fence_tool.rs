//! fence_tool: join or leave the fence domain, list it.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cman::api::{ApiRequest, Client};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "fence_tool", about = "Fence domain control")]
struct Args {
    /// State directory of the node's cmand.
    #[arg(long, global = true, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Join the fence domain.
    Join,
    /// Leave the fence domain.
    Leave,
    /// Show the fence domain.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    let mut c = Client::connect(&a.state_dir).context("fence_tool: cman is not running")?;
    match a.cmd {
        Cmd::Join => drop(c.request(&ApiRequest::FenceDomain { join: true })?),
        Cmd::Leave => drop(c.request(&ApiRequest::FenceDomain { join: false })?),
        Cmd::Ls { json } => {
            let s = c.status()?;
            if json {
                let v = serde_json::json!({
                    "members": s.fence_domain,
                    "victims": s.victims,
                    "master": s.fence_master,
                    "quorate": s.quorum.quorate,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", cman::report::fence_ls(&s));
            }
        }
    }
    Ok(())
}
