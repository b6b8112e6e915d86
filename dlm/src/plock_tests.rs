//! fcntl/flock semantics of the plock table.

use super::*;

fn o(n: u32, id: u64) -> Owner {
    Owner {
        node: NodeId(n),
        id,
    }
}

fn pl(owner: Owner, kind: Kind, start: u64, end: u64) -> Plock {
    Plock {
        owner,
        kind,
        start,
        end,
    }
}

const P: Family = Family::Posix;

fn mine(t: &PlockTable, owner: Owner) -> Vec<(Kind, u64, u64)> {
    t.dump()
        .into_iter()
        .filter(|(_, _, p)| p.owner == owner)
        .map(|(_, _, p)| (p.kind, p.start, p.end))
        .collect()
}

#[test]
fn unlock_in_the_middle_splits() {
    let mut t = PlockTable::new();
    let a = o(1, 10);
    assert_eq!(
        t.lock(P, 1, 0, pl(a, Kind::Write, 0, 99), false),
        PlockResult::Granted
    );
    t.unlock(P, 1, a, 40, 59);
    assert_eq!(
        mine(&t, a),
        vec![(Kind::Write, 0, 39), (Kind::Write, 60, 99)]
    );
}

#[test]
fn same_owner_relock_changes_type_in_range_and_merges() {
    let mut t = PlockTable::new();
    let a = o(1, 10);
    t.lock(P, 1, 0, pl(a, Kind::Read, 0, 99), false);
    t.lock(P, 1, 0, pl(a, Kind::Write, 20, 29), false);
    assert_eq!(
        mine(&t, a),
        vec![
            (Kind::Read, 0, 19),
            (Kind::Write, 20, 29),
            (Kind::Read, 30, 99)
        ]
    );
    t.lock(P, 1, 0, pl(a, Kind::Read, 20, 29), false);
    assert_eq!(mine(&t, a), vec![(Kind::Read, 0, 99)]);
    // Adjacent ranges merge too.
    t.lock(P, 1, 0, pl(a, Kind::Read, 100, 199), false);
    assert_eq!(mine(&t, a), vec![(Kind::Read, 0, 199)]);
}

#[test]
fn readers_share_writers_conflict_and_getlk_reports() {
    let mut t = PlockTable::new();
    let (a, b) = (o(1, 1), o(2, 1));
    t.lock(P, 1, 0, pl(a, Kind::Read, 0, 9), false);
    assert_eq!(
        t.lock(P, 1, 0, pl(b, Kind::Read, 5, 20), false),
        PlockResult::Granted
    );
    let r = t.lock(P, 1, 0, pl(b, Kind::Write, 0, 0), false);
    assert_eq!(r, PlockResult::Conflict(pl(a, Kind::Read, 0, 9)));
    assert_eq!(
        t.get(P, 1, &pl(b, Kind::Write, 0, 0)),
        Some(pl(a, Kind::Read, 0, 9))
    );
    assert_eq!(
        t.get(P, 1, &pl(b, Kind::Write, 10, 30)),
        None,
        "own locks never conflict"
    );
    // Different file, different family: independent.
    assert_eq!(
        t.lock(P, 2, 0, pl(b, Kind::Write, 0, 9), false),
        PlockResult::Granted
    );
    assert_eq!(
        t.lock(Family::Flock, 1, 0, pl(b, Kind::Write, 0, u64::MAX), false),
        PlockResult::Granted
    );
}

#[test]
fn waiter_is_granted_when_the_conflict_goes() {
    let mut t = PlockTable::new();
    let (a, b) = (o(1, 1), o(2, 1));
    t.lock(P, 1, 0, pl(a, Kind::Write, 0, 99), false);
    assert_eq!(
        t.lock(P, 1, 7, pl(b, Kind::Write, 50, 60), true),
        PlockResult::Queued
    );
    assert!(t.unlock(P, 1, a, 0, 10).is_empty(), "still overlaps 50..60");
    let g = t.unlock(P, 1, a, 40, 70);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].req, 7);
    assert_eq!(mine(&t, b), vec![(Kind::Write, 50, 60)]);
}

#[test]
fn edeadlk_on_a_wait_cycle_across_files() {
    let mut t = PlockTable::new();
    let (a, b, c) = (o(1, 1), o(2, 1), o(3, 1));
    t.lock(P, 1, 0, pl(a, Kind::Write, 0, 0), false);
    t.lock(P, 2, 0, pl(b, Kind::Write, 0, 0), false);
    t.lock(P, 3, 0, pl(c, Kind::Write, 0, 0), false);
    assert_eq!(
        t.lock(P, 2, 1, pl(a, Kind::Write, 0, 0), true),
        PlockResult::Queued
    ); // a waits b
    assert_eq!(
        t.lock(P, 3, 2, pl(b, Kind::Write, 0, 0), true),
        PlockResult::Queued
    ); // b waits c
    assert_eq!(
        t.lock(P, 1, 3, pl(c, Kind::Write, 0, 0), true),
        PlockResult::Deadlock
    ); // c would wait a
       // Non-overlapping request of c does not deadlock.
    assert_eq!(
        t.lock(P, 1, 4, pl(c, Kind::Write, 1, 1), true),
        PlockResult::Granted
    );
}

#[test]
fn dead_node_locks_are_purged_and_waiters_granted() {
    let mut t = PlockTable::new();
    let (a, b) = (o(1, 1), o(2, 1));
    t.lock(P, 1, 0, pl(a, Kind::Write, 0, u64::MAX), false);
    t.lock(P, 1, 9, pl(b, Kind::Read, 100, 200), true);
    let g = t.purge_node(NodeId(1));
    assert_eq!(g.iter().map(|w| w.req).collect::<Vec<_>>(), vec![9]);
    assert!(mine(&t, a).is_empty());
    assert!(!t.cancel(P, 1, 9), "already granted");
}

#[test]
fn process_exit_releases_everything() {
    let mut t = PlockTable::new();
    let a = o(1, 1);
    t.lock(P, 1, 0, pl(a, Kind::Write, 0, 9), false);
    t.lock(P, 1, 0, pl(a, Kind::Read, 20, 29), false);
    t.purge_owner(P, 1, a);
    assert!(t.dump().is_empty());
}

#[test]
fn close_withdraws_the_owners_own_waiters() {
    let mut t = PlockTable::new();
    let (a, b, c) = (o(1, 1), o(2, 1), o(2, 2));
    t.lock(P, 1, 0, pl(a, Kind::Write, 0, 99), false);
    t.lock(P, 1, 0, pl(b, Kind::Read, 200, 299), false);
    // b waits behind a (one thread of a process), c waits behind b.
    assert_eq!(
        t.lock(P, 1, 7, pl(b, Kind::Write, 50, 50), true),
        PlockResult::Queued
    );
    assert_eq!(
        t.lock(P, 1, 8, pl(c, Kind::Write, 250, 250), true),
        PlockResult::Queued
    );
    // b closes the file (another thread): its waiter is handed back, not
    // silently dropped, and c, blocked only by b's lock, is granted.
    let p = t.purge_owner(P, 1, b);
    assert_eq!(
        p.withdrawn.iter().map(|w| w.req).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(p.granted.iter().map(|w| w.req).collect::<Vec<_>>(), vec![8]);
    assert!(t.waiting().is_empty());
    assert!(mine(&t, b).is_empty());
    assert_eq!(mine(&t, c), vec![(Kind::Write, 250, 250)]);
    // Another file's waiters of the same owner stay.
    t.lock(P, 2, 0, pl(a, Kind::Write, 0, 0), false);
    t.lock(P, 2, 9, pl(b, Kind::Write, 0, 0), true);
    assert!(t.purge_owner(P, 1, b).withdrawn.is_empty());
    assert_eq!(t.waiting().len(), 1);
}

proptest::proptest! {
    /// Random lock/unlock sequences: the owner's locks always equal a
    /// byte-by-byte model, never overlap each other, and are merged.
    #[test]
    fn ranges_match_a_byte_model(ops in proptest::collection::vec((0u64..40, 0u64..40, 0u8..3), 1..40)) {
        let mut t = PlockTable::new();
        let a = o(1, 1);
        let mut bytes = [None::<Kind>; 40];
        for (s, e, k) in ops {
            let (s, e) = (s.min(e), s.max(e));
            let kind = match k { 0 => None, 1 => Some(Kind::Read), _ => Some(Kind::Write) };
            match kind {
                None => { t.unlock(P, 1, a, s, e); }
                Some(k) => { proptest::prop_assert_eq!(t.lock(P, 1, 0, pl(a, k, s, e), false), PlockResult::Granted); }
            }
            for b in &mut bytes[s as usize..=e as usize] { *b = kind; }
            let locks = mine(&t, a);
            let mut model = [None::<Kind>; 40];
            for (k, s, e) in &locks {
                for b in &mut model[*s as usize..=*e as usize] {
                    proptest::prop_assert!(b.is_none(), "overlap");
                    *b = Some(*k);
                }
            }
            proptest::prop_assert_eq!(model, bytes);
            for w in locks.windows(2) {
                proptest::prop_assert!(!(w[0].0 == w[1].0 && w[0].2 + 1 == w[1].1), "not merged: {:?}", w);
            }
        }
    }
}
