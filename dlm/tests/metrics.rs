//! The lock traffic counters (`dlm::metrics`) move with the traffic: two
//! `Dlm` instances on loopback, read through the control socket and the
//! HTTP endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use dlm::metrics::{fetch_http, sample};
use dlm::{Dlm, DlmConfig, Flags, Mode, NodeId, StaticMembership};

mod common;
use common::{key, wait_until};

fn node(i: u32, ctl: &std::path::Path) -> Dlm {
    let mut cfg = DlmConfig::new(
        NodeId(i),
        "127.0.0.1:0".parse().unwrap(),
        HashMap::new(),
        key(),
    );
    cfg.shards = 2;
    cfg.ctl_dir = Some(ctl.to_path_buf());
    cfg.metrics = Some("127.0.0.1:0".parse().unwrap());
    Dlm::start(cfg).unwrap()
}

fn counter(dlm: &Dlm, metric: &str, labels: &str) -> f64 {
    let text = dlm::driver::ctl::query(dlm.ctl_path().unwrap(), "metrics").unwrap();
    sample(&text, metric, labels).unwrap_or_else(|| panic!("no {metric}{{{labels}}} in\n{text}"))
}

const LS: &str = "lockspace=\"m\"";

fn requests(dlm: &Dlm, origin: &str) -> f64 {
    counter(
        dlm,
        "dlm_lock_requests_total",
        &format!("{LS},origin=\"{origin}\""),
    )
}

#[test]
fn counters_follow_local_and_remote_locks_and_blocking_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let dlms = [node(1, dir.path()), node(2, dir.path())];
    for a in &dlms {
        for b in &dlms {
            a.add_peer(b.node(), b.local_addr());
        }
    }
    let ids = [NodeId(1), NodeId(2)];
    let ms: Vec<Arc<StaticMembership>> = ids.iter().map(|_| StaticMembership::new(&ids)).collect();
    let ls: Vec<_> = dlms
        .iter()
        .zip(&ms)
        .map(|(d, m)| d.join("m", m.as_ref()).unwrap())
        .collect();
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    assert_eq!(requests(&dlms[0], "local"), 0.0);
    assert_eq!(requests(&dlms[0], "remote"), 0.0);

    // Node 1 takes the resource first and so masters it; its blocking
    // callback counts how often node 2 waits behind it.
    let (tx, rx) = std::sync::mpsc::channel();
    let ast = Arc::new(move |_| {});
    let bast = Arc::new(move |_, _| tx.send(()).unwrap());
    let held = ls[0]
        .lock_async(b"shared", Mode::Ex, Flags::empty(), None, ast, Some(bast))
        .unwrap();
    wait_until("node 1 granted", || {
        counter(&dlms[0], "dlm_grants_total", LS) == 1.0
    });
    assert_eq!(requests(&dlms[0], "local"), 1.0);
    // Its first use asked the directory node, if that is node 2.
    let dir = dlm::node::dir_node(&ids, &dlm::ResName::new(b"shared").unwrap());
    assert_eq!(
        counter(&dlms[0], "dlm_directory_lookups_sent_total", LS),
        if dir == Some(NodeId(2)) { 1.0 } else { 0.0 },
        "directory of \"shared\": {dir:?}"
    );

    // Node 2's requests go to node 1, the master.
    let remote_before = requests(&dlms[0], "remote");
    let again = ls[1].lock(b"shared", Mode::Pr, Flags::NOQUEUE);
    assert!(again.is_err(), "EX held on node 1: {again:?}");
    assert_eq!(requests(&dlms[0], "remote"), remote_before + 1.0);
    assert_eq!(requests(&dlms[1], "local"), 1.0);
    assert_eq!(requests(&dlms[1], "remote"), 0.0);

    // A waiting request makes node 1's lock hear a blocking callback;
    // node 1 lets go and node 2 is granted.
    let waiter = {
        let l = ls[1].clone();
        std::thread::spawn(move || l.lock(b"shared", Mode::Pr, Flags::empty()).unwrap())
    };
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("a blocking callback");
    assert_eq!(counter(&dlms[0], "dlm_blocking_callbacks_total", LS), 1.0);
    assert_eq!(requests(&dlms[0], "remote"), remote_before + 2.0);
    ls[0].unlock_async(held, Flags::empty(), None).unwrap();
    let id = waiter.join().unwrap();
    assert_eq!(counter(&dlms[1], "dlm_grants_total", LS), 1.0);
    ls[1].unlock(id, Flags::empty(), None).unwrap();
    assert_eq!(counter(&dlms[0], "dlm_unlocks_total", LS), 1.0);
    assert_eq!(counter(&dlms[1], "dlm_unlocks_total", LS), 1.0);

    // Plock operations count where they are asked, not at the plock
    // master (node 1) that answers them.
    let plocks = |d: &Dlm| counter(d, "dlm_plock_requests_total", LS);
    assert_eq!((plocks(&dlms[0]), plocks(&dlms[1])), (0.0, 0.0));
    ls[1]
        .plock(7, 70, dlm::plock::Kind::Write, 0, 99, false)
        .unwrap();
    ls[1].pclose(7, 70).unwrap();
    assert_eq!((plocks(&dlms[0]), plocks(&dlms[1])), (0.0, 2.0));

    // The same text over HTTP.
    let text = fetch_http(dlms[1].metrics_addr().unwrap()).unwrap();
    assert_eq!(
        sample(
            &text,
            "dlm_lock_requests_total",
            &format!("{LS},origin=\"local\"")
        ),
        Some(2.0),
        "{text}"
    );
    assert!(text.contains("# TYPE dlm_grants_total counter"), "{text}");
}
