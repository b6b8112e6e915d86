//! `cargo run --release -p dlm --example local_loop`: lock/unlock a locally
//! mastered resource in a loop (for profiling the local path).
use std::collections::HashMap;

fn main() {
    let d = dlm::Dlm::start(dlm::DlmConfig::new(
        dlm::NodeId(1),
        "127.0.0.1:0".parse().unwrap(),
        HashMap::new(),
        // No peers: any key will do.
        dlm::ClusterKey::new(b"local_loop has no peers").unwrap(),
    ))
    .unwrap();
    let m = dlm::StaticMembership::new(&[dlm::NodeId(1)]);
    let ls = d.join("p", m.as_ref()).unwrap();
    while !ls.is_running() {
        std::thread::yield_now();
    }
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let t = std::time::Instant::now();
    for _ in 0..n {
        let id = ls
            .lock(b"local", dlm::Mode::Ex, dlm::Flags::empty())
            .unwrap();
        ls.unlock(id, dlm::Flags::empty(), None).unwrap();
    }
    println!("{} ns per lock+unlock", t.elapsed().as_nanos() as u64 / n);
}
