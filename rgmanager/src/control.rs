//! The daemon's local control socket `STATE_DIR/rgmanager.sock`: JSON
//! lines, one request and one response per connection, for clusvcadm and
//! clustat. Only root (or the daemon's own user) may talk to it
//! (SO_PEERCRED).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::Record;

/// Socket path in a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("rgmanager.sock")
}

/// What clusvcadm asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    /// -e
    Enable,
    /// -d
    Disable,
    /// -r
    Relocate,
    /// -R
    Restart,
    /// -s
    Stop,
    /// -Z
    Freeze,
    /// -U
    Unfreeze,
    /// -M
    Migrate,
    /// -c
    Convalesce,
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Everything clustat shows.
    Status,
    /// A clusvcadm operation; answered when it has settled.
    Admin {
        /// Service (with or without `service:`).
        service: String,
        /// Operation.
        action: AdminAction,
        /// `-m NODE`.
        node: Option<String>,
        /// `-F`: follow the failover domain (enable).
        follow_domain: bool,
    },
    /// `clusvcadm -l` (lock) or `-u` (unlock) every resource manager;
    /// answered with an [`AdminReply`] (code 0 or 1).
    Lock {
        /// Lock or unlock.
        lock: bool,
    },
    /// `clusvcadm -S`: locked or not; answered [`Response::Locked`].
    QueryLock,
}

/// A service as clustat shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// `service:NAME`.
    pub name: String,
    /// Its record.
    pub record: Record,
    /// Owner's name.
    pub owner: Option<String>,
    /// Last owner's name.
    pub last_owner: Option<String>,
    /// Seconds since the epoch of the last change this daemon saw.
    pub last_transition: u64,
}

/// A node as clustat shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Id.
    pub id: u32,
    /// A cluster member.
    pub online: bool,
    /// This node.
    pub local: bool,
    /// rgmanager runs there.
    pub rgmanager: bool,
    /// It proposes placements.
    pub rgmanager_master: bool,
}

/// The daemon's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// Cluster name.
    pub cluster: String,
    /// Local node's name.
    pub local: String,
    /// cmand's view sequence.
    pub generation: u64,
    /// Quorate.
    pub quorate: bool,
    /// This daemon holds the agreed records.
    pub synced: bool,
    /// Configured nodes.
    pub nodes: Vec<NodeView>,
    /// Services.
    pub services: Vec<ServiceView>,
    /// The resource managers are locked (`clusvcadm -l`).
    #[serde(default)]
    pub locked: bool,
}

/// The answer to an admin request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    /// rgmanager's result code (0 success, negative `RG_E*`).
    pub code: i32,
    /// rg_strerror's text.
    pub message: String,
    /// The service's state once settled.
    pub state: Option<String>,
    /// Its owner then.
    pub owner: Option<String>,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Response {
    /// Status.
    Status(Box<StatusView>),
    /// An admin result.
    Admin(AdminReply),
    /// The lock state (`clusvcadm -S`).
    Locked {
        /// Locked.
        locked: bool,
    },
    /// The request was refused.
    Error {
        /// Why.
        msg: String,
    },
}

/// Errors of the control client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon.
    #[error("cannot connect to rgmanager at {0}: {1}")]
    Connect(String, std::io::Error),
    /// Socket trouble.
    #[error("talking to rgmanager: {0}")]
    Io(#[from] std::io::Error),
    /// A line that is not a response.
    #[error("bad response from rgmanager: {0}")]
    Bad(String),
}

/// Sends one request to the daemon of `state_dir` and waits for the
/// answer (up to `timeout`).
pub fn request(
    state_dir: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let path = socket_path(state_dir);
    let mut s = UnixStream::connect(&path)
        .map_err(|e| ControlError::Connect(path.display().to_string(), e))?;
    s.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::Bad(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut resp = String::new();
    r.read_line(&mut resp)?;
    serde_json::from_str(&resp).map_err(|e| ControlError::Bad(format!("{e}: {resp}")))
}
