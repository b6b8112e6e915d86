//! Measurements printed by `dlm_tool bench`: the cost of a local lock
//! against a plain mutex, of a remote lock against the TCP round trip, lock
//! ping-pong between two nodes, and local throughput with 1, 2 and 4 threads.
//! Every figure is a median over repeated batches.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Dlm, DlmConfig, DlmError, Flags, Lockspace, Mode, NodeId, StaticMembership};

/// The figures `dlm_tool bench` reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchReport {
    /// Uncontended mutex lock + unlock.
    pub mutex_ns: u64,
    /// Lock + unlock of a resource mastered here.
    pub local_ns: u64,
    /// Lock + unlock of a resource mastered by another process' node.
    pub remote_ns: u64,
    /// Round trip of a small message over loopback TCP.
    pub tcp_rtt_ns: u64,
    /// EX lock hand-overs per second between two nodes.
    pub pingpong_per_s: u64,
    /// Local lock + unlock pairs per second, 1 thread.
    pub local_ops_per_s_1: u64,
    /// Same with 2 threads (distinct resources).
    pub local_ops_per_s_2: u64,
    /// Same with 4 threads.
    pub local_ops_per_s_4: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median per-iteration time of `f` over `rounds` batches of `batch`.
fn per_op_ns(rounds: usize, batch: u64, mut f: impl FnMut()) -> u64 {
    let v = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_nanos() as u64 / batch
        })
        .collect();
    median(v)
}

fn mutex_ns() -> u64 {
    let m = parking_lot::Mutex::new(0u64);
    per_op_ns(51, 10_000, || *std::hint::black_box(&m).lock() += 1)
}

fn start_cluster(n: u32) -> Result<(Vec<Dlm>, Vec<Lockspace>), DlmError> {
    let dlms: Vec<Dlm> = (1..=n)
        .map(|i| {
            Dlm::start(DlmConfig::new(
                NodeId(i),
                "127.0.0.1:0".parse().expect("addr"),
                HashMap::new(),
            ))
        })
        .collect::<Result<_, _>>()?;
    for a in &dlms {
        for b in &dlms {
            a.add_peer(b.node(), b.local_addr());
        }
    }
    let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
    let ls: Vec<Lockspace> = dlms
        .iter()
        .map(|d| d.join("bench", StaticMembership::new(&ids).as_ref()))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    while !ls.iter().all(|l| l.is_running()) {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(DlmError::NotMember);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((dlms, ls))
}

fn lock_unlock(ls: &Lockspace, name: &[u8]) {
    let id = ls.lock(name, Mode::Ex, Flags::empty()).expect("lock");
    ls.unlock(id, Flags::empty(), None).expect("unlock");
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

fn tcp_rtt_ns() -> std::io::Result<u64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 64];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut b = [0u8; 64];
    let v = per_op_ns(51, 200, || {
        c.write_all(&b).expect("write");
        c.read_exact(&mut b).expect("read");
    });
    drop(c);
    let _ = echo.join();
    Ok(v)
}

/// Like ping_pong.c: with `nodes + 1` resources in a ring, every node holds
/// one and takes the next before releasing it, so each node chases the
/// other and every grant is a hand-over. Returns grants per second, all
/// nodes together.
fn pingpong_per_s(ls: &[Lockspace]) -> u64 {
    let ring = ls.len() + 1;
    let rounds: Vec<u64> = (0..3)
        .map(|_| {
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let start = Arc::new(std::sync::Barrier::new(ls.len() + 1));
            let hs: Vec<_> = ls
                .iter()
                .cloned()
                .enumerate()
                .map(|(n, l)| {
                    let (stop, count) = (stop.clone(), count.clone());
                    let start = start.clone();
                    std::thread::spawn(move || {
                        let name = |i: usize| format!("pingpong-{}", i % ring).into_bytes();
                        let mut i = n;
                        let mut held = l.lock(&name(i), Mode::Ex, Flags::empty()).expect("lock");
                        // Everyone holds one resource before anyone chases.
                        start.wait();
                        let mut local = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let next = l
                                .lock(&name(i + 1), Mode::Ex, Flags::empty())
                                .expect("lock");
                            l.unlock(held, Flags::empty(), None).expect("unlock");
                            held = next;
                            i += 1;
                            local += 1;
                        }
                        l.unlock(held, Flags::empty(), None).expect("unlock");
                        count.fetch_add(local, Ordering::Relaxed);
                    })
                })
                .collect();
            start.wait();
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, Ordering::Relaxed);
            let elapsed = t.elapsed();
            for h in hs {
                h.join().expect("bench thread");
            }
            (count.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()) as u64
        })
        .collect();
    median(rounds)
}

/// A resource name whose directory node is `dir` in a cluster of `n`.
fn name_with_dir(n: u32, dir: u32) -> Vec<u8> {
    let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
    (0..)
        .map(|i| format!("remote-{i}").into_bytes())
        .find(|v| {
            crate::node::dir_node(&members, &crate::ResName::new(v).expect("name"))
                == Some(NodeId(dir))
        })
        .expect("some name hashes to every node")
}

/// Runs every measurement (a few seconds).
pub fn run() -> Result<BenchReport, DlmError> {
    let mut r = BenchReport {
        mutex_ns: mutex_ns(),
        ..Default::default()
    };
    {
        let (_d, ls) = start_cluster(1)?;
        for _ in 0..1000 {
            lock_unlock(&ls[0], b"local");
        }
        r.local_ns = per_op_ns(51, 5_000, || lock_unlock(&ls[0], b"local"));
        r.local_ops_per_s_1 = local_ops_per_s(&ls[0], 1);
        r.local_ops_per_s_2 = local_ops_per_s(&ls[0], 2);
        r.local_ops_per_s_4 = local_ops_per_s(&ls[0], 4);
    }
    r.tcp_rtt_ns = tcp_rtt_ns().map_err(DlmError::Ctl)?;
    {
        let (_d, ls) = start_cluster(2)?;
        // Node 2 is directory node and first user, hence master.
        let name = name_with_dir(2, 2);
        lock_unlock(&ls[1], &name);
        for _ in 0..200 {
            lock_unlock(&ls[0], &name);
        }
        r.remote_ns = per_op_ns(51, 100, || lock_unlock(&ls[0], &name));
        r.pingpong_per_s = pingpong_per_s(&ls);
    }
    Ok(r)
}
