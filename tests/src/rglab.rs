//! rgmanager in a lab cluster: starting it on a node (its log in the
//! node's state directory) and reading a service's owner and state as
//! `clustat` would, shared by the rgmanager and luci tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rgmanager::control::{request, Request, Response};

/// rgmanager for the node whose state directory is `state`, checking its
/// services' status every `status_interval` seconds; logs to
/// `state/rgmanager.log`.
pub fn rgmanager(state: &Path, status_interval: &str) -> Child {
    let log = std::fs::File::create(state.join("rgmanager.log")).unwrap();
    crate::spawn(
        Command::new(crate::bin("rgmanager"))
            .arg("-f")
            .arg("--state-dir")
            .arg(state)
            .arg("--agent-dir")
            .arg(rgmanager::agent::shipped_agents_dir())
            .arg("--status-interval")
            .arg(status_interval)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .unwrap()
}

/// (owner, state) of service `name` (`service:web`) as the rgmanager of
/// `state` says; the owner is `none` when it has none.
pub fn service(state: &Path, name: &str) -> Option<(String, String)> {
    let r = request(state, &Request::Status, Duration::from_secs(5)).ok()?;
    let Response::Status(v) = r else { return None };
    let s = v.services.iter().find(|s| s.name == name)?;
    Some((
        s.owner.clone().unwrap_or_else(|| "none".into()),
        s.record.state.as_str().to_string(),
    ))
}

/// Prints the cmand and rgmanager logs of each node's state directory.
pub fn dump_logs(states: &[std::path::PathBuf]) {
    for (i, state) in states.iter().enumerate() {
        for f in ["cmand.log", "rgmanager.log"] {
            let t = std::fs::read_to_string(state.join(f)).unwrap_or_default();
            eprintln!("==== node {} {f}\n{t}", i + 1);
        }
    }
}
