//! Thin drivers around the sans-IO core: the TCP transport, the public
//! lockspace API, and the local control socket read by `dlm_tool`.

pub mod ctl;
pub mod lockspace;
mod spin;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use crate::membership::Membership;
use crate::node::Placement;
use crate::types::{NodeId, NAME_MAX};
use crate::wire::Envelope;
use lockspace::{Lockspace, LsInner, RecoverOps};
pub use transport::ClusterKey;
use transport::Transport;

/// Errors of the public API.
#[derive(Debug, thiserror::Error)]
pub enum DlmError {
    /// NOQUEUE request not grantable now (EAGAIN).
    #[error("lock not available (EAGAIN)")]
    Again,
    /// Conversion refused: conversion deadlock (EDEADLK).
    #[error("conversion deadlock (EDEADLK)")]
    Deadlock,
    /// The request was cancelled (ECANCEL).
    #[error("request cancelled")]
    Canceled,
    /// No such lock.
    #[error("no such lock")]
    NoLock,
    /// Lock busy with another operation (EBUSY).
    #[error("lock busy (EBUSY)")]
    Busy,
    /// Invalid argument (EINVAL).
    #[error("invalid argument (EINVAL)")]
    Invalid,
    /// This node is not a member of the lockspace.
    #[error("not a member of the lockspace")]
    NotMember,
    /// A lockspace of this name is already joined.
    #[error("lockspace already joined")]
    Exists,
    /// Network setup failed.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// Control socket (or metrics endpoint) setup failed.
    #[error("control socket: {0}")]
    Ctl(std::io::Error),
}

/// How to join a lockspace ([`Dlm::join_with`]).
#[derive(Default)]
pub struct JoinOptions {
    /// Told of every recovery, the first (which assigns this node its
    /// slot) included.
    pub ops: Option<Arc<dyn RecoverOps>>,
    /// Where resources' directory entries live; the same on every member.
    pub placement: Placement,
}

impl std::fmt::Debug for JoinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinOptions")
            .field("ops", &self.ops.is_some())
            .field("placement", &self.placement)
            .finish()
    }
}

/// How a process takes part in the cluster's DLM.
#[derive(Clone, Debug)]
pub struct DlmConfig {
    /// This node's id.
    pub node: NodeId,
    /// Where to listen for peers (port 0: any).
    pub listen: SocketAddr,
    /// Every node's listen address (this node's may be omitted).
    pub peers: HashMap<NodeId, SocketAddr>,
    /// Shards per lockspace; every node must use the same number.
    pub shards: u32,
    /// Directory for the control socket; `None`: no control socket.
    pub ctl_dir: Option<PathBuf>,
    /// Where to serve the counters as `GET /metrics` (see
    /// [`crate::metrics`]); `None`: only through the control socket.
    pub metrics: Option<SocketAddr>,
    /// The cluster key: peers prove they hold it before any frame counts,
    /// and every frame is authenticated with it (see
    /// [`transport::auth`]). There is no keyless mode.
    pub key: ClusterKey,
}

impl DlmConfig {
    /// Defaults: 16 shards, no control socket. `key` is the cluster's
    /// (programs load the one cmand uses, with `cman::authkey`).
    pub fn new(
        node: NodeId,
        listen: SocketAddr,
        peers: HashMap<NodeId, SocketAddr>,
        key: ClusterKey,
    ) -> DlmConfig {
        DlmConfig {
            node,
            listen,
            peers,
            shards: 16,
            ctl_dir: None,
            metrics: None,
            key,
        }
    }
}

pub(crate) struct DlmInner {
    pub(crate) node: NodeId,
    shards: u32,
    pub(crate) lockspaces: RwLock<HashMap<String, Arc<LsInner>>>,
    /// Frames for lockspaces not joined yet (bounded).
    early: Mutex<Vec<(NodeId, Vec<u8>)>>,
    transport: Mutex<Option<Arc<Transport>>>,
}

const EARLY_LIMIT: usize = 4096;

/// The DLM instance of a process: one transport, any number of lockspaces.
pub struct Dlm {
    inner: Arc<DlmInner>,
    transport: Arc<Transport>,
    ctl: Option<ctl::CtlServer>,
    metrics: Option<crate::metrics::HttpEndpoint>,
}

impl Dlm {
    /// Starts listening and connecting to peers.
    pub fn start(cfg: DlmConfig) -> Result<Dlm, DlmError> {
        assert!(cfg.shards > 0 && cfg.shards <= u32::from(u16::MAX));
        let inner = Arc::new(DlmInner {
            node: cfg.node,
            shards: cfg.shards,
            lockspaces: RwLock::new(HashMap::new()),
            early: Mutex::new(Vec::new()),
            transport: Mutex::new(None),
        });
        let weak: Weak<DlmInner> = Arc::downgrade(&inner);
        let handler = Arc::new(move |from: NodeId, frame: &[u8]| {
            if let Some(inner) = weak.upgrade() {
                inner.dispatch(from, frame);
            }
        });
        let transport = Arc::new(Transport::start(
            cfg.node,
            cfg.listen,
            &cfg.peers,
            cfg.key.clone(),
            handler,
        )?);
        *inner.transport.lock() = Some(transport.clone());
        let ctl = match &cfg.ctl_dir {
            Some(dir) => Some(
                ctl::CtlServer::start(dir, cfg.node, Arc::downgrade(&inner))
                    .map_err(DlmError::Ctl)?,
            ),
            None => None,
        };
        let metrics = match cfg.metrics {
            Some(addr) => {
                let weak = Arc::downgrade(&inner);
                let render = move || weak.upgrade().map(|d| d.metrics());
                Some(crate::metrics::serve_http(addr, render).map_err(DlmError::Ctl)?)
            }
            None => None,
        };
        Ok(Dlm {
            inner,
            transport,
            ctl,
            metrics,
        })
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// The address peers reach this node at.
    pub fn local_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Adds (or learns the address of) a peer node.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        self.transport.add_peer(id, addr);
    }

    /// Where the counters are served over HTTP, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr())
    }

    /// Path of the control socket, if any.
    pub fn ctl_path(&self) -> Option<&std::path::Path> {
        self.ctl.as_ref().map(|c| c.path())
    }

    /// Joins lockspace `name`, with membership from `membership`.
    pub fn join(&self, name: &str, membership: &dyn Membership) -> Result<Lockspace, DlmError> {
        self.join_with(name, membership, JoinOptions::default())
    }

    /// Joins lockspace `name` and tells `ops` of every recovery, the first
    /// (which assigns this node its slot) included.
    pub fn join_with_ops(
        &self,
        name: &str,
        membership: &dyn Membership,
        ops: Arc<dyn RecoverOps>,
    ) -> Result<Lockspace, DlmError> {
        let opts = JoinOptions {
            ops: Some(ops),
            ..JoinOptions::default()
        };
        self.join_with(name, membership, opts)
    }

    /// Joins lockspace `name` with `opts`.
    pub fn join_with(
        &self,
        name: &str,
        membership: &dyn Membership,
        opts: JoinOptions,
    ) -> Result<Lockspace, DlmError> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(DlmError::Invalid);
        }
        let ls = Arc::new(LsInner::new(
            name,
            self.inner.node,
            self.inner.shards,
            self.transport.clone(),
            opts.ops,
            &opts.placement,
        ));
        {
            let mut map = self.inner.lockspaces.write();
            if map.contains_key(name) {
                return Err(DlmError::Exists);
            }
            map.insert(name.to_string(), ls.clone());
        }
        let weak = Arc::downgrade(&ls);
        membership.subscribe(Arc::new(move |ev| {
            if let Some(ls) = weak.upgrade() {
                ls.membership(&ev);
            }
        }));
        let early = std::mem::take(&mut *self.inner.early.lock());
        for (from, frame) in early {
            self.inner.dispatch(from, &frame);
        }
        Ok(Lockspace { inner: ls })
    }

    /// Leaves lockspace `name`: its locks are dropped here. The membership
    /// source must then tell the other members (a clean leave needs no
    /// fencing, so the source reports the node removed and fenced at once).
    pub fn leave(&self, name: &str) -> Result<(), DlmError> {
        self.inner
            .lockspaces
            .write()
            .remove(name)
            .map(|_| ())
            .ok_or(DlmError::NotMember)
    }

    /// Names of the joined lockspaces.
    pub fn lockspaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.lockspaces.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// The transport (for measurements and tests).
    #[doc(hidden)]
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Fault injection for tests: breaks every TCP connection of this
    /// process, as a network failure would. Nothing is lost: the transport
    /// reconnects and resends what the peers did not acknowledge.
    #[doc(hidden)]
    pub fn break_connections(&self) {
        self.transport.break_connections();
    }

    /// Stops the network threads.
    pub fn shutdown(&self) {
        self.transport.shutdown();
    }
}

impl Drop for Dlm {
    fn drop(&mut self) {
        self.transport.shutdown();
        *self.inner.transport.lock() = None;
    }
}

impl DlmInner {
    /// The counters of every lockspace and the process-wide ones, as text
    /// (see [`crate::metrics`]).
    pub(crate) fn metrics(&self) -> String {
        let mut v: Vec<_> = self
            .lockspaces
            .read()
            .iter()
            .map(|(name, ls)| {
                (
                    name.clone(),
                    Arc::new(crate::metrics::LsCounters::sum(&ls.counters)),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        crate::metrics::render(&v)
    }

    fn dispatch(&self, from: NodeId, frame: &[u8]) {
        let Some((&n, rest)) = frame.split_first() else {
            return;
        };
        let n = usize::from(n);
        if rest.len() < n + 2 {
            tracing::warn!(%from, "short frame dropped");
            return;
        }
        let Ok(name) = std::str::from_utf8(&rest[..n]) else {
            tracing::warn!(%from, "frame with a bad lockspace name dropped");
            return;
        };
        let shard = usize::from(u16::from_le_bytes([rest[n], rest[n + 1]]));
        let env = match Envelope::decode(&rest[n + 2..]) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%from, error = %e, "undecodable message dropped");
                return;
            }
        };
        let ls = self.lockspaces.read().get(name).cloned();
        match ls {
            Some(ls) => ls.receive(from, shard, env),
            None => {
                let mut early = self.early.lock();
                if early.len() < EARLY_LIMIT {
                    early.push((from, frame.to_vec()));
                } else {
                    tracing::warn!(%from, name, "frame for an unknown lockspace dropped");
                }
            }
        }
    }
}
