//! rgmanager: the HA service manager daemon of one node, beside its cmand.

use clap::Parser;
use rgmanager::daemon::{run, Options};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "rgmanager",
    about = "Resource group manager: starts, watches and moves HA services"
)]
struct Args {
    /// Stay in the foreground (always the case; accepted for compatibility).
    #[arg(short = 'f')]
    foreground: bool,
    /// The node's cmand state directory (its socket; our pid file and
    /// control socket go there too).
    #[arg(long, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Where the resource agents are.
    #[arg(long, default_value = rgmanager::agent::DEFAULT_AGENT_DIR)]
    agent_dir: PathBuf,
    /// Seconds between status checks of the services (rgmanager's 10).
    #[arg(long, default_value_t = 10.0)]
    status_interval: f64,
}

fn main() -> ExitCode {
    tools::init_logging();
    let a = Args::parse();
    let _ = a.foreground;
    let opts = Options {
        state_dir: a.state_dir,
        agent_dir: a.agent_dir,
        status_interval: Duration::from_secs_f64(a.status_interval.max(0.05)),
    };
    match run(opts) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("rgmanager: {e}");
            ExitCode::from(2)
        }
    }
}
