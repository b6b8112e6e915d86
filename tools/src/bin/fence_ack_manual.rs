//! fence_ack_manual: confirm that a node was reset by hand.

use anyhow::Result;
use clap::Parser;
use cman::api::{ApiRequest, Client};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "fence_ack_manual", about = "Acknowledge a manual fence")]
struct Args {
    /// State directory of this node's cmand (also where fence_manual waits).
    #[arg(long, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The node that was reset.
    node: String,
}

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    std::fs::create_dir_all(&a.state_dir)?;
    std::fs::write(
        a.state_dir.join(format!("fence_manual.ack.{}", a.node)),
        b"ack\n",
    )?;
    if let Ok(mut c) = Client::connect(&a.state_dir) {
        let req = ApiRequest::FenceOverride {
            node: a.node.clone(),
            how: "fence_ack_manual".into(),
        };
        c.request(&req)?;
    }
    println!("fence_ack_manual: {} acknowledged", a.node);
    Ok(())
}
