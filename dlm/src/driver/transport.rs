//! TCP transport between the processes of a cluster: every node listens on
//! one port; to send to a peer it keeps one outgoing connection (TCP_NODELAY)
//! fed by a bounded queue and a writer thread. Frames are length-prefixed.
//!
//! Delivery is reliable and FIFO per peer while the connection lives, which
//! is what the DLM protocol needs. If a connection to a live peer breaks,
//! queued frames are lost (logged); peers that die are removed by the
//! membership source and recovery takes over.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::types::NodeId;

const HELLO_MAGIC: u32 = 0x444c_4d31; // "DLM1"
/// Largest frame accepted from the network.
pub const MAX_FRAME: usize = 1 << 22;
/// Frames queued per peer before new ones are dropped.
pub const QUEUE_LIMIT: usize = 1 << 16;

/// Called for every frame received: (sender, payload).
pub type FrameHandler = Arc<dyn Fn(NodeId, &[u8]) + Send + Sync>;

/// Transport errors.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not listen.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

struct PeerState {
    /// The connection, in non-blocking mode, once established.
    stream: Option<TcpStream>,
    /// Bytes not yet written (whole frames; the first may be partly sent).
    pending: VecDeque<Vec<u8>>,
    /// How much of `pending[0]` is already written.
    head_off: usize,
}

struct PeerQueue {
    addr: SocketAddr,
    state: Mutex<PeerState>,
    cv: Condvar,
    connected: AtomicBool,
}

impl PeerQueue {
    /// Writes as much pending data as the socket takes without blocking.
    /// Returns false when the connection failed (it is dropped).
    fn flush_pending(&self, st: &mut PeerState) -> bool {
        let Some(s) = st.stream.as_mut() else {
            return true;
        };
        while let Some(front) = st.pending.front() {
            match s.write(&front[st.head_off..]) {
                Ok(n) => {
                    st.head_off += n;
                    if st.head_off == front.len() {
                        st.pending.pop_front();
                        st.head_off = 0;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, "connection to peer lost");
                    st.stream = None;
                    st.pending.clear();
                    st.head_off = 0;
                    self.connected.store(false, Ordering::Relaxed);
                    return false;
                }
            }
        }
        true
    }
}

/// The process's connections to its peers.
pub struct Transport {
    me: NodeId,
    local_addr: SocketAddr,
    peers: parking_lot::RwLock<HashMap<NodeId, Arc<PeerQueue>>>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Transport {
    /// Listens on `listen` and starts writer threads towards `peers`.
    pub fn start(
        me: NodeId,
        listen: SocketAddr,
        peers: &HashMap<NodeId, SocketAddr>,
        handler: FrameHandler,
    ) -> Result<Transport, TransportError> {
        let listener = TcpListener::bind(listen).map_err(|source| TransportError::Listen {
            addr: listen,
            source,
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Listen {
                addr: listen,
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        {
            let (stop, streams) = (stop.clone(), streams.clone());
            thread::Builder::new()
                .name("dlm-accept".into())
                .spawn(move || accept_loop(listener, handler, stop, streams))
                .expect("spawn");
        }
        let t = Transport {
            me,
            local_addr,
            peers: Default::default(),
            stop,
            streams,
        };
        for (&id, &addr) in peers {
            t.add_peer(id, addr);
        }
        Ok(t)
    }

    /// Adds a peer (ignored for this node or a known peer).
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        let mut peers = self.peers.write();
        if id == self.me || peers.contains_key(&id) {
            return;
        }
        let pq = Arc::new(PeerQueue {
            addr,
            state: Mutex::new(PeerState {
                stream: None,
                pending: VecDeque::new(),
                head_off: 0,
            }),
            cv: Condvar::new(),
            connected: AtomicBool::new(false),
        });
        let (pq2, stop2, me) = (pq.clone(), self.stop.clone(), self.me);
        thread::Builder::new()
            .name(format!("dlm-send-{id}"))
            .spawn(move || writer_loop(me, id, pq2, stop2))
            .expect("spawn");
        peers.insert(id, pq);
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends `frame` (built by [`frame_start`] and [`frame_finish`]) to
    /// `to`. Never blocks: the caller's thread writes directly when the
    /// socket takes the bytes, else the peer's writer thread finishes.
    /// Order is kept per peer.
    pub fn send(&self, to: NodeId, frame: Vec<u8>) {
        let peers = self.peers.read();
        let Some(pq) = peers.get(&to) else {
            tracing::warn!(%to, "send to unknown peer dropped");
            return;
        };
        let mut st = pq.state.lock();
        if st.pending.len() >= QUEUE_LIMIT {
            tracing::error!(%to, "send queue full, frame dropped");
            return;
        }
        st.pending.push_back(frame);
        if st.pending.len() == 1 && st.stream.is_some() {
            pq.flush_pending(&mut st);
        }
        if !st.pending.is_empty() {
            pq.cv.notify_one();
        }
    }

    /// True when the connection to `to` is up.
    pub fn connected(&self, to: NodeId) -> bool {
        self.peers
            .read()
            .get(&to)
            .is_some_and(|p| p.connected.load(Ordering::Relaxed))
    }

    /// Stops all threads and closes all connections.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for pq in self.peers.read().values() {
            pq.state.lock().stream = None;
            pq.cv.notify_all();
        }
        for s in self.streams.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(self.local_addr);
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    handler: FrameHandler,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(s) = conn else { continue };
        let _ = s.set_nodelay(true);
        if let Ok(c) = s.try_clone() {
            streams.lock().push(c);
        }
        let h = handler.clone();
        let _ = thread::Builder::new()
            .name("dlm-recv".into())
            .spawn(move || {
                if let Err(e) = reader(s, h) {
                    tracing::debug!(error = %e, "connection closed");
                }
            });
    }
}

fn read_u32(s: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn reader(s: TcpStream, handler: FrameHandler) -> std::io::Result<()> {
    let mut r = std::io::BufReader::with_capacity(64 * 1024, s);
    if read_u32(&mut r)? != HELLO_MAGIC {
        return Err(std::io::Error::other("bad hello"));
    }
    let from = NodeId(read_u32(&mut r)?);
    let mut buf = Vec::new();
    loop {
        let len = read_u32(&mut r)? as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other("frame too large"));
        }
        buf.resize(len, 0);
        r.read_exact(&mut buf)?;
        handler(from, &buf);
    }
}

fn writer_loop(me: NodeId, to: NodeId, pq: Arc<PeerQueue>, stop: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(5);
    while !stop.load(Ordering::SeqCst) {
        let s = match connect(me, pq.addr) {
            Ok(s) => s,
            Err(_) => {
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let fd = s.as_raw_fd();
        {
            let mut st = pq.state.lock();
            st.stream = Some(s);
            pq.connected.store(true, Ordering::Relaxed);
        }
        tracing::debug!(%to, "connected");
        drain(&pq, fd, &stop);
    }
}

fn connect(me: NodeId, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    let mut hello = [0u8; 8];
    hello[..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
    hello[4..].copy_from_slice(&me.0.to_le_bytes());
    s.write_all(&hello)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Writes queued frames whenever the socket can take them, until the
/// connection fails or the transport stops.
fn drain(pq: &PeerQueue, fd: std::os::fd::RawFd, stop: &AtomicBool) {
    loop {
        {
            let mut st = pq.state.lock();
            while st.pending.is_empty() {
                if stop.load(Ordering::SeqCst) || st.stream.is_none() {
                    return;
                }
                pq.cv.wait_for(&mut st, Duration::from_millis(200));
            }
            if !pq.flush_pending(&mut st) {
                return;
            }
            if st.pending.is_empty() {
                continue;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the fd stays open while `stream` is set,
        // and a closed fd only makes poll report POLLNVAL.
        unsafe { libc::poll(&mut p, 1, 100) };
    }
}

/// Starts a frame: room for the length prefix.
pub fn frame_start(capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(capacity + 4);
    f.extend_from_slice(&[0; 4]);
    f
}

/// Finishes a frame started by [`frame_start`]: fills in the length.
pub fn frame_finish(f: &mut [u8]) {
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_le_bytes());
}
