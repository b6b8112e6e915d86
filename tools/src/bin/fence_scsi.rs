//! fence_scsi: I/O fencing with SCSI-3 persistent reservations over iSCSI
//! (the agent itself is [`cman::fence_scsi`]).
//!
//! Options come as `key=value` lines on stdin (the fence agent protocol) or,
//! when there are command-line arguments, from those instead; each flag
//! stands for the stdin key of the same name.
//!
//! Exit codes: 0 success (status: registered), 1 failure, 2 status: not
//! registered (fenced).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use cman::fence_scsi::{Agent, Outcome, METADATA};

#[derive(Parser, Debug, Default)]
#[command(
    name = "fence_scsi",
    about = "Fence agent for SCSI persistent reservations over iSCSI",
    after_help = "With no arguments, reads key=value lines on stdin.\n\
                  Actions: on off status monitor list metadata validate-all",
    args_override_self = true
)]
struct Args {
    /// Fencing action (stdin: action=).
    #[arg(short = 'o', long)]
    action: Option<String>,
    /// Node name or id of the node to act on (stdin: port= or plug=).
    #[arg(short = 'n', long = "plug", visible_alias = "port")]
    port: Option<String>,
    /// LUN files (/dev/disk/by-path/...) or iscsi://HOST/IQN/LUN URLs,
    /// comma separated (stdin: devices=).
    #[arg(short = 'd', long)]
    devices: Option<String>,
    /// Key to act on, hex (stdin: key=).
    #[arg(short = 'k', long)]
    key: Option<String>,
    /// Name or id of the local node (stdin: nodename=).
    #[arg(long)]
    nodename: Option<String>,
    /// Cluster name, else read from cluster.conf (stdin: cluster_name=).
    #[arg(long)]
    cluster_name: Option<String>,
    /// cluster.conf to read the cluster name and node ids from (stdin: config=).
    #[arg(short = 'c', long)]
    config: Option<String>,
    /// iSCSI initiator name of this node (stdin: initiator_name=).
    #[arg(long)]
    initiator_name: Option<String>,
    /// iSCSI session id of this node, 12 hex digits (stdin: isid=).
    #[arg(long)]
    isid: Option<String>,
    /// iscsiadm's state directory, for LUN file devices (stdin: iscsi_state_dir=).
    #[arg(long)]
    iscsi_state_dir: Option<String>,
}

impl Args {
    /// The flags as the stdin keys they stand for.
    fn into_options(self) -> BTreeMap<String, String> {
        [
            ("action", self.action),
            ("port", self.port),
            ("devices", self.devices),
            ("key", self.key),
            ("nodename", self.nodename),
            ("cluster_name", self.cluster_name),
            ("config", self.config),
            ("initiator_name", self.initiator_name),
            ("isid", self.isid),
            ("iscsi_state_dir", self.iscsi_state_dir),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect()
    }
}

/// The options, from the command line or else from stdin; Err is the exit
/// code when clap has answered already (help, or a bad flag).
fn read_options() -> Result<BTreeMap<String, String>, ExitCode> {
    if std::env::args_os().len() > 1 {
        return match Args::try_parse() {
            Ok(args) => Ok(args.into_options()),
            Err(e) if e.use_stderr() => {
                eprint!("fence_scsi: Failed: {e}");
                Err(ExitCode::FAILURE)
            }
            Err(e) => {
                let _ = e.print();
                Err(ExitCode::SUCCESS)
            }
        };
    }
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("fence_scsi: Failed: cannot read options on stdin: {e}");
        return Err(ExitCode::FAILURE);
    }
    Ok(cman::agent::parse_options(&text))
}

fn main() -> ExitCode {
    tools::init_logging();
    let opts = match read_options() {
        Ok(opts) => opts,
        Err(code) => return code,
    };
    match Agent::from_options(opts).and_then(|mut agent| agent.run()) {
        Ok(outcome) => {
            match &outcome {
                Outcome::Done => {}
                Outcome::Metadata => print!("{METADATA}"),
                Outcome::Status { on } => println!("Status: {}", if *on { "ON" } else { "OFF" }),
                Outcome::Keys(keys) => {
                    for (url, key) in keys {
                        println!("{url} {key}");
                    }
                }
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("fence_scsi: Failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<BTreeMap<String, String>, clap::Error> {
        Args::try_parse_from(std::iter::once("fence_scsi").chain(args.iter().copied()))
            .map(Args::into_options)
    }

    #[test]
    fn flags_map_to_stdin_keys() {
        let o = parse(&[
            "-o",
            "off",
            "--plug=2",
            "--devices",
            "iscsi://h/t/1",
            "--nodename",
            "1",
            "--cluster-name",
            "c",
        ])
        .unwrap();
        assert_eq!(o["action"], "off");
        assert_eq!(o["port"], "2");
        assert_eq!(o["devices"], "iscsi://h/t/1");
        assert_eq!(o["nodename"], "1");
        assert_eq!(o["cluster_name"], "c");
        assert_eq!(o.len(), 5);
        assert_eq!(parse(&["--port", "3", "-n", "4"]).unwrap()["port"], "4");
        assert_eq!(
            parse(&["-o", "on", "-o", "status"]).unwrap()["action"],
            "status"
        );
        let all = parse(&[
            "-k",
            "1",
            "-c",
            "/x",
            "--initiator-name=iqn.a",
            "--isid",
            "400000000001",
            "-d",
            "u",
            "--iscsi-state-dir=/s",
        ])
        .unwrap();
        assert_eq!(all["key"], "1");
        assert_eq!(all["config"], "/x");
        assert_eq!(all["initiator_name"], "iqn.a");
        assert_eq!(all["isid"], "400000000001");
        assert_eq!(all["iscsi_state_dir"], "/s");
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["-o"]).is_err());
    }
}
