//! Unit tests of the glock core, one rule each, by driving a table by hand.

use super::*;
use Action::*;
use GlockState::{Df, Ex, Sh, Un};

const RG: GlockName = GlockName::rgrp(17);
const INO: GlockName = GlockName::inode(100);

/// A table that forgets a glock as soon as it is idle (the rules below
/// that end in `Forget`); [`keeping`] keeps some.
fn table() -> GlockTable {
    GlockTable::new(GlockConfig {
        idle_kept: 0,
        ..GlockConfig::default()
    })
}

fn keeping(idle_kept: usize) -> GlockTable {
    GlockTable::new(GlockConfig {
        idle_kept,
        ..GlockConfig::default()
    })
}

/// Takes `name` (an rgrp glock: no minimum hold) in SH, releases it and
/// lets another node's EX take it down to UN; returns what the last
/// step asked for.
fn idle_after_use(t: &mut GlockTable, name: GlockName, now: u64) -> Vec<Action> {
    let a = hold(t, name, Sh, now);
    t.release(a, now);
    let out = t.blocking_callback(name, DlmMode::Ex, now);
    assert_eq!(out.last(), Some(&req(name, Sh, Un)));
    t.dlm_granted(name, DlmMode::Nl, now)
}

fn plain() -> HolderFlags {
    HolderFlags::default()
}

fn req(name: GlockName, from: GlockState, to: GlockState) -> Action {
    DlmRequest {
        name,
        from,
        to,
        try_lock: false,
    }
}

/// Acquires `name` in `mode` on a fresh glock and completes the DLM
/// request, returning the granted holder.
fn hold(t: &mut GlockTable, name: GlockName, mode: GlockState, now: u64) -> HolderId {
    let (h, out) = t.acquire(name, mode, plain(), now);
    assert_eq!(out, vec![req(name, Un, mode)]);
    assert_eq!(
        t.dlm_granted(name, mode.dlm_mode(), now),
        vec![Grant { holder: h }]
    );
    h
}

#[test]
fn first_acquire_asks_the_dlm_then_grants() {
    let mut t = table();
    let h = hold(&mut t, RG, Sh, 0);
    assert_eq!(t.glock(&RG).unwrap().state(), Sh);
    assert_eq!(t.holder_glock(h), Some(RG));
}

#[test]
fn compatible_holder_is_granted_from_the_cache() {
    let mut t = table();
    let _a = hold(&mut t, RG, Sh, 0);
    let (b, out) = t.acquire(RG, Sh, plain(), 1);
    assert_eq!(out, vec![Grant { holder: b }]);
}

#[test]
fn released_glock_stays_cached() {
    let mut t = table();
    let a = hold(&mut t, RG, Ex, 0);
    assert_eq!(t.release(a, 1), vec![]);
    let (b, out) = t.acquire(RG, Sh, plain(), 2);
    assert_eq!(out, vec![Grant { holder: b }], "EX covers SH");
}

#[test]
fn local_ex_holders_exclude_each_other() {
    let mut t = table();
    let a = hold(&mut t, RG, Ex, 0);
    let (b, out) = t.acquire(RG, Ex, plain(), 1);
    assert_eq!(out, vec![]);
    let (c, out) = t.acquire(RG, Sh, plain(), 1);
    assert_eq!(out, vec![], "no overtaking a waiting EX");
    assert_eq!(t.release(a, 2), vec![Grant { holder: b }]);
    assert_eq!(t.release(b, 3), vec![Grant { holder: c }]);
}

#[test]
fn promote_from_sh_is_a_bare_convert() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    let (b, out) = t.acquire(RG, Ex, plain(), 1);
    assert_eq!(out, vec![], "waits for the SH holder first");
    assert_eq!(t.release(a, 2), vec![req(RG, Sh, Ex)]);
    assert_eq!(t.dlm_granted(RG, DlmMode::Ex, 3), vec![Grant { holder: b }]);
}

#[test]
fn nothing_is_granted_while_a_transition_is_in_flight() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    let (b, _) = t.acquire(RG, Ex, plain(), 1);
    assert_eq!(t.release(a, 2), vec![req(RG, Sh, Ex)]);
    let (c, out) = t.acquire(RG, Sh, plain(), 3);
    assert_eq!(out, vec![]);
    let out = t.dlm_granted(RG, DlmMode::Ex, 4);
    assert_eq!(out, vec![Grant { holder: b }]);
    assert_eq!(t.release(b, 5), vec![Grant { holder: c }]);
}

/// The order of a demote from EX, by what the other node waits for.
#[test]
fn demotes_from_ex_sync_then_invalidate_then_convert() {
    let cases = [
        (
            DlmMode::Ex,
            vec![
                Sync { name: RG },
                Invalidate {
                    name: RG,
                    keep_metadata: false,
                },
                req(RG, Ex, Un),
            ],
        ),
        (
            DlmMode::Cw,
            vec![
                Sync { name: RG },
                Invalidate {
                    name: RG,
                    keep_metadata: true,
                },
                req(RG, Ex, Df),
            ],
        ),
        (DlmMode::Pr, vec![Sync { name: RG }, req(RG, Ex, Sh)]),
    ];
    for (wanted, expect) in cases {
        let mut t = table();
        let a = hold(&mut t, RG, Ex, 0);
        t.release(a, 1);
        assert_eq!(
            t.blocking_callback(RG, wanted, 2),
            expect,
            "bast {wanted:?}"
        );
    }
}

#[test]
fn demote_from_sh_invalidates_without_sync() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    t.release(a, 1);
    let out = t.blocking_callback(RG, DlmMode::Ex, 2);
    assert_eq!(
        out,
        vec![
            Invalidate {
                name: RG,
                keep_metadata: false
            },
            req(RG, Sh, Un)
        ]
    );
    assert_eq!(t.dlm_granted(RG, DlmMode::Nl, 3), vec![Forget { name: RG }]);
    assert!(t.is_empty());
}

#[test]
fn compatible_bast_is_ignored() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    t.release(a, 1);
    assert_eq!(t.blocking_callback(RG, DlmMode::Pr, 2), vec![]);
    assert!(!t.glock(&RG).unwrap().demote_pending());
}

#[test]
fn stale_bast_for_a_forgotten_glock_is_ignored() {
    let mut t = table();
    assert_eq!(t.blocking_callback(RG, DlmMode::Ex, 0), vec![]);
    assert!(t.is_empty());
}

#[test]
fn demote_to_sh_goes_on_under_sh_holders() {
    // EX cached (a try-EX holder came and went), an SH holder granted from
    // it and kept (a file open): another node's wish for SH is met at once,
    // not when the file is closed.
    let mut t = table();
    let a = hold(&mut t, INO, Ex, 0);
    let (b, out) = t.acquire(INO, Sh, plain(), 1);
    assert_eq!(out, vec![]);
    assert_eq!(t.release(a, 2), vec![Grant { holder: b }]);
    let out = t.blocking_callback(INO, DlmMode::Pr, 100_000);
    assert_eq!(out, vec![Sync { name: INO }, req(INO, Ex, Sh)]);
    assert_eq!(t.dlm_granted(INO, DlmMode::Pr, 100_001), vec![]);
    assert_eq!(t.glock(&INO).unwrap().state(), Sh);
    assert!(!t.glock(&INO).unwrap().demote_pending());
    // An EX holder still makes it wait.
    let mut t = table();
    let a = hold(&mut t, INO, Ex, 0);
    assert_eq!(t.blocking_callback(INO, DlmMode::Pr, 100_000), vec![]);
    assert_eq!(
        t.release(a, 100_001),
        vec![Sync { name: INO }, req(INO, Ex, Sh)]
    );
}

#[test]
fn demote_waits_for_holders_and_blocks_new_ones() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    assert_eq!(t.blocking_callback(RG, DlmMode::Ex, 1), vec![]);
    let (b, out) = t.acquire(RG, Sh, plain(), 2);
    assert_eq!(out, vec![], "a due demote is not starved by new holders");
    let out = t.release(a, 3);
    assert_eq!(
        out,
        vec![
            Invalidate {
                name: RG,
                keep_metadata: false
            },
            req(RG, Sh, Un)
        ]
    );
    assert_eq!(
        t.dlm_granted(RG, DlmMode::Nl, 4),
        vec![req(RG, Un, Sh)],
        "b asks again"
    );
    assert_eq!(t.dlm_granted(RG, DlmMode::Pr, 5), vec![Grant { holder: b }]);
}

#[test]
fn different_basts_merge_to_un() {
    let mut t = table();
    let a = hold(&mut t, RG, Ex, 0);
    t.blocking_callback(RG, DlmMode::Pr, 1);
    t.blocking_callback(RG, DlmMode::Cw, 2);
    let out = t.release(a, 3);
    assert_eq!(out.last(), Some(&req(RG, Ex, Un)));
}

#[test]
fn bast_during_promote_still_grants_the_waiter() {
    let mut t = table();
    let (a, _) = t.acquire(RG, Ex, plain(), 0);
    assert_eq!(t.blocking_callback(RG, DlmMode::Ex, 1), vec![]);
    assert_eq!(t.dlm_granted(RG, DlmMode::Ex, 2), vec![Grant { holder: a }]);
    let out = t.release(a, 3);
    assert_eq!(out.last(), Some(&req(RG, Ex, Un)));
}

#[test]
fn inode_demote_waits_for_the_min_hold_time() {
    let mut t = table();
    let a = hold(&mut t, INO, Ex, 1000);
    assert_eq!(t.blocking_callback(INO, DlmMode::Ex, 1050), vec![]);
    assert_eq!(t.next_tick_ms(), Some(1200));
    assert_eq!(
        t.release(a, 1060),
        vec![],
        "the hold time runs on once the holder is gone"
    );
    let (b, out) = t.acquire(INO, Ex, plain(), 1100);
    assert_eq!(
        out,
        vec![Grant { holder: b }],
        "holders still served during the hold"
    );
    assert_eq!(t.release(b, 1150), vec![]);
    assert_eq!(t.tick(1199), vec![]);
    let out = t.tick(1200);
    assert_eq!(out.last(), Some(&req(INO, Ex, Un)));
    assert_eq!(t.next_tick_ms(), None);
}

#[test]
fn an_inode_glock_nobody_holds_goes_at_once() {
    let mut t = table();
    let a = hold(&mut t, INO, Ex, 1000);
    t.release(a, 1010);
    let out = t.blocking_callback(INO, DlmMode::Ex, 1050);
    assert_eq!(out.last(), Some(&req(INO, Ex, Un)), "no hold time to wait");
    assert_eq!(t.next_tick_ms(), None);
}

#[test]
fn min_hold_restarts_at_every_grant() {
    let mut t = table();
    let (a, _) = t.acquire(INO, Ex, plain(), 0);
    t.blocking_callback(INO, DlmMode::Ex, 10);
    assert_eq!(
        t.dlm_granted(INO, DlmMode::Ex, 500),
        vec![Grant { holder: a }]
    );
    assert_eq!(t.next_tick_ms(), Some(700));
    assert_eq!(t.release(a, 600), vec![]);
    assert_eq!(t.tick(700).last(), Some(&req(INO, Ex, Un)));
}

#[test]
fn inode_bast_after_the_hold_time_demotes_at_once() {
    let mut t = table();
    let a = hold(&mut t, INO, Sh, 0);
    t.release(a, 10);
    let out = t.blocking_callback(INO, DlmMode::Ex, 200);
    assert_eq!(out.last(), Some(&req(INO, Sh, Un)));
}

#[test]
fn due_demote_waits_for_the_holder_not_for_ticks() {
    let mut t = table();
    let a = hold(&mut t, INO, Sh, 0);
    t.blocking_callback(INO, DlmMode::Ex, 50);
    assert_eq!(t.tick(200), vec![]);
    assert_eq!(
        t.next_tick_ms(),
        None,
        "no busy ticking while a holder keeps it"
    );
    assert_eq!(t.release(a, 900).last(), Some(&req(INO, Sh, Un)));
}

#[test]
fn other_types_ignore_the_min_hold_time() {
    let mut t = table();
    let j = GlockName::journal(1);
    let a = hold(&mut t, j, Ex, 0);
    t.release(a, 1);
    assert_eq!(
        t.blocking_callback(j, DlmMode::Ex, 2).last(),
        Some(&req(j, Ex, Un))
    );
}

#[test]
fn nocache_holder_drops_the_glock() {
    let mut t = table();
    let nocache = HolderFlags {
        nocache: true,
        ..plain()
    };
    let (a, _) = t.acquire(INO, Ex, nocache, 0);
    t.dlm_granted(INO, DlmMode::Ex, 0);
    let out = t.release(a, 1);
    assert_eq!(
        out,
        vec![
            Sync { name: INO },
            Invalidate {
                name: INO,
                keep_metadata: false
            },
            req(INO, Ex, Un)
        ]
    );
    assert_eq!(
        t.dlm_granted(INO, DlmMode::Nl, 2),
        vec![Forget { name: INO }]
    );
}

#[test]
fn drop_all_demotes_everything_once_released() {
    let mut t = table();
    let a = hold(&mut t, RG, Ex, 0);
    let b = hold(&mut t, INO, Sh, 0);
    t.release(b, 1);
    let out = t.drop_all(2);
    assert_eq!(
        out,
        vec![
            Invalidate {
                name: INO,
                keep_metadata: false
            },
            req(INO, Sh, Un)
        ]
    );
    assert_eq!(t.release(a, 3).last(), Some(&req(RG, Ex, Un)));
    assert_eq!(
        t.dlm_granted(INO, DlmMode::Nl, 4),
        vec![Forget { name: INO }]
    );
    assert_eq!(t.dlm_granted(RG, DlmMode::Nl, 4), vec![Forget { name: RG }]);
    assert!(t.is_empty());
}

#[test]
fn refused_try_lock_fails_its_holder() {
    let mut t = table();
    let try_lock = HolderFlags {
        try_lock: true,
        ..plain()
    };
    let (a, out) = t.acquire(RG, Ex, try_lock, 0);
    assert_eq!(
        out,
        vec![DlmRequest {
            name: RG,
            from: Un,
            to: Ex,
            try_lock: true
        }]
    );
    assert_eq!(
        t.dlm_failed(RG, DlmFailure::TryFailed, 1),
        vec![Failed { holder: a }]
    );
    assert!(t.is_empty(), "no DLM lock was made, so nothing to forget");
    assert_eq!(t.holder_glock(a), None);
}

#[test]
fn refused_try_lock_leaves_plain_waiters_queued() {
    let mut t = table();
    let try_lock = HolderFlags {
        try_lock: true,
        ..plain()
    };
    let (a, _) = t.acquire(RG, Ex, try_lock, 0);
    let (b, out) = t.acquire(RG, Ex, plain(), 0);
    assert_eq!(out, vec![]);
    let out = t.dlm_failed(RG, DlmFailure::TryFailed, 1);
    assert_eq!(out, vec![Failed { holder: a }, req(RG, Un, Ex)]);
    assert_eq!(t.dlm_granted(RG, DlmMode::Ex, 2), vec![Grant { holder: b }]);
}

#[test]
fn conversion_deadlock_goes_through_un() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    let (b, _) = t.acquire(RG, Ex, plain(), 1);
    assert_eq!(t.release(a, 2), vec![req(RG, Sh, Ex)]);
    let out = t.dlm_failed(RG, DlmFailure::Deadlock, 3);
    assert_eq!(
        out,
        vec![
            Invalidate {
                name: RG,
                keep_metadata: false
            },
            req(RG, Sh, Un)
        ]
    );
    assert_eq!(t.dlm_granted(RG, DlmMode::Nl, 4), vec![req(RG, Un, Ex)]);
    assert_eq!(t.dlm_granted(RG, DlmMode::Ex, 5), vec![Grant { holder: b }]);
}

#[test]
fn dlm_error_fails_the_waiters() {
    let mut t = table();
    let (a, _) = t.acquire(RG, Sh, plain(), 0);
    assert_eq!(
        t.dlm_failed(RG, DlmFailure::Error, 1),
        vec![Failed { holder: a }]
    );
    assert!(t.is_empty());
}

#[test]
fn cancelling_a_waiter_lets_the_next_go() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    let (b, _) = t.acquire(RG, Ex, plain(), 1);
    let (c, _) = t.acquire(RG, Sh, plain(), 1);
    assert_eq!(t.release(b, 2), vec![Grant { holder: c }]);
    t.release(a, 3);
    t.release(c, 3);
}

#[test]
fn df_holder_on_sh_glock_converts_with_invalidate() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    t.release(a, 1);
    let (b, out) = t.acquire(RG, Df, plain(), 2);
    assert_eq!(
        out,
        vec![
            Invalidate {
                name: RG,
                keep_metadata: true
            },
            req(RG, Sh, Df)
        ]
    );
    assert_eq!(t.dlm_granted(RG, DlmMode::Cw, 3), vec![Grant { holder: b }]);
}

#[test]
#[should_panic(expected = "unknown holder")]
fn double_release_is_a_bug() {
    let mut t = table();
    let a = hold(&mut t, RG, Sh, 0);
    t.release(a, 1);
    t.release(a, 2);
}

#[test]
fn an_idle_glock_keeps_its_nl_lock_and_is_taken_again_from_un() {
    let mut t = keeping(4);
    assert_eq!(idle_after_use(&mut t, RG, 0), vec![]);
    assert_eq!(t.glock(&RG).unwrap().state(), Un);
    assert_eq!(t.idle_len(), 1);
    // Taken again: one DLM request from UN (the driver converts its NL
    // lock), and it is no longer idle.
    let (h, out) = t.acquire(RG, Ex, plain(), 1);
    assert_eq!(out, vec![req(RG, Un, Ex)]);
    assert_eq!(t.idle_len(), 0);
    assert_eq!(t.dlm_granted(RG, DlmMode::Ex, 1), vec![Grant { holder: h }]);
}

#[test]
fn beyond_the_kept_number_the_longest_idle_glock_is_forgotten() {
    let mut t = keeping(2);
    let names: Vec<GlockName> = (1..=4).map(GlockName::rgrp).collect();
    assert_eq!(idle_after_use(&mut t, names[0], 0), vec![]);
    assert_eq!(idle_after_use(&mut t, names[1], 1), vec![]);
    // Used again, names[0] is idle more recently than names[1].
    assert_eq!(idle_after_use(&mut t, names[0], 2), vec![]);
    assert_eq!(
        idle_after_use(&mut t, names[2], 3),
        vec![Forget { name: names[1] }]
    );
    assert_eq!(
        idle_after_use(&mut t, names[3], 4),
        vec![Forget { name: names[0] }]
    );
    assert_eq!(t.idle_len(), 2);
    assert_eq!(t.len(), 2);
    assert!(t.glock(&names[1]).is_none() && t.glock(&names[0]).is_none());
}

#[test]
fn drop_all_and_drop_cached_forget_idle_glocks() {
    let mut t = keeping(8);
    let (a, b, c) = (GlockName::rgrp(1), GlockName::rgrp(2), GlockName::rgrp(3));
    idle_after_use(&mut t, a, 0);
    idle_after_use(&mut t, b, 0);
    // A cached glock asked to go (a shrinker) is forgotten once at UN.
    let h = hold(&mut t, c, Sh, 1);
    t.release(h, 1);
    assert_eq!(t.drop_cached(c, 2).last(), Some(&req(c, Sh, Un)));
    assert_eq!(t.dlm_granted(c, DlmMode::Nl, 3), vec![Forget { name: c }]);
    assert_eq!(t.drop_all(4), vec![Forget { name: a }, Forget { name: b }]);
    assert!(t.is_empty());
    assert_eq!(t.idle_len(), 0);
}

/// A table that keeps at most `cached_kept` unused glocks cached (and
/// forgets idle ones at once).
fn caching(cached_kept: usize) -> GlockTable {
    GlockTable::new(GlockConfig {
        idle_kept: 0,
        cached_kept,
        ..GlockConfig::default()
    })
}

/// The glocks dropped to UN by `out` (the bound on unused glocks).
fn dropped(out: &[Action]) -> Vec<GlockName> {
    out.iter()
        .filter_map(|a| match a {
            DlmRequest { name, to: Un, .. } => Some(*name),
            _ => None,
        })
        .collect()
}

#[test]
fn the_bound_drops_glocks_in_the_order_they_were_last_used() {
    // More glocks than one look for the longest unused finds (64 at a
    // time), so that the order holds across looks.
    let mut t = caching(100);
    let names: Vec<GlockName> = (0..200).map(GlockName::rgrp).collect();
    for (i, &n) in names[..100].iter().enumerate() {
        let h = hold(&mut t, n, Sh, i as u64);
        assert_eq!(t.release(h, i as u64), vec![]);
    }
    // The even ones used again, from the cache: the odd ones are now
    // the longest unused, then the even ones in the order used.
    for &n in names[..100].iter().step_by(2) {
        let h = t.acquire_cached(n, Sh, plain()).expect("cached in SH");
        assert!(t.release_cached(h));
    }
    let mut gone = Vec::new();
    for (i, &n) in names[100..].iter().enumerate() {
        let now = 1000 + i as u64;
        let h = hold(&mut t, n, Sh, now);
        // The last holder of a glock beyond the bound: not at once.
        assert!(!t.release_cached(h));
        let out = t.release(h, now);
        gone.extend(dropped(&out));
        assert_eq!(t.unused_len(), 100);
    }
    let odd = names[..100].iter().skip(1).step_by(2);
    let even = names[..100].iter().step_by(2);
    let want: Vec<GlockName> = odd.chain(even).copied().collect();
    assert_eq!(gone, want);
}

#[test]
fn beyond_the_kept_number_the_longest_unused_cached_glock_is_dropped() {
    let mut t = caching(2);
    let names: Vec<GlockName> = (1..=3).map(GlockName::rgrp).collect();
    let a = hold(&mut t, names[0], Ex, 0);
    assert_eq!(t.release(a, 0), vec![]);
    let b = hold(&mut t, names[1], Ex, 1);
    assert_eq!(t.release(b, 1), vec![]);
    assert_eq!(t.unused_len(), 2);
    // Used again, names[0] is unused more recently than names[1].
    let (a, out) = t.acquire(names[0], Sh, plain(), 2);
    assert_eq!(out, vec![Grant { holder: a }]);
    assert_eq!(t.unused_len(), 1);
    assert_eq!(t.release(a, 2), vec![]);
    // A held glock is not unused, so nothing is dropped while it is held.
    let c = hold(&mut t, names[2], Ex, 3);
    assert_eq!(t.unused_len(), 2);
    // Released, it makes three: the longest unused goes to UN as any
    // demote from EX does, and is forgotten there.
    assert_eq!(
        t.release(c, 4),
        vec![
            Sync { name: names[1] },
            Invalidate {
                name: names[1],
                keep_metadata: false,
            },
            req(names[1], Ex, Un),
        ]
    );
    assert_eq!(t.unused_len(), 2);
    assert_eq!(
        t.dlm_granted(names[1], DlmMode::Nl, 5),
        vec![Forget { name: names[1] }]
    );
    assert!(t.glock(&names[1]).is_none());
    assert_eq!(t.len(), 2);
    // Taken again later, it starts afresh from the DLM.
    let (b, out) = t.acquire(names[1], Sh, plain(), 6);
    assert_eq!(out, vec![req(names[1], Un, Sh)]);
    assert_eq!(
        t.dlm_granted(names[1], DlmMode::Pr, 6),
        vec![Grant { holder: b }]
    );
}
