//! A peer that stops reading (issue 15): no frame is silently dropped.
//!
//! - A raw TCP peer that completes the authenticated hello and then reads
//!   nothing: a caller sending to it waits once the queue is past its
//!   limit (back-pressure) while traffic with another peer goes on; when
//!   the peer starts reading, it gets every frame, once, in order.
//! - The transport's own threads never wait (a reader thread that answers
//!   what it delivers would otherwise deadlock two nodes that both stop
//!   reading): when they keep sending to a peer that takes nothing, the
//!   peer is declared failed past the hard bound, loudly; its process gets
//!   no frame again, a restarted process of it does.
//! - End to end: a node whose connection to a third node stalls (a proxy
//!   that stops forwarding) slows only the callers that send there; the
//!   other nodes' locks keep working, and once the link flows again every
//!   request sent meanwhile is granted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::Duration;

use dlm::driver::transport::auth::{Challenge, Handshake, Hello, RecordMac, PROOF_LEN};
use dlm::driver::transport::{FrameHandler, Transport, HARD_LIMIT_FACTOR, HELLO_LEN, TAG_LEN};
use dlm::{Dlm, DlmConfig, Flags, Lockspace, Mode, NodeId, ResName, StaticMembership};

mod common;
use common::{any_port, capture_log, frame, key, received, recorder, wait_until};

// ---------------------------------------------------------------------------
// A raw peer: the acceptor's side of the hello, then reading by hand.
// ---------------------------------------------------------------------------

/// One connection accepted by a raw peer, after the hello.
struct RawConn {
    s: TcpStream,
    frames: RecordMac,
    acks: RecordMac,
}

/// Accepts one connection on `l` and answers its hello as incarnation
/// `inc` (with the key), reporting nothing delivered yet.
fn raw_accept(l: &TcpListener, inc: u64) -> RawConn {
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut h = [0u8; HELLO_LEN];
    s.read_exact(&mut h).unwrap();
    let hello = Hello::decode(&h).unwrap();
    let ch = Challenge {
        inc,
        nonce: dlm::driver::transport::auth::nonce(),
    };
    s.write_all(&ch.encode()).unwrap();
    let mut proof = [0u8; PROOF_LEN];
    s.read_exact(&mut proof).unwrap();
    let hs = Handshake::new(&key(), &hello, &ch);
    assert!(hs.check_proof(&proof));
    s.write_all(&hs.welcome(0)).unwrap();
    let (frames, acks) = hs.record_keys();
    RawConn { s, frames, acks }
}

impl RawConn {
    /// The next frame: (seq, the u64 it carries); `None` at end of stream.
    fn read_frame(&mut self) -> Option<(u64, u64)> {
        let mut len = [0u8; 4];
        if self.s.read_exact(&mut len).is_err() {
            return None;
        }
        let len = u32::from_le_bytes(len) as usize;
        assert_eq!(len, 8 + 8 + TAG_LEN, "a test frame");
        let mut rec = len.to_le_bytes()[..4].to_vec();
        rec.resize(4 + len, 0);
        if self.s.read_exact(&mut rec[4..]).is_err() {
            return None;
        }
        let (body, tag) = rec.split_at(4 + len - TAG_LEN);
        assert!(self.frames.open_frame(body, tag), "frame tag");
        let seq = u64::from_le_bytes(body[4..12].try_into().unwrap());
        let v = u64::from_le_bytes(body[12..20].try_into().unwrap());
        Some((seq, v))
    }

    /// Acknowledges every frame up to `seq`.
    fn ack(&mut self, seq: u64) {
        let mut a = seq.to_le_bytes().to_vec();
        let tag = self.acks.seal(&a);
        a.extend_from_slice(&tag);
        self.s.write_all(&a).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Back-pressure on a caller; nothing lost.
// ---------------------------------------------------------------------------

#[test]
fn a_caller_sending_to_a_peer_that_stops_reading_waits_and_nothing_is_lost() {
    const LIMIT: usize = 100;
    const N: u64 = 1000;
    let stuck = TcpListener::bind(any_port()).unwrap();
    let (ia, ha) = recorder();
    let (ib, hb) = recorder();
    let a = Arc::new(Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha).unwrap());
    let b = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), hb).unwrap();
    a.set_queue_limits(LIMIT, 1 << 20);
    a.add_peer(NodeId(2), b.local_addr());
    b.add_peer(NodeId(1), a.local_addr());
    a.add_peer(NodeId(3), stuck.local_addr().unwrap());
    // Node 3 answers the hello, then reads nothing.
    let mut x = raw_accept(&stuck, 77);
    wait_until("connected to node 3", || a.connected(NodeId(3)));

    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (a, sent) = (a.clone(), sent.clone());
        thread::spawn(move || {
            for v in 0..N {
                a.send(NodeId(3), frame(v));
                sent.store(v + 1, Ordering::SeqCst);
            }
        })
    };
    // The caller waits once more than LIMIT frames wait for node 3.
    wait_until("the sender to fill node 3's queue", || {
        a.pending(NodeId(3)) > LIMIT
    });
    thread::sleep(Duration::from_millis(300));
    let stalled_at = sent.load(Ordering::SeqCst);
    assert_eq!(
        stalled_at, LIMIT as u64,
        "the sender should wait right after the frame that passed the limit"
    );
    assert_eq!(
        a.pending(NodeId(3)),
        LIMIT + 1,
        "nothing dropped, nothing more queued"
    );
    assert!(!a.failed(NodeId(3)));

    // Meanwhile node 1 and node 2 go on talking, both ways.
    for v in 0..500 {
        a.send(NodeId(2), frame(v));
        b.send(NodeId(1), frame(v));
    }
    wait_until("traffic with node 2", || {
        received(&ib, 1).len() == 500 && received(&ia, 2).len() == 500
    });
    assert_eq!(received(&ib, 1), (0..500).collect::<Vec<_>>());
    assert_eq!(received(&ia, 2), (0..500).collect::<Vec<_>>());
    assert_eq!(sent.load(Ordering::SeqCst), stalled_at, "still waiting");

    // Node 3 reads again: every frame, once, in order, numbered 1, 2, ...
    let mut got = Vec::new();
    while got.len() < N as usize {
        let (seq, v) = x.read_frame().expect("a frame");
        assert_eq!(seq, got.len() as u64 + 1, "frames numbered without a gap");
        got.push(v);
        if seq % 16 == 0 || seq == N {
            x.ack(seq);
        }
    }
    sender.join().unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    wait_until("node 3's queue acknowledged", || a.pending(NodeId(3)) == 0);
    assert!(!a.failed(NodeId(3)));
}

// ---------------------------------------------------------------------------
// The transport's own threads never wait: the peer is declared failed.
// ---------------------------------------------------------------------------

fn logged(what: &str) -> usize {
    common::log_lines(&[what]).len()
}

#[test]
fn a_peer_that_takes_nothing_while_reader_threads_send_to_it_is_declared_failed() {
    capture_log();
    const LIMIT: usize = 50;
    const N: u64 = 1000;
    let stuck = TcpListener::bind(any_port()).unwrap();
    // Node 1 forwards every frame from node 2 to node 3, on its reader
    // thread: a thread that must not wait.
    let a_cell: Arc<OnceLock<Arc<Transport>>> = Arc::new(OnceLock::new());
    let (ia, record) = recorder();
    let forward: FrameHandler = {
        let a_cell = a_cell.clone();
        Arc::new(move |from, payload: &[u8]| {
            record(from, payload);
            let v = u64::from_le_bytes(payload.try_into().unwrap());
            a_cell.get().unwrap().send(NodeId(3), frame(v));
        })
    };
    let a =
        Arc::new(Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), forward).unwrap());
    let _ = a_cell.set(a.clone());
    let (_ib, hb) = recorder();
    let b = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), hb).unwrap();
    a.set_queue_limits(LIMIT, 1 << 20);
    b.add_peer(NodeId(1), a.local_addr());
    a.add_peer(NodeId(3), stuck.local_addr().unwrap());
    let mut x = raw_accept(&stuck, 77);
    wait_until("connected to node 3", || a.connected(NodeId(3)));

    for v in 0..N {
        b.send(NodeId(1), frame(v));
    }
    // The reader thread never waited: every frame from node 2 delivered.
    wait_until("node 2's frames delivered", || {
        received(&ia, 2).len() == N as usize
    });
    assert_eq!(received(&ia, 2), (0..N).collect::<Vec<_>>());
    assert!(a.failed(NodeId(3)), "node 3 declared failed");
    assert_eq!(a.pending(NodeId(3)), 0, "its frames discarded");
    assert_eq!(logged("DECLARED FAILED"), 1, "declared failed once, loudly");
    assert!(logged("frame for a peer declared failed discarded") >= 1);
    // What node 3 got before it was declared failed is a prefix of the
    // stream (at most the hard bound), with no hole; then its connection
    // was closed.
    let mut got = Vec::new();
    while let Some((seq, v)) = x.read_frame() {
        assert_eq!(seq, got.len() as u64 + 1);
        got.push(v);
    }
    assert!(
        got.len() <= LIMIT * HARD_LIMIT_FACTOR + 1,
        "{} frames",
        got.len()
    );
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());

    // The same process of node 3 is refused: connection closed after the
    // hello, no frame.
    a.send(NodeId(3), frame(5000));
    let mut same = raw_accept(&stuck, 77);
    assert_eq!(same.read_frame(), None, "a frame for the failed process");
    assert!(a.failed(NodeId(3)));

    // A restarted node 3 (new incarnation) is sent frames again.
    let mut fresh = raw_accept(&stuck, 78);
    wait_until("node 3 no longer failed", || !a.failed(NodeId(3)));
    a.send(NodeId(3), frame(6000));
    let (_, v) = fresh.read_frame().expect("a frame for the new process");
    assert_eq!(v, 6000);
    assert!(logged("a new process of the peer declared failed connected") >= 1);
    let _ = fresh.s.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// End to end: a stalled link slows only its own senders.
// ---------------------------------------------------------------------------

/// A TCP proxy that forwards to `target` until paused; while paused it
/// reads nothing (so the sender's frames stay unacknowledged).
struct Proxy {
    addr: SocketAddr,
    paused: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind(any_port()).unwrap();
        let addr = l.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let p2 = paused.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let Ok(t) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = (c.set_nodelay(true), t.set_nodelay(true));
                Self::pump(c.try_clone().unwrap(), t.try_clone().unwrap(), p2.clone());
                Self::pump(t, c, p2.clone());
            }
        });
        Proxy { addr, paused }
    }

    fn pump(mut from: TcpStream, mut to: TcpStream, paused: Arc<AtomicBool>) {
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                while paused.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(2));
                }
                match from.read(&mut buf) {
                    Ok(n) if n > 0 && to.write_all(&buf[..n]).is_ok() => {}
                    _ => break,
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

/// `count` resource names whose directory node is `dir` among `members`.
fn names_with_dir(members: &[NodeId], dir: u32, prefix: &str, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|n| {
            dlm::node::dir_node(members, &ResName::new(n.as_bytes()).unwrap()) == Some(NodeId(dir))
        })
        .take(count)
        .collect()
}

#[test]
fn a_stalled_link_slows_only_its_senders_and_every_request_is_granted_after() {
    const LIMIT: usize = 64;
    const N: usize = 300;
    let dlms: Vec<Dlm> = (1..=3)
        .map(|i| {
            let mut cfg = DlmConfig::new(NodeId(i), any_port(), HashMap::new(), key());
            cfg.shards = 4;
            Dlm::start(cfg).unwrap()
        })
        .collect();
    // Node 1 reaches node 3 through the proxy; every other link is direct.
    let proxy = Proxy::start(dlms[2].local_addr());
    for a in &dlms {
        for b in &dlms {
            let addr = if (a.node(), b.node()) == (NodeId(1), NodeId(3)) {
                proxy.addr
            } else {
                b.local_addr()
            };
            a.add_peer(b.node(), addr);
        }
    }
    let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
    let ls: Vec<Lockspace> = dlms
        .iter()
        .map(|d| d.join("bp", StaticMembership::new(&ids).as_ref()).unwrap())
        .collect();
    wait_until("initial recovery", || ls.iter().all(|l| l.is_running()));
    // Node 3 masters these (it used them first) and node 1 is their
    // directory node, so node 1's callers send their requests to node 3
    // themselves.
    let on3 = names_with_dir(&ids, 1, "on3", N);
    for n in &on3 {
        let id = ls[2].lock(n.as_bytes(), Mode::Ex, Flags::empty()).unwrap();
        ls[2].unlock(id, Flags::empty(), None).unwrap();
    }
    // Nodes 1 and 2 direct and master these.
    let on12: Vec<String> = names_with_dir(&ids, 1, "on1", 3)
        .into_iter()
        .chain(names_with_dir(&ids, 2, "on2", 3))
        .collect();
    for (i, n) in on12.iter().enumerate() {
        let l = &ls[i % 2];
        let id = l.lock(n.as_bytes(), Mode::Ex, Flags::empty()).unwrap();
        l.unlock(id, Flags::empty(), None).unwrap();
    }

    dlms[0].transport().set_queue_limits(LIMIT, 1 << 20);
    proxy.paused.store(true, Ordering::SeqCst);
    // A caller on node 1 asks node 3 for N locks (callbacks).
    let granted = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let asker = {
        let (l, granted, issued, on3) =
            (ls[0].clone(), granted.clone(), issued.clone(), on3.clone());
        thread::spawn(move || {
            for n in &on3 {
                let g = granted.clone();
                l.lock_async(
                    n.as_bytes(),
                    Mode::Ex,
                    Flags::empty(),
                    None,
                    Arc::new(move |c: dlm::Completion| {
                        assert_eq!(c.status, dlm::Status::Granted(Mode::Ex));
                        g.fetch_add(1, Ordering::SeqCst);
                    }),
                    None,
                )
                .unwrap();
                issued.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_until("node 1's queue to node 3 past its limit", || {
        dlms[0].transport().pending(NodeId(3)) > LIMIT
    });
    thread::sleep(Duration::from_millis(300));
    // (The proxy may have forwarded a few frames before it paused.)
    let (stalled_at, granted_before) = (
        issued.load(Ordering::SeqCst),
        granted.load(Ordering::SeqCst),
    );
    assert!(
        stalled_at < N as u64,
        "the caller should wait for node 3 to take its frames"
    );
    assert!(!dlms[0].transport().failed(NodeId(3)));

    // Locks among nodes 1 and 2 keep working, on every shard.
    let (done_tx, done_rx) = mpsc::channel();
    {
        let (l1, l2, names) = (ls[0].clone(), ls[1].clone(), on12.clone());
        thread::spawn(move || {
            for round in 0..20 {
                for n in &names {
                    let (me, other) = if round % 2 == 0 {
                        (&l1, &l2)
                    } else {
                        (&l2, &l1)
                    };
                    let id = me.lock(n.as_bytes(), Mode::Ex, Flags::empty()).unwrap();
                    assert!(matches!(
                        other.lock(n.as_bytes(), Mode::Pr, Flags::NOQUEUE),
                        Err(dlm::DlmError::Again)
                    ));
                    me.unlock(id, Flags::empty(), None).unwrap();
                }
            }
            done_tx.send(()).unwrap();
        });
    }
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("locks between nodes 1 and 2 hung while node 1's link to node 3 stalled");
    assert_eq!(
        issued.load(Ordering::SeqCst),
        stalled_at,
        "the caller still waits"
    );
    assert_eq!(granted.load(Ordering::SeqCst), granted_before);

    // The link flows again: every request reaches node 3 and is granted.
    proxy.paused.store(false, Ordering::SeqCst);
    asker.join().unwrap();
    wait_until("every lock granted", || {
        granted.load(Ordering::SeqCst) == N as u64
    });
    assert!(!dlms[0].transport().failed(NodeId(3)));
    // And node 3 saw them all: another node's NOQUEUE request is refused.
    for n in &on3[..5] {
        assert!(matches!(
            ls[1].lock(n.as_bytes(), Mode::Pr, Flags::NOQUEUE),
            Err(dlm::DlmError::Again)
        ));
    }
}
