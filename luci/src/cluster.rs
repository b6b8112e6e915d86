//! What luci knows of the cluster and how it acts on it, through the
//! node's own local APIs: cmand's socket (status, events, cluster.conf)
//! and rgmanager's control socket (services, clusvcadm's operations).
//!
//! A monitor follows cmand's events as they come (a view change is read
//! at once) and reads both daemons every [`POLL`]; each reading is a
//! [`Snapshot`] stamped with its time, published to every open page.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use cman::api::{ApiEvent, ApiRequest, Client};
use cman::node::{ClusterEvent, Status};
use rgmanager::control::{request, AdminAction, Request, Response, StatusView};
use rgmanager::report::{now_running, progress};
use tokio::sync::watch;

use crate::metrics::{CmanCounts, Rate, Series, Sources};
use crate::util::now_ms;

/// How often the daemons are read when nothing happens.
pub const POLL: Duration = Duration::from_millis(500);
/// Events kept for the page.
pub const EVENTS_KEPT: usize = 100;
/// Plot samples kept (10 minutes at [`POLL`]).
pub const SAMPLES_KEPT: usize = 1200;
/// How long a daemon gets to answer a reading.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a service operation may take before luci stops waiting.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);

/// One thing that happened, as luci saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When luci learnt of it (ms since the epoch).
    pub at_ms: u64,
    /// `join`, `loss`, `view`, `fence`, `service`.
    pub kind: &'static str,
    /// What happened.
    pub text: String,
}

/// One point of the plots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Members in cmand's view.
    pub members: u32,
    /// Services started.
    pub started: u32,
    /// The view was quorate.
    pub quorate: bool,
}

/// What one node's cmand says of itself (the configuration it runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The state directory read.
    pub state_dir: PathBuf,
    /// Node name and config_version, or why it could not be read.
    pub read: Result<(String, u64), String>,
}

/// Everything a page shows, read at one time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// When the daemons were read (ms since the epoch); 0 before the first
    /// reading.
    pub at_ms: u64,
    /// cmand's status, or why not.
    pub cman: Option<Result<Status, String>>,
    /// rgmanager's status, or why not.
    pub rg: Option<Result<StatusView, String>>,
    /// Each configured state directory's cmand: what version it runs.
    pub nodes: Vec<NodeConfig>,
    /// Newest first.
    pub events: Vec<Event>,
    /// Oldest first.
    pub samples: Vec<Sample>,
    /// Failures luci saw per service (entries into failed or recovering).
    pub failures: Vec<(String, u32)>,
    /// The daemons' counters as rates, oldest first (see [`crate::metrics`]).
    pub rates: Vec<Rate>,
    /// cmand's counters, or why not (`None`: not read yet).
    pub cman_counts: Option<Result<CmanCounts, String>>,
}

impl Snapshot {
    /// cmand's status if it was read.
    pub fn status(&self) -> Option<&Status> {
        self.cman.as_ref()?.as_ref().ok()
    }

    /// rgmanager's view if it was read.
    pub fn services(&self) -> Option<&StatusView> {
        self.rg.as_ref()?.as_ref().ok()
    }

    /// Failures seen of a service.
    pub fn failures_of(&self, svc: &str) -> u32 {
        self.failures
            .iter()
            .find(|(s, _)| s == svc)
            .map_or(0, |(_, n)| *n)
    }
}

/// The daemons of the node(s) luci serves.
#[derive(Clone, Debug)]
pub struct Backend {
    /// State directories: the first is the node luci acts through; the
    /// others (nodes on the same machine) are read for their versions.
    pub dirs: Vec<PathBuf>,
    /// Where the counters are sampled; `None`: no plots of them.
    pub metrics: Option<Sources>,
}

/// A service operation's outcome, as clusvcadm prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminOutcome {
    /// clusvcadm's lines (progress and result).
    pub text: String,
    /// rgmanager's code was 0 (or "already running").
    pub ok: bool,
}

fn cman_status(dir: &std::path::Path) -> Result<Status, String> {
    let mut c = Client::connect(dir).map_err(|e| e.to_string())?;
    c.set_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    c.status().map_err(|e| e.to_string())
}

impl Backend {
    fn primary(&self) -> &std::path::Path {
        &self.dirs[0]
    }

    fn read_rg(&self) -> Result<StatusView, String> {
        match request(self.primary(), &Request::Status, READ_TIMEOUT) {
            Ok(Response::Status(v)) => Ok(*v),
            Ok(Response::Error { msg }) => Err(msg),
            Ok(_) => Err("unexpected answer from rgmanager".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// clusvcadm's operation on a service, answered when it has settled.
    /// `node` must be a configured node's name.
    pub fn admin(&self, svc: &str, action: AdminAction, node: Option<&str>) -> AdminOutcome {
        let svc = rgmanager::config::full_name(svc);
        let mut text = progress(action, &svc, node);
        let req = Request::Admin {
            service: svc.clone(),
            action,
            node: node.map(str::to_string),
            follow_domain: false,
        };
        let ok = match request(self.primary(), &req, ADMIN_TIMEOUT) {
            Ok(Response::Admin(r)) => {
                text.push_str(&r.message);
                let ok = r.code == 0 || r.code == RG_ERUN;
                if r.code == 0 && matches!(action, AdminAction::Enable | AdminAction::Relocate) {
                    if let Some(owner) = &r.owner {
                        text.push('\n');
                        text.push_str(&now_running(&svc, owner, node));
                    }
                }
                ok
            }
            Ok(Response::Error { msg }) => {
                text.push_str(&msg);
                false
            }
            Ok(_) => {
                text.push_str("Error receiving reply!");
                false
            }
            Err(_) => {
                text.push_str("Could not connect to resource group manager");
                false
            }
        };
        AdminOutcome { text, ok }
    }

    /// The cluster.conf the node runs.
    pub fn running_config(&self) -> Result<String, String> {
        let mut c = Client::connect(self.primary()).map_err(|e| e.to_string())?;
        c.set_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let r = c
            .request(&ApiRequest::GetConfig)
            .map_err(|e| e.to_string())?;
        r.msg.ok_or_else(|| "cmand sent no configuration".into())
    }

    /// Hands a new cluster.conf to the node's cmand, which checks it and
    /// sends it to every member (as `ccs_tool update` does).
    pub fn push_config(&self, text: &str) -> Result<(), String> {
        let mut c = Client::connect(self.primary()).map_err(|e| e.to_string())?;
        c.set_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        c.request(&ApiRequest::ConfigUpdate {
            text: text.to_string(),
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Starts the monitor threads; the receiver always holds the latest
    /// snapshot.
    pub fn monitor(self) -> watch::Receiver<Arc<Snapshot>> {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let (ev_tx, ev_rx) = mpsc::sync_channel::<ClusterEvent>(256);
        let dir = self.primary().to_path_buf();
        let series = Arc::new(parking_lot::Mutex::new(Series::default()));
        if let Some(sources) = self.metrics.clone() {
            sources.sample(series.clone());
        }
        std::thread::Builder::new()
            .name("luci-events".into())
            .spawn(move || follow_events(&dir, &ev_tx))
            .expect("spawn the event thread");
        std::thread::Builder::new()
            .name("luci-monitor".into())
            .spawn(move || Monitor::new(self, series).run(&ev_rx, &tx))
            .expect("spawn the monitor thread");
        rx
    }
}

/// rgmanager's "Service is already running" (counts as success).
const RG_ERUN: i32 = -10;

/// Subscribes to cmand's events and forwards them; reconnects when cmand
/// goes away. Ends when the monitor is gone.
fn follow_events(dir: &std::path::Path, tx: &mpsc::SyncSender<ClusterEvent>) {
    loop {
        if let Ok(mut c) = Client::connect(dir) {
            if c.request(&ApiRequest::Subscribe).is_ok() {
                while let Ok(ev) = c.next_event() {
                    if let ApiEvent::Cluster(ev) = ev {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The monitor's memory between readings.
struct Monitor {
    backend: Backend,
    events: VecDeque<Event>,
    samples: VecDeque<Sample>,
    failures: Vec<(String, u32)>,
    /// (service, state, owner) at the last reading.
    services: Vec<(String, String, Option<String>)>,
    /// The counters' sampler's output.
    series: Arc<parking_lot::Mutex<Series>>,
}

impl Monitor {
    fn new(backend: Backend, series: Arc<parking_lot::Mutex<Series>>) -> Monitor {
        Monitor {
            backend,
            events: VecDeque::new(),
            samples: VecDeque::new(),
            failures: Vec::new(),
            services: Vec::new(),
            series,
        }
    }

    fn run(mut self, events: &mpsc::Receiver<ClusterEvent>, tx: &watch::Sender<Arc<Snapshot>>) {
        let mut last: Option<Status> = None;
        loop {
            match events.recv_timeout(POLL) {
                Ok(ev) => {
                    self.cluster_event(&ev, last.as_ref());
                    // Take whatever else is queued before reading.
                    while let Ok(ev) = events.try_recv() {
                        self.cluster_event(&ev, last.as_ref());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
            }
            let snap = self.read();
            last = snap.status().cloned();
            if tx.send(Arc::new(snap)).is_err() {
                return;
            }
        }
    }

    fn push(&mut self, kind: &'static str, text: String) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_back();
        }
        self.events.push_front(Event {
            at_ms: now_ms(),
            kind,
            text,
        });
    }

    fn cluster_event(&mut self, ev: &ClusterEvent, last: Option<&Status>) {
        let name = |id: u32| {
            last.and_then(|s| s.nodes.iter().find(|n| n.id.0 == id))
                .map_or_else(|| format!("node {id}"), |n| n.name.clone())
        };
        match ev {
            ClusterEvent::View {
                view,
                members,
                quorate,
            } => {
                if let Some(old) = last {
                    for m in members.iter().filter(|m| !old.members.contains(m)) {
                        self.push("join", format!("{} joined", name(m.id.0)));
                    }
                    for m in old.members.iter().filter(|m| !members.contains(m)) {
                        self.push("loss", format!("{} left the view", name(m.id.0)));
                    }
                }
                let q = if *quorate { "quorate" } else { "not quorate" };
                let ids: Vec<String> = members.iter().map(|m| name(m.id.0)).collect();
                self.push("view", format!("view {view}: {} ({q})", ids.join(", ")));
            }
            ClusterEvent::NodeFenced { victim, how } => {
                self.push("fence", format!("{} fenced by {how}", name(victim.id.0)));
            }
        }
    }

    fn service_events(&mut self, rg: &StatusView) {
        let now: Vec<(String, String, Option<String>)> = rg
            .services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.record.state.as_str().to_string(),
                    s.owner.clone(),
                )
            })
            .collect();
        for (name, state, owner) in &now {
            let before = self.services.iter().find(|(n, _, _)| n == name);
            let Some((_, old_state, old_owner)) = before.cloned() else {
                continue;
            };
            if old_state == *state && old_owner == *owner {
                continue;
            }
            let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
            let text = if old_owner != *owner && state == "started" {
                format!(
                    "{name} started on {} (was on {})",
                    show(owner),
                    show(&old_owner)
                )
            } else {
                format!("{name} {state} on {} (was {old_state})", show(owner))
            };
            self.push("service", text);
            if matches!(state.as_str(), "failed" | "recovering" | "recoverable")
                && !matches!(old_state.as_str(), "failed" | "recovering" | "recoverable")
            {
                match self.failures.iter_mut().find(|(s, _)| s == name) {
                    Some((_, n)) => *n += 1,
                    None => self.failures.push((name.clone(), 1)),
                }
            }
        }
        self.services = now;
    }

    fn read(&mut self) -> Snapshot {
        let dirs = self.backend.dirs.clone();
        let cman = cman_status(&dirs[0]);
        let rg = self.backend.read_rg();
        let at_ms = now_ms();
        let nodes = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| NodeConfig {
                state_dir: d.clone(),
                read: if i == 0 { cman.clone() } else { cman_status(d) }
                    .map(|s| (s.node_name, s.config_version)),
            })
            .collect();
        if let Ok(v) = &rg {
            self.service_events(v);
        }
        let sample = Sample {
            at_ms,
            members: cman.as_ref().map_or(0, |s| s.members.len() as u32),
            started: rg.as_ref().map_or(0, |v| {
                v.services
                    .iter()
                    .filter(|s| s.record.state.as_str() == "started")
                    .count() as u32
            }),
            quorate: cman.as_ref().is_ok_and(|s| s.quorum.quorate),
        };
        if self.samples.len() == SAMPLES_KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        let (rates, cman_counts) = {
            let s = self.series.lock();
            (s.rates.iter().copied().collect(), s.cman.clone())
        };
        Snapshot {
            at_ms,
            cman: Some(cman),
            rg: Some(rg),
            nodes,
            events: self.events.iter().cloned().collect(),
            samples: self.samples.iter().copied().collect(),
            failures: self.failures.clone(),
            rates,
            cman_counts,
        }
    }
}
