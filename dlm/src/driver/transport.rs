//! TCP transport between the processes of a cluster, with reliable delivery
//! across broken connections (the kernel DLM's `midcomms.c` layer over its
//! `lowcomms.c` sockets, in one module).
//!
//! Every node listens on one port. To send to a peer it keeps one outgoing
//! connection (TCP_NODELAY); frames flow only from the connecting side to
//! the accepting side, and the accepting side answers with cumulative
//! acknowledgements on the same connection.
//!
//! - **Sequence numbers.** Every frame to a peer carries the next number of
//!   that peer's stream (1, 2, ...). The sender keeps each frame until the
//!   peer acknowledges it ([`SendQueue`]); the receiver delivers a frame
//!   only if it is the next one, drops duplicates and closes the connection
//!   on a gap ([`RecvSeq`]).
//! - **Lazy acknowledgements.** The receiver acknowledges the highest number
//!   delivered (8 bytes) every [`ACK_EVERY`] frames, or [`ACK_DELAY`] after
//!   the first frame it owes an acknowledgement for, never once per frame: the fast path does not pay a syscall
//!   for it. The sender reads them when it is awake anyway (they do not
//!   wake its writer thread) and frees the frames.
//! - **Reconnection.** When a connection breaks the writer thread
//!   reconnects; in the hello exchange the receiver says which number it
//!   has delivered last, and the sender resends everything after it, in
//!   order. Nothing is lost, nothing delivered twice.
//! - **Incarnations.** Each process picks a random 64-bit incarnation at
//!   start and sends it in the hello. A receiver that sees a new
//!   incarnation of a peer (the peer restarted) starts its stream afresh;
//!   a sender that finds a new incarnation of the receiver drops the frames
//!   meant for the dead one instead of replaying them into the new process:
//!   every frame queued while it was connected to the old incarnation, and
//!   every frame it wrote to it. Only frames queued after the loss of the
//!   old connection was noticed go to the new one.
//! - **Addressing.** The hello names the node it is meant for; a process
//!   that is not that node refuses it, so a sender whose peer's address
//!   now belongs to another node's process (a port reused on one machine)
//!   cannot feed it frames meant for someone else.
//! - **Authentication** ([`auth`]). Both ends prove they hold the cluster
//!   key in the hello (fresh nonces both ways, HMAC-SHA256 bound to both
//!   node ids and incarnations), and every frame and acknowledgement then
//!   carries a 16-byte tag under a key of that connection, over its place
//!   on the connection. A connection that fails is closed and logged (once
//!   per address and [`REFUSED_LOG_INTERVAL`]) before it has touched any
//!   state: the real member's stream, incarnation, queue and connection
//!   stay as they were.
//! - **No frame dropped; back-pressure, then failure.** The lock core
//!   relies on every frame arriving (a lost request hangs its caller, a
//!   lost grant splits two nodes' view of a lock), so the queue never
//!   refuses a frame. It is bounded instead:
//!   - *Back-pressure.* When more than [`QUEUE_LIMIT`] frames or
//!     [`QUEUE_BYTES_LIMIT`] bytes wait for a connected peer (unsent or
//!     unacknowledged), a caller's thread waits, after queueing its frame,
//!     until the peer's acknowledgements bring the queue back within them.
//!     The lock API sends under a shard's mutex (which keeps the order of a
//!     shard's messages) with [`Transport::send_deferred`] and waits in
//!     [`throttle`] once it holds no lock, so a peer that does not keep up
//!     slows the callers that send to it, and nobody else.
//!   - *Threads that never wait.* The transport's own threads (which both
//!     receive and send: a reader thread answers the frames it delivers),
//!     and a caller while it delivers frames, never wait: two nodes whose
//!     queues to each other are both full would otherwise each wait for
//!     the other to read. Their frames are queued past the limits.
//!   - *Declared failed.* Past [`HARD_LIMIT_FACTOR`] times the limits (the
//!     non-waiting threads kept sending to a peer that takes nothing, or a
//!     peer stayed away while callers kept sending), the peer is declared
//!     failed ([`Transport::failed`]), with an error log: its connection is
//!     closed, the frames waiting for it are discarded, later sends to it
//!     are discarded and logged, and its process (incarnation) is never
//!     sent a frame again, so it cannot go on with a hole in its stream.
//!     Only a restarted process of that node (a new incarnation) is sent
//!     frames again, starting afresh. Removing the failed node from the
//!     lockspaces is the membership's business (cman's, when the node's
//!     cmand fails or the node is fenced); until then locks it masters or
//!     must release wait.
//!   - *A peer away.* While a peer is disconnected callers do not wait
//!     (it may be dead, and the membership will say so); frames wait for
//!     its return up to the failure bound.
//!
//! The fast path: the caller's thread writes a frame directly when the
//! socket takes it; the reader thread hands each frame to the handler
//! itself, or a caller waiting for an answer from that peer reads the
//! connection itself (it *leads* it, see [`InConn::lead`] and the
//! `inbound` module), so a round trip costs no thread hand-over; the
//! writer thread only wakes for full sockets, reconnections and a periodic
//! read of acknowledgements ([`ACK_READ_INTERVAL`]).
//!
//! The handler runs on the thread reading the connection while that
//! peer's receive state is locked (so a newer connection of the same peer
//! cannot overtake a frame being delivered): it must not block waiting for
//! another frame from the same peer, as kernel DLM callbacks must not.
//! User callbacks it produces go through [`run_callback`], which keeps
//! them off a leading caller's thread.
//!
//! Wire format: the handshake of [`auth`] (hello, challenge, proof,
//! welcome, which carries the last seq the acceptor delivered), then,
//! connector → acceptor, frames `len u32 | seq u64 | payload | tag [16]`
//! (`len` counts seq, payload and tag; the tag covers the frame's number on
//! the connection, seq and payload: not the length, which only says where
//! the tag is, see [`auth::RecordMac::seal_frame`]), and acceptor → connector,
//! acknowledgements `seq u64 | tag [16]`. All little-endian.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::types::NodeId;

pub mod auth;
mod inbound;

use auth::{Challenge, Handshake, Hello, RecordMac, CHALLENGE_LEN, WELCOME_LEN};
pub use auth::{ClusterKey, HELLO_LEN, TAG_LEN};
use inbound::{accept_loop, Inbound};
pub use inbound::{run_callback, InConn, Lead, MAX_GREETING_PER_ADDR};

/// Largest frame accepted from the network.
pub const MAX_FRAME: usize = 1 << 22;
/// Frames waiting (unsent or unacknowledged) for a peer past which a
/// caller's [`Transport::send`] waits for the peer to take some
/// (back-pressure).
pub const QUEUE_LIMIT: usize = 1 << 16;
/// Bytes waiting for a peer past which a caller's send waits.
pub const QUEUE_BYTES_LIMIT: usize = 64 << 20;
/// The transport's own threads never wait: past this many times the
/// limits above, the peer is declared failed ([`Transport::failed`]).
pub const HARD_LIMIT_FACTOR: usize = 4;
/// The receiver acknowledges at least every this many frames (the kernel's
/// `DLM_SEND_ACK_BACK_MSG_THRESHOLD`).
pub const ACK_EVERY: u64 = 32;
/// ... or after this long without a new frame.
pub const ACK_DELAY: Duration = Duration::from_millis(20);
/// The writer thread reads acknowledgements at least this often...
pub const ACK_READ_INTERVAL: Duration = Duration::from_millis(100);
/// ... and `send` reads them whenever this many frames wait.
pub const ACK_READ_EVERY: usize = 1024;
/// Bytes before the payload in a frame built by [`frame_start`].
const HEADER: usize = 12;
/// Bytes of an acknowledgement: seq and tag.
const ACK_LEN: usize = 8 + TAG_LEN;
/// A refused connection is logged at most once per address in this long.
pub const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the writer thread of a peer declared failed looks for a new
/// process of it.
const FAILED_RETRY: Duration = Duration::from_secs(1);
const CLOSED_BY_PEER: &str = "closed by peer";
/// Bytes read and dropped from a client that failed the hello.
const DISCARD_LIMIT: usize = 1 << 20;

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
    /// Could not create the writer's wake-up descriptor.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
}

// ---------------------------------------------------------------------------
// Sans-IO sequencing: what to keep, resend, deliver or drop.
// ---------------------------------------------------------------------------

/// The sending half of one peer's stream: frames not yet acknowledged, in
/// sequence order, and how far they have been written on the current
/// connection.
#[derive(Debug, Default)]
pub struct SendQueue {
    /// Whole frames (header included), oldest first.
    frames: VecDeque<Vec<u8>>,
    /// Sequence number of `frames[0]` (when not empty).
    first_seq: u64,
    /// Next sequence number to assign.
    next_seq: u64,
    /// Frames fully written on the current connection.
    written: usize,
    /// Bytes of `frames[written]` already written.
    head_off: usize,
    /// Leading frames meant for the peer's current incarnation: queued
    /// while connected to it, or written (at least partly) to it.
    bound: usize,
    /// A connection to the peer's current incarnation is up.
    connected: bool,
    /// Bytes held in `frames`.
    bytes: usize,
    /// The receiver's incarnation, once a hello reply told it.
    peer_inc: Option<u64>,
    /// Tags frames on the current connection.
    mac: Option<RecordMac>,
    /// Leading frames tagged for the current connection.
    sealed: usize,
}

/// What [`SendQueue::reconnected`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// Same receiver process: `acked` frames were already delivered.
    Continue {
        /// Frames freed by the receiver's report.
        acked: usize,
    },
    /// A new receiver process: `dropped` frames written to the old one
    /// were dropped.
    Restarted {
        /// Frames dropped.
        dropped: usize,
    },
}

impl SendQueue {
    /// An empty queue whose first frame gets sequence number 1.
    pub fn new() -> SendQueue {
        SendQueue {
            first_seq: 1,
            next_seq: 1,
            ..Default::default()
        }
    }

    /// Frames waiting (unsent or unacknowledged).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// True when some bytes are not written on the current connection.
    pub fn has_unsent(&self) -> bool {
        self.written < self.frames.len()
    }

    /// Bytes waiting (unsent or unacknowledged), headers included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The receiver's incarnation, once a hello reply told it.
    pub fn peer_inc(&self) -> Option<u64> {
        self.peer_inc
    }

    /// Queues a frame built by [`frame_start`]/[`frame_finish`], stamping
    /// its sequence number. The queue itself has no limit: the transport
    /// bounds it (back-pressure, then declaring the peer failed; see the
    /// module docs).
    pub fn push(&mut self, mut frame: Vec<u8>) {
        assert!(frame.len() >= HEADER, "frame not built by frame_start");
        if self.frames.is_empty() {
            self.first_seq = self.next_seq;
        }
        frame[4..HEADER].copy_from_slice(&self.next_seq.to_le_bytes());
        self.next_seq += 1;
        self.bytes += frame.len();
        self.frames.push_back(frame);
        if self.connected {
            self.bound = self.frames.len();
        }
    }

    /// The peer was declared failed: every waiting frame is discarded.
    /// Numbering goes on, so the process they were meant for could not
    /// take a later frame as the next one (it would see a gap).
    pub fn discard(&mut self) -> usize {
        let n = self.frames.len();
        self.frames.clear();
        self.first_seq = self.next_seq;
        self.bytes = 0;
        self.written = 0;
        self.head_off = 0;
        self.bound = 0;
        self.sealed = 0;
        n
    }

    /// The bytes to write next on the current connection, if any. A frame
    /// is tagged for the connection when its first byte is about to go.
    pub fn unsent(&mut self) -> Option<&[u8]> {
        let f = self.frames.get_mut(self.written)?;
        if self.sealed == self.written {
            let mac = self.mac.as_mut().expect("unsent frames before a hello");
            let body = f.len() - TAG_LEN;
            let tag = mac.seal_frame(&f[..body]);
            f[body..].copy_from_slice(&tag);
            self.sealed += 1;
        }
        Some(&f[self.head_off..])
    }

    /// Records that `n` bytes of [`SendQueue::unsent`] were written.
    pub fn advance(&mut self, n: usize) {
        let len = self.frames[self.written].len();
        assert!(self.head_off + n <= len);
        self.head_off += n;
        self.bound = self.bound.max(self.written + 1);
        if self.head_off == len {
            self.written += 1;
            self.head_off = 0;
        }
    }

    /// The receiver delivered every frame up to `seq`: frees them. Only
    /// frames written on this connection can be acknowledged on it; a
    /// higher number (a confused or hostile peer) frees no more.
    pub fn ack(&mut self, seq: u64) -> usize {
        let mut n = 0;
        while self.written > 0 && self.first_seq <= seq {
            let f = self.frames.pop_front().expect("written frame");
            self.bytes -= f.len();
            self.first_seq += 1;
            n += 1;
            self.written -= 1;
        }
        self.bound = self.bound.saturating_sub(n);
        self.sealed = self.sealed.saturating_sub(n);
        n
    }

    /// The connection broke: frames queued from now on are for whichever
    /// incarnation answers the next hello.
    pub fn lost(&mut self) {
        self.connected = false;
    }

    /// A new connection's hello reply: the receiver's incarnation and the
    /// last number it delivered from us; `mac` tags the frames of this
    /// connection. Sets the queue up to resend, from the first frame the
    /// receiver lacks.
    pub fn reconnected(&mut self, peer_inc: u64, delivered: u64, mac: RecordMac) -> Resume {
        self.written = 0;
        self.head_off = 0;
        self.mac = Some(mac);
        let restarted = self.peer_inc.is_some_and(|i| i != peer_inc);
        self.peer_inc = Some(peer_inc);
        self.connected = true;
        let resume = if restarted {
            let dropped = self.bound;
            for _ in 0..dropped {
                let f = self.frames.pop_front().expect("bound frame");
                self.bytes -= f.len();
                self.first_seq += 1;
            }
            Resume::Restarted { dropped }
        } else {
            // Frames the receiver reports delivered count as written here.
            self.written = self.frames.len();
            let acked = self.ack(delivered);
            self.written = 0;
            Resume::Continue { acked }
        };
        // What is left goes to this incarnation, tagged afresh.
        self.bound = self.frames.len();
        self.sealed = 0;
        resume
    }
}

/// The receiving half of one peer's stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecvSeq {
    /// The sender's incarnation.
    pub inc: u64,
    /// Last sequence number delivered (0: none yet from this incarnation).
    pub last: u64,
}

/// What to do with a received frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next frame: deliver it.
    Deliver,
    /// Already delivered (a resend): drop it.
    Duplicate,
    /// Frames are missing before it: the stream is broken, close the
    /// connection (the sender resends from the last acknowledgement).
    Gap,
}

impl RecvSeq {
    /// A hello from the sender's incarnation `inc`: a new incarnation
    /// starts a new stream. Returns the last number delivered from it.
    pub fn hello(&mut self, inc: u64) -> u64 {
        if self.inc != inc {
            *self = RecvSeq { inc, last: 0 };
        }
        self.last
    }

    /// Judges frame `seq`; records it when delivered. The first frame of a
    /// fresh stream may have any number: a sender that found this process
    /// new has dropped what it wrote to the previous one.
    pub fn receive(&mut self, seq: u64) -> Verdict {
        if seq == 0 || (seq <= self.last) {
            return Verdict::Duplicate;
        }
        if self.last != 0 && seq != self.last + 1 {
            return Verdict::Gap;
        }
        self.last = seq;
        Verdict::Deliver
    }
}

// ---------------------------------------------------------------------------
// Sending side: one queue and one writer thread per peer.
// ---------------------------------------------------------------------------

struct PeerState {
    /// The connection (non-blocking) once established and greeted.
    stream: Option<Arc<TcpStream>>,
    queue: SendQueue,
    /// Frames and bytes (headers included) accepted by `send`.
    sent: SentStats,
    /// Reads the current connection's acknowledgements.
    acks: Option<AckReader>,
    /// Set once the peer was declared failed (see [`PeerQueue::declare_failed`]).
    failed: Option<Failed>,
    /// Callers waiting for room in the queue.
    waiting: usize,
}

/// A peer declared failed: which of its processes, and what was discarded.
#[derive(Debug)]
struct Failed {
    /// The incarnation that stopped taking frames (`None`: none ever
    /// answered); it gets no frame again, a new one starts afresh.
    inc: Option<u64>,
    /// Frames discarded: those waiting when it was declared failed, and
    /// those sent to it since.
    discarded: u64,
}

/// When a peer's queue is too long (see the module docs).
struct Limits {
    frames: AtomicUsize,
    bytes: AtomicUsize,
}

impl Limits {
    /// The queue is past the limits times `factor`.
    fn over(&self, q: &SendQueue, factor: usize) -> bool {
        q.len() > self.frames.load(Ordering::Relaxed) * factor
            || q.bytes() > self.bytes.load(Ordering::Relaxed) * factor
    }
}

/// What [`Transport::sent`] reports for one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentStats {
    /// Frames accepted for sending.
    pub frames: u64,
    /// Their bytes on the wire, headers included.
    pub bytes: u64,
}

struct PeerQueue {
    id: NodeId,
    addr: SocketAddr,
    state: Mutex<PeerState>,
    /// Wakes the writer thread (eventfd).
    wake: OwnedFd,
    connected: AtomicBool,
    /// Signalled when acknowledgements free frames, the connection breaks,
    /// the peer is declared failed or the transport stops.
    room: Condvar,
    limits: Arc<Limits>,
    stopped: AtomicBool,
}

enum Flush {
    /// Everything written.
    Done,
    /// The socket is full; the writer thread must finish.
    Blocked,
    /// The connection failed.
    Failed,
}

impl PeerQueue {
    /// Writes unsent frames as far as the socket takes them, without
    /// blocking.
    fn flush(&self, st: &mut PeerState) -> Flush {
        let Some(s) = st.stream.clone() else {
            return Flush::Blocked;
        };
        while let Some(bytes) = st.queue.unsent() {
            match (&*s).write(bytes) {
                Ok(0) => return self.failed(st, &s, "wrote 0 bytes"),
                Ok(n) => st.queue.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return self.failed(st, &s, &e.to_string()),
            }
        }
        Flush::Done
    }

    /// Marks the connection failed: shut down, so the writer thread (which
    /// owns the reconnection) sees it at once. The descriptor stays open
    /// until the writer drops it, so it cannot be reused under its poll.
    fn failed(&self, st: &mut PeerState, s: &TcpStream, why: &str) -> Flush {
        if st.stream.is_some() {
            // A clean close is what a peer that exits or restarts does (its
            // death is the membership's business): not worth a warning.
            if why == CLOSED_BY_PEER {
                tracing::info!(to = %self.id, addr = %self.addr, pending = st.queue.len(),
                    "connection closed by peer; unacknowledged frames will be resent");
            } else {
                tracing::warn!(to = %self.id, addr = %self.addr, why, pending = st.queue.len(),
                    "connection to peer lost; unacknowledged frames will be resent");
            }
        }
        let _ = s.shutdown(Shutdown::Both);
        st.stream = None;
        st.queue.lost();
        self.connected.store(false, Ordering::Relaxed);
        self.wake();
        self.room.notify_all();
        Flush::Failed
    }

    /// Queues `frame` (see [`Transport::send`]). Returns true when the
    /// caller should wait for room ([`PeerQueue::wait_for_room`]).
    fn queue(&self, frame: Vec<u8>) -> bool {
        let mut st = self.state.lock();
        if let Some(f) = &mut st.failed {
            f.discarded += 1;
            // Loud, but not one line per frame: the 1st, 2nd, 4th, 8th...
            if f.discarded.is_power_of_two() {
                tracing::error!(to = %self.id, discarded = f.discarded,
                    "frame for a peer declared failed discarded (it must be removed from \
                     the membership; a restarted process of it is sent frames again)");
            }
            return false;
        }
        let idle = !st.queue.has_unsent();
        let len = frame.len() as u64;
        st.queue.push(frame);
        st.sent.frames += 1;
        st.sent.bytes += len;
        if st.queue.len().is_multiple_of(ACK_READ_EVERY) {
            if let Some(s) = st.stream.clone() {
                // Errors surface at the write below or in the writer thread.
                let _ = self.read_acks(&mut st, &s);
            }
        }
        // With bytes already unsent the writer thread is on it.
        if idle && st.stream.is_some() {
            if let Flush::Blocked = self.flush(&mut st) {
                self.wake();
            }
        }
        if !self.limits.over(&st.queue, 1) {
            return false;
        }
        // Acknowledgements are read lazily: count only what is really owed.
        if let Some(s) = st.stream.clone() {
            let _ = self.read_acks(&mut st, &s);
            if !self.limits.over(&st.queue, 1) {
                return false;
            }
        }
        if self.limits.over(&st.queue, HARD_LIMIT_FACTOR) {
            self.declare_failed(&mut st);
            return false;
        }
        // Waiting is for a connected peer that does not keep up; one
        // that is away may be dead, and the membership will say so.
        st.stream.is_some()
    }

    /// Waits until the queue is back within its limits, the connection
    /// breaks, the peer is declared failed, or the transport stops.
    fn wait_for_room(&self) {
        let mut st = self.state.lock();
        st.waiting += 1;
        // The writer thread now wakes on acknowledgements too.
        self.wake();
        while self.limits.over(&st.queue, 1)
            && st.failed.is_none()
            && !self.stopped.load(Ordering::SeqCst)
        {
            let Some(s) = st.stream.clone() else { break };
            if self.read_acks(&mut st, &s).is_err() {
                break;
            }
            if !self.limits.over(&st.queue, 1) {
                break;
            }
            self.room.wait_for(&mut st, ACK_READ_INTERVAL);
        }
        st.waiting -= 1;
    }

    /// Reads the acknowledgements waiting on `s` (non-blocking) and frees
    /// the frames they cover.
    fn read_acks(&self, st: &mut PeerState, s: &TcpStream) -> std::io::Result<()> {
        let Some(acks) = st.acks.as_mut() else {
            return Ok(());
        };
        if let Some(seq) = acks.read(s)? {
            if st.queue.ack(seq) > 0 && st.waiting > 0 {
                self.room.notify_all();
            }
        }
        Ok(())
    }

    /// The peer stopped taking frames while the transport's own threads
    /// kept sending it more (they must not wait: see the module docs).
    /// Declared failed: its connection is closed, what waits for it is
    /// discarded, and only a new incarnation of it gets frames again.
    fn declare_failed(&self, st: &mut PeerState) {
        let inc = st.queue.peer_inc();
        let (frames, bytes) = (st.queue.len(), st.queue.bytes());
        tracing::error!(to = %self.id, addr = %self.addr, frames, bytes, incarnation = ?inc,
            "peer does not take its frames: DECLARED FAILED; its connection is closed, the \
             frames waiting for it are discarded, and only a restarted process of it is sent \
             frames again (it must be removed from the membership)");
        st.queue.discard();
        st.failed = Some(Failed {
            inc,
            discarded: frames as u64,
        });
        if let Some(s) = st.stream.clone() {
            self.failed(st, &s, "declared failed");
        }
        self.room.notify_all();
    }

    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    fn clear_wake(&self) {
        let mut b = [0u8; 8];
        // SAFETY: reads 8 bytes into a valid buffer from our non-blocking
        // eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
    }
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The process's connections to its peers.
pub struct Transport {
    me: NodeId,
    inc: u64,
    key: ClusterKey,
    local_addr: SocketAddr,
    peers: RwLock<HashMap<NodeId, Arc<PeerQueue>>>,
    inbound: Arc<Inbound>,
    limits: Arc<Limits>,
}

thread_local! {
    /// Peers whose queue [`Transport::send_deferred`] took past the limits
    /// on this thread, for [`throttle`].
    static OVERFULL: RefCell<Vec<Arc<PeerQueue>>> = const { RefCell::new(Vec::new()) };
    /// Set on the transport's own threads: they never wait for room.
    static TRANSPORT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one of the transport's (it never waits
/// for room in a peer's queue).
fn transport_thread() {
    TRANSPORT_THREAD.with(|t| t.set(true));
}

/// Whether the calling thread may wait for room in a peer's queue: not
/// one of the transport's threads, and not delivering frames (a caller
/// reading its answer delivers other frames too). Those threads receive
/// as well as send, and a peer may be waiting for them to receive.
fn may_wait() -> bool {
    !TRANSPORT_THREAD.with(Cell::get) && !inbound::delivering()
}

/// Waits for room in the queues of the peers that this thread's
/// [`Transport::send_deferred`] calls took past the limits (back-pressure);
/// returns at once when there are none or the thread may not wait. Call
/// it holding no lock that frame delivery needs.
pub fn throttle() {
    // The usual case first: nothing sent past a limit.
    if OVERFULL.with(|o| o.borrow().is_empty()) || !may_wait() {
        return;
    }
    let overfull = OVERFULL.with(|o| std::mem::take(&mut *o.borrow_mut()));
    for pq in overfull {
        pq.wait_for_room();
    }
}

impl Transport {
    /// Listens on `listen` and starts writer threads towards `peers`;
    /// only peers holding `key` get in, and only they are sent frames.
    pub fn start(
        me: NodeId,
        listen: SocketAddr,
        peers: &HashMap<NodeId, SocketAddr>,
        key: ClusterKey,
        handler: FrameHandler,
    ) -> Result<Transport, TransportError> {
        let listen_err = |source| TransportError::Listen {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).map_err(listen_err)?;
        let local_addr = listener.local_addr().map_err(listen_err)?;
        let inc = loop {
            let i: u64 = rand::random();
            if i != 0 {
                break i;
            }
        };
        let inbound = Arc::new(Inbound {
            me,
            inc,
            key: key.clone(),
            refused: RefusedLog::new(me),
            handler,
            stop: AtomicBool::new(false),
            peers: Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            greeting: Mutex::new(HashMap::new()),
        });
        {
            let inbound = inbound.clone();
            thread::Builder::new()
                .name("dlm-accept".into())
                .spawn(move || accept_loop(listener, inbound))
                .expect("spawn");
        }
        let t = Transport {
            me,
            inc,
            key,
            local_addr,
            peers: Default::default(),
            inbound,
            limits: Arc::new(Limits {
                frames: AtomicUsize::new(QUEUE_LIMIT),
                bytes: AtomicUsize::new(QUEUE_BYTES_LIMIT),
            }),
        };
        for (&id, &addr) in peers {
            t.try_add_peer(id, addr)?;
        }
        Ok(t)
    }

    /// Adds a peer (ignored for this node or a known peer).
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        if let Err(e) = self.try_add_peer(id, addr) {
            tracing::error!(%id, error = %e, "cannot add peer");
        }
    }

    fn try_add_peer(&self, id: NodeId, addr: SocketAddr) -> Result<(), TransportError> {
        let mut peers = self.peers.write();
        if id == self.me || peers.contains_key(&id) {
            return Ok(());
        }
        let pq = Arc::new(PeerQueue {
            id,
            addr,
            state: Mutex::new(PeerState {
                stream: None,
                queue: SendQueue::new(),
                sent: SentStats::default(),
                acks: None,
                failed: None,
                waiting: 0,
            }),
            wake: eventfd().map_err(TransportError::EventFd)?,
            connected: AtomicBool::new(false),
            room: Condvar::new(),
            limits: self.limits.clone(),
            stopped: AtomicBool::new(false),
        });
        let (pq2, inbound) = (pq.clone(), self.inbound.clone());
        let me = Me {
            id: self.me,
            inc: self.inc,
            key: self.key.clone(),
        };
        thread::Builder::new()
            .name(format!("dlm-send-{id}"))
            .spawn(move || {
                transport_thread();
                writer_loop(&me, &pq2, &inbound)
            })
            .expect("spawn");
        peers.insert(id, pq);
        Ok(())
    }

    /// The current connection from `from`, for a caller that will read
    /// its answer itself ([`InConn::lead`]).
    pub fn inbound_conn(&self, from: NodeId) -> Option<Arc<InConn>> {
        self.inbound.conn(from)
    }

    /// Leads the current connection from `from` ([`InConn::lead`]), if it
    /// is up and nobody else leads it.
    pub fn lead(&self, from: NodeId) -> Option<Lead> {
        self.inbound.conn(from)?.lead()
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Connections refused so far: hellos that were not ours or failed
    /// authentication (either side), and frames or acknowledgements with
    /// a bad tag.
    pub fn refused(&self) -> u64 {
        self.inbound.refused.total()
    }

    /// This process's incarnation (random, chosen at start).
    pub fn incarnation(&self) -> u64 {
        self.inc
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends `frame` (built by [`frame_start`] and [`frame_finish`]) to
    /// `to`. The caller's thread writes directly when the socket takes the
    /// bytes, else the peer's writer thread finishes. Order is kept per
    /// peer, and the frame is resent if the connection breaks before the
    /// peer acknowledged it.
    ///
    /// No frame is dropped. When more than [`QUEUE_LIMIT`] frames or
    /// [`QUEUE_BYTES_LIMIT`] bytes wait for a connected peer, the caller
    /// waits until the peer acknowledges some (back-pressure), unless it
    /// is one of the transport's threads or delivering frames: those never
    /// wait, and past [`HARD_LIMIT_FACTOR`] times the limits the peer is
    /// declared failed ([`Transport::failed`]; see the module docs).
    pub fn send(&self, to: NodeId, frame: Vec<u8>) {
        if let Some(pq) = self.queue(to, frame) {
            if may_wait() {
                pq.wait_for_room();
            }
        }
    }

    /// [`Transport::send`] for a caller holding locks that frame delivery
    /// needs: never waits, but leaves the back-pressure owed to
    /// [`throttle`], which the caller calls once it holds none.
    pub fn send_deferred(&self, to: NodeId, frame: Vec<u8>) {
        if let Some(pq) = self.queue(to, frame) {
            if may_wait() {
                OVERFULL.with(|o| {
                    let mut o = o.borrow_mut();
                    if !o.iter().any(|p| Arc::ptr_eq(p, &pq)) {
                        o.push(pq);
                    }
                });
            }
        }
    }

    /// Queues `frame` for `to`; the peer's queue when the caller should
    /// wait for room in it.
    fn queue(&self, to: NodeId, frame: Vec<u8>) -> Option<Arc<PeerQueue>> {
        let peers = self.peers.read();
        let Some(pq) = peers.get(&to) else {
            tracing::error!(%to, "frame for an unknown peer discarded");
            return None;
        };
        let wait = pq.queue(frame).then(|| pq.clone());
        drop(peers);
        if let Some(c) = self.inbound.conn(to) {
            c.unpark_now();
        }
        wait
    }

    /// True when `to` was declared failed (it stopped taking frames while
    /// the transport's threads had to keep sending it more) and no new
    /// incarnation of it has connected since.
    pub fn failed(&self, to: NodeId) -> bool {
        self.peers
            .read()
            .get(&to)
            .is_some_and(|p| p.state.lock().failed.is_some())
    }

    /// Changes the back-pressure limits (the defaults are [`QUEUE_LIMIT`]
    /// and [`QUEUE_BYTES_LIMIT`]), for tests.
    #[doc(hidden)]
    pub fn set_queue_limits(&self, frames: usize, bytes: usize) {
        self.limits.frames.store(frames, Ordering::Relaxed);
        self.limits.bytes.store(bytes, Ordering::Relaxed);
    }

    /// True when the connection to `to` is up.
    pub fn connected(&self, to: NodeId) -> bool {
        self.peers
            .read()
            .get(&to)
            .is_some_and(|p| p.connected.load(Ordering::Relaxed))
    }

    /// Frames waiting for `to` (unsent or unacknowledged).
    pub fn pending(&self, to: NodeId) -> usize {
        self.peers
            .read()
            .get(&to)
            .map_or(0, |p| p.state.lock().queue.len())
    }

    /// Frames and bytes sent to `to` so far (for measurements).
    pub fn sent(&self, to: NodeId) -> SentStats {
        self.peers
            .read()
            .get(&to)
            .map_or(SentStats::default(), |p| p.state.lock().sent)
    }

    /// Fault injection for tests: shuts down every TCP connection of this
    /// process (outgoing and incoming) as a network failure would. The
    /// transport reconnects and resends what was not acknowledged.
    #[doc(hidden)]
    pub fn break_connections(&self) {
        for pq in self.peers.read().values() {
            let mut st = pq.state.lock();
            if let Some(s) = st.stream.clone() {
                let _ = s.shutdown(Shutdown::Both);
                st.stream = None;
                st.queue.lost();
                pq.connected.store(false, Ordering::Relaxed);
                pq.wake();
                pq.room.notify_all();
            }
        }
        for s in self.inbound.conns.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops all threads and closes all connections.
    pub fn shutdown(&self) {
        if self.inbound.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for pq in self.peers.read().values() {
            pq.stopped.store(true, Ordering::SeqCst);
            if let Some(s) = pq.state.lock().stream.take() {
                let _ = s.shutdown(Shutdown::Both);
            }
            pq.wake();
            pq.room.notify_all();
        }
        for s in self.inbound.conns.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop, which then drops the listener.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Writer thread: connect, greet, resend, then read acknowledgements and
// finish writes the caller's thread could not.
// ---------------------------------------------------------------------------

/// What the writer threads need of this process.
struct Me {
    id: NodeId,
    inc: u64,
    key: ClusterKey,
}

fn writer_loop(me: &Me, pq: &PeerQueue, inbound: &Inbound) {
    let stop = &inbound.stop;
    let mut backoff = Duration::from_millis(5);
    while !stop.load(Ordering::SeqCst) {
        let (s, reply) = match connect(me, pq.id, pq.addr) {
            Ok(c) => c,
            Err(ConnectError::Refused(why)) => {
                inbound.refused.refused(pq.addr, &why);
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
            Err(ConnectError::Io(e)) => {
                tracing::trace!(to = %pq.id, error = %e, "connect failed");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let s = Arc::new(s);
        {
            let mut st = pq.state.lock();
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if let Some(f) = &st.failed {
                if f.inc.is_some_and(|i| i == reply.inc) {
                    // The process declared failed: nothing more for it.
                    drop(st);
                    let _ = s.shutdown(Shutdown::Both);
                    thread::sleep(FAILED_RETRY);
                    continue;
                }
                tracing::warn!(to = %pq.id, discarded = f.discarded,
                    "a new process of the peer declared failed connected: sending to it again");
                st.failed = None;
            }
            match st
                .queue
                .reconnected(reply.inc, reply.delivered, reply.frames)
            {
                Resume::Restarted { dropped } if dropped > 0 => {
                    tracing::warn!(to = %pq.id, dropped,
                        "peer restarted: frames written to its previous incarnation dropped");
                }
                _ => {}
            }
            tracing::debug!(to = %pq.id, resend = st.queue.len(), "connected");
            st.stream = Some(s.clone());
            st.acks = Some(AckReader::new(reply.acks));
            pq.connected.store(true, Ordering::Relaxed);
            pq.flush(&mut st);
        }
        serve_connection(pq, &s, stop, &inbound.refused);
        let mut st = pq.state.lock();
        if st.stream.as_ref().is_some_and(|c| Arc::ptr_eq(c, &s)) {
            st.stream = None;
            st.queue.lost();
            pq.connected.store(false, Ordering::Relaxed);
        }
    }
}

struct HelloReply {
    inc: u64,
    delivered: u64,
    /// Tags our frames on this connection.
    frames: RecordMac,
    /// Checks the acceptor's acknowledgements.
    acks: RecordMac,
}

/// Why a connection to a peer was not made.
enum ConnectError {
    /// Network trouble (the peer may be down): retried quietly.
    Io(std::io::Error),
    /// Whoever answered is not a peer of ours: retried, and logged.
    Refused(String),
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> ConnectError {
        ConnectError::Io(e)
    }
}

/// The hello a connector sends: it is node `from`, incarnation `inc`, and
/// wants to talk to node `to` (a fresh nonce each time).
pub fn encode_hello(from: NodeId, inc: u64, to: NodeId) -> [u8; HELLO_LEN] {
    Hello {
        from,
        inc,
        to,
        nonce: auth::nonce(),
    }
    .encode()
}

/// Connects to node `to` at `addr` and runs the connector's side of the
/// handshake ([`auth`]).
fn connect(me: &Me, to: NodeId, addr: SocketAddr) -> Result<(TcpStream, HelloReply), ConnectError> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let reply = greet_acceptor(&mut s, me, to)?;
    s.set_read_timeout(None)?;
    s.set_nonblocking(true)?;
    Ok((s, reply))
}

/// The connector's side of the handshake for a client of the protocol
/// other than the transport (tests): `(acceptor's incarnation, last seq it
/// delivered from us, the tags of our frames)`.
#[doc(hidden)]
pub fn connector_handshake(
    s: &mut TcpStream,
    key: &ClusterKey,
    from: NodeId,
    inc: u64,
    to: NodeId,
) -> std::io::Result<(u64, u64, RecordMac)> {
    let me = Me {
        id: from,
        inc,
        key: key.clone(),
    };
    match greet_acceptor(s, &me, to) {
        Ok(r) => Ok((r.inc, r.delivered, r.frames)),
        Err(ConnectError::Io(e)) => Err(e),
        Err(ConnectError::Refused(why)) => Err(std::io::Error::other(why)),
    }
}

fn greet_acceptor(s: &mut TcpStream, me: &Me, to: NodeId) -> Result<HelloReply, ConnectError> {
    let hello = Hello {
        from: me.id,
        inc: me.inc,
        to,
        nonce: auth::nonce(),
    };
    s.write_all(&hello.encode())?;
    let mut c = [0u8; CHALLENGE_LEN];
    s.read_exact(&mut c)?;
    let challenge =
        Challenge::decode(&c).ok_or_else(|| ConnectError::Refused("bad challenge".into()))?;
    let hs = Handshake::new(&me.key, &hello, &challenge);
    s.write_all(&hs.proof())?;
    let mut w = [0u8; WELCOME_LEN];
    s.read_exact(&mut w)?;
    let delivered = hs.check_welcome(&w).ok_or_else(|| {
        ConnectError::Refused(format!(
            "node {to} failed authentication (its welcome is not signed with our cluster key)"
        ))
    })?;
    let (frames, acks) = hs.record_keys();
    Ok(HelloReply {
        inc: challenge.inc,
        delivered,
        frames,
        acks,
    })
}

/// Until the connection fails or the transport stops: writes what the
/// socket could not take at once, and reads acknowledgements.
///
/// Acknowledgements only free memory, so their arrival does not wake this
/// thread (that would cost a wake-up every [`ACK_EVERY`] frames on the
/// lock path): they are read whenever the thread wakes anyway, at least
/// every [`ACK_READ_INTERVAL`], and by `send` every [`ACK_READ_EVERY`]
/// queued frames. A peer closing or resetting the connection still wakes
/// it (POLLRDHUP, POLLHUP, POLLERR).
fn serve_connection(pq: &PeerQueue, s: &Arc<TcpStream>, stop: &AtomicBool, log: &RefusedLog) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (want_out, want_in) = {
            let st = pq.state.lock();
            match &st.stream {
                Some(c) if Arc::ptr_eq(c, s) => (st.queue.has_unsent(), st.waiting > 0),
                _ => return,
            }
        };
        let mut fds = [
            pollfd(
                s.as_raw_fd(),
                libc::POLLRDHUP
                    | if want_out { libc::POLLOUT } else { 0 }
                    | if want_in { libc::POLLIN } else { 0 },
            ),
            pollfd(pq.wake.as_raw_fd(), libc::POLLIN),
        ];
        // SAFETY: two valid pollfds; both descriptors stay open (we hold
        // the stream and the queue).
        unsafe { libc::poll(fds.as_mut_ptr(), 2, ACK_READ_INTERVAL.as_millis() as i32) };
        if fds[1].revents != 0 {
            pq.clear_wake();
        }
        let mut st = pq.state.lock();
        if !matches!(&st.stream, Some(c) if Arc::ptr_eq(c, s)) {
            return;
        }
        if let Err(e) = pq.read_acks(&mut st, s) {
            if e.kind() == std::io::ErrorKind::InvalidData {
                log.refused(pq.addr, &e.to_string());
            }
            pq.failed(&mut st, s, &e.to_string());
            return;
        }
        if st.queue.has_unsent() {
            if let Flush::Failed = pq.flush(&mut st) {
                return;
            }
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Reads the acknowledgements of a connection (non-blocking), checking
/// their tags.
struct AckReader {
    partial: [u8; ACK_LEN],
    have: usize,
    mac: RecordMac,
}

impl AckReader {
    fn new(mac: RecordMac) -> AckReader {
        AckReader {
            partial: [0; ACK_LEN],
            have: 0,
            mac,
        }
    }

    /// The highest acknowledgement read, if any; an error when the
    /// connection is closed or failed, or an acknowledgement is not
    /// genuine (`InvalidData`).
    fn read(&mut self, s: &TcpStream) -> std::io::Result<Option<u64>> {
        let mut buf = [0u8; 512];
        let mut best = None;
        loop {
            let n = match (&*s).read(&mut buf) {
                Ok(0) => return Err(std::io::Error::other(CLOSED_BY_PEER)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(best),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for &b in &buf[..n] {
                self.partial[self.have] = b;
                self.have += 1;
                if self.have == ACK_LEN {
                    self.have = 0;
                    let (seq, tag) = self.partial.split_at(8);
                    if !self.mac.open(seq, tag) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "acknowledgement with a bad tag",
                        ));
                    }
                    let v = u64::from_le_bytes(seq.try_into().expect("8"));
                    best = Some(best.map_or(v, |b: u64| b.max(v)));
                }
            }
        }
    }
}

/// Starts a frame: room for the length prefix and the sequence number
/// (and for the tag that [`frame_finish`] adds).
pub fn frame_start(capacity: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(capacity + HEADER + TAG_LEN);
    f.extend_from_slice(&[0; HEADER]);
    f
}

/// Finishes a frame started by [`frame_start`]: adds room for its tag and
/// fills in the length.
pub fn frame_finish(f: &mut Vec<u8>) {
    f.extend_from_slice(&[0; TAG_LEN]);
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_le_bytes());
}

/// Refused connections: counted, and logged at most once per address in
/// [`REFUSED_LOG_INTERVAL`] (with how many were not logged), so that a
/// flood of bad hellos cannot flood the log.
pub(crate) struct RefusedLog {
    /// This node (named in the log).
    me: NodeId,
    total: AtomicU64,
    /// Per address: when it was last logged, and attempts since.
    by_addr: Mutex<HashMap<std::net::IpAddr, (std::time::Instant, u64)>>,
}

/// Addresses remembered by [`RefusedLog`] (bounded: past it, forgotten).
const REFUSED_ADDRS: usize = 4096;

impl RefusedLog {
    fn new(me: NodeId) -> RefusedLog {
        RefusedLog {
            me,
            total: AtomicU64::new(0),
            by_addr: Mutex::new(HashMap::new()),
        }
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts a refusal of `addr`; logs it unless it was logged lately.
    pub(crate) fn refused(&self, addr: SocketAddr, why: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let now = std::time::Instant::now();
        let mut m = self.by_addr.lock();
        if m.len() >= REFUSED_ADDRS && !m.contains_key(&addr.ip()) {
            m.retain(|_, (t, _)| now.duration_since(*t) < REFUSED_LOG_INTERVAL);
            if m.len() >= REFUSED_ADDRS {
                m.clear();
            }
        }
        match m.get_mut(&addr.ip()) {
            Some((t, n)) if now.duration_since(*t) < REFUSED_LOG_INTERVAL => *n += 1,
            Some((t, n)) => {
                tracing::warn!(node = %self.me, %addr, why, not_logged = *n,
                    "dlm connection refused: peer failed authentication or is no DLM peer");
                *t = now;
                *n = 0;
            }
            None => {
                tracing::warn!(node = %self.me, %addr, why,
                    "dlm connection refused: peer failed authentication or is no DLM peer");
                m.insert(addr.ip(), (now, 0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = frame_start(payload.len());
        f.extend_from_slice(payload);
        frame_finish(&mut f);
        f
    }

    /// Frame tags of some connection.
    fn mac() -> RecordMac {
        mac_pair().0
    }

    fn write_all(q: &mut SendQueue) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(b) = q.unsent() {
            seqs.push(u64::from_le_bytes(b[4..12].try_into().unwrap()));
            let n = b.len();
            q.advance(n);
        }
        seqs
    }

    #[test]
    fn frames_get_consecutive_numbers_and_acks_free_them() {
        let mut q = SendQueue::new();
        assert_eq!(q.reconnected(7, 0, mac()), Resume::Continue { acked: 0 });
        for i in 0..5u8 {
            q.push(frame(&[i]));
        }
        assert_eq!(write_all(&mut q), vec![1, 2, 3, 4, 5]);
        assert_eq!(q.ack(3), 3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.ack(5), 2);
        assert_eq!(q.len(), 0);
        for i in 0..2u8 {
            q.push(frame(&[i]));
        }
        assert_eq!(write_all(&mut q), vec![6, 7]);
        // An ack beyond what was written frees no more.
        q.push(frame(b"x"));
        assert_eq!(q.ack(100), 2);
        assert_eq!(q.len(), 1);
        assert_eq!(write_all(&mut q), vec![8]);
    }

    #[test]
    fn reconnecting_resends_from_the_first_undelivered_frame() {
        let mut q = SendQueue::new();
        q.reconnected(7, 0, mac());
        for i in 0..6u8 {
            q.push(frame(&[i]));
        }
        // Written up to frame 4 and half of frame 5, then the line broke.
        write_all(&mut q);
        assert_eq!(q.reconnected(7, 3, mac()), Resume::Continue { acked: 3 });
        assert_eq!(write_all(&mut q), vec![4, 5, 6]);
    }

    #[test]
    fn a_restarted_receiver_gets_only_frames_queued_after_the_loss() {
        let mut q = SendQueue::new();
        q.reconnected(7, 0, mac());
        q.push(frame(b"a"));
        q.push(frame(b"b"));
        write_all(&mut q);
        // Queued for incarnation 7 but not written when the line broke.
        q.push(frame(b"c"));
        q.lost();
        // Queued while disconnected: for whoever answers next.
        q.push(frame(b"d"));
        assert_eq!(q.reconnected(8, 0, mac()), Resume::Restarted { dropped: 3 });
        assert_eq!(write_all(&mut q), vec![4]);
        let mut r = RecvSeq::default();
        assert_eq!(r.hello(99), 0);
        assert_eq!(r.receive(4), Verdict::Deliver);
        assert_eq!(r.receive(5), Verdict::Deliver);
    }

    #[test]
    fn frames_queued_while_disconnected_belong_to_the_next_incarnation() {
        let mut q = SendQueue::new();
        q.reconnected(7, 0, mac());
        q.lost();
        q.push(frame(b"a"));
        // Incarnation 8 answers, then is lost before anything is written.
        assert_eq!(q.reconnected(8, 0, mac()), Resume::Restarted { dropped: 0 });
        q.lost();
        // Incarnation 9: "a" was meant for 8 once 8 answered.
        assert_eq!(q.reconnected(9, 0, mac()), Resume::Restarted { dropped: 1 });
        assert!(q.is_empty());
    }

    #[test]
    fn the_same_incarnation_gets_everything_not_delivered() {
        let mut q = SendQueue::new();
        q.reconnected(7, 0, mac());
        for i in 0..4u8 {
            q.push(frame(&[i]));
        }
        write_all(&mut q);
        q.push(frame(b"x"));
        q.lost();
        q.push(frame(b"y"));
        assert_eq!(q.reconnected(7, 2, mac()), Resume::Continue { acked: 2 });
        assert_eq!(write_all(&mut q), vec![3, 4, 5, 6]);
    }

    #[test]
    fn receiver_drops_duplicates_and_detects_gaps() {
        let mut r = RecvSeq::default();
        r.hello(5);
        assert_eq!(r.receive(1), Verdict::Deliver);
        assert_eq!(r.receive(2), Verdict::Deliver);
        assert_eq!(r.receive(2), Verdict::Duplicate);
        assert_eq!(r.receive(1), Verdict::Duplicate);
        assert_eq!(r.receive(4), Verdict::Gap);
        assert_eq!(r.hello(5), 2, "same incarnation keeps its place");
        assert_eq!(r.hello(6), 0, "a new incarnation starts afresh");
        assert_eq!(r.receive(1), Verdict::Deliver);
    }

    /// The sealing and the opening side of one connection's frames.
    fn mac_pair() -> (RecordMac, RecordMac) {
        let key = ClusterKey::new(&[9; 32]).unwrap();
        let hello = Hello {
            from: NodeId(1),
            inc: 1,
            to: NodeId(2),
            nonce: auth::nonce(),
        };
        let ch = Challenge {
            inc: 2,
            nonce: auth::nonce(),
        };
        let hs = Handshake::new(&key, &hello, &ch);
        (hs.record_keys().0, hs.record_keys().0)
    }

    /// Opens every whole frame in `bytes` with `open`; their payloads.
    fn open_all(open: &mut RecordMac, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let end = at + 4 + len;
            let (rec, tag) = bytes[at..end].split_at(4 + len - TAG_LEN);
            assert!(
                open.open_frame(rec, tag),
                "frame at {at} does not check out"
            );
            out.push(rec[HEADER..].to_vec());
            at = end;
        }
        out
    }

    #[test]
    fn frames_are_tagged_for_the_connection_they_go_out_on() {
        let mut q = SendQueue::new();
        let (seal1, mut open1) = mac_pair();
        q.reconnected(7, 0, seal1);
        q.push(frame(b"a"));
        q.push(frame(b"b"));
        // "a" written whole, "b" half, then the connection broke.
        let wire1 = q.unsent().unwrap().to_vec();
        q.advance(wire1.len());
        q.unsent().unwrap();
        q.advance(3);
        assert_eq!(open_all(&mut open1, &wire1), vec![b"a".to_vec()]);
        q.lost();
        q.push(frame(b"c"));
        // The same receiver, a new connection: "b" and "c" again, tagged
        // with the new connection's key and numbers, from 0.
        let (seal2, mut open2) = mac_pair();
        assert_eq!(q.reconnected(7, 1, seal2), Resume::Continue { acked: 1 });
        let mut wire2 = Vec::new();
        while let Some(bytes) = q.unsent() {
            wire2.extend_from_slice(bytes);
            let n = bytes.len();
            q.advance(n);
        }
        assert_eq!(
            open_all(&mut open2, &wire2),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        // The old connection's opener takes none of them.
        let len = u32::from_le_bytes(wire2[..4].try_into().unwrap()) as usize;
        let (rec, tag) = wire2[..4 + len].split_at(4 + len - TAG_LEN);
        assert!(!open1.open_frame(rec, tag));
    }

    #[test]
    fn a_queue_takes_every_frame_and_discarding_keeps_the_numbering() {
        let mut q = SendQueue::new();
        q.reconnected(7, 0, mac());
        for _ in 0..QUEUE_LIMIT + 10 {
            q.push(frame(b""));
        }
        assert_eq!(q.len(), QUEUE_LIMIT + 10);
        assert_eq!(q.bytes(), (QUEUE_LIMIT + 10) * frame(b"").len());
        write_all(&mut q);
        assert_eq!(q.discard(), QUEUE_LIMIT + 10);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        q.push(frame(b"x"));
        // The next number, not a reused one: the process the discarded
        // frames were for would see a gap.
        assert_eq!(write_all(&mut q), vec![QUEUE_LIMIT as u64 + 11]);
        assert_eq!(q.ack(QUEUE_LIMIT as u64 + 11), 1);
    }
}
