//! The threaded driver around [`Connection`]: one accept thread per
//! portal, one reader and one writer thread per connection (blocking
//! sockets, TCP_NODELAY, writes batched), a shared worker pool that runs
//! SCSI commands so that many reads are served in parallel, and the unix
//! control socket tgtadm talks to.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;

use crate::pdu::{Digests, Pdu};

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
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let _ = thread::Builder::new()
                .name(format!("scsi-worker-{i}"))
                .spawn(move || worker(rx));
        }
        WorkerPool { tx }
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = match rx.lock().recv() {
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
    let mut out = BufWriter::with_capacity(WRITE_BATCH, &stream);
    let mut digests = Digests::default();
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    let mut closing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Pdu(p) => p.encode_into(digests, &mut buf),
                WriterMsg::Digests(d) => digests = d,
                WriterMsg::Close => closing = true,
            }
            if closing || buf.len() >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
            break;
        }
        buf.clear();
        if closing {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
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
    UnixListener::bind(path).map_err(err)
}

/// Serves management requests until the process exits.
pub fn serve_control(listener: UnixListener, registry: Arc<Registry>, cfg: MgmtConfig) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let reply = match read_request(&mut stream) {
            Ok(req) => mgmt::handle(&registry, &cfg, &req),
            Err(e) => Reply {
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
