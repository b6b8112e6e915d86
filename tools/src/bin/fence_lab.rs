//! fence_lab: the lab power switch for tests. A node's processes are found
//! through the `*.pid` files of its state directory (`state_dir=`, or
//! `lab_dir=` + `/` + port). `off` kills them with SIGKILL and appends a
//! line to `fence_lab.log` in that directory.

use cman::registry;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const METADATA: &str = r#"<?xml version="1.0" ?>
<resource-agent name="fence_lab" shortdesc="Lab power switch: kills the processes of a node's state directory">
<parameters>
  <parameter name="action"><content type="string" default="reboot"/></parameter>
  <parameter name="port"><content type="string"/></parameter>
  <parameter name="state_dir"><content type="string"/></parameter>
  <parameter name="lab_dir"><content type="string"/></parameter>
</parameters>
<actions><action name="on"/><action name="off"/><action name="reboot"/><action name="status"/><action name="monitor"/><action name="list"/><action name="metadata"/></actions>
</resource-agent>"#;

fn node_dir(o: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(d) = o.get("state_dir") {
        return Some(PathBuf::from(d));
    }
    let port = o.get("port").or_else(|| o.get("nodename"))?;
    Some(Path::new(o.get("lab_dir")?).join(port))
}

fn pids(dir: &Path) -> Vec<Pid> {
    registry::registered(dir)
        .into_iter()
        .map(|r| r.pid)
        .collect()
}

fn off(dir: &Path) -> bool {
    let targets = pids(dir);
    for p in &targets {
        let _ = kill(*p, Signal::SIGKILL);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while targets.iter().any(|p| registry::alive(*p)) {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fence_lab.log"));
    if let Ok(mut f) = log {
        let _ = writeln!(
            f,
            "off {:?}",
            targets.iter().map(|p| p.as_raw()).collect::<Vec<_>>()
        );
    }
    true
}

fn main() -> ExitCode {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let o = cman::agent::parse_options(&input);
    let action = o.get("action").map(String::as_str).unwrap_or("reboot");
    if action == "metadata" {
        println!("{METADATA}");
        return ExitCode::SUCCESS;
    }
    if action == "list" {
        if let Some(Ok(entries)) = o.get("lab_dir").map(std::fs::read_dir) {
            for e in entries.flatten() {
                println!("{},", e.file_name().to_string_lossy());
            }
        }
        return ExitCode::SUCCESS;
    }
    if action == "monitor" {
        return ExitCode::SUCCESS;
    }
    let Some(dir) = node_dir(&o) else {
        eprintln!("fence_lab: need state_dir=, or lab_dir= and port=");
        return ExitCode::from(1);
    };
    // fence-agents' `delay`: wait before acting, so that in a fence race the
    // node whose device has the delay survives.
    if let Some(secs) = o.get("delay").and_then(|d| d.parse::<u64>().ok()) {
        if matches!(action, "off" | "reboot") {
            let parent = nix::unistd::getppid();
            std::thread::sleep(Duration::from_secs(secs.min(60)));
            // The fencing node was itself powered off meanwhile: so is its
            // request to the switch.
            if nix::unistd::getppid() != parent {
                eprintln!("fence_lab: the fencing node is gone");
                return ExitCode::from(1);
            }
        }
    }
    match action {
        "off" | "reboot" => {
            if off(&dir) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        "on" => ExitCode::SUCCESS,
        "status" => {
            if pids(&dir).into_iter().any(registry::alive) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        other => {
            eprintln!("fence_lab: unknown action {other}");
            ExitCode::from(1)
        }
    }
}
