//! `cargo run --release -p dlm --example remote_loop [SECONDS]`: remote
//! lock + unlock in a loop for SECONDS (default 5) between two nodes of
//! one process on loopback, printing the time per pair every second: a
//! steady load to look at with `perf`, `strace -f -T` and the like.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use dlm::{ClusterKey, Dlm, DlmConfig, Flags, Mode, NodeId, ResName, StaticMembership};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .map_or(5, |s| s.parse().expect("seconds"));
    let key = ClusterKey::new(&[7; 32]).unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let d1 = Dlm::start(DlmConfig::new(NodeId(1), any, HashMap::new(), key.clone())).unwrap();
    let d2 = Dlm::start(DlmConfig::new(NodeId(2), any, HashMap::new(), key)).unwrap();
    d1.add_peer(NodeId(2), d2.local_addr());
    d2.add_peer(NodeId(1), d1.local_addr());
    let ids = [NodeId(1), NodeId(2)];
    let l1 = d1
        .join("loop", StaticMembership::new(&ids).as_ref())
        .unwrap();
    let l2 = d2
        .join("loop", StaticMembership::new(&ids).as_ref())
        .unwrap();
    while !(l1.is_running() && l2.is_running()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Directory node 2, used there first: node 2 masters it.
    let name = (0..)
        .map(|i| format!("remote-{i}"))
        .find(|n| {
            dlm::node::dir_node(&ids, &ResName::new(n.as_bytes()).unwrap()) == Some(NodeId(2))
        })
        .unwrap();
    let id = l2.lock(name.as_bytes(), Mode::Ex, Flags::empty()).unwrap();
    l2.unlock(id, Flags::empty(), None).unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let (t, mut n) = (Instant::now(), 0u64);
        while t.elapsed() < Duration::from_secs(1) {
            for _ in 0..100 {
                let id = l1.lock(name.as_bytes(), Mode::Ex, Flags::empty()).unwrap();
                l1.unlock(id, Flags::empty(), None).unwrap();
            }
            n += 100;
        }
        println!(
            "{} ns per remote lock + unlock",
            t.elapsed().as_nanos() as u64 / n
        );
    }
}
