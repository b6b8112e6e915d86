//! clvmd: the cluster lock daemon of `locking_type = 3` (lvm2 2.02's
//! `daemons/clvmd`). One per node. It joins the DLM lockspace `clvmd`
//! through the node's cmand, listens on a Unix socket for the lvm
//! commands of its node ([`crate::lock::Request`], one JSON line each) and
//! takes their locks in the DLM:
//!
//! * `V_<vg>` PR/PW and `P_#global` for a command, released when it
//!   unlocks or its connection closes;
//! * activation locks by lvid, held by clvmd itself until deactivation,
//!   NOQUEUE: a conflict is "Volume is busy on another node";
//! * `vg_changed`: broadcast in the cman group `clvmd_cache`; every other
//!   node drops what it cached of that VG: its active LVs of the VG re-read
//!   their maps (an lvextend elsewhere grows them here).
//!
//! Every lock request checks quorum with cmand first: an inquorate node
//! changes nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cman::api::{ApiEvent, ApiRequest, Client};
use cman::dlm_membership::{group_name, CmanMembership};
use cman::node::GroupEvent;
use dlm::{Dlm, DlmConfig, DlmError, Flags, LockId, Lockspace, Mode};
use parking_lot::Mutex;

use crate::conf::Conf;
use crate::lock::{LockMode, Reply, Request};
use crate::store::{LvmError, Result};

/// The DLM lockspace.
pub const LOCKSPACE: &str = "clvmd";
/// The cman group carrying cache messages.
pub const CACHE_GROUP: &str = "clvmd_cache";
/// Default DLM port of clvmd's lockspace.
pub const DEFAULT_PORT: u16 = 21066;

/// How clvmd runs.
#[derive(Debug, Clone)]
pub struct ClvmdConfig {
    /// The node's cmand state dir.
    pub state_dir: PathBuf,
    /// The socket the lvm commands connect to.
    pub socket: PathBuf,
    /// DLM TCP port (the same on every node).
    pub port: u16,
    /// lvm.conf (for refreshing active LVs).
    pub conf: Conf,
}

fn mode(m: LockMode) -> Mode {
    match m {
        LockMode::Cr => Mode::Cr,
        LockMode::Pr => Mode::Pr,
        LockMode::Pw => Mode::Pw,
        LockMode::Ex => Mode::Ex,
    }
}

/// The daemon's shared state.
struct Clvmd {
    ls: Lockspace,
    cfg: ClvmdConfig,
    /// Activation locks: lvid -> (lock, mode).
    lv_locks: Mutex<HashMap<String, (LockId, LockMode)>>,
    /// Sends to the cache group.
    notify: Mutex<Client>,
    /// Cache drops done for other nodes' changes: vg -> count.
    drops: Mutex<HashMap<String, u64>>,
}

/// Runs clvmd: joins, then calls `ready` once the socket listens, then
/// serves until cmand is lost (the process exits with 3 then: locks must
/// not outlive the node's membership).
pub fn run(cfg: ClvmdConfig, ready: impl FnOnce()) -> Result<()> {
    let err = |what: &str, e: &dyn std::fmt::Display| LvmError(format!("{what}: {e}"));
    let m = CmanMembership::join(
        &cfg.state_dir,
        &group_name(LOCKSPACE),
        Duration::from_secs(60),
    )
    .map_err(|e| err("cannot join the cluster through cmand", &e))?;
    m.on_lost(Box::new(|| {
        eprintln!("clvmd: lost cmand: stopping");
        std::process::exit(3);
    }));
    let peers = m.peer_addrs(cfg.port);
    let me = m.dlm_node();
    let listen = *peers
        .get(&me)
        .ok_or_else(|| LvmError("this node has no IP address name".into()))?;
    let cluster = Client::connect(&cfg.state_dir)
        .and_then(|mut c| c.status())
        .map_err(|e| err("cmand", &e))?
        .cluster_name;
    let key = cman::authkey::load_for_dlm(&cfg.state_dir, &cluster)
        .map_err(|e| err("cluster key", &e))?;
    let dlm = Dlm::start(DlmConfig::new(me, listen, peers, key)).map_err(|e| err("dlm", &e))?;
    let ls = dlm
        .join(LOCKSPACE, m.as_ref())
        .map_err(|e| err("dlm lockspace clvmd", &e))?;
    while !ls.is_running() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut notify = Client::connect(&cfg.state_dir).map_err(|e| err("cmand", &e))?;
    notify
        .request(&ApiRequest::Join {
            group: CACHE_GROUP.into(),
        })
        .map_err(|e| err("cmand group", &e))?;
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(d) = cfg.socket.parent() {
        std::fs::create_dir_all(d).map_err(|e| err(&d.display().to_string(), &e))?;
    }
    let listener =
        UnixListener::bind(&cfg.socket).map_err(|e| err(&cfg.socket.display().to_string(), &e))?;
    // Root only, as every daemon's control socket: the mode keeps others
    // out of the path, SO_PEERCRED answers those who get in anyway.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&cfg.socket.display().to_string(), &e))?;
    }
    let me_id = me.0;
    let d = Arc::new(Clvmd {
        ls,
        cfg,
        lv_locks: Mutex::new(HashMap::new()),
        notify: Mutex::new(notify),
        drops: Mutex::new(HashMap::new()),
    });
    let d2 = d.clone();
    std::thread::spawn(move || d2.cache_messages(me_id));
    ready();
    for conn in listener.incoming() {
        let Ok(s) = conn else { continue };
        let d = d.clone();
        std::thread::spawn(move || d.serve_client(s));
    }
    drop(dlm);
    drop(m);
    Ok(())
}

impl Clvmd {
    fn quorate(&self) -> std::result::Result<(), String> {
        let st = Client::connect(&self.cfg.state_dir)
            .and_then(|mut c| c.status())
            .map_err(|e| format!("cannot check quorum with cmand: {e}"))?;
        if st.quorum.quorate {
            Ok(())
        } else {
            Err("Cluster is not quorate: refusing to lock clustered volume groups.".into())
        }
    }

    /// One command's connection; its locks go when it closes.
    fn serve_client(&self, s: UnixStream) {
        let mut held: HashMap<String, LockId> = HashMap::new();
        let Ok(mut w) = s.try_clone() else { return };
        if let Err(error) = dlm::driver::ctl::peer_allowed(&s) {
            let r = Reply {
                ok: false,
                error,
                data: serde_json::Value::Null,
            };
            // The request is read first: closing with it unread would make
            // the client's write fail (EPIPE) before it reads why.
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
            let mut line = String::new();
            let _ = BufReader::new(std::io::Read::take(&s, 64 * 1024)).read_line(&mut line);
            let mut out = serde_json::to_string(&r).expect("serializable");
            out.push('\n');
            let _ = w.write_all(out.as_bytes());
            return;
        }
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.handle(req, &mut held),
                Err(e) => Err(format!("bad request: {e}")),
            };
            let r = match reply {
                Ok(data) => Reply {
                    ok: true,
                    error: String::new(),
                    data,
                },
                Err(error) => Reply {
                    ok: false,
                    error,
                    data: serde_json::Value::Null,
                },
            };
            let mut out = serde_json::to_string(&r).expect("serializable");
            out.push('\n');
            if w.write_all(out.as_bytes()).is_err() {
                break;
            }
        }
        for (_, id) in held {
            let _ = self.ls.unlock(id, Flags::empty(), None);
        }
    }

    fn handle(
        &self,
        req: Request,
        held: &mut HashMap<String, LockId>,
    ) -> std::result::Result<serde_json::Value, String> {
        let _s = tracing::debug_span!("clvmd_request", ?req).entered();
        match req {
            Request::Lock { name, mode: m } => {
                self.quorate()?;
                let r = match held.get(&name) {
                    Some(&id) => self
                        .ls
                        .convert(id, mode(m), Flags::empty(), None)
                        .map(|_| id),
                    None => self.ls.lock(name.as_bytes(), mode(m), Flags::empty()),
                };
                let id = r.map_err(|e| format!("Error locking {name}: {e}"))?;
                held.insert(name, id);
                Ok(serde_json::Value::Null)
            }
            Request::Unlock { name } => {
                if let Some(id) = held.remove(&name) {
                    self.ls
                        .unlock(id, Flags::empty(), None)
                        .map_err(|e| format!("Error unlocking {name}: {e}"))?;
                }
                Ok(serde_json::Value::Null)
            }
            Request::LockLv { lvid, mode: m } => {
                self.quorate()?;
                self.lock_lv(&lvid, m)
            }
            Request::UnlockLv { lvid } => {
                if let Some((id, _)) = self.lv_locks.lock().remove(&lvid) {
                    self.ls
                        .unlock(id, Flags::empty(), None)
                        .map_err(|e| format!("Error unlocking {lvid}: {e}"))?;
                }
                Ok(serde_json::Value::Null)
            }
            Request::VgChanged { vg } => {
                let mut n = self.notify.lock();
                n.request(&ApiRequest::Send {
                    group: CACHE_GROUP.into(),
                    data: format!("vg_changed {vg}"),
                })
                .map_err(|e| format!("cmand: {e}"))?;
                Ok(serde_json::Value::Null)
            }
            Request::Dump => Ok(self.dump(held)),
        }
    }

    fn lock_lv(&self, lvid: &str, m: LockMode) -> std::result::Result<serde_json::Value, String> {
        let mut locks = self.lv_locks.lock();
        let busy = |e: DlmError| match e {
            DlmError::Again => "Volume is busy on another node".to_string(),
            e => format!("Error locking {lvid}: {e}"),
        };
        match locks.get(lvid).copied() {
            Some((_, have)) if have == m => {}
            Some((id, _)) => {
                self.ls
                    .convert(id, mode(m), Flags::NOQUEUE, None)
                    .map_err(busy)?;
                locks.insert(lvid.to_string(), (id, m));
            }
            None => {
                let id = self
                    .ls
                    .lock(lvid.as_bytes(), mode(m), Flags::NOQUEUE)
                    .map_err(busy)?;
                locks.insert(lvid.to_string(), (id, m));
            }
        }
        Ok(serde_json::Value::Null)
    }

    fn dump(&self, held: &HashMap<String, LockId>) -> serde_json::Value {
        let lv: Vec<_> = self
            .lv_locks
            .lock()
            .iter()
            .map(|(k, (_, m))| serde_json::json!({"lvid": k, "mode": m}))
            .collect();
        let mine: Vec<&String> = held.keys().collect();
        serde_json::json!({
            "lockspace": LOCKSPACE,
            "activation_locks": lv,
            "connection_locks": mine,
            "cache_drops": *self.drops.lock(),
        })
    }

    /// Other nodes' `vg_changed`: drop what we hold of that VG.
    /// Reads the cache group's messages on the `notify` connection (the
    /// one that sends: a member must read what the group delivers to it),
    /// letting go of it every 200 ms so that sends get through.
    fn cache_messages(&self, me: u32) {
        loop {
            let ev = {
                let mut n = self.notify.lock();
                n.set_timeout(Some(Duration::from_millis(200))).ok();
                let r = n.next_event();
                n.set_timeout(None).ok();
                r
            };
            match ev {
                Ok(ApiEvent::Group(GroupEvent::Message { node, data, .. })) => {
                    if node.0 != me {
                        if let Some(vg) = data.strip_prefix("vg_changed ") {
                            self.drop_cache(vg);
                        }
                    }
                }
                Ok(_) => {}
                Err(cman::api::ApiError::Closed) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn drop_cache(&self, vg: &str) {
        *self.drops.lock().entry(vg.to_string()).or_default() += 1;
        let dir = self.cfg.conf.locking_dir().join("lv");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(lv) = name
                .strip_prefix(&format!("{vg}-"))
                .and_then(|r| r.strip_suffix(".sock"))
            {
                let _ = crate::activate::refresh(&self.cfg.conf, vg, lv);
            }
        }
    }
}

/// Asks the clvmd at `socket` for its live state (`clvmd -d`).
pub fn dump(socket: &Path) -> Result<serde_json::Value> {
    let mut l = crate::lock::ClusterLocker::new(socket);
    let r = l.call(&Request::Dump)?;
    if !r.ok {
        return Err(crate::store::LvmError(format!("clvmd: {}", r.error)));
    }
    Ok(r.data)
}
