//! `cargo run --release -p dlm --example oneway_echo`: what the transport's
//! one-way connections cost a round trip, measured on a plain TCP echo
//! (no DLM). Two processes on loopback; 64-byte messages (a DLM request
//! frame with its tag), TCP_NODELAY, blocking reads:
//!
//! - `same`: the answer comes back on the connection the request went out
//!   on, as in the bench's echo baseline. The answer carries the kernel's
//!   acknowledgement of the request.
//! - `oneway`: the answer comes back on a second connection, so each
//!   connection carries messages one way, as the DLM's do (a node writes
//!   frames only on the connection it made). Each message then gets a pure
//!   TCP acknowledgement of its own (`nstat`: 4 segments per round trip
//!   instead of 2), made and processed on the critical path.
//!
//! Batches of 2 000 round trips, taking turns in alternating order, 31
//! rounds; prints the medians. `ONEWAY_ROUNDS=N` changes the rounds.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

const BATCH: u32 = 2000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("answer") {
        answer(args[2].parse().expect("port"));
        return;
    }
    let rounds: usize = std::env::var("ONEWAY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let mut child = std::process::Command::new(&args[0])
        .args(["answer", &port.to_string()])
        .spawn()
        .expect("spawn");
    // Accepted in the order the answering process connects them.
    let mut same = l.accept().expect("accept").0;
    let mut out = l.accept().expect("accept").0;
    let mut back = l.accept().expect("accept").0;
    for s in [&same, &out, &back] {
        s.set_nodelay(true).expect("nodelay");
    }
    let mut buf = [0u8; 64];
    let (mut t_same, mut t_oneway) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for oneway in order {
            let t = Instant::now();
            for _ in 0..BATCH {
                if oneway {
                    out.write_all(&buf).expect("write");
                    back.read_exact(&mut buf).expect("read");
                } else {
                    same.write_all(&buf).expect("write");
                    same.read_exact(&mut buf).expect("read");
                }
            }
            let ns = t.elapsed().as_nanos() / u128::from(BATCH);
            if oneway {
                t_oneway.push(ns)
            } else {
                t_same.push(ns)
            }
        }
    }
    drop((same, out, back));
    child.wait().expect("wait");
    t_same.sort_unstable();
    t_oneway.sort_unstable();
    let (a, b) = (t_same[rounds / 2], t_oneway[rounds / 2]);
    println!(
        "same_ns {a} oneway_ns {b} extra_ns {} ratio {:.2}",
        b as i128 - a as i128,
        b as f64 / a as f64
    );
}

/// The answering process: echoes `same` on itself, and what comes on
/// `out` on `back`.
fn answer(port: u16) {
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s
    };
    let (mut same, mut out, mut back) = (connect(), connect(), connect());
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while same.read_exact(&mut buf).is_ok() {
            if same.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 64];
    while out.read_exact(&mut buf).is_ok() {
        if back.write_all(&buf).is_err() {
            break;
        }
    }
    echo.join().expect("echo thread");
}
