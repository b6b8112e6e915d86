//! `cmand`: the I/O driver around [`Node`]. One core thread owns the node
//! and does nothing but feed it events and carry out its actions (so
//! heartbeats are never stuck behind other work); a UDP receive thread
//! authenticates packets; a unix-socket server serves local clients; fence
//! jobs run in their own threads.

pub mod metrics;
mod server;

use crate::agent;
use crate::api::ApiRequest;
use crate::authkey::{self, KeyError, KeySource};
use crate::clock::{Clock, SystemClock};
use crate::config::{ClusterConf, ConfigError};
use crate::hosts::{ResolveError, Resolver};
use crate::ids::{ClientId, Incarnation, Member, Millis, NodeId};
use crate::node::{Action, Event, Node, NodeError, Request};
use crate::wire::{Wire, WireError, MAX_PACKET};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `cmand`.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// cluster.conf path.
    pub conf_path: PathBuf,
    /// `-n`: which clusternode this is.
    pub node_name: Option<String>,
    /// State directory (socket, pid file, authkey).
    pub state_dir: PathBuf,
    /// Key file (default STATE_DIR/authkey, then /etc/cluster/authkey, then
    /// a key derived from the cluster name).
    pub key_file: Option<PathBuf>,
    /// Where to serve the counters as `GET /metrics` ([`metrics`]).
    pub metrics: Option<SocketAddr>,
}

/// Why the daemon cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Node setup.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Key problems.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A clusternode's name does not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Which node are we?
    #[error("{0}")]
    WhoAmI(String),
    /// Socket or file trouble.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Wire setup.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Lab fault injection: while this file exists in the state directory the
/// node neither sends nor accepts packets (its network is "cut").
pub const DROP_FILE: &str = "drop-traffic";

/// Inputs of the core thread.
pub(crate) enum Input {
    Packet(Member, crate::proto::Msg),
    Api(ClientId, ApiRequest),
    NewClient(ClientId, SyncSender<String>),
    Gone(ClientId),
    Fence(Member, bool, String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |e| DaemonError::Io(what, e)
}

/// Reads the cluster key of cluster `cluster_name`: `--key-file` (which
/// must exist), else `STATE_DIR/authkey`, else `/etc/cluster/authkey`, else
/// the key derived from the cluster name, with a loud warning (see
/// [`crate::authkey`]).
pub fn read_key(opts: &DaemonOptions, cluster_name: &str) -> Result<Vec<u8>, DaemonError> {
    let defaults = [
        opts.state_dir.join("authkey"),
        PathBuf::from(authkey::DEFAULT_KEY_FILE),
    ];
    let (key, source) = authkey::load(opts.key_file.as_deref(), &defaults, cluster_name)?;
    // The DLM's users on this node read the same file.
    if let Err(e) = authkey::record_in_use(&opts.state_dir, &source) {
        tracing::warn!(error = %e, "cannot record the key file in use for the DLM's users");
    }
    match &source {
        KeySource::File(path) => tracing::info!(path = %path.display(), "cluster key"),
        KeySource::ClusterName => {
            let warning = authkey::derived_key_warning(cluster_name);
            // On stderr as well as in the log: it must be seen whatever
            // RUST_LOG says.
            eprintln!("cmand: {warning}");
            tracing::warn!("{warning}");
        }
    }
    Ok(key)
}

/// Socket address of a node: its name as an IP address, else looked up in
/// the hosts file, else through the resolver (see [`crate::hosts`]).
pub fn node_addr(name: &str, port: u16) -> Result<SocketAddr, ResolveError> {
    Resolver::from_env().node_addr(name, port)
}

/// Which configured node this is: `-n NAME`, else the node named like the
/// host (or its short name), else the first node whose address (an IP, or
/// a name resolved by `resolver`) belongs to this machine (can be bound).
fn pick_node(
    conf: &ClusterConf,
    name: Option<&str>,
    resolver: &Resolver,
) -> Result<NodeId, DaemonError> {
    if let Some(n) = name {
        return conf
            .node_by_name(n)
            .map(|n| n.id)
            .ok_or_else(|| DaemonError::WhoAmI(format!("node {n} is not in cluster.conf")));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let short = host.split('.').next().unwrap_or_default();
    let by_host = conf.nodes.iter().find(|n| {
        !host.is_empty()
            && (n.name.eq_ignore_ascii_case(&host) || n.name.eq_ignore_ascii_case(short))
    });
    if let Some(n) = by_host {
        return Ok(n.id);
    }
    for n in &conf.nodes {
        match resolver.node_addr(&n.name, 0) {
            Ok(addr) if UdpSocket::bind(addr).is_ok() => return Ok(n.id),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "which node am I"),
        }
    }
    Err(DaemonError::WhoAmI(format!(
        "cannot tell which clusternode this host ({host}) is: no node is named like it \
         and no node's address is local; use -n"
    )))
}

struct Core {
    node: Node,
    wire: Wire,
    sock: UdpSocket,
    addrs: HashMap<NodeId, SocketAddr>,
    resolver: Resolver,
    clients: HashMap<ClientId, SyncSender<String>>,
    subscribed: std::collections::HashSet<ClientId>,
    tx: Sender<Input>,
    clock: SystemClock,
    opts: DaemonOptions,
    exit: Option<i32>,
    cut: Arc<AtomicBool>,
    /// Registered processes of the node's earlier cmand still running:
    /// the node is held until they are gone (see [`crate::registry`]).
    old: Vec<crate::registry::Registered>,
    counters: Arc<metrics::CmanCounters>,
}

/// The address of every configured node; a node that does not resolve is
/// an error.
fn peer_addrs(
    conf: &ClusterConf,
    resolver: &Resolver,
) -> Result<HashMap<NodeId, SocketAddr>, ResolveError> {
    conf.nodes
        .iter()
        .map(|n| Ok((n.id, resolver.node_addr(&n.name, conf.cman.port)?)))
        .collect()
}

/// The registered processes of the node (an earlier cmand, a mount, a dlm
/// user) that still run when cmand starts: they may hold cluster locks or
/// write shared storage, so the node is held out of the cluster until
/// they are gone (see [`crate::registry`], [`Event::OldProcesses`]).
fn old_processes(state_dir: &Path) -> Vec<crate::registry::Registered> {
    let old = crate::registry::still_running(state_dir);
    if !old.is_empty() {
        let list: Vec<String> = old.iter().map(|r| r.to_string()).collect();
        let msg = format!(
            "cluster processes of this node still run ({}): they may hold cluster locks or \
             write shared storage, so this node stays out of the cluster until they are gone; \
             stop them, or let the cluster fence this node",
            list.join(", ")
        );
        // On stderr as well as in the log: whoever restarts cmand must see it.
        eprintln!("cmand: {msg}");
        tracing::warn!("{msg}");
    }
    old
}

/// Runs the daemon until it is evicted (exit code 1) or leaves (0).
pub fn run(opts: DaemonOptions) -> Result<i32, DaemonError> {
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(io_err(opts.state_dir.display().to_string()))?;
    let old = old_processes(&opts.state_dir);
    let text = std::fs::read_to_string(&opts.conf_path)
        .map_err(io_err(opts.conf_path.display().to_string()))?;
    let conf = ClusterConf::parse(&text)?;
    let resolver = Resolver::from_env();
    let me_id = pick_node(&conf, opts.node_name.as_deref(), &resolver)?;
    let addrs = peer_addrs(&conf, &resolver)?;
    let key = read_key(&opts, &conf.name)?;
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    let node = Node::new(me_id, Incarnation(micros), &text)?;
    let me = node.me();
    let my_name = conf.node(me_id).map(|n| n.name.clone()).unwrap_or_default();
    let bind = addrs
        .get(&me_id)
        .copied()
        .ok_or_else(|| DaemonError::WhoAmI(format!("cannot resolve {my_name}")))?;
    let sock = UdpSocket::bind(bind).map_err(io_err(format!("bind {bind}")))?;
    let (tx, rx) = mpsc::channel();
    let cut = Arc::new(AtomicBool::new(false));
    let udp = sock.try_clone().map_err(io_err("udp"))?;
    let counters = Arc::new(metrics::CmanCounters::default());
    if let Some(addr) = opts.metrics {
        let c = Arc::downgrade(&counters);
        dlm::metrics::serve_http(addr, move || c.upgrade().map(|c| c.render()))
            .map_err(io_err(format!("metrics endpoint {addr}")))?;
    }
    spawn_receiver(
        udp,
        Wire::new(&key, &conf.name, me)?,
        tx.clone(),
        cut.clone(),
        counters.clone(),
    );
    server::spawn(&opts.state_dir, tx.clone())?;
    let pid_path = opts.state_dir.join("cmand.pid");
    std::fs::write(&pid_path, format!("{}\n", std::process::id())).map_err(io_err("pid file"))?;
    tracing::info!(node = %me, %bind, "cmand started");
    let mut core = Core {
        wire: Wire::new(&key, &conf.name, me)?,
        addrs,
        resolver,
        node,
        sock,
        clients: HashMap::new(),
        subscribed: Default::default(),
        tx,
        clock: SystemClock::new(),
        opts: opts.clone(),
        exit: None,
        cut,
        old: Vec::new(),
        counters,
    };
    core.set_old_processes(old);
    raise_priority();
    let code = core.run(rx);
    let _ = std::fs::remove_file(&pid_path);
    let _ = std::fs::remove_file(crate::api::socket_path(&opts.state_dir));
    Ok(code)
}

/// Best effort: run the calling thread at real-time priority so heartbeats
/// go out on time while the CPUs are busy (needs CAP_SYS_NICE).
fn raise_priority() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        // SAFETY: plain syscall; lowering the nice value may fail harmlessly.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
    }
}

fn spawn_receiver(
    sock: UdpSocket,
    mut wire: Wire,
    tx: Sender<Input>,
    cut: Arc<AtomicBool>,
    counters: Arc<metrics::CmanCounters>,
) {
    std::thread::Builder::new()
        .name("cmand-udp".into())
        .spawn(move || {
            raise_priority();
            let mut buf = vec![0u8; MAX_PACKET];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if cut.load(Ordering::Relaxed) {
                    continue;
                }
                match wire.decode(&buf[..n]) {
                    Ok((m, msg)) => {
                        counters.received();
                        if tx.send(Input::Packet(m, msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(%from, error = %e, "dropped packet"),
                }
            }
        })
        .expect("spawn udp thread");
}

impl Core {
    fn now(&self) -> Millis {
        self.clock.now()
    }

    fn run(&mut self, rx: Receiver<Input>) -> i32 {
        let tick = Duration::from_millis(self.node.tick_ms());
        let mut next_tick = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(input) => self.on_input(input),
                Err(RecvTimeoutError::Timeout) => {
                    next_tick = Instant::now() + tick;
                    self.tick();
                }
                Err(RecvTimeoutError::Disconnected) => return 1,
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + tick;
                self.tick();
            }
            if let Some(code) = self.exit {
                return code;
            }
        }
    }

    fn tick(&mut self) {
        let cut = self.opts.state_dir.join(DROP_FILE).exists();
        self.cut.store(cut, Ordering::Relaxed);
        if !self.old.is_empty() {
            let still: Vec<_> = self
                .old
                .iter()
                .filter(|r| r.still_runs())
                .cloned()
                .collect();
            if still.len() != self.old.len() {
                self.set_old_processes(still);
            }
        }
        self.step(Event::Tick);
    }

    /// Tells the node which processes of the earlier cmand still run.
    fn set_old_processes(&mut self, old: Vec<crate::registry::Registered>) {
        let list = old.iter().map(|r| r.to_string()).collect();
        self.old = old;
        self.step(Event::OldProcesses(list));
    }

    fn step(&mut self, ev: Event) {
        let now = self.now();
        let actions = self.node.handle(now, ev);
        for a in actions {
            self.act(a);
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Packet(from, msg) => self.step(Event::Packet { from, msg }),
            Input::NewClient(id, tx) => {
                self.clients.insert(id, tx);
            }
            Input::Gone(id) => {
                self.clients.remove(&id);
                self.subscribed.remove(&id);
                self.step(Event::Client {
                    client: id,
                    req: Request::Gone,
                });
            }
            Input::Fence(victim, ok, how) => self.step(Event::FenceResult { victim, ok, how }),
            Input::Api(id, req) => self.on_api(id, req),
        }
    }

    fn send_client(&mut self, id: ClientId, resp: &crate::api::ApiResponse) {
        let Some(tx) = self.clients.get(&id) else {
            return;
        };
        let line = serde_json::to_string(resp).unwrap_or_default();
        if tx.try_send(line).is_err() {
            tracing::warn!(client = id.0, "client too slow, dropping it");
            self.clients.remove(&id);
        }
    }

    fn ok(&mut self, id: ClientId, msg: Option<String>) {
        let r = crate::api::ApiResponse {
            ok: true,
            msg,
            ..Default::default()
        };
        self.send_client(id, &r);
    }

    fn err(&mut self, id: ClientId, e: String) {
        let r = crate::api::ApiResponse {
            error: Some(e),
            ..Default::default()
        };
        self.send_client(id, &r);
    }

    fn on_api(&mut self, id: ClientId, req: ApiRequest) {
        let node_req = match req {
            ApiRequest::Status => {
                let st = self.node.status(self.now());
                let r = crate::api::ApiResponse {
                    ok: true,
                    status: Some(Box::new(st)),
                    ..Default::default()
                };
                return self.send_client(id, &r);
            }
            ApiRequest::GetConfig => {
                let t = self.node.conf_text().to_string();
                return self.ok(id, Some(t));
            }
            ApiRequest::Metrics => {
                let text = self.counters.render();
                return self.ok(id, Some(text));
            }
            ApiRequest::Subscribe => {
                self.subscribed.insert(id);
                return self.ok(id, None);
            }
            ApiRequest::Join { group } => Request::Join { group },
            ApiRequest::Leave { group } => Request::Leave { group },
            ApiRequest::Send { group, data } => Request::Send { group, data },
            ApiRequest::Expected { votes } => Request::SetExpected(votes),
            ApiRequest::ConfigUpdate { text } => Request::ConfigUpdate { text },
            ApiRequest::LeaveCluster => Request::LeaveCluster,
            ApiRequest::FenceDomain { join } => Request::FenceDomain(join),
            ApiRequest::FenceOverride { node, how } => {
                let conf = self.node.conf();
                let found = conf
                    .node_by_name(&node)
                    .or_else(|| node.parse().ok().and_then(|n| conf.node(NodeId(n))))
                    .map(|n| n.id);
                match found {
                    Some(n) => Request::FenceOverride { node: n, how },
                    None => return self.err(id, format!("node {node} is not in cluster.conf")),
                }
            }
        };
        self.step(Event::Client {
            client: id,
            req: node_req,
        });
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Send { to, msg } => self.send(to, &msg),
            Action::Group { client, event } => {
                let r = crate::api::ApiResponse {
                    event: Some(crate::api::ApiEvent::Group(event)),
                    ..Default::default()
                };
                self.send_client(client, &r);
            }
            Action::Notify(ev) => {
                self.counters.event(&ev);
                let r = crate::api::ApiResponse {
                    event: Some(crate::api::ApiEvent::Cluster(ev)),
                    ..Default::default()
                };
                let subs: Vec<ClientId> = self.subscribed.iter().copied().collect();
                for c in subs {
                    self.send_client(c, &r);
                }
            }
            Action::Reply { client, result } => match result {
                Ok(m) => self.ok(client, Some(m)),
                Err(e) => self.err(client, e),
            },
            Action::RunFence(job) => {
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let (ok, how) = agent::run_job(&job, agent::AGENT_TIMEOUT);
                    let _ = tx.send(Input::Fence(job.victim, ok, how));
                });
            }
            Action::ConfigChanged { text } => self.write_config(&text),
            Action::Shutdown { reason } => {
                eprintln!("cmand: {reason}");
                self.exit = Some(if reason.contains("evicted") { 1 } else { 0 });
            }
        }
    }

    fn send(&mut self, to: NodeId, msg: &crate::proto::Msg) {
        let Some(addr) = self.addrs.get(&to).copied() else {
            return;
        };
        match self.wire.encode(msg) {
            Ok(pkt) => {
                self.counters.sent();
                let _ = self.sock.send_to(&pkt, addr);
            }
            Err(e) => tracing::warn!(error = %e, "cannot send"),
        }
    }

    /// After a config change: the new nodes' addresses; a node that does
    /// not resolve keeps its old address, if any, and is logged.
    fn update_addrs(&mut self) {
        let conf = self.node.conf();
        let mut addrs = HashMap::new();
        for n in &conf.nodes {
            match self.resolver.node_addr(&n.name, conf.cman.port) {
                Ok(a) => {
                    addrs.insert(n.id, a);
                }
                Err(e) => {
                    tracing::error!(error = %e, "new cluster.conf");
                    if let Some(a) = self.addrs.get(&n.id) {
                        addrs.insert(n.id, *a);
                    }
                }
            }
        }
        self.addrs = addrs;
    }

    fn write_config(&mut self, text: &str) {
        self.update_addrs();
        let path: &Path = &self.opts.conf_path;
        let tmp = path.with_extension("conf.new");
        let res = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = res {
            tracing::error!(error = %e, path = %path.display(), "cannot write cluster.conf");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(names: &[&str]) -> ClusterConf {
        let nodes: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "<clusternode name=\"{n}\" nodeid=\"{}\" votes=\"1\"/>",
                    i + 1
                )
            })
            .collect();
        ClusterConf::parse(&format!(
            "<cluster name=\"c\" config_version=\"1\"><clusternodes>{nodes}</clusternodes></cluster>"
        ))
        .unwrap()
    }

    #[test]
    fn which_node_am_i_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        // 192.0.2.0/24 (TEST-NET-1) is never local; 127.0.1.2 always is.
        std::fs::write(&hosts, "192.0.2.1 farnode\n127.0.1.2 NearNode\n").unwrap();
        let r = Resolver::with_hosts_file(&hosts);
        let c = conf(&["farnode", "nearnode"]);
        assert_eq!(pick_node(&c, None, &r).unwrap(), NodeId(2));
        assert_eq!(pick_node(&c, Some("farnode"), &r).unwrap(), NodeId(1));
        assert!(pick_node(&c, Some("other"), &r).is_err());
        let addrs = peer_addrs(&c, &r).unwrap();
        assert_eq!(addrs[&NodeId(1)].to_string(), "192.0.2.1:5405");
        assert_eq!(addrs[&NodeId(2)].to_string(), "127.0.1.2:5405");
        // A node that resolves nowhere is an error naming it.
        let bad = conf(&["farnode", "no-such-node.invalid"]);
        let e = peer_addrs(&bad, &r).unwrap_err().to_string();
        assert!(e.contains("no-such-node.invalid"), "{e}");
        let far = conf(&["farnode", "no-such-node.invalid"]);
        assert!(pick_node(&far, None, &r).is_err());
    }
}
