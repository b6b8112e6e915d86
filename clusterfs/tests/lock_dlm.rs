//! lock_dlm over real DLM lockspaces (two and three nodes in this process,
//! on loopback): glocks exclude each other across nodes, a demote syncs
//! and invalidates before the other node is granted, and a value cached
//! under a glock is never stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clusterfs::glock::{GlockConfig, GlockName, GlockState, GlockType, HolderFlags};
use clusterfs::lock::LockError;
use clusterfs::lock_dlm::{DlmGlocks, GlockOps, JournalRecovery, MountControl, MountRole};
use dlm::{Dlm, DlmConfig, Lockspace, NodeId, StaticMembership};

/// The "disk": the durable value of each glock's object.
type Disk = Arc<Mutex<HashMap<u64, u64>>>;

/// One node's cache of the objects, as a filesystem keeps blocks: a clean
/// or dirty copy per object, filled from the disk, written back on sync,
/// dropped on invalidate.
struct NodeCache {
    disk: Disk,
    cached: Mutex<HashMap<u64, (u64, bool)>>,
    log: Arc<Mutex<Vec<String>>>,
    node: u32,
}

impl NodeCache {
    fn read(&self, obj: u64) -> u64 {
        let mut c = self.cached.lock().unwrap();
        let disk = self.disk.lock().unwrap();
        c.entry(obj)
            .or_insert_with(|| (disk.get(&obj).copied().unwrap_or(0), false))
            .0
    }

    fn write(&self, obj: u64, v: u64) {
        self.cached.lock().unwrap().insert(obj, (v, true));
    }
}

impl GlockOps for NodeCache {
    fn sync(&self, name: GlockName) {
        let mut c = self.cached.lock().unwrap();
        if let Some((v, dirty)) = c.get_mut(&name.number) {
            if *dirty {
                self.disk.lock().unwrap().insert(name.number, *v);
                *dirty = false;
            }
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("{} sync {}", self.node, name.number));
    }

    fn callback(&self, name: GlockName, held: GlockState, wanted: GlockState) {
        if name.kind != GlockType::Iopen {
            return; // the other tests' logs stay as they were
        }
        self.log.lock().unwrap().push(format!(
            "{} callback {:?} {} {held:?}->{wanted:?}",
            self.node, name.kind, name.number
        ));
    }

    fn invalidate(&self, name: GlockName, _keep_metadata: bool) {
        let mut c = self.cached.lock().unwrap();
        if let Some((_, dirty)) = c.get(&name.number) {
            assert!(!dirty, "invalidated a dirty object without a sync");
        }
        c.remove(&name.number);
        self.log
            .lock()
            .unwrap()
            .push(format!("{} inval {}", self.node, name.number));
    }
}

struct Cluster {
    _dlms: Vec<Dlm>,
    _ls: Vec<Lockspace>,
    glocks: Vec<Arc<DlmGlocks>>,
    caches: Vec<Arc<NodeCache>>,
    log: Arc<Mutex<Vec<String>>>,
}

/// `n` DLM nodes on loopback, each knowing every other.
fn start_dlms(n: u32) -> Vec<Dlm> {
    let dlms: Vec<Dlm> = (1..=n)
        .map(|i| {
            let cfg = DlmConfig::new(
                NodeId(i),
                "127.0.0.1:0".parse().unwrap(),
                HashMap::new(),
                dlm::ClusterKey::new(b"lock_dlm tests' cluster key").unwrap(),
            );
            Dlm::start(cfg).unwrap()
        })
        .collect();
    for a in &dlms {
        for b in &dlms {
            a.add_peer(b.node(), b.local_addr());
        }
    }
    dlms
}

fn cluster(n: u32, min_hold_ms: u64) -> Cluster {
    let dlms = start_dlms(n);
    let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
    let ls: Vec<Lockspace> = dlms
        .iter()
        .map(|d| d.join("fs", StaticMembership::new(&ids).as_ref()).unwrap())
        .collect();
    let t = Instant::now();
    while !ls.iter().all(|l| l.is_running()) {
        assert!(t.elapsed() < Duration::from_secs(60), "lockspace recovery");
        thread::sleep(Duration::from_millis(5));
    }
    let disk: Disk = Default::default();
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let caches: Vec<Arc<NodeCache>> = (1..=n)
        .map(|i| {
            Arc::new(NodeCache {
                disk: disk.clone(),
                cached: Default::default(),
                log: log.clone(),
                node: i,
            })
        })
        .collect();
    let glocks = ls
        .iter()
        .zip(&caches)
        .map(|(l, c)| {
            let ops: Arc<dyn GlockOps> = c.clone();
            Arc::new(DlmGlocks::new(
                l.clone(),
                ops,
                GlockConfig {
                    min_hold_ms,
                    ..GlockConfig::default()
                },
            ))
        })
        .collect();
    Cluster {
        _dlms: dlms,
        _ls: ls,
        glocks,
        caches,
        log,
    }
}

fn inode(n: u64) -> GlockName {
    GlockName {
        kind: GlockType::Inode,
        number: n,
    }
}

#[test]
fn a_demote_syncs_before_the_other_node_reads() {
    let c = cluster(2, 0);
    let g = c.glocks[0]
        .acquire(inode(7), GlockState::Ex, HolderFlags::default())
        .unwrap();
    c.caches[0].write(7, 42);
    drop(g);
    // Cached EX on node 1: node 2's SH request makes it sync (EX→SH keeps
    // the clean copy, so no invalidate) before node 2 is granted.
    let g2 = c.glocks[1]
        .acquire(inode(7), GlockState::Sh, HolderFlags::default())
        .unwrap();
    assert_eq!(c.caches[1].read(7), 42);
    assert_eq!(c.log.lock().unwrap().clone(), vec!["1 sync 7".to_string()]);
    drop(g2);
    // Node 2 wants EX: node 1 drops its copy (SH→UN invalidates).
    let g2 = c.glocks[1]
        .acquire(inode(7), GlockState::Ex, HolderFlags::default())
        .unwrap();
    assert!(c.log.lock().unwrap().contains(&"1 inval 7".to_string()));
    c.caches[1].write(7, 43);
    drop(g2);
    let g = c.glocks[0]
        .acquire(inode(7), GlockState::Sh, HolderFlags::default())
        .unwrap();
    assert_eq!(c.caches[0].read(7), 43);
    drop(g);
}

#[test]
fn a_try_lock_on_a_glock_held_elsewhere_is_refused_at_once() {
    let c = cluster(2, 0);
    let g = c.glocks[0]
        .acquire(inode(9), GlockState::Ex, HolderFlags::default())
        .unwrap();
    // Node 1 still holds it (not just caches it): the try fails.
    let t = c.glocks[1].try_acquire(inode(9), GlockState::Ex).unwrap();
    assert!(t.is_none());
    drop(g);
    let g2 = c.glocks[1]
        .acquire(inode(9), GlockState::Ex, HolderFlags::default())
        .unwrap();
    drop(g2);
}

/// `acquire_set`: one operation's glocks, some cached here and some not,
/// taken in order; while the set lives another node cannot have them,
/// and dropping it lets that node in (a demote syncs first).
#[test]
fn a_set_of_glocks_is_held_together_and_let_go_together() {
    let c = cluster(2, 0);
    // Inode 1 cached in EX on node 1; inodes 2 and 3 new to it.
    drop(
        c.glocks[0]
            .acquire(inode(1), GlockState::Ex, HolderFlags::default())
            .unwrap(),
    );
    let wants = [
        (inode(1), GlockState::Ex),
        (inode(2), GlockState::Sh),
        (inode(3), GlockState::Ex),
    ];
    let set = c.glocks[0].acquire_set(&wants).unwrap();
    c.caches[0].write(3, 7);
    for (n, mode) in [(1, GlockState::Sh), (3, GlockState::Sh)] {
        let t = c.glocks[1].try_acquire(inode(n), mode).unwrap();
        assert!(t.is_none(), "inode {n} taken from a live set");
    }
    // SH beside SH is granted while the set lives.
    let shared = c.glocks[1]
        .try_acquire(inode(2), GlockState::Sh)
        .unwrap()
        .expect("SH beside SH");
    drop(shared);
    drop(set);
    // Let go: node 2 takes all three, and reads what the set wrote.
    let theirs = c.glocks[1].acquire_set(&wants).unwrap();
    assert_eq!(c.caches[1].read(3), 7);
    assert!(c.log.lock().unwrap().contains(&"1 sync 3".to_string()));
    drop(theirs);
}

fn iopen(n: u64) -> GlockName {
    GlockName {
        kind: GlockType::Iopen,
        number: n,
    }
}

#[test]
fn a_refused_try_for_an_iopen_glock_reaches_the_node_that_caches_it() {
    let c = cluster(2, 0);
    // Node 1 opened and closed the inode: it caches its iopen glock in SH.
    drop(
        c.glocks[0]
            .acquire(iopen(11), GlockState::Sh, HolderFlags::default())
            .unwrap(),
    );
    assert!(c.glocks[0].states().contains(&(iopen(11), GlockState::Sh)));
    // Node 2's try for EX is refused, and node 1 hears of it (GFS2's
    // LM_FLAG_TRY_1CB) with the mode it holds.
    let refused_and_heard = |n: u64| {
        let tried = c.glocks[1].try_acquire(iopen(n), GlockState::Ex).unwrap();
        assert!(tried.is_none(), "node 2's try for iopen {n} granted");
        let heard = format!("1 callback Iopen {n} Sh->Ex");
        wait_for("node 1's callback", || {
            c.log.lock().unwrap().contains(&heard)
        });
    };
    // Node 2 would free it: node 1 gives the glock up.
    refused_and_heard(11);
    assert!(c.glocks[0].wait_demoted(iopen(11)));
    let given_up = |n| {
        !c.glocks[0]
            .states()
            .iter()
            .any(|&(g, s)| g == iopen(n) && s != GlockState::Un)
    };
    assert!(given_up(11), "{:?}", c.glocks[0].states());
    // Now nobody stands in the way.
    let g = c.glocks[1].try_acquire(iopen(11), GlockState::Ex).unwrap();
    assert!(g.is_some(), "node 2's second try refused");
    drop(g);
    // Held, not just cached: the demote waits for the holder.
    let held = c.glocks[0]
        .acquire(iopen(12), GlockState::Sh, HolderFlags::default())
        .unwrap();
    refused_and_heard(12);
    assert!(c.glocks[0].states().contains(&(iopen(12), GlockState::Sh)));
    assert!(!c.glocks[0].wait_demoted(iopen(12)), "held, yet given up");
    drop(held);
    assert!(c.glocks[0].wait_demoted(iopen(12)));
    assert!(given_up(12), "{:?}", c.glocks[0].states());
}

#[test]
fn giving_up_every_iopen_glock_lets_the_others_take_them() {
    let c = cluster(2, 0);
    for n in [21, 22, 23] {
        drop(
            c.glocks[0]
                .acquire(iopen(n), GlockState::Sh, HolderFlags::default())
                .unwrap(),
        );
    }
    drop(
        c.glocks[0]
            .acquire(inode(21), GlockState::Ex, HolderFlags::default())
            .unwrap(),
    );
    c.glocks[0].give_up_all(GlockType::Iopen);
    let states = c.glocks[0].states();
    assert!(
        states
            .iter()
            .all(|(n, s)| n.kind != GlockType::Iopen || *s == GlockState::Un),
        "{states:?}"
    );
    // Other types stay cached.
    assert!(states.contains(&(inode(21), GlockState::Ex)), "{states:?}");
    for n in [21, 22, 23] {
        let g = c.glocks[1].try_acquire(iopen(n), GlockState::Ex).unwrap();
        assert!(g.is_some(), "iopen {n} still held by node 1");
    }
}

/// Threads on every node take random glocks in random modes and check,
/// against shared counters, that no two nodes ever hold conflicting modes
/// and that what a holder reads from its cache is the latest value.
fn stress(nodes: u32, min_hold_ms: u64, iters: u64) {
    const OBJECTS: u64 = 4;
    let c = cluster(nodes, min_hold_ms);
    // Per object: readers and writers holding it right now (any node),
    // and the latest value written.
    let readers: Arc<Vec<AtomicU64>> = Arc::new((0..OBJECTS).map(|_| AtomicU64::new(0)).collect());
    let writers: Arc<Vec<AtomicU64>> = Arc::new((0..OBJECTS).map(|_| AtomicU64::new(0)).collect());
    let latest: Arc<Vec<AtomicU64>> = Arc::new((0..OBJECTS).map(|_| AtomicU64::new(0)).collect());
    let failed = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for n in 0..nodes as usize {
        for t in 0..2u64 {
            let (g, cache) = (c.glocks[n].clone(), c.caches[n].clone());
            let (readers, writers, latest) = (readers.clone(), writers.clone(), latest.clone());
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((n as u64) << 8 | t);
            threads.push(thread::spawn(move || {
                for _ in 0..iters {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let obj = (seed >> 33) % OBJECTS;
                    let ex = (seed >> 20).is_multiple_of(3);
                    let mode = if ex { GlockState::Ex } else { GlockState::Sh };
                    let guard = g.acquire(inode(obj), mode, HolderFlags::default()).unwrap();
                    let o = obj as usize;
                    if ex {
                        assert_eq!(writers[o].fetch_add(1, Ordering::SeqCst), 0, "two writers");
                        assert_eq!(readers[o].load(Ordering::SeqCst), 0, "writer with readers");
                        let v = cache.read(obj);
                        assert_eq!(v, latest[o].load(Ordering::SeqCst), "stale under EX");
                        cache.write(obj, v + 1);
                        latest[o].store(v + 1, Ordering::SeqCst);
                        writers[o].fetch_sub(1, Ordering::SeqCst);
                    } else {
                        readers[o].fetch_add(1, Ordering::SeqCst);
                        assert_eq!(writers[o].load(Ordering::SeqCst), 0, "reader with writer");
                        let v = cache.read(obj);
                        assert_eq!(v, latest[o].load(Ordering::SeqCst), "stale under SH");
                        readers[o].fetch_sub(1, Ordering::SeqCst);
                    }
                    drop(guard);
                }
            }));
        }
    }
    let t = Instant::now();
    for th in threads {
        while !th.is_finished() {
            if t.elapsed() > Duration::from_secs(90) {
                for (i, g) in c.glocks.iter().enumerate() {
                    eprintln!("node {}: {:#?}", i + 1, g.dump());
                }
                panic!("a glock wait hung");
            }
            thread::sleep(Duration::from_millis(10));
        }
        if th.join().is_err() {
            failed.store(true, Ordering::SeqCst);
        }
    }
    assert!(
        !failed.load(Ordering::SeqCst),
        "a worker failed (see above)"
    );
    let total: u64 = latest.iter().map(|v| v.load(Ordering::SeqCst)).sum();
    assert!(total > 0, "no write happened");
    // Every glock can be dropped cleanly.
    for g in c.glocks {
        Arc::try_unwrap(g).ok().expect("no other owner").shutdown();
    }
}

#[test]
fn glocks_exclude_across_two_nodes_and_caches_stay_coherent() {
    stress(2, 0, 300);
}

#[test]
fn glocks_exclude_across_three_nodes_with_a_minimum_hold_time() {
    stress(3, 5, 150);
}

/// Journal replays the cluster asked for: (node, jid), in order; a replay
/// waits while `gate` is held.
#[derive(Default)]
struct Replays {
    done: Mutex<Vec<(u32, u32)>>,
    gate: Mutex<()>,
}

struct NodeRecovery {
    node: u32,
    replays: Arc<Replays>,
}

impl JournalRecovery for NodeRecovery {
    fn recover_journal(&self, jid: u32) -> Result<(), String> {
        drop(self.replays.gate.lock().unwrap());
        self.replays.done.lock().unwrap().push((self.node, jid));
        Ok(())
    }
}

/// A node with its lockspace joined through a [`MountControl`] and its
/// glocks; its own journal glock once mounted.
struct MountNode {
    ls: Lockspace,
    ctl: Arc<MountControl>,
    glocks: Arc<DlmGlocks>,
    jid: u32,
    own_journal: Mutex<Option<clusterfs::lock_dlm::GlockGuard>>,
}

const JOURNALS: u32 = 4;

fn mount_nodes(n: u32) -> (Vec<Dlm>, Vec<Arc<StaticMembership>>, Vec<MountNode>) {
    mount_nodes_placed(&vec![0; n as usize])
}

/// [`mount_nodes`], node `i` placing the lockspace's directory as
/// `placements[i]` says (0: by hash).
fn mount_nodes_placed(
    placements: &[u64],
) -> (Vec<Dlm>, Vec<Arc<StaticMembership>>, Vec<MountNode>) {
    let dlms = start_dlms(placements.len() as u32);
    let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
    let ms: Vec<Arc<StaticMembership>> = ids.iter().map(|_| StaticMembership::new(&ids)).collect();
    let disk: Disk = Default::default();
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    // All join first: the first recovery, which gives the slots, needs
    // every member.
    let joined: Vec<(Arc<MountControl>, Lockspace)> = dlms
        .iter()
        .zip(&ms)
        .zip(placements)
        .map(|((d, m), &placement)| {
            let ctl = match placement {
                0 => MountControl::new(),
                tag => MountControl::placed(tag),
            };
            let ls = d.join_with_ops("fs", m.as_ref(), ctl.ops()).unwrap();
            (ctl, ls)
        })
        .collect();
    let nodes = joined
        .into_iter()
        .zip(&dlms)
        .map(|((ctl, ls), d)| {
            let cache: Arc<dyn GlockOps> = Arc::new(NodeCache {
                disk: disk.clone(),
                cached: Default::default(),
                log: log.clone(),
                node: d.node().0,
            });
            let glocks = Arc::new(DlmGlocks::new(
                ls.clone(),
                cache,
                GlockConfig {
                    min_hold_ms: 0,
                    ..GlockConfig::default()
                },
            ));
            let jid = ctl.wait_jid(Duration::from_secs(60)).unwrap();
            MountNode {
                ls,
                ctl,
                glocks,
                jid,
                own_journal: Mutex::new(None),
            }
        })
        .collect();
    (dlms, ms, nodes)
}

/// Mounts node `n`; its "file system" mount records the journals it
/// replays: every one for the first mounter, its own for the others.
fn mount(node: &MountNode, n: u32, replays: &Arc<Replays>) -> MountRole {
    mount_as(node, n, replays, Some(node.jid))
}

/// [`mount`] with journal `jid`, or as a spectator (`None`), whose mount
/// replays nothing.
fn mount_as(node: &MountNode, n: u32, replays: &Arc<Replays>, jid: Option<u32>) -> MountRole {
    let rec = Arc::new(NodeRecovery {
        node: n,
        replays: replays.clone(),
    });
    let (role, own, ()) = node
        .ctl
        .mount(
            node.ls.clone(),
            node.glocks.clone(),
            rec.clone(),
            jid,
            JOURNALS,
            |role| {
                let replay: Vec<u32> = match (role, jid) {
                    (_, None) => Vec::new(),
                    (MountRole::First, Some(_)) => (0..JOURNALS).collect(),
                    (MountRole::Joined, Some(jid)) => vec![jid],
                };
                for j in replay {
                    rec.recover_journal(j).map_err(LockError::Unavailable)?;
                }
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(
        own.is_some(),
        jid.is_some(),
        "a journal glock iff a journal"
    );
    *node.own_journal.lock().unwrap() = own;
    role
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_node_that_places_the_directory_otherwise_may_not_mount() {
    let (_dlms, _ms, nodes) = mount_nodes_placed(&[7, 0, 7]);
    let replays = Arc::new(Replays::default());
    assert_eq!(mount(&nodes[0], 1, &replays), MountRole::First);
    let refused = nodes[1].ctl.mount(
        nodes[1].ls.clone(),
        nodes[1].glocks.clone(),
        Arc::new(NodeRecovery {
            node: 2,
            replays: replays.clone(),
        }),
        Some(nodes[1].jid),
        JOURNALS,
        |_| Ok(()),
    );
    match refused {
        Err(LockError::Unavailable(why)) => {
            assert!(
                why.contains("place the lockspace's directory otherwise"),
                "{why}"
            )
        }
        other => panic!("mounted: {:?}", other.map(|(role, _, ())| role)),
    }
    // Refused without holding anything: a node that places alike mounts.
    assert_eq!(mount(&nodes[2], 3, &replays), MountRole::Joined);
}

#[test]
fn the_first_mounter_replays_every_journal_and_later_ones_only_their_own() {
    let (_dlms, _ms, nodes) = mount_nodes(3);
    let jids: Vec<u32> = nodes.iter().map(|n| n.jid).collect();
    assert_eq!(jids, vec![0, 1, 2], "journal id = slot - 1");
    let replays = Arc::new(Replays::default());
    assert_eq!(mount(&nodes[0], 1, &replays), MountRole::First);
    assert_eq!(mount(&nodes[1], 2, &replays), MountRole::Joined);
    assert_eq!(mount(&nodes[2], 3, &replays), MountRole::Joined);
    assert_eq!(
        replays.done.lock().unwrap().clone(),
        vec![(1, 0), (1, 1), (1, 2), (1, 3), (2, 1), (3, 2)]
    );
}

#[test]
fn a_fenced_nodes_journal_is_replayed_once_before_locking_resumes() {
    let (_dlms, ms, nodes) = mount_nodes(3);
    let replays = Arc::new(Replays::default());
    for (i, n) in nodes.iter().enumerate() {
        mount(n, i as u32 + 1, &replays);
    }
    replays.done.lock().unwrap().clear();
    // Node 1 caches inode 5 in EX; inode 6 it has never asked for.
    drop(
        nodes[0]
            .glocks
            .acquire(inode(5), GlockState::Ex, HolderFlags::default())
            .unwrap(),
    );
    let gate = replays.gate.lock().unwrap();
    // Node 2 (journal 1) fails; the survivors see it go, then fenced.
    for m in [&ms[0], &ms[2]] {
        m.remove(NodeId(2));
    }
    for m in [&ms[0], &ms[2]] {
        m.fence(NodeId(2));
    }
    // While the replay waits at the gate: a cached glock is still
    // granted, a new DLM request waits for the recovery.
    let waiting = {
        let g = nodes[0].glocks.clone();
        thread::spawn(move || {
            g.acquire(inode(6), GlockState::Sh, HolderFlags::default())
                .map(drop)
        })
    };
    wait_for("recovery started", || {
        nodes[0].glocks.states().iter().any(|(n, _)| *n == inode(6))
    });
    drop(
        nodes[0]
            .glocks
            .acquire(inode(5), GlockState::Sh, HolderFlags::default())
            .unwrap(),
    );
    thread::sleep(Duration::from_millis(200));
    if waiting.is_finished() {
        let r = waiting.join().unwrap();
        panic!("a lock request went out during recovery: {r:?}");
    }
    drop(gate);
    waiting.join().unwrap().unwrap();
    wait_for("journal 1 replayed", || {
        replays.done.lock().unwrap().iter().any(|(_, j)| *j == 1)
    });
    thread::sleep(Duration::from_millis(200));
    let done = replays.done.lock().unwrap().clone();
    assert_eq!(done.len(), 1, "replayed once, by one survivor: {done:?}");
    assert!(done[0] == (1, 1) || done[0] == (3, 1), "{done:?}");
}

/// A spectator takes no journal, even first; when a node with a journal
/// fails, the spectator's requests wait while a node with a journal
/// replays it (never the spectator), then go on.
#[test]
fn a_spectator_takes_no_journal_and_leaves_recovery_to_the_others() {
    let (_dlms, ms, nodes) = mount_nodes(3);
    let replays = Arc::new(Replays::default());
    assert_eq!(mount_as(&nodes[2], 3, &replays, None), MountRole::First);
    assert!(nodes[2].own_journal.lock().unwrap().is_none());
    assert_eq!(mount(&nodes[0], 1, &replays), MountRole::Joined);
    assert_eq!(mount(&nodes[1], 2, &replays), MountRole::Joined);
    assert_eq!(replays.done.lock().unwrap().clone(), vec![(1, 0), (2, 1)]);
    replays.done.lock().unwrap().clear();
    // Node 1 (journal 0) fails and is fenced.
    for m in [&ms[1], &ms[2]] {
        m.remove(NodeId(1));
    }
    for m in [&ms[1], &ms[2]] {
        m.fence(NodeId(1));
    }
    drop(
        nodes[2]
            .glocks
            .acquire(inode(7), GlockState::Sh, HolderFlags::default())
            .unwrap(),
    );
    wait_for("journal 0 replayed", || {
        replays.done.lock().unwrap().iter().any(|(_, j)| *j == 0)
    });
    thread::sleep(Duration::from_millis(200));
    assert_eq!(replays.done.lock().unwrap().clone(), vec![(2, 0)]);
}
