//! The per-node daemon: the driver of [`crate::core::Node`].
//!
//! One thread reads the node's cmand connection (subscribed to cluster
//! events and joined to the group [`GROUP`]), agent operations run on
//! their own threads, a control thread serves `rgmanager.sock`, a signal
//! thread turns SIGTERM/SIGINT into a shutdown; all of them feed one
//! channel that the main loop drains into the core, carrying out the
//! actions it returns. The group connection carries both the group's
//! confchgs and cmand's fencing events, so a failure's confchg always
//! comes before its fence.
//!
//! When cmand goes away the daemon stops every service it runs, kills
//! what the services left behind and exits (code 3): its node is about to
//! be fenced and its services started elsewhere. The daemon registers its
//! PID with the node (`rgmanager.pid`, [`cman::registry`]) and the PIDs of
//! the processes its services started (`rgmanager-svc.PID.pid`: every
//! process whose environment carries this daemon's tag), so `fence_lab`
//! takes them down with the node.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cman::api::{ApiEvent, ApiRequest, ApiResponse};
use cman::node::{ClusterEvent, GroupEvent, Status};
use parking_lot::Mutex;

use crate::agent::{Agents, ServiceRunner};
use crate::config::{self, RmConfig};
use crate::control::{
    AdminAction, AdminReply, NodeView, Request, Response, ServiceView, StatusView,
};
use crate::core::{Action, AdminOp, AdminResult, Input, Msg, Node, Op, Pos};
use crate::state::State;
use crate::NodeId;

/// The cmand process group of every node's rgmanager.
pub const GROUP: &str = "rgmanager";

/// Exit code when cmand is lost.
pub const EXIT_LOST_CMAND: i32 = 3;

/// Environment variable marking the processes a daemon's services start.
pub const TAG_VAR: &str = "RGMANAGER_TAG";

/// Daemon options.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node's cmand state directory.
    pub state_dir: PathBuf,
    /// Agent directory.
    pub agent_dir: PathBuf,
    /// Status check period (rgmanager: 10 s).
    pub status_interval: Duration,
}

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// cmand trouble.
    #[error("cmand: {0}")]
    Cmand(String),
    /// Bad configuration.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

enum Event {
    Cmand(ApiEvent),
    CmandLost(String),
    OpDone {
        svc: String,
        op: Op,
        ok: bool,
        stop_ok: bool,
    },
    Admin {
        svc: String,
        op: AdminOp,
        reply: Sender<AdminResult>,
    },
    Lock {
        locked: bool,
        reply: Sender<AdminResult>,
    },
    Shutdown,
}

/// The connection to cmand: requests from the main loop, responses and
/// events read by a thread.
struct Cmand {
    writer: UnixStream,
    responses: Receiver<ApiResponse>,
}

impl Cmand {
    fn connect(state_dir: &Path, events: Sender<Event>) -> Result<Cmand, DaemonError> {
        let path = cman::api::socket_path(state_dir);
        let s = UnixStream::connect(&path)
            .map_err(|e| DaemonError::Cmand(format!("{}: {e}", path.display())))?;
        let r = s
            .try_clone()
            .map_err(|e| DaemonError::Io("socket".into(), e))?;
        let (tx, responses) = mpsc::channel();
        std::thread::Builder::new()
            .name("cmand-reader".into())
            .spawn(move || read_cmand(r, tx, events))
            .map_err(|e| DaemonError::Io("thread".into(), e))?;
        Ok(Cmand {
            writer: s,
            responses,
        })
    }

    fn request(&mut self, req: &ApiRequest) -> Result<ApiResponse, DaemonError> {
        let mut line = serde_json::to_string(req).map_err(|e| DaemonError::Cmand(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| DaemonError::Cmand(e.to_string()))?;
        let r = self
            .responses
            .recv()
            .map_err(|_| DaemonError::Cmand("connection closed".into()))?;
        if r.ok {
            Ok(r)
        } else {
            Err(DaemonError::Cmand(r.error.unwrap_or_default()))
        }
    }

    fn status(&mut self) -> Result<Status, DaemonError> {
        self.request(&ApiRequest::Status)?
            .status
            .map(|s| *s)
            .ok_or_else(|| DaemonError::Cmand("no status".into()))
    }
}

fn read_cmand(s: UnixStream, responses: Sender<ApiResponse>, events: Sender<Event>) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = events.send(Event::CmandLost(e.to_string()));
                return;
            }
        }
        let resp: ApiResponse = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "bad line from cmand");
                continue;
            }
        };
        match resp.event {
            Some(ev) => {
                let _ = events.send(Event::Cmand(ev));
            }
            None => {
                let _ = responses.send(resp);
            }
        }
    }
    let _ = events.send(Event::CmandLost("cmand closed the connection".into()));
}

/// What the control thread reads.
#[derive(Default)]
struct Shared {
    view: StatusView,
    /// Version of each service's record.
    versions: BTreeMap<String, u64>,
}

/// The daemon.
struct Daemon {
    opts: Options,
    cmand: Cmand,
    node: Node,
    cfg: RmConfig,
    me: NodeId,
    names: BTreeMap<NodeId, String>,
    status: Status,
    events_tx: Sender<Event>,
    runners: BTreeMap<String, Arc<Mutex<ServiceRunner>>>,
    agents: Agents,
    shared: Arc<Mutex<Shared>>,
    admin_replies: BTreeMap<u64, Sender<AdminResult>>,
    next_admin: u64,
    start: Instant,
    transitions: BTreeMap<String, (u64, u64)>,
    tag: String,
    shutting_down: bool,
    last_pid_scan: Instant,
}

/// Runs the daemon until shutdown (exit code 0) or the loss of cmand
/// ([`EXIT_LOST_CMAND`]).
pub fn run(opts: Options) -> Result<i32, DaemonError> {
    // Before any thread starts: only the signal thread takes them.
    let signals = block_signals()?;
    let (tx, rx) = mpsc::channel();
    let mut cmand = Cmand::connect(&opts.state_dir, tx.clone())?;
    cmand.request(&ApiRequest::Subscribe)?;
    let status = cmand.status()?;
    let text = cmand
        .request(&ApiRequest::GetConfig)?
        .msg
        .unwrap_or_default();
    let cfg = config::parse(&text)?;
    let ids: BTreeMap<String, NodeId> = status
        .nodes
        .iter()
        .map(|n| (n.name.clone(), NodeId(n.id.0)))
        .collect();
    let names = ids.iter().map(|(n, i)| (*i, n.clone())).collect();
    let me = NodeId(status.node_id.0);
    let mut node = Node::new(me, &cfg, &ids);
    node.set_status_interval_ms(opts.status_interval.as_millis() as u64);
    let tag = format!("{}.{}", std::process::id(), now_secs());
    let mut agents = Agents::new(&opts.agent_dir);
    agents.env = vec![
        (TAG_VAR.into(), tag.clone()),
        (
            "CMAN_STATE_DIR".into(),
            opts.state_dir.display().to_string(),
        ),
        ("RGMANAGER_NODE".into(), status.node_name.clone()),
    ];
    let pid_file = opts.state_dir.join("rgmanager.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| DaemonError::Io(pid_file.display().to_string(), e))?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut d = Daemon {
        opts,
        cmand,
        node,
        cfg,
        me,
        names,
        status,
        events_tx: tx.clone(),
        runners: BTreeMap::new(),
        agents,
        shared,
        admin_replies: BTreeMap::new(),
        next_admin: 1,
        start: Instant::now(),
        transitions: BTreeMap::new(),
        tag,
        shutting_down: false,
        last_pid_scan: Instant::now(),
    };
    let quorate = d.status.quorum.quorate;
    d.step(Input::Quorum(quorate));
    d.cmand.request(&ApiRequest::Join {
        group: GROUP.into(),
    })?;
    tracing::info!(node = %d.status.node_name, services = d.cfg.services.len(), "rgmanager started");
    control_thread(&d.opts.state_dir, d.shared.clone(), tx.clone())?;
    signal_thread(signals, tx)?;
    d.publish();
    let code = d.main_loop(rx);
    let _ = std::fs::remove_file(&pid_file);
    d.unregister_service_pids(&[]);
    Ok(code)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Daemon {
    fn main_loop(&mut self, rx: Receiver<Event>) -> i32 {
        loop {
            let ev = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return 1,
            };
            match ev {
                Some(Event::CmandLost(why)) => return self.lost_cmand(&why),
                Some(ev) => {
                    if let Err(e) = self.handle(ev) {
                        tracing::error!(error = %e, "lost cmand");
                        return self.lost_cmand(&e.to_string());
                    }
                }
                None => {}
            }
            let now_ms = self.start.elapsed().as_millis() as u64;
            if let Err(e) = self.step_checked(Input::Tick { now_ms }) {
                return self.lost_cmand(&e.to_string());
            }
            if self.last_pid_scan.elapsed() >= Duration::from_secs(1) {
                self.register_service_pids();
                if let Err(e) = self.check_config() {
                    return self.lost_cmand(&e.to_string());
                }
            }
            if self.shutting_down && self.drained() {
                let _ = self.cmand.request(&ApiRequest::Leave {
                    group: GROUP.into(),
                });
                tracing::info!("rgmanager stopped");
                return 0;
            }
            self.publish();
        }
    }

    /// A cluster.conf pushed to cmand (a newer `config_version`) is
    /// offered to the group, which applies it at one point of its order.
    fn check_config(&mut self) -> Result<(), DaemonError> {
        let st = self.cmand.status()?;
        let version = st.config_version;
        self.status = st;
        if version > self.cfg.config_version {
            let text = self
                .cmand
                .request(&ApiRequest::GetConfig)?
                .msg
                .unwrap_or_default();
            match config::parse(&text) {
                Ok(cfg) => self.cfg = cfg,
                Err(e) => {
                    tracing::error!(version, error = %e, "new cluster.conf refused; keeping the running configuration");
                    self.cfg.config_version = version;
                }
            }
            self.step_checked(Input::NewConfig { version, text })?;
        }
        Ok(())
    }

    fn drained(&self) -> bool {
        if !self.node.is_synced() || !self.node.is_quorate() {
            return self.node.local_up().is_empty();
        }
        self.node.is_drained()
    }

    fn handle(&mut self, ev: Event) -> Result<(), DaemonError> {
        match ev {
            Event::Cmand(ApiEvent::Group(GroupEvent::Confchg {
                group,
                members,
                joined,
                failed,
                seq,
                view_seq,
                ..
            })) if group == GROUP => {
                let status = self.cmand.status()?;
                let quorate = status.quorum.quorate;
                let unfenced = status.victims.iter().map(|m| NodeId(m.id.0)).collect();
                let view = if view_seq > 0 {
                    view_seq
                } else {
                    status.view.seq
                };
                self.status = status;
                tracing::info!(
                    view,
                    seq,
                    ?members,
                    ?joined,
                    ?failed,
                    "rgmanager group changed"
                );
                let ids = |v: &[(cman::ids::NodeId, cman::ids::ClientId)]| {
                    let mut v: Vec<NodeId> = v.iter().map(|(n, _)| NodeId(n.0)).collect();
                    v.dedup();
                    v
                };
                self.step_checked(Input::Quorum(quorate))?;
                self.step_checked(Input::Confchg {
                    pos: Pos { view, seq },
                    members: ids(&members),
                    joined: ids(&joined),
                    failed: failed.iter().map(|n| NodeId(n.0)).collect(),
                    unfenced,
                })
            }
            Event::Cmand(ApiEvent::Group(GroupEvent::Message { group, data, .. }))
                if group == GROUP =>
            {
                match serde_json::from_str::<Msg>(&data) {
                    Ok(m) => self.step_checked(Input::Deliver(m)),
                    Err(e) => {
                        tracing::error!(error = %e, "bad group message");
                        Ok(())
                    }
                }
            }
            Event::Cmand(ApiEvent::Cluster(ClusterEvent::View { quorate, .. })) => {
                if let Ok(st) = self.cmand.status() {
                    self.status = st;
                }
                self.step_checked(Input::Quorum(quorate))
            }
            Event::Cmand(ApiEvent::Cluster(ClusterEvent::NodeFenced { victim, how })) => {
                tracing::info!(node = victim.id.0, %how, "node fenced");
                self.step_checked(Input::FenceNotice(NodeId(victim.id.0)))
            }
            Event::Cmand(_) => Ok(()),
            Event::CmandLost(_) => unreachable!(),
            Event::OpDone {
                svc,
                op,
                ok,
                stop_ok,
            } => {
                // What a start left running is registered before anyone
                // hears that it runs.
                if op == Op::Start {
                    self.register_service_pids();
                }
                self.step_checked(Input::OpDone {
                    svc,
                    op,
                    ok,
                    stop_ok,
                })
            }
            Event::Admin { svc, op, reply } => {
                let id = self.next_admin;
                self.next_admin += 1;
                self.admin_replies.insert(id, reply);
                self.step_checked(Input::Admin { id, svc, op })
            }
            Event::Lock { locked, reply } => {
                let id = self.next_admin;
                self.next_admin += 1;
                self.admin_replies.insert(id, reply);
                self.step_checked(Input::Lock { id, locked })
            }
            Event::Shutdown => {
                if !self.shutting_down {
                    tracing::info!("shutting down: stopping services");
                    self.shutting_down = true;
                    if self.node.is_synced() && self.node.is_quorate() {
                        self.step_checked(Input::Shutdown)?;
                    } else {
                        self.stop_everything_here();
                    }
                }
                Ok(())
            }
        }
    }

    fn step(&mut self, input: Input) {
        if let Err(e) = self.step_checked(input) {
            tracing::error!(error = %e, "cmand");
        }
    }

    fn step_checked(&mut self, input: Input) -> Result<(), DaemonError> {
        let actions = self.node.step(input);
        for line in self.node.take_log() {
            tracing::info!(target: "rgmanager", "{line}");
        }
        for a in actions {
            self.act(a)?;
        }
        Ok(())
    }

    fn act(&mut self, a: Action) -> Result<(), DaemonError> {
        match a {
            Action::Send(msg) => {
                let data =
                    serde_json::to_string(&msg).map_err(|e| DaemonError::Cmand(e.to_string()))?;
                self.cmand.request(&ApiRequest::Send {
                    group: GROUP.into(),
                    data,
                })?;
            }
            Action::Run { svc, op } => self.run_op(svc, op),
            Action::Reply { id, result } => {
                if let Some(tx) = self.admin_replies.remove(&id) {
                    let _ = tx.send(result);
                }
            }
        }
        Ok(())
    }

    fn runner(&mut self, svc: &str) -> Arc<Mutex<ServiceRunner>> {
        self.runners
            .entry(svc.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(ServiceRunner::new(self.agents.clone()))))
            .clone()
    }

    fn run_op(&mut self, svc: String, op: Op) {
        let Some(cfg) = self.node.service_config(&svc, op) else {
            return;
        };
        let runner = self.runner(&svc);
        let tx = self.events_tx.clone();
        let name = format!("{op:?} {svc}");
        tracing::info!(service = %svc, ?op, "running");
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let mut r = runner.lock();
            let (ok, stop_ok) = match op {
                Op::Start => {
                    let res = r.start(&cfg);
                    (res.ok, res.stop_ok)
                }
                Op::Stop | Op::Cleanup => {
                    let ok = r.stop(&cfg);
                    (ok, ok)
                }
                Op::Status => (r.status(&cfg), true),
            };
            drop(r);
            let _ = tx.send(Event::OpDone {
                svc,
                op,
                ok,
                stop_ok,
            });
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start an agent thread");
        }
    }

    /// Stops every service that may be up here, synchronously, telling
    /// nobody (no quorum, or no cmand).
    fn stop_everything_here(&mut self) {
        let up: Vec<String> = self.node.local_up().iter().cloned().collect();
        for svc in up {
            let Some(cfg) = self.node.service_config(&svc, Op::Cleanup) else {
                continue;
            };
            let runner = self.runner(&svc);
            let ok = runner.lock().stop(&cfg);
            tracing::warn!(service = %svc, ok, "stopped here");
            let _ = self.node.step(Input::OpDone {
                svc,
                op: Op::Cleanup,
                ok,
                stop_ok: ok,
            });
        }
    }

    fn lost_cmand(&mut self, why: &str) -> i32 {
        tracing::error!(%why, "lost cmand: stopping every service here");
        self.stop_everything_here();
        // What the services left behind must not outlive the node.
        for pid in tagged_processes(&self.tag) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        EXIT_LOST_CMAND
    }

    /// Registers the processes started by this daemon's services.
    fn register_service_pids(&mut self) {
        self.last_pid_scan = Instant::now();
        let pids = tagged_processes(&self.tag);
        for p in &pids {
            let f = self
                .opts
                .state_dir
                .join(format!("rgmanager-svc.{}.pid", p.as_raw()));
            if !f.exists() {
                let _ = std::fs::write(&f, format!("{}\n", p.as_raw()));
            }
        }
        self.unregister_service_pids(&pids);
    }

    fn unregister_service_pids(&self, keep: &[nix::unistd::Pid]) {
        for r in cman::registry::registered(&self.opts.state_dir) {
            let name = r.file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("rgmanager-svc.") && !keep.contains(&r.pid) {
                let _ = std::fs::remove_file(&r.file);
            }
        }
    }

    fn name(&self, n: Option<NodeId>) -> Option<String> {
        n.map(|n| {
            self.names
                .get(&n)
                .cloned()
                .unwrap_or_else(|| n.0.to_string())
        })
    }

    /// Refreshes what the control thread serves.
    fn publish(&mut self) {
        let rep = self.node.replicated();
        let master = rep.synced.iter().find(|n| rep.members.contains(n)).copied();
        let members: Vec<NodeId> = self.status.members.iter().map(|m| NodeId(m.id.0)).collect();
        let nodes = self
            .status
            .nodes
            .iter()
            .map(|n| {
                let id = NodeId(n.id.0);
                NodeView {
                    name: n.name.clone(),
                    id: n.id.0,
                    online: members.contains(&id),
                    local: id == self.me,
                    rgmanager: rep.members.contains(&id),
                    rgmanager_master: master == Some(id),
                }
            })
            .collect();
        let now = now_secs();
        let mut services = Vec::new();
        let mut versions = BTreeMap::new();
        for (name, rec) in &rep.services {
            let t = self
                .transitions
                .entry(name.clone())
                .or_insert((rec.ver, now));
            if t.0 != rec.ver {
                *t = (rec.ver, now);
            }
            versions.insert(name.clone(), rec.ver);
            services.push(ServiceView {
                name: name.clone(),
                record: rec.clone(),
                owner: None,
                last_owner: None,
                last_transition: t.1,
            });
        }
        for s in services.iter_mut() {
            s.owner = self.name(s.record.owner);
            s.last_owner = self.name(s.record.last_owner);
        }
        let view = StatusView {
            cluster: self.status.cluster_name.clone(),
            local: self.status.node_name.clone(),
            generation: self.status.view.seq,
            quorate: self.node.is_quorate(),
            synced: self.node.is_synced(),
            nodes,
            services,
            locked: self.node.replicated().locked,
        };
        let mut sh = self.shared.lock();
        sh.view = view;
        sh.versions = versions;
        drop(sh);
    }
}

/// Processes whose environment carries `RGMANAGER_TAG=tag`.
fn tagged_processes(tag: &str) -> Vec<nix::unistd::Pid> {
    let needle = format!("{TAG_VAR}={tag}");
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(nix::unistd::Pid::from_raw)
        .collect()
}

fn block_signals() -> Result<nix::sys::signal::SigSet, DaemonError> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|e| DaemonError::Io("sigmask".into(), e.into()))?;
    Ok(set)
}

fn signal_thread(set: nix::sys::signal::SigSet, tx: Sender<Event>) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if set.wait().is_ok() {
                let _ = tx.send(Event::Shutdown);
            }
        })
        .map_err(|e| DaemonError::Io("thread".into(), e))?;
    Ok(())
}

fn control_thread(
    state_dir: &Path,
    shared: Arc<Mutex<Shared>>,
    tx: Sender<Event>,
) -> Result<(), DaemonError> {
    let path = crate::control::socket_path(state_dir);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| DaemonError::Io(path.display().to_string(), e))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = shared.clone();
                let tx = tx.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || serve(conn, &shared, &tx));
            }
        })
        .map_err(|e| DaemonError::Io("thread".into(), e))?;
    Ok(())
}

/// Root or the daemon's own user.
fn peer_allowed(s: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(s, PeerCredentials) {
        Ok(c) => c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

fn serve(conn: UnixStream, shared: &Mutex<Shared>, tx: &Sender<Event>) {
    let resp = if !peer_allowed(&conn) {
        Response::Error {
            msg: "permission denied: clusvcadm and clustat must run as root".into(),
        }
    } else {
        let mut line = String::new();
        let mut r = BufReader::new(&conn);
        if r.read_line(&mut line).is_err() {
            return;
        }
        match serde_json::from_str::<Request>(&line) {
            Ok(Request::Status) => Response::Status(Box::new(shared.lock().view.clone())),
            Ok(Request::Admin {
                service,
                action,
                node,
                follow_domain,
            }) => admin(shared, tx, &service, action, node, follow_domain),
            Ok(Request::Lock { lock }) => lock_request(tx, lock),
            Ok(Request::QueryLock) => {
                let sh = shared.lock();
                if sh.view.quorate && sh.view.synced {
                    Response::Locked {
                        locked: sh.view.locked,
                    }
                } else {
                    Response::Error {
                        msg: "Operation requires quorum".into(),
                    }
                }
            }
            Err(e) => Response::Error {
                msg: format!("bad request: {e}"),
            },
        }
    };
    let mut w = &conn;
    let mut out = serde_json::to_string(&resp).unwrap_or_default();
    out.push('\n');
    let _ = w.write_all(out.as_bytes());
}

/// `clusvcadm -l`/`-u`: code 0 once every member applied it, 1 (RG_FAIL)
/// when it cannot be (no quorum, records not held).
fn lock_request(tx: &Sender<Event>, locked: bool) -> Response {
    let (rtx, rrx) = mpsc::channel();
    if tx.send(Event::Lock { locked, reply: rtx }).is_err() {
        return Response::Error {
            msg: "rgmanager is stopping".into(),
        };
    }
    let result = rrx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or(AdminResult::Fail);
    let ok = result == AdminResult::Success;
    Response::Admin(AdminReply {
        code: if ok { 0 } else { 1 },
        message: result.message().into(),
        state: None,
        owner: None,
    })
}

fn admin(
    shared: &Mutex<Shared>,
    tx: &Sender<Event>,
    service: &str,
    action: AdminAction,
    node: Option<String>,
    follow_domain: bool,
) -> Response {
    let svc = config::full_name(service);
    let (target, local, before) = {
        let sh = shared.lock();
        let find = |n: &str| {
            sh.view
                .nodes
                .iter()
                .find(|v| v.name == n)
                .map(|v| NodeId(v.id))
        };
        let target = match &node {
            Some(n) => match find(n) {
                Some(id) => Some(id),
                None => {
                    return Response::Error {
                        msg: format!("Member {n} does not exist in the cluster"),
                    }
                }
            },
            None => None,
        };
        let local = sh.view.nodes.iter().find(|v| v.local).map(|v| NodeId(v.id));
        (target, local, sh.versions.get(&svc).copied())
    };
    let owner_before = current(shared, &svc).1;
    let op = match action {
        AdminAction::Enable if target.is_none() && !follow_domain => AdminOp::Enable(local),
        AdminAction::Enable => AdminOp::Enable(target),
        AdminAction::Disable => AdminOp::Disable,
        AdminAction::Relocate => AdminOp::Relocate(target),
        AdminAction::Restart => AdminOp::Restart,
        AdminAction::Stop => AdminOp::Stop,
        AdminAction::Freeze => AdminOp::Freeze,
        AdminAction::Unfreeze => AdminOp::Unfreeze,
        AdminAction::Convalesce => AdminOp::Convalesce,
        AdminAction::Migrate => match target {
            Some(t) => AdminOp::Migrate(t),
            None => {
                return Response::Error {
                    msg: "migrate needs a target member (-m)".into(),
                }
            }
        },
    };
    let (rtx, rrx) = mpsc::channel();
    if tx
        .send(Event::Admin {
            svc: svc.clone(),
            op,
            reply: rtx,
        })
        .is_err()
    {
        return Response::Error {
            msg: "rgmanager is stopping".into(),
        };
    }
    let mut result = match rrx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => AdminResult::Again,
    };
    // An enable on this node that its domain forbids: follow the domain.
    if result == AdminResult::Domain && action == AdminAction::Enable && node.is_none() {
        let (rtx, rrx) = mpsc::channel();
        let _ = tx.send(Event::Admin {
            svc: svc.clone(),
            op: AdminOp::Enable(None),
            reply: rtx,
        });
        result = rrx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or(AdminResult::Again);
    }
    let (state, owner) = if result == AdminResult::Success {
        wait_settled(shared, &svc, before)
    } else {
        current(shared, &svc)
    };
    let (code, message) = outcome(
        action,
        result,
        state.as_deref(),
        owner.as_deref(),
        &owner_before,
        node.as_deref(),
    );
    Response::Admin(AdminReply {
        code,
        message,
        state,
        owner,
    })
}

/// What clusvcadm is told: an accepted request whose service did not end
/// where it should is a failure.
fn outcome(
    action: AdminAction,
    result: AdminResult,
    state: Option<&str>,
    owner: Option<&str>,
    owner_before: &Option<String>,
    target: Option<&str>,
) -> (i32, String) {
    let fail = |m: &str| (AdminResult::Fail.code(), m.to_string());
    if result != AdminResult::Success {
        return (result.code(), result.message().into());
    }
    let started = state == Some(State::Started.as_str());
    match action {
        AdminAction::Relocate | AdminAction::Migrate
            if started
                && target.is_some()
                && owner != target
                && owner == owner_before.as_deref() =>
        {
            fail("Failed; service running on original owner")
        }
        AdminAction::Enable
        | AdminAction::Relocate
        | AdminAction::Migrate
        | AdminAction::Restart
            if !started =>
        {
            fail("Failure")
        }
        AdminAction::Disable if state != Some(State::Disabled.as_str()) => fail("Failure"),
        _ => (0, result.message().into()),
    }
}

fn current(shared: &Mutex<Shared>, svc: &str) -> (Option<String>, Option<String>) {
    let sh = shared.lock();
    match sh.view.services.iter().find(|s| s.name == svc) {
        Some(s) => (Some(s.record.state.as_str().into()), s.owner.clone()),
        None => (None, None),
    }
}

/// Waits until the service's record moved on from `before` and is no
/// longer in a transient state, nor stopped and about to be placed (a
/// request that changed nothing settles after 2 s; a service nobody can
/// start after 5 s stopped).
fn wait_settled(
    shared: &Mutex<Shared>,
    svc: &str,
    before: Option<u64>,
) -> (Option<String>, Option<String>) {
    let t0 = Instant::now();
    let mut placing_since: Option<Instant> = None;
    loop {
        {
            let sh = shared.lock();
            let Some(s) = sh.view.services.iter().find(|s| s.name == svc) else {
                return (None, None);
            };
            let st = s.record.state;
            let moved = before.is_none_or(|b| s.record.ver != b);
            let placing = st == State::Stopped
                && !s.record.hold
                && s.record.owner.is_none()
                && sh.view.quorate;
            if placing {
                placing_since.get_or_insert_with(Instant::now);
            } else {
                placing_since = None;
            }
            let settled = !st.is_transient() && st != State::Recoverable;
            let placed =
                !placing || placing_since.is_some_and(|t| t.elapsed() > Duration::from_secs(5));
            let waited = t0.elapsed();
            if (settled && placed && (moved || waited > Duration::from_secs(2)))
                || waited > Duration::from_secs(600)
            {
                return (Some(st.as_str().into()), s.owner.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
