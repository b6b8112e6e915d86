//! The transport's reliable delivery on loopback: TCP connections between
//! live peers are broken under traffic (by the transport's fault hook and by
//! an in-between proxy that loses the bytes it holds), and every frame must
//! still arrive exactly once and in order; a restarted peer must get no
//! frame meant for its previous process; and three `Dlm`s keep excluding
//! each other, with no request left hanging, while their connections are
//! cut again and again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use dlm::driver::transport::{connector_handshake, FrameHandler, InConn, Transport, TAG_LEN};
use dlm::{Dlm, DlmConfig, Flags, Lockspace, Mode, NodeId, StaticMembership};

mod common;
use common::{any_port, frame, key, received, recorder, wait_until, Inbox};

fn assert_exactly_once_in_order(got: &[u64], want: std::ops::Range<u64>) {
    let want: Vec<u64> = want.collect();
    if got != want.as_slice() {
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "got {} frames, want {}; first difference at {:?}; got {:?}",
            got.len(),
            want.len(),
            first_bad,
            &got[..got.len().min(64)]
        );
    }
}

/// Two transports sending to each other while `cut` breaks connections.
fn exchange_under_cuts(
    a: &Transport,
    b: &Transport,
    inbox_a: &Inbox,
    inbox_b: &Inbox,
    n: u64,
    cut: impl Fn(u32) + Send + Sync,
) {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0;
            while !done.load(Ordering::Relaxed) {
                cut(k);
                k += 1;
                thread::sleep(Duration::from_millis(3 + u64::from(k % 7)));
            }
        });
        let send = move |t: &Transport, to: u32| {
            for v in 0..n {
                t.send(NodeId(to), frame(v));
                if v % 64 == 0 {
                    // Let the cuts land in the middle of the traffic.
                    thread::sleep(Duration::from_micros(200));
                }
            }
        };
        let ha = s.spawn(move || send(a, 2));
        let hb = s.spawn(move || send(b, 1));
        ha.join().unwrap();
        hb.join().unwrap();
        thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::Relaxed);
    });
    wait_until("every frame delivered", || {
        received(inbox_b, 1).len() as u64 >= n && received(inbox_a, 2).len() as u64 >= n
    });
    // Extra frames (duplicates) would show up now too.
    thread::sleep(Duration::from_millis(100));
    assert_exactly_once_in_order(&received(inbox_b, 1), 0..n);
    assert_exactly_once_in_order(&received(inbox_a, 2), 0..n);
    wait_until("every frame acknowledged", || {
        a.pending(NodeId(2)) == 0 && b.pending(NodeId(1)) == 0
    });
}

fn pair() -> (Transport, Transport, Inbox, Inbox) {
    let (ia, ha) = recorder();
    let (ib, hb) = recorder();
    let a = Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha).unwrap();
    let b = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), hb).unwrap();
    a.add_peer(NodeId(2), b.local_addr());
    b.add_peer(NodeId(1), a.local_addr());
    (a, b, ia, ib)
}

#[test]
fn frames_arrive_exactly_once_in_order_across_broken_connections() {
    let (a, b, ia, ib) = pair();
    exchange_under_cuts(&a, &b, &ia, &ib, 20_000, |k| {
        if k % 2 == 0 {
            a.break_connections()
        } else {
            b.break_connections()
        }
    });
}

/// A TCP proxy on loopback that forwards to `target` and, when cut, drops
/// its connections together with the bytes it holds in flight.
struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    cuts: AtomicU64,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let l = TcpListener::bind(any_port()).unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Default::default();
        let c2 = conns.clone();
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let Ok(t) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = (c.set_nodelay(true), t.set_nodelay(true));
                let mut reg = c2.lock().unwrap();
                reg.push(c.try_clone().unwrap());
                reg.push(t.try_clone().unwrap());
                drop(reg);
                Self::pump(c.try_clone().unwrap(), t.try_clone().unwrap());
                Self::pump(t, c);
            }
        });
        Proxy {
            addr,
            conns,
            cuts: AtomicU64::new(0),
        }
    }

    fn pump(mut from: TcpStream, mut to: TcpStream) {
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }

    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.cuts.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn frames_survive_a_proxy_that_loses_bytes_in_flight() {
    let (ia, ha) = recorder();
    let (ib, hb) = recorder();
    let a = Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha).unwrap();
    let b = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), hb).unwrap();
    // Both directions go through proxies.
    let to_b = Proxy::start(b.local_addr());
    let to_a = Proxy::start(a.local_addr());
    a.add_peer(NodeId(2), to_b.addr);
    b.add_peer(NodeId(1), to_a.addr);
    exchange_under_cuts(&a, &b, &ia, &ib, 20_000, |k| {
        if k % 2 == 0 {
            to_b.cut()
        } else {
            to_a.cut()
        }
    });
    assert!(
        to_b.cuts.load(Ordering::Relaxed) > 2,
        "the test cut nothing"
    );
}

/// Binds a transport to `addr`, retrying while the previous process's
/// listener is still closing.
fn start_at(id: u32, addr: SocketAddr, h: FrameHandler) -> Transport {
    let t = Instant::now();
    loop {
        match Transport::start(NodeId(id), addr, &HashMap::new(), key(), h.clone()) {
            Ok(tr) => return tr,
            Err(_) if t.elapsed() < Duration::from_secs(30) => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}

#[test]
fn a_restarted_receiver_gets_no_frame_meant_for_its_previous_process() {
    let (ia, ha) = recorder();
    let a = Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha).unwrap();
    // B1 stalls on frame 50, so frames 51.. are written to it but never
    // delivered (nor acknowledged) when it dies.
    let (ib1, _) = recorder();
    let stall = Arc::new(Mutex::new(()));
    let held = stall.lock().unwrap();
    let reached = Arc::new(AtomicBool::new(false));
    let h1: FrameHandler = {
        let (ib1, stall, reached) = (ib1.clone(), stall.clone(), reached.clone());
        Arc::new(move |from, p: &[u8]| {
            let v = u64::from_le_bytes(p.try_into().unwrap());
            ib1.lock().unwrap().entry(from).or_default().push(v);
            if v == 50 {
                reached.store(true, Ordering::SeqCst);
                drop(stall.lock().unwrap());
            }
        })
    };
    let b1 = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), h1).unwrap();
    let b_addr = b1.local_addr();
    a.add_peer(NodeId(2), b_addr);
    for v in 1..=100 {
        a.send(NodeId(2), frame(v));
    }
    wait_until("B1 stalled on frame 50", || reached.load(Ordering::SeqCst));
    // Every frame is written by now: A wrote the queue on connecting and
    // each later frame directly in `send`.
    b1.shutdown();
    drop(held);
    drop(b1);
    // Frames A writes before it notices B1 is gone count as B1's and are
    // dropped when B2 answers (by design); these must be B2's.
    wait_until("A noticed B1 is gone", || !a.connected(NodeId(2)));
    let (ib2, h2) = recorder();
    let b2 = start_at(2, b_addr, h2);
    b2.add_peer(NodeId(1), a.local_addr());
    for v in 101..=110 {
        a.send(NodeId(2), frame(v));
    }
    wait_until("B2 got the new frames", || received(&ib2, 1).len() >= 10);
    // And B2 -> A works as well.
    b2.send(NodeId(1), frame(7));
    wait_until("A got B2's frame", || received(&ia, 2) == vec![7]);
    thread::sleep(Duration::from_millis(100));
    assert_exactly_once_in_order(&received(&ib2, 1), 101..111);
    assert!(received(&ib1, 1).len() >= 50);
    wait_until("A's queue empty", || a.pending(NodeId(2)) == 0);
}

#[test]
fn a_restarted_sender_starts_a_new_stream() {
    let (ib, hb) = recorder();
    let b = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), hb).unwrap();
    let (_, ha1) = recorder();
    let a1 = Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha1).unwrap();
    a1.add_peer(NodeId(2), b.local_addr());
    for v in 0..50 {
        a1.send(NodeId(2), frame(v));
    }
    wait_until("B got A1's frames", || received(&ib, 1).len() == 50);
    drop(a1);
    // The new process numbers its frames from 1 again: they are not
    // duplicates of A1's.
    let (_, ha2) = recorder();
    let a2 = Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha2).unwrap();
    a2.add_peer(NodeId(2), b.local_addr());
    for v in 1000..1050 {
        a2.send(NodeId(2), frame(v));
    }
    wait_until("B got A2's frames", || received(&ib, 1).len() >= 100);
    thread::sleep(Duration::from_millis(100));
    let got = received(&ib, 1);
    assert_exactly_once_in_order(&got[..50], 0..50);
    assert_exactly_once_in_order(&got[50..], 1000..1050);
}

#[test]
fn garbage_on_the_port_is_refused_and_the_transport_keeps_serving() {
    let (_ia, ha) = recorder();
    let (ib, hb) = recorder();
    let b = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), hb).unwrap();
    for junk in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        &[0u8; 3][..],
        &[0xffu8; 64][..],
    ] {
        let mut s = TcpStream::connect(b.local_addr()).unwrap();
        let _ = s.write_all(junk);
    }
    let a = Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha).unwrap();
    a.add_peer(NodeId(2), b.local_addr());
    a.send(NodeId(2), frame(42));
    wait_until("the real frame", || received(&ib, 1) == vec![42]);
}

// ---------------------------------------------------------------------------
// A caller leading an inbound connection reads its answer itself.
// ---------------------------------------------------------------------------

/// Frames received with the thread that delivered each.
type Deliveries = Arc<Mutex<Vec<(u64, thread::ThreadId)>>>;

/// Records each frame and its thread, then kicks the leader of `led` (as
/// a completed lock does), so that a frame delivered by another thread
/// still ends the leader's wait and shows up in the checks.
fn thread_recorder(led: Arc<OnceLock<Arc<InConn>>>) -> (Deliveries, FrameHandler) {
    let got: Deliveries = Default::default();
    let g2 = got.clone();
    let h: FrameHandler = Arc::new(move |_from, payload: &[u8]| {
        let v = u64::from_le_bytes(payload.try_into().expect("8-byte payload"));
        g2.lock().unwrap().push((v, thread::current().id()));
        if let Some(c) = led.get() {
            c.kick();
        }
    });
    (got, h)
}

fn delivered_by(got: &Deliveries, v: u64) -> Option<thread::ThreadId> {
    got.lock().unwrap().iter().find(|d| d.0 == v).map(|d| d.1)
}

/// A (node 1) records what B (node 2) sends it; B's connection to A is up.
fn leading_pair() -> (Transport, Transport, Deliveries, Arc<InConn>) {
    let led = Arc::new(OnceLock::new());
    let (got, ha) = thread_recorder(led.clone());
    let (_, hb) = recorder();
    let a = Transport::start(NodeId(1), any_port(), &HashMap::new(), key(), ha).unwrap();
    let b = Transport::start(NodeId(2), any_port(), &HashMap::new(), key(), hb).unwrap();
    a.add_peer(NodeId(2), b.local_addr());
    b.add_peer(NodeId(1), a.local_addr());
    b.send(NodeId(1), frame(0));
    wait_until("first frame", || delivered_by(&got, 0).is_some());
    let conn = a.inbound_conn(NodeId(2)).expect("B's connection to A");
    let _ = led.set(conn.clone());
    (a, b, got, conn)
}

#[test]
fn a_leading_caller_delivers_its_answer_itself_and_the_reader_takes_over_after() {
    let (_a, b, got, conn) = leading_pair();
    let me = thread::current().id();
    let reader = delivered_by(&got, 0).unwrap();
    assert_ne!(reader, me, "no lead yet: the reader thread delivers");
    for round in 1..=20u64 {
        let lead = conn.lead().expect("nobody else leads");
        assert!(conn.lead().is_none(), "one leader at a time");
        b.send(NodeId(1), frame(round));
        let sleeping = AtomicBool::new(false);
        lead.wait(&sleeping, || delivered_by(&got, round).is_some());
        drop(lead);
        assert_eq!(
            delivered_by(&got, round),
            Some(me),
            "round {round}: the answer was delivered by another thread"
        );
    }
    // No lead now: what B sends later still arrives, by the reader thread
    // once the connection is no longer parked.
    b.send(NodeId(1), frame(100));
    wait_until("a frame sent after the leads", || {
        delivered_by(&got, 100).is_some()
    });
    assert_ne!(delivered_by(&got, 100), Some(me));
    let values: Vec<u64> = got.lock().unwrap().iter().map(|d| d.0).collect();
    let mut want: Vec<u64> = (0..=20).collect();
    want.push(100);
    assert_eq!(values, want, "every frame exactly once, in order");
}

/// Leads `conn` until `done()`, while another thread runs `wake` once the
/// leader sleeps; `wake` must end the wait. A leader still asleep 30 s
/// later is freed by a kick and fails the test (instead of hanging it).
fn assert_wake_ends_lead(conn: &Arc<InConn>, done: impl Fn() -> bool, wake: impl FnOnce() + Send) {
    let lead = conn.lead().expect("nobody else leads");
    let (sleeping, returned, rescued) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    thread::scope(|s| {
        s.spawn(|| {
            wait_until("the leader sleeps", || sleeping.load(Ordering::SeqCst));
            wake();
            let t = Instant::now();
            while !returned.load(Ordering::SeqCst) {
                if t.elapsed() > Duration::from_secs(30) {
                    rescued.store(true, Ordering::SeqCst);
                    conn.kick();
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        lead.wait(&sleeping, || done() || rescued.load(Ordering::SeqCst));
        returned.store(true, Ordering::SeqCst);
    });
    assert!(!rescued.load(Ordering::SeqCst), "the leader was not woken");
}

#[test]
fn a_leader_is_woken_by_a_kick_and_by_a_broken_connection() {
    let (a, b, got, conn) = leading_pair();
    // Its answer came another way: whoever completes it kicks the leader.
    let done = AtomicBool::new(false);
    assert_wake_ends_lead(
        &conn,
        || done.load(Ordering::SeqCst),
        || {
            done.store(true, Ordering::SeqCst);
            conn.kick();
        },
    );
    // The connection breaks under a leader waiting for something that will
    // never come on it: the leader returns (the caller then waits as usual).
    assert_wake_ends_lead(&conn, || false, || a.break_connections());
    assert!(conn.lead().is_none(), "a broken connection cannot be led");
    // B reconnects and its frames still arrive, on the new connection.
    b.send(NodeId(1), frame(7));
    wait_until("frame after the break", || delivered_by(&got, 7).is_some());
}

// ---------------------------------------------------------------------------
// End to end: three DLM nodes, connections cut repeatedly mid-traffic.
// ---------------------------------------------------------------------------

fn cluster(n: u32) -> (Vec<Dlm>, Vec<Lockspace>) {
    let dlms: Vec<Dlm> = (1..=n)
        .map(|i| {
            let mut cfg = DlmConfig::new(NodeId(i), any_port(), HashMap::new(), key());
            cfg.shards = 4;
            Dlm::start(cfg).unwrap()
        })
        .collect();
    for a in &dlms {
        for b in &dlms {
            a.add_peer(b.node(), b.local_addr());
        }
    }
    let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
    let ls: Vec<Lockspace> = dlms
        .iter()
        .map(|d| d.join("cut", StaticMembership::new(&ids).as_ref()).unwrap())
        .collect();
    wait_until("initial recovery", || ls.iter().all(|l| l.is_running()));
    (dlms, ls)
}

#[test]
fn dlm_locks_stay_exclusive_and_complete_while_connections_break() {
    /// Each worker takes the lock at least this often...
    const ITERS: u64 = 150;
    /// ... and goes on until the cutter has broken connections this often,
    /// however fast the machine is (a fast run once ended after 3 cuts).
    const MIN_CUTS: u64 = 10;
    const THREADS_PER_NODE: usize = 2;
    let (dlms, ls) = cluster(3);
    let holder = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let cuts = Arc::new(AtomicU64::new(0));
    let stop_cuts = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let mut workers = Vec::new();
    for (n, l) in ls.iter().enumerate() {
        for t in 0..THREADS_PER_NODE {
            let (l, holder, counter, cuts, done) = (
                l.clone(),
                holder.clone(),
                counter.clone(),
                cuts.clone(),
                done_tx.clone(),
            );
            workers.push(thread::spawn(move || {
                let mut i = 0u64;
                while i < ITERS || cuts.load(Ordering::SeqCst) < MIN_CUTS {
                    let id = l.lock(b"counter", Mode::Ex, Flags::empty()).unwrap();
                    assert!(
                        !holder.swap(true, Ordering::SeqCst),
                        "double grant of the EX lock"
                    );
                    counter.fetch_add(1, Ordering::SeqCst);
                    // Traffic on other resources (remote and local masters).
                    let other = format!("r{}-{}", (n + t) % 5, i % 3);
                    let p = l.lock(other.as_bytes(), Mode::Pr, Flags::empty()).unwrap();
                    l.unlock(p, Flags::empty(), None).unwrap();
                    holder.store(false, Ordering::SeqCst);
                    l.unlock(id, Flags::empty(), None).unwrap();
                    i += 1;
                }
                done.send(()).unwrap();
                i
            }));
        }
    }
    drop(done_tx);
    {
        let (stop, cuts) = (stop_cuts.clone(), cuts.clone());
        let dlms: Vec<&Dlm> = dlms.iter().collect();
        thread::scope(|s| {
            let h = s.spawn(|| {
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(4 + (k % 5) as u64 * 3));
                    dlms[k % dlms.len()].break_connections();
                    cuts.fetch_add(1, Ordering::SeqCst);
                    k += 1;
                }
            });
            for _ in 0..ls.len() * THREADS_PER_NODE {
                // A lock request that hangs shows up here.
                done_rx
                    .recv_timeout(Duration::from_secs(120))
                    .expect("a worker hung: a lock request never completed");
            }
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap();
        });
    }
    let iterations: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(iterations >= ITERS * (ls.len() * THREADS_PER_NODE) as u64);
    assert_eq!(counter.load(Ordering::SeqCst), iterations);
    assert!(cuts.load(Ordering::SeqCst) >= MIN_CUTS);
}

#[test]
fn garbage_frames_after_a_valid_hello_are_dropped_and_locks_still_work() {
    let (dlms, ls) = cluster(2);
    // A client speaking the transport protocol (hello with the key,
    // numbered and tagged frames) as node 9, which is in no lockspace, with
    // garbage payloads.
    let mut s = TcpStream::connect(dlms[0].local_addr()).unwrap();
    let (_, delivered, mut mac) =
        connector_handshake(&mut s, &key(), NodeId(9), 0x1234_5678, dlms[0].node()).unwrap();
    assert_eq!(delivered, 0, "nothing delivered yet");
    let mut seed = 12345u64;
    for seq in 1..300u64 {
        let len = (seq % 150) as usize;
        let mut f: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        if len > 8 && seq % 3 == 0 {
            // Looks like lockspace "cut", shard 0, then noise.
            f[..6].copy_from_slice(&[3, b'c', b'u', b't', 0, 0]);
        }
        let mut rec = (8 + (len + TAG_LEN) as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(&f);
        let tag = mac.seal_frame(&rec);
        rec.extend_from_slice(&tag);
        s.write_all(&rec).unwrap();
    }
    // A frame claiming to be huge closes that connection only.
    let _ = s.write_all(&u32::MAX.to_le_bytes());
    drop(s);
    thread::sleep(Duration::from_millis(50));
    let id = ls[1]
        .lock(b"still-works", Mode::Ex, Flags::empty())
        .unwrap();
    assert!(matches!(
        ls[0].lock(b"still-works", Mode::Ex, Flags::NOQUEUE),
        Err(dlm::DlmError::Again)
    ));
    ls[1].unlock(id, Flags::empty(), None).unwrap();
}
