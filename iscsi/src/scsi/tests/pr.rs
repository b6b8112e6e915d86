//! SPC-4 5.9 persistent reservations and SPC-2 RESERVE / RELEASE.

use super::harness::*;
use crate::scsi::{status, LunOptions, NexusId, ScsiResponse, ScsiTarget, TaskMgmt};

fn pr_out(sa: u8, ty: u8, key: u64, sark: u64, flags: u8) -> (Vec<u8>, Vec<u8>) {
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    p[20] = flags;
    (vec![0x5f, sa, ty, 0, 0, 0, 0, 0, 24, 0], p)
}

fn prout(f: &Fixture, n: NexusId, sa: u8, ty: u8, key: u64, sark: u64) -> ScsiResponse {
    let (c, p) = pr_out(sa, ty, key, sark, 0);
    f.exec_on(n, LUN, &c, &p)
}

fn register(f: &Fixture, n: NexusId, key: u64) {
    assert_eq!(
        prout(f, n, 6, 0, 0, key).status,
        status::GOOD,
        "REGISTER AND IGNORE EXISTING KEY"
    );
}

fn reserve(f: &Fixture, n: NexusId, key: u64, ty: u8) -> ScsiResponse {
    prout(f, n, 1, ty, key, 0)
}

fn pr_in(f: &Fixture, n: NexusId, sa: u8) -> Vec<u8> {
    let r = f.exec_on(n, LUN, &[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(r.status, status::GOOD);
    r.data_in
}

fn keys(f: &Fixture, n: NexusId) -> Vec<u64> {
    let d = pr_in(f, n, 0);
    d[8..]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect()
}

fn generation(f: &Fixture, n: NexusId) -> u32 {
    u32::from_be_bytes(pr_in(f, n, 0)[0..4].try_into().unwrap())
}

/// (key, type) of the reservation, if any.
fn reservation(f: &Fixture, n: NexusId) -> Option<(u64, u8)> {
    let d = pr_in(f, n, 1);
    if u32::from_be_bytes(d[4..8].try_into().unwrap()) == 0 {
        return None;
    }
    Some((
        u64::from_be_bytes(d[8..16].try_into().unwrap()),
        d[21] & 0x0f,
    ))
}

#[test]
fn spc4_5_9_7_register_unregister_and_generation() {
    let f = Fixture::new();
    assert!(keys(&f, f.nexus).is_empty());
    let g0 = generation(&f, f.nexus);
    assert_eq!(prout(&f, f.nexus, 0, 0, 0, 0xaa).status, status::GOOD);
    assert_eq!(keys(&f, f.nexus), vec![0xaa]);
    assert!(generation(&f, f.nexus) > g0);
    // Wrong reservation key: RESERVATION CONFLICT.
    assert_eq!(
        prout(&f, f.nexus, 0, 0, 0xbb, 0xcc).status,
        status::RESERVATION_CONFLICT
    );
    // Re-register with the right key changes it.
    assert_eq!(prout(&f, f.nexus, 0, 0, 0xaa, 0xcc).status, status::GOOD);
    assert_eq!(keys(&f, f.nexus), vec![0xcc]);
    // Unregistered nexus with a non-zero key: conflict.
    let b = f.login("b");
    assert_eq!(
        prout(&f, b, 0, 0, 0x11, 0x22).status,
        status::RESERVATION_CONFLICT
    );
    // Unregister.
    assert_eq!(prout(&f, f.nexus, 0, 0, 0xcc, 0).status, status::GOOD);
    assert!(keys(&f, f.nexus).is_empty());
}

#[test]
fn spc4_6_16_parameter_list_length_and_fields() {
    let f = Fixture::new();
    let (mut c, p) = pr_out(0, 0, 0, 1, 0);
    c[8] = 20;
    assert_sense(&f.exec(&c, &p[..20]), 5, 0x1a, 0);
    // APTPL without a state directory is refused.
    let (c, p) = pr_out(0, 0, 0, 1, 0x01);
    let r = f.exec(&c, &p);
    assert_sense(&r, 5, 0x26, 0);
    assert_eq!(field_pointer(&r), (true, false, 20));
    // SPEC_I_PT is not supported.
    let (c, p) = pr_out(0, 0, 0, 1, 0x08);
    assert_sense(&f.exec(&c, &p), 5, 0x26, 0);
    // Invalid TYPE.
    register(&f, f.nexus, 1);
    assert_sense(&reserve(&f, f.nexus, 1, 2), 5, 0x24, 0);
    // PR IN with a reserved service action.
    assert_sense(
        &f.exec(&[0x5e, 0x04, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]),
        5,
        0x24,
        0,
    );
}

#[test]
fn spc4_5_9_9_reserve_needs_registration_and_conflicts_with_other_holders() {
    let f = Fixture::new();
    let b = f.login("b");
    assert_eq!(
        reserve(&f, f.nexus, 5, 1).status,
        status::RESERVATION_CONFLICT,
        "not registered"
    );
    register(&f, f.nexus, 5);
    register(&f, b, 6);
    assert_eq!(reserve(&f, f.nexus, 5, 1).status, status::GOOD);
    assert_eq!(reservation(&f, b), Some((5, 1)));
    assert_eq!(
        reserve(&f, f.nexus, 5, 1).status,
        status::GOOD,
        "same type again is fine"
    );
    assert_eq!(
        reserve(&f, f.nexus, 5, 3).status,
        status::RESERVATION_CONFLICT,
        "other type"
    );
    assert_eq!(reserve(&f, b, 6, 1).status, status::RESERVATION_CONFLICT);
    // Release with the wrong type.
    assert_sense(&prout(&f, f.nexus, 2, 3, 5, 0), 5, 0x26, 0x04);
    // Release by a non-holder does nothing.
    assert_eq!(prout(&f, b, 2, 1, 6, 0).status, status::GOOD);
    assert!(reservation(&f, b).is_some());
    assert_eq!(prout(&f, f.nexus, 2, 1, 5, 0).status, status::GOOD);
    assert_eq!(reservation(&f, b), None);
}

/// Expected outcome for a non-holder: (registered read, registered write,
/// unregistered read, unregistered write); true = allowed.
/// SPC-4 table 66 / SBC-3 table 13, spelled out per type.
const ACCESS: [(u8, [bool; 4]); 6] = [
    (1, [true, false, true, false]),   // Write Exclusive
    (3, [false, false, false, false]), // Exclusive Access
    (5, [true, true, true, false]),    // WE registrants only
    (6, [true, true, false, false]),   // EA registrants only
    (7, [true, true, true, false]),    // WE all registrants
    (8, [true, true, false, false]),   // EA all registrants
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Always,
    Read,
    Write,
}

/// Commands with their class and Data-Out.
fn commands() -> Vec<(&'static str, Class, Vec<u8>, Vec<u8>)> {
    let mut ws = write16(4, 1, 0);
    ws[0] = 0x93;
    let mut caw = vec![0u8; 16];
    caw[0] = 0x89;
    caw[13] = 1;
    let mut rc16 = vec![0u8; 16];
    rc16[0] = 0x9e;
    rc16[1] = 0x10;
    rc16[13] = 32;
    let mut glba = vec![0u8; 16];
    glba[0] = 0x9e;
    glba[1] = 0x12;
    glba[13] = 24;
    vec![
        ("READ(10)", Class::Read, rw10(0x28, 0, 1, 0), vec![]),
        ("READ(16)", Class::Read, read16(0, 1), vec![]),
        ("READ(6)", Class::Read, rw6(0x08, 0, 1), vec![]),
        ("VERIFY(10)", Class::Read, rw10(0x2f, 0, 1, 0), vec![]),
        ("PRE-FETCH(10)", Class::Read, rw10(0x34, 0, 1, 0), vec![]),
        ("GET LBA STATUS", Class::Read, glba, vec![]),
        ("WRITE(10)", Class::Write, rw10(0x2a, 0, 1, 0), block(0, 1)),
        ("WRITE(16)", Class::Write, write16(0, 1, 0), block(0, 1)),
        (
            "WRITE AND VERIFY(10)",
            Class::Write,
            rw10(0x2e, 0, 1, 0),
            block(0, 1),
        ),
        ("WRITE SAME(16)", Class::Write, ws, block(0, 1)),
        ("COMPARE AND WRITE", Class::Write, caw, block(0, 2)),
        (
            "SYNCHRONIZE CACHE(10)",
            Class::Write,
            rw10(0x35, 0, 0, 0),
            vec![],
        ),
        (
            "MODE SELECT(6)",
            Class::Write,
            vec![0x15, 0x10, 0, 0, 0, 0],
            vec![],
        ),
        (
            "MODE SENSE(6)",
            Class::Write,
            vec![0x1a, 0, 0x3f, 0, 255, 0],
            vec![],
        ),
        (
            "START STOP UNIT stop",
            Class::Write,
            vec![0x1b, 0, 0, 0, 0, 0],
            vec![],
        ),
        (
            "PREVENT ALLOW prevent",
            Class::Write,
            vec![0x1e, 0, 0, 0, 1, 0],
            vec![],
        ),
        ("TEST UNIT READY", Class::Always, tur(), vec![]),
        ("INQUIRY", Class::Always, vec![0x12, 0, 0, 0, 36, 0], vec![]),
        (
            "REPORT LUNS",
            Class::Always,
            vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            vec![],
        ),
        (
            "READ CAPACITY(10)",
            Class::Always,
            vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![],
        ),
        ("READ CAPACITY(16)", Class::Always, rc16, vec![]),
        (
            "REQUEST SENSE",
            Class::Always,
            vec![0x03, 0, 0, 0, 18, 0],
            vec![],
        ),
        (
            "PERSISTENT RESERVE IN",
            Class::Always,
            vec![0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0],
            vec![],
        ),
        (
            "START STOP UNIT start",
            Class::Always,
            vec![0x1b, 0, 0, 0, 1, 0],
            vec![],
        ),
        (
            "PREVENT ALLOW allow",
            Class::Always,
            vec![0x1e, 0, 0, 0, 0, 0],
            vec![],
        ),
    ]
}

#[test]
fn spc4_5_9_1_conflict_table_all_types_registered_and_not() {
    for (ty, expect) in ACCESS {
        for registered in [true, false] {
            let f = Fixture::new();
            let holder = f.nexus;
            let other = f.login("other");
            register(&f, holder, 0x1000);
            if registered {
                register(&f, other, 0x2000);
            }
            assert_eq!(reserve(&f, holder, 0x1000, ty).status, status::GOOD);
            for (name, class, cdb, data) in commands() {
                let allowed = match class {
                    Class::Always => true,
                    Class::Read => expect[if registered { 0 } else { 2 }],
                    Class::Write => expect[if registered { 1 } else { 3 }],
                };
                let r = f.exec_on(other, LUN, &cdb, &data);
                let conflict = r.status == status::RESERVATION_CONFLICT;
                assert_eq!(
                    !conflict, allowed,
                    "type {ty} registered={registered} {name}: {r:02x?}"
                );
                // The holder is never in conflict.
                let h = f.exec_on(holder, LUN, &cdb, &data);
                assert_ne!(
                    h.status,
                    status::RESERVATION_CONFLICT,
                    "holder, type {ty}, {name}"
                );
            }
        }
    }
}

#[test]
fn spc4_5_9_11_4_preempt_and_abort_fences_the_preempted_nexus() {
    // What fence_scsi does: every node registers, one holds WE-RO, a
    // survivor preempts the failed node's key.
    let f = Fixture::new();
    let victim = f.login("victim");
    register(&f, f.nexus, 0xa1);
    register(&f, victim, 0xb2);
    assert_eq!(reserve(&f, f.nexus, 0xa1, 5).status, status::GOOD);
    f.ok(&rw10(0x2a, 0, 1, 0), &block(1, 1));
    assert_eq!(
        f.exec_on(victim, LUN, &rw10(0x2a, 0, 1, 0), &block(2, 1))
            .status,
        status::GOOD,
        "registrant may write"
    );
    assert_eq!(prout(&f, f.nexus, 5, 5, 0xa1, 0xb2).status, status::GOOD);
    assert_eq!(keys(&f, f.nexus), vec![0xa1]);
    // The victim first learns REGISTRATIONS PREEMPTED, then is fenced.
    assert_sense(
        &f.exec_on(victim, LUN, &rw10(0x2a, 0, 1, 0), &block(3, 1)),
        6,
        0x2a,
        0x05,
    );
    for _ in 0..3 {
        let r = f.exec_on(victim, LUN, &rw10(0x2a, 0, 1, 0), &block(3, 1));
        assert_eq!(r.status, status::RESERVATION_CONFLICT);
    }
    assert!(f.read(0, 1) == block(2, 1), "the fenced write never landed");
    // Re-registering is the victim's only way back (after unfencing).
    assert_eq!(
        prout(&f, victim, 0, 0, 0xb2, 0xb3).status,
        status::RESERVATION_CONFLICT
    );
}

#[test]
fn spc4_5_9_11_4_preempt_takes_over_the_reservation() {
    let f = Fixture::new();
    let b = f.login("b");
    register(&f, f.nexus, 1);
    register(&f, b, 2);
    assert_eq!(reserve(&f, b, 2, 3).status, status::GOOD);
    assert_eq!(prout(&f, f.nexus, 4, 1, 1, 2).status, status::GOOD);
    assert_eq!(reservation(&f, f.nexus), Some((1, 1)));
    assert_sense(&f.exec_on(b, LUN, &tur(), &[]), 6, 0x2a, 0x05);
    // SARK 0 with a non all-registrants reservation: invalid.
    assert_sense(&prout(&f, f.nexus, 4, 1, 1, 0), 5, 0x26, 0);
    // PREEMPT of a key nobody holds: conflict.
    assert_eq!(
        prout(&f, f.nexus, 4, 1, 1, 0x99).status,
        status::RESERVATION_CONFLICT
    );
}

#[test]
fn spc4_5_9_11_4_preempt_all_registrants_with_zero_key() {
    let f = Fixture::new();
    let b = f.login("b");
    let c = f.login("c");
    register(&f, f.nexus, 1);
    register(&f, b, 2);
    register(&f, c, 3);
    assert_eq!(reserve(&f, b, 2, 8).status, status::GOOD);
    assert_eq!(
        reservation(&f, f.nexus),
        Some((0, 8)),
        "all-registrants shows key 0"
    );
    assert_eq!(prout(&f, f.nexus, 4, 3, 1, 0).status, status::GOOD);
    assert_eq!(keys(&f, f.nexus), vec![1]);
    assert_eq!(reservation(&f, f.nexus), Some((1, 3)));
}

#[test]
fn spc4_5_9_11_clear_and_release_report_unit_attentions() {
    let f = Fixture::new();
    let b = f.login("b");
    register(&f, f.nexus, 1);
    register(&f, b, 2);
    assert_eq!(reserve(&f, f.nexus, 1, 6).status, status::GOOD);
    assert_eq!(prout(&f, f.nexus, 2, 6, 1, 0).status, status::GOOD);
    assert_sense(&f.exec_on(b, LUN, &tur(), &[]), 6, 0x2a, 0x04);
    assert_eq!(reserve(&f, f.nexus, 1, 1).status, status::GOOD);
    assert_eq!(prout(&f, f.nexus, 3, 0, 1, 0).status, status::GOOD);
    assert!(keys(&f, f.nexus).is_empty());
    assert_eq!(reservation(&f, f.nexus), None);
    assert_sense(&f.exec_on(b, LUN, &tur(), &[]), 6, 0x2a, 0x03);
    assert_eq!(
        f.exec(&tur(), &[]).status,
        status::GOOD,
        "the clearing nexus gets no UA"
    );
}

#[test]
fn spc4_5_9_unregistering_the_holder_releases_the_reservation() {
    let f = Fixture::new();
    let b = f.login("b");
    register(&f, f.nexus, 1);
    register(&f, b, 2);
    assert_eq!(reserve(&f, f.nexus, 1, 5).status, status::GOOD);
    assert_eq!(prout(&f, f.nexus, 0, 0, 1, 0).status, status::GOOD);
    assert_sense(&f.exec_on(b, LUN, &tur(), &[]), 6, 0x2a, 0x04);
    assert_eq!(reservation(&f, b), None);
    // All-registrants: the reservation stays while a registrant remains.
    register(&f, f.nexus, 1);
    assert_eq!(reserve(&f, f.nexus, 1, 7).status, status::GOOD);
    assert_eq!(prout(&f, f.nexus, 0, 0, 1, 0).status, status::GOOD);
    assert_eq!(reservation(&f, b), Some((0, 7)));
    assert_eq!(
        prout(&f, b, 2, 7, 2, 0).status,
        status::GOOD,
        "any registrant may release"
    );
    assert_eq!(reservation(&f, b), None);
}

#[test]
fn spc4_6_15_report_capabilities_and_read_full_status() {
    let f = Fixture::new();
    let caps = pr_in(&f, f.nexus, 2);
    assert_eq!(u16::from_be_bytes([caps[0], caps[1]]), 8);
    assert_eq!(caps[2] & 0x01, 0, "PTPL_C clear without a state dir");
    assert_eq!(
        u16::from_be_bytes([caps[4], caps[5]]),
        0xea01,
        "all six types"
    );
    register(&f, f.nexus, 0x77);
    assert_eq!(reserve(&f, f.nexus, 0x77, 1).status, status::GOOD);
    let d = pr_in(&f, f.nexus, 3);
    let len = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize;
    assert_eq!(len + 8, d.len());
    let desc = &d[8..];
    assert_eq!(u64::from_be_bytes(desc[0..8].try_into().unwrap()), 0x77);
    assert_eq!(desc[12] & 0x01, 1, "R_HOLDER");
    assert_eq!(desc[13], 1, "type");
    assert_eq!(
        u16::from_be_bytes([desc[18], desc[19]]),
        1,
        "relative target port"
    );
    let tid_len = u32::from_be_bytes(desc[20..24].try_into().unwrap()) as usize;
    let tid = &desc[24..24 + tid_len];
    assert_eq!(tid[0], 0x45, "iSCSI, format 01b");
    assert!(tid[4..].starts_with(b"iqn.2026-01.test:init1,i,0x230000000001\0"));
    assert_eq!(tid_len % 4, 0);
}

#[test]
fn spc4_5_9_8_register_and_move() {
    let f = Fixture::new();
    let b = f.login("b");
    register(&f, f.nexus, 1);
    assert_eq!(reserve(&f, f.nexus, 1, 3).status, status::GOOD);
    let name = b"iqn.2026-01.test:b,i,0x230000000001\0\0\0\0";
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&1u64.to_be_bytes());
    p[8..16].copy_from_slice(&9u64.to_be_bytes());
    p[17] = 0x02; // UNREG
    p[18..20].copy_from_slice(&1u16.to_be_bytes());
    let mut tid = vec![0x45, 0];
    tid.extend_from_slice(&(name.len() as u16).to_be_bytes());
    tid.extend_from_slice(name);
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    let c = [0x5f, 7, 3, 0, 0, 0, 0, 0, p.len() as u8, 0];
    f.ok(&c, &p);
    assert_eq!(keys(&f, b), vec![9]);
    assert_eq!(reservation(&f, b), Some((9, 3)));
    assert_eq!(
        f.exec(&read16(0, 1), &[]).status,
        status::RESERVATION_CONFLICT,
        "the old holder lost access"
    );
    assert_eq!(f.exec_on(b, LUN, &read16(0, 1), &[]).status, status::GOOD);
}

#[test]
fn spc4_5_9_4_aptpl_survives_a_new_target_on_the_same_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_path_buf();
    let f = Fixture::with(|o| o.state_dir = Some(dir.clone()));
    let b = f.login("b");
    let caps = pr_in(&f, f.nexus, 2);
    assert_eq!(caps[2] & 0x01, 1, "PTPL_C");
    register(&f, b, 0xdef);
    // The APTPL bit of the latest REGISTER applies to all registrations.
    let (c, p) = pr_out(6, 0, 0, 0xabc, 0x01);
    f.ok(&c, &p);
    assert_eq!(reserve(&f, f.nexus, 0xabc, 1).status, status::GOOD);
    assert_eq!(pr_in(&f, f.nexus, 2)[3] & 0x01, 1, "PTPL_A");
    // "Power cycle": a new target process on the same state directory.
    let t2 = ScsiTarget::new("iqn.2026-01.test:disk", 1);
    t2.add_lun(
        LUN,
        &f.path,
        LunOptions {
            state_dir: Some(dir.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let a = t2.nexus_login("iqn.2026-01.test:init1,i,0x230000000001", 1);
    let b2 = t2.nexus_login("iqn.2026-01.test:b,i,0x230000000001", 1);
    let run = |n, cdb: &[u8], data: &[u8]| {
        let cmd = crate::scsi::ScsiCommand {
            lun: LUN,
            cdb,
            data_out: data,
            expected_in_len: 4096,
            tag: 1,
        };
        let mut r = t2.execute(n, &cmd);
        while r.status == status::CHECK_CONDITION && r.sense[2] == 6 {
            r = t2.execute(n, &cmd);
        }
        r
    };
    let d = run(a, &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]).data_in;
    let keys: Vec<u64> = d[8..]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect();
    assert_eq!(keys, vec![0xdef, 0xabc]);
    assert_eq!(
        run(a, &write16(0, 1, 0), &block(1, 1)).status,
        status::GOOD,
        "holder writes"
    );
    assert_eq!(
        run(b2, &write16(0, 1, 0), &block(1, 1)).status,
        status::RESERVATION_CONFLICT
    );
    // Clearing APTPL removes the saved state.
    let (c, p) = pr_out(0, 0, 0xabc, 0xabc, 0);
    assert_eq!(run(a, &c, &p).status, status::GOOD);
    let t3 = ScsiTarget::new("iqn.2026-01.test:disk", 1);
    t3.add_lun(
        LUN,
        &f.path,
        LunOptions {
            state_dir: Some(dir),
            ..Default::default()
        },
    )
    .unwrap();
    let n3 = t3.nexus_login("iqn.2026-01.test:b,i,0x230000000001", 1);
    let cmd = crate::scsi::ScsiCommand {
        lun: LUN,
        cdb: &write16(0, 1, 0),
        data_out: &block(1, 1),
        expected_in_len: 0,
        tag: 1,
    };
    assert_eq!(
        t3.execute(n3, &cmd).status,
        status::CHECK_CONDITION,
        "UA first"
    );
    assert_eq!(
        t3.execute(n3, &cmd).status,
        status::GOOD,
        "no reservation after APTPL was cleared"
    );
}

#[test]
fn spc2_reserve_6_excludes_other_nexuses_until_released() {
    let f = Fixture::new();
    let b = f.login("b");
    f.ok(&[0x16, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        f.exec_on(b, LUN, &[0x16, 0, 0, 0, 0, 0], &[]).status,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        f.exec_on(b, LUN, &read16(0, 1), &[]).status,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        f.exec_on(b, LUN, &[0x12, 0, 0, 0, 36, 0], &[]).status,
        status::GOOD
    );
    // RELEASE from a non-holder is GOOD and changes nothing.
    assert_eq!(
        f.exec_on(b, LUN, &[0x17, 0, 0, 0, 0, 0], &[]).status,
        status::GOOD
    );
    assert_eq!(
        f.exec_on(b, LUN, &read16(0, 1), &[]).status,
        status::RESERVATION_CONFLICT
    );
    f.ok(&read16(0, 1), &[]);
    f.ok(&[0x17, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        f.exec_on(b, LUN, &[0x16, 0, 0, 0, 0, 0], &[]).status,
        status::GOOD
    );
    // Logout of the holder releases it.
    f.target.nexus_logout(b);
    f.ok(&[0x16, 0, 0, 0, 0, 0], &[]);
    // So does a LUN reset.
    let c = f.target.nexus_login("iqn.2026-01.test:c,i,0x1", 1);
    assert_eq!(
        f.exec_on(c, LUN, &tur(), &[]).status,
        status::CHECK_CONDITION,
        "POWER ON"
    );
    assert_eq!(
        f.exec_on(c, LUN, &tur(), &[]).status,
        status::RESERVATION_CONFLICT,
        "TUR conflicts"
    );
    f.target.task_mgmt(c, TaskMgmt::LunReset { lun: LUN });
    f.clear_ua(c);
    assert_eq!(
        f.exec_on(c, LUN, &[0x16, 0, 0, 0, 0, 0], &[]).status,
        status::GOOD
    );
}

#[test]
fn spc4_5_9_3_reserve_6_conflicts_with_registrations() {
    let f = Fixture::new();
    let b = f.login("b");
    register(&f, b, 3);
    assert_eq!(
        f.exec(&[0x16, 0, 0, 0, 0, 0], &[]).status,
        status::RESERVATION_CONFLICT
    );
    assert_eq!(
        f.exec(&[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).status,
        status::RESERVATION_CONFLICT
    );
}
