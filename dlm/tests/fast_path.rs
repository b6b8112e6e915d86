//! The blocking API's fast paths (`Node::try_lock_here`,
//! `Node::try_unlock_here`) against the general path: two nodes get the
//! same random operations, one always through `lock`/`unlock`, the other
//! trying the fast path first; after every step their locks, resources
//! and callbacks must be the same (the fast path only leaves out the
//! caller's own completion, which its caller returns directly).

use dlm::node::{Action, Node};
use dlm::{Flags, LockId, Lvb, Mode, NodeId, ResName, Status};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Lock {
        res: u8,
        mode: Mode,
        flags: Flags,
    },
    Unlock {
        pick: usize,
        flags: Flags,
        lvb: u8,
    },
    Convert {
        pick: usize,
        mode: Mode,
        flags: Flags,
    },
    Cancel {
        pick: usize,
    },
    /// A sweep on both: a resource unused at two sweeps in a row is
    /// freed, and its next lock makes it anew.
    Sweep,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop::sample::select(Mode::ALL.to_vec())
}

fn lock_flags() -> impl Strategy<Value = Flags> {
    prop::sample::select(vec![
        Flags::empty(),
        Flags::NOQUEUE,
        Flags::NOQUEUE | Flags::NOQUEUEBAST,
        Flags::PERSISTENT,
        Flags::VALBLK,
        Flags::NOORDER,
        Flags::HEADQUE,
    ])
}

fn unlock_flags() -> impl Strategy<Value = Flags> {
    prop::sample::select(vec![
        Flags::empty(),
        Flags::VALBLK,
        Flags::IVVALBLK,
        Flags::FORCEUNLOCK,
    ])
}

fn convert_flags() -> impl Strategy<Value = Flags> {
    prop::sample::select(vec![
        Flags::empty(),
        Flags::NOQUEUE,
        Flags::VALBLK,
        Flags::CONVDEADLK,
        Flags::QUECVT,
    ])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, mode(), lock_flags()).prop_map(|(res, mode, flags)| Op::Lock { res, mode, flags }),
        4 => (any::<usize>(), unlock_flags(), any::<u8>())
            .prop_map(|(pick, flags, lvb)| Op::Unlock { pick, flags, lvb }),
        2 => (any::<usize>(), mode(), convert_flags())
            .prop_map(|(pick, mode, flags)| Op::Convert { pick, mode, flags }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => Just(Op::Sweep),
    ]
}

/// Everything observable about a node's locks and master copies.
fn state(n: &Node) -> String {
    let mut locks: Vec<String> = n.locks().map(|l| format!("{l:?}")).collect();
    locks.sort();
    let mut res: Vec<String> = n
        .resources()
        .map(|(name, e)| format!("{name:?} {e:?}"))
        .collect();
    res.sort();
    format!("{locks:#?}\n{res:#?}")
}

fn name(res: u8) -> ResName {
    ResName::new(format!("res-{res}").as_bytes()).expect("name")
}

fn pick(n: &Node, i: usize) -> Option<LockId> {
    let mut ids: Vec<LockId> = n.locks().map(|l| l.id).collect();
    ids.sort();
    (!ids.is_empty()).then(|| ids[i % ids.len()])
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let me = NodeId(1);
    let mut slow = Node::with_members(me, 1, &[me]);
    let mut fast = Node::with_members(me, 1, &[me]);
    let (mut out_s, mut out_f) = (Vec::new(), Vec::new());
    for op in ops {
        out_s.clear();
        out_f.clear();
        match op {
            Op::Lock { res, mode, flags } => {
                let r_s = slow.lock(name(res), mode, flags, None, &mut out_s);
                match fast.try_lock_here(&name(res), mode, flags) {
                    Some(id) => {
                        // What the general path reports for it.
                        prop_assert_eq!(r_s, Ok(id));
                        let granted = out_s.iter().any(|a| {
                            matches!(a, Action::Ast { id: i, status: Status::Granted(m), .. }
                                if *i == id && *m == mode)
                        });
                        prop_assert!(granted, "fast grant the general path did not make");
                        out_s.retain(|a| !matches!(a, Action::Ast { id: i, .. } if *i == id));
                    }
                    None => {
                        let r_f = fast.lock(name(res), mode, flags, None, &mut out_f);
                        prop_assert_eq!(r_s, r_f);
                    }
                }
            }
            Op::Unlock {
                pick: p,
                flags,
                lvb,
            } => {
                let Some(id) = pick(&slow, p) else { continue };
                let lvb = (lvb % 2 == 0).then_some(Lvb([lvb; 32]));
                let r_s = slow.unlock(id, flags, lvb, &mut out_s);
                if fast.try_unlock_here(id, flags, lvb) {
                    prop_assert_eq!(r_s, Ok(()));
                    let unlocked = out_s.iter().any(|a| {
                        matches!(a, Action::Ast { id: i, status: Status::Unlocked, .. } if *i == id)
                    });
                    prop_assert!(unlocked, "fast unlock the general path did not make");
                    out_s.retain(|a| !matches!(a, Action::Ast { id: i, .. } if *i == id));
                } else {
                    let r_f = fast.unlock(id, flags, lvb, &mut out_f);
                    prop_assert_eq!(r_s, r_f);
                }
            }
            Op::Convert {
                pick: p,
                mode,
                flags,
            } => {
                let Some(id) = pick(&slow, p) else { continue };
                let r_s = slow.convert(id, mode, flags, None, &mut out_s);
                let r_f = fast.convert(id, mode, flags, None, &mut out_f);
                prop_assert_eq!(r_s, r_f);
            }
            Op::Cancel { pick: p } => {
                let Some(id) = pick(&slow, p) else { continue };
                prop_assert_eq!(slow.cancel(id, &mut out_s), fast.cancel(id, &mut out_f));
            }
            Op::Sweep => {
                slow.sweep(&mut out_s);
                fast.sweep(&mut out_f);
            }
        }
        prop_assert_eq!(&out_s, &out_f);
        prop_assert_eq!(state(&slow), state(&fast));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn fast_paths_leave_the_state_the_general_path_leaves(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

#[test]
fn fast_paths_are_taken_in_the_common_case() {
    let me = NodeId(1);
    let mut n = Node::with_members(me, 1, &[me]);
    let mut out = Vec::new();
    let r = name(0);
    // The first lock makes this node master, on the fast path too (the
    // node is the directory of every name); from then on both fast paths
    // apply to plain EX lock/unlock and to compatible PR locks.
    let id = n
        .try_lock_here(&r, Mode::Ex, Flags::empty())
        .expect("fast new");
    assert_eq!(n.resources().count(), 1);
    n.unlock(id, Flags::empty(), None, &mut out)
        .expect("unlock");
    let a = n
        .try_lock_here(&r, Mode::Pr, Flags::empty())
        .expect("fast PR");
    let b = n
        .try_lock_here(&r, Mode::Pr, Flags::empty())
        .expect("fast PR");
    // EX now conflicts: the fast path declines and changes nothing.
    let before = state(&n);
    assert!(n.try_lock_here(&r, Mode::Ex, Flags::empty()).is_none());
    assert_eq!(state(&n), before);
    assert!(n.try_unlock_here(a, Flags::empty(), None));
    assert!(n.try_unlock_here(b, Flags::empty(), None));
    assert!(
        !n.try_unlock_here(b, Flags::empty(), None),
        "already unlocked"
    );
    assert_eq!(n.locks().count(), 0);
}

/// One master copy driven by random operations through the general
/// `request`/`unlock`; before each, a clone takes the quick form
/// (`request_now`/`unlock_now`) when it applies, and both must agree.
mod rsb_quick {
    use super::*;
    use dlm::rsb::{MasterLkb, Rsb, RsbEvent};
    use dlm::LockKey;

    #[derive(Clone, Debug)]
    enum ROp {
        Request { mode: Mode, flags: Flags, lvb: bool },
        Unlock { pick: usize, flags: Flags, lvb: u8 },
        Convert { pick: usize, mode: Mode },
    }

    fn rop() -> impl Strategy<Value = ROp> {
        prop_oneof![
            (mode(), lock_flags(), any::<bool>()).prop_map(|(mode, flags, lvb)| ROp::Request {
                mode,
                flags,
                lvb
            }),
            (any::<usize>(), unlock_flags(), any::<u8>())
                .prop_map(|(pick, flags, lvb)| ROp::Unlock { pick, flags, lvb }),
            (any::<usize>(), mode()).prop_map(|(pick, mode)| ROp::Convert { pick, mode }),
        ]
    }

    fn keys(r: &Rsb) -> Vec<LockKey> {
        use dlm::rsb::Queue;
        [Queue::Grant, Queue::Convert, Queue::Wait]
            .into_iter()
            .flat_map(|q| r.queue(q).iter().map(|l| l.key))
            .collect()
    }

    fn run(ops: Vec<ROp>) -> Result<(), TestCaseError> {
        let mut rsb = Rsb::new();
        let mut next = 1;
        for op in ops {
            let mut ev: Vec<RsbEvent> = Vec::new();
            match op {
                ROp::Request { mode, flags, lvb } => {
                    let key = LockKey {
                        node: NodeId(1 + next % 3),
                        id: LockId(next),
                    };
                    next += 1;
                    let lvb = lvb.then_some(Lvb([next as u8; 32]));
                    let lkb = MasterLkb::new(key, mode, flags, lvb);
                    let mut quick = rsb.clone();
                    let q = quick.request_now(lkb);
                    rsb.request(lkb, &mut ev).expect("request");
                    if let Some((sbflags, lvb)) = q {
                        let want = RsbEvent::Cast {
                            key,
                            status: Status::Granted(mode),
                            sbflags,
                            lvb,
                        };
                        prop_assert_eq!(&ev, &vec![want]);
                        prop_assert_eq!(format!("{quick:?}"), format!("{rsb:?}"));
                    }
                }
                ROp::Unlock { pick, flags, lvb } => {
                    let ks = keys(&rsb);
                    if ks.is_empty() {
                        continue;
                    }
                    let key = ks[pick % ks.len()];
                    let lvb = (lvb % 2 == 0).then_some(Lvb([lvb; 32]));
                    let mut quick = rsb.clone();
                    let q = quick.unlock_now(key, flags, lvb);
                    let r = rsb.unlock(key, flags, lvb, &mut ev);
                    if q {
                        prop_assert_eq!(r, Ok(()));
                        let want = RsbEvent::Cast {
                            key,
                            status: Status::Unlocked,
                            sbflags: Default::default(),
                            lvb: None,
                        };
                        prop_assert_eq!(&ev, &vec![want]);
                        prop_assert_eq!(format!("{quick:?}"), format!("{rsb:?}"));
                    }
                }
                ROp::Convert { pick, mode } => {
                    let ks = keys(&rsb);
                    if ks.is_empty() {
                        continue;
                    }
                    let _ = rsb.convert(ks[pick % ks.len()], mode, Flags::VALBLK, None, &mut ev);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn quick_forms_match_request_and_unlock(ops in prop::collection::vec(rop(), 1..50)) {
            run(ops)?;
        }
    }
}
