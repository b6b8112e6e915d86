//! `cargo run --release -p dlm --example node_loop`: lock/unlock on the bare
//! state machine (no driver, no mutex), to split the local path's cost.
fn main() {
    let mut n = dlm::node::Node::with_members(dlm::NodeId(1), 1, &[dlm::NodeId(1)]);
    let name = dlm::ResName::new(b"local").expect("name");
    let mut out = Vec::new();
    let iters: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    // The first lock makes this node the resource's master.
    let id = n
        .lock(name, dlm::Mode::Ex, dlm::Flags::empty(), None, &mut out)
        .expect("lock");
    n.unlock(id, dlm::Flags::empty(), None, &mut out)
        .expect("unlock");
    out.clear();
    let t = std::time::Instant::now();
    for _ in 0..iters {
        let (id, c) = n
            .lock_now(name, dlm::Mode::Ex, dlm::Flags::empty(), None, &mut out)
            .expect("lock");
        assert!(c.is_some());
        let c = n
            .unlock_now(id, dlm::Flags::empty(), None, &mut out)
            .expect("unlock");
        assert!(c.is_some());
    }
    println!(
        "{} ns per lock+unlock",
        t.elapsed().as_nanos() as u64 / iters
    );
}
