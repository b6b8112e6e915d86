//! luci: the cluster's web console, over the node's own local APIs (no
//! ricci agent): cmand's socket for membership, quorum, fencing, events
//! and cluster.conf; rgmanager's control socket for services.
//!
//! - [`cluster`]: reading the daemons (a [`cluster::Snapshot`] stamped with
//!   its time, refreshed at each cmand event and every half second) and
//!   acting through them (clusvcadm's operations, config pushes).
//! - [`conf`]: cluster.conf validation with lines, diff, the domain form,
//!   the version history.
//! - [`users`], [`session`], [`audit`]: the users file with PBKDF2 hashes,
//!   sessions with CSRF tokens and an idle timeout, the audit log.
//! - [`pages`], [`server`]: HTML rendered by the server; axum routes.
//!
//! Glossary: *view* is cmand's membership (view id `seq.coordinator.inc`);
//! *config_version* is cluster.conf's version; *CSRF token* is the random
//! value each form carries that a page of another site cannot know.

pub mod audit;
pub mod cluster;
pub mod conf;
pub mod metrics;
pub mod pages;
pub mod server;
pub mod session;
pub mod users;
pub mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8084";
/// Default directory of luci's own files.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/luci";

/// How luci runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Nodes' state directories: luci acts through the first; the others
    /// (nodes on this machine) are read for the version they run.
    pub state_dirs: Vec<PathBuf>,
    /// luci's own files: `audit.log`, `history/`.
    pub data_dir: PathBuf,
    /// The users file.
    pub users: PathBuf,
    /// Sessions end after this long without a request.
    pub session_idle: Duration,
    /// tgtd's control socket (its targets, LUNs and sessions are shown on
    /// the storage page).
    pub tgtd_socket: PathBuf,
    /// Directory of the dlm users' control sockets (their lockspaces are
    /// shown on the storage page).
    pub dlm_ctl_dir: PathBuf,
}

/// Errors that stop luci.
#[derive(Debug, thiserror::Error)]
pub enum LuciError {
    /// Its data directory.
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    /// The listening socket.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The runtime or the server.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No state directory.
    #[error("no --state-dir given")]
    NoStateDir,
}

/// Serves until the process ends.
pub fn run(o: Options) -> Result<(), LuciError> {
    if o.state_dirs.is_empty() {
        return Err(LuciError::NoStateDir);
    }
    let dd = |e| LuciError::DataDir(o.data_dir.display().to_string(), e);
    std::fs::create_dir_all(&o.data_dir).map_err(dd)?;
    let history = conf::History::open(&o.data_dir.join("history")).map_err(dd)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let backend = cluster::Backend {
            dirs: o.state_dirs.clone(),
            metrics: Some(metrics::Sources {
                cman_dir: o.state_dirs[0].clone(),
                tgtd_socket: o.tgtd_socket.clone(),
                dlm_ctl_dir: o.dlm_ctl_dir.clone(),
            }),
        };
        let snap = backend.clone().monitor();
        let app = Arc::new(server::App {
            backend,
            tgtd_socket: o.tgtd_socket.clone(),
            dlm_ctl_dir: o.dlm_ctl_dir.clone(),
            users: o.users.clone(),
            sessions: Mutex::new(session::Sessions::new(o.session_idle)),
            audit: audit::Audit::new(o.data_dir.join("audit.log")),
            history,
            snap,
            conf_lock: Default::default(),
        });
        let l = tokio::net::TcpListener::bind(o.listen)
            .await
            .map_err(|e| LuciError::Listen(o.listen, e))?;
        eprintln!("luci: listening on http://{}", l.local_addr()?);
        axum::serve(l, server::router(app)).await?;
        Ok(())
    })
}
