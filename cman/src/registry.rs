//! The node-local registry of a node's cluster processes: every process
//! that holds cluster locks, writes shared storage or runs a service
//! (cmand, mount.clusterfs, dlm users...) writes its PID to a `*.pid` file
//! in the node's state directory.
//!
//! Two users: fencing in the lab (`fence_lab` kills every registered
//! process, as a power switch would take them all down), and cmand's
//! start: a cmand that finds a process of the node's earlier cmand still
//! running is *held* (see [`crate::node::Event::OldProcesses`]) until it
//! is gone. Such a process may still hold locks or write; a new cmand
//! joining would let the node be counted as "rejoined" while the old
//! process lives on (a cman restart was a reboot in the kernel stack;
//! here cmand is one process among several).

use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// A registered process: its pid file and PID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The pid file.
    pub file: PathBuf,
    /// The PID it names.
    pub pid: Pid,
    /// Its start time (clock ticks after boot, /proc/PID/stat), to tell
    /// it from a later process given the same PID.
    pub started: Option<u64>,
}

impl Registered {
    /// True while this very process runs (not a later one with its PID).
    pub fn still_runs(&self) -> bool {
        alive(self.pid) && start_time(self.pid) == self.started
    }
}

impl std::fmt::Display for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.file.file_name().unwrap_or_default().to_string_lossy();
        write!(f, "PID {} of {name}", self.pid)
    }
}

/// Start time of `pid` in clock ticks after boot, if it runs.
fn start_time(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())).ok()?;
    // Fields after the command name: state is field 3, starttime field 22.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Every process registered in `dir` (alive or not).
pub fn registered(dir: &Path) -> Vec<Registered> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<Registered> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| {
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()?;
            let pid = Pid::from_raw(pid);
            (pid.as_raw() > 1).then(|| Registered {
                file: e.path(),
                pid,
                started: start_time(pid),
            })
        })
        .collect();
    v.sort_by(|a, b| a.file.cmp(&b.file));
    v
}

/// True while `pid` runs (a zombie counts as gone).
pub fn alive(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw()))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The registered processes of `dir` that still run, other than this one.
pub fn still_running(dir: &Path) -> Vec<Registered> {
    let me = Pid::this();
    registered(dir)
        .into_iter()
        .filter(|r| r.pid != me && alive(r.pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_dead_and_garbage_pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join("user.pid"), format!("{}\n", child.id())).unwrap();
        std::fs::write(dir.path().join("dead.pid"), "999999999\n").unwrap();
        std::fs::write(dir.path().join("junk.pid"), "not a pid").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "1").unwrap();
        std::fs::write(dir.path().join("me.pid"), std::process::id().to_string()).unwrap();
        let running = still_running(dir.path());
        assert_eq!(running.len(), 1, "{running:?}");
        assert_eq!(running[0].pid.as_raw() as u32, child.id());
        assert_eq!(registered(dir.path()).len(), 3);
        assert!(running[0].still_runs());
        assert_eq!(
            running[0].to_string(),
            format!("PID {} of user.pid", child.id())
        );
        // A later process with the same PID is not the registered one.
        let impostor = Registered {
            started: running[0].started.map(|t| t + 1),
            ..running[0].clone()
        };
        assert!(!impostor.still_runs());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(still_running(dir.path()).is_empty());
        assert!(!running[0].still_runs());
    }
}
