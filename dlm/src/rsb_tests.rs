//! Scenario tests of the grant rules, named after the rule they check.

use super::*;
use crate::types::{LockId, NodeId};
use Mode::*;

fn key(n: u32) -> LockKey {
    LockKey {
        node: NodeId(1),
        id: LockId(n),
    }
}

fn req(rsb: &mut Rsb, n: u32, mode: Mode, flags: Flags) -> Vec<RsbEvent> {
    let mut out = Vec::new();
    rsb.request(MasterLkb::new(key(n), mode, flags, None), &mut out)
        .unwrap();
    out
}

fn conv(rsb: &mut Rsb, n: u32, mode: Mode, flags: Flags) -> Vec<RsbEvent> {
    let mut out = Vec::new();
    rsb.convert(key(n), mode, flags, None, &mut out).unwrap();
    out
}

fn unlock(rsb: &mut Rsb, n: u32) -> Vec<RsbEvent> {
    let mut out = Vec::new();
    rsb.unlock(key(n), Flags::empty(), None, &mut out).unwrap();
    out
}

fn granted(out: &[RsbEvent], n: u32) -> Option<Mode> {
    out.iter().find_map(|e| match e {
        RsbEvent::Cast {
            key: k,
            status: Status::Granted(m),
            ..
        } if *k == key(n) => Some(*m),
        _ => None,
    })
}

fn status(out: &[RsbEvent], n: u32) -> Option<Status> {
    out.iter().find_map(|e| match e {
        RsbEvent::Cast { key: k, status, .. } if *k == key(n) => Some(*status),
        _ => None,
    })
}

fn basts(out: &[RsbEvent]) -> Vec<(u32, Mode)> {
    out.iter()
        .filter_map(|e| match e {
            RsbEvent::Bast { key, mode } => Some((key.id.0, *mode)),
            _ => None,
        })
        .collect()
}

#[test]
fn compatible_new_requests_are_granted_at_once() {
    let mut r = Rsb::new();
    assert_eq!(granted(&req(&mut r, 1, Pr, Flags::empty()), 1), Some(Pr));
    assert_eq!(granted(&req(&mut r, 2, Cr, Flags::empty()), 2), Some(Cr));
    assert_eq!(r.queue(Queue::Grant).len(), 2);
}

#[test]
fn incompatible_request_waits_and_sends_bast_with_waiting_mode() {
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    let out = req(&mut r, 2, Ex, Flags::empty());
    assert_eq!(status(&out, 2), None);
    assert_eq!(basts(&out), vec![(1, Ex)]);
    let out = unlock(&mut r, 1);
    assert_eq!(status(&out, 1), Some(Status::Unlocked));
    assert_eq!(granted(&out, 2), Some(Ex));
}

#[test]
fn new_request_does_not_pass_an_older_waiter() {
    // 6-4: a compatible new request waits behind an incompatible waiter.
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    req(&mut r, 2, Ex, Flags::empty());
    let out = req(&mut r, 3, Pr, Flags::empty());
    assert_eq!(status(&out, 3), None);
    let out = unlock(&mut r, 1);
    assert_eq!(granted(&out, 2), Some(Ex));
    assert_eq!(granted(&out, 3), None);
    let out = unlock(&mut r, 2);
    assert_eq!(granted(&out, 3), Some(Pr));
}

#[test]
fn noqueue_fails_with_again_and_noqueuebast_still_basts() {
    let mut r = Rsb::new();
    req(&mut r, 1, Ex, Flags::empty());
    let out = req(&mut r, 2, Pr, Flags::NOQUEUE);
    assert_eq!(status(&out, 2), Some(Status::Again));
    assert!(basts(&out).is_empty());
    let out = req(&mut r, 3, Pr, Flags::NOQUEUE | Flags::NOQUEUEBAST);
    assert_eq!(status(&out, 3), Some(Status::Again));
    assert_eq!(basts(&out), vec![(1, Pr)]);
    assert!(r.find(key(3)).is_none());
}

#[test]
fn conversions_are_granted_before_waiters() {
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    req(&mut r, 2, Pr, Flags::empty());
    req(&mut r, 3, Ex, Flags::empty()); // waits
    let out = conv(&mut r, 2, Ex, Flags::empty()); // converts, blocked by 1
    assert_eq!(status(&out, 2), None);
    let out = unlock(&mut r, 1);
    assert_eq!(granted(&out, 2), Some(Ex));
    assert_eq!(granted(&out, 3), None);
}

#[test]
fn in_place_conversion_ignores_waiters_unless_quecvt() {
    let mut r = Rsb::new();
    req(&mut r, 1, Nl, Flags::empty());
    req(&mut r, 2, Cr, Flags::empty());
    req(&mut r, 3, Ex, Flags::empty()); // waits on 2 (CR)
                                        // NL->CR is compatible with everything granted: granted in place.
    assert_eq!(granted(&conv(&mut r, 1, Cr, Flags::empty()), 1), Some(Cr));
    // QUECVT with an empty convert queue is granted too.
    assert_eq!(granted(&conv(&mut r, 1, Cw, Flags::QUECVT), 1), Some(Cw));
}

#[test]
fn quecvt_queues_behind_other_conversions() {
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    req(&mut r, 2, Nl, Flags::empty());
    req(&mut r, 3, Nl, Flags::empty());
    conv(&mut r, 2, Ex, Flags::empty()); // queued behind PR
    let out = conv(&mut r, 3, Cr, Flags::QUECVT);
    assert_eq!(status(&out, 3), None, "QUECVT must queue behind 2");
    assert_eq!(r.find(key(3)).unwrap().0, Queue::Convert);
    // Without QUECVT the same conversion would have been granted in place.
    let mut r2 = Rsb::new();
    req(&mut r2, 1, Pr, Flags::empty());
    req(&mut r2, 2, Nl, Flags::empty());
    req(&mut r2, 3, Nl, Flags::empty());
    conv(&mut r2, 2, Ex, Flags::empty());
    assert_eq!(granted(&conv(&mut r2, 3, Cr, Flags::empty()), 3), Some(Cr));
}

#[test]
fn quecvt_downward_is_invalid() {
    let mut r = Rsb::new();
    req(&mut r, 1, Ex, Flags::empty());
    let mut out = Vec::new();
    assert_eq!(
        r.convert(key(1), Nl, Flags::QUECVT, None, &mut out),
        Err(RsbError::Invalid)
    );
}

#[test]
fn conversion_deadlock_returns_edeadlk() {
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    req(&mut r, 2, Pr, Flags::empty());
    assert_eq!(status(&conv(&mut r, 1, Ex, Flags::empty()), 1), None);
    let out = conv(&mut r, 2, Ex, Flags::empty());
    assert_eq!(status(&out, 2), Some(Status::Deadlock));
    // 2 keeps PR on the grant queue; 1 still converts.
    assert_eq!(r.find(key(2)).unwrap().1.grmode, Some(Pr));
    assert_eq!(r.find(key(1)).unwrap().0, Queue::Convert);
}

#[test]
fn convdeadlk_demotes_to_nl_and_lets_the_other_through() {
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    req(&mut r, 2, Pr, Flags::empty());
    conv(&mut r, 1, Ex, Flags::empty());
    let out = conv(&mut r, 2, Ex, Flags::CONVDEADLK);
    // 2 was demoted to NL, so 1 gets EX; 2 waits for EX.
    assert_eq!(granted(&out, 1), Some(Ex));
    assert!(out.contains(&RsbEvent::Demoted { key: key(2) }));
    let out = unlock(&mut r, 1);
    match out
        .iter()
        .find(|e| matches!(e, RsbEvent::Cast { key: k, .. } if *k == key(2)))
    {
        Some(RsbEvent::Cast {
            status, sbflags, ..
        }) => {
            assert_eq!(*status, Status::Granted(Ex));
            assert!(sbflags.contains(SbFlags::DEMOTED));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expedite_nl_passes_the_queues() {
    let mut r = Rsb::new();
    req(&mut r, 1, Ex, Flags::empty());
    req(&mut r, 2, Pr, Flags::empty());
    let out = req(&mut r, 3, Nl, Flags::empty());
    assert_eq!(status(&out, 3), None, "plain NL waits behind 2");
    let out = req(&mut r, 4, Nl, Flags::EXPEDITE);
    assert_eq!(granted(&out, 4), Some(Nl));
    let mut out = Vec::new();
    assert_eq!(
        r.request(MasterLkb::new(key(5), Pr, Flags::EXPEDITE, None), &mut out),
        Err(RsbError::Invalid)
    );
}

#[test]
fn altpr_grants_the_alternate_mode() {
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    let out = req(&mut r, 2, Pw, Flags::ALTPR);
    assert_eq!(granted(&out, 2), Some(Pr));
    match out[0] {
        RsbEvent::Cast { sbflags, .. } => assert!(sbflags.contains(SbFlags::ALTMODE)),
        _ => panic!(),
    }
}

#[test]
fn cancel_reverts_conversion_and_removes_waiter() {
    let mut r = Rsb::new();
    req(&mut r, 1, Ex, Flags::empty());
    req(&mut r, 2, Nl, Flags::empty());
    req(&mut r, 3, Pr, Flags::empty());
    conv(&mut r, 2, Pr, Flags::empty());
    let mut out = Vec::new();
    assert!(r.cancel(key(2), &mut out).unwrap());
    assert_eq!(status(&out, 2), Some(Status::Canceled));
    assert_eq!(r.find(key(2)).unwrap().1.grmode, Some(Nl));
    out.clear();
    assert!(r.cancel(key(3), &mut out).unwrap());
    assert!(r.find(key(3)).is_none());
    out.clear();
    assert!(
        !r.cancel(key(1), &mut out).unwrap(),
        "granted: nothing to cancel"
    );
    assert!(out.is_empty());
}

#[test]
fn unlock_of_waiter_needs_forceunlock() {
    let mut r = Rsb::new();
    req(&mut r, 1, Ex, Flags::empty());
    req(&mut r, 2, Ex, Flags::empty());
    let mut out = Vec::new();
    assert_eq!(
        r.unlock(key(2), Flags::empty(), None, &mut out),
        Err(RsbError::Busy)
    );
    r.unlock(key(2), Flags::FORCEUNLOCK, None, &mut out)
        .unwrap();
    assert_eq!(status(&out, 2), Some(Status::Unlocked));
    assert!(r.find(key(2)).is_none());
}

#[test]
fn lvb_written_on_release_from_pw_ex_and_read_on_grant() {
    let mut r = Rsb::new();
    let v = Lvb([7; 32]);
    let mut out = Vec::new();
    r.request(MasterLkb::new(key(1), Ex, Flags::VALBLK, None), &mut out)
        .unwrap();
    r.convert(key(1), Nl, Flags::VALBLK, Some(v), &mut out)
        .unwrap();
    assert_eq!(r.lvb(), (Some(v), 1, true));
    out.clear();
    r.request(MasterLkb::new(key(2), Pr, Flags::VALBLK, None), &mut out)
        .unwrap();
    match out[0] {
        RsbEvent::Cast { lvb, .. } => assert_eq!(lvb, Some((v, 1))),
        _ => panic!(),
    }
    // PR release never writes.
    r.unlock(key(2), Flags::VALBLK, Some(Lvb([9; 32])), &mut out)
        .unwrap();
    assert_eq!(r.lvb().0, Some(v));
    // Unlock from EX writes; IVVALBLK invalidates.
    r.convert(key(1), Ex, Flags::empty(), None, &mut out)
        .unwrap();
    r.unlock(key(1), Flags::IVVALBLK, None, &mut out).unwrap();
    assert!(!r.lvb().2);
    out.clear();
    r.request(MasterLkb::new(key(3), Cr, Flags::VALBLK, None), &mut out)
        .unwrap();
    match out[0] {
        RsbEvent::Cast { sbflags, .. } => assert!(sbflags.contains(SbFlags::VALNOTVALID)),
        _ => panic!(),
    }
}

#[test]
fn purge_of_dead_ex_holder_invalidates_lvb_and_grants_waiter() {
    let mut r = Rsb::new();
    req(&mut r, 1, Ex, Flags::empty());
    req(&mut r, 2, Pr, Flags::empty());
    assert!(r.purge(|l| l.key == key(1)));
    let mut out = Vec::new();
    r.grant_pending_locks(&mut out);
    assert_eq!(granted(&out, 2), Some(Pr));
    assert!(!r.lvb().2);
}

#[test]
fn pr_holder_gets_cw_bast_when_cw_waits() {
    let mut r = Rsb::new();
    req(&mut r, 1, Pr, Flags::empty());
    let out = req(&mut r, 2, Cw, Flags::empty());
    assert_eq!(basts(&out), vec![(1, Cw)]);
}

#[test]
fn no_repeated_bast_for_same_or_lower_mode() {
    let mut r = Rsb::new();
    req(&mut r, 1, Ex, Flags::empty());
    assert_eq!(basts(&req(&mut r, 2, Pr, Flags::empty())), vec![(1, Pr)]);
    assert!(basts(&req(&mut r, 3, Pr, Flags::empty())).is_empty());
    assert!(basts(&req(&mut r, 4, Cr, Flags::empty())).is_empty());
    assert_eq!(basts(&req(&mut r, 5, Ex, Flags::empty())), vec![(1, Ex)]);
}
