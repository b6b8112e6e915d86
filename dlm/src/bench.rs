//! Measurements printed by `dlm_tool bench`: the cost of a local lock
//! against a plain mutex, of a remote lock against the TCP round trip
//! between the same two processes, lock ping-pong between two processes,
//! and local throughput with 1, 2 and 4 threads. Every figure is a median
//! over repeated batches.
//!
//! The remote figures come from two processes on loopback: [`run`] starts
//! a peer program (the caller's own executable with a hidden subcommand
//! that calls [`peer_main`]) and talks to it over its stdin/stdout:
//!
//! | parent → peer | peer → parent |
//! |---|---|
//! | `key HEX`: the cluster key (random, made for the run) | `ready DLM_ADDR ECHO_ADDR` |
//! | `join ID ADDR`: add node ID at ADDR, join lockspace `bench` | `ok` |
//! | `master NAME`: lock + unlock NAME once (becomes its master) | `ok` |
//! | `pingpong NAME`: start bouncing NAME (callbacks) | `ok` |
//! | `count`: grants so far | `N` |
//! | `stop` | `ok` |
//! | `quit` or end of input | (exits) |
//!
//! The peer also runs a TCP echo server; `tcp_rtt_ns` is a request and
//! response of the size of a DLM request frame between the same two
//! processes, measured in batches taking turns with the remote-lock
//! batches, in rotating order, so that machine noise hits both alike.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::types::Status;
use crate::{
    ClusterKey, Dlm, DlmConfig, DlmError, Flags, Lockspace, Mode, NodeId, StaticMembership,
};

/// The figures `dlm_tool bench` reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchReport {
    /// Uncontended mutex lock + unlock.
    pub mutex_ns: u64,
    /// Lock + unlock of a resource mastered here.
    pub local_ns: u64,
    /// Lock + unlock of a resource mastered by another process.
    pub remote_ns: u64,
    /// Request/response of `request_bytes` over loopback TCP between the
    /// same two processes.
    pub tcp_rtt_ns: u64,
    /// The same round trip when a reader thread receives the response and
    /// wakes the waiting caller through a condvar (as the DLM did before
    /// blocked callers read their own answers): the cost of that thread
    /// hop is `tcp_rtt_hop_ns - tcp_rtt_ns`.
    pub tcp_rtt_hop_ns: u64,
    /// Bytes of a DLM request frame on the wire (what `tcp_rtt_ns` sends).
    pub request_bytes: u64,
    /// EX grants per second of one lock bounced between two processes by
    /// blocking callbacks (both processes together).
    pub pingpong_per_s: u64,
    /// Local lock + unlock pairs per second, 1 thread.
    pub local_ops_per_s_1: u64,
    /// Same with 2 threads (distinct resources).
    pub local_ops_per_s_2: u64,
    /// Same with 4 threads.
    pub local_ops_per_s_4: u64,
}

/// Benchmark errors.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The lock manager failed.
    #[error(transparent)]
    Dlm(#[from] DlmError),
    /// A socket, pipe or process failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer process misbehaved.
    #[error("bench peer: {0}")]
    Peer(String),
}

/// How to start the peer process: a program whose arguments make it call
/// [`peer_main`].
#[derive(Clone, Debug)]
pub struct PeerCommand {
    /// The program (usually `std::env::current_exe()`).
    pub program: PathBuf,
    /// Its arguments (e.g. a hidden `bench-peer` subcommand).
    pub args: Vec<String>,
}

const LS_NAME: &str = "bench";
const PARENT: NodeId = NodeId(1);
const PEER: NodeId = NodeId(2);
const WAIT_RUNNING: Duration = Duration::from_secs(30);

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median per-iteration time of `f` over `rounds` batches of `batch`.
fn per_op_ns(rounds: usize, batch: u64, mut f: impl FnMut()) -> u64 {
    let v = (0..rounds).map(|_| time_batch(batch, &mut f)).collect();
    median(v)
}

/// Time per iteration of one batch of `batch` calls of `f`.
fn time_batch(batch: u64, f: &mut impl FnMut()) -> u64 {
    let t = Instant::now();
    for _ in 0..batch {
        f();
    }
    t.elapsed().as_nanos() as u64 / batch
}

fn mutex_ns() -> u64 {
    let m = parking_lot::Mutex::new(0u64);
    per_op_ns(51, 10_000, || *std::hint::black_box(&m).lock() += 1)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn wait_running(ls: &Lockspace) -> Result<(), DlmError> {
    let t = Instant::now();
    while !ls.is_running() {
        if t.elapsed() > WAIT_RUNNING {
            return Err(DlmError::NotMember);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// A cluster key for one run (the bench's processes only).
fn run_key() -> [u8; 32] {
    rand::random()
}

fn from_hex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

fn lock_unlock(ls: &Lockspace, name: &[u8]) {
    let id = ls.lock(name, Mode::Ex, Flags::empty()).expect("lock");
    ls.unlock(id, Flags::empty(), None).expect("unlock");
}

// ---------------------------------------------------------------------------
// Local figures: one node in this process.
// ---------------------------------------------------------------------------

fn local_figures(r: &mut BenchReport) -> Result<(), DlmError> {
    let dlm = Dlm::start(DlmConfig::new(
        PARENT,
        loopback(),
        HashMap::new(),
        ClusterKey::new(&run_key()).expect("32 bytes"),
    ))?;
    let ls = dlm.join(LS_NAME, StaticMembership::new(&[PARENT]).as_ref())?;
    wait_running(&ls)?;
    for _ in 0..1000 {
        lock_unlock(&ls, b"local");
    }
    r.local_ns = per_op_ns(51, 5_000, || lock_unlock(&ls, b"local"));
    r.local_ops_per_s_1 = local_ops_per_s(&ls, 1);
    r.local_ops_per_s_2 = local_ops_per_s(&ls, 2);
    r.local_ops_per_s_4 = local_ops_per_s(&ls, 4);
    Ok(())
}

fn local_ops_per_s(ls: &Lockspace, threads: usize) -> u64 {
    let rounds: Vec<u64> = (0..5)
        .map(|_| {
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let (ls, stop, count) = (ls.clone(), stop.clone(), count.clone());
                    let name = distinct_shard_name(&ls, t);
                    std::thread::spawn(move || {
                        let mut n = 0;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..100 {
                                lock_unlock(&ls, name.as_bytes());
                            }
                            n += 100;
                        }
                        count.fetch_add(n, Ordering::Relaxed);
                    })
                })
                .collect();
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::Relaxed);
            for h in hs {
                h.join().expect("bench thread");
            }
            (count.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()) as u64
        })
        .collect();
    median(rounds)
}

/// A resource name for thread `t` whose shard no other thread's name uses.
fn distinct_shard_name(ls: &Lockspace, t: usize) -> String {
    let mut used = Vec::new();
    let mut i = 0;
    loop {
        let name = format!("thread-{i}");
        let k = ls
            .inner
            .shard_of_name(&crate::ResName::new(name.as_bytes()).expect("name"));
        i += 1;
        if used.contains(&k) {
            continue;
        }
        if used.len() == t {
            return name;
        }
        used.push(k);
    }
}

// ---------------------------------------------------------------------------
// Ping-pong by blocking callbacks (both processes run this).
// ---------------------------------------------------------------------------

/// One lock bounced by callbacks: held at NL, converted up to EX; a
/// blocking callback converts it down to NL, whose completion converts it
/// up again, so the lock goes back and forth between the processes.
struct PingPong {
    ls: Lockspace,
    grants: AtomicU64,
    stop: AtomicBool,
}

impl PingPong {
    fn start(ls: &Lockspace, name: &[u8]) -> Result<Arc<PingPong>, DlmError> {
        let pp = Arc::new(PingPong {
            ls: ls.clone(),
            grants: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let (a, b) = (Arc::downgrade(&pp), Arc::downgrade(&pp));
        ls.lock_async(
            name,
            Mode::Nl,
            Flags::empty(),
            None,
            Arc::new(move |c: crate::Completion| {
                if let Some(pp) = a.upgrade() {
                    pp.completed(c);
                }
            }),
            Some(Arc::new(move |id, _mode| {
                if let Some(pp) = b.upgrade() {
                    // Busy when a conversion is already on its way.
                    let _ = pp.ls.convert_async(id, Mode::Nl, Flags::empty(), None);
                }
            })),
        )?;
        Ok(pp)
    }

    fn completed(&self, c: crate::Completion) {
        match c.status {
            Status::Granted(Mode::Ex) => {
                self.grants.fetch_add(1, Ordering::Relaxed);
            }
            Status::Granted(_) if !self.stop.load(Ordering::Relaxed) => {
                let _ = self.ls.convert_async(c.id, Mode::Ex, Flags::empty(), None);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// The peer process.
// ---------------------------------------------------------------------------

/// The peer side of [`run`]: node 2 of a two-node lockspace plus a TCP echo
/// server, driven by commands on stdin (see the module docs). Returns when
/// stdin closes or says `quit`.
pub fn peer_main() -> Result<(), BenchError> {
    let mut first = String::new();
    std::io::stdin().lock().read_line(&mut first)?;
    let key = first
        .strip_prefix("key ")
        .and_then(|h| from_hex(h.trim()))
        .and_then(|k| ClusterKey::new(&k).ok())
        .ok_or_else(|| BenchError::Peer("expected the key first".into()))?;
    let dlm = Dlm::start(DlmConfig::new(PEER, loopback(), HashMap::new(), key))?;
    let echo = TcpListener::bind(loopback())?;
    let echo_addr = echo.local_addr()?;
    std::thread::spawn(move || echo_server(echo));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {} {}", dlm.local_addr(), echo_addr)?;
    out.flush()?;
    let mut ls: Option<Lockspace> = None;
    let mut pp: Option<Arc<PingPong>> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let reply = match (w.as_slice(), &ls) {
            (["join", id, addr], _) => {
                let id = NodeId(id.parse().map_err(|_| peer_err(&line))?);
                dlm.add_peer(id, addr.parse().map_err(|_| peer_err(&line))?);
                let l = dlm.join(LS_NAME, StaticMembership::new(&[id, PEER]).as_ref())?;
                wait_running(&l)?;
                ls = Some(l);
                "ok".to_string()
            }
            (["master", name], Some(l)) => {
                lock_unlock(l, name.as_bytes());
                "ok".to_string()
            }
            (["pingpong", name], Some(l)) => {
                pp = Some(PingPong::start(l, name.as_bytes())?);
                "ok".to_string()
            }
            (["count"], _) => pp
                .as_ref()
                .map_or(0, |p| p.grants.load(Ordering::Relaxed))
                .to_string(),
            (["stop"], _) => {
                if let Some(p) = &pp {
                    p.stop.store(true, Ordering::Relaxed);
                }
                "ok".to_string()
            }
            (["quit"], _) => break,
            _ => return Err(peer_err(&line)),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

fn peer_err(line: &str) -> BenchError {
    BenchError::Peer(format!("bad command {line:?}"))
}

/// Echoes fixed-size messages: the client first sends the size (u32 LE).
fn echo_server(l: TcpListener) {
    for c in l.incoming() {
        let Ok(mut s) = c else { continue };
        std::thread::spawn(move || -> std::io::Result<()> {
            s.set_nodelay(true)?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len)?;
            let mut b = vec![0u8; u32::from_le_bytes(len).clamp(1, 1 << 16) as usize];
            while s.read_exact(&mut b).is_ok() {
                s.write_all(&b)?;
            }
            Ok(())
        });
    }
}

/// The parent's handle on the peer process; kills it if dropped early.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(cmd: &PeerCommand, key: &[u8]) -> Result<(Peer, SocketAddr, SocketAddr), BenchError> {
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut p = Peer {
            child,
            stdin,
            stdout,
        };
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let ready = p.ask(&format!("key {hex}"))?;
        let w: Vec<&str> = ready.split_whitespace().collect();
        let addr = |s: &str| {
            s.parse()
                .map_err(|_| BenchError::Peer(format!("bad ready line {ready:?}")))
        };
        match w.as_slice() {
            ["ready", dlm, echo] => {
                let (dlm, echo) = (addr(dlm)?, addr(echo)?);
                Ok((p, dlm, echo))
            }
            _ => Err(BenchError::Peer(format!("expected ready, got {ready:?}"))),
        }
    }

    fn read_line(&mut self) -> Result<String, BenchError> {
        let mut s = String::new();
        if self.stdout.read_line(&mut s)? == 0 {
            return Err(BenchError::Peer("exited".into()));
        }
        Ok(s.trim().to_string())
    }

    /// Sends a command and returns the reply line.
    fn ask(&mut self, cmd: &str) -> Result<String, BenchError> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.read_line()
    }

    fn ask_ok(&mut self, cmd: &str) -> Result<(), BenchError> {
        match self.ask(cmd)?.as_str() {
            "ok" => Ok(()),
            other => Err(BenchError::Peer(format!("{cmd}: {other:?}"))),
        }
    }

    fn count(&mut self) -> Result<u64, BenchError> {
        let r = self.ask("count")?;
        r.parse()
            .map_err(|_| BenchError::Peer(format!("bad count {r:?}")))
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Drop kills it.
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A resource name whose directory node is `dir` in a cluster of `n`.
fn name_with_dir(n: u32, dir: u32, prefix: &str) -> String {
    let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|v| {
            crate::node::dir_node(&members, &crate::ResName::new(v.as_bytes()).expect("name"))
                == Some(NodeId(dir))
        })
        .expect("some name hashes to every node")
}

/// A TCP client of the peer's echo server.
struct Echo {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Echo {
    fn connect(addr: SocketAddr, size: usize) -> std::io::Result<Echo> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(&(size as u32).to_le_bytes())?;
        Ok(Echo {
            s,
            buf: vec![0x5a; size],
        })
    }

    fn round_trip(&mut self) {
        self.s.write_all(&self.buf).expect("echo write");
        self.s.read_exact(&mut self.buf).expect("echo read");
    }
}

/// An echo client whose responses are read by a separate thread that
/// wakes the caller through a condvar, as the DLM's socket reader thread
/// woke a blocked `lock` caller before callers read their own answers.
struct HopEcho {
    s: TcpStream,
    buf: Vec<u8>,
    done: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl HopEcho {
    fn connect(addr: SocketAddr, size: usize) -> std::io::Result<HopEcho> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(&(size as u32).to_le_bytes())?;
        let done = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let (mut rs, d2) = (s.try_clone()?, done.clone());
        let reader = std::thread::spawn(move || {
            let mut b = vec![0u8; size];
            while rs.read_exact(&mut b).is_ok() {
                *d2.0.lock() = true;
                d2.1.notify_one();
            }
        });
        Ok(HopEcho {
            s,
            buf: vec![0x5a; size],
            done,
            reader: Some(reader),
        })
    }

    fn round_trip(&mut self) {
        self.s.write_all(&self.buf).expect("echo write");
        let mut d = self.done.0.lock();
        while !*d {
            self.done.1.wait(&mut d);
        }
        *d = false;
    }
}

impl Drop for HopEcho {
    fn drop(&mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// remote_ns, tcp_rtt_ns and tcp_rtt_hop_ns, in batches taking turns.
fn remote_figures(
    dlm: &Dlm,
    ls: &Lockspace,
    peer: &mut Peer,
    echo_addr: SocketAddr,
    r: &mut BenchReport,
) -> Result<(), BenchError> {
    // Directory node 2 and first used there: mastered by the peer.
    let name = name_with_dir(2, PEER.0, "remote");
    peer.ask_ok(&format!("master {name}"))?;
    for _ in 0..200 {
        lock_unlock(ls, name.as_bytes());
    }
    // The size of the frames a lock + unlock sends to the master.
    let before = dlm.transport().sent(PEER);
    for _ in 0..100 {
        lock_unlock(ls, name.as_bytes());
    }
    let after = dlm.transport().sent(PEER);
    let frames = after.frames - before.frames;
    if frames == 0 {
        return Err(BenchError::Peer("remote locks sent no frame".into()));
    }
    r.request_bytes = (after.bytes - before.bytes) / frames;
    let size = r.request_bytes as usize;
    let (mut echo, mut hop) = (
        Echo::connect(echo_addr, size)?,
        HopEcho::connect(echo_addr, size)?,
    );
    for _ in 0..500 {
        echo.round_trip();
        hop.round_trip();
    }
    let (mut remote, mut rtt, mut rtt_hop) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..101 {
        // Each kind comes first, second and third in turn: a batch can
        // find the CPUs warm or dozing depending on what ran before it.
        for k in 0..3 {
            match (round + k) % 3 {
                0 => remote.push(time_batch(50, &mut || lock_unlock(ls, name.as_bytes()))),
                1 => rtt.push(time_batch(100, &mut || echo.round_trip())),
                _ => rtt_hop.push(time_batch(100, &mut || hop.round_trip())),
            }
        }
    }
    r.remote_ns = median(remote);
    r.tcp_rtt_ns = median(rtt);
    r.tcp_rtt_hop_ns = median(rtt_hop);
    Ok(())
}

/// Grants per second of one lock bounced between the two processes.
fn pingpong_figure(ls: &Lockspace, peer: &mut Peer) -> Result<u64, BenchError> {
    let name = name_with_dir(2, PARENT.0, "pingpong");
    peer.ask_ok(&format!("pingpong {name}"))?;
    let pp = PingPong::start(ls, name.as_bytes())?;
    std::thread::sleep(Duration::from_millis(100));
    let mut rates = Vec::new();
    for _ in 0..5 {
        let (t0, p0, c0) = (
            Instant::now(),
            pp.grants.load(Ordering::Relaxed),
            peer.count()?,
        );
        std::thread::sleep(Duration::from_millis(200));
        let (p1, c1) = (pp.grants.load(Ordering::Relaxed), peer.count()?);
        let grants = (p1 - p0) + (c1 - c0);
        rates.push((grants as f64 / t0.elapsed().as_secs_f64()) as u64);
    }
    pp.stop.store(true, Ordering::Relaxed);
    peer.ask_ok("stop")?;
    Ok(median(rates))
}

/// Runs every measurement (a few seconds): the local ones in this process,
/// the remote ones against a peer process started with `peer`.
pub fn run(peer: &PeerCommand) -> Result<BenchReport, BenchError> {
    let mut r = BenchReport {
        mutex_ns: mutex_ns(),
        ..Default::default()
    };
    local_figures(&mut r)?;
    let key = run_key();
    let cfg = DlmConfig::new(
        PARENT,
        loopback(),
        HashMap::new(),
        ClusterKey::new(&key).expect("32 bytes"),
    );
    let dlm = Dlm::start(cfg)?;
    let (mut p, peer_addr, echo_addr) = Peer::spawn(peer, &key)?;
    dlm.add_peer(PEER, peer_addr);
    let ls = dlm.join(LS_NAME, StaticMembership::new(&[PARENT, PEER]).as_ref())?;
    p.ask_ok(&format!("join {} {}", PARENT.0, dlm.local_addr()))?;
    wait_running(&ls)?;
    remote_figures(&dlm, &ls, &mut p, echo_addr, &mut r)?;
    r.pingpong_per_s = pingpong_figure(&ls, &mut p)?;
    p.quit();
    Ok(r)
}
