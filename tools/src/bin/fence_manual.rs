//! fence_manual: a fence agent that waits for an operator to reset the node
//! by hand and confirm with `fence_ack_manual NODE`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const METADATA: &str = r#"<?xml version="1.0" ?>
<resource-agent name="fence_manual" shortdesc="Fence agent for manual operator acknowledgement">
<parameters>
  <parameter name="action"><content type="string" default="off"/></parameter>
  <parameter name="nodename"><content type="string"/></parameter>
  <parameter name="state_dir"><content type="string" default="/var/run/cluster"/></parameter>
</parameters>
<actions><action name="off"/><action name="reboot"/><action name="monitor"/><action name="metadata"/></actions>
</resource-agent>"#;

fn main() -> ExitCode {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let o = cman::agent::parse_options(&input);
    let action = o.get("action").map(String::as_str).unwrap_or("off");
    let node = o
        .get("nodename")
        .or_else(|| o.get("port"))
        .cloned()
        .unwrap_or_default();
    let dir = PathBuf::from(
        o.get("state_dir")
            .map(String::as_str)
            .unwrap_or(cman::api::DEFAULT_STATE_DIR),
    );
    match action {
        "metadata" => {
            println!("{METADATA}");
            ExitCode::SUCCESS
        }
        "monitor" | "status" | "on" | "list" => ExitCode::SUCCESS,
        "off" | "reboot" if !node.is_empty() => {
            let ack = dir.join(format!("fence_manual.ack.{node}"));
            eprintln!(
                "fence_manual: reset node \"{node}\" by hand, then run \"fence_ack_manual {node}\""
            );
            loop {
                if std::fs::remove_file(&ack).is_ok() {
                    eprintln!("fence_manual: {node} acknowledged");
                    return ExitCode::SUCCESS;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        _ => {
            eprintln!("fence_manual: bad action {action} or no nodename");
            ExitCode::from(1)
        }
    }
}
