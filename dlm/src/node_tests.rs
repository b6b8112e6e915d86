//! Node state machine tests: local fast path, directory lookups, message
//! flow between a few nodes delivered by hand, recovery details.

use super::*;

fn name(s: &str) -> ResName {
    ResName::new(s.as_bytes()).unwrap()
}

fn ids(n: u32) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// Delivers every Send until quiet; returns the asts seen per node.
fn pump(nodes: &mut [Node], mut pending: Vec<(NodeId, Action)>) -> Vec<(NodeId, Action)> {
    let mut seen = Vec::new();
    while !pending.is_empty() {
        let (at, a) = pending.remove(0);
        match a {
            Action::Send { to, env } => {
                let mut out = Vec::new();
                let n = nodes.iter_mut().find(|n| n.id() == to).unwrap();
                n.receive(at, env, &mut out);
                pending.extend(out.into_iter().map(|a| (to, a)));
            }
            other => seen.push((at, other)),
        }
    }
    seen
}

fn tag(at: NodeId, out: Vec<Action>) -> Vec<(NodeId, Action)> {
    out.into_iter().map(|a| (at, a)).collect()
}

fn find_name_with_dir(members: &[NodeId], dir: NodeId) -> ResName {
    (0..1000)
        .map(|i| name(&format!("res{i}")))
        .find(|n| dir_node(members, n) == Some(dir))
        .unwrap()
}

#[test]
fn local_directory_and_master_means_no_messages() {
    let m = ids(3);
    let mut n = Node::with_members(NodeId(1), 1, &m);
    let r = find_name_with_dir(&m, NodeId(1));
    let mut out = Vec::new();
    let id = n.lock(r, Mode::Ex, Flags::empty(), None, &mut out).unwrap();
    assert_eq!(
        out,
        vec![Action::Ast {
            id,
            status: Status::Granted(Mode::Ex),
            sbflags: SbFlags::default(),
            lvb: None
        }]
    );
    out.clear();
    n.unlock(id, Flags::empty(), None, &mut out).unwrap();
    assert!(matches!(
        out[..],
        [Action::Ast {
            status: Status::Unlocked,
            ..
        }]
    ));
}

/// A resource mastered by its own directory node has no directory entry:
/// the master copy is the record. Other nodes' lookups still find it, and
/// once the copy is freed the next user becomes master.
#[test]
fn the_directory_node_records_its_own_resources_by_their_master_copy() {
    let m = ids(2);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(1));
    let mut out = Vec::new();
    let mine = nodes[0]
        .lock(r, Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(nodes[0].dir.is_empty());
    assert_eq!(nodes[0].dir_master(&r), Some(NodeId(1)));
    // Node 2 looks the master up, and waits behind node 1's lock.
    out.clear();
    let theirs = nodes[1]
        .lock(r, Mode::Pr, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(2), out));
    assert!(
        seen.iter().any(|(at, a)| *at == NodeId(1)
            && matches!(a, Action::Bast { id, mode: Mode::Pr } if *id == mine)),
        "{seen:?}"
    );
    assert!(nodes[0].dir.is_empty());
    let mut out = Vec::new();
    nodes[0]
        .unlock(mine, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(1), out));
    assert!(seen.iter().any(|(at, a)| *at == NodeId(2)
        && matches!(a, Action::Ast { id, status: Status::Granted(Mode::Pr), .. } if *id == theirs)));
    // Unused everywhere: two sweeps free the master copy, and with it
    // the record; node 2's next request makes node 2 master.
    let mut out = Vec::new();
    nodes[1]
        .unlock(theirs, Flags::empty(), None, &mut out)
        .unwrap();
    pump(&mut nodes, tag(NodeId(2), out));
    for _ in 0..2 {
        for i in 0..2 {
            let mut out = Vec::new();
            nodes[i].sweep(&mut out);
            pump(&mut nodes, tag(NodeId(i as u32 + 1), out));
        }
    }
    assert_eq!(nodes[0].dir_master(&r), None);
    let mut out = Vec::new();
    let again = nodes[1]
        .lock(r, Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(2), out));
    assert!(seen.iter().any(|(at, a)| *at == NodeId(2)
        && matches!(a, Action::Ast { id, status: Status::Granted(Mode::Ex), .. } if *id == again)));
    assert_eq!(nodes[0].dir_master(&r), Some(NodeId(2)));
    assert_eq!(nodes[0].dir.get(&r), Some(&NodeId(2)));
}

/// Names `n<digit>...` keyed by their digit, the rest hashed.
fn digit_keyed() -> Placement {
    Placement::keyed(|n| match n {
        [b'n', d @ b'0'..=b'9', ..] => Some(u64::from(d - b'0')),
        _ => None,
    })
}

#[test]
fn a_keyed_placement_puts_each_directory_entry_where_its_key_says() {
    let m = ids(3);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    for n in &mut nodes {
        n.set_placement(digit_keyed());
    }
    // Key k: member k % 3 of the sorted members, on every node alike.
    for (k, want) in [(0, 1), (1, 2), (2, 3), (4, 2), (9, 1)] {
        let r = name(&format!("n{k}-file"));
        for n in &nodes {
            assert_eq!(n.dir_node(&r), Some(NodeId(want)), "key {k}");
        }
    }
    // Unkeyed names stay where the hash puts them.
    let other = name("other");
    assert_eq!(nodes[0].dir_node(&other), dir_node(&m, &other));
    // Node 2 creating a resource keyed to itself needs no message; one
    // keyed to node 3 asks node 3 and becomes its master.
    let mut out = Vec::new();
    let id = nodes[1]
        .lock(name("n1-mine"), Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(
        matches!(&out[..], [Action::Ast { id: i, status: Status::Granted(Mode::Ex), .. }] if *i == id),
        "{out:?}"
    );
    out.clear();
    let theirs = nodes[1]
        .lock(name("n2-theirs"), Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(
        matches!(&out[..], [Action::Send { to: NodeId(3), .. }]),
        "{out:?}"
    );
    let seen = pump(&mut nodes, tag(NodeId(2), out));
    assert!(seen.iter().any(|(at, a)| *at == NodeId(2)
        && matches!(a, Action::Ast { id, status: Status::Granted(Mode::Ex), .. } if *id == theirs)));
}

#[test]
fn remote_directory_makes_first_user_master() {
    let m = ids(3);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(3));
    // Node 2 uses r first: it becomes master (lookup to node 3).
    let mut out = Vec::new();
    let a = nodes[1]
        .lock(r, Mode::Pr, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(matches!(&out[..], [Action::Send { to: NodeId(3), .. }]));
    let seen = pump(&mut nodes, tag(NodeId(2), out));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(seen[0], (NodeId(2), Action::Ast { id, status: Status::Granted(Mode::Pr), .. }) if id == a)
    );
    assert!(nodes[1].rsbs[&r].core.is_some());
    // Second lock on node 2: local master, no message at all.
    let mut out = Vec::new();
    nodes[1]
        .lock(r, Mode::Cr, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(matches!(
        &out[..],
        [Action::Ast {
            status: Status::Granted(Mode::Cr),
            ..
        }]
    ));
    // Node 1 asks for EX: lookup, request to node 2, bast to node 2's PR.
    let mut out = Vec::new();
    let b = nodes[0]
        .lock(r, Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(1), out));
    assert!(
        seen.iter()
            .any(|s| matches!(s, (NodeId(2), Action::Bast { id, mode: Mode::Ex }) if *id == a)),
        "{seen:?}"
    );
    assert!(nodes[0].lock_info(b).unwrap().grmode.is_none());
}

#[test]
fn lookup_waiters_are_issued_once_master_is_known() {
    let m = ids(4);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(4));
    let mut out = Vec::new();
    nodes[2]
        .lock(r, Mode::Pr, Flags::empty(), None, &mut out)
        .unwrap();
    nodes[2]
        .lock(r, Mode::Pw, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(3), out));
    let grants: Vec<_> = seen
        .iter()
        .filter(|s| {
            matches!(
                s.1,
                Action::Ast {
                    status: Status::Granted(_),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(grants.len(), 1, "{seen:?}");
}

fn view(nodes: &mut [Node], gen: u64, members: &[NodeId]) -> Vec<(NodeId, Action)> {
    let mut pending = Vec::new();
    for n in nodes.iter_mut().filter(|n| members.contains(&n.id())) {
        let mut out = Vec::new();
        n.set_members(gen, members, &mut out);
        pending.extend(tag(n.id(), out));
    }
    pump(nodes, pending)
}

fn fence(nodes: &mut [Node], dead: NodeId, members: &[NodeId]) -> Vec<(NodeId, Action)> {
    let mut pending = Vec::new();
    for n in nodes.iter_mut().filter(|n| members.contains(&n.id())) {
        let mut out = Vec::new();
        n.fenced(dead, &mut out);
        pending.extend(tag(n.id(), out));
    }
    pump(nodes, pending)
}

fn lock(
    nodes: &mut [Node],
    at: usize,
    r: ResName,
    mode: Mode,
    flags: Flags,
    lvb: Option<Lvb>,
) -> (LockId, Vec<(NodeId, Action)>) {
    let mut out = Vec::new();
    let id = nodes[at].lock(r, mode, flags, lvb, &mut out).unwrap();
    let me = nodes[at].id();
    (id, pump(nodes, tag(me, out)))
}

fn granted(seen: &[(NodeId, Action)], who: NodeId, lock: LockId) -> Option<SbFlags> {
    seen.iter().find_map(|(n, a)| match a {
        Action::Ast {
            id,
            status: Status::Granted(_),
            sbflags,
            ..
        } if *n == who && *id == lock => Some(*sbflags),
        _ => None,
    })
}

#[test]
fn dead_ex_holder_waits_for_fencing_then_lvb_is_invalid() {
    let m = ids(3);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(1));
    lock(&mut nodes, 0, r, Mode::Nl, Flags::empty(), None); // node 1 masters r
    let (_, seen) = lock(&mut nodes, 2, r, Mode::Ex, Flags::VALBLK, None);
    assert_eq!(seen.len(), 1);
    let (w, seen) = lock(&mut nodes, 1, r, Mode::Pr, Flags::VALBLK, None);
    assert_eq!(granted(&seen, NodeId(2), w), None);
    let survivors = [NodeId(1), NodeId(2)];
    let seen = view(&mut nodes, 2, &survivors);
    assert_eq!(granted(&seen, NodeId(2), w), None, "granted before fencing");
    assert_eq!(nodes[0].phase(), Phase::WaitFence);
    let seen = fence(&mut nodes, NodeId(3), &survivors);
    let sb = granted(&seen, NodeId(2), w).expect("granted after recovery");
    assert!(sb.contains(SbFlags::VALNOTVALID));
    assert!(nodes[..2].iter().all(|n| n.phase() == Phase::Running));
}

/// Three nodes: node 3 holds a PERSISTENT PW on `r` (mastered by node 1)
/// and dies; once it is fenced, node 2 asks for EX, which the orphan must
/// block. Returns the nodes, `r`, node 3's lock id and node 2's request.
fn orphaned_pw_blocking_ex() -> (Vec<Node>, ResName, LockId, LockId) {
    let m = ids(3);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(1));
    lock(&mut nodes, 0, r, Mode::Nl, Flags::empty(), None); // node 1 masters r
    let (old, _) = lock(&mut nodes, 2, r, Mode::Pw, Flags::PERSISTENT, None);
    let survivors = [NodeId(1), NodeId(2)];
    view(&mut nodes, 2, &survivors);
    fence(&mut nodes, NodeId(3), &survivors);
    let (w, seen) = lock(&mut nodes, 1, r, Mode::Ex, Flags::empty(), None);
    assert_eq!(
        granted(&seen, NodeId(2), w),
        None,
        "orphan PW must block EX"
    );
    (nodes, r, old, w)
}

/// Orphans of node 3 in the master copy (on node 1) of `r`.
fn orphans(nodes: &[Node], r: &ResName) -> usize {
    nodes[0].rsbs[r]
        .core
        .as_ref()
        .unwrap()
        .queue(crate::rsb::Queue::Grant)
        .iter()
        .filter(|l| l.orphan_of == Some(NodeId(3)))
        .count()
}

#[test]
fn persistent_lock_of_dead_node_stays_as_orphan() {
    let (nodes, r, _, _) = orphaned_pw_blocking_ex();
    assert_eq!(orphans(&nodes, &r), 1);
}

#[test]
fn orphan_survives_rejoin_and_is_adopted_by_its_node_only_in_its_mode() {
    let (mut nodes, r, old, w) = orphaned_pw_blocking_ex();
    let m = ids(3);
    // Node 3 restarts and rejoins: a second recovery keeps the orphan.
    nodes[2] = Node::new(NodeId(3), 1, 1);
    let seen = view(&mut nodes, 3, &m);
    assert_eq!(granted(&seen, NodeId(2), w), None, "orphan lost in rejoin");
    assert_eq!(orphans(&nodes, &r), 1);
    assert!(nodes.iter().all(|n| n.phase() == Phase::Running));
    // Adoption in another mode fails and leaves the orphan; the request
    // carries the id the dead incarnation's lock had (ids start over) and
    // is not confused with it.
    let (bad, seen) = lock(&mut nodes, 2, r, Mode::Ex, Flags::ORPHAN, None);
    assert_eq!(bad, old, "the test wants a reused id");
    assert!(seen.iter().any(|(n, a)| *n == NodeId(3)
        && matches!(a, Action::Ast { id, status: Status::Again, .. } if *id == bad)));
    assert_eq!(orphans(&nodes, &r), 1);
    // Adoption in the orphan's mode succeeds.
    let (adopted, seen) = lock(&mut nodes, 2, r, Mode::Pw, Flags::ORPHAN, None);
    assert!(granted(&seen, NodeId(3), adopted).is_some(), "{seen:?}");
    assert_eq!(orphans(&nodes, &r), 0);
    // A second adoption finds no orphan left: EAGAIN.
    let (again, seen) = lock(&mut nodes, 2, r, Mode::Pw, Flags::ORPHAN, None);
    assert!(seen.iter().any(|(n, a)| *n == NodeId(3)
        && matches!(a, Action::Ast { id, status: Status::Again, .. } if *id == again)));
    // Releasing the adopted lock lets the waiting EX in.
    let mut out = Vec::new();
    nodes[2]
        .unlock(adopted, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(3), out));
    assert!(granted(&seen, NodeId(2), w).is_some(), "{seen:?}");
}

#[test]
fn lvb_survives_death_of_its_master() {
    let m = ids(3);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(1));
    lock(&mut nodes, 0, r, Mode::Nl, Flags::empty(), None); // node 1 masters r
    let (a, _) = lock(&mut nodes, 1, r, Mode::Ex, Flags::VALBLK, None);
    let mut out = Vec::new();
    nodes[1]
        .convert(a, Mode::Pr, Flags::VALBLK, Some(Lvb([9; 32])), &mut out)
        .unwrap();
    pump(&mut nodes, tag(NodeId(2), out));
    // Master (node 1) dies; node 2 holds PR with a current copy.
    let survivors = [NodeId(2), NodeId(3)];
    view(&mut nodes, 2, &survivors);
    fence(&mut nodes, NodeId(1), &survivors);
    let (b, seen) = lock(&mut nodes, 2, r, Mode::Cr, Flags::VALBLK, None);
    let ast = seen.iter().find_map(|(_, a)| match a {
        Action::Ast {
            id, sbflags, lvb, ..
        } if *id == b => Some((*sbflags, *lvb)),
        _ => None,
    });
    let (sb, lvb) = ast.expect("granted");
    assert_eq!(lvb, Some(Lvb([9; 32])));
    assert!(!sb.contains(SbFlags::VALNOTVALID));
}

#[test]
fn join_redistributes_directory_without_losing_locks() {
    let all = ids(4);
    let m = ids(3);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    nodes.push(Node::new(NodeId(4), 1, 1));
    let names: Vec<ResName> = (0..12).map(|i| name(&format!("j{i}"))).collect();
    let held: Vec<(usize, LockId)> = names
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                i % 3,
                lock(&mut nodes, i % 3, *r, Mode::Ex, Flags::empty(), None).0,
            )
        })
        .collect();
    view(&mut nodes, 2, &all);
    assert!(nodes.iter().all(|n| n.phase() == Phase::Running));
    for (i, r) in names.iter().enumerate() {
        // The directory node in the new view knows each master.
        let dir = dir_node(&all, r).unwrap();
        let d = nodes.iter().find(|n| n.id() == dir).unwrap();
        assert_eq!(d.dir_master(r), Some(NodeId((i % 3) as u32 + 1)), "{r}");
        // The new node is blocked by the surviving EX locks.
        let (w, seen) = lock(&mut nodes, 3, *r, Mode::Pr, Flags::NOQUEUE, None);
        assert!(seen
            .iter()
            .any(|(_, a)| matches!(a, Action::Ast { id, status: Status::Again, .. } if *id == w)));
    }
    for (at, id) in held {
        let mut out = Vec::new();
        nodes[at]
            .unlock(id, Flags::empty(), None, &mut out)
            .unwrap();
        let me = nodes[at].id();
        let seen = pump(&mut nodes, tag(me, out));
        assert!(seen.iter().any(|(_, a)| matches!(
            a,
            Action::Ast {
                status: Status::Unlocked,
                ..
            }
        )));
    }
}

#[test]
fn requests_made_during_recovery_complete_afterwards() {
    let m = ids(2);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    nodes.push(Node::new(NodeId(3), 1, 1));
    let mut out = Vec::new();
    nodes[0].set_members(2, &ids(3), &mut out);
    assert_eq!(nodes[0].phase(), Phase::Gather);
    let r = name("during");
    let id = nodes[0]
        .lock(r, Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(!out.iter().any(|a| matches!(a, Action::Ast { .. })));
    let mut pending = tag(NodeId(1), out);
    for n in nodes[1..].iter_mut() {
        let mut o = Vec::new();
        n.set_members(2, &ids(3), &mut o);
        pending.extend(tag(n.id(), o));
    }
    let seen = pump(&mut nodes, pending);
    assert!(granted(&seen, NodeId(1), id).is_some(), "{seen:?}");
}

#[test]
fn bad_flag_combinations_are_rejected() {
    let mut n = Node::with_members(NodeId(1), 1, &[NodeId(1)]);
    let mut out = Vec::new();
    let r = name("x");
    assert_eq!(
        n.lock(r, Mode::Pr, Flags::EXPEDITE, None, &mut out),
        Err(NodeError::Invalid)
    );
    assert_eq!(
        n.lock(r, Mode::Pr, Flags::QUECVT, None, &mut out),
        Err(NodeError::Invalid)
    );
    assert_eq!(
        n.lock(r, Mode::Pr, Flags::CONVDEADLK, None, &mut out),
        Err(NodeError::Invalid)
    );
    let id = n.lock(r, Mode::Ex, Flags::empty(), None, &mut out).unwrap();
    assert_eq!(
        n.convert(id, Mode::Nl, Flags::QUECVT, None, &mut out),
        Err(NodeError::Invalid)
    );
    assert_eq!(n.cancel(id, &mut out), Err(NodeError::Busy));
    assert_eq!(
        n.unlock(LockId(999), Flags::empty(), None, &mut out),
        Err(NodeError::NoLock)
    );
}

/// A node dies; the survivors' recovery is cut short after fencing by
/// the view in which it comes back as a new process; only that process
/// gets as far as assigning slots (it takes its old slot, the lowest
/// free one); in the next view it claims that slot. The survivors still
/// report the old process's slot gone: its journal must be recovered
/// (cluster_sim seed 4062 lost a write when it was not).
#[test]
fn slot_of_a_departed_node_is_reported_even_when_claimed_back() {
    let all = ids(3);
    let mut nodes: Vec<Node> = all.iter().map(|&i| Node::new(i, 1, 1)).collect();
    view(&mut nodes, 1, &all);
    assert_eq!(nodes[2].slot(), 3);
    let mut held = Vec::new();
    for n in nodes[..2].iter_mut() {
        let mut out = Vec::new();
        n.set_members(2, &ids(2), &mut out);
        n.fenced(NodeId(3), &mut out);
        held.extend(tag(n.id(), out));
    }
    nodes[2] = Node::new(NodeId(3), 1, 1);
    for n in nodes.iter_mut() {
        let mut out = Vec::new();
        n.set_members(3, &all, &mut out);
        held.extend(tag(n.id(), out));
    }
    // Only the new process hears the others' barrier of view 3.
    let mut later = Vec::new();
    for (from, a) in held {
        match a {
            Action::Send { to: NodeId(3), env } => {
                let mut out = Vec::new();
                nodes[2].receive(from, env, &mut out);
                later.extend(tag(NodeId(3), out));
            }
            other => later.push((from, other)),
        }
    }
    assert_eq!(nodes[2].slot(), 3, "the new process took the old slot");
    for n in nodes.iter_mut() {
        let mut out = Vec::new();
        n.set_members(4, &all, &mut out);
        later.extend(tag(n.id(), out));
    }
    let seen = pump(&mut nodes, later);
    for survivor in ids(2) {
        assert!(
            seen.iter().any(|(at, a)| *at == survivor
                && *a
                    == Action::RecoverSlot {
                        node: NodeId(3),
                        slot: 3
                    }),
            "{survivor} did not report slot 3: {seen:?}"
        );
    }
    assert!(nodes.iter().all(|n| n.phase() == Phase::Running));
}

fn plock_done(seen: &[(NodeId, Action)], who: NodeId, req: u64) -> Option<crate::wire::PlockReply> {
    seen.iter().find_map(|(at, a)| match a {
        Action::PlockDone { req: r, result } if *at == who && *r == req => Some(*result),
        _ => None,
    })
}

/// A waiting F_SETLKW (or flock) whose owner closes the file is answered
/// Canceled, on the plock master (node 1) and on another node alike;
/// before the fix it was dropped and its caller waited forever.
#[test]
fn close_answers_the_owners_waiting_plock_requests() {
    use crate::plock::{Family, Kind};
    use crate::wire::{PlockOp, PlockReply};
    let m = ids(2);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let wlock = |start, end| PlockOp::Lock {
        kind: Kind::Write,
        start,
        end,
        wait: true,
    };
    for fam in [Family::Posix, Family::Flock] {
        for (holder, waiter) in [(0usize, 1usize), (1, 0)] {
            let file = 40 + holder as u64;
            let (h, w) = (nodes[holder].id(), nodes[waiter].id());
            let mut out = Vec::new();
            let held = nodes[holder]
                .plock(fam, file, 1, wlock(0, 9), &mut out)
                .unwrap();
            let seen = pump(&mut nodes, tag(h, out));
            assert_eq!(plock_done(&seen, h, held), Some(PlockReply::Ok));
            let mut out = Vec::new();
            let waiting = nodes[waiter]
                .plock(fam, file, 2, wlock(5, 5), &mut out)
                .unwrap();
            let seen = pump(&mut nodes, tag(w, out));
            assert_eq!(plock_done(&seen, w, waiting), None, "{seen:?}");
            // The waiting owner closes the file.
            let mut out = Vec::new();
            let close = nodes[waiter]
                .plock(fam, file, 2, PlockOp::Close, &mut out)
                .unwrap();
            let seen = pump(&mut nodes, tag(w, out));
            assert_eq!(
                plock_done(&seen, w, waiting),
                Some(PlockReply::Canceled),
                "{fam:?} {seen:?}"
            );
            assert_eq!(plock_done(&seen, w, close), Some(PlockReply::Ok));
            let table = nodes[0].plock_table().unwrap();
            assert!(table.waiting().is_empty());
            assert_eq!(table.dump().len(), 1, "the holder keeps its lock");
            // The holder's close frees the file for the next test.
            let mut out = Vec::new();
            nodes[holder]
                .plock(fam, file, 1, PlockOp::Close, &mut out)
                .unwrap();
            pump(&mut nodes, tag(h, out));
            assert!(nodes[0].plock_table().unwrap().dump().is_empty());
        }
    }
}
