//! The glock counters the dlm's control socket shows (`metrics`): a glock
//! another node wants is demoted and its cache invalidated, and both
//! counters move. Its own test binary: the counters are per process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterfs::glock::{GlockConfig, GlockName, GlockState, GlockType, HolderFlags};
use clusterfs::lock_dlm::{DlmGlocks, GlockOps};
use dlm::metrics::{sample, GLOCK_DEMOTES, GLOCK_INVALIDATIONS};
use dlm::{Dlm, DlmConfig, NodeId, StaticMembership};

struct NoCache;

impl GlockOps for NoCache {
    fn sync(&self, _: GlockName) {}
    fn invalidate(&self, _: GlockName, _: bool) {}
}

#[test]
fn a_glock_wanted_elsewhere_counts_a_demote_and_an_invalidation() {
    let dir = tempfile::tempdir().unwrap();
    let dlms: Vec<Dlm> = (1..=2)
        .map(|i| {
            let mut cfg = DlmConfig::new(
                NodeId(i),
                "127.0.0.1:0".parse().unwrap(),
                HashMap::new(),
                dlm::ClusterKey::new(b"glock metrics test key").unwrap(),
            );
            cfg.ctl_dir = Some(dir.path().to_path_buf());
            Dlm::start(cfg).unwrap()
        })
        .collect();
    for a in &dlms {
        for b in &dlms {
            a.add_peer(b.node(), b.local_addr());
        }
    }
    let ids = [NodeId(1), NodeId(2)];
    let ls: Vec<_> = dlms
        .iter()
        .map(|d| d.join("fs", StaticMembership::new(&ids).as_ref()).unwrap())
        .collect();
    let t = Instant::now();
    while !ls.iter().all(|l| l.is_running()) {
        assert!(t.elapsed() < Duration::from_secs(60), "lockspace recovery");
        std::thread::sleep(Duration::from_millis(5));
    }
    let glocks: Vec<_> = ls
        .iter()
        .map(|l| {
            DlmGlocks::new(
                l.clone(),
                Arc::new(NoCache),
                GlockConfig {
                    min_hold_ms: 0,
                    ..GlockConfig::default()
                },
            )
        })
        .collect();
    let inode = GlockName {
        kind: GlockType::Inode,
        number: 7,
    };
    let metrics = || dlm::driver::ctl::query(dlms[0].ctl_path().unwrap(), "metrics").unwrap();
    let before = metrics();
    let demotes = sample(&before, "clusterfs_glock_demotes_total", "").unwrap();
    let invalidations = sample(&before, "clusterfs_glock_invalidations_total", "").unwrap();
    assert_eq!(demotes, GLOCK_DEMOTES.get() as f64);
    drop(
        glocks[0]
            .acquire(inode, GlockState::Ex, HolderFlags::default())
            .unwrap(),
    );
    // Node 1 caches EX; node 2's EX makes it demote to UN, dropping its cache.
    drop(
        glocks[1]
            .acquire(inode, GlockState::Ex, HolderFlags::default())
            .unwrap(),
    );
    let after = metrics();
    let moved = |name: &str, was: f64| sample(&after, name, "").unwrap() - was;
    assert!(
        moved("clusterfs_glock_demotes_total", demotes) >= 1.0,
        "{after}"
    );
    assert!(
        moved("clusterfs_glock_invalidations_total", invalidations) >= 1.0,
        "{after}"
    );
    assert!(GLOCK_INVALIDATIONS.get() >= 1);
}
