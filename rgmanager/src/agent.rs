//! rgmanager's resource agent interface: an agent is a program
//! `AGENT_DIR/TYPE.sh` called with one action (`start`, `stop`, `status`,
//! `meta-data`, `validate-all`...), its parameters in the environment as
//! `OCF_RESKEY_<attr>`, `OCF_RESOURCE_INSTANCE=type:primary`,
//! `OCF_CHECK_LEVEL` (the status depth); it answers with an OCF exit code.
//! A user's shell script with the same interface works as well as ours.
//!
//! Every call has a timeout (the metadata's, or the configuration's
//! `<action timeout>`); an agent still running then is killed with its
//! whole process group and counts as failed.
//!
//! [`ServiceRunner`] runs a whole service's tree: start in start order
//! (a failure stops the tree in stop order), stop in stop order, status
//! on each resource at the deepest depth whose interval is due.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{parse_seconds, Resource, ServiceConfig};
use crate::restree::{start_order, stop_order};

/// Where agents live unless told otherwise.
pub const DEFAULT_AGENT_DIR: &str = "/usr/share/cluster";

/// OCF exit codes.
pub mod ocf {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Generic error.
    pub const ERR_GENERIC: i32 = 1;
    /// Bad arguments.
    pub const ERR_ARGS: i32 = 2;
    /// Action not implemented.
    pub const ERR_UNIMPLEMENTED: i32 = 3;
    /// Permission denied.
    pub const ERR_PERM: i32 = 4;
    /// A needed program is not installed.
    pub const ERR_INSTALLED: i32 = 5;
    /// Not configured (bad parameters).
    pub const ERR_CONFIGURED: i32 = 6;
    /// Not running.
    pub const NOT_RUNNING: i32 = 7;
}

/// Errors running an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No such program.
    #[error("no agent {0}")]
    Missing(PathBuf),
    /// It could not be started.
    #[error("running {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    /// It ran past its timeout and was killed.
    #[error("{agent} {action} timed out after {after:?} and was killed")]
    Timeout {
        /// Agent.
        agent: PathBuf,
        /// Action.
        action: String,
        /// Timeout.
        after: Duration,
    },
    /// It was killed by a signal.
    #[error("{0} {1} was killed by a signal")]
    Signaled(PathBuf, String),
}

/// One call of an agent.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    /// The resource.
    pub res: &'a Resource,
    /// Action.
    pub action: &'a str,
    /// `OCF_CHECK_LEVEL`.
    pub depth: u32,
    /// Timeout.
    pub timeout: Duration,
}

/// The agent directory.
#[derive(Clone, Debug)]
pub struct Agents {
    /// Directory.
    pub dir: PathBuf,
    /// Extra environment for every agent (e.g. the node's name).
    pub env: Vec<(String, String)>,
}

impl Agents {
    /// Agents in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Agents {
        Agents {
            dir: dir.into(),
            env: Vec::new(),
        }
    }

    /// The program of a resource type.
    pub fn program(&self, rtype: &str) -> PathBuf {
        self.dir.join(format!("{rtype}.sh"))
    }

    /// Runs one call; the exit code, or why there is none.
    pub fn call(&self, c: &Call<'_>) -> Result<i32, AgentError> {
        let prog = self.program(&c.res.rtype);
        if !prog.exists() {
            return Err(AgentError::Missing(prog));
        }
        let mut cmd = Command::new(&prog);
        cmd.arg(c.action)
            .env("OCF_RESOURCE_INSTANCE", c.res.instance())
            .env("OCF_CHECK_LEVEL", c.depth.to_string())
            .env("OCF_RESKEY_RGMANAGER_meta_refcnt", "0")
            .stdin(Stdio::null())
            .process_group(0);
        for (k, v) in &c.res.attrs {
            cmd.env(format!("OCF_RESKEY_{k}"), v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let span = tracing::info_span!("agent", res = %c.res.instance(), action = c.action);
        let _g = span.enter();
        let mut child =
            while_busy(|| cmd.spawn()).map_err(|e| AgentError::Spawn(prog.clone(), e))?;
        let deadline = Instant::now() + c.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    let code = st.code();
                    tracing::debug!(?code, "agent finished");
                    return code.ok_or_else(|| AgentError::Signaled(prog, c.action.into()));
                }
                Ok(None) if Instant::now() >= deadline => {
                    // The agent and whatever it started.
                    let pg = nix::unistd::Pid::from_raw(-(child.id() as i32));
                    let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.kill();
                    let _ = child.wait();
                    tracing::error!(timeout = ?c.timeout, "agent timed out: killed");
                    return Err(AgentError::Timeout {
                        agent: prog,
                        action: c.action.into(),
                        after: c.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(AgentError::Spawn(prog, e)),
            }
        }
    }

    /// The agent's metadata (`meta-data`), parsed; defaults when it has
    /// none (logged: its status checks then run every 60 s).
    pub fn metadata(&self, rtype: &str) -> Metadata {
        let prog = self.program(rtype);
        let out = while_busy(|| {
            Command::new(&prog)
                .arg("meta-data")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
        });
        let why = match out {
            Ok(o) if o.status.success() => {
                match Metadata::parse(&String::from_utf8_lossy(&o.stdout)) {
                    Some(md) => return md,
                    None => "unreadable metadata".to_string(),
                }
            }
            Ok(o) => format!("meta-data exited with {}", o.status),
            Err(e) => e.to_string(),
        };
        tracing::warn!(agent = %prog.display(), why, "no metadata: defaults used");
        Metadata::default()
    }
}

/// Runs `start` (the start of an agent) again while it fails with
/// ETXTBSY: the program was open for writing at that moment (an agent
/// being installed, or a descriptor that a fork elsewhere in this process
/// inherited before its exec closed it), which passes in moments.
fn while_busy<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 0;
    loop {
        match start() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 200 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// What rgmanager reads from an agent's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Timeouts by action, seconds.
    pub timeouts_s: BTreeMap<String, u64>,
    /// Status checks: (depth, interval seconds), by depth.
    pub status: Vec<(u32, u64)>,
}

impl Default for Metadata {
    fn default() -> Metadata {
        Metadata {
            timeouts_s: BTreeMap::new(),
            status: vec![(0, 60)],
        }
    }
}

impl Metadata {
    /// Parses `<resource-agent><actions><action name timeout interval depth>`.
    pub fn parse(xml: &str) -> Option<Metadata> {
        let doc = roxmltree::Document::parse(xml).ok()?;
        let mut md = Metadata {
            timeouts_s: BTreeMap::new(),
            status: Vec::new(),
        };
        for a in doc.descendants().filter(|n| n.has_tag_name("action")) {
            let Some(name) = a.attribute("name") else {
                continue;
            };
            if let Some(t) = a.attribute("timeout").and_then(parse_seconds) {
                md.timeouts_s.entry(name.to_string()).or_insert(t);
            }
            if name == "status" || name == "monitor" {
                let depth = a
                    .attribute("depth")
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                let every = a
                    .attribute("interval")
                    .and_then(parse_seconds)
                    .unwrap_or(60);
                if !md.status.iter().any(|(d, _)| *d == depth) {
                    md.status.push((depth, every));
                }
            }
        }
        if md.status.is_empty() {
            md.status.push((0, 60));
        }
        md.status.sort();
        Some(md)
    }

    /// Timeout of `action` (default 60 s... but at least 1 s).
    pub fn timeout(&self, action: &str) -> Duration {
        Duration::from_secs(self.timeouts_s.get(action).copied().unwrap_or(60).max(1))
    }
}

/// Runs whole services' trees through the agents.
pub struct ServiceRunner {
    agents: Agents,
    meta: BTreeMap<String, Metadata>,
    /// Last run of each (resource instance, depth).
    last_check: BTreeMap<(String, u32), Instant>,
}

/// The result of a service start: started, or failed and then stopped
/// (cleanly or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartResult {
    /// Every resource started.
    pub ok: bool,
    /// After a failure: every stop succeeded.
    pub stop_ok: bool,
}

impl ServiceRunner {
    /// A runner over `agents`.
    pub fn new(agents: Agents) -> ServiceRunner {
        ServiceRunner {
            agents,
            meta: BTreeMap::new(),
            last_check: BTreeMap::new(),
        }
    }

    fn meta(&mut self, rtype: &str) -> &Metadata {
        if !self.meta.contains_key(rtype) {
            let md = self.agents.metadata(rtype);
            self.meta.insert(rtype.to_string(), md);
        }
        &self.meta[rtype]
    }

    fn timeout(&mut self, res: &Resource, action: &str) -> Duration {
        let over = res
            .actions
            .iter()
            .find(|a| a.name == action && a.timeout_s.is_some())
            .and_then(|a| a.timeout_s);
        match over {
            Some(s) => Duration::from_secs(s.max(1)),
            None => self.meta(&res.rtype).timeout(action),
        }
    }

    /// One action on one resource: success or not (a timeout, a missing
    /// agent or a non-zero code is a failure; `stop` of something not
    /// running is a success, as the agents answer it).
    pub fn act(&mut self, res: &Resource, action: &str, depth: u32) -> bool {
        let timeout = self.timeout(res, action);
        let call = Call {
            res,
            action,
            depth,
            timeout,
        };
        match self.agents.call(&call) {
            Ok(0) => true,
            Ok(code) => {
                tracing::warn!(res = %res.instance(), action, code, "agent failed");
                false
            }
            Err(e) => {
                tracing::error!(res = %res.instance(), action, error = %e, "agent failed");
                false
            }
        }
    }

    /// Starts a service; after a failure stops what it can.
    pub fn start(&mut self, svc: &ServiceConfig) -> StartResult {
        for r in start_order(&svc.children) {
            if !self.act(r, "start", 0) {
                tracing::warn!(service = %svc.name, res = %r.instance(), "start failed; stopping");
                let stop_ok = self.stop(svc);
                return StartResult { ok: false, stop_ok };
            }
        }
        let now = Instant::now();
        for r in start_order(&svc.children) {
            for (depth, _) in self.meta(&r.rtype).status.clone() {
                self.last_check.insert((r.instance(), depth), now);
            }
        }
        StartResult {
            ok: true,
            stop_ok: true,
        }
    }

    /// Stops a service: every resource, in stop order; false if any stop
    /// failed.
    pub fn stop(&mut self, svc: &ServiceConfig) -> bool {
        let mut ok = true;
        for r in stop_order(&svc.children) {
            ok &= self.act(r, "stop", 0);
        }
        ok
    }

    /// The status checks due: each resource at the deepest depth whose
    /// interval passed since it last ran.
    pub fn status(&mut self, svc: &ServiceConfig) -> bool {
        let now = Instant::now();
        for r in start_order(&svc.children) {
            let mut checks = self.meta(&r.rtype).status.clone();
            for a in r.actions.iter().filter(|a| a.name == "status") {
                let depth = a.depth.unwrap_or(0);
                let every = a.interval_s.unwrap_or(60);
                match checks.iter_mut().find(|(d, _)| *d == depth) {
                    Some(c) => c.1 = every,
                    None => checks.push((depth, every)),
                }
            }
            checks.sort();
            let due = checks.iter().rev().find(|(d, every)| {
                self.last_check
                    .get(&(r.instance(), *d))
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(*every))
            });
            let Some(&(depth, _)) = due else { continue };
            // A deeper check covers the shallower ones.
            for (d, _) in checks.iter().filter(|(d, _)| *d <= depth) {
                self.last_check.insert((r.instance(), *d), now);
            }
            if !self.act(r, "status", depth) {
                return false;
            }
        }
        true
    }
}

/// The agents shipped in this crate's `agents/` directory (for tests).
pub fn shipped_agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::os::unix::fs::PermissionsExt;

    fn agent(dir: &Path, name: &str, body: &str) {
        let p = dir.join(format!("{name}.sh"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    const META: &str = r#"case "$1" in meta-data) cat <<EOF
<resource-agent name="t"><actions><action name="start" timeout="2"/><action name="stop" timeout="2"/>
<action name="status" interval="1" depth="0" timeout="2"/><action name="status" interval="3" depth="10" timeout="2"/></actions></resource-agent>
EOF
exit 0;; esac"#;

    fn service(dir: &Path, body: &str) -> ServiceConfig {
        let text =
            format!(r#"<cluster name="c"><rm><service name="s">{body}</service></rm></cluster>"#);
        let _ = dir;
        parse(&text).unwrap().services.remove(0)
    }

    /// An agent still open for writing when it is run (ETXTBSY) is run
    /// once the writer is done: its metadata is read, not defaulted.
    #[test]
    fn an_agent_busy_being_written_is_run_when_the_writer_is_done() {
        let d = tempfile::tempdir().unwrap();
        agent(d.path(), "fs", META);
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("fs.sh"))
            .unwrap();
        let agents = Agents::new(d.path());
        let busy = Command::new(agents.program("fs")).arg("meta-data").output();
        assert_eq!(
            busy.map_err(|e| e.raw_os_error()).err(),
            Some(Some(libc::ETXTBSY)),
            "an agent open for writing runs"
        );
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(writer);
        });
        let md = agents.metadata("fs");
        closer.join().unwrap();
        assert_eq!(md.status, vec![(0, 1), (10, 3)]);
    }

    #[test]
    fn environment_order_and_exit_codes() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let body = format!(
            "{META}\necho \"$OCF_RESOURCE_INSTANCE $1 $OCF_CHECK_LEVEL $OCF_RESKEY_extra\" >> {}\n[ \"$OCF_RESKEY_fail\" = \"$1\" ] && exit 7\nexit 0",
            log.display()
        );
        agent(d.path(), "ip", &body);
        agent(d.path(), "script", &body);
        agent(d.path(), "fs", &body);
        let svc = service(
            d.path(),
            r#"<script name="web" extra="x"/><ip address="10.1.1.1"/><fs name="data"/>"#,
        );
        let mut r = ServiceRunner::new(Agents::new(d.path()));
        assert_eq!(
            r.start(&svc),
            StartResult {
                ok: true,
                stop_ok: true
            }
        );
        assert!(r.status(&svc)); // nothing due yet: the start counts
        std::thread::sleep(Duration::from_millis(1100));
        assert!(r.status(&svc));
        assert!(r.stop(&svc));
        let got = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            got,
            "fs:data start 0 \nip:10.1.1.1 start 0 \nscript:web start 0 x\n\
             fs:data status 0 \nip:10.1.1.1 status 0 \nscript:web status 0 x\n\
             script:web stop 0 x\nip:10.1.1.1 stop 0 \nfs:data stop 0 \n"
        );
        // A failing start stops the whole tree.
        std::fs::remove_file(&log).unwrap();
        let svc = service(
            d.path(),
            r#"<ip address="10.1.1.1" fail="start"/><fs name="data"/>"#,
        );
        assert_eq!(
            r.start(&svc),
            StartResult {
                ok: false,
                stop_ok: true
            }
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "fs:data start 0 \nip:10.1.1.1 start 0 \nip:10.1.1.1 stop 0 \nfs:data stop 0 \n"
        );
        // Deeper checks when their interval is due.
        std::fs::remove_file(&log).unwrap();
        let svc = service(d.path(), r#"<fs name="data"/>"#);
        assert!(r.start(&svc).ok);
        std::thread::sleep(Duration::from_millis(3100));
        assert!(r.status(&svc));
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .ends_with("fs:data status 10 \n"));
    }

    #[test]
    fn a_hung_agent_is_killed_and_fails() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("child.pid");
        agent(
            d.path(),
            "script",
            &format!("{META}\nsleep 100 & echo $! > {}\nwait", pidfile.display()),
        );
        let svc = service(d.path(), r#"<script name="hang"/>"#);
        let mut r = ServiceRunner::new(Agents::new(d.path()));
        let t = Instant::now();
        let res = r.start(&svc);
        assert_eq!(
            res,
            StartResult {
                ok: false,
                stop_ok: false
            }
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !cman::registry::alive(nix::unistd::Pid::from_raw(pid)),
            "the agent's child survived"
        );
    }

    #[test]
    fn missing_agent_fails_and_metadata_defaults() {
        let d = tempfile::tempdir().unwrap();
        let svc = service(d.path(), r#"<nothere name="x"/>"#);
        let mut r = ServiceRunner::new(Agents::new(d.path()));
        assert!(!r.start(&svc).ok);
        let md = Metadata::parse(
            r#"<resource-agent><actions><action name="status" depth="20" interval="10m"/><action name="start" timeout="1h"/></actions></resource-agent>"#,
        )
        .unwrap();
        assert_eq!(md.status, vec![(20, 600)]);
        assert_eq!(md.timeout("start"), Duration::from_secs(3600));
        assert_eq!(md.timeout("stop"), Duration::from_secs(60));
    }
}
