//! Attacks on the transport by a process that reaches the DLM port but
//! does not hold the cluster key: hellos claiming a live member's id (its
//! current incarnation and a new one), a captured hello replayed, and
//! well-formed lock frames (captured from the real member) sent after
//! them. Every attempt must be refused and logged (once per address: the
//! log is rate-limited), and nothing may change for the real member: its
//! connection, the cluster's locks and every holder stay as they were.
//! A process that answers at a peer's address without the key gets no
//! frame either.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dlm::driver::transport::auth::{Challenge, Hello, CHALLENGE_LEN, HELLO_LEN, PROOF_LEN};
use dlm::driver::transport::{frame_finish, frame_start, FrameHandler, Transport};
use dlm::{Dlm, DlmConfig, DlmError, Flags, Lockspace, Mode, NodeId};
use dlm::{LockId, StaticMembership};

mod common;
use common::{any_port, capture_log, key, wait_until};

/// Log lines of node `node` refusing a connection.
fn refusals_logged(node: u32) -> Vec<String> {
    common::log_lines(&["dlm connection refused", &format!("node={node} ")])
}

// ---------------------------------------------------------------------------
// A proxy that records what the connector sends on its first connection.
// ---------------------------------------------------------------------------

struct Recorder {
    addr: SocketAddr,
    upstream_bytes: Arc<Mutex<Vec<u8>>>,
}

fn recording_proxy(target: SocketAddr) -> Recorder {
    let l = TcpListener::bind(any_port()).unwrap();
    let addr = l.local_addr().unwrap();
    let rec: Arc<Mutex<Vec<u8>>> = Default::default();
    let rec2 = rec.clone();
    thread::spawn(move || {
        let mut first = true;
        for c in l.incoming() {
            let Ok(down) = c else { return };
            let Ok(up) = TcpStream::connect(target) else {
                continue;
            };
            let _ = (down.set_nodelay(true), up.set_nodelay(true));
            let keep = first.then(|| rec2.clone());
            first = false;
            pump(down.try_clone().unwrap(), up.try_clone().unwrap(), keep);
            pump(up, down, None);
        }
    });
    Recorder {
        addr,
        upstream_bytes: rec,
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, rec: Option<Arc<Mutex<Vec<u8>>>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(r) = &rec {
                        r.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Complete frames (`len u32 | ...`) in `bytes`, whole.
fn whole_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if at + 4 + len > bytes.len() {
            break;
        }
        v.push(bytes[at..at + 4 + len].to_vec());
        at += 4 + len;
    }
    v
}

// ---------------------------------------------------------------------------
// The attacker.
// ---------------------------------------------------------------------------

/// What an attempt got back from the node before it closed the connection.
fn attempt(target: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Written in one go where the node reads in steps: the node may close
    // before reading it all (a reset), which is fine.
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the node did not close the connection: {e}"),
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never closed");
    }
    got
}

fn forged_hello(from: NodeId, inc: u64, to: NodeId) -> Vec<u8> {
    Hello {
        from,
        inc,
        to,
        nonce: rand::random(),
    }
    .encode()
    .to_vec()
}

const A: NodeId = NodeId(41);
const B: NodeId = NodeId(42);
const C: NodeId = NodeId(43);

fn start(id: NodeId) -> Dlm {
    Dlm::start(DlmConfig::new(id, any_port(), HashMap::new(), key())).unwrap()
}

fn counted_bast(ls: &Lockspace, id: LockId) -> Arc<AtomicU64> {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    ls.set_bast(
        id,
        Arc::new(move |_, _| {
            n2.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    n
}

#[test]
fn a_process_without_the_key_changes_nothing() {
    capture_log();
    let dlms = [start(A), start(B), start(C)];
    // B reaches A through a recorder: the attacker's captured traffic.
    let rec = recording_proxy(dlms[0].local_addr());
    dlms[0].add_peer(B, dlms[1].local_addr());
    dlms[0].add_peer(C, dlms[2].local_addr());
    dlms[1].add_peer(A, rec.addr);
    dlms[1].add_peer(C, dlms[2].local_addr());
    dlms[2].add_peer(A, dlms[0].local_addr());
    dlms[2].add_peer(B, dlms[1].local_addr());
    let m = StaticMembership::new(&[A, B, C]);
    let ls: Vec<Lockspace> = dlms
        .iter()
        .map(|d| d.join("atk", m.as_ref()).unwrap())
        .collect();
    wait_until("running", || ls.iter().all(|l| l.is_running()));

    // Holders: B holds "held" EX, A and C hold "shared" PR; B's traffic
    // to A (resources mastered by A) is recorded.
    let held = ls[1].lock(b"held", Mode::Ex, Flags::empty()).unwrap();
    let shared_a = ls[0].lock(b"shared", Mode::Pr, Flags::empty()).unwrap();
    let shared_c = ls[2].lock(b"shared", Mode::Pr, Flags::empty()).unwrap();
    let basts = [
        counted_bast(&ls[1], held),
        counted_bast(&ls[0], shared_a),
        counted_bast(&ls[2], shared_c),
    ];
    for i in 0..40 {
        let id = ls[1]
            .lock(format!("r{i}").as_bytes(), Mode::Ex, Flags::empty())
            .unwrap();
        ls[1].unlock(id, Flags::empty(), None).unwrap();
    }
    let captured = rec.upstream_bytes.lock().unwrap().clone();
    assert!(captured.len() > HELLO_LEN + PROOF_LEN);
    let captured_hello = &captured[..HELLO_LEN + PROOF_LEN];
    let frames = whole_frames(&captured[HELLO_LEN + PROOF_LEN..]);
    assert!(frames.len() >= 10, "B's lock frames to A were captured");
    let lock_frames: Vec<u8> = frames.concat();

    // What must not change.
    let a_conn_from_b = dlms[0].transport().inbound_conn(B).expect("B -> A up");
    let b_sent = dlms[1].transport().sent(A);
    let b_inc = dlms[1].transport().incarnation();
    let gens: Vec<u64> = ls.iter().map(|l| l.generation()).collect();
    let resources_a = ls[0].resource_count();
    let refused_before = dlms[0].transport().refused();

    let target = dlms[0].local_addr();
    let attempts: Vec<(&str, Vec<u8>)> = vec![
        (
            "B's id, its live incarnation, a made-up proof, then lock frames",
            [
                forged_hello(B, b_inc, A),
                vec![7; PROOF_LEN],
                lock_frames.clone(),
            ]
            .concat(),
        ),
        (
            "B's id, a new incarnation, then lock frames",
            [
                forged_hello(B, rand::random(), A),
                vec![0; PROOF_LEN],
                lock_frames.clone(),
            ]
            .concat(),
        ),
        (
            "B's captured hello and proof replayed, then its frames",
            [captured_hello, &lock_frames[..]].concat(),
        ),
        (
            "B's id and lock frames without any proof",
            [forged_hello(B, b_inc, A), lock_frames.clone()].concat(),
        ),
        (
            "C's id, an old incarnation (zero)",
            [
                forged_hello(C, 0, A),
                vec![1; PROOF_LEN],
                lock_frames.clone(),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in &attempts {
        let got = attempt(target, bytes);
        // The challenge, nothing more: no welcome, no acknowledgement.
        assert_eq!(got.len(), CHALLENGE_LEN, "{what}: got {} bytes", got.len());
        let ch = Challenge::decode(&got[..].try_into().unwrap()).expect("a challenge");
        assert_eq!(ch.inc, dlms[0].transport().incarnation());
    }
    let refused = dlms[0].transport().refused() - refused_before;
    assert_eq!(refused, attempts.len() as u64, "every attempt refused");

    // Nothing changed for the real member, the locks or their holders.
    let now = dlms[0]
        .transport()
        .inbound_conn(B)
        .expect("B -> A still up");
    assert!(
        Arc::ptr_eq(&now, &a_conn_from_b),
        "B's connection to A was not replaced"
    );
    assert!(dlms[1].transport().connected(A));
    assert_eq!(dlms[1].transport().incarnation(), b_inc);
    assert_eq!(dlms[1].transport().sent(A), b_sent);
    assert_eq!(ls.iter().map(|l| l.generation()).collect::<Vec<_>>(), gens);
    assert_eq!(
        ls[0].resource_count(),
        resources_a,
        "no resource made by the frames"
    );
    for (i, b) in basts.iter().enumerate() {
        assert_eq!(b.load(Ordering::SeqCst), 0, "holder {i} was not disturbed");
    }
    assert!(matches!(
        ls[2].lock(b"held", Mode::Ex, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    assert!(matches!(
        ls[2].lock(b"shared", Mode::Ex, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    // And the cluster goes on over the same connection.
    ls[1].unlock(held, Flags::empty(), None).unwrap();
    let id = ls[2].lock(b"held", Mode::Ex, Flags::empty()).unwrap();
    ls[2].unlock(id, Flags::empty(), None).unwrap();
    for i in 0..10 {
        let id = ls[1]
            .lock(format!("after{i}").as_bytes(), Mode::Ex, Flags::empty())
            .unwrap();
        ls[1].unlock(id, Flags::empty(), None).unwrap();
    }
    ls[0].unlock(shared_a, Flags::empty(), None).unwrap();
    ls[2].unlock(shared_c, Flags::empty(), None).unwrap();
    let still = dlms[0].transport().inbound_conn(B).expect("B -> A up");
    assert!(Arc::ptr_eq(&still, &a_conn_from_b));

    // Logged, once for the attacker's address (rate-limited).
    let lines = refusals_logged(A.0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("127.0.0.1"), "{}", lines[0]);
    assert!(lines[0].contains("failed authentication"), "{}", lines[0]);
}

#[test]
fn a_fake_peer_at_a_members_address_gets_no_frame() {
    capture_log();
    const ME: NodeId = NodeId(57);
    // "Node 41" answers at its address, without the key.
    let l = TcpListener::bind(any_port()).unwrap();
    let fake = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let got2 = got.clone();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut s) = c else { return };
            let mut h = [0u8; HELLO_LEN];
            if s.read_exact(&mut h).is_err() {
                continue;
            }
            let ch = Challenge {
                inc: 5,
                nonce: rand::random(),
            };
            let _ = s.write_all(&ch.encode());
            let mut proof = [0u8; PROOF_LEN];
            let _ = s.read_exact(&mut proof);
            // A welcome it cannot sign.
            let _ = s.write_all(&[0x55; 40]);
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            got2.lock().unwrap().push(rest);
        }
    });
    let handler: FrameHandler = Arc::new(|_, _: &[u8]| {});
    let t = Transport::start(ME, any_port(), &HashMap::new(), key(), handler).unwrap();
    t.add_peer(A, fake);
    let mut f = frame_start(16);
    f.extend_from_slice(b"secret payload!!");
    frame_finish(&mut f);
    t.send(A, f);
    wait_until("two attempts refused", || t.refused() >= 2);
    assert!(!t.connected(A));
    assert_eq!(t.pending(A), 1, "the frame waits for the real node");
    wait_until("the fake saw the connections end", || {
        got.lock().unwrap().len() >= 2
    });
    for rest in got.lock().unwrap().iter() {
        assert!(
            rest.is_empty(),
            "the fake got {} bytes after its welcome",
            rest.len()
        );
    }
    let lines = refusals_logged(ME.0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(&fake.to_string()), "{}", lines[0]);
}

#[test]
fn a_flood_of_silent_connections_costs_a_bounded_number_of_threads() {
    use dlm::driver::transport::MAX_GREETING_PER_ADDR;
    let handler: FrameHandler = Arc::new(|_, _: &[u8]| {});
    let t = Transport::start(NodeId(71), any_port(), &HashMap::new(), key(), handler).unwrap();
    // Connections that never say hello: the first MAX are held (waiting
    // for their hello), the rest closed at once.
    let flood: Vec<TcpStream> = (0..MAX_GREETING_PER_ADDR + 8)
        .map(|_| TcpStream::connect(t.local_addr()).unwrap())
        .collect();
    wait_until("the extra connections refused", || t.refused() >= 8);
    let closed = flood
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            match (&**s).read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => panic!("the node wrote to a connection that said nothing"),
            }
        })
        .count();
    assert_eq!(closed, 8, "the others wait for their hello");
    // Once they are gone, a peer with the key gets in.
    drop(flood);
    wait_until("a real peer served", || {
        let mut s = TcpStream::connect(t.local_addr()).unwrap();
        dlm::driver::transport::connector_handshake(&mut s, &key(), NodeId(72), 9, NodeId(71))
            .is_ok()
    });
}
