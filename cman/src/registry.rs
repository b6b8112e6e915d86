//! The node-local registry of a node's cluster processes: every process
//! that holds cluster locks, writes shared storage or runs a service
//! (cmand, mount.clusterfs, dlm users...) writes its PID to a `*.pid` file
//! in the node's state directory.
//!
//! Two users: fencing in the lab (`fence_lab` kills every registered
//! process, as a power switch would take them all down), and cmand's
//! start, which refuses to join while a process of the node's previous
//! cmand still runs. Such a process may still hold locks or write; a new
//! cmand joining would let the node be counted as "rejoined" while the
//! old process lives on (a cman restart was a reboot in the kernel stack;
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
            (pid > 1).then(|| Registered {
                file: e.path(),
                pid: Pid::from_raw(pid),
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
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(still_running(dir.path()).is_empty());
    }
}
