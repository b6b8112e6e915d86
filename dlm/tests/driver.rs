//! The threaded drivers on loopback: several `Dlm` instances in one test
//! process, each with its own TCP listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use dlm::{
    Completion, Dlm, DlmConfig, DlmError, Flags, LockHandler, LockId, Lockspace, Lvb, Mode, NodeId,
    StaticMembership, Status,
};

mod common;
use common::wait_until;

fn cluster(n: u32, ctl: Option<&std::path::Path>) -> Vec<Dlm> {
    let dlms: Vec<Dlm> = (1..=n)
        .map(|i| {
            let mut cfg = DlmConfig::new(
                NodeId(i),
                "127.0.0.1:0".parse().unwrap(),
                HashMap::new(),
                dlm::ClusterKey::new(b"driver tests' cluster key").unwrap(),
            );
            cfg.shards = 4;
            cfg.ctl_dir = ctl.map(|p| p.to_path_buf());
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

fn join_all(dlms: &[Dlm], name: &str) -> (Vec<Lockspace>, Vec<Arc<StaticMembership>>) {
    let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
    let ms: Vec<_> = dlms.iter().map(|_| StaticMembership::new(&ids)).collect();
    let ls = dlms
        .iter()
        .zip(&ms)
        .map(|(d, m)| d.join(name, m.as_ref()).unwrap())
        .collect();
    (ls, ms)
}

#[test]
fn locks_across_three_nodes_exclude_each_other() {
    let dlms = cluster(3, None);
    let (ls, _ms) = join_all(&dlms, "t1");
    wait_until("recovery of the initial view", || {
        ls.iter().all(|l| l.is_running())
    });
    assert_eq!(hammer(&ls, 3, 200, None), 600);
}

/// Every lockspace's thread takes EX on `names` resources in turn, `rounds`
/// times, checking that no two hold the same resource at once; `sweeper`,
/// if given, runs beside them until they finish. Returns the number of
/// critical sections.
fn hammer(
    ls: &[Lockspace],
    names: usize,
    rounds: usize,
    sweeper: Option<&(dyn Fn() + Sync)>,
) -> u64 {
    let counter = Arc::new(AtomicU64::new(0));
    let inside: Arc<Vec<AtomicU64>> = Arc::new((0..names).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = ls
        .iter()
        .cloned()
        .map(|l| {
            let (counter, inside) = (counter.clone(), inside.clone());
            std::thread::spawn(move || {
                for i in 0..rounds {
                    let r = i % names;
                    let name = format!("res{r}");
                    let id = l.lock(name.as_bytes(), Mode::Ex, Flags::empty()).unwrap();
                    assert_eq!(
                        inside[r].fetch_add(1, Ordering::SeqCst),
                        0,
                        "two EX holders"
                    );
                    counter.fetch_add(1, Ordering::SeqCst);
                    inside[r].fetch_sub(1, Ordering::SeqCst);
                    l.unlock(id, Flags::empty(), None).unwrap();
                }
            })
        })
        .collect();
    std::thread::scope(|s| {
        if let Some(f) = sweeper {
            let done = done.clone();
            s.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    f();
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
        }
        for t in threads {
            t.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    counter.load(Ordering::SeqCst)
}

#[test]
fn unused_resources_are_freed_everywhere_and_locks_still_exclude() {
    let dlms = cluster(3, None);
    let (ls, _ms) = join_all(&dlms, "free");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    // Node 1 locks 300 names, mastered and looked up all over the cluster.
    for i in 0..300 {
        let id = ls[0]
            .lock(format!("n{i}").as_bytes(), Mode::Pr, Flags::empty())
            .unwrap();
        ls[0].unlock(id, Flags::empty(), None).unwrap();
    }
    let held = ls[1].lock(b"kept", Mode::Ex, Flags::empty()).unwrap();
    assert!(ls[0].resource_count() >= 300);
    // Two sweeps everywhere: everything without a lock goes, at masters
    // and in caches; the held lock's resource stays.
    for _ in 0..2 {
        for l in &ls {
            l.sweep_now();
        }
    }
    wait_until("frees to settle", || {
        ls.iter().map(|l| l.resource_count()).sum::<usize>() <= 2
    });
    assert!(
        ls[1].resource_count() >= 1,
        "the held lock's resource was freed"
    );
    // The held lock still excludes others after its neighbours were freed.
    assert!(matches!(
        ls[2].lock(b"kept", Mode::Pr, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    ls[1].unlock(held, Flags::empty(), None).unwrap();
    // Locks on freed names work again, from any node, and still exclude,
    // with sweeps racing the traffic.
    let sweep_all = || {
        for l in &ls {
            l.sweep_now();
        }
    };
    assert_eq!(hammer(&ls, 4, 300, Some(&sweep_all)), 900);
}

#[test]
fn noqueue_bast_lvb_and_async_callbacks() {
    let dlms = cluster(2, None);
    let (ls, _ms) = join_all(&dlms, "t2");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    let (bast_tx, bast_rx) = mpsc::channel();
    let bast_tx = std::sync::Mutex::new(bast_tx);
    let (ast_tx, ast_rx) = mpsc::channel::<Completion>();
    let ast_tx = std::sync::Mutex::new(ast_tx);
    let a = ls[0]
        .lock_async(
            b"shared",
            Mode::Ex,
            Flags::VALBLK,
            None,
            Arc::new(move |c| ast_tx.lock().unwrap().send(c).unwrap()),
            Some(Arc::new(move |_, m| {
                bast_tx.lock().unwrap().send(m).unwrap()
            })),
        )
        .unwrap();
    let c = ast_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(c.status, Status::Granted(Mode::Ex));
    // Node 2: NOQUEUE fails, and NOQUEUEBAST still notifies the holder.
    assert!(matches!(
        ls[1].lock(b"shared", Mode::Pr, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    assert!(matches!(
        ls[1].lock(b"shared", Mode::Pr, Flags::NOQUEUE | Flags::NOQUEUEBAST),
        Err(DlmError::Again)
    ));
    assert_eq!(
        bast_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        Mode::Pr
    );
    // Release with a value; node 2 reads it.
    ls[0]
        .unlock_async(a, Flags::VALBLK, Some(Lvb([42; 32])))
        .unwrap();
    assert_eq!(
        ast_rx.recv_timeout(Duration::from_secs(30)).unwrap().status,
        Status::Unlocked
    );
    let (b, c) = ls[1]
        .lock_lvb(b"shared", Mode::Pr, Flags::VALBLK, None)
        .unwrap();
    assert_eq!(c.lvb, Some(Lvb([42; 32])));
    ls[1].unlock(b, Flags::empty(), None).unwrap();
}

/// `lock_async_now`: a request for a resource whose directory (and so
/// master) is this node is answered in the call, and its `ast` hears only
/// what comes later; elsewhere the answer comes through `ast` as with
/// `lock_async`. Either way the lock's callbacks are in place.
#[test]
fn lock_async_now_answers_at_once_what_is_mastered_here() {
    let dlms = cluster(2, None);
    let (ls, _ms) = join_all(&dlms, "t7");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    let (ast_tx, ast_rx) = mpsc::channel::<Completion>();
    let (bast_tx, bast_rx) = mpsc::channel::<(LockId, Mode)>();
    let (ast_tx, bast_tx) = (
        Arc::new(std::sync::Mutex::new(ast_tx)),
        Arc::new(std::sync::Mutex::new(bast_tx)),
    );
    let take = |name: &[u8], flags: Flags| {
        let (a, b) = (ast_tx.clone(), bast_tx.clone());
        ls[0]
            .lock_async_now(
                name,
                Mode::Ex,
                flags,
                None,
                Arc::new(move |c| a.lock().unwrap().send(c).unwrap()),
                Some(Arc::new(move |id, m| {
                    b.lock().unwrap().send((id, m)).unwrap()
                })),
            )
            .unwrap()
    };
    let (mut here, mut there) = (Vec::new(), 0);
    for i in 0..16 {
        let name = format!("new{i}");
        match take(name.as_bytes(), Flags::empty()) {
            (id, Some(c)) => {
                assert_eq!((c.id, c.status), (id, Status::Granted(Mode::Ex)));
                here.push((id, name));
            }
            (id, None) => {
                let c = ast_rx.recv_timeout(Duration::from_secs(30)).unwrap();
                assert_eq!((c.id, c.status), (id, Status::Granted(Mode::Ex)));
                there += 1;
            }
        }
    }
    assert!(!here.is_empty() && there > 0, "16 names all on one side");
    // Nothing was passed to `ast` for the answers given at once.
    assert!(ast_rx.recv_timeout(Duration::from_millis(200)).is_err());
    let (id, name) = &here[0];
    // Refused at once: no lock is left, and `ast` hears nothing.
    let (refused, c) = take(name.as_bytes(), Flags::NOQUEUE);
    assert_eq!(c.map(|c| c.status), Some(Status::Again));
    assert!(ls[0]
        .convert_async(refused, Mode::Nl, Flags::empty(), None)
        .is_err());
    // The lock granted at once hears of the other node's request...
    assert!(matches!(
        ls[1].lock(
            name.as_bytes(),
            Mode::Pr,
            Flags::NOQUEUE | Flags::NOQUEUEBAST
        ),
        Err(DlmError::Again)
    ));
    assert_eq!(
        bast_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        (*id, Mode::Pr)
    );
    // ...and of its own conversion, through `ast`.
    ls[0]
        .convert_async(*id, Mode::Nl, Flags::empty(), None)
        .unwrap();
    let c = ast_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((c.id, c.status), (*id, Status::Granted(Mode::Nl)));
}

/// What [`Recorder`] heard: the lock's argument and the event.
#[derive(Debug, PartialEq)]
enum Heard {
    Completed(u128, LockId, Status),
    Blocking(u128, LockId, Mode),
}

/// A handler shared by every lock of a test, passing on what it hears.
struct Recorder(std::sync::Mutex<mpsc::Sender<Heard>>);

impl LockHandler for Recorder {
    fn completed(&self, arg: u128, c: Completion) {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Heard::Completed(arg, c.id, c.status));
    }

    fn blocking(&self, arg: u128, id: LockId, wanted: Mode) {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Heard::Blocking(arg, id, wanted));
    }
}

/// Two nodes (kept running while held), their lockspaces and
/// memberships, a [`Recorder`] and what it hears.
type Recorded = (
    Vec<Dlm>,
    Vec<Lockspace>,
    Vec<Arc<StaticMembership>>,
    Arc<dyn LockHandler>,
    mpsc::Receiver<Heard>,
);

/// Two nodes in lockspace `name`, running, and a [`Recorder`] with what
/// it hears.
fn two_nodes_with_recorder(name: &str) -> Recorded {
    let dlms = cluster(2, None);
    let (ls, ms) = join_all(&dlms, name);
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    let (tx, rx) = mpsc::channel();
    let handler: Arc<dyn LockHandler> = Arc::new(Recorder(std::sync::Mutex::new(tx)));
    (dlms, ls, ms, handler, rx)
}

/// `lock_async_with`: one handler for many locks, each lock's callbacks
/// carrying the argument it was asked for with (answers given at once
/// are returned, as with `lock_async_now`).
#[test]
fn lock_async_with_tells_one_handler_each_locks_argument() {
    let (_dlms, ls, _ms, handler, rx) = two_nodes_with_recorder("t7h");
    let arg = |i: u128| i << 64 | 0xabc;
    let mut here = Vec::new();
    let mut there = 0;
    for i in 0..16u128 {
        let name = format!("new{i}");
        let (id, now) = ls[0]
            .lock_async_with(
                name.as_bytes(),
                Mode::Ex,
                Flags::empty(),
                None,
                &handler,
                arg(i),
            )
            .unwrap();
        match now {
            Some(c) => {
                assert_eq!((c.id, c.status), (id, Status::Granted(Mode::Ex)));
                here.push((id, name, i));
            }
            None => {
                let heard = rx.recv_timeout(Duration::from_secs(30)).unwrap();
                assert_eq!(
                    heard,
                    Heard::Completed(arg(i), id, Status::Granted(Mode::Ex))
                );
                there += 1;
            }
        }
    }
    assert!(
        here.len() >= 2 && there > 0,
        "16 names: {} here",
        here.len()
    );
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    // The other node's request reaches the handler with the argument of
    // the lock it is blocked by, for two locks in turn.
    for (id, name, i) in &here[..2] {
        assert!(matches!(
            ls[1].lock(
                name.as_bytes(),
                Mode::Pr,
                Flags::NOQUEUE | Flags::NOQUEUEBAST
            ),
            Err(DlmError::Again)
        ));
        let heard = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(heard, Heard::Blocking(arg(*i), *id, Mode::Pr));
    }
    // Conversions and the unlock come back with the argument too.
    let (id, _, i) = &here[1];
    ls[0]
        .convert_async(*id, Mode::Nl, Flags::empty(), None)
        .unwrap();
    let heard = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        heard,
        Heard::Completed(arg(*i), *id, Status::Granted(Mode::Nl))
    );
    // Its blocking callback is the handler's: not to be replaced.
    assert!(matches!(
        ls[0].set_bast(*id, Arc::new(|_, _| {})),
        Err(DlmError::Invalid)
    ));
    ls[0].unlock_async(*id, Flags::empty(), None).unwrap();
    let heard = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(heard, Heard::Completed(arg(*i), *id, Status::Unlocked));
}

/// `try_lock_here_with`: a new lock granted in the call when the DLM can
/// grant it on the spot (a new name whose directory is this node, or a
/// resource mastered here with compatible holders), refused with nothing
/// done otherwise; a lock it grants has the handler's callbacks.
#[test]
fn try_lock_here_with_grants_on_the_spot_or_does_nothing() {
    let (_dlms, ls, _ms, handler, rx) = two_nodes_with_recorder("t7t");
    let try_here = |name: &str, mode: Mode, arg: u128| {
        ls[0]
            .try_lock_here_with(name.as_bytes(), mode, Flags::empty(), &handler, arg)
            .unwrap()
    };
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..16 {
        let name = format!("spot{i}");
        match try_here(&name, Mode::Ex, i) {
            Some(id) => mine.push((id, name, i)),
            None => theirs.push(name),
        }
    }
    assert!(
        mine.len() >= 2 && !theirs.is_empty(),
        "{} of 16 here",
        mine.len()
    );
    // Nothing was made for the names refused: no resource here, and the
    // other node, their directory, masters them when it locks them.
    assert_eq!(ls[0].resource_count(), mine.len());
    for name in &theirs {
        let id = ls[1]
            .lock(name.as_bytes(), Mode::Ex, Flags::NOQUEUE)
            .unwrap();
        ls[1].unlock(id, Flags::empty(), None).unwrap();
    }
    // A resource mastered here: compatible modes pass, a conflict is
    // refused with nothing queued (no callback to the holder).
    let (id, name, i) = &mine[0];
    assert_eq!(try_here(name, Mode::Ex, 99), None);
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    ls[0].convert(*id, Mode::Pr, Flags::empty(), None).unwrap();
    let pr = try_here(name, Mode::Pr, 100).expect("PR beside PR");
    // The other node's request blocks both holders: each hears it with
    // its own argument.
    assert!(matches!(
        ls[1].lock(
            name.as_bytes(),
            Mode::Ex,
            Flags::NOQUEUE | Flags::NOQUEUEBAST
        ),
        Err(DlmError::Again)
    ));
    let mut heard = vec![
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
    ];
    heard.sort_by_key(|h| format!("{h:?}"));
    let mut want = vec![
        Heard::Blocking(*i, *id, Mode::Ex),
        Heard::Blocking(100, pr, Mode::Ex),
    ];
    want.sort_by_key(|h| format!("{h:?}"));
    assert_eq!(heard, want);
}

#[test]
fn survivors_recover_locks_of_a_dead_node() {
    let dlms = cluster(3, None);
    let (ls, ms) = join_all(&dlms, "t3");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    // Node 3 takes EX on several resources, then "dies".
    let held: Vec<_> = (0..8)
        .map(|i| {
            ls[2]
                .lock(format!("r{i}").as_bytes(), Mode::Ex, Flags::empty())
                .unwrap()
        })
        .collect();
    assert_eq!(held.len(), 8);
    // Node 1 holds PR on r0 which survives recovery.
    let (tx, rx) = mpsc::channel();
    let l1 = ls[0].clone();
    let waiter = std::thread::spawn(move || {
        let ids: Vec<_> = (0..8)
            .map(|i| {
                l1.lock(format!("r{i}").as_bytes(), Mode::Pw, Flags::empty())
                    .unwrap()
            })
            .collect();
        tx.send(ids).unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "granted while node 3 holds EX");
    dlms[2].shutdown();
    for m in &ms[..2] {
        m.remove(NodeId(3));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "granted before fencing");
    for m in &ms[..2] {
        m.fence(NodeId(3));
    }
    let ids = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("waiters granted after recovery");
    waiter.join().unwrap();
    assert_eq!(ids.len(), 8);
    // Node 2 must not get any of them while node 1 holds PW.
    assert!(matches!(
        ls[1].lock(b"r3", Mode::Pr, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
}

#[test]
fn control_socket_dumps_locks() {
    let dir = tempfile::tempdir().unwrap();
    let dlms = cluster(1, Some(dir.path()));
    let (ls, _ms) = join_all(&dlms, "dump");
    wait_until("running", || ls[0].is_running());
    let id = ls[0].lock(b"visible", Mode::Pw, Flags::empty()).unwrap();
    let path = dlms[0].ctl_path().unwrap();
    let out = dlm::driver::ctl::query(path, "ls").unwrap();
    assert!(out.contains("name          dump"), "{out}");
    assert!(out.contains("locks         1\n"), "{out}");
    assert!(out.contains("resources     1 (1 mastered here)"), "{out}");
    let out = dlm::driver::ctl::query(path, "lockdump dump").unwrap();
    assert!(out.contains(&format!("id {id} gr PW rq IV")), "{out}");
    assert!(out.contains("\"visible\""), "{out}");
    assert!(dlm::driver::ctl::query(path, "lockdump nope")
        .unwrap()
        .starts_with("error"));
}

/// A process closing a file while one of its threads waits for a POSIX
/// lock on it (or an open file's flock waiting when it is unlocked): the
/// waiting call returns Canceled instead of hanging, on the plock master
/// (node 1) and on another node.
#[test]
fn close_answers_a_waiting_lock_of_the_same_owner() {
    use dlm::plock::Kind;
    let dir = tempfile::tempdir().unwrap();
    let dlms = cluster(2, Some(dir.path()));
    let (ls, _ms) = join_all(&dlms, "plclose");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    let ctl = dlms[0].ctl_path().unwrap().to_path_buf();
    let waiting = |n: usize| {
        wait_until("queued", || {
            let out = dlm::driver::ctl::query(&ctl, "plocks plclose").unwrap();
            out.matches("WAITING").count() == n
        })
    };
    for (holder, waiter) in [(0usize, 1usize), (1, 0)] {
        let file = 20 + holder as u64;
        ls[holder]
            .plock(file, 10, Kind::Write, 0, 9, false)
            .unwrap();
        let l = ls[waiter].clone();
        let t = std::thread::spawn(move || l.plock(file, 20, Kind::Write, 5, 5, true));
        waiting(1);
        ls[waiter].pclose(file, 20).unwrap();
        assert!(matches!(t.join().unwrap(), Err(DlmError::Canceled)));
        waiting(0);
        // flock: LOCK_UN of the open file leaves its other thread's request
        // waiting, as Linux does; its last close answers it.
        ls[holder].flock(file, 1, Kind::Write, false).unwrap();
        let l = ls[waiter].clone();
        let t = std::thread::spawn(move || l.flock(file, 2, Kind::Read, true));
        waiting(1);
        ls[waiter].funlock(file, 2).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        waiting(1);
        assert!(!t.is_finished(), "LOCK_UN answered another thread's wait");
        ls[waiter].fclose(file, 2).unwrap();
        assert!(matches!(t.join().unwrap(), Err(DlmError::Canceled)));
        waiting(0);
        // The holders' locks stay and still exclude others.
        assert!(matches!(
            ls[waiter].plock(file, 30, Kind::Read, 0, 0, false),
            Err(DlmError::Again)
        ));
        assert!(matches!(
            ls[waiter].flock(file, 3, Kind::Read, false),
            Err(DlmError::Again)
        ));
    }
}

#[test]
fn posix_locks_across_nodes_with_edeadlk_and_recovery() {
    use dlm::plock::Kind;
    let dir = tempfile::tempdir().unwrap();
    let dlms = cluster(3, Some(dir.path()));
    let (ls, ms) = join_all(&dlms, "plk");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    // Node 1 pid 10 write-locks bytes 0..=99 of file 7.
    ls[0].plock(7, 10, Kind::Write, 0, 99, false).unwrap();
    assert!(matches!(
        ls[1].plock(7, 20, Kind::Read, 50, 60, false),
        Err(DlmError::Again)
    ));
    let c = ls[1].pget(7, 20, Kind::Read, 50, 60).unwrap().unwrap();
    assert_eq!(
        (c.owner.node, c.owner.id, c.start, c.end),
        (NodeId(1), 10, 0, 99)
    );
    // Unlocking the middle lets node 2 in there, not elsewhere.
    ls[0].punlock(7, 10, 40, 69).unwrap();
    ls[1].plock(7, 20, Kind::Read, 50, 60, false).unwrap();
    assert!(matches!(
        ls[1].plock(7, 20, Kind::Read, 30, 30, false),
        Err(DlmError::Again)
    ));
    // Deadlock: node 2 pid 20 waits for node 1's byte 0; node 1 pid 10 then
    // asking for node 2's byte 55 gets EDEADLK.
    let l2 = ls[1].clone();
    let t = std::thread::spawn(move || l2.plock(7, 20, Kind::Write, 0, 0, true));
    wait_until("node 2 queued", || {
        let out = dlm::driver::ctl::query(dlms[0].ctl_path().unwrap(), "plocks plk").unwrap();
        out.contains("WAITING")
    });
    assert!(matches!(
        ls[0].plock(7, 10, Kind::Write, 55, 55, true),
        Err(DlmError::Deadlock)
    ));
    let out = dlm::driver::ctl::query(dlms[0].ctl_path().unwrap(), "plocks plk").unwrap();
    assert!(out.contains("7 WR 0-39 nodeid 1 pid 10"), "{out}");
    assert!(out.contains("7 RD 50-60 nodeid 2 pid 20"), "{out}");
    // Node 1 (the plock master) dies: node 2's waiter is granted by the new
    // plock master, which rebuilt the table from the survivors.
    dlms[0].shutdown();
    for m in &ms[1..] {
        m.remove(NodeId(1));
        m.fence(NodeId(1));
    }
    t.join().unwrap().unwrap();
    assert!(matches!(
        ls[2].plock(7, 30, Kind::Read, 55, 55, false),
        Ok(())
    ));
    assert!(matches!(
        ls[2].plock(7, 30, Kind::Write, 0, 0, false),
        Err(DlmError::Again)
    ));
    // flock is separate from fcntl locks.
    ls[2].flock(7, 1, Kind::Write, false).unwrap();
    assert!(matches!(
        ls[1].flock(7, 2, Kind::Read, false),
        Err(DlmError::Again)
    ));
    ls[2].funlock(7, 1).unwrap();
    ls[1].flock(7, 2, Kind::Read, false).unwrap();
}

#[test]
fn lockspaces_are_independent_and_can_be_left() {
    let dlms = cluster(2, None);
    let (a, ma) = join_all(&dlms, "one");
    let (b, _mb) = join_all(&dlms, "two");
    wait_until("running", || a.iter().chain(&b).all(|l| l.is_running()));
    assert_eq!(
        dlms[0].lockspaces(),
        vec!["one".to_string(), "two".to_string()]
    );
    // Same resource name, different lockspaces: no interaction.
    let x = a[0].lock(b"same", Mode::Ex, Flags::empty()).unwrap();
    let y = b[1].lock(b"same", Mode::Ex, Flags::empty()).unwrap();
    assert!(matches!(
        a[1].lock(b"same", Mode::Ex, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    b[1].unlock(y, Flags::empty(), None).unwrap();
    // Node 1 leaves "one": node 2 is told, recovers, and gets the lock.
    a[0].unlock(x, Flags::empty(), None).unwrap();
    let held = a[0].lock(b"kept", Mode::Ex, Flags::empty()).unwrap();
    assert!(held.0 > 0);
    dlms[0].leave("one").unwrap();
    assert!(matches!(dlms[0].leave("one"), Err(DlmError::NotMember)));
    ma[1].remove(NodeId(1));
    ma[1].fence(NodeId(1));
    let id = a[1].lock(b"kept", Mode::Ex, Flags::empty()).unwrap();
    a[1].unlock(id, Flags::empty(), None).unwrap();
    assert_eq!(dlms[0].lockspaces(), vec!["two".to_string()]);
}

#[test]
fn garbage_from_the_network_is_dropped_and_service_continues() {
    use std::io::Write;
    let dlms = cluster(2, None);
    let (ls, _ms) = join_all(&dlms, "g");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    let addr = dlms[0].local_addr();
    // A peer that never says hello properly.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    // A peer (an unknown node id, without the key) that says hello, then
    // sends numbered frames whose payloads are garbage of every shape. Writes may
    // fail once the node has had enough and closed the connection.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let hello = dlm::driver::transport::encode_hello(NodeId(99), 7, dlms[0].node());
    let _ = s.write_all(&hello);
    let mut seed = 12345u64;
    for len in 0..300u32 {
        let mut f = Vec::new();
        for _ in 0..len {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f.push((seed >> 33) as u8);
        }
        if len % 3 == 0 && len > 4 {
            // Looks like our lockspace "g", shard 0, then noise.
            f[0] = 1;
            f[1] = b'g';
            f[2] = 0;
            f[3] = 0;
        }
        let _ = s.write_all(&(len + 8).to_le_bytes());
        let _ = s.write_all(&u64::from(len + 1).to_le_bytes());
        let _ = s.write_all(&f);
    }
    // A frame claiming to be huge closes that connection only.
    let _ = s.write_all(&u32::MAX.to_le_bytes());
    drop(s);
    std::thread::sleep(Duration::from_millis(50));
    let id = ls[1]
        .lock(b"still-works", Mode::Ex, Flags::empty())
        .unwrap();
    assert!(matches!(
        ls[0].lock(b"still-works", Mode::Ex, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    ls[1].unlock(id, Flags::empty(), None).unwrap();
}

#[test]
fn blocking_convert_can_be_cancelled_or_force_unlocked_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let dlms = cluster(1, Some(dir.path()));
    let (ls, _ms) = join_all(&dlms, "c");
    wait_until("running", || ls[0].is_running());
    let l = ls[0].clone();
    let ctl = dlms[0].ctl_path().unwrap().to_path_buf();
    let a = l.lock(b"r", Mode::Pr, Flags::empty()).unwrap();
    let b = l.lock(b"r", Mode::Pr, Flags::empty()).unwrap();
    // a: PR -> EX waits for b; cancelled from here.
    let l2 = l.clone();
    let t = std::thread::spawn(move || l2.convert(a, Mode::Ex, Flags::empty(), None));
    wait_until("conversion queued", || l.cancel(a).is_ok());
    assert!(matches!(t.join().unwrap(), Err(DlmError::Canceled)));
    // a still holds PR: an EX NOQUEUE fails.
    assert!(matches!(
        l.lock(b"r", Mode::Ex, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    // Again, this time force-unlocked: both callers return.
    let l2 = l.clone();
    let t = std::thread::spawn(move || l2.convert(a, Mode::Ex, Flags::empty(), None));
    let converting = format!("id {a} gr PR rq EX");
    wait_until("conversion queued", || {
        dlm::driver::ctl::query(&ctl, "lockdump c")
            .unwrap()
            .contains(&converting)
    });
    l.unlock(a, Flags::FORCEUNLOCK, None).unwrap();
    assert!(matches!(t.join().unwrap(), Err(DlmError::Canceled)));
    l.unlock(b, Flags::empty(), None).unwrap();
    let c = l.lock(b"r", Mode::Ex, Flags::NOQUEUE).unwrap();
    l.unlock(c, Flags::empty(), None).unwrap();
}

#[test]
fn local_fast_paths_keep_callbacks_and_blocking_semantics() {
    let dlms = cluster(1, None);
    let (ls, _ms) = join_all(&dlms, "fast");
    let ls = &ls[0];
    wait_until("running", || ls.is_running());
    // A lock taken with callbacks and later released through the blocking
    // call (which reports the unlock itself).
    let (ast_tx, ast_rx) = mpsc::channel::<Completion>();
    let ast_tx = std::sync::Mutex::new(ast_tx);
    let (bast_tx, bast_rx) = mpsc::channel();
    let bast_tx = std::sync::Mutex::new(bast_tx);
    let a = ls
        .lock_async(
            b"r",
            Mode::Pr,
            Flags::empty(),
            None,
            Arc::new(move |c| ast_tx.lock().unwrap().send(c).unwrap()),
            Some(Arc::new(move |_, m| {
                bast_tx.lock().unwrap().send(m).unwrap()
            })),
        )
        .unwrap();
    assert_eq!(
        ast_rx.recv_timeout(Duration::from_secs(30)).unwrap().status,
        Status::Granted(Mode::Pr)
    );
    // Compatible blocking locks go the fast way and do not disturb it.
    let b = ls.lock(b"r", Mode::Pr, Flags::empty()).unwrap();
    ls.unlock(b, Flags::empty(), None).unwrap();
    assert!(bast_rx.try_recv().is_err(), "no one was blocked");
    // An incompatible NOQUEUE request fails, and NOQUEUEBAST tells the holder.
    assert!(matches!(
        ls.lock(b"r", Mode::Ex, Flags::NOQUEUE | Flags::NOQUEUEBAST),
        Err(DlmError::Again)
    ));
    assert_eq!(
        bast_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        Mode::Ex
    );
    ls.unlock(a, Flags::empty(), None).unwrap();
    // The gone lock's callbacks are released (no leak, no late call).
    assert!(matches!(
        ast_rx.recv_timeout(Duration::from_secs(30)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    ));
    // A blocked EX waits for the PR holder and is granted on its release.
    let pr = ls.lock(b"r", Mode::Pr, Flags::empty()).unwrap();
    let ls2 = ls.clone();
    let t = std::thread::spawn(move || ls2.lock(b"r", Mode::Ex, Flags::empty()).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    assert!(!t.is_finished(), "EX granted while PR held");
    ls.unlock(pr, Flags::empty(), None).unwrap();
    let ex = t.join().unwrap();
    // The value block written from EX is read by the next VALBLK lock.
    ls.unlock(ex, Flags::VALBLK, Some(Lvb([7; 32]))).unwrap();
    let (c, comp) = ls.lock_lvb(b"r", Mode::Pr, Flags::VALBLK, None).unwrap();
    assert_eq!(comp.lvb, Some(Lvb([7; 32])), "unlock from EX wrote nothing");
    ls.unlock(c, Flags::empty(), None).unwrap();
    // Stale ids: an unlocked id is gone even after its slot is reused.
    let d = ls.lock(b"r", Mode::Ex, Flags::empty()).unwrap();
    assert!(matches!(
        ls.unlock(c, Flags::empty(), None),
        Err(DlmError::NoLock)
    ));
    ls.unlock(d, Flags::empty(), None).unwrap();
}

#[test]
fn orphans_of_a_dead_node_block_until_purged() {
    let dir = tempfile::tempdir().unwrap();
    let dlms = cluster(3, Some(dir.path()));
    let (ls, ms) = join_all(&dlms, "orph");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    // Node 1 masters both resources (first user); node 3 holds them EX,
    // one of them PERSISTENT, then dies.
    for r in [&b"kept"[..], b"plain"] {
        let id = ls[0].lock(r, Mode::Nl, Flags::empty()).unwrap();
        ls[0].unlock(id, Flags::empty(), None).unwrap();
    }
    let nl = ls[0].lock(b"kept", Mode::Nl, Flags::empty()).unwrap();
    let nl2 = ls[0].lock(b"plain", Mode::Nl, Flags::empty()).unwrap();
    ls[2].lock(b"kept", Mode::Ex, Flags::PERSISTENT).unwrap();
    ls[2].lock(b"plain", Mode::Ex, Flags::empty()).unwrap();
    dlms[2].shutdown();
    for m in &ms[..2] {
        m.remove(NodeId(3));
        m.fence(NodeId(3));
    }
    wait_until("recovery", || ls[..2].iter().all(|l| l.is_running()));
    // The plain lock died with its node; the persistent one stays.
    let p = ls[1].lock(b"plain", Mode::Ex, Flags::NOQUEUE).unwrap();
    ls[1].unlock(p, Flags::empty(), None).unwrap();
    assert!(matches!(
        ls[1].lock(b"kept", Mode::Pr, Flags::NOQUEUE),
        Err(DlmError::Again)
    ));
    // Purged from a survivor (an administrator's act): the waiter gets in.
    let (tx, rx) = mpsc::channel();
    let l2 = ls[1].clone();
    std::thread::spawn(move || tx.send(l2.lock(b"kept", Mode::Ex, Flags::empty()).unwrap()));
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "granted past the orphan"
    );
    let dump = |d: &Dlm| dlm::driver::ctl::query(d.ctl_path().unwrap(), "lockdump orph").unwrap();
    assert!(
        dump(&dlms[0]).contains("EX rq IV orphan of node 3"),
        "{}",
        dump(&dlms[0])
    );
    // Through the control socket, as `dlm_tool purge orph 3` does (the
    // API call is `Lockspace::purge_orphans`).
    let ctl = |cmd: &str| dlm::driver::ctl::query(dlms[0].ctl_path().unwrap(), cmd).unwrap();
    assert!(ctl("purge orph 0").starts_with("error: bad node id"));
    assert!(ctl("purge nope 3").starts_with("error: no lockspace"));
    assert!(ctl("purge orph").starts_with("error: usage"));
    assert_eq!(
        ctl("purge orph 3"),
        "purging the orphans of node 3 in orph\n"
    );
    let ex = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("granted once the orphan is purged");
    assert!(!dump(&dlms[0]).contains("orphan"), "{}", dump(&dlms[0]));
    ls[1].unlock(ex, Flags::empty(), None).unwrap();
    ls[0].unlock(nl, Flags::empty(), None).unwrap();
    ls[0].unlock(nl2, Flags::empty(), None).unwrap();
}

#[test]
fn async_posix_locks_complete_by_callback_and_can_be_cancelled() {
    use dlm::plock::Kind;
    let dlms = cluster(2, None);
    let (ls, _ms) = join_all(&dlms, "pa");
    wait_until("running", || ls.iter().all(|l| l.is_running()));
    // Node 1's process 7 write-locks bytes 0..=9 of file 1.
    ls[0].plock(1, 7, Kind::Write, 0, 9, true).unwrap();
    let (tx, rx) = mpsc::channel();
    let call = |tx: mpsc::Sender<Result<(), DlmError>>| -> dlm::PlockFn {
        let tx = std::sync::Mutex::new(tx);
        Box::new(move |r| tx.lock().unwrap().send(r).unwrap())
    };
    // Without waiting: EAGAIN through the callback.
    ls[1]
        .plock_async(1, 8, Kind::Read, 5, 5, false, call(tx.clone()))
        .unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        Err(DlmError::Again)
    ));
    // A waiting request returns at once; cancelled (a signal), its
    // callback says so and it never holds the bytes.
    let req = ls[1]
        .plock_async(1, 8, Kind::Read, 5, 5, true, call(tx.clone()))
        .unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "granted past a writer"
    );
    ls[1].plock_cancel(req).unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        Err(DlmError::Canceled)
    ));
    assert!(matches!(
        ls[1].plock_cancel(req),
        Err(DlmError::NoLock | DlmError::Busy)
    ));
    // Waiting again: granted by callback when the writer unlocks.
    ls[1]
        .plock_async(1, 8, Kind::Read, 5, 5, true, call(tx.clone()))
        .unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    ls[0].punlock(1, 7, 0, 9).unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(
        ls[0]
            .pget(1, 7, Kind::Write, 0, 9)
            .unwrap()
            .map(|p| p.start),
        Some(5),
        "node 2's read lock is held"
    );
    // flock too.
    ls[1]
        .flock_async(2, 1, Kind::Write, false, call(tx))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    assert!(matches!(
        ls[0].flock(2, 2, Kind::Read, false),
        Err(DlmError::Again)
    ));
}

/// While a thread waits in a blocking call for a remote master's answer it
/// reads that master's connection itself; the completion and blocking
/// callbacks of other locks arriving on it must still run on the
/// transport's threads, never inside the blocked call (where they could
/// meet the caller's own locks).
#[test]
fn callbacks_never_run_inside_a_blocked_callers_call() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    let dlms = cluster(2, None);
    let (ls, _ms) = join_all(&dlms, "cbthread");
    wait_until("recovery of the initial view", || {
        ls.iter().all(|l| l.is_running())
    });
    // Node 2 masters both resources (it uses them first).
    for name in [&b"blocking"[..], b"bounce"] {
        let id = ls[1].lock(name, Mode::Ex, Flags::empty()).unwrap();
        ls[1].unlock(id, Flags::empty(), None).unwrap();
    }
    // "bounce" goes back and forth between the nodes by callbacks: NL
    // granted -> convert up to EX; blocking callback -> convert down to NL.
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Arc<Mutex<Vec<std::thread::ThreadId>>> = Default::default();
    for (i, l) in ls.iter().enumerate() {
        let (l2, l3, stop2, threads2) = (l.clone(), l.clone(), stop.clone(), threads.clone());
        let threads3 = threads.clone();
        l.lock_async(
            b"bounce",
            Mode::Nl,
            Flags::empty(),
            None,
            Arc::new(move |c: Completion| {
                if i == 0 {
                    threads2.lock().unwrap().push(std::thread::current().id());
                }
                if c.status == Status::Granted(Mode::Nl) && !stop2.load(Ordering::SeqCst) {
                    let _ = l2.convert_async(c.id, Mode::Ex, Flags::empty(), None);
                }
            }),
            Some(Arc::new(move |id, _mode| {
                if i == 0 {
                    threads3.lock().unwrap().push(std::thread::current().id());
                }
                let _ = l3.convert_async(id, Mode::Nl, Flags::empty(), None);
            })),
        )
        .unwrap();
    }
    // Meanwhile this thread takes and drops a lock mastered by node 2,
    // waiting each time on the connection the bounce's messages come on.
    let me = std::thread::current().id();
    let mut ran = 0;
    for _ in 0..2000 {
        let id = ls[0].lock(b"blocking", Mode::Ex, Flags::empty()).unwrap();
        ls[0].unlock(id, Flags::empty(), None).unwrap();
        ran = threads.lock().unwrap().len();
    }
    stop.store(true, Ordering::SeqCst);
    let seen = threads.lock().unwrap().clone();
    assert!(
        ran >= 20,
        "only {ran} callbacks ran during the blocking calls"
    );
    assert!(
        seen.iter().all(|t| *t != me),
        "a callback ran inside a blocking call"
    );
}

/// Records what a lockspace tells its user of recovery.
#[derive(Default)]
struct RecoverLog(std::sync::Mutex<Vec<String>>);

impl dlm::RecoverOps for RecoverLog {
    fn recover_prep(&self) {
        self.0.lock().unwrap().push("prep".into());
    }
    fn recover_slot(&self, node: NodeId, slot: u32) {
        self.0.lock().unwrap().push(format!("slot {node} {slot}"));
    }
    fn recover_done(&self, _gen: u64, slots: &[(NodeId, u32)], ours: u32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("done {slots:?} ours {ours}"));
    }
}

impl RecoverLog {
    fn has(&self, line: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l == line)
    }
}

#[test]
fn slots_are_agreed_kept_and_a_fenced_nodes_slot_is_reported() {
    let dlms = cluster(3, None);
    let ids: Vec<NodeId> = dlms.iter().map(|d| d.node()).collect();
    let ms: Vec<_> = dlms.iter().map(|_| StaticMembership::new(&ids)).collect();
    let logs: Vec<Arc<RecoverLog>> = dlms.iter().map(|_| Arc::default()).collect();
    let ls: Vec<Lockspace> = (0..3)
        .map(|i| {
            dlms[i]
                .join_with_ops("slots", ms[i].as_ref(), logs[i].clone())
                .unwrap()
        })
        .collect();
    wait_until("first recovery", || ls.iter().all(|l| l.is_running()));
    // Nobody had a slot: they go by node id.
    let first = "done [(NodeId(1), 1), (NodeId(2), 2), (NodeId(3), 3)] ours";
    for (i, log) in logs.iter().enumerate() {
        wait_until("recover_done", || log.has(&format!("{first} {}", i + 1)));
        assert_eq!(ls[i].slot(), i as u32 + 1);
    }
    // Node 2 fails: the survivors are told of its slot only once it is
    // fenced, and keep their own slots.
    for m in &ms[..1] {
        m.remove(NodeId(2));
    }
    ms[2].remove(NodeId(2));
    wait_until("prep", || logs[0].has("prep") && logs[2].has("prep"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!logs[0].has("slot 2 2"), "slot reported before fencing");
    ms[0].fence(NodeId(2));
    ms[2].fence(NodeId(2));
    for log in [&logs[0], &logs[2]] {
        wait_until("recover_slot", || log.has("slot 2 2"));
    }
    let survivors = "done [(NodeId(1), 1), (NodeId(3), 3)] ours";
    wait_until("recover_done", || logs[0].has(&format!("{survivors} 1")));
    wait_until("recover_done", || logs[2].has(&format!("{survivors} 3")));
    // Locking goes on among the survivors.
    let id = ls[0].lock(b"after", Mode::Ex, Flags::empty()).unwrap();
    ls[0].unlock(id, Flags::empty(), None).unwrap();
}
