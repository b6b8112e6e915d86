//! The accepting side of the transport: one inbound connection per peer,
//! read by its own thread, or by a caller that waits for an answer from
//! that peer and reads the answer itself.
//!
//! A blocked caller woken by a reader thread pays a thread hand-over on
//! every round trip (the reader wakes on the data, then wakes the caller).
//! A caller that expects its answer from peer P can instead *lead* P's
//! connection ([`InConn::lead`]): while it waits, it is the thread the
//! kernel wakes when bytes arrive, and it delivers them itself, as a plain
//! TCP client reading its socket would. The pieces:
//!
//! - Two epoll instances per connection, both watching the socket with
//!   `EPOLLEXCLUSIVE`: `lead_ep`, where a leading caller sleeps, and
//!   `idle_ep`, where the reader thread sleeps. The kernel offers each
//!   arrival to exclusive waiters in the order they were registered and
//!   stops at the first instance with a sleeper; `lead_ep` is registered
//!   first.
//! - While a caller leads, the socket is taken out of `idle_ep`, so an
//!   answer that lands before the caller is back in `epoll_wait` (the
//!   answering thread often runs at once on the caller's CPU) does not wake
//!   the reader thread either: it stays ready in `lead_ep`. Putting it back
//!   when the lead ends re-checks readiness, so nothing that arrived
//!   meanwhile is missed.
//! - Taking the socket out and putting it back costs two `epoll_ctl`
//!   calls (1.5 us here), so a lead that ends leaves the connection
//!   *parked*: the next lead takes it over for free, and the reader thread,
//!   which then sleeps at most [`PARK`], takes the socket back once a whole
//!   `PARK` passed without a lead. Frames that arrive while parked wait in
//!   `lead_ep` for the next leader or for that moment.
//! - One caller leads a connection at a time; others wait as before.
//! - An answer can still be delivered by another thread (it came on
//!   another connection, or the reader thread was mid-read): the waiter's
//!   completion writes the connection's `kick` eventfd, also in `lead_ep`.
//! - A leader runs no user callbacks (a callback run inside a caller's
//!   blocking call could meet the caller's own locks): the callbacks of
//!   frames it delivers are queued for the reader thread, which runs them
//!   in frame order ([`run_callback`]).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

use super::auth::{self, Challenge, Handshake, Hello, RecordMac, PROOF_LEN};
use super::{
    eventfd, ClusterKey, FrameHandler, RecvSeq, RefusedLog, Verdict, ACK_DELAY, ACK_EVERY,
    DISCARD_LIMIT, HELLO_LEN, HELLO_TIMEOUT, MAX_FRAME, TAG_LEN,
};
use crate::driver::spin;
use crate::types::NodeId;

/// The receiving half of one peer's stream, shared by its connections.
#[derive(Default)]
pub(super) struct PeerRecv {
    pub(super) seq: RecvSeq,
    /// Bumped by every accepted hello: an older reader of this peer stops.
    epoch: u64,
}

pub(super) struct Inbound {
    pub(super) me: NodeId,
    pub(super) inc: u64,
    pub(super) key: ClusterKey,
    /// Connections refused (both directions).
    pub(super) refused: RefusedLog,
    pub(super) handler: FrameHandler,
    pub(super) stop: AtomicBool,
    pub(super) peers: Mutex<HashMap<NodeId, Arc<Mutex<PeerRecv>>>>,
    /// Each peer's current connection. A leaf lock: callers look here
    /// while they hold a lockspace shard, which frame delivery takes under
    /// the peer's `PeerRecv`.
    pub(super) current: Mutex<HashMap<NodeId, Arc<InConn>>>,
    /// Every open inbound connection, for shutdown.
    pub(super) conns: Mutex<HashMap<u64, TcpStream>>,
    pub(super) next_conn: AtomicU64,
    /// Connections still in the hello, per address (bounded by
    /// [`MAX_GREETING_PER_ADDR`]).
    pub(super) greeting: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// Connections from one address in the hello at once: past it, new ones
/// from there are closed at once. A flood of connections that never prove
/// anything costs a bounded number of threads per address, each for at
/// most [`HELLO_TIMEOUT`], and does not keep members at other addresses
/// out.
pub const MAX_GREETING_PER_ADDR: usize = 32;

impl Inbound {
    /// The current inbound connection from `from`, if it is up.
    pub(super) fn conn(&self, from: NodeId) -> Option<Arc<InConn>> {
        let c = self.current.lock().get(&from)?.clone();
        (!c.dead.load(Ordering::SeqCst)).then_some(c)
    }
}

// ---------------------------------------------------------------------------
// epoll, the little of it we use.
// ---------------------------------------------------------------------------

/// Tokens of the descriptors in a connection's epoll instances.
const SOCK: u64 = 0;
const KICK: u64 = 1;
const TIMER: u64 = 2;

struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for input; `exclusive` asks for `EPOLLEXCLUSIVE`.
    fn add(&self, fd: RawFd, token: u64, exclusive: bool) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32
                | if exclusive {
                    libc::EPOLLEXCLUSIVE as u32
                } else {
                    0
                },
            u64: token,
        };
        // SAFETY: valid epoll descriptor, valid event; the caller keeps `fd`
        // open while it is registered.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn del(&self, fd: RawFd) -> std::io::Result<()> {
        // SAFETY: valid epoll descriptor; a null event is allowed for DEL.
        let r = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: no limit) for input; returns which
    /// tokens are ready (none on a timeout or a signal). The sleeps on the
    /// lock path have no timeout: arming a timer for each costs more here
    /// than the rest of a remote lock's work.
    fn wait(&self, timeout: Option<Duration>) -> std::io::Result<Ready> {
        /// Set when the kernel lacks `epoll_pwait2` (before 5.11).
        static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 3];
        let fd = self.0.as_raw_fd();
        let mut n = -1;
        if !NO_PWAIT2.load(Ordering::Relaxed) {
            // Microsecond timeouts ([`PARK`]): epoll_wait counts in ms.
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs() as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let tsp = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: valid epoll descriptor, a buffer of `evs.len()`
            // events, a valid timespec or null (no limit), no signal mask.
            n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    fd,
                    evs.as_mut_ptr(),
                    evs.len() as libc::c_int,
                    tsp,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            } as i32;
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                NO_PWAIT2.store(true, Ordering::Relaxed);
            }
        }
        if NO_PWAIT2.load(Ordering::Relaxed) {
            // Rounded up: a zero timeout would make the caller spin.
            let ms = timeout.map_or(-1, |t| {
                t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            // SAFETY: valid epoll descriptor and a buffer of `evs.len()`
            // events.
            n = unsafe { libc::epoll_wait(fd, evs.as_mut_ptr(), evs.len() as libc::c_int, ms) };
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Ready::default());
            }
            return Err(e);
        }
        let mut r = Ready::default();
        for ev in &evs[..n as usize] {
            match ev.u64 {
                SOCK => r.sock = true,
                KICK => r.kick = true,
                _ => r.timer = true,
            }
        }
        Ok(r)
    }
}

#[derive(Default)]
struct Ready {
    sock: bool,
    kick: bool,
    timer: bool,
}

fn write_eventfd(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a valid buffer to an eventfd we own.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

/// Resets a non-blocking eventfd or timerfd (reads its 8-byte count).
fn clear_eventfd(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    // SAFETY: reads 8 bytes into a valid buffer from a non-blocking
    // eventfd or timerfd.
    unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
}

// ---------------------------------------------------------------------------
// One inbound connection.
// ---------------------------------------------------------------------------

/// A user callback left by a leading caller for the reader thread.
type Callback = Box<dyn FnOnce() + Send>;

/// An inbound connection after the hello: its stream position, and who
/// may read it (see the module docs).
pub struct InConn {
    from: NodeId,
    sock: TcpStream,
    /// The stream position; whoever reads holds it.
    rx: Mutex<FrameReader>,
    handler: FrameHandler,
    /// A leading caller sleeps here: the socket (registered first), `kick`.
    lead_ep: Epoll,
    /// Wakes a leading caller whose answer another thread delivered.
    kick: OwnedFd,
    /// The reader thread sleeps here: the socket (when nobody leads),
    /// `reader_kick`.
    idle_ep: Epoll,
    /// Wakes the reader thread for queued callbacks.
    reader_kick: OwnedFd,
    /// Fires [`ACK_DELAY`] after a frame was delivered unacknowledged (a
    /// timerfd: armed once per acknowledgement, not per sleep).
    ack_timer: OwnedFd,
    /// Callbacks of frames a leader delivered, in frame order.
    callbacks: Mutex<VecDeque<Callback>>,
    /// [`IDLE`], [`LEADING`] or [`PARKED`].
    state: AtomicU8,
    /// Leads ended so far: the reader thread sees whether one ended
    /// during its last sleep.
    leads: AtomicU64,
    /// Set while the reader thread sleeps at most [`PARK`]; else ending a
    /// lead must wake it.
    reader_watching: AtomicBool,
    /// Set by [`InConn::unpark_now`]: the reader thread takes the socket
    /// back at once, not after a whole [`PARK`].
    unpark_now: AtomicBool,
    /// Serializes taking the socket out of `idle_ep` and putting it back.
    reg: Mutex<()>,
    dead: AtomicBool,
}

/// The reader thread watches the socket.
const IDLE: u8 = 0;
/// A caller leads; the socket is out of `idle_ep`.
const LEADING: u8 = 1;
/// Nobody leads, the socket is still out of `idle_ep`.
const PARKED: u8 = 2;
/// How long a connection stays parked without a lead before its reader
/// thread watches it again.
pub const PARK: Duration = Duration::from_millis(1);

thread_local! {
    /// The connection whose frames this thread is delivering, and whether
    /// it is a leading caller.
    static DELIVERING: RefCell<Option<(Arc<InConn>, bool)>> = const { RefCell::new(None) };
}

/// True while the calling thread delivers frames (as a connection's reader
/// thread or as a leading caller).
pub(super) fn delivering() -> bool {
    DELIVERING.with(|d| d.borrow().is_some())
}

/// Runs a user callback that a delivered frame produced. On a connection's
/// reader thread it runs at once, after any callbacks a leading caller
/// left for that thread (so frame order is kept); on a leading caller's
/// thread it is queued for the reader thread; elsewhere it runs at once.
pub fn run_callback(f: impl FnOnce() + Send + 'static) {
    let ctx = DELIVERING.with(|d| d.borrow().clone());
    match ctx {
        Some((c, true)) => c.queue_callback(Box::new(f)),
        Some((c, false)) => {
            c.run_queued();
            f();
        }
        None => f(),
    }
}

impl InConn {
    fn new(
        from: NodeId,
        sock: TcpStream,
        rx: FrameReader,
        handler: FrameHandler,
    ) -> std::io::Result<InConn> {
        let (lead_ep, idle_ep) = (Epoll::new()?, Epoll::new()?);
        let (kick, reader_kick) = (eventfd()?, eventfd()?);
        // SAFETY: plain syscall; the result is checked before use.
        let t = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if t < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `t` is a new descriptor owned by nobody else.
        let ack_timer = unsafe { OwnedFd::from_raw_fd(t) };
        let fd = sock.as_raw_fd();
        // Registration order is wake-up order: the leader's instance first.
        lead_ep.add(fd, SOCK, true)?;
        lead_ep.add(kick.as_raw_fd(), KICK, false)?;
        idle_ep.add(fd, SOCK, true)?;
        idle_ep.add(reader_kick.as_raw_fd(), KICK, false)?;
        idle_ep.add(ack_timer.as_raw_fd(), TIMER, false)?;
        Ok(InConn {
            from,
            sock,
            rx: Mutex::new(rx),
            handler,
            lead_ep,
            kick,
            idle_ep,
            reader_kick,
            ack_timer,
            callbacks: Mutex::new(VecDeque::new()),
            state: AtomicU8::new(IDLE),
            leads: AtomicU64::new(0),
            reader_watching: AtomicBool::new(false),
            unpark_now: AtomicBool::new(false),
            reg: Mutex::new(()),
            dead: AtomicBool::new(false),
        })
    }

    /// Reads and delivers what has arrived, as a leader (`leading`) or as
    /// the reader thread. On an error the connection is dead.
    fn drain(self: &Arc<Self>, leading: bool) -> std::io::Result<()> {
        let mut rx = self.rx.lock();
        if self.dead.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("connection closed"));
        }
        // Restored after: a callback run here may lead another connection.
        let outer = DELIVERING.with(|d| d.replace(Some((self.clone(), leading))));
        let mut r = rx.drain(&self.sock, &self.handler);
        DELIVERING.with(|d| *d.borrow_mut() = outer);
        if r.is_ok() && rx.owed() > 0 && !rx.timer_armed {
            r = self.arm_ack_timer();
            rx.timer_armed = r.is_ok();
        }
        if r.is_err() {
            self.fail();
        }
        r
    }

    fn arm_ack_timer(&self) -> std::io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: ACK_DELAY.as_secs() as libc::time_t,
                tv_nsec: ACK_DELAY.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid timerfd and itimerspec; no old value wanted.
        let r = unsafe {
            libc::timerfd_settime(self.ack_timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Marks the connection dead and wakes whoever waits on it.
    fn fail(&self) {
        self.dead.store(true, Ordering::SeqCst);
        let _ = self.sock.shutdown(Shutdown::Both);
        write_eventfd(&self.kick);
        write_eventfd(&self.reader_kick);
    }

    fn queue_callback(&self, f: Callback) {
        let mut q = self.callbacks.lock();
        q.push_back(f);
        if q.len() == 1 {
            write_eventfd(&self.reader_kick);
        }
    }

    fn run_queued(&self) {
        loop {
            let Some(f) = self.callbacks.lock().pop_front() else {
                return;
            };
            f();
        }
    }

    /// A leader's poll: delivers what has arrived; true when its wait is
    /// over (`done()`) or the connection failed.
    fn poll_once(self: &Arc<Self>, done: &impl Fn() -> bool) -> bool {
        match self.lead_ep.wait(Some(Duration::ZERO)) {
            Ok(r) if r.sock && self.drain(true).is_err() => true,
            Ok(_) => done(),
            Err(_) => true,
        }
    }

    /// Wakes the caller leading this connection (its answer came another
    /// way).
    pub fn kick(&self) {
        write_eventfd(&self.kick);
    }

    /// Makes the calling thread the reader of this connection until the
    /// returned guard is dropped; `None` when another caller leads it or
    /// it is closed. Take it before sending the request whose answer is
    /// awaited, so that the answer cannot wake the reader thread.
    pub fn lead(self: &Arc<Self>) -> Option<Lead> {
        if self.dead.load(Ordering::SeqCst) {
            return None;
        }
        let cas = |from| {
            self.state
                .compare_exchange(from, LEADING, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        };
        if !cas(PARKED) {
            let _reg = self.reg.lock();
            if !cas(IDLE) {
                return None;
            }
            // Failing, the reader thread keeps watching: slower, not wrong.
            let _ = self.idle_ep.del(self.sock.as_raw_fd());
        }
        Some(Lead { conn: self.clone() })
    }

    /// The reader thread, after a sleep: takes the socket back when the
    /// connection stayed parked through it (`leads_before` is the count of
    /// ended leads before the sleep). Returns true if it did.
    fn unpark(&self, leads_before: u64) -> std::io::Result<bool> {
        if self.state.load(Ordering::SeqCst) != PARKED
            || self.leads.load(Ordering::SeqCst) != leads_before
        {
            return Ok(false);
        }
        self.take_back()
    }

    /// A frame went to this connection's peer from a thread that does not
    /// lead it (an asynchronous request, an unlock, a callback's answer):
    /// whatever the peer answers must not wait in `lead_ep` for a leader
    /// that may never come, nor for a whole [`PARK`]. If the connection is
    /// parked, its reader thread takes the socket back now. (A caller that
    /// leads takes the lead before it sends, so the connection is then
    /// [`LEADING`] and this costs one load.)
    pub fn unpark_now(&self) {
        if self.state.load(Ordering::SeqCst) == PARKED
            && !self.unpark_now.swap(true, Ordering::SeqCst)
        {
            write_eventfd(&self.reader_kick);
        }
    }

    /// The reader thread watches the socket again, if the connection is
    /// still parked.
    fn take_back(&self) -> std::io::Result<bool> {
        let _reg = self.reg.lock();
        if self
            .state
            .compare_exchange(PARKED, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(false);
        }
        // Adding checks readiness: what arrived while parked wakes us now.
        self.idle_ep.add(self.sock.as_raw_fd(), SOCK, true)?;
        Ok(true)
    }
}

/// How long a leader polls its socket before it sleeps, when polling pays
/// (see `driver::spin`).
const LEAD_SPIN: Duration = Duration::from_micros(30);

/// A caller leading a connection (see [`InConn::lead`]).
pub struct Lead {
    conn: Arc<InConn>,
}

impl Lead {
    /// The led connection.
    pub fn conn(&self) -> &Arc<InConn> {
        &self.conn
    }

    /// Reads the connection until `done()`, or until it fails (the caller
    /// then waits as usual). `sleeping` is raised while the thread sleeps:
    /// whoever makes `done()` true must then call [`InConn::kick`].
    pub fn wait(&self, sleeping: &AtomicBool, done: impl Fn() -> bool) {
        let c = &self.conn;
        if spin::poll_first(LEAD_SPIN, || done() || c.poll_once(&done)) {
            return;
        }
        loop {
            sleeping.store(true, Ordering::SeqCst);
            if done() {
                break;
            }
            let ready = c.lead_ep.wait(None);
            sleeping.store(false, Ordering::SeqCst);
            let Ok(ready) = ready else { break };
            if ready.kick {
                clear_eventfd(&c.kick);
            }
            if (ready.sock && c.drain(true).is_err()) || c.dead.load(Ordering::SeqCst) {
                break;
            }
        }
        sleeping.store(false, Ordering::SeqCst);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        let c = &self.conn;
        c.leads.fetch_add(1, Ordering::SeqCst);
        c.state.store(PARKED, Ordering::SeqCst);
        if !c.reader_watching.load(Ordering::SeqCst) {
            // The reader thread sleeps long: it must start watching.
            write_eventfd(&c.reader_kick);
        }
    }
}

// ---------------------------------------------------------------------------
// Accepting side: one reader thread per inbound connection.
// ---------------------------------------------------------------------------

pub(super) fn accept_loop(listener: TcpListener, inbound: Arc<Inbound>) {
    for conn in listener.incoming() {
        if inbound.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(s) = conn else { continue };
        let Ok(peer) = s.peer_addr() else { continue };
        let Some(greeting) = Greeting::start(&inbound, peer) else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let Ok(clone) = s.try_clone() else { continue };
        let key = inbound.next_conn.fetch_add(1, Ordering::Relaxed);
        inbound.conns.lock().insert(key, clone);
        let inbound2 = inbound.clone();
        let spawned = thread::Builder::new()
            .name("dlm-recv".into())
            .spawn(move || {
                super::transport_thread();
                if let Err(e) = reader(s, &inbound2, greeting) {
                    tracing::debug!(error = %e, "inbound connection closed");
                }
                inbound2.conns.lock().remove(&key);
            });
        if spawned.is_err() {
            inbound.conns.lock().remove(&key);
        }
    }
}

/// A connection counted in [`Inbound::greeting`] until dropped.
struct Greeting(Arc<Inbound>, std::net::IpAddr);

impl Greeting {
    /// Counts a new connection from `peer`; `None` (logged) when its
    /// address has too many in the hello already.
    fn start(inbound: &Arc<Inbound>, peer: std::net::SocketAddr) -> Option<Greeting> {
        let mut g = inbound.greeting.lock();
        let n = g.entry(peer.ip()).or_insert(0);
        if *n >= MAX_GREETING_PER_ADDR {
            drop(g);
            inbound
                .refused
                .refused(peer, "too many connections from this address in the hello");
            return None;
        }
        *n += 1;
        Some(Greeting(inbound.clone(), peer.ip()))
    }
}

impl Drop for Greeting {
    fn drop(&mut self) {
        let mut g = self.0.greeting.lock();
        if let Some(n) = g.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.1);
            }
        }
    }
}

/// Why a connection was not taken as a peer's.
enum GreetError {
    /// Network trouble before the hello was through.
    Io(std::io::Error),
    /// Not a hello of ours: the client's input is read and dropped.
    NotDlm(String),
    /// A DLM hello that fails (wrong node, no key): closed at once.
    Refused(String),
}

impl From<std::io::Error> for GreetError {
    fn from(e: std::io::Error) -> GreetError {
        GreetError::Io(e)
    }
}

/// Runs the acceptor's side of the handshake ([`auth`]) and takes over as
/// the peer's current inbound connection. Nothing of the peer's state is
/// looked at or changed before its proof checks out.
fn greet(mut s: TcpStream, inbound: &Inbound) -> Result<Arc<InConn>, GreetError> {
    s.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut h = [0u8; HELLO_LEN];
    s.read_exact(&mut h)?;
    let hello = Hello::decode(&h).ok_or_else(|| GreetError::NotDlm("bad hello".into()))?;
    let from = hello.from;
    if from == inbound.me {
        return Err(GreetError::Refused("hello from our own node id".into()));
    }
    if hello.to != inbound.me {
        return Err(GreetError::Refused(format!(
            "hello from node {from} meant for node {}, but this is node {}",
            hello.to, inbound.me
        )));
    }
    let challenge = Challenge {
        inc: inbound.inc,
        nonce: auth::nonce(),
    };
    s.write_all(&challenge.encode())?;
    let mut proof = [0u8; PROOF_LEN];
    s.read_exact(&mut proof)?;
    let hs = Handshake::new(&inbound.key, &hello, &challenge);
    if !hs.check_proof(&proof) {
        return Err(GreetError::Refused(format!(
            "hello claiming node {from} failed authentication (no proof of the cluster key)"
        )));
    }
    let pr = inbound.peers.lock().entry(from).or_default().clone();
    let mut p = pr.lock();
    if p.seq.inc != 0 && p.seq.inc != hello.inc {
        tracing::info!(%from, "peer restarted (new incarnation): new stream");
    }
    let delivered = p.seq.hello(hello.inc);
    s.write_all(&hs.welcome(delivered))?;
    s.set_read_timeout(None)?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    p.epoch += 1;
    let (frames, acks) = hs.record_keys();
    let rx = FrameReader::new(from, pr.clone(), p.epoch, delivered, frames, acks);
    let conn = Arc::new(InConn::new(from, s, rx, inbound.handler.clone())?);
    if let Some(old) = inbound.current.lock().insert(from, conn.clone()) {
        // The peer reconnected: the old connection is dead to it.
        old.fail();
    }
    Ok(conn)
}

/// Reads and drops what a client that is not a DLM peer sends (up to
/// [`DISCARD_LIMIT`] bytes or until it is quiet for [`HELLO_TIMEOUT`]),
/// then closes: it gets a clean end of stream instead of a reset in the
/// middle of its writes.
fn discard(s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(HELLO_TIMEOUT));
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < DISCARD_LIMIT {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// The reader thread of one inbound connection.
fn reader(mut s: TcpStream, inbound: &Inbound, greeting: Greeting) -> std::io::Result<()> {
    let peer = s.peer_addr()?;
    let greeted = greet(s.try_clone()?, inbound);
    let conn = match greeted {
        Ok(c) => c,
        Err(GreetError::Io(e)) => return Err(e),
        Err(GreetError::NotDlm(why)) => {
            inbound.refused.refused(peer, &why);
            discard(&mut s);
            drop(greeting);
            return Err(std::io::Error::other(why));
        }
        Err(GreetError::Refused(why)) => {
            inbound.refused.refused(peer, &why);
            let _ = s.shutdown(Shutdown::Both);
            return Err(std::io::Error::other(why));
        }
    };
    drop(s);
    drop(greeting);
    let r = serve(&conn);
    if let Err(e) = &r {
        if e.kind() == std::io::ErrorKind::InvalidData {
            inbound.refused.refused(peer, &e.to_string());
        }
    }
    conn.fail();
    {
        let mut cur = inbound.current.lock();
        if cur.get(&conn.from).is_some_and(|c| Arc::ptr_eq(c, &conn)) {
            cur.remove(&conn.from);
        }
    }
    // Callbacks a leader left still run, in order. Under the stream lock:
    // a leader delivering now finishes first; later ones see it dead.
    let _rx = conn.rx.lock();
    conn.run_queued();
    r
}

fn serve(conn: &Arc<InConn>) -> std::io::Result<()> {
    loop {
        // While the connection is led or parked, sleep at most PARK (see
        // the module docs); else until something happens.
        conn.reader_watching.store(false, Ordering::SeqCst);
        let watch = conn.state.load(Ordering::SeqCst) != IDLE;
        conn.reader_watching.store(watch, Ordering::SeqCst);
        let leads = conn.leads.load(Ordering::SeqCst);
        let ready = conn.idle_ep.wait(watch.then_some(PARK))?;
        if ready.kick {
            clear_eventfd(&conn.reader_kick);
            // Under the stream lock: no leader is delivering newer frames.
            let _rx = conn.rx.lock();
            conn.run_queued();
        }
        if conn.dead.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("connection closed"));
        }
        if ready.timer {
            // ACK_DELAY since the first frame not acknowledged.
            clear_eventfd(&conn.ack_timer);
            let mut rx = conn.rx.lock();
            rx.timer_armed = false;
            if rx.owed() > 0 {
                rx.send_ack(&conn.sock)?;
            }
        }
        if conn.unpark_now.swap(false, Ordering::SeqCst) && conn.take_back()? {
            continue;
        }
        if watch && conn.unpark(leads)? {
            continue;
        }
        if ready.sock {
            conn.drain(false)?;
        }
    }
}

/// Splits an inbound byte stream into frames and delivers them in order,
/// exactly once, under the peer's receive lock.
struct FrameReader {
    from: NodeId,
    pr: Arc<Mutex<PeerRecv>>,
    epoch: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Last sequence number acknowledged on this connection.
    acked: u64,
    /// Last sequence number delivered on this connection.
    last: u64,
    /// The connection's acknowledgement timer runs.
    timer_armed: bool,
    /// Checks the frames' tags.
    frames: RecordMac,
    /// Tags our acknowledgements.
    acks: RecordMac,
}

impl FrameReader {
    fn new(
        from: NodeId,
        pr: Arc<Mutex<PeerRecv>>,
        epoch: u64,
        last: u64,
        frames: RecordMac,
        acks: RecordMac,
    ) -> FrameReader {
        FrameReader {
            frames,
            acks,
            from,
            pr,
            epoch,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            acked: last,
            last,
            timer_armed: false,
        }
    }

    /// Reads and delivers until the socket has nothing more (without
    /// blocking), acknowledging every [`ACK_EVERY`] frames.
    fn drain(&mut self, s: &TcpStream, handler: &FrameHandler) -> std::io::Result<()> {
        loop {
            let emptied = match self.fill(s) {
                Ok(emptied) => emptied,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.deliver(handler)?;
            if self.owed() >= ACK_EVERY {
                self.send_ack(s)?;
            }
            if emptied {
                return Ok(());
            }
        }
    }

    /// Reads more bytes (one non-blocking `recv`). Returns true when that
    /// emptied the socket (a short read).
    fn fill(&mut self, s: &TcpStream) -> std::io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let need = self.next_len().map_or(4, |l| 4 + l);
        if self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
        }
        let room = &mut self.buf[self.end..];
        // SAFETY: reads at most `room.len()` bytes into `room`, from a
        // socket descriptor `s` keeps open.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                room.as_mut_ptr().cast(),
                room.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed by peer",
            ));
        }
        let n = n as usize;
        let emptied = n < room.len();
        self.end += n;
        Ok(emptied)
    }

    /// Length (after the prefix) of the frame at `start`, once known.
    fn next_len(&self) -> Option<usize> {
        let b = self.buf.get(self.start..self.start + 4)?;
        if self.end < self.start + 4 {
            return None;
        }
        Some(u32::from_le_bytes(b.try_into().expect("4")) as usize)
    }

    /// Delivers every complete frame in the buffer.
    fn deliver(&mut self, handler: &FrameHandler) -> std::io::Result<()> {
        while let Some(len) = self.next_len() {
            if !(8 + TAG_LEN..=MAX_FRAME).contains(&len) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad frame length",
                ));
            }
            if self.end - self.start < 4 + len {
                break;
            }
            let (record, tag) =
                self.buf[self.start..self.start + 4 + len].split_at(4 + len - TAG_LEN);
            if !self.frames.open_frame(record, tag) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "frame with a bad tag",
                ));
            }
            let body = self.start + 4;
            let seq = u64::from_le_bytes(self.buf[body..body + 8].try_into().expect("8"));
            {
                let mut p = self.pr.lock();
                if p.epoch != self.epoch {
                    return Err(std::io::Error::other("superseded by a newer connection"));
                }
                match p.seq.receive(seq) {
                    Verdict::Deliver => {
                        self.last = seq;
                        // Delivered under the lock: a newer connection of
                        // the same peer cannot overtake this frame.
                        handler(self.from, &self.buf[body + 8..body + len - TAG_LEN]);
                    }
                    Verdict::Duplicate => {}
                    Verdict::Gap => {
                        tracing::error!(from = %self.from, seq, last = p.seq.last,
                            "frames missing in the stream: closing the connection");
                        return Err(std::io::Error::other("sequence gap"));
                    }
                }
            }
            self.start = body + len;
        }
        Ok(())
    }

    /// Frames delivered but not yet acknowledged on this connection.
    fn owed(&self) -> u64 {
        self.last.saturating_sub(self.acked)
    }

    fn send_ack(&mut self, mut s: &TcpStream) -> std::io::Result<()> {
        let mut ack = [0u8; 8 + TAG_LEN];
        ack[..8].copy_from_slice(&self.last.to_le_bytes());
        let tag = self.acks.seal(&ack[..8]);
        ack[8..].copy_from_slice(&tag);
        s.write_all(&ack)?;
        self.acked = self.last;
        Ok(())
    }
}
