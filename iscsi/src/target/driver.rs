//! The threaded driver around [`Connection`]: one accept thread per
//! portal, one reader and one writer thread per connection (blocking
//! sockets, TCP_NODELAY, writes batched), a shared worker pool that runs
//! SCSI commands so that many reads are served in parallel, and the unix
//! control socket tgtadm talks to.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;

use crate::pdu::{frame, Digests, Pdu};

use super::conn::{Connection, OutPdu, Output};
use super::mgmt::{self, MgmtConfig, Reply, Request};
use super::registry::Registry;
use super::task::ScsiTask;

/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 1024;

/// Bytes the writer gathers before one `write`.
const WRITE_BATCH: usize = 1 << 20;

/// Errors starting the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        #[source]
        source: io::Error,
    },
}

enum WriterMsg {
    Pdu(OutPdu),
    Digests(Digests),
    Close,
    Delay(std::time::Duration),
}

struct Job {
    task: ScsiTask,
    link: Arc<Link>,
}

/// What a worker needs to hand a result back to its connection.
struct Link {
    conn: Mutex<Connection>,
    writer: Sender<WriterMsg>,
    pool: WorkerPool,
}

/// A fixed pool of threads running SCSI commands.
#[derive(Clone)]
pub struct WorkerPool {
    tx: Sender<Job>,
}

impl WorkerPool {
    /// Starts `threads` workers.
    pub fn new(threads: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        // std's futex mutex: idle workers sleep instead of spinning.
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let _ = thread::Builder::new()
                .name(format!("scsi-worker-{i}"))
                .spawn(move || worker(rx));
        }
        WorkerPool { tx }
    }
}

fn worker(rx: Arc<std::sync::Mutex<Receiver<Job>>>) {
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let job = match next {
            Ok(j) => j,
            Err(_) => return,
        };
        let response = job.task.run();
        let mut conn = job.link.conn.lock();
        conn.complete(job.task.itt, response);
        let outputs = conn.take_outputs();
        dispatch(&job.link, outputs);
    }
}

/// Sends a connection's outputs on their way. Called with the connection
/// locked so that PDUs reach the writer in StatSN order.
fn dispatch(link: &Arc<Link>, outputs: Vec<Output>) {
    for o in outputs {
        match o {
            Output::Send(p) => {
                let _ = link.writer.send(WriterMsg::Pdu(p));
            }
            Output::SetLimits { digests, .. } => {
                let _ = link.writer.send(WriterMsg::Digests(digests));
            }
            Output::Execute(task) => {
                let _ = link.pool.tx.send(Job {
                    task,
                    link: link.clone(),
                });
            }
            Output::Close => {
                let _ = link.writer.send(WriterMsg::Close);
            }
            Output::Delay(d) => {
                let _ = link.writer.send(WriterMsg::Delay(d));
            }
        }
    }
}

/// Serves iSCSI on `listener` until the process exits.
pub fn serve_portal(listener: TcpListener, registry: Arc<Registry>, pool: WorkerPool) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!("too many connections; closing a new one");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (registry, pool, active) = (registry.clone(), pool.clone(), active.clone());
        let spawned = thread::Builder::new()
            .name("iscsi-conn".into())
            .spawn(move || {
                if let Err(e) = run_connection(stream, registry, pool) {
                    tracing::debug!(error = %e, "connection ended");
                }
                active.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a connection thread");
        }
    }
}

/// Binds a portal (`ADDR:PORT`).
pub fn bind_portal(addr: &str) -> Result<TcpListener, DriverError> {
    TcpListener::bind(addr).map_err(|source| DriverError::Listen {
        addr: addr.to_string(),
        source,
    })
}

fn run_connection(stream: TcpStream, registry: Arc<Registry>, pool: WorkerPool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let local = stream.local_addr()?;
    let kill_handle = stream.try_clone()?;
    let killer: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let _ = kill_handle.shutdown(Shutdown::Both);
    });
    let (wtx, wrx) = mpsc::channel();
    let write_stream = stream.try_clone()?;
    let writer = thread::Builder::new()
        .name("iscsi-writer".into())
        .spawn(move || writer_loop(write_stream, wrx))?;
    let link = Arc::new(Link {
        conn: Mutex::new(Connection::new(registry, peer, local, killer)),
        writer: wtx,
        pool,
    });
    tracing::debug!(%peer, "connection accepted");
    reader_loop(&stream, &link, peer);
    let _ = stream.shutdown(Shutdown::Read);
    let _ = writer.join();
    Ok(())
}

fn reader_loop(stream: &TcpStream, link: &Arc<Link>, peer: SocketAddr) {
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    loop {
        let (digests, max) = link.conn.lock().read_limits();
        let read = Pdu::read_from(&mut reader, digests, max);
        let mut conn = link.conn.lock();
        conn.receive(read);
        let outputs = conn.take_outputs();
        dispatch(link, outputs);
        if conn.is_closed() {
            tracing::debug!(%peer, "connection closed");
            return;
        }
    }
}

fn writer_loop(stream: TcpStream, rx: Receiver<WriterMsg>) {
    let mut out = &stream;
    let mut digests = Digests::default();
    let mut batch = Batch::default();
    let mut closing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Pdu(p) => batch.push(p, digests),
                WriterMsg::Digests(d) => digests = d,
                WriterMsg::Close => closing = true,
                WriterMsg::Delay(d) => {
                    // What came before goes now; what comes after waits.
                    if batch.write_to(&mut out).is_err() {
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                    thread::sleep(d);
                }
            }
            if closing || batch.full() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if batch.write_to(&mut out).is_err() {
            break;
        }
        if closing {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// PDUs gathered for one vectored write: headers (with digests and the
/// data padding) are copied into one buffer, data segments are referenced
/// where they are.
#[derive(Default)]
struct Batch {
    /// Encoded headers, padding and digests.
    head: Vec<u8>,
    /// Per PDU: head range before the data, the PDU (for its data), head
    /// range after the data.
    parts: Vec<(std::ops::Range<usize>, OutPdu, std::ops::Range<usize>)>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, p: OutPdu, digests: Digests) {
        let start = self.head.len();
        let data = p.data.as_slice();
        frame::encode_header(&p.bhs, &[], data.len(), digests, &mut self.head);
        let mid = self.head.len();
        frame::encode_trailer(data, digests, &mut self.head);
        let end = self.head.len();
        self.bytes += end - start + data.len();
        self.parts.push((start..mid, p, mid..end));
    }

    fn full(&self) -> bool {
        self.bytes >= WRITE_BATCH || self.parts.len() >= 256
    }

    fn write_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        let mut slices = Vec::with_capacity(self.parts.len() * 3);
        for (before, p, after) in &self.parts {
            slices.push(io::IoSlice::new(&self.head[before.clone()]));
            let data = p.data.as_slice();
            if !data.is_empty() {
                slices.push(io::IoSlice::new(data));
            }
            if !after.is_empty() {
                slices.push(io::IoSlice::new(&self.head[after.clone()]));
            }
        }
        let result = write_all_vectored(out, &mut slices);
        self.head.clear();
        self.parts.clear();
        self.bytes = 0;
        result
    }
}

fn write_all_vectored(out: &mut impl Write, mut slices: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        // writev takes at most IOV_MAX (1024) buffers at once.
        let n = slices.len().min(1024);
        match out.write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => io::IoSlice::advance_slices(&mut slices, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The control socket path for instance `n` under `dir` (tgt: socket.N).
pub fn control_path(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    dir.join(format!("socket.{n}"))
}

/// Binds the control socket, replacing a stale one.
pub fn bind_control(path: &std::path::Path) -> Result<UnixListener, DriverError> {
    let err = |source| DriverError::Control {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another tgtd is using it",
        )));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(err)?;
    // Root-only: by its mode, and by the client's credentials
    // ([`serve_control`]).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// Whether the client on `s` may manage targets: root, or tgtd's own
/// user (`SO_PEERCRED`). Else the reason.
pub fn control_peer_allowed(s: &UnixStream) -> Result<(), String> {
    let cred = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("permission denied: cannot read the client's credentials: {e}"))?;
    let uid = cred.uid();
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    Err(format!(
        "permission denied: tgtd's control socket is for root (client uid {uid})"
    ))
}

/// Serves management requests until the process exits.
pub fn serve_control(listener: UnixListener, registry: Arc<Registry>, cfg: MgmtConfig) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let allowed = control_peer_allowed(&stream);
        // Read either way: a client gets its answer, not a reset.
        let req = read_request(&mut stream);
        let reply = match allowed.map(|()| req) {
            Err(why) => {
                tracing::warn!(why, "control socket: client refused");
                Reply {
                    code: 1,
                    message: why,
                    output: String::new(),
                }
            }
            Ok(Ok(req)) => mgmt::handle(&registry, &cfg, &req),
            Ok(Err(e)) => Reply {
                code: 17,
                message: format!("invalid request: {e}"),
                output: String::new(),
            },
        };
        let mut text = serde_json::to_vec(&reply).unwrap_or_default();
        text.push(b'\n');
        let _ = stream.write_all(&text);
    }
}

fn read_request(stream: &mut UnixStream) -> io::Result<Request> {
    let mut text = Vec::new();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.take(1 << 20).read_to_end(&mut text)?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends one request to the tgtd control socket at `path` (the tgtadm side).
pub fn send_request(path: &std::path::Path, req: &Request) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(path)?;
    stream.write_all(&serde_json::to_vec(req).map_err(io::Error::other)?)?;
    stream.shutdown(Shutdown::Write)?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text)?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
