//! The local API of `cmand`: JSON lines over the unix socket
//! `STATE_DIR/cmand.sock`. Each request line gets one response line; after
//! `subscribe` (and for group members) event lines `{"event": ...}` arrive
//! between responses.

use crate::node::{ClusterEvent, GroupEvent, Status};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/run/cluster";
/// Longest request or response line.
pub const MAX_LINE: usize = 1 << 20;

/// Socket path in a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cmand.sock")
}

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ApiRequest {
    /// Node, view, quorum, nodes.
    Status,
    /// Join a process group.
    Join {
        /// Group.
        group: String,
    },
    /// Leave a process group.
    Leave {
        /// Group.
        group: String,
    },
    /// Send to a group.
    Send {
        /// Group.
        group: String,
        /// Body.
        data: String,
    },
    /// Receive cluster events (views, fencing) on this connection.
    Subscribe,
    /// `cman_tool expected -e N`.
    Expected {
        /// Votes.
        votes: u32,
    },
    /// A new cluster.conf.
    ConfigUpdate {
        /// Text.
        text: String,
    },
    /// The current cluster.conf text.
    GetConfig,
    /// Mark a node fenced (fence_node, fence_ack_manual).
    FenceOverride {
        /// Node name or id.
        node: String,
        /// How.
        how: String,
    },
    /// `cman_tool leave`.
    LeaveCluster,
    /// `fence_tool join` / `leave`.
    FenceDomain {
        /// Join (true) or leave.
        join: bool,
    },
    /// The daemon's counters, in the Prometheus text format (the
    /// response's `msg`).
    Metrics,
}

/// A response or an event line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ApiResponse {
    /// Success.
    #[serde(default)]
    pub ok: bool,
    /// Message on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Status, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
    /// An event (not a response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<ApiEvent>,
}

/// Events pushed to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiEvent {
    /// A group event.
    Group(GroupEvent),
    /// A cluster event.
    Cluster(ClusterEvent),
}

/// Errors of the client side.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Socket trouble.
    #[error("cannot talk to cmand at {0}: {1}")]
    Io(String, std::io::Error),
    /// A line that is not a response.
    #[error("bad response from cmand: {0}")]
    Bad(String),
    /// The daemon said no.
    #[error("{0}")]
    Refused(String),
    /// The daemon closed the connection.
    #[error("cmand closed the connection")]
    Closed,
}

/// A connection to a node's daemon.
pub struct Client {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events received while waiting for a response.
    pub events: std::collections::VecDeque<ApiEvent>,
}

impl Client {
    /// Connects to the daemon of `state_dir`.
    pub fn connect(state_dir: &Path) -> Result<Client, ApiError> {
        let path = socket_path(state_dir);
        let p = path.display().to_string();
        let s = UnixStream::connect(&path).map_err(|e| ApiError::Io(p.clone(), e))?;
        let r = s.try_clone().map_err(|e| ApiError::Io(p.clone(), e))?;
        Ok(Client {
            path: p,
            reader: BufReader::new(r),
            writer: s,
            events: Default::default(),
        })
    }

    /// A second handle on the connection, for another thread to end it
    /// (`shutdown`) while this one waits for events: cmand then takes the
    /// client as gone, and it leaves its groups.
    pub fn closer(&self) -> Result<UnixStream, ApiError> {
        self.writer
            .try_clone()
            .map_err(|e| ApiError::Io(self.path.clone(), e))
    }

    /// Sets a read timeout (None: block).
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<(), ApiError> {
        self.writer
            .set_read_timeout(t)
            .map_err(|e| ApiError::Io(self.path.clone(), e))
    }

    fn read_line(&mut self) -> Result<ApiResponse, ApiError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| ApiError::Io(self.path.clone(), e))?;
        if n == 0 {
            return Err(ApiError::Closed);
        }
        serde_json::from_str(&line).map_err(|e| ApiError::Bad(format!("{e}: {line}")))
    }

    /// Sends a request and waits for its response (events are queued).
    pub fn request(&mut self, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let mut line = serde_json::to_string(req).map_err(|e| ApiError::Bad(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| ApiError::Io(self.path.clone(), e))?;
        loop {
            let r = self.read_line()?;
            match r.event {
                Some(ev) => self.events.push_back(ev),
                None if r.ok => return Ok(r),
                None => return Err(ApiError::Refused(r.error.unwrap_or_default())),
            }
        }
    }

    /// Next event (queued first, then from the socket).
    pub fn next_event(&mut self) -> Result<ApiEvent, ApiError> {
        if let Some(ev) = self.events.pop_front() {
            return Ok(ev);
        }
        loop {
            if let Some(ev) = self.read_line()?.event {
                return Ok(ev);
            }
        }
    }

    /// The daemon's status.
    pub fn status(&mut self) -> Result<Status, ApiError> {
        let r = self.request(&ApiRequest::Status)?;
        r.status
            .map(|s| *s)
            .ok_or_else(|| ApiError::Bad("no status".into()))
    }
}
