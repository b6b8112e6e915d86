//! The fence-agents stdin protocol: `key=value` lines in, exit code out.

use crate::node::{DeviceCall, FenceJob};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a fence agent may run before it counts as failed.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an agent call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The program could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    /// It ran too long and was killed.
    #[error("{0} timed out")]
    Timeout(String),
    /// It exited with a non-zero code.
    #[error("{0} exited with {1}")]
    Exit(String, i32),
}

/// Parses agent options: `key=value` lines, `#` comments, last value wins,
/// `plug` is an alias of `port`.
pub fn parse_options(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let k = match k.trim() {
                "plug" => "port",
                "option" => "action",
                other => other,
            };
            out.insert(k.to_string(), v.trim().to_string());
        }
    }
    out
}

/// Finds an agent: an absolute path, next to the running program (our own
/// agents), or on PATH.
pub fn find_agent(agent: &str) -> PathBuf {
    let p = Path::new(agent);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let here = dir.join(agent);
        if here.is_file() {
            return here;
        }
    }
    PathBuf::from(agent)
}

/// Runs one agent with `args` on stdin; Ok when it exits 0.
pub fn run_agent(call: &DeviceCall, timeout: Duration) -> Result<(), AgentError> {
    let path = find_agent(&call.agent);
    let mut cmd = Command::new(&path);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // An agent fences for this cmand: if cmand dies (this thread waits for
    // the agent), the agent goes too, rather than waiting for an ack that
    // no daemon would act on.
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| AgentError::Spawn(call.agent.clone(), e))?;
    let input: String = call
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match status.code() {
                    Some(0) => Ok(()),
                    code => Err(AgentError::Exit(call.agent.clone(), code.unwrap_or(-1))),
                };
            }
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AgentError::Timeout(call.agent.clone()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(AgentError::Spawn(call.agent.clone(), e)),
        }
    }
}

/// Runs a fence job: methods in order, all devices of a method must
/// succeed. Returns (success, description).
pub fn run_job(job: &FenceJob, timeout: Duration) -> (bool, String) {
    if job.methods.is_empty() {
        return (false, format!("no fence method for {}", job.node_name));
    }
    let mut errors = Vec::new();
    for (i, method) in job.methods.iter().enumerate() {
        let result: Result<Vec<String>, AgentError> = method
            .iter()
            .map(|d| run_agent(d, timeout).map(|_| d.agent.clone()))
            .collect();
        match result {
            Ok(agents) if !agents.is_empty() => return (true, agents.join("+")),
            Ok(_) => errors.push(format!("method {} has no device", i + 1)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (false, errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_agent_api() {
        let o = parse_options("# comment\naction=off\nplug=n2\nport=n3\n\nbogus\nlogin = admin \n");
        assert_eq!(o["action"], "off");
        assert_eq!(o["port"], "n3", "last value wins, plug is port");
        assert_eq!(o["login"], "admin");
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn jobs_try_methods_in_order() {
        let call = |agent: &str| DeviceCall {
            agent: agent.to_string(),
            args: BTreeMap::new(),
        };
        let job = FenceJob {
            victim: crate::ids::Member {
                id: crate::ids::NodeId(2),
                inc: crate::ids::Incarnation(1),
            },
            node_name: "n2".into(),
            methods: vec![vec![call("true"), call("false")], vec![call("true")]],
        };
        let (ok, how) = run_job(&job, Duration::from_secs(10));
        assert!(ok, "{how}");
        let bad = FenceJob {
            methods: vec![vec![call("false")], vec![call("/nonexistent/agent")]],
            ..job
        };
        let (ok, how) = run_job(&bad, Duration::from_secs(10));
        assert!(!ok);
        assert!(how.contains("false exited with 1"), "{how}");
        assert!(how.contains("cannot run"), "{how}");
    }
}
